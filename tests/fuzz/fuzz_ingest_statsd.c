/* libFuzzer target: the StatsD parser and the track registry behind it must never crash, leak or read out of
 * bounds on any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

static int count_event(void *ctx, const ingest_statsd_event_t *e) {
  (void)ctx;
  return e->nlen > 0 ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return 0;
  ingest_result_t res;
  (void)b;
  ingest_parse_statsd((const char *)data, size, count_event, NULL, &res);
  tsdb_batch_free(b);
  return 0;
}
