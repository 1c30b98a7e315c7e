/* Alert delivery: a bounded queue drained by one thread that POSTs to every Alertmanager
 * (v2 API, /api/v2/alerts) and every webhook, retrying with exponential backoff. A full
 * queue drops the oldest batch and counts it. Webhook bodies can be signed with
 * HMAC-SHA256 (header X-Metricsd-Signature: sha256=<hex>). */
#include "rules_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX 1000
#define MAX_TRIES 4

struct notifier {
  char **ams, **hooks;
  size_t nams, nhooks;
  char *secret;
  char *external_url;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  json_t *queue[QUEUE_MAX];
  size_t head, count;
  bool stopping;
  pthread_t thread;
  bool started;
  uint64_t sent, failed, dropped;
};

/* ---- SHA-256 and HMAC (FIPS 180-4, RFC 2104) ------------------------------------------ */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sha256_t *s, const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha_init(sha256_t *s) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
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
  while (s->n != 56) sha_update(s, &z, 1);
  uint8_t l[8];
  for (int i = 0; i < 8; i++) l[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_update(s, l, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(s->h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    out[4 * i + 3] = (uint8_t)s->h[i];
  }
}

/* HMAC-SHA256 of msg under key, as lowercase hex into out (65 bytes). Exposed for tests. */
void rules_hmac_sha256_hex(const char *key, size_t klen, const char *msg, size_t mlen, char out[65]);
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
  (void)p; (void)u;
  return s * n;
}

/* POSTs body; returns 0 on 2xx. 4xx other than 429 are not retried (returns 1). */
static int post(const char *url, const char *body, const char *signature) {
  CURL *c = curl_easy_init();
  if (!c) return -1;
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  char sig[128];
  if (signature) {
    snprintf(sig, sizeof sig, "X-Metricsd-Signature: sha256=%s", signature);
    h = curl_slist_append(h, sig);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
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

static bool deliver(notifier_t *n, const char *url, const char *body, const char *sig) {
  int64_t backoff_ms = 200;
  for (int attempt = 0; attempt < MAX_TRIES; attempt++) {
    int rc = post(url, body, sig);
    if (rc == 0) return true;
    if (rc == 1) break;
    pthread_mutex_lock(&n->mu);
    bool stop = n->stopping;
    pthread_mutex_unlock(&n->mu);
    if (stop) break;
    struct timespec ts = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    backoff_ms *= 2;
  }
  log_warn("notifier: giving up delivering alerts to %s", url);
  return false;
}

static char *webhook_body(notifier_t *n, json_t *alerts) {
  bool firing = false;
  size_t i;
  json_t *a;
  json_array_foreach(alerts, i, a) {
    const char *ends = json_string_value(json_object_get(a, "endsAt"));
    char now[32];
    md_format_rfc3339(md_now_ms(), now);
    if (ends && strcmp(ends, now) > 0) firing = true;
  }
  json_t *o = json_pack("{s:s, s:s, s:s, s:O, s:s}", "version", "4", "receiver", "metricsd", "status",
                        firing ? "firing" : "resolved", "alerts", alerts, "externalURL",
                        n->external_url ? n->external_url : "");
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

static void *notify_thread(void *arg) {
  notifier_t *n = arg;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    while (!n->count && !n->stopping) pthread_cond_wait(&n->cv, &n->mu);
    if (!n->count && n->stopping) break;
    json_t *alerts = n->queue[n->head];
    n->head = (n->head + 1) % QUEUE_MAX;
    n->count--;
    pthread_mutex_unlock(&n->mu);
    char *body = json_dumps(alerts, JSON_COMPACT);
    uint64_t ok = 0, bad = 0;
    for (size_t i = 0; body && i < n->nams; i++) {
      sb_t url = {0};
      sb_printf(&url, "%s/api/v2/alerts", n->ams[i]);
      if (deliver(n, url.buf, body, NULL)) ok++;
      else bad++;
      sb_free(&url);
    }
    char *wb = n->nhooks ? webhook_body(n, alerts) : NULL;
    for (size_t i = 0; wb && i < n->nhooks; i++) {
      char sig[65];
      if (n->secret) rules_hmac_sha256_hex(n->secret, strlen(n->secret), wb, strlen(wb), sig);
      if (deliver(n, n->hooks[i], wb, n->secret ? sig : NULL)) ok++;
      else bad++;
    }
    free(wb);
    free(body);
    json_decref(alerts);
    pthread_mutex_lock(&n->mu);
    n->sent += ok;
    n->failed += bad;
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

static char **copy_strs(const char *const *s, size_t n) {
  char **c = calloc(n + 1, sizeof *c);
  for (size_t i = 0; c && i < n; i++) {
    c[i] = strdup(s[i]);
    size_t l = c[i] ? strlen(c[i]) : 0;
    while (l && c[i][l - 1] == '/') c[i][--l] = 0;
  }
  return c;
}

int notifier_new(const rules_options_t *opt, notifier_t **out) {
  notifier_t *n = calloc(1, sizeof *n);
  if (!n) return MD_ENOMEM;
  n->ams = copy_strs(opt->alertmanagers, opt->n_alertmanagers);
  n->nams = opt->n_alertmanagers;
  n->hooks = copy_strs(opt->webhooks, opt->n_webhooks);
  n->nhooks = opt->n_webhooks;
  n->secret = opt->webhook_secret ? strdup(opt->webhook_secret) : NULL;
  n->external_url = opt->external_url ? strdup(opt->external_url) : NULL;
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  if (n->nams || n->nhooks) {
    if (pthread_create(&n->thread, NULL, notify_thread, n) == 0) n->started = true;
  }
  *out = n;
  return 0;
}

void notifier_send(notifier_t *n, json_t *alerts) {
  if (!n->started) {
    json_decref(alerts);
    return;
  }
  pthread_mutex_lock(&n->mu);
  if (n->count == QUEUE_MAX) {
    json_decref(n->queue[n->head]);
    n->head = (n->head + 1) % QUEUE_MAX;
    n->count--;
    n->dropped++;
  }
  n->queue[(n->head + n->count) % QUEUE_MAX] = alerts;
  n->count++;
  pthread_cond_signal(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

void notifier_stats(notifier_t *n, uint64_t *sent, uint64_t *failed, uint64_t *dropped) {
  pthread_mutex_lock(&n->mu);
  *sent = n->sent;
  *failed = n->failed;
  *dropped = n->dropped;
  pthread_mutex_unlock(&n->mu);
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
    n->head = (n->head + 1) % QUEUE_MAX;
    n->count--;
  }
  for (size_t i = 0; i < n->nams; i++) free(n->ams[i]);
  for (size_t i = 0; i < n->nhooks; i++) free(n->hooks[i]);
  free(n->ams);
  free(n->hooks);
  free(n->secret);
  free(n->external_url);
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n);
}
