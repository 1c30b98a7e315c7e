/*
 * query.c — public entry points (instant and range evaluation), the result object and its
 * JSON form (the Prometheus HTTP API `data` object).
 *
 * A result owns the query arena: labels and points in it point into arena memory, so the
 * result is freed in one call. Matrix results are sorted by label set; instant vectors keep
 * the order the expression gave them (sort, topk), otherwise they are sorted too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/eval.h"

struct promql_result {
  arena_t *arena;
  promql_value_type_t type;
  double scalar;
  const char *str;
  int64_t ts;
  struct rseries {
    lset_t ls;
    int64_t *ts;
    double *v;
    size_t n;
  } *series;
  size_t nseries;
  char **warn, **info;
  size_t nwarn, ninfo;
  uint64_t samples_read;
};

void promql_options_default(promql_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->lookback_ms = 5 * 60 * 1000;
  opt->subquery_step_ms = 60 * 1000;
  opt->timeout_ms = 2 * 60 * 1000;
  opt->max_samples = 50000000;
}

bool promql_error_is_timeout(const char *err) { return err && strstr(err, "timed out") != NULL; }

static int cmp_rseries(const void *a, const void *b) {
  const struct rseries *x = a, *y = b;
  return lset_cmp(&x->ls, &y->ls);
}

/* Labels in a value may point into the expression's arena (string literals, matcher values
 * used by absent(), group_left labels); the result must outlive the expression. */
static lset_t own_labels(arena_t *a, lset_t ls) {
  lset_t o = {arena_alloc(a, (ls.n + 1) * sizeof(tsdb_label_t)), ls.n};
  if (!o.l) return (lset_t){NULL, 0};
  for (size_t i = 0; i < ls.n; i++) {
    o.l[i].name = arena_strdup(a, ls.l[i].name);
    o.l[i].value = arena_strdup(a, ls.l[i].value);
    if (!o.l[i].name || !o.l[i].value) return (lset_t){NULL, 0};
  }
  return o;
}

/* Shared driver: evaluates over a grid and converts to a result. */
static int run(tsdb_t *db, const char *tenant, const promql_expr_t *e, int64_t start, int64_t end, int64_t step,
               bool range, const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  promql_result_t *r = calloc(1, sizeof *r);
  if (!r) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  r->arena = arena_new(0);
  if (!r->arena) {
    free(r);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  ev_t ev = {.db = db, .tenant = tenant ? tenant : "", .a = r->arena, .qstart = start, .qend = end, .qstep = range ? step : 0,
             .range_query = range, .err = err, .errlen = errlen};
  if (opt) ev.opt = *opt;
  else promql_options_default(&ev.opt);
  if (ev.opt.lookback_ms <= 0) ev.opt.lookback_ms = 5 * 60 * 1000;
  if (ev.opt.subquery_step_ms <= 0) ev.opt.subquery_step_ms = 60 * 1000;
  if (ev.opt.timeout_ms > 0) ev.deadline_ns = md_mono_ns() + ev.opt.timeout_ms * 1000000;
  int rc;
  const pql_node_t *root = e->root;
  if (range && (root->type != PT_SCALAR && root->type != PT_VECTOR)) {
    rc = md_error(err, errlen, MD_EINVAL, "invalid expression type \"%s\" for range query, must be Scalar or instant Vector",
                  pql_type_name(root->type));
    goto fail;
  }
  if (range && step <= 0) {
    rc = md_error(err, errlen, MD_EINVAL, "zero or negative query resolution step widths are not accepted. Try a positive integer");
    goto fail;
  }
  if (range && end < start) {
    rc = md_error(err, errlen, MD_EINVAL, "end timestamp must not be before start time");
    goto fail;
  }
  grid_t g = {start, range ? step : 1, range ? (size_t)((end - start) / step) + 1 : 1};
  if (range && g.n > 11000) {
    rc = md_error(err, errlen, MD_EINVAL,
                  "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
    goto fail;
  }
  value_t v;
  rc = ev_eval(&ev, root, &g, &v);
  if (rc < 0) goto fail;
  r->samples_read = ev.samples_read;
  r->ts = start;
  if (v.type == PT_VECTOR && (rc = ev_drop_names(&ev, &v, g.n)) < 0) goto fail;
  if (v.type == PT_SCALAR && !range) {
    r->type = PROMQL_VALUE_SCALAR;
    r->scalar = v.sc[0];
  } else if (v.type == PT_STRING) {
    r->type = PROMQL_VALUE_STRING;
    r->str = arena_strdup(r->arena, v.str);
    if (!r->str) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
  } else if (v.type == PT_MATRIX) {
    /* Instant query of a range vector: the window at the evaluation time. */
    r->type = PROMQL_VALUE_MATRIX;
    r->series = arena_alloc(r->arena, (v.nms + 1) * sizeof *r->series);
    if (!r->series) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
    int64_t wend = v.wend[0], wstart = wend - v.range_ms;
    for (size_t k = 0; k < v.nms; k++) {
      mser_t *m = &v.ms[k];
      size_t lo = 0, hi = 0;
      while (lo < m->n && m->ts[lo] <= wstart) lo++;
      hi = lo;
      while (hi < m->n && m->ts[hi] <= wend) hi++;
      if (hi == lo) continue;
      struct rseries *s = &r->series[r->nseries++];
      s->ls = m->drop ? lset_without_name(&ev, &m->ls) : m->ls;
      s->ts = m->ts + lo;
      s->v = m->v + lo;
      s->n = hi - lo;
    }
    qsort(r->series, r->nseries, sizeof *r->series, cmp_rseries);
  } else if (v.type == PT_SCALAR) {
    r->type = PROMQL_VALUE_MATRIX;
    r->series = arena_alloc(r->arena, sizeof *r->series);
    int64_t *ts = arena_alloc(r->arena, g.n * sizeof *ts);
    if (!r->series || !ts) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
    for (size_t i = 0; i < g.n; i++) ts[i] = grid_t_at(&g, i);
    r->series[0] = (struct rseries){{NULL, 0}, ts, v.sc, g.n};
    r->nseries = 1;
  } else {
    r->type = range ? PROMQL_VALUE_MATRIX : PROMQL_VALUE_VECTOR;
    r->series = arena_alloc(r->arena, (v.nvs + 1) * sizeof *r->series);
    if (!r->series) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
    for (size_t k = 0; k < v.nvs; k++) {
      vser_t *s = &v.vs[k];
      size_t cnt = 0;
      for (size_t i = 0; i < g.n; i++) cnt += s->ok[i];
      if (!cnt) continue;
      struct rseries *o = &r->series[r->nseries++];
      o->ls = own_labels(r->arena, s->ls);
      if (!o->ls.l) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
      o->n = 0;
      o->ts = arena_alloc(r->arena, cnt * sizeof *o->ts);
      o->v = arena_alloc(r->arena, cnt * sizeof *o->v);
      if (!o->ts || !o->v) { rc = md_error(err, errlen, MD_ENOMEM, "out of memory"); goto fail; }
      for (size_t i = 0; i < g.n; i++)
        if (s->ok[i]) {
          o->ts[o->n] = grid_t_at(&g, i);
          o->v[o->n++] = s->v[i];
        }
    }
    if (range || !v.ordered) qsort(r->series, r->nseries, sizeof *r->series, cmp_rseries);
  }
  r->warn = ev.warn, r->nwarn = ev.nwarn;
  r->info = ev.info, r->ninfo = ev.ninfo;
  *out = r;
  return 0;
fail:
  if (err && errlen && !err[0]) md_error(err, errlen, rc, "query failed");
  promql_result_free(r);
  return rc;
}

int promql_eval_instant(tsdb_t *db, const char *tenant, const promql_expr_t *e, int64_t t_ms,
                        const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen) {
  return run(db, tenant, e, t_ms, t_ms, 0, false, opt, out, err, errlen);
}

int promql_eval_range(tsdb_t *db, const char *tenant, const promql_expr_t *e, int64_t start_ms, int64_t end_ms,
                      int64_t step_ms, const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen) {
  return run(db, tenant, e, start_ms, end_ms, step_ms, true, opt, out, err, errlen);
}

int promql_query_instant(tsdb_t *db, const char *tenant, const char *q, size_t n, int64_t t_ms,
                         const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen) {
  promql_expr_t *e;
  *out = NULL;
  int rc = promql_parse(q, n, &e, NULL, err, errlen);
  if (rc < 0) return rc;
  rc = promql_eval_instant(db, tenant, e, t_ms, opt, out, err, errlen);
  promql_expr_free(e);
  return rc;
}

int promql_query_range(tsdb_t *db, const char *tenant, const char *q, size_t n, int64_t start_ms, int64_t end_ms,
                       int64_t step_ms, const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen) {
  promql_expr_t *e;
  *out = NULL;
  int rc = promql_parse(q, n, &e, NULL, err, errlen);
  if (rc < 0) return rc;
  rc = promql_eval_range(db, tenant, e, start_ms, end_ms, step_ms, opt, out, err, errlen);
  promql_expr_free(e);
  return rc;
}

/* ---- accessors ----------------------------------------------------------------------------- */

promql_value_type_t promql_result_type(const promql_result_t *r) { return r->type; }

const char *promql_result_type_name(const promql_result_t *r) {
  static const char *const names[] = {"scalar", "string", "vector", "matrix"};
  return names[r->type];
}

double promql_result_scalar(const promql_result_t *r, int64_t *ts_ms) {
  if (ts_ms) *ts_ms = r->ts;
  return r->type == PROMQL_VALUE_SCALAR ? r->scalar : NAN;
}

const char *promql_result_string(const promql_result_t *r, int64_t *ts_ms) {
  if (ts_ms) *ts_ms = r->ts;
  return r->type == PROMQL_VALUE_STRING ? r->str : NULL;
}

size_t promql_result_series_count(const promql_result_t *r) { return r->nseries; }

const tsdb_label_t *promql_result_labels(const promql_result_t *r, size_t i, size_t *nlabels) {
  if (i >= r->nseries) {
    *nlabels = 0;
    return NULL;
  }
  *nlabels = r->series[i].ls.n;
  return r->series[i].ls.l;
}

size_t promql_result_points(const promql_result_t *r, size_t i, const int64_t **ts, const double **v) {
  if (i >= r->nseries) return 0;
  *ts = r->series[i].ts;
  *v = r->series[i].v;
  return r->series[i].n;
}

size_t promql_result_warnings(const promql_result_t *r, const char *const **msgs) {
  *msgs = (const char *const *)r->warn;
  return r->nwarn;
}

size_t promql_result_infos(const promql_result_t *r, const char *const **msgs) {
  *msgs = (const char *const *)r->info;
  return r->ninfo;
}

uint64_t promql_result_samples_read(const promql_result_t *r) { return r->samples_read; }

/* ---- JSON ---------------------------------------------------------------------------------- */

/* Seconds with the millisecond fraction, trailing zeros trimmed (1.5, 1.05, 2). */
static void json_ts(sb_t *out, int64_t ts) {
  long long a = llabs(ts), sec = a / 1000, ms = a % 1000;
  sb_printf(out, "%s%lld", ts < 0 ? "-" : "", sec);
  if (ms) {
    char frac[4];
    snprintf(frac, sizeof frac, "%03lld", ms);
    for (int i = 2; i > 0 && frac[i] == '0'; i--) frac[i] = 0;
    sb_printf(out, ".%s", frac);
  }
}

static void json_point(sb_t *out, int64_t ts, double v) {
  sb_putc(out, '[');
  json_ts(out, ts);
  sb_puts(out, ",\"");
  sb_double(out, v);
  sb_puts(out, "\"]");
}

static void json_metric(sb_t *out, const lset_t *ls) {
  sb_puts(out, "{\"metric\":{");
  for (size_t i = 0; i < ls->n; i++) {
    if (i) sb_putc(out, ',');
    sb_json_str(out, ls->l[i].name, strlen(ls->l[i].name));
    sb_putc(out, ':');
    sb_json_str(out, ls->l[i].value, strlen(ls->l[i].value));
  }
  sb_puts(out, "},");
}

void promql_result_json(const promql_result_t *r, sb_t *out) {
  sb_printf(out, "{\"resultType\":\"%s\",\"result\":", promql_result_type_name(r));
  switch (r->type) {
  case PROMQL_VALUE_SCALAR: json_point(out, r->ts, r->scalar); break;
  case PROMQL_VALUE_STRING:
    sb_putc(out, '[');
    json_ts(out, r->ts);
    sb_putc(out, ',');
    sb_json_str(out, r->str, strlen(r->str));
    sb_putc(out, ']');
    break;
  case PROMQL_VALUE_VECTOR:
    sb_putc(out, '[');
    for (size_t k = 0; k < r->nseries; k++) {
      if (k) sb_putc(out, ',');
      json_metric(out, &r->series[k].ls);
      sb_puts(out, "\"value\":");
      json_point(out, r->series[k].ts[0], r->series[k].v[0]);
      sb_putc(out, '}');
    }
    sb_putc(out, ']');
    break;
  case PROMQL_VALUE_MATRIX:
    sb_putc(out, '[');
    for (size_t k = 0; k < r->nseries; k++) {
      if (k) sb_putc(out, ',');
      json_metric(out, &r->series[k].ls);
      sb_puts(out, "\"values\":[");
      for (size_t i = 0; i < r->series[k].n; i++) {
        if (i) sb_putc(out, ',');
        json_point(out, r->series[k].ts[i], r->series[k].v[i]);
      }
      sb_puts(out, "]}");
    }
    sb_putc(out, ']');
    break;
  }
  sb_putc(out, '}');
}

void promql_result_free(promql_result_t *r) {
  if (!r) return;
  arena_free(r->arena);
  free(r);
}
