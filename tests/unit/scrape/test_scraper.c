/* The scrape manager end to end against an in-process HTTP server: report series, target
 * labels, honor_labels, metric relabeling, staleness, failures (parse, HTTP status, timeout,
 * body size, limits), gzip, OpenMetrics, auth, target relabeling and dropped targets, file
 * service discovery, and configuration errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mini_http.h"
#include "recorder.h"
#include "scrape/scrape.h"

static mini_http_t *srv;
static char addr[64], inst[80];

static scrape_manager_t *start(const char *config_fmt, recorder_t *rec, const char *data_dir) {
  char cfg[4096];
  snprintf(cfg, sizeof cfg, config_fmt, addr, addr, addr, addr, addr, addr, addr, addr);
  json_error_t je;
  json_t *j = json_loads(cfg, 0, &je);
  if (!j) fprintf(stderr, "bad test config: %s\n%s\n", je.text, cfg);
  assert_non_null(j);
  scrape_options_t opt;
  scrape_options_default(&opt);
  opt.workers = 4;
  opt.sd_check_ms = 100;
  opt.data_dir = data_dir;
  scrape_manager_t *m = NULL;
  char err[512] = "";
  int rc = scrape_manager_new(&opt, j, recorder_sink, rec, &m, err, sizeof err);
  if (rc) fprintf(stderr, "scrape_manager_new: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(scrape_manager_start(m, err, sizeof err), 0);
  json_decref(j);
  return m;
}

/* Waits until target pool `pool` reports `health` in the targets JSON (a worker records the
 * outcome just after the sink saw the samples). */
static bool wait_health(scrape_manager_t *m, const char *pool, const char *health, int ms) {
  for (int waited = 0; waited <= ms; waited += 20) {
    sb_t js = {0};
    scrape_targets_json(m, NULL, &js);
    json_t *doc = json_loads(js.buf, 0, NULL);
    sb_free(&js);
    bool ok = false;
    json_t *act = json_object_get(doc, "activeTargets");
    for (size_t i = 0; i < json_array_size(act) && !ok; i++) {
      json_t *t = json_array_get(act, i);
      ok = strcmp(json_string_value(json_object_get(t, "scrapePool")), pool) == 0 &&
           strcmp(json_string_value(json_object_get(t, "health")), health) == 0;
    }
    json_decref(doc);
    if (ok) return true;
    usleep(20 * 1000);
  }
  return false;
}

static void test_basic_report_and_staleness(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "# TYPE a_metric gauge\na_metric{x=\"1\"} 5\nb_total 7\n");
  scrape_manager_t *m =
      start("[{\"job_name\":\"j1\",\"scrape_interval\":\"200ms\",\"params\":{\"q\":[\"v 1\"]},"
            "\"static_configs\":[{\"targets\":[\"%s\"],\"labels\":{\"env\":\"t\"}}]}]",
            rec, NULL);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=up", "job=j1", NULL));
  double v = NAN;
  size_t st = 0;
  assert_true(recorder_find(rec, &v, NULL, "__name__=up", "job=j1", inst, "env=t", NULL) >= 1);
  assert_true(v == 1);
  assert_true(recorder_find(rec, &v, NULL, "__name__=a_metric", "x=1", "job=j1", inst, "env=t", NULL) >= 1);
  assert_true(v == 5);
  assert_true(recorder_find(rec, &v, NULL, "__name__=scrape_samples_scraped", "job=j1", NULL) >= 1);
  assert_true(v == 2);
  assert_true(
      recorder_find(rec, &v, NULL, "__name__=scrape_samples_post_metric_relabeling", "job=j1", NULL) >= 1);
  assert_true(v == 2);
  assert_true(recorder_find(rec, &v, NULL, "__name__=scrape_series_added", "job=j1", NULL) >= 1);
  assert_true(recorder_find(rec, &v, NULL, "__name__=scrape_duration_seconds", "job=j1", NULL) >= 1);
  assert_true(v > 0 && v < 5);
  /* Samples without timestamps carry the scrape time; report series the same. */
  int64_t ts1 = recorder_last_ts(rec, "__name__=a_metric", NULL),
          ts2 = recorder_last_ts(rec, "__name__=up", NULL);
  assert_true(ts1 > 0 && labs((long)(ts1 - ts2)) < 200);
  char accept[512], auth[512], query[512];
  mini_http_last(srv, accept, auth, query, sizeof accept);
  assert_non_null(strstr(accept, "application/openmetrics-text"));
  assert_non_null(strstr(accept, "text/plain;version=0.0.4"));
  assert_string_equal(query, "q=v%201");

  /* b_total disappears: a staleness marker, a_metric goes on. */
  mini_http_set_body(srv, "a_metric{x=\"1\"} 6\n");
  for (int i = 0; i < 100; i++) {
    recorder_find(rec, NULL, &st, "__name__=b_total", NULL);
    if (st) break;
    usleep(50 * 1000);
  }
  assert_int_equal(st, 1);
  assert_true(recorder_wait(rec, 1, 3000, "__name__=a_metric", NULL, NULL));

  /* A malformed exposition fails the scrape: up 0, everything stale, error reported. */
  mini_http_set_body(srv, "a_metric{x=\"1\" 6\n");
  for (int i = 0; i < 100; i++) {
    recorder_find(rec, NULL, &st, "__name__=a_metric", NULL);
    if (st) break;
    usleep(50 * 1000);
  }
  assert_int_equal(st, 1);
  assert_true(wait_health(m, "j1", "down", 3000));
  assert_true(recorder_find(rec, &v, NULL, "__name__=up", "job=j1", NULL) >= 2);
  assert_true(v == 0);
  sb_t js = {0};
  assert_int_equal(scrape_targets_json(m, NULL, &js), 0);
  json_t *doc = json_loads(js.buf, 0, NULL);
  assert_non_null(doc);
  json_t *t0 = json_array_get(json_object_get(doc, "activeTargets"), 0);
  assert_string_equal(json_string_value(json_object_get(t0, "health")), "down");
  assert_true(strlen(json_string_value(json_object_get(t0, "lastError"))) > 0);
  assert_string_equal(json_string_value(json_object_get(t0, "scrapePool")), "j1");
  assert_string_equal(json_string_value(json_object_get(t0, "scrapeInterval")), "200ms");
  assert_string_equal(json_string_value(json_object_get(json_object_get(t0, "labels"), "env")), "t");
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(t0, "discoveredLabels"), "__param_q")), "v 1");
  json_decref(doc);
  sb_free(&js);
  scrape_stats_t ss;
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 1);
  assert_true(ss.scrapes >= 3 && ss.scrape_failures >= 1);
  scrape_manager_free(m);
  recorder_free(rec);
}

static void test_honor_labels_and_metric_relabel(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "m{job=\"other\",instance=\"x\"} 1\ndrop_me 2\nkeep_ts 3 1000\n");
  scrape_manager_t *m = start(
      "[{\"job_name\":\"j2\",\"scrape_interval\":\"200ms\",\"static_configs\":[{\"targets\":[\"%s\"]}],"
      "\"metric_relabel_configs\":[{\"source_labels\":[\"__name__\"],\"regex\":\"drop_.*\",\"action\":"
      "\"drop\"}]},"
      "{\"job_name\":\"j3\",\"scrape_interval\":\"200ms\",\"honor_labels\":true,\"honor_timestamps\":false,"
      "\"static_configs\":[{\"targets\":[\"%s\"]}]}]",
      rec, NULL);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=up", "job=j2", NULL));
  assert_true(recorder_wait(rec, 1, 5000, "__name__=up", "job=j3", NULL));
  double v;
  /* honor_labels false: the target's job/instance win, the exposed ones are renamed. */
  assert_true(recorder_find(rec, &v, NULL, "__name__=m", "job=j2", "exported_job=other",
                            "exported_instance=x", inst, NULL) >= 1);
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=drop_me", "job=j2", NULL), 0);
  assert_true(
      recorder_find(rec, &v, NULL, "__name__=scrape_samples_post_metric_relabeling", "job=j2", NULL) >= 1);
  assert_true(v == 2);
  assert_true(recorder_find(rec, &v, NULL, "__name__=scrape_samples_scraped", "job=j2", NULL) >= 1);
  assert_true(v == 3);
  /* j2 honours the exposed timestamp. */
  assert_int_equal(recorder_last_ts(rec, "__name__=keep_ts", "job=j2"), 1000);
  /* honor_labels true: the exposed job/instance stay; honor_timestamps false: scrape time. */
  assert_true(recorder_find(rec, NULL, NULL, "__name__=m", "job=other", "instance=x", NULL) >= 1);
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=m", "exported_job=other", "job=j3", NULL), 0);
  assert_true(recorder_last_ts(rec, "__name__=keep_ts", "job=j3") > 1000000000000LL);
  scrape_manager_free(m);
  recorder_free(rec);
}

static void test_formats_and_auth(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "# TYPE c counter\nc_total 9\n# EOF\n");
  scrape_manager_t *m = start("[{\"job_name\":\"gz\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
                              "gzip\",\"static_configs\":[{\"targets\":[\"%s\"]}]},"
                              "{\"job_name\":\"om\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
                              "om\",\"static_configs\":[{\"targets\":[\"%s\"]}]},"
                              "{\"job_name\":\"bearer\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
                              "auth\",\"authorization\":{\"credentials\":\"sekret\"},"
                              "\"static_configs\":[{\"targets\":[\"%s\"]}]},"
                              "{\"job_name\":\"basic\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
                              "auth\",\"basic_auth\":{\"username\":\"u\",\"password\":\"p\"},"
                              "\"static_configs\":[{\"targets\":[\"%s\"]}]},"
                              "{\"job_name\":\"noauth\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
                              "auth\",\"static_configs\":[{\"targets\":[\"%s\"]}]}]",
                              rec, NULL);
  const char *jobs[] = {"job=gz", "job=om", "job=bearer", "job=basic"};
  double v;
  for (int i = 0; i < 4; i++) {
    assert_true(recorder_wait(rec, 1, 5000, "__name__=up", jobs[i], NULL));
    assert_true(recorder_find(rec, &v, NULL, "__name__=up", jobs[i], NULL) >= 1);
    if (v != 1) fprintf(stderr, "%s: up %g\n", jobs[i], v);
    assert_true(v == 1);
    assert_true(recorder_find(rec, &v, NULL, "__name__=c_total", jobs[i], NULL) >= 1);
    assert_true(v == 9);
  }
  assert_true(recorder_wait(rec, 1, 5000, "__name__=up", "job=noauth", NULL));
  assert_true(recorder_find(rec, &v, NULL, "__name__=up", "job=noauth", NULL) >= 1);
  assert_true(v == 0);
  sb_t js = {0};
  scrape_targets_json(m, "active", &js);
  assert_non_null(strstr(js.buf, "HTTP status 401"));
  sb_free(&js);
  scrape_manager_free(m);
  recorder_free(rec);
}

/* basic_auth.password_file and authorization.credentials_file: read at configuration time,
 * trailing newline dropped (files written by `echo`). */
static void test_secret_files(void **state) {
  char dir[] = "/tmp/md-scrape-secret-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char pw[128], tok[128];
  snprintf(pw, sizeof pw, "%s/password", dir);
  snprintf(tok, sizeof tok, "%s/token", dir);
  assert_int_equal(md_write_file_atomic(pw, "p\n", 2), 0);
  assert_int_equal(md_write_file_atomic(tok, "sekret\r\n", 8), 0);
  char fmt[2048];
  snprintf(fmt, sizeof fmt,
           "[{\"job_name\":\"pwfile\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/auth\","
           "\"basic_auth\":{\"username\":\"u\",\"password_file\":\"%s\"},"
           "\"static_configs\":[{\"targets\":[\"%%s\"]}]},"
           "{\"job_name\":\"tokfile\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/auth\","
           "\"authorization\":{\"credentials_file\":\"%s\"},\"static_configs\":[{\"targets\":[\"%%s\"]}]}]",
           pw, tok);
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "sf_metric 1\n");
  scrape_manager_t *m = start(fmt, rec, NULL);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sf_metric", "job=pwfile", NULL));
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sf_metric", "job=tokfile", NULL));
  scrape_manager_free(m);
  recorder_free(rec);
  /* A missing file is a configuration error naming it. */
  char bad[512], err[512] = "";
  snprintf(bad, sizeof bad,
           "[{\"job_name\":\"x\",\"basic_auth\":{\"username\":\"u\",\"password_file\":\"%s/none\"}}]", dir);
  json_t *j = json_loads(bad, 0, NULL);
  assert_int_equal(scrape_config_check(j, NULL, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "/none"));
  json_decref(j);
  md_rm_rf(dir);
}

static void test_failures_and_limits(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "a 1\nb 2\nc{x=\"1\",y=\"2\",long_label_name=\"a-rather-long-value\"} 3\n");
  scrape_manager_t *m =
      start("[{\"job_name\":\"slow\",\"scrape_interval\":\"1s\",\"scrape_timeout\":\"300ms\",\"metrics_"
            "path\":\"/slow\",\"static_configs\":[{\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"fail\",\"scrape_interval\":\"200ms\",\"metrics_path\":\"/"
            "fail\",\"static_configs\":[{\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"huge\",\"scrape_interval\":\"1s\",\"metrics_path\":\"/"
            "huge\",\"body_size_limit\":\"1MB\",\"static_configs\":[{\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"limit\",\"scrape_interval\":\"200ms\",\"sample_limit\":2,\"static_configs\":[{"
            "\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"labels\",\"scrape_interval\":\"200ms\",\"label_limit\":4,\"static_configs\":[{"
            "\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"namelen\",\"scrape_interval\":\"200ms\",\"label_name_length_limit\":12,"
            "\"static_configs\":[{\"targets\":[\"%s\"]}]},"
            "{\"job_name\":\"valuelen\",\"scrape_interval\":\"200ms\",\"label_value_length_limit\":18,"
            "\"static_configs\":[{\"targets\":[\"%s\"]}]},"
            /* Every limit set, none reached: the scrape succeeds. */
            "{\"job_name\":\"within\",\"scrape_interval\":\"200ms\",\"sample_limit\":3,\"label_limit\":6,"
            "\"label_name_length_limit\":15,\"label_value_length_limit\":19,"
            "\"static_configs\":[{\"targets\":[\"%s\"]}]}]",
            rec, NULL);
  const char *jobs[] = {"job=slow",   "job=fail",    "job=huge",    "job=limit",
                        "job=labels", "job=namelen", "job=valuelen"};
  const char *errs[] = {"deadline",
                        "HTTP status 500",
                        "body size limit",
                        "sample_limit",
                        "label_limit",
                        "label_name_length_limit exceeded (label long_label_name)",
                        "label_value_length_limit exceeded (label long_label_name)"};
  assert_true(recorder_wait(rec, 1, 6000, "__name__=c", "job=within", "long_label_name=a-rather-long-value"));
  assert_true(wait_health(m, "within", "up", 3000));
  for (int i = 0; i < 7; i++) {
    assert_true(recorder_wait(rec, 1, 6000, "__name__=up", jobs[i], NULL));
    assert_true(wait_health(m, jobs[i] + 4, "down", 3000));
  }
  sb_t js = {0};
  scrape_targets_json(m, NULL, &js);
  json_t *doc = json_loads(js.buf, 0, NULL);
  json_t *act = json_object_get(doc, "activeTargets");
  assert_int_equal(json_array_size(act), 8);
  for (int i = 0; i < 7; i++) {
    double v;
    assert_true(recorder_find(rec, &v, NULL, "__name__=up", jobs[i], NULL) >= 1);
    assert_true(v == 0);
    bool found = false;
    for (size_t k = 0; k < json_array_size(act); k++) {
      json_t *t = json_array_get(act, k);
      if (strcmp(json_string_value(json_object_get(t, "scrapePool")), jobs[i] + 4) != 0) continue;
      const char *e = json_string_value(json_object_get(t, "lastError"));
      if (!strstr(e, errs[i])) fprintf(stderr, "%s: lastError \"%s\", want \"%s\"\n", jobs[i], e, errs[i]);
      found = strstr(e, errs[i]) != NULL;
    }
    assert_true(found);
  }
  /* Nothing of a failed scrape is stored. */
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=a", "job=limit", NULL), 0);
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=huge_metric", NULL), 0);
  json_decref(doc);
  sb_free(&js);
  scrape_manager_free(m);
  recorder_free(rec);
}

static void test_target_relabel_and_dropped(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "x 1\n");
  scrape_manager_t *m = start(
      "[{\"job_name\":\"rl\",\"scrape_interval\":\"200ms\",\"static_configs\":["
      "{\"targets\":[\"%s\"],\"labels\":{\"keep\":\"yes\",\"__meta_zone\":\"z1\","
      "\"__scrape_interval__\":\"9102801346544h\"}},"
      "{\"targets\":[\"127.0.0.1:1\"],\"labels\":{\"keep\":\"no\"}}],"
      "\"relabel_configs\":[{\"source_labels\":[\"keep\"],\"regex\":\"yes\",\"action\":\"keep\"},"
      "{\"regex\":\"__meta_(.*)\",\"action\":\"labelmap\"},"
      "{\"source_labels\":[\"__address__\"],\"target_label\":\"instance\",\"replacement\":\"renamed\"}]}]",
      rec, NULL);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=x", "instance=renamed", "zone=z1"));
  sb_t js = {0};
  scrape_targets_json(m, NULL, &js);
  json_t *doc = json_loads(js.buf, 0, NULL);
  assert_int_equal(json_array_size(json_object_get(doc, "activeTargets")), 1);
  /* An interval label that would overflow is ignored: the job's interval applies. */
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(doc, "activeTargets"), 0), "scrapeInterval")),
                      "200ms");
  json_t *dropped = json_object_get(doc, "droppedTargets");
  assert_int_equal(json_array_size(dropped), 1);
  assert_string_equal(json_string_value(json_object_get(
                          json_object_get(json_array_get(dropped, 0), "discoveredLabels"), "__address__")),
                      "127.0.0.1:1");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "droppedTargetCounts"), "rl")), 1);
  json_decref(doc);
  sb_free(&js);
  js = (sb_t){0};
  scrape_targets_json(m, "dropped", &js);
  assert_non_null(strstr(js.buf, "\"activeTargets\":[]"));
  sb_free(&js);
  scrape_manager_free(m);
  recorder_free(rec);
}

static void test_file_sd_and_reload(void **state) {
  char dir[] = "/tmp/md-scrape-sd-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256], jpath[256], cfg[1024];
  snprintf(path, sizeof path, "%s/targets.yml", dir);
  snprintf(jpath, sizeof jpath, "%s/more.json", dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "- targets: ['%s']\n  labels:\n    group: one\n", addr);
  fclose(f);
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "sd_metric 1\n");
  snprintf(cfg, sizeof cfg,
           "[{\"job_name\":\"sd\",\"scrape_interval\":\"200ms\",\"file_sd_configs\":[{\"files\":[\"%s/"
           "*.yml\",\"%s/*.json\"]}]}]",
           dir, dir);
  scrape_manager_t *m = start(cfg, rec, NULL);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sd_metric", "group=one", NULL));
  /* A JSON file appears: a second target group (same address, other labels). */
  f = fopen(jpath, "w");
  fprintf(f, "[{\"targets\":[\"%s\"],\"labels\":{\"group\":\"two\"}}]", addr);
  fclose(f);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sd_metric", "group=two", NULL));
  scrape_stats_t ss;
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 2);
  /* A broken file keeps the previous targets. */
  f = fopen(jpath, "w");
  fprintf(f, "[{\"targets\": ");
  fclose(f);
  usleep(400 * 1000);
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 2);
  /* The file is fixed with other content: re-read, the old group's series go stale. */
  f = fopen(jpath, "w");
  fprintf(f, "[{\"targets\":[\"%s\"],\"labels\":{\"group\":\"three\"}}]", addr);
  fclose(f);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sd_metric", "group=three", NULL));
  size_t st2 = 0;
  for (int i = 0; i < 100 && !st2; i++) {
    recorder_find(rec, NULL, &st2, "__name__=sd_metric", "group=two", NULL);
    if (!st2) usleep(50 * 1000);
  }
  assert_int_equal(st2, 1);
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 2);
  /* The YAML file goes away: its target is removed and its series go stale. */
  unlink(path);
  size_t st = 0;
  for (int i = 0; i < 100 && !st; i++) {
    recorder_find(rec, NULL, &st, "__name__=up", "group=one", NULL);
    usleep(50 * 1000);
  }
  assert_int_equal(st, 1);
  recorder_find(rec, NULL, &st, "__name__=sd_metric", "group=one", NULL);
  assert_int_equal(st, 1);
  /* Reload with another job: the sd targets go, the new one comes. */
  char err[256];
  char cfg2[512];
  snprintf(
      cfg2, sizeof cfg2,
      "[{\"job_name\":\"new\",\"scrape_interval\":\"200ms\",\"static_configs\":[{\"targets\":[\"%s\"]}]}]",
      addr);
  json_t *j2 = json_loads(cfg2, 0, NULL);
  assert_int_equal(scrape_manager_apply(m, j2, err, sizeof err), 0);
  json_decref(j2);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=sd_metric", "job=new", NULL));
  st = 0;
  for (int waited = 0; waited < 5000 && !st; waited += 50) {
    recorder_find(rec, NULL, &st, "__name__=up", "group=three", NULL);
    if (!st) usleep(50 * 1000);
  }
  assert_int_equal(st, 1);
  /* A bad reload is refused and changes nothing. */
  j2 = json_loads("[{\"job_name\":\"x\",\"scrape_interval\":\"soon\"}]", 0, NULL);
  assert_int_equal(scrape_manager_apply(m, j2, err, sizeof err), MD_EINVAL);
  json_decref(j2);
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 1);
  scrape_manager_free(m);
  recorder_free(rec);
  unlink(jpath);
  rmdir(dir);
}

/* 20 targets on a 1 s interval scrape at offsets spread over the second (hash jitter),
 * each at the same offset every time. */
static void test_jitter_spreads_targets(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "j 1\n");
  char cfg[4096];
  size_t n = (size_t)snprintf(cfg, sizeof cfg,
                              "[{\"job_name\":\"jit\",\"scrape_interval\":\"1s\",\"static_configs\":[");
  for (int i = 0; i < 20; i++)
    n += (size_t)snprintf(cfg + n, sizeof cfg - n, "%s{\"targets\":[\"%%s\"],\"labels\":{\"t\":\"%d\"}}",
                          i ? "," : "", i);
  snprintf(cfg + n, sizeof cfg - n, "]}]");
  /* start() substitutes the address into the first five %s only: expand all here. */
  char full[8192];
  size_t o = 0;
  for (const char *p = cfg; *p && o + 64 < sizeof full; p++) {
    if (p[0] == '%' && p[1] == 's') {
      o += (size_t)snprintf(full + o, sizeof full - o, "%s", addr);
      p++;
    } else {
      full[o++] = *p;
    }
  }
  full[o] = 0;
  json_t *j = json_loads(full, 0, NULL);
  assert_non_null(j);
  scrape_options_t opt;
  scrape_options_default(&opt);
  opt.workers = 4;
  scrape_manager_t *m = NULL;
  char err[256];
  assert_int_equal(scrape_manager_new(&opt, j, recorder_sink, rec, &m, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(scrape_manager_start(m, err, sizeof err), 0);
  assert_true(recorder_wait(rec, 60, 6000, "__name__=up", "job=jit", NULL));
  scrape_manager_free(m);
  int offsets[20][2];
  int distinct = 0;
  bool buckets[10] = {false};
  for (int i = 0; i < 20; i++) {
    char tl[16];
    snprintf(tl, sizeof tl, "t=%d", i);
    int64_t ts = recorder_last_ts(rec, "__name__=up", tl);
    assert_true(ts > 0);
    offsets[i][0] = (int)(ts % 1000);
    offsets[i][1] = i;
    if (!buckets[offsets[i][0] / 100]) distinct++;
    buckets[offsets[i][0] / 100] = true;
  }
  /* 20 targets over 10 slices of 100 ms: all in one or two would mean no spreading. */
  if (distinct < 5) {
    for (int i = 0; i < 20; i++)
      fprintf(stderr, "target %d at +%d ms\n", offsets[i][1], offsets[i][0]);
  }
  assert_true(distinct >= 5);
  recorder_free(rec);
}

/* 64 slow targets (1.5 s each) with opt.workers = 1: the queue backs up, the pool grows,
 * and all are scraped within seconds instead of a minute and a half. */
static void test_workers_grow_with_targets(void **state) {
  recorder_t *rec = recorder_new();
  mini_http_set_body(srv, "w 1\n");
  sb_t cfg = {0};
  sb_puts(&cfg, "[{\"job_name\":\"grow\",\"scrape_interval\":\"4s\",\"scrape_timeout\":\"3s\",\"metrics_"
                "path\":\"/slow\",\"static_configs\":[");
  for (int i = 0; i < 64; i++)
    sb_printf(&cfg, "%s{\"targets\":[\"%s\"],\"labels\":{\"t\":\"%d\"}}", i ? "," : "", addr, i);
  sb_puts(&cfg, "]}]");
  json_t *j = json_loads(cfg.buf, 0, NULL);
  sb_free(&cfg);
  assert_non_null(j);
  scrape_options_t opt;
  scrape_options_default(&opt);
  opt.workers = 1;
  scrape_manager_t *m = NULL;
  char err[256];
  assert_int_equal(scrape_manager_new(&opt, j, recorder_sink, rec, &m, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(scrape_manager_start(m, err, sizeof err), 0);
  /* Offsets spread over 4 s; one worker would need 96 s. */
  bool all = false;
  for (int waited = 0; waited < 14000 && !all; waited += 100) {
    all = true;
    for (int i = 0; i < 64 && all; i++) {
      char tl[16];
      snprintf(tl, sizeof tl, "t=%d", i);
      all = recorder_find(rec, NULL, NULL, "__name__=up", "job=grow", tl, NULL) > 0;
    }
    if (!all) usleep(100 * 1000);
  }
  scrape_stats_t ss;
  scrape_manager_stats(m, &ss);
  scrape_manager_free(m);
  if (!all) fprintf(stderr, "only %llu scrapes\n", (unsigned long long)ss.scrapes);
  assert_true(all);
  recorder_free(rec);
}

static void test_config_errors(void **state) {
  static const struct {
    const char *cfg, *msg;
  } bad[] = {
      {"{}", "must be a list"},
      {"[{\"scrape_interval\":\"1s\"}]", "job_name is required"},
      {"[{\"job_name\":\"a\",\"colour\":1}]", "unknown key \"colour\""},
      {"[{\"job_name\":\"a\",\"scrape_interval\":\"1s\",\"scrape_timeout\":\"2s\"}]",
       "greater than scrape_interval"},
      {"[{\"job_name\":\"a\"},{\"job_name\":\"a\"}]", "multiple scrape configs"},
      {"[{\"job_name\":\"a\",\"scheme\":\"ftp\"}]", "scheme"},
      {"[{\"job_name\":\"a\",\"metrics_path\":\"metrics\"}]", "metrics_path"},
      {"[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"http://x/y\"]}]}]", "not a host:port"},
      {"[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"x:1\"],\"labels\":{\"a-b\":\"1\"}}]}]",
       "invalid label"},
      {"[{\"job_name\":\"a\",\"relabel_configs\":[{\"action\":\"nope\"}]}]", "relabel_configs[0]"},
      {"[{\"job_name\":\"a\",\"basic_auth\":{\"password\":\"p\"}}]", "username"},
      {"[{\"job_name\":\"a\",\"basic_auth\":{\"username\":\"u\"},\"authorization\":{\"credentials\":\"t\"}}]",
       "at most one"},
      {"[{\"job_name\":\"a\",\"tls_config\":{\"cert_file\":\"/x\"}}]", "go together"},
      {"[{\"job_name\":\"a\",\"sample_limit\":-1}]", "sample_limit"},
      {"[{\"job_name\":\"a\",\"file_sd_configs\":[{\"refresh_interval\":\"1m\"}]}]", "files"},
      {"[{\"job_name\":\"a\",\"body_size_limit\":\"lots\"}]", "body_size_limit"},
      /* Would overflow int64 milliseconds (undefined behaviour in a naive parser). */
      {"[{\"job_name\":\"a\",\"scrape_interval\":\"9102801346544h\"}]", "scrape_interval"},
      {"[{\"job_name\":\"a\",\"scrape_timeout\":\"99999999999y\"}]", "scrape_timeout"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *j = json_loads(bad[i].cfg, 0, NULL);
    assert_non_null(j);
    char err[512] = "";
    int rc = scrape_config_check(j, NULL, err, sizeof err);
    if (rc != MD_EINVAL || !strstr(err, bad[i].msg)) {
      fprintf(stderr, "config %zu %s: rc %d err \"%s\", want \"%s\"\n", i, bad[i].cfg, rc, err, bad[i].msg);
      fail();
    }
    json_decref(j);
  }
  /* A good one, with every supported key. */
  json_t *j = json_loads(
      "[{\"job_name\":\"ok\",\"scrape_interval\":\"30s\",\"scrape_timeout\":\"5s\",\"metrics_path\":\"/m\","
      "\"scheme\":\"https\",\"params\":{\"a\":[\"1\",\"2\"]},\"honor_labels\":true,\"honor_timestamps\":"
      "false,"
      "\"authorization\":{\"type\":\"Bearer\",\"credentials\":\"t\"},\"tls_config\":{\"insecure_skip_"
      "verify\":true},"
      "\"static_configs\":[{\"targets\":[\"a:1\",\"b:2\"],\"labels\":{\"x\":\"y\",\"n\":3}}],"
      "\"file_sd_configs\":[{\"files\":[\"/nonexistent/*.yml\"],\"refresh_interval\":\"1m\"}],"
      "\"relabel_configs\":[],\"metric_relabel_configs\":[{\"regex\":\"x\",\"action\":\"labeldrop\"}],"
      "\"sample_limit\":100,\"label_limit\":30,\"label_name_length_limit\":100,\"label_value_length_limit\":"
      "1000,"
      "\"body_size_limit\":\"10MB\"}]",
      0, NULL);
  char err[512] = "";
  int rc = scrape_config_check(j, NULL, err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  assert_int_equal(rc, 0);
  json_decref(j);
}

static int setup(void **state) {
  srv = mini_http_start();
  if (!srv) return -1;
  snprintf(addr, sizeof addr, "127.0.0.1:%d", mini_http_port(srv));
  snprintf(inst, sizeof inst, "instance=%s", addr);
  return 0;
}

static int teardown(void **state) {
  mini_http_stop(srv);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_report_and_staleness),
      cmocka_unit_test(test_honor_labels_and_metric_relabel),
      cmocka_unit_test(test_formats_and_auth),
      cmocka_unit_test(test_secret_files),
      cmocka_unit_test(test_failures_and_limits),
      cmocka_unit_test(test_target_relabel_and_dropped),
      cmocka_unit_test(test_file_sd_and_reload),
      cmocka_unit_test(test_jitter_spreads_targets),
      cmocka_unit_test(test_workers_grow_with_targets),
      cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
