/*
 * downsample — rollup blocks (block_downsample in block.h).
 *
 * Windows are aligned to multiples of resolution_ms: window k covers
 * [k*res, (k+1)*res - 1] and its aggregates are stamped (k+1)*res - 1, the window's last
 * millisecond, so every stamp lies inside its window and inside the block's (widened,
 * aligned) range. Per series and window, over the samples in it:
 *   min, max, sum, count, last   — Prometheus *_over_time semantics (a NaN that is not the
 *                                  staleness marker takes part like any value);
 *   increase                     — counter-aware: the sum of positive steps between
 *                                  consecutive values, where a drop counts as a reset from
 *                                  0 (adds the new value). The step into a window's first
 *                                  sample from the previous sample (in an earlier window of
 *                                  the same block) belongs to that window, so window
 *                                  increases add up to the increase over any span of them.
 * Staleness markers are not samples: they are skipped, and a window holding only markers
 * yields no row. NaN values never enter increase.
 *
 * From a rollup source (a finer tier) the windows combine: min of mins, max of maxes, sums
 * of sum/count/increase, last of lasts; the target resolution must be a multiple of the
 * source's.
 *
 * Threading: runs on the caller's thread; the source is only read.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "block_internal.h"
#include "core/core.h"

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

typedef struct {
  int64_t *ts;
  double *v[BLOCK_ROLLUP_PARTS];
  size_t n, cap;
} rows_t;

static int rows_push(rows_t *r, int64_t ts, const double *agg) {
  if (r->n == r->cap) {
    size_t nc = r->cap ? r->cap * 2 : 256;
    int64_t *nt = realloc(r->ts, nc * sizeof *nt);
    if (!nt) return MD_ENOMEM;
    r->ts = nt;
    for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) {
      double *nv = realloc(r->v[p], nc * sizeof *nv);
      if (!nv) return MD_ENOMEM;
      r->v[p] = nv;
    }
    r->cap = nc;
  }
  r->ts[r->n] = ts;
  for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) r->v[p][r->n] = agg[p];
  r->n++;
  return 0;
}

/* Aggregates raw samples into windows of res. */
static int rollup_raw(const int64_t *ts, const double *v, size_t n, int64_t res, rows_t *out) {
  bool have_prev = false;
  double prev = 0;
  size_t i = 0;
  while (i < n) {
    int64_t w = floordiv(ts[i], res);
    double agg[BLOCK_ROLLUP_PARTS] = {NAN, NAN, 0, 0, NAN, 0};
    for (; i < n && floordiv(ts[i], res) == w; i++) {
      double x = v[i];
      if (tsdb_is_stale_nan(x)) continue;
      if (agg[BLOCK_PART_COUNT] == 0) {
        agg[BLOCK_PART_MIN] = agg[BLOCK_PART_MAX] = x;
      } else {
        if (x < agg[BLOCK_PART_MIN] || isnan(agg[BLOCK_PART_MIN])) agg[BLOCK_PART_MIN] = x;
        if (x > agg[BLOCK_PART_MAX] || isnan(agg[BLOCK_PART_MAX])) agg[BLOCK_PART_MAX] = x;
      }
      agg[BLOCK_PART_SUM] += x;
      agg[BLOCK_PART_COUNT] += 1;
      agg[BLOCK_PART_LAST] = x;
      if (isnan(x)) continue;
      if (have_prev) agg[BLOCK_PART_INCREASE] += x >= prev ? x - prev : x;
      prev = x;
      have_prev = true;
    }
    if (agg[BLOCK_PART_COUNT] > 0) {
      int rc = rows_push(out, w * res + res - 1, agg);
      if (rc) return rc;
    }
  }
  return 0;
}

/* Combines finer rollup rows into windows of res. */
static int rollup_rollup(const int64_t *ts, double *const *v, size_t n, int64_t res, rows_t *out) {
  size_t i = 0;
  while (i < n) {
    int64_t w = floordiv(ts[i], res);
    double agg[BLOCK_ROLLUP_PARTS] = {NAN, NAN, 0, 0, NAN, 0};
    bool first = true;
    for (; i < n && floordiv(ts[i], res) == w; i++) {
      double mn = v[BLOCK_PART_MIN][i], mx = v[BLOCK_PART_MAX][i];
      if (first || mn < agg[BLOCK_PART_MIN] || isnan(agg[BLOCK_PART_MIN])) agg[BLOCK_PART_MIN] = mn;
      if (first || mx > agg[BLOCK_PART_MAX] || isnan(agg[BLOCK_PART_MAX])) agg[BLOCK_PART_MAX] = mx;
      agg[BLOCK_PART_SUM] += v[BLOCK_PART_SUM][i];
      agg[BLOCK_PART_COUNT] += v[BLOCK_PART_COUNT][i];
      agg[BLOCK_PART_LAST] = v[BLOCK_PART_LAST][i];
      agg[BLOCK_PART_INCREASE] += v[BLOCK_PART_INCREASE][i];
      first = false;
    }
    int rc = rows_push(out, w * res + res - 1, agg);
    if (rc) return rc;
  }
  return 0;
}

int block_downsample(block_t *src, int64_t resolution_ms, const char *parent_dir, char *name, size_t name_len,
                     char *err, size_t errlen) {
  int64_t sres = block_resolution(src);
  if (resolution_ms <= 0 || (sres > 0 && (resolution_ms <= sres || resolution_ms % sres != 0)))
    return md_error(err, errlen, MD_EINVAL,
                    "block_downsample: resolution %lld ms must be positive and a multiple above the source's %lld",
                    (long long)resolution_ms, (long long)sres);
  int64_t mint = floordiv(block_mint(src), resolution_ms) * resolution_ms;
  int64_t maxt = floordiv(block_maxt(src), resolution_ms) * resolution_ms + resolution_ms - 1;
  block_writer_t *w = NULL;
  tsdb_label_t *lab = malloc(BLOCK_MAX_LABELS * sizeof *lab);
  rows_t rows = {0};
  int64_t *ts = NULL;
  double *v[BLOCK_ROLLUP_PARTS] = {0};
  int rc;
  if (!lab) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = block_writer_new(parent_dir, mint, maxt, block_level(src), resolution_ms, block_seq(src), &w, err,
                             errlen)))
    goto out;
  for (size_t t = 0; t < block_tenant_count(src); t++) {
    for (size_t s = 0; s < block_tenant_series(src, t); s++) {
      int nl = block_series_labels(src, t, s, lab);
      int n = nl < 0 ? nl : block_series_read(src, t, s, &ts, v);
      if (n < 0) {
        rc = md_error(err, errlen, n, "block_downsample: %s: cannot read series", block_path(src));
        goto out;
      }
      rows.n = 0;
      rc = sres > 0 ? rollup_rollup(ts, v, (size_t)n, resolution_ms, &rows)
                    : rollup_raw(ts, v[0], (size_t)n, resolution_ms, &rows);
      free(ts);
      ts = NULL;
      for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) {
        free(v[p]);
        v[p] = NULL;
      }
      if (rc) {
        rc = md_error(err, errlen, rc, "out of memory");
        goto out;
      }
      const double *vp[BLOCK_ROLLUP_PARTS];
      for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) vp[p] = rows.v[p];
      if ((rc = block_writer_add(w, block_tenant_name(src, t), lab, (size_t)nl, rows.ts, vp, rows.n, err, errlen)))
        goto out;
    }
  }
  rc = block_writer_finish(w, name, name_len, err, errlen);
  w = NULL;
out:
  block_writer_abort(w);
  free(lab);
  free(rows.ts);
  for (int p = 0; p < BLOCK_ROLLUP_PARTS; p++) free(rows.v[p]);
  return rc;
}
