#!/usr/bin/env bash
# The service against a bare HTTP server, as BENCHMARKS.md measures it: one `tollgate serve`
# (memory store, the default policy) on a loopback port; wrk on the same machine alternates
# between the bare route (`GET /healthz`, which decides nothing) and `POST /v1/check` for 1,000
# tenants (check.lua, then check-prebuilt.lua), printing requests/s, p99 and the server's CPU
# per request; then `tollgate bench` holds 25,000 decisions/s (open loop) for the latency.
#
# Usage, from the repository root:
#   crates/tollgate-server/bench/compare.sh [RUNS]
# RUNS (default 2) rounds of the wrk runs. Needs wrk and curl. NO_BUILD=1 uses the release
# binary already built (BIN=path another one); PORT (default 18480) is the HTTP port; DURATION
# (default 8s) each wrk run's length. Run it on a quiet machine: wrk and the server share the
# cores, so anything else running shows in the figures.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HERE=$ROOT/crates/tollgate-server/bench
RUNS=${1:-2}
PORT=${PORT:-18480}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-8s}
URL=http://127.0.0.1:$PORT

command -v wrk >/dev/null || { echo "compare.sh: needs wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  BIN=$TARGET/release/tollgate
  [ -n "${NO_BUILD:-}" ] || cargo build --release -p tollgate-server
fi
"$BIN" serve --http "127.0.0.1:$PORT" --grpc off --log-level warn &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
i=0
until curl -s -o /dev/null "$URL/healthz"; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "compare.sh: serve did not start" >&2; exit 1; }
  sleep 0.2
done
wrk -t1 -c32 -d2s -s "$HERE/check.lua" "$URL" >/dev/null # warm-up

summary() { grep -E 'Requests/sec|^ +99%|server CPU per request' || true; }
for r in $(seq "$RUNS"); do
  echo "== round $r: bare, GET /healthz"
  "$HERE/cpu.sh" "$pid" "$URL/healthz" -t1 -c32 "-d$DURATION" | summary
  echo "== round $r: POST /v1/check, check.lua"
  "$HERE/cpu.sh" "$pid" "$URL" -t1 -c32 "-d$DURATION" -s "$HERE/check.lua" | summary
  echo "== round $r: POST /v1/check, check-prebuilt.lua"
  "$HERE/cpu.sh" "$pid" "$URL" -t1 -c32 "-d$DURATION" -s "$HERE/check-prebuilt.lua" | summary
done
echo "== open loop at 25,000 decisions/s"
"$BIN" bench --url "$URL" -d 10s -c 32 --rate 25000 --tenants 1000 --quiet --json
