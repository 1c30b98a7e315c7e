/* StatsD line parser: types, sample rates, tags, and a table of bad lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

static int collect(void *ctx, const ingest_statsd_event_t *e) {
  sb_t *sb = ctx;
  sb_printf(sb, "%.*s %d %g%s rate=%g", (int)e->nlen, e->name, (int)e->type, e->value,
            e->relative ? " rel" : "", e->sample_rate);
  if (e->set_member) sb_printf(sb, " member=%.*s", (int)e->set_len, e->set_member);
  if (e->tags) sb_printf(sb, " tags=%.*s", (int)e->tags_len, e->tags);
  sb_putc(sb, '\n');
  return 0;
}

static void test_valid(void **state) {
  (void)state;
  const char *in = "hits:1|c\nhits:2|c|@0.5\ntemp:-3|g\ntemp:21.5|g\nlat:320|ms|#env:prod,az:1\n"
                   "users:alice|s\nsize:4|h\nd:1|d|T1700000000\n\n";
  sb_t sb = {0};
  ingest_result_t res;
  assert_int_equal(ingest_parse_statsd(in, strlen(in), collect, &sb, &res), 0);
  assert_string_equal(sb.buf, "hits 0 1 rate=1\nhits 0 2 rate=0.5\ntemp 1 -3 rel rate=1\ntemp 1 21.5 rate=1\n"
                              "lat 2 320 rate=1 tags=env:prod,az:1\nusers 3 1 rate=1 member=alice\n"
                              "size 2 4 rate=1\nd 2 1 rate=1\n");
  assert_int_equal(res.samples, 8);
  sb_free(&sb);
}

static const bad_case_t bad[] = {
    {"hits", 0, "missing ':'"},
    {":1|c", 0, "empty metric name"},
    {"hits:1", 0, "missing '|'"},
    {"hits:|c", 0, "empty value"},
    {"hits:1|", 0, "unknown type"},
    {"hits:1|x", 0, "unknown type"},
    {"hits:1|cc", 0, "unknown type"},
    {"hits:1|C", 0, "unknown type"},
    {"hits:abc|c", 0, "invalid value"},
    {"hits:1x|c", 0, "invalid value"},
    {"hits:nan|g", 0, "invalid value"},
    {"hits:inf|g", 0, "invalid value"},
    {"hits:1e999|g", 0, "invalid value"},
    {"hits:--1|c", 0, "invalid value"},
    {"hits:+|g", 0, "invalid value"},
    {"hits:1|c|@", 0, "invalid sample rate"},
    {"hits:1|c|@0", 0, "invalid sample rate"},
    {"hits:1|c|@1.5", 0, "invalid sample rate"},
    {"hits:1|c|@-1", 0, "invalid sample rate"},
    {"hits:1|c|@x", 0, "invalid sample rate"},
    {"hits:1|c|zz", 0, "unknown section"},
    {"hits:1|c|", 0, "unknown section"},
    {"hits:1|c||#a:b", 0, "unknown section"},
    {"hits:1|c:2|c", 0, "unknown type"},
    {"h\xffits:1|c", 0, "not valid UTF-8"},
    {"hits:1.2.3|c", 0, "invalid value"},
    {"hits:0x10|c", 0, "invalid value"},
    {"hits:1 |c", 0, "invalid value"},
    {"hits:1|ms|@0.5|x", 0, "unknown section"},
    {"hits:1|g|@2", 0, "invalid sample rate"},
    {"hits:e5|c", 0, "invalid value"},
    {"hits:1|s s", 0, "unknown type"},
};

static void test_bad_inputs(void **state) {
  (void)state;
  size_t n = sizeof bad / sizeof bad[0];
  assert_true(n >= 30);
  for (size_t i = 0; i < n; i++) {
    sb_t sb = {0};
    ingest_result_t res;
    int rc = ingest_parse_statsd(bad[i].input, strlen(bad[i].input), collect, &sb, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad[i].want) || sb.len) {
      print_error("case %zu \"%s\": rc %d msg \"%s\" want \"%s\"\n", i, bad[i].input, rc,
                  res.nerrors ? res.errors[0].message : "", bad[i].want);
      sb_free(&sb);
      fail();
    }
    sb_free(&sb);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_bad_inputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
