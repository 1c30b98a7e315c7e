/*
 * The track registry: live state behind seed 004's POST /metrics/track — counters (add),
 * gauges (set), histograms (observe into buckets) and summaries (quantiles over a sliding
 * window) per tenant — exposed as text for GET /metrics and collected into batches (what a
 * scrape of it would store) on the flush interval and at shutdown.
 *
 * Layout: one hash table of families keyed by (tenant, metric name); each family holds
 * its type, its buckets and a hash table of series keyed by the canonical label string
 * "name\0value\0name\0value\0" (labels sorted by name), which is also the series' label
 * storage. A metric name belongs to one type per tenant: a later event with another type is
 * refused. max_series counts series per tenant.
 *
 * Summaries keep up to summary_max_observations (value, time) pairs per series in a ring;
 * observations older than the window are ignored when quantiles are computed (nearest
 * rank); an empty window gives NaN, as Prometheus client libraries do. _sum and _count are
 * cumulative since the series was created.
 *
 * Threading: one mutex guards everything; events, exposition and collection may come from
 * any thread. Exposition and collection copy nothing out under the lock beyond what they
 * render.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

typedef struct tseries {
  struct tseries *next;
  uint64_t hash;
  char *key; /* canonical label string; labels point into it */
  size_t keylen;
  tsdb_label_t *labels;
  size_t nlabels;
  double value;
  uint64_t *buckets; /* per bound + the +Inf bucket, not cumulative */
  double sum;
  uint64_t count;
  double *obs_v; /* summary ring */
  int64_t *obs_t;
  size_t obs_head, obs_n, obs_cap; /* the ring grows by doubling up to max_obs */
  /* Cumulative series (counters, histograms, summaries' _sum/_count) start from 0 at
   * created_ms: the first collection also stores that 0, so increase()/rate() and the
   * aggregated export count the events before the first flush, from storage alone. */
  int64_t created_ms;
  bool collected;
} tseries_t;

typedef struct tfamily {
  struct tfamily *next; /* hash chain */
  uint64_t hash;
  char *tenant;
  char *name;
  char *help;
  ingest_track_type_t type;
  double *bounds;
  size_t nbounds;
  tseries_t **tab;
  size_t cap, n;
} tfamily_t;

typedef struct ttenant {
  char *name;
  size_t series;
} ttenant_t;

struct ingest_track {
  pthread_mutex_t mu;
  tfamily_t **fam;
  size_t fcap, nfam;
  ttenant_t *tenants;
  size_t ntenants, cap_tenants;
  size_t total_series;
  /* configuration */
  double *default_bounds;
  size_t n_default_bounds;
  ingest_track_buckets_t *metric_buckets; /* deep copies */
  size_t n_metric_buckets;
  double *quantiles;
  size_t nq;
  int64_t window_ms;
  size_t max_obs;
  size_t max_series; /* per tenant */
  ingest_limits_t limits;
};

static const double default_bounds[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
static const double default_quantiles[] = {0.5, 0.9, 0.99};

static double *dup_doubles(const double *p, size_t n) {
  double *d = malloc(sizeof(double) * (n ? n : 1));
  if (d && n) memcpy(d, p, sizeof(double) * n);
  return d;
}

static bool ascending(const double *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(b[i])) return false;
    if (i && !(b[i] > b[i - 1])) return false;
  }
  return true;
}

int ingest_track_new(const ingest_track_config_t *cfg, ingest_track_t **out, char *err, size_t errlen) {
  ingest_track_config_t zero = {0};
  if (!cfg) cfg = &zero;
  ingest_track_t *r = calloc(1, sizeof *r);
  if (!r) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  pthread_mutex_init(&r->mu, NULL);
  const double *db = cfg->default_buckets ? cfg->default_buckets : default_bounds;
  size_t ndb =
      cfg->default_buckets ? cfg->n_default_buckets : sizeof default_bounds / sizeof default_bounds[0];
  const double *q = cfg->quantiles ? cfg->quantiles : default_quantiles;
  size_t nq = cfg->quantiles ? cfg->n_quantiles : 3;
  int rc = 0;
  if (!ascending(db, ndb)) {
    rc = md_error(err, errlen, MD_EINVAL, "track: default buckets must be finite and ascending");
    goto fail;
  }
  for (size_t i = 0; i < nq; i++) {
    if (!(q[i] >= 0 && q[i] <= 1)) {
      rc = md_error(err, errlen, MD_EINVAL, "track: quantile %g is not in [0, 1]", q[i]);
      goto fail;
    }
  }
  r->default_bounds = dup_doubles(db, ndb);
  r->n_default_bounds = ndb;
  r->quantiles = dup_doubles(q, nq);
  r->nq = nq;
  if (!r->default_bounds || !r->quantiles) goto oom;
  if (cfg->n_metric_buckets) {
    r->metric_buckets = calloc(cfg->n_metric_buckets, sizeof *r->metric_buckets);
    if (!r->metric_buckets) goto oom;
    for (size_t i = 0; i < cfg->n_metric_buckets; i++) {
      const ingest_track_buckets_t *mb = &cfg->metric_buckets[i];
      if (!mb->metric || !ascending(mb->bounds, mb->n)) {
        rc = md_error(err, errlen, MD_EINVAL, "track: buckets of %s must be finite and ascending",
                      mb->metric ? mb->metric : "(unnamed metric)");
        goto fail;
      }
      r->metric_buckets[i].metric = strdup(mb->metric);
      r->metric_buckets[i].bounds = dup_doubles(mb->bounds, mb->n);
      r->metric_buckets[i].n = mb->n;
      r->n_metric_buckets++;
      if (!r->metric_buckets[i].metric || !r->metric_buckets[i].bounds) goto oom;
    }
  }
  r->window_ms = cfg->summary_window_ms > 0 ? cfg->summary_window_ms : 600000;
  r->max_obs = cfg->summary_max_observations ? cfg->summary_max_observations : 4096;
  r->max_series = cfg->max_series ? cfg->max_series : 1000000;
  if (cfg->limits)
    r->limits = *cfg->limits;
  else
    ingest_limits_default(&r->limits);
  *out = r;
  return 0;
oom:
  rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
fail:
  ingest_track_free(r);
  return rc;
}

static void series_free(tseries_t *s) {
  free(s->key);
  free(s->labels);
  free(s->buckets);
  free(s->obs_v);
  free(s->obs_t);
  free(s);
}

void ingest_track_free(ingest_track_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->fcap; i++) {
    tfamily_t *f = r->fam[i];
    while (f) {
      tfamily_t *next = f->next;
      for (size_t k = 0; k < f->cap; k++) {
        tseries_t *s = f->tab[k];
        while (s) {
          tseries_t *sn = s->next;
          series_free(s);
          s = sn;
        }
      }
      free(f->tab);
      free(f->tenant);
      free(f->name);
      free(f->help);
      free(f->bounds);
      free(f);
      f = next;
    }
  }
  free(r->fam);
  for (size_t i = 0; i < r->ntenants; i++)
    free(r->tenants[i].name);
  free(r->tenants);
  for (size_t i = 0; i < r->n_metric_buckets; i++) {
    free((char *)r->metric_buckets[i].metric);
    free((double *)r->metric_buckets[i].bounds);
  }
  free(r->metric_buckets);
  free(r->default_bounds);
  free(r->quantiles);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static const char *type_name(ingest_track_type_t t) {
  switch (t) {
  case INGEST_TRACK_COUNTER:
    return "counter";
  case INGEST_TRACK_GAUGE:
    return "gauge";
  case INGEST_TRACK_HISTOGRAM:
    return "histogram";
  case INGEST_TRACK_SUMMARY:
    return "summary";
  }
  return "untyped";
}

static uint64_t family_hash(const char *tenant, const char *name, size_t nlen) {
  return md_hash64(name, nlen, md_hash64(tenant, strlen(tenant), 0x7472616bULL));
}

static tfamily_t *family_find(ingest_track_t *r, const char *tenant, const char *name, size_t nlen,
                              uint64_t h) {
  if (!r->fcap) return NULL;
  for (tfamily_t *f = r->fam[h & (r->fcap - 1)]; f; f = f->next)
    if (f->hash == h && strcmp(f->tenant, tenant) == 0 && strlen(f->name) == nlen &&
        memcmp(f->name, name, nlen) == 0)
      return f;
  return NULL;
}

static int family_table_grow(ingest_track_t *r) {
  size_t nc = r->fcap ? r->fcap * 2 : 64;
  tfamily_t **nt = calloc(nc, sizeof *nt);
  if (!nt) return MD_ENOMEM;
  for (size_t i = 0; i < r->fcap; i++) {
    tfamily_t *f = r->fam[i];
    while (f) {
      tfamily_t *next = f->next;
      f->next = nt[f->hash & (nc - 1)];
      nt[f->hash & (nc - 1)] = f;
      f = next;
    }
  }
  free(r->fam);
  r->fam = nt;
  r->fcap = nc;
  return 0;
}

static ttenant_t *tenant_get(ingest_track_t *r, const char *tenant, bool create) {
  for (size_t i = 0; i < r->ntenants; i++)
    if (strcmp(r->tenants[i].name, tenant) == 0) return &r->tenants[i];
  if (!create) return NULL;
  if (r->ntenants == r->cap_tenants) {
    size_t nc = r->cap_tenants ? r->cap_tenants * 2 : 4;
    ttenant_t *nt = realloc(r->tenants, nc * sizeof *nt);
    if (!nt) return NULL;
    r->tenants = nt;
    r->cap_tenants = nc;
  }
  char *n = strdup(tenant);
  if (!n) return NULL;
  r->tenants[r->ntenants] = (ttenant_t){n, 0};
  return &r->tenants[r->ntenants++];
}

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const tsdb_label_t *)a)->name, ((const tsdb_label_t *)b)->name);
}

static bool valid_tenant(const char *t) {
  size_t n = strlen(t);
  if (n == 0 || n > 128) return false;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '.' || c == ':'))
      return false;
  }
  return true;
}

/* Grows the ring (doubling, at most max_obs), keeping the order from the head. A series
 * that sees few observations keeps a small ring: summaries must not cost max_obs slots each. */
static int obs_grow(ingest_track_t *r, tseries_t *s) {
  size_t nc = s->obs_cap ? s->obs_cap * 2 : 16;
  if (nc > r->max_obs) nc = r->max_obs;
  double *nv = malloc(sizeof(double) * nc);
  int64_t *nt = malloc(sizeof(int64_t) * nc);
  if (!nv || !nt) {
    free(nv);
    free(nt);
    return MD_ENOMEM;
  }
  for (size_t i = 0; i < s->obs_n; i++) {
    size_t idx = (s->obs_head + i) % s->obs_cap;
    nv[i] = s->obs_v[idx];
    nt[i] = s->obs_t[idx];
  }
  free(s->obs_v);
  free(s->obs_t);
  s->obs_v = nv;
  s->obs_t = nt;
  s->obs_head = 0;
  s->obs_cap = nc;
  return 0;
}

static int obs_add(ingest_track_t *r, tseries_t *s, double v, int64_t now) {
  /* Drop expired observations from the front so the ring holds the window only. */
  while (s->obs_n && s->obs_t[s->obs_head] < now - r->window_ms) {
    s->obs_head = (s->obs_head + 1) % s->obs_cap;
    s->obs_n--;
  }
  if (s->obs_n == s->obs_cap && s->obs_cap < r->max_obs && obs_grow(r, s)) return MD_ENOMEM;
  size_t idx;
  if (s->obs_n < s->obs_cap) {
    idx = (s->obs_head + s->obs_n) % s->obs_cap;
    s->obs_n++;
  } else {
    idx = s->obs_head; /* full: overwrite the oldest */
    s->obs_head = (s->obs_head + 1) % s->obs_cap;
  }
  s->obs_v[idx] = v;
  s->obs_t[idx] = now;
  return 0;
}

int ingest_track_observe(ingest_track_t *r, const char *tenant, const char *name, size_t nlen,
                         ingest_track_type_t type, const tsdb_label_t *labels, size_t nlabels,
                         const char *service, double value, int64_t now_ms, char *err, size_t errlen) {
  if (!tenant || !valid_tenant(tenant))
    return md_error(err, errlen, MD_EINVAL, "invalid tenant_id (1-128 of [A-Za-z0-9_.:-])");
  if (!ingest_valid_metric_name(name, nlen))
    return md_error(err, errlen, MD_EINVAL, "invalid metric name \"%.*s\"", (int)(nlen > 64 ? 64 : nlen),
                    name);
  if (nlen > r->limits.max_label_name_len)
    return md_error(err, errlen, MD_EINVAL, "metric name longer than %zu bytes",
                    r->limits.max_label_name_len);
  if (type < INGEST_TRACK_COUNTER || type > INGEST_TRACK_SUMMARY)
    return md_error(err, errlen, MD_EINVAL, "unknown metric type");
  if (!isfinite(value)) return md_error(err, errlen, MD_EINVAL, "value must be a finite number");
  if (type == INGEST_TRACK_COUNTER && value < 0)
    return md_error(err, errlen, MD_EINVAL, "counter %.*s cannot be decreased (value %g < 0)",
                    (int)(nlen > 64 ? 64 : nlen), name, value);
  bool add_service = service && service[0];
  for (size_t i = 0; i < nlabels; i++)
    if (strcmp(labels[i].name, "service") == 0) add_service = false;
  size_t total = nlabels + (add_service ? 1 : 0);
  if (total + 1 > r->limits.max_labels_per_series)
    return md_error(err, errlen, MD_EINVAL, "%zu labels, more than the limit of %zu", total + 1,
                    r->limits.max_labels_per_series);
  /* Events of existing series (nearly all of them) allocate nothing: labels and the key are
   * built on the stack when small; a new series then copies its key. */
  tsdb_label_t ls_stack[32];
  char key_stack[1024];
  tsdb_label_t *ls = total + 1 <= 32 ? ls_stack : malloc(sizeof *ls * (total + 1));
  if (!ls) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  char *key = NULL;
  size_t n = 0;
  int rc = 0;
  size_t keylen = 0;
  for (size_t i = 0; i < nlabels; i++) {
    const char *k = labels[i].name, *v = labels[i].value;
    size_t kl = strlen(k), vl = strlen(v);
    if (!ingest_valid_label_name(k, kl) || (kl >= 2 && k[0] == '_' && k[1] == '_')) {
      rc = md_error(err, errlen, MD_EINVAL, "invalid label name \"%.*s\"", (int)(kl > 64 ? 64 : kl), k);
      goto out;
    }
    if ((type == INGEST_TRACK_HISTOGRAM && strcmp(k, "le") == 0) ||
        (type == INGEST_TRACK_SUMMARY && strcmp(k, "quantile") == 0)) {
      rc = md_error(err, errlen, MD_EINVAL, "label \"%s\" is reserved for %s", k, type_name(type));
      goto out;
    }
    if (kl > r->limits.max_label_name_len || vl > r->limits.max_label_value_len) {
      rc = md_error(err, errlen, MD_EINVAL,
                    "label %.*s: name or value longer than the limit (%zu / %zu bytes)",
                    (int)(kl > 64 ? 64 : kl), k, r->limits.max_label_name_len, r->limits.max_label_value_len);
      goto out;
    }
    if (!ingest_valid_utf8(v, vl)) {
      rc = md_error(err, errlen, MD_EINVAL, "value of label %s is not valid UTF-8", k);
      goto out;
    }
    if (vl == 0) continue; /* empty value = no label */
    ls[n++] = labels[i];
    keylen += kl + vl + 2;
  }
  if (add_service) {
    size_t vl = strlen(service);
    if (vl > r->limits.max_label_value_len || !ingest_valid_utf8(service, vl)) {
      rc = md_error(err, errlen, MD_EINVAL, "service is longer than %zu bytes or not UTF-8",
                    r->limits.max_label_value_len);
      goto out;
    }
    ls[n++] = (tsdb_label_t){"service", service};
    keylen += 7 + vl + 2;
  }
  qsort(ls, n, sizeof *ls, cmp_label);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(ls[i - 1].name, ls[i].name) == 0) {
      rc = md_error(err, errlen, MD_EINVAL, "duplicate label name \"%s\"", ls[i].name);
      goto out;
    }
  }
  key = keylen + 1 <= sizeof key_stack ? key_stack : malloc(keylen + 1);
  if (!key) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto out;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    size_t kl = strlen(ls[i].name) + 1, vl = strlen(ls[i].value) + 1;
    memcpy(key + o, ls[i].name, kl);
    o += kl;
    memcpy(key + o, ls[i].value, vl);
    o += vl;
  }
  uint64_t sh = md_hash64(key, keylen, 0);

  pthread_mutex_lock(&r->mu);
  uint64_t fh = family_hash(tenant, name, nlen);
  tfamily_t *f = family_find(r, tenant, name, nlen, fh);
  if (f && f->type != type) {
    rc = md_error(err, errlen, MD_EINVAL, "metric %.*s is already a %s; it cannot be tracked as a %s",
                  (int)(nlen > 64 ? 64 : nlen), name, type_name(f->type), type_name(type));
    goto unlock;
  }
  ttenant_t *tt = tenant_get(r, tenant, true);
  if (!tt) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto unlock;
  }
  tseries_t *s = NULL;
  if (f && f->cap)
    for (s = f->tab[sh & (f->cap - 1)]; s; s = s->next)
      if (s->hash == sh && s->keylen == keylen && memcmp(s->key, key, keylen) == 0) break;
  if (!s) {
    if (tt->series >= r->max_series) {
      rc = md_error(err, errlen, MD_ELIMIT, "tenant %s already tracks %zu series (the limit)", tenant,
                    r->max_series);
      goto unlock;
    }
    if (!f) {
      if (r->nfam >= r->fcap && family_table_grow(r)) goto oom;
      f = calloc(1, sizeof *f);
      if (!f) goto oom;
      f->hash = fh;
      f->type = type;
      f->tenant = strdup(tenant);
      f->name = strndup(name, nlen);
      const double *b = r->default_bounds;
      size_t nb = r->n_default_bounds;
      for (size_t i = 0; i < r->n_metric_buckets; i++) {
        if (strlen(r->metric_buckets[i].metric) == nlen &&
            memcmp(r->metric_buckets[i].metric, name, nlen) == 0) {
          b = r->metric_buckets[i].bounds;
          nb = r->metric_buckets[i].n;
        }
      }
      f->bounds = dup_doubles(b, nb);
      f->nbounds = nb;
      if (!f->tenant || !f->name || !f->bounds) {
        free(f->tenant);
        free(f->name);
        free(f->bounds);
        free(f);
        goto oom;
      }
      f->next = r->fam[fh & (r->fcap - 1)];
      r->fam[fh & (r->fcap - 1)] = f;
      r->nfam++;
    }
    if (f->n >= f->cap) {
      size_t nc = f->cap ? f->cap * 2 : 8;
      tseries_t **nt = calloc(nc, sizeof *nt);
      if (!nt) goto oom;
      for (size_t i = 0; i < f->cap; i++) {
        tseries_t *x = f->tab[i];
        while (x) {
          tseries_t *next = x->next;
          x->next = nt[x->hash & (nc - 1)];
          nt[x->hash & (nc - 1)] = x;
          x = next;
        }
      }
      free(f->tab);
      f->tab = nt;
      f->cap = nc;
    }
    if (key == key_stack) {
      char *owned = malloc(keylen + 1);
      if (!owned) goto oom;
      memcpy(owned, key_stack, keylen);
      owned[keylen] = 0;
      key = owned;
    }
    s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->created_ms = now_ms;
    s->hash = sh;
    s->key = key;
    s->keylen = keylen;
    s->labels = malloc(sizeof(tsdb_label_t) * (n ? n : 1));
    if (type == INGEST_TRACK_HISTOGRAM) s->buckets = calloc(f->nbounds + 1, sizeof(uint64_t));
    if (!s->labels || (type == INGEST_TRACK_HISTOGRAM && !s->buckets)) {
      s->key = NULL;
      series_free(s);
      goto oom;
    }
    const char *kp = key;
    for (size_t i = 0; i < n; i++) {
      s->labels[i].name = kp;
      kp += strlen(kp) + 1;
      s->labels[i].value = kp;
      kp += strlen(kp) + 1;
    }
    s->nlabels = n;
    key = NULL; /* owned by the series now */
    s->next = f->tab[sh & (f->cap - 1)];
    f->tab[sh & (f->cap - 1)] = s;
    f->n++;
    tt->series++;
    r->total_series++;
  }
  switch (type) {
  case INGEST_TRACK_COUNTER:
    s->value += value;
    break;
  case INGEST_TRACK_GAUGE:
    s->value = value;
    break;
  case INGEST_TRACK_HISTOGRAM: {
    size_t b = 0;
    while (b < f->nbounds && value > f->bounds[b])
      b++;
    s->buckets[b]++;
    s->sum += value;
    s->count++;
    break;
  }
  case INGEST_TRACK_SUMMARY:
    if (obs_add(r, s, value, now_ms)) goto oom;
    s->sum += value;
    s->count++;
    break;
  }
  goto unlock;
oom:
  rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
unlock:
  pthread_mutex_unlock(&r->mu);
out:
  if (key != key_stack) free(key);
  if (ls != ls_stack) free(ls);
  return rc;
}

size_t ingest_track_series_count(ingest_track_t *r) {
  pthread_mutex_lock(&r->mu);
  size_t n = r->total_series;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- JSON track API ------------------------------------------------------------------- */

static int parse_type(const char *s, ingest_track_type_t *t) {
  static const struct {
    const char *n;
    ingest_track_type_t t;
  } tab[] = {{"counter", INGEST_TRACK_COUNTER},
             {"gauge", INGEST_TRACK_GAUGE},
             {"histogram", INGEST_TRACK_HISTOGRAM},
             {"summary", INGEST_TRACK_SUMMARY}};
  for (size_t i = 0; i < 4; i++)
    if (strcmp(s, tab[i].n) == 0) {
      *t = tab[i].t;
      return 0;
    }
  return -1;
}

/* One event object → observe. err gets the reason on failure. */
static int track_event(ingest_track_t *r, json_t *ev, const char *default_tenant, bool allow_body_tenant,
                       int64_t now, char *err, size_t errlen) {
  if (!json_is_object(ev)) return md_error(err, errlen, MD_EINVAL, "an event must be a JSON object");
  json_t *jn = json_object_get(ev, "name"), *jv = json_object_get(ev, "value"),
         *jt = json_object_get(ev, "type");
  json_t *jl = json_object_get(ev, "labels"), *js = json_object_get(ev, "service"),
         *jten = json_object_get(ev, "tenant_id"), *jh = json_object_get(ev, "help");
  if (!json_is_string(jn) || json_string_length(jn) == 0)
    return md_error(err, errlen, MD_EINVAL, "\"name\" is required and must be a string");
  if (!json_is_number(jv))
    return md_error(err, errlen, MD_EINVAL, "\"value\" is required and must be a number");
  ingest_track_type_t type = INGEST_TRACK_GAUGE;
  if (jt && (!json_is_string(jt) || parse_type(json_string_value(jt), &type)))
    return md_error(err, errlen, MD_EINVAL, "\"type\" must be one of counter, gauge, histogram, summary");
  if (jl && !json_is_object(jl) && !json_is_null(jl))
    return md_error(err, errlen, MD_EINVAL, "\"labels\" must be an object of strings");
  if (js && !json_is_string(js) && !json_is_null(js))
    return md_error(err, errlen, MD_EINVAL, "\"service\" must be a string");
  if (jten && !json_is_string(jten) && !json_is_null(jten))
    return md_error(err, errlen, MD_EINVAL, "\"tenant_id\" must be a string");
  if (jh && !json_is_string(jh) && !json_is_null(jh))
    return md_error(err, errlen, MD_EINVAL, "\"help\" must be a string");
  size_t nl = json_is_object(jl) ? json_object_size(jl) : 0;
  if (nl > INGEST_HARD_MAX_LABELS) return md_error(err, errlen, MD_EINVAL, "too many labels");
  tsdb_label_t ls[nl ? nl : 1];
  memset(ls, 0, sizeof ls);
  size_t i = 0;
  const char *k;
  json_t *v;
  if (nl) {
    json_object_foreach(jl, k, v) {
      if (!json_is_string(v)) return md_error(err, errlen, MD_EINVAL, "label \"%.64s\" must be a string", k);
      if (strlen(json_string_value(v)) != json_string_length(v))
        return md_error(err, errlen, MD_EINVAL, "label \"%.64s\" contains a NUL byte", k);
      ls[i++] = (tsdb_label_t){k, json_string_value(v)};
    }
  }
  const char *tenant = default_tenant;
  if (allow_body_tenant && json_is_string(jten) && json_string_length(jten)) tenant = json_string_value(jten);
  int rc = ingest_track_observe(r, tenant, json_string_value(jn), json_string_length(jn), type, ls, i,
                                json_is_string(js) ? json_string_value(js) : NULL, json_number_value(jv), now,
                                err, errlen);
  if (rc == 0 && json_is_string(jh) && json_string_length(jh)) {
    pthread_mutex_lock(&r->mu);
    uint64_t fh = family_hash(tenant, json_string_value(jn), json_string_length(jn));
    tfamily_t *f = family_find(r, tenant, json_string_value(jn), json_string_length(jn), fh);
    if (f && !f->help) f->help = strdup(json_string_value(jh));
    pthread_mutex_unlock(&r->mu);
  }
  return rc;
}

/* ---- fast path for batches --------------------------------------------------------------
 *
 * A batch of 10,000 events through jansson spent two thirds of its CPU building and freeing
 * the document tree (a dozen allocations per event). Plain batches — flat event objects whose
 * strings have no escapes — are read here instead, straight from a private copy of the body
 * whose closing quotes become NULs, so every string is a C string in place. The whole body
 * is read before any event is applied (events have effects: counters add); anything this
 * reader does not handle exactly as jansson would (escapes, nested values in unknown keys,
 * duplicate keys, non-string labels, numbers jansson refuses) sends the body to the jansson
 * path, which then words the errors. Accepted bodies get the same answers either way. */

typedef struct {
  const char *name, *type, *service, *tenant, *help;
  size_t nlen, label_off, nlabels;
  double value;
  bool has_name, has_value, name_ok, value_ok, type_ok, labels_ok, service_ok, tenant_ok, help_ok;
} fev_t;

typedef struct {
  char *p, *end;
  fev_t *ev;
  size_t nev, cap_ev;
  tsdb_label_t *lab;
  size_t nlab, cap_lab;
} fjson_t;

static void fj_ws(fjson_t *J) {
  while (J->p < J->end && (*J->p == ' ' || *J->p == '\t' || *J->p == '\n' || *J->p == '\r'))
    J->p++;
}

/* A string without escapes: NUL-terminates it in place. false = not for the fast path. */
static bool fj_str(fjson_t *J, const char **s, size_t *len) {
  if (J->p >= J->end || *J->p != '"') return false;
  char *b = ++J->p;
  bool high = false;
  while (J->p < J->end && *J->p != '"') {
    unsigned char c = (unsigned char)*J->p;
    if (c == '\\' || c < 0x20) return false;
    high |= c >= 0x80;
    J->p++;
  }
  if (J->p >= J->end) return false;
  size_t l = (size_t)(J->p - b);
  if (high && !ingest_valid_utf8(b, l)) return false;
  *J->p++ = 0;
  *s = b;
  *len = l;
  return true;
}

/* A JSON number (the grammar exactly); integers jansson would refuse as too big fall back. */
static bool fj_num(fjson_t *J, double *v) {
  char *b = J->p, *q = J->p;
  bool integer = true;
  if (q < J->end && *q == '-') q++;
  if (q >= J->end || *q < '0' || *q > '9') return false;
  if (*q == '0') {
    q++;
  } else {
    while (q < J->end && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < J->end && *q == '.') {
    integer = false;
    if (++q >= J->end || *q < '0' || *q > '9') return false;
    while (q < J->end && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < J->end && (*q == 'e' || *q == 'E')) {
    integer = false;
    q++;
    if (q < J->end && (*q == '+' || *q == '-')) q++;
    if (q >= J->end || *q < '0' || *q > '9') return false;
    while (q < J->end && *q >= '0' && *q <= '9')
      q++;
  }
  if (integer && q - b > 18) return false;
  if (ingest_parse_double(b, (size_t)(q - b), v) || !isfinite(*v)) return false;
  J->p = q;
  return true;
}

static bool fj_word(fjson_t *J, const char *w) {
  size_t l = strlen(w);
  if ((size_t)(J->end - J->p) < l || memcmp(J->p, w, l) != 0) return false;
  J->p += l;
  return true;
}

/* A string or null for "service", "tenant_id", "help", "type": *s NULL for null. A value of
 * another type is reported by the slow path, so it falls back. */
static bool fj_str_or_null(fjson_t *J, const char **s) {
  size_t l;
  if (fj_word(J, "null")) {
    *s = NULL;
    return true;
  }
  return fj_str(J, s, &l);
}

/* Skips the value of an unknown key: scalars only. */
static bool fj_skip(fjson_t *J) {
  const char *s;
  size_t l;
  double v;
  if (J->p >= J->end) return false;
  if (*J->p == '"') return fj_str(J, &s, &l);
  if (fj_word(J, "true") || fj_word(J, "false") || fj_word(J, "null")) return true;
  return fj_num(J, &v);
}

static bool fj_labels(fjson_t *J, fev_t *e) {
  e->label_off = J->nlab;
  if (fj_word(J, "null")) return true;
  if (J->p >= J->end || *J->p != '{') return false;
  J->p++;
  fj_ws(J);
  if (J->p < J->end && *J->p == '}') {
    J->p++;
    return true;
  }
  for (;;) {
    const char *k, *v;
    size_t kl, vl;
    fj_ws(J);
    if (!fj_str(J, &k, &kl)) return false;
    fj_ws(J);
    if (J->p >= J->end || *J->p++ != ':') return false;
    fj_ws(J);
    if (!fj_str(J, &v, &vl)) return false;
    for (size_t i = e->label_off; i < J->nlab; i++)
      if (strcmp(J->lab[i].name, k) == 0) return false; /* duplicate key: jansson refuses the body */
    if (J->nlab - e->label_off >= INGEST_HARD_MAX_LABELS) return false;
    if (J->nlab == J->cap_lab) {
      size_t nc = J->cap_lab ? J->cap_lab * 2 : 256;
      tsdb_label_t *nl = realloc(J->lab, nc * sizeof *nl);
      if (!nl) return false;
      J->lab = nl;
      J->cap_lab = nc;
    }
    J->lab[J->nlab++] = (tsdb_label_t){k, v};
    fj_ws(J);
    if (J->p < J->end && *J->p == ',') {
      J->p++;
      continue;
    }
    if (J->p < J->end && *J->p == '}') {
      J->p++;
      e->nlabels = J->nlab - e->label_off;
      return true;
    }
    return false;
  }
}

static bool fj_event(fjson_t *J, fev_t *e) {
  memset(e, 0, sizeof *e);
  e->label_off = J->nlab;
  if (J->p >= J->end || *J->p != '{') return false;
  J->p++;
  fj_ws(J);
  if (J->p < J->end && *J->p == '}') {
    J->p++;
    return true;
  }
  unsigned seen = 0;
  const char *unknown[8];
  size_t nunknown = 0;
  for (;;) {
    const char *k;
    size_t kl;
    fj_ws(J);
    if (!fj_str(J, &k, &kl)) return false;
    fj_ws(J);
    if (J->p >= J->end || *J->p++ != ':') return false;
    fj_ws(J);
    static const char *const keys[] = {"name", "value", "type", "labels", "service", "tenant_id", "help"};
    int which = -1;
    for (int i = 0; i < 7; i++)
      if (strcmp(k, keys[i]) == 0) which = i;
    if (which >= 0) {
      if (seen & (1u << which)) return false; /* duplicate key */
      seen |= 1u << which;
    }
    bool ok;
    switch (which) {
    case 0:
      e->has_name = true;
      ok = fj_str(J, &e->name, &e->nlen);
      break;
    case 1:
      e->has_value = true;
      ok = fj_num(J, &e->value);
      break;
    case 2:
      ok = fj_str_or_null(J, &e->type) && e->type; /* null type: the slow path words it */
      break;
    case 3:
      ok = fj_labels(J, e);
      break;
    case 4:
      ok = fj_str_or_null(J, &e->service);
      break;
    case 5:
      ok = fj_str_or_null(J, &e->tenant);
      break;
    case 6:
      ok = fj_str_or_null(J, &e->help);
      break;
    default:
      /* jansson refuses a repeated unknown key too: remember a few, fall back past that. */
      ok = nunknown < sizeof unknown / sizeof unknown[0];
      for (size_t u = 0; ok && u < nunknown; u++)
        ok = strcmp(unknown[u], k) != 0;
      if (ok) unknown[nunknown++] = k;
      ok = ok && fj_skip(J);
      break;
    }
    if (!ok) return false;
    fj_ws(J);
    if (J->p < J->end && *J->p == ',') {
      J->p++;
      continue;
    }
    if (J->p < J->end && *J->p == '}') {
      J->p++;
      return true;
    }
    return false;
  }
}

/* Applies one parsed event: the checks and messages of track_event, in its order. */
static int fev_apply(ingest_track_t *r, fjson_t *J, const fev_t *e, const char *default_tenant,
                     bool allow_body_tenant, int64_t now, char *err, size_t errlen) {
  if (!e->has_name || e->nlen == 0)
    return md_error(err, errlen, MD_EINVAL, "\"name\" is required and must be a string");
  if (!e->has_value) return md_error(err, errlen, MD_EINVAL, "\"value\" is required and must be a number");
  ingest_track_type_t type = INGEST_TRACK_GAUGE;
  if (e->type && parse_type(e->type, &type))
    return md_error(err, errlen, MD_EINVAL, "\"type\" must be one of counter, gauge, histogram, summary");
  const char *tenant = default_tenant;
  if (allow_body_tenant && e->tenant && e->tenant[0]) tenant = e->tenant;
  int rc = ingest_track_observe(r, tenant, e->name, e->nlen, type, J->lab + e->label_off, e->nlabels, e->service,
                                e->value, now, err, errlen);
  if (rc == 0 && e->help && e->help[0]) {
    pthread_mutex_lock(&r->mu);
    uint64_t fh = family_hash(tenant, e->name, e->nlen);
    tfamily_t *f = family_find(r, tenant, e->name, e->nlen, fh);
    if (f && !f->help) f->help = strdup(e->help);
    pthread_mutex_unlock(&r->mu);
  }
  return rc;
}

/* The batch response both readers write (seed 004): counts, and each failed item's index
 * and reason. */
typedef struct {
  sb_t errs;
  size_t ok, failed, nlimit;
} batch_report_t;

static void report_item(batch_report_t *br, size_t i, int rc, const char *err) {
  if (rc == 0) {
    br->ok++;
    return;
  }
  if (rc == MD_ELIMIT) br->nlimit++;
  if (br->failed++) sb_putc(&br->errs, ',');
  sb_printf(&br->errs, "{\"index\":%zu,\"error\":", i);
  sb_json_str(&br->errs, err, strlen(err));
  sb_putc(&br->errs, '}');
}

/* Writes the response and frees the report; returns the status of the whole batch: 0 when
 * something was stored (or nothing was sent), else MD_ELIMIT or MD_EINVAL. */
static int report_finish(batch_report_t *br, size_t total, sb_t *out) {
  sb_printf(out, "{\"success\":%s,\"total\":%zu,\"successful\":%zu,\"failed\":%zu",
            br->failed ? "false" : "true", total, br->ok, br->failed);
  if (br->failed) {
    sb_puts(out, ",\"errors\":[");
    sb_append(out, br->errs.buf, br->errs.len);
    sb_putc(out, ']');
  }
  sb_putc(out, '}');
  sb_free(&br->errs);
  return br->failed && br->ok == 0 ? (br->nlimit == br->failed ? MD_ELIMIT : MD_EINVAL) : 0;
}

/* Returns 1 when the body is not for the fast path (nothing applied), else 0 with the
 * answer written like the jansson path's. */
static int fast_batch(ingest_track_t *r, const char *body, size_t n, const char *default_tenant,
                      bool allow_body_tenant, int64_t now, sb_t *out, size_t *pok, size_t *pfailed,
                      int *pstatus) {
  fjson_t J = {0};
  char *copy = malloc(n + 1);
  int result = 1;
  if (!copy) return 1;
  memcpy(copy, body, n);
  copy[n] = 0;
  J.p = copy;
  J.end = copy + n;
  fj_ws(&J);
  if (J.p >= J.end || *J.p++ != '[') goto done;
  fj_ws(&J);
  if (J.p < J.end && *J.p == ']') {
    J.p++;
  } else {
    for (;;) {
      fj_ws(&J);
      if (J.nev == J.cap_ev) {
        size_t nc = J.cap_ev ? J.cap_ev * 2 : 256;
        fev_t *ne = realloc(J.ev, nc * sizeof *ne);
        if (!ne) goto done;
        J.ev = ne;
        J.cap_ev = nc;
      }
      if (!fj_event(&J, &J.ev[J.nev])) goto done;
      J.nev++;
      fj_ws(&J);
      if (J.p < J.end && *J.p == ',') {
        J.p++;
        continue;
      }
      if (J.p < J.end && *J.p == ']') {
        J.p++;
        break;
      }
      goto done;
    }
  }
  fj_ws(&J);
  if (J.p != J.end) goto done;
  result = 0;
  batch_report_t br = {0};
  char err[256];
  for (size_t i = 0; i < J.nev; i++)
    report_item(&br, i, fev_apply(r, &J, &J.ev[i], default_tenant, allow_body_tenant, now, err, sizeof err), err);
  *pok = br.ok;
  *pfailed = br.failed;
  *pstatus = report_finish(&br, J.nev, out);
done:
  free(J.ev);
  free(J.lab);
  free(copy);
  return result;
}

int ingest_track_json(ingest_track_t *r, const char *body, size_t n, bool batch, const char *default_tenant,
                      bool allow_body_tenant, int64_t now_ms, sb_t *out, size_t *nok, size_t *nfail) {
  if (batch) {
    size_t fok = 0, ffail = 0;
    int fstatus = 0;
    if (fast_batch(r, body, n, default_tenant, allow_body_tenant, now_ms, out, &fok, &ffail, &fstatus) == 0) {
      if (nok) *nok = fok;
      if (nfail) *nfail = ffail;
      return out->oom ? MD_ENOMEM : fstatus;
    }
  }
  json_error_t je;
  json_t *root = json_loadb(body, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  char err[256];
  int status = 0;
  size_t ok = 0, failed = 0;
  if (!root) {
    snprintf(err, sizeof err, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    sb_puts(out, "{\"success\":false,\"error\":");
    sb_json_str(out, err, strlen(err));
    sb_puts(out, "}");
    status = MD_EINVAL;
    goto out;
  }
  if (!batch) {
    int rc = track_event(r, root, default_tenant, allow_body_tenant, now_ms, err, sizeof err);
    if (rc) {
      failed = 1;
      sb_puts(out, "{\"success\":false,\"error\":");
      sb_json_str(out, err, strlen(err));
      sb_puts(out, "}");
      status = rc;
    } else {
      ok = 1;
      sb_puts(out, "{\"success\":true,\"message\":\"Metric tracked successfully\"}");
    }
    goto out;
  }
  if (!json_is_array(root)) {
    sb_puts(out, "{\"success\":false,\"error\":\"the body must be a JSON array of metric events\"}");
    status = MD_EINVAL;
    goto out;
  }
  size_t total = json_array_size(root);
  batch_report_t br = {0};
  for (size_t i = 0; i < total; i++)
    report_item(&br, i,
                track_event(r, json_array_get(root, i), default_tenant, allow_body_tenant, now_ms, err, sizeof err),
                err);
  ok = br.ok;
  failed = br.failed;
  status = report_finish(&br, total, out);
out:
  json_decref(root);
  if (nok) *nok = ok;
  if (nfail) *nfail = failed;
  if (out->oom) return MD_ENOMEM;
  return status;
}

/* ---- exposition and collection -------------------------------------------------------- */

static int cmp_family(const void *a, const void *b) {
  const tfamily_t *x = *(tfamily_t *const *)a, *y = *(tfamily_t *const *)b;
  int c = strcmp(x->name, y->name);
  return c ? c : strcmp(x->tenant, y->tenant);
}

static int cmp_series(const void *a, const void *b) {
  const tseries_t *x = *(tseries_t *const *)a, *y = *(tseries_t *const *)b;
  size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
  int c = memcmp(x->key, y->key, n);
  return c ? c : (x->keylen < y->keylen ? -1 : x->keylen > y->keylen);
}

/* Families of tenant (NULL = all), sorted. Caller holds the lock and frees the array. */
static tfamily_t **sorted_families(ingest_track_t *r, const char *tenant, size_t *n) {
  tfamily_t **v = malloc(sizeof *v * (r->nfam ? r->nfam : 1));
  if (!v) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < r->fcap; i++)
    for (tfamily_t *f = r->fam[i]; f; f = f->next)
      if (!tenant || strcmp(f->tenant, tenant) == 0) v[k++] = f;
  qsort(v, k, sizeof *v, cmp_family);
  *n = k;
  return v;
}

static tseries_t **sorted_series(tfamily_t *f) {
  tseries_t **v = malloc(sizeof *v * (f->n ? f->n : 1));
  if (!v) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < f->cap; i++)
    for (tseries_t *s = f->tab[i]; s; s = s->next)
      v[k++] = s;
  qsort(v, k, sizeof *v, cmp_series);
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Quantiles of the observations inside the window (NaN when none). q_out has r->nq slots. */
static int summary_quantiles(ingest_track_t *r, const tseries_t *s, int64_t now, double *q_out) {
  double *tmp = malloc(sizeof(double) * (s->obs_n ? s->obs_n : 1));
  if (!tmp) return MD_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < s->obs_n; i++) {
    size_t idx = (s->obs_head + i) % s->obs_cap;
    if (s->obs_t[idx] >= now - r->window_ms) tmp[k++] = s->obs_v[idx];
  }
  qsort(tmp, k, sizeof *tmp, cmp_double);
  for (size_t q = 0; q < r->nq; q++) {
    if (k == 0) {
      q_out[q] = NAN;
      continue;
    }
    double rank = ceil(r->quantiles[q] * (double)k);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    if (i >= k) i = k - 1;
    q_out[q] = tmp[i];
  }
  free(tmp);
  return 0;
}

static void put_labels(sb_t *o, const tseries_t *s, const char *tenant_label, const char *xname,
                       const char *xval) {
  size_t n = s->nlabels + (tenant_label ? 1 : 0) + (xname ? 1 : 0);
  if (n == 0) return;
  sb_putc(o, '{');
  bool first = true;
  for (size_t i = 0; i < s->nlabels; i++) {
    if (!first) sb_putc(o, ',');
    first = false;
    sb_puts(o, s->labels[i].name);
    sb_puts(o, "=\"");
    for (const char *p = s->labels[i].value; *p; p++) {
      if (*p == '\\' || *p == '"')
        sb_putc(o, '\\'), sb_putc(o, *p);
      else if (*p == '\n')
        sb_puts(o, "\\n");
      else
        sb_putc(o, *p);
    }
    sb_putc(o, '"');
  }
  if (tenant_label) {
    if (!first) sb_putc(o, ',');
    first = false;
    sb_puts(o, "tenant_id=\"");
    sb_puts(o, tenant_label); /* tenants are [A-Za-z0-9_.:-] */
    sb_putc(o, '"');
  }
  if (xname) {
    if (!first) sb_putc(o, ',');
    sb_printf(o, "%s=\"%s\"", xname, xval);
  }
  sb_putc(o, '}');
}

static void put_le(char *buf, size_t n, double b) {
  sb_t t = {0};
  ingest_format_double(&t, b);
  snprintf(buf, n, "%s", t.buf ? t.buf : "0");
  sb_free(&t);
}

static void put_sample(sb_t *o, const char *name, const char *suffix, const tseries_t *s, const char *tl,
                       const char *xn, const char *xv, double v) {
  sb_puts(o, name);
  if (suffix) sb_puts(o, suffix);
  put_labels(o, s, tl, xn, xv);
  sb_putc(o, ' ');
  ingest_format_double(o, v);
  sb_putc(o, '\n');
}

static void put_json_labels(sb_t *o, const tseries_t *s) {
  sb_putc(o, '{');
  for (size_t i = 0; i < s->nlabels; i++) {
    if (i) sb_putc(o, ',');
    sb_json_str(o, s->labels[i].name, strlen(s->labels[i].name));
    sb_putc(o, ':');
    sb_json_str(o, s->labels[i].value, strlen(s->labels[i].value));
  }
  sb_putc(o, '}');
}

static void put_json_num(sb_t *o, double v) {
  if (isfinite(v))
    ingest_format_double(o, v);
  else
    sb_puts(o, "null");
}

int ingest_track_expose(ingest_track_t *r, const char *tenant, sb_t *o, ingest_expose_format_t format) {
  int64_t now = md_now_ms();
  pthread_mutex_lock(&r->mu);
  size_t nf = 0;
  int rc = 0;
  tfamily_t **fams = sorted_families(r, tenant, &nf);
  double *qv = malloc(sizeof(double) * (r->nq ? r->nq : 1));
  if (!fams || !qv) {
    rc = MD_ENOMEM;
    goto out;
  }
  bool tenant_label = !tenant && r->ntenants > 1;
  bool om = format == INGEST_EXPOSE_OPENMETRICS;
  bool json = format == INGEST_EXPOSE_JSON;
  if (json) sb_putc(o, '[');
  bool first_json = true;
  for (size_t i = 0; i < nf; i++) {
    tfamily_t *f = fams[i];
    const char *tl = tenant_label ? f->tenant : NULL;
    /* OpenMetrics names a counter family without "_total" and its sample with it. */
    size_t nlen = strlen(f->name);
    bool has_total = nlen > 6 && strcmp(f->name + nlen - 6, "_total") == 0;
    char *family = strdup(f->name);
    if (!family) {
      rc = MD_ENOMEM;
      goto out;
    }
    if (om && f->type == INGEST_TRACK_COUNTER && has_total) family[nlen - 6] = 0;
    if (!json && (i == 0 || strcmp(fams[i - 1]->name, f->name) != 0)) {
      sb_printf(o, "# HELP %s ", family);
      if (f->help) {
        for (const char *p = f->help; *p; p++) {
          if (*p == '\\')
            sb_puts(o, "\\\\");
          else if (*p == '\n')
            sb_puts(o, "\\n");
          else if (om && *p == '"')
            sb_puts(o, "\\\"");
          else
            sb_putc(o, *p);
        }
      } else {
        sb_printf(o, "Tracked %s %s (POST /metrics/track)", type_name(f->type), f->name);
      }
      sb_printf(o, "\n# TYPE %s %s\n", family, type_name(f->type));
    }
    tseries_t **ss = sorted_series(f);
    if (!ss) {
      free(family);
      rc = MD_ENOMEM;
      goto out;
    }
    for (size_t k = 0; k < f->n; k++) {
      tseries_t *s = ss[k];
      if (json) {
        if (!first_json) sb_putc(o, ',');
        first_json = false;
        sb_puts(o, "{\"name\":");
        sb_json_str(o, f->name, nlen);
        sb_printf(o, ",\"type\":\"%s\",\"tenant_id\":", type_name(f->type));
        sb_json_str(o, f->tenant, strlen(f->tenant));
        sb_puts(o, ",\"labels\":");
        put_json_labels(o, s);
        if (f->type == INGEST_TRACK_COUNTER || f->type == INGEST_TRACK_GAUGE) {
          sb_puts(o, ",\"value\":");
          put_json_num(o, s->value);
        } else if (f->type == INGEST_TRACK_HISTOGRAM) {
          sb_puts(o, ",\"buckets\":{");
          uint64_t cum = 0;
          for (size_t b = 0; b <= f->nbounds; b++) {
            cum += s->buckets[b];
            char le[48];
            if (b < f->nbounds)
              put_le(le, sizeof le, f->bounds[b]);
            else
              snprintf(le, sizeof le, "+Inf");
            sb_printf(o, "%s\"%s\":%llu", b ? "," : "", le, (unsigned long long)cum);
          }
          sb_puts(o, "},\"sum\":");
          put_json_num(o, s->sum);
          sb_printf(o, ",\"count\":%llu", (unsigned long long)s->count);
        } else {
          if (summary_quantiles(r, s, now, qv)) {
            free(ss);
            free(family);
            rc = MD_ENOMEM;
            goto out;
          }
          sb_puts(o, ",\"quantiles\":{");
          for (size_t q = 0; q < r->nq; q++) {
            char qs[48];
            put_le(qs, sizeof qs, r->quantiles[q]);
            sb_printf(o, "%s\"%s\":", q ? "," : "", qs);
            put_json_num(o, qv[q]);
          }
          sb_puts(o, "},\"sum\":");
          put_json_num(o, s->sum);
          sb_printf(o, ",\"count\":%llu", (unsigned long long)s->count);
        }
        sb_putc(o, '}');
        continue;
      }
      switch (f->type) {
      case INGEST_TRACK_COUNTER:
        put_sample(o, f->name, om && !has_total ? "_total" : NULL, s, tl, NULL, NULL, s->value);
        break;
      case INGEST_TRACK_GAUGE:
        put_sample(o, f->name, NULL, s, tl, NULL, NULL, s->value);
        break;
      case INGEST_TRACK_HISTOGRAM: {
        uint64_t cum = 0;
        for (size_t b = 0; b <= f->nbounds; b++) {
          cum += s->buckets[b];
          char le[48];
          if (b < f->nbounds)
            put_le(le, sizeof le, f->bounds[b]);
          else
            snprintf(le, sizeof le, "+Inf");
          put_sample(o, f->name, "_bucket", s, tl, "le", le, (double)cum);
        }
        put_sample(o, f->name, "_sum", s, tl, NULL, NULL, s->sum);
        put_sample(o, f->name, "_count", s, tl, NULL, NULL, (double)s->count);
        break;
      }
      case INGEST_TRACK_SUMMARY:
        if (summary_quantiles(r, s, now, qv)) {
          free(ss);
          free(family);
          rc = MD_ENOMEM;
          goto out;
        }
        for (size_t q = 0; q < r->nq; q++) {
          char qs[48];
          put_le(qs, sizeof qs, r->quantiles[q]);
          put_sample(o, f->name, NULL, s, tl, "quantile", qs, qv[q]);
        }
        put_sample(o, f->name, "_sum", s, tl, NULL, NULL, s->sum);
        put_sample(o, f->name, "_count", s, tl, NULL, NULL, (double)s->count);
        break;
      }
    }
    free(ss);
    free(family);
  }
  if (json) sb_putc(o, ']');
  if (om) sb_puts(o, "# EOF\n");
out:
  pthread_mutex_unlock(&r->mu);
  free(fams);
  free(qv);
  if (o->oom) rc = MD_ENOMEM;
  return rc;
}

/* Adds one series (family name + suffix, the series' labels, an optional extra label) with
 * its sample at ts, preceded by a 0 at ts0 unless ts0 is INT64_MIN. */
static int batch_add(tsdb_batch_t *b, const char *name, const char *suffix, const tseries_t *s,
                     const char *xn, const char *xv, int64_t ts0, int64_t ts, double v) {
  tsdb_batch_series_begin(b);
  char full[600];
  int fl = snprintf(full, sizeof full, "%s%s", name, suffix ? suffix : "");
  if (fl < 0 || (size_t)fl >= sizeof full) fl = (int)strlen(full);
  int rc = tsdb_batch_label(b, "__name__", 8, full, (size_t)fl);
  for (size_t i = 0; i < s->nlabels && rc == 0; i++)
    rc = tsdb_batch_label(b, s->labels[i].name, strlen(s->labels[i].name), s->labels[i].value,
                          strlen(s->labels[i].value));
  if (rc == 0 && xn) rc = tsdb_batch_label(b, xn, strlen(xn), xv, strlen(xv));
  int rc2 = tsdb_batch_series_end(b);
  if (rc) return rc;
  if (rc2) return rc2;
  if (ts0 != INT64_MIN && (rc = tsdb_batch_sample(b, ts0, 0)) != 0) return rc;
  return tsdb_batch_sample(b, ts, v);
}

int ingest_track_collect(ingest_track_t *r, int64_t ts,
                         int (*emit)(void *ctx, const char *tenant, const tsdb_batch_t *b), void *ctx) {
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return MD_ENOMEM;
  int rc = 0;
  pthread_mutex_lock(&r->mu);
  double *qv = malloc(sizeof(double) * (r->nq ? r->nq : 1));
  char **tenants = malloc(sizeof(char *) * (r->ntenants ? r->ntenants : 1));
  size_t ntenants = r->ntenants;
  if (!qv || !tenants) {
    rc = MD_ENOMEM;
    pthread_mutex_unlock(&r->mu);
    goto out_nolock;
  }
  for (size_t t = 0; t < ntenants; t++)
    tenants[t] = r->tenants[t].name;
  for (size_t t = 0; t < ntenants && rc == 0; t++) {
    tsdb_batch_reset(b);
    for (size_t i = 0; i < r->fcap && rc == 0; i++) {
      for (tfamily_t *f = r->fam[i]; f && rc == 0; f = f->next) {
        if (strcmp(f->tenant, tenants[t]) != 0) continue;
        for (size_t k = 0; k < f->cap && rc == 0; k++) {
          for (tseries_t *s = f->tab[k]; s && rc == 0; s = s->next) {
            /* the 0 a cumulative series starts from, stored once (see tseries_t) */
            int64_t z = !s->collected && f->type != INGEST_TRACK_GAUGE && s->created_ms < ts ? s->created_ms
                                                                                             : INT64_MIN;
            s->collected = true;
            switch (f->type) {
            case INGEST_TRACK_COUNTER:
              rc = batch_add(b, f->name, NULL, s, NULL, NULL, z, ts, s->value);
              break;
            case INGEST_TRACK_GAUGE:
              rc = batch_add(b, f->name, NULL, s, NULL, NULL, INT64_MIN, ts, s->value);
              break;
            case INGEST_TRACK_HISTOGRAM: {
              uint64_t cum = 0;
              for (size_t j = 0; j <= f->nbounds && rc == 0; j++) {
                cum += s->buckets[j];
                char le[48];
                if (j < f->nbounds)
                  put_le(le, sizeof le, f->bounds[j]);
                else
                  snprintf(le, sizeof le, "+Inf");
                rc = batch_add(b, f->name, "_bucket", s, "le", le, z, ts, (double)cum);
              }
              if (!rc) rc = batch_add(b, f->name, "_sum", s, NULL, NULL, z, ts, s->sum);
              if (!rc) rc = batch_add(b, f->name, "_count", s, NULL, NULL, z, ts, (double)s->count);
              break;
            }
            case INGEST_TRACK_SUMMARY:
              rc = summary_quantiles(r, s, ts, qv);
              for (size_t q = 0; q < r->nq && rc == 0; q++) {
                char qs[48];
                put_le(qs, sizeof qs, r->quantiles[q]);
                rc = batch_add(b, f->name, NULL, s, "quantile", qs, INT64_MIN, ts, qv[q]);
              }
              if (!rc) rc = batch_add(b, f->name, "_sum", s, NULL, NULL, z, ts, s->sum);
              if (!rc) rc = batch_add(b, f->name, "_count", s, NULL, NULL, z, ts, (double)s->count);
              break;
            }
          }
        }
      }
    }
    if (rc) break;
    /* Emit outside the lock: the append may wait on the WAL. Tenant names stay valid since
     * tenants are never removed while the registry lives. */
    pthread_mutex_unlock(&r->mu);
    if (tsdb_batch_series_count(b)) rc = emit(ctx, tenants[t], b);
    pthread_mutex_lock(&r->mu);
  }
  pthread_mutex_unlock(&r->mu);
out_nolock:
  free(qv);
  free(tenants);
  tsdb_batch_free(b);
  return rc;
}
