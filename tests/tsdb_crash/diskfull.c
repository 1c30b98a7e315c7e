/*
 * Disk-full test for the tsdb on a real, tiny file system (no fault injection): a 2 MiB
 * tmpfs mounted in a private mount namespace (so it vanishes with the process, whatever
 * happens). Skips with exit code 77 where mounting is not permitted.
 *
 * A child process fills the file system through tsdb_append, remembering every batch that
 * was acknowledged (returned 0), and checks that:
 *   - the first failing append returns MD_ENOSPC (not a crash, not another code), and so do
 *     the next ones, with stats.last_write_error = MD_ENOSPC;
 *   - reads keep working and show every acknowledged sample;
 *   - tsdb_flush (head → block) on the full disk fails cleanly or succeeds, and never loses
 *     anything;
 *   - once space is freed (a ballast file is deleted), the failed batch is retried and
 *     succeeds, and new appends succeed.
 * The child then SIGKILLs itself (no tsdb_close), and the parent reopens the data and checks
 * that every acknowledged sample is there and no sample was invented.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

#define NSERIES 200
#define MAXB 20000
#define T0 1700000000000LL

static int64_t ts_of(int i) { return T0 + (int64_t)i * 1000; }
static double val_of(int s, int i) { return s * 0.01 + i * 0.25; }

static char root[64];

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "diskfull: FAILED %s: ", #cond);     \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      return 1;                                            \
    }                                                      \
  } while (0)

static void options(tsdb_options_t *o) {
  tsdb_options_default(o);
  o->background = false;
  o->retention_ms = 0;
  o->block_span_ms = 60 * 1000;
}

static void fill_batch(tsdb_batch_t *b, int i) {
  tsdb_batch_reset(b);
  for (int s = 0; s < NSERIES; s++) {
    char sv[16];
    snprintf(sv, sizeof sv, "%d", s);
    tsdb_label_t ls[] = {{"__name__", "diskfull_test_metric"}, {"series", sv}};
    tsdb_batch_series(b, ls, 2);
    tsdb_batch_sample(b, ts_of(i), val_of(s, i));
  }
}

/* Checks the database holds batches [0, nacked) exactly (plus, when extra >= 0, possibly
 * batch `extra`, which was applied to the head but not acknowledged). */
static int verify(tsdb_t *db, int nacked, int extra) {
  tsdb_query_t *q;
  char err[256];
  CHECK(tsdb_select(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err) == 0, "%s", err);
  int nser = 0, r;
  while ((r = tsdb_query_next(q)) == 1) {
    size_t nl;
    const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
    CHECK(nl == 2 && strcmp(ls[1].name, "series") == 0, "unexpected labels");
    int s = atoi(ls[1].value);
    const int64_t *ts;
    const double *v;
    size_t n = tsdb_query_samples(q, &ts, &v);
    size_t k = 0;
    for (int i = 0; i < nacked; i++) {
      CHECK(k < n && ts[k] == ts_of(i) && v[k] == val_of(s, i), "series %d: acknowledged batch %d missing", s, i);
      k++;
    }
    if (k < n && extra >= 0 && ts[k] == ts_of(extra) && v[k] == val_of(s, extra)) k++;
    CHECK(k == n, "series %d: %zu samples beyond the acknowledged ones", s, n - k);
    nser++;
  }
  tsdb_query_free(q);
  CHECK(r == 0, "query error %d", r);
  CHECK(nser == NSERIES || (nacked == 0 && nser == 0), "%d series", nser);
  return 0;
}

/* Runs in the child: returns non-zero on failure; on success SIGKILLs itself. */
static int child(const char *dbdir, const char *ballast) {
  tsdb_options_t o;
  options(&o);
  tsdb_t *db;
  char err[256];
  CHECK(tsdb_open(dbdir, &o, &db, err, sizeof err) == 0, "open: %s", err);
  tsdb_batch_t *b = tsdb_batch_new();
  tsdb_append_result_t res;
  int i = 0, rc = 0;
  for (; i < MAXB; i++) {
    fill_batch(b, i);
    rc = tsdb_append(db, "", b, &res);
    if (rc) break;
    CHECK(res.samples_added == NSERIES, "batch %d: %zu added", i, res.samples_added);
    /* Persist now and then so blocks and checkpoints compete for the space too. */
    if (i % 240 == 239) {
      int f = tsdb_flush(db);
      CHECK(f == 0 || f == MD_ENOSPC, "flush gave %d", f);
    }
  }
  CHECK(rc == MD_ENOSPC, "append %d returned %d, expected MD_ENOSPC", i, rc);
  int failed = i;
  printf("diskfull: disk full after %d acknowledged batches (%d samples)\n", failed, failed * NSERIES);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  CHECK(st.last_write_error == MD_ENOSPC, "last_write_error %d", st.last_write_error);
  /* Still full: the next appends fail the same way, the engine does not wedge or crash. */
  for (int k = 1; k <= 3; k++) {
    fill_batch(b, failed + k);
    CHECK(tsdb_append(db, "", b, &res) == MD_ENOSPC, "append on a full disk succeeded");
  }
  /* Reads work; unacknowledged samples of the failed batches may be visible (at-least-once). */
  tsdb_query_t *q;
  CHECK(tsdb_select(db, "", NULL, 0, ts_of(0), ts_of(failed - 1), NULL, &q, err, sizeof err) == 0, "%s", err);
  int nser = 0;
  while (tsdb_query_next(q) == 1) {
    const int64_t *ts;
    const double *v;
    CHECK(tsdb_query_samples(q, &ts, &v) == (size_t)failed, "read on a full disk");
    nser++;
  }
  tsdb_query_free(q);
  CHECK(nser == NSERIES, "%d series readable", nser);
  int f = tsdb_flush(db);
  CHECK(f == 0 || f == MD_ENOSPC, "flush on a full disk gave %d", f);
  printf("diskfull: flush on the full disk returned %d\n", f);
  /* Free space: appends resume, starting with a retry of the failed batch. */
  CHECK(unlink(ballast) == 0, "unlink ballast: %s", strerror(errno));
  fill_batch(b, failed);
  rc = tsdb_append(db, "", b, &res);
  CHECK(rc == 0, "retry after freeing space returned %d", rc);
  int acked = failed + 1;
  /* The batches after it were applied to the head too; retrying them is just as safe. */
  for (int k = 1; k <= 3; k++, acked++) {
    fill_batch(b, acked);
    CHECK(tsdb_append(db, "", b, &res) == 0, "retry of batch %d", acked);
  }
  for (int k = 0; k < 50; k++, acked++) {
    fill_batch(b, acked);
    CHECK(tsdb_append(db, "", b, &res) == 0, "append %d after freeing space", acked);
    CHECK(res.samples_added == NSERIES, "batch %d: %zu added", acked, res.samples_added);
  }
  tsdb_get_stats(db, &st);
  CHECK(st.last_write_error == 0, "last_write_error %d after recovery", st.last_write_error);
  CHECK(verify(db, acked, -1) == 0, "state before the kill");
  /* The parent learns how many batches were acknowledged from the exit path: a file. */
  char path[256];
  snprintf(path, sizeof path, "%s/acked", root);
  FILE *fp = fopen(path, "w");
  CHECK(fp && fprintf(fp, "%d\n", acked) > 0 && fclose(fp) == 0, "write %s", path);
  tsdb_batch_free(b);
  fflush(stdout);
  /* WAL written is enough: a kill now must lose nothing acknowledged. */
  raise(SIGKILL);
  return 1;
}

int main(void) {
  log_set_level(LOG_ERROR);
  if (unshare(CLONE_NEWNS) != 0) {
    printf("diskfull: cannot create a mount namespace (%s): skipped\n", strerror(errno));
    return 77;
  }
  /* Keep our mounts out of the parent namespace. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    printf("diskfull: cannot make mounts private (%s): skipped\n", strerror(errno));
    return 77;
  }
  snprintf(root, sizeof root, "/tmp/tsdb-diskfull-XXXXXX");
  if (!mkdtemp(root)) return 1;
  if (mount("tmpfs", root, "tmpfs", 0, "size=2m") != 0) {
    printf("diskfull: cannot mount a tmpfs (%s): skipped\n", strerror(errno));
    rmdir(root);
    return 77;
  }
  char dbdir[128], ballast[128];
  snprintf(dbdir, sizeof dbdir, "%s/db", root);
  snprintf(ballast, sizeof ballast, "%s/ballast", root);
  /* 512 KiB of ballast to free later (tmpfs allocates on write). */
  int fd = open(ballast, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  static char chunk[64 * 1024];
  memset(chunk, 'x', sizeof chunk);
  for (int k = 0; fd >= 0 && k < 8; k++)
    if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) return 1;
  if (fd < 0 || close(fd) != 0) return 1;
  int status = 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) _exit(child(dbdir, ballast));
  if (waitpid(pid, &status, 0) != pid) return 1;
  int rc = 1;
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    fprintf(stderr, "diskfull: child failed (status %d)\n", status);
    goto out;
  }
  char path[256];
  snprintf(path, sizeof path, "%s/acked", root);
  FILE *fp = fopen(path, "r");
  int acked = -1;
  if (!fp || fscanf(fp, "%d", &acked) != 1) goto out;
  fclose(fp);
  tsdb_options_t o;
  options(&o);
  tsdb_t *db;
  char err[256];
  if (tsdb_open(dbdir, &o, &db, err, sizeof err)) {
    fprintf(stderr, "diskfull: reopen: %s\n", err);
    goto out;
  }
  rc = verify(db, acked, -1);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  printf("diskfull: after kill -9 and reopen: %d acknowledged batches checked, %" PRIu64 " blocks, wal %" PRIu64
         " bytes, %" PRIu64 " corruptions cut: %s\n",
         acked, st.blocks, st.wal_bytes, st.wal_corruptions, rc ? "FAILED" : "ok");
  tsdb_close(db);
out:
  md_rm_rf(dbdir);
  umount2(root, MNT_DETACH);
  rmdir(root);
  return rc;
}
