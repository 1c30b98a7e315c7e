/*
 * The scrape manager: jobs (scrape_configs and runtime sources), the target table built
 * from their target groups by relabeling, scheduling, workers, file SD, and the JSON views
 * (/api/v1/targets, /metrics/sources).
 *
 * Scheduling: each target scrapes at a fixed offset within its interval, derived from the
 * hash of its identity (Prometheus's jitter), so 1000 targets on a 15 s interval spread
 * evenly instead of all firing on the same tick. One scheduler thread hands due targets to a
 * queue; a pool of workers scrapes them. A target is in the queue or in a worker at most
 * once (in_flight); a target that is slower than its interval skips a tick.
 *
 * Target identity: job + URL + final labels. On every change (reload, source CRUD, file SD)
 * the table is rebuilt; targets whose identity survives keep their state and staleness
 * tracking; targets that disappear get staleness markers for all their series.
 *
 * Threading: `mu` protects jobs, sources, the target table, the queue, and every target's
 * schedule and status fields. A target's scrape state (previous body and hashes) belongs to the worker
 * that has it in flight. Sink calls are made without holding `mu`.
 */
#include "scrape_job.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/config.h"

typedef struct source {
  char *id;
  json_t *obj;       /* as given (with "id") */
  scrape_job_t *job; /* NULL when disabled */
} source_t;

typedef struct dropped {
  char *job;
  tsdb_label_t *labels;
  size_t n;
} dropped_t;

struct scrape_manager {
  scrape_options_t opt;
  char *data_dir;
  scrape_sink_fn sink;
  void *ctx;
  pthread_mutex_t mu;
  pthread_cond_t sched_cv, work_cv, sd_cv;
  atomic_bool stopping;
  scrape_job_t **jobs;
  size_t njobs;
  source_t *sources;
  size_t nsources;
  scrape_target_t **targets; /* sorted by key */
  size_t ntargets;
  dropped_t *dropped;
  size_t ndropped;
  scrape_target_t **queue;
  size_t qhead, qlen, qcap;
  pthread_t sched_thread, sd_thread, *workers;
  scrape_worker_t *wstate; /* MAX_WORKERS slots, allocated once: workers keep pointers */
  int nworkers;
  bool started;
  scrape_labels_t *ls; /* target building, under mu */
  uint64_t scrapes, failures, samples;
  uint64_t id_counter;
};

/* A scrape blocks its worker for up to its timeout, so slow or unreachable targets must not
 * starve the others: while due targets have been waiting in the queue for BACKLOG_MS, the
 * scheduler adds GROW_STEP workers, up to MAX_WORKERS. Healthy targets keep the pool at
 * opt.workers (more threads cost CPU in cache misses for nothing). */
#define MAX_WORKERS 128
/* A year: longer intervals make no sense, and this keeps schedule arithmetic far from overflow. */
#define MAX_INTERVAL_MS (366LL * 86400 * 1000)
#define GROW_STEP 8
#define BACKLOG_MS 500
#define BACKLOG_MIN 4

static int grow_workers(scrape_manager_t *m, int want);

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- building targets ------------------------------------------------------------------ */

static int cmp_target_key(const void *a, const void *b) {
  return strcmp((*(scrape_target_t *const *)a)->key, (*(scrape_target_t *const *)b)->key);
}

static tsdb_label_t *copy_labels(const tsdb_label_t *l, size_t n, bool skip_meta, size_t *out_n) {
  tsdb_label_t *c = calloc(n + 1, sizeof *c);
  if (!c) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (skip_meta && strncmp(l[i].name, "__", 2) == 0) continue;
    c[k].name = strdup(l[i].name);
    c[k].value = strdup(l[i].value);
    if (!c[k].name || !c[k].value) {
      for (size_t x = 0; x <= k; x++) {
        free((char *)c[x].name);
        free((char *)c[x].value);
      }
      free(c);
      return NULL;
    }
    k++;
  }
  *out_n = k;
  return c;
}

static void free_labels(tsdb_label_t *l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free((char *)l[i].name);
    free((char *)l[i].value);
  }
  free(l);
}

/* Percent-encodes s for a URL query into sb. */
static void url_escape(sb_t *sb, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~') {
      sb_putc(sb, (char)c);
    } else {
      sb_putc(sb, '%');
      sb_putc(sb, hex[c >> 4]);
      sb_putc(sb, hex[c & 15]);
    }
  }
}

/* Builds one target from a discovered address; adds it to *list or to the dropped list. */
static int build_target(scrape_manager_t *m, scrape_job_t *j, const scrape_group_t *g, const char *addr,
                        scrape_target_t ***list, size_t *n, size_t *cap, dropped_t **drop, size_t *ndrop) {
  scrape_labels_t *ls = m->ls;
  scrape_labels_reset(ls);
  char iv[32], to[32];
  scrape_format_duration(j->interval_ms, iv, sizeof iv);
  scrape_format_duration(j->timeout_ms, to, sizeof to);
  int rc = 0;
  for (size_t i = 0; i < g->nlabels && !rc; i++)
    rc = scrape_labels_set(ls, g->labels[i].name, g->labels[i].value);
  if (!rc) rc = scrape_labels_set(ls, "__address__", addr);
  if (!rc) rc = scrape_labels_set(ls, "job", j->name);
  if (!rc) rc = scrape_labels_set(ls, "__scheme__", j->scheme);
  if (!rc) rc = scrape_labels_set(ls, "__metrics_path__", j->metrics_path);
  if (!rc) rc = scrape_labels_set(ls, "__scrape_interval__", iv);
  if (!rc) rc = scrape_labels_set(ls, "__scrape_timeout__", to);
  for (size_t i = 0; i < j->nparams && !rc; i++) {
    char pn[300];
    snprintf(pn, sizeof pn, "__param_%s", j->params[i].name);
    if (!scrape_labels_get(ls, pn)) rc = scrape_labels_set(ls, pn, j->params[i].value);
  }
  if (rc) return MD_ENOMEM;
  size_t nd;
  const tsdb_label_t *d = scrape_labels_items(ls, &nd);
  size_t ndisc = 0;
  tsdb_label_t *disc = copy_labels(d, nd, false, &ndisc);
  if (!disc) return MD_ENOMEM;
  int kept = scrape_relabel_apply(j->relabel, ls);
  if (kept < 0) {
    free_labels(disc, ndisc);
    return MD_ENOMEM;
  }
  const char *address = kept ? scrape_labels_get(ls, "__address__") : NULL;
  if (!kept || !address) {
    dropped_t *nd2 = realloc(*drop, (*ndrop + 1) * sizeof **drop);
    char *jn = strdup(j->name);
    if (!nd2 || !jn) {
      if (nd2) *drop = nd2;
      free(jn);
      free_labels(disc, ndisc);
      return MD_ENOMEM;
    }
    *drop = nd2;
    (*drop)[(*ndrop)++] = (dropped_t){jn, disc, ndisc};
    return 0;
  }
  if (!scrape_labels_get(ls, "instance") && scrape_labels_set(ls, "instance", address)) goto oom_disc;
  sb_t url = {0};
  const char *scheme = scrape_labels_get(ls, "__scheme__");
  const char *path = scrape_labels_get(ls, "__metrics_path__");
  sb_printf(&url, "%s://%s%s", scheme ? scheme : "http", address, path ? path : "/metrics");
  size_t nl;
  const tsdb_label_t *l = scrape_labels_items(ls, &nl);
  bool first = !strchr(url.buf ? url.buf : "", '?');
  for (size_t i = 0; i < nl; i++) {
    if (strncmp(l[i].name, "__param_", 8) != 0) continue;
    sb_putc(&url, first ? '?' : '&');
    first = false;
    url_escape(&url, l[i].name + 8);
    sb_putc(&url, '=');
    url_escape(&url, l[i].value);
  }
  int64_t interval = j->interval_ms, timeout = j->timeout_ms;
  const char *s = scrape_labels_get(ls, "__scrape_interval__");
  if (s && scrape_parse_duration_label(s, &interval) != 0) interval = j->interval_ms;
  s = scrape_labels_get(ls, "__scrape_timeout__");
  if (s && scrape_parse_duration_label(s, &timeout) != 0) timeout = j->timeout_ms;
  if (interval < 100) interval = 100;
  if (interval > MAX_INTERVAL_MS) interval = MAX_INTERVAL_MS; /* next_ms += interval stays in range */
  if (timeout <= 0 || timeout > interval) timeout = interval;
  scrape_target_t *t = calloc(1, sizeof *t);
  if (!t || url.oom) {
    free(t);
    sb_free(&url);
    goto oom_disc;
  }
  t->url = sb_steal(&url);
  t->labels = copy_labels(l, nl, true, &t->nlabels);
  t->discovered = disc;
  t->ndiscovered = ndisc;
  t->interval_ms = interval;
  t->timeout_ms = timeout;
  sb_t key = {0};
  sb_puts(&key, j->source_id ? j->source_id : "");
  sb_putc(&key, '\x01');
  sb_puts(&key, j->name);
  sb_putc(&key, '\x01');
  sb_puts(&key, t->url ? t->url : "");
  for (size_t i = 0; i < t->nlabels; i++)
    sb_printf(&key, "\x01%s=%s", t->labels[i].name, t->labels[i].value);
  t->key = key.oom ? NULL : sb_steal(&key);
  sb_free(&key);
  if (!t->url || !t->labels || !t->key) {
    t->discovered = NULL; /* freed below */
    scrape_target_free(t);
    goto oom_disc;
  }
  t->hash = md_hash64(t->key, strlen(t->key), 0);
  t->job = j;
  scrape_job_ref(j);
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    scrape_target_t **nl2 = realloc(*list, nc * sizeof *nl2);
    if (!nl2) {
      scrape_target_free(t);
      return MD_ENOMEM;
    }
    *list = nl2;
    *cap = nc;
  }
  (*list)[(*n)++] = t;
  return 0;
oom_disc:
  free_labels(disc, ndisc);
  return MD_ENOMEM;
}

static int build_job_targets(scrape_manager_t *m, scrape_job_t *j, scrape_target_t ***list, size_t *n,
                             size_t *cap, dropped_t **drop, size_t *ndrop) {
  for (size_t g = 0; g < j->ngroups; g++)
    for (size_t k = 0; k < j->groups[g].ntargets; k++) {
      int rc = build_target(m, j, &j->groups[g], j->groups[g].targets[k], list, n, cap, drop, ndrop);
      if (rc) return rc;
    }
  for (size_t f = 0; f < j->nfile_sd; f++)
    for (size_t x = 0; x < j->file_sd[f].nfound; x++) {
      const scrape_sd_file_t *sf = &j->file_sd[f].found[x];
      for (size_t g = 0; g < sf->ngroups; g++)
        for (size_t k = 0; k < sf->groups[g].ntargets; k++) {
          int rc = build_target(m, j, &sf->groups[g], sf->groups[g].targets[k], list, n, cap, drop, ndrop);
          if (rc) return rc;
        }
    }
  return 0;
}

static void schedule_first(scrape_target_t *t, int64_t now) {
  int64_t iv = t->interval_ms;
  t->offset_ms = (int64_t)(t->hash % (uint64_t)iv);
  int64_t next = now - now % iv + t->offset_ms;
  if (next < now) next += iv;
  t->next_ms = next;
}

/* Rebuilds the target table from the jobs (mu held). Targets that went away are returned in
 * *gone (to be finalised without the lock) unless a worker has them in flight, in which
 * case the worker finalises them. */
static int sync_targets(scrape_manager_t *m, scrape_target_t ***gone, size_t *ngone) {
  scrape_target_t **list = NULL;
  size_t n = 0, cap = 0;
  dropped_t *drop = NULL;
  size_t ndrop = 0;
  int rc = 0;
  *gone = NULL;
  *ngone = 0;
  for (size_t i = 0; i < m->njobs && !rc; i++)
    rc = build_job_targets(m, m->jobs[i], &list, &n, &cap, &drop, &ndrop);
  for (size_t i = 0; i < m->nsources && !rc; i++)
    if (m->sources[i].job) rc = build_job_targets(m, m->sources[i].job, &list, &n, &cap, &drop, &ndrop);
  if (rc) goto fail;
  if (n > 1) qsort(list, n, sizeof *list, cmp_target_key);
  /* Duplicate identities (the same address listed twice) collapse into one. */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w > 0 && strcmp(list[w - 1]->key, list[i]->key) == 0) {
      scrape_target_free(list[i]);
      continue;
    }
    list[w++] = list[i];
  }
  n = w;
  int64_t now = md_now_ms();
  /* Merge with the old table: survivors keep their state (and take the new job). */
  scrape_target_t **g = calloc(m->ntargets + 1, sizeof *g);
  if (!g) {
    rc = MD_ENOMEM;
    goto fail;
  }
  size_t ng = 0, oi = 0;
  for (size_t i = 0; i < n; i++) {
    while (oi < m->ntargets && strcmp(m->targets[oi]->key, list[i]->key) < 0)
      g[ng++] = m->targets[oi++];
    if (oi < m->ntargets && strcmp(m->targets[oi]->key, list[i]->key) == 0) {
      scrape_target_t *old = m->targets[oi++], *nw = list[i];
      scrape_job_t *tmp = old->job;
      old->job = nw->job;
      nw->job = tmp;
      tsdb_label_t *td = old->discovered;
      size_t tnd = old->ndiscovered;
      old->discovered = nw->discovered;
      old->ndiscovered = nw->ndiscovered;
      nw->discovered = td;
      nw->ndiscovered = tnd;
      if (old->interval_ms != nw->interval_ms) {
        old->interval_ms = nw->interval_ms;
        schedule_first(old, now);
      }
      old->timeout_ms = nw->timeout_ms;
      scrape_target_free(nw);
      list[i] = old;
    } else {
      schedule_first(list[i], now);
    }
  }
  while (oi < m->ntargets)
    g[ng++] = m->targets[oi++];
  free(m->targets);
  m->targets = list;
  m->ntargets = n;
  for (size_t i = 0; i < m->ndropped; i++) {
    free(m->dropped[i].job);
    free_labels(m->dropped[i].labels, m->dropped[i].n);
  }
  free(m->dropped);
  m->dropped = drop;
  m->ndropped = ndrop;
  /* Gone targets: in flight ones are the worker's to finalise; the queue may hold them. */
  size_t keep = 0;
  for (size_t i = 0; i < ng; i++) {
    g[i]->removed = true;
    if (g[i]->in_flight) continue;
    g[keep++] = g[i];
  }
  *gone = g;
  *ngone = keep;
  pthread_cond_signal(&m->sched_cv);
  return 0;
fail:
  for (size_t i = 0; i < n; i++)
    scrape_target_free(list[i]);
  free(list);
  for (size_t i = 0; i < ndrop; i++) {
    free(drop[i].job);
    free_labels(drop[i].labels, drop[i].n);
  }
  free(drop);
  return rc;
}

static void finalize_gone(scrape_manager_t *m, scrape_target_t **gone, size_t ngone, bool stale) {
  int64_t now = md_now_ms();
  for (size_t i = 0; i < ngone; i++) {
    if (stale) scrape_target_stale(gone[i], m->sink, m->ctx, now);
    scrape_target_free(gone[i]);
  }
  free(gone);
}

/* Locks, syncs, unlocks, finalises. */
static int resync(scrape_manager_t *m, bool locked) {
  scrape_target_t **gone;
  size_t ngone;
  if (!locked) pthread_mutex_lock(&m->mu);
  int rc = sync_targets(m, &gone, &ngone);
  pthread_mutex_unlock(&m->mu);
  if (rc == 0) finalize_gone(m, gone, ngone, true);
  return rc;
}

/* ---- file SD ------------------------------------------------------------------------ */

/* Reads one SD file (YAML, or JSON by its .json suffix) into groups; logs what is wrong. */
static int file_sd_read_one(const char *path, const char *job, scrape_group_t **out, size_t *nout) {
  char *text = NULL;
  size_t len = 0;
  if (md_read_file(path, &text, &len) != 0) {
    log_warn("file_sd (job %s): cannot read %s", job, path);
    return MD_EIO;
  }
  json_t *doc = NULL;
  char err[256] = "";
  size_t pl = strlen(path);
  if (pl > 5 && strcmp(path + pl - 5, ".json") == 0) {
    json_error_t je;
    doc = json_loadb(text ? text : "", len, 0, &je);
    if (!doc) snprintf(err, sizeof err, "line %d: %s", je.line, je.text);
  } else if (config_yaml_to_json(text ? text : "", len, &doc, err, sizeof err) != 0) {
    doc = NULL;
  }
  free(text);
  if (!doc) {
    log_warn("file_sd (job %s): %s: %s", job, path, err);
    return MD_EINVAL;
  }
  *out = NULL;
  *nout = 0;
  int rc =
      json_is_null(doc) ? 0 : scrape_groups_parse(doc, "__meta_filepath", path, out, nout, err, sizeof err);
  json_decref(doc);
  if (rc) log_warn("file_sd (job %s): %s%s", job, path, err);
  return rc;
}

static uint64_t file_signature(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return 0;
  uint64_t sig = md_hash_mix(1, (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec);
  return md_hash_mix(sig, (uint64_t)st.st_size);
}

/* Re-globs f and re-reads the files that changed (all of them when force). A file that
 * fails to parse keeps the groups last read from it, as Prometheus does. Returns true when
 * the set of groups changed. Takes mu for the swap only. */
static bool file_sd_refresh(scrape_manager_t *m, scrape_file_sd_t *f, const char *job, bool force) {
  scrape_sd_file_t *nf = NULL;
  size_t nn = 0, cap = 0;
  bool changed = false;
  pthread_mutex_lock(&m->mu);
  int64_t now = md_now_ms();
  if (now - f->last_read_ms >= f->refresh_ms) force = true;
  pthread_mutex_unlock(&m->mu);
  for (size_t i = 0; i < f->nfiles; i++) {
    glob_t gl;
    if (glob(f->files[i], 0, NULL, &gl) != 0) continue;
    for (size_t k = 0; k < gl.gl_pathc; k++) {
      const char *path = gl.gl_pathv[k];
      bool dup = false;
      for (size_t x = 0; x < nn && !dup; x++)
        dup = strcmp(nf[x].path, path) == 0;
      if (dup) continue;
      if (nn == cap) {
        size_t nc = cap ? cap * 2 : 8;
        scrape_sd_file_t *p = realloc(nf, nc * sizeof *p);
        if (!p) break;
        nf = p;
        cap = nc;
      }
      scrape_sd_file_t *e = &nf[nn];
      memset(e, 0, sizeof *e);
      if (!(e->path = strdup(path))) break;
      nn++;
      e->signature = file_signature(path);
      /* Unchanged or unreadable files keep their previous groups; they are taken over in
       * the swap below, under the lock, so a concurrent sync never sees them missing. */
      pthread_mutex_lock(&m->mu);
      bool known = false, same = false;
      for (size_t x = 0; x < f->nfound && !known; x++)
        if (strcmp(f->found[x].path, path) == 0) {
          known = true;
          same = f->found[x].signature == e->signature && !force;
        }
      pthread_mutex_unlock(&m->mu);
      if (!known) changed = true;
      e->reuse = true;
      if (same) continue;
      scrape_group_t *g;
      size_t ng;
      if (file_sd_read_one(path, job, &g, &ng) == 0) {
        e->groups = g;
        e->ngroups = ng;
        e->reuse = false;
        changed = true;
      }
    }
    globfree(&gl);
  }
  pthread_mutex_lock(&m->mu);
  if (f->nfound != nn) changed = true;
  for (size_t i = 0; i < nn; i++) {
    if (!nf[i].reuse) continue;
    for (size_t x = 0; x < f->nfound; x++)
      if (strcmp(f->found[x].path, nf[i].path) == 0) {
        nf[i].groups = f->found[x].groups;
        nf[i].ngroups = f->found[x].ngroups;
        f->found[x].groups = NULL;
        f->found[x].ngroups = 0;
        break;
      }
  }
  for (size_t x = 0; x < f->nfound; x++) {
    free(f->found[x].path);
    scrape_groups_free(f->found[x].groups, f->found[x].ngroups);
  }
  free(f->found);
  f->found = nf;
  f->nfound = nn;
  if (force) f->last_read_ms = now;
  pthread_mutex_unlock(&m->mu);
  return changed;
}

/* Refreshes the file SD of every job; returns true when something changed. mu not held. */
static bool refresh_file_sd(scrape_manager_t *m, bool force) {
  pthread_mutex_lock(&m->mu);
  scrape_job_t **jobs = calloc(m->njobs + 1, sizeof *jobs);
  size_t nj = 0;
  for (size_t i = 0; jobs && i < m->njobs; i++)
    if (m->jobs[i]->nfile_sd) {
      jobs[nj++] = m->jobs[i];
      scrape_job_ref(m->jobs[i]);
    }
  pthread_mutex_unlock(&m->mu);
  bool changed = false;
  for (size_t i = 0; i < nj; i++) {
    for (size_t f = 0; f < jobs[i]->nfile_sd; f++)
      changed |= file_sd_refresh(m, &jobs[i]->file_sd[f], jobs[i]->name, force);
    scrape_job_unref(jobs[i]);
  }
  free(jobs);
  return changed;
}

/* ---- threads ------------------------------------------------------------------------- */

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(cv, mu, &ts);
}

static void *sched_main(void *arg) {
  scrape_manager_t *m = arg;
  int64_t backlog_since = 0;
  pthread_mutex_lock(&m->mu);
  while (!atomic_load(&m->stopping)) {
    int64_t now = md_now_ms();
    int64_t wake = now + 1000;
    if (m->qlen >= BACKLOG_MIN) {
      if (!backlog_since) backlog_since = now;
      if (now - backlog_since >= BACKLOG_MS && m->nworkers < MAX_WORKERS) {
        grow_workers(m, m->nworkers + GROW_STEP);
        backlog_since = now;
      }
      if (wake > now + BACKLOG_MS) wake = now + BACKLOG_MS;
    } else {
      backlog_since = 0;
    }
    bool pushed = false;
    for (size_t i = 0; i < m->ntargets; i++) {
      scrape_target_t *t = m->targets[i];
      if (t->in_flight) continue;
      if (now >= t->next_ms) {
        if (m->qlen == m->qcap) {
          size_t nc = m->qcap ? m->qcap * 2 : 256;
          scrape_target_t **nq = malloc(nc * sizeof *nq);
          if (!nq) break;
          for (size_t k = 0; k < m->qlen; k++)
            nq[k] = m->queue[(m->qhead + k) % (m->qcap ? m->qcap : 1)];
          free(m->queue);
          m->queue = nq;
          m->qcap = nc;
          m->qhead = 0;
        }
        m->queue[(m->qhead + m->qlen++) % m->qcap] = t;
        t->in_flight = true;
        pushed = true;
        t->next_ms += t->interval_ms;
        if (t->next_ms <= now) { /* fell behind: back onto the grid */
          int64_t iv = t->interval_ms;
          t->next_ms = now - now % iv + t->offset_ms;
          while (t->next_ms <= now)
            t->next_ms += iv;
        }
      }
      if (t->next_ms < wake) wake = t->next_ms;
    }
    if (pushed) pthread_cond_broadcast(&m->work_cv);
    int64_t d = wake - md_now_ms();
    if (d > 0) timed_wait(&m->sched_cv, &m->mu, d);
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

typedef struct worker_arg {
  scrape_manager_t *m;
  int idx;
} worker_arg_t;

static void *worker_main(void *arg) {
  scrape_manager_t *m = ((worker_arg_t *)arg)->m;
  scrape_worker_t *w = &m->wstate[((worker_arg_t *)arg)->idx]; /* stable: never reallocated */
  free(arg);
  pthread_mutex_lock(&m->mu);
  for (;;) {
    while (m->qlen == 0 && !atomic_load(&m->stopping))
      pthread_cond_wait(&m->work_cv, &m->mu);
    if (atomic_load(&m->stopping)) break;
    scrape_target_t *t = m->queue[m->qhead];
    m->qhead = (m->qhead + 1) % m->qcap;
    m->qlen--;
    if (t->removed) { /* removed while queued */
      pthread_mutex_unlock(&m->mu);
      scrape_target_stale(t, m->sink, m->ctx, md_now_ms());
      scrape_target_free(t);
      pthread_mutex_lock(&m->mu);
      continue;
    }
    scrape_job_t *j = t->job;
    scrape_job_ref(j);
    pthread_mutex_unlock(&m->mu);
    scrape_result_t r;
    scrape_target_run(w, t, j, m->sink, m->ctx, &r);
    scrape_job_unref(j);
    pthread_mutex_lock(&m->mu);
    t->in_flight = false;
    t->last_scrape_ms = r.ts;
    t->last_duration_s = r.duration_s;
    snprintf(t->last_error, sizeof t->last_error, "%s", r.up ? "" : r.error);
    t->health = r.up ? SCRAPE_HEALTH_UP : SCRAPE_HEALTH_DOWN;
    t->last_samples = r.samples_post_relabel;
    m->scrapes++;
    m->failures += !r.up;
    m->samples += r.samples_scraped;
    if (t->removed) {
      pthread_mutex_unlock(&m->mu);
      scrape_target_stale(t, m->sink, m->ctx, md_now_ms());
      scrape_target_free(t);
      pthread_mutex_lock(&m->mu);
    }
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

static void *sd_main(void *arg) {
  scrape_manager_t *m = arg;
  for (;;) {
    pthread_mutex_lock(&m->mu);
    if (!atomic_load(&m->stopping)) timed_wait(&m->sd_cv, &m->mu, m->opt.sd_check_ms);
    bool stop = atomic_load(&m->stopping);
    pthread_mutex_unlock(&m->mu);
    if (stop) break;
    if (refresh_file_sd(m, false)) resync(m, false);
  }
  return NULL;
}

/* ---- jobs and sources ------------------------------------------------------------------ */

static int parse_jobs(const json_t *cfg, const scrape_options_t *opt, scrape_job_t ***out, size_t *nout,
                      char *err, size_t errlen) {
  *out = NULL;
  *nout = 0;
  int rc = scrape_config_check(cfg, opt, err, errlen);
  if (rc || !cfg || json_is_null(cfg)) return rc;
  size_t n = json_array_size(cfg);
  scrape_job_t **jobs = calloc(n + 1, sizeof *jobs);
  if (!jobs) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    rc = scrape_job_parse(json_array_get(cfg, i), opt, &jobs[i], err, errlen);
    if (rc) {
      for (size_t k = 0; k < i; k++)
        scrape_job_unref(jobs[k]);
      free(jobs);
      return rc;
    }
  }
  *out = jobs;
  *nout = n;
  return 0;
}

static bool valid_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.'))
      return false;
  }
  return true;
}

/* Validates src and builds its job (NULL when disabled). */
static int source_job(scrape_manager_t *m, const json_t *src, const char *id, scrape_job_t **out, char *err,
                      size_t errlen) {
  *out = NULL;
  const json_t *en = json_object_get(src, "enabled");
  if (en && !json_is_boolean(en)) return md_error(err, errlen, MD_EINVAL, "enabled: must be true or false");
  json_t *cfg;
  int rc = scrape_source_to_config(src, id, &cfg, err, errlen);
  if (rc) return rc;
  scrape_job_t *j;
  char e2[512];
  rc = scrape_job_parse(cfg, &m->opt, &j, e2, sizeof e2);
  json_decref(cfg);
  if (rc) {
    /* "scrape_configs: job \"x\": key: problem" reads oddly for a source: keep the tail. */
    const char *tail = strstr(e2, "\": ");
    return md_error(err, errlen, rc, "%s", tail ? tail + 3 : e2);
  }
  j->source_id = strdup(id);
  if (!j->source_id) {
    scrape_job_unref(j);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  if (en && json_is_false(en)) {
    scrape_job_unref(j);
    return 0;
  }
  *out = j;
  return 0;
}

static int save_sources(scrape_manager_t *m) {
  if (!m->data_dir) return 0;
  json_t *arr = json_array();
  json_t *doc = json_pack("{s:o}", "sources", arr);
  if (!doc) return MD_ENOMEM;
  for (size_t i = 0; i < m->nsources; i++)
    json_array_append(arr, m->sources[i].obj);
  char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(doc);
  if (!text) return MD_ENOMEM;
  sb_t path = {0};
  sb_printf(&path, "%s/sources.json", m->data_dir);
  int rc = path.oom ? MD_ENOMEM : md_mkdir_p(m->data_dir);
  if (rc == 0) rc = md_write_file_atomic(path.buf, text, strlen(text));
  /* The file holds scrape credentials: owner only. (md_write_file_atomic creates 0644; the
   * core helper takes no mode, so the file is briefly readable until this chmod.) */
  if (rc == 0 && chmod(path.buf, 0600) != 0) log_warn("cannot restrict %s to its owner", path.buf);
  if (rc) log_error("cannot write %s: error %d", path.buf ? path.buf : "sources.json", rc);
  sb_free(&path);
  free(text);
  return rc;
}

static void load_sources(scrape_manager_t *m) {
  if (!m->data_dir) return;
  sb_t path = {0};
  sb_printf(&path, "%s/sources.json", m->data_dir);
  char *text = NULL;
  size_t len = 0;
  int rc = path.oom ? MD_ENOMEM : md_read_file(path.buf, &text, &len);
  if (rc) {
    if (rc != MD_ENOTFOUND) log_error("cannot read %s", path.buf ? path.buf : "sources.json");
    sb_free(&path);
    return;
  }
  json_error_t je;
  json_t *doc = json_loadb(text ? text : "", len, 0, &je);
  free(text);
  json_t *arr = doc ? json_object_get(doc, "sources") : NULL;
  if (!json_is_array(arr)) {
    log_error("%s: not a sources document (%s); runtime sources not loaded", path.buf,
              doc ? "no sources list" : je.text);
    json_decref(doc);
    sb_free(&path);
    return;
  }
  for (size_t i = 0; i < json_array_size(arr); i++) {
    json_t *src = json_array_get(arr, i);
    const char *id = json_string_value(json_object_get(src, "id"));
    char err[512];
    scrape_job_t *j = NULL;
    if (!id || !valid_id(id)) {
      log_error("%s: source %zu has no valid id; skipped", path.buf, i);
      continue;
    }
    if (source_job(m, src, id, &j, err, sizeof err) != 0) {
      log_error("%s: source %s skipped: %s", path.buf, id, err);
      continue;
    }
    source_t *ns = realloc(m->sources, (m->nsources + 1) * sizeof *ns);
    char *idc = strdup(id);
    if (!ns || !idc) {
      if (ns) m->sources = ns;
      free(idc);
      scrape_job_unref(j);
      break;
    }
    m->sources = ns;
    json_incref(src);
    m->sources[m->nsources++] = (source_t){idc, src, j};
  }
  json_decref(doc);
  sb_free(&path);
}

/* ---- public ----------------------------------------------------------------------------- */

int scrape_manager_new(const scrape_options_t *opt, const json_t *scrape_configs, scrape_sink_fn sink,
                       void *ctx, scrape_manager_t **out, char *err, size_t errlen) {
  pthread_once(&curl_once, curl_init_once);
  if (!sink) return md_error(err, errlen, MD_EINVAL, "scrape: no sink");
  scrape_manager_t *m = calloc(1, sizeof *m);
  if (!m) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  if (opt)
    m->opt = *opt;
  else
    scrape_options_default(&m->opt);
  if (m->opt.workers <= 0) m->opt.workers = 16;
  if (m->opt.sd_check_ms <= 0) m->opt.sd_check_ms = 5000;
  if (m->opt.default_interval_ms <= 0) m->opt.default_interval_ms = 15000;
  if (m->opt.default_timeout_ms <= 0) m->opt.default_timeout_ms = 10000;
  m->opt.tenant = NULL;
  m->opt.data_dir = NULL;
  m->sink = sink;
  m->ctx = ctx;
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->sched_cv, NULL);
  pthread_cond_init(&m->work_cv, NULL);
  pthread_cond_init(&m->sd_cv, NULL);
  atomic_init(&m->stopping, false);
  int rc;
  m->ls = scrape_labels_new();
  if (!m->ls || (opt && opt->data_dir && !(m->data_dir = strdup(opt->data_dir)))) {
    rc = md_error(err, errlen, MD_ENOMEM, "out of memory");
    goto fail;
  }
  rc = parse_jobs(scrape_configs, &m->opt, &m->jobs, &m->njobs, err, errlen);
  if (rc) goto fail;
  load_sources(m);
  refresh_file_sd(m, true);
  pthread_mutex_lock(&m->mu);
  rc = resync(m, true);
  if (rc) {
    md_error(err, errlen, rc, "out of memory");
    goto fail;
  }
  *out = m;
  return 0;
fail:
  scrape_manager_free(m);
  return rc;
}

/* Starts workers until there are `want` (mu held or not yet shared). Returns how many run. */
static int grow_workers(scrape_manager_t *m, int want) {
  if (want > MAX_WORKERS) want = MAX_WORKERS;
  while (m->nworkers < want) {
    int i = m->nworkers;
    if (scrape_worker_init(&m->wstate[i], &m->stopping) != 0) break;
    worker_arg_t *a = malloc(sizeof *a);
    if (!a) {
      scrape_worker_destroy(&m->wstate[i]);
      break;
    }
    *a = (worker_arg_t){m, i};
    if (pthread_create(&m->workers[i], NULL, worker_main, a) != 0) {
      free(a);
      scrape_worker_destroy(&m->wstate[i]);
      break;
    }
    m->nworkers++;
  }
  return m->nworkers;
}

int scrape_manager_start(scrape_manager_t *m, char *err, size_t errlen) {
  if (m->started) return 0;
  m->workers = calloc(MAX_WORKERS, sizeof *m->workers);
  m->wstate = calloc(MAX_WORKERS, sizeof *m->wstate);
  if (!m->workers || !m->wstate) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  pthread_mutex_lock(&m->mu);
  int started = grow_workers(m, m->opt.workers);
  m->started = true;
  pthread_mutex_unlock(&m->mu);
  if (started == 0) return md_error(err, errlen, MD_ERR, "cannot start scrape workers");
  if (pthread_create(&m->sched_thread, NULL, sched_main, m) != 0) {
    m->sched_thread = 0;
    return md_error(err, errlen, MD_ERR, "cannot start the scrape scheduler");
  }
  if (pthread_create(&m->sd_thread, NULL, sd_main, m) != 0) {
    m->sd_thread = 0;
    return md_error(err, errlen, MD_ERR, "cannot start the service discovery thread");
  }
  return 0;
}

int scrape_manager_apply(scrape_manager_t *m, const json_t *scrape_configs, char *err, size_t errlen) {
  scrape_job_t **jobs;
  size_t n;
  int rc = parse_jobs(scrape_configs, &m->opt, &jobs, &n, err, errlen);
  if (rc) return rc;
  pthread_mutex_lock(&m->mu);
  scrape_job_t **old = m->jobs;
  size_t nold = m->njobs;
  m->jobs = jobs;
  m->njobs = n;
  pthread_mutex_unlock(&m->mu);
  for (size_t i = 0; i < nold; i++)
    scrape_job_unref(old[i]);
  free(old);
  refresh_file_sd(m, true);
  rc = resync(m, false);
  return rc ? md_error(err, errlen, rc, "out of memory") : 0;
}

void scrape_manager_free(scrape_manager_t *m) {
  if (!m) return;
  pthread_mutex_lock(&m->mu);
  atomic_store(&m->stopping, true);
  pthread_cond_broadcast(&m->sched_cv);
  pthread_cond_broadcast(&m->work_cv);
  pthread_cond_broadcast(&m->sd_cv);
  pthread_mutex_unlock(&m->mu);
  if (m->started) {
    if (m->sched_thread) pthread_join(m->sched_thread, NULL);
    if (m->sd_thread) pthread_join(m->sd_thread, NULL);
    for (int i = 0; i < m->nworkers; i++) {
      pthread_join(m->workers[i], NULL);
      scrape_worker_destroy(&m->wstate[i]);
    }
  }
  free(m->workers);
  free(m->wstate);
  /* Queued targets that were removed are owned by the queue. */
  for (size_t k = 0; k < m->qlen; k++) {
    scrape_target_t *t = m->queue[(m->qhead + k) % m->qcap];
    if (t->removed) scrape_target_free(t);
  }
  free(m->queue);
  /* No staleness markers on shutdown: a restart continues the series without a gap. */
  for (size_t i = 0; i < m->ntargets; i++)
    scrape_target_free(m->targets[i]);
  free(m->targets);
  for (size_t i = 0; i < m->ndropped; i++) {
    free(m->dropped[i].job);
    free_labels(m->dropped[i].labels, m->dropped[i].n);
  }
  free(m->dropped);
  for (size_t i = 0; i < m->njobs; i++)
    scrape_job_unref(m->jobs[i]);
  free(m->jobs);
  for (size_t i = 0; i < m->nsources; i++) {
    free(m->sources[i].id);
    json_decref(m->sources[i].obj);
    scrape_job_unref(m->sources[i].job);
  }
  free(m->sources);
  scrape_labels_free(m->ls);
  free(m->data_dir);
  pthread_cond_destroy(&m->sched_cv);
  pthread_cond_destroy(&m->work_cv);
  pthread_cond_destroy(&m->sd_cv);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

void scrape_manager_stats(scrape_manager_t *m, scrape_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&m->mu);
  out->targets_active = m->ntargets;
  out->targets_dropped = m->ndropped;
  for (size_t i = 0; i < m->ntargets; i++)
    out->targets_up += m->targets[i]->health == SCRAPE_HEALTH_UP;
  out->scrapes = m->scrapes;
  out->scrape_failures = m->failures;
  out->samples_scraped = m->samples;
  pthread_mutex_unlock(&m->mu);
}

/* ---- JSON views ---------------------------------------------------------------------- */

static void labels_json(sb_t *sb, const tsdb_label_t *l, size_t n) {
  sb_putc(sb, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(sb, ',');
    sb_json_str(sb, l[i].name, strlen(l[i].name));
    sb_putc(sb, ':');
    sb_json_str(sb, l[i].value, strlen(l[i].value));
  }
  sb_putc(sb, '}');
}

static const char *health_str(scrape_health_t h) {
  return h == SCRAPE_HEALTH_UP ? "up" : h == SCRAPE_HEALTH_DOWN ? "down" : "unknown";
}

static void time_json(sb_t *sb, int64_t ms) {
  char buf[32];
  if (ms <= 0) {
    sb_puts(sb, "\"0001-01-01T00:00:00Z\"");
    return;
  }
  md_format_rfc3339(ms, buf);
  sb_json_str(sb, buf, strlen(buf));
}

static void target_json(sb_t *sb, const scrape_target_t *t) {
  char iv[32], to[32];
  scrape_format_duration(t->interval_ms, iv, sizeof iv);
  scrape_format_duration(t->timeout_ms, to, sizeof to);
  sb_puts(sb, "{\"discoveredLabels\":");
  labels_json(sb, t->discovered, t->ndiscovered);
  sb_puts(sb, ",\"labels\":");
  labels_json(sb, t->labels, t->nlabels);
  sb_puts(sb, ",\"scrapePool\":");
  sb_json_str(sb, t->job->name, strlen(t->job->name));
  sb_puts(sb, ",\"scrapeUrl\":");
  sb_json_str(sb, t->url, strlen(t->url));
  sb_puts(sb, ",\"globalUrl\":");
  sb_json_str(sb, t->url, strlen(t->url));
  sb_puts(sb, ",\"lastError\":");
  sb_json_str(sb, t->last_error, strlen(t->last_error));
  sb_puts(sb, ",\"lastScrape\":");
  time_json(sb, t->last_scrape_ms);
  sb_puts(sb, ",\"lastScrapeDuration\":");
  sb_double(sb, t->last_duration_s);
  sb_printf(sb, ",\"health\":\"%s\",\"scrapeInterval\":\"%s\",\"scrapeTimeout\":\"%s\"}",
            health_str(t->health), iv, to);
}

int scrape_targets_json(scrape_manager_t *m, const char *state, sb_t *out) {
  bool active = !state || !*state || strcmp(state, "any") == 0 || strcmp(state, "active") == 0;
  bool dropped = !state || !*state || strcmp(state, "any") == 0 || strcmp(state, "dropped") == 0;
  pthread_mutex_lock(&m->mu);
  sb_puts(out, "{\"activeTargets\":[");
  for (size_t i = 0; active && i < m->ntargets; i++) {
    if (i) sb_putc(out, ',');
    target_json(out, m->targets[i]);
  }
  sb_puts(out, "],\"droppedTargets\":[");
  for (size_t i = 0; dropped && i < m->ndropped; i++) {
    if (i) sb_putc(out, ',');
    sb_puts(out, "{\"discoveredLabels\":");
    labels_json(out, m->dropped[i].labels, m->dropped[i].n);
    sb_putc(out, '}');
  }
  sb_puts(out, "],\"droppedTargetCounts\":{");
  /* Per job, in first-seen order. */
  size_t written = 0;
  for (size_t i = 0; i < m->ndropped; i++) {
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++)
      seen = strcmp(m->dropped[k].job, m->dropped[i].job) == 0;
    if (seen) continue;
    size_t c = 0;
    for (size_t k = i; k < m->ndropped; k++)
      c += strcmp(m->dropped[k].job, m->dropped[i].job) == 0;
    if (written++) sb_putc(out, ',');
    sb_json_str(out, m->dropped[i].job, strlen(m->dropped[i].job));
    sb_printf(out, ":%zu", c);
  }
  sb_puts(out, "}}");
  pthread_mutex_unlock(&m->mu);
  return out->oom ? MD_ENOMEM : 0;
}

/* One source with its health (mu held). */
/* Secrets a source may carry: shown as "<secret>" (Prometheus's placeholder) because reading
 * sources needs only the read role, while the credentials are the admin's. A PUT that sends
 * the placeholder back keeps the stored value, so GET-modify-PUT works. sources.json keeps
 * the real values (the scraper needs them). */
#define SECRET_MARK "<secret>"
static const char *const SECRETS[][2] = {
    {"basic_auth", "password"}, {"authorization", "credentials"}, {NULL, "bearer_token"}};
#define NSECRETS (sizeof SECRETS / sizeof SECRETS[0])

/* The object holding secret k of o (o itself or its SECRETS[k][0] member), or NULL. */
static json_t *secret_parent(const json_t *o, size_t k) {
  json_t *p = SECRETS[k][0] ? json_object_get(o, SECRETS[k][0]) : (json_t *)o;
  return json_is_object(p) ? p : NULL;
}

/* A new reference to obj with its secrets replaced by the placeholder (a copy only when
 * there is something to hide). NULL on allocation failure. */
static json_t *redacted(const json_t *obj) {
  json_t *copy = NULL;
  for (size_t k = 0; k < NSECRETS; k++) {
    json_t *p = secret_parent(obj, k);
    if (!p || !json_object_get(p, SECRETS[k][1])) continue;
    if (!copy && !(copy = json_deep_copy(obj))) return NULL;
    if (json_object_set_new(secret_parent(copy, k), SECRETS[k][1], json_string(SECRET_MARK))) {
      json_decref(copy);
      return NULL;
    }
  }
  return copy ? copy : json_incref((json_t *)obj);
}

/* In nw (a private copy), every secret sent back as the placeholder takes old's value. */
static int restore_secrets(json_t *nw, const json_t *old) {
  for (size_t k = 0; k < NSECRETS; k++) {
    json_t *np = secret_parent(nw, k), *op = secret_parent(old, k);
    const char *v = np ? json_string_value(json_object_get(np, SECRETS[k][1])) : NULL;
    if (!v || strcmp(v, SECRET_MARK) != 0) continue;
    json_t *ov = op ? json_object_get(op, SECRETS[k][1]) : NULL;
    if (!ov) continue; /* nothing stored: the placeholder stays and is taken literally */
    if (json_object_set(np, SECRETS[k][1], ov)) return MD_ENOMEM;
  }
  return 0;
}

static void source_json(scrape_manager_t *m, const source_t *s, sb_t *out) {
  json_t *shown = redacted(s->obj);
  char *text = shown ? json_dumps(shown, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(shown);
  size_t tl = text ? strlen(text) : 0;
  /* The stored object without its closing brace, then the health object. */
  if (text && tl >= 2) {
    sb_append(out, text, tl - 1);
    if (tl > 2) sb_putc(out, ',');
  } else {
    sb_putc(out, '{');
  }
  free(text);
  int64_t last = 0;
  double dur = 0;
  const char *lerr = "";
  int up = 0, down = 0, unknown = 0;
  uint64_t samples = 0;
  sb_puts(out, "\"health\":{\"targets\":[");
  size_t nt = 0;
  for (size_t i = 0; i < m->ntargets; i++) {
    const scrape_target_t *t = m->targets[i];
    if (!t->job->source_id || strcmp(t->job->source_id, s->id) != 0) continue;
    if (nt++) sb_putc(out, ',');
    sb_puts(out, "{\"url\":");
    sb_json_str(out, t->url, strlen(t->url));
    sb_printf(out, ",\"health\":\"%s\",\"last_scrape\":", health_str(t->health));
    time_json(out, t->last_scrape_ms);
    sb_puts(out, ",\"last_duration_seconds\":");
    sb_double(out, t->last_duration_s);
    sb_puts(out, ",\"last_error\":");
    sb_json_str(out, t->last_error, strlen(t->last_error));
    sb_printf(out, ",\"last_samples\":%llu", (unsigned long long)t->last_samples);
    samples += t->last_samples;
    sb_puts(out, ",\"labels\":");
    labels_json(out, t->labels, t->nlabels);
    sb_putc(out, '}');
    up += t->health == SCRAPE_HEALTH_UP;
    down += t->health == SCRAPE_HEALTH_DOWN;
    unknown += t->health == SCRAPE_HEALTH_UNKNOWN;
    if (t->last_scrape_ms > last) {
      last = t->last_scrape_ms;
      dur = t->last_duration_s;
    }
    if (*t->last_error) lerr = t->last_error;
  }
  const char *status = !s->job ? "disabled" : down ? "down" : up && !unknown ? "up" : "unknown";
  sb_printf(out, "],\"status\":\"%s\",\"last_scrape\":", status);
  if (last)
    time_json(out, last);
  else
    sb_puts(out, "null");
  sb_puts(out, ",\"last_duration_seconds\":");
  sb_double(out, dur);
  sb_puts(out, ",\"last_error\":");
  sb_json_str(out, lerr, strlen(lerr));
  sb_printf(out, ",\"last_samples\":%llu}}", (unsigned long long)samples);
}

int scrape_sources_json(scrape_manager_t *m, sb_t *out) {
  pthread_mutex_lock(&m->mu);
  sb_putc(out, '[');
  for (size_t i = 0; i < m->nsources; i++) {
    if (i) sb_putc(out, ',');
    source_json(m, &m->sources[i], out);
  }
  sb_putc(out, ']');
  pthread_mutex_unlock(&m->mu);
  return out->oom ? MD_ENOMEM : 0;
}

static long find_source(scrape_manager_t *m, const char *id) {
  for (size_t i = 0; i < m->nsources; i++)
    if (strcmp(m->sources[i].id, id) == 0) return (long)i;
  return -1;
}

int scrape_source_json(scrape_manager_t *m, const char *id, sb_t *out) {
  pthread_mutex_lock(&m->mu);
  long i = find_source(m, id);
  if (i >= 0) source_json(m, &m->sources[i], out);
  pthread_mutex_unlock(&m->mu);
  return i < 0 ? MD_ENOTFOUND : out->oom ? MD_ENOMEM : 0;
}

int scrape_source_add(scrape_manager_t *m, const json_t *src, char *id_out, size_t idlen, char *err,
                      size_t errlen) {
  if (!json_is_object(src)) return md_error(err, errlen, MD_EINVAL, "a source must be a JSON object");
  const json_t *idv = json_object_get(src, "id");
  char idbuf[72];
  if (idv) {
    const char *s = json_string_value(idv);
    if (!s || !valid_id(s))
      return md_error(err, errlen, MD_EINVAL, "id: 1 to 64 characters of A-Z a-z 0-9 - _ . expected");
    snprintf(idbuf, sizeof idbuf, "%s", s);
  } else {
    pthread_mutex_lock(&m->mu);
    do {
      snprintf(idbuf, sizeof idbuf, "src-%08llx",
               (unsigned long long)(md_hash_mix((uint64_t)md_now_ms(), ++m->id_counter) & 0xffffffffULL));
    } while (find_source(m, idbuf) >= 0);
    pthread_mutex_unlock(&m->mu);
  }
  scrape_job_t *j;
  int rc = source_job(m, src, idbuf, &j, err, errlen);
  if (rc) return rc;
  json_t *obj = json_deep_copy(src);
  char *idc = strdup(idbuf);
  if (!obj || !idc || json_object_set_new(obj, "id", json_string(idbuf))) {
    json_decref(obj);
    free(idc);
    scrape_job_unref(j);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  json_object_del(obj, "health");
  pthread_mutex_lock(&m->mu);
  if (find_source(m, idbuf) >= 0) {
    pthread_mutex_unlock(&m->mu);
    json_decref(obj);
    free(idc);
    scrape_job_unref(j);
    return md_error(err, errlen, MD_ELIMIT, "a source with id \"%s\" exists", idbuf);
  }
  source_t *ns = realloc(m->sources, (m->nsources + 1) * sizeof *ns);
  if (!ns) {
    pthread_mutex_unlock(&m->mu);
    json_decref(obj);
    free(idc);
    scrape_job_unref(j);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  m->sources = ns;
  m->sources[m->nsources++] = (source_t){idc, obj, j};
  rc = save_sources(m);
  if (id_out) snprintf(id_out, idlen, "%s", idbuf);
  resync(m, true);
  return rc ? md_error(err, errlen, rc, "source added but not persisted (see the log)") : 0;
}

int scrape_source_update(scrape_manager_t *m, const char *id, const json_t *src, char *err, size_t errlen) {
  if (!json_is_object(src)) return md_error(err, errlen, MD_EINVAL, "a source must be a JSON object");
  const char *given = json_string_value(json_object_get(src, "id"));
  if (given && strcmp(given, id) != 0)
    return md_error(err, errlen, MD_EINVAL, "id in the body differs from the path");
  json_t *obj = json_deep_copy(src);
  if (!obj || json_object_set_new(obj, "id", json_string(id))) {
    json_decref(obj);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  json_object_del(obj, "health");
  pthread_mutex_lock(&m->mu);
  long i = find_source(m, id);
  int rc = i >= 0 ? restore_secrets(obj, m->sources[i].obj) : 0;
  pthread_mutex_unlock(&m->mu);
  if (rc) {
    json_decref(obj);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  scrape_job_t *j;
  rc = source_job(m, obj, id, &j, err, errlen);
  if (rc) {
    json_decref(obj);
    return rc;
  }
  pthread_mutex_lock(&m->mu);
  i = find_source(m, id);
  if (i < 0) {
    pthread_mutex_unlock(&m->mu);
    json_decref(obj);
    scrape_job_unref(j);
    return md_error(err, errlen, MD_ENOTFOUND, "no source \"%s\"", id);
  }
  json_decref(m->sources[i].obj);
  scrape_job_unref(m->sources[i].job);
  m->sources[i].obj = obj;
  m->sources[i].job = j;
  rc = save_sources(m);
  resync(m, true);
  return rc ? md_error(err, errlen, rc, "source updated but not persisted (see the log)") : 0;
}

int scrape_source_delete(scrape_manager_t *m, const char *id, char *err, size_t errlen) {
  pthread_mutex_lock(&m->mu);
  long i = find_source(m, id);
  if (i < 0) {
    pthread_mutex_unlock(&m->mu);
    return md_error(err, errlen, MD_ENOTFOUND, "no source \"%s\"", id);
  }
  source_t s = m->sources[i];
  memmove(m->sources + i, m->sources + i + 1, (m->nsources - (size_t)i - 1) * sizeof *m->sources);
  m->nsources--;
  int rc = save_sources(m);
  resync(m, true);
  free(s.id);
  json_decref(s.obj);
  scrape_job_unref(s.job);
  return rc ? md_error(err, errlen, rc, "source deleted but the deletion not persisted (see the log)") : 0;
}
