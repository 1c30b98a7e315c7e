/* Prometheus text 0.0.4 / OpenMetrics parser: valid and edge inputs compared as whole
 * batches, and a table of bad inputs each of which must be rejected with a clear message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

static char *parse(const char *in, bool om, int *rc, ingest_result_t *res, const ingest_opts_t *base) {
  ingest_opts_t o = base ? *base : (ingest_opts_t){0};
  o.default_ts = base ? base->default_ts : 5000;
  o.openmetrics = om;
  tsdb_batch_t *b = tsdb_batch_new();
  assert_non_null(b);
  *rc = ingest_parse_prometheus(in, strlen(in), &o, b, res);
  char *d = dump_batch(b);
  tsdb_batch_free(b);
  return d;
}

static void expect(const char *in, bool om, const char *want) {
  int rc;
  ingest_result_t res;
  char *got = parse(in, om, &rc, &res, NULL);
  if (rc != 0 || strcmp(got, want) != 0) {
    sb_t m = {0};
    ingest_result_message(&res, "line", &m);
    print_error("input:\n%s\nwant:\n%s\ngot (rc %d, %s):\n%s\n", in, want, rc, m.buf ? m.buf : "", got);
    sb_free(&m);
    free(got);
    fail();
  }
  free(got);
}

static void test_valid(void **state) {
  (void)state;
  expect("up 1\n", false, "up{} 1 @5000\n");
  expect("up 1", false, "up{} 1 @5000\n");
  expect("up 1 1700000000123\n", false, "up{} 1 @1700000000123\n");
  expect("  up   2  \r\n", false, "up{} 2 @5000\n");
  expect("# HELP x Some help \\\\ text\n# TYPE x counter\nx_total{a=\"1\",b=\"2\"} 3.5 100\n", false,
         "x_total{a=\"1\",b=\"2\"} 3.5 @100\n");
  expect("m{b=\"2\",a=\"1\",} 1\n", false, "m{a=\"1\",b=\"2\"} 1 @5000\n");
  expect("m{ a = \"x\" , b=\"y\" } 1\n", false, "m{a=\"x\",b=\"y\"} 1 @5000\n");
  expect("m{a=\"q\\\"uote\\\\back\\nnl\"} 1\n", false, "m{a=\"q\"uote\\back\nnl\"} 1 @5000\n");
  expect("m{} -1.5e3\n", false, "m{} -1500 @5000\n");
  expect("m NaN\nm2 +Inf\nm3 -Inf\nm4 inf\n", false,
         "m{} NaN @5000\nm2{} +Inf @5000\nm3{} -Inf @5000\nm4{} +Inf @5000\n");
  expect("m{a=\"\"} 1\n", false, "m{} 1 @5000\n"); /* empty value = no label */
  expect("m{a=\"héllo ☃\"} 1\n", false, "m{a=\"héllo ☃\"} 1 @5000\n");
  expect("ns:rule:rate5m 0.25 -1000\n", false, "ns:rule:rate5m{} 0.25 @-1000\n");
  expect("# just a comment\n\n\nm 1\n# TYPE m untyped\n", false, "m{} 1 @5000\n");
  expect("m\t1\t2\n", false, "m{} 1 @2\n");
  expect("m 0.1\n", false, "m{} 0.1 @5000\n");
  expect("m 123456789012345678901234567890\n", false, "m{} 1.2345678901234568e+29 @5000\n");
  /* OpenMetrics: seconds timestamps, exemplars skipped, # EOF. */
  expect("# TYPE a counter\n# UNIT a seconds\n# HELP a h \\\"q\\\"\na_total 1 1700000000.5 # {id=\"x\"} 2 "
         "1.0\n# EOF\n",
         true, "a_total{} 1 @1700000000500\n");
  expect("# TYPE s stateset\ns{s=\"a\"} 1\n# EOF", true, "s{s=\"a\"} 1 @5000\n");
  /* Exemplars: empty label set, escapes, no timestamp, the 128-character edge. */
  expect("c_total 1 # {} 1\nd 2 3 # {a=\"x\\\"y\",b=\"\"} -Inf 4.5\n# EOF\n", true,
         "c_total{} 1 @5000\nd{} 2 @3000\n");
  char edge[256];
  snprintf(edge, sizeof edge, "e 1 # {t=\"%0127d\"} 1\n# EOF\n", 0);
  expect(edge, true, "e{} 1 @5000\n");
}

/* Lines repeating a series text are grouped into one series of the batch, samples in line
 * order; a bad series text is reported on each line that repeats it, in line order. */
static void test_grouping(void **state) {
  (void)state;
  expect("a{x=\"1\"} 1 10\nb 2 10\na{x=\"1\"} 3 20\nb 4 20\na{x=\"1\"} 5 30\n", false,
         "a{x=\"1\"} 1 @10\na{x=\"1\"} 3 @20\na{x=\"1\"} 5 @30\nb{} 2 @10\nb{} 4 @20\n");
  /* Different bytes for one series stay separate groups; the engine merges them. */
  expect("a{x=\"1\",y=\"2\"} 1 10\na{y=\"2\",x=\"1\"} 2 20\n", false,
         "a{x=\"1\",y=\"2\"} 1 @10\na{x=\"1\",y=\"2\"} 2 @20\n");
  /* Escaped values re-lexed in pass 2 keep their unescaped bytes. */
  expect("e{v=\"a\\\"b\"} 1 1\nf{w=\"x\\ny\"} 2 1\ne{v=\"a\\\"b\"} 3 2\n", false,
         "e{v=\"a\"b\"} 1 @1\ne{v=\"a\"b\"} 3 @2\nf{w=\"x\ny\"} 2 @1\n");
  int rc;
  ingest_result_t res;
  char *got = parse("ok 1 1\nbad{a=\"1\",a=\"2\"} 1 1\nok 2 2\nbad{a=\"1\",a=\"2\"} 2 2\nok x 3\n", false, &rc,
                    &res, NULL);
  assert_int_equal(rc, MD_EINVAL);
  assert_string_equal(got, "ok{} 1 @1\nok{} 2 @2\n");
  assert_int_equal(res.rejected, 3);
  assert_int_equal(res.nerrors, 3);
  assert_int_equal(res.errors[0].where, 2);
  assert_int_equal(res.errors[1].where, 4);
  assert_int_equal(res.errors[2].where, 5);
  assert_non_null(strstr(res.errors[0].message, "duplicate label name \"a\""));
  assert_string_equal(res.errors[0].message, res.errors[1].message);
  assert_non_null(strstr(res.errors[2].message, "invalid value"));
  assert_int_equal(res.series, 1);
  assert_int_equal(res.samples, 2);
  free(got);
  /* A good series text whose value is bad on one line keeps its other lines. */
  got = parse("m{a=\"1\"} 1 1\nm{a=\"1\"} zz 2\nm{a=\"1\"} 3 3\n", false, &rc, &res, NULL);
  assert_int_equal(rc, MD_EINVAL);
  assert_string_equal(got, "m{a=\"1\"} 1 @1\nm{a=\"1\"} 3 @3\n");
  assert_int_equal(res.errors[0].where, 2);
  free(got);
}

static void test_openmetrics_detect(void **state) {
  (void)state;
  const char *om = "a 1\n# EOF\n";
  assert_true(ingest_text_is_openmetrics(om, strlen(om)));
  assert_true(ingest_text_is_openmetrics("# EOF", 5));
  assert_false(ingest_text_is_openmetrics("a 1\n", 4));
  assert_false(ingest_text_is_openmetrics("a 1 # EOF\n", 10));
}

static void test_extra_labels_and_partial(void **state) {
  (void)state;
  tsdb_label_t extra[] = {{"job", "imp"}, {"env", "prod"}};
  ingest_opts_t o = {.extra_labels = extra, .n_extra_labels = 2, .default_ts = 7};
  int rc;
  ingest_result_t res;
  char *got = parse("m{job=\"orig\",x=\"1\"} 1\nbad line here\nn 2\n", false, &rc, &res, &o);
  assert_int_equal(rc, MD_EINVAL);
  assert_string_equal(got, "m{env=\"prod\",job=\"imp\",x=\"1\"} 1 @7\nn{env=\"prod\",job=\"imp\"} 2 @7\n");
  assert_int_equal(res.rejected, 1);
  assert_int_equal(res.nerrors, 1);
  assert_int_equal(res.errors[0].where, 2);
  assert_int_equal(res.samples, 2);
  free(got);
}

static void test_limits(void **state) {
  (void)state;
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_samples_per_request = 3;
  ingest_opts_t o = {.limits = &lim};
  int rc;
  ingest_result_t res;
  char *got = parse("a 1\nb 2\nc 3\nd 4\ne 5\n", false, &rc, &res, &o);
  assert_int_equal(rc, MD_ELIMIT);
  assert_int_equal(res.samples, 3);
  free(got);
}

static const bad_case_t bad[] = {
    {"{a=\"b\"} 1", 0, "missing metric name"},
    {"1metric 1", 0, "invalid metric name"},
    {"metric", 0, "missing value"},
    {"metric abc", 0, "invalid value"},
    {"metric 1 abc", 0, "invalid timestamp"},
    {"metric{a=\"b\" 1", 0, "expected ','"},
    {"metric{a=b} 1", 0, "expected '\"'"},
    {"metric{a=\"b} 1", 0, "unterminated label value"},
    {"metric{1a=\"b\"} 1", 0, "invalid label name"},
    {"metric{a=\"b\",a=\"c\"} 1", 0, "duplicate label name \"a\""},
    {"metric{a=\"\\q\"} 1", 0, "invalid escape"},
    {"metric{__name__=\"x\"} 1", 0, "duplicate label __name__"},
    {"metric{a} 1", 0, "expected '='"},
    {"metric{=\"b\"} 1", 0, "expected a label name"},
    {"metric 1 2 3", 0, "unexpected text"},
    {"# TYPE metric bogus", 0, "unknown type"},
    {"# TYPE 1bad counter", 0, "invalid metric name"},
    {"# TYPE metric", 0, "missing type"},
    {"metric 1 1.5", 0, "invalid timestamp"},
    {"metric 1e400", 0, "invalid value"},
    {"metric 0x10", 0, "invalid value"},
    {"metric 1 99999999999999999999", 0, "invalid timestamp"},
    {"metric{a=\"b\",,c=\"d\"} 1", 0, "expected a label name"},
    {"metric{,} 1", 0, "expected a label name"},
    {"metric{a=\"b\"c=\"d\"} 1", 0, "expected ','"},
    {"met\0ric 1", 8, "unexpected"},
    {"metric{a=\"\xff\"} 1", 0, "not valid UTF-8"},
    {"metric - 1", 0, "invalid value"},
    {"metric 1 -", 0, "invalid timestamp"},
    {"metric{a=\"b\"} ", 0, "missing value"},
    {"metric NaNx", 0, "invalid value"},
    {"metric{a=\"b\"}} 1", 0, "unexpected '}'"},
    {"metric{a=\"b\"", 0, "expected ',' or '}'"},
    {"metric{", 0, "unterminated label set"},
    {"metric{a=\"b\\", 0, "unterminated label value"},
    {"metric.dot 1", 0, "unexpected '.'"},
    {"# HELP metric bad \\t escape", 0, "invalid escape"},
    {"# HELP 9x help", 0, "invalid metric name"},
    {"metric 1 # {a=\"b\"} 1", 0, "unexpected text"}, /* exemplars are OpenMetrics only */
    {"metric{a=\"b\"}1", 0, "unexpected '1'"},
    {"metric{a-b=\"c\"} 1", 0, "expected '='"},
    {"metric{a:b=\"c\"} 1", 0, "invalid label name"},
    {"metric --1", 0, "invalid value"},
    {"metric 1.2.3", 0, "invalid value"},
    {"metric 1e", 0, "invalid value"},
};

static void test_bad_inputs(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0];
  assert_true(n >= 30);
  for (size_t i = 0; i < n; i++) {
    size_t len = bad[i].len ? bad[i].len : strlen(bad[i].input);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_opts_t o = {.default_ts = 1};
    ingest_result_t res;
    int rc = ingest_parse_prometheus(bad[i].input, len, &o, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad[i].want) ||
        tsdb_batch_sample_count(b) != 0) {
      print_error("case %zu \"%s\": rc %d, errors %zu, message \"%s\", want \"%s\"\n", i, bad[i].input, rc,
                  res.nerrors, res.nerrors ? res.errors[0].message : "", bad[i].want);
      tsdb_batch_free(b);
      fail();
    }
    assert_int_equal(res.errors[0].where, 1);
    tsdb_batch_free(b);
  }
}

/* OpenMetrics-mode bad lines: each is line 1 of a body ending in "# EOF" and must be the only
 * error, naming line 1, with nothing stored. */
static const bad_case_t om_bad[] = {
    {"a 1 notatime", 0, "invalid timestamp"},
    {"a 1 inf", 0, "invalid timestamp"},
    {"a 1 NaN", 0, "invalid timestamp"},
    {"a 1 1e400", 0, "invalid timestamp"},
    {"a 1 1e16", 0, "invalid timestamp"},
    {"a 1 1.5.5", 0, "invalid timestamp"},
    {"# UNIT a", 0, "missing unit"},
    {"# UNIT 1a seconds", 0, "invalid metric name"},
    {"# TYPE a histogramm", 0, "unknown type"},
    {"# TYPE a", 0, "missing type"},
    {"# TYPE a-b counter", 0, "invalid metric name"},
    {"# HELP a bad \\t escape", 0, "invalid escape"},
    {"# HELP a trailing \\", 0, "backslash at end"},
    {"# HELP a \xc3\x28", 0, "not valid UTF-8"},
    {"a 1 # garbage", 0, "exemplar: expected '{'"},
    {"a 1 #", 0, "exemplar: expected '{'"},
    {"a 1 # {", 0, "exemplar: unterminated label set"},
    {"a 1 # {x=\"y\"", 0, "exemplar: expected ','"},
    {"a 1 # {x=\"y} 1", 0, "exemplar: unterminated label value"},
    {"a 1 # {1x=\"y\"} 1", 0, "exemplar: invalid label name"},
    {"a 1 # {x=y} 1", 0, "exemplar: expected =\"value\""},
    {"a 1 # {x} 1", 0, "exemplar: expected =\"value\""},
    {"a 1 # {x=\"\\q\"} 1", 0, "exemplar: invalid escape"},
    {"a 1 # {x=\"\xff\"} 1", 0, "exemplar: label value is not valid UTF-8"},
    {"a 1 # {x=\"y\"}", 0, "exemplar: invalid value"},
    {"a 1 # {x=\"y\"} abc", 0, "exemplar: invalid value"},
    {"a 1 # {x=\"y\"} 1 later", 0, "exemplar: invalid timestamp"},
    {"a 1 # {x=\"y\"} 1 Inf", 0, "exemplar: invalid timestamp"},
    {"a 1 # {x=\"y\"} 1 2 3", 0, "exemplar: unexpected text"},
    {"a 1 # {x=\"y\",,} 1", 0, "exemplar: invalid label name"},
    {"a 1 # {,} 1", 0, "exemplar: invalid label name"},
    {"a{b=\"c\"} 1 # {x=\"y\"}} 1", 0, "exemplar: invalid value"},
    {"a 1 1 # {x=\"y\"} zz", 0, "exemplar: invalid value"},
    {"a{b=\"c\"} x # {} 1", 0, "invalid value"},
    {"{a=\"b\"} 1 # {} 1", 0, "missing metric name"},
    {"a{b=\"c\\t\"} 1", 0, "invalid escape"},
    {"a.b 1", 0, "unexpected '.'"},
    {"a 1 2 3", 0, "unexpected text"},
};

static void test_bad_openmetrics(void **state) {
  (void)state;
  size_t n = sizeof om_bad / sizeof om_bad[0];
  assert_true(n >= 30);
  for (size_t i = 0; i < n; i++) {
    char body[512];
    int len = snprintf(body, sizeof body, "%s\n# EOF\n", om_bad[i].input);
    assert_true(len > 0 && (size_t)len < sizeof body);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_opts_t o = {.openmetrics = true, .default_ts = 1};
    ingest_result_t res;
    int rc = ingest_parse_prometheus(body, (size_t)len, &o, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || res.errors[0].where != 1 ||
        !strstr(res.errors[0].message, om_bad[i].want) || tsdb_batch_sample_count(b) != 0) {
      print_error("case %zu \"%s\": rc %d, errors %zu, line %zu, message \"%s\", want \"%s\"\n", i,
                  om_bad[i].input, rc, res.nerrors, res.nerrors ? res.errors[0].where : 0,
                  res.nerrors ? res.errors[0].message : "", om_bad[i].want);
      tsdb_batch_free(b);
      fail();
    }
    tsdb_batch_free(b);
  }
  /* Content after # EOF is refused at its own line; what came before is kept. */
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_opts_t o = {.openmetrics = true};
  ingest_result_t res;
  const char *after = "a 1\n# EOF\nb 2\n";
  assert_int_equal(ingest_parse_prometheus(after, strlen(after), &o, b, &res), MD_EINVAL);
  assert_int_equal(res.errors[0].where, 3);
  assert_non_null(strstr(res.errors[0].message, "content after"));
  assert_int_equal(tsdb_batch_sample_count(b), 1);
  tsdb_batch_free(b);
}

static void test_label_limits(void **state) {
  (void)state;
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_label_value_len = 4;
  lim.max_labels_per_series = 3;
  ingest_opts_t o = {.limits = &lim};
  int rc;
  ingest_result_t res;
  char *got = parse("a{x=\"12345\"} 1\nb{x=\"1\",y=\"2\",z=\"3\"} 1\nc{x=\"1234\",y=\"2\"} 1\n", false, &rc,
                    &res, &o);
  assert_int_equal(rc, MD_EINVAL);
  assert_int_equal(res.rejected, 2);
  assert_non_null(strstr(res.errors[0].message, "more than the limit of 4"));
  assert_non_null(strstr(res.errors[1].message, "more than the limit of 3"));
  assert_string_equal(got, "c{x=\"1234\",y=\"2\"} 1 @0\n");
  free(got);
}

static void test_parse_double(void **state) {
  (void)state;
  struct {
    const char *s;
    double v;
  } ok[] = {{"0", 0},
            {"1", 1},
            {"-2.5", -2.5},
            {"1e3", 1000},
            {"1E-3", 0.001},
            {".5", 0.5},
            {"5.", 5},
            {"0.1", 0.1},
            {"3.141592653589793", 3.141592653589793},
            {"1.7976931348623157e308", 1.7976931348623157e308},
            {"4.9e-324", 4.9e-324},
            {"123456789012345678", 123456789012345678.0}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    double v;
    assert_int_equal(ingest_parse_double(ok[i].s, strlen(ok[i].s), &v), 0);
    assert_true(v == ok[i].v);
  }
  const char *bad_nums[] = {"",      "+",    "-",  ".",  "e5",  "1e",  "1e+",
                            "0x1p3", "nan1", "1 ", " 1", "1,5", "--1", "infx"};
  for (size_t i = 0; i < sizeof bad_nums / sizeof bad_nums[0]; i++) {
    double v;
    assert_int_not_equal(ingest_parse_double(bad_nums[i], strlen(bad_nums[i]), &v), 0);
  }
  double v;
  assert_int_equal(ingest_parse_double("NaN", 3, &v), 0);
  assert_true(isnan(v));
  assert_int_equal(ingest_parse_double("-Inf", 4, &v), 0);
  assert_true(isinf(v) && v < 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_grouping), cmocka_unit_test(test_openmetrics_detect),
      cmocka_unit_test(test_extra_labels_and_partial),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_bad_openmetrics),
      cmocka_unit_test(test_label_limits),
      cmocka_unit_test(test_parse_double),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
