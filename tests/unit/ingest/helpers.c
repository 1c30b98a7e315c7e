#include "helpers.h"
#include "ingest/ingest_int.h"

#include <string.h>

char *dump_batch(const tsdb_batch_t *b) {
  sb_t sb;
  sb_init(&sb);
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *l;
    const tsdb_sample_t *s;
    size_t nl, ns;
    tsdb_batch_get(b, i, &l, &nl, &s, &ns);
    const char *name = "";
    for (size_t k = 0; k < nl; k++)
      if (strcmp(l[k].name, "__name__") == 0) name = l[k].value;
    for (size_t j = 0; j < ns; j++) {
      sb_puts(&sb, name);
      sb_putc(&sb, '{');
      bool first = true;
      for (size_t k = 0; k < nl; k++) {
        if (strcmp(l[k].name, "__name__") == 0) continue;
        if (!first) sb_putc(&sb, ',');
        first = false;
        sb_printf(&sb, "%s=\"%s\"", l[k].name, l[k].value);
      }
      sb_puts(&sb, "} ");
      ingest_format_double(&sb, s[j].v);
      sb_printf(&sb, " @%lld\n", (long long)s[j].ts);
    }
  }
  return sb_steal(&sb);
}
