/*
 * refcache — the push endpoints' series-ref cache and ingest_push, the parse + append + resend
 * loop around it (see ingest.h, "parse + append, through the series-ref cache").
 *
 * The cache maps (partition, 128-bit key of a series' raw text) → tsdb series ref. It is
 * split into RC_SHARDS shards by key, each with its mutex and two open-addressing tables
 * (linear probing, load <= 3/4): `cur` takes every insert; when it holds gen_max entries it
 * becomes `prev` (the old prev is freed) and a new empty cur starts. A lookup that finds its
 * key in prev moves it to cur, so a steady working set up to gen_max entries per shard stays
 * cached and anything unused for a generation is dropped.
 *
 * Each thread also keeps a private first level (ingest_refs_t.l1, the same table type, no
 * lock, emptied when it reaches RC_L1_MAX entries or the cache is cleared): a shard's mutex is
 * a cache line every core writes, and going through it for every series of every request cost
 * more than the table lookup itself. A stale ref found there is caught by the engine like
 * any other.
 *
 * Partitions are exact: the partition string (protocol, tenant, extra labels, db, format)
 * gets a small id from a table, the id is stored in every entry and mixed into the key
 * seeds. Within a partition two raw texts share an entry only if both 64-bit hashes (two
 * independent seeds, random per process) collide.
 *
 * A request's session (ingest_refs_t, one per thread, reused) holds the keys of its batch
 * series in batch order (ictx_series_keyed records them), so the refs tsdb_append_refs
 * returns can be learned, and stale refs (refs[i] == 0 for a series given by ref) can be
 * dropped from the cache and resent: the body is parsed a second time in "resend" mode, in
 * which ictx_probe answers IREF_LABELS for the stale keys and IREF_SKIP for every other
 * series, so the second batch holds exactly the stale series, with their labels.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ingest_int.h"

#define RC_SHARDS 16
#define RC_MAX_PARTITIONS 4096
/* Entries of a thread's private first level (see ictx_probe); emptied when full. */
#define RC_L1_MAX (1u << 18)

typedef struct {
  uint64_t a, b;
  tsdb_series_ref_t ref; /* 0 = empty slot */
  uint32_t pid;
  uint32_t unused;
} rc_entry_t;

typedef struct {
  rc_entry_t *e;
  size_t cap, n; /* cap: power of two (0 = not allocated) */
} rc_table_t;

typedef struct {
  pthread_mutex_t mu;
  rc_table_t cur, prev;
  char pad[64];
} rc_shard_t;

typedef struct {
  char *s;
  size_t n;
  uint64_t h;
} rc_part_t;

struct ingest_refcache {
  rc_shard_t shard[RC_SHARDS];
  size_t gen_max; /* entries per generation per shard */
  uint64_t seed_a, seed_b;
  pthread_mutex_t pmu;
  rc_part_t *parts; /* partition id = index + 1 */
  size_t nparts;
  _Atomic uint64_t hits, misses, stale;
  _Atomic uint64_t epoch; /* bumped by ingest_refcache_clear */
  uint64_t id;            /* unique per cache of the process (tags a thread's first level) */
};

static _Atomic uint64_t next_cache_id = 1;

typedef struct {
  ikey_t k;
  size_t orig; /* the stale series' index in the first batch */
} rc_stale_t;

struct ingest_refs {
  ingest_refcache_t *c;
  uint32_t pid;
  uint64_t epoch; /* the cache's at refs_begin: a clear since then stops learning */
  uint64_t seed_a, seed_b;
  bool resend;
  ikey_t *keys; /* per batch series */
  size_t nkeys, cap_keys;
  rc_stale_t *st; /* open addressing, k {0,0} = empty */
  size_t nst, cap_st;
  tsdb_series_ref_t *refs; /* tsdb_append_refs output */
  size_t cap_refs;
  char *pbuf; /* partition string */
  size_t cap_pbuf;
  uint64_t hits, misses;
  /* The thread's private first level: entries this thread found or learned, read without a
   * lock (a shared shard's mutex is a cache line both cores write: a probe through it cost
   * ~90 ns under two senders). Valid for cache l1_id at epoch l1_epoch. */
  rc_table_t l1;
  uint64_t l1_id, l1_epoch;
};

/* ---- tables -------------------------------------------------------------------------------- */

static size_t slot_of(const rc_table_t *t, ikey_t k) {
  return (size_t)(k.a >> 7) & (t->cap - 1);
}

static rc_entry_t *table_find(const rc_table_t *t, ikey_t k, uint32_t pid) {
  if (!t->cap) return NULL;
  for (size_t i = slot_of(t, k);; i = (i + 1) & (t->cap - 1)) {
    rc_entry_t *e = &t->e[i];
    if (!e->ref) return NULL;
    if (e->a == k.a && e->b == k.b && e->pid == pid) return e;
  }
}

static bool table_grow(rc_table_t *t, size_t want_cap) {
  rc_entry_t *ne = calloc(want_cap, sizeof *ne);
  if (!ne) return false;
  for (size_t i = 0; i < t->cap; i++) {
    const rc_entry_t *e = &t->e[i];
    if (!e->ref) continue;
    size_t j = (size_t)(e->a >> 7) & (want_cap - 1);
    while (ne[j].ref)
      j = (j + 1) & (want_cap - 1);
    ne[j] = *e;
  }
  free(t->e);
  t->e = ne;
  t->cap = want_cap;
  return true;
}

static void table_free(rc_table_t *t) {
  free(t->e);
  memset(t, 0, sizeof *t);
}

/* Inserts or updates; false when out of memory (the entry is then simply not cached). */
static bool table_put(rc_table_t *t, ikey_t k, uint32_t pid, tsdb_series_ref_t ref) {
  rc_entry_t *e = table_find(t, k, pid);
  if (e) {
    e->ref = ref;
    return true;
  }
  if ((t->n + 1) * 4 > t->cap * 3 && !table_grow(t, t->cap ? t->cap * 2 : 256)) return false;
  size_t i = slot_of(t, k);
  while (t->e[i].ref)
    i = (i + 1) & (t->cap - 1);
  t->e[i] = (rc_entry_t){k.a, k.b, ref, pid, 0};
  t->n++;
  return true;
}

/* Removes the entry of k if it still holds ref (backward-shift deletion keeps probes exact). */
static void table_del(rc_table_t *t, ikey_t k, uint32_t pid, tsdb_series_ref_t ref) {
  rc_entry_t *e = table_find(t, k, pid);
  if (!e || e->ref != ref) return;
  size_t mask = t->cap - 1, hole = (size_t)(e - t->e);
  for (size_t i = (hole + 1) & mask; t->e[i].ref; i = (i + 1) & mask) {
    size_t home = (size_t)(t->e[i].a >> 7) & mask;
    /* the entry at i may fill the hole when its home is not in (hole, i] (cyclically) */
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      t->e[hole] = t->e[i];
      hole = i;
    }
  }
  t->e[hole].ref = 0;
  t->n--;
}

static rc_shard_t *shard_of(ingest_refcache_t *c, ikey_t k) {
  return &c->shard[k.b >> 60 & (RC_SHARDS - 1)];
}

static void cache_put(ingest_refcache_t *c, ikey_t k, uint32_t pid, tsdb_series_ref_t ref) {
  rc_shard_t *s = shard_of(c, k);
  pthread_mutex_lock(&s->mu);
  if (s->cur.n >= c->gen_max && !table_find(&s->cur, k, pid)) {
    table_free(&s->prev);
    s->prev = s->cur;
    memset(&s->cur, 0, sizeof s->cur);
  }
  table_put(&s->cur, k, pid, ref);
  pthread_mutex_unlock(&s->mu);
}

static tsdb_series_ref_t cache_get(ingest_refcache_t *c, ikey_t k, uint32_t pid) {
  rc_shard_t *s = shard_of(c, k);
  pthread_mutex_lock(&s->mu);
  rc_entry_t *e = table_find(&s->cur, k, pid);
  tsdb_series_ref_t ref = e ? e->ref : 0;
  if (!e && (e = table_find(&s->prev, k, pid))) {
    ref = e->ref;
    if (s->cur.n < c->gen_max) { /* move it to the current generation */
      table_del(&s->prev, k, pid, ref);
      table_put(&s->cur, k, pid, ref);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return ref;
}

static void cache_del(ingest_refcache_t *c, ikey_t k, uint32_t pid, tsdb_series_ref_t ref) {
  rc_shard_t *s = shard_of(c, k);
  pthread_mutex_lock(&s->mu);
  table_del(&s->cur, k, pid, ref);
  table_del(&s->prev, k, pid, ref);
  pthread_mutex_unlock(&s->mu);
}

/* ---- the cache ------------------------------------------------------------------------------ */

static uint64_t random_seed(uint64_t salt) {
  uint64_t x = 0;
  if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) x = 0; /* then time and pid only */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return md_hash_mix(x ^ salt, (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32));
}

ingest_refcache_t *ingest_refcache_new(size_t max_series) {
  ingest_refcache_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (max_series == 0) max_series = 4000000;
  c->gen_max = max_series / 2 / RC_SHARDS;
  if (c->gen_max < 64) c->gen_max = 64;
  c->id = atomic_fetch_add(&next_cache_id, 1);
  c->seed_a = random_seed(0x6a09e667f3bcc908ULL);
  c->seed_b = random_seed(0xbb67ae8584caa73bULL);
  for (int i = 0; i < RC_SHARDS; i++)
    pthread_mutex_init(&c->shard[i].mu, NULL);
  pthread_mutex_init(&c->pmu, NULL);
  return c;
}

static void free_parts(ingest_refcache_t *c) {
  for (size_t i = 0; i < c->nparts; i++)
    free(c->parts[i].s);
  free(c->parts);
  c->parts = NULL;
  c->nparts = 0;
}

void ingest_refcache_clear(ingest_refcache_t *c) {
  if (!c) return;
  atomic_fetch_add(&c->epoch, 1);
  for (int i = 0; i < RC_SHARDS; i++) {
    pthread_mutex_lock(&c->shard[i].mu);
    table_free(&c->shard[i].cur);
    table_free(&c->shard[i].prev);
    pthread_mutex_unlock(&c->shard[i].mu);
  }
}

void ingest_refcache_free(ingest_refcache_t *c) {
  if (!c) return;
  ingest_refcache_clear(c);
  for (int i = 0; i < RC_SHARDS; i++)
    pthread_mutex_destroy(&c->shard[i].mu);
  free_parts(c);
  pthread_mutex_destroy(&c->pmu);
  free(c);
}

void ingest_refcache_stats(ingest_refcache_t *c, ingest_refcache_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  out->hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
  out->misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
  out->stale = atomic_load_explicit(&c->stale, memory_order_relaxed);
  for (int i = 0; i < RC_SHARDS; i++) {
    pthread_mutex_lock(&c->shard[i].mu);
    out->entries += c->shard[i].cur.n + c->shard[i].prev.n;
    out->bytes += (c->shard[i].cur.cap + c->shard[i].prev.cap) * sizeof(rc_entry_t);
    pthread_mutex_unlock(&c->shard[i].mu);
  }
}

/* The id of partition s[0..n), added when new; 0 when the table is full (no caching). */
static uint32_t partition_id(ingest_refcache_t *c, const char *s, size_t n) {
  uint64_t h = md_hash64(s, n, 0x3c6ef372fe94f82bULL);
  uint32_t id = 0;
  pthread_mutex_lock(&c->pmu);
  for (size_t i = 0; i < c->nparts; i++)
    if (c->parts[i].h == h && c->parts[i].n == n && memcmp(c->parts[i].s, s, n) == 0) {
      id = (uint32_t)i + 1;
      goto out;
    }
  if (c->nparts < RC_MAX_PARTITIONS) {
    rc_part_t *np = realloc(c->parts, (c->nparts + 1) * sizeof *np);
    char *copy = malloc(n ? n : 1);
    if (np) c->parts = np;
    if (np && copy) {
      memcpy(copy, s, n);
      c->parts[c->nparts++] = (rc_part_t){copy, n, h};
      id = (uint32_t)c->nparts;
    } else {
      free(copy);
    }
  }
out:
  pthread_mutex_unlock(&c->pmu);
  return id;
}

/* ---- a request's session ------------------------------------------------------------------- */

static bool pbuf_add(ingest_refs_t *r, size_t *len, const char *s, size_t n) {
  if (!ingest_grow((void **)&r->pbuf, &r->cap_pbuf, *len + n + 1, 1, 256)) return false;
  memcpy(r->pbuf + *len, s, n);
  *len += n;
  r->pbuf[(*len)++] = '\x1f'; /* unit separator: cannot occur in names, tenants, or db */
  return true;
}

/* Starts a request on cache c: false (no caching) when c is NULL or out of memory. */
static bool refs_begin(ingest_refs_t *r, ingest_refcache_t *c, const char *protocol, const char *tenant,
                       const ingest_opts_t *o) {
  r->c = NULL;
  r->resend = false;
  if (r->nst) memset(r->st, 0, r->cap_st * sizeof *r->st);
  r->nkeys = r->nst = 0;
  r->hits = r->misses = 0;
  if (!c) return false;
  size_t len = 0;
  const char *db = o->influx_db ? o->influx_db : "";
  bool ok = pbuf_add(r, &len, protocol, strlen(protocol)) && pbuf_add(r, &len, tenant, strlen(tenant)) &&
            pbuf_add(r, &len, db, strlen(db)) && pbuf_add(r, &len, o->openmetrics ? "om" : "", o->openmetrics ? 2 : 0);
  for (size_t i = 0; ok && i < o->n_extra_labels; i++)
    ok = pbuf_add(r, &len, o->extra_labels[i].name, strlen(o->extra_labels[i].name)) &&
         pbuf_add(r, &len, o->extra_labels[i].value, strlen(o->extra_labels[i].value));
  if (!ok) return false;
  uint32_t pid = partition_id(c, r->pbuf, len);
  if (!pid) return false;
  r->c = c;
  r->pid = pid;
  r->epoch = atomic_load(&c->epoch);
  if (r->l1_id != c->id || r->l1_epoch != r->epoch) {
    table_free(&r->l1);
    r->l1_id = c->id;
    r->l1_epoch = r->epoch;
  }
  r->seed_a = md_hash_mix(c->seed_a, pid);
  r->seed_b = md_hash_mix(c->seed_b, (uint64_t)pid << 32 | pid);
  return true;
}

static size_t stale_slot(const ingest_refs_t *r, ikey_t k) {
  return (size_t)(k.a >> 5) & (r->cap_st - 1);
}

static const rc_stale_t *stale_find(const ingest_refs_t *r, ikey_t k) {
  if (!r->cap_st) return NULL;
  for (size_t i = stale_slot(r, k);; i = (i + 1) & (r->cap_st - 1)) {
    const rc_stale_t *s = &r->st[i];
    if (!s->k.a && !s->k.b) return NULL;
    if (ikey_eq(s->k, k)) return s;
  }
}

static bool stale_add(ingest_refs_t *r, ikey_t k, size_t orig) {
  if ((r->nst + 1) * 2 > r->cap_st) {
    size_t nc = r->cap_st ? r->cap_st * 2 : 64;
    rc_stale_t *ns = calloc(nc, sizeof *ns);
    if (!ns) return false;
    for (size_t i = 0; i < r->cap_st; i++) {
      if (!r->st[i].k.a && !r->st[i].k.b) continue;
      size_t j = (size_t)(r->st[i].k.a >> 5) & (nc - 1);
      while (ns[j].k.a || ns[j].k.b)
        j = (j + 1) & (nc - 1);
      ns[j] = r->st[i];
    }
    free(r->st);
    r->st = ns;
    r->cap_st = nc;
  }
  size_t i = stale_slot(r, k);
  while (r->st[i].k.a || r->st[i].k.b)
    i = (i + 1) & (r->cap_st - 1);
  r->st[i] = (rc_stale_t){k, orig};
  r->nst++;
  return true;
}

static void refs_free(void *p) {
  ingest_refs_t *r = p;
  if (!r) return;
  free(r->keys);
  free(r->st);
  free(r->refs);
  free(r->pbuf);
  table_free(&r->l1);
  free(r);
}

/* ---- parser hooks (ingest_int.h) ------------------------------------------------------------ */

static ikey_t nonzero(ikey_t k) {
  if (!k.a && !k.b) k.a = 1;
  return k;
}

static void l1_put(ingest_refs_t *r, ikey_t k, tsdb_series_ref_t ref) {
  if (r->l1.n >= RC_L1_MAX) table_free(&r->l1);
  table_put(&r->l1, k, r->pid, ref);
}

uint64_t ikey_a(const ictx_t *c, const void *p, size_t n) {
  return md_hash64(p, n, c->refs->seed_a);
}

ikey_t ikey_from_a(const ictx_t *c, uint64_t a, const void *p, size_t n) {
  return nonzero((ikey_t){a, md_hash64(p, n, c->refs->seed_b)});
}

ikey_t ikey_of(const ictx_t *c, const void *p, size_t n) {
  return ikey_from_a(c, ikey_a(c, p, n), p, n);
}

ikey_t ikey_more(ikey_t k, const void *p, size_t n) {
  return nonzero((ikey_t){md_hash64(p, n, k.a), md_hash64(p, n, k.b ^ 0x9b05688c2b3e6c1fULL)});
}

int ictx_probe(ictx_t *c, ikey_t key, tsdb_series_ref_t *ref) {
  ingest_refs_t *r = c->refs;
  *ref = 0;
  if (r->resend) return stale_find(r, key) ? IREF_LABELS : IREF_SKIP;
  const rc_entry_t *e = table_find(&r->l1, key, r->pid);
  if (e) {
    *ref = e->ref;
    r->hits++;
    return IREF_REF;
  }
  *ref = cache_get(r->c, key, r->pid);
  if (*ref) {
    l1_put(r, key, *ref);
    r->hits++;
    return IREF_REF;
  }
  r->misses++;
  return IREF_LABELS;
}

int ictx_series_keyed(ictx_t *c, const ilabel_t *l, size_t n, tsdb_series_ref_t ref, ikey_t key, char *err,
                      size_t errlen) {
  int rc;
  if (ref) {
    rc = tsdb_batch_series_ref(c->b, ref);
    if (rc == 0) c->res->series++;
  } else {
    rc = ictx_series_checked(c, l, n, err, errlen);
  }
  if (rc || !c->refs || (!key.a && !key.b)) return rc;
  ingest_refs_t *r = c->refs;
  size_t i = tsdb_batch_series_count(c->b) - 1;
  if (!ingest_grow((void **)&r->keys, &r->cap_keys, i + 1, sizeof *r->keys, 1024)) {
    c->oom = true;
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  if (i > r->nkeys) memset(r->keys + r->nkeys, 0, (i - r->nkeys) * sizeof *r->keys);
  r->keys[i] = key;
  r->nkeys = i + 1;
  return 0;
}

/* ---- ingest_push -------------------------------------------------------------------------- */

static pthread_key_t refs_key;
static bool refs_key_ok;
static pthread_once_t refs_once = PTHREAD_ONCE_INIT;

static void refs_key_init(void) {
  refs_key_ok = pthread_key_create(&refs_key, refs_free) == 0;
}

/* The thread's session (kept between requests: its arrays are sized for a batch), freed when
 * the thread ends; NULL when there is none (then the push goes without the cache). */
static ingest_refs_t *refs_get(void) {
  pthread_once(&refs_once, refs_key_init);
  if (!refs_key_ok) return NULL; /* no thread state: pushes go without the cache */
  ingest_refs_t *r = pthread_getspecific(refs_key);
  if (r) return r;
  r = calloc(1, sizeof *r);
  if (r && pthread_setspecific(refs_key, r) != 0) {
    refs_free(r);
    r = NULL;
  }
  return r;
}

/* Learns the refs of series given by labels; series given by a ref that came back 0 are
 * stale: dropped from the cache and added to the stale set. Returns the stale count. */
static size_t learn(ingest_refs_t *r, const tsdb_batch_t *b, const tsdb_series_ref_t *refs) {
  size_t ns = tsdb_batch_series_count(b), nstale = 0;
  size_t n = r->nkeys < ns ? r->nkeys : ns;
  /* Series validated under limits a reload has replaced since are not remembered. */
  bool can_put = atomic_load(&r->c->epoch) == r->epoch;
  for (size_t i = 0; i < n; i++) {
    ikey_t k = r->keys[i];
    if (!k.a && !k.b) continue;
    tsdb_series_ref_t given = tsdb_batch_get_ref(b, i);
    if (given && !refs[i]) {
      cache_del(r->c, k, r->pid, given);
      table_del(&r->l1, k, r->pid, given);
      if (stale_add(r, k, i)) nstale++;
    } else if (!given && refs[i] && can_put) {
      cache_put(r->c, k, r->pid, refs[i]);
      l1_put(r, k, refs[i]);
    }
  }
  return nstale;
}

/* Takes the stale series out of ar: they are resent, not rejected. */
static void unreject_stale(tsdb_append_result_t *ar, const tsdb_batch_t *b, const ingest_refs_t *r) {
  size_t nsm_stale = 0;
  for (size_t i = 0; i < r->cap_st; i++) {
    if (!r->st[i].k.a && !r->st[i].k.b) continue;
    size_t nsm = 0;
    tsdb_batch_get(b, r->st[i].orig, NULL, NULL, NULL, &nsm);
    nsm_stale += nsm;
  }
  ar->samples_rejected -= nsm_stale < ar->samples_rejected ? nsm_stale : ar->samples_rejected;
  ar->series_rejected -= ar->series_stale_refs < ar->series_rejected ? ar->series_stale_refs : ar->series_rejected;
  ar->series_stale_refs = 0;
  size_t kept = 0, nrep = ar->nerrors < TSDB_MAX_REPORTED_ERRORS ? ar->nerrors : TSDB_MAX_REPORTED_ERRORS;
  size_t dropped = 0;
  for (size_t i = 0; i < nrep; i++) {
    if (ar->errors[i].reason == TSDB_REJECT_STALE_REF) {
      dropped++;
      continue;
    }
    if (kept != i) ar->errors[kept] = ar->errors[i];
    kept++;
  }
  ar->nerrors -= dropped;
}

/* Adds the resend's result (batch b2, whose series' keys are r->keys) to ar. */
static void merge_resend(tsdb_append_result_t *ar, const tsdb_append_result_t *a2, const ingest_refs_t *r) {
  ar->samples_added += a2->samples_added;
  ar->samples_duplicate_ignored += a2->samples_duplicate_ignored;
  ar->samples_rejected += a2->samples_rejected;
  ar->series_created += a2->series_created;
  ar->series_rejected += a2->series_rejected;
  size_t nrep2 = a2->nerrors < TSDB_MAX_REPORTED_ERRORS ? a2->nerrors : TSDB_MAX_REPORTED_ERRORS;
  for (size_t i = 0; i < nrep2; i++) {
    if (ar->nerrors < TSDB_MAX_REPORTED_ERRORS) {
      size_t j = a2->errors[i].series_index;
      const rc_stale_t *s = j < r->nkeys ? stale_find(r, r->keys[j]) : NULL;
      ar->errors[ar->nerrors] = a2->errors[i];
      ar->errors[ar->nerrors].series_index = s ? s->orig : SIZE_MAX;
    }
    ar->nerrors++;
  }
  if (a2->nerrors > nrep2) ar->nerrors += a2->nerrors - nrep2;
}

int ingest_push(const ingest_push_t *p, ingest_result_t *res, tsdb_append_result_t *ar, int *arc) {
  memset(ar, 0, sizeof *ar);
  *arc = 0;
  ingest_opts_t o = *p->opts;
  o.refs = NULL;
  ingest_refs_t *r = p->cache ? refs_get() : NULL;
  if (r && refs_begin(r, p->cache, p->protocol, p->tenant, p->opts)) o.refs = r;
  int prc = p->parse(p->body, p->n, &o, p->batch, res);
  if (r && r->c) {
    atomic_fetch_add_explicit(&r->c->hits, r->hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->c->misses, r->misses, memory_order_relaxed);
  }
  if (prc == MD_ENOMEM || prc == MD_ELIMIT || tsdb_batch_sample_count(p->batch) == 0) return prc;
  size_t ns = tsdb_batch_series_count(p->batch);
  if (!o.refs || !ingest_grow((void **)&r->refs, &r->cap_refs, ns, sizeof *r->refs, 1024)) {
    *arc = tsdb_append(p->db, p->tenant, p->batch, ar);
    return prc;
  }
  *arc = tsdb_append_refs(p->db, p->tenant, p->batch, ar, r->refs);
  if (*arc || learn(r, p->batch, r->refs) == 0) return prc;
  /* Some refs were stale: resend those series with their labels. */
  atomic_fetch_add_explicit(&r->c->stale, r->nst, memory_order_relaxed);
  unreject_stale(ar, p->batch, r);
  tsdb_batch_t *b2 = tsdb_batch_new();
  ingest_result_t res2;
  r->resend = true;
  r->nkeys = 0;
  int prc2 = b2 ? p->parse(p->body, p->n, &o, b2, &res2) : MD_ENOMEM;
  if (prc2 == MD_ENOMEM || prc2 == MD_ELIMIT) {
    /* Cannot happen short of memory (the first pass fit the limit): the caller answers 5xx
     * and the client resends the request (the stored part deduplicates). */
    tsdb_batch_free(b2);
    *arc = MD_ENOMEM;
    return prc;
  }
  tsdb_append_result_t a2;
  size_t ns2 = tsdb_batch_series_count(b2);
  if (!ingest_grow((void **)&r->refs, &r->cap_refs, ns2, sizeof *r->refs, 1024)) {
    tsdb_batch_free(b2);
    *arc = MD_ENOMEM;
    return prc;
  }
  int arc2 = tsdb_batch_sample_count(b2) ? tsdb_append_refs(p->db, p->tenant, b2, &a2, r->refs) : 0;
  if (arc2) {
    *arc = arc2;
  } else if (tsdb_batch_sample_count(b2)) {
    learn(r, b2, r->refs);
    merge_resend(ar, &a2, r);
  }
  tsdb_batch_free(b2);
  return prc;
}
