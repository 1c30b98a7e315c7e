/*
 * compact — merges blocks into one (block_compact in block.h).
 *
 * A k-way merge over the inputs' series, which each block stores in (tenant, label set)
 * order: at every step the smallest key among the inputs' cursors is taken from every
 * input that has it. The series' samples (all parts, for rollup blocks) are then merged by
 * timestamp; where several inputs have the same timestamp the one from the block with the
 * highest seq (freshest data; ties: later in the input array) wins. Tombstoned intervals are
 * dropped, series left without samples vanish. The output's seq is the inputs' maximum, so
 * a compacted block still loses against a block written after its newest input.
 *
 * Memory: one series per input at a time, plus the index of the output (block_writer).
 * Threading: runs on the caller's thread; the inputs are only read.
 */
#include <stdlib.h>
#include <string.h>

#include "block_internal.h"
#include "core/core.h"

#define MAX_TOMBSTONES 256

typedef struct {
  const block_t *b;
  size_t prio; /* rank by freshness: higher wins */
  size_t t, s; /* cursor: tenant, series */
  tsdb_label_t *lab;
  int nlab;
  bool done;
} cursor_t;

typedef struct {
  int64_t ts;
  uint32_t src, idx;
} row_t;

static int cmp_row(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
  return x->src < y->src ? -1 : x->src > y->src;
}

/* Positions c on its next series (loading its labels) or marks it done. */
static int cursor_load(cursor_t *c) {
  while (c->t < block_tenant_count(c->b) && c->s >= block_tenant_series(c->b, c->t)) {
    c->t++;
    c->s = 0;
  }
  if (c->t >= block_tenant_count(c->b)) {
    c->done = true;
    return 0;
  }
  c->nlab = block_series_labels(c->b, c->t, c->s, c->lab);
  return c->nlab < 0 ? c->nlab : 0;
}

static int cursor_cmp(const cursor_t *a, const cursor_t *b) {
  int c = strcmp(block_tenant_name(a->b, a->t), block_tenant_name(b->b, b->t));
  if (c) return c;
  return block_labels_cmp(a->lab, (size_t)a->nlab, b->lab, (size_t)b->nlab);
}

static bool deleted(int64_t ts, int64_t (*iv)[2], size_t niv) {
  for (size_t i = 0; i < niv; i++)
    if (ts >= iv[i][0] && ts <= iv[i][1]) return true;
  return false;
}

typedef struct {
  int64_t *ts;
  double *v[BLOCK_ROLLUP_PARTS];
  int n;
} series_data_t;

static void series_data_free(series_data_t *d) {
  free(d->ts);
  for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) free(d->v[p]);
  memset(d, 0, sizeof *d);
}

int block_compact(block_t *const *in, size_t n, const char *parent_dir, const block_tombstones_t *tomb, char *name,
                  size_t name_len, char *err, size_t errlen) {
  if (n == 0) return md_error(err, errlen, MD_EINVAL, "block_compact: no input blocks");
  int64_t mint = block_mint(in[0]), maxt = block_maxt(in[0]), res = block_resolution(in[0]);
  int level = 0;
  uint64_t seq = 0;
  for (size_t i = 0; i < n; i++) {
    if (block_resolution(in[i]) != res)
      return md_error(err, errlen, MD_EINVAL, "block_compact: inputs have different resolutions");
    if (block_mint(in[i]) < mint) mint = block_mint(in[i]);
    if (block_maxt(in[i]) > maxt) maxt = block_maxt(in[i]);
    if (block_level(in[i]) > level) level = block_level(in[i]);
    if (block_seq(in[i]) > seq) seq = block_seq(in[i]);
  }
  int parts = block_parts(in[0]);
  cursor_t *cur = calloc(n, sizeof *cur);
  series_data_t *data = calloc(n, sizeof *data);
  row_t *rows = NULL;
  int64_t *ots = NULL;
  double *ov[BLOCK_ROLLUP_PARTS] = {0};
  size_t capout = 0;
  int64_t(*iv)[2] = malloc(MAX_TOMBSTONES * sizeof *iv);
  block_writer_t *w = NULL;
  int rc;
  if (!cur || !data || !iv) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    cur[i].b = in[i];
    cur[i].lab = malloc(BLOCK_MAX_LABELS * sizeof *cur[i].lab);
    if (!cur[i].lab) {
      rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
      goto out;
    }
    /* freshness rank: count inputs that lose against this one */
    for (size_t j = 0; j < n; j++)
      if (block_seq(in[j]) < block_seq(in[i]) || (block_seq(in[j]) == block_seq(in[i]) && j < i)) cur[i].prio++;
    if ((rc = cursor_load(&cur[i]))) {
      rc = md_error(err, errlen, rc, "block_compact: %s: corrupt series", block_path(in[i]));
      goto out;
    }
  }
  if ((rc = block_writer_new(parent_dir, mint, maxt, level + 1, res, seq, &w, err, errlen))) goto out;
  for (;;) {
    cursor_t *min = NULL;
    for (size_t i = 0; i < n; i++)
      if (!cur[i].done && (!min || cursor_cmp(&cur[i], min) < 0)) min = &cur[i];
    if (!min) break;
    /* read every input that holds this series, then merge rows by (ts, freshness) */
    size_t nrows = 0;
    const cursor_t *sole = NULL;
    int holders = 0;
    for (size_t i = 0; i < n; i++) {
      if (cur[i].done || (&cur[i] != min && cursor_cmp(&cur[i], min) != 0)) {
        data[i].n = 0;
        continue;
      }
      int k = block_series_read(cur[i].b, cur[i].t, cur[i].s, &data[i].ts, data[i].v);
      if (k < 0) {
        rc = md_error(err, errlen, k, "block_compact: %s: cannot read series", block_path(cur[i].b));
        goto out;
      }
      data[i].n = k;
      nrows += (size_t)k;
      holders++;
      sole = &cur[i];
    }
    if (nrows > capout) {
      size_t nc = capout ? capout : 1024;
      while (nc < nrows) nc *= 2;
      int64_t *nt = realloc(ots, nc * sizeof *nt);
      if (!nt) goto oom;
      ots = nt;
      for (int p = 0; p < parts; p++) {
        double *nv = realloc(ov[p], nc * sizeof *nv);
        if (!nv) goto oom;
        ov[p] = nv;
      }
      row_t *nr = realloc(rows, nc * sizeof *nr);
      if (!nr) goto oom;
      rows = nr;
      capout = nc;
    }
    size_t niv = 0;
    if (tomb && tomb->intervals)
      niv = tomb->intervals(tomb->ctx, block_tenant_name(min->b, min->t), min->lab, (size_t)min->nlab, iv,
                            MAX_TOMBSTONES);
    if (niv > MAX_TOMBSTONES) niv = MAX_TOMBSTONES;
    size_t nout = 0;
    if (holders == 1) {
      const series_data_t *d = &data[sole - cur];
      for (int r = 0; r < d->n; r++) {
        if (niv && deleted(d->ts[r], iv, niv)) continue;
        ots[nout] = d->ts[r];
        for (int p = 0; p < parts; p++) ov[p][nout] = d->v[p][r];
        nout++;
      }
    } else {
      size_t k = 0;
      for (size_t i = 0; i < n; i++)
        for (int r = 0; r < data[i].n; r++) rows[k++] = (row_t){data[i].ts[r], (uint32_t)cur[i].prio, (uint32_t)r};
      qsort(rows, k, sizeof *rows, cmp_row);
      for (size_t r = 0; r < k; r++) {
        if (r + 1 < k && rows[r + 1].ts == rows[r].ts) continue; /* a fresher block has this ts */
        if (niv && deleted(rows[r].ts, iv, niv)) continue;
        size_t src = 0;
        while (cur[src].prio != rows[r].src) src++;
        ots[nout] = rows[r].ts;
        for (int p = 0; p < parts; p++) ov[p][nout] = data[src].v[p][rows[r].idx];
        nout++;
      }
    }
    const double *vp[BLOCK_ROLLUP_PARTS];
    for (int p = 0; p < parts; p++) vp[p] = ov[p];
    rc = block_writer_add(w, block_tenant_name(min->b, min->t), min->lab, (size_t)min->nlab, ots, vp, nout, err,
                          errlen);
    if (rc) goto out;
    /* advance every holder (min last: the others compare against its labels) */
    for (size_t i = 0; i < n; i++) series_data_free(&data[i]);
    for (size_t i = 0; i < n; i++) {
      if (&cur[i] == min || cur[i].done || cursor_cmp(&cur[i], min) != 0) continue;
      cur[i].s++;
      if ((rc = cursor_load(&cur[i]))) goto corrupt;
    }
    min->s++;
    if ((rc = cursor_load(min))) goto corrupt;
  }
  rc = block_writer_finish(w, name, name_len, err, errlen);
  w = NULL;
  goto out;
corrupt:
  rc = md_error(err, errlen, rc, "block_compact: corrupt series in an input block");
  goto out;
oom:
  rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
out:
  block_writer_abort(w);
  for (size_t i = 0; cur && i < n; i++) free(cur[i].lab);
  for (size_t i = 0; data && i < n; i++) series_data_free(&data[i]);
  free(cur);
  free(data);
  free(rows);
  free(ots);
  for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) free(ov[p]);
  free(iv);
  return rc;
}
