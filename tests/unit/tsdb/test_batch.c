/* Unit tests for tsdb_batch_t: label sorting, duplicates, empty values, sample grouping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

static void test_batch_basic(void **state) {
  (void)state;
  tsdb_batch_t *b = tsdb_batch_new();
  tsdb_label_t ls[] = {{"job", "x"}, {"__name__", "up"}, {"empty", ""}, {"instance", "a"}};
  assert_int_equal(tsdb_batch_series(b, ls, 4), 0);
  assert_int_equal(tsdb_batch_sample(b, 1000, 1.0), 0);
  assert_int_equal(tsdb_batch_sample(b, 2000, 2.0), 0);
  tsdb_batch_series_begin(b);
  assert_int_equal(tsdb_batch_label(b, "b", 1, "2", 1), 0);
  assert_int_equal(tsdb_batch_label(b, "a", 1, "1", 1), 0);
  assert_int_equal(tsdb_batch_series_end(b), 0);
  assert_int_equal(tsdb_batch_sample(b, 5, tsdb_stale_nan()), 0);
  assert_int_equal(tsdb_batch_series_count(b), 2);
  assert_int_equal(tsdb_batch_sample_count(b), 3);
  const tsdb_label_t *l;
  size_t nl, ns;
  const tsdb_sample_t *s;
  tsdb_batch_get(b, 0, &l, &nl, &s, &ns);
  assert_int_equal(nl, 3);
  assert_string_equal(l[0].name, "__name__");
  assert_string_equal(l[1].name, "instance");
  assert_string_equal(l[2].name, "job");
  assert_int_equal(ns, 2);
  assert_int_equal(s[1].ts, 2000);
  tsdb_batch_get(b, 1, &l, &nl, &s, &ns);
  assert_string_equal(l[0].name, "a");
  assert_true(tsdb_is_stale_nan(s[0].v));
  assert_false(tsdb_is_stale_nan(NAN));
  tsdb_batch_free(b);
}

static void test_batch_errors(void **state) {
  (void)state;
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(tsdb_batch_sample(b, 1, 1), MD_EINVAL); /* no series open */
  tsdb_label_t dup[] = {{"a", "1"}, {"a", "2"}};
  assert_int_equal(tsdb_batch_series(b, dup, 2), MD_EINVAL);
  assert_int_equal(tsdb_batch_series_count(b), 0);
  assert_int_equal(tsdb_batch_sample(b, 1, 1), MD_EINVAL);
  /* A duplicate that is not adjacent in the input, and names that are prefixes of others. */
  tsdb_label_t dup2[] = {{"b", "1"}, {"ab", "1"}, {"c", "1"}, {"a", "1"}, {"ab", "2"}};
  assert_int_equal(tsdb_batch_series(b, dup2, 5), MD_EINVAL);
  assert_int_equal(tsdb_batch_series_count(b), 0);
  tsdb_label_t prefix[] = {{"ab", "2"}, {"b", "3"}, {"a", "1"}, {"abc", "4"}};
  assert_int_equal(tsdb_batch_series(b, prefix, 4), 0);
  const tsdb_label_t *l;
  size_t nl;
  tsdb_batch_get(b, 0, &l, &nl, NULL, NULL);
  assert_int_equal(nl, 4);
  assert_string_equal(l[0].name, "a");
  assert_string_equal(l[0].value, "1");
  assert_string_equal(l[1].name, "ab");
  assert_string_equal(l[1].value, "2");
  assert_string_equal(l[2].name, "abc");
  assert_string_equal(l[3].name, "b");
  assert_string_equal(l[3].value, "3");
  tsdb_batch_reset(b);
  tsdb_label_t noname[] = {{"", "1"}};
  assert_int_equal(tsdb_batch_series(b, noname, 1), MD_EINVAL);
  tsdb_batch_reset(b);
  assert_int_equal(tsdb_batch_sample_count(b), 0);
  tsdb_batch_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch_basic), cmocka_unit_test(test_batch_errors)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
