/* WAL tests: record codec, torn tails at every byte offset of the last record, flipped
 * bytes, a zeroed page, disk full (fault injection) with recovery, group commit under
 * fsync=always from many threads, checkpoints. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>

#include "tsdb_test_util.h"
#include "tsdb/wal.h"

static void test_value_codec(void **state) {
  (void)state;
  double vals[] = {0, 1, -1, 42, 1e15, -9007199254740992.0, 9007199254740993.0, 0.5, -0.0, NAN,
                   INFINITY, -INFINITY, 4.9e-324, 1.7976931348623157e308, tsdb_stale_nan()};
  sb_t b = {0};
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) wal_put_value(&b, vals[i]);
  wal_put_varint(&b, INT64_MIN);
  wal_put_varint(&b, INT64_MAX);
  const uint8_t *p = (const uint8_t *)b.buf, *end = p + b.len;
  for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
    double v;
    assert_true(wal_get_value(&p, end, &v));
    assert_memory_equal(&v, &vals[i], 8);
  }
  int64_t x;
  assert_true(wal_get_varint(&p, end, &x));
  assert_true(x == INT64_MIN);
  assert_true(wal_get_varint(&p, end, &x));
  assert_true(x == INT64_MAX);
  assert_false(wal_get_varint(&p, end, &x));
  /* The one-call sample encoder writes exactly varint(delta) + value. */
  int64_t deltas[] = {0, 1, -1, 15000, INT64_MIN, INT64_MAX};
  for (size_t d = 0; d < sizeof deltas / sizeof *deltas; d++)
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
      sb_t one = {0}, two = {0};
      wal_put_sample(&one, deltas[d], vals[i]);
      wal_put_varint(&two, deltas[d]);
      wal_put_value(&two, vals[i]);
      assert_true(one.len <= WAL_SAMPLE_MAX);
      assert_int_equal(one.len, two.len);
      assert_memory_equal(one.buf, two.buf, one.len);
      sb_free(&one);
      sb_free(&two);
    }
  sb_free(&b);
}

/* ---- helpers: one series, batches of 3 samples each, one WAL record per batch --------- */

#define NBATCH 40
static int64_t T0 = 1700000000000;

static void write_batches(const char *dir, int n) {
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < n; i++) {
    tsdb_batch_reset(b);
    tsdb_label_t ls[] = {{"__name__", "m"}, {"x", "1"}};
    assert_int_equal(tsdb_batch_series(b, ls, 2), 0);
    for (int k = 0; k < 3; k++) tsdb_batch_sample(b, T0 + (i * 3 + k) * 1000, i * 3 + k + 0.5);
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tsdb_batch_free(b);
  tsdb_close(db);
}

/* Samples of series m{x=1} after reopening; checks they are a prefix 0..k-1 of what was
 * written and returns k. */
static size_t reopen_count(const char *dir, uint64_t *corruptions) {
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "x", "1"};
  tsdb_query_t *q;
  char err[64];
  assert_int_equal(tsdb_select(db, "", &m, 1, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  size_t n = 0;
  if (tsdb_query_next(q) == 1) {
    const int64_t *ts;
    const double *v;
    n = tsdb_query_samples(q, &ts, &v);
    for (size_t i = 0; i < n; i++) {
      assert_int_equal(ts[i], T0 + (int64_t)i * 1000);
      assert_true(v[i] == (double)i + 0.5);
    }
  }
  tsdb_query_free(q);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  if (corruptions) *corruptions = st.wal_corruptions;
  tsdb_close(db);
  return n;
}

typedef struct {
  size_t off[4096];
  size_t n;
  const uint8_t *base;
} offs_t;

static int collect(void *ctx, uint8_t type, const uint8_t *p, size_t n) {
  offs_t *o = ctx;
  (void)type;
  (void)n;
  o->off[o->n++] = (size_t)(p - 9 - o->base);
  return 0;
}

/* The (single) non-empty segment of dir/wal: path and contents. */
static char *find_segment(const char *dir, uint8_t **data, size_t *len) {
  char wd[512];
  snprintf(wd, sizeof wd, "%s/wal", dir);
  DIR *d = opendir(wd);
  assert_non_null(d);
  struct dirent *e;
  char *found = NULL;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || strncmp(e->d_name, "checkpoint", 10) == 0) continue;
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", wd, e->d_name);
    struct stat st;
    if (stat(p, &st) == 0 && st.st_size > WAL_MAGIC_LEN) {
      assert_null(found);
      found = strdup(p);
    }
  }
  closedir(d);
  assert_non_null(found);
  char *c;
  assert_int_equal(md_read_file(found, &c, len), 0);
  *data = (uint8_t *)c;
  return found;
}

/* Puts exactly one segment with these bytes back into dir/wal. */
static void reset_wal(const char *dir, const char *seg, const uint8_t *p, size_t n) {
  char wd[512];
  snprintf(wd, sizeof wd, "%s/wal", dir);
  md_rm_rf(wd);
  md_mkdir_p(wd);
  int fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, p, n), (ssize_t)n);
  close(fd);
}

static void test_torn_tail_every_offset(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  write_batches(dir, NBATCH);
  uint8_t *seg;
  size_t len;
  char *path = find_segment(dir, &seg, &len);
  offs_t o = {.base = seg};
  size_t good;
  assert_int_equal(wal_parse(seg + WAL_MAGIC_LEN, len - WAL_MAGIC_LEN, collect, &o, &good), 0);
  assert_int_equal(good, len - WAL_MAGIC_LEN);
  assert_int_equal(o.n, NBATCH + 1); /* series record + one record per batch */
  size_t last = o.off[o.n - 1];
  for (size_t cut = last; cut <= len; cut++) {
    reset_wal(dir, path, seg, cut);
    uint64_t corr;
    size_t n = reopen_count(dir, &corr);
    if (cut == len) {
      assert_int_equal(n, NBATCH * 3);
      assert_int_equal(corr, 0);
    } else {
      assert_int_equal(n, (NBATCH - 1) * 3);
      assert_int_equal(corr, cut == last ? 0 : 1);
    }
  }
  /* A flipped byte inside record k keeps batches before k; a zeroed page likewise. */
  for (size_t k = 5; k < o.n; k += 7) {
    uint8_t *copy = malloc(len);
    memcpy(copy, seg, len);
    size_t at = o.off[k] + 9 + (k % 3);
    if (at >= len) at = len - 1;
    copy[at] ^= 0x40;
    reset_wal(dir, path, copy, len);
    uint64_t corr;
    size_t n = reopen_count(dir, &corr);
    assert_int_equal(n, (k - 1) * 3);
    assert_int_equal(corr, 1);
    free(copy);
  }
  {
    size_t zero_at = 300;
    assert_true(len > zero_at + 64);
    uint8_t *copy = malloc(len);
    memcpy(copy, seg, len);
    memset(copy + zero_at, 0, len - zero_at < 4096 ? len - zero_at : 4096);
    reset_wal(dir, path, copy, len);
    /* Records entirely before the zeroed range survive. */
    size_t want = 0;
    for (size_t i = 1; i < o.n; i++) {
      size_t end = i + 1 < o.n ? o.off[i + 1] : len;
      if (end <= zero_at) want += 3;
    }
    assert_int_equal(reopen_count(dir, NULL), want);
    free(copy);
  }
  free(seg);
  free(path);
  md_rm_rf(dir);
  free(dir);
}

/* ---- disk full ----------------------------------------------------------------------------- */

static _Atomic int fail_mode; /* 0 ok, 1 ENOSPC, 2 half write then ENOSPC */
static ssize_t fake_pwrite(int fd, const void *p, size_t n, off_t off) {
  int m = fail_mode;
  if (m == 1) {
    errno = ENOSPC;
    return -1;
  }
  if (m == 2) {
    fail_mode = 1;
    return pwrite(fd, p, n / 2 ? n / 2 : 1, off);
  }
  return pwrite(fd, p, n, off);
}

static void test_disk_full(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  wal_test_set_io(fake_pwrite, NULL);
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_append_result_t r;
  assert_int_equal(tu_append1(db, "", "m", "s", "a", 1000, 1, &r), 0);
  fail_mode = 1;
  assert_int_equal(tu_append1(db, "", "m", "s", "a", 2000, 2, &r), MD_ENOSPC);
  /* A new series created while the disk is full: its series record must reach the log later. */
  assert_int_equal(tu_append1(db, "", "m", "s", "b", 2000, 2, &r), MD_ENOSPC);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.last_write_error, MD_ENOSPC);
  /* Reads keep working. */
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_true(ns >= 1);
  /* A torn write is rolled back. */
  fail_mode = 2;
  assert_int_equal(tu_append1(db, "", "m", "s", "a", 3000, 3, &r), MD_ENOSPC);
  fail_mode = 0;
  assert_int_equal(tu_append1(db, "", "m", "s", "a", 4000, 4, &r), 0);
  assert_int_equal(tu_append1(db, "", "m", "s", "b", 4000, 4, &r), 0);
  tsdb_get_stats(db, &st);
  assert_int_equal(st.last_write_error, 0);
  /* A client retries the refused sample: the head already holds it (a no-op), but this
   * acknowledgement must be backed by the WAL all the same. */
  assert_int_equal(tu_append1(db, "", "m", "s", "a", 2000, 2, &r), 0);
  assert_int_equal(r.samples_duplicate_ignored, 1);
  assert_int_equal(r.samples_added, 0);
  tsdb_close(db);
  wal_test_set_io(NULL, NULL);
  db = tu_open(dir, NULL);
  tsdb_stats_t st2;
  tsdb_get_stats(db, &st2);
  assert_int_equal(st2.wal_corruptions, 0);
  tsdb_matcher_t ma = {TSDB_MATCH_EQ, "s", "a"}, mb = {TSDB_MATCH_EQ, "s", "b"};
  char *a = tu_dump(db, "", &ma, 1, INT64_MIN, INT64_MAX, NULL, &nsm);
  /* Acknowledged: 1000, 4000 and the retried 2000. Unacknowledged 3000 is gone after restart. */
  assert_int_equal(nsm, 3);
  assert_non_null(strstr(a, " 1000/"));
  assert_non_null(strstr(a, " 2000/"));
  assert_non_null(strstr(a, " 4000/"));
  assert_null(strstr(a, " 3000/"));
  free(a);
  free(tu_dump(db, "", &mb, 1, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, 1);
  assert_int_equal(nsm, 1);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

/* ---- group commit ------------------------------------------------------------------------------- */

typedef struct {
  tsdb_t *db;
  int id;
} thr_t;

static void *writer(void *arg) {
  thr_t *t = arg;
  char v[16];
  snprintf(v, sizeof v, "%d", t->id);
  for (int i = 0; i < 200; i++) assert_int_equal(tu_append1(t->db, "", "m", "w", v, T0 + i, i, NULL), 0);
  return NULL;
}

static void test_group_commit_always(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.fsync = TSDB_FSYNC_ALWAYS;
  tsdb_t *db = tu_open(dir, &o);
  pthread_t th[8];
  thr_t a[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (thr_t){db, i};
    pthread_create(&th[i], NULL, writer, &a[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.samples_appended, 1600);
  assert_true(st.wal_fsyncs >= 1);
  assert_true(st.wal_fsyncs <= 1600 + 16);
  tsdb_close(db);
  db = tu_open(dir, &o);
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, 8);
  assert_int_equal(nsm, 1600);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_checkpoint_truncates(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600000;
  tsdb_t *db = tu_open(dir, &o);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < 200; i++) {
    tsdb_batch_reset(b);
    for (int s = 0; s < 50; s++) {
      char v[8];
      snprintf(v, sizeof v, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "m"}, {"s", v}};
      tsdb_batch_series(b, ls, 2);
      tsdb_batch_sample(b, T0 + i * 60000, i * 1.5 + s);
    }
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  uint64_t wal_before = st.wal_bytes;
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_get_stats(db, &st);
  assert_true(st.wal_bytes < wal_before / 4);
  /* Out-of-order data in the head goes through a checkpoint too. */
  for (int i = 0; i < 5; i++) {
    tsdb_batch_reset(b);
    tsdb_label_t ls[] = {{"__name__", "m"}, {"s", "1"}};
    tsdb_batch_series(b, ls, 2);
    tsdb_batch_sample(b, T0 + 300 * 60000 + i * 1000, i);
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tu_append1(db, "", "m", "s", "1", T0 + 300 * 60000 + 500, 7, NULL); /* OOO */
  char *d0 = tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_close(db);
  db = tu_open(dir, &o);
  char *d1 = tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d1);
  free(d0);
  free(d1);
  tsdb_batch_free(b);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_value_codec),      cmocka_unit_test(test_torn_tail_every_offset),
      cmocka_unit_test(test_disk_full),        cmocka_unit_test(test_group_commit_always),
      cmocka_unit_test(test_checkpoint_truncates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
