/*
 * tsdb — metricsd's embedded time-series database: the one write path and the one read path
 * every other module uses (DESIGN.md, "The flow").
 *
 *   write:  build a tsdb_batch_t (series as label sets or series refs + samples),
 *           tsdb_append() it for a tenant. When tsdb_append returns 0, the batch's accepted
 *           samples are in the WAL (written; fsynced too under fsync=always) and may be
 *           acknowledged. tsdb_append_refs() also returns each series' ref, which later
 *           batches may pass instead of the labels (the fast path: no label hashing).
 *   read:   tsdb_select() a tenant + label matchers + time range → a tsdb_query_t that
 *           iterates matching series in label order, each with its samples decoded.
 *
 * Series identity is tenant + sorted label set (including __name__). Label names and values
 * are validated at the boundary (ingest, API); the engine assumes valid UTF-8 but never
 * crashes on any bytes. Timestamps are Unix milliseconds; values float64 and every bit
 * pattern round-trips (NaN payloads including the stale marker, ±Inf, -0.0).
 *
 * Threading: a tsdb_t is shared by all threads. tsdb_append and tsdb_select may be called
 * concurrently from any number of threads; a tsdb_query_t belongs to one thread.
 */
#ifndef METRICSD_TSDB_H
#define METRICSD_TSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tsdb tsdb_t;
typedef struct tsdb_batch tsdb_batch_t;
typedef struct tsdb_query tsdb_query_t;

/* A label: NUL-terminated name and value. Arrays of labels are sorted by name, names unique. */
typedef struct tsdb_label {
  const char *name;
  const char *value;
} tsdb_label_t;

typedef struct tsdb_sample {
  int64_t ts; /* Unix milliseconds */
  double v;
} tsdb_sample_t;

/* The Prometheus staleness marker: a NaN with this exact bit pattern. */
#define TSDB_STALE_NAN_BITS 0x7ff0000000000002ULL
bool tsdb_is_stale_nan(double v);
double tsdb_stale_nan(void);

/* ---- options and lifecycle ---------------------------------------------------------- */

typedef enum { TSDB_FSYNC_INTERVAL = 0, TSDB_FSYNC_ALWAYS = 1 } tsdb_fsync_t;

typedef struct tsdb_options {
  int64_t retention_ms;          /* drop blocks older than this; 0 = keep forever (default 15 d) */
  uint64_t retention_bytes;      /* drop oldest blocks past this total; 0 = no size limit */
  int64_t block_span_ms;         /* head → block span (default 2 h) */
  int64_t ooo_window_ms;         /* out-of-order acceptance window (default 10 min) */
  tsdb_fsync_t fsync;            /* default interval */
  int64_t fsync_interval_ms;     /* default 1000 */
  size_t max_series_per_tenant;  /* 0 = unlimited; new series over it are rejected */
  bool background;               /* run head persistence/compaction/retention threads (default true) */
  /* Downsampling tiers (seed 003): 0 resolution disables a tier. */
  int64_t raw_retention_ms;      /* raw samples kept (default = retention_ms) */
  int64_t tier1_resolution_ms, tier1_retention_ms; /* default 5 min, 30 d */
  int64_t tier2_resolution_ms, tier2_retention_ms; /* default 1 h, 365 d */
} tsdb_options_t;

void tsdb_options_default(tsdb_options_t *opt);

/* Opens (creating if needed) the database in dir: replays the WAL, loads blocks, repairs or
 * quarantines damage (and logs what). Returns 0 or a negative MD_* code with err filled. */
int tsdb_open(const char *dir, const tsdb_options_t *opt, tsdb_t **out, char *err, size_t errlen);
/* Flushes the WAL, stops background threads, frees everything. NULL is a no-op. */
void tsdb_close(tsdb_t *db);

/* ---- batches (the write path) ------------------------------------------------------- */

tsdb_batch_t *tsdb_batch_new(void);
void tsdb_batch_free(tsdb_batch_t *b);
void tsdb_batch_reset(tsdb_batch_t *b); /* empty, keeping memory */

/* Starts a new series in the batch: labels are copied and sorted. Returns MD_EINVAL for a
 * duplicate label name or an empty name; the series is then not added. Labels with empty
 * values are dropped (Prometheus semantics). */
int tsdb_batch_series(tsdb_batch_t *b, const tsdb_label_t *labels, size_t n);
/* The same, building the label set piece by piece from length-delimited bytes (parsers). */
void tsdb_batch_series_begin(tsdb_batch_t *b);
int tsdb_batch_label(tsdb_batch_t *b, const char *name, size_t nlen, const char *value, size_t vlen);
int tsdb_batch_series_end(tsdb_batch_t *b);
/* A series ref names one head series of one tenant in one open tsdb_t; 0 is never a ref.
 * Refs are returned by tsdb_append_refs and are only meaningful to the tsdb_t and tenant
 * that returned them: a ref is *stale* once its series has been garbage-collected (no
 * samples left in the head, all persisted), and every ref of a closed tsdb_t is stale in
 * the next open of the same directory. A stale ref, a ref of another tenant or a ref never
 * returned is detected at append (O(1): a lookup in the ref table plus a tenant and an
 * instance check, never a wrong series) and that series is rejected with
 * TSDB_REJECT_STALE_REF; the caller then resends it with its labels (and caches the new
 * ref). Refs are not reused within one tsdb_t (they wrap only after 2^32 series creations). */
typedef uint64_t tsdb_series_ref_t;
/* Starts a new series in the batch by ref instead of labels (MD_EINVAL for ref 0). Such a
 * series has no labels in the batch: tsdb_batch_get returns nlabels = 0 for it, and
 * tsdb_batch_get_ref its ref (0 for a series given by labels). */
int tsdb_batch_series_ref(tsdb_batch_t *b, tsdb_series_ref_t ref);
tsdb_series_ref_t tsdb_batch_get_ref(const tsdb_batch_t *b, size_t i);
/* Adds a sample to the current (last started) series. MD_EINVAL when no series is open. */
int tsdb_batch_sample(tsdb_batch_t *b, int64_t ts, double v);

size_t tsdb_batch_series_count(const tsdb_batch_t *b);
size_t tsdb_batch_sample_count(const tsdb_batch_t *b);
/* Read access for the engine and tests: series i's labels and samples. */
void tsdb_batch_get(const tsdb_batch_t *b, size_t i, const tsdb_label_t **labels, size_t *nlabels,
                    const tsdb_sample_t **samples, size_t *nsamples);

/* Why a sample or series was rejected. */
typedef enum {
  TSDB_REJECT_NONE = 0,
  TSDB_REJECT_TOO_OLD,          /* before the out-of-order window / head minimum */
  TSDB_REJECT_DUPLICATE,        /* same timestamp, different value */
  TSDB_REJECT_SERIES_LIMIT,     /* new series over max_series_per_tenant */
  TSDB_REJECT_INVALID,          /* bad labels */
  TSDB_REJECT_STALE_REF,        /* series given by a stale or foreign ref: resend with labels */
} tsdb_reject_t;

#define TSDB_MAX_REPORTED_ERRORS 16
typedef struct tsdb_append_result {
  size_t samples_added;
  size_t samples_duplicate_ignored; /* same ts + same value: a no-op */
  size_t samples_rejected;
  size_t series_created;
  size_t series_rejected;   /* includes series_stale_refs */
  size_t series_stale_refs; /* series given by ref rejected as TSDB_REJECT_STALE_REF */
  size_t nerrors; /* at most TSDB_MAX_REPORTED_ERRORS reported below */
  struct {
    size_t series_index; /* index in the batch */
    tsdb_reject_t reason;
    int64_t ts;
    char message[160];
  } errors[TSDB_MAX_REPORTED_ERRORS];
} tsdb_append_result_t;

/* Appends the batch for tenant. Per-sample and per-series rejections are counted in res
 * (may be NULL) and do not fail the call. Returns 0 once every accepted sample is in the
 * WAL (fsynced under TSDB_FSYNC_ALWAYS); MD_ENOSPC / MD_EIO when the WAL cannot be written
 * (then nothing of the batch was accepted). */
int tsdb_append(tsdb_t *db, const char *tenant, const tsdb_batch_t *b, tsdb_append_result_t *res);
/* tsdb_append that also stores, in refs[i] (refs has tsdb_batch_series_count(b) entries),
 * the ref of batch series i: the series it resolved to or created, 0 when the series was
 * rejected (invalid, series limit, stale ref) or the call failed. Samples rejected one by
 * one (too old, duplicate) do not clear the ref. refs may be NULL (= tsdb_append).
 * Samples of stale-ref series count in res but not in tsdb_stats_t.samples_rejected: the
 * caller is expected to resend them. */
int tsdb_append_refs(tsdb_t *db, const char *tenant, const tsdb_batch_t *b, tsdb_append_result_t *res,
                     tsdb_series_ref_t *refs);

/* ---- select (the read path) ---------------------------------------------------------- */

typedef enum { TSDB_MATCH_EQ, TSDB_MATCH_NEQ, TSDB_MATCH_RE, TSDB_MATCH_NRE } tsdb_match_type_t;

typedef struct tsdb_matcher {
  tsdb_match_type_t type;
  const char *name;
  const char *value; /* for RE/NRE: the regex, anchored (Prometheus semantics) */
} tsdb_matcher_t;

/* Hints that let the engine choose a downsampling tier; zero-init means raw data. */
typedef struct tsdb_select_hints {
  int64_t step_ms;   /* query step; tiers with resolution <= step may be used */
  int func;          /* reserved */
} tsdb_select_hints_t;

/* Selects the tenant's series matching all matchers with at least one sample in
 * [mint, maxt]. A matcher that matches the empty string also matches series without that
 * label (Prometheus semantics). Returns MD_EINVAL for a bad regex (err says which). */
int tsdb_select(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint,
                int64_t maxt, const tsdb_select_hints_t *hints, tsdb_query_t **out, char *err,
                size_t errlen);
/* Moves to the next series, in label-set order. Returns 1 when positioned on a series, 0 at
 * the end, negative on error. */
int tsdb_query_next(tsdb_query_t *q);
/* Labels of the current series (sorted by name), valid until tsdb_query_free. */
const tsdb_label_t *tsdb_query_labels(tsdb_query_t *q, size_t *n);
/* Samples of the current series in [mint, maxt], ascending by ts, no duplicates. The
 * arrays are owned by q and valid until the next tsdb_query_next/free. Returns the count. */
size_t tsdb_query_samples(tsdb_query_t *q, const int64_t **ts, const double **v);
void tsdb_query_free(tsdb_query_t *q);

/* ---- metadata, cardinality, admin --------------------------------------------------- */

/* A list of strings owned by the list. */
typedef struct tsdb_strings {
  char **items;
  size_t n;
} tsdb_strings_t;
void tsdb_strings_free(tsdb_strings_t *s);

/* Sorted, unique label names / values of one name, over series matching the matchers (all
 * series when nm = 0) that have data in [mint, maxt]. */
int tsdb_label_names(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint,
                     int64_t maxt, tsdb_strings_t *out, char *err, size_t errlen);
int tsdb_label_values(tsdb_t *db, const char *tenant, const char *name, const tsdb_matcher_t *m,
                      size_t nm, int64_t mint, int64_t maxt, tsdb_strings_t *out, char *err,
                      size_t errlen);
/* Tenants that have at least one series. */
int tsdb_tenants(tsdb_t *db, tsdb_strings_t *out);

typedef struct tsdb_count {
  char *name; /* metric name, label name, or "name=value" */
  uint64_t count;
} tsdb_count_t;

/* Head cardinality for /api/v1/status/tsdb: top `limit` entries per list, largest first. */
typedef struct tsdb_cardinality {
  uint64_t num_series;
  uint64_t num_label_pairs;
  tsdb_count_t *series_by_metric; size_t n_series_by_metric;
  tsdb_count_t *values_by_label;  size_t n_values_by_label;   /* distinct values per name */
  tsdb_count_t *series_by_pair;   size_t n_series_by_pair;    /* "name=value" */
  tsdb_count_t *memory_by_label;  size_t n_memory_by_label;   /* bytes of values per name */
} tsdb_cardinality_t;
int tsdb_cardinality(tsdb_t *db, const char *tenant, size_t limit, tsdb_cardinality_t *out);
void tsdb_cardinality_free(tsdb_cardinality_t *c);

/* Deletes the samples of matching series in [mint, maxt] (tombstones, applied at
 * compaction; invisible to queries at once). Durable when it returns 0. */
int tsdb_delete(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint,
                int64_t maxt, char *err, size_t errlen);

/* Writes a consistent copy of the database into dir (hard links to blocks, a copy of the
 * head as a block): an online backup. Restore = start metricsd on that directory. */
int tsdb_snapshot(tsdb_t *db, const char *dir, char *err, size_t errlen);

/* Persists the whole head as blocks now (tests, benchmarks, shutdown). */
int tsdb_flush(tsdb_t *db);
/* Runs one round of compaction and retention now (normally on a background thread). */
int tsdb_compact(tsdb_t *db);

typedef struct tsdb_stats {
  uint64_t series;           /* active series in the head, all tenants */
  uint64_t head_samples;     /* samples held in the head */
  uint64_t head_chunks;
  uint64_t samples_appended; /* since start */
  uint64_t samples_rejected;
  uint64_t series_created;
  uint64_t wal_bytes;        /* size of WAL files on disk */
  uint64_t wal_fsyncs;
  uint64_t wal_corruptions;  /* damaged records cut off at replay */
  uint64_t blocks;
  uint64_t block_bytes;      /* size of blocks on disk */
  uint64_t block_samples;
  uint64_t compactions;
  uint64_t head_memory_bytes;/* approximate bytes held by the head */
  int64_t min_time, max_time;/* over all data; INT64_MAX/INT64_MIN when empty */
  int last_write_error;      /* 0, or MD_ENOSPC/MD_EIO of the last failed append */
} tsdb_stats_t;
void tsdb_get_stats(tsdb_t *db, tsdb_stats_t *out);

#endif
