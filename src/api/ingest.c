/*
 * api/ingest.c — the HTTP face of src/ingest: every push endpoint (SPEC §1), the JSON lines
 * export, the track registry's lifecycle (flush into storage every track.flush_interval and
 * at shutdown) and the optional StatsD UDP listener.
 *
 * Every push handler does the same four steps: parse the (already Content-Encoding-decoded)
 * body into a batch with the configured limits, append the batch for the request's tenant,
 * count what was stored and what was rejected (self-metrics by protocol and reason), and
 * answer in the protocol's own way:
 *
 *   status  when
 *   2xx     everything parsed and stored (204 for write protocols, seed JSON for track)
 *   400     some or all input was bad, or storage refused samples (too old, conflicting
 *           duplicates, series over the tenant's limit): the good part IS stored; the body
 *           names the first problems with line numbers / item indexes. Not retryable.
 *   413     more samples in one request than limits.max_samples_per_request (nothing
 *           stored; the server itself answers 413 for bodies over max_body_bytes)
 *   429     over limits.max_concurrent_inserts (the server answers, with Retry-After) or,
 *           for the track API, a tenant at its tracked-series limit
 *   503     the WAL cannot be written (disk full, I/O error): nothing stored, Retry-After
 *
 * Threading: handlers run concurrently on HTTP worker threads; the ingest state is created
 * in api_register_ingest and is read-only afterwards except for the limits (replaced on
 * reload under mu, copied per request), the track registry (its own mutex) and the
 * flusher/StatsD threads, which only read it and stop on `stop` (under mu).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <unistd.h>

#include "api/api.h"
#include "api/params.h"
#include "ingest/ingest.h"

#define MAX_EXTRA_LABELS 32

typedef struct ingest_state {
  api_t *api;
  ingest_track_t *track;
  ingest_refcache_t *cache; /* series-ref cache of the push endpoints (NULL: off) */
  ingest_limits_t limits;
  int64_t flush_interval_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  bool flusher_running;
  pthread_t flusher;
  /* StatsD */
  int statsd_fd;
  bool statsd_running;
  pthread_t statsd_thread;
  char *statsd_tenant;
} ingest_state_t;

static ingest_state_t *state_of(api_t *api) {
  return api_slot(api, "ingest");
}

/* ---- self-metrics ---------------------------------------------------------------------- */

/* Seed 004's self-metrics (registered by server.c with these help texts): every sample a
 * push stores and every track event counts as "collected"; every refusal as an error. */
static void count_collected(api_t *api, double n) {
  if (n > 0)
    metrics_counter_add(
        metrics_counter(api_metrics(api), "metrics_collected_total", "Total metrics collected.", NULL), n);
}

static void count_samples(api_t *api, const char *protocol, double n) {
  metrics_counter_add(metrics_counter(api_metrics(api), "metricsd_ingest_samples_total",
                                      "Samples stored by the push endpoints, by protocol.", "protocol",
                                      protocol, NULL),
                      n);
  if (strcmp(protocol, "track_flush") != 0) count_collected(api, n); /* flushes were counted as events */
}

static void count_rejected(api_t *api, const char *protocol, const char *reason, double n) {
  if (n <= 0) return;
  metrics_counter_add(
      metrics_counter(api_metrics(api), "metrics_errors_total", "Total collection errors.", NULL), n);
  metrics_counter_add(
      metrics_counter(api_metrics(api), "metricsd_ingest_rejected_total",
                      "Lines, items, series or samples refused by the push endpoints, by protocol "
                      "and reason.",
                      "protocol", protocol, "reason", reason, NULL),
      n);
}

static void count_request(api_t *api, const char *protocol, const char *outcome) {
  metrics_counter_inc(metrics_counter(api_metrics(api), "metricsd_ingest_requests_total",
                                      "Push requests by protocol and outcome.", "protocol", protocol,
                                      "outcome", outcome, NULL));
}

/* ---- answering -------------------------------------------------------------------------- */

typedef enum { STYLE_PROM, STYLE_INFLUX, STYLE_REST, STYLE_OTLP } err_style_t;

static void answer_error(http_resp_t *resp, err_style_t style, int status, const char *msg) {
  switch (style) {
  case STYLE_PROM: {
    const char *type = status == 503 ? "unavailable" : status >= 500 ? "internal" : "bad_data";
    http_resp_prom_error(resp, status, type, "%s", msg);
    break;
  }
  case STYLE_INFLUX: {
    sb_t b = {0};
    sb_printf(&b, "{\"code\":\"%s\",\"message\":",
              status == 413   ? "request too large"
              : status >= 500 ? "internal error"
              : status == 429 ? "too many requests"
                              : "invalid");
    sb_json_str(&b, msg, strlen(msg));
    sb_putc(&b, '}');
    http_resp_send(resp, status, "application/json", b.buf, b.len);
    sb_free(&b);
    break;
  }
  case STYLE_REST:
  case STYLE_OTLP:
    http_resp_error(resp, status, "%s", msg);
    break;
  }
  if (status == 503) http_resp_retry_after(resp, 5);
  if (status == 429) http_resp_retry_after(resp, 1);
}

static const char *reject_reason(tsdb_reject_t r) {
  switch (r) {
  case TSDB_REJECT_TOO_OLD:
    return "too_old";
  case TSDB_REJECT_DUPLICATE:
    return "duplicate";
  case TSDB_REJECT_SERIES_LIMIT:
    return "series_limit";
  case TSDB_REJECT_INVALID:
    return "invalid";
  default:
    return "other";
  }
}

/*
 * Counts what storage refused, by reason. Series-level refusals (series_limit, invalid) count
 * series, sample-level ones (too_old, duplicate) count samples, so a cardinality burst reads
 * as the number of series it tried to create. tsdb reports at most TSDB_MAX_REPORTED_ERRORS
 * problems but counts all of them: the series total is exact and its unreported rest goes
 * to the last reported series reason; the sample total is exact when nothing was cut off,
 * else the rest (samples_rejected minus those of rejected series, estimated from the
 * reported ones) goes to the last reported sample reason.
 */
static void count_storage_rejects(api_t *api, const char *protocol, const tsdb_batch_t *b,
                                  const tsdb_append_result_t *ar) {
  double by_reason[TSDB_REJECT_INVALID + 1] = {0};
  size_t nrep = ar->nerrors < TSDB_MAX_REPORTED_ERRORS ? ar->nerrors : TSDB_MAX_REPORTED_ERRORS;
  size_t series_rep = 0, sample_rep = 0, series_samples = 0;
  tsdb_reject_t last_series = TSDB_REJECT_SERIES_LIMIT, last_sample = TSDB_REJECT_TOO_OLD;
  for (size_t i = 0; i < nrep; i++) {
    tsdb_reject_t r = ar->errors[i].reason;
    if (r > TSDB_REJECT_INVALID) r = TSDB_REJECT_NONE;
    by_reason[r] += 1;
    if (r == TSDB_REJECT_SERIES_LIMIT || r == TSDB_REJECT_INVALID) {
      size_t nsm = 0;
      if (ar->errors[i].series_index < tsdb_batch_series_count(b))
        tsdb_batch_get(b, ar->errors[i].series_index, NULL, NULL, NULL, &nsm);
      series_samples += nsm;
      series_rep++;
      last_series = r;
    } else {
      sample_rep++;
      last_sample = r;
    }
  }
  if (ar->series_rejected > series_rep) {
    size_t rest = ar->series_rejected - series_rep;
    by_reason[last_series] += (double)rest;
    if (series_rep) series_samples += series_samples / series_rep * rest;
  }
  size_t sample_total = ar->samples_rejected > series_samples ? ar->samples_rejected - series_samples : 0;
  if (ar->nerrors >= TSDB_MAX_REPORTED_ERRORS && sample_total > sample_rep)
    by_reason[last_sample] += (double)(sample_total - sample_rep);
  for (int r = 0; r <= TSDB_REJECT_INVALID; r++)
    count_rejected(api, protocol, r == TSDB_REJECT_NONE ? "storage_other" : reject_reason((tsdb_reject_t)r),
                   by_reason[r]);
}

/* Parses extra_label=name=value query parameters (VictoriaMetrics style). */
static int extra_labels(http_req_t *req, tsdb_label_t *out, size_t *n, char *err, size_t errlen) {
  const char *const *vals;
  size_t nv = http_req_query_all(req, "extra_label", &vals);
  *n = 0;
  if (nv > MAX_EXTRA_LABELS)
    return md_error(err, errlen, MD_EINVAL, "more than %d extra_label parameters", MAX_EXTRA_LABELS);
  arena_t *a = http_req_arena(req);
  for (size_t i = 0; i < nv; i++) {
    const char *eq = strchr(vals[i], '=');
    if (!eq || eq == vals[i] || !eq[1] || !ingest_valid_label_name(vals[i], (size_t)(eq - vals[i])) ||
        !ingest_valid_utf8(eq + 1, strlen(eq + 1)))
      return md_error(err, errlen, MD_EINVAL, "invalid extra_label \"%.64s\" (want name=value)", vals[i]);
    char *name = arena_strndup(a, vals[i], (size_t)(eq - vals[i]));
    if (!name) return MD_ENOMEM;
    if (strcmp(name, "__name__") == 0)
      return md_error(err, errlen, MD_EINVAL, "extra_label cannot set __name__");
    out[(*n)++] = (tsdb_label_t){name, eq + 1};
  }
  return 0;
}

/* Copies the current limits (a reload may change them: st->mu guards st->limits). */
static void current_limits(ingest_state_t *st, ingest_limits_t *out) {
  pthread_mutex_lock(&st->mu);
  *out = st->limits;
  pthread_mutex_unlock(&st->mu);
}

/*
 * The shared tail of every push handler: given the parse outcome and the batch, append and
 * answer. Returns the HTTP status chosen (0 = success; the caller writes its own 2xx).
 */
static int finish_push(api_t *api, http_req_t *req, http_resp_t *resp, const char *protocol,
                       err_style_t style, const char *what, int prc, const ingest_result_t *pres,
                       tsdb_batch_t *b, int arc, const tsdb_append_result_t *arp) {
  sb_t msg = {0};
  int status = 0;
  if (prc == MD_ENOMEM) {
    count_request(api, protocol, "error");
    answer_error(resp, style, 500, "out of memory while parsing the request");
    return 500;
  }
  if (prc == MD_ELIMIT) {
    char m[160];
    ingest_limits_t lim;
    current_limits(state_of(api), &lim);
    snprintf(m, sizeof m, "request has more than %zu samples (limits.max_samples_per_request); split it",
             lim.max_samples_per_request);
    count_rejected(api, protocol, "samples_per_request", 1);
    count_request(api, protocol, "too_large");
    answer_error(resp, style, 413, m);
    return 413;
  }
  const tsdb_append_result_t ar = *arp;
  if (arc) {
    if (arc == MD_ENOSPC || arc == MD_EIO) {
      count_rejected(api, protocol, "storage", (double)tsdb_batch_sample_count(b));
      count_request(api, protocol, "unavailable");
      answer_error(resp, style, 503,
                   arc == MD_ENOSPC ? "storage is full: nothing of this request was stored; retry later"
                                    : "storage I/O error: nothing of this request was stored; retry later");
      return 503;
    }
    if (arc != 0) {
      count_request(api, protocol, "error");
      answer_error(resp, style, 500, "storage refused the request");
      return 500;
    }
  }
  count_samples(api, protocol, (double)ar.samples_added);
  count_rejected(api, protocol, "parse", (double)pres->rejected);
  if (pres->rejected) {
    ingest_result_message(pres, what, &msg);
    if (log_enabled(LOG_DEBUG))
      log_write(LOG_DEBUG, http_req_id(req), NULL, "%s: rejected input: %s", protocol,
                msg.buf ? msg.buf : "");
  }
  size_t stored_rejects = ar.samples_rejected + ar.series_rejected;
  if (stored_rejects) {
    count_storage_rejects(api, protocol, b, &ar);
    if (msg.len) sb_puts(&msg, "; ");
    sb_printf(&msg, "storage rejected %zu samples and %zu series", ar.samples_rejected, ar.series_rejected);
    for (size_t i = 0; i < ar.nerrors && i < 3; i++)
      sb_printf(&msg, "%s%s", i ? "; " : ": ", ar.errors[i].message);
  }
  if (pres->rejected || stored_rejects) {
    char head[128];
    snprintf(head, sizeof head, "stored %zu samples; ", ar.samples_added);
    sb_t full = {0};
    sb_puts(&full, style == STYLE_INFLUX ? "partial write: " : "");
    sb_puts(&full, head);
    sb_append(&full, msg.buf ? msg.buf : "", msg.len);
    count_request(api, protocol, "partial");
    answer_error(resp, style, 400, full.buf ? full.buf : "bad request");
    sb_free(&full);
    status = 400;
  } else {
    count_request(api, protocol, "ok");
  }
  sb_free(&msg);
  return status;
}

static void init_opts(api_t *api, ingest_opts_t *o, ingest_limits_t *lim) {
  memset(o, 0, sizeof *o);
  current_limits(state_of(api), lim);
  o->limits = lim;
  o->default_ts = md_now_ms();
}

/* ---- per-thread batches ------------------------------------------------------------------ */

/* Each HTTP worker thread keeps its last batch (emptied, memory kept) for its next request:
 * a push builds a batch of a few MB, and allocating it afresh every time cost page faults
 * worth ~10 % of the CPU of an import (glibc hands big blocks back to the kernel on free).
 * A batch that held more than BATCH_KEEP_SAMPLES samples is freed instead, so an idle
 * connection never pins a huge one. The thread's batch is freed when the thread ends. */
#define BATCH_KEEP_SAMPLES 262144

static pthread_key_t batch_key;
static bool batch_key_ok;
static pthread_once_t batch_once = PTHREAD_ONCE_INIT;

static void batch_key_free(void *p) {
  tsdb_batch_free(p);
}

static void batch_key_init(void) {
  batch_key_ok = pthread_key_create(&batch_key, batch_key_free) == 0;
}

static tsdb_batch_t *batch_get(void) {
  pthread_once(&batch_once, batch_key_init);
  tsdb_batch_t *b = batch_key_ok ? pthread_getspecific(batch_key) : NULL;
  if (b && pthread_setspecific(batch_key, NULL) == 0) return b;
  return tsdb_batch_new();
}

static void batch_put(tsdb_batch_t *b) {
  if (!b) return;
  if (!batch_key_ok || tsdb_batch_sample_count(b) > BATCH_KEEP_SAMPLES || pthread_getspecific(batch_key)) {
    tsdb_batch_free(b);
    return;
  }
  tsdb_batch_reset(b);
  if (pthread_setspecific(batch_key, b) != 0) tsdb_batch_free(b);
}

/* The series cache's totals as self-metrics (set after each cached push). */
static void cache_metrics(api_t *api, ingest_refcache_t *c) {
  metrics_registry_t *r = api_metrics(api);
  ingest_refcache_stats_t s;
  ingest_refcache_stats(c, &s);
  metrics_counter_raise_to(metrics_counter(r, "metricsd_ingest_series_cache_hits_total",
                                           "Series of push requests the series cache knew (added by ref).",
                                           NULL),
                           (double)s.hits);
  metrics_counter_raise_to(
      metrics_counter(r, "metricsd_ingest_series_cache_misses_total",
                      "Series of push requests the series cache did not know (built from labels).", NULL),
      (double)s.misses);
  metrics_counter_raise_to(metrics_counter(r, "metricsd_ingest_series_cache_stale_total",
                                           "Cached series refs storage no longer knew (resent with labels).",
                                           NULL),
                           (double)s.stale);
  metrics_gauge_set(
      metrics_gauge(r, "metricsd_ingest_series_cache_entries", "Series in the series cache.", NULL),
      (double)s.entries);
  metrics_gauge_set(metrics_gauge(r, "metricsd_ingest_series_cache_bytes", "Memory of the series cache's tables.",
                                  NULL),
                    (double)s.bytes);
}

/* Parses body with parse (through the series-ref cache when cached), appends and answers.
 * skipped_reason counts what the parser skipped (res.skipped) as rejected for that reason.
 * Returns the HTTP status chosen (0 = success; the caller writes its own 2xx). */
static int push(api_t *api, http_req_t *req, http_resp_t *resp, const char *protocol, err_style_t style,
                const char *what, ingest_parse_fn parse, const char *body, size_t n, const ingest_opts_t *o,
                bool cached, const char *skipped_reason) {
  tsdb_batch_t *b = batch_get();
  if (!b) {
    answer_error(resp, style, 500, "out of memory");
    return 500;
  }
  ingest_state_t *st = state_of(api);
  ingest_push_t in = {api_db(api), http_req_tenant(req), cached && st ? st->cache : NULL, protocol, parse, body,
                      n, o, b};
  ingest_result_t res;
  tsdb_append_result_t ar;
  int arc;
  int prc = ingest_push(&in, &res, &ar, &arc);
  if (in.cache) cache_metrics(api, in.cache);
  if (res.skipped && skipped_reason) count_rejected(api, protocol, skipped_reason, (double)res.skipped);
  int status = finish_push(api, req, resp, protocol, style, what, prc, &res, b, arc, &ar);
  batch_put(b);
  return status;
}

/* ---- handlers --------------------------------------------------------------------------- */

static void h_import_prometheus(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t n;
  const char *body = http_req_body(req, &n);
  ingest_opts_t o;
  ingest_limits_t lim;
  init_opts(api, &o, &lim);
  tsdb_label_t extra[MAX_EXTRA_LABELS];
  char err[200];
  if (extra_labels(req, extra, &o.n_extra_labels, err, sizeof err)) {
    answer_error(resp, STYLE_PROM, 400, err);
    return;
  }
  o.extra_labels = extra;
  const char *ts = http_req_query(req, "timestamp");
  if (ts && *ts) {
    int64_t ms;
    if (md_parse_time(ts, strlen(ts), &ms)) {
      answer_error(resp, STYLE_PROM, 400, "invalid parameter \"timestamp\"");
      return;
    }
    o.default_ts = ms;
  }
  const char *ct = http_req_content_type(req);
  o.openmetrics = strcmp(ct, "application/openmetrics-text") == 0 || ingest_text_is_openmetrics(body, n);
  if (push(api, req, resp, "prometheus", STYLE_PROM, "line", ingest_parse_prometheus, body, n, &o, true, NULL) == 0)
    http_resp_status(resp, 204);
}

static void h_influx(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t n;
  const char *body = http_req_body(req, &n);
  ingest_opts_t o;
  ingest_limits_t lim;
  init_opts(api, &o, &lim);
  const char *prec = http_req_query(req, "precision");
  if (prec && *prec && ingest_precision_parse(prec, strlen(prec), &o.precision)) {
    answer_error(resp, STYLE_INFLUX, 400, "invalid precision (want ns, u, us, ms, s, m or h)");
    return;
  }
  const char *db = http_req_query(req, "db");
  if (!db || !*db) db = http_req_query(req, "bucket");
  o.influx_db = db && *db ? db : NULL;
  if (o.influx_db && !ingest_valid_utf8(o.influx_db, strlen(o.influx_db))) {
    answer_error(resp, STYLE_INFLUX, 400, "db/bucket is not valid UTF-8");
    return;
  }
  tsdb_label_t extra[MAX_EXTRA_LABELS];
  char err[200];
  if (extra_labels(req, extra, &o.n_extra_labels, err, sizeof err)) {
    answer_error(resp, STYLE_INFLUX, 400, err);
    return;
  }
  o.extra_labels = extra;
  if (push(api, req, resp, "influx", STYLE_INFLUX, "line", ingest_parse_influx, body, n, &o, true, "string_field") == 0)
    http_resp_status(resp, 204);
}

static void h_remote_write(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t n;
  const char *body = http_req_body(req, &n); /* raw: snappy is part of the protocol */
  const char *enc = http_req_header(req, "Content-Encoding");
  if (enc && *enc && strcasecmp(enc, "snappy") != 0 && strcasecmp(enc, "identity") != 0) {
    answer_error(resp, STYLE_PROM, 415,
                 "remote_write 1.0 bodies are snappy block-compressed (Content-Encoding: snappy)");
    return;
  }
  ingest_opts_t o;
  ingest_limits_t lim;
  init_opts(api, &o, &lim);
  if (push(api, req, resp, "remote_write", STYLE_PROM, "timeseries", ingest_parse_remote_write, body, n, &o, true,
           "unsupported_exemplar_or_histogram") == 0)
    http_resp_status(resp, 204);
}

static void h_import_jsonl(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t n;
  const char *body = http_req_body(req, &n);
  ingest_opts_t o;
  ingest_limits_t lim;
  init_opts(api, &o, &lim);
  tsdb_label_t extra[MAX_EXTRA_LABELS];
  char err[200];
  if (extra_labels(req, extra, &o.n_extra_labels, err, sizeof err)) {
    answer_error(resp, STYLE_PROM, 400, err);
    return;
  }
  o.extra_labels = extra;
  if (push(api, req, resp, "jsonl", STYLE_PROM, "line", ingest_parse_jsonl, body, n, &o, false, NULL) == 0)
    http_resp_status(resp, 204);
}

/* OTLP answers 200 with an ExportMetricsServiceResponse; a partial success carries the
 * count of rejected points (field 1: partial_success {1: rejected_data_points, 2: message}). */
static void otlp_success(http_resp_t *resp, bool json) {
  if (json)
    http_resp_send(resp, 200, "application/json", "{}", 2);
  else
    http_resp_send(resp, 200, "application/x-protobuf", "", 0);
}

static int parse_otlp_pb(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  return ingest_parse_otlp_pb((const uint8_t *)p, n, o, b, res);
}

static void h_otlp(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  size_t n;
  const char *body = http_req_body(req, &n);
  const char *ct = http_req_content_type(req);
  bool json = strcmp(ct, "application/json") == 0;
  if (!json && *ct && strcmp(ct, "application/x-protobuf") != 0 && strcmp(ct, "application/protobuf") != 0) {
    answer_error(resp, STYLE_OTLP, 415,
                 "OTLP/HTTP wants Content-Type application/x-protobuf or application/json");
    return;
  }
  ingest_opts_t o;
  ingest_limits_t lim;
  init_opts(api, &o, &lim);
  if (push(api, req, resp, "otlp", STYLE_OTLP, "metric", json ? ingest_parse_otlp_json : parse_otlp_pb, body, n,
           &o, false, "exponential_histogram") == 0)
    otlp_success(resp, json);
}

static void h_track(http_req_t *req, http_resp_t *resp, void *ctx, bool batch) {
  api_t *api = ctx;
  ingest_state_t *st = state_of(api);
  size_t n;
  const char *body = http_req_body(req, &n);
  /* A key or an X-Scope-OrgID header fixes the tenant; otherwise the body's tenant_id. */
  bool allow_body = !http_req_tenant_fixed(req) && !http_req_header(req, "X-Scope-OrgID");
  sb_t *out = http_resp_body(resp);
  size_t ok = 0, failed = 0;
  int rc = ingest_track_json(st->track, body, n, batch, http_req_tenant(req), allow_body, md_now_ms(), out,
                             &ok, &failed);
  const char *proto = batch ? "track_batch" : "track";
  count_collected(api, (double)ok);
  count_rejected(api, proto, rc == MD_ELIMIT ? "series_limit" : "invalid", (double)failed);
  http_resp_content_type(resp, "application/json");
  if (rc == 0) {
    count_request(api, proto, failed ? "partial" : "ok");
    http_resp_status(resp, 200);
  } else if (rc == MD_ELIMIT) {
    count_request(api, proto, "limited");
    http_resp_status(resp, 429);
    http_resp_retry_after(resp, 1);
  } else if (rc == MD_ENOMEM) {
    count_request(api, proto, "error");
    http_resp_error(resp, 500, "out of memory");
  } else {
    count_request(api, proto, "invalid");
    http_resp_status(resp, 400);
  }
  if (failed && log_enabled(LOG_DEBUG))
    log_write(LOG_DEBUG, http_req_id(req), NULL, "%s: %zu events rejected: %s", proto, failed,
              out->buf ? out->buf : "");
}

static void h_track_one(http_req_t *req, http_resp_t *resp, void *ctx) {
  h_track(req, resp, ctx, false);
}
static void h_track_batch(http_req_t *req, http_resp_t *resp, void *ctx) {
  h_track(req, resp, ctx, true);
}

static void h_export(http_req_t *req, http_resp_t *resp, void *ctx) {
  api_t *api = ctx;
  char err[256];
  api_selector_t sel[64];
  int ns = api_parse_match_params(req, sel, 64, err, sizeof err);
  if (ns < 0) {
    http_resp_prom_error(resp, 400, "bad_data", "%s", err);
    return;
  }
  if (ns == 0) {
    http_resp_prom_error(resp, 400, "bad_data", "missing match[] parameter (e.g. match[]={__name__!=\"\"})");
    return;
  }
  int64_t start, end;
  if (api_time_param(req, "start", API_MIN_TIME_MS, &start, err, sizeof err) ||
      api_time_param(req, "end", API_MAX_TIME_MS, &end, err, sizeof err)) {
    http_resp_prom_error(resp, 400, "bad_data", "%s", err);
    return;
  }
  sb_t *out = http_resp_body(resp);
  const char *tenant = http_req_tenant(req);
  for (int s = 0; s < ns; s++) {
    tsdb_query_t *q = NULL;
    int rc = tsdb_select(api_db(api), tenant, sel[s].m, sel[s].n, start, end, NULL, &q, err, sizeof err);
    if (rc) {
      http_resp_prom_error(resp, rc == MD_EINVAL ? 400 : 500, rc == MD_EINVAL ? "bad_data" : "internal", "%s",
                           err);
      return;
    }
    /* Several match[] may select one series twice; VictoriaMetrics does the same (union
     * per selector), and importing the result is idempotent. */
    rc = ingest_export_jsonl(q, out);
    tsdb_query_free(q);
    if (rc) {
      sb_reset(out);
      http_resp_prom_error(resp, 500, "internal", "export failed (%d)", rc);
      return;
    }
  }
  http_resp_content_type(resp, "application/x-ndjson");
  http_resp_status(resp, 200);
}

/* InfluxDB client compatibility: /ping and a /query that accepts CREATE DATABASE. */
static void h_ping(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  (void)ctx;
  http_resp_header(resp, "X-Influxdb-Version", "1.8-metricsd");
  http_resp_status(resp, 204);
}

static void h_influx_query(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)req;
  (void)ctx;
  static const char body[] = "{\"results\":[{\"statement_id\":0}]}";
  http_resp_send(resp, 200, "application/json", body, sizeof body - 1);
}

/* ---- track flusher ----------------------------------------------------------------------- */

static int flush_emit(void *ctx, const char *tenant, const tsdb_batch_t *b) {
  api_t *api = ctx;
  tsdb_append_result_t ar;
  int rc = tsdb_append(api_db(api), tenant, b, &ar);
  if (rc) {
    log_warn("track: flush of tenant %s failed (%d); the next flush retries", tenant, rc);
    return rc;
  }
  count_samples(api, "track_flush", (double)ar.samples_added);
  return 0;
}

static void flush_now(ingest_state_t *st) {
  int rc = ingest_track_collect(st->track, md_now_ms(), flush_emit, st->api);
  if (rc && rc != MD_ENOSPC && rc != MD_EIO) log_warn("track: flush failed (%d)", rc);
}

static void *flusher_main(void *arg) {
  ingest_state_t *st = arg;
  pthread_mutex_lock(&st->mu);
  while (!st->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (st->flush_interval_ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(st->flush_interval_ms / 1000) + (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    int w = 0;
    while (!st->stop && w != ETIMEDOUT)
      w = pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    if (st->stop) break;
    pthread_mutex_unlock(&st->mu);
    flush_now(st);
    pthread_mutex_lock(&st->mu);
  }
  pthread_mutex_unlock(&st->mu);
  return NULL;
}

/* ---- StatsD listener ---------------------------------------------------------------------- */

typedef struct {
  ingest_state_t *st;
} statsd_ctx_t;

/* StatsD event → track registry: c → counter (value / sample rate), g → gauge (relative
 * changes are not supported and refused), ms/h/d → histogram (ms converted to seconds), s →
 * refused. Names are sanitised; DogStatsD tags k:v become labels. */
static int statsd_event(void *ctx, const ingest_statsd_event_t *e) {
  ingest_state_t *st = ((statsd_ctx_t *)ctx)->st;
  if (e->type == INGEST_STATSD_SET || (e->type == INGEST_STATSD_GAUGE && e->relative)) return MD_EINVAL;
  char name[512];
  if (e->nlen + 2 > sizeof name) return MD_EINVAL;
  ingest_sanitize_name(e->name, e->nlen, true, name);
  tsdb_label_t labels[32];
  char tagbuf[2048];
  size_t nl = 0, used = 0;
  if (e->tags) {
    const char *p = e->tags, *end = e->tags + e->tags_len;
    while (p < end && nl < 32) {
      const char *comma = memchr(p, ',', (size_t)(end - p));
      const char *te = comma ? comma : end;
      const char *colon = memchr(p, ':', (size_t)(te - p));
      if (colon && colon > p && colon + 1 < te) {
        size_t kl = (size_t)(colon - p), vl = (size_t)(te - colon - 1);
        if (used + kl + vl + 4 > sizeof tagbuf) break;
        char *k = tagbuf + used;
        used += ingest_sanitize_name(p, kl, false, k) + 1;
        char *v = tagbuf + used;
        memcpy(v, colon + 1, vl);
        v[vl] = 0;
        used += vl + 1;
        labels[nl++] = (tsdb_label_t){k, v};
      }
      p = te + 1;
    }
  }
  ingest_track_type_t type = e->type == INGEST_STATSD_COUNTER ? INGEST_TRACK_COUNTER
                             : e->type == INGEST_STATSD_GAUGE ? INGEST_TRACK_GAUGE
                                                              : INGEST_TRACK_HISTOGRAM;
  double v = e->value;
  if (type == INGEST_TRACK_COUNTER) v /= e->sample_rate;
  if (e->type == INGEST_STATSD_TIMER) v /= 1000.0;
  char err[200];
  return ingest_track_observe(st->track, st->statsd_tenant, name, strlen(name), type, labels, nl, NULL, v,
                              md_now_ms(), err, sizeof err);
}

static void *statsd_main(void *arg) {
  ingest_state_t *st = arg;
  char buf[65536];
  statsd_ctx_t c = {st};
  for (;;) {
    pthread_mutex_lock(&st->mu);
    bool stop = st->stop;
    pthread_mutex_unlock(&st->mu);
    if (stop) break;
    struct pollfd pfd = {st->statsd_fd, POLLIN, 0};
    int pr = poll(&pfd, 1, 200);
    if (pr <= 0) continue;
    ssize_t n = recv(st->statsd_fd, buf, sizeof buf, 0);
    if (n <= 0) continue;
    ingest_result_t res;
    ingest_parse_statsd(buf, (size_t)n, statsd_event, &c, &res);
    count_samples(st->api, "statsd", (double)res.samples);
    count_rejected(st->api, "statsd", "invalid", (double)res.rejected);
  }
  return NULL;
}

static int statsd_start(ingest_state_t *st) {
  const config_t *cfg = api_config(st->api);
  json_t *sd = cfg ? cfg->statsd : NULL;
  if (!sd || !json_is_true(json_object_get(sd, "enabled"))) return 0;
  const char *listen = json_string_value(json_object_get(sd, "listen"));
  if (!listen) listen = "127.0.0.1:8125";
  const char *tenant = json_string_value(json_object_get(sd, "tenant"));
  st->statsd_tenant = strdup(tenant ? tenant : "default");
  if (!st->statsd_tenant) return MD_ENOMEM;
  const char *colon = strrchr(listen, ':');
  char host[64] = "0.0.0.0";
  if (colon && colon != listen) snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
  int port = atoi(colon ? colon + 1 : listen);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    log_error("statsd: invalid listen address %s (want ipv4:port)", listen);
    return MD_EINVAL;
  }
  st->statsd_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (st->statsd_fd < 0 || bind(st->statsd_fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    log_error("statsd: cannot listen on udp %s: %s", listen, strerror(errno));
    if (st->statsd_fd >= 0) close(st->statsd_fd);
    st->statsd_fd = -1;
    return MD_EIO;
  }
  if (pthread_create(&st->statsd_thread, NULL, statsd_main, st) != 0) {
    close(st->statsd_fd);
    st->statsd_fd = -1;
    return MD_ENOMEM;
  }
  st->statsd_running = true;
  log_info("statsd: listening on udp %s (tenant %s)", listen, st->statsd_tenant);
  return 0;
}

/* ---- hooks -------------------------------------------------------------------------------- */

void api_register_ingest(api_t *api, http_router_t *r) {
  ingest_state_t *st = state_of(api);
  if (!st) {
    st = calloc(1, sizeof *st);
    if (!st) {
      log_error("ingest: out of memory");
      return;
    }
    st->api = api;
    st->statsd_fd = -1;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    const config_t *cfg = api_config(api);
    ingest_limits_default(&st->limits);
    if (cfg) {
      if (cfg->limits.max_labels_per_series)
        st->limits.max_labels_per_series = cfg->limits.max_labels_per_series;
      if (cfg->limits.max_label_name_length)
        st->limits.max_label_name_len = cfg->limits.max_label_name_length;
      if (cfg->limits.max_label_value_length)
        st->limits.max_label_value_len = cfg->limits.max_label_value_length;
      if (cfg->limits.max_samples_per_request)
        st->limits.max_samples_per_request = cfg->limits.max_samples_per_request;
    }
    st->flush_interval_ms = cfg && cfg->track.flush_interval_ms > 0 ? cfg->track.flush_interval_ms : 15000;
    ingest_track_config_t tc = {0};
    ingest_track_buckets_t *mb = NULL;
    if (cfg) {
      tc.default_buckets = cfg->track.default_buckets;
      tc.n_default_buckets = cfg->track.n_default_buckets;
      if (cfg->track.n_buckets) {
        mb = calloc(cfg->track.n_buckets, sizeof *mb);
        if (mb) {
          for (size_t i = 0; i < cfg->track.n_buckets; i++)
            mb[i] = (ingest_track_buckets_t){cfg->track.buckets[i].metric, cfg->track.buckets[i].bounds,
                                             cfg->track.buckets[i].n};
          tc.metric_buckets = mb;
          tc.n_metric_buckets = cfg->track.n_buckets;
        }
      }
      tc.summary_window_ms = cfg->track.summary_window_ms;
      tc.max_series = cfg->track.max_series ? cfg->track.max_series : cfg->limits.max_series_per_tenant;
    }
    tc.limits = &st->limits;
    if (!cfg || cfg->limits.ingest_series_cache) {
      st->cache = ingest_refcache_new(cfg ? cfg->limits.ingest_series_cache : 0);
      if (!st->cache) log_warn("ingest: no memory for the series cache; pushes go without it");
    }
    char err[200];
    if (ingest_track_new(&tc, &st->track, err, sizeof err)) {
      log_error("ingest: %s; using default track settings", err);
      ingest_track_config_t dflt = {.limits = &st->limits};
      if (ingest_track_new(&dflt, &st->track, err, sizeof err)) st->track = NULL;
    }
    free(mb);
    if (!st->track || api_set_slot(api, "ingest", st) || api_set_slot(api, "track", st->track)) {
      log_error("ingest: cannot set up the track registry");
      ingest_track_free(st->track);
      ingest_refcache_free(st->cache);
      pthread_mutex_destroy(&st->mu);
      pthread_cond_destroy(&st->cv);
      free(st);
      api_set_slot(api, "ingest", NULL);
      api_set_slot(api, "track", NULL);
      return;
    }
  }
  unsigned ins = HTTP_ROUTE_INSERT;
  http_route_add(r, "POST", "/metrics/track", HTTP_ROLE_WRITE, ins, h_track_one, api);
  http_route_add(r, "POST", "/metrics/track/batch", HTTP_ROLE_WRITE, ins, h_track_batch, api);
  http_route_add(r, "POST", "/api/v1/write", HTTP_ROLE_WRITE, ins | HTTP_ROUTE_RAW_BODY, h_remote_write, api);
  http_route_add(r, "POST", "/api/v1/push", HTTP_ROLE_WRITE, ins | HTTP_ROUTE_RAW_BODY, h_remote_write, api);
  http_route_add(r, "POST", "/api/v1/import/prometheus", HTTP_ROLE_WRITE, ins, h_import_prometheus, api);
  http_route_add(r, "POST", "/api/v1/import", HTTP_ROLE_WRITE, ins, h_import_jsonl, api);
  http_route_add(r, "POST", "/write", HTTP_ROLE_WRITE, ins, h_influx, api);
  http_route_add(r, "POST", "/api/v2/write", HTTP_ROLE_WRITE, ins, h_influx, api);
  http_route_add(r, "POST", "/v1/metrics", HTTP_ROLE_WRITE, ins, h_otlp, api);
  http_route_add(r, "GET", "/api/v1/export", HTTP_ROLE_READ, 0, h_export, api);
  http_route_add(r, "POST", "/api/v1/export", HTTP_ROLE_READ, 0, h_export, api);
  http_route_add(r, "GET", "/ping", HTTP_ROLE_NONE, 0, h_ping, api);
  http_route_add(r, "POST", "/query", HTTP_ROLE_WRITE, 0, h_influx_query, api);
}

int api_start_ingest(api_t *api) {
  ingest_state_t *st = state_of(api);
  if (!st) return MD_ENOMEM;
  if (pthread_create(&st->flusher, NULL, flusher_main, st) != 0) return MD_ENOMEM;
  st->flusher_running = true;
  int rc = statsd_start(st);
  if (rc) return rc;
  return 0;
}

void api_stop_ingest(api_t *api) {
  ingest_state_t *st = state_of(api);
  if (!st) return;
  pthread_mutex_lock(&st->mu);
  st->stop = true;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  if (st->statsd_running) pthread_join(st->statsd_thread, NULL);
  if (st->statsd_fd >= 0) close(st->statsd_fd);
  if (st->flusher_running) pthread_join(st->flusher, NULL);
  /* The final flush: the registry's state as of shutdown reaches storage. */
  if (st->track) flush_now(st);
  api_set_slot(api, "track", NULL);
  api_set_slot(api, "ingest", NULL);
  ingest_track_free(st->track);
  ingest_refcache_free(st->cache);
  free(st->statsd_tenant);
  pthread_mutex_destroy(&st->mu);
  pthread_cond_destroy(&st->cv);
  free(st);
}

void api_reload_ingest(api_t *api) {
  ingest_state_t *st = state_of(api);
  const config_t *cfg = api_config(api);
  if (!st || !cfg) return;
  /* Parsers take a copy per request; the track registry keeps the limits it started with. */
  pthread_mutex_lock(&st->mu);
  if (cfg->limits.max_labels_per_series) st->limits.max_labels_per_series = cfg->limits.max_labels_per_series;
  if (cfg->limits.max_label_name_length) st->limits.max_label_name_len = cfg->limits.max_label_name_length;
  if (cfg->limits.max_label_value_length) st->limits.max_label_value_len = cfg->limits.max_label_value_length;
  if (cfg->limits.max_samples_per_request)
    st->limits.max_samples_per_request = cfg->limits.max_samples_per_request;
  pthread_mutex_unlock(&st->mu);
  /* Cached series were validated under the old limits. (The cache's size is set at start.) */
  ingest_refcache_clear(st->cache);
}
