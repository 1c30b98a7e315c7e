/*
 * Self-metrics registry (see metrics.h for the contract).
 *
 * Layout: the registry holds families in an array; each family holds its children (one per
 * label set) in an array of stable pointers plus an open-addressing index keyed by the hash
 * of the canonical label string. Children are never freed before the registry, which is what
 * makes handles safe to cache without reference counting.
 *
 * Values are doubles stored as bit patterns in _Atomic uint64_t; adds are CAS loops. A
 * histogram child keeps per-bucket (non-cumulative) atomic counts, made cumulative at
 * exposition, so an observation is one bucket search plus three atomic operations. A reader
 * may see count and buckets from slightly different moments; Prometheus clients accept the
 * same trade-off.
 *
 * Locks: `mu` protects the family array and every family's child array/index (get-or-create,
 * exposition). `collect_mu` serialises collector callbacks, which run without `mu`.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABEL_PAIRS 32

typedef struct child {
  struct family *fam;
  char **kv;           /* 2*npairs strings, sorted by name */
  size_t npairs;
  char *key;           /* canonical "name\x01value\x02..." for equality */
  uint64_t hash;
  _Atomic uint64_t bits;     /* counter/gauge value */
  _Atomic uint64_t count;    /* histogram observations */
  _Atomic uint64_t sum_bits; /* histogram sum */
  _Atomic uint64_t *buckets; /* histogram: nbuckets + 1 (last = +Inf), not cumulative */
} child_t;

typedef struct family {
  char *name;
  char *help;
  metrics_type_t type;
  double *bounds;
  size_t nbounds;
  child_t **children;
  size_t nchildren, cap;
  size_t *index; /* open addressing: slot → child index + 1; 0 = empty */
  size_t index_cap;
} family_t;

typedef struct collector {
  metrics_collector_fn fn;
  void *ctx;
} collector_t;

struct metrics_registry {
  pthread_mutex_t mu;
  family_t **families;
  size_t nfamilies, cap;
  pthread_mutex_t collect_mu;
  collector_t *collectors;
  size_t ncollectors;
};

static const double default_bounds[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

static inline double bits_to_double(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}
static inline uint64_t double_to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
  uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
  for (;;) {
    uint64_t nw = double_to_bits(bits_to_double(old) + v);
    if (atomic_compare_exchange_weak_explicit(p, &old, nw, memory_order_relaxed, memory_order_relaxed))
      return;
  }
}

/* ---- names -------------------------------------------------------------------------- */

static bool valid_metric_name(const char *s) {
  if (!s || !*s) return false;
  for (size_t i = 0; s[i]; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

static bool valid_label_name(const char *s) {
  if (!s || !*s) return false;
  if (s[0] == '_' && s[1] == '_') return false; /* reserved */
  for (size_t i = 0; s[i]; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

/* ---- registry ----------------------------------------------------------------------- */

metrics_registry_t *metrics_registry_new(void) {
  metrics_registry_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->collect_mu, NULL);
  return r;
}

static void child_free(child_t *c) {
  if (!c) return;
  for (size_t i = 0; i < 2 * c->npairs; i++) free(c->kv[i]);
  free(c->kv);
  free(c->key);
  free(c->buckets);
  free(c);
}

static void family_free(family_t *f) {
  if (!f) return;
  for (size_t i = 0; i < f->nchildren; i++) child_free(f->children[i]);
  free(f->children);
  free(f->index);
  free(f->bounds);
  free(f->name);
  free(f->help);
  free(f);
}

void metrics_registry_free(metrics_registry_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->nfamilies; i++) family_free(r->families[i]);
  free(r->families);
  free(r->collectors);
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->collect_mu);
  free(r);
}

int metrics_add_collector(metrics_registry_t *r, metrics_collector_fn fn, void *ctx) {
  if (!r || !fn) return MD_EINVAL;
  pthread_mutex_lock(&r->collect_mu);
  collector_t *n = realloc(r->collectors, (r->ncollectors + 1) * sizeof *n);
  if (!n) {
    pthread_mutex_unlock(&r->collect_mu);
    return MD_ENOMEM;
  }
  r->collectors = n;
  r->collectors[r->ncollectors++] = (collector_t){fn, ctx};
  pthread_mutex_unlock(&r->collect_mu);
  return 0;
}

static void run_collectors(metrics_registry_t *r) {
  pthread_mutex_lock(&r->collect_mu);
  for (size_t i = 0; i < r->ncollectors; i++) r->collectors[i].fn(r, r->collectors[i].ctx);
  pthread_mutex_unlock(&r->collect_mu);
}

/* Called with r->mu held. */
static family_t *family_find(metrics_registry_t *r, const char *name) {
  for (size_t i = 0; i < r->nfamilies; i++)
    if (strcmp(r->families[i]->name, name) == 0) return r->families[i];
  return NULL;
}

static family_t *family_get(metrics_registry_t *r, const char *name, const char *help, metrics_type_t type,
                            const double *bounds, size_t nbounds) {
  family_t *f = family_find(r, name);
  if (f) {
    if (f->type != type) {
      log_error("self-metric %s registered twice with different types", name);
      return NULL;
    }
    return f;
  }
  if (r->nfamilies == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 32;
    family_t **n = realloc(r->families, cap * sizeof *n);
    if (!n) return NULL;
    r->families = n;
    r->cap = cap;
  }
  f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  f->type = type;
  if (type == METRICS_HISTOGRAM) {
    if (!bounds || !nbounds) {
      bounds = default_bounds;
      nbounds = sizeof default_bounds / sizeof default_bounds[0];
    }
    f->bounds = malloc(nbounds * sizeof *f->bounds);
    if (f->bounds) memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
    f->nbounds = nbounds;
    for (size_t i = 1; f->bounds && i < nbounds; i++) {
      if (!(f->bounds[i] > f->bounds[i - 1])) {
        log_error("self-metric %s: histogram buckets must ascend", name);
        family_free(f);
        return NULL;
      }
    }
  }
  if (!f->name || !f->help || (type == METRICS_HISTOGRAM && !f->bounds)) {
    family_free(f);
    return NULL;
  }
  r->families[r->nfamilies++] = f;
  return f;
}

static bool index_grow(family_t *f) {
  size_t cap = f->index_cap ? f->index_cap * 2 : 16;
  size_t *idx = calloc(cap, sizeof *idx);
  if (!idx) return false;
  for (size_t i = 0; i < f->nchildren; i++) {
    size_t s = f->children[i]->hash & (cap - 1);
    while (idx[s]) s = (s + 1) & (cap - 1);
    idx[s] = i + 1;
  }
  free(f->index);
  f->index = idx;
  f->index_cap = cap;
  return true;
}

/* Builds the canonical key of sorted pairs. */
static char *make_key(const char *const *kv, size_t npairs) {
  sb_t sb = {0};
  for (size_t i = 0; i < npairs; i++) {
    sb_puts(&sb, kv[2 * i]);
    sb_putc(&sb, '\x01');
    sb_puts(&sb, kv[2 * i + 1]);
    sb_putc(&sb, '\x02');
  }
  if (sb.oom) {
    sb_free(&sb);
    return NULL;
  }
  return sb_steal(&sb);
}

static child_t *child_get(metrics_registry_t *r, const char *name, const char *help, metrics_type_t type,
                          const double *bounds, size_t nbounds, const char *const *kv_in, size_t npairs) {
  if (!r || !valid_metric_name(name) || npairs > MAX_LABEL_PAIRS) return NULL;
  const char *kv[2 * MAX_LABEL_PAIRS];
  for (size_t i = 0; i < npairs; i++) {
    const char *n = kv_in[2 * i], *v = kv_in[2 * i + 1];
    if (!valid_label_name(n) || !v) return NULL;
    if (type == METRICS_HISTOGRAM && strcmp(n, "le") == 0) return NULL;
    /* insertion sort by name */
    size_t j = i;
    while (j > 0 && strcmp(kv[2 * (j - 1)], n) > 0) {
      kv[2 * j] = kv[2 * (j - 1)];
      kv[2 * j + 1] = kv[2 * (j - 1) + 1];
      j--;
    }
    if (j > 0 && strcmp(kv[2 * (j - 1)], n) == 0) return NULL; /* duplicate name */
    kv[2 * j] = n;
    kv[2 * j + 1] = v;
  }
  char *key = make_key(kv, npairs);
  if (!key) return NULL;
  uint64_t h = md_hash64(key, strlen(key), 0x5eed);

  child_t *c = NULL;
  pthread_mutex_lock(&r->mu);
  family_t *f = family_get(r, name, help, type, bounds, nbounds);
  if (!f) goto out;
  if (f->index_cap) {
    for (size_t s = h & (f->index_cap - 1); f->index[s]; s = (s + 1) & (f->index_cap - 1)) {
      child_t *e = f->children[f->index[s] - 1];
      if (e->hash == h && strcmp(e->key, key) == 0) {
        c = e;
        goto out;
      }
    }
  }
  /* create */
  if ((f->nchildren + 1) * 2 > f->index_cap && !index_grow(f)) goto out;
  if (f->nchildren == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 8;
    child_t **n = realloc(f->children, cap * sizeof *n);
    if (!n) goto out;
    f->children = n;
    f->cap = cap;
  }
  child_t *nc = calloc(1, sizeof *nc);
  if (!nc) goto out;
  nc->fam = f;
  nc->hash = h;
  nc->npairs = npairs;
  nc->kv = calloc(2 * npairs + 1, sizeof *nc->kv);
  bool ok = nc->kv != NULL;
  for (size_t i = 0; ok && i < 2 * npairs; i++) ok = (nc->kv[i] = strdup(kv[i])) != NULL;
  if (ok && type == METRICS_HISTOGRAM) ok = (nc->buckets = calloc(f->nbounds + 1, sizeof *nc->buckets)) != NULL;
  if (!ok) {
    nc->npairs = nc->kv ? npairs : 0;
    child_free(nc);
    goto out;
  }
  nc->key = key;
  key = NULL;
  size_t s = h & (f->index_cap - 1);
  while (f->index[s]) s = (s + 1) & (f->index_cap - 1);
  f->children[f->nchildren++] = nc;
  f->index[s] = f->nchildren;
  c = nc;
out:
  pthread_mutex_unlock(&r->mu);
  free(key);
  return c;
}

/* Collects variadic pairs into an array; returns npairs or -1 when there are too many. */
static long collect_pairs(va_list ap, const char **kv) {
  size_t n = 0;
  for (;;) {
    const char *name = va_arg(ap, const char *);
    if (!name) break;
    const char *value = va_arg(ap, const char *);
    if (n >= MAX_LABEL_PAIRS || !value) return -1;
    kv[2 * n] = name;
    kv[2 * n + 1] = value;
    n++;
  }
  return (long)n;
}

metrics_counter_t *metrics_counter_v(metrics_registry_t *r, const char *name, const char *help,
                                     const char *const *kv, size_t npairs) {
  return (metrics_counter_t *)child_get(r, name, help, METRICS_COUNTER, NULL, 0, kv, npairs);
}
metrics_gauge_t *metrics_gauge_v(metrics_registry_t *r, const char *name, const char *help,
                                 const char *const *kv, size_t npairs) {
  return (metrics_gauge_t *)child_get(r, name, help, METRICS_GAUGE, NULL, 0, kv, npairs);
}
metrics_histogram_t *metrics_histogram_v(metrics_registry_t *r, const char *name, const char *help,
                                         const double *buckets, size_t nbuckets, const char *const *kv,
                                         size_t npairs) {
  return (metrics_histogram_t *)child_get(r, name, help, METRICS_HISTOGRAM, buckets, nbuckets, kv, npairs);
}

metrics_counter_t *metrics_counter(metrics_registry_t *r, const char *name, const char *help, ...) {
  const char *kv[2 * MAX_LABEL_PAIRS];
  va_list ap;
  va_start(ap, help);
  long n = collect_pairs(ap, kv);
  va_end(ap);
  return n < 0 ? NULL : metrics_counter_v(r, name, help, kv, (size_t)n);
}

metrics_gauge_t *metrics_gauge(metrics_registry_t *r, const char *name, const char *help, ...) {
  const char *kv[2 * MAX_LABEL_PAIRS];
  va_list ap;
  va_start(ap, help);
  long n = collect_pairs(ap, kv);
  va_end(ap);
  return n < 0 ? NULL : metrics_gauge_v(r, name, help, kv, (size_t)n);
}

metrics_histogram_t *metrics_histogram(metrics_registry_t *r, const char *name, const char *help,
                                       const double *buckets, size_t nbuckets, ...) {
  const char *kv[2 * MAX_LABEL_PAIRS];
  va_list ap;
  va_start(ap, nbuckets);
  long n = collect_pairs(ap, kv);
  va_end(ap);
  return n < 0 ? NULL : metrics_histogram_v(r, name, help, buckets, nbuckets, kv, (size_t)n);
}

/* ---- updates ------------------------------------------------------------------------ */

void metrics_counter_add(metrics_counter_t *c, double v) {
  if (!c || !(v > 0)) return; /* also rejects NaN */
  atomic_add_double(&((child_t *)c)->bits, v);
}
void metrics_counter_inc(metrics_counter_t *c) { metrics_counter_add(c, 1.0); }
double metrics_counter_get(const metrics_counter_t *c) {
  return c ? bits_to_double(atomic_load(&((child_t *)c)->bits)) : 0;
}
void metrics_counter_raise_to(metrics_counter_t *c, double total) {
  metrics_counter_add(c, total - metrics_counter_get(c));
}
void metrics_gauge_set(metrics_gauge_t *g, double v) {
  if (g) atomic_store(&((child_t *)g)->bits, double_to_bits(v));
}
void metrics_gauge_add(metrics_gauge_t *g, double v) {
  if (g) atomic_add_double(&((child_t *)g)->bits, v);
}
double metrics_gauge_get(const metrics_gauge_t *g) {
  return g ? bits_to_double(atomic_load(&((child_t *)g)->bits)) : 0;
}

void metrics_histogram_observe(metrics_histogram_t *h, double v) {
  if (!h || isnan(v)) return;
  child_t *c = (child_t *)h;
  const family_t *f = c->fam;
  /* binary search for the first bound >= v */
  size_t lo = 0, hi = f->nbounds;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (f->bounds[mid] >= v) hi = mid;
    else lo = mid + 1;
  }
  atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
  atomic_add_double(&c->sum_bits, v);
  atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
}
uint64_t metrics_histogram_count(const metrics_histogram_t *h) {
  return h ? atomic_load(&((child_t *)h)->count) : 0;
}
double metrics_histogram_sum(const metrics_histogram_t *h) {
  return h ? bits_to_double(atomic_load(&((child_t *)h)->sum_bits)) : 0;
}

double metrics_family_sum(metrics_registry_t *r, const char *name) {
  if (!r || !name) return 0;
  double sum = 0;
  pthread_mutex_lock(&r->mu);
  family_t *f = family_find(r, name);
  for (size_t i = 0; f && i < f->nchildren; i++) {
    child_t *c = f->children[i];
    if (f->type == METRICS_HISTOGRAM) sum += (double)atomic_load(&c->count);
    else sum += bits_to_double(atomic_load(&c->bits));
  }
  pthread_mutex_unlock(&r->mu);
  return sum;
}

/* ---- exposition --------------------------------------------------------------------- */

static int cmp_family(const void *a, const void *b) {
  return strcmp((*(family_t *const *)a)->name, (*(family_t *const *)b)->name);
}
static int cmp_child(const void *a, const void *b) {
  return strcmp((*(child_t *const *)a)->key, (*(child_t *const *)b)->key);
}

static void put_escaped(sb_t *out, const char *s, bool quote) {
  for (; *s; s++) {
    if (*s == '\\') sb_puts(out, "\\\\");
    else if (*s == '\n') sb_puts(out, "\\n");
    else if (*s == '"' && quote) sb_puts(out, "\\\"");
    else sb_putc(out, *s);
  }
}

static void put_labels(sb_t *out, const child_t *c, const char *le) {
  if (!c->npairs && !le) return;
  sb_putc(out, '{');
  bool first = true;
  for (size_t i = 0; i < c->npairs; i++) {
    if (le && strcmp(c->kv[2 * i], "le") > 0) {
      sb_printf(out, "%sle=\"%s\"", first ? "" : ",", le);
      first = false;
      le = NULL;
    }
    sb_puts(out, first ? "" : ",");
    sb_puts(out, c->kv[2 * i]);
    sb_puts(out, "=\"");
    put_escaped(out, c->kv[2 * i + 1], true);
    sb_putc(out, '"');
    first = false;
  }
  if (le) sb_printf(out, "%sle=\"%s\"", first ? "" : ",", le);
  sb_putc(out, '}');
}

static void format_le(char buf[48], double bound) {
  sb_t tmp = {0};
  sb_double(&tmp, bound);
  snprintf(buf, 48, "%s", tmp.buf ? tmp.buf : "0");
  sb_free(&tmp);
}

/* Sorted snapshot of families and their children, taken under mu. Children stay allocated
 * until the registry is freed, so the snapshot can be walked after unlocking. */
typedef struct snapshot {
  family_t **fams;
  child_t ***children;
  size_t *nchildren;
  size_t n;
} snapshot_t;

static void snapshot_free(snapshot_t *s) {
  for (size_t i = 0; i < s->n; i++) free(s->children[i]);
  free(s->fams);
  free(s->children);
  free(s->nchildren);
}

static int snapshot_take(metrics_registry_t *r, snapshot_t *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_lock(&r->mu);
  size_t n = r->nfamilies;
  s->fams = malloc((n ? n : 1) * sizeof *s->fams);
  s->children = calloc(n ? n : 1, sizeof *s->children);
  s->nchildren = calloc(n ? n : 1, sizeof *s->nchildren);
  if (!s->fams || !s->children || !s->nchildren) goto oom;
  for (size_t i = 0; i < n; i++) {
    family_t *f = r->families[i];
    s->fams[i] = f;
    s->children[i] = malloc((f->nchildren ? f->nchildren : 1) * sizeof(child_t *));
    if (!s->children[i]) goto oom;
    memcpy(s->children[i], f->children, f->nchildren * sizeof(child_t *));
    s->nchildren[i] = f->nchildren;
    s->n = i + 1;
  }
  s->n = n;
  pthread_mutex_unlock(&r->mu);
  /* sort families (keeping children arrays aligned) by sorting an index */
  for (size_t i = 1; i < n; i++) {
    for (size_t j = i; j > 0 && cmp_family(&s->fams[j - 1], &s->fams[j]) > 0; j--) {
      family_t *tf = s->fams[j]; s->fams[j] = s->fams[j - 1]; s->fams[j - 1] = tf;
      child_t **tc = s->children[j]; s->children[j] = s->children[j - 1]; s->children[j - 1] = tc;
      size_t tn = s->nchildren[j]; s->nchildren[j] = s->nchildren[j - 1]; s->nchildren[j - 1] = tn;
    }
  }
  for (size_t i = 0; i < n; i++) qsort(s->children[i], s->nchildren[i], sizeof(child_t *), cmp_child);
  return 0;
oom:
  pthread_mutex_unlock(&r->mu);
  snapshot_free(s);
  memset(s, 0, sizeof *s);
  return MD_ENOMEM;
}

static const char *type_name(metrics_type_t t) {
  return t == METRICS_COUNTER ? "counter" : t == METRICS_GAUGE ? "gauge" : "histogram";
}

int metrics_expose(metrics_registry_t *r, sb_t *out, metrics_format_t fmt) {
  if (!r || !out) return MD_EINVAL;
  run_collectors(r);
  snapshot_t s;
  if (snapshot_take(r, &s) != 0) return MD_ENOMEM;
  for (size_t i = 0; i < s.n; i++) {
    const family_t *f = s.fams[i];
    if (!s.nchildren[i]) continue;
    /* OpenMetrics names a counter family without its _total suffix and requires the
     * suffix on the sample; the 0.0.4 text format uses the sample name throughout. */
    size_t flen = strlen(f->name);
    bool om_counter = fmt == METRICS_FMT_OPENMETRICS && f->type == METRICS_COUNTER;
    bool has_total = flen > 6 && strcmp(f->name + flen - 6, "_total") == 0;
    int famlen = (int)(om_counter && has_total ? flen - 6 : flen);
    sb_printf(out, "# HELP %.*s ", famlen, f->name);
    put_escaped(out, f->help, fmt == METRICS_FMT_OPENMETRICS);
    sb_printf(out, "\n# TYPE %.*s %s\n", famlen, f->name, type_name(f->type));
    for (size_t j = 0; j < s.nchildren[i]; j++) {
      const child_t *c = s.children[i][j];
      if (f->type != METRICS_HISTOGRAM) {
        sb_puts(out, f->name);
        if (om_counter && !has_total) sb_puts(out, "_total");
        put_labels(out, c, NULL);
        sb_putc(out, ' ');
        sb_double(out, bits_to_double(atomic_load(&c->bits)));
        sb_putc(out, '\n');
        continue;
      }
      uint64_t cum = 0;
      char le[48];
      for (size_t b = 0; b <= f->nbounds; b++) {
        cum += atomic_load(&c->buckets[b]);
        if (b < f->nbounds) format_le(le, f->bounds[b]);
        else snprintf(le, sizeof le, "+Inf");
        sb_printf(out, "%s_bucket", f->name);
        put_labels(out, c, le);
        sb_printf(out, " %llu\n", (unsigned long long)cum);
      }
      sb_printf(out, "%s_sum", f->name);
      put_labels(out, c, NULL);
      sb_putc(out, ' ');
      sb_double(out, bits_to_double(atomic_load(&c->sum_bits)));
      sb_printf(out, "\n%s_count", f->name);
      put_labels(out, c, NULL);
      /* the +Inf bucket and _count must agree for strict parsers, so print the same sum */
      sb_printf(out, " %llu\n", (unsigned long long)cum);
    }
  }
  snapshot_free(&s);
  return out->oom ? MD_ENOMEM : 0;
}

void metrics_foreach(metrics_registry_t *r, metrics_sample_fn cb, void *ctx) {
  if (!r || !cb) return;
  run_collectors(r);
  snapshot_t s;
  if (snapshot_take(r, &s) != 0) return;
  const char *kv[2 * (MAX_LABEL_PAIRS + 1)];
  sb_t name = {0};
  for (size_t i = 0; i < s.n; i++) {
    const family_t *f = s.fams[i];
    for (size_t j = 0; j < s.nchildren[i]; j++) {
      const child_t *c = s.children[i][j];
      for (size_t k = 0; k < 2 * c->npairs; k++) kv[k] = c->kv[k];
      if (f->type != METRICS_HISTOGRAM) {
        cb(ctx, f->name, kv, c->npairs, bits_to_double(atomic_load(&c->bits)));
        continue;
      }
      /* le inserted at its sorted position */
      size_t pos = 0;
      while (pos < c->npairs && strcmp(c->kv[2 * pos], "le") < 0) pos++;
      const char *lkv[2 * (MAX_LABEL_PAIRS + 1)];
      for (size_t k = 0; k < pos; k++) {
        lkv[2 * k] = c->kv[2 * k];
        lkv[2 * k + 1] = c->kv[2 * k + 1];
      }
      for (size_t k = pos; k < c->npairs; k++) {
        lkv[2 * (k + 1)] = c->kv[2 * k];
        lkv[2 * (k + 1) + 1] = c->kv[2 * k + 1];
      }
      char le[48];
      lkv[2 * pos] = "le";
      lkv[2 * pos + 1] = le;
      uint64_t cum = 0;
      sb_reset(&name);
      sb_printf(&name, "%s_bucket", f->name);
      if (name.oom) break;
      for (size_t b = 0; b <= f->nbounds; b++) {
        cum += atomic_load(&c->buckets[b]);
        if (b < f->nbounds) format_le(le, f->bounds[b]);
        else snprintf(le, sizeof le, "+Inf");
        cb(ctx, name.buf, lkv, c->npairs + 1, (double)cum);
      }
      sb_reset(&name);
      sb_printf(&name, "%s_sum", f->name);
      if (name.oom) break;
      cb(ctx, name.buf, kv, c->npairs, bits_to_double(atomic_load(&c->sum_bits)));
      sb_reset(&name);
      sb_printf(&name, "%s_count", f->name);
      if (name.oom) break;
      cb(ctx, name.buf, kv, c->npairs, (double)cum);
    }
  }
  sb_free(&name);
  snapshot_free(&s);
}
