/* libFuzzer target: the Prometheus text / OpenMetrics parser (first byte picks the mode) must never crash,
 * leak or read out of bounds on any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return 0;
  ingest_result_t res;
  ingest_opts_t o = {.default_ts = 1, .openmetrics = size > 0 && (data[0] & 1)};
  tsdb_label_t extra[] = {{"job", "fuzz"}};
  o.extra_labels = extra;
  o.n_extra_labels = size > 0 && (data[0] & 2) ? 1 : 0;
  ingest_parse_prometheus((const char *)data, size, &o, b, &res);
  (void)ingest_text_is_openmetrics((const char *)data, size);
  tsdb_batch_free(b);
  return 0;
}
