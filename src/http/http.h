/*
 * http — metricsd's HTTP server over libmicrohttpd: router with path parameters, request
 * body buffering and decoding (gzip, deflate, zstd, snappy), limits, authentication and
 * tenants, CORS, TLS, response compression, error envelopes and streaming responses.
 *
 * Handlers are plain functions that read an http_req_t and fill an http_resp_t; the server
 * sends the response after the handler returns (or streams it through a callback). A
 * handler never sees a request that failed routing, authentication, body limits or body
 * decoding: those are answered by the server with the error envelopes below.
 *
 * Error envelopes (docs/api.md):
 *   REST (every path not under /api/):   {"success":false,"error":"<message>"}
 *   Prometheus (paths under /api/):       {"status":"error","errorType":"<type>","error":"<message>"}
 * The server picks the envelope by path for its own errors (404, 405, 401, 403, 413, 429,
 * 400 on a corrupt body); handlers pick theirs with http_resp_error / http_resp_prom_error.
 *
 * Tenants: with auth keys configured, the tenant is the key's and cannot be overridden.
 * Without keys, it is the X-Scope-OrgID header, else (track API) the body's tenant_id, else
 * "default" — see http_req_tenant_with().
 *
 * Threading: the router is built before http_server_start and not changed after (routes
 * added later are ignored until restart). Handlers run on libmicrohttpd worker threads,
 * concurrently; an http_req_t / http_resp_t belongs to the one thread running its handler.
 * http_server_set_auth may be called at any time (reload).
 */
#ifndef METRICSD_HTTP_H
#define METRICSD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/core.h"
#include "core/metrics.h"

typedef struct http_server http_server_t;
typedef struct http_router http_router_t;
typedef struct http_req http_req_t;
typedef struct http_resp http_resp_t;

typedef void (*http_handler_fn)(http_req_t *req, http_resp_t *resp, void *ctx);

/* The role a route requires. ADMIN keys have every role. NONE = public (no credential
 * needed even with auth on: /health, /ready). */
typedef enum {
  HTTP_ROLE_NONE = 0,
  HTTP_ROLE_READ = 1,
  HTTP_ROLE_WRITE = 2,
  HTTP_ROLE_ADMIN = 4,
} http_role_t;

/* Route flags. */
enum {
  /* Take a slot of the server's max_concurrent_inserts semaphore for the handler's run;
   * when none is free the server answers 429 + Retry-After without calling the handler. */
  HTTP_ROUTE_INSERT = 1u << 0,
  /* Hand the body over as received (no Content-Encoding decoding). */
  HTTP_ROUTE_RAW_BODY = 1u << 1,
};

/* ---- router ------------------------------------------------------------------------- */

http_router_t *http_router_new(void);
void http_router_free(http_router_t *r);

/* Adds a route. method: "GET", "POST", "PUT", "DELETE", "PATCH"... (one per call; HEAD is
 * served by GET routes). pattern: a path whose segments may be "{name}" (one segment) or,
 * as the last segment only, "{name*}" (the rest of the path, possibly empty). Literal
 * segments win over parameters. Adding the same method+pattern again REPLACES the earlier
 * handler, role and flags (so a module can override a default). Returns 0, MD_EINVAL for a
 * malformed pattern, MD_ENOMEM. The pattern also names the route in self-metrics
 * (http_requests_total{handler="<pattern>"}). */
int http_route_add(http_router_t *r, const char *method, const char *pattern, http_role_t role,
                   unsigned flags, http_handler_fn fn, void *ctx);

/* Calls fn for every route, in registration order (a replaced route keeps its place):
 * what the server answers, for GET /-/routes and the test that keeps docs/api.md true. */
typedef void (*http_route_visit_fn)(void *ctx, const char *method, const char *pattern, http_role_t role,
                                    unsigned flags);
void http_router_foreach(const http_router_t *r, http_route_visit_fn fn, void *ctx);

/* ---- server ------------------------------------------------------------------------- */

typedef struct http_auth_key {
  const char *name;     /* for logs */
  const char *token;    /* bearer / X-API-Key / basic-auth password */
  const char *username; /* basic auth user name; NULL = any */
  const char *tenant;   /* NULL = "default" */
  unsigned roles;       /* HTTP_ROLE_* bits */
} http_auth_key_t;

typedef struct http_server_options {
  const char *listen;            /* "host:port", ":port" (all interfaces), "[::1]:port"; port 0 = any */
  unsigned threads;              /* 0 = a thread per connection (default); N = a pool of N with epoll */
  unsigned max_connections;      /* 0 = 1024 */
  unsigned max_connections_per_ip; /* 0 = no per-address limit */
  unsigned connection_timeout_s; /* idle connection timeout; 0 = 30 */
  uint64_t max_body_bytes;       /* before and after decoding; 0 = 64 MiB */
  unsigned max_concurrent_inserts; /* 0 = 2 x CPUs */
  const char *tls_cert_file;     /* both set = HTTPS */
  const char *tls_key_file;
  const char *cors_origin;       /* NULL = no CORS headers */
  const http_auth_key_t *keys;   /* copied; empty = auth off */
  size_t nkeys;
  metrics_registry_t *metrics;   /* may be NULL; http_requests_total etc. go here */
} http_server_options_t;

/* Starts listening and serving the router (which must outlive the server). On failure
 * returns a negative MD_* code and err says why (port in use, bad TLS files...). */
int http_server_start(const http_server_options_t *opt, http_router_t *router, http_server_t **out,
                      char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
uint16_t http_server_port(const http_server_t *s);
/* Replaces the auth keys (reload). Returns 0 or MD_ENOMEM (old keys kept). */
int http_server_set_auth(http_server_t *s, const http_auth_key_t *keys, size_t nkeys);
/* Stops accepting new connections; in-flight requests continue. */
void http_server_quiesce(http_server_t *s);
/* Finishes in-flight requests, closes everything, frees s. NULL is a no-op. */
void http_server_stop(http_server_t *s);

/* ---- request ------------------------------------------------------------------------ */

const char *http_req_method(const http_req_t *req);
const char *http_req_path(const http_req_t *req);       /* decoded path, without the query */
const char *http_req_pattern(const http_req_t *req);    /* the matched route pattern */
/* A path parameter by name ("{name}" in the pattern), URL-decoded; NULL if none. */
const char *http_req_param(const http_req_t *req, const char *name);
/* First value of a query parameter — or, for POST application/x-www-form-urlencoded, of the
 * query string and form body merged (query first). NULL if absent; "" if present empty. */
const char *http_req_query(const http_req_t *req, const char *name);
/* Every value of a parameter in order (for match[]). *values is owned by req. */
size_t http_req_query_all(const http_req_t *req, const char *name, const char *const **values);
/* A request header by name (case-insensitive); NULL if absent. */
const char *http_req_header(const http_req_t *req, const char *name);
/* The body after Content-Encoding decoding (raw with HTTP_ROUTE_RAW_BODY). Always followed
 * by a NUL byte not counted in *len (so text parsers may rely on it); may contain NULs. */
const char *http_req_body(const http_req_t *req, size_t *len);
/* Content-Type without parameters, lower-cased ("application/json"); "" if absent. */
const char *http_req_content_type(const http_req_t *req);
/* The request's tenant: the API key's, else X-Scope-OrgID, else "default". */
const char *http_req_tenant(const http_req_t *req);
/* The same, but a tenant named by the request body (seed 004's tenant_id) is used when no
 * key and no header fixed one. body_tenant may be NULL or "". */
const char *http_req_tenant_with(const http_req_t *req, const char *body_tenant);
/* Whether an API key fixed the tenant (then body/header tenants must be ignored). */
bool http_req_tenant_fixed(const http_req_t *req);
/* The request id: the client's X-Request-ID when sane, else generated. Echoed in the
 * response's X-Request-ID header; use it in logs. */
const char *http_req_id(const http_req_t *req);
/* Whether the request may act in `role` (always true with auth off). */
bool http_req_has_role(const http_req_t *req, http_role_t role);
/* Name of the API key used, or NULL (auth off / public route). */
const char *http_req_key_name(const http_req_t *req);
const char *http_req_remote_addr(const http_req_t *req);
/* Request-scoped memory, freed after the response is sent. */
arena_t *http_req_arena(http_req_t *req);
/* Takes an insert slot by hand (see HTTP_ROUTE_INSERT), released when the request ends.
 * Returns false when none is free: answer 429 (http_resp_too_many). Idempotent. */
bool http_req_acquire_insert(http_req_t *req);
/* The monotonic start time of the request (ns), for handler-side timing. */
int64_t http_req_start_ns(const http_req_t *req);

/* ---- response ----------------------------------------------------------------------- */

/* Defaults: 200, "application/json", empty body. */
void http_resp_status(http_resp_t *resp, int status);
void http_resp_content_type(http_resp_t *resp, const char *content_type);
/* Adds a header (copied). Returns 0 or MD_ENOMEM. */
int http_resp_header(http_resp_t *resp, const char *name, const char *value);
/* The body builder: append to it. */
sb_t *http_resp_body(http_resp_t *resp);
/* Replaces the body with a copy of p[0..n). */
void http_resp_bytes(http_resp_t *resp, const void *p, size_t n);
/* Status + content type + body in one call (copies). */
void http_resp_send(http_resp_t *resp, int status, const char *content_type, const void *p, size_t n);
/* REST error envelope {"success":false,"error":"..."} with status. */
void http_resp_error(http_resp_t *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prometheus error envelope {"status":"error","errorType":type,"error":"..."} with status.
 * Types: bad_data (400), execution (422), timeout (503), canceled, internal (500),
 * unavailable (503), not_found (404). */
void http_resp_prom_error(http_resp_t *resp, int status, const char *error_type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Adds Retry-After: seconds (for 429 and 503). */
void http_resp_retry_after(http_resp_t *resp, int seconds);
/* 429 with Retry-After: 1 and the envelope matching the path. */
void http_resp_too_many(http_resp_t *resp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Turns compression of this response off (it is on for bodies > 1 KiB when the client sends
 * Accept-Encoding: gzip). */
void http_resp_no_compress(http_resp_t *resp);

/* Streaming: after the handler returns, the server sends the status and headers, then calls
 * fn repeatedly on a worker thread to produce the body in chunks (chunked encoding). fn
 * writes up to max bytes into buf and returns how many; 0 = nothing yet (the server waits
 * ~20 ms and calls again; send something — e.g. an SSE comment — at least every few
 * seconds); HTTP_STREAM_END to finish; HTTP_STREAM_ERROR to abort the connection. fn may
 * block briefly (it holds a worker thread). free_fn(ctx) runs once when the stream ends,
 * the client goes away, or the server stops. `stopping` is true once the server is shutting
 * down: fn should then return HTTP_STREAM_END promptly. */
#define HTTP_STREAM_END ((ssize_t)-1)
#define HTTP_STREAM_ERROR ((ssize_t)-2)
typedef ssize_t (*http_stream_fn)(void *ctx, char *buf, size_t max, bool stopping);
void http_resp_stream(http_resp_t *resp, http_stream_fn fn, void *ctx, void (*free_fn)(void *ctx));

/* ---- body codecs -------------------------------------------------------------------- */

/* Decodes data per a Content-Encoding value: "identity"/"" (copy), "gzip"/"x-gzip",
 * "deflate" (zlib or raw), "zstd", "snappy" (block format). The output is malloc'ed,
 * NUL-terminated, at most max_out bytes (MD_ELIMIT beyond). Corrupt input → MD_EINVAL with
 * err naming the encoding; unknown encoding → MD_EINVAL (caller answers 415). */
int http_decode(const char *encoding, const void *in, size_t n, size_t max_out, char **out,
                size_t *outlen, char *err, size_t errlen);
/* Gzip-compresses (for responses, clients and tests); malloc'ed output. */
int http_gzip(const void *in, size_t n, char **out, size_t *outlen);

#endif
