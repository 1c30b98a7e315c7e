/*
 * GET /api/v1/export's body: every series of a query as JSON lines (jsonl.c writes each
 * line). Kept apart from the importer so parsers and their tests do not pull in the query
 * side of the storage engine.
 */
#include "ingest_int.h"

int ingest_export_jsonl(tsdb_query_t *q, sb_t *out) {
  int rc;
  while ((rc = tsdb_query_next(q)) > 0) {
    size_t nl;
    const tsdb_label_t *l = tsdb_query_labels(q, &nl);
    const int64_t *ts;
    const double *v;
    size_t ns = tsdb_query_samples(q, &ts, &v);
    size_t live = 0;
    for (size_t i = 0; i < ns; i++)
      live += !tsdb_is_stale_nan(v[i]);
    if (live == 0) continue;
    ingest_export_jsonl_series(l, nl, ts, v, ns, out);
    if (out->oom) return MD_ENOMEM;
  }
  return rc < 0 ? rc : 0;
}
