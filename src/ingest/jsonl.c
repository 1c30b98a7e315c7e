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
    md_error(err, errlen, MD_EINVAL, "\"values\" has %zu items but \"timestamps\" has %zu",
             json_array_size(values), json_array_size(tss));
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

/* ---- fast path ----------------------------------------------------------------------------
 * The common line (what exporters write: plain strings without escapes, numbers, any key
 * order) is decoded here without building a JSON tree. Anything else — escapes, nested
 * values, strings as values, syntax errors — returns FAST_FALLBACK and the line goes
 * through jansson, which also words the errors. The fast path never accepts a line jansson
 * would reject (a subset of RFC 8259 whose strings contain no control bytes). */

#define FAST_FALLBACK 1
#define FAST_MAX_SAMPLES 4096

typedef struct {
  const char *p, *end;
} cur_t;

static void ws(cur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
    c->p++;
}

static bool eat(cur_t *c, char ch) {
  ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

/* A string without escapes or control bytes; fails (fallback) otherwise. */
static bool str(cur_t *c, const char **s, size_t *n) {
  ws(c);
  if (c->p >= c->end || *c->p != '"') return false;
  const char *b = ++c->p;
  while (c->p < c->end && *c->p != '"') {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '\\' || ch < 0x20) return false;
    c->p++;
  }
  if (c->p >= c->end) return false;
  *s = b;
  *n = (size_t)(c->p - b);
  c->p++;
  return true;
}

/* A JSON number token (strict grammar: no leading '+', no leading zeros, digits after '.'). */
static bool num_token(cur_t *c, const char **s, size_t *n, bool *integer) {
  ws(c);
  const char *b = c->p, *e = c->end, *q = b;
  *integer = true;
  if (q < e && *q == '-') q++;
  if (q >= e || *q < '0' || *q > '9') return false;
  if (*q == '0') {
    q++;
  } else {
    while (q < e && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < e && *q == '.') {
    *integer = false;
    q++;
    if (q >= e || *q < '0' || *q > '9') return false;
    while (q < e && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < e && (*q == 'e' || *q == 'E')) {
    *integer = false;
    q++;
    if (q < e && (*q == '+' || *q == '-')) q++;
    if (q >= e || *q < '0' || *q > '9') return false;
    while (q < e && *q >= '0' && *q <= '9')
      q++;
  }
  *s = b;
  *n = (size_t)(q - b);
  c->p = q;
  return true;
}

static int fast_line(ictx_t *ic, ilabel_t *L, const char *s, size_t n, int64_t *ts, double *vs, char *err,
                     size_t errlen) {
  cur_t c = {s, s + n};
  size_t nl = 1, nv = 0, nt = 0;
  bool have_name = false, have_metric = false, have_values = false, have_ts = false;
  if (!eat(&c, '{')) return FAST_FALLBACK;
  for (;;) {
    const char *k;
    size_t kl;
    if (!str(&c, &k, &kl) || !eat(&c, ':')) return FAST_FALLBACK;
    if (kl == 6 && memcmp(k, "metric", 6) == 0 && !have_metric) {
      have_metric = true;
      if (!eat(&c, '{')) return FAST_FALLBACK;
      if (!eat(&c, '}')) {
        for (;;) {
          const char *lk, *lv;
          size_t lkl, lvl;
          if (!str(&c, &lk, &lkl) || !eat(&c, ':') || !str(&c, &lv, &lvl)) return FAST_FALLBACK;
          if (lkl == 8 && memcmp(lk, "__name__", 8) == 0) {
            if (have_name) return FAST_FALLBACK; /* duplicate key: jansson refuses it */
            have_name = true;
            L[0] = (ilabel_t){"__name__", 8, lv, lvl};
          } else {
            if (nl > INGEST_HARD_MAX_LABELS) return FAST_FALLBACK;
            for (size_t i = 1; i < nl; i++)
              if (L[i].nlen == lkl && memcmp(L[i].name, lk, lkl) == 0) return FAST_FALLBACK;
            L[nl++] = (ilabel_t){lk, lkl, lv, lvl};
          }
          if (eat(&c, ',')) continue;
          if (eat(&c, '}')) break;
          return FAST_FALLBACK;
        }
      }
    } else if (kl == 6 && memcmp(k, "values", 6) == 0 && !have_values) {
      have_values = true;
      if (!eat(&c, '[')) return FAST_FALLBACK;
      if (!eat(&c, ']')) {
        for (;;) {
          const char *t;
          size_t tl;
          bool integer;
          if (nv == FAST_MAX_SAMPLES || !num_token(&c, &t, &tl, &integer) ||
              ingest_parse_double(t, tl, &vs[nv]) || !isfinite(vs[nv]))
            return FAST_FALLBACK;
          nv++;
          if (eat(&c, ',')) continue;
          if (eat(&c, ']')) break;
          return FAST_FALLBACK;
        }
      }
    } else if (kl == 10 && memcmp(k, "timestamps", 10) == 0 && !have_ts) {
      have_ts = true;
      if (!eat(&c, '[')) return FAST_FALLBACK;
      if (!eat(&c, ']')) {
        for (;;) {
          const char *t;
          size_t tl;
          bool integer;
          if (nt == FAST_MAX_SAMPLES || !num_token(&c, &t, &tl, &integer) || !integer ||
              ingest_parse_int64(t, tl, &ts[nt]))
            return FAST_FALLBACK;
          nt++;
          if (eat(&c, ',')) continue;
          if (eat(&c, ']')) break;
          return FAST_FALLBACK;
        }
      }
    } else {
      return FAST_FALLBACK;
    }
    if (eat(&c, ',')) continue;
    if (eat(&c, '}')) break;
    return FAST_FALLBACK;
  }
  ws(&c);
  if (c.p != c.end || !have_metric || !have_values || !have_ts || !have_name || nv != nt)
    return FAST_FALLBACK;
  /* Labels must be UTF-8 (jansson checks that too); ictx_series checks values, names
   * are checked by the name syntax. */
  int rc = ictx_series(ic, L, nl, err, errlen);
  if (rc) return rc;
  for (size_t i = 0; i < nv; i++)
    if ((rc = ictx_sample(ic, ts[i], vs[i]))) return rc;
  return 0;
}

int ingest_parse_jsonl(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                       ingest_result_t *res) {
  ictx_t c;
  ictx_init(&c, o, b, res);
  ilabel_t *L = malloc(sizeof(ilabel_t) * (INGEST_HARD_MAX_LABELS + 1));
  int64_t *fts = malloc(sizeof(int64_t) * FAST_MAX_SAMPLES);
  double *fvs = malloc(sizeof(double) * FAST_MAX_SAMPLES);
  if (!L || !fts || !fvs) {
    free(L);
    free(fts);
    free(fvs);
    return MD_ENOMEM;
  }
  size_t pos = 0, lineno = 0;
  char err[200];
  while (pos < n && !c.limit_hit && !c.oom) {
    const char *nl = memchr(p + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - p) : n;
    const char *s = p + pos;
    size_t len = end - pos;
    pos = end + 1;
    lineno++;
    while (len && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
      len--;
    while (len && (s[0] == ' ' || s[0] == '\t')) {
      s++;
      len--;
    }
    if (len == 0) continue;
    c.res->lines++;
    int rc = fast_line(&c, L, s, len, fts, fvs, err, sizeof err);
    if (rc == FAST_FALLBACK) rc = line_to_batch(&c, L, s, len, err, sizeof err);
    if (rc == MD_EINVAL) ictx_error(&c, lineno, "%s", err);
  }
  free(L);
  free(fts);
  free(fvs);
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

void ingest_export_jsonl_series(const tsdb_label_t *l, size_t nl, const int64_t *ts, const double *v,
                                size_t ns, sb_t *out) {
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
