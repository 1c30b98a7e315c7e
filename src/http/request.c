/*
 * Request accessors and response builders (the handler-facing half of http.h). Everything a
 * request owns lives in its arena; a response owns its body builder and header copies.
 *
 * Threading: a request/response pair belongs to the worker thread running its handler.
 */
#include "http_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- request ------------------------------------------------------------------------ */

const char *http_req_method(const http_req_t *req) { return req->method; }
const char *http_req_path(const http_req_t *req) { return req->path; }
const char *http_req_pattern(const http_req_t *req) { return req->route ? req->route->pattern : ""; }

const char *http_req_param(const http_req_t *req, const char *name) {
  for (size_t i = 0; i < req->nparams; i++)
    if (req->params[i].name && strcmp(req->params[i].name, name) == 0) return req->params[i].value;
  return NULL;
}

const char *http_req_query(const http_req_t *req, const char *name) {
  for (size_t i = 0; i < req->nquery; i++)
    if (strcmp(req->query[i].name, name) == 0) return req->query[i].value;
  return NULL;
}

size_t http_req_query_all(const http_req_t *req, const char *name, const char *const **values) {
  http_req_t *r = (http_req_t *)req; /* the scratch array is request-owned */
  size_t n = 0;
  for (size_t i = 0; i < req->nquery; i++) n += strcmp(req->query[i].name, name) == 0;
  *values = NULL;
  if (!n) return 0;
  const char **v = arena_alloc(r->arena, n * sizeof *v);
  if (!v) return 0;
  size_t j = 0;
  for (size_t i = 0; i < req->nquery; i++)
    if (strcmp(req->query[i].name, name) == 0) v[j++] = req->query[i].value;
  r->values_tmp = v;
  *values = v;
  return n;
}

const char *http_req_header(const http_req_t *req, const char *name) {
  for (size_t i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
  return NULL;
}

const char *http_req_body(const http_req_t *req, size_t *len) {
  if (len) *len = req->body_len;
  return req->body ? req->body : "";
}

const char *http_req_content_type(const http_req_t *req) { return req->content_type ? req->content_type : ""; }

const char *http_req_tenant(const http_req_t *req) { return req->tenant ? req->tenant : "default"; }

const char *http_req_tenant_with(const http_req_t *req, const char *body_tenant) {
  if (req->tenant_fixed || req->tenant_from_header) return http_req_tenant(req);
  if (body_tenant && *body_tenant && http_tenant_valid(body_tenant, strlen(body_tenant))) return body_tenant;
  return http_req_tenant(req);
}

bool http_req_tenant_fixed(const http_req_t *req) { return req->tenant_fixed; }
const char *http_req_id(const http_req_t *req) { return req->id; }

bool http_req_has_role(const http_req_t *req, http_role_t role) {
  if (!req->auth_on || role == HTTP_ROLE_NONE) return true;
  if (req->roles & HTTP_ROLE_ADMIN) return true;
  return (req->roles & (unsigned)role) == (unsigned)role;
}

const char *http_req_key_name(const http_req_t *req) { return req->key_name; }
const char *http_req_remote_addr(const http_req_t *req) { return req->remote ? req->remote : ""; }
arena_t *http_req_arena(http_req_t *req) { return req->arena; }
int64_t http_req_start_ns(const http_req_t *req) { return req->start_ns; }

bool http_req_acquire_insert(http_req_t *req) {
  if (req->insert_held) return true;
  if (!req->insert_counter) return true;
  unsigned prev = atomic_fetch_add(req->insert_counter, 1);
  if (prev >= req->insert_max) {
    atomic_fetch_sub(req->insert_counter, 1);
    return false;
  }
  req->insert_held = true;
  return true;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t http_url_decode(char *s, size_t n, bool form) {
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n) {
      int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
      if (h >= 0 && l >= 0) {
        s[j++] = (char)(h * 16 + l);
        i += 2;
        continue;
      }
    }
    s[j++] = (form && s[i] == '+') ? ' ' : s[i];
  }
  s[j] = 0; /* callers pass arena copies with room for the NUL at s[n] */
  return j;
}

int http_req_add_query(http_req_t *req, const char *name, size_t nlen, const char *value, size_t vlen) {
  if ((req->nquery & (req->nquery - 1)) == 0) { /* grow at powers of two (arena: old blocks stay) */
    size_t cap = req->nquery ? req->nquery * 2 : 8;
    http_kv_t *n = arena_alloc(req->arena, cap * sizeof *n);
    if (!n) return MD_ENOMEM;
    if (req->nquery) memcpy(n, req->query, req->nquery * sizeof *n);
    req->query = n;
  }
  char *k = arena_strndup(req->arena, name, nlen);
  char *v = arena_strndup(req->arena, value ? value : "", value ? vlen : 0);
  if (!k || !v) return MD_ENOMEM;
  req->query[req->nquery].name = k;
  req->query[req->nquery].value = v;
  req->nquery++;
  return 0;
}

/* application/x-www-form-urlencoded: a=1&b=2; names and values URL-decoded. */
int http_req_parse_form(http_req_t *req, const char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t e = i;
    while (e < n && p[e] != '&') e++;
    if (e > i) {
      size_t eq = i;
      while (eq < e && p[eq] != '=') eq++;
      char *k = arena_strndup(req->arena, p + i, eq - i);
      char *v = arena_strndup(req->arena, eq < e ? p + eq + 1 : "", eq < e ? e - eq - 1 : 0);
      if (!k || !v) return MD_ENOMEM;
      size_t kl = http_url_decode(k, eq - i, true);
      size_t vl = http_url_decode(v, eq < e ? e - eq - 1 : 0, true);
      int rc = http_req_add_query(req, k, kl, v, vl);
      if (rc) return rc;
    }
    i = e + 1;
  }
  return 0;
}

bool http_tenant_valid(const char *s, size_t n) {
  if (n == 0 || n > 150) return false;
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalnum(c)) continue;
    if (strchr("!-_.*'()", c) && c) continue;
    return false;
  }
  return true;
}

/* ---- response ----------------------------------------------------------------------- */

void http_resp_init(http_resp_t *resp, const char *path) {
  memset(resp, 0, sizeof *resp);
  resp->status = 200;
  resp->prom_envelope = path && strncmp(path, "/api/", 5) == 0;
}

void http_resp_cleanup(http_resp_t *resp) {
  free(resp->content_type);
  sb_free(&resp->body);
  for (size_t i = 0; i < resp->nheaders; i++) {
    free(resp->headers[i].name);
    free(resp->headers[i].value);
  }
  free(resp->headers);
  if (resp->stream_free) resp->stream_free(resp->stream_ctx);
  resp->stream_free = NULL;
  resp->headers = NULL;
  resp->nheaders = 0;
  resp->content_type = NULL;
}

void http_resp_status(http_resp_t *resp, int status) { resp->status = status; }

void http_resp_content_type(http_resp_t *resp, const char *ct) {
  char *n = ct ? strdup(ct) : NULL;
  if (ct && !n) return;
  free(resp->content_type);
  resp->content_type = n;
}

int http_resp_header(http_resp_t *resp, const char *name, const char *value) {
  http_header_out_t *n = realloc(resp->headers, (resp->nheaders + 1) * sizeof *n);
  if (!n) return MD_ENOMEM;
  resp->headers = n;
  char *k = strdup(name), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return MD_ENOMEM;
  }
  resp->headers[resp->nheaders++] = (http_header_out_t){k, v};
  return 0;
}

sb_t *http_resp_body(http_resp_t *resp) { return &resp->body; }

void http_resp_bytes(http_resp_t *resp, const void *p, size_t n) {
  sb_reset(&resp->body);
  sb_append(&resp->body, p, n);
}

void http_resp_send(http_resp_t *resp, int status, const char *content_type, const void *p, size_t n) {
  http_resp_status(resp, status);
  if (content_type) http_resp_content_type(resp, content_type);
  http_resp_bytes(resp, p, n);
}

static void envelope(http_resp_t *resp, int status, bool prom, const char *type, const char *fmt, va_list ap) {
  char msg[1024];
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  size_t len = n < 0 ? 0 : ((size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
  resp->status = status;
  http_resp_content_type(resp, "application/json");
  sb_reset(&resp->body);
  if (prom) {
    sb_puts(&resp->body, "{\"status\":\"error\",\"errorType\":");
    sb_json_str(&resp->body, type, strlen(type));
    sb_puts(&resp->body, ",\"error\":");
  } else {
    sb_puts(&resp->body, "{\"success\":false,\"error\":");
  }
  sb_json_str(&resp->body, msg, len);
  sb_putc(&resp->body, '}');
}

void http_resp_error(http_resp_t *resp, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  envelope(resp, status, false, NULL, fmt, ap);
  va_end(ap);
}

void http_resp_prom_error(http_resp_t *resp, int status, const char *error_type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  envelope(resp, status, true, error_type ? error_type : "bad_data", fmt, ap);
  va_end(ap);
}

/* The server's own errors pick the envelope by path. */
static const char *prom_type_for(int status) {
  switch (status) {
  case 400: case 413: case 415: return "bad_data";
  case 401: case 403: return "unauthorized";
  case 404: return "not_found";
  case 405: return "bad_data";
  case 422: return "execution";
  case 429: return "too_many_requests";
  case 503: return "unavailable";
  default: return "internal";
  }
}

void http_resp_server_error(http_resp_t *resp, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  envelope(resp, status, resp->prom_envelope, prom_type_for(status), fmt, ap);
  va_end(ap);
}

void http_resp_retry_after(http_resp_t *resp, int seconds) {
  char b[24];
  snprintf(b, sizeof b, "%d", seconds < 0 ? 0 : seconds);
  http_resp_header(resp, "Retry-After", b);
}

void http_resp_too_many(http_resp_t *resp, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  envelope(resp, 429, resp->prom_envelope, "too_many_requests", fmt, ap);
  va_end(ap);
  http_resp_retry_after(resp, 1);
}

void http_resp_no_compress(http_resp_t *resp) { resp->no_compress = true; }

void http_resp_stream(http_resp_t *resp, http_stream_fn fn, void *ctx, void (*free_fn)(void *ctx)) {
  if (resp->stream_free) resp->stream_free(resp->stream_ctx);
  resp->stream_fn = fn;
  resp->stream_ctx = ctx;
  resp->stream_free = free_fn;
}
