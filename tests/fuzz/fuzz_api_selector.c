/*
 * Fuzz target: the Prometheus API's series-selector parser (api_parse_selector in
 * src/api/params.c, used for every match[] parameter). Input: one selector.
 * Property: a selector that parses is printed back in canonical form
 * ({"name"="value",...} with every value escaped) and must parse again to the same matchers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/params.h"

static const char *op_text(tsdb_match_type_t t) {
  switch (t) {
  case TSDB_MATCH_EQ: return "=";
  case TSDB_MATCH_NEQ: return "!=";
  case TSDB_MATCH_RE: return "=~";
  default: return "!~";
  }
}

static void put_quoted(sb_t *b, const char *s) {
  sb_putc(b, '"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') sb_putc(b, '\\');
    if (*s == '\n') {
      sb_puts(b, "\\n");
      continue;
    }
    sb_putc(b, *s);
  }
  sb_putc(b, '"');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0; /* match[] values arrive NUL-terminated from the HTTP layer */
  arena_t *a = arena_new(0);
  if (!a) {
    free(s);
    return 0;
  }
  api_selector_t sel, again;
  char err[512];
  if (api_parse_selector(a, s, &sel, err, sizeof err) == 0) {
    if (sel.n == 0) __builtin_trap();
    sb_t b = {0};
    sb_putc(&b, '{');
    for (size_t i = 0; i < sel.n; i++) {
      if (!sel.m[i].name || !sel.m[i].value) __builtin_trap();
      if (i) sb_putc(&b, ',');
      put_quoted(&b, sel.m[i].name);
      sb_puts(&b, op_text(sel.m[i].type));
      put_quoted(&b, sel.m[i].value);
    }
    sb_putc(&b, '}');
    if (api_parse_selector(a, b.buf, &again, err, sizeof err) != 0 || again.n != sel.n) __builtin_trap();
    for (size_t i = 0; i < sel.n; i++)
      if (again.m[i].type != sel.m[i].type || strcmp(again.m[i].name, sel.m[i].name) ||
          strcmp(again.m[i].value, sel.m[i].value))
        __builtin_trap();
    sb_free(&b);
  }
  arena_free(a);
  free(s);
  return 0;
}
