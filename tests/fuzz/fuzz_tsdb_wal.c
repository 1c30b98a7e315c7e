/*
 * fuzz_tsdb_wal — WAL replay (tsdb_open) on arbitrary bytes.
 *
 * First input byte picks the mode:
 *   even: the rest is written verbatim as a WAL segment (after the segment magic when bit 1
 *         is clear): exercises framing, CRC checks and torn-tail cutting;
 *   odd:  the rest is split into records [type u8][len u8][payload] that the harness frames
 *         with valid CRCs (format in docs/storage-wal.md), so the series / samples / chunk
 *         record decoders see arbitrary payloads.
 * Bit 2 writes the result as a checkpoint file instead of a segment.
 * The database must open (or fail cleanly), answer a select, and close without leaks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

static char *g_dir;

static void put32(sb_t *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  sb_append(b, x, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_dir) {
    log_set_level(LOG_ERROR);
    char tmpl[] = "/tmp/fuzz-tsdb-wal-XXXXXX";
    char *d = mkdtemp(tmpl);
    if (!d) return 0;
    g_dir = strdup(d);
  }
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  md_rm_rf(g_dir);
  char wal[4096];
  snprintf(wal, sizeof wal, "%s/wal", g_dir);
  if (md_mkdir_p(wal)) return 0;
  sb_t file = {0};
  bool ckpt = mode & 4;
  if (!ckpt && !(mode & 2)) sb_append(&file, "MDWAL\x00\x01\n", 8);
  if (!(mode & 1)) {
    sb_append(&file, data, size);
  } else {
    size_t off = 0;
    while (off + 2 <= size) {
      uint8_t type = data[off];
      size_t len = data[off + 1];
      off += 2;
      if (len > size - off) len = size - off;
      uint8_t t = (uint8_t)(1 + type % 3);
      put32(&file, (uint32_t)(len + 1));
      uint32_t crc = md_crc32c(0, &t, 1);
      crc = md_crc32c(crc, data + off, len);
      put32(&file, crc);
      sb_append(&file, &t, 1);
      sb_append(&file, data + off, len);
      off += len;
    }
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", wal, ckpt ? "checkpoint.00000001" : "00000001");
  FILE *f = fopen(path, "wb");
  if (f) {
    if (file.len) fwrite(file.buf, 1, file.len, f);
    fclose(f);
  }
  sb_free(&file);
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  tsdb_t *db;
  char err[256];
  if (tsdb_open(g_dir, &o, &db, err, sizeof err) == 0) {
    tsdb_strings_t ts;
    if (tsdb_tenants(db, &ts) == 0) {
      for (size_t i = 0; i < ts.n; i++) {
        tsdb_query_t *q;
        if (tsdb_select(db, ts.items[i], NULL, 0, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err) == 0) {
          while (tsdb_query_next(q) == 1) {
            const int64_t *t;
            const double *v;
            tsdb_query_samples(q, &t, &v);
          }
          tsdb_query_free(q);
        }
      }
      tsdb_strings_free(&ts);
    }
    tsdb_close(db);
  }
  return 0;
}
