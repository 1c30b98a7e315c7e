/*
 * analytics/anomaly.c — anomaly scores that a few outliers cannot hide: the modified
 * (robust) z-score of Iglewicz and Hoaglin, 0.6745 (x - median) / MAD, and the same score on
 * the residuals from a seasonal baseline (per-phase median), for data with a daily shape.
 *
 * Why median/MAD and not mean/stddev: one spike inflates the standard deviation enough to
 * mask itself; the median and MAD have a 50 % breakdown point.
 * Thread-safe, stateless.
 */
#include "analytics/analytics.h"
#include "analytics/analytics_private.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 0.6745 is the 0.75 quantile of the standard normal: MAD / 0.6745 estimates sigma. */
#define MAD_SCALE 0.6745
/* sqrt(pi/2): mean absolute deviation * this estimates sigma for normal data. */
#define MEANAD_SCALE 1.253314

static int robust_z_scratch(const double *v, size_t n, double *z, double *tmp) {
  memcpy(tmp, v, n * sizeof *tmp);
  double med = analytics_median_inplace(tmp, n);
  double meanad = 0.0;
  for (size_t i = 0; i < n; i++) {
    tmp[i] = fabs(v[i] - med);
    meanad += tmp[i];
  }
  meanad /= (double)n;
  double mad = analytics_median_inplace(tmp, n);
  for (size_t i = 0; i < n; i++) {
    double d = v[i] - med;
    if (mad > 0.0) z[i] = MAD_SCALE * d / mad;
    else if (meanad > 0.0) z[i] = d / (MEANAD_SCALE * meanad);
    else z[i] = d == 0.0 ? 0.0 : (d > 0 ? INFINITY : -INFINITY);
  }
  return MD_OK;
}

int analytics_robust_z(const double *v, size_t n, double *z) {
  if (!v || !z || n == 0) return MD_EINVAL;
  double *tmp = malloc(n * sizeof *tmp);
  if (!tmp) return MD_ENOMEM;
  int rc = robust_z_scratch(v, n, z, tmp);
  free(tmp);
  return rc;
}

int analytics_seasonal_z(const double *v, size_t n, size_t period, double *baseline, double *z) {
  if (!v || !z || n == 0 || period == 0) return MD_EINVAL;
  int rc = MD_ENOMEM;
  size_t per_phase = (n + period - 1) / period;
  double *tmp = malloc(n * sizeof *tmp);
  double *resid = malloc(n * sizeof *resid);
  double *phase = malloc(per_phase * sizeof *phase);
  if (!tmp || !resid || !phase) goto out;
  for (size_t p = 0; p < period && p < n; p++) {
    size_t k = 0;
    for (size_t i = p; i < n; i += period) phase[k++] = v[i];
    double med = analytics_median_inplace(phase, k);
    for (size_t i = p; i < n; i += period) {
      resid[i] = v[i] - med;
      if (baseline) baseline[i] = med;
    }
  }
  rc = robust_z_scratch(resid, n, z, tmp);
out:
  free(tmp);
  free(resid);
  free(phase);
  return rc;
}

size_t analytics_flag_anomalies(const double *z, size_t n, double threshold, bool *flags) {
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    bool f = fabs(z[i]) > threshold;
    if (flags) flags[i] = f;
    count += f;
  }
  return count;
}
