/*
 * Relabeling with Prometheus semantics (prometheus/model/relabel): every action, regexes
 * fully anchored, `$1`/`${1}`/`$name`/`${name}` expansion as Go's Regexp.Expand does it
 * (a `$` followed by the longest run of word characters; digits name a group by number; an
 * unknown group expands to nothing; `$$` is a literal `$`), hashmod from the MD5 digest.
 *
 * Regexes are compiled here with PCRE2 directly (not core_regex) for two reasons: relabel
 * regexes follow Go's default flags ('.' does not match a newline), and the match data must
 * belong to the caller's scrape_labels_t so worker threads never allocate per match.
 *
 * Threading: a parsed scrape_relabel_t is immutable and shared; see scrape_labels_t.
 */
#include "scrape_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
  A_REPLACE,
  A_KEEP,
  A_DROP,
  A_KEEPEQUAL,
  A_DROPEQUAL,
  A_HASHMOD,
  A_LABELMAP,
  A_LABELDROP,
  A_LABELKEEP,
  A_LOWERCASE,
  A_UPPERCASE,
} action_t;

static const char *const ACTIONS[] = {"replace",   "keep",      "drop",     "keepequal",
                                      "dropequal", "hashmod",   "labelmap", "labeldrop",
                                      "labelkeep", "lowercase", "uppercase"};

typedef struct {
  action_t action;
  char **src;
  size_t nsrc;
  char *sep;
  char *target;
  char *replacement;
  pcre2_code *re;
  bool default_regex; /* "(.*)": matches everything, captures all */
  uint64_t modulus;
} rule_t;

struct scrape_relabel {
  rule_t *rules;
  size_t n;
};

bool scrape_valid_label_name(const char *s) {
  if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
  for (s++; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
  return true;
}

const char *scrape_json_text(const json_t *v, char *buf, size_t n) {
  if (json_is_string(v)) return json_string_value(v);
  if (json_is_integer(v)) {
    snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    snprintf(buf, n, "%.17g", json_real_value(v));
    return buf;
  }
  if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
  return NULL;
}

static void rule_free(rule_t *r) {
  for (size_t i = 0; i < r->nsrc; i++)
    free(r->src[i]);
  free(r->src);
  free(r->sep);
  free(r->target);
  free(r->replacement);
  if (r->re) pcre2_code_free(r->re);
}

void scrape_relabel_free(scrape_relabel_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++)
    rule_free(&r->rules[i]);
  free(r->rules);
  free(r);
}

size_t scrape_relabel_count(const scrape_relabel_t *r) {
  return r ? r->n : 0;
}

/* Compiles ^(?:re)$ the way Go's regexp would read it. */
static int compile_regex(const char *re, pcre2_code **out, char *msg, size_t msglen) {
  sb_t sb = {0};
  sb_puts(&sb, "^(?:");
  sb_puts(&sb, re);
  sb_puts(&sb, ")$");
  if (sb.oom) return MD_ENOMEM;
  int ec;
  PCRE2_SIZE eo;
  *out = pcre2_compile((PCRE2_SPTR)sb.buf, sb.len, PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK, &ec,
                       &eo, NULL);
  sb_free(&sb);
  if (!*out) {
    PCRE2_UCHAR m[160];
    pcre2_get_error_message(ec, m, sizeof m);
    snprintf(msg, msglen, "invalid regex \"%s\": %s", re, (char *)m);
    return MD_EINVAL;
  }
  pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* interpreter fallback is fine */
  return 0;
}

/* replace's target_label may be a template: word characters and $-references. */
static bool valid_target_template(const char *s) {
  if (!*s) return false;
  for (const char *p = s; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '$' || *p == '{' || *p == '}')) return false;
  return strchr(s, '$') ? true : scrape_valid_label_name(s);
}

static int parse_rule(const json_t *o, rule_t *r, char *m, size_t ml) {
  char nb[64];
  if (!json_is_object(o)) {
    snprintf(m, ml, "must be a mapping");
    return MD_EINVAL;
  }
  const char *key;
  json_t *v;
  const char *regex = NULL;
  bool has_repl = false, has_mod = false, has_sep = false;
  r->action = A_REPLACE;
  json_object_foreach((json_t *)o, key, v) {
    if (strcmp(key, "action") == 0) {
      const char *a = json_string_value(v);
      size_t i;
      for (i = 0; a && i < sizeof ACTIONS / sizeof ACTIONS[0]; i++)
        if (strcasecmp(a, ACTIONS[i]) == 0) break;
      if (!a || i == sizeof ACTIONS / sizeof ACTIONS[0]) {
        snprintf(m, ml, "unknown relabel action \"%s\"", a ? a : "?");
        return MD_EINVAL;
      }
      r->action = (action_t)i;
    } else if (strcmp(key, "source_labels") == 0) {
      if (json_is_null(v)) continue;
      if (!json_is_array(v)) {
        snprintf(m, ml, "source_labels must be a list");
        return MD_EINVAL;
      }
      r->nsrc = json_array_size(v);
      r->src = calloc(r->nsrc ? r->nsrc : 1, sizeof *r->src);
      if (!r->src) return MD_ENOMEM;
      for (size_t i = 0; i < r->nsrc; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s || !scrape_valid_label_name(s)) {
          snprintf(m, ml, "source_labels[%zu]: \"%s\" is not a valid label name", i, s ? s : "?");
          return MD_EINVAL;
        }
        if (!(r->src[i] = strdup(s))) return MD_ENOMEM;
      }
    } else if (strcmp(key, "separator") == 0) {
      const char *s = scrape_json_text(v, nb, sizeof nb);
      if (!s || !(r->sep = strdup(s)))
        return s ? MD_ENOMEM : (snprintf(m, ml, "separator must be a string"), MD_EINVAL);
      has_sep = true;
    } else if (strcmp(key, "target_label") == 0) {
      const char *s = scrape_json_text(v, nb, sizeof nb);
      if (!s || !(r->target = strdup(s)))
        return s ? MD_ENOMEM : (snprintf(m, ml, "target_label must be a string"), MD_EINVAL);
    } else if (strcmp(key, "regex") == 0) {
      regex = scrape_json_text(v, nb, sizeof nb);
      if (!regex) {
        snprintf(m, ml, "regex must be a string");
        return MD_EINVAL;
      }
    } else if (strcmp(key, "modulus") == 0) {
      if (!json_is_integer(v) || json_integer_value(v) < 0) {
        snprintf(m, ml, "modulus must be a non-negative integer");
        return MD_EINVAL;
      }
      r->modulus = (uint64_t)json_integer_value(v);
      has_mod = true;
    } else if (strcmp(key, "replacement") == 0) {
      const char *s = scrape_json_text(v, nb, sizeof nb);
      if (!s || !(r->replacement = strdup(s)))
        return s ? MD_ENOMEM : (snprintf(m, ml, "replacement must be a string"), MD_EINVAL);
      has_repl = true;
    } else {
      snprintf(m, ml, "unknown key \"%s\"", key);
      return MD_EINVAL;
    }
  }
  if (!r->sep && !(r->sep = strdup(";"))) return MD_ENOMEM;
  if (!r->replacement && !(r->replacement = strdup("$1"))) return MD_ENOMEM;
  const char *an = ACTIONS[r->action];
  switch (r->action) {
  case A_REPLACE:
    if (!r->target || !valid_target_template(r->target)) {
      snprintf(m, ml, "\"%s\" is invalid 'target_label' for replace action", r->target ? r->target : "");
      return MD_EINVAL;
    }
    break;
  case A_HASHMOD:
    if (!has_mod || r->modulus == 0) {
      snprintf(m, ml, "relabel configuration for hashmod requires non-zero modulus");
      return MD_EINVAL;
    }
    /* fallthrough */
  case A_LOWERCASE:
  case A_UPPERCASE:
  case A_KEEPEQUAL:
  case A_DROPEQUAL:
    if (!r->target || !scrape_valid_label_name(r->target)) {
      snprintf(m, ml, "relabel configuration for %s action requires a valid 'target_label'", an);
      return MD_EINVAL;
    }
    if ((r->action == A_KEEPEQUAL || r->action == A_DROPEQUAL) && (regex || has_mod || has_repl)) {
      snprintf(m, ml, "%s action requires only 'source_labels' and 'target_label'", an);
      return MD_EINVAL;
    }
    break;
  case A_LABELDROP:
  case A_LABELKEEP:
    if (r->nsrc || r->target || has_mod || has_sep || has_repl) {
      snprintf(m, ml, "%s action requires only 'regex', and no other fields", an);
      return MD_EINVAL;
    }
    break;
  case A_KEEP:
  case A_DROP:
  case A_LABELMAP:
    break;
  }
  if (!regex || strcmp(regex, "(.*)") == 0) r->default_regex = true;
  return compile_regex(regex ? regex : "(.*)", &r->re, m, ml);
}

int scrape_relabel_parse(const json_t *arr, const char *what, scrape_relabel_t **out, char *err,
                         size_t errlen) {
  if (!what) what = "relabel_configs";
  scrape_relabel_t *r = calloc(1, sizeof *r);
  if (!r) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  if (arr && !json_is_null(arr)) {
    if (!json_is_array(arr)) {
      free(r);
      return md_error(err, errlen, MD_EINVAL, "%s must be a list", what);
    }
    size_t n = json_array_size(arr);
    r->rules = calloc(n ? n : 1, sizeof *r->rules);
    if (!r->rules) {
      free(r);
      return md_error(err, errlen, MD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
      char m[256] = "";
      r->n = i + 1;
      int rc = parse_rule(json_array_get(arr, i), &r->rules[i], m, sizeof m);
      if (rc) {
        scrape_relabel_free(r);
        return rc == MD_ENOMEM ? md_error(err, errlen, rc, "out of memory")
                               : md_error(err, errlen, rc, "%s[%zu]: %s", what, i, m);
      }
    }
  }
  *out = r;
  return 0;
}

/* ---- applying ----------------------------------------------------------------------- */

static pcre2_match_data *match_data(scrape_labels_t *ls) {
  if (!ls->md) ls->md = pcre2_match_data_create(32, NULL);
  return ls->md;
}

/* Matches s against the rule; returns the capture count (>0) or 0 for no match, -1 OOM. */
static int rule_match(const rule_t *r, scrape_labels_t *ls, const char *s, size_t n) {
  pcre2_match_data *md = match_data(ls);
  if (!md) return -1;
  int rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
  if (rc == 0) rc = (int)pcre2_get_ovector_count(md); /* more groups than the vector holds */
  return rc > 0 ? rc : 0;
}

/* Appends the template expanded with the last match of r on subject s (Go Regexp.Expand). */
static void expand(const rule_t *r, scrape_labels_t *ls, const char *tmpl, const char *s, int groups,
                   sb_t *out) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ls->md);
  for (const char *p = tmpl; *p;) {
    if (*p != '$') {
      const char *q = strchr(p, '$');
      size_t len = q ? (size_t)(q - p) : strlen(p);
      sb_append(out, p, len);
      p += len;
      continue;
    }
    p++;
    if (*p == '$') {
      sb_putc(out, '$');
      p++;
      continue;
    }
    const char *name = p;
    size_t nl = 0;
    bool brace = *p == '{';
    if (brace) {
      name = p + 1;
      while (name[nl] && (isalnum((unsigned char)name[nl]) || name[nl] == '_'))
        nl++;
      if (nl == 0 || name[nl] != '}') { /* malformed: the $ is literal */
        sb_putc(out, '$');
        continue;
      }
      p = name + nl + 1;
    } else {
      while (name[nl] && (isalnum((unsigned char)name[nl]) || name[nl] == '_'))
        nl++;
      if (nl == 0) {
        sb_putc(out, '$');
        continue;
      }
      p = name + nl;
    }
    long group = -1;
    bool digits = true;
    for (size_t i = 0; i < nl; i++)
      digits = digits && isdigit((unsigned char)name[i]);
    if (digits) {
      group = nl > 9 ? -1 : strtol(name, NULL, 10);
    } else {
      char nm[128];
      if (nl < sizeof nm) {
        memcpy(nm, name, nl);
        nm[nl] = 0;
        int g = pcre2_substring_number_from_name(r->re, (PCRE2_SPTR)nm);
        group = g >= 0 ? g : -1;
      }
    }
    if (group >= 0 && group < groups && ov[2 * group] != PCRE2_UNSET)
      sb_append(out, s + ov[2 * group], ov[2 * group + 1] - ov[2 * group]);
  }
}

/* Joins the source labels' values with the separator into ls->tmp. */
static void join_sources(const rule_t *r, scrape_labels_t *ls) {
  sb_reset(&ls->tmp);
  for (size_t i = 0; i < r->nsrc; i++) {
    if (i) sb_puts(&ls->tmp, r->sep);
    const char *v = scrape_labels_get(ls, r->src[i]);
    if (v) sb_puts(&ls->tmp, v);
  }
  if (!ls->tmp.buf) sb_reserve(&ls->tmp, 1);
}

static int apply_rule(const rule_t *r, scrape_labels_t *ls) {
  join_sources(r, ls);
  if (ls->tmp.oom) return MD_ENOMEM;
  const char *val = ls->tmp.buf;
  size_t vlen = ls->tmp.len;
  int g;
  switch (r->action) {
  case A_DROP:
    g = rule_match(r, ls, val, vlen);
    if (g < 0) return MD_ENOMEM;
    return g > 0 ? 0 : 1;
  case A_KEEP:
    g = rule_match(r, ls, val, vlen);
    if (g < 0) return MD_ENOMEM;
    return g > 0 ? 1 : 0;
  case A_KEEPEQUAL:
  case A_DROPEQUAL: {
    const char *t = scrape_labels_get(ls, r->target);
    bool eq = strcmp(t ? t : "", val) == 0;
    return (r->action == A_KEEPEQUAL) == eq ? 1 : 0;
  }
  case A_REPLACE: {
    g = rule_match(r, ls, val, vlen);
    if (g < 0) return MD_ENOMEM;
    if (g == 0) return 1;
    sb_t *t = &ls->tmp2;
    sb_reset(t);
    expand(r, ls, r->target, val, g, t);
    sb_putc(t, 0); /* the target name, then the value, in one buffer */
    size_t voff = t->len;
    expand(r, ls, r->replacement, val, g, t);
    if (t->oom) return MD_ENOMEM;
    if (!scrape_valid_label_name(t->buf)) return 1;
    return scrape_labels_setn(ls, t->buf, t->buf + voff, t->len - voff) ? MD_ENOMEM : 1;
  }
  case A_LOWERCASE:
  case A_UPPERCASE:
    for (size_t i = 0; i < vlen; i++)
      ls->tmp.buf[i] =
          (char)(r->action == A_LOWERCASE ? tolower((unsigned char)val[i]) : toupper((unsigned char)val[i]));
    return scrape_labels_setn(ls, r->target, ls->tmp.buf, vlen) ? MD_ENOMEM : 1;
  case A_HASHMOD: {
    uint8_t d[16];
    scrape_md5(val, vlen, d);
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
      x = x << 8 | d[i];
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)(x % r->modulus));
    return scrape_labels_set(ls, r->target, buf) ? MD_ENOMEM : 1;
  }
  case A_LABELMAP: {
    /* Over a snapshot of the names: labels added here are not remapped again. */
    size_t n = ls->n;
    tsdb_label_t *snap = malloc((n ? n : 1) * sizeof *snap);
    if (!snap) return MD_ENOMEM;
    if (n) memcpy(snap, ls->v, n * sizeof *snap);
    int rc = 1;
    for (size_t i = 0; i < n && rc == 1; i++) {
      size_t nl = strlen(snap[i].name);
      g = rule_match(r, ls, snap[i].name, nl);
      if (g < 0) rc = MD_ENOMEM;
      if (g <= 0) continue;
      sb_reset(&ls->tmp2);
      expand(r, ls, r->replacement, snap[i].name, g, &ls->tmp2);
      if (ls->tmp2.oom)
        rc = MD_ENOMEM;
      else if (ls->tmp2.len && scrape_valid_label_name(ls->tmp2.buf) &&
               scrape_labels_set(ls, ls->tmp2.buf, snap[i].value))
        rc = MD_ENOMEM;
    }
    free(snap);
    return rc;
  }
  case A_LABELDROP:
  case A_LABELKEEP:
    for (size_t i = 0; i < ls->n;) {
      g = rule_match(r, ls, ls->v[i].name, strlen(ls->v[i].name));
      if (g < 0) return MD_ENOMEM;
      bool drop = (r->action == A_LABELDROP) == (g > 0);
      if (drop) {
        memmove(ls->v + i, ls->v + i + 1, (ls->n - i - 1) * sizeof *ls->v);
        ls->n--;
      } else {
        i++;
      }
    }
    return 1;
  }
  return 1;
}

int scrape_relabel_apply(const scrape_relabel_t *r, scrape_labels_t *ls) {
  if (!r) return 1;
  for (size_t i = 0; i < r->n; i++) {
    int rc = apply_rule(&r->rules[i], ls);
    if (rc != 1) return rc;
  }
  return 1;
}
