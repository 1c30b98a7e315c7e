/* Series-ref fast path: tsdb_append_refs returns refs, tsdb_batch_series_ref appends by
 * them; stale, foreign and forged refs are rejected per series (never a wrong series). */
#include "tsdb_test_util.h"

#define T0 1700000000000LL

/* Appends one sample per series {__name__="m", s=<names[i]>} by labels; refs out. */
static void append_labels(tsdb_t *db, const char *tenant, const char *const *names, size_t n, int64_t ts,
                          double base, tsdb_series_ref_t *refs) {
  tsdb_batch_t *b = tsdb_batch_new();
  for (size_t i = 0; i < n; i++) {
    tsdb_label_t ls[2] = {{"__name__", "m"}, {"s", names[i]}};
    assert_int_equal(tsdb_batch_series(b, ls, 2), 0);
    assert_int_equal(tsdb_batch_sample(b, ts, base + (double)i), 0);
  }
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append_refs(db, tenant, b, &res, refs), 0);
  assert_int_equal(res.samples_added, n);
  assert_int_equal(res.series_rejected, 0);
  tsdb_batch_free(b);
}

/* The samples of {s=name} in tenant, as "ts=v ..." */
static char *series_dump(tsdb_t *db, const char *tenant, const char *name) {
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "s", name};
  return tu_dump(db, tenant, &m, 1, INT64_MIN, INT64_MAX, NULL, NULL);
}

static size_t series_samples(tsdb_t *db, const char *tenant, const char *name) {
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "s", name};
  size_t ns, nsm;
  free(tu_dump(db, tenant, &m, 1, INT64_MIN, INT64_MAX, &ns, &nsm));
  return nsm;
}

static void test_ref_round_trip(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  const char *names[3] = {"a", "b", "c"};
  tsdb_series_ref_t refs[3], refs2[3];
  append_labels(db, "", names, 3, T0, 10, refs);
  for (size_t i = 0; i < 3; i++) {
    assert_true(refs[i] != 0);
    for (size_t j = 0; j < i; j++) assert_true(refs[i] != refs[j]);
  }
  /* The same label sets again resolve to the same refs. */
  append_labels(db, "", names, 3, T0 + 1000, 20, refs2);
  assert_memory_equal(refs, refs2, sizeof refs);

  /* By ref, in another order: each sample lands in its own series. */
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(tsdb_batch_series_ref(b, 0), MD_EINVAL);
  assert_int_equal(tsdb_batch_sample(b, T0, 1), MD_EINVAL); /* no series open */
  for (size_t k = 0; k < 3; k++) {
    size_t i = 2 - k;
    assert_int_equal(tsdb_batch_series_ref(b, refs[i]), 0);
    assert_int_equal(tsdb_batch_sample(b, T0 + 2000, 30 + (double)i), 0);
    assert_int_equal(tsdb_batch_sample(b, T0 + 3000, 40 + (double)i), 0);
  }
  assert_int_equal(tsdb_batch_series_count(b), 3);
  const tsdb_label_t *ls;
  size_t nl = 99, nsm = 0;
  tsdb_batch_get(b, 1, &ls, &nl, NULL, &nsm);
  assert_int_equal(nl, 0);
  assert_int_equal(nsm, 2);
  assert_true(tsdb_batch_get_ref(b, 1) == refs[1]);
  tsdb_append_result_t res;
  tsdb_series_ref_t out[3] = {0};
  assert_int_equal(tsdb_append_refs(db, "", b, &res, out), 0);
  assert_int_equal(res.samples_added, 6);
  assert_int_equal(res.series_created, 0);
  assert_int_equal(res.series_rejected, 0);
  assert_int_equal(res.series_stale_refs, 0);
  assert_true(out[0] == refs[2] && out[1] == refs[1] && out[2] == refs[0]);
  /* A sample rejected on its own keeps the ref; plain tsdb_append takes refs too. */
  tsdb_batch_reset(b);
  assert_int_equal(tsdb_batch_series_ref(b, refs[0]), 0);
  assert_int_equal(tsdb_batch_sample(b, T0 + 3000, -1), 0); /* duplicate, other value */
  assert_int_equal(tsdb_append_refs(db, "", b, &res, out), 0);
  assert_int_equal(res.samples_rejected, 1);
  assert_int_equal(res.errors[0].reason, TSDB_REJECT_DUPLICATE);
  assert_true(out[0] == refs[0]);
  tsdb_batch_reset(b);
  assert_int_equal(tsdb_batch_series_ref(b, refs[0]), 0);
  assert_int_equal(tsdb_batch_sample(b, T0 + 4000, 50), 0);
  assert_int_equal(tsdb_append(db, "", b, &res), 0);
  assert_int_equal(res.samples_added, 1);
  tsdb_batch_free(b);

  for (size_t i = 0; i < 3; i++) {
    char want[256];
    snprintf(want, sizeof want, "{__name__=m,s=%s,}:", names[i]);
    char *d = series_dump(db, "", names[i]);
    assert_non_null(strstr(d, want));
    /* Values 10+i, 20+i, 30+i, 40+i: each series got exactly its own samples. */
    for (int k = 1; k <= 4; k++) {
      double v = 10.0 * k + (double)i;
      uint64_t bits;
      memcpy(&bits, &v, 8);
      char s[64];
      snprintf(s, sizeof s, " %lld/%016llx", (long long)(T0 + 1000 * (k - 1)), (unsigned long long)bits);
      assert_non_null(strstr(d, s));
    }
    free(d);
    assert_int_equal(series_samples(db, "", names[i]), i == 0 ? 5 : 4);
  }
  /* Refs survive in the WAL as plain series refs: a restart replays everything. */
  tsdb_close(db);
  db = tu_open(dir, NULL);
  assert_int_equal(series_samples(db, "", "a"), 5);
  assert_int_equal(series_samples(db, "", "c"), 4);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

/* Expects the single-series batch {ref, one sample} to be rejected as a stale ref. */
static void expect_stale(tsdb_t *db, const char *tenant, tsdb_series_ref_t ref, int64_t ts) {
  tsdb_stats_t before, after;
  tsdb_get_stats(db, &before);
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(tsdb_batch_series_ref(b, ref), 0);
  assert_int_equal(tsdb_batch_sample(b, ts, 7), 0);
  tsdb_append_result_t res;
  tsdb_series_ref_t out = 12345;
  assert_int_equal(tsdb_append_refs(db, tenant, b, &res, &out), 0);
  assert_true(out == 0);
  assert_int_equal(res.samples_added, 0);
  assert_int_equal(res.series_rejected, 1);
  assert_int_equal(res.series_stale_refs, 1);
  assert_int_equal(res.samples_rejected, 1);
  assert_int_equal(res.nerrors, 1);
  assert_int_equal(res.errors[0].reason, TSDB_REJECT_STALE_REF);
  assert_int_equal(res.errors[0].series_index, 0);
  assert_non_null(strstr(res.errors[0].message, "labels"));
  tsdb_batch_free(b);
  tsdb_get_stats(db, &after);
  /* The caller resends these samples: they are not counted as lost. */
  assert_int_equal(after.samples_rejected, before.samples_rejected);
  assert_int_equal(after.samples_appended, before.samples_appended);
}

static void test_stale_after_gc_and_restart(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  o.block_span_ms = 3600 * 1000;
  tsdb_t *db = tu_open(dir, &o);
  const char *names[2] = {"a", "b"};
  tsdb_series_ref_t refs[2], again[2];
  append_labels(db, "", names, 2, T0, 1, refs);
  /* Same pattern as test_series_gc: both series end up without head data and are freed. */
  assert_int_equal(tsdb_flush(db), 0);
  append_labels(db, "", names, 1, T0 + 1000, 3, NULL);
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.series, 0);
  expect_stale(db, "", refs[0], T0 + 5000);
  expect_stale(db, "", refs[1], T0 + 5000);
  assert_int_equal(series_samples(db, "", "a"), 2);
  assert_int_equal(series_samples(db, "", "b"), 1);
  /* The retry with labels creates a new series with a new ref; the old one stays stale. */
  append_labels(db, "", names, 2, T0 + 5000, 100, again);
  assert_true(again[0] != refs[0] && again[1] != refs[1] && again[0] && again[1]);
  expect_stale(db, "", refs[0], T0 + 6000);
  assert_int_equal(series_samples(db, "", "a"), 3);
  assert_int_equal(series_samples(db, "", "b"), 2);

  /* After a restart the same series get refs again (possibly the same numbers), but the
   * refs of the closed instance are stale. */
  tsdb_close(db);
  db = tu_open(dir, &o);
  expect_stale(db, "", again[0], T0 + 7000);
  expect_stale(db, "", again[1], T0 + 7000);
  tsdb_series_ref_t fresh[2];
  append_labels(db, "", names, 2, T0 + 7000, 200, fresh);
  assert_true(fresh[0] != again[0] && fresh[1] != again[1]);
  assert_int_equal(series_samples(db, "", "a"), 4);
  assert_int_equal(series_samples(db, "", "b"), 3);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

static void test_wrong_tenant_and_instance(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), *dir2 = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  tsdb_t *db2 = tu_open(dir2, NULL);
  const char *names[2] = {"x", "y"};
  tsdb_series_ref_t ra[2], rb[2], r2[2];
  append_labels(db, "alpha", names, 2, T0, 1, ra);
  append_labels(db, "beta", names, 2, T0, 2, rb);
  append_labels(db2, "alpha", names, 2, T0, 3, r2);
  assert_true(ra[0] != rb[0] && ra[0] != rb[1]);
  /* Another tenant's ref, another open database's ref (same tenant, same labels, and the
   * same series number inside db2), unknown tenant: all stale, nothing written anywhere. */
  expect_stale(db, "beta", ra[0], T0 + 1000);
  expect_stale(db, "alpha", rb[1], T0 + 1000);
  expect_stale(db, "gamma", ra[0], T0 + 1000);
  expect_stale(db, "alpha", r2[0], T0 + 1000);
  expect_stale(db2, "alpha", ra[0], T0 + 1000);
  assert_true((uint32_t)r2[0] == (uint32_t)ra[0]); /* only the instance part differs */
  assert_int_equal(series_samples(db, "alpha", "x"), 1);
  assert_int_equal(series_samples(db, "beta", "x"), 1);
  assert_int_equal(series_samples(db, "beta", "y"), 1);
  assert_int_equal(series_samples(db2, "alpha", "x"), 1);
  assert_int_equal(series_samples(db, "gamma", "x"), 0);
  tsdb_close(db2);
  tsdb_close(db);
  md_rm_rf(dir);
  md_rm_rf(dir2);
  free(dir);
  free(dir2);
}

static void test_mixed_batch(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_t *db = tu_open(dir, NULL);
  const char *names[3] = {"a", "b", "c"};
  tsdb_series_ref_t refs[3];
  append_labels(db, "", names, 3, T0, 1, refs);
  tsdb_series_ref_t forged[] = {
      refs[0] ^ ((uint64_t)1 << 40),          /* other instance */
      (refs[0] & ~(uint64_t)UINT32_MAX) | 0xfffffff0u, /* this instance, never created */
      (refs[0] & ~(uint64_t)UINT32_MAX),      /* this instance, series ref 0 */
      UINT64_MAX,
  };
  /* 300 series (more than the 256 kept on the stack): labels, refs, forged refs, new. */
  tsdb_batch_t *b = tsdb_batch_new();
  size_t nforged = 0, nref = 0, nlab = 0;
  for (size_t i = 0; i < 300; i++) {
    if (i % 7 == 3) {
      assert_int_equal(tsdb_batch_series_ref(b, forged[nforged++ % 4]), 0);
    } else if (i % 2 == 0) {
      assert_int_equal(tsdb_batch_series_ref(b, refs[i % 3]), 0);
      nref++;
    } else {
      char v[16];
      snprintf(v, sizeof v, "n%zu", i);
      tsdb_label_t ls[2] = {{"__name__", "m"}, {"s", i % 5 == 1 ? names[i % 3] : v}};
      assert_int_equal(tsdb_batch_series(b, ls, 2), 0);
      nlab++;
    }
    assert_int_equal(tsdb_batch_sample(b, T0 + 1000 + (int64_t)i, (double)i), 0);
  }
  tsdb_series_ref_t out[300];
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append_refs(db, "", b, &res, out), 0);
  assert_int_equal(res.series_stale_refs, nforged);
  assert_int_equal(res.series_rejected, nforged);
  assert_int_equal(res.samples_rejected, nforged);
  assert_int_equal(res.samples_added, 300 - nforged);
  for (size_t i = 0; i < 300; i++) {
    if (i % 7 == 3) {
      assert_true(out[i] == 0);
      continue;
    }
    assert_true(out[i] != 0);
    if (i % 2 == 0) assert_true(out[i] == refs[i % 3]);
    else if (i % 5 == 1) assert_true(out[i] == refs[i % 3]);
  }
  /* Errors name the forged series by batch index. */
  size_t nrep = res.nerrors;
  assert_int_equal(nrep, nforged < TSDB_MAX_REPORTED_ERRORS ? nforged : TSDB_MAX_REPORTED_ERRORS);
  for (size_t k = 0; k < nrep; k++) {
    assert_int_equal(res.errors[k].reason, TSDB_REJECT_STALE_REF);
    assert_int_equal(res.errors[k].series_index % 7, 3);
  }
  tsdb_batch_free(b);
  /* Every accepted sample is in the series its ref or labels named. */
  size_t total = 0;
  for (size_t k = 0; k < 3; k++) total += series_samples(db, "", names[k]);
  size_t ns, nsm;
  free(tu_dump(db, "", NULL, 0, INT64_MIN, INT64_MAX, &ns, &nsm));
  assert_int_equal(nsm, 3 + 300 - nforged);
  size_t for_abc = 3;
  for (size_t i = 0; i < 300; i++)
    if (i % 7 != 3 && (i % 2 == 0 || i % 5 == 1)) for_abc++;
  assert_int_equal(total, for_abc);
  (void)nref;
  (void)nlab;
  tsdb_matcher_t m = {TSDB_MATCH_EQ, "s", "b"};
  tsdb_query_t *q;
  char err[64];
  assert_int_equal(tsdb_select(db, "", &m, 1, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  assert_int_equal(tsdb_query_next(q), 1);
  const int64_t *ts;
  const double *v;
  size_t n = tsdb_query_samples(q, &ts, &v);
  for (size_t k = 1; k < n; k++) { /* sample i went to series names[i % 3] */
    size_t i = (size_t)(ts[k] - T0 - 1000);
    assert_int_equal(i % 3, 1);
    assert_true(v[k] == (double)i);
  }
  tsdb_query_free(q);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

int main(void) {
  log_set_level(LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ref_round_trip),
      cmocka_unit_test(test_stale_after_gc_and_restart),
      cmocka_unit_test(test_wrong_tenant_and_instance),
      cmocka_unit_test(test_mixed_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
