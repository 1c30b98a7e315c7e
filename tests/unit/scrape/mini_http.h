/* A tiny HTTP/1.1 server on 127.0.0.1 for scrape tests: one thread, one connection at a
 * time, "Connection: close". Routes:
 *   /metrics      the current body (mini_http_set_body), text/plain 0.0.4
 *   /om           the current body as OpenMetrics
 *   /gzip         the current body, gzip-encoded
 *   /slow         answers after 1.5 s
 *   /fail         HTTP 500
 *   /auth         the body only with "Authorization: Bearer sekret" or basic u:p, else 401
 *   /huge         2 MiB of valid samples
 * The last request's Accept and Authorization headers and its query are recorded. */
#ifndef SCRAPE_TEST_MINI_HTTP_H
#define SCRAPE_TEST_MINI_HTTP_H

#include <stddef.h>

typedef struct mini_http mini_http_t;
mini_http_t *mini_http_start(void);
void mini_http_stop(mini_http_t *s);
int mini_http_port(const mini_http_t *s);
void mini_http_set_body(mini_http_t *s, const char *body);
/* Copies of the last request's fields ("" when absent). */
void mini_http_last(mini_http_t *s, char *accept, char *authorization, char *query, size_t n);
int mini_http_requests(mini_http_t *s);

#endif
