/* Fuzz target for the block reader: arbitrary bytes as each file of a block directory.
 *
 * The first input byte picks what the rest becomes (docs/storage-format.md):
 *   0  meta.json                      1  index file            2  chunks file
 *   3  index payload: wrapped here in a valid header + CRC, with meta.json rebuilt from the
 *      payload's header fields, so mutations reach the index parser past the checksum
 *   4  raw bytes of the one frame of the chunks file (valid header + CRC), template index
 * Everything else comes from a small valid template block written on the first call. When
 * the block opens, every tenant is selected (with and without matchers) and every sample
 * decoded, and the compaction/downsampling read paths are walked; any crash, leak or
 * sanitizer report is a bug, MD_ECORRUPT is the expected answer to damage. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/block.h"
#include "tsdb/block_internal.h"

static char tmpl[256], work[300];
static uint8_t *tmpl_files[3];
static size_t tmpl_len[3];
static const char *fnames[3] = {"meta.json", "index", "chunks"};

typedef struct {
  int i;
} src_t;

static int src_next(void *ctx, const char **tenant, const tsdb_label_t **labels, size_t *nlabels, const int64_t **ts,
                    const double **v, size_t *n) {
  static const tsdb_label_t l0[] = {{"__name__", "up"}, {"job", "a"}};
  static const tsdb_label_t l1[] = {{"__name__", "up"}, {"job", "b"}};
  static const tsdb_label_t l2[] = {{"__name__", "x"}, {"path", "/"}};
  static int64_t t[40];
  static double val[40];
  src_t *s = ctx;
  if (s->i >= 3) return 0;
  for (int k = 0; k < 40; k++) {
    t[k] = 1000 + k * 15000 + s->i;
    val[k] = s->i == 2 ? (double)k * 0.25 : 100 + k;
  }
  val[3] = tsdb_stale_nan();
  *tenant = s->i == 2 ? "t2" : "";
  *labels = s->i == 0 ? l0 : s->i == 1 ? l1 : l2;
  *nlabels = 2;
  *ts = t;
  *v = val;
  *n = 40;
  s->i++;
  return 1;
}

static void put_file(const char *name, const void *a, size_t an, const void *b, size_t bn, const void *c, size_t cn) {
  char path[400];
  snprintf(path, sizeof path, "%s/%s", work, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) abort();
  if ((an && write(fd, a, an) != (ssize_t)an) || (bn && write(fd, b, bn) != (ssize_t)bn) ||
      (cn && write(fd, c, cn) != (ssize_t)cn))
    abort();
  close(fd);
}

static void setup(void) {
  snprintf(tmpl, sizeof tmpl, "/tmp/fuzz_tsdb_block.XXXXXX");
  if (!mkdtemp(tmpl)) abort();
  src_t s = {0};
  block_source_t src = {src_next, &s};
  char name[64], err[256];
  if (block_write(tmpl, 0, 10000000, 0, 0, &src, name, sizeof name, err, sizeof err)) abort();
  for (int i = 0; i < 3; i++) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s/%s", tmpl, name, fnames[i]);
    char *p;
    if (md_read_file(path, &p, &tmpl_len[i])) abort();
    tmpl_files[i] = (uint8_t *)p;
  }
  snprintf(work, sizeof work, "%s/work", tmpl);
  if (md_mkdir_p(work)) abort();
}

/* meta.json that agrees with a payload's header fields (when they parse). */
static void put_meta_for(const uint8_t *p, size_t n) {
  block_rd_t r = {p, p + n, 0};
  int64_t mint = block_rd_varint(&r), maxt = block_rd_varint(&r);
  uint64_t f[7];
  for (int i = 0; i < 7; i++) f[i] = block_rd_uvarint(&r); /* level res seq frames series chunks samples */
  uint64_t nsym = block_rd_uvarint(&r);
  for (uint64_t i = 0; i < nsym && !r.bad; i++) {
    uint64_t l = block_rd_uvarint(&r);
    if (l > (uint64_t)(r.end - r.p)) r.bad = 1;
    else r.p += l;
  }
  uint64_t nt = block_rd_uvarint(&r);
  char meta[512];
  int len = snprintf(meta, sizeof meta,
                     "{\"version\":1,\"mint\":%lld,\"maxt\":%lld,\"level\":%lld,\"resolution_ms\":%lld,\"seq\":%lld,"
                     "\"stats\":{\"tenants\":%lld,\"series\":%lld,\"samples\":%lld,\"chunks\":%lld,\"frames\":%lld}}",
                     (long long)mint, (long long)maxt, (long long)f[0], (long long)f[1], (long long)f[2], (long long)nt,
                     (long long)f[4], (long long)f[6], (long long)f[5], (long long)f[3]);
  put_file("meta.json", meta, (size_t)len, NULL, 0, NULL, 0);
}

static void count_cb(void *ctx, const char *s) {
  *(size_t *)ctx += strlen(s);
}

static void exercise(block_t *b) {
  static const char *tenants[] = {"", "t2", "none"};
  tsdb_matcher_t ms[][2] = {
      {{TSDB_MATCH_EQ, "__name__", "up"}, {TSDB_MATCH_NRE, "job", "b|c"}},
      {{TSDB_MATCH_RE, "path", ".*"}, {TSDB_MATCH_NEQ, "job", ""}},
  };
  size_t sink = 0;
  for (int t = 0; t < 3; t++) {
    for (int k = 0; k < 3; k++) {
      block_iter_t *it;
      if (block_select(b, tenants[t], k ? ms[k - 1] : NULL, k ? 2 : 0, k == 2 ? 20000 : INT64_MIN, INT64_MAX, &it, NULL,
                       0))
        continue;
      while (block_iter_next(it) == 1) {
        size_t nl;
        const tsdb_label_t *l = block_iter_labels(it, &nl);
        for (size_t i = 0; i < nl; i++) sink += strlen(l[i].name) + strlen(l[i].value);
        const int64_t *ts;
        const double *v;
        size_t n;
        for (int agg = 0; agg <= BLOCK_AGG_INCREASE; agg++)
          if (block_iter_samples(it, (block_agg_t)agg, &ts, &v, &n) == 0 && n) sink += (size_t)ts[n - 1];
      }
      block_iter_free(it);
    }
    block_label_names(b, tenants[t], count_cb, &sink);
    block_label_values(b, tenants[t], "job", count_cb, &sink);
  }
  block_tenants(b, count_cb, &sink);
  tsdb_label_t lab[BLOCK_MAX_LABELS];
  for (size_t t = 0; t < block_tenant_count(b); t++) {
    for (size_t s = 0; s < block_tenant_series(b, t); s++) {
      block_series_labels(b, t, s, lab);
      int64_t *ts;
      double *v[BLOCK_ROLLUP_PARTS] = {0};
      int n = block_series_read(b, t, s, &ts, v);
      if (n < 0) continue;
      free(ts);
      for (int p = 0; p < block_parts(b); p++) free(v[p]);
    }
  }
  (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!tmpl[0]) setup();
  if (size < 1) return 0;
  int mode = data[0] % 5;
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  for (int i = 0; i < 3; i++) put_file(fnames[i], tmpl_files[i], tmpl_len[i], NULL, 0, NULL, 0);
  if (mode <= 2) {
    put_file(fnames[mode], p, n, NULL, 0, NULL, 0);
  } else if (mode == 3) {
    uint8_t hdr[BLOCK_INDEX_HEADER] = {0};
    block_put_u32(hdr, BLOCK_INDEX_MAGIC);
    hdr[4] = BLOCK_FORMAT_VERSION;
    hdr[5] = BLOCK_CODEC_RAW;
    block_put_u64(hdr + 8, n);
    block_put_u64(hdr + 16, n);
    uint8_t tail[4];
    block_put_u32(tail, md_crc32c(md_crc32c(0, hdr, sizeof hdr), p, n));
    put_file("index", hdr, sizeof hdr, p, n, tail, sizeof tail);
    put_meta_for(p, n);
  } else {
    uint8_t hdr[BLOCK_CHUNKS_HEADER + BLOCK_FRAME_HEADER] = {0};
    block_put_u32(hdr, BLOCK_CHUNKS_MAGIC);
    hdr[4] = BLOCK_FORMAT_VERSION;
    uint8_t *f = hdr + BLOCK_CHUNKS_HEADER;
    f[0] = BLOCK_CODEC_RAW;
    block_put_u32(f + 1, (uint32_t)n);
    block_put_u32(f + 5, (uint32_t)n);
    block_put_u32(f + 9, md_crc32c(md_crc32c(0, f, 9), p, n));
    put_file("chunks", hdr, sizeof hdr, p, n, NULL, 0);
  }
  block_t *b;
  if (block_open(work, &b, NULL, 0) == 0) {
    exercise(b);
    block_unref(b);
  }
  return 0;
}
