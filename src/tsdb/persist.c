/*
 * persist — everything that moves data between the head and the block layer (block.h):
 * loading blocks at open, head → block persistence, WAL checkpoints, compaction,
 * retention (time, bytes, downsampling tiers), tombstones, snapshots and tsdb_delete.
 *
 * Invariant that makes persistence safe against concurrent appends: before the head is read
 * for a block ending at b, min_valid is raised to b + 1 (appenders read it under the series'
 * stripe lock), so every sample the block misses is > b and survives the truncation that
 * follows (which drops only whole chunks ending at or before b).
 *
 * Threading: every entry point here that changes blocks, tombstones on disk or the WAL
 * checkpoint runs under db->maint_mu; queries only take blocks_lock/tomb_mu briefly.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb_int.h"

static int64_t floor_to(int64_t t, int64_t span) {
  int64_t r = t % span;
  if (r < 0) r += span;
  return t - r;
}

/* ---- block list ------------------------------------------------------------------------ */

static int cmp_block(const void *a, const void *b) {
  const block_t *x = *(block_t *const *)a, *y = *(block_t *const *)b;
  if (block_mint(x) != block_mint(y)) return block_mint(x) < block_mint(y) ? -1 : 1;
  return strcmp(block_path(x), block_path(y));
}

/* Adds a block (taking over the caller's reference). */
static int blocks_add(tsdb_t *db, block_t *b) {
  pthread_rwlock_wrlock(&db->blocks_lock);
  if (db->nblocks == db->cap_blocks) {
    size_t nc = db->cap_blocks ? db->cap_blocks * 2 : 16;
    block_t **nb = realloc(db->blocks, nc * sizeof *nb);
    if (!nb) {
      pthread_rwlock_unlock(&db->blocks_lock);
      return MD_ENOMEM;
    }
    db->blocks = nb;
    db->cap_blocks = nc;
  }
  db->blocks[db->nblocks++] = b;
  qsort(db->blocks, db->nblocks, sizeof *db->blocks, cmp_block);
  pthread_rwlock_unlock(&db->blocks_lock);
  return 0;
}

/* Removes blocks from the list, marks them deleted and drops the list's references. */
static void blocks_remove(tsdb_t *db, block_t *const *rm, size_t n) {
  pthread_rwlock_wrlock(&db->blocks_lock);
  size_t k = 0;
  for (size_t i = 0; i < db->nblocks; i++) {
    bool drop = false;
    for (size_t j = 0; j < n && !drop; j++) drop = db->blocks[i] == rm[j];
    if (!drop) db->blocks[k++] = db->blocks[i];
  }
  db->nblocks = k;
  pthread_rwlock_unlock(&db->blocks_lock);
  for (size_t j = 0; j < n; j++) {
    block_mark_deleted(rm[j]);
    block_unref(rm[j]);
  }
}

int blocks_acquire(tsdb_t *db, int64_t mint, int64_t maxt, block_t ***out, size_t *n) {
  pthread_rwlock_rdlock(&db->blocks_lock);
  block_t **arr = malloc((db->nblocks ? db->nblocks : 1) * sizeof *arr);
  if (!arr) {
    pthread_rwlock_unlock(&db->blocks_lock);
    return MD_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < db->nblocks; i++) {
    block_t *b = db->blocks[i];
    if (block_maxt(b) < mint || block_mint(b) > maxt) continue;
    if (block_is_damaged(b)) continue; /* on its way to quarantine: never read it again */
    block_ref(b);
    arr[k++] = b;
  }
  pthread_rwlock_unlock(&db->blocks_lock);
  *out = arr;
  *n = k;
  return 0;
}

static void quarantine(tsdb_t *db, const char *path, const char *name, const char *why) {
  char qdir[PATH_MAX + 16], dst[2 * PATH_MAX];
  snprintf(qdir, sizeof qdir, "%s/quarantine", db->dir);
  md_mkdir_p(qdir);
  snprintf(dst, sizeof dst, "%s/%s", qdir, name);
  if (rename(path, dst) == 0) log_error("tsdb: block %s is damaged (%s): moved to %s", path, why, dst);
  else log_error("tsdb: block %s is damaged (%s) and could not be moved: %s", path, why, strerror(errno));
}

/* Moves blocks found damaged while reading to quarantine/ and out of the list (maint_mu
 * held). Returns how many. Queries already skip them (blocks_acquire); running ones keep
 * their reference to the mapping, which the rename does not disturb. */
static size_t quarantine_damaged(tsdb_t *db) {
  pthread_rwlock_wrlock(&db->blocks_lock);
  size_t k = 0, nd = 0;
  block_t **gone = malloc((db->nblocks ? db->nblocks : 1) * sizeof *gone);
  if (!gone) {
    pthread_rwlock_unlock(&db->blocks_lock);
    return 0;
  }
  for (size_t i = 0; i < db->nblocks; i++) {
    if (block_is_damaged(db->blocks[i])) gone[nd++] = db->blocks[i];
    else db->blocks[k++] = db->blocks[i];
  }
  db->nblocks = k;
  pthread_rwlock_unlock(&db->blocks_lock);
  for (size_t i = 0; i < nd; i++) {
    const char *path = block_path(gone[i]);
    const char *name = strrchr(path, '/');
    quarantine(db, path, name ? name + 1 : path, "a chunk failed its checksum or decoding while being read");
    block_unref(gone[i]);
  }
  free(gone);
  return nd;
}

int blocks_load(tsdb_t *db, char *err, size_t errlen) {
  DIR *d = opendir(db->blocks_dir);
  if (!d) return md_error(err, errlen, MD_EIO, "cannot open %s: %s", db->blocks_dir, strerror(errno));
  struct dirent *e;
  int rc = 0;
  char path[2 * PATH_MAX];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", db->blocks_dir, e->d_name);
    size_t nl = strlen(e->d_name);
    if (nl > 4 && strcmp(e->d_name + nl - 4, ".tmp") == 0) {
      md_rm_rf(path); /* an interrupted write: never renamed, never visible */
      continue;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    block_t *b;
    char berr[256];
    int r = block_open(path, &b, berr, sizeof berr);
    if (r == MD_ENOMEM) {
      rc = md_error(err, errlen, r, "out of memory opening %s", path);
      break;
    }
    if (r) {
      quarantine(db, path, e->d_name, berr);
      continue;
    }
    if ((rc = blocks_add(db, b))) {
      block_unref(b);
      md_error(err, errlen, rc, "out of memory");
      break;
    }
    if (block_resolution(b) == 0) atomic_max64(&db->min_valid, block_maxt(b) + 1);
  }
  closedir(d);
  return rc;
}

void blocks_unload(tsdb_t *db) {
  for (size_t i = 0; i < db->nblocks; i++) block_unref(db->blocks[i]);
  free(db->blocks);
  db->blocks = NULL;
  db->nblocks = 0;
}

/* ---- head as a block source --------------------------------------------------------------- */

typedef struct head_src {
  tsdb_t *db;
  int64_t mint, maxt;
  tenant_t **tenants; /* sorted by name */
  size_t ntenants, ti;
  series_t **ser;
  size_t nser, si;
  svec_t buf;
  tsdb_label_t *lbuf;
  size_t lcap;
  int64_t (*iv)[2];
  size_t ivcap;
  uint64_t samples;
  int64_t seen_min, seen_max;
} head_src_t;

static int cmp_tenant(const void *a, const void *b) {
  return strcmp((*(tenant_t *const *)a)->name, (*(tenant_t *const *)b)->name);
}

static int head_src_init(head_src_t *hs, tsdb_t *db, int64_t mint, int64_t maxt) {
  memset(hs, 0, sizeof *hs);
  hs->db = db;
  hs->mint = mint;
  hs->maxt = maxt;
  hs->seen_min = INT64_MAX;
  hs->seen_max = INT64_MIN;
  pthread_rwlock_rdlock(&db->tenants_lock);
  hs->tenants = malloc((db->ntenants ? db->ntenants : 1) * sizeof *hs->tenants);
  if (hs->tenants) {
    memcpy(hs->tenants, db->tenants, db->ntenants * sizeof *hs->tenants);
    hs->ntenants = db->ntenants;
  }
  pthread_rwlock_unlock(&db->tenants_lock);
  if (!hs->tenants) return MD_ENOMEM;
  qsort(hs->tenants, hs->ntenants, sizeof *hs->tenants, cmp_tenant);
  hs->ivcap = 64;
  hs->iv = malloc(hs->ivcap * sizeof *hs->iv);
  return hs->iv ? 0 : MD_ENOMEM;
}

static void head_src_free(head_src_t *hs) {
  free(hs->tenants);
  free(hs->ser);
  svec_free(&hs->buf);
  free(hs->lbuf);
  free(hs->iv);
}

tsdb_label_t *series_labels(tsdb_t *db, const series_t *s, tsdb_label_t *buf, size_t cap) {
  if (cap < s->id.nlabels) return NULL;
  for (size_t i = 0; i < s->id.nlabels; i++) {
    buf[i].name = symtab_str(db->syms, s->id.labels[2 * i]);
    buf[i].value = symtab_str(db->syms, s->id.labels[2 * i + 1]);
  }
  return buf;
}

static int head_src_next(void *ctx, const char **tenant, const tsdb_label_t **labels, size_t *nlabels,
                         const int64_t **ts, const double **v, size_t *n) {
  head_src_t *hs = ctx;
  tsdb_t *db = hs->db;
  for (;;) {
    if (hs->si == hs->nser) {
      free(hs->ser);
      hs->ser = NULL;
      hs->nser = hs->si = 0;
      if (hs->ti == hs->ntenants) return 0;
      int rc = tenant_series_sorted(db, hs->tenants[hs->ti++], &hs->ser, &hs->nser);
      if (rc) return rc;
      continue;
    }
    series_t *s = hs->ser[hs->si++];
    hs->buf.n = 0;
    pthread_mutex_t *mu = stripe_of(db, s->id.ref);
    pthread_mutex_lock(mu);
    int rc = series_read(s, hs->mint, hs->maxt, &hs->buf);
    pthread_mutex_unlock(mu);
    if (rc) return rc;
    if (!hs->buf.n) continue;
    if (hs->lcap < s->id.nlabels) {
      tsdb_label_t *nl = realloc(hs->lbuf, s->id.nlabels * sizeof *nl);
      if (!nl) return MD_ENOMEM;
      hs->lbuf = nl;
      hs->lcap = s->id.nlabels;
    }
    series_labels(db, s, hs->lbuf, hs->lcap);
    const char *tn = hs->tenants[hs->ti - 1]->name;
    if (atomic_load(&db->ntombs_visible)) {
      size_t k = tombs_lookup(db, tn, hs->lbuf, s->id.nlabels, hs->iv, hs->ivcap);
      if (k) hs->buf.n = tombs_apply(hs->iv, k, hs->buf.ts, hs->buf.v, hs->buf.n);
      if (!hs->buf.n) continue;
    }
    hs->samples += hs->buf.n;
    if (hs->buf.ts[0] < hs->seen_min) hs->seen_min = hs->buf.ts[0];
    if (hs->buf.ts[hs->buf.n - 1] > hs->seen_max) hs->seen_max = hs->buf.ts[hs->buf.n - 1];
    *tenant = tn;
    *labels = hs->lbuf;
    *nlabels = s->id.nlabels;
    *ts = hs->buf.ts;
    *v = hs->buf.v;
    *n = hs->buf.n;
    return 1;
  }
}

/* Exact minimum timestamp held by the head (scans every series). */
static int64_t head_scan_min(tsdb_t *db) {
  int64_t m = INT64_MAX;
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  for (size_t i = 0; i < nt; i++) {
    tenant_t *t = tenant_by_no(db, (uint16_t)i);
    if (!t) continue;
    pthread_rwlock_rdlock(&t->lock);
    size_t n;
    idx_series_t *const *all = tindex_all(t->idx, &n);
    for (size_t k = 0; k < n; k++) {
      series_t *s = (series_t *)all[k];
      pthread_mutex_t *mu = stripe_of(db, s->id.ref);
      pthread_mutex_lock(mu);
      if (s->min_ts < m) m = s->min_ts;
      pthread_mutex_unlock(mu);
    }
    pthread_rwlock_unlock(&t->lock);
  }
  return m;
}

/* Lowest timestamp of head data not yet persisted (>= valid). */
static int64_t head_unpersisted_min(tsdb_t *db, int64_t valid) {
  int64_t m = head_scan_min(db);
  return m < valid ? valid : m;
}

/* Frees series whose data is all persisted and that received nothing since (their labels
 * stop costing memory, and the next checkpoint forgets them). Rebuilds the tenant index of
 * the survivors. Caller holds gc_lock for writing. */
static void head_gc(tsdb_t *db) {
  int64_t valid = atomic_load(&db->min_valid);
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  uint64_t removed = 0;
  for (size_t i = 0; i < nt; i++) {
    tenant_t *tn = tenant_by_no(db, (uint16_t)i);
    if (!tn) continue;
    pthread_rwlock_wrlock(&tn->lock);
    size_t n;
    idx_series_t *const *all = tindex_all(tn->idx, &n);
    size_t dead = 0;
    for (size_t k = 0; k < n; k++) {
      series_t *s = (series_t *)all[k];
      if (series_empty(s) && s->max_ts < valid) dead++;
    }
    if (dead) {
      series_t **keep = malloc((n - dead ? n - dead : 1) * sizeof *keep);
      series_t **gone = malloc(dead * sizeof *gone);
      if (keep && gone) {
        size_t nk = 0, ng = 0;
        for (size_t k = 0; k < n; k++) {
          series_t *s = (series_t *)all[k];
          if (series_empty(s) && s->max_ts < valid) gone[ng++] = s;
          else keep[nk++] = s;
        }
        tindex_clear(tn->idx);
        bool ok = true;
        for (size_t k = 0; k < nk && ok; k++) ok = tindex_add(tn->idx, &keep[k]->id) == 0;
        if (ok) {
          for (size_t k = 0; k < ng; k++) {
            series_t *s = gone[k];
            db->ref_pages[s->id.ref >> REF_PAGE_BITS][s->id.ref & ((1u << REF_PAGE_BITS) - 1)] = NULL;
            series_free(s);
          }
          removed += ng;
        } else {
          /* Out of memory mid-rebuild: put everything back (best effort) and keep all. */
          tindex_clear(tn->idx);
          for (size_t a = 0, b = 0; a < nk || b < ng;) {
            bool take_keep = b == ng || (a < nk && keep[a]->id.ref < gone[b]->id.ref);
            tindex_add(tn->idx, take_keep ? &keep[a++]->id : &gone[b++]->id);
          }
        }
      }
      free(keep);
      free(gone);
    }
    pthread_rwlock_unlock(&tn->lock);
  }
  if (removed) {
    atomic_fetch_add(&db->series_removed, removed);
    log_info("tsdb: removed %" PRIu64 " series with no data left in the head", removed);
  }
}

static void head_truncate(tsdb_t *db, int64_t t) {
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  for (size_t i = 0; i < nt; i++) {
    tenant_t *tn = tenant_by_no(db, (uint16_t)i);
    if (!tn) continue;
    pthread_rwlock_rdlock(&tn->lock);
    size_t n;
    idx_series_t *const *all = tindex_all(tn->idx, &n);
    for (size_t k = 0; k < n; k++) {
      series_t *s = (series_t *)all[k];
      pthread_mutex_t *mu = stripe_of(db, s->id.ref);
      pthread_mutex_lock(mu);
      series_truncate(s, t);
      pthread_mutex_unlock(mu);
    }
    pthread_rwlock_unlock(&tn->lock);
  }
}

/* Drops head data persisted up to trunc_pending and frees emptied series, unless queries
 * or appends hold gc_lock past a short wait (then it stays pending). Caller holds maint_mu. */
static void head_release(tsdb_t *db) {
  if (db->trunc_pending == INT64_MIN) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += 200 * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  if (pthread_rwlock_timedwrlock(&db->gc_lock, &ts) != 0) {
    log_debug("tsdb: head truncation postponed: queries are running");
    return;
  }
  int64_t t = db->trunc_pending;
  head_truncate(db, t);
  atomic_max64(&db->head_min, t + 1);
  head_gc(db);
  db->trunc_pending = INT64_MIN;
  pthread_rwlock_unlock(&db->gc_lock);
}

/* ---- persistence ------------------------------------------------------------------------- */

/* Writes head data up to maxt (everything older than it too) as a block labelled
 * [mint, maxt], then truncates the head. Caller holds maint_mu. */
static int persist_upto(tsdb_t *db, int64_t mint, int64_t maxt, bool checkpoint, char *err, size_t errlen) {
  int64_t old_valid = atomic_load(&db->min_valid);
  atomic_max64(&db->min_valid, maxt + 1);
  /* No sample <= maxt can arrive from now on: the exact minimum is stable. Data below the
   * previous min_valid is already in blocks (kept only in chunks straddling it). */
  int64_t lo = head_unpersisted_min(db, old_valid);
  if (lo == INT64_MAX || lo > maxt) return 0;
  if (lo < mint) mint = lo;
  head_src_t hs;
  int rc = head_src_init(&hs, db, old_valid, maxt);
  if (rc) {
    head_src_free(&hs);
    return md_error(err, errlen, rc, "out of memory");
  }
  block_source_t src = {head_src_next, &hs};
  char name[256], path[2 * PATH_MAX];
  int64_t t0 = md_mono_ns();
  rc = block_write(db->blocks_dir, mint, maxt, 0, 0, &src, name, sizeof name, err, errlen);
  uint64_t samples = hs.samples;
  head_src_free(&hs);
  if (rc) {
    log_error("tsdb: head persistence of [%" PRId64 ", %" PRId64 "] failed: %s", mint, maxt, err ? err : "");
    return rc;
  }
  snprintf(path, sizeof path, "%s/%s", db->blocks_dir, name);
  block_t *b;
  if ((rc = block_open(path, &b, err, errlen))) return rc;
  if (samples == 0) {
    block_mark_deleted(b);
    block_unref(b);
  } else if ((rc = blocks_add(db, b))) {
    block_unref(b);
    return md_error(err, errlen, rc, "out of memory");
  }
  /* The block is visible before the head lets go of the data: queries dedup the overlap. */
  if (maxt > db->trunc_pending) db->trunc_pending = maxt;
  head_release(db);
  log_info("tsdb: persisted head [%" PRId64 ", %" PRId64 "] to block %s: %" PRIu64 " samples in %.1f ms", mint,
           maxt, name, samples, (double)(md_mono_ns() - t0) / 1e6);
  if (checkpoint) wal_checkpoint_head(db);
  return 0;
}

int persist_range(tsdb_t *db, int64_t mint, int64_t maxt, char *err, size_t errlen) {
  return persist_upto(db, mint, maxt, true, err, errlen);
}

int persist_due(tsdb_t *db) {
  int64_t span = db->opt.block_span_ms;
  int64_t margin = span / 2 > db->opt.ooo_window_ms ? span / 2 : db->opt.ooo_window_ms;
  pthread_mutex_lock(&db->maint_mu);
  head_release(db);
  int rc = 0;
  bool any = false;
  for (int round = 0; round < 64; round++) {
    int64_t hm = atomic_load(&db->head_min), mx = atomic_load(&db->max_time);
    if (hm == INT64_MAX || mx == INT64_MIN) break;
    if (floor_to(hm, span) + span - 1 + margin >= mx) break;
    int64_t exact = head_unpersisted_min(db, atomic_load(&db->min_valid));
    if (exact == INT64_MAX) break;
    int64_t a = floor_to(exact, span), b = a + span - 1;
    if (b + margin >= mx) break;
    char err[256];
    if ((rc = persist_upto(db, a, b, false, err, sizeof err))) break;
    any = true;
  }
  if (any) wal_checkpoint_head(db);
  pthread_mutex_unlock(&db->maint_mu);
  return rc;
}

int tsdb_flush(tsdb_t *db) {
  int64_t span = db->opt.block_span_ms;
  pthread_mutex_lock(&db->maint_mu);
  int rc = 0;
  char err[256];
  int64_t mx = atomic_load(&db->max_time);
  for (int round = 0; round < 1 << 20; round++) {
    int64_t exact = head_unpersisted_min(db, atomic_load(&db->min_valid));
    if (exact == INT64_MAX || exact > mx) break;
    int64_t a = floor_to(exact, span), b = a + span - 1;
    if (b > mx) b = mx;
    if ((rc = persist_upto(db, a, b, false, err, sizeof err))) break;
  }
  if (!rc) rc = wal_checkpoint_head(db);
  pthread_mutex_unlock(&db->maint_mu);
  return rc;
}

/* ---- WAL checkpoint ------------------------------------------------------------------------ */

typedef struct ckpt_ctx {
  tsdb_t *db;
  sb_t rec;
} ckpt_ctx_t;

static void put_series_rec(tsdb_t *db, sb_t *b, const series_t *s, const char *tenant) {
  wal_put_uvarint(b, s->id.ref);
  size_t tl = strlen(tenant);
  wal_put_uvarint(b, tl);
  sb_append(b, tenant, tl);
  wal_put_uvarint(b, s->id.nlabels);
  for (size_t i = 0; i < s->id.nlabels; i++) {
    const char *n = symtab_str(db->syms, s->id.labels[2 * i]), *v = symtab_str(db->syms, s->id.labels[2 * i + 1]);
    size_t a = strlen(n), c = strlen(v);
    wal_put_uvarint(b, a);
    sb_append(b, n, a);
    wal_put_uvarint(b, c);
    sb_append(b, v, c);
  }
}

/* Records for one series, built under its stripe lock into several sb_t's. */
static int ckpt_series(ckpt_ctx_t *c, wal_ckpt_t *ck, series_t *s, const char *tenant) {
  tsdb_t *db = c->db;
  sb_t *b = &c->rec;
  sb_reset(b);
  put_series_rec(db, b, s, tenant);
  if (b->oom) return MD_ENOMEM;
  int rc = wal_ckpt_add(ck, WAL_REC_SERIES, b->buf, b->len);
  if (rc) return rc;
  pthread_mutex_t *mu = stripe_of(db, s->id.ref);
  pthread_mutex_lock(mu);
  sealed_it_t it = {0};
  while (!rc && sealed_next(s, &it)) {
    sb_reset(b);
    wal_put_uvarint(b, s->id.ref);
    sb_append(b, it.p, it.len);
    rc = b->oom ? MD_ENOMEM : wal_ckpt_add(ck, WAL_REC_CHUNK, b->buf, b->len);
  }
  if (!rc && s->app.count) {
    sb_reset(b);
    wal_put_uvarint(b, s->id.ref);
    sb_append(b, s->app.buf, chunk_app_bytes(&s->app));
    rc = b->oom ? MD_ENOMEM : wal_ckpt_add(ck, WAL_REC_CHUNK, b->buf, b->len);
  }
  if (!rc && s->ooo && s->ooo->n) {
    sb_reset(b);
    wal_put_varint(b, s->ooo->s[0].ts);
    wal_put_varint(b, s->id.ref);
    wal_put_uvarint(b, s->ooo->n);
    int64_t prev = s->ooo->s[0].ts;
    for (uint32_t i = 0; i < s->ooo->n; i++) {
      wal_put_varint(b, s->ooo->s[i].ts - prev);
      wal_put_value(b, s->ooo->s[i].v);
      prev = s->ooo->s[i].ts;
    }
    rc = b->oom ? MD_ENOMEM : wal_ckpt_add(ck, WAL_REC_SAMPLES, b->buf, b->len);
  }
  pthread_mutex_unlock(mu);
  return rc;
}

static int ckpt_fill(void *ctx, wal_ckpt_t *ck) {
  ckpt_ctx_t *c = ctx;
  tsdb_t *db = c->db;
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  int rc = 0;
  for (size_t i = 0; i < nt && !rc; i++) {
    tenant_t *t = tenant_by_no(db, (uint16_t)i);
    if (!t) continue;
    series_t **ser = NULL;
    size_t n = 0;
    pthread_rwlock_rdlock(&t->lock);
    size_t k;
    idx_series_t *const *all = tindex_all(t->idx, &k);
    ser = malloc((k ? k : 1) * sizeof *ser);
    if (ser) {
      memcpy(ser, all, k * sizeof *ser);
      n = k;
    }
    pthread_rwlock_unlock(&t->lock);
    if (!ser) return MD_ENOMEM;
    for (size_t j = 0; j < n && !rc; j++) rc = ckpt_series(c, ck, ser[j], t->name);
    free(ser);
  }
  return rc;
}

int wal_checkpoint_head(tsdb_t *db) {
  if (!db->wal) return 0;
  ckpt_ctx_t c = {.db = db};
  char err[256];
  int64_t t0 = md_mono_ns();
  int rc = wal_checkpoint(db->wal, ckpt_fill, &c, err, sizeof err);
  sb_free(&c.rec);
  if (rc) log_error("tsdb: WAL checkpoint failed: %s", err);
  else log_debug("tsdb: WAL checkpoint written in %.1f ms", (double)(md_mono_ns() - t0) / 1e6);
  return rc;
}

/* ---- tombstones ------------------------------------------------------------------------------ */

#define TOMB_MAGIC "MDTOMB01"

static size_t tomb_key(const char *tenant, const tsdb_label_t *ls, size_t n, sb_t *out) {
  sb_reset(out);
  sb_append(out, tenant, strlen(tenant) + 1);
  for (size_t i = 0; i < n; i++) {
    sb_append(out, ls[i].name, strlen(ls[i].name) + 1);
    sb_append(out, ls[i].value, strlen(ls[i].value) + 1);
  }
  sb_putc(out, 0);
  return out->len;
}

static tomb_t *tomb_find(tsdb_t *db, uint64_t h, const char *key, size_t keylen) {
  for (size_t i = 0; i < db->ntombs; i++) {
    tomb_t *t = &db->tombs[i];
    if (t->hash == h && t->keylen == keylen && memcmp(t->key, key, keylen) == 0) return t;
  }
  return NULL;
}

static int tomb_add_key(tsdb_t *db, const char *key, size_t keylen, int64_t mint, int64_t maxt) {
  uint64_t h = md_hash64(key, keylen, 7);
  tomb_t *t = tomb_find(db, h, key, keylen);
  if (!t) {
    if (db->ntombs == db->cap_tombs) {
      size_t nc = db->cap_tombs ? db->cap_tombs * 2 : 16;
      tomb_t *nt = realloc(db->tombs, nc * sizeof *nt);
      if (!nt) return MD_ENOMEM;
      db->tombs = nt;
      db->cap_tombs = nc;
    }
    char *k = malloc(keylen);
    if (!k) return MD_ENOMEM;
    memcpy(k, key, keylen);
    t = &db->tombs[db->ntombs++];
    *t = (tomb_t){.hash = h, .key = k, .keylen = keylen};
  }
  /* Merge with overlapping or adjacent intervals, keeping the list small. */
  for (size_t i = 0; i < t->n; i++) {
    if (t->iv[i][0] <= (maxt == INT64_MAX ? maxt : maxt + 1) && mint <= (t->iv[i][1] == INT64_MAX ? INT64_MAX : t->iv[i][1] + 1)) {
      if (mint < t->iv[i][0]) t->iv[i][0] = mint;
      if (maxt > t->iv[i][1]) t->iv[i][1] = maxt;
      return 0;
    }
  }
  int64_t(*ni)[2] = realloc(t->iv, (t->n + 1) * sizeof *ni);
  if (!ni) return MD_ENOMEM;
  t->iv = ni;
  t->iv[t->n][0] = mint;
  t->iv[t->n][1] = maxt;
  t->n++;
  atomic_store(&db->ntombs_visible, db->ntombs);
  return 0;
}

int tombs_add(tsdb_t *db, const char *tenant, const tsdb_label_t *ls, size_t n, int64_t mint, int64_t maxt) {
  sb_t key = {0};
  tomb_key(tenant, ls, n, &key);
  int rc = key.oom ? MD_ENOMEM : 0;
  if (!rc) {
    pthread_mutex_lock(&db->tomb_mu);
    rc = tomb_add_key(db, key.buf, key.len, mint, maxt);
    pthread_mutex_unlock(&db->tomb_mu);
  }
  sb_free(&key);
  return rc;
}

size_t tombs_lookup(tsdb_t *db, const char *tenant, const tsdb_label_t *ls, size_t n, int64_t (*out)[2], size_t max) {
  if (!atomic_load(&db->ntombs_visible)) return 0;
  sb_t key = {0};
  tomb_key(tenant, ls, n, &key);
  if (key.oom) {
    sb_free(&key);
    return 0;
  }
  uint64_t h = md_hash64(key.buf, key.len, 7);
  size_t k = 0;
  pthread_mutex_lock(&db->tomb_mu);
  tomb_t *t = tomb_find(db, h, key.buf, key.len);
  if (t)
    for (size_t i = 0; i < t->n && k < max; i++) {
      out[k][0] = t->iv[i][0];
      out[k][1] = t->iv[i][1];
      k++;
    }
  pthread_mutex_unlock(&db->tomb_mu);
  sb_free(&key);
  return k;
}

size_t tombs_apply(int64_t (*iv)[2], size_t niv, int64_t *ts, double *v, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    bool del = false;
    for (size_t j = 0; j < niv && !del; j++) del = ts[i] >= iv[j][0] && ts[i] <= iv[j][1];
    if (del) continue;
    ts[k] = ts[i];
    v[k] = v[i];
    k++;
  }
  return k;
}

static void put64(sb_t *b, uint64_t v) {
  uint8_t x[8];
  for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
  sb_append(b, x, 8);
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

int tombs_save(tsdb_t *db) {
  sb_t b = {0};
  sb_append(&b, TOMB_MAGIC, 8);
  pthread_mutex_lock(&db->tomb_mu);
  put64(&b, db->ntombs);
  for (size_t i = 0; i < db->ntombs; i++) {
    tomb_t *t = &db->tombs[i];
    put64(&b, t->keylen);
    sb_append(&b, t->key, t->keylen);
    put64(&b, t->n);
    for (size_t j = 0; j < t->n; j++) {
      put64(&b, (uint64_t)t->iv[j][0]);
      put64(&b, (uint64_t)t->iv[j][1]);
    }
  }
  pthread_mutex_unlock(&db->tomb_mu);
  uint32_t crc = md_crc32c(0, b.buf, b.len);
  put64(&b, crc);
  int rc = MD_ENOMEM;
  if (!b.oom) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/tombstones", db->dir);
    rc = md_write_file_atomic(path, b.buf, b.len);
  }
  sb_free(&b);
  return rc;
}

int tombs_load(tsdb_t *db, char *err, size_t errlen) {
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/tombstones", db->dir);
  char *data;
  size_t len;
  int rc = md_read_file(path, &data, &len);
  if (rc == MD_ENOTFOUND) return 0;
  if (rc) return md_error(err, errlen, rc, "cannot read %s", path);
  const uint8_t *p = (const uint8_t *)data, *end = p + len;
  bool ok = len >= 24 && memcmp(p, TOMB_MAGIC, 8) == 0 && get64(end - 8) == md_crc32c(0, p, len - 8);
  if (ok) {
    end -= 8;
    p += 8;
    uint64_t n = get64(p);
    p += 8;
    for (uint64_t i = 0; i < n && ok; i++) {
      if (end - p < 8) {
        ok = false;
        break;
      }
      uint64_t kl = get64(p);
      p += 8;
      if (kl > (uint64_t)(end - p) || kl < 2) {
        ok = false;
        break;
      }
      const char *key = (const char *)p;
      p += kl;
      if (end - p < 8) {
        ok = false;
        break;
      }
      uint64_t ni = get64(p);
      p += 8;
      if (ni > (uint64_t)(end - p) / 16) {
        ok = false;
        break;
      }
      for (uint64_t j = 0; j < ni; j++) {
        if (tomb_add_key(db, key, kl, (int64_t)get64(p), (int64_t)get64(p + 8))) {
          free(data);
          return md_error(err, errlen, MD_ENOMEM, "out of memory");
        }
        p += 16;
      }
    }
  }
  free(data);
  if (!ok) {
    char q[PATH_MAX + 32];
    snprintf(q, sizeof q, "%s.corrupt", path);
    rename(path, q);
    log_error("tsdb: %s is damaged: moved to %s; deletions recorded in it are not applied", path, q);
  }
  return 0;
}

void tombs_free(tsdb_t *db) {
  for (size_t i = 0; i < db->ntombs; i++) {
    free(db->tombs[i].key);
    free(db->tombs[i].iv);
  }
  free(db->tombs);
  db->tombs = NULL;
  db->ntombs = 0;
}

int tsdb_delete(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                char *err, size_t errlen) {
  if (!tenant) tenant = "";
  if (mint > maxt) return md_error(err, errlen, MD_EINVAL, "delete: start after end");
  pthread_mutex_lock(&db->maint_mu);
  tsdb_query_t *q;
  int rc = tsdb_select(db, tenant, m, nm, mint, maxt, NULL, &q, err, errlen);
  if (rc) goto out;
  size_t count = 0;
  while ((rc = tsdb_query_next(q)) == 1) {
    size_t n;
    const tsdb_label_t *ls = tsdb_query_labels(q, &n);
    if ((rc = tombs_add(db, tenant, ls, n, mint, maxt))) break;
    count++;
  }
  tsdb_query_free(q);
  if (rc < 0) {
    md_error(err, errlen, rc, "delete: %s", rc == MD_ENOMEM ? "out of memory" : "reading series failed");
    goto out;
  }
  rc = tombs_save(db);
  if (rc) md_error(err, errlen, rc, "delete: cannot write the tombstones file");
  else log_info("tsdb: deleted [%" PRId64 ", %" PRId64 "] of %zu series of tenant %s", mint, maxt, count, tenant);
out:
  pthread_mutex_unlock(&db->maint_mu);
  return rc;
}

static size_t tomb_cb(void *ctx, const char *tenant, const tsdb_label_t *labels, size_t nlabels, int64_t (*out)[2],
                      size_t max) {
  return tombs_lookup(ctx, tenant, labels, nlabels, out, max);
}

/* ---- compaction and retention ------------------------------------------------------------ */

/* Compacts the raw blocks lying inside one window of size w into one; 1 when it did. */
static int compact_window_level(tsdb_t *db, int64_t w, bool need_complete) {
  block_t **bl;
  size_t n;
  if (blocks_acquire(db, INT64_MIN, INT64_MAX, &bl, &n)) return MD_ENOMEM;
  int64_t newest = INT64_MIN;
  for (size_t i = 0; i < n; i++)
    if (block_maxt(bl[i]) > newest) newest = block_maxt(bl[i]);
  int did = 0;
  for (size_t i = 0; i < n && !did; i++) {
    if (block_resolution(bl[i]) != 0) continue;
    int64_t ws = floor_to(block_mint(bl[i]), w), we = ws + w - 1;
    if (block_maxt(bl[i]) > we) continue;
    if (need_complete && we >= newest) continue;
    block_t *grp[256];
    size_t g = 0;
    for (size_t j = 0; j < n && g < 256; j++) {
      if (block_resolution(bl[j]) != 0) continue;
      if (block_mint(bl[j]) >= ws && block_maxt(bl[j]) <= we) grp[g++] = bl[j];
    }
    if (g < 2) continue;
    char name[256], err[256], path[2 * PATH_MAX];
    block_tombstones_t tb = {tomb_cb, db};
    int64_t t0 = md_mono_ns();
    int rc = block_compact(grp, g, db->blocks_dir, &tb, name, sizeof name, err, sizeof err);
    if (rc) {
      log_error("tsdb: compaction of %zu blocks failed: %s", g, err);
      did = rc;
      break;
    }
    snprintf(path, sizeof path, "%s/%s", db->blocks_dir, name);
    block_t *nb;
    if ((rc = block_open(path, &nb, err, sizeof err))) {
      log_error("tsdb: compacted block %s cannot be opened: %s", path, err);
      did = rc;
      break;
    }
    if (blocks_add(db, nb)) {
      block_mark_deleted(nb);
      block_unref(nb);
      did = MD_ENOMEM;
      break;
    }
    blocks_remove(db, grp, g);
    atomic_fetch_add(&db->compactions, 1);
    log_info("tsdb: compacted %zu blocks into %s (%.1f ms)", g, name, (double)(md_mono_ns() - t0) / 1e6);
    did = 1;
  }
  for (size_t i = 0; i < n; i++) block_unref(bl[i]);
  free(bl);
  return did;
}

static void retention(tsdb_t *db) {
  block_t **bl;
  size_t n;
  if (blocks_acquire(db, INT64_MIN, INT64_MAX, &bl, &n)) return;
  int64_t ref = atomic_load(&db->max_time);
  for (size_t i = 0; i < n; i++)
    if (block_maxt(bl[i]) > ref) ref = block_maxt(bl[i]);
  const tsdb_options_t *o = &db->opt;
  int64_t raw_keep = o->raw_retention_ms > 0 ? o->raw_retention_ms : o->retention_ms;
  block_t **drop = malloc((n ? n : 1) * sizeof *drop);
  size_t nd = 0;
  if (!drop) goto out;
  for (size_t i = 0; i < n; i++) {
    block_t *b = bl[i];
    int64_t res = block_resolution(b), keep = 0;
    if (res == 0) keep = raw_keep;
    else if (res == o->tier1_resolution_ms) keep = o->tier1_retention_ms;
    else if (res == o->tier2_resolution_ms) keep = o->tier2_retention_ms;
    if (keep <= 0 || block_maxt(b) >= ref - keep) continue;
    if (res == 0) {
      /* Raw data leaves: keep its rollups where a tier outlives raw data. */
      int64_t tiers[2][2] = {{o->tier1_resolution_ms, o->tier1_retention_ms},
                             {o->tier2_resolution_ms, o->tier2_retention_ms}};
      for (int k = 0; k < 2; k++) {
        if (tiers[k][0] <= 0 || tiers[k][1] <= raw_keep || block_maxt(b) < ref - tiers[k][1]) continue;
        char name[256], err[256], path[2 * PATH_MAX];
        if (block_downsample(b, tiers[k][0], db->blocks_dir, name, sizeof name, err, sizeof err)) {
          log_error("tsdb: downsampling %s to %" PRId64 " ms failed: %s", block_path(b), tiers[k][0], err);
          continue;
        }
        snprintf(path, sizeof path, "%s/%s", db->blocks_dir, name);
        block_t *nb;
        if (block_open(path, &nb, err, sizeof err) == 0 && blocks_add(db, nb) != 0) block_unref(nb);
      }
    }
    log_info("tsdb: retention drops block %s (maxt %" PRId64 ")", block_path(b), block_maxt(b));
    drop[nd++] = b;
  }
  if (nd) blocks_remove(db, drop, nd);
  for (size_t i = 0; i < n; i++) block_unref(bl[i]);
  free(bl);
  bl = NULL;
  nd = 0;
  if (o->retention_bytes) {
    if (blocks_acquire(db, INT64_MIN, INT64_MAX, &bl, &n)) goto out;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += block_bytes(bl[i]);
    /* Oldest first (the list is sorted by mint) until the total fits: a budget below the
     * newest block leaves none. */
    for (size_t i = 0; i < n && total > o->retention_bytes; i++) {
      drop[nd++] = bl[i];
      total -= block_bytes(bl[i]);
      log_info("tsdb: size retention drops block %s", block_path(bl[i]));
    }
    if (nd) blocks_remove(db, drop, nd);
    for (size_t i = 0; i < n; i++) block_unref(bl[i]);
    free(bl);
    bl = NULL;
  }
out:
  free(bl);
  free(drop);
}

int tsdb_compact(tsdb_t *db) {
  pthread_mutex_lock(&db->maint_mu);
  int64_t span = db->opt.block_span_ms;
  int rc = 0;
  /* Windows of 6x, 36x, 216x the block span (12 h, 3 d, 18 d by default); the first level
   * also merges an incomplete window, the larger ones wait until newer data exists. */
  int64_t w = span;
  /* A block is dropped whole, so compacted blocks must stay well below the raw retention
   * (as Prometheus caps block ranges) or retention and downsampling would lag behind. */
  int64_t raw_keep = db->opt.raw_retention_ms > 0 ? db->opt.raw_retention_ms : db->opt.retention_ms;
  quarantine_damaged(db);
  for (int level = 1; level <= 3 && rc >= 0; level++) {
    w *= 6;
    if (raw_keep > 0 && w > raw_keep / 2) break;
    for (int guard = 0; guard < 1024; guard++) {
      rc = compact_window_level(db, w, level > 1);
      if (rc <= 0) break;
    }
    /* A damaged input fails the merge once; without it the window compacts next round. */
    if (rc == MD_ECORRUPT && quarantine_damaged(db)) rc = 0;
  }
  retention(db);
  pthread_mutex_unlock(&db->maint_mu);
  return rc < 0 ? rc : 0;
}

/* ---- snapshot ----------------------------------------------------------------------------- */

static int link_tree(const char *src, const char *dst) {
  if (mkdir(dst, 0755) != 0 && errno != EEXIST) return MD_EIO;
  DIR *d = opendir(src);
  if (!d) return MD_EIO;
  struct dirent *e;
  int rc = 0;
  char a[2 * PATH_MAX], b[2 * PATH_MAX];
  while ((e = readdir(d)) && !rc) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(a, sizeof a, "%s/%s", src, e->d_name);
    snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
    struct stat st;
    if (stat(a, &st) != 0) {
      rc = MD_EIO;
      break;
    }
    if (S_ISDIR(st.st_mode)) rc = link_tree(a, b);
    else if (link(a, b) != 0) rc = errno == ENOSPC ? MD_ENOSPC : MD_EIO;
  }
  closedir(d);
  if (!rc) rc = md_fsync_dir(dst);
  return rc;
}

int tsdb_snapshot(tsdb_t *db, const char *dir, char *err, size_t errlen) {
  char bdir[PATH_MAX + 16];
  snprintf(bdir, sizeof bdir, "%s/blocks", dir);
  if (md_mkdir_p(bdir) != 0) return md_error(err, errlen, MD_EIO, "snapshot: cannot create %s", bdir);
  pthread_mutex_lock(&db->maint_mu);
  block_t **bl = NULL;
  size_t n = 0;
  int rc = blocks_acquire(db, INT64_MIN, INT64_MAX, &bl, &n);
  if (rc) {
    md_error(err, errlen, rc, "out of memory");
    goto out;
  }
  char dst[2 * PATH_MAX];
  for (size_t i = 0; i < n && !rc; i++) {
    const char *p = block_path(bl[i]);
    const char *base = strrchr(p, '/');
    snprintf(dst, sizeof dst, "%s/%s", bdir, base ? base + 1 : p);
    if ((rc = link_tree(p, dst))) md_error(err, errlen, rc, "snapshot: cannot link %s into %s", p, dst);
  }
  if (rc) goto out;
  /* The head goes in as one more block, read without truncating anything. */
  int64_t lo = head_scan_min(db), hi = atomic_load(&db->max_time);
  if (lo != INT64_MAX && hi != INT64_MIN && lo <= hi) {
    head_src_t hs;
    if ((rc = head_src_init(&hs, db, INT64_MIN, INT64_MAX))) {
      head_src_free(&hs);
      md_error(err, errlen, rc, "out of memory");
      goto out;
    }
    block_source_t src = {head_src_next, &hs};
    char name[256];
    rc = block_write(bdir, lo, hi, 0, 0, &src, name, sizeof name, err, errlen);
    head_src_free(&hs);
    if (rc) goto out;
  }
  if (db->ntombs) {
    char *data;
    size_t len;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/tombstones", db->dir);
    if (md_read_file(path, &data, &len) == 0) {
      snprintf(dst, sizeof dst, "%s/tombstones", dir);
      rc = md_write_file_atomic(dst, data, len);
      free(data);
      if (rc) md_error(err, errlen, rc, "snapshot: cannot write %s", dst);
    }
  }
  if (!rc) md_fsync_dir(dir);
out:
  for (size_t i = 0; i < n; i++) block_unref(bl[i]);
  free(bl);
  pthread_mutex_unlock(&db->maint_mu);
  return rc;
}
