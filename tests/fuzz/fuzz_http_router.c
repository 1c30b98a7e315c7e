/* Fuzz target: the router (path splitting, parameter and wildcard matching, precedence,
 * Allow lists) on arbitrary paths and methods. Input: "<METHOD> <path>"; without a space the
 * whole input is a GET path. Invariants: a match's parameters are never empty and a "405"
 * (path matched, no route) always has an Allow list. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "http/http_internal.h"

static void noop(http_req_t *req, http_resp_t *resp, void *ctx) { (void)req, (void)resp, (void)ctx; }

static http_router_t *router(void) {
  static http_router_t *r;
  if (r) return r;
  r = http_router_new();
  if (!r) abort();
  static const char *const routes[][2] = {
      {"GET", "/health"},          {"GET", "/api/v1/query"},          {"POST", "/api/v1/query"},
      {"GET", "/api/v1/label/{name}/values"}, {"GET", "/api/v1/label/__name__/values"},
      {"GET", "/metrics/sources/{id}"},       {"DELETE", "/metrics/sources/{id}"},
      {"GET", "/static/{path*}"},  {"PUT", "/a/{b}/c/{d}"},           {"GET", "/"},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (http_route_add(r, routes[i][0], routes[i][1], HTTP_ROLE_READ, 0, noop, NULL) != 0) abort();
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *in = malloc(size + 1);
  if (!in) return 0;
  memcpy(in, data, size);
  in[size] = 0;
  const char *method = "GET", *path = in;
  char *sp = memchr(in, ' ', size);
  if (sp) {
    *sp = 0;
    method = in;
    path = sp + 1;
  }
  arena_t *a = arena_new(0);
  if (a) {
    http_match_t m;
    http_router_match(router(), method, path, a, &m);
    if (m.route) {
      for (size_t i = 0; i < m.nparams; i++)
        if (!m.params[i].name || !m.params[i].value) abort();
    } else if (m.path_matched && !m.allow[0]) {
      abort();
    }
    arena_free(a);
  }
  free(in);
  return 0;
}
