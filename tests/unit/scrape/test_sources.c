/* Runtime sources (seed 003 /metrics/sources): add, list with health, update, delete with
 * staleness, validation, and persistence across a restart of the manager. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "mini_http.h"
#include "recorder.h"
#include "scrape/scrape.h"

static mini_http_t *srv;
static char dir[64];

static scrape_manager_t *manager(recorder_t *rec) {
  scrape_options_t opt;
  scrape_options_default(&opt);
  opt.workers = 2;
  opt.data_dir = dir;
  scrape_manager_t *m = NULL;
  char err[256];
  assert_int_equal(scrape_manager_new(&opt, NULL, recorder_sink, rec, &m, err, sizeof err), 0);
  assert_int_equal(scrape_manager_start(m, err, sizeof err), 0);
  return m;
}

static json_t *obj(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  json_error_t je;
  json_t *j = json_loads(buf, 0, &je);
  if (!j) fprintf(stderr, "bad JSON %s: %s\n", buf, je.text);
  assert_non_null(j);
  return j;
}

static json_t *list(scrape_manager_t *m) {
  sb_t sb = {0};
  assert_int_equal(scrape_sources_json(m, &sb), 0);
  json_t *j = json_loads(sb.buf, 0, NULL);
  sb_free(&sb);
  assert_non_null(j);
  return j;
}

static void test_crud_and_persistence(void **state) {
  int port = mini_http_port(srv);
  recorder_t *rec = recorder_new();
  scrape_manager_t *m = manager(rec);
  char id[80], err[256];

  /* By URL, with a generated id. */
  json_t *s =
      obj("{\"name\":\"web\",\"url\":\"http://127.0.0.1:%d/metrics?x=1\",\"scrape_interval\":\"200ms\","
          "\"labels\":{\"team\":\"a\"}}",
          port);
  assert_int_equal(scrape_source_add(m, s, id, sizeof id, err, sizeof err), 0);
  json_decref(s);
  assert_true(strncmp(id, "src-", 4) == 0);
  /* By targets, with an id of our own. */
  s = obj(
      "{\"id\":\"db-1\",\"targets\":[\"127.0.0.1:%d\"],\"scrape_interval\":\"200ms\",\"job_name\":\"db\"}",
      port);
  char id2[80];
  assert_int_equal(scrape_source_add(m, s, id2, sizeof id2, err, sizeof err), 0);
  assert_string_equal(id2, "db-1");
  /* The same id again: refused. */
  assert_int_equal(scrape_source_add(m, s, id2, sizeof id2, err, sizeof err), MD_ELIMIT);
  json_decref(s);

  assert_true(recorder_wait(rec, 1, 5000, "__name__=up", "job=web", "team=a"));
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=db", NULL));
  usleep(300 * 1000);
  json_t *l = list(m);
  assert_int_equal(json_array_size(l), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *e = json_array_get(l, i);
    json_t *h = json_object_get(e, "health");
    assert_string_equal(json_string_value(json_object_get(h, "status")), "up");
    assert_true(json_is_string(json_object_get(h, "last_scrape")));
    assert_true(json_real_value(json_object_get(h, "last_duration_seconds")) > 0 ||
                json_integer_value(json_object_get(h, "last_duration_seconds")) >= 0);
    assert_int_equal(json_array_size(json_object_get(h, "targets")), 1);
    /* The exposition has one sample. */
    assert_int_equal(json_integer_value(json_object_get(h, "last_samples")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(json_object_get(h, "targets"), 0), "last_samples")),
        1);
  }
  json_t *web = json_array_get(l, 0);
  assert_string_equal(json_string_value(json_object_get(web, "id")), id);
  char want[128];
  snprintf(want, sizeof want, "http://127.0.0.1:%d/metrics?x=1", port);
  assert_string_equal(
      json_string_value(json_object_get(
          json_array_get(json_object_get(json_object_get(web, "health"), "targets"), 0), "url")),
      want);
  json_decref(l);

  /* One source. */
  sb_t sb = {0};
  assert_int_equal(scrape_source_json(m, "db-1", &sb), 0);
  assert_non_null(strstr(sb.buf, "\"job_name\":\"db\""));
  sb_free(&sb);
  assert_int_equal(scrape_source_json(m, "nope", &sb), MD_ENOTFOUND);
  sb_free(&sb);

  /* Update: new labels reach the series; bad updates are refused. */
  s = obj("{\"targets\":[\"127.0.0.1:%d\"],\"scrape_interval\":\"200ms\",\"job_name\":\"db\",\"labels\":{"
          "\"tier\":\"2\"}}",
          port);
  assert_int_equal(scrape_source_update(m, "db-1", s, err, sizeof err), 0);
  assert_int_equal(scrape_source_update(m, "missing", s, err, sizeof err), MD_ENOTFOUND);
  json_decref(s);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=db", "tier=2"));
  size_t st = 0;
  for (int waited = 0; waited < 5000 && !st; waited += 50) { /* a scrape in flight finishes first */
    recorder_find(rec, NULL, &st, "__name__=src_metric", "job=db", NULL);
    if (!st) usleep(50 * 1000);
  }
  assert_int_equal(st, 1); /* the old label set went stale */
  s = obj("{\"targets\":[]}");
  assert_int_equal(scrape_source_update(m, "db-1", s, err, sizeof err), MD_EINVAL);
  json_decref(s);

  /* Invalid sources. */
  const char *bad[] = {
      "{\"url\":\"ftp://x/y\"}",
      "{\"name\":\"x\"}",
      "{\"id\":\"bad id\",\"targets\":[\"a:1\"]}",
      "{\"targets\":[\"a:1\"],\"scrape_interval\":\"never\"}",
      "{\"targets\":[\"a:1\"],\"enabled\":\"yes\"}",
      "{\"targets\":[\"a:1\"],\"static_configs\":[]}",
      "{\"targets\":[\"a:1\"],\"bogus\":1}",
      "[1]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s = json_loads(bad[i], 0, NULL);
    assert_non_null(s);
    int rc = scrape_source_add(m, s, id2, sizeof id2, err, sizeof err);
    if (rc != MD_EINVAL) fprintf(stderr, "bad source %s: rc %d (%s)\n", bad[i], rc, err);
    assert_int_equal(rc, MD_EINVAL);
    json_decref(s);
  }

  /* Restart: both sources come back from sources.json and scrape again. */
  scrape_manager_free(m);
  recorder_clear(rec);
  m = manager(rec);
  l = list(m);
  assert_int_equal(json_array_size(l), 2);
  json_decref(l);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=db", "tier=2"));
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=web", NULL));

  /* Delete: gone from the list and from disk, its series stale. */
  assert_int_equal(scrape_source_delete(m, id, err, sizeof err), 0);
  assert_int_equal(scrape_source_delete(m, id, err, sizeof err), MD_ENOTFOUND);
  l = list(m);
  assert_int_equal(json_array_size(l), 1);
  json_decref(l);
  size_t stale = 0;
  for (int waited = 0; waited < 5000 && !stale; waited += 50) {
    recorder_find(rec, NULL, &stale, "__name__=src_metric", "job=web", NULL);
    if (!stale) usleep(50 * 1000);
  }
  assert_int_equal(stale, 1);
  recorder_find(rec, NULL, &stale, "__name__=up", "job=web", NULL);
  assert_int_equal(stale, 1);
  char path[128];
  snprintf(path, sizeof path, "%s/sources.json", dir);
  char *text = NULL;
  size_t len;
  assert_int_equal(md_read_file(path, &text, &len), 0);
  assert_null(strstr(text, id));
  assert_non_null(strstr(text, "db-1"));
  free(text);

  /* A disabled source stays listed but is not scraped. */
  s = obj(
      "{\"targets\":[\"127.0.0.1:%d\"],\"scrape_interval\":\"200ms\",\"job_name\":\"db\",\"enabled\":false}",
      port);
  assert_int_equal(scrape_source_update(m, "db-1", s, err, sizeof err), 0);
  json_decref(s);
  l = list(m);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(json_array_get(l, 0), "health"), "status")),
      "disabled");
  json_decref(l);
  scrape_stats_t ss;
  scrape_manager_stats(m, &ss);
  assert_int_equal(ss.targets_active, 0);
  scrape_manager_free(m);
  recorder_free(rec);
}

/* Credentials are shown as "<secret>"; sending the placeholder back keeps them. */
static void test_secrets_hidden(void **state) {
  int port = mini_http_port(srv);
  recorder_t *rec = recorder_new();
  scrape_manager_t *m = manager(rec);
  char id[80], err[256];
  json_t *s = obj("{\"id\":\"authd\",\"url\":\"http://127.0.0.1:%d/auth\",\"scrape_interval\":\"200ms\","
                  "\"basic_auth\":{\"username\":\"u\",\"password\":\"p\"},\"labels\":{\"v\":\"1\"}}",
                  port);
  assert_int_equal(scrape_source_add(m, s, id, sizeof id, err, sizeof err), 0);
  json_decref(s);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=authd", "v=1"));
  sb_t sb = {0};
  assert_int_equal(scrape_source_json(m, "authd", &sb), 0);
  json_t *shown = json_loads(sb.buf, 0, NULL);
  sb_free(&sb);
  assert_non_null(shown);
  json_t *ba = json_object_get(shown, "basic_auth");
  assert_string_equal(json_string_value(json_object_get(ba, "password")), "<secret>");
  assert_string_equal(json_string_value(json_object_get(ba, "username")), "u");
  /* GET, change a label, PUT back: the stored password is kept and the scrape still passes. */
  json_object_del(shown, "health");
  json_object_set_new(json_object_get(shown, "labels"), "v", json_string("2"));
  assert_int_equal(scrape_source_update(m, "authd", shown, err, sizeof err), 0);
  json_decref(shown);
  assert_true(recorder_wait(rec, 1, 5000, "__name__=src_metric", "job=authd", "v=2"));
  double up = 0;
  for (int waited = 0; waited < 3000; waited += 50) {
    recorder_find(rec, &up, NULL, "__name__=up", "job=authd", "v=2", NULL);
    if (up == 1) break;
    usleep(50 * 1000);
  }
  assert_true(up == 1);
  /* On disk the real value stays; a bearer token is hidden the same way. */
  char path[128];
  snprintf(path, sizeof path, "%s/sources.json", dir);
  char *text = NULL;
  size_t len;
  assert_int_equal(md_read_file(path, &text, &len), 0);
  assert_null(strstr(text, "<secret>"));
  free(text);
  struct stat stt;
  assert_int_equal(stat(path, &stt), 0);
  assert_int_equal(stt.st_mode & 0777, 0600);
  s = obj("{\"id\":\"tok\",\"targets\":[\"127.0.0.1:%d\"],\"authorization\":{\"credentials\":\"sekret\"}}",
          port);
  assert_int_equal(scrape_source_add(m, s, id, sizeof id, err, sizeof err), 0);
  json_decref(s);
  sb = (sb_t){0};
  assert_int_equal(scrape_sources_json(m, &sb), 0);
  assert_null(strstr(sb.buf, "sekret"));
  assert_null(strstr(sb.buf, "\"p\""));
  sb_free(&sb);
  assert_int_equal(scrape_source_delete(m, "tok", err, sizeof err), 0);
  assert_int_equal(scrape_source_delete(m, "authd", err, sizeof err), 0);
  scrape_manager_free(m);
  recorder_free(rec);
}

static int setup(void **state) {
  srv = mini_http_start();
  if (!srv) return -1;
  mini_http_set_body(srv, "src_metric 42\n");
  snprintf(dir, sizeof dir, "/tmp/md-sources-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  mini_http_stop(srv);
  md_rm_rf(dir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_crud_and_persistence),
                                     cmocka_unit_test(test_secrets_hidden)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
