/*
 * api/seed_export.c — the engine behind the seed REST endpoints (handlers in seed.c):
 * selectors with compiled regexes, one scan helper over tsdb_select, the /metrics exposition
 * of stored series (latest values, window aggregates) and the filter over our own text
 * expositions.
 *
 * Ordering invariant of the text exposition: all lines of one metric family are adjacent
 * (promtool and the Prometheus parser require it), so stored series are collected, grouped
 * into families (histograms and summaries rebuilt from their _bucket/quantile/_sum/_count
 * series) and sorted before anything is written.
 *
 * Threading: reentrant; all state is per call.
 */
#include "api/seed.h"
#include "api/seed_internal.h"

#include "api/params.h"
#include "tsdb/tsdb.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

bool seed_ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

const char *seed_label_value(const tsdb_label_t *l, size_t nl, const char *name) {
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

void seed_json_labels(sb_t *sb, const tsdb_label_t *l, size_t nl, const char *skip1, const char *skip2) {
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

/* Sample values: integers (counts, counters — most exported values) are written in full
 * without printf (the seed's examples print counters as plain integers); the rest as
 * sb_double's shortest round-trip form. */
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
void seed_json_num(sb_t *sb, double v) {
  if (isfinite(v)) put_value(sb, v);
  else sb_puts(sb, "null");
}

void seed_json_time(sb_t *sb, int64_t ms) {
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

bool seed_name_start(char c, bool metric) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (metric && c == ':');
}
bool seed_name_char(char c, bool metric) { return seed_name_start(c, metric) || (c >= '0' && c <= '9'); }

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
      const char *v = seed_label_value(l, nl, m->name);
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
      {"max", SEED_AGG_MAX}, {"count", SEED_AGG_COUNT}, {"last", SEED_AGG_LAST},
  };
  for (size_t i = 0; i < sizeof aggs / sizeof *aggs; i++)
    if (strlen(aggs[i].name) == n && memcmp(aggs[i].name, name, n) == 0) return aggs[i].bit;
  return 0;
}

static const char *strip_suffix_type(const json_t *types, const char *name, char *buf, size_t bufsz) {
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  size_t n = strlen(name);
  for (size_t i = 0; i < 3; i++) {
    if (!seed_ends_with(name, n, suffixes[i])) continue;
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
  if (seed_ends_with(name, strlen(name), "_total")) return "counter";
  return "gauge";
}

/* Counter-like: counters, and the cumulative parts (_bucket, _sum, _count) of histograms
 * and summaries. */
bool seed_counter_like(const json_t *types, const char *name) {
  const char *t = seed_metric_type(types, name);
  if (strcmp(t, "counter") == 0) return true;
  if (strcmp(t, "histogram") == 0 || strcmp(t, "summary") == 0) {
    size_t n = strlen(name);
    return seed_ends_with(name, n, "_bucket") || seed_ends_with(name, n, "_sum") || seed_ends_with(name, n, "_count");
  }
  return false;
}

/* ---- scanning storage ----------------------------------------------------------------- */


/* Runs fn over every series matching any selector (each once), in storage order per
 * selector. nsel = 0 selects every series. */
int seed_scan(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel, int64_t mint,
                int64_t maxt, seed_series_fn fn, void *ctx, char *err, size_t errlen) {
  /* every named series, without a regex */
  static const tsdb_matcher_t all = {TSDB_MATCH_NEQ, "__name__", ""};
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
    if (more < 0 && rc == MD_OK)
      rc = md_error(err, errlen, more, "storage error while reading series (code %d)", more);
    tsdb_query_free(q);
  }
  u64map_free(&seen);
  sb_free(&key);
  return rc;
}

/* ---- aggregated export --------------------------------------------------------------- */

enum { ROW_LE = 1, ROW_QUANTILE = 2, ROW_BASE = 4 };
enum { KIND_GAUGE = 0, KIND_COUNTER = 1, KIND_DIST = 2 };

typedef struct agg_raw {
  const char *name, *labels;
  double min, max, sum, count, increase, last;
  int64_t t_first, t_last;
  int64_t t_base; /* time of the increase's base: the last sample before the window */
  unsigned flags; /* ROW_* */
} agg_raw_t;

typedef struct agg_out {
  const char *base, *labels;
  int kind;
  bool histogram; /* KIND_DIST: histogram (has buckets) or summary */
  double dsum, dcount;
  double v[SEED_AGG_KINDS]; /* avg, sum, min, max, count, last; NaN = not available */
} agg_out_t;

typedef struct agg_scan {
  arena_t *arena;
  seed_format_t format;
  int64_t window_start;
  agg_raw_t *rows;
  size_t n, cap;
  sb_t tmp;
} agg_scan_t;

static int agg_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts, const double *v,
                       size_t ns) {
  agg_scan_t *st = ctx;
  const char *name = seed_label_value(l, nl, "__name__");
  if (!name) return MD_OK;
  agg_raw_t r = {.min = INFINITY, .max = -INFINITY};
  double prev = NAN;
  for (size_t i = 0; i < ns; i++) {
    double x = v[i];
    if (isnan(x)) continue; /* staleness markers and NaN samples */
    if (ts[i] < st->window_start) { /* before the window: only the base of the increase */
      prev = x;
      r.t_base = ts[i];
      r.flags |= ROW_BASE;
      continue;
    }
    if (r.count == 0) r.t_first = ts[i];
    r.t_last = ts[i];
    r.count += 1;
    r.sum += x;
    r.last = x;
    if (x < r.min) r.min = x;
    if (x > r.max) r.max = x;
    /* a drop means a counter reset: the new value is the increase since the reset */
    if (!isnan(prev)) r.increase += x >= prev ? x - prev : x;
    prev = x;
  }
  if (r.count == 0) return MD_OK;
  if (seed_label_value(l, nl, "le")) r.flags |= ROW_LE;
  if (seed_label_value(l, nl, "quantile")) r.flags |= ROW_QUANTILE;
  sb_reset(&st->tmp);
  if (st->format == SEED_FMT_JSON) seed_json_labels(&st->tmp, l, nl, NULL, NULL);
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

static const char *const agg_names[SEED_AGG_KINDS] = {"avg", "sum", "min", "max", "count", "last"};

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
  case 5: sb_printf(sb, "Last sample of %s in the last %gs", what, window_s); break;
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
  agg_scan_t st = {.format = o->format, .window_start = o->now_ms - o->window_ms};
  agg_out_t *outs = NULL;
  size_t nouts = 0;
  u64map_t names = {0}, bases = {0}, dist = {0};
  int rc = MD_ENOMEM;
  size_t written = 0;
  st.arena = arena_new(0);
  if (!st.arena) goto fail;
  int64_t base = o->baseline_ms > 0 ? o->baseline_ms : 0;
  rc = seed_scan(db, tenant, sel, nsel, o->now_ms - o->window_ms - base, o->now_ms, agg_collect, &st, err,
                 errlen);
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
    if (!seed_ends_with(nm, len, "_sum")) continue;
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
    if ((st.rows[i].flags & ROW_LE) && seed_ends_with(nm, len, "_bucket")) {
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
    if ((r->flags & ROW_LE) && seed_ends_with(r->name, len, "_bucket")) {
      char *b = base_of(st.arena, r->name, 7);
      if (!b) goto fail;
      if (u64map_find(&bases, hash_str(b))) continue;
    }
    if ((r->flags & ROW_QUANTILE) && u64map_find(&bases, hash_str(r->name))) continue;
    size_t suffix = seed_ends_with(r->name, len, "_sum") ? 4 : seed_ends_with(r->name, len, "_count") ? 6 : 0;
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
    a->v[5] = r->last;
    if (seed_counter_like(o->types, r->name)) {
      /* per-minute rate: from the base sample before the window when there is one, else
       * between the window's first and last samples (needs two). Only what storage holds
       * decides: the same answer after a restart. */
      a->kind = KIND_COUNTER;
      bool based = r->flags & ROW_BASE;
      double span_min = (double)(r->t_last - (based ? r->t_base : r->t_first)) / 60000.0;
      bool ok = based || r->count >= 2;
      a->v[0] = (ok && span_min > 0) ? r->increase / span_min : NAN;
      a->v[1] = ok ? r->increase : NAN;
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
    d->v[2] = d->v[3] = d->v[5] = NAN;
    d->v[4] = d->dcount;
  }
  qsort(outs, nouts, sizeof *outs, cmp_agg_out);

  double window_s = (double)o->window_ms / 1000.0;
  /* one allocation up front instead of a dozen doublings of a 30 MB buffer */
  size_t estimate = 0;
  for (size_t i = 0; i < nouts; i++) estimate += SEED_AGG_KINDS * (strlen(outs[i].base) + strlen(outs[i].labels) + 32);
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
      for (int k = 0; k < SEED_AGG_KINDS; k++) {
        if (!(o->aggs & (1u << k)) || isnan(a->v[k])) continue;
        if (!first) sb_putc(out, ',');
        first = false;
        sb_printf(out, "\"%s\":", agg_names[k]);
        seed_json_num(out, a->v[k]);
      }
      sb_puts(out, "}}");
      written++;
    }
  } else {
    for (size_t g = 0; g < nouts;) {
      size_t e = g + 1;
      while (e < nouts && strcmp(outs[e].base, outs[g].base) == 0) e++;
      for (int k = 0; k < SEED_AGG_KINDS; k++) {
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
  const char *name = seed_label_value(l, nl, "__name__");
  if (!name || ns == 0) return MD_OK;
  /* the last sample decides: a staleness marker means the series is gone */
  if (tsdb_is_stale_nan(v[ns - 1])) return MD_OK;
  if (st->o->skip_names && json_object_get(st->o->skip_names, name)) return MD_OK;
  latest_row_t r = {.value = v[ns - 1], .ts = ts[ns - 1]};
  const char *le = seed_label_value(l, nl, "le"), *qt = seed_label_value(l, nl, "quantile");
  if (le) {
    r.flags |= ROW_LE;
    r.sortnum = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
  } else if (qt) {
    r.flags |= ROW_QUANTILE;
    r.sortnum = strtod(qt, NULL);
  }
  r.name = arena_strdup(st->arena, name);
  sb_reset(&st->tmp);
  if (st->o->format == SEED_FMT_JSON) seed_json_labels(&st->tmp, l, nl, NULL, NULL);
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
  rc = seed_scan(db, tenant, sel, nsel, o->now_ms - o->window_ms, o->now_ms, latest_collect, &st, err, errlen);
  if (rc) goto fail;
  rc = MD_ENOMEM;
  for (size_t i = 0; i < st.n; i++)
    if (u64map_put(&names, hash_str(st.rows[i].name), 0) < 0) goto fail;
  for (size_t i = 0; i < st.n; i++) {
    latest_row_t *r = &st.rows[i];
    size_t len = strlen(r->name);
    if ((r->flags & ROW_LE) && seed_ends_with(r->name, len, "_bucket")) {
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
    if ((r->flags & ROW_LE) && seed_ends_with(r->name, len, "_bucket")) {
      r->family = base_of(st.arena, r->name, 7);
      r->type = "histogram";
    } else if ((r->flags & ROW_QUANTILE) && u64map_find(&summ, hash_str(r->name))) {
      r->type = "summary";
    } else {
      size_t suffix = seed_ends_with(r->name, len, "_sum") ? 4 : seed_ends_with(r->name, len, "_count") ? 6 : 0;
      char *b = suffix ? base_of(st.arena, r->name, suffix) : NULL;
      if (suffix && !b) goto fail;
      if (b && u64map_find(&hist, hash_str(b))) {
        r->family = b, r->type = "histogram", r->order = suffix == 4 ? 1 : 2;
      } else if (b && u64map_find(&summ, hash_str(b))) {
        r->family = b, r->type = "summary", r->order = suffix == 4 ? 1 : 2;
      } else if (seed_ends_with(r->name, len, "_total")) {
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
  if (st.n) qsort(st.rows, st.n, sizeof *st.rows, cmp_latest);

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
        seed_json_num(out, r->value);
        sb_puts(out, ",\"timestamp\":");
        seed_json_time(out, r->ts);
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
  while (i < n && seed_name_char(p[i], true)) i++;
  if (i == 0) return -1;
  int nl = 0;
  l[nl].name = "__name__";
  l[nl].value = arena_strndup(a, p, i);
  if (!l[nl++].value) return -1;
  if (i < n && p[i] == '{') {
    i++;
    while (i < n && p[i] != '}') {
      size_t b = i;
      while (i < n && seed_name_char(p[i], false)) i++;
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
    while (nl < len && seed_name_char(line[nl], true)) nl++;
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

