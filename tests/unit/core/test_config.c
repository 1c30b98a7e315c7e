/* Unit tests for configuration: defaults, YAML file, environment, flags and their
 * precedence; validation errors naming the key; the YAML converter's edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/core.h"

static config_t *load_yaml(const char *yaml, char *const *envp, const char *const *ov, size_t nov, char *err,
                           size_t errlen) {
  config_source_t src = {.yaml = yaml, .yaml_len = yaml ? strlen(yaml) : 0, .envp = envp, .overrides = ov,
                         .n_overrides = nov};
  config_t *c = NULL;
  int rc = config_load(&src, &c, err, errlen);
  if (rc) assert_null(c);
  return c;
}

static void test_defaults(void **state) {
  (void)state;
  char err[256] = "";
  config_t *c = load_yaml(NULL, NULL, NULL, 0, err, sizeof err);
  assert_non_null(c);
  assert_string_equal(c->server.listen, ":8012");
  assert_string_equal(c->server.data_dir, "./data");
  assert_string_equal(c->server.log_level, "info");
  assert_int_equal(c->server.max_body_bytes, 64ull << 20);
  assert_int_equal(c->server.read_timeout_ms, 30000);
  assert_int_equal(c->storage.retention_ms, 15LL * 86400 * 1000);
  assert_int_equal(c->storage.fsync_always, 0);
  assert_int_equal(c->storage.tier2_resolution_ms, 3600000);
  assert_int_equal(c->aggregation.window_seconds, 300);
  assert_int_equal(c->aggregation.n_types, 5);
  assert_string_equal(c->aggregation.types[4], "count");
  assert_int_equal(c->collectors.gpu_interval_ms, 5000);
  assert_int_equal(c->track.n_default_buckets, 11);
  assert_true(c->track.default_buckets[0] == 0.005 && c->track.default_buckets[10] == 10);
  assert_true(c->server.prometheus_enabled);
  assert_int_equal(c->server.n_auth_keys, 0);
  assert_null(c->scrape_configs);
  assert_null(c->server.tls_cert_file);
  config_free(c);
}

static const char *full_yaml =
    "# a full file\n"
    "server:\n"
    "  listen: 127.0.0.1:9000\n"
    "  log_level: DEBUG\n"
    "  max_body_bytes: 1MiB\n"
    "  cors_origin: '*'\n"
    "  auth_keys:\n"
    "    - {token: s3cret, tenant: acme, roles: [read, write]}\n"
    "    - token: adm\n"
    "      roles: admin\n"
    "      name: ops\n"
    "storage:\n"
    "  retention: 30d\n"
    "  retention_size: 10GB\n"
    "  fsync: always\n"
    "limits:\n"
    "  max_series_per_tenant: 5000\n"
    "aggregation:\n"
    "  window_seconds: 5m\n"
    "  types: [avg, max]\n"
    "collectors:\n"
    "  gpu: {interval: 2.5, enabled: false}\n"
    "track:\n"
    "  buckets:\n"
    "    req_seconds: [0.1, 1, 10]\n"
    "global:\n"
    "  external_labels: {region: eu}\n"
    "scrape_configs:\n"
    "  - job_name: node\n"
    "    static_configs: [{targets: ['localhost:9100']}]\n"
    "rule_files: [rules/*.yml]\n";

static void test_file(void **state) {
  (void)state;
  char err[256] = "";
  config_t *c = load_yaml(full_yaml, NULL, NULL, 0, err, sizeof err);
  if (!c) fail_msg("%s", err);
  assert_string_equal(c->server.listen, "127.0.0.1:9000");
  assert_string_equal(c->server.log_level, "debug");
  assert_int_equal(c->server.max_body_bytes, 1 << 20);
  assert_string_equal(c->server.cors_origin, "*");
  assert_int_equal(c->server.n_auth_keys, 2);
  assert_string_equal(c->server.auth_keys[0].tenant, "acme");
  assert_int_equal(c->server.auth_keys[0].roles, CONFIG_ROLE_READ | CONFIG_ROLE_WRITE);
  assert_string_equal(c->server.auth_keys[0].name, "key1");
  assert_string_equal(c->server.auth_keys[1].tenant, "default");
  assert_string_equal(c->server.auth_keys[1].name, "ops");
  assert_int_equal(c->server.auth_keys[1].roles, CONFIG_ROLE_ADMIN);
  assert_int_equal(c->storage.retention_ms, 30LL * 86400000);
  assert_int_equal(c->storage.retention_bytes, 10000000000ull);
  assert_int_equal(c->storage.fsync_always, 1);
  assert_int_equal(c->limits.max_series_per_tenant, 5000);
  assert_int_equal(c->aggregation.window_seconds, 300);
  assert_int_equal(c->aggregation.n_types, 2);
  assert_int_equal(c->collectors.gpu_interval_ms, 2500);
  assert_false(c->collectors.gpu_enabled);
  assert_int_equal(c->track.n_buckets, 1);
  assert_string_equal(c->track.buckets[0].metric, "req_seconds");
  assert_int_equal(c->track.buckets[0].n, 3);
  assert_string_equal(json_string_value(json_object_get(c->global.external_labels, "region")), "eu");
  assert_true(json_is_array(c->scrape_configs));
  assert_string_equal(json_string_value(json_object_get(json_array_get(c->scrape_configs, 0), "job_name")), "node");
  assert_string_equal(json_string_value(json_array_get(c->rule_files, 0)), "rules/*.yml");
  config_free(c);
}

static void test_precedence(void **state) {
  (void)state;
  char err[256] = "";
  const char *yaml = "server: {listen: ':1000', log_level: warn}\nlimits: {max_series_per_tenant: 7}\n"
                     "aggregation: {window_seconds: 60}\n";
  char *envp[] = {"METRICSD_SERVER_LISTEN=:2000", "METRICSD_SERVER_LOG_LEVEL=error",
                  "ACCESS_AGGREGATION_WINDOW_SECONDS=120", "PATH=/bin", "METRICSD_BIN=/x", NULL};
  const char *ov[] = {"server.listen=:3000"};
  /* file only */
  config_t *c = load_yaml(yaml, NULL, NULL, 0, err, sizeof err);
  assert_non_null(c);
  assert_string_equal(c->server.listen, ":1000");
  assert_int_equal(c->aggregation.window_seconds, 60);
  config_free(c);
  /* env beats file */
  c = load_yaml(yaml, envp, NULL, 0, err, sizeof err);
  assert_non_null(c);
  assert_string_equal(c->server.listen, ":2000");
  assert_string_equal(c->server.log_level, "error");
  assert_int_equal(c->aggregation.window_seconds, 120); /* seed 004 alias */
  assert_int_equal(c->limits.max_series_per_tenant, 7); /* untouched by env: file value */
  assert_string_equal(json_string_value(json_object_get(json_object_get(c->root, "server"), "listen")), ":2000");
  config_free(c);
  /* flags beat env */
  c = load_yaml(yaml, envp, ov, 1, err, sizeof err);
  assert_non_null(c);
  assert_string_equal(c->server.listen, ":3000");
  assert_string_equal(c->server.log_level, "error");
  config_free(c);
  /* canonical name beats the alias whatever the order in the environment */
  char *envp2[] = {"METRICSD_AGGREGATION_WINDOW_SECONDS=30", "METRICSD_AGGREGATION_WINDOW=90",
                   "GPU_COLLECTION_INTERVAL=10", "PROMETHEUS_ENABLED=false", "TIMESERIES_BACKEND=local",
                   "METRICSD_SERVER_AUTH_KEYS=tok1:t1:read+write,tok2::admin", "LOG_LEVEL=DEBUG",
                   "GPU_METRICS_ENABLED=false", NULL};
  c = load_yaml(NULL, envp2, NULL, 0, err, sizeof err);
  if (!c) fail_msg("%s", err);
  assert_int_equal(c->aggregation.window_seconds, 30);
  assert_int_equal(c->collectors.gpu_interval_ms, 10000);
  assert_false(c->server.prometheus_enabled);
  assert_string_equal(c->server.log_level, "debug"); /* seeds 000/001 spell it LOG_LEVEL=INFO */
  assert_false(c->collectors.gpu_enabled);           /* seed 000 */
  assert_int_equal(c->server.n_auth_keys, 2);
  assert_string_equal(c->server.auth_keys[0].tenant, "t1");
  assert_int_equal(c->server.auth_keys[0].roles, CONFIG_ROLE_READ | CONFIG_ROLE_WRITE);
  assert_string_equal(c->server.auth_keys[1].tenant, "default");
  assert_int_equal(c->server.auth_keys[1].roles, CONFIG_ROLE_ADMIN);
  config_free(c);
}

/* Each bad input must fail and the message must name the key (or the problem). */
static void test_errors(void **state) {
  (void)state;
  static const struct {
    const char *yaml;
    const char *env;
    const char *flag;
    const char *want;
  } cases[] = {
      {"server: {listn: ':1'}\n", NULL, NULL, "unknown key server.listn"},
      {"bogus: 1\n", NULL, NULL, "unknown key bogus"},
      {"storage:\n  retention: forever\n", NULL, NULL, "storage.retention"},
      {"storage: {fsync: sometimes}\n", NULL, NULL, "storage.fsync"},
      {"server: {listen: 'localhost:99999'}\n", NULL, NULL, "server.listen"},
      {"server: {log_level: loud}\n", NULL, NULL, "server.log_level"},
      {"server: {max_body_bytes: 12 parsecs}\n", NULL, NULL, "server.max_body_bytes"},
      {"server: {max_connections: -1}\n", NULL, NULL, "server.max_connections"},
      {"server: {threads: 5000}\n", NULL, NULL, "maximum"},
      {"server: {prometheus_enabled: maybe}\n", NULL, NULL, "server.prometheus_enabled"},
      {"server: {listen: [a, b]}\n", NULL, NULL, "single value"},
      {"server: 5\n", NULL, NULL, "must be a mapping"},
      {"server: {auth_keys: [{tenant: x}]}\n", NULL, NULL, "server.auth_keys[0]: token"},
      {"server: {auth_keys: [{token: a, roles: superuser}]}\n", NULL, NULL, "roles"},
      {"server: {auth_keys: [{token: a, colour: red}]}\n", NULL, NULL, "colour"},
      {"server: {tls_cert_file: /x.pem}\n", NULL, NULL, "tls_key_file"},
      {"storage: {backend: influxdb}\n", NULL, NULL, "influxdb_write"},
      {"aggregation: {types: [avg, median]}\n", NULL, NULL, "median"},
      {"aggregation: {window_seconds: 1.5}\n", NULL, NULL, "aggregation.window_seconds"},
      {"track: {default_buckets: [1, 0.5]}\n", NULL, NULL, "ascending"},
      {"track: {buckets: {x: [a]}}\n", NULL, NULL, "track.buckets.x"},
      {"global: {scrape_interval: 10s, scrape_timeout: 20s}\n", NULL, NULL, "scrape_timeout"},
      {"scrape_configs: {job_name: x}\n", NULL, NULL, "scrape_configs"},
      {"- a\n- b\n", NULL, NULL, "top level"},
      {"server: {listen: ':1'\n", NULL, NULL, "line"},
      {"a: 1\na: 2\n", NULL, NULL, "duplicate key"},
      {"--- \na: 1\n---\nb: 2\n", NULL, NULL, "one YAML document"},
      {NULL, "METRICSD_STORAGE_RETENTION=abc", NULL, "environment variable METRICSD_STORAGE_RETENTION"},
      {NULL, "ACCESS_MAX_METRIC_SERIES=lots", NULL, "limits.max_series_per_tenant"},
      {NULL, NULL, "server.nope=1", "unknown key server.nope"},
      {NULL, NULL, "server.listen", "KEY=VALUE"},
      {NULL, NULL, "limits.max_labels_per_series=x", "limits.max_labels_per_series"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[512] = "";
    char *envp[] = {(char *)cases[i].env, NULL};
    const char *ov[] = {cases[i].flag};
    config_t *c = load_yaml(cases[i].yaml, cases[i].env ? envp : NULL, ov, cases[i].flag ? 1 : 0, err, sizeof err);
    if (c) fail_msg("case %zu accepted", i);
    if (!strstr(err, cases[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
  }
}

static void test_yaml(void **state) {
  (void)state;
  char err[256];
  json_t *j = NULL;
  const char *y = "a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 0x1f\ng: .inf\nh: hello world\n"
                  "base: &b {x: 1, y: 2}\nderived: {<<: *b, y: 3}\nlist: [*b, *b]\nbig: 99999999999999999999\n";
  if (config_yaml_to_json(y, strlen(y), &j, err, sizeof err) != 0) fail_msg("%s", err);
  assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
  assert_true(json_real_value(json_object_get(j, "b")) == 1.5);
  assert_true(json_is_true(json_object_get(j, "c")));
  assert_true(json_is_null(json_object_get(j, "d")));
  assert_string_equal(json_string_value(json_object_get(j, "e")), "1");
  assert_int_equal(json_integer_value(json_object_get(j, "f")), 31);
  assert_string_equal(json_string_value(json_object_get(j, "g")), ".inf");
  assert_string_equal(json_string_value(json_object_get(j, "h")), "hello world");
  json_t *d = json_object_get(j, "derived");
  assert_int_equal(json_integer_value(json_object_get(d, "x")), 1);
  assert_int_equal(json_integer_value(json_object_get(d, "y")), 3);
  assert_int_equal(json_array_size(json_object_get(j, "list")), 2);
  assert_true(json_is_real(json_object_get(j, "big")));
  json_decref(j);
  /* billion laughs is refused */
  const char *bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                     "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
  assert_int_not_equal(config_yaml_to_json(bomb, strlen(bomb), &j, err, sizeof err), 0);
  assert_non_null(strstr(err, "too large"));
  assert_int_not_equal(config_yaml_to_json("a: *nope\n", 9, &j, err, sizeof err), 0);
  assert_non_null(strstr(err, "alias"));
  assert_int_equal(config_yaml_to_json("", 0, &j, err, sizeof err), 0);
  assert_true(json_is_null(j));
  json_decref(j);
}

static void test_helpers(void **state) {
  (void)state;
  uint64_t b;
  assert_int_equal(config_parse_size("512KiB", 6, &b), 0);
  assert_int_equal(b, 512 * 1024);
  assert_int_equal(config_parse_size("1.5GB", 5, &b), 0);
  assert_int_equal(b, 1500000000ull);
  assert_int_equal(config_parse_size("100", 3, &b), 0);
  assert_int_equal(b, 100);
  assert_int_not_equal(config_parse_size("-1", 2, &b), 0);
  assert_int_not_equal(config_parse_size("1XB", 3, &b), 0);
  int64_t ms;
  json_t *v = json_string("1h30m");
  assert_int_equal(config_parse_duration(v, &ms), 0);
  assert_int_equal(ms, 5400000);
  json_decref(v);
  v = json_integer(15);
  assert_int_equal(config_parse_duration(v, &ms), 0);
  assert_int_equal(ms, 15000);
  json_decref(v);
  char buf[64];
  assert_string_equal(config_roles_str(CONFIG_ROLE_READ | CONFIG_ROLE_ADMIN, buf, sizeof buf), "read,admin");
  config_env_name("collectors.gpu.interval", buf, sizeof buf);
  assert_string_equal(buf, "METRICSD_COLLECTORS_GPU_INTERVAL");
}

static void test_file_io(void **state) {
  (void)state;
  char path[] = "/tmp/md_cfg_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *y = "server:\n  data_dir: /tmp/somewhere\n";
  assert_int_equal(write(fd, y, strlen(y)), (ssize_t)strlen(y));
  close(fd);
  config_source_t src = {.file = path};
  config_t *c = NULL;
  char err[256];
  assert_int_equal(config_load(&src, &c, err, sizeof err), 0);
  assert_string_equal(c->server.data_dir, "/tmp/somewhere");
  assert_string_equal(c->file_path, path);
  config_free(c);
  unlink(path);
  assert_int_equal(config_load(&src, &c, err, sizeof err), MD_EIO);
  assert_non_null(strstr(err, path));
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults), cmocka_unit_test(test_file),    cmocka_unit_test(test_precedence),
      cmocka_unit_test(test_errors),   cmocka_unit_test(test_yaml),    cmocka_unit_test(test_helpers),
      cmocka_unit_test(test_file_io),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
