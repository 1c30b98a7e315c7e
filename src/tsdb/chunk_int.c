/*
 * chunk_int — integer sequence coding for sealed chunks; the format is in chunk_int.h.
 *
 * Encoding prices every model, centring and packer exactly and keeps the smallest; head-sized
 * sequences need no allocation beyond the output. Decoding allocates nothing and unpacks with one unaligned 64-bit load per value
 * where at least 8 bytes remain, byte by byte in the last few.
 *
 * Threading: pure functions, no shared state.
 */
#include "chunk_int.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

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

__extension__ typedef unsigned __int128 u128_t;

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

/* The lengths histogram of a candidate's residuals: hist[b] = how many have bitlen b. The
 * two fixed-width packers are priced from it alone; top is the longest length. */
typedef struct {
  size_t hist[65];
  unsigned top;
} lens_t;

/* Picks the packing width: every value costs w bits, and each value longer than w costs an
 * exception on top (about a byte of index gap and a varint of its high bits). */
static unsigned ipack_width(const lens_t *h, size_t m, uint64_t *cost_out) {
  /* Only the lengths that occur matter, and no width past the longest can win (it only adds
   * bits): this runs on every sealed chunk, several times, so skip the empty 65 x 65. */
  unsigned lens[65], nl = 0;
  for (unsigned b = 0; b <= h->top; b++)
    if (h->hist[b]) lens[nl++] = b;
  unsigned maxw = h->top, first = 0; /* lens[first..] are the lengths > w */
  uint64_t best = UINT64_MAX;
  unsigned bw = 64;
  for (unsigned w = 0; w <= maxw; w++) {
    uint64_t c = (uint64_t)m * w;
    if (c >= best) break; /* the packed bits alone grow with w: no wider width can win */
    while (first < nl && lens[first] <= w) first++;
    for (unsigned j = first; j < nl && c < best; j++) {
      unsigned b = lens[j];
      c += (uint64_t)h->hist[b] * (8 + 8 * ((b - w + 6) / 7));
    }
    if (c < best) {
      best = c;
      bw = w;
    }
  }
  *cost_out = best;
  return bw;
}

static int ipack_encode(chunk_buf_t *o, const uint64_t *u, size_t m, unsigned w) {
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

/* ---- rpack: Rice codes ------------------------------------------------------------ */

/* For residuals that cluster near zero with a tail (bell or Laplace shaped), a Rice code
 * gets within a fraction of a bit of the entropy where one packing width pays for the
 * tail on every value: u = q * 2^k + low is q zero bits, a one bit, and k low bits, MSB
 * first. q >= RICE_QMAX is an escape: RICE_QMAX zeros, a one, 7 bits of L = bitlen(u),
 * then u in L bits.
 *
 *   rpack := k:u8 bit stream, ceil(bits/8) bytes (its length follows from m) */
enum { RICE_QMAX = 24 };

/* The window of Rice parameters worth pricing, from the mean: the optimum for
 * geometric-like data is near log2(mean * ln 2); one either side is tried. sum is the exact
 * sum of the m values. */
static void rice_window(const uint64_t *u, size_t m, u128_t sum, unsigned *lo,
                        unsigned *hi) {
  double dsum;
  if (sum < ((u128_t)1 << 53)) {
    dsum = (double)(uint64_t)sum; /* every partial sum was exact: the same as adding doubles */
  } else {
    dsum = 0; /* rounding depends on the order: add as doubles, in order */
    for (size_t i = 0; i < m; i++) dsum += (double)u[i];
  }
  double mean = m ? dsum / (double)m : 0;
  unsigned k0 = mean >= 1.8e19 ? 63 : bitlen((uint64_t)(mean * 0.69));
  k0 = k0 > 0 ? k0 - 1 : 0;
  *lo = k0 > 1 ? k0 - 1 : 0;
  *hi = k0 + 1 > 63 ? 63 : k0 + 1;
}

/* The best k in [lo, hi] (hi - lo <= 2) and its cost in bits, all k priced in one pass: a
 * value costs q + 1 + k bits with q = u >> k, or the escape's RICE_QMAX + 1 + 7 + bitlen(u)
 * when q >= RICE_QMAX. The q of k + 1 is the q of k halved, and a value that does not
 * escape at lo escapes at no larger k. Ties go to the smaller k. */
static unsigned rice_param(const uint64_t *u, size_t m, unsigned lo, unsigned hi, uint64_t *cost_out) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, esc[3] = {0, 0, 0}, escbits[3] = {0, 0, 0};
  unsigned nk = hi - lo + 1;
  for (size_t i = 0; i < m; i++) {
    uint64_t q = u[i] >> lo;
    if (__builtin_expect(q < RICE_QMAX, 1)) {
      s0 += q;
      s1 += q >> 1;
      s2 += q >> 2;
      continue;
    }
    uint64_t *s[3] = {&s0, &s1, &s2};
    for (unsigned j = 0; j < nk; j++) {
      uint64_t qj = u[i] >> (lo + j);
      if (qj < RICE_QMAX) {
        *s[j] += qj;
      } else {
        esc[j]++;
        escbits[j] += RICE_QMAX + 1 + 7 + bitlen(u[i]);
      }
    }
  }
  uint64_t sums[3] = {s0, s1, s2}, best = UINT64_MAX;
  unsigned best_k = lo;
  for (unsigned j = 0; j < nk; j++) {
    uint64_t c = sums[j] + (uint64_t)(m - esc[j]) * (1 + lo + j) + escbits[j];
    if (c < best) best = c, best_k = lo + j;
  }
  *cost_out = best;
  return best_k;
}

/* MSB-first bit writer over a buffer with enough room. acc holds nacc < 8 pending bits. */
typedef struct {
  uint8_t *q;
  size_t at;
  uint64_t acc;
  unsigned nacc;
} bitwr_t;

static inline void bw_put(bitwr_t *w, uint64_t v, unsigned n) { /* n <= 32 */
  w->acc = (w->acc << n) | v;
  w->nacc += n;
  while (w->nacc >= 8) {
    w->nacc -= 8;
    w->q[w->at++] = (uint8_t)(w->acc >> w->nacc);
  }
}

/* The low n (0..64) bits of v. */
static inline void bw_put64(bitwr_t *w, uint64_t v, unsigned n) {
  if (n < 64) v &= (1ULL << n) - 1;
  if (n > 32) {
    bw_put(w, v >> 32, n - 32);
    bw_put(w, v & 0xffffffffu, 32);
  } else if (n > 0) {
    bw_put(w, v, n);
  }
}

static int rpack_encode(chunk_buf_t *o, const uint64_t *u, size_t m, unsigned k, uint64_t bits) {
  if (chunk_buf_reserve(o, 1 + (size_t)((bits + 7) / 8) + 8) != 0) return MD_ENOMEM;
  o->buf[o->len++] = (uint8_t)k;
  bitwr_t w = {o->buf + o->len, 0, 0, 0};
  for (size_t i = 0; i < m; i++) {
    uint64_t q = u[i] >> k;
    if (q < RICE_QMAX) {
      bw_put(&w, 1, (unsigned)q + 1);
      bw_put64(&w, u[i], k);
    } else {
      unsigned L = bitlen(u[i]);
      bw_put(&w, 1, RICE_QMAX + 1);
      bw_put(&w, L, 7);
      bw_put64(&w, u[i], L);
    }
  }
  if (w.nacc) w.q[w.at++] = (uint8_t)(w.acc << (8 - w.nacc));
  o->len += w.at;
  return 0;
}

static bool rpack_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t m) {
  size_t o = *off;
  if (o >= len) return false;
  unsigned k = p[o++];
  if (k > 63) return false;
  bitbuf_t b;
  bb_init(&b, p + o, len - o);
  for (size_t i = 0; i < m; i++) {
    if (b.nb < 56) bb_refill(&b);
    if (b.buf == 0) return false; /* more than RICE_QMAX zeros, or past the end */
    unsigned q = (unsigned)__builtin_clzll(b.buf);
    if (q < RICE_QMAX && q + 1 + k <= 56) {
      out[i] = ((uint64_t)q << k) | (k ? (b.buf << (q + 1)) >> (64 - k) : 0);
      bb_skip(&b, q + 1 + k);
    } else if (q < RICE_QMAX) {
      bb_skip(&b, q + 1);
      out[i] = ((uint64_t)q << k) | bb_take(&b, k);
    } else if (q == RICE_QMAX) {
      bb_skip(&b, RICE_QMAX + 1);
      unsigned L = (unsigned)bb_take(&b, 7);
      if (L > 64) return false;
      out[i] = bb_take(&b, L);
    } else {
      return false;
    }
    if (b.next > b.slen + 16) return false; /* far into the zeros: stop early */
  }
  uint64_t used = bb_used(&b);
  if (used > (uint64_t)(len - o) * 8) return false;
  *off = o + (size_t)((used + 7) / 8);
  return true;
}

/* ---- wpack: two widths ------------------------------------------------------------- */

/* For mixtures (a counter idle most of the time with bursts, a gauge that mostly creeps and
 * sometimes jumps): each value is a flag bit and then w1 or w2 bits, MSB first.
 *
 *   wpack := w1:u8 w2:u8 bit stream, ceil(bits/8) bytes (length follows from m) */

static void wpack_param(const lens_t *h, size_t m, unsigned *w1, unsigned *w2, uint64_t *cost_out) {
  unsigned top = h->top;
  uint64_t best = UINT64_MAX;
  size_t below = 0;
  for (unsigned w = 0; w <= top; w++) {
    below += h->hist[w];
    uint64_t c = m + (uint64_t)below * w + (uint64_t)(m - below) * top;
    if (c < best) best = c, *w1 = w;
  }
  *w2 = top;
  *cost_out = best;
}

static int wpack_encode(chunk_buf_t *o, const uint64_t *u, size_t m, unsigned w1, unsigned w2, uint64_t bits) {
  if (chunk_buf_reserve(o, 2 + (size_t)((bits + 7) / 8) + 8) != 0) return MD_ENOMEM;
  o->buf[o->len++] = (uint8_t)w1;
  o->buf[o->len++] = (uint8_t)w2;
  bitwr_t w = {o->buf + o->len, 0, 0, 0};
  for (size_t i = 0; i < m; i++) {
    bool big = bitlen(u[i]) > w1;
    bw_put(&w, big, 1);
    bw_put64(&w, u[i], big ? w2 : w1);
  }
  if (w.nacc) w.q[w.at++] = (uint8_t)(w.acc << (8 - w.nacc));
  o->len += w.at;
  return 0;
}

static bool wpack_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t m) {
  size_t o = *off;
  if (len - o < 2) return false;
  unsigned w1 = p[o], w2 = p[o + 1];
  o += 2;
  if (w1 > 64 || w2 > 64) return false;
  bitbuf_t b;
  bb_init(&b, p + o, len - o);
  for (size_t i = 0; i < m; i++) {
    if (b.nb < 56) bb_refill(&b);
    unsigned width = (b.buf >> 63) ? w2 : w1;
    if (width <= 55) {
      out[i] = width ? (b.buf << 1) >> (64 - width) : 0;
      bb_skip(&b, 1 + width);
    } else {
      bb_skip(&b, 1);
      out[i] = bb_take(&b, width);
    }
    if (b.next > b.slen + 16) return false;
  }
  uint64_t used = bb_used(&b);
  if (used > (uint64_t)(len - o) * 8) return false;
  *off = o + (size_t)((used + 7) / 8);
  return true;
}

/* ---- iseq ---------------------------------------------------------------------- */

/* Mode byte: model in the low 2 bits, packer above. */
/* MODEL_REGULAR has no residuals at all: x[k] = x0 + k * step. */
enum { MODEL_DELTA = 0, MODEL_DOD = 1, MODEL_GRID = 2, MODEL_REGULAR = 3 };
enum { PACK_FOR = 0, PACK_RICE = 1, PACK_TWO = 2 };
/* Residuals are offsets from their minimum b (non-negative, stored as is) rather than
 * zigzag-mapped distances from their median b: skewed data (bursts) packs better so. */
enum { MODE_FROM_MIN = 0x10 };

static inline size_t svarint_put(uint8_t *q, int64_t v) { return chunk_uvarint_put(q, chunk_zigzag(v)); }

/* The k-th smallest of a[0..n) (reorders a). Quickselect whose partitions have no
 * data-dependent branch (each value is swapped into place and the boundary moves by the
 * comparison's result): residuals are noise, and the branchy Hoare loops mispredicted about
 * every other value (2.4x slower on 63-value residual sets). A second pass gathers the
 * pivot's equals, so runs of equal values (regular timestamps, flat gauges) stay linear. */
static int64_t select_kth(int64_t *a, ptrdiff_t n, ptrdiff_t k) {
  ptrdiff_t lo = 0, hi = n; /* the k-th lies in a[lo..hi) */
  while (hi - lo > 1) {
    int64_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
    int64_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
    ptrdiff_t lt = lo; /* a[lo..lt) < pivot <= a[lt..j) */
    for (ptrdiff_t j = lo; j < hi; j++) {
      int64_t v = a[j];
      a[j] = a[lt];
      a[lt] = v;
      lt += v < pivot;
    }
    if (k < lt) {
      hi = lt; /* lt < hi: the pivot itself is not below the pivot */
      continue;
    }
    ptrdiff_t eq = lt; /* a[lt..eq) == pivot < a[eq..j) */
    for (ptrdiff_t j = lt; j < hi; j++) {
      int64_t v = a[j];
      a[j] = a[eq];
      a[eq] = v;
      eq += v == pivot;
    }
    if (k < eq) return pivot;
    lo = eq; /* eq > lt: at least the pivot was gathered */
  }
  return a[k];
}

/* One candidate encoding: model, its header value (d1 or the grid step), the residual
 * centre and divisor, the chosen packer with its parameters, and its cost. */
typedef struct {
  int model, packer;
  bool from_min;
  int64_t head, b;
  uint64_t g;
  unsigned k, w1, w2;  /* rice: k; ipack: w1; wpack: w1, w2 */
  uint64_t pack_bits;  /* the packer's bits (rice and wpack streams need them) */
  uint64_t bits;       /* estimated total size in bits */
} cand_t;

/* The residuals of model into r; returns their count and sets *head (d1 or the step). */
static size_t residuals(const int64_t *x, size_t n, int model, int64_t *r, int64_t *head) {
  size_t m = 0;
  *head = 0;
  if (model == MODEL_DELTA) {
    for (size_t k = 1; k < n; k++) r[m++] = (int64_t)((uint64_t)x[k] - (uint64_t)x[k - 1]);
  } else if (model == MODEL_DOD) {
    uint64_t prev = (uint64_t)x[1] - (uint64_t)x[0];
    *head = (int64_t)prev;
    for (size_t k = 2; k < n; k++) {
      uint64_t d = (uint64_t)x[k] - (uint64_t)x[k - 1];
      r[m++] = (int64_t)(d - prev);
      prev = d;
    }
  } else {
    for (size_t k = 1; k < n; k++) r[m++] = (int64_t)((uint64_t)x[k] - (uint64_t)x[k - 1]);
    *head = select_kth(r, (ptrdiff_t)m, (ptrdiff_t)(m / 2)); /* the nominal step */
    m = 0;
    for (size_t k = 1; k < n; k++)
      r[m++] = (int64_t)((uint64_t)x[k] - (uint64_t)x[0] - (uint64_t)k * (uint64_t)*head);
  }
  return m;
}

/* Centres the m residuals r (on their median, or from their minimum), divides them by
 * their gcd, maps them into u and prices every packer exactly: one pass that maps and
 * takes the lengths histogram and the sum, one for the Rice window. bits = UINT64_MAX
 * when the candidate cannot cost less than bound. */
static cand_t evaluate(const int64_t *r, size_t m, int model, int64_t head, bool from_min, uint64_t *u,
                       uint64_t bound) {
  cand_t c = {.model = model, .g = 1, .from_min = from_min, .head = head};
  if (from_min) {
    c.b = m ? r[0] : 0;
    for (size_t i = 1; i < m; i++)
      if (r[i] < c.b) c.b = r[i];
  } else {
    int64_t *sc = (int64_t *)u; /* u doubles as the selection scratch */
    memcpy(sc, r, m * sizeof *sc);
    c.b = m ? select_kth(sc, (ptrdiff_t)m, (ptrdiff_t)(m / 2)) : 0;
  }
  uint64_t g = 0;
  for (size_t i = 0; i < m && g != 1; i++) {
    /* The divisor must divide the residuals as they are stored: unsigned offsets from the
     * minimum, signed distances from the median. */
    uint64_t a = (uint64_t)r[i] - (uint64_t)c.b;
    if (!from_min && (int64_t)a < 0) a = -a;
    while (a) { /* Euclid: g = gcd(g, a) */
      uint64_t t = g % a;
      g = a;
      a = t;
    }
  }
  c.g = (g == 0 || g > (uint64_t)INT64_MAX) ? 1 : g;
  /* Map, and tally lengths, sum and OR in the same pass. */
  lens_t h;
  memset(h.hist, 0, sizeof h.hist);
  u128_t sum = 0;
  uint64_t any = 0, x;
#define TALLY(expr)                                                                                \
  for (size_t i = 0; i < m; i++) {                                                                 \
    u[i] = x = (expr);                                                                             \
    h.hist[bitlen(x)]++;                                                                           \
    sum += x;                                                                                      \
    any |= x;                                                                                      \
  }
  if (from_min) {
    /* r[i] - min can exceed INT64_MAX; it is a non-negative number modulo 2^64. */
    if (c.g == 1) TALLY((uint64_t)r[i] - (uint64_t)c.b)
    else TALLY(((uint64_t)r[i] - (uint64_t)c.b) / c.g)
  } else if (c.g == 1) {
    TALLY(chunk_zigzag((int64_t)((uint64_t)r[i] - (uint64_t)c.b)))
  } else {
    TALLY(chunk_zigzag((int64_t)((uint64_t)r[i] - (uint64_t)c.b) / (int64_t)c.g))
  }
#undef TALLY
  h.top = bitlen(any); /* the longest length is the length of the OR of all */
  unsigned hdr = 8 * (unsigned)(chunk_uvarint_len(chunk_zigzag(c.head)) + chunk_uvarint_len(chunk_zigzag(c.b)) +
                                chunk_uvarint_len(c.g));
  /* Every packer spends at least bitlen(u) bits on each value (Rice: q + 1 + k >= bitlen + 1;
   * one width: w >= bitlen, or w plus an exception >= bitlen; two widths: a flag and at
   * least bitlen) and 15 bits of parameters. A candidate whose floor is already no better
   * than the best so far cannot win (later ones must be strictly smaller): skip pricing. */
  uint64_t floor_bits = 15 + hdr;
  for (unsigned b = 1; b <= h.top; b++) floor_bits += (uint64_t)b * h.hist[b];
  if (floor_bits >= bound) {
    c.bits = UINT64_MAX;
    return c;
  }
  uint64_t for_bits, rice_bits, two_bits;
  unsigned lo, hi, w1 = 0, w2 = 0;
  unsigned w = ipack_width(&h, m, &for_bits);
  rice_window(u, m, sum, &lo, &hi);
  unsigned k = rice_param(u, m, lo, hi, &rice_bits);
  wpack_param(&h, m, &w1, &w2, &two_bits);
  c.packer = PACK_FOR;
  c.w1 = w;
  uint64_t pbits = for_bits + 16; /* width byte and the exception count */
  if (rice_bits + 8 + 7 < pbits) {
    c.packer = PACK_RICE, pbits = rice_bits + 8 + 7;
    c.k = k;
    c.pack_bits = rice_bits;
  }
  if (two_bits + 16 + 7 < pbits) {
    c.packer = PACK_TWO, pbits = two_bits + 16 + 7;
    c.w1 = w1;
    c.w2 = w2;
    c.pack_bits = two_bits;
  }
  c.bits = pbits + hdr;
  return c;
}

int chunk_iseq_encode(chunk_buf_t *o, const int64_t *x, size_t n, bool try_grid) {
  if (chunk_buf_reserve(o, 1 + 10) != 0) return MD_ENOMEM;
  if (n == 1) {
    o->buf[o->len++] = MODEL_DELTA;
    o->len += svarint_put(o->buf + o->len, x[0]);
    return 0;
  }
  /* All steps equal (a steady scrape): first value and step are the whole story. */
  size_t same = 2;
  while (same < n && (uint64_t)x[same] - (uint64_t)x[same - 1] == (uint64_t)x[1] - (uint64_t)x[0]) same++;
  if (same == n) {
    if (chunk_buf_reserve(o, 1 + 2 * 10) != 0) return MD_ENOMEM;
    o->buf[o->len++] = MODEL_REGULAR;
    o->len += svarint_put(o->buf + o->len, x[0]);
    o->len += svarint_put(o->buf + o->len, (int64_t)((uint64_t)x[1] - (uint64_t)x[0]));
    return 0;
  }
  /* Scratch: residuals r, the candidate's mapped residuals u and the best one's; on the
   * stack for head-sized chunks (sealed on the append path), else one allocation. */
  enum { STACK_N = 256 };
  int64_t stack_r[STACK_N];
  uint64_t stack_u[2 * STACK_N];
  int64_t *r = stack_r;
  uint64_t *u = stack_u, *heap = NULL;
  if (n > STACK_N) {
    heap = malloc(3 * n * sizeof *heap);
    if (!heap) return MD_ENOMEM;
    r = (int64_t *)(void *)(heap + 2 * n);
    u = heap;
  }
  uint64_t *ucur = u, *ubest = u + n;
  /* Candidates in a fixed order, a later one kept only when strictly smaller. The winner's
   * residuals stay in ubest: the two buffers swap roles whenever the best changes. */
  cand_t best = {.bits = UINT64_MAX};
  for (int model = MODEL_DELTA; model <= MODEL_GRID; model++) {
    if ((model == MODEL_DOD && n < 3) || (model == MODEL_GRID && !try_grid)) continue;
    int64_t head;
    size_t m = residuals(x, n, model, r, &head);
    for (int from_min = 0; from_min < 2; from_min++) {
      cand_t c = evaluate(r, m, model, head, from_min, ucur, best.bits);
      if (c.bits < best.bits) {
        best = c;
        uint64_t *t = ubest;
        ubest = ucur;
        ucur = t;
      }
    }
  }
  const cand_t c = best;
  size_t m = c.model == MODEL_DOD ? n - 2 : n - 1;
  int rc = MD_ENOMEM;
  if (chunk_buf_reserve(o, 1 + 4 * 10) != 0) goto out;
  o->buf[o->len++] = (uint8_t)(c.model | c.packer << 2 | (c.from_min ? MODE_FROM_MIN : 0));
  o->len += svarint_put(o->buf + o->len, x[0]);
  if (c.model != MODEL_DELTA) o->len += svarint_put(o->buf + o->len, c.head);
  o->len += svarint_put(o->buf + o->len, c.b);
  o->len += chunk_uvarint_put(o->buf + o->len, c.g);
  if (c.packer == PACK_RICE) rc = rpack_encode(o, ubest, m, c.k, c.pack_bits);
  else if (c.packer == PACK_TWO) rc = wpack_encode(o, ubest, m, c.w1, c.w2, c.pack_bits);
  else rc = ipack_encode(o, ubest, m, c.w1);
out:
  free(heap);
  return rc;
}

bool chunk_iseq_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t n) {
  size_t o = *off;
  uint64_t zx0, zhead = 0, zb, g;
  if (n == 0 || o >= len) return false;
  unsigned mode = p[o++], model = mode & 3, packer = (mode >> 2) & 3;
  bool from_min = (mode & MODE_FROM_MIN) != 0;
  if (mode & ~(0x0fu | MODE_FROM_MIN)) return false;
  if (packer > PACK_TWO || !chunk_uvarint_get(p, len, &o, &zx0)) return false;
  uint64_t x0 = (uint64_t)chunk_unzigzag(zx0);
  out[0] = x0;
  if (n == 1) {
    if (mode != MODEL_DELTA) return false;
    *off = o;
    return true;
  }
  if (model == MODEL_DOD && n < 3) return false;
  if (model != MODEL_DELTA && !chunk_uvarint_get(p, len, &o, &zhead)) return false;
  if (model == MODEL_REGULAR) {
    if (packer != 0) return false;
    uint64_t step = (uint64_t)chunk_unzigzag(zhead), t = x0;
    for (size_t k = 1; k < n; k++) out[k] = t += step;
    *off = o;
    return true;
  }
  if (!chunk_uvarint_get(p, len, &o, &zb) || !chunk_uvarint_get(p, len, &o, &g)) return false;
  if (g == 0 || g > (uint64_t)INT64_MAX) return false;
  uint64_t head = (uint64_t)chunk_unzigzag(zhead), b = (uint64_t)chunk_unzigzag(zb);
  size_t first = model == MODEL_DOD ? 2 : 1;
  bool ok = packer == PACK_RICE  ? rpack_decode(p, len, &o, out + first, n - first)
            : packer == PACK_TWO ? wpack_decode(p, len, &o, out + first, n - first)
                                 : ipack_decode(p, len, &o, out + first, n - first);
  if (!ok) return false;
  /* Residuals back to their values first, in a loop of its own that vectorises. */
  if (from_min) {
    for (size_t k = first; k < n; k++) out[k] = out[k] * g + b;
  } else {
    for (size_t k = first; k < n; k++) out[k] = (uint64_t)chunk_unzigzag(out[k]) * g + b;
  }
  if (model == MODEL_DELTA) {
    uint64_t acc = x0;
    for (size_t k = 1; k < n; k++) out[k] = acc += out[k];
  } else if (model == MODEL_DOD) {
    uint64_t d = head, acc = x0 + d;
    out[1] = acc;
    for (size_t k = 2; k < n; k++) {
      d += out[k];
      out[k] = acc += d;
    }
  } else {
    uint64_t t = x0;
    for (size_t k = 1; k < n; k++) {
      t += head;
      out[k] += t;
    }
  }
  *off = o;
  return true;
}
