/* Private: a parsed scrape job (one scrape_configs entry or one runtime source), its target
 * groups, and the targets the manager builds from them. */
#ifndef METRICSD_SCRAPE_JOB_H
#define METRICSD_SCRAPE_JOB_H

#include <stdatomic.h>

#include "scrape_internal.h"

typedef struct scrape_group {
  char **targets; /* addresses */
  size_t ntargets;
  tsdb_label_t *labels; /* owned strings */
  size_t nlabels;
} scrape_group_t;

/* One file matched by a file_sd glob, with the groups last read from it successfully. */
typedef struct scrape_sd_file {
  char *path;
  uint64_t signature; /* mtime and size when last read (or tried) */
  scrape_group_t *groups;
  size_t ngroups;
  bool reuse; /* during a refresh: keep the groups read before */
} scrape_sd_file_t;

typedef struct scrape_file_sd {
  char **files; /* globs */
  size_t nfiles;
  int64_t refresh_ms;
  /* Discovered state, under the manager lock. */
  int64_t last_read_ms;
  scrape_sd_file_t *found;
  size_t nfound;
} scrape_file_sd_t;

typedef struct scrape_job {
  atomic_int refs;
  char *name;
  char *source_id; /* runtime source id, NULL for scrape_configs jobs */
  int64_t interval_ms, timeout_ms;
  char *metrics_path, *scheme;
  tsdb_label_t *params; /* name -> value (one per value), owned */
  size_t nparams;
  bool honor_labels, honor_timestamps;
  char *basic_user, *basic_pass;
  char *auth_type, *auth_credentials;
  char *ca_file, *cert_file, *key_file, *server_name;
  bool insecure_skip_verify;
  scrape_relabel_t *relabel, *metric_relabel;
  uint64_t sample_limit, label_limit, label_name_length_limit, label_value_length_limit, body_size_limit;
  scrape_group_t *groups; /* static_configs */
  size_t ngroups;
  scrape_file_sd_t *file_sd;
  size_t nfile_sd;
} scrape_job_t;

/* Parses one scrape_configs entry. MD_EINVAL with "job \"x\": key: problem". */
int scrape_job_parse(const json_t *o, const scrape_options_t *opt, scrape_job_t **out, char *err,
                     size_t errlen);
void scrape_job_ref(scrape_job_t *j);
void scrape_job_unref(scrape_job_t *j);
void scrape_groups_free(scrape_group_t *g, size_t n);
/* Parses [{targets:[...], labels:{...}}, ...] (static_configs and file SD content).
 * extra_name/value (may be NULL) is added to every group's labels (__meta_filepath). */
int scrape_groups_parse(const json_t *arr, const char *extra_name, const char *extra_value,
                        scrape_group_t **out, size_t *n, char *err, size_t errlen);
/* Converts a runtime source object into a scrape_configs entry (new reference). */
int scrape_source_to_config(const json_t *src, const char *id, json_t **out, char *err, size_t errlen);
/* A __scrape_interval__ / __scrape_timeout__ label value ("30s", "1m"): MD_EINVAL for what
 * is not a positive duration, or has a number of more than 8 digits (overflow guard). */
int scrape_parse_duration_label(const char *s, int64_t *ms);
/* "15s", "1m30s", "500ms" */
void scrape_format_duration(int64_t ms, char *out, size_t n);

#endif

/* ---- targets (manager.c, scraper.c) ----------------------------------------------- */

typedef struct scrape_series_ref {
  uint64_t hash;  /* of the final label set */
  uint32_t index; /* series index in the batch it was built into */
} scrape_series_ref_t;

typedef struct scrape_refs {
  scrape_series_ref_t *v;
  size_t n, cap;
} scrape_refs_t;

typedef enum { SCRAPE_HEALTH_UNKNOWN = 0, SCRAPE_HEALTH_UP, SCRAPE_HEALTH_DOWN } scrape_health_t;

typedef struct scrape_target {
  char *key;
  uint64_t hash;
  scrape_job_t *job;    /* counted reference */
  tsdb_label_t *labels; /* final target labels, sorted, owned */
  size_t nlabels;
  tsdb_label_t *discovered; /* labels before relabeling, owned */
  size_t ndiscovered;
  char *url;
  int64_t interval_ms, timeout_ms; /* __scrape_interval__/__scrape_timeout__ after relabeling */
  /* Manager lock: */
  int64_t next_ms, offset_ms;
  bool in_flight, removed;
  int64_t last_scrape_ms;
  double last_duration_s;
  char last_error[256];
  scrape_health_t health;
  uint64_t last_samples; /* stored by the last scrape (after metric relabeling); 0 when it failed */
  /* Owned by the worker scraping it (in_flight), else by the manager: */
  /* The last successful scrape, kept as its body (far smaller than its series): when series
   * disappear, their labels are re-derived from it with the job it was processed with. */
  sb_t prev_body;
  bool prev_om;
  scrape_job_t *prev_job; /* counted reference, NULL when prev_body is empty */
  uint64_t *prev_set;     /* hashes of its staleness-tracked series, sorted */
  size_t nprev, capprev;
  bool reported; /* report series were written at least once */
} scrape_target_t;

typedef struct scrape_worker {
  void *curl; /* CURL* */
  sb_t body;
  uint64_t body_limit;
  bool body_over;
  tsdb_batch_t *parsed, *out, *old;
  scrape_labels_t *ls;
  scrape_refs_t cur, oldrefs;
  const atomic_bool *stopping;
} scrape_worker_t;

int scrape_worker_init(scrape_worker_t *w, const atomic_bool *stopping);
void scrape_worker_destroy(scrape_worker_t *w);
/* Scrapes t once with job (the caller holds a job reference and has marked t in flight),
 * sends the batch to the sink and fills *status with the outcome. */
typedef struct scrape_result {
  int64_t ts;
  double duration_s;
  bool up;
  char error[256];
  uint64_t samples_scraped, samples_post_relabel, series_added;
} scrape_result_t;
void scrape_target_run(scrape_worker_t *w, scrape_target_t *t, scrape_job_t *job, scrape_sink_fn sink,
                       void *ctx, scrape_result_t *res);
/* Writes staleness markers for every series t reported (target removed). */
void scrape_target_stale(scrape_target_t *t, scrape_sink_fn sink, void *ctx, int64_t ts);
void scrape_target_free(scrape_target_t *t);
