/* GPU collector through the real dlopen path, against the fake NVML built by
 * tests/fakenvml: normal values, missing library, init failure, missing entry points (old
 * driver), NVML errors, and a GPU that disappears and comes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch_util.h"
#include "collect/collect.h"
#include "core/core.h"

static char full_lib[4096], old_lib[4096];

static void clear_env(void) {
  unsetenv("FAKENVML_COUNT");
  unsetenv("FAKENVML_INIT_ERROR");
  unsetenv("FAKENVML_FAIL");
  unsetenv("FAKENVML_LOST");
  unsetenv("FAKENVML_TEMP");
  unsetenv("FAKENVML_PROCS");
}

static collect_gpu_t *open_gpu(const char *lib) {
  collect_gpu_options_t opt;
  collect_gpu_options_default(&opt);
  opt.library = lib;
  opt.instance = "gpuhost";
  collect_gpu_t *g = NULL;
  char err[256] = "";
  int rc = collect_gpu_new(&opt, &g, err, sizeof err);
  if (rc) fprintf(stderr, "collect_gpu_new: %s\n", err);
  assert_int_equal(rc, 0);
  return g;
}

static void test_normal_values(void **state) {
  clear_env();
  setenv("FAKENVML_TEMP", "70", 1);
  collect_gpu_t *g = open_gpu(full_lib);
  assert_int_equal(collect_gpu_device_count(g), 2);
  assert_string_equal(collect_gpu_driver_version(g), "550.54.15-fake");
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(collect_gpu_gather(g, b, 5000), 0);
  assert_false(bu_has_duplicates(b));
  double v = 0;
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_GPU_TEMP", "gpu", "1", NULL), 1);
  assert_true(v == 71);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_GPU_UTIL", "gpu", "0", NULL), 1);
  assert_true(v == 50);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_MEM_COPY_UTIL", "gpu", "1", NULL), 1);
  assert_true(v == 21);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_FB_TOTAL", "gpu", "0", NULL), 1);
  assert_true(v == 81920); /* MiB */
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_FB_USED", "gpu", "1", NULL), 1);
  assert_true(v == 2048);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_FB_FREE", "gpu", "1", NULL), 1);
  assert_true(v == 81920 - 2048);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_POWER_USAGE", "gpu", "1", NULL), 1);
  assert_true(v == 251.0); /* mW -> W */
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_POWER_MGMT_LIMIT", "gpu", "0", NULL), 1);
  assert_true(v == 700.0);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "gpu", "1", NULL), 1);
  assert_true(v == 123456790.0);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_SM_CLOCK", "gpu", "0", NULL), 1);
  assert_true(v == 1980);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_MEM_CLOCK", "gpu", "0", NULL), 1);
  assert_true(v == 2619);
  assert_int_equal(bu_find(b, &v, "gpu_graphics_clock_mhz", "gpu", "1", NULL), 1);
  assert_true(v == 1980);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_VIDEO_CLOCK", "gpu", "1", NULL), 1);
  assert_true(v == 1755);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_FAN_SPEED", "gpu", "1", NULL), 1);
  assert_true(v == 31);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "gpu", "1", NULL), 1);
  assert_true(v == 2000);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "gpu", "1", NULL), 1);
  assert_true(v == 4000);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "gpu", "1", NULL), 1);
  assert_true(v == 4);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "gpu", "1", NULL), 1);
  assert_true(v == 1);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "gpu", "1", NULL), 1);
  assert_true(v == 101);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "gpu", "0", NULL), 1);
  assert_true(v == 4);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_PSTATE", "gpu", "1", NULL), 1);
  assert_true(v == 1);
  assert_int_equal(bu_find(b, &v, "gpu_process_memory_used_bytes", "gpu", "1", "pid", "4010", NULL), 1);
  assert_true(v == 512.0 * 1024 * 1024);
  assert_int_equal(bu_find(b, &v, "DCGM_FI_DEV_COMPUTE_PIDS", "gpu", "0", NULL), 1);
  assert_true(v == 1);

  /* DCGM-exporter labels plus job/instance. */
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", "gpu", "0", "UUID",
                           "GPU-fake0000-0000-0000-0000-000000000000", "modelName",
                           "NVIDIA Fake H100 80GB HBM3", "Hostname", "gpuhost", "device", "nvidia0",
                           "pci_bus_id", "00000000:10:00.0", "job", "gpu", "instance", "gpuhost", NULL),
                   1);
  assert_int_equal(collect_gpu_errors(g), 0);

  /* More processes than the first buffer guess: still reported. */
  setenv("FAKENVML_PROCS", "3", 1);
  tsdb_batch_reset(b);
  assert_int_equal(collect_gpu_gather(g, b, 10000), 0);
  assert_int_equal(bu_find(b, NULL, "gpu_process_memory_used_bytes", "gpu", "0", NULL), 3);
  tsdb_batch_free(b);
  collect_gpu_free(g);
  clear_env();
}

static void test_missing_library(void **state) {
  clear_env();
  collect_gpu_options_t opt;
  collect_gpu_options_default(&opt);
  opt.library = "/nonexistent/libnvidia-ml.so.1";
  collect_gpu_t *g = NULL;
  char err[256] = "";
  assert_int_equal(collect_gpu_new(&opt, &g, err, sizeof err), MD_ENOTFOUND);
  assert_null(g);
  assert_non_null(strstr(err, "libnvidia-ml.so.1"));
}

static void test_init_failure(void **state) {
  clear_env();
  setenv("FAKENVML_INIT_ERROR", "9", 1);
  collect_gpu_options_t opt;
  collect_gpu_options_default(&opt);
  opt.library = full_lib;
  collect_gpu_t *g = NULL;
  char err[256] = "";
  assert_int_equal(collect_gpu_new(&opt, &g, err, sizeof err), MD_ENOTFOUND);
  assert_non_null(strstr(err, "Driver Not Loaded"));
  /* A driver but no GPU: off as well. */
  clear_env();
  setenv("FAKENVML_COUNT", "0", 1);
  assert_int_equal(collect_gpu_new(&opt, &g, err, sizeof err), MD_ENOTFOUND);
  assert_non_null(strstr(err, "no NVIDIA GPU"));
  clear_env();
}

static void test_old_driver_missing_functions(void **state) {
  clear_env();
  collect_gpu_t *g = open_gpu(old_lib);
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(collect_gpu_gather(g, b, 5000), 0);
  /* Present in the old library: */
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", NULL), 2);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_FB_USED", NULL), 2);
  /* The legacy process entry point with its smaller struct. */
  double v = 0;
  assert_int_equal(bu_find(b, &v, "gpu_process_memory_used_bytes", "gpu", "1", "pid", "4010", NULL), 1);
  assert_true(v == 512.0 * 1024 * 1024);
  /* Absent: skipped without errors. */
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", NULL), 0);
  assert_null(bu_label(b, "DCGM_FI_DEV_GPU_TEMP", "pci_bus_id"));
  assert_int_equal(collect_gpu_errors(g), 0);
  tsdb_batch_free(b);
  collect_gpu_free(g);
}

static void test_nvml_errors(void **state) {
  clear_env();
  collect_gpu_t *g = open_gpu(full_lib);
  tsdb_batch_t *b = tsdb_batch_new();
  /* Not supported: skipped quietly. Unknown error: skipped and counted, once per GPU. */
  setenv("FAKENVML_FAIL", "nvmlDeviceGetFanSpeed:3,nvmlDeviceGetTemperature:999", 1);
  assert_int_equal(collect_gpu_gather(g, b, 5000), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_FAN_SPEED", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_UTIL", NULL), 2);
  assert_int_equal(collect_gpu_errors(g), 2);

  /* Device count failing: a counted error, an empty round, no crash. */
  setenv("FAKENVML_FAIL", "nvmlDeviceGetCount:999", 1);
  tsdb_batch_reset(b);
  assert_int_equal(collect_gpu_gather(g, b, 10000), 0);
  assert_int_equal(tsdb_batch_series_count(b), 0);
  assert_int_equal(collect_gpu_errors(g), 3);
  clear_env();
  tsdb_batch_free(b);
  collect_gpu_free(g);
}

static void test_gpu_disappears(void **state) {
  clear_env();
  collect_gpu_t *g = open_gpu(full_lib);
  tsdb_batch_t *b = tsdb_batch_new();
  setenv("FAKENVML_LOST", "1", 1);
  assert_int_equal(collect_gpu_gather(g, b, 5000), 0);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", "gpu", "0", NULL), 1);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", "gpu", "1", NULL), 0);
  assert_int_equal(collect_gpu_errors(g), 1);
  /* Only GPU 0's series are in the batch. */
  size_t gpu1 = 0;
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    for (size_t j = 0; j < nl; j++)
      if (strcmp(ls[j].name, "gpu") == 0 && strcmp(ls[j].value, "1") == 0) gpu1++;
  }
  assert_int_equal(gpu1, 0);

  /* The GPU falls off the bus entirely: count drops to 1. Then it comes back. */
  unsetenv("FAKENVML_LOST");
  setenv("FAKENVML_COUNT", "1", 1);
  tsdb_batch_reset(b);
  assert_int_equal(collect_gpu_gather(g, b, 10000), 0);
  assert_int_equal(collect_gpu_device_count(g), 1);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", NULL), 1);
  unsetenv("FAKENVML_COUNT");
  tsdb_batch_reset(b);
  assert_int_equal(collect_gpu_gather(g, b, 15000), 0);
  assert_int_equal(collect_gpu_device_count(g), 2);
  assert_int_equal(bu_find(b, NULL, "DCGM_FI_DEV_GPU_TEMP", "gpu", "1", NULL), 1);
  assert_int_equal(collect_gpu_errors(g), 1);
  tsdb_batch_free(b);
  collect_gpu_free(g);
}

int main(void) {
  const char *bd = getenv("BUILD_DIR");
  snprintf(full_lib, sizeof full_lib, "%s/tests/fakenvml/libnvidia-ml.so.1", bd ? bd : ".");
  snprintf(old_lib, sizeof old_lib, "%s/tests/fakenvml/old/libnvidia-ml.so.1", bd ? bd : ".");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_normal_values), cmocka_unit_test(test_missing_library),
      cmocka_unit_test(test_init_failure),  cmocka_unit_test(test_old_driver_missing_functions),
      cmocka_unit_test(test_nvml_errors),   cmocka_unit_test(test_gpu_disappears),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
