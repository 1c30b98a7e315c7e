/* OTLP metrics (JSON and protobuf): mapping of gauges, sums, histograms and summaries,
 * resource attributes, and a table of bad requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
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

/* ---- protobuf bad inputs: framing, then metrics that must be refused by their index ---- */

/* Packs a request holding metric m (with service.name "svc"); caller frees. */
static uint8_t *pack_one(Mdotlp__Metric *m, size_t *len) {
  Mdotlp__ScopeMetrics sm = MDOTLP__SCOPE_METRICS__INIT;
  Mdotlp__Metric *ms[] = {m};
  sm.n_metrics = 1;
  sm.metrics = ms;
  Mdotlp__ScopeMetrics *sms[] = {&sm};
  Mdotlp__ResourceMetrics rm = MDOTLP__RESOURCE_METRICS__INIT;
  rm.n_scope_metrics = 1;
  rm.scope_metrics = sms;
  Mdotlp__ResourceMetrics *rms[] = {&rm};
  Mdotlp__ExportMetricsServiceRequest req = MDOTLP__EXPORT_METRICS_SERVICE_REQUEST__INIT;
  req.n_resource_metrics = 1;
  req.resource_metrics = rms;
  *len = mdotlp__export_metrics_service_request__get_packed_size(&req);
  uint8_t *buf = malloc(*len ? *len : 1);
  assert_non_null(buf);
  mdotlp__export_metrics_service_request__pack(&req, buf);
  return buf;
}

typedef enum { PB_GAUGE, PB_NODATA, PB_HIST } pb_shape_t;

typedef struct {
  const char *name;
  pb_shape_t shape;
  const char *attr_key, *attr_value; /* one data point attribute, or NULL */
  size_t nbuckets, nbounds;          /* histogram */
  size_t nattrs;                     /* extra attributes a0..aN (limits case) */
  const char *want;
} pb_bad_t;

static const pb_bad_t pb_bad[] = {
    {"", PB_GAUGE, NULL, NULL, 0, 0, 0, "empty name"},
    {"m", PB_NODATA, NULL, NULL, 0, 0, 0, "has no data"},
    {"h", PB_HIST, NULL, NULL, 1, 1, 0, "1 bucket counts for 1 bounds"},
    {"h", PB_HIST, NULL, NULL, 3, 1, 0, "3 bucket counts for 1 bounds"},
    {"h", PB_HIST, NULL, NULL, 1, 2, 0, "1 bucket counts for 2 bounds"},
    {"h", PB_HIST, NULL, NULL, 5, 2, 0, "5 bucket counts for 2 bounds"},
    {"m", PB_GAUGE, "k", "\xff", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "\xc3\x28", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "\xe0\x80\xaf", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "\xed\xa0\x80", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "\xf8\x88\x80\x80", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "ab\xc0", 0, 0, 0, "not valid UTF-8"},
    {"m", PB_GAUGE, "k", "12345", 0, 0, 0, "more than the limit of 4"},
    {"m", PB_GAUGE, NULL, NULL, 0, 0, 5, "more than the limit of 4"},
    {"h", PB_HIST, "k", "\xff", 2, 1, 0, "not valid UTF-8"},
    {"h", PB_HIST, "k", "123456", 2, 1, 0, "more than the limit of 4"},
};

/* Bodies protobuf-c cannot unpack as an ExportMetricsServiceRequest. */
static const bad_case_t pb_framing[] = {
    {"\x0a", 1, "not a valid protobuf"},
    {"\x0a\x05"
     "ab",
     4, "not a valid protobuf"},
    {"\x0b", 1, "not a valid protobuf"},
    {"\x0a\x02\x0a\x05", 4, "not a valid protobuf"},
    {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, "not a valid protobuf"},
    {"\x0a\x03\x12\x01\x09", 5, "not a valid protobuf"},
    {"\x0a\x04\x12\x02\x12\x05", 6, "not a valid protobuf"},
    {"\x0a\xff\xff\xff\xff\x0f", 6, "not a valid protobuf"},
    {"\x0f", 1, "not a valid protobuf"},
    {"\x0a\x01\x0c", 3, "not a valid protobuf"},
    {"\x0a\x06\x12\x04\x12\x02\x0a\x05", 8, "not a valid protobuf"},
    {"\x0a\x04\x12\x02\x12\xff", 6, "not a valid protobuf"},
    {"\x0a\x06\x12\x04\x12\x02\x2a\x05", 8, "not a valid protobuf"},
    {"\x0a\x08\x12\x06\x12\x04\x2a\x02\x0a\x09", 10, "not a valid protobuf"},
};

static void test_protobuf_bad(void **state) {
  (void)state;
  size_t total = 0;
  for (size_t i = 0; i < sizeof pb_framing / sizeof pb_framing[0]; i++, total++) {
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_otlp_pb((const uint8_t *)pb_framing[i].input, pb_framing[i].len, NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, pb_framing[i].want) ||
        tsdb_batch_sample_count(b) != 0) {
      print_error("framing case %zu: rc %d msg %s\n", i, rc, res.nerrors ? res.errors[0].message : "");
      fail();
    }
    tsdb_batch_free(b);
  }
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_label_value_len = 4;
  lim.max_labels_per_series = 4;
  for (size_t i = 0; i < sizeof pb_bad / sizeof pb_bad[0]; i++, total++) {
    const pb_bad_t *c = &pb_bad[i];
    Mdotlp__AnyValue av = MDOTLP__ANY_VALUE__INIT;
    Mdotlp__KeyValue kv[8], *kvs[8];
    char keys[8][8];
    size_t nkv = 0;
    if (c->attr_key) {
      av.value_case = MDOTLP__ANY_VALUE__VALUE_STRING_VALUE;
      av.string_value = (char *)c->attr_value;
      mdotlp__key_value__init(&kv[nkv]);
      kv[nkv].key = (char *)c->attr_key;
      kv[nkv].value = &av;
      kvs[nkv] = &kv[nkv];
      nkv++;
    }
    for (size_t k = 0; k < c->nattrs && nkv < 8; k++) {
      snprintf(keys[nkv], sizeof keys[nkv], "a%zu", k);
      mdotlp__key_value__init(&kv[nkv]);
      kv[nkv].key = keys[nkv];
      kv[nkv].value = &av;
      av.value_case = MDOTLP__ANY_VALUE__VALUE_STRING_VALUE;
      av.string_value = "v";
      kvs[nkv] = &kv[nkv];
      nkv++;
    }
    Mdotlp__Metric m = MDOTLP__METRIC__INIT;
    m.name = (char *)c->name;
    Mdotlp__NumberDataPoint dp = MDOTLP__NUMBER_DATA_POINT__INIT;
    Mdotlp__NumberDataPoint *dps[] = {&dp};
    Mdotlp__Gauge g = MDOTLP__GAUGE__INIT;
    Mdotlp__HistogramDataPoint hp = MDOTLP__HISTOGRAM_DATA_POINT__INIT;
    Mdotlp__HistogramDataPoint *hps[] = {&hp};
    Mdotlp__Histogram h = MDOTLP__HISTOGRAM__INIT;
    uint64_t bc[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    double eb[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    if (c->shape == PB_GAUGE) {
      dp.value_case = MDOTLP__NUMBER_DATA_POINT__VALUE_AS_DOUBLE;
      dp.as_double = 1;
      dp.n_attributes = nkv;
      dp.attributes = kvs;
      g.n_data_points = 1;
      g.data_points = dps;
      m.data_case = MDOTLP__METRIC__DATA_GAUGE;
      m.gauge = &g;
    } else if (c->shape == PB_HIST) {
      hp.count = c->nbuckets;
      hp.n_bucket_counts = c->nbuckets;
      hp.bucket_counts = bc;
      hp.n_explicit_bounds = c->nbounds;
      hp.explicit_bounds = eb;
      hp.n_attributes = nkv;
      hp.attributes = kvs;
      h.n_data_points = 1;
      h.data_points = hps;
      m.data_case = MDOTLP__METRIC__DATA_HISTOGRAM;
      m.histogram = &h;
    }
    size_t len;
    uint8_t *buf = pack_one(&m, &len);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    ingest_opts_t o = {.default_ts = 1, .limits = &lim};
    int rc = ingest_parse_otlp_pb(buf, len, &o, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || res.errors[0].where != 0 ||
        !strstr(res.errors[0].message, c->want) || tsdb_batch_sample_count(b) != 0) {
      print_error("metric case %zu: rc %d errors %zu msg \"%s\" want \"%s\"\n", i, rc, res.nerrors,
                  res.nerrors ? res.errors[0].message : "", c->want);
      fail();
    }
    free(buf);
    tsdb_batch_free(b);
  }
  assert_true(total >= 30);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_mapping),
      cmocka_unit_test(test_json_skips),
      cmocka_unit_test(test_json_bad),
      cmocka_unit_test(test_protobuf),
      cmocka_unit_test(test_protobuf_bad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
