/* A thread-safe scrape sink for tests: records every series it receives as
 * ",name=value,...," text with its samples, and answers queries over what it saw. */
#ifndef SCRAPE_TEST_RECORDER_H
#define SCRAPE_TEST_RECORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsdb/tsdb.h"

typedef struct recorder recorder_t;
recorder_t *recorder_new(void);
void recorder_free(recorder_t *r);
int recorder_sink(void *ctx, const tsdb_batch_t *b);
/* Among recorded series whose text contains every ",k=v," in the NULL-terminated list of
 * "k=v" strings: how many samples; *last gets the last one's value, *stale counts
 * staleness markers. */
size_t recorder_find(recorder_t *r, double *last, size_t *stale, ...);
/* Waits up to ms for recorder_find(...) to count at least n samples. */
bool recorder_wait(recorder_t *r, size_t n, int ms, const char *k1, const char *k2, const char *k3);
void recorder_clear(recorder_t *r);
/* Timestamp of the last matching sample (0 when none). */
int64_t recorder_last_ts(recorder_t *r, const char *k1, const char *k2);

#endif
