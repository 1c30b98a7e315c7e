/*
 * func.c — PromQL functions over float samples: range-vector functions (rate family,
 * *_over_time, regression, smoothing), element-wise math, label manipulation, date
 * functions, sorting, absent, histogram_quantile over classic `le` buckets.
 *
 * Range functions slide each step's left-open window (wend - range, wend] over a series'
 * samples by binary search; numeric details (Kahan summation, extrapolation limits,
 * quantile interpolation) follow Prometheus 3.x so results match bit for bit where the
 * conformance corpus compares against zero.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "promql/eval.h"

int ev_eval_selector_ts(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out);

static int fail_oom(ev_t *ev) { return ev_fail(ev, MD_ENOMEM, "out of memory in query execution"); }

/* ---- numeric helpers ----------------------------------------------------------------------- */

void kahan_inc(double inc, double *sum, double *c) {
  double t = *sum + inc;
  if (isinf(t)) *c = 0;
  else if (fabs(*sum) >= fabs(inc)) *c += (*sum - t) + inc;
  else *c += (inc - t) + *sum;
  *sum = t;
}

static int cmp_double_nan_first(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  if (isnan(x)) return isnan(y) ? 0 : -1;
  if (isnan(y)) return 1;
  return x < y ? -1 : x > y;
}

double pql_quantile(double q, double *vals, size_t n) {
  if (n == 0 || isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(vals, n, sizeof *vals, cmp_double_nan_first);
  double rank = q * (double)(n - 1);
  double lower = fmax(0, floor(rank));
  double upper = fmin((double)(n - 1), lower + 1);
  double w = rank - floor(rank);
  return vals[(size_t)lower] * (1 - w) + vals[(size_t)upper] * w;
}

void fmt_float_plain(double v, char *buf, size_t n) {
  if (isnan(v)) { snprintf(buf, n, "NaN"); return; }
  if (isinf(v)) { snprintf(buf, n, v > 0 ? "+Inf" : "-Inf"); return; }
  /* Shortest round-trip digits, then positional notation (Go's 'f', -1). */
  char e[40];
  int prec;
  for (prec = 1; prec <= 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  char digits[24];
  size_t nd = 0;
  const char *p = e;
  bool neg = false;
  if (*p == '-') neg = true, p++;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9') digits[nd++] = *p;
  int exp10 = atoi(p + 1);
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  char out[400];
  size_t o = 0;
  if (neg) out[o++] = '-';
  int point = exp10 + 1; /* digits before the decimal point */
  if (point <= 0) {
    out[o++] = '0';
    out[o++] = '.';
    for (int i = 0; i < -point; i++) out[o++] = '0';
    for (size_t i = 0; i < nd; i++) out[o++] = digits[i];
  } else {
    for (int i = 0; i < point; i++) out[o++] = (size_t)i < nd ? digits[i] : '0';
    if ((size_t)point < nd) {
      out[o++] = '.';
      for (size_t i = (size_t)point; i < nd; i++) out[o++] = digits[i];
    }
  }
  out[o] = 0;
  if (!strcmp(out, "-0")) snprintf(out, sizeof out, "-0");
  snprintf(buf, n, "%s", out);
}

/* ---- range-vector functions ---------------------------------------------------------------- */

typedef struct win {
  const int64_t *ts;
  const double *v;
  size_t n;
  int64_t start, end; /* (start, end] */
  int64_t range_ms;
  double param, param2;
  int64_t now; /* the step's evaluation time (before @ and offset) */
  bool no_resets; /* no sample of the window is below the one before it */
} win_t;

static size_t first_gt(const int64_t *ts, size_t n, int64_t t) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ts[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static bool extrapolated_rate(const win_t *w, bool counter, bool rate, double *out) {
  if (w->n < 2) return false;
  double first = w->v[0], last = w->v[w->n - 1];
  double result = last - first;
  if (counter && !w->no_resets) {
    double prev = w->v[0];
    for (size_t i = 1; i < w->n; i++) {
      if (w->v[i] < prev) result += prev;
      prev = w->v[i];
    }
  }
  double dstart = (double)(w->ts[0] - w->start) / 1000.0;
  double dend = (double)(w->end - w->ts[w->n - 1]) / 1000.0;
  double sampled = (double)(w->ts[w->n - 1] - w->ts[0]) / 1000.0;
  double avg = sampled / (double)(w->n - 1);
  double thr = avg * 1.1;
  if (dstart >= thr) dstart = avg / 2;
  if (counter && result > 0 && first >= 0) {
    double dzero = sampled * (first / result);
    if (dzero < dstart) dstart = dzero;
  }
  if (dend >= thr) dend = avg / 2;
  double factor = (sampled + dstart + dend) / sampled;
  if (rate) factor /= (double)w->range_ms / 1000.0;
  *out = result * factor;
  return true;
}

static void linreg(const win_t *w, int64_t icept_t, double *slope, double *icept) {
  double n = 0, sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0;
  double inity = w->v[0];
  bool consty = true;
  for (size_t i = 0; i < w->n; i++) {
    if (consty && i > 0 && w->v[i] != inity) consty = false;
    n += 1;
    double x = (double)(w->ts[i] - icept_t) / 1000.0;
    kahan_inc(x, &sx, &cx);
    kahan_inc(w->v[i], &sy, &cy);
    kahan_inc(x * w->v[i], &sxy, &cxy);
    kahan_inc(x * x, &sx2, &cx2);
  }
  if (consty) {
    if (isinf(inity)) { *slope = NAN; *icept = NAN; return; }
    *slope = 0;
    *icept = inity;
    return;
  }
  sx += cx, sy += cy, sxy += cxy, sx2 += cx2;
  double cov = sxy - sx * sy / n;
  double var = sx2 - sx * sx / n;
  *slope = cov / var;
  *icept = sy / n - *slope * sx / n;
}

static double *scratch_buf(ev_t *ev, size_t n) {
  static _Thread_local double *buf; /* never: keep per-query memory in the arena */
  (void)buf;
  return arena_alloc(ev->a, (n ? n : 1) * sizeof(double));
}

/* Computes one range function over one window; false = no output at this step. */
static bool range_fn(ev_t *ev, int id, const win_t *w, double *out, double **scratch, size_t *scap) {
  size_t n = w->n;
  switch (id) {
  case F_RATE: return extrapolated_rate(w, true, true, out);
  case F_INCREASE: return extrapolated_rate(w, true, false, out);
  case F_DELTA: return extrapolated_rate(w, false, false, out);
  case F_IRATE:
  case F_IDELTA: {
    if (n < 2) return false;
    double l = w->v[n - 1], p = w->v[n - 2];
    int64_t dt = w->ts[n - 1] - w->ts[n - 2];
    if (id == F_IDELTA) { *out = l - p; return true; }
    if (dt == 0) return false;
    double r = (l < p) ? l : l - p;
    *out = r / ((double)dt / 1000.0);
    return true;
  }
  case F_AVG_OVER_TIME: {
    if (!n) return false;
    double sum = 0, c = 0, mean = 0, kc = 0, count = 0;
    bool incr = false;
    for (size_t i = 0; i < n; i++) {
      double f = w->v[i];
      count++;
      if (!incr) {
        double ns = sum, nc = c;
        kahan_inc(f, &ns, &nc);
        if (count == 1 || !isinf(ns)) { sum = ns, c = nc; continue; }
        incr = true;
        mean = sum / (count - 1);
        kc = c / (count - 1);
      }
      double q = (count - 1) / count;
      double m2 = q * mean, c2 = q * kc;
      kahan_inc(f / count, &m2, &c2);
      mean = m2, kc = c2;
    }
    *out = incr ? mean + kc : sum / count + c / count;
    return true;
  }
  case F_SUM_OVER_TIME: {
    if (!n) return false;
    double sum = 0, c = 0;
    for (size_t i = 0; i < n; i++) kahan_inc(w->v[i], &sum, &c);
    *out = isinf(sum) ? sum : sum + c;
    return true;
  }
  case F_COUNT_OVER_TIME: if (!n) return false; *out = (double)n; return true;
  case F_PRESENT_OVER_TIME: if (!n) return false; *out = 1; return true;
  case F_LAST_OVER_TIME: if (!n) return false; *out = w->v[n - 1]; return true;
  case F_FIRST_OVER_TIME: if (!n) return false; *out = w->v[0]; return true;
  case F_TS_OF_LAST_OVER_TIME: if (!n) return false; *out = (double)w->ts[n - 1] / 1000.0; return true;
  case F_TS_OF_FIRST_OVER_TIME: if (!n) return false; *out = (double)w->ts[0] / 1000.0; return true;
  case F_MAX_OVER_TIME:
  case F_MIN_OVER_TIME:
  case F_TS_OF_MAX_OVER_TIME:
  case F_TS_OF_MIN_OVER_TIME: {
    if (!n) return false;
    bool max = id == F_MAX_OVER_TIME || id == F_TS_OF_MAX_OVER_TIME;
    double m = w->v[0];
    int64_t mt = w->ts[0];
    for (size_t i = 1; i < n; i++) {
      double x = w->v[i];
      bool better = max ? (x > m || isnan(m)) : (x < m || isnan(m));
      if (id == F_TS_OF_MAX_OVER_TIME || id == F_TS_OF_MIN_OVER_TIME)
        better = max ? (x >= m || isnan(m)) : (x <= m || isnan(m));
      if (better) m = x, mt = w->ts[i];
    }
    *out = (id == F_MAX_OVER_TIME || id == F_MIN_OVER_TIME) ? m : (double)mt / 1000.0;
    return true;
  }
  case F_STDDEV_OVER_TIME:
  case F_STDVAR_OVER_TIME: {
    if (!n) return false;
    double count = 0, mean = 0, cm = 0, aux = 0, ca = 0;
    for (size_t i = 0; i < n; i++) {
      double f = w->v[i];
      count++;
      double delta = f - (mean + cm);
      kahan_inc(delta / count, &mean, &cm);
      kahan_inc(delta * (f - (mean + cm)), &aux, &ca);
    }
    double var = (aux + ca) / count;
    *out = id == F_STDDEV_OVER_TIME ? sqrt(var) : var;
    return true;
  }
  case F_QUANTILE_OVER_TIME:
  case F_MAD_OVER_TIME: {
    if (!n) return false;
    if (*scap < n) {
      *scratch = scratch_buf(ev, n * 2);
      if (!*scratch) return false;
      *scap = n * 2;
    }
    memcpy(*scratch, w->v, n * sizeof(double));
    if (id == F_QUANTILE_OVER_TIME) {
      *out = pql_quantile(w->param, *scratch, n);
      return true;
    }
    for (size_t i = 0; i < n; i++)
      if (isnan(w->v[i])) { *out = NAN; return true; }
    double med = pql_quantile(0.5, *scratch, n);
    for (size_t i = 0; i < n; i++) (*scratch)[i] = fabs(w->v[i] - med);
    *out = pql_quantile(0.5, *scratch, n);
    return true;
  }
  case F_CHANGES:
  case F_RESETS: {
    if (!n) return false;
    double c = 0, prev = w->v[0];
    for (size_t i = 1; i < n; i++) {
      double cur = w->v[i];
      if (id == F_CHANGES) {
        if (!(cur == prev || (isnan(cur) && isnan(prev)))) c++;
      } else if (cur < prev) {
        c++;
      }
      prev = cur;
    }
    *out = c;
    return true;
  }
  case F_DERIV: {
    if (n < 2) return false;
    double slope, icept;
    linreg(w, w->ts[0], &slope, &icept);
    *out = slope;
    return true;
  }
  case F_PREDICT_LINEAR: {
    if (n < 2) return false;
    double slope, icept;
    linreg(w, w->now, &slope, &icept);
    *out = icept + slope * w->param;
    return true;
  }
  case F_HOLT_WINTERS: {
    if (n < 2) return false;
    double sf = w->param, tf = w->param2;
    double s0 = 0, s1 = w->v[0], b = w->v[1] - w->v[0];
    for (size_t i = 1; i < n; i++) {
      double x = sf * w->v[i];
      if (i > 1) b = tf * (s1 - s0) + (1 - tf) * b;
      double y = (1 - sf) * (s1 + b);
      s0 = s1;
      s1 = x + y;
    }
    *out = s1;
    return true;
  }
  case F_ABSENT_OVER_TIME: return false;
  default: return false;
  }
}

/* rate/increase/delta/changes/resets over an anchored or smoothed window (start, end] of the
 * series' samples ts/v, which reach a lookback beyond the window. The window becomes a sequence
 * of points: anchored, the last sample in the lookback before start (if any) and the samples
 * in the window, of which there must be one; smoothed, the values interpolated at start and end
 * around the samples inside, which needs data on both sides of the window's edges. No
 * extrapolation: increase is last - first plus the counter resets' corrections. */
static bool ext_range_fn(ev_t *ev, int id, int ext, const mser_t *s, int64_t start, int64_t end, int64_t range_ms,
                         double *out) {
  int64_t lb = ev->opt.lookback_ms;
  size_t lo = first_gt(s->ts, s->n, start), hi = first_gt(s->ts, s->n, end);
  double first, last;
  const double *inner = s->v + lo;
  size_t ninner = hi - lo;
  bool counter = id == F_RATE || id == F_INCREASE;
  if (ext == EXT_ANCHORED) {
    if (ninner == 0) return false;
    bool anchor = lo > 0 && s->ts[lo - 1] > start - lb;
    first = anchor ? s->v[lo - 1] : inner[0];
    last = inner[ninner - 1];
    if (!anchor) inner++, ninner--;
  } else {
    size_t from = first_gt(s->ts, s->n, start - lb), to = first_gt(s->ts, s->n, end + lb);
    if (from >= to || s->ts[from] > end || s->ts[to - 1] <= start) return false;
    if (!ev_smoothed_value(s->ts + from, s->v + from, to - from, start, counter, &first) ||
        !ev_smoothed_value(s->ts + from, s->v + from, to - from, end, counter, &last))
      return false;
    if (ninner && s->ts[hi - 1] == end) ninner--; /* the end point is that sample */
  }
  double prev = first, result = 0;
  size_t changes = 0, resets = 0;
  for (size_t i = 0; i <= ninner; i++) {
    double cur = i < ninner ? inner[i] : last;
    if (cur != prev && !(isnan(cur) && isnan(prev))) changes++;
    if (cur < prev) {
      resets++;
      result += prev;
    }
    prev = cur;
  }
  switch (id) {
  case F_INCREASE: *out = last - first + result; return true;
  case F_RATE: *out = (last - first + result) / ((double)range_ms / 1000.0); return true;
  case F_DELTA: *out = last - first; return true;
  case F_CHANGES: *out = (double)changes; return true;
  case F_RESETS: *out = (double)resets; return true;
  default: return false;
  }
}

static bool is_counter_name(const char *nm) {
  size_t l = strlen(nm);
  static const char *const suf[] = {"_total", "_sum", "_count", "_bucket"};
  for (size_t i = 0; i < 4; i++) {
    size_t sl = strlen(suf[i]);
    if (l >= sl && !strcmp(nm + l - sl, suf[i])) return true;
  }
  return false;
}

/* One range function over one series, every step: shared by the materialised and the
 * streamed matrix paths. With a sink (an aggregation over the function) the series' values go
 * into it instead of a new output series. */
typedef struct rfn_ctx {
  int id;
  const grid_t *g;
  const value_t *m; /* windows: range_ms, wend, ext */
  const value_t *p1, *p2;
  value_t *out;
  bool keep_name, counter_fn;
  double *scratch;
  size_t scap;
  agg_acc_t *sink;
  double *sv;       /* sink: this series' values and presence per step */
  uint8_t *sok;
} rfn_ctx_t;

/* Index of the first ts > t at or after from, for windows that move forward: a short linear
 * walk (a step usually moves a window by a few samples), then binary search. */
static size_t advance_gt(const int64_t *ts, size_t n, size_t from, int64_t t) {
  for (int k = 0; k < 8; k++, from++)
    if (from >= n || ts[from] > t) return from;
  return from + first_gt(ts + from, n - from, t);
}

static int rfn_series(ev_t *ev, void *vctx, const mser_t *s) {
  rfn_ctx_t *c = vctx;
  const value_t *m = c->m;
  int id = c->id;
  vser_t *o = NULL;
  double *ov = c->sv;
  uint8_t *ook = c->sok;
  bool any = false;
  if (c->sink) memset(ook, 0, c->g->n);
  /* A counter that never goes down needs no reset scan per window (the common case). */
  bool no_resets = false;
  if (id == F_RATE || id == F_INCREASE) {
    size_t i = 1;
    while (i < s->n && !(s->v[i] < s->v[i - 1])) i++;
    no_resets = i >= s->n;
  }
  size_t lo = 0, hi = 0;
  for (size_t i = 0; i < c->g->n; i++) {
    int64_t end = m->wend[i], start = end - m->range_ms;
    if (i > 0 && end >= m->wend[i - 1]) {
      lo = advance_gt(s->ts, s->n, lo, start);
      hi = advance_gt(s->ts, s->n, hi, end);
    } else {
      lo = first_gt(s->ts, s->n, start);
      hi = first_gt(s->ts, s->n, end);
    }
    win_t w = {s->ts + lo, s->v + lo, hi - lo, start, end, m->range_ms, c->p1->sc ? c->p1->sc[i] : 0,
               c->p2->sc ? c->p2->sc[i] : 0, grid_t_at(c->g, i), no_resets};
    double v;
    if (m->ext ? !ext_range_fn(ev, id, m->ext, s, start, end, m->range_ms, &v)
               : !range_fn(ev, id, &w, &v, &c->scratch, &c->scap))
      continue;
    if (!any) {
      any = true;
      if (!c->sink) {
        lset_t own = ev_lset_copy(ev, &s->ls);
        if (!own.l || !(o = ev_vec_add(ev, c->out, own, c->keep_name ? s->drop : true, c->g->n))) return fail_oom(ev);
        ov = o->v, ook = o->ok;
      } else {
        /* held as if materialised: the limits do not depend on the plan */
        int rc = ev_account(ev, c->g->n);
        if (rc < 0) return rc;
      }
      if (c->counter_fn) {
        const char *nm = ev_metric_name(&s->ls);
        if (*nm && !is_counter_name(nm))
          ev_warn(ev, true, "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"%s\"", nm);
      }
    }
    ov[i] = v;
    ook[i] = 1;
  }
  if (any && c->sink) {
    int rc = ev_agg_add(ev, c->sink, &s->ls, c->keep_name ? s->drop : true, ov, ook);
    if (rc < 0) return rc;
  }
  return ev_check(ev);
}

static bool is_range_fn(const pql_node_t *n) {
  return n->kind == N_CALL && n->func->id != F_INFO &&
         (n->func->args[0] == PT_MATRIX || n->func->id == F_QUANTILE_OVER_TIME);
}

bool ev_call_streams(const pql_node_t *n) {
  if (!is_range_fn(n) || n->func->id == F_ABSENT_OVER_TIME) return false;
  const pql_node_t *sel = n->args[n->func->id == F_QUANTILE_OVER_TIME ? 1 : 0];
  while (sel->kind == N_PAREN) sel = sel->a;
  return sel->kind == N_SEL && sel->is_matrix;
}

static int eval_range_fn(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, agg_acc_t *sink) {
  int id = n->func->id;
  value_t m = {0}, p1 = {0}, p2 = {0};
  int rc;
  const pql_node_t *marg = n->args[0];
  if (id == F_QUANTILE_OVER_TIME) {
    marg = n->args[1];
    if ((rc = ev_eval(ev, n->args[0], g, &p1)) < 0) return rc;
  } else if (id == F_PREDICT_LINEAR) {
    if ((rc = ev_eval(ev, n->args[1], g, &p1)) < 0) return rc;
  } else if (id == F_HOLT_WINTERS) {
    if ((rc = ev_eval(ev, n->args[1], g, &p1)) < 0) return rc;
    if ((rc = ev_eval(ev, n->args[2], g, &p2)) < 0) return rc;
  }
  /* A range function straight over a matrix selector streams it, series by series, from the
   * storage's buffers: materialising every sample in the arena first cost more than the
   * functions themselves. absent_over_time needs all series at once. */
  const pql_node_t *sel = marg;
  while (sel->kind == N_PAREN) sel = sel->a;
  bool stream = sel->kind == N_SEL && sel->is_matrix && id != F_ABSENT_OVER_TIME;
  int64_t smint = 0, smaxt = 0;
  if (stream) rc = ev_matrix_windows(ev, sel, g, &m, &smint, &smaxt);
  else rc = ev_eval(ev, marg, g, &m);
  if (rc < 0) return rc;
  out->type = PT_VECTOR;
  bool keep_name = id == F_LAST_OVER_TIME || id == F_FIRST_OVER_TIME;
  double *scratch = NULL;
  size_t scap = 0;
  if (id == F_HOLT_WINTERS) {
    for (size_t i = 0; i < g->n; i++) {
      if (!(p1.sc[i] > 0 && p1.sc[i] < 1))
        return ev_fail(ev, MD_ERR, "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", p1.sc[i]);
      if (!(p2.sc[i] > 0 && p2.sc[i] < 1))
        return ev_fail(ev, MD_ERR, "invalid trend factor. Expected: 0 < tf < 1, got: %f", p2.sc[i]);
    }
  }
  if (id == F_QUANTILE_OVER_TIME) {
    for (size_t i = 0; i < g->n; i++) {
      double q = p1.sc[i];
      if (isnan(q) || q < 0 || q > 1) {
        if (isnan(q)) ev_warn(ev, false, "quantile value should be between 0 and 1, got NaN");
        else ev_warn(ev, false, "quantile value should be between 0 and 1, got %g", q);
      }
    }
  }
  if (id == F_ABSENT_OVER_TIME) {
    /* Present when no series has a sample in the window. */
    vser_t *o = NULL;
    for (size_t i = 0; i < g->n; i++) {
      bool any = false;
      for (size_t k = 0; k < m.nms && !any; k++) {
        mser_t *s = &m.ms[k];
        size_t lo = first_gt(s->ts, s->n, m.wend[i] - m.range_ms), hi = first_gt(s->ts, s->n, m.wend[i]);
        any = hi > lo;
      }
      if (any) continue;
      if (!o) {
        lset_t ls = {0};
        const pql_node_t *sel = marg;
        while (sel->kind == N_PAREN) sel = sel->a;
        if (sel->kind == N_SEL) {
          ls.l = arena_alloc(ev->a, (sel->nmatchers + 1) * sizeof(tsdb_label_t));
          if (!ls.l) return fail_oom(ev);
          for (size_t j = 0; j < sel->nmatchers; j++) {
            const tsdb_matcher_t *mt = &sel->matchers[j];
            if (mt->type != TSDB_MATCH_EQ || !strcmp(mt->name, "__name__")) continue;
            lset_t t = lset_set(ev, &ls, mt->name, mt->value);
            ls = t;
          }
          /* A label with two equality matchers is ambiguous: drop it. */
          for (size_t j = 0; j < sel->nmatchers; j++)
            for (size_t q = j + 1; q < sel->nmatchers; q++)
              if (!strcmp(sel->matchers[j].name, sel->matchers[q].name))
                ls = lset_set(ev, &ls, sel->matchers[j].name, "");
        }
        if (!(o = ev_vec_add(ev, out, ls, false, g->n))) return fail_oom(ev);
      }
      o->v[i] = 1;
      o->ok[i] = 1;
    }
    return 0;
  }
  rfn_ctx_t c = {id, g, &m, &p1, &p2, out, keep_name, id == F_RATE || id == F_INCREASE || id == F_IRATE, scratch, scap,
                 sink, NULL, NULL};
  if (sink) {
    c.sv = arena_alloc(ev->a, (g->n + 1) * sizeof *c.sv);
    c.sok = arena_alloc(ev->a, g->n + 1);
    if (!c.sv || !c.sok) return fail_oom(ev);
  }
  if (stream) return ev_stream_matrix(ev, sel, g, smint, smaxt, rfn_series, &c);
  for (size_t k = 0; k < m.nms; k++)
    if ((rc = rfn_series(ev, &c, &m.ms[k])) < 0) return rc;
  return 0;
}

/* ---- element-wise functions ---------------------------------------------------------------- */

static double date_part(int id, double secs) {
  if (isnan(secs) || isinf(secs) || fabs(secs) > 1e15) return NAN;
  time_t t = (time_t)floor(secs);
  struct tm tm;
  gmtime_r(&t, &tm);
  switch (id) {
  case F_DAY_OF_MONTH: return tm.tm_mday;
  case F_DAY_OF_WEEK: return tm.tm_wday;
  case F_DAY_OF_YEAR: return tm.tm_yday + 1;
  case F_HOUR: return tm.tm_hour;
  case F_MINUTE: return tm.tm_min;
  case F_MONTH: return tm.tm_mon + 1;
  case F_YEAR: return tm.tm_year + 1900;
  case F_DAYS_IN_MONTH: {
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = tm.tm_year + 1900;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return tm.tm_mon == 1 && leap ? 29 : dm[tm.tm_mon];
  }
  default: return NAN;
  }
}

static double math_fn(int id, double x, double a, double b, bool *keep) {
  *keep = true;
  switch (id) {
  case F_ABS: return fabs(x);
  case F_CEIL: return ceil(x);
  case F_FLOOR: return floor(x);
  case F_EXP: return exp(x);
  case F_SQRT: return sqrt(x);
  case F_LN: return log(x);
  case F_LOG2: return log2(x);
  case F_LOG10: return log10(x);
  case F_SIN: return sin(x);
  case F_COS: return cos(x);
  case F_TAN: return tan(x);
  case F_ASIN: return asin(x);
  case F_ACOS: return acos(x);
  case F_ATAN: return atan(x);
  case F_SINH: return sinh(x);
  case F_COSH: return cosh(x);
  case F_TANH: return tanh(x);
  case F_ASINH: return asinh(x);
  case F_ACOSH: return acosh(x);
  case F_ATANH: return atanh(x);
  case F_DEG: return x * 180 / M_PI;
  case F_RAD: return x * M_PI / 180;
  case F_SGN: return x > 0 ? 1 : x < 0 ? -1 : x;
  case F_CLAMP:
    if (b < a) { *keep = false; return 0; }
    return fmax(a, fmin(b, x));
  case F_CLAMP_MAX: return fmin(a, x);
  case F_CLAMP_MIN: return fmax(a, x);
  case F_ROUND: {
    double inv = 1.0 / a;
    return floor(x * inv + 0.5) / inv;
  }
  default: return date_part(id, x);
  }
}

/* Go's math.Max/Min propagate NaN; C's fmax/fmin ignore it. */
static double go_max(double a, double b) { return isnan(a) || isnan(b) ? NAN : fmax(a, b); }
static double go_min(double a, double b) { return isnan(a) || isnan(b) ? NAN : fmin(a, b); }

static int eval_elementwise(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int id = n->func->id;
  value_t in = {0}, a = {0}, b = {0};
  int rc;
  bool date = id == F_DAY_OF_MONTH || id == F_DAY_OF_WEEK || id == F_DAY_OF_YEAR || id == F_HOUR ||
              id == F_MINUTE || id == F_MONTH || id == F_YEAR || id == F_DAYS_IN_MONTH;
  if (date && n->nargs == 0) {
    /* Defaults to vector(time()). */
    out->type = PT_VECTOR;
    lset_t empty = {0};
    vser_t *o = ev_vec_add(ev, out, empty, false, g->n);
    if (!o) return fail_oom(ev);
    for (size_t i = 0; i < g->n; i++) o->v[i] = date_part(id, (double)grid_t_at(g, i) / 1000.0), o->ok[i] = 1;
    return 0;
  }
  if ((rc = ev_eval(ev, n->args[0], g, &in)) < 0) return rc;
  if (n->nargs > 1 && (rc = ev_eval(ev, n->args[1], g, &a)) < 0) return rc;
  if (n->nargs > 2 && (rc = ev_eval(ev, n->args[2], g, &b)) < 0) return rc;
  out->type = PT_VECTOR;
  for (size_t k = 0; k < in.nvs; k++) {
    vser_t *s = &in.vs[k];
    vser_t *o = NULL;
    for (size_t i = 0; i < g->n; i++) {
      if (!s->ok[i]) continue;
      bool keep;
      double av = a.sc ? a.sc[i] : 1, bv = b.sc ? b.sc[i] : 0;
      double v;
      if (id == F_CLAMP) {
        if (bv < av) continue;
        v = go_max(av, go_min(bv, s->v[i]));
        keep = true;
      } else if (id == F_CLAMP_MAX) {
        v = go_min(av, s->v[i]), keep = true;
      } else if (id == F_CLAMP_MIN) {
        v = go_max(av, s->v[i]), keep = true;
      } else {
        v = math_fn(id, s->v[i], av, bv, &keep);
      }
      if (!keep) continue;
      if (!o && !(o = ev_vec_add(ev, out, s->ls, true, g->n))) return fail_oom(ev);
      o->v[i] = v;
      o->ok[i] = 1;
    }
  }
  return 0;
}

/* ---- labels -------------------------------------------------------------------------------- */

static bool valid_label_name(const char *s) {
  if (!*s) return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (p != s && *p >= '0' && *p <= '9')))
      return false;
  return true;
}

/* Go regexp Expand: $1, ${1}, $name, ${name}, $$. */
static void expand_template(const char *tmpl, const char *src, size_t off[][2], int ngroups, sb_t *out) {
  for (const char *p = tmpl; *p; p++) {
    if (*p != '$') { sb_putc(out, *p); continue; }
    p++;
    if (*p == '$') { sb_putc(out, '$'); continue; }
    const char *nstart;
    size_t nlen;
    if (*p == '{') {
      const char *e = strchr(p + 1, '}');
      if (!e) { sb_putc(out, '$'); p--; continue; }
      nstart = p + 1, nlen = (size_t)(e - p - 1);
      p = e;
    } else {
      nstart = p;
      while (*p && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) p++;
      nlen = (size_t)(p - nstart);
      p--;
      if (!nlen) { sb_putc(out, '$'); continue; }
    }
    bool num = nlen > 0;
    int gi = 0;
    for (size_t i = 0; i < nlen; i++) {
      if (nstart[i] < '0' || nstart[i] > '9') { num = false; break; }
      gi = gi * 10 + (nstart[i] - '0');
      if (gi > 1000) break;
    }
    if (num && gi < ngroups && off[gi][0] != (size_t)-1) sb_append(out, src + off[gi][0], off[gi][1] - off[gi][0]);
    /* Named groups and missing groups expand to nothing. */
  }
}

static int check_duplicates(ev_t *ev, value_t *v, size_t steps);

/* String arguments may be any string-typed expression (literal, parenthesised). */
static const char *str_arg(ev_t *ev, const pql_node_t *n, const grid_t *g) {
  while (n->kind == N_PAREN) n = n->a;
  if (n->kind == N_STR) return n->str;
  value_t v;
  if (ev_eval(ev, n, g, &v) < 0 || v.type != PT_STRING || !v.str) return "";
  return v.str;
}

static int eval_label_fn(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int id = n->func->id;
  value_t in = {0};
  int rc = ev_eval(ev, n->args[0], g, &in);
  if (rc < 0) return rc;
  const char *dst = str_arg(ev, n->args[1], g);
  out->type = PT_VECTOR;
  if (id == F_LABEL_REPLACE) {
    const char *repl = str_arg(ev, n->args[2], g), *src = str_arg(ev, n->args[3], g), *re_s = str_arg(ev, n->args[4], g);
    core_regex_t *re = NULL;
    char e[256];
    if (core_regex_compile(re_s, strlen(re_s), &re, e, sizeof e) < 0)
      return ev_fail(ev, MD_EINVAL, "invalid regular expression in label_replace(): %s", re_s);
    if (!valid_label_name(dst)) {
      core_regex_free(re);
      return ev_fail(ev, MD_EINVAL, "invalid destination label name in label_replace(): %s", dst);
    }
    for (size_t k = 0; k < in.nvs; k++) {
      vser_t s = in.vs[k];
      lset_t ls = s.ls;
      if (s.drop && (!strcmp(src, "__name__") || !strcmp(dst, "__name__"))) {
        /* Reading or writing the name: it is still there with delayed removal. */
      }
      const char *sv = lset_get(&ls, src);
      if (!sv) sv = "";
      size_t off[10][2];
      for (int q = 0; q < 10; q++) off[q][0] = off[q][1] = (size_t)-1;
      int ngr = core_regex_captures(re, sv, strlen(sv), off, 10);
      if (ngr >= 0) {
        sb_t sb = {0};
        expand_template(repl, sv, off, ngr, &sb);
        char *val = arena_strdup(ev->a, sb.buf ? sb.buf : "");
        sb_free(&sb);
        if (!val) { core_regex_free(re); return fail_oom(ev); }
        ls = lset_set(ev, &ls, dst, val);
        if (!ls.l) { core_regex_free(re); return fail_oom(ev); }
        if (!strcmp(dst, "__name__")) s.drop = false;
      }
      s.ls = ls;
      if (out->nvs == out->capvs) {
        size_t nc = out->capvs ? out->capvs * 2 : 16;
        vser_t *nv = arena_alloc(ev->a, nc * sizeof *nv);
        if (!nv) { core_regex_free(re); return fail_oom(ev); }
        if (out->nvs) memcpy(nv, out->vs, out->nvs * sizeof *nv);
        out->vs = nv, out->capvs = nc;
      }
      out->vs[out->nvs++] = s;
    }
    core_regex_free(re);
  } else {
    const char *sep = str_arg(ev, n->args[2], g);
    if (!valid_label_name(dst)) return ev_fail(ev, MD_EINVAL, "invalid destination label name in label_join(): %s", dst);
    for (size_t i = 3; i < n->nargs; i++)
      if (!valid_label_name(str_arg(ev, n->args[i], g)))
        return ev_fail(ev, MD_EINVAL, "invalid source label name in label_join(): %s", str_arg(ev, n->args[i], g));
    for (size_t k = 0; k < in.nvs; k++) {
      vser_t s = in.vs[k];
      sb_t sb = {0};
      for (size_t i = 3; i < n->nargs; i++) {
        if (i > 3) sb_puts(&sb, sep);
        const char *v = lset_get(&s.ls, str_arg(ev, n->args[i], g));
        if (v) sb_puts(&sb, v);
      }
      char *val = arena_strdup(ev->a, sb.buf ? sb.buf : "");
      sb_free(&sb);
      if (!val) return fail_oom(ev);
      s.ls = lset_set(ev, &s.ls, dst, val);
      if (!s.ls.l) return fail_oom(ev);
      if (!strcmp(dst, "__name__")) s.drop = false;
      if (out->nvs == out->capvs) {
        size_t nc = out->capvs ? out->capvs * 2 : 16;
        vser_t *nv = arena_alloc(ev->a, nc * sizeof *nv);
        if (!nv) return fail_oom(ev);
        if (out->nvs) memcpy(nv, out->vs, out->nvs * sizeof *nv);
        out->vs = nv, out->capvs = nc;
      }
      out->vs[out->nvs++] = s;
    }
  }
  return check_duplicates(ev, out, g->n);
}

/* Fails when two series with identical labels (and name state) have a value at one step;
 * merges them when they never overlap. */
static int cmp_vser(const void *a, const void *b) {
  const vser_t *x = a, *y = b;
  int c = lset_cmp(&x->ls, &y->ls);
  if (c) return c;
  return (int)x->drop - (int)y->drop;
}

static int check_duplicates(ev_t *ev, value_t *v, size_t steps) {
  if (v->nvs < 2) return 0;
  /* Sort a copy of the order so the caller's order survives when nothing merges. */
  vser_t *tmp = arena_alloc(ev->a, v->nvs * sizeof *tmp);
  if (!tmp) return fail_oom(ev);
  memcpy(tmp, v->vs, v->nvs * sizeof *tmp);
  qsort(tmp, v->nvs, sizeof *tmp, cmp_vser);
  bool merged = false;
  size_t w = 0;
  for (size_t k = 0; k < v->nvs; k++) {
    if (w > 0 && tmp[w - 1].drop == tmp[k].drop && lset_cmp(&tmp[w - 1].ls, &tmp[k].ls) == 0) {
      vser_t *d = &tmp[w - 1];
      for (size_t i = 0; i < steps; i++)
        if (tmp[k].ok[i] && d->ok[i]) return ev_fail(ev, MD_ERR, "vector cannot contain metrics with the same labelset");
      double *nv = arena_alloc(ev->a, steps * sizeof(double));
      uint8_t *no = arena_alloc(ev->a, steps);
      if (!nv || !no) return fail_oom(ev);
      for (size_t i = 0; i < steps; i++) {
        no[i] = d->ok[i] | tmp[k].ok[i];
        nv[i] = d->ok[i] ? d->v[i] : tmp[k].v[i];
      }
      d->v = nv, d->ok = no;
      merged = true;
      continue;
    }
    tmp[w++] = tmp[k];
  }
  if (merged) {
    v->vs = tmp;
    v->nvs = w;
    v->capvs = v->nvs;
  }
  return 0;
}

int ev_drop_names(ev_t *ev, value_t *v, size_t steps) {
  for (size_t k = 0; k < v->nvs; k++) {
    if (!v->vs[k].drop) continue;
    v->vs[k].ls = lset_without_name(ev, &v->vs[k].ls);
    if (!v->vs[k].ls.l) return fail_oom(ev);
    v->vs[k].drop = false;
  }
  return check_duplicates(ev, v, steps);
}

/* ---- sorting ------------------------------------------------------------------------------- */

typedef struct sort_ctx {
  const char **labels;
  size_t n;
  bool desc;
} sort_ctx_t;
static _Thread_local sort_ctx_t *tl_sort;

static int cmp_by_value(const void *a, const void *b) {
  const vser_t *x = a, *y = b;
  double xv = x->v[0], yv = y->v[0];
  bool xn = isnan(xv), yn = isnan(yv);
  /* NaN sorts last in both directions (Prometheus). */
  if (xn || yn) return xn == yn ? 0 : xn ? 1 : -1;
  if (xv == yv) return 0;
  bool lt = xv < yv;
  if (tl_sort->desc) lt = !lt;
  return lt ? -1 : 1;
}

/* Natural order: digit runs compare as numbers ("4m5" < "4m600" < "4m1000"). */
static int natural_cmp(const char *a, const char *b) {
  while (*a && *b) {
    if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
      const char *as = a, *bs = b;
      while (*as == '0') as++;
      while (*bs == '0') bs++;
      const char *ae = as, *be = bs;
      while (isdigit((unsigned char)*ae)) ae++;
      while (isdigit((unsigned char)*be)) be++;
      if (ae - as != be - bs) return ae - as < be - bs ? -1 : 1;
      int c = strncmp(as, bs, (size_t)(ae - as));
      if (c) return c;
      a = ae, b = be;
      continue;
    }
    if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
    a++, b++;
  }
  return *a ? 1 : *b ? -1 : 0;
}

static int cmp_by_label(const void *a, const void *b) {
  const vser_t *x = a, *y = b;
  for (size_t i = 0; i < tl_sort->n; i++) {
    const char *xv = lset_get(&x->ls, tl_sort->labels[i]), *yv = lset_get(&y->ls, tl_sort->labels[i]);
    int c = natural_cmp(xv ? xv : "", yv ? yv : "");
    if (c) return tl_sort->desc ? -c : c;
  }
  int c = lset_cmp(&x->ls, &y->ls);
  return tl_sort->desc ? -c : c;
}

static int eval_sort(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int id = n->func->id;
  int rc = ev_eval(ev, n->args[0], g, out);
  if (rc < 0) return rc;
  if (ev->range_query && g->n > 0) {
    ev_warn(ev, false, "sort is ineffective for range queries since results are always ordered by labels");
  }
  if (g->n != 1) return 0;
  sort_ctx_t c = {0};
  c.desc = id == F_SORT_DESC || id == F_SORT_BY_LABEL_DESC;
  if (id == F_SORT_BY_LABEL || id == F_SORT_BY_LABEL_DESC) {
    c.n = n->nargs - 1;
    c.labels = arena_alloc(ev->a, (c.n + 1) * sizeof *c.labels);
    if (!c.labels) return fail_oom(ev);
    for (size_t i = 0; i < c.n; i++) c.labels[i] = str_arg(ev, n->args[i + 1], g);
  }
  tl_sort = &c;
  /* Only present series take part in a one-step sort. */
  size_t w = 0;
  for (size_t k = 0; k < out->nvs; k++)
    if (out->vs[k].ok[0]) out->vs[w++] = out->vs[k];
  out->nvs = w;
  if (id == F_SORT || id == F_SORT_DESC) {
    /* Stable order for equal values: by labels first. */
    sort_ctx_t lc = {0};
    tl_sort = &lc;
    qsort(out->vs, out->nvs, sizeof *out->vs, cmp_by_label);
    tl_sort = &c;
    /* insertion sort is stable; qsort is not */
    for (size_t i = 1; i < out->nvs; i++) {
      vser_t x = out->vs[i];
      size_t j = i;
      while (j > 0 && cmp_by_value(&out->vs[j - 1], &x) > 0) {
        out->vs[j] = out->vs[j - 1];
        j--;
      }
      out->vs[j] = x;
    }
  } else {
    qsort(out->vs, out->nvs, sizeof *out->vs, cmp_by_label);
  }
  tl_sort = NULL;
  out->ordered = true;
  return 0;
}

/* ---- histogram_quantile over classic buckets ------------------------------------------------ */

typedef struct bucket {
  double ub, count;
} bucket_t;

static int cmp_bucket(const void *a, const void *b) {
  double x = ((const bucket_t *)a)->ub, y = ((const bucket_t *)b)->ub;
  return x < y ? -1 : x > y;
}

static double bucket_quantile(double q, bucket_t *b, size_t n, bool *forced) {
  *forced = false;
  if (isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(b, n, sizeof *b, cmp_bucket);
  if (!n || !(isinf(b[n - 1].ub) && b[n - 1].ub > 0)) return NAN;
  /* Coalesce equal bounds. */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w && b[w - 1].ub == b[i].ub) b[w - 1].count += b[i].count;
    else b[w++] = b[i];
  }
  n = w;
  /* Monotonicity, ignoring tiny float deltas. */
  double prev = b[0].count;
  for (size_t i = 1; i < n; i++) {
    double cur = b[i].count;
    if (cur == prev) continue;
    double diff = fabs(cur - prev), sum = fabs(cur) + fabs(prev);
    bool almost = diff / fmin(sum, 1.7976931348623157e308) < 1e-12;
    if (almost) { b[i].count = prev; continue; }
    if (cur < prev) { b[i].count = prev; *forced = true; continue; }
    prev = cur;
  }
  if (n < 2) return NAN;
  double obs = b[n - 1].count;
  if (obs == 0) return NAN;
  double rank = q * obs;
  size_t i = 0;
  while (i < n - 1 && !(b[i].count >= rank)) i++;
  if (i == n - 1) return b[n - 2].ub;
  if (i == 0 && b[0].ub <= 0) return b[0].ub;
  double start = 0, end = b[i].ub, count = b[i].count;
  if (i > 0) {
    start = b[i - 1].ub;
    count -= b[i - 1].count;
    rank -= b[i - 1].count;
  }
  return start + (end - start) * (rank / count);
}

static double bucket_fraction(double lower, double upper, bucket_t *b, size_t n) {
  qsort(b, n, sizeof *b, cmp_bucket);
  if (!n || !(isinf(b[n - 1].ub) && b[n - 1].ub > 0)) return NAN;
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w && b[w - 1].ub == b[i].ub) b[w - 1].count += b[i].count;
    else b[w++] = b[i];
  }
  n = w;
  double total = b[n - 1].count;
  if (total == 0 || isnan(lower) || isnan(upper)) return NAN;
  if (lower >= upper) return 0;
  /* Cumulative count at x, interpolating linearly inside a bucket (first bucket from 0
   * when its bound is positive, as Prometheus does). */
  double at[2];
  double xs[2] = {lower, upper};
  for (int k = 0; k < 2; k++) {
    double x = xs[k], r = 0;
    double lb = -INFINITY, prevc = 0;
    bool done = false;
    for (size_t i = 0; i < n && !done; i++) {
      double ub = b[i].ub, c = b[i].count;
      double lo = i == 0 ? (ub > 0 ? 0 : -INFINITY) : lb;
      if (x >= ub) { r = c; lb = ub; prevc = c; continue; }
      if (x <= lo) r = prevc;
      else if (isinf(lo) || isinf(ub)) r = prevc;
      else r = prevc + (c - prevc) * (x - lo) / (ub - lo);
      done = true;
    }
    at[k] = r;
  }
  return (at[1] - at[0]) / total;
}

static int eval_histogram(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) {
  int id = n->func->id;
  value_t q = {0}, q2 = {0}, in = {0};
  int rc;
  size_t vi = 1;
  /* Quantile parameters: one for histogram_quantile, several for histogram_quantiles. */
  size_t nq = 1;
  value_t *qs = &q;
  const char *qlabel = NULL;
  if (id == F_HISTOGRAM_QUANTILES) {
    vi = 0;
    qlabel = str_arg(ev, n->args[1], g);
    nq = n->nargs - 2;
    qs = arena_calloc(ev->a, nq * sizeof *qs);
    if (!qs) return fail_oom(ev);
    for (size_t k = 0; k < nq; k++)
      if ((rc = ev_eval(ev, n->args[2 + k], g, &qs[k])) < 0) return rc;
  } else {
    if ((rc = ev_eval(ev, n->args[0], g, &q)) < 0) return rc;
    if (id == F_HISTOGRAM_FRACTION) {
      if ((rc = ev_eval(ev, n->args[1], g, &q2)) < 0) return rc;
      vi = 2;
    }
  }
  if ((rc = ev_eval(ev, n->args[vi], g, &in)) < 0) return rc;
  out->type = PT_VECTOR;
  if (id != F_HISTOGRAM_FRACTION)
    for (size_t k = 0; k < nq; k++)
      for (size_t i = 0; i < g->n; i++)
        if (isnan(qs[k].sc[i]) || qs[k].sc[i] < 0 || qs[k].sc[i] > 1) {
          if (isnan(qs[k].sc[i])) ev_warn(ev, false, "quantile value should be between 0 and 1, got NaN");
          else ev_warn(ev, false, "quantile value should be between 0 and 1, got %g", qs[k].sc[i]);
          break;
        }
  /* Group series by labels without `le` and the name. */
  size_t ns = in.nvs;
  int32_t *gid = arena_alloc(ev->a, (ns + 1) * sizeof *gid);
  double *le = arena_alloc(ev->a, (ns + 1) * sizeof *le);
  lset_t *gl = arena_alloc(ev->a, (ns + 1) * sizeof *gl);
  if (!gid || !le || !gl) return fail_oom(ev);
  size_t ng = 0;
  for (size_t k = 0; k < ns; k++) {
    const char *l = lset_get(&in.vs[k].ls, "le");
    char *end = NULL;
    double ub = l ? strtod(l, &end) : NAN;
    if (l && (!*l || *end)) {
      if (!strcasecmp(l, "+Inf") || !strcasecmp(l, "Inf")) ub = INFINITY;
      else ub = NAN;
    }
    if (!l || isnan(ub)) {
      gid[k] = -1;
      ev_warn(ev, false, "bucket label \"le\" is missing or has a malformed value of \"%s\" for metric name \"%s\"",
              l ? l : "", ev_metric_name(&in.vs[k].ls));
      continue;
    }
    le[k] = ub;
    lset_t without = lset_set(ev, &in.vs[k].ls, "le", "");
    lset_t key = lset_without_name(ev, &without);
    if (!key.l) return fail_oom(ev);
    int32_t found = -1;
    for (size_t j = 0; j < ng; j++)
      if (!lset_cmp(&gl[j], &key)) { found = (int32_t)j; break; }
    if (found < 0) {
      gl[ng] = key;
      found = (int32_t)ng++;
    }
    gid[k] = found;
  }
  bucket_t *bk = arena_alloc(ev->a, (ns + 1) * sizeof *bk);
  if (!bk) return fail_oom(ev);
  for (size_t gi = 0; gi < ng; gi++) {
    for (size_t qk = 0; qk < nq; qk++) {
      vser_t *o = NULL;
      for (size_t i = 0; i < g->n; i++) {
        size_t nb = 0;
        for (size_t k = 0; k < ns; k++)
          if (gid[k] == (int32_t)gi && in.vs[k].ok[i]) bk[nb++] = (bucket_t){le[k], in.vs[k].v[i]};
        if (!nb) continue;
        bool forced = false;
        double v = id == F_HISTOGRAM_FRACTION ? bucket_fraction(q.sc[i], q2.sc[i], bk, nb)
                                              : bucket_quantile(qs[qk].sc[i], bk, nb, &forced);
        if (forced) {
          const char *nm = "";
          for (size_t k = 0; k < ns; k++)
            if (gid[k] == (int32_t)gi) { nm = ev_metric_name(&in.vs[k].ls); break; }
          ev_warn(ev, true, "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"%s\"", nm);
        }
        if (!o) {
          lset_t ls = gl[gi];
          if (qlabel) {
            char buf[64];
            fmt_float_plain(qs[qk].sc[i], buf, sizeof buf);
            /* Prometheus writes whole quantiles with a fraction: q="0.0", q="1.0". */
            if (isfinite(qs[qk].sc[i]) && !strpbrk(buf, ".e") && strlen(buf) + 3 < sizeof buf) strcat(buf, ".0");
            char *val = arena_strdup(ev->a, buf);
            if (!val) return fail_oom(ev);
            ls = lset_set(ev, &ls, qlabel, val);
          }
          if (!(o = ev_vec_add(ev, out, ls, false, g->n))) return fail_oom(ev);
        }
        o->v[i] = v;
        o->ok[i] = 1;
      }
    }
  }
  return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

int ev_call(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out) { return ev_call_into(ev, n, g, out, NULL); }

int ev_call_into(ev_t *ev, const pql_node_t *n, const grid_t *g, value_t *out, agg_acc_t *sink) {
  int id = n->func->id;
  int rc;
  memset(out, 0, sizeof *out);
  /* Prometheus rejects misplaced extended selectors when evaluating, with these words. */
  for (size_t i = 0; i < n->nargs; i++) {
    const pql_node_t *a = n->args[i];
    while (a->kind == N_PAREN) a = a->a;
    if (a->kind != N_SEL || !a->is_matrix || !a->ext) continue;
    if (a->ext == EXT_SMOOTHED && id != F_DELTA && id != F_INCREASE && id != F_RATE)
      return ev_fail(ev, MD_EINVAL, "smoothed modifier can only be used with: delta, increase, rate - not with %s", n->func->name);
    if (a->ext == EXT_ANCHORED && id != F_CHANGES && id != F_DELTA && id != F_INCREASE && id != F_RATE && id != F_RESETS)
      return ev_fail(ev, MD_EINVAL, "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with %s",
                     n->func->name);
  }
  if (sink) return ev_call_streams(n) ? eval_range_fn(ev, n, g, out, sink) : ev_fail(ev, MD_ERR, "internal: no streamed plan");
  switch (id) {
  case F_TIME:
  case F_PI:
  case F_STEP:
  case F_RANGE:
  case F_START:
  case F_END:
    out->type = PT_SCALAR;
    out->sc = arena_alloc(ev->a, g->n * sizeof(double));
    if (!out->sc) return fail_oom(ev);
    for (size_t i = 0; i < g->n; i++) {
      double v = (double)grid_t_at(g, i) / 1000.0;
      if (id == F_PI) v = M_PI;
      else if (id == F_STEP) v = (double)ev->qstep / 1000.0;
      else if (id == F_RANGE) v = (double)(ev->qend - ev->qstart) / 1000.0;
      else if (id == F_START) v = (double)ev->qstart / 1000.0;
      else if (id == F_END) v = (double)ev->qend / 1000.0;
      out->sc[i] = v;
    }
    return 0;
  case F_MIN_OF:
  case F_MAX_OF: {
    value_t a = {0}, b = {0};
    if ((rc = ev_eval(ev, n->args[0], g, &a)) < 0 || (rc = ev_eval(ev, n->args[1], g, &b)) < 0) return rc;
    out->type = PT_SCALAR;
    out->sc = a.sc;
    for (size_t i = 0; i < g->n; i++)
      out->sc[i] = id == F_MIN_OF ? go_min(a.sc[i], b.sc[i]) : go_max(a.sc[i], b.sc[i]);
    return 0;
  }
  case F_SCALAR: {
    value_t in = {0};
    if ((rc = ev_eval(ev, n->args[0], g, &in)) < 0) return rc;
    out->type = PT_SCALAR;
    out->sc = arena_alloc(ev->a, g->n * sizeof(double));
    if (!out->sc) return fail_oom(ev);
    for (size_t i = 0; i < g->n; i++) {
      size_t cnt = 0;
      double v = NAN;
      for (size_t k = 0; k < in.nvs; k++)
        if (in.vs[k].ok[i]) cnt++, v = in.vs[k].v[i];
      out->sc[i] = cnt == 1 ? v : NAN;
    }
    return 0;
  }
  case F_VECTOR: {
    value_t in = {0};
    if ((rc = ev_eval(ev, n->args[0], g, &in)) < 0) return rc;
    out->type = PT_VECTOR;
    lset_t empty = {0};
    vser_t *o = ev_vec_add(ev, out, empty, false, g->n);
    if (!o) return fail_oom(ev);
    for (size_t i = 0; i < g->n; i++) o->v[i] = in.sc[i], o->ok[i] = 1;
    return 0;
  }
  case F_TIMESTAMP: {
    const pql_node_t *a = n->args[0];
    while (a->kind == N_PAREN) a = a->a;
    value_t in = {0};
    if (a->kind == N_SEL && !a->is_matrix) rc = ev_eval_selector_ts(ev, a, g, &in);
    else rc = ev_eval(ev, n->args[0], g, &in);
    if (rc < 0) return rc;
    out->type = PT_VECTOR;
    for (size_t k = 0; k < in.nvs; k++) {
      vser_t *s = &in.vs[k];
      vser_t *o = NULL;
      for (size_t i = 0; i < g->n; i++) {
        if (!s->ok[i]) continue;
        if (!o && !(o = ev_vec_add(ev, out, s->ls, true, g->n))) return fail_oom(ev);
        o->v[i] = s->tsv ? s->tsv[i] : (double)grid_t_at(g, i) / 1000.0;
        o->ok[i] = 1;
      }
    }
    return 0;
  }
  case F_ABSENT: {
    value_t in = {0};
    if ((rc = ev_eval(ev, n->args[0], g, &in)) < 0) return rc;
    out->type = PT_VECTOR;
    vser_t *o = NULL;
    for (size_t i = 0; i < g->n; i++) {
      bool any = false;
      for (size_t k = 0; k < in.nvs && !any; k++) any = in.vs[k].ok[i];
      if (any) continue;
      if (!o) {
        lset_t ls = {0};
        const pql_node_t *sel = n->args[0];
        while (sel->kind == N_PAREN) sel = sel->a;
        if (sel->kind == N_SEL) {
          for (size_t j = 0; j < sel->nmatchers; j++) {
            const tsdb_matcher_t *mt = &sel->matchers[j];
            if (mt->type != TSDB_MATCH_EQ || !strcmp(mt->name, "__name__")) continue;
            ls = lset_set(ev, &ls, mt->name, mt->value);
          }
          for (size_t j = 0; j < sel->nmatchers; j++)
            for (size_t q = j + 1; q < sel->nmatchers; q++)
              if (!strcmp(sel->matchers[j].name, sel->matchers[q].name))
                ls = lset_set(ev, &ls, sel->matchers[j].name, "");
        }
        if (!(o = ev_vec_add(ev, out, ls, false, g->n))) return fail_oom(ev);
      }
      o->v[i] = 1;
      o->ok[i] = 1;
    }
    return 0;
  }
  case F_LABEL_REPLACE:
  case F_LABEL_JOIN: return eval_label_fn(ev, n, g, out);
  case F_SORT:
  case F_SORT_DESC:
  case F_SORT_BY_LABEL:
  case F_SORT_BY_LABEL_DESC: return eval_sort(ev, n, g, out);
  case F_HISTOGRAM_QUANTILE:
  case F_HISTOGRAM_QUANTILES:
  case F_HISTOGRAM_FRACTION: return eval_histogram(ev, n, g, out);
  case F_HISTOGRAM_COUNT:
  case F_HISTOGRAM_SUM:
  case F_HISTOGRAM_AVG:
  case F_HISTOGRAM_STDDEV:
  case F_HISTOGRAM_STDVAR: {
    /* Native histograms only: float samples yield nothing. */
    value_t in = {0};
    if ((rc = ev_eval(ev, n->args[0], g, &in)) < 0) return rc;
    out->type = PT_VECTOR;
    return 0;
  }
  default: break;
  }
  if (n->func->args[0] == PT_MATRIX || id == F_QUANTILE_OVER_TIME) return eval_range_fn(ev, n, g, out, NULL);
  return eval_elementwise(ev, n, g, out);
}
