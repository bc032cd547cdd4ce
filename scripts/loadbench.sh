#!/usr/bin/env bash
# Measures the gateway against plain reverse_proxy, side by side in one run.
#
# One Caddy process serves two sites in front of the same upstream (another
# Caddy process answering "ok"): plain `reverse_proxy`, and `api_users` plus
# `reverse_proxy` with audit records written to a file. wrk loads each in
# turn, alternating for several rounds, and the script prints requests per
# second and p50/p99 latency for both, their medians, and the throughput
# ratio (target: at least 0.95).
#
#   scripts/loadbench.sh [rounds] [seconds per run] [connections]
#   AUDIT_OUTPUT=discard scripts/loadbench.sh ...   (audit records dropped)
#
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-5}
secs=${2:-10}
conns=${3:-32}

if ! command -v wrk >/dev/null; then
	echo "installing wrk from Debian's packages" >&2
	apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# AUDIT_OUTPUT=discard isolates the cost of writing the audit file.
audit_output=${AUDIT_OUTPUT:-file $work/audit.log}

go build -o "$work/caddy" ./cmd/caddy
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config

cat >"$work/upstream.Caddyfile" <<UP
{
	admin off
	auto_https off
	persist_config off
}
http://127.0.0.1:18090 {
	bind 127.0.0.1
	respond "ok"
}
UP

cat >"$work/gateway.Caddyfile" <<GW
{
	admin off
	auto_https off
	persist_config off
	log default {
		exclude http.handlers.api_users.audit
		output file $work/caddy.log
	}
	log audit {
		include http.handlers.api_users.audit
		output $audit_output
	}
	api_users {
		store sqlite $work/api_users.db
		org acme {
			product 1337 my-product-v1
		}
		endpoint get-device GET /v1/products/{product}/devices/{device} devices:get
	}
}
http://127.0.0.1:18080 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:18090
}
http://127.0.0.1:18081 {
	bind 127.0.0.1
	api_users
	reverse_proxy 127.0.0.1:18090
}
GW

token=$("$work/caddy" api-users create --config "$work/gateway.Caddyfile" --product 1337 --scopes devices:get --json 2>/dev/null |
	grep -o 'apiu_at_[0-9a-f]\{48\}' | head -1)
[ -n "$token" ] || { echo "could not create a user" >&2; exit 1; }

"$work/caddy" run --config "$work/upstream.Caddyfile" >"$work/upstream.out" 2>&1 &
pids+=($!)
"$work/caddy" run --config "$work/gateway.Caddyfile" >"$work/gateway.out" 2>&1 &
pids+=($!)
for port in 18090 18080 18081; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/" && break
		sleep 0.1
	done
done

path=/v1/products/my-product-v1/devices/0a1b2c3d
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:18081$path")
[ "$code" = 200 ] || { echo "gateway answered $code, want 200" >&2; cat "$work/gateway.out" >&2; exit 1; }

# run NAME PORT [wrk args...]: one wrk run; prints "rps p50_ms p99_ms".
run() {
	local port=$1
	shift
	wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "http://127.0.0.1:$port$path" |
		awk '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
			/^ +50%/ { p50 = ms($2) }
			/^ +99%/ { p99 = ms($2) }
			/^Requests\/sec/ { rps = $2 }
			/Non-2xx/ { bad = $NF }
			END { if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 } printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

# Warm up both.
run 18080 >/dev/null
run 18081 -H "Authorization: Bearer $token" >/dev/null

printf '%-6s %-22s %10s %9s %9s\n' round target req/s p50_ms p99_ms
plain=() gw=() plain50=() gw50=() plain99=() gw99=()
for r in $(seq "$rounds"); do
	read -r a b c < <(run 18080)
	plain+=("$a") plain50+=("$b") plain99+=("$c")
	printf '%-6s %-22s %10s %9s %9s\n' "$r" "reverse_proxy" "$a" "$b" "$c"
	read -r a b c < <(run 18081 -H "Authorization: Bearer $token")
	gw+=("$a") gw50+=("$b") gw99+=("$c")
	printf '%-6s %-22s %10s %9s %9s\n' "$r" "api_users+reverse_proxy" "$a" "$b" "$c"
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mp=$(median "${plain[@]}") mg=$(median "${gw[@]}")
echo
printf 'median reverse_proxy:           %s req/s, p50 %s ms, p99 %s ms\n' "$mp" "$(median "${plain50[@]}")" "$(median "${plain99[@]}")"
printf 'median api_users+reverse_proxy: %s req/s, p50 %s ms, p99 %s ms\n' "$mg" "$(median "${gw50[@]}")" "$(median "${gw99[@]}")"
awk -v g="$mg" -v p="$mp" 'BEGIN { printf "throughput ratio: %.3f (target >= 0.95)\n", g / p }'
# The file writer rolls the log at 100 MiB: count the rolled files too.
echo "audit records written: $(cat "$work"/audit*.log 2>/dev/null | wc -l)"
