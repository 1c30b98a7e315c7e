/*
 * Configuration loading (see config.h): one table of typed settings drives defaults, the
 * YAML file, the environment and flags, so every source accepts exactly the same keys and
 * spellings, and docs/configuration.md can be checked against the table.
 *
 * Values are applied as text through one parser per kind (a YAML scalar is turned back
 * into its text first), so "15s" means the same in the file, in METRICSD_* and in --set.
 * Lists come from YAML sequences or comma-separated text.
 *
 * Threading: config_load is reentrant; a loaded config_t is immutable.
 */
#include "config.h"
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum {
  K_STR,      /* char *, "" allowed */
  K_OPTSTR,   /* char *, "" or null = NULL */
  K_BOOL,
  K_U64,
  K_U32,
  K_DUR,      /* int64 ms */
  K_SECONDS,  /* int64 s (duration text or a number of seconds) */
  K_SIZE,     /* uint64 bytes */
  K_LOGLEVEL, /* char * */
  K_FSYNC,    /* int */
  K_BACKEND,  /* char * */
  K_LISTEN,   /* char * */
  K_AGGTYPES, /* char ** + count */
  K_BUCKETS,  /* double * + count */
  K_AUTHKEYS, /* config_auth_key_t * + count */
  K_BUCKETMAP,/* config_buckets_t * + count */
  K_OBJECT,   /* json_t * (object) */
} kind_t;

typedef struct setting {
  const char *path;
  kind_t kind;
  size_t off;       /* field offset in config_t */
  size_t count_off; /* for list kinds: the size_t count field */
  const char *def;  /* default as text (NULL = zero/NULL) */
  uint64_t max;     /* for integers: inclusive maximum (0 = type max) */
} setting_t;

#define F(field) offsetof(config_t, field)
#define NOCOUNT 0

static const setting_t settings[] = {
    {"server.listen", K_LISTEN, F(server.listen), NOCOUNT, ":8012", 0},
    {"server.data_dir", K_STR, F(server.data_dir), NOCOUNT, "./data", 0},
    {"server.log_level", K_LOGLEVEL, F(server.log_level), NOCOUNT, "info", 0},
    {"server.max_body_bytes", K_SIZE, F(server.max_body_bytes), NOCOUNT, "64MiB", 0},
    {"server.read_timeout", K_DUR, F(server.read_timeout_ms), NOCOUNT, "30s", 0},
    {"server.max_connections", K_U32, F(server.max_connections), NOCOUNT, "1024", 1000000},
    {"server.max_connections_per_ip", K_U32, F(server.max_connections_per_ip), NOCOUNT, "0", 1000000},
    {"server.threads", K_U32, F(server.threads), NOCOUNT, "0", 1024},
    {"server.tls_cert_file", K_OPTSTR, F(server.tls_cert_file), NOCOUNT, NULL, 0},
    {"server.tls_key_file", K_OPTSTR, F(server.tls_key_file), NOCOUNT, NULL, 0},
    {"server.cors_origin", K_OPTSTR, F(server.cors_origin), NOCOUNT, NULL, 0},
    {"server.prometheus_enabled", K_BOOL, F(server.prometheus_enabled), NOCOUNT, "true", 0},
    {"server.self_tenant", K_STR, F(server.self_tenant), NOCOUNT, "default", 0},
    {"server.self_interval", K_DUR, F(server.self_interval_ms), NOCOUNT, "15s", 0},
    {"server.auth_keys", K_AUTHKEYS, F(server.auth_keys), F(server.n_auth_keys), NULL, 0},

    {"storage.backend", K_BACKEND, F(storage.backend), NOCOUNT, "local", 0},
    {"storage.retention", K_DUR, F(storage.retention_ms), NOCOUNT, "15d", 0},
    {"storage.retention_size", K_SIZE, F(storage.retention_bytes), NOCOUNT, "0", 0},
    {"storage.block_span", K_DUR, F(storage.block_span_ms), NOCOUNT, "2h", 0},
    {"storage.fsync", K_FSYNC, F(storage.fsync_always), NOCOUNT, "interval", 0},
    {"storage.fsync_interval", K_DUR, F(storage.fsync_interval_ms), NOCOUNT, "1s", 0},
    {"storage.ooo_window", K_DUR, F(storage.ooo_window_ms), NOCOUNT, "10m", 0},
    {"storage.raw_retention", K_DUR, F(storage.raw_retention_ms), NOCOUNT, "0", 0},
    {"storage.tier1_resolution", K_DUR, F(storage.tier1_resolution_ms), NOCOUNT, "5m", 0},
    {"storage.tier1_retention", K_DUR, F(storage.tier1_retention_ms), NOCOUNT, "30d", 0},
    {"storage.tier2_resolution", K_DUR, F(storage.tier2_resolution_ms), NOCOUNT, "1h", 0},
    {"storage.tier2_retention", K_DUR, F(storage.tier2_retention_ms), NOCOUNT, "365d", 0},

    {"limits.max_series_per_tenant", K_U64, F(limits.max_series_per_tenant), NOCOUNT, "1000000", 0},
    {"limits.max_samples_per_request", K_U64, F(limits.max_samples_per_request), NOCOUNT, "1000000", 0},
    {"limits.max_points_per_series", K_U64, F(limits.max_points_per_series), NOCOUNT, "1000", 0},
    {"limits.max_labels_per_series", K_U32, F(limits.max_labels_per_series), NOCOUNT, "64", 4096},
    {"limits.max_label_name_length", K_U32, F(limits.max_label_name_length), NOCOUNT, "256", 65536},
    {"limits.max_label_value_length", K_U32, F(limits.max_label_value_length), NOCOUNT, "4096", 1048576},
    {"limits.max_concurrent_inserts", K_U32, F(limits.max_concurrent_inserts), NOCOUNT, "0", 100000},
    {"limits.ingest_series_cache", K_U64, F(limits.ingest_series_cache), NOCOUNT, "4000000", 0},

    {"query.timeout", K_DUR, F(query.timeout_ms), NOCOUNT, "2m", 0},
    {"query.max_samples", K_U64, F(query.max_samples), NOCOUNT, "50000000", 0},
    {"query.max_series", K_U64, F(query.max_series), NOCOUNT, "0", 0},
    {"query.lookback_delta", K_DUR, F(query.lookback_delta_ms), NOCOUNT, "5m", 0},
    {"query.max_concurrent", K_U32, F(query.max_concurrent), NOCOUNT, "0", 100000},

    {"aggregation.window_seconds", K_SECONDS, F(aggregation.window_seconds), NOCOUNT, "300", 0},
    {"aggregation.types", K_AGGTYPES, F(aggregation.types), F(aggregation.n_types), "avg,sum,min,max,count", 0},
    {"aggregation.trend_hours", K_U64, F(aggregation.trend_hours), NOCOUNT, "24", 87600},

    {"collectors.host.enabled", K_BOOL, F(collectors.host_enabled), NOCOUNT, "true", 0},
    {"collectors.host.interval", K_DUR, F(collectors.host_interval_ms), NOCOUNT, "15s", 0},
    {"collectors.host.cpu", K_BOOL, F(collectors.host_cpu), NOCOUNT, "true", 0},
    {"collectors.host.memory", K_BOOL, F(collectors.host_memory), NOCOUNT, "true", 0},
    {"collectors.host.loadavg", K_BOOL, F(collectors.host_loadavg), NOCOUNT, "true", 0},
    {"collectors.host.disk", K_BOOL, F(collectors.host_disk), NOCOUNT, "true", 0},
    {"collectors.host.filesystem", K_BOOL, F(collectors.host_filesystem), NOCOUNT, "true", 0},
    {"collectors.host.network", K_BOOL, F(collectors.host_network), NOCOUNT, "true", 0},
    {"collectors.host.netstat", K_BOOL, F(collectors.host_netstat), NOCOUNT, "true", 0},
    {"collectors.host.vmstat", K_BOOL, F(collectors.host_vmstat), NOCOUNT, "true", 0},
    {"collectors.host.filefd", K_BOOL, F(collectors.host_filefd), NOCOUNT, "true", 0},
    {"collectors.host.processes", K_BOOL, F(collectors.host_processes), NOCOUNT, "true", 0},
    {"collectors.host.uname", K_BOOL, F(collectors.host_uname), NOCOUNT, "true", 0},
    {"collectors.host.time", K_BOOL, F(collectors.host_time), NOCOUNT, "true", 0},
    {"collectors.host.filesystem_timeout", K_DUR, F(collectors.host_filesystem_timeout_ms), NOCOUNT, "5s", 0},
    {"collectors.gpu.enabled", K_BOOL, F(collectors.gpu_enabled), NOCOUNT, "true", 0},
    {"collectors.gpu.interval", K_DUR, F(collectors.gpu_interval_ms), NOCOUNT, "5s", 0},
    {"collectors.gpu.nvml_library", K_OPTSTR, F(collectors.nvml_library), NOCOUNT, NULL, 0},
    {"collectors.gpu.processes", K_BOOL, F(collectors.gpu_processes), NOCOUNT, "true", 0},
    {"collectors.tenant", K_STR, F(collectors.tenant), NOCOUNT, "default", 0},

    {"track.flush_interval", K_DUR, F(track.flush_interval_ms), NOCOUNT, "15s", 0},
    {"track.default_buckets", K_BUCKETS, F(track.default_buckets), F(track.n_default_buckets),
     ".005,.01,.025,.05,.1,.25,.5,1,2.5,5,10", 0},
    {"track.buckets", K_BUCKETMAP, F(track.buckets), F(track.n_buckets), NULL, 0},
    {"track.summary_window", K_DUR, F(track.summary_window_ms), NOCOUNT, "10m", 0},
    {"track.max_series", K_U64, F(track.max_series), NOCOUNT, "0", 0},

    {"global.scrape_interval", K_DUR, F(global.scrape_interval_ms), NOCOUNT, "15s", 0},
    {"global.scrape_timeout", K_DUR, F(global.scrape_timeout_ms), NOCOUNT, "10s", 0},
    {"global.evaluation_interval", K_DUR, F(global.evaluation_interval_ms), NOCOUNT, "15s", 0},
    {"global.external_labels", K_OBJECT, F(global.external_labels), NOCOUNT, NULL, 0},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

/* Top-level sections other modules parse themselves. */
static const struct {
  const char *key;
  size_t off;
} raw_sections[] = {
    {"scrape_configs", F(scrape_configs)}, {"rule_files", F(rule_files)},
    {"alerting", F(alerting)},             {"remote_write", F(remote_write)},
    {"influxdb_write", F(influxdb_write)}, {"statsd", F(statsd)},
};
#define NRAW (sizeof raw_sections / sizeof raw_sections[0])

/* The seeds' environment variables (seed 004's ACCESS_*, seed 001's), plus short METRICSD_
 * spellings of the seed 004 knobs. Applied before the canonical METRICSD_<PATH> names. */
static const struct {
  const char *env;
  const char *path;
} env_aliases[] = {
    {"ACCESS_LOG_LEVEL", "server.log_level"},
    {"ACCESS_MAX_METRIC_SERIES", "limits.max_series_per_tenant"},
    {"ACCESS_MAX_POINTS_PER_SERIES", "limits.max_points_per_series"},
    {"ACCESS_AGGREGATION_WINDOW_SECONDS", "aggregation.window_seconds"},
    {"LOG_LEVEL", "server.log_level"}, /* seeds 000 and 001 (LOG_LEVEL=INFO) */
    {"PROMETHEUS_ENABLED", "server.prometheus_enabled"},
    {"GPU_METRICS_ENABLED", "collectors.gpu.enabled"}, /* seed 000 */
    {"GPU_COLLECTION_INTERVAL", "collectors.gpu.interval"},
    {"TIMESERIES_BACKEND", "storage.backend"},
    {"METRICSD_LOG_LEVEL", "server.log_level"},
    {"METRICSD_MAX_SERIES", "limits.max_series_per_tenant"},
    {"METRICSD_MAX_POINTS_PER_REQUEST", "limits.max_samples_per_request"},
    {"METRICSD_AGGREGATION_WINDOW", "aggregation.window_seconds"},
    {"METRICSD_LISTEN", "server.listen"},
    {"METRICSD_DATA_DIR", "server.data_dir"},
};
#define NALIASES (sizeof env_aliases / sizeof env_aliases[0])

/* METRICSD_* variables that are not settings (tools, tests) and need no warning. */
static const char *const env_ignored[] = {"METRICSD_BIN", "METRICSD_CONFIG", NULL};

bool config_setting_at(size_t i, const char **path, const char **default_text) {
  if (i >= NSETTINGS) return false;
  *path = settings[i].path;
  *default_text = settings[i].def;
  return true;
}

bool config_section_at(size_t i, const char **key) {
  if (i >= NRAW) return false;
  *key = raw_sections[i].key;
  return true;
}

bool config_env_alias_at(size_t i, const char **env, const char **path) {
  if (i >= NALIASES) return false;
  *env = env_aliases[i].env;
  *path = env_aliases[i].path;
  return true;
}

static const char *const agg_types[] = {"avg", "sum", "min", "max", "count", "last", NULL};

/* ---- small parsers ------------------------------------------------------------------ */

int config_parse_size(const char *s, size_t n, uint64_t *bytes) {
  char buf[64];
  if (n == 0 || n >= sizeof buf) return MD_EINVAL;
  memcpy(buf, s, n);
  buf[n] = 0;
  char *p = buf;
  while (isspace((unsigned char)*p)) p++;
  if (!isdigit((unsigned char)*p) && *p != '.') return MD_EINVAL;
  errno = 0;
  char *end;
  double v = strtod(p, &end);
  if (errno || end == p || !isfinite(v) || v < 0) return MD_EINVAL;
  while (isspace((unsigned char)*end)) end++;
  static const struct {
    const char *unit;
    double mult;
  } units[] = {{"", 1},          {"b", 1},           {"k", 1024.0},         {"kb", 1e3},
               {"kib", 1024.0},  {"m", 1048576.0},   {"mb", 1e6},           {"mib", 1048576.0},
               {"g", 1073741824.0}, {"gb", 1e9},     {"gib", 1073741824.0}, {"t", 1099511627776.0},
               {"tb", 1e12},     {"tib", 1099511627776.0}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcasecmp(end, units[i].unit) == 0) {
      double b = v * units[i].mult;
      if (b >= 1.8e19) return MD_EINVAL;
      *bytes = (uint64_t)b;
      return 0;
    }
  }
  return MD_EINVAL;
}

int config_parse_duration(const json_t *v, int64_t *ms) {
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < 0 || i > INT64_MAX / 1000) return MD_EINVAL;
    *ms = (int64_t)i * 1000;
    return 0;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (!(d >= 0) || d > 9e15) return MD_EINVAL;
    *ms = (int64_t)llround(d * 1000.0);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 1 && s[0] == '0') {
      *ms = 0;
      return 0;
    }
    return md_parse_duration(s, n, ms) == 0 && *ms >= 0 ? 0 : MD_EINVAL;
  }
  return MD_EINVAL;
}

const char *config_roles_str(unsigned roles, char *buf, size_t n) {
  if (!n) return buf;
  buf[0] = 0;
  size_t len = 0;
  const char *names[] = {"read", "write", "admin"};
  for (int i = 0; i < 3; i++) {
    if (roles & (1u << i)) {
      int w = snprintf(buf + len, n - len, "%s%s", len ? "," : "", names[i]);
      if (w < 0 || (size_t)w >= n - len) break;
      len += (size_t)w;
    }
  }
  return buf;
}

void config_env_name(const char *path, char *buf, size_t n) {
  size_t j = 0;
  const char *pre = "METRICSD_";
  for (; *pre && j + 1 < n; pre++) buf[j++] = *pre;
  for (; *path && j + 1 < n; path++) buf[j++] = *path == '.' ? '_' : (char)toupper((unsigned char)*path);
  if (n) buf[j] = 0;
}

static int parse_bool(const char *s, bool *out) {
  static const char *const t[] = {"true", "1", "yes", "on", NULL};
  static const char *const f[] = {"false", "0", "no", "off", NULL};
  for (int i = 0; t[i]; i++)
    if (strcasecmp(s, t[i]) == 0) return (*out = true), 0;
  for (int i = 0; f[i]; i++)
    if (strcasecmp(s, f[i]) == 0) return (*out = false), 0;
  return MD_EINVAL;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (!*s) return MD_EINVAL;
  const char *p = s;
  while (*p) {
    if (!isdigit((unsigned char)*p)) {
      /* accept integral scientific notation ("1e6") as numbers from YAML often look so */
      char *end;
      errno = 0;
      double d = strtod(s, &end);
      if (errno || *end || !(d >= 0) || d != floor(d) || d > 1.8e19) return MD_EINVAL;
      if (max && d > (double)max) return MD_ELIMIT;
      *out = (uint64_t)d;
      return 0;
    }
    p++;
  }
  errno = 0;
  unsigned long long v = strtoull(s, NULL, 10);
  if (errno) return MD_EINVAL;
  if (max && v > max) return MD_ELIMIT;
  *out = v;
  return 0;
}

/* Validates "host:port", ":port", "[v6]:port" or "port". */
static int check_listen(const char *s) {
  const char *colon = strrchr(s, ':');
  const char *port = colon ? colon + 1 : s;
  if (s[0] == '[' && (!colon || colon == s || colon[-1] != ']')) return MD_EINVAL;
  if (!*port || strlen(port) > 5) return MD_EINVAL;
  for (const char *p = port; *p; p++)
    if (!isdigit((unsigned char)*p)) return MD_EINVAL;
  if (atoi(port) > 65535) return MD_EINVAL;
  return 0;
}

/* ---- applying values ---------------------------------------------------------------- */

typedef struct applier {
  config_t *c;
  const char *source; /* "file x.yml", "environment variable X", "flag --set" */
  char *err;
  size_t errlen;
} applier_t;

static int bad(applier_t *a, const setting_t *s, const char *fmt, const char *val) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, val ? val : "");
  return md_error(a->err, a->errlen, MD_EINVAL, "config: %s: key %s: %s", a->source, s->path, msg);
}

static void *field(config_t *c, size_t off) { return (char *)c + off; }

static int set_str(char **dst, const char *v) {
  char *n = v ? strdup(v) : NULL;
  if (v && !n) return MD_ENOMEM;
  free(*dst);
  *dst = n;
  return 0;
}

/* Splits comma-separated text into an array of trimmed, non-empty items (json strings). */
static json_t *split_list(const char *text) {
  json_t *arr = json_array();
  if (!arr) return NULL;
  const char *p = text;
  while (*p) {
    const char *e = strchr(p, ',');
    if (!e) e = p + strlen(p);
    const char *b = p, *t = e;
    while (b < t && isspace((unsigned char)*b)) b++;
    while (t > b && isspace((unsigned char)t[-1])) t--;
    if (t > b) json_array_append_new(arr, json_stringn(b, (size_t)(t - b)));
    p = *e ? e + 1 : e;
  }
  return arr;
}

/* Text of a scalar for the kinds that parse text; NULL for non-scalars. buf holds numbers. */
static const char *scalar_text(const json_t *v, char *buf, size_t n) {
  if (json_is_string(v)) return json_string_value(v);
  if (json_is_integer(v)) {
    snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    snprintf(buf, n, "%.17g", json_real_value(v));
    return buf;
  }
  if (json_is_true(v)) return "true";
  if (json_is_false(v)) return "false";
  return NULL;
}

static int apply_buckets(applier_t *a, const setting_t *s, const json_t *arr, double **out, size_t *nout) {
  size_t n = json_array_size(arr);
  if (n == 0) return bad(a, s, "needs at least one bucket bound", NULL);
  double *b = malloc(n * sizeof *b);
  if (!b) return MD_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(arr, i);
    char nb[64];
    const char *t = scalar_text(e, nb, sizeof nb);
    char *end = NULL;
    double d = t ? strtod(t, &end) : NAN;
    if (!t || end == t || *end || !isfinite(d) || (i > 0 && !(d > b[i - 1]))) {
      free(b);
      return bad(a, s, "bucket bounds must be finite numbers in ascending order (got '%s')", t ? t : "?");
    }
    b[i] = d;
  }
  *out = b;
  *nout = n;
  return 0;
}

static void free_auth_keys(config_auth_key_t *k, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(k[i].name);
    free(k[i].token);
    free(k[i].username);
    free(k[i].tenant);
  }
  free(k);
}

static void free_bucketmap(config_buckets_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(b[i].metric);
    free(b[i].bounds);
  }
  free(b);
}

static int parse_roles(const char *s, unsigned *roles) {
  *roles = 0;
  const char *p = s;
  while (*p) {
    size_t len = strcspn(p, ",+| ");
    if (len == 4 && strncasecmp(p, "read", 4) == 0) *roles |= CONFIG_ROLE_READ;
    else if (len == 5 && strncasecmp(p, "write", 5) == 0) *roles |= CONFIG_ROLE_WRITE;
    else if (len == 5 && strncasecmp(p, "admin", 5) == 0) *roles |= CONFIG_ROLE_ADMIN;
    else if (len) return MD_EINVAL;
    p += len;
    if (*p) p++;
  }
  return *roles ? 0 : MD_EINVAL;
}

/* From the file: a list of {token, tenant, roles, name, username}. From text (env/flags):
 * "token[:tenant[:roles]]" items separated by commas, roles joined with '+'. */
static int apply_auth_keys(applier_t *a, const setting_t *s, const json_t *v) {
  json_t *list = NULL;
  int rc = 0;
  if (json_is_string(v)) {
    list = json_array();
    json_t *items = split_list(json_string_value(v));
    if (!list || !items) {
      json_decref(list);
      json_decref(items);
      return MD_ENOMEM;
    }
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
      char *dup = strdup(json_string_value(it));
      if (!dup) {
        rc = MD_ENOMEM;
        break;
      }
      char *tok = dup, *tenant = strchr(dup, ':'), *roles = NULL;
      if (tenant) {
        *tenant++ = 0;
        roles = strchr(tenant, ':');
        if (roles) *roles++ = 0;
      }
      json_t *o = json_pack("{s:s}", "token", tok);
      if (o && tenant && *tenant) json_object_set_new(o, "tenant", json_string(tenant));
      if (o && roles && *roles) json_object_set_new(o, "roles", json_string(roles));
      free(dup);
      if (!o) {
        rc = MD_ENOMEM;
        break;
      }
      json_array_append_new(list, o);
    }
    json_decref(items);
    if (rc) {
      json_decref(list);
      return rc;
    }
  } else if (json_is_array(v)) {
    list = json_incref((json_t *)v);
  } else {
    return bad(a, s, "must be a list of {token, tenant, roles}", NULL);
  }
  size_t n = json_array_size(list);
  config_auth_key_t *keys = calloc(n ? n : 1, sizeof *keys);
  if (!keys) {
    json_decref(list);
    return MD_ENOMEM;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    json_t *o = json_array_get(list, i);
    char path[64];
    snprintf(path, sizeof path, "%s[%zu]", s->path, i);
    setting_t sub = *s;
    sub.path = path;
    if (!json_is_object(o)) {
      rc = bad(a, &sub, "must be a mapping with token, tenant, roles", NULL);
      break;
    }
    const char *k;
    json_t *e;
    json_object_foreach(o, k, e) {
      if (strcmp(k, "token") && strcmp(k, "tenant") && strcmp(k, "roles") && strcmp(k, "name") &&
          strcmp(k, "username")) {
        rc = bad(a, &sub, "unknown field '%s' (token, tenant, roles, name, username)", k);
        break;
      }
      if (strcmp(k, "roles") && !json_is_string(e)) {
        rc = bad(a, &sub, "field '%s' must be a string", k);
        break;
      }
    }
    if (rc) break;
    const char *token = json_string_value(json_object_get(o, "token"));
    if (!token || !*token) {
      rc = bad(a, &sub, "token is required and must not be empty", NULL);
      break;
    }
    const char *tenant = json_string_value(json_object_get(o, "tenant"));
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *user = json_string_value(json_object_get(o, "username"));
    json_t *roles = json_object_get(o, "roles");
    keys[i].roles = CONFIG_ROLE_READ | CONFIG_ROLE_WRITE;
    if (json_is_string(roles)) {
      if (parse_roles(json_string_value(roles), &keys[i].roles) != 0)
        rc = bad(a, &sub, "roles must be read, write and/or admin (got '%s')", json_string_value(roles));
    } else if (json_is_array(roles)) {
      keys[i].roles = 0;
      size_t j;
      json_t *r;
      json_array_foreach(roles, j, r) {
        unsigned one;
        if (!json_is_string(r) || parse_roles(json_string_value(r), &one) != 0) {
          rc = bad(a, &sub, "roles must be read, write and/or admin", NULL);
          break;
        }
        keys[i].roles |= one;
      }
      if (!rc && !keys[i].roles) rc = bad(a, &sub, "roles must not be empty", NULL);
    } else if (roles && !json_is_null(roles)) {
      rc = bad(a, &sub, "roles must be a string or a list", NULL);
    }
    if (rc) break;
    if (tenant && !*tenant) {
      rc = bad(a, &sub, "tenant must not be empty", NULL);
      break;
    }
    char defname[32];
    snprintf(defname, sizeof defname, "key%zu", i + 1);
    keys[i].token = strdup(token);
    keys[i].tenant = strdup(tenant ? tenant : "default");
    keys[i].name = strdup(name ? name : defname);
    keys[i].username = user && *user ? strdup(user) : NULL;
    if (!keys[i].token || !keys[i].tenant || !keys[i].name || (user && *user && !keys[i].username)) rc = MD_ENOMEM;
  }
  json_decref(list);
  if (rc) {
    free_auth_keys(keys, n);
    return rc;
  }
  config_auth_key_t **dst = field(a->c, s->off);
  size_t *cnt = field(a->c, s->count_off);
  free_auth_keys(*dst, *cnt);
  *dst = keys;
  *cnt = n;
  return 0;
}

static int apply_bucketmap(applier_t *a, const setting_t *s, const json_t *v) {
  if (!json_is_object(v)) return bad(a, s, "must be a mapping of metric name to a list of bucket bounds", NULL);
  size_t n = json_object_size(v), i = 0;
  config_buckets_t *b = calloc(n ? n : 1, sizeof *b);
  if (!b) return MD_ENOMEM;
  const char *k;
  json_t *e;
  int rc = 0;
  json_object_foreach((json_t *)v, k, e) {
    char path[200];
    snprintf(path, sizeof path, "%s.%.150s", s->path, k);
    setting_t sub = *s;
    sub.path = path;
    json_t *arr = json_is_string(e) ? split_list(json_string_value(e)) : json_incref(e);
    if (!json_is_array(arr)) rc = bad(a, &sub, "must be a list of bucket bounds", NULL);
    else rc = apply_buckets(a, &sub, arr, &b[i].bounds, &b[i].n);
    json_decref(arr);
    if (rc) break;
    if (!(b[i].metric = strdup(k))) {
      rc = MD_ENOMEM;
      break;
    }
    i++;
  }
  if (rc) {
    free_bucketmap(b, n);
    return rc;
  }
  config_buckets_t **dst = field(a->c, s->off);
  size_t *cnt = field(a->c, s->count_off);
  free_bucketmap(*dst, *cnt);
  *dst = b;
  *cnt = n;
  return 0;
}

/* Applies one value (a scalar, list or mapping from YAML, or a string from env/flags). A
 * null value leaves the setting as it was. */
static int apply(applier_t *a, const setting_t *s, const json_t *v) {
  if (json_is_null(v)) return 0;
  config_t *c = a->c;
  char nb[64];
  switch (s->kind) {
  case K_AUTHKEYS: return apply_auth_keys(a, s, v);
  case K_BUCKETMAP: return apply_bucketmap(a, s, v);
  case K_OBJECT: {
    json_t **dst = field(c, s->off);
    if (!json_is_object(v)) return bad(a, s, "must be a mapping", NULL);
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)v, k, e) if (!json_is_string(e) && !json_is_number(e) && !json_is_boolean(e))
        return bad(a, s, "values must be scalars (entry '%s')", k);
    json_decref(*dst);
    *dst = json_deep_copy(v);
    return *dst ? 0 : MD_ENOMEM;
  }
  case K_AGGTYPES:
  case K_BUCKETS: {
    json_t *arr = json_is_string(v) ? split_list(json_string_value(v)) : json_incref((json_t *)v);
    if (!json_is_array(arr)) {
      json_decref(arr);
      return bad(a, s, "must be a list (YAML sequence or comma-separated text)", NULL);
    }
    int rc = 0;
    if (s->kind == K_BUCKETS) {
      double *b = NULL;
      size_t n = 0;
      rc = apply_buckets(a, s, arr, &b, &n);
      if (rc == 0) {
        double **dst = field(c, s->off);
        free(*dst);
        *dst = b;
        *(size_t *)field(c, s->count_off) = n;
      }
    } else {
      size_t n = json_array_size(arr);
      char **list = calloc(n + 1, sizeof *list);
      if (!list) rc = MD_ENOMEM;
      for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *t = json_string_value(json_array_get(arr, i));
        bool ok = false;
        for (int j = 0; t && agg_types[j]; j++) ok |= strcmp(t, agg_types[j]) == 0;
        if (!ok) rc = bad(a, s, "unknown aggregation '%s' (avg, sum, min, max, count, last)", t ? t : "?");
        else if (!(list[i] = strdup(t))) rc = MD_ENOMEM;
      }
      if (rc == 0 && n == 0) rc = bad(a, s, "needs at least one aggregation", NULL);
      if (rc == 0) {
        char ***dst = field(c, s->off);
        size_t *cnt = field(c, s->count_off);
        for (size_t i = 0; *dst && i < *cnt; i++) free((*dst)[i]);
        free(*dst);
        *dst = list;
        *cnt = n;
      } else if (list) {
        for (size_t i = 0; i < n; i++) free(list[i]);
        free(list);
      }
    }
    json_decref(arr);
    return rc;
  }
  default:
    break;
  }
  const char *t = scalar_text(v, nb, sizeof nb);
  if (!t) return bad(a, s, "must be a single value, not a list or mapping", NULL);
  switch (s->kind) {
  case K_STR:
    return set_str(field(c, s->off), t);
  case K_OPTSTR:
    return set_str(field(c, s->off), *t ? t : NULL);
  case K_LISTEN:
    if (check_listen(t) != 0) return bad(a, s, "'%s' is not HOST:PORT, :PORT or PORT (port 0-65535)", t);
    return set_str(field(c, s->off), t);
  case K_LOGLEVEL: {
    static const char *const lv[] = {"debug", "info", "warn", "warning", "error", NULL};
    for (int i = 0; lv[i]; i++)
      if (strcasecmp(t, lv[i]) == 0) return set_str(field(c, s->off), lv[i][0] == 'w' ? "warn" : lv[i]);
    return bad(a, s, "'%s' is not one of debug, info, warn, error", t);
  }
  case K_BACKEND:
    if (strcasecmp(t, "local") == 0 || strcasecmp(t, "metricsd") == 0 || strcasecmp(t, "embedded") == 0)
      return set_str(field(c, s->off), "local");
    if (strcasecmp(t, "influxdb") == 0)
      return bad(a, s, "'%s': storage is always the embedded engine; forward to InfluxDB with influxdb_write", t);
    return bad(a, s, "'%s' is not a storage backend (only 'local')", t);
  case K_FSYNC:
    if (strcasecmp(t, "interval") == 0) *(int *)field(c, s->off) = 0;
    else if (strcasecmp(t, "always") == 0) *(int *)field(c, s->off) = 1;
    else return bad(a, s, "'%s' is not 'interval' or 'always'", t);
    return 0;
  case K_BOOL: {
    bool b;
    if (parse_bool(t, &b) != 0) return bad(a, s, "'%s' is not a boolean (true/false)", t);
    *(bool *)field(c, s->off) = b;
    return 0;
  }
  case K_U64:
  case K_U32: {
    uint64_t max = s->max ? s->max : (s->kind == K_U32 ? UINT32_MAX : 0);
    uint64_t u;
    int rc = parse_u64(t, max, &u);
    if (rc == MD_ELIMIT) {
      char msg[96];
      snprintf(msg, sizeof msg, "'%%s' is larger than the maximum %llu", (unsigned long long)max);
      return bad(a, s, msg, t);
    }
    if (rc) return bad(a, s, "'%s' is not a non-negative integer", t);
    if (s->kind == K_U32) *(uint32_t *)field(c, s->off) = (uint32_t)u;
    else *(uint64_t *)field(c, s->off) = u;
    return 0;
  }
  case K_DUR:
  case K_SECONDS: {
    int64_t ms;
    /* numbers mean seconds; text is a Prometheus duration or a number of seconds */
    json_t *probe = json_is_string(v) ? json_incref((json_t *)v) : json_deep_copy(v);
    int rc = probe ? config_parse_duration(probe, &ms) : MD_ENOMEM;
    json_decref(probe);
    if (rc == MD_ENOMEM) return rc;
    if (rc) return bad(a, s, "'%s' is not a duration (like 30s, 5m, 1h30m, 15d, or seconds)", t);
    if (s->kind == K_SECONDS) {
      if (ms % 1000) return bad(a, s, "'%s' must be a whole number of seconds", t);
      *(int64_t *)field(c, s->off) = ms / 1000;
    } else {
      *(int64_t *)field(c, s->off) = ms;
    }
    return 0;
  }
  case K_SIZE: {
    uint64_t b;
    if (config_parse_size(t, strlen(t), &b) != 0) return bad(a, s, "'%s' is not a size (like 64MiB, 1GB, 512KiB, bytes)", t);
    *(uint64_t *)field(c, s->off) = b;
    return 0;
  }
  default:
    return bad(a, s, "internal: unhandled kind", NULL);
  }
}

static const setting_t *find_setting(const char *path) {
  for (size_t i = 0; i < NSETTINGS; i++)
    if (strcmp(settings[i].path, path) == 0) return &settings[i];
  return NULL;
}

static bool is_section_prefix(const char *path) {
  size_t n = strlen(path);
  for (size_t i = 0; i < NSETTINGS; i++)
    if (strncmp(settings[i].path, path, n) == 0 && settings[i].path[n] == '.') return true;
  return false;
}

/* Walks an object of the file at `prefix`, applying known keys; unknown → error. */
static int walk_file(applier_t *a, const json_t *obj, const char *prefix) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    char path[256];
    if (prefix[0]) snprintf(path, sizeof path, "%s.%s", prefix, k);
    else snprintf(path, sizeof path, "%s", k);
    const setting_t *s = find_setting(path);
    if (s) {
      int rc = apply(a, s, v);
      if (rc) return rc;
      continue;
    }
    if (!prefix[0]) {
      bool raw = false;
      for (size_t i = 0; i < NRAW; i++) {
        if (strcmp(raw_sections[i].key, k) == 0) {
          raw = true;
          json_t **dst = field(a->c, raw_sections[i].off);
          json_decref(*dst);
          *dst = json_is_null(v) ? NULL : json_incref(v);
        }
      }
      if (raw) continue;
    }
    if (is_section_prefix(path)) {
      if (json_is_null(v)) continue; /* "storage:" with nothing under it */
      if (!json_is_object(v))
        return md_error(a->err, a->errlen, MD_EINVAL, "config: %s: key %s: must be a mapping", a->source, path);
      int rc = walk_file(a, v, path);
      if (rc) return rc;
      continue;
    }
    return md_error(a->err, a->errlen, MD_EINVAL, "config: %s: unknown key %s", a->source, path);
  }
  return 0;
}

/* Records a text override in the merged tree (so `root` reflects what is in effect). */
static void root_set(json_t *root, const char *path, const char *text) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  json_t *o = root;
  char *save = NULL;
  char *tok = strtok_r(buf, ".", &save);
  while (tok) {
    char *next = strtok_r(NULL, ".", &save);
    if (!next) {
      json_object_set_new(o, tok, json_string(text));
      return;
    }
    json_t *child = json_object_get(o, tok);
    if (!json_is_object(child)) {
      child = json_object();
      if (!child || json_object_set_new(o, tok, child) != 0) return;
    }
    o = child;
    tok = next;
  }
}

static int apply_text(applier_t *a, const setting_t *s, const char *text) {
  json_t *v = json_string(text);
  if (!v) return md_error(a->err, a->errlen, MD_EINVAL, "config: %s: key %s: value is not valid UTF-8", a->source, s->path);
  int rc = apply(a, s, v);
  json_decref(v);
  if (rc == 0 && a->c->root && s->kind != K_AUTHKEYS) root_set(a->c->root, s->path, text);
  return rc;
}

static int validate(config_t *c, char *err, size_t errlen) {
  if ((c->server.tls_cert_file == NULL) != (c->server.tls_key_file == NULL))
    return md_error(err, errlen, MD_EINVAL, "config: server.tls_cert_file and server.tls_key_file must be set together");
  if (c->server.max_body_bytes == 0)
    return md_error(err, errlen, MD_EINVAL, "config: key server.max_body_bytes: must be greater than 0");
  if (c->server.read_timeout_ms < 1000)
    return md_error(err, errlen, MD_EINVAL, "config: key server.read_timeout: must be at least 1s");
  if (!c->server.data_dir[0])
    return md_error(err, errlen, MD_EINVAL, "config: key server.data_dir: must not be empty");
  if (!c->server.self_tenant[0] || !c->collectors.tenant[0])
    return md_error(err, errlen, MD_EINVAL, "config: tenants (server.self_tenant, collectors.tenant) must not be empty");
  if (c->storage.block_span_ms < 60000)
    return md_error(err, errlen, MD_EINVAL, "config: key storage.block_span: must be at least 1m");
  if (c->storage.fsync_interval_ms <= 0 && !c->storage.fsync_always)
    return md_error(err, errlen, MD_EINVAL, "config: key storage.fsync_interval: must be greater than 0");
  if (c->storage.tier1_resolution_ms && c->storage.tier2_resolution_ms &&
      c->storage.tier2_resolution_ms <= c->storage.tier1_resolution_ms)
    return md_error(err, errlen, MD_EINVAL,
                    "config: key storage.tier2_resolution: must be coarser than storage.tier1_resolution");
  if (c->aggregation.window_seconds <= 0)
    return md_error(err, errlen, MD_EINVAL, "config: key aggregation.window_seconds: must be greater than 0");
  if (c->collectors.host_interval_ms < 100 || c->collectors.gpu_interval_ms < 100)
    return md_error(err, errlen, MD_EINVAL, "config: collector intervals must be at least 100ms");
  if (c->track.flush_interval_ms < 100)
    return md_error(err, errlen, MD_EINVAL, "config: key track.flush_interval: must be at least 100ms");
  if (c->global.scrape_interval_ms <= 0 || c->global.evaluation_interval_ms <= 0)
    return md_error(err, errlen, MD_EINVAL, "config: global intervals must be greater than 0");
  if (c->global.scrape_timeout_ms > c->global.scrape_interval_ms)
    return md_error(err, errlen, MD_EINVAL, "config: key global.scrape_timeout: must not exceed global.scrape_interval");
  if (c->query.timeout_ms <= 0)
    return md_error(err, errlen, MD_EINVAL, "config: key query.timeout: must be greater than 0");
  /* raw sections: only their outer shape is checked here */
  if (c->scrape_configs && !json_is_array(c->scrape_configs))
    return md_error(err, errlen, MD_EINVAL, "config: key scrape_configs: must be a list");
  if (c->rule_files && !json_is_array(c->rule_files))
    return md_error(err, errlen, MD_EINVAL, "config: key rule_files: must be a list");
  if (c->remote_write && !json_is_array(c->remote_write))
    return md_error(err, errlen, MD_EINVAL, "config: key remote_write: must be a list");
  if (c->influxdb_write && !json_is_array(c->influxdb_write))
    return md_error(err, errlen, MD_EINVAL, "config: key influxdb_write: must be a list");
  if (c->alerting && !json_is_object(c->alerting))
    return md_error(err, errlen, MD_EINVAL, "config: key alerting: must be a mapping");
  if (c->statsd && !json_is_object(c->statsd))
    return md_error(err, errlen, MD_EINVAL, "config: key statsd: must be a mapping");
  return 0;
}

void config_free(config_t *c) {
  if (!c) return;
  for (size_t i = 0; i < NSETTINGS; i++) {
    const setting_t *s = &settings[i];
    void *f = field(c, s->off);
    switch (s->kind) {
    case K_STR: case K_OPTSTR: case K_LISTEN: case K_LOGLEVEL: case K_BACKEND:
      free(*(char **)f);
      break;
    case K_AGGTYPES: {
      char **l = *(char ***)f;
      for (size_t j = 0; l && j < *(size_t *)field(c, s->count_off); j++) free(l[j]);
      free(l);
      break;
    }
    case K_BUCKETS: free(*(double **)f); break;
    case K_AUTHKEYS: free_auth_keys(*(config_auth_key_t **)f, *(size_t *)field(c, s->count_off)); break;
    case K_BUCKETMAP: free_bucketmap(*(config_buckets_t **)f, *(size_t *)field(c, s->count_off)); break;
    case K_OBJECT: json_decref(*(json_t **)f); break;
    default: break;
    }
  }
  for (size_t i = 0; i < NRAW; i++) json_decref(*(json_t **)field(c, raw_sections[i].off));
  json_decref(c->root);
  free(c->file_path);
  free(c);
}

int config_load(const config_source_t *src, config_t **out, char *err, size_t errlen) {
  static const config_source_t none = {0};
  if (!src) src = &none;
  *out = NULL;
  config_t *c = calloc(1, sizeof *c);
  if (!c) return md_error(err, errlen, MD_ENOMEM, "config: out of memory");
  int rc = 0;
  char *text = NULL;
  json_t *tree = NULL;
  applier_t a = {c, "defaults", err, errlen};
  for (size_t i = 0; i < NSETTINGS && rc == 0; i++)
    if (settings[i].def) rc = apply_text(&a, &settings[i], settings[i].def);
  if (rc) goto fail;

  /* the file */
  char source[300];
  const char *yaml = NULL;
  size_t ylen = 0;
  if (src->file) {
    size_t len = 0;
    if (md_read_file(src->file, &text, &len) != 0) {
      rc = md_error(err, errlen, MD_EIO, "config: cannot read %s", src->file);
      goto fail;
    }
    yaml = text;
    ylen = len;
    snprintf(source, sizeof source, "file %s", src->file);
    if (!(c->file_path = strdup(src->file))) goto oom;
  } else if (src->yaml) {
    yaml = src->yaml;
    ylen = src->yaml_len;
    snprintf(source, sizeof source, "YAML text");
  }
  if (yaml) {
    char yerr[256];
    rc = config_yaml_to_json(yaml, ylen, &tree, yerr, sizeof yerr);
    if (rc) {
      md_error(err, errlen, rc, "config: %s: %s", source, yerr);
      goto fail;
    }
    if (json_is_null(tree)) {
      json_decref(tree);
      tree = json_object();
      if (!tree) goto oom;
    } else if (!json_is_object(tree)) {
      rc = md_error(err, errlen, MD_EINVAL, "config: %s: the top level must be a mapping", source);
      goto fail;
    }
    a.source = source;
    if ((rc = walk_file(&a, tree, "")) != 0) goto fail;
    c->root = tree;
    tree = NULL;
  } else {
    if (!(c->root = json_object())) goto oom;
  }

  /* the environment: aliases first, canonical names last so they win */
  if (src->envp) {
    for (int pass = 0; pass < 2; pass++) {
      for (char *const *e = src->envp; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t nlen = (size_t)(eq - *e);
        const char *val = eq + 1;
        const setting_t *s = NULL;
        char ename[128];
        if (pass == 0) {
          for (size_t i = 0; i < NALIASES; i++)
            if (strlen(env_aliases[i].env) == nlen && strncmp(env_aliases[i].env, *e, nlen) == 0)
              s = find_setting(env_aliases[i].path);
        } else {
          if (nlen < 9 || strncmp(*e, "METRICSD_", 9) != 0) continue;
          bool known = false;
          for (size_t i = 0; i < NSETTINGS && !s; i++) {
            config_env_name(settings[i].path, ename, sizeof ename);
            if (strlen(ename) == nlen && strncmp(ename, *e, nlen) == 0) s = &settings[i];
          }
          for (size_t i = 0; i < NALIASES; i++)
            known |= strlen(env_aliases[i].env) == nlen && strncmp(env_aliases[i].env, *e, nlen) == 0;
          for (int i = 0; env_ignored[i]; i++)
            known |= strlen(env_ignored[i]) == nlen && strncmp(env_ignored[i], *e, nlen) == 0;
          if (!s && !known) log_warn("ignoring unknown environment variable %.*s", (int)nlen, *e);
        }
        if (!s) continue;
        char esrc[160];
        snprintf(esrc, sizeof esrc, "environment variable %.*s", (int)(nlen < 100 ? nlen : 100), *e);
        a.source = esrc;
        if ((rc = apply_text(&a, s, val)) != 0) goto fail;
      }
    }
  }

  /* flags */
  for (size_t i = 0; i < src->n_overrides; i++) {
    const char *o = src->overrides[i];
    const char *eq = strchr(o, '=');
    char path[200];
    size_t plen = eq ? (size_t)(eq - o) : strlen(o);
    snprintf(path, sizeof path, "%.*s", (int)(plen < sizeof path - 1 ? plen : sizeof path - 1), o);
    const setting_t *s = find_setting(path);
    a.source = "flag";
    if (!eq) {
      rc = md_error(err, errlen, MD_EINVAL, "config: flag: '%s' is not KEY=VALUE", o);
      goto fail;
    }
    if (!s) {
      rc = md_error(err, errlen, MD_EINVAL, "config: flag: unknown key %s", path);
      goto fail;
    }
    if ((rc = apply_text(&a, s, eq + 1)) != 0) goto fail;
  }

  if ((rc = validate(c, err, errlen)) != 0) goto fail;
  free(text);
  *out = c;
  return 0;
oom:
  rc = md_error(err, errlen, MD_ENOMEM, "config: out of memory");
fail:
  if (rc == MD_ENOMEM) md_error(err, errlen, MD_ENOMEM, "config: out of memory");
  free(text);
  json_decref(tree);
  config_free(c);
  return rc;
}
