/* collect_start/collect_stop: threads gather on their interval into the sink; the GPU
 * collector is off with a status when NVML is absent and on with the fake library. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch_util.h"
#include "collect/collect.h"
#include "core/core.h"

static char fixture[4096], full_lib[4096];

typedef struct {
  pthread_mutex_t mu;
  int host_batches, gpu_batches;
  size_t samples;
  int64_t last_host_ts;
  bool bad_ts;
} sink_t;

static int sink(void *ctx, const tsdb_batch_t *b) {
  sink_t *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->samples += tsdb_batch_sample_count(b);
  if (bu_find(b, NULL, "node_load1", NULL)) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, 0, &ls, &nl, &ss, &ns);
    if (s->host_batches > 0 && ss[0].ts <= s->last_host_ts) s->bad_ts = true;
    s->last_host_ts = ss[0].ts;
    s->host_batches++;
  }
  if (bu_count_prefix(b, "DCGM_FI_DEV_GPU_TEMP")) s->gpu_batches++;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static void test_run_with_fake_gpu(void **state) {
  collect_options_t opt;
  collect_options_default(&opt);
  opt.host.root = fixture;
  opt.host.interval_ms = 100;
  opt.gpu.library = full_lib;
  opt.gpu.interval_ms = 100;
  sink_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
  collect_t *c = NULL;
  char err[256];
  assert_int_equal(collect_start(&opt, sink, &s, &c, err, sizeof err), 0);
  assert_true(collect_gpu_active(c));
  /* Rounds every 100 ms; a loaded machine may delay some: wait for three of each. */
  for (int waited = 0; waited < 5000; waited += 50) {
    pthread_mutex_lock(&s.mu);
    bool enough = s.host_batches >= 3 && s.gpu_batches >= 3;
    pthread_mutex_unlock(&s.mu);
    if (enough) break;
    usleep(50 * 1000);
  }
  char status[256];
  collect_gpu_status(c, status, sizeof status);
  assert_non_null(strstr(status, "ok (2 GPUs"));
  collect_stats_t st;
  collect_stats(c, &st);
  collect_stop(c);
  assert_true(s.host_batches >= 3);
  assert_true(s.gpu_batches >= 3);
  assert_false(s.bad_ts);
  assert_true(st.host_rounds >= 3 && st.gpu_rounds >= 3);
  assert_int_equal(st.host_errors, 0);
  assert_int_equal(st.gpus, 2);
  assert_true(st.host_samples > 100);
}

static void test_run_without_gpu(void **state) {
  collect_options_t opt;
  collect_options_default(&opt);
  opt.host.root = fixture;
  opt.host.interval_ms = 100;
  opt.gpu.library = "/nonexistent/libnvidia-ml.so.1";
  sink_t s = {.mu = PTHREAD_MUTEX_INITIALIZER};
  collect_t *c = NULL;
  char err[256];
  assert_int_equal(collect_start(&opt, sink, &s, &c, err, sizeof err), 0);
  assert_false(collect_gpu_active(c));
  char status[256];
  collect_gpu_status(c, status, sizeof status);
  assert_true(strncmp(status, "off: ", 5) == 0);
  for (int waited = 0; waited < 5000; waited += 50) {
    pthread_mutex_lock(&s.mu);
    bool enough = s.host_batches >= 1;
    pthread_mutex_unlock(&s.mu);
    if (enough) break;
    usleep(50 * 1000);
  }
  collect_stop(c);
  assert_true(s.host_batches >= 1);
  assert_int_equal(s.gpu_batches, 0);

  /* Both off: "disabled"; bad interval: EINVAL. */
  opt.gpu_enabled = false;
  opt.host_enabled = false;
  assert_int_equal(collect_start(&opt, sink, &s, &c, err, sizeof err), 0);
  collect_gpu_status(c, status, sizeof status);
  assert_string_equal(status, "disabled");
  collect_stop(c);
  opt.host_enabled = true;
  opt.host.interval_ms = 5;
  assert_int_equal(collect_start(&opt, sink, &s, &c, err, sizeof err), MD_EINVAL);
  assert_int_equal(collect_start(&opt, NULL, &s, &c, err, sizeof err), MD_EINVAL);
}

int main(void) {
  const char *src = getenv("SOURCE_DIR"), *bd = getenv("BUILD_DIR");
  snprintf(fixture, sizeof fixture, "%s/tests/fixtures/proc", src ? src : ".");
  snprintf(full_lib, sizeof full_lib, "%s/tests/fakenvml/libnvidia-ml.so.1", bd ? bd : ".");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_with_fake_gpu),
      cmocka_unit_test(test_run_without_gpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
