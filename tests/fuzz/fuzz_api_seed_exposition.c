/*
 * Fuzz target: the seed API's selector parsing and its filter over text expositions
 * (seed_parse_selector, seed_filter_exposition, seed_selector_matches in src/api/seed.c).
 * Input: a selector on the first line, then an exposition text.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/seed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  const char *nl = memchr(p, '\n', size);
  size_t sl = nl ? (size_t)(nl - p) : size;
  const char *text = nl ? nl + 1 : p + size;
  size_t tl = size - (size_t)(text - p);
  arena_t *a = arena_new(0);
  if (!a) return 0;
  seed_selector_t sel;
  char err[256];
  size_t nsel = seed_parse_selector(p, sl, a, &sel, err, sizeof err) == 0 ? 1 : 0;
  sb_t out = {0};
  json_t *names = json_object();
  size_t kept = seed_filter_exposition(text, tl, &sel, nsel, &out, names);
  /* unfiltered, the copy keeps every sample line */
  sb_t all = {0};
  size_t kept_all = seed_filter_exposition(text, tl, NULL, 0, &all, NULL);
  if (kept > kept_all) __builtin_trap();
  sb_free(&out);
  sb_free(&all);
  json_decref(names);
  seed_selector_release(&sel, nsel);
  arena_free(a);
  return 0;
}
