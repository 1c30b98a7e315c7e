/* Anchored regular expressions with Prometheus semantics on PCRE2 (JIT when available).
 * Prometheus anchors every label-matcher regex: "foo" matches only "foo", so we compile
 * ^(?:re)$ . Patterns that are literal alternations are recognised so indexes can do set
 * lookups instead of scanning. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "core.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LITERALS 64

struct core_regex {
  pcre2_code *code;
  size_t nlits;
  const char *lits[MAX_LITERALS];
  size_t lit_lens[MAX_LITERALS];
  char *lit_storage;
};

/* If pat consists only of plain characters and '|', split it into literals. */
static void find_literals(core_regex_t *re, const char *pat, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (strchr("\\^$.[]()*+?{}", pat[i])) return;
  }
  re->lit_storage = malloc(n + 1);
  if (!re->lit_storage) return;
  memcpy(re->lit_storage, pat, n);
  re->lit_storage[n] = 0;
  size_t start = 0, k = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || pat[i] == '|') {
      if (k == MAX_LITERALS) {
        re->nlits = 0;
        return;
      }
      re->lits[k] = re->lit_storage + start;
      re->lit_lens[k] = i - start;
      k++;
      start = i + 1;
    }
  }
  re->nlits = k;
}

int core_regex_compile(const char *pattern, size_t n, core_regex_t **out, char *err, size_t errlen) {
  core_regex_t *re = calloc(1, sizeof *re);
  if (!re) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  sb_t sb = {0};
  sb_puts(&sb, "^(?:");
  sb_append(&sb, pattern, n);
  sb_puts(&sb, ")$");
  if (sb.oom) {
    free(re);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  int ec;
  PCRE2_SIZE eo;
  /* DOTALL: in RE2 (Go), '.' does not match \n by default either, but Prometheus sets the
   * 's' flag for label matchers, so '.' matches everything. */
  re->code = pcre2_compile((PCRE2_SPTR)sb.buf, sb.len, PCRE2_UTF | PCRE2_DOTALL, &ec, &eo, NULL);
  sb_free(&sb);
  if (!re->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    size_t pos = eo >= 4 ? eo - 4 : 0;
    free(re);
    return md_error(err, errlen, MD_EINVAL, "invalid regular expression at position %zu: %s", pos, (char *)msg);
  }
  pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* failure is fine: interpreter fallback */
  find_literals(re, pattern, n);
  *out = re;
  return 0;
}

/* One match-data block per thread, found through a thread-local pointer (fast) and
 * registered under a pthread key whose destructor frees it when the thread exits (a bare
 * _Thread_local pointer would leak it for every thread that ever matched a regex). */
static _Thread_local pcre2_match_data *tls_md;
static pthread_key_t md_key;
static pthread_once_t md_key_once = PTHREAD_ONCE_INIT;

static void md_free(void *p) { pcre2_match_data_free(p); }
static void md_key_init(void) { (void)pthread_key_create(&md_key, md_free); }

static pcre2_match_data *match_data(void) {
  if (!tls_md) {
    tls_md = pcre2_match_data_create(16, NULL);
    pthread_once(&md_key_once, md_key_init);
    if (tls_md) (void)pthread_setspecific(md_key, tls_md);
  }
  return tls_md;
}

bool core_regex_match(const core_regex_t *re, const char *s, size_t n) {
  if (re->nlits) {
    for (size_t i = 0; i < re->nlits; i++)
      if (re->lit_lens[i] == n && memcmp(re->lits[i], s, n) == 0) return true;
    return false;
  }
  pcre2_match_data *md = match_data();
  if (!md) return false;
  int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
  return rc >= 0;
}

int core_regex_captures(const core_regex_t *re, const char *s, size_t n, size_t off[][2], int max) {
  pcre2_match_data *md = match_data();
  if (!md) return -1;
  int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
  if (rc < 0) return -1;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  uint32_t cnt = rc == 0 ? pcre2_get_ovector_count(md) : (uint32_t)rc;
  int k = 0;
  for (uint32_t i = 0; i < cnt && k < max; i++, k++) {
    if (ov[2 * i] == PCRE2_UNSET) {
      off[k][0] = off[k][1] = 0;
    } else {
      off[k][0] = ov[2 * i];
      off[k][1] = ov[2 * i + 1];
    }
  }
  return k;
}

size_t core_regex_literals(const core_regex_t *re, const char *const **lits, const size_t **lens) {
  if (lits) *lits = re->lits;
  if (lens) *lens = re->lit_lens;
  return re->nlits;
}

void core_regex_free(core_regex_t *re) {
  if (!re) return;
  pcre2_code_free(re->code);
  free(re->lit_storage);
  free(re);
}
