/* Unit tests for the seed REST engine (src/api/seed.c): selectors, filtering of our own
 * expositions, and the aggregated / latest-value exports over a real tsdb. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/seed.h"
#include "api/seed_internal.h"
#include "core/core.h"
#include "tsdb/tsdb.h"

typedef struct fixture {
  char dir[64];
  tsdb_t *db;
  int64_t now;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/test_seed.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  tsdb_options_t opt;
  tsdb_options_default(&opt);
  opt.background = false;
  char err[256];
  if (tsdb_open(f->dir, &opt, &f->db, err, sizeof err)) {
    fprintf(stderr, "tsdb_open: %s\n", err);
    return -1;
  }
  f->now = md_now_ms();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  tsdb_close(f->db);
  md_rm_rf(f->dir);
  free(f);
  return 0;
}

/* Appends one series: labels as "name", "k1", "v1", ... NULL; n samples ts[i], v[i]. */
static void put(fixture_t *f, const char *tenant, const int64_t *ts, const double *v, size_t n, ...) {
  tsdb_label_t l[16];
  size_t nl = 0;
  va_list ap;
  va_start(ap, n);
  l[nl++] = (tsdb_label_t){"__name__", va_arg(ap, const char *)};
  const char *k;
  while ((k = va_arg(ap, const char *)) != NULL) l[nl++] = (tsdb_label_t){k, va_arg(ap, const char *)};
  va_end(ap);
  tsdb_batch_t *b = tsdb_batch_new();
  assert_non_null(b);
  assert_int_equal(tsdb_batch_series(b, l, nl), 0);
  for (size_t i = 0; i < n; i++) assert_int_equal(tsdb_batch_sample(b, ts[i], v[i]), 0);
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(f->db, tenant, b, &res), 0);
  assert_int_equal(res.samples_rejected, 0);
  tsdb_batch_free(b);
}

static void test_selectors(void **state) {
  (void)state;
  arena_t *a = arena_new(0);
  seed_selector_t s[2];
  char err[256];
  assert_int_equal(seed_parse_selector("up{job=~\"api|web\",env!=\"dev\"}", 29, a, &s[0], err, sizeof err), 0);
  assert_int_equal(s[0].n, 3);
  tsdb_label_t l1[] = {{"__name__", "up"}, {"env", "prod"}, {"job", "web"}};
  tsdb_label_t l2[] = {{"__name__", "up"}, {"env", "dev"}, {"job", "web"}};
  tsdb_label_t l3[] = {{"__name__", "up"}, {"job", "webx"}};
  assert_true(seed_selector_matches(s, 1, l1, 3, NULL));
  assert_false(seed_selector_matches(s, 1, l2, 3, NULL));
  assert_false(seed_selector_matches(s, 1, l3, 2, NULL)); /* anchored regex */
  /* a family name stands in for __name__ */
  const char *sel2 = "rt_seconds";
  assert_int_equal(seed_parse_selector(sel2, strlen(sel2), a, &s[1], err, sizeof err), 0);
  tsdb_label_t b1[] = {{"__name__", "rt_seconds_bucket"}, {"le", "1"}};
  assert_false(seed_selector_matches(&s[1], 1, b1, 2, NULL));
  assert_true(seed_selector_matches(&s[1], 1, b1, 2, "rt_seconds"));
  /* ORed */
  assert_true(seed_selector_matches(s, 2, b1, 2, "rt_seconds"));
  assert_true(seed_selector_matches(NULL, 0, b1, 2, NULL));
  seed_selector_release(s, 2);

  /* bad selectors are errors, not crashes */
  const char *bad[] = {"", "{}", "{a=\"\"}", "up{", "up{a=\"x\"", "up{a~\"x\"}",
                       "up{a=~\"(\"}", "{a!=\"x\"}", "up}", "1up"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    seed_selector_t t;
    err[0] = 0;
    int rc = seed_parse_selector(bad[i], strlen(bad[i]), a, &t, err, sizeof err);
    if (rc == 0) {
      fprintf(stderr, "accepted bad selector %s\n", bad[i]);
      seed_selector_release(&t, 1);
    }
    assert_int_not_equal(rc, 0);
    assert_true(err[0] != 0);
  }
  arena_free(a);
}

static void test_filter_exposition(void **state) {
  (void)state;
  const char *text =
      "# HELP api_requests_total Total API requests\n"
      "# TYPE api_requests_total counter\n"
      "api_requests_total{service=\"gateway\",method=\"GET\"} 100\n"
      "api_requests_total{service=\"billing\",method=\"GET\"} 5\n"
      "# HELP rt_seconds Response time\n"
      "# TYPE rt_seconds histogram\n"
      "rt_seconds_bucket{service=\"gateway\",le=\"+Inf\"} 3\n"
      "rt_seconds_sum{service=\"gateway\"} 0.1\n"
      "rt_seconds_count{service=\"gateway\"} 3\n"
      "plain 1\n"
      "# EOF\n";
  sb_t out = {0};
  json_t *names = json_object();
  size_t kept = seed_filter_exposition(text, strlen(text), NULL, 0, &out, names);
  assert_int_equal(kept, 6);
  assert_null(strstr(out.buf, "# EOF"));
  assert_non_null(json_object_get(names, "rt_seconds"));
  assert_non_null(json_object_get(names, "rt_seconds_bucket"));
  assert_non_null(json_object_get(names, "plain"));

  arena_t *a = arena_new(0);
  seed_selector_t s;
  char err[256];
  assert_int_equal(seed_parse_selector("{service=\"gateway\"}", 19, a, &s, err, sizeof err), 0);
  sb_reset(&out);
  kept = seed_filter_exposition(text, strlen(text), &s, 1, &out, NULL);
  assert_int_equal(kept, 4);
  assert_non_null(strstr(out.buf, "# TYPE rt_seconds histogram\n"));
  assert_null(strstr(out.buf, "billing"));
  assert_null(strstr(out.buf, "plain"));
  seed_selector_release(&s, 1);

  assert_int_equal(seed_parse_selector("rt_seconds", 10, a, &s, err, sizeof err), 0);
  sb_reset(&out);
  kept = seed_filter_exposition(text, strlen(text), &s, 1, &out, NULL);
  assert_int_equal(kept, 3); /* the family name matches its _bucket/_sum/_count lines */
  assert_null(strstr(out.buf, "api_requests_total"));
  seed_selector_release(&s, 1);
  arena_free(a);
  json_decref(names);
  sb_free(&out);
}

static void test_metric_type(void **state) {
  (void)state;
  json_t *types = json_pack("{s:s,s:s}", "rt", "histogram", "jobs", "counter");
  assert_string_equal(seed_metric_type(types, "jobs"), "counter");
  assert_string_equal(seed_metric_type(types, "rt_bucket"), "histogram");
  assert_string_equal(seed_metric_type(types, "rt_count"), "histogram");
  assert_string_equal(seed_metric_type(NULL, "x_total"), "counter");
  assert_string_equal(seed_metric_type(NULL, "temperature"), "gauge");
  json_decref(types);
  assert_int_equal(seed_agg_parse("max", 3), SEED_AGG_MAX);
  assert_int_equal(seed_agg_parse("median", 6), 0);
}

static void test_aggregated(void **state) {
  fixture_t *f = *state;
  int64_t ts[20];
  double c[20], g[10], sum[5], cnt[5];
  for (int i = 0; i < 20; i++) {
    ts[i] = f->now - 285000 + i * 15000;
    c[i] = i < 10 ? i * 5.0 : (i - 10) * 5.0 + 2.0; /* reset after 45 */
  }
  for (int i = 0; i < 10; i++) g[i] = 20.0 + i * 0.5;
  for (int i = 0; i < 5; i++) sum[i] = i * 1.26, cnt[i] = i * 30.0;
  put(f, "t1", ts, c, 20, "api_requests_total", "endpoint", "/api/v1/instruments", "service", "gateway", NULL);
  put(f, "t1", ts, g, 10, "temperature", "room", "a\"b", NULL);
  put(f, "t1", ts, sum, 5, "rt_seconds_sum", "service", "gw", NULL);
  put(f, "t1", ts, cnt, 5, "rt_seconds_count", "service", "gw", NULL);
  put(f, "t1", ts, cnt, 5, "rt_seconds_bucket", "le", "+Inf", "service", "gw", NULL);
  /* old data outside the window, another tenant */
  int64_t old[2] = {f->now - 3600000, f->now - 3500000};
  double ov[2] = {1, 2};
  put(f, "t1", old, ov, 2, "stale_gauge", NULL);
  put(f, "t2", ts, g, 10, "temperature", "room", "other", NULL);

  seed_export_options_t o = {.now_ms = f->now, .window_ms = 300000, .aggs = 31,
                             .format = SEED_FMT_PROMETHEUS};
  sb_t out = {0};
  size_t lines = 0;
  char err[256];
  assert_int_equal(seed_export_aggregated(f->db, "t1", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  const char *want[] = {
      "# TYPE api_requests_total_avg gauge\n",
      /* increase 45 + 2 + 45 = 92 over 285 s = 4.75 min */
      "api_requests_total_sum{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 92\n",
      "api_requests_total_max{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 47\n",
      "api_requests_total_count{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 20\n",
      "temperature_avg{room=\"a\\\"b\"} 22.25\n",
      "temperature_min{room=\"a\\\"b\"} 20\n",
      "rt_seconds_avg{service=\"gw\"} 0.042\n",
      "rt_seconds_count{service=\"gw\"} 120\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    if (!strstr(out.buf, want[i])) fprintf(stderr, "missing %s in:\n%s", want[i], out.buf);
    assert_non_null(strstr(out.buf, want[i]));
  }
  const char *avg = strstr(out.buf, "api_requests_total_avg{");
  assert_non_null(avg);
  assert_float_equal(strtod(strchr(avg, '}') + 2, NULL), 92.0 / 4.75, 1e-9);
  assert_null(strstr(out.buf, "rt_seconds_bucket"));
  assert_null(strstr(out.buf, "stale_gauge"));
  assert_null(strstr(out.buf, "other"));
  /* histogram averages have no min/max */
  assert_null(strstr(out.buf, "rt_seconds_min"));
  assert_int_equal(lines, 5 + 5 + 3);

  /* filter + subset of aggregates + JSON */
  arena_t *a = arena_new(0);
  seed_selector_t s;
  assert_int_equal(seed_parse_selector("temperature", 11, a, &s, err, sizeof err), 0);
  o.aggs = SEED_AGG_MAX;
  o.format = SEED_FMT_JSON;
  sb_reset(&out);
  assert_int_equal(seed_export_aggregated(f->db, "t1", &s, 1, &o, &out, &lines, err, sizeof err), 0);
  assert_int_equal(lines, 1);
  sb_t wrapped = {0}; /* elements only: the caller wraps them */
  sb_printf(&wrapped, "[%s]", out.buf);
  json_t *arr = json_loads(wrapped.buf, 0, NULL);
  assert_non_null(arr);
  json_t *item = json_array_get(arr, 0);
  assert_string_equal(json_string_value(json_object_get(item, "name")), "temperature");
  assert_string_equal(json_string_value(json_object_get(item, "type")), "gauge");
  assert_float_equal(json_number_value(json_object_get(json_object_get(item, "aggregates"), "max")), 24.5, 1e-12);
  assert_null(json_object_get(json_object_get(item, "aggregates"), "avg"));
  json_decref(arr);
  sb_free(&wrapped);

  /* "last" (aggregation.types may name it): the newest raw sample in the window, for
   * gauges and counters; histogram averages have none */
  seed_selector_t all[2];
  assert_int_equal(seed_agg_parse("last", 4), SEED_AGG_LAST);
  assert_int_equal(seed_agg_parse("median", 6), 0);
  assert_int_equal(seed_parse_selector("{service=~\"g.*\"}", 16, a, &all[0], err, sizeof err), 0);
  assert_int_equal(seed_parse_selector("temperature", 11, a, &all[1], err, sizeof err), 0);
  o.aggs = SEED_AGG_LAST;
  o.format = SEED_FMT_PROMETHEUS;
  sb_reset(&out);
  assert_int_equal(seed_export_aggregated(f->db, "t1", all, 2, &o, &out, &lines, err, sizeof err), 0);
  assert_non_null(strstr(out.buf, "# TYPE temperature_last gauge\ntemperature_last{room=\"a\\\"b\"} 24.5\n"));
  assert_non_null(strstr(out.buf, "api_requests_total_last{endpoint=\"/api/v1/instruments\",service=\"gateway\"} 47\n"));
  assert_null(strstr(out.buf, "rt_seconds_last"));
  assert_int_equal(lines, 2);
  seed_selector_release(all, 2);
  seed_selector_release(&s, 1);
  arena_free(a);
  sb_free(&out);
}

/* The value of the sample line starting with `series` (name, labels, space), NaN if none. */
static double value_of(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, series, n) == 0) return strtod(p + n, NULL);
  return NAN;
}

/* The base of a counter's increase: its last sample before the window (within
 * baseline_ms). */
static void test_aggregated_base(void **state) {
  fixture_t *f = *state;
  int64_t ts[3] = {f->now - 330000, f->now - 200000, f->now - 100000};
  double c[3] = {100, 130, 160};
  put(f, "t1", ts, c, 3, "pre_total", NULL);
  int64_t one_ts[1] = {f->now - 10000};
  double seven[1] = {7}, hsum[1] = {4.2}, hcnt[1] = {100};
  put(f, "t1", one_ts, seven, 1, "trk_total", NULL);
  put(f, "t1", one_ts, hsum, 1, "trk_seconds_sum", NULL);
  put(f, "t1", one_ts, hcnt, 1, "trk_seconds_count", NULL);
  put(f, "t1", one_ts, seven, 1, "untracked_total", NULL);
  json_t *types = json_pack("{s:s,s:s}", "trk_total", "counter", "trk_seconds", "histogram");
  assert_non_null(types);

  seed_export_options_t o = {.now_ms = f->now, .window_ms = 300000, .aggs = 31,
                             .format = SEED_FMT_PROMETHEUS, .types = types};
  sb_t out = {0};
  size_t lines = 0;
  char err[256];
  /* without a base: the in-window samples only; single samples give no rate */
  assert_int_equal(seed_export_aggregated(f->db, "t1", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  assert_float_equal(value_of(out.buf, "pre_total_sum "), 30, 1e-9);
  assert_float_equal(value_of(out.buf, "pre_total_avg "), 30 / (100.0 / 60), 1e-9);
  assert_true(isnan(value_of(out.buf, "trk_total_avg ")));
  assert_true(isnan(value_of(out.buf, "trk_seconds_avg ")));

  /* with a base: pre_total counts from 100 at -330 s. Series with one sample and nothing
   * before the window still have no rate, tracked or not: storage alone decides (the
   * registry's knowledge of what it tracks does not survive a restart). */
  o.baseline_ms = 60000;
  sb_reset(&out);
  assert_int_equal(seed_export_aggregated(f->db, "t1", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  assert_float_equal(value_of(out.buf, "pre_total_sum "), 60, 1e-9);
  assert_float_equal(value_of(out.buf, "pre_total_avg "), 60 / (230.0 / 60), 1e-9);
  assert_float_equal(value_of(out.buf, "pre_total_count "), 2, 0); /* in-window samples */
  assert_float_equal(value_of(out.buf, "pre_total_min "), 130, 0);
  assert_true(isnan(value_of(out.buf, "trk_total_avg ")));
  assert_true(isnan(value_of(out.buf, "trk_seconds_avg ")));
  assert_true(isnan(value_of(out.buf, "untracked_total_avg ")));
  /* a reset between the base and the window: the new value is the increase since it */
  int64_t rts[2] = {f->now - 320000, f->now - 50000};
  double rv[2] = {500, 20};
  put(f, "t1", rts, rv, 2, "reset_total", NULL);
  sb_reset(&out);
  assert_int_equal(seed_export_aggregated(f->db, "t1", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  assert_float_equal(value_of(out.buf, "reset_total_sum "), 20, 1e-9);
  assert_float_equal(value_of(out.buf, "reset_total_avg "), 20 / (270.0 / 60), 1e-9);
  assert_float_equal(value_of(out.buf, "reset_total_count "), 1, 0);
  json_decref(types);
  sb_free(&out);
}

/* seed_json_num's fast shortest-digits formatting writes exactly what sb_double writes
 * (Prometheus's and Go's format), over values of every magnitude and digit count. */
static void test_number_format(void **state) {
  (void)state;
  uint64_t x = 88172645463325252ULL;
  sb_t a = {0}, b = {0};
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double v;
    switch (i % 4) {
    case 0: memcpy(&v, &x, sizeof v); break; /* any bit pattern */
    case 1: v = (double)(x % 100000) / 1000.0; break; /* few decimals */
    case 2: v = (double)(x >> 11) / 9007199254740992.0 * pow(10.0, (double)(int)(x % 40) - 20); break;
    default: v = 1.0 / (double)(x % 1000 + 1); break;
    }
    if (i % 1000 == 3) v = 4.9406564584124654e-324 * (double)(x % 100 + 1); /* subnormals */
    if (!isfinite(v)) continue;
    sb_reset(&a);
    sb_reset(&b);
    seed_json_num(&a, v);
    sb_double(&b, v);
    if (a.len != b.len || memcmp(a.buf, b.buf, a.len) != 0) {
      /* the integer fast path writes integers in full, sb_double may use %e above 1e21 */
      if (v == (double)(int64_t)v && fabs(v) < 1e15) continue;
      fprintf(stderr, "%.17g: %.*s vs %.*s\n", v, (int)a.len, a.buf, (int)b.len, b.buf);
      fail();
    }
  }
  sb_free(&a);
  sb_free(&b);
}

/* Cursors round-trip any key (label-set keys hold \x01/\x02 separators and UTF-8) and
 * reject what no encoder writes. */
static void test_cursor(void **state) {
  (void)state;
  const char *keys[] = {"", "a", "ab", "abc", "__name__\x01up\x02job\x01x\x02", "\xff\xfe\x00z"};
  const size_t lens[] = {0, 1, 2, 3, 18, 4};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    sb_t enc = {0}, dec = {0};
    seed_cursor_encode(&enc, keys[i], lens[i]);
    for (size_t k = 0; k < enc.len; k++) /* URL-safe: no escaping needed in a query */
      assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", enc.buf[k]));
    assert_int_equal(enc.len, (lens[i] * 4 + 2) / 3);
    assert_int_equal(seed_cursor_decode(enc.buf ? enc.buf : "", enc.len, &dec), 0);
    assert_int_equal(dec.len, lens[i]);
    if (lens[i]) assert_memory_equal(dec.buf, keys[i], lens[i]);
    sb_free(&enc);
    sb_free(&dec);
  }
  const char *bad[] = {"***", "ab=", "a", "abcde", "ab+/", "a\x00bc"};
  const size_t badlen[] = {3, 3, 1, 5, 4, 4};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    sb_t dec = {0};
    assert_int_equal(seed_cursor_decode(bad[i], badlen[i], &dec), -1);
    sb_free(&dec);
  }
}

static void test_latest(void **state) {
  fixture_t *f = *state;
  int64_t ts[3] = {f->now - 60000, f->now - 30000, f->now - 10000};
  double v[3] = {1, 2, 3};
  put(f, "t3", ts, v, 3, "jobs_total", "queue", "a", NULL);
  put(f, "t3", ts, v, 3, "lat_bucket", "le", "0.5", NULL);
  double inf[3] = {4, 5, 6};
  put(f, "t3", ts, inf, 3, "lat_bucket", "le", "+Inf", NULL);
  put(f, "t3", ts, inf, 3, "lat_count", NULL);
  put(f, "t3", ts, v, 3, "lat_sum", NULL);
  double gone[3] = {1, 2, tsdb_stale_nan()};
  put(f, "t3", ts, gone, 3, "gone_gauge", NULL);
  put(f, "t3", ts, v, 3, "tracked_elsewhere", NULL);

  json_t *skip = json_pack("{s:b}", "tracked_elsewhere", 1);
  seed_export_options_t o = {.now_ms = f->now, .window_ms = 300000, .format = SEED_FMT_PROMETHEUS,
                             .skip_names = skip};
  sb_t out = {0};
  size_t lines = 0;
  char err[256];
  assert_int_equal(seed_export_latest(f->db, "t3", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  const char *expect =
      "# HELP jobs_total jobs_total (latest stored sample within the last 300s)\n"
      "# TYPE jobs_total counter\n"
      "jobs_total{queue=\"a\"} 3\n"
      "\n"
      "# HELP lat lat (latest stored sample within the last 300s)\n"
      "# TYPE lat histogram\n"
      "lat_bucket{le=\"0.5\"} 3\n"
      "lat_bucket{le=\"+Inf\"} 6\n"
      "lat_sum 3\n"
      "lat_count 6\n";
  if (strcmp(out.buf, expect) != 0) fprintf(stderr, "got:\n%s\n", out.buf);
  assert_string_equal(out.buf, expect);
  assert_int_equal(lines, 5);

  /* OpenMetrics: the counter family drops _total */
  o.format = SEED_FMT_OPENMETRICS;
  sb_reset(&out);
  assert_int_equal(seed_export_latest(f->db, "t3", NULL, 0, &o, &out, &lines, err, sizeof err), 0);
  assert_non_null(strstr(out.buf, "# TYPE jobs counter\njobs_total{queue=\"a\"} 3\n"));
  assert_null(strstr(out.buf, "\n\n"));
  json_decref(skip);
  sb_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_selectors),
      cmocka_unit_test(test_filter_exposition),
      cmocka_unit_test(test_metric_type),
      cmocka_unit_test(test_cursor),
      cmocka_unit_test(test_number_format),
      cmocka_unit_test_setup_teardown(test_aggregated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_latest, setup, teardown),
      cmocka_unit_test_setup_teardown(test_aggregated_base, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
