/* Track registry: seed 004 request/response shapes, counter/gauge/histogram/summary
 * semantics, type conflicts, tenants, limits, exposition and collection into batches. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

static ingest_track_t *new_reg(void) {
  ingest_track_t *r;
  char err[128];
  assert_int_equal(ingest_track_new(NULL, &r, err, sizeof err), 0);
  return r;
}

static int track(ingest_track_t *r, const char *body, bool batch, sb_t *out) {
  sb_reset(out);
  return ingest_track_json(r, body, strlen(body), batch, "default", true, md_now_ms(), out, NULL, NULL);
}

static void test_seed_shapes(void **state) {
  (void)state;
  ingest_track_t *r = new_reg();
  sb_t out = {0};
  assert_int_equal(
      track(r,
            "{\"name\":\"api_requests_total\",\"value\":1,\"type\":\"counter\",\"labels\":{"
            "\"service\":\"gateway\",\"endpoint\":\"/api/v1/instruments\",\"method\":\"GET\","
            "\"status_code\":\"200\"},\"service\":\"gateway-service\",\"tenant_id\":\"tenant-1\"}",
            false, &out),
      0);
  assert_string_equal(out.buf, "{\"success\":true,\"message\":\"Metric tracked successfully\"}");
  assert_int_equal(
      track(r,
            "[{\"name\":\"api_requests_total\",\"value\":1,\"type\":\"counter\",\"labels\":{"
            "\"service\":\"gateway\",\"endpoint\":\"/api/v1/instruments\"},\"service\":\"gateway-service\"},"
            "{\"name\":\"response_time_seconds\",\"value\":0.042,\"type\":\"histogram\",\"labels\":{"
            "\"service\":\"gateway\",\"endpoint\":\"/api/v1/instruments\"},\"service\":\"gateway-service\"}]",
            true, &out),
      0);
  assert_string_equal(out.buf, "{\"success\":true,\"total\":2,\"successful\":2,\"failed\":0}");
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, "default", &out, INGEST_EXPOSE_PROMETHEUS), 0);
  assert_non_null(strstr(out.buf,
                         "# TYPE api_requests_total counter\n"
                         "api_requests_total{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 1\n"));
  assert_non_null(strstr(
      out.buf,
      "response_time_seconds_bucket{endpoint=\"/api/v1/instruments\",service=\"gateway\",le=\"0.025\"} 0\n"
      "response_time_seconds_bucket{endpoint=\"/api/v1/instruments\",service=\"gateway\",le=\"0.05\"} 1\n"));
  assert_non_null(strstr(
      out.buf, "le=\"+Inf\"} "
               "1\nresponse_time_seconds_sum{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 0.042\n"
               "response_time_seconds_count{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 1\n"));
  /* The tenant-1 event lives in its own tenant. */
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, "tenant-1", &out, INGEST_EXPOSE_PROMETHEUS), 0);
  assert_non_null(strstr(
      out.buf, "api_requests_total{endpoint=\"/api/v1/instruments\",method=\"GET\",service=\"gateway\","
               "status_code=\"200\"} 1\n"));
  assert_null(strstr(out.buf, "response_time"));
  assert_int_equal(ingest_track_series_count(r), 3);
  sb_free(&out);
  ingest_track_free(r);
}

static void test_semantics(void **state) {
  (void)state;
  ingest_track_t *r = new_reg();
  sb_t out = {0};
  assert_int_equal(
      track(r, "{\"name\":\"c\",\"value\":2,\"type\":\"counter\",\"service\":\"svc\"}", false, &out), 0);
  assert_int_equal(
      track(r, "{\"name\":\"c\",\"value\":3.5,\"type\":\"counter\",\"service\":\"svc\"}", false, &out), 0);
  assert_int_equal(
      track(r, "{\"name\":\"c\",\"value\":-1,\"type\":\"counter\",\"service\":\"svc\"}", false, &out),
      MD_EINVAL);
  assert_non_null(strstr(out.buf, "cannot be decreased"));
  assert_int_equal(track(r, "{\"name\":\"g\",\"value\":5,\"type\":\"gauge\"}", false, &out), 0);
  assert_int_equal(track(r, "{\"name\":\"g\",\"value\":-7.25,\"type\":\"gauge\"}", false, &out), 0);
  assert_int_equal(track(r, "{\"name\":\"g\",\"value\":1,\"type\":\"counter\"}", false, &out), MD_EINVAL);
  assert_non_null(strstr(out.buf, "metric g is already a gauge; it cannot be tracked as a counter"));
  for (int i = 1; i <= 100; i++) {
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"s\",\"value\":%d,\"type\":\"summary\"}", i);
    assert_int_equal(track(r, body, false, &out), 0);
  }
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, "default", &out, INGEST_EXPOSE_PROMETHEUS), 0);
  assert_non_null(strstr(out.buf, "\nc{service=\"svc\"} 5.5\n"));
  assert_non_null(strstr(out.buf, "\ng -7.25\n"));
  assert_non_null(strstr(
      out.buf,
      "s{quantile=\"0.5\"} 50\ns{quantile=\"0.9\"} 90\ns{quantile=\"0.99\"} 99\ns_sum 5050\ns_count 100\n"));
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, "default", &out, INGEST_EXPOSE_OPENMETRICS), 0);
  assert_non_null(strstr(out.buf, "# TYPE c counter\nc_total{service=\"svc\"} 5.5\n"));
  assert_non_null(strstr(out.buf, "# EOF\n"));
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, "default", &out, INGEST_EXPOSE_JSON), 0);
  assert_non_null(
      strstr(out.buf,
             "{\"name\":\"g\",\"type\":\"gauge\",\"tenant_id\":\"default\",\"labels\":{},\"value\":-7.25}"));
  sb_free(&out);
  ingest_track_free(r);
}

static void test_summary_window(void **state) {
  (void)state;
  ingest_track_config_t cfg = {.summary_window_ms = 1000, .summary_max_observations = 8};
  ingest_track_t *r;
  char err[128];
  assert_int_equal(ingest_track_new(&cfg, &r, err, sizeof err), 0);
  int64_t now = md_now_ms();
  /* Old observations (outside the window) do not count; the ring keeps the newest 8. */
  for (int i = 0; i < 5; i++)
    assert_int_equal(ingest_track_observe(r, "t", "lat", 3, INGEST_TRACK_SUMMARY, NULL, 0, NULL, 1000.0,
                                          now - 5000, err, sizeof err),
                     0);
  for (int i = 1; i <= 20; i++)
    assert_int_equal(ingest_track_observe(r, "t", "lat", 3, INGEST_TRACK_SUMMARY, NULL, 0, NULL, (double)i,
                                          now, err, sizeof err),
                     0);
  sb_t out = {0};
  assert_int_equal(ingest_track_expose(r, "t", &out, INGEST_EXPOSE_PROMETHEUS), 0);
  assert_non_null(strstr(out.buf, "lat{quantile=\"0.5\"} 16\n"));
  assert_non_null(strstr(out.buf, "lat{quantile=\"0.99\"} 20\n"));
  assert_non_null(strstr(out.buf, "lat_count 25\n"));
  sb_free(&out);
  ingest_track_free(r);
}

static void test_custom_buckets_and_collect(void **state) {
  (void)state;
  double b[] = {1, 2};
  ingest_track_buckets_t mb = {"h", b, 2};
  ingest_track_config_t cfg = {.metric_buckets = &mb, .n_metric_buckets = 1};
  ingest_track_t *r;
  char err[128];
  assert_int_equal(ingest_track_new(&cfg, &r, err, sizeof err), 0);
  tsdb_label_t l[] = {{"k", "v"}};
  assert_int_equal(
      ingest_track_observe(r, "a", "h", 1, INGEST_TRACK_HISTOGRAM, l, 1, NULL, 1.5, 0, err, sizeof err), 0);
  assert_int_equal(
      ingest_track_observe(r, "a", "h", 1, INGEST_TRACK_HISTOGRAM, l, 1, NULL, 7, 0, err, sizeof err), 0);
  assert_int_equal(
      ingest_track_observe(r, "b", "g", 1, INGEST_TRACK_GAUGE, NULL, 0, "svc", 3, 0, err, sizeof err), 0);
  sb_t out = {0};
  struct ctx {
    sb_t *out;
  } c = {&out};
  int emit(void *ctx, const char *tenant, const tsdb_batch_t *batch);
  assert_int_equal(ingest_track_collect(r, 1234, emit, &c), 0);
  /* the first collection of a cumulative series also stores the 0 it started from, at its
   * creation time (0 here); a gauge has no such start */
  assert_string_equal(
      out.buf, "tenant a\nh_bucket{k=\"v\",le=\"1\"} 0 @0\nh_bucket{k=\"v\",le=\"1\"} 0 @1234\n"
               "h_bucket{k=\"v\",le=\"2\"} 0 @0\nh_bucket{k=\"v\",le=\"2\"} 1 @1234\n"
               "h_bucket{k=\"v\",le=\"+Inf\"} 0 @0\nh_bucket{k=\"v\",le=\"+Inf\"} 2 @1234\n"
               "h_sum{k=\"v\"} 0 @0\nh_sum{k=\"v\"} 8.5 @1234\nh_count{k=\"v\"} 0 @0\nh_count{k=\"v\"} 2 @1234\n"
               "tenant b\ng{service=\"svc\"} 3 @1234\n");
  sb_reset(&out);
  assert_int_equal(ingest_track_collect(r, 2000, emit, &c), 0);
  assert_null(strstr(out.buf, "@0\n"));
  assert_non_null(strstr(out.buf, "h_count{k=\"v\"} 2 @2000\n"));
  sb_reset(&out);
  assert_int_equal(ingest_track_expose(r, NULL, &out, INGEST_EXPOSE_PROMETHEUS), 0);
  assert_non_null(strstr(out.buf, "g{service=\"svc\",tenant_id=\"b\"} 3\n"));
  sb_free(&out);
  ingest_track_free(r);
}

int emit(void *ctx, const char *tenant, const tsdb_batch_t *batch) {
  sb_t *out = *(sb_t **)ctx;
  char *d = dump_batch(batch);
  sb_printf(out, "tenant %s\n%s", tenant, d);
  free(d);
  return 0;
}

static void test_batch_partial_and_limits(void **state) {
  (void)state;
  ingest_track_config_t cfg = {.max_series = 2};
  ingest_track_t *r;
  char err[128];
  assert_int_equal(ingest_track_new(&cfg, &r, err, sizeof err), 0);
  sb_t out = {0};
  size_t ok, failed;
  const char *body =
      "[{\"name\":\"a\",\"value\":1,\"type\":\"gauge\"},{\"name\":\"bad name\",\"value\":1},"
      "{\"name\":\"b\",\"value\":1,\"type\":\"gauge\"},{\"name\":\"c\",\"value\":1,\"type\":\"gauge\"}]";
  assert_int_equal(ingest_track_json(r, body, strlen(body), true, "default", true, 0, &out, &ok, &failed), 0);
  assert_int_equal(ok, 2);
  assert_int_equal(failed, 2);
  assert_string_equal(out.buf,
                      "{\"success\":false,\"total\":4,\"successful\":2,\"failed\":2,\"errors\":["
                      "{\"index\":1,\"error\":\"invalid metric name \\\"bad name\\\"\"},"
                      "{\"index\":3,\"error\":\"tenant default already tracks 2 series (the limit)\"}]}");
  /* Existing series keep updating at the limit; a single new one is refused with ELIMIT. */
  assert_int_equal(track(r, "{\"name\":\"a\",\"value\":9,\"type\":\"gauge\"}", false, &out), 0);
  assert_int_equal(track(r, "{\"name\":\"z\",\"value\":9,\"type\":\"gauge\"}", false, &out), MD_ELIMIT);
  assert_int_equal(track(r, "[{\"name\":\"z\",\"value\":9,\"type\":\"gauge\"}]", true, &out), MD_ELIMIT);
  assert_int_equal(track(r, "[]", true, &out), 0);
  assert_string_equal(out.buf, "{\"success\":true,\"total\":0,\"successful\":0,\"failed\":0}");
  sb_free(&out);
  ingest_track_free(r);
}

static const char *const bad_events[][2] = {
    {"", "invalid JSON"},
    {"{", "invalid JSON"},
    {"[]", "must be a JSON object"},
    {"1", "must be a JSON object"},
    {"{}", "\"name\" is required"},
    {"{\"name\":\"\",\"value\":1}", "\"name\" is required"},
    {"{\"name\":5,\"value\":1}", "\"name\" is required"},
    {"{\"name\":\"m\"}", "\"value\" is required"},
    {"{\"name\":\"m\",\"value\":\"1\"}", "\"value\" is required"},
    {"{\"name\":\"m\",\"value\":null}", "\"value\" is required"},
    {"{\"name\":\"m\",\"value\":1,\"type\":\"meter\"}", "\"type\" must be one of"},
    {"{\"name\":\"m\",\"value\":1,\"type\":1}", "\"type\" must be one of"},
    {"{\"name\":\"m\",\"value\":1,\"type\":\"Counter\"}", "\"type\" must be one of"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":[]}", "\"labels\" must be an object"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"a\":1}}", "label \"a\" must be a string"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"a\":null}}", "label \"a\" must be a string"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"a-b\":\"x\"}}", "invalid label name"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"__x\":\"x\"}}", "invalid label name"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"\":\"x\"}}", "invalid label name"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"a\":\"\\u0000\"}}", "u0000 is not allowed"},
    {"{\"name\":\"m\",\"value\":1,\"service\":5}", "\"service\" must be a string"},
    {"{\"name\":\"m\",\"value\":1,\"tenant_id\":5}", "\"tenant_id\" must be a string"},
    {"{\"name\":\"m\",\"value\":1,\"tenant_id\":\"a/b\"}", "invalid tenant_id"},
    {"{\"name\":\"m\",\"value\":1,\"help\":[]}", "\"help\" must be a string"},
    {"{\"name\":\"1m\",\"value\":1}", "invalid metric name"},
    {"{\"name\":\"m.x\",\"value\":1}", "invalid metric name"},
    {"{\"name\":\"m\",\"value\":-1,\"type\":\"counter\"}", "cannot be decreased"},
    {"{\"name\":\"m\",\"value\":1,\"type\":\"histogram\",\"labels\":{\"le\":\"1\"}}",
     "reserved for histogram"},
    {"{\"name\":\"m\",\"value\":1,\"type\":\"summary\",\"labels\":{\"quantile\":\"1\"}}",
     "reserved for summary"},
    {"{\"name\":\"m\",\"value\":1,\"name\":\"n\"}", "invalid JSON"},
    {"{\"name\":\"m\",\"value\":1e999}", "invalid JSON"},
    {"{\"name\":\"m\",\"value\":1,\"labels\":{\"a\":\"\\udc00\"}}", "invalid JSON"},
};

static void test_bad_events(void **state) {
  (void)state;
  size_t n = sizeof bad_events / sizeof bad_events[0];
  assert_true(n >= 30);
  ingest_track_t *r = new_reg();
  sb_t out = {0};
  for (size_t i = 0; i < n; i++) {
    int rc = track(r, bad_events[i][0], false, &out);
    sb_t want = {0}; /* the message as it appears JSON-escaped in the response */
    sb_json_str(&want, bad_events[i][1], strlen(bad_events[i][1]));
    want.buf[want.len - 1] = 0;
    bool found = strstr(out.buf, want.buf + 1) != NULL;
    sb_free(&want);
    if (rc != MD_EINVAL || !found || strncmp(out.buf, "{\"success\":false,\"error\":", 25)) {
      print_error("case %zu %s: rc %d out %s want %s\n", i, bad_events[i][0], rc, out.buf, bad_events[i][1]);
      fail();
    }
  }
  assert_int_equal(ingest_track_series_count(r), 0);
  /* A batch that is not an array. */
  assert_int_equal(track(r, "{\"name\":\"m\",\"value\":1}", true, &out), MD_EINVAL);
  assert_non_null(strstr(out.buf, "must be a JSON array"));
  sb_free(&out);
  ingest_track_free(r);
}

static void test_config_errors(void **state) {
  (void)state;
  ingest_track_t *r = NULL;
  char err[128];
  double bad_b[] = {1, 0.5};
  ingest_track_config_t cfg = {.default_buckets = bad_b, .n_default_buckets = 2};
  assert_int_equal(ingest_track_new(&cfg, &r, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "ascending"));
  double q[] = {1.5};
  ingest_track_config_t cfg2 = {.quantiles = q, .n_quantiles = 1};
  assert_int_equal(ingest_track_new(&cfg2, &r, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "quantile"));
}

/* Batches take a jansson-free fast path when they are plain; an escaped string anywhere sends
 * them through jansson. Both must answer alike and leave the registry alike: each body is
 * sent as is and with an escaped unknown key added to its first event. */
static void test_batch_fast_path_matches_jansson(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "[{\"name\":\"req_total\",\"value\":1,\"type\":\"counter\",\"labels\":{\"a\":\"x\",\"b\":\"y\"},"
      "\"service\":\"gw\",\"tenant_id\":\"t1\",\"help\":\"Requests.\"},"
      "{\"name\":\"req_total\",\"value\":2.5e0,\"type\":\"counter\",\"labels\":{\"b\":\"y\",\"a\":\"x\"},"
      "\"service\":\"gw\",\"tenant_id\":\"t1\"},"
      "{\"name\":\"temp\",\"value\":-3.25,\"labels\":{\"room\":\"küche\"}},"
      "{\"name\":\"lat\",\"value\":0.042,\"type\":\"histogram\",\"labels\":null,\"service\":null},"
      "{\"name\":\"sz\",\"value\":7,\"type\":\"summary\",\"timestamp\":1795305611121,\"x\":true,\"y\":null}]",
      "[{\"name\":\"c\",\"value\":-1,\"type\":\"counter\"},{\"value\":1},{\"name\":\"\",\"value\":1},"
      "{\"name\":\"n\"},{\"name\":\"n\",\"value\":1,\"type\":\"meter\"},{\"name\":\"g\",\"value\":1},"
      "{\"name\":\"g\",\"value\":1,\"type\":\"counter\"},{\"name\":\"h\",\"value\":1,\"type\":\"histogram\","
      "\"labels\":{\"le\":\"1\"}},{\"name\":\"bad name\",\"value\":1},{\"name\":\"u\",\"value\":1,"
      "\"labels\":{\"__x\":\"1\"}},{\"name\":\"ok\",\"value\":1e300,\"labels\":{\"é\":\"v\"}}]",
      "[]",
      "[{}]",
      " [ { \"name\" : \"sp\" , \"value\" : 0 } ] ",
      "[{\"name\":\"d\",\"name\":\"e\",\"value\":1}]",
      "[{\"name\":\"d\",\"value\":1,\"q\":1,\"q\":2}]",
      "[{\"name\":\"big\",\"value\":123456789012345678901234567890}]",
      "[{\"name\":\"x\",\"value\":1,\"labels\":{\"a\":1}}]",
      "[{\"name\":\"x\",\"value\":1}",
      "[{\"name\":\"x\",\"value\":01}]",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    char slow_body[2048];
    const char *brace = strchr(bodies[i], '{');
    if (brace) {
      snprintf(slow_body, sizeof slow_body, "%.*s{\"zz\":\"\\u0041\",%s", (int)(brace - bodies[i]), bodies[i],
               brace + 1);
      if (strstr(slow_body, ",}")) { /* "[{}]" became "[{...,}]" */
        snprintf(slow_body, sizeof slow_body, "[{\"zz\":\"\\u0041\"}]");
      }
    } else {
      snprintf(slow_body, sizeof slow_body, "%s", bodies[i]);
    }
    ingest_track_t *fast = new_reg(), *slow = new_reg();
    sb_t a = {0}, b = {0}, ea = {0}, eb = {0};
    size_t oka, faila, okb, failb;
    int rca = ingest_track_json(fast, bodies[i], strlen(bodies[i]), true, "default", true, 1000, &a, &oka, &faila);
    int rcb = ingest_track_json(slow, slow_body, strlen(slow_body), true, "default", true, 1000, &b, &okb, &failb);
    bool json_error = a.buf && strstr(a.buf, "invalid JSON");
    if (rca != rcb || (!json_error && (strcmp(a.buf, b.buf) != 0 || oka != okb || faila != failb))) {
      print_error("body %zu: fast rc %d %s\nslow rc %d %s\n", i, rca, a.buf, rcb, b.buf);
      fail();
    }
    assert_int_equal(ingest_track_expose(fast, NULL, &ea, INGEST_EXPOSE_PROMETHEUS), 0);
    assert_int_equal(ingest_track_expose(slow, NULL, &eb, INGEST_EXPOSE_PROMETHEUS), 0);
    if (strcmp(ea.buf ? ea.buf : "", eb.buf ? eb.buf : "") != 0) {
      print_error("body %zu: registries differ:\n%s\n---\n%s\n", i, ea.buf, eb.buf);
      fail();
    }
    sb_free(&a), sb_free(&b), sb_free(&ea), sb_free(&eb);
    ingest_track_free(fast);
    ingest_track_free(slow);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seed_shapes),
      cmocka_unit_test(test_semantics),
      cmocka_unit_test(test_summary_window),
      cmocka_unit_test(test_custom_buckets_and_collect),
      cmocka_unit_test(test_batch_partial_and_limits),
      cmocka_unit_test(test_bad_events),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_batch_fast_path_matches_jansson),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
