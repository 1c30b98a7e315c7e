/* tsdb_batch_t: the unit of the write path. Series are label sets (copied into the batch's
 * arena, sorted by name); each series' samples are contiguous in one array, so a batch is
 * a few flat arrays and an arena, reusable with tsdb_batch_reset. The byte length of every
 * name and value is kept beside the label (batch_int.h), so the append path hashes label
 * sets without a strlen per string. */
#include "tsdb.h"
#include "batch_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

bool tsdb_is_stale_nan(double v) {
  uint64_t b;
  memcpy(&b, &v, 8);
  return b == TSDB_STALE_NAN_BITS;
}

double tsdb_stale_nan(void) {
  uint64_t b = TSDB_STALE_NAN_BITS;
  double v;
  memcpy(&v, &b, 8);
  return v;
}

#define GROW(arr, n, cap)                                                   \
  do {                                                                      \
    if ((n) == (cap)) {                                                     \
      size_t nc = (cap) ? (cap) * 2 : 64;                                   \
      void *np = realloc((arr), nc * sizeof *(arr));                        \
      if (!np) return MD_ENOMEM;                                            \
      (arr) = np;                                                           \
      (cap) = nc;                                                           \
    }                                                                       \
  } while (0)

tsdb_batch_t *tsdb_batch_new(void) {
  tsdb_batch_t *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->arena = arena_new(0);
  if (!b->arena) {
    free(b);
    return NULL;
  }
  return b;
}

void tsdb_batch_free(tsdb_batch_t *b) {
  if (!b) return;
  arena_free(b->arena);
  free(b->labels);
  free(b->lens);
  free(b->samples);
  free(b->series);
  free(b);
}

void tsdb_batch_reset(tsdb_batch_t *b) {
  arena_reset(b->arena);
  b->nlabels = b->nsamples = b->nseries = 0;
  b->building = b->has_open = false;
}

void tsdb_batch_series_begin(tsdb_batch_t *b) {
  b->open_label_off = b->nlabels;
  b->building = true;
  b->has_open = false;
}

int tsdb_batch_label(tsdb_batch_t *b, const char *name, size_t nlen, const char *value, size_t vlen) {
  if (!b->building) return MD_EINVAL;
  if (nlen == 0) return MD_EINVAL;
  if (vlen == 0) return 0; /* an empty value is the same as no label */
  if (nlen > UINT32_MAX || vlen > UINT32_MAX) return MD_EINVAL;
  GROW(b->labels, b->nlabels, b->cap_labels);
  GROW(b->lens, b->nlabels, b->cap_lens);
  /* Name and value in one arena block, each NUL-terminated: one allocation per label. */
  char *n = arena_alloc(b->arena, nlen + vlen + 2);
  if (!n) return MD_ENOMEM;
  char *v = n + nlen + 1;
  memcpy(n, name, nlen);
  n[nlen] = 0;
  memcpy(v, value, vlen);
  v[vlen] = 0;
  b->lens[b->nlabels] = (label_lens_t){(uint32_t)nlen, (uint32_t)vlen};
  b->labels[b->nlabels++] = (tsdb_label_t){n, v};
  return 0;
}

/* strcmp's order for the names of a label set, from their lengths: no call, and the common
 * case (names differ in the first byte) is one comparison. */
static int label_name_cmp(const char *a, uint32_t al, const char *b, uint32_t bl) {
  uint32_t m = al < bl ? al : bl;
  for (uint32_t i = 0; i < m; i++)
    if (a[i] != b[i]) return (unsigned char)a[i] < (unsigned char)b[i] ? -1 : 1;
  return al < bl ? -1 : al > bl;
}

int tsdb_batch_series_end(tsdb_batch_t *b) {
  if (!b->building) return MD_EINVAL;
  b->building = false;
  tsdb_label_t *ls = b->labels + b->open_label_off;
  label_lens_t *lens = b->lens + b->open_label_off;
  size_t n = b->nlabels - b->open_label_off;
  /* Insertion sort: label sets are small and usually nearly sorted already. The sorted
   * prefix holds no duplicate, so a name equal to x can only be the first one not greater
   * than x: duplicates are found by the sort itself. */
  for (size_t i = 1; i < n; i++) {
    tsdb_label_t x = ls[i];
    label_lens_t xl = lens[i];
    size_t j = i;
    int c;
    while (j > 0 && (c = label_name_cmp(ls[j - 1].name, lens[j - 1].name, x.name, xl.name)) >= 0) {
      if (c == 0) {
        b->nlabels = b->open_label_off;
        return MD_EINVAL;
      }
      ls[j] = ls[j - 1];
      lens[j] = lens[j - 1];
      j--;
    }
    ls[j] = x;
    lens[j] = xl;
  }
  GROW(b->series, b->nseries, b->cap_series);
  b->series[b->nseries++] = (batch_series_t){b->open_label_off, n, b->nsamples, 0, 0};
  b->has_open = true;
  return 0;
}

int tsdb_batch_series_ref(tsdb_batch_t *b, tsdb_series_ref_t ref) {
  b->building = false;
  b->has_open = false;
  if (ref == 0) return MD_EINVAL;
  GROW(b->series, b->nseries, b->cap_series);
  b->series[b->nseries++] = (batch_series_t){b->nlabels, 0, b->nsamples, 0, ref};
  b->has_open = true;
  return 0;
}

tsdb_series_ref_t tsdb_batch_get_ref(const tsdb_batch_t *b, size_t i) { return b->series[i].ref; }

int tsdb_batch_series(tsdb_batch_t *b, const tsdb_label_t *labels, size_t n) {
  tsdb_batch_series_begin(b);
  for (size_t i = 0; i < n; i++) {
    int rc = tsdb_batch_label(b, labels[i].name, strlen(labels[i].name), labels[i].value, strlen(labels[i].value));
    if (rc) {
      b->nlabels = b->open_label_off;
      b->building = false;
      return rc;
    }
  }
  return tsdb_batch_series_end(b);
}

int tsdb_batch_sample(tsdb_batch_t *b, int64_t ts, double v) {
  if (!b->has_open) return MD_EINVAL;
  GROW(b->samples, b->nsamples, b->cap_samples);
  b->samples[b->nsamples++] = (tsdb_sample_t){ts, v};
  b->series[b->nseries - 1].nsamples++;
  return 0;
}

size_t tsdb_batch_series_count(const tsdb_batch_t *b) { return b->nseries; }
size_t tsdb_batch_sample_count(const tsdb_batch_t *b) { return b->nsamples; }

const label_lens_t *batch_label_lens(const tsdb_batch_t *b, size_t i) { return b->lens + b->series[i].label_off; }

void tsdb_batch_get(const tsdb_batch_t *b, size_t i, const tsdb_label_t **labels, size_t *nlabels,
                    const tsdb_sample_t **samples, size_t *nsamples) {
  const batch_series_t *s = &b->series[i];
  if (labels) *labels = b->labels + s->label_off;
  if (nlabels) *nlabels = s->nlabels;
  if (samples) *samples = b->samples + s->sample_off;
  if (nsamples) *nsamples = s->nsamples;
}
