/* A compiler and interpreter for the Go text/template subset used in Prometheus rules.
 * Templates compile into a small tree (text, action, if) held in one arena; execution walks
 * it with a per-call arena for intermediate strings. See template.h for the subset. */
#include "template.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- tree -------------------------------------------------------------------------- */

typedef enum {
  ARG_STR,
  ARG_NUM,
  ARG_BOOL,
  ARG_VALUE,
  ARG_LABEL,
  ARG_EXTLABEL,
  ARG_LABELS,
  ARG_FUNC,
  ARG_PIPE
} arg_kind_t;

typedef struct pipe pipe_t;

typedef struct arg {
  arg_kind_t kind;
  const char *s; /* string literal, label name, or function name */
  size_t slen;
  double num;
  pipe_t *pipe; /* parenthesised pipeline */
} arg_t;

typedef struct cmd {
  arg_t *args;
  size_t nargs;
} cmd_t;

struct pipe {
  cmd_t *cmds;
  size_t ncmds;
};

typedef enum { NODE_TEXT, NODE_ACTION, NODE_IF } node_kind_t;

typedef struct node {
  node_kind_t kind;
  const char *text;
  size_t len;
  pipe_t *pipe;
  struct node *then_list, *else_list; /* for IF: linked lists */
  struct node *next;
} node_t;

struct tmpl {
  arena_t *arena;
  node_t *root;
  int is_static;
};

/* ---- parser ------------------------------------------------------------------------ */

typedef struct {
  const char *src;
  size_t n, pos;
  arena_t *a;
  char *err;
  size_t errlen;
  int failed;
} parser_t;

static int fail(parser_t *p, const char *fmt, const char *detail, size_t dlen) {
  if (!p->failed) {
    char d[64];
    size_t k = dlen < sizeof d - 1 ? dlen : sizeof d - 1;
    memcpy(d, detail ? detail : "", detail ? k : 0);
    d[detail ? k : 0] = 0;
    char msg[256];
    snprintf(msg, sizeof msg, fmt, d);
    md_error(p->err, p->errlen, MD_EINVAL, "template: %s (at offset %zu)", msg, p->pos);
  }
  p->failed = 1;
  return MD_EINVAL;
}

/* An action's inner text, already cut out of the source. */
typedef struct {
  const char *s;
  size_t n, i;
} lex_t;

static void skip_ws(lex_t *l) {
  while (l->i < l->n && isspace((unsigned char)l->s[l->i]))
    l->i++;
}

static const char *const known_funcs[] = {"humanize",
                                          "humanize1024",
                                          "humanizePercentage",
                                          "humanizeDuration",
                                          "humanizeTimestamp",
                                          "printf",
                                          "toUpper",
                                          "toLower",
                                          "title",
                                          "eq",
                                          "ne",
                                          "lt",
                                          "le",
                                          "gt",
                                          "ge",
                                          "and",
                                          "or",
                                          "not",
                                          "len",
                                          "match",
                                          "print",
                                          "safeHtml",
                                          "stripPort",
                                          "reReplaceAll",
                                          NULL};

static int is_ident_char(char c) {
  return isalnum((unsigned char)c) || c == '_';
}

static pipe_t *parse_pipe(parser_t *p, lex_t *l, int in_paren);

static int parse_arg(parser_t *p, lex_t *l, arg_t *a) {
  skip_ws(l);
  if (l->i >= l->n) return fail(p, "unexpected end of action%s", "", 0);
  char c = l->s[l->i];
  const char *start = l->s + l->i;
  memset(a, 0, sizeof *a);
  if (c == '"' || c == '`') {
    sb_t sb = {0};
    l->i++;
    if (c == '`') {
      size_t b = l->i;
      while (l->i < l->n && l->s[l->i] != '`')
        l->i++;
      if (l->i >= l->n) return fail(p, "unterminated raw string%s", "", 0);
      sb_append(&sb, l->s + b, l->i - b);
      l->i++;
    } else {
      for (;;) {
        if (l->i >= l->n) {
          sb_free(&sb);
          return fail(p, "unterminated string%s", "", 0);
        }
        char d = l->s[l->i++];
        if (d == '"') break;
        if (d == '\\' && l->i < l->n) {
          char e = l->s[l->i++];
          switch (e) {
          case 'n':
            sb_putc(&sb, '\n');
            break;
          case 't':
            sb_putc(&sb, '\t');
            break;
          case '\\':
            sb_putc(&sb, '\\');
            break;
          case '"':
            sb_putc(&sb, '"');
            break;
          default:
            sb_putc(&sb, '\\');
            sb_putc(&sb, e);
          }
        } else {
          sb_putc(&sb, d);
        }
      }
    }
    a->kind = ARG_STR;
    a->s = arena_strndup(p->a, sb.buf ? sb.buf : "", sb.len);
    a->slen = sb.len;
    sb_free(&sb);
    return a->s ? 0 : MD_ENOMEM;
  }
  if (isdigit((unsigned char)c) || ((c == '-' || c == '+' || c == '.') && l->i + 1 < l->n &&
                                    (isdigit((unsigned char)l->s[l->i + 1]) || l->s[l->i + 1] == '.'))) {
    char buf[64];
    size_t k = 0;
    while (l->i < l->n && k < sizeof buf - 1 &&
           (isalnum((unsigned char)l->s[l->i]) || strchr("+-.", l->s[l->i])))
      buf[k++] = l->s[l->i++];
    buf[k] = 0;
    char *end;
    a->num = strtod(buf, &end);
    if (*end) return fail(p, "bad number %s", buf, k);
    a->kind = ARG_NUM;
    return 0;
  }
  if (c == '(') {
    l->i++;
    a->kind = ARG_PIPE;
    a->pipe = parse_pipe(p, l, 1);
    return a->pipe ? 0 : MD_EINVAL;
  }
  if (c == '$' || c == '.') {
    size_t b = l->i;
    l->i++;
    while (l->i < l->n && (is_ident_char(l->s[l->i]) || l->s[l->i] == '.'))
      l->i++;
    const char *w = l->s + b;
    size_t wn = l->i - b;
    struct {
      const char *prefix;
      arg_kind_t kind;
    } maps[] = {{"$labels.", ARG_LABEL},
                {".Labels.", ARG_LABEL},
                {"$externalLabels.", ARG_EXTLABEL},
                {".ExternalLabels.", ARG_EXTLABEL}};
    for (size_t i = 0; i < 4; i++) {
      size_t pl = strlen(maps[i].prefix);
      if (wn > pl && memcmp(w, maps[i].prefix, pl) == 0) {
        a->kind = maps[i].kind;
        a->s = arena_strndup(p->a, w + pl, wn - pl);
        a->slen = wn - pl;
        return a->s ? 0 : MD_ENOMEM;
      }
    }
    if ((wn == 6 && memcmp(w, "$value", 6) == 0) || (wn == 6 && memcmp(w, ".Value", 6) == 0)) {
      a->kind = ARG_VALUE;
      return 0;
    }
    if ((wn == 7 && memcmp(w, "$labels", 7) == 0) || (wn == 7 && memcmp(w, ".Labels", 7) == 0)) {
      a->kind = ARG_LABELS;
      return 0;
    }
    return fail(p, "unsupported variable or field %s", w, wn);
  }
  if (isalpha((unsigned char)c)) {
    size_t b = l->i;
    while (l->i < l->n && is_ident_char(l->s[l->i]))
      l->i++;
    size_t wn = l->i - b;
    if (wn == 4 && memcmp(start, "true", 4) == 0) {
      a->kind = ARG_BOOL;
      a->num = 1;
      return 0;
    }
    if (wn == 5 && memcmp(start, "false", 5) == 0) {
      a->kind = ARG_BOOL;
      return 0;
    }
    for (size_t i = 0; known_funcs[i]; i++) {
      if (strlen(known_funcs[i]) == wn && memcmp(known_funcs[i], start, wn) == 0) {
        a->kind = ARG_FUNC;
        a->s = known_funcs[i];
        a->slen = wn;
        return 0;
      }
    }
    return fail(p, "unsupported function or keyword %s", start, wn);
  }
  return fail(p, "unexpected character %s", start, 1);
}

static pipe_t *parse_pipe(parser_t *p, lex_t *l, int in_paren) {
  pipe_t *pp = arena_calloc(p->a, sizeof *pp);
  cmd_t cmds[16];
  size_t ncmds = 0;
  for (;;) {
    arg_t args[16];
    size_t nargs = 0;
    for (;;) {
      skip_ws(l);
      if (l->i >= l->n) break;
      char c = l->s[l->i];
      if (c == '|' || (c == ')' && in_paren)) break;
      if (c == ')') {
        fail(p, "unexpected )%s", "", 0);
        return NULL;
      }
      if (nargs == 16) {
        fail(p, "too many arguments%s", "", 0);
        return NULL;
      }
      if (parse_arg(p, l, &args[nargs])) return NULL;
      nargs++;
    }
    if (nargs == 0) {
      fail(p, "empty command%s", "", 0);
      return NULL;
    }
    if (ncmds == 16) {
      fail(p, "pipeline too long%s", "", 0);
      return NULL;
    }
    cmds[ncmds].args = arena_alloc(p->a, nargs * sizeof(arg_t));
    if (!cmds[ncmds].args) return NULL;
    memcpy(cmds[ncmds].args, args, nargs * sizeof(arg_t));
    cmds[ncmds].nargs = nargs;
    ncmds++;
    skip_ws(l);
    if (l->i < l->n && l->s[l->i] == '|') {
      l->i++;
      continue;
    }
    if (in_paren) {
      if (l->i >= l->n || l->s[l->i] != ')') {
        fail(p, "missing )%s", "", 0);
        return NULL;
      }
      l->i++;
    }
    break;
  }
  pp->cmds = arena_alloc(p->a, ncmds * sizeof(cmd_t));
  if (!pp->cmds) return NULL;
  memcpy(pp->cmds, cmds, ncmds * sizeof(cmd_t));
  pp->ncmds = ncmds;
  return pp;
}

typedef enum { END_EOF, END_END, END_ELSE, END_ELSE_IF } list_end_t;

/* Parses nodes until {{end}}/{{else}} or EOF; *endkind says which stopped it. For ELSE_IF,
 * *elseif_pipe receives the condition. */
static node_t *parse_list(parser_t *p, list_end_t *endkind, pipe_t **elseif_pipe) {
  node_t *head = NULL, **tail = &head;
  *endkind = END_EOF;
  while (p->pos < p->n && !p->failed) {
    const char *open = NULL;
    for (size_t i = p->pos; i + 1 < p->n; i++) {
      if (p->src[i] == '{' && p->src[i + 1] == '{') {
        open = p->src + i;
        break;
      }
    }
    size_t text_end = open ? (size_t)(open - p->src) : p->n;
    size_t action_start = text_end + 2;
    int trim_left = 0, trim_right = 0;
    if (open && action_start + 1 < p->n && p->src[action_start] == '-' &&
        isspace((unsigned char)p->src[action_start + 1])) {
      trim_left = 1;
      action_start++;
    }
    size_t tlen = text_end - p->pos;
    if (trim_left)
      while (tlen > 0 && isspace((unsigned char)p->src[p->pos + tlen - 1]))
        tlen--;
    if (tlen > 0) {
      node_t *t = arena_calloc(p->a, sizeof *t);
      if (!t) return NULL;
      t->kind = NODE_TEXT;
      t->text = p->src + p->pos;
      t->len = tlen;
      *tail = t;
      tail = &t->next;
    }
    if (!open) {
      p->pos = p->n;
      break;
    }
    /* Find the closing }} . */
    size_t close = (size_t)-1;
    for (size_t i = action_start; i + 1 < p->n; i++) {
      if (p->src[i] == '}' && p->src[i + 1] == '}') {
        close = i;
        break;
      }
    }
    p->pos = action_start;
    if (close == (size_t)-1) {
      fail(p, "unclosed action%s", "", 0);
      return NULL;
    }
    size_t inner_end = close;
    if (inner_end > action_start && p->src[inner_end - 1] == '-' && inner_end - 1 > action_start &&
        isspace((unsigned char)p->src[inner_end - 2])) {
      trim_right = 1;
      inner_end--;
    }
    lex_t l = {p->src + action_start, inner_end - action_start, 0};
    p->pos = close + 2;
    if (trim_right)
      while (p->pos < p->n && isspace((unsigned char)p->src[p->pos]))
        p->pos++;
    skip_ws(&l);
    if (l.i + 1 < l.n && l.s[l.i] == '/' && l.s[l.i + 1] == '*') continue; /* comment */
    size_t wb = l.i;
    while (l.i < l.n && is_ident_char(l.s[l.i]))
      l.i++;
    size_t wn = l.i - wb;
    const char *w = l.s + wb;
    if (wn == 3 && memcmp(w, "end", 3) == 0) {
      *endkind = END_END;
      return head;
    }
    if (wn == 4 && memcmp(w, "else", 4) == 0) {
      skip_ws(&l);
      if (l.n - l.i >= 2 && memcmp(l.s + l.i, "if", 2) == 0 &&
          (l.n - l.i == 2 || isspace((unsigned char)l.s[l.i + 2]))) {
        l.i += 2;
        *elseif_pipe = parse_pipe(p, &l, 0);
        if (!*elseif_pipe) return NULL;
        *endkind = END_ELSE_IF;
        return head;
      }
      *endkind = END_ELSE;
      return head;
    }
    if (wn == 2 && memcmp(w, "if", 2) == 0) {
      node_t *n = arena_calloc(p->a, sizeof *n);
      if (!n) return NULL;
      n->kind = NODE_IF;
      n->pipe = parse_pipe(p, &l, 0);
      if (!n->pipe) return NULL;
      *tail = n;
      tail = &n->next;
      /* Parse then-branch, then chains of else-if / else. */
      node_t *cur = n;
      for (;;) {
        list_end_t ek;
        pipe_t *eip = NULL;
        cur->then_list = parse_list(p, &ek, &eip);
        if (p->failed) return NULL;
        if (ek == END_END) break;
        if (ek == END_EOF) {
          fail(p, "missing {{end}}%s", "", 0);
          return NULL;
        }
        if (ek == END_ELSE) {
          list_end_t ek2;
          pipe_t *dummy = NULL;
          cur->else_list = parse_list(p, &ek2, &dummy);
          if (p->failed) return NULL;
          if (ek2 != END_END) {
            fail(p, "missing {{end}} after {{else}}%s", "", 0);
            return NULL;
          }
          break;
        }
        /* else if: a nested IF node as the else branch */
        node_t *nested = arena_calloc(p->a, sizeof *nested);
        if (!nested) return NULL;
        nested->kind = NODE_IF;
        nested->pipe = eip;
        cur->else_list = nested;
        cur = nested;
      }
      continue;
    }
    if ((wn == 5 && memcmp(w, "range", 5) == 0) || (wn == 4 && memcmp(w, "with", 4) == 0) ||
        (wn == 6 && memcmp(w, "define", 6) == 0) || (wn == 8 && memcmp(w, "template", 8) == 0) ||
        (wn == 5 && memcmp(w, "block", 5) == 0)) {
      fail(p, "unsupported template action {{%s}}", w, wn);
      return NULL;
    }
    l.i = wb;
    node_t *a = arena_calloc(p->a, sizeof *a);
    if (!a) return NULL;
    a->kind = NODE_ACTION;
    a->pipe = parse_pipe(p, &l, 0);
    if (!a->pipe) return NULL;
    *tail = a;
    tail = &a->next;
  }
  return head;
}

int tmpl_compile(const char *text, size_t n, tmpl_t **out, char *err, size_t errlen) {
  tmpl_t *t = calloc(1, sizeof *t);
  if (!t) return MD_ENOMEM;
  t->arena = arena_new(4096);
  char *copy = t->arena ? arena_strndup(t->arena, text, n) : NULL;
  if (!copy) {
    tmpl_free(t);
    return MD_ENOMEM;
  }
  parser_t p = {copy, n, 0, t->arena, err, errlen, 0};
  list_end_t ek;
  pipe_t *eip = NULL;
  t->root = parse_list(&p, &ek, &eip);
  if (!p.failed && ek != END_EOF) fail(&p, "unexpected {{end}} or {{else}}%s", "", 0);
  if (p.failed) {
    tmpl_free(t);
    return MD_EINVAL;
  }
  t->is_static = memmem(text, n, "{{", 2) == NULL;
  *out = t;
  return 0;
}

void tmpl_free(tmpl_t *t) {
  if (!t) return;
  arena_free(t->arena);
  free(t);
}

int tmpl_is_static(const tmpl_t *t) {
  return t->is_static;
}

/* ---- execution --------------------------------------------------------------------- */

typedef enum { VAL_NONE, VAL_STR, VAL_NUM, VAL_BOOL, VAL_MAP } val_kind_t;
typedef struct {
  val_kind_t kind;
  const char *s;
  size_t n;
  double num;
} val_t;

typedef struct {
  const tmpl_data_t *d;
  arena_t *a;
  char *err;
  size_t errlen;
  int failed;
} exec_t;

static int xfail(exec_t *x, const char *msg, const char *fn) {
  if (!x->failed) md_error(x->err, x->errlen, MD_EINVAL, "template: %s: %s", fn, msg);
  x->failed = 1;
  return MD_EINVAL;
}

static val_t vstr(exec_t *x, const char *s, size_t n) {
  val_t v = {VAL_STR, arena_strndup(x->a, s, n), n, 0};
  if (!v.s) v.n = 0, v.s = "";
  return v;
}

static val_t vfmt(exec_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static val_t vfmt(exec_t *x, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  return vstr(x, buf, (size_t)n);
}

static const char *find_label(const tsdb_label_t *ls, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ls[i].name, name) == 0) return ls[i].value;
  return "";
}

/* Renders a value the way Go's fmt prints it with %v. */
static void render(sb_t *sb, val_t v) {
  switch (v.kind) {
  case VAL_STR:
    sb_append(sb, v.s, v.n);
    break;
  case VAL_NUM:
    if (isinf(v.num))
      sb_puts(sb, v.num > 0 ? "+Inf" : "-Inf");
    else
      sb_double(sb, v.num);
    break;
  case VAL_BOOL:
    sb_puts(sb, v.num ? "true" : "false");
    break;
  case VAL_MAP:
    sb_puts(sb, "map[...]");
    break;
  default:
    sb_puts(sb, "<no value>");
  }
}

static double to_num(val_t v, int *ok) {
  *ok = 1;
  if (v.kind == VAL_NUM || v.kind == VAL_BOOL) return v.num;
  if (v.kind == VAL_STR) {
    char buf[64];
    size_t k = v.n < 63 ? v.n : 63;
    memcpy(buf, v.s, k);
    buf[k] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (end != buf && *end == 0) return d;
  }
  *ok = 0;
  return 0;
}

static int truthy(val_t v) {
  switch (v.kind) {
  case VAL_STR:
    return v.n > 0;
  case VAL_NUM:
  case VAL_BOOL:
    return v.num != 0;
  case VAL_MAP:
    return 1;
  default:
    return 0;
  }
}

static val_t humanize(exec_t *x, double v, int base1024) {
  if (v == 0 || isnan(v) || isinf(v)) return vfmt(x, "%.4g", v);
  if (base1024) {
    static const char *const p[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"};
    if (fabs(v) <= 1) return vfmt(x, "%.4g", v);
    int i = 0;
    while (fabs(v) >= 1024 && i < 8)
      v /= 1024, i++;
    return vfmt(x, "%.4g%s", v, p[i]);
  }
  if (fabs(v) >= 1) {
    static const char *const p[] = {"", "k", "M", "G", "T", "P", "E", "Z", "Y"};
    int i = 0;
    while (fabs(v) >= 1000 && i < 8)
      v /= 1000, i++;
    return vfmt(x, "%.4g%s", v, p[i]);
  }
  static const char *const p[] = {"", "m", "u", "n", "p", "f", "a", "z", "y"};
  int i = 0;
  while (fabs(v) < 1 && i < 8)
    v *= 1000, i++;
  return vfmt(x, "%.4g%s", v, p[i]);
}

static val_t humanize_duration(exec_t *x, double v) {
  if (isnan(v) || isinf(v)) return vfmt(x, "%.4g", v);
  if (v == 0) return vstr(x, "0s", 2);
  if (fabs(v) >= 9e18) return vfmt(x, "%.4gs", v); /* past long long: no day/hour split */
  if (fabs(v) >= 1) {
    const char *sign = v < 0 ? "-" : "";
    v = fabs(v);
    long long d = (long long)v;
    long long s = d % 60, m = (d / 60) % 60, h = (d / 3600) % 24, days = d / 86400;
    if (days) return vfmt(x, "%s%lldd %lldh %lldm %llds", sign, days, h, m, s);
    if (h) return vfmt(x, "%s%lldh %lldm %llds", sign, h, m, s);
    if (m) return vfmt(x, "%s%lldm %llds", sign, m, s);
    return vfmt(x, "%s%.4gs", sign, v);
  }
  static const char *const p[] = {"", "m", "u", "n", "p", "f", "a", "z", "y"};
  int i = 0;
  while (fabs(v) < 1 && i < 8)
    v *= 1000, i++;
  return vfmt(x, "%.4g%ss", v, p[i]);
}

/* Go-style printf: verbs %s %v %d %f %e %g %x %q %t %%, flags, width and precision. */
static val_t go_printf(exec_t *x, const val_t *args, size_t nargs) {
  if (nargs == 0 || args[0].kind != VAL_STR) {
    xfail(x, "first argument must be a format string", "printf");
    return (val_t){0};
  }
  sb_t out = {0};
  const char *f = args[0].s;
  size_t fn = args[0].n, ai = 1;
  for (size_t i = 0; i < fn; i++) {
    if (f[i] != '%') {
      sb_putc(&out, f[i]);
      continue;
    }
    size_t b = i++;
    while (i < fn && strchr("+-# 0", f[i]))
      i++;
    while (i < fn && (isdigit((unsigned char)f[i]) || f[i] == '.'))
      i++;
    if (i >= fn) break;
    char verb = f[i];
    if (verb == '%') {
      sb_putc(&out, '%');
      continue;
    }
    char spec[32];
    size_t sl = i - b;
    if (sl > 20) sl = 20;
    memcpy(spec, f + b, sl);
    if (ai >= nargs) {
      sb_printf(&out, "%%!%c(MISSING)", verb);
      continue;
    }
    val_t a = args[ai++];
    int ok;
    switch (verb) {
    case 'd':
    case 'x':
    case 'X':
    case 'o':
    case 'c': {
      double d = to_num(a, &ok);
      spec[sl] = 'l';
      spec[sl + 1] = 'l';
      spec[sl + 2] = verb == 'c' ? 'd' : verb;
      spec[sl + 3] = 0;
      if (!ok)
        sb_printf(&out, "%%!%c(string=%.*s)", verb, (int)a.n, a.s);
      else if (!(d > -9e18 && d < 9e18))
        sb_printf(&out, "%%!%c(float64=%g)", verb, d); /* no integer */
      else
        sb_printf(&out, spec, (long long)d);
      break;
    }
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G': {
      double d = to_num(a, &ok);
      spec[sl] = verb;
      spec[sl + 1] = 0;
      if (!ok)
        sb_printf(&out, "%%!%c(string=%.*s)", verb, (int)a.n, a.s);
      else
        sb_printf(&out, spec, d);
      break;
    }
    case 's':
    case 'v':
    case 'q':
    case 't': {
      sb_t tmp = {0};
      render(&tmp, a);
      if (verb == 'q') {
        sb_json_str(&out, tmp.buf ? tmp.buf : "", tmp.len);
      } else {
        spec[sl] = 's';
        spec[sl + 1] = 0;
        sb_printf(&out, spec, tmp.buf ? tmp.buf : "");
      }
      sb_free(&tmp);
      break;
    }
    default:
      sb_printf(&out, "%%!%c(BADVERB)", verb);
    }
  }
  val_t r = vstr(x, out.buf ? out.buf : "", out.len);
  sb_free(&out);
  return r;
}

static int compare(exec_t *x, const char *fn, val_t a, val_t b, int *cmp) {
  int oka, okb;
  if (a.kind == VAL_STR && b.kind == VAL_STR) {
    size_t m = a.n < b.n ? a.n : b.n;
    int c = memcmp(a.s, b.s, m);
    *cmp = c ? c : (a.n > b.n) - (a.n < b.n);
    return 0;
  }
  double da = to_num(a, &oka), db = to_num(b, &okb);
  if (!oka || !okb) return xfail(x, "incompatible types for comparison", fn);
  *cmp = (da > db) - (da < db);
  return 0;
}

static val_t eval_pipe(exec_t *x, const pipe_t *p);

static val_t eval_arg(exec_t *x, const arg_t *a) {
  switch (a->kind) {
  case ARG_STR:
    return (val_t){VAL_STR, a->s, a->slen, 0};
  case ARG_NUM:
    return (val_t){VAL_NUM, NULL, 0, a->num};
  case ARG_BOOL:
    return (val_t){VAL_BOOL, NULL, 0, a->num};
  case ARG_VALUE:
    return (val_t){VAL_NUM, NULL, 0, x->d->value};
  case ARG_LABEL: {
    const char *v = find_label(x->d->labels, x->d->nlabels, a->s);
    return (val_t){VAL_STR, v, strlen(v), 0};
  }
  case ARG_EXTLABEL: {
    const char *v = find_label(x->d->external, x->d->nexternal, a->s);
    return (val_t){VAL_STR, v, strlen(v), 0};
  }
  case ARG_LABELS:
    return (val_t){VAL_MAP, NULL, 0, 0};
  case ARG_PIPE:
    return eval_pipe(x, a->pipe);
  default:
    return (val_t){0};
  }
}

static val_t call(exec_t *x, const char *fn, val_t *args, size_t n) {
  int ok = 1;
#define NEED(k)                                                                                              \
  do {                                                                                                       \
    if (n != (k)) {                                                                                          \
      xfail(x, "wrong number of arguments", fn);                                                             \
      return (val_t){0};                                                                                     \
    }                                                                                                        \
  } while (0)
  if (!strcmp(fn, "printf")) return go_printf(x, args, n);
  if (!strcmp(fn, "print")) {
    sb_t sb = {0};
    for (size_t i = 0; i < n; i++)
      render(&sb, args[i]);
    val_t r = vstr(x, sb.buf ? sb.buf : "", sb.len);
    sb_free(&sb);
    return r;
  }
  if (!strcmp(fn, "and") || !strcmp(fn, "or")) {
    if (n == 0) {
      xfail(x, "wrong number of arguments", fn);
      return (val_t){0};
    }
    int is_and = fn[0] == 'a';
    for (size_t i = 0; i < n; i++)
      if (truthy(args[i]) != is_and) return args[i];
    return args[n - 1];
  }
  if (!strcmp(fn, "not")) {
    NEED(1);
    return (val_t){VAL_BOOL, NULL, 0, !truthy(args[0])};
  }
  if (!strcmp(fn, "eq") || !strcmp(fn, "ne") || !strcmp(fn, "lt") || !strcmp(fn, "le") || !strcmp(fn, "gt") ||
      !strcmp(fn, "ge")) {
    NEED(2);
    int c;
    if (compare(x, fn, args[0], args[1], &c)) return (val_t){0};
    int r = !strcmp(fn, "eq")   ? c == 0
            : !strcmp(fn, "ne") ? c != 0
            : !strcmp(fn, "lt") ? c < 0
            : !strcmp(fn, "le") ? c <= 0
            : !strcmp(fn, "gt") ? c > 0
                                : c >= 0;
    return (val_t){VAL_BOOL, NULL, 0, r};
  }
  NEED(fn[0] == 'm' || fn[0] == 'r' ? (fn[0] == 'r' ? 3 : 2) : 1);
  if (!strcmp(fn, "toUpper") || !strcmp(fn, "toLower") || !strcmp(fn, "title")) {
    sb_t sb = {0};
    render(&sb, args[0]);
    for (size_t i = 0; i < sb.len; i++) {
      if (fn[2] == 'U')
        sb.buf[i] = (char)toupper((unsigned char)sb.buf[i]);
      else if (fn[2] == 'L')
        sb.buf[i] = (char)tolower((unsigned char)sb.buf[i]);
      else if (i == 0 || !isalnum((unsigned char)sb.buf[i - 1]))
        sb.buf[i] = (char)toupper((unsigned char)sb.buf[i]);
    }
    val_t r = vstr(x, sb.buf ? sb.buf : "", sb.len);
    sb_free(&sb);
    return r;
  }
  if (!strcmp(fn, "len")) return (val_t){VAL_NUM, NULL, 0, (double)(args[0].kind == VAL_STR ? args[0].n : 0)};
  if (!strcmp(fn, "safeHtml")) return args[0];
  if (!strcmp(fn, "stripPort")) {
    const char *c = memrchr(args[0].s ? args[0].s : "", ':', args[0].n);
    return c ? vstr(x, args[0].s, (size_t)(c - args[0].s)) : args[0];
  }
  if (!strcmp(fn, "match") || !strcmp(fn, "reReplaceAll")) {
    if (args[0].kind != VAL_STR || args[1].kind != VAL_STR) {
      xfail(x, "arguments must be strings", fn);
      return (val_t){0};
    }
    if (fn[0] == 'r') {
      xfail(x, "not supported", fn);
      return (val_t){0};
    }
    /* Go's regexp.MatchString is unanchored. */
    core_regex_t *re;
    sb_t pat = {0};
    sb_puts(&pat, ".*(?:");
    sb_append(&pat, args[0].s, args[0].n);
    sb_puts(&pat, ").*");
    char e[128];
    int rc = core_regex_compile(pat.buf ? pat.buf : "", pat.len, &re, e, sizeof e);
    sb_free(&pat);
    if (rc) {
      xfail(x, e, fn);
      return (val_t){0};
    }
    int m = core_regex_match(re, args[1].s, args[1].n);
    core_regex_free(re);
    return (val_t){VAL_BOOL, NULL, 0, m};
  }
  double v = to_num(args[0], &ok);
  if (!ok) {
    xfail(x, "argument is not a number", fn);
    return (val_t){0};
  }
  if (!strcmp(fn, "humanize")) return humanize(x, v, 0);
  if (!strcmp(fn, "humanize1024")) return humanize(x, v, 1);
  if (!strcmp(fn, "humanizePercentage")) return vfmt(x, "%.4g%%", v * 100);
  if (!strcmp(fn, "humanizeDuration")) return humanize_duration(x, v);
  if (!strcmp(fn, "humanizeTimestamp")) {
    /* Beyond year 9999 (or before year 0) there is no RFC 3339 form: print the number. */
    if (!(v >= -62167219200.0 && v <= 253402300799.0)) return vfmt(x, "%.4g", v);
    char ts[32];
    md_format_rfc3339((int64_t)llround(v * 1000), ts);
    /* Go prints "2006-01-02 15:04:05.999 +0000 UTC" */
    ts[10] = ' ';
    size_t l = strlen(ts);
    if (l && ts[l - 1] == 'Z') ts[l - 1] = 0;
    return vfmt(x, "%s +0000 UTC", ts);
  }
  xfail(x, "unknown function", fn);
  return (val_t){0};
#undef NEED
}

static val_t eval_cmd(exec_t *x, const cmd_t *c, const val_t *piped) {
  if (c->args[0].kind == ARG_FUNC) {
    val_t args[17];
    size_t n = 0;
    for (size_t i = 1; i < c->nargs; i++) {
      args[n++] = eval_arg(x, &c->args[i]);
      if (x->failed) return (val_t){0};
    }
    if (piped) args[n++] = *piped;
    return call(x, c->args[0].s, args, n);
  }
  if (c->nargs > 1 || piped) {
    xfail(x, "can't give arguments to a non-function", "pipeline");
    return (val_t){0};
  }
  return eval_arg(x, &c->args[0]);
}

static val_t eval_pipe(exec_t *x, const pipe_t *p) {
  val_t v = {0};
  for (size_t i = 0; i < p->ncmds && !x->failed; i++)
    v = eval_cmd(x, &p->cmds[i], i ? &v : NULL);
  return v;
}

static void exec_list(exec_t *x, const node_t *n, sb_t *out) {
  for (; n && !x->failed; n = n->next) {
    switch (n->kind) {
    case NODE_TEXT:
      sb_append(out, n->text, n->len);
      break;
    case NODE_ACTION: {
      val_t v = eval_pipe(x, n->pipe);
      if (!x->failed) render(out, v);
      break;
    }
    case NODE_IF: {
      val_t c = eval_pipe(x, n->pipe);
      if (x->failed) return;
      if (truthy(c))
        exec_list(x, n->then_list, out);
      else
        exec_list(x, n->else_list, out);
      break;
    }
    }
  }
}

int tmpl_execute(const tmpl_t *t, const tmpl_data_t *data, sb_t *out, char *err, size_t errlen) {
  exec_t x = {data, arena_new(4096), err, errlen, 0};
  if (!x.a) return MD_ENOMEM;
  exec_list(&x, t->root, out);
  arena_free(x.a);
  return x.failed ? MD_EINVAL : 0;
}
