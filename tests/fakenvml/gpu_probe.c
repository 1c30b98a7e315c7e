/*
 * gpu_probe: runs metricsd's GPU collector once and prints what it gathered, one series a
 * line in Prometheus text form — for checking the collector against a real driver.
 *
 *   gpu_probe [library] [rounds]   (default libnvidia-ml.so.1, 1 round)
 *
 * Exit status: 0 collected, 2 NVML unavailable (the reason is printed), 1 other failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collect/collect.h"
#include "core/core.h"

static void print_batch(const tsdb_batch_t *b) {
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    sb_t line = {0};
    const char *name = "";
    for (size_t j = 0; j < nl; j++)
      if (strcmp(ls[j].name, "__name__") == 0) name = ls[j].value;
    sb_puts(&line, name);
    sb_putc(&line, '{');
    bool first = true;
    for (size_t j = 0; j < nl; j++) {
      if (strcmp(ls[j].name, "__name__") == 0) continue;
      if (!first) sb_putc(&line, ',');
      first = false;
      sb_puts(&line, ls[j].name);
      sb_putc(&line, '=');
      sb_json_str(&line, ls[j].value, strlen(ls[j].value));
    }
    sb_puts(&line, "} ");
    for (size_t k = 0; k < ns; k++)
      sb_double(&line, ss[k].v);
    printf("%s\n", line.buf ? line.buf : "");
    sb_free(&line);
  }
}

int main(int argc, char **argv) {
  collect_gpu_options_t opt;
  collect_gpu_options_default(&opt);
  if (argc > 1) opt.library = argv[1];
  int rounds = argc > 2 ? atoi(argv[2]) : 1;
  if (rounds < 1) rounds = 1;
  char err[256];
  collect_gpu_t *g;
  int rc = collect_gpu_new(&opt, &g, err, sizeof err);
  if (rc) {
    printf("# GPU collector off: %s\n", err);
    return 2;
  }
  printf("# driver %s, %u GPU(s)\n", collect_gpu_driver_version(g), collect_gpu_device_count(g));
  tsdb_batch_t *b = tsdb_batch_new();
  if (!b) {
    collect_gpu_free(g);
    return 1;
  }
  for (int r = 0; r < rounds; r++) {
    if (r) sleep(1);
    tsdb_batch_reset(b);
    int64_t t0 = md_mono_ns();
    rc = collect_gpu_gather(g, b, md_now_ms());
    double ms = (double)(md_mono_ns() - t0) / 1e6;
    if (rc) break;
    printf("# round %d: %zu series in %.2f ms, %llu errors so far\n", r + 1, tsdb_batch_series_count(b), ms,
           (unsigned long long)collect_gpu_errors(g));
    print_batch(b);
  }
  tsdb_batch_free(b);
  collect_gpu_free(g);
  return rc ? 1 : 0;
}
