/*
 * chunk_int — integer sequence coding for sealed chunks (private to chunk.c).
 *
 * An integer sequence x[0..n) is stored as its first value and the residuals of one of two
 * models, whichever comes out smaller:
 *   delta: r[k] = x[k] - x[k-1]                        (gauges, irregular counters)
 *   dod:   r[k] = (x[k] - x[k-1]) - (x[k-1] - x[k-2])   (steady counters, timestamps)
 * The residuals are centred on their median b, divided by their greatest common divisor g
 * (page sizes, sector sizes, whole seconds in ms), zigzag-mapped and bit-packed at one
 * width w with the few values that need more bits patched in as exceptions.
 *
 *   iseq  := mode:u8 x0:svarint [dod: d1:svarint] [n >= 2: b:svarint g:uvarint ipack]
 *   ipack := w:u8 nexc:uvarint packed:ceil(m*w/8) bytes, LSB-first
 *            nexc * (gap:uvarint high:uvarint)   value[i] = low | high << w,
 *            i = previous index + 1 + gap (the first previous index is -1)
 *
 * All arithmetic is modulo 2^64, so any int64 sequence round-trips, overflow included.
 * Decoders read only within [p, p+len) and report malformed input as false.
 */
#ifndef METRICSD_TSDB_CHUNK_INT_H
#define METRICSD_TSDB_CHUNK_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growable output buffer whose bytes past len are always zero. */
typedef struct {
  uint8_t *buf;
  size_t len, cap;
} chunk_buf_t;

int chunk_buf_reserve(chunk_buf_t *o, size_t extra);
void chunk_buf_free(chunk_buf_t *o);

static inline uint64_t chunk_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t chunk_unzigzag(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

static inline size_t chunk_uvarint_put(uint8_t *q, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    q[i++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  q[i++] = (uint8_t)v;
  return i;
}

static inline size_t chunk_uvarint_len(uint64_t v) {
  size_t i = 1;
  while (v >= 0x80) {
    v >>= 7;
    i++;
  }
  return i;
}

/* Reads a uvarint at *off; false when truncated or over 64 bits. */
static inline bool chunk_uvarint_get(const uint8_t *p, size_t len, size_t *off, uint64_t *out) {
  uint64_t v = 0;
  size_t i = *off;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (i >= len) return false;
    uint8_t c = p[i++];
    if (shift == 63 && c > 1) return false;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *off = i;
      *out = v;
      return true;
    }
  }
  return false;
}

/* A register bit reader for the variable-length codes: buf holds nb >= 56 upcoming bits
 * MSB-aligned after a refill, so decoding a value is clz and shifts on a register rather
 * than a load per value. Refills load 8 bytes and keep the whole bytes they cover; the
 * partial byte's bits land again, identical, on the next refill. Past the end the stream
 * reads as zeros; callers check bits_used() against the length once at the end. */
typedef struct {
  const uint8_t *s;
  size_t slen, next; /* next: the next byte to load (may run past slen: zeros) */
  uint64_t buf;
  unsigned nb;
} bitbuf_t;

static inline void bb_refill(bitbuf_t *b) {
  if (b->next + 8 <= b->slen) {
    uint64_t w;
    memcpy(&w, b->s + b->next, 8);
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    b->buf |= w >> b->nb;
    unsigned k = (63 - b->nb) >> 3;
    b->next += k;
    b->nb += 8 * k;
  } else {
    while (b->nb <= 56) {
      uint64_t byte = b->next < b->slen ? b->s[b->next] : 0;
      b->buf |= byte << (56 - b->nb);
      b->next++;
      b->nb += 8;
    }
  }
}

static inline void bb_init(bitbuf_t *b, const uint8_t *s, size_t slen) {
  *b = (bitbuf_t){s, slen, 0, 0, 0};
  bb_refill(b);
}

static inline void bb_skip(bitbuf_t *b, unsigned n) { /* n <= nb, n < 64 */
  b->buf <<= n;
  b->nb -= n;
}

/* n (0..64) bits. */
static inline uint64_t bb_take(bitbuf_t *b, unsigned n) {
  uint64_t v = 0;
  while (n > 0) {
    if (b->nb < 56) bb_refill(b);
    unsigned t = n > 32 ? 32 : n;
    v = (v << t) | (b->buf >> (64 - t));
    bb_skip(b, t);
    n -= t;
  }
  return v;
}

static inline uint64_t bb_used(const bitbuf_t *b) { return (uint64_t)b->next * 8 - b->nb; }

/* Appends the iseq encoding of x[0..n) (n >= 1), the smallest of the models tried (grid
 * only when try_grid: it pays for timestamps, rarely for values). MD_ENOMEM on failure. */
int chunk_iseq_encode(chunk_buf_t *o, const int64_t *x, size_t n, bool try_grid);

/* Decodes an iseq of n values at p[*off..len) into out, advancing *off. */
bool chunk_iseq_decode(const uint8_t *p, size_t len, size_t *off, uint64_t *out, size_t n);

#endif
