/*
 * scrape_labels_t: a small sorted label set used by relabeling and target building. Label
 * sets here are short (a few to a few dozen labels), so a sorted array with binary search
 * and memmove beats any hash. Strings are copied into an arena that is reset with the set,
 * which makes per-sample relabeling allocation-free in the steady state.
 *
 * The set also carries the PCRE2 match data its relabel rules use, so one thread that owns
 * a set can match without allocating.
 */
#include "scrape_internal.h"

#include <stdlib.h>
#include <string.h>

scrape_labels_t *scrape_labels_new(void) {
  scrape_labels_t *ls = calloc(1, sizeof *ls);
  if (!ls) return NULL;
  ls->arena = arena_new(4096);
  if (!ls->arena) {
    free(ls);
    return NULL;
  }
  return ls;
}

void scrape_labels_free(scrape_labels_t *ls) {
  if (!ls) return;
  arena_free(ls->arena);
  free(ls->v);
  if (ls->md) pcre2_match_data_free(ls->md);
  sb_free(&ls->tmp);
  sb_free(&ls->tmp2);
  free(ls);
}

void scrape_labels_reset(scrape_labels_t *ls) {
  ls->n = 0;
  arena_reset(ls->arena);
}

/* Index of name, or -(insertion point)-1. */
static long find(const scrape_labels_t *ls, const char *name) {
  size_t lo = 0, hi = ls->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(ls->v[mid].name, name);
    if (c == 0) return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -(long)lo - 1;
}

static int set_raw(scrape_labels_t *ls, const char *name, const char *value) {
  long i = find(ls, name);
  if (!*value) {
    if (i >= 0) {
      memmove(ls->v + i, ls->v + i + 1, (ls->n - (size_t)i - 1) * sizeof *ls->v);
      ls->n--;
    }
    return 0;
  }
  if (i >= 0) {
    ls->v[i].value = value;
    return 0;
  }
  size_t at = (size_t)(-i - 1);
  if (ls->n == ls->cap) {
    size_t nc = ls->cap ? ls->cap * 2 : 16;
    tsdb_label_t *nv = realloc(ls->v, nc * sizeof *nv);
    if (!nv) return MD_ENOMEM;
    ls->v = nv;
    ls->cap = nc;
  }
  memmove(ls->v + at + 1, ls->v + at, (ls->n - at) * sizeof *ls->v);
  ls->v[at] = (tsdb_label_t){name, value};
  ls->n++;
  return 0;
}

int scrape_labels_set_ref(scrape_labels_t *ls, const char *name, const char *value) {
  return set_raw(ls, name, value);
}

int scrape_labels_set(scrape_labels_t *ls, const char *name, const char *value) {
  if (!*value) return set_raw(ls, name, value);
  long i = find(ls, name);
  const char *n = i >= 0 ? ls->v[i].name : arena_strdup(ls->arena, name);
  const char *v = arena_strdup(ls->arena, value);
  if (!n || !v) return MD_ENOMEM;
  return set_raw(ls, n, v);
}

int scrape_labels_setn(scrape_labels_t *ls, const char *name, const char *value, size_t vlen) {
  if (vlen == 0) return set_raw(ls, name, "");
  long i = find(ls, name);
  const char *n = i >= 0 ? ls->v[i].name : arena_strdup(ls->arena, name);
  const char *v = arena_strndup(ls->arena, value, vlen);
  if (!n || !v) return MD_ENOMEM;
  return set_raw(ls, n, v);
}

void scrape_labels_del(scrape_labels_t *ls, const char *name) {
  (void)set_raw(ls, name, "");
}

const char *scrape_labels_get(const scrape_labels_t *ls, const char *name) {
  long i = find(ls, name);
  return i >= 0 ? ls->v[i].value : NULL;
}

const tsdb_label_t *scrape_labels_items(const scrape_labels_t *ls, size_t *n) {
  *n = ls->n;
  return ls->v;
}

int scrape_labels_assign(scrape_labels_t *ls, const tsdb_label_t *labels, size_t n) {
  scrape_labels_reset(ls);
  for (size_t i = 0; i < n; i++) {
    int rc = scrape_labels_set(ls, labels[i].name, labels[i].value);
    if (rc) return rc;
  }
  return 0;
}

/* Assign without copying, for labels that outlive the set's use (a parsed batch). */
int scrape_labels_assign_ref(scrape_labels_t *ls, const tsdb_label_t *labels, size_t n) {
  scrape_labels_reset(ls);
  for (size_t i = 0; i < n; i++) {
    int rc = set_raw(ls, labels[i].name, labels[i].value);
    if (rc) return rc;
  }
  return 0;
}

uint64_t scrape_labels_hash(const tsdb_label_t *l, size_t n) {
  uint64_t h = 0x6d65747269637364ULL;
  for (size_t i = 0; i < n; i++) {
    h = md_hash64(l[i].name, strlen(l[i].name), h);
    h = md_hash64(l[i].value, strlen(l[i].value), h ^ 0xff);
  }
  return h;
}
