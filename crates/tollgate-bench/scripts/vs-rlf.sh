#!/usr/bin/env bash
# tollgate's Redis store against rate-limiter-flexible (RateLimiterRedis over ioredis, the Node.js
# limiter), side by side on one private redis-server started and killed by tollgate-bench-redis
# (never the server on 6379, nor any other).
#
# Both sides make the same decision: one requests-per-minute limit per key, 10,000 keys picked at
# random, a budget no run exhausts (tollgate: GCRA, 60/min with a burst of 10^9; rate-limiter-
# flexible: 10^9 points per 60 s), so every call is admitted and every key keeps its state; N
# concurrent callers, closed loop, one connection, one client thread (tollgate-bench with one tokio
# worker, Node's one event loop). Rounds interleave the two (tollgate, then rate-limiter-flexible,
# for each caller count), each run on fresh keys of an emptied server, so that both see the same
# machine; the figure is the ratio of the two rates within each round, its median and range.
#
# Usage, from the repository root:
#   crates/tollgate-bench/scripts/vs-rlf.sh [OUT_DIR] [ROUNDS]
# OUT_DIR (default bench-results/vs-rlf) receives one JSON object per run in runs.jsonl (the
# tools' own --json output plus case, round, callers and the load average before the run), the
# machine facts in machine.txt and the summary in summary.txt. ROUNDS defaults to 5.
# Environment: DURATION (default 10s) and WARMUP (1s) per run; CALLERS (default "50 1");
# TG_THREADS (default 1) tokio workers for tollgate-bench; NICE (default -15; 0 leaves the priority
# as it is) for the server and both load tools alike; NO_BUILD=1 uses the binaries already in
# $CARGO_TARGET_DIR/release. node_modules is installed from package-lock.json (npm ci) if missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
NODE_DIR=$ROOT/crates/tollgate-bench/node
SELF=$ROOT/crates/tollgate-bench/scripts/vs-rlf.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if [ "${1:-}" = --rounds ]; then
  # Inside tollgate-bench-redis: the rounds themselves.
  : "${TOLLGATE_BENCH_URL:?run me under tollgate-bench-redis}"
  OUT=$2 ROUNDS=$3
  URL=$TOLLGATE_BENCH_URL P=$TOLLGATE_BENCH_PORT
  record() { # record CASE ROUND CALLERS LOAD JSON
    jq -c --arg case "$1" --argjson round "$2" --argjson callers "$3" --arg load "$4" \
      '{case: $case, round: $round, callers: $callers, loadavg: $load} + .' <<< "$5" | tee -a "$OUT/runs.jsonl"
  }
  for round in $(seq "$ROUNDS"); do
    for c in $CALLERS; do
      redis-cli -p "$P" FLUSHALL > /dev/null
      load=$(cut -d' ' -f1-3 /proc/loadavg)
      record tollgate "$round" "$c" "$load" "$("$TARGET/release/tollgate-bench" --redis "$URL" -c "$c" \
        --limits 1 --threads "$TG_THREADS" --tenants 10000 --rpm 60 --burst 1000000000 \
        --prefix "tg-r$round-c$c" -d "$DURATION" --warmup "$WARMUP" --json -q)"
      redis-cli -p "$P" FLUSHALL > /dev/null
      load=$(cut -d' ' -f1-3 /proc/loadavg)
      record rlf "$round" "$c" "$load" "$(node "$NODE_DIR/rlf-bench.js" --redis "$URL" -c "$c" \
        --keys 10000 --points 1000000000 --per 60 --prefix "rlf-r$round-c$c" -d "$DURATION" --warmup "$WARMUP")"
    done
  done
  exit 0
fi

OUT=${1:-bench-results/vs-rlf}
ROUNDS=${2:-5}
export DURATION=${DURATION:-10s} WARMUP=${WARMUP:-1s} CALLERS=${CALLERS:-50 1} TG_THREADS=${TG_THREADS:-1}
NICE=${NICE:--15}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
export TARGET

[ -n "${NO_BUILD:-}" ] || cargo build --release -p tollgate-bench
[ -f "$NODE_DIR/node_modules/.package-lock.json" ] || (cd "$NODE_DIR" && npm ci --no-audit --no-fund)

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor|CPU\(s\)|Thread|Core|L3)' || true
  echo "memory: $(free -g | awk '/^Mem:/{print $2 " GiB"}')"
  echo "kernel: $(uname -r)"
  echo "loadavg at start: $(cat /proc/loadavg)"
  redis-server --version
  rustc --version
  echo "node: $(node --version)"
  (cd "$NODE_DIR" && node -e 'for (const p of ["rate-limiter-flexible", "ioredis"]) console.log(p + ": " + require(p + "/package.json").version)')
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$OUT/machine.txt"

: > "$OUT/runs.jsonl"
nice -n "$NICE" "$TARGET/release/tollgate-bench-redis" -- "$SELF" --rounds "$OUT" "$ROUNDS"

# Per caller count: each side's median rate, Redis CPU per decision, p99, and the ratio of the
# two rates within each round (median, range).
{
  echo "$ROUNDS interleaved rounds of $DURATION each; tollgate-bench with $TG_THREADS tokio worker(s)"
  for c in $CALLERS; do
    jq -rs --argjson c "$c" '
      def med: sort | .[(length - 1) / 2 | floor];
      [.[] | select(.callers == $c)] as $runs
      | ($runs | map(select(.case == "tollgate"))) as $tg
      | ($runs | map(select(.case == "rlf"))) as $rlf
      | [range(0; [$tg, $rlf] | map(length) | min)] | map(($tg[.].decisions_per_s) / ($rlf[.].decisions_per_s)) as $ratios
      | "\($c) callers: tollgate \($tg | map(.decisions_per_s) | med)/s (Redis CPU \($tg | map(.server.cpu_usec_per_decision) | med) µs/dec, p99 \($tg | map(.latency.p99_us) | med) µs, errors \($tg | map(.errors) | add)), "
        + "rate-limiter-flexible \($rlf | map(.decisions_per_s) | med)/s (Redis CPU \($rlf | map(.server.cpu_usec_per_decision) | med) µs/dec, p99 \($rlf | map(.latency.p99_us) | med) µs, errors \($rlf | map(.errors) | add)); "
        + "ratio per round \($ratios | map(. * 100 | round / 100)), median \($ratios | med * 100 | round / 100), range \($ratios | min * 100 | round / 100)–\($ratios | max * 100 | round / 100); "
        + "load average (1 min) \($runs | map(.loadavg | split(" ")[0] | tonumber) | min)–\($runs | map(.loadavg | split(" ")[0] | tonumber) | max)"
    ' "$OUT/runs.jsonl"
  done
} | tee "$OUT/summary.txt"
