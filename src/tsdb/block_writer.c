/*
 * block_writer — builds one immutable block directory (docs/storage-format.md).
 *
 * Series arrive in (tenant, label set) order. Their samples are cut into chunks, sealed with
 * chunk_seal, and appended to the current frame of the chunks file; a frame (~32 KiB raw)
 * is zstd-compressed when that is smaller and written at once, so the chunk data streams
 * to disk and only the index is held in memory: interned strings, per series its label
 * pairs and chunk descriptors. finish() sorts the symbol table, renumbers, builds postings,
 * writes the index as one zstd frame and meta.json, fsyncs everything, and renames
 * "<name>.tmp" to "<name>", then fsyncs the parent directory: a crash leaves either no
 * block or a complete one (plus a stray .tmp directory the opener may delete).
 *
 * Threading: a writer belongs to one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "block_internal.h"
#include "chunk.h"
#include "core/core.h"

/* Index compression level: the index is written once per block and is small; a high level
 * costs little time and buys a few percent of the index (measured in bench_block). */
#define INDEX_ZSTD_LEVEL 12
#define FRAME_ZSTD_LEVEL 9

typedef struct {
  uint32_t name, value; /* provisional symbol ids until finish */
} wlabel_t;

typedef struct {
  int64_t mint, maxt;
  uint32_t len[BLOCK_ROLLUP_PARTS];
} wchunk_t;

typedef struct {
  uint32_t tenant;
  uint32_t label_off, nlabels;
  uint32_t chunk_off, nchunks;
  uint32_t frame;
} wseries_t;

typedef struct {
  uint32_t name, value, series;
} wposting_t;

struct block_writer {
  char *parent;
  char tmpdir[4096];
  char name[48];
  int64_t mint, maxt, res;
  int level, parts;
  uint64_t seq;
  int fd;
  uint64_t chunks_bytes;
  uint64_t nsamples;
  uint32_t nframes;
  /* symbol interning: strings live in the arena, ids are insertion order until finish */
  arena_t *arena;
  char **syms;
  uint32_t nsyms, capsyms;
  uint32_t *ht; /* open addressing: id + 1, 0 = empty */
  size_t htcap;
  wlabel_t *labels;
  size_t nlabels, caplabels;
  wchunk_t *chunks;
  size_t nchunks, capchunks;
  wseries_t *series;
  size_t nseries, capseries;
  sb_t frame, group, zbuf;
  ZSTD_CCtx *zc;
};

#define GROW(arr, n, cap, need)                                                   \
  do {                                                                            \
    if ((n) + (need) > (cap)) {                                                   \
      size_t nc_ = (cap) ? (cap) * 2 : 256;                                       \
      while (nc_ < (n) + (need)) nc_ *= 2;                                        \
      void *np_ = realloc((arr), nc_ * sizeof *(arr));                            \
      if (!np_) return MD_ENOMEM;                                                 \
      (arr) = np_;                                                                \
      (cap) = nc_;                                                                \
    }                                                                             \
  } while (0)

static int io_error(char *err, size_t errlen, const char *what, const char *path) {
  int e = errno;
  return md_error(err, errlen, e == ENOSPC ? MD_ENOSPC : MD_EIO, "%s %s: %s", what, path, strerror(e));
}

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

static void random_suffix(char out[9]) {
  uint32_t r;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    static _Atomic uint64_t counter;
    uint64_t x = (uint64_t)md_mono_ns() ^ ((uint64_t)getpid() << 32) ^ counter++;
    r = (uint32_t)md_hash64(&x, sizeof x, 0x6d64);
  }
  snprintf(out, 9, "%08x", r);
}

/* ---- interning ---------------------------------------------------------------------- */

static int ht_grow(block_writer_t *w) {
  size_t nc = w->htcap ? w->htcap * 2 : 1024;
  uint32_t *nh = calloc(nc, sizeof *nh);
  if (!nh) return MD_ENOMEM;
  for (uint32_t id = 0; id < w->nsyms; id++) {
    size_t i = md_hash64(w->syms[id], strlen(w->syms[id]), 0) & (nc - 1);
    while (nh[i]) i = (i + 1) & (nc - 1);
    nh[i] = id + 1;
  }
  free(w->ht);
  w->ht = nh;
  w->htcap = nc;
  return 0;
}

static int intern(block_writer_t *w, const char *s, uint32_t *id) {
  if ((size_t)(w->nsyms + 1) * 2 > w->htcap) {
    int rc = ht_grow(w);
    if (rc) return rc;
  }
  size_t n = strlen(s);
  size_t i = md_hash64(s, n, 0) & (w->htcap - 1);
  while (w->ht[i]) {
    const char *t = w->syms[w->ht[i] - 1];
    if (strcmp(t, s) == 0) {
      *id = w->ht[i] - 1;
      return 0;
    }
    i = (i + 1) & (w->htcap - 1);
  }
  GROW(w->syms, w->nsyms, w->capsyms, 1);
  char *copy = arena_strndup(w->arena, s, n);
  if (!copy) return MD_ENOMEM;
  w->syms[w->nsyms] = copy;
  w->ht[i] = w->nsyms + 1;
  *id = w->nsyms++;
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int block_writer_new(const char *parent_dir, int64_t mint, int64_t maxt, int level,
                     int64_t resolution_ms, uint64_t seq, block_writer_t **out, char *err, size_t errlen) {
  if (mint > maxt || level < 0 || resolution_ms < 0)
    return md_error(err, errlen, MD_EINVAL, "block: bad range [%lld,%lld] or level/resolution",
                    (long long)mint, (long long)maxt);
  block_writer_t *w = calloc(1, sizeof *w);
  if (!w) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  w->fd = -1;
  w->mint = mint;
  w->maxt = maxt;
  w->level = level;
  w->res = resolution_ms;
  w->parts = resolution_ms > 0 ? BLOCK_ROLLUP_PARTS : 1;
  if (!seq) {
    struct timespec tsp;
    clock_gettime(CLOCK_REALTIME, &tsp);
    seq = (uint64_t)tsp.tv_sec * 1000000000u + (uint64_t)tsp.tv_nsec;
  }
  w->seq = seq;
  int rc;
  w->parent = strdup(parent_dir);
  w->arena = arena_new(0);
  w->zc = ZSTD_createCCtx();
  if (!w->parent || !w->arena || !w->zc) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  char suffix[9];
  random_suffix(suffix);
  /* Flipping the sign bit makes the unsigned hex order equal the signed time order. */
  snprintf(w->name, sizeof w->name, "%016llx-%s", (unsigned long long)((uint64_t)mint ^ (1ULL << 63)),
           suffix);
  if ((size_t)snprintf(w->tmpdir, sizeof w->tmpdir, "%s/%s.tmp", parent_dir, w->name) >= sizeof w->tmpdir) {
    rc = md_error(err, errlen, MD_EINVAL, "block: path too long");
    goto fail;
  }
  rc = md_mkdir_p(parent_dir);
  if (rc) {
    rc = md_error(err, errlen, rc, "block: cannot create %s", parent_dir);
    goto fail;
  }
  if (mkdir(w->tmpdir, 0755) != 0) {
    rc = io_error(err, errlen, "block: mkdir", w->tmpdir);
    goto fail;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/chunks", w->tmpdir);
  w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    rc = io_error(err, errlen, "block: create", path);
    goto fail;
  }
  uint8_t hdr[BLOCK_CHUNKS_HEADER] = {0};
  block_put_u32(hdr, BLOCK_CHUNKS_MAGIC);
  hdr[4] = BLOCK_FORMAT_VERSION;
  if (write_all(w->fd, hdr, sizeof hdr) != 0) {
    rc = io_error(err, errlen, "block: write", path);
    goto fail;
  }
  w->chunks_bytes = sizeof hdr;
  *out = w;
  return 0;
fail:
  block_writer_abort(w);
  return rc;
}

void block_writer_abort(block_writer_t *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  if (w->tmpdir[0]) md_rm_rf(w->tmpdir);
  free(w->parent);
  arena_free(w->arena);
  free(w->syms);
  free(w->ht);
  free(w->labels);
  free(w->chunks);
  free(w->series);
  sb_free(&w->frame);
  sb_free(&w->group);
  sb_free(&w->zbuf);
  ZSTD_freeCCtx(w->zc);
  free(w);
}

/* ---- frames --------------------------------------------------------------------------- */

static int flush_frame(block_writer_t *w, char *err, size_t errlen) {
  if (w->frame.len == 0) return 0;
  if (w->frame.oom) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  size_t bound = ZSTD_compressBound(w->frame.len);
  sb_reset(&w->zbuf);
  if (!sb_reserve(&w->zbuf, bound)) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  size_t z = ZSTD_compressCCtx(w->zc, w->zbuf.buf, bound, w->frame.buf, w->frame.len, FRAME_ZSTD_LEVEL);
  uint8_t codec = BLOCK_CODEC_RAW;
  const void *data = w->frame.buf;
  size_t stored = w->frame.len;
  if (!ZSTD_isError(z) && z < w->frame.len) {
    codec = BLOCK_CODEC_ZSTD;
    data = w->zbuf.buf;
    stored = z;
  }
  uint8_t hdr[BLOCK_FRAME_HEADER];
  hdr[0] = codec;
  block_put_u32(hdr + 1, (uint32_t)stored);
  block_put_u32(hdr + 5, (uint32_t)w->frame.len);
  uint32_t crc = md_crc32c(0, hdr, 9);
  crc = md_crc32c(crc, data, stored);
  block_put_u32(hdr + 9, crc);
  if (write_all(w->fd, hdr, sizeof hdr) != 0 || write_all(w->fd, data, stored) != 0)
    return io_error(err, errlen, "block: write chunks in", w->tmpdir);
  w->chunks_bytes += sizeof hdr + stored;
  w->nframes++;
  sb_reset(&w->frame);
  return 0;
}

int block_labels_cmp(const tsdb_label_t *a, size_t na, const tsdb_label_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < n; i++) {
    int c = strcmp(a[i].name, b[i].name);
    if (c) return c;
    c = strcmp(a[i].value, b[i].value);
    if (c) return c;
  }
  return na < nb ? -1 : na > nb ? 1 : 0;
}

/* Compares the incoming series with the last one added (provisional ids → strings). */
static int cmp_with_last(block_writer_t *w, const char *tenant, const tsdb_label_t *labels, size_t n) {
  const wseries_t *p = &w->series[w->nseries - 1];
  int c = strcmp(w->syms[p->tenant], tenant);
  if (c) return c;
  size_t m = p->nlabels < n ? p->nlabels : n;
  for (size_t i = 0; i < m; i++) {
    const wlabel_t *l = &w->labels[p->label_off + i];
    c = strcmp(w->syms[l->name], labels[i].name);
    if (c) return c;
    c = strcmp(w->syms[l->value], labels[i].value);
    if (c) return c;
  }
  return p->nlabels < n ? -1 : p->nlabels > n ? 1 : 0;
}

static void put_uvarint(sb_t *sb, uint64_t v) {
  uint8_t b[10];
  size_t i = 0;
  while (v >= 0x80) {
    b[i++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b[i++] = (uint8_t)v;
  sb_append(sb, b, i);
}

int block_writer_add(block_writer_t *w, const char *tenant, const tsdb_label_t *labels, size_t nlabels,
                     const int64_t *ts, const double *const *v, size_t n, char *err, size_t errlen) {
  if (n == 0) return 0;
  if (nlabels > BLOCK_MAX_LABELS)
    return md_error(err, errlen, MD_EINVAL, "block: series with %zu labels (max %d)", nlabels, BLOCK_MAX_LABELS);
  for (size_t i = 1; i < nlabels; i++)
    if (strcmp(labels[i - 1].name, labels[i].name) >= 0)
      return md_error(err, errlen, MD_EINVAL, "block: labels not sorted or duplicate name '%s'", labels[i].name);
  if (w->nseries && cmp_with_last(w, tenant, labels, nlabels) >= 0)
    return md_error(err, errlen, MD_EINVAL, "block: series out of order (tenant '%s')", tenant);
  for (size_t i = 0; i < n; i++) {
    if (ts[i] < w->mint || ts[i] > w->maxt || (i && ts[i] <= ts[i - 1]))
      return md_error(err, errlen, MD_EINVAL, "block: sample ts %lld outside [%lld,%lld] or not ascending",
                      (long long)ts[i], (long long)w->mint, (long long)w->maxt);
  }
  int rc;
  GROW(w->series, w->nseries, w->capseries, 1);
  GROW(w->labels, w->nlabels, w->caplabels, nlabels);
  wseries_t *s = &w->series[w->nseries];
  memset(s, 0, sizeof *s);
  if ((rc = intern(w, tenant, &s->tenant))) return md_error(err, errlen, rc, "out of memory");
  s->label_off = (uint32_t)w->nlabels;
  s->nlabels = (uint32_t)nlabels;
  for (size_t i = 0; i < nlabels; i++) {
    wlabel_t *l = &w->labels[w->nlabels + i];
    if ((rc = intern(w, labels[i].name, &l->name)) || (rc = intern(w, labels[i].value, &l->value)))
      return md_error(err, errlen, rc, "out of memory");
  }
  /* Cut into chunks and seal each part into the group buffer. Rollup chunks may span longer
   * so that coarse tiers still get enough points per chunk to compress. */
  int64_t span = BLOCK_CHUNK_MAX_SPAN_MS;
  if (w->res > 0 && w->res * 120 > span) span = w->res * 120;
  sb_reset(&w->group);
  s->chunk_off = (uint32_t)w->nchunks;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && j - i < BLOCK_CHUNK_MAX_SAMPLES && ts[j] - ts[i] < span) j++;
    GROW(w->chunks, w->nchunks, w->capchunks, 1);
    wchunk_t *c = &w->chunks[w->nchunks];
    memset(c, 0, sizeof *c);
    c->mint = ts[i];
    c->maxt = ts[j - 1];
    for (int p = 0; p < w->parts; p++) {
      uint8_t *enc = NULL;
      size_t enclen = 0;
      rc = chunk_seal(ts + i, v[p] + i, j - i, &enc, &enclen);
      if (rc) return md_error(err, errlen, rc, "block: chunk_seal failed (%d)", rc);
      sb_append(&w->group, enc, enclen);
      free(enc);
      c->len[p] = (uint32_t)enclen;
    }
    w->nchunks++;
    s->nchunks++;
    i = j;
  }
  if (w->group.oom) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  if (w->frame.len && w->frame.len + w->group.len > BLOCK_FRAME_TARGET) {
    if ((rc = flush_frame(w, err, errlen))) return rc;
  }
  if (w->frame.len + w->group.len > BLOCK_FRAME_MAX)
    return md_error(err, errlen, MD_ELIMIT, "block: series too large for one frame");
  sb_append(&w->frame, w->group.buf, w->group.len);
  if (w->frame.oom) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  s->frame = w->nframes;
  w->nlabels += nlabels;
  w->nseries++;
  w->nsamples += n;
  return 0;
}

/* ---- finish ------------------------------------------------------------------------- */

static int cmp_sym_ids(const void *a, const void *b, void *ctx) {
  char **syms = ctx;
  return strcmp(syms[*(const uint32_t *)a], syms[*(const uint32_t *)b]);
}

static int cmp_posting(const void *a, const void *b) {
  const wposting_t *x = a, *y = b;
  if (x->name != y->name) return x->name < y->name ? -1 : 1;
  if (x->value != y->value) return x->value < y->value ? -1 : 1;
  return x->series < y->series ? -1 : x->series > y->series;
}

static int build_payload(block_writer_t *w, sb_t *pl, uint32_t *ntenants_out) {
  int rc = MD_ENOMEM;
  uint32_t *order = malloc((w->nsyms + 1) * sizeof *order);
  uint32_t *remap = malloc((w->nsyms + 1) * sizeof *remap);
  wposting_t *post = NULL;
  if (!order || !remap) goto out;
  for (uint32_t i = 0; i < w->nsyms; i++) order[i] = i;
  qsort_r(order, w->nsyms, sizeof *order, cmp_sym_ids, w->syms);
  for (uint32_t i = 0; i < w->nsyms; i++) remap[order[i]] = i;

  put_uvarint(pl, block_zigzag(w->mint));
  put_uvarint(pl, block_zigzag(w->maxt));
  put_uvarint(pl, (uint64_t)w->level);
  put_uvarint(pl, (uint64_t)w->res);
  put_uvarint(pl, w->seq);
  put_uvarint(pl, w->nframes);
  put_uvarint(pl, w->nseries);
  put_uvarint(pl, w->nchunks);
  put_uvarint(pl, w->nsamples);
  put_uvarint(pl, w->nsyms);
  for (uint32_t i = 0; i < w->nsyms; i++) {
    size_t l = strlen(w->syms[order[i]]);
    put_uvarint(pl, l);
    sb_append(pl, w->syms[order[i]], l);
  }
  uint32_t ntenants = 0;
  for (size_t i = 0; i < w->nseries; i++)
    if (i == 0 || w->series[i].tenant != w->series[i - 1].tenant) ntenants++;
  *ntenants_out = ntenants;
  put_uvarint(pl, ntenants);
  uint32_t prev_frame = 0;
  for (size_t t0 = 0; t0 < w->nseries;) {
    size_t t1 = t0 + 1;
    while (t1 < w->nseries && w->series[t1].tenant == w->series[t0].tenant) t1++;
    put_uvarint(pl, remap[w->series[t0].tenant]);
    put_uvarint(pl, t1 - t0);
    size_t npost = 0;
    for (size_t i = t0; i < t1; i++) {
      const wseries_t *s = &w->series[i];
      put_uvarint(pl, s->nlabels);
      for (uint32_t k = 0; k < s->nlabels; k++) {
        put_uvarint(pl, remap[w->labels[s->label_off + k].name]);
        put_uvarint(pl, remap[w->labels[s->label_off + k].value]);
      }
      put_uvarint(pl, s->frame - prev_frame);
      prev_frame = s->frame;
      put_uvarint(pl, s->nchunks);
      int64_t prev = w->mint;
      for (uint32_t k = 0; k < s->nchunks; k++) {
        const wchunk_t *c = &w->chunks[s->chunk_off + k];
        put_uvarint(pl, block_zigzag(c->mint - prev));
        put_uvarint(pl, (uint64_t)(c->maxt - c->mint));
        for (int p = 0; p < w->parts; p++) put_uvarint(pl, c->len[p]);
        prev = c->maxt;
      }
      npost += s->nlabels;
    }
    /* Postings: every (name, value) pair with its series (local numbers), by symbol order. */
    free(post);
    post = malloc((npost ? npost : 1) * sizeof *post);
    if (!post) goto out;
    size_t k = 0;
    for (size_t i = t0; i < t1; i++) {
      const wseries_t *s = &w->series[i];
      for (uint32_t j = 0; j < s->nlabels; j++) {
        post[k].name = remap[w->labels[s->label_off + j].name];
        post[k].value = remap[w->labels[s->label_off + j].value];
        post[k].series = (uint32_t)(i - t0);
        k++;
      }
    }
    qsort(post, npost, sizeof *post, cmp_posting);
    size_t nnames = 0;
    for (size_t i = 0; i < npost; i++)
      if (i == 0 || post[i].name != post[i - 1].name) nnames++;
    put_uvarint(pl, nnames);
    for (size_t a = 0; a < npost;) {
      size_t b = a;
      size_t nvalues = 0;
      while (b < npost && post[b].name == post[a].name) {
        if (b == a || post[b].value != post[b - 1].value) nvalues++;
        b++;
      }
      put_uvarint(pl, post[a].name);
      put_uvarint(pl, nvalues);
      for (size_t c = a; c < b;) {
        size_t d = c;
        while (d < b && post[d].value == post[c].value) d++;
        put_uvarint(pl, post[c].value);
        put_uvarint(pl, d - c);
        uint32_t last = 0;
        for (size_t e = c; e < d; e++) {
          /* first entry absolute, then gaps minus one (postings are strictly ascending) */
          put_uvarint(pl, e == c ? post[e].series : post[e].series - last - 1);
          last = post[e].series;
        }
        c = d;
      }
      a = b;
    }
    t0 = t1;
  }
  rc = pl->oom ? MD_ENOMEM : 0;
out:
  free(order);
  free(remap);
  free(post);
  return rc;
}

static int write_file(const char *path, const void *a, size_t an, const void *b, size_t bn,
                      const void *c, size_t cn, char *err, size_t errlen) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(err, errlen, "block: create", path);
  int rc = 0;
  if (write_all(fd, a, an) != 0 || (bn && write_all(fd, b, bn) != 0) || (cn && write_all(fd, c, cn) != 0) ||
      fsync(fd) != 0)
    rc = io_error(err, errlen, "block: write", path);
  if (close(fd) != 0 && !rc) rc = io_error(err, errlen, "block: close", path);
  return rc;
}

int block_writer_finish(block_writer_t *w, char *name, size_t name_len, char *err, size_t errlen) {
  int rc;
  sb_t pl = {0}, z = {0};
  char *meta = NULL;
  char path[4200];
  if ((rc = flush_frame(w, err, errlen))) goto out;
  if (fsync(w->fd) != 0) {
    rc = io_error(err, errlen, "block: fsync chunks in", w->tmpdir);
    goto out;
  }
  if (close(w->fd) != 0) {
    w->fd = -1;
    rc = io_error(err, errlen, "block: close chunks in", w->tmpdir);
    goto out;
  }
  w->fd = -1;
  uint32_t ntenants = 0;
  if ((rc = build_payload(w, &pl, &ntenants))) {
    rc = md_error(err, errlen, rc, "out of memory");
    goto out;
  }
  size_t bound = ZSTD_compressBound(pl.len);
  if (!sb_reserve(&z, bound)) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  size_t zn = ZSTD_compressCCtx(w->zc, z.buf, bound, pl.buf, pl.len, INDEX_ZSTD_LEVEL);
  uint8_t codec = BLOCK_CODEC_ZSTD;
  const void *stored = z.buf;
  if (ZSTD_isError(zn) || zn >= pl.len) {
    codec = BLOCK_CODEC_RAW;
    stored = pl.buf;
    zn = pl.len;
  }
  uint8_t hdr[BLOCK_INDEX_HEADER] = {0};
  block_put_u32(hdr, BLOCK_INDEX_MAGIC);
  hdr[4] = BLOCK_FORMAT_VERSION;
  hdr[5] = codec;
  block_put_u64(hdr + 8, pl.len);
  block_put_u64(hdr + 16, zn);
  uint8_t tail[4];
  block_put_u32(tail, md_crc32c(md_crc32c(0, hdr, sizeof hdr), stored, zn));
  snprintf(path, sizeof path, "%s/index", w->tmpdir);
  if ((rc = write_file(path, hdr, sizeof hdr, stored, zn, tail, sizeof tail, err, errlen))) goto out;

  json_t *j = json_pack("{s:i, s:I, s:I, s:i, s:I, s:I, s:{s:i, s:I, s:I, s:I, s:i}}", "version",
                        BLOCK_FORMAT_VERSION, "mint", (json_int_t)w->mint, "maxt", (json_int_t)w->maxt,
                        "level", w->level, "resolution_ms", (json_int_t)w->res, "seq", (json_int_t)w->seq,
                        "stats", "tenants", (int)ntenants, "series", (json_int_t)w->nseries, "samples",
                        (json_int_t)w->nsamples, "chunks", (json_int_t)w->nchunks, "frames", (int)w->nframes);
  if (j) {
    meta = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
  }
  if (!meta) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(path, sizeof path, "%s/meta.json", w->tmpdir);
  if ((rc = write_file(path, meta, strlen(meta), NULL, 0, NULL, 0, err, errlen))) goto out;
  if (md_fsync_dir(w->tmpdir) != 0) {
    rc = io_error(err, errlen, "block: fsync", w->tmpdir);
    goto out;
  }
  snprintf(path, sizeof path, "%s/%s", w->parent, w->name);
  if (rename(w->tmpdir, path) != 0) {
    rc = io_error(err, errlen, "block: rename", w->tmpdir);
    goto out;
  }
  w->tmpdir[0] = 0; /* nothing to clean up any more */
  if (md_fsync_dir(w->parent) != 0) {
    rc = io_error(err, errlen, "block: fsync", w->parent);
    goto out;
  }
  if (name && name_len) snprintf(name, name_len, "%s", w->name);
  rc = 0;
out:
  sb_free(&pl);
  sb_free(&z);
  free(meta);
  block_writer_abort(w);
  return rc;
}

int block_write(const char *parent_dir, int64_t mint, int64_t maxt, int level, int64_t resolution_ms,
                block_source_t *src, char *name, size_t name_len, char *err, size_t errlen) {
  if (resolution_ms != 0)
    return md_error(err, errlen, MD_EINVAL, "block_write: raw samples only (rollups come from block_downsample)");
  block_writer_t *w;
  int rc = block_writer_new(parent_dir, mint, maxt, level, 0, 0, &w, err, errlen);
  if (rc) return rc;
  for (;;) {
    const char *tenant;
    const tsdb_label_t *labels;
    size_t nlabels, n;
    const int64_t *ts;
    const double *v;
    rc = src->next(src->ctx, &tenant, &labels, &nlabels, &ts, &v, &n);
    if (rc == 0) break;
    if (rc < 0) {
      md_error(err, errlen, rc, "block_write: source failed (%d)", rc);
      block_writer_abort(w);
      return rc;
    }
    rc = block_writer_add(w, tenant, labels, nlabels, ts, &v, n, err, errlen);
    if (rc) {
      block_writer_abort(w);
      return rc;
    }
  }
  return block_writer_finish(w, name, name_len, err, errlen);
}
