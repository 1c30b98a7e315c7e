/* Private structures of the rules module, shared by rules.c (loading, API), eval.c
 * (evaluation, alert state) and notify.c (delivery). The manager mutex guards groups,
 * rules and alert state; the notifier has its own lock. */
#ifndef METRICSD_RULES_INTERNAL_H
#define METRICSD_RULES_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "promql/promql.h"
#include "rules.h"
#include "template.h"

typedef enum { ALERT_INACTIVE = 0, ALERT_PENDING = 1, ALERT_FIRING = 2 } alert_state_t;

typedef struct kv {
  char *name, *value;
} kv_t;

typedef struct alert {
  uint64_t hash;
  tsdb_label_t *labels; /* owned strings, sorted, includes alertname */
  size_t nlabels;
  tsdb_label_t *annotations;
  size_t nannotations;
  alert_state_t state;
  int64_t active_at, fired_at, resolved_at, last_sent_at, keep_firing_since;
  double value;
  struct alert *next;
} alert_t;

/* A label set this rule wrote at the previous evaluation, to mark it stale when it vanishes. */
typedef struct written {
  uint64_t hash;
  tsdb_label_t *labels;
  size_t nlabels;
} written_t;

typedef struct rule {
  char *id;   /* runtime rules only */
  char *name; /* alert or record name */
  char *expr_text;
  bool is_alert;
  promql_expr_t *expr;
  int64_t for_ms, keep_firing_for_ms;
  kv_t *labels;
  size_t nlabels;
  tmpl_t **label_tmpls;
  kv_t *annotations;
  size_t nannotations;
  tmpl_t **ann_tmpls;
  alert_t *alerts;
  bool restored;
  written_t *written;
  size_t nwritten;
  char last_error[256];
  int health; /* 0 unknown, 1 ok, -1 err */
  int64_t last_eval_ms, eval_ns;
} rule_t;

typedef struct group {
  char *name, *file, *tenant;
  int64_t interval_ms, query_offset_ms;
  size_t limit;
  rule_t **rules;
  size_t nrules;
  bool runtime;
  int64_t next_eval_ms, last_eval_ms, eval_ns;
  uint64_t evaluations, failures, iterations, missed; /* carried over reloads */
  /* Series written by rules that a reload removed or changed: marked stale at the group's
   * next evaluation unless a rule writes them again (a changed rule keeps its series). */
  written_t *stale;
  size_t nstale;
} group_t;

typedef struct notifier notifier_t;

struct rules {
  rules_options_t opt;
  tsdb_label_t *external;
  size_t nexternal;
  char *data_dir;
  char *external_url; /* owned copy; opt.external_url points here */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  group_t **groups;
  size_t ngroups;
  json_t *runtime; /* {"<id>": {"tenant":..., "rule": {...}}} */
  pthread_t thread;
  bool running, stopping;
  notifier_t *notifier;
  atomic_ullong evaluations, failures;
  bool evaluated; /* some group has been evaluated: later (re)loads restore no `for` state */
  int64_t last_duration_ns;
};

/* rules.c */
void rule_free(rule_t *r);
void group_free(group_t *g);
/* Builds a rule from a JSON object with the YAML fields; err names the problem. */
int rule_from_json(const json_t *obj, rule_t **out, char *err, size_t errlen);
/* Builds a group from {"name","interval","query_offset","limit","rules":[...]} */
int group_from_json(const json_t *obj, const char *file, const char *tenant, int64_t default_interval,
                    group_t **out, char *err, size_t errlen);
uint64_t rules_labels_hash(const tsdb_label_t *ls, size_t n);

/* eval.c */
int group_eval(rules_t *r, group_t *g, int64_t ts_ms);
/* Counts evaluation slots of g skipped because the thread was busy (self-metrics). */
void rules_metrics_missed(rules_t *r, group_t *g, uint64_t missed);
void alerts_free(alert_t *a);
void written_free(written_t *w, size_t n);
/* Appends staleness markers at ts for the series in w, except those whose hash is in
 * `keep` (nkeep entries); frees nothing. */
void write_stale(rules_t *r, const char *tenant, const written_t *w, size_t n, const written_t *const *keep,
                 const size_t *nkeep, size_t nkeepsets, int64_t ts);
void format_value_e(sb_t *sb, double v);

/* notify.c */
int notifier_new(const rules_options_t *opt, notifier_t **out);
void notifier_free(notifier_t *n);
/* Queues alerts (a JSON array in Alertmanager v2 shape; ownership passes). */
void notifier_send(notifier_t *n, json_t *alerts);
typedef struct notifier_stats {
  uint64_t sent, failed, dropped, queued, batches, queue_length, queue_capacity;
  int64_t last_latency_ns;
} notifier_stats_t;
void notifier_stats(notifier_t *n, notifier_stats_t *out);
size_t notifier_targets(notifier_t *n, rules_target_stats_t *out, size_t max);
/* HMAC-SHA256 of msg under key as lowercase hex (65 bytes with the NUL). */
void rules_hmac_sha256_hex(const char *key, size_t klen, const char *msg, size_t mlen, char out[65]);

/* testfile.c: checks a promtool-format test file (as JSON) without running it: every
 * series, value sequence, duration and expression it holds parses, and no test needs more
 * than a million evaluation steps. Appends problems to out. Also the fuzz entry point. */
int rules_test_check(const json_t *doc, sb_t *out);

/* rules.c: parses the text of one rule file (name used in messages), appending its groups;
 * the rule-file loader behind rules_load_files and rules_check_files, and the fuzz entry. */
int rules_parse_file_text(const char *text, size_t len, const char *name, int64_t default_interval,
                          group_t ***groups, size_t *n, char *err, size_t errlen);

/* Loads a YAML file (rule files, test files) as a JSON tree. */
int rules_load_yaml_file(const char *path, json_t **out, char *err, size_t errlen);

#endif
