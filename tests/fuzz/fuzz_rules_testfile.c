/* Fuzz target: the `metricsd test-rules` file reader — YAML, then every input series
 * selector, value sequence ("1+2x3 _x2 stale"), duration, expected label set and PromQL
 * expression a promtool-format test file holds (rules_test_check, which test-rules runs
 * before evaluating anything). */
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "rules/rules_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    log_set_level(LOG_ERROR);
    quiet = 1;
  }
  json_t *doc = NULL;
  char err[256];
  if (config_yaml_to_json((const char *)data, size, &doc, err, sizeof err) != 0) return 0;
  sb_t out = {0};
  rules_test_check(doc, &out);
  sb_free(&out);
  json_decref(doc);
  return 0;
}
