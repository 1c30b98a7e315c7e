/* See mini_http.h. */
#include "mini_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

struct mini_http {
  int fd, port;
  pthread_t th;
  pthread_mutex_t mu;
  char *body;
  char accept[512], auth[256], query[256];
  int requests;
  int active; /* handler threads running */
  volatile bool stop;
};

static void write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0) return;
    c += w;
    n -= (size_t)w;
  }
}

static void respond(int fd, int status, const char *ctype, const char *extra, const void *body, size_t n) {
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
                    status, ctype, n, extra ? extra : "");
  write_all(fd, head, (size_t)hl);
  write_all(fd, body, n);
}

static void header(const char *req, const char *name, char *out, size_t n) {
  out[0] = 0;
  size_t nl = strlen(name);
  for (const char *p = strstr(req, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
    if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
      const char *v = p + 3 + nl;
      while (*v == ' ')
        v++;
      size_t l = strcspn(v, "\r\n");
      if (l >= n) l = n - 1;
      memcpy(out, v, l);
      out[l] = 0;
      return;
    }
  }
}

static void handle(mini_http_t *s, int fd) {
  char req[8192];
  size_t len = 0;
  while (len < sizeof req - 1) {
    ssize_t r = read(fd, req + len, sizeof req - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
    req[len] = 0;
    if (strstr(req, "\r\n\r\n")) break;
  }
  req[len] = 0;
  char path[256] = "", query[256] = "";
  sscanf(req, "GET %255s", path);
  char *q = strchr(path, '?');
  if (q) {
    snprintf(query, sizeof query, "%s", q + 1);
    *q = 0;
  }
  char accept[512], auth[256];
  header(req, "Accept", accept, sizeof accept);
  header(req, "Authorization", auth, sizeof auth);
  pthread_mutex_lock(&s->mu);
  snprintf(s->accept, sizeof s->accept, "%s", accept);
  snprintf(s->auth, sizeof s->auth, "%s", auth);
  snprintf(s->query, sizeof s->query, "%s", query);
  s->requests++;
  char *body = strdup(s->body ? s->body : "");
  pthread_mutex_unlock(&s->mu);
  const char *text = "text/plain; version=0.0.4; charset=utf-8";
  if (strcmp(path, "/metrics") == 0) {
    respond(fd, 200, text, NULL, body, strlen(body));
  } else if (strcmp(path, "/om") == 0) {
    respond(fd, 200, "application/openmetrics-text; version=1.0.0; charset=utf-8", NULL, body, strlen(body));
  } else if (strcmp(path, "/gzip") == 0) {
    z_stream z = {0};
    unsigned char out[65536];
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (unsigned char *)body;
    z.avail_in = (unsigned)strlen(body);
    z.next_out = out;
    z.avail_out = sizeof out;
    deflate(&z, Z_FINISH);
    size_t n = sizeof out - z.avail_out;
    deflateEnd(&z);
    respond(fd, 200, text, "Content-Encoding: gzip\r\n", out, n);
  } else if (strcmp(path, "/slow") == 0) {
    usleep(1500 * 1000);
    respond(fd, 200, text, NULL, body, strlen(body));
  } else if (strcmp(path, "/fail") == 0) {
    respond(fd, 500, "text/plain", NULL, "boom\n", 5);
  } else if (strcmp(path, "/auth") == 0) {
    /* "dTpw" is base64 of "u:p". */
    if (strcmp(auth, "Bearer sekret") == 0 || strcmp(auth, "Basic dTpw") == 0)
      respond(fd, 200, text, NULL, body, strlen(body));
    else
      respond(fd, 401, "text/plain", NULL, "no\n", 3);
  } else if (strcmp(path, "/huge") == 0) {
    size_t cap = 2 << 20, n = 0;
    char *big = malloc(cap + 64);
    for (int i = 0; big && n < cap; i++)
      n += (size_t)snprintf(big + n, 64, "huge_metric{i=\"%d\"} %d\n", i, i);
    if (big) respond(fd, 200, text, NULL, big, n);
    free(big);
  } else {
    respond(fd, 404, "text/plain", NULL, "not found\n", 10);
  }
  free(body);
}

typedef struct {
  mini_http_t *s;
  int fd;
} conn_t;

/* One thread per connection, so a slow route does not hold up the others. */
static void *conn_main(void *arg) {
  conn_t *c = arg;
  handle(c->s, c->fd);
  close(c->fd);
  pthread_mutex_lock(&c->s->mu);
  c->s->active--;
  pthread_mutex_unlock(&c->s->mu);
  free(c);
  return NULL;
}

static void *serve(void *arg) {
  mini_http_t *s = arg;
  while (!s->stop) {
    int fd = accept(s->fd, NULL, NULL);
    if (fd < 0) continue;
    if (s->stop) {
      close(fd);
      break;
    }
    conn_t *c = malloc(sizeof *c);
    *c = (conn_t){s, fd};
    pthread_mutex_lock(&s->mu);
    s->active++;
    pthread_mutex_unlock(&s->mu);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, conn_main, c) != 0) {
      close(fd);
      free(c);
      pthread_mutex_lock(&s->mu);
      s->active--;
      pthread_mutex_unlock(&s->mu);
    }
    pthread_attr_destroy(&at);
  }
  return NULL;
}

mini_http_t *mini_http_start(void) {
  mini_http_t *s = calloc(1, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->fd, 64) != 0) {
    close(s->fd);
    free(s);
    return NULL;
  }
  socklen_t al = sizeof a;
  getsockname(s->fd, (struct sockaddr *)&a, &al);
  s->port = ntohs(a.sin_port);
  pthread_create(&s->th, NULL, serve, s);
  return s;
}

void mini_http_stop(mini_http_t *s) {
  if (!s) return;
  s->stop = true;
  /* Wake the accept() with one last connection. */
  int c = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {
      .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(c, (struct sockaddr *)&a, sizeof a) == 0)
    close(c);
  else
    close(c);
  pthread_join(s->th, NULL);
  for (int i = 0; i < 500; i++) { /* handlers still writing */
    pthread_mutex_lock(&s->mu);
    int a = s->active;
    pthread_mutex_unlock(&s->mu);
    if (!a) break;
    usleep(10 * 1000);
  }
  close(s->fd);
  free(s->body);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

int mini_http_port(const mini_http_t *s) {
  return s->port;
}

void mini_http_set_body(mini_http_t *s, const char *body) {
  pthread_mutex_lock(&s->mu);
  free(s->body);
  s->body = strdup(body);
  pthread_mutex_unlock(&s->mu);
}

void mini_http_last(mini_http_t *s, char *accept, char *authorization, char *query, size_t n) {
  pthread_mutex_lock(&s->mu);
  if (accept) snprintf(accept, n, "%s", s->accept);
  if (authorization) snprintf(authorization, n, "%s", s->auth);
  if (query) snprintf(query, n, "%s", s->query);
  pthread_mutex_unlock(&s->mu);
}

int mini_http_requests(mini_http_t *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->requests;
  pthread_mutex_unlock(&s->mu);
  return n;
}
