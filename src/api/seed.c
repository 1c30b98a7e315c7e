/*
 * api/seed.c — the seed REST endpoints (seed 004; SPEC §3): the /metrics exposition (track
 * registry state + latest stored samples + self-metrics, or window aggregates computed from
 * storage), /metrics/series (series with their points, cursor pagination) and
 * /metrics/trends/{name} (Mann-Kendall trend, change percentage, per-step points, forecast).
 *
 * Everything reads through tsdb_select: aggregates and trends work on any pushed, scraped or
 * tracked data and survive restarts. The analytics math is in src/analytics/.
 *
 * The exposition engine (selectors, aggregates, latest values) is in seed_export.c. Families
 * already exposed by the track registry or the self-metrics registry are not repeated from
 * storage (they are flushed there too).
 *
 * Threading: handlers run on HTTP worker threads; all state is per request (an arena and
 * local arrays). The only shared objects are the tsdb, the registries and the config, which
 * are thread-safe or immutable.
 */
#include "api/seed.h"
#include "api/seed_internal.h"

#include "analytics/analytics.h"
#include "api/api.h"
#include "api/params.h"
#include "core/config.h"
#include "core/metrics.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "tsdb/tsdb.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED_LOOKBACK_MS (5 * 60 * 1000)
#define SEED_MAX_SELECTORS 64
#define SEED_MAX_TREND_STEPS 11000
#define SEED_MAX_TREND_SERIES 500
/* Mann-Kendall and Sen's slope are O(steps^2) per trend: 2e9 pairwise comparisons (a few
 * CPU-seconds) is the most one request may ask for (e.g. 16 series x 11,000 steps). */
#define SEED_MAX_TREND_WORK 2e9
#define SEED_MAX_FORECAST 1000
#define SEED_MAX_LIMIT 10000

/* ---- request helpers ------------------------------------------------------------------ */

/* The registry behind POST /metrics/track, published by the ingest module. */
static ingest_track_t *seed_track(api_t *api) { return api_slot(api, "track"); }

/* Resolves the tenant; answers 403 when tenant_id asks for another tenant than the key's. */
static bool seed_tenant(http_req_t *req, http_resp_t *resp, const char **tenant) {
  const char *want = http_req_query(req, "tenant_id");
  if (want && *want && http_req_tenant_fixed(req) && strcmp(want, http_req_tenant(req)) != 0) {
    http_resp_error(resp, 403, "tenant_id %s is not the tenant of this API key", want);
    return false;
  }
  *tenant = api_tenant(req, want && *want ? want : NULL);
  return true;
}

/* Selectors from match[] plus name/service filters (ANDed into each). */
static bool seed_selectors(http_req_t *req, http_resp_t *resp, arena_t *a, const char *name,
                           seed_selector_t *sel, size_t *nsel) {
  char err[256] = "";
  const char *const *vals = NULL;
  size_t nv = http_req_query_all(req, "match[]", &vals);
  const char *service = http_req_query(req, "service");
  *nsel = 0;
  if (nv > SEED_MAX_SELECTORS) {
    http_resp_error(resp, 400, "too many match[] selectors (at most %d)", SEED_MAX_SELECTORS);
    return false;
  }
  for (size_t i = 0; i < nv; i++) {
    if (seed_parse_selector(vals[i], strlen(vals[i]), a, &sel[i], err, sizeof err)) {
      seed_selector_release(sel, i + 1);
      http_resp_error(resp, 400, "bad match[] %s: %s", vals[i], err);
      return false;
    }
  }
  size_t n = nv;
  bool extra = (name && *name) || (service && *service);
  if (extra && n == 0) {
    memset(&sel[0], 0, sizeof sel[0]);
    n = 1;
  }
  for (size_t i = 0; i < n && extra; i++) {
    int rc = 0;
    if (name && *name) rc = seed_selector_add(&sel[i], a, TSDB_MATCH_EQ, "__name__", name, err, sizeof err);
    if (!rc && service && *service)
      rc = seed_selector_add(&sel[i], a, TSDB_MATCH_EQ, "service", service, err, sizeof err);
    if (rc) {
      seed_selector_release(sel, n);
      http_resp_error(resp, 500, "%s", err);
      return false;
    }
  }
  *nsel = n;
  return true;
}

static bool parse_bool_param(http_req_t *req, http_resp_t *resp, const char *name, bool *out) {
  const char *v = http_req_query(req, name);
  *out = false;
  if (!v || !*v || strcmp(v, "false") == 0 || strcmp(v, "0") == 0) return true;
  if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
    *out = true;
    return true;
  }
  http_resp_error(resp, 400, "%s must be true or false, not %s", name, v);
  return false;
}

static bool parse_duration_param(http_req_t *req, http_resp_t *resp, const char *name, int64_t *ms) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  if (md_parse_duration(v, strlen(v), ms) != 0 || *ms <= 0) {
    http_resp_error(resp, 400, "%s: bad duration %s (use 300, 5m, 1h30m)", name, v);
    return false;
  }
  return true;
}

static bool parse_int_param(http_req_t *req, http_resp_t *resp, const char *name, long lo, long hi,
                            long *out) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi) {
    http_resp_error(resp, 400, "%s must be an integer from %ld to %ld, not %s", name, lo, hi, v);
    return false;
  }
  *out = x;
  return true;
}

static bool parse_time_param(http_req_t *req, http_resp_t *resp, const char *name, int64_t *ms) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) return true;
  if (md_parse_time(v, strlen(v), ms) != 0) {
    http_resp_error(resp, 400, "%s: bad time %s (RFC 3339 or Unix seconds)", name, v);
    return false;
  }
  return true;
}

/* name → type of the tenant's tracked metrics (for counter detection); NULL without one. */
static json_t *tracked_types(api_t *api, const char *tenant) {
  ingest_track_t *reg = seed_track(api);
  if (!reg) return NULL;
  sb_t sb = {0};
  json_t *types = NULL, *arr = NULL;
  if (ingest_track_expose(reg, tenant, &sb, INGEST_EXPOSE_JSON) != 0 || sb.oom || !sb.buf) goto out;
  arr = json_loadb(sb.buf, sb.len, 0, NULL);
  if (!json_is_array(arr) || !(types = json_object())) goto out;
  size_t i;
  json_t *item;
  json_array_foreach(arr, i, item) {
    const char *name = json_string_value(json_object_get(item, "name"));
    json_t *type = json_object_get(item, "type");
    if (name && json_is_string(type)) json_object_set(types, name, type);
  }
out:
  json_decref(arr);
  sb_free(&sb);
  return types;
}

static void count_exported(api_t *api, size_t n) {
  metrics_counter_t *c = metrics_counter(api_metrics(api), "metrics_exported_total",
                                         "Total metrics exported", NULL);
  metrics_counter_add(c, (double)n);
  metrics_counter_inc(metrics_counter(api_metrics(api), "metrics_export_requests_total",
                                      "GET /metrics exports served", NULL));
  metrics_gauge_t *g = metrics_gauge(api_metrics(api), "metrics_last_export_timestamp_seconds",
                                     "Unix time of the last GET /metrics export", NULL);
  metrics_gauge_set(g, (double)md_now_ms() / 1000.0);
}

/* ---- GET /metrics --------------------------------------------------------------------- */

static bool export_format(http_req_t *req, http_resp_t *resp, seed_format_t *fmt) {
  const char *f = http_req_query(req, "format");
  if (f && *f) {
    if (strcmp(f, "prometheus") == 0 || strcmp(f, "text") == 0) *fmt = SEED_FMT_PROMETHEUS;
    else if (strcmp(f, "openmetrics") == 0) *fmt = SEED_FMT_OPENMETRICS;
    else if (strcmp(f, "json") == 0) *fmt = SEED_FMT_JSON;
    else {
      http_resp_error(resp, 400, "format must be prometheus, openmetrics or json, not %s", f);
      return false;
    }
    return true;
  }
  const char *accept = http_req_header(req, "Accept");
  *fmt = SEED_FMT_PROMETHEUS;
  if (accept && strstr(accept, "application/openmetrics-text")) *fmt = SEED_FMT_OPENMETRICS;
  else if (accept && strstr(accept, "application/json") && !strstr(accept, "text/plain"))
    *fmt = SEED_FMT_JSON;
  return true;
}

typedef struct self_json {
  const seed_selector_t *sel;
  size_t nsel;
  sb_t *out;
  size_t *written;
  json_t *names;
} self_json_t;

static void self_json_sample(void *ctx, const char *name, const char *const *kv, size_t npairs,
                             double value) {
  self_json_t *s = ctx;
  tsdb_label_t l[65];
  size_t nl = 0;
  l[nl++] = (tsdb_label_t){"__name__", name};
  for (size_t i = 0; i < npairs && nl < 65; i++) l[nl++] = (tsdb_label_t){kv[2 * i], kv[2 * i + 1]};
  if (s->names) json_object_set_new(s->names, name, json_true());
  if (!seed_selector_matches(s->sel, s->nsel, l, nl, NULL)) return;
  if (*s->written) sb_putc(s->out, ',');
  sb_puts(s->out, "{\"name\":");
  sb_json_str(s->out, name, strlen(name));
  sb_printf(s->out, ",\"type\":\"%s\",\"labels\":", seed_metric_type(NULL, name));
  seed_json_labels(s->out, l, nl, NULL, NULL);
  sb_puts(s->out, ",\"value\":");
  seed_json_num(s->out, value);
  sb_putc(s->out, '}');
  (*s->written)++;
}

/* Tracked metrics as JSON items, filtered; their names (with every sample suffix) noted. */
static void tracked_json(ingest_track_t *reg, const char *tenant, const seed_selector_t *sel,
                         size_t nsel, sb_t *out, size_t *written, json_t *names) {
  sb_t sb = {0};
  json_t *arr = NULL;
  if (ingest_track_expose(reg, tenant, &sb, INGEST_EXPOSE_JSON) != 0 || !sb.buf) goto out;
  if (!(arr = json_loadb(sb.buf, sb.len, 0, NULL)) || !json_is_array(arr)) goto out;
  size_t i;
  json_t *item;
  json_array_foreach(arr, i, item) {
    const char *name = json_string_value(json_object_get(item, "name"));
    if (!name) continue;
    static const char *const sfx[] = {"", "_bucket", "_sum", "_count", "_total"};
    for (size_t k = 0; k < 5; k++) {
      char buf[512];
      snprintf(buf, sizeof buf, "%s%s", name, sfx[k]);
      json_object_set_new(names, buf, json_true());
    }
    tsdb_label_t l[130];
    size_t nl = 0;
    l[nl++] = (tsdb_label_t){"__name__", name};
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(item, "labels"), k, v) {
      if (nl < 130 && json_is_string(v)) l[nl++] = (tsdb_label_t){k, json_string_value(v)};
    }
    if (!seed_selector_matches(sel, nsel, l, nl, NULL)) continue;
    char *dump = json_dumps(item, JSON_COMPACT);
    if (!dump) continue;
    if (*written) sb_putc(out, ',');
    sb_puts(out, dump);
    free(dump);
    (*written)++;
  }
out:
  json_decref(arr);
  sb_free(&sb);
}

static void handle_export(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *tenant;
  seed_format_t fmt;
  bool aggregated;
  if (!seed_tenant(req, resp, &tenant) || !export_format(req, resp, &fmt) ||
      !parse_bool_param(req, resp, "aggregated", &aggregated))
    return;
  int64_t window_ms = cfg && cfg->aggregation.window_seconds > 0 ? cfg->aggregation.window_seconds * 1000 : 300000;
  if (!parse_duration_param(req, resp, "window", &window_ms)) return;
  unsigned aggs = 0;
  const char *types_param = http_req_query(req, "types");
  if (types_param && *types_param) {
    for (const char *p = types_param; *p;) {
      const char *c = strchr(p, ',');
      size_t len = c ? (size_t)(c - p) : strlen(p);
      unsigned bit = seed_agg_parse(p, len);
      if (!bit) {
        http_resp_error(resp, 400, "types: unknown aggregation %.*s (avg, sum, min, max, count, last)", (int)len, p);
        return;
      }
      aggs |= bit;
      p += len + (c ? 1 : 0);
    }
  } else if (cfg && cfg->aggregation.n_types) {
    for (size_t i = 0; i < cfg->aggregation.n_types; i++)
      aggs |= seed_agg_parse(cfg->aggregation.types[i], strlen(cfg->aggregation.types[i]));
  }
  if (!aggs) aggs = SEED_AGG_AVG | SEED_AGG_SUM | SEED_AGG_MIN | SEED_AGG_MAX | SEED_AGG_COUNT;

  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, http_req_query(req, "name"), sel, &nsel)) return;

  json_t *types = tracked_types(api, tenant);
  json_t *names = json_object();
  sb_t *body = http_resp_body(resp);
  sb_t part = {0};
  char err[256] = "";
  size_t total = 0, n = 0;
  int64_t now = md_now_ms();
  /* The base of a counter's increase is its last sample before the window, looked for as
   * far back as the latest-value lookback (Prometheus's increase() looks past the range
   * start the same way). */
  seed_export_options_t o = {.now_ms = now, .window_ms = window_ms, .baseline_ms = SEED_LOOKBACK_MS, .aggs = aggs,
                             .format = fmt, .types = types, .skip_names = names};
  int rc = MD_OK;
  bool self = !cfg || !cfg->server.self_tenant || strcmp(tenant, cfg->server.self_tenant) == 0;
  ingest_track_t *reg = seed_track(api);
  if (!names) {
    rc = md_error(err, sizeof err, MD_ENOMEM, "out of memory");
    goto done;
  }

  if (fmt == SEED_FMT_JSON) {
    sb_puts(body, aggregated ? "{\"window_seconds\":" : "{\"metrics\":[");
    if (aggregated) {
      sb_double(body, (double)window_ms / 1000.0);
      sb_puts(body, ",\"metrics\":[");
      rc = seed_export_aggregated(api_db(api), tenant, sel, nsel, &o, body, &total, err, sizeof err);
    } else {
      if (reg) tracked_json(reg, tenant, sel, nsel, body, &total, names);
      if (self) {
        self_json_t sj = {sel, nsel, body, &total, names};
        metrics_foreach(api_metrics(api), self_json_sample, &sj);
      }
      sb_reset(&part);
      rc = seed_export_latest(api_db(api), tenant, sel, nsel, &(seed_export_options_t){
          .now_ms = now, .window_ms = SEED_LOOKBACK_MS, .format = fmt, .types = types,
          .skip_names = names}, &part, &n, err, sizeof err);
      if (!rc && n) {
        if (total) sb_putc(body, ',');
        sb_append(body, part.buf, part.len);
        total += n;
      }
    }
    sb_printf(body, "],\"total\":%zu,\"timestamp\":", total);
    seed_json_time(body, now);
    sb_putc(body, '}');
    http_resp_content_type(resp, "application/json");
  } else {
    if (aggregated) {
      rc = seed_export_aggregated(api_db(api), tenant, sel, nsel, &o, body, &total, err, sizeof err);
    } else {
      metrics_format_t mf = fmt == SEED_FMT_OPENMETRICS ? METRICS_FMT_OPENMETRICS : METRICS_FMT_PROMETHEUS;
      if (reg && ingest_track_expose(reg, tenant, &part,
                                     fmt == SEED_FMT_OPENMETRICS ? INGEST_EXPOSE_OPENMETRICS
                                                                 : INGEST_EXPOSE_PROMETHEUS) == 0)
        total += seed_filter_exposition(part.buf ? part.buf : "", part.len, sel, nsel, body, names);
      sb_reset(&part);
      if (self && metrics_expose(api_metrics(api), &part, mf) == 0)
        total += seed_filter_exposition(part.buf ? part.buf : "", part.len, sel, nsel, body, names);
      sb_reset(&part);
      o.window_ms = SEED_LOOKBACK_MS;
      rc = seed_export_latest(api_db(api), tenant, sel, nsel, &o, &part, &n, err, sizeof err);
      if (!rc && part.len) {
        if (fmt == SEED_FMT_PROMETHEUS && body->len && body->buf[body->len - 1] == '\n' &&
            !(body->len >= 2 && body->buf[body->len - 2] == '\n'))
          sb_putc(body, '\n');
        sb_append(body, part.buf, part.len);
      }
      total += n;
    }
    if (fmt == SEED_FMT_OPENMETRICS) {
      sb_puts(body, "# EOF\n");
      http_resp_content_type(resp, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    } else {
      http_resp_content_type(resp, "text/plain; version=0.0.4; charset=utf-8");
    }
  }
done:
  sb_free(&part);
  json_decref(types);
  json_decref(names);
  seed_selector_release(sel, nsel);
  if (rc) {
    sb_reset(body);
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "export failed: %s", err);
    return;
  }
  if (body->oom) {
    sb_reset(body);
    http_resp_error(resp, 500, "out of memory");
    return;
  }
  count_exported(api, total);
}

/* ---- GET /metrics/series --------------------------------------------------------------- */

typedef struct page_entry {
  char *key;  /* canonical label-set key (ordering, cursor) */
  size_t keylen;
  char *json; /* rendered series object */
} page_entry_t;

typedef struct series_scan {
  const char *tenant;
  json_t *types;
  const char *cursor;
  size_t cursor_len;
  size_t limit, max_points;
  page_entry_t *page;
  size_t npage;
  size_t total;
  bool more;
  sb_t key, json;
} series_scan_t;

static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  if (c) return c;
  return an < bn ? -1 : an > bn;
}

static void render_series(series_scan_t *st, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                          const double *v, size_t ns) {
  sb_t *j = &st->json;
  const char *name = seed_label_value(l, nl, "__name__");
  const char *service = seed_label_value(l, nl, "service");
  sb_reset(j);
  sb_puts(j, "{\"name\":");
  sb_json_str(j, name ? name : "", name ? strlen(name) : 0);
  sb_printf(j, ",\"type\":\"%s\",\"labels\":", seed_metric_type(st->types, name ? name : ""));
  seed_json_labels(j, l, nl, "service", NULL);
  sb_puts(j, ",\"service\":");
  if (service) sb_json_str(j, service, strlen(service));
  else sb_puts(j, "null");
  sb_puts(j, ",\"tenant_id\":");
  sb_json_str(j, st->tenant, strlen(st->tenant));
  sb_puts(j, ",\"points\":[");
  /* the newest max_points samples */
  size_t kept = 0, start = 0;
  size_t live = 0;
  for (size_t i = 0; i < ns; i++) live += !tsdb_is_stale_nan(v[i]);
  if (st->max_points && live > st->max_points) {
    size_t drop = live - st->max_points;
    while (drop) {
      if (!tsdb_is_stale_nan(v[start])) drop--;
      start++;
    }
  }
  for (size_t i = start; i < ns; i++) {
    if (tsdb_is_stale_nan(v[i])) continue;
    if (kept++) sb_putc(j, ',');
    sb_puts(j, "{\"value\":");
    seed_json_num(j, v[i]);
    sb_puts(j, ",\"timestamp\":");
    seed_json_time(j, ts[i]);
    sb_putc(j, '}');
  }
  sb_puts(j, "]}");
}

static int series_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                          const double *v, size_t ns) {
  series_scan_t *st = ctx;
  size_t live = 0;
  for (size_t i = 0; i < ns; i++) live += !tsdb_is_stale_nan(v[i]);
  if (!live) return MD_OK;
  st->total++;
  sb_reset(&st->key);
  for (size_t i = 0; i < nl; i++) {
    sb_puts(&st->key, l[i].name);
    sb_putc(&st->key, '\x01');
    sb_puts(&st->key, l[i].value);
    sb_putc(&st->key, '\x02');
  }
  if (st->key.oom) return MD_ENOMEM;
  const char *k = st->key.buf ? st->key.buf : "";
  size_t kl = st->key.len;
  if (st->cursor && key_cmp(k, kl, st->cursor, st->cursor_len) <= 0) return MD_OK;
  /* keep the `limit` smallest keys after the cursor, sorted */
  if (st->npage == st->limit) {
    st->more = true;
    if (key_cmp(k, kl, st->page[st->npage - 1].key, st->page[st->npage - 1].keylen) >= 0) return MD_OK;
    free(st->page[st->npage - 1].key);
    free(st->page[st->npage - 1].json);
    st->npage--;
  }
  size_t pos = st->npage;
  while (pos > 0 && key_cmp(k, kl, st->page[pos - 1].key, st->page[pos - 1].keylen) < 0) pos--;
  render_series(st, l, nl, ts, v, ns);
  if (st->json.oom) return MD_ENOMEM;
  page_entry_t e = {malloc(kl + 1), kl, strdup(st->json.buf)};
  if (!e.key || !e.json) {
    free(e.key);
    free(e.json);
    return MD_ENOMEM;
  }
  memcpy(e.key, k, kl + 1);
  memmove(&st->page[pos + 1], &st->page[pos], (st->npage - pos) * sizeof *st->page);
  st->page[pos] = e;
  st->npage++;
  return MD_OK;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void seed_cursor_encode(sb_t *out, const char *key, size_t n) {
  const unsigned char *p = (const unsigned char *)key;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    sb_putc(out, b64url[(v >> 18) & 63]);
    sb_putc(out, b64url[(v >> 12) & 63]);
    if (i + 1 < n) sb_putc(out, b64url[(v >> 6) & 63]);
    if (i + 2 < n) sb_putc(out, b64url[v & 63]);
  }
}

int seed_cursor_decode(const char *s, size_t n, sb_t *out) {
  uint32_t acc = 0;
  int bits = 0;
  /* unpadded base64url: a lone trailing character cannot carry a byte */
  if (n % 4 == 1) return -1;
  for (size_t i = 0; i < n; i++) {
    const char *p = memchr(b64url, s[i], 64);
    if (!p || !s[i]) return -1;
    acc = (acc << 6) | (uint32_t)(p - b64url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      sb_putc(out, (char)((acc >> bits) & 0xff));
    }
  }
  return out->oom ? -1 : 0;
}

static void handle_series(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *tenant;
  if (!seed_tenant(req, resp, &tenant)) return;
  long limit = 100;
  int64_t now = md_now_ms(), end = now, start;
  if (!parse_int_param(req, resp, "limit", 1, SEED_MAX_LIMIT, &limit) ||
      !parse_time_param(req, resp, "end", &end))
    return;
  start = end - 3600 * 1000;
  if (!parse_time_param(req, resp, "start", &start)) return;
  if (start > end) {
    http_resp_error(resp, 400, "start must not be after end");
    return;
  }
  series_scan_t st = {.tenant = tenant, .limit = (size_t)limit};
  st.max_points = cfg ? cfg->limits.max_points_per_series : 1000;
  sb_t cursor = {0};
  const char *cur = http_req_query(req, "cursor");
  if (cur && *cur) {
    if (seed_cursor_decode(cur, strlen(cur), &cursor) != 0 || cursor.len == 0) {
      sb_free(&cursor);
      http_resp_error(resp, 400, "bad cursor");
      return;
    }
    st.cursor = cursor.buf;
    st.cursor_len = cursor.len;
  }
  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, http_req_query(req, "name"), sel, &nsel)) {
    sb_free(&cursor);
    return;
  }
  st.page = calloc((size_t)limit, sizeof *st.page);
  st.types = tracked_types(api, tenant);
  char err[256] = "";
  int rc = st.page ? seed_scan(api_db(api), tenant, sel, nsel, start, end, series_collect, &st, err, sizeof err)
                   : MD_ENOMEM;
  if (rc == MD_ENOMEM && !*err) md_error(err, sizeof err, rc, "out of memory");
  sb_t *body = http_resp_body(resp);
  if (rc == MD_OK) {
    sb_puts(body, "{\"series\":[");
    for (size_t i = 0; i < st.npage; i++) {
      if (i) sb_putc(body, ',');
      sb_puts(body, st.page[i].json);
    }
    sb_printf(body, "],\"total\":%zu,\"timestamp\":", st.total);
    seed_json_time(body, now);
    if (st.more && st.npage) {
      sb_puts(body, ",\"next_cursor\":\"");
      seed_cursor_encode(body, st.page[st.npage - 1].key, st.page[st.npage - 1].keylen);
      sb_putc(body, '"');
    }
    sb_putc(body, '}');
    if (body->oom) rc = md_error(err, sizeof err, MD_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < st.npage; i++) {
    free(st.page[i].key);
    free(st.page[i].json);
  }
  free(st.page);
  sb_free(&st.key);
  sb_free(&st.json);
  sb_free(&cursor);
  json_decref(st.types);
  seed_selector_release(sel, nsel);
  if (rc) {
    sb_reset(body);
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "%s", err);
  }
}

/* ---- GET /metrics/trends/{name} --------------------------------------------------------- */

typedef struct trend_series {
  char *labels; /* JSON object */
  double *vals; /* nsteps, NaN = no data */
} trend_series_t;

typedef struct trend_scan {
  int64_t start, step;
  size_t nsteps;
  bool counter;
  int aggregate; /* 0 none, 1 sum, 2 avg */
  double *agg_sum, *agg_cnt;
  trend_series_t *series;
  size_t nseries;
  double *tmp_sum, *tmp_cnt;
  bool too_many;
  sb_t sb;
} trend_scan_t;

/* Per-step values of one series: the mean for gauges; for counters the per-second rate of
 * the increase whose later sample falls in the step (resets handled). */
static void step_values(const trend_scan_t *st, const int64_t *ts, const double *v, size_t ns, double *out) {
  for (size_t i = 0; i < st->nsteps; i++) st->tmp_sum[i] = 0, st->tmp_cnt[i] = 0;
  double prev = NAN;
  for (size_t i = 0; i < ns; i++) {
    double x = v[i];
    if (isnan(x)) continue;
    double p = prev;
    prev = x;
    if (ts[i] < st->start) continue;
    size_t b = (size_t)((ts[i] - st->start) / st->step);
    if (b >= st->nsteps) continue;
    if (st->counter) {
      if (isnan(p)) continue;
      st->tmp_sum[b] += x >= p ? x - p : x;
      st->tmp_cnt[b] = 1;
    } else {
      st->tmp_sum[b] += x;
      st->tmp_cnt[b] += 1;
    }
  }
  for (size_t i = 0; i < st->nsteps; i++) {
    if (!st->tmp_cnt[i]) out[i] = NAN;
    else if (st->counter) out[i] = st->tmp_sum[i] / ((double)st->step / 1000.0);
    else out[i] = st->tmp_sum[i] / st->tmp_cnt[i];
  }
}

static int trend_collect(void *ctx, const tsdb_label_t *l, size_t nl, const int64_t *ts,
                         const double *v, size_t ns) {
  trend_scan_t *st = ctx;
  if (st->aggregate) {
    double *vals = st->tmp_sum + st->nsteps; /* second half of the scratch */
    step_values(st, ts, v, ns, vals);
    for (size_t i = 0; i < st->nsteps; i++) {
      if (isnan(vals[i])) continue;
      st->agg_sum[i] += vals[i];
      st->agg_cnt[i] += 1;
    }
    return MD_OK;
  }
  if (st->nseries >= SEED_MAX_TREND_SERIES) {
    st->too_many = true;
    return MD_ELIMIT;
  }
  trend_series_t *t = &st->series[st->nseries];
  t->vals = malloc(st->nsteps * sizeof *t->vals);
  sb_reset(&st->sb);
  seed_json_labels(&st->sb, l, nl, NULL, NULL);
  t->labels = st->sb.oom ? NULL : strdup(st->sb.buf);
  if (!t->vals || !t->labels) {
    free(t->vals);
    free(t->labels);
    return MD_ENOMEM;
  }
  st->nseries++;
  step_values(st, ts, v, ns, t->vals);
  return MD_OK;
}

/* Writes the trend fields of one series of per-step values (NaN = empty step). */
static void trend_body(sb_t *b, const double *vals, size_t nsteps, int64_t start, int64_t step,
                       size_t horizon) {
  size_t n = 0, first = SIZE_MAX, last = 0;
  for (size_t i = 0; i < nsteps; i++)
    if (!isnan(vals[i])) {
      n++;
      if (first == SIZE_MAX) first = i;
      last = i;
    }
  double *x = malloc((n ? n : 1) * sizeof *x), *y = malloc((n ? n : 1) * sizeof *y);
  size_t span = n ? last - first + 1 : 0;
  double *dense = malloc((span ? span : 1) * sizeof *dense);
  analytics_forecast_point_t *fc = malloc((horizon ? horizon : 1) * sizeof *fc);
  if (!x || !y || !dense || !fc) {
    b->oom = true;
    goto out;
  }
  size_t k = 0;
  for (size_t i = 0; i < nsteps; i++)
    if (!isnan(vals[i])) {
      x[k] = (double)((int64_t)i * step) / 3600000.0; /* hours since start */
      y[k++] = vals[i];
    }
  analytics_mk_t mk;
  bool have_mk = n >= 3 && analytics_mann_kendall(x, y, n, &mk) == MD_OK;
  sb_printf(b, ",\"trend\":\"%s\"", have_mk ? analytics_trend_name(mk.trend) : "stable");
  double cp = n ? analytics_change_percent(y[0], y[n - 1]) : NAN;
  if (isfinite(cp)) cp = round(cp * 100.0) / 100.0;
  sb_puts(b, ",\"change_percent\":");
  seed_json_num(b, cp);
  sb_puts(b, ",\"data_points\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(b, ',');
    sb_puts(b, "{\"timestamp\":");
    seed_json_time(b, start + (int64_t)llround(x[i] * 3600000.0));
    sb_puts(b, ",\"value\":");
    seed_json_num(b, y[i]);
    sb_putc(b, '}');
  }
  sb_puts(b, "],\"slope_per_hour\":");
  seed_json_num(b, have_mk ? mk.sen_slope : NAN);
  sb_puts(b, ",\"confidence\":");
  seed_json_num(b, have_mk ? 1.0 - mk.p_value : NAN);
  sb_puts(b, ",\"p_value\":");
  seed_json_num(b, have_mk ? mk.p_value : NAN);
  sb_printf(b, ",\"significance\":%g,\"test\":\"mann_kendall\"", ANALYTICS_TREND_ALPHA);
  if (have_mk) {
    sb_puts(b, ",\"serial_correlation\":{\"lag1\":");
    seed_json_num(b, mk.lag1_rho);
    sb_puts(b, ",\"variance_factor\":");
    seed_json_num(b, mk.var_factor);
    sb_putc(b, '}');
  }
  analytics_linreg_t lr;
  if (n >= 3 && analytics_linreg(x, y, n, 0.95, &lr) == MD_OK) {
    sb_puts(b, ",\"regression\":{\"slope_per_hour\":");
    seed_json_num(b, lr.slope);
    sb_puts(b, ",\"slope_lower\":");
    seed_json_num(b, lr.slope_lo);
    sb_puts(b, ",\"slope_upper\":");
    seed_json_num(b, lr.slope_hi);
    sb_puts(b, ",\"r2\":");
    seed_json_num(b, lr.r2);
    sb_puts(b, "}");
  }

  /* Forecast on the gap-free stretch from the first to the last non-empty step; empty
   * steps inside it are filled by linear interpolation (the models need even spacing). */
  sb_puts(b, ",\"forecast\":");
  if (span < 3 || horizon == 0) {
    sb_puts(b, "null");
    goto out;
  }
  for (size_t i = 0, prev = first; i < span; i++) {
    size_t s = first + i;
    if (!isnan(vals[s])) {
      dense[i] = vals[s];
      prev = s;
      continue;
    }
    size_t nx = s + 1;
    while (isnan(vals[nx])) nx++;
    double f = (double)(s - prev) / (double)(nx - prev);
    dense[i] = vals[prev] + f * (vals[nx] - vals[prev]);
  }
  size_t period = 0;
  if (86400000 % step == 0 && 86400000 / step >= 2) period = (size_t)(86400000 / step);
  analytics_fit_t fit;
  if (analytics_forecast_auto(dense, span, period, horizon, 0.95, fc, &fit) != MD_OK) {
    sb_puts(b, "null");
    goto out;
  }
  sb_printf(b, "{\"model\":\"%s\",\"confidence_level\":0.95,\"rmse\":", analytics_model_name(fit.model));
  seed_json_num(b, fit.rmse);
  if (fit.model == ANALYTICS_MODEL_HOLT_WINTERS)
    sb_printf(b, ",\"season_steps\":%zu,\"alpha\":%g,\"beta\":%g,\"gamma\":%g", fit.period, fit.alpha,
              fit.beta, fit.gamma);
  sb_puts(b, ",\"points\":[");
  for (size_t h = 0; h < horizon; h++) {
    if (h) sb_putc(b, ',');
    sb_puts(b, "{\"timestamp\":");
    seed_json_time(b, start + (int64_t)(last + 1 + h) * step);
    sb_puts(b, ",\"value\":");
    seed_json_num(b, fc[h].value);
    sb_puts(b, ",\"lower\":");
    seed_json_num(b, fc[h].lower);
    sb_puts(b, ",\"upper\":");
    seed_json_num(b, fc[h].upper);
    sb_putc(b, '}');
  }
  sb_puts(b, "]}");
out:
  free(x);
  free(y);
  free(dense);
  free(fc);
}

static int trend_scan_init(trend_scan_t *st, int64_t start, int64_t step, size_t nsteps, int aggregate,
                           bool counter) {
  memset(st, 0, sizeof *st);
  st->start = start;
  st->step = step;
  st->nsteps = nsteps;
  st->aggregate = aggregate;
  st->counter = counter;
  st->tmp_sum = malloc(3 * nsteps * sizeof *st->tmp_sum);
  st->tmp_cnt = malloc(nsteps * sizeof *st->tmp_cnt);
  st->agg_sum = calloc(nsteps, sizeof *st->agg_sum);
  st->agg_cnt = calloc(nsteps, sizeof *st->agg_cnt);
  st->series = aggregate ? NULL : calloc(SEED_MAX_TREND_SERIES, sizeof *st->series);
  if (!st->tmp_sum || !st->tmp_cnt || !st->agg_sum || !st->agg_cnt || (!aggregate && !st->series))
    return MD_ENOMEM;
  return MD_OK;
}

static void trend_scan_free(trend_scan_t *st) {
  for (size_t i = 0; i < st->nseries; i++) {
    free(st->series[i].vals);
    free(st->series[i].labels);
  }
  free(st->series);
  free(st->tmp_sum);
  free(st->tmp_cnt);
  free(st->agg_sum);
  free(st->agg_cnt);
  sb_free(&st->sb);
  memset(st, 0, sizeof *st);
}

static bool trend_scan_empty(const trend_scan_t *st) {
  if (!st->aggregate) return st->nseries == 0;
  for (size_t i = 0; i < st->nsteps; i++)
    if (st->agg_cnt[i] > 0) return false;
  return true;
}

/* out = sum / count per step (rates of _sum over rates of _count): per matching label set,
 * or over the aggregated totals. out must be empty (freshly initialised). */
static int trend_pair_ratio(const trend_scan_t *sum, const trend_scan_t *cnt, trend_scan_t *out) {
  if (out->aggregate) {
    for (size_t i = 0; i < out->nsteps; i++) {
      bool ok = sum->agg_cnt[i] > 0 && cnt->agg_cnt[i] > 0 && cnt->agg_sum[i] > 0;
      out->agg_sum[i] = ok ? sum->agg_sum[i] / cnt->agg_sum[i] : 0;
      out->agg_cnt[i] = ok ? 1 : 0;
    }
    return MD_OK;
  }
  for (size_t i = 0; i < sum->nseries; i++) {
    const trend_series_t *c = NULL;
    for (size_t j = 0; j < cnt->nseries && !c; j++)
      if (strcmp(cnt->series[j].labels, sum->series[i].labels) == 0) c = &cnt->series[j];
    if (!c) continue;
    trend_series_t *t = &out->series[out->nseries];
    t->vals = malloc(out->nsteps * sizeof *t->vals);
    t->labels = strdup(sum->series[i].labels);
    if (!t->vals || !t->labels) {
      free(t->vals);
      free(t->labels);
      return MD_ENOMEM;
    }
    out->nseries++;
    for (size_t k = 0; k < out->nsteps; k++) {
      double a = sum->series[i].vals[k], b = c->vals[k];
      t->vals[k] = (!isnan(a) && !isnan(b) && b > 0) ? a / b : NAN;
    }
  }
  return MD_OK;
}

static void handle_trends(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  const config_t *cfg = api_config(api);
  const char *name = http_req_param(req, "name");
  const char *tenant;
  if (!name || !*name || strlen(name) > 255) {
    http_resp_error(resp, 400, "a metric name is required: /metrics/trends/{name}");
    return;
  }
  for (const char *p = name; *p; p++)
    if (!seed_name_char(*p, true) || (p == name && !seed_name_start(*p, true))) {
      http_resp_error(resp, 400, "invalid metric name %s", name);
      return;
    }
  if (!seed_tenant(req, resp, &tenant)) return;
  double hours = cfg && cfg->aggregation.trend_hours > 0 ? (double)cfg->aggregation.trend_hours : 24.0;
  const char *hv = http_req_query(req, "hours");
  if (hv && *hv) {
    char *end;
    hours = strtod(hv, &end);
    if (*end || !(hours > 0) || hours > 24.0 * 3660) {
      http_resp_error(resp, 400, "hours must be a number above 0 (at most 87840), not %s", hv);
      return;
    }
  }
  int64_t step = 3600000, endt = md_now_ms();
  long horizon = 6;
  if (!parse_duration_param(req, resp, "step", &step) || !parse_time_param(req, resp, "end", &endt) ||
      !parse_int_param(req, resp, "forecast", 0, SEED_MAX_FORECAST, &horizon))
    return;
  if (step < 1000) {
    http_resp_error(resp, 400, "step must be at least 1s");
    return;
  }
  int64_t range = (int64_t)llround(hours * 3600000.0);
  size_t nsteps = (size_t)((range + step - 1) / step);
  if (nsteps > SEED_MAX_TREND_STEPS || nsteps == 0) {
    http_resp_error(resp, 400, "hours/step gives %zu steps; at most %d (raise step)", nsteps,
                    SEED_MAX_TREND_STEPS);
    return;
  }
  int aggregate = 0;
  const char *ag = http_req_query(req, "aggregate");
  if (ag && *ag) {
    if (strcmp(ag, "sum") == 0) aggregate = 1;
    else if (strcmp(ag, "avg") == 0) aggregate = 2;
    else {
      http_resp_error(resp, 400, "aggregate must be sum or avg, not %s", ag);
      return;
    }
  }
  const char *type = http_req_query(req, "type");
  if (type && *type && strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0) {
    http_resp_error(resp, 400, "type must be counter or gauge, not %s", type);
    return;
  }

  arena_t *a = http_req_arena(req);
  seed_selector_t sel[SEED_MAX_SELECTORS];
  size_t nsel = 0;
  if (!seed_selectors(req, resp, a, name, sel, &nsel)) return;
  json_t *types = tracked_types(api, tenant);
  int64_t start = endt - (int64_t)nsteps * step;
  trend_scan_t st, ssum, scnt;
  bool counter = type && *type ? strcmp(type, "counter") == 0 : seed_counter_like(types, name);
  const char *value_type = counter ? "rate_per_second" : "average";
  char err[256] = "";
  int rc = trend_scan_init(&st, start, step, nsteps, aggregate, counter);
  int rc2 = trend_scan_init(&ssum, start, step, nsteps, aggregate ? 1 : 0, true);
  int rc3 = trend_scan_init(&scnt, start, step, nsteps, aggregate ? 1 : 0, true);
  if (!rc) rc = rc2 ? rc2 : rc3;
  if (!rc) rc = seed_scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &st, err, sizeof err);
  seed_selector_release(sel, nsel);
  nsel = 0;
  size_t len = strlen(name);
  /* A histogram or summary by its family name: trend its average observation per step,
   * Δ<name>_sum / Δ<name>_count, paired by label set. */
  if (rc == MD_OK && trend_scan_empty(&st) && !(type && *type) && !seed_ends_with(name, len, "_sum") &&
      !seed_ends_with(name, len, "_count") && !seed_ends_with(name, len, "_bucket")) {
    char part[300];
    snprintf(part, sizeof part, "%s_sum", name);
    if (!seed_selectors(req, resp, a, part, sel, &nsel)) goto out;
    rc = seed_scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &ssum, err, sizeof err);
    seed_selector_release(sel, nsel);
    snprintf(part, sizeof part, "%s_count", name);
    if (!rc && !seed_selectors(req, resp, a, part, sel, &nsel)) goto out;
    if (!rc) rc = seed_scan(api_db(api), tenant, sel, nsel, start - step, endt, trend_collect, &scnt, err, sizeof err);
    seed_selector_release(sel, nsel);
    if (!rc) rc = trend_pair_ratio(&ssum, &scnt, &st);
    value_type = "average_per_observation";
  }
  sb_t *body = http_resp_body(resp);
  size_t ntrends = aggregate ? 1 : st.nseries;
  if (st.too_many || ssum.too_many || scnt.too_many) {
    http_resp_error(resp, 400,
                    "more than %d series match %s: narrow them with match[] or combine them with "
                    "aggregate=sum|avg", SEED_MAX_TREND_SERIES, name);
  } else if (rc) {
    if (!*err) md_error(err, sizeof err, rc, "out of memory");
    http_resp_error(resp, rc == MD_EINVAL ? 400 : 500, "%s", err);
  } else if (trend_scan_empty(&st)) {
    http_resp_error(resp, 404, "no data for metric %s in the last %g hours", name, hours);
  } else if ((double)ntrends * (double)nsteps * (double)nsteps > SEED_MAX_TREND_WORK) {
    http_resp_error(resp, 400,
                    "%zu trends of %zu steps each are too costly to test (pairwise comparisons): "
                    "raise step, shorten hours, narrow with match[] or combine with aggregate=sum|avg",
                    ntrends, nsteps);
  } else {
    sb_puts(body, "{\"metric_name\":");
    sb_json_str(body, name, strlen(name));
    sb_printf(body, ",\"hours\":%g,\"step_seconds\":%g,\"value_type\":\"%s\"", hours,
              (double)step / 1000.0, value_type);
    if (aggregate) {
      for (size_t i = 0; i < nsteps; i++)
        st.agg_sum[i] = st.agg_cnt[i] > 0 ? (aggregate == 2 ? st.agg_sum[i] / st.agg_cnt[i] : st.agg_sum[i]) : NAN;
      sb_printf(body, ",\"aggregate\":\"%s\"", aggregate == 1 ? "sum" : "avg");
      trend_body(body, st.agg_sum, nsteps, start, step, (size_t)horizon);
    } else if (st.nseries == 1) {
      sb_puts(body, ",\"labels\":");
      sb_puts(body, st.series[0].labels);
      trend_body(body, st.series[0].vals, nsteps, start, step, (size_t)horizon);
    } else {
      sb_printf(body, ",\"series_count\":%zu,\"trends\":[", st.nseries);
      for (size_t i = 0; i < st.nseries; i++) {
        sb_puts(body, i ? ",{\"labels\":" : "{\"labels\":");
        sb_puts(body, st.series[i].labels);
        trend_body(body, st.series[i].vals, nsteps, start, step, (size_t)horizon);
        sb_putc(body, '}');
      }
      sb_putc(body, ']');
    }
    sb_puts(body, ",\"timestamp\":");
    seed_json_time(body, endt);
    sb_putc(body, '}');
    if (body->oom) {
      sb_reset(body);
      http_resp_error(resp, 500, "out of memory");
    }
  }
out:
  trend_scan_free(&st);
  trend_scan_free(&ssum);
  trend_scan_free(&scnt);
  json_decref(types);
}

/* ---- registration ------------------------------------------------------------------- */

void api_register_seed(api_t *api, http_router_t *r) {
  const config_t *cfg = api_config(api);
  if (!cfg || cfg->server.prometheus_enabled)
    http_route_add(r, "GET", "/metrics", HTTP_ROLE_READ, 0, handle_export, api);
  http_route_add(r, "GET", "/metrics/series", HTTP_ROLE_READ, 0, handle_series, api);
  http_route_add(r, "GET", "/metrics/trends/{name}", HTTP_ROLE_READ, 0, handle_trends, api);
}
