/*
 * chunk_int — integer sequence coding for sealed chunks; the format is in chunk_int.h.
 *
 * Encoding tries both residual models and keeps the smaller; it allocates scratch memory
 * per call. Decoding allocates nothing and unpacks with one unaligned 64-bit load per value
 * where at least 8 bytes remain, byte by byte in the last few.
 *
 * Threading: pure functions, no shared state.
 */
#include "chunk_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

enum { MODE_DELTA = 0, MODE_DOD = 1 };

int chunk_buf_reserve(chunk_buf_t *o, size_t extra) {
  if (o->len + extra <= o->cap) return 0;
  size_t nc = o->cap ? o->cap * 2 : 256;
  while (nc < o->len + extra) nc *= 2;
  uint8_t *nb = realloc(o->buf, nc);
  if (!nb) return MD_ENOMEM;
  memset(nb + o->cap, 0, nc - o->cap);
  o->buf = nb;
  o->cap = nc;
  return 0;
}

void chunk_buf_free(chunk_buf_t *o) {
  free(o->buf);
  o->buf = NULL;
  o->len = o->cap = 0;
}

static inline unsigned bitlen(uint64_t u) { return u ? 64 - (unsigned)__builtin_clzll(u) : 0; }

static inline uint64_t load_le64(const uint8_t *q) {
  uint64_t x;
  memcpy(&x, q, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  x = __builtin_bswap64(x);
#endif
  return x;
}

/* ---- ipack --------------------------------------------------------------------- */

/* Picks the packing width: every value costs w bits, and each value longer than w costs an
 * exception on top (about a byte of index gap and a varint of its high bits). */
static unsigned ipack_width(const uint64_t *u, size_t m, uint64_t *cost_out) {
  size_t hist[65] = {0};
  for (size_t i = 0; i < m; i++) hist[bitlen(u[i])]++;
  uint64_t best = UINT64_MAX;
  unsigned bw = 64;
  for (unsigned w = 0; w <= 64; w++) {
    uint64_t c = (uint64_t)m * w;
    for (unsigned b = w + 1; b <= 64 && c < best; b++)
      if (hist[b]) c += (uint64_t)hist[b] * (8 + 8 * ((b - w + 6) / 7));
    if (c < best) {
      best = c;
      bw = w;
    }
  }
  if (cost_out) *cost_out = best;
  return bw;
}

static int ipack_encode(chunk_buf_t *o, const uint64_t *u, size_t m) {
  unsigned w = ipack_width(u, m, NULL);
  uint64_t mask = w == 64 ? ~0ULL : (1ULL << w) - 1;
  size_t nexc = 0;
  for (size_t i = 0; i < m; i++) nexc += (u[i] & ~mask) != 0;
  size_t packed = (size_t)(((uint64_t)m * w + 7) / 8);
  if (chunk_buf_reserve(o, 1 + 10 + packed + 8 + nexc * 20) != 0) return MD_ENOMEM;
  uint8_t *q = o->buf;
  o->buf[o->len++] = (uint8_t)w;
  o->len += chunk_uvarint_put(q + o->len, nexc);
  if (w > 0) {
    uint8_t *dst = q + o->len;
    uint64_t acc = 0;
    unsigned nacc = 0;
    size_t at = 0;
    for (size_t i = 0; i < m; i++) {
      uint64_t v = u[i] & mask;
      acc |= v << nacc;
      if (nacc + w >= 64) {
        for (int b = 0; b < 8; b++) dst[at++] = (uint8_t)(acc >> (8 * b));
        acc = nacc ? v >> (64 - nacc) : 0;
        nacc = nacc + w - 64;
      } else {
        nacc += w;
      }
    }
    for (unsigned b = 0; b * 8 < nacc; b++) dst[at++] = (uint8_t)(acc >> (8 * b));
    o->len += packed;
  }
  size_t prev = (size_t)-1;
  for (size_t i = 0; i < m; i++) {
    if (!(u[i] & ~mask)) continue;
    o->len += chunk_uvarint_put(q + o->len, i - prev - 1);
    o->len += chunk_uvarint_put(q + o->len, u[i] >> w);
    prev = i;
  }
  return 0;
}

/* Unpacks m values of width w from q (nbytes = ceil(m*w/8) bytes, all readable). */
static void unpack(const uint8_t *q, size_t nbytes, unsigned w, uint64_t *out, size_t m) {
  if (w == 0) {
    memset(out, 0, m * sizeof *out);
    return;
  }
  uint64_t mask = w == 64 ? ~0ULL : (1ULL << w) - 1;
  size_t i = 0;
  if (w <= 56 && nbytes >= 8) {
    /* Values whose 8-byte window lies inside the packed bytes: one load each. */
    size_t fast = ((nbytes - 8) * 8) / w + 1;
    if (fast > m) fast = m;
    uint64_t bit = 0;
    for (; i < fast; i++, bit += w) out[i] = (load_le64(q + (bit >> 3)) >> (bit & 7)) & mask;
  }
  for (; i < m; i++) {
    uint64_t bit = (uint64_t)i * w, v = 0;
    size_t byte = (size_t)(bit >> 3);
    unsigned sh = (unsigned)(bit & 7);
    /* Up to 9 bytes cover w + sh <= 71 bits. */
    for (unsigned b = 0; b < 9 && byte + b < nbytes; b++) {
      unsigned pos = 8 * b;
      if (pos >= sh + 64) break;
      uint64_t byteval = q[byte + b];
      if (pos >= sh) v |= byteval << (pos - sh);
      else v |= byteval >> (sh - pos);
    }
    out[i] = v & mask;
  }
}

static bool ipack_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t m) {
  size_t o = *off;
  uint64_t nexc;
  if (o >= len) return false;
  unsigned w = p[o++];
  if (w > 64 || !chunk_uvarint_get(p, len, &o, &nexc) || nexc > m) return false;
  if (nexc && w == 64) return false;
  size_t packed = (size_t)(((uint64_t)m * w + 7) / 8);
  if (packed > len - o) return false;
  unpack(p + o, packed, w, out, m);
  o += packed;
  size_t idx = (size_t)-1;
  for (uint64_t k = 0; k < nexc; k++) {
    uint64_t gap, high;
    if (!chunk_uvarint_get(p, len, &o, &gap) || !chunk_uvarint_get(p, len, &o, &high)) return false;
    if (gap >= m || idx + 1 + gap >= m || idx + 1 + gap < idx + 1) return false;
    idx = idx + 1 + (size_t)gap;
    if (high == 0 || (w > 0 && (high >> (64 - w)) != 0)) return false;
    out[idx] |= high << w;
  }
  *off = o;
  return true;
}

/* ---- iseq ---------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static inline size_t svarint_put(uint8_t *q, int64_t v) { return chunk_uvarint_put(q, chunk_zigzag(v)); }

/* Encodes residuals r[0..m) as b, g, ipack; sc is scratch of m int64. */
static int resid_encode(chunk_buf_t *o, const int64_t *r, size_t m, int64_t *sc) {
  int64_t b = 0;
  if (m > 0) {
    memcpy(sc, r, m * sizeof *sc);
    qsort(sc, m, sizeof *sc, cmp_i64);
    b = sc[m / 2];
  }
  uint64_t g = 0;
  for (size_t i = 0; i < m && g != 1; i++) {
    int64_t d = (int64_t)((uint64_t)r[i] - (uint64_t)b);
    uint64_t a = d < 0 ? -(uint64_t)d : (uint64_t)d;
    while (a) { /* Euclid: g = gcd(g, a) */
      uint64_t t = g % a;
      g = a;
      a = t;
    }
  }
  if (g == 0 || g > (uint64_t)INT64_MAX) g = 1;
  uint64_t *u = (uint64_t *)sc;
  for (size_t i = 0; i < m; i++) u[i] = chunk_zigzag((int64_t)((uint64_t)r[i] - (uint64_t)b) / (int64_t)g);
  if (chunk_buf_reserve(o, 20) != 0) return MD_ENOMEM;
  o->len += svarint_put(o->buf + o->len, b);
  o->len += chunk_uvarint_put(o->buf + o->len, g);
  return ipack_encode(o, u, m);
}

static int iseq_encode_mode(chunk_buf_t *o, const int64_t *x, size_t n, int mode, int64_t *r, int64_t *sc) {
  if (chunk_buf_reserve(o, 1 + 10 + 10) != 0) return MD_ENOMEM;
  o->buf[o->len++] = (uint8_t)mode;
  o->len += svarint_put(o->buf + o->len, x[0]);
  if (n == 1) return 0;
  size_t m = 0;
  if (mode == MODE_DELTA) {
    for (size_t k = 1; k < n; k++) r[m++] = (int64_t)((uint64_t)x[k] - (uint64_t)x[k - 1]);
  } else {
    uint64_t prev = (uint64_t)x[1] - (uint64_t)x[0];
    o->len += svarint_put(o->buf + o->len, (int64_t)prev);
    for (size_t k = 2; k < n; k++) {
      uint64_t d = (uint64_t)x[k] - (uint64_t)x[k - 1];
      r[m++] = (int64_t)(d - prev);
      prev = d;
    }
  }
  return resid_encode(o, r, m, sc);
}

int chunk_iseq_encode(chunk_buf_t *o, const int64_t *x, size_t n) {
  int64_t *r = malloc((n + 1) * sizeof *r), *sc = malloc((n + 1) * sizeof *sc);
  chunk_buf_t a = {0}, b = {0};
  int rc = MD_ENOMEM;
  if (!r || !sc) goto out;
  if ((rc = iseq_encode_mode(&a, x, n, MODE_DELTA, r, sc)) != 0) goto out;
  if (n >= 3 && (rc = iseq_encode_mode(&b, x, n, MODE_DOD, r, sc)) != 0) goto out;
  const chunk_buf_t *best = (n >= 3 && b.len < a.len) ? &b : &a;
  if ((rc = chunk_buf_reserve(o, best->len)) != 0) goto out;
  memcpy(o->buf + o->len, best->buf, best->len);
  o->len += best->len;
out:
  free(r);
  free(sc);
  chunk_buf_free(&a);
  chunk_buf_free(&b);
  return rc;
}

bool chunk_iseq_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t n) {
  size_t o = *off;
  uint64_t x0, d1 = 0, zb, g;
  if (n == 0 || o >= len) return false;
  unsigned mode = p[o++];
  if (mode > MODE_DOD || !chunk_uvarint_get(p, len, &o, &x0)) return false;
  out[0] = (uint64_t)chunk_unzigzag(x0);
  if (n == 1) {
    *off = o;
    return true;
  }
  if (mode == MODE_DOD) {
    if (n < 3 || !chunk_uvarint_get(p, len, &o, &d1)) return false;
    d1 = (uint64_t)chunk_unzigzag(d1);
  }
  if (!chunk_uvarint_get(p, len, &o, &zb) || !chunk_uvarint_get(p, len, &o, &g)) return false;
  if (g == 0 || g > (uint64_t)INT64_MAX) return false;
  uint64_t b = (uint64_t)chunk_unzigzag(zb);
  size_t first = mode == MODE_DELTA ? 1 : 2;
  if (!ipack_decode(p, len, &o, out + first, n - first)) return false;
  uint64_t acc = out[0];
  if (mode == MODE_DELTA) {
    for (size_t k = 1; k < n; k++) {
      acc += (uint64_t)chunk_unzigzag(out[k]) * g + b;
      out[k] = acc;
    }
  } else {
    uint64_t d = d1;
    acc += d;
    out[1] = acc;
    for (size_t k = 2; k < n; k++) {
      d += (uint64_t)chunk_unzigzag(out[k]) * g + b;
      acc += d;
      out[k] = acc;
    }
  }
  *off = o;
  return true;
}
