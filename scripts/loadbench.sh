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
#   PROFILE=/tmp/lb scripts/loadbench.sh ...          (CPU profiles of the
#       gateway process during the first round: /tmp/lb-plain.pprof and
#       /tmp/lb-api_users.pprof; compare them with go tool pprof -diff_base)
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

# AUDIT_OUTPUT=discard isolates the cost of writing the audit file. The
# file does not roll: rolling gzips the old file in the background, which
# would bill compression to whichever run happens to be going.
audit_output="file $work/audit.log {
			roll_disabled
		}"
[ -z "${AUDIT_OUTPUT:-}" ] || audit_output=$AUDIT_OUTPUT

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

# The admin endpoint (and its /debug/pprof) only when profiling.
admin=off
[ -z "${PROFILE:-}" ] || admin=localhost:2999

cat >"$work/gateway.Caddyfile" <<GW
{
	admin $admin
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

# cpu PID: the process's user+system CPU time so far, in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
gwpid=${pids[1]}

# run PORT [wrk args...]: one wrk run; prints "rps p50_ms p99_ms cpu_us",
# cpu_us being the gateway process's CPU time per request. Throughput on a
# small shared machine moves with whatever else runs; CPU per request
# barely does, so it shows the gateway's own cost more steadily.
run() {
	local port=$1 before
	shift
	before=$(cpu "$gwpid")
	wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "http://127.0.0.1:$port$path" |
		awk -v hz="$hz" -v before="$before" -v after_file="/proc/$gwpid/stat" '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
			/^ +50%/ { p50 = ms($2) }
			/^ +99%/ { p99 = ms($2) }
			/requests in/ { n = $1 }
			/^Requests\/sec/ { rps = $2 }
			/Non-2xx/ { bad = $NF }
			END {
				if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 }
				getline stat < after_file; split(stat, f, " ")
				printf "%.0f %.3f %.3f %.2f\n", rps, p50, p99, (f[14] + f[15] - before) * 1e6 / hz / n
			}'
}

# Warm up both.
run 18080 >/dev/null
run 18081 -H "Authorization: Bearer $token" >/dev/null

printf '%-6s %-24s %9s %8s %8s %8s\n' round target req/s p50_ms p99_ms cpu_us
plain=() gw=() plain50=() gw50=() plain99=() gw99=() plaincpu=() gwcpu=()
profiler=
# profile NAME: in the first round with PROFILE set, a CPU profile of the
# gateway process during the run that follows.
profile() {
	[ -n "${PROFILE:-}" ] && [ "$r" = 1 ] || return 0
	(sleep 1 && curl -s -o "$PROFILE-$1.pprof" "http://localhost:2999/debug/pprof/profile?seconds=$((secs > 3 ? secs - 2 : 1))") &
	profiler=$!
}
for r in $(seq "$rounds"); do
	profile plain
	read -r a b c d < <(run 18080)
	[ -z "${profiler:-}" ] || { wait "$profiler"; profiler=; }
	plain+=("$a") plain50+=("$b") plain99+=("$c") plaincpu+=("$d")
	printf '%-6s %-24s %9s %8s %8s %8s\n' "$r" "reverse_proxy" "$a" "$b" "$c" "$d"
	profile api_users
	read -r a b c d < <(run 18081 -H "Authorization: Bearer $token")
	[ -z "${profiler:-}" ] || { wait "$profiler"; profiler=; }
	gw+=("$a") gw50+=("$b") gw99+=("$c") gwcpu+=("$d")
	printf '%-6s %-24s %9s %8s %8s %8s\n' "$r" "api_users+reverse_proxy" "$a" "$b" "$c" "$d"
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mp=$(median "${plain[@]}") mg=$(median "${gw[@]}")
cp=$(median "${plaincpu[@]}") cg=$(median "${gwcpu[@]}")
echo
printf 'median reverse_proxy:           %s req/s, p50 %s ms, p99 %s ms, gateway CPU %s us/request\n' "$mp" "$(median "${plain50[@]}")" "$(median "${plain99[@]}")" "$cp"
printf 'median api_users+reverse_proxy: %s req/s, p50 %s ms, p99 %s ms, gateway CPU %s us/request\n' "$mg" "$(median "${gw50[@]}")" "$(median "${gw99[@]}")" "$cg"
awk -v g="$mg" -v p="$mp" 'BEGIN { printf "throughput ratio: %.3f (target >= 0.95)\n", g / p }'
awk -v g="$cg" -v p="$cp" 'BEGIN { printf "gateway CPU per request: %+.2f us (%.3f of plain)\n", g - p, g / p }'
echo "audit records written: $(cat "$work"/audit.log 2>/dev/null | wc -l)"
