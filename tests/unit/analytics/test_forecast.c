/* Unit tests: linear and Holt-Winters forecasts, model choice, anomaly scores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"
#include "core/core.h"
#include "testutil.h"

static void test_linear_forecast_exact(void **state) {
  (void)state;
  double y[20];
  for (int i = 0; i < 20; i++) y[i] = 5.0 + 0.5 * i;
  analytics_forecast_point_t f[3];
  analytics_fit_t fit;
  assert_int_equal(analytics_forecast_linear(y, 20, 3, 0.95, f, &fit), 0);
  for (int h = 0; h < 3; h++) {
    assert_float_equal(f[h].value, 5.0 + 0.5 * (20 + h), 1e-9);
    assert_float_equal(f[h].upper - f[h].lower, 0.0, 1e-6);
  }
  assert_int_equal(fit.model, ANALYTICS_MODEL_LINEAR);
  assert_string_equal(analytics_model_name(fit.model), "linear");
  assert_int_equal(analytics_forecast_linear(y, 2, 3, 0.95, f, &fit), MD_EINVAL);
}

static void test_linear_forecast_interval(void **state) {
  (void)state;
  test_rng_t r = {3};
  double y[60];
  int covered = 0, total = 0;
  for (int rep = 0; rep < 200; rep++) {
    for (int i = 0; i < 60; i++) y[i] = 20.0 - 0.25 * i + 1.5 * test_gauss(&r);
    analytics_forecast_point_t f[5];
    assert_int_equal(analytics_forecast_linear(y, 50, 5, 0.95, f, NULL), 0);
    for (int h = 0; h < 5; h++) {
      assert_true(f[h].lower < f[h].value && f[h].value < f[h].upper);
      if (h) assert_true(f[h].upper - f[h].lower > f[h - 1].upper - f[h - 1].lower);
      covered += f[h].lower <= y[50 + h] && y[50 + h] <= f[h].upper;
      total++;
    }
  }
  /* prediction intervals at 95 %: coverage near 95 % */
  assert_in_range(covered, total * 90 / 100, total * 99 / 100);
}

static double seasonal_truth(int t) { return 10.0 + 0.1 * t + 5.0 * sin(2.0 * M_PI * t / 24.0); }

static void test_holt_winters_seasonal(void **state) {
  (void)state;
  test_rng_t r = {11};
  double y[96];
  for (int t = 0; t < 96; t++) y[t] = seasonal_truth(t) + 0.2 * test_gauss(&r);
  analytics_forecast_point_t f[24], lin[24];
  analytics_fit_t fit, lfit;
  assert_int_equal(analytics_forecast_auto(y, 96, 24, 24, 0.95, f, &fit), 0);
  assert_int_equal(fit.model, ANALYTICS_MODEL_HOLT_WINTERS);
  assert_string_equal(analytics_model_name(fit.model), "holt_winters");
  assert_int_equal(fit.period, 24);
  assert_true(fit.alpha > 0 && fit.alpha < 1 && fit.beta > 0 && fit.gamma > 0);
  assert_int_equal(analytics_forecast_linear(y, 96, 24, 0.95, lin, &lfit), 0);
  assert_true(fit.aic < lfit.aic);
  double worst_hw = 0, worst_lin = 0;
  int inside = 0;
  for (int h = 0; h < 24; h++) {
    double truth = seasonal_truth(96 + h);
    worst_hw = fmax(worst_hw, fabs(f[h].value - truth));
    worst_lin = fmax(worst_lin, fabs(lin[h].value - truth));
    inside += f[h].lower <= truth && truth <= f[h].upper;
    assert_true(f[h].lower < f[h].value && f[h].value < f[h].upper);
  }
  assert_true(worst_hw < 1.5);
  assert_true(worst_lin > 3.0);
  assert_true(inside >= 22);

  /* too short for two seasons */
  assert_int_equal(analytics_forecast_holt_winters(y, 47, 24, 1, 0.95, f, &fit), MD_EINVAL);
  assert_int_equal(analytics_forecast_holt_winters(y, 96, 1, 1, 0.95, f, &fit), MD_EINVAL);
  /* auto falls back to the line when the series is too short for the season */
  assert_int_equal(analytics_forecast_auto(y, 30, 24, 2, 0.95, f, &fit), 0);
  assert_int_equal(fit.model, ANALYTICS_MODEL_LINEAR);
}

/* Noise only (no trend, no season) over many seeds, as /metrics/trends sees it: 4 days of
 * hourly points with a daily period offered. The chooser must not invent structure (the
 * line, with a slope near 0, wins), the forecast stays at the noise's mean, and the 95 %
 * intervals cover about 95 % of the next day's actual values. */
static void test_noise_only_forecast(void **state) {
  (void)state;
  enum { N = 96, H = 24, REPS = 200 };
  double y[N + H];
  analytics_forecast_point_t f[H];
  analytics_fit_t fit;
  int linear = 0, covered = 0, total = 0;
  double worst_centre = 0;
  for (int rep = 0; rep < REPS; rep++) {
    test_rng_t r = {(uint64_t)rep * 2654435761u + 1};
    for (int t = 0; t < N + H; t++) y[t] = 50.0 + 4.0 * test_gauss(&r);
    assert_int_equal(analytics_forecast_auto(y, N, 24, H, 0.95, f, &fit), 0);
    linear += fit.model == ANALYTICS_MODEL_LINEAR;
    worst_centre = fmax(worst_centre, fabs(f[0].value - 50.0));
    for (int h = 0; h < H; h++) {
      assert_true(f[h].lower < f[h].value && f[h].value < f[h].upper);
      covered += f[h].lower <= y[N + h] && y[N + h] <= f[h].upper;
      total++;
    }
  }
  print_message("noise only: linear chosen %d/%d, interval coverage %.1f %%, worst |f1 - mean| %.2f (sd 4)\n",
                linear, REPS, 100.0 * covered / total, worst_centre);
  assert_true(linear >= REPS * 95 / 100);
  assert_in_range(covered, total * 90 / 100, total * 99 / 100);
  assert_true(worst_centre < 4.0); /* the line's start point: within one noise sd */
}

/* Seasonal with a trend, the case each model alone gets wrong: Holt-Winters is chosen over
 * many seeds, and its intervals cover the next day. */
static void test_seasonal_many_seeds(void **state) {
  (void)state;
  enum { N = 96, H = 24, REPS = 30 };
  double y[N + H];
  analytics_forecast_point_t f[H];
  analytics_fit_t fit;
  int hw = 0, covered = 0, total = 0;
  for (int rep = 0; rep < REPS; rep++) {
    test_rng_t r = {(uint64_t)rep + 1000};
    for (int t = 0; t < N + H; t++) y[t] = seasonal_truth(t) + 0.5 * test_gauss(&r);
    assert_int_equal(analytics_forecast_auto(y, N, 24, H, 0.95, f, &fit), 0);
    hw += fit.model == ANALYTICS_MODEL_HOLT_WINTERS;
    for (int h = 0; h < H; h++, total++) covered += f[h].lower <= y[N + h] && y[N + h] <= f[h].upper;
  }
  print_message("seasonal: holt_winters chosen %d/%d, interval coverage %.1f %%\n", hw, REPS,
                100.0 * covered / total);
  assert_int_equal(hw, REPS);
  assert_true(covered >= total * 85 / 100);
}

static void test_auto_prefers_line_for_linear_data(void **state) {
  (void)state;
  test_rng_t r = {21};
  double y[96];
  int lin = 0;
  for (int rep = 0; rep < 20; rep++) {
    for (int t = 0; t < 96; t++) y[t] = 2.0 * t + test_gauss(&r);
    analytics_forecast_point_t f[4];
    analytics_fit_t fit;
    assert_int_equal(analytics_forecast_auto(y, 96, 24, 4, 0.95, f, &fit), 0);
    lin += fit.model == ANALYTICS_MODEL_LINEAR;
    assert_float_equal(f[0].value, 2.0 * 96, 2.0);
  }
  assert_true(lin >= 18);
}

static void test_robust_z(void **state) {
  (void)state;
  test_rng_t r = {8};
  double v[101], z[101];
  for (int i = 0; i < 101; i++) v[i] = 10.0 + test_gauss(&r);
  v[50] = 100.0;
  v[70] = -60.0;
  assert_int_equal(analytics_robust_z(v, 101, z), 0);
  bool flags[101];
  size_t n = analytics_flag_anomalies(z, 101, ANALYTICS_ANOMALY_Z, flags);
  assert_true(flags[50] && flags[70]);
  assert_true(z[50] > 0 && z[70] < 0);
  assert_in_range(n, 2, 3);

  /* MAD 0 (more than half equal): the mean absolute deviation stands in */
  const double c[] = {5, 5, 5, 5, 5, 5, 9};
  double cz[7];
  assert_int_equal(analytics_robust_z(c, 7, cz), 0);
  assert_float_equal(cz[0], 0.0, 0);
  assert_true(isfinite(cz[6]) && cz[6] > ANALYTICS_ANOMALY_Z);
  /* all equal but one after all equal: still sensible; all equal: zeros */
  const double e[] = {2, 2, 2};
  double ez[3];
  assert_int_equal(analytics_robust_z(e, 3, ez), 0);
  assert_int_equal(analytics_flag_anomalies(ez, 3, ANALYTICS_ANOMALY_Z, NULL), 0);
  assert_int_equal(analytics_robust_z(e, 0, ez), MD_EINVAL);
}

static void test_seasonal_baseline(void **state) {
  (void)state;
  test_rng_t r = {4};
  double v[96], z[96], base[96], gz[96];
  for (int t = 0; t < 96; t++) v[t] = 50.0 + 20.0 * sin(2.0 * M_PI * t / 24.0) + 0.5 * test_gauss(&r);
  /* at a trough, a value that would be normal at the peak */
  int trough = 24 * 2 + 18;
  v[trough] = 68.0;
  assert_int_equal(analytics_robust_z(v, 96, gz), 0);
  assert_false(fabs(gz[trough]) > ANALYTICS_ANOMALY_Z); /* hidden globally */
  assert_int_equal(analytics_seasonal_z(v, 96, 24, base, z), 0);
  assert_true(z[trough] > ANALYTICS_ANOMALY_Z); /* found against its phase */
  assert_float_equal(base[18], 30.0, 1.5);
  assert_float_equal(base[6], 70.0, 1.5);
  size_t flagged = analytics_flag_anomalies(z, 96, ANALYTICS_ANOMALY_Z, NULL);
  assert_in_range(flagged, 1, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linear_forecast_exact),
      cmocka_unit_test(test_linear_forecast_interval),
      cmocka_unit_test(test_holt_winters_seasonal),
      cmocka_unit_test(test_auto_prefers_line_for_linear_data),
      cmocka_unit_test(test_noise_only_forecast),
      cmocka_unit_test(test_seasonal_many_seeds),
      cmocka_unit_test(test_robust_z),
      cmocka_unit_test(test_seasonal_baseline),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
