/*
 * Prometheus remote_write 1.0 → batch: snappy block decompression, then protobuf-c decoding
 * of our own WriteRequest (proto/remote.proto) with an arena allocator, so decoding a request
 * costs a few large mallocs instead of one per sample, and freeing it is one call.
 *
 * A body that is not valid snappy or not a valid WriteRequest adds nothing (the sender must
 * not retry: HTTP 400). Within a valid request a bad series (labels) is skipped and reported
 * by its index; the rest is kept, as Prometheus's own receiver does.
 */
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/remote.pb-c.h"
#include "ingest_int.h"

/* Decompressed requests past this are refused before allocating: a 64 MiB WriteRequest is
 * far beyond what any sender batches (Prometheus sends ~2,000 samples per request). */
#define MAX_DECODED (256u << 20)

static void *pb_arena_alloc(void *data, size_t n) { return arena_alloc((arena_t *)data, n ? n : 1); }
static void pb_arena_free(void *data, void *p) {
  (void)data;
  (void)p;
}

int ingest_parse_remote_write_pb(const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                                 ingest_result_t *res) {
  ictx_t c;
  ictx_init(&c, o, b, res);
  arena_t *a = arena_new(n < 65536 ? 65536 : n > (2u << 20) ? (4u << 20) : n * 2);
  if (!a) return MD_ENOMEM;
  ProtobufCAllocator alloc = {pb_arena_alloc, pb_arena_free, a};
  Mdrw__WriteRequest *wr = mdrw__write_request__unpack(&alloc, n, p);
  int status;
  if (!wr) {
    ictx_error(&c, SIZE_MAX, "body is not a valid protobuf WriteRequest");
    status = MD_EINVAL;
    goto out;
  }
  c.res->metadata = wr->n_metadata;
  ilabel_t *L = malloc(sizeof(ilabel_t) * (INGEST_HARD_MAX_LABELS + 1));
  if (!L) {
    status = MD_ENOMEM;
    goto out;
  }
  char err[200];
  for (size_t i = 0; i < wr->n_timeseries && !c.limit_hit && !c.oom; i++) {
    const Mdrw__TimeSeries *ts = wr->timeseries[i];
    c.res->lines++;
    c.res->skipped += ts->n_exemplars + ts->n_histograms;
    if (ts->n_samples == 0) continue; /* e.g. a histogram-only series */
    const char *name = NULL;
    size_t nl = 1;
    bool bad = false;
    if (ts->n_labels > INGEST_HARD_MAX_LABELS) {
      ictx_error(&c, i, "series has %zu labels, more than the limit of %zu", ts->n_labels,
                 c.lim.max_labels_per_series);
      continue;
    }
    for (size_t k = 0; k < ts->n_labels; k++) {
      const Mdrw__Label *lb = ts->labels[k];
      size_t kl = strlen(lb->name), vl = strlen(lb->value);
      if (kl == 8 && memcmp(lb->name, "__name__", 8) == 0) {
        if (name) {
          ictx_error(&c, i, "duplicate label __name__");
          bad = true;
          break;
        }
        name = lb->value;
        L[0] = (ilabel_t){"__name__", 8, lb->value, vl};
      } else {
        L[nl++] = (ilabel_t){lb->name, kl, lb->value, vl};
      }
    }
    if (bad) continue;
    if (!name) {
      ictx_error(&c, i, "series has no __name__ label");
      continue;
    }
    if (ictx_series(&c, L, nl, err, sizeof err)) {
      if (!c.oom) ictx_error(&c, i, "%s", err);
      continue;
    }
    for (size_t k = 0; k < ts->n_samples; k++)
      if (ictx_sample(&c, ts->samples[k]->timestamp, ts->samples[k]->value)) break;
  }
  free(L);
  status = ictx_status(&c);
out:
  arena_free(a);
  return status;
}

int ingest_parse_remote_write(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                              ingest_result_t *res) {
  size_t outlen = 0;
  /* Snappy cannot expand more than ~22x (a 3-byte copy tag writes at most 64 bytes): a
   * length header claiming more is a lie, refused before allocating for it. */
  if (snappy_uncompressed_length(p, n, &outlen) != SNAPPY_OK || outlen > MAX_DECODED || outlen / 32 > n) {
    ingest_result_t tmp;
    ingest_result_t *r = res ? res : &tmp;
    memset(r, 0, sizeof *r);
    r->rejected = r->nerrors = 1;
    r->errors[0].where = SIZE_MAX;
    snprintf(r->errors[0].message, sizeof r->errors[0].message,
             outlen > MAX_DECODED ? "snappy-decoded body would exceed 256 MiB"
             : outlen / 32 > n && outlen ? "snappy length header is inconsistent with the body size"
                                  : "body is not snappy block-compressed data");
    return MD_EINVAL;
  }
  char *buf = malloc(outlen ? outlen : 1);
  if (!buf) return MD_ENOMEM;
  if (snappy_uncompress(p, n, buf, &outlen) != SNAPPY_OK) {
    free(buf);
    ingest_result_t tmp;
    ingest_result_t *r = res ? res : &tmp;
    memset(r, 0, sizeof *r);
    r->rejected = r->nerrors = 1;
    r->errors[0].where = SIZE_MAX;
    snprintf(r->errors[0].message, sizeof r->errors[0].message, "body is not valid snappy block-compressed data");
    return MD_EINVAL;
  }
  int rc = ingest_parse_remote_write_pb((const uint8_t *)buf, outlen, o, b, res);
  free(buf);
  return rc;
}
