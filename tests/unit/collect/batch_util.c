/* Test helpers for reading batches (see batch_util.h). */
#include "batch_util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *get(const tsdb_label_t *ls, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ls[i].name, name) == 0) return ls[i].value;
  return NULL;
}

size_t bu_find(const tsdb_batch_t *b, double *v, const char *name, ...) {
  const char *pairs[32];
  size_t np = 0;
  va_list ap;
  va_start(ap, name);
  const char *p;
  while (np < 32 && (p = va_arg(ap, const char *)))
    pairs[np++] = p;
  va_end(ap);
  size_t found = 0;
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    const char *n = get(ls, nl, "__name__");
    if (!n || strcmp(n, name) != 0) continue;
    bool ok = true;
    for (size_t k = 0; k + 1 < np && ok; k += 2) {
      const char *lv = get(ls, nl, pairs[k]);
      ok = lv && strcmp(lv, pairs[k + 1]) == 0;
    }
    if (!ok) continue;
    if (found++ == 0 && v && ns) *v = ss[ns - 1].v;
  }
  return found;
}

const char *bu_label(const tsdb_batch_t *b, const char *name, const char *label) {
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    const char *n = get(ls, nl, "__name__");
    if (n && strcmp(n, name) == 0) return get(ls, nl, label);
  }
  return NULL;
}

static bool same(const tsdb_label_t *a, size_t na, const tsdb_label_t *b, size_t nb) {
  if (na != nb) return false;
  for (size_t i = 0; i < na; i++)
    if (strcmp(a[i].name, b[i].name) || strcmp(a[i].value, b[i].value)) return false;
  return true;
}

bool bu_has_duplicates(const tsdb_batch_t *b) {
  size_t n = tsdb_batch_series_count(b);
  for (size_t i = 0; i < n; i++) {
    const tsdb_label_t *la;
    const tsdb_sample_t *s;
    size_t nla, ns;
    tsdb_batch_get(b, i, &la, &nla, &s, &ns);
    for (size_t j = i + 1; j < n; j++) {
      const tsdb_label_t *lb;
      size_t nlb;
      tsdb_batch_get(b, j, &lb, &nlb, &s, &ns);
      if (same(la, nla, lb, nlb)) return true;
    }
  }
  return false;
}

size_t bu_count_prefix(const tsdb_batch_t *b, const char *prefix) {
  size_t c = 0, pl = strlen(prefix);
  for (size_t i = 0; i < tsdb_batch_series_count(b); i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    const char *n = get(ls, nl, "__name__");
    if (n && strncmp(n, prefix, pl) == 0) c++;
  }
  return c;
}
