/* libFuzzer target: the InfluxDB line protocol parser must never crash, leak or read out of bounds on any
 * bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return 0;
  ingest_result_t res;
  ingest_opts_t o = {.default_ts = 1,
                     .influx_db = "db",
                     .precision = size ? (ingest_precision_t)(data[0] % 6) : INGEST_PREC_NS};
  ingest_parse_influx((const char *)data, size, &o, b, &res);
  tsdb_batch_free(b);
  return 0;
}
