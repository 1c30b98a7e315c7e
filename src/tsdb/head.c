/*
 * head — per-series in-memory storage (see head.h for the contract and locking).
 *
 * Memory per active series is a product goal (< 1 KiB at 720 samples), hence:
 *  - labels live in the same allocation as the series;
 *  - the open chunk is sealed every HEAD_SEAL_SAMPLES samples with chunk_seal, whose
 *    decimal-aware encoding is several times smaller than the streaming XOR encoding; the
 *    cost (one decode + encode per chunk) is amortised over HEAD_SEAL_SAMPLES appends;
 *  - the out-of-order buffer exists only for series that ever received one.
 *
 * Duplicate policy (docs/storage-wal.md): same timestamp and bitwise-identical value is a
 * no-op (HEAD_SAME); a different value is rejected (HEAD_DUPLICATE), first write wins.
 */
#include "head.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int svec_reserve(svec_t *s, size_t extra) {
  if (s->n + extra <= s->cap) return 0;
  size_t nc = s->cap ? s->cap : 256;
  while (nc < s->n + extra) nc *= 2;
  int64_t *t = realloc(s->ts, nc * sizeof *t);
  if (!t) return MD_ENOMEM;
  s->ts = t;
  double *v = realloc(s->v, nc * sizeof *v);
  if (!v) return MD_ENOMEM;
  s->v = v;
  s->cap = nc;
  return 0;
}

int svec_push(svec_t *s, int64_t ts, double v) {
  if (s->n == s->cap && svec_reserve(s, 1)) return MD_ENOMEM;
  s->ts[s->n] = ts;
  s->v[s->n] = v;
  s->n++;
  return 0;
}

void svec_free(svec_t *s) {
  free(s->ts);
  free(s->v);
  *s = (svec_t){0};
}

series_t *series_new(uint32_t ref, uint16_t tenant, uint64_t hash, const uint32_t *labels, size_t n) {
  series_t *s = malloc(sizeof *s + 2 * n * sizeof(uint32_t));
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->id.hash = hash;
  s->id.ref = ref;
  s->id.tenant = tenant;
  s->id.nlabels = (uint16_t)n;
  s->id.labels = (uint32_t *)(s + 1);
  memcpy(s->id.labels, labels, 2 * n * sizeof(uint32_t));
  chunk_app_init(&s->app);
  s->min_ts = INT64_MAX;
  s->max_ts = INT64_MIN;
  return s;
}

void series_free(series_t *s) {
  if (!s) return;
  chunk_app_free(&s->app);
  for (uint32_t i = 0; i < s->nfull; i++) free(s->full[i].data);
  free(s->full);
  free(s->ooo);
  free(s);
}

bool series_empty(const series_t *s) { return s->app.count == 0 && s->nfull == 0 && (!s->ooo || !s->ooo->n); }

size_t series_samples(const series_t *s) {
  size_t n = s->app.count + (s->ooo ? s->ooo->n : 0);
  for (uint32_t i = 0; i < s->nfull; i++) n += s->full[i].count;
  return n;
}

size_t series_chunks(const series_t *s) { return s->nfull + (s->app.count ? 1 : 0); }

size_t series_bytes(const series_t *s) {
  size_t b = sizeof *s + 2 * s->id.nlabels * sizeof(uint32_t) + s->app.cap + s->cap_full * sizeof(head_chunk_t);
  for (uint32_t i = 0; i < s->nfull; i++) b += s->full[i].len;
  if (s->ooo) b += sizeof *s->ooo + s->ooo->cap * sizeof(tsdb_sample_t);
  return b;
}

static int push_full(series_t *s, head_chunk_t c) {
  if (s->nfull == s->cap_full) {
    uint32_t nc = s->cap_full ? s->cap_full * 2 : 2;
    head_chunk_t *nf = realloc(s->full, nc * sizeof *nf);
    if (!nf) return MD_ENOMEM;
    s->full = nf;
    s->cap_full = nc;
  }
  s->full[s->nfull++] = c;
  return 0;
}

int series_seal(series_t *s) {
  chunk_app_t *a = &s->app;
  if (a->count == 0) return 0;
  int64_t ts[CHUNK_MAX_SAMPLES];
  double v[CHUNK_MAX_SAMPLES];
  int n = chunk_decode(a->buf, chunk_app_bytes(a), ts, v, CHUNK_MAX_SAMPLES);
  head_chunk_t c = {.mint = a->first_ts, .maxt = a->last_ts, .count = a->count};
  uint8_t *sealed = NULL;
  size_t slen = 0;
  if (n == (int)a->count && chunk_seal(ts, v, (size_t)n, &sealed, &slen) == 0 && slen < chunk_app_bytes(a)) {
    c.data = sealed;
    c.len = (uint32_t)slen;
  } else {
    /* Keep the stream itself: still decodable, and sealing must never lose data. */
    free(sealed);
    chunk_app_trim(a);
    c.data = a->buf;
    c.len = (uint32_t)chunk_app_bytes(a);
    a->buf = NULL;
    a->cap = 0;
  }
  if (push_full(s, c)) {
    if (c.data != a->buf) free(c.data);
    return MD_ENOMEM;
  }
  chunk_app_free(a);
  chunk_app_init(a);
  return 0;
}

/* Value bits of the in-order sample at ts, if the stream holds one. */
static int stream_find(const series_t *s, int64_t ts, uint64_t *bits) {
  int64_t tsb[CHUNK_MAX_SAMPLES];
  double vb[CHUNK_MAX_SAMPLES];
  const uint8_t *p = NULL;
  size_t len = 0;
  if (s->app.count && ts >= s->app.first_ts) {
    if (ts == s->app.last_ts) {
      *bits = s->app.last_bits;
      return 1;
    }
    p = s->app.buf;
    len = chunk_app_bytes(&s->app);
  } else {
    for (uint32_t i = s->nfull; i-- > 0;) {
      if (ts > s->full[i].maxt) break;
      if (ts >= s->full[i].mint) {
        p = s->full[i].data;
        len = s->full[i].len;
        break;
      }
    }
  }
  if (!p) return 0;
  int cnt = chunk_count(p, len);
  if (cnt <= 0) return 0;
  int64_t *tp = tsb;
  double *vp = vb;
  int64_t *th = NULL;
  double *vh = NULL;
  if (cnt > CHUNK_MAX_SAMPLES) {
    th = malloc((size_t)cnt * sizeof *th);
    vh = malloc((size_t)cnt * sizeof *vh);
    if (!th || !vh) {
      free(th);
      free(vh);
      return 0;
    }
    tp = th;
    vp = vh;
  }
  int n = chunk_decode(p, len, tp, vp, (size_t)cnt);
  int found = 0;
  for (int i = 0; i < n; i++) {
    if (tp[i] == ts) {
      memcpy(bits, &vp[i], 8);
      found = 1;
      break;
    }
  }
  free(th);
  free(vh);
  return found;
}

static int ooo_insert(series_t *s, int64_t ts, double v, uint64_t bits) {
  ooo_buf_t *o = s->ooo;
  uint32_t lo = 0, hi = o ? o->n : 0;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (o->s[mid].ts < ts) lo = mid + 1;
    else hi = mid;
  }
  if (o && lo < o->n && o->s[lo].ts == ts) {
    uint64_t ob;
    memcpy(&ob, &o->s[lo].v, 8);
    return ob == bits ? HEAD_SAME : HEAD_DUPLICATE;
  }
  if (!o || o->n == o->cap) {
    uint32_t nc = o ? o->cap * 2 : 8;
    ooo_buf_t *no = realloc(o, sizeof *no + nc * sizeof(tsdb_sample_t));
    if (!no) return MD_ENOMEM;
    if (!o) no->n = 0;
    no->cap = nc;
    s->ooo = o = no;
  }
  memmove(&o->s[lo + 1], &o->s[lo], (o->n - lo) * sizeof(tsdb_sample_t));
  o->s[lo] = (tsdb_sample_t){ts, v};
  o->n++;
  return HEAD_ADDED;
}

int series_append(series_t *s, int64_t ts, double v, int64_t min_valid, int64_t ooo_window) {
  if (ts < min_valid) return HEAD_TOO_OLD;
  uint64_t bits;
  memcpy(&bits, &v, 8);
  if (ts > s->max_ts) {
    if (s->app.count >= HEAD_SEAL_SAMPLES) {
      int rc = series_seal(s);
      if (rc) return rc;
    }
    int rc = chunk_app_append(&s->app, ts, v);
    if (rc == MD_ELIMIT) {
      if ((rc = series_seal(s))) return rc;
      rc = chunk_app_append(&s->app, ts, v);
    }
    if (rc) return rc < 0 ? rc : MD_ENOMEM;
    s->max_ts = ts;
    if (ts < s->min_ts) s->min_ts = ts;
    return HEAD_ADDED;
  }
  uint64_t old;
  if (stream_find(s, ts, &old)) return old == bits ? HEAD_SAME : HEAD_DUPLICATE;
  if (ooo_window >= 0 && ts < s->max_ts - ooo_window) return HEAD_TOO_OLD;
  int rc = ooo_insert(s, ts, v, bits);
  if (rc == HEAD_ADDED && ts < s->min_ts) s->min_ts = ts;
  return rc;
}

static int decode_into(const uint8_t *p, size_t len, int64_t mint, int64_t maxt, svec_t *out) {
  int cnt = chunk_count(p, len);
  if (cnt < 0) return MD_ECORRUPT;
  if (svec_reserve(out, (size_t)cnt)) return MD_ENOMEM;
  int n = chunk_decode(p, len, out->ts + out->n, out->v + out->n, (size_t)cnt);
  if (n < 0) return MD_ECORRUPT;
  /* Filter the range in place. */
  size_t base = out->n, k = base;
  for (int i = 0; i < n; i++) {
    int64_t t = out->ts[base + i];
    if (t < mint || t > maxt) continue;
    out->ts[k] = t;
    out->v[k] = out->v[base + i];
    k++;
  }
  out->n = k;
  return 0;
}

int series_read(const series_t *s, int64_t mint, int64_t maxt, svec_t *out) {
  if (s->min_ts > maxt || (s->max_ts < mint && (!s->ooo || !s->ooo->n))) return 0;
  size_t start = out->n;
  int rc;
  for (uint32_t i = 0; i < s->nfull; i++) {
    const head_chunk_t *c = &s->full[i];
    if (c->maxt < mint || c->mint > maxt) continue;
    if ((rc = decode_into(c->data, c->len, mint, maxt, out))) return rc;
  }
  if (s->app.count && s->app.last_ts >= mint && s->app.first_ts <= maxt) {
    if ((rc = decode_into(s->app.buf, chunk_app_bytes(&s->app), mint, maxt, out))) return rc;
  }
  const ooo_buf_t *o = s->ooo;
  if (!o || !o->n) return 0;
  /* Merge the OOO samples in range into the stream part [start, out->n). */
  size_t lo = 0;
  while (lo < o->n && o->s[lo].ts < mint) lo++;
  size_t hi = lo;
  while (hi < o->n && o->s[hi].ts <= maxt) hi++;
  if (lo == hi) return 0;
  size_t m = hi - lo, ns = out->n - start;
  if (svec_reserve(out, m)) return MD_ENOMEM;
  /* Merge from the back so it happens in place. */
  ptrdiff_t i = (ptrdiff_t)ns - 1, j = (ptrdiff_t)m - 1, w = (ptrdiff_t)(ns + m) - 1;
  int64_t *T = out->ts + start;
  double *V = out->v + start;
  while (j >= 0) {
    const tsdb_sample_t *x = &o->s[lo + (size_t)j];
    if (i >= 0 && T[i] > x->ts) {
      T[w] = T[i];
      V[w] = V[i];
      i--;
    } else {
      T[w] = x->ts;
      V[w] = x->v;
      j--;
    }
    w--;
  }
  out->n = start + ns + m;
  return 0;
}

void series_truncate(series_t *s, int64_t t) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < s->nfull; i++) {
    if (s->full[i].maxt <= t) free(s->full[i].data);
    else s->full[k++] = s->full[i];
  }
  s->nfull = k;
  if (k == 0) {
    free(s->full);
    s->full = NULL;
    s->cap_full = 0;
  }
  if (s->app.count && s->app.last_ts <= t) {
    chunk_app_free(&s->app);
    chunk_app_init(&s->app);
  }
  if (s->ooo) {
    uint32_t j = 0;
    while (j < s->ooo->n && s->ooo->s[j].ts <= t) j++;
    memmove(s->ooo->s, s->ooo->s + j, (s->ooo->n - j) * sizeof(tsdb_sample_t));
    s->ooo->n -= j;
    if (!s->ooo->n) {
      free(s->ooo);
      s->ooo = NULL;
    }
  }
  s->min_ts = INT64_MAX;
  if (s->nfull) s->min_ts = s->full[0].mint;
  else if (s->app.count) s->min_ts = s->app.first_ts;
  if (s->ooo && s->ooo->s[0].ts < s->min_ts) s->min_ts = s->ooo->s[0].ts;
  /* max_ts stays: it orders future appends even when the stream is empty. */
}
