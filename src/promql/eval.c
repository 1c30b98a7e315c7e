/*
 * eval.c — the PromQL evaluator: selectors over tsdb, binary operators with vector matching,
 * aggregations, subqueries, and the public evaluation entry points.
 *
 * Each selector reads its data once for the whole query (one tsdb_select over the union of
 * all its windows) and then slides per-step windows over the decoded sample arrays. Windows
 * are left-open: a range selector at T sees (T - range, T], an instant selector the newest
 * sample in (T - lookback, T], and a staleness marker as the newest sample hides the series.
 * A range function applied straight to a matrix selector does not go through a materialised
 * matrix: ev_stream_matrix hands it one series at a time from the storage's buffers. An
 * accumulating aggregation (sum, avg, count, ...) over such a function or over a plain vector
 * selector is not materialised either: each series folds into its group as it comes
 * (ev_agg_*), in the same order and so with the same rounding as over a materialised vector.
 * anchored/smoothed selectors read a lookback beyond their windows (func.c ext_range_fn).
 *
 * Threading: one evaluation runs on the calling thread, except that ev_stream_matrix may run
 * its callback on one helper thread of its own (see there); the tree is only read.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/eval.h"

/* ---- errors, annotations, limits ---------------------------------------------------------- */

int ev_fail(ev_t *ev, int code, const char *fmt, ...) {
  if (ev->err && ev->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->err, ev->errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

void ev_warn(ev_t *ev, bool info, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int k = snprintf(buf, sizeof buf, "PromQL %s: ", info ? "info" : "warning");
  vsnprintf(buf + k, sizeof buf - (size_t)k, fmt, ap);
  va_end(ap);
  char ***list = info ? &ev->info : &ev->warn;
  size_t *n = info ? &ev->ninfo : &ev->nwarn, *cap = info ? &ev->capinfo : &ev->capwarn;
  for (size_t i = 0; i < *n; i++)
    if (!strcmp((*list)[i], buf)) return;
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 4;
    char **nl = arena_alloc(ev->a, nc * sizeof *nl);
    if (!nl) return;
    if (*n) memcpy(nl, *list, *n * sizeof *nl);
    *list = nl, *cap = nc;
  }
  char *s = arena_strdup(ev->a, buf);
  if (s) (*list)[(*n)++] = s;
}

int ev_check(ev_t *ev) {
  if (ev->opt.cancel && atomic_load(ev->opt.cancel))
    return ev_fail(ev, MD_ECANCELED, "query was canceled in query execution");
  if (ev->deadline_ns && md_mono_ns() > ev->deadline_ns)
    return ev_fail(ev, MD_ECANCELED, "query timed out in query execution");
  return 0;
}

int ev_account(ev_t *ev, size_t samples) {
  ev->samples_held += samples;
  if (ev->opt.max_samples && ev->samples_held > ev->opt.max_samples)
    return ev_fail(ev, MD_ELIMIT, "query processing would load too many samples into memory in query execution");
  return 0;
}

/* ---- label sets ---------------------------------------------------------------------------- */

const char *lset_get(const lset_t *ls, const char *name) {
  for (size_t i = 0; i < ls->n; i++)
    if (!strcmp(ls->l[i].name, name)) return ls->l[i].value;
  return NULL;
}

const char *ev_metric_name(const lset_t *ls) {
  const char *n = lset_get(ls, "__name__");
  return n ? n : "";
}

int lset_cmp(const lset_t *a, const lset_t *b) {
  size_t n = a->n < b->n ? a->n : b->n;
  for (size_t i = 0; i < n; i++) {
    int c = strcmp(a->l[i].name, b->l[i].name);
    if (c) return c;
    c = strcmp(a->l[i].value, b->l[i].value);
    if (c) return c;
  }
  return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

uint64_t lset_hash(const lset_t *ls) {
  uint64_t h = 0x1234567;
  for (size_t i = 0; i < ls->n; i++) {
    h = md_hash_mix(h, md_hash64(ls->l[i].name, strlen(ls->l[i].name), 1));
    h = md_hash_mix(h, md_hash64(ls->l[i].value, strlen(ls->l[i].value), 2));
  }
  return h;
}

void lset_format(const lset_t *ls, sb_t *out) {
  sb_putc(out, '{');
  for (size_t i = 0; i < ls->n; i++) {
    if (i) sb_puts(out, ", ");
    sb_printf(out, "%s=", ls->l[i].name);
    sb_json_str(out, ls->l[i].value, strlen(ls->l[i].value));
  }
  sb_putc(out, '}');
}

lset_t ev_lset_copy(ev_t *ev, const lset_t *ls) {
  /* One allocation for the array and all strings: a series' labels are copied together. */
  size_t bytes = (ls->n + 1) * sizeof(tsdb_label_t);
  for (size_t i = 0; i < ls->n; i++) bytes += strlen(ls->l[i].name) + strlen(ls->l[i].value) + 2;
  lset_t o = {arena_alloc(ev->a, bytes), ls->n};
  if (!o.l) return o;
  char *p = (char *)(o.l + ls->n + 1);
  for (size_t i = 0; i < ls->n; i++) {
    size_t a = strlen(ls->l[i].name) + 1, b = strlen(ls->l[i].value) + 1;
    o.l[i].name = memcpy(p, ls->l[i].name, a);
    o.l[i].value = memcpy(p + a, ls->l[i].value, b);
    p += a + b;
  }
  return o;
}

/* __type__ and __unit__ (Prometheus 3.x type-and-unit labels) describe the metric name and
 * go wherever it goes: dropped with it, ignored by matching like it. */
static bool is_name_label(const char *nm) {
  return nm[0] == '_' && nm[1] == '_' && (!strcmp(nm, "__name__") || !strcmp(nm, "__type__") || !strcmp(nm, "__unit__"));
}

lset_t lset_without_name(ev_t *ev, const lset_t *ls) {
  lset_t r = {0};
  r.l = arena_alloc(ev->a, (ls->n + 1) * sizeof *r.l);
  if (!r.l) return r;
  for (size_t i = 0; i < ls->n; i++)
    if (!is_name_label(ls->l[i].name)) r.l[r.n++] = ls->l[i];
  return r;
}

lset_t lset_set(ev_t *ev, const lset_t *ls, const char *name, const char *value) {
  lset_t r = {0};
  r.l = arena_alloc(ev->a, (ls->n + 1) * sizeof *r.l);
  if (!r.l) return r;
  bool done = false;
  for (size_t i = 0; i < ls->n; i++) {
    int c = strcmp(ls->l[i].name, name);
    if (c == 0) {
      if (*value) r.l[r.n++] = (tsdb_label_t){ls->l[i].name, value};
      done = true;
      continue;
    }
    if (c > 0 && !done) {
      if (*value) r.l[r.n++] = (tsdb_label_t){name, value};
      done = true;
    }
    r.l[r.n++] = ls->l[i];
  }
  if (!done && *value) r.l[r.n++] = (tsdb_label_t){name, value};
  return r;
}

static bool in_list(const char *name, const char **list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(list[i], name)) return true;
  return false;
}

/* ---- value helpers ------------------------------------------------------------------------- */

vser_t *ev_vec_add(ev_t *ev, value_t *v, lset_t ls, bool drop, size_t nsteps) {
  if (v->nvs == v->capvs) {
    size_t nc = v->capvs ? v->capvs * 2 : 16;
    vser_t *ns = arena_alloc(ev->a, nc * sizeof *ns);
    if (!ns) return NULL;
    if (v->nvs) memcpy(ns, v->vs, v->nvs * sizeof *ns);
    v->vs = ns, v->capvs = nc;
  }
  vser_t *s = &v->vs[v->nvs];
  memset(s, 0, sizeof *s);
  s->ls = ls;
  s->drop = drop;
  s->v = arena_alloc(ev->a, nsteps * sizeof(double));
  s->ok = arena_calloc(ev->a, nsteps);
  if (!s->v || !s->ok) return NULL;
  if (ev_account(ev, nsteps) < 0) return NULL;
  v->nvs++;
  return s;
}

/* A small open-addressing hash map: 64-bit key → int index. Keys are label-set hashes;
 * callers confirm equality when a collision would matter. */
typedef struct hmap {
  uint64_t *k;
  int32_t *v;
  size_t cap;
} hmap_t;

static int hmap_init(ev_t *ev, hmap_t *m, size_t n) {
  size_t cap = 16;
  while (cap < n * 2 + 2) cap <<= 1;
  m->cap = cap;
  m->k = arena_alloc(ev->a, cap * sizeof *m->k);
  m->v = arena_alloc(ev->a, cap * sizeof *m->v);
  if (!m->k || !m->v) return MD_ENOMEM;
  for (size_t i = 0; i < cap; i++) m->v[i] = -1;
  return 0;
}
static void hmap_clear(hmap_t *m) {
  for (size_t i = 0; i < m->cap; i++) m->v[i] = -1;
}
/* Returns the slot of key (occupied or the empty one where it would go). */
static size_t hmap_slot(const hmap_t *m, uint64_t key) {
  size_t i = (size_t)(key * 0x9E3779B97F4A7C15ULL >> 20) & (m->cap - 1);
  while (m->v[i] >= 0 && m->k[i] != key) i = (i + 1) & (m->cap - 1);
  return i;
}

static int fail_oom(ev_t *ev) { return ev_fail(ev, MD_ENOMEM, "out of memory in query execution"); }

/* ---- selectors ----------------------------------------------------------------------------- */

static int64_t at_time(ev_t *ev, const pql_node_t *n, int64_t t) {
  switch (n->at) {
  case AT_TS: return n->at_ms;
  case AT_START: return ev->qstart;
  case AT_END: return ev->qend;
  default: return t;
  }
}

/* The selector's or subquery's offset, range and subquery step for this query: constants from
 * the parser, or duration expressions over step() and range() resolved here. */
static int node_durations(ev_t *ev, const pql_node_t *n, int64_t *offset, int64_t *range, int64_t *step) {
  int64_t qrange = ev->qend - ev->qstart;
  *offset = n->offset_ms;
  if (n->offset_expr && !pql_duration_eval(n->offset_expr, ev->qstep, qrange, offset))
    return ev_fail(ev, MD_EINVAL, "offset duration expression is out of range");
  if (range) {
    *range = n->range_ms;
    if (n->range_expr && !pql_duration_eval(n->range_expr, ev->qstep, qrange, range))
      return ev_fail(ev, MD_EINVAL, "range duration expression is out of range");
    if (*range <= 0) return ev_fail(ev, MD_EINVAL, "duration must be greater than 0");
  }
  if (step) {
    *step = n->step_ms;
    if (n->step_expr && !pql_duration_eval(n->step_expr, ev->qstep, qrange, step))
      return ev_fail(ev, MD_EINVAL, "subquery step duration expression is out of range");
    if (n->step_expr && *step <= 0) return ev_fail(ev, MD_EINVAL, "duration must be greater than 0");
  }
  return 0;
}

/* Runs the selector's query over [mint, maxt] and calls back per series with the storage's
 * labels and samples, valid during the call only. */
typedef int (*series_cb)(ev_t *ev, void *ctx, lset_t ls, const int64_t *ts, const double *v, size_t n);

static int select_series(ev_t *ev, const pql_node_t *n, int64_t mint, int64_t maxt, int64_t step, series_cb cb,
                         void *ctx) {
  tsdb_query_t *q = NULL;
  char e[256];
  tsdb_select_hints_t hints = {0};
  if (ev->opt.use_downsampled) hints.step_ms = step;
  int rc = tsdb_select(ev->db, ev->tenant, n->matchers, n->nmatchers, mint, maxt, &hints, &q, e, sizeof e);
  if (rc < 0) return ev_fail(ev, rc == MD_EINVAL ? MD_EINVAL : rc, "%s", e);
  for (;;) {
    rc = tsdb_query_next(q);
    if (rc <= 0) break;
    if ((rc = ev_check(ev)) < 0) break;
    if (ev->opt.max_series && ++ev->series_selected > ev->opt.max_series) {
      rc = ev_fail(ev, MD_ELIMIT, "query selected too many series (limit %zu)", ev->opt.max_series);
      break;
    }
    size_t nl;
    const tsdb_label_t *l = tsdb_query_labels(q, &nl);
    const int64_t *ts;
    const double *v;
    size_t ns = tsdb_query_samples(q, &ts, &v);
    ev->samples_read += ns;
    /* Borrowed: callbacks that keep the labels copy them (most series of a streamed
     * aggregation never need a copy). */
    lset_t ls = {(tsdb_label_t *)l, nl};
    if ((rc = cb(ev, ctx, ls, ts, v, ns)) < 0) break;
  }
  if (rc > 0) rc = 0;
  if (rc < 0 && ev->err && !ev->err[0]) ev_fail(ev, rc, "storage error while selecting series");
  tsdb_query_free(q);
  return rc;
}

typedef struct vsel_ctx {
  const grid_t *g;
  const int64_t *teff;
  bool const_t;   /* all teff equal (@ modifier) */
  bool want_ts;
  value_t *out;
  agg_acc_t *sink; /* aggregate straight into this instead of out */
  vser_t scratch;  /* sink: the current series' values */
} vsel_ctx_t;

/* Index of the last sample with ts <= t, or -1. */
static ptrdiff_t last_le(const int64_t *ts, size_t n, int64_t t) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ts[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return (ptrdiff_t)lo - 1;
}

static int vsel_cb(ev_t *ev, void *vctx, lset_t ls, const int64_t *ts, const double *v, size_t n) {
  vsel_ctx_t *c = vctx;
  size_t steps = c->g->n;
  vser_t *s = NULL;
  ptrdiff_t j = -1;
  int64_t lb = ev->opt.lookback_ms;
  for (size_t i = 0; i < steps; i++) {
    int64_t t = c->teff[i];
    if (i == 0 || !c->const_t) {
      /* Steps ascend, so the index only moves forward without @. */
      if (i == 0 || c->const_t) j = last_le(ts, n, t);
      else while ((size_t)(j + 1) < n && ts[j + 1] <= t) j++;
    }
    if (j < 0 || ts[j] <= t - lb || ev_is_stale(v[j])) continue;
    if (!s && c->sink) {
      s = &c->scratch;
      memset(s->ok, 0, steps);
      int rc = ev_account(ev, steps); /* as if materialised: limits do not depend on the plan */
      if (rc < 0) return rc;
    } else if (!s) {
      lset_t own = ev_lset_copy(ev, &ls);
      if (!own.l || !(s = ev_vec_add(ev, c->out, own, false, steps))) return fail_oom(ev);
      if (c->want_ts && !(s->tsv = arena_alloc(ev->a, steps * sizeof(double)))) return fail_oom(ev);
    }
    s->v[i] = v[j];
    s->ok[i] = 1;
    if (s->tsv) s->tsv[i] = (double)ts[j] / 1000.0;
  }
  if (s && c->sink) return ev_agg_add(ev, c->sink, &ls, false, s->v, s->ok);
  return 0;
}

bool ev_smoothed_value(const int64_t *ts, const double *v, size_t n, int64_t t, bool counter, double *out) {
  ptrdiff_t p = last_le(ts, n, t);
  if (p >= 0 && ts[p] == t) {
    *out = v[p];
    return true;
  }
  size_t nx = (size_t)(p + 1);
  if (p < 0 && nx >= n) return false;
  if (p < 0) {
    *out = v[nx];
    return true;
  }
  if (nx >= n) {
    *out = v[p];
    return true;
  }
  double f = (double)(t - ts[p]) / (double)(ts[nx] - ts[p]);
  if (counter && v[nx] < v[p]) *out = v[nx] * f;
  else *out = v[p] + (v[nx] - v[p]) * f;
  return true;
}

/* `x smoothed`: per step, the value interpolated at the step's time between the samples around
 * it, within a lookback on either side; like a plain selector, nothing without a sample in the
 * lookback before. Stale markers end the series as usual. */
typedef struct ssel_ctx {
  const grid_t *g;
  const int64_t *teff;
  value_t *out;
} ssel_ctx_t;

static int ssel_cb(ev_t *ev, void *vctx, lset_t ls, const int64_t *ts, const double *v, size_t n) {
  ssel_ctx_t *c = vctx;
  vser_t *s = NULL;
  int64_t lb = ev->opt.lookback_ms;
  for (size_t i = 0; i < c->g->n; i++) {
    int64_t t = c->teff[i];
    ptrdiff_t j = last_le(ts, n, t);
    if (j < 0 || ts[j] <= t - lb || ev_is_stale(v[j])) continue;
    size_t hi = (size_t)j + 1;
    if (hi < n && (ts[hi] > t + lb || ev_is_stale(v[hi]))) hi = (size_t)j; /* no usable right neighbour */
    else if (hi < n) hi++;
    double val;
    if (!ev_smoothed_value(ts + j, v + j, hi - (size_t)j, t, false, &val)) continue;
    if (!s) {
      lset_t own = ev_lset_copy(ev, &ls);
      if (!own.l || !(s = ev_vec_add(ev, c->out, own, false, c->g->n))) return fail_oom(ev);
    }
    s->v[i] = val;
    s->ok[i] = 1;
  }
  return 0;
}

static int eval_vector_selector(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, bool want_ts,
                                agg_acc_t *sink) {
  int64_t *teff = arena_alloc(ev->a, g->n * sizeof *teff);
  if (!teff) return fail_oom(ev);
  int64_t mint = INT64_MAX, maxt = INT64_MIN, offset;
  int rc = node_durations(ev, n, &offset, NULL, NULL);
  if (rc < 0) return rc;
  for (size_t i = 0; i < g->n; i++) {
    teff[i] = at_time(ev, n, grid_t_at(g, i)) - offset;
    if (teff[i] < mint) mint = teff[i];
    if (teff[i] > maxt) maxt = teff[i];
  }
  out->type = PT_VECTOR;
  if (n->ext == EXT_SMOOTHED) {
    ssel_ctx_t sc = {g, teff, out};
    return select_series(ev, n, mint - ev->opt.lookback_ms + 1, maxt + ev->opt.lookback_ms, g->step, ssel_cb, &sc);
  }
  vsel_ctx_t c = {.g = g, .teff = teff, .const_t = n->at != AT_NONE, .want_ts = want_ts, .out = out, .sink = sink};
  if (sink) {
    c.scratch.v = arena_alloc(ev->a, (g->n + 1) * sizeof(double));
    c.scratch.ok = arena_alloc(ev->a, g->n + 1);
    if (!c.scratch.v || !c.scratch.ok) return fail_oom(ev);
  }
  return select_series(ev, n, mint - ev->opt.lookback_ms + 1, maxt, g->step, vsel_cb, &c);
}

typedef struct msel_ctx {
  value_t *out;
  size_t cap;
} msel_ctx_t;

static int msel_cb(ev_t *ev, void *vctx, lset_t ls, const int64_t *ts, const double *v, size_t n) {
  msel_ctx_t *c = vctx;
  value_t *out = c->out;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += !ev_is_stale(v[i]);
  if (!k) return 0;
  if (out->nms == c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 16;
    mser_t *nm = arena_alloc(ev->a, nc * sizeof *nm);
    if (!nm) return fail_oom(ev);
    if (out->nms) memcpy(nm, out->ms, out->nms * sizeof *nm);
    out->ms = nm, c->cap = nc;
  }
  mser_t *m = &out->ms[out->nms++];
  memset(m, 0, sizeof *m);
  m->ls = ev_lset_copy(ev, &ls);
  if (!m->ls.l) return fail_oom(ev);
  m->ts = arena_alloc(ev->a, k * sizeof *m->ts);
  m->v = arena_alloc(ev->a, k * sizeof *m->v);
  if (!m->ts || !m->v) return fail_oom(ev);
  for (size_t i = 0; i < n; i++)
    if (!ev_is_stale(v[i])) {
      m->ts[m->n] = ts[i];
      m->v[m->n++] = v[i];
    }
  return ev_account(ev, k);
}

int ev_matrix_windows(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, int64_t *mint, int64_t *maxt) {
  int64_t offset, range;
  int rc = node_durations(ev, n, &offset, &range, NULL);
  if (rc < 0) return rc;
  out->type = PT_MATRIX;
  out->range_ms = range;
  out->ext = n->ext;
  out->wend = arena_alloc(ev->a, g->n * sizeof *out->wend);
  if (!out->wend) return fail_oom(ev);
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (size_t i = 0; i < g->n; i++) {
    out->wend[i] = at_time(ev, n, grid_t_at(g, i)) - offset;
    if (out->wend[i] < lo) lo = out->wend[i];
    if (out->wend[i] > hi) hi = out->wend[i];
  }
  /* Extended windows look a lookback past their edges for the anchor / interpolation points. */
  int64_t lb = ev->opt.lookback_ms;
  *mint = lo - range + 1 - (n->ext ? lb : 0);
  *maxt = hi + (n->ext == EXT_SMOOTHED ? lb : 0);
  return 0;
}

static int eval_matrix_selector(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int64_t mint, maxt;
  int rc = ev_matrix_windows(ev, n, g, out, &mint, &maxt);
  if (rc < 0) return rc;
  msel_ctx_t c = {out, 0};
  return select_series(ev, n, mint, maxt, g->step, msel_cb, &c);
}

/* Streaming a matrix selector: each series is handed to fn one at a time, without stale
 * markers, and never materialised in the query arena. Samples still count against
 * max_samples as if held.
 *
 * The first series go to fn on the calling thread, straight from the storage's buffers (or,
 * when they hold stale markers, from one scratch copy without them). Past PIPE_INLINE_SERIES
 * the selection is big enough to split in two stages: the calling thread keeps reading the
 * storage (the tsdb query belongs to the thread that made it) and copies each series into a
 * ring of PIPE_SLOTS batches; one helper thread takes the batches in order and runs fn. fn
 * thus sees the series in the same order as serially, so sums fold identically.
 *
 * Ownership while the helper runs: the helper alone uses ev (arena, warnings, samples_held,
 * err); the reader uses only its private copy `rd` (series_selected, samples_read, its own
 * error text; deadline and cancel are read-only) and the ring, whose state the mutex guards.
 * Either side stops the other through `stop`. */
enum { PIPE_INLINE_SERIES = 64, PIPE_MIN_STEPS = 8, PIPE_SLOTS = 4, PIPE_BATCH_SAMPLES = 4096 };

typedef struct pipe_series {
  size_t off, n;       /* samples in the batch's ts/v */
  size_t loff, nl;     /* labels in the batch's loffs */
} pipe_series_t;

typedef struct pipe_label {
  size_t name, value;  /* offsets into the batch's strs (which moves as it grows) */
} pipe_label_t;

typedef struct pipe_batch {
  int64_t *ts;
  double *v;
  size_t n, tcap, vcap;
  pipe_label_t *loffs;
  size_t nl, lcap;
  char *strs;
  size_t sn, scap;
  pipe_series_t *series;
  size_t ns, scnt;
  tsdb_label_t *labels; /* the helper's view of loffs */
  size_t lbcap;
} pipe_batch_t;

typedef struct stream_ctx {
  ev_t *ev;               /* the evaluation (inline phase and helper only) */
  ev_series_fn fn;
  void *ctx;
  int64_t *ts;            /* inline phase: scratch copy without stale markers */
  double *v;
  size_t cap;
  size_t inline_seen;
  size_t steps;           /* fn's work per series grows with them; one step is not worth a thread */
  bool fn_failed;         /* inline phase: the error is fn's, already in ev->err */
  /* pipeline */
  bool piped;
  pthread_t helper;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pipe_batch_t slot[PIPE_SLOTS];
  size_t head, tail;      /* batches [tail, head) are full, waiting for the helper */
  bool done, stop;
  int helper_rc;
  pipe_batch_t *fill;     /* the batch the reader fills (not in the ring until published) */
} stream_ctx_t;

/* Grows *p (elem-sized items, *cap of them) to hold need. */
static int grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t nc = *cap ? *cap : 1024;
  while (nc < need) nc *= 2;
  void *np = realloc(*(void **)p, nc * elem);
  if (!np) return MD_ENOMEM;
  *(void **)p = np, *cap = nc;
  return 0;
}

static void batch_free(pipe_batch_t *b) {
  free(b->ts), free(b->v), free(b->loffs), free(b->strs), free(b->series), free(b->labels);
  memset(b, 0, sizeof *b);
}

/* Copies one series, stale markers dropped, into b. */
static int batch_add(pipe_batch_t *b, const lset_t *ls, const int64_t *ts, const double *v, size_t n) {
  /* Sized once for a full batch plus a series: the ring is small (PIPE_SLOTS x ~128 KiB) and
   * stays in cache; fresh pages cost more than the copy on this path. */
  size_t want = b->n + n < 2 * PIPE_BATCH_SAMPLES ? 2 * PIPE_BATCH_SAMPLES : b->n + n;
  if (grow(&b->ts, &b->tcap, want, sizeof *b->ts) || grow(&b->v, &b->vcap, want, sizeof *b->v) ||
      grow(&b->loffs, &b->lcap, b->nl + ls->n, sizeof *b->loffs) || grow(&b->series, &b->scnt, b->ns + 1, sizeof *b->series))
    return MD_ENOMEM;
  size_t k = b->n;
  for (size_t i = 0; i < n; i++)
    if (!ev_is_stale(v[i])) b->ts[k] = ts[i], b->v[k++] = v[i];
  if (k == b->n) return 0; /* only stale markers: as if not selected */
  pipe_series_t *s = &b->series[b->ns];
  s->off = b->n, s->n = k - b->n, s->loff = b->nl, s->nl = ls->n;
  for (size_t i = 0; i < ls->n; i++) {
    size_t a = strlen(ls->l[i].name) + 1, c = strlen(ls->l[i].value) + 1;
    if (grow(&b->strs, &b->scap, b->sn + a + c, 1)) return MD_ENOMEM;
    memcpy(b->strs + b->sn, ls->l[i].name, a);
    memcpy(b->strs + b->sn + a, ls->l[i].value, c);
    b->loffs[b->nl++] = (pipe_label_t){b->sn, b->sn + a};
    b->sn += a + c;
  }
  b->n = k;
  b->ns++;
  return 0;
}

/* One series to fn on the evaluating thread. */
static int stream_one(stream_ctx_t *c, const mser_t *m) {
  if (!m->n) return 0;
  int rc = ev_account(c->ev, m->n);
  if (rc < 0) return rc;
  return c->fn(c->ev, c->ctx, m);
}

static void *stream_helper(void *arg) {
  stream_ctx_t *c = arg;
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (c->tail == c->head && !c->done && !c->stop) pthread_cond_wait(&c->cv, &c->mu);
    if (c->stop || c->tail == c->head) break;
    pipe_batch_t *b = &c->slot[c->tail % PIPE_SLOTS];
    pthread_mutex_unlock(&c->mu);
    if (grow(&b->labels, &b->lbcap, b->nl, sizeof *b->labels)) rc = fail_oom(c->ev);
    for (size_t i = 0; i < b->nl && rc >= 0; i++)
      b->labels[i] = (tsdb_label_t){b->strs + b->loffs[i].name, b->strs + b->loffs[i].value};
    for (size_t i = 0; i < b->ns && rc >= 0; i++) {
      pipe_series_t *s = &b->series[i];
      mser_t m = {.ls = {b->labels + s->loff, s->nl}, .ts = b->ts + s->off, .v = b->v + s->off, .n = s->n};
      rc = stream_one(c, &m);
    }
    pthread_mutex_lock(&c->mu);
    if (rc < 0) {
      c->stop = true;
      pthread_cond_broadcast(&c->cv);
      break;
    }
    c->tail++;
    pthread_cond_broadcast(&c->cv);
  }
  c->helper_rc = rc;
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Reader: hands the filled batch to the helper and takes the next free slot. False when the
 * helper stopped (its error is the query's). */
static bool pipe_publish(stream_ctx_t *c) {
  pthread_mutex_lock(&c->mu);
  c->head++;
  pthread_cond_broadcast(&c->cv);
  while (c->head - c->tail >= PIPE_SLOTS && !c->stop) pthread_cond_wait(&c->cv, &c->mu);
  bool ok = !c->stop;
  pipe_batch_t *b = &c->slot[c->head % PIPE_SLOTS];
  pthread_mutex_unlock(&c->mu);
  b->n = b->nl = b->sn = b->ns = 0;
  c->fill = b;
  return ok;
}

/* The reader's error code for "the helper stopped": the helper's own error is reported. */
#define PIPE_STOPPED (-10000)

static int stream_cb(ev_t *rd, void *vctx, lset_t ls, const int64_t *ts, const double *v, size_t n) {
  stream_ctx_t *c = vctx;
  if (c->piped) {
    if (batch_add(c->fill, &ls, ts, v, n) < 0) return ev_fail(rd, MD_ENOMEM, "out of memory in query execution");
    if (c->fill->n >= PIPE_BATCH_SAMPLES && !pipe_publish(c)) return PIPE_STOPPED;
    return 0;
  }
  mser_t m = {.ls = ls, .ts = (int64_t *)ts, .v = (double *)v, .n = n};
  size_t first_stale = n;
  for (size_t i = 0; i < n; i++)
    if (ev_is_stale(v[i])) { first_stale = i; break; }
  if (first_stale < n) {
    if (c->cap < n) {
      size_t nc = n > 2 * c->cap ? n : 2 * c->cap;
      int64_t *nts = realloc(c->ts, nc * sizeof *nts);
      if (nts) c->ts = nts;
      double *nv = realloc(c->v, nc * sizeof *nv);
      if (nv) c->v = nv;
      if (!nts || !nv) return fail_oom(c->ev);
      c->cap = nc;
    }
    memcpy(c->ts, ts, first_stale * sizeof *ts);
    memcpy(c->v, v, first_stale * sizeof *v);
    size_t k = first_stale;
    for (size_t i = first_stale + 1; i < n; i++)
      if (!ev_is_stale(v[i])) c->ts[k] = ts[i], c->v[k++] = v[i];
    m.ts = c->ts, m.v = c->v, m.n = k;
  }
  int rc = stream_one(c, &m);
  if (rc < 0) {
    c->fn_failed = true;
    return rc;
  }
  /* Enough series to be worth a second thread: from here on, the helper runs fn. */
  if (++c->inline_seen == PIPE_INLINE_SERIES && c->steps >= PIPE_MIN_STEPS && !c->ev->opt.serial) {
    c->fill = &c->slot[0];
    c->head = c->tail = 0;
    if (pthread_create(&c->helper, NULL, stream_helper, c) == 0) c->piped = true;
    /* else: carry on serially */
  }
  return 0;
}

int ev_stream_matrix(ev_t *ev, const pql_node_t *n, const grid_t *g, int64_t mint, int64_t maxt, ev_series_fn fn, void *ctx) {
  stream_ctx_t c = {.ev = ev, .fn = fn, .ctx = ctx, .steps = g->n};
  pthread_mutex_init(&c.mu, NULL);
  pthread_cond_init(&c.cv, NULL);
  /* The reader works on a private copy of ev once the helper has started: see above. */
  char rerr[512] = "";
  ev_t rd = *ev;
  rd.err = rerr, rd.errlen = sizeof rerr;
  int rc = select_series(&rd, n, mint, maxt, g->step, stream_cb, &c);
  ev->series_selected = rd.series_selected;
  ev->samples_read = rd.samples_read;
  if (c.piped) {
    pthread_mutex_lock(&c.mu);
    if (rc >= 0 && c.fill->ns) c.head++; /* the last, partial batch */
    c.done = true;
    if (rc < 0) c.stop = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    pthread_join(c.helper, NULL);
    /* The helper's error first: the reader stopped because of it, or the helper saw it first. */
    if (c.helper_rc < 0) rc = c.helper_rc;
    else if (rc == PIPE_STOPPED) rc = 0;
  }
  /* A failure of the reader's own (storage, max_series, timeout) has its text in rerr. */
  if (rc < 0 && !c.fn_failed && !(c.piped && c.helper_rc < 0) && ev->err && ev->errlen)
    snprintf(ev->err, ev->errlen, "%s", rerr);
  for (size_t i = 0; i < PIPE_SLOTS; i++) batch_free(&c.slot[i]);
  pthread_mutex_destroy(&c.mu);
  pthread_cond_destroy(&c.cv);
  free(c.ts);
  free(c.v);
  return rc;
}

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

static int eval_subquery(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int64_t offset, range, step;
  int rc = node_durations(ev, n, &offset, &range, &step);
  if (rc < 0) return rc;
  if (!step) step = ev->opt.subquery_step_ms;
  out->type = PT_MATRIX;
  out->range_ms = range;
  out->wend = arena_alloc(ev->a, g->n * sizeof *out->wend);
  if (!out->wend) return fail_oom(ev);
  int64_t mint = INT64_MAX, maxt = INT64_MIN;
  for (size_t i = 0; i < g->n; i++) {
    out->wend[i] = at_time(ev, n, grid_t_at(g, i)) - offset;
    if (out->wend[i] < mint) mint = out->wend[i];
    if (out->wend[i] > maxt) maxt = out->wend[i];
  }
  /* Inner steps are multiples of the step after the earliest window start. */
  int64_t s0 = mint - range;
  int64_t first = floor_div(s0, step) * step;
  if (first <= s0) first += step;
  grid_t ig = {first, step, 0};
  if (maxt >= first) ig.n = (size_t)((maxt - first) / step) + 1;
  if (ig.n > 50000000) return ev_fail(ev, MD_ELIMIT, "subquery has too many steps");
  if (ig.n == 0) return 0;
  value_t in = {0};
  rc = ev_eval(ev, n->a, &ig, &in);
  if (rc < 0) return rc;
  out->ms = arena_alloc(ev->a, (in.nvs ? in.nvs : 1) * sizeof *out->ms);
  if (!out->ms) return fail_oom(ev);
  for (size_t k = 0; k < in.nvs; k++) {
    vser_t *s = &in.vs[k];
    size_t cnt = 0;
    for (size_t i = 0; i < ig.n; i++) cnt += s->ok[i];
    if (!cnt) continue;
    mser_t *m = &out->ms[out->nms++];
    m->ls = s->ls;
    m->drop = s->drop;
    m->ts = arena_alloc(ev->a, cnt * sizeof *m->ts);
    m->v = arena_alloc(ev->a, cnt * sizeof *m->v);
    m->n = 0;
    if (!m->ts || !m->v) return fail_oom(ev);
    for (size_t i = 0; i < ig.n; i++)
      if (s->ok[i]) {
        m->ts[m->n] = grid_t_at(&ig, i);
        m->v[m->n++] = s->v[i];
      }
  }
  return 0;
}

/* ---- binary operators ---------------------------------------------------------------------- */

static bool is_cmp_op(int op) { return op >= OP_EQ && op <= OP_GE; }

/* Prometheus's vectorElemBinop: returns the value and whether to keep it. */
static double binop_value(int op, double l, double r, bool *keep) {
  *keep = true;
  switch (op) {
  case OP_ADD: return l + r;
  case OP_SUB: return l - r;
  case OP_MUL: return l * r;
  case OP_DIV: return l / r;
  case OP_POW: return pow(l, r);
  case OP_MOD: return fmod(l, r);
  case OP_ATAN2: return atan2(l, r);
  case OP_EQ: *keep = l == r; return l;
  case OP_NE: *keep = l != r; return l;
  case OP_GT: *keep = l > r; return l;
  case OP_LT: *keep = l < r; return l;
  case OP_GE: *keep = l >= r; return l;
  case OP_LE: *keep = l <= r; return l;
  default: *keep = false; return 0;
  }
}

static int eval_scalar_scalar(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *l, value_t *r, value_t *out) {
  out->type = PT_SCALAR;
  out->sc = arena_alloc(ev->a, g->n * sizeof(double));
  if (!out->sc) return fail_oom(ev);
  for (size_t i = 0; i < g->n; i++) {
    bool keep;
    double v = binop_value(n->op, l->sc[i], r->sc[i], &keep);
    if (is_cmp_op(n->op)) v = keep ? 1 : 0;
    out->sc[i] = v;
  }
  return 0;
}

static int eval_vector_scalar(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *vec, value_t *sc, bool swap,
                              value_t *out) {
  out->type = PT_VECTOR;
  bool cmp = is_cmp_op(n->op);
  bool drop = !cmp || n->return_bool;
  for (size_t k = 0; k < vec->nvs; k++) {
    vser_t *s = &vec->vs[k];
    vser_t *o = NULL;
    for (size_t i = 0; i < g->n; i++) {
      if (!s->ok[i]) continue;
      double lv = s->v[i], rv = sc->sc[i];
      if (swap) { double t = lv; lv = rv; rv = t; }
      bool keep;
      double v = binop_value(n->op, lv, rv, &keep);
      if (cmp) {
        if (n->return_bool) { v = keep ? 1 : 0; keep = true; }
        else v = s->v[i];
      }
      if (!keep) continue;
      if (!o) {
        o = ev_vec_add(ev, out, s->ls, s->drop || drop, g->n);
        if (!o) return fail_oom(ev);
      }
      o->v[i] = v;
      o->ok[i] = 1;
    }
  }
  return 0;
}

/* Matching signature of a series: the `on` labels, or all but `ignoring` ones and the name. */
static uint64_t sig_hash(const lset_t *ls, const pql_node_t *n) {
  uint64_t h = 0x9ae16a3b2f90404fULL;
  for (size_t i = 0; i < ls->n; i++) {
    const char *nm = ls->l[i].name;
    bool use = n->on ? in_list(nm, n->mlabels, n->nmlabels)
                     : (!is_name_label(nm) && !in_list(nm, n->mlabels, n->nmlabels));
    if (!use) continue;
    h = md_hash_mix(h, md_hash64(nm, strlen(nm), 1));
    h = md_hash_mix(h, md_hash64(ls->l[i].value, strlen(ls->l[i].value), 2));
  }
  return h;
}

static void sig_format(const lset_t *ls, const pql_node_t *n, sb_t *out) {
  sb_putc(out, '{');
  bool first = true;
  for (size_t i = 0; i < ls->n; i++) {
    const char *nm = ls->l[i].name;
    bool use = n->on ? in_list(nm, n->mlabels, n->nmlabels)
                     : (!is_name_label(nm) && !in_list(nm, n->mlabels, n->nmlabels));
    if (!use) continue;
    if (!first) sb_puts(out, ", ");
    first = false;
    sb_printf(out, "%s=", nm);
    sb_json_str(out, ls->l[i].value, strlen(ls->l[i].value));
  }
  sb_putc(out, '}');
}

static int eval_setop(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *l, value_t *r, value_t *out) {
  out->type = PT_VECTOR;
  uint64_t *ls = arena_alloc(ev->a, (l->nvs + 1) * sizeof *ls);
  uint64_t *rs = arena_alloc(ev->a, (r->nvs + 1) * sizeof *rs);
  if (!ls || !rs) return fail_oom(ev);
  for (size_t k = 0; k < l->nvs; k++) ls[k] = sig_hash(&l->vs[k].ls, n);
  for (size_t k = 0; k < r->nvs; k++) rs[k] = sig_hash(&r->vs[k].ls, n);
  hmap_t m;
  if (hmap_init(ev, &m, n->op == OP_OR ? l->nvs : r->nvs) < 0) return fail_oom(ev);
  vser_t **lo = arena_calloc(ev->a, (l->nvs + 1) * sizeof *lo);
  vser_t **ro = arena_calloc(ev->a, (r->nvs + 1) * sizeof *ro);
  if (!lo || !ro) return fail_oom(ev);
  if (n->op == OP_OR) {
    /* Output order: all lhs series, then rhs. */
    for (size_t k = 0; k < l->nvs; k++) {
      vser_t *s = &l->vs[k];
      if (!(lo[k] = ev_vec_add(ev, out, s->ls, s->drop, g->n))) return fail_oom(ev);
    }
  }
  for (size_t i = 0; i < g->n; i++) {
    if ((i & 63) == 0 && ev_check(ev) < 0) return MD_ECANCELED;
    hmap_clear(&m);
    value_t *idx = n->op == OP_OR ? l : r;
    uint64_t *sig = n->op == OP_OR ? ls : rs;
    for (size_t k = 0; k < idx->nvs; k++)
      if (idx->vs[k].ok[i]) {
        size_t sl = hmap_slot(&m, sig[k]);
        m.k[sl] = sig[k];
        m.v[sl] = (int32_t)k;
      }
    if (n->op == OP_OR) {
      for (size_t k = 0; k < l->nvs; k++)
        if (l->vs[k].ok[i]) lo[k]->v[i] = l->vs[k].v[i], lo[k]->ok[i] = 1;
      for (size_t k = 0; k < r->nvs; k++) {
        vser_t *s = &r->vs[k];
        if (!s->ok[i] || m.v[hmap_slot(&m, rs[k])] >= 0) continue;
        if (!ro[k] && !(ro[k] = ev_vec_add(ev, out, s->ls, s->drop, g->n))) return fail_oom(ev);
        ro[k]->v[i] = s->v[i];
        ro[k]->ok[i] = 1;
      }
    } else {
      for (size_t k = 0; k < l->nvs; k++) {
        vser_t *s = &l->vs[k];
        if (!s->ok[i]) continue;
        bool found = m.v[hmap_slot(&m, ls[k])] >= 0;
        if (found != (n->op == OP_AND)) continue;
        if (!lo[k] && !(lo[k] = ev_vec_add(ev, out, s->ls, s->drop, g->n))) return fail_oom(ev);
        lo[k]->v[i] = s->v[i];
        lo[k]->ok[i] = 1;
      }
    }
  }
  if (n->op == OP_OR) {
    /* Drop lhs series that never had a value (kept above for ordering). */
    size_t w = 0;
    for (size_t k = 0; k < out->nvs; k++) {
      bool any = false;
      for (size_t i = 0; i < g->n && !any; i++) any = out->vs[k].ok[i];
      if (any) out->vs[w++] = out->vs[k];
    }
    out->nvs = w;
  }
  return 0;
}

/* Result labels of a vector-vector operation (Prometheus's resultMetric). */
static lset_t result_labels(ev_t *ev, const pql_node_t *n, const lset_t *l, const lset_t *r) {
  lset_t o = {arena_alloc(ev->a, (l->n + n->ninclude + 1) * sizeof(tsdb_label_t)), 0};
  if (!o.l) return o;
  for (size_t i = 0; i < l->n; i++) {
    const char *nm = l->l[i].name;
    if (n->card == CARD_ONE_TO_ONE) {
      if (n->on ? !in_list(nm, n->mlabels, n->nmlabels) : in_list(nm, n->mlabels, n->nmlabels)) continue;
    }
    if (in_list(nm, n->include, n->ninclude)) continue;
    o.l[o.n++] = l->l[i];
  }
  for (size_t j = 0; j < n->ninclude; j++) {
    const char *v = lset_get(r, n->include[j]);
    if (!v || !*v) continue;
    /* insert sorted */
    size_t p = o.n;
    while (p > 0 && strcmp(o.l[p - 1].name, n->include[j]) > 0) {
      o.l[p] = o.l[p - 1];
      p--;
    }
    o.l[p] = (tsdb_label_t){n->include[j], v};
    o.n++;
  }
  return o;
}

/* The output series of a vector-vector operation, found or created by its labels. */
typedef struct vv_out {
  hmap_t map;          /* label hash -> index in out->vs */
  int64_t *step;       /* last step each output got a value: duplicate detection */
  size_t cap;
} vv_out_t;

static int vv_out_index(ev_t *ev, vv_out_t *vo, value_t *out, lset_t rl, bool d, size_t nsteps, int32_t *oi) {
  uint64_t h = lset_hash(&rl) ^ (d ? 0x5555 : 0);
  size_t osl = hmap_slot(&vo->map, h);
  if (vo->map.v[osl] >= 0) {
    *oi = vo->map.v[osl];
    return 0;
  }
  if (!ev_vec_add(ev, out, rl, d, nsteps)) return fail_oom(ev);
  *oi = (int32_t)(out->nvs - 1);
  if (out->nvs * 2 + 2 > vo->map.cap) {
    /* grow: rebuild */
    hmap_t nm;
    if (hmap_init(ev, &nm, out->nvs * 2) < 0) return fail_oom(ev);
    for (size_t q = 0; q < vo->map.cap; q++)
      if (vo->map.v[q] >= 0) {
        size_t s2 = hmap_slot(&nm, vo->map.k[q]);
        nm.k[s2] = vo->map.k[q], nm.v[s2] = vo->map.v[q];
      }
    vo->map = nm;
    osl = hmap_slot(&vo->map, h);
  }
  vo->map.k[osl] = h;
  vo->map.v[osl] = *oi;
  return 0;
}

static int vv_out_set(ev_t *ev, const pql_node_t *n, vv_out_t *vo, value_t *out, int32_t oi, size_t i, double v) {
  if ((size_t)oi >= vo->cap) {
    size_t nc = vo->cap ? vo->cap * 2 : 64;
    while (nc <= (size_t)oi) nc *= 2;
    int64_t *ns = arena_alloc(ev->a, nc * sizeof *ns);
    if (!ns) return fail_oom(ev);
    if (vo->cap) memcpy(ns, vo->step, vo->cap * sizeof *ns);
    for (size_t q = vo->cap; q < nc; q++) ns[q] = -1;
    vo->step = ns, vo->cap = nc;
  }
  if (vo->step[oi] == (int64_t)i) {
    return ev_fail(ev, MD_ERR, n->card == CARD_ONE_TO_ONE
                                   ? "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                                   : "multiple matches for labels: grouping labels must ensure unique matches");
  }
  vo->step[oi] = (int64_t)i;
  vser_t *o = &out->vs[oi];
  o->v[i] = v;
  o->ok[i] = 1;
  return 0;
}

/* The matching signature's labels as a label set: what a series synthesised by fill_left()
 * carries (Prometheus gives a filled side exactly the labels it was matched on). */
static lset_t sig_labels(ev_t *ev, const lset_t *ls, const pql_node_t *n) {
  lset_t o = {arena_alloc(ev->a, (ls->n + 1) * sizeof(tsdb_label_t)), 0};
  if (!o.l) return o;
  for (size_t i = 0; i < ls->n; i++) {
    const char *nm = ls->l[i].name;
    bool use = n->on ? in_list(nm, n->mlabels, n->nmlabels)
                     : (!is_name_label(nm) && !in_list(nm, n->mlabels, n->nmlabels));
    if (use) o.l[o.n++] = ls->l[i];
  }
  return o;
}

/* Vector-vector arithmetic and comparison. With group_right the operands swap roles: `many`
 * is the side whose labels the result keeps. fill_right() supplies the value of a missing
 * `one`-side match and fill_left() that of a missing `many`-side one; like Prometheus, the
 * two keep those roles under group_right as well. */
static int eval_vector_vector(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *l, value_t *r, value_t *out) {
  out->type = PT_VECTOR;
  bool swap = n->card == CARD_ONE_TO_MANY;
  value_t *many = swap ? r : l, *one = swap ? l : r;
  uint64_t *msig = arena_alloc(ev->a, (many->nvs + 1) * sizeof *msig);
  uint64_t *osig = arena_alloc(ev->a, (one->nvs + 1) * sizeof *osig);
  int32_t *cache_one = arena_alloc(ev->a, (many->nvs + 1) * sizeof *cache_one);
  int32_t *cache_out = arena_alloc(ev->a, (many->nvs + 1) * sizeof *cache_out);
  int32_t *matched = arena_alloc(ev->a, (one->nvs + 1) * sizeof *matched);
  int32_t *fill_out = n->fill_left ? arena_alloc(ev->a, (one->nvs + 1) * sizeof *fill_out) : NULL;
  if (!msig || !osig || !cache_one || !cache_out || !matched || (n->fill_left && !fill_out)) return fail_oom(ev);
  for (size_t k = 0; k < many->nvs; k++) msig[k] = sig_hash(&many->vs[k].ls, n), cache_one[k] = -1;
  for (size_t k = 0; k < one->nvs; k++) {
    osig[k] = sig_hash(&one->vs[k].ls, n);
    if (fill_out) fill_out[k] = -1;
  }
  hmap_t m, seen;
  vv_out_t vo = {0};
  if (hmap_init(ev, &m, one->nvs) < 0 || hmap_init(ev, &vo.map, many->nvs) < 0 || hmap_init(ev, &seen, many->nvs) < 0)
    return fail_oom(ev);
  bool cmp = is_cmp_op(n->op);
  bool drop = !cmp || n->return_bool;
  int rc;
  for (size_t i = 0; i < g->n; i++) {
    if ((i & 63) == 0 && ev_check(ev) < 0) return MD_ECANCELED;
    hmap_clear(&m);
    for (size_t k = 0; k < one->nvs; k++) {
      if (!one->vs[k].ok[i]) continue;
      size_t sl = hmap_slot(&m, osig[k]);
      if (m.v[sl] >= 0) {
        sb_t sb = {0};
        sig_format(&one->vs[k].ls, n, &sb);
        sb_t a = {0}, b = {0};
        lset_format(&one->vs[m.v[sl]].ls, &a);
        lset_format(&one->vs[k].ls, &b);
        rc = ev_fail(ev, MD_ERR,
                     "found duplicate series for the match group %s on the %s hand-side of the operation: [%s, %s]"
                     ";many-to-many matching not allowed: matching labels must be unique on one side",
                     sb.buf ? sb.buf : "{}", swap ? "left" : "right", a.buf ? a.buf : "", b.buf ? b.buf : "");
        sb_free(&sb), sb_free(&a), sb_free(&b);
        return rc;
      }
      m.k[sl] = osig[k];
      m.v[sl] = (int32_t)k;
      matched[k] = -1;
    }
    if (n->card == CARD_ONE_TO_ONE) hmap_clear(&seen);
    for (size_t k = 0; k < many->nvs; k++) {
      vser_t *ms = &many->vs[k];
      if (!ms->ok[i]) continue;
      size_t sl = hmap_slot(&m, msig[k]);
      int32_t j = m.v[sl];
      if (j < 0 && !n->fill_right) continue;
      if (n->card == CARD_ONE_TO_ONE) {
        size_t ss = hmap_slot(&seen, msig[k]);
        if (seen.v[ss] >= 0)
          return ev_fail(ev, MD_ERR, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
        seen.k[ss] = msig[k];
        seen.v[ss] = 1;
      }
      const vser_t *os = j >= 0 ? &one->vs[j] : NULL;
      if (os) matched[j] = 1;
      double ov = os ? os->v[i] : n->fill_right_value;
      double lv = swap ? ov : ms->v[i], rv = swap ? ms->v[i] : ov;
      bool keep;
      double v = binop_value(n->op, lv, rv, &keep);
      if (cmp && n->return_bool) { v = keep ? 1 : 0; keep = true; }
      if (!keep) continue;
      int32_t oi, jkey = j >= 0 ? j : -2; /* -2: filled, -1: nothing cached yet */
      if (cache_one[k] == jkey) {
        oi = cache_out[k];
      } else {
        static const lset_t none = {NULL, 0};
        lset_t rl = result_labels(ev, n, &ms->ls, os ? &os->ls : &none);
        if (!rl.l) return fail_oom(ev);
        if ((rc = vv_out_index(ev, &vo, out, rl, ms->drop || drop, g->n, &oi)) < 0) return rc;
        cache_one[k] = jkey;
        cache_out[k] = oi;
      }
      if ((rc = vv_out_set(ev, n, &vo, out, oi, i, v)) < 0) return rc;
    }
    if (!n->fill_left) continue;
    /* one-side series without a partner: the many side takes the fill_left() value. */
    for (size_t k = 0; k < one->nvs; k++) {
      vser_t *os = &one->vs[k];
      if (!os->ok[i] || matched[k] == 1) continue;
      double mv = n->fill_left_value;
      double lv = swap ? os->v[i] : mv, rv = swap ? mv : os->v[i];
      bool keep;
      double v = binop_value(n->op, lv, rv, &keep);
      if (cmp && n->return_bool) { v = keep ? 1 : 0; keep = true; }
      if (!keep) continue;
      if (fill_out[k] < 0) {
        lset_t sl = sig_labels(ev, &os->ls, n);
        if (!sl.l) return fail_oom(ev);
        lset_t rl = result_labels(ev, n, &sl, &os->ls);
        if (!rl.l) return fail_oom(ev);
        if ((rc = vv_out_index(ev, &vo, out, rl, drop, g->n, &fill_out[k])) < 0) return rc;
      }
      if ((rc = vv_out_set(ev, n, &vo, out, fill_out[k], i, v)) < 0) return rc;
    }
  }
  return 0;
}

static int eval_binary(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  value_t l = {0}, r = {0};
  int rc = ev_eval(ev, n->a, g, &l);
  if (rc < 0) return rc;
  rc = ev_eval(ev, n->b, g, &r);
  if (rc < 0) return rc;
  if (l.type == PT_SCALAR && r.type == PT_SCALAR) return eval_scalar_scalar(ev, n, g, &l, &r, out);
  if (l.type == PT_VECTOR && r.type == PT_SCALAR) return eval_vector_scalar(ev, n, g, &l, &r, false, out);
  if (l.type == PT_SCALAR && r.type == PT_VECTOR) return eval_vector_scalar(ev, n, g, &r, &l, true, out);
  if (n->op == OP_AND || n->op == OP_OR || n->op == OP_UNLESS) return eval_setop(ev, n, g, &l, &r, out);
  return eval_vector_vector(ev, n, g, &l, &r, out);
}

/* ---- aggregations -------------------------------------------------------------------------- */

static lset_t group_labels(ev_t *ev, const pql_node_t *n, const lset_t *ls) {
  lset_t o = {arena_alloc(ev->a, (ls->n + 1) * sizeof(tsdb_label_t)), 0};
  if (!o.l) return o;
  for (size_t i = 0; i < ls->n; i++) {
    const char *nm = ls->l[i].name;
    bool in = in_list(nm, n->grouping, n->ngrouping);
    if (n->without ? (in || is_name_label(nm)) : !in) continue;
    o.l[o.n++] = ls->l[i];
  }
  return o;
}

typedef struct vcmp_item {
  double v;
  size_t idx;
} vcmp_item_t;

static int cmp_desc_nan_last(const void *a, const void *b) {
  const vcmp_item_t *x = a, *y = b;
  bool xn = isnan(x->v), yn = isnan(y->v);
  if (xn != yn) return xn ? 1 : -1;
  if (!xn && x->v != y->v) return x->v > y->v ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}
static int cmp_asc_nan_last(const void *a, const void *b) {
  const vcmp_item_t *x = a, *y = b;
  bool xn = isnan(x->v), yn = isnan(y->v);
  if (xn != yn) return xn ? 1 : -1;
  if (!xn && x->v != y->v) return x->v < y->v ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Label names are UTF-8 in Prometheus 3.x: any valid, non-empty UTF-8 string. */
static bool utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

/* Go's %q for an error message: printable ASCII as is, bytes outside it as \xNN. */
static void go_quote(const char *s, sb_t *out) {
  sb_putc(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') sb_printf(out, "\\%c", *p);
    else if (*p >= 0x20 && *p < 0x7F) sb_putc(out, (char)*p);
    else if (*p == '\n') sb_puts(out, "\\n");
    else if (*p == '\t') sb_puts(out, "\\t");
    else sb_printf(out, "\\x%02x", *p);
  }
  sb_putc(out, '"');
}

static void heap_sift_down(vcmp_item_t *h, size_t n, size_t i, int (*cmp)(const void *, const void *)) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && cmp(&h[l], &h[m]) > 0) m = l;
    if (r < n && cmp(&h[r], &h[m]) > 0) m = r;
    if (m == i) return;
    vcmp_item_t t = h[i];
    h[i] = h[m], h[m] = t;
    i = m;
  }
}

/* Puts the `take` first items under cmp (a total order: ties go by index) at the front, in
 * order, as a full sort would: a bounded max-heap keeps topk/bottomk at O(n log k) per group. */
static void partial_sort(vcmp_item_t *it, size_t n, size_t take, int (*cmp)(const void *, const void *)) {
  if (take == 0) return;
  if (take * 4 >= n) {
    qsort(it, n, sizeof *it, cmp);
    return;
  }
  for (size_t i = take / 2; i-- > 0;) heap_sift_down(it, take, i, cmp);
  for (size_t j = take; j < n; j++)
    if (cmp(&it[j], &it[0]) < 0) {
      it[0] = it[j];
      heap_sift_down(it, take, 0, cmp);
    }
  qsort(it, take, sizeof *it, cmp);
}

static int eval_aggregate(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  value_t in = {0}, par = {0};
  int rc;
  int op = n->op;
  if (ev_agg_accumulates(op)) {
    /* sum by (x) (rate(m[5m])): the range function streams its series straight into the
     * groups; materialising its output first cost more than computing it. */
    const pql_node_t *arg = n->a;
    while (arg->kind == N_PAREN) arg = arg->a;
    agg_acc_t *acc;
    if (ev_call_streams(arg)) {
      if ((rc = ev_check(ev)) < 0) return rc;
      if ((rc = ev_agg_begin(ev, n, g->n, 16, &acc)) < 0) return rc;
      if ((rc = ev_call_into(ev, arg, g, &in, acc)) < 0) return rc;
      return ev_agg_end(ev, acc, out);
    }
    if (arg->kind == N_SEL && !arg->is_matrix && arg->ext != EXT_SMOOTHED) { /* count(up) */
      if ((rc = ev_check(ev)) < 0) return rc;
      if ((rc = ev_agg_begin(ev, n, g->n, 16, &acc)) < 0) return rc;
      if ((rc = eval_vector_selector(ev, arg, g, &in, false, acc)) < 0) return rc;
      return ev_agg_end(ev, acc, out);
    }
    if ((rc = ev_eval(ev, n->a, g, &in)) < 0) return rc;
    if ((rc = ev_agg_begin(ev, n, g->n, in.nvs, &acc)) < 0) return rc;
    for (size_t k = 0; k < in.nvs; k++)
      if ((rc = ev_agg_add(ev, acc, &in.vs[k].ls, in.vs[k].drop, in.vs[k].v, in.vs[k].ok)) < 0) return rc;
    return ev_agg_end(ev, acc, out);
  }
  if ((rc = ev_eval(ev, n->a, g, &in)) < 0) return rc;
  if (n->b && (rc = ev_eval(ev, n->b, g, &par)) < 0) return rc;
  out->type = PT_VECTOR;
  size_t ns = in.nvs, steps = g->n;
  /* Group index per input series. */
  int32_t *gid = arena_alloc(ev->a, (ns + 1) * sizeof *gid);
  lset_t *glabels = arena_alloc(ev->a, (ns + 1) * sizeof *glabels);
  bool *gdrop = arena_alloc(ev->a, (ns + 1) * sizeof *gdrop);
  if (!gid || !glabels || !gdrop) return fail_oom(ev);
  size_t ng = 0;
  hmap_t m;
  if (hmap_init(ev, &m, ns) < 0) return fail_oom(ev);
  bool by_name = !n->without && in_list("__name__", n->grouping, n->ngrouping);
  for (size_t k = 0; k < ns; k++) {
    lset_t gl = group_labels(ev, n, &in.vs[k].ls);
    if (!gl.l) return fail_oom(ev);
    uint64_t h = lset_hash(&gl);
    size_t sl = hmap_slot(&m, h);
    if (m.v[sl] < 0) {
      m.k[sl] = h;
      m.v[sl] = (int32_t)ng;
      glabels[ng] = gl;
      gdrop[ng] = by_name && in.vs[k].drop;
      ng++;
    }
    gid[k] = m.v[sl];
  }
  if (op == AGG_TOPK || op == AGG_BOTTOMK || op == AGG_LIMITK || op == AGG_LIMIT_RATIO) {
    int32_t *omap = arena_alloc(ev->a, (ns + 1) * sizeof *omap);
    vcmp_item_t *items = arena_alloc(ev->a, (ns + 1) * sizeof *items);
    size_t *gcount = arena_alloc(ev->a, (ng + 1) * sizeof *gcount);
    size_t *gpos = arena_alloc(ev->a, (ng + 1) * sizeof *gpos);
    if (!omap || !items || !gcount || !gpos) return fail_oom(ev);
    for (size_t k = 0; k < ns; k++) omap[k] = -1;
    for (size_t i = 0; i < steps; i++) {
      double p = par.sc[i];
      if (isnan(p)) return ev_fail(ev, MD_ERR, op == AGG_LIMIT_RATIO ? "Ratio value is NaN" : "Parameter value is NaN");
      if (op == AGG_LIMIT_RATIO) {
        if (p < -1 || p > 1) {
          ev_warn(ev, false, "ratio value should be between -1 and 1, got %g, capping to %d", p, p < 0 ? -1 : 1);
          p = p < 0 ? -1 : 1;
        }
      } else if (p > 9.2e18 || p < -9.2e18) {
        return ev_fail(ev, MD_ERR, "Scalar value %g overflows int64", p);
      }
      int64_t k64 = op == AGG_LIMIT_RATIO ? 0 : (int64_t)p;
      /* Bucket this step's samples by group in one pass (series order kept within a group). */
      memset(gcount, 0, ng * sizeof *gcount);
      for (size_t k = 0; k < ns; k++)
        if (in.vs[k].ok[i]) gcount[gid[k]]++;
      for (size_t gi = 0, at = 0; gi < ng; gi++) gpos[gi] = at, at += gcount[gi];
      for (size_t k = 0; k < ns; k++)
        if (in.vs[k].ok[i]) items[gpos[gid[k]]++] = (vcmp_item_t){in.vs[k].v[i], k};
      for (size_t gi = 0; gi < ng; gi++) {
        size_t cnt = gcount[gi];
        if (!cnt) continue;
        vcmp_item_t *gitems = items + gpos[gi] - cnt;
        size_t take = cnt;
        if (op != AGG_LIMIT_RATIO) take = k64 < 1 ? 0 : (size_t)k64 < cnt ? (size_t)k64 : cnt;
        if (op == AGG_TOPK) partial_sort(gitems, cnt, take, cmp_desc_nan_last);
        else if (op == AGG_BOTTOMK) partial_sort(gitems, cnt, take, cmp_asc_nan_last);
        for (size_t t = 0; t < take; t++) {
          size_t k = gitems[t].idx;
          if (op == AGG_LIMIT_RATIO) {
            double r = (double)(lset_hash(&in.vs[k].ls) >> 11) / 9007199254740992.0;
            bool keep = p >= 0 ? r < p : r >= 1 + p;
            if (!keep) continue;
          }
          if (omap[k] < 0) {
            if (!ev_vec_add(ev, out, in.vs[k].ls, in.vs[k].drop, steps)) return fail_oom(ev);
            omap[k] = (int32_t)(out->nvs - 1);
          }
          out->vs[omap[k]].v[i] = in.vs[k].v[i];
          out->vs[omap[k]].ok[i] = 1;
        }
      }
    }
    out->ordered = op == AGG_TOPK || op == AGG_BOTTOMK;
    return 0;
  }
  if (op == AGG_COUNT_VALUES) {
    const char *lname = par.str;
    if (!lname || !*lname || !utf8_valid(lname, strlen(lname))) {
      sb_t q = {0};
      go_quote(lname ? lname : "", &q);
      int rc = ev_fail(ev, MD_ERR, "invalid label name %s", q.buf ? q.buf : "\"\"");
      sb_free(&q);
      return rc;
    }
    hmap_t om;
    if (hmap_init(ev, &om, 64) < 0) return fail_oom(ev);
    for (size_t i = 0; i < steps; i++) {
      for (size_t k = 0; k < ns; k++) {
        if (!in.vs[k].ok[i]) continue;
        char buf[64];
        fmt_float_plain(in.vs[k].v[i], buf, sizeof buf);
        lset_t base = glabels[gid[k]];
        char *val = arena_strdup(ev->a, buf);
        if (!val) return fail_oom(ev);
        lset_t ol = lset_set(ev, &base, lname, val);
        if (!ol.l) return fail_oom(ev);
        uint64_t h = lset_hash(&ol);
        size_t sl = hmap_slot(&om, h);
        int32_t oi = om.v[sl];
        if (oi < 0) {
          if (!ev_vec_add(ev, out, ol, false, steps)) return fail_oom(ev);
          oi = (int32_t)(out->nvs - 1);
          if (out->nvs * 2 + 2 > om.cap) {
            hmap_t nm;
            if (hmap_init(ev, &nm, out->nvs * 2) < 0) return fail_oom(ev);
            for (size_t q = 0; q < om.cap; q++)
              if (om.v[q] >= 0) {
                size_t s2 = hmap_slot(&nm, om.k[q]);
                nm.k[s2] = om.k[q], nm.v[s2] = om.v[q];
              }
            om = nm;
            sl = hmap_slot(&om, h);
          }
          om.k[sl] = h;
          om.v[sl] = oi;
        }
        vser_t *o = &out->vs[oi];
        if (!o->ok[i]) o->v[i] = 0;
        o->v[i] += 1;
        o->ok[i] = 1;
      }
    }
    return 0;
  }
  /* quantile: per group and step, the values of its series at that step. */
  size_t cells = ng * steps;
  if (ev_account(ev, cells) < 0) return MD_ELIMIT;
  double *qvals = arena_alloc(ev->a, (ns + 1) * sizeof(double));
  if (!qvals) return fail_oom(ev);
  for (size_t gi = 0; gi < ng; gi++) {
    vser_t *o = NULL;
    for (size_t i = 0; i < steps; i++) {
      size_t q = 0;
      for (size_t k = 0; k < ns; k++)
        if ((size_t)gid[k] == gi && in.vs[k].ok[i]) qvals[q++] = in.vs[k].v[i];
      if (!q) continue;
      double qq = par.sc[i];
      if (isnan(qq)) ev_warn(ev, false, "quantile value should be between 0 and 1, got NaN");
      else if (qq < 0 || qq > 1) ev_warn(ev, false, "quantile value should be between 0 and 1, got %g", qq);
      double v = pql_quantile(qq, qvals, q);
      if (!o) {
        o = ev_vec_add(ev, out, glabels[gi], gdrop[gi], steps);
        if (!o) return fail_oom(ev);
      }
      o->v[i] = v;
      o->ok[i] = 1;
    }
  }
  return 0;
}

/* ---- accumulating aggregations, one series at a time ----------------------------------------- */

typedef struct agg_group {
  lset_t ls;
  bool drop;
  /* per step: the running value(s), the count, and avg's switch to the incremental mean */
  double *acc, *acc2, *acc3, *cnt;
  uint8_t *flag;
} agg_group_t;

struct agg_acc {
  const pql_node_t *n;
  int op;
  size_t steps;
  bool by_name;
  hmap_t m;
  agg_group_t *gs;
  size_t ng, cap;
};

bool ev_agg_accumulates(int op) {
  switch (op) {
  case AGG_SUM: case AGG_AVG: case AGG_COUNT: case AGG_MIN: case AGG_MAX: case AGG_GROUP:
  case AGG_STDDEV: case AGG_STDVAR: return true;
  default: return false;
  }
}

static bool group_keeps(const pql_node_t *n, const char *nm) {
  bool in = in_list(nm, n->grouping, n->ngrouping);
  return n->without ? !(in || is_name_label(nm)) : in;
}

/* lset_hash of group_labels(ls), without building them. */
static uint64_t group_hash(const pql_node_t *n, const lset_t *ls) {
  uint64_t h = 0x1234567;
  for (size_t i = 0; i < ls->n; i++) {
    if (!group_keeps(n, ls->l[i].name)) continue;
    h = md_hash_mix(h, md_hash64(ls->l[i].name, strlen(ls->l[i].name), 1));
    h = md_hash_mix(h, md_hash64(ls->l[i].value, strlen(ls->l[i].value), 2));
  }
  return h;
}

int ev_agg_begin(ev_t *ev, const pql_node_t *n, size_t steps, size_t hint, agg_acc_t **out) {
  agg_acc_t *a = arena_calloc(ev->a, sizeof *a);
  if (!a || hmap_init(ev, &a->m, hint < 16 ? 16 : hint) < 0) return fail_oom(ev);
  a->n = n;
  a->op = n->op;
  a->steps = steps;
  a->by_name = !n->without && in_list("__name__", n->grouping, n->ngrouping);
  *out = a;
  return 0;
}

static int agg_new_group(ev_t *ev, agg_acc_t *a, const lset_t *ls, bool drop) {
  if (a->ng == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 16;
    agg_group_t *ng = arena_alloc(ev->a, nc * sizeof *ng);
    if (!ng) return fail_oom(ev);
    if (a->ng) memcpy(ng, a->gs, a->ng * sizeof *ng);
    a->gs = ng, a->cap = nc;
  }
  if ((a->ng + 1) * 2 + 2 > a->m.cap) {
    hmap_t nm;
    if (hmap_init(ev, &nm, a->m.cap) < 0) return fail_oom(ev);
    for (size_t q = 0; q < a->m.cap; q++)
      if (a->m.v[q] >= 0) {
        size_t s2 = hmap_slot(&nm, a->m.k[q]);
        nm.k[s2] = a->m.k[q], nm.v[s2] = a->m.v[q];
      }
    a->m = nm;
  }
  agg_group_t *g = &a->gs[a->ng];
  const pql_node_t *n = a->n;
  lset_t gl = {arena_alloc(ev->a, (ls->n + 1) * sizeof(tsdb_label_t)), 0};
  if (!gl.l) return fail_oom(ev);
  for (size_t i = 0; i < ls->n; i++)
    if (group_keeps(n, ls->l[i].name)) gl.l[gl.n++] = ls->l[i];
  g->ls = ev_lset_copy(ev, &gl);
  g->drop = a->by_name && drop;
  size_t st = a->steps + 1;
  g->acc = arena_calloc(ev->a, 4 * st * sizeof(double));
  g->flag = arena_calloc(ev->a, st);
  if (!g->ls.l || !g->acc || !g->flag) return fail_oom(ev);
  g->acc2 = g->acc + st, g->acc3 = g->acc2 + st, g->cnt = g->acc3 + st;
  if (ev_account(ev, a->steps) < 0) return MD_ELIMIT;
  a->ng++;
  return 0;
}

int ev_agg_add(ev_t *ev, agg_acc_t *a, const lset_t *ls, bool drop, const double *v, const uint8_t *ok) {
  uint64_t h = group_hash(a->n, ls);
  size_t sl = hmap_slot(&a->m, h);
  int32_t gi = a->m.v[sl];
  if (gi < 0) {
    int rc = agg_new_group(ev, a, ls, drop);
    if (rc < 0) return rc;
    gi = (int32_t)(a->ng - 1);
    sl = hmap_slot(&a->m, h);
    a->m.k[sl] = h;
    a->m.v[sl] = gi;
  }
  agg_group_t *g = &a->gs[gi];
  int op = a->op;
  for (size_t i = 0; i < a->steps; i++) {
    if (!ok[i]) continue;
    double x = v[i];
    double *acc = &g->acc[i], *b = &g->acc2[i], *m3 = &g->acc3[i], *cnt = &g->cnt[i];
    *cnt += 1;
    if (*cnt == 1) {
      switch (op) {
      case AGG_SUM: *acc = x; *b = 0; break;
      case AGG_AVG: *acc = x; *b = 0; break;
      case AGG_STDDEV:
      case AGG_STDVAR:
        *m3 = x;
        *acc = (isnan(x) || isinf(x)) ? NAN : 0;
        break;
      default: *acc = x;
      }
      continue;
    }
    switch (op) {
    case AGG_SUM: kahan_inc(x, acc, b); break;
    case AGG_AVG:
      if (!g->flag[i]) {
        double ns2 = *acc, nc2 = *b;
        kahan_inc(x, &ns2, &nc2);
        if (!isinf(ns2)) { *acc = ns2, *b = nc2; break; }
        g->flag[i] = 1;
        *m3 = *acc / (*cnt - 1);
        *b /= *cnt - 1;
      }
      {
        double q = (*cnt - 1) / *cnt;
        double mean = q * *m3, cc = q * *b;
        kahan_inc(x / *cnt, &mean, &cc);
        *m3 = mean, *b = cc;
      }
      break;
    case AGG_MIN:
      if (*acc > x || isnan(*acc)) *acc = x;
      break;
    case AGG_MAX:
      if (*acc < x || isnan(*acc)) *acc = x;
      break;
    case AGG_STDDEV:
    case AGG_STDVAR: {
      double delta = x - *m3;
      *m3 += delta / *cnt;
      *acc += delta * (x - *m3);
      break;
    }
    default: break;
    }
  }
  return 0;
}

int ev_agg_end(ev_t *ev, agg_acc_t *a, value_t *out) {
  out->type = PT_VECTOR;
  for (size_t gi = 0; gi < a->ng; gi++) {
    agg_group_t *g = &a->gs[gi];
    vser_t *o = NULL;
    for (size_t i = 0; i < a->steps; i++) {
      double v, cnt = g->cnt[i], acc = g->acc[i], acc2 = g->acc2[i];
      if (cnt == 0) continue;
      switch (a->op) {
      case AGG_SUM: v = isinf(acc) ? acc : acc + acc2; break;
      case AGG_AVG:
        if (g->flag[i]) v = g->acc3[i] + acc2;
        else v = acc / cnt + acc2 / cnt;
        break;
      case AGG_COUNT: v = cnt; break;
      case AGG_GROUP: v = 1; break;
      case AGG_STDVAR: v = acc / cnt; break;
      case AGG_STDDEV: v = sqrt(acc / cnt); break;
      default: v = acc;
      }
      if (!o) {
        o = ev_vec_add(ev, out, g->ls, g->drop, a->steps);
        if (!o) return fail_oom(ev);
      }
      o->v[i] = v;
      o->ok[i] = 1;
    }
  }
  return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

/* ---- info() --------------------------------------------------------------------------------
 * info(v [, selector]) (Prometheus 3.x, experimental) adds to each series of v the data labels
 * of the info series that share its identifying labels (instance, job) at the same step.
 * Info series are chosen by the selector's __name__ matchers (target_info when there are none;
 * only *_info metrics when all are negative); its other matchers both filter info series and
 * name the data labels to copy (all but __name__, instance and job when there are none). A
 * series of v that is itself an info metric by the positive name matchers stays as it is, as
 * does one without identifying labels. Where no info series matches, the series stays
 * unenriched if every data matcher accepts the empty value and is dropped otherwise. Base labels
 * win over data labels; two info series giving one label different values is an error. */

#define INFO_MAX_MATCHERS 64

typedef struct info_ctx {
  const tsdb_matcher_t *name_m[INFO_MAX_MATCHERS];
  core_regex_t *name_re[INFO_MAX_MATCHERS];
  size_t nname;
  bool positive_name;           /* some __name__ matcher is = or =~ */
  const char *data_names[INFO_MAX_MATCHERS];
  size_t ndata;
  bool data_accept_empty;       /* every data matcher matches "" */
} info_ctx_t;

static bool matcher_matches(const tsdb_matcher_t *m, const core_regex_t *re, const char *v) {
  switch (m->type) {
  case TSDB_MATCH_EQ: return !strcmp(m->value, v);
  case TSDB_MATCH_NEQ: return strcmp(m->value, v) != 0;
  case TSDB_MATCH_RE: return re && core_regex_match(re, v, strlen(v));
  case TSDB_MATCH_NRE: return re && !core_regex_match(re, v, strlen(v));
  }
  return false;
}

static uint64_t info_key(const lset_t *ls, bool *any) {
  const char *inst = lset_get(ls, "instance"), *job = lset_get(ls, "job");
  *any = (inst && *inst) || (job && *job);
  uint64_t h = md_hash64(inst ? inst : "", inst ? strlen(inst) : 0, 11);
  return md_hash_mix(h, md_hash64(job ? job : "", job ? strlen(job) : 0, 12));
}

static bool info_is_data_label(info_ctx_t *c, const char *name) {
  if (!strcmp(name, "__name__")) return false;
  if (c->ndata) return in_list(name, c->data_names, c->ndata);
  return strcmp(name, "instance") && strcmp(name, "job");
}

/* Info series ordered by the hash of their identifying labels, so that a base series finds
 * its candidates by binary search instead of a scan of every info series. */
typedef struct info_ord {
  uint64_t key;
  size_t idx;
} info_ord_t;

static int cmp_info_ord(const void *x, const void *y) {
  const info_ord_t *a = x, *b = y;
  if (a->key != b->key) return a->key < b->key ? -1 : 1;
  return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bool same_label(const lset_t *a, const lset_t *b, const char *name) {
  const char *x = lset_get(a, name), *y = lset_get(b, name);
  return !strcmp(x ? x : "", y ? y : "");
}

/* True when another series of the same info metric with the same identifying labels (among
 * ord[lo, hi), the candidates sharing the key) has a newer sample at step i: the info metric's
 * labels changed, and only its latest state counts (the first series wins a tie). */
static bool info_superseded(const value_t *info, const info_ord_t *ord, size_t lo, size_t hi, size_t q, size_t i) {
  const vser_t *s = &info->vs[q];
  for (size_t x = lo; x < hi; x++) {
    size_t r = ord[x].idx;
    const vser_t *o = &info->vs[r];
    if (r == q || !o->ok[i] || o->tsv[i] < s->tsv[i] || (o->tsv[i] == s->tsv[i] && r > q)) continue;
    if (same_label(&s->ls, &o->ls, "__name__") && same_label(&s->ls, &o->ls, "instance") &&
        same_label(&s->ls, &o->ls, "job"))
      return true;
  }
  return false;
}

static int eval_info(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  info_ctx_t c = {.data_accept_empty = true};
  value_t base = {0}, info = {0};
  int rc = ev_eval(ev, n->args[0], g, &base);
  if (rc < 0) return rc;
  const pql_node_t *sel = n->nargs > 1 ? n->args[1] : NULL;
  size_t nsel = sel ? sel->nmatchers : 0;
  if (nsel + 1 > INFO_MAX_MATCHERS) return ev_fail(ev, MD_EINVAL, "too many matchers in info() selector");
  tsdb_matcher_t *m = arena_alloc(ev->a, (nsel + 1) * sizeof *m);
  if (!m) return fail_oom(ev);
  size_t nm = 0;
  for (size_t i = 0; i < nsel; i++) {
    const tsdb_matcher_t *x = &sel->matchers[i];
    m[nm++] = *x;
    if (!strcmp(x->name, "__name__")) {
      core_regex_t *re = NULL;
      if ((x->type == TSDB_MATCH_RE || x->type == TSDB_MATCH_NRE) &&
          core_regex_compile(x->value, strlen(x->value), &re, NULL, 0) < 0) {
        rc = ev_fail(ev, MD_EINVAL, "invalid regular expression in info() selector: %s", x->value);
        goto out;
      }
      c.name_m[c.nname] = x;
      c.name_re[c.nname++] = re;
      if (x->type == TSDB_MATCH_EQ || x->type == TSDB_MATCH_RE) c.positive_name = true;
      continue;
    }
    if (!in_list(x->name, c.data_names, c.ndata)) c.data_names[c.ndata++] = x->name;
    core_regex_t *re = NULL;
    if ((x->type == TSDB_MATCH_RE || x->type == TSDB_MATCH_NRE) &&
        core_regex_compile(x->value, strlen(x->value), &re, NULL, 0) < 0) {
      rc = ev_fail(ev, MD_EINVAL, "invalid regular expression in info() selector: %s", x->value);
      goto out;
    }
    if (!matcher_matches(x, re, "")) c.data_accept_empty = false;
    core_regex_free(re);
  }
  if (!c.nname) m[nm++] = (tsdb_matcher_t){TSDB_MATCH_EQ, "__name__", "target_info"};
  else if (!c.positive_name) m[nm++] = (tsdb_matcher_t){TSDB_MATCH_RE, "__name__", ".+_info"};
  pql_node_t isel = {.kind = N_SEL, .type = PT_VECTOR, .matchers = m, .nmatchers = nm};
  if ((rc = eval_vector_selector(ev, &isel, g, &info, true, NULL)) < 0) goto out;
  info_ord_t *ord = arena_alloc(ev->a, (info.nvs + 1) * sizeof *ord);
  if (!ord) { rc = fail_oom(ev); goto out; }
  for (size_t k = 0; k < info.nvs; k++) {
    bool any;
    ord[k] = (info_ord_t){info_key(&info.vs[k].ls, &any), k};
  }
  if (info.nvs > 1) qsort(ord, info.nvs, sizeof *ord, cmp_info_ord);
  out->type = PT_VECTOR;
  vv_out_t vo = {0};
  if (hmap_init(ev, &vo.map, base.nvs) < 0) { rc = fail_oom(ev); goto out; }
  for (size_t k = 0; k < base.nvs; k++) {
    vser_t *b = &base.vs[k];
    const char *name = lset_get(&b->ls, "__name__");
    bool is_info = c.positive_name;
    for (size_t j = 0; j < c.nname && is_info; j++) is_info = matcher_matches(c.name_m[j], c.name_re[j], name ? name : "");
    bool any;
    uint64_t key = info_key(&b->ls, &any);
    size_t lo = 0, hi = info.nvs;
    while (lo < hi) { /* first candidate with this key */
      size_t mid = (lo + hi) / 2;
      if (ord[mid].key < key) lo = mid + 1;
      else hi = mid;
    }
    for (hi = lo; hi < info.nvs && ord[hi].key == key;) hi++;
    int32_t plain = -1; /* output index of the unenriched series */
    if ((rc = ev_check(ev)) < 0) goto out;
    for (size_t i = 0; i < g->n; i++) {
      if (!b->ok[i]) continue;
      lset_t ls = b->ls;
      bool found = false;
      if (!is_info && any) {
        for (size_t x = lo; x < hi; x++) {
          size_t q = ord[x].idx;
          vser_t *is = &info.vs[q];
          if (!is->ok[i] || !same_label(&b->ls, &is->ls, "instance") || !same_label(&b->ls, &is->ls, "job")) continue;
          if (info_superseded(&info, ord, lo, hi, q, i)) continue;
          found = true;
          for (size_t l = 0; l < is->ls.n; l++) {
            const tsdb_label_t *dl = &is->ls.l[l];
            if (!info_is_data_label(&c, dl->name)) continue;
            if (lset_get(&b->ls, dl->name)) continue; /* the base series' own label wins */
            const char *have = lset_get(&ls, dl->name);
            if (have && strcmp(have, dl->value)) {
              rc = ev_fail(ev, MD_ERR, "conflicting label: %s has values \"%s\" and \"%s\" in the info series matching one series",
                           dl->name, have, dl->value);
              goto out;
            }
            if (!have && !(ls = lset_set(ev, &ls, dl->name, dl->value)).l) { rc = fail_oom(ev); goto out; }
          }
        }
        if (!found && !c.data_accept_empty) continue;
      }
      int32_t oi;
      if (ls.l == b->ls.l && plain >= 0) {
        oi = plain;
      } else {
        if ((rc = vv_out_index(ev, &vo, out, ls, b->drop, g->n, &oi)) < 0) goto out;
        if (ls.l == b->ls.l) plain = oi;
      }
      vser_t *o = &out->vs[oi];
      if (o->ok[i]) {
        rc = ev_fail(ev, MD_ERR, "vector cannot contain metrics with the same labelset");
        goto out;
      }
      o->v[i] = b->v[i];
      o->ok[i] = 1;
    }
  }
  rc = 0;
out:
  for (size_t j = 0; j < c.nname; j++) core_regex_free(c.name_re[j]);
  return rc;
}

int ev_eval(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  memset(out, 0, sizeof *out);
  int rc = ev_check(ev);
  if (rc < 0) return rc;
  switch (n->kind) {
  case N_NUM:
  case N_STR:
    if (n->kind == N_STR) {
      out->type = PT_STRING;
      out->str = n->str;
      return 0;
    }
    out->type = PT_SCALAR;
    out->sc = arena_alloc(ev->a, g->n * sizeof(double));
    if (!out->sc) return fail_oom(ev);
    for (size_t i = 0; i < g->n; i++) out->sc[i] = n->num;
    return 0;
  case N_PAREN: return ev_eval(ev, n->a, g, out);
  case N_UNARY:
    if ((rc = ev_eval(ev, n->a, g, out)) < 0) return rc;
    if (n->op == OP_SUB) {
      if (out->type == PT_SCALAR) {
        for (size_t i = 0; i < g->n; i++) out->sc[i] = -out->sc[i];
      } else {
        for (size_t k = 0; k < out->nvs; k++) {
          vser_t *s = &out->vs[k];
          double *nv = arena_alloc(ev->a, g->n * sizeof(double));
          if (!nv) return fail_oom(ev);
          for (size_t i = 0; i < g->n; i++) nv[i] = -s->v[i];
          s->v = nv;
          s->drop = true;
        }
      }
    }
    return 0;
  case N_BIN: return eval_binary(ev, n, g, out);
  case N_AGG: return eval_aggregate(ev, n, g, out);
  case N_CALL: return n->func->id == F_INFO ? eval_info(ev, n, g, out) : ev_call(ev, n, g, out);
  case N_SEL:
    if (n->is_matrix) return eval_matrix_selector(ev, n, g, out);
    return eval_vector_selector(ev, n, g, out, false, NULL);
  case N_SUBQ: return eval_subquery(ev, n, g, out);
  }
  return ev_fail(ev, MD_ERR, "unknown expression node");
}

/* Vector selector evaluated with sample timestamps kept (for timestamp()). */
int ev_eval_selector_ts(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out);
int ev_eval_selector_ts(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  memset(out, 0, sizeof *out);
  return eval_vector_selector(ev, n, g, out, true, NULL);
}
