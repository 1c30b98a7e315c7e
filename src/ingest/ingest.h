/*
 * ingest — every push protocol metricsd understands, turned into a tsdb_batch_t, plus the
 * track registry behind the seed's JSON track API (POST /metrics/track).
 *
 * Parsers know nothing of HTTP: they take bytes (already decompressed, except the snappy
 * block that is part of remote_write itself), options (limits, default timestamp, extra
 * labels) and fill a batch the caller then hands to tsdb_append. Every parser:
 *   - validates names (Prometheus syntax), label value length and UTF-8, labels per series,
 *     samples per request;
 *   - skips a bad line/item, keeps going, and reports it in ingest_result_t with its line
 *     number or item index; the batch then holds the good ones (partial write, as InfluxDB
 *     and Prometheus's remote-write receiver do). A request the protocol cannot frame at all
 *     (bad snappy, bad protobuf, bad JSON document) adds nothing;
 *   - never reads outside [p, p+n) and never crashes on any bytes.
 *
 * Return codes of the parsers: 0 all good; MD_EINVAL some or all items were bad (batch holds
 * the good ones, res says which); MD_ELIMIT samples per request exceeded (the batch must be
 * dropped: HTTP 413); MD_ENOMEM.
 *
 * Threading: parsers are reentrant. An ingest_track_t is shared by all threads (one mutex).
 */
#ifndef METRICSD_INGEST_H
#define METRICSD_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

/* ---- limits and options --------------------------------------------------------------- */

typedef struct ingest_limits {
  size_t max_label_name_len;      /* default 256 bytes (metric names included) */
  size_t max_label_value_len;     /* default 4096 bytes */
  size_t max_labels_per_series;   /* default 64, __name__ included; hard cap 1024 */
  size_t max_samples_per_request; /* default 10,000,000 */
} ingest_limits_t;

void ingest_limits_default(ingest_limits_t *l);

typedef enum {
  INGEST_PREC_NS = 0, /* InfluxDB default */
  INGEST_PREC_US,
  INGEST_PREC_MS,
  INGEST_PREC_S,
  INGEST_PREC_M,
  INGEST_PREC_H,
} ingest_precision_t;

/* Parses an InfluxDB precision parameter ("ns","n","u","us","µs","ms","s","m","h"). */
int ingest_precision_parse(const char *s, size_t n, ingest_precision_t *out);

typedef struct ingest_refs ingest_refs_t; /* a request's series-ref cache session (ingest_push) */

typedef struct ingest_opts {
  const ingest_limits_t *limits; /* NULL = defaults */
  int64_t default_ts;            /* ms, for samples without a timestamp (usually now) */
  /* Added to every series, replacing a label of the same name (VictoriaMetrics extra_label).
   * Names must be valid label names. */
  const tsdb_label_t *extra_labels;
  size_t n_extra_labels;
  bool openmetrics;             /* text: OpenMetrics (seconds timestamps, # EOF) */
  ingest_precision_t precision; /* line protocol */
  const char *influx_db;        /* line protocol: value of label "db" (NULL = none) */
  ingest_refs_t *refs;          /* set by ingest_push only (NULL: every series by labels) */
} ingest_opts_t;

#define INGEST_MAX_REPORTED_ERRORS 10

typedef struct ingest_result {
  size_t lines;    /* lines / items / series seen */
  size_t samples;  /* samples put into the batch */
  size_t series;   /* series put into the batch */
  size_t rejected; /* lines / items / series rejected */
  size_t skipped;  /* valid but not stored: strings, metadata, exemplars, native histograms */
  size_t metadata; /* HELP/TYPE/UNIT lines, remote_write metadata */
  size_t nerrors;  /* errors below (first INGEST_MAX_REPORTED_ERRORS) */
  struct {
    size_t where; /* 1-based line number, or 0-based item index */
    char message[200];
  } errors[INGEST_MAX_REPORTED_ERRORS];
} ingest_result_t;

/* Renders the result's errors into one message ("line 3: ...; line 9: ... (12 errors)"). */
void ingest_result_message(const ingest_result_t *r, const char *what, sb_t *out);

/* ---- validation ------------------------------------------------------------------------- */

bool ingest_valid_metric_name(const char *s, size_t n); /* [a-zA-Z_:][a-zA-Z0-9_:]* */
bool ingest_valid_label_name(const char *s, size_t n);  /* [a-zA-Z_][a-zA-Z0-9_]* */
bool ingest_valid_utf8(const char *s, size_t n);
/* Replaces every byte not allowed in a metric (or label) name with '_' into out (size >= n+1,
 * one more for a leading '_' when s starts with a digit). Returns the length written. */
size_t ingest_sanitize_name(const char *s, size_t n, bool metric, char *out);

/* Parses a float the way Prometheus does (decimal, exponent, NaN, ±Inf; no hex). */
int ingest_parse_double(const char *s, size_t n, double *out);

/* ---- parsers ----------------------------------------------------------------------------- */

/* Prometheus text exposition 0.0.4 (opts->openmetrics false) or OpenMetrics 1.0. */
int ingest_parse_prometheus(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                            ingest_result_t *res);
/* True when a text body is OpenMetrics: it ends with a "# EOF" line. */
bool ingest_text_is_openmetrics(const char *p, size_t n);

/* InfluxDB line protocol. Metric name: measurement_field, or measurement when the field is
 * "value"; names are sanitised to Prometheus syntax; tags become labels; string fields are
 * skipped and counted; booleans become 0/1. */
int ingest_parse_influx(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                        ingest_result_t *res);

/* Prometheus remote_write 1.0: snappy block-compressed protobuf WriteRequest. Metadata,
 * exemplars and native histograms are skipped and counted. */
int ingest_parse_remote_write(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                              ingest_result_t *res);
/* The same on an already decompressed WriteRequest. */
int ingest_parse_remote_write_pb(const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                                 ingest_result_t *res);

/* JSON lines: {"metric":{"__name__":"x",...},"values":[...],"timestamps":[...]} per line.
 * Values are numbers or the strings "NaN", "+Inf", "-Inf"; timestamps are Unix ms. */
int ingest_parse_jsonl(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                       ingest_result_t *res);
/* Writes every series of q (until its end) as JSON lines in the same shape. Staleness
 * markers are left out. Returns 0 or the query's negative error. */
int ingest_export_jsonl(tsdb_query_t *q, sb_t *out);
/* Writes one series as a JSON line (exporter building block, also used by tests). */
void ingest_export_jsonl_series(const tsdb_label_t *l, size_t nl, const int64_t *ts, const double *v,
                                size_t ns, sb_t *out);

/* OpenTelemetry OTLP/HTTP metrics, ExportMetricsServiceRequest as protobuf or JSON.
 * Mapping (docs/api-ingest.md): names sanitised ('.' → '_'), monotonic sums get "_total",
 * histograms become _bucket{le}/_sum/_count, summaries {quantile}/_sum/_count; resource
 * attribute service.name (with service.namespace "ns/name") → job, service.instance.id →
 * instance; data point attributes → labels. Exponential histograms are skipped and counted. */
int ingest_parse_otlp_pb(const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                         ingest_result_t *res);
int ingest_parse_otlp_json(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                           ingest_result_t *res);

/* ---- parse + append, through the series-ref cache ---------------------------------------
 *
 * Most pushes repeat the series of the previous one (every scrape, every Telegraf flush).
 * The cache remembers, across requests, which storage series (tsdb_series_ref_t) a series'
 * raw text resolved to: line protocol measurement+tags and field key, remote_write's label
 * bytes, the text format's "name{labels}". A known series is then added to the batch by
 * ref, skipping its lexing, validation, label copies and the engine's label hashing (about
 * a third of the CPU of a push). Keys are 128-bit hashes of the raw text in a partition per
 * (protocol, tenant, options that change labels: extra_label, db, OpenMetrics), so the
 * same text in two tenants never shares an entry. Bounded: two generations of up to
 * max_series/2 entries each (~48 bytes per entry); the older generation is dropped when the
 * newer one fills. A ref that went stale (its series was garbage-collected from the head)
 * is detected by the engine; ingest_push then resends exactly those series with their
 * labels and caches the new refs. Thread-safe (sharded, one mutex per shard). */
typedef struct ingest_refcache ingest_refcache_t;

/* NULL when out of memory; max_series 0 = 4,000,000. */
ingest_refcache_t *ingest_refcache_new(size_t max_series);
void ingest_refcache_free(ingest_refcache_t *c);
/* Forgets everything (a reload: limits change what validation accepts). */
void ingest_refcache_clear(ingest_refcache_t *c);
typedef struct {
  uint64_t hits, misses, stale; /* since start: lookups that found a ref / did not / stale refs */
  size_t entries;               /* now, both generations */
  size_t bytes;                 /* table memory now */
} ingest_refcache_stats_t;
void ingest_refcache_stats(ingest_refcache_t *c, ingest_refcache_stats_t *out);

typedef int (*ingest_parse_fn)(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                               ingest_result_t *res);

typedef struct ingest_push {
  tsdb_t *db;
  const char *tenant;
  ingest_refcache_t *cache; /* NULL: no cache */
  const char *protocol;     /* names the cache partition ("influx", "remote_write", ...) */
  ingest_parse_fn parse;
  const char *body;
  size_t n;
  const ingest_opts_t *opts;
  tsdb_batch_t *batch; /* empty; holds the request's (first) batch afterwards */
} ingest_push_t;

/* Parses the body into p->batch and appends it for p->tenant. Returns the parser's code; on
 * MD_ENOMEM and MD_ELIMIT nothing was appended. *arc is tsdb_append's code (0 when nothing
 * was appended), *ar its result with stale refs resent and merged: series_stale_refs is 0,
 * and error series indexes refer to p->batch. res is the parser's result. */
int ingest_push(const ingest_push_t *p, ingest_result_t *res, tsdb_append_result_t *ar, int *arc);

/* ---- StatsD ------------------------------------------------------------------------------ */

typedef enum {
  INGEST_STATSD_COUNTER, /* c */
  INGEST_STATSD_GAUGE,   /* g (with sign: relative change) */
  INGEST_STATSD_TIMER,   /* ms, h, d: observed into a histogram (ms → seconds) */
  INGEST_STATSD_SET,     /* s: counted as unique values */
} ingest_statsd_type_t;

typedef struct ingest_statsd_event {
  const char *name;
  size_t nlen; /* raw, unsanitised */
  double value;
  bool relative; /* gauge "+3" / "-3" */
  const char *set_member;
  size_t set_len;
  ingest_statsd_type_t type;
  double sample_rate; /* 1 unless @rate */
  const char *tags;
  size_t tags_len; /* DogStatsD "k:v,k2:v2" (raw) or NULL */
} ingest_statsd_event_t;

/* Parses a StatsD datagram (one or more '\n'-separated lines) calling cb per good line; bad
 * lines are reported in res. Returns 0 or MD_EINVAL when some line was bad. */
int ingest_parse_statsd(const char *p, size_t n, int (*cb)(void *ctx, const ingest_statsd_event_t *e),
                        void *ctx, ingest_result_t *res);

/* ---- track registry (seed 004: POST /metrics/track) ---------------------------------------- */

typedef struct ingest_track ingest_track_t;

typedef struct ingest_track_buckets {
  const char *metric; /* metric name these buckets apply to */
  const double *bounds;
  size_t n;
} ingest_track_buckets_t;

typedef struct ingest_track_config {
  const double *default_buckets;
  size_t n_default_buckets; /* NULL = .005 … 10 */
  const ingest_track_buckets_t *metric_buckets;
  size_t n_metric_buckets;
  const double *quantiles;
  size_t n_quantiles;              /* NULL = 0.5, 0.9, 0.99 */
  int64_t summary_window_ms;       /* default 600000 (10 min) */
  size_t summary_max_observations; /* per series, default 4096 */
  size_t max_series;               /* all tenants; 0 = 1,000,000 */
  const ingest_limits_t *limits;   /* NULL = defaults */
} ingest_track_config_t;

typedef enum {
  INGEST_TRACK_COUNTER = 1,
  INGEST_TRACK_GAUGE,
  INGEST_TRACK_HISTOGRAM,
  INGEST_TRACK_SUMMARY,
} ingest_track_type_t;

/* Copies what it needs from cfg (may be NULL). */
int ingest_track_new(const ingest_track_config_t *cfg, ingest_track_t **out, char *err, size_t errlen);
void ingest_track_free(ingest_track_t *reg);

/* Records one event. labels: name/value pairs (not necessarily sorted); service, when
 * non-empty, becomes label "service" unless labels already has one (the seed's example
 * keeps labels.service). Errors: MD_EINVAL (bad name/labels, negative counter increment,
 * name already used with another type), MD_ELIMIT (max_series), with err filled. */
int ingest_track_observe(ingest_track_t *reg, const char *tenant, const char *name, size_t nlen,
                         ingest_track_type_t type, const tsdb_label_t *labels, size_t nlabels,
                         const char *service, double value, int64_t now_ms, char *err, size_t errlen);

/* The JSON track API: body is one event object (batch false) or an array of them. The
 * event's tenant_id wins over default_tenant when allow_body_tenant is true. Writes the seed's
 * response JSON into out and returns: 0 success (batch: at least one item stored or the
 * batch was empty), MD_EINVAL (single event bad / batch not an array / every item bad),
 * MD_ELIMIT (series limit). *nok and *nfail count batch items (may be NULL). */
int ingest_track_json(ingest_track_t *reg, const char *body, size_t n, bool batch, const char *default_tenant,
                      bool allow_body_tenant, int64_t now_ms, sb_t *out, size_t *nok, size_t *nfail);

typedef enum {
  INGEST_EXPOSE_PROMETHEUS = 0,
  INGEST_EXPOSE_OPENMETRICS = 1,
  INGEST_EXPOSE_JSON = 2
} ingest_expose_format_t;

/* Appends the tenant's tracked state (tenant NULL = every tenant, with a "tenant_id" label
 * added when there are several) as text exposition with HELP/TYPE (or OpenMetrics, or a
 * JSON array of {name,type,labels,value}) — what GET /metrics serves. */
int ingest_track_expose(ingest_track_t *reg, const char *tenant, sb_t *out, ingest_expose_format_t format);

/* Builds one batch per tenant holding the current state at ts (counters, gauges, histogram
 * buckets/sum/count, summary quantiles/sum/count) and calls emit(ctx, tenant, batch) — the
 * caller appends it, as a scrape of the registry would. Stops at the first emit error. */
int ingest_track_collect(ingest_track_t *reg, int64_t ts,
                         int (*emit)(void *ctx, const char *tenant, const tsdb_batch_t *b), void *ctx);

size_t ingest_track_series_count(ingest_track_t *reg);

#endif
