/* See recorder.h. */
#include "recorder.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

typedef struct {
  char *labels;
  int64_t ts;
  double v;
} rec_sample_t;

struct recorder {
  pthread_mutex_t mu;
  rec_sample_t *s;
  size_t n, cap;
};

recorder_t *recorder_new(void) {
  recorder_t *r = calloc(1, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  return r;
}

void recorder_clear(recorder_t *r) {
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n; i++)
    free(r->s[i].labels);
  r->n = 0;
  pthread_mutex_unlock(&r->mu);
}

void recorder_free(recorder_t *r) {
  recorder_clear(r);
  free(r->s);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

int recorder_sink(void *ctx, const tsdb_batch_t *b) {
  recorder_t *r = ctx;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *l;
    const tsdb_sample_t *s;
    size_t nl, ns;
    tsdb_batch_get(b, i, &l, &nl, &s, &ns);
    sb_t t = {0};
    sb_putc(&t, ',');
    for (size_t k = 0; k < nl; k++)
      sb_printf(&t, "%s=%s,", l[k].name, l[k].value);
    for (size_t k = 0; k < ns; k++) {
      if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->s = realloc(r->s, r->cap * sizeof *r->s);
      }
      r->s[r->n++] = (rec_sample_t){strdup(t.buf), s[k].ts, s[k].v};
    }
    sb_free(&t);
  }
  pthread_mutex_unlock(&r->mu);
  return 0;
}

static bool matches(const char *labels, const char *const *keys, size_t nk) {
  char pat[512];
  for (size_t i = 0; i < nk; i++) {
    snprintf(pat, sizeof pat, ",%s,", keys[i]);
    if (!strstr(labels, pat)) return false;
  }
  return true;
}

static size_t find_keys(recorder_t *r, const char *const *keys, size_t nk, double *last, size_t *stale,
                        int64_t *ts) {
  size_t c = 0, st = 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n; i++) {
    if (!matches(r->s[i].labels, keys, nk)) continue;
    c++;
    if (tsdb_is_stale_nan(r->s[i].v)) st++;
    if (last) *last = r->s[i].v;
    if (ts) *ts = r->s[i].ts;
  }
  pthread_mutex_unlock(&r->mu);
  if (stale) *stale = st;
  return c;
}

size_t recorder_find(recorder_t *r, double *last, size_t *stale, ...) {
  const char *keys[16];
  size_t nk = 0;
  va_list ap;
  va_start(ap, stale);
  const char *k;
  while (nk < 16 && (k = va_arg(ap, const char *)))
    keys[nk++] = k;
  va_end(ap);
  return find_keys(r, keys, nk, last, stale, NULL);
}

bool recorder_wait(recorder_t *r, size_t n, int ms, const char *k1, const char *k2, const char *k3) {
  const char *keys[3];
  size_t nk = 0;
  if (k1) keys[nk++] = k1;
  if (k2) keys[nk++] = k2;
  if (k3) keys[nk++] = k3;
  for (int waited = 0; waited <= ms; waited += 20) {
    if (find_keys(r, keys, nk, NULL, NULL, NULL) >= n) return true;
    usleep(20 * 1000);
  }
  return false;
}

int64_t recorder_last_ts(recorder_t *r, const char *k1, const char *k2) {
  const char *keys[2];
  size_t nk = 0;
  if (k1) keys[nk++] = k1;
  if (k2) keys[nk++] = k2;
  int64_t ts = 0;
  find_keys(r, keys, nk, NULL, NULL, &ts);
  return ts;
}
