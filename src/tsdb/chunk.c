/*
 * chunk — sample encoding (see chunk.h for the contract). Two byte formats, told apart by
 * the first byte:
 *
 *   0x01 head stream   [0x01][count u16 LE][bit stream, MSB first]
 *        sample 0: ts (64 bits), value bits (64 bits); then per sample a delta-of-delta
 *        timestamp code and a Gorilla XOR value code (codes below, at head_put_*).
 *        The count is rewritten in place on every append, so any prefix copy of
 *        chunk_app_bytes() bytes is a complete chunk.
 *
 *   0x03 decimal head  [0x03][count u16 LE][bit stream, MSB first]: the head stream for
 *        values written with few decimals (most metrics). Timestamps as in 0x01; each value
 *        (the first included) is an integer I at the stream's decimal scale p (v = I / 10^p,
 *        one exact IEEE division), coded as the delta-of-delta of I (codes at dec_put), or
 *        an escape: to a finer scale, or to a raw value that has no such form. Starts at
 *        p = 0, I = 0, delta 0. Open chunks take ~1/3 of the XOR stream's bytes on such data.
 *
 *   0x02 sealed        [0x02][uvarint n][uvarint tslen][ts section: tslen bytes][value section]
 *        Each section starts with a scheme byte; the value section runs to the end of the
 *        chunk and must end exactly there. Sections are byte-aligned so that timestamps and
 *        values decode independently (schemes are listed at the sealed encoder).
 *
 * Invariants: timestamps strictly ascending (decoders verify it and call anything else
 * corrupt); value bit patterns are preserved exactly (no arithmetic ever touches a value
 * that is not proven to round-trip). Decoders read only within [p, p+len).
 *
 * Threading: no shared state; a chunk_app_t belongs to its one writer.
 */
#include "chunk.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "chunk_int.h"
#include "core/core.h"

enum { TAG_HEAD = 0x01, TAG_SEALED = 0x02, TAG_HEAD_DEC = 0x03 };
enum { HEAD_HDR_BITS = 24 };

/* Sealed chunks are capped so that a corrupt count can never ask a reader for more than
 * this many samples' worth of memory (64 MiB of arrays). */
#define SEALED_MAX_SAMPLES (1u << 22)

/* ---- bit writer (MSB-first) ------------------------------------------------------- */

/* Writes the low n bits of v (n <= 56) at bit offset *nbits. The caller guarantees 8 bytes
 * of zeroed room past the current byte, which lets one 64-bit OR do the work. */
static inline void bits_put56(uint8_t *buf, uint64_t *nbits, uint64_t v, unsigned n) {
  if (n == 0) return;
  uint64_t pos = *nbits, w;
  uint8_t *q = buf + (pos >> 3);
  unsigned used = (unsigned)(pos & 7);
  uint64_t add = (v & (~0ULL >> (64 - n))) << (64 - used - n);
  memcpy(&w, q, 8);
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  w |= __builtin_bswap64(add);
#else
  w |= add;
#endif
  memcpy(q, &w, 8);
  *nbits = pos + n;
}

static inline void bits_put(uint8_t *buf, uint64_t *nbits, uint64_t v, unsigned n) {
  if (n > 56) {
    bits_put56(buf, nbits, v >> 32, n - 32);
    bits_put56(buf, nbits, v & 0xffffffffu, 32);
  } else {
    bits_put56(buf, nbits, v, n);
  }
}

static inline int64_t sign_extend(uint64_t v, unsigned n) {
  return (int64_t)(v << (64 - n)) >> (64 - n);
}

/* ---- Gorilla codes shared by the head stream and the sealed fallback ------------- */

/* Worst case bits for one sample after the first: 4+64 (ts) + 2+5+6+64 (XOR value) or
 * 11+62 (decimal value: rescale + widest code). */
enum { MAX_SAMPLE_BITS = 145 };

/* Delta-of-delta buckets, chosen for ms timestamps: 0 for a steady scrape, 7 bits for a
 * few ms of jitter, 14 and 20 bits for irregular pushes, raw 64 bits for anything else. */
static inline void dod_put(uint8_t *buf, uint64_t *nbits, int64_t dod) {
  if (dod == 0) {
    bits_put56(buf, nbits, 0, 1);
  } else if (dod >= -64 && dod <= 63) {
    bits_put56(buf, nbits, (0x2ULL << 7) | ((uint64_t)dod & 0x7f), 9);
  } else if (dod >= -8192 && dod <= 8191) {
    bits_put56(buf, nbits, (0x6ULL << 14) | ((uint64_t)dod & 0x3fff), 17);
  } else if (dod >= -(1 << 19) && dod <= (1 << 19) - 1) {
    bits_put56(buf, nbits, (0xeULL << 20) | ((uint64_t)dod & 0xfffff), 24);
  } else {
    bits_put56(buf, nbits, 0xf, 4);
    bits_put(buf, nbits, (uint64_t)dod, 64);
  }
}

static inline int64_t dod_get(bitbuf_t *b) {
  if (b->nb < 56) bb_refill(b);
  uint64_t top = b->buf;
  if (!(top >> 63)) {
    bb_skip(b, 1);
    return 0;
  }
  if (!((top >> 62) & 1)) {
    bb_skip(b, 9);
    return sign_extend((top << 2) >> 57, 7);
  }
  if (!((top >> 61) & 1)) {
    bb_skip(b, 17);
    return sign_extend((top << 3) >> 50, 14);
  }
  if (!((top >> 60) & 1)) {
    bb_skip(b, 24);
    return sign_extend((top << 4) >> 44, 20);
  }
  bb_skip(b, 4);
  return (int64_t)bb_take(b, 64);
}

/* XOR state: leading == 0xff means no window yet. */
static inline void xor_put(uint8_t *buf, uint64_t *nbits, uint64_t x, uint8_t *leading, uint8_t *trailing) {
  if (x == 0) {
    bits_put56(buf, nbits, 0, 1);
    return;
  }
  unsigned lead = (unsigned)__builtin_clzll(x), trail = (unsigned)__builtin_ctzll(x);
  if (lead > 31) lead = 31;
  if (*leading != 0xff && lead >= *leading && trail >= *trailing) {
    unsigned sig = 64 - *leading - *trailing;
    bits_put56(buf, nbits, 0x2, 2);
    bits_put(buf, nbits, x >> *trailing, sig);
    return;
  }
  unsigned sig = 64 - lead - trail;
  bits_put56(buf, nbits, (0x3ULL << 11) | ((uint64_t)lead << 6) | (sig - 1), 13);
  bits_put(buf, nbits, x >> trail, sig);
  *leading = (uint8_t)lead;
  *trailing = (uint8_t)trail;
}

static inline bool xor_get(bitbuf_t *b, uint64_t *x, uint8_t *leading, uint8_t *trailing) {
  if (b->nb < 56) bb_refill(b);
  uint64_t top = b->buf;
  if (!(top >> 63)) {
    bb_skip(b, 1);
    *x = 0;
    return true;
  }
  if (!((top >> 62) & 1)) {
    if (*leading == 0xff) return false; /* reuse of a window never opened */
    bb_skip(b, 2);
  } else {
    unsigned lead = (unsigned)(top >> 57) & 31, sig = (unsigned)((top >> 51) & 63) + 1;
    if (lead + sig > 64) return false;
    bb_skip(b, 13);
    *leading = (uint8_t)lead;
    *trailing = (uint8_t)(64 - lead - sig);
  }
  unsigned sig = 64 - *leading - *trailing;
  *x = bb_take(b, sig) << *trailing;
  return true;
}

/* Decoding a stream of n codes consumes at least one bit per code; a reader this far into
 * the zeros past the end is reading damage. */
static inline bool bb_overrun(const bitbuf_t *b) { return b->next > b->slen + 16; }

/* After the last code: the stream must end inside the last byte (at most 7 padding bits). */
static inline bool bb_ends_well(const bitbuf_t *b) {
  uint64_t used = bb_used(b), avail = (uint64_t)b->slen * 8;
  return used <= avail && avail - used <= 7;
}

/* ---- decimal head stream: integer delta-of-delta codes ----------------------------- */

/* Decimal scales tried: 10^0 .. 10^DEC_MAX_P. Every power up to 10^22 is an exact double,
 * which is what makes I / 10^p a single correctly rounded operation. */
#define DEC_MAX_P 18
static const double POW10[DEC_MAX_P + 1] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                                            1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};
/* |I| stays below 2^62 so that residual arithmetic in chunk_int has headroom. */
#define DEC_MAX_ABS 4.6e18

static inline uint64_t dbits(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return b;
}

/* True when v == (double)I / 10^p bit for bit, with I = the integer nearest v * 10^p and
 * |I| < bound (never for NaN, ±Inf, -0.0). */
static inline bool dec_fits_below(double v, unsigned p, double bound, int64_t *out) {
  double x = v * POW10[p];
  if (!(x > -bound && x < bound)) return false; /* also NaN and ±Inf */
#if defined(__SSE2__) && defined(__x86_64__)
  /* cvtsd2si rounds in the current mode, as llrint does, and |x| < 2^63 here: the same
   * integer without a libm call (this runs for every sample appended). */
  int64_t i = _mm_cvtsd_si64(_mm_set_sd(x));
#else
  int64_t i = llrint(x);
#endif
  if (dbits((double)i / POW10[p]) != dbits(v)) return false;
  *out = i;
  return true;
}

static inline bool dec_fits(double v, unsigned p, int64_t *out) { return dec_fits_below(v, p, DEC_MAX_ABS, out); }

/* Decimal head streams: scales 10^0 .. 10^DEC_HEAD_MAX_P; integers and their deltas stay
 * below 2^53 (exact as doubles) and delta-of-deltas below 2^55, the widest code. */
#define DEC_HEAD_MAX_P 15
#define DEC_HEAD_MAX_I 9007199254740992.0 /* 2^53 */
static const int64_t IPOW10[DEC_HEAD_MAX_P + 1] = {1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL,
                                                   10000000LL, 100000000LL, 1000000000LL, 10000000000LL,
                                                   100000000000LL, 1000000000000LL, 10000000000000LL,
                                                   100000000000000LL, 1000000000000000LL};

static inline bool dec_of(double v, unsigned p, int64_t *out) { return dec_fits_below(v, p, DEC_HEAD_MAX_I, out); }

static inline bool int53(int64_t x) { return x > -(1LL << 53) && x < (1LL << 53); }

/* Value codes: 0 | 10+7 | 110+13 | 1110+20 | 11110+32 | 111110+56 bits of the signed
 * delta-of-delta, or 111111 + 0 + 64 raw value bits, or 111111 + 1 + 4-bit new scale and
 * then the value's code at that scale. */
static inline void dec_dod_put(uint8_t *buf, uint64_t *nbits, int64_t d) {
  uint64_t u = (uint64_t)d;
  if (d == 0) bits_put56(buf, nbits, 0, 1);
  else if (d >= -64 && d <= 63) bits_put56(buf, nbits, (0x2ULL << 7) | (u & 0x7f), 9);
  else if (d >= -4096 && d <= 4095) bits_put56(buf, nbits, (0x6ULL << 13) | (u & 0x1fff), 16);
  else if (d >= -(1LL << 19) && d < (1LL << 19)) bits_put56(buf, nbits, (0xeULL << 20) | (u & 0xfffff), 24);
  else if (d >= -(1LL << 31) && d < (1LL << 31)) bits_put56(buf, nbits, (0x1eULL << 32) | (u & 0xffffffffULL), 37);
  else {
    bits_put56(buf, nbits, 0x3e, 6);
    bits_put56(buf, nbits, u & ((1ULL << 56) - 1), 56);
  }
}

/* Decimal state of an appender or a decoder. */
typedef struct dec_state {
  unsigned p;
  int64_t last, delta;
} dec_state_t;

/* Moves the state to the finer scale q (> st->p). False, the state unchanged, when the scaled
 * integers would reach 2^53: |x * f| < 2^53 exactly when |x| <= (2^53 - 1) / f. */
static inline bool dec_rescale(dec_state_t *st, unsigned q) {
  int64_t f = IPOW10[q - st->p], lim = ((1LL << 53) - 1) / f;
  if (st->last < -lim || st->last > lim || st->delta < -lim || st->delta > lim) return false;
  st->p = q;
  st->last *= f;
  st->delta *= f;
  return true;
}

static inline void dec_step(dec_state_t *st, int64_t i) {
  st->delta = i - st->last;
  st->last = i;
}

/* dec_put's rare cases: v needs a finer scale, or has no short decimal form at all. */
static __attribute__((noinline)) void dec_put_slow(uint8_t *buf, uint64_t *nbits, dec_state_t *st, double v) {
  int64_t i;
  for (unsigned q = st->p + 1; q <= DEC_HEAD_MAX_P; q++) {
    if (!dec_of(v, q, &i)) continue;
    dec_state_t old = *st;
    if (!dec_rescale(st, q) || !int53(i - st->last)) { /* the new delta must stay exact too */
      *st = old;
      break;
    }
    bits_put56(buf, nbits, (0x7fULL << 4) | q, 11);
    dec_dod_put(buf, nbits, i - st->last - st->delta);
    dec_step(st, i);
    return;
  }
  uint64_t bits;
  memcpy(&bits, &v, 8);
  bits_put56(buf, nbits, 0x7e, 7);
  bits_put(buf, nbits, bits, 64);
}

/* Codes v; the appender reserved MAX_SAMPLE_BITS (>= 6+1+64). */
static inline void dec_put(uint8_t *buf, uint64_t *nbits, dec_state_t *st, double v) {
  int64_t i;
  if (__builtin_expect(dec_of(v, st->p, &i) && int53(i - st->last), 1)) {
    dec_dod_put(buf, nbits, i - st->last - st->delta);
    dec_step(st, i);
    return;
  }
  dec_put_slow(buf, nbits, st, v);
}

static bool dec_get(bitbuf_t *b, dec_state_t *st, double *v) {
  for (int rescaled = 0;; rescaled++) {
    if (b->nb < 56) bb_refill(b);
    uint64_t top = b->buf;
    int64_t d;
    if (!(top >> 63)) {
      bb_skip(b, 1);
      d = 0;
    } else if (!((top >> 62) & 1)) {
      bb_skip(b, 9);
      d = sign_extend((top << 2) >> 57, 7);
    } else if (!((top >> 61) & 1)) {
      bb_skip(b, 16);
      d = sign_extend((top << 3) >> 51, 13);
    } else if (!((top >> 60) & 1)) {
      bb_skip(b, 24);
      d = sign_extend((top << 4) >> 44, 20);
    } else if (!((top >> 59) & 1)) {
      bb_skip(b, 5);
      d = sign_extend(bb_take(b, 32), 32);
    } else if (!((top >> 58) & 1)) {
      bb_skip(b, 6);
      d = sign_extend(bb_take(b, 56), 56);
    } else if (!((top >> 57) & 1)) {
      bb_skip(b, 7);
      uint64_t bits = bb_take(b, 64);
      memcpy(v, &bits, 8);
      return !rescaled; /* a rescale is followed by an integer code */
    } else {
      unsigned q = (unsigned)(top >> 53) & 15;
      bb_skip(b, 11);
      if (rescaled || q <= st->p || !dec_rescale(st, q)) return false;
      continue;
    }
    /* |last|, |delta| < 2^53 and |d| < 2^55: no overflow in int64 */
    int64_t delta = st->delta + d, i = st->last + delta;
    if (!int53(delta) || !int53(i)) return false;
    st->delta = delta;
    st->last = i;
    *v = (double)i / POW10[st->p];
    return true;
  }
}

/* Whether a chunk starting with v should be a decimal stream. */
static bool dec_suits(double v) {
  int64_t i;
  for (unsigned p = 0; p <= DEC_HEAD_MAX_P; p++)
    if (dec_of(v, p, &i)) return true;
  return false;
}

/* ---- head appender ------------------------------------------------------------- */

void chunk_app_init(chunk_app_t *a) {
  memset(a, 0, sizeof *a);
  a->leading = 0xff;
}

void chunk_app_free(chunk_app_t *a) {
  free(a->buf);
  chunk_app_init(a);
}

/* Room for `bits` more bits plus the 8 bytes of slack bits_put56 writes into. */
static int app_reserve(chunk_app_t *a, unsigned bits) {
  uint64_t need = ((uint64_t)a->nbits + bits + 7) / 8 + 8;
  if (need <= a->cap) return 0;
  /* Grow by a quarter, not double: open chunks are most of the head's memory and a full
   * chunk's slack is what a series costs on top of its data (one realloc per ~15 samples). */
  uint64_t ncap = a->cap ? (uint64_t)a->cap + a->cap / 8 : 64;
  if (ncap < need) ncap = need;
  ncap = (ncap + 15) & ~(uint64_t)15;
  uint8_t *nb = realloc(a->buf, ncap);
  if (!nb) return MD_ENOMEM;
  memset(nb + a->cap, 0, ncap - a->cap);
  a->buf = nb;
  a->cap = (uint32_t)ncap;
  return 0;
}

int chunk_app_append(chunk_app_t *a, int64_t ts, double v) {
  if (a->count >= CHUNK_MAX_SAMPLES) return MD_ELIMIT;
  if (a->count > 0 && ts <= a->last_ts) return MD_EINVAL;
  /* Reserve only what this sample can take: headroom is paid by every open chunk. */
  if (app_reserve(a, a->count ? MAX_SAMPLE_BITS : HEAD_HDR_BITS + 64 + 73) != 0) return MD_ENOMEM;
  uint64_t bits, nbits = a->nbits;
  memcpy(&bits, &v, 8);
  if (a->count == 0) {
    a->dec = dec_suits(v);
    bits_put56(a->buf, &nbits, a->dec ? TAG_HEAD_DEC : TAG_HEAD, 8);
    bits_put56(a->buf, &nbits, 0, 16); /* count, patched below */
    bits_put(a->buf, &nbits, (uint64_t)ts, 64);
    a->last_delta = 0;
    if (a->dec) {
      dec_state_t st = {0, 0, 0};
      dec_put(a->buf, &nbits, &st, v);
      a->dec_p = (uint8_t)st.p;
      a->dec_last = st.last;
      a->dec_delta = st.delta;
    } else {
      bits_put(a->buf, &nbits, bits, 64);
      a->leading = 0xff;
      a->trailing = 0;
    }
  } else {
    int64_t delta = (int64_t)((uint64_t)ts - (uint64_t)a->last_ts);
    dod_put(a->buf, &nbits, (int64_t)((uint64_t)delta - (uint64_t)a->last_delta));
    if (a->dec) {
      dec_state_t st = {a->dec_p, a->dec_last, a->dec_delta};
      dec_put(a->buf, &nbits, &st, v);
      a->dec_p = (uint8_t)st.p;
      a->dec_last = st.last;
      a->dec_delta = st.delta;
    } else {
      xor_put(a->buf, &nbits, bits ^ a->last_bits, &a->leading, &a->trailing);
    }
    a->last_delta = delta;
  }
  a->nbits = (uint32_t)nbits;
  a->last_ts = ts;
  a->last_bits = bits;
  a->count++;
  a->buf[1] = (uint8_t)(a->count & 0xff);
  a->buf[2] = (uint8_t)(a->count >> 8);
  return 0;
}

void chunk_app_trim(chunk_app_t *a) {
  size_t used = chunk_app_bytes(a);
  if (!a->buf || used == a->cap) return;
  if (used == 0) {
    free(a->buf);
    a->buf = NULL;
    a->cap = 0;
    return;
  }
  uint8_t *nb = realloc(a->buf, used);
  if (!nb) return; /* keeping the larger buffer is harmless */
  a->buf = nb;
  a->cap = (uint32_t)used;
}

size_t chunk_app_bytes(const chunk_app_t *a) { return ((size_t)a->nbits + 7) / 8; }

/* Decodes n Gorilla samples (first raw, then dod + XOR codes) from b. */
static bool gorilla_decode(bitbuf_t *b, size_t n, int64_t *ts, double *v) {
  uint64_t t = bb_take(b, 64), bits = bb_take(b, 64);
  ts[0] = (int64_t)t;
  memcpy(&v[0], &bits, 8);
  uint64_t delta = 0;
  uint8_t leading = 0xff, trailing = 0;
  for (size_t i = 1; i < n; i++) {
    uint64_t x;
    delta += (uint64_t)dod_get(b);
    if (!xor_get(b, &x, &leading, &trailing) || bb_overrun(b)) return false;
    /* Strictly ascending as signed values; the step itself is modulo 2^64 (a gap may
     * exceed INT64_MAX), so only the comparison can tell. */
    if ((int64_t)(t + delta) <= (int64_t)t) return false;
    t += delta;
    bits ^= x;
    ts[i] = (int64_t)t;
    memcpy(&v[i], &bits, 8);
  }
  return bb_ends_well(b);
}

/* Decodes n decimal-stream samples (first ts raw, then dod codes; values as dec_get). */
static bool dec_decode(bitbuf_t *b, size_t n, int64_t *ts, double *v) {
  uint64_t t = bb_take(b, 64), delta = 0;
  dec_state_t st = {0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    if (i > 0) {
      delta += (uint64_t)dod_get(b);
      if ((int64_t)(t + delta) <= (int64_t)t) return false;
      t += delta;
    }
    if (!dec_get(b, &st, &v[i]) || bb_overrun(b)) return false;
    ts[i] = (int64_t)t;
  }
  return bb_ends_well(b);
}

static int head_count(const uint8_t *p, size_t len) {
  if (len < 3 + 8 + (p[0] == TAG_HEAD ? 8 : 1)) return MD_ECORRUPT;
  unsigned n = p[1] | (unsigned)p[2] << 8;
  if (n == 0 || n > CHUNK_MAX_SAMPLES) return MD_ECORRUPT;
  return (int)n;
}

static int head_decode(const uint8_t *p, size_t len, int64_t *ts, double *v, size_t cap) {
  int n = head_count(p, len);
  if (n < 0) return n;
  if ((size_t)n > cap) return MD_EINVAL;
  bitbuf_t b;
  bb_init(&b, p + HEAD_HDR_BITS / 8, len - HEAD_HDR_BITS / 8);
  if (!(p[0] == TAG_HEAD ? gorilla_decode(&b, (size_t)n, ts, v) : dec_decode(&b, (size_t)n, ts, v))) return MD_ECORRUPT;
  return n;
}

/* ---- sealed chunks ------------------------------------------------------------- */

/* Timestamp section schemes, told apart by the first byte (an iseq mode byte is < 0x20):
 *   iseq       [iseq of the timestamps]  (chunk_int.h; a steady interval costs ~0 bits)
 *   TS_GORILLA [0x80][ts0: 64 bits][dod codes as in the head stream], bit stream, MSB first
 * Value section schemes, by the first byte:
 *   VAL_XOR    [0x00][v0: 64 bits][Gorilla XOR codes], bit stream, MSB first
 *   VAL_CONST  [0x01][bits: u64 LE]           every sample has this bit pattern
 *   VAL_DEC    [0x20 | p | (nexc ? 0x40 : 0)][nexc: uvarint, when 0x40]
 *              [nexc * (gap: uvarint, bits: u64 LE)][iseq of I]
 *              v[k] = (double)I[k] / 10^p, computed exactly so on both sides (one IEEE
 *              division of two exact doubles); samples listed as exceptions (NaN, ±Inf,
 *              -0.0, values with no short decimal form) carry their raw bits instead, and
 *              I repeats the previous integer there so they cost nothing in the sequence.
 *              Exception indexes: previous + 1 + gap, the first previous being -1.
 * The encoder builds every applicable scheme and keeps the smallest. */
enum { TS_GORILLA = 0x80, TS_ISEQ_MAX_MODE = 0x1f };
enum { VAL_XOR = 0x00, VAL_CONST = 0x01, VAL_DEC = 0x20, VAL_DEC_EXC = 0x40 };

static inline void put_le64(uint8_t *q, uint64_t x) {
  for (int i = 0; i < 8; i++) q[i] = (uint8_t)(x >> (8 * i));
}

static inline uint64_t get_le64(const uint8_t *q) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = (x << 8) | q[i];
  return x;
}

static int ts_encode_gorilla(chunk_buf_t *o, const int64_t *ts, size_t n) {
  if (chunk_buf_reserve(o, 1 + 8 + (n * 68 + 7) / 8 + 16) != 0) return MD_ENOMEM;
  o->buf[o->len++] = TS_GORILLA;
  uint64_t nbits = (uint64_t)o->len * 8;
  bits_put(o->buf, &nbits, (uint64_t)ts[0], 64);
  int64_t last_delta = 0;
  for (size_t i = 1; i < n; i++) {
    int64_t delta = (int64_t)((uint64_t)ts[i] - (uint64_t)ts[i - 1]);
    dod_put(o->buf, &nbits, (int64_t)((uint64_t)delta - (uint64_t)last_delta));
    last_delta = delta;
  }
  o->len = (size_t)((nbits + 7) / 8);
  return 0;
}

static int ts_encode_iseq(chunk_buf_t *o, const int64_t *ts, size_t n) { return chunk_iseq_encode(o, ts, n, true); }

static int val_encode_xor(chunk_buf_t *o, const double *v, size_t n) {
  if (chunk_buf_reserve(o, 1 + 8 + (n * 77 + 7) / 8 + 16) != 0) return MD_ENOMEM;
  o->buf[o->len++] = VAL_XOR;
  uint64_t nbits = (uint64_t)o->len * 8, bits, last = dbits(v[0]);
  bits_put(o->buf, &nbits, last, 64);
  uint8_t leading = 0xff, trailing = 0;
  for (size_t i = 1; i < n; i++) {
    bits = dbits(v[i]);
    xor_put(o->buf, &nbits, bits ^ last, &leading, &trailing);
    last = bits;
  }
  o->len = (size_t)((nbits + 7) / 8);
  return 0;
}

/* The bytes val_encode_xor would write, without writing them (it mirrors xor_put). */
static size_t val_xor_bytes(const double *v, size_t n) {
  uint64_t nbits = 8 + 64, last = dbits(v[0]);
  unsigned leading = 0xff, trailing = 0;
  for (size_t i = 1; i < n; i++) {
    uint64_t bits = dbits(v[i]), x = bits ^ last;
    last = bits;
    if (x == 0) {
      nbits += 1;
      continue;
    }
    unsigned lead = (unsigned)__builtin_clzll(x), trail = (unsigned)__builtin_ctzll(x);
    if (lead > 31) lead = 31;
    if (leading != 0xff && lead >= leading && trail >= trailing) {
      nbits += 2 + 64 - leading - trailing;
    } else {
      nbits += 13 + 64 - lead - trail;
      leading = lead;
      trailing = trail;
    }
  }
  return (size_t)((nbits + 7) / 8);
}

/* Returns 1 when the values are not worth a decimal encoding (too many exceptions), 0 when
 * encoded, or MD_ENOMEM. */
static int val_encode_dec(chunk_buf_t *o, const double *v, size_t n) {
  size_t max_exc = n / 4;
  unsigned p = 0;
  size_t nexc = 0;
  int64_t scratch;
  /* Pass 1: the smallest scale that suits every value that has a short decimal form. A
   * value exact at scale p is exact at every larger p (same rational, one rounding), so
   * the scale only ever grows; pass 2 re-checks for the range limit. */
  for (size_t i = 0; i < n; i++) {
    if (dec_fits(v[i], p, &scratch)) continue;
    unsigned q = p + 1;
    while (q <= DEC_MAX_P && !dec_fits(v[i], q, &scratch)) q++;
    if (q <= DEC_MAX_P) p = q;
    else if (++nexc > max_exc) return 1;
  }
  int64_t *I = malloc(n * sizeof *I);
  size_t *exc = malloc((max_exc + 1) * sizeof *exc);
  int rc = MD_ENOMEM;
  if (!I || !exc) goto out;
  nexc = 0;
  int64_t prev = 0;
  for (size_t i = 0; i < n; i++) {
    if (dec_fits(v[i], p, &I[i])) {
      prev = I[i];
      continue;
    }
    if (nexc == max_exc) {
      rc = 1;
      goto out;
    }
    exc[nexc++] = i;
    I[i] = prev;
  }
  if (chunk_buf_reserve(o, 2 + 10 + nexc * 18) != 0) goto out;
  o->buf[o->len++] = (uint8_t)(VAL_DEC | p | (nexc ? VAL_DEC_EXC : 0));
  if (nexc) o->len += chunk_uvarint_put(o->buf + o->len, nexc);
  size_t last = (size_t)-1;
  for (size_t k = 0; k < nexc; k++) {
    o->len += chunk_uvarint_put(o->buf + o->len, exc[k] - last - 1);
    put_le64(o->buf + o->len, dbits(v[exc[k]]));
    o->len += 8;
    last = exc[k];
  }
  rc = chunk_iseq_encode(o, I, n, false);
out:
  free(I);
  free(exc);
  return rc;
}

/* v[i] = (double)I[i] / scale, exactly as the encoder checked it. Integers (scale 1) need
 * no division at all; with SSE2 and |I| < 2^51 (nearly always) two lanes convert through
 * the 2^52 + 2^51 bias trick and divide at once, the same correctly rounded IEEE division. */
static void dec_to_double(const uint64_t *I, double *v, size_t n, double scale) {
  if (scale == 1.0) {
    for (size_t i = 0; i < n; i++) v[i] = (double)(int64_t)I[i];
    return;
  }
  size_t i = 0;
#if defined(__SSE2__)
  uint64_t out_of_range = 0;
  for (size_t k = 0; k < n; k++) out_of_range |= (I[k] + (1ULL << 51)) >> 52;
  if (!out_of_range) {
    const __m128i bias_i = _mm_set1_epi64x(0x4338000000000000LL);
    const __m128d bias_d = _mm_set1_pd(6755399441055744.0), sc = _mm_set1_pd(scale);
    for (; i + 2 <= n; i += 2) {
      __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(I + i));
      __m128d d = _mm_sub_pd(_mm_castsi128_pd(_mm_add_epi64(x, bias_i)), bias_d);
      _mm_storeu_pd(v + i, _mm_div_pd(d, sc));
    }
  }
#endif
  for (; i < n; i++) v[i] = (double)(int64_t)I[i] / scale;
}

static bool ts_decode_section(const uint8_t *p, size_t len, int64_t *ts, size_t n) {
  if (len < 1) return false;
  if (p[0] <= TS_ISEQ_MAX_MODE) {
    size_t off = 0;
    if (!chunk_iseq_decode(p, len, &off, (uint64_t *)ts, n) || off != len) return false;
    if (n > 1 && (p[0] & 3) == 3) {
      /* A regular progression ascends iff its step is positive and it does not wrap. */
      uint64_t step = (uint64_t)ts[1] - (uint64_t)ts[0], span;
      return step >= 1 && step <= (uint64_t)INT64_MAX && !__builtin_mul_overflow((uint64_t)(n - 1), step, &span) &&
             span <= (uint64_t)INT64_MAX - (uint64_t)ts[0];
    }
    for (size_t i = 1; i < n; i++)
      if (ts[i] <= ts[i - 1]) return false;
    return true;
  }
  switch (p[0]) {
  case TS_GORILLA: {
    bitbuf_t b;
    bb_init(&b, p + 1, len - 1);
    uint64_t t = bb_take(&b, 64), delta = 0;
    ts[0] = (int64_t)t;
    for (size_t i = 1; i < n; i++) {
      delta += (uint64_t)dod_get(&b);
      if ((int64_t)(t + delta) <= (int64_t)t || bb_overrun(&b)) return false;
      t += delta;
      ts[i] = (int64_t)t;
    }
    return bb_ends_well(&b);
  }
  default:
    return false;
  }
}

/* Decodes the value section; scratch (n uint64) is free memory the decimal scheme uses for
 * its integers (the caller's timestamp array, filled afterwards). */
static bool val_decode_section(const uint8_t *p, size_t len, double *v, size_t n, uint64_t *scratch) {
  if (len < 1) return false;
  if ((p[0] & 0xa0) == VAL_DEC) {
    /* 0x20 set, 0x80 clear: decimal, scale in the low 5 bits, 0x40 flags exceptions. */
    size_t off = 1;
    uint64_t nexc = 0;
    unsigned scale_p = p[0] & 0x1f;
    if (scale_p > DEC_MAX_P) return false;
    const double scale = POW10[scale_p];
    if ((p[0] & VAL_DEC_EXC) && (!chunk_uvarint_get(p, len, &off, &nexc) || nexc == 0 || nexc > n)) return false;
    /* Exceptions are applied after the integers; remember where they are. */
    size_t exc_off = off;
    for (uint64_t k = 0; k < nexc; k++) {
      uint64_t gap;
      if (!chunk_uvarint_get(p, len, &off, &gap) || len - off < 8) return false;
      off += 8;
    }
    if (!chunk_iseq_decode(p, len, &off, scratch, n) || off != len) return false;
    dec_to_double(scratch, v, n, scale);
    size_t idx = (size_t)-1;
    off = exc_off;
    for (uint64_t k = 0; k < nexc; k++) {
      uint64_t gap = 0;
      if (!chunk_uvarint_get(p, len, &off, &gap) || gap >= n || idx + 1 + gap >= n) return false;
      idx += 1 + (size_t)gap;
      uint64_t bits = get_le64(p + off);
      off += 8;
      memcpy(&v[idx], &bits, 8);
    }
    return true;
  }
  switch (p[0]) {
  case VAL_XOR: {
    bitbuf_t b;
    bb_init(&b, p + 1, len - 1);
    uint64_t bits = bb_take(&b, 64), x;
    memcpy(&v[0], &bits, 8);
    uint8_t leading = 0xff, trailing = 0;
    for (size_t i = 1; i < n; i++) {
      if (!xor_get(&b, &x, &leading, &trailing) || bb_overrun(&b)) return false;
      bits ^= x;
      memcpy(&v[i], &bits, 8);
    }
    return bb_ends_well(&b);
  }
  case VAL_CONST: {
    if (len != 9) return false;
    uint64_t bits = get_le64(p + 1);
    double d;
    memcpy(&d, &bits, 8);
    for (size_t i = 0; i < n; i++) v[i] = d;
    return true;
  }
  default:
    return false;
  }
}

static int seal_values(chunk_buf_t *best, const double *v, size_t n) {
  uint64_t b0 = dbits(v[0]);
  size_t i = 1;
  while (i < n && dbits(v[i]) == b0) i++;
  if (i == n) {
    if (chunk_buf_reserve(best, 9) != 0) return MD_ENOMEM;
    best->buf[best->len++] = VAL_CONST;
    put_le64(best->buf + best->len, b0);
    best->len += 8;
    return 0;
  }
  chunk_buf_t dec = {0};
  int rc = val_encode_dec(&dec, v, n);
  if (rc < 0) goto out;
  /* The XOR form is written only when it is the smaller (sizing it is a cheap pass). */
  if (dec.len > 0 && dec.len < val_xor_bytes(v, n)) {
    chunk_buf_t t = *best;
    *best = dec;
    dec = t;
  } else if ((rc = val_encode_xor(best, v, n)) != 0) {
    goto out;
  }
  rc = 0;
out:
  chunk_buf_free(&dec);
  return rc;
}

static int seal_timestamps(chunk_buf_t *best, const int64_t *ts, size_t n) {
  chunk_buf_t alt = {0};
  int rc;
  if ((rc = ts_encode_iseq(best, ts, n)) != 0) goto out;
  /* The Gorilla form takes at least its tag, ts0 and a bit per later sample: when the
   * integer form is no larger than that (any steady interval), skip building it. */
  if (best->len <= 1 + (64 + (n - 1) + 7) / 8) goto out;
  if ((rc = ts_encode_gorilla(&alt, ts, n)) != 0) goto out;
  if (alt.len < best->len) {
    chunk_buf_t t = *best;
    *best = alt;
    alt = t;
  }
out:
  chunk_buf_free(&alt);
  return rc;
}

int chunk_seal(const int64_t *ts, const double *v, size_t n, uint8_t **out, size_t *outlen) {
  if (!ts || !v || !out || !outlen || n == 0 || n > SEALED_MAX_SAMPLES) return MD_EINVAL;
  for (size_t i = 1; i < n; i++)
    if (ts[i] <= ts[i - 1]) return MD_EINVAL;
  chunk_buf_t tsec = {0}, vsec = {0}, o = {0};
  int rc;
  if ((rc = seal_timestamps(&tsec, ts, n)) != 0) goto fail;
  if ((rc = seal_values(&vsec, v, n)) != 0) goto fail;
  rc = MD_ENOMEM;
  if (chunk_buf_reserve(&o, 1 + 10 + 10 + tsec.len + vsec.len) != 0) goto fail;
  o.buf[o.len++] = TAG_SEALED;
  o.len += chunk_uvarint_put(o.buf + o.len, n);
  o.len += chunk_uvarint_put(o.buf + o.len, tsec.len);
  memcpy(o.buf + o.len, tsec.buf, tsec.len);
  o.len += tsec.len;
  memcpy(o.buf + o.len, vsec.buf, vsec.len);
  o.len += vsec.len;
  /* Hand over an exact-size buffer: sealed chunks are long-lived. */
  uint8_t *exact = realloc(o.buf, o.len);
  *out = exact ? exact : o.buf;
  *outlen = o.len;
  o.buf = NULL;
  rc = 0;
fail:
  chunk_buf_free(&tsec);
  chunk_buf_free(&vsec);
  chunk_buf_free(&o);
  return rc;
}

/* Parses the sealed header; fills the section bounds. */
static int sealed_header(const uint8_t *p, size_t len, size_t *n, size_t *tsoff, size_t *tslen) {
  size_t off = 1;
  uint64_t cnt, tl;
  if (!chunk_uvarint_get(p, len, &off, &cnt) || cnt == 0 || cnt > SEALED_MAX_SAMPLES) return MD_ECORRUPT;
  if (!chunk_uvarint_get(p, len, &off, &tl) || tl >= len - off) return MD_ECORRUPT;
  *n = (size_t)cnt;
  *tsoff = off;
  *tslen = (size_t)tl;
  return 0;
}

static int sealed_decode(const uint8_t *p, size_t len, int64_t *ts, double *v, size_t cap) {
  size_t n, tsoff, tslen;
  int rc = sealed_header(p, len, &n, &tsoff, &tslen);
  if (rc != 0) return rc;
  if (n > cap) return MD_EINVAL;
  /* Values first: the decimal scheme borrows ts as scratch before the timestamps land. */
  if (!val_decode_section(p + tsoff + tslen, len - tsoff - tslen, v, n, (uint64_t *)ts)) return MD_ECORRUPT;
  if (!ts_decode_section(p + tsoff, tslen, ts, n)) return MD_ECORRUPT;
  return (int)n;
}

int chunk_count(const uint8_t *p, size_t len) {
  if (len == 0) return 0;
  if (!p) return MD_ECORRUPT;
  if (p[0] == TAG_HEAD || p[0] == TAG_HEAD_DEC) return head_count(p, len);
  if (p[0] == TAG_SEALED) {
    size_t n, tsoff, tslen;
    int rc = sealed_header(p, len, &n, &tsoff, &tslen);
    return rc != 0 ? rc : (int)n;
  }
  return MD_ECORRUPT;
}

int chunk_decode(const uint8_t *p, size_t len, int64_t *ts, double *v, size_t cap) {
  if (len == 0) return 0;
  if (!p) return MD_ECORRUPT;
  if (p[0] == TAG_HEAD || p[0] == TAG_HEAD_DEC) return head_decode(p, len, ts, v, cap);
  if (p[0] == TAG_SEALED) return sealed_decode(p, len, ts, v, cap);
  return MD_ECORRUPT;
}
