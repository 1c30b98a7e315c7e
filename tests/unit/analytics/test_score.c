/* Unit tests: Gini, Nakamoto coefficient, weighted scores, reputation and tiers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "analytics/analytics.h"
#include "core/core.h"
#include "testutil.h"

/* The textbook definition, O(n^2): mean absolute difference over twice the mean. */
static double gini_reference(const double *v, size_t n) {
  double diff = 0.0, sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    sum += v[i];
    for (size_t j = 0; j < n; j++) diff += fabs(v[i] - v[j]);
  }
  return diff / (2.0 * (double)n * sum);
}

static void test_gini_known(void **state) {
  (void)state;
  double g;
  const double equal[] = {7, 7, 7, 7, 7};
  assert_int_equal(analytics_gini(equal, 5, &g), 0);
  assert_float_equal(g, 0.0, 1e-12);
  const double one[] = {0, 0, 0, 10};
  assert_int_equal(analytics_gini(one, 4, &g), 0);
  assert_float_equal(g, 0.75, 1e-12); /* (n-1)/n */
  const double lin[] = {5, 1, 4, 2, 3};
  assert_int_equal(analytics_gini(lin, 5, &g), 0);
  assert_float_equal(g, 4.0 / 15.0, 1e-12);
  const double zeros[] = {0, 0};
  assert_int_equal(analytics_gini(zeros, 2, &g), 0);
  assert_float_equal(g, 0.0, 0);

  test_rng_t r = {1};
  double v[300];
  for (int i = 0; i < 300; i++) v[i] = -log(test_uniform(&r)); /* exponential: G = 1/2 */
  assert_int_equal(analytics_gini(v, 300, &g), 0);
  assert_float_equal(g, gini_reference(v, 300), 1e-9);
  assert_float_equal(g, 0.5, 0.06);

  /* near DBL_MAX: no overflow to infinity (found by fuzz_analytics_math) */
  const double huge[] = {1.7e308, 1.7e308, 0};
  assert_int_equal(analytics_gini(huge, 3, &g), 0);
  assert_float_equal(g, 1.0 / 3.0, 1e-12);
  size_t nk;
  assert_int_equal(analytics_nakamoto(huge, 3, 0.5, &nk), 0);
  assert_int_equal(nk, 2);

  const double bad[] = {1, -1};
  assert_int_equal(analytics_gini(bad, 2, &g), MD_EINVAL);
  const double inf[] = {1, INFINITY};
  assert_int_equal(analytics_gini(inf, 2, &g), MD_EINVAL);
  assert_int_equal(analytics_gini(bad, 0, &g), MD_EINVAL);
}

static void test_nakamoto(void **state) {
  (void)state;
  size_t k;
  const double a[] = {20, 50, 30};
  assert_int_equal(analytics_nakamoto(a, 3, 0.5, &k), 0);
  assert_int_equal(k, 2); /* 50 is not more than half */
  const double b[] = {20, 60, 20};
  assert_int_equal(analytics_nakamoto(b, 3, 0.5, &k), 0);
  assert_int_equal(k, 1);
  const double c[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_int_equal(analytics_nakamoto(c, 10, 0.5, &k), 0);
  assert_int_equal(k, 6);
  const double z[] = {0, 0};
  assert_int_equal(analytics_nakamoto(z, 2, 0.5, &k), 0);
  assert_int_equal(k, 0);
  assert_int_equal(analytics_nakamoto(c, 10, 1.0, &k), MD_EINVAL);
}

static void test_scores_and_tiers(void **state) {
  (void)state;
  assert_float_equal(analytics_reputation(100, 100, 100, 100), 100.0, 1e-12);
  double s = analytics_reputation(80, 70, 90, 50);
  assert_float_equal(s, 0.35 * 80 + 0.30 * 70 + 0.25 * 90 + 0.10 * 50, 1e-12);
  assert_int_equal(analytics_tier(s), ANALYTICS_TIER_GOLD);
  /* a missing component: the others renormalised */
  assert_float_equal(analytics_reputation(80, 70, 90, NAN), (28.0 + 21.0 + 22.5) / 0.9, 1e-9);
  assert_true(isnan(analytics_reputation(NAN, NAN, NAN, NAN)));
  /* reliability weighs most: swapping it with peer feedback changes the score */
  assert_true(analytics_reputation(100, 50, 50, 0) > analytics_reputation(0, 50, 50, 100));

  const double v[] = {10, 20};
  const double w[] = {3, 1};
  assert_float_equal(analytics_weighted_score(v, w, 2), 12.5, 1e-12);

  assert_int_equal(analytics_tier(90.0), ANALYTICS_TIER_PLATINUM);
  assert_int_equal(analytics_tier(100.0), ANALYTICS_TIER_PLATINUM);
  assert_int_equal(analytics_tier(89.999), ANALYTICS_TIER_GOLD);
  assert_int_equal(analytics_tier(75.0), ANALYTICS_TIER_GOLD);
  assert_int_equal(analytics_tier(74.9), ANALYTICS_TIER_SILVER);
  assert_int_equal(analytics_tier(60.0), ANALYTICS_TIER_SILVER);
  assert_int_equal(analytics_tier(59.0), ANALYTICS_TIER_BRONZE);
  assert_int_equal(analytics_tier(40.0), ANALYTICS_TIER_BRONZE);
  assert_int_equal(analytics_tier(39.99), ANALYTICS_TIER_UNRATED);
  assert_int_equal(analytics_tier(NAN), ANALYTICS_TIER_UNRATED);
  assert_string_equal(analytics_tier_name(ANALYTICS_TIER_PLATINUM), "Platinum");
  assert_string_equal(analytics_tier_name(ANALYTICS_TIER_BRONZE), "Bronze");
  assert_string_equal(analytics_tier_name(ANALYTICS_TIER_UNRATED), "Unrated");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gini_known),
      cmocka_unit_test(test_nakamoto),
      cmocka_unit_test(test_scores_and_tiers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
