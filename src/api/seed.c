/*
 * api/seed.c — the seed REST endpoints (seed 004; SPEC §3): the /metrics exposition (track
 * registry state + latest stored samples + self-metrics, or window aggregates computed from
 * storage), /metrics/series (series with their points, cursor pagination) and
 * /metrics/trends/{name} (Mann-Kendall trend, change percentage, per-step points, forecast).
 *
 * Everything reads through tsdb_select: aggregates and trends work on any pushed, scraped or
 * tracked data and survive restarts. The analytics math is in src/analytics/.
 *
 * Ordering invariant of the text exposition: all lines of one metric family are adjacent
 * (promtool and the Prometheus parser require it), so stored series are collected, grouped
 * into families (histograms and summaries rebuilt from their _bucket/quantile/_sum/_count
 * series) and sorted before anything is written. Families already exposed by the track
 * registry or the self-metrics registry are not repeated from storage (they are flushed
 * there too).
 *
 * Threading: handlers run on HTTP worker threads; all state is per request (an arena and
 * local arrays). The only shared objects are the tsdb, the registries and the config, which
 * are thread-safe or immutable.
 */
#include "api/seed.h"

#include "analytics/analytics.h"
#include "api/api.h"
#include "api/params.h"
#include "core/config.h"
#include "core/metrics.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "tsdb/tsdb.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED_LOOKBACK_MS (5 * 60 * 1000)
#define SEED_MAX_SELECTORS 64
#define SEED_MAX_TREND_STEPS 11000
#define SEED_MAX_TREND_SERIES 500
#define SEED_MAX_FORECAST 1000
#define SEED_MAX_LIMIT 10000

/* ---- small containers ---------------------------------------------------------------- */

/* Open-addressing map from a 64-bit hash to an index (0 is remapped: it marks free slots). */
typedef struct u64map {
  uint64_t *keys;
  size_t *vals;
  size_t cap, n;
} u64map_t;

static void u64map_free(u64map_t *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

static size_t *u64map_find(const u64map_t *m, uint64_t k) {
  if (!m->cap) return NULL;
  if (!k) k = 1;
  for (size_t i = k & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (m->keys[i] == k) return &m->vals[i];
    if (!m->keys[i]) return NULL;
  }
}

/* Inserts k → v unless present. Returns 1 inserted, 0 present, MD_ENOMEM. */
static int u64map_put(u64map_t *m, uint64_t k, size_t v) {
  if (!k) k = 1;
  if ((m->n + 1) * 2 > m->cap) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    uint64_t *nk = calloc(ncap, sizeof *nk);
    size_t *nv = calloc(ncap, sizeof *nv);
    if (!nk || !nv) {
      free(nk);
      free(nv);
      return MD_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->keys[i]) continue;
      size_t j = m->keys[i] & (ncap - 1);
      while (nk[j]) j = (j + 1) & (ncap - 1);
      nk[j] = m->keys[i];
      nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
  }
  size_t i = k & (m->cap - 1);
  while (m->keys[i]) {
    if (m->keys[i] == k) return 0;
    i = (i + 1) & (m->cap - 1);
  }
  m->keys[i] = k;
  m->vals[i] = v;
  m->n++;
  return 1;
}

static uint64_t hash_str(const char *s) { return md_hash64(s, strlen(s), 0x5eed); }

static bool ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static const char *label_value(const tsdb_label_t *l, size_t nl, const char *name) {
  for (size_t i = 0; i < nl; i++)
    if (strcmp(l[i].name, name) == 0) return l[i].value;
  return NULL;
}

/* ---- rendering helpers --------------------------------------------------------------- */

static void text_label_value(sb_t *sb, const char *v) {
  for (const char *p = v; *p; p++) {
    if (*p == '\\') sb_puts(sb, "\\\\");
    else if (*p == '"') sb_puts(sb, "\\\"");
    else if (*p == '\n') sb_puts(sb, "\\n");
    else sb_putc(sb, *p);
  }
}

static bool skipped_label(const char *name, const char *skip1, const char *skip2) {
  return strcmp(name, "__name__") == 0 || (skip1 && strcmp(name, skip1) == 0) ||
         (skip2 && strcmp(name, skip2) == 0);
}

/* {a="b",c="d"} without __name__ and the skipped names; nothing when no label is left. */
static void text_labels(sb_t *sb, const tsdb_label_t *l, size_t nl, const char *skip1, const char *skip2) {
  bool first = true;
  for (size_t i = 0; i < nl; i++) {
    if (skipped_label(l[i].name, skip1, skip2)) continue;
    sb_putc(sb, first ? '{' : ',');
    first = false;
    sb_puts(sb, l[i].name);
    sb_puts(sb, "=\"");
    text_label_value(sb, l[i].value);
    sb_putc(sb, '"');
  }
  if (!first) sb_putc(sb, '}');
}

static void json_labels(sb_t *sb, const tsdb_label_t *l, size_t nl, const char *skip1, const char *skip2) {
  bool first = true;
  sb_putc(sb, '{');
  for (size_t i = 0; i < nl; i++) {
    if (skipped_label(l[i].name, skip1, skip2)) continue;
    if (!first) sb_putc(sb, ',');
    first = false;
    sb_json_str(sb, l[i].name, strlen(l[i].name));
    sb_putc(sb, ':');
    sb_json_str(sb, l[i].value, strlen(l[i].value));
  }
  sb_putc(sb, '}');
}

/* Sample values: integers (counts, counters — most exported values) take a fast path that
 * prints the same digits as sb_double's shortest round-trip form, without printf. */
static void put_value(sb_t *sb, double v) {
  if (v == v && fabs(v) < 1e15 && v == (double)(int64_t)v && !(v == 0 && signbit(v))) {
    char buf[24];
    int64_t x = (int64_t)v;
    uint64_t u = x < 0 ? (uint64_t)(-x) : (uint64_t)x;
    size_t i = sizeof buf;
    do {
      buf[--i] = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    if (x < 0) buf[--i] = '-';
    sb_append(sb, buf + i, sizeof buf - i);
    return;
  }
  sb_double(sb, v);
}

/* JSON has no NaN or infinities: those become null. */
static void json_num(sb_t *sb, double v) {
  if (isfinite(v)) put_value(sb, v);
  else sb_puts(sb, "null");
}

static void json_time(sb_t *sb, int64_t ms) {
  char buf[32];
  md_format_rfc3339(ms, buf);
  sb_putc(sb, '"');
  sb_puts(sb, buf);
  sb_putc(sb, '"');
}

static void help_text(sb_t *sb, const char *s) {
  for (const char *p = s; *p; p++) {
    if (*p == '\\') sb_puts(sb, "\\\\");
    else if (*p == '\n') sb_puts(sb, "\\n");
    else sb_putc(sb, *p);
  }
}

/* ---- selectors ----------------------------------------------------------------------- */

static bool name_start(char c, bool metric) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
}
static bool name_char(char c, bool metric) { return name_start(c, metric) || (c >= '0' && c <= '9'); }

static bool matcher_matches(const tsdb_matcher_t *m, const core_regex_t *re, const char *v) {
  if (!v) v = "";
  switch (m->type) {
  case TSDB_MATCH_EQ: return strcmp(v, m->value) == 0;
  case TSDB_MATCH_NEQ: return strcmp(v, m->value) != 0;
  case TSDB_MATCH_RE: return core_regex_match(re, v, strlen(v));
  case TSDB_MATCH_NRE: return !core_regex_match(re, v, strlen(v));
  }
  return false;
}

int seed_selector_add(seed_selector_t *sel, arena_t *a, tsdb_match_type_t type, const char *name,
                      const char *value, char *err, size_t errlen) {
  if (sel->n == sel->cap) {
    size_t ncap = sel->cap ? sel->cap * 2 : 8;
    tsdb_matcher_t *nm = arena_alloc(a, ncap * sizeof *nm);
    core_regex_t **nr = arena_calloc(a, ncap * sizeof *nr);
    if (!nm || !nr) return md_error(err, errlen, MD_ENOMEM, "out of memory");
    if (sel->n) {
      memcpy(nm, sel->m, sel->n * sizeof *nm);
      memcpy(nr, sel->re, sel->n * sizeof *nr);
    }
    sel->m = nm;
    sel->re = nr;
    sel->cap = ncap;
  }
  tsdb_matcher_t *m = &sel->m[sel->n];
  m->type = type;
  m->name = arena_strdup(a, name);
  m->value = arena_strdup(a, value);
  if (!m->name || !m->value) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  sel->re[sel->n] = NULL;
  if (type == TSDB_MATCH_RE || type == TSDB_MATCH_NRE) {
    char rerr[160];
    int rc = core_regex_compile(value, strlen(value), &sel->re[sel->n], rerr, sizeof rerr);
    if (rc) return md_error(err, errlen, MD_EINVAL, "bad regex for label %s: %s", name, rerr);
  }
  sel->n++;
  return MD_OK;
}

void seed_selector_release(seed_selector_t *sel, size_t nsel) {
  for (size_t s = 0; s < nsel; s++) {
    for (size_t i = 0; i < sel[s].n; i++) core_regex_free(sel[s].re[i]);
    sel[s].n = 0;
  }
}

bool seed_selector_matches(const seed_selector_t *sel, size_t nsel, const tsdb_label_t *l, size_t nl,
                           const char *alt_name) {
  if (nsel == 0) return true;
  for (size_t s = 0; s < nsel; s++) {
    bool ok = true;
    for (size_t i = 0; i < sel[s].n && ok; i++) {
      const tsdb_matcher_t *m = &sel[s].m[i];
      const char *v = label_value(l, nl, m->name);
      ok = matcher_matches(m, sel[s].re[i], v);
      if (!ok && alt_name && strcmp(m->name, "__name__") == 0)
        ok = matcher_matches(m, sel[s].re[i], alt_name);
    }
    if (ok) return true;
  }
  return false;
}

int seed_parse_selector(const char *s, size_t n, arena_t *a, seed_selector_t *out, char *err,
                        size_t errlen) {
  /* One selector grammar for the whole API: the Prometheus handlers' parser (params.c);
   * we add compiled regexes so the same matchers can filter in-memory expositions. */
  memset(out, 0, sizeof *out);
  api_selector_t parsed;
  char *copy = arena_strndup(a, s, n);
  if (!copy) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  if (memchr(s, '\0', n)) return md_error(err, errlen, MD_EINVAL, "NUL byte in selector");
  int rc = api_parse_selector(a, copy, &parsed, err, errlen);
  if (rc) return rc;
  for (size_t i = 0; i < parsed.n; i++) {
    rc = seed_selector_add(out, a, parsed.m[i].type, parsed.m[i].name, parsed.m[i].value, err, errlen);
    if (rc) {
      seed_selector_release(out, 1);
      return rc;
    }
  }
  return MD_OK;
}

unsigned seed_agg_parse(const char *name, size_t n) {
  static const struct { const char *name; unsigned bit; } aggs[] = {
      {"avg", SEED_AGG_AVG}, {"sum", SEED_AGG_SUM}, {"min", SEED_AGG_MIN},
      {"max", SEED_AGG_MAX}, {"count", SEED_AGG_COUNT},
  };
  for (size_t i = 0; i < sizeof aggs / sizeof *aggs; i++)
    if (strlen(aggs[i].name) == n && memcmp(aggs[i].name, name, n) == 0) return aggs[i].bit;
  return 0;
}

static const char *strip_suffix_type(const json_t *types, const char *name, char *buf, size_t bufsz) {
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  size_t n = strlen(name);
  for (size_t i = 0; i < 3; i++) {
    if (!ends_with(name, n, suffixes[i])) continue;
    size_t bl = n - strlen(suffixes[i]);
    if (bl >= bufsz) continue;
    memcpy(buf, name, bl);
    buf[bl] = '\0';
    const char *t = json_string_value(json_object_get(types, buf));
    if (t && (strcmp(t, "histogram") == 0 || strcmp(t, "summary") == 0)) return t;
  }
  return NULL;
}

const char *seed_metric_type(const json_t *types, const char *name) {
  if (types) {
    const char *t = json_string_value(json_object_get(types, name));
    if (t) return t;
    char buf[512];
    if ((t = strip_suffix_type(types, name, buf, sizeof buf))) return t;
  }
  if (ends_with(name, strlen(name), "_total")) return "counter";
  return "gauge";
}

/* Counter-like: counters, and the cumulative parts (_bucket, _sum, _count) of histograms
 * and summaries. */
static bool counter_like(const json_t *types, const char *name) {
  const char *t = seed_metric_type(types, name);
  if (strcmp(t, "counter") == 0) return true;
  if (strcmp(t, "histogram") == 0 || strcmp(t, "summary") == 0) {
    size_t n = strlen(name);
    return ends_with(name, n, "_bucket") || ends_with(name, n, "_sum") || ends_with(name, n, "_count");
  }
  return false;
}

/* ---- scanning storage ----------------------------------------------------------------- */

typedef int (*series_fn)(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                         const double *v, size_t ns);

/* Runs fn over every series matching any selector (each once), in storage order per
 * selector. nsel = 0 selects every series. */
static int scan(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel, int64_t mint,
                int64_t maxt, series_fn fn, void *ctx, char *err, size_t errlen) {
  static const tsdb_matcher_t all = {TSDB_MATCH_RE, "__name__", ".+"};
  u64map_t seen = {0};
  sb_t key = {0};
  int rc = MD_OK;
  size_t rounds = nsel ? nsel : 1;
  for (size_t s = 0; s < rounds && rc == MD_OK; s++) {
    tsdb_query_t *q = NULL;
    const tsdb_matcher_t *m = nsel ? sel[s].m : &all;
    size_t nm = nsel ? sel[s].n : 1;
    rc = tsdb_select(db, tenant, m, nm, mint, maxt, NULL, &q, err, errlen);
    if (rc) break;
    int more;
    while ((more = tsdb_query_next(q)) == 1) {
      size_t nl;
      const tsdb_label_t *l = tsdb_query_labels(q, &nl);
      if (nsel > 1) {
        /* the same series can match several match[] selectors: report it once */
        sb_reset(&key);
        for (size_t i = 0; i < nl; i++) {
          sb_puts(&key, l[i].name);
          sb_putc(&key, '\x01');
          sb_puts(&key, l[i].value);
          sb_putc(&key, '\x02');
        }
        if (key.oom) {
          rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
          break;
        }
        int put = u64map_put(&seen, md_hash64(key.buf, key.len, 7), 0);
        if (put < 0) {
          rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
          break;
        }
        if (put == 0) continue;
      }
      const int64_t *ts;
      const double *v;
      size_t ns = tsdb_query_samples(q, &ts, &v);
      if ((rc = fn(ctx, l, nl, ts, v, ns))) break;
    }
    if (more < 0 && rc == MD_OK) rc = md_error(err, errlen, more, "reading series failed");
    tsdb_query_free(q);
  }
  u64map_free(&seen);
  sb_free(&key);
  return rc;
}

/* ---- aggregated export --------------------------------------------------------------- */

enum { ROW_LE = 1, ROW_QUANTILE = 2 };
enum { KIND_GAUGE = 0, KIND_COUNTER = 1, KIND_DIST = 2 };

typedef struct agg_raw {
  const char *name, *labels;
  double min, max, sum, count, increase;
  int64_t t_first, t_last;
  unsigned flags;
} agg_raw_t;

typedef struct agg_out {
  const char *base, *labels;
  int kind;
  bool histogram; /* KIND_DIST: histogram (has buckets) or summary */
  double dsum, dcount;
  double v[5]; /* avg, sum, min, max, count; NaN = not available */
} agg_out_t;

typedef struct agg_scan {
  arena_t *arena;
  seed_format_t format;
  agg_raw_t *rows;
  size_t n, cap;
  sb_t tmp;
} agg_scan_t;

static int agg_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts, const double *v,
                       size_t ns) {
  agg_scan_t *st = ctx;
  const char *name = label_value(l, nl, "__name__");
  if (!name) return MD_OK;
  agg_raw_t r = {.min = INFINITY, .max = -INFINITY};
  double prev = NAN;
  for (size_t i = 0; i < ns; i++) {
    double x = v[i];
    if (isnan(x)) continue; /* staleness markers and NaN samples */
    if (r.count == 0) r.t_first = ts[i];
    r.t_last = ts[i];
    r.count += 1;
    r.sum += x;
    if (x < r.min) r.min = x;
    if (x > r.max) r.max = x;
    /* a drop means a counter reset: the new value is the increase since the reset */
    if (!isnan(prev)) r.increase += x >= prev ? x - prev : x;
    prev = x;
  }
  if (r.count == 0) return MD_OK;
  if (label_value(l, nl, "le")) r.flags |= ROW_LE;
  if (label_value(l, nl, "quantile")) r.flags |= ROW_QUANTILE;
  sb_reset(&st->tmp);
  if (st->format == SEED_FMT_JSON) json_labels(&st->tmp, l, nl, NULL, NULL);
  else text_labels(&st->tmp, l, nl, NULL, NULL);
  r.name = arena_strdup(st->arena, name);
  r.labels = arena_strndup(st->arena, st->tmp.buf ? st->tmp.buf : "", st->tmp.len);
  if (!r.name || !r.labels || st->tmp.oom) return MD_ENOMEM;
  if (st->n == st->cap) {
    size_t ncap = st->cap ? st->cap * 2 : 1024;
    agg_raw_t *nr = realloc(st->rows, ncap * sizeof *nr);
    if (!nr) return MD_ENOMEM;
    st->rows = nr;
    st->cap = ncap;
  }
  st->rows[st->n++] = r;
  return MD_OK;
}

static int cmp_agg_out(const void *a, const void *b) {
  const agg_out_t *x = a, *y = b;
  int c = strcmp(x->base, y->base);
  return c ? c : strcmp(x->labels, y->labels);
}

static const char *const agg_names[5] = {"avg", "sum", "min", "max", "count"};

static void agg_help(sb_t *sb, const agg_out_t *o, int agg, double window_s) {
  const char *what = o->base;
  switch (agg) {
  case 0:
    if (o->kind == KIND_COUNTER) sb_printf(sb, "Average %s per minute (rate) over the last %gs", what, window_s);
    else if (o->kind == KIND_DIST) sb_printf(sb, "Average %s per observation over the last %gs", what, window_s);
    else sb_printf(sb, "Average of %s over the last %gs", what, window_s);
    break;
  case 1:
    if (o->kind == KIND_COUNTER) sb_printf(sb, "Increase of %s over the last %gs", what, window_s);
    else if (o->kind == KIND_DIST) sb_printf(sb, "Sum of %s observations over the last %gs", what, window_s);
    else sb_printf(sb, "Sum of %s samples over the last %gs", what, window_s);
    break;
  case 2: sb_printf(sb, "Minimum of %s over the last %gs", what, window_s); break;
  case 3: sb_printf(sb, "Maximum of %s over the last %gs", what, window_s); break;
  default:
    if (o->kind == KIND_DIST) sb_printf(sb, "Number of %s observations in the last %gs", what, window_s);
    else sb_printf(sb, "Number of %s samples in the last %gs", what, window_s);
    break;
  }
}

static char *base_of(arena_t *a, const char *name, size_t suffix_len) {
  return arena_strndup(a, name, strlen(name) - suffix_len);
}

int seed_export_aggregated(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel,
                           const seed_export_options_t *o, sb_t *out, size_t *lines, char *err,
                           size_t errlen) {
  agg_scan_t st = {.format = o->format};
  agg_out_t *outs = NULL;
  size_t nouts = 0;
  u64map_t names = {0}, bases = {0}, dist = {0};
  int rc = MD_ENOMEM;
  size_t written = 0;
  st.arena = arena_new(0);
  if (!st.arena) goto fail;
  rc = scan(db, tenant, sel, nsel, o->now_ms - o->window_ms, o->now_ms, agg_collect, &st, err, errlen);
  if (rc) {
    if (rc == MD_ENOMEM) md_error(err, errlen, rc, "out of memory");
    goto fail;
  }
  rc = MD_ENOMEM;
  /* Histogram and summary bases: X with both X_sum and X_count stored (or declared). */
  for (size_t i = 0; i < st.n; i++)
    if (u64map_put(&names, hash_str(st.rows[i].name), i) < 0) goto fail;
  for (size_t i = 0; i < st.n; i++) {
    const char *nm = st.rows[i].name;
    size_t len = strlen(nm);
    if (!ends_with(nm, len, "_sum")) continue;
    char *b = base_of(st.arena, nm, 4), *cnt = b ? arena_alloc(st.arena, len + 2) : NULL;
    if (!cnt) goto fail;
    sprintf(cnt, "%s_count", b);
    if (u64map_find(&names, hash_str(cnt))) {
      if (u64map_put(&bases, hash_str(b), 0) < 0) goto fail;
    }
  }
  for (size_t i = 0; i < st.n; i++) {
    const char *nm = st.rows[i].name;
    size_t len = strlen(nm);
    if ((st.rows[i].flags & ROW_LE) && ends_with(nm, len, "_bucket")) {
      char *b = base_of(st.arena, nm, 7);
      if (!b) goto fail;
      size_t *hv = u64map_find(&bases, hash_str(b));
      if (hv) *hv = 1; /* has buckets: a histogram */
    }
  }

  outs = malloc((st.n ? st.n : 1) * sizeof *outs);
  if (!outs) goto fail;
  for (size_t i = 0; i < st.n; i++) {
    agg_raw_t *r = &st.rows[i];
    size_t len = strlen(r->name);
    if ((r->flags & ROW_LE) && ends_with(r->name, len, "_bucket")) {
      char *b = base_of(st.arena, r->name, 7);
      if (!b) goto fail;
      if (u64map_find(&bases, hash_str(b))) continue;
    }
    if ((r->flags & ROW_QUANTILE) && u64map_find(&bases, hash_str(r->name))) continue;
    size_t suffix = ends_with(r->name, len, "_sum") ? 4 : ends_with(r->name, len, "_count") ? 6 : 0;
    if (suffix) {
      char *b = base_of(st.arena, r->name, suffix);
      if (!b) goto fail;
      size_t *hv = u64map_find(&bases, hash_str(b));
      if (hv) {
        uint64_t k = md_hash_mix(hash_str(b), hash_str(r->labels));
        size_t *idx = u64map_find(&dist, k);
        agg_out_t *d;
        if (!idx) {
          if (u64map_put(&dist, k, nouts) < 0) goto fail;
          d = &outs[nouts++];
          memset(d, 0, sizeof *d);
          d->base = b;
          d->labels = r->labels;
          d->kind = KIND_DIST;
          d->histogram = *hv == 1;
          d->dsum = d->dcount = NAN;
        } else {
          d = &outs[*idx];
        }
        if (suffix == 4) d->dsum = r->increase;
        else d->dcount = r->increase;
        continue;
      }
    }
    agg_out_t *a = &outs[nouts++];
    a->base = r->name;
    a->labels = r->labels;
    a->histogram = false;
    a->v[2] = r->min;
    a->v[3] = r->max;
    a->v[4] = r->count;
    if (counter_like(o->types, r->name)) {
      a->kind = KIND_COUNTER;
      double span_min = (double)(r->t_last - r->t_first) / 60000.0;
      a->v[0] = (r->count >= 2 && span_min > 0) ? r->increase / span_min : NAN;
      a->v[1] = r->count >= 2 ? r->increase : NAN;
    } else {
      a->kind = KIND_GAUGE;
      a->v[0] = r->sum / r->count;
      a->v[1] = r->sum;
    }
  }
  for (size_t i = 0; i < nouts; i++) {
    agg_out_t *d = &outs[i];
    if (d->kind != KIND_DIST) continue;
    d->v[0] = (d->dcount > 0 && !isnan(d->dsum)) ? d->dsum / d->dcount : NAN;
    d->v[1] = d->dsum;
    d->v[2] = d->v[3] = NAN;
    d->v[4] = d->dcount;
  }
  qsort(outs, nouts, sizeof *outs, cmp_agg_out);

  double window_s = (double)o->window_ms / 1000.0;
  /* one allocation up front instead of a dozen doublings of a 30 MB buffer */
  size_t estimate = 0;
  for (size_t i = 0; i < nouts; i++) estimate += 5 * (strlen(outs[i].base) + strlen(outs[i].labels) + 32);
  sb_reserve(out, estimate);
  if (o->format == SEED_FMT_JSON) {
    for (size_t i = 0; i < nouts; i++) {
      const agg_out_t *a = &outs[i];
      if (written) sb_putc(out, ',');
      sb_puts(out, "{\"name\":");
      sb_json_str(out, a->base, strlen(a->base));
      sb_puts(out, ",\"type\":\"");
      sb_puts(out, a->kind == KIND_COUNTER ? "counter"
                   : a->kind == KIND_DIST  ? (a->histogram ? "histogram" : "summary")
                                           : "gauge");
      sb_puts(out, "\",\"labels\":");
      sb_puts(out, a->labels);
      sb_puts(out, ",\"aggregates\":{");
      bool first = true;
      for (int k = 0; k < 5; k++) {
        if (!(o->aggs & (1u << k)) || isnan(a->v[k])) continue;
        if (!first) sb_putc(out, ',');
        first = false;
        sb_printf(out, "\"%s\":", agg_names[k]);
        json_num(out, a->v[k]);
      }
      sb_puts(out, "}}");
      written++;
    }
  } else {
    for (size_t g = 0; g < nouts;) {
      size_t e = g + 1;
      while (e < nouts && strcmp(outs[e].base, outs[g].base) == 0) e++;
      for (int k = 0; k < 5; k++) {
        if (!(o->aggs & (1u << k))) continue;
        bool any = false;
        for (size_t i = g; i < e && !any; i++) any = !isnan(outs[i].v[k]);
        if (!any) continue;
        if (o->format == SEED_FMT_PROMETHEUS && out->len) sb_putc(out, '\n');
        sb_printf(out, "# HELP %s_%s ", outs[g].base, agg_names[k]);
        agg_help(out, &outs[g], k, window_s);
        sb_printf(out, "\n# TYPE %s_%s gauge\n", outs[g].base, agg_names[k]);
        for (size_t i = g; i < e; i++) {
          if (isnan(outs[i].v[k])) continue;
          sb_puts(out, outs[i].base);
          sb_putc(out, '_');
          sb_puts(out, agg_names[k]);
          sb_puts(out, outs[i].labels);
          sb_putc(out, ' ');
          put_value(out, outs[i].v[k]);
          sb_putc(out, '\n');
          written++;
        }
      }
      g = e;
    }
  }
  rc = out->oom ? md_error(err, errlen, MD_ENOMEM, "out of memory") : MD_OK;
fail:
  if (rc == MD_ENOMEM && err && !*err) md_error(err, errlen, rc, "out of memory");
  if (lines) *lines = written;
  free(outs);
  free(st.rows);
  sb_free(&st.tmp);
  u64map_free(&names);
  u64map_free(&bases);
  u64map_free(&dist);
  arena_free(st.arena);
  return rc;
}

/* ---- latest-value export --------------------------------------------------------------- */

typedef struct latest_row {
  const char *name, *labels, *child; /* labels: full; child: without le/quantile (text) */
  const char *family;
  const char *type;
  double sortnum, value;
  int64_t ts;
  unsigned flags;
  int order;
} latest_row_t;

typedef struct latest_scan {
  arena_t *arena;
  const seed_export_options_t *o;
  latest_row_t *rows;
  size_t n, cap;
  sb_t tmp;
} latest_scan_t;

static int latest_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                          const double *v, size_t ns) {
  latest_scan_t *st = ctx;
  const char *name = label_value(l, nl, "__name__");
  if (!name || ns == 0) return MD_OK;
  /* the last sample decides: a staleness marker means the series is gone */
  if (tsdb_is_stale_nan(v[ns - 1])) return MD_OK;
  if (st->o->skip_names && json_object_get(st->o->skip_names, name)) return MD_OK;
  latest_row_t r = {.value = v[ns - 1], .ts = ts[ns - 1]};
  const char *le = label_value(l, nl, "le"), *qt = label_value(l, nl, "quantile");
  if (le) {
    r.flags |= ROW_LE;
    r.sortnum = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
  } else if (qt) {
    r.flags |= ROW_QUANTILE;
    r.sortnum = strtod(qt, NULL);
  }
  r.name = arena_strdup(st->arena, name);
  sb_reset(&st->tmp);
  if (st->o->format == SEED_FMT_JSON) json_labels(&st->tmp, l, nl, NULL, NULL);
  else text_labels(&st->tmp, l, nl, NULL, NULL);
  r.labels = arena_strndup(st->arena, st->tmp.buf ? st->tmp.buf : "", st->tmp.len);
  sb_reset(&st->tmp);
  text_labels(&st->tmp, l, nl, "le", "quantile");
  r.child = arena_strndup(st->arena, st->tmp.buf ? st->tmp.buf : "", st->tmp.len);
  if (!r.name || !r.labels || !r.child || st->tmp.oom) return MD_ENOMEM;
  if (st->n == st->cap) {
    size_t ncap = st->cap ? st->cap * 2 : 1024;
    latest_row_t *nr = realloc(st->rows, ncap * sizeof *nr);
    if (!nr) return MD_ENOMEM;
    st->rows = nr;
    st->cap = ncap;
  }
  st->rows[st->n++] = r;
  return MD_OK;
}

static int cmp_latest(const void *a, const void *b) {
  const latest_row_t *x = a, *y = b;
  int c = strcmp(x->family, y->family);
  if (c) return c;
  if ((c = strcmp(x->child, y->child))) return c;
  if (x->order != y->order) return x->order < y->order ? -1 : 1;
  if (x->sortnum != y->sortnum) return x->sortnum < y->sortnum ? -1 : 1;
  return strcmp(x->labels, y->labels);
}

int seed_export_latest(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel,
                       const seed_export_options_t *o, sb_t *out, size_t *lines, char *err,
                       size_t errlen) {
  latest_scan_t st = {.o = o};
  u64map_t hist = {0}, summ = {0}, names = {0};
  size_t written = 0;
  int rc = MD_ENOMEM;
  st.arena = arena_new(0);
  if (!st.arena) goto fail;
  rc = scan(db, tenant, sel, nsel, o->now_ms - o->window_ms, o->now_ms, latest_collect, &st, err, errlen);
  if (rc) goto fail;
  rc = MD_ENOMEM;
  for (size_t i = 0; i < st.n; i++)
    if (u64map_put(&names, hash_str(st.rows[i].name), 0) < 0) goto fail;
  for (size_t i = 0; i < st.n; i++) {
    latest_row_t *r = &st.rows[i];
    size_t len = strlen(r->name);
    if ((r->flags & ROW_LE) && ends_with(r->name, len, "_bucket")) {
      char *b = base_of(st.arena, r->name, 7);
      if (!b || u64map_put(&hist, hash_str(b), 0) < 0) goto fail;
    }
    if (r->flags & ROW_QUANTILE) {
      char *s = arena_alloc(st.arena, len + 8);
      if (!s) goto fail;
      sprintf(s, "%s_sum", r->name);
      bool has = u64map_find(&names, hash_str(s)) != NULL;
      sprintf(s, "%s_count", r->name);
      has = has || u64map_find(&names, hash_str(s)) != NULL;
      if (has && u64map_put(&summ, hash_str(r->name), 0) < 0) goto fail;
    }
  }
  for (size_t i = 0; i < st.n; i++) {
    latest_row_t *r = &st.rows[i];
    size_t len = strlen(r->name);
    r->family = r->name;
    r->order = 0;
    if ((r->flags & ROW_LE) && ends_with(r->name, len, "_bucket")) {
      r->family = base_of(st.arena, r->name, 7);
      r->type = "histogram";
    } else if ((r->flags & ROW_QUANTILE) && u64map_find(&summ, hash_str(r->name))) {
      r->type = "summary";
    } else {
      size_t suffix = ends_with(r->name, len, "_sum") ? 4 : ends_with(r->name, len, "_count") ? 6 : 0;
      char *b = suffix ? base_of(st.arena, r->name, suffix) : NULL;
      if (suffix && !b) goto fail;
      if (b && u64map_find(&hist, hash_str(b))) {
        r->family = b, r->type = "histogram", r->order = suffix == 4 ? 1 : 2;
      } else if (b && u64map_find(&summ, hash_str(b))) {
        r->family = b, r->type = "summary", r->order = suffix == 4 ? 1 : 2;
      } else if (ends_with(r->name, len, "_total")) {
        r->type = "counter";
        /* OpenMetrics names the counter family without its _total sample suffix */
        if (o->format == SEED_FMT_OPENMETRICS) r->family = base_of(st.arena, r->name, 6);
        if (!r->family) goto fail;
      } else {
        r->type = "gauge";
      }
    }
    if (!r->family) goto fail;
  }
  qsort(st.rows, st.n, sizeof *st.rows, cmp_latest);

  for (size_t g = 0; g < st.n;) {
    size_t e = g + 1;
    while (e < st.n && strcmp(st.rows[e].family, st.rows[g].family) == 0) e++;
    if (o->format != SEED_FMT_JSON) {
      if (o->format == SEED_FMT_PROMETHEUS && out->len) sb_putc(out, '\n');
      sb_printf(out, "# HELP %s ", st.rows[g].family);
      help_text(out, st.rows[g].family);
      sb_printf(out, " (latest stored sample within the last %gs)\n", (double)o->window_ms / 1000.0);
      sb_printf(out, "# TYPE %s %s\n", st.rows[g].family, st.rows[g].type);
    }
    for (size_t i = g; i < e; i++) {
      const latest_row_t *r = &st.rows[i];
      if (o->format == SEED_FMT_JSON) {
        if (written) sb_putc(out, ',');
        sb_puts(out, "{\"name\":");
        sb_json_str(out, r->name, strlen(r->name));
        sb_printf(out, ",\"type\":\"%s\",\"labels\":%s,\"value\":", r->type, r->labels);
        json_num(out, r->value);
        sb_puts(out, ",\"timestamp\":");
        json_time(out, r->ts);
        sb_putc(out, '}');
      } else {
        sb_puts(out, r->name);
        sb_puts(out, r->labels);
        sb_putc(out, ' ');
        put_value(out, r->value);
        sb_putc(out, '\n');
      }
      written++;
    }
    g = e;
  }
  rc = out->oom ? md_error(err, errlen, MD_ENOMEM, "out of memory") : MD_OK;
fail:
  if (rc == MD_ENOMEM && err && !*err) md_error(err, errlen, rc, "out of memory");
  if (lines) *lines = written;
  free(st.rows);
  sb_free(&st.tmp);
  u64map_free(&hist);
  u64map_free(&summ);
  u64map_free(&names);
  arena_free(st.arena);
  return rc;
}

/* ---- filtering our own text expositions ------------------------------------------------- */

static void note_name(json_t *names, const char *p, size_t n) {
  char buf[512];
  if (!names || n == 0 || n >= sizeof buf) return;
  memcpy(buf, p, n);
  buf[n] = '\0';
  json_object_set_new(names, buf, json_true());
}

/* Parses `name{a="b",...} value` into labels (strings in a). Returns the label count
 * (including __name__) or -1 when the line is not a sample we understand. */
static int parse_sample_line(const char *p, size_t n, arena_t *a, tsdb_label_t *l, int max) {
  size_t i = 0;
  while (i < n && name_char(p[i], true)) i++;
  if (i == 0) return -1;
  int nl = 0;
  l[nl].name = "__name__";
  l[nl].value = arena_strndup(a, p, i);
  if (!l[nl++].value) return -1;
  if (i < n && p[i] == '{') {
    i++;
    while (i < n && p[i] != '}') {
      size_t b = i;
      while (i < n && name_char(p[i], false)) i++;
      if (i == b || i + 1 >= n || p[i] != '=' || p[i + 1] != '"' || nl >= max) return -1;
      char *name = arena_strndup(a, p + b, i - b);
      i += 2;
      sb_t v = {0};
      while (i < n && p[i] != '"') {
        if (p[i] == '\\' && i + 1 < n) {
          i++;
          sb_putc(&v, p[i] == 'n' ? '\n' : p[i]);
        } else {
          sb_putc(&v, p[i]);
        }
        i++;
      }
      char *value = arena_strndup(a, v.buf ? v.buf : "", v.len);
      sb_free(&v);
      if (i >= n || !name || !value) return -1;
      i++;
      l[nl].name = name;
      l[nl++].value = value;
      if (i < n && p[i] == ',') i++;
    }
  }
  return nl;
}

typedef struct family_block {
  sb_t text;
  char family[256];
  size_t kept;
  bool open;
} family_block_t;

static void block_flush(family_block_t *b, sb_t *out) {
  if (b->open && b->kept) sb_append(out, b->text.buf, b->text.len);
  sb_reset(&b->text);
  b->kept = 0;
  b->open = false;
  b->family[0] = '\0';
}

static bool sample_of_family(const char *name, size_t n, const char *family) {
  static const char *const suffixes[] = {"", "_bucket", "_sum", "_count", "_total", "_created",
                                         "_info", "_gcount", "_gsum"};
  size_t fl = strlen(family);
  if (fl == 0 || n < fl || memcmp(name, family, fl) != 0) return false;
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++)
    if (n - fl == strlen(suffixes[i]) && memcmp(name + fl, suffixes[i], n - fl) == 0) return true;
  return false;
}

size_t seed_filter_exposition(const char *text, size_t n, const seed_selector_t *sel, size_t nsel,
                              sb_t *out, json_t *names) {
  family_block_t b = {0};
  arena_t *a = nsel ? arena_new(0) : NULL;
  size_t kept = 0;
  for (size_t i = 0; i < n;) {
    size_t e = i;
    while (e < n && text[e] != '\n') e++;
    const char *line = text + i;
    size_t len = e - i;
    size_t next = e < n ? e + 1 : e;
    if (len >= 5 && memcmp(line, "# EOF", 5) == 0) {
      i = next;
      continue;
    }
    if (len > 7 && line[0] == '#' && (memcmp(line, "# HELP ", 7) == 0 || memcmp(line, "# TYPE ", 7) == 0 ||
                                      memcmp(line, "# UNIT ", 7) == 0)) {
      size_t nb = 7, ne = 7;
      while (ne < len && line[ne] != ' ') ne++;
      size_t fl = ne - nb;
      if (!b.open || strlen(b.family) != fl || memcmp(b.family, line + nb, fl) != 0) {
        block_flush(&b, out);
        b.open = true;
        if (fl < sizeof b.family) {
          memcpy(b.family, line + nb, fl);
          b.family[fl] = '\0';
        }
        note_name(names, line + nb, fl);
      }
      sb_append(&b.text, line, next - i);
      i = next;
      continue;
    }
    if (len == 0 || line[0] == '#') {
      if (!nsel) sb_append(out, line, next - i);
      else if (b.open && len) sb_append(&b.text, line, next - i);
      i = next;
      continue;
    }
    size_t nl = 0;
    while (nl < len && name_char(line[nl], true)) nl++;
    note_name(names, line, nl);
    if (!b.open || !sample_of_family(line, nl, b.family)) {
      /* a sample without HELP/TYPE: its own family */
      block_flush(&b, out);
      b.open = true;
      if (nl < sizeof b.family) {
        memcpy(b.family, line, nl);
        b.family[nl] = '\0';
      }
    }
    bool keep = true;
    if (nsel) {
      tsdb_label_t l[130];
      arena_reset(a);
      int cnt = a ? parse_sample_line(line, len, a, l, 130) : -1;
      keep = cnt > 0 && seed_selector_matches(sel, nsel, l, (size_t)cnt, b.family);
    }
    if (keep) {
      sb_append(&b.text, line, next - i);
      b.kept++;
      kept++;
    }
    i = next;
  }
  block_flush(&b, out);
  sb_free(&b.text);
  arena_free(a);
  return kept;
}

/* ---- request helpers ------------------------------------------------------------------ */

/* The registry behind POST /metrics/track, published by the ingest module. */
static ingest_track_t *seed_track(api_t *api) { return api_slot(api, "track"); }

/* Resolves the tenant; answers 403 when tenant_id asks for another tenant than the key's. */
static bool seed_tenant(http_req_t *req, http_resp_t *resp, const char **tenant) {
  const char *want = http_req_query(req, "tenant_id");
  if (want && *want && http_req_tenant_fixed(req) && strcmp(want, http_req_tenant(req)) != 0) {
    http_resp_error(resp, 403, "tenant_id %s is not the tenant of this API key", want);
    return false;
  }
  *tenant = api_tenant(req, want && *want ? want : NULL);
  return true;
}

/* Selectors from match[] plus name/service filters (ANDed into each). */
static bool seed_selectors(http_req_t *req, http_resp_t *resp, arena_t *a, const char *name,
                           seed_selector_t *sel, size_t *nsel) {
  char err[256] = "";
  const char *const *vals = NULL;
  size_t nv = http_req_query_all(req, "match[]", &vals);
  const char *service = http_req_query(req, "service");
  *nsel = 0;
  if (nv > SEED_MAX_SELECTORS) {
    http_resp_error(resp, 400, "too many match[] selectors (at most %d)", SEED_MAX_SELECTORS);
    return false;
  }
  for (size_t i = 0; i < nv; i++) {
    if (seed_parse_selector(vals[i], strlen(vals[i]), a, &sel[i], err, sizeof err)) {
      seed_selector_release(sel, i + 1);
      http_resp_error(resp, 400, "bad match[] %s: %s", vals[i], err);
      return false;
    }
  }
  size_t n = nv;
  bool extra = (name && *name) || (service && *service);
  if (extra && n == 0) {
    memset(&sel[0], 0, sizeof sel[0]);
    n = 1;
  }
  for (size_t i = 0; i < n && extra; i++) {
    int rc = 0;
    if (name && *name) rc = seed_selector_add(&sel[i], a, TSDB_MATCH_EQ, "__name__", name, err, sizeof err);
    if (!rc && service && *service)
      rc = seed_selector_add(&sel[i], a, TSDB_MATCH_EQ, "service", service, err, sizeof err);
    if (rc) {
      seed_selector_release(sel, n);
      http_resp_error(resp, 500, "%s", err);
      return false;
    }
  }
  *nsel = n;
  return true;
}

static bool parse_bool_param(http_req_t *req, http_resp_t *resp, const char *name, bool *out) {
  const char *v = http_req_query(req, name);
  *out = false;
  if (!v || !*v || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) return true;
  if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
    *out = true;
    return true;
  }
  http_resp_error(resp, 400, "%s must be true or false, not %s", name, v);
  return false;
}

static bool parse_duration_param(http_req_t *req, http_resp_t *resp, const char *name, int64_t *ms) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  if (md_parse_duration(v, strlen(v), ms) != 0 || *ms <= 0) {
    http_resp_error(resp, 400, "%s: bad duration %s (use 300, 5m, 1h30m)", name, v);
    return false;
  }
  return true;
}

static bool parse_int_param(http_req_t *req, http_resp_t *resp, const char *name, long lo, long hi,
                            long *out) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi) {
    http_resp_error(resp, 400, "%s must be an integer from %ld to %ld, not %s", name, lo, hi, v);
    return false;
  }
  *out = x;
  return true;
}

static bool parse_time_param(http_req_t *req, http_resp_t *resp, const char *name, int64_t *ms) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  if (md_parse_time(v, strlen(v), ms) != 0) {
    http_resp_error(resp, 400, "%s: bad time %s (RFC 3339 or Unix seconds)", name, v);
    return false;
  }
  return true;
}

/* name → type of the tenant's tracked metrics (for counter detection); NULL without one. */
static json_t *tracked_types(api_t *api, const char *tenant) {
  ingest_track_t *reg = seed_track(api);
  if (!reg) return NULL;
  sb_t sb = {0};
  json_t *types = NULL, *arr = NULL;
  if (ingest_track_expose(reg, tenant, &sb, INGEST_EXPOSE_JSON) != 0 || sb.oom || !sb.buf) goto out;
  arr = json_loadb(sb.buf, sb.len, 0, NULL);
  if (!json_is_array(arr) || !(types = json_object())) goto out;
  size_t i;
  json_t *item;
  json_array_foreach(arr, i, item) {
    const char *name = json_string_value(json_object_get(item, "name"));
    json_t *type = json_object_get(item, "type");
    if (name && json_is_string(type)) json_object_set(types, name, type);
  }
out:
  json_decref(arr);
  sb_free(&sb);
  return types;
}

static void count_exported(api_t *api, size_t n) {
  metrics_counter_t *c = metrics_counter(api_metrics(api), "metrics_exported_total",
                                         "Total metrics exported", NULL);
  metrics_counter_add(c, (double)n);
  metrics_gauge_t *g = metrics_gauge(api_metrics(api), "metrics_last_export_timestamp_seconds",
                                     "Unix time of the last GET /metrics export", NULL);
  metrics_gauge_set(g, (double)md_now_ms() / 1000.0);
}

/* ---- GET /metrics --------------------------------------------------------------------- */

static bool export_format(http_req_t *req, http_resp_t *resp, seed_format_t *fmt) {
  const char *f = http_req_query(req, "format");
  if (f && *f) {
    if (strcmp(f, "prometheus") == 0 || strcmp(f, "text") == 0) *fmt = SEED_FMT_PROMETHEUS;
    else if (strcmp(f, "openmetrics") == 0) *fmt = SEED_FMT_OPENMETRICS;
    else if (strcmp(f, "json") == 0) *fmt = SEED_FMT_JSON;
    else {
      http_resp_error(resp, 400, "format must be prometheus, openmetrics or json, not %s", f);
      return false;
    }
    return true;
  }
  const char *accept = http_req_header(req, "Accept");
  *fmt = SEED_FMT_PROMETHEUS;
  if (accept && strstr(accept, "application/openmetrics-text")) *fmt = SEED_FMT_OPENMETRICS;
  else if (accept && strstr(accept, "application/json") && !strstr(accept, "text/plain"))
    *fmt = SEED_FMT_JSON;
  return true;
}

typedef struct self_json {
  const seed_selector_t *sel;
  size_t nsel;
  sb_t *out;
  size_t *written;
  json_t *names;
} self_json_t;

static void self_json_sample(void *ctx, const char *name, const char *const *kv, size_t npairs,
                             double value) {
  self_json_t *s = ctx;
  tsdb_label_t l[65];
  size_t nl = 0;
  l[nl++] = (tsdb_label_t){"__name__", name};
  for (size_t i = 0; i < npairs && nl < 65; i++) l[nl++] = (tsdb_label_t){kv[2 * i], kv[2 * i + 1]};
  if (s->names) json_object_set_new(s->names, name, json_true());
  if (!seed_selector_matches(s->sel, s->nsel, l, nl, NULL)) return;
  if (*s->written) sb_putc(s->out, ',');
  sb_puts(s->out, "{\"name\":");
  sb_json_str(s->out, name, strlen(name));
  sb_printf(s->out, ",\"type\":\"%s\",\"labels\":", seed_metric_type(NULL, name));
  json_labels(s->out, l, nl, NULL, NULL);
  sb_puts(s->out, ",\"value\":");
  json_num(s->out, value);
  sb_putc(s->out, '}');
  (*s->written)++;
}

/* Tracked metrics as JSON items, filtered; their names (with every sample suffix) noted. */
static void tracked_json(ingest_track_t *reg, const char *tenant, const seed_selector_t *sel,
                         size_t nsel, sb_t *out, size_t *written, json_t *names) {
  sb_t sb = {0};
  json_t *arr = NULL;
  if (ingest_track_expose(reg, tenant, &sb, INGEST_EXPOSE_JSON) != 0 || !sb.buf) goto out;
  if (!(arr = json_loadb(sb.buf, sb.len, 0, NULL)) || !json_is_array(arr)) goto out;
  size_t i;
  json_t *item;
  json_array_foreach(arr, i, item) {
    const char *name = json_string_value(json_object_get(item, "name"));
    if (!name) continue;
    static const char *const sfx[] = {"", "_bucket", "_sum", "_count", "_total"};
    for (size_t k = 0; k < 5; k++) {
      char buf[512];
      snprintf(buf, sizeof buf, "%s%s", name, sfx[k]);
      json_object_set_new(names, buf, json_true());
    }
    tsdb_label_t l[130];
    size_t nl = 0;
    l[nl++] = (tsdb_label_t){"__name__", name};
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(item, "labels"), k, v) {
      if (nl < 130 && json_is_string(v)) l[nl++] = (tsdb_label_t){k, json_string_value(v)};
    }
    if (!seed_selector_matches(sel, nsel, l, nl, NULL)) continue;
    char *dump = json_dumps(item, JSON_COMPACT);
    if (!dump) continue;
    if (*written) sb_putc(out, ',');
    sb_puts(out, dump);
    free(dump);
    (*written)++;
  }
out:
  json_decref(arr);
  sb_free(&sb);
}

static void handle_export(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *tenant;
  seed_format_t fmt;
  bool aggregated;
  if (!seed_tenant(req, resp, &tenant) || !export_format(req, resp, &fmt) ||
      !parse_bool_param(req, resp, "aggregated", &aggregated))
    return;
  int64_t window_ms = cfg && cfg->aggregation.window_seconds > 0 ? cfg->aggregation.window_seconds * 1000 : 300000;
  if (!parse_duration_param(req, resp, "window", &window_ms)) return;
  unsigned aggs = 0;
  const char *types_param = http_req_query(req, "types");
  if (types_param && *types_param) {
    for (const char *p = types_param; *p;) {
      const char *c = strchr(p, ',');
      size_t len = c ? (size_t)(c - p) : strlen(p);
      unsigned bit = seed_agg_parse(p, len);
      if (!bit) {
        http_resp_error(resp, 400, "types: unknown aggregation %.*s (avg, sum, min, max, count)", (int)len, p);
        return;
      }
      aggs |= bit;
      p += len + (c ? 1 : 0);
    }
  } else if (cfg && cfg->aggregation.n_types) {
    for (size_t i = 0; i < cfg->aggregation.n_types; i++)
      aggs |= seed_agg_parse(cfg->aggregation.types[i], strlen(cfg->aggregation.types[i]));
  }
  if (!aggs) aggs = SEED_AGG_AVG | SEED_AGG_SUM | SEED_AGG_MIN | SEED_AGG_MAX | SEED_AGG_COUNT;

  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, http_req_query(req, "name"), sel, &nsel)) return;

  json_t *types = tracked_types(api, tenant);
  json_t *names = json_object();
  sb_t *body = http_resp_body(resp);
  sb_t part = {0};
  char err[256] = "";
  size_t total = 0, n = 0;
  int64_t now = md_now_ms();
  seed_export_options_t o = {.now_ms = now, .window_ms = window_ms, .aggs = aggs, .format = fmt,
                             .types = types, .skip_names = names};
  int rc = MD_OK;
  bool self = !cfg || !cfg->server.self_tenant || strcmp(tenant, cfg->server.self_tenant) == 0;
  ingest_track_t *reg = seed_track(api);
  if (!names) {
    rc = md_error(err, sizeof err, MD_ENOMEM, "out of memory");
    goto done;
  }

  if (fmt == SEED_FMT_JSON) {
    sb_puts(body, aggregated ? "{\"window_seconds\":" : "{\"metrics\":[");
    if (aggregated) {
      sb_double(body, (double)window_ms / 1000.0);
      sb_puts(body, ",\"metrics\":[");
      rc = seed_export_aggregated(api_db(api), tenant, sel, nsel, &o, body, &total, err, sizeof err);
    } else {
      if (reg) tracked_json(reg, tenant, sel, nsel, body, &total, names);
      if (self) {
        self_json_t sj = {sel, nsel, body, &total, names};
        metrics_foreach(api_metrics(api), self_json_sample, &sj);
      }
      sb_reset(&part);
      rc = seed_export_latest(api_db(api), tenant, sel, nsel, &(seed_export_options_t){
          .now_ms = now, .window_ms = SEED_LOOKBACK_MS, .format = fmt, .types = types,
          .skip_names = names}, &part, &n, err, sizeof err);
      if (!rc && n) {
        if (total) sb_putc(body, ',');
        sb_append(body, part.buf, part.len);
        total += n;
      }
    }
    sb_printf(body, "],\"total\":%zu,\"timestamp\":", total);
    json_time(body, now);
    sb_putc(body, '}');
    http_resp_content_type(resp, "application/json");
  } else {
    if (aggregated) {
      rc = seed_export_aggregated(api_db(api), tenant, sel, nsel, &o, body, &total, err, sizeof err);
    } else {
      metrics_format_t mf = fmt == SEED_FMT_OPENMETRICS ? METRICS_FMT_OPENMETRICS : METRICS_FMT_PROMETHEUS;
      if (reg && ingest_track_expose(reg, tenant, &part,
                                     fmt == SEED_FMT_OPENMETRICS ? INGEST_EXPOSE_OPENMETRICS
                                                                 : INGEST_EXPOSE_PROMETHEUS) == 0)
        total += seed_filter_exposition(part.buf ? part.buf : "", part.len, sel, nsel, body, names);
      sb_reset(&part);
      if (self && metrics_expose(api_metrics(api), &part, mf) == 0)
        total += seed_filter_exposition(part.buf ? part.buf : "", part.len, sel, nsel, body, names);
      sb_reset(&part);
      o.window_ms = SEED_LOOKBACK_MS;
      rc = seed_export_latest(api_db(api), tenant, sel, nsel, &o, &part, &n, err, sizeof err);
      if (!rc && part.len) {
        if (fmt == SEED_FMT_PROMETHEUS && body->len && body->buf[body->len - 1] == '\n' &&
            !(body->len >= 2 && body->buf[body->len - 2] == '\n'))
          sb_putc(body, '\n');
        sb_append(body, part.buf, part.len);
      }
      total += n;
    }
    if (fmt == SEED_FMT_OPENMETRICS) {
      sb_puts(body, "# EOF\n");
      http_resp_content_type(resp, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    } else {
      http_resp_content_type(resp, "text/plain; version=0.0.4; charset=utf-8");
    }
  }
done:
  sb_free(&part);
  json_decref(types);
  json_decref(names);
  seed_selector_release(sel, nsel);
  if (rc) {
    sb_reset(body);
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "export failed: %s", err);
    return;
  }
  if (body->oom) {
    sb_reset(body);
    http_resp_error(resp, 500, "out of memory");
    return;
  }
  count_exported(api, total);
}

/* ---- GET /metrics/series --------------------------------------------------------------- */

typedef struct page_entry {
  char *key;  /* canonical label-set key (ordering, cursor) */
  size_t keylen;
  char *json; /* rendered series object */
} page_entry_t;

typedef struct series_scan {
  const char *tenant;
  json_t *types;
  const char *cursor;
  size_t cursor_len;
  size_t limit, max_points;
  page_entry_t *page;
  size_t npage;
  size_t total;
  bool more;
  sb_t key, json;
} series_scan_t;

static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  if (c) return c;
  return an < bn ? -1 : an > bn;
}

static void render_series(series_scan_t *st, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                          const double *v, size_t ns) {
  sb_t *j = &st->json;
  const char *name = label_value(l, nl, "__name__");
  const char *service = label_value(l, nl, "service");
  sb_reset(j);
  sb_puts(j, "{\"name\":");
  sb_json_str(j, name ? name : "", name ? strlen(name) : 0);
  sb_printf(j, ",\"type\":\"%s\",\"labels\":", seed_metric_type(st->types, name ? name : ""));
  json_labels(j, l, nl, "service", NULL);
  sb_puts(j, ",\"service\":");
  if (service) sb_json_str(j, service, strlen(service));
  else sb_puts(j, "null");
  sb_puts(j, ",\"tenant_id\":");
  sb_json_str(j, st->tenant, strlen(st->tenant));
  sb_puts(j, ",\"points\":[");
  /* the newest max_points samples */
  size_t kept = 0, start = 0;
  size_t live = 0;
  for (size_t i = 0; i < ns; i++) live += !tsdb_is_stale_nan(v[i]);
  if (st->max_points && live > st->max_points) {
    size_t drop = live - st->max_points;
    while (drop) {
      if (!tsdb_is_stale_nan(v[start])) drop--;
      start++;
    }
  }
  for (size_t i = start; i < ns; i++) {
    if (tsdb_is_stale_nan(v[i])) continue;
    if (kept++) sb_putc(j, ',');
    sb_puts(j, "{\"value\":");
    json_num(j, v[i]);
    sb_puts(j, ",\"timestamp\":");
    json_time(j, ts[i]);
    sb_putc(j, '}');
  }
  sb_puts(j, "]}");
}

static int series_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                          const double *v, size_t ns) {
  series_scan_t *st = ctx;
  size_t live = 0;
  for (size_t i = 0; i < ns; i++) live += !tsdb_is_stale_nan(v[i]);
  if (!live) return MD_OK;
  st->total++;
  sb_reset(&st->key);
  for (size_t i = 0; i < nl; i++) {
    sb_puts(&st->key, l[i].name);
    sb_putc(&st->key, '\x01');
    sb_puts(&st->key, l[i].value);
    sb_putc(&st->key, '\x02');
  }
  if (st->key.oom) return MD_ENOMEM;
  const char *k = st->key.buf ? st->key.buf : "";
  size_t kl = st->key.len;
  if (st->cursor && key_cmp(k, kl, st->cursor, st->cursor_len) <= 0) return MD_OK;
  /* keep the `limit` smallest keys after the cursor, sorted */
  if (st->npage == st->limit) {
    st->more = true;
    if (key_cmp(k, kl, st->page[st->npage - 1].key, st->page[st->npage - 1].keylen) >= 0) return MD_OK;
    free(st->page[st->npage - 1].key);
    free(st->page[st->npage - 1].json);
    st->npage--;
  }
  size_t pos = st->npage;
  while (pos > 0 && key_cmp(k, kl, st->page[pos - 1].key, st->page[pos - 1].keylen) < 0) pos--;
  render_series(st, l, nl, ts, v, ns);
  if (st->json.oom) return MD_ENOMEM;
  page_entry_t e = {malloc(kl + 1), kl, strdup(st->json.buf)};
  if (!e.key || !e.json) {
    free(e.key);
    free(e.json);
    return MD_ENOMEM;
  }
  memcpy(e.key, k, kl + 1);
  memmove(&st->page[pos + 1], &st->page[pos], (st->npage - pos) * sizeof *st->page);
  st->page[pos] = e;
  st->npage++;
  return MD_OK;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void base64url_encode(sb_t *out, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    sb_putc(out, b64url[(v >> 18) & 63]);
    sb_putc(out, b64url[(v >> 12) & 63]);
    if (i + 1 < n) sb_putc(out, b64url[(v >> 6) & 63]);
    if (i + 2 < n) sb_putc(out, b64url[v & 63]);
  }
}

static int base64url_decode(const char *s, size_t n, sb_t *out) {
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = memchr(b64url, s[i], 64);
    if (!p || !s[i]) return -1;
    acc = (acc << 6) | (uint32_t)(p - b64url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      sb_putc(out, (char)((acc >> bits) & 0xff));
    }
  }
  return out->oom ? -1 : 0;
}

static void handle_series(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *tenant;
  if (!seed_tenant(req, resp, &tenant)) return;
  long limit = 100;
  int64_t now = md_now_ms(), end = now, start;
  if (!parse_int_param(req, resp, "limit", 1, SEED_MAX_LIMIT, &limit) ||
      !parse_time_param(req, resp, "end", &end))
    return;
  start = end - 3600 * 1000;
  if (!parse_time_param(req, resp, "start", &start)) return;
  if (start > end) {
    http_resp_error(resp, 400, "start must not be after end");
    return;
  }
  series_scan_t st = {.tenant = tenant, .limit = (size_t)limit};
  st.max_points = cfg ? cfg->limits.max_points_per_series : 1000;
  sb_t cursor = {0};
  const char *cur = http_req_query(req, "cursor");
  if (cur && *cur) {
    if (base64url_decode(cur, strlen(cur), &cursor) != 0 || cursor.len == 0) {
      sb_free(&cursor);
      http_resp_error(resp, 400, "bad cursor");
      return;
    }
    st.cursor = cursor.buf;
    st.cursor_len = cursor.len;
  }
  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, http_req_query(req, "name"), sel, &nsel)) {
    sb_free(&cursor);
    return;
  }
  st.page = calloc((size_t)limit, sizeof *st.page);
  st.types = tracked_types(api, tenant);
  char err[256] = "";
  int rc = st.page ? scan(api_db(api), tenant, sel, nsel, start, end, series_collect, &st, err, sizeof err)
                   : MD_ENOMEM;
  if (rc == MD_ENOMEM && !*err) md_error(err, sizeof err, rc, "out of memory");
  sb_t *body = http_resp_body(resp);
  if (rc == MD_OK) {
    sb_puts(body, "{\"series\":[");
    for (size_t i = 0; i < st.npage; i++) {
      if (i) sb_putc(body, ',');
      sb_puts(body, st.page[i].json);
    }
    sb_printf(body, "],\"total\":%zu,\"timestamp\":", st.total);
    json_time(body, now);
    if (st.more && st.npage) {
      sb_puts(body, ",\"next_cursor\":\"");
      base64url_encode(body, (const unsigned char *)st.page[st.npage - 1].key, st.page[st.npage - 1].keylen);
      sb_putc(body, '"');
    }
    sb_putc(body, '}');
    if (body->oom) rc = md_error(err, sizeof err, MD_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < st.npage; i++) {
    free(st.page[i].key);
    free(st.page[i].json);
  }
  free(st.page);
  sb_free(&st.key);
  sb_free(&st.json);
  sb_free(&cursor);
  json_decref(st.types);
  seed_selector_release(sel, nsel);
  if (rc) {
    sb_reset(body);
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "%s", err);
  }
}

/* ---- GET /metrics/trends/{name} --------------------------------------------------------- */

typedef struct trend_series {
  char *labels; /* JSON object */
  double *vals; /* nsteps, NaN = no data */
} trend_series_t;

typedef struct trend_scan {
  int64_t start, step;
  size_t nsteps;
  bool counter;
  int aggregate; /* 0 none, 1 sum, 2 avg */
  double *agg_sum, *agg_cnt;
  trend_series_t *series;
  size_t nseries;
  double *tmp_sum, *tmp_cnt;
  bool too_many;
  sb_t sb;
} trend_scan_t;

/* Per-step values of one series: the mean for gauges; for counters the per-second rate of
 * the increase whose later sample falls in the step (resets handled). */
static void step_values(const trend_scan_t *st, const int64_t *ts, const double *v, size_t ns, double *out) {
  for (size_t i = 0; i < st->nsteps; i++) st->tmp_sum[i] = 0, st->tmp_cnt[i] = 0;
  double prev = NAN;
  for (size_t i = 0; i < ns; i++) {
    double x = v[i];
    if (isnan(x)) continue;
    double p = prev;
    prev = x;
    if (ts[i] < st->start) continue;
    size_t b = (size_t)((ts[i] - st->start) / st->step);
    if (b >= st->nsteps) continue;
    if (st->counter) {
      if (isnan(p)) continue;
      st->tmp_sum[b] += x >= p ? x - p : x;
      st->tmp_cnt[b] = 1;
    } else {
      st->tmp_sum[b] += x;
      st->tmp_cnt[b] += 1;
    }
  }
  for (size_t i = 0; i < st->nsteps; i++) {
    if (!st->tmp_cnt[i]) out[i] = NAN;
    else if (st->counter) out[i] = st->tmp_sum[i] / ((double)st->step / 1000.0);
    else out[i] = st->tmp_sum[i] / st->tmp_cnt[i];
  }
}

static int trend_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                         const double *v, size_t ns) {
  trend_scan_t *st = ctx;
  if (st->aggregate) {
    double *vals = st->tmp_sum + st->nsteps; /* second half of the scratch */
    step_values(st, ts, v, ns, vals);
    for (size_t i = 0; i < st->nsteps; i++) {
      if (isnan(vals[i])) continue;
      st->agg_sum[i] += vals[i];
      st->agg_cnt[i] += 1;
    }
    return MD_OK;
  }
  if (st->nseries >= SEED_MAX_TREND_SERIES) {
    st->too_many = true;
    return MD_ELIMIT;
  }
  trend_series_t *t = &st->series[st->nseries];
  t->vals = malloc(st->nsteps * sizeof *t->vals);
  sb_reset(&st->sb);
  json_labels(&st->sb, l, nl, NULL, NULL);
  t->labels = st->sb.oom ? NULL : strdup(st->sb.buf);
  if (!t->vals || !t->labels) {
    free(t->vals);
    free(t->labels);
    return MD_ENOMEM;
  }
  st->nseries++;
  step_values(st, ts, v, ns, t->vals);
  return MD_OK;
}

/* Writes the trend fields of one series of per-step values (NaN = empty step). */
static void trend_body(sb_t *b, const double *vals, size_t nsteps, int64_t start, int64_t step,
                       size_t horizon) {
  size_t n = 0, first = SIZE_MAX, last = 0;
  for (size_t i = 0; i < nsteps; i++)
    if (!isnan(vals[i])) {
      n++;
      if (first == SIZE_MAX) first = i;
      last = i;
    }
  double *x = malloc((n ? n : 1) * sizeof *x), *y = malloc((n ? n : 1) * sizeof *y);
  size_t span = n ? last - first + 1 : 0;
  double *dense = malloc((span ? span : 1) * sizeof *dense);
  analytics_forecast_point_t *fc = malloc((horizon ? horizon : 1) * sizeof *fc);
  if (!x || !y || !dense || !fc) {
    b->oom = true;
    goto out;
  }
  size_t k = 0;
  for (size_t i = 0; i < nsteps; i++)
    if (!isnan(vals[i])) {
      x[k] = (double)((int64_t)i * step) / 3600000.0; /* hours since start */
      y[k++] = vals[i];
    }
  analytics_mk_t mk;
  bool have_mk = n >= 3 && analytics_mann_kendall(x, y, n, &mk) == MD_OK;
  sb_printf(b, ",\"trend\":\"%s\"", have_mk ? analytics_trend_name(mk.trend) : "stable");
  double cp = n ? analytics_change_percent(y[0], y[n - 1]) : NAN;
  if (isfinite(cp)) cp = round(cp * 100.0) / 100.0;
  sb_puts(b, ",\"change_percent\":");
  json_num(b, cp);
  sb_puts(b, ",\"data_points\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(b, ',');
    sb_puts(b, "{\"timestamp\":");
    json_time(b, start + (int64_t)llround(x[i] * 3600000.0));
    sb_puts(b, ",\"value\":");
    json_num(b, y[i]);
    sb_putc(b, '}');
  }
  sb_puts(b, "],\"slope_per_hour\":");
  json_num(b, have_mk ? mk.sen_slope : NAN);
  sb_puts(b, ",\"confidence\":");
  json_num(b, have_mk ? 1.0 - mk.p_value : NAN);
  sb_puts(b, ",\"p_value\":");
  json_num(b, have_mk ? mk.p_value : NAN);
  sb_printf(b, ",\"significance\":%g,\"test\":\"mann_kendall\"", ANALYTICS_TREND_ALPHA);
  analytics_linreg_t lr;
  if (n >= 3 && analytics_linreg(x, y, n, 0.95, &lr) == MD_OK) {
    sb_puts(b, ",\"regression\":{\"slope_per_hour\":");
    json_num(b, lr.slope);
    sb_puts(b, ",\"slope_lower\":");
    json_num(b, lr.slope_lo);
    sb_puts(b, ",\"slope_upper\":");
    json_num(b, lr.slope_hi);
    sb_puts(b, ",\"r2\":");
    json_num(b, lr.r2);
    sb_puts(b, "}");
  }

  /* Forecast on the gap-free stretch from the first to the last non-empty step; empty
   * steps inside it are filled by linear interpolation (the models need even spacing). */
  sb_puts(b, ",\"forecast\":");
  if (span < 3 || horizon == 0) {
    sb_puts(b, "null");
    goto out;
  }
  for (size_t i = 0, prev = first; i < span; i++) {
    size_t s = first + i;
    if (!isnan(vals[s])) {
      dense[i] = vals[s];
      prev = s;
      continue;
    }
    size_t nx = s + 1;
    while (isnan(vals[nx])) nx++;
    double f = (double)(s - prev) / (double)(nx - prev);
    dense[i] = vals[prev] + f * (vals[nx] - vals[prev]);
  }
  size_t period = 0;
  if (86400000 % step == 0 && 86400000 / step >= 2) period = (size_t)(86400000 / step);
  analytics_fit_t fit;
  if (analytics_forecast_auto(dense, span, period, horizon, 0.95, fc, &fit) != MD_OK) {
    sb_puts(b, "null");
    goto out;
  }
  sb_printf(b, "{\"model\":\"%s\",\"confidence_level\":0.95,\"rmse\":", analytics_model_name(fit.model));
  json_num(b, fit.rmse);
  if (fit.model == ANALYTICS_MODEL_HOLT_WINTERS)
    sb_printf(b, ",\"season_steps\":%zu,\"alpha\":%g,\"beta\":%g,\"gamma\":%g", fit.period, fit.alpha,
              fit.beta, fit.gamma);
  sb_puts(b, ",\"points\":[");
  for (size_t h = 0; h < horizon; h++) {
    if (h) sb_putc(b, ',');
    sb_puts(b, "{\"timestamp\":");
    json_time(b, start + (int64_t)(last + 1 + h) * step);
    sb_puts(b, ",\"value\":");
    json_num(b, fc[h].value);
    sb_puts(b, ",\"lower\":");
    json_num(b, fc[h].lower);
    sb_puts(b, ",\"upper\":");
    json_num(b, fc[h].upper);
    sb_putc(b, '}');
  }
  sb_puts(b, "]}");
out:
  free(x);
  free(y);
  free(dense);
  free(fc);
}

static int trend_scan_init(trend_scan_t *st, int64_t start, int64_t step, size_t nsteps, int aggregate,
                           bool counter) {
  memset(st, 0, sizeof *st);
  st->start = start;
  st->step = step;
  st->nsteps = nsteps;
  st->aggregate = aggregate;
  st->counter = counter;
  st->tmp_sum = malloc(3 * nsteps * sizeof *st->tmp_sum);
  st->tmp_cnt = malloc(nsteps * sizeof *st->tmp_cnt);
  st->agg_sum = calloc(nsteps, sizeof *st->agg_sum);
  st->agg_cnt = calloc(nsteps, sizeof *st->agg_cnt);
  st->series = aggregate ? NULL : calloc(SEED_MAX_TREND_SERIES, sizeof *st->series);
  if (!st->tmp_sum || !st->tmp_cnt || !st->agg_sum || !st->agg_cnt || (!aggregate && !st->series))
    return MD_ENOMEM;
  return MD_OK;
}

static void trend_scan_free(trend_scan_t *st) {
  for (size_t i = 0; i < st->nseries; i++) {
    free(st->series[i].vals);
    free(st->series[i].labels);
  }
  free(st->series);
  free(st->tmp_sum);
  free(st->tmp_cnt);
  free(st->agg_sum);
  free(st->agg_cnt);
  sb_free(&st->sb);
  memset(st, 0, sizeof *st);
}

static bool trend_scan_empty(const trend_scan_t *st) {
  if (!st->aggregate) return st->nseries == 0;
  for (size_t i = 0; i < st->nsteps; i++)
    if (st->agg_cnt[i] > 0) return false;
  return true;
}

/* out = sum / count per step (rates of _sum over rates of _count): per matching label set,
 * or over the aggregated totals. out must be empty (freshly initialised). */
static int trend_pair_ratio(const trend_scan_t *sum, const trend_scan_t *cnt, trend_scan_t *out) {
  if (out->aggregate) {
    for (size_t i = 0; i < out->nsteps; i++) {
      bool ok = sum->agg_cnt[i] > 0 && cnt->agg_cnt[i] > 0 && cnt->agg_sum[i] > 0;
      out->agg_sum[i] = ok ? sum->agg_sum[i] / cnt->agg_sum[i] : 0;
      out->agg_cnt[i] = ok ? 1 : 0;
    }
    return MD_OK;
  }
  for (size_t i = 0; i < sum->nseries; i++) {
    const trend_series_t *c = NULL;
    for (size_t j = 0; j < cnt->nseries && !c; j++)
      if (strcmp(cnt->series[j].labels, sum->series[i].labels) == 0) c = &cnt->series[j];
    if (!c) continue;
    trend_series_t *t = &out->series[out->nseries];
    t->vals = malloc(out->nsteps * sizeof *t->vals);
    t->labels = strdup(sum->series[i].labels);
    if (!t->vals || !t->labels) {
      free(t->vals);
      free(t->labels);
      return MD_ENOMEM;
    }
    out->nseries++;
    for (size_t k = 0; k < out->nsteps; k++) {
      double a = sum->series[i].vals[k], b = c->vals[k];
      t->vals[k] = (!isnan(a) && !isnan(b) && b > 0) ? a / b : NAN;
    }
  }
  return MD_OK;
}

static void handle_trends(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *name = http_req_param(req, "name");
  const char *tenant;
  if (!name || !*name || strlen(name) > 255) {
    http_resp_error(resp, 400, "a metric name is required: /metrics/trends/{name}");
    return;
  }
  for (const char *p = name; *p; p++)
    if (!name_char(*p, true) || (p == name && !name_start(*p, true))) {
      http_resp_error(resp, 400, "invalid metric name %s", name);
      return;
    }
  if (!seed_tenant(req, resp, &tenant)) return;
  double hours = cfg && cfg->aggregation.trend_hours > 0 ? (double)cfg->aggregation.trend_hours : 24.0;
  const char *hv = http_req_query(req, "hours");
  if (hv && *hv) {
    char *end;
    hours = strtod(hv, &end);
    if (*end || !(hours > 0) || hours > 24.0 * 3660) {
      http_resp_error(resp, 400, "hours must be a number above 0 (at most 87840), not %s", hv);
      return;
    }
  }
  int64_t step = 3600000, endt = md_now_ms();
  long horizon = 6;
  if (!parse_duration_param(req, resp, "step", &step) || !parse_time_param(req, resp, "end", &endt) ||
      !parse_int_param(req, resp, "forecast", 0, SEED_MAX_FORECAST, &horizon))
    return;
  if (step < 1000) {
    http_resp_error(resp, 400, "step must be at least 1s");
    return;
  }
  int64_t range = (int64_t)llround(hours * 3600000.0);
  size_t nsteps = (size_t)((range + step - 1) / step);
  if (nsteps > SEED_MAX_TREND_STEPS || nsteps == 0) {
    http_resp_error(resp, 400, "hours/step gives %zu steps; at most %d (raise step)", nsteps,
                    SEED_MAX_TREND_STEPS);
    return;
  }
  int aggregate = 0;
  const char *ag = http_req_query(req, "aggregate");
  if (ag && *ag) {
    if (strcmp(ag, "sum") == 0) aggregate = 1;
    else if (strcmp(ag, "avg") == 0) aggregate = 2;
    else {
      http_resp_error(resp, 400, "aggregate must be sum or avg, not %s", ag);
      return;
    }
  }
  const char *type = http_req_query(req, "type");
  if (type && *type && strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0) {
    http_resp_error(resp, 400, "type must be counter or gauge, not %s", type);
    return;
  }

  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, name, sel, &nsel)) return;
  json_t *types = tracked_types(api, tenant);
  int64_t start = endt - (int64_t)nsteps * step;
  trend_scan_t st, ssum, scnt;
  bool counter = type && *type ? strcmp(type, "counter") == 0 : counter_like(types, name);
  const char *value_type = counter ? "rate_per_second" : "average";
  char err[256] = "";
  int rc = trend_scan_init(&st, start, step, nsteps, aggregate, counter);
  int rc2 = trend_scan_init(&ssum, start, step, nsteps, aggregate ? 1 : 0, true);
  int rc3 = trend_scan_init(&scnt, start, step, nsteps, aggregate ? 1 : 0, true);
  if (!rc) rc = rc2 ? rc2 : rc3;
  if (!rc) rc = scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &st, err, sizeof err);
  seed_selector_release(sel, nsel);
  nsel = 0;
  size_t len = strlen(name);
  /* A histogram or summary by its family name: trend its average observation per step,
   * Δ<name>_sum / Δ<name>_count, paired by label set. */
  if (rc == MD_OK && trend_scan_empty(&st) && !(type && *type) && !ends_with(name, len, "_sum") &&
      !ends_with(name, len, "_count") && !ends_with(name, len, "_bucket")) {
    char part[300];
    snprintf(part, sizeof part, "%s_sum", name);
    if (!seed_selectors(req, resp, a, part, sel, &nsel)) goto out;
    rc = scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &ssum, err, sizeof err);
    seed_selector_release(sel, nsel);
    snprintf(part, sizeof part, "%s_count", name);
    if (!rc && !seed_selectors(req, resp, a, part, sel, &nsel)) goto out;
    if (!rc) rc = scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &scnt, err, sizeof err);
    seed_selector_release(sel, nsel);
    if (!rc) rc = trend_pair_ratio(&ssum, &scnt, &st);
    value_type = "average_per_observation";
  }
  sb_t *body = http_resp_body(resp);
  if (st.too_many || ssum.too_many || scnt.too_many) {
    http_resp_error(resp, 400,
                    "more than %d series match %s: narrow them with match[] or combine them with "
                    "aggregate=sum|avg", SEED_MAX_TREND_SERIES, name);
  } else if (rc) {
    if (!*err) md_error(err, sizeof err, rc, "out of memory");
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "%s", err);
  } else if (trend_scan_empty(&st)) {
    http_resp_error(resp, 404, "no data for metric %s in the last %g hours", name, hours);
  } else {
    sb_puts(body, "{\"metric_name\":");
    sb_json_str(body, name, strlen(name));
    sb_printf(body, ",\"hours\":%g,\"step_seconds\":%g,\"value_type\":\"%s\"", hours,
              (double)step / 1000.0, value_type);
    if (aggregate) {
      for (size_t i = 0; i < nsteps; i++)
        st.agg_sum[i] = st.agg_cnt[i] > 0 ? (aggregate == 2 ? st.agg_sum[i] / st.agg_cnt[i] : st.agg_sum[i]) : NAN;
      sb_printf(body, ",\"aggregate\":\"%s\"", aggregate == 1 ? "sum" : "avg");
      trend_body(body, st.agg_sum, nsteps, start, step, (size_t)horizon);
    } else if (st.nseries == 1) {
      sb_puts(body, ",\"labels\":");
      sb_puts(body, st.series[0].labels);
      trend_body(body, st.series[0].vals, nsteps, start, step, (size_t)horizon);
    } else {
      sb_printf(body, ",\"series_count\":%zu,\"trends\":[", st.nseries);
      for (size_t i = 0; i < st.nseries; i++) {
        sb_puts(body, i ? ",{\"labels\":" : "{\"labels\":");
        sb_puts(body, st.series[i].labels);
        trend_body(body, st.series[i].vals, nsteps, start, step, (size_t)horizon);
        sb_putc(body, '}');
      }
      sb_putc(body, ']');
    }
    sb_puts(body, ",\"timestamp\":");
    json_time(body, endt);
    sb_putc(body, '}');
    if (body->oom) {
      sb_reset(body);
      http_resp_error(resp, 500, "out of memory");
    }
  }
out:
  trend_scan_free(&st);
  trend_scan_free(&ssum);
  trend_scan_free(&scnt);
  json_decref(types);
}

/* ---- registration ------------------------------------------------------------------- */

void api_register_seed(api_t *api, http_router_t *r) {
  const config_t *cfg = api_config(api);
  if (!cfg || cfg->server.prometheus_enabled)
    http_route_add(r, "GET", "/metrics", HTTP_ROLE_READ, 0, handle_export, api);
  http_route_add(r, "GET", "/metrics/series", HTTP_ROLE_READ, 0, handle_series, api);
  http_route_add(r, "GET", "/metrics/trends/{name}", HTTP_ROLE_READ, 0, handle_trends, api);
}
