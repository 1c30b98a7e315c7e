/*
 * bench_export — seed 003's "aggregation processing < 5 s": the aggregated export of GET
 * /metrics?aggregated=true over 100 k series, measured through the functions the handler
 * runs (seed_export_aggregated / seed_export_latest in src/api/seed.c) on a real tsdb.
 *
 * Data: N series (default 100,000; argv[1]) in 100 metric names, half counters (_total) and
 * half gauges, each with 40 samples at 15 s spanning the last 10 minutes: 20 in the default
 * 5-minute aggregation window and 20 in the 5 minutes before it, where the handler looks
 * for each counter's base sample (baseline_ms). Appended through tsdb_append in batches.
 *
 * Then the head is flushed to blocks and the database closed and reopened (a restart), and
 * the aggregated export is run again from the blocks: it must be byte-identical to the
 * first one (window aggregates come from storage, not from process memory).
 *
 * Usage: bench_export [series] [data-dir]   (data-dir default: a fresh temp directory)
 * Prints one line per phase with the wall time and the process CPU time (user + sys; the
 * figure to quote on a shared, loaded machine), and the output size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/seed.h"
#include "core/core.h"
#include "tsdb/tsdb.h"

static double secs_since(int64_t t0) { return (double)(md_mono_ns() - t0) / 1e9; }

/* Process CPU time (user + sys, all threads) in seconds. */
static double cpu_now(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0.0;
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  size_t nseries = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
  char tmpl[] = "/tmp/bench_export.XXXXXX";
  const char *dir = argc > 2 ? argv[2] : mkdtemp(tmpl);
  if (!dir || nseries == 0) {
    fprintf(stderr, "usage: bench_export [series] [data-dir]\n");
    return 2;
  }
  log_set_level(LOG_WARN);
  tsdb_options_t opt;
  tsdb_options_default(&opt);
  opt.background = false;
  tsdb_t *db = NULL;
  char err[256];
  if (tsdb_open(dir, &opt, &db, err, sizeof err)) {
    fprintf(stderr, "tsdb_open: %s\n", err);
    return 1;
  }
  const int samples = 40;
  int64_t now = md_now_ms();
  int64_t t0 = md_mono_ns();
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return 1;
  char name[64], inst[32], job[32];
  for (size_t i = 0; i < nseries; i++) {
    size_t metric = i % 100;
    bool counter = metric % 2 == 0;
    snprintf(name, sizeof name, counter ? "bench_metric_%zu_total" : "bench_metric_%zu", metric);
    snprintf(inst, sizeof inst, "host-%zu", i / 100);
    snprintf(job, sizeof job, "job-%zu", (i / 100) % 10);
    tsdb_label_t l[3] = {{"__name__", name}, {"instance", inst}, {"job", job}};
    if (tsdb_batch_series(b, l, 3)) return 1;
    double v = (double)(i % 1000);
    for (int s = 0; s < samples; s++) {
      int64_t ts = now - (int64_t)(samples - 1 - s) * 15000 - 1000;
      v = counter ? v + (double)(s % 7) : (double)((i * 31 + (size_t)s * 17) % 1000) / 10.0;
      tsdb_batch_sample(b, ts, v);
    }
    if (tsdb_batch_series_count(b) == 5000 || i + 1 == nseries) {
      tsdb_append_result_t res;
      if (tsdb_append(db, "default", b, &res)) {
        fprintf(stderr, "tsdb_append failed\n");
        return 1;
      }
      tsdb_batch_reset(b);
    }
  }
  tsdb_batch_free(b);
  printf("append: %zu series x %d samples in %.3f s\n", nseries, samples, secs_since(t0));

  seed_export_options_t o = {.now_ms = now, .window_ms = 300000, .baseline_ms = 300000,
                             .aggs = SEED_AGG_AVG | SEED_AGG_SUM | SEED_AGG_MIN | SEED_AGG_MAX | SEED_AGG_COUNT,
                             .format = SEED_FMT_PROMETHEUS};
  int rc = 0;
  sb_t first = {0};
  for (int round = 0; round < 3 && rc == 0; round++) {
    sb_t out = {0};
    size_t lines = 0;
    t0 = md_mono_ns();
    double c0 = cpu_now();
    rc = seed_export_aggregated(db, "default", NULL, 0, &o, &out, &lines, err, sizeof err);
    double t = secs_since(t0), c = cpu_now() - c0;
    if (rc) fprintf(stderr, "seed_export_aggregated: %s\n", err);
    else
      printf("aggregated export (prometheus, avg/sum/min/max/count, 300 s window, head): %zu series -> %zu lines, %.1f MB in %.3f s wall, %.3f s CPU%s\n",
             nseries, lines, (double)out.len / 1e6, t, c, t < 5.0 ? "" : "  (over the 5 s target!)");
    if (round == 0) first = out;
    else sb_free(&out);
  }
  if (rc == 0) {
    sb_t out = {0};
    size_t lines = 0;
    o.format = SEED_FMT_JSON;
    t0 = md_mono_ns();
    rc = seed_export_aggregated(db, "default", NULL, 0, &o, &out, &lines, err, sizeof err);
    printf("aggregated export (json): %zu items, %.1f MB in %.3f s\n", lines, (double)out.len / 1e6, secs_since(t0));
    sb_free(&out);
  }
  if (rc == 0) {
    sb_t out = {0};
    size_t lines = 0;
    o.format = SEED_FMT_PROMETHEUS;
    t0 = md_mono_ns();
    rc = seed_export_latest(db, "default", NULL, 0, &o, &out, &lines, err, sizeof err);
    printf("latest-value export (prometheus): %zu lines, %.1f MB in %.3f s\n", lines, (double)out.len / 1e6, secs_since(t0));
    sb_free(&out);
  }
  if (rc == 0) {
    /* restart: everything on disk as blocks, then a fresh open of the same directory */
    t0 = md_mono_ns();
    if (tsdb_flush(db) != 0) rc = 1;
    tsdb_close(db);
    db = NULL;
    if (rc == 0 && tsdb_open(dir, &opt, &db, err, sizeof err)) {
      fprintf(stderr, "tsdb_open (reopen): %s\n", err);
      rc = 1;
    }
    if (rc == 0) printf("flush to blocks + close + reopen: %.3f s\n", secs_since(t0));
  }
  if (rc == 0) {
    sb_t out = {0};
    size_t lines = 0;
    t0 = md_mono_ns();
    double c0 = cpu_now();
    rc = seed_export_aggregated(db, "default", NULL, 0, &o, &out, &lines, err, sizeof err);
    double t = secs_since(t0), c = cpu_now() - c0;
    bool same = out.len == first.len && (out.len == 0 || memcmp(out.buf, first.buf, out.len) == 0);
    if (rc) fprintf(stderr, "seed_export_aggregated after reopen: %s\n", err);
    else
      printf("aggregated export after reopen (from blocks): %zu lines, %.1f MB in %.3f s wall, %.3f s CPU; %s\n",
             lines, (double)out.len / 1e6, t, c,
             same ? "identical to the first export" : "DIFFERENT from the first export");
    if (!rc && !same) rc = 1;
    sb_free(&out);
  }
  sb_free(&first);
  if (db) tsdb_close(db);
  if (argc <= 2) md_rm_rf(dir);
  return rc ? 1 : 0;
}
