/*
 * metricsd entry point: command line, configuration, start and stop in order.
 *
 *   metricsd [serve] [--listen HOST:PORT] [--data-dir DIR] [--config FILE] [--log-level L]
 *                    [--set KEY=VALUE]...
 *   metricsd check-config FILE      validate a configuration (and the rule files it names)
 *   metricsd check-rules FILE...    validate rule files like `promtool check rules`
 *   metricsd test-rules FILE...     run promtool-format rule unit tests
 *   metricsd --help | --version
 *
 * Signals: SIGHUP, SIGTERM and SIGINT are blocked in every thread (the mask is set before
 * any thread starts) and taken synchronously here with sigwait, so no work happens in an
 * async signal handler. SIGHUP reloads; SIGTERM/SIGINT stop gracefully and exit 0.
 */
#include <errno.h>
#include <glob.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "core/config.h"
#include "core/core.h"
#include "rules/rules.h"

extern char **environ;

static void usage(FILE *f) {
  fprintf(f,
          "metricsd %s — metrics collection service with an embedded time-series database\n"
          "\n"
          "usage:\n"
          "  metricsd [serve] [options]        run the server\n"
          "  metricsd check-config FILE        validate a configuration file and its rule files\n"
          "  metricsd check-rules FILE...      validate rule files (like promtool check rules)\n"
          "  metricsd test-rules FILE...       run rule unit tests (promtool test rules format)\n"
          "  metricsd --version | --help\n"
          "\n"
          "options (flags win over METRICSD_* environment variables, which win over the file):\n"
          "  --listen HOST:PORT   listen address (default :8012)\n"
          "  --data-dir DIR       data directory (default ./data)\n"
          "  --config FILE        YAML configuration file (also METRICSD_CONFIG)\n"
          "  --log-level LEVEL    debug, info, warn, error (default info)\n"
          "  --set KEY=VALUE      any setting by its key path, e.g. --set storage.retention=30d\n"
          "\n"
          "Every setting and its environment variable: docs/configuration.md\n",
          METRICSD_VERSION);
}

/* Takes "--flag value" or "--flag=value"; returns the value or NULL (and advances *i). */
static const char *flag_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0) return NULL;
  if (argv[*i][n] == '=') return argv[*i] + n + 1;
  if (argv[*i][n] != 0) return NULL;
  if (*i + 1 >= argc) {
    fprintf(stderr, "metricsd: %s needs a value\n", name);
    exit(2);
  }
  return argv[++*i];
}

static int check_rule_globs(const json_t *rule_files, const char *base_dir) {
  if (!rule_files || !json_array_size(rule_files)) return 0;
  size_t i;
  json_t *g;
  int rc = 0;
  json_array_foreach(rule_files, i, g) {
    const char *pat = json_string_value(g);
    if (!pat) {
      fprintf(stderr, "rule_files[%zu]: not a string\n", i);
      rc = 1;
      continue;
    }
    char full[4096];
    int w = pat[0] != '/' && base_dir ? snprintf(full, sizeof full, "%s/%s", base_dir, pat)
                                      : snprintf(full, sizeof full, "%s", pat);
    if (w < 0 || (size_t)w >= sizeof full) {
      fprintf(stderr, "rule_files[%zu]: path too long\n", i);
      rc = 1;
      continue;
    }
    glob_t gl;
    memset(&gl, 0, sizeof gl);
    if (glob(full, 0, NULL, &gl) != 0 || gl.gl_pathc == 0) {
      printf("rule_files[%zu] %s: no files match\n", i, pat);
      globfree(&gl);
      continue;
    }
    sb_t out = {0};
    if (rules_check_files((const char *const *)gl.gl_pathv, gl.gl_pathc, &out) != 0) rc = 1;
    if (out.buf) fputs(out.buf, stdout);
    sb_free(&out);
    globfree(&gl);
  }
  return rc;
}

static int cmd_check_config(const char *file) {
  config_source_t src = {.file = file, .envp = environ};
  config_t *c = NULL;
  char err[1024];
  if (config_load(&src, &c, err, sizeof err) != 0) {
    fprintf(stderr, "FAILED: %s\n", err);
    return 1;
  }
  printf("SUCCESS: %s is valid: listen %s, data %s, %zu auth keys, %zu scrape configs, %zu rule file patterns\n",
         file, c->server.listen, c->server.data_dir, c->server.n_auth_keys, json_array_size(c->scrape_configs),
         json_array_size(c->rule_files));
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", file);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  int rc = check_rule_globs(c->rule_files, dir);
  if (rc) fprintf(stderr, "FAILED: %s: rule files have errors (above)\n", file);
  config_free(c);
  return rc;
}

static int cmd_rules(bool test, int argc, char **argv) {
  if (argc < 1) {
    fprintf(stderr, "metricsd: %s needs at least one file\n", test ? "test-rules" : "check-rules");
    return 2;
  }
  sb_t out = {0};
  int rc = 0;
  if (test) {
    for (int i = 0; i < argc; i++)
      if (rules_test_file(argv[i], &out) != 0) rc = 1;
  } else {
    rc = rules_check_files((const char *const *)argv, (size_t)argc, &out) != 0;
  }
  if (out.buf) fputs(out.buf, stdout);
  sb_free(&out);
  return rc;
}

/* Every 5 s, free heap goes back to the kernel. glibc keeps it otherwise: the thresholds
 * set in main and the per-thread arenas hold what ingestion bursts, persistence and
 * compaction freed (after the peer benchmark's 13 M-sample push and flush, 120 MiB RSS of
 * which most was free heap). malloc_trim walks the arenas, so it runs only when there is
 * something worth returning. */
static void trim_heap(void) {
  struct mallinfo2 mi = mallinfo2();
  if (mi.fordblks >= (size_t)16 << 20) malloc_trim(0);
}

int main(int argc, char **argv) {
  int i = 1;
  if (argc > 1 && strcmp(argv[1], "--version") == 0) {
    printf("metricsd %s (commit %s)\n", METRICSD_VERSION, api_commit());
    return 0;
  }
  if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "check-config") == 0) {
    if (argc != 3) {
      fprintf(stderr, "usage: metricsd check-config FILE\n");
      return 2;
    }
    return cmd_check_config(argv[2]);
  }
  if (argc > 1 && strcmp(argv[1], "check-rules") == 0) return cmd_rules(false, argc - 2, argv + 2);
  if (argc > 1 && strcmp(argv[1], "test-rules") == 0) return cmd_rules(true, argc - 2, argv + 2);
  if (argc > 1 && strcmp(argv[1], "serve") == 0) i = 2;

  /* Push requests allocate buffers of a few MB (body, batch, parser state) and free them at
   * the end of the request. With glibc's defaults the top of the heap is handed back to the
   * kernel on free and faulted in again by the next request; these thresholds keep up to
   * 64 MiB of free heap and serve blocks below 8 MiB from it (docs/api-ingest.md,
   * "Throughput": the RSS cost is measured there). */
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  /* One arena per CPU (glibc's default is 8 per CPU). Each connection thread takes an arena,
   * and an arena other than the main one keeps its free top below the trim threshold:
   * malloc_trim does not shrink it. Pushing 8 MiB bodies on a new connection each (2 CPUs):
   * 16 arenas held 434 MiB RSS (327 MiB after trimming), 2 arenas 45 MiB, and the server
   * used 20 % less CPU (fewer page faults). */
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  mallopt(M_ARENA_MAX, ncpu > 2 ? (int)ncpu : 2);

  /* flags → overrides (applied last, so they win) */
  const char *file = getenv("METRICSD_CONFIG");
  if (file && !*file) file = NULL;
  char **ov = calloc((size_t)argc + 1, sizeof *ov);
  size_t nov = 0;
  if (!ov) return 1;
  int exit_code = 1;
  for (; i < argc; i++) {
    const char *v;
    char buf[4200];
    if ((v = flag_value(argc, argv, &i, "--config"))) {
      file = v;
      continue;
    }
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      exit_code = 0;
      goto out;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("metricsd %s (commit %s)\n", METRICSD_VERSION, api_commit());
      exit_code = 0;
      goto out;
    }
    const char *key = NULL;
    if ((v = flag_value(argc, argv, &i, "--listen"))) key = "server.listen";
    else if ((v = flag_value(argc, argv, &i, "--data-dir"))) key = "server.data_dir";
    else if ((v = flag_value(argc, argv, &i, "--log-level"))) key = "server.log_level";
    else if ((v = flag_value(argc, argv, &i, "--set"))) key = "";
    else {
      fprintf(stderr, "metricsd: unknown argument '%s' (see --help)\n", argv[i]);
      exit_code = 2;
      goto out;
    }
    if (*key) snprintf(buf, sizeof buf, "%s=%s", key, v);
    else snprintf(buf, sizeof buf, "%s", v);
    if (!(ov[nov++] = strdup(buf))) goto out;
  }

  /* Block the control signals before any thread exists so every thread inherits the mask
   * and only sigwait below sees them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  config_source_t src = {.file = file, .envp = environ, .overrides = (const char *const *)ov, .n_overrides = nov};
  config_t *cfg = NULL;
  char err[1024];
  if (config_load(&src, &cfg, err, sizeof err) != 0) {
    log_error("%s", err);
    exit_code = 2;
    goto out;
  }
  log_set_level_name(cfg->server.log_level);
  api_t *api = NULL;
  if (api_new(cfg, &src, &api, err, sizeof err) != 0) {
    log_error("start-up failed: %s", err);
    goto out;
  }
  if (api_start(api, err, sizeof err) != 0) {
    log_error("start-up failed: %s", err);
    api_free(api);
    goto out;
  }
  for (;;) {
    const struct timespec tick = {5, 0};
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig < 0) {
      if (errno == EAGAIN) trim_heap();
      continue;
    }
    if (sig == SIGHUP) {
      log_info("SIGHUP: reloading configuration");
      api_reload(api, err, sizeof err);
      continue;
    }
    log_info("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  api_stop(api);
  api_free(api);
  log_info("stopped");
  exit_code = 0;
out:
  for (size_t k = 0; k < nov; k++) free(ov[k]);
  free(ov);
  return exit_code;
}
