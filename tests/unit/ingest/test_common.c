/* Shared validation helpers: name syntax, sanitising, UTF-8, integers, precision, and the
 * result message the handlers send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "ingest/ingest_int.h"

static void test_names(void **state) {
  (void)state;
  const char *metric_ok[] = {"a", "_", ":", "up", "a:b_c9", "ns:rule:rate5m", "A_Z"};
  const char *metric_bad[] = {"", "1a", "a-b", "a.b", "a b", "é", "a\n"};
  for (size_t i = 0; i < sizeof metric_ok / sizeof *metric_ok; i++)
    assert_true(ingest_valid_metric_name(metric_ok[i], strlen(metric_ok[i])));
  for (size_t i = 0; i < sizeof metric_bad / sizeof *metric_bad; i++)
    assert_false(ingest_valid_metric_name(metric_bad[i], strlen(metric_bad[i])));
  assert_true(ingest_valid_label_name("job", 3));
  assert_true(ingest_valid_label_name("__name__", 8));
  assert_false(ingest_valid_label_name(":a", 2));
  assert_false(ingest_valid_label_name("a:b", 3));
  assert_false(ingest_valid_label_name("", 0));
  assert_false(ingest_valid_label_name("9", 1));
}

static void test_sanitize(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(ingest_sanitize_name("http.server.duration", 20, true, out), 20);
  assert_string_equal(out, "http_server_duration");
  assert_int_equal(ingest_sanitize_name("9lives", 6, true, out), 7);
  assert_string_equal(out, "_9lives");
  assert_int_equal(ingest_sanitize_name("a:b-c", 5, false, out), 5);
  assert_string_equal(out, "a_b_c");
  assert_int_equal(ingest_sanitize_name("a:b", 3, true, out), 3);
  assert_string_equal(out, "a:b");
  assert_int_equal(ingest_sanitize_name("\xc3\xa9t\xc3\xa9", 5, true, out), 5);
  assert_string_equal(out, "__t__");
}

static void test_utf8(void **state) {
  (void)state;
  assert_true(ingest_valid_utf8("", 0));
  assert_true(ingest_valid_utf8("plain ascii text, long enough for the 8-byte path", 49));
  assert_true(ingest_valid_utf8("h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80", 15));
  assert_true(ingest_valid_utf8("a\0b", 3));          /* NUL is UTF-8; label values refuse it separately */
  assert_false(ingest_valid_utf8("\xc3", 1));         /* truncated */
  assert_false(ingest_valid_utf8("\xc0\xaf", 2));     /* overlong */
  assert_false(ingest_valid_utf8("\xe0\x80\xaf", 3)); /* overlong */
  assert_false(ingest_valid_utf8("\xed\xa0\x80", 3)); /* surrogate */
  assert_false(ingest_valid_utf8("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  assert_false(ingest_valid_utf8("\xff", 1));
  assert_false(ingest_valid_utf8("abcdefgh\x80", 9));
}

static void test_int64(void **state) {
  (void)state;
  int64_t v;
  assert_int_equal(ingest_parse_int64("9223372036854775807", 19, &v), 0);
  assert_true(v == INT64_MAX);
  assert_int_equal(ingest_parse_int64("-9223372036854775808", 20, &v), 0);
  assert_true(v == INT64_MIN);
  assert_int_equal(ingest_parse_int64("+5", 2, &v), 0);
  assert_true(v == 5);
  assert_int_not_equal(ingest_parse_int64("9223372036854775808", 19, &v), 0);
  assert_int_not_equal(ingest_parse_int64("-9223372036854775809", 20, &v), 0);
  assert_int_not_equal(ingest_parse_int64("", 0, &v), 0);
  assert_int_not_equal(ingest_parse_int64("-", 1, &v), 0);
  assert_int_not_equal(ingest_parse_int64("1.0", 3, &v), 0);
  /* the 18-digit fast path and its edge, against strtoll */
  assert_int_equal(ingest_parse_int64("999999999999999999", 18, &v), 0);
  assert_true(v == 999999999999999999LL);
  assert_int_equal(ingest_parse_int64("-999999999999999999", 19, &v), 0);
  assert_true(v == -999999999999999999LL);
  assert_int_equal(ingest_parse_int64("1000000000000000000", 19, &v), 0);
  assert_true(v == 1000000000000000000LL);
  assert_int_equal(ingest_parse_int64("00000000000000000000123", 23, &v), 0);
  assert_true(v == 123);
  assert_int_not_equal(ingest_parse_int64("17953056111a1", 13, &v), 0);
  assert_int_not_equal(ingest_parse_int64("1795305611 21", 13, &v), 0);
  assert_int_not_equal(ingest_parse_int64("+-1", 3, &v), 0);
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 20000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    char buf[32];
    int64_t want = (int64_t)((x >> (x % 64)) & INT64_MAX) * (x & 1 ? -1 : 1);
    int len = snprintf(buf, sizeof buf, "%lld", (long long)want);
    assert_int_equal(ingest_parse_int64(buf, (size_t)len, &v), 0);
    assert_true(v == want);
  }
}

static void test_format_double(void **state) {
  (void)state;
  struct {
    double v;
    const char *s;
  } cases[] = {{0, "0"},           {1, "1"},           {1500, "1500"},     {0.1, "0.1"},
               {0.0001, "0.0001"}, {0.00001, "1e-05"}, {123456, "123456"}, {1234567, "1.234567e+06"},
               {-2.5, "-2.5"},     {1e21, "1e+21"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    sb_t sb = {0};
    ingest_format_double(&sb, cases[i].v);
    assert_string_equal(sb.buf, cases[i].s);
    sb_free(&sb);
  }
}

static void test_result_message(void **state) {
  (void)state;
  ingest_result_t r;
  memset(&r, 0, sizeof r);
  ictx_t c;
  ictx_init(&c, NULL, NULL, &r);
  for (int i = 0; i < 12; i++)
    ictx_error(&c, (size_t)i + 1, "bad %d", i);
  sb_t sb = {0};
  ingest_result_message(&r, "line", &sb);
  assert_non_null(strstr(sb.buf, "line 1: bad 0; line 2: bad 1"));
  assert_non_null(strstr(sb.buf, "line 10: bad 9 (12 rejected in all)"));
  assert_null(strstr(sb.buf, "bad 10"));
  sb_free(&sb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),         cmocka_unit_test(test_sanitize),
      cmocka_unit_test(test_utf8),          cmocka_unit_test(test_int64),
      cmocka_unit_test(test_format_double), cmocka_unit_test(test_result_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
