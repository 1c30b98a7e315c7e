/* Damage at the database level (tsdb_open, queries, maintenance): a damaged block is
 * quarantined, never crashes anything, and every other block, the head and the WAL keep
 * their data; a damaged tombstones file is set aside. (Byte-level damage of single blocks
 * and WAL segments is in test_block.c and test_wal.c.) */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "tsdb_test_util.h"

#define SPAN (3600 * 1000LL)
#define NSER 20
#define HOURS 5
static const int64_t START = 1700000000000LL - 1700000000000LL % (3600 * 1000LL);

static void opts(tsdb_options_t *o) {
  tsdb_options_default(o);
  o->background = false;
  o->block_span_ms = SPAN;
  o->retention_ms = 0;
}

/* NSER series, one sample a minute for HOURS hours from START, then flushed into one
 * block per hour; then 30 more minutes that stay in the head (and the WAL). */
static char *make_db(void) {
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  opts(&o);
  tsdb_t *db = tu_open(dir, &o);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < HOURS * 60 + 30; i++) {
    if (i == HOURS * 60) assert_int_equal(tsdb_flush(db), 0);
    tsdb_batch_reset(b);
    for (int s = 0; s < NSER; s++) {
      char v[16];
      snprintf(v, sizeof v, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "m"}, {"s", v}};
      assert_int_equal(tsdb_batch_series(b, ls, 2), 0);
      assert_int_equal(tsdb_batch_sample(b, START + i * 60000LL, s * 100 + i * 0.5), 0);
    }
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tsdb_batch_free(b);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, HOURS);
  tsdb_close(db);
  return dir;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Path of the k-th block directory in time order (names sort by time). */
static void block_dir(const char *dir, int k, char *out, size_t n) {
  char bd[512];
  snprintf(bd, sizeof bd, "%s/blocks", dir);
  DIR *d = opendir(bd);
  assert_non_null(d);
  char *names[64];
  int nn = 0;
  struct dirent *e;
  while ((e = readdir(d)) && nn < 64)
    if (e->d_name[0] != '.') names[nn++] = strdup(e->d_name);
  closedir(d);
  assert_true(k < nn);
  qsort(names, (size_t)nn, sizeof *names, cmp_str);
  snprintf(out, n, "%s/%s", bd, names[k]);
  for (int i = 0; i < nn; i++) free(names[i]);
}

static size_t count_entries(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void corrupt_file(const char *path, size_t at_fraction_num, size_t at_fraction_den, bool truncate) {
  char *data;
  size_t len;
  assert_int_equal(md_read_file(path, &data, &len), 0);
  assert_true(len > 16);
  if (truncate) {
    len = len * at_fraction_num / at_fraction_den;
  } else {
    size_t at = len * at_fraction_num / at_fraction_den;
    for (size_t i = at; i < at + 8 && i < len; i++) data[i] ^= 0x5a;
  }
  int fd = open(path, O_WRONLY | O_TRUNC);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
  free(data);
}

/* Selects everything; returns the query's final status (0, or the first error). */
static int scan_all(tsdb_t *db) {
  tsdb_query_t *q;
  char err[128];
  int rc = tsdb_select(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err);
  if (rc) return rc;
  while ((rc = tsdb_query_next(q)) == 1) {
    const int64_t *ts;
    const double *v;
    tsdb_query_samples(q, &ts, &v);
  }
  tsdb_query_free(q);
  return rc;
}

/* After losing hour k: hours other than k and the head read back exactly as before, hour
 * k is empty. */
static void same(const char *a, const char *b, const char *what) {
  if (strcmp(a, b) == 0) return;
  size_t i = 0;
  while (a[i] && a[i] == b[i]) i++;
  size_t from = i > 60 ? i - 60 : 0;
  fail_msg("%s differs at %zu: want ...%.120s\n got ...%.120s", what, i, a + from, b + from);
}

static void check_lost_hour(tsdb_t *db, const char *before_dir, int k) {
  tsdb_options_t o;
  opts(&o);
  tsdb_t *ref = tu_open(before_dir, &o);
  int64_t lo = START + k * SPAN, hi = lo + SPAN - 1;
  char *a = tu_dump(ref, "", NULL, 0, INT64_MIN, lo - 1, NULL, NULL);
  char *b = tu_dump(db, "", NULL, 0, INT64_MIN, lo - 1, NULL, NULL);
  same(a, b, "before the lost hour");
  free(a);
  free(b);
  a = tu_dump(ref, "", NULL, 0, hi + 1, INT64_MAX, NULL, NULL);
  b = tu_dump(db, "", NULL, 0, hi + 1, INT64_MAX, NULL, NULL);
  same(a, b, "after the lost hour");
  free(a);
  free(b);
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, lo, hi, &ns, &nsm));
  assert_int_equal(nsm, 0);
  tsdb_close(ref);
}

/* Damage the open path notices (meta, index, chunk file structure): quarantined at open. */
static void test_block_damaged_at_open(void **state) {
  (void)state;
  char *orig = make_db();
  static const struct {
    const char *file;
    size_t num, den;
    bool trunc;
  } cases[] = {{"meta.json", 1, 2, true}, {"index", 1, 2, false}, {"index", 2, 3, true}, {"chunks", 1, 2, true}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    char *dir = tu_tmpdir();
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp -a %s/. %s/", orig, dir);
    assert_int_equal(system(cmd), 0);
    char bd[600], path[700];
    block_dir(dir, 2, bd, sizeof bd);
    snprintf(path, sizeof path, "%s/%s", bd, cases[c].file);
    corrupt_file(path, cases[c].num, cases[c].den, cases[c].trunc);
    tsdb_options_t o;
    opts(&o);
    tsdb_t *db = tu_open(dir, &o);
    tsdb_stats_t st;
    tsdb_get_stats(db, &st);
    assert_int_equal(st.blocks, HOURS - 1);
    snprintf(path, sizeof path, "%s/quarantine", dir);
    assert_int_equal(count_entries(path), 1);
    assert_int_equal(scan_all(db), 0);
    check_lost_hour(db, orig, 2);
    /* The database stays writable and its blocks compact around the gap. */
    assert_int_equal(tu_append1(db, "other", "m", "s", "0", START + (HOURS * 60 + 31) * 60000LL, 1, NULL), 0);
    assert_int_equal(tsdb_compact(db), 0);
    check_lost_hour(db, orig, 2);
    tsdb_close(db);
    md_rm_rf(dir);
    free(dir);
  }
  md_rm_rf(orig);
  free(orig);
}

/* Damage inside chunk data is only seen when read: the read fails (never wrong data), the
 * block leaves the read path at once and is quarantined at the next maintenance round. */
static void test_block_damaged_chunks_at_read(void **state) {
  (void)state;
  char *orig = make_db();
  char *dir = tu_tmpdir();
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cp -a %s/. %s/", orig, dir);
  assert_int_equal(system(cmd), 0);
  char bd[600], path[700];
  block_dir(dir, 1, bd, sizeof bd);
  snprintf(path, sizeof path, "%s/chunks", bd);
  corrupt_file(path, 1, 2, false);
  tsdb_options_t o;
  opts(&o);
  tsdb_t *db = tu_open(dir, &o);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, HOURS); /* the open path cannot see it */
  assert_int_equal(scan_all(db), MD_ECORRUPT);
  /* The next queries no longer read the damaged block. */
  assert_int_equal(scan_all(db), 0);
  assert_int_equal(tsdb_compact(db), 0);
  snprintf(path, sizeof path, "%s/quarantine", dir);
  assert_int_equal(count_entries(path), 1);
  check_lost_hour(db, orig, 1);
  tsdb_close(db);
  /* Reopened: the block stays in quarantine, the rest is intact. */
  db = tu_open(dir, &o);
  tsdb_get_stats(db, &st);
  assert_true(st.blocks >= 1);
  check_lost_hour(db, orig, 1);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);

  /* Found by compaction instead of a query: the merge fails once, then the window compacts
   * without the damaged block. */
  dir = tu_tmpdir();
  snprintf(cmd, sizeof cmd, "cp -a %s/. %s/", orig, dir);
  assert_int_equal(system(cmd), 0);
  block_dir(dir, 3, bd, sizeof bd);
  snprintf(path, sizeof path, "%s/chunks", bd);
  corrupt_file(path, 1, 3, false);
  db = tu_open(dir, &o);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  snprintf(path, sizeof path, "%s/quarantine", dir);
  assert_int_equal(count_entries(path), 1);
  assert_int_equal(scan_all(db), 0);
  check_lost_hour(db, orig, 3);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  assert_true(st.compactions >= 1);
  check_lost_hour(db, orig, 3);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
  md_rm_rf(orig);
  free(orig);
}

/* A damaged tombstones file is set aside (deletions in it no longer apply), the data opens. */
static void test_tombstones_damaged(void **state) {
  (void)state;
  char *dir = make_db();
  tsdb_options_t o;
  opts(&o);
  tsdb_t *db = tu_open(dir, &o);
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "s", "3"};
  char err[128];
  assert_int_equal(tsdb_delete(db, "", &m, 1, INT64_MIN, INT64_MAX, err, sizeof err), 0);
  size_t ns, nsm;
  free(tu_dump(db, "", &m, 1, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, 0);
  tsdb_close(db);
  char path[600];
  snprintf(path, sizeof path, "%s/tombstones", dir);
  corrupt_file(path, 1, 2, false);
  db = tu_open(dir, &o);
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, NSER);
  assert_int_equal(nsm, (size_t)NSER * (HOURS * 60 + 30));
  tsdb_close(db);
  snprintf(path, sizeof path, "%s/tombstones.corrupt", dir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  md_rm_rf(dir);
  free(dir);
}

int main(void) {
  log_set_level(LOG_ERROR + 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_block_damaged_at_open),
      cmocka_unit_test(test_block_damaged_chunks_at_read),
      cmocka_unit_test(test_tombstones_damaged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
