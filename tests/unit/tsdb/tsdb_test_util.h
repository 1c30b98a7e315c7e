/* Helpers shared by the tsdb engine tests (header-only: each test includes it). */
#ifndef TSDB_TEST_UTIL_H
#define TSDB_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

static inline char *tu_tmpdir(void) {
  char tmpl[] = "/tmp/tsdb-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  assert_non_null(d);
  return strdup(d);
}

static inline tsdb_t *tu_open(const char *dir, tsdb_options_t *o) {
  tsdb_options_t def;
  if (!o) {
    tsdb_options_default(&def);
    def.background = false;
    o = &def;
  }
  tsdb_t *db = NULL;
  char err[256] = "";
  int rc = tsdb_open(dir, o, &db, err, sizeof err);
  if (rc) fprintf(stderr, "tsdb_open: %s\n", err);
  assert_int_equal(rc, 0);
  return db;
}

/* Appends one sample to the series {__name__=name, k=v}. */
static inline int tu_append1(tsdb_t *db, const char *tenant, const char *name, const char *k, const char *v,
                             int64_t ts, double val, tsdb_append_result_t *res) {
  tsdb_batch_t *b = tsdb_batch_new();
  tsdb_label_t ls[2] = {{"__name__", name}, {k, v}};
  assert_int_equal(tsdb_batch_series(b, ls, k ? 2 : 1), 0);
  assert_int_equal(tsdb_batch_sample(b, ts, val), 0);
  int rc = tsdb_append(db, tenant, b, res);
  tsdb_batch_free(b);
  return rc;
}

/* Renders every series + samples of a select into one string (for equivalence checks). */
static inline char *tu_dump(tsdb_t *db, const char *tenant, const tsdb_matcher_t *m, size_t nm, int64_t mint,
                            int64_t maxt, size_t *nseries, size_t *nsamples) {
  tsdb_query_t *q;
  char err[256];
  int rc = tsdb_select(db, tenant, m, nm, mint, maxt, NULL, &q, err, sizeof err);
  if (rc) fprintf(stderr, "select: %s\n", err);
  assert_int_equal(rc, 0);
  sb_t sb = {0};
  size_t ns = 0, nsm = 0;
  while ((rc = tsdb_query_next(q)) == 1) {
    size_t n;
    const tsdb_label_t *ls = tsdb_query_labels(q, &n);
    sb_putc(&sb, '{');
    for (size_t i = 0; i < n; i++) sb_printf(&sb, "%s=%s,", ls[i].name, ls[i].value);
    sb_puts(&sb, "}:");
    const int64_t *ts;
    const double *v;
    size_t k = tsdb_query_samples(q, &ts, &v);
    for (size_t i = 0; i < k; i++) {
      uint64_t bits;
      memcpy(&bits, &v[i], 8);
      sb_printf(&sb, " %lld/%016llx", (long long)ts[i], (unsigned long long)bits);
      if (i) assert_true(ts[i] > ts[i - 1]);
    }
    sb_putc(&sb, '\n');
    ns++;
    nsm += k;
  }
  assert_int_equal(rc, 0);
  tsdb_query_free(q);
  if (nseries) *nseries = ns;
  if (nsamples) *nsamples = nsm;
  return sb_steal(&sb);
}

#endif
