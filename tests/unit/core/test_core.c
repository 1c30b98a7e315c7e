/* Unit tests for core: string builder, arena, hashing, CRC32C, time and duration parsing,
 * anchored regexes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static void test_sb(void **state) {
  (void)state;
  sb_t sb = {0};
  sb_puts(&sb, "a");
  sb_printf(&sb, "%d-%s", 42, "x");
  assert_string_equal(sb.buf, "a42-x");
  sb_reset(&sb);
  sb_json_str(&sb, "q\"\\\n\x01", 5);
  assert_string_equal(sb.buf, "\"q\\\"\\\\\\n\\u0001\"");
  sb_reset(&sb);
  for (int i = 0; i < 1000; i++) sb_printf(&sb, "%04d", i);
  assert_int_equal(sb.len, 4000);
  sb_reset(&sb);
  sb_double(&sb, 0.1);
  sb_putc(&sb, ' ');
  sb_double(&sb, NAN);
  sb_putc(&sb, ' ');
  sb_double(&sb, -INFINITY);
  sb_putc(&sb, ' ');
  sb_double(&sb, 1e21);
  assert_string_equal(sb.buf, "0.1 NaN -Inf 1e+21");
  /* Go's 'g' formatting, as Prometheus writes sample values. */
  static const struct { double v; const char *s; } go[] = {
      {480, "480"}, {700, "700"}, {100000, "100000"}, {1234567, "1.234567e+06"}, {123456, "123456"},
      {0.0001, "0.0001"}, {0.00001, "1e-05"}, {-2.5, "-2.5"}, {0, "0"}, {1e6, "1e+06"}, {72.636, "72.636"},
      {0.5885310020966418, "0.5885310020966418"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"}};
  for (size_t i = 0; i < sizeof go / sizeof go[0]; i++) {
    sb_reset(&sb);
    sb_double(&sb, go[i].v);
    assert_string_equal(sb.buf, go[i].s);
  }
  sb_free(&sb);
}

static void test_arena(void **state) {
  (void)state;
  arena_t *a = arena_new(1024);
  char *s = arena_strdup(a, "hello");
  assert_string_equal(s, "hello");
  void *big = arena_alloc(a, 100000);
  assert_non_null(big);
  memset(big, 1, 100000);
  for (int i = 0; i < 1000; i++) assert_non_null(arena_alloc(a, 100));
  assert_true(arena_bytes(a) > 100000);
  arena_reset(a);
  assert_non_null(arena_alloc(a, 10));
  arena_free(a);
}

static void test_hash_crc(void **state) {
  (void)state;
  /* RFC 3720 test vector for CRC32C: 32 bytes of zeros -> 0x8a9136aa. */
  unsigned char zeros[32] = {0};
  assert_int_equal(md_crc32c(0, zeros, 32), 0x8a9136aau);
  assert_int_equal(md_crc32c(0, "123456789", 9), 0xe3069283u);
  /* Chaining equals one pass. */
  assert_int_equal(md_crc32c(md_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
  assert_true(md_hash64("abc", 3, 0) != md_hash64("abd", 3, 0));
  assert_true(md_hash64("abc", 3, 0) == md_hash64("abc", 3, 0));
  assert_true(md_secure_equal("key", 3, "key", 3));
  assert_false(md_secure_equal("key", 3, "kex", 3));
  assert_false(md_secure_equal("key", 3, "keys", 4));
}

static void test_time(void **state) {
  (void)state;
  int64_t ms;
  assert_int_equal(md_parse_time("1700000000.5", 12, &ms), 0);
  assert_int_equal(ms, 1700000000500LL);
  const char *t = "2024-01-15T10:30:00Z";
  assert_int_equal(md_parse_time(t, strlen(t), &ms), 0);
  assert_int_equal(ms, 1705314600000LL);
  t = "2024-01-15T12:30:00.250+02:00";
  assert_int_equal(md_parse_time(t, strlen(t), &ms), 0);
  assert_int_equal(ms, 1705314600250LL);
  assert_int_equal(md_parse_time("yesterday", 9, &ms), -1);
  char buf[32];
  md_format_rfc3339(1705314600000LL, buf);
  assert_string_equal(buf, "2024-01-15T10:30:00Z");
  md_format_rfc3339(1705314600123LL, buf);
  assert_string_equal(buf, "2024-01-15T10:30:00.123Z");
  assert_int_equal(md_parse_duration("1h30m", 5, &ms), 0);
  assert_int_equal(ms, 5400000);
  assert_int_equal(md_parse_duration("100ms", 5, &ms), 0);
  assert_int_equal(ms, 100);
  assert_int_equal(md_parse_duration("1.5", 3, &ms), 0);
  assert_int_equal(ms, 1500);
  assert_int_equal(md_parse_duration("30m1h", 5, &ms), -1);
  assert_int_equal(md_parse_duration("5x", 2, &ms), -1);
}

static void test_regex(void **state) {
  (void)state;
  core_regex_t *re;
  char err[128];
  assert_int_equal(core_regex_compile("foo|ba.", 7, &re, err, sizeof err), 0);
  assert_true(core_regex_match(re, "foo", 3));
  assert_true(core_regex_match(re, "bar", 3));
  assert_false(core_regex_match(re, "foox", 4)); /* anchored */
  assert_int_equal(core_regex_literals(re, NULL, NULL), 0);
  core_regex_free(re);
  assert_int_equal(core_regex_compile("a|bc|d", 6, &re, err, sizeof err), 0);
  assert_int_equal(core_regex_literals(re, NULL, NULL), 3);
  assert_true(core_regex_match(re, "bc", 2));
  assert_false(core_regex_match(re, "b", 1));
  core_regex_free(re);
  assert_int_equal(core_regex_compile("(a", 2, &re, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "invalid regular expression"));
  assert_int_equal(core_regex_compile("(.*)-(.*)", 9, &re, err, sizeof err), 0);
  size_t off[10][2];
  assert_int_equal(core_regex_captures(re, "ab-cd", 5, off, 10), 3);
  assert_int_equal(off[1][0], 0);
  assert_int_equal(off[1][1], 2);
  assert_int_equal(off[2][0], 3);
  core_regex_free(re);
}

/* The plain definition of Go's 'g' formatting, as a reference for sb_double's faster
 * search: the fewest %e digits that round-trip, then %e or %f by the exponent. */
static void ref_double(double v, char *out, size_t cap) {
  if (isnan(v) || isinf(v)) {
    snprintf(out, cap, "%s", isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char e[40];
  int prec;
  for (prec = 0; prec < 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec, v);
    if (strtod(e, NULL) == v) break;
  }
  int exp10 = atoi(strchr(e, 'e') + 1), nd = prec + 1, dp = exp10 + 1, eprec = 6;
  if (eprec > nd && nd >= dp) eprec = nd;
  if (exp10 < -4 || exp10 >= eprec) snprintf(out, cap, "%s", e);
  else snprintf(out, cap, "%.*f", nd - dp > 0 ? nd - dp : 0, v);
}

/* sb_double (at most three printf/strtod round trips) writes exactly the reference's text. */
static void test_sb_double_matches_reference(void **state) {
  (void)state;
  uint64_t x = 0x9E3779B97F4A7C15ULL;
  static const double fixed[] = {0, -0.0, 1, -1, 0.1, 0.5, 1e-4, 1e-5, 9.9999e-5, 123456, 999999, 1e6, 1234567,
                                 120000, 1e21, 1e22, 1.5e300, 5e-324, 1e-310, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308,
                                 0.30000000000000004, 1.0 / 3, 2.0 / 3, 100, 1e15, 1e16, 123456789012345678.0,
                                 0.000123, 3.14159, -2.5e-7, 1e100, NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < 200000 + sizeof fixed / sizeof fixed[0]; i++) {
    double v;
    if (i < sizeof fixed / sizeof fixed[0]) {
      v = fixed[i];
    } else {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      switch (i % 5) {
      case 4: v = (double)(int64_t)(x % (1ULL << 51) - (1ULL << 50)) / pow(10, (double)(x >> 59) + 3 * (double)((x >> 56) & 7)); break; /* decimals of any length */
      case 0: memcpy(&v, &x, sizeof v); break;                          /* any bit pattern */
      case 1: v = (double)(x % 1000000) / 1000.0; break;                 /* short decimals */
      case 2: v = (double)(x >> 11) / 9007199254740992.0 * 1e6; break;   /* full precision */
      default: v = (double)(int64_t)(x % 20000000) - 1e7; break;         /* integers */
      }
    }
    sb_t a = {0};
    sb_double(&a, v);
    char fa[64], fb[400];
    snprintf(fa, sizeof fa, "%s", a.buf);
    ref_double(v, fb, sizeof fb);
    sb_free(&a);
    if (strcmp(fa, fb)) fail_msg("%.17g: fast %s, reference %s", v, fa, fb);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sb), cmocka_unit_test(test_sb_double_matches_reference), cmocka_unit_test(test_arena), cmocka_unit_test(test_hash_crc),
      cmocka_unit_test(test_time), cmocka_unit_test(test_regex),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
