/* OTLP metrics (JSON and protobuf): mapping of gauges, sums, histograms and summaries,
 * resource attributes, and a table of bad requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "ingest/otlp.pb-c.h"

#define RES                                                                                                  \
  "{\"resourceMetrics\":[{\"resource\":{\"attributes\":["                                                    \
  "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"api\"}},"                                          \
  "{\"key\":\"service.namespace\",\"value\":{\"stringValue\":\"shop\"}},"                                    \
  "{\"key\":\"service.instance.id\",\"value\":{\"stringValue\":\"i-1\"}},"                                   \
  "{\"key\":\"host.name\",\"value\":{\"stringValue\":\"h\"}}]},"                                             \
  "\"scopeMetrics\":[{\"scope\":{\"name\":\"s\"},\"metrics\":["
#define END "]}]}]}"

static char *parse_json(const char *in, int *rc, ingest_result_t *res) {
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_opts_t o = {.default_ts = 77};
  *rc = ingest_parse_otlp_json(in, strlen(in), &o, b, res);
  char *d = dump_batch(b);
  tsdb_batch_free(b);
  return d;
}

static void expect_json(const char *in, const char *want) {
  int rc;
  ingest_result_t res;
  char *got = parse_json(in, &rc, &res);
  if (rc || strcmp(got, want)) {
    print_error("want:\n%s\ngot (rc %d, %s):\n%s\n", want, rc, res.nerrors ? res.errors[0].message : "", got);
    free(got);
    fail();
  }
  free(got);
}

static void test_json_mapping(void **state) {
  (void)state;
  expect_json(
      RES
      "{\"name\":\"mem.used\",\"gauge\":{\"dataPoints\":[{\"asDouble\":1.5,\"timeUnixNano\":\"2000000000\","
      "\"attributes\":[{\"key\":\"state.kind\",\"value\":{\"stringValue\":\"x\"}},"
      "{\"key\":\"n\",\"value\":{\"intValue\":\"3\"}},{\"key\":\"b\",\"value\":{\"boolValue\":true}}]}]}"
      "}" END,
      "mem_used{b=\"true\",instance=\"i-1\",job=\"shop/api\",n=\"3\",state_kind=\"x\"} 1.5 @2000\n");
  expect_json(RES "{\"name\":\"http.requests\",\"sum\":{\"isMonotonic\":true,\"aggregationTemporality\":2,"
                  "\"dataPoints\":[{\"asInt\":\"42\"}]}},"
                  "{\"name\":\"q\",\"sum\":{\"isMonotonic\":false,\"aggregationTemporality\":\"AGGREGATION_"
                  "TEMPORALITY_CUMULATIVE\","
                  "\"dataPoints\":[{\"asInt\":-3}]}}" END,
              "http_requests_total{instance=\"i-1\",job=\"shop/api\"} 42 "
              "@77\nq{instance=\"i-1\",job=\"shop/api\"} -3 @77\n");
  expect_json(
      RES "{\"name\":\"lat\",\"histogram\":{\"aggregationTemporality\":2,\"dataPoints\":[{\"count\":\"6\","
          "\"sum\":2.5,\"bucketCounts\":[\"1\",\"2\",\"3\"],\"explicitBounds\":[0.1,1],\"timeUnixNano\":"
          "\"5000000\"}]}}" END,
      "lat_bucket{instance=\"i-1\",job=\"shop/api\",le=\"0.1\"} 1 @5\n"
      "lat_bucket{instance=\"i-1\",job=\"shop/api\",le=\"1\"} 3 @5\n"
      "lat_bucket{instance=\"i-1\",job=\"shop/api\",le=\"+Inf\"} 6 @5\n"
      "lat_sum{instance=\"i-1\",job=\"shop/api\"} 2.5 @5\nlat_count{instance=\"i-1\",job=\"shop/api\"} 6 "
      "@5\n");
  expect_json(
      RES "{\"name\":\"rt\",\"summary\":{\"dataPoints\":[{\"count\":2,\"sum\":3,\"quantileValues\":"
          "[{\"quantile\":0.5,\"value\":1},{\"quantile\":0.99,\"value\":2}]}]}}" END,
      "rt{instance=\"i-1\",job=\"shop/api\",quantile=\"0.5\"} 1 @77\n"
      "rt{instance=\"i-1\",job=\"shop/api\",quantile=\"0.99\"} 2 @77\n"
      "rt_sum{instance=\"i-1\",job=\"shop/api\"} 3 @77\nrt_count{instance=\"i-1\",job=\"shop/api\"} 2 @77\n");
  /* A point attribute named like a resource label replaces it. */
  expect_json(RES "{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"asDouble\":1,\"attributes\":"
                  "[{\"key\":\"job\",\"value\":{\"stringValue\":\"mine\"}}]}]}}" END,
              "g{instance=\"i-1\",job=\"mine\"} 1 @77\n");
  expect_json("{\"resourceMetrics\":[]}", "");
  expect_json("{}", "");
}

static void test_json_skips(void **state) {
  (void)state;
  int rc;
  ingest_result_t res;
  char *got = parse_json(RES "{\"name\":\"e\",\"exponentialHistogram\":{}},"
                             "{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"flags\":1}]}}" END,
                         &rc, &res);
  assert_int_equal(rc, 0);
  assert_int_equal(res.skipped, 1);
  assert_non_null(strstr(got, "g{instance=\"i-1\",job=\"shop/api\"} NaN @77"));
  free(got);
}

static const bad_case_t bad[] = {
    {"", 0, "not a JSON object"},
    {"[]", 0, "not a JSON object"},
    {"{\"resourceMetrics\":{}}", 0, "must be an array"},
    {"{\"resourceMetrics\":1}", 0, "must be an array"},
    {"{", 0, "not a JSON object"},
    {RES "1" END, 0, "a metric must be an object"},
    {RES "{}" END, 0, "has no \"name\""},
    {RES "{\"name\":\"\"}" END, 0, "has no \"name\""},
    {RES "{\"name\":5}" END, 0, "has no \"name\""},
    {RES "{\"name\":\"m\"}" END, 0, "has no gauge"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":{}}}" END, 0, "must be an array"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[1]}}" END, 0, "must be an object"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{}]}}" END, 0, "neither asDouble nor asInt"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asDouble\":\"x\"}]}}" END, 0,
     "\"asDouble\" is not a number"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asDouble\":true}]}}" END, 0,
     "\"asDouble\" is not a number"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":\"1.5\"}]}}" END, 0,
     "\"asInt\" is not an integer"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":[]}]}}" END, 0,
     "\"asInt\" is not an integer"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"timeUnixNano\":\"-1\"}]}}" END, 0,
     "timeUnixNano"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"timeUnixNano\":\"abc\"}]}}" END, 0,
     "timeUnixNano"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"timeUnixNano\":1.5}]}}" END, 0,
     "timeUnixNano"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"timeUnixNano\":\"99999999999999999999\"}]"
         "}}" END,
     0, "timeUnixNano"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"flags\":\"x\"}]}}" END, 0, "\"flags\""},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"attributes\":{}}]}}" END, 0,
     "\"attributes\" must be an array"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"attributes\":[{\"value\":{}}]}]}}" END, 0,
     "no string \"key\""},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"attributes\":[{\"key\":\"a\",\"value\":{"
         "\"stringValue\":\"\\u00ff\\ud800\"}}]}]}}" END,
     0, "not a JSON object"},
    {RES "{\"name\":\"m\",\"gauge\":{\"dataPoints\":[{\"asInt\":1,\"attributes\":[{\"key\":\"a\",\"value\":{"
         "\"stringValue\":\"x\"}},{\"key\":\"a\",\"value\":{\"stringValue\":\"y\"}}]}]}}" END,
     0, "duplicate label name \"a\""},
    {RES "{\"name\":\"m\",\"histogram\":{\"dataPoints\":[{\"count\":\"x\"}]}}" END, 0, "\"count\" is not"},
    {RES "{\"name\":\"m\",\"histogram\":{\"dataPoints\":[{\"count\":1,\"sum\":\"s\"}]}}" END, 0,
     "\"sum\" is not a number"},
    {RES "{\"name\":\"m\",\"histogram\":{\"dataPoints\":[{\"count\":1,\"bucketCounts\":[1,2],"
         "\"explicitBounds\":[]}]}}" END,
     0, "bucket counts for 0 bounds"},
    {RES "{\"name\":\"m\",\"histogram\":{\"dataPoints\":[{\"count\":1,\"bucketCounts\":[\"a\"],"
         "\"explicitBounds\":[]}]}}" END,
     0, "bucketCounts[0]"},
    {RES "{\"name\":\"m\",\"histogram\":{\"dataPoints\":[{\"count\":1,\"bucketCounts\":[1,1],"
         "\"explicitBounds\":[\"z\"]}]}}" END,
     0, "explicitBounds[0]"},
    {RES "{\"name\":\"m\",\"summary\":{\"dataPoints\":[{\"count\":1,\"quantileValues\":[{\"quantile\":\"a\"}]"
         "}]}}" END,
     0, "quantileValues[0]"},
    {RES "{\"name\":\"m\",\"summary\":{\"dataPoints\":[{\"count\":-1}]}}" END, 0, "\"count\" is not"},
};

static void test_json_bad(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0];
  assert_true(n >= 30);
  for (size_t i = 0; i < n; i++) {
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_otlp_json(bad[i].input, strlen(bad[i].input), NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad[i].want) ||
        tsdb_batch_sample_count(b)) {
      print_error("case %zu: rc %d msg \"%s\" want \"%s\"\n", i, rc, res.nerrors ? res.errors[0].message : "",
                  bad[i].want);
      fail();
    }
    tsdb_batch_free(b);
  }
}

static void test_protobuf(void **state) {
  (void)state;
  Mdotlp__AnyValue sv = MDOTLP__ANY_VALUE__INIT;
  sv.value_case = MDOTLP__ANY_VALUE__VALUE_STRING_VALUE;
  sv.string_value = "svc";
  Mdotlp__KeyValue kv = MDOTLP__KEY_VALUE__INIT;
  kv.key = "service.name";
  kv.value = &sv;
  Mdotlp__KeyValue *kvs[] = {&kv};
  Mdotlp__Resource r = MDOTLP__RESOURCE__INIT;
  r.n_attributes = 1;
  r.attributes = kvs;
  Mdotlp__NumberDataPoint dp = MDOTLP__NUMBER_DATA_POINT__INIT;
  dp.value_case = MDOTLP__NUMBER_DATA_POINT__VALUE_AS_INT;
  dp.as_int = 7;
  dp.time_unix_nano = 3000000000ull;
  Mdotlp__NumberDataPoint *dps[] = {&dp};
  Mdotlp__Sum sum = MDOTLP__SUM__INIT;
  sum.n_data_points = 1;
  sum.data_points = dps;
  sum.is_monotonic = 1;
  sum.aggregation_temporality = 2;
  Mdotlp__Metric m = MDOTLP__METRIC__INIT;
  m.name = "jobs.done";
  m.data_case = MDOTLP__METRIC__DATA_SUM;
  m.sum = &sum;
  uint64_t bc[] = {1, 1};
  double eb[] = {0.5};
  Mdotlp__HistogramDataPoint hp = MDOTLP__HISTOGRAM_DATA_POINT__INIT;
  hp.count = 2;
  hp.sum = 0.75;
  hp.n_bucket_counts = 2;
  hp.bucket_counts = bc;
  hp.n_explicit_bounds = 1;
  hp.explicit_bounds = eb;
  Mdotlp__HistogramDataPoint *hps[] = {&hp};
  Mdotlp__Histogram h = MDOTLP__HISTOGRAM__INIT;
  h.n_data_points = 1;
  h.data_points = hps;
  Mdotlp__Metric m2 = MDOTLP__METRIC__INIT;
  m2.name = "h";
  m2.data_case = MDOTLP__METRIC__DATA_HISTOGRAM;
  m2.histogram = &h;
  Mdotlp__Metric *ms[] = {&m, &m2};
  Mdotlp__ScopeMetrics sm = MDOTLP__SCOPE_METRICS__INIT;
  sm.n_metrics = 2;
  sm.metrics = ms;
  Mdotlp__ScopeMetrics *sms[] = {&sm};
  Mdotlp__ResourceMetrics rm = MDOTLP__RESOURCE_METRICS__INIT;
  rm.resource = &r;
  rm.n_scope_metrics = 1;
  rm.scope_metrics = sms;
  Mdotlp__ResourceMetrics *rms[] = {&rm};
  Mdotlp__ExportMetricsServiceRequest req = MDOTLP__EXPORT_METRICS_SERVICE_REQUEST__INIT;
  req.n_resource_metrics = 1;
  req.resource_metrics = rms;
  size_t len = mdotlp__export_metrics_service_request__get_packed_size(&req);
  uint8_t *buf = malloc(len);
  mdotlp__export_metrics_service_request__pack(&req, buf);
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  ingest_opts_t o = {.default_ts = 9};
  assert_int_equal(ingest_parse_otlp_pb(buf, len, &o, b, &res), 0);
  char *d = dump_batch(b);
  assert_string_equal(
      d, "jobs_done_total{job=\"svc\"} 7 @3000\nh_bucket{job=\"svc\",le=\"0.5\"} 1 @9\n"
         "h_bucket{job=\"svc\",le=\"+Inf\"} 2 @9\nh_sum{job=\"svc\"} 0.75 @9\nh_count{job=\"svc\"} 2 @9\n");
  free(d);
  /* Truncations of a valid request never crash; most are rejected. */
  for (size_t cut = 0; cut < len; cut++) {
    tsdb_batch_reset(b);
    int rc = ingest_parse_otlp_pb(buf, cut, &o, b, &res);
    assert_true(rc == 0 || rc == MD_EINVAL);
  }
  tsdb_batch_reset(b);
  assert_int_equal(ingest_parse_otlp_pb((const uint8_t *)"\x0a\x05", 2, &o, b, &res), MD_EINVAL);
  assert_non_null(strstr(res.errors[0].message, "not a valid protobuf"));
  free(buf);
  tsdb_batch_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_mapping),
      cmocka_unit_test(test_json_skips),
      cmocka_unit_test(test_json_bad),
      cmocka_unit_test(test_protobuf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
