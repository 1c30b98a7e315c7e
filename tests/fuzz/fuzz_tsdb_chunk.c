/*
 * fuzz_tsdb_chunk — two modes, picked by the first input byte:
 *   even: the rest is chunk bytes (head or sealed) straight from "disk": chunk_count and
 *         chunk_decode must agree, never crash or over-read, and decoded timestamps ascend;
 *   odd:  the rest describes samples (10 bytes each, see make_samples); they go through the
 *         head appender and chunk_seal and must come back bit for bit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tsdb/chunk.h"

#define MAX_DECODE 65536

static void check(int cond) {
  if (!cond) abort();
}

static void decode_bytes(const uint8_t *p, size_t len) {
  int c = chunk_count(p, len);
  if (c <= 0 || c > MAX_DECODE) {
    int64_t ts[4];
    double v[4];
    int rc = chunk_decode(p, len, ts, v, 4);
    check(rc == MD_ECORRUPT || rc == MD_EINVAL || (rc >= 0 && rc <= 4));
    return;
  }
  int64_t *ts = malloc((size_t)c * sizeof *ts);
  double *v = malloc((size_t)c * sizeof *v);
  if (!ts || !v) abort();
  int rc = chunk_decode(p, len, ts, v, (size_t)c);
  check(rc == MD_ECORRUPT || rc == c);
  for (int i = 1; i < rc; i++) check(ts[i] > ts[i - 1]);
  if (c > 1) check(chunk_decode(p, len, ts, v, (size_t)c - 1) == MD_EINVAL || rc == MD_ECORRUPT);
  free(ts);
  free(v);
}

static const uint64_t specials[8] = {0x7ff0000000000002ULL, 0x7ff8000000000001ULL, 0x7ff0000000000000ULL,
                                     0xfff0000000000000ULL, 0x8000000000000000ULL, 0x0000000000000001ULL,
                                     0x7fefffffffffffffULL, 0xfff8000000000000ULL};

/* Per sample: byte 0 picks the value kind (low 2 bits) and timestamp step size; byte 1 the
 * step; bytes 2..9 the payload. Kinds: raw bits, a decimal (int32 / 10^k), the previous
 * value plus a few hundredths, a special value. */
static size_t make_samples(const uint8_t *p, size_t len, int64_t *ts, double *v) {
  size_t n = 0;
  int64_t t = -5000;
  double prev = 0;
  for (size_t off = 0; off + 10 <= len; off += 10) {
    uint64_t payload;
    memcpy(&payload, p + off + 2, 8);
    uint64_t step = (uint64_t)p[off + 1] + 1;
    if (p[off] & 0x80) step <<= (p[off] >> 2) & 31;
    if (p[off] & 0x40) step = payload | 1; /* huge steps, overflow checked below */
    if (n > 0 && (step > (uint64_t)INT64_MAX || t > INT64_MAX - (int64_t)step)) break;
    t = n == 0 ? (int64_t)payload : t + (int64_t)step;
    double d;
    switch (p[off] & 3) {
    case 0: memcpy(&d, &payload, 8); break;
    case 1: {
      static const double pw[8] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e9};
      d = (double)(int32_t)payload / pw[(payload >> 32) & 7];
      break;
    }
    case 2: d = prev + (double)(int8_t)payload / 100.0; break;
    default: memcpy(&d, &specials[payload & 7], 8); break;
    }
    ts[n] = t;
    v[n] = d;
    prev = d;
    n++;
  }
  return n;
}

static void roundtrip(const uint8_t *p, size_t len) {
  size_t max = len / 10 + 1;
  int64_t *ts = malloc(max * sizeof *ts), *ts2 = malloc(max * sizeof *ts2);
  double *v = malloc(max * sizeof *v), *v2 = malloc(max * sizeof *v2);
  if (!ts || !ts2 || !v || !v2) abort();
  size_t n = make_samples(p, len, ts, v);
  if (n > 0) {
    uint8_t *s = NULL;
    size_t slen = 0;
    check(chunk_seal(ts, v, n, &s, &slen) == 0);
    check(chunk_count(s, slen) == (int)n);
    check(chunk_decode(s, slen, ts2, v2, n) == (int)n);
    for (size_t i = 0; i < n; i++) check(ts2[i] == ts[i] && memcmp(&v2[i], &v[i], 8) == 0);
    free(s);
    chunk_app_t a;
    chunk_app_init(&a);
    size_t m = n < CHUNK_MAX_SAMPLES ? n : CHUNK_MAX_SAMPLES;
    for (size_t i = 0; i < m; i++) check(chunk_app_append(&a, ts[i], v[i]) == 0);
    check(chunk_decode(a.buf, chunk_app_bytes(&a), ts2, v2, m) == (int)m);
    for (size_t i = 0; i < m; i++) check(ts2[i] == ts[i] && memcmp(&v2[i], &v[i], 8) == 0);
    chunk_app_free(&a);
  }
  free(ts);
  free(ts2);
  free(v);
  free(v2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) {
    roundtrip(data + 1, size - 1);
  } else {
    /* An exact-size copy, so that ASan sees any read past the end. */
    uint8_t *copy = malloc(size - 1 ? size - 1 : 1);
    if (!copy) abort();
    memcpy(copy, data + 1, size - 1);
    decode_bytes(copy, size - 1);
    free(copy);
  }
  return 0;
}
