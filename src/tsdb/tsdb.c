/*
 * tsdb — the database object: open (load blocks, replay the WAL), the append path, stats,
 * the background maintenance thread, close. Locks and their order are in tsdb_int.h.
 *
 * The append path, per batch series: hash the sorted labels, find the series under the
 * tenant's read lock (create it under the write lock, logging its WAL series record while
 * that lock is held so any sample record naming the ref comes after it in the log), append
 * samples under the series' stripe lock, and encode the accepted ones into one WAL samples
 * record. One wal_enqueue + wal_wait per batch: the return means "written" (and fsynced
 * under fsync=always). Samples are applied to the head before the WAL write; when the write
 * fails the call returns MD_ENOSPC/MD_EIO and the caller must not acknowledge; a retry is
 * then a same-value duplicate, a no-op for the head that is still logged, so the retry's
 * acknowledgement is backed by the WAL. (Such unacknowledged head samples may be queried
 * and persisted before the retry: at-least-once, never lost once acknowledged.)
 */
#include "tsdb_int.h"
#include "batch_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

#define MAX_TENANTS 65535

void tsdb_options_default(tsdb_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->retention_ms = 15LL * 24 * 3600 * 1000;
  opt->block_span_ms = 2LL * 3600 * 1000;
  opt->ooo_window_ms = 10LL * 60 * 1000;
  opt->fsync = TSDB_FSYNC_INTERVAL;
  opt->fsync_interval_ms = 1000;
  opt->background = true;
  opt->raw_retention_ms = 0; /* 0 = same as retention_ms */
  opt->tier1_resolution_ms = 5LL * 60 * 1000;
  opt->tier1_retention_ms = 30LL * 24 * 3600 * 1000;
  opt->tier2_resolution_ms = 3600LL * 1000;
  opt->tier2_retention_ms = 365LL * 24 * 3600 * 1000;
}

void atomic_min64(_Atomic int64_t *a, int64_t v) {
  int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
  while (v < cur && !atomic_compare_exchange_weak(a, &cur, v)) {
  }
}

void atomic_max64(_Atomic int64_t *a, int64_t v) {
  int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
  while (v > cur && !atomic_compare_exchange_weak(a, &cur, v)) {
  }
}

/* ---- tenants ------------------------------------------------------------------------ */

tenant_t *tenant_by_no(tsdb_t *db, uint16_t no) {
  pthread_rwlock_rdlock(&db->tenants_lock);
  tenant_t *t = no < db->ntenants ? db->tenants[no] : NULL;
  pthread_rwlock_unlock(&db->tenants_lock);
  return t;
}

tenant_t *tenant_get(tsdb_t *db, const char *name, bool create) {
  if (!name) name = "";
  pthread_rwlock_rdlock(&db->tenants_lock);
  for (size_t i = 0; i < db->ntenants; i++) {
    if (strcmp(db->tenants[i]->name, name) == 0) {
      tenant_t *t = db->tenants[i];
      pthread_rwlock_unlock(&db->tenants_lock);
      return t;
    }
  }
  pthread_rwlock_unlock(&db->tenants_lock);
  if (!create) return NULL;
  pthread_rwlock_wrlock(&db->tenants_lock);
  tenant_t *t = NULL;
  for (size_t i = 0; i < db->ntenants; i++) {
    if (strcmp(db->tenants[i]->name, name) == 0) {
      t = db->tenants[i];
      goto out;
    }
  }
  if (db->ntenants >= MAX_TENANTS) goto out;
  if (db->ntenants == db->cap_tenants) {
    size_t nc = db->cap_tenants ? db->cap_tenants * 2 : 8;
    tenant_t **nt = realloc(db->tenants, nc * sizeof *nt);
    if (!nt) goto out;
    db->tenants = nt;
    db->cap_tenants = nc;
  }
  t = calloc(1, sizeof *t);
  if (!t) goto out;
  t->name = strdup(name);
  t->idx = tindex_new();
  if (!t->name || !t->idx) {
    free(t->name);
    tindex_free(t->idx);
    free(t);
    t = NULL;
    goto out;
  }
  pthread_rwlock_init(&t->lock, NULL);
  t->no = (uint16_t)db->ntenants;
  db->tenants[db->ntenants++] = t;
out:
  pthread_rwlock_unlock(&db->tenants_lock);
  return t;
}

static void tenants_free(tsdb_t *db) {
  for (size_t i = 0; i < db->ntenants; i++) {
    tenant_t *t = db->tenants[i];
    size_t n;
    idx_series_t *const *all = tindex_all(t->idx, &n);
    for (size_t k = 0; k < n; k++) series_free((series_t *)all[k]);
    tindex_free(t->idx);
    pthread_rwlock_destroy(&t->lock);
    free(t->name);
    free(t);
  }
  free(db->tenants);
  db->tenants = NULL;
  db->ntenants = 0;
}

static _Thread_local const symtab_t *tl_sort_syms;

static int cmp_series(const void *a, const void *b) {
  const series_t *x = *(series_t *const *)a, *y = *(series_t *const *)b;
  return idx_series_cmp(tl_sort_syms, &x->id, &y->id);
}

int tenant_series_sorted(tsdb_t *db, tenant_t *t, series_t ***out, size_t *n) {
  pthread_rwlock_rdlock(&t->lock);
  size_t k;
  idx_series_t *const *all = tindex_all(t->idx, &k);
  series_t **arr = malloc((k ? k : 1) * sizeof *arr);
  if (!arr) {
    pthread_rwlock_unlock(&t->lock);
    return MD_ENOMEM;
  }
  memcpy(arr, all, k * sizeof *arr);
  pthread_rwlock_unlock(&t->lock);
  tl_sort_syms = db->syms;
  qsort(arr, k, sizeof *arr, cmp_series);
  *out = arr;
  *n = k;
  return 0;
}

/* ---- series creation ------------------------------------------------------------------ */

static int ref_register(tsdb_t *db, uint32_t ref, series_t *s) {
  size_t page = ref >> REF_PAGE_BITS;
  if (!db->ref_pages[page]) {
    db->ref_pages[page] = calloc((size_t)1 << REF_PAGE_BITS, sizeof(series_t *));
    if (!db->ref_pages[page]) return MD_ENOMEM;
  }
  db->ref_pages[page][ref & ((1u << REF_PAGE_BITS) - 1)] = s;
  return 0;
}

static void encode_series_record(sb_t *b, uint32_t ref, const char *tenant, const tsdb_label_t *ls, size_t n) {
  wal_put_uvarint(b, ref);
  size_t tl = strlen(tenant);
  wal_put_uvarint(b, tl);
  sb_append(b, tenant, tl);
  wal_put_uvarint(b, n);
  for (size_t i = 0; i < n; i++) {
    size_t a = strlen(ls[i].name), v = strlen(ls[i].value);
    wal_put_uvarint(b, a);
    sb_append(b, ls[i].name, a);
    wal_put_uvarint(b, v);
    sb_append(b, ls[i].value, v);
  }
}

/* Creates (or finds) the series. ref = 0: assign a new ref and log it to the WAL (*lsn set);
 * else replay of a logged ref. Returns the series, NULL with *why set on failure. */
static series_t *series_create(tsdb_t *db, tenant_t *t, lhash_t h, const tsdb_label_t *ls, size_t n, uint32_t ref,
                               uint64_t *lsn, int *why) {
  uint32_t stack_ids[64];
  uint32_t *ids = stack_ids;
  series_t *s = NULL;
  *why = 0;
  if (n == 0 || n > UINT16_MAX) {
    *why = TSDB_REJECT_INVALID;
    return NULL;
  }
  pthread_rwlock_wrlock(&t->lock);
  s = (series_t *)tindex_lookup(t->idx, db->syms, h, ls, n, true);
  if (s) goto out;
  if (!ref && db->opt.max_series_per_tenant && tindex_series_count(t->idx) >= db->opt.max_series_per_tenant) {
    *why = TSDB_REJECT_SERIES_LIMIT;
    goto out;
  }
  if (2 * n > 64 && !(ids = malloc(2 * n * sizeof *ids))) {
    *why = MD_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    ids[2 * i] = symtab_intern(db->syms, ls[i].name, strlen(ls[i].name));
    ids[2 * i + 1] = symtab_intern(db->syms, ls[i].value, strlen(ls[i].value));
    if (ids[2 * i] == UINT32_MAX || ids[2 * i + 1] == UINT32_MAX) {
      *why = MD_ENOMEM;
      goto out;
    }
  }
  uint32_t r = ref ? ref : atomic_fetch_add(&db->next_ref, 1);
  s = series_new(r, t->no, h, ids, n);
  if (!s) {
    *why = MD_ENOMEM;
    goto out;
  }
  if (ref_register(db, r, s) || tindex_add(t->idx, &s->id)) {
    /* The index may hold a partial entry; keeping s alive (leaked into the index) is
     * safer than freeing memory it may point to. */
    *why = MD_ENOMEM;
    s = NULL;
    goto out;
  }
  if (!ref && db->wal) {
    sb_t rec = {0};
    encode_series_record(&rec, r, t->name, ls, n);
    int rc = rec.oom ? MD_ENOMEM : wal_enqueue(db->wal, WAL_REC_SERIES, rec.buf, rec.len, lsn);
    sb_free(&rec);
    if (rc) {
      *why = rc;
      /* The series exists in memory only; its samples will fail to be logged below. */
    }
  }
  atomic_fetch_add(&db->series_created, 1);
out:
  pthread_rwlock_unlock(&t->lock);
  if (ids != stack_ids) free(ids);
  return s;
}

/* ---- append ---------------------------------------------------------------------------- */

static void add_error(tsdb_append_result_t *res, size_t series, tsdb_reject_t why, int64_t ts, const char *msg) {
  if (!res || res->nerrors >= TSDB_MAX_REPORTED_ERRORS) return;
  res->errors[res->nerrors].series_index = series;
  res->errors[res->nerrors].reason = why;
  res->errors[res->nerrors].ts = ts;
  snprintf(res->errors[res->nerrors].message, sizeof res->errors[0].message, "%s", msg);
  res->nerrors++;
}

/* Public refs are (instance << 32) | series ref. Series refs are never reused within one
 * tsdb_t and instance numbers never within one process (refs cannot leave it), so a ref
 * that passes these checks names the very series it was returned for. */
static tsdb_series_ref_t public_ref(const tsdb_t *db, const series_t *s) {
  return (uint64_t)db->instance << 32 | s->id.ref;
}

/* Caller holds gc_lock for reading, so the series stays valid for the call. A ref that this
 * tsdb_t returned was published (ref_register) before it was returned; only a forged ref
 * naming a series that another thread is creating right now could read its table slot
 * while it is written (a plain pointer store; the tenant check then still applies). */
static series_t *series_from_public_ref(tsdb_t *db, const tenant_t *t, tsdb_series_ref_t pref) {
  if ((uint32_t)(pref >> 32) != db->instance) return NULL;
  uint32_t r = (uint32_t)pref;
  if (r == 0 || r >= atomic_load_explicit(&db->next_ref, memory_order_acquire)) return NULL;
  series_t *s = series_by_ref(db, r);
  if (!s || s->id.tenant != t->no) return NULL;
  return s;
}

int tsdb_append(tsdb_t *db, const char *tenant_name, const tsdb_batch_t *b, tsdb_append_result_t *res) {
  return tsdb_append_refs(db, tenant_name, b, res, NULL);
}

/* Prefetches the write position of an open chunk another thread may be appending to (it
 * holds the series' stripe lock; we do not). The two fields are read racily on purpose: a
 * stale or torn value only makes a useless prefetch, and a prefetch never faults. Volatile
 * loads, so each is one read of the field as it is; not instrumented by ThreadSanitizer, which
 * would report the intended race (it instruments atomics even here). */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
__attribute__((no_sanitize("thread")))
#endif
static inline void prefetch_write_pos(const chunk_app_t *a) {
  const uint8_t *b = *(const uint8_t *const volatile *)&a->buf;
  if (b) __builtin_prefetch(b + (*(const volatile uint32_t *)&a->nbits >> 3), 1);
}

int tsdb_append_refs(tsdb_t *db, const char *tenant_name, const tsdb_batch_t *b, tsdb_append_result_t *res,
                     tsdb_series_ref_t *refs) {
  tsdb_append_result_t local;
  if (!res) res = &local;
  memset(res, 0, sizeof *res);
  size_t ns = tsdb_batch_series_count(b);
  if (ns == 0) return 0;
  if (refs) memset(refs, 0, ns * sizeof *refs);
  size_t stale_samples = 0;
  tenant_t *t = tenant_get(db, tenant_name, true);
  if (!t) return MD_ENOMEM;
  pthread_rwlock_rdlock(&db->gc_lock);
  int rc = 0;
  sb_t rec = {0}, grp = {0};
  uint64_t max_lsn = 0;
  int64_t base = 0;
  bool have_base = false;
  int64_t bmin = INT64_MAX, bmax = INT64_MIN;
  int64_t ooo = db->opt.ooo_window_ms;
  uint32_t prev_ref = 0;
  /* head_min must be lowered before any sample reaches the head: the persister trusts it
   * as a lower bound of head data. */
  int64_t lowest = INT64_MAX;
  for (size_t k = 0; k < b->nsamples; k++) /* every sample of a batch belongs to a series */
    if (b->samples[k].ts < lowest) lowest = b->samples[k].ts;
  if (lowest != INT64_MAX) atomic_min64(&db->head_min, lowest);
  enum { SHORT = 2 * WAL_SAMPLE_MAX };
  /* Resolve every series under one read lock (series are never freed while open). */
  /* Series given by labels are hashed and looked up together (hs/found hold only those,
   * lab maps them back to batch positions); series given by ref skip the hashing. */
  idx_series_t *stack_found[256], *stack_lfound[256];
  lhash_t stack_h[256];
  uint32_t stack_lab[256];
  idx_series_t **found = ns <= 256 ? stack_found : malloc(ns * sizeof *found);
  idx_series_t **lfound = ns <= 256 ? stack_lfound : malloc(ns * sizeof *lfound);
  lhash_t *hs = ns <= 256 ? stack_h : malloc(ns * sizeof *hs);
  uint32_t *lab = ns <= 256 ? stack_lab : malloc(ns * sizeof *lab);
  if (!found || !lfound || !hs || !lab || ns > UINT32_MAX) {
    if (found != stack_found) free(found);
    if (lfound != stack_lfound) free(lfound);
    if (hs != stack_h) free(hs);
    if (lab != stack_lab) free(lab);
    pthread_rwlock_unlock(&db->gc_lock);
    return MD_ENOMEM;
  }
  size_t nlab = 0;
  for (size_t i = 0; i < ns; i++) {
    batch_view_t bv = batch_view(b, i);
    if (bv.ref) continue;
    hs[nlab] = labels_hash_len(bv.labels, bv.lens, bv.nlabels);
    lab[nlab++] = (uint32_t)i;
  }
  pthread_rwlock_rdlock(&t->lock);
  if (nlab < ns) {
    for (size_t i = 0; i < ns; i++) {
      tsdb_series_ref_t pr = batch_view(b, i).ref;
      found[i] = pr ? (idx_series_t *)series_from_public_ref(db, t, pr) : NULL;
    }
  }
  if (nlab) tindex_lookup_many(t->idx, hs, nlab, nlab == ns ? found : lfound);
  pthread_rwlock_unlock(&t->lock);
  if (nlab && nlab < ns)
    for (size_t j = 0; j < nlab; j++) found[lab[j]] = lfound[j];
  for (size_t i = 0; i < ns; i++) {
    batch_view_t bv = batch_view(b, i);
    const tsdb_label_t *ls = bv.labels;
    size_t nl = bv.nlabels, nsm = bv.nsamples;
    const tsdb_sample_t *sm = bv.samples;
    series_t *s = (series_t *)found[i];
    /* Two-stage prefetch: series a few ahead (their open chunk's pointer and state), and
     * the byte the next sample of a nearer one will be written to. At 180 k series neither
     * is in cache, and the second depends on the first (bench_tsdb 180 k by refs: ~2.4-3.1
     * -> ~3.7-4.1 M samples/s/core). The chunk fields are read without the series' stripe
     * lock, as relaxed atomics: a stale pointer only makes a useless prefetch (which never
     * faults). */
    if (i + 8 < ns && found[i + 8]) {
      const series_t *ns8 = (const series_t *)found[i + 8];
      __builtin_prefetch(&ns8->app, 1);
      __builtin_prefetch(&ns8->max_ts, 1); /* series_t spans two or three cache lines */
    }
    if (i + 4 < ns && found[i + 4]) {
      __builtin_prefetch(stripe_of(db, found[i + 4]->ref), 1); /* 4096 locks: 160 KiB */
      prefetch_write_pos(&((series_t *)found[i + 4])->app);
    }
    if (bv.ref) {
      if (!s) {
        res->series_rejected++;
        res->series_stale_refs++;
        res->samples_rejected += nsm;
        stale_samples += nsm;
        add_error(res, i, TSDB_REJECT_STALE_REF, nsm ? sm[0].ts : 0,
                  "unknown or stale series ref (series removed, database reopened, or another tenant's): "
                  "resend the series with its labels");
        continue;
      }
    } else if (nl == 0) {
      res->series_rejected++;
      res->samples_rejected += nsm;
      add_error(res, i, TSDB_REJECT_INVALID, 0, "series has no labels");
      continue;
    } else if (!s) {
      lhash_t h = nlab == ns ? hs[i] : labels_hash_len(ls, bv.lens, nl);
      int why;
      uint64_t lsn = 0;
      s = series_create(db, t, h, ls, nl, 0, &lsn, &why);
      if (lsn > max_lsn) max_lsn = lsn;
      if (!s) {
        if (why == MD_ENOMEM) {
          rc = MD_ENOMEM;
          goto out;
        }
        res->series_rejected++;
        res->samples_rejected += nsm;
        add_error(res, i, (tsdb_reject_t)why, nsm ? sm[0].ts : 0,
                  why == TSDB_REJECT_SERIES_LIMIT ? "series limit per tenant reached" : "invalid series");
        continue;
      }
      if (why < 0) {
        rc = why;
        goto out;
      }
      res->series_created++;
    }
    if (refs) refs[i] = public_ref(db, s);
    if (nsm == 0) continue;
    /* The series' WAL samples are encoded straight into memory: a small stack buffer for
     * the usual one sample per series per batch, grp for more. */
    uint8_t small[4 * WAL_SAMPLE_MAX] = {0}, *sbuf = small;
    size_t slen = 0;
    if (nsm > 4) {
      sb_reset(&grp);
      if (!sb_reserve(&grp, nsm * WAL_SAMPLE_MAX)) {
        rc = MD_ENOMEM;
        goto out;
      }
      sbuf = (uint8_t *)grp.buf;
    }
    size_t added = 0, logged = 0;
    int64_t prev_ts = 0;
    pthread_mutex_t *mu = stripe_of(db, s->id.ref);
    pthread_mutex_lock(mu);
    /* Read under the stripe lock: the persister raises it before reading each series under
     * the same lock, so a sample it did not see can never be older than the block it writes. */
    int64_t min_valid = atomic_load(&db->min_valid);
    for (size_t k = 0; k < nsm; k++) {
      int r = series_append(s, sm[k].ts, sm[k].v, min_valid, ooo);
      if (r == HEAD_ADDED || r == HEAD_SAME) {
        /* A same-value duplicate is a no-op for the head but is logged all the same: the
         * sample it repeats may come from an append whose WAL write failed (disk full) or
         * is still in flight in another thread, and this call's success acknowledges it.
         * Replay treats the repeat as the no-op it is. */
        if (!have_base) {
          base = sm[k].ts;
          have_base = true;
        }
        slen += wal_sample_encode(sbuf + slen, sm[k].ts - (logged ? prev_ts : base), sm[k].v);
        prev_ts = sm[k].ts;
        logged++;
        if (r == HEAD_SAME) {
          res->samples_duplicate_ignored++;
          continue;
        }
        added++;
        if (sm[k].ts < bmin) bmin = sm[k].ts;
        if (sm[k].ts > bmax) bmax = sm[k].ts;
      } else if (r == HEAD_TOO_OLD) {
        res->samples_rejected++;
        add_error(res, i, TSDB_REJECT_TOO_OLD, sm[k].ts, "sample is too old (out of bounds)");
      } else if (r == HEAD_DUPLICATE) {
        res->samples_rejected++;
        add_error(res, i, TSDB_REJECT_DUPLICATE, sm[k].ts, "duplicate timestamp with a different value");
      } else {
        pthread_mutex_unlock(mu);
        rc = r;
        goto out;
      }
    }
    pthread_mutex_unlock(mu);
    if (logged) {
      /* [base, first series only] ref delta, count, samples. The room check is inline:
       * sb_reserve is called only to grow. A fixed-size copy is a few moves, a variable
       * one a libc call; both sources have SHORT initialised bytes (small is zeroed, grp
       * holds >= 5 samples' room). */
      size_t need = 30 + (slen > SHORT ? slen : SHORT);
      if (rec.len + need + 1 > rec.cap && !sb_reserve(&rec, need)) {
        rc = MD_ENOMEM;
        goto out;
      }
      uint8_t *q = (uint8_t *)rec.buf + rec.len, *q0 = q;
      if (rec.len == 0) q += wal_varint_encode(q, base);
      q += wal_varint_encode(q, (int64_t)s->id.ref - (int64_t)prev_ref);
      q += wal_uvarint_encode(q, logged);
      if (slen <= SHORT) memcpy(q, sbuf, SHORT);
      else memcpy(q, sbuf, slen);
      q += slen;
      rec.len += (size_t)(q - q0);
      prev_ref = s->id.ref;
      res->samples_added += added;
    }
  }
  if (rec.buf) rec.buf[rec.len] = 0;
  if (rec.oom || grp.oom) {
    rc = MD_ENOMEM;
    goto out;
  }
  if (rec.len) {
    uint64_t lsn;
    if ((rc = wal_enqueue(db->wal, WAL_REC_SAMPLES, rec.buf, rec.len, &lsn))) goto out;
    max_lsn = lsn;
  }
  if (max_lsn) {
    rc = wal_wait(db->wal, max_lsn);
    if (rc) {
      atomic_store(&db->last_write_error, rc);
      goto out;
    }
  }
  atomic_store(&db->last_write_error, 0);
  if (res->samples_added) {
    atomic_min64(&db->min_time, bmin);
    atomic_max64(&db->max_time, bmax);
  }
out:
  if (rc && refs) memset(refs, 0, ns * sizeof *refs);
  atomic_fetch_add_explicit(&db->samples_appended, rc ? 0 : res->samples_added, memory_order_relaxed);
  atomic_fetch_add_explicit(&db->samples_rejected, res->samples_rejected - stale_samples, memory_order_relaxed);
  sb_free(&rec);
  sb_free(&grp);
  if (found != stack_found) free(found);
  if (lfound != stack_lfound) free(lfound);
  if (hs != stack_h) free(hs);
  if (lab != stack_lab) free(lab);
  pthread_rwlock_unlock(&db->gc_lock);
  return rc;
}

/* ---- WAL replay ---------------------------------------------------------------------- */

typedef struct replay_ctx {
  tsdb_t *db;
  uint64_t unknown_refs, samples, rejected;
  char *scratch;
  size_t scratch_cap;
} replay_ctx_t;

static int replay_series(replay_ctx_t *rc, const uint8_t *p, size_t n) {
  tsdb_t *db = rc->db;
  const uint8_t *end = p + n;
  uint64_t ref, tl, nl;
  if (!wal_get_uvarint(&p, end, &ref) || ref == 0 || ref >= UINT32_MAX) return 0;
  if (!wal_get_uvarint(&p, end, &tl) || tl > (size_t)(end - p)) return 0;
  /* Everything is copied NUL-terminated into scratch: tenant, then name/value pairs. */
  if (n * 2 + 16 > rc->scratch_cap) {
    size_t nc = n * 2 + 16;
    char *ns = realloc(rc->scratch, nc);
    if (!ns) return MD_ENOMEM;
    rc->scratch = ns;
    rc->scratch_cap = nc;
  }
  char *w = rc->scratch;
  char *tenant = w;
  memcpy(w, p, tl);
  w[tl] = 0;
  w += tl + 1;
  p += tl;
  if (!wal_get_uvarint(&p, end, &nl) || nl == 0 || nl > 4096) return 0;
  tsdb_label_t ls[4096];
  for (size_t i = 0; i < nl; i++) {
    uint64_t a, v;
    if (!wal_get_uvarint(&p, end, &a) || a > (size_t)(end - p)) return 0;
    ls[i].name = w;
    memcpy(w, p, a);
    w[a] = 0;
    w += a + 1;
    p += a;
    if (!wal_get_uvarint(&p, end, &v) || v > (size_t)(end - p)) return 0;
    ls[i].value = w;
    memcpy(w, p, v);
    w[v] = 0;
    w += v + 1;
    p += v;
  }
  for (size_t i = 1; i < nl; i++)
    if (strcmp(ls[i - 1].name, ls[i].name) >= 0) return 0; /* not a valid label set */
  if (series_by_ref(db, (uint32_t)ref)) return 0;         /* re-logged after a failed write */
  tenant_t *t = tenant_get(db, tenant, true);
  if (!t) return MD_ENOMEM;
  int why;
  series_t *s = series_create(db, t, labels_hash(ls, nl), ls, nl, (uint32_t)ref, NULL, &why);
  if (!s) return why == MD_ENOMEM ? MD_ENOMEM : 0;
  if (s->id.ref != ref && ref_register(db, (uint32_t)ref, s)) return MD_ENOMEM; /* alias */
  uint32_t next = (uint32_t)ref + 1;
  uint32_t cur = atomic_load(&db->next_ref);
  while (next > cur && !atomic_compare_exchange_weak(&db->next_ref, &cur, next)) {
  }
  return 0;
}

static int replay_append(replay_ctx_t *rc, series_t *s, int64_t ts, double v) {
  tsdb_t *db = rc->db;
  int r = series_append(s, ts, v, atomic_load(&db->min_valid), -1);
  if (r < 0) return r;
  if (r == HEAD_ADDED) {
    rc->samples++;
    atomic_min64(&db->head_min, ts);
    atomic_min64(&db->min_time, ts);
    atomic_max64(&db->max_time, ts);
  } else if (r != HEAD_SAME) {
    rc->rejected++;
  }
  return 0;
}

static int replay_samples(replay_ctx_t *rc, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  int64_t base;
  if (!wal_get_varint(&p, end, &base)) return 0;
  int64_t ref = 0;
  while (p < end) {
    int64_t dref;
    uint64_t cnt;
    if (!wal_get_varint(&p, end, &dref) || !wal_get_uvarint(&p, end, &cnt)) return 0;
    ref += dref;
    series_t *s = ref > 0 && ref < UINT32_MAX ? series_by_ref(rc->db, (uint32_t)ref) : NULL;
    int64_t ts = base;
    for (uint64_t k = 0; k < cnt; k++) {
      int64_t d;
      double v;
      if (!wal_get_varint(&p, end, &d) || !wal_get_value(&p, end, &v)) return 0;
      ts += d;
      if (!s) {
        rc->unknown_refs++;
        continue;
      }
      int r = replay_append(rc, s, ts, v);
      if (r) return r;
    }
  }
  return 0;
}

static int replay_chunk(replay_ctx_t *rc, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  uint64_t ref;
  if (!wal_get_uvarint(&p, end, &ref) || ref == 0 || ref >= UINT32_MAX) return 0;
  series_t *s = series_by_ref(rc->db, (uint32_t)ref);
  int cnt = chunk_count(p, (size_t)(end - p));
  if (cnt <= 0) return 0;
  if (!s) {
    rc->unknown_refs += (uint64_t)cnt;
    return 0;
  }
  int64_t *ts = malloc((size_t)cnt * sizeof *ts);
  double *v = malloc((size_t)cnt * sizeof *v);
  int r = 0;
  if (!ts || !v) {
    r = MD_ENOMEM;
    goto out;
  }
  int got = chunk_decode(p, (size_t)(end - p), ts, v, (size_t)cnt);
  for (int i = 0; i < got && !r; i++) r = replay_append(rc, s, ts[i], v[i]);
out:
  free(ts);
  free(v);
  return r;
}

static int replay_record(void *ctx, uint8_t type, const uint8_t *p, size_t n) {
  replay_ctx_t *rc = ctx;
  switch (type) {
  case WAL_REC_SERIES: return replay_series(rc, p, n);
  case WAL_REC_SAMPLES: return replay_samples(rc, p, n);
  case WAL_REC_CHUNK: return replay_chunk(rc, p, n);
  }
  return 0;
}

/* ---- background ------------------------------------------------------------------------ */

static void *bg_main(void *arg) {
  tsdb_t *db = arg;
  int64_t last_compact = md_mono_ns();
  pthread_mutex_lock(&db->bg_mu);
  while (!db->bg_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&db->bg_cv, &db->bg_mu, &ts);
    if (db->bg_stop) break;
    pthread_mutex_unlock(&db->bg_mu);
    persist_due(db);
    if (md_mono_ns() - last_compact > 60LL * 1000000000) {
      tsdb_compact(db);
      last_compact = md_mono_ns();
    }
    pthread_mutex_lock(&db->bg_mu);
  }
  pthread_mutex_unlock(&db->bg_mu);
  return NULL;
}

/* ---- open / close ---------------------------------------------------------------------- */

int tsdb_open(const char *dir, const tsdb_options_t *opt, tsdb_t **out, char *err, size_t errlen) {
  tsdb_t *db = calloc(1, sizeof *db);
  if (!db) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  int rc = 0;
  if (opt) db->opt = *opt;
  else tsdb_options_default(&db->opt);
  if (db->opt.block_span_ms <= 0) db->opt.block_span_ms = 2LL * 3600 * 1000;
  if (db->opt.ooo_window_ms < 0) db->opt.ooo_window_ms = 0;
  if (db->opt.fsync_interval_ms <= 0) db->opt.fsync_interval_ms = 1000;
  if (strlen(dir) >= sizeof db->dir) {
    free(db);
    return md_error(err, errlen, MD_EINVAL, "data directory path too long");
  }
  snprintf(db->dir, sizeof db->dir, "%s", dir);
  snprintf(db->blocks_dir, sizeof db->blocks_dir, "%s/blocks", dir);
  snprintf(db->wal_dir, sizeof db->wal_dir, "%s/wal", dir);
  pthread_rwlock_init(&db->tenants_lock, NULL);
  pthread_rwlock_init(&db->blocks_lock, NULL);
  pthread_mutex_init(&db->tomb_mu, NULL);
  pthread_mutex_init(&db->maint_mu, NULL);
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  /* Writer preference: a waiting truncation is not starved by a steady stream of appends. */
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&db->gc_lock, &ra);
  pthread_rwlockattr_destroy(&ra);
  db->trunc_pending = INT64_MIN;
  pthread_mutex_init(&db->bg_mu, NULL);
  pthread_cond_init(&db->bg_cv, NULL);
  for (size_t i = 0; i < TSDB_STRIPES; i++) pthread_mutex_init(&db->stripes[i], NULL);
  atomic_store(&db->next_ref, 1);
  {
    static _Atomic uint32_t instances;
    do db->instance = atomic_fetch_add(&instances, 1) + 1;
    while (db->instance == 0);
  }
  atomic_store(&db->min_valid, INT64_MIN);
  atomic_store(&db->min_time, INT64_MAX);
  atomic_store(&db->head_min, INT64_MAX);
  atomic_store(&db->max_time, INT64_MIN);
  db->syms = symtab_new();
  if (!db->syms) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  if (md_mkdir_p(db->dir) != 0 || md_mkdir_p(db->blocks_dir) != 0) {
    rc = md_error(err, errlen, MD_EIO, "cannot create data directory %s: %s", dir, strerror(errno));
    goto fail;
  }
  if ((rc = tombs_load(db, err, errlen))) goto fail;
  if ((rc = blocks_load(db, err, errlen))) goto fail;
  db->replaying = true;
  replay_ctx_t rctx = {.db = db};
  wal_replay_stats_t st;
  int64_t t0 = md_mono_ns();
  rc = wal_replay(db->wal_dir, replay_record, &rctx, &st, err, errlen);
  free(rctx.scratch);
  db->replaying = false;
  if (rc) goto fail;
  atomic_store(&db->wal_corruptions, st.corruptions);
  if (st.records)
    log_info("tsdb: replayed %" PRIu64 " WAL records (%" PRIu64 " bytes, %" PRIu64 " samples, %" PRIu64
             " series) in %.1f ms; %" PRIu64 " damaged tails cut (%" PRIu64 " bytes), %" PRIu64
             " samples of unknown series",
             st.records, st.bytes, rctx.samples, (uint64_t)atomic_load(&db->series_created),
             (double)(md_mono_ns() - t0) / 1e6, st.corruptions, st.bytes_lost, rctx.unknown_refs);
  wal_options_t wo = {.fsync = db->opt.fsync, .fsync_interval_ms = db->opt.fsync_interval_ms};
  if ((rc = wal_open(db->wal_dir, &wo, &db->wal, err, errlen))) goto fail;
  if (db->opt.background) {
    if (pthread_create(&db->bg, NULL, bg_main, db) != 0) {
      rc = md_error(err, errlen, MD_ERR, "cannot start the maintenance thread");
      goto fail;
    }
    db->bg_running = true;
  }
  *out = db;
  return 0;
fail:
  tsdb_close(db);
  return rc;
}

void tsdb_close(tsdb_t *db) {
  if (!db) return;
  if (db->bg_running) {
    pthread_mutex_lock(&db->bg_mu);
    db->bg_stop = true;
    pthread_cond_broadcast(&db->bg_cv);
    pthread_mutex_unlock(&db->bg_mu);
    pthread_join(db->bg, NULL);
  }
  wal_close(db->wal);
  blocks_unload(db);
  tenants_free(db);
  for (size_t i = 0; i < REF_PAGES; i++) free(db->ref_pages[i]);
  symtab_free(db->syms);
  tombs_free(db);
  for (size_t i = 0; i < TSDB_STRIPES; i++) pthread_mutex_destroy(&db->stripes[i]);
  pthread_rwlock_destroy(&db->tenants_lock);
  pthread_rwlock_destroy(&db->blocks_lock);
  pthread_mutex_destroy(&db->tomb_mu);
  pthread_mutex_destroy(&db->maint_mu);
  pthread_rwlock_destroy(&db->gc_lock);
  pthread_mutex_destroy(&db->bg_mu);
  pthread_cond_destroy(&db->bg_cv);
  free(db);
}

/* ---- stats ------------------------------------------------------------------------------ */

void tsdb_get_stats(tsdb_t *db, tsdb_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  uint64_t mem = symtab_bytes(db->syms);
  for (size_t i = 0; i < nt; i++) {
    tenant_t *t = tenant_by_no(db, (uint16_t)i);
    if (!t) continue;
    pthread_rwlock_rdlock(&t->lock);
    size_t n;
    idx_series_t *const *all = tindex_all(t->idx, &n);
    mem += tindex_bytes(t->idx);
    for (size_t k = 0; k < n; k++) {
      series_t *s = (series_t *)all[k];
      pthread_mutex_t *mu = stripe_of(db, s->id.ref);
      pthread_mutex_lock(mu);
      if (!series_empty(s)) out->series++;
      out->head_samples += series_samples(s);
      out->head_chunks += series_chunks(s);
      mem += series_bytes(s);
      pthread_mutex_unlock(mu);
    }
    pthread_rwlock_unlock(&t->lock);
  }
  out->head_memory_bytes = mem;
  out->samples_appended = atomic_load(&db->samples_appended);
  out->samples_rejected = atomic_load(&db->samples_rejected);
  out->series_created = atomic_load(&db->series_created);
  out->compactions = atomic_load(&db->compactions);
  out->wal_corruptions = atomic_load(&db->wal_corruptions);
  out->last_write_error = atomic_load(&db->last_write_error);
  if (db->wal) {
    wal_stats_t ws;
    wal_get_stats(db->wal, &ws);
    out->wal_bytes = ws.bytes_on_disk;
    out->wal_fsyncs = ws.fsyncs;
  }
  pthread_rwlock_rdlock(&db->blocks_lock);
  out->blocks = db->nblocks;
  int64_t bmin = INT64_MAX, bmax = INT64_MIN;
  for (size_t i = 0; i < db->nblocks; i++) {
    out->block_bytes += block_bytes(db->blocks[i]);
    if (block_resolution(db->blocks[i]) == 0) out->block_samples += block_samples(db->blocks[i]);
    if (block_mint(db->blocks[i]) < bmin) bmin = block_mint(db->blocks[i]);
    if (block_maxt(db->blocks[i]) > bmax) bmax = block_maxt(db->blocks[i]);
  }
  pthread_rwlock_unlock(&db->blocks_lock);
  /* min_time only ever falls as samples arrive; head_min rises as the head is persisted and
   * retention drops blocks, so the head's part is bounded by both (none when it is empty). */
  int64_t mn = atomic_load(&db->min_time), mx = atomic_load(&db->max_time), hm = atomic_load(&db->head_min);
  if (hm > mn) mn = hm;
  if (out->head_samples == 0) mn = INT64_MAX;
  out->min_time = mn < bmin ? mn : bmin;
  out->max_time = mx > bmax ? mx : bmax;
}
