/*
 * The server context (api_t): configuration, storage, self-metrics, HTTP server, module
 * slots and hooks, and the lifecycle described in api.h.
 *
 * Feature modules plug in through the hooks declared in api.h. They are referenced here as
 * weak symbols, so a module that is not linked in is skipped. (A linker does not pull an
 * archive member for a weak reference; src/api/module.cmake therefore links md_api as a
 * whole archive so that the hook files present in src/api/ are always linked in.)
 *
 * Threads: main (start, reload, stop), HTTP workers (handlers call the accessors), and the
 * self-scrape thread that appends the registry to the tsdb every server.self_interval.
 * `mu` protects cfg, retired configs, slots and the health table. Reload is serialised by
 * `reload_mu`.
 */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"

/* ---- weak hooks ---------------------------------------------------------------------- */

#pragma weak api_register_ingest
#pragma weak api_register_prom
#pragma weak api_register_seed
#pragma weak api_register_collect
#pragma weak api_register_rules
#pragma weak api_start_ingest
#pragma weak api_start_collect
#pragma weak api_start_rules
#pragma weak api_start_prom
#pragma weak api_start_seed
#pragma weak api_stop_ingest
#pragma weak api_stop_collect
#pragma weak api_stop_rules
#pragma weak api_stop_prom
#pragma weak api_stop_seed
#pragma weak api_reload_ingest
#pragma weak api_reload_collect
#pragma weak api_reload_rules
#pragma weak api_reload_prom
#pragma weak api_reload_seed

typedef struct hook {
  const char *name;
  void (*reg)(api_t *, http_router_t *);
  int (*start)(api_t *);
  void (*stop)(api_t *);
  void (*reload)(api_t *);
} hook_t;

/* Registration order: ingest, prom, seed, collect, rules. Start order (below) differs:
 * ingest, collect, rules, prom, seed — producers first, then their consumers. */
static void get_hooks(hook_t reg_order[5], hook_t start_order[5]) {
  hook_t ingest = {"ingest", api_register_ingest, api_start_ingest, api_stop_ingest, api_reload_ingest};
  hook_t prom = {"prom", api_register_prom, api_start_prom, api_stop_prom, api_reload_prom};
  hook_t seed = {"seed", api_register_seed, api_start_seed, api_stop_seed, api_reload_seed};
  hook_t collect = {"collect", api_register_collect, api_start_collect, api_stop_collect, api_reload_collect};
  hook_t rules = {"rules", api_register_rules, api_start_rules, api_stop_rules, api_reload_rules};
  reg_order[0] = ingest, reg_order[1] = prom, reg_order[2] = seed, reg_order[3] = collect, reg_order[4] = rules;
  start_order[0] = ingest, start_order[1] = collect, start_order[2] = rules, start_order[3] = prom,
  start_order[4] = seed;
}

/* ---- accessors ----------------------------------------------------------------------- */

tsdb_t *api_db(api_t *api) { return api->db; }

const config_t *api_config(api_t *api) {
  pthread_mutex_lock(&api->mu);
  const config_t *c = api->cfg;
  pthread_mutex_unlock(&api->mu);
  return c;
}

metrics_registry_t *api_metrics(api_t *api) { return api->metrics; }

void *api_slot(api_t *api, const char *name) {
  void *p = NULL;
  pthread_mutex_lock(&api->mu);
  for (size_t i = 0; i < api->nslots; i++)
    if (strcmp(api->slots[i].name, name) == 0) p = api->slots[i].ptr;
  pthread_mutex_unlock(&api->mu);
  return p;
}

int api_set_slot(api_t *api, const char *name, void *state) {
  int rc = 0;
  pthread_mutex_lock(&api->mu);
  for (size_t i = 0; i < api->nslots; i++) {
    if (strcmp(api->slots[i].name, name) == 0) {
      api->slots[i].ptr = state;
      goto out;
    }
  }
  api_slot_t *n = realloc(api->slots, (api->nslots + 1) * sizeof *n);
  char *nm = strdup(name);
  if (!n || !nm) {
    if (n) api->slots = n;
    free(nm);
    rc = MD_ENOMEM;
    goto out;
  }
  api->slots = n;
  api->slots[api->nslots++] = (api_slot_t){nm, state};
out:
  pthread_mutex_unlock(&api->mu);
  return rc;
}

const char *api_tenant(http_req_t *req, const char *body_tenant) { return http_req_tenant_with(req, body_tenant); }
int64_t api_start_time_ms(const api_t *api) { return api->start_ms; }
const char *api_version(void) { return METRICSD_VERSION; }
const char *api_listen_address(const api_t *api) { return api->listen; }
uint16_t api_port(const api_t *api) { return api->http ? http_server_port(api->http) : 0; }
const char *api_data_dir(const api_t *api) { return api->data_dir; }
bool api_stopping(const api_t *api) { return atomic_load(&((api_t *)api)->stopping); }

void api_set_health(api_t *api, const char *dependency, const char *status, const char *detail) {
  pthread_mutex_lock(&api->mu);
  api_health_t *h = NULL;
  for (size_t i = 0; i < api->nhealth; i++)
    if (strcmp(api->health[i].name, dependency) == 0) h = &api->health[i];
  if (!h) {
    api_health_t *n = realloc(api->health, (api->nhealth + 1) * sizeof *n);
    if (!n) goto out;
    api->health = n;
    h = &api->health[api->nhealth];
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", dependency);
    api->nhealth++;
  }
  snprintf(h->status, sizeof h->status, "%s", status ? status : "ok");
  snprintf(h->detail, sizeof h->detail, "%s", detail ? detail : "");
out:
  pthread_mutex_unlock(&api->mu);
}

/* ---- self-metrics -------------------------------------------------------------------- */

static void tsdb_collect(metrics_registry_t *r, void *ctx) {
  api_t *api = ctx;
  if (!api->db) return;
  tsdb_stats_t st;
  tsdb_get_stats(api->db, &st);
  metrics_gauge_set(metrics_gauge(r, "tsdb_head_series", "Active series in the head.", NULL), (double)st.series);
  metrics_gauge_set(metrics_gauge(r, "tsdb_head_samples", "Samples held in the head.", NULL), (double)st.head_samples);
  metrics_gauge_set(metrics_gauge(r, "tsdb_head_chunks", "Chunks held in the head.", NULL), (double)st.head_chunks);
  metrics_gauge_set(metrics_gauge(r, "tsdb_head_memory_bytes", "Approximate bytes held by the head.", NULL),
                    (double)st.head_memory_bytes);
  metrics_counter_raise_to(
      metrics_counter(r, "tsdb_samples_appended_total", "Samples appended since start.", NULL),
      (double)st.samples_appended);
  metrics_counter_raise_to(
      metrics_counter(r, "tsdb_samples_rejected_total", "Samples rejected since start.", NULL),
      (double)st.samples_rejected);
  metrics_counter_raise_to(
      metrics_counter(r, "tsdb_series_created_total", "Series created since start.", NULL),
      (double)st.series_created);
  metrics_gauge_set(metrics_gauge(r, "tsdb_wal_bytes", "Size of the WAL on disk.", NULL),
                    (double)st.wal_bytes);
  metrics_counter_raise_to(metrics_counter(r, "tsdb_wal_fsyncs_total", "WAL fsync calls.", NULL),
                           (double)st.wal_fsyncs);
  metrics_counter_raise_to(
      metrics_counter(r, "tsdb_wal_corruptions_total", "Damaged WAL records cut off at replay.", NULL),
      (double)st.wal_corruptions);
  metrics_gauge_set(metrics_gauge(r, "tsdb_blocks", "Blocks on disk.", NULL), (double)st.blocks);
  metrics_gauge_set(metrics_gauge(r, "tsdb_block_bytes", "Size of the blocks on disk.", NULL),
                    (double)st.block_bytes);
  metrics_gauge_set(metrics_gauge(r, "tsdb_block_samples", "Samples held in blocks.", NULL), (double)st.block_samples);
  metrics_counter_raise_to(metrics_counter(r, "tsdb_compactions_total", "Compactions run.", NULL),
                           (double)st.compactions);
  metrics_gauge_set(
      metrics_gauge(r, "tsdb_storage_write_error", "1 while the last append failed (disk full, I/O).", NULL),
      st.last_write_error ? 1 : 0);
  /* seed 004's names */
  metrics_gauge_set(metrics_gauge(r, "metrics_series_total", "Total metric series.", NULL), (double)st.series);
  metrics_counter_raise_to(metrics_counter(r, "metrics_points_total", "Total metric points.", NULL),
                           (double)st.samples_appended);
  metrics_gauge_set(metrics_gauge(r, "metricsd_uptime_seconds", "Seconds since the server started.", NULL),
                    (double)(md_now_ms() - api->start_ms) / 1000.0);
}

/* Creates seed 004's self-metrics families so they are always exposed; modules increment
 * them (metrics_collected_total by ingest, metrics_exported_total by the exporter...). */
static void register_seed_metrics(metrics_registry_t *r) {
  metrics_counter(r, "metrics_collected_total", "Total metrics collected.", NULL);
  metrics_histogram(r, "metrics_collection_duration_seconds", "Collection duration.", NULL, 0, NULL);
  metrics_gauge(r, "metrics_series_total", "Total metric series.", NULL);
  metrics_counter(r, "metrics_points_total", "Total metric points.", NULL);
  metrics_counter(r, "metrics_exported_total", "Total metrics exported.", NULL);
  metrics_counter(r, "metrics_errors_total", "Total collection errors.", NULL);
  metrics_gauge_set(metrics_gauge(r, "metricsd_build_info", "Build information (always 1).", "version",
                                  METRICSD_VERSION, "commit", api_commit(), NULL),
                    1);
}

typedef struct self_batch {
  tsdb_batch_t *b;
  int64_t ts;
  const char *instance;
  size_t n;
} self_batch_t;

static void self_sample(void *ctx, const char *name, const char *const *labels, size_t npairs, double value) {
  self_batch_t *s = ctx;
  tsdb_batch_series_begin(s->b);
  tsdb_batch_label(s->b, "__name__", 8, name, strlen(name));
  tsdb_batch_label(s->b, "job", 3, "metricsd", 8);
  tsdb_batch_label(s->b, "instance", 8, s->instance, strlen(s->instance));
  for (size_t i = 0; i < npairs; i++) {
    const char *ln = labels[2 * i], *lv = labels[2 * i + 1];
    /* target labels win, as with honor_labels: false */
    if (strcmp(ln, "job") == 0 || strcmp(ln, "instance") == 0) {
      char exported[64];
      int w = snprintf(exported, sizeof exported, "exported_%s", ln);
      tsdb_batch_label(s->b, exported, (size_t)w, lv, strlen(lv));
    } else {
      tsdb_batch_label(s->b, ln, strlen(ln), lv, strlen(lv));
    }
  }
  if (tsdb_batch_series_end(s->b) == 0 && tsdb_batch_sample(s->b, s->ts, value) == 0) s->n++;
}

static void self_scrape_once(api_t *api) {
  if (!api->db) return;
  int64_t t0 = md_mono_ns();
  const config_t *cfg = api_config(api);
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return;
  self_batch_t s = {b, md_now_ms(), api->instance, 0};
  metrics_foreach(api->metrics, self_sample, &s);
  /* what a scrape of ourselves would add */
  const char *none[1] = {NULL};
  self_sample(&s, "up", none, 0, 1);
  self_sample(&s, "scrape_samples_scraped", none, 0, (double)s.n);
  self_sample(&s, "scrape_duration_seconds", none, 0, (double)(md_mono_ns() - t0) / 1e9);
  tsdb_append_result_t res;
  int rc = tsdb_append(api->db, cfg->server.self_tenant, b, &res);
  if (rc) log_warn("self-scrape: storing %zu samples failed (%d)", s.n, rc);
  tsdb_batch_free(b);
}

static void *self_scrape_main(void *arg) {
  api_t *api = arg;
  pthread_mutex_lock(&api->self_mu);
  while (!api->self_quit) {
    int64_t iv = api_config(api)->server.self_interval_ms;
    if (iv <= 0) iv = 15000;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(iv / 1000);
    ts.tv_nsec += (long)(iv % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&api->self_cv, &api->self_mu, &ts);
    if (api->self_quit) break;
    pthread_mutex_unlock(&api->self_mu);
    if (api_config(api)->server.self_interval_ms > 0) self_scrape_once(api);
    pthread_mutex_lock(&api->self_mu);
  }
  pthread_mutex_unlock(&api->self_mu);
  return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void tsdb_options_from(const config_t *c, tsdb_options_t *o) {
  tsdb_options_default(o);
  o->retention_ms = c->storage.retention_ms;
  o->retention_bytes = c->storage.retention_bytes;
  o->block_span_ms = c->storage.block_span_ms;
  o->ooo_window_ms = c->storage.ooo_window_ms;
  o->fsync = c->storage.fsync_always ? TSDB_FSYNC_ALWAYS : TSDB_FSYNC_INTERVAL;
  o->fsync_interval_ms = c->storage.fsync_interval_ms;
  o->max_series_per_tenant = (size_t)c->limits.max_series_per_tenant;
  o->raw_retention_ms = c->storage.raw_retention_ms ? c->storage.raw_retention_ms : c->storage.retention_ms;
  o->tier1_resolution_ms = c->storage.tier1_resolution_ms;
  o->tier1_retention_ms = c->storage.tier1_retention_ms;
  o->tier2_resolution_ms = c->storage.tier2_resolution_ms;
  o->tier2_retention_ms = c->storage.tier2_retention_ms;
}

int api_new(config_t *cfg, const config_source_t *src, api_t **out, char *err, size_t errlen) {
  *out = NULL;
  api_t *api = calloc(1, sizeof *api);
  if (!api) {
    config_free(cfg);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  int rc = 0;
  pthread_mutex_init(&api->mu, NULL);
  pthread_mutex_init(&api->reload_mu, NULL);
  pthread_mutex_init(&api->self_mu, NULL);
  pthread_cond_init(&api->self_cv, NULL);
  api->cfg = cfg;
  if (src) api->src = *src;
  api->start_ms = md_now_ms();
  api->listen = strdup(cfg->server.listen);
  api->data_dir = strdup(cfg->server.data_dir);
  api->metrics = metrics_registry_new();
  api->router = http_router_new();
  if (!api->listen || !api->data_dir || !api->metrics || !api->router) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  /* instance label: the listen address with a host ("127.0.0.1:8012"), or host:port */
  if (cfg->server.listen[0] == ':') {
    char host[128] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    snprintf(api->instance, sizeof api->instance, "%s%s", host, cfg->server.listen);
  } else {
    snprintf(api->instance, sizeof api->instance, "%s", cfg->server.listen);
  }
  if (log_set_level_name(cfg->server.log_level) != 0) log_warn("unknown log level %s", cfg->server.log_level);
  if (md_mkdir_p(api->data_dir) != 0) {
    rc = md_error(err, errlen, MD_EIO, "cannot create data directory %s", api->data_dir);
    goto fail;
  }
  tsdb_options_t topt;
  tsdb_options_from(cfg, &topt);
  char terr[256] = "";
  rc = tsdb_open(api->data_dir, &topt, &api->db, terr, sizeof terr);
  if (rc) {
    md_error(err, errlen, rc, "cannot open storage in %s: %s", api->data_dir, terr);
    goto fail;
  }
  metrics_register_process(api->metrics);
  register_seed_metrics(api->metrics);
  metrics_add_collector(api->metrics, tsdb_collect, api);
  *out = api;
  return 0;
fail:
  api_free(api);
  return rc;
}

static int start_http(api_t *api, char *err, size_t errlen) {
  const config_t *c = api->cfg;
  http_auth_key_t *keys = calloc(c->server.n_auth_keys ? c->server.n_auth_keys : 1, sizeof *keys);
  if (!keys) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  api_auth_keys_from(c, keys);
  http_server_options_t o = {
      .listen = c->server.listen,
      .threads = c->server.threads,
      .max_connections = c->server.max_connections,
      .max_connections_per_ip = c->server.max_connections_per_ip,
      .connection_timeout_s = (unsigned)((c->server.read_timeout_ms + 999) / 1000),
      .max_body_bytes = c->server.max_body_bytes,
      .max_concurrent_inserts = c->limits.max_concurrent_inserts,
      .tls_cert_file = c->server.tls_cert_file,
      .tls_key_file = c->server.tls_key_file,
      .cors_origin = c->server.cors_origin,
      .keys = keys,
      .nkeys = c->server.n_auth_keys,
      .metrics = api->metrics,
  };
  int rc = http_server_start(&o, api->router, &api->http, err, errlen);
  free(keys);
  return rc;
}

void api_auth_keys_from(const config_t *c, http_auth_key_t *keys) {
  for (size_t i = 0; i < c->server.n_auth_keys; i++) {
    const config_auth_key_t *k = &c->server.auth_keys[i];
    unsigned roles = 0;
    if (k->roles & CONFIG_ROLE_READ) roles |= HTTP_ROLE_READ;
    if (k->roles & CONFIG_ROLE_WRITE) roles |= HTTP_ROLE_WRITE;
    if (k->roles & CONFIG_ROLE_ADMIN) roles |= HTTP_ROLE_ADMIN;
    keys[i] = (http_auth_key_t){k->name, k->token, k->username, k->tenant, roles};
  }
}

/* Whether a listen address only accepts local connections (127.0.0.0/8, ::1, localhost). */
static bool listen_is_loopback(const char *listen) {
  return strncmp(listen, "127.", 4) == 0 || strncmp(listen, "[::1]:", 6) == 0 ||
         strncmp(listen, "localhost:", 10) == 0;
}

int api_start(api_t *api, char *err, size_t errlen) {
  hook_t reg[5], start[5];
  get_hooks(reg, start);
  int rc = api_register_builtin(api, api->router);
  if (rc) return md_error(err, errlen, rc, "cannot register built-in routes");
  for (int i = 0; i < 5; i++) {
    if (reg[i].reg) reg[i].reg(api, api->router);
    if (reg[i].reg) log_debug("module %s: routes registered", reg[i].name);
  }
  for (int i = 0; i < 5; i++) {
    if (!start[i].start) continue;
    rc = start[i].start(api);
    if (rc) return md_error(err, errlen, rc, "module %s failed to start (%d)", start[i].name, rc);
    api->started |= 1u << i;
  }
  rc = start_http(api, err, errlen);
  if (rc) return rc;
  if (pthread_create(&api->self_thread, NULL, self_scrape_main, api) == 0) api->self_running = true;
  else log_warn("self-scrape thread could not start; self-metrics will not be stored");
  atomic_store(&api->ready, true);
  const config_t *c = api->cfg;
  if (!c->server.n_auth_keys && !listen_is_loopback(c->server.listen))
    log_warn("auth is off and %s accepts connections from the network: anyone who can reach it may read, "
             "write and administer; configure server.auth_keys or listen on 127.0.0.1",
             c->server.listen);
  log_info("metricsd %s (commit %s) listening on %s (port %u), data in %s, auth %s%s", METRICSD_VERSION,
           api_commit(), c->server.listen, http_server_port(api->http), c->server.data_dir,
           c->server.n_auth_keys ? "on" : "off", c->server.tls_cert_file ? ", TLS" : "");
  return 0;
}

static bool str_differs(const char *a, const char *b) {
  return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Names every changed setting that the running server read once at start (the HTTP server's
 * options, storage), so an operator knows the reload did not apply it. */
static void warn_restart_only(const config_t *o, const config_t *n) {
  sb_t changed = {0};
#define CHANGED(cond, key) \
  if (cond) sb_printf(&changed, "%s%s", changed.len ? ", " : "", key)
  CHANGED(str_differs(o->server.listen, n->server.listen), "server.listen");
  CHANGED(str_differs(o->server.data_dir, n->server.data_dir), "server.data_dir");
  CHANGED(o->server.max_body_bytes != n->server.max_body_bytes, "server.max_body_bytes");
  CHANGED(o->server.read_timeout_ms != n->server.read_timeout_ms, "server.read_timeout");
  CHANGED(o->server.max_connections != n->server.max_connections, "server.max_connections");
  CHANGED(o->server.max_connections_per_ip != n->server.max_connections_per_ip, "server.max_connections_per_ip");
  CHANGED(o->server.threads != n->server.threads, "server.threads");
  CHANGED(str_differs(o->server.tls_cert_file, n->server.tls_cert_file) ||
              str_differs(o->server.tls_key_file, n->server.tls_key_file),
          "server.tls_cert_file/tls_key_file");
  CHANGED(str_differs(o->server.cors_origin, n->server.cors_origin), "server.cors_origin");
  CHANGED(o->server.prometheus_enabled != n->server.prometheus_enabled, "server.prometheus_enabled");
  CHANGED(o->limits.max_concurrent_inserts != n->limits.max_concurrent_inserts, "limits.max_concurrent_inserts");
  CHANGED(o->limits.ingest_series_cache != n->limits.ingest_series_cache, "limits.ingest_series_cache");
  const json_t *os = json_object_get(o->root, "storage"), *ns = json_object_get(n->root, "storage");
  CHANGED((os == NULL) != (ns == NULL) || (os && !json_equal(os, ns)), "storage.*");
#undef CHANGED
  if (changed.len) log_warn("reload: %s changed but take effect only after a restart", changed.buf);
  sb_free(&changed);
}

int api_reload(api_t *api, char *err, size_t errlen) {
  pthread_mutex_lock(&api->reload_mu);
  config_t *nc = NULL;
  int rc = config_load(&api->src, &nc, err, errlen);
  if (rc) {
    pthread_mutex_unlock(&api->reload_mu);
    log_error("reload failed, keeping the running configuration: %s", err);
    return rc;
  }
  warn_restart_only(api->cfg, nc);
  log_set_level_name(nc->server.log_level);
  if (api->http) {
    http_auth_key_t *keys = calloc(nc->server.n_auth_keys ? nc->server.n_auth_keys : 1, sizeof *keys);
    if (keys) {
      api_auth_keys_from(nc, keys);
      if (http_server_set_auth(api->http, keys, nc->server.n_auth_keys) != 0) log_error("reload: auth keys not updated");
      free(keys);
    }
  }
  pthread_mutex_lock(&api->mu);
  config_t **old = realloc(api->retired, (api->nretired + 1) * sizeof *old);
  if (old) {
    api->retired = old;
    api->retired[api->nretired++] = api->cfg;
    api->cfg = nc;
  }
  pthread_mutex_unlock(&api->mu);
  if (!old) {
    config_free(nc);
    pthread_mutex_unlock(&api->reload_mu);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  hook_t reg[5], start[5];
  get_hooks(reg, start);
  for (int i = 0; i < 5; i++)
    if (start[i].reload) start[i].reload(api);
  pthread_mutex_unlock(&api->reload_mu);
  log_info("configuration reloaded (log level %s, %zu auth keys)", nc->server.log_level, nc->server.n_auth_keys);
  return 0;
}

void api_stop(api_t *api) {
  if (!api || api->stopped) return;
  api->stopped = true;
  atomic_store(&api->stopping, true);
  atomic_store(&api->ready, false);
  log_info("shutting down: finishing in-flight requests");
  if (api->http) {
    http_server_stop(api->http); /* quiesce, wait for in-flight requests, close */
    api->http = NULL;
  }
  hook_t reg[5], start[5];
  get_hooks(reg, start);
  for (int i = 4; i >= 0; i--)
    if ((api->started & (1u << i)) && start[i].stop) start[i].stop(api);
  api->started = 0;
  if (api->self_running) {
    pthread_mutex_lock(&api->self_mu);
    api->self_quit = true;
    pthread_cond_broadcast(&api->self_cv);
    pthread_mutex_unlock(&api->self_mu);
    pthread_join(api->self_thread, NULL);
    api->self_running = false;
    if (api->cfg->server.self_interval_ms > 0) self_scrape_once(api); /* final sample */
  }
}

void api_free(api_t *api) {
  if (!api) return;
  api_stop(api);
  if (api->db) {
    tsdb_close(api->db);
    api->db = NULL;
    log_info("storage closed");
  }
  http_router_free(api->router);
  metrics_registry_free(api->metrics);
  config_free(api->cfg);
  for (size_t i = 0; i < api->nretired; i++) config_free(api->retired[i]);
  free(api->retired);
  for (size_t i = 0; i < api->nslots; i++) free(api->slots[i].name);
  free(api->slots);
  free(api->health);
  free(api->listen);
  free(api->data_dir);
  pthread_mutex_destroy(&api->mu);
  pthread_mutex_destroy(&api->reload_mu);
  pthread_mutex_destroy(&api->self_mu);
  pthread_cond_destroy(&api->self_cv);
  free(api);
}
