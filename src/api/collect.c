/*
 * api/collect — wires the collect and scrape modules into the server: starts the host and
 * GPU collectors and the scrape manager, sends everything they gather to tsdb_append for
 * the collectors' tenant, reports their state for /health and self-metrics, and serves
 *   GET  /metrics/sources            runtime scrape sources with their health (seed 003)
 *   POST /metrics/sources            add one (201, 400 invalid, 409 id taken)
 *   GET  /metrics/sources/{id}       one source (404)
 *   PUT  /metrics/sources/{id}       replace one (200, 400, 404)
 *   DELETE /metrics/sources/{id}     remove one (204, 404)
 *   GET  /api/v1/targets             Prometheus's targets API (state=active|dropped|any)
 * Changing sources needs the admin role: a source makes the server issue requests.
 *
 * Threading: the state lives in the "collect" slot; handlers and the self-metrics
 * collector look it up per call. Reload swaps the collectors under `mu`.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "collect/collect.h"
#include "params.h"
#include "scrape/scrape.h"

typedef struct collect_state collect_state_t;

typedef struct sink_ctx {
  collect_state_t *st;
  const char *name; /* "host", "gpu", "scrape" */
} sink_ctx_t;

struct collect_state {
  api_t *api;
  pthread_mutex_t mu;
  collect_t *collectors;
  collect_options_t copt;
  scrape_manager_t *scrape;
  char tenant[128];
  sink_ctx_t sink_collect, sink_scrape;
};

static collect_state_t *state(api_t *api) {
  return api_slot(api, "collect");
}

/* Called from collector and scrape threads. */
static int sink(void *ctx, const tsdb_batch_t *b) {
  sink_ctx_t *s = ctx;
  tsdb_append_result_t res;
  int rc = tsdb_append(api_db(s->st->api), s->st->tenant, b, &res);
  metrics_registry_t *r = api_metrics(s->st->api);
  if (rc == 0) {
    metrics_counter_add(metrics_counter(r, "metricsd_collected_samples_total",
                                        "Samples stored by the built-in collectors and scrapes.", "source",
                                        s->name, (const char *)NULL),
                        (double)res.samples_added);
    if (res.samples_rejected)
      metrics_counter_add(metrics_counter(r, "metricsd_collected_samples_rejected_total",
                                          "Samples from collectors and scrapes the storage rejected.",
                                          "source", s->name, (const char *)NULL),
                          (double)res.samples_rejected);
  } else {
    metrics_counter_inc(
        metrics_counter(r, "metrics_errors_total", "Total collection errors.", (const char *)NULL));
  }
  return rc;
}

static void fill_collect_options(const config_t *cfg, collect_options_t *o) {
  collect_options_default(o);
  o->host_enabled = cfg->collectors.host_enabled;
  if (cfg->collectors.host_interval_ms > 0) o->host.interval_ms = cfg->collectors.host_interval_ms;
  o->host.cpu = cfg->collectors.host_cpu;
  o->host.memory = cfg->collectors.host_memory;
  o->host.loadavg = cfg->collectors.host_loadavg;
  o->host.disk = cfg->collectors.host_disk;
  o->host.filesystem = cfg->collectors.host_filesystem;
  o->host.network = cfg->collectors.host_network;
  o->host.netstat = cfg->collectors.host_netstat;
  o->host.vmstat = cfg->collectors.host_vmstat;
  o->host.filefd = cfg->collectors.host_filefd;
  o->host.processes = cfg->collectors.host_processes;
  o->host.uname = cfg->collectors.host_uname;
  o->host.time = cfg->collectors.host_time;
  o->host.filesystem_timeout_ms = cfg->collectors.host_filesystem_timeout_ms;
  o->gpu.processes = cfg->collectors.gpu_processes;
  o->gpu_enabled = cfg->collectors.gpu_enabled;
  if (cfg->collectors.gpu_interval_ms > 0) o->gpu.interval_ms = cfg->collectors.gpu_interval_ms;
  if (cfg->collectors.nvml_library && *cfg->collectors.nvml_library)
    o->gpu.library = cfg->collectors.nvml_library;
}

static bool same_host_parts(const collect_host_options_t *a, const collect_host_options_t *b) {
  return a->cpu == b->cpu && a->memory == b->memory && a->loadavg == b->loadavg && a->disk == b->disk &&
         a->filesystem == b->filesystem && a->network == b->network && a->netstat == b->netstat &&
         a->vmstat == b->vmstat && a->filefd == b->filefd && a->processes == b->processes &&
         a->uname == b->uname && a->time == b->time && a->filesystem_timeout_ms == b->filesystem_timeout_ms;
}

static bool same_collect_options(const collect_options_t *a, const collect_options_t *b) {
  return a->host_enabled == b->host_enabled && a->host.interval_ms == b->host.interval_ms &&
         same_host_parts(&a->host, &b->host) && a->gpu.processes == b->gpu.processes &&
         a->gpu_enabled == b->gpu_enabled && a->gpu.interval_ms == b->gpu.interval_ms &&
         strcmp(a->gpu.library ? a->gpu.library : "", b->gpu.library ? b->gpu.library : "") == 0;
}

static void report_health(collect_state_t *st) {
  char gpu[256];
  collect_gpu_status(st->collectors, gpu, sizeof gpu);
  char detail[400];
  snprintf(detail, sizeof detail, "host: %s; gpu: %s", st->copt.host_enabled ? "on" : "disabled", gpu);
  api_set_health(st->api, "collectors", st->collectors ? "ok" : "disabled", detail);
  api_set_health(st->api, "gpu", collect_gpu_active(st->collectors) ? "ok" : "disabled", gpu);
}

/* One gauge child with at most one label (k may be NULL). */
static void gauge(metrics_registry_t *r, const char *name, const char *help, const char *k, const char *v,
                  double x) {
  const char *kv[2] = {k, v};
  metrics_gauge_set(metrics_gauge_v(r, name, help, kv, k ? 1 : 0), x);
}

/* Self-metrics: collector and scrape figures, read when /metrics is scraped. */
static void self_metrics(metrics_registry_t *r, void *ctx) {
  collect_state_t *st = state(ctx);
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  collect_stats_t cs;
  collect_stats(st->collectors, &cs);
  pthread_mutex_unlock(&st->mu);
  static const char ROUNDS[] = "Collection rounds since the collector started.";
  static const char ERRORS[] = "Collection errors since the collector started.";
  static const char LAST[] = "Duration of the last round.";
  gauge(r, "metricsd_collector_rounds", ROUNDS, "collector", "host", (double)cs.host_rounds);
  gauge(r, "metricsd_collector_rounds", ROUNDS, "collector", "gpu", (double)cs.gpu_rounds);
  gauge(r, "metricsd_collector_errors", ERRORS, "collector", "host", (double)cs.host_errors);
  gauge(r, "metricsd_collector_errors", ERRORS, "collector", "gpu", (double)cs.gpu_errors);
  gauge(r, "metricsd_collector_last_duration_seconds", LAST, "collector", "host", cs.host_last_duration_s);
  gauge(r, "metricsd_collector_last_duration_seconds", LAST, "collector", "gpu", cs.gpu_last_duration_s);
  gauge(r, "metricsd_gpu_devices", "GPUs seen by the GPU collector.", NULL, NULL, cs.gpus);
  if (st->scrape) {
    scrape_stats_t ss;
    scrape_manager_stats(st->scrape, &ss);
    gauge(r, "metricsd_scrape_targets", "Scrape targets.", "state", "active", (double)ss.targets_active);
    gauge(r, "metricsd_scrape_targets", "Scrape targets.", "state", "dropped", (double)ss.targets_dropped);
    gauge(r, "metricsd_scrape_targets", "Scrape targets.", "state", "up", (double)ss.targets_up);
    gauge(r, "metricsd_scrapes", "Scrapes since start.", NULL, NULL, (double)ss.scrapes);
    gauge(r, "metricsd_scrape_failures", "Failed scrapes since start.", NULL, NULL,
          (double)ss.scrape_failures);
  }
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int api_start_collect(api_t *api) {
  const config_t *cfg = api_config(api);
  collect_state_t *st = calloc(1, sizeof *st);
  if (!st) return MD_ENOMEM;
  st->api = api;
  pthread_mutex_init(&st->mu, NULL);
  snprintf(st->tenant, sizeof st->tenant, "%s",
           cfg->collectors.tenant && *cfg->collectors.tenant ? cfg->collectors.tenant : "default");
  st->sink_collect = (sink_ctx_t){st, "collectors"};
  st->sink_scrape = (sink_ctx_t){st, "scrape"};
  char err[512];
  fill_collect_options(cfg, &st->copt);
  int rc = 0;
  if (st->copt.host_enabled || st->copt.gpu_enabled) {
    rc = collect_start(&st->copt, sink, &st->sink_collect, &st->collectors, err, sizeof err);
    if (rc) {
      log_error("collectors: %s", err);
      goto fail;
    }
  }
  scrape_options_t so;
  scrape_options_default(&so);
  if (cfg->global.scrape_interval_ms > 0) so.default_interval_ms = cfg->global.scrape_interval_ms;
  if (cfg->global.scrape_timeout_ms > 0) so.default_timeout_ms = cfg->global.scrape_timeout_ms;
  so.data_dir = api_data_dir(api);
  so.tenant = st->tenant;
  rc = scrape_manager_new(&so, cfg->scrape_configs, sink, &st->sink_scrape, &st->scrape, err, sizeof err);
  if (rc == 0) rc = scrape_manager_start(st->scrape, err, sizeof err);
  if (rc) {
    log_error("scrape: %s", err);
    goto fail;
  }
  rc = api_set_slot(api, "collect", st);
  if (rc) goto fail;
  report_health(st);
  api_set_health(api, "scrape", "ok", NULL);
  metrics_add_collector(api_metrics(api), self_metrics, api);
  return 0;
fail:
  scrape_manager_free(st->scrape);
  collect_stop(st->collectors);
  pthread_mutex_destroy(&st->mu);
  free(st);
  return rc;
}

void api_stop_collect(api_t *api) {
  collect_state_t *st = state(api);
  if (!st) return;
  api_set_slot(api, "collect", NULL);
  scrape_manager_free(st->scrape);
  collect_stop(st->collectors);
  pthread_mutex_destroy(&st->mu);
  free(st);
}

void api_reload_collect(api_t *api) {
  collect_state_t *st = state(api);
  if (!st) return;
  const config_t *cfg = api_config(api);
  char err[512];
  if (st->scrape && scrape_manager_apply(st->scrape, cfg->scrape_configs, err, sizeof err) != 0)
    log_error("reload: scrape_configs kept as they were: %s", err);
  collect_options_t o;
  fill_collect_options(cfg, &o);
  if (same_collect_options(&o, &st->copt)) return;
  pthread_mutex_lock(&st->mu);
  collect_stop(st->collectors);
  st->collectors = NULL;
  st->copt = o;
  if ((o.host_enabled || o.gpu_enabled) &&
      collect_start(&st->copt, sink, &st->sink_collect, &st->collectors, err, sizeof err) != 0)
    log_error("reload: collectors not restarted: %s", err);
  pthread_mutex_unlock(&st->mu);
  report_health(st);
}

/* ---- handlers -------------------------------------------------------------------------- */

static scrape_manager_t *manager_or_503(http_req_t *req, http_resp_t *resp, void *ctx) {
  collect_state_t *st = state(ctx);
  if (!st || !st->scrape) {
    http_resp_error(resp, 503, "scraping is not running");
    return NULL;
  }
  return st->scrape;
}

static void h_sources_list(http_req_t *req, http_resp_t *resp, void *ctx) {
  scrape_manager_t *m = manager_or_503(req, resp, ctx);
  if (!m) return;
  sb_t *b = http_resp_body(resp);
  sb_puts(b, "{\"sources\":");
  scrape_sources_json(m, b);
  sb_putc(b, '}');
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}

static void h_source_get(http_req_t *req, http_resp_t *resp, void *ctx) {
  scrape_manager_t *m = manager_or_503(req, resp, ctx);
  if (!m) return;
  const char *id = http_req_param(req, "id");
  sb_t *b = http_resp_body(resp);
  if (scrape_source_json(m, id, b) != 0) {
    sb_reset(b);
    http_resp_error(resp, 404, "source %s not found", id);
    return;
  }
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}

static void put_source(http_req_t *req, http_resp_t *resp, void *ctx, const char *id) {
  scrape_manager_t *m = manager_or_503(req, resp, ctx);
  if (!m) return;
  size_t len;
  const char *body = http_req_body(req, &len);
  json_error_t je;
  json_t *doc = body && len ? json_loadb(body, len, 0, &je) : NULL;
  if (!doc) {
    http_resp_error(resp, 400, "invalid JSON body: %s (line %d)", body && len ? je.text : "empty body",
                    body && len ? je.line : 0);
    return;
  }
  char newid[80], err[512];
  int rc = id ? scrape_source_update(m, id, doc, err, sizeof err)
              : scrape_source_add(m, doc, newid, sizeof newid, err, sizeof err);
  json_decref(doc);
  if (rc == MD_ENOTFOUND) {
    http_resp_error(resp, 404, "source %s not found", id);
    return;
  }
  if (rc == MD_EINVAL) {
    http_resp_error(resp, 400, "%s", err);
    return;
  }
  if (rc == MD_ELIMIT) {
    http_resp_error(resp, 409, "%s", err);
    return;
  }
  if (rc) {
    http_resp_error(resp, 500, "%s", err);
    return;
  }
  sb_t *b = http_resp_body(resp);
  scrape_source_json(m, id ? id : newid, b);
  http_resp_status(resp, id ? 200 : 201);
  http_resp_content_type(resp, "application/json");
}

static void h_source_post(http_req_t *req, http_resp_t *resp, void *ctx) {
  put_source(req, resp, ctx, NULL);
}
static void h_source_put(http_req_t *req, http_resp_t *resp, void *ctx) {
  put_source(req, resp, ctx, http_req_param(req, "id"));
}

static void h_source_delete(http_req_t *req, http_resp_t *resp, void *ctx) {
  scrape_manager_t *m = manager_or_503(req, resp, ctx);
  if (!m) return;
  const char *id = http_req_param(req, "id");
  char err[512];
  int rc = scrape_source_delete(m, id, err, sizeof err);
  if (rc == MD_ENOTFOUND) {
    http_resp_error(resp, 404, "source %s not found", id);
    return;
  }
  if (rc) {
    http_resp_error(resp, 500, "%s", err);
    return;
  }
  http_resp_status(resp, 204);
}

static void h_targets(http_req_t *req, http_resp_t *resp, void *ctx) {
  collect_state_t *st = state(ctx);
  const char *s = http_req_query(req, "state");
  if (s && *s && strcmp(s, "any") && strcmp(s, "active") && strcmp(s, "dropped")) {
    http_resp_prom_error(resp, 400, "bad_data", "invalid state parameter \"%s\"", s);
    return;
  }
  sb_t d = {0};
  if (st && st->scrape)
    scrape_targets_json(st->scrape, s, &d);
  else
    sb_puts(&d, "{\"activeTargets\":[],\"droppedTargets\":[],\"droppedTargetCounts\":{}}");
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

void api_register_collect(api_t *api, http_router_t *r) {
  http_route_add(r, "GET", "/metrics/sources", HTTP_ROLE_READ, 0, h_sources_list, api);
  http_route_add(r, "POST", "/metrics/sources", HTTP_ROLE_ADMIN, 0, h_source_post, api);
  http_route_add(r, "GET", "/metrics/sources/{id}", HTTP_ROLE_READ, 0, h_source_get, api);
  http_route_add(r, "PUT", "/metrics/sources/{id}", HTTP_ROLE_ADMIN, 0, h_source_put, api);
  http_route_add(r, "DELETE", "/metrics/sources/{id}", HTTP_ROLE_ADMIN, 0, h_source_delete, api);
  http_route_add(r, "GET", "/api/v1/targets", HTTP_ROLE_READ, 0, h_targets, api);
}
