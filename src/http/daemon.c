/*
 * The HTTP server proper: libmicrohttpd wiring, the per-request state machine, limits,
 * authentication, CORS, response compression and streaming.
 *
 * Per request, libmicrohttpd calls on_request() several times:
 *   1st call   headers known: route, auth, tenant, Content-Length checks. An early error
 *              (404, 405, 401, 403, 413, bad tenant) is queued at once, so the body of a
 *              rejected or oversized request is never read.
 *   upload     body bytes appended to a buffer bounded by max_body_bytes (a chunked body
 *              that grows past it is drained without storing and gets 413 at its end —
 *              libmicrohttpd cannot answer mid-upload — or is cut off 8 MiB later).
 *   last call  insert slot (429), Content-Encoding decoding (400/413/415), form merge, the
 *              handler, the response (gzip when accepted and > 1 KiB).
 * on_completed() then records metrics and the access log and frees the request.
 *
 * Threading model: by default one thread per connection (MHD_USE_THREAD_PER_CONNECTION),
 * because handlers may block for a long time (heavy queries, streams) and must not stall
 * other connections; max_connections bounds the thread count. With threads > 0 a fixed
 * pool with epoll is used instead (cheaper for many idle keep-alive clients, but a slow
 * handler then delays the other connections of its worker).
 *
 * Locks: `auth_lock` (rwlock) protects the key table, swapped on reload. Counters are
 * atomics. Shutdown: quiesce (close the listening socket), set `stopping` (streams end),
 * wait for the requests being handled (bounded; not for bodies still arriving), then
 * MHD_stop_daemon.
 */
#include "http_internal.h"
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct auth_table {
  http_auth_key_t *keys; /* strings owned */
  size_t n;
} auth_table_t;

struct http_server {
  struct MHD_Daemon *d;
  http_router_t *router;
  metrics_registry_t *metrics;
  uint64_t max_body;
  unsigned max_inserts;
  _Atomic unsigned inserts;
  _Atomic long inflight;  /* requests from their headers to their completion */
  _Atomic long handling;  /* of those, the ones whose body is in and handler started */
  _Atomic bool stopping;
  _Atomic uint64_t next_id;
  uint32_t id_salt;
  char *cors_origin;
  pthread_rwlock_t auth_lock;
  auth_table_t auth;
  uint16_t port;
  char *tls_cert, *tls_key;
  metrics_gauge_t *g_inflight;
};

typedef struct req_ctx {
  http_req_t req;
  http_resp_t resp;
  http_server_t *srv;
  char *raw;
  size_t raw_len, raw_cap;
  bool first_done;
  bool queued;
  bool streaming;
  bool too_large;       /* a chunked body outgrew the limit: draining it */
  bool handling;        /* counted in srv->handling */
  size_t discarded;
  size_t sent_bytes;
} req_ctx_t;

typedef struct stream_state {
  http_server_t *srv;
  http_stream_fn fn;
  void *ctx;
  void (*free_fn)(void *);
} stream_state_t;

/* ---- auth --------------------------------------------------------------------------- */

static void auth_table_free(auth_table_t *t) {
  for (size_t i = 0; i < t->n; i++) {
    free((char *)t->keys[i].name);
    free((char *)t->keys[i].token);
    free((char *)t->keys[i].username);
    free((char *)t->keys[i].tenant);
  }
  free(t->keys);
  t->keys = NULL;
  t->n = 0;
}

static int auth_table_copy(auth_table_t *t, const http_auth_key_t *keys, size_t n) {
  t->keys = calloc(n ? n : 1, sizeof *t->keys);
  t->n = 0;
  if (!t->keys) return MD_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    http_auth_key_t *k = &t->keys[i];
    t->n = i + 1;
    k->roles = keys[i].roles;
    k->name = strdup(keys[i].name ? keys[i].name : "key");
    k->token = strdup(keys[i].token ? keys[i].token : "");
    k->username = keys[i].username ? strdup(keys[i].username) : NULL;
    k->tenant = strdup(keys[i].tenant ? keys[i].tenant : "default");
    if (!k->name || !k->token || !k->tenant || (keys[i].username && !k->username)) {
      auth_table_free(t);
      return MD_ENOMEM;
    }
  }
  return 0;
}

int http_server_set_auth(http_server_t *s, const http_auth_key_t *keys, size_t nkeys) {
  auth_table_t t;
  int rc = auth_table_copy(&t, keys, nkeys);
  if (rc) return rc;
  pthread_rwlock_wrlock(&s->auth_lock);
  auth_table_t old = s->auth;
  s->auth = t;
  pthread_rwlock_unlock(&s->auth_lock);
  auth_table_free(&old);
  return 0;
}

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

/* Decodes base64 into out (size cap); returns length or -1. */
static long b64_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t j = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '=') break;
    int v = b64val((unsigned char)s[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (j >= cap) return -1;
      out[j++] = (char)((acc >> bits) & 0xff);
    }
  }
  return (long)j;
}

typedef enum { AUTH_OK, AUTH_MISSING, AUTH_BAD } auth_result_t;

/* Finds the key matching the request's credential. Every key is compared (no early exit)
 * with md_secure_equal so timing does not reveal which key or how much of it matched. */
static auth_result_t authenticate(http_server_t *s, req_ctx_t *c) {
  http_req_t *req = &c->req;
  const char *authz = http_req_header(req, "Authorization");
  const char *apikey = http_req_header(req, "X-API-Key");
  const char *token = NULL, *user = NULL;
  size_t token_len = 0, user_len = 0;
  char basic[512];
  if (apikey && *apikey) {
    token = apikey;
    token_len = strlen(apikey);
  } else if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
    token = authz + 7;
    while (*token == ' ') token++;
    token_len = strlen(token);
  } else if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
    const char *b = authz + 6;
    while (*b == ' ') b++;
    long n = b64_decode(b, strlen(b), basic, sizeof basic - 1);
    if (n < 0) return AUTH_BAD;
    basic[n] = 0;
    char *colon = memchr(basic, ':', (size_t)n);
    if (!colon) return AUTH_BAD;
    user = basic;
    user_len = (size_t)(colon - basic);
    token = colon + 1;
    token_len = (size_t)(n - (long)user_len - 1);
  } else if (authz && *authz) {
    return AUTH_BAD;
  } else {
    return AUTH_MISSING;
  }
  if (token_len == 0) return AUTH_BAD;
  pthread_rwlock_rdlock(&s->auth_lock);
  const http_auth_key_t *found = NULL;
  for (size_t i = 0; i < s->auth.n; i++) {
    const http_auth_key_t *k = &s->auth.keys[i];
    bool tok_ok = md_secure_equal(k->token, strlen(k->token), token, token_len);
    bool user_ok = true;
    if (user && k->username) user_ok = md_secure_equal(k->username, strlen(k->username), user, user_len);
    if (tok_ok && user_ok && !found) found = k;
  }
  if (found) {
    req->roles = found->roles;
    req->tenant = arena_strdup(req->arena, found->tenant);
    req->key_name = arena_strdup(req->arena, found->name);
    req->tenant_fixed = true;
  }
  pthread_rwlock_unlock(&s->auth_lock);
  return found ? AUTH_OK : AUTH_BAD;
}

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct hdr_collect {
  http_req_t *req;
  size_t cap;
  bool oom;
} hdr_collect_t;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                      const char *value, size_t value_size) {
  (void)kind;
  hdr_collect_t *h = cls;
  http_req_t *req = h->req;
  if (req->nheaders == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    http_kv_t *n = arena_alloc(req->arena, cap * sizeof *n);
    if (!n) {
      h->oom = true;
      return MHD_NO;
    }
    if (req->nheaders) memcpy(n, req->headers, req->nheaders * sizeof *n);
    req->headers = n;
    h->cap = cap;
  }
  char *k = arena_strndup(req->arena, key, key_size);
  char *v = arena_strndup(req->arena, value ? value : "", value ? value_size : 0);
  if (!k || !v) {
    h->oom = true;
    return MHD_NO;
  }
  req->headers[req->nheaders++] = (http_kv_t){k, v};
  return MHD_YES;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                   const char *value, size_t value_size) {
  (void)kind;
  hdr_collect_t *h = cls;
  if (http_req_add_query(h->req, key, key_size, value, value ? value_size : 0) != 0) {
    h->oom = true;
    return MHD_NO;
  }
  return MHD_YES;
}

static bool id_char_ok(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.';
}

static void make_request_id(http_server_t *s, http_req_t *req) {
  const char *given = http_req_header(req, "X-Request-ID");
  if (given) {
    size_t n = strlen(given);
    bool ok = n > 0 && n < sizeof req->id;
    for (size_t i = 0; ok && i < n; i++) ok = id_char_ok(given[i]);
    if (ok) {
      memcpy(req->id, given, n + 1);
      return;
    }
  }
  uint64_t seq = atomic_fetch_add(&s->next_id, 1);
  snprintf(req->id, sizeof req->id, "%08x%08llx", s->id_salt, (unsigned long long)seq);
}

static void content_type_of(http_req_t *req) {
  const char *ct = http_req_header(req, "Content-Type");
  if (!ct) {
    req->content_type = "";
    return;
  }
  size_t n = strcspn(ct, ";");
  while (n && ct[n - 1] == ' ') n--;
  char *t = arena_strndup(req->arena, ct, n);
  if (!t) {
    req->content_type = "";
    return;
  }
  for (char *p = t; *p; p++)
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  req->content_type = t;
}

static bool accepts_gzip(const http_req_t *req) {
  const char *ae = http_req_header(req, "Accept-Encoding");
  if (!ae) return false;
  /* "gzip" listed and not explicitly refused with q=0 */
  const char *p = strcasestr(ae, "gzip");
  if (!p) return false;
  const char *q = p + 4;
  while (*q == ' ') q++;
  if (*q == ';') {
    const char *qv = strstr(q, "q=");
    if (qv && strtod(qv + 2, NULL) <= 0) return false;
  }
  return true;
}

static void add_cors(http_server_t *s, const http_req_t *req, struct MHD_Response *r) {
  if (!s->cors_origin) return;
  const char *origin = http_req_header(req, "Origin");
  if (strcmp(s->cors_origin, "*") == 0) {
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
  } else if (origin && strcmp(origin, s->cors_origin) == 0) {
    MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(r, "Vary", "Origin");
  } else {
    return;
  }
  MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-ID, Retry-After");
}

/* ---- streaming ---------------------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  stream_state_t *st = cls;
  for (;;) {
    bool stopping = atomic_load(&st->srv->stopping);
    ssize_t n = st->fn(st->ctx, buf, max, stopping);
    if (n > 0) return n > (ssize_t)max ? (ssize_t)max : n;
    if (n == HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (stopping) return MHD_CONTENT_READER_END_OF_STREAM;
    /* nothing yet: wait a little rather than spin (the callback holds a worker thread) */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void stream_free(void *cls) {
  stream_state_t *st = cls;
  if (st->free_fn) st->free_fn(st->ctx);
  free(st);
}

/* ---- responses ---------------------------------------------------------------------- */

static enum MHD_Result queue(http_server_t *s, struct MHD_Connection *conn, req_ctx_t *c) {
  http_resp_t *resp = &c->resp;
  http_req_t *req = &c->req;
  struct MHD_Response *r = NULL;
  bool gz = false;
  if (resp->stream_fn) {
    stream_state_t *st = malloc(sizeof *st);
    if (st) {
      *st = (stream_state_t){s, resp->stream_fn, resp->stream_ctx, resp->stream_free};
      r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_reader, st, stream_free);
      if (!r) free(st);
      else {
        resp->stream_free = NULL; /* now owned by the MHD response */
        c->streaming = true;
      }
    }
  } else {
    size_t len = resp->body.len;
    const char *body = resp->body.buf ? resp->body.buf : "";
    if (resp->status == 204 || resp->status == 304) len = 0;
    char *out = NULL;
    size_t outlen = 0;
    if (len > 1024 && !resp->no_compress && accepts_gzip(req) && http_gzip(body, len, &out, &outlen) == 0) {
      gz = true;
    } else {
      out = sb_steal(&resp->body);
      outlen = len;
    }
    if (out) {
      r = MHD_create_response_from_buffer_with_free_callback(outlen, out, free);
      if (!r) free(out);
      else c->sent_bytes = outlen;
    }
  }
  if (!r) {
    /* out of memory: a bodiless 500 is the best we can still do */
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    resp->status = 500;
  } else {
    if (resp->status != 204 && resp->status != 304)
      MHD_add_response_header(r, "Content-Type", resp->content_type ? resp->content_type : "application/json");
    if (gz) {
      MHD_add_response_header(r, "Content-Encoding", "gzip");
      MHD_add_response_header(r, "Vary", "Accept-Encoding");
    }
    for (size_t i = 0; i < resp->nheaders; i++)
      MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
  }
  MHD_add_response_header(r, "X-Request-ID", req->id);
  add_cors(s, req, r);
  if (atomic_load(&s->stopping)) MHD_add_response_header(r, "Connection", "close");
  enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
  MHD_destroy_response(r);
  c->queued = true;
  return ret;
}

/* Queues a server-made error right away (before/while reading the body). */
static enum MHD_Result early(http_server_t *s, struct MHD_Connection *conn, req_ctx_t *c, int status,
                             const char *msg) {
  http_resp_server_error(&c->resp, status, "%s", msg);
  return queue(s, conn, c);
}

/* ---- the request state machine -------------------------------------------------------- */

static enum MHD_Result first_call(http_server_t *s, struct MHD_Connection *conn, req_ctx_t *c, const char *url,
                                  const char *method) {
  http_req_t *req = &c->req;
  hdr_collect_t hc = {req, 0, false};
  MHD_get_connection_values_n(conn, MHD_HEADER_KIND, collect_header, &hc);
  hdr_collect_t qc = {req, 0, false};
  MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, collect_arg, &qc);
  make_request_id(s, req);
  content_type_of(req);
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr) {
    char addr[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    req->remote = arena_strdup(req->arena, addr);
  }
  if (hc.oom || qc.oom) return early(s, conn, c, 500, "out of memory");

  /* routing */
  http_match_t m;
  char allow[sizeof m.allow + 24];
  bool options = strcmp(method, "OPTIONS") == 0;
  http_router_match(s->router, options ? "GET" : method, url, req->arena, &m);
  /* Allow names what the server answers: the routes' methods, HEAD wherever GET is served,
   * and OPTIONS everywhere (RFC 9110 §10.2.1). */
  snprintf(allow, sizeof allow, "%s%s, OPTIONS", m.allow, strstr(m.allow, "GET") ? ", HEAD" : "");
  if (options) {
    if (!m.path_matched) return early(s, conn, c, 404, "not found");
    c->resp.status = 204;
    http_resp_header(&c->resp, "Allow", allow);
    if (s->cors_origin) {
      http_resp_header(&c->resp, "Access-Control-Allow-Methods", allow);
      http_resp_header(&c->resp, "Access-Control-Allow-Headers",
                       "Authorization, Content-Type, Content-Encoding, X-API-Key, X-Scope-OrgID, X-Request-ID");
      http_resp_header(&c->resp, "Access-Control-Max-Age", "600");
    }
    return queue(s, conn, c);
  }
  if (!m.route) {
    if (m.path_matched) {
      http_resp_header(&c->resp, "Allow", allow);
      char msg[360];
      snprintf(msg, sizeof msg, "method %.16s not allowed for %.100s (allowed: %s)", method, url, allow);
      return early(s, conn, c, 405, msg);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "not found: %.250s", url);
    return early(s, conn, c, 404, msg);
  }
  req->route = m.route;
  req->nparams = m.nparams;
  memcpy(req->params, m.params, sizeof m.params);

  /* authentication and roles */
  pthread_rwlock_rdlock(&s->auth_lock);
  req->auth_on = s->auth.n > 0;
  pthread_rwlock_unlock(&s->auth_lock);
  req->roles = HTTP_ROLE_READ | HTTP_ROLE_WRITE | HTTP_ROLE_ADMIN;
  if (req->auth_on && m.route->role != HTTP_ROLE_NONE) {
    auth_result_t ar = authenticate(s, c);
    if (ar != AUTH_OK) {
      http_resp_header(&c->resp, "WWW-Authenticate", "Bearer realm=\"metricsd\", Basic realm=\"metricsd\"");
      return early(s, conn, c, 401, ar == AUTH_MISSING ? "authentication required (Authorization: Bearer, X-API-Key or basic auth)"
                                                       : "invalid credentials");
    }
    if (!http_req_has_role(req, m.route->role)) {
      char msg[160], roles[48];
      snprintf(msg, sizeof msg, "key '%s' lacks the %s role for this endpoint", req->key_name ? req->key_name : "?",
               config_roles_str(m.route->role, roles, sizeof roles));
      return early(s, conn, c, 403, msg);
    }
  }
  /* tenant (an API key's tenant was set above and is never overridden) */
  if (!req->tenant_fixed) {
    const char *org = http_req_header(req, "X-Scope-OrgID");
    if (org) {
      if (!http_tenant_valid(org, strlen(org)))
        return early(s, conn, c, 400, "invalid X-Scope-OrgID: 1-150 characters of A-Z a-z 0-9 ! - _ . * ' ( )");
      req->tenant = org;
      req->tenant_from_header = true;
    } else {
      req->tenant = "default";
    }
  }

  /* body size known up front */
  const char *cl = http_req_header(req, "Content-Length");
  if (cl) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno == 0 && *end == 0 && n > s->max_body) {
      char msg[160];
      snprintf(msg, sizeof msg, "request body of %llu bytes exceeds the limit of %llu bytes", n,
               (unsigned long long)s->max_body);
      return early(s, conn, c, 413, msg);
    }
    if (errno == 0 && *end == 0 && n > 0) {
      c->raw = malloc((size_t)n + 1);
      if (c->raw) c->raw_cap = (size_t)n + 1;
    }
  }
  return MHD_YES;
}

static enum MHD_Result last_call(http_server_t *s, struct MHD_Connection *conn, req_ctx_t *c) {
  http_req_t *req = &c->req;
  const http_route_t *rt = req->route;
  c->handling = true;
  atomic_fetch_add(&s->handling, 1);
  if (c->too_large) {
    char msg[160];
    snprintf(msg, sizeof msg, "request body exceeds the limit of %llu bytes", (unsigned long long)s->max_body);
    http_resp_header(&c->resp, "Connection", "close");
    return early(s, conn, c, 413, msg);
  }
  if ((rt->flags & HTTP_ROUTE_INSERT) && !http_req_acquire_insert(req)) {
    http_resp_too_many(&c->resp, "too many concurrent inserts (limit %u); retry later", s->max_inserts);
    return queue(s, conn, c);
  }
  /* decode */
  const char *enc = http_req_header(req, "Content-Encoding");
  if (c->raw_len || (enc && *enc)) {
    /* Raw routes and bodies without Content-Encoding take the receive buffer as it is (it
     * always has room for the NUL): copying a multi-MB push once more cost ~5 % of an import. */
    if ((rt->flags & HTTP_ROUTE_RAW_BODY) || !enc || !*enc) {
      if (!c->raw && !(c->raw = malloc(1))) return early(s, conn, c, 500, "out of memory");
      c->raw[c->raw_len] = 0;
      req->body = c->raw;
      req->body_len = c->raw_len;
      c->raw = NULL;
    } else {
      char err[256];
      char *out = NULL;
      size_t outlen = 0;
      int rc = http_decode(enc, c->raw ? c->raw : "", c->raw_len, s->max_body, &out, &outlen, err, sizeof err);
      if (rc == MD_ELIMIT) return early(s, conn, c, 413, err);
      if (rc == MD_EINVAL) return early(s, conn, c, strstr(err, "unsupported") ? 415 : 400, err);
      if (rc) return early(s, conn, c, 500, err);
      req->body = out;
      req->body_len = outlen;
      free(c->raw);
      c->raw = NULL;
    }
  }
  if (strcmp(req->method, "POST") == 0 && strcmp(req->content_type, "application/x-www-form-urlencoded") == 0 &&
      req->body_len) {
    if (http_req_parse_form(req, req->body, req->body_len) != 0) return early(s, conn, c, 500, "out of memory");
  }
  rt->fn(req, &c->resp, rt->ctx);
  return queue(s, conn, c);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  (void)version;
  http_server_t *s = cls;
  req_ctx_t *c = *con_cls;
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c) return MHD_NO;
    c->srv = s;
    c->req.arena = arena_new(16 * 1024);
    if (!c->req.arena) {
      free(c);
      return MHD_NO;
    }
    c->req.start_ns = md_mono_ns();
    c->req.method = arena_strdup(c->req.arena, method);
    c->req.path = arena_strdup(c->req.arena, url);
    c->req.insert_counter = &s->inserts;
    c->req.insert_max = s->max_inserts;
    http_resp_init(&c->resp, url);
    *con_cls = c;
    atomic_fetch_add(&s->inflight, 1);
    metrics_gauge_add(s->g_inflight, 1);
    if (!c->req.method || !c->req.path) return early(s, conn, c, 500, "out of memory");
    return first_call(s, conn, c, url, method);
  }
  if (c->queued) { /* an early answer is on its way: discard whatever body still arrives */
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (c->too_large || c->raw_len + n > s->max_body) {
      /* libmicrohttpd cannot queue a response in the middle of an upload, so a chunked body
       * that outgrows the limit is drained (not stored) and answered 413 at its end; a
       * client that keeps sending far past the limit is disconnected instead. */
      c->too_large = true;
      c->discarded += n;
      free(c->raw);
      c->raw = NULL;
      c->raw_len = c->raw_cap = 0;
      return c->discarded > 8 * 1024 * 1024 ? MHD_NO : MHD_YES;
    }
    if (c->raw_len + n + 1 > c->raw_cap) {
      size_t cap = c->raw_cap ? c->raw_cap : 64 * 1024;
      while (cap < c->raw_len + n + 1) cap *= 2;
      if (cap > s->max_body + 1) cap = s->max_body + 1;
      char *nb = realloc(c->raw, cap);
      if (!nb) return early(s, conn, c, 503, "out of memory buffering the request body");
      c->raw = nb;
      c->raw_cap = cap;
    }
    memcpy(c->raw + c->raw_len, upload_data, n);
    c->raw_len += n;
    return MHD_YES;
  }
  return last_call(s, conn, c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)conn;
  http_server_t *s = cls;
  req_ctx_t *c = *con_cls;
  if (!c) return;
  *con_cls = NULL;
  http_req_t *req = &c->req;
  double secs = (double)(md_mono_ns() - req->start_ns) / 1e9;
  int status = c->queued ? c->resp.status : 499; /* client went away before an answer */
  const char *handler = req->route ? req->route->pattern : "none";
  const char *method = req->method ? req->method : "?";
  if (s->metrics) {
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    metrics_counter_inc(metrics_counter(s->metrics, "http_requests_total", "HTTP requests by handler, code and method.",
                                        "handler", handler, "code", code, "method", method, NULL));
    metrics_histogram_observe(metrics_histogram(s->metrics, "http_request_duration_seconds",
                                                "HTTP request latency by handler.", NULL, 0, "handler", handler, NULL),
                              secs);
    /* Seed 004's metrics_collection_duration_seconds: for a push endpoint (an insert route),
     * one accepted request is one collection, from its first byte to its answer. */
    if (req->route && (req->route->flags & HTTP_ROUTE_INSERT) && status >= 200 && status < 300)
      metrics_histogram_observe(
          metrics_histogram(s->metrics, "metrics_collection_duration_seconds", "Collection duration.", NULL, 0, NULL),
          secs);
  }
  if (log_enabled(LOG_DEBUG)) {
    sb_t f = {0};
    sb_puts(&f, "\"method\":");
    sb_json_str(&f, method, strlen(method));
    sb_puts(&f, ",\"path\":");
    sb_json_str(&f, req->path ? req->path : "", req->path ? strlen(req->path) : 0);
    sb_printf(&f, ",\"status\":%d,\"duration_ms\":%.3f,\"bytes\":%zu,\"tenant\":", status, secs * 1000, c->sent_bytes);
    const char *t = req->tenant ? req->tenant : "";
    sb_json_str(&f, t, strlen(t));
    sb_puts(&f, ",\"remote\":");
    sb_json_str(&f, req->remote ? req->remote : "", req->remote ? strlen(req->remote) : 0);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) sb_printf(&f, ",\"terminated\":%d", (int)toe);
    if (!f.oom) log_write(LOG_DEBUG, req->id, f.buf, "request");
    sb_free(&f);
  }
  if (req->insert_held) atomic_fetch_sub(&s->inserts, 1);
  if (c->handling) atomic_fetch_sub(&s->handling, 1);
  free(req->body);
  free(c->raw);
  http_resp_cleanup(&c->resp);
  arena_free(req->arena);
  free(c);
  metrics_gauge_add(s->g_inflight, -1);
  atomic_fetch_sub(&s->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
  log_write(LOG_DEBUG, NULL, NULL, "http: %s", msg);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Splits "host:port" / ":port" / "[v6]:port" / "port" and resolves it. */
static int resolve_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sl, bool *v6, char *err,
                          size_t errlen) {
  char host[256] = "", port[16] = "";
  const char *colon = strrchr(listen, ':');
  if (!colon) {
    snprintf(port, sizeof port, "%s", listen);
  } else {
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) return md_error(err, errlen, MD_EINVAL, "listen address too long");
    memcpy(host, listen, hl);
    host[hl] = 0;
    snprintf(port, sizeof port, "%s", colon + 1);
    if (host[0] == '[') {
      size_t n = strlen(host);
      if (n < 2 || host[n - 1] != ']') return md_error(err, errlen, MD_EINVAL, "bad IPv6 listen address %s", listen);
      memmove(host, host + 1, n - 2);
      host[n - 2] = 0;
    }
  }
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int g = getaddrinfo(host[0] ? host : "0.0.0.0", port, &hints, &res);
  if (g != 0 || !res)
    return md_error(err, errlen, MD_EINVAL, "cannot resolve listen address %s: %s", listen, gai_strerror(g));
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *sl = res->ai_addrlen;
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return 0;
}

int http_server_start(const http_server_options_t *opt, http_router_t *router, http_server_t **out, char *err,
                      size_t errlen) {
  *out = NULL;
  http_server_t *s = calloc(1, sizeof *s);
  if (!s) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  int rc = 0;
  pthread_rwlock_init(&s->auth_lock, NULL);
  s->router = router;
  s->metrics = opt->metrics;
  s->max_body = opt->max_body_bytes ? opt->max_body_bytes : 64ull << 20;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu < 1) ncpu = 1;
  s->max_inserts = opt->max_concurrent_inserts ? opt->max_concurrent_inserts : (unsigned)(2 * ncpu);
  s->id_salt = (uint32_t)(md_hash64(&s, sizeof s, (uint64_t)md_now_ms()) ^ (uint64_t)getpid());
  if (opt->cors_origin && *opt->cors_origin && !(s->cors_origin = strdup(opt->cors_origin))) goto oom;
  if ((rc = auth_table_copy(&s->auth, opt->keys, opt->nkeys)) != 0) goto oom;
  if (s->metrics)
    s->g_inflight = metrics_gauge(s->metrics, "http_requests_in_flight", "HTTP requests being served.", NULL);

  struct sockaddr_storage ss;
  socklen_t sl = 0;
  bool v6 = false;
  if ((rc = resolve_listen(opt->listen ? opt->listen : ":8012", &ss, &sl, &v6, err, errlen)) != 0) goto fail;

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  if (opt->threads) flags |= MHD_USE_EPOLL_INTERNAL_THREAD;
  else flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
  if (v6) flags |= MHD_USE_IPv6;
  bool tls = opt->tls_cert_file && opt->tls_key_file;
  if (tls) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      rc = md_error(err, errlen, MD_EINVAL, "TLS requested but libmicrohttpd was built without TLS support");
      goto fail;
    }
    size_t n;
    if (md_read_file(opt->tls_cert_file, &s->tls_cert, &n) != 0) {
      rc = md_error(err, errlen, MD_EIO, "cannot read TLS certificate %s", opt->tls_cert_file);
      goto fail;
    }
    if (md_read_file(opt->tls_key_file, &s->tls_key, &n) != 0) {
      rc = md_error(err, errlen, MD_EIO, "cannot read TLS key %s", opt->tls_key_file);
      goto fail;
    }
    flags |= MHD_USE_TLS;
  }
  struct MHD_OptionItem ops[16];
  size_t k = 0;
  /* the logger first, so that messages about the other options reach it */
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &ss};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, opt->max_connections ? opt->max_connections : 1024, NULL};
  /* A per-address cap keeps one slow or hostile client (slowloris) from taking every
   * connection slot; the idle timeout alone cannot, as a trickle of bytes resets it. */
  if (opt->max_connections_per_ip)
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt->max_connections_per_ip, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, opt->connection_timeout_s ? opt->connection_timeout_s : 30, NULL};
  /* Per-connection pool for the request line, headers and read buffer. libmicrohttpd takes
   * pools above 32 KiB from mmap and zeroes them: a fresh connection then cost ~1 ms of page
   * faults, memset and munmap TLB shootdowns. At 32 KiB the pool comes from malloc (warm,
   * reused); request line + headers must fit in it (longer queries: POST a form body). */
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 32 * 1024, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
  if (opt->threads) ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, opt->threads, NULL};
  if (tls) {
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
  }
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
  if (!s->d) {
    rc = md_error(err, errlen, MD_EIO, "cannot listen on %s (address in use, permission, or bad TLS files?)",
                  opt->listen ? opt->listen : ":8012");
    goto fail;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : 0;
  *out = s;
  return 0;
oom:
  rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
fail:
  auth_table_free(&s->auth);
  pthread_rwlock_destroy(&s->auth_lock);
  free(s->cors_origin);
  free(s->tls_cert);
  free(s->tls_key);
  free(s);
  return rc;
}

uint16_t http_server_port(const http_server_t *s) { return s ? s->port : 0; }

void http_server_quiesce(http_server_t *s) {
  if (!s || !s->d) return;
  MHD_socket fd = MHD_quiesce_daemon(s->d);
  if (fd != MHD_INVALID_SOCKET) close(fd);
}

void http_server_stop(http_server_t *s) {
  if (!s) return;
  http_server_quiesce(s);
  atomic_store(&s->stopping, true);
  /* Let the requests being handled (and streams, now told to end) finish sending their
   * answers, for up to 3 s: a stop must complete within 5 s (systemd, Kubernetes and our
   * tests expect it). A request whose body is still arriving gets 1 s to complete it (then
   * it is handled and waited for); past that it has not been acted on and is cut off, so a
   * client trickling a body cannot hold the stop. MHD_stop_daemon then closes what is left;
   * a handler still running is never cut (MHD_stop_daemon joins its thread). */
  for (int i = 0; i < 300; i++) {
    if (atomic_load(&s->handling) == 0 && (atomic_load(&s->inflight) == 0 || i >= 100)) break;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (s->d) MHD_stop_daemon(s->d);
  auth_table_free(&s->auth);
  pthread_rwlock_destroy(&s->auth_lock);
  free(s->cors_origin);
  free(s->tls_cert);
  free(s->tls_key);
  free(s);
}
