/* Engine tests: append/select, out-of-order and duplicates, limits, metadata, delete,
 * flush + compaction equivalence, retention, snapshot, reopen (WAL replay). */
#include <dirent.h>
#include <math.h>
#include <sys/stat.h>

#include "tsdb_test_util.h"

static void test_append_select(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int s = 0; s < 50; s++) {
    char inst[32];
    snprintf(inst, sizeof inst, "host-%02d", s);
    tsdb_label_t ls[] = {{"__name__", s % 2 ? "cpu" : "mem"}, {"instance", inst}, {"job", "node"}};
    assert_int_equal(tsdb_batch_series(b, ls, 3), 0);
    for (int i = 0; i < 500; i++) assert_int_equal(tsdb_batch_sample(b, 1000000 + i * 15000, s * 1000 + i * 0.25), 0);
  }
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(db, "t1", b, &res), 0);
  assert_int_equal(res.samples_added, 50 * 500);
  assert_int_equal(res.series_created, 50);
  tsdb_matcher_t m[] = {{TSDB_MATCH_EQ, "__name__", "cpu"}, {TSDB_MATCH_RE, "instance", "host-0[1-5]"}};
  tsdb_query_t *q;
  char err[128];
  assert_int_equal(tsdb_select(db, "t1", m, 2, 0, INT64_MAX, NULL, &q, err, sizeof err), 0);
  int n = 0;
  const char *prev = "";
  while (tsdb_query_next(q) == 1) {
    size_t nl;
    const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
    assert_int_equal(nl, 3);
    assert_string_equal(ls[0].value, "cpu");
    assert_true(strcmp(ls[1].value, prev) > 0);
    prev = ls[1].value;
    const int64_t *ts;
    const double *v;
    size_t k = tsdb_query_samples(q, &ts, &v);
    assert_int_equal(k, 500);
    int s = atoi(ls[1].value + 5);
    for (size_t i = 0; i < k; i++) {
      assert_int_equal(ts[i], 1000000 + (int64_t)i * 15000);
      assert_true(v[i] == s * 1000 + (double)i * 0.25);
    }
    n++;
  }
  assert_int_equal(n, 3); /* 01, 03, 05 */
  tsdb_query_free(q);
  /* Tenants never see each other. */
  assert_int_equal(tsdb_select(db, "t2", NULL, 0, 0, INT64_MAX, NULL, &q, err, sizeof err), 0);
  assert_int_equal(tsdb_query_next(q), 0);
  tsdb_query_free(q);
  /* Time range restriction. */
  size_t ns, nsm;
  tsdb_matcher_t one = {TSDB_MATCH_EQ, "instance", "host-07"};
  free(tu_dump(db, "t1", &one, 1, 1000000 + 15000 * 10, 1000000 + 15000 * 19, &ns, &nsm));
  assert_int_equal(ns, 1);
  assert_int_equal(nsm, 10);
  /* Bad regex. */
  tsdb_matcher_t bad = {TSDB_MATCH_RE, "instance", "(("};
  assert_int_equal(tsdb_select(db, "t1", &bad, 1, 0, INT64_MAX, NULL, &q, err, sizeof err), MD_EINVAL);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.series, 50);
  assert_int_equal(st.head_samples, 50 * 500);
  assert_int_equal(st.min_time, 1000000);
  tsdb_batch_free(b);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_ooo_and_duplicates(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_append_result_t r;
  int64_t base = 1700000000000;
  for (int i = 0; i < 300; i++) assert_int_equal(tu_append1(db, "", "m", "a", "1", base + i * 1000, i, &r), 0);
  /* Same timestamp, same value: no-op. */
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 299000, 299, &r), 0);
  assert_int_equal(r.samples_duplicate_ignored, 1);
  assert_int_equal(r.samples_added, 0);
  /* Same timestamp, different value: rejected (also in a sealed chunk and in the middle). */
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 299000, 1.5, &r), 0);
  assert_int_equal(r.samples_rejected, 1);
  assert_int_equal(r.errors[0].reason, TSDB_REJECT_DUPLICATE);
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 10000, 99, &r), 0);
  assert_int_equal(r.errors[0].reason, TSDB_REJECT_DUPLICATE);
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 10000, 10, &r), 0);
  assert_int_equal(r.samples_duplicate_ignored, 1);
  /* Out of order within the window: accepted, merged in order. */
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 10500, -1, &r), 0);
  assert_int_equal(r.samples_added, 1);
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 10500, -1, &r), 0);
  assert_int_equal(r.samples_duplicate_ignored, 1);
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 10500, -2, &r), 0);
  assert_int_equal(r.errors[0].reason, TSDB_REJECT_DUPLICATE);
  /* Too old: more than 10 minutes behind the series' newest sample. */
  assert_int_equal(tu_append1(db, "", "m", "a", "1", base + 299000 - 11 * 60000, 1, &r), 0);
  assert_int_equal(r.errors[0].reason, TSDB_REJECT_TOO_OLD);
  /* Special values round-trip bitwise. */
  double specials[] = {NAN, tsdb_stale_nan(), INFINITY, -INFINITY, -0.0, 4.9e-324, 1e308};
  for (int i = 0; i < 7; i++) assert_int_equal(tu_append1(db, "", "m", "a", "2", base + i, specials[i], &r), 0);
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "a", "1"};
  tsdb_query_t *q;
  char err[64];
  assert_int_equal(tsdb_select(db, "", &m, 1, base + 10000, base + 11000, NULL, &q, err, sizeof err), 0);
  assert_int_equal(tsdb_query_next(q), 1);
  const int64_t *ts;
  const double *v;
  assert_int_equal(tsdb_query_samples(q, &ts, &v), 3);
  assert_int_equal(ts[1], base + 10500);
  assert_true(v[1] == -1);
  tsdb_query_free(q);
  /* Reopen: replay gives the same data, special values bitwise. */
  char *before = tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, NULL);
  tsdb_matcher_t any = {TSDB_MATCH_RE, "a", ".+"};
  free(before);
  before = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  tsdb_close(db);
  db = tu_open(dir, NULL);
  char *after = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(before, after);
  assert_non_null(strstr(after, "/7ff0000000000002"));
  assert_non_null(strstr(after, "/8000000000000000"));
  free(before);
  free(after);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_series_limit(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.max_series_per_tenant = 3;
  tsdb_t *db = tu_open(dir, &o);
  tsdb_append_result_t r;
  char v[8];
  for (int i = 0; i < 5; i++) {
    snprintf(v, sizeof v, "%d", i);
    assert_int_equal(tu_append1(db, "a", "m", "i", v, 1000, 1, &r), 0);
    if (i < 3) assert_int_equal(r.series_created, 1);
    else {
      assert_int_equal(r.series_rejected, 1);
      assert_int_equal(r.errors[0].reason, TSDB_REJECT_SERIES_LIMIT);
    }
  }
  /* Existing series still take samples; another tenant has its own limit. */
  assert_int_equal(tu_append1(db, "a", "m", "i", "0", 2000, 1, &r), 0);
  assert_int_equal(r.samples_added, 1);
  assert_int_equal(tu_append1(db, "b", "m", "i", "9", 2000, 1, &r), 0);
  assert_int_equal(r.series_created, 1);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_metadata(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_append_result_t r;
  assert_int_equal(tu_append1(db, "t", "up", "job", "a", 1000, 1, &r), 0);
  assert_int_equal(tu_append1(db, "t", "up", "job", "b", 1000, 1, &r), 0);
  assert_int_equal(tu_append1(db, "t", "cpu", "mode", "idle", 5000, 1, &r), 0);
  assert_int_equal(tu_append1(db, "u", "other", "x", "y", 1000, 1, &r), 0);
  tsdb_strings_t s;
  char err[64];
  assert_int_equal(tsdb_label_names(db, "t", NULL, 0, INT64_MIN, INT64_MAX, &s, err, sizeof err), 0);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.items[0], "__name__");
  assert_string_equal(s.items[1], "job");
  assert_string_equal(s.items[2], "mode");
  tsdb_strings_free(&s);
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "__name__", "up"};
  assert_int_equal(tsdb_label_values(db, "t", "job", &m, 1, INT64_MIN, INT64_MAX, &s, err, sizeof err), 0);
  assert_int_equal(s.n, 2);
  tsdb_strings_free(&s);
  assert_int_equal(tsdb_label_values(db, "t", "__name__", NULL, 0, 4000, 6000, &s, err, sizeof err), 0);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.items[0], "cpu");
  tsdb_strings_free(&s);
  assert_int_equal(tsdb_tenants(db, &s), 0);
  assert_int_equal(s.n, 2);
  assert_string_equal(s.items[1], "u");
  tsdb_strings_free(&s);
  tsdb_cardinality_t c;
  assert_int_equal(tsdb_cardinality(db, "t", 10, &c), 0);
  assert_int_equal(c.num_series, 3);
  assert_int_equal(c.n_series_by_metric, 2);
  assert_string_equal(c.series_by_metric[0].name, "up");
  assert_int_equal(c.series_by_metric[0].count, 2);
  assert_string_equal(c.series_by_pair[0].name, "__name__=up");
  tsdb_cardinality_free(&c);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

/* Random data over several block spans, with OOO; query everything before and after
 * flush, compaction and reopen. */
static void fill_random(tsdb_t *db, unsigned seed, int nseries, int nsamples, int64_t start) {
  srand(seed);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < nsamples; i += 10) {
    tsdb_batch_reset(b);
    for (int s = 0; s < nseries; s++) {
      char v[16];
      snprintf(v, sizeof v, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "metric"}, {"s", v}, {"zone", s % 3 ? "a" : "b"}};
      assert_int_equal(tsdb_batch_series(b, ls, 3), 0);
      for (int k = i; k < i + 10 && k < nsamples; k++)
        assert_int_equal(tsdb_batch_sample(b, start + (int64_t)k * 60000 + (rand() % 3 == 0 ? -30000 : 0),
                                           (double)(rand() % 10000) / 100),
                         0);
    }
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tsdb_batch_free(b);
}

static void test_flush_compact_equivalence(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  o.retention_ms = 0;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000;
  fill_random(db, 7, 40, 400, start); /* 400 min: ~7 spans */
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  size_t ns0, nsm0;
  char *d0 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, &ns0, &nsm0);
  assert_int_equal(ns0, 40);
  assert_true(nsm0 > 40 * 300);
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_true(st.blocks >= 6);
  assert_int_equal(st.head_samples, 0);
  char *d1 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d1);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  assert_true(st.compactions >= 1);
  char *d2 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d2);
  /* Sub-range queries agree too. */
  char *p0 = tu_dump(db, "", &any, 1, start + 3600000, start + 2 * 3600000 + 5, NULL, NULL);
  /* New data after the flush lands in the head; reopen replays it. */
  fill_random(db, 8, 40, 20, start + 401 * 60000);
  char *d3 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  tsdb_close(db);
  db = tu_open(dir, &o);
  char *d4 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d3, d4);
  char *p1 = tu_dump(db, "", &any, 1, start + 3600000, start + 2 * 3600000 + 5, NULL, NULL);
  assert_string_equal(p0, p1);
  /* Label metadata sees block series. */
  tsdb_strings_t s;
  char err[64];
  assert_int_equal(tsdb_label_values(db, "", "zone", NULL, 0, INT64_MIN, INT64_MAX, &s, err, sizeof err), 0);
  assert_int_equal(s.n, 2);
  tsdb_strings_free(&s);
  free(d0);
  free(d1);
  free(d2);
  free(d3);
  free(d4);
  free(p0);
  free(p1);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_delete(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000;
  fill_random(db, 3, 10, 200, start);
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  assert_int_equal(tsdb_flush(db), 0);
  fill_random(db, 4, 10, 30, start + 201 * 60000); /* some in the head too */
  tsdb_matcher_t zb = {TSDB_MATCH_EQ, "zone", "b"};
  char err[64];
  int64_t dmin = start + 100 * 60000, dmax = start + 220 * 60000;
  assert_int_equal(tsdb_delete(db, "", &zb, 1, dmin, dmax, err, sizeof err), 0);
  tsdb_query_t *q;
  assert_int_equal(tsdb_select(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  int nb = 0;
  while (tsdb_query_next(q) == 1) {
    size_t nl;
    const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
    const int64_t *ts;
    const double *v;
    size_t k = tsdb_query_samples(q, &ts, &v);
    bool isb = strcmp(ls[2].value, "b") == 0;
    bool inside = false;
    for (size_t i = 0; i < k; i++) inside |= ts[i] >= dmin && ts[i] <= dmax;
    assert_int_equal(inside, !isb);
    nb += isb;
  }
  tsdb_query_free(q);
  assert_int_equal(nb, 4);
  char *d0 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  /* Durable across reopen, and applied through flush + compaction. */
  tsdb_close(db);
  db = tu_open(dir, &o);
  char *d1 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d1);
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  uint64_t hour_blocks = st.blocks;
  assert_true(hour_blocks >= 4);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  /* Every hour block lies in a 6 h window with another one, so all went through a merge. */
  assert_true(st.blocks <= 2 && st.compactions == st.blocks);
  char *d2 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d2);
  tsdb_close(db);
  /* Applied means gone from the block itself: without the tombstones file the deleted
   * samples stay deleted. */
  char tpath[600];
  snprintf(tpath, sizeof tpath, "%s/tombstones", dir);
  assert_int_equal(unlink(tpath), 0);
  db = tu_open(dir, &o);
  char *d3 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d3);
  free(d0);
  free(d1);
  free(d2);
  free(d3);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_retention(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  o.retention_ms = 3 * 3600 * 1000;
  o.tier1_resolution_ms = 0;
  o.tier2_resolution_ms = 0;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000 - 1700000000000 % 3600000;
  fill_random(db, 5, 5, 600, start); /* 10 h */
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  size_t before = st.blocks;
  assert_true(before >= 10);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  /* Everything whose end is older than max_time - 3 h is gone, whole blocks only. */
  int64_t newest = start + 600 * 60000;
  assert_true(st.min_time >= newest - 3 * 3600000 - 12 * 3600000);
  size_t ns, nsm;
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  free(tu_dump(db, "", &any, 1, INT64_MIN, newest - 13 * 3600000, &ns, &nsm));
  assert_int_equal(nsm, 0);
  free(tu_dump(db, "", &any, 1, newest - 3 * 3600000, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, 5);
  tsdb_close(db);
  /* Size retention: a tiny budget keeps only the newest block(s). */
  o.retention_ms = 0;
  o.retention_bytes = 1;
  db = tu_open(dir, &o);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, 0);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_retention_time_blocks(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  o.retention_ms = 2 * 3600 * 1000;
  o.tier1_resolution_ms = 0;
  o.tier2_resolution_ms = 0;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000 - 1700000000000 % 3600000;
  fill_random(db, 5, 5, 600, start);
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  size_t ns, nsm0, nsm1;
  free(tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, &ns, &nsm0));
  assert_int_equal(tsdb_compact(db), 0);
  free(tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, &ns, &nsm1));
  assert_true(nsm1 < nsm0);
  assert_true(nsm1 > 0);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

/* Sum of the file sizes of each block directory, oldest first (names sort by time). */
static size_t block_sizes(const char *dir, uint64_t *sizes, size_t max) {
  char bd[512];
  snprintf(bd, sizeof bd, "%s/blocks", dir);
  DIR *d = opendir(bd);
  assert_non_null(d);
  char *names[64];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 64 && n < max)
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  closedir(d);
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
      char *t = names[j];
      names[j] = names[j - 1];
      names[j - 1] = t;
    }
  static const char *files[] = {"meta.json", "index", "chunks"};
  for (size_t i = 0; i < n; i++) {
    sizes[i] = 0;
    for (int f = 0; f < 3; f++) {
      char p[1024];
      snprintf(p, sizeof p, "%s/%s/%s", bd, names[i], files[f]);
      struct stat st;
      assert_int_equal(stat(p, &st), 0);
      sizes[i] += (uint64_t)st.st_size;
    }
    free(names[i]);
  }
  return n;
}

/* Retention drops exactly the whole blocks it should: by age, every raw block ending more
 * than retention before the newest sample and no other; by size, the oldest blocks until the
 * rest fits the budget. Everything kept reads back unchanged. */
static void test_retention_exact(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  o.retention_ms = 3 * 3600 * 1000; /* compaction windows (6 h) exceed half of it: none */
  o.tier1_resolution_ms = 0;
  o.tier2_resolution_ms = 0;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000 - 1700000000000 % 3600000;
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < 10 * 60; i++) {
    tsdb_batch_reset(b);
    for (int s = 0; s < 5; s++) {
      char v[8];
      snprintf(v, sizeof v, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "metric"}, {"s", v}};
      assert_int_equal(tsdb_batch_series(b, ls, 2), 0);
      assert_int_equal(tsdb_batch_sample(b, start + i * 60000LL, s + i * 0.25), 0);
    }
    assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  }
  tsdb_batch_free(b);
  int64_t newest = start + (10 * 60 - 1) * 60000LL;
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, 10);
  /* Blocks end at start + k h - 1; those ending before newest - 3 h go: k <= 6. */
  int64_t cut = start + 6 * 3600000LL;
  assert_true(cut - 1 < newest - 3 * 3600000LL && cut + 3600000LL - 1 >= newest - 3 * 3600000LL);
  size_t ns, nsm_keep0, nsm;
  char *keep0 = tu_dump(db, "", NULL, 0, cut, INT64_MAX, &ns, &nsm_keep0);
  assert_int_equal(nsm_keep0, 5 * 4 * 60);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, 4);
  assert_int_equal(st.min_time, cut);
  char *keep1 = tu_dump(db, "", NULL, 0, cut, INT64_MAX, &ns, &nsm);
  assert_string_equal(keep0, keep1);
  free(tu_dump(db, "", NULL, 0, INT64_MIN, cut - 1, &ns, &nsm));
  assert_int_equal(nsm, 0);
  free(keep0);
  free(keep1);
  tsdb_close(db);
  /* Size: a budget between the newest two and three blocks keeps exactly the newest two. */
  uint64_t sz[64];
  size_t nb = block_sizes(dir, sz, 64);
  assert_int_equal(nb, 4);
  /* (The age limit stays: it keeps compaction windows short, so no merge interferes.) */
  o.retention_bytes = sz[3] + sz[2] + sz[1] / 2;
  db = tu_open(dir, &o);
  int64_t cut2 = start + 8 * 3600000LL;
  keep0 = tu_dump(db, "", NULL, 0, cut2, INT64_MAX, &ns, &nsm);
  assert_int_equal(tsdb_compact(db), 0);
  tsdb_get_stats(db, &st);
  assert_int_equal(st.blocks, 2);
  assert_true(st.block_bytes <= o.retention_bytes);
  keep1 = tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm);
  if (strcmp(keep0, keep1)) {
    size_t i = 0;
    while (keep0[i] == keep1[i]) i++;
    fail_msg("size retention kept other data, at %zu: want %.80s got %.80s", i, keep0 + i, keep1 + i);
  }
  free(keep0);
  free(keep1);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_snapshot(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *snap = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000;
  fill_random(db, 9, 8, 150, start);
  assert_int_equal(tsdb_flush(db), 0);
  fill_random(db, 10, 8, 30, start + 151 * 60000);
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  char *d0 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  char sdir[512], err[128];
  snprintf(sdir, sizeof sdir, "%s/s1", snap);
  assert_int_equal(tsdb_snapshot(db, sdir, err, sizeof err), 0);
  /* Changes after the snapshot are not in it. */
  fill_random(db, 11, 8, 10, start + 200 * 60000);
  tsdb_close(db);
  db = tu_open(sdir, &o);
  char *d1 = tu_dump(db, "", &any, 1, INT64_MIN, INT64_MAX, NULL, NULL);
  assert_string_equal(d0, d1);
  free(d0);
  free(d1);
  tsdb_close(db);
  md_rm_rf(dir);
  md_rm_rf(snap);
  free(dir);
  free(snap);
}

static void test_series_gc(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  tsdb_t *db = tu_open(dir, &o);
  int64_t t0 = 1700000000000;
  assert_int_equal(tu_append1(db, "", "m", "s", "a", t0, 1, NULL), 0);
  assert_int_equal(tu_append1(db, "", "m", "s", "b", t0, 2, NULL), 0);
  tsdb_query_t *q;
  char err[64];
  tsdb_cardinality_t c;
  /* An open query postpones collection (its series pointers stay valid). */
  assert_int_equal(tsdb_select(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  assert_int_equal(tsdb_flush(db), 0);
  assert_int_equal(tsdb_cardinality(db, "", 10, &c), 0);
  assert_int_equal(c.num_series, 2);
  tsdb_cardinality_free(&c);
  int n = 0;
  while (tsdb_query_next(q) == 1) n++;
  assert_int_equal(n, 2);
  tsdb_query_free(q);
  /* a gets newer data; the next persistence frees every series left without head data. */
  assert_int_equal(tu_append1(db, "", "m", "s", "a", t0 + 1000, 3, NULL), 0);
  assert_int_equal(tsdb_flush(db), 0);
  assert_int_equal(tsdb_cardinality(db, "", 10, &c), 0);
  assert_int_equal(c.num_series, 0);
  tsdb_cardinality_free(&c);
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, 2);
  assert_int_equal(nsm, 3);
  /* b comes back as a new series; old and new data merge, also after a restart. */
  assert_int_equal(tu_append1(db, "", "m", "s", "b", t0 + 5000, 5, NULL), 0);
  assert_int_equal(tsdb_cardinality(db, "", 10, &c), 0);
  assert_int_equal(c.num_series, 1);
  tsdb_cardinality_free(&c);
  tsdb_close(db);
  db = tu_open(dir, &o);
  tsdb_matcher_t mb = {TSDB_MATCH_EQ, "s", "b"};
  char *d = tu_dump(db, "", &mb, 1, INT64_MIN, INT64_MAX, &ns, &nsm);
  assert_int_equal(ns, 1);
  assert_int_equal(nsm, 2);
  free(d);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_downsampling_tiers(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  o.retention_ms = 0;
  o.raw_retention_ms = 3 * 3600 * 1000;
  o.tier1_resolution_ms = 5 * 60 * 1000;
  o.tier1_retention_ms = 8 * 3600 * 1000;
  o.tier2_resolution_ms = 3600 * 1000;
  o.tier2_retention_ms = 48 * 3600 * 1000;
  tsdb_t *db = tu_open(dir, &o);
  int64_t start = 1700000000000 - 1700000000000 % 3600000;
  fill_random(db, 12, 4, 600, start); /* 10 h, one sample a minute */
  assert_int_equal(tsdb_flush(db), 0);
  assert_int_equal(tsdb_compact(db), 0);
  int64_t newest = start + 600 * 60000;
  tsdb_matcher_t any = {TSDB_MATCH_EQ, "__name__", "metric"};
  size_t ns, nsm;
  /* Recent data is raw: one sample a minute. */
  free(tu_dump(db, "", &any, 1, newest - 3600000, newest, &ns, &nsm));
  assert_int_equal(ns, 4);
  assert_true(nsm >= 4 * 55);
  /* Between raw and tier-1 retention: 5-minute rollups (12 an hour, not 60). */
  int64_t a = newest - 6 * 3600000, b = newest - 5 * 3600000 - 1;
  free(tu_dump(db, "", &any, 1, a, b, &ns, &nsm));
  assert_int_equal(ns, 4);
  assert_true(nsm >= 4 * 10 && nsm <= 4 * 13);
  /* Older than tier-1 retention: hourly rollups only. */
  free(tu_dump(db, "", &any, 1, start, start + 3600000 - 1, &ns, &nsm));
  assert_int_equal(ns, 4);
  assert_true(nsm >= 4 && nsm <= 4 * 2);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

int main(void) {
  log_set_level(LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_select),  cmocka_unit_test(test_ooo_and_duplicates),
      cmocka_unit_test(test_series_limit),   cmocka_unit_test(test_metadata),
      cmocka_unit_test(test_flush_compact_equivalence), cmocka_unit_test(test_delete),
      cmocka_unit_test(test_retention),      cmocka_unit_test(test_retention_time_blocks),
      cmocka_unit_test(test_retention_exact),
      cmocka_unit_test(test_snapshot),       cmocka_unit_test(test_series_gc),
      cmocka_unit_test(test_downsampling_tiers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
