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
 *
 * Grouping: a body of several writes repeats every series once per write (Telegraf flushing
 * a few intervals, the bench dataset ~3 times per request). The raw bytes of a line's
 * measurement and tags (up to the first unescaped space) name its tag set: the first time a
 * tag set is seen it is parsed and its labels kept; later lines with the same bytes skip
 * straight to the fields. Each field's sample is staged under its series (tag set + raw
 * field key), validated the first time; the batch gets one series per distinct series, its
 * samples in line order, so the batch and the engine copy, sort, hash and look up each
 * series once per request. Different spellings of one label set (tag order, escapes) are
 * different groups, as they were different batch series before. Bad lines are never cached:
 * each is parsed and reported on its own.
 *
 * Threading: any thread; the parser state (tables and arrays of a few MB on a 10,000-line
 * body) is kept per thread between requests, see parser_get.
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

#define MAX_FIELDS 1024
#define TAGS_SEED 0x51ed27a1f3c9b8d5ULL

typedef struct {
  const char *key;
  size_t klen;
  const char *raw; /* the key as written (escapes included): part of the series' identity */
  size_t rawlen;
  double v;
} field_t;

/* A distinct measurement+tags text of the body, parsed once. */
typedef struct {
  const char *raw;
  size_t rawlen;
  uint64_t hash;
  const char *meas; /* sanitised measurement name */
  size_t mlen;
  size_t lab_off, nl; /* its labels (db label included) in influx_t.glab */
  uint32_t first;     /* group of the first field seen with it + 1 (0: none): one probe less */
  ikey_t key;         /* series-ref cache key of the tag set ({0,0}: no cache) */
  bool parsed;        /* false: known good from the cache, not parsed (meas, labels unset) */
} tagset_t;

/* A distinct series of the body: a tag set and a raw field key; valid (checked once). */
typedef struct {
  uint32_t tagset;
  const char *field;
  size_t flen;
  uint64_t hash;
  const char *name; /* metric name */
  size_t namelen;
  ikey_t ikey;           /* series-ref cache key ({0,0}: no cache) */
  tsdb_series_ref_t ref; /* != 0: the cache knew the series (no labels built) */
  bool skip;             /* resend pass: not one of the series being resent */
} group_t;

/* Open-addressing index of tag sets or groups: slot = index + 1, 0 = empty. */
typedef struct {
  uint32_t *slots;
  size_t cap;
} slots_t;

typedef struct {
  ictx_t c;
  arena_t *scratch; /* per line */
  arena_t *keep;    /* per request: labels and names of tag sets and groups */
  ilabel_t lbl[INGEST_HARD_MAX_LABELS + 2];
  field_t fields[MAX_FIELDS];
  ilabel_t *glab;
  size_t nglab, cap_glab;
  tagset_t *tagsets;
  size_t ntagsets, cap_tagsets;
  group_t *groups;
  size_t ngroups, cap_groups;
  slots_t tslots, gslots;
  istage_t stage;
  /* the cache probe parse_line made for its first field (stage_sample reuses it): the field
   * key's raw bytes, the tag set's key, the series' key and the answer */
  const char *peek_raw;
  size_t peek_rawlen;
  ikey_t peek_tkey, peek_key;
  int peek;
  tsdb_series_ref_t peek_ref;
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
  /* Booleans start with t/T/f/F, numbers never do. */
  if ((s[0] | 0x20) == 't' && word_in(s, n, t_words)) {
    *v = 1;
    return 0;
  }
  if ((s[0] | 0x20) == 'f' && word_in(s, n, f_words)) {
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

/* ---- grouping ---------------------------------------------------------------------------- */


/* Makes room for one more entry (n in use) at load <= 1/2, rehashing by hashes[i]. */
static bool slots_reserve(slots_t *t, size_t n, const void *entries, size_t stride, size_t hash_off) {
  if ((n + 1) * 2 <= t->cap) return true;
  size_t nc = t->cap ? t->cap * 2 : 1024;
  uint32_t *ns = calloc(nc, sizeof *ns);
  if (!ns) return false;
  for (size_t e = 0; e < n; e++) {
    uint64_t h;
    memcpy(&h, (const char *)entries + e * stride + hash_off, sizeof h);
    size_t k = h & (nc - 1);
    while (ns[k])
      k = (k + 1) & (nc - 1);
    ns[k] = (uint32_t)e + 1;
  }
  free(t->slots);
  t->slots = ns;
  t->cap = nc;
  return true;
}

/* The end of a line's measurement and tags: its first unescaped space or newline (n if none).
 * Escapes are skipped exactly as scan_token skips them, so a line whose tags parse ends its
 * tags here. The usual line (no backslash before its first space) takes three memchr calls,
 * each bounded by the line. */
static size_t tags_end(const char *p, size_t n, size_t i) {
  const char *nl = memchr(p + i, '\n', n - i);
  size_t line_end = nl ? (size_t)(nl - p) : n;
  const char *sp = memchr(p + i, ' ', line_end - i);
  size_t end = sp ? (size_t)(sp - p) : line_end;
  if (!memchr(p + i, '\\', end - i)) return end;
  for (;;) {
    while (i < n && p[i] != ' ' && p[i] != '\n' && p[i] != '\\')
      i++;
    if (i >= n || p[i] != '\\') return i;
    i += i + 1 < n && p[i + 1] != '\n' ? 2 : 1;
  }
}

/* The hash of a tag set's raw bytes: with the cache on, the first half of its cache key. */
static uint64_t tags_hash(const influx_t *X, const char *s, size_t n) {
  return X->c.refs ? ikey_a(&X->c, s, n) : md_hash64(s, n, TAGS_SEED);
}

static long tagset_find(const influx_t *X, const char *raw, size_t len, uint64_t h) {
  if (!X->tslots.cap) return -1;
  size_t mask = X->tslots.cap - 1;
  for (size_t k = h & mask; X->tslots.slots[k]; k = (k + 1) & mask) {
    const tagset_t *t = &X->tagsets[X->tslots.slots[k] - 1];
    if (t->hash == h && t->rawlen == len && memcmp(t->raw, raw, len) == 0)
      return (long)(X->tslots.slots[k] - 1);
  }
  return -1;
}

/* A string the index keeps: the input outlives the parse, the per-line scratch does not. */
static const char *keep_str(influx_t *X, const char *in, size_t inlen, const char *s, size_t n) {
  if (s >= in && s + n <= in + inlen) return s;
  char *m = arena_alloc(X->keep, n + 1);
  if (!m) return NULL;
  memcpy(m, s, n);
  m[n] = 0;
  return m;
}

/* Gives tag set t its parsed labels (L[1..nl), measurement cm); false when out of memory. */
static bool tagset_fill(influx_t *X, const char *p, size_t n, tagset_t *t, const char *cm, size_t cml,
                        const ilabel_t *L, size_t nl) {
  if (!ingest_grow((void **)&X->glab, &X->cap_glab, X->nglab + nl, sizeof *X->glab, 2048)) return false;
  t->meas = keep_str(X, p, n, cm, cml);
  t->mlen = cml;
  t->lab_off = X->nglab;
  t->nl = nl - 1;
  t->parsed = true;
  if (!t->meas) return false;
  for (size_t l = 1; l < nl; l++) {
    ilabel_t k = L[l];
    k.name = keep_str(X, p, n, k.name, k.nlen);
    k.value = keep_str(X, p, n, k.value, k.vlen);
    if (!k.name || !k.value) return false;
    X->glab[X->nglab++] = k;
  }
  return true;
}

/* Records a new tag set, parsed (cm, L, nl as for tagset_fill) or, with L NULL, known good
 * from the cache and left unparsed; -1 when out of memory. */
static long tagset_add(influx_t *X, const char *p, size_t n, const char *raw, size_t rawlen, uint64_t h,
                       ikey_t key, const char *cm, size_t cml, const ilabel_t *L, size_t nl) {
  if (!slots_reserve(&X->tslots, X->ntagsets, X->tagsets, sizeof *X->tagsets, offsetof(tagset_t, hash)) ||
      !ingest_grow((void **)&X->tagsets, &X->cap_tagsets, X->ntagsets + 1, sizeof *X->tagsets, 256))
    return -1;
  tagset_t *t = &X->tagsets[X->ntagsets];
  *t = (tagset_t){.raw = raw, .rawlen = rawlen, .hash = h, .key = key};
  if (L && !tagset_fill(X, p, n, t, cm, cml, L, nl)) return -1;
  size_t k = h & (X->tslots.cap - 1);
  while (X->tslots.slots[k])
    k = (k + 1) & (X->tslots.cap - 1);
  X->tslots.slots[k] = (uint32_t)X->ntagsets + 1;
  return (long)X->ntagsets++;
}

/* Fills X->lbl with the series' labels: name, then the tag set's; returns their count. */
static size_t series_labels(influx_t *X, const tagset_t *t, const char *name, size_t namelen) {
  X->lbl[0] = (ilabel_t){"__name__", 8, name, namelen};
  memcpy(X->lbl + 1, X->glab + t->lab_off, t->nl * sizeof *X->lbl);
  return t->nl + 1;
}

/* Stages field F of a line of tag set ts: finds or makes its group (validating the series the
 * first time it is seen). MD_EINVAL (err says why) for a bad series, MD_ELIMIT past the
 * samples-per-request limit. */
static int parse_tags(influx_t *X, const char *p, size_t n, size_t *pi, uint64_t th, size_t tend, long fill,
                      long *ts_idx, char *err, size_t errlen);

static int stage_sample(influx_t *X, const char *p, size_t n, uint32_t ts_idx, const field_t *F, int64_t tsv,
                        char *err, size_t errlen) {
  tagset_t *t = &X->tagsets[ts_idx];
  long g = -1;
  uint64_t h = 0;
  if (t->first) {
    const group_t *G = &X->groups[t->first - 1];
    if (G->flen == F->rawlen && memcmp(G->field, F->raw, F->rawlen) == 0) g = (long)t->first - 1;
  }
  if (g < 0) h = md_hash64(F->raw, F->rawlen, t->hash);
  if (g < 0 && X->gslots.cap) {
    size_t mask = X->gslots.cap - 1;
    for (size_t k = h & mask; X->gslots.slots[k]; k = (k + 1) & mask) {
      const group_t *G = &X->groups[X->gslots.slots[k] - 1];
      if (G->hash == h && G->tagset == ts_idx && G->flen == F->rawlen &&
          memcmp(G->field, F->raw, F->rawlen) == 0) {
        g = (long)(X->gslots.slots[k] - 1);
        break;
      }
    }
  }
  if (g < 0) {
    ikey_t key = {0, 0};
    tsdb_series_ref_t ref = 0;
    int probe = IREF_LABELS;
    if (X->c.refs) {
      if (F->raw == X->peek_raw && F->rawlen == X->peek_rawlen && ikey_eq(t->key, X->peek_tkey)) {
        key = X->peek_key;
        probe = X->peek;
        ref = X->peek_ref;
      } else {
        key = ikey_more(t->key, F->raw, F->rawlen);
        probe = ictx_probe(&X->c, key, &ref);
      }
    }
    const char *name = NULL;
    size_t namelen = 0;
    if (probe == IREF_LABELS && !t->parsed) {
      /* A tag set the cache vouched for, but this series needs its labels. */
      size_t i = (size_t)(t->raw - p);
      long idx;
      int rc = parse_tags(X, p, n, &i, t->hash, i + t->rawlen, (long)ts_idx, &idx, err, errlen);
      if (rc) return rc;
      t = &X->tagsets[ts_idx];
    }
    if (probe != IREF_LABELS) {
      /* the cache knows the series (or the resend pass skips it): no name or labels */
    } else if (F->klen == 5 && memcmp(F->key, "value", 5) == 0) {
      name = t->meas;
      namelen = t->mlen;
    } else {
      char *m = arena_alloc(X->keep, t->mlen + F->klen + 3);
      if (!m) return MD_ENOMEM;
      memcpy(m, t->meas, t->mlen);
      m[t->mlen] = '_';
      size_t fl = ingest_sanitize_name(F->key, F->klen, true, m + t->mlen + 1);
      /* A field starting with a digit needs no '_' prefix once it follows "meas_". */
      if (fl == F->klen + 1) {
        memmove(m + t->mlen + 1, m + t->mlen + 2, F->klen);
        fl--;
      }
      name = m;
      namelen = t->mlen + 1 + fl;
    }
    if (probe == IREF_LABELS) {
      int rc = ictx_check(&X->c, X->lbl, series_labels(X, t, name, namelen), err, errlen);
      if (rc) return rc;
    }
    if (!slots_reserve(&X->gslots, X->ngroups, X->groups, sizeof *X->groups, offsetof(group_t, hash)) ||
        !ingest_grow((void **)&X->groups, &X->cap_groups, X->ngroups + 1, sizeof *X->groups, 1024))
      return MD_ENOMEM;
    g = (long)X->ngroups++;
    X->groups[g] = (group_t){ts_idx, F->raw, F->rawlen, h, name, namelen, key, ref, probe == IREF_SKIP};
    size_t k = h & (X->gslots.cap - 1);
    while (X->gslots.slots[k])
      k = (k + 1) & (X->gslots.cap - 1);
    X->gslots.slots[k] = (uint32_t)g + 1;
    if (!t->first) t->first = (uint32_t)g + 1;
  }
  if (X->groups[g].skip) return 0;
  return istage_add(&X->stage, &X->c, (uint32_t)g, tsv, F->v);
}

/* Group g's labels for istage_emit (in X->lbl), or its ref. */
static const ilabel_t *group_labels(void *ctx, size_t g, size_t *n, tsdb_series_ref_t *ref, ikey_t *key) {
  influx_t *X = ctx;
  const group_t *G = &X->groups[g];
  *ref = G->ref;
  *key = G->ikey;
  if (G->ref) {
    *n = 0;
    return NULL;
  }
  *n = series_labels(X, &X->tagsets[G->tagset], G->name, G->namelen);
  return X->lbl;
}

/* A line whose tag set the request has not seen: when the cache knows the series of its
 * first field, the tag set is known good and is recorded unparsed (its fields then go by
 * ref); -1 otherwise (parse it), -2 when out of memory. The probe is kept for stage_sample. */
static long tagset_from_cache(influx_t *X, const char *p, size_t n, size_t line0, size_t tend, uint64_t th) {
  size_t j = tend;
  while (j < n && p[j] == ' ')
    j++;
  size_t raw0 = j;
  /* the raw extent scan_token gives the field key */
  while (j < n && !(stop_class[(unsigned char)p[j]] & K_TAG))
    j += p[j] == '\\' && j + 1 < n && p[j + 1] != '\n' ? 2 : 1;
  ikey_t tkey = ikey_from_a(&X->c, th, p + line0, tend - line0);
  X->peek_raw = p + raw0;
  X->peek_rawlen = j - raw0;
  X->peek_tkey = tkey;
  X->peek_key = ikey_more(tkey, p + raw0, j - raw0);
  X->peek = ictx_probe(&X->c, X->peek_key, &X->peek_ref);
  if (X->peek == IREF_LABELS) return -1;
  long t = tagset_add(X, p, n, p + line0, tend - line0, th, tkey, NULL, 0, NULL, 0);
  return t < 0 ? -2 : t;
}

/* ---- per-thread parser state -------------------------------------------------------------- */

/* A state that staged more samples than this is freed rather than kept for the next request. */
#define KEEP_STAGED 262144

static pthread_key_t parser_key;
static bool parser_key_ok;
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;

static void parser_free(void *p) {
  influx_t *X = p;
  if (!X) return;
  arena_free(X->scratch);
  arena_free(X->keep);
  free(X->glab);
  free(X->tagsets);
  free(X->groups);
  free(X->tslots.slots);
  free(X->gslots.slots);
  istage_free(&X->stage);
  free(X);
}

static void parser_key_init(void) {
  parser_key_ok = pthread_key_create(&parser_key, parser_free) == 0;
}

/* The thread's parser state, emptied, or a new one; NULL when out of memory. */
static influx_t *parser_get(void) {
  pthread_once(&parser_once, parser_key_init);
  influx_t *X = parser_key_ok ? pthread_getspecific(parser_key) : NULL;
  if (X && pthread_setspecific(parser_key, NULL) == 0) return X;
  X = calloc(1, sizeof *X);
  if (!X) return NULL;
  X->scratch = arena_new(16384);
  X->keep = arena_new(0);
  if (!X->scratch || !X->keep) {
    parser_free(X);
    return NULL;
  }
  return X;
}

static void parser_put(influx_t *X) {
  if (!parser_key_ok || X->stage.cap > KEEP_STAGED || pthread_getspecific(parser_key)) {
    parser_free(X);
    return;
  }
  arena_reset(X->scratch);
  arena_reset(X->keep);
  if (X->ntagsets) memset(X->tslots.slots, 0, X->tslots.cap * sizeof *X->tslots.slots);
  if (X->ngroups) memset(X->gslots.slots, 0, X->gslots.cap * sizeof *X->gslots.slots);
  X->nglab = X->ntagsets = X->ngroups = 0;
  istage_reset(&X->stage);
  if (pthread_setspecific(parser_key, X) != 0) parser_free(X);
}

/* Parses a line's measurement and tags (at *pi) and records them as a new tag set (*ts_idx).
 * th is the hash of the bytes up to tend, the end tags_end found. */
static int parse_tags(influx_t *X, const char *p, size_t n, size_t *pi, uint64_t th, size_t tend, long fill,
                      long *ts_idx, char *err, size_t errlen) {
  size_t i = *pi;
  const size_t line0 = i;
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
  if (X->c.o && X->c.o->influx_db && X->c.o->influx_db[0] && !has_db)
    L[nl++] = (ilabel_t){"db", 2, X->c.o->influx_db, strlen(X->c.o->influx_db)};
  size_t cml;
  const char *cm = clean_name(X, meas, mlen, true, &cml);
  if (!cm) return MD_ENOMEM;
  /* i == tend for any line whose tags parse (see tags_end); the hash follows i regardless. */
  if (fill >= 0) {
    /* an unparsed tag set of the same bytes (tagset_from_cache) */
    *ts_idx = fill;
    if (!tagset_fill(X, p, n, &X->tagsets[fill], cm, cml, L, nl)) return MD_ENOMEM;
    *pi = i;
    return 0;
  }
  if (i != tend) th = tags_hash(X, p + line0, i - line0);
  ikey_t key = X->c.refs ? ikey_from_a(&X->c, th, p + line0, i - line0) : (ikey_t){0, 0};
  *ts_idx = tagset_add(X, p, n, p + line0, i - line0, th, key, cm, cml, L, nl);
  if (*ts_idx < 0) return MD_ENOMEM;
  *pi = i;
  return 0;
}

/* Parses one line starting at *pi; leaves *pi at its terminating newline (or n). */
static int parse_line(influx_t *X, const char *p, size_t n, size_t *pi, char *err, size_t errlen) {
  size_t i = *pi;
  const size_t line0 = i, tend = tags_end(p, n, i);
  uint64_t th = 0;
  long ts_idx = -1;
  X->peek_raw = NULL;
  if (tend < n && p[tend] == ' ') {
    th = tags_hash(X, p + line0, tend - line0);
    ts_idx = tagset_find(X, p + line0, tend - line0, th);
    if (ts_idx < 0 && X->c.refs) {
      ts_idx = tagset_from_cache(X, p, n, line0, tend, th);
      if (ts_idx < -1) return MD_ENOMEM;
    }
  }
  int rc;
  if (ts_idx >= 0) {
    i = tend;
  } else if ((rc = parse_tags(X, p, n, &i, th, tend, -1, &ts_idx, err, errlen))) {
    *pi = i;
    return rc;
  }
  while (i < n && p[i] == ' ')
    i++;
  size_t nf = 0;
  for (;;) {
    const char *k;
    size_t kl;
    size_t raw0 = i;
    if ((rc = scan_token(X, p, n, &i, K_TAG, &k, &kl))) return rc;
    size_t raw1 = i;
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
      X->fields[nf++] = (field_t){k, kl, p + raw0, raw1 - raw0, v};
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
  for (size_t f = 0; f < nf; f++)
    if ((rc = stage_sample(X, p, n, (uint32_t)ts_idx, &X->fields[f], ts, err, errlen))) return rc;
  return 0;
}

int ingest_parse_influx(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                        ingest_result_t *res) {
  pthread_once(&classes_once, init_classes);
  influx_t *X = parser_get();
  if (!X) return MD_ENOMEM;
  ictx_init(&X->c, o, b, res);
  X->c.names_valid = true; /* clean_name sanitises every name (parse_tags, stage_sample) */
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
    /* Count the newlines a multi-line string consumed (memchr: most lines have none). */
    for (const char *q = p + before, *e = p + (i < n ? i : n);
         q < e && (q = memchr(q, '\n', (size_t)(e - q))); q++)
      lineno++;
    if (rc == MD_ENOMEM) X->c.oom = true;
    if (rc == MD_EINVAL) {
      ictx_error(&X->c, startline, "%s", err);
      const char *nl = i < n ? memchr(p + i, '\n', n - i) : NULL;
      i = nl ? (size_t)(nl - p) : n;
    }
    if (i < n && p[i] == '\n') i++;
    arena_reset(X->scratch);
  }
  /* Past the sample limit the caller drops the batch (413); it still gets what was read. */
  if (!X->c.oom && istage_emit(&X->stage, &X->c, group_labels, X)) X->c.oom = true;
  int status = ictx_status(&X->c);
  parser_put(X);
  return status;
}
