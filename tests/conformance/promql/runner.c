/*
 * PromQL conformance runner: executes Prometheus's PromQL test files (*.test, the format
 * described in shared/conformance/promql/FORMAT.md) against metricsd's real engine and
 * storage. Data is appended through tsdb_append into a database in a temporary directory;
 * `clear` closes it and opens a fresh one.
 *
 *   promql_conformance [-v] [-c] [-x expected_failures.txt] [-o only_file.test] [-g new_entries.txt] [corpus_dir]
 *
 * -g writes an entry (with a guessed reason, to be reviewed) for every failure that is not
 * listed yet: the way to refresh the list after a corpus re-import. -c classifies every failing
 * eval by re-running it on a shadow store where native-histogram samples are the float 1:
 * "reads native-histogram series" (outcome changes), "expects an annotation" (fails only on an
 * expected warning/info) or "does not depend on histogram series" (a float bug to fix).
 *
 * Checks per eval: the result (or the expected failure), annotations (FORMAT.md §9), and
 * for instant evals the range-mode cross-check (§7.2 step 4). Prints PASS/FAIL per eval,
 * a line per file, and finally "N passed, M failed, K skipped". Exit status 1 when an eval
 * fails that the expected-failures file does not list (key: file name, tab, exact trimmed
 * eval line, optionally "#k" for the k-th occurrence of that line in the file, tab, reason);
 * 77 (ctest's skip) when the corpus directory is absent.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "promql/promql.h"
#include "tsdb/tsdb.h"

/* ---- small helpers ----------------------------------------------------------------------- */

static char *trim(char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
  return s;
}

static bool parse_dur(const char *s, size_t n, int64_t *ms) {
  if (n == 1 && s[0] == '0') { *ms = 0; return true; }
  return md_parse_duration(s, n, ms) == 0 && n > 0 && !strchr(s, '.');
}

typedef struct labels {
  char *name[64];
  char *value[64];
  size_t n;
} labels_t;

static void labels_sort(labels_t *l) {
  for (size_t i = 1; i < l->n; i++)
    for (size_t j = i; j > 0 && strcmp(l->name[j - 1], l->name[j]) > 0; j--) {
      char *t = l->name[j]; l->name[j] = l->name[j - 1]; l->name[j - 1] = t;
      t = l->value[j]; l->value[j] = l->value[j - 1]; l->value[j - 1] = t;
    }
}

static void labels_free(labels_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->name[i]), free(l->value[i]);
  l->n = 0;
}

static bool labels_eq(const labels_t *a, const tsdb_label_t *b, size_t nb) {
  if (a->n != nb) return false;
  for (size_t i = 0; i < nb; i++)
    if (strcmp(a->name[i], b[i].name) || strcmp(a->value[i], b[i].value)) return false;
  return true;
}

static bool labels_same(const labels_t *a, const labels_t *b) {
  if (a->n != b->n) return false;
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->name[i], b->name[i]) || strcmp(a->value[i], b->value[i])) return false;
  return true;
}

/* Reads a quoted string at *p (", ', `) with Go escapes; returns malloc'd value. */
static char *read_quoted(const char **pp) {
  const char *p = *pp;
  char q = *p++;
  sb_t sb = {0};
  while (*p && *p != q) {
    if (q != '`' && *p == '\\' && p[1]) {
      p++;
      switch (*p) {
      case 'n': sb_putc(&sb, '\n'); break;
      case 't': sb_putc(&sb, '\t'); break;
      case 'r': sb_putc(&sb, '\r'); break;
      case '\\': sb_putc(&sb, '\\'); break;
      case '"': sb_putc(&sb, '"'); break;
      case '\'': sb_putc(&sb, '\''); break;
      case 'x': {
        unsigned v = 0;
        for (int k = 0; k < 2 && isxdigit((unsigned char)p[1]); k++, p++) v = v * 16 + (unsigned)(isdigit((unsigned char)p[1]) ? p[1] - '0' : (tolower(p[1]) - 'a' + 10));
        sb_putc(&sb, (char)v);
        break;
      }
      case 'u': {
        unsigned v = 0;
        for (int k = 0; k < 4 && isxdigit((unsigned char)p[1]); k++, p++) v = v * 16 + (unsigned)(isdigit((unsigned char)p[1]) ? p[1] - '0' : (tolower(p[1]) - 'a' + 10));
        if (v < 0x80) sb_putc(&sb, (char)v);
        else if (v < 0x800) { sb_putc(&sb, (char)(0xC0 | (v >> 6))); sb_putc(&sb, (char)(0x80 | (v & 0x3F))); }
        else { sb_putc(&sb, (char)(0xE0 | (v >> 12))); sb_putc(&sb, (char)(0x80 | ((v >> 6) & 0x3F))); sb_putc(&sb, (char)(0x80 | (v & 0x3F))); }
        break;
      }
      default: sb_putc(&sb, *p);
      }
      p++;
      continue;
    }
    sb_putc(&sb, *p++);
  }
  if (*p == q) p++;
  *pp = p;
  if (!sb.buf) return strdup("");
  return sb_steal(&sb);
}

/* Parses "<series> <rest>": returns pointer to the rest, fills labels (sorted). */
static const char *parse_series(const char *p, labels_t *l, bool *ok) {
  *ok = false;
  l->n = 0;
  while (*p && isspace((unsigned char)*p)) p++;
  const char *s = p;
  while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == ':')) p++;
  if (p > s) {
    l->name[l->n] = strdup("__name__");
    l->value[l->n++] = strndup(s, (size_t)(p - s));
  }
  if (*p == '{') {
    p++;
    for (;;) {
      while (*p && isspace((unsigned char)*p)) p++;
      if (*p == '}') { p++; break; }
      if (!*p || l->n >= 64) return p;
      char *name;
      if (*p == '"' || *p == '\'' || *p == '`') name = read_quoted(&p);
      else {
        const char *ns = p;
        while (*p && (isalnum((unsigned char)*p) || *p == '_')) p++;
        name = strndup(ns, (size_t)(p - ns));
      }
      while (*p && isspace((unsigned char)*p)) p++;
      if (*p == ',' || *p == '}') { /* quoted metric name */
        l->name[l->n] = strdup("__name__");
        l->value[l->n++] = name;
        if (*p == ',') p++;
        continue;
      }
      if (*p != '=') { free(name); return p; }
      p++;
      while (*p && isspace((unsigned char)*p)) p++;
      if (*p != '"' && *p != '\'' && *p != '`') { free(name); return p; }
      char *val = read_quoted(&p);
      l->name[l->n] = name;
      l->value[l->n++] = val;
      while (*p && isspace((unsigned char)*p)) p++;
      if (*p == ',') p++;
    }
  }
  /* Empty label values are the same as absent labels. */
  size_t w = 0;
  for (size_t i = 0; i < l->n; i++) {
    if (!*l->value[i]) { free(l->name[i]); free(l->value[i]); continue; }
    l->name[w] = l->name[i], l->value[w++] = l->value[i];
  }
  l->n = w;
  labels_sort(l);
  *ok = true;
  return p;
}

/* A value sequence item list: values with `has` flags. */
typedef struct seq {
  double *v;
  bool *has;
  bool *hist; /* the item is a native histogram (not stored) */
  size_t n, cap;
  bool histogram;
} seq_t;

static void seq_push(seq_t *s, double v, bool has) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 16;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    s->has = realloc(s->has, s->cap * sizeof *s->has);
    s->hist = realloc(s->hist, s->cap * sizeof *s->hist);
  }
  s->v[s->n] = v;
  s->hist[s->n] = false;
  s->has[s->n++] = has;
}

static bool parse_num(const char *s, size_t n, double *out) {
  char buf[128];
  if (n == 0 || n >= sizeof buf) return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  const char *b = buf;
  int sign = 1;
  if (*b == '+' || *b == '-') { if (*b == '-') sign = -1; b++; }
  if (!strcasecmp(b, "inf")) { *out = sign * INFINITY; return true; }
  if (!strcasecmp(b, "nan")) { *out = NAN; return true; }
  char *end;
  *out = strtod(buf, &end);
  return *end == 0;
}

static bool parse_seq(const char *p, seq_t *s) {
  memset(s, 0, sizeof *s);
  while (*p) {
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) break;
    const char *it = p;
    if (*p == '{' && p[1] == '{') {
      s->histogram = true;
      const char *e = strstr(p, "}}");
      if (!e) return false;
      p = e + 2;
      /* histogram items and their x/+/- forms: {{A}}+{{B}}xN */
      if ((*p == '+' || *p == '-') && p[1] == '{' && p[2] == '{') {
        e = strstr(p, "}}");
        if (!e) return false;
        p = e + 2;
      }
      /* {{A}}xN and {{A}}+{{B}}xN stand for N+1 samples */
      long cnt = 0;
      if (*p == 'x' && isdigit((unsigned char)p[1])) cnt = strtol(p + 1, NULL, 10);
      while (*p && !isspace((unsigned char)*p)) p++;
      for (long k = 0; k <= cnt && k < 100000; k++) {
        seq_push(s, 0, false);
        s->hist[s->n - 1] = true;
      }
      continue;
    }
    while (*p && !isspace((unsigned char)*p)) p++;
    size_t n = (size_t)(p - it);
    if (n == 5 && !memcmp(it, "stale", 5)) { seq_push(s, tsdb_stale_nan(), true); continue; }
    if (n == 1 && it[0] == '_') { seq_push(s, 0, false); continue; }
    if (n > 2 && it[0] == '_' && it[1] == 'x') {
      long k = strtol(it + 2, NULL, 10);
      for (long i = 0; i < k; i++) seq_push(s, 0, false);
      continue;
    }
    /* v, vxN, v+dxN, v-dxN. Find the 'x' that separates the count (not in "0x" hex or "Inf"). */
    const char *x = NULL;
    for (const char *q = it + n - 1; q > it; q--) {
      if (*q == 'x') { x = q; break; }
      if (!isdigit((unsigned char)*q)) break;
    }
    if (!x) {
      double v;
      if (!parse_num(it, n, &v)) return false;
      seq_push(s, v, true);
      continue;
    }
    long cnt = strtol(x + 1, NULL, 10);
    /* split base and delta at a + or - that is not the leading sign or an exponent sign */
    const char *op = NULL;
    for (const char *q = it + 1; q < x; q++)
      if ((*q == '+' || *q == '-') && q[-1] != 'e' && q[-1] != 'E') { op = q; break; }
    double base, delta = 0;
    if (!parse_num(it, (size_t)((op ? op : x) - it), &base)) return false;
    if (op && !parse_num(op + 1, (size_t)(x - op - 1), &delta)) return false;
    if (op && *op == '-') delta = -delta;
    double v = base;
    for (long i = 0; i <= cnt; i++) {
      seq_push(s, v, true);
      if (op) v += delta;
    }
  }
  return true;
}

static void seq_free(seq_t *s) { free(s->v); free(s->has); free(s->hist); }

/* ---- float comparison (FORMAT.md §8) ------------------------------------------------------- */

static bool is_stale(double v) {
  uint64_t b;
  memcpy(&b, &v, 8);
  return b == TSDB_STALE_NAN_BITS;
}

static bool float_eq(double e, double a) {
  if (is_stale(e) || is_stale(a)) return is_stale(e) && is_stale(a);
  if (isnan(e) && isnan(a)) return true;
  if (e == a) return true;
  const double minnorm = 2.2250738585072014e-308, eps = 1e-6;
  double ae = fabs(e), aa = fabs(a);
  if (e == 0 || a == 0 || ae + aa < minnorm) return fabs(e - a) < eps * minnorm;
  double denom = fmin(ae + aa, 1.7976931348623157e308);
  return fabs(e - a) / denom < eps;
}

/* ---- storage ------------------------------------------------------------------------------- */

typedef struct store {
  char dir[256];
  tsdb_t *db;
} store_t;

static int store_open(store_t *st) {
  snprintf(st->dir, sizeof st->dir, "/tmp/promql-conf-XXXXXX");
  if (!mkdtemp(st->dir)) return -1;
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.retention_ms = 0;
  o.background = false;
  o.ooo_window_ms = 0;
  o.tier1_resolution_ms = 0;
  o.tier2_resolution_ms = 0;
  char err[256];
  if (tsdb_open(st->dir, &o, &st->db, err, sizeof err) < 0) {
    fprintf(stderr, "tsdb_open: %s\n", err);
    return -1;
  }
  return 0;
}

static void store_close(store_t *st) {
  tsdb_close(st->db);
  st->db = NULL;
  md_rm_rf(st->dir);
}

/* ---- expected failures --------------------------------------------------------------------- */

typedef struct xfail {
  char *key; /* file \t line [#k] */
  bool used;
} xfail_t;

static xfail_t *xfails;
static size_t nxfails;

static void load_xfails(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    char *l = line;
    size_t n = strlen(l);
    while (n && (l[n - 1] == '\n' || l[n - 1] == '\r')) l[--n] = 0;
    if (!*l || *l == '#') continue;
    char *t1 = strchr(l, '\t');
    if (!t1) continue;
    char *t2 = strchr(t1 + 1, '\t');
    if (t2) *t2 = 0;
    xfails = realloc(xfails, (nxfails + 1) * sizeof *xfails);
    xfails[nxfails].key = strdup(l);
    xfails[nxfails++].used = false;
  }
  free(line);
  fclose(f);
}

static bool is_xfail(const char *file, const char *evline, int occ) {
  char key[4096];
  if (occ > 1) snprintf(key, sizeof key, "%s\t%s#%d", file, evline, occ);
  else snprintf(key, sizeof key, "%s\t%s", file, evline);
  for (size_t i = 0; i < nxfails; i++)
    if (!strcmp(xfails[i].key, key)) { xfails[i].used = true; return true; }
  return false;
}

/* ---- eval ---------------------------------------------------------------------------------- */

typedef struct expect_series {
  labels_t l;
  seq_t s;
} expect_series_t;

typedef struct eval_case {
  bool range, is_fail, ordered, has_scalar, has_string, range_vector;
  bool want_warn, want_info, no_warn, no_info;
  char *warn_msgs[8]; bool warn_re[8]; int nwarn_msgs;
  char *info_msgs[8]; bool info_re[8]; int ninfo_msgs;
  char *fail_msg; bool fail_re;
  double scalar;
  char *string;
  int64_t t, start, end, step;
  int64_t rv_from, rv_to, rv_step;
  const char *expr;
  expect_series_t *series;
  size_t nseries;
  bool histogram;
} eval_case_t;

static bool msg_match(const char *pattern, bool re, const char *msg) {
  if (!re) return !strcmp(pattern, msg);
  /* unanchored: wrap with .* */
  sb_t sb = {0};
  sb_printf(&sb, ".*(?:%s).*", pattern);
  core_regex_t *r;
  bool m = false;
  if (core_regex_compile(sb.buf, sb.len, &r, NULL, 0) == 0) {
    m = core_regex_match(r, msg, strlen(msg));
    core_regex_free(r);
  }
  sb_free(&sb);
  return m;
}

static bool check_annotations(const eval_case_t *c, const promql_result_t *r, sb_t *why) {
  const char *const *w, *const *in;
  size_t nw = promql_result_warnings(r, &w), ni = promql_result_infos(r, &in);
  if (c->no_warn && nw) { sb_printf(why, "unexpected warning: %s", w[0]); return false; }
  if (c->no_info && ni) { sb_printf(why, "unexpected info: %s", in[0]); return false; }
  if (c->want_warn && !nw) { sb_puts(why, "expected a warning, got none"); return false; }
  if (c->want_info && !ni) { sb_puts(why, "expected an info, got none"); return false; }
  for (int k = 0; k < 2; k++) {
    int nm = k ? c->ninfo_msgs : c->nwarn_msgs;
    char *const *msgs = k ? c->info_msgs : c->warn_msgs;
    const bool *re = k ? c->info_re : c->warn_re;
    const char *const *got = k ? in : w;
    size_t ng = k ? ni : nw;
    if (!nm) continue;
    bool bare = false;
    for (int i = 0; i < nm; i++) if (!msgs[i]) bare = true;
    for (int i = 0; i < nm; i++) {
      if (!msgs[i]) continue;
      bool f = false;
      for (size_t j = 0; j < ng && !f; j++) f = msg_match(msgs[i], re[i], got[j]);
      if (!f) { sb_printf(why, "expected annotation \"%s\" not found", msgs[i]); return false; }
    }
    if (!bare)
      for (size_t j = 0; j < ng; j++) {
        bool f = false;
        for (int i = 0; i < nm && !f; i++) f = msg_match(msgs[i], re[i], got[j]);
        if (!f) { sb_printf(why, "unexpected annotation \"%s\"", got[j]); return false; }
      }
  }
  return true;
}

static void fmt_labels(sb_t *sb, const tsdb_label_t *l, size_t n) {
  sb_putc(sb, '{');
  for (size_t i = 0; i < n; i++) sb_printf(sb, "%s%s=\"%s\"", i ? ", " : "", l[i].name, l[i].value);
  sb_putc(sb, '}');
}

/* Compares a vector-like set of (labels, one value) against expectations. at_index selects
 * which point of each result series to use (range cross-check: the point at T). */
static bool compare_instant(const eval_case_t *c, const promql_result_t *r, bool cross, int64_t T, sb_t *why) {
  if (c->has_scalar) {
    double v;
    if (!cross) {
      if (promql_result_type(r) != PROMQL_VALUE_SCALAR) { sb_printf(why, "expected scalar, got %s", promql_result_type_name(r)); return false; }
      v = promql_result_scalar(r, NULL);
    } else {
      if (promql_result_series_count(r) < 1) { sb_puts(why, "range cross-check: no series"); return false; }
      const int64_t *ts; const double *vv;
      size_t np = promql_result_points(r, 0, &ts, &vv);
      size_t i;
      for (i = 0; i < np && ts[i] != T; i++) {}
      if (i == np) { sb_puts(why, "range cross-check: no point at T"); return false; }
      v = vv[i];
    }
    if (!float_eq(c->scalar, v)) { sb_printf(why, "expected scalar %.17g, got %.17g", c->scalar, v); return false; }
    return true;
  }
  if (c->has_string) {
    const char *s = promql_result_string(r, NULL);
    if (!s || strcmp(s, c->string)) { sb_printf(why, "expected string \"%s\", got \"%s\"", c->string, s ? s : "(not a string)"); return false; }
    return true;
  }
  promql_value_type_t t = promql_result_type(r);
  if (!cross && t != PROMQL_VALUE_VECTOR) { sb_printf(why, "expected vector, got %s", promql_result_type_name(r)); return false; }
  size_t n = promql_result_series_count(r);
  size_t matched = 0;
  bool *used = calloc(c->nseries + 1, 1);
  bool ok = true;
  size_t pos = 0;
  for (size_t k = 0; k < n && ok; k++) {
    size_t nl;
    const tsdb_label_t *l = promql_result_labels(r, k, &nl);
    const int64_t *ts; const double *vv;
    size_t np = promql_result_points(r, k, &ts, &vv);
    double v = 0;
    bool have = false;
    for (size_t i = 0; i < np; i++) if (!cross || ts[i] == T) { v = vv[i]; have = true; break; }
    if (!have) continue;
    pos++;
    size_t j;
    for (j = 0; j < c->nseries; j++) if (!used[j] && labels_eq(&c->series[j].l, l, nl)) break;
    if (j == c->nseries) {
      sb_puts(why, "unexpected series ");
      fmt_labels(why, l, nl);
      sb_printf(why, " %.17g", v);
      ok = false;
      break;
    }
    if (c->ordered && !cross && j != pos - 1) { sb_puts(why, "wrong order"); ok = false; break; }
    used[j] = true;
    matched++;
    double e = c->series[j].s.n ? c->series[j].s.v[0] : NAN;
    if (!float_eq(e, v)) {
      sb_puts(why, "value mismatch for ");
      fmt_labels(why, l, nl);
      sb_printf(why, ": expected %.17g, got %.17g", e, v);
      ok = false;
    }
  }
  if (ok && matched != c->nseries) {
    for (size_t j = 0; j < c->nseries; j++)
      if (!used[j]) {
        sb_printf(why, "missing series (%zu of %zu matched), e.g. ", matched, c->nseries);
        tsdb_label_t tl[64];
        for (size_t q = 0; q < c->series[j].l.n; q++) tl[q] = (tsdb_label_t){c->series[j].l.name[q], c->series[j].l.value[q]};
        fmt_labels(why, tl, c->series[j].l.n);
        break;
      }
    ok = false;
  }
  free(used);
  if (ok && cross) {
    /* series must be sorted by labels */
    for (size_t k = 1; k < n; k++) {
      size_t na, nb;
      const tsdb_label_t *a = promql_result_labels(r, k - 1, &na), *b = promql_result_labels(r, k, &nb);
      size_t m = na < nb ? na : nb, i;
      int cmp = 0;
      for (i = 0; i < m && !cmp; i++) {
        cmp = strcmp(a[i].name, b[i].name);
        if (!cmp) cmp = strcmp(a[i].value, b[i].value);
      }
      if (!cmp) cmp = na < nb ? -1 : na > nb;
      if (cmp >= 0) { sb_puts(why, "range result not sorted by labels"); return false; }
    }
  }
  return ok;
}

static bool compare_matrix(const eval_case_t *c, const promql_result_t *r, int64_t start, int64_t step, sb_t *why) {
  if (promql_result_type(r) != PROMQL_VALUE_MATRIX) { sb_printf(why, "expected matrix, got %s", promql_result_type_name(r)); return false; }
  size_t n = promql_result_series_count(r);
  bool *used = calloc(c->nseries + 1, 1);
  bool ok = true;
  size_t matched = 0;
  for (size_t k = 0; k < n && ok; k++) {
    size_t nl;
    const tsdb_label_t *l = promql_result_labels(r, k, &nl);
    const int64_t *ts; const double *vv;
    size_t np = promql_result_points(r, k, &ts, &vv);
    size_t j;
    for (j = 0; j < c->nseries; j++) if (!used[j] && labels_eq(&c->series[j].l, l, nl)) break;
    if (j == c->nseries) { sb_puts(why, "unexpected series "); fmt_labels(why, l, nl); ok = false; break; }
    used[j] = true;
    matched++;
    const seq_t *s = &c->series[j].s;
    size_t p = 0;
    for (size_t i = 0; i < s->n && ok; i++) {
      if (!s->has[i]) continue;
      int64_t et = start + (int64_t)i * step;
      if (p >= np || ts[p] != et) {
        sb_puts(why, "point mismatch for ");
        fmt_labels(why, l, nl);
        sb_printf(why, ": expected point at %lld, got %s%lld", (long long)et, p < np ? "" : "none/", p < np ? (long long)ts[p] : 0LL);
        ok = false;
        break;
      }
      if (!float_eq(s->v[i], vv[p])) {
        sb_puts(why, "value mismatch for ");
        fmt_labels(why, l, nl);
        sb_printf(why, " at %lld: expected %.17g, got %.17g", (long long)et, s->v[i], vv[p]);
        ok = false;
      }
      p++;
    }
    if (ok && p != np) {
      sb_puts(why, "extra points for ");
      fmt_labels(why, l, nl);
      sb_printf(why, " (at %lld)", (long long)ts[p]);
      ok = false;
    }
  }
  if (ok && matched != c->nseries) { sb_printf(why, "missing series: %zu of %zu matched", matched, c->nseries); ok = false; }
  free(used);
  return ok;
}

/* Runs one eval; returns 1 pass, 0 fail, 2 pass with differing error message. */
static int run_eval(store_t *st, const eval_case_t *c, sb_t *why) {
  promql_expr_t *e = NULL;
  char err[1024];
  promql_pos_t pos;
  int rc = promql_parse(c->expr, strlen(c->expr), &e, &pos, err, sizeof err);
  if (rc < 0) {
    if (c->is_fail) return (!c->fail_msg || msg_match(c->fail_msg, c->fail_re, err)) ? 1 : 2;
    sb_printf(why, "parse error: %s", err);
    return 0;
  }
  promql_options_t opt;
  promql_options_default(&opt);
  opt.timeout_ms = 100000;
  promql_result_t *r = NULL;
  int result = 1;
  if (c->range)
    rc = promql_eval_range(st->db, "", e, c->start, c->end, c->step, &opt, &r, err, sizeof err);
  else
    rc = promql_eval_instant(st->db, "", e, c->t, &opt, &r, err, sizeof err);
  if (rc < 0) {
    if (c->is_fail) result = (!c->fail_msg || msg_match(c->fail_msg, c->fail_re, err)) ? 1 : 2;
    else { sb_printf(why, "query failed: %s", err); result = 0; }
    if (result == 2) sb_printf(why, "error message differs: got \"%s\"", err);
    goto out;
  }
  if (c->is_fail) { sb_puts(why, "expected failure, query succeeded"); result = 0; goto out; }
  if (!check_annotations(c, r, why)) { result = 0; goto out; }
  if (c->range) {
    if (!compare_matrix(c, r, c->start, c->step, why)) result = 0;
    goto out;
  }
  if (c->range_vector) {
    eval_case_t cc = *c;
    if (!compare_matrix(&cc, r, c->rv_from, c->rv_step, why)) result = 0;
    goto out;
  }
  if (!compare_instant(c, r, false, c->t, why)) { result = 0; goto out; }
  /* Range-mode cross-check (FORMAT.md §7.2 step 4). */
  if (!c->has_string && !strstr(c->expr, "start()") && !strstr(c->expr, "end()") && !strstr(c->expr, "range()") &&
      !strstr(c->expr, "step()") && !c->ordered) {
    promql_result_free(r);
    r = NULL;
    rc = promql_eval_range(st->db, "", e, c->t - 60000, c->t + 60000, 60000, &opt, &r, err, sizeof err);
    if (rc < 0) { sb_printf(why, "range cross-check failed: %s", err); result = 0; goto out; }
    if (!compare_instant(c, r, true, c->t, why)) {
      sb_puts(why, " (range cross-check)");
      result = 0;
    }
  }
out:
  promql_result_free(r);
  promql_expr_free(e);
  return result;
}

/* ---- file driver --------------------------------------------------------------------------- */

typedef struct totals {
  int passed, failed, skipped, xfailed, xpassed, msgdiff, unexpected;
  int hist_series; /* native-histogram series in load blocks, not stored */
} totals_t;

static bool verbose;
static bool classify; /* -c: re-run each failing eval with histogram placeholders */
static char *hist_names[4096]; /* -c: metric names of the histogram series loaded since the last clear */
static size_t nhist_names;

static bool loading_nhcb; /* the block is load_with_nhcb: *_bucket series also form native histograms */

static void hist_names_clear(void) {
  for (size_t i = 0; i < nhist_names; i++) free(hist_names[i]);
  nhist_names = 0;
}

/* Whether expr names one of the loaded histogram metrics (as a whole identifier). */
static bool names_hist_metric(const char *expr) {
  for (size_t i = 0; i < nhist_names; i++) {
    size_t l = strlen(hist_names[i]);
    for (const char *p = strstr(expr, hist_names[i]); p; p = strstr(p + 1, hist_names[i])) {
      bool left = p == expr || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == ':');
      bool right = !(isalnum((unsigned char)p[l]) || p[l] == '_' || p[l] == ':');
      if (left && right) return true;
    }
  }
  return false;
}
static FILE *gen; /* -g: write a key + reason line for every unlisted failure */

/* A best-effort reason for a generated expected-failure entry. */
static const char *guess_reason(const char *file, bool hist, const char *expr) {
  static const struct { const char *file, *why; } by_file[] = {
      {"native_histograms.test", "native histograms are not supported (float samples only)"},
      {"start_timestamps.test", "experimental start timestamps are not supported"},
      {"type_and_unit.test", "experimental __type__/__unit__ metadata labels are not supported"},
  };
  for (size_t i = 0; i < sizeof by_file / sizeof by_file[0]; i++)
    if (!strcmp(file, by_file[i].file)) return by_file[i].why;
  if (hist) return "native histograms: the data or expected annotations involve native-histogram series";
  if (strstr(expr, "limit_ratio")) return "limit_ratio samples by Prometheus's label hash (xxhash), not reproducible";
  return "not yet supported";
}

static void free_case(eval_case_t *c) {
  for (size_t i = 0; i < c->nseries; i++) labels_free(&c->series[i].l), seq_free(&c->series[i].s);
  free(c->series);
  for (int i = 0; i < c->nwarn_msgs; i++) free(c->warn_msgs[i]);
  for (int i = 0; i < c->ninfo_msgs; i++) free(c->info_msgs[i]);
  free(c->fail_msg);
  free(c->string);
}

/* Loads a block's float samples. With placeholders (the -c shadow store), every native-histogram
 * sample is stored as the float 1 instead of left out, so that an eval whose outcome changes
 * between the two stores is known to read histogram series. */
static int load_block(store_t *st, char **lines, size_t n, int64_t interval, bool *hist, int *nhist, bool placeholders) {
  /* Last line wins for a repeated label set. */
  labels_t *ls = calloc(n, sizeof *ls);
  seq_t *ss = calloc(n, sizeof *ss);
  bool *skip = calloc(n, 1);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    bool ok;
    size_t tok_end = strstr(lines[i], "}@st") ? 0 : strcspn(lines[i], " \t");
    if (strstr(lines[i], "}@st") || (tok_end >= 3 && !strncmp(lines[i] + tok_end - 3, "@st", 3))) {
      /* start-timestamp lines: tsdb stores no start times (the evals that need them are listed) */
      skip[i] = true;
      continue;
    }
    const char *rest = parse_series(lines[i], &ls[i], &ok);
    if (!ok || !parse_seq(rest, &ss[i])) { fprintf(stderr, "bad load line: %s\n", lines[i]); rc = -1; skip[i] = true; continue; }
    for (size_t j = 0; j < i; j++)
      if (!skip[j] && labels_same(&ls[j], &ls[i])) skip[j] = true;
  }
  tsdb_batch_t *b = tsdb_batch_new();
  for (size_t i = 0; i < n; i++) {
    if (skip[i]) continue;
    for (size_t q = 0; q < ls[i].n && classify && loading_nhcb && !placeholders; q++) {
      size_t vl = strlen(ls[i].value[q]);
      if (!strcmp(ls[i].name[q], "__name__") && vl > 7 && !strcmp(ls[i].value[q] + vl - 7, "_bucket") && nhist_names < 4096)
        hist_names[nhist_names++] = strndup(ls[i].value[q], vl - 7);
    }
    if (ss[i].histogram) {
      /* Histogram samples are not stored (float samples only); the series' float samples,
       * if it mixes both, still are. */
      *hist = true;
      (*nhist)++;
      for (size_t q = 0; q < ls[i].n; q++)
        if (classify && !placeholders && !strcmp(ls[i].name[q], "__name__") && nhist_names < 4096)
          hist_names[nhist_names++] = strdup(ls[i].value[q]);
    }
    tsdb_label_t tl[64];
    for (size_t q = 0; q < ls[i].n; q++) tl[q] = (tsdb_label_t){ls[i].name[q], ls[i].value[q]};
    if (tsdb_batch_series(b, tl, ls[i].n) < 0) continue;
    for (size_t k = 0; k < ss[i].n; k++)
      if (ss[i].has[k]) tsdb_batch_sample(b, (int64_t)k * interval, ss[i].v[k]);
      else if (placeholders && ss[i].hist[k]) tsdb_batch_sample(b, (int64_t)k * interval, 1);
  }
  tsdb_append_result_t res;
  if (tsdb_append(st->db, "", b, &res) < 0 || res.samples_rejected) {
    if (res.nerrors) fprintf(stderr, "load: %s\n", res.errors[0].message);
    rc = -1;
  }
  tsdb_batch_free(b);
  for (size_t i = 0; i < n; i++) labels_free(&ls[i]), seq_free(&ss[i]);
  free(ls), free(ss), free(skip);
  return rc;
}

static void run_file(const char *dir, const char *fname, totals_t *tot) {
  char path[4096 + 256];
  if (snprintf(path, sizeof path, "%s/%s", dir, fname) >= (int)sizeof path) {
    fprintf(stderr, "path too long: %s/%s\n", dir, fname);
    tot->unexpected++;
    return;
  }
  char *buf;
  size_t len;
  if (md_read_file(path, &buf, &len) < 0) { fprintf(stderr, "cannot read %s\n", path); tot->unexpected++; return; }
  size_t cap = 1024, nl = 0;
  char **lines = malloc(cap * sizeof *lines);
  char *p = buf;
  while (p && *p) {
    char *e = strchr(p, '\n');
    if (e) *e = 0;
    if (nl == cap) lines = realloc(lines, (cap *= 2) * sizeof *lines);
    char *t = trim(p);
    lines[nl++] = (*t == '#') ? t + strlen(t) : t;
    p = e ? e + 1 : NULL;
  }
  store_t st;
  if (store_open(&st) < 0) { fprintf(stderr, "cannot open storage\n"); free(lines); free(buf); tot->unexpected++; return; }
  store_t shadow = {0};
  if (classify && store_open(&shadow) < 0) { fprintf(stderr, "cannot open storage\n"); store_close(&st); free(lines); free(buf); tot->unexpected++; return; }
  totals_t ft = {0};
  bool hist_loaded = false, nhcb = false;
  size_t i = 0;
  /* occurrence counting of eval lines */
  char **seen = calloc(nl + 1, sizeof *seen);
  size_t nseen = 0;
  while (i < nl) {
    if (!*lines[i]) { i++; continue; }
    char *cmd = lines[i];
    size_t lineno = i + 1;
    if (!strncasecmp(cmd, "clear", 5)) {
      store_close(&st);
      if (store_open(&st) < 0) break;
      if (classify) {
        store_close(&shadow);
        hist_names_clear();
        if (store_open(&shadow) < 0) break;
      }
      hist_loaded = nhcb = false;
      i++;
      continue;
    }
    if (!strncasecmp(cmd, "load", 4)) {
      const char *sp = cmd + 4;
      while (*sp && !isspace((unsigned char)*sp)) sp++;
      loading_nhcb = !strncasecmp(cmd, "load_with_nhcb", 14);
      if (loading_nhcb) nhcb = true;
      while (*sp && isspace((unsigned char)*sp)) sp++;
      int64_t interval;
      if (!parse_dur(sp, strlen(sp), &interval)) fprintf(stderr, "%s:%zu: bad load interval\n", fname, lineno);
      size_t j = i + 1;
      while (j < nl && *lines[j]) j++;
      bool dummy_hist;
      int dummy_count = 0;
      if (classify) load_block(&shadow, lines + i + 1, j - i - 1, interval, &dummy_hist, &dummy_count, true);
      if (load_block(&st, lines + i + 1, j - i - 1, interval, &hist_loaded, &ft.hist_series, false) < 0)
        fprintf(stderr, "%s:%zu: load had errors\n", fname, lineno);
      i = j;
      continue;
    }
    if (strncasecmp(cmd, "eval", 4)) {
      fprintf(stderr, "%s:%zu: unknown command: %s\n", fname, lineno, cmd);
      i++;
      continue;
    }
    /* eval */
    eval_case_t c = {0};
    char word[32];
    const char *q = cmd;
    size_t wl = strcspn(q, " \t");
    snprintf(word, sizeof word, "%.*s", (int)wl, q);
    if (!strcasecmp(word, "eval_fail")) c.is_fail = true;
    if (!strcasecmp(word, "eval_warn")) c.want_warn = true;
    if (!strcasecmp(word, "eval_info")) c.want_info = true;
    if (!strcasecmp(word, "eval_ordered")) c.ordered = true;
    q += wl;
    char *toks[8];
    int nt = 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", q);
    char *r = tmp;
    int need = 0;
    while (*r && isspace((unsigned char)*r)) r++;
    if (!strncmp(r, "instant", 7)) need = 3; /* instant at T */
    else need = 7;                           /* range from S to E step D */
    for (nt = 0; nt < need; nt++) {
      while (*r && isspace((unsigned char)*r)) r++;
      toks[nt] = r;
      while (*r && !isspace((unsigned char)*r)) r++;
      if (*r) *r++ = 0;
    }
    while (*r && isspace((unsigned char)*r)) r++;
    c.expr = cmd + (r - tmp) + wl;
    bool bad = false;
    if (need == 3) {
      c.range = false;
      if (!parse_dur(toks[2], strlen(toks[2]), &c.t)) bad = true;
    } else {
      c.range = true;
      if (!parse_dur(toks[2], strlen(toks[2]), &c.start) || !parse_dur(toks[4], strlen(toks[4]), &c.end) ||
          !parse_dur(toks[6], strlen(toks[6]), &c.step))
        bad = true;
    }
    size_t j = i + 1;
    bool ended = false;
    while (j < nl && *lines[j] && !ended) {
      char *l = lines[j];
      if (!strncmp(l, "expected_fail_message", 21) || !strncmp(l, "expected_fail_regexp", 20)) {
        bool re = l[15] == 'r';
        const char *m = l + (re ? 20 : 21);
        while (*m && isspace((unsigned char)*m)) m++;
        c.fail_msg = strdup(m);
        c.fail_re = re;
        ended = true;
      } else if (!strncmp(l, "expect range vector from", 24)) {
        char a[64], b2[64], d[64];
        if (sscanf(l + 24, " %63s to %63s step %63s", a, b2, d) == 3 && parse_dur(a, strlen(a), &c.rv_from) &&
            parse_dur(b2, strlen(b2), &c.rv_to) && parse_dur(d, strlen(d), &c.rv_step))
          c.range_vector = true;
        else bad = true;
      } else if (!strncmp(l, "expect string ", 14)) {
        const char *s = l + 14;
        while (*s && isspace((unsigned char)*s)) s++;
        c.string = read_quoted(&s);
        c.has_string = true;
      } else if (!strncmp(l, "expect ", 7)) {
        const char *k = l + 7;
        while (*k == ' ') k++;
        size_t kl = strcspn(k, " \t");
        char kind[16];
        snprintf(kind, sizeof kind, "%.*s", (int)kl, k);
        const char *rest = k + kl;
        while (*rest && isspace((unsigned char)*rest)) rest++;
        char *msg = NULL;
        bool re = false;
        if (!strncmp(rest, "msg:", 4) || !strncmp(rest, "regex:", 6)) {
          re = rest[0] == 'r';
          const char *m = rest + (re ? 6 : 4);
          while (*m && isspace((unsigned char)*m)) m++;
          msg = strdup(m);
        }
        if (!strcmp(kind, "fail")) { c.is_fail = true; free(c.fail_msg); c.fail_msg = msg; c.fail_re = re; }
        else if (!strcmp(kind, "warn")) {
          c.want_warn = true;
          if (c.nwarn_msgs < 8) c.warn_msgs[c.nwarn_msgs] = msg, c.warn_re[c.nwarn_msgs++] = re; else free(msg);
        } else if (!strcmp(kind, "info")) {
          c.want_info = true;
          if (c.ninfo_msgs < 8) c.info_msgs[c.ninfo_msgs] = msg, c.info_re[c.ninfo_msgs++] = re; else free(msg);
        } else if (!strcmp(kind, "no_warn")) c.no_warn = true, free(msg);
        else if (!strcmp(kind, "no_info")) c.no_info = true, free(msg);
        else if (!strcmp(kind, "ordered")) c.ordered = true, free(msg);
        else { bad = true; free(msg); }
      } else {
        double v;
        char *end;
        errno = 0;
        long long iv = strtoll(l, &end, 0);
        bool isnum = false;
        if (*l && !*end) { v = (double)iv; isnum = true; }
        else if (parse_num(l, strlen(l), &v)) isnum = true;
        else if (!strcasecmp(l, "infinity") || !strcasecmp(l, "+infinity")) { v = INFINITY; isnum = true; }
        else if (!strcasecmp(l, "-infinity")) { v = -INFINITY; isnum = true; }
        if (isnum) {
          c.has_scalar = true;
          c.scalar = v;
          ended = true;
        } else {
          c.series = realloc(c.series, (c.nseries + 1) * sizeof *c.series);
          expect_series_t *es = &c.series[c.nseries];
          memset(es, 0, sizeof *es);
          bool ok;
          const char *rest = parse_series(l, &es->l, &ok);
          if (!ok || !parse_seq(rest, &es->s)) bad = true;
          if (es->s.histogram) c.histogram = true;
          c.nseries++;
        }
      }
      j++;
    }
    i = j;
    /* occurrence number */
    int occ = 1;
    for (size_t s2 = 0; s2 < nseen; s2++) if (!strcmp(seen[s2], cmd)) occ++;
    seen[nseen++] = cmd;
    bool xf = is_xfail(fname, cmd, occ);
    if (c.histogram || (strstr(c.expr, "{{"))) {
      ft.skipped++;
      if (verbose) printf("SKIP %s:%zu %s (native histograms)\n", fname, lineno, cmd);
      free_case(&c);
      continue;
    }
    sb_t why = {0};
    int res = bad ? 0 : run_eval(&st, &c, &why);
    if (classify && !res && !bad) {
      /* Does the outcome depend on the histogram series? Compare with the shadow store. */
      sb_t why2 = {0};
      int res2 = run_eval(&shadow, &c, &why2);
      const char *w1 = why.buf ? why.buf : "", *w2 = why2.buf ? why2.buf : "";
      const char *cls = res2 != res || strcmp(w1, w2) ? "reads native-histogram series"
                        : names_hist_metric(c.expr) ? "names a native-histogram metric"
                        : (!strncmp(w1, "expected a", 10) || strstr(w1, "annotation")) ? "expects an annotation"
                        : "does not depend on histogram series";
      printf("CLASS %s:%zu %s: %s\n", fname, lineno, cls, cmd);
      sb_free(&why2);
    }
    if (bad) sb_puts(&why, "cannot parse eval block");
    if (res == 2) ft.msgdiff++;
    if (res) {
      ft.passed++;
      if (xf) {
        ft.xpassed++;
        printf("XPASS %s:%zu %s (listed as expected failure)\n", fname, lineno, cmd);
      } else if (verbose || res == 2) {
        printf("PASS %s:%zu %s%s%s\n", fname, lineno, cmd, res == 2 ? "  [message differs] " : "", res == 2 ? why.buf : "");
      }
    } else {
      ft.failed++;
      if (xf) ft.xfailed++;
      else ft.unexpected++;
      if (!xf && gen) {
        if (occ > 1) fprintf(gen, "%s\t%s#%d\t%s\n", fname, cmd, occ, guess_reason(fname, hist_loaded || nhcb, c.expr));
        else fprintf(gen, "%s\t%s\t%s\n", fname, cmd, guess_reason(fname, hist_loaded || nhcb, c.expr));
      }
      printf("%s %s:%zu %s\n      %s%s\n", xf ? "XFAIL" : "FAIL", fname, lineno, cmd, why.buf ? why.buf : "",
             hist_loaded || nhcb ? " [file loads native histograms]" : "");
    }
    sb_free(&why);
    free_case(&c);
  }
  store_close(&st);
  if (classify) store_close(&shadow);
  hist_names_clear();
  printf("FILE %s: %d passed, %d failed (%d expected), %d skipped", fname, ft.passed, ft.failed, ft.xfailed, ft.skipped);
  if (ft.hist_series) printf(", %d native-histogram series not loaded", ft.hist_series);
  printf("\n");
  tot->hist_series += ft.hist_series;
  tot->passed += ft.passed, tot->failed += ft.failed, tot->skipped += ft.skipped;
  tot->xfailed += ft.xfailed, tot->xpassed += ft.xpassed, tot->msgdiff += ft.msgdiff, tot->unexpected += ft.unexpected;
  free(seen);
  free(lines);
  free(buf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  const char *xfile = NULL, *only = NULL, *dir = NULL;
  char defdir[1024], defx[1024];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-v")) verbose = true;
    else if (!strcmp(argv[i], "-c")) classify = true;
    else if (!strcmp(argv[i], "-x") && i + 1 < argc) xfile = argv[++i];
    else if (!strcmp(argv[i], "-o") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "-g") && i + 1 < argc) {
      gen = fopen(argv[++i], "w");
      if (!gen) { perror("open -g file"); return 2; }
    }
    else dir = argv[i];
  }
  const char *src = getenv("SOURCE_DIR");
  if (!dir) {
    snprintf(defdir, sizeof defdir, "%s/../shared/conformance/promql/testdata", src ? src : ".");
    dir = defdir;
  }
  if (!xfile) {
    snprintf(defx, sizeof defx, "%s/tests/conformance/promql/expected_failures.txt", src ? src : ".");
    xfile = defx;
  }
  log_set_level(LOG_ERROR);
  DIR *d = opendir(dir);
  if (!d) {
    printf("SKIP: corpus directory %s not found\n0 passed, 0 failed, 0 skipped\n", dir);
    return 77;
  }
  load_xfails(xfile);
  char **files = NULL;
  size_t nf = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l > 5 && !strcmp(de->d_name + l - 5, ".test") && (!only || !strcmp(only, de->d_name))) {
      files = realloc(files, (nf + 1) * sizeof *files);
      files[nf++] = strdup(de->d_name);
    }
  }
  closedir(d);
  qsort(files, nf, sizeof *files, cmp_str);
  totals_t tot = {0};
  for (size_t i = 0; i < nf; i++) {
    run_file(dir, files[i], &tot);
    free(files[i]);
  }
  free(files);
  for (size_t i = 0; i < nxfails; i++) {
    if (!xfails[i].used && !only) printf("NOTE: expected failure not seen: %s\n", xfails[i].key);
    free(xfails[i].key);
  }
  free(xfails);
  if (gen) fclose(gen);
  printf("expected failures: %d, unexpected failures: %d, listed but passed: %d, passed with a differing error message: %d\n",
         tot.xfailed, tot.unexpected, tot.xpassed, tot.msgdiff);
  printf("native-histogram series in load blocks, not loaded (float samples only): %d\n", tot.hist_series);
  printf("%d passed, %d failed, %d skipped\n", tot.passed, tot.failed, tot.skipped);
  return tot.unexpected ? 1 : 0;
}
