/*
 * One scrape of one target, the way Prometheus does it:
 *   1. GET the URL with libcurl (Accept negotiating OpenMetrics/text, gzip, timeout, auth,
 *      TLS, body size limit); anything but a 200 fails the scrape;
 *   2. parse with ingest's text/OpenMetrics parser — any bad line fails the whole scrape,
 *      as in Prometheus, so a half-broken exposition never produces half the series;
 *   3. attach target labels (honor_labels: exposed labels win, else they are renamed
 *      exported_<name>), metric_relabel_configs, label and sample limits;
 *   4. staleness: series of the previous scrape that are missing now get a stale marker
 *      (a failed scrape makes every previous series stale);
 *   5. report series up, scrape_duration_seconds, scrape_samples_scraped,
 *      scrape_samples_post_metric_relabeling, scrape_series_added;
 *   6. one batch to the sink.
 *
 * Series carrying their own timestamp (honored) are not tracked for staleness, as in
 * Prometheus. For staleness a target keeps only the hashes of its last scrape's series and
 * that scrape's body (swapped with the worker's buffer, no copy): when a series disappears
 * its labels are re-derived from the old body with the job it was processed with. A body is
 * several times smaller than the label sets it produces, and the re-derivation only runs
 * when something disappeared. A worker (scrape_worker_t) owns a curl handle (connections
 * are reused across scrapes) and scratch batches, so the steady state allocates nothing.
 */
#include "scrape_job.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"

/* Samples without a timestamp get this from the parser and the scrape time here. */
#define NO_TS INT64_MIN

static const char ACCEPT[] =
    "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

int scrape_worker_init(scrape_worker_t *w, const atomic_bool *stopping) {
  memset(w, 0, sizeof *w);
  w->stopping = stopping;
  /* The curl handle comes with the first fetch: a worker made only to write staleness
   * markers for a removed target never needs one. */
  w->parsed = tsdb_batch_new();
  w->out = tsdb_batch_new();
  w->old = tsdb_batch_new();
  w->ls = scrape_labels_new();
  if (!w->parsed || !w->out || !w->old || !w->ls) {
    scrape_worker_destroy(w);
    return MD_ENOMEM;
  }
  return 0;
}

void scrape_worker_destroy(scrape_worker_t *w) {
  if (w->curl) curl_easy_cleanup(w->curl);
  sb_free(&w->body);
  tsdb_batch_free(w->parsed);
  tsdb_batch_free(w->out);
  tsdb_batch_free(w->old);
  scrape_labels_free(w->ls);
  free(w->cur.v);
  free(w->oldrefs.v);
  memset(w, 0, sizeof *w);
}

static void clear_prev(scrape_target_t *t) {
  sb_reset(&t->prev_body);
  scrape_job_unref(t->prev_job);
  t->prev_job = NULL;
  t->nprev = 0;
}

void scrape_target_free(scrape_target_t *t) {
  if (!t) return;
  free(t->key);
  scrape_job_unref(t->job);
  for (size_t i = 0; i < t->nlabels; i++) {
    free((char *)t->labels[i].name);
    free((char *)t->labels[i].value);
  }
  free(t->labels);
  for (size_t i = 0; i < t->ndiscovered; i++) {
    free((char *)t->discovered[i].name);
    free((char *)t->discovered[i].value);
  }
  free(t->discovered);
  free(t->url);
  clear_prev(t);
  sb_free(&t->prev_body);
  free(t->prev_set);
  free(t);
}

/* ---- HTTP -------------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ctx) {
  scrape_worker_t *w = ctx;
  size_t n = size * nmemb;
  if (w->body_limit && w->body.len + n > w->body_limit) {
    w->body_over = true;
    return 0; /* aborts the transfer */
  }
  sb_append(&w->body, p, n);
  return w->body.oom ? 0 : n;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  scrape_worker_t *w = ctx;
  return atomic_load(w->stopping) ? 1 : 0;
}

/* Fetches t's URL into w->body. Returns 0 or fills err. */
static int fetch(scrape_worker_t *w, const scrape_target_t *t, const scrape_job_t *j, bool *openmetrics,
                 char *err, size_t errlen) {
  if (!w->curl && !(w->curl = curl_easy_init()))
    return md_error(err, errlen, MD_ENOMEM, "cannot create a curl handle");
  CURL *c = w->curl;
  curl_easy_reset(c);
  sb_reset(&w->body);
  w->body_over = false;
  w->body_limit = j->body_size_limit;
  struct curl_slist *h = NULL, *h2;
  char tmo[96], auth[1024];
  snprintf(tmo, sizeof tmo, "X-Prometheus-Scrape-Timeout-Seconds: %g", (double)t->timeout_ms / 1000.0);
  h = curl_slist_append(h, ACCEPT);
  if (h && (h2 = curl_slist_append(h, tmo))) h = h2;
  if (h && j->auth_credentials) {
    snprintf(auth, sizeof auth, "Authorization: %s %s", j->auth_type ? j->auth_type : "Bearer",
             j->auth_credentials);
    if ((h2 = curl_slist_append(h, auth))) h = h2;
  }
  if (!h) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  /* tls_config.server_name: ask for (and verify) that name while connecting to the
   * target's address, as Go's tls.Config.ServerName does. */
  char url_buf[2048], connect_to[600];
  struct curl_slist *ct = NULL;
  const char *url = t->url;
  if (j->server_name && strncmp(t->url, "https://", 8) == 0) {
    const char *addr = t->url + 8;
    size_t alen = strcspn(addr, "/?#");
    const char *colon = NULL;
    for (const char *p = addr; p < addr + alen; p++)
      if (*p == ':') colon = p;
    if (colon && memchr(colon, ']', (size_t)(addr + alen - colon))) colon = NULL; /* [v6] without port */
    int hlen = colon ? (int)(colon - addr) : (int)alen;
    const char *port = colon ? colon + 1 : "443";
    int plen = colon ? (int)(addr + alen - colon - 1) : 3;
    snprintf(url_buf, sizeof url_buf, "https://%s:%.*s%s", j->server_name, plen, port, addr + alen);
    snprintf(connect_to, sizeof connect_to, "%s:%.*s:%.*s:%.*s", j->server_name, plen, port, hlen, addr, plen,
             port);
    ct = curl_slist_append(NULL, connect_to);
    if (ct) url = url_buf;
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  if (ct) curl_easy_setopt(c, CURLOPT_CONNECT_TO, ct);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "metricsd/" METRICSD_VERSION);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)t->timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
  if (j->basic_user) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, j->basic_user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, j->basic_pass ? j->basic_pass : "");
  }
  if (j->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, j->ca_file);
  if (j->cert_file) curl_easy_setopt(c, CURLOPT_SSLCERT, j->cert_file);
  if (j->key_file) curl_easy_setopt(c, CURLOPT_SSLKEY, j->key_file);
  if (j->insecure_skip_verify) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  CURLcode cc = curl_easy_perform(c);
  int rc = 0;
  if (cc != CURLE_OK) {
    if (w->body_over)
      rc = md_error(err, errlen, MD_ELIMIT, "body size limit exceeded (%llu bytes)",
                    (unsigned long long)j->body_size_limit);
    else if (w->body.oom)
      rc = md_error(err, errlen, MD_ENOMEM, "out of memory reading the body");
    else if (cc == CURLE_OPERATION_TIMEDOUT)
      rc = md_error(err, errlen, MD_ECANCELED, "context deadline exceeded (timeout %gs)",
                    (double)t->timeout_ms / 1000.0);
    else
      rc = md_error(err, errlen, MD_EIO, "%s", curl_easy_strerror(cc));
  } else {
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
      rc = md_error(err, errlen, MD_EIO, "server returned HTTP status %ld", status);
    } else {
      char *ct = NULL;
      curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
      *openmetrics = ct && strncmp(ct, "application/openmetrics-text", 28) == 0;
    }
  }
  curl_slist_free_all(h);
  curl_slist_free_all(ct);
  return rc;
}

/* ---- building the batch --------------------------------------------------------------- */

static int cmp_ref(const void *a, const void *b) {
  const scrape_series_ref_t *x = a, *y = b;
  return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static int push_ref(scrape_refs_t *r, uint64_t h, size_t idx) {
  if (r->n == r->cap) {
    size_t nc = r->cap ? r->cap * 2 : 256;
    scrape_series_ref_t *n = realloc(r->v, nc * sizeof *n);
    if (!n) return MD_ENOMEM;
    r->v = n;
    r->cap = nc;
  }
  r->v[r->n++] = (scrape_series_ref_t){h, (uint32_t)idx};
  return 0;
}

/* Attaches target labels to ls (the exposed series). */
static int attach_target_labels(scrape_labels_t *ls, const scrape_target_t *t, bool honor) {
  char name[300];
  for (size_t i = 0; i < t->nlabels; i++) {
    const char *n = t->labels[i].name;
    const char *have = scrape_labels_get(ls, n);
    if (have) {
      if (honor) continue;
      /* exported_<name>, prefixed again while that is taken too. */
      size_t pre = 0;
      do {
        pre++;
        size_t off = 0;
        for (size_t k = 0; k < pre && off + 9 < sizeof name; k++)
          off += (size_t)snprintf(name + off, sizeof name - off, "exported_");
        snprintf(name + off, sizeof name - off, "%s", n);
      } while (scrape_labels_get(ls, name) && pre < 8);
      int rc = scrape_labels_set(ls, name, have);
      if (rc) return rc;
    }
    int rc = scrape_labels_set_ref(ls, n, t->labels[i].value);
    if (rc) return rc;
  }
  return 0;
}

static int check_label_limits(const scrape_job_t *j, const tsdb_label_t *l, size_t n, char *err,
                              size_t errlen) {
  if (j->label_limit && n > j->label_limit)
    return md_error(err, errlen, MD_ELIMIT, "label_limit exceeded (metric has %zu labels, limit %llu)", n,
                    (unsigned long long)j->label_limit);
  for (size_t i = 0; i < n; i++) {
    if (j->label_name_length_limit && strlen(l[i].name) > j->label_name_length_limit)
      return md_error(err, errlen, MD_ELIMIT, "label_name_length_limit exceeded (label %s)", l[i].name);
    if (j->label_value_length_limit && strlen(l[i].value) > j->label_value_length_limit)
      return md_error(err, errlen, MD_ELIMIT, "label_value_length_limit exceeded (label %s)", l[i].name);
  }
  return 0;
}

/* Parses body into w->parsed and turns it into the final series in out, recording the
 * staleness-tracked ones in refs. Returns 0 or a scrape-failing error in err. */
static int build(scrape_worker_t *w, const scrape_target_t *t, const scrape_job_t *j, const char *body,
                 size_t len, bool om, int64_t ts, tsdb_batch_t *out, scrape_refs_t *refs, uint64_t *scraped,
                 uint64_t *post, char *err, size_t errlen) {
  tsdb_batch_reset(w->parsed);
  ingest_opts_t o = {.default_ts = NO_TS};
  o.openmetrics = om || ingest_text_is_openmetrics(body, len);
  ingest_result_t ir;
  memset(&ir, 0, sizeof ir);
  int rc = ingest_parse_prometheus(body, len, &o, w->parsed, &ir);
  if (rc == MD_ENOMEM) return md_error(err, errlen, rc, "out of memory parsing the exposition");
  if (rc) {
    sb_t m = {0};
    ingest_result_message(&ir, "line", &m);
    md_error(err, errlen, rc, "%s", m.buf && m.len ? m.buf : "cannot parse the exposition");
    sb_free(&m);
    return rc;
  }
  if (scraped) *scraped = tsdb_batch_sample_count(w->parsed);
  size_t ns = tsdb_batch_series_count(w->parsed);
  uint64_t samples = 0;
  for (size_t i = 0; i < ns; i++) {
    const tsdb_label_t *pl;
    const tsdb_sample_t *ps;
    size_t npl, nps;
    tsdb_batch_get(w->parsed, i, &pl, &npl, &ps, &nps);
    rc = scrape_labels_assign_ref(w->ls, pl, npl);
    if (!rc) rc = attach_target_labels(w->ls, t, j->honor_labels);
    if (rc) return md_error(err, errlen, MD_ENOMEM, "out of memory");
    if (scrape_relabel_count(j->metric_relabel)) {
      rc = scrape_relabel_apply(j->metric_relabel, w->ls);
      if (rc < 0) return md_error(err, errlen, MD_ENOMEM, "out of memory");
      if (rc == 0) continue;
    }
    size_t nl;
    const tsdb_label_t *l = scrape_labels_items(w->ls, &nl);
    if (!scrape_labels_get(w->ls, "__name__")) continue; /* relabeled away its name */
    if ((rc = check_label_limits(j, l, nl, err, errlen))) return rc;
    samples += nps;
    if (j->sample_limit && samples > j->sample_limit)
      return md_error(err, errlen, MD_ELIMIT, "sample_limit exceeded (limit %llu)",
                      (unsigned long long)j->sample_limit);
    rc = tsdb_batch_series(out, l, nl);
    if (rc == MD_ENOMEM) return md_error(err, errlen, rc, "out of memory");
    if (rc) continue;
    bool tracked = false;
    for (size_t k = 0; k < nps; k++) {
      int64_t sts = ps[k].ts;
      if (sts == NO_TS || !j->honor_timestamps) {
        sts = ts;
        tracked = true;
      }
      if (tsdb_batch_sample(out, sts, ps[k].v)) return md_error(err, errlen, MD_ENOMEM, "out of memory");
    }
    if (tracked && push_ref(refs, scrape_labels_hash(l, nl), tsdb_batch_series_count(out) - 1))
      return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  if (post) *post = samples;
  return 0;
}

static int add_report(tsdb_batch_t *b, const scrape_target_t *t, const char *name, int64_t ts, double v) {
  tsdb_label_t l[64];
  size_t n = 0;
  l[n++] = (tsdb_label_t){"__name__", name};
  for (size_t i = 0; i < t->nlabels && n < 64; i++)
    l[n++] = t->labels[i];
  int rc = tsdb_batch_series(b, l, n);
  if (rc) return rc;
  return tsdb_batch_sample(b, ts, v);
}

static const char *const REPORT[] = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                     "scrape_samples_post_metric_relabeling", "scrape_series_added"};

static bool has_hash(const scrape_series_ref_t *v, size_t n, uint64_t h) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v[mid].hash == h) return true;
    if (v[mid].hash < h)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

/* Appends to b a staleness marker for every series of t's previous scrape whose hash is not
 * in cur (sorted; NULL = all), re-deriving their labels from the previous body. */
static int add_stale(scrape_worker_t *w, tsdb_batch_t *b, const scrape_target_t *t,
                     const scrape_series_ref_t *cur, size_t ncur, int64_t ts) {
  if (!t->nprev || !t->prev_job || !t->prev_body.len) return 0;
  size_t missing = 0;
  for (size_t i = 0; i < t->nprev; i++)
    missing += !has_hash(cur, ncur, t->prev_set[i]);
  if (!missing) return 0;
  tsdb_batch_reset(w->old);
  w->oldrefs.n = 0;
  char err[256];
  int rc = build(w, t, t->prev_job, t->prev_body.buf, t->prev_body.len, t->prev_om, ts, w->old, &w->oldrefs,
                 NULL, NULL, err, sizeof err);
  if (rc == MD_ENOMEM) return rc;
  if (rc) return 0; /* it parsed before; nothing sensible to do if it does not now */
  double stale = tsdb_stale_nan();
  for (size_t i = 0; i < w->oldrefs.n; i++) {
    uint64_t h = w->oldrefs.v[i].hash;
    if (has_hash(cur, ncur, h)) continue;
    const tsdb_label_t *l;
    const tsdb_sample_t *s;
    size_t nl, ns;
    tsdb_batch_get(w->old, w->oldrefs.v[i].index, &l, &nl, &s, &ns);
    rc = tsdb_batch_series(b, l, nl);
    if (rc == MD_ENOMEM) return rc;
    if (rc == 0 && (rc = tsdb_batch_sample(b, ts, stale))) return rc;
  }
  return 0;
}

void scrape_target_run(scrape_worker_t *w, scrape_target_t *t, scrape_job_t *j, scrape_sink_fn sink,
                       void *ctx, scrape_result_t *res) {
  memset(res, 0, sizeof *res);
  int64_t ts = md_now_ms();
  int64_t t0 = md_mono_ns();
  res->ts = ts;
  tsdb_batch_reset(w->out);
  w->cur.n = 0;
  bool om = false;
  int rc = fetch(w, t, j, &om, res->error, sizeof res->error);
  if (rc == 0)
    rc = build(w, t, j, w->body.buf ? w->body.buf : "", w->body.len, om, ts, w->out, &w->cur,
               &res->samples_scraped, &res->samples_post_relabel, res->error, sizeof res->error);
  if (rc) {
    /* A failed scrape stores nothing of what was read; every previous series goes stale. */
    tsdb_batch_reset(w->out);
    w->cur.n = 0;
    res->samples_scraped = res->samples_post_relabel = 0;
  }
  if (w->cur.n > 1) qsort(w->cur.v, w->cur.n, sizeof *w->cur.v, cmp_ref);
  /* New series: in cur, not in prev (both sorted). */
  size_t k = 0;
  for (size_t i = 0; i < w->cur.n; i++) {
    while (k < t->nprev && t->prev_set[k] < w->cur.v[i].hash)
      k++;
    if (!(k < t->nprev && t->prev_set[k] == w->cur.v[i].hash)) res->series_added++;
  }
  int brc = add_stale(w, w->out, t, w->cur.v, w->cur.n, ts);
  res->up = rc == 0;
  res->duration_s = (double)(md_mono_ns() - t0) / 1e9;
  double vals[5] = {res->up ? 1 : 0, res->duration_s, (double)res->samples_scraped,
                    (double)res->samples_post_relabel, (double)res->series_added};
  for (int i = 0; i < 5 && brc == 0; i++)
    brc = add_report(w->out, t, REPORT[i], ts, vals[i]);
  if (brc == MD_ENOMEM && res->up) {
    res->up = false;
    snprintf(res->error, sizeof res->error, "out of memory");
  }
  if (tsdb_batch_series_count(w->out)) {
    int src = sink(ctx, w->out);
    if (src && res->up) snprintf(res->error, sizeof res->error, "storing the samples failed (%d)", src);
  }
  t->reported = true;
  /* Remember this scrape for the next one's staleness: hashes, and the body by swap. */
  clear_prev(t);
  if (!res->up || w->cur.n == 0) return;
  if (t->capprev < w->cur.n) {
    uint64_t *n = realloc(t->prev_set, w->cur.n * sizeof *n);
    if (!n) return; /* no staleness tracking for this round: nothing is lost */
    t->prev_set = n;
    t->capprev = w->cur.n;
  }
  for (size_t i = 0; i < w->cur.n; i++)
    t->prev_set[i] = w->cur.v[i].hash;
  t->nprev = w->cur.n;
  sb_t tmp = t->prev_body;
  t->prev_body = w->body;
  w->body = tmp;
  t->prev_om = om;
  t->prev_job = j;
  scrape_job_ref(j);
}

void scrape_target_stale(scrape_target_t *t, scrape_sink_fn sink, void *ctx, int64_t ts) {
  if (!t->reported) return;
  scrape_worker_t w;
  static const atomic_bool never = false;
  if (scrape_worker_init(&w, &never) != 0) return;
  int rc = add_stale(&w, w.out, t, NULL, 0, ts);
  double stale = tsdb_stale_nan();
  for (int i = 0; i < 5 && rc == 0; i++)
    rc = add_report(w.out, t, REPORT[i], ts, stale);
  if (rc == 0 && tsdb_batch_series_count(w.out)) (void)sink(ctx, w.out);
  scrape_worker_destroy(&w);
}
