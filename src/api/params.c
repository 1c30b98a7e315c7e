/* Request-parameter helpers shared by the API handlers: see params.h. */
#include "params.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

static void skip_ws(const char **p) {
  while (isspace((unsigned char)**p)) (*p)++;
}

static bool name_start(char c) { return isalpha((unsigned char)c) || c == '_' || c == ':'; }
static bool name_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == ':'; }

/* Reads a PromQL string literal ("...", '...' with Go escapes, or `raw`) into the arena. */
static int read_string(arena_t *a, const char **pp, char **out) {
  const char *p = *pp;
  char q = *p;
  if (q != '"' && q != '\'' && q != '`') return -1;
  p++;
  sb_t sb = {0};
  while (*p && *p != q) {
    if (*p == '\\' && q != '`') {
      p++;
      switch (*p) {
      case 'n': sb_putc(&sb, '\n'); break;
      case 't': sb_putc(&sb, '\t'); break;
      case 'r': sb_putc(&sb, '\r'); break;
      case '\\': sb_putc(&sb, '\\'); break;
      case '"': sb_putc(&sb, '"'); break;
      case '\'': sb_putc(&sb, '\''); break;
      case 'a': sb_putc(&sb, '\a'); break;
      case 'b': sb_putc(&sb, '\b'); break;
      case 'f': sb_putc(&sb, '\f'); break;
      case 'v': sb_putc(&sb, '\v'); break;
      case 'x': case 'u': case 'U': {
        int digits = *p == 'x' ? 2 : *p == 'u' ? 4 : 8;
        unsigned long cp = 0;
        for (int i = 0; i < digits; i++) {
          char c = p[1 + i];
          if (!isxdigit((unsigned char)c)) {
            sb_free(&sb);
            return -1;
          }
          cp = cp * 16 + (unsigned long)(isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10));
        }
        p += digits;
        if (digits == 2) {
          sb_putc(&sb, (char)cp);
        } else if (cp < 0x80) {
          sb_putc(&sb, (char)cp);
        } else if (cp < 0x800) {
          sb_putc(&sb, (char)(0xc0 | (cp >> 6)));
          sb_putc(&sb, (char)(0x80 | (cp & 0x3f)));
        } else if (cp < 0x10000) {
          sb_putc(&sb, (char)(0xe0 | (cp >> 12)));
          sb_putc(&sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
          sb_putc(&sb, (char)(0x80 | (cp & 0x3f)));
        } else {
          sb_putc(&sb, (char)(0xf0 | (cp >> 18)));
          sb_putc(&sb, (char)(0x80 | ((cp >> 12) & 0x3f)));
          sb_putc(&sb, (char)(0x80 | ((cp >> 6) & 0x3f)));
          sb_putc(&sb, (char)(0x80 | (cp & 0x3f)));
        }
        break;
      }
      default: sb_free(&sb); return -1;
      }
      if (*p) p++;
      continue;
    }
    sb_putc(&sb, *p++);
  }
  if (*p != q) {
    sb_free(&sb);
    return -1;
  }
  *pp = p + 1;
  *out = arena_strndup(a, sb.buf ? sb.buf : "", sb.len);
  sb_free(&sb);
  return *out ? 0 : -1;
}

int api_parse_selector(arena_t *a, const char *s, api_selector_t *out, char *err, size_t errlen) {
  tsdb_matcher_t tmp[64];
  size_t n = 0;
  const char *p = s;
  skip_ws(&p);
  if (name_start(*p)) {
    const char *b = p;
    while (name_char(*p)) p++;
    tmp[n++] = (tsdb_matcher_t){TSDB_MATCH_EQ, "__name__", arena_strndup(a, b, (size_t)(p - b))};
    skip_ws(&p);
  }
  if (*p == '{') {
    p++;
    for (;;) {
      skip_ws(&p);
      if (*p == '}') {
        p++;
        break;
      }
      char *name;
      if (*p == '"' || *p == '\'') {
        if (read_string(a, &p, &name)) goto bad;
      } else {
        const char *b = p;
        if (!name_start(*p)) goto bad;
        while (name_char(*p)) p++;
        name = arena_strndup(a, b, (size_t)(p - b));
      }
      skip_ws(&p);
      tsdb_match_type_t t;
      if (p[0] == '=' && p[1] == '~') t = TSDB_MATCH_RE, p += 2;
      else if (p[0] == '!' && p[1] == '~') t = TSDB_MATCH_NRE, p += 2;
      else if (p[0] == '!' && p[1] == '=') t = TSDB_MATCH_NEQ, p += 2;
      else if (p[0] == '=') t = TSDB_MATCH_EQ, p += 1;
      else if ((*p == ',' || *p == '}') && n == 0 && name) {
        /* {"metric.name"}: a quoted metric name on its own (UTF-8 names). */
        tmp[n++] = (tsdb_matcher_t){TSDB_MATCH_EQ, "__name__", name};
        if (*p == ',') p++;
        continue;
      } else goto bad;
      skip_ws(&p);
      char *value;
      if (read_string(a, &p, &value)) goto bad;
      if (n == 64) return md_error(err, errlen, MD_EINVAL, "too many matchers in selector");
      if (t == TSDB_MATCH_RE || t == TSDB_MATCH_NRE) {
        core_regex_t *re;
        char rerr[200];
        if (core_regex_compile(value, strlen(value), &re, rerr, sizeof rerr))
          return md_error(err, errlen, MD_EINVAL, "invalid parameter \"match[]\": %s", rerr);
        core_regex_free(re);
      }
      tmp[n++] = (tsdb_matcher_t){t, name, value};
      skip_ws(&p);
      if (*p == ',') p++;
      else if (*p != '}') goto bad;
    }
  }
  skip_ws(&p);
  if (*p || n == 0) goto bad;
  /* Prometheus: a selector must contain at least one matcher that does not match "". */
  bool narrowing = false;
  for (size_t i = 0; i < n && !narrowing; i++) {
    const tsdb_matcher_t *m = &tmp[i];
    switch (m->type) {
    case TSDB_MATCH_EQ: narrowing = *m->value != 0; break;
    case TSDB_MATCH_NEQ: narrowing = *m->value == 0; break;
    default: {
      core_regex_t *re;
      if (core_regex_compile(m->value, strlen(m->value), &re, NULL, 0) == 0) {
        bool empty = core_regex_match(re, "", 0);
        narrowing = m->type == TSDB_MATCH_RE ? !empty : empty;
        core_regex_free(re);
      }
    }
    }
  }
  if (!narrowing)
    return md_error(err, errlen, MD_EINVAL, "invalid parameter \"match[]\": match[] must contain at least one non-empty matcher");
  out->m = arena_alloc(a, n * sizeof *out->m);
  if (!out->m) return MD_ENOMEM;
  memcpy(out->m, tmp, n * sizeof *tmp);
  out->n = n;
  return 0;
bad:
  return md_error(err, errlen, MD_EINVAL, "invalid parameter \"match[]\": 1:%zu: parse error: unexpected character in selector %s",
                  (size_t)(p - s) + 1, s);
}

int api_parse_match_params(http_req_t *req, api_selector_t *out, size_t max, char *err, size_t errlen) {
  const char *const *vals;
  size_t n = http_req_query_all(req, "match[]", &vals);
  if (n > max) n = max;
  for (size_t i = 0; i < n; i++) {
    int rc = api_parse_selector(http_req_arena(req), vals[i], &out[i], err, errlen);
    if (rc) return -1;
  }
  return (int)n;
}

int api_time_param(http_req_t *req, const char *name, int64_t dflt, int64_t *out, char *err, size_t errlen) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) {
    *out = dflt;
    return 0;
  }
  if (md_parse_time(v, strlen(v), out))
    return md_error(err, errlen, MD_EINVAL,
                    "invalid parameter \"%s\": Invalid time value for '%s': cannot parse \"%s\" to a valid timestamp", name,
                    name, v);
  return 0;
}

int api_duration_param(http_req_t *req, const char *name, int64_t dflt, int64_t *out, char *err, size_t errlen) {
  const char *v = http_req_query(req, name);
  if (!v || !*v) {
    *out = dflt;
    return 0;
  }
  if (md_parse_duration(v, strlen(v), out))
    return md_error(err, errlen, MD_EINVAL, "invalid parameter \"%s\": cannot parse \"%s\" to a valid duration", name, v);
  return 0;
}

static void json_str_array(sb_t *b, const char *const *s, size_t n) {
  sb_putc(b, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(b, ',');
    sb_json_str(b, s[i], strlen(s[i]));
  }
  sb_putc(b, ']');
}

void api_prom_success(http_resp_t *resp, const char *data, size_t len, const char *const *warnings, size_t nw,
                      const char *const *infos, size_t ni) {
  sb_t *b = http_resp_body(resp);
  sb_puts(b, "{\"status\":\"success\",\"data\":");
  sb_append(b, data, len);
  if (nw) {
    sb_puts(b, ",\"warnings\":");
    json_str_array(b, warnings, nw);
  }
  if (ni) {
    sb_puts(b, ",\"infos\":");
    json_str_array(b, infos, ni);
  }
  sb_putc(b, '}');
  http_resp_status(resp, 200);
  http_resp_content_type(resp, "application/json");
}
