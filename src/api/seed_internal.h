/*
 * seed_internal.h — helpers shared by the seed handlers (seed.c) and their engine
 * (seed_export.c). Not for other modules.
 */
#ifndef METRICSD_API_SEED_INTERNAL_H
#define METRICSD_API_SEED_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/seed.h"
#include "core/core.h"
#include "tsdb/tsdb.h"

/* Called once per selected series with its samples in the scanned range. Non-zero stops. */
typedef int (*seed_series_fn)(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                              const double *v, size_t ns);
/* Runs fn over every series matching any selector (each once), in storage order per
 * selector; nsel = 0 selects every series. */
int seed_scan(tsdb_t *db, const char *tenant, const seed_selector_t *sel, size_t nsel, int64_t mint,
              int64_t maxt, seed_series_fn fn, void *ctx, char *err, size_t errlen);

const char *seed_label_value(const tsdb_label_t *l, size_t nl, const char *name);
bool seed_ends_with(const char *s, size_t n, const char *suffix);
bool seed_name_start(char c, bool metric);
bool seed_name_char(char c, bool metric);
/* Counters and the cumulative parts of histograms and summaries. */
bool seed_counter_like(const json_t *types, const char *name);

/* JSON writers: labels as an object (without __name__ and the two skipped names), numbers
 * (non-finite → null), RFC 3339 time strings. */
void seed_json_labels(sb_t *sb, const tsdb_label_t *l, size_t nl, const char *skip1, const char *skip2);
void seed_json_num(sb_t *sb, double v);
void seed_json_time(sb_t *sb, int64_t ms);

#endif
