/* libFuzzer target: the remote_write decoder (snappy + protobuf, and protobuf alone) must never crash, leak
 * or read out of bounds on any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return 0;
  ingest_result_t res;
  ingest_opts_t o = {.default_ts = 1};
  ingest_parse_remote_write((const char *)data, size, &o, b, &res);
  tsdb_batch_reset(b);
  ingest_parse_remote_write_pb(data, size, &o, b, &res);
  tsdb_batch_free(b);
  return 0;
}
