/*
 * pql.h — private to src/promql: the AST, the function table and the helpers shared by the
 * parser, the printer and the evaluator.
 *
 * An expression owns one arena; every node, string and array of the tree lives in it, so a
 * tree is freed in one call and is immutable after parsing (safe to evaluate from several
 * threads at once).
 */
#ifndef METRICSD_PROMQL_PQL_H
#define METRICSD_PROMQL_PQL_H

#include "promql/promql.h"

typedef enum { PT_NONE = 0, PT_SCALAR, PT_STRING, PT_VECTOR, PT_MATRIX } pql_type_t;

typedef enum {
  N_NUM, N_STR, N_PAREN, N_UNARY, N_BIN, N_AGG, N_CALL, N_SEL, N_SUBQ,
} pql_kind_t;

/* Operators (binary, unary) and aggregators. */
typedef enum {
  OP_NONE = 0,
  OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_POW, OP_ATAN2,
  OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
  OP_AND, OP_OR, OP_UNLESS,
} pql_op_t;

typedef enum {
  AGG_SUM, AGG_AVG, AGG_COUNT, AGG_MIN, AGG_MAX, AGG_GROUP, AGG_STDDEV, AGG_STDVAR,
  AGG_TOPK, AGG_BOTTOMK, AGG_QUANTILE, AGG_COUNT_VALUES, AGG_LIMITK, AGG_LIMIT_RATIO,
  AGG__COUNT
} pql_agg_t;

typedef enum { CARD_ONE_TO_ONE, CARD_MANY_TO_ONE, CARD_ONE_TO_MANY, CARD_MANY_TO_MANY } pql_card_t;
typedef enum { AT_NONE = 0, AT_TS, AT_START, AT_END } pql_at_t;
/* Prometheus 3.x's experimental extended selectors: `anchored` closes a window on the last
 * sample at or before its start; `smoothed` interpolates values at both window edges. */
enum { EXT_NONE = 0, EXT_ANCHORED, EXT_SMOOTHED };

typedef struct pql_func {
  const char *name;
  pql_type_t args[6];
  int nargs;          /* declared argument types */
  int variadic;       /* 0 fixed; >0 up to that many optional trailing args; -1 unlimited */
  pql_type_t ret;
  int id;
} pql_func_t;

typedef struct pql_node pql_node_t;
struct pql_node {
  pql_kind_t kind;
  pql_type_t type;
  size_t pos;
  double num;              /* N_NUM */
  const char *str;         /* N_STR (NUL-terminated; slen bytes) */
  size_t slen;
  int op;                  /* N_UNARY/N_BIN: pql_op_t; N_AGG: pql_agg_t */
  pql_node_t *a, *b;       /* operands; N_AGG: a = expr, b = param; N_PAREN/N_SUBQ: a */
  /* N_BIN */
  bool return_bool, has_matching, on;
  pql_card_t card;
  const char **mlabels; size_t nmlabels;
  const char **include; size_t ninclude;
  /* fill()/fill_left()/fill_right() (Prometheus 3.x, experimental): a missing operand of a
   * vector-vector operation takes this value instead of dropping the match. */
  bool fill_left, fill_right;
  double fill_left_value, fill_right_value;
  /* N_AGG */
  bool without, has_grouping;
  const char **grouping; size_t ngrouping;
  /* N_CALL */
  const pql_func_t *func;
  pql_node_t **args; size_t nargs;
  /* N_SEL */
  const char *name;        /* metric name when written before braces, else NULL */
  tsdb_matcher_t *matchers; size_t nmatchers;
  int64_t range_ms;        /* N_SEL with range (matrix selector) or N_SUBQ */
  bool is_matrix;
  int64_t step_ms;         /* N_SUBQ; 0 = default */
  int64_t offset_ms;
  bool has_offset;
  pql_at_t at;
  int64_t at_ms;
  int ext;                 /* N_SEL: EXT_ANCHORED / EXT_SMOOTHED range modifier, 0 = none */
  /* Duration expressions that read the query's step() or range(): resolved per query by
   * pql_duration_eval; NULL when the duration is the constant in range_ms/step_ms/offset_ms. */
  pql_node_t *range_expr, *step_expr, *offset_expr;
};

struct promql_expr {
  arena_t *arena;
  pql_node_t *root;
};

const pql_func_t *pql_func_lookup(const char *name, size_t n);
const char *pql_op_name(int op);
const char *pql_agg_name(int agg);
const char *pql_type_name(pql_type_t t);

/* Functions (ids). */
enum {
  F_ABS, F_ABSENT, F_ABSENT_OVER_TIME, F_ACOS, F_ACOSH, F_ASIN, F_ASINH, F_ATAN, F_ATANH,
  F_AVG_OVER_TIME, F_CEIL, F_CHANGES, F_CLAMP, F_CLAMP_MAX, F_CLAMP_MIN, F_COS, F_COSH,
  F_COUNT_OVER_TIME, F_DAYS_IN_MONTH, F_DAY_OF_MONTH, F_DAY_OF_WEEK, F_DAY_OF_YEAR, F_DEG,
  F_DELTA, F_DERIV, F_EXP, F_FLOOR, F_HISTOGRAM_QUANTILE, F_HISTOGRAM_FRACTION, F_HOLT_WINTERS,
  F_HOUR, F_IDELTA, F_INCREASE, F_IRATE, F_LABEL_REPLACE, F_LABEL_JOIN, F_LAST_OVER_TIME,
  F_FIRST_OVER_TIME, F_LN, F_LOG10, F_LOG2, F_MAX_OVER_TIME, F_MIN_OVER_TIME, F_MINUTE, F_MONTH,
  F_PI, F_PREDICT_LINEAR, F_PRESENT_OVER_TIME, F_QUANTILE_OVER_TIME, F_RAD, F_RATE, F_RESETS,
  F_ROUND, F_SCALAR, F_SGN, F_SIN, F_SINH, F_SORT, F_SORT_DESC, F_SORT_BY_LABEL,
  F_SORT_BY_LABEL_DESC, F_SQRT, F_STDDEV_OVER_TIME, F_STDVAR_OVER_TIME, F_SUM_OVER_TIME, F_TAN,
  F_TANH, F_TIME, F_TIMESTAMP, F_VECTOR, F_YEAR, F_MAD_OVER_TIME, F_TS_OF_MAX_OVER_TIME,
  F_TS_OF_MIN_OVER_TIME, F_TS_OF_LAST_OVER_TIME, F_TS_OF_FIRST_OVER_TIME, F_HISTOGRAM_COUNT,
  F_HISTOGRAM_SUM, F_HISTOGRAM_AVG, F_HISTOGRAM_STDDEV, F_HISTOGRAM_STDVAR, F_STEP, F_RANGE, F_START, F_END, F_MIN_OF, F_MAX_OF, F_HISTOGRAM_QUANTILES,
  /* analytics extensions */
  F_GINI_OVER_LABELS, F_INFO, F__COUNT
};

/* Evaluates a duration expression (numbers are seconds) for a query with the given step and
 * range (end - start; both 0 for an instant query). False when the result is not a finite
 * number of milliseconds. */
bool pql_duration_eval(const pql_node_t *n, int64_t step_ms, int64_t range_ms, int64_t *out_ms);

/* Printing (print.c). */
void pql_print_node(const pql_node_t *n, sb_t *out);
void pql_print_duration(int64_t ms, sb_t *out);
void pql_print_string_literal(const char *s, size_t n, sb_t *out);

#endif
