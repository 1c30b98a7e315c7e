/*
 * config — metricsd's settings: defaults, a YAML file, environment variables and flags, with
 * precedence flags > env > file > defaults (docs/configuration.md lists every key).
 *
 * Every typed setting has a dotted key path ("server.listen", "limits.max_series_per_tenant").
 * The same path names it everywhere: in YAML as nested maps, in the environment as
 * METRICSD_<PATH upper-cased, dots as underscores> (METRICSD_SERVER_LISTEN), on the command
 * line as `--set path=value` (main.c also has short flags: --listen, --data-dir, ...).
 * Sections other modules parse themselves (scrape_configs, rule_files, alerting,
 * remote_write, statsd, ...) are kept as raw JSON trees (YAML converted to jansson).
 *
 * Unknown keys in the file and invalid values anywhere are errors naming the key path.
 * Unknown METRICSD_* environment variables are warned about, not fatal (the environment is
 * shared with other tools).
 *
 * A config_t is immutable once loaded. Reload builds a new one; the server keeps old ones
 * alive until shutdown, so a pointer obtained from api_config() never dangles.
 */
#ifndef METRICSD_CORE_CONFIG_H
#define METRICSD_CORE_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Roles an API key can carry. ADMIN implies READ and WRITE. */
enum { CONFIG_ROLE_READ = 1, CONFIG_ROLE_WRITE = 2, CONFIG_ROLE_ADMIN = 4 };

typedef struct config_auth_key {
  char *name;     /* for logs; default "key<N>" */
  char *token;    /* bearer token / X-API-Key value / basic-auth password */
  char *username; /* basic auth user; NULL = any user name with the right password */
  char *tenant;   /* tenant every request with this key belongs to; default "default" */
  unsigned roles; /* CONFIG_ROLE_* bits; default read|write */
} config_auth_key_t;

typedef struct config_buckets {
  char *metric;      /* metric name */
  double *bounds;    /* ascending, without +Inf */
  size_t n;
} config_buckets_t;

typedef struct config {
  struct {
    char *listen;              /* "host:port" or ":port"; default ":8012" */
    char *data_dir;            /* default "./data" */
    char *log_level;           /* debug, info, warn, error; default info */
    uint64_t max_body_bytes;   /* request body limit after and before decoding; 64 MiB */
    int64_t read_timeout_ms;   /* idle connection timeout (slowloris); 30 s */
    uint32_t max_connections;  /* concurrent connections; 1024 */
    uint32_t max_connections_per_ip; /* concurrent connections from one address; 0 = no limit */
    uint32_t threads;          /* HTTP worker threads; 0 = number of CPUs */
    char *tls_cert_file, *tls_key_file; /* both set = HTTPS */
    char *cors_origin;         /* NULL = CORS off; "*" or an origin */
    bool prometheus_enabled;   /* seed 001 PROMETHEUS_ENABLED: serve GET /metrics; true */
    char *self_tenant;         /* tenant self-metrics are stored under; "default" */
    int64_t self_interval_ms;  /* self-scrape into storage; 15 s (0 = off) */
    config_auth_key_t *auth_keys; /* empty = auth off */
    size_t n_auth_keys;
  } server;
  struct {
    char *backend;             /* seed 001 TIMESERIES_BACKEND; only "local" (embedded) */
    int64_t retention_ms;      /* 15 d */
    uint64_t retention_bytes;  /* 0 = no size limit */
    int64_t block_span_ms;     /* 2 h */
    int fsync_always;          /* storage.fsync: "interval" (0, default) or "always" (1) */
    int64_t fsync_interval_ms; /* 1 s */
    int64_t ooo_window_ms;     /* 10 min */
    int64_t raw_retention_ms;  /* 0 = same as retention */
    int64_t tier1_resolution_ms, tier1_retention_ms; /* 5 min, 30 d */
    int64_t tier2_resolution_ms, tier2_retention_ms; /* 1 h, 365 d */
  } storage;
  struct {
    uint64_t max_series_per_tenant;   /* seed 004 max_series; 1,000,000 (0 = unlimited) */
    uint64_t max_samples_per_request; /* seed 004 max points per request; 1,000,000 */
    uint64_t max_points_per_series;   /* seed 004 max_points_per_series (series API); 1000 */
    uint32_t max_labels_per_series;   /* 64 */
    uint32_t max_label_name_length;   /* 256 */
    uint32_t max_label_value_length;  /* 4096 */
    uint32_t max_concurrent_inserts;  /* 0 = 2 x CPUs; over it → 429 */
    uint64_t ingest_series_cache;     /* push endpoints' series-ref cache entries; 4,000,000 (0 = off) */
  } limits;
  struct {
    int64_t timeout_ms;        /* 2 min */
    uint64_t max_samples;      /* samples loaded by one query; 50,000,000 */
    uint64_t max_series;       /* series selected by one query; 0 = unlimited */
    int64_t lookback_delta_ms; /* 5 min */
    uint32_t max_concurrent;   /* concurrent queries; 0 = 2 x CPUs */
  } query;
  struct {
    int64_t window_seconds;    /* seed 004 window_seconds; 300 */
    char **types;              /* seed 004 aggregation_types; avg sum min max count */
    size_t n_types;
    int64_t trend_hours;       /* seed 004 trend_hours; 24 */
  } aggregation;
  struct {
    bool host_enabled;         /* true */
    int64_t host_interval_ms;  /* 15 s */
    /* host collector parts, all true (collect_host_options_t has the same names) */
    bool host_cpu, host_memory, host_loadavg, host_disk, host_filesystem, host_network, host_netstat,
        host_vmstat, host_filefd, host_processes, host_uname, host_time;
    int64_t host_filesystem_timeout_ms; /* 5 s; 0 = statvfs inline */
    bool gpu_enabled;          /* true (stays off by itself without a GPU) */
    int64_t gpu_interval_ms;   /* seed 001 GPU_COLLECTION_INTERVAL; 5 s */
    char *nvml_library;        /* NULL = "libnvidia-ml.so.1" */
    bool gpu_processes;        /* per-process GPU memory series; true */
    char *tenant;              /* tenant collectors write under; "default" */
  } collectors;
  struct {
    int64_t flush_interval_ms; /* 15 s */
    double *default_buckets;   /* .005 … 10 */
    size_t n_default_buckets;
    config_buckets_t *buckets; /* per-metric bucket overrides (track.buckets: {name: [..]}) */
    size_t n_buckets;
    int64_t summary_window_ms; /* 10 min */
    uint64_t max_series;       /* tracked series per tenant; 0 = limits.max_series_per_tenant */
  } track;
  struct {
    int64_t scrape_interval_ms;     /* 15 s */
    int64_t scrape_timeout_ms;      /* 10 s */
    int64_t evaluation_interval_ms; /* 15 s */
    json_t *external_labels;        /* object or NULL */
  } global;
  /* Raw sections for modules that parse their own (NULL when absent). */
  json_t *scrape_configs;  /* array */
  json_t *rule_files;      /* array of globs */
  json_t *alerting;        /* object */
  json_t *remote_write;    /* array */
  json_t *influxdb_write;  /* array: InfluxDB line-protocol forwarding targets */
  json_t *statsd;          /* object */
  json_t *root;            /* the whole merged tree as loaded (after env/flags) */
  char *file_path;         /* NULL without a file */
} config_t;

/* Where to load from. All fields optional. */
typedef struct config_source {
  const char *file;                /* YAML file path */
  const char *yaml;                /* or YAML text (tests, fuzzing); used when file is NULL */
  size_t yaml_len;
  char *const *envp;               /* NULL-terminated "K=V" list; NULL = no environment */
  const char *const *overrides;    /* "path=value" strings from flags, applied last */
  size_t n_overrides;
} config_source_t;

/* Loads defaults, then the file, then the environment, then the overrides. On error
 * returns MD_EINVAL (or MD_EIO / MD_ENOMEM) with a message naming the file, key path and
 * problem, and *out is NULL. */
int config_load(const config_source_t *src, config_t **out, char *err, size_t errlen);
void config_free(config_t *c); /* NULL is a no-op */

/* Converts YAML text (one document) to a jansson tree: maps → objects, sequences → arrays,
 * plain scalars → null/bool/integer/real/string by their spelling, quoted scalars →
 * strings. Aliases are expanded (bounded). Errors name line and column. Usable for any
 * YAML file (rule files, SD files). */
int config_yaml_to_json(const char *text, size_t len, json_t **out, char *err, size_t errlen);

/* Helpers for modules reading raw sections: a duration (string "1m30s" or a number of
 * seconds) / a byte size ("64MiB", "1GB", or a number). Return 0 or MD_EINVAL. */
int config_parse_duration(const json_t *v, int64_t *ms);
int config_parse_size(const char *s, size_t n, uint64_t *bytes);

/* Roles as text ("read,write") for logs and docs; writes into buf. */
const char *config_roles_str(unsigned roles, char *buf, size_t n);

/* The environment variable name for a key path ("server.listen" → METRICSD_SERVER_LISTEN). */
void config_env_name(const char *path, char *buf, size_t n);

/* The tables behind config_load, for tools and for the test that keeps
 * docs/configuration.md true. Each returns false once i is past the end.
 *   config_setting_at:  the i-th typed setting's key path and default as text (NULL = unset);
 *   config_section_at:  the i-th top-level section passed through raw (scrape_configs...);
 *   config_env_alias_at: the i-th extra environment variable (seed names) and its key path. */
bool config_setting_at(size_t i, const char **path, const char **default_text);
bool config_section_at(size_t i, const char **key);
bool config_env_alias_at(size_t i, const char **env, const char **path);

#endif
