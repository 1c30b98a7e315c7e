/* Unit tests for the rule template subset: variables, humanize family, printf, if/else,
 * trimming, and load-time errors for unsupported syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rules/template.h"

static const tsdb_label_t labels[] = {{"__name__", "up"}, {"instance", "host1:9100"}, {"job", "node"}};
static const tsdb_label_t ext[] = {{"cluster", "eu1"}};

static char *expand(const char *text, double value) {
  static char buf[512];
  tmpl_t *t;
  char err[256] = "";
  int rc = tmpl_compile(text, strlen(text), &t, err, sizeof err);
  if (rc) {
    snprintf(buf, sizeof buf, "COMPILE ERROR: %s", err);
    return buf;
  }
  tmpl_data_t d = {labels, 3, ext, 1, value};
  sb_t sb = {0};
  rc = tmpl_execute(t, &d, &sb, err, sizeof err);
  if (rc)
    snprintf(buf, sizeof buf, "EXEC ERROR: %s", err);
  else
    snprintf(buf, sizeof buf, "%s", sb.buf ? sb.buf : "");
  sb_free(&sb);
  tmpl_free(t);
  return buf;
}

static void test_variables(void **s) {
  (void)s;
  assert_string_equal(expand("Instance {{ $labels.instance }} of {{ .Labels.job }} down", 0),
                      "Instance host1:9100 of node down");
  assert_string_equal(expand("v={{ $value }} c={{ $externalLabels.cluster }}", 0.042), "v=0.042 c=eu1");
  assert_string_equal(expand("{{ $labels.missing }}|", 1), "|");
  assert_string_equal(expand("plain text", 1), "plain text");
}

static void test_humanize(void **s) {
  (void)s;
  assert_string_equal(expand("{{ humanize $value }}", 1234567), "1.235M");
  assert_string_equal(expand("{{ $value | humanize }}", 0.0012), "1.2m");
  assert_string_equal(expand("{{ humanize1024 $value }}", 1048576), "1Mi");
  assert_string_equal(expand("{{ humanizePercentage $value }}", 0.8765), "87.65%");
  assert_string_equal(expand("{{ humanizeDuration $value }}", 90061), "1d 1h 1m 1s");
  assert_string_equal(expand("{{ humanizeDuration $value }}", 75), "1m 15s");
  assert_string_equal(expand("{{ humanizeDuration $value }}", 1.5), "1.5s");
  assert_string_equal(expand("{{ humanizeDuration $value }}", 0.25), "250ms");
  assert_string_equal(expand("{{ humanize $value }}", 0), "0");
}

static void test_printf_if(void **s) {
  (void)s;
  assert_string_equal(expand("{{ printf \"%.2f\" $value }}%", 95.456), "95.46%");
  assert_string_equal(expand("{{ printf \"%s=%d\" $labels.job 42 }}", 0), "node=42");
  assert_string_equal(expand("{{ if gt $value 90.0 }}critical{{ else }}warning{{ end }}", 95), "critical");
  assert_string_equal(expand("{{ if gt $value 90.0 }}critical{{ else }}warning{{ end }}", 85), "warning");
  assert_string_equal(expand("{{ if gt $value 90.0 }}a{{ else if gt $value 80.0 }}b{{ else }}c{{ end }}", 85),
                      "b");
  assert_string_equal(expand("{{ if eq $labels.job \"node\" }}yes{{ end }}", 0), "yes");
  assert_string_equal(expand("a  {{- \" b \" -}}  c", 0), "a b c");
  assert_string_equal(expand("x{{/* a comment */}}y", 0), "xy");
  assert_string_equal(expand("{{ toUpper $labels.job }}", 0), "NODE");
  assert_string_equal(expand("{{ $labels.instance | stripPort }}", 0), "host1");
  assert_string_equal(expand("{{ if and (gt $value 1.0) (lt $value 3.0) }}in{{ end }}", 2), "in");
}

static void test_errors(void **s) {
  (void)s;
  assert_non_null(strstr(expand("{{ range $labels }}x{{ end }}", 0), "COMPILE ERROR"));
  assert_non_null(strstr(expand("{{ nosuchfunc $value }}", 0), "nosuchfunc"));
  assert_non_null(strstr(expand("{{ if gt $value 1.0 }}no end", 0), "missing {{end}}"));
  assert_non_null(strstr(expand("{{ $value ", 0), "unclosed"));
  assert_non_null(strstr(expand("{{ $foo }}", 0), "unsupported variable"));
  assert_non_null(strstr(expand("{{ end }}", 0), "COMPILE ERROR"));
  assert_non_null(strstr(expand("{{ humanize \"abc\" }}", 0), "EXEC ERROR"));
}

/* Values no integer or date can hold (found by fuzz_rules_template under UBSan). */
static void test_out_of_range_values(void **s) {
  (void)s;
  assert_string_equal(expand("{{ humanizeDuration $value }}", 1e300), "1e+300s");
  assert_string_equal(expand("{{ printf \"%d\" $value }}", 1e300), "%!d(float64=1e+300)");
  assert_string_equal(expand("{{ printf \"%d\" $value }}", NAN), "%!d(float64=nan)");
  assert_string_equal(expand("{{ humanizeTimestamp $value }}", 1e300), "1e+300");
  assert_string_equal(expand("{{ humanizeTimestamp $value }}", -1e300), "-1e+300");
  assert_string_equal(expand("{{ humanizeTimestamp $value }}", 1700000000), "2023-11-14 22:13:20 +0000 UTC");
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_variables), cmocka_unit_test(test_humanize),
                                     cmocka_unit_test(test_printf_if), cmocka_unit_test(test_errors),
                                     cmocka_unit_test(test_out_of_range_values)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
