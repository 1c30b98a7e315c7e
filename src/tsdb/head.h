/*
 * head — the in-memory part of one series (private to src/tsdb): an open chunk appender,
 * a list of sealed (immutable, compact) chunks, and a small sorted out-of-order buffer.
 *
 * Invariants: sealed chunks and the open chunk form one strictly ascending "in-order
 * stream"; max_ts is its last timestamp. Out-of-order samples (ts < max_ts, within the
 * window) go to the OOO buffer, never duplicating a timestamp of the stream; readers merge.
 *
 * Threading: every function here requires the caller to hold the series' stripe lock
 * (head_stripe); series_t fields are private to that lock except the idx header, which is
 * immutable after creation.
 */
#ifndef METRICSD_TSDB_HEAD_H
#define METRICSD_TSDB_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "index.h"

typedef struct ooo_buf {
  uint32_t n, cap;
  tsdb_sample_t s[]; /* ascending ts */
} ooo_buf_t;

/* Sealed chunks of a series live back to back in one exact-size buffer, each behind a
 * small prefix: uvarint length, zigzag varint (mint - previous chunk's maxt, 0 for the
 * first), uvarint (maxt - mint). One allocation instead of one per chunk plus an array. */
typedef struct series {
  idx_series_t id; /* must be first: the index sees series through it */
  chunk_app_t app;
  uint8_t *sealed;
  uint32_t sealed_len;
  uint16_t nsealed;
  ooo_buf_t *ooo;
  int64_t min_ts, max_ts; /* over everything held; max_ts = last in-order ts; INT64_MAX/MIN if empty */
} series_t;

/* Iterates the sealed chunks: start with off = 0 and prev_maxt = 0; returns false at the end. */
typedef struct sealed_it {
  uint32_t off;
  int64_t prev_maxt;
  const uint8_t *p;
  size_t len;
  int64_t mint, maxt;
} sealed_it_t;
bool sealed_next(const series_t *s, sealed_it_t *it);

/* A growable pair of sample arrays. */
typedef struct svec {
  int64_t *ts;
  double *v;
  size_t n, cap;
} svec_t;
int svec_reserve(svec_t *s, size_t extra);
int svec_push(svec_t *s, int64_t ts, double v);
void svec_free(svec_t *s);

/* Creates a series with labels copied (2*n symbol ids) into the same allocation. */
series_t *series_new(uint32_t ref, uint16_t tenant, lhash_t hash, const uint32_t *labels, size_t n);
void series_free(series_t *s);

enum { HEAD_ADDED = 0, HEAD_SAME = 1, HEAD_TOO_OLD = 2, HEAD_DUPLICATE = 3 };
/* Appends one sample. min_valid: older samples are TOO_OLD (already persisted). ooo_window:
 * how far behind max_ts a sample may be; < 0 = unlimited (WAL replay). Returns a HEAD_*
 * outcome or MD_ENOMEM. */
int series_append(series_t *s, int64_t ts, double v, int64_t min_valid, int64_t ooo_window);
/* Appends the samples in [mint, maxt] to out, ascending, unique. Returns 0 / MD_ENOMEM /
 * MD_ECORRUPT. */
int series_read(const series_t *s, int64_t mint, int64_t maxt, svec_t *out);
/* Drops whole chunks and OOO samples that end at or before t (data persisted to a block).
 * A chunk straddling t is kept; readers dedup against blocks. */
void series_truncate(series_t *s, int64_t t);
bool series_empty(const series_t *s);
size_t series_samples(const series_t *s);
size_t series_chunks(const series_t *s);
size_t series_bytes(const series_t *s);
/* Seals the open chunk now (e.g. before a checkpoint), so every byte is immutable. */
int series_seal(series_t *s);

/* Samples per head chunk before it is sealed: smaller keeps less data in the (bigger)
 * open-chunk encoding, larger seals less often. */
#define HEAD_SEAL_SAMPLES 64

#endif
