/*
 * rules — Prometheus alerting and recording rules evaluated by metricsd itself.
 *
 * Rule groups come from rule files (Prometheus YAML, unchanged; evaluated for tenant
 * "default") and from the runtime API (JSON with the same fields, persisted in
 * <data_dir>/rules.json, evaluated for the tenant that created them). Each group runs on
 * its interval on the rules thread; its rules run in order, so later rules see the
 * samples that earlier recording rules appended. Alerts go pending → firing → resolved,
 * ALERTS / ALERTS_FOR_STATE series are written, and the `for` state is restored from
 * ALERTS_FOR_STATE after a restart. Firing and resolved alerts are handed to the notifier
 * (Alertmanager v2 API and webhooks).
 *
 * Threading: one evaluation thread; the API functions take the manager's mutex and may be
 * called from any HTTP thread.
 */
#ifndef METRICSD_RULES_H
#define METRICSD_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/core.h"
#include "core/metrics.h"
#include "tsdb/tsdb.h"

typedef struct rules rules_t;

typedef struct rules_options {
  tsdb_t *db;
  const char *data_dir;        /* runtime rules persisted here; NULL = not persisted */
  int64_t default_interval_ms; /* group interval when a group names none (default 1 m) */
  const tsdb_label_t *external_labels;
  size_t n_external_labels;
  const char *const *alertmanagers; /* base URLs, e.g. http://127.0.0.1:9093 */
  size_t n_alertmanagers;
  const char *const *webhooks; /* URLs receiving the webhook JSON */
  size_t n_webhooks;
  const char *webhook_secret;  /* HMAC-SHA256 key for X-Metricsd-Signature; NULL = none */
  int64_t resend_delay_ms;     /* re-send firing alerts this often (default 1 m) */
  int64_t outage_tolerance_ms; /* `for` state restore window (default 1 h) */
  int64_t for_grace_period_ms; /* least wait after a restart before a restored alert fires (default 10 m) */
  const char *external_url;    /* generatorURL base */
  /* Notifier tuning; 0 = default. */
  size_t notify_queue_capacity; /* alerts waiting to be sent (default 10000); oldest dropped */
  size_t notify_batch_size;     /* alerts per POST (default 64) */
  int notify_max_tries;         /* attempts per target and batch (default 4) */
  int64_t notify_backoff_ms;    /* first retry delay, doubled each time (default 200) */
  int64_t notify_timeout_ms;    /* per request (default 10000) */
  /* Self-metrics under Prometheus's names (prometheus_rule_*, prometheus_notifications_*),
   * updated as evaluations and deliveries happen; NULL = none. Must outlive the rules_t. */
  metrics_registry_t *metrics;
} rules_options_t;

void rules_options_default(rules_options_t *opt);

int rules_new(const rules_options_t *opt, rules_t **out, char *err, size_t errlen);
/* Stops the thread (if started) and frees everything. */
void rules_free(rules_t *r);

/* Replaces the file-based groups with those in files (glob patterns). Alerts of rules that
 * are unchanged (same group, name, expression, labels) keep their state. On error nothing
 * changes and err names the file, group and rule. */
int rules_load_files(rules_t *r, const char *const *globs, size_t n, char *err, size_t errlen);

/* Validates rule files like `promtool check rules`; appends a report to out (one line per
 * file: "SUCCESS: N rules found" or the errors). Returns 0 when all are valid. */
int rules_check_files(const char *const *paths, size_t n, sb_t *out);

/* Starts and stops the evaluation thread. */
int rules_start(rules_t *r);
void rules_stop(rules_t *r);

/* Evaluates every group once at ts_ms, in order (tests, `metricsd test-rules`). */
int rules_eval_all(rules_t *r, int64_t ts_ms);

/* Prometheus API bodies: `data` of /api/v1/rules (type: NULL, "alert" or "record") and of
 * /api/v1/alerts, for tenant. */
void rules_json_rules(rules_t *r, const char *tenant, const char *type, sb_t *out);
void rules_json_alerts(rules_t *r, const char *tenant, sb_t *out);
/* Seed 003's GET /alerts/active: firing and pending alerts with labels, annotations,
 * activeAt, value, state. */
void rules_json_active(rules_t *r, const char *tenant, sb_t *out);

/* Runtime rules (seed 003's /alerts/rules). A rule body is JSON with the YAML fields:
 * {"alert"|"record", "expr", "for", "keep_firing_for", "labels", "annotations",
 *  "group" (optional, default "runtime"), "interval" (optional)}. */
void rules_runtime_list(rules_t *r, const char *tenant, sb_t *out);
/* Creates (id == NULL) or replaces (id given; MD_ENOTFOUND if absent) a rule; the new id is
 * written to id_out (>= 40 bytes). Validated; persisted before returning. */
int rules_runtime_put(rules_t *r, const char *tenant, const char *id, const json_t *body, char *id_out,
                      char *err, size_t errlen);
int rules_runtime_delete(rules_t *r, const char *tenant, const char *id);
/* One runtime rule as JSON, MD_ENOTFOUND if absent. */
int rules_runtime_get(rules_t *r, const char *tenant, const char *id, sb_t *out);

/* `metricsd test-rules FILE`: runs a promtool-format unit-test file; appends a report to out;
 * returns 0 when every test passed. */
int rules_test_file(const char *path, sb_t *out);

typedef struct rules_stats {
  uint64_t evaluations, evaluation_failures, groups, rules;
  uint64_t alerts_firing, alerts_pending;
  /* Notifier, counted in alerts: sent/failed are summed over targets (an alert sent to two
   * Alertmanagers counts twice); dropped = queue overflow + batches no target accepted. */
  uint64_t notifications_sent, notifications_failed, notifications_dropped;
  uint64_t notifications_queued, notification_batches, notification_queue_length, notification_queue_capacity;
  int64_t notification_latency_ns; /* time the last batch took to deliver to all targets */
  int64_t last_duration_ns;
} rules_stats_t;
void rules_get_stats(rules_t *r, rules_stats_t *out);

/* One group's counters for the self-metrics (Prometheus's prometheus_rule_group_* family).
 * Counters survive reloads of an unchanged group (same file and name). */
typedef struct rules_group_stats {
  const char *file, *name, *tenant; /* valid during the callback only */
  size_t nrules;
  uint64_t evaluations, failures, iterations, missed;
  int64_t interval_ms, last_eval_ms, last_duration_ns;
} rules_group_stats_t;
void rules_foreach_group(rules_t *r, void (*cb)(void *ctx, const rules_group_stats_t *g), void *ctx);

/* One notification target (Alertmanager or webhook) and its alert counters. */
typedef struct rules_target_stats {
  const char *url; /* valid while r lives */
  bool webhook;
  uint64_t sent, errors;
} rules_target_stats_t;
/* Fills up to max entries; returns the number of targets. */
size_t rules_notify_targets(rules_t *r, rules_target_stats_t *out, size_t max);

#endif
