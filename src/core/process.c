/* process_* self-metrics read from /proc/self at each exposition (Linux). The collector
 * runs on the exposing thread; it only reads procfs and sets gauges/counters, so it needs no
 * state of its own beyond the cached clock tick and page size. */
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct proc_sample {
  double cpu_seconds, start_time, rss_bytes, vsize_bytes, threads;
  bool ok;
} proc_sample_t;

static double boot_time_seconds(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return 0;
  char line[256];
  double bt = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "btime ", 6) == 0) {
      bt = strtod(line + 6, NULL);
      break;
    }
  }
  fclose(f);
  return bt;
}

static proc_sample_t read_stat(void) {
  proc_sample_t s = {0};
  char *buf = NULL;
  size_t len = 0;
  if (md_read_file("/proc/self/stat", &buf, &len) != 0) return s;
  /* The command name (field 2) may contain spaces and parentheses; fields resume after
   * the last ')'. */
  char *p = strrchr(buf, ')');
  if (p) {
    p++;
    unsigned long utime = 0, stime = 0, vsize = 0;
    long threads = 0, rss = 0;
    unsigned long long start = 0;
    /* fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime cutime cstime priority nice num_threads(20) itrealvalue
     * starttime(22) vsize rss */
    int n = sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %ld %*d %llu %lu %ld",
                   &utime, &stime, &threads, &start, &vsize, &rss);
    if (n == 6) {
      double tick = (double)sysconf(_SC_CLK_TCK);
      if (tick <= 0) tick = 100;
      long page = sysconf(_SC_PAGESIZE);
      s.cpu_seconds = (double)(utime + stime) / tick;
      s.start_time = boot_time_seconds() + (double)start / tick;
      s.rss_bytes = (double)rss * (double)(page > 0 ? page : 4096);
      s.vsize_bytes = (double)vsize;
      s.threads = (double)threads;
      s.ok = true;
    }
  }
  free(buf);
  return s;
}

static double count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  double n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

static void process_collect(metrics_registry_t *r, void *ctx) {
  (void)ctx;
  proc_sample_t s = read_stat();
  if (s.ok) {
    metrics_counter_t *cpu = metrics_counter(r, "process_cpu_seconds_total",
                                             "Total user and system CPU time spent in seconds.", NULL);
    /* A counter only goes up: add the difference since the last read. */
    double prev = metrics_counter_get(cpu);
    if (s.cpu_seconds > prev) metrics_counter_add(cpu, s.cpu_seconds - prev);
    metrics_gauge_set(metrics_gauge(r, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL),
                      s.rss_bytes);
    metrics_gauge_set(metrics_gauge(r, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL),
                      s.vsize_bytes);
    metrics_gauge_set(metrics_gauge(r, "process_start_time_seconds",
                                    "Start time of the process since unix epoch in seconds.", NULL),
                      s.start_time);
    metrics_gauge_set(metrics_gauge(r, "process_threads", "Number of OS threads in the process.", NULL), s.threads);
  }
  double fds = count_fds();
  if (fds >= 0)
    metrics_gauge_set(metrics_gauge(r, "process_open_fds", "Number of open file descriptors.", NULL), fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    metrics_gauge_set(metrics_gauge(r, "process_max_fds", "Maximum number of open file descriptors.", NULL),
                      rl.rlim_cur == RLIM_INFINITY ? 1e18 : (double)rl.rlim_cur);
}

int metrics_register_process(metrics_registry_t *r) {
  if (!r) return MD_EINVAL;
  process_collect(r, NULL); /* create the families now so they are listed even if /proc fails later */
  return metrics_add_collector(r, process_collect, NULL);
}
