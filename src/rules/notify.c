/* Alert delivery, modelled on Prometheus's notifier: a bounded queue of alerts drained by
 * one thread, which takes up to batch_size alerts at a time and POSTs that batch to every
 * Alertmanager (v2 API, /api/v2/alerts) and every webhook, retrying each target with
 * exponential backoff. A full queue drops the oldest alerts (the newest state of an alert
 * matters more than an old one); a batch no target accepted is dropped too. Both count in
 * `dropped`. Webhook bodies can be signed with HMAC-SHA256 (header
 * X-Metricsd-Signature: sha256=<hex of HMAC(secret, body)>).
 *
 * Threading: notifier_send is called by the evaluation thread. The delivery thread takes a
 * batch and delivers it to all targets at once, one short-lived thread per extra target
 * (joined before the next batch), each with its own curl handle. `mu` guards the queue,
 * `stopping` and every counter. */
#include "rules_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct target {
  char *url; /* full POST URL */
  bool webhook;
  uint64_t sent, errors;                          /* alerts delivered / alerts whose delivery failed */
  metrics_counter_t *sent_metric, *errors_metric; /* NULL without a registry */
} target_t;

struct notifier {
  target_t *targets;
  size_t ntargets;
  char *secret;
  char *external_url;
  size_t cap, batch_max;
  int max_tries;
  int64_t backoff_ms, timeout_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  json_t **queue; /* ring of single alerts */
  size_t head, count;
  bool stopping;
  pthread_t thread;
  bool started, curl_init;
  uint64_t queued, dropped, batches;
  int64_t last_latency_ns;
  metrics_counter_t *dropped_metric; /* self-metrics; NULL (a no-op) without a registry */
  metrics_gauge_t *queue_metric;
};

/* ---- SHA-256 and HMAC (FIPS 180-4, RFC 2104) ------------------------------------------ */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sha256_t *s, const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] =
        (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6],
           h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  s->h[0] += a;
  s->h[1] += b;
  s->h[2] += c;
  s->h[3] += d;
  s->h[4] += e;
  s->h[5] += f;
  s->h[6] += g;
  s->h[7] += h;
}

static void sha_init(sha256_t *s) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, iv, sizeof iv);
  s->len = 0;
  s->n = 0;
}

static void sha_update(sha256_t *s, const void *data, size_t n) {
  const uint8_t *p = data;
  s->len += n;
  while (n) {
    size_t k = 64 - s->n < n ? 64 - s->n : n;
    memcpy(s->buf + s->n, p, k);
    s->n += k;
    p += k;
    n -= k;
    if (s->n == 64) {
      sha_block(s, s->buf);
      s->n = 0;
    }
  }
}

static void sha_final(sha256_t *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8;
  uint8_t pad = 0x80;
  sha_update(s, &pad, 1);
  uint8_t z = 0;
  while (s->n != 56)
    sha_update(s, &z, 1);
  uint8_t l[8];
  for (int i = 0; i < 8; i++)
    l[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_update(s, l, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(s->h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    out[4 * i + 3] = (uint8_t)s->h[i];
  }
}

void rules_hmac_sha256_hex(const char *key, size_t klen, const char *msg, size_t mlen, char out[65]) {
  uint8_t k[64] = {0}, ipad[64], opad[64], inner[32], mac[32];
  if (klen > 64) {
    sha256_t s;
    sha_init(&s);
    sha_update(&s, key, klen);
    sha_final(&s, k);
  } else {
    memcpy(k, key, klen);
  }
  for (int i = 0; i < 64; i++) {
    ipad[i] = k[i] ^ 0x36;
    opad[i] = k[i] ^ 0x5c;
  }
  sha256_t s;
  sha_init(&s);
  sha_update(&s, ipad, 64);
  sha_update(&s, msg, mlen);
  sha_final(&s, inner);
  sha_init(&s);
  sha_update(&s, opad, 64);
  sha_update(&s, inner, 32);
  sha_final(&s, mac);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hex[mac[i] >> 4];
    out[2 * i + 1] = hex[mac[i] & 15];
  }
  out[64] = 0;
}

/* ---- delivery ------------------------------------------------------------------------ */

static size_t discard(char *p, size_t s, size_t n, void *u) {
  (void)p;
  (void)u;
  return s * n;
}

/* POSTs body; returns 0 on 2xx, 1 for a 4xx other than 429 (the receiver refuses this body:
 * retrying cannot help), -1 for anything worth retrying. */
static int post(const notifier_t *n, const char *url, const char *body, const char *signature) {
  CURL *c = curl_easy_init();
  if (!c) return -1;
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  char sig[128];
  if (signature) {
    snprintf(sig, sizeof sig, "X-Metricsd-Signature: sha256=%s", signature);
    struct curl_slist *h2 = curl_slist_append(h, sig);
    if (h2) h = h2;
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)n->timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "metricsd/" METRICSD_VERSION);
  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) return -1;
  if (code >= 200 && code < 300) return 0;
  if (code >= 400 && code < 500 && code != 429) return 1;
  return -1;
}

/* Sleeps ms, waking early when the notifier stops. Returns true when stopping. */
static bool pause_unless_stopping(notifier_t *n, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
  ts.tv_sec += ms / 1000 + ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  pthread_mutex_lock(&n->mu);
  while (!n->stopping && pthread_cond_timedwait(&n->cv, &n->mu, &ts) == 0) {
  }
  bool stop = n->stopping;
  pthread_mutex_unlock(&n->mu);
  return stop;
}

static bool deliver(notifier_t *n, const char *url, const char *body, const char *sig) {
  int64_t backoff_ms = n->backoff_ms;
  for (int attempt = 0; attempt < n->max_tries; attempt++) {
    int rc = post(n, url, body, sig);
    if (rc == 0) return true;
    if (rc == 1 || attempt + 1 == n->max_tries) break;
    /* On shutdown: one try per target, no waiting. */
    if (pause_unless_stopping(n, backoff_ms)) break;
    backoff_ms *= 2;
  }
  log_warn("notifier: giving up delivering alerts to %s", url);
  return false;
}

/* The webhook envelope (docs/rules.md): Alertmanager's webhook shape, each alert with its
 * own status; the batch is "firing" when any alert in it is. */
static char *webhook_body(notifier_t *n, json_t *alerts) {
  bool firing = false;
  char now[32];
  md_format_rfc3339(md_now_ms(), now);
  json_t *list = json_array();
  size_t i;
  json_t *a;
  json_array_foreach(alerts, i, a) {
    const char *ends = json_string_value(json_object_get(a, "endsAt"));
    bool f = ends && strcmp(ends, now) > 0;
    firing |= f;
    json_t *c = json_copy(a);
    if (c) {
      json_object_set_new(c, "status", json_string(f ? "firing" : "resolved"));
      json_array_append_new(list, c);
    }
  }
  json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s}", "version", "4", "receiver", "metricsd", "status",
                        firing ? "firing" : "resolved", "alerts", list, "externalURL",
                        n->external_url ? n->external_url : "");
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* One target's delivery of one batch; targets of a batch run in parallel threads so that a
 * slow or dead target (retrying with backoff) does not delay the others. */
typedef struct job {
  notifier_t *n;
  const target_t *t;
  const char *body;
  char sig[65];
  bool has_sig, ok;
} job_t;

static void *deliver_job(void *arg) {
  job_t *j = arg;
  j->ok = j->body && deliver(j->n, j->t->url, j->body, j->has_sig ? j->sig : NULL);
  return NULL;
}

static void deliver_batch(notifier_t *n, json_t *batch, size_t nalerts) {
  char *body = batch ? json_dumps(batch, JSON_COMPACT) : NULL;
  char *wb = NULL;
  job_t *jobs = calloc(n->ntargets, sizeof *jobs);
  pthread_t *th = calloc(n->ntargets, sizeof *th);
  bool *started = calloc(n->ntargets, sizeof *started);
  bool any_ok = false;
  if (!jobs || !th || !started) goto out; /* counted as failed below */
  for (size_t i = 0; i < n->ntargets; i++) {
    job_t *j = &jobs[i];
    j->n = n;
    j->t = &n->targets[i];
    j->body = body;
    if (j->t->webhook) {
      if (!wb && batch) wb = webhook_body(n, batch);
      j->body = wb;
      if (wb && n->secret) {
        rules_hmac_sha256_hex(n->secret, strlen(n->secret), wb, strlen(wb), j->sig);
        j->has_sig = true;
      }
    }
  }
  for (size_t i = 1; i < n->ntargets; i++)
    started[i] = pthread_create(&th[i], NULL, deliver_job, &jobs[i]) == 0;
  deliver_job(&jobs[0]);
  for (size_t i = 1; i < n->ntargets; i++) {
    if (started[i])
      pthread_join(th[i], NULL);
    else
      deliver_job(&jobs[i]); /* no thread: deliver here, in turn */
  }
out:
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->ntargets; i++) {
    bool ok = jobs && jobs[i].ok;
    any_ok |= ok;
    if (ok)
      n->targets[i].sent += nalerts;
    else
      n->targets[i].errors += nalerts;
    metrics_counter_add(ok ? n->targets[i].sent_metric : n->targets[i].errors_metric, (double)nalerts);
  }
  if (!any_ok) {
    n->dropped += nalerts;
    metrics_counter_add(n->dropped_metric, (double)nalerts);
  }
  pthread_mutex_unlock(&n->mu);
  free(started);
  free(th);
  free(jobs);
  free(wb);
  free(body);
}

static void *notify_thread(void *arg) {
  notifier_t *n = arg;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    while (!n->count && !n->stopping)
      pthread_cond_wait(&n->cv, &n->mu);
    if (!n->count && n->stopping) break;
    json_t *batch = json_array();
    size_t nalerts = 0;
    while (n->count && nalerts < n->batch_max) {
      if (batch) json_array_append(batch, n->queue[n->head]);
      json_decref(n->queue[n->head]);
      n->head = (n->head + 1) % n->cap;
      n->count--;
      nalerts++;
    }
    n->batches++;
    metrics_gauge_set(n->queue_metric, (double)n->count);
    pthread_mutex_unlock(&n->mu);
    int64_t t0 = md_mono_ns();
    deliver_batch(n, batch, nalerts);
    json_decref(batch);
    pthread_mutex_lock(&n->mu);
    n->last_latency_ns = md_mono_ns() - t0;
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

static int add_target(notifier_t *n, const char *base, const char *suffix, bool webhook) {
  sb_t url = {0};
  size_t l = strlen(base);
  while (suffix && l && base[l - 1] == '/')
    l--; /* "http://am:9093/" + "/api/v2/alerts" */
  sb_append(&url, base, l);
  if (suffix) sb_puts(&url, suffix);
  char *u = sb_steal(&url);
  if (!u) return MD_ENOMEM;
  n->targets[n->ntargets++] = (target_t){.url = u, .webhook = webhook};
  return 0;
}

/* Creates the self-metrics under Prometheus's names; handles stay valid while m lives. */
static void register_metrics(notifier_t *n, metrics_registry_t *m) {
  size_t nams = 0;
  for (size_t i = 0; i < n->ntargets; i++) {
    target_t *t = &n->targets[i];
    nams += !t->webhook;
    /* Prometheus labels by the Alertmanager's POST URL; webhooks are metricsd's own. */
    const char *kv[] = {t->webhook ? "webhook" : "alertmanager", t->url};
    t->sent_metric =
        metrics_counter_v(m, "prometheus_notifications_sent_total", "Total number of alerts sent.", kv, 1);
    t->errors_metric =
        metrics_counter_v(m, "prometheus_notifications_errors_total",
                          "Total number of alerts affected by errors when sending them.", kv, 1);
  }
  n->dropped_metric = metrics_counter(
      m, "prometheus_notifications_dropped_total",
      "Total number of alerts dropped: queue full, or no target accepted them.", (const char *)NULL);
  n->queue_metric = metrics_gauge(m, "prometheus_notifications_queue_length",
                                  "The number of alert notifications in the queue.", (const char *)NULL);
  metrics_gauge_set(metrics_gauge(m, "prometheus_notifications_queue_capacity",
                                  "The capacity of the alert notifications queue.", (const char *)NULL),
                    (double)n->cap);
  metrics_gauge_set(metrics_gauge(m, "prometheus_notifications_alertmanagers_discovered",
                                  "The number of alertmanagers discovered and active.", (const char *)NULL),
                    (double)nams);
}

int notifier_new(const rules_options_t *opt, notifier_t **out) {
  notifier_t *n = calloc(1, sizeof *n);
  if (!n) return MD_ENOMEM;
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  int rc = 0;
  n->cap = opt->notify_queue_capacity ? opt->notify_queue_capacity : 10000;
  n->batch_max = opt->notify_batch_size ? opt->notify_batch_size : 64;
  n->max_tries = opt->notify_max_tries > 0 ? opt->notify_max_tries : 4;
  n->backoff_ms = opt->notify_backoff_ms > 0 ? opt->notify_backoff_ms : 200;
  n->timeout_ms = opt->notify_timeout_ms > 0 ? opt->notify_timeout_ms : 10000;
  n->queue = calloc(n->cap, sizeof *n->queue);
  n->targets = calloc(opt->n_alertmanagers + opt->n_webhooks + 1, sizeof *n->targets);
  if (!n->queue || !n->targets) {
    rc = MD_ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < opt->n_alertmanagers && !rc; i++)
    rc = add_target(n, opt->alertmanagers[i], "/api/v2/alerts", false);
  for (size_t i = 0; i < opt->n_webhooks && !rc; i++)
    rc = add_target(n, opt->webhooks[i], NULL, true);
  if (rc) goto fail;
  if (opt->metrics) register_metrics(n, opt->metrics);
  if (opt->webhook_secret && !(n->secret = strdup(opt->webhook_secret))) {
    rc = MD_ENOMEM;
    goto fail;
  }
  if (opt->external_url && !(n->external_url = strdup(opt->external_url))) {
    rc = MD_ENOMEM;
    goto fail;
  }
  if (n->ntargets) {
    /* Delivery threads call curl_easy_init concurrently: initialise libcurl first
     * (reference-counted by libcurl; undone in notifier_free). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      rc = MD_ERR;
      goto fail;
    }
    n->curl_init = true;
    if (pthread_create(&n->thread, NULL, notify_thread, n) != 0) {
      rc = MD_ERR;
      goto fail;
    }
    n->started = true;
  }
  *out = n;
  return 0;
fail:
  notifier_free(n);
  return rc;
}

void notifier_send(notifier_t *n, json_t *alerts) {
  if (!n->started) {
    json_decref(alerts);
    return;
  }
  pthread_mutex_lock(&n->mu);
  uint64_t dropped_before = n->dropped;
  size_t i;
  json_t *a;
  json_array_foreach(alerts, i, a) {
    if (n->count == n->cap) {
      json_decref(n->queue[n->head]);
      n->head = (n->head + 1) % n->cap;
      n->count--;
      n->dropped++;
    }
    n->queue[(n->head + n->count) % n->cap] = json_incref(a);
    n->count++;
    n->queued++;
  }
  metrics_counter_add(n->dropped_metric, (double)(n->dropped - dropped_before));
  metrics_gauge_set(n->queue_metric, (double)n->count);
  pthread_cond_signal(&n->cv);
  pthread_mutex_unlock(&n->mu);
  json_decref(alerts);
}

void notifier_stats(notifier_t *n, notifier_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->ntargets; i++) {
    out->sent += n->targets[i].sent;
    out->failed += n->targets[i].errors;
  }
  out->dropped = n->dropped;
  out->queued = n->queued;
  out->batches = n->batches;
  out->queue_length = n->count;
  out->queue_capacity = n->cap;
  out->last_latency_ns = n->last_latency_ns;
  pthread_mutex_unlock(&n->mu);
}

size_t notifier_targets(notifier_t *n, rules_target_stats_t *out, size_t max) {
  pthread_mutex_lock(&n->mu);
  size_t k = 0;
  for (size_t i = 0; i < n->ntargets && k < max; i++, k++)
    out[k] = (rules_target_stats_t){n->targets[i].url, n->targets[i].webhook, n->targets[i].sent,
                                    n->targets[i].errors};
  pthread_mutex_unlock(&n->mu);
  return n->ntargets;
}

void notifier_free(notifier_t *n) {
  if (!n) return;
  if (n->started) {
    pthread_mutex_lock(&n->mu);
    n->stopping = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->thread, NULL);
  }
  while (n->count) {
    json_decref(n->queue[n->head]);
    n->head = (n->head + 1) % n->cap;
    n->count--;
  }
  for (size_t i = 0; i < n->ntargets; i++)
    free(n->targets[i].url);
  free(n->targets);
  free(n->queue);
  free(n->secret);
  free(n->external_url);
  if (n->curl_init) curl_global_cleanup();
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n);
}
