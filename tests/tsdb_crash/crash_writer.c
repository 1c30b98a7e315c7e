/*
 * Crash-test writer for the tsdb (driven by run_crash.py).
 *
 *   crash_writer write  DIR ROUND FSYNC   append batches forever; after each tsdb_append
 *                                         returns 0, append "ROUND I\n" to DIR/ack.log
 *   crash_writer verify DIR               reopen DIR/db and check it against DIR/ack.log
 *
 * Batch I of round R holds one sample for each of NSERIES series at ts(R, I) with value
 * val(series, R, I), so any sample found can be traced to the batch that wrote it. The
 * block span is tiny (60 s of data time = 60 batches) so kills also land in the middle of
 * head persistence, WAL checkpoints and compaction.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

#define NSERIES 50
#define MAXI 100000

static int64_t ts_of(int r, int i) { return 1000000000000LL + (int64_t)r * 1000000000LL + (int64_t)i * 1000; }
static double val_of(int s, int r, int i) { return s * 1000.0 + r * 7.0 + i * 0.25; }

static void options(tsdb_options_t *o, int fsync_always) {
  tsdb_options_default(o);
  o->block_span_ms = 60 * 1000;
  o->ooo_window_ms = 10 * 1000;
  o->retention_ms = 0;
  o->fsync = fsync_always ? TSDB_FSYNC_ALWAYS : TSDB_FSYNC_INTERVAL;
  o->background = true;
}

static int do_write(const char *dir, int round, int fsync_always) {
  char path[4096], err[256];
  snprintf(path, sizeof path, "%s/db", dir);
  tsdb_options_t o;
  options(&o, fsync_always);
  tsdb_t *db;
  if (tsdb_open(path, &o, &db, err, sizeof err)) {
    fprintf(stderr, "open: %s\n", err);
    return 2;
  }
  snprintf(path, sizeof path, "%s/ack.log", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return 2;
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < MAXI; i++) {
    tsdb_batch_reset(b);
    for (int s = 0; s < NSERIES; s++) {
      char sv[16];
      snprintf(sv, sizeof sv, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "crash"}, {"s", sv}};
      tsdb_batch_series(b, ls, 2);
      tsdb_batch_sample(b, ts_of(round, i), val_of(s, round, i));
    }
    tsdb_append_result_t res;
    int rc = tsdb_append(db, "", b, &res);
    if (rc || res.samples_added != NSERIES) {
      fprintf(stderr, "append failed: rc=%d added=%zu\n", rc, res.samples_added);
      return 2;
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%d %d\n", round, i);
    if (write(fd, line, (size_t)n) != n) return 2;
    /* Kills must also land inside explicit flushes and compactions, not only appends. */
    if (i % 300 == 299) tsdb_flush(db);
    if (i % 50 == 0) tsdb_compact(db);
  }
  tsdb_batch_free(b);
  close(fd);
  tsdb_close(db);
  return 0;
}

static int do_verify(const char *dir) {
  char path[4096], err[256];
  snprintf(path, sizeof path, "%s/ack.log", dir);
  FILE *f = fopen(path, "r");
  int maxack[1000];
  for (int i = 0; i < 1000; i++) maxack[i] = -1;
  int maxround = -1;
  if (f) {
    int r, i;
    while (fscanf(f, "%d %d", &r, &i) == 2) {
      if (r < 0 || r >= 1000) continue;
      if (i > maxack[r]) maxack[r] = i;
      if (r > maxround) maxround = r;
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/db", dir);
  tsdb_options_t o;
  options(&o, 0);
  o.background = false;
  tsdb_t *db;
  if (tsdb_open(path, &o, &db, err, sizeof err)) {
    fprintf(stderr, "verify open: %s\n", err);
    return 1;
  }
  tsdb_query_t *q;
  if (tsdb_select(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err)) return 1;
  int bad = 0, nseries = 0;
  uint64_t total = 0;
  static int count[NSERIES][1000]; /* samples per series and round */
  memset(count, 0, sizeof count);
  while (tsdb_query_next(q) == 1) {
    size_t nl;
    const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
    int s = -1;
    for (size_t k = 0; k < nl; k++)
      if (strcmp(ls[k].name, "s") == 0) s = atoi(ls[k].value);
    if (s < 0 || s >= NSERIES) {
      fprintf(stderr, "invented series\n");
      bad++;
      continue;
    }
    nseries++;
    const int64_t *ts;
    const double *v;
    size_t n = tsdb_query_samples(q, &ts, &v);
    for (size_t k = 0; k < n; k++) {
      int64_t rel = ts[k] - 1000000000000LL;
      int r = (int)(rel / 1000000000LL);
      int64_t rem = rel % 1000000000LL;
      int i = (int)(rem / 1000);
      if (rel < 0 || rem % 1000 || r > maxround + 1 || r >= 1000 || i > maxack[r] + 1 || v[k] != val_of(s, r, i)) {
        if (bad < 10) fprintf(stderr, "invented sample s=%d ts=%" PRId64 " v=%g\n", s, ts[k], v[k]);
        bad++;
        continue;
      }
      if (i <= maxack[r]) count[s][r]++;
      total++;
    }
  }
  tsdb_query_free(q);
  uint64_t acked = 0;
  for (int r = 0; r <= maxround; r++) {
    acked += (uint64_t)(maxack[r] + 1) * NSERIES;
    for (int s = 0; s < NSERIES; s++) {
      if (count[s][r] != maxack[r] + 1) {
        if (bad < 20)
          fprintf(stderr, "lost: series %d round %d has %d of %d acknowledged samples\n", s, r, count[s][r],
                  maxack[r] + 1);
        bad++;
      }
    }
  }
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  printf("verify: %" PRIu64 " acknowledged samples, %" PRIu64 " found, %d problems, %" PRIu64 " blocks, wal %" PRIu64
         " bytes, %" PRIu64 " corruptions cut\n",
         acked, total, bad, st.blocks, st.wal_bytes, st.wal_corruptions);
  tsdb_close(db);
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  log_set_level(LOG_WARN);
  if (argc >= 5 && strcmp(argv[1], "write") == 0) return do_write(argv[2], atoi(argv[3]), atoi(argv[4]));
  if (argc >= 3 && strcmp(argv[1], "verify") == 0) return do_verify(argv[2]);
  fprintf(stderr, "usage: %s write DIR ROUND FSYNC_ALWAYS | verify DIR\n", argv[0]);
  return 2;
}
