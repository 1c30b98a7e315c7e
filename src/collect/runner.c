/*
 * Running collectors: one thread per enabled collector, each gathering into its own reusable
 * batch on its interval and handing the batch to the sink.
 *
 * Rounds are aligned to the interval on the wall clock (like Prometheus scrapes), so samples
 * of successive rounds are exactly one interval apart and downsampling buckets line up.
 * Stopping is prompt: threads sleep on a condition variable that collect_stop signals.
 *
 * Threading: `mu` protects `stopping`, the stats and the GPU status string; the collectors
 * themselves are touched only by their own thread.
 */
#include "collect_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct collect {
  collect_sink_fn sink;
  void *ctx;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stopping;
  atomic_bool cancel; /* stopping, readable without mu: cuts a host round's statvfs wait short */
  collect_host_t *host;
  collect_gpu_t *gpu;
  int64_t host_interval, gpu_interval;
  pthread_t host_thread, gpu_thread;
  bool host_running, gpu_running;
  collect_stats_t stats;
  char gpu_status[256];
};

void collect_options_default(collect_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->host_enabled = true;
  collect_host_options_default(&opt->host);
  opt->gpu_enabled = true;
  collect_gpu_options_default(&opt->gpu);
}

/* Sleeps until the wall clock reaches deadline_ms or stop is requested; true = stop. */
static bool wait_until(collect_t *c, int64_t deadline_ms) {
  pthread_mutex_lock(&c->mu);
  while (!c->stopping) {
    int64_t now = md_now_ms();
    if (now >= deadline_ms) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wait = deadline_ms - now;
    ts.tv_sec += wait / 1000;
    ts.tv_nsec += (wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
  }
  bool stop = c->stopping;
  pthread_mutex_unlock(&c->mu);
  return stop;
}

static void *host_main(void *arg) {
  collect_t *c = arg;
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) {
    log_error("host collector: out of memory, stopping");
    return NULL;
  }
  int64_t iv = c->host_interval;
  int64_t next = md_now_ms() / iv * iv + iv;
  /* First round at once so a fresh start has data; then on the interval grid. */
  int64_t ts = md_now_ms();
  for (;;) {
    int64_t t0 = md_mono_ns();
    tsdb_batch_reset(b);
    int part_errors = 0;
    int rc = collect_host_gather(c->host, b, ts, &part_errors);
    int src = rc == 0 ? c->sink(c->ctx, b) : rc;
    double dur = (double)(md_mono_ns() - t0) / 1e9;
    pthread_mutex_lock(&c->mu);
    c->stats.host_rounds++;
    c->stats.host_errors += (uint64_t)part_errors + (rc != 0) + (rc == 0 && src != 0);
    c->stats.host_samples += tsdb_batch_sample_count(b);
    c->stats.host_last_duration_s = dur;
    pthread_mutex_unlock(&c->mu);
    if (wait_until(c, next)) break;
    ts = next;
    int64_t now = md_now_ms();
    next += iv;
    if (next <= now) next = now / iv * iv + iv; /* fell behind (suspend): skip rounds */
  }
  tsdb_batch_free(b);
  return NULL;
}

static void *gpu_main(void *arg) {
  collect_t *c = arg;
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) {
    log_error("GPU collector: out of memory, stopping");
    return NULL;
  }
  int64_t iv = c->gpu_interval;
  int64_t next = md_now_ms() / iv * iv + iv;
  int64_t ts = md_now_ms();
  for (;;) {
    int64_t t0 = md_mono_ns();
    tsdb_batch_reset(b);
    uint64_t before = collect_gpu_errors(c->gpu);
    int rc = collect_gpu_gather(c->gpu, b, ts);
    int src = rc == 0 && tsdb_batch_series_count(b) ? c->sink(c->ctx, b) : rc;
    double dur = (double)(md_mono_ns() - t0) / 1e9;
    pthread_mutex_lock(&c->mu);
    c->stats.gpu_rounds++;
    c->stats.gpu_errors += (collect_gpu_errors(c->gpu) - before) + (src != 0);
    c->stats.gpu_samples += tsdb_batch_sample_count(b);
    c->stats.gpu_last_duration_s = dur;
    c->stats.gpus = collect_gpu_device_count(c->gpu);
    const char *drv = collect_gpu_driver_version(c->gpu);
    snprintf(c->gpu_status, sizeof c->gpu_status, "ok (%u GPU%s%s%s)", c->stats.gpus,
             c->stats.gpus == 1 ? "" : "s", *drv ? ", driver " : "", drv);
    pthread_mutex_unlock(&c->mu);
    if (wait_until(c, next)) break;
    ts = next;
    int64_t now = md_now_ms();
    next += iv;
    if (next <= now) next = now / iv * iv + iv;
  }
  tsdb_batch_free(b);
  return NULL;
}

int collect_start(const collect_options_t *opt, collect_sink_fn sink, void *ctx, collect_t **out, char *err,
                  size_t errlen) {
  collect_options_t def;
  if (!opt) {
    collect_options_default(&def);
    opt = &def;
  }
  if (!sink) return md_error(err, errlen, MD_EINVAL, "collect: no sink");
  if (opt->host_enabled && opt->host.interval_ms < 100)
    return md_error(err, errlen, MD_EINVAL, "host collector interval must be at least 100ms");
  if (opt->gpu_enabled && opt->gpu.interval_ms < 100)
    return md_error(err, errlen, MD_EINVAL, "GPU collector interval must be at least 100ms");
  collect_t *c = calloc(1, sizeof *c);
  if (!c) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  c->sink = sink;
  c->ctx = ctx;
  atomic_init(&c->cancel, false);
  c->host_interval = opt->host.interval_ms;
  c->gpu_interval = opt->gpu.interval_ms;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  snprintf(c->gpu_status, sizeof c->gpu_status, "disabled");
  int rc;
  if (opt->host_enabled) {
    rc = collect_host_new(&opt->host, &c->host, err, errlen);
    if (rc) goto fail;
    collect_host_set_cancel(c->host, &c->cancel);
  }
  if (opt->gpu_enabled) {
    char why[200];
    if (collect_gpu_new(&opt->gpu, &c->gpu, why, sizeof why) != 0) {
      /* The usual case on machines without NVIDIA GPUs: say it once, stay off. */
      log_info("GPU collector off: %s", why);
      snprintf(c->gpu_status, sizeof c->gpu_status, "off: %s", why);
      c->gpu = NULL;
    } else {
      const char *drv = collect_gpu_driver_version(c->gpu);
      unsigned n = collect_gpu_device_count(c->gpu);
      log_info("GPU collector on: %u GPU(s), driver %s", n, *drv ? drv : "unknown");
      snprintf(c->gpu_status, sizeof c->gpu_status, "ok (%u GPU%s%s%s)", n, n == 1 ? "" : "s",
               *drv ? ", driver " : "", drv);
    }
  }
  if (c->host) {
    if (pthread_create(&c->host_thread, NULL, host_main, c) != 0) {
      rc = md_error(err, errlen, MD_ERR, "cannot start the host collector thread");
      goto fail;
    }
    c->host_running = true;
  }
  if (c->gpu) {
    if (pthread_create(&c->gpu_thread, NULL, gpu_main, c) != 0) {
      rc = md_error(err, errlen, MD_ERR, "cannot start the GPU collector thread");
      goto fail;
    }
    c->gpu_running = true;
  }
  *out = c;
  return 0;
fail:
  collect_stop(c);
  return rc;
}

void collect_stop(collect_t *c) {
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  atomic_store(&c->cancel, true);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (c->host_running) pthread_join(c->host_thread, NULL);
  if (c->gpu_running) pthread_join(c->gpu_thread, NULL);
  collect_host_free(c->host);
  collect_gpu_free(c->gpu);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

void collect_stats(collect_t *c, collect_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  *out = c->stats;
  pthread_mutex_unlock(&c->mu);
}

void collect_gpu_status(collect_t *c, char *out, size_t n) {
  if (!n) return;
  if (!c) {
    snprintf(out, n, "disabled");
    return;
  }
  pthread_mutex_lock(&c->mu);
  snprintf(out, n, "%s", c->gpu_status);
  pthread_mutex_unlock(&c->mu);
}

bool collect_gpu_active(collect_t *c) {
  return c && c->gpu_running;
}
