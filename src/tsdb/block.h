/*
 * block — immutable on-disk blocks (private to src/tsdb). A block holds every tenant's
 * samples for one time range [mint, maxt] (inclusive), in its own directory:
 * written to "<parent>/<name>.tmp", fsynced, renamed to "<parent>/<name>", read through mmap.
 * The format is documented in docs/storage-format.md.
 *
 * Ownership: blocks are reference-counted. The database holds one reference per loaded
 * block; each query holds one per block it reads. block_mark_deleted() makes the last
 * unref remove the directory (retention, compaction), so running queries never see a
 * block vanish under them.
 *
 * Threading: a block_t is immutable after block_open and may be read from any thread;
 * a block_iter_t belongs to one thread. block_ref/unref are atomic.
 */
#ifndef METRICSD_TSDB_BLOCK_H
#define METRICSD_TSDB_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsdb.h"

typedef struct block block_t;
typedef struct block_iter block_iter_t;

/* What a writer consumes: series in ascending (tenant, label set) order, each with its
 * samples ascending by ts, no duplicates. next() returns 1 with a series (arrays valid until
 * the next call), 0 at the end, negative on error. */
typedef struct block_source {
  int (*next)(void *ctx, const char **tenant, const tsdb_label_t **labels, size_t *nlabels,
              const int64_t **ts, const double **v, size_t *n);
  void *ctx;
} block_source_t;

/* Deleted time ranges of one series (tombstones), consulted when compacting. Fills up to
 * max [mint,maxt] pairs and returns how many (0 = nothing deleted). May be NULL. */
typedef struct block_tombstones {
  size_t (*intervals)(void *ctx, const char *tenant, const tsdb_label_t *labels, size_t nlabels,
                      int64_t (*out)[2], size_t max);
  void *ctx;
} block_tombstones_t;

/* Writes a new block from src into parent_dir. level: 0 for a head flush, higher for
 * compaction output. resolution_ms: 0 for raw samples, else a downsampling tier. The block's
 * directory name (unique, sortable by time) is written to name. */
int block_write(const char *parent_dir, int64_t mint, int64_t maxt, int level, int64_t resolution_ms,
                block_source_t *src, char *name, size_t name_len, char *err, size_t errlen);

/* Opens a block directory; verifies checksums of the metadata and index (chunk checksums
 * are verified as chunks are read). MD_ECORRUPT when it fails a check. */
int block_open(const char *path, block_t **out, char *err, size_t errlen);
void block_ref(block_t *b);
void block_unref(block_t *b);      /* the last unref closes (and deletes when marked) */
void block_mark_deleted(block_t *b);
/* True once a read of the block failed a check (MD_ECORRUPT): its data cannot be trusted and
 * the database moves it to quarantine/ at the next maintenance round. */
bool block_is_damaged(const block_t *b);

int64_t block_mint(const block_t *b);
int64_t block_maxt(const block_t *b);
int block_level(const block_t *b);
int64_t block_resolution(const block_t *b);
uint64_t block_bytes(const block_t *b);   /* bytes on disk */
uint64_t block_samples(const block_t *b);
uint64_t block_series(const block_t *b);
const char *block_path(const block_t *b);

/* Series of tenant matching all matchers with samples in [mint, maxt], in label-set order. */
int block_select(block_t *b, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint,
                 int64_t maxt, block_iter_t **out, char *err, size_t errlen);
int block_iter_next(block_iter_t *it); /* 1 positioned, 0 end, <0 error (corrupt chunk) */
const tsdb_label_t *block_iter_labels(block_iter_t *it, size_t *n);
/* Decodes the current series' samples in the select's [mint, maxt] into arrays owned by the
 * iterator, valid until the next call. For a rollup block, agg picks the aggregate. */
typedef enum { BLOCK_AGG_RAW = 0, BLOCK_AGG_MIN, BLOCK_AGG_MAX, BLOCK_AGG_SUM, BLOCK_AGG_COUNT,
               BLOCK_AGG_LAST, BLOCK_AGG_INCREASE } block_agg_t;
int block_iter_samples(block_iter_t *it, block_agg_t agg, const int64_t **ts, const double **v, size_t *n);
void block_iter_free(block_iter_t *it);

/* Calls cb for every label name (value == NULL) or every value of `name`, of tenant's
 * series, each once, in sorted order. Fast path for metadata queries without matchers. */
int block_label_names(block_t *b, const char *tenant, void (*cb)(void *ctx, const char *s), void *ctx);
int block_label_values(block_t *b, const char *tenant, const char *name,
                       void (*cb)(void *ctx, const char *s), void *ctx);
/* Calls cb once per tenant present in the block. */
int block_tenants(block_t *b, void (*cb)(void *ctx, const char *tenant), void *ctx);

/* Merges blocks (any order, possibly overlapping) into one new block in parent_dir,
 * dropping deleted intervals; samples at the same timestamp keep the newest block's value.
 * The inputs are not modified (the caller marks them deleted after it swaps them out). */
int block_compact(block_t *const *in, size_t n, const char *parent_dir, const block_tombstones_t *ts,
                  char *name, size_t name_len, char *err, size_t errlen);

/* Writes a rollup block of resolution_ms from a raw (or finer rollup) block: per series
 * and window, min, max, sum, count, last and counter-aware increase. */
int block_downsample(block_t *src, int64_t resolution_ms, const char *parent_dir, char *name,
                     size_t name_len, char *err, size_t errlen);

#endif
