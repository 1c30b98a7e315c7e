/* Unit tests for the on-disk block layer: write/read round trips over random series (all
 * special float values), matchers against a brute-force reference, label metadata,
 * compaction equivalence with tombstones, downsampling math, and corrupt files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/block.h"
#include "tsdb/tsdb.h"

/* ---- deterministic random data -------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static uint64_t rndn(uint64_t n) { return n ? rnd() % n : 0; }

static double bits2d(uint64_t b) {
  double d;
  memcpy(&d, &b, 8);
  return d;
}
static uint64_t d2bits(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return b;
}

static const uint64_t specials[] = {
    0x7ff0000000000002ULL, /* stale marker */
    0x7ff8000000000001ULL, 0xfff8000000000000ULL, 0x7ff0000000000001ULL, 0x7ff8deadbeef0000ULL,
    0x7ff0000000000000ULL, /* +Inf */
    0xfff0000000000000ULL, /* -Inf */
    0x8000000000000000ULL, /* -0.0 */
    0x0000000000000000ULL, 0x0000000000000001ULL, /* smallest subnormal */
    0x000fffffffffffffULL, 0x7fefffffffffffffULL,
};

typedef struct {
  char tenant[16];
  tsdb_label_t lab[8];
  char strs[16][24];
  size_t nlab;
  int64_t *ts;
  double *v;
  size_t n;
} tser_t;

typedef struct {
  tser_t *s;
  size_t n;
} tset_t;

/* Label j of a test series lives in strs[2j], strs[2j+1]; lab[] points there and is
 * re-pointed (fix_ptrs) whenever the struct moves. */
static void fix_ptrs(tser_t *s) {
  for (size_t j = 0; j < s->nlab; j++) s->lab[j] = (tsdb_label_t){s->strs[2 * j], s->strs[2 * j + 1]};
}

static int cmp_tser(const void *a, const void *b) {
  const tser_t *x = a, *y = b;
  int c = strcmp(x->tenant, y->tenant);
  if (c) return c;
  size_t m = x->nlab < y->nlab ? x->nlab : y->nlab;
  for (size_t i = 0; i < m; i++) {
    if ((c = strcmp(x->strs[2 * i], y->strs[2 * i]))) return c;
    if ((c = strcmp(x->strs[2 * i + 1], y->strs[2 * i + 1]))) return c;
  }
  return x->nlab < y->nlab ? -1 : x->nlab > y->nlab;
}

static const char *metric_names[] = {"up", "node_load1", "http_requests_total", "a", "zz_last"};
static const char *label_names[] = {"cpu", "instance", "job", "mode", "path"};
static const char *label_values[] = {"0", "1", "api", "node", "x:9100", "idle", "/", "a|b", "ünïcode", "long_value_here"};

static void gen_values(tser_t *s) {
  int mode = (int)rndn(5);
  double acc = (double)rndn(100000) / 100.0;
  for (size_t i = 0; i < s->n; i++) {
    switch (mode) {
    case 0: s->v[i] = 42.0; break;
    case 1: acc += (double)rndn(1000) / 100.0; s->v[i] = acc; break;
    case 2: s->v[i] = bits2d(rnd()); break;
    case 3: s->v[i] = bits2d(specials[rndn(sizeof specials / sizeof specials[0])]); break;
    default: s->v[i] = rndn(4) ? (double)(int64_t)rndn(1 << 20) * 1024.0 : bits2d(specials[rndn(12)]); break;
    }
  }
}

/* Random series for tenants "", "acme" and "zeta" within [mint, mint + span]. */
static tset_t gen_set(size_t nseries, int64_t mint, int64_t span, size_t maxn) {
  tset_t set = {calloc(nseries, sizeof(tser_t)), 0};
  static const char *tenants[] = {"", "acme", "zeta"};
  for (size_t k = 0; k < nseries; k++) {
    tser_t *s = &set.s[set.n];
    memset(s, 0, sizeof *s);
    snprintf(s->tenant, sizeof s->tenant, "%s", tenants[rndn(3)]);
    /* labels: __name__ plus a random subset of names, sorted by construction */
    snprintf(s->strs[0], 24, "__name__");
    snprintf(s->strs[1], 24, "%s", metric_names[rndn(5)]);
    s->nlab = 1;
    for (int i = 0; i < 5; i++) {
      if (rndn(2)) continue;
      snprintf(s->strs[2 * s->nlab], 24, "%s", label_names[i]);
      snprintf(s->strs[2 * s->nlab + 1], 24, "%s", label_values[rndn(10)]);
      s->nlab++;
    }
    s->n = 1 + rndn(maxn);
    s->ts = malloc(s->n * sizeof *s->ts);
    s->v = malloc(s->n * sizeof *s->v);
    int64_t t = mint + (int64_t)rndn((uint64_t)span / 4 + 1);
    bool regular = rndn(2);
    size_t n = 0;
    for (; n < s->n && t <= mint + span; n++) {
      s->ts[n] = t;
      t += regular ? 15000 : 1 + (int64_t)rndn(40000);
    }
    s->n = n;
    gen_values(s);
    set.n++;
  }
  qsort(set.s, set.n, sizeof *set.s, cmp_tser);
  /* drop duplicate label sets (keep the first) */
  size_t w = 0;
  for (size_t i = 0; i < set.n; i++) {
    if (w && cmp_tser(&set.s[w - 1], &set.s[i]) == 0) {
      free(set.s[i].ts);
      free(set.s[i].v);
      continue;
    }
    if (w != i) set.s[w] = set.s[i];
    fix_ptrs(&set.s[w]);
    w++;
  }
  set.n = w;
  return set;
}

static void free_set(tset_t *set) {
  for (size_t i = 0; i < set->n; i++) {
    free(set->s[i].ts);
    free(set->s[i].v);
  }
  free(set->s);
}

typedef struct {
  const tset_t *set;
  size_t i;
} src_ctx_t;

static int src_next(void *ctx, const char **tenant, const tsdb_label_t **labels, size_t *nlabels,
                    const int64_t **ts, const double **v, size_t *n) {
  src_ctx_t *c = ctx;
  if (c->i >= c->set->n) return 0;
  const tser_t *s = &c->set->s[c->i++];
  *tenant = s->tenant;
  *labels = s->lab;
  *nlabels = s->nlab;
  *ts = s->ts;
  *v = s->v;
  *n = s->n;
  return 1;
}

static char tmproot[256];

static void make_tmp(void) {
  snprintf(tmproot, sizeof tmproot, "/tmp/test_block.XXXXXX");
  assert_non_null(mkdtemp(tmproot));
}

static block_t *write_and_open(const tset_t *set, int64_t mint, int64_t maxt, char *path, size_t plen) {
  src_ctx_t ctx = {set, 0};
  block_source_t src = {src_next, &ctx};
  char name[64], err[256];
  int rc = block_write(tmproot, mint, maxt, 0, 0, &src, name, sizeof name, err, sizeof err);
  if (rc) fail_msg("block_write: %s", err);
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmproot, name);
  if (path) snprintf(path, plen, "%s", p);
  block_t *b = NULL;
  rc = block_open(p, &b, err, sizeof err);
  if (rc) fail_msg("block_open: %s", err);
  return b;
}

/* Compares what a select returns with the expected series of one tenant in [mint, maxt]. */
static void check_select(block_t *b, const tset_t *set, const char *tenant, int64_t mint, int64_t maxt,
                         const tsdb_matcher_t *m, size_t nm, const bool *want) {
  block_iter_t *it;
  char err[256];
  assert_int_equal(block_select(b, tenant, m, nm, mint, maxt, &it, err, sizeof err), 0);
  size_t i = 0;
  for (;;) {
    /* next expected series: tenant, wanted, with a sample in range */
    size_t first = 0, cnt = 0;
    for (; i < set->n; i++) {
      const tser_t *s = &set->s[i];
      if (strcmp(s->tenant, tenant) != 0 || (want && !want[i])) continue;
      cnt = 0;
      first = SIZE_MAX;
      for (size_t k = 0; k < s->n; k++)
        if (s->ts[k] >= mint && s->ts[k] <= maxt) {
          if (first == SIZE_MAX) first = k;
          cnt++;
        }
      if (cnt) break;
    }
    int r = block_iter_next(it);
    if (i >= set->n) {
      assert_int_equal(r, 0);
      break;
    }
    assert_int_equal(r, 1);
    const tser_t *s = &set->s[i];
    size_t nl;
    const tsdb_label_t *l = block_iter_labels(it, &nl);
    assert_int_equal(nl, s->nlab);
    for (size_t k = 0; k < nl; k++) {
      assert_string_equal(l[k].name, s->lab[k].name);
      assert_string_equal(l[k].value, s->lab[k].value);
    }
    const int64_t *ts;
    const double *v;
    size_t n;
    assert_int_equal(block_iter_samples(it, BLOCK_AGG_RAW, &ts, &v, &n), 0);
    assert_int_equal(n, cnt);
    for (size_t k = 0; k < n; k++) {
      assert_int_equal(ts[k], s->ts[first + k]);
      assert_int_equal(d2bits(v[k]), d2bits(s->v[first + k]));
    }
    i++;
  }
  block_iter_free(it);
}

static void test_roundtrip(void **state) {
  (void)state;
  make_tmp();
  const int64_t base = 1700000000000LL;
  for (int round = 0; round < 4; round++) {
    tset_t set = gen_set(300, base, 3 * 3600 * 1000, round == 0 ? 3000 : 800);
    char path[512];
    block_t *b = write_and_open(&set, base, base + 3 * 3600 * 1000, path, sizeof path);
    uint64_t samples = 0;
    for (size_t i = 0; i < set.n; i++) samples += set.s[i].n;
    assert_int_equal(block_samples(b), samples);
    assert_int_equal(block_series(b), set.n);
    assert_int_equal(block_mint(b), base);
    assert_int_equal(block_resolution(b), 0);
    assert_true(block_bytes(b) > 0);
    static const char *tenants[] = {"", "acme", "zeta", "nobody"};
    for (int t = 0; t < 4; t++) {
      check_select(b, &set, tenants[t], INT64_MIN, INT64_MAX, NULL, 0, NULL);
      for (int k = 0; k < 5; k++) {
        int64_t a = base + (int64_t)rndn(3 * 3600 * 1000), z = a + (int64_t)rndn(3600 * 1000);
        check_select(b, &set, tenants[t], a, z, NULL, 0, NULL);
      }
    }
    /* raw blocks have no aggregates */
    block_iter_t *it;
    assert_int_equal(block_select(b, "acme", NULL, 0, INT64_MIN, INT64_MAX, &it, NULL, 0), 0);
    if (block_iter_next(it) == 1) {
      const int64_t *ts;
      const double *v;
      size_t n;
      assert_int_equal(block_iter_samples(it, BLOCK_AGG_MAX, &ts, &v, &n), MD_EINVAL);
    }
    block_iter_free(it);
    block_unref(b);
    free_set(&set);
  }
  md_rm_rf(tmproot);
}

/* ---- matchers vs brute force -------------------------------------------------------- */

static const char *label_of(const tser_t *s, const char *name) {
  for (size_t i = 0; i < s->nlab; i++)
    if (strcmp(s->lab[i].name, name) == 0) return s->lab[i].value;
  return "";
}

static bool brute_match(const tser_t *s, const tsdb_matcher_t *m) {
  const char *v = label_of(s, m->name);
  if (m->type == TSDB_MATCH_EQ) return strcmp(v, m->value) == 0;
  if (m->type == TSDB_MATCH_NEQ) return strcmp(v, m->value) != 0;
  core_regex_t *re;
  assert_int_equal(core_regex_compile(m->value, strlen(m->value), &re, NULL, 0), 0);
  bool r = core_regex_match(re, v, strlen(v));
  core_regex_free(re);
  return m->type == TSDB_MATCH_RE ? r : !r;
}

static void test_matchers(void **state) {
  (void)state;
  make_tmp();
  const int64_t base = 1000000;
  tset_t set = gen_set(400, base, 3600 * 1000, 50);
  block_t *b = write_and_open(&set, base, base + 3600 * 1000, NULL, 0);
  static const char *names[] = {"__name__", "cpu", "instance", "job", "mode", "path", "absent"};
  static const char *res[] = {"", ".*", ".+", "a|b", "0|1", "x:9100|api", "n.*", "(api|node)", "up|a", "[0-9]",
                              "a\\|b", "ünïcode|/", "long.*|", "zz_last"};
  bool *want = calloc(set.n, sizeof *want);
  for (int round = 0; round < 600; round++) {
    tsdb_matcher_t m[3];
    size_t nm = 1 + rndn(3);
    for (size_t k = 0; k < nm; k++) {
      m[k].type = (tsdb_match_type_t)rndn(4);
      m[k].name = names[rndn(7)];
      if (m[k].type == TSDB_MATCH_EQ || m[k].type == TSDB_MATCH_NEQ) {
        const char *pool[] = {"", "up", "node", "0", "1", "a|b", "idle", "missing", "ünïcode"};
        m[k].value = pool[rndn(9)];
      } else {
        m[k].value = res[rndn(sizeof res / sizeof res[0])];
      }
    }
    for (size_t i = 0; i < set.n; i++) {
      want[i] = true;
      for (size_t k = 0; k < nm; k++) want[i] = want[i] && brute_match(&set.s[i], &m[k]);
    }
    static const char *tenants[] = {"", "acme", "zeta"};
    check_select(b, &set, tenants[round % 3], INT64_MIN, INT64_MAX, m, nm, want);
  }
  /* a bad regex is an error */
  tsdb_matcher_t bad = {TSDB_MATCH_RE, "job", "(unclosed"};
  block_iter_t *it;
  char err[256];
  assert_int_equal(block_select(b, "acme", &bad, 1, 0, INT64_MAX, &it, err, sizeof err), MD_EINVAL);
  assert_int_equal(block_select(b, "nobody", &bad, 1, 0, INT64_MAX, &it, err, sizeof err), MD_EINVAL);
  free(want);
  block_unref(b);
  free_set(&set);
  md_rm_rf(tmproot);
}

/* ---- label names and values ------------------------------------------------------------ */

typedef struct {
  char items[64][32];
  size_t n;
} strlist_t;

static void collect(void *ctx, const char *s) {
  strlist_t *l = ctx;
  assert_true(l->n < 64);
  snprintf(l->items[l->n++], 32, "%s", s);
}

static void test_label_metadata(void **state) {
  (void)state;
  make_tmp();
  tset_t set = gen_set(200, 0, 3600 * 1000, 10);
  block_t *b = write_and_open(&set, 0, 3600 * 1000, NULL, 0);
  strlist_t tl = {0};
  block_tenants(b, collect, &tl);
  static const char *tenants[] = {"", "acme", "zeta"};
  for (int t = 0; t < 3; t++) {
    /* expected: sorted unique names / values from the series */
    strlist_t names = {0};
    block_label_names(b, tenants[t], collect, &names);
    for (size_t i = 1; i < names.n; i++) assert_true(strcmp(names.items[i - 1], names.items[i]) < 0);
    size_t expect_names = 0;
    const char *all[] = {"__name__", "cpu", "instance", "job", "mode", "path"};
    for (int k = 0; k < 6; k++) {
      bool found = false;
      for (size_t i = 0; i < set.n && !found; i++)
        found = strcmp(set.s[i].tenant, tenants[t]) == 0 && label_of(&set.s[i], all[k])[0];
      if (found) {
        assert_string_equal(names.items[expect_names], all[k]);
        expect_names++;
      }
    }
    assert_int_equal(names.n, expect_names);
    strlist_t vals = {0};
    block_label_values(b, tenants[t], "job", collect, &vals);
    for (size_t i = 1; i < vals.n; i++) assert_true(strcmp(vals.items[i - 1], vals.items[i]) < 0);
    for (size_t i = 0; i < set.n; i++) {
      if (strcmp(set.s[i].tenant, tenants[t]) != 0 || !label_of(&set.s[i], "job")[0]) continue;
      bool found = false;
      for (size_t k = 0; k < vals.n; k++) found = found || strcmp(vals.items[k], label_of(&set.s[i], "job")) == 0;
      assert_true(found);
    }
  }
  assert_true(tl.n >= 1 && tl.n <= 3);
  strlist_t none = {0};
  block_label_values(b, "acme", "no_such_label", collect, &none);
  block_label_names(b, "no_such_tenant", collect, &none);
  assert_int_equal(none.n, 0);
  block_unref(b);
  free_set(&set);
  md_rm_rf(tmproot);
}

/* ---- writer input validation and deletion --------------------------------------------- */

static void test_writer_rejects_and_delete(void **state) {
  (void)state;
  make_tmp();
  tset_t set = gen_set(20, 0, 1000000, 10);
  /* out of order: reverse two series */
  if (set.n >= 2) {
    tser_t t = set.s[0];
    set.s[0] = set.s[1];
    set.s[1] = t;
    src_ctx_t ctx = {&set, 0};
    block_source_t src = {src_next, &ctx};
    char name[64], err[256];
    assert_int_equal(block_write(tmproot, 0, 2000000, 0, 0, &src, name, sizeof name, err, sizeof err), MD_EINVAL);
    t = set.s[0];
    set.s[0] = set.s[1];
    set.s[1] = t;
  }
  /* samples outside the block's range */
  {
    src_ctx_t ctx = {&set, 0};
    block_source_t src = {src_next, &ctx};
    char name[64], err[256];
    assert_int_equal(block_write(tmproot, 10, 20, 0, 0, &src, name, sizeof name, err, sizeof err), MD_EINVAL);
  }
  /* nothing left behind by the failed writes */
  DIR *d = opendir(tmproot);
  struct dirent *e;
  int entries = 0;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') entries++;
  closedir(d);
  assert_int_equal(entries, 0);
  /* an empty block is valid */
  tset_t empty = {NULL, 0};
  block_t *b = write_and_open(&empty, 5, 10, NULL, 0);
  assert_int_equal(block_series(b), 0);
  block_iter_t *it;
  assert_int_equal(block_select(b, "", NULL, 0, 0, 100, &it, NULL, 0), 0);
  assert_int_equal(block_iter_next(it), 0);
  block_iter_free(it);
  /* deletion waits for the last reference */
  char path[512];
  block_t *b2 = write_and_open(&set, 0, 2000000, path, sizeof path);
  assert_int_equal(block_select(b2, "acme", NULL, 0, 0, INT64_MAX, &it, NULL, 0), 0);
  block_mark_deleted(b2);
  block_unref(b2);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  block_iter_free(it);
  assert_int_not_equal(stat(path, &st), 0);
  block_unref(b);
  free_set(&set);
  md_rm_rf(tmproot);
}

/* ---- compaction ------------------------------------------------------------------------- */

typedef struct {
  int64_t iv[2][2];
} tomb_ctx_t;

/* Deletes two intervals from every series whose metric name is "up" or "a". */
static size_t tomb_intervals(void *ctx, const char *tenant, const tsdb_label_t *labels, size_t n, int64_t (*out)[2],
                             size_t max) {
  tomb_ctx_t *t = ctx;
  (void)tenant;
  if (n == 0 || (strcmp(labels[0].value, "up") != 0 && strcmp(labels[0].value, "a") != 0) || max < 2) return 0;
  memcpy(out, t->iv, sizeof t->iv);
  return 2;
}

static void test_compact(void **state) {
  (void)state;
  make_tmp();
  const int64_t H = 3600 * 1000;
  /* three overlapping blocks; the same series appear in several with clashing timestamps */
  uint64_t seed = rng_state;
  tset_t sets[3];
  block_t *blocks[3];
  for (int k = 0; k < 3; k++) {
    rng_state = seed; /* same label sets in every block */
    sets[k] = gen_set(150, 0, 2 * H, 400);
    rng_state = seed + 7919 * (uint64_t)(k + 1);
    for (size_t i = 0; i < sets[k].n; i++) {
      tser_t *s = &sets[k].s[i];
      int64_t t = k * H / 2 + (int64_t)rndn(4) * 15000;
      for (size_t j = 0; j < s->n; j++, t += 15000) s->ts[j] = t;
      gen_values(s);
    }
    blocks[k] = write_and_open(&sets[k], 0, 3 * H, NULL, 0);
  }
  tomb_ctx_t tc = {{{H / 3, H / 2}, {2 * H, 2 * H + 60000}}};
  block_tombstones_t tomb = {tomb_intervals, &tc};
  /* inputs in scrambled order: freshness comes from the blocks, not from the array */
  block_t *in[3] = {blocks[2], blocks[0], blocks[1]};
  char name[64], err[256];
  assert_int_equal(block_compact(in, 3, tmproot, &tomb, name, sizeof name, err, sizeof err), 0);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *c;
  assert_int_equal(block_open(path, &c, err, sizeof err), 0);
  assert_int_equal(block_level(c), 1);
  /* expected: union per series, later block wins per ts, tombstones removed */
  tset_t exp = {calloc(sets[0].n, sizeof(tser_t)), sets[0].n};
  for (size_t i = 0; i < sets[0].n; i++) {
    tser_t *e = &exp.s[i];
    *e = sets[0].s[i];
    fix_ptrs(e);
    size_t cap = sets[0].s[i].n + sets[1].s[i].n + sets[2].s[i].n;
    e->ts = malloc(cap * sizeof *e->ts);
    e->v = malloc(cap * sizeof *e->v);
    e->n = 0;
    bool del = strcmp(e->lab[0].value, "up") == 0 || strcmp(e->lab[0].value, "a") == 0;
    for (int64_t t = 0; t <= 3 * H; t += 15000) {
      bool have = false;
      double v = 0;
      for (int k = 0; k < 3; k++) {
        const tser_t *s = &sets[k].s[i];
        for (size_t j = 0; j < s->n; j++)
          if (s->ts[j] == t) {
            have = true;
            v = s->v[j];
          }
      }
      if (!have) continue;
      if (del && ((t >= tc.iv[0][0] && t <= tc.iv[0][1]) || (t >= tc.iv[1][0] && t <= tc.iv[1][1]))) continue;
      e->ts[e->n] = t;
      e->v[e->n++] = v;
    }
  }
  static const char *tenants[] = {"", "acme", "zeta"};
  for (int t = 0; t < 3; t++) check_select(c, &exp, tenants[t], INT64_MIN, INT64_MAX, NULL, 0, NULL);
  uint64_t total = 0;
  for (size_t i = 0; i < exp.n; i++) total += exp.s[i].n;
  assert_int_equal(block_samples(c), total);
  /* compacting one block without tombstones reproduces it */
  assert_int_equal(block_compact(&blocks[0], 1, tmproot, NULL, name, sizeof name, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *c1;
  assert_int_equal(block_open(path, &c1, err, sizeof err), 0);
  for (int t = 0; t < 3; t++) check_select(c1, &sets[0], tenants[t], INT64_MIN, INT64_MAX, NULL, 0, NULL);
  block_unref(c1);
  block_unref(c);
  free_set(&exp);
  for (int k = 0; k < 3; k++) {
    block_unref(blocks[k]);
    free_set(&sets[k]);
  }
  md_rm_rf(tmproot);
}

/* ---- downsampling ------------------------------------------------------------------------ */

static void read_agg(block_t *b, block_agg_t agg, int64_t *ts, double *v, size_t *n) {
  block_iter_t *it;
  assert_int_equal(block_select(b, "t", NULL, 0, INT64_MIN, INT64_MAX, &it, NULL, 0), 0);
  assert_int_equal(block_iter_next(it), 1);
  const int64_t *t;
  const double *x;
  assert_int_equal(block_iter_samples(it, agg, &t, &x, n), 0);
  memcpy(ts, t, *n * sizeof *t);
  memcpy(v, x, *n * sizeof *x);
  assert_int_equal(block_iter_next(it), 0);
  block_iter_free(it);
}

static void test_downsample(void **state) {
  (void)state;
  make_tmp();
  /* a counter sampled every 15 s over 3 minutes: a reset in the 2nd minute, a staleness
   * marker in the 3rd */
  tset_t set = {calloc(1, sizeof(tser_t)), 1};
  tser_t *s = &set.s[0];
  snprintf(s->tenant, sizeof s->tenant, "t");
  s->lab[0] = (tsdb_label_t){"__name__", "c"};
  s->nlab = 1;
  double vals[] = {10, 12, 15, 15, /* min 1 */ 20, 3, 5, 9, /* min 2: reset at 3 */ 11, NAN, 14, 14};
  s->n = 12;
  s->ts = malloc(12 * sizeof *s->ts);
  s->v = malloc(12 * sizeof *s->v);
  for (size_t i = 0; i < 12; i++) {
    s->ts[i] = (int64_t)i * 15000;
    s->v[i] = vals[i];
  }
  s->v[9] = tsdb_stale_nan();
  block_t *raw = write_and_open(&set, 0, 179999, NULL, 0);
  char name[64], err[256], path[512];
  assert_int_equal(block_downsample(raw, 60000, tmproot, name, sizeof name, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *r;
  assert_int_equal(block_open(path, &r, err, sizeof err), 0);
  assert_int_equal(block_resolution(r), 60000);
  int64_t ts[16];
  double v[16];
  size_t n;
  const int64_t want_ts[] = {59999, 119999, 179999};
  const double want[][3] = {
      [BLOCK_AGG_MIN] = {10, 3, 11},   [BLOCK_AGG_MAX] = {15, 20, 14},  [BLOCK_AGG_SUM] = {52, 37, 39},
      [BLOCK_AGG_COUNT] = {4, 4, 3},   [BLOCK_AGG_LAST] = {15, 9, 14},
      /* 2+3+0; 5 (15->20) + 3 (reset) + 2 + 4; 2 (9->11) + 3 (11->14, marker skipped) + 0 */
      [BLOCK_AGG_INCREASE] = {5, 14, 5},
  };
  for (int agg = BLOCK_AGG_MIN; agg <= BLOCK_AGG_INCREASE; agg++) {
    read_agg(r, (block_agg_t)agg, ts, v, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++) {
      assert_int_equal(ts[i], want_ts[i]);
      assert_true(v[i] == want[agg][i]);
    }
  }
  read_agg(r, BLOCK_AGG_RAW, ts, v, &n); /* raw view of a rollup = last */
  assert_true(n == 3 && v[1] == 9);
  /* a coarser tier from the rollup equals the same tier from raw data */
  assert_int_equal(block_downsample(r, 180000, tmproot, name, sizeof name, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *r2;
  assert_int_equal(block_open(path, &r2, err, sizeof err), 0);
  assert_int_equal(block_downsample(raw, 180000, tmproot, name, sizeof name, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *r3;
  assert_int_equal(block_open(path, &r3, err, sizeof err), 0);
  const double want3[] = {[BLOCK_AGG_MIN] = 3, [BLOCK_AGG_MAX] = 20, [BLOCK_AGG_SUM] = 128,
                          [BLOCK_AGG_COUNT] = 11, [BLOCK_AGG_LAST] = 14, [BLOCK_AGG_INCREASE] = 24};
  for (int agg = BLOCK_AGG_MIN; agg <= BLOCK_AGG_INCREASE; agg++) {
    int64_t ts3[4];
    double v3[4];
    size_t n3;
    read_agg(r2, (block_agg_t)agg, ts, v, &n);
    read_agg(r3, (block_agg_t)agg, ts3, v3, &n3);
    assert_true(n == 1 && n3 == 1 && ts[0] == 179999 && ts3[0] == 179999);
    assert_true(v[0] == want3[agg] && v3[0] == want3[agg]);
  }
  /* bad resolutions */
  assert_int_equal(block_downsample(r, 90000, tmproot, name, sizeof name, err, sizeof err), MD_EINVAL);
  assert_int_equal(block_downsample(r, 60000, tmproot, name, sizeof name, err, sizeof err), MD_EINVAL);
  assert_int_equal(block_downsample(raw, 0, tmproot, name, sizeof name, err, sizeof err), MD_EINVAL);
  /* compaction keeps rollups intact and refuses to mix resolutions */
  block_t *mix[2] = {raw, r};
  assert_int_equal(block_compact(mix, 2, tmproot, NULL, name, sizeof name, err, sizeof err), MD_EINVAL);
  assert_int_equal(block_compact(&r, 1, tmproot, NULL, name, sizeof name, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/%s", tmproot, name);
  block_t *rc;
  assert_int_equal(block_open(path, &rc, err, sizeof err), 0);
  read_agg(rc, BLOCK_AGG_INCREASE, ts, v, &n);
  assert_true(n == 3 && v[0] == 5 && v[1] == 14 && v[2] == 5);
  block_unref(rc);
  block_unref(r3);
  block_unref(r2);
  block_unref(r);
  block_unref(raw);
  free_set(&set);
  md_rm_rf(tmproot);
}

/* ---- corruption -------------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *n) {
  char *p;
  assert_int_equal(md_read_file(path, &p, n), 0);
  return (uint8_t *)p;
}

static void spit(const char *path, const uint8_t *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, p, n), (ssize_t)n);
  close(fd);
}

/* Opens the block and reads everything; returns 0 when all of it read cleanly. */
static int open_and_scan(const char *dir) {
  block_t *b;
  int rc = block_open(dir, &b, NULL, 0);
  if (rc) return rc;
  static const char *tenants[] = {"", "acme", "zeta"};
  for (int t = 0; t < 3 && !rc; t++) {
    block_iter_t *it;
    rc = block_select(b, tenants[t], NULL, 0, INT64_MIN, INT64_MAX, &it, NULL, 0);
    if (rc) break;
    int r;
    while ((r = block_iter_next(it)) == 1) {
      const int64_t *ts;
      const double *v;
      size_t n;
      if ((rc = block_iter_samples(it, BLOCK_AGG_RAW, &ts, &v, &n))) break;
    }
    if (r < 0 && !rc) rc = r;
    block_iter_free(it);
  }
  block_unref(b);
  return rc;
}

static void test_corruption(void **state) {
  (void)state;
  make_tmp();
  tset_t set = gen_set(60, 0, 3600 * 1000, 300);
  char dir[512];
  block_t *b = write_and_open(&set, 0, 3600 * 1000, dir, sizeof dir);
  block_unref(b);
  assert_int_equal(open_and_scan(dir), 0);
  static const char *files[] = {"meta.json", "index", "chunks"};
  for (int f = 0; f < 3; f++) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, files[f]);
    size_t n;
    uint8_t *orig = slurp(path, &n);
    uint8_t *buf = malloc(n);
    /* truncation at many lengths */
    size_t step = n > 2000 ? n / 500 : 1;
    for (size_t len = 0; len < n; len += step) {
      spit(path, orig, len);
      assert_int_equal(open_and_scan(dir), MD_ECORRUPT);
    }
    /* single byte flips */
    for (int k = 0; k < 300; k++) {
      memcpy(buf, orig, n);
      size_t at = rndn(n);
      buf[at] ^= (uint8_t)(1 + rndn(255));
      spit(path, buf, n);
      int rc = open_and_scan(dir);
      if (rc != MD_ECORRUPT) fail_msg("%s: flip at %zu of %zu gave %d", files[f], at, n, rc);
    }
    /* a page of zeros */
    memcpy(buf, orig, n);
    memset(buf + n / 3, 0, n - n / 3 < 4096 ? n - n / 3 : 4096);
    spit(path, buf, n);
    assert_int_equal(open_and_scan(dir), MD_ECORRUPT);
    /* appended garbage */
    uint8_t *longer = malloc(n + 5);
    memcpy(longer, orig, n);
    memcpy(longer + n, "junk!", 5);
    spit(path, longer, n + 5);
    assert_int_equal(open_and_scan(dir), MD_ECORRUPT);
    free(longer);
    spit(path, orig, n);
    assert_int_equal(open_and_scan(dir), 0);
    free(buf);
    free(orig);
  }
  /* a missing file */
  char path[600];
  snprintf(path, sizeof path, "%s/index", dir);
  unlink(path);
  assert_int_equal(open_and_scan(dir), MD_ECORRUPT);
  free_set(&set);
  md_rm_rf(tmproot);
}

int main(void) {
  /* TSDB_TEST_FILTER=test_compact runs one test (timing, debugging). */
  if (getenv("TSDB_TEST_FILTER")) cmocka_set_test_filter(getenv("TSDB_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_matchers),
      cmocka_unit_test(test_label_metadata), cmocka_unit_test(test_writer_rejects_and_delete),
      cmocka_unit_test(test_compact),     cmocka_unit_test(test_downsample),
      cmocka_unit_test(test_corruption),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
