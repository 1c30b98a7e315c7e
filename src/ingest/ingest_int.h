/*
 * Private to src/ingest: the series builder every parser ends in. A parser lexes a series
 * into an array of length-delimited labels (pointing into the input or a scratch arena);
 * ictx_series() validates them once, in one place (names, value length and UTF-8, labels
 * per series, extra labels), and opens the series in the batch; ictx_sample() enforces the
 * samples-per-request limit.
 */
#ifndef METRICSD_INGEST_INT_H
#define METRICSD_INGEST_INT_H

#include "ingest.h"

#define INGEST_HARD_MAX_LABELS 1024

typedef struct {
  const char *name;
  size_t nlen;
  const char *value;
  size_t vlen;
} ilabel_t;

typedef struct ictx {
  const ingest_opts_t *o;
  ingest_limits_t lim;
  tsdb_batch_t *b;
  ingest_result_t *res;
  ingest_result_t res_local; /* when the caller passed NULL */
  bool limit_hit;
  bool oom;
  /* Set by a parser whose lexer only yields valid names (line protocol sanitises them): the
   * metric name l[0].value and every label name l[i].name (i >= 1) are valid, so the checks
   * skip the per-character name scans. Lengths, values and duplicates are still checked. */
  bool names_valid;
  /* The request's series-ref cache session (o->refs when it is on, else NULL): see ictx_probe. */
  ingest_refs_t *refs;
} ictx_t;

/* ---- series-ref cache (refcache.c) ---------------------------------------------------------
 * A parser that groups a body's series by their raw text (line protocol tag set + field key,
 * remote_write label bytes, text "name{labels}") asks the cache, the first time a request
 * meets a series, whether that text already resolved to a storage series: then the series is
 * added by ref, skipping lexing, validation and the engine's label hashing. Keys are 128-bit
 * hashes of the raw text, seeded per cache partition (protocol, tenant, options that change
 * labels). {0, 0} is no key. */
typedef struct {
  uint64_t a, b;
} ikey_t;

enum {
  IREF_LABELS = 0, /* build the series from its labels (a miss, or a stale ref being resent) */
  IREF_REF,        /* *ref is the series: add it by ref */
  IREF_SKIP,       /* resend pass: this series was stored by the first pass; skip its samples */
};

/* The key of raw series text p[0..n) (c->refs must be set); ikey_more chains a further
 * piece (line protocol: tag set, then field key). */
ikey_t ikey_of(const ictx_t *c, const void *p, size_t n);
ikey_t ikey_more(ikey_t k, const void *p, size_t n);
/* The key in two steps: its first half (a well-mixed 64-bit hash of the text, which parsers
 * also use for their per-request grouping) and the key from that half. */
uint64_t ikey_a(const ictx_t *c, const void *p, size_t n);
ikey_t ikey_from_a(const ictx_t *c, uint64_t a, const void *p, size_t n);
static inline bool ikey_eq(ikey_t x, ikey_t y) {
  return x.a == y.a && x.b == y.b;
}
/* Looks key up (c->refs must be set): IREF_LABELS, IREF_REF (with *ref) or IREF_SKIP. */
int ictx_probe(ictx_t *c, ikey_t key, tsdb_series_ref_t *ref);
/* Opens a batch series by ref (ref != 0; l unused) or from labels that passed ictx_check,
 * and records key (may be {0,0}) as the series' cache key. Returns as ictx_series_checked. */
int ictx_series_keyed(ictx_t *c, const ilabel_t *l, size_t n, tsdb_series_ref_t ref, ikey_t key, char *err,
                      size_t errlen);

void ictx_init(ictx_t *c, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res);
/* Records a rejected line/item: counts it and keeps the first messages. */
void ictx_error(ictx_t *c, size_t where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Validates and opens a series. l[0] must be __name__ (metric name). Returns 0, MD_EINVAL
 * (err says why; nothing added) or MD_ENOMEM. */
int ictx_series(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen);
/* The checks of ictx_series, duplicate label names included, without adding anything (for
 * parsers that validate a series once and add it later). */
int ictx_check(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen);
/* ictx_series for labels that already passed ictx_check (no second validation). */
int ictx_series_checked(ictx_t *c, const ilabel_t *l, size_t n, char *err, size_t errlen);
/* Adds a sample to the open series; MD_ELIMIT past max_samples_per_request. */
int ictx_sample(ictx_t *c, int64_t ts, double v);
/* Final status for the parser's return. */
int ictx_status(const ictx_t *c);

/* Grows an array of elements of size sz to hold at least want (first: the initial capacity);
 * false when out of memory. */
bool ingest_grow(void **arr, size_t *cap, size_t want, size_t sz, size_t first);

/* A request's samples staged under their series (stage.c), for parsers that group what a
 * body repeats: group g is the g-th distinct series (numbered in order of first appearance),
 * checked with ictx_check when it was made. istage_emit adds one batch series per group, its
 * samples in arrival order. Zero-initialise; reset between requests (keeps the memory). */
typedef struct {
  uint32_t group;
  int64_t ts;
  double v;
} istage_sample_t;
typedef struct {
  istage_sample_t *s;
  size_t n, cap;
  size_t *count; /* per group */
  size_t ngroups, cap_count;
  size_t *order;
  size_t cap_order;
} istage_t;
/* Stages a sample; MD_ELIMIT past max_samples_per_request (sets c->limit_hit), MD_ENOMEM. */
int istage_add(istage_t *st, ictx_t *c, uint32_t group, int64_t ts, double v);
/* The labels of group g (as checked), *n of them, or (*ref != 0) the series' ref; *key is its
 * cache key ({0,0} for none). */
typedef const ilabel_t *(*istage_labels_fn)(void *ctx, size_t g, size_t *n, tsdb_series_ref_t *ref,
                                            ikey_t *key);
int istage_emit(istage_t *st, ictx_t *c, istage_labels_fn labels, void *ctx);
void istage_reset(istage_t *st);
void istage_free(istage_t *st);

/* Parses a decimal int64 ([+-]digits) exactly; -1 on syntax or overflow. */
int ingest_parse_int64(const char *s, size_t n, int64_t *out);

/* Appends v as Go's strconv.FormatFloat(v, 'g', -1, 64) does (text exposition). */
void ingest_format_double(sb_t *sb, double v);

#endif
