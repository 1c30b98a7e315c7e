/* Shared helpers for the analytics unit tests: a seeded Gaussian generator so "random"
 * series are reproducible. */
#ifndef ANALYTICS_TESTUTIL_H
#define ANALYTICS_TESTUTIL_H
#include <stdint.h>

typedef struct test_rng { uint64_t s; } test_rng_t;
double test_uniform(test_rng_t *r); /* (0, 1) */
double test_gauss(test_rng_t *r);   /* N(0, 1) */

#endif
