/* Unit tests for PromQL evaluation over a real tsdb in a temporary directory: selectors and
 * lookback, rate, aggregation, matching errors, range queries, JSON output, tenants, limits
 * and cancellation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "promql/promql.h"

typedef struct fixture {
  char dir[64];
  tsdb_t *db;
} fixture_t;

/* Appends name{k=v} with values start, start+step ... at 0, 15 s, 30 s ... */
static void add_series(tsdb_t *db, const char *tenant, const char *name, const char *k, const char *v, int n,
                       double start, double step) {
  tsdb_batch_t *b = tsdb_batch_new();
  tsdb_label_t l[2] = {{"__name__", name}, {k, v}};
  assert_int_equal(tsdb_batch_series(b, l, k ? 2 : 1), 0);
  for (int i = 0; i < n; i++) assert_int_equal(tsdb_batch_sample(b, (int64_t)i * 15000, start + step * i), 0);
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(db, tenant, b, &res), 0);
  assert_int_equal(res.samples_rejected, 0);
  tsdb_batch_free(b);
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/promql-unit-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.retention_ms = 0;
  o.background = false;
  char err[256];
  if (tsdb_open(f->dir, &o, &f->db, err, sizeof err) < 0) return -1;
  /* 41 samples (0..10 min) per series. */
  add_series(f->db, "t1", "req_total", "job", "a", 41, 0, 10);   /* 10 per 15 s */
  add_series(f->db, "t1", "req_total", "job", "b", 41, 0, 20);
  add_series(f->db, "t1", "load", "host", "h1", 41, 1, 0);
  add_series(f->db, "t2", "req_total", "job", "a", 41, 1000, 0);  /* other tenant */
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  tsdb_close(f->db);
  md_rm_rf(f->dir);
  free(f);
  return 0;
}

static promql_result_t *instant(fixture_t *f, const char *tenant, const char *q, int64_t t) {
  promql_result_t *r = NULL;
  char err[512];
  int rc = promql_query_instant(f->db, tenant, q, strlen(q), t, NULL, &r, err, sizeof err);
  if (rc < 0) fail_msg("%s: %s", q, err);
  return r;
}

static double only_value(promql_result_t *r) {
  assert_int_equal(promql_result_series_count(r), 1);
  const int64_t *ts;
  const double *v;
  assert_int_equal(promql_result_points(r, 0, &ts, &v), 1);
  return v[0];
}

static void test_selector_and_lookback(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = instant(f, "t1", "req_total{job=\"a\"}", 600000);
  assert_true(only_value(r) == 400);
  size_t nl;
  const tsdb_label_t *l = promql_result_labels(r, 0, &nl);
  assert_int_equal(nl, 2);
  assert_string_equal(l[0].name, "__name__");
  promql_result_free(r);
  /* 5 min after the last sample (at 600 s) the series is gone: the window is left-open. */
  r = instant(f, "t1", "req_total", 900000);
  assert_int_equal(promql_result_series_count(r), 0);
  promql_result_free(r);
  r = instant(f, "t1", "req_total", 899999);
  assert_int_equal(promql_result_series_count(r), 2);
  promql_result_free(r);
}

static void test_rate_and_aggregation(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = instant(f, "t1", "rate(req_total{job=\"a\"}[1m])", 600000);
  assert_true(fabs(only_value(r) - 10.0 / 15.0) < 1e-12);
  size_t nl;
  promql_result_labels(r, 0, &nl);
  assert_int_equal(nl, 1); /* name dropped */
  promql_result_free(r);
  r = instant(f, "t1", "sum(rate(req_total[5m]))", 600000);
  assert_true(fabs(only_value(r) - 30.0 / 15.0) < 1e-9);
  promql_result_free(r);
  r = instant(f, "t1", "count by (job) (req_total)", 600000);
  assert_int_equal(promql_result_series_count(r), 2);
  promql_result_free(r);
  r = instant(f, "t1", "topk(1, req_total)", 600000);
  const tsdb_label_t *l = promql_result_labels(r, 0, &nl);
  assert_string_equal(l[1].value, "b");
  assert_true(only_value(r) == 800);
  promql_result_free(r);
}

static void test_tenants_are_separate(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = instant(f, "t2", "req_total", 600000);
  assert_true(only_value(r) == 1000);
  promql_result_free(r);
  r = instant(f, "nobody", "req_total", 600000);
  assert_int_equal(promql_result_series_count(r), 0);
  promql_result_free(r);
}

static void test_range_query_and_json(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = NULL;
  char err[256];
  const char *q = "sum by (job) (req_total)";
  assert_int_equal(promql_query_range(f->db, "t1", q, strlen(q), 0, 60000, 30000, NULL, &r, err, sizeof err), 0);
  assert_int_equal(promql_result_type(r), PROMQL_VALUE_MATRIX);
  assert_int_equal(promql_result_series_count(r), 2);
  const int64_t *ts;
  const double *v;
  assert_int_equal(promql_result_points(r, 1, &ts, &v), 3);
  assert_true(ts[2] == 60000 && v[2] == 80);
  sb_t sb = {0};
  promql_result_json(r, &sb);
  assert_string_equal(sb.buf,
                      "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"job\":\"a\"},\"values\":[[0,\"0\"],[30,\"20\"],[60,\"40\"]]},"
                      "{\"metric\":{\"job\":\"b\"},\"values\":[[0,\"0\"],[30,\"40\"],[60,\"80\"]]}]}");
  sb_free(&sb);
  promql_result_free(r);
  r = instant(f, "t1", "load * 2", 1500);
  promql_result_json(r, &sb);
  assert_string_equal(sb.buf, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"host\":\"h1\"},\"value\":[1.5,\"2\"]}]}");
  sb_free(&sb);
  promql_result_free(r);
  r = instant(f, "t1", "\"hi\"", 2000);
  promql_result_json(r, &sb);
  assert_string_equal(sb.buf, "{\"resultType\":\"string\",\"result\":[2,\"hi\"]}");
  sb_free(&sb);
  promql_result_free(r);
  r = instant(f, "t1", "1/0", 0);
  promql_result_json(r, &sb);
  assert_string_equal(sb.buf, "{\"resultType\":\"scalar\",\"result\":[0,\"+Inf\"]}");
  sb_free(&sb);
  promql_result_free(r);
}

static void test_execution_errors(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = NULL;
  char err[512];
  /* Both series become {} after the name is dropped. */
  const char *q = "req_total * 1";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err), 0);
  promql_result_free(r);
  q = "label_replace(req_total, \"job\", \"x\", \"\", \"\")";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err), MD_ERR);
  assert_string_equal(err, "vector cannot contain metrics with the same labelset");
  assert_null(r);
  q = "req_total + on() load";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err), MD_ERR);
  assert_non_null(strstr(err, "many-to-one matching must be explicit"));
  q = "load + on() req_total";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err), MD_ERR);
  assert_non_null(strstr(err, "found duplicate series for the match group"));
  q = "foo[5m]";
  assert_int_equal(promql_query_range(f->db, "t1", q, strlen(q), 0, 1000, 100, NULL, &r, err, sizeof err), MD_EINVAL);
  q = "rate(";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 0, NULL, &r, err, sizeof err), MD_EINVAL);
}

static void test_limits_and_cancel(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = NULL;
  char err[512];
  promql_options_t o;
  promql_options_default(&o);
  o.max_samples = 50;
  const char *q = "sum(req_total[10m])";
  q = "count_over_time(req_total[10m])";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, &o, &r, err, sizeof err), MD_ELIMIT);
  assert_non_null(strstr(err, "too many samples"));
  promql_options_default(&o);
  o.max_series = 1;
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, &o, &r, err, sizeof err), MD_ELIMIT);
  promql_options_default(&o);
  atomic_int cancel = 1;
  o.cancel = &cancel;
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 600000, &o, &r, err, sizeof err), MD_ECANCELED);
  assert_false(promql_error_is_timeout(err));
  /* Lookback as an option: 10 s cannot reach a sample 15 s old. */
  promql_options_default(&o);
  o.lookback_ms = 10000;
  q = "load";
  assert_int_equal(promql_query_instant(f->db, "t1", q, strlen(q), 620000, &o, &r, err, sizeof err), 0);
  assert_int_equal(promql_result_series_count(r), 0);
  promql_result_free(r);
}

static void test_warnings(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = NULL;
  char err[512];
  const char *q = "sort(load)";
  assert_int_equal(promql_query_range(f->db, "t1", q, strlen(q), 0, 60000, 30000, NULL, &r, err, sizeof err), 0);
  const char *const *w;
  assert_int_equal(promql_result_warnings(r, &w), 1);
  assert_non_null(strstr(w[0], "PromQL warning: sort is ineffective"));
  promql_result_free(r);
  r = instant(f, "t1", "rate(load[1m])", 600000);
  assert_int_equal(promql_result_infos(r, &w), 1);
  assert_non_null(strstr(w[0], "might not be a counter"));
  promql_result_free(r);
}

/* Value of the series of r whose label k is v ("" = the series without k). */
static double value_where(promql_result_t *r, const char *k, const char *v) {
  for (size_t i = 0; i < promql_result_series_count(r); i++) {
    size_t nl;
    const tsdb_label_t *l = promql_result_labels(r, i, &nl);
    const char *got = "";
    for (size_t j = 0; j < nl; j++)
      if (!strcmp(l[j].name, k)) got = l[j].value;
    if (strcmp(got, v)) continue;
    const int64_t *ts;
    const double *vv;
    assert_int_equal(promql_result_points(r, i, &ts, &vv), 1);
    return vv[0];
  }
  fail_msg("no series with %s=\"%s\"", k, v);
  return NAN;
}

/* fill()/fill_left()/fill_right() and duration expressions that read the query's step. */
static void test_fill_and_duration_expressions(void **state) {
  fixture_t *f = *state;
  /* on(job): load has no job, so it matches neither req_total series. */
  promql_result_t *r = instant(f, "t1", "req_total + on(job) fill(0) load", 600000);
  assert_int_equal(promql_result_series_count(r), 3);
  assert_true(value_where(r, "job", "a") == 400);
  assert_true(value_where(r, "job", "b") == 800);
  assert_true(value_where(r, "job", "") == 1);
  promql_result_free(r);
  r = instant(f, "t1", "req_total + on(job) fill_right(-1) load", 600000);
  assert_int_equal(promql_result_series_count(r), 2);
  assert_true(value_where(r, "job", "a") == 399);
  promql_result_free(r);
  r = instant(f, "t1", "req_total + on(job) fill_left(7) load", 600000);
  assert_int_equal(promql_result_series_count(r), 1);
  assert_true(value_where(r, "job", "") == 8);
  promql_result_free(r);
  r = instant(f, "t1", "req_total + on(job) load", 600000);
  assert_int_equal(promql_result_series_count(r), 0);
  promql_result_free(r);
  r = instant(f, "t1", "req_total{job=\"a\"} offset (1m*2)", 600000);
  assert_true(only_value(r) == 320);
  promql_result_free(r);
  char err[512];
  const char *q = "req_total{job=\"a\"} offset step()";
  assert_int_equal(promql_query_range(f->db, "t1", q, strlen(q), 600000, 600000, 30000, NULL, &r, err, sizeof err), 0);
  assert_true(only_value(r) == 380);
  promql_result_free(r);
  /* A range that the query's step makes empty fails at evaluation, not at parsing. */
  q = "rate(req_total[step() - 30s])";
  assert_true(promql_query_range(f->db, "t1", q, strlen(q), 600000, 600000, 30000, NULL, &r, err, sizeof err) < 0);
  assert_non_null(strstr(err, "greater than 0"));
}

/* info(): data labels of target_info join on instance/job; a data matcher that rejects the empty
 * value drops series without an info partner. Own tenant, so other tests see no info series. */
static void test_info_function(void **state) {
  fixture_t *f = *state;
  add_series(f->db, "t3", "req_total", "job", "a", 41, 0, 10);
  add_series(f->db, "t3", "req_total", "job", "b", 41, 0, 20);
  tsdb_batch_t *b = tsdb_batch_new();
  tsdb_label_t l[3] = {{"__name__", "target_info"}, {"job", "a"}, {"version", "1.2"}};
  assert_int_equal(tsdb_batch_series(b, l, 3), 0);
  for (int i = 0; i < 41; i++) assert_int_equal(tsdb_batch_sample(b, (int64_t)i * 15000, 1), 0);
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(f->db, "t3", b, &res), 0);
  tsdb_batch_free(b);
  promql_result_t *r = instant(f, "t3", "info(req_total)", 600000);
  assert_int_equal(promql_result_series_count(r), 2);
  assert_true(value_where(r, "version", "1.2") == 400);
  assert_true(value_where(r, "version", "") == 800);
  promql_result_free(r);
  r = instant(f, "t3", "info(req_total, {version=~\".+\"})", 600000);
  assert_int_equal(promql_result_series_count(r), 1);
  assert_true(value_where(r, "job", "a") == 400);
  promql_result_free(r);
  r = instant(f, "t3", "info(req_total, {__name__=\"none_info\"})", 600000);
  assert_int_equal(promql_result_series_count(r), 2);
  assert_true(value_where(r, "job", "a") == 400);
  assert_true(value_where(r, "job", "b") == 800);
  for (size_t i = 0; i < 2; i++) {
    size_t nl;
    const tsdb_label_t *ls = promql_result_labels(r, i, &nl);
    for (size_t j = 0; j < nl; j++) assert_string_not_equal(ls[j].name, "version");
  }
  promql_result_free(r);
}

/* anchored / smoothed windows: req_total{job="a"} is 10 per 15 s (0 at 0 s, 400 at 600 s). */
static void test_extended_range_selectors(void **state) {
  fixture_t *f = *state;
  /* (547.5 s, 607.5 s]: anchor 360 (540 s), last 400 (600 s); no extrapolation. */
  promql_result_t *r = instant(f, "t1", "increase(req_total{job=\"a\"}[1m] anchored)", 607500);
  assert_true(only_value(r) == 40);
  promql_result_free(r);
  /* smoothed: 365 interpolated at 547.5 s, 400 held after the last sample at 607.5 s. */
  r = instant(f, "t1", "increase(req_total{job=\"a\"}[1m] smoothed)", 607500);
  assert_true(fabs(only_value(r) - 35) < 1e-9);
  promql_result_free(r);
  r = instant(f, "t1", "rate(req_total{job=\"a\"}[1m] smoothed)", 607500);
  assert_true(fabs(only_value(r) - 35.0 / 60) < 1e-12);
  promql_result_free(r);
  r = instant(f, "t1", "changes(req_total{job=\"a\"}[1m] anchored)", 607500);
  assert_true(only_value(r) == 4);
  promql_result_free(r);
  r = instant(f, "t1", "req_total{job=\"a\"} smoothed", 7500);
  assert_true(fabs(only_value(r) - 5) < 1e-12);
  promql_result_free(r);
  char err[512];
  const char *q = "max_over_time(req_total[1m] smoothed)";
  assert_true(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err) < 0);
  assert_string_equal(err, "smoothed modifier can only be used with: delta, increase, rate - not with max_over_time");
}

/* __type__/__unit__ go with __name__: dropped where it is dropped, ignored by matching. */
static void test_type_and_unit_labels(void **state) {
  fixture_t *f = *state;
  add_series(f->db, "t4", "m", "__type__", "counter", 41, 0, 1);
  add_series(f->db, "t4", "n", "__type__", "gauge", 41, 0, 2);
  promql_result_t *r = instant(f, "t4", "m", 600000);
  size_t nl;
  promql_result_labels(r, 0, &nl);
  assert_int_equal(nl, 2);
  promql_result_free(r);
  r = instant(f, "t4", "-m", 600000);
  promql_result_labels(r, 0, &nl);
  assert_int_equal(nl, 0);
  assert_true(only_value(r) == -40);
  promql_result_free(r);
  /* The two differ only in name and type, so they match one-to-one. */
  r = instant(f, "t4", "n / m", 600000);
  assert_true(only_value(r) == 2);
  promql_result_free(r);
}

/* count_values label names: any valid UTF-8 (3.x); invalid bytes quoted like Go's %q. */
static void test_count_values_label_names(void **state) {
  fixture_t *f = *state;
  promql_result_t *r = instant(f, "t1", "count_values(\"caf\u00e9-x\", load)", 600000);
  assert_true(only_value(r) == 1);
  size_t nl;
  const tsdb_label_t *l = promql_result_labels(r, 0, &nl);
  assert_int_equal(nl, 1);
  assert_string_equal(l[0].name, "caf\xc3\xa9-x");
  promql_result_free(r);
  char err[512];
  const char *q = "count_values(\"a\\xc5z\", load)";
  assert_true(promql_query_instant(f->db, "t1", q, strlen(q), 600000, NULL, &r, err, sizeof err) < 0);
  assert_string_equal(err, "invalid label name \"a\\xc5z\"");
}

/* topk/bottomk over many series and groups (bounded-heap selection, one-pass grouping): the
 * values come out in order and each group keeps its own k. */
static void test_topk_many_series(void **state) {
  fixture_t *f = *state;
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < 200; i++) {
    char id[16], grp[16];
    snprintf(id, sizeof id, "s%03d", i);
    snprintf(grp, sizeof grp, "g%d", i % 10);
    tsdb_label_t l[3] = {{"__name__", "tk"}, {"grp", grp}, {"id", id}};
    assert_int_equal(tsdb_batch_series(b, l, 3), 0);
    assert_int_equal(tsdb_batch_sample(b, 0, i == 17 ? NAN : (double)((i * 37) % 101)), 0);
  }
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(f->db, "t6", b, &res), 0);
  tsdb_batch_free(b);
  static const char *const q[] = {"topk(7, tk)", "bottomk(7, tk)"};
  for (int d = 0; d < 2; d++) {
    promql_result_t *r = instant(f, "t6", q[d], 0);
    assert_int_equal(promql_result_series_count(r), 7);
    double prev = d ? -INFINITY : INFINITY;
    for (size_t i = 0; i < 7; i++) {
      const int64_t *ts;
      const double *v;
      promql_result_points(r, i, &ts, &v);
      assert_false(isnan(v[0]));
      assert_true(d ? v[0] >= prev : v[0] <= prev);
      prev = v[0];
    }
    /* (i*37)%101 over 0..199 takes 100 and 0 twice each */
    assert_true(d ? prev == 3 : prev == 97);
    promql_result_free(r);
  }
  promql_result_t *r = instant(f, "t6", "count(topk by (grp) (2, tk))", 0);
  assert_true(only_value(r) == 20);
  promql_result_free(r);
  r = instant(f, "t6", "count(bottomk by (grp) (1000, tk))", 0);
  assert_true(only_value(r) == 200);
  promql_result_free(r);
}

/* 300 counters over 20 min (some reset, some have stale markers, some stop early), enough
 * series for a streamed range function to go through the reader/helper pipeline. */
static void add_pipeline_series(fixture_t *f) {
  tsdb_batch_t *b = tsdb_batch_new();
  for (int i = 0; i < 300; i++) {
    char id[16], grp[16];
    snprintf(id, sizeof id, "s%03d", i);
    snprintf(grp, sizeof grp, "g%d", i % 7);
    tsdb_label_t l[3] = {{"__name__", "pc_total"}, {"grp", grp}, {"id", id}};
    assert_int_equal(tsdb_batch_series(b, l, 3), 0);
    int n = i % 11 == 0 ? 40 : 81;
    double v = i * 3.7;
    for (int k = 0; k < n; k++) {
      v += (i % 13) + 0.1 * k;
      if (i % 5 == 0 && k == 37) v = 2.5; /* counter reset */
      double x = (i % 9 == 0 && k == 50) ? tsdb_stale_nan() : v;
      assert_int_equal(tsdb_batch_sample(b, (int64_t)k * 15000 + i, x), 0);
    }
  }
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(f->db, "t7", b, &res), 0);
  assert_int_equal(res.samples_rejected, 0);
  tsdb_batch_free(b);
}

static promql_result_t *range_opt(fixture_t *f, const char *q, const promql_options_t *o) {
  promql_result_t *r = NULL;
  char err[512];
  int rc = promql_query_range(f->db, "t7", q, strlen(q), 60000, 1200000, 30000, o, &r, err, sizeof err);
  if (rc < 0) fail_msg("%s: %s", q, err);
  return r;
}

/* Same series, labels, points and bit-identical values. */
static void assert_same_result(const char *q, promql_result_t *a, promql_result_t *b) {
  size_t n = promql_result_series_count(a);
  if (n != promql_result_series_count(b)) fail_msg("%s: %zu vs %zu series", q, n, promql_result_series_count(b));
  assert_true(n > 0);
  for (size_t i = 0; i < n; i++) {
    size_t na, nb;
    const tsdb_label_t *la = promql_result_labels(a, i, &na), *lb = promql_result_labels(b, i, &nb);
    assert_int_equal(na, nb);
    for (size_t k = 0; k < na; k++) {
      assert_string_equal(la[k].name, lb[k].name);
      assert_string_equal(la[k].value, lb[k].value);
    }
    const int64_t *ta, *tb;
    const double *va, *vb;
    size_t pa = promql_result_points(a, i, &ta, &va), pb = promql_result_points(b, i, &tb, &vb);
    assert_int_equal(pa, pb);
    for (size_t k = 0; k < pa; k++) {
      assert_int_equal(ta[k], tb[k]);
      if (memcmp(&va[k], &vb[k], sizeof(double))) fail_msg("%s: series %zu point %zu: %.17g vs %.17g", q, i, k, va[k], vb[k]);
    }
  }
}

static void test_streamed_pipeline_same_results(void **state) {
  fixture_t *f = *state;
  add_pipeline_series(f);
  promql_options_t par, ser;
  promql_options_default(&par);
  promql_options_default(&ser);
  ser.serial = true;
  /* Each query: streamed and pipelined (default), on one thread (serial), and over a
   * materialised input (the "+ 0" / "* 1" forms) must agree bit for bit. */
  static const char *const q[][2] = {
      {"sum by (grp) (rate(pc_total[2m]))", "sum by (grp) (rate(pc_total[2m]) + 0)"},
      {"sum(increase(pc_total[5m]))", "sum(increase(pc_total[5m]) * 1)"},
      {"avg without (id) (delta(pc_total[1m]))", "avg without (id) (delta(pc_total[1m]) * 1)"},
      {"stddev by (grp) (irate(pc_total[3m]))", "stddev by (grp) (irate(pc_total[3m]) * 1)"},
      {"stdvar(rate(pc_total[90s]))", "stdvar(rate(pc_total[90s]) * 1)"},
      {"max by (grp) (max_over_time(pc_total[3m]))", "max by (grp) (max_over_time(pc_total[3m]) * 1)"},
      {"min(resets(pc_total[10m]))", "min(resets(pc_total[10m]) * 1)"},
      {"count by (grp) (rate(pc_total[1m]))", "count by (grp) (rate(pc_total[1m]) * 1)"},
      {"group by (grp) (deriv(pc_total[4m]))", "group by (grp) (deriv(pc_total[4m]) * 1)"},
      {"sum by (__name__) (last_over_time(pc_total[2m]))", "sum by (__name__) (last_over_time(pc_total[2m]))"},
      {"rate(pc_total[2m])", "rate(pc_total[2m]) * 1"},
      {"topk(5, rate(pc_total[2m]))", "topk(5, rate(pc_total[2m]) * 1)"},
      {"quantile by (grp) (0.9, rate(pc_total[2m]))", "quantile by (grp) (0.9, rate(pc_total[2m]) * 1)"},
  };
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
    promql_result_t *a = range_opt(f, q[i][0], &par), *b = range_opt(f, q[i][0], &ser), *c = range_opt(f, q[i][1], &ser);
    assert_same_result(q[i][0], a, b);
    assert_same_result(q[i][1], a, c);
    promql_result_free(a);
    promql_result_free(b);
    promql_result_free(c);
  }
}

static void test_streamed_pipeline_limits(void **state) {
  fixture_t *f = *state;
  add_pipeline_series(f);
  promql_result_t *r = NULL;
  char err[512];
  const char *q = "sum by (grp) (rate(pc_total[2m]))";
  for (int serial = 0; serial < 2; serial++) {
    promql_options_t o;
    /* The samples limit trips inside the helper thread, past the first series. */
    promql_options_default(&o);
    o.serial = serial;
    o.max_samples = 15000;
    assert_int_equal(promql_query_range(f->db, "t7", q, strlen(q), 60000, 1200000, 30000, &o, &r, err, sizeof err),
                     MD_ELIMIT);
    assert_non_null(strstr(err, "too many samples"));
    /* The series limit trips in the reader while the helper runs. */
    promql_options_default(&o);
    o.serial = serial;
    o.max_series = 200;
    assert_int_equal(promql_query_range(f->db, "t7", q, strlen(q), 60000, 1200000, 30000, &o, &r, err, sizeof err),
                     MD_ELIMIT);
    assert_non_null(strstr(err, "too many series"));
    promql_options_default(&o);
    o.serial = serial;
    atomic_int cancel = 1;
    o.cancel = &cancel;
    assert_int_equal(promql_query_range(f->db, "t7", q, strlen(q), 60000, 1200000, 30000, &o, &r, err, sizeof err),
                     MD_ECANCELED);
    assert_null(r);
  }
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_selector_and_lookback), cmocka_unit_test(test_rate_and_aggregation),
      cmocka_unit_test(test_tenants_are_separate), cmocka_unit_test(test_range_query_and_json),
      cmocka_unit_test(test_execution_errors), cmocka_unit_test(test_limits_and_cancel),
      cmocka_unit_test(test_warnings), cmocka_unit_test(test_fill_and_duration_expressions),
      cmocka_unit_test(test_info_function), cmocka_unit_test(test_extended_range_selectors),
      cmocka_unit_test(test_type_and_unit_labels), cmocka_unit_test(test_count_values_label_names),
      cmocka_unit_test(test_topk_many_series),
      cmocka_unit_test_setup_teardown(test_streamed_pipeline_same_results, setup, teardown),
      cmocka_unit_test_setup_teardown(test_streamed_pipeline_limits, setup, teardown),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
