/*
 * bench_scrape — issue 7's scale figures:
 *   1. host collector: cost of one round on the live /proc, and that cost as a share of one
 *      core at the default 15 s interval (the issue asks for under 1 %);
 *   2. scraping: T synthetic targets (default 1000) x S series (default 1000) at an interval
 *      (default 15 s), served on 127.0.0.1 by a small in-process HTTP server, for a number of
 *      seconds; reports scrapes, samples/s and the CPU the scraper used (process CPU minus the
 *      synthetic server's thread CPU), in cores. Mode "sink" counts samples only; mode "tsdb"
 *      appends every batch to a real tsdb in a temporary directory (the whole path).
 *
 * Usage: bench_scrape [targets] [series] [seconds] [interval_s] [sink|tsdb|both]
 * Defaults: 1000 1000 35 15 both. Every target is a distinct identity (a label t="<i>") on
 * the one server address, so the scraper does exactly the per-target work it would do for
 * 1000 hosts.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "collect/collect.h"
#include "core/core.h"
#include "scrape/scrape.h"
#include "tsdb/tsdb.h"

/* ---- synthetic target server ----------------------------------------------------------- */

typedef struct server {
  int fd, port;
  pthread_t th;
  char *resp;
  size_t resp_len;
  atomic_bool stop;
  atomic_llong cpu_ns; /* this thread's CPU time */
  atomic_llong requests;
} server_t;

static void *serve(void *arg) {
  server_t *s = arg;
  char req[4096];
  while (!atomic_load(&s->stop)) {
    int c = accept(s->fd, NULL, NULL);
    if (c < 0) continue;
    /* One request per connection ("Connection: close"), so a few server threads serve any
     * number of scrape workers. */
    size_t len = 0;
    for (;;) {
      ssize_t r = read(c, req + len, sizeof req - 1 - len);
      if (r <= 0) break;
      len += (size_t)r;
      req[len] = 0;
      char *end;
      while ((end = strstr(req, "\r\n\r\n"))) {
        size_t used = (size_t)(end + 4 - req);
        const char *p = s->resp;
        size_t left = s->resp_len;
        while (left) {
          ssize_t w = send(c, p, left, MSG_NOSIGNAL);
          if (w <= 0) break;
          p += w;
          left -= (size_t)w;
        }
        atomic_fetch_add(&s->requests, 1);
        (void)used;
        len = 0;
        break;
      }
      if (len == 0 || len >= sizeof req - 1) break;
    }
    close(c);
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    atomic_store(&s->cpu_ns, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  }
  return NULL;
}

/* Several server threads share the accept queue. */
#define SERVER_THREADS 16

typedef struct servers {
  server_t s[SERVER_THREADS];
  int port;
} servers_t;

static int servers_start(servers_t *all, size_t series) {
  sb_t body = {0};
  sb_puts(&body, "# HELP bench_metric A synthetic gauge.\n# TYPE bench_metric gauge\n");
  for (size_t i = 0; i < series; i++)
    sb_printf(&body, "bench_metric{series=\"s%zu\",group=\"g%zu\",kind=\"synthetic\"} %zu.5\n", i, i % 10, i);
  sb_t resp = {0};
  sb_printf(&resp,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
            "%zu\r\nConnection: close\r\n\r\n",
            body.len);
  sb_append(&resp, body.buf, body.len);
  sb_free(&body);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1024)) return -1;
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  all->port = ntohs(a.sin_port);
  for (int i = 0; i < SERVER_THREADS; i++) {
    server_t *s = &all->s[i];
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->resp = resp.buf;
    s->resp_len = resp.len;
    pthread_create(&s->th, NULL, serve, s);
  }
  return 0;
}

static long long servers_cpu_ns(servers_t *all) {
  long long t = 0;
  for (int i = 0; i < SERVER_THREADS; i++)
    t += atomic_load(&all->s[i].cpu_ns);
  return t;
}

static long long servers_requests(servers_t *all) {
  long long t = 0;
  for (int i = 0; i < SERVER_THREADS; i++)
    t += atomic_load(&all->s[i].requests);
  return t;
}

/* ---- sinks ------------------------------------------------------------------------------ */

typedef struct counting {
  atomic_ullong samples, batches;
  tsdb_t *db;
} counting_t;

static int count_sink(void *ctx, const tsdb_batch_t *b) {
  counting_t *c = ctx;
  atomic_fetch_add(&c->samples, tsdb_batch_sample_count(b));
  atomic_fetch_add(&c->batches, 1);
  if (c->db) return tsdb_append(c->db, "default", b, NULL);
  return 0;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* ---- phases ----------------------------------------------------------------------------- */

static void bench_host(void) {
  collect_host_t *h;
  char err[256];
  if (collect_host_new(NULL, &h, err, sizeof err)) {
    printf("host collector: %s\n", err);
    return;
  }
  tsdb_batch_t *b = tsdb_batch_new();
  const int rounds = 200;
  double c0 = cpu_seconds();
  int64_t t0 = md_mono_ns();
  size_t series = 0;
  for (int i = 0; i < rounds; i++) {
    tsdb_batch_reset(b);
    collect_host_gather(h, b, md_now_ms(), NULL);
    series = tsdb_batch_series_count(b);
  }
  double wall = (double)(md_mono_ns() - t0) / 1e9, cpu = cpu_seconds() - c0;
  printf(
      "host collector: %zu series/round, %.3f ms wall, %.3f ms CPU per round; at 15 s: %.4f %% of one core\n",
      series, wall / rounds * 1e3, cpu / rounds * 1e3, cpu / rounds / 15.0 * 100.0);
  tsdb_batch_free(b);
  collect_host_free(h);
}

static int bench_scrape(size_t targets, size_t series, int seconds, int interval_s, bool use_tsdb) {
  servers_t *srv = calloc(1, sizeof *srv);
  if (!srv || servers_start(srv, series)) {
    fprintf(stderr, "cannot start the synthetic server\n");
    return 1;
  }
  counting_t cnt = {0};
  char tmpl[] = "/tmp/bench_scrape.XXXXXX";
  char *dir = NULL;
  if (use_tsdb) {
    dir = mkdtemp(tmpl);
    tsdb_options_t o;
    tsdb_options_default(&o);
    char err[256];
    if (!dir || tsdb_open(dir, &o, &cnt.db, err, sizeof err)) {
      fprintf(stderr, "tsdb_open: %s\n", dir ? err : "mkdtemp failed");
      return 1;
    }
  }
  /* One job, one static group per target (distinct label t). */
  json_t *groups = json_array();
  char addr[64], tl[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", srv->port);
  for (size_t i = 0; i < targets; i++) {
    snprintf(tl, sizeof tl, "%zu", i);
    json_array_append_new(groups, json_pack("{s:[s],s:{s:s}}", "targets", addr, "labels", "t", tl));
  }
  char iv[16];
  snprintf(iv, sizeof iv, "%ds", interval_s);
  char to[16];
  snprintf(to, sizeof to, "%ds", interval_s < 10 ? interval_s : 10);
  json_t *cfg = json_pack("[{s:s,s:s,s:s,s:o}]", "job_name", "bench", "scrape_interval", iv, "scrape_timeout",
                          to, "static_configs", groups);
  scrape_options_t opt;
  scrape_options_default(&opt);
  scrape_manager_t *m;
  char err[512];
  if (scrape_manager_new(&opt, cfg, count_sink, &cnt, &m, err, sizeof err)) {
    fprintf(stderr, "scrape_manager_new: %s\n", err);
    return 1;
  }
  double c0 = cpu_seconds();
  long long s0 = servers_cpu_ns(srv);
  int64_t t0 = md_mono_ns();
  scrape_manager_start(m, err, sizeof err);
  sleep((unsigned)seconds);
  double wall = (double)(md_mono_ns() - t0) / 1e9;
  double cpu = cpu_seconds() - c0;
  scrape_stats_t st;
  scrape_manager_stats(m, &st);
  unsigned long long samples = atomic_load(&cnt.samples);
  scrape_manager_free(m);
  /* Server threads report their CPU after each connection. */
  usleep(200 * 1000);
  double server_cpu = (double)(servers_cpu_ns(srv) - s0) / 1e9;
  double scraper_cpu = cpu - server_cpu;
  printf(
      "scrape [%s]: %zu targets x %zu series every %d s for %.1f s: %llu scrapes (%llu failed), %llu samples "
      "(%.0f/s); server requests %lld\n",
      use_tsdb ? "tsdb" : "sink", targets, series, interval_s, wall, (unsigned long long)st.scrapes,
      (unsigned long long)st.scrape_failures, samples, samples / wall, servers_requests(srv));
  printf("scrape [%s]: CPU %.2f s total, synthetic server %.2f s, scraper %.2f s = %.3f cores (%.1f %% of "
         "this %ld-core "
         "machine); %.2f us CPU per sample\n",
         use_tsdb ? "tsdb" : "sink", cpu, server_cpu, scraper_cpu, scraper_cpu / wall,
         scraper_cpu / wall / (double)sysconf(_SC_NPROCESSORS_ONLN) * 100.0, sysconf(_SC_NPROCESSORS_ONLN),
         samples ? scraper_cpu / (double)samples * 1e6 : 0.0);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("scrape [%s]: max RSS %.1f MiB\n", use_tsdb ? "tsdb" : "sink", ru.ru_maxrss / 1024.0);
  json_decref(cfg);
  if (cnt.db) tsdb_close(cnt.db);
  if (dir) md_rm_rf(dir);
  for (int i = 0; i < SERVER_THREADS; i++)
    atomic_store(&srv->s[i].stop, true);
  shutdown(srv->s[0].fd, SHUT_RDWR);
  close(srv->s[0].fd);
  /* Server threads may sit in accept() on the closed socket; they are left to exit with
   * the process (a benchmark, not a library). */
  return 0;
}

int main(int argc, char **argv) {
  size_t targets = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
  size_t series = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
  int seconds = argc > 3 ? atoi(argv[3]) : 35;
  int interval = argc > 4 ? atoi(argv[4]) : 15;
  const char *mode = argc > 5 ? argv[5] : "both";
  if (!targets || !series || seconds <= 0 || interval <= 0) {
    fprintf(stderr, "usage: bench_scrape [targets] [series] [seconds] [interval_s] [sink|tsdb|both]\n");
    return 2;
  }
  log_set_level(LOG_WARN);
  bench_host();
  int rc = 0;
  if (strcmp(mode, "tsdb") != 0) rc |= bench_scrape(targets, series, seconds, interval, false);
  if (strcmp(mode, "sink") != 0) rc |= bench_scrape(targets, series, seconds, interval, true);
  return rc;
}
