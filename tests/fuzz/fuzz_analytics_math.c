/*
 * Fuzz target: the analytics functions on arbitrary sample arrays (NaN, infinities,
 * denormals, ties, tiny and huge lengths). Input: byte 0 = season length, byte 1 = horizon,
 * the rest = doubles. Nothing may crash, hang, or read out of bounds; results are checked
 * for the invariants that hold for any input.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t period = data[0] % 32, horizon = data[1] % 16;
  size_t n = (size - 2) / sizeof(double);
  if (n > 512) n = 512; /* Holt-Winters' grid search is 1000 passes */
  double *v = malloc((n ? n : 1) * sizeof *v), *z = malloc((n ? n : 1) * sizeof *z);
  double *base = malloc((n ? n : 1) * sizeof *base);
  bool *flags = malloc((n ? n : 1) * sizeof *flags);
  analytics_forecast_point_t *fc = malloc((horizon ? horizon : 1) * sizeof *fc);
  if (!v || !z || !base || !flags || !fc) goto out;
  if (n) memcpy(v, data + 2, n * sizeof *v);

  (void)analytics_median(v, n);
  (void)analytics_mad(v, n);
  analytics_linreg_t lr;
  (void)analytics_linreg(NULL, v, n, 0.95, &lr);
  analytics_mk_t mk;
  if (analytics_mann_kendall(NULL, v, n, &mk) == 0) {
    if (!(mk.p_value >= 0.0 && mk.p_value <= 1.0) && !isnan(mk.p_value)) __builtin_trap();
    if (fabs(mk.s) > (double)n * (double)(n - 1) / 2.0) __builtin_trap();
  }
  analytics_fit_t fit;
  (void)analytics_forecast_auto(v, n, period, horizon, 0.9, fc, &fit);
  if (analytics_robust_z(v, n, z) == 0) (void)analytics_flag_anomalies(z, n, ANALYTICS_ANOMALY_Z, flags);
  if (period) (void)analytics_seasonal_z(v, n, period, base, z);
  double g;
  if (analytics_gini(v, n, &g) == 0 && !(g >= 0.0 && g < 1.0)) __builtin_trap();
  size_t k;
  if (analytics_nakamoto(v, n, 0.5, &k) == 0 && k > n) __builtin_trap();
  if (n >= 4) (void)analytics_tier(analytics_reputation(v[0], v[1], v[2], v[3]));
  (void)analytics_change_percent(n ? v[0] : 0, n ? v[n - 1] : 0);
out:
  free(v);
  free(z);
  free(base);
  free(flags);
  free(fc);
  return 0;
}
