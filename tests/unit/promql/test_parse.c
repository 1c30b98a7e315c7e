/* Unit tests for the PromQL lexer, parser, type checker and printers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "promql/pql.h"

/* Parses q and returns its canonical one-line form (static buffer). */
static const char *roundtrip(const char *q) {
  static char out[1024];
  promql_expr_t *e;
  char err[256];
  int rc = promql_parse(q, strlen(q), &e, NULL, err, sizeof err);
  if (rc < 0) {
    snprintf(out, sizeof out, "ERR %s", err);
    return out;
  }
  sb_t sb = {0};
  promql_expr_string(e, &sb);
  snprintf(out, sizeof out, "%s", sb.buf ? sb.buf : "");
  sb_free(&sb);
  promql_expr_free(e);
  return out;
}

static void test_canonical_forms(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"foo", "foo"},
      {"foo{a=\"b\",c!~'d'}", "foo{a=\"b\", c!~\"d\"}"},
      {"{__name__=~\"a.*\"}", "{__name__=~\"a.*\"}"},
      {"rate(foo[5m])", "rate(foo[5m])"},
      {"foo[1h30m] offset -5m", "foo[1h30m] offset -5m"},
      {"foo @ 100", "foo @ 100.000"},
      {"foo @ start()", "foo @ start()"},
      {"sum by (a, b) (foo)", "sum by (a, b) (foo)"},
      {"sum(foo) without (a)", "sum without (a) (foo)"},
      {"SUM BY (job) (foo)", "sum by (job) (foo)"},
      {"topk(3, foo)", "topk(3, foo)"},
      {"a + on(x) group_left(y) b", "a + on (x) group_left (y) b"},
      {"a > bool 1", "a > bool 1"},
      {"a and ignoring(x) b", "a and ignoring (x) b"},
      {"rate(foo[5m:30s])", "rate(foo[5m:30s])"},
      {"max_over_time(foo[1h:])", "max_over_time(foo[1h:])"},
      {"-foo", "-foo"},
      {"- 1", "-1"},
      {"0x1f", "31"},
      {"1e3", "1000"},
      {"Inf", "Inf"},
      {"-inf", "-Inf"},
      {"nan", "NaN"},
      {"\"a\\nb\"", "\"a\\nb\""},
      {"`raw\\n`", "\"raw\\\\n\""},
      {"foo # comment\n + bar", "foo + bar"},
      {"label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")", "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")"},
      {"histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))", "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *got = roundtrip(cases[i][0]);
    if (strcmp(got, cases[i][1])) fail_msg("%s: expected %s, got %s", cases[i][0], cases[i][1], got);
  }
}

static void test_precedence(void **state) {
  (void)state;
  /* Parenthesise through a full round trip: the tree shape shows in how printing groups. */
  promql_expr_t *e;
  char err[256];
  assert_int_equal(promql_parse("1 + 2 * 3", 9, &e, NULL, err, sizeof err), 0);
  assert_string_equal(promql_expr_type_name(e), "scalar");
  promql_expr_free(e);
  /* ^ is right-associative and binds tighter than unary minus: -2^2 = -4, 2^3^2 = 512. */
  static const char *const q[] = {"-2 ^ 2", "2 ^ 3 ^ 2", "1 - 2 - 3", "2 * 3 % 4", "1 + 2 * 3"};
  static const double want[] = {-4, 512, -4, 2, 7};
  for (size_t i = 0; i < 5; i++) {
    promql_result_t *r;
    assert_int_equal(promql_query_instant(NULL, "", q[i], strlen(q[i]), 0, NULL, &r, err, sizeof err), 0);
    assert_int_equal(promql_result_type(r), PROMQL_VALUE_SCALAR);
    assert_true(promql_result_scalar(r, NULL) == want[i]);
    promql_result_free(r);
  }
}

static void test_errors(void **state) {
  (void)state;
  static const char *const bad[][2] = {
      {"", "no expression found"},
      {"foo{", "unexpected end of input inside braces"},
      {"sum(foo", "unclosed left parenthesis"},
      {"sum(rate(", "1:10: parse error: unclosed left parenthesis"},
      {"foo[5m", "unclosed left bracket"},
      {"rate(foo)", "expected type range vector in call to function \"rate\", got instant vector"},
      {"abs(foo[5m])", "expected type instant vector in call to function \"abs\", got range vector"},
      {"nosuchfunc(foo)", "unknown function with name \"nosuchfunc\""},
      {"{}", "vector selector must contain at least one non-empty matcher"},
      {"{a=~\".*\"}", "vector selector must contain at least one non-empty matcher"},
      {"1 > 2", "comparisons between scalars must use BOOL modifier"},
      {"foo and 1", "set operator \"and\" not allowed in binary scalar expression"},
      {"foo + bool bar", "bool modifier can only be used on comparison operators"},
      {"1 + on(a) 2", "vector matching only allowed between instant vectors"},
      {"(foo + bar)[5m]", "ranges only allowed for vector selectors"},
      {"foo[5m][5m]", ""},
      {"foo offset 1m offset 2m", "offset may not be set multiple times"},
      {"topk(foo)", "wrong number of arguments"},
      {"round(foo, 1, 2)", "expected at most 2 argument(s)"},
      {"label_join(foo)", "expected at least 3 argument(s)"},
      {"1 +", "unexpected end of input"},
      {"foo{a=\"b\"", "unexpected end of input inside braces"},
      {"\"unterminated", "unterminated quoted string"},
      {"foo[5x]", "bad number or duration syntax"},
      {"foo{a=~\"(\"}", ""},
      {"foo{__name__=\"bar\"}", "metric name must not be set twice"},
      {"1 $ 2", "unexpected character"},
      {"\"\\q\"", "unknown escape sequence U+0071 'q'"},
      {"'unterminated", "1:1: parse error: unterminated quoted string"},
      {"sum by (a b) (foo)", "in grouping opts, expected \",\" or \")\""},
      {"foo[0s]", "1:5: parse error: duration must be greater than 0"},
      {"foo[5m:0s]", "1:8: parse error: duration must be greater than 0"},
      {"foo{__name__=\"bar\"}", "1:1: parse error: metric name must not be set twice"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    promql_expr_t *e = NULL;
    char err[256] = "";
    promql_pos_t pos;
    int rc = promql_parse(bad[i][0], strlen(bad[i][0]), &e, &pos, err, sizeof err);
    if (rc != MD_EINVAL) fail_msg("%s: expected a parse error, got rc %d", bad[i][0], rc);
    assert_null(e);
    if (!strstr(err, "parse error")) fail_msg("%s: message lacks 'parse error': %s", bad[i][0], err);
    if (!strstr(err, bad[i][1])) fail_msg("%s: expected '%s' in '%s'", bad[i][0], bad[i][1], err);
    assert_true(pos.line >= 1 && pos.col >= 1);
  }
}

/* Trees stay shallow enough for the recursive walks: binary operators are counted. */
static void test_size_limits(void **state) {
  (void)state;
  for (int n = 1999; n <= 2001; n++) {
    sb_t q = {0};
    sb_puts(&q, "x");
    for (int i = 0; i < n; i++) sb_puts(&q, " + x");
    promql_expr_t *e = NULL;
    char err[256] = "";
    promql_pos_t pos;
    int rc = promql_parse(q.buf, q.len, &e, &pos, err, sizeof err);
    if (n <= 2000) {
      assert_int_equal(rc, 0);
      promql_expr_free(e);
    } else {
      assert_int_equal(rc, MD_EINVAL);
      assert_non_null(strstr(err, "more than 2000 binary operators"));
      assert_int_equal(pos.col, 1 + 4 * 2000 + 2); /* the 2001st "+" */
    }
    sb_free(&q);
  }
}

static void test_error_position(void **state) {
  (void)state;
  promql_expr_t *e;
  char err[256];
  promql_pos_t pos;
  const char *q = "sum(rate(foo[5m])) +\n  nosuch(bar)";
  assert_int_equal(promql_parse(q, strlen(q), &e, &pos, err, sizeof err), MD_EINVAL);
  assert_int_equal(pos.line, 2);
  assert_int_equal(pos.col, 3);
  assert_true(strncmp(err, "2:3: parse error:", 17) == 0);
}

static void test_pretty(void **state) {
  (void)state;
  const char *q = "sum by (job, instance, mode) (rate(node_cpu_seconds_total{mode!=\"idle\", job=\"node\"}[5m])) / "
                  "on (job, instance) group_left () count by (job, instance) (node_cpu_seconds_total{mode=\"idle\"})";
  promql_expr_t *e;
  char err[256];
  assert_int_equal(promql_parse(q, strlen(q), &e, NULL, err, sizeof err), 0);
  sb_t sb = {0};
  promql_format(e, &sb);
  /* Too long for one line: the operator stands on its own line, operands indented. */
  assert_non_null(strstr(sb.buf, "\n/ on (job, instance) group_left ()\n"));
  assert_true(strncmp(sb.buf, "  sum by", 8) == 0);
  /* The pretty form parses back to the same canonical form. */
  promql_expr_t *e2;
  assert_int_equal(promql_parse(sb.buf, sb.len, &e2, NULL, err, sizeof err), 0);
  sb_t a = {0}, b = {0};
  promql_expr_string(e, &a);
  promql_expr_string(e2, &b);
  assert_string_equal(a.buf, b.buf);
  sb_free(&a), sb_free(&b), sb_free(&sb);
  promql_expr_free(e2);
  promql_expr_free(e);
}

/* Duration expressions: constants fold at parse time (printed as plain durations); those that
 * read step() or range() print as their expression and re-parse to the same form. */
static void test_duration_expressions(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"foo[26m+4m]", "foo[30m]"},
      {"foo[2m*(10+5)]", "foo[30m]"},
      {"foo[-5m+35m]", "foo[30m]"},
      {"foo[1h30m % 1h]", "foo[30m]"},
      {"foo[60*30]", "foo[30m]"},
      {"foo[29s+1s:5s+5s]", "foo[30s:10s]"},
      {"foo offset (2 * 2)", "foo offset 4s"},
      {"foo offset -(1h/2)", "foo offset -30m"},
      {"foo offset 100 + 2", "foo offset 1m40s + 2"},
      {"foo offset 2 ^ 2", "foo offset 2s ^ 2"},
      {"foo offset -step()*2", "foo offset (-step()) * 2"},
      {"foo offset STEP()", "foo offset (step())"},
      {"foo[step()+1ms]", "foo[(step() + 0.001)]"},
      {"foo[1m:min_of(step(), 1s)]", "foo[1m:(min_of(step(), 1))]"},
      {"foo[range()] offset max_of(range(), 1m)", "foo[(range())] offset (max_of(range(), 60))"},
      {"a + fill(0) b", "a + fill (0) b"},
      {"a + fill_left(1) fill_right(-2) b", "a + fill_left (1) fill_right (-2) b"},
      {"a + fill_left(1) fill_right(1) b", "a + fill (1) b"},
      {"a == bool on(x) group_left(y) fill_right(NaN) b", "a == bool on (x) group_left (y) fill_right (NaN) b"},
      {"a + fill", "a + fill"},
      {"fill + fill_right(0) fill_right", "fill + fill_right (0) fill_right"},
      {"info(up, {data=~\".*\"})", "info(up, {data=~\".*\"})"},
      {"info(up)", "info(up)"},
      {"rate(foo[5m] anchored)", "rate(foo[5m] anchored)"},
      {"increase(foo[5m] offset 1m smoothed)", "increase(foo[5m] offset 1m smoothed)"},
      {"foo @ 100 smoothed", "foo @ 100.000 smoothed"},
      {"smoothed + anchored", "smoothed + anchored"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char got[1024];
    snprintf(got, sizeof got, "%s", roundtrip(cases[i][0]));
    if (strcmp(got, cases[i][1])) fail_msg("%s: expected %s, got %s", cases[i][0], cases[i][1], got);
    const char *again = roundtrip(got);
    if (strcmp(again, got)) fail_msg("%s: printed form %s re-parses as %s", cases[i][0], got, again);
  }
  static const char *const bad[][2] = {
      {"foo[5m-5m]", "duration must be greater than 0"},
      {"foo[1m-2m]", "duration must be greater than 0"},
      {"foo[bar]", "expected duration"},
      {"foo[1m + time()]", "invalid duration expression"},
      {"foo[1m + bar]", "invalid duration expression"},
      {"foo[1m > bool 1]", "invalid duration expression"},
      {"foo[1/0]", "duration out of range"},
      {"foo offset bar", "expected duration"},
      {"foo offset (1m", "unclosed left parenthesis"},
      {"foo offset (1m]", "in duration expression, expected \")\""},
      {"a and fill(0) b", "fill modifiers are only allowed"},
      {"a + fill(0) 1", "fill modifiers are only allowed"},
      {"a + fill(0) fill_left(1) b", "may not be set multiple times"},
      {"a + fill(b) c", "in fill modifier, expected number"},
      {"info(up, rate(x[5m]))", "expected label selectors as the second argument"},
      {"foo anchored", "anchored modifier can only be used with range vector selectors"},
      {"foo[1m] anchored smoothed", "once per selector"},
      {"foo smoothed[1m]", "before range"},
      {"info(up, x offset 1m)", "expected label selectors as the second argument"},
      {"up + {data=~\".*\"}", "at least one non-empty matcher"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *got = roundtrip(bad[i][0]);
    if (strncmp(got, "ERR", 3) || !strstr(got, bad[i][1])) fail_msg("%s: expected error '%s', got %s", bad[i][0], bad[i][1], got);
  }
}

static void test_types(void **state) {
  (void)state;
  static const char *const q[][2] = {
      {"foo", "vector"}, {"foo[5m]", "matrix"}, {"1", "scalar"}, {"\"s\"", "string"},
      {"foo[5m:1m]", "matrix"}, {"scalar(foo)", "scalar"}, {"time()", "scalar"}, {"foo + 1", "vector"},
  };
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
    promql_expr_t *e;
    char err[256];
    assert_int_equal(promql_parse(q[i][0], strlen(q[i][0]), &e, NULL, err, sizeof err), 0);
    assert_string_equal(promql_expr_type_name(e), q[i][1]);
    promql_expr_free(e);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_canonical_forms), cmocka_unit_test(test_precedence), cmocka_unit_test(test_errors), cmocka_unit_test(test_size_limits),
      cmocka_unit_test(test_error_position), cmocka_unit_test(test_pretty), cmocka_unit_test(test_types),
      cmocka_unit_test(test_duration_expressions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
