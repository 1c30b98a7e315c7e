/*
 * The router: an ordered list of (method, pattern) routes matched segment by segment.
 *
 * Precedence when several patterns match one path: compare them segment by segment from
 * the left; a literal segment beats "{param}", which beats the "{rest*}" wildcard. So
 * "/api/v1/label/__name__/values" can be special-cased next to "/api/v1/label/{name}/values".
 * A linear scan is plenty for the ~100 routes metricsd has (well under a microsecond next
 * to everything else a request does).
 *
 * Threading: built single-threaded before the server starts; read-only afterwards.
 */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

http_router_t *http_router_new(void) { return calloc(1, sizeof(http_router_t)); }

static void route_free(http_route_t *rt) {
  for (size_t i = 0; i < rt->nsegs; i++) free(rt->segs[i]);
  free(rt->segs);
  free(rt->method);
  free(rt->pattern);
}

void http_router_free(http_router_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) route_free(&r->routes[i]);
  free(r->routes);
  free(r);
}

static bool is_param(const char *seg) {
  size_t n = strlen(seg);
  return n >= 3 && seg[0] == '{' && seg[n - 1] == '}';
}

static bool is_rest(const char *seg) {
  size_t n = strlen(seg);
  return is_param(seg) && n >= 4 && seg[n - 2] == '*';
}

/* Splits "/a/b/" into ["a", "b", ""]; "/" into [] (zero segments). */
static int split(const char *path, char ***out, size_t *nout) {
  *out = NULL;
  *nout = 0;
  if (path[0] != '/') return MD_EINVAL;
  if (path[1] == 0) return 0;
  size_t n = 1;
  for (const char *p = path + 1; *p; p++) n += *p == '/';
  char **segs = calloc(n, sizeof *segs);
  if (!segs) return MD_ENOMEM;
  const char *p = path + 1;
  for (size_t i = 0; i < n; i++) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    segs[i] = strndup(p, len);
    if (!segs[i]) {
      for (size_t j = 0; j < i; j++) free(segs[j]);
      free(segs);
      return MD_ENOMEM;
    }
    p += len + (e ? 1 : 0);
  }
  *out = segs;
  *nout = n;
  return 0;
}

int http_route_add(http_router_t *r, const char *method, const char *pattern, http_role_t role, unsigned flags,
                   http_handler_fn fn, void *ctx) {
  if (!r || !method || !*method || !pattern || !fn) return MD_EINVAL;
  http_route_t rt = {0};
  int rc = split(pattern, &rt.segs, &rt.nsegs);
  if (rc) return rc;
  for (size_t i = 0; i < rt.nsegs; i++) {
    const char *s = rt.segs[i];
    bool brace = strchr(s, '{') || strchr(s, '}');
    if ((brace && !is_param(s)) || (is_rest(s) && i + 1 != rt.nsegs) || (is_param(s) && strchr(s + 1, '{'))) {
      rc = MD_EINVAL;
      goto fail;
    }
  }
  rt.rest = rt.nsegs && is_rest(rt.segs[rt.nsegs - 1]);
  rt.method = strdup(method);
  rt.pattern = strdup(pattern);
  if (!rt.method || !rt.pattern) {
    rc = MD_ENOMEM;
    goto fail;
  }
  rt.role = role;
  rt.flags = flags;
  rt.fn = fn;
  rt.ctx = ctx;
  for (size_t i = 0; i < r->n; i++) {
    http_route_t *e = &r->routes[i];
    if (strcmp(e->method, method) == 0 && strcmp(e->pattern, pattern) == 0) {
      route_free(e); /* same method + pattern: the later registration replaces */
      *e = rt;
      return 0;
    }
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 32;
    http_route_t *n = realloc(r->routes, cap * sizeof *n);
    if (!n) {
      rc = MD_ENOMEM;
      goto fail;
    }
    r->routes = n;
    r->cap = cap;
  }
  r->routes[r->n++] = rt;
  return 0;
fail:
  route_free(&rt);
  return rc;
}

void http_router_foreach(const http_router_t *r, http_route_visit_fn fn, void *ctx) {
  for (size_t i = 0; r && i < r->n; i++)
    fn(ctx, r->routes[i].method, r->routes[i].pattern, r->routes[i].role, r->routes[i].flags);
}

/* Segment ranks for precedence: 2 literal, 1 param, 0 rest. Returns whether the route
 * matches; fills rank[] (one per path segment). */
static bool route_matches(const http_route_t *rt, char **segs, size_t nsegs, unsigned char *rank) {
  size_t fixed = rt->rest ? rt->nsegs - 1 : rt->nsegs;
  if (rt->rest ? nsegs < fixed : nsegs != fixed) return false;
  for (size_t i = 0; i < fixed; i++) {
    const char *ps = rt->segs[i];
    if (is_param(ps)) {
      if (!segs[i][0]) return false; /* a parameter is never empty */
      rank[i] = 1;
    } else if (strcmp(ps, segs[i]) == 0) {
      rank[i] = 2;
    } else {
      return false;
    }
  }
  for (size_t i = fixed; i < nsegs; i++) rank[i] = 0;
  return true;
}

static int rank_cmp(const unsigned char *a, const unsigned char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) return a[i] > b[i] ? 1 : -1;
  return 0;
}

void http_router_match(const http_router_t *r, const char *method, const char *path, arena_t *arena,
                       http_match_t *m) {
  memset(m, 0, sizeof *m);
  char **segs = NULL;
  size_t nsegs = 0;
  if (!r || split(path, &segs, &nsegs) != 0) return;
  const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
  unsigned char best_rank[64], rank[64];
  const http_route_t *best = NULL;
  if (nsegs > sizeof rank) goto out;
  size_t allow_len = 0;
  for (size_t i = 0; i < r->n; i++) {
    const http_route_t *rt = &r->routes[i];
    if (!route_matches(rt, segs, nsegs, rank)) continue;
    m->path_matched = true;
    if (!strstr(m->allow, rt->method)) {
      int w = snprintf(m->allow + allow_len, sizeof m->allow - allow_len, "%s%s", allow_len ? ", " : "", rt->method);
      if (w > 0 && (size_t)w < sizeof m->allow - allow_len) allow_len += (size_t)w;
    }
    if (strcmp(rt->method, want) != 0) continue;
    if (!best || rank_cmp(rank, best_rank, nsegs) > 0) {
      best = rt;
      memcpy(best_rank, rank, nsegs);
    }
  }
  if (!best) goto out;
  m->route = best;
  /* extract parameters */
  size_t fixed = best->rest ? best->nsegs - 1 : best->nsegs;
  for (size_t i = 0; i < fixed && m->nparams < HTTP_MAX_PARAMS; i++) {
    const char *ps = best->segs[i];
    if (!is_param(ps)) continue;
    m->params[m->nparams].name = arena_strndup(arena, ps + 1, strlen(ps) - 2);
    m->params[m->nparams].value = arena_strdup(arena, segs[i]);
    m->nparams++;
  }
  if (best->rest && m->nparams < HTTP_MAX_PARAMS) {
    const char *ps = best->segs[best->nsegs - 1];
    sb_t rest = {0};
    for (size_t i = fixed; i < nsegs; i++) {
      if (i > fixed) sb_putc(&rest, '/');
      sb_puts(&rest, segs[i]);
    }
    m->params[m->nparams].name = arena_strndup(arena, ps + 1, strlen(ps) - 3);
    m->params[m->nparams].value = arena_strdup(arena, rest.buf ? rest.buf : "");
    m->nparams++;
    sb_free(&rest);
  }
out:
  for (size_t i = 0; i < nsegs; i++) free(segs[i]);
  free(segs);
}
