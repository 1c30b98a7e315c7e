/* Fuzzes the scrape configuration parsers with untrusted text. The first byte picks the path:
 *   0: a scrape_configs list as JSON (scrape_config_check: every key, relabel rules, groups);
 *   1: a runtime source as POST /metrics/sources receives it (JSON over the network), added
 *      to a manager that is never started, so targets are built but nothing is fetched;
 *   2: a file_sd file in YAML, checked as one job's static_configs (the same group parser).
 * None may crash, leak or read out of bounds; every error path frees what it took. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/config.h"
#include "scrape/scrape.h"

static int no_sink(void *ctx, const tsdb_batch_t *b) {
  (void)ctx;
  (void)b;
  return 0;
}

static void check_configs(json_t *j) {
  char err[512];
  (void)scrape_config_check(j, NULL, err, sizeof err);
}

static void add_source(json_t *src) {
  scrape_manager_t *m = NULL;
  char err[512], id[80];
  if (scrape_manager_new(NULL, NULL, no_sink, NULL, &m, err, sizeof err) != 0) return;
  if (scrape_source_add(m, src, id, sizeof id, err, sizeof err) == 0) {
    sb_t out = {0};
    (void)scrape_sources_json(m, &out);
    sb_free(&out);
    out = (sb_t){0};
    (void)scrape_targets_json(m, NULL, &out);
    sb_free(&out);
    (void)scrape_source_update(m, id, src, err, sizeof err);
    (void)scrape_source_delete(m, id, err, sizeof err);
  }
  scrape_manager_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 64 * 1024) return 0;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  json_t *j = NULL;
  switch (data[0] % 3) {
  case 0:
    if ((j = json_loadb(text, len, JSON_DECODE_ANY, NULL))) check_configs(j);
    break;
  case 1:
    if ((j = json_loadb(text, len, 0, NULL))) add_source(j);
    break;
  default: {
    char err[256];
    json_t *groups = NULL;
    if (config_yaml_to_json(text, len, &groups, err, sizeof err) != 0 || !groups) break;
    j = json_pack("[{s:s, s:o}]", "job_name", "file_sd", "static_configs", groups);
    if (j) check_configs(j);
    break;
  }
  }
  json_decref(j);
  return 0;
}
