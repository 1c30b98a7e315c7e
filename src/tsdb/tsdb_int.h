/*
 * tsdb_int — the database object shared by tsdb.c (lifecycle, append, WAL replay),
 * persist.c (head → blocks, compaction, retention, snapshot, tombstones) and querier.c
 * (select and metadata). Private to src/tsdb.
 *
 * Locks, in acquisition order (never take an earlier one while holding a later one):
 *   maint_mu          serialises maintenance: persistence, compaction, retention, snapshot,
 *                     delete (one at a time, never on the append path);
 *   tenants_lock      (rwlock) the tenant table;
 *   tenant->lock      (rwlock) one tenant's index; write only to create series;
 *   stripes[ref % N]  a series' samples (head.h);
 *   blocks_lock       (rwlock) the list of loaded blocks;
 *   tomb_mu           tombstones;
 *   the WAL's own mutex.
 * gc_lock (writer-preferring rwlock) is taken first of all, for reading, by every append
 * (for the call) and every query (until tsdb_query_free): while it is held, a series pointer
 * stays valid and head data does not disappear. Dropping persisted head data and freeing
 * series take it for writing with a short timeout; when queries keep it, the truncation is
 * left pending and retried (queries started earlier keep reading that data from the head).
 */
#ifndef METRICSD_TSDB_INT_H
#define METRICSD_TSDB_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block.h"
#include "head.h"
#include "index.h"
#include "tsdb.h"
#include "wal.h"

#define TSDB_STRIPES 4096
#define REF_PAGE_BITS 16
#define REF_PAGES 65536

typedef struct tenant {
  char *name;
  uint16_t no;
  pthread_rwlock_t lock;
  tindex_t *idx;
} tenant_t;

/* Deleted intervals of one series, keyed by tenant + label set. */
typedef struct tomb {
  uint64_t hash;
  char *key; /* tenant \0 name \0 value \0 ... \0\0 */
  size_t keylen;
  int64_t (*iv)[2];
  size_t n;
} tomb_t;

struct tsdb {
  char dir[PATH_MAX];
  char blocks_dir[PATH_MAX + 16];
  char wal_dir[PATH_MAX + 16];
  tsdb_options_t opt;
  symtab_t *syms;

  pthread_rwlock_t tenants_lock;
  tenant_t **tenants;
  size_t ntenants, cap_tenants;

  series_t **ref_pages[REF_PAGES]; /* ref → series; pages never move */
  _Atomic uint32_t next_ref;
  uint32_t instance; /* unique per tsdb_open in this process: the high half of public refs */
  pthread_mutex_t stripes[TSDB_STRIPES];

  wal_t *wal;
  bool replaying;
  _Atomic int64_t min_valid; /* samples older than this are persisted: TOO_OLD */
  _Atomic int64_t min_time, max_time;
  _Atomic int64_t head_min; /* lower bound of head data; recomputed after truncation */

  pthread_rwlock_t blocks_lock;
  block_t **blocks; /* ascending mint */
  size_t nblocks, cap_blocks;

  pthread_mutex_t tomb_mu;
  tomb_t *tombs;
  size_t ntombs, cap_tombs;
  _Atomic size_t ntombs_visible; /* lets queries skip tombstones when there are none */

  pthread_rwlock_t gc_lock;
  int64_t trunc_pending; /* INT64_MIN or a persisted time the head still holds (maint_mu) */
  pthread_mutex_t maint_mu;
  pthread_t bg;
  bool bg_running;
  pthread_mutex_t bg_mu;
  pthread_cond_t bg_cv;
  bool bg_stop;

  _Atomic uint64_t series_removed;
  _Atomic uint64_t samples_appended, samples_rejected, series_created, compactions, wal_corruptions;
  _Atomic int last_write_error;
};

static inline pthread_mutex_t *stripe_of(tsdb_t *db, uint32_t ref) { return &db->stripes[ref & (TSDB_STRIPES - 1)]; }

static inline series_t *series_by_ref(tsdb_t *db, uint32_t ref) {
  series_t **page = db->ref_pages[ref >> REF_PAGE_BITS];
  return page ? page[ref & ((1u << REF_PAGE_BITS) - 1)] : NULL;
}

/* tsdb.c */
tenant_t *tenant_get(tsdb_t *db, const char *name, bool create);
tenant_t *tenant_by_no(tsdb_t *db, uint16_t no);
/* Snapshot of a tenant's series sorted by label set (caller frees the array). */
int tenant_series_sorted(tsdb_t *db, tenant_t *t, series_t ***out, size_t *n);
void atomic_min64(_Atomic int64_t *a, int64_t v);
void atomic_max64(_Atomic int64_t *a, int64_t v);

/* persist.c */
int blocks_load(tsdb_t *db, char *err, size_t errlen);
void blocks_unload(tsdb_t *db);
/* References to blocks overlapping [mint, maxt] (caller unrefs each and frees the array). */
int blocks_acquire(tsdb_t *db, int64_t mint, int64_t maxt, block_t ***out, size_t *n);
int persist_range(tsdb_t *db, int64_t mint, int64_t maxt, char *err, size_t errlen);
int persist_due(tsdb_t *db); /* background: persist what is old enough */
int wal_checkpoint_head(tsdb_t *db);
int tombs_load(tsdb_t *db, char *err, size_t errlen);
void tombs_free(tsdb_t *db);
/* Deleted intervals of a series (returns count, fills up to max). */
size_t tombs_lookup(tsdb_t *db, const char *tenant, const tsdb_label_t *ls, size_t n, int64_t (*out)[2], size_t max);
/* Drops samples in deleted intervals from ts/v (in place); returns the new count. */
size_t tombs_apply(int64_t (*iv)[2], size_t niv, int64_t *ts, double *v, size_t n);
int tombs_add(tsdb_t *db, const char *tenant, const tsdb_label_t *ls, size_t n, int64_t mint, int64_t maxt);
int tombs_save(tsdb_t *db);

/* querier.c */
/* Labels of a head series as strings (array from a, strings from the symbol table). */
tsdb_label_t *series_labels(tsdb_t *db, const series_t *s, tsdb_label_t *buf, size_t cap);

#endif
