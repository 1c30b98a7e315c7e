/*
 * wal — the write-ahead log (private to src/tsdb). Format and durability rules are in
 * docs/storage-wal.md.
 *
 * Files in <dir>: segments "00000001", "00000002", ... (each starts with an 8-byte magic),
 * and at most one "checkpoint.NNNNNNNN" that stands for every segment numbered below N.
 * A record is: u32 length (of type + payload), u32 CRC32C (of type + payload), u8 type,
 * payload. Records never span segments.
 *
 * Group commit: appenders wal_enqueue() framed records into a shared buffer and get an
 * LSN; wal_wait(lsn) returns once the bytes are written (and fsynced under fsync=always).
 * Whoever waits while no write is in flight becomes the writer for everything pending, so
 * one write(2) (and one fsync) serves all concurrent appenders. Under fsync=interval a
 * small thread fsyncs the open segment every interval.
 *
 * Threading: all functions are thread-safe except wal_replay/wal_parse (open time, one
 * thread) and wal_close.
 */
#ifndef METRICSD_TSDB_WAL_H
#define METRICSD_TSDB_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "core/core.h"
#include "tsdb.h"

enum {
  WAL_REC_SERIES = 1,  /* ref, tenant, labels */
  WAL_REC_SAMPLES = 2, /* groups of (ref, samples) */
  WAL_REC_CHUNK = 3,   /* checkpoint only: ref, one encoded chunk */
};

#define WAL_MAGIC "MDWAL\x00\x01\n"
#define WAL_MAGIC_LEN 8
#define WAL_MAX_RECORD (64u << 20)

typedef struct wal wal_t;

typedef struct wal_options {
  tsdb_fsync_t fsync;
  int64_t fsync_interval_ms;
  uint64_t segment_bytes; /* rotate past this size; 0 = 128 MiB */
} wal_options_t;

/* Called per intact record during replay/parse. A negative return stops with that code. */
typedef int (*wal_record_fn)(void *ctx, uint8_t type, const uint8_t *p, size_t n);

typedef struct wal_replay_stats {
  uint64_t records;
  uint64_t bytes;
  uint64_t corruptions;  /* damaged tails cut off */
  uint64_t bytes_lost;   /* bytes cut off */
} wal_replay_stats_t;

/* Parses framed records from p[0..n): calls fn for each intact one and returns the length of
 * the intact prefix in *good (n when everything parsed). Never reads past n. */
int wal_parse(const uint8_t *p, size_t n, wal_record_fn fn, void *ctx, size_t *good);

/* Replays the checkpoint and every segment after it, in order; a damaged tail of a file is
 * logged (file, offset, bytes lost) and cut off (ftruncate), and replay goes on with the next
 * file. Creates dir if missing. */
int wal_replay(const char *dir, wal_record_fn fn, void *ctx, wal_replay_stats_t *st, char *err, size_t errlen);

/* Opens the WAL for writing in a new segment after the existing ones. */
int wal_open(const char *dir, const wal_options_t *opt, wal_t **out, char *err, size_t errlen);
/* Writes what is pending, fsyncs, stops the sync thread, frees. */
void wal_close(wal_t *w);

/* Frames one record (type + payload) into the pending buffer; *lsn identifies it for
 * wal_wait. Only MD_ENOMEM / MD_EINVAL (too big) can fail here. */
int wal_enqueue(wal_t *w, uint8_t type, const void *p, size_t n, uint64_t *lsn);
/* Returns once the record with this LSN is written (fsynced under fsync=always): 0, or
 * MD_ENOSPC / MD_EIO when its write failed (the bytes are not in the log). */
int wal_wait(wal_t *w, uint64_t lsn);
/* fsyncs the open segment now. */
int wal_sync(wal_t *w);

/* Checkpoint: rotates to a new segment N, lets fill() write records (wal_ckpt_add) that
 * replace everything in segments < N, then commits atomically and deletes those segments. */
typedef struct wal_ckpt wal_ckpt_t;
int wal_ckpt_add(wal_ckpt_t *ck, uint8_t type, const void *p, size_t n);
int wal_checkpoint(wal_t *w, int (*fill)(void *ctx, wal_ckpt_t *ck), void *ctx, char *err, size_t errlen);

typedef struct wal_stats {
  uint64_t bytes_on_disk;
  uint64_t fsyncs;
  uint64_t bytes_written;
  int last_error;
} wal_stats_t;
void wal_get_stats(wal_t *w, wal_stats_t *st);

/* ---- record encoding helpers ------------------------------------------------------- */

/* Encoders into a caller buffer (the append path builds records without a call per field);
 * each returns the bytes written. */
static inline size_t wal_uvarint_encode(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

static inline size_t wal_varint_encode(uint8_t *out, int64_t v) {
  return wal_uvarint_encode(out, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* Values: integers (|v| < 2^53, not -0.0) as a zigzag varint << 1; anything else as a 1
 * byte tag + 8 raw bytes, so every bit pattern round-trips. At most 10 bytes. */
static inline size_t wal_value_encode(uint8_t *out, double v) {
  if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && v == (double)(int64_t)v && !(v == 0 && signbit(v))) {
    int64_t i = (int64_t)v;
    return wal_uvarint_encode(out, (((uint64_t)i << 1) ^ (uint64_t)(i >> 63)) << 1);
  }
  out[0] = 1;
  memcpy(out + 1, &v, 8);
  return 9;
}

/* A sample as wal_put_sample writes it, into out (room for WAL_SAMPLE_MAX bytes). */
#define WAL_SAMPLE_MAX 20
static inline size_t wal_sample_encode(uint8_t *out, int64_t ts_delta, double v) {
  size_t n = wal_varint_encode(out, ts_delta);
  return n + wal_value_encode(out + n, v);
}

void wal_put_uvarint(sb_t *b, uint64_t v);
void wal_put_varint(sb_t *b, int64_t v);
/* Values as wal_value_encode writes them. */
void wal_put_value(sb_t *b, double v);
/* wal_put_varint(ts_delta) then wal_put_value(v) in one append. */
void wal_put_sample(sb_t *b, int64_t ts_delta, double v);
/* Decoders advance *p; return false when the input ends or is malformed. */
bool wal_get_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v);
bool wal_get_varint(const uint8_t **p, const uint8_t *end, int64_t *v);
bool wal_get_value(const uint8_t **p, const uint8_t *end, double *v);

/* Test-only fault injection: replaces pwrite/fsync for every WAL (NULL restores). */
void wal_test_set_io(ssize_t (*pwrite_fn)(int, const void *, size_t, off_t), int (*fsync_fn)(int));

#endif
