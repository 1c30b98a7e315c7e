/*
 * JSON lines import and export, the VictoriaMetrics /api/v1/import shape:
 *
 *   {"metric":{"__name__":"up","job":"x"},"values":[1,0.5],"timestamps":[1700000000000,...]}
 *
 * One series per line; values are JSON numbers, or the strings "NaN", "+Inf", "-Inf" (and
 * numeric strings) since JSON has no non-finite numbers; timestamps are integer Unix ms.
 * The exporter writes exactly this shape (non-finite values as those strings), so export →
 * import round-trips. Staleness markers are not exported (they are not data).
 *
 * Import uses jansson per line; each bad line is reported by number and skipped.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

static int line_to_batch(ictx_t *c, ilabel_t *L, const char *s, size_t n, char *err, size_t errlen) {
  json_error_t je;
  json_t *root = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
  int rc = MD_EINVAL;
  if (!root) return md_error(err, errlen, MD_EINVAL, "invalid JSON at column %d: %s", je.column, je.text);
  json_t *metric = json_object_get(root, "metric");
  json_t *values = json_object_get(root, "values");
  json_t *tss = json_object_get(root, "timestamps");
  if (!json_is_object(root)) {
    md_error(err, errlen, MD_EINVAL, "a line must be a JSON object");
    goto out;
  }
  if (!json_is_object(metric)) {
    md_error(err, errlen, MD_EINVAL, "\"metric\" must be an object of label names to strings");
    goto out;
  }
  if (!json_is_array(values) || !json_is_array(tss)) {
    md_error(err, errlen, MD_EINVAL, "\"values\" and \"timestamps\" must be arrays");
    goto out;
  }
  if (json_array_size(values) != json_array_size(tss)) {
    md_error(err, errlen, MD_EINVAL, "\"values\" has %zu items but \"timestamps\" has %zu", json_array_size(values),
             json_array_size(tss));
    goto out;
  }
  size_t nl = 1;
  bool have_name = false;
  const char *k;
  json_t *v;
  json_object_foreach(metric, k, v) {
    if (!json_is_string(v)) {
      md_error(err, errlen, MD_EINVAL, "label \"%.64s\" must be a string", k);
      goto out;
    }
    if (strcmp(k, "__name__") == 0) {
      L[0] = (ilabel_t){"__name__", 8, json_string_value(v), json_string_length(v)};
      have_name = true;
    } else {
      if (nl > INGEST_HARD_MAX_LABELS) {
        md_error(err, errlen, MD_EINVAL, "more than %d labels", INGEST_HARD_MAX_LABELS);
        goto out;
      }
      L[nl++] = (ilabel_t){k, strlen(k), json_string_value(v), json_string_length(v)};
    }
  }
  if (!have_name) {
    md_error(err, errlen, MD_EINVAL, "\"metric\" has no \"__name__\"");
    goto out;
  }
  /* Check every sample before adding the series, so a bad one rejects the whole line. */
  size_t ns = json_array_size(values);
  for (size_t i = 0; i < ns; i++) {
    json_t *x = json_array_get(values, i), *t = json_array_get(tss, i);
    double d;
    if (!json_is_integer(t)) {
      md_error(err, errlen, MD_EINVAL, "timestamps[%zu] is not an integer (Unix milliseconds)", i);
      goto out;
    }
    if (json_is_number(x)) continue;
    if (!json_is_string(x) || ingest_parse_double(json_string_value(x), json_string_length(x), &d)) {
      md_error(err, errlen, MD_EINVAL, "values[%zu] is not a number", i);
      goto out;
    }
  }
  if ((rc = ictx_series(c, L, nl, err, errlen))) goto out;
  for (size_t i = 0; i < ns; i++) {
    json_t *x = json_array_get(values, i);
    double d = 0;
    if (json_is_number(x))
      d = json_number_value(x);
    else
      ingest_parse_double(json_string_value(x), json_string_length(x), &d);
    if ((rc = ictx_sample(c, (int64_t)json_integer_value(json_array_get(tss, i)), d))) goto out;
  }
  rc = 0;
out:
  json_decref(root);
  return rc;
}

int ingest_parse_jsonl(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  ictx_t c;
  ictx_init(&c, o, b, res);
  ilabel_t *L = malloc(sizeof(ilabel_t) * (INGEST_HARD_MAX_LABELS + 1));
  if (!L) return MD_ENOMEM;
  size_t pos = 0, lineno = 0;
  char err[200];
  while (pos < n && !c.limit_hit && !c.oom) {
    const char *nl = memchr(p + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - p) : n;
    const char *s = p + pos;
    size_t len = end - pos;
    pos = end + 1;
    lineno++;
    while (len && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    while (len && (s[0] == ' ' || s[0] == '\t')) {
      s++;
      len--;
    }
    if (len == 0) continue;
    c.res->lines++;
    int rc = line_to_batch(&c, L, s, len, err, sizeof err);
    if (rc == MD_EINVAL) ictx_error(&c, lineno, "%s", err);
  }
  free(L);
  return ictx_status(&c);
}

/* ---- export ---------------------------------------------------------------------------- */

static void put_value(sb_t *out, double v) {
  if (isnan(v)) {
    sb_puts(out, "\"NaN\"");
  } else if (isinf(v)) {
    sb_puts(out, v > 0 ? "\"+Inf\"" : "\"-Inf\"");
  } else {
    ingest_format_double(out, v);
  }
}

void ingest_export_jsonl_series(const tsdb_label_t *l, size_t nl, const int64_t *ts, const double *v, size_t ns,
                                sb_t *out) {
  sb_puts(out, "{\"metric\":{");
  /* __name__ first, then the rest in their (sorted) order, as VictoriaMetrics writes. */
  bool first = true;
  for (size_t i = 0; i < nl; i++) {
    if (strcmp(l[i].name, "__name__") != 0) continue;
    sb_puts(out, "\"__name__\":");
    sb_json_str(out, l[i].value, strlen(l[i].value));
    first = false;
  }
  for (size_t i = 0; i < nl; i++) {
    if (strcmp(l[i].name, "__name__") == 0) continue;
    if (!first) sb_putc(out, ',');
    first = false;
    sb_json_str(out, l[i].name, strlen(l[i].name));
    sb_putc(out, ':');
    sb_json_str(out, l[i].value, strlen(l[i].value));
  }
  sb_puts(out, "},\"values\":[");
  first = true;
  for (size_t i = 0; i < ns; i++) {
    if (tsdb_is_stale_nan(v[i])) continue;
    if (!first) sb_putc(out, ',');
    first = false;
    put_value(out, v[i]);
  }
  sb_puts(out, "],\"timestamps\":[");
  first = true;
  for (size_t i = 0; i < ns; i++) {
    if (tsdb_is_stale_nan(v[i])) continue;
    if (!first) sb_putc(out, ',');
    first = false;
    sb_printf(out, "%lld", (long long)ts[i]);
  }
  sb_puts(out, "]}\n");
}
