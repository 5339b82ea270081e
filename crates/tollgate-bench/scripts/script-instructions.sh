#!/usr/bin/env bash
# Instructions Redis executes per script call (callgrind counts instructions, not seconds, so the
# figures do not move with the other jobs on a shared machine): the ceiling min_gcra.lua (with the
# ceiling's short key, and with tollgate's longer key for the same limit), the store's
# fast_check.lua, the lower bound min_three.lua and fast_decide.lua with its release appended
# (as three-overhead.sh builds it), each driven by redis-benchmark -c 50 -P 16 -r 10000 with the
# arguments of bench.sh, against one private redis-server running under callgrind.
#
# Usage (from the repository root, after `cargo build --release -p tollgate-bench`):
#   TOLLGATE_REDIS_SERVER=$PWD/crates/tollgate-bench/scripts/callgrind-redis-server.sh \
#     target/release/tollgate-bench-redis -- crates/tollgate-bench/scripts/script-instructions.sh [ROUNDS]
# Prints per variant the instructions per call of each round (20,000 calls after 20,000 of
# warm-up). VARIANTS="min fast_check" runs only those; OLD=<commit> adds the same scripts as of
# that commit (variants old_*, with the arguments of that time: decimal, not hexadecimal).
set -eu
: "${TOLLGATE_BENCH_PORT:?run me under tollgate-bench-redis}"
P=$TOLLGATE_BENCH_PORT
ROUNDS=${1:-3}
N=20000
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
LUA=$ROOT/crates/tollgate/src/store/redis/lua
B=$ROOT/crates/tollgate-bench/lua
DIR=${CALLGRIND_DIR:-/tmp}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PID=$(redis-cli -p "$P" INFO server | tr -d '\r' | sed -n 's/^process_id://p')

release='$s/^return reply$/call("ZREMRANGEBYSCORE", KEYS[3], "-inf", string.format("%d", now))\ncall("ZREM", KEYS[3], ARGV[#ARGV])\nreturn reply/'
cp "$B/min_gcra.lua" "$W/min.lua"
cp "$B/min_gcra.lua" "$W/min_tgkey.lua"
cp "$LUA/fast_check.lua" "$W/fast_check.lua"
cp "$B/min_three.lua" "$W/min_three.lua"
sed -e "$release" "$LUA/fast_decide.lua" > "$W/fast_decide3.lua"
VARIANTS=${VARIANTS:-"min min_tgkey fast_check min_three fast_decide3"}
if [ -n "${OLD:-}" ]; then
  git -C "$ROOT" show "$OLD:crates/tollgate/src/store/redis/lua/fast_check.lua" > "$W/old_fast_check.lua"
  git -C "$ROOT" show "$OLD:crates/tollgate-bench/lua/min_three.lua" > "$W/old_min_three.lua"
  git -C "$ROOT" show "$OLD:crates/tollgate/src/store/redis/lua/fast_decide.lua" | sed -e "$release" > "$W/old_fast_decide3.lua"
  VARIANTS="$VARIANTS old_fast_check old_min_three old_fast_decide3"
fi
K='tollgate-bench:{t__rand_int__}:bench'
args_for() {
  case $1 in
    # The ceiling's key (as bench.sh's ceiling cases), and tollgate's own key for that limit
    # (as its ceiling-tgkey case; fast_check.lua runs with it).
    min) echo "1 $K:requests 1000000 1000000000000000" ;;
    min_tgkey) echo "1 $K:default/requests%3A60/minute%3Agcra%3Ab1000000000 1000000 1000000000000000" ;;
    # fast_check.lua with tollgate's key for the requests limit; inc and tau in hexadecimal.
    fast_check) echo "1 $K:default/requests%3A60/minute%3Agcra%3Ab1000000000 f4240 38d7ea4c68000" ;;
    old_fast_check) echo "1 $K:default/requests%3A60/minute%3Agcra%3Ab1000000000 1000000 1000000000000000" ;;
    *min_three) echo "3 $K:requests $K:tokens $K:concurrent 1000000 1000000000000000 1000000 10000000000000 1000000 60000000 1234567890123456789" ;;
    fast_decide3) echo "3 $K:requests $K:tokens $K:concurrent sggc f4240 38d7ea4c68000 f4240 9184e72a000 f4240 3938700 1234567890123456789" ;;
    old_fast_decide3) echo "3 $K:requests $K:tokens $K:concurrent sggc 1000000 1000000000000000 1000000 10000000000000 1000000 60000000 1234567890123456789" ;;
  esac
}
declare -A IR
for r in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    sha=$(redis-cli -p "$P" SCRIPT LOAD "$(cat "$W/$v.lua")")
    redis-cli -p "$P" FLUSHALL > /dev/null
    # shellcheck disable=SC2046
    redis-benchmark -p "$P" -c 50 -n "$N" -P 16 -r 10000 -q EVALSHA "$sha" $(args_for "$v") > /dev/null
    callgrind_control -z "$PID" > /dev/null 2>&1
    callgrind_control -i on "$PID" > /dev/null 2>&1
    # shellcheck disable=SC2046
    redis-benchmark -p "$P" -c 50 -n "$N" -P 16 -r 10000 -q EVALSHA "$sha" $(args_for "$v") > /dev/null
    callgrind_control -i off "$PID" > /dev/null 2>&1
    rm -f "$DIR"/callgrind.redis."$PID".*
    callgrind_control -d "$PID" > /dev/null 2>&1
    sleep 1
    f=$(ls -t "$DIR"/callgrind.redis."$PID".* | head -1)
    total=$(callgrind_annotate --inclusive=no "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
    IR[$v]="${IR[$v]:-} $(awk -v t="$total" -v n="$N" 'BEGIN{printf "%.0f", t/n}')"
  done
done
printf '%-18s %s\n' variant "instructions per call, each round"
for v in $VARIANTS; do printf '%-18s%s\n' "$v" "${IR[$v]}"; done
