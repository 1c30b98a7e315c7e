/* Keeps docs/configuration.md true to config.c's tables: every typed setting has a row whose
 * default is the one in the code, every raw section and every extra environment variable
 * (the seeds' names) is documented next to the key it sets, and every dotted key the doc's
 * tables name exists. Adding a setting without documenting it fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/core.h"

#define MAX_ROWS 512
#define MAX_TOKENS 16

typedef struct row {
  int line;
  char *tokens[2][MAX_TOKENS]; /* backticked spans of the first and second cell */
  size_t ntokens[2];
  char *text;                  /* the whole row */
} row_t;

static row_t rows[MAX_ROWS];
static size_t nrows;
static char *doc;

/* Collects the `code spans` of cell text [p, e). */
static void cell_tokens(const char *p, const char *e, char **out, size_t *n) {
  *n = 0;
  while (p < e && *n < MAX_TOKENS) {
    const char *a = memchr(p, '`', (size_t)(e - p));
    if (!a) break;
    const char *b = memchr(a + 1, '`', (size_t)(e - a - 1));
    if (!b) break;
    out[(*n)++] = strndup(a + 1, (size_t)(b - a - 1));
    p = b + 1;
  }
}

static int load_doc(void **state) {
  (void)state;
  const char *src = getenv("SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/docs/configuration.md", src ? src : "../..");
  size_t len = 0;
  if (md_read_file(path, &doc, &len) != 0) {
    fprintf(stderr, "cannot read %s (set SOURCE_DIR)\n", path);
    return -1;
  }
  int line = 0;
  for (char *p = doc; *p;) {
    char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    line++;
    if (n > 1 && p[0] == '|' && p[1] != '-' && nrows < MAX_ROWS) {
      row_t *r = &rows[nrows++];
      r->line = line;
      r->text = strndup(p, n);
      /* cells: | first | second | ... */
      const char *c1 = p + 1, *e1 = memchr(c1, '|', n - 1);
      if (e1) {
        cell_tokens(c1, e1, r->tokens[0], &r->ntokens[0]);
        const char *e2 = memchr(e1 + 1, '|', (size_t)(p + n - e1 - 1));
        if (e2) cell_tokens(e1 + 1, e2, r->tokens[1], &r->ntokens[1]);
      }
    }
    p = nl ? nl + 1 : p + n;
  }
  return nrows ? 0 : -1;
}

static int free_doc(void **state) {
  (void)state;
  for (size_t i = 0; i < nrows; i++) {
    for (int c = 0; c < 2; c++)
      for (size_t j = 0; j < rows[i].ntokens[c]; j++) free(rows[i].tokens[c][j]);
    free(rows[i].text);
  }
  free(doc);
  return 0;
}

/* The row documenting key (a code span in its first cell) and the key's position there. */
static const row_t *row_of(const char *key, size_t *pos) {
  for (size_t i = 0; i < nrows; i++)
    for (size_t j = 0; j < rows[i].ntokens[0]; j++)
      if (strcmp(rows[i].tokens[0][j], key) == 0) {
        if (pos) *pos = j;
        return &rows[i];
      }
  return NULL;
}

/* "[.005, .01]" and ".005,.01" compare equal: brackets and spaces are presentation. */
static void normalise(const char *s, char *out, size_t n) {
  size_t j = 0;
  for (; *s && j + 1 < n; s++)
    if (*s != ' ' && *s != '[' && *s != ']') out[j++] = *s;
  out[j] = 0;
}

static void test_every_setting_documented_with_its_default(void **state) {
  (void)state;
  /* Settings whose code default is "unset" but whose unset value means something the doc
   * spells out. */
  static const struct {
    const char *key, *doc_default;
  } implicit[] = {{"collectors.gpu.nvml_library", "libnvidia-ml.so.1"}};
  const char *path, *def;
  size_t bad = 0, n = 0;
  for (size_t i = 0; config_setting_at(i, &path, &def); i++, n++) {
    size_t pos = 0;
    const row_t *r = row_of(path, &pos);
    if (!r) {
      fprintf(stderr, "docs/configuration.md: no table row for setting %s\n", path);
      bad++;
      continue;
    }
    const char *doc_def = pos < r->ntokens[1] ? r->tokens[1][pos] : NULL;
    if (!def) {
      const char *want = NULL;
      for (size_t k = 0; k < sizeof implicit / sizeof implicit[0]; k++)
        if (strcmp(implicit[k].key, path) == 0) want = implicit[k].doc_default;
      bool ok = want ? doc_def && strcmp(doc_def, want) == 0
                     : !doc_def || strcmp(doc_def, "{}") == 0 || strcmp(doc_def, "[]") == 0;
      if (!ok) {
        fprintf(stderr, "docs/configuration.md:%d: %s is unset by default, the doc says `%s`\n", r->line, path,
                doc_def ? doc_def : "");
        bad++;
      }
      continue;
    }
    char a[512], b[512];
    normalise(def, a, sizeof a);
    normalise(doc_def ? doc_def : "", b, sizeof b);
    if (strcmp(a, b) != 0) {
      fprintf(stderr, "docs/configuration.md:%d: %s defaults to `%s` in config.c, the doc says `%s`\n", r->line, path,
              def, doc_def ? doc_def : "(nothing)");
      bad++;
    }
  }
  assert_true(n > 50); /* the table was really walked */
  assert_int_equal(bad, 0);
}

static void test_sections_and_env_aliases_documented(void **state) {
  (void)state;
  size_t bad = 0;
  const char *key, *env, *path;
  for (size_t i = 0; config_section_at(i, &key); i++) {
    if (!row_of(key, NULL)) {
      fprintf(stderr, "docs/configuration.md: no table row for section %s\n", key);
      bad++;
    }
  }
  for (size_t i = 0; config_env_alias_at(i, &env, &path); i++) {
    char want_env[160], want_key[160];
    snprintf(want_env, sizeof want_env, "`%s`", env);
    snprintf(want_key, sizeof want_key, "`%s`", path);
    bool found = false;
    for (size_t r = 0; r < nrows && !found; r++) {
      /* the variable's own span, on the same row as the key it sets */
      const char *t = rows[r].text;
      found = strstr(t, want_env) && strstr(t, want_key);
    }
    if (!found) {
      fprintf(stderr, "docs/configuration.md: environment variable %s (sets %s) is not in a row with its key\n", env,
              path);
      bad++;
    }
  }
  assert_int_equal(bad, 0);
}

static bool looks_like_key(const char *t) {
  if (!*t || !strchr(t, '.')) return false;
  for (const char *p = t; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.')) return false;
  return t[0] >= 'a' && t[0] <= 'z';
}

static void test_documented_keys_exist(void **state) {
  (void)state;
  size_t bad = 0;
  for (size_t r = 0; r < nrows; r++) {
    for (size_t j = 0; j < rows[r].ntokens[0]; j++) {
      const char *t = rows[r].tokens[0][j];
      if (!looks_like_key(t)) continue;
      const char *path, *def;
      bool known = false;
      for (size_t i = 0; !known && config_setting_at(i, &path, &def); i++) known = strcmp(path, t) == 0;
      if (!known) {
        fprintf(stderr, "docs/configuration.md:%d: documents %s, which config.c does not know\n", rows[r].line, t);
        bad++;
      }
    }
  }
  assert_int_equal(bad, 0);
}

/* A documented default is valid input: a user copying it from the doc into --set (or the
 * file) gets no error. */
static void test_documented_defaults_parse(void **state) {
  (void)state;
  char err[256];
  const char *path, *def;
  for (size_t i = 0; config_setting_at(i, &path, &def); i++) {
    if (!def) continue;
    size_t pos = 0;
    const row_t *r = row_of(path, &pos);
    if (!r || pos >= r->ntokens[1]) continue; /* reported by the test above */
    char ov[600];
    snprintf(ov, sizeof ov, "%s=%s", path, r->tokens[1][pos]);
    /* lists are written [a, b] in the doc and a,b on the command line */
    char *o = ov;
    for (char *p = ov; *p; p++)
      if (*p != '[' && *p != ']') *o++ = *p;
    *o = 0;
    const char *ovs[1] = {ov};
    config_source_t src = {.overrides = ovs, .n_overrides = 1};
    config_t *c = NULL;
    int rc = config_load(&src, &c, err, sizeof err);
    if (rc) fprintf(stderr, "docs/configuration.md:%d: the documented default of %s does not parse: %s\n", r->line,
                    path, err);
    assert_int_equal(rc, 0);
    config_free(c);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_setting_documented_with_its_default),
      cmocka_unit_test(test_sections_and_env_aliases_documented),
      cmocka_unit_test(test_documented_keys_exist),
      cmocka_unit_test(test_documented_defaults_parse),
  };
  return cmocka_run_group_tests(tests, load_doc, free_doc);
}
