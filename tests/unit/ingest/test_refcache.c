/* The push endpoints' series-ref cache (ingest_push): every body is pushed twice, into a
 * database without the cache and into one with it; both must answer the same counts and
 * hold exactly the same series and samples — across requests that hit the cache, tag sets
 * the cache knows with fields it does not, bad lines, tenants and label-changing options,
 * eviction, a clear, and refs gone stale because the database was reopened. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

typedef struct {
  char dir[2][64];
  tsdb_t *db[2]; /* 0: no cache, 1: through the cache */
  ingest_refcache_t *cache;
} fx_t;

static tsdb_t *open_db(const char *dir) {
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.retention_ms = 0;
  o.background = false;
  char err[256];
  tsdb_t *db = NULL;
  assert_int_equal(tsdb_open(dir, &o, &db, err, sizeof err), 0);
  return db;
}

static fx_t *fx_new(size_t cache_size) {
  fx_t *f = calloc(1, sizeof *f);
  for (int i = 0; i < 2; i++) {
    snprintf(f->dir[i], sizeof f->dir[i], "/tmp/refcache-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir[i]));
    f->db[i] = open_db(f->dir[i]);
  }
  f->cache = ingest_refcache_new(cache_size);
  assert_non_null(f->cache);
  return f;
}

static void fx_free(fx_t *f) {
  for (int i = 0; i < 2; i++) {
    tsdb_close(f->db[i]);
    md_rm_rf(f->dir[i]);
  }
  ingest_refcache_free(f->cache);
  free(f);
}

/* Pushes body into both databases and checks both report the same. Returns samples added. */
static size_t push2(fx_t *f, const char *protocol, ingest_parse_fn parse, const char *tenant, const char *body,
                    size_t n, const ingest_opts_t *o) {
  ingest_result_t res[2];
  tsdb_append_result_t ar[2];
  int prc[2], arc[2];
  for (int i = 0; i < 2; i++) {
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_push_t in = {f->db[i], tenant, i ? f->cache : NULL, protocol, parse, body, n, o, b};
    prc[i] = ingest_push(&in, &res[i], &ar[i], &arc[i]);
    tsdb_batch_free(b);
  }
  assert_int_equal(prc[0], prc[1]);
  assert_int_equal(arc[0], 0);
  assert_int_equal(arc[1], 0);
  assert_int_equal(res[0].lines, res[1].lines);
  assert_int_equal(res[0].samples, res[1].samples);
  assert_int_equal(res[0].series, res[1].series);
  assert_int_equal(res[0].rejected, res[1].rejected);
  assert_int_equal(res[0].nerrors, res[1].nerrors);
  for (size_t e = 0; e < res[0].nerrors && e < INGEST_MAX_REPORTED_ERRORS; e++) {
    assert_int_equal(res[0].errors[e].where, res[1].errors[e].where);
    assert_string_equal(res[0].errors[e].message, res[1].errors[e].message);
  }
  assert_int_equal(ar[0].samples_added, ar[1].samples_added);
  assert_int_equal(ar[0].samples_rejected, ar[1].samples_rejected);
  assert_int_equal(ar[0].samples_duplicate_ignored, ar[1].samples_duplicate_ignored);
  assert_int_equal(ar[0].series_rejected, ar[1].series_rejected);
  assert_int_equal(ar[1].series_stale_refs, 0);
  assert_int_equal(ar[0].nerrors, ar[1].nerrors);
  for (size_t e = 0; e < ar[0].nerrors && e < TSDB_MAX_REPORTED_ERRORS; e++) {
    assert_int_equal(ar[0].errors[e].reason, ar[1].errors[e].reason);
    assert_int_equal(ar[0].errors[e].series_index, ar[1].errors[e].series_index);
  }
  return ar[0].samples_added;
}

/* Everything tenant holds, as text. */
static char *dump_db(tsdb_t *db, const char *tenant) {
  tsdb_matcher_t m = {TSDB_MATCH_RE, "__name__", ".+"};
  tsdb_query_t *q = NULL;
  char err[256];
  assert_int_equal(tsdb_select(db, tenant, &m, 1, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
  sb_t out = {0};
  while (tsdb_query_next(q) == 1) {
    size_t nl;
    const tsdb_label_t *l = tsdb_query_labels(q, &nl);
    for (size_t i = 0; i < nl; i++)
      sb_printf(&out, "%s=\"%s\",", l[i].name, l[i].value);
    const int64_t *ts;
    const double *v;
    size_t ns = tsdb_query_samples(q, &ts, &v);
    for (size_t i = 0; i < ns; i++)
      sb_printf(&out, " %.17g@%lld", v[i], (long long)ts[i]);
    sb_putc(&out, '\n');
  }
  tsdb_query_free(q);
  return out.buf ? out.buf : strdup("");
}

static void same_data(fx_t *f, const char *tenant) {
  char *a = dump_db(f->db[0], tenant), *b = dump_db(f->db[1], tenant);
  assert_string_equal(a, b);
  free(a);
  free(b);
}

static ingest_refcache_stats_t stats(fx_t *f) {
  ingest_refcache_stats_t s;
  ingest_refcache_stats(f->cache, &s);
  return s;
}

/* ---- bodies --------------------------------------------------------------------------------- */

/* Line protocol: hosts × (cpu with 2 fields, mem with value) at ts, plus variations. */
static char *influx_body(int hosts, int64_t ts, bool extra_field, bool bad_line) {
  sb_t b = {0};
  for (int h = 0; h < hosts; h++) {
    sb_printf(&b, "cpu,host=h%d,dc=eu\\ west usage_user=%d.5,usage_system=%di%s %lld\n", h, h, h,
              extra_field ? ",usage_idle=7" : "", (long long)ts);
    sb_printf(&b, "mem,host=h%d value=%d %lld\n", h, h * 3, (long long)ts);
    if (bad_line && h == hosts / 2) sb_printf(&b, "cpu,host=h%d,dc=eu\\ west usage_user= %lld\n", h, (long long)ts);
  }
  /* a series repeated within the body */
  sb_printf(&b, "mem,host=h0 value=1 %lld\n", (long long)(ts + 1));
  return b.buf;
}

static char *prom_body(int hosts, int64_t ts, bool bad_line) {
  sb_t b = {0};
  sb_puts(&b, "# TYPE up gauge\n");
  for (int h = 0; h < hosts; h++) {
    sb_printf(&b, "up{host=\"h%d\",path=\"C:\\\\x\"} %d %lld\n", h, h % 2, (long long)ts);
    sb_printf(&b, "req_total{host=\"h%d\",code=\"200\"} %d %lld\n", h, h * 10, (long long)ts);
    if (bad_line && h == 1) sb_printf(&b, "req_total{host=\"h%d\",code=} 1 %lld\n", h, (long long)ts);
  }
  return b.buf;
}

/* remote_write WriteRequest (uncompressed protobuf) */
static void pb_varint(sb_t *b, uint64_t v) {
  while (v >= 0x80) {
    sb_putc(b, (char)(v | 0x80));
    v >>= 7;
  }
  sb_putc(b, (char)v);
}
static void pb_bytes(sb_t *b, int field, const char *s, size_t n) {
  pb_varint(b, (uint64_t)field << 3 | 2);
  pb_varint(b, n);
  sb_append(b, s, n);
}
static void pb_label(sb_t *ts, const char *name, const char *value) {
  sb_t l = {0};
  pb_bytes(&l, 1, name, strlen(name));
  pb_bytes(&l, 2, value, strlen(value));
  pb_bytes(ts, 1, l.buf, l.len);
  sb_free(&l);
}
static void pb_sample(sb_t *ts, double v, int64_t t) {
  sb_t s = {0};
  sb_putc(&s, 0x09);
  sb_append(&s, (const char *)&v, 8);
  sb_putc(&s, 0x10);
  pb_varint(&s, (uint64_t)t);
  pb_bytes(ts, 2, s.buf, s.len);
  sb_free(&s);
}
static char *rw_body(int hosts, int64_t ts, bool bad_series, size_t *n) {
  sb_t w = {0};
  for (int h = 0; h < hosts; h++) {
    char host[16];
    snprintf(host, sizeof host, "h%d", h);
    sb_t s = {0};
    pb_label(&s, "__name__", "node_load1");
    pb_label(&s, "host", host);
    pb_sample(&s, h * 0.25, ts);
    pb_sample(&s, h * 0.5, ts + 15000);
    pb_bytes(&w, 1, s.buf, s.len);
    sb_free(&s);
    if (bad_series && h == 2) {
      sb_t x = {0};
      pb_label(&x, "__name__", "bad name");
      pb_sample(&x, 1, ts);
      pb_bytes(&w, 1, x.buf, x.len);
      sb_free(&x);
    }
  }
  *n = w.len;
  return w.buf;
}
static int parse_rw_pb(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  return ingest_parse_remote_write_pb((const uint8_t *)p, n, o, b, res);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_influx(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  ingest_opts_t o = {.default_ts = 1, .precision = INGEST_PREC_MS};
  for (int r = 0; r < 4; r++) {
    char *body = influx_body(20, 1000000 + r * 15000, r == 2, r >= 1);
    assert_true(push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o) > 0);
    free(body);
  }
  ingest_refcache_stats_t s = stats(f);
  assert_true(s.hits >= 3 * 60); /* rounds 1-3 know every series of round 0 */
  assert_true(s.misses >= 60 + 20); /* round 0, and round 2's new field */
  assert_int_equal(s.stale, 0);
  same_data(f, "t1");
  fx_free(f);
}

static void test_prom(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  ingest_opts_t o = {.default_ts = 1};
  for (int r = 0; r < 3; r++) {
    char *body = prom_body(10, 1000000 + r * 15000, r == 1);
    push2(f, "prometheus", ingest_parse_prometheus, "t1", body, strlen(body), &o);
    free(body);
  }
  assert_true(stats(f).hits >= 2 * 20);
  same_data(f, "t1");
  fx_free(f);
}

static void test_remote_write(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  ingest_opts_t o = {.default_ts = 1};
  for (int r = 0; r < 3; r++) {
    size_t n;
    char *body = rw_body(8, 1000000 + r * 30000, r > 0, &n);
    push2(f, "remote_write", parse_rw_pb, "t1", body, n, &o);
    free(body);
  }
  assert_true(stats(f).hits >= 2 * 8);
  same_data(f, "t1");
  fx_free(f);
}

/* Reopening the database makes every cached ref stale: the push resends those series with
 * their labels, and nothing is lost or counted as rejected. */
static void test_stale_refs(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  ingest_opts_t o = {.default_ts = 1, .precision = INGEST_PREC_MS};
  char *body = influx_body(30, 2000000, false, false);
  push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o);
  free(body);
  size_t nprom = 0;
  char *pb = prom_body(5, 2000000, false);
  push2(f, "prometheus", ingest_parse_prometheus, "t1", pb, strlen(pb), &o);
  free(pb);
  tsdb_close(f->db[1]);
  f->db[1] = open_db(f->dir[1]);
  /* New series, a new field of known tag sets, a bad line and stale refs in one body. */
  body = influx_body(40, 2015000, true, true);
  size_t added = push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o);
  free(body);
  assert_true(added > 0);
  ingest_refcache_stats_t s = stats(f);
  assert_true(s.stale >= 90); /* 30 hosts × 3 series of the first body */
  pb = prom_body(6, 2015000, true);
  nprom = push2(f, "prometheus", ingest_parse_prometheus, "t1", pb, strlen(pb), &o);
  free(pb);
  assert_true(nprom > 0);
  /* The resent series were learned again: the next body hits. */
  uint64_t hits = stats(f).hits;
  body = influx_body(40, 2030000, true, false);
  push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o);
  free(body);
  assert_true(stats(f).hits >= hits + 40 * 4);
  same_data(f, "t1");
  fx_free(f);
}

/* The same text under another tenant, db or extra label is another series. */
static void test_partitions(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  tsdb_label_t extra[1] = {{"env", "prod"}};
  ingest_opts_t o[4] = {{.default_ts = 1, .precision = INGEST_PREC_MS},
                        {.default_ts = 1, .precision = INGEST_PREC_MS, .influx_db = "telegraf"},
                        {.default_ts = 1, .precision = INGEST_PREC_MS, .extra_labels = extra, .n_extra_labels = 1},
                        {.default_ts = 1, .precision = INGEST_PREC_MS, .influx_db = "x"}};
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 4; i++)
      for (int t = 0; t < 2; t++) {
        char *body = influx_body(5, 3000000 + r * 15000 + i, false, false);
        push2(f, "influx", ingest_parse_influx, t ? "t2" : "t1", body, strlen(body), &o[i]);
        free(body);
      }
  same_data(f, "t1");
  same_data(f, "t2");
  fx_free(f);
}

/* A cache far smaller than the series: generations turn over, data stays right. */
static void test_eviction_and_clear(void **state) {
  (void)state;
  fx_t *f = fx_new(16);
  ingest_opts_t o = {.default_ts = 1, .precision = INGEST_PREC_MS};
  for (int r = 0; r < 3; r++) {
    char *body = influx_body(1000, 4000000 + r * 15000, false, false);
    push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o);
    free(body);
  }
  ingest_refcache_stats_t s = stats(f);
  assert_true(s.entries <= 2 * 16 * 64);
  assert_true(s.entries > 0);
  same_data(f, "t1");
  ingest_refcache_clear(f->cache);
  assert_int_equal(stats(f).entries, 0);
  uint64_t hits = stats(f).hits;
  char *body = influx_body(10, 4100000, false, false);
  push2(f, "influx", ingest_parse_influx, "t1", body, strlen(body), &o);
  free(body);
  assert_int_equal(stats(f).hits, hits);
  same_data(f, "t1");
  fx_free(f);
}

/* Threads share the cache (its shards, and each its own first level): four threads push the
 * same series at distinct timestamps, concurrently, through the cache; the database then
 * holds exactly what one thread pushing everything without the cache stores. */
typedef struct {
  fx_t *f;
  int k;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  ingest_opts_t o = {.default_ts = 1, .precision = INGEST_PREC_MS};
  for (int r = 0; r < 6; r++) {
    char *body = influx_body(50, 5000000 + r * 15000 + 2 * w->k, r == 3, false);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_push_t in = {w->f->db[1], "t1", w->f->cache, "influx", ingest_parse_influx, body, strlen(body), &o, b};
    ingest_result_t res;
    tsdb_append_result_t ar;
    int arc;
    if (ingest_push(&in, &res, &ar, &arc) || arc || ar.samples_added != res.samples) abort();
    tsdb_batch_free(b);
    free(body);
  }
  return NULL;
}

static void test_concurrent(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  ingest_opts_t o = {.default_ts = 1, .precision = INGEST_PREC_MS};
  for (int r = 0; r < 6; r++)
    for (int k = 0; k < 4; k++) {
      char *body = influx_body(50, 5000000 + r * 15000 + 2 * k, r == 3, false);
      tsdb_batch_t *b = tsdb_batch_new();
      ingest_push_t in = {f->db[0], "t1", NULL, "influx", ingest_parse_influx, body, strlen(body), &o, b};
      ingest_result_t res;
      tsdb_append_result_t ar;
      int arc;
      assert_int_equal(ingest_push(&in, &res, &ar, &arc), 0);
      tsdb_batch_free(b);
      free(body);
    }
  pthread_t th[4];
  worker_t w[4];
  for (int k = 0; k < 4; k++) {
    w[k] = (worker_t){f, k};
    assert_int_equal(pthread_create(&th[k], NULL, worker, &w[k]), 0);
  }
  for (int k = 0; k < 4; k++)
    pthread_join(th[k], NULL);
  assert_true(stats(f).hits > 0);
  same_data(f, "t1");
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_influx),          cmocka_unit_test(test_prom),
      cmocka_unit_test(test_remote_write),    cmocka_unit_test(test_stale_refs),
      cmocka_unit_test(test_partitions),      cmocka_unit_test(test_eviction_and_clear),
      cmocka_unit_test(test_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
