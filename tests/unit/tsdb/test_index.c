/* Index and matcher tests: postings set operations, and tsdb_select's matcher logic against
 * a brute-force reference on random label sets (head, then the same data in blocks). */
#include "tsdb_test_util.h"
#include "tsdb/batch_int.h"
#include "tsdb/index.h"

static void test_reflist_ops(void **state) {
  (void)state;
  reflist_t a = {0}, b = {0}, o = {0};
  for (uint32_t i = 0; i < 100; i += 2) reflist_push(&a, i);
  for (uint32_t i = 0; i < 100; i += 3) reflist_push(&b, i);
  assert_int_equal(reflist_intersect(&o, &a, &b), 0);
  assert_int_equal(o.n, 17); /* multiples of 6 below 100 */
  for (size_t i = 0; i < o.n; i++) assert_int_equal(o.refs[i] % 6, 0);
  assert_int_equal(reflist_subtract(&o, &a, &b), 0);
  assert_int_equal(o.n, 50 - 17);
  reflist_t u = {0};
  reflist_push(&u, 5);
  reflist_push(&u, 1);
  reflist_push(&u, 5);
  reflist_push(&u, 3);
  reflist_sort_unique(&u);
  assert_int_equal(u.n, 3);
  assert_int_equal(u.refs[0], 1);
  assert_int_equal(u.refs[2], 5);
  reflist_free(&a);
  reflist_free(&b);
  reflist_free(&o);
  reflist_free(&u);
}

static void test_symtab(void **state) {
  (void)state;
  symtab_t *t = symtab_new();
  char buf[32];
  uint32_t ids[5000];
  for (int i = 0; i < 5000; i++) {
    snprintf(buf, sizeof buf, "s%d", i);
    ids[i] = symtab_intern(t, buf, strlen(buf));
  }
  for (int i = 0; i < 5000; i++) {
    snprintf(buf, sizeof buf, "s%d", i);
    assert_int_equal(symtab_intern(t, buf, strlen(buf)), ids[i]);
    assert_string_equal(symtab_str(t, ids[i]), buf);
  }
  assert_int_equal(symtab_find(t, "nope", 4), UINT32_MAX);
  assert_int_equal(symtab_find(t, "s1", 1), symtab_find(t, "s", 1)); /* both absent: "s" never interned */
  symtab_free(t);
}

#define NSER 400
static const char *names[] = {"a", "b", "c", "job"};
static const char *vals[] = {"x", "y", "z", "xy", "foo", "bar", "foo.bar", "1"};

typedef struct {
  const char *v[4]; /* NULL = label absent */
} refser_t;

static bool ref_match(const refser_t *s, const tsdb_matcher_t *m, size_t nm) {
  for (size_t i = 0; i < nm; i++) {
    const char *v = "";
    for (int k = 0; k < 4; k++)
      if (strcmp(names[k], m[i].name) == 0 && s->v[k]) v = s->v[k];
    bool ok;
    if (m[i].type == TSDB_MATCH_EQ || m[i].type == TSDB_MATCH_NEQ) {
      ok = strcmp(v, m[i].value) == 0;
      if (m[i].type == TSDB_MATCH_NEQ) ok = !ok;
    } else {
      core_regex_t *re;
      assert_int_equal(core_regex_compile(m[i].value, strlen(m[i].value), &re, NULL, 0), 0);
      ok = core_regex_match(re, v, strlen(v));
      core_regex_free(re);
      if (m[i].type == TSDB_MATCH_NRE) ok = !ok;
    }
    if (!ok) return false;
  }
  return true;
}

static void check_random_matchers(tsdb_t *db, refser_t *ser, unsigned seed) {
  srand(seed);
  static const char *res[] = {".*", ".+", "x|y", "foo.*", "x.*", "", "z", "(foo|bar)", "[a-z]+", "1|x|zz", ".", "f.o\\.bar"};
  for (int iter = 0; iter < 300; iter++) {
    tsdb_matcher_t m[3];
    size_t nm = 1 + (size_t)(rand() % 3);
    char extra[3][8];
    for (size_t i = 0; i < nm; i++) {
      m[i].type = (tsdb_match_type_t)(rand() % 4);
      m[i].name = names[rand() % 4];
      if (m[i].type == TSDB_MATCH_EQ || m[i].type == TSDB_MATCH_NEQ) {
        int r = rand() % 10;
        m[i].value = r < 8 ? vals[r] : r == 8 ? "" : "absent";
      } else {
        m[i].value = res[rand() % 12];
      }
      (void)extra;
    }
    /* Prometheus requires one matcher not matching "": the engine still answers. */
    char expect[NSER];
    size_t nexp = 0;
    for (int s = 0; s < NSER; s++) {
      expect[s] = ref_match(&ser[s], m, nm);
      nexp += (size_t)expect[s];
    }
    tsdb_query_t *q;
    char err[128];
    assert_int_equal(tsdb_select(db, "", m, nm, INT64_MIN, INT64_MAX, NULL, &q, err, sizeof err), 0);
    size_t got = 0;
    while (tsdb_query_next(q) == 1) {
      size_t nl;
      const tsdb_label_t *ls = tsdb_query_labels(q, &nl);
      /* The series number is in label "id". */
      int id = -1;
      for (size_t i = 0; i < nl; i++)
        if (strcmp(ls[i].name, "id") == 0) id = atoi(ls[i].value);
      assert_true(id >= 0 && id < NSER);
      if (!expect[id]) {
        fprintf(stderr, "unexpected series %d for matchers:", id);
        for (size_t i = 0; i < nm; i++) fprintf(stderr, " %s/%d/%s", m[i].name, m[i].type, m[i].value);
        fprintf(stderr, "\n");
      }
      assert_true(expect[id]);
      got++;
    }
    tsdb_query_free(q);
    if (got != nexp) {
      fprintf(stderr, "got %zu want %zu for matchers:", got, nexp);
      for (size_t i = 0; i < nm; i++) fprintf(stderr, " %s/%d/%s", m[i].name, m[i].type, m[i].value);
      fprintf(stderr, "\n");
    }
    assert_int_equal(got, nexp);
  }
}

static void test_matchers_vs_bruteforce(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  tsdb_options_t o;
  tsdb_options_default(&o);
  o.background = false;
  tsdb_t *db = tu_open(dir, &o);
  static refser_t ser[NSER];
  srand(42);
  tsdb_batch_t *b = tsdb_batch_new();
  for (int s = 0; s < NSER; s++) {
    tsdb_label_t ls[6];
    size_t n = 0;
    char id[16];
    snprintf(id, sizeof id, "%d", s);
    ls[n++] = (tsdb_label_t){"__name__", "m"};
    ls[n++] = (tsdb_label_t){"id", id};
    for (int k = 0; k < 4; k++) {
      ser[s].v[k] = rand() % 4 == 0 ? NULL : vals[rand() % 8];
      if (ser[s].v[k]) ls[n++] = (tsdb_label_t){names[k], ser[s].v[k]};
    }
    assert_int_equal(tsdb_batch_series(b, ls, n), 0);
    assert_int_equal(tsdb_batch_sample(b, 1000 + s, s), 0);
  }
  assert_int_equal(tsdb_append(db, "", b, NULL), 0);
  tsdb_batch_free(b);
  check_random_matchers(db, ser, 1);
  /* The same logic must hold once the data lives in a block. */
  assert_int_equal(tsdb_flush(db), 0);
  tsdb_stats_t st;
  tsdb_get_stats(db, &st);
  assert_int_equal(st.head_samples, 0);
  check_random_matchers(db, ser, 2);
  tsdb_close(db);
  md_rm_rf(dir);
  free(dir);
}

/* The append path hashes with the batch's stored lengths; it must agree with the strlen
 * hash used at creation and replay for every length (tails of 0..7 bytes, long strings) and
 * after the batch sorted the labels. */
static void test_hash_with_lengths(void **state) {
  (void)state;
  srand(7);
  tsdb_batch_t *b = tsdb_batch_new();
  char names[8][48], values[8][48];
  for (int iter = 0; iter < 2000; iter++) {
    tsdb_batch_reset(b);
    int n = 1 + rand() % 8;
    tsdb_batch_series_begin(b);
    /* Distinct names (first letters differ) given in descending order: the batch sorts. */
    for (int k = n - 1; k >= 0; k--) {
      int nl = 1 + rand() % 40, vl = 1 + rand() % 40;
      for (int c = 0; c < nl; c++) names[k][c] = (char)('a' + rand() % 26);
      names[k][0] = (char)('a' + k * 3);
      for (int c = 0; c < vl; c++) values[k][c] = (char)(1 + rand() % 255);
      assert_int_equal(tsdb_batch_label(b, names[k], (size_t)nl, values[k], (size_t)vl), 0);
    }
    assert_int_equal(tsdb_batch_series_end(b), 0);
    const tsdb_label_t *ls;
    size_t nl;
    tsdb_batch_get(b, 0, &ls, &nl, NULL, NULL);
    lhash_t x = labels_hash(ls, nl), y = labels_hash_len(ls, batch_label_lens(b, 0), nl);
    assert_true(x.h1 == y.h1 && x.h2 == y.h2);
    /* The same labels with names and values in separate buffers (not the batch's
     * name NUL value layout): the byte-fed path must agree with the flat one. */
    char sep[8][2][48];
    tsdb_label_t apart[8];
    label_lens_t lens[8];
    for (size_t k = 0; k < nl; k++) {
      lens[k] = batch_label_lens(b, 0)[k];
      memcpy(sep[k][0], ls[k].name, lens[k].name + 1);
      memcpy(sep[k][1], ls[k].value, lens[k].value + 1);
      apart[k] = (tsdb_label_t){sep[k][0], sep[k][1]};
    }
    lhash_t z = labels_hash_len(apart, lens, nl);
    assert_true(x.h1 == z.h1 && x.h2 == z.h2);
  }
  tsdb_batch_free(b);
}

/* The hash is trusted as series identity (128 bits): label sets that differ only in where
 * a name or value ends, or in a byte at any position of a tail word, must differ in both
 * halves; and many similar sets (node-exporter shaped, one counter apart) never share h1
 * or h2. */
static lhash_t hash_of(const char *const *kv, size_t n) {
  tsdb_label_t ls[8];
  for (size_t i = 0; i < n; i++) ls[i] = (tsdb_label_t){kv[2 * i], kv[2 * i + 1]};
  return labels_hash(ls, n);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_hash_boundaries(void **state) {
  (void)state;
  const char *sets[][4] = {
      {"a", "bc", NULL, NULL},      {"ab", "c", NULL, NULL},      {"a", "b", "c", "d"},
      {"a", "bc", "d", "e"},        {"a", "b", "cd", "e"},        {"abcdefg", "h", NULL, NULL},
      {"abcdefgh", "x", NULL, NULL}, {"abcdefg", "hx", NULL, NULL}, {"abcdefghijklmno", "p", NULL, NULL},
      {"abcdefghijklmn", "op", NULL, NULL}, {"x", "1234567", NULL, NULL}, {"x", "12345678", NULL, NULL},
  };
  size_t ns = sizeof sets / sizeof sets[0];
  lhash_t h[16];
  for (size_t i = 0; i < ns; i++) h[i] = hash_of(sets[i], sets[i][2] ? 2 : 1);
  for (size_t i = 0; i < ns; i++)
    for (size_t j = i + 1; j < ns; j++) assert_true(h[i].h1 != h[j].h1 && h[i].h2 != h[j].h2);
  /* Every single-bit change of a 1..20-byte value changes both halves. */
  char v[24];
  for (int len = 1; len <= 20; len++) {
    memset(v, 'q', (size_t)len);
    v[len] = 0;
    const char *kv[2] = {"instance", v};
    lhash_t base = hash_of(kv, 1);
    for (int bit = 0; bit < 8 * len; bit++) {
      v[bit / 8] ^= (char)(1 << (bit % 8));
      if (v[bit / 8] != 0) {
        lhash_t x = hash_of(kv, 1);
        assert_true(x.h1 != base.h1 && x.h2 != base.h2);
      }
      v[bit / 8] ^= (char)(1 << (bit % 8));
    }
  }
  /* 200 k similar sets: host-NNNNN x 20 metrics. */
  enum { HOSTS = 10000, METRICS = 20 };
  uint64_t *h1 = malloc(sizeof *h1 * HOSTS * METRICS), *h2 = malloc(sizeof *h2 * HOSTS * METRICS);
  assert_non_null(h1);
  assert_non_null(h2);
  char host[32], metric[32];
  size_t n = 0;
  for (int hh = 0; hh < HOSTS; hh++)
    for (int m = 0; m < METRICS; m++) {
      snprintf(host, sizeof host, "host_%d", hh);
      snprintf(metric, sizeof metric, "node_metric_%d_total", m);
      const char *kv[] = {"__name__", metric, "hostname", host, "job", "node", "region", "eu-west-1"};
      lhash_t x = hash_of(kv, 4);
      h1[n] = x.h1;
      h2[n++] = x.h2;
    }
  qsort(h1, n, sizeof *h1, cmp_u64);
  qsort(h2, n, sizeof *h2, cmp_u64);
  for (size_t i = 1; i < n; i++) assert_true(h1[i] != h1[i - 1] && h2[i] != h2[i - 1]);
  free(h1);
  free(h2);
}

int main(void) {
  log_set_level(LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reflist_ops),
      cmocka_unit_test(test_symtab),
      cmocka_unit_test(test_matchers_vs_bruteforce),
      cmocka_unit_test(test_hash_with_lengths),
      cmocka_unit_test(test_hash_boundaries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
