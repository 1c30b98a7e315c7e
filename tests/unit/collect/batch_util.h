/* Test helpers: look series up in a tsdb_batch_t by name and label pairs. */
#ifndef COLLECT_TEST_BATCH_UTIL_H
#define COLLECT_TEST_BATCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "tsdb/tsdb.h"

/* Value of the first series named `name` whose labels include every pair in the
 * NULL-terminated list ("cpu", "0", "mode", "user", NULL). Returns the number of matching
 * series; *v gets the first one's last sample. */
size_t bu_find(const tsdb_batch_t *b, double *v, const char *name, ...);
/* Label value of `label` on the first series named name, or NULL. */
const char *bu_label(const tsdb_batch_t *b, const char *name, const char *label);
/* True when two series of the batch have the same label set. */
bool bu_has_duplicates(const tsdb_batch_t *b);
/* Number of series whose name starts with prefix. */
size_t bu_count_prefix(const tsdb_batch_t *b, const char *prefix);

#endif
