/*
 * template — the Go text/template subset that Prometheus rule labels and annotations use
 * (private to src/rules). Compiled once when a rule loads, so unsupported syntax is a
 * load-time error; executed per alert with the alert's labels, value and external labels.
 *
 * Supported: text, {{ expr }}, {{- and -}} trimming, comments (slash-star ... star-slash inside braces),
 * pipelines
 * (`$value | humanize`), function calls, `if`/`else if`/`else`/`end`, `range $labels`
 * is not supported. Data: $labels.x / .Labels.x, $value / .Value, $externalLabels.x /
 * .ExternalLabels.x, string/number/bool literals. Functions: humanize, humanize1024,
 * humanizePercentage, humanizeDuration, humanizeTimestamp, printf, toUpper, toLower,
 * title, eq, ne, lt, le, gt, ge, and, or, not, len, match.
 *
 * Threading: a compiled template is immutable and may be executed from any thread.
 */
#ifndef METRICSD_RULES_TEMPLATE_H
#define METRICSD_RULES_TEMPLATE_H

#include <stddef.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

typedef struct tmpl tmpl_t;

typedef struct tmpl_data {
  const tsdb_label_t *labels;
  size_t nlabels;
  const tsdb_label_t *external;
  size_t nexternal;
  double value;
} tmpl_data_t;

/* Compiles text; MD_EINVAL with a message naming the offending construct. */
int tmpl_compile(const char *text, size_t n, tmpl_t **out, char *err, size_t errlen);
/* Appends the expansion to out. A runtime error (e.g. printf with a bad argument) returns
 * MD_EINVAL with a message; out then holds the partial expansion. */
int tmpl_execute(const tmpl_t *t, const tmpl_data_t *data, sb_t *out, char *err, size_t errlen);
void tmpl_free(tmpl_t *t);
/* True when the text has no {{ (then expansion is the text itself). */
int tmpl_is_static(const tmpl_t *t);

#endif
