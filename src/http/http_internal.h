/*
 * Private structures of the http module, shared by router.c, request.c and server.c (and
 * by the unit tests, which drive the router and requests without a socket).
 */
#ifndef METRICSD_HTTP_INTERNAL_H
#define METRICSD_HTTP_INTERNAL_H

#include <stdatomic.h>

#include "http.h"

#define HTTP_MAX_PARAMS 8

typedef struct http_route {
  char *method;
  char *pattern;
  char **segs;      /* split pattern; "{x}" param, "{x*}" rest */
  size_t nsegs;
  bool rest;        /* last segment is {x*} */
  http_role_t role;
  unsigned flags;
  http_handler_fn fn;
  void *ctx;
} http_route_t;

struct http_router {
  http_route_t *routes;
  size_t n, cap;
};

typedef struct http_kv {
  const char *name;
  const char *value;
} http_kv_t;

/* Result of a lookup. */
typedef struct http_match {
  const http_route_t *route;  /* NULL: 404 or 405 */
  bool path_matched;          /* some route has this path (with another method) → 405 */
  char allow[128];            /* methods allowed for the path, "GET, POST" */
  size_t nparams;
  http_kv_t params[HTTP_MAX_PARAMS]; /* values allocated in the arena */
} http_match_t;

/* Finds the route for method+path. Literal segments beat parameters, parameters beat a
 * rest wildcard, compared segment by segment from the left. HEAD uses GET routes. */
void http_router_match(const http_router_t *r, const char *method, const char *path, arena_t *arena,
                       http_match_t *m);

typedef struct http_server_shared http_server_shared_t;

struct http_req {
  arena_t *arena;
  const char *method;
  const char *path;
  const http_route_t *route;
  http_kv_t params[HTTP_MAX_PARAMS];
  size_t nparams;
  http_kv_t *headers;   /* request headers (names as sent) */
  size_t nheaders;
  http_kv_t *query;     /* query args, then form args */
  size_t nquery;
  const char **values_tmp; /* scratch for http_req_query_all */
  char *body;           /* decoded, NUL-terminated */
  size_t body_len;
  const char *content_type;
  const char *tenant;
  bool tenant_fixed;    /* set by an API key */
  bool tenant_from_header;
  const char *key_name;
  unsigned roles;       /* effective roles (all when auth is off) */
  bool auth_on;
  char id[40];
  const char *remote;
  int64_t start_ns;
  bool insert_held;
  _Atomic unsigned *insert_counter; /* the server's semaphore */
  unsigned insert_max;
};

typedef struct http_header_out {
  char *name, *value;
} http_header_out_t;

struct http_resp {
  int status;
  char *content_type;
  sb_t body;
  http_header_out_t *headers;
  size_t nheaders;
  bool no_compress;
  bool prom_envelope; /* path is under /api/ */
  http_stream_fn stream_fn;
  void *stream_ctx;
  void (*stream_free)(void *);
};

/* Request helpers used by server.c and tests. */
int http_req_parse_form(http_req_t *req, const char *p, size_t n);
int http_req_add_query(http_req_t *req, const char *name, size_t nlen, const char *value, size_t vlen);
void http_resp_init(http_resp_t *resp, const char *path);
void http_resp_cleanup(http_resp_t *resp);
/* An error from the server itself: envelope chosen by path (/api/ → Prometheus). */
void http_resp_server_error(http_resp_t *resp, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* URL-decodes in place ('+' → ' ' when form is true); returns the new length. */
size_t http_url_decode(char *s, size_t n, bool form);
/* Valid tenant id: 1-150 chars of [A-Za-z0-9!-_.*'()], not "." or "..". */
bool http_tenant_valid(const char *s, size_t n);

#endif
