/*
 * print.c — turns an AST back into PromQL text: the canonical one-line form (Prometheus's
 * String(), used for @-rewrites, logging and rule files) and the indented form of
 * /api/v1/format_query (Prometheus's Pretty(): a node that fits in 100 columns stays on one
 * line, otherwise its children go on their own, indented lines).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/pql.h"

void pql_print_duration(int64_t ms, sb_t *out) {
  if (ms < 0) {
    sb_putc(out, '-');
    ms = -ms;
  }
  if (ms == 0) {
    sb_puts(out, "0s");
    return;
  }
  static const struct { const char *u; int64_t ms; } units[] = {
      {"y", 365LL * 86400000}, {"w", 7LL * 86400000}, {"d", 86400000}, {"h", 3600000},
      {"m", 60000},            {"s", 1000},            {"ms", 1}};
  for (size_t i = 0; i < 7; i++) {
    if (ms >= units[i].ms) {
      sb_printf(out, "%lld%s", (long long)(ms / units[i].ms), units[i].u);
      ms %= units[i].ms;
    }
  }
}

void pql_print_string_literal(const char *s, size_t n, sb_t *out) {
  sb_putc(out, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': sb_puts(out, "\\\""); break;
    case '\\': sb_puts(out, "\\\\"); break;
    case '\n': sb_puts(out, "\\n"); break;
    case '\r': sb_puts(out, "\\r"); break;
    case '\t': sb_puts(out, "\\t"); break;
    default:
      if (c < 0x20 || c == 0x7f) sb_printf(out, "\\x%02x", c);
      else sb_putc(out, (char)c);
    }
  }
  sb_putc(out, '"');
}

static void print_number(double v, sb_t *out) {
  if (isnan(v)) sb_puts(out, "NaN");
  else if (isinf(v)) sb_puts(out, v > 0 ? "Inf" : "-Inf"); /* not "+Inf": "a ^ +Inf ^ b" would regroup */
  else sb_double(out, v);
}

static void print_labels(const char **l, size_t n, sb_t *out) {
  for (size_t i = 0; i < n; i++) {
    if (i) sb_puts(out, ", ");
    sb_puts(out, l[i]);
  }
}

static bool is_plain_name(const char *s) {
  if (!*s || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return false;
  for (const char *p = s; *p; p++)
    if (!(*p == '_' || *p == ':' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
      return false;
  return true;
}

/* A duration that reads step() or range() prints as its expression, parenthesised so that it
 * re-parses the same after `offset` and inside brackets. */
static void print_duration_expr(const pql_node_t *expr, int64_t ms, sb_t *out) {
  if (!expr) {
    pql_print_duration(ms, out);
    return;
  }
  if (expr->kind == N_PAREN) {
    pql_print_node(expr, out);
    return;
  }
  sb_putc(out, '(');
  pql_print_node(expr, out);
  sb_putc(out, ')');
}

static void print_modifiers(const pql_node_t *n, sb_t *out) {
  if (n->at == AT_TS) {
    sb_printf(out, " @ %.3f", (double)n->at_ms / 1000.0);
  } else if (n->at == AT_START) {
    sb_puts(out, " @ start()");
  } else if (n->at == AT_END) {
    sb_puts(out, " @ end()");
  }
  if (n->offset_expr) {
    sb_puts(out, " offset ");
    print_duration_expr(n->offset_expr, 0, out);
  } else if (n->has_offset && n->offset_ms != 0) {
    sb_puts(out, " offset ");
    pql_print_duration(n->offset_ms, out);
  }
}

static void print_selector(const pql_node_t *n, sb_t *out) {
  bool named = n->name && is_plain_name(n->name);
  if (named) sb_puts(out, n->name);
  size_t shown = 0;
  for (size_t i = 0; i < n->nmatchers; i++) {
    const tsdb_matcher_t *m = &n->matchers[i];
    if (named && m->type == TSDB_MATCH_EQ && !strcmp(m->name, "__name__") && !strcmp(m->value, n->name)) continue;
    sb_puts(out, shown ? ", " : "{");
    shown++;
    if (is_plain_name(m->name) && !strchr(m->name, ':')) sb_puts(out, m->name);
    else pql_print_string_literal(m->name, strlen(m->name), out);
    static const char *const ops[] = {"=", "!=", "=~", "!~"};
    sb_puts(out, ops[m->type]);
    pql_print_string_literal(m->value, strlen(m->value), out);
  }
  if (shown) sb_putc(out, '}');
  else if (!named) sb_puts(out, "{}");
  if (n->is_matrix) {
    sb_putc(out, '[');
    print_duration_expr(n->range_expr, n->range_ms, out);
    sb_putc(out, ']');
  }
  print_modifiers(n, out);
  if (n->ext) sb_puts(out, n->ext == EXT_ANCHORED ? " anchored" : " smoothed");
}

static void print_binop_head(const pql_node_t *n, sb_t *out) {
  sb_puts(out, pql_op_name(n->op));
  if (n->return_bool) sb_puts(out, " bool");
  if (n->has_matching && (n->nmlabels || n->on)) {
    sb_puts(out, n->on ? " on (" : " ignoring (");
    print_labels(n->mlabels, n->nmlabels, out);
    sb_putc(out, ')');
    if (n->card == CARD_MANY_TO_ONE || n->card == CARD_ONE_TO_MANY) {
      sb_puts(out, n->card == CARD_MANY_TO_ONE ? " group_left (" : " group_right (");
      print_labels(n->include, n->ninclude, out);
      sb_putc(out, ')');
    }
  }
  bool same = n->fill_left && n->fill_right &&
              (n->fill_left_value == n->fill_right_value || (isnan(n->fill_left_value) && isnan(n->fill_right_value)));
  if (same) {
    sb_puts(out, " fill (");
    print_number(n->fill_left_value, out);
    sb_putc(out, ')');
    return;
  }
  if (n->fill_left) {
    sb_puts(out, " fill_left (");
    print_number(n->fill_left_value, out);
    sb_putc(out, ')');
  }
  if (n->fill_right) {
    sb_puts(out, " fill_right (");
    print_number(n->fill_right_value, out);
    sb_putc(out, ')');
  }
}

static void print_agg_head(const pql_node_t *n, sb_t *out) {
  sb_puts(out, pql_agg_name(n->op));
  if (n->without) {
    sb_puts(out, " without (");
    print_labels(n->grouping, n->ngrouping, out);
    sb_puts(out, ") ");
  } else if (n->ngrouping) {
    sb_puts(out, " by (");
    print_labels(n->grouping, n->ngrouping, out);
    sb_puts(out, ") ");
  }
}

void pql_print_node(const pql_node_t *n, sb_t *out) {
  switch (n->kind) {
  case N_NUM: print_number(n->num, out); break;
  case N_STR: pql_print_string_literal(n->str, n->slen, out); break;
  case N_PAREN:
    sb_putc(out, '(');
    pql_print_node(n->a, out);
    sb_putc(out, ')');
    break;
  case N_UNARY:
    sb_puts(out, pql_op_name(n->op));
    pql_print_node(n->a, out);
    break;
  case N_BIN:
    pql_print_node(n->a, out);
    sb_putc(out, ' ');
    print_binop_head(n, out);
    sb_putc(out, ' ');
    pql_print_node(n->b, out);
    break;
  case N_AGG:
    print_agg_head(n, out);
    sb_putc(out, '(');
    if (n->b) {
      pql_print_node(n->b, out);
      sb_puts(out, ", ");
    }
    pql_print_node(n->a, out);
    sb_putc(out, ')');
    break;
  case N_CALL:
    sb_puts(out, n->func->name);
    sb_putc(out, '(');
    for (size_t i = 0; i < n->nargs; i++) {
      if (i) sb_puts(out, ", ");
      pql_print_node(n->args[i], out);
    }
    sb_putc(out, ')');
    break;
  case N_SEL: print_selector(n, out); break;
  case N_SUBQ:
    pql_print_node(n->a, out);
    sb_putc(out, '[');
    print_duration_expr(n->range_expr, n->range_ms, out);
    sb_putc(out, ':');
    if (n->step_expr || n->step_ms) print_duration_expr(n->step_expr, n->step_ms, out);
    sb_putc(out, ']');
    print_modifiers(n, out);
    break;
  }
}

void promql_expr_string(const promql_expr_t *e, sb_t *out) { pql_print_node(e->root, out); }

/* ---- pretty form ------------------------------------------------------------------------ */

#define PRETTY_WIDTH 100

static void indent(sb_t *out, int level) {
  for (int i = 0; i < level; i++) sb_puts(out, "  ");
}

static size_t flat_len(const pql_node_t *n) {
  sb_t sb = {0};
  pql_print_node(n, &sb);
  size_t l = sb.len;
  sb_free(&sb);
  return l;
}

static void pretty(const pql_node_t *n, int level, sb_t *out) {
  if (n->kind == N_NUM || n->kind == N_STR || n->kind == N_SEL ||
      flat_len(n) + (size_t)level * 2 <= PRETTY_WIDTH) {
    indent(out, level);
    pql_print_node(n, out);
    return;
  }
  switch (n->kind) {
  case N_PAREN:
    indent(out, level);
    sb_puts(out, "(\n");
    pretty(n->a, level + 1, out);
    sb_putc(out, '\n');
    indent(out, level);
    sb_putc(out, ')');
    break;
  case N_UNARY:
    indent(out, level);
    sb_puts(out, pql_op_name(n->op));
    sb_putc(out, '\n');
    pretty(n->a, level, out);
    break;
  case N_BIN:
    pretty(n->a, level + 1, out);
    sb_putc(out, '\n');
    indent(out, level);
    print_binop_head(n, out);
    sb_putc(out, '\n');
    pretty(n->b, level + 1, out);
    break;
  case N_AGG:
    indent(out, level);
    print_agg_head(n, out);
    sb_puts(out, "(\n");
    if (n->b) {
      pretty(n->b, level + 1, out);
      sb_puts(out, ",\n");
    }
    pretty(n->a, level + 1, out);
    sb_putc(out, '\n');
    indent(out, level);
    sb_putc(out, ')');
    break;
  case N_CALL:
    indent(out, level);
    sb_puts(out, n->func->name);
    sb_puts(out, "(\n");
    for (size_t i = 0; i < n->nargs; i++) {
      pretty(n->args[i], level + 1, out);
      sb_puts(out, i + 1 < n->nargs ? ",\n" : "\n");
    }
    indent(out, level);
    sb_putc(out, ')');
    break;
  case N_SUBQ:
    pretty(n->a, level, out);
    sb_putc(out, '[');
    print_duration_expr(n->range_expr, n->range_ms, out);
    sb_putc(out, ':');
    if (n->step_expr || n->step_ms) print_duration_expr(n->step_expr, n->step_ms, out);
    sb_putc(out, ']');
    print_modifiers(n, out);
    break;
  default:
    indent(out, level);
    pql_print_node(n, out);
  }
}

void promql_format(const promql_expr_t *e, sb_t *out) { pretty(e->root, 0, out); }
