/* Helpers linked into every analytics unit test (see testutil.h). */
#include "testutil.h"

#include <math.h>

double test_uniform(test_rng_t *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

double test_gauss(test_rng_t *r) {
  /* Box-Muller; the second value is thrown away to keep the state simple. */
  double u1 = test_uniform(r), u2 = test_uniform(r);
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
