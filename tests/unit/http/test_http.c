/* Unit tests for the http module without sockets: router precedence, parameters, 404/405,
 * replacement; body codecs (good, corrupt, bombs); form parsing; tenant rules; envelopes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "http/http.h"
#include "http/http_internal.h"

static void h_a(http_req_t *req, http_resp_t *resp, void *ctx) { (void)req, (void)resp, (void)ctx; }
static void h_b(http_req_t *req, http_resp_t *resp, void *ctx) { (void)req, (void)resp, (void)ctx; }

typedef struct visit {
  char seen[16][96];
  size_t n;
} visit_t;

static void visit(void *ctx, const char *method, const char *pattern, http_role_t role, unsigned flags) {
  visit_t *v = ctx;
  if (v->n < 16) snprintf(v->seen[v->n], sizeof v->seen[0], "%s %s %d %u", method, pattern, (int)role, flags);
  v->n++;
}

static void test_router(void **state) {
  (void)state;
  http_router_t *r = http_router_new();
  arena_t *a = arena_new(0);
  assert_int_equal(http_route_add(r, "GET", "/api/v1/label/{name}/values", HTTP_ROLE_READ, 0, h_a, NULL), 0);
  assert_int_equal(http_route_add(r, "GET", "/api/v1/label/__name__/values", HTTP_ROLE_READ, 0, h_b, NULL), 0);
  assert_int_equal(http_route_add(r, "POST", "/metrics/sources", HTTP_ROLE_WRITE, 0, h_a, NULL), 0);
  assert_int_equal(http_route_add(r, "GET", "/metrics/sources/{id}", HTTP_ROLE_READ, 0, h_a, (void *)1), 0);
  assert_int_equal(http_route_add(r, "DELETE", "/metrics/sources/{id}", HTTP_ROLE_ADMIN, 0, h_b, NULL), 0);
  assert_int_equal(http_route_add(r, "GET", "/static/{path*}", HTTP_ROLE_NONE, 0, h_a, NULL), 0);
  assert_int_equal(http_route_add(r, "GET", "/", HTTP_ROLE_NONE, 0, h_b, NULL), 0);
  /* malformed patterns */
  assert_int_equal(http_route_add(r, "GET", "no-slash", 0, 0, h_a, NULL), MD_EINVAL);
  assert_int_equal(http_route_add(r, "GET", "/a/{x*}/b", 0, 0, h_a, NULL), MD_EINVAL);
  assert_int_equal(http_route_add(r, "GET", "/a/x{y}", 0, 0, h_a, NULL), MD_EINVAL);

  http_match_t m;
  http_router_match(r, "GET", "/api/v1/label/job/values", a, &m);
  assert_non_null(m.route);
  assert_ptr_equal(m.route->fn, h_a);
  assert_int_equal(m.nparams, 1);
  assert_string_equal(m.params[0].name, "name");
  assert_string_equal(m.params[0].value, "job");
  /* literal beats parameter, whatever the registration order */
  http_router_match(r, "GET", "/api/v1/label/__name__/values", a, &m);
  assert_ptr_equal(m.route->fn, h_b);
  /* 405 with Allow */
  http_router_match(r, "PUT", "/metrics/sources/abc", a, &m);
  assert_null(m.route);
  assert_true(m.path_matched);
  assert_non_null(strstr(m.allow, "GET"));
  assert_non_null(strstr(m.allow, "DELETE"));
  /* 404 */
  http_router_match(r, "GET", "/nope", a, &m);
  assert_null(m.route);
  assert_false(m.path_matched);
  http_router_match(r, "GET", "/metrics/sources/", a, &m); /* empty parameter */
  assert_null(m.route);
  /* HEAD uses GET */
  http_router_match(r, "HEAD", "/metrics/sources/x1", a, &m);
  assert_non_null(m.route);
  assert_string_equal(m.params[0].value, "x1");
  /* rest wildcard */
  http_router_match(r, "GET", "/static/js/app.js", a, &m);
  assert_non_null(m.route);
  assert_string_equal(m.params[0].name, "path");
  assert_string_equal(m.params[0].value, "js/app.js");
  http_router_match(r, "GET", "/", a, &m);
  assert_ptr_equal(m.route->fn, h_b);
  /* replacement: same method + pattern */
  assert_int_equal(http_route_add(r, "GET", "/metrics/sources/{id}", HTTP_ROLE_ADMIN, HTTP_ROUTE_INSERT, h_b, NULL), 0);
  http_router_match(r, "GET", "/metrics/sources/x", a, &m);
  assert_ptr_equal(m.route->fn, h_b);
  assert_int_equal(m.route->role, HTTP_ROLE_ADMIN);
  assert_int_equal(r->n, 7);
  /* foreach: every route once, in registration order, with the replaced one updated */
  visit_t v = {0};
  http_router_foreach(r, visit, &v);
  assert_int_equal(v.n, 7);
  assert_string_equal(v.seen[3], "GET /metrics/sources/{id} 4 1");
  assert_string_equal(v.seen[6], "GET / 0 0");
  arena_free(a);
  http_router_free(r);
}

static void roundtrip(const char *enc, const char *data, size_t n, const char *wire, size_t wn) {
  char *out = NULL;
  size_t outlen = 0;
  char err[256];
  int rc = http_decode(enc, wire, wn, 1 << 20, &out, &outlen, err, sizeof err);
  if (rc) fail_msg("%s: %s", enc, err);
  assert_int_equal(outlen, n);
  assert_memory_equal(out, data, n);
  assert_int_equal(out[outlen], 0);
  free(out);
}

static void expect_error(const char *enc, const void *wire, size_t wn, size_t max, int want, const char *needle) {
  char *out = NULL;
  size_t outlen = 0;
  char err[256] = "";
  int rc = http_decode(enc, wire, wn, max, &out, &outlen, err, sizeof err);
  if (rc != want) fail_msg("%s: rc %d want %d (%s)", enc, rc, want, err);
  assert_null(out);
  if (!strstr(err, needle)) fail_msg("%s: '%s' lacks '%s'", enc, err, needle);
}

static void test_codecs(void **state) {
  (void)state;
  size_t n = 100000;
  char *data = malloc(n);
  for (size_t i = 0; i < n; i++) data[i] = (char)("metric_name{job=\"x\"} 1\n"[i % 24]);
  /* gzip */
  char *gz = NULL;
  size_t gzn = 0;
  assert_int_equal(http_gzip(data, n, &gz, &gzn), 0);
  assert_true(gzn < n / 10);
  roundtrip("gzip", data, n, gz, gzn);
  roundtrip("x-gzip", data, n, gz, gzn);
  expect_error("gzip", gz, gzn / 2, 1 << 20, MD_EINVAL, "gzip");                 /* truncated */
  expect_error("gzip", gz, gzn, 1000, MD_ELIMIT, "more than 1000");              /* bomb */
  char *bad = malloc(gzn);
  memcpy(bad, gz, gzn);
  bad[gzn / 2] ^= 0x55;
  bad[gzn / 2 + 1] ^= 0x55;
  expect_error("gzip", bad, gzn, 1 << 20, MD_EINVAL, "corrupt gzip");
  expect_error("gzip", "not gzip at all", 15, 1 << 20, MD_EINVAL, "corrupt gzip");
  /* deflate: zlib-wrapped and raw */
  uLongf zn = compressBound(n);
  char *z = malloc(zn);
  assert_int_equal(compress((Bytef *)z, &zn, (const Bytef *)data, n), Z_OK);
  roundtrip("deflate", data, n, z, zn);
  z_stream zs = {0};
  deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  char *raw = malloc(n);
  zs.next_in = (Bytef *)data;
  zs.avail_in = (uInt)n;
  zs.next_out = (Bytef *)raw;
  zs.avail_out = (uInt)n;
  assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
  size_t rawn = n - zs.avail_out;
  deflateEnd(&zs);
  roundtrip("deflate", data, n, raw, rawn);
  expect_error("deflate", "\x01\x02\x03", 3, 1 << 20, MD_EINVAL, "deflate");
  /* zstd */
  size_t zsn = ZSTD_compressBound(n);
  char *zsd = malloc(zsn);
  zsn = ZSTD_compress(zsd, zsn, data, n, 3);
  assert_false(ZSTD_isError(zsn));
  roundtrip("zstd", data, n, zsd, zsn);
  expect_error("zstd", zsd, zsn - 5, 1 << 20, MD_EINVAL, "zstd");
  expect_error("zstd", zsd, zsn, 500, MD_ELIMIT, "zstd");
  expect_error("zstd", "garbage!", 8, 1 << 20, MD_EINVAL, "corrupt zstd");
  /* snappy */
  size_t sn = snappy_max_compressed_length(n);
  char *sd = malloc(sn);
  assert_int_equal(snappy_compress(data, n, sd, &sn), SNAPPY_OK);
  roundtrip("snappy", data, n, sd, sn);
  roundtrip("SNAPPY", data, n, sd, sn);
  expect_error("snappy", sd, sn / 2, 1 << 20, MD_EINVAL, "corrupt snappy");
  expect_error("snappy", sd, sn, 100, MD_ELIMIT, "snappy");
  expect_error("snappy", "\xff\xff\xff\xff\x0f", 5, (size_t)1 << 34, MD_EINVAL, "impossible"); /* claims 4 GiB */
  /* identity and unknown */
  roundtrip("", "abc", 3, "abc", 3);
  roundtrip("identity", "abc", 3, "abc", 3);
  expect_error("identity", "abcdef", 6, 3, MD_ELIMIT, "larger");
  expect_error("br", "x", 1, 100, MD_EINVAL, "unsupported");
  free(data), free(gz), free(bad), free(z), free(raw), free(zsd), free(sd);
}

static void test_form_and_tenant(void **state) {
  (void)state;
  http_req_t req = {0};
  req.arena = arena_new(0);
  assert_int_equal(http_req_add_query(&req, "match[]", 7, "up", 2), 0);
  const char *form = "query=rate(x%5B5m%5D)&match%5B%5D=a+b&empty=&flag&match[]=c%zz";
  assert_int_equal(http_req_parse_form(&req, form, strlen(form)), 0);
  assert_string_equal(http_req_query(&req, "query"), "rate(x[5m])");
  assert_string_equal(http_req_query(&req, "empty"), "");
  assert_string_equal(http_req_query(&req, "flag"), "");
  assert_null(http_req_query(&req, "missing"));
  const char *const *vals;
  assert_int_equal(http_req_query_all(&req, "match[]", &vals), 3);
  assert_string_equal(vals[0], "up"); /* query string first */
  assert_string_equal(vals[1], "a b");
  assert_string_equal(vals[2], "c%zz"); /* a bad escape is kept literally */
  /* tenants */
  assert_true(http_tenant_valid("acme-1", 6));
  assert_true(http_tenant_valid("a.b_c(1)", 8));
  assert_false(http_tenant_valid("", 0));
  assert_false(http_tenant_valid("..", 2));
  assert_false(http_tenant_valid("a/b", 3));
  assert_false(http_tenant_valid("a b", 3));
  req.tenant = "default";
  assert_string_equal(http_req_tenant_with(&req, "t1"), "t1");
  assert_string_equal(http_req_tenant_with(&req, "bad/tenant"), "default");
  assert_string_equal(http_req_tenant_with(&req, NULL), "default");
  req.tenant = "from-header";
  req.tenant_from_header = true;
  assert_string_equal(http_req_tenant_with(&req, "t1"), "from-header");
  req.tenant = "keyed";
  req.tenant_fixed = true;
  req.tenant_from_header = false;
  assert_string_equal(http_req_tenant_with(&req, "t1"), "keyed");
  /* roles */
  req.auth_on = true;
  req.roles = HTTP_ROLE_READ;
  assert_true(http_req_has_role(&req, HTTP_ROLE_READ));
  assert_false(http_req_has_role(&req, HTTP_ROLE_WRITE));
  assert_true(http_req_has_role(&req, HTTP_ROLE_NONE));
  req.roles = HTTP_ROLE_ADMIN;
  assert_true(http_req_has_role(&req, HTTP_ROLE_WRITE));
  /* insert semaphore */
  _Atomic unsigned counter = 0;
  http_req_t r1 = {0}, r2 = {0};
  r1.insert_counter = r2.insert_counter = &counter;
  r1.insert_max = r2.insert_max = 1;
  assert_true(http_req_acquire_insert(&r1));
  assert_true(http_req_acquire_insert(&r1)); /* idempotent */
  assert_false(http_req_acquire_insert(&r2));
  assert_int_equal(counter, 1);
  arena_free(req.arena);
}

static void test_envelopes(void **state) {
  (void)state;
  http_resp_t r;
  http_resp_init(&r, "/metrics/track");
  http_resp_error(&r, 400, "bad \"%s\"", "x");
  assert_int_equal(r.status, 400);
  assert_string_equal(r.body.buf, "{\"success\":false,\"error\":\"bad \\\"x\\\"\"}");
  http_resp_prom_error(&r, 422, "execution", "boom");
  assert_string_equal(r.body.buf, "{\"status\":\"error\",\"errorType\":\"execution\",\"error\":\"boom\"}");
  http_resp_cleanup(&r);
  http_resp_init(&r, "/api/v1/query");
  http_resp_too_many(&r, "slow down");
  assert_int_equal(r.status, 429);
  assert_non_null(strstr(r.body.buf, "\"status\":\"error\""));
  assert_int_equal(r.nheaders, 1);
  assert_string_equal(r.headers[0].name, "Retry-After");
  http_resp_cleanup(&r);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_router),
      cmocka_unit_test(test_codecs),
      cmocka_unit_test(test_form_and_tenant),
      cmocka_unit_test(test_envelopes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
