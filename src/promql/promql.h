/*
 * promql — the PromQL engine: lexer, parser, AST, pretty-printer and evaluator for float
 * samples, over the storage engine's read path (tsdb_select). Semantics follow Prometheus 3.x
 * (left-open range and lookback windows, delayed __name__ removal, staleness markers).
 *
 *   parse:     promql_parse() → promql_expr_t (immutable; may be evaluated many times and
 *              from several threads at once, e.g. by the rule engine).
 *   evaluate:  promql_eval_instant / promql_eval_range (or the promql_query_* shorthands that
 *              parse too) for one tenant → promql_result_t (scalar, string, vector, matrix)
 *              plus warnings and infos.
 *   output:    promql_result_json() writes the Prometheus HTTP API `data` object;
 *              promql_format() pretty-prints an expression (/api/v1/format_query).
 *
 * Errors: functions return 0 or a negative MD_* code (core.h) and write a message into err.
 *   MD_EINVAL    bad query: syntax error ("1:5: parse error: ..."), type error, bad
 *                parameter. Prometheus API errorType "bad_data" (HTTP 400).
 *   MD_ERR       evaluation failed (e.g. "vector cannot contain metrics with the same
 *                labelset"). errorType "execution" (HTTP 422).
 *   MD_ELIMIT    a limit was hit (max samples / max series). errorType "execution" (422).
 *   MD_ECANCELED timeout or cancellation. errorType "timeout" or "canceled" (503);
 *                promql_error_is_timeout() tells which when the caller needs it.
 *   MD_ENOMEM, MD_EIO from the layers below. errorType "internal" (500).
 *
 * Threading: everything is reentrant. One evaluation runs on the calling thread, plus at most
 * one short-lived helper thread of its own while a range function streams many series (see
 * promql_options_t.serial). A promql_result_t belongs to one thread at a time.
 */
#ifndef METRICSD_PROMQL_H
#define METRICSD_PROMQL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

typedef struct promql_expr promql_expr_t;
typedef struct promql_result promql_result_t;

/* ---- parsing and printing --------------------------------------------------------------- */

/* Position of a parse error, 1-based line and column (byte-based), as Prometheus prints it. */
typedef struct promql_pos {
  int line, col;
  size_t offset; /* byte offset in the query */
} promql_pos_t;

/* Parses q (n bytes, need not be NUL-terminated). On error returns MD_EINVAL, err holds
 * Prometheus's wording ("1:7: parse error: unexpected <EOF>", "... bad number or duration
 * syntax ...") and *pos (may be NULL) the error position. The caller frees *out. */
int promql_parse(const char *q, size_t n, promql_expr_t **out, promql_pos_t *pos, char *err,
                 size_t errlen);
void promql_expr_free(promql_expr_t *e);

/* The expression's result type: "scalar", "string", "vector" or "matrix". */
const char *promql_expr_type_name(const promql_expr_t *e);

/* Appends the canonical one-line form of e (Prometheus's String()) to out. */
void promql_expr_string(const promql_expr_t *e, sb_t *out);
/* Appends a multi-line, indented form (Prometheus's Pretty(), /api/v1/format_query). */
void promql_format(const promql_expr_t *e, sb_t *out);

/* ---- evaluation ------------------------------------------------------------------------- */

typedef struct promql_options {
  int64_t lookback_ms;         /* instant-selector lookback (default 5 min) */
  int64_t subquery_step_ms;    /* step of subqueries written without one, `[5m:]` (default 1 min) */
  int64_t timeout_ms;          /* wall-clock limit of one evaluation; 0 = none (default 2 min) */
  size_t max_samples;          /* samples held in memory at once; 0 = unlimited (default 50 M) */
  size_t max_series;           /* series selected by one query; 0 = unlimited (default 0) */
  const atomic_int *cancel;    /* when non-NULL and set non-zero, evaluation stops (MD_ECANCELED) */
  bool use_downsampled;        /* let tsdb pick a rollup tier by step (default false) */
  bool serial;                 /* no helper thread (default false: a range function over many
                                * series computes on one helper thread while the calling
                                * thread reads the storage; results are the same either way) */
} promql_options_t;

void promql_options_default(promql_options_t *opt);

/* Evaluates e at time t_ms (Unix ms) for tenant over db. opt may be NULL (defaults). On
 * success *out is a result the caller frees with promql_result_free. */
int promql_eval_instant(tsdb_t *db, const char *tenant, const promql_expr_t *e, int64_t t_ms,
                        const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen);
/* Evaluates e at start, start+step, ... <= end (no alignment of start; step > 0). The result
 * is a matrix (a scalar or vector expression gives one series per output), sorted by labels.
 * A string expression is MD_EINVAL, as in Prometheus. */
int promql_eval_range(tsdb_t *db, const char *tenant, const promql_expr_t *e, int64_t start_ms,
                      int64_t end_ms, int64_t step_ms, const promql_options_t *opt,
                      promql_result_t **out, char *err, size_t errlen);

/* Shorthands that parse q (n bytes) first; parse errors come back as MD_EINVAL. */
int promql_query_instant(tsdb_t *db, const char *tenant, const char *q, size_t n, int64_t t_ms,
                         const promql_options_t *opt, promql_result_t **out, char *err, size_t errlen);
int promql_query_range(tsdb_t *db, const char *tenant, const char *q, size_t n, int64_t start_ms,
                       int64_t end_ms, int64_t step_ms, const promql_options_t *opt,
                       promql_result_t **out, char *err, size_t errlen);

/* After an MD_ECANCELED: true when the cause was the timeout (errorType "timeout"), false
 * for an explicit cancellation (errorType "canceled"). Reads the err message written. */
bool promql_error_is_timeout(const char *err);

/* ---- results ---------------------------------------------------------------------------- */

typedef enum {
  PROMQL_VALUE_SCALAR = 0,
  PROMQL_VALUE_STRING,
  PROMQL_VALUE_VECTOR,
  PROMQL_VALUE_MATRIX,
} promql_value_type_t;

promql_value_type_t promql_result_type(const promql_result_t *r);
/* "scalar", "string", "vector", "matrix" — the API's resultType. */
const char *promql_result_type_name(const promql_result_t *r);

/* Scalar and string results: the value and the evaluation time. */
double promql_result_scalar(const promql_result_t *r, int64_t *ts_ms);
const char *promql_result_string(const promql_result_t *r, int64_t *ts_ms);

/* Vector and matrix results: number of series, the labels of series i (sorted by name; valid
 * until promql_result_free) and its points. A vector series has exactly one point (at the
 * evaluation time); matrix points are ascending by time. */
size_t promql_result_series_count(const promql_result_t *r);
const tsdb_label_t *promql_result_labels(const promql_result_t *r, size_t i, size_t *nlabels);
size_t promql_result_points(const promql_result_t *r, size_t i, const int64_t **ts, const double **v);

/* Annotations, Prometheus wording ("PromQL warning: ...", "PromQL info: ..."). */
size_t promql_result_warnings(const promql_result_t *r, const char *const **msgs);
size_t promql_result_infos(const promql_result_t *r, const char *const **msgs);

/* Samples read from storage by the evaluation (for stats and self-metrics). */
uint64_t promql_result_samples_read(const promql_result_t *r);

/* Appends the API `data` object: {"resultType":"vector","result":[{"metric":{...},
 * "value":[1700000000.123,"42"]},...]}; matrix series carry "values". Values are strings as
 * Prometheus writes them ("NaN", "+Inf"), timestamps float seconds. Warnings and infos are
 * not part of `data`; the handler writes them from promql_result_warnings/infos. */
void promql_result_json(const promql_result_t *r, sb_t *out);

void promql_result_free(promql_result_t *r);

#endif
