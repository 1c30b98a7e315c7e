/*
 * analytics/stats.c — distributions (normal, Student t), order statistics and ordinary least
 * squares: the building blocks the trend, forecast and anomaly code share.
 *
 * Invariants: no function keeps state; scratch memory is allocated and freed within a call.
 * Thread-safe.
 */
#include "analytics/analytics.h"
#include "analytics/analytics_private.h"
#include "core/core.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double analytics_normal_cdf(double z) { return 0.5 * erfc(-z / M_SQRT2); }

/* Bisection is slow in theory but we call it a handful of times per request, and it is
 * exact to double precision without tables of rational-approximation coefficients. */
double analytics_normal_quantile(double p) {
  if (!(p > 0.0 && p < 1.0)) return NAN;
  double lo = -40.0, hi = 40.0;
  for (int i = 0; i < 200 && hi - lo > 1e-15; i++) {
    double mid = 0.5 * (lo + hi);
    if (analytics_normal_cdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/* Continued fraction for the regularised incomplete beta function (modified Lentz). */
static double beta_continued_fraction(double a, double b, double x) {
  const double tiny = 1e-300;
  double sum_ab = a + b, a_plus = a + 1.0, a_minus = a - 1.0;
  double c = 1.0, d = 1.0 - sum_ab * x / a_plus;
  if (fabs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 300; m++) {
    double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a_minus + m2) * (a + m2));
    d = 1.0 + num * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1.0 + num / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    h *= d * c;
    num = -(a + m) * (sum_ab + m) * x / ((a + m2) * (a_plus + m2));
    d = 1.0 + num * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1.0 + num / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    double step = d * c;
    h *= step;
    if (fabs(step - 1.0) < 1e-15) break;
  }
  return h;
}

static double incomplete_beta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  double front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x));
  /* The fraction converges fast only on one side of the mean; use the symmetry otherwise. */
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_continued_fraction(a, b, x) / a;
  return 1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b;
}

double analytics_t_cdf(double t, double df) {
  if (!(df > 0.0) || isnan(t)) return NAN;
  if (isinf(t)) return t > 0 ? 1.0 : 0.0;
  double x = df / (df + t * t);
  double tail = 0.5 * incomplete_beta(0.5 * df, 0.5, x);
  return t > 0 ? 1.0 - tail : tail;
}

double analytics_t_quantile(double p, double df) {
  if (!(p > 0.0 && p < 1.0) || !(df > 0.0)) return NAN;
  double lo = -1e7, hi = 1e7;
  for (int i = 0; i < 300 && hi - lo > 1e-12 * (1.0 + fabs(lo)); i++) {
    double mid = 0.5 * (lo + hi);
    if (analytics_t_cdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/* Hoare-style quickselect: after it, v[k] holds the k-th smallest, smaller ones before. */
double analytics_select_kth(double *v, size_t n, size_t k) {
  size_t lo = 0, hi = n - 1;
  while (lo < hi) {
    /* median of three as pivot keeps sorted input (common: time series) linear */
    size_t mid = lo + (hi - lo) / 2;
    double a = v[lo], b = v[mid], c = v[hi];
    double pivot = (a < b) ? ((b < c) ? b : (a < c ? c : a)) : ((a < c) ? a : (b < c ? c : b));
    size_t i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot) i++;
      while (v[j] > pivot) j--;
      if (i <= j) {
        double t = v[i]; v[i] = v[j]; v[j] = t;
        i++;
        if (j == 0) break;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
  return v[k];
}

double analytics_median_inplace(double *v, size_t n) {
  if (n == 0) return NAN;
  size_t k = n / 2;
  double upper = analytics_select_kth(v, n, k);
  if (n % 2) return upper;
  /* the lower middle is the largest of the part before k */
  double lower = v[0];
  for (size_t i = 1; i < k; i++)
    if (v[i] > lower) lower = v[i];
  return 0.5 * (lower + upper);
}

double analytics_median(const double *v, size_t n) {
  if (n == 0) return NAN;
  double *tmp = malloc(n * sizeof *tmp);
  if (!tmp) return NAN;
  memcpy(tmp, v, n * sizeof *tmp);
  double m = analytics_median_inplace(tmp, n);
  free(tmp);
  return m;
}

double analytics_mad(const double *v, size_t n) {
  if (n == 0) return NAN;
  double *tmp = malloc(n * sizeof *tmp);
  if (!tmp) return NAN;
  memcpy(tmp, v, n * sizeof *tmp);
  double med = analytics_median_inplace(tmp, n);
  for (size_t i = 0; i < n; i++) tmp[i] = fabs(v[i] - med);
  double mad = analytics_median_inplace(tmp, n);
  free(tmp);
  return mad;
}

int analytics_linreg(const double *x, const double *y, size_t n, double confidence,
                     analytics_linreg_t *out) {
  if (!y || !out || n < 2 || !(confidence > 0.0 && confidence < 1.0)) return MD_EINVAL;
  memset(out, 0, sizeof *out);
  /* Two passes (means first) instead of raw sums: timestamps in ms squared would lose all
   * precision in the one-pass formula. */
  double xm = 0.0, ym = 0.0;
  for (size_t i = 0; i < n; i++) {
    xm += x ? x[i] : (double)i;
    ym += y[i];
  }
  xm /= (double)n;
  ym /= (double)n;
  double sxx = 0.0, sxy = 0.0, syy = 0.0;
  for (size_t i = 0; i < n; i++) {
    double dx = (x ? x[i] : (double)i) - xm, dy = y[i] - ym;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (!(sxx > 0.0)) return MD_EINVAL;
  double slope = sxy / sxx, intercept = ym - slope * xm;
  double sse = 0.0;
  for (size_t i = 0; i < n; i++) {
    double r = y[i] - (intercept + slope * (x ? x[i] : (double)i));
    sse += r * r;
  }
  out->n = n;
  out->slope = slope;
  out->intercept = intercept;
  out->x_mean = xm;
  out->sxx = sxx;
  out->r2 = syy > 0.0 ? 1.0 - sse / syy : 1.0;
  if (out->r2 < 0.0) out->r2 = 0.0;
  if (n > 2) {
    out->residual_sd = sqrt(sse / (double)(n - 2));
    out->slope_se = out->residual_sd / sqrt(sxx);
    double t = analytics_t_quantile(0.5 + 0.5 * confidence, (double)(n - 2));
    out->slope_lo = slope - t * out->slope_se;
    out->slope_hi = slope + t * out->slope_se;
  } else {
    out->slope_lo = out->slope_hi = slope;
  }
  return MD_OK;
}
