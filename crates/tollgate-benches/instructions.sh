#!/bin/sh
# Instructions per decision of the in-process cases (benches/instructions.rs), counted by
# valgrind's callgrind inside the measured call only: each case runs twice, with $SHORT and
# $LONG calls, and the difference of the counts over the difference of the calls takes out
# what the first calls do once.
#
#   crates/tollgate-benches/instructions.sh                 # every case
#   crates/tollgate-benches/instructions.sh admit/one       # the cases whose name contains it
set -eu
SHORT=${SHORT:-10000}
LONG=${LONG:-60000}
filter=${1:-}
cd "$(dirname "$0")/../.."
exe=$(cargo bench -p tollgate-benches --bench instructions --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*instructions[^"]*\)".*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "no instructions executable built" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
count() {
  valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file="$dir/cg" \
    "$exe" "$1" "$2" >/dev/null 2>&1
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dir/cg"
}
printf '%-26s %s\n' case instructions
for case in $("$exe" 2>&1 | sed 's/.*cases: //; s/,//g'); do
  case $case in *"$filter"*) ;; *) continue ;; esac
  a=$(count "$case" "$SHORT")
  b=$(count "$case" "$LONG")
  echo "$case $a $b" | awk -v s="$SHORT" -v l="$LONG" '{ printf "%-26s %.1f\n", $1, ($3 - $2) / (l - s) }'
done
