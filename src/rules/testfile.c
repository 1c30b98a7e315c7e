/* `metricsd test-rules FILE`: runs rule unit tests in promtool's test-file format
 * (rule_files, evaluation_interval, tests[] with interval, input_series, alert_rule_test,
 * promql_expr_test) against a scratch database, evaluating the groups step by step from
 * time 0 like promtool does. The whole file is checked first (rules_test_check): a file
 * with any malformed part runs nothing. Single-threaded (static scratch buffers). */
#include "rules_internal.h"

#include <ctype.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

/* Expands a promtool value sequence ("1+1x3 _ stale 5x2") into values at step intervals.
 * Gaps are NaN with *present false. Returns count or -1. */
static long expand_values(const char *s, double *vals, bool *present, long max) {
  long n = 0;
  const char *p = s;
  while (*p) {
    while (isspace((unsigned char)*p))
      p++;
    if (!*p) break;
    const char *b = p;
    while (*p && !isspace((unsigned char)*p))
      p++;
    char item[64];
    size_t len = (size_t)(p - b);
    if (len >= sizeof item) return -1;
    memcpy(item, b, len);
    item[len] = 0;
    if (!strcmp(item, "stale")) {
      if (n >= max) return -1;
      vals[n] = tsdb_stale_nan();
      present[n++] = true;
      continue;
    }
    if (item[0] == '_') {
      long k = 1;
      if (item[1] == 'x') k = strtol(item + 2, NULL, 10);
      for (long i = 0; i < k; i++) {
        if (n >= max) return -1;
        present[n++] = false;
      }
      continue;
    }
    char *x = strrchr(item, 'x');
    double start, delta = 0;
    long times = 0;
    char *end;
    if (x && x != item) {
      *x = 0;
      times = strtol(x + 1, &end, 10);
      if (*end || times < 0) return -1;
      /* start[+-]delta: find a sign that is not the leading one nor part of an exponent. */
      char *op = NULL;
      for (char *q = item + 1; *q; q++)
        if ((*q == '+' || *q == '-') && q[-1] != 'e' && q[-1] != 'E') op = q;
      if (op) {
        char sign = *op;
        *op = 0;
        delta = strtod(op + 1, &end);
        if (*end) return -1;
        if (sign == '-') delta = -delta;
      }
      start = strtod(item, &end);
      if (*end) return -1;
      double v = start;
      for (long i = 0; i <= times; i++) {
        if (n >= max) return -1;
        vals[n] = v;
        present[n++] = true;
        v += delta;
      }
      continue;
    }
    start = strtod(item, &end);
    if (*end) return -1;
    if (n >= max) return -1;
    vals[n] = start;
    present[n++] = true;
  }
  return n;
}

/* Parses a series selector like `up{job="x", instance="y"}` into owned labels. */
static int parse_series(const char *s, tsdb_label_t *ls, size_t max, size_t *n) {
  *n = 0;
  const char *p = s;
  while (isspace((unsigned char)*p))
    p++;
  const char *b = p;
  while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == ':'))
    p++;
  if (p > b) {
    ls[(*n)].name = strdup("__name__");
    ls[(*n)++].value = strndup(b, (size_t)(p - b));
  }
  while (isspace((unsigned char)*p))
    p++;
  if (*p == '{') {
    p++;
    for (;;) {
      while (isspace((unsigned char)*p) || *p == ',')
        p++;
      if (*p == '}') {
        p++;
        break;
      }
      b = p;
      while (*p && (isalnum((unsigned char)*p) || *p == '_'))
        p++;
      if (p == b || *n >= max) return -1;
      char *name = strndup(b, (size_t)(p - b));
      while (isspace((unsigned char)*p))
        p++;
      if (*p != '=' || p[1] != '"') {
        free(name);
        return -1;
      }
      p += 2;
      sb_t v = {0};
      while (*p && *p != '"') {
        if (*p == '\\' && p[1]) {
          p++;
          sb_putc(&v, *p == 'n' ? '\n' : *p);
        } else {
          sb_putc(&v, *p);
        }
        p++;
      }
      if (*p != '"') {
        free(name);
        sb_free(&v);
        return -1;
      }
      p++;
      ls[*n].name = name;
      ls[(*n)++].value = sb_steal(&v);
    }
  }
  while (isspace((unsigned char)*p))
    p++;
  return *p ? -1 : 0;
}

static void free_labels(tsdb_label_t *ls, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free((char *)ls[i].name);
    free((char *)ls[i].value);
  }
}

static int cmp_lbl(const void *a, const void *b) {
  return strcmp(((const tsdb_label_t *)a)->name, ((const tsdb_label_t *)b)->name);
}

/* Canonical text of a label set (sorted), for comparing expected and actual. */
static void canon(const tsdb_label_t *ls, size_t n, sb_t *out, bool skip_name) {
  tsdb_label_t tmp[128];
  size_t k = 0;
  for (size_t i = 0; i < n && k < 128; i++)
    if (!(skip_name && !strcmp(ls[i].name, "__name__")) && *ls[i].value) tmp[k++] = ls[i];
  qsort(tmp, k, sizeof *tmp, cmp_lbl);
  sb_putc(out, '{');
  for (size_t i = 0; i < k; i++)
    sb_printf(out, "%s%s=\"%s\"", i ? "," : "", tmp[i].name, tmp[i].value);
  sb_putc(out, '}');
}

static int json_obj_labels(const json_t *o, tsdb_label_t *ls, size_t max, size_t *n) {
  *n = 0;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    if (*n >= max) return -1;
    ls[*n].name = strdup(k);
    ls[(*n)++].value = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY);
  }
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Compares the firing alerts of alertname at time t with the expectations. */
static int check_alerts(rules_t *r, const char *alertname, const json_t *exp, int64_t t, sb_t *out,
                        const char *tn) {
  char *got[256], *want[256];
  size_t ng = 0, nw = 0;
  for (size_t i = 0; i < r->ngroups; i++)
    for (size_t j = 0; j < r->groups[i]->nrules; j++) {
      rule_t *ru = r->groups[i]->rules[j];
      if (!ru->is_alert || strcmp(ru->name, alertname)) continue;
      for (alert_t *a = ru->alerts; a && ng < 256; a = a->next) {
        if (a->state != ALERT_FIRING) continue;
        sb_t sb = {0};
        canon(a->labels, a->nlabels, &sb, false);
        sb_puts(&sb, " ");
        canon(a->annotations, a->nannotations, &sb, false);
        got[ng++] = sb_steal(&sb);
      }
    }
  size_t i;
  json_t *e;
  json_array_foreach(exp, i, e) {
    if (nw >= 256) break;
    tsdb_label_t ls[128];
    size_t n;
    json_obj_labels(json_object_get(e, "exp_labels"), ls, 127, &n);
    ls[n].name = strdup("alertname");
    ls[n++].value = strdup(alertname);
    sb_t sb = {0};
    canon(ls, n, &sb, false);
    free_labels(ls, n);
    json_obj_labels(json_object_get(e, "exp_annotations"), ls, 128, &n);
    sb_puts(&sb, " ");
    canon(ls, n, &sb, false);
    free_labels(ls, n);
    want[nw++] = sb_steal(&sb);
  }
  qsort(got, ng, sizeof *got, cmp_str);
  qsort(want, nw, sizeof *want, cmp_str);
  int fail = ng != nw;
  for (size_t k = 0; !fail && k < ng; k++)
    fail = strcmp(got[k], want[k]) != 0;
  if (fail) {
    sb_printf(out, "  FAILED %s: alertname: %s, time: %gs\n    exp:", tn, alertname, t / 1000.0);
    for (size_t k = 0; k < nw; k++)
      sb_printf(out, " %s;", want[k]);
    sb_puts(out, "\n    got:");
    for (size_t k = 0; k < ng; k++)
      sb_printf(out, " %s;", got[k]);
    sb_putc(out, '\n');
  }
  for (size_t k = 0; k < ng; k++)
    free(got[k]);
  for (size_t k = 0; k < nw; k++)
    free(want[k]);
  return fail;
}

static int check_expr(rules_t *r, const json_t *tc, sb_t *out, const char *tn) {
  const char *expr = json_string_value(json_object_get(tc, "expr"));
  int64_t t = 0;
  json_t *et = json_object_get(tc, "eval_time");
  if (et) config_parse_duration(et, &t);
  if (!expr) {
    sb_printf(out, "  FAILED %s: promql_expr_test without expr\n", tn);
    return 1;
  }
  promql_result_t *res;
  char err[256];
  if (promql_query_instant(r->opt.db, "default", expr, strlen(expr), t, NULL, &res, err, sizeof err)) {
    sb_printf(out, "  FAILED %s: expr %s: %s\n", tn, expr, err);
    return 1;
  }
  char *got[512], *want[512];
  size_t ng = 0, nw = 0;
  if (promql_result_type(res) == PROMQL_VALUE_SCALAR) {
    sb_t sb = {0};
    sb_printf(&sb, "{} %.10g", promql_result_scalar(res, NULL));
    got[ng++] = sb_steal(&sb);
  } else {
    for (size_t i = 0; i < promql_result_series_count(res) && ng < 512; i++) {
      size_t nl;
      const tsdb_label_t *ls = promql_result_labels(res, i, &nl);
      const int64_t *pt;
      const double *pv;
      promql_result_points(res, i, &pt, &pv);
      sb_t sb = {0};
      canon(ls, nl, &sb, false);
      sb_printf(&sb, " %.10g", pv[0]);
      got[ng++] = sb_steal(&sb);
    }
  }
  promql_result_free(res);
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(tc, "exp_samples"), i, e) {
    if (nw >= 512) break;
    tsdb_label_t ls[128];
    size_t n = 0;
    const char *lt = json_string_value(json_object_get(e, "labels"));
    if (lt && parse_series(lt, ls, 128, &n)) {
      sb_printf(out, "  FAILED %s: bad labels %s\n", tn, lt);
      free_labels(ls, n);
      for (size_t k = 0; k < ng; k++)
        free(got[k]);
      for (size_t k = 0; k < nw; k++)
        free(want[k]);
      return 1;
    }
    sb_t sb = {0};
    canon(ls, n, &sb, false);
    free_labels(ls, n);
    json_t *v = json_object_get(e, "value");
    double d = json_is_number(v)   ? json_number_value(v)
               : json_is_string(v) ? strtod(json_string_value(v), NULL)
                                   : 0;
    /* Ten significant digits: rule results carry float rounding noise (0.15 added 40
     * times is not 6), which promtool's users do not spell out. */
    sb_printf(&sb, " %.10g", d);
    want[nw++] = sb_steal(&sb);
  }
  qsort(got, ng, sizeof *got, cmp_str);
  qsort(want, nw, sizeof *want, cmp_str);
  int fail = ng != nw;
  for (size_t k = 0; !fail && k < ng; k++)
    fail = strcmp(got[k], want[k]) != 0;
  if (fail) {
    sb_printf(out, "  FAILED %s: expr: %s, time: %gs\n    exp:", tn, expr, t / 1000.0);
    for (size_t k = 0; k < nw; k++)
      sb_printf(out, " %s;", want[k]);
    sb_puts(out, "\n    got:");
    for (size_t k = 0; k < ng; k++)
      sb_printf(out, " %s;", got[k]);
    sb_putc(out, '\n');
  }
  for (size_t k = 0; k < ng; k++)
    free(got[k]);
  for (size_t k = 0; k < nw; k++)
    free(want[k]);
  return fail;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int run_test(const json_t *test, size_t idx, const char *const *rule_files, size_t nrf,
                    int64_t eval_interval, sb_t *out) {
  char tn[128];
  const char *name = json_string_value(json_object_get(test, "name"));
  snprintf(tn, sizeof tn, "%s", name ? name : "");
  if (!name) snprintf(tn, sizeof tn, "test #%zu", idx + 1);
  int64_t interval = eval_interval;
  json_t *iv = json_object_get(test, "interval");
  if (iv) config_parse_duration(iv, &interval);
  if (interval <= 0) interval = 60000;
  char dir[] = "/tmp/metricsd-test-rules-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  tsdb_options_t topt;
  tsdb_options_default(&topt);
  topt.background = false;
  topt.ooo_window_ms = 0;
  tsdb_t *db = NULL;
  rules_t *r = NULL;
  char err[1024];
  int failed = 0;
  if (tsdb_open(dir, &topt, &db, err, sizeof err)) {
    sb_printf(out, "  FAILED %s: %s\n", tn, err);
    failed = 1;
    goto out;
  }
  /* Input series. */
  tsdb_batch_t *b = tsdb_batch_new();
  size_t i;
  json_t *s;
  int64_t max_t = 0;
  json_array_foreach(json_object_get(test, "input_series"), i, s) {
    const char *series = json_string_value(json_object_get(s, "series"));
    json_t *vj = json_object_get(s, "values");
    char *values = vj ? (json_is_string(vj) ? strdup(json_string_value(vj)) : json_dumps(vj, JSON_ENCODE_ANY))
                      : strdup("");
    tsdb_label_t ls[128];
    size_t nl = 0;
    static double vals[100000];
    static bool present[100000];
    long nv = values ? expand_values(values, vals, present, 100000) : -1;
    if (!series || parse_series(series, ls, 128, &nl) || nv < 0) {
      sb_printf(out, "  FAILED %s: bad input series %s\n", tn, series ? series : "(none)");
      free_labels(ls, nl);
      free(values);
      failed = 1;
      break;
    }
    free(values);
    tsdb_batch_series(b, ls, nl);
    free_labels(ls, nl);
    for (long k = 0; k < nv; k++)
      if (present[k]) tsdb_batch_sample(b, k * interval, vals[k]);
    if ((nv - 1) * interval > max_t) max_t = (nv - 1) * interval;
  }
  if (!failed && tsdb_append(db, "default", b, NULL)) {
    sb_printf(out, "  FAILED %s: cannot load input series\n", tn);
    failed = 1;
  }
  tsdb_batch_free(b);
  if (failed) goto out;
  rules_options_t ro;
  rules_options_default(&ro);
  ro.db = db;
  ro.default_interval_ms = eval_interval;
  if (rules_new(&ro, &r, err, sizeof err) || rules_load_files(r, rule_files, nrf, err, sizeof err)) {
    sb_printf(out, "  FAILED %s: %s\n", tn, err);
    failed = 1;
    goto out;
  }
  /* Collect check times. */
  json_t *at = json_object_get(test, "alert_rule_test"), *pt = json_object_get(test, "promql_expr_test");
  int64_t times[1024];
  size_t nt = 0;
  json_t *c;
  json_array_foreach(at, i, c) {
    int64_t t = 0;
    config_parse_duration(json_object_get(c, "eval_time"), &t);
    if (nt < 1024) times[nt++] = t;
    if (t > max_t) max_t = t;
  }
  qsort(times, nt, sizeof *times, cmp_i64);
  /* Evaluate every group at multiples of its interval up to the last check time, checking
   * alert tests as their times come. */
  size_t ti = 0;
  for (int64_t t = 0; t <= max_t; t += eval_interval) {
    pthread_mutex_lock(&r->mu);
    for (size_t g = 0; g < r->ngroups; g++)
      if (t % r->groups[g]->interval_ms == 0) group_eval(r, r->groups[g], t);
    while (ti < nt && times[ti] < t + eval_interval) {
      int64_t want = times[ti];
      json_array_foreach(at, i, c) {
        int64_t et = 0;
        config_parse_duration(json_object_get(c, "eval_time"), &et);
        if (et != want) continue;
        const char *an = json_string_value(json_object_get(c, "alertname"));
        failed |= check_alerts(r, an ? an : "", json_object_get(c, "exp_alerts"), et, out, tn);
      }
      while (ti < nt && times[ti] == want)
        ti++;
    }
    pthread_mutex_unlock(&r->mu);
  }
  json_array_foreach(pt, i, c) failed |= check_expr(r, c, out, tn);
out:
  rules_free(r);
  tsdb_close(db);
  md_rm_rf(dir);
  return failed;
}

/* Evaluation steps one test may take (15 s × 10^6 ≈ 174 days of simulated time). */
#define MAX_STEPS 1000000

static bool is_string_map(const json_t *o) {
  if (!o || json_is_null(o)) return true;
  if (!json_is_object(o)) return false;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) if (!json_is_string(v)) return false;
  return true;
}

int rules_test_check(const json_t *doc, sb_t *out) {
  int bad = 0;
  if (!json_is_object(doc)) {
    sb_puts(out, "  FAILED: a test file must be a map\n");
    return MD_EINVAL;
  }
  json_t *rf = json_object_get(doc, "rule_files");
  if (rf && !json_is_array(rf)) {
    sb_puts(out, "  FAILED: rule_files must be a list\n");
    bad = 1;
  }
  size_t i;
  json_t *v;
  json_array_foreach(rf, i, v) if (!json_is_string(v)) {
    sb_printf(out, "  FAILED: rule_files[%zu] must be a string\n", i);
    bad = 1;
  }
  int64_t eval_interval = 60000;
  json_t *ei = json_object_get(doc, "evaluation_interval");
  if (ei && (config_parse_duration(ei, &eval_interval) || eval_interval <= 0)) {
    sb_puts(out, "  FAILED: invalid evaluation_interval\n");
    return MD_EINVAL;
  }
  json_t *tests = json_object_get(doc, "tests");
  if (!json_is_array(tests)) {
    sb_puts(out, "  FAILED: 'tests' must be a list\n");
    return MD_EINVAL;
  }
  json_t *t;
  json_array_foreach(tests, i, t) {
    if (!json_is_object(t)) {
      sb_printf(out, "  FAILED: test #%zu must be a map\n", i + 1);
      bad = 1;
      continue;
    }
    int64_t interval = eval_interval, max_t = 0;
    json_t *iv = json_object_get(t, "interval");
    if (iv && (config_parse_duration(iv, &interval) || interval <= 0 || interval > INT64_MAX / 200000)) {
      sb_printf(out, "  FAILED: test #%zu: invalid interval\n", i + 1);
      bad = 1;
      continue;
    }
    size_t j;
    json_t *s;
    json_array_foreach(json_object_get(t, "input_series"), j, s) {
      const char *series = json_string_value(json_object_get(s, "series"));
      json_t *vj = json_object_get(s, "values");
      char *values =
          vj ? (json_is_string(vj) ? strdup(json_string_value(vj)) : json_dumps(vj, JSON_ENCODE_ANY))
             : strdup("");
      tsdb_label_t ls[128];
      size_t nl = 0;
      static double vals[100000];
      static bool present[100000];
      long nv = values ? expand_values(values, vals, present, 100000) : -1;
      int ps = series ? parse_series(series, ls, 128, &nl) : -1;
      free_labels(ls, nl);
      free(values);
      if (ps || nv < 0) {
        sb_printf(out, "  FAILED: test #%zu: bad input series %s\n", i + 1, series ? series : "(none)");
        bad = 1;
      } else if (nv > 0 && (nv - 1) * interval > max_t) {
        max_t = (nv - 1) * interval;
      }
    }
    json_t *c;
    json_array_foreach(json_object_get(t, "alert_rule_test"), j, c) {
      int64_t et = 0;
      if (config_parse_duration(json_object_get(c, "eval_time"), &et) ||
          !json_is_string(json_object_get(c, "alertname"))) {
        sb_printf(out, "  FAILED: test #%zu: alert_rule_test #%zu needs eval_time and alertname\n", i + 1,
                  j + 1);
        bad = 1;
        continue;
      }
      if (et > max_t) max_t = et;
      size_t k;
      json_t *e;
      json_t *exp = json_object_get(c, "exp_alerts");
      if (exp && !json_is_array(exp) && !json_is_null(exp)) {
        sb_printf(out, "  FAILED: test #%zu: alert_rule_test #%zu: exp_alerts must be a list\n", i + 1,
                  j + 1);
        bad = 1;
      }
      json_array_foreach(exp, k, e) {
        if (!is_string_map(json_object_get(e, "exp_labels")) ||
            !is_string_map(json_object_get(e, "exp_annotations"))) {
          sb_printf(out, "  FAILED: test #%zu: exp_labels and exp_annotations must map names to strings\n",
                    i + 1);
          bad = 1;
        }
      }
    }
    json_array_foreach(json_object_get(t, "promql_expr_test"), j, c) {
      const char *expr = json_string_value(json_object_get(c, "expr"));
      promql_expr_t *pe = NULL;
      char perr[256];
      if (!expr || promql_parse(expr, strlen(expr), &pe, NULL, perr, sizeof perr)) {
        sb_printf(out, "  FAILED: test #%zu: promql_expr_test #%zu: bad expr\n", i + 1, j + 1);
        bad = 1;
      }
      promql_expr_free(pe);
      int64_t et = 0;
      if (config_parse_duration(json_object_get(c, "eval_time"), &et)) et = 0;
      if (et > max_t) max_t = et;
      size_t k;
      json_t *e;
      json_array_foreach(json_object_get(c, "exp_samples"), k, e) {
        const char *ls = json_string_value(json_object_get(e, "labels"));
        tsdb_label_t l[128];
        size_t nl = 0;
        if (ls && parse_series(ls, l, 128, &nl)) {
          sb_printf(out, "  FAILED: test #%zu: bad exp_samples labels %s\n", i + 1, ls);
          bad = 1;
        }
        free_labels(l, nl);
      }
    }
    if (max_t / eval_interval > MAX_STEPS) {
      sb_printf(out, "  FAILED: test #%zu: more than %d evaluation steps\n", i + 1, MAX_STEPS);
      bad = 1;
    }
  }
  return bad ? MD_EINVAL : 0;
}

int rules_test_file(const char *path, sb_t *out) {
  json_t *doc;
  char err[512];
  if (rules_load_yaml_file(path, &doc, err, sizeof err)) {
    sb_printf(out, "FAILED: %s\n", err);
    return MD_EINVAL;
  }
  char *pcopy = strdup(path);
  const char *dir = pcopy ? dirname(pcopy) : ".";
  const char *rf[64];
  char *rf_owned[64];
  size_t nrf = 0;
  size_t i;
  json_t *f;
  json_array_foreach(json_object_get(doc, "rule_files"), i, f) {
    if (nrf >= 64 || !json_is_string(f)) break;
    const char *p = json_string_value(f);
    sb_t sb = {0};
    if (p[0] == '/')
      sb_puts(&sb, p);
    else
      sb_printf(&sb, "%s/%s", dir, p);
    rf_owned[nrf] = sb_steal(&sb);
    rf[nrf] = rf_owned[nrf];
    nrf++;
  }
  int64_t eval_interval = 60000;
  json_t *ei = json_object_get(doc, "evaluation_interval");
  if (ei) config_parse_duration(ei, &eval_interval);
  if (eval_interval <= 0) eval_interval = 60000;
  sb_printf(out, "Unit Testing: %s\n", path);
  int failed = rules_test_check(doc, out) != 0;
  json_t *t;
  json_array_foreach(json_object_get(doc, "tests"), i, t) {
    if (failed) break; /* a malformed file runs nothing */
    failed |= run_test(t, i, rf, nrf, eval_interval, out);
  }
  sb_puts(out, failed ? "  FAILED\n" : "  SUCCESS\n");
  for (size_t k = 0; k < nrf; k++)
    free(rf_owned[k]);
  free(pcopy);
  json_decref(doc);
  return failed ? MD_EINVAL : 0;
}
