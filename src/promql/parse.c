/*
 * parse.c — PromQL lexer and recursive-descent parser with type checking.
 *
 * The lexer works on demand (one token of lookahead plus a saved position for the few places
 * that need two). Binary operators are parsed by precedence climbing with Prometheus's table:
 * `or` < `and unless` < comparisons < `+ -` < `* / % atan2` < `^` (right-associative); unary
 * minus binds like `*`, so `-a^b` is `-(a^b)`. Offsets, `@`, ranges and subqueries are postfix
 * and bind tightest. Errors carry Prometheus's wording, prefixed "line:col: parse error: ".
 *
 * Prometheus 3.x experimental syntax is accepted as well: duration expressions in ranges,
 * subquery steps and offsets, fill()/fill_left()/fill_right() after a binary operator's
 * matching clauses, info(), and the anchored/smoothed selector modifiers.
 *
 * All memory comes from the expression's arena; on error the arena is freed whole.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "promql/pql.h"

/* ---- function table ------------------------------------------------------------------- */

#define V PT_VECTOR
#define M PT_MATRIX
#define S PT_SCALAR
#define STR PT_STRING
static const pql_func_t funcs[] = {
    {"abs", {V}, 1, 0, V, F_ABS},
    {"absent", {V}, 1, 0, V, F_ABSENT},
    {"absent_over_time", {M}, 1, 0, V, F_ABSENT_OVER_TIME},
    {"acos", {V}, 1, 0, V, F_ACOS},
    {"acosh", {V}, 1, 0, V, F_ACOSH},
    {"asin", {V}, 1, 0, V, F_ASIN},
    {"asinh", {V}, 1, 0, V, F_ASINH},
    {"atan", {V}, 1, 0, V, F_ATAN},
    {"atanh", {V}, 1, 0, V, F_ATANH},
    {"avg_over_time", {M}, 1, 0, V, F_AVG_OVER_TIME},
    {"ceil", {V}, 1, 0, V, F_CEIL},
    {"changes", {M}, 1, 0, V, F_CHANGES},
    {"clamp", {V, S, S}, 3, 0, V, F_CLAMP},
    {"clamp_max", {V, S}, 2, 0, V, F_CLAMP_MAX},
    {"clamp_min", {V, S}, 2, 0, V, F_CLAMP_MIN},
    {"cos", {V}, 1, 0, V, F_COS},
    {"cosh", {V}, 1, 0, V, F_COSH},
    {"count_over_time", {M}, 1, 0, V, F_COUNT_OVER_TIME},
    {"days_in_month", {V}, 1, 1, V, F_DAYS_IN_MONTH},
    {"day_of_month", {V}, 1, 1, V, F_DAY_OF_MONTH},
    {"day_of_week", {V}, 1, 1, V, F_DAY_OF_WEEK},
    {"day_of_year", {V}, 1, 1, V, F_DAY_OF_YEAR},
    {"deg", {V}, 1, 0, V, F_DEG},
    {"delta", {M}, 1, 0, V, F_DELTA},
    {"deriv", {M}, 1, 0, V, F_DERIV},
    {"exp", {V}, 1, 0, V, F_EXP},
    {"floor", {V}, 1, 0, V, F_FLOOR},
    {"histogram_quantile", {S, V}, 2, 0, V, F_HISTOGRAM_QUANTILE},
    {"histogram_fraction", {S, S, V}, 3, 0, V, F_HISTOGRAM_FRACTION},
    {"histogram_count", {V}, 1, 0, V, F_HISTOGRAM_COUNT},
    {"histogram_sum", {V}, 1, 0, V, F_HISTOGRAM_SUM},
    {"histogram_avg", {V}, 1, 0, V, F_HISTOGRAM_AVG},
    {"histogram_stddev", {V}, 1, 0, V, F_HISTOGRAM_STDDEV},
    {"histogram_stdvar", {V}, 1, 0, V, F_HISTOGRAM_STDVAR},
    {"holt_winters", {M, S, S}, 3, 0, V, F_HOLT_WINTERS},
    {"double_exponential_smoothing", {M, S, S}, 3, 0, V, F_HOLT_WINTERS},
    {"hour", {V}, 1, 1, V, F_HOUR},
    {"idelta", {M}, 1, 0, V, F_IDELTA},
    {"increase", {M}, 1, 0, V, F_INCREASE},
    {"irate", {M}, 1, 0, V, F_IRATE},
    {"label_replace", {V, STR, STR, STR, STR}, 5, 0, V, F_LABEL_REPLACE},
    {"label_join", {V, STR, STR, STR}, 4, -1, V, F_LABEL_JOIN},
    {"last_over_time", {M}, 1, 0, V, F_LAST_OVER_TIME},
    {"first_over_time", {M}, 1, 0, V, F_FIRST_OVER_TIME},
    {"ln", {V}, 1, 0, V, F_LN},
    {"log10", {V}, 1, 0, V, F_LOG10},
    {"log2", {V}, 1, 0, V, F_LOG2},
    {"mad_over_time", {M}, 1, 0, V, F_MAD_OVER_TIME},
    {"max_over_time", {M}, 1, 0, V, F_MAX_OVER_TIME},
    {"min_over_time", {M}, 1, 0, V, F_MIN_OVER_TIME},
    {"minute", {V}, 1, 1, V, F_MINUTE},
    {"month", {V}, 1, 1, V, F_MONTH},
    {"pi", {S}, 0, 0, S, F_PI},
    {"predict_linear", {M, S}, 2, 0, V, F_PREDICT_LINEAR},
    {"present_over_time", {M}, 1, 0, V, F_PRESENT_OVER_TIME},
    {"quantile_over_time", {S, M}, 2, 0, V, F_QUANTILE_OVER_TIME},
    {"rad", {V}, 1, 0, V, F_RAD},
    {"rate", {M}, 1, 0, V, F_RATE},
    {"resets", {M}, 1, 0, V, F_RESETS},
    {"round", {V, S}, 2, 1, V, F_ROUND},
    {"scalar", {V}, 1, 0, S, F_SCALAR},
    {"sgn", {V}, 1, 0, V, F_SGN},
    {"sin", {V}, 1, 0, V, F_SIN},
    {"sinh", {V}, 1, 0, V, F_SINH},
    {"sort", {V}, 1, 0, V, F_SORT},
    {"sort_desc", {V}, 1, 0, V, F_SORT_DESC},
    {"sort_by_label", {V, STR}, 2, -1, V, F_SORT_BY_LABEL},
    {"sort_by_label_desc", {V, STR}, 2, -1, V, F_SORT_BY_LABEL_DESC},
    {"sqrt", {V}, 1, 0, V, F_SQRT},
    {"info", {V, V}, 2, 1, V, F_INFO},
    {"step", {S}, 0, 0, S, F_STEP},
    {"start", {S}, 0, 0, S, F_START},
    {"end", {S}, 0, 0, S, F_END},
    {"min_of", {S, S}, 2, 0, S, F_MIN_OF},
    {"max_of", {S, S}, 2, 0, S, F_MAX_OF},
    {"histogram_quantiles", {V, STR, S}, 3, -1, V, F_HISTOGRAM_QUANTILES},
    {"range", {S}, 0, 0, S, F_RANGE},
    {"stddev_over_time", {M}, 1, 0, V, F_STDDEV_OVER_TIME},
    {"stdvar_over_time", {M}, 1, 0, V, F_STDVAR_OVER_TIME},
    {"sum_over_time", {M}, 1, 0, V, F_SUM_OVER_TIME},
    {"tan", {V}, 1, 0, V, F_TAN},
    {"tanh", {V}, 1, 0, V, F_TANH},
    {"time", {S}, 0, 0, S, F_TIME},
    {"timestamp", {V}, 1, 0, V, F_TIMESTAMP},
    {"ts_of_max_over_time", {M}, 1, 0, V, F_TS_OF_MAX_OVER_TIME},
    {"ts_of_min_over_time", {M}, 1, 0, V, F_TS_OF_MIN_OVER_TIME},
    {"ts_of_last_over_time", {M}, 1, 0, V, F_TS_OF_LAST_OVER_TIME},
    {"ts_of_first_over_time", {M}, 1, 0, V, F_TS_OF_FIRST_OVER_TIME},
    {"vector", {S}, 1, 0, V, F_VECTOR},
    {"year", {V}, 1, 1, V, F_YEAR},
};
#undef V
#undef M
#undef S
#undef STR

const pql_func_t *pql_func_lookup(const char *name, size_t n) {
  for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
    if (strlen(funcs[i].name) == n && memcmp(funcs[i].name, name, n) == 0) return &funcs[i];
  return NULL;
}

static const char *const agg_names[AGG__COUNT] = {
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "limitk", "limit_ratio"};
const char *pql_agg_name(int agg) { return agg >= 0 && agg < AGG__COUNT ? agg_names[agg] : "?"; }

const char *pql_op_name(int op) {
  switch (op) {
  case OP_ADD: return "+";
  case OP_SUB: return "-";
  case OP_MUL: return "*";
  case OP_DIV: return "/";
  case OP_MOD: return "%";
  case OP_POW: return "^";
  case OP_ATAN2: return "atan2";
  case OP_EQ: return "==";
  case OP_NE: return "!=";
  case OP_LT: return "<";
  case OP_LE: return "<=";
  case OP_GT: return ">";
  case OP_GE: return ">=";
  case OP_AND: return "and";
  case OP_OR: return "or";
  case OP_UNLESS: return "unless";
  default: return "?";
  }
}

const char *pql_type_name(pql_type_t t) {
  switch (t) {
  case PT_SCALAR: return "scalar";
  case PT_STRING: return "string";
  case PT_VECTOR: return "instant vector";
  case PT_MATRIX: return "range vector";
  default: return "invalid";
  }
}

/* ---- lexer ---------------------------------------------------------------------------- */

typedef enum {
  TK_EOF, TK_ERR, TK_IDENT, TK_NUM, TK_DUR, TK_STR,
  TK_LP, TK_RP, TK_LB, TK_RB, TK_LBR, TK_RBR, TK_COMMA, TK_COLON, TK_AT,
  TK_ASSIGN, TK_NEQ_M, TK_RE, TK_NRE, /* = != =~ !~ in matchers (NEQ_M shares "!=") */
  TK_OP, /* binary operator symbol; tok.op */
} tok_kind_t;

typedef struct tok {
  tok_kind_t kind;
  size_t pos, len;
  int op;
  double num;
  int64_t dur_ms;
} tok_t;

typedef struct parser {
  const char *q;
  size_t n, p;
  tok_t tok;       /* current lookahead */
  arena_t *a;
  char *err;
  size_t errlen;
  promql_pos_t *epos;
  bool failed;
  int depth;
  int nbin; /* binary operators so far: chains build trees that evaluation walks recursively */
  int in_duration; /* > 0 while parsing a duration expression: step() etc. in any case */
  bool info_selector; /* the next selector is info()'s: it may match the empty label set */
  int open[3];        /* ( { [ opened and not yet closed, for Prometheus's end-of-input messages */
} parser_t;

static void perr_at(parser_t *ps, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void perr_at(parser_t *ps, size_t pos, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = true;
  int line = 1, col = 1;
  for (size_t i = 0; i < pos && i < ps->n; i++) {
    if (ps->q[i] == '\n') line++, col = 1;
    else col++;
  }
  if (ps->epos) ps->epos->line = line, ps->epos->col = col, ps->epos->offset = pos;
  char msg[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (ps->err && ps->errlen) snprintf(ps->err, ps->errlen, "%d:%d: parse error: %s", line, col, msg);
}

static bool is_ident_start(int c) { return isalpha(c) || c == '_'; }
static bool is_ident_char(int c) { return isalnum(c) || c == '_' || c == ':'; }

/* Parses Prometheus duration syntax at q[0..n): groups of <int><unit> in decreasing order.
 * Returns bytes consumed (0 = not a duration). */
static size_t scan_duration(const char *q, size_t n, int64_t *ms) {
  static const struct { const char *u; int64_t ms; } units[] = {
      {"y", 365LL * 86400000}, {"w", 7LL * 86400000}, {"d", 86400000}, {"h", 3600000},
      {"m", 60000},            {"s", 1000},            {"ms", 1}};
  size_t p = 0;
  int last = -1;
  int64_t total = 0;
  while (p < n && isdigit((unsigned char)q[p])) {
    size_t s = p;
    int64_t v = 0;
    while (p < n && isdigit((unsigned char)q[p])) {
      if (v > INT64_MAX / 10 - 10) return 0;
      v = v * 10 + (q[p] - '0');
      p++;
    }
    int u = -1;
    if (p + 1 < n && q[p] == 'm' && q[p + 1] == 's') u = 6;
    else if (p < n) {
      for (int k = 0; k < 6; k++)
        if (q[p] == units[k].u[0]) { u = k; break; }
    }
    if (u < 0 || u <= last) {
      if (last < 0) return 0;
      p = s;
      break;
    }
    p += (u == 6) ? 2 : 1;
    if (v > INT64_MAX / units[u].ms) return 0;
    total += v * units[u].ms;
    last = u;
  }
  if (last < 0) return 0;
  if (p < n && (isalnum((unsigned char)q[p]) || q[p] == '_')) return 0;
  *ms = total;
  return p;
}

static bool ieq(const char *a, size_t n, const char *b) {
  return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

static void lex(parser_t *ps) {
  const char *q = ps->q;
  size_t n = ps->n, p = ps->p;
  tok_t *t = &ps->tok;
  memset(t, 0, sizeof *t);
  for (;;) {
    while (p < n && isspace((unsigned char)q[p])) p++;
    if (p < n && q[p] == '#') {
      while (p < n && q[p] != '\n') p++;
      continue;
    }
    break;
  }
  t->pos = p;
  if (p >= n) { t->kind = TK_EOF; ps->p = p; return; }
  unsigned char c = (unsigned char)q[p];
  size_t s = p;
  if (isdigit(c) || (c == '.' && p + 1 < n && isdigit((unsigned char)q[p + 1]))) {
    int64_t ms;
    size_t dl = scan_duration(q + p, n - p, &ms);
    if (dl) {
      t->kind = TK_DUR; t->dur_ms = ms; t->num = (double)ms / 1000.0;
      p += dl;
    } else {
      /* Hex, decimal with fraction/exponent; Go-style octal for a leading 0 of an integer. */
      char buf[128];
      size_t e = p;
      if (c == '0' && e + 1 < n && (q[e + 1] == 'x' || q[e + 1] == 'X')) {
        e += 2;
        while (e < n && isxdigit((unsigned char)q[e])) e++;
      } else {
        while (e < n && (isdigit((unsigned char)q[e]) || q[e] == '.')) e++;
        if (e < n && (q[e] == 'e' || q[e] == 'E')) {
          size_t f = e + 1;
          if (f < n && (q[f] == '+' || q[f] == '-')) f++;
          if (f < n && isdigit((unsigned char)q[f])) {
            e = f;
            while (e < n && isdigit((unsigned char)q[e])) e++;
          }
        }
      }
      if (e < n && (isalnum((unsigned char)q[e]) || q[e] == '_')) {
        perr_at(ps, s, "bad number or duration syntax: \"%.*s\"", (int)(e - s + 1), q + s);
        t->kind = TK_ERR; ps->p = e; return;
      }
      if (e - s >= sizeof buf) { perr_at(ps, s, "number too long"); t->kind = TK_ERR; return; }
      memcpy(buf, q + s, e - s);
      buf[e - s] = 0;
      char *end;
      bool intlike = strspn(buf, "0123456789") == e - s;
      errno = 0;
      if (intlike && buf[0] == '0' && e - s > 1) {
        unsigned long long v = strtoull(buf, &end, 8);
        if (*end) t->num = strtod(buf, &end); else t->num = (double)v;
      } else if (buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X')) {
        t->num = (double)strtoull(buf, &end, 16);
      } else {
        t->num = strtod(buf, &end);
      }
      if (*end) { perr_at(ps, s, "bad number or duration syntax: \"%s\"", buf); t->kind = TK_ERR; return; }
      t->kind = TK_NUM;
      p = e;
    }
  } else if (is_ident_start(c)) {
    while (p < n && is_ident_char((unsigned char)q[p])) p++;
    t->kind = TK_IDENT;
    if (ieq(q + s, p - s, "inf")) { t->kind = TK_NUM; t->num = INFINITY; }
    else if (ieq(q + s, p - s, "nan")) { t->kind = TK_NUM; t->num = NAN; }
    else if (ieq(q + s, p - s, "and")) { t->kind = TK_OP; t->op = OP_AND; }
    else if (ieq(q + s, p - s, "or")) { t->kind = TK_OP; t->op = OP_OR; }
    else if (ieq(q + s, p - s, "unless")) { t->kind = TK_OP; t->op = OP_UNLESS; }
    else if (ieq(q + s, p - s, "atan2")) { t->kind = TK_OP; t->op = OP_ATAN2; }
  } else if (c == '"' || c == '\'' || c == '`') {
    p++;
    while (p < n && (unsigned char)q[p] != c) {
      if (c != '`' && q[p] == '\\') p++;
      else if (c != '`' && q[p] == '\n') break;
      p++;
    }
    if (p >= n || (unsigned char)q[p] != c) {
      perr_at(ps, s, "unterminated quoted string");
      t->kind = TK_ERR; ps->p = n; return;
    }
    p++;
    t->kind = TK_STR;
  } else {
    p++;
    char d = p < n ? q[p] : 0;
    switch (c) {
    case '(': t->kind = TK_LP; ps->open[0]++; break;
    case ')': t->kind = TK_RP; ps->open[0]--; break;
    case '{': t->kind = TK_LB; ps->open[1]++; break;
    case '}': t->kind = TK_RB; ps->open[1]--; break;
    case '[': t->kind = TK_LBR; ps->open[2]++; break;
    case ']': t->kind = TK_RBR; ps->open[2]--; break;
    case ',': t->kind = TK_COMMA; break;
    case ':': t->kind = TK_COLON; break;
    case '@': t->kind = TK_AT; break;
    case '+': t->kind = TK_OP; t->op = OP_ADD; break;
    case '-': t->kind = TK_OP; t->op = OP_SUB; break;
    case '*': t->kind = TK_OP; t->op = OP_MUL; break;
    case '/': t->kind = TK_OP; t->op = OP_DIV; break;
    case '%': t->kind = TK_OP; t->op = OP_MOD; break;
    case '^': t->kind = TK_OP; t->op = OP_POW; break;
    case '=':
      if (d == '=') { p++; t->kind = TK_OP; t->op = OP_EQ; }
      else if (d == '~') { p++; t->kind = TK_RE; }
      else t->kind = TK_ASSIGN;
      break;
    case '!':
      if (d == '=') { p++; t->kind = TK_OP; t->op = OP_NE; }
      else if (d == '~') { p++; t->kind = TK_NRE; }
      else { perr_at(ps, s, "unexpected character after '!': %s", d ? (char[2]){d, 0} : "<EOF>"); t->kind = TK_ERR; }
      break;
    case '<':
      if (d == '=') { p++; t->op = OP_LE; } else t->op = OP_LT;
      t->kind = TK_OP;
      break;
    case '>':
      if (d == '=') { p++; t->op = OP_GE; } else t->op = OP_GT;
      t->kind = TK_OP;
      break;
    default:
      perr_at(ps, s, "unexpected character: '%c'", c);
      t->kind = TK_ERR;
    }
  }
  t->len = p - s;
  ps->p = p;
}

static bool tok_is(parser_t *ps, const char *word) {
  return ps->tok.kind == TK_IDENT && ps->tok.len == strlen(word) && !strncasecmp(ps->q + ps->tok.pos, word, ps->tok.len);
}

static const char *tok_desc(parser_t *ps, char *buf, size_t n) {
  tok_t *t = &ps->tok;
  switch (t->kind) {
  case TK_EOF: return "end of input";
  case TK_IDENT: snprintf(buf, n, "identifier \"%.*s\"", (int)t->len, ps->q + t->pos); return buf;
  case TK_NUM: snprintf(buf, n, "number \"%.*s\"", (int)t->len, ps->q + t->pos); return buf;
  case TK_DUR: snprintf(buf, n, "duration \"%.*s\"", (int)t->len, ps->q + t->pos); return buf;
  case TK_STR: snprintf(buf, n, "string %.*s", (int)t->len, ps->q + t->pos); return buf;
  case TK_LP: return "\"(\"";
  case TK_RP: return "\")\"";
  case TK_LB: return "\"{\"";
  case TK_RB: return "\"}\"";
  case TK_LBR: return "\"[\"";
  case TK_RBR: return "\"]\"";
  case TK_COMMA: return "\",\"";
  case TK_COLON: return "\":\"";
  case TK_AT: return "\"@\"";
  case TK_ASSIGN: return "\"=\"";
  case TK_RE: return "\"=~\"";
  case TK_NRE: return "\"!~\"";
  case TK_OP: snprintf(buf, n, "%s \"%s\"", t->op >= OP_AND && t->op <= OP_UNLESS ? "set operator" : "operator", pql_op_name(t->op)); return buf;
  default: return "error";
  }
}

static void unexpected(parser_t *ps, const char *context) {
  char b[160];
  if (ps->tok.kind == TK_ERR) return;
  if (ps->tok.kind == TK_EOF && ps->open[1] > 0)
    perr_at(ps, ps->tok.pos, "unexpected end of input inside braces");
  else if (ps->tok.kind == TK_EOF && ps->open[0] > 0)
    perr_at(ps, ps->tok.pos, "unclosed left parenthesis");
  else if (ps->tok.kind == TK_EOF && ps->open[2] > 0)
    perr_at(ps, ps->tok.pos, "unclosed left bracket");
  else if (ps->tok.kind == TK_EOF)
    perr_at(ps, ps->tok.pos, "unexpected end of input%s%s", context ? " " : "", context ? context : "");
  else
    perr_at(ps, ps->tok.pos, "unexpected %s%s%s", tok_desc(ps, b, sizeof b), context ? " " : "", context ? context : "");
}

static bool expect(parser_t *ps, tok_kind_t k, const char *context) {
  if (ps->failed) return false;
  if (ps->tok.kind != k) { unexpected(ps, context); return false; }
  lex(ps);
  return true;
}

/* Unquotes a string literal token (Go strconv.Unquote rules). */
static char *unquote(parser_t *ps, size_t pos, size_t len, size_t *outlen) {
  const char *s = ps->q + pos + 1;
  size_t n = len - 2;
  char quote = ps->q[pos];
  char *out = arena_alloc(ps->a, n * 4 + 1);
  if (!out) { perr_at(ps, pos, "out of memory"); return NULL; }
  size_t o = 0;
  if (quote == '`') {
    memcpy(out, s, n);
    o = n;
  } else {
    for (size_t i = 0; i < n; i++) {
      if (s[i] != '\\') { out[o++] = s[i]; continue; }
      if (++i >= n) goto bad;
      char c = s[i];
      uint32_t cp = 0;
      int digits = 0, base = 16;
      switch (c) {
      case 'a': out[o++] = '\a'; continue;
      case 'b': out[o++] = '\b'; continue;
      case 'f': out[o++] = '\f'; continue;
      case 'n': out[o++] = '\n'; continue;
      case 'r': out[o++] = '\r'; continue;
      case 't': out[o++] = '\t'; continue;
      case 'v': out[o++] = '\v'; continue;
      case '\\': out[o++] = '\\'; continue;
      case '"': case '\'':
        if (c != quote) goto bad;
        out[o++] = c;
        continue;
      case 'x': digits = 2; break;
      case 'u': digits = 4; break;
      case 'U': digits = 8; break;
      default:
        if (c >= '0' && c <= '7') { digits = 3; base = 8; i--; break; }
        if (c > 0x20 && c < 0x7F) { /* Go's %#U, as Prometheus's lexer words it */
          perr_at(ps, pos, "unknown escape sequence U+%04X '%c'", (unsigned)c, c);
          return NULL;
        }
        goto bad;
      }
      for (int k = 0; k < digits; k++) {
        if (++i >= n) goto bad;
        int d;
        char h = s[i];
        if (h >= '0' && h <= '9') d = h - '0';
        else if (base == 16 && h >= 'a' && h <= 'f') d = h - 'a' + 10;
        else if (base == 16 && h >= 'A' && h <= 'F') d = h - 'A' + 10;
        else goto bad;
        if (base == 8 && d > 7) goto bad;
        cp = cp * (uint32_t)base + (uint32_t)d;
      }
      if (c == 'x' || base == 8) {
        if (cp > 255) goto bad;
        out[o++] = (char)cp;
      } else {
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
        if (cp < 0x80) out[o++] = (char)cp;
        else if (cp < 0x800) { out[o++] = (char)(0xC0 | (cp >> 6)); out[o++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
          out[o++] = (char)(0xE0 | (cp >> 12)); out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
          out[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
          out[o++] = (char)(0xF0 | (cp >> 18)); out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
          out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[o++] = (char)(0x80 | (cp & 0x3F));
        }
      }
    }
  }
  out[o] = 0;
  *outlen = o;
  return out;
bad:
  perr_at(ps, pos, "invalid syntax");
  return NULL;
}

/* ---- nodes ---------------------------------------------------------------------------- */

static pql_node_t *node(parser_t *ps, pql_kind_t k, size_t pos) {
  pql_node_t *nd = arena_calloc(ps->a, sizeof *nd);
  if (!nd) { perr_at(ps, pos, "out of memory"); return NULL; }
  nd->kind = k;
  nd->pos = pos;
  return nd;
}

/* Bounds on the tree's height (evaluation, printing and checks recurse over it): 500 nested
 * primaries and 2000 binary operators in all. */
#define PQL_MAX_BINARY_OPS 2000

static pql_node_t *parse_expr(parser_t *ps, int min_prec);

static int op_prec(int op) {
  switch (op) {
  case OP_OR: return 1;
  case OP_AND: case OP_UNLESS: return 2;
  case OP_EQ: case OP_NE: case OP_LT: case OP_LE: case OP_GT: case OP_GE: return 3;
  case OP_ADD: case OP_SUB: return 4;
  case OP_MUL: case OP_DIV: case OP_MOD: case OP_ATAN2: return 5;
  case OP_POW: return 6;
  default: return 0;
  }
}
static bool is_cmp(int op) { return op >= OP_EQ && op <= OP_GE; }
static bool is_setop(int op) { return op >= OP_AND && op <= OP_UNLESS; }

/* Label name: identifier/keyword or (3.x) a quoted string. */
static const char *parse_label_name(parser_t *ps, const char *context) {
  if (ps->tok.kind == TK_IDENT || (ps->tok.kind == TK_OP && ps->tok.op >= OP_AND)) {
    const char *name = arena_strndup(ps->a, ps->q + ps->tok.pos, ps->tok.len);
    if (ps->tok.kind == TK_IDENT && memchr(ps->q + ps->tok.pos, ':', ps->tok.len)) {
      unexpected(ps, context);
      return NULL;
    }
    lex(ps);
    return name;
  }
  if (ps->tok.kind == TK_STR) {
    size_t l;
    char *s = unquote(ps, ps->tok.pos, ps->tok.len, &l);
    if (!s) return NULL;
    lex(ps);
    return s;
  }
  unexpected(ps, context);
  return NULL;
}

static bool parse_label_list(parser_t *ps, const char ***out, size_t *nout, const char *context) {
  if (!expect(ps, TK_LP, context)) return false;
  size_t cap = 8, n = 0;
  const char **l = arena_alloc(ps->a, cap * sizeof *l);
  if (!l) return false;
  while (ps->tok.kind != TK_RP) {
    const char *nm = parse_label_name(ps, "in grouping opts, expected label");
    if (!nm) return false;
    if (n == cap) {
      const char **nl = arena_alloc(ps->a, cap * 2 * sizeof *nl);
      if (!nl) return false;
      memcpy(nl, l, n * sizeof *l);
      l = nl, cap *= 2;
    }
    l[n++] = nm;
    if (ps->tok.kind == TK_COMMA) lex(ps);
    else if (ps->tok.kind != TK_RP) { unexpected(ps, "in grouping opts, expected \",\" or \")\""); return false; }
  }
  lex(ps);
  *out = l, *nout = n;
  return true;
}

static pql_node_t *parse_selector(parser_t *ps, size_t pos, const char *name) {
  pql_node_t *nd = node(ps, N_SEL, pos);
  if (!nd) return NULL;
  nd->type = PT_VECTOR;
  nd->name = name;
  size_t cap = 4, n = 0;
  tsdb_matcher_t *m = arena_alloc(ps->a, cap * sizeof *m);
  if (!m) return NULL;
  if (name) {
    m[n++] = (tsdb_matcher_t){TSDB_MATCH_EQ, "__name__", name};
  }
  if (ps->tok.kind == TK_LB) {
    lex(ps);
    while (ps->tok.kind != TK_RB) {
      size_t lpos = ps->tok.pos;
      const char *lname;
      tsdb_match_type_t mt = TSDB_MATCH_EQ;
      const char *val;
      if (ps->tok.kind == TK_STR) {
        size_t l;
        char *s = unquote(ps, ps->tok.pos, ps->tok.len, &l);
        if (!s) return NULL;
        lex(ps);
        if (ps->tok.kind == TK_COMMA || ps->tok.kind == TK_RB) {
          /* A lone quoted string is the metric name (UTF-8 names in 3.x). */
          if (nd->name || n) { perr_at(ps, lpos, "metric name must not be set twice: %s", s); return NULL; }
          nd->name = s;
          lname = "__name__";
          val = s;
          goto add;
        }
        lname = s;
      } else {
        lname = parse_label_name(ps, "in label matching, expected label");
        if (!lname) return NULL;
      }
      switch (ps->tok.kind) {
      case TK_ASSIGN: mt = TSDB_MATCH_EQ; break;
      case TK_OP:
        if (ps->tok.op == OP_NE) { mt = TSDB_MATCH_NEQ; break; }
        unexpected(ps, "in label matching, expected label matching operator");
        return NULL;
      case TK_RE: mt = TSDB_MATCH_RE; break;
      case TK_NRE: mt = TSDB_MATCH_NRE; break;
      default:
        unexpected(ps, "in label matching, expected label matching operator");
        return NULL;
      }
      lex(ps);
      if (ps->tok.kind != TK_STR) { unexpected(ps, "in label matching, expected string"); return NULL; }
      {
        size_t l;
        char *s = unquote(ps, ps->tok.pos, ps->tok.len, &l);
        if (!s) return NULL;
        val = s;
      }
      if (mt == TSDB_MATCH_RE || mt == TSDB_MATCH_NRE) {
        core_regex_t *re;
        char e[256];
        if (core_regex_compile(val, strlen(val), &re, e, sizeof e) < 0) {
          perr_at(ps, lpos, "%s", e);
          return NULL;
        }
        core_regex_free(re);
      }
      lex(ps);
    add:
      if (n == cap) {
        tsdb_matcher_t *nm = arena_alloc(ps->a, cap * 2 * sizeof *nm);
        if (!nm) return NULL;
        memcpy(nm, m, n * sizeof *m);
        m = nm, cap *= 2;
      }
      if (name && !strcmp(lname, "__name__")) {
        perr_at(ps, pos, "metric name must not be set twice: \"%s\" or \"%s\"", name, val);
        return NULL;
      }
      m[n++] = (tsdb_matcher_t){mt, lname, val};
      if (ps->tok.kind == TK_COMMA) lex(ps);
      else if (ps->tok.kind != TK_RB) { unexpected(ps, "in label matching, expected \",\" or \"}\""); return NULL; }
    }
    lex(ps);
  }
  nd->matchers = m;
  nd->nmatchers = n;
  /* At least one matcher must not match the empty string. */
  bool nonempty = false;
  for (size_t i = 0; i < n && !nonempty; i++) {
    switch (m[i].type) {
    case TSDB_MATCH_EQ: nonempty = m[i].value[0] != 0; break;
    case TSDB_MATCH_NEQ: nonempty = m[i].value[0] == 0; break;
    case TSDB_MATCH_RE:
    case TSDB_MATCH_NRE: {
      core_regex_t *re;
      if (core_regex_compile(m[i].value, strlen(m[i].value), &re, NULL, 0) == 0) {
        bool me = core_regex_match(re, "", 0);
        core_regex_free(re);
        nonempty = m[i].type == TSDB_MATCH_RE ? !me : me;
      }
      break;
    }
    }
  }
  bool info_selector = ps->info_selector;
  ps->info_selector = false;
  if (!nonempty && !info_selector) {
    perr_at(ps, pos, "vector selector must contain at least one non-empty matcher");
    return NULL;
  }
  return nd;
}

static pql_node_t *parse_call(parser_t *ps, size_t pos, const pql_func_t *f) {
  pql_node_t *nd = node(ps, N_CALL, pos);
  if (!nd) return NULL;
  nd->func = f;
  nd->type = f->ret;
  lex(ps); /* '(' */
  size_t cap = 4, n = 0;
  pql_node_t **args = arena_alloc(ps->a, cap * sizeof *args);
  if (!args) return NULL;
  while (ps->tok.kind != TK_RP) {
    /* info()'s second argument selects info series; {data=~".*"} is a valid one there. */
    ps->info_selector = f->id == F_INFO && n == 1;
    pql_node_t *e = parse_expr(ps, 0);
    ps->info_selector = false;
    if (!e) return NULL;
    if (n == cap) {
      pql_node_t **na = arena_alloc(ps->a, cap * 2 * sizeof *na);
      if (!na) return NULL;
      memcpy(na, args, n * sizeof *args);
      args = na, cap *= 2;
    }
    args[n++] = e;
    if (ps->tok.kind == TK_COMMA) lex(ps);
    else if (ps->tok.kind != TK_RP) { unexpected(ps, "in call to function, expected \",\" or \")\""); return NULL; }
  }
  lex(ps);
  nd->args = args;
  nd->nargs = n;
  /* Arity and argument types, Prometheus wording. */
  /* variadic > 0: the last `variadic` declared arguments are optional; -1: the last one
   * repeats any number of times (zero included). */
  int min = f->nargs, max = f->nargs;
  if (f->variadic > 0) min = f->nargs - f->variadic;
  if (f->variadic < 0) min = f->nargs - 1, max = 1 << 20;
  if ((int)n < min || (int)n > max) {
    if (f->variadic == 0)
      perr_at(ps, pos, "expected %d argument(s) in call to \"%s\", got %zu", f->nargs, f->name, n);
    else if ((int)n < min)
      perr_at(ps, pos, "expected at least %d argument(s) in call to \"%s\", got %zu", min, f->name, n);
    else
      perr_at(ps, pos, "expected at most %d argument(s) in call to \"%s\", got %zu", max, f->name, n);
    return NULL;
  }
  if (f->id == F_INFO && n == 2 &&
      (args[1]->kind != N_SEL || args[1]->is_matrix || args[1]->has_offset || args[1]->at)) {
    perr_at(ps, args[1]->pos, "expected label selectors as the second argument to \"info\" function, got %s",
            pql_type_name(args[1]->type));
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    pql_type_t want;
    if ((int)i < f->nargs) want = f->args[i];
    else want = f->args[f->nargs - 1];
    pql_type_t got = args[i]->type;
    if (got != want) {
      perr_at(ps, args[i]->pos, "expected type %s in call to function \"%s\", got %s", pql_type_name(want),
              f->name, pql_type_name(got));
      return NULL;
    }
  }
  return nd;
}

static pql_node_t *parse_agg(parser_t *ps, size_t pos, int agg) {
  pql_node_t *nd = node(ps, N_AGG, pos);
  if (!nd) return NULL;
  nd->op = agg;
  nd->type = PT_VECTOR;
  lex(ps); /* the aggregator name */
  if (tok_is(ps, "by") || tok_is(ps, "without")) {
    nd->without = tok_is(ps, "without");
    nd->has_grouping = true;
    lex(ps);
    if (!parse_label_list(ps, &nd->grouping, &nd->ngrouping, "in grouping opts, expected \"(\"")) return NULL;
  }
  if (!expect(ps, TK_LP, "in aggregation, expected \"(\"")) return NULL;
  bool param = agg == AGG_TOPK || agg == AGG_BOTTOMK || agg == AGG_QUANTILE || agg == AGG_COUNT_VALUES ||
               agg == AGG_LIMITK || agg == AGG_LIMIT_RATIO;
  pql_node_t *e1 = parse_expr(ps, 0);
  if (!e1) return NULL;
  pql_node_t *e2 = NULL;
  if (ps->tok.kind == TK_COMMA) {
    lex(ps);
    e2 = parse_expr(ps, 0);
    if (!e2) return NULL;
  }
  if (!expect(ps, TK_RP, "in aggregation, expected \")\"")) return NULL;
  if (param) {
    if (!e2) { perr_at(ps, pos, "wrong number of arguments for aggregate expression provided, expected 2, got 1"); return NULL; }
    nd->b = e1, nd->a = e2;
  } else {
    if (e2) { perr_at(ps, pos, "wrong number of arguments for aggregate expression provided, expected 1, got 2"); return NULL; }
    nd->a = e1;
  }
  if (tok_is(ps, "by") || tok_is(ps, "without")) {
    if (nd->has_grouping) { unexpected(ps, NULL); return NULL; }
    nd->without = tok_is(ps, "without");
    nd->has_grouping = true;
    lex(ps);
    if (!parse_label_list(ps, &nd->grouping, &nd->ngrouping, "in grouping opts, expected \"(\"")) return NULL;
  }
  if (nd->a->type != PT_VECTOR) {
    perr_at(ps, nd->a->pos, "expected type instant vector in aggregation expression, got %s", pql_type_name(nd->a->type));
    return NULL;
  }
  if (param) {
    pql_type_t want = agg == AGG_COUNT_VALUES ? PT_STRING : PT_SCALAR;
    if (nd->b->type != want) {
      perr_at(ps, nd->b->pos, "expected type %s in aggregation parameter, got %s", pql_type_name(want),
              pql_type_name(nd->b->type));
      return NULL;
    }
  }
  return nd;
}

static int agg_lookup(const char *s, size_t n) {
  for (int i = 0; i < AGG__COUNT; i++)
    if (strlen(agg_names[i]) == n && !strncasecmp(agg_names[i], s, n)) return i;
  return -1;
}

/* ---- duration expressions --------------------------------------------------------------
 * Prometheus 3.x (experimental): a range, a subquery step and an offset may be arithmetic
 * over numbers (seconds), durations, step(), range(), min_of() and max_of(). Inside brackets
 * the whole arithmetic grammar applies ([2m*(10+5)]); after `offset` only a literal, a call or
 * a parenthesised expression, optionally signed, so that `x offset 100 + 2` still adds 2 to
 * the selector. A constant expression is folded here; one that reads step() or range() is
 * kept on the node and resolved by the evaluator for its query. */

static bool is_duration_func(const pql_func_t *f) {
  return f && (f->id == F_STEP || f->id == F_RANGE || f->id == F_MIN_OF || f->id == F_MAX_OF);
}

/* Case-insensitive lookup of the four functions a duration expression may call. */
static const pql_func_t *duration_func_lookup(const char *name, size_t n) {
  static const char *const names[] = {"step", "range", "min_of", "max_of"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (ieq(name, n, names[i])) return pql_func_lookup(names[i], strlen(names[i]));
  return NULL;
}

/* Checks that n uses only what a duration expression allows; sets *dynamic when it reads the
 * query's step or range. Returns the offending node, or NULL when n is valid. */
static const pql_node_t *duration_check(const pql_node_t *n, bool *dynamic) {
  switch (n->kind) {
  case N_NUM: return NULL;
  case N_PAREN:
  case N_UNARY: return duration_check(n->a, dynamic);
  case N_BIN: {
    if (n->op < OP_ADD || n->op > OP_POW || n->has_matching || n->return_bool) return n;
    const pql_node_t *bad = duration_check(n->a, dynamic);
    return bad ? bad : duration_check(n->b, dynamic);
  }
  case N_CALL:
    if (!is_duration_func(n->func)) return n;
    if (n->func->id == F_STEP || n->func->id == F_RANGE) *dynamic = true;
    for (size_t i = 0; i < n->nargs; i++) {
      const pql_node_t *bad = duration_check(n->args[i], dynamic);
      if (bad) return bad;
    }
    return NULL;
  default: return n;
  }
}

static double duration_value(const pql_node_t *n, int64_t step_ms, int64_t range_ms) {
  switch (n->kind) {
  case N_NUM: return n->num;
  case N_PAREN: return duration_value(n->a, step_ms, range_ms);
  case N_UNARY: {
    double v = duration_value(n->a, step_ms, range_ms);
    return n->op == OP_SUB ? -v : v;
  }
  case N_BIN: {
    double a = duration_value(n->a, step_ms, range_ms), b = duration_value(n->b, step_ms, range_ms);
    switch (n->op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    case OP_MOD: return fmod(a, b);
    case OP_POW: return pow(a, b);
    default: return NAN;
    }
  }
  case N_CALL:
    switch (n->func->id) {
    case F_STEP: return (double)step_ms / 1000.0;
    case F_RANGE: return (double)range_ms / 1000.0;
    case F_MIN_OF:
    case F_MAX_OF: {
      double a = duration_value(n->args[0], step_ms, range_ms), b = duration_value(n->args[1], step_ms, range_ms);
      if (isnan(a) || isnan(b)) return NAN;
      return n->func->id == F_MIN_OF ? fmin(a, b) : fmax(a, b);
    }
    default: return NAN;
    }
  default: return NAN;
  }
}

bool pql_duration_eval(const pql_node_t *n, int64_t step_ms, int64_t range_ms, int64_t *out_ms) {
  double v = duration_value(n, step_ms, range_ms) * 1000.0;
  if (!isfinite(v) || fabs(v) > 9.2e18) return false;
  *out_ms = (int64_t)llround(v);
  return true;
}

/* Parses the duration expression of a range, a subquery step (in_brackets) or an offset.
 * A constant lands in *ms; one that needs the query's step or range in *expr (then *ms = 0). */
static bool parse_duration_expr(parser_t *ps, bool in_brackets, int64_t *ms, pql_node_t **expr, const char *context) {
  *expr = NULL;
  size_t pos = ps->tok.pos;
  tok_t t = ps->tok;
  bool call = t.kind == TK_IDENT && duration_func_lookup(ps->q + t.pos, t.len);
  bool sign = t.kind == TK_OP && (t.op == OP_ADD || t.op == OP_SUB);
  if (t.kind != TK_DUR && t.kind != TK_NUM && t.kind != TK_LP && !call && !sign) {
    unexpected(ps, context);
    return false;
  }
  ps->in_duration++;
  pql_node_t *e = NULL;
  if (in_brackets) {
    e = parse_expr(ps, 0);
  } else {
    /* offset: [sign] (literal | call | "(" expr ")") */
    int op = OP_NONE;
    if (sign) {
      op = ps->tok.op;
      lex(ps);
    }
    size_t ppos = ps->tok.pos;
    if (ps->tok.kind == TK_DUR || ps->tok.kind == TK_NUM) {
      if ((e = node(ps, N_NUM, ppos))) {
        e->num = ps->tok.num;
        e->type = PT_SCALAR;
        lex(ps);
      }
    } else if (ps->tok.kind == TK_LP) {
      lex(ps);
      pql_node_t *in = parse_expr(ps, 0);
      if (in && expect(ps, TK_RP, "in duration expression, expected \")\"") && (e = node(ps, N_PAREN, ppos))) {
        e->a = in;
        e->type = in->type;
      }
    } else if (ps->tok.kind == TK_IDENT && duration_func_lookup(ps->q + ps->tok.pos, ps->tok.len)) {
      const pql_func_t *f = duration_func_lookup(ps->q + ps->tok.pos, ps->tok.len);
      lex(ps);
      if (ps->tok.kind != TK_LP) unexpected(ps, "in duration expression, expected \"(\"");
      else e = parse_call(ps, ppos, f);
    } else {
      unexpected(ps, context);
    }
    if (e && op != OP_NONE) {
      pql_node_t *u = node(ps, N_UNARY, pos);
      if (u) {
        u->op = op;
        u->a = e;
        u->type = PT_SCALAR;
      }
      e = u;
    }
  }
  ps->in_duration--;
  if (!e || ps->failed) return false;
  bool dynamic = false;
  const pql_node_t *bad = duration_check(e, &dynamic);
  if (bad || e->type != PT_SCALAR) {
    perr_at(ps, bad ? bad->pos : e->pos, "invalid duration expression: only numbers, durations, arithmetic, step(), range(), min_of() and max_of() are allowed");
    return false;
  }
  if (dynamic) {
    *expr = e;
    *ms = 0;
    return true;
  }
  if (!pql_duration_eval(e, 0, 0, ms)) {
    perr_at(ps, pos, "duration out of range");
    return false;
  }
  return true;
}

static pql_node_t *parse_postfix(parser_t *ps, pql_node_t *e) {
  for (;;) {
    if (ps->failed) return NULL;
    if (ps->tok.kind == TK_LBR) {
      size_t pos = ps->tok.pos;
      lex(ps);
      int64_t range;
      pql_node_t *range_expr, *step_expr = NULL;
      size_t dpos = ps->tok.pos; /* Prometheus points at the duration, not the bracket */
      if (!parse_duration_expr(ps, true, &range, &range_expr, "in subquery or range selector, expected duration")) return NULL;
      if (!range_expr && range <= 0) { perr_at(ps, dpos, "duration must be greater than 0"); return NULL; }
      if (ps->tok.kind == TK_COLON) {
        lex(ps);
        int64_t step = 0;
        if (ps->tok.kind != TK_RBR) {
          dpos = ps->tok.pos;
          if (!parse_duration_expr(ps, true, &step, &step_expr, "in subquery, expected duration")) return NULL;
          if (!step_expr && step <= 0) { perr_at(ps, dpos, "duration must be greater than 0"); return NULL; }
        }
        if (!expect(ps, TK_RBR, "in subquery, expected \"]\"")) return NULL;
        if (e->type != PT_VECTOR) {
          perr_at(ps, e->pos, "subquery is only allowed on instant vector, got %s instead", pql_type_name(e->type));
          return NULL;
        }
        pql_node_t *s = node(ps, N_SUBQ, e->pos);
        if (!s) return NULL;
        s->a = e;
        s->range_ms = range;
        s->step_ms = step;
        s->range_expr = range_expr;
        s->step_expr = step_expr;
        s->type = PT_MATRIX;
        e = s;
        continue;
      }
      if (!expect(ps, TK_RBR, "in range selector, expected \"]\"")) return NULL;
      if (e->kind != N_SEL || e->is_matrix || e->has_offset || e->at || e->ext) {
        perr_at(ps, pos, e->kind == N_SEL ? "no offset or @ modifiers allowed before range"
                                          : "ranges only allowed for vector selectors");
        return NULL;
      }
      e->is_matrix = true;
      e->range_ms = range;
      e->range_expr = range_expr;
      e->type = PT_MATRIX;
      continue;
    }
    if ((tok_is(ps, "anchored") || tok_is(ps, "smoothed")) && e->kind == N_SEL) {
      bool anchored = tok_is(ps, "anchored");
      if (e->ext) { perr_at(ps, ps->tok.pos, "anchored and smoothed may be given once per selector"); return NULL; }
      if (anchored && !e->is_matrix) {
        perr_at(ps, ps->tok.pos, "anchored modifier can only be used with range vector selectors");
        return NULL;
      }
      e->ext = anchored ? EXT_ANCHORED : EXT_SMOOTHED;
      lex(ps);
      continue;
    }
    if (tok_is(ps, "offset")) {
      size_t pos = ps->tok.pos;
      lex(ps);
      if (e->kind != N_SEL && e->kind != N_SUBQ) {
        perr_at(ps, pos, "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery");
        return NULL;
      }
      if (e->has_offset) { perr_at(ps, pos, "offset may not be set multiple times"); return NULL; }
      if (!parse_duration_expr(ps, false, &e->offset_ms, &e->offset_expr, "in offset, expected duration")) return NULL;
      e->has_offset = true;
      continue;
    }
    if (ps->tok.kind == TK_AT) {
      size_t pos = ps->tok.pos;
      lex(ps);
      if (e->kind != N_SEL && e->kind != N_SUBQ) {
        perr_at(ps, pos, "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery");
        return NULL;
      }
      if (e->at) { perr_at(ps, pos, "@ <timestamp> may not be set multiple times"); return NULL; }
      if (tok_is(ps, "start") || tok_is(ps, "end")) {
        e->at = tok_is(ps, "start") ? AT_START : AT_END;
        lex(ps);
        if (!expect(ps, TK_LP, "in @, expected \"(\"") || !expect(ps, TK_RP, "in @, expected \")\"")) return NULL;
        continue;
      }
      bool neg = false;
      if (ps->tok.kind == TK_OP && (ps->tok.op == OP_SUB || ps->tok.op == OP_ADD)) {
        neg = ps->tok.op == OP_SUB;
        lex(ps);
      }
      double v;
      if (ps->tok.kind == TK_NUM) v = ps->tok.num;
      else if (ps->tok.kind == TK_DUR) v = (double)ps->tok.dur_ms / 1000.0;
      else { unexpected(ps, "in @, expected timestamp"); return NULL; }
      if (!isfinite(v) || fabs(v) * 1000 > 9.2e18) {
        perr_at(ps, ps->tok.pos, "timestamp out of bounds for @ modifier: %g", v);
        return NULL;
      }
      lex(ps);
      if (neg) v = -v;
      e->at = AT_TS;
      e->at_ms = (int64_t)llround(v * 1000.0);
      continue;
    }
    return e;
  }
}

static pql_node_t *parse_primary(parser_t *ps) {
  if (++ps->depth > 500) { perr_at(ps, ps->tok.pos, "expression nested too deeply"); return NULL; }
  pql_node_t *e = NULL;
  size_t pos = ps->tok.pos;
  switch (ps->tok.kind) {
  case TK_NUM:
  case TK_DUR:
    e = node(ps, N_NUM, pos);
    if (!e) return NULL;
    e->num = ps->tok.num;
    e->type = PT_SCALAR;
    lex(ps);
    break;
  case TK_STR: {
    size_t l;
    char *s = unquote(ps, ps->tok.pos, ps->tok.len, &l);
    if (!s) return NULL;
    e = node(ps, N_STR, pos);
    if (!e) return NULL;
    e->str = s, e->slen = l;
    e->type = PT_STRING;
    lex(ps);
    break;
  }
  case TK_LP: {
    lex(ps);
    pql_node_t *in = parse_expr(ps, 0);
    if (!in) return NULL;
    if (!expect(ps, TK_RP, "in parenthesized expression, expected \")\"")) return NULL;
    e = node(ps, N_PAREN, pos);
    if (!e) return NULL;
    e->a = in;
    e->type = in->type;
    break;
  }
  case TK_LB:
    e = parse_selector(ps, pos, NULL);
    break;
  case TK_IDENT: {
    const char *id = ps->q + ps->tok.pos;
    size_t idl = ps->tok.len;
    /* Look ahead one token without losing this one. */
    size_t save_p = ps->p;
    tok_t save = ps->tok;
    int save_open[3] = {ps->open[0], ps->open[1], ps->open[2]};
    lex(ps);
    tok_t next = ps->tok;
    ps->p = save_p, ps->tok = save;
    memcpy(ps->open, save_open, sizeof save_open);
    int agg = agg_lookup(id, idl);
    if (agg >= 0 && (next.kind == TK_LP || (next.kind == TK_IDENT &&
        ((next.len == 2 && !strncasecmp(ps->q + next.pos, "by", 2)) ||
         (next.len == 7 && !strncasecmp(ps->q + next.pos, "without", 7)))))) {
      e = parse_agg(ps, pos, agg);
      break;
    }
    if (next.kind == TK_LP) {
      const pql_func_t *f = pql_func_lookup(id, idl);
      if (!f && ps->in_duration) f = duration_func_lookup(id, idl);
      if (!f) {
        perr_at(ps, pos, "unknown function with name \"%.*s\"", (int)idl, id);
        return NULL;
      }
      lex(ps);
      e = parse_call(ps, pos, f);
      break;
    }
    static const char *const kw[] = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"};
    for (size_t k = 0; k < sizeof kw / sizeof kw[0]; k++)
      if (strlen(kw[k]) == idl && !strncasecmp(kw[k], id, idl)) {
        unexpected(ps, NULL);
        return NULL;
      }
    char *name = arena_strndup(ps->a, id, idl);
    if (!name) return NULL;
    lex(ps);
    e = parse_selector(ps, pos, name);
    break;
  }
  case TK_OP:
    if (ps->tok.op == OP_ADD || ps->tok.op == OP_SUB) {
      int op = ps->tok.op;
      lex(ps);
      pql_node_t *in = parse_expr(ps, op_prec(OP_POW));
      if (!in) return NULL;
      if (in->type != PT_SCALAR && in->type != PT_VECTOR) {
        perr_at(ps, pos, "unary expression only allowed on expressions of type scalar or instant vector, got \"%s\"",
                pql_type_name(in->type));
        return NULL;
      }
      if (in->kind == N_NUM) { /* fold like Prometheus: -1 is a literal */
        if (op == OP_SUB) in->num = -in->num;
        in->pos = pos;
        e = in;
      } else {
        e = node(ps, N_UNARY, pos);
        if (!e) return NULL;
        e->op = op;
        e->a = in;
        e->type = in->type;
      }
      ps->depth--;
      return e;
    }
    /* fallthrough */
  default:
    unexpected(ps, NULL);
    return NULL;
  }
  ps->depth--;
  if (!e) return NULL;
  return parse_postfix(ps, e);
}

/* fill(v), fill_left(v), fill_right(v) after a binary operator's matching clauses. They are
 * keywords only when "(" follows: `a + fill` still names a metric called fill. */
static bool parse_fill_modifiers(parser_t *ps, pql_node_t *b) {
  for (;;) {
    int which;
    if (tok_is(ps, "fill")) which = 3;
    else if (tok_is(ps, "fill_left")) which = 1;
    else if (tok_is(ps, "fill_right")) which = 2;
    else return true;
    size_t pos = ps->tok.pos, save_p = ps->p;
    tok_t save = ps->tok;
    int save_open[3] = {ps->open[0], ps->open[1], ps->open[2]};
    lex(ps);
    if (ps->tok.kind != TK_LP) {
      ps->p = save_p, ps->tok = save;
      memcpy(ps->open, save_open, sizeof save_open);
      return true;
    }
    if (((which & 1) && b->fill_left) || ((which & 2) && b->fill_right)) {
      perr_at(ps, pos, "fill value for the %s side may not be set multiple times", which == 2 ? "right" : "left");
      return false;
    }
    lex(ps);
    bool neg = false;
    if (ps->tok.kind == TK_OP && (ps->tok.op == OP_SUB || ps->tok.op == OP_ADD)) {
      neg = ps->tok.op == OP_SUB;
      lex(ps);
    }
    if (ps->tok.kind != TK_NUM && ps->tok.kind != TK_DUR) {
      unexpected(ps, "in fill modifier, expected number");
      return false;
    }
    double v = neg ? -ps->tok.num : ps->tok.num;
    lex(ps);
    if (!expect(ps, TK_RP, "in fill modifier, expected \")\"")) return false;
    if (which & 1) b->fill_left = true, b->fill_left_value = v;
    if (which & 2) b->fill_right = true, b->fill_right_value = v;
  }
}

static pql_node_t *parse_expr(parser_t *ps, int min_prec) {
  pql_node_t *lhs = parse_primary(ps);
  while (lhs && !ps->failed && ps->tok.kind == TK_OP) {
    int op = ps->tok.op;
    int prec = op_prec(op);
    if (prec < min_prec) break;
    size_t opos = ps->tok.pos;
    if (++ps->nbin > PQL_MAX_BINARY_OPS) {
      perr_at(ps, opos, "expression has more than %d binary operators", PQL_MAX_BINARY_OPS);
      return NULL;
    }
    lex(ps);
    pql_node_t *b = node(ps, N_BIN, opos);
    if (!b) return NULL;
    b->op = op;
    b->card = is_setop(op) ? CARD_MANY_TO_MANY : CARD_ONE_TO_ONE;
    if (tok_is(ps, "bool")) {
      if (!is_cmp(op)) { perr_at(ps, ps->tok.pos, "bool modifier can only be used on comparison operators"); return NULL; }
      b->return_bool = true;
      lex(ps);
    }
    if (tok_is(ps, "on") || tok_is(ps, "ignoring")) {
      b->on = tok_is(ps, "on");
      b->has_matching = true;
      lex(ps);
      if (!parse_label_list(ps, &b->mlabels, &b->nmlabels, "in grouping opts, expected \"(\"")) return NULL;
      if (tok_is(ps, "group_left") || tok_is(ps, "group_right")) {
        if (is_setop(op)) {
          perr_at(ps, ps->tok.pos, "no grouping allowed for \"%s\" operation", pql_op_name(op));
          return NULL;
        }
        b->card = tok_is(ps, "group_left") ? CARD_MANY_TO_ONE : CARD_ONE_TO_MANY;
        lex(ps);
        if (ps->tok.kind == TK_LP &&
            !parse_label_list(ps, &b->include, &b->ninclude, "in grouping opts, expected \"(\""))
          return NULL;
      }
    }
    if (!parse_fill_modifiers(ps, b)) return NULL;
    pql_node_t *rhs = parse_expr(ps, op == OP_POW ? prec : prec + 1);
    if (!rhs) return NULL;
    b->a = lhs, b->b = rhs;
    /* Type checks. */
    pql_type_t lt = lhs->type, rt = rhs->type;
    if ((lt != PT_SCALAR && lt != PT_VECTOR) || (rt != PT_SCALAR && rt != PT_VECTOR)) {
      perr_at(ps, lhs->pos, "binary expression must contain only scalar and instant vector types");
      return NULL;
    }
    if (is_setop(op) && (lt == PT_SCALAR || rt == PT_SCALAR)) {
      perr_at(ps, lhs->pos, "set operator \"%s\" not allowed in binary scalar expression", pql_op_name(op));
      return NULL;
    }
    if (is_cmp(op) && !b->return_bool && lt == PT_SCALAR && rt == PT_SCALAR) {
      perr_at(ps, lhs->pos, "comparisons between scalars must use BOOL modifier");
      return NULL;
    }
    if ((b->fill_left || b->fill_right) && (lt != PT_VECTOR || rt != PT_VECTOR || is_setop(op))) {
      perr_at(ps, opos, "fill modifiers are only allowed on arithmetic and comparison operations between instant vectors");
      return NULL;
    }
    if (b->has_matching && (lt != PT_VECTOR || rt != PT_VECTOR)) {
      perr_at(ps, lhs->pos, "vector matching only allowed between instant vectors");
      return NULL;
    }
    if (b->card == CARD_ONE_TO_ONE || b->card == CARD_MANY_TO_MANY) {
      /* nothing */
    } else if (b->on) {
      for (size_t i = 0; i < b->ninclude; i++)
        for (size_t j = 0; j < b->nmlabels; j++)
          if (!strcmp(b->include[i], b->mlabels[j])) {
            perr_at(ps, opos, "label \"%s\" must not occur in ON and GROUP clause at once", b->include[i]);
            return NULL;
          }
    }
    b->type = (lt == PT_SCALAR && rt == PT_SCALAR) ? PT_SCALAR : PT_VECTOR;
    lhs = b;
  }
  return lhs;
}

int promql_parse(const char *q, size_t n, promql_expr_t **out, promql_pos_t *pos, char *err, size_t errlen) {
  *out = NULL;
  if (pos) memset(pos, 0, sizeof *pos);
  promql_expr_t *e = calloc(1, sizeof *e);
  if (!e) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  e->arena = arena_new(0);
  if (!e->arena) {
    free(e);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  parser_t ps = {.q = q, .n = n, .a = e->arena, .err = err, .errlen = errlen, .epos = pos};
  lex(&ps);
  if (ps.tok.kind == TK_EOF && !ps.failed) {
    perr_at(&ps, 0, "no expression found in input");
    goto fail;
  }
  e->root = parse_expr(&ps, 0);
  if (!e->root || ps.failed) goto fail;
  if (ps.tok.kind != TK_EOF) {
    unexpected(&ps, NULL);
    goto fail;
  }
  *out = e;
  return 0;
fail:
  if (!ps.failed) perr_at(&ps, ps.tok.pos, "out of memory");
  promql_expr_free(e);
  return MD_EINVAL;
}

void promql_expr_free(promql_expr_t *e) {
  if (!e) return;
  arena_free(e->arena);
  free(e);
}

const char *promql_expr_type_name(const promql_expr_t *e) {
  switch (e->root->type) {
  case PT_SCALAR: return "scalar";
  case PT_STRING: return "string";
  case PT_VECTOR: return "vector";
  case PT_MATRIX: return "matrix";
  default: return "invalid";
  }
}
