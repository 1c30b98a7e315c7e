/*
 * chunk — sample encoding for tsdb (private to src/tsdb). Two faces:
 *
 *  1. Head chunks, appended one sample at a time (chunk_app_*): delta-of-delta timestamps
 *     and XOR-style values — or, for values with a short decimal form, delta-of-delta
 *     scaled integers — in a bit stream, small enough to keep one open chunk per active
 *     series in memory. A head chunk holds at most CHUNK_MAX_SAMPLES samples.
 *  2. Sealed encoding (chunk_seal / chunk_sealed_*): a whole array of samples at once, for
 *     blocks on disk, free to pick the most compact scheme per chunk (decimal-aware integer
 *     encoding of values written with limited precision, constant runs, regular intervals).
 *
 * Both decode through one iterator type. Every float64 bit pattern round-trips exactly
 * (NaN payloads incl. the stale marker, ±Inf, -0.0, subnormals). Decoders never read past
 * the given length and return an error for any malformed input (they face disk bytes).
 *
 * Threading: a chunk_app_t has one writer; readers must copy or be synchronised by the
 * caller (the head takes the series lock while it copies a chunk's bytes).
 */
#ifndef METRICSD_TSDB_CHUNK_H
#define METRICSD_TSDB_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#define CHUNK_MAX_SAMPLES 240

/* Appender for one head chunk. The encoded bytes live in buf (malloc'ed, grown by the
 * appender); nbits is the exact length of the bit stream. */
typedef struct chunk_app {
  uint8_t *buf;
  uint32_t cap;      /* bytes allocated */
  uint32_t nbits;    /* bits used */
  uint16_t count;    /* samples */
  uint8_t leading, trailing; /* XOR streams: window of the last value */
  uint8_t dec;       /* 1: decimal stream (values as scaled integers) */
  uint8_t dec_p;     /* decimal streams: the scale, 10^dec_p */
  int64_t last_ts;
  int64_t last_delta;
  uint64_t last_bits; /* last value's bits */
  int64_t dec_last, dec_delta; /* decimal streams: last integer and its delta */
} chunk_app_t;

/* Timestamp of the first sample (the appender holds count > 0). */
static inline int64_t chunk_app_first_ts(const chunk_app_t *a) {
  uint64_t t = 0;
  for (int i = 3; i < 11; i++) t = (t << 8) | a->buf[i];
  return (int64_t)t;
}

void chunk_app_init(chunk_app_t *a);
void chunk_app_free(chunk_app_t *a);
/* Appends (ts, v); ts must be > the last ts. Returns 0, or MD_ENOMEM, or MD_ELIMIT when the
 * chunk already holds CHUNK_MAX_SAMPLES. */
int chunk_app_append(chunk_app_t *a, int64_t ts, double v);
/* Shrinks buf to the bytes used (call when a chunk is full and becomes immutable). */
void chunk_app_trim(chunk_app_t *a);
/* Bytes of the encoded stream (ceil(nbits/8)). The stream is self-describing: its header
 * records the sample count, so a copy of these bytes decodes without the appender. */
size_t chunk_app_bytes(const chunk_app_t *a);

/* Encodes n samples (ts strictly ascending) in the most compact sealed form into a new
 * malloc'ed buffer (*out, *outlen). Returns 0 or MD_ENOMEM/MD_EINVAL. */
int chunk_seal(const int64_t *ts, const double *v, size_t n, uint8_t **out, size_t *outlen);

/* Decodes any chunk (head stream bytes or sealed) into caller arrays of capacity cap
 * (>= the chunk's count; CHUNK_MAX_SAMPLES suffices for head chunks, chunk_count tells).
 * Returns the number of samples, or MD_ECORRUPT. */
int chunk_count(const uint8_t *p, size_t len);
int chunk_decode(const uint8_t *p, size_t len, int64_t *ts, double *v, size_t cap);

#endif
