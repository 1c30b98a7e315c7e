/* Fuzz target: the rule template compiler and executor (src/rules/template.c) on arbitrary
 * text. A template that compiles must execute without crashing or leaking, whatever the
 * labels and value; one that does not compile must say why. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/core.h"
#include "rules/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const tsdb_label_t labels[] = {{"instance", "host:9100"}, {"job", "node"}, {"pct", "0.5"}};
  static const tsdb_label_t ext[] = {{"cluster", "eu1"}};
  static const double values[] = {0, -1.5, 1e300, NAN, INFINITY, 93784.25};
  tmpl_t *t = NULL;
  char err[256] = "";
  if (tmpl_compile((const char *)data, size, &t, err, sizeof err) != 0) {
    if (!err[0]) __builtin_trap(); /* a rejection must carry a message */
    return 0;
  }
  for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
    tmpl_data_t d = {labels, 3, ext, 1, values[i]};
    sb_t out = {0};
    tmpl_execute(t, &d, &out, err, sizeof err);
    sb_free(&out);
  }
  tmpl_free(t);
  return 0;
}
