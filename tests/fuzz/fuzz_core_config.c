/* Fuzz target: YAML → JSON conversion and the whole configuration loader on arbitrary
 * bytes. Must never crash, leak, or accept what it then cannot free. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    log_set_level(LOG_ERROR);
    quiet = 1;
  }
  char err[512];
  json_t *j = NULL;
  if (config_yaml_to_json((const char *)data, size, &j, err, sizeof err) == 0) json_decref(j);
  config_source_t src = {.yaml = (const char *)data, .yaml_len = size};
  config_t *c = NULL;
  if (config_load(&src, &c, err, sizeof err) == 0) {
    /* touch what consumers read */
    volatile size_t n = strlen(c->server.listen) + c->server.n_auth_keys + c->aggregation.n_types;
    (void)n;
    config_free(c);
  }
  /* the same bytes as a size and as a flag override */
  uint64_t b;
  config_parse_size((const char *)data, size, &b);
  if (size < 512) {
    char ov[600] = "server.max_body_bytes=";
    memcpy(ov + strlen(ov), data, size);
    ov[sizeof ov - 1] = 0;
    if (!memchr(data, 0, size)) {
      const char *o[] = {ov};
      config_source_t s2 = {.overrides = o, .n_overrides = 1};
      if (config_load(&s2, &c, err, sizeof err) == 0) config_free(c);
    }
  }
  return 0;
}
