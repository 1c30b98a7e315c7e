/*
 * querier — the read path: tsdb_select merges the head and every overlapping block per
 * series, in label-set order; plus label names/values, tenants and cardinality.
 *
 * A query holds references to the blocks it reads (so retention/compaction cannot unmap
 * them) and a sorted snapshot of the matching head series (series are never freed while
 * the database is open). Each source yields series in label-set order; tsdb_query_next
 * takes the smallest label set among the sources' current series and merges the samples
 * of every source positioned on it. On equal timestamps the later source wins, sources
 * being ordered rollup tiers < blocks (by mint) < head, so the freshest copy is returned.
 * Tombstones are applied last.
 *
 * Threading: a tsdb_query_t belongs to one thread; it takes the series' stripe lock only
 * while decoding that series' head chunks.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tsdb_int.h"

typedef struct bsrc {
  block_t *b;
  block_iter_t *it;
  int state; /* 1 positioned, 0 ended */
  block_agg_t agg;
} bsrc_t;

struct tsdb_query {
  tsdb_t *db;
  char *tenant;
  int64_t mint, maxt;
  series_t **hs;
  size_t nhs, hpos;
  tsdb_label_t *hl; /* labels of hs[hpos] */
  size_t hlcap;
  bsrc_t *bs;
  size_t nbs;
  arena_t *arena; /* label copies handed to the caller */
  tsdb_label_t *cur;
  size_t ncur;
  svec_t out, tmp, part;
  int64_t (*iv)[2];
  bool holds_gc; /* gc_lock read-held: head series pointers stay valid */
};

#define MAX_TOMB_IV 256

static int head_labels(tsdb_query_t *q) {
  series_t *s = q->hs[q->hpos];
  if (q->hlcap < s->id.nlabels) {
    tsdb_label_t *n = realloc(q->hl, s->id.nlabels * sizeof *n);
    if (!n) return MD_ENOMEM;
    q->hl = n;
    q->hlcap = s->id.nlabels;
  }
  series_labels(q->db, s, q->hl, q->hlcap);
  return 0;
}

void tsdb_query_free(tsdb_query_t *q) {
  if (!q) return;
  if (q->holds_gc) pthread_rwlock_unlock(&q->db->gc_lock);
  for (size_t i = 0; i < q->nbs; i++) {
    block_iter_free(q->bs[i].it);
    block_unref(q->bs[i].b);
  }
  free(q->bs);
  free(q->hs);
  free(q->hl);
  free(q->tenant);
  arena_free(q->arena);
  svec_free(&q->out);
  svec_free(&q->tmp);
  svec_free(&q->part);
  free(q->iv);
  free(q);
}

/* Head series of the tenant matching the matchers, sorted by label set. */
static int head_matches(tsdb_t *db, tenant_t *t, const idx_matcher_t *im, size_t nm, int64_t mint, int64_t maxt,
                        series_t ***out, size_t *nout) {
  reflist_t refs = {0};
  *out = NULL;
  *nout = 0;
  pthread_rwlock_rdlock(&t->lock);
  int rc = tindex_select(t->idx, db->syms, im, nm, &refs);
  pthread_rwlock_unlock(&t->lock);
  if (rc) {
    reflist_free(&refs);
    return rc;
  }
  series_t **arr = malloc((refs.n ? refs.n : 1) * sizeof *arr);
  if (!arr) {
    reflist_free(&refs);
    return MD_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < refs.n; i++) {
    series_t *s = series_by_ref(db, refs.refs[i]);
    if (!s || s->id.ref != refs.refs[i]) continue;
    pthread_mutex_t *mu = stripe_of(db, s->id.ref);
    pthread_mutex_lock(mu);
    bool in = !series_empty(s) && s->min_ts <= maxt &&
              (s->max_ts >= mint || (s->ooo && s->ooo->n && s->ooo->s[s->ooo->n - 1].ts >= mint));
    pthread_mutex_unlock(mu);
    if (in) arr[k++] = s;
  }
  reflist_free(&refs);
  *out = arr;
  *nout = k;
  return 0;
}

static _Thread_local symtab_t *tl_syms;
static int cmp_hs(const void *a, const void *b) {
  const series_t *x = *(series_t *const *)a, *y = *(series_t *const *)b;
  return idx_series_cmp(tl_syms, &x->id, &y->id);
}

int tsdb_select(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                const tsdb_select_hints_t *hints, tsdb_query_t **out, char *err, size_t errlen) {
  if (!tenant) tenant = "";
  idx_matcher_t *im = NULL;
  int rc = idx_matchers_compile(m, nm, &im, err, errlen);
  if (rc) return rc;
  tsdb_query_t *q = calloc(1, sizeof *q);
  if (!q) {
    idx_matchers_free(im, nm);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  q->db = db;
  pthread_rwlock_rdlock(&db->gc_lock);
  q->holds_gc = true;
  q->mint = mint;
  q->maxt = maxt;
  q->tenant = strdup(tenant);
  q->arena = arena_new(0);
  q->iv = malloc(MAX_TOMB_IV * sizeof *q->iv);
  if (!q->tenant || !q->arena || !q->iv) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  tenant_t *t = tenant_get(db, tenant, false);
  if (t) {
    if ((rc = head_matches(db, t, im, nm, mint, maxt, &q->hs, &q->nhs))) {
      md_error(err, errlen, rc, "out of memory");
      goto fail;
    }
    tl_syms = db->syms;
    if (q->nhs > 1) qsort(q->hs, q->nhs, sizeof *q->hs, cmp_hs);
  }
  block_t **bl;
  size_t nb;
  if ((rc = blocks_acquire(db, mint, maxt, &bl, &nb))) {
    md_error(err, errlen, rc, "out of memory");
    goto fail;
  }
  q->bs = calloc(nb ? nb : 1, sizeof *q->bs);
  if (!q->bs) {
    for (size_t i = 0; i < nb; i++) block_unref(bl[i]);
    free(bl);
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  /* Raw blocks always; rollup blocks (which exist only where raw data aged out) answer
   * with the last value of each window. Coarser tiers first: finer data wins ties. */
  (void)hints;
  size_t order = 0;
  for (int pass = 0; pass < 3; pass++) {
    for (size_t i = 0; i < nb; i++) {
      int64_t res = block_resolution(bl[i]);
      int want = res == 0 ? 2 : res == db->opt.tier1_resolution_ms ? 1 : 0;
      if (want != pass) continue;
      q->bs[order].b = bl[i];
      q->bs[order].agg = res == 0 ? BLOCK_AGG_RAW : BLOCK_AGG_LAST;
      order++;
    }
  }
  q->nbs = nb;
  free(bl);
  for (size_t i = 0; i < q->nbs; i++) {
    rc = block_select(q->bs[i].b, tenant, m, nm, mint, maxt, &q->bs[i].it, err, errlen);
    if (rc) goto fail;
    rc = block_iter_next(q->bs[i].it);
    if (rc < 0) {
      md_error(err, errlen, rc, "block %s: corrupt index", block_path(q->bs[i].b));
      goto fail;
    }
    q->bs[i].state = rc;
  }
  if (q->nhs && (rc = head_labels(q))) goto fail;
  idx_matchers_free(im, nm);
  *out = q;
  return 0;
fail:
  idx_matchers_free(im, nm);
  tsdb_query_free(q);
  return rc;
}

/* The index of the first of ts[lo..n) that is >= t (n when none): ts ascends. */
static size_t count_before(const int64_t *ts, size_t lo, size_t n, int64_t t) {
  size_t hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ts[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* out = merge(out, part); on equal ts part wins. */
static int merge_in(tsdb_query_t *q) {
  if (!q->part.n) return 0;
  if (!q->out.n) {
    svec_t t = q->out;
    q->out = q->part;
    q->part = t;
    q->part.n = 0;
    return 0;
  }
  if (q->out.ts[q->out.n - 1] < q->part.ts[0]) { /* the usual case: blocks in time order */
    if (svec_reserve(&q->out, q->part.n)) return MD_ENOMEM;
    memcpy(q->out.ts + q->out.n, q->part.ts, q->part.n * sizeof *q->out.ts);
    memcpy(q->out.v + q->out.n, q->part.v, q->part.n * sizeof *q->out.v);
    q->out.n += q->part.n;
    q->part.n = 0;
    return 0;
  }
  q->tmp.n = 0;
  if (svec_reserve(&q->tmp, q->out.n + q->part.n)) return MD_ENOMEM;
  size_t i = 0, j = 0, k = 0;
  while (i < q->out.n || j < q->part.n) {
    if (j == q->part.n || (i < q->out.n && q->out.ts[i] < q->part.ts[j])) {
      q->tmp.ts[k] = q->out.ts[i];
      q->tmp.v[k++] = q->out.v[i++];
    } else {
      if (i < q->out.n && q->out.ts[i] == q->part.ts[j]) i++;
      q->tmp.ts[k] = q->part.ts[j];
      q->tmp.v[k++] = q->part.v[j++];
    }
  }
  q->tmp.n = k;
  svec_t t = q->out;
  q->out = q->tmp;
  q->tmp = t;
  q->part.n = 0;
  return 0;
}

/* Only the array is copied: its strings are the database's interned symbols (append-only
 * until tsdb_close) or a block's symbol table (the query holds a reference to the block), so
 * they outlive the query as tsdb_query_labels promises. */
static int copy_labels(tsdb_query_t *q, const tsdb_label_t *ls, size_t n) {
  tsdb_label_t *c = arena_alloc(q->arena, (n ? n : 1) * sizeof *c);
  if (!c) return MD_ENOMEM;
  memcpy(c, ls, n * sizeof *c);
  q->cur = c;
  q->ncur = n;
  return 0;
}

int tsdb_query_next(tsdb_query_t *q) {
  for (;;) {
    /* Find the smallest current label set. */
    const tsdb_label_t *min = NULL;
    size_t nmin = 0;
    if (q->hpos < q->nhs) {
      min = q->hl;
      nmin = q->hs[q->hpos]->id.nlabels;
    }
    for (size_t i = 0; i < q->nbs; i++) {
      if (q->bs[i].state != 1) continue;
      size_t n;
      const tsdb_label_t *ls = block_iter_labels(q->bs[i].it, &n);
      if (!min || labels_cmp(ls, n, min, nmin) < 0) {
        min = ls;
        nmin = n;
      }
    }
    if (!min) return 0;
    int rc = copy_labels(q, min, nmin);
    if (rc) return rc;
    q->out.n = 0;
    for (size_t i = 0; i < q->nbs; i++) {
      bsrc_t *s = &q->bs[i];
      if (s->state != 1) continue;
      size_t n;
      const tsdb_label_t *ls = block_iter_labels(s->it, &n);
      if (labels_cmp(ls, n, q->cur, q->ncur) != 0) continue;
      const int64_t *ts;
      const double *v;
      size_t ns;
      rc = block_iter_samples(s->it, s->agg, &ts, &v, &ns);
      if (rc < 0) return rc;
      /* ts ascends: the samples in [mint, maxt] are one run [a, e) */
      size_t a = count_before(ts, 0, ns, q->mint), e = count_before(ts, a, ns, q->maxt);
      if (e < ns && ts[e] == q->maxt) e++; /* strictly ascending: maxt at most once */
      q->part.n = 0;
      if (svec_reserve(&q->part, e - a)) return MD_ENOMEM;
      if (e > a) {
        memcpy(q->part.ts, ts + a, (e - a) * sizeof *ts);
        memcpy(q->part.v, v + a, (e - a) * sizeof *v);
      }
      q->part.n = e - a;
      if ((rc = merge_in(q))) return rc;
      rc = block_iter_next(s->it);
      if (rc < 0) return rc;
      s->state = rc;
    }
    if (q->hpos < q->nhs && labels_cmp(q->hl, q->hs[q->hpos]->id.nlabels, q->cur, q->ncur) == 0) {
      series_t *s = q->hs[q->hpos];
      q->part.n = 0;
      pthread_mutex_t *mu = stripe_of(q->db, s->id.ref);
      pthread_mutex_lock(mu);
      rc = series_read(s, q->mint, q->maxt, &q->part);
      pthread_mutex_unlock(mu);
      if (rc) return rc;
      if ((rc = merge_in(q))) return rc;
      q->hpos++;
      if (q->hpos < q->nhs && (rc = head_labels(q))) return rc;
    }
    if (q->out.n && atomic_load(&q->db->ntombs_visible)) {
      size_t k = tombs_lookup(q->db, q->tenant, q->cur, q->ncur, q->iv, MAX_TOMB_IV);
      if (k) q->out.n = tombs_apply(q->iv, k, q->out.ts, q->out.v, q->out.n);
    }
    if (q->out.n) return 1;
  }
}

const tsdb_label_t *tsdb_query_labels(tsdb_query_t *q, size_t *n) {
  *n = q->ncur;
  return q->cur;
}

size_t tsdb_query_samples(tsdb_query_t *q, const int64_t **ts, const double **v) {
  *ts = q->out.ts;
  *v = q->out.v;
  return q->out.n;
}

/* ---- metadata ----------------------------------------------------------------------------- */

void tsdb_strings_free(tsdb_strings_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) free(s->items[i]);
  free(s->items);
  s->items = NULL;
  s->n = 0;
}

typedef struct strset {
  char **items;
  size_t n, cap;
  bool oom;
} strset_t;

static void strset_add(void *ctx, const char *s) {
  strset_t *ss = ctx;
  if (ss->oom) return;
  if (ss->n == ss->cap) {
    size_t nc = ss->cap ? ss->cap * 2 : 64;
    char **ni = realloc(ss->items, nc * sizeof *ni);
    if (!ni) {
      ss->oom = true;
      return;
    }
    ss->items = ni;
    ss->cap = nc;
  }
  if (!(ss->items[ss->n] = strdup(s))) {
    ss->oom = true;
    return;
  }
  ss->n++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int strset_finish(strset_t *ss, tsdb_strings_t *out) {
  if (ss->oom) {
    tsdb_strings_t t = {ss->items, ss->n};
    tsdb_strings_free(&t);
    return MD_ENOMEM;
  }
  if (ss->n) qsort(ss->items, ss->n, sizeof *ss->items, cmp_str);
  size_t k = 0;
  for (size_t i = 0; i < ss->n; i++) {
    if (k && strcmp(ss->items[k - 1], ss->items[i]) == 0) free(ss->items[i]);
    else ss->items[k++] = ss->items[i];
  }
  out->items = ss->items;
  out->n = k;
  return 0;
}

/* name == NULL: label names; else values of name. */
static int label_meta(tsdb_t *db, const char *tenant, const char *name, const tsdb_matcher_t *m, size_t nm,
                      int64_t mint, int64_t maxt, tsdb_strings_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!tenant) tenant = "";
  strset_t ss = {0};
  int rc = 0;
  bool all_time = mint == INT64_MIN && maxt == INT64_MAX;
  if (nm == 0 && all_time) {
    /* Fast path: the index's own lists, and the blocks' symbol lists. */
    tenant_t *t = tenant_get(db, tenant, false);
    if (t) {
      pthread_rwlock_rdlock(&t->lock);
      uint32_t *ids = NULL;
      size_t n = 0;
      uint32_t nid = name ? symtab_find(db->syms, name, strlen(name)) : 0;
      if (!name) rc = tindex_names(t->idx, &ids, &n);
      else if (nid != UINT32_MAX) rc = tindex_values(t->idx, nid, &ids, &n);
      pthread_rwlock_unlock(&t->lock);
      for (size_t i = 0; i < n && !rc; i++) strset_add(&ss, symtab_str(db->syms, ids[i]));
      free(ids);
      if (rc) goto fail;
    }
    block_t **bl;
    size_t nb;
    if ((rc = blocks_acquire(db, mint, maxt, &bl, &nb))) goto fail;
    for (size_t i = 0; i < nb; i++) {
      if (!rc) rc = name ? block_label_values(bl[i], tenant, name, strset_add, &ss)
                         : block_label_names(bl[i], tenant, strset_add, &ss);
      block_unref(bl[i]);
    }
    free(bl);
    if (rc) goto fail;
    goto done;
  }
  /* General path: walk the matching series (labels only where possible). */
  tsdb_query_t *q;
  if ((rc = tsdb_select(db, tenant, m, nm, mint, maxt, NULL, &q, err, errlen))) goto fail_quiet;
  while ((rc = tsdb_query_next(q)) == 1) {
    size_t n;
    const tsdb_label_t *ls = tsdb_query_labels(q, &n);
    for (size_t i = 0; i < n; i++) {
      if (!name) strset_add(&ss, ls[i].name);
      else if (strcmp(ls[i].name, name) == 0) strset_add(&ss, ls[i].value);
    }
  }
  tsdb_query_free(q);
  if (rc < 0) goto fail;
done:
  rc = strset_finish(&ss, out);
  if (rc) return md_error(err, errlen, rc, "out of memory");
  return 0;
fail:
  md_error(err, errlen, rc, "%s", rc == MD_ENOMEM ? "out of memory" : "reading series failed");
fail_quiet : {
  tsdb_strings_t t = {ss.items, ss.n};
  tsdb_strings_free(&t);
}
  return rc;
}

int tsdb_label_names(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                     tsdb_strings_t *out, char *err, size_t errlen) {
  return label_meta(db, tenant, NULL, m, nm, mint, maxt, out, err, errlen);
}

int tsdb_label_values(tsdb_t *db, const char *tenant, const char *name, const tsdb_matcher_t *m, size_t nm,
                      int64_t mint, int64_t maxt, tsdb_strings_t *out, char *err, size_t errlen) {
  if (!name) return md_error(err, errlen, MD_EINVAL, "label name required");
  return label_meta(db, tenant, name, m, nm, mint, maxt, out, err, errlen);
}

int tsdb_tenants(tsdb_t *db, tsdb_strings_t *out) {
  memset(out, 0, sizeof *out);
  strset_t ss = {0};
  pthread_rwlock_rdlock(&db->tenants_lock);
  size_t nt = db->ntenants;
  pthread_rwlock_unlock(&db->tenants_lock);
  for (size_t i = 0; i < nt; i++) {
    tenant_t *t = tenant_by_no(db, (uint16_t)i);
    if (!t) continue;
    pthread_rwlock_rdlock(&t->lock);
    size_t n = tindex_series_count(t->idx);
    pthread_rwlock_unlock(&t->lock);
    if (n) strset_add(&ss, t->name);
  }
  block_t **bl;
  size_t nb;
  if (blocks_acquire(db, INT64_MIN, INT64_MAX, &bl, &nb) == 0) {
    for (size_t i = 0; i < nb; i++) {
      block_tenants(bl[i], strset_add, &ss);
      block_unref(bl[i]);
    }
    free(bl);
  } else {
    ss.oom = true;
  }
  return strset_finish(&ss, out);
}

/* ---- cardinality ------------------------------------------------------------------------------ */

typedef struct countlist {
  tsdb_count_t *items;
  size_t n, cap;
} countlist_t;

static int count_add(countlist_t *l, const char *name, const char *name2, uint64_t c) {
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    tsdb_count_t *ni = realloc(l->items, nc * sizeof *ni);
    if (!ni) return MD_ENOMEM;
    l->items = ni;
    l->cap = nc;
  }
  size_t a = strlen(name), b = name2 ? strlen(name2) + 1 : 0;
  char *s = malloc(a + b + 1);
  if (!s) return MD_ENOMEM;
  memcpy(s, name, a);
  if (name2) {
    s[a] = '=';
    memcpy(s + a + 1, name2, b - 1);
  }
  s[a + b] = 0;
  l->items[l->n++] = (tsdb_count_t){s, c};
  return 0;
}

static int cmp_count(const void *a, const void *b) {
  const tsdb_count_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return strcmp(x->name, y->name);
}

static void count_top(countlist_t *l, size_t limit, tsdb_count_t **out, size_t *n) {
  if (l->n) qsort(l->items, l->n, sizeof *l->items, cmp_count);
  size_t k = l->n < limit ? l->n : limit;
  for (size_t i = k; i < l->n; i++) free(l->items[i].name);
  *out = l->items;
  *n = k;
}

void tsdb_cardinality_free(tsdb_cardinality_t *c) {
  if (!c) return;
  tsdb_count_t *lists[4] = {c->series_by_metric, c->values_by_label, c->series_by_pair, c->memory_by_label};
  size_t ns[4] = {c->n_series_by_metric, c->n_values_by_label, c->n_series_by_pair, c->n_memory_by_label};
  for (int i = 0; i < 4; i++) {
    for (size_t k = 0; k < ns[i]; k++) free(lists[i][k].name);
    free(lists[i]);
  }
  memset(c, 0, sizeof *c);
}

int tsdb_cardinality(tsdb_t *db, const char *tenant, size_t limit, tsdb_cardinality_t *out) {
  memset(out, 0, sizeof *out);
  if (!tenant) tenant = "";
  if (!limit) limit = 10;
  countlist_t metric = {0}, values = {0}, pairs = {0}, memory = {0};
  tenant_t *t = tenant_get(db, tenant, false);
  int rc = 0;
  if (t) {
    pthread_rwlock_rdlock(&t->lock);
    out->num_series = tindex_series_count(t->idx);
    uint32_t *names = NULL;
    size_t nn = 0;
    rc = tindex_names(t->idx, &names, &nn);
    uint32_t metric_name = symtab_find(db->syms, "__name__", 8);
    for (size_t i = 0; i < nn && !rc; i++) {
      uint32_t *vals = NULL;
      size_t nv = 0;
      if ((rc = tindex_values(t->idx, names[i], &vals, &nv))) break;
      const char *nstr = symtab_str(db->syms, names[i]);
      uint64_t bytes = 0;
      out->num_label_pairs += nv;
      for (size_t k = 0; k < nv && !rc; k++) {
        const char *vstr = symtab_str(db->syms, vals[k]);
        uint64_t c = tindex_postings_len(t->idx, names[i], vals[k]);
        bytes += strlen(vstr);
        if (names[i] == metric_name) rc = count_add(&metric, vstr, NULL, c);
        if (!rc) rc = count_add(&pairs, nstr, vstr, c);
      }
      if (!rc) rc = count_add(&values, nstr, NULL, nv);
      if (!rc) rc = count_add(&memory, nstr, NULL, bytes);
      free(vals);
    }
    free(names);
    pthread_rwlock_unlock(&t->lock);
  }
  count_top(&metric, limit, &out->series_by_metric, &out->n_series_by_metric);
  count_top(&values, limit, &out->values_by_label, &out->n_values_by_label);
  count_top(&pairs, limit, &out->series_by_pair, &out->n_series_by_pair);
  count_top(&memory, limit, &out->memory_by_label, &out->n_memory_by_label);
  if (rc) tsdb_cardinality_free(out);
  return rc;
}
