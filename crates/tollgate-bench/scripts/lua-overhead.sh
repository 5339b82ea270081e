#!/usr/bin/env bash
# Where the Redis CPU of one tollgate decision goes: EVALSHA of variants of the store's scripts,
# built at run time from crates/tollgate/src/store/redis/lua/ (nothing in the repo is changed),
# against one private redis-server, with redis-benchmark (-c 50 -P 16 -r 10000, one GCRA op
# per call with the arguments the store sends for `--limits 1`).
#
# Usage (from the repository root, after `cargo build --release -p tollgate-bench`):
#   target/release/tollgate-bench-redis -- crates/tollgate-bench/scripts/lua-overhead.sh [REPS]
# Prints, per variant, the median over REPS (default 3) interleaved runs of: EVALSHA usec_per_call
# (INFO commandstats; FCALL's for the function variant) and Redis main-thread CPU per call (INFO cpu, user+sys).
set -euo pipefail
: "${TOLLGATE_BENCH_PORT:?run me under tollgate-bench-redis}"
P=$TOLLGATE_BENCH_PORT
REPS=${1:-3}
N=${N:-200000}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
LUA=$ROOT/crates/tollgate/src/store/redis/lua
MIN=$ROOT/crates/tollgate-bench/lua/min_gcra.lua
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# algorithms.lua with only its GCRA section (sliding window .. concurrency removed).
sed -e '/^-- Sliding window counter/,/^local ALGORITHMS/{/^local ALGORITHMS/!d}' \
    -e 's/^local ALGORITHMS = .*/local ALGORITHMS = { gcra }/' "$LUA/algorithms.lua" > "$W/gcra_prelude.lua"
printf 'return 1\n' > "$W/empty.lua"
cp "$MIN" "$W/min.lua"
{ cat "$LUA/algorithms.lua"; echo; echo 'return 1'; } > "$W/prelude_only.lua"
{ cat "$LUA/algorithms.lua"; echo; cat "$MIN"; } > "$W/prelude_min.lua"
{ cat "$W/gcra_prelude.lua"; echo; cat "$MIN"; } > "$W/gcra_prelude_min.lua"
{ cat "$LUA/algorithms.lua"; echo; cat "$LUA/decide.lua"; } > "$W/decide.lua"
{ cat "$W/gcra_prelude.lua"; echo; cat "$LUA/decide.lua"; } > "$W/decide_gcra_prelude.lua"
# The scripts the store runs for GCRA and concurrency decisions (standalone, no prelude):
# fast_decide.lua in general, fast_check.lua for one GCRA limit with scale 1 that spends.
cp "$LUA/fast_decide.lua" "$W/fast_decide.lua"
cp "$LUA/fast_check.lua" "$W/fast_check.lua"
# The same decide.lua as a Redis 7 function: the prelude runs once, at FUNCTION LOAD.
# (Redis 7.0 runs a library's body without `math`, so `floor` looks it up at call time.)
{ echo '#!lua name=tgbench'
  sed 's/^local floor = math.floor$/local function floor(x) return math.floor(x) end/' "$LUA/algorithms.lua"; echo
  echo "redis.register_function('tgbench_decide', function(KEYS, ARGV)"; cat "$LUA/decide.lua"; echo; echo 'end)'; } > "$W/fcall_decide.lua"

# The arguments: min_gcra.lua takes interval and tolerance in µs (10 s, 10^8 calls);
# decide.lua takes the store's arguments for one GCRA op (6/min, burst 10^8, cost 1), and
# fast_decide.lua the same op in its own form (signature, inc = cost x step, tau = burst x step).
args_for() {
  case $1 in
    fast_decide) echo "sg 10000000 1000000000000000" ;;
    fast_check) echo "10000000 1000000000000000" ;;
    *decide*) echo "spend 0 '' '' 60000 1 1 1 10000000 100000000 1" ;;
    *) echo "10000000 1000000000000000" ;;
  esac
}
cpu() { redis-cli -p "$P" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys)_main_thread:/{s+=$2} END{printf "%.6f", s}'; }

VARIANTS="empty prelude_only min gcra_prelude_min prelude_min decide_gcra_prelude decide fcall_decide fast_decide fast_check"
declare -A SHA USEC CPU
for v in $VARIANTS; do
  case $v in
    fcall_*) redis-cli -p "$P" FUNCTION LOAD REPLACE "$(cat "$W/$v.lua")" > /dev/null; SHA[$v]="FCALL tgbench_decide" ;;
    *) SHA[$v]="EVALSHA $(redis-cli -p "$P" SCRIPT LOAD "$(cat "$W/$v.lua")")" ;;
  esac
done
for r in $(seq "$REPS"); do
  for v in $VARIANTS; do
    redis-cli -p "$P" FLUSHALL > /dev/null
    # shellcheck disable=SC2046
    eval redis-benchmark -p "$P" -c 50 -n 50000 -P 16 -r 10000 -q ${SHA[$v]} 1 "'tollgate-bench:{t__rand_int__}:bench:requests'" $(args_for "$v") > /dev/null
    redis-cli -p "$P" CONFIG RESETSTAT > /dev/null
    c0=$(cpu)
    eval redis-benchmark -p "$P" -c 50 -n "$N" -P 16 -r 10000 -q ${SHA[$v]} 1 "'tollgate-bench:{t__rand_int__}:bench:requests'" $(args_for "$v") > /dev/null
    c1=$(cpu)
    u=$(redis-cli -p "$P" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_\(evalsha\|fcall\):.*usec_per_call=\([0-9.]*\).*/\2/p')
    USEC[$v]="${USEC[$v]:-} $u"
    CPU[$v]="${CPU[$v]:-} $(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN{printf "%.2f", (b-a)*1e6/n}')"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
printf '%-22s %14s %16s   %s\n' variant usec_per_call cpu_us_per_call "runs (usec_per_call | cpu)"
for v in $VARIANTS; do
  printf '%-22s %14s %16s   %s |%s\n' "$v" "$(echo "${USEC[$v]}" | median)" "$(echo "${CPU[$v]}" | median)" "${USEC[$v]}" "${CPU[$v]}"
done
