#!/bin/sh
# CPU per request of a running `tollgate serve` (and of wrk) over one wrk run: the server
# process's utime+stime from /proc/PID/stat before and after, divided by the requests wrk
# completed. Load-independent, unlike the rate.
#   cpu.sh PID URL [wrk arguments...]
# e.g. cpu.sh "$(pgrep -n tollgate)" http://127.0.0.1:18480 -t1 -c32 -d8s -s check-prebuilt.lua
set -eu
pid=$1; url=$2; shift 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks "$pid")
out=$(/usr/bin/time -f 'wrk-cpu %U %S' wrk --latency "$@" "$url" 2>&1)
after=$(ticks "$pid")
echo "$out"
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
echo "$out" | awk -v b="$before" -v a="$after" -v hz="$hz" -v r="$reqs" '
  /^wrk-cpu/ { w = ($2 + $3) * 1e6 / r }
  END { printf "server CPU per request: %.1f us; wrk CPU per request: %.1f us (%d requests)\n", (a - b) * 1e6 / hz / r, w, r }'
