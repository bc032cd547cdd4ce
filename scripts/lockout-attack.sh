#!/usr/bin/env bash
# Fills the gateway's lockout from 200,000 IPv4 addresses and one IPv6 /64
# while a valid client keeps sending requests, and prints the valid
# client's p50 and p99 before and under attack, the table's size and the
# heap. Everything runs on loopback, in one test process.
# Usage: scripts/lockout-attack.sh [addresses]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
APIUSERS_LOCKOUT_ATTACK="${1:-200000}" go test -count=1 -run '^TestLockoutUnderAttack$' -v -timeout 20m ./caddymodule 2>&1 \
	| grep -E '^(=== RUN|--- |\s+lockoutattack_test|ok|FAIL|PASS)'
