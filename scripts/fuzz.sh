#!/usr/bin/env bash
# Runs every fuzzer of the module briefly: each Fuzz function in a _test.go
# file, one `go test -fuzz` at a time (go test fuzzes one target in one
# package per invocation).
#
#   scripts/fuzz.sh [duration per fuzzer, default 10s]
#
# The duration is go test's -fuzztime: "30s", "5m", or "1000x" for a number
# of inputs. Every fuzzer runs even when an earlier one fails; the script
# then lists the failures and exits 1. A failing input is saved under the
# package's testdata/fuzz/<FuzzName>/, where plain `go test` replays it;
# commit it with the fix, as a regression test.
#
# The first fuzzer of each package is slow to start: go test compiles the
# package and its dependencies again, instrumented for coverage.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime=${1:-10s}

# Every "func FuzzX(f *testing.F)", as "<package dir> <name>".
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
	awk -F: '{ dir = $1; sub(/\/[^\/]+$/, "", dir); name = $2; sub(/^func /, "", name); sub(/\(.*/, "", name); print dir, name }' |
	sort -u)
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzzers found" >&2
	exit 1
fi

failed=()
start=$SECONDS
while read -r dir name; do
	echo "=== $name ($dir, $fuzztime)"
	t0=$SECONDS
	# Minimizing each new interesting input is capped at 10 runs: with go
	# test's default (60s of runs), a fuzzer whose inputs are slow, such as
	# FuzzCaddyfile, spends its whole time minimizing, and go test reports
	# "context deadline exceeded" when the time runs out mid-minimization.
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 10x "$dir" </dev/null; then
		failed+=("$name ($dir)")
	fi
	echo "--- $name: $((SECONDS - t0))s"
done <<<"$targets"

echo "fuzz.sh: $(wc -l <<<"$targets") fuzzers in $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz.sh: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
