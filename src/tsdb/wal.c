/*
 * wal — segmented, checksummed write-ahead log with group commit (contract in wal.h, format
 * in docs/storage-wal.md).
 *
 * Locking: `mu` protects the pending buffer, LSN counters, the failure ring and the
 * writer role (`writing`). The I/O itself (pwrite, fsync, rotation) is done by the one
 * thread holding the writer role, outside `mu`, so appenders keep enqueueing meanwhile.
 * The interval-sync thread fsyncs a dup() of the segment fd, so it never blocks writers.
 *
 * Failure: a failed write is rolled back with ftruncate to the last good size, so a later
 * successful write never follows a torn record. Series records in the failed bytes are
 * re-queued (samples written later may refer to them); sample records are dropped and
 * their waiters get the error. When the rollback itself fails, the writer moves to a new
 * segment; replay cuts the torn tail of each file independently.
 */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SEGMENT (128ull << 20)
#define FAIL_RING 64

static ssize_t (*io_pwrite)(int, const void *, size_t, off_t) = pwrite;
static int (*io_fsync)(int) = fdatasync;

void wal_test_set_io(ssize_t (*pwrite_fn)(int, const void *, size_t, off_t), int (*fsync_fn)(int)) {
  io_pwrite = pwrite_fn ? pwrite_fn : pwrite;
  io_fsync = fsync_fn ? fsync_fn : fdatasync;
}

struct wal {
  char dir[PATH_MAX];
  wal_options_t opt;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sb_t pending, spare;
  sb_t requeue;         /* series records of failed writes, written first next time */
  uint64_t enq_lsn;     /* bytes ever enqueued */
  uint64_t done_lsn;    /* every LSN <= this is written or failed */
  bool writing;         /* a thread holds the writer role */
  struct {
    uint64_t lo, hi; /* (lo, hi] */
    int err;
  } fails[FAIL_RING];
  unsigned nfails;
  int fd;
  uint32_t seg_no;
  uint64_t seg_size;    /* bytes known good in the open segment */
  bool need_rotate;
  uint64_t closed_bytes;/* bytes of older segments + checkpoint on disk */
  uint64_t fsyncs, bytes_written;
  int last_error;
  bool dirty;           /* written since the last fsync (interval policy) */
  pthread_t syncer;
  bool syncer_running, stop;
  pthread_cond_t stop_cv;
};

struct wal_ckpt {
  int fd;
  sb_t buf;
  uint64_t size;
  int err;
};

/* ---- encoding helpers ---------------------------------------------------------------- */

void wal_put_uvarint(sb_t *b, uint64_t v) {
  uint8_t tmp[10];
  sb_append(b, tmp, wal_uvarint_encode(tmp, v));
}

void wal_put_varint(sb_t *b, int64_t v) { wal_put_uvarint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)); }

void wal_put_value(sb_t *b, double v) {
  uint8_t tmp[10];
  sb_append(b, tmp, wal_value_encode(tmp, v));
}

void wal_put_sample(sb_t *b, int64_t ts_delta, double v) {
  uint8_t tmp[WAL_SAMPLE_MAX];
  sb_append(b, tmp, wal_sample_encode(tmp, ts_delta, v));
}

bool wal_get_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return false;
    uint8_t c = *(*p)++;
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

bool wal_get_varint(const uint8_t **p, const uint8_t *end, int64_t *v) {
  uint64_t u;
  if (!wal_get_uvarint(p, end, &u)) return false;
  *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
  return true;
}

bool wal_get_value(const uint8_t **p, const uint8_t *end, double *v) {
  if (*p >= end) return false;
  if (**p == 1) {
    if (end - *p < 9) return false;
    memcpy(v, *p + 1, 8);
    *p += 9;
    return true;
  }
  uint64_t u;
  if (!wal_get_uvarint(p, end, &u)) return false;
  if (u & 1) return false;
  u >>= 1;
  int64_t i = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
  *v = (double)i;
  return true;
}

/* ---- framing and parsing ----------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void frame(sb_t *b, uint8_t type, const void *p, size_t n) {
  uint8_t hdr[9];
  put_u32(hdr, (uint32_t)(n + 1));
  uint32_t crc = md_crc32c(0, &type, 1);
  crc = md_crc32c(crc, p, n);
  put_u32(hdr + 4, crc);
  hdr[8] = type;
  sb_append(b, hdr, 9);
  sb_append(b, p, n);
}

int wal_parse(const uint8_t *p, size_t n, wal_record_fn fn, void *ctx, size_t *good) {
  size_t off = 0;
  int rc = 0;
  while (n - off >= 9) {
    uint32_t len = get_u32(p + off);
    if (len == 0 || len > WAL_MAX_RECORD || len > n - off - 8) break;
    uint32_t crc = get_u32(p + off + 4);
    if (md_crc32c(0, p + off + 8, len) != crc) break;
    uint8_t type = p[off + 8];
    if (type < WAL_REC_SERIES || type > WAL_REC_CHUNK) break;
    if (fn) {
      rc = fn(ctx, type, p + off + 9, len - 1);
      if (rc < 0) break;
      rc = 0;
    }
    off += 8 + (size_t)len;
  }
  *good = off;
  return rc;
}

/* ---- directory scanning ------------------------------------------------------------ */

typedef struct seglist {
  uint32_t *segs;
  size_t n;
  uint32_t ckpt; /* 0 = none; else the newest checkpoint's N */
  uint32_t *ckpts;
  size_t nckpts;
} seglist_t;

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static bool parse_num(const char *s, uint32_t *out) {
  if (strlen(s) != 8) return false;
  uint32_t v = 0;
  for (int i = 0; i < 8; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  *out = v;
  return true;
}

static int scan_dir(const char *dir, seglist_t *sl) {
  memset(sl, 0, sizeof *sl);
  DIR *d = opendir(dir);
  if (!d) return MD_EIO;
  size_t cap = 0, ccap = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    uint32_t v;
    if (parse_num(e->d_name, &v) && v > 0) {
      if (sl->n == cap) {
        cap = cap ? cap * 2 : 16;
        uint32_t *ns = realloc(sl->segs, cap * sizeof *ns);
        if (!ns) {
          rc = MD_ENOMEM;
          break;
        }
        sl->segs = ns;
      }
      sl->segs[sl->n++] = v;
    } else if (strncmp(e->d_name, "checkpoint.", 11) == 0 && parse_num(e->d_name + 11, &v)) {
      if (sl->nckpts == ccap) {
        ccap = ccap ? ccap * 2 : 4;
        uint32_t *nc = realloc(sl->ckpts, ccap * sizeof *nc);
        if (!nc) {
          rc = MD_ENOMEM;
          break;
        }
        sl->ckpts = nc;
      }
      sl->ckpts[sl->nckpts++] = v;
      if (v > sl->ckpt) sl->ckpt = v;
    }
  }
  closedir(d);
  if (sl->n) qsort(sl->segs, sl->n, sizeof *sl->segs, cmp_u32);
  return rc;
}

static void seglist_free(seglist_t *sl) {
  free(sl->segs);
  free(sl->ckpts);
}

static void seg_path(char *out, size_t n, const char *dir, uint32_t no) { snprintf(out, n, "%s/%08" PRIu32, dir, no); }

/* Replay reads files through a private read-only mapping. Pages already parsed are dropped
 * from the mapping as replay moves on, so replay's resident memory is the head being rebuilt
 * plus a few MiB, not the head plus the whole log (a 1 M-series WAL is hundreds of MiB). */
#define REPLAY_RELEASE_BYTES (8u << 20)

typedef struct {
  wal_record_fn fn;
  void *ctx;
  const uint8_t *map;
  size_t released; /* bytes of the mapping already given back */
  size_t page;
} release_ctx_t;

static int release_fn(void *ctx, uint8_t type, const uint8_t *p, size_t n) {
  release_ctx_t *r = ctx;
  int rc = r->fn ? r->fn(r->ctx, type, p, n) : 0;
  size_t done = (size_t)(p - r->map);
  if (done - r->released >= REPLAY_RELEASE_BYTES) {
    size_t upto = done / r->page * r->page;
    madvise((void *)(r->map + r->released), upto - r->released, MADV_DONTNEED);
    r->released = upto;
  }
  return rc;
}

/* Replays one file; cuts a damaged tail. skip_magic: segments start with WAL_MAGIC. */
static int replay_file(const char *path, wal_record_fn fn, void *ctx, wal_replay_stats_t *st, char *err,
                       size_t errlen) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return md_error(err, errlen, MD_EIO, "wal: open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    close(fd);
    return md_error(err, errlen, MD_EIO, "wal: stat %s: %s", path, strerror(errno));
  }
  size_t size = (size_t)sb.st_size;
  int rc = 0;
  if (size == 0) goto out;
  uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    rc = md_error(err, errlen, MD_EIO, "wal: mmap %s: %s", path, strerror(errno));
    goto out;
  }
  madvise(map, size, MADV_SEQUENTIAL);
  size_t start = 0, good = 0;
  if (size >= WAL_MAGIC_LEN && memcmp(map, WAL_MAGIC, WAL_MAGIC_LEN) == 0) {
    start = WAL_MAGIC_LEN;
    long pg = sysconf(_SC_PAGESIZE);
    release_ctx_t rel = {fn, ctx, map, 0, pg > 0 ? (size_t)pg : 4096};
    rc = wal_parse(map + start, size - start, release_fn, &rel, &good);
    good += start;
  }
  if (st) st->bytes += good;
  munmap(map, size);
  if (rc < 0) {
    md_error(err, errlen, rc, "wal: replay of %s failed", path);
    goto out;
  }
  if (good < size) {
    if (st) {
      st->corruptions++;
      st->bytes_lost += size - good;
    }
    log_warn("wal: %s is damaged at byte offset %zu: cutting off %zu bytes (the records after it are lost)",
             path, good, size - good);
    if (ftruncate(fd, (off_t)good) != 0)
      log_error("wal: cannot truncate %s at %zu: %s", path, good, strerror(errno));
    else
      fsync(fd);
  }
out:
  close(fd);
  return rc;
}

typedef struct {
  wal_record_fn fn;
  void *ctx;
  wal_replay_stats_t *st;
} count_ctx_t;

static int count_fn(void *ctx, uint8_t type, const uint8_t *p, size_t n) {
  count_ctx_t *c = ctx;
  if (c->st) c->st->records++;
  return c->fn ? c->fn(c->ctx, type, p, n) : 0;
}

int wal_replay(const char *dir, wal_record_fn fn, void *ctx, wal_replay_stats_t *st, char *err, size_t errlen) {
  if (st) memset(st, 0, sizeof *st);
  if (md_mkdir_p(dir) != 0) return md_error(err, errlen, MD_EIO, "wal: cannot create %s", dir);
  seglist_t sl;
  int rc = scan_dir(dir, &sl);
  if (rc) {
    seglist_free(&sl);
    return md_error(err, errlen, rc, "wal: cannot list %s", dir);
  }
  count_ctx_t cc = {fn, ctx, st};
  char path[PATH_MAX + 32];
  if (sl.ckpt) {
    snprintf(path, sizeof path, "%s/checkpoint.%08" PRIu32, dir, sl.ckpt);
    /* A checkpoint has no magic: it is written in full then renamed, never appended. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sbuf;
    if (fd < 0 || fstat(fd, &sbuf) != 0) {
      if (fd >= 0) close(fd);
      rc = md_error(err, errlen, MD_EIO, "wal: cannot read %s", path);
      goto out;
    }
    if (sbuf.st_size > 0) {
      uint8_t *map = mmap(NULL, (size_t)sbuf.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map == MAP_FAILED) {
        close(fd);
        rc = md_error(err, errlen, MD_EIO, "wal: mmap %s", path);
        goto out;
      }
      size_t good;
      long pg = sysconf(_SC_PAGESIZE);
      release_ctx_t rel = {count_fn, &cc, map, 0, pg > 0 ? (size_t)pg : 4096};
      rc = wal_parse(map, (size_t)sbuf.st_size, release_fn, &rel, &good);
      munmap(map, (size_t)sbuf.st_size);
      if (rc < 0) {
        close(fd);
        md_error(err, errlen, rc, "wal: replay of %s failed", path);
        goto out;
      }
      if (good < (size_t)sbuf.st_size) {
        if (st) {
          st->corruptions++;
          st->bytes_lost += (uint64_t)sbuf.st_size - good;
        }
        log_warn("wal: checkpoint %s is damaged at byte offset %zu: %zu bytes ignored", path, good,
                 (size_t)sbuf.st_size - good);
      }
      if (st) st->bytes += good;
    }
    close(fd);
    /* Older checkpoints and the segments it covers are leftovers of an interrupted cleanup. */
    for (size_t i = 0; i < sl.nckpts; i++) {
      if (sl.ckpts[i] >= sl.ckpt) continue;
      snprintf(path, sizeof path, "%s/checkpoint.%08" PRIu32, dir, sl.ckpts[i]);
      unlink(path);
    }
  }
  for (size_t i = 0; i < sl.n; i++) {
    seg_path(path, sizeof path, dir, sl.segs[i]);
    if (sl.segs[i] < sl.ckpt) {
      unlink(path);
      continue;
    }
    if ((rc = replay_file(path, count_fn, &cc, st, err, errlen))) goto out;
  }
out:
  seglist_free(&sl);
  return rc;
}

/* ---- writing -------------------------------------------------------------------------- */

static int errno_code(int e) { return e == ENOSPC || e == EDQUOT ? MD_ENOSPC : MD_EIO; }

/* Opens segment no for writing (creating it with the magic). Writer role or init only. */
static int open_segment(wal_t *w, uint32_t no) {
  char path[PATH_MAX + 32];
  seg_path(path, sizeof path, w->dir, no);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_code(errno);
  ssize_t k = io_pwrite(fd, WAL_MAGIC, WAL_MAGIC_LEN, 0);
  if (k != WAL_MAGIC_LEN) {
    int e = k < 0 ? errno_code(errno) : MD_ENOSPC;
    close(fd);
    unlink(path);
    return e;
  }
  if (md_fsync_dir(w->dir) != 0) {
    close(fd);
    unlink(path);
    return MD_EIO;
  }
  w->fd = fd;
  w->seg_no = no;
  w->seg_size = WAL_MAGIC_LEN;
  w->need_rotate = false;
  return 0;
}

/* Moves to the next segment (writer role): fsyncs and closes the current one. */
static int rotate(wal_t *w) {
  if (w->fd >= 0) {
    if (io_fsync(w->fd) == 0) w->fsyncs++;
    close(w->fd);
    w->closed_bytes += w->seg_size;
    w->fd = -1;
  }
  return open_segment(w, w->seg_no + 1);
}

static void *syncer_main(void *arg) {
  wal_t *w = arg;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (w->opt.fsync_interval_ms % 1000) * 1000000;
    ts.tv_sec += w->opt.fsync_interval_ms / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&w->stop_cv, &w->mu, &ts);
    if (w->stop || !w->dirty || w->fd < 0) continue;
    int fd = dup(w->fd);
    w->dirty = false;
    pthread_mutex_unlock(&w->mu);
    int rc = fd >= 0 ? io_fsync(fd) : -1;
    if (fd >= 0) close(fd);
    pthread_mutex_lock(&w->mu);
    if (rc == 0) w->fsyncs++;
    else w->dirty = true;
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int wal_open(const char *dir, const wal_options_t *opt, wal_t **out, char *err, size_t errlen) {
  wal_t *w = calloc(1, sizeof *w);
  if (!w) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  int rc = 0;
  snprintf(w->dir, sizeof w->dir, "%s", dir);
  w->opt = *opt;
  if (!w->opt.segment_bytes) w->opt.segment_bytes = DEFAULT_SEGMENT;
  if (w->opt.fsync_interval_ms <= 0) w->opt.fsync_interval_ms = 1000;
  w->fd = -1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  pthread_cond_init(&w->stop_cv, NULL);
  if (md_mkdir_p(dir) != 0) {
    rc = md_error(err, errlen, MD_EIO, "wal: cannot create %s", dir);
    goto fail;
  }
  seglist_t sl;
  if ((rc = scan_dir(dir, &sl))) {
    seglist_free(&sl);
    md_error(err, errlen, rc, "wal: cannot list %s", dir);
    goto fail;
  }
  uint32_t last = sl.n ? sl.segs[sl.n - 1] : 0;
  if (sl.ckpt > last) last = sl.ckpt;
  char path[PATH_MAX + 32];
  struct stat st;
  for (size_t i = 0; i < sl.n; i++) {
    seg_path(path, sizeof path, dir, sl.segs[i]);
    if (stat(path, &st) == 0) w->closed_bytes += (uint64_t)st.st_size;
  }
  if (sl.ckpt) {
    snprintf(path, sizeof path, "%s/checkpoint.%08" PRIu32, dir, sl.ckpt);
    if (stat(path, &st) == 0) w->closed_bytes += (uint64_t)st.st_size;
  }
  seglist_free(&sl);
  if ((rc = open_segment(w, last + 1))) {
    md_error(err, errlen, rc, "wal: cannot create a segment in %s: %s", dir, strerror(errno));
    goto fail;
  }
  if (w->opt.fsync == TSDB_FSYNC_INTERVAL) {
    if (pthread_create(&w->syncer, NULL, syncer_main, w) != 0) {
      rc = md_error(err, errlen, MD_ERR, "wal: cannot start the sync thread");
      goto fail;
    }
    w->syncer_running = true;
  }
  *out = w;
  return 0;
fail:
  if (w->fd >= 0) close(w->fd);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  pthread_cond_destroy(&w->stop_cv);
  free(w);
  return rc;
}

int wal_enqueue(wal_t *w, uint8_t type, const void *p, size_t n, uint64_t *lsn) {
  if (n + 1 > WAL_MAX_RECORD) return MD_EINVAL;
  pthread_mutex_lock(&w->mu);
  size_t before = w->pending.len;
  frame(&w->pending, type, p, n);
  if (w->pending.oom) {
    w->pending.oom = false;
    w->pending.len = before;
    pthread_mutex_unlock(&w->mu);
    return MD_ENOMEM;
  }
  w->enq_lsn += w->pending.len - before;
  if (lsn) *lsn = w->enq_lsn;
  pthread_mutex_unlock(&w->mu);
  return 0;
}

/* Copies the series records of a failed buffer into requeue. */
static void requeue_series(wal_t *w, const uint8_t *p, size_t n) {
  size_t off = 0;
  while (n - off >= 9) {
    uint32_t len = get_u32(p + off);
    if (len == 0 || len > n - off - 8) break;
    if (p[off + 8] == WAL_REC_SERIES) sb_append(&w->requeue, p + off, 8 + (size_t)len);
    off += 8 + (size_t)len;
  }
}

/* Writes buf at the segment end (writer role, mu not held). */
static int write_buf(wal_t *w, const uint8_t *p, size_t n) {
  if (w->need_rotate || w->fd < 0 || (w->seg_size > WAL_MAGIC_LEN && w->seg_size + n > w->opt.segment_bytes)) {
    int rc = rotate(w);
    if (rc) {
      w->need_rotate = true;
      return rc;
    }
  }
  size_t done = 0;
  while (done < n) {
    ssize_t k = io_pwrite(w->fd, p + done, n - done, (off_t)(w->seg_size + done));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int rc = k < 0 ? errno_code(errno) : MD_ENOSPC;
      /* Roll back the partial record so nothing good ever follows a torn one. */
      if (done && ftruncate(w->fd, (off_t)w->seg_size) != 0) w->need_rotate = true;
      return rc;
    }
    done += (size_t)k;
  }
  w->seg_size += n;
  w->bytes_written += n;
  if (w->opt.fsync == TSDB_FSYNC_ALWAYS) {
    if (io_fsync(w->fd) != 0) {
      int rc = errno_code(errno);
      /* After a failed fsync the page cache state is unknown: start a fresh segment. */
      w->need_rotate = true;
      return rc;
    }
    w->fsyncs++;
  }
  return 0;
}

static int fail_lookup(const wal_t *w, uint64_t lsn) {
  unsigned n = w->nfails < FAIL_RING ? w->nfails : FAIL_RING;
  for (unsigned i = 0; i < n; i++) {
    unsigned k = (w->nfails - 1 - i) % FAIL_RING;
    if (lsn > w->fails[k].lo && lsn <= w->fails[k].hi) return w->fails[k].err;
  }
  return 0;
}

/* One round of the writer role: called with mu held and writing set; returns with mu held. */
static void writer_round(wal_t *w) {
  sb_t buf = w->pending;
  w->pending = w->spare;
  sb_reset(&w->pending);
  w->spare = (sb_t){0};
  uint64_t lo = w->done_lsn, hi = w->enq_lsn;
  sb_t req = w->requeue;
  w->requeue = (sb_t){0};
  pthread_mutex_unlock(&w->mu);

  int rc = 0;
  if (req.len) {
    rc = write_buf(w, (const uint8_t *)req.buf, req.len);
  }
  if (!rc && buf.len) rc = write_buf(w, (const uint8_t *)buf.buf, buf.len);

  pthread_mutex_lock(&w->mu);
  if (rc) {
    if (req.len) requeue_series(w, (const uint8_t *)req.buf, req.len);
    requeue_series(w, (const uint8_t *)buf.buf, buf.len);
    if (hi > lo) {
      unsigned k = w->nfails % FAIL_RING;
      w->fails[k].lo = lo;
      w->fails[k].hi = hi;
      w->fails[k].err = rc;
      w->nfails++;
    }
    w->last_error = rc;
  } else if (buf.len) {
    w->last_error = 0;
    w->dirty = true;
  }
  sb_free(&req);
  sb_reset(&buf);
  if (!w->spare.buf) w->spare = buf;
  else sb_free(&buf);
  w->done_lsn = hi;
}

int wal_wait(wal_t *w, uint64_t lsn) {
  pthread_mutex_lock(&w->mu);
  while (w->done_lsn < lsn) {
    if (!w->writing) {
      w->writing = true;
      writer_round(w);
      w->writing = false;
      pthread_cond_broadcast(&w->cv);
    } else {
      pthread_cond_wait(&w->cv, &w->mu);
    }
  }
  int rc = fail_lookup(w, lsn);
  pthread_mutex_unlock(&w->mu);
  return rc;
}

int wal_sync(wal_t *w) {
  pthread_mutex_lock(&w->mu);
  while (w->writing) pthread_cond_wait(&w->cv, &w->mu);
  w->writing = true;
  if (w->done_lsn < w->enq_lsn || w->requeue.len) writer_round(w);
  int rc = 0;
  if (w->fd >= 0) {
    pthread_mutex_unlock(&w->mu);
    rc = io_fsync(w->fd) == 0 ? 0 : errno_code(errno);
    pthread_mutex_lock(&w->mu);
    if (!rc) {
      w->fsyncs++;
      w->dirty = false;
    }
  }
  w->writing = false;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void wal_close(wal_t *w) {
  if (!w) return;
  wal_sync(w);
  if (w->syncer_running) {
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->stop_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->syncer, NULL);
  }
  if (w->fd >= 0) close(w->fd);
  sb_free(&w->pending);
  sb_free(&w->spare);
  sb_free(&w->requeue);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  pthread_cond_destroy(&w->stop_cv);
  free(w);
}

void wal_get_stats(wal_t *w, wal_stats_t *st) {
  pthread_mutex_lock(&w->mu);
  st->bytes_on_disk = w->closed_bytes + w->seg_size;
  st->fsyncs = w->fsyncs;
  st->bytes_written = w->bytes_written;
  st->last_error = w->last_error;
  pthread_mutex_unlock(&w->mu);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static int ckpt_flush(wal_ckpt_t *ck) {
  size_t done = 0;
  while (done < ck->buf.len) {
    ssize_t k = io_pwrite(ck->fd, ck->buf.buf + done, ck->buf.len - done, (off_t)(ck->size + done));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return ck->err = k < 0 ? errno_code(errno) : MD_ENOSPC;
    done += (size_t)k;
  }
  ck->size += ck->buf.len;
  sb_reset(&ck->buf);
  return 0;
}

int wal_ckpt_add(wal_ckpt_t *ck, uint8_t type, const void *p, size_t n) {
  if (ck->err) return ck->err;
  if (n + 1 > WAL_MAX_RECORD) return ck->err = MD_EINVAL;
  frame(&ck->buf, type, p, n);
  if (ck->buf.oom) return ck->err = MD_ENOMEM;
  if (ck->buf.len >= (1u << 20)) return ckpt_flush(ck);
  return 0;
}

int wal_checkpoint(wal_t *w, int (*fill)(void *ctx, wal_ckpt_t *ck), void *ctx, char *err, size_t errlen) {
  /* Take the writer role: flush what is pending, then rotate, so every record enqueued
   * before this point lies in a segment < N. */
  pthread_mutex_lock(&w->mu);
  while (w->writing) pthread_cond_wait(&w->cv, &w->mu);
  w->writing = true;
  if (w->done_lsn < w->enq_lsn || w->requeue.len) writer_round(w);
  /* Series records that could not be written yet (disk full) must precede the checkpoint. */
  int rc = w->requeue.len ? (w->last_error ? w->last_error : MD_EIO) : 0;
  if (!rc) rc = rotate(w);
  if (rc) w->need_rotate = true;
  uint32_t n = w->seg_no;
  w->writing = false;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (rc) return md_error(err, errlen, rc, "wal: checkpoint cannot rotate the log");

  char tmp[PATH_MAX + 48], final[PATH_MAX + 48];
  snprintf(tmp, sizeof tmp, "%s/checkpoint.%08" PRIu32 ".tmp", w->dir, n);
  snprintf(final, sizeof final, "%s/checkpoint.%08" PRIu32, w->dir, n);
  wal_ckpt_t ck = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (ck.fd < 0) return md_error(err, errlen, errno_code(errno), "wal: cannot create %s", tmp);
  rc = fill(ctx, &ck);
  if (!rc && ck.err) rc = ck.err;
  if (!rc) rc = ckpt_flush(&ck);
  if (!rc && io_fsync(ck.fd) != 0) rc = errno_code(errno);
  close(ck.fd);
  sb_free(&ck.buf);
  if (!rc && rename(tmp, final) != 0) rc = errno_code(errno);
  if (!rc) rc = md_fsync_dir(w->dir);
  if (rc) {
    unlink(tmp);
    return md_error(err, errlen, rc, "wal: checkpoint %s failed", final);
  }
  /* The checkpoint now stands for everything before segment n. */
  seglist_t sl;
  uint64_t removed = 0;
  if (scan_dir(w->dir, &sl) == 0) {
    char path[PATH_MAX + 48];
    struct stat st;
    for (size_t i = 0; i < sl.n; i++) {
      if (sl.segs[i] >= n) continue;
      seg_path(path, sizeof path, w->dir, sl.segs[i]);
      if (stat(path, &st) == 0) removed += (uint64_t)st.st_size;
      unlink(path);
    }
    for (size_t i = 0; i < sl.nckpts; i++) {
      if (sl.ckpts[i] >= n) continue;
      snprintf(path, sizeof path, "%s/checkpoint.%08" PRIu32, w->dir, sl.ckpts[i]);
      if (stat(path, &st) == 0) removed += (uint64_t)st.st_size;
      unlink(path);
    }
  }
  seglist_free(&sl);
  pthread_mutex_lock(&w->mu);
  w->closed_bytes = w->closed_bytes > removed ? w->closed_bytes - removed : 0;
  w->closed_bytes += ck.size;
  pthread_mutex_unlock(&w->mu);
  return 0;
}
