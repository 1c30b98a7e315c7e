/*
 * metrics — metricsd's own instrumentation: a registry of counters, gauges and histograms
 * with label sets, exposed in Prometheus text 0.0.4 / OpenMetrics and iterable as samples
 * (server.c appends them to the tsdb every 15 s, as a scrape of itself would).
 *
 * Model: a *family* is a metric name + type + help + bucket layout; a *child* is one label
 * set of a family. metrics_counter()/metrics_gauge()/metrics_histogram() get-or-create the
 * child and return a handle that stays valid until metrics_registry_free(). Handles are the
 * cheap path: updates are lock-free atomics. Get-or-create takes the registry mutex and a
 * hash lookup, so cache the handle on hot paths (or accept one lookup per request).
 *
 * Labels are given as a NULL-terminated list of name, value, name, value, ..., NULL
 * (order does not matter; they are sorted). Names and help must be valid Prometheus names;
 * a name reused with another type returns NULL (a programming error, logged once).
 *
 * Collectors are callbacks run before every exposition / foreach, to refresh gauges that
 * mirror outside state (process RSS, tsdb stats).
 *
 * Threading: everything is thread-safe. Collector callbacks run with no registry lock held
 * (they may call metrics_gauge() etc.), serialised among themselves.
 */
#ifndef METRICSD_CORE_METRICS_H
#define METRICSD_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct metrics_registry metrics_registry_t;
typedef struct metrics_counter metrics_counter_t;
typedef struct metrics_gauge metrics_gauge_t;
typedef struct metrics_histogram metrics_histogram_t;

typedef enum { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_type_t;
typedef enum { METRICS_FMT_PROMETHEUS = 0, METRICS_FMT_OPENMETRICS = 1 } metrics_format_t;

metrics_registry_t *metrics_registry_new(void);
void metrics_registry_free(metrics_registry_t *r); /* NULL is a no-op */

/* Get-or-create a child. The variadic part is label name/value pairs ended by NULL.
 * Returns NULL on OOM, invalid names, or a type clash with an existing family. */
metrics_counter_t *metrics_counter(metrics_registry_t *r, const char *name, const char *help, ...)
    __attribute__((sentinel));
metrics_gauge_t *metrics_gauge(metrics_registry_t *r, const char *name, const char *help, ...)
    __attribute__((sentinel));
/* buckets: ascending upper bounds without +Inf (added implicitly); NULL/0 = the default
 * Prometheus buckets .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. The first creation of a family
 * fixes its buckets. */
metrics_histogram_t *metrics_histogram(metrics_registry_t *r, const char *name, const char *help,
                                       const double *buckets, size_t nbuckets, ...)
    __attribute__((sentinel));

/* The same with labels as an array of 2*npairs strings (name0, value0, name1, value1...). */
metrics_counter_t *metrics_counter_v(metrics_registry_t *r, const char *name, const char *help,
                                     const char *const *kv, size_t npairs);
metrics_gauge_t *metrics_gauge_v(metrics_registry_t *r, const char *name, const char *help,
                                 const char *const *kv, size_t npairs);
metrics_histogram_t *metrics_histogram_v(metrics_registry_t *r, const char *name, const char *help,
                                         const double *buckets, size_t nbuckets,
                                         const char *const *kv, size_t npairs);

/* Updates; every function accepts NULL (a failed get-or-create) as a no-op. Counter adds
 * of negative or NaN values are ignored (counters only go up). */
void metrics_counter_add(metrics_counter_t *c, double v);
void metrics_counter_inc(metrics_counter_t *c);
double metrics_counter_get(const metrics_counter_t *c);
/* Raises the counter to total, a count kept elsewhere (storage stats): adds the growth. */
void metrics_counter_raise_to(metrics_counter_t *c, double total);
void metrics_gauge_set(metrics_gauge_t *g, double v);
void metrics_gauge_add(metrics_gauge_t *g, double v);
double metrics_gauge_get(const metrics_gauge_t *g);
void metrics_histogram_observe(metrics_histogram_t *h, double v);
uint64_t metrics_histogram_count(const metrics_histogram_t *h);
double metrics_histogram_sum(const metrics_histogram_t *h);

/* Sum of the values of every child of family `name` (counters and gauges; for histograms
 * the observation count). 0 when the family does not exist. For /metrics/stats. */
double metrics_family_sum(metrics_registry_t *r, const char *name);

/* Registers a callback run before each exposition/foreach (see top comment). */
typedef void (*metrics_collector_fn)(metrics_registry_t *r, void *ctx);
int metrics_add_collector(metrics_registry_t *r, metrics_collector_fn fn, void *ctx);

/* Appends the whole registry, families sorted by name, with # HELP and # TYPE lines, in the
 * given format. Does not append OpenMetrics' "# EOF" (callers combine several sources).
 * Returns 0 or MD_ENOMEM. */
int metrics_expose(metrics_registry_t *r, sb_t *out, metrics_format_t fmt);

/* Calls cb for every sample the exposition would contain: counters and gauges as is,
 * histograms as name_bucket{le=...}, name_sum, name_count. `labels` is 2*npairs strings
 * (name, value, ...) sorted by name, valid only during the call. */
typedef void (*metrics_sample_fn)(void *ctx, const char *name, const char *const *labels,
                                  size_t npairs, double value);
void metrics_foreach(metrics_registry_t *r, metrics_sample_fn cb, void *ctx);

/* Adds process_* gauges/counters (CPU seconds, RSS, virtual memory, open and max FDs,
 * threads, start time) refreshed from /proc at each exposition. */
int metrics_register_process(metrics_registry_t *r);

#endif
