/* libFuzzer target: PromQL parser and printers. Any input must parse or fail cleanly; a
 * parsed expression must print, and its canonical form must parse again to the same form
 * (the printer is used to build @-rewritten queries and rule files). Scalar-only
 * expressions are also evaluated (no storage needed), exercising the evaluator's scalar
 * paths and the JSON writer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "promql/promql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  promql_expr_t *e = NULL;
  char err[512];
  if (promql_parse((const char *)data, size, &e, NULL, err, sizeof err) < 0) return 0;
  sb_t a = {0}, b = {0}, p = {0};
  promql_expr_string(e, &a);
  promql_format(e, &p);
  promql_expr_t *e2 = NULL;
  if (a.buf && promql_parse(a.buf, a.len, &e2, NULL, err, sizeof err) == 0) {
    promql_expr_string(e2, &b);
    if (strcmp(a.buf, b.buf) != 0) abort();
    promql_expr_free(e2);
  } else {
    abort(); /* the canonical form of a valid expression must parse */
  }
  const char *t = promql_expr_type_name(e);
  if (!strcmp(t, "scalar") || !strcmp(t, "string")) {
    promql_result_t *r = NULL;
    promql_options_t o;
    promql_options_default(&o);
    o.timeout_ms = 1000;
    if (promql_eval_instant(NULL, "", e, 1000, &o, &r, err, sizeof err) == 0) {
      sb_t j = {0};
      promql_result_json(r, &j);
      sb_free(&j);
      promql_result_free(r);
    }
  }
  sb_free(&a), sb_free(&b), sb_free(&p);
  promql_expr_free(e);
  return 0;
}
