#!/usr/bin/env bash
# Measures the gateway against plain reverse_proxy and Caddy's basic_auth,
# side by side in one process and one run.
#
# One Caddy process serves four sites in front of the same upstream (another
# Caddy process answering "ok"):
#
#   reverse_proxy            plain reverse_proxy, the reference
#   api_users,audit=file     api_users + reverse_proxy, audit records to a file
#                            (the writer the README configures)
#   api_users,audit=discard  the same, its records routed to Caddy's discard
#                            writer (audit_log discarded), isolating the
#                            cost of writing them
#   basic_auth               Caddy's basic_auth (bcrypt, hash cache on, so the
#                            credential is verified once) + reverse_proxy
#   reverse_proxy+identity   no authentication: reverse_proxy alone, removing
#                            the client's Authorization and setting the four
#                            identity headers api_users sets (header_up,
#                            fixed values): what handing the spec's identity
#                            on costs Caddy's proxy and the upstream,
#                            whoever sets it; the floor for any gateway
#                            that does
#
# Every round runs each site between two runs of plain reverse_proxy
# (P A P B P C P); a site's ratio in a round is its requests per second over
# the mean of the two plain runs around it, which cancels most of the drift
# of a shared machine. The script prints, per site, the medians over the
# rounds of requests per second, p50 and p99 latency, the gateway process's
# CPU time per request and the upstream's, the throughput ratio and the
# gateway CPU added per request.
#
#   scripts/loadbench.sh [rounds] [seconds per run] [connections]
#   AUDIT_OUTPUT=file               the audit file written by Caddy's own file
#                                   writer instead of the api_users_audit
#                                   writer (or any log output, verbatim)
#   AUDIT_MODE=sync                 the api_users audit in every-record-on-
#                                   disk mode (audit { mode sync })
#   MODE=concurrent                 load the four sites at once in each round
#                                   (see below); steadier on a busy machine
#   PROFILE=lb                      in the first round, a CPU profile of the
#       gateway process during each site's run (lb-<site>.pprof, relative
#       to the repository's root), and its allocations (lb-<site>.allocs,
#       to read with -diff_base lb-<site>.allocs0); lb-<site>.requests holds
#       how many requests the profile window saw, to turn samples into
#       time per request
#
# Needs wrk (Debian/Ubuntu: apt-get install wrk; the script installs it
# with apt-get when it is missing and it runs as root). Everything listens
# on 127.0.0.1 only. Not part of CI: its figures are for comparing sites
# within one run on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-5}
secs=${2:-10}
conns=${3:-32}

if ! command -v wrk >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing wrk from the distribution's packages (apt-get install wrk)" >&2
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null
	else
		echo "wrk is missing: install it (apt-get install wrk, brew install wrk)" >&2
		exit 1
	fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# The audit file does not roll: rolling gzips the old file in the
# background, which would bill compression to whichever run is going.
case "${AUDIT_OUTPUT:-api_users_audit}" in
file | api_users_audit)
	audit_output="${AUDIT_OUTPUT:-api_users_audit} $work/audit.log {
			roll_disabled
		}" ;;
*) audit_output=$AUDIT_OUTPUT ;;
esac
audit_block=
[ -z "${AUDIT_MODE:-}" ] || audit_block="audit {
			mode $AUDIT_MODE
		}"

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

basic_pass=loadbench-password
basic_hash=$("$work/caddy" hash-password --plaintext "$basic_pass")

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
		exclude http.handlers.api_users.audit.discarded
		output $audit_output
	}
	log audit_discarded {
		include http.handlers.api_users.audit.discarded
		output discard
	}
	api_users {
		store sqlite $work/api_users.db
		$audit_block
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
http://127.0.0.1:18082 {
	bind 127.0.0.1
	api_users {
		audit_log discarded
	}
	reverse_proxy 127.0.0.1:18090
}
http://127.0.0.1:18083 {
	bind 127.0.0.1
	basic_auth {
		bench $basic_hash
	}
	reverse_proxy 127.0.0.1:18090
}
GW

created=$("$work/caddy" api-users create --config "$work/gateway.Caddyfile" --product 1337 --scopes devices:get --json 2>/dev/null)
token=$(grep -o 'apiu_at_[0-9a-f]\{48\}' <<<"$created" | head -1)
user=$(grep -o '"username": *"[^"]*"' <<<"$created" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
[ -n "$token" ] && [ -n "$user" ] || { echo "could not create a user" >&2; exit 1; }
# The identity api_users hands on for this user, set without any check.
cat >>"$work/gateway.Caddyfile" <<GW
http://127.0.0.1:18084 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:18090 {
		header_up -Authorization
		header_up X-Api-User $user
		header_up X-Api-User-Org acme
		header_up X-Api-User-Product 1337
		header_up X-Acting-User $user
	}
}
GW
basic="Basic $(printf 'bench:%s' "$basic_pass" | base64 -w0)"

"$work/caddy" run --config "$work/upstream.Caddyfile" >"$work/upstream.out" 2>&1 &
pids+=($!)
"$work/caddy" run --config "$work/gateway.Caddyfile" >"$work/gateway.out" 2>&1 &
pids+=($!)
for port in 18090 18080 18081 18082 18083 18084; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/" && break
		sleep 0.1
	done
done

path=/v1/products/my-product-v1/devices/0a1b2c3d
sites=(plain api_file api_discard basic_auth ids)
declare -A port=([plain]=18080 [api_file]=18081 [api_discard]=18082 [basic_auth]=18083 [ids]=18084)
declare -A auth=([plain]="" [api_file]="Bearer $token" [api_discard]="Bearer $token" [basic_auth]="$basic" [ids]="Bearer $token")
declare -A label=([plain]="reverse_proxy" [api_file]="api_users,audit=file" [api_discard]="api_users,audit=discard" [basic_auth]="basic_auth" [ids]="reverse_proxy+identity")
for s in "${sites[@]}"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: ${auth[$s]}" "http://127.0.0.1:${port[$s]}$path")
	[ "$code" = 200 ] || { echo "${label[$s]} answered $code, want 200" >&2; cat "$work/gateway.out" >&2; exit 1; }
done

# cpu PID: the process's user+system CPU time so far, in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
uppid=${pids[0]} gwpid=${pids[1]}

# run SITE: one wrk run; prints "rps p50_ms p99_ms cpu_us requests up_us",
# cpu_us being the gateway process's CPU time per request and up_us the
# upstream's. Throughput on a small shared machine moves with whatever
# else runs; CPU per request moves less, so it shows the gateway's own
# cost more steadily.
run() {
	local s=$1 before upbefore
	local args=()
	[ -z "${auth[$s]}" ] || args=(-H "Authorization: ${auth[$s]}")
	before=$(cpu "$gwpid") upbefore=$(cpu "$uppid")
	wrk -t2 -c"$conns" -d"${secs}s" --latency "${args[@]}" "http://127.0.0.1:${port[$s]}$path" |
		awk -v hz="$hz" -v before="$before" -v after_file="/proc/$gwpid/stat" -v upbefore="$upbefore" -v up_file="/proc/$uppid/stat" '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
			/^ +50%/ { p50 = ms($2) }
			/^ +99%/ { p99 = ms($2) }
			/requests in/ { n = $1 }
			/^Requests\/sec/ { rps = $2 }
			/Non-2xx/ { bad = $NF }
			END {
				if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 }
				getline stat < after_file; split(stat, f, " ")
				getline upstat < up_file; split(upstat, u, " ")
				printf "%.0f %.3f %.3f %.2f %d %.2f\n", rps, p50, p99, (f[14] + f[15] - before) * 1e6 / hz / n, n, (u[14] + u[15] - upbefore) * 1e6 / hz / n
			}'
}

# profile SITE: in the first round with PROFILE set, a CPU profile of the
# gateway process during the run that follows, and its allocations.
profiler=
profile() {
	[ -n "${PROFILE:-}" ] && [ "$r" = 1 ] || return 0
	curl -s -o "$PROFILE-$1.allocs0" "http://localhost:2999/debug/pprof/allocs"
	(sleep 1 && curl -s -o "$PROFILE-$1.pprof" "http://localhost:2999/debug/pprof/profile?seconds=$((secs > 3 ? secs - 2 : 1))") &
	profiler=$!
}
profiled() {
	[ -n "${profiler:-}" ] || return 0
	wait "$profiler"
	profiler=
	curl -s -o "$PROFILE-$1.allocs" "http://localhost:2999/debug/pprof/allocs"
	# The profile covered secs-2 of the run's secs seconds.
	awk -v n="$2" -v s="$secs" 'BEGIN { printf "%d\n", n * (s > 3 ? s - 2 : 1) / s }' >"$PROFILE-$1.requests"
}

# Warm up every site.
for s in "${sites[@]}"; do run "$s" >/dev/null; done

declare -A rps p50 p99 cpus ups ratio

# MODE=concurrent: every round loads the four sites at the same time, a
# quarter of the connections each, so whatever else runs on the machine
# weighs on all four alike; a site's ratio is its requests per second over
# plain reverse_proxy's in the same seconds. The gateway's CPU cannot be
# split between the sites then, so none is printed.
if [ "${MODE:-}" = concurrent ]; then
	per=$((conns / ${#sites[@]} > 0 ? conns / ${#sites[@]} : 1))
	printf '%-6s %-24s %9s %8s %8s %7s\n' round site req/s p50_ms p99_ms ratio
	for r in $(seq "$rounds"); do
		wrks=()
		for s in "${sites[@]}"; do
			args=()
			[ -z "${auth[$s]}" ] || args=(-H "Authorization: ${auth[$s]}")
			wrk -t1 -c"$per" -d"${secs}s" --latency "${args[@]}" "http://127.0.0.1:${port[$s]}$path" >"$work/wrk-$s.out" &
			wrks+=($!)
		done
		wait "${wrks[@]}"
		declare -A now=()
		for s in "${sites[@]}"; do
			read -r a b c < <(awk '
				function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
				/^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
				/Non-2xx/ { print "non-2xx responses: " $NF > "/dev/stderr"; exit 1 }
				END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }' "$work/wrk-$s.out")
			now[$s]=$a
			rps[$s]+="$a " p50[$s]+="$b " p99[$s]+="$c "
		done
		for s in "${sites[@]}"; do
			q=$(awk -v a="${now[$s]}" -v p="${now[plain]}" 'BEGIN { printf "%.3f", a / p }')
			[ "$s" = plain ] || ratio[$s]+="$q "
			printf '%-6s %-24s %9s %8s %8s %7s\n' "$r" "${label[$s]}" "${now[$s]}" "$(echo ${p50[$s]} | awk '{print $NF}')" "$(echo ${p99[$s]} | awk '{print $NF}')" "$q"
		done
	done
	median() { printf '%s\n' $@ | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
	echo
	echo "medians of $rounds concurrent rounds, ${secs}s, $per connections per site${AUDIT_MODE:+, audit mode $AUDIT_MODE}:"
	printf '%-24s %9s %8s %8s %7s\n' site req/s p50_ms p99_ms ratio
	for s in "${sites[@]}"; do
		q=1
		[ "$s" = plain ] || q=$(median ${ratio[$s]})
		printf '%-24s %9s %8s %8s %7s\n' "${label[$s]}" "$(median ${rps[$s]})" "$(median ${p50[$s]})" "$(median ${p99[$s]})" "$q"
	done
	echo "target: api_users,audit=file ratio >= 0.95 and above basic_auth"
	echo "audit records in the file: $(cat "$work"/audit.log* 2>/dev/null | wc -l)"
	exit 0
fi

printf '%-6s %-24s %9s %8s %8s %8s %7s %7s\n' round site req/s p50_ms p99_ms cpu_us up_us ratio
for r in $(seq "$rounds"); do
	profile plain
	read -r pa b c d n e < <(run plain)
	profiled plain "$n"
	printf '%-6s %-24s %9s %8s %8s %8s %7s\n' "$r" "${label[plain]}" "$pa" "$b" "$c" "$d" "$e"
	rps[plain]+="$pa " p50[plain]+="$b " p99[plain]+="$c " cpus[plain]+="$d " ups[plain]+="$e "
	for s in "${sites[@]:1}"; do
		profile "$s"
		read -r a b c d n e < <(run "$s")
		profiled "$s" "$n"
		read -r pb b2 c2 d2 n2 e2 < <(run plain)
		rps[plain]+="$pb " p50[plain]+="$b2 " p99[plain]+="$c2 " cpus[plain]+="$d2 " ups[plain]+="$e2 "
		q=$(awk -v a="$a" -v x="$pa" -v y="$pb" 'BEGIN { printf "%.3f", 2 * a / (x + y) }')
		rps[$s]+="$a " p50[$s]+="$b " p99[$s]+="$c " cpus[$s]+="$d " ups[$s]+="$e " ratio[$s]+="$q "
		printf '%-6s %-24s %9s %8s %8s %8s %7s %7s\n' "$r" "${label[$s]}" "$a" "$b" "$c" "$d" "$e" "$q"
		printf '%-6s %-24s %9s %8s %8s %8s %7s\n' "$r" "${label[plain]}" "$pb" "$b2" "$c2" "$d2" "$e2"
		pa=$pb
	done
done

median() { printf '%s\n' $@ | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "medians of $rounds rounds, ${secs}s runs, $conns connections${AUDIT_MODE:+, audit mode $AUDIT_MODE}:"
printf '%-24s %9s %8s %8s %8s %7s %7s %9s %8s\n' site req/s p50_ms p99_ms cpu_us up_us ratio +cpu_us +up_us
cp=$(median ${cpus[plain]}) up=$(median ${ups[plain]})
for s in "${sites[@]}"; do
	c=$(median ${cpus[$s]}) u=$(median ${ups[$s]})
	q=1
	[ "$s" = plain ] || q=$(median ${ratio[$s]})
	printf '%-24s %9s %8s %8s %8s %7s %7s %+9.2f %+8.2f\n' "${label[$s]}" "$(median ${rps[$s]})" "$(median ${p50[$s]})" "$(median ${p99[$s]})" "$c" "$u" "$q" "$(awk -v a="$c" -v b="$cp" 'BEGIN { print a - b }')" "$(awk -v a="$u" -v b="$up" 'BEGIN { print a - b }')"
done
echo "target: api_users,audit=file ratio >= 0.95 and above basic_auth"
echo "audit records in the file: $(cat "$work"/audit.log* 2>/dev/null | wc -l)"
