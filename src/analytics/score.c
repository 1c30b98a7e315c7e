/*
 * analytics/score.c — inequality (Gini, Nakamoto coefficient) and weighted scores with tiers,
 * for the decentralisation and reputation analytics of seed 000 (providers per region,
 * token flows, provider reputation).
 * Thread-safe, stateless.
 */
#include "analytics/analytics.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int sorted_copy(const double *v, size_t n, double **out, double *sum) {
  if (!v || n == 0) return MD_EINVAL;
  double s = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(v[i]) || v[i] < 0.0) return MD_EINVAL;
    s += v[i];
  }
  double *c = malloc(n * sizeof *c);
  if (!c) return MD_ENOMEM;
  memcpy(c, v, n * sizeof *c);
  qsort(c, n, sizeof *c, cmp_double);
  /* Both measures are scale-free: dividing by the largest value keeps every sum finite
   * (values near DBL_MAX would otherwise overflow to infinity). */
  double max = c[n - 1];
  if (max > 0.0) {
    s = 0.0;
    for (size_t i = 0; i < n; i++) s += (c[i] /= max);
  }
  *out = c;
  *sum = s;
  return MD_OK;
}

int analytics_gini(const double *v, size_t n, double *out) {
  double *c = NULL, sum = 0.0;
  int rc = sorted_copy(v, n, &c, &sum);
  if (rc) return rc;
  if (sum > 0.0) {
    /* G = 2 sum(i x_(i)) / (n sum x) - (n + 1) / n with ascending x and i from 1. */
    double weighted = 0.0;
    for (size_t i = 0; i < n; i++) weighted += (double)(i + 1) * c[i];
    double dn = (double)n;
    *out = 2.0 * weighted / (dn * sum) - (dn + 1.0) / dn;
    if (*out < 0.0) *out = 0.0; /* rounding on equal values */
  } else {
    *out = 0.0;
  }
  free(c);
  return MD_OK;
}

int analytics_nakamoto(const double *v, size_t n, double share, size_t *out) {
  if (!(share > 0.0 && share < 1.0) || !out) return MD_EINVAL;
  double *c = NULL, sum = 0.0;
  int rc = sorted_copy(v, n, &c, &sum);
  if (rc) return rc;
  size_t k = 0;
  if (sum > 0.0) {
    double acc = 0.0;
    for (size_t i = n; i-- > 0;) {
      acc += c[i];
      k++;
      if (acc > share * sum) break;
    }
  }
  *out = k;
  free(c);
  return MD_OK;
}

double analytics_weighted_score(const double *values, const double *weights, size_t n) {
  double acc = 0.0, wsum = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(values[i]) || !(weights[i] >= 0.0)) continue;
    acc += values[i] * weights[i];
    wsum += weights[i];
  }
  return wsum > 0.0 ? acc / wsum : NAN;
}

double analytics_reputation(double reliability, double performance, double quality, double peer) {
  const double v[4] = {reliability, performance, quality, peer};
  static const double w[4] = {0.35, 0.30, 0.25, 0.10};
  return analytics_weighted_score(v, w, 4);
}

analytics_tier_t analytics_tier(double score) {
  if (isnan(score)) return ANALYTICS_TIER_UNRATED;
  if (score >= ANALYTICS_TIER_PLATINUM_MIN) return ANALYTICS_TIER_PLATINUM;
  if (score >= ANALYTICS_TIER_GOLD_MIN) return ANALYTICS_TIER_GOLD;
  if (score >= ANALYTICS_TIER_SILVER_MIN) return ANALYTICS_TIER_SILVER;
  if (score >= ANALYTICS_TIER_BRONZE_MIN) return ANALYTICS_TIER_BRONZE;
  return ANALYTICS_TIER_UNRATED;
}

const char *analytics_tier_name(analytics_tier_t t) {
  switch (t) {
  case ANALYTICS_TIER_PLATINUM: return "Platinum";
  case ANALYTICS_TIER_GOLD: return "Gold";
  case ANALYTICS_TIER_SILVER: return "Silver";
  case ANALYTICS_TIER_BRONZE: return "Bronze";
  default: return "Unrated";
  }
}
