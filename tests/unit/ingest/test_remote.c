/* remote_write 1.0 decoder: requests built with the generated protobuf-c code and snappy,
 * partial rejection by series index, and a table of bad bodies (snappy, protobuf, labels). */
#include <setjmp.h>
#include <snappy-c.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "ingest/remote.pb-c.h"

/* Snappy-compresses raw bytes; caller frees. */
static char *snap(const void *p, size_t n, size_t *outn) {
  size_t cap = snappy_max_compressed_length(n);
  char *out = malloc(cap);
  assert_non_null(out);
  assert_int_equal(snappy_compress(p, n, out, &cap), SNAPPY_OK);
  *outn = cap;
  return out;
}

/* Builds a request: series given as "name=value,name=value" label lists, each with the
 * samples (v, ts) = (i+1, 1000*(i+1)) for i < nsamples. */
static char *build(const char *const *series, size_t nseries, size_t nsamples, size_t *outn) {
  Mdrw__WriteRequest wr = MDRW__WRITE_REQUEST__INIT;
  Mdrw__TimeSeries **ts = calloc(nseries, sizeof *ts);
  wr.n_timeseries = nseries;
  wr.timeseries = ts;
  char **dups = calloc(nseries, sizeof *dups);
  for (size_t i = 0; i < nseries; i++) {
    ts[i] = calloc(1, sizeof **ts);
    mdrw__time_series__init(ts[i]);
    dups[i] = strdup(series[i]);
    size_t cap = 1;
    for (const char *c = series[i]; *c; c++)
      cap += *c == ',';
    ts[i]->labels = calloc(cap, sizeof(Mdrw__Label *));
    char *save = NULL;
    for (char *tok = strtok_r(dups[i], ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      Mdrw__Label *l = calloc(1, sizeof *l);
      mdrw__label__init(l);
      char *eq = strchr(tok, '=');
      *eq = 0;
      l->name = tok;
      l->value = eq + 1;
      ts[i]->labels[ts[i]->n_labels++] = l;
    }
    ts[i]->samples = calloc(nsamples + 1, sizeof(Mdrw__Sample *));
    for (size_t k = 0; k < nsamples; k++) {
      Mdrw__Sample *s = calloc(1, sizeof *s);
      mdrw__sample__init(s);
      s->value = (double)(k + 1);
      s->timestamp = (int64_t)(1000 * (k + 1));
      ts[i]->samples[ts[i]->n_samples++] = s;
    }
  }
  size_t len = mdrw__write_request__get_packed_size(&wr);
  uint8_t *raw = malloc(len + 1);
  mdrw__write_request__pack(&wr, raw);
  char *out = snap(raw, len, outn);
  free(raw);
  for (size_t i = 0; i < nseries; i++) {
    for (size_t k = 0; k < ts[i]->n_labels; k++)
      free(ts[i]->labels[k]);
    for (size_t k = 0; k < ts[i]->n_samples; k++)
      free(ts[i]->samples[k]);
    free(ts[i]->labels);
    free(ts[i]->samples);
    free(ts[i]);
    free(dups[i]);
  }
  free(dups);
  free(ts);
  return out;
}

static void test_valid(void **state) {
  (void)state;
  const char *series[] = {"__name__=up,job=node,instance=a:9100", "instance=b,__name__=load1"};
  size_t n;
  char *body = build(series, 2, 3, &n);
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  ingest_opts_t o = {0};
  assert_int_equal(ingest_parse_remote_write(body, n, &o, b, &res), 0);
  char *d = dump_batch(b);
  assert_string_equal(
      d, "up{instance=\"a:9100\",job=\"node\"} 1 @1000\n"
         "up{instance=\"a:9100\",job=\"node\"} 2 @2000\n"
         "up{instance=\"a:9100\",job=\"node\"} 3 @3000\n"
         "load1{instance=\"b\"} 1 @1000\nload1{instance=\"b\"} 2 @2000\nload1{instance=\"b\"} 3 @3000\n");
  assert_int_equal(res.samples, 6);
  assert_int_equal(res.series, 2);
  free(d);
  free(body);
  tsdb_batch_free(b);
}

/* TimeSeries repeating a label set (same Label bytes) share one batch series, samples in
 * request order; a bad repeated series is reported by each index; labels written after the
 * samples group too. */
static void test_grouping(void **state) {
  (void)state;
  const char *series[] = {"__name__=up,job=a", "__name__=up,job=b",       "__name__=up,job=a",
                          "__name__=up,job=b", "__name__=bad-name,job=a", "__name__=bad-name,job=a"};
  size_t n;
  char *body = build(series, 6, 1, &n);
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  ingest_opts_t o = {0};
  assert_int_equal(ingest_parse_remote_write(body, n, &o, b, &res), MD_EINVAL);
  char *d = dump_batch(b);
  assert_string_equal(
      d, "up{job=\"a\"} 1 @1000\nup{job=\"a\"} 1 @1000\nup{job=\"b\"} 1 @1000\nup{job=\"b\"} 1 @1000\n");
  assert_int_equal(res.samples, 4);
  assert_int_equal(res.series, 2);
  assert_int_equal(res.nerrors, 2);
  assert_int_equal(res.errors[0].where, 4);
  assert_int_equal(res.errors[1].where, 5);
  free(d);
  free(body);
  /* Hand-encoded: TimeSeries{Sample{v=2,ts=5}, Label{__name__=m}} twice, then with the label
   * first: the key copied from after the sample equals the leading label span, one series. */
  static const uint8_t late[] = {0x12, 0x0b, 0x09, 0,   0,   0,   0,   0,   0,   0,   0x40, 0x10, 0x05, 0x0a,
                                 0x0d, 0x0a, 0x08, '_', '_', 'n', 'a', 'm', 'e', '_', '_',  0x12, 0x01, 'm'};
  uint8_t req[3 * (2 + sizeof late)];
  size_t k = 0;
  for (int r = 0; r < 3; r++) {
    req[k++] = 0x0a;
    req[k++] = (uint8_t)sizeof late;
    if (r < 2) {
      memcpy(req + k, late, sizeof late);
    } else { /* label first */
      memcpy(req + k, late + 13, sizeof late - 13);
      memcpy(req + k + sizeof late - 13, late, 13);
    }
    k += sizeof late;
  }
  tsdb_batch_reset(b);
  assert_int_equal(ingest_parse_remote_write_pb(req, k, &o, b, &res), 0);
  d = dump_batch(b);
  assert_string_equal(d, "m{} 2 @5\nm{} 2 @5\nm{} 2 @5\n");
  assert_int_equal(tsdb_batch_series_count(b), 1);
  free(d);
  tsdb_batch_free(b);
}

static void test_empty_and_partial(void **state) {
  (void)state;
  size_t n;
  char *body = build(NULL, 0, 0, &n);
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  assert_int_equal(ingest_parse_remote_write(body, n, NULL, b, &res), 0);
  assert_int_equal(tsdb_batch_sample_count(b), 0);
  free(body);
  const char *series[] = {"__name__=ok", "__name__=bad-name", "__name__=ok2,a=1"};
  body = build(series, 3, 1, &n);
  assert_int_equal(ingest_parse_remote_write(body, n, NULL, b, &res), MD_EINVAL);
  assert_int_equal(res.samples, 2);
  assert_int_equal(res.nerrors, 1);
  assert_int_equal(res.errors[0].where, 1);
  sb_t m = {0};
  ingest_result_message(&res, "timeseries", &m);
  assert_string_equal(m.buf, "timeseries 1: invalid metric name \"bad-name\"");
  sb_free(&m);
  free(body);
  tsdb_batch_free(b);
}

static void test_sample_limit(void **state) {
  (void)state;
  const char *series[] = {"__name__=a", "__name__=b"};
  size_t n;
  char *body = build(series, 2, 10, &n);
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_samples_per_request = 15;
  ingest_opts_t o = {.limits = &lim};
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_result_t res;
  assert_int_equal(ingest_parse_remote_write(body, n, &o, b, &res), MD_ELIMIT);
  free(body);
  tsdb_batch_free(b);
}

/* Raw protobuf bodies that are not a WriteRequest (each is snappy-wrapped in the test). */
static const bad_case_t bad_pb[] = {
    {"\x0a", 1, "not a valid protobuf"},
    {"\x0a\x05"
     "ab",
     4, "not a valid protobuf"},
    {"\x0b", 1, "not a valid protobuf"},
    {"\x0a\x02\x0a\x05", 4, "not a valid protobuf"},
    {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, "not a valid protobuf"},
    {"\x0a\x03\x12\x01\x09", 5, "not a valid protobuf"},
    {"\x0a\x04\x12\x02\x09\x00", 6, "not a valid protobuf"},
    {"\x0a\x04\x0a\x02\x0a\x05", 6, "not a valid protobuf"},
    {"\x0a\xff\xff\xff\xff\x0f", 6, "not a valid protobuf"},
    {"\x1a\x03\x08", 3, "not a valid protobuf"},
    {"\x0a\x01\x0c", 3, "not a valid protobuf"},
    {"\x0f", 1, "not a valid protobuf"},
    /* dup __name__, then a malformed label: the whole request is malformed */
    {"\x0a\x2f\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x61\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x62\x0a\x02\x0a\x05\x12\x0b\x09\x00\x00\x00\x00\x00\x00\xf0\x3f\x10\x01", 49, "not a valid protobuf"},
    /* the same, no samples: the whole request is malformed */
    {"\x0a\x22\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x61\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x62\x0a\x02\x0a\x05", 36, "not a valid protobuf"},
    /* a repeated series with a malformed sample: the whole request is malformed */
    {"\x0a\x26\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x6d\x0a\x08\x0a\x03\x6a\x6f\x62\x12\x01\x78\x12\x0b\x09\x00\x00\x00\x00\x00\x00\xf0\x3f\x10\x01\x0a\x1c\x0a\x0d\x0a\x08\x5f\x5f\x6e\x61\x6d\x65\x5f\x5f\x12\x01\x6d\x0a\x08\x0a\x03\x6a\x6f\x62\x12\x01\x78\x12\x01\x09", 70, "not a valid protobuf"},
};

/* Label sets that must be refused one series at a time. */
static const bad_case_t bad_labels[] = {
    {"job=x", 0, "no __name__"},
    {"__name__=1abc", 0, "invalid metric name"},
    {"__name__=a b", 0, "invalid metric name"},
    {"__name__=", 0, "invalid metric name"},
    {"__name__=ok,bad-label=1", 0, "invalid label name"},
    {"__name__=ok,1x=1", 0, "invalid label name"},
    {"__name__=ok,a.b=1", 0, "invalid label name"},
    {"__name__=ok,a=1,a=2", 0, "duplicate label name \"a\""},
    {"__name__=ok,b=1,a=1,c=1,b=2", 0, "duplicate label name \"b\""},
    {"__name__=ok,a=1,ab=1,b=1,ab=2", 0, "duplicate label name \"ab\""},
    {"__name__=ok,__name__=again", 0, "duplicate label __name__"},
    {"__name__=ok,a=\xc3\x28", 0, "not valid UTF-8"},
    {"__name__=ok,a=\xed\xa0\x80", 0, "not valid UTF-8"},
    {"__name__=ok,a=\xf8\x88\x80\x80\x80", 0, "not valid UTF-8"},
    {"__name__=ok,a=\xe0\x80\xaf", 0, "not valid UTF-8"},
    {"__name__=ok,a:b=1", 0, "invalid label name"},
    {"__name__=ok,=1", 0, "invalid label name"},
    {"__name__=na\xc3\xafve", 0, "invalid metric name"},
};

static void test_bad_inputs(void **state) {
  (void)state;
  size_t total = 0;
  /* Not snappy at all. */
  const bad_case_t bad_snappy[] = {
      {"", 0, "snappy"},
      {"\xff\xff\xff\xff\xff", 5, "snappy"},
      {"\x05"
       "ab",
       3, "snappy"},
      {"hello world", 0, "snappy"},
      {"\x80\x80\x80\x80\x80\x80", 6, "snappy"},
      {"\xff\xff\xff\xff\x0f\x00", 6, "256 MiB"},
      {"\x80\x80\x04"
       "ab",
       5, "inconsistent"},
  };
  for (size_t i = 0; i < sizeof bad_snappy / sizeof bad_snappy[0]; i++, total++) {
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_remote_write(bad_snappy[i].input, bad_snappy[i].len, NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad_snappy[i].want)) {
      print_error("snappy case %zu: rc %d msg %s\n", i, rc, res.nerrors ? res.errors[0].message : "");
      fail();
    }
    tsdb_batch_free(b);
  }
  for (size_t i = 0; i < sizeof bad_pb / sizeof bad_pb[0]; i++, total++) {
    size_t n;
    char *body = snap(bad_pb[i].input, bad_pb[i].len, &n);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_remote_write(body, n, NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad_pb[i].want) ||
        tsdb_batch_sample_count(b)) {
      print_error("protobuf case %zu: rc %d msg %s\n", i, rc, res.nerrors ? res.errors[0].message : "");
      fail();
    }
    free(body);
    tsdb_batch_free(b);
  }
  for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++, total++) {
    size_t n;
    const char *series[] = {bad_labels[i].input};
    char *body = build(series, 1, 2, &n);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    int rc = ingest_parse_remote_write(body, n, NULL, b, &res);
    if (rc != MD_EINVAL || res.nerrors != 1 || !strstr(res.errors[0].message, bad_labels[i].want) ||
        res.errors[0].where != 0 || tsdb_batch_sample_count(b)) {
      print_error("labels case %zu \"%s\": rc %d msg %s\n", i, bad_labels[i].input, rc,
                  res.nerrors ? res.errors[0].message : "");
      fail();
    }
    free(body);
    tsdb_batch_free(b);
  }
  /* Limits: value length and labels per series. */
  ingest_limits_t lim;
  ingest_limits_default(&lim);
  lim.max_label_value_len = 3;
  lim.max_labels_per_series = 2;
  ingest_opts_t o = {.limits = &lim};
  const char *lim_cases[][2] = {{"__name__=a,x=1234", "more than the limit of 3"},
                                {"__name__=a,x=1,y=2", "more than the limit of 2"}};
  for (size_t i = 0; i < 2; i++, total++) {
    size_t n;
    const char *series[] = {lim_cases[i][0]};
    char *body = build(series, 1, 1, &n);
    tsdb_batch_t *b = tsdb_batch_new();
    ingest_result_t res;
    assert_int_equal(ingest_parse_remote_write(body, n, &o, b, &res), MD_EINVAL);
    assert_non_null(strstr(res.errors[0].message, lim_cases[i][1]));
    free(body);
    tsdb_batch_free(b);
  }
  assert_true(total >= 30);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),        cmocka_unit_test(test_empty_and_partial),
      cmocka_unit_test(test_sample_limit), cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_grouping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
