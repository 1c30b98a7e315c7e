/*
 * analytics_private.h — helpers shared by the analytics .c files, not part of the API.
 */
#ifndef METRICSD_ANALYTICS_PRIVATE_H
#define METRICSD_ANALYTICS_PRIVATE_H

#include <stddef.h>

/* Reorders v so that v[k] is the k-th smallest (0-based) with no larger value before it;
 * returns v[k]. n > k required. */
double analytics_select_kth(double *v, size_t n, size_t k);
/* Median of v (reordered in place); NaN for n = 0. */
double analytics_median_inplace(double *v, size_t n);

#endif
