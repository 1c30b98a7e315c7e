/* JSON lines import/export: round trip through the exporter's line writer, partial lines,
 * and a table of bad lines. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

static void test_valid(void **state) {
  (void)state;
  const char *in = "{\"metric\":{\"__name__\":\"up\",\"job\":\"a\"},\"values\":[1,0.5,\"NaN\",\"+Inf\"],"
                   "\"timestamps\":[1000,2000,3000,4000]}\n\n"
                   "  {\"metric\":{\"job\":\"b\",\"__name__\":\"m\"},\"values\":[],\"timestamps\":[]}  \r\n"
                   "{\"values\":[-2],\"timestamps\":[-5],\"metric\":{\"__name__\":\"x\",\"e\":\"\"}}";
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  assert_int_equal(ingest_parse_jsonl(in, strlen(in), NULL, b, &res), 0);
  char *d = dump_batch(b);
  assert_string_equal(d, "up{job=\"a\"} 1 @1000\nup{job=\"a\"} 0.5 @2000\nup{job=\"a\"} NaN @3000\n"
                         "up{job=\"a\"} +Inf @4000\nx{} -2 @-5\n");
  assert_int_equal(res.series, 3);
  free(d);
  tsdb_batch_free(b);
}

static void test_export_roundtrip(void **state) {
  (void)state;
  tsdb_label_t l[] = {{"__name__", "up"}, {"instance", "h\"1"}, {"job", "n\\x"}};
  int64_t ts[] = {1000, 2000, 3000, 4000};
  double v[] = {1.5, NAN, -INFINITY, 1e21};
  v[1] = tsdb_stale_nan(); /* left out of the export */
  sb_t out = {0};
  ingest_export_jsonl_series(l, 3, ts, v, 4, &out);
  assert_string_equal(out.buf, "{\"metric\":{\"__name__\":\"up\",\"instance\":\"h\\\"1\",\"job\":\"n\\\\x\"},"
                               "\"values\":[1.5,\"-Inf\",1e+21],\"timestamps\":[1000,3000,4000]}\n");
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  assert_int_equal(ingest_parse_jsonl(out.buf, out.len, NULL, b, &res), 0);
  char *d = dump_batch(b);
  assert_string_equal(
      d, "up{instance=\"h\"1\",job=\"n\\x\"} 1.5 @1000\nup{instance=\"h\"1\",job=\"n\\x\"} -Inf @3000\n"
         "up{instance=\"h\"1\",job=\"n\\x\"} 1e+21 @4000\n");
  free(d);
  sb_free(&out);
  tsdb_batch_free(b);
}

static const bad_case_t bad[] = {
    {"{", 0, "invalid JSON"},
    {"[]", 0, "must be a JSON object"},
    {"1", 0, "invalid JSON"},
    {"\"x\"", 0, "invalid JSON"},
    {"{}", 0, "\"metric\" must be an object"},
    {"{\"metric\":[],\"values\":[],\"timestamps\":[]}", 0, "\"metric\" must be an object"},
    {"{\"metric\":{\"__name__\":\"a\"}}", 0, "must be arrays"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":{},\"timestamps\":[]}", 0, "must be arrays"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[]}", 0, "has 1 items but"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1,2],\"timestamps\":[1]}", 0, "has 2 items but"},
    {"{\"metric\":{\"job\":\"x\"},\"values\":[1],\"timestamps\":[1]}", 0, "no \"__name__\""},
    {"{\"metric\":{\"__name__\":1},\"values\":[1],\"timestamps\":[1]}", 0, "must be a string"},
    {"{\"metric\":{\"__name__\":\"a\",\"j\":null},\"values\":[1],\"timestamps\":[1]}", 0, "must be a string"},
    {"{\"metric\":{\"__name__\":\"1a\"},\"values\":[1],\"timestamps\":[1]}", 0, "invalid metric name"},
    {"{\"metric\":{\"__name__\":\"a-b\"},\"values\":[1],\"timestamps\":[1]}", 0, "invalid metric name"},
    {"{\"metric\":{\"__name__\":\"a\",\"b-c\":\"x\"},\"values\":[1],\"timestamps\":[1]}", 0,
     "invalid label name"},
    {"{\"metric\":{\"__name__\":\"a\",\"\":\"x\"},\"values\":[1],\"timestamps\":[1]}", 0,
     "invalid label name"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[\"x\"],\"timestamps\":[1]}", 0,
     "values[0] is not a number"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[null],\"timestamps\":[1]}", 0,
     "values[0] is not a number"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[true],\"timestamps\":[1]}", 0,
     "values[0] is not a number"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1,[]],\"timestamps\":[1,2]}", 0,
     "values[1] is not a number"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[1.5]}", 0,
     "timestamps[0] is not an integer"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[\"1\"]}", 0,
     "timestamps[0] is not an integer"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[null]}", 0,
     "timestamps[0] is not an integer"},
    {"{\"metric\":{\"__name__\":\"a\",\"__name__\":\"b\"},\"values\":[1],\"timestamps\":[1]}", 0,
     "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[1]} x", 0, "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[1],}", 0, "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[NaN],\"timestamps\":[1]}", 0, "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\",\"l\":\"\\u0000\"},\"values\":[1],\"timestamps\":[1]}", 0, "NUL byte"},
    {"{'metric':{}}", 0, "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1e999],\"timestamps\":[1]}", 0, "invalid JSON"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[\"1x\"],\"timestamps\":[1]}", 0,
     "values[0] is not a number"},
    {"{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[99999999999999999999]}", 0,
     "invalid JSON"},
    {"\xff", 0, "invalid JSON"},
};

static void test_bad_inputs(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0], checked = 0;
  for (size_t i = 0; i < n; i++) {
    if (!bad[i].want[0]) continue;
    checked++;
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_jsonl(bad[i].input, strlen(bad[i].input), NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad[i].want) ||
        tsdb_batch_sample_count(b) || res.errors[0].where != 1) {
      print_error("case %zu %s: rc %d msg %s\n", i, bad[i].input, rc,
                  res.nerrors ? res.errors[0].message : "");
      fail();
    }
    tsdb_batch_free(b);
  }
  assert_true(checked >= 30);
}

static void test_partial_lines(void **state) {
  (void)state;
  const char *in = "{\"metric\":{\"__name__\":\"a\"},\"values\":[1],\"timestamps\":[1]}\n"
                   "garbage\n"
                   "{\"metric\":{\"__name__\":\"b\"},\"values\":[2],\"timestamps\":[2]}\n";
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  assert_int_equal(ingest_parse_jsonl(in, strlen(in), NULL, b, &res), MD_EINVAL);
  assert_int_equal(res.errors[0].where, 2);
  char *d = dump_batch(b);
  assert_string_equal(d, "a{} 1 @1\nb{} 2 @2\n");
  free(d);
  tsdb_batch_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_export_roundtrip),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_partial_lines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
