/*
 * Prometheus text exposition 0.0.4 and OpenMetrics 1.0 → batch.
 *
 * One pass over the buffer, one line at a time; each sample line becomes a series with one
 * sample (the engine merges identical label sets). Label values without a backslash point
 * straight into the input; escaped ones are unescaped into a per-line scratch buffer that is
 * reserved to the line's length up front, so pointers into it stay valid for the line.
 *
 * Differences between the two formats handled here (OpenMetrics spec, "Text format"):
 *   - timestamps: 0.0.4 integer milliseconds; OpenMetrics float seconds;
 *   - OpenMetrics ends with "# EOF" (nothing may follow), has "# UNIT", "\"" escapes in HELP,
 *     and exemplars after " # " on a sample line (skipped and counted).
 * Bad lines are reported with their 1-based number and skipped; parsing goes on.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

#define IS_WS(c) ((c) == ' ' || (c) == '\t')

typedef struct {
  ictx_t c;
  sb_t scratch;
  ilabel_t lbl[INGEST_HARD_MAX_LABELS + 1];
  bool seen_eof;
} prom_t;

static size_t skip_ws(const char *s, size_t i, size_t n) {
  while (i < n && IS_WS(s[i]))
    i++;
  return i;
}

/* Bytes that may appear in a metric or label name (the syntax is checked later, once, by
 * the series builder); a table lookup beats the range tests on long label sets. */
static unsigned char name_chars[256];
static pthread_once_t name_chars_once = PTHREAD_ONCE_INIT;
static void init_name_chars(void) {
  for (int c = 0; c < 256; c++)
    name_chars[c] =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
}
#define is_name_char(ch) (name_chars[(unsigned char)(ch)])

static const char *const om_types[] = {"counter", "gauge",          "histogram", "summary", "untyped",
                                       "unknown", "gaugehistogram", "stateset",  "info",    NULL};

/* "# HELP", "# TYPE", "# UNIT", "# EOF" or a comment. Returns 0 or MD_EINVAL with err. */
static int parse_comment(prom_t *P, const char *s, size_t n, char *err, size_t errlen) {
  bool om = P->c.o && P->c.o->openmetrics;
  size_t i = skip_ws(s, 1, n);
  size_t ks = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  size_t klen = i - ks;
  const char *kw = s + ks;
  if (klen == 3 && memcmp(kw, "EOF", 3) == 0 && skip_ws(s, i, n) == n) {
    P->seen_eof = true;
    return 0;
  }
  bool help = klen == 4 && memcmp(kw, "HELP", 4) == 0;
  bool type = klen == 4 && memcmp(kw, "TYPE", 4) == 0;
  bool unit = klen == 4 && memcmp(kw, "UNIT", 4) == 0 && om;
  if (!help && !type && !unit) return 0; /* a plain comment */
  i = skip_ws(s, i, n);
  size_t ns = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  if (!ingest_valid_metric_name(s + ns, i - ns))
    return md_error(err, errlen, MD_EINVAL, "%.*s: invalid metric name \"%.*s\"", (int)klen, kw,
                    (int)(i - ns > 64 ? 64 : i - ns), s + ns);
  size_t rs = skip_ws(s, i, n);
  if (rs < n && rs == i) return md_error(err, errlen, MD_EINVAL, "%.*s: expected a space", (int)klen, kw);
  const char *rest = s + rs;
  size_t rlen = n - rs;
  while (rlen && IS_WS(rest[rlen - 1]))
    rlen--;
  if (type) {
    if (rlen == 0)
      return md_error(err, errlen, MD_EINVAL, "TYPE: missing type for %.*s", (int)(i - ns), s + ns);
    for (int k = 0; om_types[k]; k++) {
      if (!om && k >= 5) break; /* 0.0.4 knows the first five */
      if (strlen(om_types[k]) == rlen && memcmp(om_types[k], rest, rlen) == 0) {
        P->c.res->metadata++;
        return 0;
      }
    }
    return md_error(err, errlen, MD_EINVAL, "TYPE: unknown type \"%.*s\"", (int)(rlen > 32 ? 32 : rlen),
                    rest);
  }
  if (unit && rlen == 0)
    return md_error(err, errlen, MD_EINVAL, "UNIT: missing unit for %.*s", (int)(i - ns), s + ns);
  if (help) {
    for (size_t k = 0; k < rlen; k++) {
      if (rest[k] != '\\') continue;
      if (k + 1 == rlen) return md_error(err, errlen, MD_EINVAL, "HELP: backslash at end of line");
      char e = rest[k + 1];
      if (e != '\\' && e != 'n' && !(om && e == '"'))
        return md_error(err, errlen, MD_EINVAL, "HELP: invalid escape \"\\%c\"", e);
      k++;
    }
    if (!ingest_valid_utf8(rest, rlen))
      return md_error(err, errlen, MD_EINVAL, "HELP: text is not valid UTF-8");
  }
  P->c.res->metadata++;
  return 0;
}

/* Parses a quoted label value starting after the opening quote at s[*pi]. */
static int parse_label_value(prom_t *P, const char *s, size_t n, size_t *pi, const char **val, size_t *vlen,
                             char *err, size_t errlen) {
  size_t i = *pi, start = i;
  while (i < n && s[i] != '"' && s[i] != '\\')
    i++;
  if (i < n && s[i] == '"') {
    *val = s + start;
    *vlen = i - start;
    *pi = i + 1;
    return 0;
  }
  /* Escapes: unescape into scratch (reserved to the line length, so no realloc). */
  char *out = P->scratch.buf + P->scratch.len;
  size_t o = i - start;
  memcpy(out, s + start, o);
  while (i < n && s[i] != '"') {
    if (s[i] == '\\') {
      if (i + 1 >= n) break;
      char e = s[i + 1];
      if (e == 'n')
        out[o++] = '\n';
      else if (e == '\\' || e == '"')
        out[o++] = e;
      else
        return md_error(err, errlen, MD_EINVAL, "invalid escape \"\\%c\" in label value", e);
      i += 2;
    } else {
      out[o++] = s[i++];
    }
  }
  if (i >= n || s[i] != '"') return md_error(err, errlen, MD_EINVAL, "unterminated label value");
  P->scratch.len += o;
  *val = out;
  *vlen = o;
  *pi = i + 1;
  return 0;
}

/* Checks an OpenMetrics exemplar, s[0..n) being what follows the " # " of a sample line:
 * "{labels} value [timestamp]". Exemplars are not stored, but a malformed one means the line
 * is not OpenMetrics, so the line is refused rather than half-understood. The spec caps the
 * label set at 128 UTF-8 characters (names and values together). */
static int check_exemplar(const char *s, size_t n, char *err, size_t errlen) {
  size_t i = skip_ws(s, 0, n), chars = 0;
  if (i >= n || s[i] != '{') return md_error(err, errlen, MD_EINVAL, "exemplar: expected '{' after \" # \"");
  i++;
  for (bool first = true;; first = false) {
    i = skip_ws(s, i, n);
    if (i >= n) return md_error(err, errlen, MD_EINVAL, "exemplar: unterminated label set");
    if (s[i] == '}' && first) break;
    size_t ls = i;
    while (i < n && is_name_char((unsigned char)s[i]))
      i++;
    if (!ingest_valid_label_name(s + ls, i - ls))
      return md_error(err, errlen, MD_EINVAL, "exemplar: invalid label name \"%.*s\"",
                      (int)(i - ls > 64 ? 64 : i - ls), s + ls);
    chars += i - ls;
    if (i + 1 >= n || s[i] != '=' || s[i + 1] != '"')
      return md_error(err, errlen, MD_EINVAL, "exemplar: expected =\"value\" after label \"%.*s\"",
                      (int)(i - ls > 64 ? 64 : i - ls), s + ls);
    i += 2;
    size_t vs = i;
    while (i < n && s[i] != '"') {
      if (s[i] == '\\') {
        if (i + 1 >= n || (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n'))
          return md_error(err, errlen, MD_EINVAL, "exemplar: invalid escape in label value");
        i++;
      }
      i++;
    }
    if (i >= n) return md_error(err, errlen, MD_EINVAL, "exemplar: unterminated label value");
    if (!ingest_valid_utf8(s + vs, i - vs))
      return md_error(err, errlen, MD_EINVAL, "exemplar: label value is not valid UTF-8");
    for (size_t k = vs; k < i; k++)
      chars += ((unsigned char)s[k] & 0xC0) != 0x80;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == ',') {
      i++;
      continue;
    }
    if (i < n && s[i] == '}') break;
    return md_error(err, errlen, MD_EINVAL, "exemplar: expected ',' or '}'");
  }
  if (chars > 128)
    return md_error(err, errlen, MD_EINVAL, "exemplar: label set longer than 128 characters");
  i++;
  size_t vs = i = skip_ws(s, i, n);
  while (i < n && !IS_WS(s[i]))
    i++;
  double v;
  if (i == vs || ingest_parse_double(s + vs, i - vs, &v))
    return md_error(err, errlen, MD_EINVAL, "exemplar: invalid value \"%.*s\"", (int)(i - vs > 32 ? 32 : i - vs),
                    s + vs);
  size_t ts = i = skip_ws(s, i, n);
  while (i < n && !IS_WS(s[i]))
    i++;
  if (i > ts && (ingest_parse_double(s + ts, i - ts, &v) || !isfinite(v)))
    return md_error(err, errlen, MD_EINVAL, "exemplar: invalid timestamp \"%.*s\"",
                    (int)(i - ts > 32 ? 32 : i - ts), s + ts);
  if (skip_ws(s, i, n) < n) return md_error(err, errlen, MD_EINVAL, "exemplar: unexpected text after it");
  return 0;
}

static int parse_sample(prom_t *P, const char *s, size_t n, size_t lineno, char *err, size_t errlen) {
  bool om = P->c.o && P->c.o->openmetrics;
  size_t i = 0;
  while (i < n && is_name_char((unsigned char)s[i]))
    i++;
  if (i == 0) {
    if (s[0] == '{') return md_error(err, errlen, MD_EINVAL, "missing metric name before '{'");
    return md_error(err, errlen, MD_EINVAL, "expected a metric name, found '%c'",
                    (unsigned char)s[0] >= 0x20 && (unsigned char)s[0] < 0x7f ? s[0] : '?');
  }
  ilabel_t *L = P->lbl;
  size_t nl = 0;
  L[nl++] = (ilabel_t){"__name__", 8, s, i};
  if (i < n && s[i] == '{') {
    i++;
    for (;;) {
      i = skip_ws(s, i, n);
      if (i >= n) return md_error(err, errlen, MD_EINVAL, "unterminated label set");
      if (s[i] == '}') {
        i++;
        break;
      }
      size_t ls = i;
      while (i < n && is_name_char((unsigned char)s[i]))
        i++;
      if (i == ls) return md_error(err, errlen, MD_EINVAL, "expected a label name at column %zu", i + 1);
      size_t le = i;
      i = skip_ws(s, i, n);
      if (i >= n || s[i] != '=')
        return md_error(err, errlen, MD_EINVAL, "expected '=' after label name \"%.*s\"",
                        (int)(le - ls > 64 ? 64 : le - ls), s + ls);
      i = skip_ws(s, i + 1, n);
      if (i >= n || s[i] != '"')
        return md_error(err, errlen, MD_EINVAL, "expected '\"' to open the value of label \"%.*s\"",
                        (int)(le - ls > 64 ? 64 : le - ls), s + ls);
      i++;
      const char *v = NULL;
      size_t vl = 0;
      int rc = parse_label_value(P, s, n, &i, &v, &vl, err, errlen);
      if (rc) return rc;
      if (nl > INGEST_HARD_MAX_LABELS)
        return md_error(err, errlen, MD_EINVAL, "more than %d labels", INGEST_HARD_MAX_LABELS);
      L[nl++] = (ilabel_t){s + ls, le - ls, v, vl};
      i = skip_ws(s, i, n);
      if (i < n && s[i] == ',') {
        i++;
        continue;
      }
      if (i < n && s[i] == '}') {
        i++;
        break;
      }
      return md_error(err, errlen, MD_EINVAL, "expected ',' or '}' after the value of label \"%.*s\"",
                      (int)(le - ls > 64 ? 64 : le - ls), s + ls);
    }
  }
  if (i < n && !IS_WS(s[i]))
    return md_error(err, errlen, MD_EINVAL, "unexpected '%c' after metric name",
                    (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?');
  i = skip_ws(s, i, n);
  size_t vs = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  if (i == vs) return md_error(err, errlen, MD_EINVAL, "missing value");
  double v;
  if (ingest_parse_double(s + vs, i - vs, &v))
    return md_error(err, errlen, MD_EINVAL, "invalid value \"%.*s\"", (int)(i - vs > 64 ? 64 : i - vs),
                    s + vs);
  int64_t ts = P->c.o ? P->c.o->default_ts : 0;
  i = skip_ws(s, i, n);
  if (i < n && s[i] != '#') {
    size_t ts0 = i;
    while (i < n && !IS_WS(s[i]))
      i++;
    if (om) {
      double sec;
      if (ingest_parse_double(s + ts0, i - ts0, &sec) || !isfinite(sec) || fabs(sec) > 9.2e15)
        return md_error(err, errlen, MD_EINVAL, "invalid timestamp \"%.*s\"",
                        (int)(i - ts0 > 64 ? 64 : i - ts0), s + ts0);
      ts = (int64_t)llround(sec * 1000.0);
    } else if (ingest_parse_int64(s + ts0, i - ts0, &ts)) {
      return md_error(err, errlen, MD_EINVAL, "invalid timestamp \"%.*s\" (integer milliseconds expected)",
                      (int)(i - ts0 > 64 ? 64 : i - ts0), s + ts0);
    }
    i = skip_ws(s, i, n);
  }
  if (i < n) {
    if (om && s[i] == '#') {
      int rc = check_exemplar(s + i + 1, n - i - 1, err, errlen);
      if (rc) return rc;
      P->c.res->skipped++; /* an exemplar */
    } else {
      return md_error(err, errlen, MD_EINVAL, "unexpected text after the sample: \"%.*s\"",
                      (int)(n - i > 32 ? 32 : n - i), s + i);
    }
  }
  (void)lineno;
  int rc = ictx_series(&P->c, L, nl, err, errlen);
  if (rc) return rc;
  return ictx_sample(&P->c, ts, v);
}

bool ingest_text_is_openmetrics(const char *p, size_t n) {
  while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || IS_WS(p[n - 1])))
    n--;
  return n >= 5 && memcmp(p + n - 5, "# EOF", 5) == 0 && (n == 5 || p[n - 6] == '\n');
}

int ingest_parse_prometheus(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                            ingest_result_t *res) {
  pthread_once(&name_chars_once, init_name_chars);
  prom_t *P = malloc(sizeof *P);
  if (!P) return MD_ENOMEM;
  ictx_init(&P->c, o, b, res);
  sb_init(&P->scratch);
  P->seen_eof = false;
  size_t pos = 0, lineno = 0;
  char err[200];
  while (pos < n && !P->c.limit_hit && !P->c.oom) {
    const char *nl = memchr(p + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - p) : n;
    const char *s = p + pos;
    size_t len = end - pos;
    pos = end + 1;
    lineno++;
    if (len && s[len - 1] == '\r') len--;
    size_t i = skip_ws(s, 0, len);
    s += i;
    len -= i;
    if (len == 0) continue;
    if (P->seen_eof) {
      ictx_error(&P->c, lineno, "content after \"# EOF\"");
      break;
    }
    int rc;
    if (s[0] == '#') {
      rc = parse_comment(P, s, len, err, sizeof err);
    } else {
      P->c.res->lines++;
      P->scratch.len = 0;
      if (!sb_reserve(&P->scratch, len)) {
        P->c.oom = true;
        break;
      }
      rc = parse_sample(P, s, len, lineno, err, sizeof err);
    }
    if (rc == MD_EINVAL) ictx_error(&P->c, lineno, "%s", err);
  }
  int status = ictx_status(&P->c);
  sb_free(&P->scratch);
  free(P);
  return status;
}
