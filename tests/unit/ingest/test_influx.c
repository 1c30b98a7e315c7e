/* InfluxDB line protocol parser: mapping, escapes, precision, and a table of bad lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

static char *parse(const char *in, size_t len, const ingest_opts_t *o, int *rc, ingest_result_t *res) {
  tsdb_batch_t *b = tsdb_batch_new();
  assert_non_null(b);
  *rc = ingest_parse_influx(in, len ? len : strlen(in), o, b, res);
  char *d = dump_batch(b);
  tsdb_batch_free(b);
  return d;
}

static void expect_p(const char *in, ingest_precision_t prec, const char *db, const char *want) {
  ingest_opts_t o = {.default_ts = 42, .precision = prec, .influx_db = db};
  int rc;
  ingest_result_t res;
  char *got = parse(in, 0, &o, &rc, &res);
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
#define expect(in, want) expect_p(in, INGEST_PREC_NS, NULL, want)

static void test_valid(void **state) {
  (void)state;
  expect("cpu value=1 1000000000\n", "cpu{} 1 @1000\n");
  expect("cpu,host=a,region=eu usage=0.5,idle=99i 2000000000",
         "cpu_usage{host=\"a\",region=\"eu\"} 0.5 @2000\ncpu_idle{host=\"a\",region=\"eu\"} 99 @2000\n");
  expect("cpu value=1\n", "cpu{} 1 @42\n");
  expect("m ok=t,no=FALSE,u=18446744073709551615u",
         "m_ok{} 1 @42\nm_no{} 0 @42\nm_u{} 1.8446744073709552e+19 @42\n");
  expect("m s=\"str, with = and space\",v=2", "m_v{} 2 @42\n");
  expect("m s=\"multi\nline\",v=2\nn value=3\n", "m_v{} 2 @42\nn{} 3 @42\n");
  expect("my\\ meas,tag\\,k=v\\ 1\\=x f\\ k=1", "my_meas_f_k{tag_k=\"v 1=x\"} 1 @42\n");
  expect("disk.io,dev=sda read-bytes=10", "disk_io_read_bytes{dev=\"sda\"} 10 @42\n");
  expect("m,host=h value=-1.5e3 -1000000", "m{host=\"h\"} -1500 @-1\n");
  expect("# comment\n\n  \nm value=1\r\n", "m{} 1 @42\n");
  expect("m value=1   5000000  \n", "m{} 1 @5\n");
  expect("m 1f=2", "m_1f{} 2 @42\n");
  expect("9m value=2", "_9m{} 2 @42\n");
  expect("m,path=C:\\dir value=1", "m{path=\"C:\\dir\"} 1 @42\n");
  expect_p("m value=1 1700000000", INGEST_PREC_S, NULL, "m{} 1 @1700000000000\n");
  expect_p("m value=1 1700000000123", INGEST_PREC_MS, "telegraf", "m{db=\"telegraf\"} 1 @1700000000123\n");
  expect_p("m,db=mine value=1 5", INGEST_PREC_US, "telegraf", "m{db=\"mine\"} 1 @0\n");
  expect_p("m value=1 2", INGEST_PREC_H, NULL, "m{} 1 @7200000\n");
  expect_p("m value=1 3", INGEST_PREC_M, NULL, "m{} 1 @180000\n");
}

static void test_strings_counted(void **state) {
  (void)state;
  ingest_opts_t o = {0};
  int rc;
  ingest_result_t res;
  char *got = parse("m s=\"a\"\nm t=\"b\",v=1i\n", 0, &o, &rc, &res);
  assert_int_equal(rc, 0);
  assert_int_equal(res.skipped, 2);
  assert_int_equal(res.samples, 1);
  assert_string_equal(got, "m_v{} 1 @0\n");
  free(got);
}

static void test_partial(void **state) {
  (void)state;
  ingest_opts_t o = {0};
  int rc;
  ingest_result_t res;
  char *got = parse("a value=1\nb value=oops\nc value=3\n", 0, &o, &rc, &res);
  assert_int_equal(rc, MD_EINVAL);
  assert_string_equal(got, "a{} 1 @0\nc{} 3 @0\n");
  assert_int_equal(res.nerrors, 1);
  assert_int_equal(res.errors[0].where, 2);
  sb_t m = {0};
  ingest_result_message(&res, "line", &m);
  assert_string_equal(m.buf, "line 2: invalid field value \"oops\"");
  sb_free(&m);
  free(got);
}

static void test_precision_parse(void **state) {
  (void)state;
  ingest_precision_t p;
  assert_int_equal(ingest_precision_parse("ms", 2, &p), 0);
  assert_int_equal(p, INGEST_PREC_MS);
  assert_int_equal(ingest_precision_parse("u", 1, &p), 0);
  assert_int_equal(p, INGEST_PREC_US);
  assert_int_equal(ingest_precision_parse("h", 1, &p), 0);
  assert_int_equal(p, INGEST_PREC_H);
  assert_int_not_equal(ingest_precision_parse("d", 1, &p), 0);
  assert_int_not_equal(ingest_precision_parse("", 0, &p), 0);
}

static const bad_case_t bad[] = {
    {"cpu", 0, "missing fields"},
    {"cpu ", 0, "empty field key"},
    {"cpu value", 0, "has no '='"},
    {"cpu value=", 0, "empty field value"},
    {"cpu =1", 0, "empty field key"},
    {"cpu,host value=1", 0, "has no '='"},
    {"cpu,=x value=1", 0, "empty tag key"},
    {"cpu,host= value=1", 0, "empty value"},
    {",host=a value=1", 0, "missing measurement"},
    {"cpu value=abc", 0, "invalid field value"},
    {"cpu value=1x", 0, "invalid field value"},
    {"cpu value=\"unterminated", 0, "unterminated string"},
    {"cpu value=1 abc", 0, "invalid timestamp"},
    {"cpu value=1 1 2", 0, "unexpected text after the timestamp"},
    {"cpu value=1i2", 0, "invalid field value"},
    {"cpu value=tru", 0, "invalid field value"},
    {"cpu value=1,", 0, "empty field key"},
    {"cpu value=1,,b=2", 0, "empty field key"},
    {"cpu value=1e", 0, "invalid field value"},
    {"cpu value=--1", 0, "invalid field value"},
    {"cpu,host=a\\ value=1", 0, "unescaped '='"},
    {"cpu value=99999999999999999999i", 0, "invalid field value"},
    {"cpu value=1 99999999999999999999", 0, "invalid timestamp"},
    {"cpu value=1 1.5", 0, "invalid timestamp"},
    {"cpu value=NaN", 0, "invalid field value"},
    {"cpu value=inf", 0, "invalid field value"},
    {"cpu,host=a,host=b value=1", 0, "duplicate label name \"host\""},
    {"cpu,z=a,host=a,a=b,host=b value=1", 0, "duplicate label name \"host\""},
    {"cpu,h.x=a,h_x=b value=1", 0, "duplicate label name \"h_x\""},
    {"cpu,__name__=a value=1", 0, "duplicate label __name__"},
    {"cpu value=1,value=2", 0, "duplicate field"},
    {"cpu,host=a\\", 0, "missing fields"},
    {"cpu value=-1u", 0, "invalid field value"},
    {"cpu,host=\xff value=1", 0, "not valid UTF-8"},
    {"cpu,a=b=c value=1", 0, "unescaped '='"},
    {"cpu value=1e999", 0, "invalid field value"},
    {"cpu value=1u2", 0, "invalid field value"},
    {"cpu value=1 9223372036854775807", 0, ""}, /* valid ns timestamp: placeholder replaced below */
    {"cpu value=\"a\"x", 0, "unexpected 'x' after fields"},
    {"cpu value=1\tx", 0, "invalid field value"},
    {"cpu value=0x10", 0, "invalid field value"},
};

static void test_bad_inputs(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0];
  size_t checked = 0;
  for (size_t i = 0; i < n; i++) {
    if (!bad[i].want[0]) continue;
    checked++;
    size_t len = bad[i].len ? bad[i].len : strlen(bad[i].input);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_opts_t o = {0};
    ingest_result_t res;
    int rc = ingest_parse_influx(bad[i].input, len, &o, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad[i].want) ||
        tsdb_batch_sample_count(b) != 0 || res.errors[0].where != 1) {
      print_error("case %zu \"%s\": rc %d, errors %zu, message \"%s\", want \"%s\"\n", i, bad[i].input, rc,
                  res.nerrors, res.nerrors ? res.errors[0].message : "", bad[i].want);
      tsdb_batch_free(b);
      fail();
    }
    tsdb_batch_free(b);
  }
  assert_true(checked >= 30);
  /* Timestamps at the int64 edge convert without overflow. */
  expect_p("cpu value=1 9223372036854775807", INGEST_PREC_NS, NULL, "cpu{} 1 @9223372036854\n");
  ingest_opts_t o = {.precision = INGEST_PREC_H};
  int rc;
  ingest_result_t res;
  char *got = parse("cpu value=1 9223372036854775807", 0, &o, &rc, &res);
  assert_int_equal(rc, MD_EINVAL);
  assert_non_null(strstr(res.errors[0].message, "invalid timestamp"));
  free(got);
}

static void test_line_numbers(void **state) {
  (void)state;
  ingest_opts_t o = {0};
  int rc;
  ingest_result_t res;
  char *got = parse("a s=\"x\ny\"\n\nbad\nc value=1\n", 0, &o, &rc, &res);
  assert_int_equal(rc, MD_EINVAL);
  assert_int_equal(res.errors[0].where, 4);
  assert_string_equal(got, "c{} 1 @0\n");
  free(got);
}

/* Lines repeating a series (same measurement+tags bytes and field key) share one batch series
 * with their samples in line order; every bad line is reported on its own; the per-thread
 * parser state carries nothing over to the next call. */
static void test_grouping(void **state) {
  (void)state;
  expect_p(
      "cpu,h=a value=1,idle=5 1000\nmem,h=a value=2 1000\ncpu,h=a value=3,idle=6 2000\nmem,h=a value=4 "
      "2000\n",
      INGEST_PREC_MS, NULL,
      "cpu{h=\"a\"} 1 @1000\ncpu{h=\"a\"} 3 @2000\ncpu_idle{h=\"a\"} 5 @1000\ncpu_idle{h=\"a\"} 6 @2000\n"
      "mem{h=\"a\"} 2 @1000\nmem{h=\"a\"} 4 @2000\n");
  /* Escaped bytes are part of the key; the labels are unescaped once. */
  expect_p("c,h=a\\ b value=1 1\nc,h=a\\ b value=2 2\nc,h=a\\,b value=3 3\n", INGEST_PREC_MS, NULL,
           "c{h=\"a b\"} 1 @1\nc{h=\"a b\"} 2 @2\nc{h=\"a,b\"} 3 @3\n");
  /* Another spelling of one label set is another batch series (the engine merges them). */
  expect_p("c,a=1,b=2 value=1 1\nc,b=2,a=1 value=2 2\nc,a=1,b=2 value=3 3\n", INGEST_PREC_MS, NULL,
           "c{a=\"1\",b=\"2\"} 1 @1\nc{a=\"1\",b=\"2\"} 3 @3\nc{a=\"1\",b=\"2\"} 2 @2\n");
  /* The db label is part of every series of the body. */
  expect_p("c,h=x value=1 1\nc,h=x value=2 2\n", INGEST_PREC_MS, "tg",
           "c{db=\"tg\",h=\"x\"} 1 @1\nc{db=\"tg\",h=\"x\"} 2 @2\n");
  expect_p("c,h=x value=7 3\n", INGEST_PREC_MS, NULL, "c{h=\"x\"} 7 @3\n");
  ingest_opts_t o = {.precision = INGEST_PREC_MS};
  int rc;
  ingest_result_t res;
  char *got = parse("ok value=1 1\nd,t=1,t=2 value=1 1\nok value=2 2\nd,t=1,t=2 value=2 2\nok,x=1\n", 0, &o,
                    &rc, &res);
  assert_int_equal(rc, MD_EINVAL);
  assert_string_equal(got, "ok{} 1 @1\nok{} 2 @2\n");
  assert_int_equal(res.nerrors, 3);
  assert_int_equal(res.errors[0].where, 2);
  assert_int_equal(res.errors[1].where, 4);
  assert_int_equal(res.errors[2].where, 5);
  assert_non_null(strstr(res.errors[1].message, "duplicate label name \"t\""));
  assert_non_null(strstr(res.errors[2].message, "missing fields"));
  assert_int_equal(res.samples, 2);
  assert_int_equal(res.series, 1);
  free(got);
  /* The sample limit counts repeated series' samples too. */
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_samples_per_request = 3;
  o.limits = &lim;
  got = parse("c value=1 1\nc value=2 2\nc value=3 3\nc value=4 4\n", 0, &o, &rc, &res);
  assert_int_equal(rc, MD_ELIMIT);
  free(got);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),      cmocka_unit_test(test_strings_counted),
      cmocka_unit_test(test_partial),    cmocka_unit_test(test_precision_parse),
      cmocka_unit_test(test_bad_inputs), cmocka_unit_test(test_line_numbers),
      cmocka_unit_test(test_grouping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
