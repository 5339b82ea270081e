#!/usr/bin/env bash
# The gateway's benchmarks (BENCHMARKS.md, "The gateway"): tollgate's gateway against the
# upstream called directly, against LiteLLM's proxy, and the memory of 10,000 open streams. One
# fake upstream (tollgate-fake-upstream) serves every case; one load generator
# (tollgate-bench-gateway, hand-written HTTP/1.1 over keep-alive connections) drives them all.
#
# Usage, from the repository root:
#   crates/tollgate-bench/scripts/gateway.sh [OUT_DIR]
# OUT_DIR (default bench-results/gateway) receives one JSON object per case in runs.jsonl and
# the machine's state in machine.txt; the figures are printed at the end.
#
# Environment: DURATION (10s) per case; CONNECTIONS (32); LOG_LEVEL (info: tollgate's default,
# one log line per call) for tollgate; NO_BUILD=1 uses the release binaries
# already built; NO_LITELLM=1 skips LiteLLM; STREAMS (10000) streams held open at once.
# LiteLLM's proxy (`litellm[proxy]`, pinned below) is installed into a virtual environment of
# its own, target/litellm-venv, never into the tests' .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${1:-bench-results/gateway}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
LOG_LEVEL=${LOG_LEVEL:-info}
STREAMS=${STREAMS:-10000}
LITELLM_VERSION=1.105.0   # the newest whose [proxy] extra resolves from PyPI alone
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
# 10,000 streams need 10,000 client sockets, and twice that in the gateway (one to the client,
# one to the upstream): raise the limit on open files as far as this machine lets us, and hold
# fewer streams if even the hard limit is too low for twice STREAMS.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
MAX_STREAMS=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$STREAMS" -gt "$MAX_STREAMS" ]; then
  echo "open files limited to $(ulimit -n): holding $MAX_STREAMS streams, not $STREAMS" >&2
  STREAMS=$MAX_STREAMS
fi

[ -n "${NO_BUILD:-}" ] || cargo build --release -p tollgate-server --bin tollgate \
  -p tollgate-test --bin tollgate-fake-upstream -p tollgate-bench --bin tollgate-bench-gateway
LOAD=$TARGET/release/tollgate-bench-gateway

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL: until it answers at all
  for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Hypervisor vendor)' || true
  echo "memory: $(free -g | awk '/^Mem:/{print $2 " GiB"}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tollgate log level: $LOG_LEVEL"
  rustc --version
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$OUT/machine.txt"
: > "$OUT/runs.jsonl"

# The fake upstream: one thread, records nothing.
coproc FAKE { exec "$TARGET/release/tollgate-fake-upstream" --threads 1; }
PIDS+=("$FAKE_PID")
read -r FAKE_URL <&"${FAKE[0]}"
UPSTREAM=$FAKE_URL/v1/chat/completions

# tollgate: the gateway in front of it, with request and token limits that the load never
# reaches (so that every call is decided, reserved and settled, and none refused), its default
# logging (one line per call) to a file.
GW_PORT=$(free_port)
cat > "$OUT/tollgate.toml" <<TOML
[server]
grpc = "off"

[[rules]]
name = "per-tenant"
match = { tenant = "*", provider = "*" }
limits = [
  { kind = "requests", amount = 1000000000, per = "minute" },
  { kind = "tokens", amount = 1000000000, per = "minute" },
]

[[upstreams]]
kind = "openai"
url = "$FAKE_URL/v1"
TOML
"$TARGET/release/tollgate" serve --config "$OUT/tollgate.toml" --http "127.0.0.1:$GW_PORT" \
  --no-watch --log-level "$LOG_LEVEL" 2> "$OUT/tollgate.log" > /dev/null &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/healthz"
GATEWAY=http://127.0.0.1:$GW_PORT/v1/chat/completions
KEY="authorization: Bearer sk-bench-0000000000000000000001"

case_() { # NAME ARGS...: one run of the load generator, appended to runs.jsonl
  local name=$1; shift
  local load_before; load_before=$(cut -d' ' -f1 /proc/loadavg)
  local out; out=$("$LOAD" "$@")
  echo "{\"case\": \"$name\", \"loadavg_before\": $load_before, \"result\": $out}" >> "$OUT/runs.jsonl"
  echo "$name: $out" >&2
  echo "$out"
}
field() { python3 -c "import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {'v': v}))" "$1" "$2"; }

# Warm-up (the tokenizers load on first use).
"$LOAD" load --url "$GATEWAY" --header "$KEY" --duration 2s --warmup 0s > /dev/null

# 1. Maximum throughput, non-streaming, closed loop.
D_MAX=$(case_ direct_max load --url "$UPSTREAM" --header "$KEY" --connections "$CONNECTIONS" --duration "$DURATION")
G_MAX=$(case_ gateway_max load --url "$GATEWAY" --header "$KEY" --connections "$CONNECTIONS" --duration "$DURATION")
D_RPS=$(field "$D_MAX" "v['rps']"); G_RPS=$(field "$G_MAX" "v['rps']")

# 2. Latency at half of the gateway's maximum, open loop, the same rate for both.
HALF=$(python3 -c "print(round($G_RPS / 2))")
D_HALF=$(case_ direct_half load --url "$UPSTREAM" --header "$KEY" --connections "$CONNECTIONS" --rate "$HALF" --duration "$DURATION")
G_HALF=$(case_ gateway_half load --url "$GATEWAY" --header "$KEY" --connections "$CONNECTIONS" --rate "$HALF" --duration "$DURATION")

# 3. Streams (16 events each) at half of the gateway's maximum of streams, the same rate for
#    both: time to the first byte of the body.
G_STREAM_MAX=$(case_ gateway_stream_max load --stream --url "$GATEWAY" --header "$KEY" --connections "$CONNECTIONS" --duration "$DURATION")
SHALF=$(python3 -c "print(round($(field "$G_STREAM_MAX" "v['rps']") / 2))")
D_STREAM=$(case_ direct_stream load --stream --url "$UPSTREAM" --header "$KEY" --connections "$CONNECTIONS" --rate "$SHALF" --duration "$DURATION")
G_STREAM=$(case_ gateway_stream load --stream --url "$GATEWAY" --header "$KEY" --connections "$CONNECTIONS" --rate "$SHALF" --duration "$DURATION")

# 4. LiteLLM's proxy with the same limits (per-deployment rpm and tpm, enforced by its
#    usage-based router), in front of the same upstream.
L_MAX=""; L_HALF=""; DL_HALF=""; GL_HALF=""
if [ -z "${NO_LITELLM:-}" ]; then
  VENV=$TARGET/litellm-venv
  if [ ! -x "$VENV/bin/litellm" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
  fi
  L_PORT=$(free_port)
  cat > "$OUT/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: $FAKE_URL/v1
      api_key: sk-bench-upstream
      rpm: 1000000000
      tpm: 1000000000
router_settings:
  routing_strategy: usage-based-routing-v2
litellm_settings:
  telemetry: false
general_settings:
  master_key: sk-bench-0000000000000000000001   # the key the load generator sends; no database
YAML
  # The model price map from the package itself (no network).
  LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/litellm" --config "$OUT/litellm.yaml" \
    --host 127.0.0.1 --port "$L_PORT" --num_workers 1 > "$OUT/litellm.log" 2>&1 &
  L_PID=$!
  PIDS+=("$L_PID")
  wait_http "http://127.0.0.1:$L_PORT/health/liveliness"
  LITELLM=http://127.0.0.1:$L_PORT/v1/chat/completions
  "$LOAD" load --url "$LITELLM" --header "$KEY" --duration 3s --warmup 0s > /dev/null
  L_MAX=$(case_ litellm_max load --url "$LITELLM" --header "$KEY" --connections "$CONNECTIONS" --duration "$DURATION")
  L_RPS=$(field "$L_MAX" "v['rps']")
  LHALF=$(python3 -c "print(max(1, round($L_RPS / 2)))")
  DL_HALF=$(case_ direct_litellm_half load --url "$UPSTREAM" --header "$KEY" --connections "$CONNECTIONS" --rate "$LHALF" --duration "$DURATION")
  GL_HALF=$(case_ gateway_litellm_half load --url "$GATEWAY" --header "$KEY" --connections "$CONNECTIONS" --rate "$LHALF" --duration "$DURATION")
  L_HALF=$(case_ litellm_half load --url "$LITELLM" --header "$KEY" --connections "$CONNECTIONS" --rate "$LHALF" --duration "$DURATION")
  kill "$L_PID"
fi

# 5. 10,000 streams open at once on the gateway (each a chunk a second, for as long as held).
HOLD=$(case_ gateway_hold hold --url "$GATEWAY" --header "$KEY" --header "x-fake-chunks: 1000000" \
  --header "x-fake-delay-ms: 1000" --stream --streams "$STREAMS" --pid "$GW_PID")

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
python3 - "$OUT" "$D_MAX" "$G_MAX" "$D_HALF" "$G_HALF" "$D_STREAM" "$G_STREAM" "$HOLD" "$L_MAX" "$DL_HALF" "$GL_HALF" "$L_HALF" <<'PY'
import json, sys
out = sys.argv[1]
d_max, g_max, d_half, g_half, d_st, g_st, hold = (json.loads(a) for a in sys.argv[2:9])
lit = [json.loads(a) if a else None for a in sys.argv[9:13]]
ms = lambda us: us / 1000
print(f"upstream directly: {d_max['rps']:.0f}/s; through tollgate: {g_max['rps']:.0f}/s; "
      f"ratio {g_max['rps'] / d_max['rps']:.2f}x (goal >= 0.9)")
print(f"at {g_half['rate']:.0f}/s: p99 directly {ms(d_half['latency_us']['p99']):.2f} ms, through tollgate "
      f"{ms(g_half['latency_us']['p99']):.2f} ms: added {ms(g_half['latency_us']['p99'] - d_half['latency_us']['p99']):.2f} ms (goal <= 1)")
print(f"streams at {g_st['rate']:.0f}/s: first byte p99 directly {ms(d_st['first_byte_us']['p99']):.2f} ms, through tollgate "
      f"{ms(g_st['first_byte_us']['p99']):.2f} ms: added {ms(g_st['first_byte_us']['p99'] - d_st['first_byte_us']['p99']):.2f} ms (goal <= 1)")
print(f"{hold['open']} of {hold['streams']} streams open: RSS {hold['rss_before_kib']} -> {hold['rss_open_kib']} KiB, "
      f"{hold['bytes_per_stream'] / 1024:.1f} KiB per stream (goal <= 64); {hold['rss_after_close_kib']} KiB after they closed")
l_max, dl, gl, l_half = lit
if l_max:
    print(f"LiteLLM: {l_max['rps']:.0f}/s; tollgate {g_max['rps']:.0f}/s: {g_max['rps'] / max(l_max['rps'], 1e-9):.1f}x (goal >= 10)")
    added_l = l_half['latency_us']['p99'] - dl['latency_us']['p99']
    added_g = gl['latency_us']['p99'] - dl['latency_us']['p99']
    print(f"at {l_half['rate']:.0f}/s: p99 directly {ms(dl['latency_us']['p99']):.2f} ms, tollgate {ms(gl['latency_us']['p99']):.2f} ms, "
          f"LiteLLM {ms(l_half['latency_us']['p99']):.2f} ms: added {ms(added_g):.2f} vs {ms(added_l):.2f} ms "
          f"({added_g / added_l if added_l else float('nan'):.3f} of LiteLLM's; goal <= 0.1)")
PY
cat "$OUT/machine.txt"
