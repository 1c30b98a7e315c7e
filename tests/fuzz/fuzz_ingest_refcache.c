/* libFuzzer target: pushes through the series-ref cache (ingest_push) against pushes without
 * it. The input picks a protocol (first byte) and holds two bodies (split at the first 0xff
 * byte for text protocols, at a fixed point for remote_write); each body goes into database
 * A without the cache and into database B with it, twice, and both must report the same
 * counts. Every 64 inputs B is reopened, so its cached refs go stale and are resent. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

static tsdb_t *db[2];
static char dir[2][64];
static ingest_refcache_t *cache;
static unsigned runs;

static tsdb_t *open_db(const char *d) {
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.retention_ms = 0;
  o.background = false;
  char err[256];
  tsdb_t *t = NULL;
  if (tsdb_open(d, &o, &t, err, sizeof err)) abort();
  return t;
}

static void cleanup(void) {
  for (int i = 0; i < 2; i++) {
    tsdb_close(db[i]);
    md_rm_rf(dir[i]);
  }
  ingest_refcache_free(cache);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (int i = 0; i < 2; i++) {
    snprintf(dir[i], sizeof dir[i], "/tmp/fuzz-refcache-XXXXXX");
    if (!mkdtemp(dir[i])) abort();
    db[i] = open_db(dir[i]);
  }
  cache = ingest_refcache_new(256); /* small: generations turn over too */
  if (!cache) abort();
  atexit(cleanup);
  return 0;
}

static int parse_rw_pb(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  return ingest_parse_remote_write_pb((const uint8_t *)p, n, o, b, res);
}

static void push(const char *proto, ingest_parse_fn parse, const char *body, size_t n, const ingest_opts_t *o) {
  tsdb_append_result_t ar[2];
  ingest_result_t res[2];
  int prc[2], arc[2];
  for (int i = 0; i < 2; i++) {
    tsdb_batch_t *b = tsdb_batch_new();
    if (!b) abort();
    ingest_push_t in = {db[i], "t", i ? cache : NULL, proto, parse, body, n, o, b};
    prc[i] = ingest_push(&in, &res[i], &ar[i], &arc[i]);
    tsdb_batch_free(b);
  }
  if (prc[0] != prc[1] || arc[0] != arc[1] || res[0].rejected != res[1].rejected ||
      res[0].samples != res[1].samples || ar[0].samples_added != ar[1].samples_added ||
      ar[0].samples_rejected != ar[1].samples_rejected || ar[0].series_rejected != ar[1].series_rejected ||
      ar[1].series_stale_refs != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  if (++runs % 64 == 0) {
    tsdb_close(db[1]);
    db[1] = open_db(dir[1]);
  }
  int proto = data[0] % 3;
  const char *p = (const char *)data + 1;
  size_t n = size - 1, cut;
  const uint8_t *ff = memchr(p, 0xff, n);
  cut = proto == 2 ? n / 2 : ff ? (size_t)((const char *)ff - p) : n;
  const char *b2 = p + cut + (proto != 2 && cut < n ? 1 : 0);
  size_t n2 = (size_t)(p + n - b2);
  tsdb_label_t extra = {"env", "x"};
  ingest_opts_t o = {.default_ts = 1000, .precision = INGEST_PREC_MS, .influx_db = data[0] & 8 ? "db" : NULL,
                     .extra_labels = &extra, .n_extra_labels = data[0] & 16 ? 1 : 0};
  static const char *const names[] = {"influx", "prometheus", "remote_write"};
  ingest_parse_fn fns[] = {ingest_parse_influx, ingest_parse_prometheus, parse_rw_pb};
  push(names[proto], fns[proto], p, cut, &o);
  push(names[proto], fns[proto], b2, n2, &o);
  push(names[proto], fns[proto], p, cut, &o);
  return 0;
}
