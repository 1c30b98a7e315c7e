/* Relabeling: a table of (rules, input labels) -> expected labels or drop, covering every
 * action and the expansion rules; and a table of invalid configurations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scrape/scrape.h"

typedef struct {
  const char *rules; /* JSON array */
  const char *in;    /* "a=1,b=2" */
  const char *want;  /* sorted "a=1,b=2", or NULL for dropped */
} relabel_case_t;

static const relabel_case_t CASES[] = {
    /* replace: defaults (regex (.*), replacement $1) copy the joined value. */
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\"}]", "a=foo", "a=foo,b=foo"},
    {"[{\"source_labels\":[\"a\",\"c\"],\"target_label\":\"d\"}]", "a=1,c=2", "a=1,c=2,d=1;2"},
    {"[{\"source_labels\":[\"a\",\"c\"],\"separator\":\"-\",\"target_label\":\"d\"}]", "a=1", "a=1,d=1-"},
    {"[{\"source_labels\":[\"a\"],\"regex\":\"f(o+)\",\"target_label\":\"b\",\"replacement\":\"x${1}y\"}]",
     "a=foo", "a=foo,b=xooy"},
    /* Anchored: a partial match is no match. */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"o+\",\"target_label\":\"b\"}]", "a=foo", "a=foo"},
    /* $1x is group "1x" (unknown) in Go: expands to nothing; the label is then deleted. */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"(.*)\",\"target_label\":\"a\",\"replacement\":\"$1x\"}]",
     "a=foo,b=1", "b=1"},
    {"[{\"source_labels\":[\"a\"],\"regex\":\"(?P<word>f)(.*)\",\"target_label\":\"b\",\"replacement\":\"$"
     "word-$2-$$\"}]",
     "a=foo", "a=foo,b=f-oo-$"},
    /* Target label from a template. */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"(.+)=(.+)\",\"target_label\":\"x_$1\",\"replacement\":\"$2\"}]",
     "a=k=v", "a=k=v,x_k=v"},
    /* Invalid target after expansion: nothing happens. */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"(.+)\",\"target_label\":\"$1\"}]", "a=1bad", "a=1bad"},
    /* __address__ rewriting, the classic. */
    {"[{\"source_labels\":[\"__address__\"],\"regex\":\"([^:]+)(?::\\\\d+)?\",\"target_label\":\"__address__"
     "\",\"replacement\":\"$1:9100\"}]",
     "__address__=host.example:80", "__address__=host.example:9100"},
    /* A static replacement without source labels. */
    {"[{\"target_label\":\"env\",\"replacement\":\"prod\"}]", "a=1", "a=1,env=prod"},
    /* keep / drop */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"x|y\",\"action\":\"keep\"}]", "a=y", "a=y"},
    {"[{\"source_labels\":[\"a\"],\"regex\":\"x|y\",\"action\":\"keep\"}]", "a=z", NULL},
    {"[{\"source_labels\":[\"a\"],\"regex\":\"x|y\",\"action\":\"drop\"}]", "a=x", NULL},
    {"[{\"source_labels\":[\"a\"],\"regex\":\"x|y\",\"action\":\"drop\"}]", "a=xy", "a=xy"},
    /* keep with an absent label: the value is empty. */
    {"[{\"source_labels\":[\"missing\"],\"regex\":\"\",\"action\":\"keep\"}]", "a=1", "a=1"},
    {"[{\"source_labels\":[\"__name__\"],\"regex\":\"go_.*\",\"action\":\"drop\"}]", "__name__=go_gc_seconds",
     NULL},
    /* '.' does not match a newline (Go default flags). */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"a.b\",\"action\":\"keep\"}]", "a=a\nb", NULL},
    /* keepequal / dropequal */
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"action\":\"keepequal\"}]", "a=1,b=1", "a=1,b=1"},
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"action\":\"keepequal\"}]", "a=1,b=2", NULL},
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"action\":\"dropequal\"}]", "a=1,b=1", NULL},
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"action\":\"dropequal\"}]", "a=1,b=2", "a=1,b=2"},
    /* hashmod: MD5, last 8 bytes big-endian, modulo (expected values from Python hashlib). */
    {"[{\"source_labels\":[\"a\"],\"modulus\":1000,\"target_label\":\"h\",\"action\":\"hashmod\"}]", "a=foo",
     "a=foo,h=696"},
    {"[{\"source_labels\":[\"a\"],\"modulus\":8,\"target_label\":\"h\",\"action\":\"hashmod\"}]",
     "a=localhost:9100", "a=localhost:9100,h=7"},
    /* labelmap */
    {"[{\"regex\":\"__meta_(.+)\",\"action\":\"labelmap\"}]", "__meta_zone=a,__meta_rack=r1,x=1",
     "__meta_rack=r1,__meta_zone=a,rack=r1,x=1,zone=a"},
    {"[{\"regex\":\"(.+)_tag\",\"replacement\":\"t_$1\",\"action\":\"labelmap\"}]", "env_tag=p",
     "env_tag=p,t_env=p"},
    /* labeldrop / labelkeep */
    {"[{\"regex\":\"__meta_.*\",\"action\":\"labeldrop\"}]", "__meta_zone=a,job=j,x=1", "job=j,x=1"},
    {"[{\"regex\":\"job|instance\",\"action\":\"labelkeep\"}]", "instance=i,job=j,x=1", "instance=i,job=j"},
    /* lowercase / uppercase */
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"action\":\"lowercase\"}]", "a=FoO", "a=FoO,b=foo"},
    {"[{\"source_labels\":[\"a\",\"c\"],\"target_label\":\"b\",\"action\":\"uppercase\"}]", "a=x,c=y",
     "a=x,b=X;Y,c=y"},
    /* Action names are case-insensitive (Prometheus lower-cases them). */
    {"[{\"source_labels\":[\"a\"],\"regex\":\"1\",\"action\":\"Drop\"}]", "a=1", NULL},
    /* Rules apply in order; a later rule sees an earlier rule's result. */
    {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\"},{\"source_labels\":[\"b\"],\"regex\":\"1\","
     "\"action\":\"drop\"}]",
     "a=1", NULL},
    /* No rules: unchanged. */
    {"[]", "a=1,b=2", "a=1,b=2"},
};

static void parse_labels(scrape_labels_t *ls, const char *in) {
  char *copy = strdup(in);
  char *save = NULL;
  for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kv, '=');
    assert_non_null(eq);
    *eq = 0;
    assert_int_equal(scrape_labels_set(ls, kv, eq + 1), 0);
  }
  free(copy);
}

static void render(const scrape_labels_t *ls, char *out, size_t n) {
  size_t nl;
  const tsdb_label_t *l = scrape_labels_items(ls, &nl);
  out[0] = 0;
  for (size_t i = 0; i < nl; i++) {
    size_t len = strlen(out);
    snprintf(out + len, n - len, "%s%s=%s", i ? "," : "", l[i].name, l[i].value);
  }
}

static void test_relabel_table(void **state) {
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    const relabel_case_t *c = &CASES[i];
    json_error_t je;
    json_t *j = json_loads(c->rules, 0, &je);
    if (!j) fprintf(stderr, "case %zu: bad JSON: %s\n", i, je.text);
    assert_non_null(j);
    scrape_relabel_t *r = NULL;
    char err[256] = "";
    int rc = scrape_relabel_parse(j, NULL, &r, err, sizeof err);
    if (rc) fprintf(stderr, "case %zu: %s\n", i, err);
    assert_int_equal(rc, 0);
    scrape_labels_t *ls = scrape_labels_new();
    parse_labels(ls, c->in);
    int kept = scrape_relabel_apply(r, ls);
    char got[512];
    render(ls, got, sizeof got);
    if (c->want == NULL ? kept != 0 : (kept != 1 || strcmp(got, c->want) != 0)) {
      fprintf(stderr, "case %zu %s on {%s}: got %s {%s}, want %s\n", i, c->rules, c->in,
              kept ? "kept" : "dropped", got, c->want ? c->want : "dropped");
      fail();
    }
    scrape_labels_free(ls);
    scrape_relabel_free(r);
    json_decref(j);
  }
}

static void test_relabel_invalid(void **state) {
  static const struct {
    const char *rules, *msg;
  } bad[] = {
      {"{}", "must be a list"},
      {"[1]", "mapping"},
      {"[{\"action\":\"explode\"}]", "unknown relabel action"},
      {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"regex\":\"(\"}]", "invalid regex"},
      {"[{\"source_labels\":[\"a\"]}]", "target_label"},
      {"[{\"source_labels\":[\"a\"],\"target_label\":\"1x\"}]", "target_label"},
      {"[{\"source_labels\":[\"a\"],\"target_label\":\"h\",\"action\":\"hashmod\"}]", "modulus"},
      {"[{\"source_labels\":[\"a\"],\"action\":\"lowercase\"}]", "target_label"},
      {"[{\"source_labels\":[\"a\"],\"target_label\":\"b\",\"regex\":\"x\",\"action\":\"keepequal\"}]",
       "only"},
      {"[{\"source_labels\":[\"a\"],\"regex\":\"x\",\"action\":\"labeldrop\"}]", "only 'regex'"},
      {"[{\"source_labels\":[\"a-b\"],\"target_label\":\"b\"}]", "not a valid label name"},
      {"[{\"source_labels\":\"a\",\"target_label\":\"b\"}]", "must be a list"},
      {"[{\"target_label\":\"b\",\"colour\":\"red\"}]", "unknown key"},
      {"[{\"target_label\":\"b\",\"modulus\":-1}]", "modulus"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *j = json_loads(bad[i].rules, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    scrape_relabel_t *r = NULL;
    char err[256] = "";
    int rc = scrape_relabel_parse(j, "metric_relabel_configs", &r, err, sizeof err);
    if (rc != MD_EINVAL || !strstr(err, bad[i].msg)) {
      fprintf(stderr, "bad case %zu %s: rc %d err \"%s\", want \"%s\"\n", i, bad[i].rules, rc, err,
              bad[i].msg);
      fail();
    }
    assert_null(r);
    json_decref(j);
  }
  /* The error names the entry. */
  json_t *j = json_loads("[{\"target_label\":\"ok\"},{\"action\":\"nope\"}]", 0, NULL);
  scrape_relabel_t *r = NULL;
  char err[256];
  assert_int_equal(scrape_relabel_parse(j, "relabel_configs", &r, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "relabel_configs[1]"));
  json_decref(j);
}

static void test_labels_set(void **state) {
  scrape_labels_t *ls = scrape_labels_new();
  assert_int_equal(scrape_labels_set(ls, "b", "2"), 0);
  assert_int_equal(scrape_labels_set(ls, "a", "1"), 0);
  assert_int_equal(scrape_labels_set(ls, "c", "3"), 0);
  assert_int_equal(scrape_labels_set(ls, "b", "20"), 0);
  size_t n;
  const tsdb_label_t *l = scrape_labels_items(ls, &n);
  assert_int_equal(n, 3);
  assert_string_equal(l[0].name, "a");
  assert_string_equal(l[1].value, "20");
  assert_int_equal(scrape_labels_set(ls, "a", ""), 0); /* empty deletes */
  assert_null(scrape_labels_get(ls, "a"));
  scrape_labels_del(ls, "c");
  l = scrape_labels_items(ls, &n);
  assert_int_equal(n, 1);
  tsdb_label_t in[] = {{"z", "1"}, {"y", "2"}, {"z", "3"}};
  assert_int_equal(scrape_labels_assign(ls, in, 3), 0);
  l = scrape_labels_items(ls, &n);
  assert_int_equal(n, 2);
  assert_string_equal(l[0].name, "y");
  assert_string_equal(l[1].value, "3");
  scrape_labels_free(ls);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_relabel_table),
      cmocka_unit_test(test_relabel_invalid),
      cmocka_unit_test(test_labels_set),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
