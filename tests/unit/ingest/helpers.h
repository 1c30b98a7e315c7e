/* Helpers shared by the ingest unit tests: render a batch as canonical text so tests
 * compare whole results ("name{a=\"b\"} 1 @1000" per sample, series in batch order). */
#ifndef INGEST_TEST_HELPERS_H
#define INGEST_TEST_HELPERS_H
#include "ingest/ingest.h"

/* Caller frees. Labels other than __name__ in batch (sorted) order. */
char *dump_batch(const tsdb_batch_t *b);

/* One row of a bad-input table: the input and a fragment the error message must contain. */
typedef struct {
  const char *input;
  size_t len;       /* 0 = strlen(input) */
  const char *want; /* substring of the first error message */
} bad_case_t;
#endif
