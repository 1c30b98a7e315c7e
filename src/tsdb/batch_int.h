/* Private to src/tsdb: what the append path reads from a batch beyond tsdb_batch_get. */
#ifndef METRICSD_TSDB_BATCH_INT_H
#define METRICSD_TSDB_BATCH_INT_H

#include "index.h"
#include "tsdb.h"

/* Byte lengths of series i's labels, parallel to its labels from tsdb_batch_get. */
const label_lens_t *batch_label_lens(const tsdb_batch_t *b, size_t i);

#endif
