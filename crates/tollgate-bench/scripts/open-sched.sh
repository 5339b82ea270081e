#!/usr/bin/env bash
# An open-loop run (one limit, 50 callers, one tokio worker, 10 s after 1 s of warm-up) with
# `perf sched record -a` over 8 s of it, for the scheduling waits behind the latency tail.
#
# Usage (from the repository root, after `cargo build --release -p tollgate-bench`):
#   target/release/tollgate-bench-redis -- crates/tollgate-bench/scripts/open-sched.sh RATE OUT
#   perf sched timehist -i OUT.sched > OUT.timehist
#   crates/tollgate-bench/scripts/sched-waits.py OUT.timehist 'redis-server|tokio-rt-worker' 0.5
# OUT.json is the load tool's report; TOLLGATE_BENCH overrides the load tool's path.
set -eu
: "${TOLLGATE_BENCH_PORT:?run me under tollgate-bench-redis}"
RATE=$1; OUT=$2
"${TOLLGATE_BENCH:-target/release/tollgate-bench}" --redis "redis://127.0.0.1:$TOLLGATE_BENCH_PORT/" -c 50 -d 10s --limits 1 --rate "$RATE" --threads 1 --json -q > "$OUT.json" &
B=$!
sleep 2
perf sched record -a -o "$OUT.sched" -- sleep 8 > /dev/null 2>&1
wait $B
