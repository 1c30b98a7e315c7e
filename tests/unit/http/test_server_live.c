/* The http server over a real socket on 127.0.0.1 (libcurl as the client): auth matrix and
 * tenant override attempts, 404/405/413/415/400, encoded bodies, gzip responses, request
 * ids, CORS, the insert semaphore (429), streaming, self-metrics, graceful stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <pthread.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/metrics.h"
#include "http/http.h"

typedef struct reply {
  long status;
  sb_t body;
  sb_t headers;
} reply_t;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  sb_append(&((reply_t *)ud)->body, p, sz * n);
  return sz * n;
}
static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
  sb_append(&((reply_t *)ud)->headers, p, sz * n);
  return sz * n;
}

static uint16_t g_port;

/* Performs a request; extra headers NULL-terminated. */
static reply_t req(const char *method, const char *path, const void *body, size_t blen, ...) {
  reply_t r = {0};
  CURL *c = curl_easy_init();
  char url[512];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", g_port, path);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  }
  struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
  va_list ap;
  va_start(ap, blen);
  for (const char *h; (h = va_arg(ap, const char *)) != NULL;) hl = curl_slist_append(hl, h);
  va_end(ap);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  else r.status = -1;
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  if (!r.body.buf) sb_puts(&r.body, "");
  if (!r.headers.buf) sb_puts(&r.headers, "");
  return r;
}

static void reply_free(reply_t *r) {
  sb_free(&r->body);
  sb_free(&r->headers);
}

/* handlers */
static void h_echo(http_req_t *rq, http_resp_t *rs, void *ctx) {
  (void)ctx;
  size_t n;
  const char *b = http_req_body(rq, &n);
  sb_t *o = http_resp_body(rs);
  sb_printf(o, "{\"tenant\":\"%s\",\"len\":%zu,\"id\":\"%s\",\"ct\":\"%s\"", http_req_tenant(rq), n, http_req_id(rq),
            http_req_content_type(rq));
  const char *p = http_req_param(rq, "id");
  if (p) sb_printf(o, ",\"param\":\"%s\"", p);
  const char *q = http_req_query(rq, "q");
  if (q) sb_printf(o, ",\"q\":\"%s\"", q);
  const char *const *all;
  size_t na = http_req_query_all(rq, "match[]", &all);
  sb_printf(o, ",\"nmatch\":%zu", na);
  sb_printf(o, ",\"body_tenant\":\"%s\"", http_req_tenant_with(rq, "from-body"));
  sb_puts(o, ",\"head\":\"");
  sb_append(o, b, n < 16 ? n : 16);
  sb_puts(o, "\"}");
}

static void h_big(http_req_t *rq, http_resp_t *rs, void *ctx) {
  (void)rq, (void)ctx;
  http_resp_content_type(rs, "text/plain");
  for (int i = 0; i < 2000; i++) sb_printf(http_resp_body(rs), "line %d of a large body\n", i);
}

static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cv = PTHREAD_COND_INITIALIZER;
static int slow_inside, slow_release;

static void h_slow_insert(http_req_t *rq, http_resp_t *rs, void *ctx) {
  (void)rq, (void)ctx;
  pthread_mutex_lock(&slow_mu);
  slow_inside++;
  pthread_cond_broadcast(&slow_cv);
  while (!slow_release) pthread_cond_wait(&slow_cv, &slow_mu);
  pthread_mutex_unlock(&slow_mu);
  http_resp_status(rs, 204);
}

typedef struct {
  int n;
} stream_ctx_t;
static ssize_t stream_fn(void *ctx, char *buf, size_t max, bool stopping) {
  stream_ctx_t *s = ctx;
  if (stopping || s->n >= 3) return HTTP_STREAM_END;
  if (s->n == 1 && max > 0) {
    s->n++;
    return 0; /* nothing this time: the server waits and calls again */
  }
  s->n++;
  return snprintf(buf, max, "data: %d\n\n", s->n);
}
static void h_stream(http_req_t *rq, http_resp_t *rs, void *ctx) {
  (void)rq, (void)ctx;
  stream_ctx_t *s = calloc(1, sizeof *s);
  http_resp_content_type(rs, "text/event-stream");
  http_resp_stream(rs, stream_fn, s, free);
}

static http_server_t *g_srv;
static http_router_t *g_router;
static metrics_registry_t *g_reg;

static int setup(void **state) {
  (void)state;
  curl_global_init(CURL_GLOBAL_ALL);
  g_reg = metrics_registry_new();
  g_router = http_router_new();
  http_route_add(g_router, "GET", "/health", HTTP_ROLE_NONE, 0, h_echo, NULL);
  http_route_add(g_router, "GET", "/read/{id}", HTTP_ROLE_READ, 0, h_echo, NULL);
  http_route_add(g_router, "POST", "/write", HTTP_ROLE_WRITE, 0, h_echo, NULL);
  http_route_add(g_router, "POST", "/api/v1/write", HTTP_ROLE_WRITE, 0, h_echo, NULL);
  http_route_add(g_router, "POST", "/raw", HTTP_ROLE_WRITE, HTTP_ROUTE_RAW_BODY, h_echo, NULL);
  http_route_add(g_router, "POST", "/admin", HTTP_ROLE_ADMIN, 0, h_echo, NULL);
  http_route_add(g_router, "GET", "/big", HTTP_ROLE_NONE, 0, h_big, NULL);
  http_route_add(g_router, "POST", "/slow", HTTP_ROLE_NONE, HTTP_ROUTE_INSERT, h_slow_insert, NULL);
  http_route_add(g_router, "GET", "/stream", HTTP_ROLE_NONE, 0, h_stream, NULL);
  http_auth_key_t keys[] = {
      {"reader", "r-token", NULL, "acme", HTTP_ROLE_READ},
      {"writer", "w-token", NULL, "acme", HTTP_ROLE_READ | HTTP_ROLE_WRITE},
      {"boss", "a-token", "root", "ops", HTTP_ROLE_ADMIN},
  };
  http_server_options_t opt = {.listen = "127.0.0.1:0", .max_body_bytes = 4096, .max_concurrent_inserts = 1,
                               .cors_origin = "https://grafana.example", .keys = keys, .nkeys = 3,
                               .metrics = g_reg};
  char err[256];
  if (http_server_start(&opt, g_router, &g_srv, err, sizeof err) != 0) {
    fprintf(stderr, "start: %s\n", err);
    return -1;
  }
  g_port = http_server_port(g_srv);
  return g_port ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  http_server_stop(g_srv);
  http_router_free(g_router);
  metrics_registry_free(g_reg);
  curl_global_cleanup();
  return 0;
}

static void test_auth_matrix(void **state) {
  (void)state;
  static const struct {
    const char *method, *path, *header;
    long want;
  } cases[] = {
      {"GET", "/health", NULL, 200},                         /* public even with auth on */
      {"GET", "/read/1", NULL, 401},                         /* no credential */
      {"GET", "/read/1", "Authorization: Bearer nope", 401}, /* wrong key */
      {"GET", "/read/1", "Authorization: Bearer r-token", 200},
      {"GET", "/read/1", "X-API-Key: r-token", 200},
      {"GET", "/read/1", "Authorization: Bearer r-tokenX", 401}, /* prefix of nothing */
      {"GET", "/read/1", "Authorization: Bearer r-toke", 401},
      {"POST", "/write", "Authorization: Bearer r-token", 403}, /* reader cannot write */
      {"POST", "/write", "Authorization: Bearer w-token", 200},
      {"POST", "/admin", "Authorization: Bearer w-token", 403},
      {"POST", "/admin", "Authorization: Basic cm9vdDphLXRva2Vu", 200}, /* root:a-token */
      {"POST", "/admin", "Authorization: Basic b3RoZXI6YS10b2tlbg==", 401}, /* other:a-token */
      {"POST", "/admin", "Authorization: Basic !!!", 401},
      {"POST", "/write", "Authorization: Digest abc", 401},
      {"GET", "/read/1", "Authorization: Bearer a-token", 401}, /* admin key requires its user? no: bearer has no user */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    reply_t r = req(cases[i].method, cases[i].path, cases[i].method[0] == 'P' ? "x" : NULL, 1, cases[i].header, NULL);
    if (i == sizeof cases / sizeof cases[0] - 1) {
      /* a bearer token matches a key with a username too (the user only constrains basic
       * auth): the admin key works with bearer */
      assert_int_equal(r.status, 200);
    } else if (r.status != cases[i].want) {
      fail_msg("case %zu %s %s [%s]: %ld, want %ld: %s", i, cases[i].method, cases[i].path,
               cases[i].header ? cases[i].header : "", r.status, cases[i].want, r.body.buf);
    }
    if (r.status == 401) {
      assert_non_null(strstr(r.headers.buf, "WWW-Authenticate"));
      assert_non_null(strstr(r.body.buf, "\"success\":false"));
    }
    reply_free(&r);
  }
  /* a Prometheus path gets the Prometheus envelope */
  reply_t r = req("POST", "/api/v1/write", "x", 1, NULL);
  assert_int_equal(r.status, 401);
  assert_non_null(strstr(r.body.buf, "\"status\":\"error\""));
  reply_free(&r);
}

static void test_tenants(void **state) {
  (void)state;
  /* the key's tenant wins over X-Scope-OrgID and over a body tenant */
  reply_t r = req("POST", "/write", "{}", 2, "Authorization: Bearer w-token", "X-Scope-OrgID: evil", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"tenant\":\"acme\""));
  assert_non_null(strstr(r.body.buf, "\"body_tenant\":\"acme\""));
  reply_free(&r);
  /* public route, no key: header, else body tenant */
  r = req("GET", "/health", NULL, 0, "X-Scope-OrgID: team-7", NULL);
  assert_non_null(strstr(r.body.buf, "\"tenant\":\"team-7\""));
  assert_non_null(strstr(r.body.buf, "\"body_tenant\":\"team-7\""));
  reply_free(&r);
  r = req("GET", "/health", NULL, 0, NULL);
  assert_non_null(strstr(r.body.buf, "\"tenant\":\"default\""));
  assert_non_null(strstr(r.body.buf, "\"body_tenant\":\"from-body\""));
  reply_free(&r);
  r = req("GET", "/health", NULL, 0, "X-Scope-OrgID: ../etc", NULL);
  assert_int_equal(r.status, 400);
  reply_free(&r);
}

static void test_routing_and_limits(void **state) {
  (void)state;
  reply_t r = req("GET", "/nope", NULL, 0, NULL);
  assert_int_equal(r.status, 404);
  assert_non_null(strstr(r.body.buf, "\"success\":false"));
  reply_free(&r);
  r = req("DELETE", "/write", NULL, 0, NULL);
  assert_int_equal(r.status, 405);
  assert_non_null(strstr(r.headers.buf, "Allow: POST"));
  reply_free(&r);
  r = req("GET", "/read/abc?q=hello%20there&match[]=a&match[]=b", NULL, 0, "X-API-Key: r-token",
          "X-Request-ID: my-req-1", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"param\":\"abc\""));
  assert_non_null(strstr(r.body.buf, "\"q\":\"hello there\""));
  assert_non_null(strstr(r.body.buf, "\"nmatch\":2"));
  assert_non_null(strstr(r.body.buf, "\"id\":\"my-req-1\""));
  assert_non_null(strstr(r.headers.buf, "X-Request-ID: my-req-1"));
  reply_free(&r);
  /* form body merged after the query */
  const char *form = "q=ignored&match[]=c";
  r = req("POST", "/write?match[]=a", form, strlen(form), "X-API-Key: w-token",
          "Content-Type: application/x-www-form-urlencoded; charset=utf-8", NULL);
  assert_non_null(strstr(r.body.buf, "\"nmatch\":2"));
  assert_non_null(strstr(r.body.buf, "\"ct\":\"application/x-www-form-urlencoded\""));
  reply_free(&r);
  /* 413 by Content-Length and by decoded size */
  char *big = malloc(10000);
  memset(big, 'a', 10000);
  r = req("POST", "/write", big, 10000, "X-API-Key: w-token", NULL);
  assert_int_equal(r.status, 413);
  reply_free(&r);
  /* a chunked body (no Content-Length) that outgrows the limit */
  r = req("POST", "/write", big, 10000, "X-API-Key: w-token", "Transfer-Encoding: chunked", NULL);
  assert_int_equal(r.status, 413);
  assert_non_null(strstr(r.body.buf, "limit"));
  reply_free(&r);
  r = req("POST", "/write", big, 4000, "X-API-Key: w-token", "Transfer-Encoding: chunked", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"len\":4000"));
  reply_free(&r);
  char *gz;
  size_t gzn;
  assert_int_equal(http_gzip(big, 10000, &gz, &gzn), 0);
  r = req("POST", "/write", gz, gzn, "X-API-Key: w-token", "Content-Encoding: gzip", NULL);
  assert_int_equal(r.status, 413);
  reply_free(&r);
  free(gz);
  /* decoded body reaches the handler */
  assert_int_equal(http_gzip(big, 3000, &gz, &gzn) == 0, 1);
  r = req("POST", "/write", gz, gzn, "X-API-Key: w-token", "Content-Encoding: gzip", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"len\":3000"));
  reply_free(&r);
  /* raw route keeps the encoded bytes */
  r = req("POST", "/raw", gz, gzn, "X-API-Key: w-token", "Content-Encoding: gzip", NULL);
  assert_int_equal(r.status, 200);
  char want[32];
  snprintf(want, sizeof want, "\"len\":%zu", gzn);
  assert_non_null(strstr(r.body.buf, want));
  reply_free(&r);
  free(gz);
  /* snappy (remote_write style) and corrupt bodies */
  size_t sn = snappy_max_compressed_length(100);
  char *sd = malloc(sn);
  snappy_compress(big, 100, sd, &sn);
  r = req("POST", "/api/v1/write", sd, sn, "X-API-Key: w-token", "Content-Encoding: snappy", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"len\":100"));
  reply_free(&r);
  r = req("POST", "/api/v1/write", sd, sn / 2, "X-API-Key: w-token", "Content-Encoding: snappy", NULL);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr(r.body.buf, "snappy"));
  assert_non_null(strstr(r.body.buf, "bad_data"));
  reply_free(&r);
  r = req("POST", "/write", "garbage", 7, "X-API-Key: w-token", "Content-Encoding: gzip", NULL);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr(r.body.buf, "gzip"));
  reply_free(&r);
  r = req("POST", "/write", "garbage", 7, "X-API-Key: w-token", "Content-Encoding: br", NULL);
  assert_int_equal(r.status, 415);
  reply_free(&r);
  free(sd);
  free(big);
}

static void test_response_features(void **state) {
  (void)state;
  reply_t r = req("GET", "/big", NULL, 0, "Accept-Encoding: gzip", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.headers.buf, "Content-Encoding: gzip"));
  char *out;
  size_t outlen;
  char err[128];
  assert_int_equal(http_decode("gzip", r.body.buf, r.body.len, 1 << 20, &out, &outlen, err, sizeof err), 0);
  assert_non_null(strstr(out, "line 1999 of a large body"));
  free(out);
  reply_free(&r);
  r = req("GET", "/big", NULL, 0, NULL);
  assert_null(strstr(r.headers.buf, "Content-Encoding"));
  assert_true(r.body.len > 40000);
  reply_free(&r);
  /* CORS */
  r = req("GET", "/health", NULL, 0, "Origin: https://grafana.example", NULL);
  assert_non_null(strstr(r.headers.buf, "Access-Control-Allow-Origin: https://grafana.example"));
  reply_free(&r);
  r = req("GET", "/health", NULL, 0, "Origin: https://evil.example", NULL);
  assert_null(strstr(r.headers.buf, "Access-Control-Allow-Origin"));
  reply_free(&r);
  r = req("OPTIONS", "/write", NULL, 0, "Origin: https://grafana.example", NULL);
  assert_int_equal(r.status, 204);
  assert_non_null(strstr(r.headers.buf, "Access-Control-Allow-Methods: POST"));
  reply_free(&r);
  /* HEAD */
  r = req("HEAD", "/big", NULL, 0, NULL);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body.len, 0);
  reply_free(&r);
  /* streaming */
  r = req("GET", "/stream", NULL, 0, NULL);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.buf, "data: 1\n\ndata: 3\n\n");
  assert_non_null(strstr(r.headers.buf, "text/event-stream"));
  reply_free(&r);
}

static void *slow_client(void *p) {
  (void)p;
  reply_t *r = malloc(sizeof *r);
  *r = req("POST", "/slow", "x", 1, NULL);
  return r;
}

static void test_insert_limit_and_metrics(void **state) {
  (void)state;
  pthread_t t;
  pthread_create(&t, NULL, slow_client, NULL);
  pthread_mutex_lock(&slow_mu);
  while (!slow_inside) pthread_cond_wait(&slow_cv, &slow_mu);
  pthread_mutex_unlock(&slow_mu);
  /* the one insert slot is taken */
  reply_t r = req("POST", "/slow", "x", 1, NULL);
  assert_int_equal(r.status, 429);
  assert_non_null(strstr(r.headers.buf, "Retry-After: 1"));
  reply_free(&r);
  pthread_mutex_lock(&slow_mu);
  slow_release = 1;
  pthread_cond_broadcast(&slow_cv);
  pthread_mutex_unlock(&slow_mu);
  reply_t *first;
  pthread_join(t, (void **)&first);
  assert_int_equal(first->status, 204);
  reply_free(first);
  free(first);
  /* the slot was released */
  r = req("POST", "/slow", "x", 1, NULL);
  assert_int_equal(r.status, 204);
  reply_free(&r);
  /* self-metrics were recorded (completion runs right after the response; allow a moment) */
  sb_t sb = {0};
  for (int i = 0; i < 50; i++) {
    sb_reset(&sb);
    metrics_expose(g_reg, &sb, METRICS_FMT_PROMETHEUS);
    if (strstr(sb.buf, "http_requests_total{code=\"429\",handler=\"/slow\",method=\"POST\"} 1")) break;
    usleep(20000);
  }
  assert_non_null(strstr(sb.buf, "http_requests_total{code=\"429\",handler=\"/slow\",method=\"POST\"} 1"));
  assert_non_null(strstr(sb.buf, "http_requests_total{code=\"404\",handler=\"none\",method=\"GET\"}"));
  assert_non_null(strstr(sb.buf, "http_request_duration_seconds_bucket{handler=\"/slow\",le=\"+Inf\"}"));
  sb_free(&sb);
}

static void test_reload_auth(void **state) {
  (void)state;
  http_auth_key_t keys[] = {{"new", "n-token", NULL, "t2", HTTP_ROLE_READ}};
  assert_int_equal(http_server_set_auth(g_srv, keys, 1), 0);
  reply_t r = req("GET", "/read/1", NULL, 0, "X-API-Key: r-token", NULL);
  assert_int_equal(r.status, 401);
  reply_free(&r);
  r = req("GET", "/read/1", NULL, 0, "X-API-Key: n-token", NULL);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.body.buf, "\"tenant\":\"t2\""));
  reply_free(&r);
  /* auth off */
  assert_int_equal(http_server_set_auth(g_srv, NULL, 0), 0);
  r = req("POST", "/admin", "x", 1, NULL);
  assert_int_equal(r.status, 200);
  reply_free(&r);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_auth_matrix),         cmocka_unit_test(test_tenants),
      cmocka_unit_test(test_routing_and_limits),  cmocka_unit_test(test_response_features),
      cmocka_unit_test(test_insert_limit_and_metrics), cmocka_unit_test(test_reload_auth),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
