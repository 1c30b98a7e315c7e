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
 * Prometheus. A worker (scrape_worker_t) owns a curl handle (connections are reused across
 * scrapes) and scratch batches; the target's previous batch is swapped with the worker's,
 * so the steady state allocates nothing per scrape.
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
  w->curl = curl_easy_init();
  w->parsed = tsdb_batch_new();
  w->out = tsdb_batch_new();
  w->ls = scrape_labels_new();
  if (!w->curl || !w->parsed || !w->out || !w->ls) {
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
  scrape_labels_free(w->ls);
  free(w->cur);
  memset(w, 0, sizeof *w);
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
  tsdb_batch_free(t->prev);
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
static int fetch(scrape_worker_t *w, const scrape_target_t *t, const scrape_job_t *j, bool *openmetrics, char *err,
                 size_t errlen) {
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
    snprintf(auth, sizeof auth, "Authorization: %s %s", j->auth_type ? j->auth_type : "Bearer", j->auth_credentials);
    if ((h2 = curl_slist_append(h, auth))) h = h2;
  }
  if (!h) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  curl_easy_setopt(c, CURLOPT_URL, t->url);
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
      rc = md_error(err, errlen, MD_ELIMIT, "body size limit exceeded (%llu bytes)", (unsigned long long)j->body_size_limit);
    else if (w->body.oom)
      rc = md_error(err, errlen, MD_ENOMEM, "out of memory reading the body");
    else if (cc == CURLE_OPERATION_TIMEDOUT)
      rc = md_error(err, errlen, MD_ECANCELED, "context deadline exceeded (timeout %gs)", (double)t->timeout_ms / 1000.0);
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
  return rc;
}

/* ---- building the batch --------------------------------------------------------------- */

static int cmp_ref(const void *a, const void *b) {
  const scrape_series_ref_t *x = a, *y = b;
  return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static int push_ref(scrape_worker_t *w, uint64_t h, size_t idx) {
  if (w->ncur == w->capcur) {
    size_t nc = w->capcur ? w->capcur * 2 : 256;
    scrape_series_ref_t *n = realloc(w->cur, nc * sizeof *n);
    if (!n) return MD_ENOMEM;
    w->cur = n;
    w->capcur = nc;
  }
  w->cur[w->ncur++] = (scrape_series_ref_t){h, (uint32_t)idx};
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
        for (size_t k = 0; k < pre && off + 9 < sizeof name; k++) off += (size_t)snprintf(name + off, sizeof name - off, "exported_");
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

static int check_label_limits(const scrape_job_t *j, const tsdb_label_t *l, size_t n, char *err, size_t errlen) {
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

/* Turns the parsed batch into w->out. Returns 0 or a scrape-failing error in err. */
static int build(scrape_worker_t *w, const scrape_target_t *t, const scrape_job_t *j, int64_t ts, uint64_t *post,
                 char *err, size_t errlen) {
  size_t ns = tsdb_batch_series_count(w->parsed);
  uint64_t samples = 0;
  for (size_t i = 0; i < ns; i++) {
    const tsdb_label_t *pl;
    const tsdb_sample_t *ps;
    size_t npl, nps;
    tsdb_batch_get(w->parsed, i, &pl, &npl, &ps, &nps);
    int rc = scrape_labels_assign_ref(w->ls, pl, npl);
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
      return md_error(err, errlen, MD_ELIMIT, "sample_limit exceeded (limit %llu)", (unsigned long long)j->sample_limit);
    rc = tsdb_batch_series(w->out, l, nl);
    if (rc == MD_ENOMEM) return md_error(err, errlen, rc, "out of memory");
    if (rc) continue;
    bool tracked = false;
    for (size_t k = 0; k < nps; k++) {
      int64_t sts = ps[k].ts;
      if (sts == NO_TS || !j->honor_timestamps) {
        sts = ts;
        tracked = true;
      }
      if (tsdb_batch_sample(w->out, sts, ps[k].v)) return md_error(err, errlen, MD_ENOMEM, "out of memory");
    }
    if (tracked && push_ref(w, scrape_labels_hash(l, nl), tsdb_batch_series_count(w->out) - 1))
      return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  *post = samples;
  return 0;
}

static int add_report(tsdb_batch_t *b, const scrape_target_t *t, const char *name, int64_t ts, double v) {
  tsdb_label_t l[64];
  size_t n = 0;
  l[n++] = (tsdb_label_t){"__name__", name};
  for (size_t i = 0; i < t->nlabels && n < 64; i++) l[n++] = t->labels[i];
  int rc = tsdb_batch_series(b, l, n);
  if (rc) return rc;
  return tsdb_batch_sample(b, ts, v);
}

static const char *const REPORT[] = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                     "scrape_samples_post_metric_relabeling", "scrape_series_added"};

/* Appends stale markers to b for prev-set series of t missing from cur (sorted). */
static int add_stale(tsdb_batch_t *b, const scrape_target_t *t, const scrape_series_ref_t *cur, size_t ncur,
                     int64_t ts) {
  size_t i = 0, k = 0;
  double stale = tsdb_stale_nan();
  while (i < t->nprev) {
    uint64_t h = t->prev_set[i].hash;
    while (k < ncur && cur[k].hash < h) k++;
    if (k < ncur && cur[k].hash == h) {
      i++;
      continue;
    }
    const tsdb_label_t *l;
    const tsdb_sample_t *s;
    size_t nl, ns;
    tsdb_batch_get(t->prev, t->prev_set[i].index, &l, &nl, &s, &ns);
    int rc = tsdb_batch_series(b, l, nl);
    if (rc == MD_ENOMEM) return rc;
    if (rc == 0 && (rc = tsdb_batch_sample(b, ts, stale))) return rc;
    i++;
  }
  return 0;
}

void scrape_target_run(scrape_worker_t *w, scrape_target_t *t, scrape_job_t *j, scrape_sink_fn sink, void *ctx,
                       scrape_result_t *res) {
  memset(res, 0, sizeof *res);
  int64_t ts = md_now_ms();
  int64_t t0 = md_mono_ns();
  res->ts = ts;
  tsdb_batch_reset(w->out);
  tsdb_batch_reset(w->parsed);
  w->ncur = 0;
  bool om = false;
  int rc = fetch(w, t, j, &om, res->error, sizeof res->error);
  if (rc == 0) {
    ingest_opts_t o = {.default_ts = NO_TS};
    o.openmetrics = om || ingest_text_is_openmetrics(w->body.buf ? w->body.buf : "", w->body.len);
    ingest_result_t ir;
    memset(&ir, 0, sizeof ir);
    rc = ingest_parse_prometheus(w->body.buf ? w->body.buf : "", w->body.len, &o, w->parsed, &ir);
    if (rc) {
      sb_t m = {0};
      ingest_result_message(&ir, "exposition", &m);
      snprintf(res->error, sizeof res->error, "%s", m.buf && m.len ? m.buf : "cannot parse the exposition");
      sb_free(&m);
      if (rc == MD_ENOMEM) snprintf(res->error, sizeof res->error, "out of memory parsing the exposition");
    } else {
      res->samples_scraped = tsdb_batch_sample_count(w->parsed);
      rc = build(w, t, j, ts, &res->samples_post_relabel, res->error, sizeof res->error);
    }
  }
  if (rc) {
    /* A failed scrape stores nothing of what was read; every previous series goes stale. */
    tsdb_batch_reset(w->out);
    w->ncur = 0;
    res->samples_scraped = res->samples_post_relabel = 0;
  }
  if (w->ncur > 1) qsort(w->cur, w->ncur, sizeof *w->cur, cmp_ref);
  /* New series: in cur, not in prev. */
  size_t k = 0;
  for (size_t i = 0; i < w->ncur; i++) {
    while (k < t->nprev && t->prev_set[k].hash < w->cur[i].hash) k++;
    if (!(k < t->nprev && t->prev_set[k].hash == w->cur[i].hash)) res->series_added++;
  }
  int brc = 0;
  if (t->prev) brc = add_stale(w->out, t, w->cur, w->ncur, ts);
  res->up = rc == 0;
  res->duration_s = (double)(md_mono_ns() - t0) / 1e9;
  double vals[5] = {res->up ? 1 : 0, res->duration_s, (double)res->samples_scraped, (double)res->samples_post_relabel,
                    (double)res->series_added};
  for (int i = 0; i < 5 && brc == 0; i++) brc = add_report(w->out, t, REPORT[i], ts, vals[i]);
  if (brc == MD_ENOMEM && res->up) {
    res->up = false;
    snprintf(res->error, sizeof res->error, "out of memory");
  }
  if (tsdb_batch_series_count(w->out)) {
    int src = sink(ctx, w->out);
    if (src && res->up) snprintf(res->error, sizeof res->error, "storing the samples failed (%d)", src);
  }
  t->reported = true;
  /* This batch becomes the target's previous one; the old one is the worker's next scratch. */
  tsdb_batch_t *tb = t->prev ? t->prev : tsdb_batch_new();
  if (!tb) return; /* keep the old prev: staleness may repeat, nothing is lost */
  t->prev = w->out;
  w->out = tb;
  scrape_series_ref_t *ts_ = t->prev_set;
  size_t cap = t->capprev;
  t->prev_set = w->cur;
  t->nprev = w->ncur;
  t->capprev = w->capcur;
  w->cur = ts_;
  w->capcur = cap;
  w->ncur = 0;
}

void scrape_target_stale(scrape_target_t *t, scrape_sink_fn sink, void *ctx, int64_t ts) {
  if (!t->reported) return;
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) return;
  int rc = t->prev ? add_stale(b, t, NULL, 0, ts) : 0;
  double stale = tsdb_stale_nan();
  for (int i = 0; i < 5 && rc == 0; i++) rc = add_report(b, t, REPORT[i], ts, stale);
  if (rc == 0 && tsdb_batch_series_count(b)) (void)sink(ctx, b);
  tsdb_batch_free(b);
}
