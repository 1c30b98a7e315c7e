/*
 * analytics/trend.c — the Mann-Kendall monotonic trend test with Sen's slope, and the change
 * percentage the seed 004 trends endpoint reports.
 *
 * Why Mann-Kendall: it is non-parametric (no normality assumption, robust to outliers and
 * to the heavy tails of request-rate data) and answers the question the API asks — is there
 * a monotonic trend — with a p-value instead of a comparison of two points.
 *
 * Serial correlation: metric samples taken every step are rarely independent, and positive
 * autocorrelation inflates the false-alarm rate of the plain test (AR(1) noise with phi 0.6:
 * about 29 % "trends" instead of 5 %). analytics_mann_kendall therefore corrects the variance
 * of S by an effective sample size by default (autocorrelation_factor below); the plain test
 * is analytics_mann_kendall_ex(..., false, ...).
 *
 * Cost: S is O(n^2) comparisons without memory; the correction sorts once (ranks); Sen's slope needs the pairwise slopes and
 * is capped at ANALYTICS_SEN_MAX_PAIRS (a deterministic pseudo-random sample of pairs beyond
 * that, so the answer is reproducible). Thread-safe, stateless.
 */
#include "analytics/analytics.h"
#include "analytics/analytics_private.h"
#include "core/core.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline double xat(const double *x, size_t i) { return x ? x[i] : (double)i; }

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Sen's slope: the median of (y_j - y_i) / (x_j - x_i) over pairs i < j. */
static int sen_slope(const double *x, const double *y, size_t n, double *out) {
  size_t pairs = n * (n - 1) / 2;
  size_t cap = pairs < ANALYTICS_SEN_MAX_PAIRS ? pairs : ANALYTICS_SEN_MAX_PAIRS;
  double *slopes = malloc(cap * sizeof *slopes);
  if (!slopes) return MD_ENOMEM;
  size_t k = 0;
  if (pairs <= ANALYTICS_SEN_MAX_PAIRS) {
    for (size_t i = 0; i + 1 < n; i++)
      for (size_t j = i + 1; j < n; j++) {
        double dx = xat(x, j) - xat(x, i);
        if (dx != 0.0) slopes[k++] = (y[j] - y[i]) / dx;
      }
  } else {
    uint64_t state = 0x5eed5eedULL ^ (uint64_t)n;
    while (k < cap) {
      size_t i = (size_t)(splitmix64(&state) % n), j = (size_t)(splitmix64(&state) % n);
      if (i == j) continue;
      if (i > j) { size_t t = i; i = j; j = t; }
      double dx = xat(x, j) - xat(x, i);
      if (dx != 0.0) slopes[k++] = (y[j] - y[i]) / dx;
    }
  }
  *out = k ? analytics_median_inplace(slopes, k) : 0.0;
  free(slopes);
  return MD_OK;
}

typedef struct rank_item {
  double v;
  size_t i;
} rank_item_t;

static int cmp_rank_item(const void *a, const void *b) {
  const rank_item_t *x = a, *y = b;
  if (x->v != y->v) return (x->v > y->v) - (x->v < y->v);
  return (x->i > y->i) - (x->i < y->i);
}

/* Variance correction n/n* for serial correlation (the effective-sample-size correction of
 * Yue and Wang, 2004, with an AR(1) model): rho = lag-1 autocorrelation of the ranks of the
 * Sen-detrended series, corrected for its small-sample bias (n rho + 1) / (n - 4), capped at
 * 0.95, and, when positive,
 *   n/n* = 1 + 2 sum_{k=1}^{n-1} (1 - k/n) rho^k.
 * Returns at least 1: the correction only ever makes the test more careful. (Hamed and Rao's
 * all-lags version, tried first, left AR(1) noise with phi 0.6 at 16-22 % false alarms:
 * filtering lags by significance drops most of the short-sample autocorrelation.) */
static int autocorrelation_factor(const double *x, const double *y, size_t n, double slope,
                                  double *factor, double *rho_out) {
  *factor = 1.0;
  *rho_out = NAN;
  if (n < 4) return MD_OK;
  rank_item_t *it = malloc(n * sizeof *it);
  double *r = malloc(n * sizeof *r);
  if (!it || !r) {
    free(it);
    free(r);
    return MD_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) it[i] = (rank_item_t){y[i] - slope * xat(x, i), i};
  qsort(it, n, sizeof *it, cmp_rank_item);
  for (size_t i = 0; i < n;) { /* average ranks for ties */
    size_t j = i + 1;
    while (j < n && it[j].v == it[i].v) j++;
    double rank = 0.5 * (double)(i + j + 1);
    for (size_t k = i; k < j; k++) r[it[k].i] = rank;
    i = j;
  }
  double mean = 0.5 * (double)(n + 1), den = 0.0, num = 0.0;
  for (size_t i = 0; i < n; i++) {
    r[i] -= mean;
    den += r[i] * r[i];
  }
  for (size_t i = 0; i + 1 < n; i++) num += r[i] * r[i + 1];
  if (den > 0.0) {
    double dn = (double)n;
    /* lag-1 autocorrelation, corrected for its small-sample bias towards -1/n */
    double rho = (dn * (num / den) + 1.0) / (dn - 4.0 > 1.0 ? dn - 4.0 : 1.0);
    *rho_out = rho;
    if (rho > 0.0) {
      if (rho > 0.95) rho = 0.95;
      double sum = 0.0, pk = 1.0;
      for (size_t k = 1; k < n; k++) {
        pk *= rho;
        if (pk < 1e-12) break;
        sum += (1.0 - (double)k / dn) * pk;
      }
      double f = 1.0 + 2.0 * sum;
      if (f > 1.0 && isfinite(f)) *factor = f;
    }
  }
  free(it);
  free(r);
  return MD_OK;
}

static void mk_decide(analytics_mk_t *out) {
  double var = out->var_s * out->var_factor, s = out->s, z = 0.0;
  if (var > 0.0) {
    if (s > 0.0) z = (s - 1.0) / sqrt(var);
    else if (s < 0.0) z = (s + 1.0) / sqrt(var);
  }
  out->z = z;
  out->p_value = erfc(fabs(z) / M_SQRT2);
  if (out->p_value > 1.0) out->p_value = 1.0;
  out->trend = analytics_trend_classify(out, ANALYTICS_TREND_ALPHA);
}

int analytics_mann_kendall(const double *x, const double *y, size_t n, analytics_mk_t *out) {
  return analytics_mann_kendall_ex(x, y, n, true, out);
}

int analytics_mann_kendall_ex(const double *x, const double *y, size_t n, bool serial_correction,
                              analytics_mk_t *out) {
  if (!y || !out || n < 3) return MD_EINVAL;
  memset(out, 0, sizeof *out);
  out->n = n;

  double s = 0.0;
  for (size_t i = 0; i + 1 < n; i++) {
    double yi = y[i];
    long long acc = 0;
    for (size_t j = i + 1; j < n; j++) acc += (y[j] > yi) - (y[j] < yi);
    s += (double)acc;
  }

  /* Tie correction: every group of t equal values removes t(t-1)(2t+5) from the variance. */
  double *sorted = malloc(n * sizeof *sorted);
  if (!sorted) return MD_ENOMEM;
  memcpy(sorted, y, n * sizeof *sorted);
  qsort(sorted, n, sizeof *sorted, cmp_double);
  double ties = 0.0;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && sorted[j] == sorted[i]) j++;
    double t = (double)(j - i);
    if (t > 1.0) ties += t * (t - 1.0) * (2.0 * t + 5.0);
    i = j;
  }
  free(sorted);

  double dn = (double)n;
  double var = (dn * (dn - 1.0) * (2.0 * dn + 5.0) - ties) / 18.0;
  out->s = s;
  out->var_s = var;
  out->var_factor = 1.0;
  out->lag1_rho = NAN;
  out->tau = s / (dn * (dn - 1.0) / 2.0);

  int rc = sen_slope(x, y, n, &out->sen_slope);
  if (rc) return rc;
  double *resid = malloc(n * sizeof *resid);
  if (!resid) return MD_ENOMEM;
  for (size_t i = 0; i < n; i++) resid[i] = y[i] - out->sen_slope * xat(x, i);
  out->sen_intercept = analytics_median_inplace(resid, n);
  free(resid);

  if (serial_correction && (rc = autocorrelation_factor(x, y, n, out->sen_slope, &out->var_factor, &out->lag1_rho)))
    return rc;
  mk_decide(out);
  return MD_OK;
}

analytics_trend_t analytics_trend_classify(const analytics_mk_t *mk, double alpha) {
  if (!mk || !(mk->p_value < alpha)) return ANALYTICS_TREND_STABLE;
  if (mk->s > 0.0) return ANALYTICS_TREND_INCREASING;
  if (mk->s < 0.0) return ANALYTICS_TREND_DECREASING;
  return ANALYTICS_TREND_STABLE;
}

const char *analytics_trend_name(analytics_trend_t t) {
  switch (t) {
  case ANALYTICS_TREND_INCREASING: return "increasing";
  case ANALYTICS_TREND_DECREASING: return "decreasing";
  default: return "stable";
  }
}

double analytics_change_percent(double first, double last) {
  if (first == 0.0) return last == 0.0 ? 0.0 : NAN;
  return 100.0 * (last - first) / fabs(first);
}
