/* Fuzz target: the rule-file loader (YAML → groups → rules: PromQL expressions, durations,
 * label and annotation templates) as used by rule_files, check-rules and reloads. Whatever
 * loads must free cleanly; whatever fails must leave nothing behind. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "rules/rules_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    log_set_level(LOG_ERROR);
    quiet = 1;
  }
  group_t **groups = NULL;
  size_t n = 0;
  char err[1024];
  int rc = rules_parse_file_text((const char *)data, size, "fuzz.yml", 60000, &groups, &n, err, sizeof err);
  (void)rc;
  for (size_t i = 0; i < n; i++)
    group_free(groups[i]);
  free(groups);
  return 0;
}
