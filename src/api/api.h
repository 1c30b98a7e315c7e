/*
 * api — the server context and the seams where feature modules plug in their endpoints
 * and background work.
 *
 * server.c owns the api_t: configuration, the opened tsdb, the self-metrics registry, the
 * HTTP server and router, and a slot per module for its private state. Start-up order:
 *   1. open the tsdb, create the registry and router;
 *   2. register the built-in routes (health, ready, stats, reload, self-metrics /metrics);
 *   3. call the route hooks in this order: ingest, prom, seed, collect, rules — a hook may
 *      override a built-in route by registering the same method+pattern (http_route_add);
 *   4. call the start hooks in the order ingest, collect, rules, prom, seed;
 *   5. start listening.
 * Shutdown: stop accepting, finish in-flight requests, stop hooks in reverse order, close
 * the tsdb. Reload (SIGHUP, POST /-/reload): load a new config_t, apply what can change at
 * run time (log level, auth keys, CORS is not one of them), then call every reload hook.
 *
 * The hooks are declared here and defined by the modules in their own files
 * (src/api/<module>.c). server.c references them as weak symbols: a module that is not
 * linked in is simply skipped. A start hook returns 0 or a negative MD_* code (start-up
 * then fails with a message); stop hooks must be safe to call after a failed start.
 *
 * Threading: accessors are safe from any thread. api_config() returns the current config;
 * configs replaced by a reload stay allocated until api_free(), so the pointer stays valid.
 */
#ifndef METRICSD_API_H
#define METRICSD_API_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/core.h"
#include "core/metrics.h"
#include "http/http.h"
#include "tsdb/tsdb.h"

typedef struct api api_t;

/* ---- feature-module hooks (defined by the modules, weak in server.c) -------------------- */

void api_register_ingest(api_t *api, http_router_t *r);  /* src/api/ingest.c */
void api_register_prom(api_t *api, http_router_t *r);    /* src/api/prom.c */
void api_register_seed(api_t *api, http_router_t *r);    /* src/api/seed.c */
void api_register_collect(api_t *api, http_router_t *r); /* src/api/collect.c */
void api_register_rules(api_t *api, http_router_t *r);   /* src/api/rules.c */

int api_start_ingest(api_t *api);
int api_start_collect(api_t *api);
int api_start_rules(api_t *api);
int api_start_prom(api_t *api);
int api_start_seed(api_t *api);

void api_stop_ingest(api_t *api);
void api_stop_collect(api_t *api);
void api_stop_rules(api_t *api);
void api_stop_prom(api_t *api);
void api_stop_seed(api_t *api);

/* Called after a successful reload; api_config() already returns the new config. */
void api_reload_ingest(api_t *api);
void api_reload_collect(api_t *api);
void api_reload_rules(api_t *api);
void api_reload_prom(api_t *api);
void api_reload_seed(api_t *api);

/* ---- accessors for modules ------------------------------------------------------------ */

tsdb_t *api_db(api_t *api);
const config_t *api_config(api_t *api);
metrics_registry_t *api_metrics(api_t *api);
/* Per-module private state by name ("ingest", "collect", ...). set returns 0 or MD_ENOMEM;
 * get returns NULL when unset. The module owns the pointer and frees it in its stop hook. */
void *api_slot(api_t *api, const char *name);
int api_set_slot(api_t *api, const char *name, void *state);
/* The tenant of a request: see http_req_tenant_with (key > X-Scope-OrgID > body > default). */
const char *api_tenant(http_req_t *req, const char *body_tenant);
int64_t api_start_time_ms(const api_t *api);      /* Unix ms when the server started */
const char *api_version(void);                    /* "0.1.0" */
const char *api_commit(void);                     /* short git commit */
const char *api_listen_address(const api_t *api); /* as configured, e.g. ":8012" */
uint16_t api_port(const api_t *api);              /* bound port (0 before listening) */
const char *api_data_dir(const api_t *api);
/* Whether shutdown has begun (background loops should exit). */
bool api_stopping(const api_t *api);

/* Reports a dependency's state for GET /health: name such as "collectors", "notifiers",
 * "scrape", "remote_write"; status "ok", "degraded", "down" or "disabled"; detail may be
 * NULL. "down" makes /health answer 503. Copies the strings. */
void api_set_health(api_t *api, const char *dependency, const char *status, const char *detail);

/* ---- lifecycle (main.c) --------------------------------------------------------------- */

/* Creates the context from a loaded config (ownership passes to api; freed by api_free)
 * and the source it came from (kept for reloads; the strings must outlive api). Opens the
 * tsdb in cfg->server.data_dir. */
int api_new(config_t *cfg, const config_source_t *src, api_t **out, char *err, size_t errlen);
/* Registers routes, runs start hooks, starts the HTTP server and the self-scrape loop. */
int api_start(api_t *api, char *err, size_t errlen);
/* Re-reads the configuration and applies it (see top comment). On error keeps the old
 * config and returns MD_EINVAL with err filled. */
int api_reload(api_t *api, char *err, size_t errlen);
/* Graceful stop: quiesce, finish in-flight, stop hooks in reverse, final self-scrape. */
void api_stop(api_t *api);
/* Closes the tsdb and frees everything. NULL is a no-op. */
void api_free(api_t *api);

#endif
