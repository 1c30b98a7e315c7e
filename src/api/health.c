/*
 * Built-in endpoints: GET /health (seed 004 shape), GET /ready, the Prometheus-style
 * /-/healthy and /-/ready, GET /metrics/stats (seed 004 shape, from live counters),
 * POST|PUT /-/reload, GET /-/routes (the route table, which docs/api.md must match), and
 * GET /metrics with the self-metrics registry (a feature module may replace /metrics with a
 * richer handler by registering the same route).
 *
 * Threading: handlers run on HTTP worker threads and only read shared state through the
 * api accessors and tsdb_get_stats.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

#pragma weak api_start_collect
#pragma weak api_start_rules

static void put_str(sb_t *o, const char *s) { sb_json_str(o, s, strlen(s)); }

/* status of one dependency: "ok", "degraded", "down", "disabled" */
static int severity(const char *st) {
  if (strcmp(st, "down") == 0) return 2;
  if (strcmp(st, "degraded") == 0) return 1;
  return 0;
}

static void h_health(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  tsdb_stats_t st;
  memset(&st, 0, sizeof st);
  if (api->db) tsdb_get_stats(api->db, &st);
  int worst = 0;
  sb_t *o = http_resp_body(resp);
  sb_puts(o, "{\"service\":\"metricsd\",\"status\":");
  sb_t deps = {0};
  const char *storage = !api->db ? "down" : st.last_write_error ? "down" : "ok";
  /* the WAL is the write path: a failed append means the WAL could not be written */
  const char *wal = storage;
  sb_puts(&deps, "\"storage\":");
  put_str(&deps, storage);
  sb_puts(&deps, ",\"wal\":");
  put_str(&deps, wal);
  /* seed 004's two dependencies: its collector is our ingestion path (it stands or falls
   * with the WAL), its aggregator our window aggregates, computed from storage reads. */
  sb_puts(&deps, ",\"collector\":");
  put_str(&deps, wal);
  sb_puts(&deps, ",\"aggregator\":");
  put_str(&deps, api->db ? "ok" : "down");
  worst = severity(storage);
  pthread_mutex_lock(&api->mu);
  bool have_collectors = false, have_notifiers = false;
  for (size_t i = 0; i < api->nhealth; i++) {
    const api_health_t *h = &api->health[i];
    have_collectors |= strcmp(h->name, "collectors") == 0;
    have_notifiers |= strcmp(h->name, "notifiers") == 0;
    sb_putc(&deps, ',');
    put_str(&deps, h->name);
    sb_putc(&deps, ':');
    put_str(&deps, h->status);
    if (severity(h->status) > worst) worst = severity(h->status);
  }
  pthread_mutex_unlock(&api->mu);
  if (!have_collectors) sb_printf(&deps, ",\"collectors\":\"%s\"", api_start_collect ? "ok" : "disabled");
  if (!have_notifiers) sb_printf(&deps, ",\"notifiers\":\"%s\"", api_start_rules ? "ok" : "disabled");
  const char *overall = worst == 2 ? "down" : worst == 1 ? "degraded" : "ok";
  if (atomic_load(&api->stopping)) overall = "stopping";
  put_str(o, overall);
  sb_printf(o, ",\"uptime_seconds\":%lld,\"dependencies\":{", (long long)((md_now_ms() - api->start_ms) / 1000));
  sb_append(o, deps.buf ? deps.buf : "", deps.len);
  sb_puts(o, "},\"version\":");
  put_str(o, METRICSD_VERSION);
  sb_puts(o, ",\"commit\":");
  put_str(o, api_commit());
  if (st.last_write_error) {
    sb_puts(o, ",\"error\":");
    put_str(o, st.last_write_error == MD_ENOSPC ? "storage: disk full, writes are refused"
                                                : "storage: I/O error on the last write");
  }
  sb_putc(o, '}');
  sb_free(&deps);
  http_resp_status(resp, worst == 2 || atomic_load(&api->stopping) ? 503 : 200);
  if (worst == 2) http_resp_retry_after(resp, 5);
}

static void h_ready(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  bool ready = atomic_load(&api->ready) && !atomic_load(&api->stopping);
  sb_printf(http_resp_body(resp), "{\"status\":\"%s\"}", ready ? "ready" : "not ready");
  http_resp_status(resp, ready ? 200 : 503);
}

static void h_prom_healthy(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req, (void)ctx;
  http_resp_content_type(resp, "text/plain; charset=utf-8");
  sb_puts(http_resp_body(resp), "metricsd is Healthy.\n");
}

static void h_prom_ready(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  bool ready = atomic_load(&api->ready) && !atomic_load(&api->stopping);
  http_resp_content_type(resp, "text/plain; charset=utf-8");
  sb_puts(http_resp_body(resp), ready ? "metricsd is Ready.\n" : "Service Unavailable\n");
  http_resp_status(resp, ready ? 200 : 503);
}

static void h_stats(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  metrics_registry_t *m = api->metrics;
  tsdb_stats_t st;
  memset(&st, 0, sizeof st);
  if (api->db) tsdb_get_stats(api->db, &st);
  char now[32], last[32];
  md_format_rfc3339(md_now_ms(), now);
  double last_export = metrics_family_sum(m, "metrics_last_export_timestamp_seconds");
  sb_t *o = http_resp_body(resp);
  sb_printf(o,
            "{\"collector\":{\"total_points\":%llu,\"total_series\":%llu,\"dropped_points\":%llu,"
            "\"collected_total\":%.0f,\"errors_total\":%.0f},",
            (unsigned long long)st.samples_appended, (unsigned long long)st.series,
            (unsigned long long)st.samples_rejected, metrics_family_sum(m, "metrics_collected_total"),
            metrics_family_sum(m, "metrics_errors_total"));
  sb_printf(o, "\"aggregator\":{\"total_windows\":%.0f,\"aggregated_series\":%.0f,\"window_seconds\":%lld},",
            metrics_family_sum(m, "metrics_aggregation_windows_total"),
            metrics_family_sum(m, "metrics_aggregated_series"),
            (long long)api_config(api)->aggregation.window_seconds);
  sb_printf(o, "\"exporter\":{\"total_exports\":%.0f,\"last_export\":", metrics_family_sum(m, "metrics_exported_total"));
  if (last_export > 0) {
    md_format_rfc3339((int64_t)(last_export * 1000), last);
    sb_printf(o, "\"%s\"", last);
  } else {
    sb_puts(o, "null");
  }
  sb_printf(o,
            "},\"storage\":{\"head_series\":%llu,\"head_samples\":%llu,\"blocks\":%llu,\"block_bytes\":%llu,"
            "\"wal_bytes\":%llu},\"timestamp\":\"%s\"}",
            (unsigned long long)st.series, (unsigned long long)st.head_samples, (unsigned long long)st.blocks,
            (unsigned long long)st.block_bytes, (unsigned long long)st.wal_bytes, now);
}

static void h_reload(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  char err[512];
  if (api_reload(api, err, sizeof err) != 0) {
    http_resp_error(resp, 400, "reload failed, running configuration kept: %s", err);
    return;
  }
  sb_puts(http_resp_body(resp), "{\"success\":true,\"message\":\"configuration reloaded\"}");
}

static void h_metrics(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const char *fmt = http_req_query(req, "format");
  const char *accept = http_req_header(req, "Accept");
  bool om = (fmt && strcmp(fmt, "openmetrics") == 0) ||
            (!fmt && accept && strstr(accept, "application/openmetrics-text"));
  if (fmt && !om && strcmp(fmt, "prometheus") != 0) {
    http_resp_error(resp, 400, "unknown format '%s' (prometheus, openmetrics)", fmt);
    return;
  }
  sb_t *o = http_resp_body(resp);
  if (metrics_expose(api->metrics, o, om ? METRICS_FMT_OPENMETRICS : METRICS_FMT_PROMETHEUS) != 0) {
    http_resp_error(resp, 500, "out of memory");
    return;
  }
  if (om) sb_puts(o, "# EOF\n");
  http_resp_content_type(resp, om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                  : "text/plain; version=0.0.4; charset=utf-8");
}

typedef struct route_row {
  const char *method, *pattern;
  http_role_t role;
  unsigned flags;
} route_row_t;

typedef struct route_list {
  route_row_t *rows;
  size_t n, cap;
  bool oom;
} route_list_t;

static void collect_route(void *ctx, const char *method, const char *pattern, http_role_t role, unsigned flags) {
  route_list_t *l = ctx;
  if (l->oom) return;
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 128;
    route_row_t *n = realloc(l->rows, cap * sizeof *n);
    if (!n) {
      l->oom = true;
      return;
    }
    l->rows = n;
    l->cap = cap;
  }
  l->rows[l->n++] = (route_row_t){method, pattern, role, flags};
}

static int route_cmp(const void *a, const void *b) {
  const route_row_t *x = a, *y = b;
  int c = strcmp(x->pattern, y->pattern);
  return c ? c : strcmp(x->method, y->method);
}

static const char *role_name(http_role_t r) {
  switch (r) {
  case HTTP_ROLE_NONE: return "public";
  case HTTP_ROLE_READ: return "read";
  case HTTP_ROLE_WRITE: return "write";
  case HTTP_ROLE_ADMIN: return "admin";
  }
  return "?";
}

/* GET /-/routes: every route the router holds, sorted by path and method, with the role it
 * needs — the live form of docs/api.md's route table (a test compares the two). */
static void h_routes(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  api_t *api = ctx;
  route_list_t l = {0};
  http_router_foreach(api->router, collect_route, &l);
  if (l.oom) {
    free(l.rows);
    http_resp_error(resp, 500, "out of memory");
    return;
  }
  if (l.n) qsort(l.rows, l.n, sizeof *l.rows, route_cmp);
  sb_t *o = http_resp_body(resp);
  sb_puts(o, "{\"routes\":[");
  for (size_t i = 0; i < l.n; i++) {
    const route_row_t *r = &l.rows[i];
    sb_puts(o, i ? ",{\"method\":" : "{\"method\":");
    put_str(o, r->method);
    sb_puts(o, ",\"path\":");
    put_str(o, r->pattern);
    sb_printf(o, ",\"role\":\"%s\",\"insert_limited\":%s}", role_name(r->role),
              r->flags & HTTP_ROUTE_INSERT ? "true" : "false");
  }
  sb_printf(o, "],\"total\":%zu}", l.n);
  free(l.rows);
}

int api_register_builtin(api_t *api, http_router_t *r) {
  int rc = 0;
  rc |= http_route_add(r, "GET", "/health", HTTP_ROLE_NONE, 0, h_health, api);
  rc |= http_route_add(r, "GET", "/ready", HTTP_ROLE_NONE, 0, h_ready, api);
  rc |= http_route_add(r, "GET", "/-/healthy", HTTP_ROLE_NONE, 0, h_prom_healthy, api);
  rc |= http_route_add(r, "GET", "/-/ready", HTTP_ROLE_NONE, 0, h_prom_ready, api);
  rc |= http_route_add(r, "GET", "/metrics/stats", HTTP_ROLE_READ, 0, h_stats, api);
  rc |= http_route_add(r, "POST", "/-/reload", HTTP_ROLE_ADMIN, 0, h_reload, api);
  rc |= http_route_add(r, "PUT", "/-/reload", HTTP_ROLE_ADMIN, 0, h_reload, api);
  rc |= http_route_add(r, "GET", "/-/routes", HTTP_ROLE_READ, 0, h_routes, api);
  if (api->cfg->server.prometheus_enabled)
    rc |= http_route_add(r, "GET", "/metrics", HTTP_ROLE_READ, 0, h_metrics, api);
  return rc ? MD_ENOMEM : 0;
}
