/* Private helpers shared by the collect module's files. */
#ifndef METRICSD_COLLECT_INTERNAL_H
#define METRICSD_COLLECT_INTERNAL_H

#include <stdatomic.h>

#include "collect/collect.h"
#include "core/core.h"

/* Adds one series {__name__=name, job, instance, extra...} with one sample to b. At most 13
 * extra labels. Returns 0, or MD_ENOMEM; a label set the batch rejects is skipped. */
int collect_emit(tsdb_batch_t *b, const char *job, const char *instance, const char *name,
                 const tsdb_label_t *extra, size_t nextra, int64_t ts, double v);

/* Replaces statvfs for the host collector's file systems (tests simulate a mount that hangs).
 * NULL restores statvfs. */
struct statvfs;
typedef int (*collect_statvfs_fn)(const char *path, struct statvfs *st);
void collect_host_set_statvfs(collect_host_t *h, collect_statvfs_fn fn);
/* A flag that, once true, cuts short a round's wait for hung statvfs calls (collect_stop):
 * the mounts still pending are reported as device errors. NULL: no such flag. */
void collect_host_set_cancel(collect_host_t *h, const atomic_bool *cancel);

#endif
