/* Fuzzes relabel config parsing (JSON as the config loader hands it over) and, when a config
 * parses, applies it to a small label set: neither may crash, leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "scrape/scrape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (!j) return 0;
  scrape_relabel_t *r = NULL;
  char err[256];
  if (scrape_relabel_parse(j, "relabel_configs", &r, err, sizeof err) == 0) {
    scrape_labels_t *ls = scrape_labels_new();
    if (ls) {
      scrape_labels_set(ls, "__address__", "localhost:9100");
      scrape_labels_set(ls, "__name__", "node_cpu_seconds_total");
      scrape_labels_set(ls, "__meta_zone", "eu-1");
      scrape_labels_set(ls, "job", "node");
      scrape_labels_set(ls, "a", "FoO;bar\n$1");
      (void)scrape_relabel_apply(r, ls);
      scrape_labels_free(ls);
    }
    scrape_relabel_free(r);
  }
  json_decref(j);
  return 0;
}
