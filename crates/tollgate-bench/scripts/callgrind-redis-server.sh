#!/bin/sh
# redis-server under callgrind with instrumentation off until `callgrind_control -i on`, for
# script-instructions.sh: TOLLGATE_REDIS_SERVER=/absolute/path/of/this-file tollgate-bench-redis -- ...
# (absolute: the server starts in a temporary directory).
# The profile goes to $CALLGRIND_DIR (default /tmp) as callgrind.redis.<pid>[.<dump>].
exec valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="${CALLGRIND_DIR:-/tmp}/callgrind.redis.%p" redis-server "$@"
