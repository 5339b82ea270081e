#!/usr/bin/env bash
# One worker, open loop at RATE, 1 limit: unpinned, then Redis on CPU 0 and the load tool on CPU 1
# (taskset), twice each, alternated. Usage from the repository root: pin-ab.sh RATE (TARGET=dir of the
# release binaries, default target/release).
set -eu
R=$1; T=${TARGET:-target/release}
for i in 1 2; do
  nice -n -15 $T/tollgate-bench-redis -- $T/tollgate-bench {redis} -c 50 -d 10s --limits 1 --rate $R --threads 1 --json -q 2>/dev/null | jq -c --arg c "unpinned-$i" '{case: $c, decisions_per_s, p50: .latency.p50_us, p99: .latency.p99_us, p999: .latency.p999_us, max: .latency.max_us, other_cpu_s}'
  nice -n -15 taskset -c 0 $T/tollgate-bench-redis -- taskset -c 1 $T/tollgate-bench {redis} -c 50 -d 10s --limits 1 --rate $R --threads 1 --json -q 2>/dev/null | jq -c --arg c "pinned-$i" '{case: $c, decisions_per_s, p50: .latency.p50_us, p99: .latency.p99_us, p999: .latency.p999_us, max: .latency.max_us, other_cpu_s}'
done
