/*
 * block_internal — what block.c (reader), block_writer.c, compact.c and downsample.c share
 * (private to the block layer; the head sees only block.h). Byte layouts are documented in
 * docs/storage-format.md; the constants here are the single source of truth for them.
 *
 * The writer takes series one at a time, already in (tenant, label set) order, each with one
 * sample array (raw blocks) or BLOCK_ROLLUP_PARTS parallel value arrays sharing timestamps
 * (rollup blocks). The reader exposes the same shape back (block_series_*), which is what
 * compaction and downsampling consume.
 *
 * Threading: a writer belongs to one thread. Reader accessors follow block.h (block_t shared
 * and immutable, cursors per thread).
 */
#ifndef METRICSD_TSDB_BLOCK_INTERNAL_H
#define METRICSD_TSDB_BLOCK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "block.h"

#define BLOCK_FORMAT_VERSION 1
#define BLOCK_INDEX_MAGIC 0x49424d44u  /* "MDBI" little-endian */
#define BLOCK_CHUNKS_MAGIC 0x43424d44u /* "MDBC" */
#define BLOCK_INDEX_HEADER 24          /* magic, version, codec, reserved, raw_len, stored_len */
#define BLOCK_CHUNKS_HEADER 8          /* magic, version, reserved */
#define BLOCK_FRAME_HEADER 13          /* codec u8, stored_len u32, raw_len u32, crc u32 */
#define BLOCK_CODEC_RAW 0
#define BLOCK_CODEC_ZSTD 1
/* A frame closes once its raw size passes this; a query for one series decompresses one
 * frame, so it bounds the read amplification of point lookups; zstd gains nothing more
 * from larger frames on bench_block data (docs/storage-format.md). */
#define BLOCK_FRAME_TARGET (32 * 1024)
#define BLOCK_FRAME_MAX (256u * 1024 * 1024) /* sanity bound for readers */
/* Chunking of one series: a new chunk starts after this many samples or this time span.
 * Every sealed chunk pays fixed costs (first values, bit widths), so fewer, longer chunks
 * are smaller: on the node-exporter bench one 3 h chunk per series instead of 2 h + 1 h
 * took 1.191 to 1.154 bytes/sample. Decoding 1024 samples costs a few microseconds, so
 * lazy per-chunk decoding loses little at this size. */
#define BLOCK_CHUNK_MAX_SAMPLES 1024
#define BLOCK_CHUNK_MAX_SPAN_MS (12 * 3600 * 1000LL)
/* Rollup parts, in this order, in every chunk of a rollup block. */
#define BLOCK_ROLLUP_PARTS 6
enum { BLOCK_PART_MIN, BLOCK_PART_MAX, BLOCK_PART_SUM, BLOCK_PART_COUNT, BLOCK_PART_LAST,
       BLOCK_PART_INCREASE };

/* ---- byte helpers (little-endian fixed width, LEB128 varints) ---------------------- */

static inline void block_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void block_put_u64(uint8_t *p, uint64_t v) {
  block_put_u32(p, (uint32_t)v);
  block_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t block_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t block_get_u64(const uint8_t *p) {
  return (uint64_t)block_get_u32(p) | (uint64_t)block_get_u32(p + 4) << 32;
}
static inline uint64_t block_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t block_unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* A bounds-checked reader over a byte range; any overrun sets bad and yields zeros. */
typedef struct {
  const uint8_t *p, *end;
  int bad;
} block_rd_t;

static inline uint64_t block_rd_uvarint(block_rd_t *r) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) {
      r->bad = 1;
      return 0;
    }
    uint8_t b = *r->p++;
    if (shift == 63 && b > 1) {
      r->bad = 1;
      return 0;
    }
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  r->bad = 1;
  return 0;
}
static inline int64_t block_rd_varint(block_rd_t *r) { return block_unzigzag(block_rd_uvarint(r)); }

/* ---- writer ------------------------------------------------------------------------- */

typedef struct block_writer block_writer_t;

/* Starts a block in "<parent>/<name>.tmp". parts: 1 for raw, BLOCK_ROLLUP_PARTS for rollups
 * (then resolution_ms > 0). seq orders blocks by data freshness for compaction (newest wins);
 * 0 means "now". */
int block_writer_new(const char *parent_dir, int64_t mint, int64_t maxt, int level,
                     int64_t resolution_ms, uint64_t seq, block_writer_t **out, char *err, size_t errlen);
/* Adds one series. Series must come in strictly ascending (tenant, labels) order; ts strictly
 * ascending and inside [mint, maxt]; v[0..parts-1] are parallel value arrays. n == 0 is a
 * no-op. MD_EINVAL for out-of-order input, MD_EIO/MD_ENOSPC/MD_ENOMEM otherwise. */
int block_writer_add(block_writer_t *w, const char *tenant, const tsdb_label_t *labels, size_t nlabels,
                     const int64_t *ts, const double *const *v, size_t n, char *err, size_t errlen);
/* Writes index and meta, fsyncs, renames into place. name receives the directory name.
 * Frees the writer whatever the outcome (a failed finish removes the temporary directory). */
int block_writer_finish(block_writer_t *w, char *name, size_t name_len, char *err, size_t errlen);
/* Removes the temporary directory and frees everything (also after a failed finish). */
void block_writer_abort(block_writer_t *w);

/* ---- reader accessors for compaction and downsampling ------------------------------ */

uint64_t block_seq(const block_t *b);
size_t block_tenant_count(const block_t *b);
const char *block_tenant_name(const block_t *b, size_t t);
size_t block_tenant_series(const block_t *b, size_t t);
/* Labels of series s of tenant t: pointers into the block, valid while it is referenced.
 * lab must hold BLOCK_MAX_LABELS entries. Returns the count or MD_ECORRUPT. */
#define BLOCK_MAX_LABELS 256
int block_series_labels(const block_t *b, size_t t, size_t s, tsdb_label_t *lab);
/* Decodes all samples of series s (every part) into malloc'ed arrays: *ts and v[0..parts-1]
 * (caller frees each). Returns the count or a negative MD_* code. */
int block_series_read(const block_t *b, size_t t, size_t s, int64_t **ts, double **v);
int block_parts(const block_t *b);

/* Prometheus label-set order: name, then value, pair by pair; a prefix sorts first. */
int block_labels_cmp(const tsdb_label_t *a, size_t na, const tsdb_label_t *b, size_t nb);

#endif
