#!/bin/sh
# User-space instructions per request of `tollgate serve`, counted by valgrind's callgrind:
# a figure that does not move with what else the machine runs (the time per request does),
# so that two builds can be compared on a busy machine. Kernel time (the socket writes) is
# not counted. Needs valgrind and wrk.
#   instructions.sh BINARY [wrk script] [port]
# e.g. instructions.sh target/release/tollgate check-prebuilt.lua
# The server runs slowed down under valgrind: wrk uses 8 connections for 8 s after a 3 s
# warm-up, and only the measured run is counted (callgrind_control zeroes the counters).
set -eu
bin=$1
script=${2:-check-prebuilt.lua}
port=${3:-18590}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
  "$bin" serve --http "127.0.0.1:$port" --grpc off --log-level warn >"$dir/serve.log" 2>&1 &
pid=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "serve did not start" >&2; exit 1; }
  sleep 0.2
done
cd "$here"
wrk -t1 -c8 -d3s -s "$script" "http://127.0.0.1:$port" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
wrk -t1 -c8 -d8s -s "$script" "http://127.0.0.1:$port" >"$dir/wrk.txt"
callgrind_control -d "$pid" >/dev/null 2>&1
kill "$pid"; wait "$pid" 2>/dev/null || true
reqs=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
file="$dir/cg.$pid.1"
ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$reqs requests, $((ir / reqs)) user-space instructions per request ($file)"
