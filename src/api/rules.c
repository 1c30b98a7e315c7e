/*
 * Rules and alerts endpoints and the rules module's lifecycle: /api/v1/rules and
 * /api/v1/alerts (Prometheus shapes, Grafana reads them), seed 003's runtime rules API
 * (/alerts/rules[/{id}]) and /alerts/active. Rule files come from the configuration's
 * `rule_files` (globs, relative to the configuration file), notification targets from
 * `alerting` (Prometheus's alertmanagers static_configs, plus metricsd's `webhooks`).
 * Rule-evaluation and notifier self-metrics (prometheus_rule_*, prometheus_notifications_*)
 * are written into the server's registry by the rules module as it works.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "params.h"
#include "rules/rules.h"

typedef struct rules_state {
  rules_t *rules;
  char **strings; /* owned copies handed to rules_options_t */
  size_t nstrings;
} rules_state_t;

static rules_t *get_rules(api_t *api) {
  rules_state_t *st = api_slot(api, "rules");
  return st ? st->rules : NULL;
}

static const char *keep(rules_state_t *st, const char *s) {
  char **n = realloc(st->strings, (st->nstrings + 1) * sizeof *n);
  if (!n) return NULL;
  st->strings = n;
  n[st->nstrings] = strdup(s);
  return n[st->nstrings++];
}

/* Rule-file globs from the configuration, made absolute against the config file's folder. */
static size_t rule_globs(api_t *api, rules_state_t *st, const char **out, size_t max) {
  const config_t *cfg = api_config(api);
  size_t n = 0, i;
  json_t *g;
  char *cfgdir = cfg->file_path ? strdup(cfg->file_path) : NULL;
  const char *dir = cfgdir ? dirname(cfgdir) : ".";
  json_array_foreach(cfg->rule_files, i, g) {
    if (n >= max || !json_is_string(g)) continue;
    const char *p = json_string_value(g);
    if (p[0] == '/') {
      out[n++] = keep(st, p);
    } else {
      sb_t sb = {0};
      sb_printf(&sb, "%s/%s", dir, p);
      out[n++] = keep(st, sb.buf ? sb.buf : p);
      sb_free(&sb);
    }
  }
  free(cfgdir);
  return n;
}

int api_start_rules(api_t *api) {
  rules_state_t *st = calloc(1, sizeof *st);
  if (!st) return MD_ENOMEM;
  const config_t *cfg = api_config(api);
  rules_options_t opt;
  rules_options_default(&opt);
  opt.db = api_db(api);
  opt.data_dir = api_data_dir(api);
  opt.metrics = api_metrics(api); /* freed after the stop hooks: outlives the rules */
  if (cfg->global.evaluation_interval_ms > 0) opt.default_interval_ms = cfg->global.evaluation_interval_ms;
  tsdb_label_t ext[64];
  size_t next = 0;
  const char *k;
  json_t *v;
  json_object_foreach(cfg->global.external_labels, k, v) {
    if (next < 64 && json_is_string(v))
      ext[next++] = (tsdb_label_t){keep(st, k), keep(st, json_string_value(v))};
  }
  opt.external_labels = ext;
  opt.n_external_labels = next;
  /* alerting: {alertmanagers: [{scheme, path_prefix, static_configs: [{targets: [...]}]}],
   *            webhooks: [{url, secret}]} */
  const char *ams[32], *hooks[32];
  size_t nams = 0, nhooks = 0, i, j, t;
  json_t *am, *sc, *target, *hook;
  json_array_foreach(json_object_get(cfg->alerting, "alertmanagers"), i, am) {
    const char *scheme = json_string_value(json_object_get(am, "scheme"));
    const char *prefix = json_string_value(json_object_get(am, "path_prefix"));
    json_array_foreach(json_object_get(am, "static_configs"), j, sc) {
      json_array_foreach(json_object_get(sc, "targets"), t, target) {
        if (nams >= 32 || !json_is_string(target)) continue;
        sb_t url = {0};
        sb_printf(&url, "%s://%s%s", scheme ? scheme : "http", json_string_value(target),
                  prefix ? prefix : "");
        ams[nams++] = keep(st, url.buf);
        sb_free(&url);
      }
    }
  }
  json_array_foreach(json_object_get(cfg->alerting, "webhooks"), i, hook) {
    const char *url =
        json_is_string(hook) ? json_string_value(hook) : json_string_value(json_object_get(hook, "url"));
    const char *secret = json_string_value(json_object_get(hook, "secret"));
    if (url && nhooks < 32) hooks[nhooks++] = keep(st, url);
    if (secret) opt.webhook_secret = keep(st, secret);
  }
  /* metricsd's notifier settings beside them (Prometheus has them as flags). */
  const json_t *al = cfg->alerting;
  int64_t ms;
  if (!config_parse_duration(json_object_get(al, "resend_delay"), &ms) && ms > 0) opt.resend_delay_ms = ms;
  if (!config_parse_duration(json_object_get(al, "for_outage_tolerance"), &ms) && ms > 0)
    opt.outage_tolerance_ms = ms;
  if (!config_parse_duration(json_object_get(al, "for_grace_period"), &ms)) opt.for_grace_period_ms = ms;
  if (!config_parse_duration(json_object_get(al, "notification_backoff"), &ms) && ms > 0)
    opt.notify_backoff_ms = ms;
  if (!config_parse_duration(json_object_get(al, "notification_timeout"), &ms) && ms > 0)
    opt.notify_timeout_ms = ms;
  json_t *num;
  if (json_is_integer(num = json_object_get(al, "notification_queue_capacity")) &&
      json_integer_value(num) > 0)
    opt.notify_queue_capacity = (size_t)json_integer_value(num);
  if (json_is_integer(num = json_object_get(al, "notification_batch_size")) && json_integer_value(num) > 0)
    opt.notify_batch_size = (size_t)json_integer_value(num);
  if (json_is_integer(num = json_object_get(al, "notification_max_tries")) && json_integer_value(num) > 0 &&
      json_integer_value(num) < 100)
    opt.notify_max_tries = (int)json_integer_value(num);
  const char *ext_url = json_string_value(json_object_get(al, "external_url"));
  if (ext_url) opt.external_url = keep(st, ext_url);
  opt.alertmanagers = ams;
  opt.n_alertmanagers = nams;
  opt.webhooks = hooks;
  opt.n_webhooks = nhooks;
  char err[1024];
  int rc = rules_new(&opt, &st->rules, err, sizeof err);
  if (!rc) {
    const char *globs[64];
    size_t ng = rule_globs(api, st, globs, 64);
    rc = rules_load_files(st->rules, globs, ng, err, sizeof err);
  }
  if (!rc) rc = rules_start(st->rules);
  if (rc) {
    log_error("rules: %s", err);
    rules_free(st->rules);
    for (size_t s = 0; s < st->nstrings; s++)
      free(st->strings[s]);
    free(st->strings);
    free(st);
    return rc;
  }
  api_set_health(api, "notifiers", nams + nhooks ? "ok" : "disabled", NULL);
  return api_set_slot(api, "rules", st);
}

void api_stop_rules(api_t *api) {
  rules_state_t *st = api_slot(api, "rules");
  if (!st) return;
  rules_free(st->rules);
  for (size_t s = 0; s < st->nstrings; s++)
    free(st->strings[s]);
  free(st->strings);
  free(st);
  api_set_slot(api, "rules", NULL);
}

void api_reload_rules(api_t *api) {
  rules_state_t *st = api_slot(api, "rules");
  if (!st) return;
  const char *globs[64];
  size_t ng = rule_globs(api, st, globs, 64);
  char err[1024];
  if (rules_load_files(st->rules, globs, ng, err, sizeof err))
    log_error("rules: reload failed, keeping the old rules: %s", err);
}

static void unavailable(http_resp_t *resp) {
  http_resp_error(resp, 503, "rule engine not running");
}

static void h_api_rules(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  const char *type = http_req_query(req, "type");
  if (type && strcmp(type, "alert") && strcmp(type, "record")) {
    http_resp_prom_error(resp, 400, "bad_data", "invalid query parameter type='%s'", type);
    return;
  }
  sb_t d = {0};
  rules_json_rules(r, api_tenant(req, NULL), type, &d);
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void h_api_alerts(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  sb_t d = {0};
  rules_json_alerts(r, api_tenant(req, NULL), &d);
  api_prom_success(resp, d.buf, d.len, NULL, 0, NULL, 0);
  sb_free(&d);
}

static void h_active(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  sb_t *b = http_resp_body(resp);
  rules_json_active(r, api_tenant(req, NULL), b);
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}

static void h_list(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  sb_t *b = http_resp_body(resp);
  sb_puts(b, "{\"rules\":");
  rules_runtime_list(r, api_tenant(req, NULL), b);
  sb_putc(b, '}');
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}

static void h_get(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  const char *id = http_req_param(req, "id");
  sb_t *b = http_resp_body(resp);
  if (rules_runtime_get(r, api_tenant(req, NULL), id, b)) {
    sb_reset(b);
    http_resp_error(resp, 404, "rule %s not found", id);
    return;
  }
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}

static void put_rule(http_req_t *req, http_resp_t *resp, api_t *api, const char *id) {
  rules_t *r = get_rules(api);
  if (!r) return unavailable(resp);
  size_t len;
  const char *body = http_req_body(req, &len);
  json_error_t je;
  json_t *doc = body ? json_loadb(body, len, 0, &je) : NULL;
  if (!doc) {
    http_resp_error(resp, 400, "invalid JSON body: %s (line %d)", body ? je.text : "empty body",
                    body ? je.line : 0);
    return;
  }
  char newid[40], err[1024];
  int rc = rules_runtime_put(r, api_tenant(req, NULL), id, doc, newid, err, sizeof err);
  json_decref(doc);
  if (rc == MD_ENOTFOUND) {
    http_resp_error(resp, 404, "rule %s not found", id);
    return;
  }
  if (rc == MD_EINVAL) {
    http_resp_error(resp, 400, "%s", err);
    return;
  }
  if (rc) {
    http_resp_error(resp, 500, "%s", err);
    return;
  }
  sb_t *b = http_resp_body(resp);
  rules_runtime_get(r, api_tenant(req, NULL), newid, b);
  http_resp_status(resp, id ? 200 : 201);
  http_resp_content_type(resp, "application/json");
}

static void h_post(http_req_t *req, http_resp_t *resp, void *ctx) {
  put_rule(req, resp, ctx, NULL);
}
static void h_put(http_req_t *req, http_resp_t *resp, void *ctx) {
  put_rule(req, resp, ctx, http_req_param(req, "id"));
}

static void h_delete(http_req_t *req, http_resp_t *resp, void *ctx) {
  rules_t *r = get_rules(ctx);
  if (!r) return unavailable(resp);
  const char *id = http_req_param(req, "id");
  int rc = rules_runtime_delete(r, api_tenant(req, NULL), id);
  if (rc == MD_ENOTFOUND) {
    http_resp_error(resp, 404, "rule %s not found", id);
    return;
  }
  if (rc) {
    http_resp_error(resp, 500, "cannot persist runtime rules");
    return;
  }
  http_resp_status(resp, 204);
}

void api_register_rules(api_t *api, http_router_t *r) {
  http_route_add(r, "GET", "/api/v1/rules", HTTP_ROLE_READ, 0, h_api_rules, api);
  http_route_add(r, "GET", "/api/v1/alerts", HTTP_ROLE_READ, 0, h_api_alerts, api);
  http_route_add(r, "GET", "/alerts/active", HTTP_ROLE_READ, 0, h_active, api);
  http_route_add(r, "GET", "/alerts/rules", HTTP_ROLE_READ, 0, h_list, api);
  http_route_add(r, "POST", "/alerts/rules", HTTP_ROLE_WRITE, 0, h_post, api);
  http_route_add(r, "GET", "/alerts/rules/{id}", HTTP_ROLE_READ, 0, h_get, api);
  http_route_add(r, "PUT", "/alerts/rules/{id}", HTTP_ROLE_WRITE, 0, h_put, api);
  http_route_add(r, "DELETE", "/alerts/rules/{id}", HTTP_ROLE_WRITE, 0, h_delete, api);
}
