/* Unit tests for the self-metrics registry: get-or-create identity, atomic updates from
 * several threads, histogram buckets, exposition in both formats, foreach, collectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "core/metrics.h"

static void test_identity(void **state) {
  (void)state;
  metrics_registry_t *r = metrics_registry_new();
  metrics_counter_t *a = metrics_counter(r, "x_total", "help", "b", "2", "a", "1", NULL);
  metrics_counter_t *b = metrics_counter(r, "x_total", "help", "a", "1", "b", "2", NULL);
  metrics_counter_t *c = metrics_counter(r, "x_total", "help", "a", "1", NULL);
  assert_non_null(a);
  assert_ptr_equal(a, b); /* label order does not matter */
  assert_ptr_not_equal(a, c);
  /* type clash, bad names, duplicate label */
  assert_null(metrics_gauge(r, "x_total", "h", NULL));
  assert_null(metrics_counter(r, "1bad", "h", NULL));
  assert_null(metrics_counter(r, "ok_total", "h", "bad-label", "v", NULL));
  assert_null(metrics_counter(r, "ok_total", "h", "__reserved", "v", NULL));
  assert_null(metrics_counter(r, "ok_total", "h", "a", "1", "a", "2", NULL));
  assert_null(metrics_histogram(r, "h_seconds", "h", NULL, 0, "le", "1", NULL));
  metrics_counter_add(a, 2.5);
  metrics_counter_add(a, -1);  /* ignored */
  metrics_counter_add(a, NAN); /* ignored */
  metrics_counter_inc(a);
  assert_true(metrics_counter_get(a) == 3.5);
  metrics_counter_add(NULL, 1); /* no-op */
  metrics_gauge_t *g = metrics_gauge(r, "g", "gauge", NULL);
  metrics_gauge_set(g, 10);
  metrics_gauge_add(g, -4);
  assert_true(metrics_gauge_get(g) == 6);
  metrics_counter_add(c, 1);
  assert_true(metrics_family_sum(r, "x_total") == 4.5);
  assert_true(metrics_family_sum(r, "nope") == 0);
  /* many children force index growth */
  char v[16];
  for (int i = 0; i < 500; i++) {
    snprintf(v, sizeof v, "%d", i);
    metrics_counter_inc(metrics_counter(r, "many_total", "m", "i", v, NULL));
  }
  for (int i = 0; i < 500; i += 7) {
    snprintf(v, sizeof v, "%d", i);
    metrics_counter_inc(metrics_counter(r, "many_total", "m", "i", v, NULL));
  }
  assert_true(metrics_family_sum(r, "many_total") == 500 + 72);
  metrics_registry_free(r);
}

typedef struct {
  metrics_registry_t *r;
  metrics_histogram_t *h;
} thr_arg_t;

static void *hammer(void *p) {
  thr_arg_t *a = p;
  for (int i = 0; i < 20000; i++) {
    metrics_counter_inc(metrics_counter(a->r, "req_total", "r", "code", (i & 1) ? "200" : "500", NULL));
    metrics_histogram_observe(a->h, (i % 10) * 0.1);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  metrics_registry_t *r = metrics_registry_new();
  thr_arg_t a = {r, metrics_histogram(r, "lat_seconds", "l", NULL, 0, NULL)};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, &a);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_true(metrics_family_sum(r, "req_total") == 80000);
  assert_int_equal(metrics_histogram_count(a.h), 80000);
  assert_true(fabs(metrics_histogram_sum(a.h) - 4 * 2000 * 4.5) < 1e-6);
  metrics_registry_free(r);
}

static void test_expose(void **state) {
  (void)state;
  metrics_registry_t *r = metrics_registry_new();
  metrics_counter_add(metrics_counter(r, "b_total", "B things.", "path", "/a\"b\\c\nd", NULL), 3);
  metrics_gauge_set(metrics_gauge(r, "a_gauge", "A gauge\nwith newline.", NULL), 1.5);
  double bounds[] = {0.1, 1};
  metrics_histogram_t *h = metrics_histogram(r, "c_seconds", "C.", bounds, 2, "z", "1", "a", "2", NULL);
  metrics_histogram_observe(h, 0.05);
  metrics_histogram_observe(h, 0.5);
  metrics_histogram_observe(h, 5);
  sb_t sb = {0};
  assert_int_equal(metrics_expose(r, &sb, METRICS_FMT_PROMETHEUS), 0);
  const char *want =
      "# HELP a_gauge A gauge\\nwith newline.\n"
      "# TYPE a_gauge gauge\n"
      "a_gauge 1.5\n"
      "# HELP b_total B things.\n"
      "# TYPE b_total counter\n"
      "b_total{path=\"/a\\\"b\\\\c\\nd\"} 3\n"
      "# HELP c_seconds C.\n"
      "# TYPE c_seconds histogram\n"
      "c_seconds_bucket{a=\"2\",le=\"0.1\",z=\"1\"} 1\n"
      "c_seconds_bucket{a=\"2\",le=\"1\",z=\"1\"} 2\n"
      "c_seconds_bucket{a=\"2\",le=\"+Inf\",z=\"1\"} 3\n"
      "c_seconds_sum{a=\"2\",z=\"1\"} 5.55\n"
      "c_seconds_count{a=\"2\",z=\"1\"} 3\n";
  assert_string_equal(sb.buf, want);
  sb_reset(&sb);
  assert_int_equal(metrics_expose(r, &sb, METRICS_FMT_OPENMETRICS), 0);
  assert_non_null(strstr(sb.buf, "# TYPE b counter\nb_total{"));
  sb_free(&sb);
  metrics_registry_free(r);
}

typedef struct {
  int n;
  double bucket_inf;
  int le_pos_ok;
} fe_t;

static void fe_cb(void *ctx, const char *name, const char *const *labels, size_t npairs, double value) {
  fe_t *f = ctx;
  f->n++;
  for (size_t i = 1; i < npairs; i++)
    if (strcmp(labels[2 * (i - 1)], labels[2 * i]) >= 0) f->le_pos_ok = 0;
  if (strcmp(name, "h_bucket") == 0)
    for (size_t i = 0; i < npairs; i++)
      if (strcmp(labels[2 * i], "le") == 0 && strcmp(labels[2 * i + 1], "+Inf") == 0) f->bucket_inf = value;
}

static int ncollect;
static void collector(metrics_registry_t *r, void *ctx) {
  (void)ctx;
  ncollect++;
  metrics_gauge_set(metrics_gauge(r, "collected", "c", NULL), ncollect);
}

static void test_foreach_and_collectors(void **state) {
  (void)state;
  metrics_registry_t *r = metrics_registry_new();
  assert_int_equal(metrics_add_collector(r, collector, NULL), 0);
  metrics_histogram_t *h = metrics_histogram(r, "h", "h", NULL, 0, "a", "x", "m", "y", NULL);
  metrics_histogram_observe(h, 0.3);
  metrics_histogram_observe(h, 30);
  fe_t f = {0, 0, 1};
  metrics_foreach(r, fe_cb, &f);
  /* 11 default buckets + Inf + sum + count + the collector's gauge */
  assert_int_equal(f.n, 12 + 2 + 1);
  assert_true(f.bucket_inf == 2);
  assert_int_equal(f.le_pos_ok, 1);
  assert_int_equal(ncollect, 1);
  sb_t sb = {0};
  metrics_expose(r, &sb, METRICS_FMT_PROMETHEUS);
  assert_non_null(strstr(sb.buf, "collected 2\n"));
  sb_free(&sb);
  metrics_registry_free(r);
}

static void test_process(void **state) {
  (void)state;
  metrics_registry_t *r = metrics_registry_new();
  assert_int_equal(metrics_register_process(r), 0);
  sb_t sb = {0};
  metrics_expose(r, &sb, METRICS_FMT_PROMETHEUS);
  assert_non_null(strstr(sb.buf, "# TYPE process_cpu_seconds_total counter"));
  assert_non_null(strstr(sb.buf, "process_resident_memory_bytes "));
  assert_non_null(strstr(sb.buf, "process_open_fds "));
  assert_true(metrics_family_sum(r, "process_threads") >= 1);
  assert_true(metrics_family_sum(r, "process_resident_memory_bytes") > 1e5);
  assert_true(metrics_family_sum(r, "process_start_time_seconds") > 1.5e9);
  sb_free(&sb);
  metrics_registry_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_identity),   cmocka_unit_test(test_threads),
      cmocka_unit_test(test_expose),     cmocka_unit_test(test_foreach_and_collectors),
      cmocka_unit_test(test_process),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
