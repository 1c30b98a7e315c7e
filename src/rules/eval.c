/* Rule evaluation: recording rules append their results, alerting rules drive the alert
 * state machine (pending → firing → resolved, keep_firing_for), write ALERTS and
 * ALERTS_FOR_STATE, restore `for` state after a restart, and hand alerts to the notifier.
 * Called with the manager mutex held, from the rules thread or rules_eval_all. */
#include "rules_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void format_value_e(sb_t *sb, double v) {
  /* Prometheus formats alert values with strconv.FormatFloat(v, 'e', -1, 64). */
  if (isnan(v)) {
    sb_puts(sb, "NaN");
    return;
  }
  if (isinf(v)) {
    sb_puts(sb, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char buf[40];
  for (int prec = 0; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*e", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  sb_puts(sb, buf);
}

static void labels_free(tsdb_label_t *ls, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free((char *)ls[i].name);
    free((char *)ls[i].value);
  }
  free(ls);
}

void alerts_free(alert_t *a) {
  while (a) {
    alert_t *n = a->next;
    labels_free(a->labels, a->nlabels);
    labels_free(a->annotations, a->nannotations);
    free(a);
    a = n;
  }
}

void written_free(written_t *w, size_t n) {
  for (size_t i = 0; i < n; i++)
    labels_free(w[i].labels, w[i].nlabels);
  free(w);
}

void write_stale(rules_t *r, const char *tenant, const written_t *w, size_t n, const written_t *const *keep,
                 const size_t *nkeep, size_t nkeepsets, int64_t ts) {
  if (!n) return;
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return;
  for (size_t i = 0; i < n; i++) {
    bool kept = false;
    for (size_t k = 0; k < nkeepsets && !kept; k++)
      for (size_t j = 0; j < nkeep[k] && !kept; j++)
        kept = keep[k][j].hash == w[i].hash;
    if (kept || !w[i].nlabels) continue;
    if (tsdb_batch_series(b, w[i].labels, w[i].nlabels) == 0) tsdb_batch_sample(b, ts, tsdb_stale_nan());
  }
  tsdb_append_result_t res;
  if (tsdb_batch_series_count(b) && tsdb_append(r->opt.db, tenant, b, &res))
    log_warn("rules: cannot write staleness markers for removed rules (tenant %s)", tenant);
  tsdb_batch_free(b);
}

/* A growable, owned label set. */
typedef struct {
  tsdb_label_t *ls;
  size_t n, cap;
} lset_t;

static int lset_set(lset_t *s, const char *name, const char *value) {
  for (size_t i = 0; i < s->n; i++) {
    if (!strcmp(s->ls[i].name, name)) {
      char *v = strdup(value);
      if (!v) return MD_ENOMEM;
      free((char *)s->ls[i].value);
      s->ls[i].value = v;
      return 0;
    }
  }
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 8;
    tsdb_label_t *nl = realloc(s->ls, nc * sizeof *nl);
    if (!nl) return MD_ENOMEM;
    s->ls = nl;
    s->cap = nc;
  }
  char *n = strdup(name), *v = strdup(value);
  if (!n || !v) {
    free(n);
    free(v);
    return MD_ENOMEM;
  }
  s->ls[s->n++] = (tsdb_label_t){n, v};
  return 0;
}

static void lset_del(lset_t *s, const char *name) {
  for (size_t i = 0; i < s->n; i++) {
    if (!strcmp(s->ls[i].name, name)) {
      free((char *)s->ls[i].name);
      free((char *)s->ls[i].value);
      memmove(&s->ls[i], &s->ls[i + 1], (s->n - i - 1) * sizeof *s->ls);
      s->n--;
      return;
    }
  }
}

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const tsdb_label_t *)a)->name, ((const tsdb_label_t *)b)->name);
}

static void lset_sort(lset_t *s) {
  if (s->n > 1) qsort(s->ls, s->n, sizeof *s->ls, cmp_label); /* ls may be NULL when empty */
}

/* Drops labels with empty values (Prometheus semantics) and sorts. */
static void lset_finish(lset_t *s) {
  for (size_t i = 0; i < s->n;) {
    if (!*s->ls[i].value)
      lset_del(s, s->ls[i].name);
    else
      i++;
  }
  lset_sort(s);
}

static int expand(const tmpl_t *t, const char *raw, const tmpl_data_t *d, char **out, char *err,
                  size_t errlen) {
  if (tmpl_is_static(t)) {
    *out = strdup(raw);
    return *out ? 0 : MD_ENOMEM;
  }
  sb_t sb = {0};
  int rc = tmpl_execute(t, d, &sb, err, errlen);
  if (rc) {
    /* Prometheus puts the error text into the expansion and keeps going. */
    sb_reset(&sb);
    sb_printf(&sb, "<error expanding template: %s>", err);
  }
  *out = sb_steal(&sb);
  return 0;
}

/* Appends the rows of `batch` and tracks which label sets the rule wrote, writing stale
 * markers for the ones that vanished since the previous evaluation. */
static int write_with_staleness(rules_t *r, group_t *g, rule_t *ru, tsdb_batch_t *batch, int64_t ts) {
  size_t n = tsdb_batch_series_count(batch);
  written_t *now = calloc(n + 1, sizeof *now);
  if (!now) return MD_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const tsdb_label_t *ls;
    size_t nl;
    tsdb_batch_get(batch, i, &ls, &nl, NULL, NULL);
    now[i].hash = rules_labels_hash(ls, nl);
    now[i].labels = calloc(nl + 1, sizeof(tsdb_label_t));
    for (size_t k = 0; now[i].labels && k < nl; k++) {
      now[i].labels[k].name = strdup(ls[k].name);
      now[i].labels[k].value = strdup(ls[k].value);
    }
    now[i].nlabels = now[i].labels ? nl : 0;
  }
  for (size_t i = 0; i < ru->nwritten; i++) {
    bool still = false;
    for (size_t j = 0; j < n && !still; j++)
      still = now[j].hash == ru->written[i].hash;
    if (!still) {
      tsdb_batch_series(batch, ru->written[i].labels, ru->written[i].nlabels);
      tsdb_batch_sample(batch, ts, tsdb_stale_nan());
    }
  }
  written_free(ru->written, ru->nwritten);
  ru->written = now;
  ru->nwritten = n;
  tsdb_append_result_t res;
  int rc = tsdb_batch_series_count(batch) ? tsdb_append(r->opt.db, g->tenant, batch, &res) : 0;
  return rc;
}

static int eval_recording(rules_t *r, group_t *g, rule_t *ru, int64_t ts, promql_result_t *res, char *err,
                          size_t errlen) {
  tsdb_batch_t *batch = tsdb_batch_new();
  if (!batch) return MD_ENOMEM;
  int rc = 0;
  size_t nseries = promql_result_type(res) == PROMQL_VALUE_SCALAR ? 1 : promql_result_series_count(res);
  if (g->limit && nseries > g->limit) {
    rc = md_error(err, errlen, MD_ELIMIT, "exceeded limit of %zu with %zu series", g->limit, nseries);
    goto out;
  }
  uint64_t *seen = calloc(nseries + 1, sizeof *seen);
  if (!seen) {
    rc = MD_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < nseries && !rc; i++) {
    lset_t s = {0};
    double v;
    if (promql_result_type(res) == PROMQL_VALUE_SCALAR) {
      v = promql_result_scalar(res, NULL);
    } else {
      size_t nl;
      const tsdb_label_t *ls = promql_result_labels(res, i, &nl);
      for (size_t k = 0; k < nl; k++)
        lset_set(&s, ls[k].name, ls[k].value);
      const int64_t *pts;
      const double *pv;
      promql_result_points(res, i, &pts, &pv);
      v = pv[0];
    }
    lset_set(&s, "__name__", ru->name);
    for (size_t k = 0; k < ru->nlabels; k++)
      lset_set(&s, ru->labels[k].name, ru->labels[k].value);
    lset_finish(&s);
    seen[i] = rules_labels_hash(s.ls, s.n);
    for (size_t k = 0; k < i; k++)
      if (seen[k] == seen[i])
        rc = md_error(err, errlen, MD_ERR,
                      "vector contains metrics with the same labelset after applying rule labels");
    if (!rc && tsdb_batch_series(batch, s.ls, s.n) == 0) tsdb_batch_sample(batch, ts - g->query_offset_ms, v);
    labels_free(s.ls, s.n);
  }
  free(seen);
  /* Like Prometheus, results carry the query time (ts - query_offset), not the slot time. */
  if (!rc) rc = write_with_staleness(r, g, ru, batch, ts - g->query_offset_ms);
out:
  tsdb_batch_free(batch);
  return rc;
}

/* After a restart, looks up the alert's last ALERTS_FOR_STATE sample (within the outage
 * tolerance) and restores activeAt the way Prometheus does (rules.RestoreForState): a
 * rule whose `for` is within the grace period gets its old activeAt back; otherwise the
 * downtime does not count as pending time (activeAt moves forward by it), except that an
 * alert that was firing stays firing and one close to firing still waits the grace period. */
static void restore_for_state(rules_t *r, group_t *g, const rule_t *ru, alert_t *a, int64_t ts) {
  tsdb_matcher_t m[64];
  size_t nm = 0;
  m[nm++] = (tsdb_matcher_t){TSDB_MATCH_EQ, "__name__", "ALERTS_FOR_STATE"};
  for (size_t i = 0; i < a->nlabels && nm < 64; i++)
    m[nm++] = (tsdb_matcher_t){TSDB_MATCH_EQ, a->labels[i].name, a->labels[i].value};
  tsdb_query_t *q;
  char err[128];
  if (tsdb_select(r->opt.db, g->tenant, m, nm, ts - r->opt.outage_tolerance_ms, ts - 1, NULL, &q, err,
                  sizeof err))
    return;
  if (tsdb_query_next(q) == 1) {
    const int64_t *t;
    const double *v;
    size_t n = tsdb_query_samples(q, &t, &v);
    for (size_t i = n; i-- > 0;) {
      if (isnan(v[i])) continue;
      int64_t active = (int64_t)llround(v[i] * 1000);
      int64_t down_at = t[i] + g->query_offset_ms; /* the last evaluation before the restart */
      int64_t hold = ru->for_ms, grace = r->opt.for_grace_period_ms;
      int64_t remaining = hold - (down_at - active);
      if (hold <= grace || remaining <= 0) {
        /* as before the restart */
      } else if (remaining < grace) {
        active = ts + grace - hold;
      } else {
        active += ts - down_at;
      }
      if (active < a->active_at) a->active_at = active;
      break;
    }
  }
  tsdb_query_free(q);
}

/* Percent-encodes s for a URL query value (RFC 3986 unreserved characters kept). */
static void url_query_escape(sb_t *sb, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
        strchr("-_.~", *p)) {
      sb_putc(sb, (char)*p);
    } else {
      sb_putc(sb, '%');
      sb_putc(sb, hex[*p >> 4]);
      sb_putc(sb, hex[*p & 15]);
    }
  }
}

static json_t *alert_to_am(rules_t *r, const rule_t *ru, const alert_t *a, int64_t ts, int64_t interval) {
  json_t *labels = json_object(), *ann = json_object();
  for (size_t i = 0; i < a->nlabels; i++)
    json_object_set_new(labels, a->labels[i].name, json_string(a->labels[i].value));
  for (size_t i = 0; i < a->nannotations; i++)
    json_object_set_new(ann, a->annotations[i].name, json_string(a->annotations[i].value));
  char starts[32], ends[32];
  md_format_rfc3339(a->active_at, starts);
  int64_t end = a->state == ALERT_INACTIVE
                    ? a->resolved_at
                    : ts + 4 * (interval > r->opt.resend_delay_ms ? interval : r->opt.resend_delay_ms);
  md_format_rfc3339(end, ends);
  sb_t url = {0};
  /* Like Prometheus's: the graph page with the rule's expression in the first tab. */
  sb_puts(&url, r->opt.external_url ? r->opt.external_url : "");
  sb_puts(&url, "/graph?g0.expr=");
  url_query_escape(&url, ru->expr_text);
  sb_puts(&url, "&g0.tab=1");
  json_t *o = json_pack("{s:o, s:o, s:s, s:s, s:s}", "labels", labels, "annotations", ann, "startsAt", starts,
                        "endsAt", ends, "generatorURL", url.buf ? url.buf : "");
  sb_free(&url);
  return o;
}

static int eval_alerting(rules_t *r, group_t *g, rule_t *ru, int64_t ts, promql_result_t *res, char *err,
                         size_t errlen, json_t *to_send) {
  size_t nseries = promql_result_series_count(res);
  int rc = 0;
  alert_t *fresh = NULL; /* alerts seen in this evaluation, built first, merged after */
  for (size_t i = 0; i < nseries && !rc; i++) {
    size_t nl;
    const tsdb_label_t *ls = promql_result_labels(res, i, &nl);
    const int64_t *pts;
    const double *pv;
    promql_result_points(res, i, &pts, &pv);
    double v = pv[0];
    /* Template data: the series' labels without __name__. */
    lset_t base = {0};
    for (size_t k = 0; k < nl; k++)
      if (strcmp(ls[k].name, "__name__")) lset_set(&base, ls[k].name, ls[k].value);
    lset_sort(&base);
    tmpl_data_t d = {base.ls, base.n, r->external, r->nexternal, v};
    lset_t s = {0};
    for (size_t k = 0; k < base.n; k++)
      lset_set(&s, base.ls[k].name, base.ls[k].value);
    char terr[256];
    for (size_t k = 0; k < ru->nlabels; k++) {
      char *val;
      if (expand(ru->label_tmpls[k], ru->labels[k].value, &d, &val, terr, sizeof terr) == 0) {
        lset_set(&s, ru->labels[k].name, val);
        free(val);
      }
    }
    lset_set(&s, "alertname", ru->name);
    lset_finish(&s);
    lset_t ann = {0};
    for (size_t k = 0; k < ru->nannotations; k++) {
      char *val;
      if (expand(ru->ann_tmpls[k], ru->annotations[k].value, &d, &val, terr, sizeof terr) == 0) {
        lset_set(&ann, ru->annotations[k].name, val);
        free(val);
      }
    }
    lset_sort(&ann);
    labels_free(base.ls, base.n);
    alert_t *a = calloc(1, sizeof *a);
    if (!a) {
      labels_free(s.ls, s.n);
      labels_free(ann.ls, ann.n);
      rc = MD_ENOMEM;
      break;
    }
    a->labels = s.ls;
    a->nlabels = s.n;
    a->annotations = ann.ls;
    a->nannotations = ann.n;
    a->hash = rules_labels_hash(s.ls, s.n);
    a->value = v;
    for (alert_t *o = fresh; o; o = o->next)
      if (o->hash == a->hash)
        rc = md_error(err, errlen, MD_ERR,
                      "vector contains metrics with the same labelset after applying alert labels");
    a->next = fresh;
    fresh = a;
  }
  size_t nfresh = 0;
  for (alert_t *a = fresh; a; a = a->next)
    nfresh++;
  if (!rc && g->limit && nfresh > g->limit)
    rc = md_error(err, errlen, MD_ELIMIT, "exceeded limit of %zu with %zu alerts", g->limit, nfresh);
  if (rc) {
    alerts_free(fresh);
    return rc;
  }
  /* Merge: update existing alerts, add new ones as pending. */
  while (fresh) {
    alert_t *a = fresh;
    fresh = a->next;
    alert_t *cur = NULL;
    for (alert_t *o = ru->alerts; o; o = o->next)
      if (o->hash == a->hash && o->state != ALERT_INACTIVE) cur = o;
    if (cur) {
      cur->value = a->value;
      labels_free(cur->annotations, cur->nannotations);
      cur->annotations = a->annotations;
      cur->nannotations = a->nannotations;
      a->annotations = NULL;
      a->nannotations = 0;
      cur->keep_firing_since = 0;
      a->next = NULL;
      alerts_free(a);
      cur->resolved_at = -1; /* mark seen this round */
    } else {
      a->state = ALERT_PENDING;
      a->active_at = ts;
      a->resolved_at = -1;
      a->next = ru->alerts;
      ru->alerts = a;
      if (!ru->restored && ru->for_ms > 0) restore_for_state(r, g, ru, a, ts);
    }
  }
  ru->restored = true;
  /* Transitions and clean-up of alerts not seen. */
  alert_t **pp = &ru->alerts;
  while (*pp) {
    alert_t *a = *pp;
    if (a->resolved_at == -1) {
      a->resolved_at = 0;
      if (a->state == ALERT_PENDING && ts - a->active_at >= ru->for_ms) {
        a->state = ALERT_FIRING;
        a->fired_at = ts;
      }
    } else if (a->state == ALERT_PENDING) {
      *pp = a->next;
      a->next = NULL;
      alerts_free(a);
      continue;
    } else if (a->state == ALERT_FIRING) {
      if (ru->keep_firing_for_ms > 0) {
        if (!a->keep_firing_since) a->keep_firing_since = ts;
        if (ts - a->keep_firing_since < ru->keep_firing_for_ms) {
          pp = &a->next;
          continue;
        }
      }
      a->state = ALERT_INACTIVE;
      a->resolved_at = ts;
      a->keep_firing_since = 0;
    } else if (a->state == ALERT_INACTIVE && ts - a->resolved_at > 15 * 60000) {
      *pp = a->next;
      a->next = NULL;
      alerts_free(a);
      continue;
    }
    pp = &a->next;
  }
  /* ALERTS and ALERTS_FOR_STATE, at the query time like recorded samples. */
  int64_t sample_ts = ts - g->query_offset_ms;
  tsdb_batch_t *batch = tsdb_batch_new();
  if (!batch) return MD_ENOMEM;
  for (alert_t *a = ru->alerts; a; a = a->next) {
    if (a->state == ALERT_INACTIVE) continue;
    lset_t s = {0};
    for (size_t k = 0; k < a->nlabels; k++)
      lset_set(&s, a->labels[k].name, a->labels[k].value);
    lset_set(&s, "__name__", "ALERTS");
    lset_set(&s, "alertstate", a->state == ALERT_FIRING ? "firing" : "pending");
    lset_sort(&s);
    if (tsdb_batch_series(batch, s.ls, s.n) == 0) tsdb_batch_sample(batch, sample_ts, 1);
    lset_del(&s, "alertstate");
    lset_set(&s, "__name__", "ALERTS_FOR_STATE");
    lset_sort(&s);
    if (ru->for_ms > 0 && tsdb_batch_series(batch, s.ls, s.n) == 0)
      tsdb_batch_sample(batch, sample_ts, a->active_at / 1000.0);
    labels_free(s.ls, s.n);
  }
  rc = write_with_staleness(r, g, ru, batch, sample_ts);
  tsdb_batch_free(batch);
  /* Notifications: state changes at once, firing alerts again every resend delay. */
  for (alert_t *a = ru->alerts; a; a = a->next) {
    bool send = false;
    if (a->state == ALERT_FIRING)
      send =
          !a->last_sent_at || ts - a->last_sent_at >= r->opt.resend_delay_ms || a->last_sent_at < a->fired_at;
    else if (a->state == ALERT_INACTIVE)
      send = a->last_sent_at && a->last_sent_at < a->resolved_at;
    if (send) {
      json_array_append_new(to_send, alert_to_am(r, ru, a, ts, g->interval_ms));
      a->last_sent_at = ts;
    }
  }
  return rc;
}

/* Prometheus's label for a group: "<file>;<group>". */
static void group_key(const group_t *g, char *buf, size_t n) {
  snprintf(buf, n, "%s;%s", g->file, g->name);
}

void rules_metrics_missed(rules_t *r, group_t *g, uint64_t missed) {
  if (!r->opt.metrics || !missed) return;
  char key[512];
  group_key(g, key, sizeof key);
  const char *kv[] = {"rule_group", key};
  metrics_counter_add(
      metrics_counter_v(
          r->opt.metrics, "prometheus_rule_group_iterations_missed_total",
          "The total number of rule group evaluations missed due to slow rule group evaluation.", kv, 1),
      (double)missed);
  metrics_counter_add(
      metrics_counter_v(r->opt.metrics, "prometheus_rule_group_iterations_total",
                        "The total number of scheduled rule group evaluations, whether executed or missed.",
                        kv, 1),
      (double)missed);
}

/* Self-metrics after one evaluation of g (caller holds r->mu). */
static void publish_group(rules_t *r, const group_t *g, uint64_t nfailed) {
  metrics_registry_t *m = r->opt.metrics;
  if (!m) return;
  char key[512];
  group_key(g, key, sizeof key);
  const char *kv[] = {"rule_group", key};
  metrics_counter_add(metrics_counter_v(m, "prometheus_rule_evaluations_total",
                                        "The total number of rule evaluations.", kv, 1),
                      (double)g->nrules);
  /* Created at 0 even when nothing fails, so that rate() and alerts on it see the series. */
  metrics_counter_add(metrics_counter_v(m, "prometheus_rule_evaluation_failures_total",
                                        "The total number of rule evaluation failures.", kv, 1),
                      (double)nfailed);
  metrics_counter_inc(metrics_counter_v(
      m, "prometheus_rule_group_iterations_total",
      "The total number of scheduled rule group evaluations, whether executed or missed.", kv, 1));
  metrics_counter_add(
      metrics_counter_v(
          m, "prometheus_rule_group_iterations_missed_total",
          "The total number of rule group evaluations missed due to slow rule group evaluation.", kv, 1),
      0);
  metrics_gauge_set(metrics_gauge_v(m, "prometheus_rule_group_last_duration_seconds",
                                    "The duration of the last rule group evaluation.", kv, 1),
                    (double)g->eval_ns / 1e9);
  metrics_gauge_set(metrics_gauge_v(m, "prometheus_rule_group_last_evaluation_timestamp_seconds",
                                    "The timestamp of the last rule group evaluation in seconds.", kv, 1),
                    (double)g->last_eval_ms / 1000.0);
  metrics_gauge_set(
      metrics_gauge_v(m, "prometheus_rule_group_interval_seconds", "The interval of a rule group.", kv, 1),
      (double)g->interval_ms / 1000.0);
  metrics_gauge_set(metrics_gauge_v(m, "prometheus_rule_group_rules", "The number of rules.", kv, 1),
                    (double)g->nrules);
  uint64_t firing = 0, pending = 0;
  for (size_t i = 0; i < r->ngroups; i++)
    for (size_t j = 0; j < r->groups[i]->nrules; j++)
      for (const alert_t *a = r->groups[i]->rules[j]->alerts; a; a = a->next) {
        firing += a->state == ALERT_FIRING;
        pending += a->state == ALERT_PENDING;
      }
  metrics_gauge_set(metrics_gauge(m, "metricsd_rules_alerts", "Active alerts by state, all tenants.", "state",
                                  "firing", (const char *)NULL),
                    (double)firing);
  metrics_gauge_set(metrics_gauge(m, "metricsd_rules_alerts", "Active alerts by state, all tenants.", "state",
                                  "pending", (const char *)NULL),
                    (double)pending);
}

int group_eval(rules_t *r, group_t *g, int64_t ts) {
  int64_t t0 = md_mono_ns();
  int failed = 0;
  uint64_t nfailed = 0;
  json_t *to_send = json_array();
  for (size_t i = 0; i < g->nrules; i++) {
    rule_t *ru = g->rules[i];
    int64_t r0 = md_mono_ns();
    promql_result_t *res = NULL;
    char err[256] = "";
    int rc = promql_eval_instant(r->opt.db, g->tenant, ru->expr, ts - g->query_offset_ms, NULL, &res, err,
                                 sizeof err);
    if (!rc) {
      rc = ru->is_alert ? eval_alerting(r, g, ru, ts, res, err, sizeof err, to_send)
                        : eval_recording(r, g, ru, ts, res, err, sizeof err);
      if (rc && !err[0]) snprintf(err, sizeof err, "cannot store results (error %d)", rc);
    }
    promql_result_free(res);
    ru->last_eval_ms = ts;
    ru->eval_ns = md_mono_ns() - r0;
    atomic_fetch_add(&r->evaluations, 1);
    g->evaluations++;
    if (rc) {
      g->failures++;
      ru->health = -1;
      snprintf(ru->last_error, sizeof ru->last_error, "%s", err);
      atomic_fetch_add(&r->failures, 1);
      log_warn("rules: group %s rule %s: evaluation failed: %s", g->name, ru->name, err);
      failed = 1;
      nfailed++;
    } else {
      ru->health = 1;
      ru->last_error[0] = 0;
    }
  }
  if (json_array_size(to_send))
    notifier_send(r->notifier, to_send);
  else
    json_decref(to_send);
  if (g->nstale) {
    /* Series of rules a reload removed: stale now, unless a rule wrote them this round. */
    const written_t *keep[g->nrules + 1];
    size_t nkeep[g->nrules + 1];
    for (size_t i = 0; i < g->nrules; i++) {
      keep[i] = g->rules[i]->written;
      nkeep[i] = g->rules[i]->nwritten;
    }
    write_stale(r, g->tenant, g->stale, g->nstale, keep, nkeep, g->nrules, ts - g->query_offset_ms);
    written_free(g->stale, g->nstale);
    g->stale = NULL;
    g->nstale = 0;
  }
  g->last_eval_ms = ts;
  g->iterations++;
  r->evaluated = true;
  g->eval_ns = md_mono_ns() - t0;
  r->last_duration_ns = g->eval_ns;
  publish_group(r, g, nfailed);
  return failed ? MD_ERR : 0;
}
