#!/usr/bin/env bash
# The Redis CPU of a three-limit decision (requests GCRA + tokens GCRA + concurrency, the lease
# released at once) against its lower bound: EVALSHA of min_three.lua and of variants, with
# redis-benchmark (-c 50 -P 16 -r 10000), next to the one-limit ceiling script min_gcra.lua, on
# one private redis-server. Every variant releases its lease in the same call, so a run leaves no
# lease behind.
#
# Usage (from the repository root, after `cargo build --release -p tollgate-bench`):
#   target/release/tollgate-bench-redis -- crates/tollgate-bench/scripts/three-overhead.sh [REPS]
# Prints, per variant, the median over REPS (default 3) interleaved runs of: EVALSHA usec_per_call
# (INFO commandstats) and Redis main-thread CPU per call (INFO cpu, user+sys).
#
# Variants:
#   min           min_gcra.lua, one limit (the ceiling's script)
#   min_three     min_three.lua: TIME, GET x2, ZCARD, SET x2, ZADD, PEXPIRE, ZREM
#   min_three_mget  the same with one MGET for the two GCRA buckets
#   fast_decide3  the store's fast_decide.lua, signature "sggc", with the release that
#                 fast_settle.lua would do (trim + ZREM) appended before its return
set -euo pipefail
: "${TOLLGATE_BENCH_PORT:?run me under tollgate-bench-redis}"
P=$TOLLGATE_BENCH_PORT
REPS=${1:-3}
N=${N:-200000}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
LUA=$ROOT/crates/tollgate/src/store/redis/lua
B=$ROOT/crates/tollgate-bench/lua
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

cp "$B/min_gcra.lua" "$W/min.lua"
cp "$B/min_three.lua" "$W/min_three.lua"
sed -e 's/^local a = tonumber(call(.GET., KEYS\[1\])) or now$/local ab = call("MGET", KEYS[1], KEYS[2])\nlocal a = tonumber(ab[1]) or now/' \
    -e 's/^local b = tonumber(call(.GET., KEYS\[2\])) or now$/local b = tonumber(ab[2]) or now/' \
    "$B/min_three.lua" > "$W/min_three_mget.lua"
grep -q MGET "$W/min_three_mget.lua"
# fast_decide.lua ends with `return reply`; release the lease first, as fast_settle.lua does.
sed -e '$s/^return reply$/call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now)\ncall("ZREM", KEYS[3], ARGV[#ARGV])\nreturn reply/' \
    "$LUA/fast_decide.lua" > "$W/fast_decide3.lua"
grep -q ZREM "$W/fast_decide3.lua"

K='tollgate-bench:{t__rand_int__}:bench'
# Requests 60/min (step 1 s), tokens 6000/min (step 10 ms) x 100 tokens, burst 10^9 each (every
# call admitted), 10^6 slots, a 60 s lease.
args_for() {
  case $1 in
    min) echo "1 '$K:requests' 1000000 1000000000000000" ;;
    min_three*) echo "3 '$K:requests' '$K:tokens' '$K:concurrent' 1000000 1000000000000000 1000000 10000000000000 1000000 60000000 1234567890123456789" ;;
    fast_decide3) echo "3 '$K:requests' '$K:tokens' '$K:concurrent' sggc 1000000 1000000000000000 1000000 10000000000000 1000000 60000000 1234567890123456789" ;;
  esac
}
cpu() { redis-cli -p "$P" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys)_main_thread:/{s+=$2} END{printf "%.6f", s}'; }

VARIANTS=${VARIANTS:-"min min_three min_three_mget fast_decide3"}
declare -A SHA USEC CPU CMDS
for v in $VARIANTS; do
  SHA[$v]=$(redis-cli -p "$P" SCRIPT LOAD "$(cat "$W/$v.lua")")
done
for r in $(seq "$REPS"); do
  for v in $VARIANTS; do
    redis-cli -p "$P" FLUSHALL > /dev/null
    # shellcheck disable=SC2046
    eval redis-benchmark -p "$P" -c 50 -n 50000 -P 16 -r 10000 -q EVALSHA "${SHA[$v]}" $(args_for "$v") > /dev/null
    redis-cli -p "$P" CONFIG RESETSTAT > /dev/null
    c0=$(cpu)
    # shellcheck disable=SC2046
    eval redis-benchmark -p "$P" -c 50 -n "$N" -P 16 -r 10000 -q EVALSHA "${SHA[$v]}" $(args_for "$v") > /dev/null
    c1=$(cpu)
    stats=$(redis-cli -p "$P" INFO commandstats | tr -d '\r')
    u=$(echo "$stats" | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
    USEC[$v]="${USEC[$v]:-} $u"
    CPU[$v]="${CPU[$v]:-} $(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN{printf "%.2f", (b-a)*1e6/n}')"
    CMDS[$v]=$(echo "$stats" | sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1=\3/p' | grep -v '^evalsha' | tr '\n' ' ')
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
printf '%-16s %14s %16s   %s\n' variant usec_per_call cpu_us_per_call "runs (usec_per_call | cpu) ; usec_per_call of each command (last run)"
for v in $VARIANTS; do
  printf '%-16s %14s %16s   %s |%s ; %s\n' "$v" "$(echo "${USEC[$v]}" | median)" "$(echo "${CPU[$v]}" | median)" "${USEC[$v]}" "${CPU[$v]}" "${CMDS[$v]}"
done
