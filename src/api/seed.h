/*
 * seed.h — the engine behind the seed REST endpoints (src/api/seed.c): series selectors,
 * the /metrics exposition of stored series (latest values and window aggregates), and the
 * trend computation of /metrics/trends. Private to the api module; exposed for the
 * benchmark (bench/bench_export.c), unit tests and the fuzz target, which must measure and
 * exercise exactly what the handlers run.
 *
 * Threading: every function is reentrant; a seed_selector_t belongs to one request.
 */
#ifndef METRICSD_API_SEED_H
#define METRICSD_API_SEED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

/* One selector: matchers ANDed. A list of selectors is ORed (match[] semantics). */
typedef struct seed_selector {
  tsdb_matcher_t *m;
  core_regex_t **re; /* compiled regex per matcher (NULL for = and !=) */
  size_t n, cap;
} seed_selector_t;

/* Parses a selector (`name`, `{a="b"}`, `name{a=~"x.*",b!="c"}`: the grammar of
 * api_parse_selector in params.c, Prometheus's) into out, strings allocated in a, regexes
 * compiled (release with seed_selector_release). MD_EINVAL with err for a bad selector. */
int seed_parse_selector(const char *s, size_t n, arena_t *a, seed_selector_t *out, char *err,
                        size_t errlen);
/* Appends one matcher (strings copied into a; a regex is compiled). */
int seed_selector_add(seed_selector_t *sel, arena_t *a, tsdb_match_type_t type, const char *name,
                      const char *value, char *err, size_t errlen);
void seed_selector_release(seed_selector_t *sel, size_t nsel);
/* Whether the label set matches any of the selectors (all when nsel = 0). `name`, when not
 * NULL, is tried as an alternative __name__ (a family name for its _bucket/_sum lines). */
bool seed_selector_matches(const seed_selector_t *sel, size_t nsel, const tsdb_label_t *l,
                           size_t nl, const char *alt_name);

typedef enum { SEED_FMT_PROMETHEUS = 0, SEED_FMT_OPENMETRICS = 1, SEED_FMT_JSON = 2 } seed_format_t;

enum {
  SEED_AGG_AVG = 1u << 0,
  SEED_AGG_SUM = 1u << 1,
  SEED_AGG_MIN = 1u << 2,
  SEED_AGG_MAX = 1u << 3,
  SEED_AGG_COUNT = 1u << 4,
  SEED_AGG_LAST = 1u << 5, /* not in the default set; aggregation.types may name it */
};
#define SEED_AGG_KINDS 6
/* "avg" → SEED_AGG_AVG ... "last" → SEED_AGG_LAST; 0 for an unknown name. */
unsigned seed_agg_parse(const char *name, size_t n);

typedef struct seed_export_options {
  int64_t now_ms;
  int64_t window_ms;   /* aggregates: the window; latest values: the lookback (5 min) */
  int64_t baseline_ms; /* aggregates: how far before the window to look for each counter's
                        * preceding sample, the base of its increase (0 = none) */
  unsigned aggs;       /* SEED_AGG_* bits (aggregated export) */
  seed_format_t format;
  json_t *types;       /* optional object metric name → "counter"/"gauge"/"histogram"/"summary" */
  json_t *skip_names;  /* optional object used as a set: metric names already exposed */
} seed_export_options_t;

/* Appends, per stored series matching the selectors, its window aggregates as gauges
 * <name>_<agg> (docs/analytics.md, "Aggregated export"): counters' _avg is the per-minute
 * rate, histograms and summaries (paired _sum/_count series) give the average observation.
 * Prometheus/OpenMetrics text without "# EOF", or a JSON array body (elements only, comma
 * separated, so callers can merge sources). *lines = samples written. */
int seed_export_aggregated(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel,
                           const seed_export_options_t *o, sb_t *out, size_t *lines, char *err,
                           size_t errlen);
/* Appends the latest sample (within o->window_ms) of every matching stored series whose
 * name is not in o->skip_names, grouped into families with HELP/TYPE (histograms and
 * summaries rebuilt from their _bucket/quantile/_sum/_count series). Same output
 * conventions as above. */
int seed_export_latest(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel,
                       const seed_export_options_t *o, sb_t *out, size_t *lines, char *err,
                       size_t errlen);

/* Copies the families of a text exposition (ours: the track registry's or the
 * self-metrics') whose samples match the selectors into out, dropping "# EOF" lines, and
 * records every family and sample name in names (an object used as a set; may be NULL).
 * With nsel = 0 everything is copied. Returns the number of sample lines copied. */
size_t seed_filter_exposition(const char *text, size_t n, const seed_selector_t *sel, size_t nsel,
                              sb_t *out, json_t *names);

/* /metrics/series cursors: a series' label-set key (name \x01 value \x02 ...) as unpadded
 * base64url. decode appends the bytes to out; -1 for a character outside the alphabet, a
 * NUL, or a length no encoding produces (n % 4 == 1), or when out ran out of memory. */
void seed_cursor_encode(sb_t *out, const char *key, size_t n);
int seed_cursor_decode(const char *s, size_t n, sb_t *out);

/* Metric type by name: the types map first, then the name's shape (…_total → counter,
 * …_bucket/_sum/_count of a known histogram or summary → that type), else "gauge". */
const char *seed_metric_type(const json_t *types, const char *name);

#endif
