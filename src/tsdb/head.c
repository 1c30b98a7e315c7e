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

series_t *series_new(uint32_t ref, uint16_t tenant, lhash_t hash, const uint32_t *labels, size_t n) {
  series_t *s = malloc(sizeof *s + 2 * n * sizeof(uint32_t));
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->id.hash = hash.h1;
  s->id.hash2 = hash.h2;
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
  free(s->sealed);
  free(s->ooo);
  free(s);
}

static void put_uv(uint8_t *b, size_t *n, uint64_t v) {
  while (v >= 0x80) {
    b[(*n)++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b[(*n)++] = (uint8_t)v;
}

static bool get_uv(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (int sh = 0; sh < 64 && *p < end; sh += 7) {
    uint8_t c = *(*p)++;
    r |= (uint64_t)(c & 0x7f) << sh;
    if (!(c & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

bool sealed_next(const series_t *s, sealed_it_t *it) {
  if (it->off >= s->sealed_len) return false;
  const uint8_t *p = s->sealed + it->off, *end = s->sealed + s->sealed_len;
  uint64_t len, dmin, span;
  if (!get_uv(&p, end, &len) || !get_uv(&p, end, &dmin) || !get_uv(&p, end, &span) || len > (size_t)(end - p))
    return false; /* cannot happen: the buffer is only written here */
  it->mint = it->prev_maxt + ((int64_t)(dmin >> 1) ^ -(int64_t)(dmin & 1));
  it->maxt = it->mint + (int64_t)span;
  it->prev_maxt = it->maxt;
  it->p = p;
  it->len = (size_t)len;
  it->off = (uint32_t)(p + len - s->sealed);
  return true;
}

/* Appends one sealed chunk (exact-size growth: sealing is rare, memory is not). */
static int sealed_push(series_t *s, const uint8_t *data, size_t len, int64_t mint, int64_t maxt, int64_t prev_maxt) {
  uint8_t hdr[30];
  size_t h = 0;
  int64_t d = mint - prev_maxt;
  put_uv(hdr, &h, len);
  put_uv(hdr, &h, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
  put_uv(hdr, &h, (uint64_t)(maxt - mint));
  if ((uint64_t)s->sealed_len + h + len > UINT32_MAX || s->nsealed == UINT16_MAX) return MD_ENOMEM;
  uint8_t *nb = realloc(s->sealed, s->sealed_len + h + len);
  if (!nb) return MD_ENOMEM;
  memcpy(nb + s->sealed_len, hdr, h);
  memcpy(nb + s->sealed_len + h, data, len);
  s->sealed = nb;
  s->sealed_len += (uint32_t)(h + len);
  s->nsealed++;
  return 0;
}

static int64_t sealed_last_maxt(const series_t *s) {
  sealed_it_t it = {0};
  int64_t m = 0;
  while (sealed_next(s, &it)) m = it.maxt;
  return m;
}

bool series_empty(const series_t *s) { return s->app.count == 0 && s->nsealed == 0 && (!s->ooo || !s->ooo->n); }

size_t series_samples(const series_t *s) {
  size_t n = s->app.count + (s->ooo ? s->ooo->n : 0);
  sealed_it_t it = {0};
  while (sealed_next(s, &it)) {
    int c = chunk_count(it.p, it.len);
    if (c > 0) n += (size_t)c;
  }
  return n;
}

size_t series_chunks(const series_t *s) { return s->nsealed + (s->app.count ? 1 : 0); }

size_t series_bytes(const series_t *s) {
  size_t b = sizeof *s + 2 * s->id.nlabels * sizeof(uint32_t) + s->app.cap + s->sealed_len;
  if (s->ooo) b += sizeof *s->ooo + s->ooo->cap * sizeof(tsdb_sample_t);
  return b;
}

int series_seal(series_t *s) {
  chunk_app_t *a = &s->app;
  if (a->count == 0) return 0;
  int64_t ts[CHUNK_MAX_SAMPLES];
  double v[CHUNK_MAX_SAMPLES];
  int n = chunk_decode(a->buf, chunk_app_bytes(a), ts, v, CHUNK_MAX_SAMPLES);
  uint8_t *sealed = NULL;
  size_t slen = 0;
  const uint8_t *data = a->buf;
  size_t len = chunk_app_bytes(a);
  /* Keep the stream itself when sealing fails or does not pay: it decodes the same. */
  if (n == (int)a->count && chunk_seal(ts, v, (size_t)n, &sealed, &slen) == 0 && slen < len) {
    data = sealed;
    len = slen;
  }
  int rc = sealed_push(s, data, len, chunk_app_first_ts(a), a->last_ts, s->nsealed ? sealed_last_maxt(s) : 0);
  free(sealed);
  if (rc) return rc;
  chunk_app_free(a);
  chunk_app_init(a);
  return 0;
}

/* Decodes a chunk into caller arrays sized CHUNK_MAX_SAMPLES, or heap arrays when bigger. */
static int find_in_chunk(const uint8_t *p, size_t len, int64_t ts, uint64_t *bits) {
  int64_t tsb[CHUNK_MAX_SAMPLES];
  double vb[CHUNK_MAX_SAMPLES];
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

/* Value bits of the in-order sample at ts, if the stream holds one. */
static int stream_find(const series_t *s, int64_t ts, uint64_t *bits) {
  if (s->app.count && ts >= chunk_app_first_ts(&s->app)) {
    if (ts == s->app.last_ts) {
      *bits = s->app.last_bits;
      return 1;
    }
    return find_in_chunk(s->app.buf, chunk_app_bytes(&s->app), ts, bits);
  }
  sealed_it_t it = {0};
  while (sealed_next(s, &it)) {
    if (ts < it.mint) return 0;
    if (ts <= it.maxt) return find_in_chunk(it.p, it.len, ts, bits);
  }
  return 0;
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
  size_t base = out->n, k = base;
  if (n > 0 && out->ts[base] >= mint && out->ts[base + (size_t)n - 1] <= maxt) {
    out->n = base + (size_t)n; /* whole chunk in range: no filtering pass */
    return 0;
  }
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
  sealed_it_t it = {0};
  while (sealed_next(s, &it)) {
    if (it.maxt < mint || it.mint > maxt) continue;
    if ((rc = decode_into(it.p, it.len, mint, maxt, out))) return rc;
  }
  if (s->app.count && s->app.last_ts >= mint && chunk_app_first_ts(&s->app) <= maxt) {
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
  if (s->nsealed) {
    /* Rebuild the sealed buffer without the chunks that end at or before t. */
    series_t keep = {0};
    sealed_it_t it = {0};
    int64_t prev = 0;
    bool ok = true;
    while (sealed_next(s, &it)) {
      if (it.maxt <= t) continue;
      if (sealed_push(&keep, it.p, it.len, it.mint, it.maxt, prev)) {
        ok = false;
        break;
      }
      prev = it.maxt;
    }
    if (ok) {
      free(s->sealed);
      s->sealed = keep.sealed;
      s->sealed_len = keep.sealed_len;
      s->nsealed = keep.nsealed;
    } else {
      free(keep.sealed); /* out of memory: keep everything, readers dedup against blocks */
    }
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
  sealed_it_t it = {0};
  if (sealed_next(s, &it)) s->min_ts = it.mint;
  else if (s->app.count) s->min_ts = chunk_app_first_ts(&s->app);
  if (s->ooo && s->ooo->s[0].ts < s->min_ts) s->min_ts = s->ooo->s[0].ts;
  /* max_ts stays: it orders future appends even when the stream is empty. */
}
