/*
 * Prometheus remote_write 1.0 → batch: snappy block decompression, then a zero-copy decoder
 * of the WriteRequest schema in proto/remote.proto.
 *
 * Why not protobuf-c here (it is used for OTLP, and by the tests to encode requests): its
 * unpack allocates a struct per label and per sample and copies every string — on a
 * typical request that is ~20,000 allocations and 4x the parse time, mostly page faults on
 * fresh memory. The hand decoder below walks the wire format directly and hands label
 * bytes (length-delimited, never copied) to the series builder.
 *
 * Two passes: the first checks the WriteRequest and TimeSeries levels are well-formed
 * protobuf; the second decodes, checking each Label and Sample message when it first reads
 * it, so labels the request or the series cache already knows are not walked again. A
 * request the protocol cannot frame, at any level, adds nothing (HTTP 400, the sender must
 * not retry): nothing reaches the batch before pass two has read the whole request. Within a valid request a bad series (labels) is skipped and reported by its
 * index; the rest is kept, as Prometheus's own receiver does. Unknown fields are skipped by
 * wire type; groups (wire types 3/4) and field number 0 are malformed.
 *
 * Grouping: a request that spans several scrapes (a sender catching up, the bench dataset)
 * repeats every series once per scrape, each TimeSeries with one sample. The raw bytes of a
 * TimeSeries' Label fields name its series: the first time they are seen the labels are
 * decoded and validated; later repeats only decode their samples, staged under the series.
 * The batch gets one series per distinct label bytes, its samples in request order, so the
 * batch and the engine copy, sort, hash and look up each series once per request. A bad
 * series is never cached: each TimeSeries holding it is decoded and reported by its index.
 *
 * Threading: any thread; the decoding buffer and the grouping tables are kept per thread
 * between requests (parser_get).
 */
#include <pthread.h>
#include <snappy-c.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

/* Decompressed requests past this are refused before allocating: far beyond what any
 * sender batches (Prometheus sends ~2,000 samples per request). */
#define MAX_DECODED (256u << 20)

typedef struct {
  const uint8_t *p, *end;
} pbuf_t;

static bool rd_varint_long(pbuf_t *b, uint64_t *out) {
  uint64_t v = 0;
  *out = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (b->p >= b->end) return false;
    uint8_t c = *b->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false; /* more than 10 bytes */
}

/* Tags and lengths of labels and samples are single bytes: that case inline. */
static inline bool rd_varint(pbuf_t *b, uint64_t *out) {
  if (b->p < b->end && *b->p < 0x80) {
    *out = *b->p++;
    return true;
  }
  return rd_varint_long(b, out);
}

/* Reads a tag; false on a malformed one. */
static inline bool rd_tag(pbuf_t *b, uint32_t *field, int *wt) {
  uint64_t t;
  *field = 0;
  *wt = -1;
  if (!rd_varint(b, &t) || (t >> 3) == 0 || (t >> 3) > 0x1fffffff) return false;
  *field = (uint32_t)(t >> 3);
  *wt = (int)(t & 7);
  return true;
}

/* Reads a length-delimited payload into sub. */
static inline bool rd_len(pbuf_t *b, pbuf_t *sub) {
  uint64_t n;
  sub->p = sub->end = b->p;
  if (!rd_varint(b, &n) || n > (uint64_t)(b->end - b->p)) return false;
  sub->p = b->p;
  sub->end = b->p + n;
  b->p += n;
  return true;
}

static inline bool skip_field(pbuf_t *b, int wt) {
  uint64_t v;
  pbuf_t sub;
  switch (wt) {
  case 0:
    return rd_varint(b, &v);
  case 1:
    if (b->end - b->p < 8) return false;
    b->p += 8;
    return true;
  case 2:
    return rd_len(b, &sub);
  case 5:
    if (b->end - b->p < 4) return false;
    b->p += 4;
    return true;
  default:
    return false;
  }
}

/* A distinct series of the request: the raw bytes of its Label fields, checked labels. */
typedef struct {
  const uint8_t *key;
  size_t klen;
  uint64_t hash;
  size_t lab_off, nl; /* labels in rw_t.glab (pointing into the decoded message) */
  ikey_t ikey;           /* series-ref cache key ({0,0}: no cache) */
  tsdb_series_ref_t ref; /* != 0: the cache knew the series (no labels decoded) */
  bool skip;             /* resend pass: not one of the series being resent */
} group_t;

typedef struct {
  ictx_t c;
  ilabel_t lbl[INGEST_HARD_MAX_LABELS + 1];
  ilabel_t *glab;
  size_t nglab, cap_glab;
  group_t *groups;
  size_t ngroups, cap_groups;
  uint32_t *slots; /* group index + 1, 0 = empty; load <= 1/2 */
  size_t slot_cap;
  istage_t stage;
  arena_t *keys; /* keys of series whose labels are not contiguous on the wire */
  bool frame_bad; /* pass two met a malformed Label or Sample: the request is not framed */
  char *dec;      /* snappy output */
  size_t dec_cap;
} rw_t;

/* Field layout of the messages we read: (message, field) → required wire type. */
enum { M_WRITE, M_SERIES, M_LABEL, M_SAMPLE };

static int want_wt(int msg, uint32_t f) {
  switch (msg) {
  case M_WRITE:
    return f == 1 || f == 3 ? 2 : -1;
  case M_SERIES:
    return f >= 1 && f <= 4 ? 2 : -1;
  case M_LABEL:
    return f == 1 || f == 2 ? 2 : -1;
  case M_SAMPLE:
    return f == 1 ? 1 : f == 2 ? 0 : -1;
  }
  return -1;
}

/* The shapes every encoder writes, checked in a few compares: a Label as 0a <n> name 12 <m>
 * value (n, m < 128) and a Sample as 09 <8 bytes> 10 <varint> ending the message. Whatever
 * they accept, the general check accepts too; anything else goes to it. */
static inline bool label_fast(pbuf_t b) {
  size_t len = (size_t)(b.end - b.p);
  if (len < 4 || b.p[0] != 0x0a || b.p[1] >= 0x80) return false;
  size_t n1 = b.p[1];
  if (n1 + 4 > len || b.p[2 + n1] != 0x12 || b.p[3 + n1] >= 0x80) return false;
  return n1 + 4 + b.p[3 + n1] == len;
}

static inline bool sample_fast(pbuf_t b) {
  size_t len = (size_t)(b.end - b.p);
  if (len < 11 || len > 20 || b.p[0] != 0x09 || b.p[9] != 0x10) return false;
  for (size_t i = 10; i + 1 < len; i++)
    if (!(b.p[i] & 0x80)) return false;
  return !(b.p[len - 1] & 0x80);
}

/* Pass one: the WriteRequest and its TimeSeries are well formed. The Label and Sample
 * messages inside are only length-framed here; pass two checks each the first time it reads
 * it (labels: when a series is first decoded — a series the request or the series cache has
 * seen has the very same bytes; samples: as they are decoded) and drops the whole request
 * when one is malformed. check_msg(sub, M_LABEL / M_SAMPLE) is that check. */
static bool check_msg(pbuf_t b, int msg) {
  while (b.p < b.end) {
    uint32_t f;
    int wt;
    if (!rd_tag(&b, &f, &wt)) return false;
    int want = want_wt(msg, f);
    if (want >= 0 && wt != want) return false;
    if (wt == 2 && msg == M_WRITE && f == 1) {
      pbuf_t sub;
      if (!rd_len(&b, &sub) || !check_msg(sub, M_SERIES)) return false;
    } else if (!skip_field(&b, wt)) {
      return false;
    }
  }
  return true;
}

/* Moves m to its next length-delimited field number want (m's own level framed by pass one)
 * and gives its payload in sub; false at m's end. */
static inline bool next_sub(pbuf_t *m, uint32_t want, pbuf_t *sub) {
  while (m->p < m->end) {
    uint32_t f;
    int wt;
    rd_tag(m, &f, &wt);
    if (f == want && wt == 2) return rd_len(m, sub);
    skip_field(m, wt);
  }
  return false;
}

/* A Label / Sample message is well formed (the usual shape, or the general check). */
static bool label_ok(pbuf_t b) {
  return label_fast(b) || check_msg(b, M_LABEL);
}
static bool sample_ok(pbuf_t b) {
  return sample_fast(b) || check_msg(b, M_SAMPLE);
}

/* Decodes the labels of a TimeSeries (framed by pass one) into X->lbl, __name__ first
 * (*have_name says whether there is one). MD_EINVAL for a second __name__ or too many labels,
 * or with X->frame_bad set for a malformed Label. */
static int decode_labels(rw_t *X, pbuf_t ts, size_t *nlp, bool *have_name_out, char *err, size_t errlen) {
  ilabel_t *L = X->lbl;
  size_t nl = 1;
  bool have_name = false;
  int bad = 0; /* the series' first error: the labels after it are still checked for framing */
  pbuf_t lb;
  while (next_sub(&ts, 1, &lb)) {
    if (!label_ok(lb)) {
      X->frame_bad = true;
      return md_error(err, errlen, MD_EINVAL, "malformed Label");
    }
    if (bad) continue;
    const char *name = "", *value = "";
    size_t nlen = 0, vlen = 0;
    while (lb.p < lb.end) {
      uint32_t lf;
      int lwt;
      rd_tag(&lb, &lf, &lwt);
      if (lwt == 2 && (lf == 1 || lf == 2)) {
        pbuf_t s;
        rd_len(&lb, &s);
        if (lf == 1)
          name = (const char *)s.p, nlen = (size_t)(s.end - s.p);
        else
          value = (const char *)s.p, vlen = (size_t)(s.end - s.p);
      } else {
        skip_field(&lb, lwt);
      }
    }
    if (nlen == 8 && memcmp(name, "__name__", 8) == 0) {
      if (have_name) {
        bad = md_error(err, errlen, MD_EINVAL, "duplicate label __name__");
        continue;
      }
      have_name = true;
      L[0] = (ilabel_t){"__name__", 8, value, vlen};
    } else {
      if (nl > INGEST_HARD_MAX_LABELS) {
        bad = md_error(err, errlen, MD_EINVAL, "series has more than %d labels", INGEST_HARD_MAX_LABELS);
        continue;
      }
      L[nl++] = (ilabel_t){name, nlen, value, vlen};
    }
  }
  *nlp = nl;
  *have_name_out = have_name;
  return bad;
}

/* The series' group, made (labels decoded and checked) the first time its label bytes are
 * seen; -1 and *rc = MD_EINVAL (err says why) or MD_ENOMEM otherwise. */
static long find_group(rw_t *X, pbuf_t ts, const uint8_t *key, size_t klen, int *rc, char *err,
                       size_t errlen) {
  /* with the cache on, the key's first half is the grouping hash too */
  uint64_t h = X->c.refs ? ikey_a(&X->c, key, klen) : md_hash64(key, klen, 0x2545f4914f6cdd1dULL);
  size_t mask = X->slot_cap - 1;
  if (X->slot_cap) {
    for (size_t k = h & mask; X->slots[k]; k = (k + 1) & mask) {
      const group_t *G = &X->groups[X->slots[k] - 1];
      if (G->hash == h && G->klen == klen && memcmp(G->key, key, klen) == 0) return (long)(X->slots[k] - 1);
    }
  }
  size_t nl = 0;
  ikey_t ikey = {0, 0};
  tsdb_series_ref_t ref = 0;
  int probe = IREF_LABELS;
  if (X->c.refs) {
    ikey = ikey_from_a(&X->c, h, key, klen);
    probe = ictx_probe(&X->c, ikey, &ref);
  }
  if (probe == IREF_LABELS) {
    bool have_name = false;
    if ((*rc = decode_labels(X, ts, &nl, &have_name, err, errlen))) return -1;
    if (!have_name) {
      *rc = md_error(err, errlen, MD_EINVAL, "series has no __name__ label");
      return -1;
    }
    if ((*rc = ictx_check(&X->c, X->lbl, nl, err, errlen))) return -1;
  }
  *rc = MD_ENOMEM;
  if ((X->ngroups + 1) * 2 > X->slot_cap) {
    size_t nc = X->slot_cap ? X->slot_cap * 2 : 1024;
    uint32_t *ns = calloc(nc, sizeof *ns);
    if (!ns) return -1;
    for (size_t g = 0; g < X->ngroups; g++) {
      size_t k = X->groups[g].hash & (nc - 1);
      while (ns[k])
        k = (k + 1) & (nc - 1);
      ns[k] = (uint32_t)g + 1;
    }
    free(X->slots);
    X->slots = ns;
    X->slot_cap = nc;
    mask = nc - 1;
  }
  if (!ingest_grow((void **)&X->groups, &X->cap_groups, X->ngroups + 1, sizeof *X->groups, 1024) ||
      !ingest_grow((void **)&X->glab, &X->cap_glab, X->nglab + nl, sizeof *X->glab, 8192))
    return -1;
  if (nl) memcpy(X->glab + X->nglab, X->lbl, nl * sizeof *X->glab);
  X->groups[X->ngroups] = (group_t){key, klen, h, X->nglab, nl, ikey, ref, probe == IREF_SKIP};
  X->nglab += nl;
  size_t k = h & mask;
  while (X->slots[k])
    k = (k + 1) & mask;
  X->slots[k] = (uint32_t)X->ngroups + 1;
  *rc = 0;
  return (long)X->ngroups++;
}

static int decode_series(rw_t *X, pbuf_t ts, char *err, size_t errlen) {
  /* The Label fields' bytes are the series' key: one span when they come first, as every
   * encoder writes them; otherwise they are copied together. */
  const uint8_t *lab_end = ts.p;
  bool split = false, other = false;
  size_t nsamples = 0;
  pbuf_t scan = ts;
  while (scan.p < scan.end) {
    uint32_t f;
    int wt;
    rd_tag(&scan, &f, &wt);
    skip_field(&scan, wt);
    if (f == 1 && wt == 2) {
      if (other)
        split = true;
      else
        lab_end = scan.p;
    } else {
      other = true;
      if (f == 2) nsamples++;
      if (f == 3 || f == 4) X->c.res->skipped++;
    }
  }
  if (nsamples == 0) { /* e.g. a histogram-only series: nothing to add, only label framing checked */
    size_t nl;
    bool have_name;
    return decode_labels(X, ts, &nl, &have_name, err, errlen);
  }
  const uint8_t *key = ts.p;
  size_t klen = (size_t)(lab_end - ts.p);
  if (split) {
    uint8_t *k = arena_alloc(X->keys, (size_t)(ts.end - ts.p));
    if (!k) return MD_ENOMEM;
    klen = 0;
    for (scan = ts; scan.p < scan.end;) {
      const uint8_t *at = scan.p;
      uint32_t f;
      int wt;
      rd_tag(&scan, &f, &wt);
      skip_field(&scan, wt);
      if (f == 1 && wt == 2) {
        memcpy(k + klen, at, (size_t)(scan.p - at));
        klen += (size_t)(scan.p - at);
      }
    }
    key = k;
  }
  int rc;
  long g = find_group(X, ts, key, klen, &rc, err, errlen);
  if (g < 0) {
    /* A bad series is skipped, but its samples must still be well formed. */
    pbuf_t sm;
    for (scan = ts; rc == MD_EINVAL && !X->frame_bad && next_sub(&scan, 2, &sm);)
      if (!sample_ok(sm)) X->frame_bad = true;
    return rc;
  }
  if (X->groups[g].skip) return 0;
  pbuf_t sm;
  while (next_sub(&ts, 2, &sm)) {
    if (!sample_ok(sm)) {
      X->frame_bad = true;
      return md_error(err, errlen, MD_EINVAL, "malformed Sample");
    }
    double v = 0;
    int64_t t = 0;
    while (sm.p < sm.end) {
      uint32_t sf;
      int swt;
      rd_tag(&sm, &sf, &swt);
      if (sf == 1 && swt == 1) {
        uint64_t bits = (uint64_t)sm.p[0] | (uint64_t)sm.p[1] << 8 | (uint64_t)sm.p[2] << 16 |
                        (uint64_t)sm.p[3] << 24 | (uint64_t)sm.p[4] << 32 | (uint64_t)sm.p[5] << 40 |
                        (uint64_t)sm.p[6] << 48 | (uint64_t)sm.p[7] << 56;
        memcpy(&v, &bits, 8);
        sm.p += 8;
      } else if (sf == 2 && swt == 0) {
        uint64_t u;
        rd_varint(&sm, &u);
        t = (int64_t)u;
      } else {
        skip_field(&sm, swt);
      }
    }
    int rc = istage_add(&X->stage, &X->c, (uint32_t)g, t, v);
    if (rc) return rc;
  }
  return 0;
}

/* Group g's labels for istage_emit. */
static const ilabel_t *group_labels(void *ctx, size_t g, size_t *n, tsdb_series_ref_t *ref, ikey_t *key) {
  rw_t *X = ctx;
  *n = X->groups[g].nl;
  *ref = X->groups[g].ref;
  *key = X->groups[g].ikey;
  return X->glab + X->groups[g].lab_off;
}

/* A state that staged more samples (or decoded more bytes) than this is freed rather than kept. */
#define KEEP_STAGED 262144
#define KEEP_DECODED (16u << 20)

static pthread_key_t parser_key;
static bool parser_key_ok;
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;

static void parser_free(void *p) {
  rw_t *X = p;
  if (!X) return;
  free(X->glab);
  free(X->groups);
  free(X->slots);
  istage_free(&X->stage);
  arena_free(X->keys);
  free(X->dec);
  free(X);
}

static void parser_key_init(void) {
  parser_key_ok = pthread_key_create(&parser_key, parser_free) == 0;
}

/* The thread's state, emptied, or a new one; NULL when out of memory. */
static rw_t *parser_get(void) {
  pthread_once(&parser_once, parser_key_init);
  rw_t *X = parser_key_ok ? pthread_getspecific(parser_key) : NULL;
  if (X && pthread_setspecific(parser_key, NULL) == 0) return X;
  X = calloc(1, sizeof *X);
  if (!X) return NULL;
  if (!(X->keys = arena_new(0))) {
    parser_free(X);
    return NULL;
  }
  return X;
}

static void parser_put(rw_t *X) {
  if (!parser_key_ok || X->stage.cap > KEEP_STAGED || X->dec_cap > KEEP_DECODED ||
      pthread_getspecific(parser_key)) {
    parser_free(X);
    return;
  }
  arena_reset(X->keys);
  if (X->ngroups) memset(X->slots, 0, X->slot_cap * sizeof *X->slots);
  X->nglab = X->ngroups = 0;
  istage_reset(&X->stage);
  if (pthread_setspecific(parser_key, X) != 0) parser_free(X);
}

static int parse_pb(rw_t *X, const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                    ingest_result_t *res) {
  ictx_init(&X->c, o, b, res);
  pbuf_t root = {p, p + n};
  X->frame_bad = false;
  if (!check_msg(root, M_WRITE)) {
    ictx_error(&X->c, SIZE_MAX, "body is not a valid protobuf WriteRequest");
    return MD_EINVAL;
  }
  char err[200];
  size_t index = 0;
  /* Pass two; every read of the WriteRequest and TimeSeries levels was checked by pass one. */
  while (root.p < root.end && !X->c.limit_hit && !X->c.oom) {
    uint32_t f;
    int wt;
    rd_tag(&root, &f, &wt);
    if (f == 3 && wt == 2) X->c.res->metadata++;
    if (f != 1 || wt != 2) {
      skip_field(&root, wt);
      continue;
    }
    pbuf_t ts;
    rd_len(&root, &ts);
    X->c.res->lines++;
    int rc = decode_series(X, ts, err, sizeof err);
    if (X->frame_bad) {
      /* nothing was added to the batch yet (istage_emit comes last): drop what was staged */
      istage_reset(&X->stage);
      ictx_init(&X->c, o, b, res);
      ictx_error(&X->c, SIZE_MAX, "body is not a valid protobuf WriteRequest");
      return MD_EINVAL;
    }
    if (rc == MD_EINVAL) ictx_error(&X->c, index, "%s", err);
    if (rc == MD_ENOMEM) X->c.oom = true;
    index++;
  }
  /* Past the sample limit the caller drops the batch (413); it still gets what was read. */
  if (!X->c.oom && istage_emit(&X->stage, &X->c, group_labels, X)) X->c.oom = true;
  return ictx_status(&X->c);
}

int ingest_parse_remote_write_pb(const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                                 ingest_result_t *res) {
  rw_t *X = parser_get();
  if (!X) return MD_ENOMEM;
  int rc = parse_pb(X, p, n, o, b, res);
  parser_put(X);
  return rc;
}

/* Fills res (may be NULL) with one request-level error. */
static int refuse(ingest_result_t *res, const char *msg) {
  ingest_result_t tmp;
  ingest_result_t *r = res ? res : &tmp;
  memset(r, 0, sizeof *r);
  r->rejected = r->nerrors = 1;
  r->errors[0].where = SIZE_MAX;
  snprintf(r->errors[0].message, sizeof r->errors[0].message, "%s", msg);
  return MD_EINVAL;
}

int ingest_parse_remote_write(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                              ingest_result_t *res) {
  size_t outlen = 0;
  /* Snappy cannot expand more than ~22x (a 3-byte copy tag writes at most 64 bytes): a
   * length header claiming more is a lie, refused before allocating for it. */
  if (snappy_uncompressed_length(p, n, &outlen) != SNAPPY_OK || outlen > MAX_DECODED || outlen / 32 > n)
    return refuse(res, outlen > MAX_DECODED        ? "snappy-decoded body would exceed 256 MiB"
                       : outlen / 32 > n && outlen ? "snappy length header is inconsistent with the body size"
                                                   : "body is not snappy block-compressed data");
  rw_t *X = parser_get();
  if (!X) return MD_ENOMEM;
  int rc;
  if (!ingest_grow((void **)&X->dec, &X->dec_cap, outlen ? outlen : 1, 1, 65536)) {
    rc = MD_ENOMEM;
  } else if (snappy_uncompress(p, n, X->dec, &outlen) != SNAPPY_OK) {
    rc = refuse(res, "body is not valid snappy block-compressed data");
  } else {
    rc = parse_pb(X, (const uint8_t *)X->dec, outlen, o, b, res);
  }
  parser_put(X);
  return rc;
}
