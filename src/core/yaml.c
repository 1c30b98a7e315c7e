/*
 * YAML → jansson conversion (config_yaml_to_json in config.h), over libyaml's event parser.
 *
 * Scalars: quoted or tagged-!!str scalars stay strings; plain scalars resolve by the YAML
 * 1.2 core schema (null, true/false, integers incl. 0x/0o, floats incl. .inf/.nan), the
 * rest are strings. Anchors and aliases share the same json_t (refcounted), so an alias
 * costs no copy; to stop "billion laughs" inputs the *expanded* size is still counted
 * (every alias adds its anchor's node count) and capped. Merge keys ("<<") are applied with
 * YAML semantics: explicit keys of the mapping win. Duplicate keys are an error, since in a
 * configuration file they are nearly always a mistake.
 *
 * Threading: stateless; any thread.
 */
#include "config.h"
#include "core.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 64
#define MAX_NODES 2000000 /* expanded node budget */

typedef struct anchor {
  char *name;
  json_t *node;
  size_t size;
} anchor_t;

typedef struct yctx {
  yaml_parser_t parser;
  anchor_t *anchors;
  size_t nanchors, cap;
  size_t nodes;
  char *err;
  size_t errlen;
} yctx_t;

static int fail_at(yctx_t *y, const yaml_mark_t *m, const char *what) {
  return md_error(y->err, y->errlen, MD_EINVAL, "yaml: line %zu column %zu: %s", m->line + 1, m->column + 1, what);
}

static int next_event(yctx_t *y, yaml_event_t *ev) {
  if (!yaml_parser_parse(&y->parser, ev)) {
    const char *prob = y->parser.problem ? y->parser.problem : "syntax error";
    return md_error(y->err, y->errlen, MD_EINVAL, "yaml: line %zu column %zu: %s",
                    y->parser.problem_mark.line + 1, y->parser.problem_mark.column + 1, prob);
  }
  return 0;
}

static bool all_digits(const char *s, size_t n, int base) {
  if (n == 0) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool ok = base == 16 ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
              : base == 8 ? (c >= '0' && c <= '7')
                          : (c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

static bool is_float_syntax(const char *s, size_t n) {
  size_t i = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  size_t digits = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
  }
  if (!digits) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    size_t ed = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, ed++;
    if (!ed) return false;
  }
  return i == n;
}

static bool eq_any(const char *s, size_t n, const char *const *list) {
  for (; *list; list++)
    if (strlen(*list) == n && memcmp(*list, s, n) == 0) return true;
  return false;
}

/* Resolves a plain scalar per the core schema. */
static json_t *plain_scalar(const char *s, size_t n) {
  static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
  static const char *const trues[] = {"true", "True", "TRUE", NULL};
  static const char *const falses[] = {"false", "False", "FALSE", NULL};
  static const char *const infs[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
  static const char *const ninfs[] = {"-.inf", "-.Inf", "-.INF", NULL};
  static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
  if (eq_any(s, n, nulls)) return json_null();
  if (eq_any(s, n, trues)) return json_true();
  if (eq_any(s, n, falses)) return json_false();
  /* jansson cannot hold non-finite reals; keep them as strings (consumers parse numbers
   * from strings anyway). */
  if (eq_any(s, n, infs) || eq_any(s, n, ninfs) || eq_any(s, n, nans)) return json_stringn(s, n);
  const char *p = s;
  size_t m = n;
  bool neg = false;
  if (m && (*p == '-' || *p == '+')) {
    neg = *p == '-';
    p++, m--;
  }
  int base = 0;
  if (m > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
    base = p[1] == 'x' ? 16 : 8;
    if (!all_digits(p + 2, m - 2, base)) base = -1;
  } else if (all_digits(p, m, 10)) {
    base = 10;
  }
  if (base > 0) {
    char buf[32];
    size_t off = base == 10 ? 0 : 2;
    if (m - off < sizeof buf) {
      memcpy(buf, p + off, m - off);
      buf[m - off] = 0;
      errno = 0;
      char *end;
      unsigned long long u = strtoull(buf, &end, base);
      if (errno == 0 && *end == 0 && u <= (unsigned long long)INT64_MAX)
        return json_integer(neg ? -(json_int_t)u : (json_int_t)u);
    }
    /* too large for an integer: fall through to real */
  }
  if (is_float_syntax(s, n)) {
    char buf[64];
    if (n < sizeof buf) {
      memcpy(buf, s, n);
      buf[n] = 0;
      double d = strtod(buf, NULL);
      if (isfinite(d)) return json_real(d);
    }
  }
  return json_stringn(s, n);
}

static int add_anchor(yctx_t *y, const char *name, json_t *node, size_t size) {
  for (size_t i = 0; i < y->nanchors; i++) {
    if (strcmp(y->anchors[i].name, name) == 0) { /* redefinition: the later one wins */
      json_decref(y->anchors[i].node);
      y->anchors[i].node = json_incref(node);
      y->anchors[i].size = size;
      return 0;
    }
  }
  if (y->nanchors == y->cap) {
    size_t cap = y->cap ? y->cap * 2 : 8;
    anchor_t *n = realloc(y->anchors, cap * sizeof *n);
    if (!n) return MD_ENOMEM;
    y->anchors = n;
    y->cap = cap;
  }
  char *nm = strdup(name);
  if (!nm) return MD_ENOMEM;
  y->anchors[y->nanchors++] = (anchor_t){nm, json_incref(node), size};
  return 0;
}

static int parse_node(yctx_t *y, yaml_event_t *ev, int depth, json_t **out);

/* Merged ("<<") keys are collected aside and added at the end, so explicit keys win
 * wherever they appear and are not mistaken for duplicates. */
static int parse_mapping_inner(yctx_t *y, int depth, json_t *obj, json_t *merged);

static int parse_mapping(yctx_t *y, int depth, json_t *obj) {
  json_t *merged = json_object();
  if (!merged) return MD_ENOMEM;
  int rc = parse_mapping_inner(y, depth, obj, merged);
  if (rc == 0 && json_object_update_missing(obj, merged) != 0) rc = MD_ENOMEM;
  json_decref(merged);
  return rc;
}

static int parse_mapping_inner(yctx_t *y, int depth, json_t *obj, json_t *merged) {
  for (;;) {
    yaml_event_t kev;
    int rc = next_event(y, &kev);
    if (rc) return rc;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      return 0;
    }
    if (kev.type != YAML_SCALAR_EVENT) {
      rc = fail_at(y, &kev.start_mark, "mapping keys must be scalars");
      yaml_event_delete(&kev);
      return rc;
    }
    yaml_mark_t kmark = kev.start_mark;
    char *key = strndup((const char *)kev.data.scalar.value, kev.data.scalar.length);
    bool merge = kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(key ? key : "", "<<") == 0;
    bool has_nul = key && strlen(key) != kev.data.scalar.length;
    yaml_event_delete(&kev);
    if (!key) return MD_ENOMEM;
    if (has_nul) {
      free(key);
      return fail_at(y, &kmark, "NUL byte in a key");
    }
    yaml_event_t vev;
    rc = next_event(y, &vev);
    if (rc) {
      free(key);
      return rc;
    }
    json_t *val = NULL;
    rc = parse_node(y, &vev, depth + 1, &val);
    if (rc) {
      free(key);
      return rc;
    }
    if (merge) {
      /* "<<: *base" or "<<: [*a, *b]": earlier sources win among themselves. */
      rc = 0;
      if (json_is_object(val)) {
        if (json_object_update_missing(merged, val) != 0) rc = MD_ENOMEM;
      } else if (json_is_array(val)) {
        size_t i;
        json_t *m;
        json_array_foreach(val, i, m) {
          if (!json_is_object(m)) {
            rc = fail_at(y, &kmark, "merge key '<<' needs mappings");
            break;
          }
          if (json_object_update_missing(merged, m) != 0) rc = MD_ENOMEM;
        }
      } else {
        rc = fail_at(y, &kmark, "merge key '<<' needs a mapping");
      }
      json_decref(val);
      free(key);
      if (rc) return rc;
      continue;
    }
    if (json_object_get(obj, key)) {
      char msg[200];
      snprintf(msg, sizeof msg, "duplicate key '%.120s'", key);
      json_decref(val);
      free(key);
      return fail_at(y, &kmark, msg);
    }
    rc = json_object_set_new(obj, key, val) == 0 ? 0 : MD_ENOMEM;
    free(key);
    if (rc) return rc;
  }
}

static int parse_sequence(yctx_t *y, int depth, json_t *arr) {
  for (;;) {
    yaml_event_t ev;
    int rc = next_event(y, &ev);
    if (rc) return rc;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      return 0;
    }
    json_t *val = NULL;
    rc = parse_node(y, &ev, depth + 1, &val);
    if (rc) return rc;
    if (json_array_append_new(arr, val) != 0) return MD_ENOMEM;
  }
}

/* Parses the node that starts with *ev (consumed and deleted here). */
static int parse_node(yctx_t *y, yaml_event_t *ev, int depth, json_t **out) {
  int rc = 0;
  json_t *node = NULL;
  const char *anchor = NULL;
  size_t before = y->nodes;
  *out = NULL;
  if (depth > MAX_DEPTH) {
    rc = fail_at(y, &ev->start_mark, "nesting too deep");
    goto done;
  }
  if (++y->nodes > MAX_NODES) {
    rc = fail_at(y, &ev->start_mark, "document too large (aliases expand past the limit)");
    goto done;
  }
  switch (ev->type) {
  case YAML_ALIAS_EVENT: {
    const char *name = (const char *)ev->data.alias.anchor;
    for (size_t i = 0; i < y->nanchors; i++) {
      if (strcmp(y->anchors[i].name, name) == 0) {
        y->nodes += y->anchors[i].size;
        if (y->nodes > MAX_NODES) {
          rc = fail_at(y, &ev->start_mark, "document too large (aliases expand past the limit)");
          goto done;
        }
        node = json_incref(y->anchors[i].node);
        break;
      }
    }
    if (!node) rc = fail_at(y, &ev->start_mark, "unknown alias");
    goto done;
  }
  case YAML_SCALAR_EVENT: {
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    anchor = (const char *)ev->data.scalar.anchor;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag) node = plain_scalar(v, n);
    else node = json_stringn(v, n);
    if (!node) rc = fail_at(y, &ev->start_mark, "invalid scalar (not UTF-8?)");
    break;
  }
  case YAML_SEQUENCE_START_EVENT:
    anchor = (const char *)ev->data.sequence_start.anchor;
    node = json_array();
    if (!node) {
      rc = MD_ENOMEM;
      break;
    }
    rc = parse_sequence(y, depth, node);
    break;
  case YAML_MAPPING_START_EVENT:
    anchor = (const char *)ev->data.mapping_start.anchor;
    node = json_object();
    if (!node) {
      rc = MD_ENOMEM;
      break;
    }
    rc = parse_mapping(y, depth, node);
    break;
  default:
    rc = fail_at(y, &ev->start_mark, "unexpected YAML event");
    break;
  }
  if (rc == 0 && anchor) rc = add_anchor(y, anchor, node, y->nodes - before);
done:
  yaml_event_delete(ev);
  if (rc) {
    json_decref(node);
    return rc;
  }
  *out = node;
  return 0;
}

int config_yaml_to_json(const char *text, size_t len, json_t **out, char *err, size_t errlen) {
  *out = NULL;
  yctx_t y = {.err = err, .errlen = errlen};
  if (!yaml_parser_initialize(&y.parser)) return md_error(err, errlen, MD_ENOMEM, "yaml: out of memory");
  yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
  json_t *doc = NULL;
  int rc;
  yaml_event_t ev;
  bool in_doc = false, done = false;
  while (!done) {
    if ((rc = next_event(&y, &ev)) != 0) goto out;
    switch (ev.type) {
    case YAML_STREAM_START_EVENT:
      yaml_event_delete(&ev);
      break;
    case YAML_DOCUMENT_START_EVENT:
      if (doc) {
        rc = fail_at(&y, &ev.start_mark, "only one YAML document is allowed");
        yaml_event_delete(&ev);
        goto out;
      }
      in_doc = true;
      yaml_event_delete(&ev);
      break;
    case YAML_DOCUMENT_END_EVENT:
      in_doc = false;
      yaml_event_delete(&ev);
      break;
    case YAML_STREAM_END_EVENT:
      done = true;
      yaml_event_delete(&ev);
      break;
    default:
      if (!in_doc || doc) {
        rc = fail_at(&y, &ev.start_mark, "unexpected content");
        yaml_event_delete(&ev);
        goto out;
      }
      if ((rc = parse_node(&y, &ev, 0, &doc)) != 0) goto out;
      break;
    }
  }
  if (!doc) doc = json_null(); /* empty file */
  *out = doc;
  doc = NULL;
  rc = 0;
out:
  json_decref(doc);
  for (size_t i = 0; i < y.nanchors; i++) {
    free(y.anchors[i].name);
    json_decref(y.anchors[i].node);
  }
  free(y.anchors);
  yaml_parser_delete(&y.parser);
  if (rc == MD_ENOMEM) md_error(err, errlen, MD_ENOMEM, "yaml: out of memory");
  return rc;
}
