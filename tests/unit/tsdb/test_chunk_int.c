/* Unit tests for chunk_int, the integer sequence coder under sealed chunks: every model and
 * packer round-trips at every scale (shifted by 0..60 bits), the chooser picks the packer
 * that suits a distribution, and truncated input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tsdb/chunk_int.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Mode byte layout (chunk_int.c): model in bits 0-1, packer in bits 2-3, 0x10 = from min. */
enum { PACKER_FOR = 0, PACKER_RICE = 1, PACKER_TWO = 2 };

/* Encodes, decodes, compares, checks every truncation is refused; returns the mode byte. */
static unsigned roundtrip(const int64_t *x, size_t n) {
  chunk_buf_t o = {0};
  assert_int_equal(chunk_iseq_encode(&o, x, n, true), 0);
  uint64_t *out = malloc(n * sizeof *out);
  assert_non_null(out);
  size_t off = 0;
  assert_true(chunk_iseq_decode(o.buf, o.len, &off, out, n));
  assert_int_equal(off, o.len);
  for (size_t i = 0; i < n; i++) {
    if ((int64_t)out[i] != x[i]) {
      print_error("value %zu of %zu: want %lld got %lld (mode %02x)\n", i, n, (long long)x[i],
                  (long long)out[i], o.buf[0]);
      fail();
    }
  }
  /* A decoder given fewer bytes must not report success past them. */
  for (size_t cut = 0; cut < o.len; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1);
    assert_non_null(copy);
    memcpy(copy, o.buf, cut);
    off = 0;
    bool ok = chunk_iseq_decode(copy, cut, &off, out, n);
    assert_true(!ok || off <= cut);
    free(copy);
  }
  unsigned mode = o.buf[0];
  chunk_buf_free(&o);
  free(out);
  return mode;
}

/* A bell-shaped sample (sum of four uniforms) of the given spread. */
static int64_t bell(uint64_t spread) {
  uint64_t s = 0;
  for (int k = 0; k < 4; k++) s += spread ? rnd() % spread : 0;
  return (int64_t)(s / 4) - (int64_t)(spread / 2);
}

static void test_models_and_scales(void **state) {
  (void)state;
  enum { N = 700 };
  static int64_t x[N];
  for (unsigned shift = 0; shift <= 60; shift += 4) {
    for (int shape = 0; shape < 6; shape++) {
      int64_t acc = (int64_t)(rnd() >> 2) - (INT64_C(1) << 61), step = (int64_t)(rnd() % 1000);
      for (size_t i = 0; i < N; i++) {
        int64_t r;
        switch (shape) {
        case 0: r = bell(1000); break;                                   /* gauge walk */
        case 1: r = step + bell(100); break;                             /* steady counter */
        case 2: r = (rnd() % 5 == 0) ? (int64_t)(rnd() % 100000) : (int64_t)(rnd() % 100); break; /* bursts */
        case 3: r = (int64_t)(rnd() % 4096); break;                      /* uniform */
        case 4: r = (i % 97 == 0) ? (int64_t)(rnd() >> 20) : bell(50); break; /* outliers */
        default: r = (int64_t)rnd(); break;                              /* anything, wrapping */
        }
        acc = (int64_t)((uint64_t)acc + ((uint64_t)r << shift));
        x[i] = acc;
      }
      roundtrip(x, N);
      roundtrip(x, 3);
      roundtrip(x, 2);
      roundtrip(x, 1);
    }
  }
}

static void test_packer_choice(void **state) {
  (void)state;
  enum { N = 1000 };
  static int64_t x[N];
  /* Regular steps: nothing but the first value and the step. */
  for (size_t i = 0; i < N; i++) x[i] = 1700000000000 + (int64_t)i * 15000;
  unsigned mode = roundtrip(x, N);
  assert_int_equal(mode & 3, 3);
  chunk_buf_t o = {0};
  assert_int_equal(chunk_iseq_encode(&o, x, N, true), 0);
  assert_true(o.len <= 12);
  chunk_buf_free(&o);

  /* Bell-shaped steps with a long tail: Rice codes. */
  int64_t acc = 0;
  for (size_t i = 0; i < N; i++) {
    int64_t r = bell(400);
    if (rnd() % 50 == 0) r *= 8;
    acc += r;
    x[i] = acc;
  }
  mode = roundtrip(x, N);
  assert_int_equal((mode >> 2) & 3, PACKER_RICE);

  /* Mostly small, a fifth large: two widths. */
  acc = 0;
  for (size_t i = 0; i < N; i++) {
    acc += (rnd() % 5 == 0) ? (int64_t)(rnd() % (1 << 20)) : (int64_t)(rnd() % 64);
    x[i] = acc;
  }
  mode = roundtrip(x, N);
  assert_int_equal((mode >> 2) & 3, PACKER_TWO);

  /* Uniform steps in a power-of-two range: plain bit packing. */
  acc = 0;
  for (size_t i = 0; i < N; i++) {
    acc += (int64_t)(rnd() % 1024);
    x[i] = acc;
  }
  mode = roundtrip(x, N);
  assert_int_equal((mode >> 2) & 3, PACKER_FOR);

  /* Multiples of 4096: the common divisor comes out, so ~5 bits a value, not ~17. */
  acc = 1 << 30;
  for (size_t i = 0; i < N; i++) {
    acc += 4096 * (int64_t)(rnd() % 32);
    x[i] = acc;
  }
  roundtrip(x, N);
  assert_int_equal(chunk_iseq_encode(&o, x, N, true), 0);
  assert_true(o.len < N * 6 / 8 + 32);
  chunk_buf_free(&o);
}

static void test_corrupt(void **state) {
  (void)state;
  uint64_t out[8];
  size_t off;
  static const struct {
    uint8_t b[8];
    size_t len;
  } bad[] = {
      {{0x00}, 0},                         /* empty */
      {{0x40, 0x02}, 2},                   /* unknown mode bits */
      {{0x0c, 0x02, 0x00, 0x02}, 4},       /* packer 3 */
      {{0x00, 0x02, 0x00, 0x00}, 4},       /* g == 0 */
      {{0x00, 0x02, 0x00, 0x02, 65}, 5},   /* FOR width 65 */
      {{0x00, 0x02, 0x00, 0x02, 8, 0}, 6}, /* packed bytes missing */
      {{0x04, 0x02, 0x00, 0x02, 64}, 5},   /* Rice k 64 */
      {{0x04, 0x02, 0x00, 0x02, 0, 0}, 6}, /* Rice: a run of zeros */
      {{0x01, 0x02, 0x02}, 3},             /* dod with 2 values */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    off = 0;
    size_t n = i == 8 ? 2 : 8;
    if (chunk_iseq_decode(bad[i].b, bad[i].len, &off, out, n)) {
      print_error("bad input %zu accepted\n", i);
      fail();
    }
  }
}

/* The pricing shortcuts of the encoder (one-pass Rice window, the floor that skips
 * candidates, the exact integer sum standing in for a double sum, stack vs heap scratch)
 * on the inputs that reach their edges: sums past 2^53 (the mean then comes from adding
 * doubles in order), means near 2^64 (Rice window capped at k = 63), 0/1 residuals (a
 * window of two), outliers that escape at the smallest k only, and sizes either side of
 * the 256-value stack scratch. Everything must round-trip. */
static void test_pricing_edges(void **state) {
  (void)state;
  static int64_t x[600];
  const size_t sizes[] = {2, 3, 4, 63, 64, 255, 256, 257, 600};
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    size_t n = sizes[si];
    for (int kind = 0; kind < 8; kind++) {
      uint64_t acc = rnd();
      for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: x[i] = (int64_t)(rnd() >> 12); break;                  /* residuals ~2^51: sum > 2^53 */
        case 1: x[i] = (int64_t)(rnd() | (1ULL << 63)); break;         /* mean near 2^64 */
        case 2: x[i] = (int64_t)(acc += rnd() & 1); break;             /* deltas 0/1 */
        case 3: x[i] = (int64_t)(acc += (rnd() % 50 == 0) ? rnd() >> 3 : (uint64_t)bell(8)); break;
        case 4: x[i] = (int64_t)(acc += (rnd() % 9 == 0) ? (uint64_t)1 << 40 : rnd() % 4); break;
        case 5: x[i] = i % 2 ? INT64_MIN : INT64_MAX; break;           /* wrap-around residuals */
        case 6: x[i] = (int64_t)(acc += 15000 + (uint64_t)bell(3)); break; /* jittered timestamps */
        default: x[i] = (int64_t)((rnd() % 7) * 4096) - 8192; break;   /* gcd and negatives */
        }
      }
      roundtrip(x, n);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_models_and_scales),
      cmocka_unit_test(test_packer_choice),
      cmocka_unit_test(test_corrupt),
      cmocka_unit_test(test_pricing_edges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
