#!/usr/bin/env bash
# Where a request's CPU goes, site by site, in µs per request: runs
# BenchmarkSites (caddymodule/sites_bench_test.go: Caddy's server, the
# site's handlers and reverse_proxy to an upstream in the same process, 32
# requests at a time) under the CPU profiler, one site at a time, and
# divides the profile's time in each part of the request path by the
# requests served.
#
#   scripts/breakdown.sh [seconds per site] [site ...]
#
# Sites: plain api_file api_discard basic_auth noop_mw plain_ids (default:
# plain api_file basic_auth plain_ids). Profiles are kept in
# breakdown-<site>.pprof, relative to the repository's root, for
# `go tool pprof`. Absolute figures depend on the machine and on what else
# runs; compare sites within one run.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
shift || true
sites=("$@")
[ ${#sites[@]} -gt 0 ] || sites=(plain api_file basic_auth plain_ids)

bin=$(mktemp -d)/caddymodule.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./caddymodule

# The parts, as pprof function regexps; "own" parts are a handler's cum
# less its next handler's.
parts=(
	'request, all of it|caddyhttp\.\(\*Server\)\.ServeHTTP$'
	'api_users handler incl. next|caddymodule\.\(\*Gateway\)\.ServeHTTP$'
	'basic_auth handler incl. next|caddyauth\.Authentication\.ServeHTTP$'
	'reverse_proxy|reverseproxy\.\(\*Handler\)\.ServeHTTP$'
	'upstream server (net/http)|net/http\.\(\*conn\)\.serve$'
	'proxy transport write loop|net/http\.\(\*persistConn\)\.writeLoop$'
	'proxy transport read loop|net/http\.\(\*persistConn\)\.readLoop$'
	'audit writer goroutine|caddymodule\.\(\*auditQueue\)\.run$'
	'api_users background loops|caddymodule\.\(\*App\)\.every\.func1$'
	'garbage collector (marking)|runtime\.gcBgMarkWorker$'
)

printf '%-32s' "µs per request"
for s in "${sites[@]}"; do printf ' %11s' "$s"; done
echo
declare -A val
declare -A allocs
for s in "${sites[@]}"; do
	out=$("$bin" -test.run '^$' -test.bench "BenchmarkSites/$s\$" -test.benchtime "${secs}s" -test.benchmem \
		-test.cpuprofile "breakdown-$s.pprof" 2>/dev/null | grep "^BenchmarkSites/$s")
	n=$(awk '{print $2}' <<<"$out")
	allocs[$s]=$(awk '{for (i = 1; i <= NF; i++) if ($i == "allocs/op") print $(i-1)}' <<<"$out")
	top=$(go tool pprof -top -cum -nodecount=100000 -unit=ns "$bin" "breakdown-$s.pprof" 2>/dev/null)
	for p in "${parts[@]}"; do
		re=${p#*|}
		v=$(awk -v re="$re" -v n="$n" '
			NR > 5 { name = $6; for (i = 7; i <= NF; i++) name = name " " $i
				if (name ~ re) { c = $4; sub(/ns$/, "", c); printf "%.2f", c / n / 1000; exit } }' <<<"$top")
		val[$s,$p]=${v:-0}
	done
done
for p in "${parts[@]}"; do
	printf '%-32s' "${p%%|*}"
	for s in "${sites[@]}"; do printf ' %11s' "${val[$s,$p]}"; done
	echo
done
printf '%-32s' "handler's own (incl. less next)"
for s in "${sites[@]}"; do
	rp=${val[$s,${parts[3]}]}
	own=0
	[ "${val[$s,${parts[1]}]}" = 0 ] || own=$(awk -v a="${val[$s,${parts[1]}]}" -v b="$rp" 'BEGIN { printf "%.2f", a - b }')
	[ "${val[$s,${parts[2]}]}" = 0 ] || own=$(awk -v a="${val[$s,${parts[2]}]}" -v b="$rp" 'BEGIN { printf "%.2f", a - b }')
	printf ' %11s' "$own"
done
echo
printf '%-32s' "allocations per request"
for s in "${sites[@]}"; do printf ' %11s' "${allocs[$s]}"; done
echo
