/*
 * analytics — pure math on sample arrays: trend tests, change percentage, forecasting,
 * anomaly detection, inequality and weighted scores (SPEC §4; seeds 000, 003, 004).
 *
 * No I/O, no allocation visible to the caller (a few functions allocate scratch space and
 * free it before returning; they report MD_ENOMEM when that fails). Every function is
 * reentrant and thread-safe. Inputs are plain arrays with their length; NaN samples are the
 * caller's business (the API layer drops them before calling in).
 *
 * Statistical conventions (documented for users in docs/analytics.md):
 *   - trends: Mann-Kendall test with tie correction, continuity correction and an
 *     effective-sample-size correction for serial correlation (AR(1) of the detrended ranks),
 *     normal approximation, two-sided p-value; a series
 *     is "increasing"/"decreasing" when
 *     p < alpha (ANALYTICS_TREND_ALPHA = 0.05, i.e. 95 % confidence), else "stable".
 *     The size of the trend is Sen's slope (median of pairwise slopes).
 *   - intervals: Student t quantiles for regression (n - 2 degrees of freedom), normal
 *     quantiles elsewhere.
 */
#ifndef METRICSD_ANALYTICS_H
#define METRICSD_ANALYTICS_H

#include <stdbool.h>
#include <stddef.h>

/* Significance level of the trend classification: 0.05 (95 % confidence). */
#define ANALYTICS_TREND_ALPHA 0.05

/* ---- distributions ------------------------------------------------------------------- */

double analytics_normal_cdf(double z);
/* Inverse of the standard normal CDF for p in (0, 1); NaN outside. */
double analytics_normal_quantile(double p);
/* Student t CDF with df > 0 degrees of freedom, and its inverse for p in (0, 1). */
double analytics_t_cdf(double t, double df);
double analytics_t_quantile(double p, double df);

/* ---- descriptive --------------------------------------------------------------------- */

/* Median of n values (n > 0); NaN for n = 0. Does not modify v (copies into scratch).
 * Returns NaN also when scratch allocation fails. */
double analytics_median(const double *v, size_t n);
/* Median absolute deviation around the median (unscaled). */
double analytics_mad(const double *v, size_t n);

/* ---- linear regression --------------------------------------------------------------- */

typedef struct analytics_linreg {
  size_t n;
  double slope, intercept;
  double r2;                 /* coefficient of determination (1 for a perfect fit, flat y included) */
  double residual_sd;        /* sqrt(SSE / (n - 2)); 0 when n == 2 */
  double slope_se;           /* standard error of the slope */
  double slope_lo, slope_hi; /* confidence interval of the slope at `confidence` */
  double x_mean, sxx;        /* kept for prediction intervals */
} analytics_linreg_t;

/* Ordinary least squares y = intercept + slope * x. x may be NULL (then x = 0, 1, 2 ...).
 * confidence in (0, 1), e.g. 0.95. MD_EINVAL when n < 2 or all x are equal. */
int analytics_linreg(const double *x, const double *y, size_t n, double confidence,
                     analytics_linreg_t *out);

/* ---- Mann-Kendall trend test ------------------------------------------------------------ */

typedef enum {
  ANALYTICS_TREND_STABLE = 0,
  ANALYTICS_TREND_INCREASING = 1,
  ANALYTICS_TREND_DECREASING = 2,
} analytics_trend_t;

typedef struct analytics_mk {
  size_t n;
  double s;          /* Mann-Kendall S statistic */
  double var_s;      /* variance of S with the tie correction (independent samples) */
  double var_factor; /* n/n* >= 1 applied to var_s for serial correlation (1 = none) */
  double lag1_rho;   /* bias-corrected lag-1 autocorrelation of the detrended ranks (NaN if n < 4) */
  double z;          /* continuity-corrected normal score, on var_s * var_factor */
  double p_value;    /* two-sided */
  double tau;        /* Kendall's tau-a = S / (n (n - 1) / 2) */
  double sen_slope;  /* median pairwise slope, in y units per x unit */
  double sen_intercept; /* median(y - sen_slope * x) */
  analytics_trend_t trend; /* classification at ANALYTICS_TREND_ALPHA */
} analytics_mk_t;

/* Runs the Mann-Kendall test on y against x (x may be NULL: 0, 1, 2 ...; x must be strictly
 * increasing otherwise). MD_EINVAL when n < 3. O(n^2) time; Sen's slope uses every pair up
 * to ANALYTICS_SEN_MAX_PAIRS pairs and a deterministic sample of pairs above that. */
#define ANALYTICS_SEN_MAX_PAIRS ((size_t)1 << 21)
int analytics_mann_kendall(const double *x, const double *y, size_t n, analytics_mk_t *out);
/* The same with the serial-correlation correction on or off (analytics_mann_kendall: on).
 * Off is the textbook test, valid only for independent samples. */
int analytics_mann_kendall_ex(const double *x, const double *y, size_t n, bool serial_correction,
                              analytics_mk_t *out);
/* Classifies a finished test at significance alpha (ANALYTICS_TREND_ALPHA by default). */
analytics_trend_t analytics_trend_classify(const analytics_mk_t *mk, double alpha);
/* "increasing", "decreasing", "stable". */
const char *analytics_trend_name(analytics_trend_t t);

/* Percentage change from `first` to `last`: 100 * (last - first) / |first|. When first is
 * 0: 0 if last is 0 too, else NaN (undefined; the API writes null). */
double analytics_change_percent(double first, double last);

/* ---- forecasting --------------------------------------------------------------------- */

typedef enum {
  ANALYTICS_MODEL_LINEAR = 0,
  ANALYTICS_MODEL_HOLT_WINTERS = 1,
} analytics_model_t;

/* "linear", "holt_winters". */
const char *analytics_model_name(analytics_model_t m);

typedef struct analytics_forecast_point {
  double value, lower, upper; /* point forecast and prediction interval */
} analytics_forecast_point_t;

typedef struct analytics_fit {
  analytics_model_t model;
  size_t n;           /* observations used */
  double sse;         /* sum of squared (one-step-ahead for Holt-Winters) residuals */
  double rmse;        /* sqrt(sse / n_residuals) */
  double aic;         /* n_res * ln(sse / n_res) + 2 k: lower is better */
  double alpha, beta, gamma; /* Holt-Winters smoothing parameters (0 for linear) */
  size_t period;      /* season length (0 for linear) */
} analytics_fit_t;

/* Linear-regression forecast of the `horizon` steps after y[n-1] (x = 0..n-1), with
 * prediction intervals at `confidence`. MD_EINVAL when n < 3. */
int analytics_forecast_linear(const double *y, size_t n, size_t horizon, double confidence,
                              analytics_forecast_point_t *out, analytics_fit_t *fit);
/* Additive Holt-Winters with season length `period` (>= 2); needs n >= 2 * period. The
 * smoothing parameters are chosen by minimising the one-step-ahead SSE over a grid
 * (alpha, beta, gamma in {0.05 .. 0.95}). Intervals from the one-step residual variance
 * propagated h steps ahead. MD_EINVAL when the series is too short. */
int analytics_forecast_holt_winters(const double *y, size_t n, size_t period, size_t horizon,
                                    double confidence, analytics_forecast_point_t *out,
                                    analytics_fit_t *fit);
/* Fits the linear model and, when period >= 2 and n >= 2 * period, Holt-Winters too, and
 * keeps the one with the lower AIC computed on the same residuals, the one-step-ahead errors
 * of y[period..n-1] (the line refitted on the points before each one); ties go to linear,
 * the simpler model. fit->aic is the chosen model's own (in-sample for the line). */
int analytics_forecast_auto(const double *y, size_t n, size_t period, size_t horizon,
                            double confidence, analytics_forecast_point_t *out,
                            analytics_fit_t *fit);

/* ---- anomalies ----------------------------------------------------------------------- */

/* Iglewicz-Hoaglin threshold for the modified z-score. */
#define ANALYTICS_ANOMALY_Z 3.5

/* Robust (modified) z-score of every value: 0.6745 * (x - median) / MAD. When MAD is 0 the
 * mean absolute deviation (scaled by 1.253314) stands in; when that is 0 too, values equal to
 * the median score 0 and the others ±INFINITY. Writes n scores into z. */
int analytics_robust_z(const double *v, size_t n, double *z);
/* Seasonal baseline: baseline[i] = median of the values at the same phase (i mod period),
 * and z[i] the robust z-score of the residual v[i] - baseline[i]. period >= 1 (1 = no
 * season). baseline may be NULL. */
int analytics_seasonal_z(const double *v, size_t n, size_t period, double *baseline, double *z);
/* Flags values with |z| > threshold; returns how many were flagged (flags may be NULL). */
size_t analytics_flag_anomalies(const double *z, size_t n, double threshold, bool *flags);

/* ---- inequality ---------------------------------------------------------------------- */

/* Gini coefficient of non-negative values: 0 = perfect equality, (n-1)/n = one holds all.
 * 0 when the sum is 0. MD_EINVAL for a negative or non-finite value or n = 0. */
int analytics_gini(const double *v, size_t n, double *out);
/* Nakamoto coefficient: the least number of holders whose share exceeds `share` (e.g. 0.5)
 * of the total. 0 when the total is 0. MD_EINVAL as for Gini. */
int analytics_nakamoto(const double *v, size_t n, double share, size_t *out);

/* ---- scores and tiers ------------------------------------------------------------------ */

/* Weighted mean of components (each 0..100) with non-negative weights; weights need not sum
 * to 1 (they are normalised). NaN components are skipped and their weight left out; the
 * result is NaN when no component is present. */
double analytics_weighted_score(const double *values, const double *weights, size_t n);

/* Reputation (seed 000): reliability 35 %, performance 30 %, quality 25 %, peer feedback
 * 10 %, each 0..100. A missing (NaN) component is left out and the other weights
 * renormalised; NaN only when all four are missing. */
double analytics_reputation(double reliability, double performance, double quality, double peer);

typedef enum {
  ANALYTICS_TIER_UNRATED = 0,
  ANALYTICS_TIER_BRONZE = 1,
  ANALYTICS_TIER_SILVER = 2,
  ANALYTICS_TIER_GOLD = 3,
  ANALYTICS_TIER_PLATINUM = 4,
} analytics_tier_t;

/* Tier thresholds on the 0..100 score: Platinum >= 90, Gold >= 75, Silver >= 60,
 * Bronze >= 40; below 40, NaN (no data) → Unrated. */
#define ANALYTICS_TIER_PLATINUM_MIN 90.0
#define ANALYTICS_TIER_GOLD_MIN 75.0
#define ANALYTICS_TIER_SILVER_MIN 60.0
#define ANALYTICS_TIER_BRONZE_MIN 40.0
analytics_tier_t analytics_tier(double score);
/* "Platinum", "Gold", "Silver", "Bronze", "Unrated". */
const char *analytics_tier_name(analytics_tier_t t);

#endif
