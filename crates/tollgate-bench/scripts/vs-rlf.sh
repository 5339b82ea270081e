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
# $CARGO_TARGET_DIR/release; SUMMARY_ONLY=1 measures nothing and summarises OUT_DIR/runs.jsonl
# again. node_modules is installed from package-lock.json (npm ci) if missing.
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

if [ -z "${SUMMARY_ONLY:-}" ]; then
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
fi

# Per caller count: each side's rate, Redis CPU per decision and p99, and the ratio of the two
# rates within each round, as medians with their range; then the same figures as the
# [redis.rlf] cases of docs/bench/results.toml (rlf.toml).
SPAN='def med: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r2: . * 100 | round / 100;
  def span: {median: (med | r2), low: (min | r2), high: (max | r2)};
  def cases($c): [.[] | select(.callers == $c)] as $runs
    | ($runs | map(select(.case == "tollgate"))) as $tg
    | ($runs | map(select(.case == "rlf"))) as $rlf
    | {callers: $c,
       tollgate_rate: ($tg | map(.decisions_per_s) | span), rlf_rate: ($rlf | map(.decisions_per_s) | span),
       ratio: ([range(0; [$tg, $rlf] | map(length) | min)] | map($tg[.].decisions_per_s / $rlf[.].decisions_per_s) | span),
       ratios: ([range(0; [$tg, $rlf] | map(length) | min)] | map($tg[.].decisions_per_s / $rlf[.].decisions_per_s | r2)),
       tollgate_cpu_us: ($tg | map(.server.cpu_usec_per_decision) | span), rlf_cpu_us: ($rlf | map(.server.cpu_usec_per_decision) | span),
       tollgate_client_cpu_us: ($tg | map(.client_cpu_usec_per_decision) | span), rlf_client_cpu_us: ($rlf | map(.client_cpu_usec_per_decision) | span),
       tollgate_evalsha_us: ($tg | map(.server.evalsha_usec_per_call) | span), rlf_evalsha_us: ($rlf | map(.server.evalsha_usec_per_call) | span),
       tollgate_p99_ms: ($tg | map(.latency.p99_us / 1000) | span), rlf_p99_ms: ($rlf | map(.latency.p99_us / 1000) | span),
       tollgate_reads: ($tg | map(.server.reads_per_decision) | span), rlf_reads: ($rlf | map(.server.reads_per_decision) | span),
       errors: ($runs | map(.errors) | add), denied: ($runs | map(.denied) | add),
       load: ($runs | map(.loadavg | split(" ")[0] | tonumber))};'
{
  echo "$ROUNDS interleaved rounds of $DURATION each; tollgate-bench with $TG_THREADS tokio worker(s)"
  for c in $CALLERS; do
    jq -rs --argjson c "$c" "$SPAN"'cases($c) | "\(.callers) caller(s): tollgate \(.tollgate_rate.median)/s, rate-limiter-flexible \(.rlf_rate.median)/s; ratio per round \(.ratios), median \(.ratio.median) (\(.ratio.low)–\(.ratio.high)); Redis CPU µs/decision \(.tollgate_cpu_us.median) / \(.rlf_cpu_us.median); client CPU µs/decision \(.tollgate_client_cpu_us.median) / \(.rlf_client_cpu_us.median); EVALSHA µs/call \(.tollgate_evalsha_us.median) / \(.rlf_evalsha_us.median); Redis reads per decision \(.tollgate_reads.median) / \(.rlf_reads.median); p99 ms \(.tollgate_p99_ms.median) / \(.rlf_p99_ms.median); errors \(.errors), denied \(.denied); load average (1 min) \(.load | min)–\(.load | max)"' "$OUT/runs.jsonl"
  done
} | tee "$OUT/summary.txt"
toml_span() { jq -r '"{ median = \(.median), low = \(.low), high = \(.high) }"'; }
{
  echo "load_average = $(jq -s '[.[].loadavg | split(" ")[0] | tonumber] | {median: 0, low: min, high: max}' "$OUT/runs.jsonl" | jq -r '"{ low = \(.low), high = \(.high) }"')"
  for c in $CALLERS; do
    echo
    echo "[[redis.rlf.cases]]"
    echo "callers = $c"
    for f in tollgate_rate rlf_rate ratio tollgate_cpu_us rlf_cpu_us tollgate_client_cpu_us rlf_client_cpu_us \
        tollgate_evalsha_us rlf_evalsha_us tollgate_reads rlf_reads tollgate_p99_ms rlf_p99_ms; do
      echo "$f = $(jq -s --argjson c "$c" "$SPAN"'cases($c) | .'"$f" "$OUT/runs.jsonl" | toml_span)"
    done
  done
} > "$OUT/rlf.toml"
echo "vs-rlf.sh: the [redis.rlf] figures for docs/bench/results.toml are in $OUT/rlf.toml" >&2
