/*
 * InfluxDB line protocol → batch.
 *
 *   measurement[,tag=value...] field=value[,field=value...] [timestamp]
 *
 * Mapping (docs/api-ingest.md): each numeric field becomes one series named
 * "<measurement>_<field>" ("<measurement>" alone for the field "value", as Telegraf's
 * Prometheus output and VictoriaMetrics do), tags become labels, the db/bucket parameter
 * becomes label "db" unless a tag of that name exists. Names are sanitised to Prometheus
 * syntax (every other byte → '_', a leading digit gets a '_' prefix). Integer (i), unsigned
 * (u), float and boolean (→ 0/1) fields are stored; string fields are skipped and counted.
 *
 * Escapes follow the InfluxDB reference: measurement escapes ',' and ' '; tag keys, tag values
 * and field keys escape ',', '=' and ' '; string field values escape '"' and '\' and may span
 * lines, so lines are not pre-split: the cursor walks the buffer and a newline ends a line
 * only outside a string. Unescaped tokens point into the input; escaped ones are copied into a
 * per-line arena.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

#define MAX_FIELDS 1024

typedef struct {
  const char *key;
  size_t klen;
  double v;
} field_t;

typedef struct {
  ictx_t c;
  arena_t *scratch;
  ilabel_t lbl[INGEST_HARD_MAX_LABELS + 2];
  field_t fields[MAX_FIELDS];
} influx_t;

enum { K_MEAS = 1, K_TAG = 2, K_ESC = 4 };
static unsigned char stop_class[256];
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;
static void init_classes(void) {
  stop_class[','] = K_MEAS | K_TAG;
  stop_class[' '] = K_MEAS | K_TAG;
  stop_class['\n'] = K_MEAS | K_TAG;
  stop_class['='] = K_TAG;
  stop_class['\\'] = K_ESC;
}

/* Scans a token up to an unescaped stop byte of class k. Escapes of stop bytes (except
 * newline) are removed, copying into the arena only when needed. */
static int scan_token(influx_t *X, const char *p, size_t n, size_t *pi, unsigned k, const char **tok,
                      size_t *tlen) {
  size_t i = *pi, start = i;
  /* One table lookup per byte finds the end of the token or the first backslash. */
  while (i < n && !(stop_class[(unsigned char)p[i]] & (k | K_ESC)))
    i++;
  if (i >= n || p[i] != '\\') {
    *tok = p + start;
    *tlen = i - start;
    *pi = i;
    return 0;
  }
  size_t end = i;
  while (end < n && !(stop_class[(unsigned char)p[end]] & k))
    end += p[end] == '\\' && end + 1 < n && p[end + 1] != '\n' ? 2 : 1;
  char *out = arena_alloc(X->scratch, end - start + 1);
  if (!out) return MD_ENOMEM;
  size_t o = 0;
  for (size_t j = start; j < end; j++) {
    if (p[j] == '\\' && j + 1 < end && p[j + 1] != '\n' && (stop_class[(unsigned char)p[j + 1]] & k)) {
      out[o++] = p[++j];
    } else {
      out[o++] = p[j];
    }
  }
  *tok = out;
  *tlen = o;
  *pi = end;
  return 0;
}

/* Returns the name, sanitised into the arena if it is not valid already; NULL on OOM. */
static const char *clean_name(influx_t *X, const char *s, size_t n, bool metric, size_t *outlen) {
  if (metric ? ingest_valid_metric_name(s, n) : ingest_valid_label_name(s, n)) {
    *outlen = n;
    return s;
  }
  char *o = arena_alloc(X->scratch, n + 2);
  if (!o) return NULL;
  *outlen = ingest_sanitize_name(s, n, metric, o);
  return o;
}

static bool word_in(const char *s, size_t n, const char *const *words) {
  for (; *words; words++)
    if (strlen(*words) == n && memcmp(*words, s, n) == 0) return true;
  return false;
}

static int parse_field_value(const char *s, size_t n, double *v, char *err, size_t errlen) {
  static const char *const t_words[] = {"t", "T", "true", "True", "TRUE", NULL};
  static const char *const f_words[] = {"f", "F", "false", "False", "FALSE", NULL};
  if (n == 0) return md_error(err, errlen, MD_EINVAL, "empty field value");
  if (word_in(s, n, t_words)) {
    *v = 1;
    return 0;
  }
  if (word_in(s, n, f_words)) {
    *v = 0;
    return 0;
  }
  char last = s[n - 1];
  if (last == 'i' || last == 'u') {
    int64_t iv;
    if (last == 'u') {
      if (s[0] == '-' || s[0] == '+' || n < 2) goto bad;
      uint64_t u = 0;
      for (size_t i = 0; i < n - 1; i++) {
        if (s[i] < '0' || s[i] > '9') goto bad;
        unsigned d = (unsigned)(s[i] - '0');
        if (u > (UINT64_MAX - d) / 10) goto bad;
        u = u * 10 + d;
      }
      *v = (double)u;
      return 0;
    }
    if (ingest_parse_int64(s, n - 1, &iv)) goto bad;
    *v = (double)iv;
    return 0;
  }
  size_t j = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (j >= n || !((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) goto bad; /* no NaN/Inf in line protocol */
  if (ingest_parse_double(s, n, v) || !isfinite(*v)) goto bad;
  return 0;
bad:
  return md_error(err, errlen, MD_EINVAL, "invalid field value \"%.*s\"", (int)(n > 64 ? 64 : n), s);
}

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

static int convert_ts(int64_t t, ingest_precision_t prec, int64_t *ms) {
  int64_t mul = 1;
  switch (prec) {
  case INGEST_PREC_NS:
    *ms = floordiv(t, 1000000);
    return 0;
  case INGEST_PREC_US:
    *ms = floordiv(t, 1000);
    return 0;
  case INGEST_PREC_MS:
    *ms = t;
    return 0;
  case INGEST_PREC_S:
    mul = 1000;
    break;
  case INGEST_PREC_M:
    mul = 60000;
    break;
  case INGEST_PREC_H:
    mul = 3600000;
    break;
  }
  if (t > INT64_MAX / mul || t < INT64_MIN / mul) return -1;
  *ms = t * mul;
  return 0;
}

/* Parses one line starting at *pi; leaves *pi at its terminating newline (or n). */
static int parse_line(influx_t *X, const char *p, size_t n, size_t *pi, char *err, size_t errlen) {
  size_t i = *pi;
  const char *meas;
  size_t mlen;
  int rc = scan_token(X, p, n, &i, K_MEAS, &meas, &mlen);
  if (rc) return rc;
  if (mlen == 0) {
    *pi = i;
    return md_error(err, errlen, MD_EINVAL, "missing measurement");
  }
  ilabel_t *L = X->lbl;
  size_t nl = 1;
  bool has_db = false;
  while (i < n && p[i] == ',') {
    i++;
    const char *k, *v;
    size_t kl, vl;
    if ((rc = scan_token(X, p, n, &i, K_TAG, &k, &kl))) return rc;
    if (kl == 0) {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "empty tag key");
    }
    if (i >= n || p[i] != '=') {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "tag \"%.*s\" has no '='", (int)(kl > 64 ? 64 : kl), k);
    }
    i++;
    if ((rc = scan_token(X, p, n, &i, K_TAG, &v, &vl))) return rc;
    if (vl == 0 || (i < n && p[i] == '=')) {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "tag \"%.*s\" has %s value", (int)(kl > 64 ? 64 : kl), k,
                      vl == 0 ? "an empty" : "an unescaped '=' in its");
    }
    if (nl > INGEST_HARD_MAX_LABELS) {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "more than %d tags", INGEST_HARD_MAX_LABELS);
    }
    size_t cl;
    const char *ck = clean_name(X, k, kl, false, &cl);
    if (!ck) return MD_ENOMEM;
    if (cl == 2 && memcmp(ck, "db", 2) == 0) has_db = true;
    L[nl++] = (ilabel_t){ck, cl, v, vl};
  }
  if (i >= n || p[i] != ' ') {
    *pi = i;
    return md_error(err, errlen, MD_EINVAL, "missing fields after measurement \"%.*s\"",
                    (int)(mlen > 64 ? 64 : mlen), meas);
  }
  while (i < n && p[i] == ' ')
    i++;
  size_t nf = 0;
  for (;;) {
    const char *k;
    size_t kl;
    if ((rc = scan_token(X, p, n, &i, K_TAG, &k, &kl))) return rc;
    if (kl == 0) {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "empty field key");
    }
    if (i >= n || p[i] != '=') {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "field \"%.*s\" has no '='", (int)(kl > 64 ? 64 : kl), k);
    }
    i++;
    if (i < n && p[i] == '"') {
      /* A string field: skipped, but it must be well formed. */
      i++;
      while (i < n && p[i] != '"')
        i += (p[i] == '\\' && i + 1 < n) ? 2 : 1;
      if (i >= n) {
        *pi = n;
        return md_error(err, errlen, MD_EINVAL, "unterminated string in field \"%.*s\"",
                        (int)(kl > 64 ? 64 : kl), k);
      }
      i++;
      X->c.res->skipped++;
    } else {
      size_t vs = i;
      while (i < n && p[i] != ',' && p[i] != ' ' && p[i] != '\n' && p[i] != '\r')
        i++;
      double v;
      if ((rc = parse_field_value(p + vs, i - vs, &v, err, errlen))) {
        *pi = i;
        return rc;
      }
      for (size_t f = 0; f < nf; f++) {
        if (X->fields[f].klen == kl && memcmp(X->fields[f].key, k, kl) == 0) {
          *pi = i;
          return md_error(err, errlen, MD_EINVAL, "duplicate field \"%.*s\"", (int)(kl > 64 ? 64 : kl), k);
        }
      }
      if (nf == MAX_FIELDS) {
        *pi = i;
        return md_error(err, errlen, MD_EINVAL, "more than %d fields", MAX_FIELDS);
      }
      X->fields[nf++] = (field_t){k, kl, v};
    }
    if (i < n && p[i] == ',') {
      i++;
      continue;
    }
    break;
  }
  if (i < n && p[i] != ' ' && p[i] != '\n' && p[i] != '\r') {
    *pi = i;
    return md_error(err, errlen, MD_EINVAL, "unexpected '%c' after fields", p[i]);
  }
  while (i < n && (p[i] == ' ' || p[i] == '\t'))
    i++;
  int64_t ts = X->c.o ? X->c.o->default_ts : 0;
  if (i < n && p[i] != '\n' && p[i] != '\r') {
    size_t ts0 = i;
    while (i < n && p[i] != ' ' && p[i] != '\n' && p[i] != '\r' && p[i] != '\t')
      i++;
    int64_t raw;
    if (ingest_parse_int64(p + ts0, i - ts0, &raw) ||
        convert_ts(raw, X->c.o ? X->c.o->precision : INGEST_PREC_NS, &ts)) {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "invalid timestamp \"%.*s\"",
                      (int)(i - ts0 > 64 ? 64 : i - ts0), p + ts0);
    }
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
      i++;
    if (i < n && p[i] != '\n') {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "unexpected text after the timestamp");
    }
  } else {
    while (i < n && p[i] == '\r')
      i++;
    if (i < n && p[i] != '\n') {
      *pi = i;
      return md_error(err, errlen, MD_EINVAL, "unexpected text after fields");
    }
  }
  *pi = i;
  if (X->c.o && X->c.o->influx_db && X->c.o->influx_db[0] && !has_db)
    L[nl++] = (ilabel_t){"db", 2, X->c.o->influx_db, strlen(X->c.o->influx_db)};
  size_t cml;
  const char *cm = clean_name(X, meas, mlen, true, &cml);
  if (!cm) return MD_ENOMEM;
  for (size_t f = 0; f < nf; f++) {
    const field_t *F = &X->fields[f];
    if (F->klen == 5 && memcmp(F->key, "value", 5) == 0) {
      L[0] = (ilabel_t){"__name__", 8, cm, cml};
    } else {
      char *name = arena_alloc(X->scratch, cml + F->klen + 3);
      if (!name) return MD_ENOMEM;
      memcpy(name, cm, cml);
      name[cml] = '_';
      size_t fl = ingest_sanitize_name(F->key, F->klen, true, name + cml + 1);
      /* A field starting with a digit needs no '_' prefix once it follows "meas_". */
      if (fl == F->klen + 1) {
        memmove(name + cml + 1, name + cml + 2, F->klen);
        fl--;
      }
      L[0] = (ilabel_t){"__name__", 8, name, cml + 1 + fl};
    }
    if ((rc = ictx_series(&X->c, L, nl, err, errlen))) return rc;
    if ((rc = ictx_sample(&X->c, ts, F->v))) return rc;
  }
  return 0;
}

int ingest_parse_influx(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                        ingest_result_t *res) {
  pthread_once(&classes_once, init_classes);
  influx_t *X = malloc(sizeof *X);
  if (!X) return MD_ENOMEM;
  ictx_init(&X->c, o, b, res);
  X->scratch = arena_new(16384);
  if (!X->scratch) {
    free(X);
    return MD_ENOMEM;
  }
  size_t i = 0, lineno = 0;
  char err[200];
  while (i < n && !X->c.limit_hit && !X->c.oom) {
    lineno++;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
      i++;
    if (i < n && p[i] == '\n') {
      i++;
      continue;
    }
    if (i >= n) break;
    if (p[i] == '#') {
      const char *nl = memchr(p + i, '\n', n - i);
      i = nl ? (size_t)(nl - p) + 1 : n;
      continue;
    }
    X->c.res->lines++;
    size_t startline = lineno;
    size_t before = i;
    int rc = parse_line(X, p, n, &i, err, sizeof err);
    /* Count the newlines a multi-line string consumed. */
    for (size_t j = before; j < i && j < n; j++)
      if (p[j] == '\n') lineno++;
    if (rc == MD_ENOMEM) X->c.oom = true;
    if (rc == MD_EINVAL) {
      ictx_error(&X->c, startline, "%s", err);
      const char *nl = i < n ? memchr(p + i, '\n', n - i) : NULL;
      i = nl ? (size_t)(nl - p) : n;
    }
    if (i < n && p[i] == '\n') i++;
    arena_reset(X->scratch);
  }
  int status = ictx_status(&X->c);
  arena_free(X->scratch);
  free(X);
  return status;
}
