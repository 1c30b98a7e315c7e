/*
 * eval.h — private to src/promql: the evaluator's value model, shared by eval.c (selectors,
 * operators, aggregations, subqueries) and func.c (functions).
 *
 * Every node is evaluated once over a whole time grid (all steps of a range query; one step
 * for an instant query), not once per step: a vector is a set of series, each with one value
 * slot and one presence flag per step; a range vector is a set of series with their raw
 * samples plus, per step, the end of that step's window. All memory is in the query arena.
 *
 * Metric names are removed late (Prometheus 3.x delayed name removal): operators and
 * functions that drop the name only set `drop` on a series; the name goes at the very end
 * (or when label_replace/label_join reads or writes it), and then series that became equal
 * are merged or reported as duplicates.
 */
#ifndef METRICSD_PROMQL_EVAL_H
#define METRICSD_PROMQL_EVAL_H

#include <string.h>

#include "promql/pql.h"

typedef struct lset {
  tsdb_label_t *l;
  size_t n;
} lset_t;

typedef struct grid {
  int64_t start, step; /* t_i = start + i * step */
  size_t n;
} grid_t;

static inline int64_t grid_t_at(const grid_t *g, size_t i) { return g->start + (int64_t)i * g->step; }

typedef struct vser {
  lset_t ls;
  bool drop;     /* __name__ to be removed at the end */
  double *v;     /* n steps */
  uint8_t *ok;   /* presence per step */
  double *tsv;   /* sample timestamps (s) per step, only from selectors evaluated for timestamp() */
} vser_t;

typedef struct mser {
  lset_t ls;
  bool drop;
  int64_t *ts;
  double *v;
  size_t n;
} mser_t;

typedef struct value {
  pql_type_t type;
  double *sc;           /* PT_SCALAR: n steps */
  const char *str;      /* PT_STRING */
  vser_t *vs;           /* PT_VECTOR */
  size_t nvs, capvs;
  mser_t *ms;           /* PT_MATRIX */
  size_t nms;
  int64_t range_ms;     /* PT_MATRIX: window (wend[i] - range, wend[i]] */
  int64_t *wend;
  int ext;              /* PT_MATRIX from an anchored/smoothed selector: samples reach back a
                         * lookback before each window (and, smoothed, a lookback after it) */
  bool ordered;         /* vector series are in a meaningful order (sort, topk) for 1 step */
} value_t;

typedef struct ev {
  tsdb_t *db;
  const char *tenant;
  arena_t *a;
  promql_options_t opt;
  int64_t qstart, qend;   /* the query's start and end (for @ start() / end()) */
  int64_t qstep;          /* the query's step (0 for instant queries) */
  int64_t deadline_ns;
  bool range_query;
  uint64_t samples_read;
  size_t samples_held;
  size_t series_selected;
  int checks;
  char **warn; size_t nwarn, capwarn;
  char **info; size_t ninfo, capinfo;
  char *err;
  size_t errlen;
} ev_t;

int ev_eval(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out);
int ev_check(ev_t *ev); /* timeout / cancel, cheap enough to call per series */
int ev_fail(ev_t *ev, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ev_warn(ev_t *ev, bool info, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ev_account(ev_t *ev, size_t samples);

vser_t *ev_vec_add(ev_t *ev, value_t *v, lset_t ls, bool drop, size_t nsteps);
const char *lset_get(const lset_t *ls, const char *name);
lset_t lset_without_name(ev_t *ev, const lset_t *ls);
lset_t lset_set(ev_t *ev, const lset_t *ls, const char *name, const char *value); /* "" deletes */
int lset_cmp(const lset_t *a, const lset_t *b);
uint64_t lset_hash(const lset_t *ls);
void lset_format(const lset_t *ls, sb_t *out); /* {a="b", ...} */
const char *ev_metric_name(const lset_t *ls);

/* A copy of ls (labels and strings) in the query arena: labels handed to a selector callback
 * are the storage's and only valid during the call. */
lset_t ev_lset_copy(ev_t *ev, const lset_t *ls);

static inline bool ev_is_stale(double v) {
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  return b == TSDB_STALE_NAN_BITS;
}

/* Accumulating aggregation (sum, avg, count, min, max, group, stddev, stdvar) fed one series
 * at a time, so a streamed input never has to be materialised: groups are kept in the order
 * of their first series and every (group, step) cell folds its series in the order they are
 * added, exactly as over a materialised vector. The input's labels are copied only for a new
 * group; v/ok (one slot per step) are read during the call only. */
typedef struct agg_acc agg_acc_t;
bool ev_agg_accumulates(int op);
int ev_agg_begin(ev_t *ev, const pql_node_t *n, size_t steps, size_t hint, agg_acc_t **out);
int ev_agg_add(ev_t *ev, agg_acc_t *a, const lset_t *ls, bool drop, const double *v, const uint8_t *ok);
int ev_agg_end(ev_t *ev, agg_acc_t *a, value_t *out);

/* A range function over a matrix selector (rate(x[5m])) that can be evaluated series by series
 * straight from the storage (what ev_call_into streams into an aggregation). */
bool ev_call_streams(const pql_node_t *n);

/* A matrix selector's windows for the grid (type, range, wend, ext; no series) and the time
 * range its samples come from. */
int ev_matrix_windows(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, int64_t *mint, int64_t *maxt);
/* Selects the matrix selector n's series in [mint, maxt] and calls fn once per series that has
 * samples, stale markers removed; the series, its labels included, is only valid during the
 * call (ev_lset_copy to keep them). */
typedef int (*ev_series_fn)(ev_t *ev, void *ctx, const mser_t *s);
int ev_stream_matrix(ev_t *ev, const pql_node_t *n, const grid_t *g, int64_t mint, int64_t maxt, ev_series_fn fn,
                     void *ctx);

/* Functions (func.c). */
int ev_call(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out);
/* ev_call for an n where ev_call_streams(n): every output series goes into sink, not out. */
int ev_call_into(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, agg_acc_t *sink);
/* Prometheus's float helpers. */
void kahan_inc(double inc, double *sum, double *c);
double pql_quantile(double q, double *vals, size_t n); /* sorts vals */
void fmt_float_plain(double v, char *buf, size_t n); /* Go FormatFloat(v, 'f', -1, 64) */
/* Removes __name__ from series marked drop, then fails on series that became equal at the
 * same step; series equal but disjoint in time are merged. */
int ev_drop_names(ev_t *ev, value_t *v, size_t nsteps);
/* Value of a smoothed selector at t from samples ts/v: the sample at t, else linear
 * interpolation between its neighbours (counter: across a reset the counter is taken to restart
 * from 0 at the earlier one), else the one neighbour there is. False with no sample at all. */
bool ev_smoothed_value(const int64_t *ts, const double *v, size_t n, int64_t t, bool counter, double *out);

#endif
