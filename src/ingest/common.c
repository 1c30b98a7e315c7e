/*
 * Shared pieces of every ingest parser: limits, name/UTF-8 validation, number parsing, the
 * series builder (ictx_*) and error reporting. Validation lives here, once, so every
 * protocol enforces the same rules (docs/api-ingest.md, "Validation").
 *
 * Threading: pure functions; an ictx_t belongs to one parse.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

void ingest_limits_default(ingest_limits_t *l) {
  l->max_label_name_len = 256;
  l->max_label_value_len = 4096;
  l->max_labels_per_series = 64;
  l->max_samples_per_request = 10000000;
}

int ingest_precision_parse(const char *s, size_t n, ingest_precision_t *out) {
  static const struct {
    const char *name;
    ingest_precision_t p;
  } tab[] = {{"ns", INGEST_PREC_NS}, {"n", INGEST_PREC_NS},         {"u", INGEST_PREC_US},
             {"us", INGEST_PREC_US}, {"\xc2\xb5s", INGEST_PREC_US}, {"ms", INGEST_PREC_MS},
             {"s", INGEST_PREC_S},   {"m", INGEST_PREC_M},          {"h", INGEST_PREC_H}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
    if (strlen(tab[i].name) == n && memcmp(tab[i].name, s, n) == 0) {
      *out = tab[i].p;
      return 0;
    }
  }
  return MD_EINVAL;
}

void ingest_result_message(const ingest_result_t *r, const char *what, sb_t *out) {
  if (!what) what = "line";
  for (size_t i = 0; i < r->nerrors && i < INGEST_MAX_REPORTED_ERRORS; i++) {
    if (i) sb_puts(out, "; ");
    if (r->errors[i].where == SIZE_MAX)
      sb_printf(out, "%s", r->errors[i].message);
    else
      sb_printf(out, "%s %zu: %s", what, r->errors[i].where, r->errors[i].message);
  }
  if (r->rejected > r->nerrors) sb_printf(out, " (%zu rejected in all)", r->rejected);
}

/* ---- validation ------------------------------------------------------------------------- */

/* 1: allowed anywhere in a metric name, 2: in a label name too, 4: allowed as first char. */
/* clang-format off */
static const unsigned char name_class[256] = {
    [':'] = 1 | 4,
    ['_'] = 1 | 2 | 4,
#define D(c) [c] = 1 | 2
    D('0'), D('1'), D('2'), D('3'), D('4'), D('5'), D('6'), D('7'), D('8'), D('9'),
#undef D
#define A(c) [c] = 1 | 2 | 4
    A('a'), A('b'), A('c'), A('d'), A('e'), A('f'), A('g'), A('h'), A('i'), A('j'), A('k'), A('l'), A('m'),
    A('n'), A('o'), A('p'), A('q'), A('r'), A('s'), A('t'), A('u'), A('v'), A('w'), A('x'), A('y'), A('z'),
    A('A'), A('B'), A('C'), A('D'), A('E'), A('F'), A('G'), A('H'), A('I'), A('J'), A('K'), A('L'), A('M'),
    A('N'), A('O'), A('P'), A('Q'), A('R'), A('S'), A('T'), A('U'), A('V'), A('W'), A('X'), A('Y'), A('Z'),
#undef A
};
/* clang-format on */

bool ingest_valid_metric_name(const char *s, size_t n) {
  if (n == 0) return false;
  const unsigned char *u = (const unsigned char *)s;
  if (!(name_class[u[0]] & 4)) return false;
  for (size_t i = 1; i < n; i++)
    if (!(name_class[u[i]] & 1)) return false;
  return true;
}

bool ingest_valid_label_name(const char *s, size_t n) {
  if (n == 0) return false;
  const unsigned char *u = (const unsigned char *)s;
  if (!(name_class[u[0]] & 4) || u[0] == ':') return false;
  for (size_t i = 1; i < n; i++)
    if (!(name_class[u[i]] & 2)) return false;
  return true;
}

size_t ingest_sanitize_name(const char *s, size_t n, bool metric, char *out) {
  size_t o = 0;
  const unsigned char *u = (const unsigned char *)s;
  unsigned char mask = metric ? 1 : 2;
  /* Only a digit needs a prefix; any other bad first byte becomes '_' below. */
  if (n > 0 && (name_class[u[0]] & mask) && !(name_class[u[0]] & 4)) out[o++] = '_';
  for (size_t i = 0; i < n; i++)
    out[o++] = (name_class[u[i]] & mask) ? (char)u[i] : '_';
  out[o] = 0;
  return o;
}

/* UTF-8 check; with no_nul, a NUL byte fails too (one pass for label values). */
static bool utf8_check(const char *s, size_t n, bool no_nul) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* ASCII fast path, 8 bytes at a time: label values are nearly always ASCII. */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, u + i, 8);
      if (w & 0x8080808080808080ULL) break;
      if (no_nul && ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL)) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = u[i];
    if (c < 0x80) {
      if (no_nul && c == 0) return false;
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      if ((u[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (u[i + k] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

bool ingest_valid_utf8(const char *s, size_t n) {
  return utf8_check(s, n, false);
}

/* ---- numbers --------------------------------------------------------------------------- */

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static bool word_eq(const char *s, size_t n, const char *w) {
  size_t wl = strlen(w);
  if (n != wl) return false;
  for (size_t i = 0; i < n; i++)
    if ((s[i] | 0x20) != w[i]) return false;
  return true;
}

int ingest_parse_double(const char *s, size_t n, double *out) {
  if (n == 0) return MD_EINVAL;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == n) return MD_EINVAL;
  if (!(s[i] >= '0' && s[i] <= '9') && s[i] != '.') {
    if (word_eq(s + i, n - i, "inf") || word_eq(s + i, n - i, "infinity")) {
      *out = neg ? -INFINITY : INFINITY;
      return 0;
    }
    if (i == 0 && word_eq(s, n, "nan")) {
      *out = NAN;
      return 0;
    }
    return MD_EINVAL;
  }
  uint64_t m = 0;
  int digits = 0, exp10 = 0;
  bool any = false, exact = true;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    any = true;
    if (digits < 19) {
      m = m * 10 + (uint64_t)(s[i] - '0');
      if (m) digits++;
    } else {
      exact = false;
    }
  }
  if (i < n && s[i] == '.') {
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
      any = true;
      if (digits < 19) {
        m = m * 10 + (uint64_t)(s[i] - '0');
        if (m) digits++;
        exp10--;
      } else {
        exact = false;
      }
    }
  }
  if (!any) return MD_EINVAL;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    bool eneg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
    if (i == n || s[i] < '0' || s[i] > '9') return MD_EINVAL;
    int e = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
      if (e < 100000) e = e * 10 + (s[i] - '0');
    exp10 += eneg ? -e : e;
  }
  if (i != n) return MD_EINVAL;
  /* Clinger's fast path: a mantissa below 2^53 times an exactly representable power of ten
   * is correctly rounded by one IEEE operation. */
  if (exact && digits <= 15 && exp10 >= -22 && exp10 <= 22) {
    double d = (double)m;
    d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
    *out = neg ? -d : d;
    return 0;
  }
  if (m == 0 && exact) {
    *out = neg ? -0.0 : 0.0;
    return 0;
  }
  char buf[512];
  if (n >= sizeof buf) return MD_EINVAL;
  memcpy(buf, s, n);
  buf[n] = 0;
  errno = 0;
  char *end;
  double d = strtod(buf, &end);
  if (end != buf + n) return MD_EINVAL;
  if (errno == ERANGE && isinf(d)) return MD_EINVAL; /* out of range, as Go's ParseFloat */
  *out = d;
  return 0;
}

int ingest_parse_int64(const char *s, size_t n, int64_t *out) {
  size_t i = 0;
  bool neg = false;
  if (n && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == n) return -1;
  uint64_t v = 0;
  if (n - i <= 18) { /* below 10^18: no overflow to check (timestamps have 10 to 19 digits) */
    for (; i < n; i++) {
      unsigned d = (unsigned)((unsigned char)s[i] - '0');
      if (d > 9) return -1;
      v = v * 10 + d;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
  }
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1) return -1;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)v;
  }
  return 0;
}

/* ---- series builder ------------------------------------------------------------------- */

void ictx_init(ictx_t *c, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  memset(c, 0, sizeof *c);
  c->o = o;
  if (o && o->limits)
    c->lim = *o->limits;
  else
    ingest_limits_default(&c->lim);
  if (c->lim.max_labels_per_series == 0 || c->lim.max_labels_per_series > INGEST_HARD_MAX_LABELS)
    c->lim.max_labels_per_series = INGEST_HARD_MAX_LABELS;
  if (c->lim.max_label_name_len == 0) c->lim.max_label_name_len = SIZE_MAX;
  if (c->lim.max_label_value_len == 0) c->lim.max_label_value_len = SIZE_MAX;
  if (c->lim.max_samples_per_request == 0) c->lim.max_samples_per_request = SIZE_MAX;
  c->b = b;
  c->refs = o ? o->refs : NULL;
  c->res = res ? res : &c->res_local;
  memset(c->res, 0, sizeof *c->res);
}

void ictx_error(ictx_t *c, size_t where, const char *fmt, ...) {
  ingest_result_t *r = c->res;
  r->rejected++;
  if (r->nerrors < INGEST_MAX_REPORTED_ERRORS) {
    r->errors[r->nerrors].where = where;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errors[r->nerrors].message, sizeof r->errors[0].message, fmt, ap);
    va_end(ap);
    r->nerrors++;
  }
}

/* Prints at most 64 bytes of a user string into a message, escaping nothing (messages are
 * JSON-escaped where they are sent). */
#define SHOW(n) (int)((n) > 64 ? 64 : (n))

static int validate(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen) {
  const ingest_limits_t *lim = &c->lim;
  size_t nextra = c->o ? c->o->n_extra_labels : 0;
  if (n == 0 || (!c->names_valid && !ingest_valid_metric_name(l[0].value, l[0].vlen)))
    return md_error(err, errlen, MD_EINVAL, "invalid metric name \"%.*s\"", SHOW(n ? l[0].vlen : 0),
                    n ? l[0].value : "");
  if (l[0].vlen > lim->max_label_name_len)
    return md_error(err, errlen, MD_EINVAL, "metric name longer than %zu bytes", lim->max_label_name_len);
  if (n + nextra > lim->max_labels_per_series) {
    /* Extra labels may replace labels of the same name: count exactly before refusing. */
    size_t total = n;
    for (size_t e = 0; e < nextra; e++) {
      bool dup = false;
      for (size_t i = 1; i < n && !dup; i++)
        dup = l[i].nlen == strlen(c->o->extra_labels[e].name) &&
              memcmp(l[i].name, c->o->extra_labels[e].name, l[i].nlen) == 0;
      if (!dup) total++;
    }
    if (total > lim->max_labels_per_series)
      return md_error(err, errlen, MD_EINVAL, "series %.*s has %zu labels, more than the limit of %zu",
                      SHOW(l[0].vlen), l[0].value, total, lim->max_labels_per_series);
  }
  for (size_t i = 1; i < n; i++) {
    if (!c->names_valid && !ingest_valid_label_name(l[i].name, l[i].nlen))
      return md_error(err, errlen, MD_EINVAL, "invalid label name \"%.*s\"", SHOW(l[i].nlen), l[i].name);
    if (l[i].nlen > lim->max_label_name_len)
      return md_error(err, errlen, MD_EINVAL, "label name \"%.*s...\" longer than %zu bytes", SHOW(l[i].nlen),
                      l[i].name, lim->max_label_name_len);
    if (l[i].vlen > lim->max_label_value_len)
      return md_error(err, errlen, MD_EINVAL, "value of label %.*s is %zu bytes, more than the limit of %zu",
                      SHOW(l[i].nlen), l[i].name, l[i].vlen, lim->max_label_value_len);
    /* Labels are C strings in the engine: a NUL would silently truncate the value. */
    if (!utf8_check(l[i].value, l[i].vlen, true))
      return md_error(err, errlen, MD_EINVAL, "value of label %.*s %s", SHOW(l[i].nlen), l[i].name,
                      memchr(l[i].value, 0, l[i].vlen) ? "contains a NUL byte" : "is not valid UTF-8");
    if (l[i].nlen == 8 && memcmp(l[i].name, "__name__", 8) == 0)
      return md_error(err, errlen, MD_EINVAL, "duplicate label __name__");
  }
  return 0;
}

/* Byte order of two names, shorter first on a common prefix (strcmp's order for names
 * without NUL bytes, which validate guarantees). */
static int name_cmp(const char *a, size_t al, const char *b, size_t bl) {
  size_t m = al < bl ? al : bl;
  for (size_t i = 0; i < m; i++)
    if (a[i] != b[i]) return (unsigned char)a[i] < (unsigned char)b[i] ? -1 : 1;
  return al < bl ? -1 : al > bl;
}

int ictx_check(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen) {
  int rc = validate(c, l, n, err, errlen);
  if (rc) return rc;
  /* Label names in strictly ascending order cannot repeat: one compare per label instead of
   * the pairwise scan (Prometheus and most clients send labels sorted). */
  size_t i = 2;
  while (i < n && name_cmp(l[i - 1].name, l[i - 1].nlen, l[i].name, l[i].nlen) < 0)
    i++;
  if (i >= n) return 0;
  /* n is within max_labels_per_series here (64 by default): pairwise is cheapest. */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (l[i].nlen == l[j].nlen && memcmp(l[i].name, l[j].name, l[i].nlen) == 0)
        return md_error(err, errlen, MD_EINVAL, "duplicate label name \"%.*s\"", SHOW(l[i].nlen), l[i].name);
  return 0;
}

int ictx_series(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen) {
  int vrc = validate(c, l, n, err, errlen);
  if (vrc) return vrc;
  return ictx_series_checked(c, l, n, err, errlen);
}

int ictx_series_checked(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen) {
  size_t nextra = c->o ? c->o->n_extra_labels : 0;
  tsdb_batch_series_begin(c->b);
  int rc = tsdb_batch_label(c->b, "__name__", 8, l[0].value, l[0].vlen);
  for (size_t i = 1; i < n && rc == 0; i++) {
    bool replaced = false;
    for (size_t e = 0; e < nextra && !replaced; e++)
      replaced = l[i].nlen == strlen(c->o->extra_labels[e].name) &&
                 memcmp(l[i].name, c->o->extra_labels[e].name, l[i].nlen) == 0;
    if (!replaced) rc = tsdb_batch_label(c->b, l[i].name, l[i].nlen, l[i].value, l[i].vlen);
  }
  for (size_t e = 0; e < nextra && rc == 0; e++) {
    const tsdb_label_t *x = &c->o->extra_labels[e];
    rc = tsdb_batch_label(c->b, x->name, strlen(x->name), x->value, strlen(x->value));
  }
  if (rc == MD_ENOMEM) {
    c->oom = true;
    tsdb_batch_series_end(c->b); /* closes the builder; the batch is dropped by the caller */
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  rc = tsdb_batch_series_end(c->b);
  if (rc == MD_ENOMEM) {
    c->oom = true;
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  if (rc) {
    /* The batch found two labels with one name; say which. */
    for (size_t i = 1; i < n; i++)
      for (size_t j = i + 1; j < n; j++)
        if (l[i].nlen == l[j].nlen && memcmp(l[i].name, l[j].name, l[i].nlen) == 0)
          return md_error(err, errlen, MD_EINVAL, "duplicate label name \"%.*s\"", SHOW(l[i].nlen),
                          l[i].name);
    return md_error(err, errlen, MD_EINVAL, "duplicate label name");
  }
  c->res->series++;
  return 0;
}

int ictx_sample(ictx_t *c, int64_t ts, double v) {
  if (c->res->samples >= c->lim.max_samples_per_request) {
    c->limit_hit = true;
    return MD_ELIMIT;
  }
  int rc = tsdb_batch_sample(c->b, ts, v);
  if (rc == MD_ENOMEM) {
    c->oom = true;
    return rc;
  }
  if (rc == 0) c->res->samples++;
  return rc;
}

int ictx_status(const ictx_t *c) {
  if (c->oom) return MD_ENOMEM;
  if (c->limit_hit) return MD_ELIMIT;
  if (c->res->rejected) return MD_EINVAL;
  return 0;
}

/* Go's strconv.FormatFloat(v, 'g', -1, 64), which Prometheus client libraries use: the
 * shortest digits that round-trip, in exponent form when the decimal exponent is below -4
 * or 6 and up ("1e+06"), as 'g' decides for the shortest precision. */
void ingest_format_double(sb_t *sb, double v) {
  if (isnan(v) || isinf(v) || v == 0) {
    if (v == 0)
      sb_puts(sb, signbit(v) ? "-0" : "0");
    else
      sb_double(sb, v);
    return;
  }
  char buf[48];
  int p;
  for (p = 1; p <= 17; p++) {
    snprintf(buf, sizeof buf, "%.*e", p - 1, v);
    if (strtod(buf, NULL) == v) break;
  }
  if (p > 17) p = 17;
  const char *e = strchr(buf, 'e');
  int exp = e ? atoi(e + 1) : 0;
  if (exp < -4 || exp >= 6) {
    sb_puts(sb, buf);
    return;
  }
  int dec = p - 1 - exp;
  snprintf(buf, sizeof buf, "%.*f", dec < 0 ? 0 : dec, v);
  sb_puts(sb, buf);
}
