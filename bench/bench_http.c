/* bench_http: the HTTP layer alone (no storage): requests per second and latency of a
 * trivial GET and of a 100 KiB identity/gzip/snappy POST through routing, auth, decoding and
 * response, with keep-alive libcurl clients on 127.0.0.1; plus decoder throughput.
 *   bench_http [seconds per case (default 3)] [client threads (default 4)] */
#include <curl/curl.h>
#include <pthread.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "http/http.h"

static void h_ok(http_req_t *req, http_resp_t *resp, void *ctx) {
  (void)ctx;
  size_t n;
  http_req_body(req, &n);
  sb_printf(http_resp_body(resp), "{\"ok\":true,\"n\":%zu}", n);
}

typedef struct {
  uint16_t port;
  const char *path;
  const char *body;
  size_t blen;
  const char *encoding;
  double seconds;
  long count;
  double *lat;
  size_t nlat, caplat;
} client_t;

static size_t sink(char *p, size_t s, size_t n, void *u) {
  (void)p, (void)u;
  return s * n;
}

static void *client_main(void *arg) {
  client_t *c = arg;
  CURL *h = curl_easy_init();
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", c->port, c->path);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
  struct curl_slist *hl = curl_slist_append(NULL, "Authorization: Bearer bench-token");
  hl = curl_slist_append(hl, "Expect:");
  /* Not curl's default form type: the server would parse a form body as query parameters. */
  if (c->body) hl = curl_slist_append(hl, "Content-Type: text/plain");
  if (c->encoding) {
    char e[64];
    snprintf(e, sizeof e, "Content-Encoding: %s", c->encoding);
    hl = curl_slist_append(hl, e);
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  if (c->body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->blen);
  }
  int64_t end = md_mono_ns() + (int64_t)(c->seconds * 1e9);
  while (md_mono_ns() < end) {
    int64_t t0 = md_mono_ns();
    if (curl_easy_perform(h) != CURLE_OK) break;
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) break;
    if (c->nlat == c->caplat) {
      c->caplat = c->caplat ? c->caplat * 2 : 4096;
      c->lat = realloc(c->lat, c->caplat * sizeof *c->lat);
    }
    c->lat[c->nlat++] = (double)(md_mono_ns() - t0) / 1e3;
    c->count++;
  }
  curl_slist_free_all(hl);
  curl_easy_cleanup(h);
  return NULL;
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run_case(const char *name, uint16_t port, const char *path, const char *body, size_t blen,
                     const char *enc, double secs, int nthreads) {
  client_t *cs = calloc((size_t)nthreads, sizeof *cs);
  pthread_t *ts = calloc((size_t)nthreads, sizeof *ts);
  for (int i = 0; i < nthreads; i++) {
    cs[i] = (client_t){port, path, body, blen, enc, secs, 0, NULL, 0, 0};
    pthread_create(&ts[i], NULL, client_main, &cs[i]);
  }
  long total = 0;
  size_t nl = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(ts[i], NULL);
    total += cs[i].count;
    nl += cs[i].nlat;
  }
  double *all = malloc((nl ? nl : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < nthreads; i++) {
    memcpy(all + k, cs[i].lat, cs[i].nlat * sizeof *all);
    k += cs[i].nlat;
    free(cs[i].lat);
  }
  qsort(all, nl, sizeof *all, cmpd);
  printf("%-28s %9.0f req/s  p50 %7.0f us  p99 %7.0f us  (%d clients, %ld requests)\n", name, total / secs,
         nl ? all[nl / 2] : 0, nl ? all[(size_t)(nl * 0.99)] : 0, nthreads, total);
  free(all);
  free(cs);
  free(ts);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 3;
  int nthreads = argc > 2 ? atoi(argv[2]) : 4;
  log_set_level(LOG_ERROR);
  curl_global_init(CURL_GLOBAL_ALL);
  http_router_t *r = http_router_new();
  http_route_add(r, "GET", "/health", HTTP_ROLE_NONE, 0, h_ok, NULL);
  http_route_add(r, "GET", "/api/v1/label/{name}/values", HTTP_ROLE_READ, 0, h_ok, NULL);
  http_route_add(r, "POST", "/api/v1/write", HTTP_ROLE_WRITE, HTTP_ROUTE_INSERT, h_ok, NULL);
  char path[64];
  for (int i = 0; i < 100; i++) { /* a realistic route table size */
    snprintf(path, sizeof path, "/filler/%d/{x}", i);
    http_route_add(r, "GET", path, HTTP_ROLE_READ, 0, h_ok, NULL);
  }
  http_auth_key_t key = {"bench", "bench-token", NULL, "t", HTTP_ROLE_READ | HTTP_ROLE_WRITE};
  http_server_options_t o = {.listen = "127.0.0.1:0", .keys = &key, .nkeys = 1, .max_concurrent_inserts = 64,
                             .metrics = metrics_registry_new()};
  http_server_t *s;
  char err[256];
  if (http_server_start(&o, r, &s, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  uint16_t port = http_server_port(s);
  /* a 100 KiB text body, compressed both ways */
  size_t n = 100 * 1024;
  char *text = malloc(n);
  for (size_t i = 0; i < n; i++) text[i] = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12345.67\n"[i % 52];
  char *gz;
  size_t gzn;
  http_gzip(text, n, &gz, &gzn);
  size_t sn = snappy_max_compressed_length(n);
  char *sd = malloc(sn);
  snappy_compress(text, n, sd, &sn);

  run_case("GET /health", port, "/health", NULL, 0, NULL, secs, nthreads);
  run_case("GET label values (auth)", port, "/api/v1/label/job/values", NULL, 0, NULL, secs, nthreads);
  run_case("POST 100KiB identity", port, "/api/v1/write", text, n, NULL, secs, nthreads);
  run_case("POST 100KiB gzip", port, "/api/v1/write", gz, gzn, "gzip", secs, nthreads);
  run_case("POST 100KiB snappy", port, "/api/v1/write", sd, sn, "snappy", secs, nthreads);

  /* decoder throughput, single thread */
  const struct {
    const char *enc;
    const char *p;
    size_t n;
  } dec[] = {{"gzip", gz, gzn}, {"snappy", sd, sn}};
  for (size_t d = 0; d < 2; d++) {
    int64_t t0 = md_mono_ns();
    int iters = 0;
    while (md_mono_ns() - t0 < 1000000000LL) {
      char *out;
      size_t outlen;
      if (http_decode(dec[d].enc, dec[d].p, dec[d].n, 1 << 20, &out, &outlen, err, sizeof err) == 0) free(out);
      iters++;
    }
    double s2 = (double)(md_mono_ns() - t0) / 1e9;
    printf("decode %-8s %8.0f MB/s of output\n", dec[d].enc, iters * (double)n / s2 / 1e6);
  }
  http_server_stop(s);
  metrics_registry_free(o.metrics);
  http_router_free(r);
  free(text), free(gz), free(sd);
  curl_global_cleanup();
  return 0;
}
