/* Unit tests for chunk encoding: head appender and sealed chunks round-trip every bit
 * pattern and every timestamp layout; truncated and damaged bytes are refused, never
 * over-read (ASan watches). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tsdb/chunk.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static double rnd01(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static double from_bits(uint64_t b) {
  double d;
  memcpy(&d, &b, 8);
  return d;
}
static uint64_t to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return b;
}

/* Bit-exact comparison of decoded samples against the originals. */
static void assert_same(const int64_t *ts, const double *v, const int64_t *ts2, const double *v2, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (ts[i] != ts2[i] || to_bits(v[i]) != to_bits(v2[i])) {
      print_error("sample %zu: want (%lld, %016llx) got (%lld, %016llx)\n", i, (long long)ts[i],
                  (unsigned long long)to_bits(v[i]), (long long)ts2[i], (unsigned long long)to_bits(v2[i]));
      fail();
    }
  }
}

/* Every strict prefix of a valid chunk is refused (the count promises more than is there). */
static void assert_truncations_refused(const uint8_t *p, size_t len, size_t n) {
  int64_t *ts = malloc(n * sizeof *ts);
  double *v = malloc(n * sizeof *v);
  assert_non_null(ts);
  assert_non_null(v);
  for (size_t cut = 1; cut < len; cut++) {
    uint8_t *copy = malloc(cut); /* exact size: ASan catches any over-read */
    assert_non_null(copy);
    memcpy(copy, p, cut);
    int rc = chunk_decode(copy, cut, ts, v, n);
    if (rc != MD_ECORRUPT) {
      print_error("prefix %zu of %zu decoded to %d\n", cut, len, rc);
      fail();
    }
    free(copy);
  }
  free(ts);
  free(v);
}

/* Round trip through the head appender (in pieces of CHUNK_MAX_SAMPLES) and through
 * chunk_seal; returns the sealed size in bytes. */
static size_t roundtrip(const int64_t *ts, const double *v, size_t n, bool check_truncation) {
  int64_t *ts2 = malloc((n + 1) * sizeof *ts2);
  double *v2 = malloc((n + 1) * sizeof *v2);
  assert_non_null(ts2);
  assert_non_null(v2);
  for (size_t off = 0; off < n; off += CHUNK_MAX_SAMPLES) {
    size_t m = n - off < CHUNK_MAX_SAMPLES ? n - off : CHUNK_MAX_SAMPLES;
    chunk_app_t a;
    chunk_app_init(&a);
    for (size_t i = 0; i < m; i++) {
      assert_int_equal(chunk_app_append(&a, ts[off + i], v[off + i]), 0);
      if (i == 0 || i == m - 1 || rnd() % 16 == 0) {
        /* A copy taken at any moment decodes to exactly what was appended so far. */
        size_t len = chunk_app_bytes(&a);
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, a.buf, len);
        assert_int_equal(chunk_count(copy, len), (int)(i + 1));
        assert_int_equal(chunk_decode(copy, len, ts2, v2, i + 1), (int)(i + 1));
        assert_same(ts + off, v + off, ts2, v2, i + 1);
        free(copy);
      }
    }
    chunk_app_trim(&a);
    size_t len = chunk_app_bytes(&a);
    assert_int_equal(chunk_decode(a.buf, len, ts2, v2, m), (int)m);
    assert_same(ts + off, v + off, ts2, v2, m);
    if (check_truncation) assert_truncations_refused(a.buf, len, m);
    chunk_app_free(&a);
  }
  uint8_t *s = NULL;
  size_t slen = 0;
  assert_int_equal(chunk_seal(ts, v, n, &s, &slen), 0);
  assert_non_null(s);
  assert_int_equal(chunk_count(s, slen), (int)n);
  memset(ts2, 0, (n + 1) * sizeof *ts2);
  assert_int_equal(chunk_decode(s, slen, ts2, v2, n + 1), (int)n);
  assert_same(ts, v, ts2, v2, n);
  if (n > 1) assert_int_equal(chunk_decode(s, slen, ts2, v2, n - 1), MD_EINVAL);
  if (check_truncation) assert_truncations_refused(s, slen, n);
  free(s);
  free(ts2);
  free(v2);
  return slen;
}

static const uint64_t special_bits[] = {
    0x7ff0000000000002ULL, /* Prometheus stale marker */
    0x7ff8000000000001ULL, /* the NaN Prometheus writes for NaN values */
    0x7ff8000000000000ULL, /* quiet NaN */
    0xfff8000000000000ULL, /* negative quiet NaN */
    0x7ff4000000000000ULL, /* signalling NaN */
    0x7fffffffffffffffULL, /* NaN, all payload bits */
    0x7ff0000000000000ULL, /* +Inf */
    0xfff0000000000000ULL, /* -Inf */
    0x8000000000000000ULL, /* -0.0 */
    0x0000000000000000ULL, /* +0.0 */
    0x0000000000000001ULL, /* smallest subnormal */
    0x000fffffffffffffULL, /* largest subnormal */
    0x8000000000000001ULL, /* negative subnormal */
    0x0010000000000000ULL, /* smallest normal */
    0x7fefffffffffffffULL, /* DBL_MAX */
    0xffefffffffffffffULL, /* -DBL_MAX */
    0x3ff0000000000000ULL, /* 1.0 */
};
#define NSPECIAL (sizeof special_bits / sizeof special_bits[0])

static void test_single_sample(void **state) {
  (void)state;
  int64_t ts[] = {INT64_MIN, -1, 0, 1, 1700000000000, INT64_MAX};
  for (size_t t = 0; t < 6; t++)
    for (size_t k = 0; k < NSPECIAL; k++) {
      double v = from_bits(special_bits[k]);
      roundtrip(&ts[t], &v, 1, true);
    }
}

static void test_special_values(void **state) {
  (void)state;
  enum { N = 1000 };
  int64_t ts[N];
  double v[N];
  for (size_t i = 0; i < N; i++) {
    ts[i] = 1700000000000 + (int64_t)i * 15000;
    v[i] = from_bits(special_bits[rnd() % NSPECIAL]);
  }
  roundtrip(ts, v, N, true);
  /* Specials sprinkled into otherwise decimal data (an encoder's exception path). */
  for (size_t i = 0; i < N; i++) {
    v[i] = (double)(int64_t)(rnd() % 100000) / 100.0;
    if (rnd() % 50 == 0) v[i] = from_bits(special_bits[rnd() % NSPECIAL]);
  }
  roundtrip(ts, v, N, true);
  /* A counter that ends in a stale marker. */
  for (size_t i = 0; i < N; i++) v[i] = 1000.0 + (double)i * 0.25;
  v[N - 1] = from_bits(0x7ff0000000000002ULL);
  roundtrip(ts, v, N, true);
}

static void test_timestamp_layouts(void **state) {
  (void)state;
  enum { N = 3000 };
  static int64_t ts[N];
  static double v[N];
  for (size_t i = 0; i < N; i++) v[i] = (double)(i % 7);
  /* Regular, jittered, negative, irregular, enormous gaps, the whole int64 range. */
  for (int layout = 0; layout < 7; layout++) {
    int64_t t = layout == 2 ? -100000000 : 1700000000000;
    for (size_t i = 0; i < N; i++) {
      switch (layout) {
      case 0: t += 15000; break;
      case 1: t += 15000 + (int64_t)(rnd() % 9) - 4; break;
      case 2: t += 1 + (int64_t)(rnd() % 3); break;
      case 3: t += 1 + (int64_t)(rnd() % 1000000); break;
      case 4: t += 1 + (int64_t)(rnd() % ((uint64_t)1 << 40)); break;
      case 5: t = (i % 2) ? t + 1 : t + 1000000000000LL; break;
      case 6: t = (int64_t)(i == 0 ? INT64_MIN : t + (int64_t)(rnd() % ((uint64_t)1 << 51)) + 1); break;
      }
      ts[i] = t;
    }
    roundtrip(ts, v, N, false);
  }
  /* The two extremes only: a step larger than INT64_MAX. */
  int64_t ext[] = {INT64_MIN, INT64_MAX};
  double ev[] = {1, 2};
  roundtrip(ext, ev, 2, true);
  int64_t ext3[] = {INT64_MIN, -1, INT64_MAX};
  double ev3[] = {1, 2, 3};
  roundtrip(ext3, ev3, 3, true);
}

/* Few samples with enormous, unrelated steps: residuals beyond INT64_MAX, divisors that
 * only hold modulo 2^64 (found by the fuzzer). */
static void test_huge_steps(void **state) {
  (void)state;
  int64_t ts[8] = {138, 394, 6006693531578532235LL, 7541365362003217594LL};
  double v[8] = {1, 2, 3, 4};
  roundtrip(ts, v, 4, true);
  for (int round = 0; round < 3000; round++) {
    size_t n = 2 + rnd() % 6;
    int64_t t = (int64_t)rnd();
    for (size_t i = 0; i < n; i++) {
      ts[i] = t;
      uint64_t room = (uint64_t)INT64_MAX - (uint64_t)t;
      uint64_t step = 1 + (rnd() >> (rnd() % 64));
      if (room < (uint64_t)(n - i) * 2) {
        n = i + 1;
        break;
      }
      if (step > room / 2) step = 1 + room / 2;
      t += (int64_t)step;
      v[i] = (rnd() & 1) ? from_bits(rnd()) : (double)(int64_t)(rnd() >> (rnd() % 64)) * 4096.0;
    }
    roundtrip(ts, v, n, false);
  }
}

static void test_random_values(void **state) {
  (void)state;
  enum { N = 2000 };
  static int64_t ts[N];
  static double v[N];
  for (size_t i = 0; i < N; i++) ts[i] = 1600000000000 + (int64_t)i * 10000;
  for (int kind = 0; kind < 10; kind++) {
    double acc = 0;
    for (size_t i = 0; i < N; i++) {
      switch (kind) {
      case 0: v[i] = from_bits(rnd()); break;                          /* any bit pattern */
      case 1: v[i] = rnd01() * 1e300 * ((rnd() & 1) ? 1 : -1); break;  /* huge */
      case 2: v[i] = rnd01() * 1e-300; break;                          /* tiny */
      case 3: v[i] = (double)(rnd() >> 1); break;                      /* large integers */
      case 4: v[i] = (double)(int64_t)(rnd() % 2000001 - 1000000) / 1000.0; break; /* 3 decimals */
      case 5: acc += (double)(rnd() % 2000) / 100.0; v[i] = acc; break; /* 2-decimal counter */
      case 6: v[i] = 42.0; break;                                       /* constant */
      case 7: v[i] = (double)(i / 100) * 4096.0; break;                 /* step function */
      case 8: v[i] = sin((double)i / 10.0); break;                      /* full precision */
      case 9: v[i] = (double)(int64_t)(rnd() % 1000) * 1e-6; break;    /* micro decimals */
      }
    }
    roundtrip(ts, v, N, kind == 4 || kind == 5);
  }
}

static void test_head_limits(void **state) {
  (void)state;
  chunk_app_t a;
  chunk_app_init(&a);
  for (int i = 0; i < CHUNK_MAX_SAMPLES; i++)
    assert_int_equal(chunk_app_append(&a, 1000 + i, (double)i * 0.5), 0);
  assert_int_equal(a.count, CHUNK_MAX_SAMPLES);
  assert_int_equal(chunk_app_append(&a, 1000000, 1.0), MD_ELIMIT);
  assert_int_equal(chunk_count(a.buf, chunk_app_bytes(&a)), CHUNK_MAX_SAMPLES);
  chunk_app_free(&a);

  chunk_app_init(&a);
  assert_int_equal(chunk_app_append(&a, 1000, 1.0), 0);
  assert_int_equal(chunk_app_append(&a, 1000, 2.0), MD_EINVAL); /* not ascending */
  assert_int_equal(chunk_app_append(&a, 999, 2.0), MD_EINVAL);
  assert_int_equal(a.count, 1);
  /* Trim on a partial chunk, then keep appending. */
  chunk_app_trim(&a);
  assert_int_equal(chunk_app_append(&a, 2000, 2.0), 0);
  int64_t ts[2];
  double v[2];
  assert_int_equal(chunk_decode(a.buf, chunk_app_bytes(&a), ts, v, 2), 2);
  assert_int_equal(ts[1], 2000);
  assert_true(v[1] == 2.0);
  chunk_app_free(&a);

  /* An empty appender is an empty chunk. */
  chunk_app_init(&a);
  assert_int_equal(chunk_app_bytes(&a), 0);
  assert_int_equal(chunk_count(a.buf, 0), 0);
  chunk_app_trim(&a);
  chunk_app_free(&a);
}

static void test_seal_rejects(void **state) {
  (void)state;
  int64_t ts[] = {1, 2, 2};
  double v[] = {1, 2, 3};
  uint8_t *out = NULL;
  size_t len = 0;
  assert_int_equal(chunk_seal(ts, v, 0, &out, &len), MD_EINVAL);
  assert_int_equal(chunk_seal(ts, v, 3, &out, &len), MD_EINVAL);
  int64_t ts2[] = {5, 4};
  assert_int_equal(chunk_seal(ts2, v, 2, &out, &len), MD_EINVAL);
  assert_null(out);
}

static void test_corrupt_inputs(void **state) {
  (void)state;
  int64_t ts[8];
  double v[8];
  static const struct {
    uint8_t b[12];
    size_t len;
  } bad[] = {
      {{0x00}, 1},                                                   /* unknown tag */
      {{0xff, 1, 0}, 3},                                             /* unknown tag */
      {{0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12},                 /* head, count 0 */
      {{0x01, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12},           /* head, count too large */
      {{0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 12},           /* head, first sample cut */
      {{0x02}, 1},                                                   /* sealed, no count */
      {{0x02, 0x00, 0x01, 0x00}, 4},                                 /* sealed, count 0 */
      {{0x02, 0x01, 0x05, 0x00}, 4},                                 /* ts section past the end */
      {{0x02, 0x01, 0x03, 0x00, 0x00, 0x00}, 6},                     /* no value section */
      {{0x02, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}, 12}, /* varint */
      {{0x02, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 0x00, 0x00}, 9},   /* count beyond the cap */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (chunk_decode(bad[i].b, bad[i].len, ts, v, 8) != MD_ECORRUPT) {
      print_error("bad input %zu accepted\n", i);
      fail();
    }
  }
  /* A regular timestamp progression that wraps past INT64_MAX, and the same one ending
   * exactly at INT64_MAX. */
  uint8_t wrap[] = {0x02, 0x03, 0x0c, 0x03, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0x01, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
  assert_int_equal(chunk_decode(wrap, sizeof wrap, ts, v, 8), 3); /* INT64_MAX-3 .. INT64_MAX-1 */
  assert_true(ts[2] == INT64_MAX - 1 && v[2] == 1.0);
  wrap[4] = 0xfc; /* x0 = INT64_MAX - 1 */
  assert_int_equal(chunk_decode(wrap, sizeof wrap, ts, v, 8), MD_ECORRUPT);
  wrap[4] = 0xfa; /* x0 = INT64_MAX - 2: ends at INT64_MAX */
  assert_int_equal(chunk_decode(wrap, sizeof wrap, ts, v, 8), 3);
  assert_true(ts[2] == INT64_MAX);

  /* Random bytes with valid tags: any outcome but a crash or an over-read. */
  for (int round = 0; round < 20000; round++) {
    size_t len = 1 + rnd() % 64;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rnd();
    buf[0] = (uint8_t)(1 + rnd() % 2);
    if (buf[0] == 1 && len >= 3) {
      buf[1] = (uint8_t)(1 + rnd() % 8);
      buf[2] = 0;
    } else if (len >= 2) {
      buf[1] = (uint8_t)(1 + rnd() % 8);
    }
    int c = chunk_count(buf, len);
    int rc = chunk_decode(buf, len, ts, v, 8);
    assert_true(rc == MD_ECORRUPT || rc == MD_EINVAL || (rc >= 0 && rc == c));
    free(buf);
  }
}

/* Flipping bits of valid chunks: decoding stays in bounds and reports consistently. */
static void test_bit_flips(void **state) {
  (void)state;
  enum { N = 500 };
  static int64_t ts[N], ts2[N];
  static double v[N], v2[N];
  for (size_t i = 0; i < N; i++) {
    ts[i] = 1700000000000 + (int64_t)i * 15000 + (int64_t)(rnd() % 5);
    v[i] = (double)(int64_t)(rnd() % 5000) / 100.0;
  }
  uint8_t *s;
  size_t slen;
  assert_int_equal(chunk_seal(ts, v, N, &s, &slen), 0);
  chunk_app_t a;
  chunk_app_init(&a);
  for (size_t i = 0; i < CHUNK_MAX_SAMPLES; i++) assert_int_equal(chunk_app_append(&a, ts[i], v[i]), 0);
  const uint8_t *srcs[2] = {s, a.buf};
  size_t lens[2] = {slen, chunk_app_bytes(&a)};
  for (int k = 0; k < 2; k++) {
    uint8_t *copy = malloc(lens[k]);
    assert_non_null(copy);
    for (size_t bit = 0; bit < lens[k] * 8; bit++) {
      memcpy(copy, srcs[k], lens[k]);
      copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
      int c = chunk_count(copy, lens[k]);
      int rc = chunk_decode(copy, lens[k], ts2, v2, N);
      assert_true(rc == MD_ECORRUPT || rc == MD_EINVAL || (rc >= 0 && rc == c));
      if (rc > 0)
        for (int i = 1; i < rc; i++) assert_true(ts2[i] > ts2[i - 1]);
    }
    free(copy);
  }
  chunk_app_free(&a);
  free(s);
}

/* Head streams of values with a short decimal form are scaled-integer (0x03) streams: much
 * smaller than XOR, exact for every bit pattern that follows, whatever the scale does. */
static void test_decimal_head(void **state) {
  (void)state;
  enum { N = CHUNK_MAX_SAMPLES };
  static int64_t ts[N];
  static double v[N];
  for (size_t i = 0; i < N; i++) ts[i] = 1700000000000 + (int64_t)i * 15000 + (int64_t)(rnd() % 3);
  /* a 2-decimal counter and a 2-decimal random walk, timestamps with a few ms of jitter: tag
   * 0x03, under 2.5 bytes a sample (the XOR stream needs ~4.9) */
  for (int kind = 0; kind < 2; kind++) {
    int64_t c = 123456;
    for (size_t i = 0; i < N; i++) {
      c += kind == 0 ? 1490 + (int64_t)(rnd() % 21) : (int64_t)(rnd() % 41) - 20;
      v[i] = (double)c / 100.0;
    }
    chunk_app_t a;
    chunk_app_init(&a);
    for (size_t i = 0; i < N; i++) assert_int_equal(chunk_app_append(&a, ts[i], v[i]), 0);
    assert_int_equal(a.buf[0], 0x03);
    double per = (double)chunk_app_bytes(&a) / N;
    if (per >= 2.5) fail_msg("kind %d: %.2f bytes/sample", kind, per);
    assert_int_equal(chunk_app_first_ts(&a), ts[0]);
    chunk_app_free(&a);
    roundtrip(ts, v, N, true);
  }
  /* scale changes, exceptions between decimals, magnitudes near 2^53, huge jumps */
  static const double mix[] = {0, 1, 2, 2.5, 2.25, 2.125, -0.0, 3, NAN, 0.1, 0.30000000000000004, 0.2,
                               INFINITY, 1e-15, 4, -INFINITY, 9007199254740991.0, -9007199254740991.0,
                               4503599627370496.5, 1e300, 12.75, 5e-324, 0.001, 1234.5678, 1};
  size_t nm = sizeof mix / sizeof mix[0];
  for (size_t i = 0; i < nm; i++) v[i] = mix[i];
  v[nm] = from_bits(0x7ff0000000000002ULL); /* the stale marker */
  v[nm + 1] = 7.25;
  roundtrip(ts, v, nm + 2, true);
  /* random mixtures: decimals of random scale, jumps and raw bit patterns */
  for (int round = 0; round < 400; round++) {
    size_t n = 1 + rnd() % N;
    for (size_t i = 0; i < n; i++) {
      uint64_t r = rnd();
      switch (r % 5) {
      case 0: v[i] = from_bits(rnd()); break;
      case 1: v[i] = (double)(int64_t)(rnd() >> (rnd() % 64)); break;
      case 2: v[i] = (double)(int64_t)(rnd() % 2000000 - 1000000) / pow(10, (double)(rnd() % 16)); break;
      default: v[i] = i ? v[i - 1] + (double)(int64_t)(rnd() % 200 - 100) / 100.0 : 1.5; break;
      }
    }
    v[0] = (double)(int64_t)(rnd() % 100000) / 1000.0; /* decimal start: a 0x03 stream */
    roundtrip(ts, v, n, false);
  }
  /* a full-precision first value keeps the XOR stream */
  chunk_app_t a;
  chunk_app_init(&a);
  assert_int_equal(chunk_app_append(&a, 1000, 1.0 / 3.0), 0);
  assert_int_equal(chunk_app_append(&a, 2000, 0.5), 0);
  assert_int_equal(a.buf[0], 0x01);
  chunk_app_free(&a);
}

/* Long sealed arrays of node-exporter-like data; prints the size for the record. */
static void test_long_sealed(void **state) {
  (void)state;
  enum { N = 100000 };
  int64_t *ts = malloc(N * sizeof *ts);
  double *v = malloc(N * sizeof *v);
  assert_non_null(ts);
  assert_non_null(v);
  int64_t ticks = 123456789;
  for (size_t i = 0; i < N; i++) {
    ts[i] = 1700000000000 + (int64_t)i * 15000 + (int64_t)(rnd() % 3) - 1;
    ticks += 1400 + (int64_t)(rnd() % 100);
    v[i] = (double)ticks / 100.0;
  }
  size_t len = roundtrip(ts, v, N, false);
  print_message("sealed 2-decimal counter: %.3f bytes/sample\n", (double)len / N);
  free(ts);
  free(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_sample),     cmocka_unit_test(test_special_values),
      cmocka_unit_test(test_timestamp_layouts), cmocka_unit_test(test_huge_steps), cmocka_unit_test(test_random_values),
      cmocka_unit_test(test_head_limits),       cmocka_unit_test(test_seal_rejects),
      cmocka_unit_test(test_corrupt_inputs),    cmocka_unit_test(test_bit_flips),
      cmocka_unit_test(test_long_sealed), cmocka_unit_test(test_decimal_head),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
