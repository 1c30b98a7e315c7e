/*
 * index — series identity and the in-memory inverted index of the head (private to src/tsdb).
 *
 *  - symtab_t: interned strings (label names and values, tenant names). A symbol is a uint32
 *    id; its bytes never move and live until the table is freed, so readers resolve ids
 *    without a lock (pages of pointers are published before any series that uses them).
 *  - tindex_t: one tenant's index: label-set hash → series (open addressing), postings
 *    (name → value → ascending series refs) and, per name, the list of its values.
 *    Matchers (=, !=, =~, !~) resolve to a sorted ref list with Prometheus semantics: a
 *    matcher that matches "" also matches series lacking the label.
 *
 * The index stores opaque series pointers and asks the head for a series' ref/labels/hash
 * through the idx_series_t header every series starts with.
 *
 * Threading: symtab_intern takes the table's mutex; symtab_str is lock-free. A tindex_t is
 * protected by its tenant's rwlock, held by the caller (read for lookups and matching,
 * write for inserts and rebuilds).
 */
#ifndef METRICSD_TSDB_INDEX_H
#define METRICSD_TSDB_INDEX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsdb.h"

/* ---- symbols ---------------------------------------------------------------------- */

typedef struct symtab symtab_t;

symtab_t *symtab_new(void);
void symtab_free(symtab_t *t);
/* Returns the id of the string s[0..n) (interning it), or UINT32_MAX on OOM. */
uint32_t symtab_intern(symtab_t *t, const char *s, size_t n);
/* Looks s up without interning; UINT32_MAX when absent. */
uint32_t symtab_find(symtab_t *t, const char *s, size_t n);
/* The NUL-terminated string of id (valid until symtab_free). */
const char *symtab_str(const symtab_t *t, uint32_t id);
size_t symtab_bytes(const symtab_t *t);

/* ---- series identity ------------------------------------------------------------------ */

/* The first fields of every head series; the index only reads these. Labels are pairs of
 * symbol ids (name, value) sorted by name string. */
typedef struct idx_series {
  uint64_t hash;    /* label-set hash */
  uint64_t hash2;   /* second, independent label-set hash (see tindex_lookup) */
  uint32_t ref;     /* global series ref, ascending in creation order */
  uint16_t tenant;  /* tenant number */
  uint16_t nlabels;
  uint32_t *labels; /* 2 * nlabels symbol ids */
} idx_series_t;

/* Two independent 64-bit hashes of a sorted label set given as strings (what a batch holds). */
typedef struct lhash {
  uint64_t h1, h2;
} lhash_t;
lhash_t labels_hash(const tsdb_label_t *ls, size_t n);
/* Byte lengths of one label's name and value (without the NUL). */
typedef struct label_lens {
  uint32_t name, value;
} label_lens_t;
/* The same hash when the byte lengths are known (no strlen): lens[k] belongs to ls[k]. */
lhash_t labels_hash_len(const tsdb_label_t *ls, const label_lens_t *lens, size_t n);
/* Whether the series' labels equal ls (strings). */
bool idx_series_equal(const symtab_t *st, const idx_series_t *s, const tsdb_label_t *ls, size_t n);
/* Compares two series' label sets by strings, Prometheus order (name, value, pairwise). */
int idx_series_cmp(const symtab_t *st, const idx_series_t *a, const idx_series_t *b);
/* The same against labels given as strings. */
int labels_cmp(const tsdb_label_t *a, size_t na, const tsdb_label_t *b, size_t nb);

/* ---- sorted ref lists -------------------------------------------------------------------- */

typedef struct reflist {
  uint32_t *refs;
  size_t n, cap;
} reflist_t;

void reflist_free(reflist_t *l);
int reflist_push(reflist_t *l, uint32_t ref);
void reflist_sort_unique(reflist_t *l);
/* out = a ∩ b / a \ b (out may alias a). */
int reflist_intersect(reflist_t *out, const reflist_t *a, const reflist_t *b);
int reflist_subtract(reflist_t *out, const reflist_t *a, const reflist_t *b);

/* ---- one tenant's index ---------------------------------------------------------------- */

typedef struct tindex tindex_t;

tindex_t *tindex_new(void);
void tindex_free(tindex_t *x);
/* Finds the series with labels ls (sorted) and hashes h, or NULL. exact: compare the label
 * strings; otherwise both 64-bit hashes must match (the append fast path: comparing strings
 * would cost a cache miss per label; two label sets of one tenant colliding on 128 bits is
 * ~n²/2^129 likely, and maps are per tenant, so a crafted collision only affects its author).
 * Series creation always uses exact. */
idx_series_t *tindex_lookup(const tindex_t *x, const symtab_t *st, lhash_t h, const tsdb_label_t *ls,
                            size_t n, bool exact);
/* tindex_lookup (not exact) for n label sets at once, given their hashes: probes are
 * software-pipelined with prefetches so the cache misses of a batch overlap. */
void tindex_lookup_many(const tindex_t *x, const lhash_t *h, size_t n, idx_series_t **out);
/* Adds a series (its ref must be larger than every ref added before, so postings stay
 * sorted by appending). MD_ENOMEM on failure (the index is then unchanged for lookups). */
int tindex_add(tindex_t *x, idx_series_t *s);
/* Forgets every series; tindex_add them again to rebuild (series garbage collection). */
void tindex_clear(tindex_t *x);
size_t tindex_series_count(const tindex_t *x);
/* All series in ref order (valid while the lock is held). */
idx_series_t *const *tindex_all(const tindex_t *x, size_t *n);
/* Series by ref within this tenant (NULL if absent). */
idx_series_t *tindex_by_ref(const tindex_t *x, uint32_t ref);

/* A matcher compiled against the symbol table (regexes compiled once per query). */
typedef struct idx_matcher {
  tsdb_match_type_t type;
  const char *name, *value;
  struct core_regex *re; /* RE / NRE */
  bool matches_empty;
} idx_matcher_t;

int idx_matchers_compile(const tsdb_matcher_t *m, size_t nm, idx_matcher_t **out, char *err, size_t errlen);
void idx_matchers_free(idx_matcher_t *m, size_t nm);
bool idx_matcher_match(const idx_matcher_t *m, const char *s, size_t n);

/* Resolves matchers to the ascending refs of matching series. */
int tindex_select(const tindex_t *x, const symtab_t *st, const idx_matcher_t *m, size_t nm, reflist_t *out);

/* Label names (each once, as symbol ids, unordered) / values of one name. */
int tindex_names(const tindex_t *x, uint32_t **ids, size_t *n);
int tindex_values(const tindex_t *x, uint32_t name, uint32_t **ids, size_t *n);
/* Number of series with name=value (postings length). */
size_t tindex_postings_len(const tindex_t *x, uint32_t name, uint32_t value);
/* Approximate bytes held by the index. */
size_t tindex_bytes(const tindex_t *x);

#endif
