/*
 * block — opening and reading immutable blocks (contract in block.h, bytes in
 * docs/storage-format.md; the writer is block_writer.c).
 *
 * block_open reads meta.json, reads and verifies the index (CRC32C over header and stored
 * bytes), decompresses it into one heap buffer and validates all of it once: every symbol
 * reference, count, order, chunk time range and frame offset is checked against the sizes
 * it refers to, and the chunk file's frame headers are walked and must end exactly at the
 * file's end. After that the parsed index is trusted (it lives in private memory); chunk
 * data stays in the mmap'ed chunks file and each frame's CRC is verified whenever a reader
 * loads it, so damage there surfaces as MD_ECORRUPT from block_iter_next/samples.
 *
 * Selection uses one bitmap of the tenant's series per query: each matcher's postings are
 * OR'ed (or, for matchers that accept the empty value, cleared) into it, so the result comes
 * out in series order, which is label-set order.
 *
 * Threading: block_t is immutable after open; the refcount and deleted flag are atomics.
 * Iterators and frame caches are per thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "block_internal.h"
#include "chunk.h"
#include "core/core.h"

typedef struct {
  uint32_t sym, npost, off; /* postings: npost uvarints at payload offset off */
} bvalue_t;

typedef struct {
  uint32_t sym, nvalues;
  bvalue_t *values;
} bname_t;

typedef struct {
  uint32_t sym, nseries;
  uint32_t *soff;   /* payload offset of each series record */
  uint32_t *sframe; /* frame holding the series' chunks */
  uint32_t *sfoff;  /* offset of its first chunk in the frame's raw bytes */
  uint32_t nnames;
  bname_t *names;
  bvalue_t *values;
} btenant_t;

typedef struct {
  uint64_t off; /* of the frame header in the chunks file */
  uint32_t stored, raw;
  uint8_t codec;
} bframe_t;

struct block {
  atomic_int refs;
  atomic_bool deleted;
  atomic_bool damaged; /* a read failed a check: the database quarantines the block */
  char *path;
  int64_t mint, maxt, res;
  int level, parts;
  uint64_t seq, nseries, nsamples, nchunks, bytes;
  uint8_t *payload;
  size_t plen;
  char *symblob; /* NUL-terminated copies of the symbols */
  uint32_t *symoff;
  uint32_t nsyms;
  btenant_t *tenants;
  uint32_t ntenants;
  uint8_t *cmap;
  size_t clen;
  bframe_t *frames;
  uint32_t nframes;
  /* Decompression contexts kept for reuse: creating one costs more than decompressing a
   * frame, and point queries need one each. Taken and returned with atomic exchanges. */
  _Atomic(ZSTD_DCtx *) dctx_pool[4];
};

typedef struct {
  int64_t mint, maxt;
  uint32_t off; /* in the frame's raw bytes */
  uint32_t len[BLOCK_ROLLUP_PARTS];
} bchunk_t;

/* One loaded frame per reader: a point query touches one frame per series and series are
 * visited in frame order, so a single slot gets nearly every hit. */
typedef struct {
  uint32_t idx;
  bool valid;
  const uint8_t *data;
  uint8_t *buf;
  size_t cap;
  ZSTD_DCtx *dctx;
} fcache_t;

struct block_iter {
  block_t *b;
  const btenant_t *t;
  uint64_t *bits;
  uint32_t pos, cur;
  int64_t mint, maxt;
  tsdb_label_t labels[BLOCK_MAX_LABELS];
  size_t nlabels;
  bchunk_t *chunks;
  size_t nchunks, capchunks;
  fcache_t fc;
  int64_t *ts, *dts;
  double *v, *dv;
  size_t cap, dcap;
};

static inline const char *sym(const block_t *b, uint32_t id) { return b->symblob + b->symoff[id]; }

/* ---- open ----------------------------------------------------------------------------- */

#define CORRUPT(...) md_error(err, errlen, MD_ECORRUPT, __VA_ARGS__)

static int read_meta(block_t *b, json_t **out, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/meta.json", b->path);
  char *text = NULL;
  size_t len = 0;
  int rc = md_read_file(path, &text, &len);
  if (rc == MD_ENOTFOUND) return CORRUPT("block %s: meta.json missing", b->path);
  if (rc) return md_error(err, errlen, rc, "block %s: cannot read meta.json", b->path);
  b->bytes += len;
  json_error_t je;
  json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  free(text);
  if (!j || !json_is_object(j)) {
    json_decref(j);
    return CORRUPT("block %s: meta.json is not a JSON object", b->path);
  }
  json_t *ver = json_object_get(j, "version");
  if (!json_is_integer(ver) || json_integer_value(ver) != BLOCK_FORMAT_VERSION) {
    json_decref(j);
    return CORRUPT("block %s: unknown format version", b->path);
  }
  *out = j;
  return 0;
}

static bool meta_int(json_t *obj, const char *key, int64_t want) {
  json_t *v = json_object_get(obj, key);
  return json_is_integer(v) && json_integer_value(v) == want;
}

/* The meta file repeats what the index says (for people and tools); both must agree. */
static int check_meta(block_t *b, json_t *j, uint32_t ntenants, char *err, size_t errlen) {
  json_t *st = json_object_get(j, "stats");
  if (!meta_int(j, "mint", b->mint) || !meta_int(j, "maxt", b->maxt) || !meta_int(j, "level", b->level) ||
      !meta_int(j, "resolution_ms", b->res) || !meta_int(j, "seq", (int64_t)b->seq) || !json_is_object(st) ||
      !meta_int(st, "tenants", ntenants) || !meta_int(st, "series", (int64_t)b->nseries) ||
      !meta_int(st, "samples", (int64_t)b->nsamples) || !meta_int(st, "chunks", (int64_t)b->nchunks) ||
      !meta_int(st, "frames", b->nframes))
    return CORRUPT("block %s: meta.json disagrees with the index", b->path);
  return 0;
}

static int load_index(block_t *b, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/index", b->path);
  char *file = NULL;
  size_t len = 0;
  int rc = md_read_file(path, &file, &len);
  if (rc == MD_ENOTFOUND) return CORRUPT("block %s: index missing", b->path);
  if (rc) return md_error(err, errlen, rc, "block %s: cannot read index", b->path);
  b->bytes += len;
  const uint8_t *p = (const uint8_t *)file;
  if (len < BLOCK_INDEX_HEADER + 4 || block_get_u32(p) != BLOCK_INDEX_MAGIC || p[4] != BLOCK_FORMAT_VERSION) {
    rc = CORRUPT("block %s: index header invalid", b->path);
    goto out;
  }
  uint8_t codec = p[5];
  uint64_t raw = block_get_u64(p + 8), stored = block_get_u64(p + 16);
  if (stored != len - BLOCK_INDEX_HEADER - 4 || raw > UINT32_MAX ||
      (codec != BLOCK_CODEC_RAW && codec != BLOCK_CODEC_ZSTD) || (codec == BLOCK_CODEC_RAW && raw != stored)) {
    rc = CORRUPT("block %s: index sizes do not match the file (%zu bytes)", b->path, len);
    goto out;
  }
  if (md_crc32c(0, p, len - 4) != block_get_u32(p + len - 4)) {
    rc = CORRUPT("block %s: index checksum mismatch", b->path);
    goto out;
  }
  b->payload = malloc(raw ? raw : 1);
  if (!b->payload) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  if (codec == BLOCK_CODEC_RAW) {
    memcpy(b->payload, p + BLOCK_INDEX_HEADER, raw);
  } else {
    size_t d = ZSTD_decompress(b->payload, raw, p + BLOCK_INDEX_HEADER, stored);
    if (ZSTD_isError(d) || d != raw) {
      rc = CORRUPT("block %s: index does not decompress", b->path);
      goto out;
    }
  }
  b->plen = raw;
  rc = 0;
out:
  free(file);
  return rc;
}

static int load_chunks(block_t *b, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/chunks", b->path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return CORRUPT("block %s: chunks missing", b->path);
    return md_error(err, errlen, MD_EIO, "block %s: open chunks: %s", b->path, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return md_error(err, errlen, MD_EIO, "block %s: stat chunks: %s", b->path, strerror(errno));
  }
  b->clen = (size_t)st.st_size;
  b->bytes += b->clen;
  if (b->clen < BLOCK_CHUNKS_HEADER) {
    close(fd);
    return CORRUPT("block %s: chunks file truncated", b->path);
  }
  void *m = mmap(NULL, b->clen, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return md_error(err, errlen, MD_EIO, "block %s: mmap chunks: %s", b->path, strerror(errno));
  b->cmap = m;
  if (block_get_u32(b->cmap) != BLOCK_CHUNKS_MAGIC || b->cmap[4] != BLOCK_FORMAT_VERSION || b->cmap[5] || b->cmap[6] ||
      b->cmap[7])
    return CORRUPT("block %s: chunks header invalid", b->path);
  /* nframes comes from the (checksummed) index; each header needs 13 bytes. */
  if (b->nframes > (b->clen - BLOCK_CHUNKS_HEADER) / BLOCK_FRAME_HEADER)
    return CORRUPT("block %s: chunks file too short for %u frames", b->path, b->nframes);
  b->frames = calloc(b->nframes ? b->nframes : 1, sizeof *b->frames);
  if (!b->frames) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  uint64_t off = BLOCK_CHUNKS_HEADER;
  for (uint32_t i = 0; i < b->nframes; i++) {
    if (b->clen - off < BLOCK_FRAME_HEADER) return CORRUPT("block %s: chunks truncated at frame %u", b->path, i);
    const uint8_t *h = b->cmap + off;
    bframe_t *f = &b->frames[i];
    f->codec = h[0];
    f->stored = block_get_u32(h + 1);
    f->raw = block_get_u32(h + 5);
    f->off = off;
    if ((f->codec != BLOCK_CODEC_RAW && f->codec != BLOCK_CODEC_ZSTD) || f->raw > BLOCK_FRAME_MAX ||
        (f->codec == BLOCK_CODEC_RAW && f->raw != f->stored) || f->stored > b->clen - off - BLOCK_FRAME_HEADER)
      return CORRUPT("block %s: frame %u header invalid", b->path, i);
    off += BLOCK_FRAME_HEADER + (uint64_t)f->stored;
  }
  if (off != b->clen) return CORRUPT("block %s: chunks file has %zu bytes, frames end at %llu", b->path, b->clen,
                                     (unsigned long long)off);
  return 0;
}

/* Counts read from disk bound allocations: each element takes at least one byte. */
static bool count_ok(const block_rd_t *r, uint64_t n) { return !r->bad && n <= (uint64_t)(r->end - r->p); }

static int parse_symbols(block_t *b, block_rd_t *r, char *err, size_t errlen) {
  uint64_t n = block_rd_uvarint(r);
  if (!count_ok(r, n)) return CORRUPT("block %s: symbol count", b->path);
  b->nsyms = (uint32_t)n;
  b->symoff = malloc((n ? n : 1) * sizeof *b->symoff);
  /* every symbol's bytes + NUL fit in the payload size + n */
  b->symblob = malloc((size_t)(r->end - r->p) + n + 1);
  if (!b->symoff || !b->symblob) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  size_t at = 0;
  const uint8_t *prev = NULL;
  size_t prevlen = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t l = block_rd_uvarint(r);
    if (r->bad || l > (uint64_t)(r->end - r->p)) return CORRUPT("block %s: symbol %llu overruns", b->path,
                                                               (unsigned long long)i);
    const uint8_t *s = r->p;
    if (memchr(s, 0, l)) return CORRUPT("block %s: symbol with NUL byte", b->path);
    if (prev) {
      size_t m = prevlen < l ? prevlen : l;
      int c = memcmp(prev, s, m);
      if (c > 0 || (c == 0 && prevlen >= l)) return CORRUPT("block %s: symbols not sorted", b->path);
    }
    memcpy(b->symblob + at, s, l);
    b->symblob[at + l] = 0;
    b->symoff[i] = (uint32_t)at;
    at += l + 1;
    prev = s;
    prevlen = l;
    r->p += l;
  }
  return 0;
}

static int parse_tenant(block_t *b, btenant_t *t, block_rd_t *r, uint32_t *frame, uint32_t *fend,
                        uint64_t *series_total, uint64_t *chunks_total, char *err, size_t errlen) {
  const uint8_t *base = b->payload;
  uint64_t n = block_rd_uvarint(r);
  if (!count_ok(r, n) || n == 0 || n > UINT32_MAX) return CORRUPT("block %s: series count", b->path);
  t->nseries = (uint32_t)n;
  t->soff = malloc(n * sizeof *t->soff);
  t->sframe = malloc(n * sizeof *t->sframe);
  t->sfoff = malloc(n * sizeof *t->sfoff);
  if (!t->soff || !t->sframe || !t->sfoff) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  for (uint32_t s = 0; s < t->nseries; s++) {
    t->soff[s] = (uint32_t)(r->p - base);
    uint64_t nl = block_rd_uvarint(r);
    if (r->bad || nl > BLOCK_MAX_LABELS) return CORRUPT("block %s: label count", b->path);
    uint64_t prevname = 0;
    for (uint64_t k = 0; k < nl; k++) {
      uint64_t nm = block_rd_uvarint(r), v = block_rd_uvarint(r);
      if (r->bad || nm >= b->nsyms || v >= b->nsyms || (k && nm <= prevname))
        return CORRUPT("block %s: series label refs", b->path);
      prevname = nm;
    }
    uint64_t fd = block_rd_uvarint(r);
    if (r->bad || b->nframes == 0 || fd >= (uint64_t)(b->nframes - *frame))
      return CORRUPT("block %s: series frame ref", b->path);
    if (fd) {
      *frame += (uint32_t)fd;
      *fend = 0;
    }
    t->sframe[s] = *frame;
    t->sfoff[s] = *fend;
    uint64_t nc = block_rd_uvarint(r);
    if (!count_ok(r, nc) || nc == 0) return CORRUPT("block %s: chunk count", b->path);
    int64_t prev = b->mint;
    uint64_t end = *fend;
    for (uint64_t k = 0; k < nc; k++) {
      uint64_t zd = block_rd_uvarint(r), span = block_rd_uvarint(r);
      int64_t d = block_unzigzag(zd);
      /* chunks ascend, do not overlap, and stay inside the block's range */
      if (r->bad || (k ? d <= 0 : d < 0) || d > b->maxt - prev || span > (uint64_t)(b->maxt - prev - d))
        return CORRUPT("block %s: chunk time range", b->path);
      prev = prev + d + (int64_t)span;
      for (int p = 0; p < b->parts; p++) {
        uint64_t l = block_rd_uvarint(r);
        if (r->bad || l == 0 || l > BLOCK_FRAME_MAX) return CORRUPT("block %s: chunk length", b->path);
        end += l;
      }
    }
    if (end > b->frames[*frame].raw) return CORRUPT("block %s: chunks overrun frame %u", b->path, *frame);
    *fend = (uint32_t)end;
    *chunks_total += nc;
  }
  *series_total += n;
  uint64_t nn = block_rd_uvarint(r);
  if (!count_ok(r, nn)) return CORRUPT("block %s: label name count", b->path);
  t->nnames = (uint32_t)nn;
  t->names = calloc(nn ? nn : 1, sizeof *t->names);
  /* values: at least 2 bytes each, so their count is bounded by the bytes left */
  t->values = malloc(((size_t)(r->end - r->p) / 2 + 1) * sizeof *t->values);
  if (!t->names || !t->values) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  size_t vused = 0, vmax = (size_t)(r->end - r->p) / 2 + 1;
  for (uint32_t i = 0; i < t->nnames; i++) {
    bname_t *nm = &t->names[i];
    uint64_t s = block_rd_uvarint(r), nv = block_rd_uvarint(r);
    if (r->bad || s >= b->nsyms || (i && s <= t->names[i - 1].sym) || nv == 0 || nv > vmax - vused)
      return CORRUPT("block %s: label index names", b->path);
    nm->sym = (uint32_t)s;
    nm->nvalues = (uint32_t)nv;
    nm->values = t->values + vused;
    vused += nv;
    for (uint32_t k = 0; k < nm->nvalues; k++) {
      bvalue_t *v = &nm->values[k];
      uint64_t vs = block_rd_uvarint(r), np = block_rd_uvarint(r);
      if (r->bad || vs >= b->nsyms || (k && vs <= nm->values[k - 1].sym) || np == 0 || np > t->nseries ||
          !count_ok(r, np))
        return CORRUPT("block %s: label index values", b->path);
      v->sym = (uint32_t)vs;
      v->npost = (uint32_t)np;
      v->off = (uint32_t)(r->p - base);
      uint64_t last = 0;
      for (uint64_t q = 0; q < np; q++) {
        uint64_t d = block_rd_uvarint(r);
        uint64_t id = q ? last + 1 + d : d;
        if (r->bad || d >= t->nseries || id >= t->nseries) return CORRUPT("block %s: postings", b->path);
        last = id;
      }
    }
  }
  return 0;
}

/* Parses the index header fields and the symbol table; r is left at the tenants. */
static int parse_index(block_t *b, block_rd_t *r, char *err, size_t errlen) {
  if (b->plen > UINT32_MAX) return CORRUPT("block %s: index too large", b->path);
  b->mint = block_rd_varint(r);
  b->maxt = block_rd_varint(r);
  uint64_t level = block_rd_uvarint(r), res = block_rd_uvarint(r);
  b->seq = block_rd_uvarint(r);
  uint64_t nframes = block_rd_uvarint(r);
  b->nseries = block_rd_uvarint(r);
  b->nchunks = block_rd_uvarint(r);
  b->nsamples = block_rd_uvarint(r);
  if (r->bad || b->mint > b->maxt || level > 1000 || res > INT64_MAX / 1024 || nframes > UINT32_MAX ||
      b->seq > INT64_MAX || b->nsamples > INT64_MAX || b->nseries > INT64_MAX || b->nchunks > INT64_MAX)
    return CORRUPT("block %s: index header fields", b->path);
  b->level = (int)level;
  b->res = (int64_t)res;
  b->parts = b->res > 0 ? BLOCK_ROLLUP_PARTS : 1;
  b->nframes = (uint32_t)nframes;
  return parse_symbols(b, r, err, errlen);
}

static int parse_tenants(block_t *b, block_rd_t *r, uint32_t *ntenants_out, char *err, size_t errlen) {
  uint64_t nt = block_rd_uvarint(r);
  if (!count_ok(r, nt)) return CORRUPT("block %s: tenant count", b->path);
  b->ntenants = (uint32_t)nt;
  *ntenants_out = b->ntenants;
  b->tenants = calloc(nt ? nt : 1, sizeof *b->tenants);
  if (!b->tenants) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  uint32_t frame = 0, fend = 0;
  uint64_t series = 0, chunks = 0;
  for (uint32_t i = 0; i < b->ntenants; i++) {
    uint64_t s = block_rd_uvarint(r);
    if (r->bad || s >= b->nsyms || (i && s <= b->tenants[i - 1].sym)) return CORRUPT("block %s: tenant ref", b->path);
    b->tenants[i].sym = (uint32_t)s;
    int rc = parse_tenant(b, &b->tenants[i], r, &frame, &fend, &series, &chunks, err, errlen);
    if (rc) return rc;
  }
  if (r->p != r->end) return CORRUPT("block %s: trailing bytes in index", b->path);
  if (series != b->nseries || chunks != b->nchunks) return CORRUPT("block %s: index totals disagree", b->path);
  return 0;
}

static void block_free(block_t *b) {
  if (!b) return;
  for (uint32_t i = 0; b->tenants && i < b->ntenants; i++) {
    btenant_t *t = &b->tenants[i];
    free(t->soff);
    free(t->sframe);
    free(t->sfoff);
    free(t->names);
    free(t->values);
  }
  free(b->tenants);
  for (int i = 0; i < 4; i++) ZSTD_freeDCtx(atomic_load(&b->dctx_pool[i]));
  if (b->cmap) munmap(b->cmap, b->clen);
  free(b->frames);
  free(b->payload);
  free(b->symblob);
  free(b->symoff);
  free(b->path);
  free(b);
}

int block_open(const char *path, block_t **out, char *err, size_t errlen) {
  block_t *b = calloc(1, sizeof *b);
  if (!b) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  atomic_init(&b->refs, 1);
  atomic_init(&b->deleted, false);
  atomic_init(&b->damaged, false);
  json_t *meta = NULL;
  int rc;
  b->path = strdup(path);
  if (!b->path) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = read_meta(b, &meta, err, errlen))) goto fail;
  if ((rc = load_index(b, err, errlen))) goto fail;
  uint32_t ntenants = 0;
  block_rd_t r = {b->payload, b->payload + b->plen, 0};
  if ((rc = parse_index(b, &r, err, errlen))) goto fail;
  /* series records point into frames, so the frame table comes before the tenants */
  if ((rc = load_chunks(b, err, errlen))) goto fail;
  if ((rc = parse_tenants(b, &r, &ntenants, err, errlen))) goto fail;
  if ((rc = check_meta(b, meta, ntenants, err, errlen))) goto fail;
  json_decref(meta);
  *out = b;
  return 0;
fail:
  json_decref(meta);
  block_free(b);
  return rc;
}

void block_ref(block_t *b) { atomic_fetch_add(&b->refs, 1); }

void block_unref(block_t *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  if (atomic_load(&b->deleted) && md_rm_rf(b->path) != 0) log_warn("block: cannot remove %s", b->path);
  block_free(b);
}

void block_mark_deleted(block_t *b) { atomic_store(&b->deleted, true); }
bool block_is_damaged(const block_t *b) { return atomic_load(&b->damaged); }

/* Passes rc through, remembering damage found while reading (the block is immutable, so
 * a failed check will fail again: the block must go, not be retried). */
static int note_damage(const block_t *b, int rc) {
  if (rc == MD_ECORRUPT && !atomic_exchange(&((block_t *)b)->damaged, true))
    log_error("block %s: damaged chunk data found while reading", b->path);
  return rc;
}
int64_t block_mint(const block_t *b) { return b->mint; }
int64_t block_maxt(const block_t *b) { return b->maxt; }
int block_level(const block_t *b) { return b->level; }
int64_t block_resolution(const block_t *b) { return b->res; }
uint64_t block_bytes(const block_t *b) { return b->bytes; }
uint64_t block_samples(const block_t *b) { return b->nsamples; }
uint64_t block_series(const block_t *b) { return b->nseries; }
const char *block_path(const block_t *b) { return b->path; }
uint64_t block_seq(const block_t *b) { return b->seq; }
int block_parts(const block_t *b) { return b->parts; }
size_t block_tenant_count(const block_t *b) { return b->ntenants; }
const char *block_tenant_name(const block_t *b, size_t t) { return sym(b, b->tenants[t].sym); }
size_t block_tenant_series(const block_t *b, size_t t) { return b->tenants[t].nseries; }

/* ---- series records and frames ------------------------------------------------------- */

/* Parses series s of tenant t: labels into lab (may be NULL), chunk descriptors into a
 * growable array. The record was validated at open. */
static int parse_series(const block_t *b, const btenant_t *t, uint32_t s, tsdb_label_t *lab, size_t *nlab,
                        bchunk_t **chunks, size_t *nchunks, size_t *cap) {
  block_rd_t r = {b->payload + t->soff[s], b->payload + b->plen, 0};
  uint64_t nl = block_rd_uvarint(&r);
  if (nl > BLOCK_MAX_LABELS) return MD_ECORRUPT;
  for (uint64_t k = 0; k < nl; k++) {
    uint64_t n = block_rd_uvarint(&r), v = block_rd_uvarint(&r);
    if (r.bad || n >= b->nsyms || v >= b->nsyms) return MD_ECORRUPT;
    if (lab) {
      lab[k].name = sym(b, (uint32_t)n);
      lab[k].value = sym(b, (uint32_t)v);
    }
  }
  if (nlab) *nlab = (size_t)nl;
  if (!chunks) return r.bad ? MD_ECORRUPT : 0;
  block_rd_uvarint(&r); /* frame delta: resolved at open into sframe/sfoff */
  uint64_t nc = block_rd_uvarint(&r);
  if (r.bad || nc > (uint64_t)(r.end - r.p)) return MD_ECORRUPT;
  if (nc > *cap) {
    bchunk_t *n = realloc(*chunks, nc * sizeof *n);
    if (!n) return MD_ENOMEM;
    *chunks = n;
    *cap = nc;
  }
  int64_t prev = b->mint;
  uint32_t off = t->sfoff[s];
  for (uint64_t k = 0; k < nc; k++) {
    bchunk_t *c = &(*chunks)[k];
    c->mint = prev + block_rd_varint(&r);
    c->maxt = c->mint + (int64_t)block_rd_uvarint(&r);
    prev = c->maxt;
    c->off = off;
    for (int p = 0; p < b->parts; p++) {
      c->len[p] = (uint32_t)block_rd_uvarint(&r);
      off += c->len[p];
    }
  }
  *nchunks = (size_t)nc;
  return r.bad ? MD_ECORRUPT : 0;
}

static ZSTD_DCtx *dctx_take(block_t *b) {
  for (int i = 0; i < 4; i++) {
    ZSTD_DCtx *d = atomic_exchange(&b->dctx_pool[i], NULL);
    if (d) return d;
  }
  return ZSTD_createDCtx();
}

static void dctx_give(block_t *b, ZSTD_DCtx *d) {
  if (!d) return;
  for (int i = 0; i < 4; i++) {
    ZSTD_DCtx *expected = NULL;
    if (atomic_compare_exchange_strong(&b->dctx_pool[i], &expected, d)) return;
  }
  ZSTD_freeDCtx(d);
}

static void fcache_free(const block_t *b, fcache_t *fc) {
  free(fc->buf);
  dctx_give((block_t *)b, fc->dctx);
}

/* Loads frame i (verifying its checksum) and returns its raw bytes. */
static int frame_load(const block_t *b, fcache_t *fc, uint32_t i, const uint8_t **out) {
  if (fc->valid && fc->idx == i) {
    *out = fc->data;
    return 0;
  }
  fc->valid = false;
  if (i >= b->nframes) return MD_ECORRUPT;
  const bframe_t *f = &b->frames[i];
  const uint8_t *h = b->cmap + f->off;
  uint32_t crc = md_crc32c(0, h, 9);
  crc = md_crc32c(crc, h + BLOCK_FRAME_HEADER, f->stored);
  if (crc != block_get_u32(h + 9)) {
    log_warn("block %s: frame %u checksum mismatch", b->path, i);
    return MD_ECORRUPT;
  }
  if (f->codec == BLOCK_CODEC_RAW) {
    fc->data = h + BLOCK_FRAME_HEADER;
  } else {
    if (fc->cap < f->raw) {
      uint8_t *nb = realloc(fc->buf, f->raw);
      if (!nb) return MD_ENOMEM;
      fc->buf = nb;
      fc->cap = f->raw;
    }
    if (!fc->dctx && !(fc->dctx = dctx_take((block_t *)b))) return MD_ENOMEM;
    size_t d = ZSTD_decompressDCtx(fc->dctx, fc->buf, f->raw, h + BLOCK_FRAME_HEADER, f->stored);
    if (ZSTD_isError(d) || d != f->raw) return MD_ECORRUPT;
    fc->data = fc->buf;
  }
  fc->idx = i;
  fc->valid = true;
  *out = fc->data;
  return 0;
}

static int grow2(int64_t **ts, double **v, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t nc = *cap ? *cap : 256;
  while (nc < need) nc *= 2;
  int64_t *nt = realloc(*ts, nc * sizeof *nt);
  if (!nt) return MD_ENOMEM;
  *ts = nt;
  double *nv = realloc(*v, nc * sizeof *nv);
  if (!nv) return MD_ENOMEM;
  *v = nv;
  *cap = nc;
  return 0;
}

/* Decodes one part of a chunk into (*ts, *v) (grown as needed); checks the samples agree
 * with the chunk's recorded range. Returns the count or a negative code. */
static int decode_chunk(const uint8_t *frame, const bchunk_t *c, int part, int64_t **ts, double **v, size_t *cap) {
  uint32_t off = c->off;
  for (int p = 0; p < part; p++) off += c->len[p];
  const uint8_t *p = frame + off;
  int n = chunk_count(p, c->len[part]);
  if (n <= 0) return MD_ECORRUPT;
  int rc = grow2(ts, v, cap, (size_t)n);
  if (rc) return rc;
  int got = chunk_decode(p, c->len[part], *ts, *v, *cap);
  if (got != n || (*ts)[0] != c->mint || (*ts)[n - 1] != c->maxt) return MD_ECORRUPT;
  return n;
}

/* ---- select -------------------------------------------------------------------------- */

static const btenant_t *find_tenant(const block_t *b, const char *tenant) {
  size_t lo = 0, hi = b->ntenants;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(sym(b, b->tenants[mid].sym), tenant);
    if (c == 0) return &b->tenants[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* Symbols sort like the strings, so name and value arrays (sorted by symbol) are also in
 * string order and can be searched by string. */
static int cmp_sym_str(const block_t *b, uint32_t id, const char *s, size_t n) {
  const char *x = sym(b, id);
  size_t xl = strlen(x);
  int c = memcmp(x, s, xl < n ? xl : n);
  if (c) return c;
  return xl < n ? -1 : xl > n;
}

static const bname_t *find_name(const block_t *b, const btenant_t *t, const char *name) {
  size_t lo = 0, hi = t->nnames, n = strlen(name);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_sym_str(b, t->names[mid].sym, name, n);
    if (c == 0) return &t->names[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static long find_value(const block_t *b, const bname_t *nm, const char *v, size_t n) {
  size_t lo = 0, hi = nm->nvalues;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_sym_str(b, nm->values[mid].sym, v, n);
    if (c == 0) return (long)mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

static bool matcher_match(const tsdb_matcher_t *m, const core_regex_t *re, const char *s) {
  switch (m->type) {
  case TSDB_MATCH_EQ: return strcmp(m->value, s) == 0;
  case TSDB_MATCH_NEQ: return strcmp(m->value, s) != 0;
  case TSDB_MATCH_RE: return core_regex_match(re, s, strlen(s));
  case TSDB_MATCH_NRE: return !core_regex_match(re, s, strlen(s));
  }
  return false;
}

/* OR (set=true) or clear (set=false) the postings of one value into bits. */
static void apply_postings(const block_t *b, const bvalue_t *v, uint64_t *bits, bool set) {
  block_rd_t r = {b->payload + v->off, b->payload + b->plen, 0};
  uint64_t id = 0;
  for (uint32_t q = 0; q < v->npost; q++) {
    uint64_t d = block_rd_uvarint(&r);
    id = q ? id + 1 + d : d;
    if (set) bits[id >> 6] |= 1ULL << (id & 63);
    else bits[id >> 6] &= ~(1ULL << (id & 63));
  }
}

/* Narrows sel (bitmap of the tenant's series) to the series the matcher accepts. */
static int apply_matcher(const block_t *b, const btenant_t *t, const tsdb_matcher_t *m, uint64_t *sel,
                         uint64_t *tmp, size_t nwords, char *err, size_t errlen) {
  core_regex_t *re = NULL;
  if (m->type == TSDB_MATCH_RE || m->type == TSDB_MATCH_NRE) {
    int rc = core_regex_compile(m->value, strlen(m->value), &re, err, errlen);
    if (rc) return md_error(err, errlen, MD_EINVAL, "bad regex in matcher for '%s': %s", m->name, err ? err : "");
  }
  /* Prometheus: a matcher that accepts "" also accepts series without the label. Then the
   * series to drop are those whose value does not match; otherwise keep those whose does. */
  bool empty_ok = matcher_match(m, re, "");
  const bname_t *nm = find_name(b, t, m->name);
  if (!nm) {
    if (!empty_ok) memset(sel, 0, nwords * 8);
    core_regex_free(re);
    return 0;
  }
  bool set = !empty_ok; /* visiting matching values (set) or non-matching ones (clear) */
  if (set) memset(tmp, 0, nwords * 8);
  uint64_t *target = set ? tmp : sel;
  /* Set lookups instead of a scan when the accepted (or rejected) values are a literal list. */
  const char *const *lits = NULL;
  const size_t *lens = NULL;
  size_t nlits = 0;
  bool negate = false;
  const char *one = m->value;
  size_t onelen = strlen(m->value);
  if (m->type == TSDB_MATCH_EQ || m->type == TSDB_MATCH_NEQ) {
    lits = &one;
    lens = &onelen;
    nlits = 1;
    negate = m->type == TSDB_MATCH_NEQ;
  } else {
    nlits = core_regex_literals(re, &lits, &lens);
    negate = m->type == TSDB_MATCH_NRE;
  }
  if (nlits && set != negate) {
    /* the wanted values are exactly the literals present */
    for (size_t i = 0; i < nlits; i++) {
      long k = find_value(b, nm, lits[i], lens[i]);
      if (k >= 0) apply_postings(b, &nm->values[k], target, set);
    }
  } else {
    for (uint32_t k = 0; k < nm->nvalues; k++) {
      if (matcher_match(m, re, sym(b, nm->values[k].sym)) == set) apply_postings(b, &nm->values[k], target, set);
    }
  }
  if (set)
    for (size_t i = 0; i < nwords; i++) sel[i] &= tmp[i];
  core_regex_free(re);
  return 0;
}

int block_select(block_t *b, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                 block_iter_t **out, char *err, size_t errlen) {
  block_iter_t *it = calloc(1, sizeof *it);
  if (!it) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  block_ref(b);
  it->b = b;
  it->mint = mint;
  it->maxt = maxt;
  it->cur = UINT32_MAX;
  uint64_t *tmp = NULL;
  int rc = 0;
  const btenant_t *t = find_tenant(b, tenant);
  if (!t || mint > maxt || maxt < b->mint || mint > b->maxt) {
    /* still validate regexes so a bad one is reported whatever the data */
    for (size_t i = 0; i < nm; i++) {
      if (m[i].type != TSDB_MATCH_RE && m[i].type != TSDB_MATCH_NRE) continue;
      core_regex_t *re;
      if ((rc = core_regex_compile(m[i].value, strlen(m[i].value), &re, err, errlen))) {
        rc = MD_EINVAL;
        goto fail;
      }
      core_regex_free(re);
    }
    *out = it;
    return 0;
  }
  it->t = t;
  size_t nwords = (t->nseries + 63) / 64;
  it->bits = malloc(nwords * 8);
  tmp = malloc(nwords * 8);
  if (!it->bits || !tmp) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  memset(it->bits, 0xff, nwords * 8);
  if (t->nseries % 64) it->bits[nwords - 1] = (1ULL << (t->nseries % 64)) - 1;
  for (size_t i = 0; i < nm; i++) {
    if ((rc = apply_matcher(b, t, &m[i], it->bits, tmp, nwords, err, errlen))) goto fail;
  }
  free(tmp);
  *out = it;
  return 0;
fail:
  free(tmp);
  block_iter_free(it);
  return rc;
}

/* Is there a sample of the current series in [it->mint, it->maxt]? Chunk bounds are real
 * sample timestamps, so only a chunk that straddles the whole range needs decoding. */
static int series_in_range(block_iter_t *it, const uint8_t **frame) {
  for (size_t k = 0; k < it->nchunks; k++) {
    const bchunk_t *c = &it->chunks[k];
    if (c->maxt < it->mint || c->mint > it->maxt) continue;
    if (c->mint >= it->mint || c->maxt <= it->maxt) return 1;
    if (!*frame) {
      int rc = frame_load(it->b, &it->fc, it->t->sframe[it->cur], frame);
      if (rc) return rc;
    }
    int n = decode_chunk(*frame, c, 0, &it->dts, &it->dv, &it->dcap);
    if (n < 0) return n;
    for (int i = 0; i < n; i++)
      if (it->dts[i] >= it->mint && it->dts[i] <= it->maxt) return 1;
  }
  return 0;
}

int block_iter_next(block_iter_t *it) {
  if (!it->t) return 0;
  for (;;) {
    uint32_t s = it->pos;
    while (s < it->t->nseries && !(it->bits[s >> 6] >> (s & 63) & 1)) {
      if ((s & 63) == 0 && it->bits[s >> 6] == 0) s += 64;
      else s++;
    }
    if (s >= it->t->nseries) {
      it->pos = it->t->nseries;
      return 0;
    }
    it->pos = s + 1;
    it->cur = s;
    int rc = parse_series(it->b, it->t, s, it->labels, &it->nlabels, &it->chunks, &it->nchunks, &it->capchunks);
    if (rc) return note_damage(it->b, rc);
    const uint8_t *frame = NULL;
    rc = series_in_range(it, &frame);
    if (rc < 0) return note_damage(it->b, rc);
    if (rc) return 1;
  }
}

const tsdb_label_t *block_iter_labels(block_iter_t *it, size_t *n) {
  *n = it->nlabels;
  return it->labels;
}

int block_iter_samples(block_iter_t *it, block_agg_t agg, const int64_t **ts, const double **v, size_t *n) {
  *n = 0;
  *ts = it->ts;
  *v = it->v;
  if (!it->t || it->cur == UINT32_MAX) return MD_EINVAL;
  int part;
  if (it->b->parts == 1) {
    if (agg != BLOCK_AGG_RAW) return MD_EINVAL;
    part = 0;
  } else {
    /* a rollup read as raw samples gives each window's last value */
    part = agg == BLOCK_AGG_RAW ? BLOCK_PART_LAST : (int)agg - 1;
    if (part < 0 || part >= BLOCK_ROLLUP_PARTS) return MD_EINVAL;
  }
  const uint8_t *frame = NULL;
  size_t total = 0;
  for (size_t k = 0; k < it->nchunks; k++) {
    const bchunk_t *c = &it->chunks[k];
    if (c->maxt < it->mint || c->mint > it->maxt) continue;
    if (!frame) {
      int rc = frame_load(it->b, &it->fc, it->t->sframe[it->cur], &frame);
      if (rc) return note_damage(it->b, rc);
    }
    int nd = decode_chunk(frame, c, part, &it->dts, &it->dv, &it->dcap);
    if (nd < 0) return note_damage(it->b, nd);
    int rc = grow2(&it->ts, &it->v, &it->cap, total + (size_t)nd);
    if (rc) return rc;
    for (int i = 0; i < nd; i++) {
      if (it->dts[i] < it->mint || it->dts[i] > it->maxt) continue;
      if (total && it->dts[i] <= it->ts[total - 1]) return note_damage(it->b, MD_ECORRUPT);
      it->ts[total] = it->dts[i];
      it->v[total] = it->dv[i];
      total++;
    }
  }
  *ts = it->ts;
  *v = it->v;
  *n = total;
  return 0;
}

void block_iter_free(block_iter_t *it) {
  if (!it) return;
  fcache_free(it->b, &it->fc); /* before the unref: it returns a context to the block */
  block_unref(it->b);
  free(it->bits);
  free(it->chunks);
  free(it->ts);
  free(it->v);
  free(it->dts);
  free(it->dv);
  free(it);
}

/* ---- metadata ------------------------------------------------------------------------ */

int block_label_names(block_t *b, const char *tenant, void (*cb)(void *ctx, const char *s), void *ctx) {
  const btenant_t *t = find_tenant(b, tenant);
  for (uint32_t i = 0; t && i < t->nnames; i++) cb(ctx, sym(b, t->names[i].sym));
  return 0;
}

int block_label_values(block_t *b, const char *tenant, const char *name, void (*cb)(void *ctx, const char *s),
                       void *ctx) {
  const btenant_t *t = find_tenant(b, tenant);
  const bname_t *nm = t ? find_name(b, t, name) : NULL;
  for (uint32_t i = 0; nm && i < nm->nvalues; i++) cb(ctx, sym(b, nm->values[i].sym));
  return 0;
}

int block_tenants(block_t *b, void (*cb)(void *ctx, const char *tenant), void *ctx) {
  for (uint32_t i = 0; i < b->ntenants; i++) cb(ctx, sym(b, b->tenants[i].sym));
  return 0;
}

/* ---- whole-series access for compaction and downsampling ------------------------------ */

int block_series_labels(const block_t *b, size_t t, size_t s, tsdb_label_t *lab) {
  if (t >= b->ntenants || s >= b->tenants[t].nseries) return MD_EINVAL;
  size_t n = 0;
  int rc = parse_series(b, &b->tenants[t], (uint32_t)s, lab, &n, NULL, NULL, NULL);
  return rc ? note_damage(b, rc) : (int)n;
}

int block_series_read(const block_t *b, size_t t, size_t s, int64_t **ts_out, double **v_out) {
  if (t >= b->ntenants || s >= b->tenants[t].nseries) return MD_EINVAL;
  const btenant_t *tn = &b->tenants[t];
  bchunk_t *chunks = NULL;
  size_t nchunks = 0, capchunks = 0;
  fcache_t fc = {0};
  int64_t *dts = NULL, *ts = NULL;
  double *dv = NULL;
  double *v[BLOCK_ROLLUP_PARTS] = {0};
  size_t dcap = 0, total = 0;
  int rc = parse_series(b, tn, (uint32_t)s, NULL, NULL, &chunks, &nchunks, &capchunks);
  const uint8_t *frame = NULL;
  if (!rc) rc = frame_load(b, &fc, tn->sframe[s], &frame);
  size_t cap = 0;
  for (size_t k = 0; !rc && k < nchunks; k++) {
    size_t base = total;
    for (int p = 0; !rc && p < b->parts; p++) {
      int n = decode_chunk(frame, &chunks[k], p, &dts, &dv, &dcap);
      if (n < 0) {
        rc = n;
        break;
      }
      if (p == 0) {
        if (base + (size_t)n > cap) {
          size_t nc = cap ? cap * 2 : 1024;
          while (nc < base + (size_t)n) nc *= 2;
          int64_t *nt = realloc(ts, nc * sizeof *nt);
          if (!nt) {
            rc = MD_ENOMEM;
            break;
          }
          ts = nt;
          for (int q = 0; q < b->parts; q++) {
            double *nv = realloc(v[q], nc * sizeof *nv);
            if (!nv) {
              rc = MD_ENOMEM;
              break;
            }
            v[q] = nv;
          }
          if (rc) break;
          cap = nc;
        }
        if (base && dts[0] <= ts[base - 1]) {
          rc = MD_ECORRUPT;
          break;
        }
        memcpy(ts + base, dts, (size_t)n * sizeof *ts);
        total = base + (size_t)n;
      } else if ((size_t)n != total - base || memcmp(ts + base, dts, (size_t)n * sizeof *ts) != 0) {
        rc = MD_ECORRUPT; /* rollup parts must share timestamps */
        break;
      }
      memcpy(v[p] + base, dv, (size_t)n * sizeof *dv);
    }
  }
  free(chunks);
  free(dts);
  free(dv);
  fcache_free(b, &fc);
  if (rc) {
    free(ts);
    for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) free(v[p]);
    return note_damage(b, rc);
  }
  *ts_out = ts;
  for (int p = 0; p < b->parts; p++) v_out[p] = v[p];
  return (int)total;
}
