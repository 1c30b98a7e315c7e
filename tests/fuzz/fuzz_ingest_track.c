/* libFuzzer target: the JSON track API (single and batch) and the registry's exposition
 * must never crash or leak on any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ingest/ingest.h"

static int emit(void *ctx, const char *tenant, const tsdb_batch_t *b) {
  (void)ctx;
  (void)tenant;
  (void)b;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ingest_track_t *r;
  ingest_track_config_t cfg = {.max_series = 100, .summary_max_observations = 16};
  if (ingest_track_new(&cfg, &r, NULL, 0)) return 0;
  sb_t out = {0};
  bool batch = size > 0 && data[0] == '[';
  ingest_track_json(r, (const char *)data, size, batch, "default", true, 1000, &out, NULL, NULL);
  sb_reset(&out);
  ingest_track_expose(r, NULL, &out, INGEST_EXPOSE_PROMETHEUS);
  ingest_track_expose(r, NULL, &out, INGEST_EXPOSE_OPENMETRICS);
  ingest_track_expose(r, NULL, &out, INGEST_EXPOSE_JSON);
  ingest_track_collect(r, 2000, emit, NULL);
  sb_free(&out);
  ingest_track_free(r);
  return 0;
}
