/* Unit tests for rule evaluation and notification against a real tsdb in a temporary
 * directory: for / keep_firing_for timing at exact evaluation steps, pending → firing →
 * resolved, ordering within a group, recording rules, group limit, query_offset,
 * failures that do not stop the loop, `for` state restored after a restart, reload keeping
 * unchanged alerts, template errors at load time, and the notifier (several Alertmanagers,
 * batching, resend interval, retries with backoff, bounded queue with drop counting,
 * webhook HMAC) against fake receivers on 127.0.0.1.
 *
 * Evaluation is driven with rules_eval_all at chosen timestamps, so timing assertions are
 * exact and independent of machine load; only the loop and notifier tests use real time,
 * with bounded waits. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rules/rules_internal.h"

#define T0 INT64_C(1700000000000) /* 2023-11-14T22:13:20Z, on a minute boundary */
#define MIN INT64_C(60000)

typedef struct fixture {
  char dir[64];
  tsdb_t *db;
  rules_t *r;
} fixture_t;

static void open_db(fixture_t *f) {
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.retention_ms = 0;
  o.background = false;
  char err[256];
  char sub[128];
  snprintf(sub, sizeof sub, "%s/db", f->dir);
  assert_int_equal(tsdb_open(sub, &o, &f->db, err, sizeof err), 0);
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/md-rules-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  open_db(f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  rules_free(f->r);
  tsdb_close(f->db);
  md_rm_rf(f->dir);
  free(f);
  return 0;
}

static rules_t *new_rules(fixture_t *f, rules_options_t *opt) {
  rules_options_t def;
  if (!opt) {
    rules_options_default(&def);
    opt = &def;
  }
  opt->db = f->db;
  char err[512];
  rules_t *r = NULL;
  assert_int_equal(rules_new(opt, &r, err, sizeof err), 0);
  return r;
}

/* Writes text to <dir>/name and loads it as the only rule file; returns rules_load_files'
 * status (err filled). */
static int load_text(fixture_t *f, const char *name, const char *text, char *err, size_t errlen) {
  char path[160];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  assert_int_equal(fclose(fp), 0);
  const char *globs[] = {path};
  return rules_load_files(f->r, globs, 1, err, errlen);
}

static void load_ok(fixture_t *f, const char *text) {
  char err[1024] = "";
  int rc = load_text(f, "rules.yml", text, err, sizeof err);
  if (rc) fail_msg("load failed: %s", err);
}

/* Appends one sample to series name{k=v} (k may be NULL). */
static void put(fixture_t *f, const char *name, const char *k, const char *v, int64_t ts, double val) {
  tsdb_batch_t *b = tsdb_batch_new();
  assert_non_null(b);
  tsdb_label_t ls[2] = {{"__name__", name}, {k, v}};
  assert_int_equal(tsdb_batch_series(b, ls, k ? 2 : 1), 0);
  assert_int_equal(tsdb_batch_sample(b, ts, val), 0);
  tsdb_append_result_t res;
  assert_int_equal(tsdb_append(f->db, "default", b, &res), 0);
  assert_int_equal(res.samples_rejected, 0);
  tsdb_batch_free(b);
}

/* The value of the one series matching the matchers at exactly ts; NAN when absent.
 * A stale marker reads as NAN too (tsdb_is_stale_nan distinguishes when needed). */
static double value_at(fixture_t *f, const tsdb_matcher_t *m, size_t nm, int64_t ts) {
  tsdb_query_t *q;
  char err[256];
  assert_int_equal(tsdb_select(f->db, "default", m, nm, ts, ts, NULL, &q, err, sizeof err), 0);
  double out = NAN;
  int series = 0;
  while (tsdb_query_next(q) == 1) {
    series++;
    const int64_t *t;
    const double *v;
    size_t n = tsdb_query_samples(q, &t, &v);
    for (size_t i = 0; i < n; i++)
      if (t[i] == ts) out = v[i];
  }
  tsdb_query_free(q);
  assert_true(series <= 1);
  return out;
}

static double alerts_series(fixture_t *f, const char *alertname, const char *state, int64_t ts) {
  tsdb_matcher_t m[] = {{TSDB_MATCH_EQ, "__name__", "ALERTS"},
                        {TSDB_MATCH_EQ, "alertname", alertname},
                        {TSDB_MATCH_EQ, "alertstate", state}};
  return value_at(f, m, 3, ts);
}

/* The alert of rule `name` whose label `k` is `v` (NULL: the first); NULL when none. */
static alert_t *find_alert(rules_t *r, const char *name, const char *k, const char *v) {
  for (size_t i = 0; i < r->ngroups; i++)
    for (size_t j = 0; j < r->groups[i]->nrules; j++) {
      rule_t *ru = r->groups[i]->rules[j];
      if (strcmp(ru->name, name)) continue;
      for (alert_t *a = ru->alerts; a; a = a->next) {
        if (!k) return a;
        for (size_t l = 0; l < a->nlabels; l++)
          if (!strcmp(a->labels[l].name, k) && !strcmp(a->labels[l].value, v)) return a;
      }
    }
  return NULL;
}

static alert_state_t state_of(rules_t *r, const char *name, const char *k, const char *v) {
  alert_t *a = find_alert(r, name, k, v);
  return a ? a->state : ALERT_INACTIVE;
}

static const char *annotation(const alert_t *a, const char *name) {
  for (size_t i = 0; i < a->nannotations; i++)
    if (!strcmp(a->annotations[i].name, name)) return a->annotations[i].value;
  return NULL;
}

static const char *label(const alert_t *a, const char *name) {
  for (size_t i = 0; i < a->nlabels; i++)
    if (!strcmp(a->labels[i].name, name)) return a->labels[i].value;
  return NULL;
}

/* ---- evaluation semantics ------------------------------------------------------------ */

static void test_for_pending_firing_resolved(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - alert: High\n"
             "        expr: m > 10\n"
             "        for: 2m\n"
             "        labels:\n"
             "          severity: '{{ if gt $value 15.0 }}critical{{ else }}warning{{ end }}'\n"
             "        annotations:\n"
             "          summary: '{{ $labels.job }} is at {{ $value }}'\n");
  for (int i = 0; i <= 2; i++)
    put(f, "m", "job", "a", T0 + i * MIN, 20);
  put(f, "m", "job", "a", T0 + 3 * MIN, 0);

  assert_int_equal(rules_eval_all(f->r, T0), 0);
  alert_t *a = find_alert(f->r, "High", NULL, NULL);
  assert_non_null(a);
  assert_int_equal(a->state, ALERT_PENDING);
  assert_int_equal(a->active_at, T0);
  assert_string_equal(label(a, "severity"), "critical");
  assert_string_equal(label(a, "job"), "a");
  assert_string_equal(annotation(a, "summary"), "a is at 20");
  assert_true(alerts_series(f, "High", "pending", T0) == 1);
  tsdb_matcher_t fs[] = {{TSDB_MATCH_EQ, "__name__", "ALERTS_FOR_STATE"},
                         {TSDB_MATCH_EQ, "alertname", "High"}};
  assert_true(value_at(f, fs, 2, T0) == (double)(T0 / 1000));

  /* One step before `for` has elapsed: still pending. */
  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  assert_int_equal(state_of(f->r, "High", NULL, NULL), ALERT_PENDING);
  assert_true(isnan(alerts_series(f, "High", "firing", T0 + MIN)));

  /* Exactly `for` after activeAt: firing; the pending series gets a stale marker. */
  assert_int_equal(rules_eval_all(f->r, T0 + 2 * MIN), 0);
  a = find_alert(f->r, "High", NULL, NULL);
  assert_int_equal(a->state, ALERT_FIRING);
  assert_int_equal(a->fired_at, T0 + 2 * MIN);
  assert_int_equal(a->active_at, T0);
  assert_true(alerts_series(f, "High", "firing", T0 + 2 * MIN) == 1);
  assert_true(tsdb_is_stale_nan(alerts_series(f, "High", "pending", T0 + 2 * MIN)));
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.alerts_firing, 1);
  assert_int_equal(st.alerts_pending, 0);

  /* Condition false: resolved at once (no keep_firing_for); ALERTS goes stale. */
  assert_int_equal(rules_eval_all(f->r, T0 + 3 * MIN), 0);
  a = find_alert(f->r, "High", NULL, NULL);
  assert_non_null(a); /* kept as resolved for notification */
  assert_int_equal(a->state, ALERT_INACTIVE);
  assert_int_equal(a->resolved_at, T0 + 3 * MIN);
  assert_true(tsdb_is_stale_nan(alerts_series(f, "High", "firing", T0 + 3 * MIN)));
  sb_t sb = {0};
  rules_json_active(f->r, "default", &sb);
  assert_string_equal(sb.buf, "{\"alerts\":[]}");
  sb_free(&sb);
}

static void test_keep_firing_for(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - alert: Flappy\n"
             "        expr: m > 10\n"
             "        keep_firing_for: 2m\n");
  /* a: true once. b: true, false, true again (resets the keep-firing clock), then false. */
  static const double va[] = {20, 0, 0, 0, 0, 0}, vb[] = {20, 0, 20, 0, 0, 0};
  for (int i = 0; i < 6; i++) {
    put(f, "m", "job", "a", T0 + i * MIN, va[i]);
    put(f, "m", "job", "b", T0 + i * MIN, vb[i]);
  }
  /* for: 0 → firing at the first evaluation. */
  static const alert_state_t want_a[] = {ALERT_FIRING,   ALERT_FIRING,   ALERT_FIRING,
                                         ALERT_INACTIVE, ALERT_INACTIVE, ALERT_INACTIVE};
  static const alert_state_t want_b[] = {ALERT_FIRING, ALERT_FIRING, ALERT_FIRING,
                                         ALERT_FIRING, ALERT_FIRING, ALERT_INACTIVE};
  for (int i = 0; i < 6; i++) {
    assert_int_equal(rules_eval_all(f->r, T0 + i * MIN), 0);
    if (state_of(f->r, "Flappy", "job", "a") != want_a[i] ||
        state_of(f->r, "Flappy", "job", "b") != want_b[i])
      fail_msg("step %d: a=%d (want %d) b=%d (want %d)", i, state_of(f->r, "Flappy", "job", "a"), want_a[i],
               state_of(f->r, "Flappy", "job", "b"), want_b[i]);
  }
  /* While kept firing, the alert says since when. */
  assert_int_equal(rules_eval_all(f->r, T0 + 6 * MIN), 0);
  alert_t *a = find_alert(f->r, "Flappy", "job", "a");
  assert_int_equal(a->resolved_at, T0 + 3 * MIN);
}

static void test_ordering_recording_then_alert(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - record: job:m:double\n"
             "        expr: m * 2\n"
             "        labels: {source: rule}\n"
             "      - record: job:m:double_plus_one\n"
             "        expr: job:m:double + 1\n"
             "      - alert: DoubleHigh\n"
             "        expr: job:m:double > 30\n");
  put(f, "m", "job", "a", T0, 20);
  put(f, "m", "job", "a", T0 + MIN, 10);
  /* One evaluation: the later rules already see the records made at the same timestamp. */
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  tsdb_matcher_t m1[] = {{TSDB_MATCH_EQ, "__name__", "job:m:double"},
                         {TSDB_MATCH_EQ, "job", "a"},
                         {TSDB_MATCH_EQ, "source", "rule"}};
  assert_true(value_at(f, m1, 3, T0) == 40);
  tsdb_matcher_t m2[] = {{TSDB_MATCH_EQ, "__name__", "job:m:double_plus_one"}};
  assert_true(value_at(f, m2, 1, T0) == 41);
  alert_t *a = find_alert(f->r, "DoubleHigh", NULL, NULL);
  assert_non_null(a);
  assert_int_equal(a->state, ALERT_FIRING);
  assert_true(a->value == 40);
  assert_string_equal(label(a, "source"), "rule");

  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  assert_true(value_at(f, m1, 3, T0 + MIN) == 20);
  assert_int_equal(state_of(f->r, "DoubleHigh", NULL, NULL), ALERT_INACTIVE);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.evaluations, 6);
  assert_int_equal(st.evaluation_failures, 0);
}

static void test_group_labels(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    labels: {team: db, tier: '2'}\n"
             "    rules:\n"
             "      - record: m:copy\n"
             "        expr: m\n"
             "      - alert: Up\n"
             "        expr: m > 0\n"
             "        labels: {tier: '1'}\n");
  put(f, "m", "job", "a", T0, 1);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  tsdb_matcher_t m[] = {
      {TSDB_MATCH_EQ, "__name__", "m:copy"}, {TSDB_MATCH_EQ, "team", "db"}, {TSDB_MATCH_EQ, "tier", "2"}};
  assert_true(value_at(f, m, 3, T0) == 1);
  alert_t *a = find_alert(f->r, "Up", NULL, NULL);
  assert_non_null(a);
  assert_string_equal(label(a, "team"), "db");
  assert_string_equal(label(a, "tier"), "1"); /* the rule's own label wins */
}

static void test_group_limit(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: limited\n"
             "    limit: 1\n"
             "    rules:\n"
             "      - record: too_many\n"
             "        expr: m\n"
             "      - alert: TooManyAlerts\n"
             "        expr: m > 0\n"
             "      - record: just_one\n"
             "        expr: sum(m)\n");
  put(f, "m", "job", "a", T0, 1);
  put(f, "m", "job", "b", T0, 2);
  assert_int_not_equal(rules_eval_all(f->r, T0), 0);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.evaluations, 3);
  assert_int_equal(st.evaluation_failures, 2);
  /* Nothing of the failing rules is stored; the rule after them still ran. */
  tsdb_matcher_t m1[] = {{TSDB_MATCH_EQ, "__name__", "too_many"}};
  assert_true(isnan(value_at(f, m1, 1, T0)));
  assert_null(find_alert(f->r, "TooManyAlerts", NULL, NULL));
  tsdb_matcher_t m2[] = {{TSDB_MATCH_EQ, "__name__", "just_one"}};
  assert_true(value_at(f, m2, 1, T0) == 3);
  sb_t sb = {0};
  rules_json_rules(f->r, "default", NULL, &sb);
  assert_non_null(strstr(sb.buf, "exceeded limit of 1 with 2 series"));
  assert_non_null(strstr(sb.buf, "exceeded limit of 1 with 2 alerts"));
  assert_non_null(strstr(sb.buf, "\"health\":\"err\""));
  sb_free(&sb);
}

static void test_rules_api_type_filter(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: only-records\n"
             "    rules: [{record: r1, expr: vector(1)}]\n"
             "  - name: mixed\n"
             "    rules: [{record: r2, expr: vector(1)}, {alert: A, expr: vector(1)}]\n");
  sb_t sb = {0};
  rules_json_rules(f->r, "default", "alert", &sb);
  json_t *j = json_loads(sb.buf, 0, NULL);
  assert_non_null(j);
  json_t *groups = json_object_get(j, "groups");
  assert_int_equal(json_array_size(groups), 1); /* the group without alerts is left out */
  json_t *g = json_array_get(groups, 0);
  assert_string_equal(json_string_value(json_object_get(g, "name")), "mixed");
  assert_int_equal(json_array_size(json_object_get(g, "rules")), 1);
  json_decref(j);
  sb_reset(&sb);
  rules_json_rules(f->r, "default", NULL, &sb);
  j = json_loads(sb.buf, 0, NULL);
  assert_int_equal(json_array_size(json_object_get(j, "groups")), 2);
  json_decref(j);
  sb_reset(&sb);
  rules_json_rules(f->r, "someone-else", NULL, &sb);
  assert_string_equal(sb.buf, "{\"groups\":[]}");
  sb_free(&sb);
}

static void test_query_offset(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: delayed\n"
             "    interval: 1m\n"
             "    query_offset: 1m\n"
             "    rules:\n"
             "      - record: m:offset\n"
             "        expr: m\n"
             "      - alert: SeenLate\n"
             "        expr: m > 1\n");
  put(f, "m", "job", "a", T0, 1);
  put(f, "m", "job", "a", T0 + MIN, 2);
  /* At T0+1m the group queries T0: it sees 1, not the newer 2, and stores at T0. */
  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  tsdb_matcher_t m[] = {{TSDB_MATCH_EQ, "__name__", "m:offset"}};
  assert_true(value_at(f, m, 1, T0) == 1);
  assert_true(isnan(value_at(f, m, 1, T0 + MIN)));
  assert_null(find_alert(f->r, "SeenLate", NULL, NULL));
  /* At T0+2m it queries T0+1m. */
  assert_int_equal(rules_eval_all(f->r, T0 + 2 * MIN), 0);
  assert_true(value_at(f, m, 1, T0 + MIN) == 2);
  alert_t *a = find_alert(f->r, "SeenLate", NULL, NULL);
  assert_non_null(a);
  assert_int_equal(a->active_at, T0 + 2 * MIN);
  assert_true(alerts_series(f, "SeenLate", "firing", T0 + MIN) == 1);
}

typedef struct group_counts {
  uint64_t evaluations, failures, iterations;
} group_counts_t;

static void count_group(void *ctx, const rules_group_stats_t *g) {
  group_counts_t *c = ctx;
  c->evaluations += g->evaluations;
  c->failures += g->failures;
  c->iterations += g->iterations;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void test_failures_do_not_stop_the_loop(void **state) {
  fixture_t *f = *state;
  rules_options_t opt;
  rules_options_default(&opt);
  metrics_registry_t *m = metrics_registry_new();
  assert_non_null(m);
  opt.metrics = m;
  f->r = new_rules(f, &opt);
  load_ok(f, "groups:\n"
             "  - name: fast\n"
             "    interval: 100ms\n"
             "    rules:\n"
             "      - record: dup\n"
             "        expr: '{__name__=~\"fa|fb\"}'\n"
             "      - record: good\n"
             "        expr: fa + 1\n");
  int64_t now = md_now_ms();
  put(f, "fa", NULL, NULL, now, 1);
  put(f, "fb", NULL, NULL, now, 2);
  assert_int_equal(rules_start(f->r), 0);
  group_counts_t c = {0};
  for (int i = 0; i < 200; i++) { /* up to 20 s on a loaded machine */
    memset(&c, 0, sizeof c);
    rules_foreach_group(f->r, count_group, &c);
    if (c.iterations >= 3) break;
    sleep_ms(100);
  }
  rules_stop(f->r);
  memset(&c, 0, sizeof c);
  rules_foreach_group(f->r, count_group, &c);
  assert_true(c.iterations >= 3);
  /* Each iteration: the duplicate-labelset rule fails, the next rule still runs. */
  assert_int_equal(c.evaluations, 2 * c.iterations);
  assert_int_equal(c.failures, c.iterations);
  sb_t sb = {0};
  rules_json_rules(f->r, "default", "record", &sb);
  assert_non_null(strstr(sb.buf, "same labelset"));
  sb_free(&sb);
  tsdb_matcher_t good[] = {{TSDB_MATCH_EQ, "__name__", "good"}};
  tsdb_query_t *q;
  char err[128];
  assert_int_equal(
      tsdb_select(f->db, "default", good, 1, now - 1000, md_now_ms() + 1000, NULL, &q, err, sizeof err), 0);
  assert_int_equal(tsdb_query_next(q), 1);
  const int64_t *t;
  const double *v;
  assert_true(tsdb_query_samples(q, &t, &v) >= 3);
  assert_true(v[0] == 2);
  tsdb_query_free(q);
  /* The same counts as self-metrics, labelled like Prometheus's. */
  rules_free(f->r);
  f->r = NULL;
  assert_true(metrics_family_sum(m, "prometheus_rule_evaluations_total") == (double)c.evaluations);
  assert_true(metrics_family_sum(m, "prometheus_rule_evaluation_failures_total") == (double)c.failures);
  assert_true(metrics_family_sum(m, "prometheus_rule_group_iterations_total") >= (double)c.iterations);
  sb_t text = {0};
  assert_int_equal(metrics_expose(m, &text, METRICS_FMT_PROMETHEUS), 0);
  char want[256];
  snprintf(want, sizeof want, "prometheus_rule_group_rules{rule_group=\"%s/rules.yml;fast\"} 2", f->dir);
  if (!strstr(text.buf, want)) fail_msg("missing %s in\n%s", want, text.buf);
  assert_non_null(strstr(text.buf, "prometheus_rule_group_last_duration_seconds{"));
  assert_non_null(strstr(text.buf, "prometheus_rule_group_last_evaluation_timestamp_seconds{"));
  assert_non_null(strstr(text.buf, "prometheus_rule_group_interval_seconds{rule_group="));
  sb_free(&text);
  metrics_registry_free(m);
}

static const char *restore_rules = "groups:\n"
                                   "  - name: g\n"
                                   "    interval: 1m\n"
                                   "    rules:\n"
                                   "      - alert: Slow\n"
                                   "        expr: m > 0\n"
                                   "        for: 10m\n";

static void test_for_state_restored_after_restart(void **state) {
  fixture_t *f = *state;
  for (int i = 0; i <= 12; i++)
    put(f, "m", "job", "a", T0 + i * MIN, 1);
  f->r = new_rules(f, NULL);
  load_ok(f, restore_rules);
  for (int i = 0; i <= 3; i++)
    assert_int_equal(rules_eval_all(f->r, T0 + i * MIN), 0);
  assert_int_equal(find_alert(f->r, "Slow", NULL, NULL)->active_at, T0);

  /* Restart: rule manager and database closed and reopened (the WAL brings
   * ALERTS_FOR_STATE back). */
  rules_free(f->r);
  f->r = NULL;
  tsdb_close(f->db);
  f->db = NULL;
  open_db(f);
  f->r = new_rules(f, NULL);
  load_ok(f, restore_rules);
  assert_int_equal(rules_eval_all(f->r, T0 + 5 * MIN), 0);
  alert_t *a = find_alert(f->r, "Slow", NULL, NULL);
  assert_non_null(a);
  assert_int_equal(a->state, ALERT_PENDING);
  assert_int_equal(a->active_at, T0);
  /* Fires 10 min after the original activeAt, not 10 min after the restart. */
  assert_int_equal(rules_eval_all(f->r, T0 + 9 * MIN), 0);
  assert_int_equal(state_of(f->r, "Slow", NULL, NULL), ALERT_PENDING);
  assert_int_equal(rules_eval_all(f->r, T0 + 10 * MIN), 0);
  assert_int_equal(state_of(f->r, "Slow", NULL, NULL), ALERT_FIRING);
}

/* Prometheus's rules for a `for` longer than the grace period (10 m): downtime does not count
 * as pending time, and an alert near firing still waits the grace period after a restart. */
static void test_restore_with_for_longer_than_grace_period(void **state) {
  fixture_t *f = *state;
  static const char *text = "groups:\n"
                            "  - name: g\n"
                            "    interval: 1m\n"
                            "    rules:\n"
                            "      - alert: Long\n"
                            "        expr: m > 0\n"
                            "        for: 1h\n";
  for (int i = 0; i <= 120; i++)
    put(f, "m", "job", "a", T0 + i * MIN, 1);
  /* Pending 10 m, down 20 m: 50 m left, so activeAt moves forward by the 20 m. */
  f->r = new_rules(f, NULL);
  load_ok(f, text);
  for (int i = 0; i <= 10; i++)
    assert_int_equal(rules_eval_all(f->r, T0 + i * MIN), 0);
  rules_free(f->r);
  f->r = new_rules(f, NULL);
  load_ok(f, text);
  assert_int_equal(rules_eval_all(f->r, T0 + 30 * MIN), 0);
  assert_int_equal(find_alert(f->r, "Long", NULL, NULL)->active_at, T0 + 20 * MIN);
  /* Evaluated on to T0+75m (55 m pending since the restored T0+20m), down 5 m: 5 m left,
   * less than the grace period, so it fires 10 m after the restart, not 5 m after. */
  for (int i = 31; i <= 75; i++)
    assert_int_equal(rules_eval_all(f->r, T0 + i * MIN), 0);
  rules_free(f->r);
  f->r = new_rules(f, NULL);
  load_ok(f, text);
  assert_int_equal(rules_eval_all(f->r, T0 + 80 * MIN), 0);
  alert_t *a = find_alert(f->r, "Long", NULL, NULL);
  assert_int_equal(a->active_at, T0 + 80 * MIN + 10 * MIN - 60 * MIN);
  assert_int_equal(rules_eval_all(f->r, T0 + 89 * MIN), 0);
  assert_int_equal(state_of(f->r, "Long", NULL, NULL), ALERT_PENDING);
  assert_int_equal(rules_eval_all(f->r, T0 + 90 * MIN), 0);
  assert_int_equal(state_of(f->r, "Long", NULL, NULL), ALERT_FIRING);
}

static void test_restore_ignores_state_older_than_outage_tolerance(void **state) {
  fixture_t *f = *state;
  for (int i = 0; i <= 40; i++)
    put(f, "m", "job", "a", T0 + i * MIN, 1);
  f->r = new_rules(f, NULL);
  load_ok(f, restore_rules);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  rules_free(f->r);
  rules_options_t opt;
  rules_options_default(&opt);
  opt.outage_tolerance_ms = 30 * MIN;
  f->r = new_rules(f, &opt);
  load_ok(f, restore_rules);
  /* 40 min later the saved activeAt is past the 30 min tolerance: the alert starts afresh. */
  assert_int_equal(rules_eval_all(f->r, T0 + 40 * MIN), 0);
  assert_int_equal(find_alert(f->r, "Slow", NULL, NULL)->active_at, T0 + 40 * MIN);
}

static void test_reload_keeps_unchanged_alerts(void **state) {
  fixture_t *f = *state;
  for (int i = 0; i <= 5; i++)
    put(f, "m", "job", "a", T0 + i * MIN, 1);
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - alert: KeepMe\n"
             "        expr: m > 0\n"
             "        for: 10m\n"
             "      - alert: ChangeMe\n"
             "        expr: m > 0\n"
             "        for: 10m\n");
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - alert: New\n"
             "        expr: m > 0\n"
             "        for: 10m\n"
             "      - alert: KeepMe\n"
             "        expr: m > 0\n"
             "        for: 10m\n"
             "        annotations: {summary: annotations may change}\n"
             "      - alert: ChangeMe\n"
             "        expr: m > 0.5\n"
             "        for: 10m\n");
  /* Right after the reload, before any evaluation: state carried for the unchanged rule only. */
  alert_t *a = find_alert(f->r, "KeepMe", NULL, NULL);
  assert_non_null(a);
  assert_int_equal(a->state, ALERT_PENDING);
  assert_int_equal(a->active_at, T0);
  assert_null(find_alert(f->r, "ChangeMe", NULL, NULL));
  assert_int_equal(rules_eval_all(f->r, T0 + 2 * MIN), 0);
  assert_int_equal(find_alert(f->r, "KeepMe", NULL, NULL)->active_at, T0);
  /* A changed or new rule starts afresh (no restore from ALERTS_FOR_STATE after start-up). */
  assert_int_equal(find_alert(f->r, "ChangeMe", NULL, NULL)->active_at, T0 + 2 * MIN);
  assert_int_equal(find_alert(f->r, "New", NULL, NULL)->active_at, T0 + 2 * MIN);
  assert_string_equal(annotation(find_alert(f->r, "KeepMe", NULL, NULL), "summary"),
                      "annotations may change");
}

static void test_runtime_rule_validation(void **state) {
  fixture_t *f = *state;
  rules_options_t opt;
  rules_options_default(&opt);
  opt.data_dir = f->dir;
  f->r = new_rules(f, &opt);
  static const char *const bad[] = {
      "{\"alert\":\"X\",\"expr\":\"vector(1)\",\"interval\":\"0s\"}",
      "{\"alert\":\"X\",\"expr\":\"vector(1)\",\"interval\":-5}",
      "{\"alert\":\"X\",\"expr\":\"vector(1)\",\"group\":7}",
      "{\"alert\":\"X\",\"expr\":\"vector(1)\",\"group\":\"\"}",
      "{\"alert\":\"X\",\"expr\":\"rate(up[5m]\"}",
      "{\"alert\":\"X\",\"expr\":\"up\",\"annotations\":{\"a\":\"{{ range $labels }}{{ end }}\"}}",
      "{\"record\":\"bad name\",\"expr\":\"up\"}",
      "{\"alert\":\"X\",\"record\":\"y\",\"expr\":\"up\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    json_t *body = json_loads(bad[i], 0, NULL);
    assert_non_null(body);
    char id[40], err[512] = "";
    int rc = rules_runtime_put(f->r, "default", NULL, body, id, err, sizeof err);
    json_decref(body);
    if (rc != MD_EINVAL || !err[0]) fail_msg("accepted or no message: %s (rc %d)", bad[i], rc);
  }
  /* A valid one with its own group and interval is scheduled on that interval. */
  json_t *ok = json_loads(
      "{\"record\":\"rt:one\",\"expr\":\"vector(1)\",\"group\":\"mine\",\"interval\":\"10s\"}", 0, NULL);
  char id[40], err[512] = "";
  assert_int_equal(rules_runtime_put(f->r, "default", NULL, ok, id, err, sizeof err), 0);
  json_decref(ok);
  sb_t sb = {0};
  rules_json_rules(f->r, "default", NULL, &sb);
  assert_non_null(strstr(sb.buf, "\"name\":\"mine\""));
  assert_non_null(strstr(sb.buf, "\"interval\":10,"));
  sb_free(&sb);
}

static void test_reload_marks_removed_series_stale(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - record: gone\n"
             "        expr: vector(1)\n"
             "      - record: changed\n"
             "        expr: vector(2)\n"
             "      - record: kept\n"
             "        expr: vector(3)\n"
             "  - name: removed-group\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - record: in_removed_group\n"
             "        expr: vector(4)\n");
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  load_ok(f, "groups:\n"
             "  - name: g\n"
             "    interval: 1m\n"
             "    rules:\n"
             "      - record: changed\n"
             "        expr: vector(20)\n"
             "      - record: kept\n"
             "        expr: vector(3)\n");
  /* The removed group's series end right after its last evaluation. */
  tsdb_matcher_t rg[] = {{TSDB_MATCH_EQ, "__name__", "in_removed_group"}};
  assert_true(tsdb_is_stale_nan(value_at(f, rg, 1, T0 + 1)));
  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  tsdb_matcher_t gone[] = {{TSDB_MATCH_EQ, "__name__", "gone"}};
  assert_true(tsdb_is_stale_nan(value_at(f, gone, 1, T0 + MIN)));
  /* A changed rule writing the same series keeps it going: no marker, the new value. */
  tsdb_matcher_t ch[] = {{TSDB_MATCH_EQ, "__name__", "changed"}};
  assert_true(value_at(f, ch, 1, T0 + MIN) == 20);
  tsdb_matcher_t kept[] = {{TSDB_MATCH_EQ, "__name__", "kept"}};
  assert_true(value_at(f, kept, 1, T0 + MIN) == 3);
  /* Marked once: nothing more at the next evaluation. */
  assert_int_equal(rules_eval_all(f->r, T0 + 2 * MIN), 0);
  assert_true(isnan(value_at(f, gone, 1, T0 + 2 * MIN)) &&
              !tsdb_is_stale_nan(value_at(f, gone, 1, T0 + 2 * MIN)));
}

static void test_template_errors_name_the_rule(void **state) {
  fixture_t *f = *state;
  f->r = new_rules(f, NULL);
  load_ok(f, "groups: [{name: g, rules: [{record: ok_rule, expr: vector(1)}]}]\n");
  static const char *const bad[] = {
      "{{ range $labels }}x{{ end }}", "{{ template \"x\" }}", "{{ $labels.job | noSuchFunction }}",
      "{{ if $value }}unterminated",   "{{ .Alerts.Firing }}", "{{ $value",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char text[512], err[1024] = "";
    snprintf(text, sizeof text,
             "groups:\n  - name: g\n    rules:\n      - alert: BadTemplate%zu\n        expr: vector(1)\n"
             "        annotations:\n          summary: '%s'\n",
             i, bad[i]);
    assert_int_not_equal(load_text(f, "bad.yml", text, err, sizeof err), 0);
    char want[32];
    snprintf(want, sizeof want, "BadTemplate%zu", i);
    if (!strstr(err, want)) fail_msg("template %s: error does not name the rule: %s", bad[i], err);
    if (!strstr(err, "summary")) fail_msg("template %s: error does not name the annotation: %s", bad[i], err);
  }
  /* A label template too, and nothing changed after the failed loads. */
  char err[1024] = "";
  assert_int_not_equal(load_text(f, "bad.yml",
                                 "groups: [{name: g, rules: [{alert: BadLabel, expr: vector(1), "
                                 "labels: {x: '{{ nosuch }}'}}]}]\n",
                                 err, sizeof err),
                       0);
  assert_non_null(strstr(err, "BadLabel"));
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.groups, 1);
  assert_int_equal(st.rules, 1);
}

/* ---- notifier: a fake HTTP receiver --------------------------------------------------- */

#define MAX_REQ 64

typedef struct receiver {
  int fd;
  uint16_t port;
  pthread_t thread;
  volatile int stop;
  pthread_mutex_t mu;
  int codes[MAX_REQ]; /* status to answer request i with; 0 = 200 */
  int nreq;
  char *bodies[MAX_REQ];
  char sig[MAX_REQ][80];
  int64_t at_ms[MAX_REQ];
} receiver_t;

static void *receiver_main(void *arg) {
  receiver_t *rc = arg;
  while (!rc->stop) {
    struct pollfd p = {rc->fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int c = accept(rc->fd, NULL, NULL);
    if (c < 0) continue;
    char buf[65536];
    size_t n = 0;
    char *hdr_end = NULL;
    long clen = -1;
    while (n < sizeof buf - 1) {
      ssize_t k = recv(c, buf + n, sizeof buf - 1 - n, 0);
      if (k <= 0) break;
      n += (size_t)k;
      buf[n] = 0;
      if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
        const char *cl = strcasestr(buf, "Content-Length:");
        clen = cl ? strtol(cl + 15, NULL, 10) : 0;
      }
      if (hdr_end && (long)(n - (size_t)(hdr_end + 4 - buf)) >= clen) break;
    }
    pthread_mutex_lock(&rc->mu);
    int i = rc->nreq < MAX_REQ ? rc->nreq++ : MAX_REQ - 1;
    int code = rc->codes[i] ? rc->codes[i] : 200;
    if (hdr_end) {
      free(rc->bodies[i]);
      rc->bodies[i] = strdup(hdr_end + 4);
      const char *s = strcasestr(buf, "X-Metricsd-Signature: sha256=");
      if (s && s < hdr_end) sscanf(s + 29, "%64[0-9a-f]", rc->sig[i]);
    }
    rc->at_ms[i] = md_mono_ns() / 1000000;
    pthread_mutex_unlock(&rc->mu);
    char resp[128];
    int len =
        snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code);
    ssize_t w = send(c, resp, (size_t)len, MSG_NOSIGNAL);
    (void)w;
    close(c);
  }
  return NULL;
}

static void receiver_start(receiver_t *rc) {
  memset(rc, 0, sizeof *rc);
  pthread_mutex_init(&rc->mu, NULL);
  rc->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(rc->fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(rc->fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(rc->fd, (struct sockaddr *)&a, &al), 0);
  rc->port = ntohs(a.sin_port);
  assert_int_equal(listen(rc->fd, 16), 0);
  assert_int_equal(pthread_create(&rc->thread, NULL, receiver_main, rc), 0);
}

static void receiver_stop(receiver_t *rc) {
  rc->stop = 1;
  pthread_join(rc->thread, NULL);
  close(rc->fd);
  for (int i = 0; i < MAX_REQ; i++)
    free(rc->bodies[i]);
  pthread_mutex_destroy(&rc->mu);
}

static int receiver_count(receiver_t *rc) {
  pthread_mutex_lock(&rc->mu);
  int n = rc->nreq;
  pthread_mutex_unlock(&rc->mu);
  return n;
}

/* Waits (bounded) until the notifier has nothing queued or in flight. */
static void wait_notifier_idle(rules_t *r, uint64_t want_done) {
  for (int i = 0; i < 400; i++) {
    rules_stats_t st;
    rules_get_stats(r, &st);
    if (st.notification_queue_length == 0 && st.notifications_sent + st.notifications_failed >= want_done)
      return;
    sleep_ms(50);
  }
  fail_msg("notifier did not finish");
}

static size_t alerts_in(const char *body) {
  json_t *j = json_loads(body, 0, NULL);
  assert_non_null(j);
  size_t n = json_is_array(j) ? json_array_size(j) : json_array_size(json_object_get(j, "alerts"));
  json_decref(j);
  return n;
}

static const char *five_alerts = "groups:\n"
                                 "  - name: g\n"
                                 "    interval: 1m\n"
                                 "    rules:\n"
                                 "      - alert: Many\n"
                                 "        expr: m > 0\n"
                                 "        annotations: {summary: '{{ $labels.job }}'}\n";

static void put_five(fixture_t *f, int64_t ts, double v) {
  static const char *jobs[] = {"a", "b", "c", "d", "e"};
  for (int i = 0; i < 5; i++)
    put(f, "m", "job", jobs[i], ts, v);
}

static void test_notify_several_alertmanagers_batched(void **state) {
  fixture_t *f = *state;
  receiver_t am1, am2;
  receiver_start(&am1);
  receiver_start(&am2);
  char u1[64], u2[64];
  snprintf(u1, sizeof u1, "http://127.0.0.1:%u/", am1.port); /* trailing slash is tolerated */
  snprintf(u2, sizeof u2, "http://127.0.0.1:%u", am2.port);
  const char *ams[] = {u1, u2};
  rules_options_t opt;
  rules_options_default(&opt);
  opt.alertmanagers = ams;
  opt.n_alertmanagers = 2;
  opt.notify_batch_size = 2;
  opt.resend_delay_ms = 2 * MIN;
  opt.external_url = "http://metricsd.example:8012";
  metrics_registry_t *m = metrics_registry_new();
  opt.metrics = m;
  f->r = new_rules(f, &opt);
  load_ok(f, five_alerts);
  put_five(f, T0, 1);
  put_five(f, T0 + MIN, 1);
  put_five(f, T0 + 2 * MIN, 1);
  put_five(f, T0 + 3 * MIN, 0);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  wait_notifier_idle(f->r, 10);
  /* Five firing alerts, batches of at most 2 → 3 POSTs to each Alertmanager. */
  assert_int_equal(receiver_count(&am1), 3);
  assert_int_equal(receiver_count(&am2), 3);
  size_t total = 0;
  for (int i = 0; i < 3; i++) {
    assert_true(alerts_in(am1.bodies[i]) <= 2);
    total += alerts_in(am1.bodies[i]);
  }
  assert_int_equal(total, 5);
  json_t *first = json_loads(am2.bodies[0], 0, NULL);
  json_t *a0 = json_array_get(first, 0);
  assert_string_equal(json_string_value(json_object_get(json_object_get(a0, "labels"), "alertname")), "Many");
  assert_non_null(json_object_get(a0, "startsAt"));
  assert_non_null(json_object_get(a0, "endsAt"));
  assert_string_equal(json_string_value(json_object_get(a0, "generatorURL")),
                      "http://metricsd.example:8012/graph?g0.expr=m%20%3E%200&g0.tab=1");
  json_decref(first);

  /* Resend interval 2m: nothing new at +1m, everything again at +2m. */
  assert_int_equal(rules_eval_all(f->r, T0 + MIN), 0);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_queued, 5);
  assert_int_equal(rules_eval_all(f->r, T0 + 2 * MIN), 0);
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_queued, 10);
  /* Resolution is sent at once, with endsAt = the resolution time. */
  assert_int_equal(rules_eval_all(f->r, T0 + 3 * MIN), 0);
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_queued, 15);
  wait_notifier_idle(f->r, 30);
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_sent, 30); /* 15 alerts × 2 Alertmanagers */
  assert_int_equal(st.notifications_dropped, 0);
  int last = receiver_count(&am1) - 1;
  json_t *res = json_loads(am1.bodies[last], 0, NULL);
  char ends[32];
  md_format_rfc3339(T0 + 3 * MIN, ends);
  assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "endsAt")), ends);
  json_decref(res);
  rules_target_stats_t t[4];
  assert_int_equal(rules_notify_targets(f->r, t, 4), 2);
  assert_int_equal(t[0].sent, 15);
  assert_int_equal(t[1].sent, 15);
  rules_free(f->r);
  f->r = NULL;
  assert_true(metrics_family_sum(m, "prometheus_notifications_sent_total") == 30);
  assert_true(metrics_family_sum(m, "prometheus_notifications_errors_total") == 0);
  assert_true(metrics_family_sum(m, "prometheus_notifications_dropped_total") == 0);
  assert_true(metrics_family_sum(m, "prometheus_notifications_queue_length") == 0);
  assert_true(metrics_family_sum(m, "prometheus_notifications_queue_capacity") == 10000);
  assert_true(metrics_family_sum(m, "prometheus_notifications_alertmanagers_discovered") == 2);
  sb_t text = {0};
  assert_int_equal(metrics_expose(m, &text, METRICS_FMT_PROMETHEUS), 0);
  char want[128];
  snprintf(want, sizeof want,
           "prometheus_notifications_sent_total{alertmanager=\"http://127.0.0.1:%u/api/v2/alerts\"} 15",
           am1.port);
  if (!strstr(text.buf, want)) fail_msg("missing %s in\n%s", want, text.buf);
  sb_free(&text);
  metrics_registry_free(m);
  receiver_stop(&am1);
  receiver_stop(&am2);
}

static void test_notify_retries_with_backoff(void **state) {
  fixture_t *f = *state;
  receiver_t am, refuse;
  receiver_start(&am);
  receiver_start(&refuse);
  am.codes[0] = 503;
  am.codes[1] = 500;
  refuse.codes[0] = 400; /* a 4xx other than 429 is not retried */
  char u1[64], u2[64];
  snprintf(u1, sizeof u1, "http://127.0.0.1:%u", am.port);
  snprintf(u2, sizeof u2, "http://127.0.0.1:%u", refuse.port);
  const char *ams[] = {u1, u2};
  rules_options_t opt;
  rules_options_default(&opt);
  opt.alertmanagers = ams;
  opt.n_alertmanagers = 2;
  opt.notify_backoff_ms = 100;
  f->r = new_rules(f, &opt);
  load_ok(f, five_alerts);
  put(f, "m", "job", "a", T0, 1);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  wait_notifier_idle(f->r, 2);
  assert_int_equal(receiver_count(&am), 3);
  assert_int_equal(receiver_count(&refuse), 1);
  /* Backoff doubles: ≥ 100 ms before the 2nd try, ≥ 200 ms before the 3rd. */
  assert_true(am.at_ms[1] - am.at_ms[0] >= 100);
  assert_true(am.at_ms[2] - am.at_ms[1] >= 200);
  rules_target_stats_t t[2];
  rules_notify_targets(f->r, t, 2);
  assert_int_equal(t[0].sent, 1);
  assert_int_equal(t[0].errors, 0);
  assert_int_equal(t[1].sent, 0);
  assert_int_equal(t[1].errors, 1);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_dropped, 0); /* one Alertmanager took it */
  rules_free(f->r);
  f->r = NULL;
  receiver_stop(&am);
  receiver_stop(&refuse);
}

static void test_notify_dead_target_does_not_delay_others(void **state) {
  fixture_t *f = *state;
  receiver_t dead, ok;
  receiver_start(&dead);
  receiver_start(&ok);
  for (int i = 0; i < MAX_REQ; i++)
    dead.codes[i] = 503;
  char u1[64], u2[64];
  snprintf(u1, sizeof u1, "http://127.0.0.1:%u", dead.port);
  snprintf(u2, sizeof u2, "http://127.0.0.1:%u", ok.port);
  const char *ams[] = {u1, u2}; /* the failing one first */
  rules_options_t opt;
  rules_options_default(&opt);
  opt.alertmanagers = ams;
  opt.n_alertmanagers = 2;
  opt.notify_max_tries = 4;
  opt.notify_backoff_ms = 150;
  f->r = new_rules(f, &opt);
  load_ok(f, five_alerts);
  put(f, "m", "job", "a", T0, 1);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  wait_notifier_idle(f->r, 2);
  assert_int_equal(receiver_count(&dead), 4);
  assert_int_equal(receiver_count(&ok), 1);
  /* Targets are served in parallel: the healthy one got the batch before the failing one's
   * last retry (150 + 300 + 600 ms of backoff after its first try). */
  assert_true(ok.at_ms[0] < dead.at_ms[3]);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  assert_int_equal(st.notifications_sent, 1);
  assert_int_equal(st.notifications_failed, 1);
  assert_int_equal(st.notifications_dropped, 0);
  rules_free(f->r);
  f->r = NULL;
  receiver_stop(&dead);
  receiver_stop(&ok);
}

static void test_notify_bounded_queue_drops_oldest(void **state) {
  fixture_t *f = *state;
  /* A port nobody listens on: every try fails fast, and the backoff keeps the delivery
   * thread busy while the queue overflows. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
  close(s);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u", ntohs(a.sin_port));
  const char *ams[] = {url};
  rules_options_t opt;
  rules_options_default(&opt);
  opt.alertmanagers = ams;
  opt.n_alertmanagers = 1;
  opt.notify_queue_capacity = 3;
  opt.notify_batch_size = 1;
  opt.notify_max_tries = 2;
  opt.notify_backoff_ms = 50;
  metrics_registry_t *m = metrics_registry_new();
  opt.metrics = m;
  f->r = new_rules(f, &opt);
  load_ok(f, five_alerts);
  put_five(f, T0, 1);
  put_five(f, T0 + MIN, 1);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  rules_stats_t st;
  rules_get_stats(f->r, &st);
  /* Five alerts into a queue of three: the two oldest are dropped at once. */
  assert_int_equal(st.notifications_queued, 5);
  assert_true(st.notifications_dropped >= 2);
  assert_true(st.notification_queue_length <= 3);
  assert_int_equal(st.notification_queue_capacity, 3);
  wait_notifier_idle(f->r, 3);
  rules_get_stats(f->r, &st);
  /* The three that were sent failed everywhere: dropped as well. */
  assert_int_equal(st.notifications_failed, 3);
  assert_int_equal(st.notifications_dropped, 5);
  assert_int_equal(st.notification_batches, 3);
  rules_free(f->r);
  f->r = NULL;
  assert_true(metrics_family_sum(m, "prometheus_notifications_dropped_total") == 5);
  assert_true(metrics_family_sum(m, "prometheus_notifications_errors_total") == 3);
  metrics_registry_free(m);
}

static void test_webhook_signed(void **state) {
  fixture_t *f = *state;
  /* RFC 4231 test case 2. */
  char hex[65];
  rules_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
  assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  receiver_t hook;
  receiver_start(&hook);
  char u[80];
  snprintf(u, sizeof u, "http://127.0.0.1:%u/hook/path", hook.port);
  const char *hooks[] = {u};
  rules_options_t opt;
  rules_options_default(&opt);
  opt.webhooks = hooks;
  opt.n_webhooks = 1;
  opt.webhook_secret = "s3cret";
  f->r = new_rules(f, &opt);
  load_ok(f, five_alerts);
  put(f, "m", "job", "a", T0, 1);
  put(f, "m", "job", "a", T0 + MIN, 0);
  assert_int_equal(rules_eval_all(f->r, T0), 0);
  wait_notifier_idle(f->r, 1);
  assert_int_equal(receiver_count(&hook), 1);
  rules_hmac_sha256_hex("s3cret", 6, hook.bodies[0], strlen(hook.bodies[0]), hex);
  assert_string_equal(hook.sig[0], hex);
  json_t *b = json_loads(hook.bodies[0], 0, NULL);
  assert_non_null(b);
  assert_string_equal(json_string_value(json_object_get(b, "version")), "4");
  /* The alert's endsAt lies in T0's future but T0 is in the past: status follows endsAt vs
   * now, so this historical alert reads resolved; per-alert status is present. */
  json_t *al = json_array_get(json_object_get(b, "alerts"), 0);
  assert_non_null(json_object_get(al, "status"));
  assert_string_equal(json_string_value(json_object_get(json_object_get(al, "annotations"), "summary")), "a");
  json_decref(b);
  rules_free(f->r);
  f->r = NULL;
  receiver_stop(&hook);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_for_pending_firing_resolved, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keep_firing_for, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ordering_recording_then_alert, setup, teardown),
      cmocka_unit_test_setup_teardown(test_group_labels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_group_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rules_api_type_filter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_offset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failures_do_not_stop_the_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_for_state_restored_after_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restore_with_for_longer_than_grace_period, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restore_ignores_state_older_than_outage_tolerance, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reload_keeps_unchanged_alerts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reload_marks_removed_series_stale, setup, teardown),
      cmocka_unit_test_setup_teardown(test_template_errors_name_the_rule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_runtime_rule_validation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_notify_several_alertmanagers_batched, setup, teardown),
      cmocka_unit_test_setup_teardown(test_notify_retries_with_backoff, setup, teardown),
      cmocka_unit_test_setup_teardown(test_notify_dead_target_does_not_delay_others, setup, teardown),
      cmocka_unit_test_setup_teardown(test_notify_bounded_queue_drops_oldest, setup, teardown),
      cmocka_unit_test_setup_teardown(test_webhook_signed, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
