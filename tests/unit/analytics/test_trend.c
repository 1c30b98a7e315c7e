/* Unit tests: distributions, order statistics, regression, Mann-Kendall and Sen's slope. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"
#include "analytics/analytics_private.h"
#include "core/core.h"
#include "testutil.h"

static void test_distributions(void **state) {
  (void)state;
  assert_float_equal(analytics_normal_cdf(0.0), 0.5, 1e-12);
  assert_float_equal(analytics_normal_quantile(0.975), 1.959963985, 1e-8);
  assert_float_equal(analytics_normal_quantile(0.5), 0.0, 1e-12);
  assert_float_equal(analytics_normal_quantile(0.05), -1.644853627, 1e-8);
  assert_true(isnan(analytics_normal_quantile(0.0)));
  assert_true(isnan(analytics_normal_quantile(1.5)));
  /* t table values */
  assert_float_equal(analytics_t_quantile(0.975, 1), 12.70620474, 1e-6);
  assert_float_equal(analytics_t_quantile(0.975, 10), 2.228138852, 1e-7);
  assert_float_equal(analytics_t_quantile(0.95, 30), 1.697260887, 1e-7);
  assert_float_equal(analytics_t_quantile(0.025, 5), -2.570581836, 1e-7);
  assert_float_equal(analytics_t_cdf(0.0, 7), 0.5, 1e-12);
  assert_float_equal(analytics_t_cdf(2.0, 3), 0.930337, 1e-6);
  /* large df approaches the normal */
  assert_float_equal(analytics_t_quantile(0.975, 1e6), 1.959964, 1e-4);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void test_median_select(void **state) {
  (void)state;
  test_rng_t r = {42};
  double v[257], s[257];
  for (size_t n = 1; n <= 257; n += 8) {
    for (int rep = 0; rep < 5; rep++) {
      for (size_t i = 0; i < n; i++) {
        /* rep 0: sorted, rep 1: reversed, rep 2: many ties, else random */
        if (rep == 0) v[i] = (double)i;
        else if (rep == 1) v[i] = (double)(n - i);
        else if (rep == 2) v[i] = (double)(int)(test_uniform(&r) * 3);
        else v[i] = test_gauss(&r);
      }
      memcpy(s, v, n * sizeof *v);
      qsort(s, n, sizeof *s, cmp_double);
      double want = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
      assert_float_equal(analytics_median(v, n), want, 0.0);
      size_t k = (size_t)(test_uniform(&r) * (double)n);
      double tmp[257];
      memcpy(tmp, v, n * sizeof *v);
      assert_float_equal(analytics_select_kth(tmp, n, k), s[k], 0.0);
      for (size_t i = 0; i < k; i++) assert_true(tmp[i] <= tmp[k]);
      for (size_t i = k + 1; i < n; i++) assert_true(tmp[i] >= tmp[k]);
    }
  }
  assert_true(isnan(analytics_median(v, 0)));
  const double m[] = {1, 1, 2, 2, 4, 6, 9};
  assert_float_equal(analytics_mad(m, 7), 1.0, 0.0); /* median 2, deviations 1 1 0 0 2 4 7 */
}

static void test_linreg(void **state) {
  (void)state;
  double y[30], x[30];
  for (int i = 0; i < 30; i++) {
    x[i] = 1e12 + 60000.0 * i; /* ms timestamps: must not lose precision */
    y[i] = 3.0 + 2.0 * i;
  }
  analytics_linreg_t lr;
  assert_int_equal(analytics_linreg(NULL, y, 30, 0.95, &lr), 0);
  assert_float_equal(lr.slope, 2.0, 1e-12);
  assert_float_equal(lr.intercept, 3.0, 1e-10);
  assert_float_equal(lr.r2, 1.0, 1e-12);
  assert_float_equal(lr.slope_hi - lr.slope_lo, 0.0, 1e-9);
  assert_int_equal(analytics_linreg(x, y, 30, 0.95, &lr), 0);
  assert_float_equal(lr.slope, 2.0 / 60000.0, 1e-12);

  /* With noise the 95 % interval covers the true slope in about 95 % of cases. */
  test_rng_t r = {7};
  int covered = 0;
  for (int rep = 0; rep < 400; rep++) {
    for (int i = 0; i < 30; i++) y[i] = 1.0 + 0.5 * i + 2.0 * test_gauss(&r);
    assert_int_equal(analytics_linreg(NULL, y, 30, 0.95, &lr), 0);
    assert_true(lr.slope_lo < lr.slope && lr.slope < lr.slope_hi);
    covered += lr.slope_lo <= 0.5 && 0.5 <= lr.slope_hi;
  }
  assert_in_range(covered, 360, 396);

  /* errors */
  assert_int_equal(analytics_linreg(NULL, y, 1, 0.95, &lr), MD_EINVAL);
  double same_x[3] = {1, 1, 1};
  assert_int_equal(analytics_linreg(same_x, y, 3, 0.95, &lr), MD_EINVAL);
  assert_int_equal(analytics_linreg(NULL, y, 3, 1.0, &lr), MD_EINVAL);
}

static void test_mk_known_values(void **state) {
  (void)state;
  analytics_mk_t mk;
  const double a[] = {1, 2, 3, 4, 5};
  assert_int_equal(analytics_mann_kendall(NULL, a, 5, &mk), 0);
  assert_float_equal(mk.s, 10, 0);
  assert_float_equal(mk.var_s, 5.0 * 4 * 15 / 18, 1e-12);
  assert_float_equal(mk.z, 9.0 / sqrt(5.0 * 4 * 15 / 18), 1e-12);
  assert_float_equal(mk.p_value, 0.02749, 1e-4);
  assert_float_equal(mk.tau, 1.0, 1e-12);
  assert_float_equal(mk.sen_slope, 1.0, 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_INCREASING);

  /* ties: two groups of two remove 2 * 18 from n(n-1)(2n+5) */
  const double t[] = {1, 1, 2, 2, 3};
  assert_int_equal(analytics_mann_kendall(NULL, t, 5, &mk), 0);
  assert_float_equal(mk.s, 8, 0);
  assert_float_equal(mk.var_s, (300.0 - 36.0) / 18.0, 1e-12);
  assert_float_equal(mk.z, 7.0 / sqrt(264.0 / 18.0), 1e-12);

  /* all equal: no variance, no trend */
  const double c[] = {4, 4, 4, 4, 4, 4};
  assert_int_equal(analytics_mann_kendall(NULL, c, 6, &mk), 0);
  assert_float_equal(mk.s, 0, 0);
  assert_float_equal(mk.p_value, 1.0, 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_STABLE);

  /* too short */
  assert_int_equal(analytics_mann_kendall(NULL, a, 2, &mk), MD_EINVAL);
  assert_string_equal(analytics_trend_name(ANALYTICS_TREND_DECREASING), "decreasing");
  assert_string_equal(analytics_trend_name(ANALYTICS_TREND_STABLE), "stable");
}

static void test_mk_linear_series(void **state) {
  (void)state;
  test_rng_t r = {99};
  double y[48], x[48];
  for (int i = 0; i < 48; i++) {
    x[i] = 3600.0 * i; /* hourly, in seconds */
    y[i] = 100.0 + 0.8 * i + 3.0 * test_gauss(&r);
  }
  analytics_mk_t mk;
  assert_int_equal(analytics_mann_kendall(x, y, 48, &mk), 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_INCREASING);
  assert_true(mk.p_value < 0.001);
  assert_float_equal(mk.sen_slope * 3600.0, 0.8, 0.15); /* per hour */

  for (int i = 0; i < 48; i++) y[i] = 50.0 - 0.5 * i + test_gauss(&r);
  assert_int_equal(analytics_mann_kendall(NULL, y, 48, &mk), 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_DECREASING);
  assert_float_equal(mk.sen_slope, -0.5, 0.1);

  /* Sen's slope ignores a wild outlier that drags the least-squares slope. */
  for (int i = 0; i < 48; i++) y[i] = 2.0 * i;
  y[47] = 1e6;
  assert_int_equal(analytics_mann_kendall(NULL, y, 48, &mk), 0);
  assert_float_equal(mk.sen_slope, 2.0, 1e-9);
  analytics_linreg_t lr;
  assert_int_equal(analytics_linreg(NULL, y, 48, 0.95, &lr), 0);
  assert_true(lr.slope > 100.0);
}

/* Noise only: stable at the documented 95 % confidence. For one fixed series, and over many
 * series the false-alarm rate must be near alpha = 5 %. */
static void test_mk_noise_is_stable(void **state) {
  (void)state;
  test_rng_t r = {12345};
  double y[200];
  for (int i = 0; i < 200; i++) y[i] = 10.0 + test_gauss(&r);
  analytics_mk_t mk;
  assert_int_equal(analytics_mann_kendall(NULL, y, 200, &mk), 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_STABLE);
  assert_true(mk.p_value >= ANALYTICS_TREND_ALPHA);

  int alarms = 0;
  for (int rep = 0; rep < 1000; rep++) {
    for (int i = 0; i < 24; i++) y[i] = 100.0 + 5.0 * test_gauss(&r);
    assert_int_equal(analytics_mann_kendall(NULL, y, 24, &mk), 0);
    alarms += mk.trend != ANALYTICS_TREND_STABLE;
  }
  assert_in_range(alarms, 25, 75); /* 5 % of 1000, with room for sampling error */
}

/* The false-alarm rate of the trend decision on trendless data, measured over many seeds,
 * lengths and noise shapes: Gaussian, heavy-tailed (exponential: skewed request latencies)
 * and small integer counts (many ties, which the tie correction must absorb). Each rate must
 * stay near alpha = 5 %: at most 5 % + 4.5 standard errors (a test that said "increasing"
 * too often would fail here) and not absurdly low (a test that never fires is useless; the
 * continuity correction makes short series slightly conservative). */
static double noise_value(test_rng_t *r, int shape) {
  switch (shape) {
  case 0: return 100.0 + 5.0 * test_gauss(r);
  case 1: return -log(test_uniform(r)); /* exponential(1) */
  default: return floor(3.0 * test_uniform(r)); /* 0, 1 or 2: heavy ties */
  }
}

static void test_mk_false_alarm_rate(void **state) {
  (void)state;
  static const size_t lens[] = {12, 24, 48, 168};
  static const char *const shapes[] = {"gaussian", "exponential", "ties{0,1,2}"};
  double y[168];
  analytics_mk_t mk;
  for (int shape = 0; shape < 3; shape++)
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      size_t n = lens[li];
      int reps = n > 100 ? 1000 : 2000; /* O(n^2) a series: keep the test short */
      int alarms = 0, up = 0;
      for (int rep = 0; rep < reps; rep++) {
        test_rng_t r = {(uint64_t)(rep + 1) * 7919u + (uint64_t)n * 104729u + (uint64_t)shape};
        for (size_t i = 0; i < n; i++) y[i] = noise_value(&r, shape);
        assert_int_equal(analytics_mann_kendall(NULL, y, n, &mk), 0);
        alarms += mk.trend != ANALYTICS_TREND_STABLE;
        up += mk.trend == ANALYTICS_TREND_INCREASING;
      }
      double rate = (double)alarms / reps;
      double se = sqrt(ANALYTICS_TREND_ALPHA * (1 - ANALYTICS_TREND_ALPHA) / reps);
      print_message("noise %-12s n=%3zu: false alarms %5.2f %% (%d up, %d down) over %d seeds\n",
                    shapes[shape], n, 100.0 * rate, up, alarms - up, reps);
      assert_true(rate <= ANALYTICS_TREND_ALPHA + 4.5 * se);
      assert_true(rate >= 0.02);
      /* no direction is favoured */
      assert_true(abs(2 * up - alarms) <= 4 * (int)sqrt((double)alarms + 1) + 4);
    }
}

/* Serially correlated noise (AR(1), as steady metrics sampled every step often are): the
 * textbook test calls a trend in 12-50 % of trendless series; the effective-sample-size
 * correction brings that down to within a few points of alpha. Measured, then bounded: the
 * corrected rate at most 10 %, and under half the plain test's at phi = 0.6. */
static void test_mk_serial_correlation(void **state) {
  (void)state;
  static const double phis[] = {0.3, 0.6};
  static const size_t lens[] = {24, 48, 168};
  const int reps = 1000;
  double y[168];
  analytics_mk_t mk;
  for (size_t pi = 0; pi < 2; pi++)
    for (size_t li = 0; li < 3; li++) {
      size_t n = lens[li];
      double phi = phis[pi];
      int plain = 0, corrected = 0;
      double rho_sum = 0;
      for (int rep = 0; rep < reps; rep++) {
        test_rng_t r = {(uint64_t)rep * 6364136223846793005u + n + (uint64_t)(pi << 20)};
        double e = test_gauss(&r) / sqrt(1.0 - phi * phi); /* stationary start */
        for (size_t i = 0; i < n; i++) {
          e = phi * e + test_gauss(&r);
          y[i] = 50.0 + e;
        }
        assert_int_equal(analytics_mann_kendall_ex(NULL, y, n, false, &mk), 0);
        plain += mk.trend != ANALYTICS_TREND_STABLE;
        assert_float_equal(mk.var_factor, 1.0, 0);
        assert_int_equal(analytics_mann_kendall(NULL, y, n, &mk), 0);
        corrected += mk.trend != ANALYTICS_TREND_STABLE;
        assert_true(mk.var_factor >= 1.0);
        rho_sum += mk.lag1_rho;
      }
      print_message("AR(1) phi=%.1f n=%3zu: false alarms %5.1f %% plain, %5.1f %% corrected (mean lag-1 rho %.2f)\n",
                    phi, n, 100.0 * plain / reps, 100.0 * corrected / reps, rho_sum / reps);
      assert_true(corrected <= reps / 10);
      if (phi > 0.5) assert_true(2 * corrected < plain);
    }
}

/* Power: the same decision does find a modest trend (half a noise standard deviation per
 * day over a day of hourly points) most of the time, so "stable" on noise is not bought by
 * a test that never fires. */
static void test_mk_power(void **state) {
  (void)state;
  double y[24];
  analytics_mk_t mk;
  int found = 0;
  for (int rep = 0; rep < 500; rep++) {
    test_rng_t r = {(uint64_t)rep + 77};
    for (int i = 0; i < 24; i++) y[i] = 100.0 + 0.1 * i + test_gauss(&r);
    assert_int_equal(analytics_mann_kendall(NULL, y, 24, &mk), 0);
    found += mk.trend == ANALYTICS_TREND_INCREASING;
  }
  print_message("trend 0.1 sd/step, n=24: detected in %d of 500\n", found);
  assert_true(found >= 300);
  /* a clean trend is not mistaken for serial correlation: the detrended ranks carry none */
  for (int i = 0; i < 24; i++) y[i] = 3.0 * i;
  assert_int_equal(analytics_mann_kendall(NULL, y, 24, &mk), 0);
  assert_float_equal(mk.var_factor, 1.0, 0);
  assert_int_equal(mk.trend, ANALYTICS_TREND_INCREASING);
}

static void test_mk_large_sampled_sen(void **state) {
  (void)state;
  size_t n = 2500; /* 3.1 M pairs: over the cap, Sen's slope samples pairs */
  double *y = malloc(n * sizeof *y);
  assert_non_null(y);
  test_rng_t r = {5};
  for (size_t i = 0; i < n; i++) y[i] = 3.0 * (double)i + test_gauss(&r);
  analytics_mk_t mk;
  assert_int_equal(analytics_mann_kendall(NULL, y, n, &mk), 0);
  assert_float_equal(mk.sen_slope, 3.0, 0.01);
  assert_int_equal(mk.trend, ANALYTICS_TREND_INCREASING);
  double first = mk.sen_slope;
  assert_int_equal(analytics_mann_kendall(NULL, y, n, &mk), 0);
  assert_float_equal(mk.sen_slope, first, 0); /* deterministic */
  free(y);
}

static void test_change_percent(void **state) {
  (void)state;
  assert_float_equal(analytics_change_percent(85, 98), 100.0 * 13.0 / 85.0, 1e-12);
  assert_float_equal(analytics_change_percent(200, 100), -50.0, 1e-12);
  assert_float_equal(analytics_change_percent(-10, -5), 50.0, 1e-12);
  assert_float_equal(analytics_change_percent(0, 0), 0.0, 0);
  assert_true(isnan(analytics_change_percent(0, 3)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_distributions),    cmocka_unit_test(test_median_select),
      cmocka_unit_test(test_linreg),           cmocka_unit_test(test_mk_known_values),
      cmocka_unit_test(test_mk_linear_series), cmocka_unit_test(test_mk_noise_is_stable),
      cmocka_unit_test(test_mk_large_sampled_sen), cmocka_unit_test(test_change_percent),
      cmocka_unit_test(test_mk_false_alarm_rate), cmocka_unit_test(test_mk_power),
      cmocka_unit_test(test_mk_serial_correlation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
