#!/usr/bin/env bash
# Every measurement of docs/bench-redis.md, in one run, each against its own fresh private
# redis-server (or six-node cluster) on a free loopback port, started and killed by
# tollgate-bench-redis. Never touches any other Redis.
#
# Usage, from the repository root:
#   crates/tollgate-bench/scripts/bench.sh [OUT_DIR] [REPS]
# OUT_DIR (default bench-results/) receives one JSON object per run in runs.jsonl, the machine
# facts in machine.txt, and the medians per case in summary.txt. REPS (default 3) runs of every
# case are interleaved. Before each run the script waits (at most QUIET_WAIT s, default 300) until
# the machine is idle for 3 s, and every run records the CPU that other processes used meanwhile.
# Servers and load generators run under `nice -n $NICE` (default -15; 0 to leave the priority as
# it is) so that other jobs on a shared machine disturb the measurement less. CLOSED_ONLY=1 runs
# only the ceilings and the closed-loop cases (no open loop, no cluster). OPEN_ONLY=RATE runs only
# the open-loop cases, at RATE decisions per second (instead of half of this run's maximum).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${1:-bench-results}
REPS=${2:-3}
DURATION=${DURATION:-10s}
QUIET_WAIT=${QUIET_WAIT:-300}
NICE=${NICE:--15}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"

# NO_BUILD=1 uses the binaries already in $CARGO_TARGET_DIR/release.
[ -n "${NO_BUILD:-}" ] || cargo build --release -p tollgate-bench
BENCH=$TARGET/release/tollgate-bench
WITH=(nice -n "$NICE" "$TARGET/release/tollgate-bench-redis")
MIN=$ROOT/crates/tollgate-bench/lua/min_gcra.lua
MIN3=$ROOT/crates/tollgate-bench/lua/min_three.lua

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor|CPU\(s\)|Thread|Core|L3)' || true
  echo "memory: $(free -g | awk '/^Mem:/{print $2 " GiB"}')"
  echo "kernel: $(uname -r)"
  redis-server --version
  rustc --version
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$OUT/machine.txt"

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
wait_quiet() {
  local waited=0 ok=0 b1 i1 b2 i2
  while [ "$waited" -lt "$QUIET_WAIT" ]; do
    read -r b1 i1 < <(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    sleep 1
    read -r b2 i2 < <(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    if [ $(((i2 - i1) * 100)) -ge $(((b2 - b1 + i2 - i1) * 90)) ]; then ok=$((ok + 1)); else ok=0; fi
    [ "$ok" -ge 3 ] && return 0
    waited=$((waited + 1))
  done
  echo "bench.sh: the machine is still busy after ${QUIET_WAIT}s; measuring anyway" >&2
}

# The ceiling: redis-benchmark, EVALSHA of min_gcra.lua for one of 10,000 keys (same key shape as
# tollgate's), interval 1 s and a burst of 10^9 (as tollgate-bench's default limit), so that every
# key keeps its state and every call is admitted. Runs inside tollgate-bench-redis.
cat > "$OUT/ceiling.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
P=$TOLLGATE_BENCH_PORT; PIPE=$1; SCRIPT=$2; N=${N:-500000}
K='tollgate-bench:{t__rand_int__}:bench'
SHA=$(redis-cli -p "$P" SCRIPT LOAD "$(cat "$SCRIPT")")
# CEILING_KEY=tollgate: the key tollgate itself uses for the requests limit of tollgate-bench's policy
# (its limit segment names the limit in full), instead of the short one.
case ${CEILING_KEY:-short} in
  short) REQ=$K:requests ;;
  tollgate) REQ=$K:default/requests%3A60/minute%3Agcra%3Ab1000000000 ;;
esac
case $(basename "$SCRIPT") in
  # One limit: interval 1 s, burst 10^9.
  min_gcra.lua) ARGS=(1 "$REQ" 1000000 1000000000000000) ;;
  # Three limits as tollgate-bench --limits 3: requests (1 s, burst 10^9), 100 tokens of 10 ms
  # (burst 10^9), 10^6 slots with a 60 s lease; the lease is released in the same call.
  min_three.lua) ARGS=(3 "$K:requests" "$K:tokens" "$K:concurrent" 1000000 1000000000000000 1000000 10000000000000 1000000 60000000 1234567890123456789) ;;
  *) echo "ceiling.sh: no arguments known for $SCRIPT" >&2; exit 2 ;;
esac
# Warm-up: create the keys.
redis-benchmark -p "$P" -c 50 -n 100000 -P 16 -r 10000 -q EVALSHA "$SHA" "${ARGS[@]}" > /dev/null
redis-cli -p "$P" CONFIG RESETSTAT > /dev/null
cpu() { redis-cli -p "$P" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.6f", s}'; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
c0=$(cpu); b0=$(busy)
csv=$(/usr/bin/time -f '%U %S' -o /tmp/tgb-time.$$ redis-benchmark -p "$P" -c 50 -n "$N" -P "$PIPE" -r 10000 --csv \
  EVALSHA "$SHA" "${ARGS[@]}" | tail -1)
c1=$(cpu); b1=$(busy)
read -r bu bs < /tmp/tgb-time.$$; rm -f /tmp/tgb-time.$$
rps=$(echo "$csv" | cut -d, -f2 | tr -d '"')
stats=$(redis-cli -p "$P" INFO commandstats | tr -d '\r')
calls=$(echo "$stats" | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1/p')
usec=$(echo "$stats" | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\),.*/\2/p')
keys=$(redis-cli -p "$P" DBSIZE)
# Read and write events and network bytes since the RESETSTAT (the few INFO calls included).
io=$(redis-cli -p "$P" INFO stats | tr -d '\r' | awk -F: '/^total_(reads|writes)_processed:|^total_net_(input|output)_bytes:/{v[$1]=$2}
  END{printf "[%d,%d,%d,%d]", v["total_reads_processed"], v["total_writes_processed"], v["total_net_input_bytes"], v["total_net_output_bytes"]}')
jq -cn --argjson pipe "$PIPE" --argjson rps "$rps" --argjson calls "$calls" --argjson usec "$usec" \
  --argjson c0 "$c0" --argjson c1 "$c1" --argjson b0 "$b0" --argjson b1 "$b1" --argjson bu "$bu" --argjson bs "$bs" \
  --argjson keys "$keys" --arg csv "$csv" --argjson io "$io" --arg script "$(basename "$SCRIPT")" \
  '{script: $script, pipeline: $pipe, decisions_per_s: $rps, evalsha_calls: $calls, evalsha_usec_per_call: (($usec / $calls) * 100 | round / 100),
    reads_per_decision: ($io[0] / $calls * 1000 | round / 1000), writes_per_decision: ($io[1] / $calls * 1000 | round / 1000),
    bytes_in_per_decision: ($io[2] / $calls | round), bytes_out_per_decision: ($io[3] / $calls | round),
    redis_cpu_s: (($c1 - $c0) * 100 | round / 100), redis_cpu_usec_per_decision: (($c1 - $c0) * 1e8 / $calls | round / 100),
    client_cpu_s: (($bu + $bs) * 100 | round / 100), client_cpu_usec_per_decision: (($bu + $bs) * 1e8 / $calls | round / 100),
    machine_busy_s: (($b1 - $b0) / 100), other_cpu_s: ((($b1 - $b0) / 100 - ($c1 - $c0) - $bu - $bs) * 100 | round / 100),
    keys: $keys, csv: $csv}'
EOF
chmod +x "$OUT/ceiling.sh"

record() { # record CASE REP JSON
  jq -c --arg case "$1" --argjson rep "$2" '{case: $case, rep: $rep} + .' <<< "$3" | tee -a "$OUT/runs.jsonl"
}
bench() { # bench CASE REP [--rt] [--cluster] -- tollgate-bench args
  local case=$1 rep=$2; shift 2
  local cluster=() with=("${WITH[@]}")
  # --rt: real-time round-robin priority 10 for Redis and the load tool, so that wake-ups are not
  # delayed behind other jobs' time slices (the kernel still keeps 5% of each second for others).
  if [ "${1:-}" = --rt ]; then with=(chrt -r 10 "$TARGET/release/tollgate-bench-redis"); shift; fi
  if [ "${1:-}" = --cluster ]; then cluster=(--cluster); shift; fi
  wait_quiet
  record "$case" "$rep" "$("${with[@]}" "${cluster[@]}" -- "$BENCH" "${cluster[@]}" {redis} -c 50 -d "$DURATION" --json -q "$@")"
}
median() { # median CASE FIELD (jq path)
  jq -s --arg case "$1" "[.[] | select(.case == \$case) | $2] | sort | .[(length - 1) / 2 | floor]" "$OUT/runs.jsonl"
}

: > "$OUT/runs.jsonl"
for rep in $(seq "$REPS"); do
  [ -z "${OPEN_ONLY:-}" ] || break
  for pipe in 1 16; do
    wait_quiet
    record "ceiling-P$pipe" "$rep" "$("${WITH[@]}" -- "$OUT/ceiling.sh" "$pipe" "$MIN")"
  done
  # The lower bound of a three-limit decision (min_three.lua), the same way.
  for pipe in 1 16; do
    wait_quiet
    record "min3-P$pipe" "$rep" "$("${WITH[@]}" -- "$OUT/ceiling.sh" "$pipe" "$MIN3")"
  done
  # What the longer keys of tollgate cost: the -P 16 ceiling with tollgate's own key.
  wait_quiet
  record "ceiling-tgkey-P16" "$rep" "$(CEILING_KEY=tollgate "${WITH[@]}" -- "$OUT/ceiling.sh" 16 "$MIN")"
  # The load tool with two tokio worker threads (one per CPU, the default), and with one.
  for t in 2 1; do
    bench "limits1-t$t" "$rep" --limits 1 --threads "$t"
    bench "limits3-t$t" "$rep" --limits 3 --threads "$t"
  done
done
# CLOSED_ONLY=1 stops here: the ceilings and the closed-loop cases only.
HALF=none
if [ -z "${CLOSED_ONLY:-}" ]; then
# Half of the best measured maximum of one limit, open loop, 50 callers.
if [ -n "${OPEN_ONLY:-}" ]; then
  HALF=$OPEN_ONLY
else
  MAX=$(jq -n "[$(median limits1-t2 .decisions_per_s), $(median limits1-t1 .decisions_per_s)] | max")
  HALF=$(jq -n "$MAX / 2 | floor")
fi
for rep in $(seq "$REPS"); do
  for t in 2 1; do
    bench "limits1-t$t-rate$HALF" "$rep" --limits 1 --threads "$t" --rate "$HALF"
  done
  bench "limits1-t1-rate$HALF-rt" "$rep" --rt --limits 1 --threads 1 --rate "$HALF"
done
# A six-node cluster (three masters, three replicas) on the same two cores.
for rep in $(seq "$REPS"); do
  [ -z "${OPEN_ONLY:-}" ] || break
  for t in 2 1; do
    bench "cluster-limits1-t$t" "$rep" --cluster --limits 1 --threads "$t"
  done
done
fi

{
  echo "medians of $REPS runs (decisions/s, latency µs, CPU µs per decision)"
  for c in ceiling-P1 ceiling-P16 ceiling-tgkey-P16 min3-P1 min3-P16; do
    printf '%-22s %8s/s  evalsha %6s µs/call  redis CPU %6s µs/dec  client CPU %6s µs/dec  other CPU %5s s\n' "$c" \
      "$(median "$c" .decisions_per_s)" "$(median "$c" .evalsha_usec_per_call)" \
      "$(median "$c" .redis_cpu_usec_per_decision)" "$(median "$c" .client_cpu_usec_per_decision)" "$(median "$c" .other_cpu_s)"
  done
  for c in limits1-t2 limits1-t1 limits3-t2 limits3-t1 "limits1-t2-rate$HALF" "limits1-t1-rate$HALF" "limits1-t1-rate$HALF-rt" cluster-limits1-t2 cluster-limits1-t1; do
    printf '%-22s %8s/s  p50 %7s p99 %7s p999 %7s max %7s  service p99 %7s  scripts %5s/dec %7s µs/dec  redis CPU %6s µs/dec  client CPU %6s µs/dec  errors %s  other CPU %5s s\n' "$c" \
      "$(median "$c" .decisions_per_s)" "$(median "$c" .latency.p50_us)" "$(median "$c" .latency.p99_us)" \
      "$(median "$c" .latency.p999_us)" "$(median "$c" .latency.max_us)" "$(median "$c" .service.p99_us)" \
      "$(median "$c" .server.script_calls_per_decision)" "$(median "$c" .server.script_usec_per_decision)" \
      "$(median "$c" .server.cpu_usec_per_decision)" "$(median "$c" .client_cpu_usec_per_decision)" \
      "$(median "$c" .errors)" "$(median "$c" .other_cpu_s)"
  done
} | tee "$OUT/summary.txt"
