/* Private to src/tsdb: what the append path reads from a batch beyond tsdb_batch_get. */
#ifndef METRICSD_TSDB_BATCH_INT_H
#define METRICSD_TSDB_BATCH_INT_H

#include "core/core.h"
#include "index.h"
#include "tsdb.h"

/* The batch's layout, here so that the append path reads it without a call per field. */
typedef struct {
  size_t label_off, nlabels;
  size_t sample_off, nsamples;
  tsdb_series_ref_t ref; /* 0: the series is given by its labels */
} batch_series_t;

struct tsdb_batch {
  arena_t *arena;
  tsdb_label_t *labels;
  label_lens_t *lens; /* parallel to labels */
  size_t nlabels, cap_labels, cap_lens;
  tsdb_sample_t *samples;
  size_t nsamples, cap_samples;
  batch_series_t *series;
  size_t nseries, cap_series;
  size_t open_label_off; /* labels of the series being built */
  bool building;
  bool has_open; /* a series is open for samples */
};

/* Series i of b as the append path sees it (what tsdb_batch_get and tsdb_batch_get_ref
 * return, plus the label lengths). */
typedef struct {
  const tsdb_label_t *labels;
  const label_lens_t *lens;
  size_t nlabels;
  const tsdb_sample_t *samples;
  size_t nsamples;
  tsdb_series_ref_t ref;
} batch_view_t;

static inline batch_view_t batch_view(const tsdb_batch_t *b, size_t i) {
  const batch_series_t *s = &b->series[i];
  return (batch_view_t){b->labels + s->label_off, b->lens + s->label_off, s->nlabels,
                        b->samples + s->sample_off, s->nsamples, s->ref};
}

/* Byte lengths of series i's labels, parallel to its labels from tsdb_batch_get. */
const label_lens_t *batch_label_lens(const tsdb_batch_t *b, size_t i);

#endif
