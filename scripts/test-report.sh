#!/usr/bin/env bash
# After ctest: says what was skipped and why, and which tests took longest.
#   scripts/test-report.sh BUILD_DIR
# Reads BUILD_DIR/Testing/Temporary/LastTest.log. A skip reason is an output line starting
# with "SKIP" (tests/integration/mdtest.py prints "SKIP <test>: <reason>", the conformance
# runner "SKIP: <reason>") or ending in "skipped" ("diskfull: cannot mount ...: skipped");
# ctest itself only says "Skipped", without the reason. A test that skips should print one.
set -euo pipefail
log=${1:-build-debug}/Testing/Temporary/LastTest.log
[ -f "$log" ] || { echo "test-report: $log not found" >&2; exit 0; }
awk '
  /^[0-9]+\/[0-9]+ Test: / { name = $3; inout = 0; next }
  /^Output:$/ { inout = 1; next }
  /^<end of output>$/ { inout = 0; next }
  # "SKIP ..." lines, and lines ending in "skipped" that are not a count ("3 skipped")
  inout && (/^SKIP/ || (tolower($0) ~ /skipped\.?$/ && $0 !~ /[0-9]+ skipped\.?$/)) {
    skips[++n] = name ": " $0; next
  }
  /^Test time = / { t = $4; times[name] = t + 0 }
  END {
    if (n) {
      print "== skipped (and why)"
      for (i = 1; i <= n; i++) print "  " skips[i]
    } else {
      print "== nothing skipped"
    }
    m = 0
    for (k in times) { names[++m] = k; total += times[k] }
    # slowest five (selection; the list is short)
    print "== slowest tests (seconds; sum of all " m " tests: " int(total) " s)"
    for (j = 1; j <= 5 && j <= m; j++) {
      best = ""
      for (k in times) if (!(k in shown) && (best == "" || times[k] > times[best])) best = k
      shown[best] = 1
      printf "  %8.1f  %s\n", times[best], best
    }
  }' "$log"
