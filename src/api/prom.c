/*
 * The Prometheus HTTP API v1 over the PromQL engine and the storage engine: query,
 * query_range, series, labels, label values, metadata, status pages, format_query,
 * query_exemplars, federate, admin (delete series, snapshot, clean tombstones), and seed
 * 003's aliases (/metrics/query, /metrics/instant, /metrics/range, /metrics/labels).
 * Every read is scoped to the request's tenant. Handlers run on HTTP worker threads; the
 * only shared state is the concurrent-query counter.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "params.h"
#include "promql/promql.h"

#define MAX_MATCH 64
#define MAX_POINTS 11000

typedef struct prom_state {
  atomic_int running; /* queries in flight */
} prom_state_t;

static prom_state_t *state(api_t *api) { return api_slot(api, "prom"); }

static void bad_data(http_resp_t *resp, const char *msg) { http_resp_prom_error(resp, 400, "bad_data", "%s", msg); }

/* Maps an engine or storage status to the Prometheus API's status code and errorType. */
static void query_error(http_resp_t *resp, int rc, const char *err) {
  switch (rc) {
  case MD_EINVAL: http_resp_prom_error(resp, 400, "bad_data", "%s", err); break;
  case MD_ERR:
  case MD_ELIMIT: http_resp_prom_error(resp, 422, "execution", "%s", err); break;
  case MD_ECANCELED:
    http_resp_prom_error(resp, 503, promql_error_is_timeout(err) ? "timeout" : "canceled", "%s", err);
    break;
  default: http_resp_prom_error(resp, 500, "internal", "%s", *err ? err : "internal error"); break;
  }
}

/* The engine answers MD_EINVAL only for a query it cannot parse or type-check, which
 * Prometheus reports against the parameter. */
static void engine_error(http_resp_t *resp, int rc, const char *err) {
  if (rc == MD_EINVAL) http_resp_prom_error(resp, 400, "bad_data", "invalid parameter \"query\": %s", err);
  else query_error(resp, rc, err);
}

/* Options from the configuration and the request; 0, or MD_EINVAL with err for a `timeout`
 * Prometheus would refuse. */
static int query_options(api_t *api, http_req_t *req, promql_options_t *opt, char *err, size_t errlen) {
  const config_t *cfg = api_config(api);
  promql_options_default(opt);
  opt->timeout_ms = cfg->query.timeout_ms;
  opt->max_samples = cfg->query.max_samples;
  opt->max_series = cfg->query.max_series;
  if (cfg->query.lookback_delta_ms > 0) opt->lookback_ms = cfg->query.lookback_delta_ms;
  int64_t t;
  if (api_duration_param(req, "timeout", 0, &t, err, errlen)) return MD_EINVAL;
  if (t > 0 && (opt->timeout_ms == 0 || t < opt->timeout_ms)) opt->timeout_ms = t;
  return 0;
}

static bool enter_query(api_t *api, http_resp_t *resp) {
  prom_state_t *st = state(api);
  static _Atomic unsigned ncpu; /* sysconf reads /sys on every call */
  unsigned max = api_config(api)->query.max_concurrent;
  if (!max) {
    unsigned n = atomic_load_explicit(&ncpu, memory_order_relaxed);
    if (!n) {
      long v = sysconf(_SC_NPROCESSORS_ONLN);
      n = v > 0 ? (unsigned)v : 1;
      atomic_store_explicit(&ncpu, n, memory_order_relaxed);
    }
    max = 2 * n;
  }
  if (st && (unsigned)atomic_fetch_add(&st->running, 1) >= max) {
    atomic_fetch_sub(&st->running, 1);
    http_resp_retry_after(resp, 1);
    http_resp_prom_error(resp, 503, "unavailable", "too many concurrent queries (limit %u)", max);
    return false;
  }
  return true;
}

static void leave_query(api_t *api) {
  prom_state_t *st = state(api);
  if (st) atomic_fetch_sub(&st->running, 1);
}

static void write_result(http_resp_t *resp, promql_result_t *res) {
  sb_t data = {0};
  promql_result_json(res, &data);
  const char *const *w, *const *i;
  size_t nw = promql_result_warnings(res, &w), ni = promql_result_infos(res, &i);
  api_prom_success(resp, data.buf ? data.buf : "null", data.len, w, nw, i, ni);
  sb_free(&data);
}

static void h_query(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const char *q = http_req_query(req, "query");
  char err[512];
  int64_t t;
  if (!q || !*q) {
    bad_data(resp, "invalid parameter \"query\": 1:1: parse error: no expression found in input");
    return;
  }
  promql_options_t opt;
  if (api_time_param(req, "time", md_now_ms(), &t, err, sizeof err) || query_options(api, req, &opt, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (!enter_query(api, resp)) return;
  promql_result_t *res = NULL;
  err[0] = 0;
  int rc = promql_query_instant(api_db(api), api_tenant(req, NULL), q, strlen(q), t, &opt, &res, err, sizeof err);
  leave_query(api);
  if (rc) engine_error(resp, rc, err);
  else write_result(resp, res);
  promql_result_free(res);
}

static void h_query_range(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const char *q = http_req_query(req, "query");
  char err[512];
  int64_t start, end, step;
  if (api_time_param(req, "start", INT64_MIN, &start, err, sizeof err) ||
      api_time_param(req, "end", INT64_MIN, &end, err, sizeof err) ||
      api_duration_param(req, "step", 0, &step, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (start == INT64_MIN) {
    bad_data(resp, "invalid parameter \"start\": cannot parse \"\" to a valid timestamp");
    return;
  }
  if (end == INT64_MIN) {
    bad_data(resp, "invalid parameter \"end\": cannot parse \"\" to a valid timestamp");
    return;
  }
  if (end < start) {
    bad_data(resp, "invalid parameter \"end\": end timestamp must not be before start time");
    return;
  }
  const char *step_text = http_req_query(req, "step");
  if (!step_text || !*step_text) {
    bad_data(resp, "invalid parameter \"step\": cannot parse \"\" to a valid duration");
    return;
  }
  if (step <= 0) {
    bad_data(resp, "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer");
    return;
  }
  if ((end - start) / step > MAX_POINTS) {
    bad_data(resp, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
    return;
  }
  if (!q || !*q) {
    bad_data(resp, "invalid parameter \"query\": 1:1: parse error: no expression found in input");
    return;
  }
  promql_options_t opt;
  if (query_options(api, req, &opt, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (!enter_query(api, resp)) return;
  promql_result_t *res = NULL;
  err[0] = 0;
  int rc = promql_query_range(api_db(api), api_tenant(req, NULL), q, strlen(q), start, end, step, &opt, &res, err,
                              sizeof err);
  leave_query(api);
  if (rc) engine_error(resp, rc, err);
  else write_result(resp, res);
  promql_result_free(res);
}

static void labels_json(sb_t *b, const tsdb_label_t *ls, size_t n) {
  sb_putc(b, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(b, ',');
    sb_json_str(b, ls[i].name, strlen(ls[i].name));
    sb_putc(b, ':');
    sb_json_str(b, ls[i].value, strlen(ls[i].value));
  }
  sb_putc(b, '}');
}

static int range_params(http_req_t *req, int64_t *start, int64_t *end, char *err, size_t errlen) {
  if (api_time_param(req, "start", API_MIN_TIME_MS, start, err, errlen) ||
      api_time_param(req, "end", API_MAX_TIME_MS, end, err, errlen))
    return MD_EINVAL;
  if (*end < *start) return md_error(err, errlen, MD_EINVAL, "invalid parameter \"end\": end timestamp must not be before start time");
  return 0;
}

/* `limit` as Prometheus reads it: absent or 0 = no limit; anything but a non-negative integer
 * is refused (MD_EINVAL with err). */
static int limit_param(http_req_t *req, size_t *out, char *err, size_t errlen) {
  const char *l = http_req_query(req, "limit");
  *out = 0;
  if (!l || !*l) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(l, &end, 10);
  if (*end || errno || end == l)
    return md_error(err, errlen, MD_EINVAL, "invalid parameter \"limit\": cannot parse \"%s\" to a valid limit", l);
  if (v < 0) return md_error(err, errlen, MD_EINVAL, "invalid parameter \"limit\": limit must be non-negative");
  *out = (size_t)v;
  return 0;
}

/* A set of 64-bit label-set hashes (open addressing; 0 stands for the empty slot, so a
 * hash of 0 is stored as 1: a collision costs at worst one series shown once too few). */
typedef struct hash_set {
  uint64_t *slot;
  size_t cap, n;
} hash_set_t;

/* Adds h; returns 1 if it was new, 0 if present, -1 when out of memory. */
static int hash_set_add(hash_set_t *hs, uint64_t h) {
  if (!h) h = 1;
  if (2 * (hs->n + 1) > hs->cap) {
    size_t nc = hs->cap ? hs->cap * 2 : 1024;
    uint64_t *ns = calloc(nc, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < hs->cap; i++) {
      if (!hs->slot[i]) continue;
      size_t j = hs->slot[i] & (nc - 1);
      while (ns[j]) j = (j + 1) & (nc - 1);
      ns[j] = hs->slot[i];
    }
    free(hs->slot);
    hs->slot = ns, hs->cap = nc;
  }
  size_t j = h & (hs->cap - 1);
  while (hs->slot[j]) {
    if (hs->slot[j] == h) return 0;
    j = (j + 1) & (hs->cap - 1);
  }
  hs->slot[j] = h;
  hs->n++;
  return 1;
}

static void h_series(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  char err[512];
  api_selector_t sel[MAX_MATCH];
  int nsel = api_parse_match_params(req, sel, MAX_MATCH, err, sizeof err);
  int64_t start, end;
  size_t limit;
  if (nsel < 0 || range_params(req, &start, &end, err, sizeof err) || limit_param(req, &limit, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (nsel == 0) {
    bad_data(resp, "no match[] parameter provided");
    return;
  }
  sb_t data = {0};
  sb_putc(&data, '[');
  size_t count = 0;
  bool truncated = false;
  /* Series from several selectors may repeat: remember what was written by label hash. */
  hash_set_t seen = {0};
  for (int s = 0; s < nsel && !truncated; s++) {
    tsdb_query_t *q;
    int rc = tsdb_select(api_db(api), api_tenant(req, NULL), sel[s].m, sel[s].n, start, end, NULL, &q, err, sizeof err);
    if (rc) {
      sb_free(&data);
      free(seen.slot);
      query_error(resp, rc, err);
      return;
    }
    while (tsdb_query_next(q) == 1) {
      size_t nl;
      const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
      if (nsel > 1) {
        uint64_t h = 0;
        for (size_t i = 0; i < nl; i++) {
          h = md_hash64(ls[i].name, strlen(ls[i].name), h);
          h = md_hash64(ls[i].value, strlen(ls[i].value), h + 1);
        }
        int added = hash_set_add(&seen, h);
        if (added < 0) {
          tsdb_query_free(q);
          sb_free(&data);
          free(seen.slot);
          http_resp_prom_error(resp, 500, "internal", "out of memory");
          return;
        }
        if (!added) continue;
      }
      if (limit && count == limit) {
        truncated = true;
        break;
      }
      if (count++) sb_putc(&data, ',');
      labels_json(&data, ls, nl);
    }
    tsdb_query_free(q);
  }
  free(seen.slot);
  sb_putc(&data, ']');
  const char *warn[] = {"results truncated due to limit"};
  api_prom_success(resp, data.buf, data.len, warn, truncated ? 1 : 0, NULL, 0);
  sb_free(&data);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Writes a sorted, de-duplicated JSON array of the strings gathered from one or more lists.
 * Returns MD_ENOMEM (b untouched) when the merge buffer cannot be allocated. */
static int strings_json(sb_t *b, tsdb_strings_t *lists, size_t nlists, size_t limit, bool *truncated) {
  size_t total = 0;
  for (size_t i = 0; i < nlists; i++) total += lists[i].n;
  char **all = malloc((total + 1) * sizeof *all);
  if (!all) return MD_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < nlists; i++)
    for (size_t j = 0; j < lists[i].n; j++) all[k++] = lists[i].items[j];
  if (nlists > 1) qsort(all, k, sizeof *all, cmp_str);
  sb_putc(b, '[');
  size_t written = 0;
  for (size_t i = 0; i < k; i++) {
    if (i && !strcmp(all[i], all[i - 1])) continue;
    if (limit && written == limit) {
      *truncated = true;
      break;
    }
    if (written++) sb_putc(b, ',');
    sb_json_str(b, all[i], strlen(all[i]));
  }
  sb_putc(b, ']');
  free(all);
  return 0;
}

static void labels_or_values(http_req_t *req, http_resp_t *resp, api_t *api, const char *name) {
  char err[512];
  api_selector_t sel[MAX_MATCH];
  int nsel = api_parse_match_params(req, sel, MAX_MATCH, err, sizeof err);
  int64_t start, end;
  size_t limit;
  if (nsel < 0 || range_params(req, &start, &end, err, sizeof err) || limit_param(req, &limit, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  size_t nl = nsel ? (size_t)nsel : 1;
  tsdb_strings_t lists[MAX_MATCH];
  memset(lists, 0, sizeof lists);
  const char *tenant = api_tenant(req, NULL);
  int rc = 0;
  for (size_t i = 0; i < nl && !rc; i++) {
    const tsdb_matcher_t *m = nsel ? sel[i].m : NULL;
    size_t nm = nsel ? sel[i].n : 0;
    rc = name ? tsdb_label_values(api_db(api), tenant, name, m, nm, start, end, &lists[i], err, sizeof err)
              : tsdb_label_names(api_db(api), tenant, m, nm, start, end, &lists[i], err, sizeof err);
  }
  if (rc) {
    for (size_t i = 0; i < nl; i++) tsdb_strings_free(&lists[i]);
    query_error(resp, rc, err);
    return;
  }
  sb_t data = {0};
  bool truncated = false;
  rc = strings_json(&data, lists, nl, limit, &truncated);
  for (size_t i = 0; i < nl; i++) tsdb_strings_free(&lists[i]);
  if (rc) {
    sb_free(&data);
    http_resp_prom_error(resp, 500, "internal", "out of memory");
    return;
  }
  const char *warn[] = {"results truncated due to limit"};
  api_prom_success(resp, data.buf, data.len, warn, truncated ? 1 : 0, NULL, 0);
  sb_free(&data);
}

static void h_labels(http_req_t *req, http_resp_t *resp, void *ctx) { labels_or_values(req, resp, ctx, NULL); }

static bool valid_label_name(const char *s) {
  if (!*s) return false;
  for (const char *p = s; *p; p++) {
    bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (p != s && *p >= '0' && *p <= '9');
    if (!ok) return false;
  }
  return true;
}

static void h_label_values(http_req_t *req, http_resp_t *resp, void *ctx) {
  const char *name = http_req_param(req, "name");
  if (!name || !valid_label_name(name)) {
    http_resp_prom_error(resp, 400, "bad_data", "invalid label name: \"%s\"", name ? name : "");
    return;
  }
  labels_or_values(req, resp, ctx, name);
}

static void h_metadata(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  (void)ctx;
  /* metricsd keeps no per-metric HELP/TYPE in storage; an empty map is the honest answer. */
  api_prom_success(resp, "{}", 2, NULL, 0, NULL, 0);
}

static void h_exemplars(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  (void)ctx;
  api_prom_success(resp, "[]", 2, NULL, 0, NULL, 0);
}

static void h_format_query(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)ctx;
  const char *q = http_req_query(req, "query");
  char err[512];
  promql_expr_t *e;
  if (!q || promql_parse(q, strlen(q), &e, NULL, err, sizeof err)) {
    if (q) http_resp_prom_error(resp, 400, "bad_data", "invalid parameter \"query\": %s", err);
    else bad_data(resp, "invalid parameter \"query\": 1:1: parse error: no expression found in input");
    return;
  }
  sb_t f = {0}, data = {0};
  promql_format(e, &f);
  sb_json_str(&data, f.buf ? f.buf : "", f.len);
  api_prom_success(resp, data.buf, data.len, NULL, 0, NULL, 0);
  sb_free(&f);
  sb_free(&data);
  promql_expr_free(e);
}

static void h_buildinfo(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  (void)ctx;
  sb_t d = {0};
  sb_printf(&d,
            "{\"version\":\"%s\",\"revision\":\"%s\",\"branch\":\"main\",\"buildUser\":\"metricsd\","
            "\"buildDate\":\"\",\"goVersion\":\"C17\",\"application\":\"metricsd\"}",
            api_version(), api_commit());
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void h_runtimeinfo(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  tsdb_stats_t st;
  tsdb_get_stats(api_db(api), &st);
  char start[32], cwd[1024];
  md_format_rfc3339(api_start_time_ms(api), start);
  if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "/");
  const config_t *cfg = api_config(api);
  sb_t d = {0};
  sb_printf(&d, "{\"startTime\":\"%s\",\"CWD\":", start);
  sb_json_str(&d, cwd, strlen(cwd));
  sb_printf(&d,
            ",\"reloadConfigSuccess\":true,\"lastConfigTime\":\"%s\",\"corruptionCount\":%llu,"
            "\"goroutineCount\":0,\"GOMAXPROCS\":%ld,\"GOGC\":\"\",\"GODEBUG\":\"\",\"storageRetention\":\"%lldd\"}",
            start, (unsigned long long)st.wal_corruptions, sysconf(_SC_NPROCESSORS_ONLN),
            (long long)(cfg->storage.retention_ms / 86400000));
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void h_flags(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  sb_t d = {0};
  sb_puts(&d, "{\"listen\":");
  sb_json_str(&d, cfg->server.listen, strlen(cfg->server.listen));
  sb_puts(&d, ",\"data-dir\":");
  sb_json_str(&d, cfg->server.data_dir, strlen(cfg->server.data_dir));
  sb_puts(&d, ",\"config\":");
  const char *f = cfg->file_path ? cfg->file_path : "";
  sb_json_str(&d, f, strlen(f));
  sb_putc(&d, '}');
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

/* Replaces every secret in a configuration tree by "<secret>", as Prometheus's config view
 * does: auth tokens, passwords, bearer credentials, webhook secrets (at any depth, so
 * scrape_configs and alerting sections are covered too). */
static void redact_secrets(json_t *v) {
  static const char *const secret_keys[] = {"auth_keys", "token", "password", "credentials",
                                            "bearer_token", "secret", "client_secret"};
  if (json_is_array(v)) {
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) redact_secrets(e);
    return;
  }
  if (!json_is_object(v)) return;
  const char *k;
  json_t *e;
  void *tmp;
  json_object_foreach_safe(v, tmp, k, e) {
    bool secret = false;
    for (size_t i = 0; i < sizeof secret_keys / sizeof secret_keys[0]; i++)
      if (!strcmp(k, secret_keys[i])) secret = true;
    if (secret) json_object_set_new(v, k, json_string("<secret>"));
    else redact_secrets(e);
  }
}

static void h_config(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  /* The effective configuration, as JSON text (which is also valid YAML), secrets hidden. */
  json_t *copy = json_deep_copy(cfg->root ? cfg->root : json_object());
  redact_secrets(copy);
  char *text = json_dumps(copy, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(copy);
  sb_t d = {0};
  sb_puts(&d, "{\"yaml\":");
  sb_json_str(&d, text ? text : "", text ? strlen(text) : 0);
  sb_putc(&d, '}');
  free(text);
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void counts_json(sb_t *d, const char *key, const tsdb_count_t *c, size_t n) {
  sb_printf(d, ",\"%s\":[", key);
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(d, ',');
    sb_puts(d, "{\"name\":");
    sb_json_str(d, c[i].name, strlen(c[i].name));
    sb_printf(d, ",\"value\":%llu}", (unsigned long long)c[i].count);
  }
  sb_putc(d, ']');
}

static void h_status_tsdb(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t limit;
  char err[128];
  if (limit_param(req, &limit, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (!limit) limit = 10;
  tsdb_cardinality_t c;
  memset(&c, 0, sizeof c);
  int rc = tsdb_cardinality(api_db(api), api_tenant(req, NULL), limit, &c);
  if (rc) {
    query_error(resp, rc, "cannot compute cardinality");
    return;
  }
  tsdb_stats_t st;
  tsdb_get_stats(api_db(api), &st);
  sb_t d = {0};
  sb_printf(&d, "{\"headStats\":{\"numSeries\":%llu,\"numLabelPairs\":%llu,\"chunkCount\":%llu,\"minTime\":%lld,\"maxTime\":%lld}",
            (unsigned long long)c.num_series, (unsigned long long)c.num_label_pairs, (unsigned long long)st.head_chunks,
            (long long)(st.min_time == INT64_MAX ? 0 : st.min_time), (long long)(st.max_time == INT64_MIN ? 0 : st.max_time));
  counts_json(&d, "seriesCountByMetricName", c.series_by_metric, c.n_series_by_metric);
  counts_json(&d, "labelValueCountByLabelName", c.values_by_label, c.n_values_by_label);
  counts_json(&d, "memoryInBytesByLabelName", c.memory_by_label, c.n_memory_by_label);
  counts_json(&d, "seriesCountByLabelValuePair", c.series_by_pair, c.n_series_by_pair);
  sb_putc(&d, '}');
  tsdb_cardinality_free(&c);
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

/* /federate: the newest sample (within the lookback) of every matching series, in the text
 * exposition format with timestamps, as Prometheus federation serves it. */
static void h_federate(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  char err[512];
  api_selector_t sel[MAX_MATCH];
  int nsel = api_parse_match_params(req, sel, MAX_MATCH, err, sizeof err);
  if (nsel < 0) {
    http_resp_error(resp, 400, "%s", err);
    return;
  }
  int64_t now = md_now_ms();
  int64_t lookback = api_config(api)->query.lookback_delta_ms;
  if (lookback <= 0) lookback = 300000;
  sb_t *b = http_resp_body(resp);
  char last_name[256] = "";
  for (int s = 0; s < nsel; s++) {
    tsdb_query_t *q;
    if (tsdb_select(api_db(api), api_tenant(req, NULL), sel[s].m, sel[s].n, now - lookback + 1, now, NULL, &q, err,
                    sizeof err))
      continue;
    while (tsdb_query_next(q) == 1) {
      const int64_t *ts;
      const double *v;
      size_t n = tsdb_query_samples(q, &ts, &v);
      if (!n || tsdb_is_stale_nan(v[n - 1])) continue;
      size_t nl;
      const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
      const char *name = "";
      for (size_t i = 0; i < nl; i++)
        if (!strcmp(ls[i].name, "__name__")) name = ls[i].value;
      if (strcmp(name, last_name)) {
        sb_printf(b, "# TYPE %s untyped\n", name);
        snprintf(last_name, sizeof last_name, "%s", name);
      }
      sb_puts(b, name);
      bool first = true;
      for (size_t i = 0; i < nl; i++) {
        if (!strcmp(ls[i].name, "__name__")) continue;
        sb_puts(b, first ? "{" : ",");
        first = false;
        sb_printf(b, "%s=\"", ls[i].name);
        for (const char *p = ls[i].value; *p; p++) {
          if (*p == '\\') sb_puts(b, "\\\\");
          else if (*p == '"') sb_puts(b, "\\\"");
          else if (*p == '\n') sb_puts(b, "\\n");
          else sb_putc(b, *p);
        }
        sb_putc(b, '"');
      }
      if (!first) sb_putc(b, '}');
      sb_putc(b, ' ');
      sb_double(b, v[n - 1]);
      sb_printf(b, " %lld\n", (long long)ts[n - 1]);
    }
    tsdb_query_free(q);
  }
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "text/plain; version=0.0.4; charset=utf-8");
}

static void h_delete_series(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  char err[512];
  api_selector_t sel[MAX_MATCH];
  int nsel = api_parse_match_params(req, sel, MAX_MATCH, err, sizeof err);
  int64_t start, end;
  if (nsel < 0 || range_params(req, &start, &end, err, sizeof err)) {
    bad_data(resp, err);
    return;
  }
  if (nsel == 0) {
    bad_data(resp, "no match[] parameter provided");
    return;
  }
  for (int s = 0; s < nsel; s++) {
    int rc = tsdb_delete(api_db(api), api_tenant(req, NULL), sel[s].m, sel[s].n, start, end, err, sizeof err);
    if (rc) {
      query_error(resp, rc == MD_EINVAL ? rc : MD_EIO, err);
      return;
    }
  }
  http_resp_status(resp, 204);
}

static void h_snapshot(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  char name[64], dir[4096], err[512];
  snprintf(name, sizeof name, "%lld-%08x", (long long)md_now_ms(), (unsigned)(md_mono_ns() & 0xffffffff));
  snprintf(dir, sizeof dir, "%s/snapshots/%s", api_data_dir(api), name);
  (void)req;
  int rc = tsdb_snapshot(api_db(api), dir, err, sizeof err);
  if (rc) {
    http_resp_prom_error(resp, 500, "internal", "create snapshot: %s", err);
    return;
  }
  sb_t d = {0};
  sb_puts(&d, "{\"name\":");
  sb_json_str(&d, name, strlen(name));
  sb_putc(&d, '}');
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void h_clean_tombstones(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  int rc = tsdb_compact(api_db(api));
  if (rc) {
    http_resp_prom_error(resp, 500, "internal", "compaction failed (%d)", rc);
    return;
  }
  http_resp_status(resp, 204);
}

/* VictoriaMetrics-style maintenance endpoints (the benchmark harness and operators use them):
 * persist the head as blocks now / merge blocks now. */
static void h_force_flush(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  int rc = tsdb_flush(api_db(ctx));
  if (rc) http_resp_error(resp, 500, "flush failed (%d)", rc);
  else http_resp_status(resp, 200);
}

static void h_force_merge(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  int rc = tsdb_compact(api_db(ctx));
  if (rc) http_resp_error(resp, 500, "compaction failed (%d)", rc);
  else http_resp_status(resp, 200);
}

void api_register_prom(api_t *api, http_router_t *r) {
  http_route_add(r, "GET", "/internal/force_flush", HTTP_ROLE_ADMIN, 0, h_force_flush, api);
  http_route_add(r, "GET", "/internal/force_merge", HTTP_ROLE_ADMIN, 0, h_force_merge, api);
  static const char *const methods[] = {"GET", "POST"};
  for (int i = 0; i < 2; i++) {
    const char *m = methods[i];
    http_route_add(r, m, "/api/v1/query", HTTP_ROLE_READ, 0, h_query, api);
    http_route_add(r, m, "/api/v1/query_range", HTTP_ROLE_READ, 0, h_query_range, api);
    http_route_add(r, m, "/api/v1/series", HTTP_ROLE_READ, 0, h_series, api);
    http_route_add(r, m, "/api/v1/labels", HTTP_ROLE_READ, 0, h_labels, api);
    http_route_add(r, m, "/api/v1/query_exemplars", HTTP_ROLE_READ, 0, h_exemplars, api);
    http_route_add(r, m, "/api/v1/format_query", HTTP_ROLE_READ, 0, h_format_query, api);
    /* Seed 003's aliases. */
    http_route_add(r, m, "/metrics/query", HTTP_ROLE_READ, 0, h_query, api);
    http_route_add(r, m, "/metrics/instant", HTTP_ROLE_READ, 0, h_query, api);
    http_route_add(r, m, "/metrics/range", HTTP_ROLE_READ, 0, h_query_range, api);
    http_route_add(r, m, "/metrics/labels", HTTP_ROLE_READ, 0, h_labels, api);
  }
  http_route_add(r, "GET", "/api/v1/label/{name}/values", HTTP_ROLE_READ, 0, h_label_values, api);
  http_route_add(r, "GET", "/api/v1/metadata", HTTP_ROLE_READ, 0, h_metadata, api);
  http_route_add(r, "GET", "/api/v1/status/buildinfo", HTTP_ROLE_READ, 0, h_buildinfo, api);
  http_route_add(r, "GET", "/api/v1/status/runtimeinfo", HTTP_ROLE_READ, 0, h_runtimeinfo, api);
  http_route_add(r, "GET", "/api/v1/status/flags", HTTP_ROLE_READ, 0, h_flags, api);
  http_route_add(r, "GET", "/api/v1/status/config", HTTP_ROLE_ADMIN, 0, h_config, api);
  http_route_add(r, "GET", "/api/v1/status/tsdb", HTTP_ROLE_READ, 0, h_status_tsdb, api);
  http_route_add(r, "GET", "/federate", HTTP_ROLE_READ, 0, h_federate, api);
  http_route_add(r, "POST", "/api/v1/admin/tsdb/delete_series", HTTP_ROLE_ADMIN, 0, h_delete_series, api);
  http_route_add(r, "PUT", "/api/v1/admin/tsdb/delete_series", HTTP_ROLE_ADMIN, 0, h_delete_series, api);
  http_route_add(r, "POST", "/api/v1/admin/tsdb/snapshot", HTTP_ROLE_ADMIN, 0, h_snapshot, api);
  http_route_add(r, "POST", "/api/v1/admin/tsdb/clean_tombstones", HTTP_ROLE_ADMIN, 0, h_clean_tombstones, api);
}

int api_start_prom(api_t *api) {
  prom_state_t *st = calloc(1, sizeof *st);
  if (!st) return MD_ENOMEM;
  return api_set_slot(api, "prom", st);
}

void api_stop_prom(api_t *api) {
  prom_state_t *st = state(api);
  if (st) {
    free(st);
    api_set_slot(api, "prom", NULL);
  }
}
