/*
 * index — interned symbols and one tenant's inverted index (see index.h for the contract).
 *
 * Memory is the point of this file: the head keeps every active series' labels here, so a
 * series costs one slot in the label-set hash map, one entry in the ref-ordered `all`
 * array, and 4 bytes in each of its label pairs' postings. A pair that belongs to a single
 * series (instance-unique labels) keeps its ref inline and allocates nothing.
 *
 * Invariants: postings lists are ascending because series are added in ref order (the head
 * assigns refs from one counter; a rebuild re-adds in ref order). Symbol pages never move.
 */
#include "index.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* ---- symbols ----------------------------------------------------------------------- */

#define SYM_PAGE_BITS 16
#define SYM_PAGE (1u << SYM_PAGE_BITS)
#define SYM_MAX_PAGES 4096
#define STR_PAGE (64 * 1024)

typedef struct str_page {
  struct str_page *next;
  size_t used, cap;
  char data[];
} str_page_t;

struct symtab {
  pthread_mutex_t mu;
  const char **pages[SYM_MAX_PAGES]; /* id → string, lock-free reads */
  uint32_t n;                        /* ids handed out */
  uint32_t *slots;                   /* open addressing over ids; UINT32_MAX = empty */
  uint32_t *hashes;                  /* per id, low 32 bits of its hash (rehash without strlen) */
  size_t cap;                        /* slots (power of two) */
  size_t hcap;                       /* hashes capacity */
  str_page_t *strs;                  /* string storage, newest first */
  size_t bytes;
};

symtab_t *symtab_new(void) {
  symtab_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  pthread_mutex_init(&t->mu, NULL);
  t->cap = 1024;
  t->slots = malloc(t->cap * sizeof *t->slots);
  if (!t->slots) {
    free(t);
    return NULL;
  }
  memset(t->slots, 0xff, t->cap * sizeof *t->slots);
  return t;
}

void symtab_free(symtab_t *t) {
  if (!t) return;
  for (size_t i = 0; i < SYM_MAX_PAGES; i++) free((void *)t->pages[i]);
  str_page_t *p = t->strs;
  while (p) {
    str_page_t *nx = p->next;
    free(p);
    p = nx;
  }
  free(t->slots);
  free(t->hashes);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

const char *symtab_str(const symtab_t *t, uint32_t id) {
  return t->pages[id >> SYM_PAGE_BITS][id & (SYM_PAGE - 1)];
}

size_t symtab_bytes(const symtab_t *t) { return t->bytes; }

static uint32_t sym_hash(const char *s, size_t n) { return (uint32_t)md_hash64(s, n, 0x5eed); }

/* Caller holds mu. */
static uint32_t sym_lookup_locked(symtab_t *t, const char *s, size_t n, uint32_t h, size_t *slot) {
  size_t mask = t->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    uint32_t id = t->slots[i];
    if (id == UINT32_MAX) {
      *slot = i;
      return UINT32_MAX;
    }
    if (t->hashes[id] == h) {
      const char *x = symtab_str(t, id);
      if (strncmp(x, s, n) == 0 && x[n] == 0) return id;
    }
  }
}

static char *sym_store(symtab_t *t, const char *s, size_t n) {
  if (!t->strs || t->strs->cap - t->strs->used < n + 1) {
    size_t cap = n + 1 > STR_PAGE / 4 ? n + 1 : STR_PAGE;
    str_page_t *p = malloc(sizeof *p + cap);
    if (!p) return NULL;
    p->used = 0;
    p->cap = cap;
    t->bytes += sizeof *p + cap;
    if (cap != STR_PAGE && t->strs) {
      /* A big string gets its own page behind the current one, which stays open. */
      p->next = t->strs->next;
      t->strs->next = p;
    } else {
      p->next = t->strs;
      t->strs = p;
    }
    char *d = p->data;
    memcpy(d, s, n);
    d[n] = 0;
    p->used = n + 1;
    return d;
  }
  char *d = t->strs->data + t->strs->used;
  memcpy(d, s, n);
  d[n] = 0;
  t->strs->used += n + 1;
  return d;
}

static int sym_grow(symtab_t *t) {
  size_t ncap = t->cap * 2;
  uint32_t *ns = malloc(ncap * sizeof *ns);
  if (!ns) return MD_ENOMEM;
  memset(ns, 0xff, ncap * sizeof *ns);
  for (uint32_t id = 0; id < t->n; id++) {
    size_t i = t->hashes[id] & (ncap - 1);
    while (ns[i] != UINT32_MAX) i = (i + 1) & (ncap - 1);
    ns[i] = id;
  }
  free(t->slots);
  t->slots = ns;
  t->cap = ncap;
  return 0;
}

uint32_t symtab_find(symtab_t *t, const char *s, size_t n) {
  uint32_t h = sym_hash(s, n);
  size_t slot;
  pthread_mutex_lock(&t->mu);
  uint32_t id = sym_lookup_locked(t, s, n, h, &slot);
  pthread_mutex_unlock(&t->mu);
  return id;
}

uint32_t symtab_intern(symtab_t *t, const char *s, size_t n) {
  uint32_t h = sym_hash(s, n);
  size_t slot;
  uint32_t id = UINT32_MAX;
  pthread_mutex_lock(&t->mu);
  id = sym_lookup_locked(t, s, n, h, &slot);
  if (id != UINT32_MAX) goto out;
  if (t->n == SYM_MAX_PAGES * SYM_PAGE - 1) goto out;
  uint32_t nid = t->n;
  if (!t->pages[nid >> SYM_PAGE_BITS]) {
    t->pages[nid >> SYM_PAGE_BITS] = calloc(SYM_PAGE, sizeof(char *));
    if (!t->pages[nid >> SYM_PAGE_BITS]) goto out;
    t->bytes += SYM_PAGE * sizeof(char *);
  }
  if (nid >= t->hcap) {
    size_t nc = t->hcap ? t->hcap * 2 : 1024;
    uint32_t *nh = realloc(t->hashes, nc * sizeof *nh);
    if (!nh) goto out;
    t->bytes += (nc - t->hcap) * sizeof *nh;
    t->hashes = nh;
    t->hcap = nc;
  }
  char *d = sym_store(t, s, n);
  if (!d) goto out;
  t->pages[nid >> SYM_PAGE_BITS][nid & (SYM_PAGE - 1)] = d;
  t->hashes[nid] = h;
  t->slots[slot] = nid;
  t->n++;
  id = nid;
  if (t->n * 2 > t->cap) {
    size_t before = t->cap;
    if (sym_grow(t) == 0) t->bytes += (t->cap - before) * sizeof(uint32_t);
    /* On failure the table stays correct, only fuller; the next intern retries. */
  }
out:
  pthread_mutex_unlock(&t->mu);
  return id;
}

/* ---- series identity ---------------------------------------------------------------- */

/* The append path hashes every series of every batch: a word-at-a-time multiply-mix is
 * several times cheaper than a general hash call per string. Only used in memory (never
 * persisted), so it may change freely. */
static inline uint64_t mum(uint64_t a, uint64_t b) {
#if defined(__x86_64__) && defined(__GNUC__)
  /* The same 64 x 64 -> 128-bit product: gcc 12 at -O3 bounces the __int128 through the
   * stack on every call in the hash loop (4 extra moves per mix). */
  uint64_t lo, hi;
  __asm__("mulq %3" : "=a"(lo), "=d"(hi) : "a"(a), "rm"(b) : "cc");
  return lo ^ hi;
#else
  __extension__ unsigned __int128 r = (unsigned __int128)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
#endif
}

static inline uint64_t le64(uint64_t w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  w = __builtin_bswap64(w);
#endif
  return w;
}

/* Reads the last len (< 8) bytes of a string as a little-endian word, without a call. */
static inline uint64_t tail_word(const char *p, size_t len) {
  const uint8_t *q = (const uint8_t *)p;
  uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < len; i++) w |= (uint64_t)q[i] << (8 * i);
  return w;
#endif
  if (len & 4) {
    uint32_t x;
    memcpy(&x, q, 4);
    w = x;
    q += 4;
  }
  if (len & 2) {
    uint16_t x;
    memcpy(&x, q, 2);
    w |= (uint64_t)x << (8 * (len & 4));
    q += 2;
  }
  if (len & 1) w |= (uint64_t)*q << (8 * (len & 6));
  return w;
}

/* Label-set hash. Each label is hashed as the one byte string name NUL value (the batch
 * stores it so, contiguously): 8-byte little-endian words, the last one zero-padded, each
 * mixed into two lanes with different constants. Before a label, both lanes take in its
 * two byte lengths, so the words of a label set spell out its labels unambiguously (names,
 * values and where each ends) whatever bytes they hold; after it, the tail word closes the
 * label with a final mix. A label costs what one string used to (2 mixes per 8 bytes + 2
 * to close): a set about 20 % less than hashing names and values apart. (Packing the
 * labels' bytes across label boundaries saves mixes but costs more in shifts: measured.) */
#define LH_K1 0x9e3779b97f4a7c15ULL
#define LH_K2 0xc2b2ae3d27d4eb4fULL
#define LH_K3 0xa0761d6478bd642fULL
#define LH_K4 0xe7037ed1a0b428dbULL

typedef struct {
  uint64_t a, b;
} lanes_t;

static inline void lanes_word(lanes_t *h, uint64_t w) {
  h->a = mum(h->a ^ w, LH_K1);
  h->b = mum(h->b ^ w, LH_K2) + w;
}

static inline void lanes_open(lanes_t *h, size_t nlen, size_t vlen) {
  uint64_t tag = (uint64_t)nlen << 32 ^ (uint64_t)vlen;
  h->a ^= tag;
  h->b += tag;
}

static inline void lanes_close(lanes_t *h, uint64_t tail) {
  h->a = mum(h->a ^ tail, LH_K3);
  h->b = mum(h->b ^ tail, LH_K4) + tail;
}

/* One label whose name NUL value lie contiguously at p (len = nlen + 1 + vlen bytes). */
static inline void hash_label_flat(lanes_t *h, const char *p, size_t len, size_t nlen, size_t vlen) {
  uint64_t w;
  size_t r = len & 7;
  const char *end = p + (len - r);
  lanes_open(h, nlen, vlen);
  for (; p < end; p += 8) {
    memcpy(&w, p, 8);
    lanes_word(h, le64(w));
  }
  if (r == 0) {
    w = 0;
  } else if (len >= 8) {
    /* The tail is the top r bytes of the last 8 bytes: one load, no byte assembly. */
    memcpy(&w, end + r - 8, 8);
    w = le64(w) >> (64 - 8 * r);
  } else {
    w = tail_word(p, r);
  }
  lanes_close(h, w);
}

/* The same bytes fed from anywhere (name and value apart): a byte at a time into the word
 * being filled. Rare (series creation from strings); it must agree with the flat form. */
typedef struct {
  lanes_t *h;
  uint64_t acc;
  unsigned nacc;
} feed_t;

static void feed_bytes(feed_t *f, const uint8_t *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    f->acc |= (uint64_t)p[i] << (8 * f->nacc);
    if (++f->nacc == 8) {
      lanes_word(f->h, f->acc);
      f->acc = 0;
      f->nacc = 0;
    }
  }
}

static lanes_t hash_label_parts(lanes_t h, const char *name, size_t nlen, const char *value, size_t vlen) {
  static const uint8_t nul = 0;
  feed_t f = {&h, 0, 0};
  lanes_open(&h, nlen, vlen);
  feed_bytes(&f, (const uint8_t *)name, nlen);
  feed_bytes(&f, &nul, 1);
  feed_bytes(&f, (const uint8_t *)value, vlen);
  lanes_close(&h, f.acc);
  return h;
}

static inline lanes_t lanes_start(size_t n) {
  return (lanes_t){0x243f6a8885a308d3ULL ^ n, 0x13198a2e03707344ULL ^ (n << 32)};
}

static inline lhash_t lanes_end(lanes_t h) { return (lhash_t){h.a ^ (h.a >> 29), h.b ^ (h.b >> 31)}; }

lhash_t labels_hash(const tsdb_label_t *ls, size_t n) {
  lanes_t h = lanes_start(n);
  for (size_t k = 0; k < n; k++)
    h = hash_label_parts(h, ls[k].name, strlen(ls[k].name), ls[k].value, strlen(ls[k].value));
  return lanes_end(h);
}

lhash_t labels_hash_len(const tsdb_label_t *ls, const label_lens_t *lens, size_t n) {
  lanes_t h = lanes_start(n);
  for (size_t k = 0; k < n; k++) {
    size_t nl = lens[k].name, vl = lens[k].value;
    if (ls[k].value == ls[k].name + nl + 1) /* name[nl] is its NUL: name NUL value is flat */
      hash_label_flat(&h, ls[k].name, nl + 1 + vl, nl, vl);
    else
      h = hash_label_parts(h, ls[k].name, nl, ls[k].value, vl);
  }
  return lanes_end(h);
}

bool idx_series_equal(const symtab_t *st, const idx_series_t *s, const tsdb_label_t *ls, size_t n) {
  if (s->nlabels != n) return false;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(symtab_str(st, s->labels[2 * i]), ls[i].name) != 0) return false;
    if (strcmp(symtab_str(st, s->labels[2 * i + 1]), ls[i].value) != 0) return false;
  }
  return true;
}

int idx_series_cmp(const symtab_t *st, const idx_series_t *a, const idx_series_t *b) {
  size_t n = a->nlabels < b->nlabels ? a->nlabels : b->nlabels;
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < 2; k++) {
      uint32_t x = a->labels[2 * i + k], y = b->labels[2 * i + k];
      if (x == y) continue;
      int c = strcmp(symtab_str(st, x), symtab_str(st, y));
      if (c) return c;
    }
  }
  return (int)a->nlabels - (int)b->nlabels;
}

int labels_cmp(const tsdb_label_t *a, size_t na, const tsdb_label_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  for (size_t i = 0; i < n; i++) {
    int c = strcmp(a[i].name, b[i].name);
    if (c) return c;
    c = strcmp(a[i].value, b[i].value);
    if (c) return c;
  }
  return na < nb ? -1 : na > nb ? 1 : 0;
}

/* ---- ref lists ------------------------------------------------------------------------ */

void reflist_free(reflist_t *l) {
  free(l->refs);
  l->refs = NULL;
  l->n = l->cap = 0;
}

int reflist_push(reflist_t *l, uint32_t ref) {
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    uint32_t *nr = realloc(l->refs, nc * sizeof *nr);
    if (!nr) return MD_ENOMEM;
    l->refs = nr;
    l->cap = nc;
  }
  l->refs[l->n++] = ref;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

void reflist_sort_unique(reflist_t *l) {
  if (l->n < 2) return;
  bool sorted = true;
  for (size_t i = 1; i < l->n && sorted; i++) sorted = l->refs[i - 1] < l->refs[i];
  if (sorted) return;
  qsort(l->refs, l->n, sizeof *l->refs, cmp_u32);
  size_t k = 1;
  for (size_t i = 1; i < l->n; i++)
    if (l->refs[i] != l->refs[k - 1]) l->refs[k++] = l->refs[i];
  l->n = k;
}

static int reflist_reserve(reflist_t *l, size_t n) {
  if (l->cap >= n) return 0;
  uint32_t *nr = realloc(l->refs, (n ? n : 1) * sizeof *nr);
  if (!nr) return MD_ENOMEM;
  l->refs = nr;
  l->cap = n;
  return 0;
}

int reflist_intersect(reflist_t *out, const reflist_t *a, const reflist_t *b) {
  size_t need = a->n < b->n ? a->n : b->n;
  if (out != a && reflist_reserve(out, need)) return MD_ENOMEM;
  size_t i = 0, j = 0, k = 0;
  while (i < a->n && j < b->n) {
    if (a->refs[i] < b->refs[j]) i++;
    else if (a->refs[i] > b->refs[j]) j++;
    else {
      out->refs[k++] = a->refs[i];
      i++;
      j++;
    }
  }
  out->n = k;
  return 0;
}

int reflist_subtract(reflist_t *out, const reflist_t *a, const reflist_t *b) {
  if (out != a && reflist_reserve(out, a->n)) return MD_ENOMEM;
  size_t i = 0, j = 0, k = 0;
  while (i < a->n) {
    while (j < b->n && b->refs[j] < a->refs[i]) j++;
    if (j < b->n && b->refs[j] == a->refs[i]) {
      i++;
      continue;
    }
    out->refs[k++] = a->refs[i++];
  }
  out->n = k;
  return 0;
}

/* ---- tenant index ---------------------------------------------------------------------- */

/* Postings of one name=value pair. n == 1 keeps the ref inline; otherwise `many` has room for
 * the next power of two ≥ n refs, so no capacity field is needed. */
typedef struct pair {
  uint32_t name, value; /* name == UINT32_MAX: empty slot */
  uint32_t n;
  uint32_t one;
  uint32_t *many;
} pair_t;

typedef struct name_entry {
  uint32_t name;
  uint32_t nvalues, cap;
  uint32_t *values;
} name_entry_t;

/* A label-set hash map slot keeps the hash next to the pointer: probing never touches a
 * series it does not return. */
typedef struct slot {
  uint64_t hash;
  idx_series_t *s;
} slot_t;

struct tindex {
  slot_t *slots; /* label-set hash map */
  size_t cap, n;
  idx_series_t **all; /* ascending ref */
  size_t nall, cap_all;
  pair_t *pairs;
  size_t cap_pairs, npairs;
  name_entry_t *names;
  size_t nnames, cap_names;
  size_t bytes;
};

tindex_t *tindex_new(void) {
  tindex_t *x = calloc(1, sizeof *x);
  return x;
}

static void pairs_free(tindex_t *x) {
  for (size_t i = 0; i < x->cap_pairs; i++)
    if (x->pairs[i].name != UINT32_MAX && x->pairs[i].n > 1) free(x->pairs[i].many);
  free(x->pairs);
  x->pairs = NULL;
  x->cap_pairs = x->npairs = 0;
}

void tindex_clear(tindex_t *x) {
  free(x->slots);
  x->slots = NULL;
  x->cap = x->n = 0;
  x->nall = 0;
  pairs_free(x);
  for (size_t i = 0; i < x->nnames; i++) free(x->names[i].values);
  x->nnames = 0;
  x->bytes = 0;
}

void tindex_free(tindex_t *x) {
  if (!x) return;
  tindex_clear(x);
  free(x->all);
  free(x->names);
  free(x);
}

size_t tindex_series_count(const tindex_t *x) { return x->nall; }

idx_series_t *const *tindex_all(const tindex_t *x, size_t *n) {
  *n = x->nall;
  return x->all;
}

idx_series_t *tindex_by_ref(const tindex_t *x, uint32_t ref) {
  size_t lo = 0, hi = x->nall;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (x->all[mid]->ref < ref) lo = mid + 1;
    else hi = mid;
  }
  return lo < x->nall && x->all[lo]->ref == ref ? x->all[lo] : NULL;
}

idx_series_t *tindex_lookup(const tindex_t *x, const symtab_t *st, lhash_t h, const tsdb_label_t *ls,
                            size_t n, bool exact) {
  if (!x->cap) return NULL;
  size_t mask = x->cap - 1;
  for (size_t i = h.h1 & mask;; i = (i + 1) & mask) {
    const slot_t *sl = &x->slots[i];
    if (!sl->s) return NULL;
    if (sl->hash != h.h1) continue;
    if (exact ? idx_series_equal(st, sl->s, ls, n) : sl->s->hash2 == h.h2) return sl->s;
  }
}

void tindex_lookup_many(const tindex_t *x, const lhash_t *h, size_t n, idx_series_t **out) {
  if (!x->cap) {
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    return;
  }
  size_t mask = x->cap - 1;
  enum { AHEAD = 8 };
  for (size_t i = 0; i < n && i < AHEAD; i++) __builtin_prefetch(&x->slots[h[i].h1 & mask]);
  /* Stage 1: find the slot whose hash matches (slots prefetched AHEAD items earlier), and
   * prefetch that series for stage 2. */
  for (size_t i = 0; i < n; i++) {
    if (i + AHEAD < n) __builtin_prefetch(&x->slots[h[i + AHEAD].h1 & mask]);
    out[i] = NULL;
    for (size_t j = h[i].h1 & mask;; j = (j + 1) & mask) {
      const slot_t *sl = &x->slots[j];
      if (!sl->s) break;
      if (sl->hash == h[i].h1) {
        out[i] = sl->s;
        __builtin_prefetch(sl->s);
        break;
      }
    }
  }
  /* Stage 2: confirm with the second hash (or keep searching past a first-hash collision). */
  for (size_t i = 0; i < n; i++) {
    if (!out[i] || out[i]->hash2 == h[i].h2) continue;
    out[i] = NULL;
    for (size_t j = h[i].h1 & mask;; j = (j + 1) & mask) {
      const slot_t *sl = &x->slots[j];
      if (!sl->s) break;
      if (sl->hash == h[i].h1 && sl->s->hash2 == h[i].h2) {
        out[i] = sl->s;
        break;
      }
    }
  }
}

static int series_map_put(tindex_t *x, idx_series_t *s) {
  /* Load factor up to 3/4: a slot is 16 bytes, so at 1/2 the map alone cost up to 64 bytes per
   * series; linear probes at 3/4 still mostly stay within one 64-byte line (4 slots). */
  if ((x->n + 1) * 4 > x->cap * 3) {
    size_t ncap = x->cap ? x->cap * 2 : 256;
    slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return MD_ENOMEM;
    for (size_t i = 0; i < x->cap; i++) {
      slot_t o = x->slots[i];
      if (!o.s) continue;
      size_t j = o.hash & (ncap - 1);
      while (ns[j].s) j = (j + 1) & (ncap - 1);
      ns[j] = o;
    }
    x->bytes += (ncap - x->cap) * sizeof *ns;
    free(x->slots);
    x->slots = ns;
    x->cap = ncap;
  }
  size_t j = s->hash & (x->cap - 1);
  while (x->slots[j].s) j = (j + 1) & (x->cap - 1);
  x->slots[j] = (slot_t){s->hash, s};
  x->n++;
  return 0;
}

static uint64_t pair_hash(uint32_t name, uint32_t value) {
  return md_hash_mix((uint64_t)name << 32 | value, 0x9e37);
}

static pair_t *pair_find(const tindex_t *x, uint32_t name, uint32_t value) {
  if (!x->cap_pairs) return NULL;
  size_t mask = x->cap_pairs - 1;
  for (size_t i = pair_hash(name, value) & mask;; i = (i + 1) & mask) {
    pair_t *p = &x->pairs[i];
    if (p->name == UINT32_MAX) return NULL;
    if (p->name == name && p->value == value) return p;
  }
}

static int pairs_grow(tindex_t *x) {
  size_t ncap = x->cap_pairs ? x->cap_pairs * 2 : 256;
  pair_t *np = malloc(ncap * sizeof *np);
  if (!np) return MD_ENOMEM;
  for (size_t i = 0; i < ncap; i++) np[i].name = UINT32_MAX;
  for (size_t i = 0; i < x->cap_pairs; i++) {
    pair_t *p = &x->pairs[i];
    if (p->name == UINT32_MAX) continue;
    size_t j = pair_hash(p->name, p->value) & (ncap - 1);
    while (np[j].name != UINT32_MAX) j = (j + 1) & (ncap - 1);
    np[j] = *p;
  }
  x->bytes += (ncap - x->cap_pairs) * sizeof *np;
  free(x->pairs);
  x->pairs = np;
  x->cap_pairs = ncap;
  return 0;
}

static name_entry_t *name_find(const tindex_t *x, uint32_t name) {
  for (size_t i = 0; i < x->nnames; i++)
    if (x->names[i].name == name) return &x->names[i];
  return NULL;
}

static int name_add_value(tindex_t *x, uint32_t name, uint32_t value) {
  name_entry_t *e = name_find(x, name);
  if (!e) {
    if (x->nnames == x->cap_names) {
      size_t nc = x->cap_names ? x->cap_names * 2 : 16;
      name_entry_t *nn = realloc(x->names, nc * sizeof *nn);
      if (!nn) return MD_ENOMEM;
      x->names = nn;
      x->cap_names = nc;
    }
    e = &x->names[x->nnames++];
    *e = (name_entry_t){.name = name};
  }
  if (e->nvalues == e->cap) {
    uint32_t nc = e->cap ? e->cap * 2 : 4;
    uint32_t *nv = realloc(e->values, nc * sizeof *nv);
    if (!nv) return MD_ENOMEM;
    x->bytes += (nc - e->cap) * sizeof *nv;
    e->values = nv;
    e->cap = nc;
  }
  e->values[e->nvalues++] = value;
  return 0;
}

static int pair_add(tindex_t *x, uint32_t name, uint32_t value, uint32_t ref) {
  pair_t *p = pair_find(x, name, value);
  if (!p) {
    if ((x->npairs + 1) * 2 > x->cap_pairs && pairs_grow(x)) return MD_ENOMEM;
    if (name_add_value(x, name, value)) return MD_ENOMEM;
    size_t j = pair_hash(name, value) & (x->cap_pairs - 1);
    while (x->pairs[j].name != UINT32_MAX) j = (j + 1) & (x->cap_pairs - 1);
    x->pairs[j] = (pair_t){.name = name, .value = value, .n = 1, .one = ref};
    x->npairs++;
    return 0;
  }
  if (p->n == 1) {
    uint32_t *m = malloc(2 * sizeof *m);
    if (!m) return MD_ENOMEM;
    m[0] = p->one;
    m[1] = ref;
    p->many = m;
    p->n = 2;
    x->bytes += 2 * sizeof *m;
    return 0;
  }
  if ((p->n & (p->n - 1)) == 0) { /* full: n is the capacity */
    uint32_t *m = realloc(p->many, (size_t)p->n * 2 * sizeof *m);
    if (!m) return MD_ENOMEM;
    x->bytes += (size_t)p->n * sizeof *m;
    p->many = m;
  }
  p->many[p->n++] = ref;
  return 0;
}

int tindex_add(tindex_t *x, idx_series_t *s) {
  if (x->nall == x->cap_all) {
    size_t nc = x->cap_all ? x->cap_all * 2 : 256;
    idx_series_t **na = realloc(x->all, nc * sizeof *na);
    if (!na) return MD_ENOMEM;
    x->bytes += (nc - x->cap_all) * sizeof *na;
    x->all = na;
    x->cap_all = nc;
  }
  if (series_map_put(x, s)) return MD_ENOMEM;
  x->all[x->nall++] = s;
  for (size_t i = 0; i < s->nlabels; i++)
    if (pair_add(x, s->labels[2 * i], s->labels[2 * i + 1], s->ref)) return MD_ENOMEM;
  return 0;
}

size_t tindex_bytes(const tindex_t *x) { return x->bytes + x->cap_names * sizeof(name_entry_t); }

static const uint32_t *pair_refs(const pair_t *p) { return p->n == 1 ? &p->one : p->many; }

size_t tindex_postings_len(const tindex_t *x, uint32_t name, uint32_t value) {
  const pair_t *p = pair_find(x, name, value);
  return p ? p->n : 0;
}

int tindex_names(const tindex_t *x, uint32_t **ids, size_t *n) {
  *ids = malloc((x->nnames ? x->nnames : 1) * sizeof **ids);
  if (!*ids) return MD_ENOMEM;
  for (size_t i = 0; i < x->nnames; i++) (*ids)[i] = x->names[i].name;
  *n = x->nnames;
  return 0;
}

int tindex_values(const tindex_t *x, uint32_t name, uint32_t **ids, size_t *n) {
  const name_entry_t *e = name_find(x, name);
  size_t k = e ? e->nvalues : 0;
  *ids = malloc((k ? k : 1) * sizeof **ids);
  if (!*ids) return MD_ENOMEM;
  if (k) memcpy(*ids, e->values, k * sizeof **ids);
  *n = k;
  return 0;
}

/* ---- matchers ------------------------------------------------------------------------- */

bool idx_matcher_match(const idx_matcher_t *m, const char *s, size_t n) {
  switch (m->type) {
  case TSDB_MATCH_EQ: return strlen(m->value) == n && memcmp(m->value, s, n) == 0;
  case TSDB_MATCH_NEQ: return !(strlen(m->value) == n && memcmp(m->value, s, n) == 0);
  case TSDB_MATCH_RE: return core_regex_match(m->re, s, n);
  case TSDB_MATCH_NRE: return !core_regex_match(m->re, s, n);
  }
  return false;
}

int idx_matchers_compile(const tsdb_matcher_t *m, size_t nm, idx_matcher_t **out, char *err, size_t errlen) {
  idx_matcher_t *r = calloc(nm ? nm : 1, sizeof *r);
  if (!r) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  for (size_t i = 0; i < nm; i++) {
    r[i].type = m[i].type;
    r[i].name = m[i].name ? m[i].name : "";
    r[i].value = m[i].value ? m[i].value : "";
    if (m[i].type == TSDB_MATCH_RE || m[i].type == TSDB_MATCH_NRE) {
      int rc = core_regex_compile(r[i].value, strlen(r[i].value), &r[i].re, err, errlen);
      if (rc) {
        idx_matchers_free(r, i);
        return rc == MD_ENOMEM ? rc : MD_EINVAL;
      }
    } else if ((unsigned)m[i].type > TSDB_MATCH_NRE) {
      idx_matchers_free(r, i);
      return md_error(err, errlen, MD_EINVAL, "unknown matcher type %d", (int)m[i].type);
    }
    r[i].matches_empty = idx_matcher_match(&r[i], "", 0);
  }
  *out = r;
  return 0;
}

void idx_matchers_free(idx_matcher_t *m, size_t nm) {
  if (!m) return;
  for (size_t i = 0; i < nm; i++) core_regex_free(m[i].re);
  free(m);
}

static int push_pair(reflist_t *l, const pair_t *p) {
  const uint32_t *r = pair_refs(p);
  for (uint32_t i = 0; i < p->n; i++)
    if (reflist_push(l, r[i])) return MD_ENOMEM;
  return 0;
}

/* Refs of series whose value for m->name satisfies (match == want). Series lacking the
 * label are not included. */
static int matcher_postings(const tindex_t *x, const symtab_t *st, const idx_matcher_t *m, bool want,
                            reflist_t *out) {
  out->n = 0;
  uint32_t name = symtab_find((symtab_t *)st, m->name, strlen(m->name));
  if (name == UINT32_MAX) return 0;
  /* Set lookups for = and for =~ over literal alternations, the common fast paths. */
  if (want && m->type == TSDB_MATCH_EQ) {
    uint32_t v = symtab_find((symtab_t *)st, m->value, strlen(m->value));
    const pair_t *p = v == UINT32_MAX ? NULL : pair_find(x, name, v);
    return p ? push_pair(out, p) : 0;
  }
  if (want && m->type == TSDB_MATCH_RE) {
    const char *const *lits;
    const size_t *lens;
    size_t nl = core_regex_literals(m->re, &lits, &lens);
    if (nl) {
      for (size_t i = 0; i < nl; i++) {
        uint32_t v = symtab_find((symtab_t *)st, lits[i], lens[i]);
        const pair_t *p = v == UINT32_MAX ? NULL : pair_find(x, name, v);
        if (p && push_pair(out, p)) return MD_ENOMEM;
      }
      reflist_sort_unique(out);
      return 0;
    }
  }
  const name_entry_t *e = name_find(x, name);
  if (!e) return 0;
  size_t hits = 0;
  for (uint32_t i = 0; i < e->nvalues; i++) {
    const char *v = symtab_str(st, e->values[i]);
    if (idx_matcher_match(m, v, strlen(v)) != want) continue;
    const pair_t *p = pair_find(x, name, e->values[i]);
    if (p && push_pair(out, p)) return MD_ENOMEM;
    hits++;
  }
  if (hits > 1) reflist_sort_unique(out);
  return 0;
}

static const pair_t *eq_pair(const tindex_t *x, const symtab_t *st, const idx_matcher_t *m) {
  uint32_t name = symtab_find((symtab_t *)st, m->name, strlen(m->name));
  uint32_t v = name == UINT32_MAX ? UINT32_MAX : symtab_find((symtab_t *)st, m->value, strlen(m->value));
  return v == UINT32_MAX ? NULL : pair_find(x, name, v);
}

/* Keeps the refs of l that are in p (binary search: l is usually much shorter). */
static void filter_by_pair(reflist_t *l, const pair_t *p) {
  const uint32_t *r = pair_refs(p);
  size_t k = 0, lo = 0;
  for (size_t i = 0; i < l->n; i++) {
    size_t a = lo, b = p->n;
    while (a < b) {
      size_t mid = (a + b) / 2;
      if (r[mid] < l->refs[i]) a = mid + 1;
      else b = mid;
    }
    lo = a;
    if (a < p->n && r[a] == l->refs[i]) l->refs[k++] = l->refs[i];
  }
  l->n = k;
}

int tindex_select(const tindex_t *x, const symtab_t *st, const idx_matcher_t *m, size_t nm, reflist_t *out) {
  reflist_t tmp = {0};
  bool have = false;
  int rc = 0;
  out->n = 0;
  /* Positive matchers (not matching "") narrow the set through postings, the smallest
   * equality postings first (later equality matchers only filter what is left); the others
   * subtract the series whose value fails them. */
  enum { MAXM = 64 };
  size_t order[MAXM], no = 0;
  size_t cost[MAXM];
  for (size_t i = 0; i < nm && no < MAXM; i++) {
    if (m[i].matches_empty) continue;
    size_t c = SIZE_MAX;
    if (m[i].type == TSDB_MATCH_EQ) {
      const pair_t *p = eq_pair(x, st, &m[i]);
      if (!p) goto out; /* nothing can match */
      c = p->n;
    }
    size_t j = no++;
    while (j > 0 && cost[j - 1] > c) {
      order[j] = order[j - 1];
      cost[j] = cost[j - 1];
      j--;
    }
    order[j] = i;
    cost[j] = c;
  }
  for (size_t k = 0; k < nm; k++) {
    size_t i = k;
    if (nm <= MAXM) {
      if (k >= no) break;
      i = order[k];
    } else if (m[i].matches_empty) {
      continue;
    }
    if (m[i].type == TSDB_MATCH_EQ) {
      const pair_t *p = eq_pair(x, st, &m[i]);
      if (!p) {
        out->n = 0;
        goto out;
      }
      if (!have) rc = push_pair(out, p);
      else filter_by_pair(out, p);
      if (rc) goto out;
    } else {
      if ((rc = matcher_postings(x, st, &m[i], true, have ? &tmp : out))) goto out;
      if (have && (rc = reflist_intersect(out, out, &tmp))) goto out;
    }
    have = true;
    if (out->n == 0) goto out;
  }
  if (!have) {
    for (size_t i = 0; i < x->nall; i++)
      if ((rc = reflist_push(out, x->all[i]->ref))) goto out;
  }
  for (size_t i = 0; i < nm && out->n; i++) {
    if (!m[i].matches_empty) continue;
    if ((rc = matcher_postings(x, st, &m[i], false, &tmp))) goto out;
    if ((rc = reflist_subtract(out, out, &tmp))) goto out;
  }
out:
  reflist_free(&tmp);
  return rc;
}
