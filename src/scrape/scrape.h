/*
 * scrape — Prometheus-compatible pull collection: scrape_configs (a documented subset),
 * static and file service discovery, relabeling with every action, the scraper (libcurl,
 * text/OpenMetrics via ingest's parser, gzip, auth, TLS, limits), per-target report series,
 * staleness markers, and runtime sources (seed 003's /metrics/sources) persisted in the data
 * directory.
 *
 * Like the collectors, the scraper never calls the storage engine itself: every scrape's
 * batch goes to a sink callback (api binds it to tsdb_append for a tenant).
 *
 * Threading: a scrape_manager_t runs a scheduler thread, a service-discovery thread and a
 * pool of scrape workers. Every public function on a manager may be called from any thread
 * (one mutex protects the target table and the sources). Relabel configs are immutable once
 * parsed and may be shared by threads; a scrape_labels_t belongs to one thread.
 */
#ifndef METRICSD_SCRAPE_H
#define METRICSD_SCRAPE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tsdb/tsdb.h"

/* ---- label sets ------------------------------------------------------------------------ */

/* A mutable label set, sorted by name, names unique. Strings live in the set's arena (or
 * point at caller memory that outlives the set, see scrape_labels_set_ref). */
typedef struct scrape_labels scrape_labels_t;
scrape_labels_t *scrape_labels_new(void);
void scrape_labels_free(scrape_labels_t *ls);
void scrape_labels_reset(scrape_labels_t *ls);
/* Sets name=value (copied); an empty value deletes the label. MD_ENOMEM on failure. */
int scrape_labels_set(scrape_labels_t *ls, const char *name, const char *value);
/* The same without copying: the strings must outlive the set's next reset. */
int scrape_labels_set_ref(scrape_labels_t *ls, const char *name, const char *value);
void scrape_labels_del(scrape_labels_t *ls, const char *name);
const char *scrape_labels_get(const scrape_labels_t *ls, const char *name); /* NULL if absent */
/* The labels, sorted by name; valid until the next change. */
const tsdb_label_t *scrape_labels_items(const scrape_labels_t *ls, size_t *n);
/* Replaces the content with a copy of labels (need not be sorted; duplicates: last wins). */
int scrape_labels_assign(scrape_labels_t *ls, const tsdb_label_t *labels, size_t n);

/* ---- relabeling -------------------------------------------------------------------------- */

typedef struct scrape_relabel scrape_relabel_t;

/* Parses a relabel_configs / metric_relabel_configs array (jansson, as converted from YAML):
 * source_labels, separator (";"), target_label, regex ("(.*)", anchored), modulus,
 * replacement ("$1"), action (replace, keep, drop, keepequal, dropequal, hashmod, labelmap,
 * labeldrop, labelkeep, lowercase, uppercase). NULL or an empty array gives an empty list.
 * MD_EINVAL with err naming the entry ("relabel_configs[2]: ...") on a bad config. */
int scrape_relabel_parse(const json_t *arr, const char *what, scrape_relabel_t **out, char *err,
                         size_t errlen);
void scrape_relabel_free(scrape_relabel_t *r);
size_t scrape_relabel_count(const scrape_relabel_t *r);
/* Applies the rules in order to ls in place. Returns 1 when the set is kept, 0 when a rule
 * dropped it (ls is then unspecified), MD_ENOMEM on allocation failure. */
int scrape_relabel_apply(const scrape_relabel_t *r, scrape_labels_t *ls);

/* ---- configuration ------------------------------------------------------------------------ */

/* Scrape bodies larger than this fail the scrape unless a job sets body_size_limit
 * (0 = no limit). */
#define SCRAPE_DEFAULT_BODY_LIMIT (256ULL << 20)

typedef struct scrape_options {
  int64_t default_interval_ms; /* global.scrape_interval; default 15 s */
  int64_t default_timeout_ms;  /* global.scrape_timeout; default 10 s */
  const char *data_dir;        /* <data_dir>/sources.json holds runtime sources; NULL = none */
  const char *tenant;          /* informational (sink decides); default "default" */
  int workers;                 /* concurrent scrapes (default 16); more are added, up to 128,
                                * while due targets wait in the queue (slow targets) */
  int64_t sd_check_ms;         /* how often file_sd files are checked for changes; 5 s */
} scrape_options_t;

void scrape_options_default(scrape_options_t *opt);

/* Validates a scrape_configs array without starting anything (check-config, config reload
 * pre-check). MD_EINVAL with err naming the job and key. */
int scrape_config_check(const json_t *scrape_configs, const scrape_options_t *opt, char *err, size_t errlen);

/* ---- the manager ------------------------------------------------------------------------- */

typedef int (*scrape_sink_fn)(void *ctx, const tsdb_batch_t *b);

typedef struct scrape_manager scrape_manager_t;

/* Creates a manager with the jobs of scrape_configs (may be NULL) and the runtime sources
 * persisted in opt->data_dir; nothing runs until scrape_manager_start. */
int scrape_manager_new(const scrape_options_t *opt, const json_t *scrape_configs, scrape_sink_fn sink,
                       void *ctx, scrape_manager_t **out, char *err, size_t errlen);
int scrape_manager_start(scrape_manager_t *m, char *err, size_t errlen);
/* Replaces the configured jobs (reload). Targets that remain keep their state; targets that
 * go away get staleness markers. MD_EINVAL leaves the old jobs running. */
int scrape_manager_apply(scrape_manager_t *m, const json_t *scrape_configs, char *err, size_t errlen);
/* Stops all threads (a scrape in flight is aborted) and frees. No staleness markers are
 * written (as in Prometheus on shutdown): a restart continues the series without a gap.
 * NULL is a no-op. */
void scrape_manager_free(scrape_manager_t *m);

typedef struct scrape_stats {
  size_t targets_active, targets_dropped, targets_up;
  uint64_t scrapes, scrape_failures, samples_scraped;
} scrape_stats_t;
void scrape_manager_stats(scrape_manager_t *m, scrape_stats_t *out);

/* GET /api/v1/targets "data" object (activeTargets, droppedTargets) in Prometheus's shape.
 * state: NULL/"any", "active" or "dropped". */
int scrape_targets_json(scrape_manager_t *m, const char *state, sb_t *out);

/* ---- runtime sources (seed 003: /metrics/sources) ------------------------------------- */

/* A source is a JSON object: {"id"?, "name"?, "url": "http://host:port/path"} or
 * {"targets": ["host:port", ...], "metrics_path"?, "scheme"?}, plus optional job_name
 * (default: name or id), scrape_interval, scrape_timeout, labels {..}, params, honor_labels,
 * basic_auth, authorization, tls_config, sample_limit, metric_relabel_configs, enabled
 * (default true). Sources are persisted to <data_dir>/sources.json on every change. */

/* JSON array of all sources, each with its health: {"id",...,"health":{"status":"up|down|
 * unknown","last_scrape","last_error","last_duration_seconds","last_samples","targets":[...]}}. Secrets
 * (basic_auth.password, authorization.credentials, bearer_token) read "<secret>". */
int scrape_sources_json(scrape_manager_t *m, sb_t *out);
/* One source; MD_ENOTFOUND when absent. */
int scrape_source_json(scrape_manager_t *m, const char *id, sb_t *out);
/* Adds a source (validated; an "id" field is honoured when unique, else one is generated and
 * copied into id_out). MD_EINVAL (bad source) or MD_ELIMIT (id taken) with err. */
int scrape_source_add(scrape_manager_t *m, const json_t *src, char *id_out, size_t idlen, char *err,
                      size_t errlen);
/* Replaces source id; a secret given as "<secret>" keeps its stored value. MD_ENOTFOUND,
 * MD_EINVAL. */
int scrape_source_update(scrape_manager_t *m, const char *id, const json_t *src, char *err, size_t errlen);
/* Removes source id (its targets get staleness markers). MD_ENOTFOUND. */
int scrape_source_delete(scrape_manager_t *m, const char *id, char *err, size_t errlen);

#endif
