/* Concurrency: appenders, readers, flushes and compactions at once. Readers must only ever
 * see consistent data (ascending timestamps, each value = f(series, ts)), and at the end
 * every acknowledged sample is there. */
#include <pthread.h>
#include <stdatomic.h>

#include "tsdb_test_util.h"

#define WRITERS 4
#define SERIES_PER_WRITER 25
#define STEPS 2000

static int64_t T0 = 1700000000000;
static _Atomic int writers_done;
static _Atomic long reader_checks;
static pthread_barrier_t lockstep;

static double val(int w, int s, int64_t ts) { return w * 100000.0 + s * 1000.0 + (double)((ts - T0) / 1000) * 0.5; }

typedef struct {
  tsdb_t *db;
  int w;
} arg_t;

static void *writer(void *p) {
  arg_t *a = p;
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < STEPS; i++) {
    tsdb_batch_reset(b);
    int64_t ts = T0 + (int64_t)i * 10000;
    for (int s = 0; s < SERIES_PER_WRITER; s++) {
      char wv[8], sv[8];
      snprintf(wv, sizeof wv, "%d", a->w);
      snprintf(sv, sizeof sv, "%d", s);
      tsdb_label_t ls[] = {{"__name__", "c"}, {"s", sv}, {"w", wv}};
      assert_int_equal(tsdb_batch_series(b, ls, 3), 0);
      assert_int_equal(tsdb_batch_sample(b, ts, val(a->w, s, ts)), 0);
    }
    tsdb_append_result_t r;
    assert_int_equal(tsdb_append(a->db, "", b, &r), 0);
    if (r.samples_added != SERIES_PER_WRITER)
      for (size_t e = 0; e < r.nerrors; e++)
        fprintf(stderr, "writer %d step %d: %s\n", a->w, i, r.errors[e].message);
    /* Writers stay within a few steps of each other: a writer left minutes behind would find
     * its range already persisted and its samples out of bounds (as in Prometheus). */
    if (i % 3 == 2) pthread_barrier_wait(&lockstep);
    assert_int_equal(r.samples_added, SERIES_PER_WRITER);
  }
  tsdb_batch_free(b);
  atomic_fetch_add(&writers_done, 1);
  return NULL;
}

static void check_all(tsdb_t *db) {
  tsdb_query_t *q;
  char err[64];
  assert_int_equal(tsdb_select(db, "", NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  int rc;
  while ((rc = tsdb_query_next(q)) == 1) {
    size_t nl;
    const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
    assert_int_equal(nl, 3);
    int s = atoi(ls[1].value), w = atoi(ls[2].value);
    const int64_t *ts;
    const double *v;
    size_t n = tsdb_query_samples(q, &ts, &v);
    for (size_t i = 0; i < n; i++) {
      if (i) assert_true(ts[i] > ts[i - 1]);
      assert_true(v[i] == val(w, s, ts[i]));
    }
    atomic_fetch_add(&reader_checks, 1);
  }
  assert_int_equal(rc, 0);
  tsdb_query_free(q);
}

static void *reader(void *p) {
  tsdb_t *db = p;
  while (atomic_load(&writers_done) < WRITERS) check_all(db);
  return NULL;
}

static void *maint(void *p) {
  tsdb_t *db = p;
  while (atomic_load(&writers_done) < WRITERS) {
    /* Not tsdb_flush: it persists the whole head and so closes the range of a writer one
     * step behind. Background persistence (block span 10 min) runs meanwhile. */
    assert_int_equal(tsdb_compact(db), 0);
    usleep(20000);
  }
  return NULL;
}

static void test_concurrent(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.block_span_ms = 600 * 1000; /* 10 min of data: persistence keeps happening */
  o.ooo_window_ms = 60 * 1000;
  o.background = true;
  tsdb_t *db = tu_open(dir, &o);
  pthread_barrier_init(&lockstep, NULL, WRITERS);
  pthread_t w[WRITERS], r[2], m;
  arg_t a[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    a[i] = (arg_t){db, i};
    pthread_create(&w[i], NULL, writer, &a[i]);
  }
  for (int i = 0; i < 2; i++) pthread_create(&r[i], NULL, reader, db);
  pthread_create(&m, NULL, maint, db);
  for (int i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
  for (int i = 0; i < 2; i++) pthread_join(r[i], NULL);
  pthread_join(m, NULL);
  pthread_barrier_destroy(&lockstep);
  assert_true(atomic_load(&reader_checks) > 0);
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(ns, WRITERS * SERIES_PER_WRITER);
  assert_int_equal(nsm, WRITERS * SERIES_PER_WRITER * STEPS);
  check_all(db);
  assert_int_equal(tsdb_flush(db), 0);
  check_all(db);
  tsdb_close(db);
  db = tu_open(dir, NULL);
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(nsm, WRITERS * SERIES_PER_WRITER * STEPS);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

int main(void) {
  log_set_level(LOG_WARN);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_concurrent)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
