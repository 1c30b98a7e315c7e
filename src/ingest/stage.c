/*
 * stage — a request's samples staged under their series, for the parsers that group what a
 * body repeats (line protocol, remote_write): each distinct series is a group, numbered in
 * order of first appearance; istage_emit writes one batch series per group with its samples
 * in arrival order (a counting sort by group). See ingest_int.h.
 */
#include "ingest_int.h"

#include <stdlib.h>
#include <string.h>

bool ingest_grow(void **arr, size_t *cap, size_t want, size_t sz, size_t first) {
  if (want <= *cap) return true;
  size_t nc = *cap ? *cap : first;
  while (nc < want)
    nc *= 2;
  void *na = realloc(*arr, nc * sz);
  if (!na) return false;
  *arr = na;
  *cap = nc;
  return true;
}

int istage_add(istage_t *st, ictx_t *c, uint32_t group, int64_t ts, double v) {
  if (st->n >= c->lim.max_samples_per_request) {
    c->limit_hit = true;
    return MD_ELIMIT;
  }
  if (group >= st->ngroups) {
    size_t old = st->cap_count;
    if (!ingest_grow((void **)&st->count, &st->cap_count, (size_t)group + 1, sizeof *st->count, 1024))
      return MD_ENOMEM;
    memset(st->count + old, 0, (st->cap_count - old) * sizeof *st->count);
    st->ngroups = (size_t)group + 1;
  }
  if (!ingest_grow((void **)&st->s, &st->cap, st->n + 1, sizeof *st->s, 4096)) return MD_ENOMEM;
  st->s[st->n++] = (istage_sample_t){group, ts, v};
  st->count[group]++;
  c->res->samples++;
  return 0;
}

int istage_emit(istage_t *st, ictx_t *c, istage_labels_fn labels, void *ctx) {
  if (st->n == 0) return 0;
  if (!ingest_grow((void **)&st->order, &st->cap_order, st->n, sizeof *st->order, 4096)) return MD_ENOMEM;
  /* count[g] becomes the group's running offset into order, then its end */
  size_t off = 0;
  for (size_t g = 0; g < st->ngroups; g++) {
    size_t n = st->count[g];
    st->count[g] = off;
    off += n;
  }
  for (size_t k = 0; k < st->n; k++)
    st->order[st->count[st->s[k].group]++] = k;
  char err[200];
  size_t first = 0;
  for (size_t g = 0; g < st->ngroups; g++) {
    size_t end = st->count[g];
    if (end == first) continue;
    size_t nl = 0;
    tsdb_series_ref_t ref = 0;
    ikey_t key = {0, 0};
    const ilabel_t *l = labels(ctx, g, &nl, &ref, &key);
    int rc = ictx_series_keyed(c, l, nl, ref, key, err, sizeof err);
    if (rc == MD_ENOMEM) return rc;
    if (rc == 0) /* != 0 cannot happen: the parser checked the series when it made the group */
      for (size_t k = first; k < end; k++) {
        const istage_sample_t *s = &st->s[st->order[k]];
        if (tsdb_batch_sample(c->b, s->ts, s->v) == MD_ENOMEM) return MD_ENOMEM;
      }
    first = end;
  }
  return 0;
}

void istage_reset(istage_t *st) {
  if (st->ngroups) memset(st->count, 0, st->ngroups * sizeof *st->count);
  st->n = st->ngroups = 0;
}

void istage_free(istage_t *st) {
  free(st->s);
  free(st->count);
  free(st->order);
  memset(st, 0, sizeof *st);
}
