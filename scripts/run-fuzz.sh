#!/usr/bin/env bash
# Runs every fuzz target for a bounded time with its seed corpus (tests/fuzz/corpus/<target>/).
set -euo pipefail
build=$1; secs=${2:-20}
fail=0
for f in "$build"/tests/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus=tests/fuzz/corpus/$name
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  echo "== $name (${secs}s)"
  if ! "$f" -max_total_time="$secs" -rss_limit_mb=2048 "$work" >"$work.log" 2>&1; then
    echo "FAIL $name"; tail -40 "$work.log"; fail=1
  fi
  rm -rf "$work" "$work.log"
done
exit $fail
