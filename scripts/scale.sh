#!/usr/bin/env bash
# Measures one gateway node with few and with many API users in its store,
# on SQLite and on PostgreSQL: how long the node takes to start, its
# resident memory (VmRSS of the caddy process, from /proc), and the latency
# of requests from a working set of active users, whose tokens wrk rotates
# through. The claim it checks: memory is bounded by the cache, not by the
# number of users, and latency for active users does not change with it.
#
# It then times the management API's team list against the same store
# (api_users_admin on the next port): the first page of 100 users of the
# product every user belongs to, in each sort order and with a search and a
# state filter, and pages deep into the list by cursor, and reads the
# process's resident memory before and after, which must not grow with the
# team's size.
#
# With many users it then sweeps: requests from SWEEP distinct users in
# turn, more than the cache holds (max_users, 100000 by default), so the
# cache fills and then evicts. The resident memory sampled during the sweep
# levels off at what the cache costs, and the sweep's rate is the rate of
# requests that each need two store reads (cache misses).
#
#   scripts/scale.sh [users ...]        default: 1000 1000000
#
# Environment: STORES (default "sqlite postgres"), ACTIVE (users in the
# working set, default 1000), SECS (seconds per wrk run, default 10),
# CONNS (wrk connections, default 16), THREADS (wrk threads, default 1),
# SWEEP (distinct users of the sweep, default 200000; 0: no sweep),
# SWEEP_SECS (default 40), MAX_USERS (the node's cache size, default
# 100000).
# PostgreSQL is a throwaway server in the work directory, listening on a
# Unix socket only (as the postgres user when run as root), unless
# DATABASE_URL names a server, in which case a database is created there
# for each run with createdb. Everything else listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 1000000)
stores=${STORES:-sqlite postgres}
active=${ACTIVE:-1000}
secs=${SECS:-10}
conns=${CONNS:-16}
threads=${THREADS:-1}
port=18180
sweep=${SWEEP:-200000}
sweep_secs=${SWEEP_SECS:-40}
max_users=${MAX_USERS:-100000}

if ! command -v wrk >/dev/null; then
	echo "installing wrk from Debian's packages" >&2
	apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

work=$(mktemp -d /tmp/apiusers-scale-XXXXXX)
chmod 755 "$work"
caddy_pid=""
pg_started=""
cleanup() {
	[ -z "$caddy_pid" ] || kill "$caddy_pid" 2>/dev/null || true
	[ -z "$pg_started" ] || as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1 || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/apiusers-gen" ./cmd/apiusers-gen
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config

# PostgreSQL refuses to run as root.
as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
	[ -z "${DATABASE_URL:-}" ] || return 0
	local initdb
	initdb=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)
	[ -n "$initdb" ] || { echo "no PostgreSQL: install the postgresql package, or set DATABASE_URL" >&2; exit 1; }
	pgbin=$(dirname "$(readlink -f "$initdb")")
	mkdir -p "$work/pg"
	[ "$(id -u)" != 0 ] || chown postgres "$work/pg"
	as_pg "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
	# Default settings (fsync on), socket only.
	as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
		-o "-k $work/pg -c listen_addresses= -p 5432" start >/dev/null
	pg_started=1
}

# db_url NAME: creates database NAME and prints its connection string.
db_url() {
	if [ -n "${DATABASE_URL:-}" ]; then
		createdb --maintenance-db="$DATABASE_URL" "$1"
		python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$1"
	else
		as_pg "$pgbin/createdb" -h "$work/pg" -p 5432 -U postgres "$1"
		echo "postgres://postgres@/$1?host=$work/pg&port=5432&sslmode=disable"
	fi
}

# lua FILE TOKENS START: a wrk script presenting the tokens of file TOKENS
# in turn, from line START on (random if 0).
lua() {
	cat >"$1" <<LUA
local tokens = {}
for line in io.lines("$2") do tokens[#tokens + 1] = line end
local i = $3
if i == 0 then i = math.random(#tokens) end
i = i - 1
request = function()
	i = i % #tokens + 1
	return wrk.format("GET", "/v1/products/1337/devices/0a1b2c", {["Authorization"] = "Bearer " .. tokens[i]})
end
LUA
}
lua "$work/active.lua" "$work/active.txt" 0

# wrk_run SCRIPT SECONDS: prints "rps p50_ms p99_ms", failing on any non-2xx.
wrk_run() {
	wrk -t"$threads" -c"$conns" -d"$2s" --latency -s "$1" "http://127.0.0.1:$port" |
		awk '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
			/^ +50%/ { p50 = ms($2) }
			/^ +99%/ { p99 = ms($2) }
			/^Requests\/sec/ { rps = $2 }
			/Non-2xx/ { bad = $NF }
			END { if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 } printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

rss_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# ms_of URL: the milliseconds curl takes for one GET of the management API.
ms_of() { curl -s -o "$work/page.json" -w '%{time_total}' "http://127.0.0.1:$(( port + 1 ))$1" | awk '{ printf "%.2f", $1 * 1000 }'; }

# median_ms QUERY: the median and the highest of 20 GETs of a first page.
median_ms() {
	local i xs=()
	for i in $(seq 20); do xs+=("$(ms_of "$1")"); done
	printf '%s\n' "${xs[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%s/%s", a[int((NR + 1) / 2)], a[NR] }'
}

# team_list STORE USERS: times the team list of product 1337 (every
# generated user's), and the resident memory around it.
team_list() {
	local base="/v1/products/1337/team" rss0 row q cursor deep_ms=() i
	rss0=$(rss_mb "$caddy_pid" VmRSS)
	row="$1 $2 users: first page of 100 (median/max ms of 20):"
	for q in "" "sort=name" "sort=-created" "sort=-last_used" "state=active" "q=gen-00009"; do
		row="$row ${q:-username}=$(median_ms "$base?limit=100&$q")"
	done
	# Fifty pages deep, each found from the previous one's cursor.
	cursor=""
	for i in $(seq 50); do
		deep_ms+=("$(ms_of "$base?limit=100${cursor:+&cursor=$cursor}")")
		cursor=$(sed -n 's/^  "next": "\(.*\)"$/\1/p' "$work/page.json")
	done
	row="$row; pages 1-50 by cursor: $(printf '%s\n' "${deep_ms[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "median %s max %s ms", a[int((NR + 1) / 2)], a[NR] }')"
	row="$row; RSS $rss0 -> $(rss_mb "$caddy_pid" VmRSS) MiB"
	echo "   $row" >&2
	lists+=("$row")
}

results=()
sweeps=()
lists=()
for st in $stores; do
	[ "$st" != postgres ] || start_postgres
	for n in "${sizes[@]}"; do
		case $st in
		sqlite)
			store_line="store sqlite $work/$st-$n.db"
			gen=(-sqlite "$work/$st-$n.db")
			;;
		postgres)
			export DATABASE_URL_NODE
			DATABASE_URL_NODE=$(db_url "scale_$n")
			store_line="store postgres {env.DATABASE_URL_NODE}"
			gen=(-postgres "$DATABASE_URL_NODE")
			;;
		*) echo "unknown store $st" >&2; exit 1 ;;
		esac

		echo "== $st, $n users" >&2
		gen_out=$("$work/apiusers-gen" "${gen[@]}" -users "$n" -batch 50000 -tokens "$work/tokens.txt" -tokens-count "$(( sweep > active ? sweep : active ))" 2>/dev/null)
		echo "   $gen_out" >&2
		gen_rate=$(sed -n 's/.*(\([0-9]*\) users\/s).*/\1/p' <<<"$gen_out")
		head -n "$active" "$work/tokens.txt" >"$work/active.txt"
		# Let the load's writes settle, so they do not compete with the
		# measurement: statistics and a checkpoint for PostgreSQL, and
		# the kernel's writeback for both.
		if [ "$st" = postgres ] && [ -z "${DATABASE_URL:-}" ]; then
			as_pg "$pgbin/vacuumdb" -h "$work/pg" -p 5432 -U postgres -z -q "scale_$n"
			as_pg "$pgbin/psql" -h "$work/pg" -p 5432 -U postgres -d postgres -qc CHECKPOINT
		fi
		sync

		cat >"$work/Caddyfile" <<CF
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
		output file $work/audit.log
	}
	api_users {
		$store_line
		cache {
			max_users $max_users
		}
		org acme {
			product 1337 my-product-v1
		}
		endpoint get-device GET /v1/products/{product}/devices/{device} devices:get
	}
}
http://127.0.0.1:$port {
	bind 127.0.0.1
	api_users
	respond "ok"
}
http://127.0.0.1:$(( port + 1 )) {
	bind 127.0.0.1
	api_users_admin
}
CF
		t0=$(date +%s%N)
		"$work/caddy" run --config "$work/Caddyfile" >"$work/caddy.out" 2>&1 &
		caddy_pid=$!
		until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
			kill -0 "$caddy_pid" 2>/dev/null || { cat "$work/caddy.out" >&2; exit 1; }
			sleep 0.005
		done
		start_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
		rss_idle=$(rss_mb "$caddy_pid" VmRSS)

		wrk_run "$work/active.lua" 3 >/dev/null # warm-up: the working set enters the cache
		read -r rps p50 p99 < <(wrk_run "$work/active.lua" "$secs")
		rss_load=$(rss_mb "$caddy_pid" VmRSS)
		hwm=$(rss_mb "$caddy_pid" VmHWM)

		team_list "$st" "$n"

		sweep_row="-"
		if [ "$sweep" -gt 0 ] && [ "$n" -ge "$sweep" ]; then
			# Users the working set did not use, in order, each once (as
			# long as the sweep lasts less than SWEEP requests).
			lua "$work/sweep.lua" "$work/tokens.txt" "$(( active + 1 ))"
			samples=()
			( for _ in $(seq $(( sweep_secs / 5 ))); do sleep 5; rss_mb "$caddy_pid" VmRSS; echo; done ) >"$work/rss.txt" &
			sampler=$!
			sweep_out=$(wrk -t"$threads" -c"$conns" -d"${sweep_secs}s" -s "$work/sweep.lua" "http://127.0.0.1:$port")
			wait "$sampler" || true
			mapfile -t samples <"$work/rss.txt"
			if grep -q Non-2xx <<<"$sweep_out"; then echo "sweep: non-2xx responses" >&2; exit 1; fi
			sweep_reqs=$(awk '/requests in/ { print $1 }' <<<"$sweep_out")
			sweep_rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$sweep_out")
			sweep_row="$sweep_reqs requests from distinct users at $sweep_rps req/s; RSS every 5s: ${samples[*]} MiB; peak $(rss_mb "$caddy_pid" VmHWM) MiB"
		fi
		kill -INT "$caddy_pid"
		wait "$caddy_pid" || true
		caddy_pid=""

		row=$(printf '%-9s %9s %10s %9s %9s %10s %9s %9s %8s %8s' "$st" "$n" "$gen_rate" "$start_ms" "$rss_idle" "$rss_load" "$hwm" "$rps" "$p50" "$p99")
		echo "   $row" >&2
		results+=("$row")
		[ "$sweep_row" = "-" ] || sweeps+=("$st, $n users: $sweep_row")
	done
done

echo
printf '%-9s %9s %10s %9s %9s %10s %9s %9s %8s %8s\n' store users gen_u/s start_ms rss_idle rss_load rss_peak req/s p50_ms p99_ms
printf '%s\n' "${results[@]}"
echo "(rss in MiB of the caddy process; working set: $active users; wrk -t$threads -c$conns -d${secs}s; cache max_users $max_users; $(nproc) CPUs)"
echo
echo "team list (GET /v1/products/1337/team of the management API, on the same node):"
printf '  %s\n' "${lists[@]}"
if [ ${#sweeps[@]} -gt 0 ]; then
	echo
	echo "sweep (wrk -t$threads -c$conns -d${sweep_secs}s, one request per user, cache max_users $max_users):"
	printf '  %s\n' "${sweeps[@]}"
fi
