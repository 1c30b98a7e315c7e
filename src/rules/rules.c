/* Rule manager: loading rule files and runtime rules into groups, the evaluation thread,
 * the API bodies, and persistence of runtime rules (<data_dir>/rules.json, written
 * atomically). See rules.h for the contract and rules_internal.h for the structures. */
#include "rules_internal.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"

void rules_options_default(rules_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->default_interval_ms = 60000;
  opt->resend_delay_ms = 60000;
  opt->outage_tolerance_ms = 3600000;
  opt->for_grace_period_ms = 600000;
}

uint64_t rules_labels_hash(const tsdb_label_t *ls, size_t n) {
  uint64_t h = 0x5bd1e995;
  for (size_t i = 0; i < n; i++) {
    h = md_hash64(ls[i].name, strlen(ls[i].name), h);
    h = md_hash64(ls[i].value, strlen(ls[i].value), h ^ 0xff);
  }
  return h;
}

/* ---- building rules from JSON -------------------------------------------------------- */

static char *json_text(const json_t *v) {
  if (json_is_string(v)) return strdup(json_string_value(v));
  if (json_is_integer(v)) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)json_integer_value(v));
    return strdup(b);
  }
  if (json_is_real(v)) {
    sb_t sb = {0};
    sb_double(&sb, json_real_value(v));
    return sb_steal(&sb);
  }
  if (json_is_boolean(v)) return strdup(json_is_true(v) ? "true" : "false");
  return NULL;
}

static int kv_from_json(const json_t *obj, const char *what, const char *rule, kv_t **out, size_t *n,
                        tmpl_t ***tmpls, char *err, size_t errlen) {
  *out = NULL;
  *n = 0;
  *tmpls = NULL;
  if (!obj || json_is_null(obj)) return 0;
  if (!json_is_object(obj)) return md_error(err, errlen, MD_EINVAL, "rule %s: %s must be a map", rule, what);
  size_t cnt = json_object_size(obj);
  kv_t *kv = calloc(cnt ? cnt : 1, sizeof *kv);
  tmpl_t **t = calloc(cnt ? cnt : 1, sizeof *t);
  if (!kv || !t) {
    free(kv);
    free(t);
    return MD_ENOMEM;
  }
  const char *k;
  json_t *v;
  size_t i = 0;
  int rc = 0;
  json_object_foreach((json_t *)obj, k, v) {
    kv[i].name = strdup(k);
    kv[i].value = json_text(v);
    if (!kv[i].name || !kv[i].value) {
      free(kv[i].name);
      free(kv[i].value);
      rc = md_error(err, errlen, MD_EINVAL, "rule %s: %s.%s must be a string", rule, what, k);
      break;
    }
    char terr[256];
    i++;
    if (tmpl_compile(kv[i - 1].value, strlen(kv[i - 1].value), &t[i - 1], terr, sizeof terr)) {
      rc = md_error(err, errlen, MD_EINVAL, "rule %s: %s.%s: %s", rule, what, k, terr);
      break;
    }
  }
  *out = kv;
  *n = i;
  *tmpls = t;
  return rc;
}

static void kv_free(kv_t *kv, tmpl_t **t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(kv[i].name);
    free(kv[i].value);
    if (t) tmpl_free(t[i]);
  }
  free(kv);
  free(t);
}

void rule_free(rule_t *r) {
  if (!r) return;
  free(r->id);
  free(r->name);
  free(r->expr_text);
  promql_expr_free(r->expr);
  kv_free(r->labels, r->label_tmpls, r->nlabels);
  kv_free(r->annotations, r->ann_tmpls, r->nannotations);
  alerts_free(r->alerts);
  written_free(r->written, r->nwritten);
  free(r);
}

static int parse_duration_field(const json_t *obj, const char *key, const char *rule, int64_t *ms, char *err,
                                size_t errlen) {
  *ms = 0;
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (config_parse_duration(v, ms) || *ms < 0)
    return md_error(err, errlen, MD_EINVAL, "rule %s: invalid %s duration", rule, key);
  return 0;
}

static bool valid_metric_name(const char *s) {
  if (!*s) return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (p != s && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

int rule_from_json(const json_t *obj, rule_t **out, char *err, size_t errlen) {
  if (!json_is_object(obj)) return md_error(err, errlen, MD_EINVAL, "rule must be a map");
  json_t *alert = json_object_get(obj, "alert"), *record = json_object_get(obj, "record");
  if ((alert && record) || (!alert && !record))
    return md_error(err, errlen, MD_EINVAL, "rule must have exactly one of 'alert' or 'record'");
  const char *name = json_string_value(alert ? alert : record);
  if (!name || !*name) return md_error(err, errlen, MD_EINVAL, "rule name must be a non-empty string");
  static const char *const known[] = {"alert",           "record", "expr",        "for",
                                      "keep_firing_for", "labels", "annotations", "group",
                                      "interval",        "id",     NULL};
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    bool found = false;
    for (size_t i = 0; known[i]; i++)
      found |= strcmp(k, known[i]) == 0;
    if (!found) return md_error(err, errlen, MD_EINVAL, "rule %s: unknown field '%s'", name, k);
  }
  rule_t *r = calloc(1, sizeof *r);
  if (!r) return MD_ENOMEM;
  int rc = 0;
  r->is_alert = alert != NULL;
  r->name = strdup(name);
  r->expr_text = json_text(json_object_get(obj, "expr"));
  if (!r->name) {
    rc = MD_ENOMEM;
    goto fail;
  }
  if (!r->expr_text || !*r->expr_text) {
    rc =
        md_error(err, errlen, MD_EINVAL, "rule %s: field 'expr' must be a non-empty PromQL expression", name);
    goto fail;
  }
  if (!r->is_alert && !valid_metric_name(name)) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: invalid recording rule name", name);
    goto fail;
  }
  char perr[256];
  if (promql_parse(r->expr_text, strlen(r->expr_text), &r->expr, NULL, perr, sizeof perr)) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: could not parse expression: %s", name, perr);
    goto fail;
  }
  const char *type = promql_expr_type_name(r->expr);
  if (strcmp(type, "vector") != 0 && (r->is_alert || strcmp(type, "scalar") != 0)) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: expression must be of type vector%s, got %s", name,
                  r->is_alert ? "" : " or scalar", type);
    goto fail;
  }
  /* Runtime rules name their group and its interval; a zero interval would stall (and
   * divide by zero in) the scheduler. */
  json_t *grp = json_object_get(obj, "group"), *iv = json_object_get(obj, "interval");
  int64_t iv_ms = 0;
  if (grp && (!json_is_string(grp) || !json_string_length(grp))) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: group must be a non-empty string", name);
    goto fail;
  }
  if (iv && (config_parse_duration(iv, &iv_ms) || iv_ms <= 0)) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: interval must be a positive duration", name);
    goto fail;
  }
  if ((rc = parse_duration_field(obj, "for", name, &r->for_ms, err, errlen))) goto fail;
  if ((rc = parse_duration_field(obj, "keep_firing_for", name, &r->keep_firing_for_ms, err, errlen)))
    goto fail;
  if (!r->is_alert && (json_object_get(obj, "for") || json_object_get(obj, "annotations") ||
                       json_object_get(obj, "keep_firing_for"))) {
    rc = md_error(err, errlen, MD_EINVAL, "rule %s: invalid field for a recording rule", name);
    goto fail;
  }
  if ((rc = kv_from_json(json_object_get(obj, "labels"), "labels", name, &r->labels, &r->nlabels,
                         &r->label_tmpls, err, errlen)))
    goto fail;
  for (size_t i = 0; i < r->nlabels; i++) {
    if (!valid_metric_name(r->labels[i].name) || strchr(r->labels[i].name, ':')) {
      rc = md_error(err, errlen, MD_EINVAL, "rule %s: invalid label name '%s'", name, r->labels[i].name);
      goto fail;
    }
  }
  if ((rc = kv_from_json(json_object_get(obj, "annotations"), "annotations", name, &r->annotations,
                         &r->nannotations, &r->ann_tmpls, err, errlen)))
    goto fail;
  *out = r;
  return 0;
fail:
  rule_free(r);
  return rc ? rc : MD_EINVAL;
}

void group_free(group_t *g) {
  if (!g) return;
  for (size_t i = 0; i < g->nrules; i++)
    rule_free(g->rules[i]);
  free(g->rules);
  written_free(g->stale, g->nstale);
  free(g->name);
  free(g->file);
  free(g->tenant);
  free(g);
}

int group_from_json(const json_t *obj, const char *file, const char *tenant, int64_t default_interval,
                    group_t **out, char *err, size_t errlen) {
  if (!json_is_object(obj)) return md_error(err, errlen, MD_EINVAL, "%s: group must be a map", file);
  const char *name = json_string_value(json_object_get(obj, "name"));
  if (!name || !*name) return md_error(err, errlen, MD_EINVAL, "%s: group name must not be empty", file);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    if (strcmp(k, "name") && strcmp(k, "interval") && strcmp(k, "rules") && strcmp(k, "limit") &&
        strcmp(k, "query_offset") && strcmp(k, "labels"))
      return md_error(err, errlen, MD_EINVAL, "%s: group %s: unknown field '%s'", file, name, k);
  }
  group_t *g = calloc(1, sizeof *g);
  if (!g) return MD_ENOMEM;
  int rc = 0;
  g->name = strdup(name);
  g->file = strdup(file);
  g->tenant = strdup(tenant);
  g->interval_ms = default_interval;
  json_t *iv = json_object_get(obj, "interval");
  if (iv && (config_parse_duration(iv, &g->interval_ms) || g->interval_ms <= 0)) {
    rc = md_error(err, errlen, MD_EINVAL, "%s: group %s: invalid interval", file, name);
    goto fail;
  }
  json_t *qo = json_object_get(obj, "query_offset");
  if (qo && (config_parse_duration(qo, &g->query_offset_ms) || g->query_offset_ms < 0)) {
    rc = md_error(err, errlen, MD_EINVAL, "%s: group %s: invalid query_offset", file, name);
    goto fail;
  }
  json_t *lim = json_object_get(obj, "limit");
  if (lim && (!json_is_integer(lim) || json_integer_value(lim) < 0)) {
    rc = md_error(err, errlen, MD_EINVAL, "%s: group %s: limit must be a non-negative integer", file, name);
    goto fail;
  }
  g->limit = lim ? (size_t)json_integer_value(lim) : 0;
  json_t *rs = json_object_get(obj, "rules");
  if (!json_is_array(rs)) {
    rc = md_error(err, errlen, MD_EINVAL, "%s: group %s: 'rules' must be a list", file, name);
    goto fail;
  }
  g->rules = calloc(json_array_size(rs) + 1, sizeof *g->rules);
  if (!g->rules) {
    rc = MD_ENOMEM;
    goto fail;
  }
  size_t i;
  json_t *ro;
  /* Group labels (Prometheus 3): added to every rule's labels; a rule's own label of the
   * same name wins. Merged into a copy of the rule so that validation is the rule's own. */
  json_t *glabels = json_object_get(obj, "labels");
  if (glabels && !json_is_null(glabels) && !json_is_object(glabels)) {
    rc = md_error(err, errlen, MD_EINVAL, "%s: group %s: labels must be a map", file, name);
    goto fail;
  }
  json_array_foreach(rs, i, ro) {
    char rerr[512];
    json_t *merged = NULL;
    if (json_object_size(glabels) && json_is_object(ro)) {
      merged = json_deep_copy(ro);
      json_t *rl = json_object_get(merged, "labels");
      if (merged && !rl) json_object_set_new(merged, "labels", rl = json_object());
      if (!merged || !json_is_object(rl)) {
        json_decref(merged);
        merged = NULL; /* rule_from_json reports a bad 'labels' */
      } else {
        json_object_update_missing(rl, glabels);
      }
    }
    rc = rule_from_json(merged ? merged : ro, &g->rules[g->nrules], rerr, sizeof rerr);
    json_decref(merged);
    if (rc) {
      md_error(err, errlen, rc, "%s: group %s, rule %zu: %s", file, name, i + 1, rerr);
      goto fail;
    }
    g->nrules++;
  }
  if (!g->name || !g->file || !g->tenant) {
    rc = MD_ENOMEM;
    goto fail;
  }
  *out = g;
  return 0;
fail:
  group_free(g);
  return rc;
}

int rules_load_yaml_file(const char *path, json_t **out, char *err, size_t errlen) {
  char *text;
  size_t len;
  int rc = md_read_file(path, &text, &len);
  if (rc) return md_error(err, errlen, rc, "%s: cannot read file", path);
  char yerr[256];
  rc = config_yaml_to_json(text, len, out, yerr, sizeof yerr);
  free(text);
  if (rc) return md_error(err, errlen, rc, "%s: %s", path, yerr);
  return 0;
}

static int parse_doc(json_t *doc, const char *path, int64_t default_interval, group_t ***groups, size_t *n,
                     char *err, size_t errlen) {
  json_t *gs = json_object_get(doc, "groups");
  if (!json_is_object(doc) || (json_object_size(doc) != 1 && gs) || !json_is_array(gs))
    return md_error(err, errlen, MD_EINVAL, "%s: a rule file must be a map with a 'groups' list", path);
  size_t i;
  json_t *go;
  int rc = 0;
  json_array_foreach(gs, i, go) {
    const char *gname = json_string_value(json_object_get(go, "name"));
    for (size_t j = 0; gname && j < *n; j++) {
      if (!strcmp((*groups)[j]->file, path) && !strcmp((*groups)[j]->name, gname))
        return md_error(err, errlen, MD_EINVAL, "%s: groupname: \"%s\" is repeated in the same file", path,
                        gname);
    }
    group_t *g;
    rc = group_from_json(go, path, "default", default_interval, &g, err, errlen);
    if (rc) break;
    group_t **ng = realloc(*groups, (*n + 1) * sizeof *ng);
    if (!ng) {
      group_free(g);
      rc = MD_ENOMEM;
      break;
    }
    *groups = ng;
    ng[(*n)++] = g;
  }
  return rc;
}

int rules_parse_file_text(const char *text, size_t len, const char *name, int64_t default_interval,
                          group_t ***groups, size_t *n, char *err, size_t errlen) {
  json_t *doc;
  char yerr[256];
  int rc = config_yaml_to_json(text, len, &doc, yerr, sizeof yerr);
  if (rc) return md_error(err, errlen, rc, "%s: %s", name, yerr);
  rc = parse_doc(doc, name, default_interval, groups, n, err, errlen);
  json_decref(doc);
  return rc;
}

/* Loads every group of one rule file, appending to *groups. */
static int load_file(const char *path, int64_t default_interval, group_t ***groups, size_t *n, char *err,
                     size_t errlen) {
  char *text;
  size_t len;
  int rc = md_read_file(path, &text, &len);
  if (rc) return md_error(err, errlen, rc, "%s: cannot read file", path);
  rc = rules_parse_file_text(text, len, path, default_interval, groups, n, err, errlen);
  free(text);
  return rc;
}

static bool rule_same(const rule_t *a, const rule_t *b) {
  if (a->is_alert != b->is_alert || strcmp(a->name, b->name) || strcmp(a->expr_text, b->expr_text))
    return false;
  if (a->nlabels != b->nlabels) return false;
  for (size_t i = 0; i < a->nlabels; i++)
    if (strcmp(a->labels[i].name, b->labels[i].name) || strcmp(a->labels[i].value, b->labels[i].value))
      return false;
  return true;
}

/* Moves alert state of unchanged rules from old groups into new ones. */
/* Appends *w (ownership moves) to g's pending stale series. */
static void move_written(group_t *g, written_t **w, size_t *n) {
  if (!*n) return;
  written_t *ns = realloc(g->stale, (g->nstale + *n) * sizeof *ns);
  if (!ns) return; /* keep them with the old rule: freed with it, no marker */
  memcpy(ns + g->nstale, *w, *n * sizeof *ns);
  g->stale = ns;
  g->nstale += *n;
  free(*w);
  *w = NULL;
  *n = 0;
}

static void carry_state(group_t **old, size_t nold, group_t **neu, size_t nneu) {
  for (size_t i = 0; i < nneu; i++) {
    group_t *g = neu[i];
    for (size_t j = 0; j < nold; j++) {
      group_t *o = old[j];
      if (!o || strcmp(o->name, g->name) || strcmp(o->file, g->file) || strcmp(o->tenant, g->tenant))
        continue;
      g->next_eval_ms = o->next_eval_ms;
      g->evaluations = o->evaluations;
      g->failures = o->failures;
      g->iterations = o->iterations;
      g->missed = o->missed;
      g->last_eval_ms = o->last_eval_ms;
      g->eval_ns = o->eval_ns;
      for (size_t a = 0; a < g->nrules; a++) {
        for (size_t b = 0; b < o->nrules; b++) {
          rule_t *nr = g->rules[a], *orr = o->rules[b];
          if (!orr || !rule_same(nr, orr)) continue;
          nr->alerts = orr->alerts;
          orr->alerts = NULL;
          nr->written = orr->written;
          nr->nwritten = orr->nwritten;
          orr->written = NULL;
          orr->nwritten = 0;
          nr->restored = orr->restored;
          nr->health = orr->health;
          memcpy(nr->last_error, orr->last_error, sizeof nr->last_error);
          nr->last_eval_ms = orr->last_eval_ms;
          break;
        }
      }
      /* What the old group's unmatched rules wrote becomes this group's to mark stale. */
      for (size_t b = 0; b < o->nrules; b++)
        move_written(g, &o->rules[b]->written, &o->rules[b]->nwritten);
      move_written(g, &o->stale, &o->nstale);
    }
  }
}

/* Old groups with no successor: their series are marked stale just after their last
 * evaluation (the group is gone; there is no later evaluation to wait for). */
static void stale_removed_groups(rules_t *r, group_t **old, size_t nold, group_t **neu, size_t nneu) {
  for (size_t j = 0; j < nold; j++) {
    group_t *o = old[j];
    if (!o || !o->last_eval_ms) continue;
    bool kept = false;
    for (size_t i = 0; i < nneu && !kept; i++)
      kept = !strcmp(o->name, neu[i]->name) && !strcmp(o->file, neu[i]->file) &&
             !strcmp(o->tenant, neu[i]->tenant);
    if (kept) continue;
    int64_t ts = o->last_eval_ms - o->query_offset_ms + 1;
    for (size_t b = 0; b < o->nrules; b++)
      write_stale(r, o->tenant, o->rules[b]->written, o->rules[b]->nwritten, NULL, NULL, 0, ts);
    write_stale(r, o->tenant, o->stale, o->nstale, NULL, NULL, 0, ts);
  }
}

static int build_runtime_groups(rules_t *r, group_t ***out, size_t *n, char *err, size_t errlen);

/* Replaces all groups: file groups (from globs) + runtime groups. Caller holds r->mu. */
static int rebuild(rules_t *r, group_t **file_groups, size_t nfile, char *err, size_t errlen) {
  group_t **rt = NULL;
  size_t nrt = 0;
  int rc = build_runtime_groups(r, &rt, &nrt, err, errlen);
  if (rc) {
    for (size_t i = 0; i < nfile; i++)
      group_free(file_groups[i]);
    free(file_groups);
    return rc;
  }
  group_t **all = calloc(nfile + nrt + 1, sizeof *all);
  if (!all) {
    for (size_t i = 0; i < nfile; i++)
      group_free(file_groups[i]);
    for (size_t i = 0; i < nrt; i++)
      group_free(rt[i]);
    free(file_groups);
    free(rt);
    return MD_ENOMEM;
  }
  if (nfile) memcpy(all, file_groups, nfile * sizeof *all);
  if (nrt) memcpy(all + nfile, rt, nrt * sizeof *all);
  free(file_groups);
  free(rt);
  carry_state(r->groups, r->ngroups, all, nfile + nrt);
  stale_removed_groups(r, r->groups, r->ngroups, all, nfile + nrt);
  /* As in Prometheus, `for` state is restored from ALERTS_FOR_STATE once, at start-up: a rule
   * added or changed by a later reload starts afresh. */
  for (size_t i = 0; r->evaluated && i < nfile + nrt; i++)
    for (size_t j = 0; j < all[i]->nrules; j++)
      all[i]->rules[j]->restored = true;
  for (size_t i = 0; i < r->ngroups; i++)
    group_free(r->groups[i]);
  free(r->groups);
  r->groups = all;
  r->ngroups = nfile + nrt;
  pthread_cond_broadcast(&r->cv);
  return 0;
}

static int load_globs(const char *const *globs, size_t n, int64_t def_interval, group_t ***groups, size_t *ng,
                      char *err, size_t errlen) {
  *groups = NULL;
  *ng = 0;
  for (size_t i = 0; i < n; i++) {
    glob_t gl;
    int g = glob(globs[i], 0, NULL, &gl);
    if (g == GLOB_NOMATCH) continue;
    if (g != 0) return md_error(err, errlen, MD_EINVAL, "rule_files: bad pattern %s", globs[i]);
    int rc = 0;
    for (size_t j = 0; j < gl.gl_pathc && !rc; j++)
      rc = load_file(gl.gl_pathv[j], def_interval, groups, ng, err, errlen);
    globfree(&gl);
    if (rc) {
      for (size_t k = 0; k < *ng; k++)
        group_free((*groups)[k]);
      free(*groups);
      *groups = NULL;
      *ng = 0;
      return rc;
    }
  }
  return 0;
}

int rules_load_files(rules_t *r, const char *const *globs, size_t n, char *err, size_t errlen) {
  group_t **gs;
  size_t ng;
  int rc = load_globs(globs, n, r->opt.default_interval_ms, &gs, &ng, err, errlen);
  if (rc) return rc;
  pthread_mutex_lock(&r->mu);
  /* Keep runtime groups out of the file set: rebuild() adds them again. */
  rc = rebuild(r, gs, ng, err, errlen);
  pthread_mutex_unlock(&r->mu);
  if (!rc) log_info("rules: loaded %zu groups from %zu patterns", ng, n);
  return rc;
}

int rules_check_files(const char *const *paths, size_t n, sb_t *out) {
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    group_t **gs = NULL;
    size_t ng = 0;
    char err[1024];
    sb_printf(out, "Checking %s\n", paths[i]);
    int rc = load_file(paths[i], 60000, &gs, &ng, err, sizeof err);
    if (rc) {
      sb_printf(out, "  FAILED:\n%s\n", err);
      failed = 1;
    } else {
      size_t nr = 0;
      for (size_t j = 0; j < ng; j++)
        nr += gs[j]->nrules;
      sb_printf(out, "  SUCCESS: %zu rules found\n", nr);
    }
    for (size_t j = 0; j < ng; j++)
      group_free(gs[j]);
    free(gs);
  }
  return failed ? MD_EINVAL : 0;
}

/* ---- runtime rules ------------------------------------------------------------------- */

static char *runtime_path(rules_t *r) {
  if (!r->data_dir) return NULL;
  sb_t sb = {0};
  sb_printf(&sb, "%s/rules.json", r->data_dir);
  return sb_steal(&sb);
}

static int build_runtime_groups(rules_t *r, group_t ***out, size_t *n, char *err, size_t errlen) {
  *out = NULL;
  *n = 0;
  const char *id;
  json_t *ent;
  json_object_foreach(r->runtime, id, ent) {
    const char *tenant = json_string_value(json_object_get(ent, "tenant"));
    json_t *rule = json_object_get(ent, "rule");
    const char *gname = json_string_value(json_object_get(rule, "group"));
    if (!gname) gname = "runtime";
    /* Find or create the (tenant, group) pair. */
    group_t *g = NULL;
    for (size_t i = 0; i < *n; i++)
      if (!strcmp((*out)[i]->name, gname) && !strcmp((*out)[i]->tenant, tenant)) g = (*out)[i];
    if (!g) {
      g = calloc(1, sizeof *g);
      group_t **ng = realloc(*out, (*n + 1) * sizeof *ng);
      if (!g || !ng) {
        free(g);
        if (ng) *out = ng;
        return MD_ENOMEM;
      }
      *out = ng;
      ng[(*n)++] = g;
      g->name = strdup(gname);
      g->file = strdup("runtime");
      g->tenant = strdup(tenant);
      g->runtime = true;
      g->interval_ms = r->opt.default_interval_ms;
      if (!g->name || !g->file || !g->tenant) return MD_ENOMEM;
    }
    json_t *iv = json_object_get(rule, "interval");
    int64_t iv_ms;
    if (iv && config_parse_duration(iv, &iv_ms) == 0 && iv_ms > 0) g->interval_ms = iv_ms;
    rule_t *ru;
    int rc = rule_from_json(rule, &ru, err, errlen);
    if (rc) return rc;
    ru->id = strdup(id);
    rule_t **nr = realloc(g->rules, (g->nrules + 1) * sizeof *nr);
    if (!nr || !ru->id) {
      rule_free(ru);
      return MD_ENOMEM;
    }
    g->rules = nr;
    nr[g->nrules++] = ru;
  }
  return 0;
}

static int persist_runtime(rules_t *r) {
  char *path = runtime_path(r);
  if (!path) return 0;
  char *text = json_dumps(r->runtime, JSON_INDENT(2) | JSON_SORT_KEYS);
  int rc = text ? md_write_file_atomic(path, text, strlen(text)) : MD_ENOMEM;
  free(text);
  free(path);
  return rc;
}

/* Current file groups (not runtime), detached so rebuild() can re-add runtime ones. */
static void take_file_groups(rules_t *r, group_t ***out, size_t *n) {
  group_t **fg = calloc(r->ngroups + 1, sizeof *fg);
  size_t k = 0;
  for (size_t i = 0; i < r->ngroups; i++) {
    if (!r->groups[i]->runtime && fg) {
      fg[k++] = r->groups[i];
      r->groups[i] = NULL;
    }
  }
  *out = fg;
  *n = k;
}

/* Rebuilds groups after a runtime change, keeping file groups and alert state. */
static int apply_runtime(rules_t *r, char *err, size_t errlen) {
  group_t **fg;
  size_t nf;
  take_file_groups(r, &fg, &nf);
  /* State of file groups moved into fg already; runtime groups keep theirs via carry_state
   * because the old runtime groups stay in r->groups until rebuild frees them. */
  return rebuild(r, fg, nf, err, errlen);
}

int rules_runtime_put(rules_t *r, const char *tenant, const char *id, const json_t *body, char *id_out,
                      char *err, size_t errlen) {
  rule_t *probe;
  int rc = rule_from_json(body, &probe, err, errlen);
  if (rc) return rc;
  rule_free(probe);
  pthread_mutex_lock(&r->mu);
  char newid[40];
  if (id) {
    json_t *ent = json_object_get(r->runtime, id);
    if (!ent || strcmp(json_string_value(json_object_get(ent, "tenant")), tenant)) {
      pthread_mutex_unlock(&r->mu);
      return md_error(err, errlen, MD_ENOTFOUND, "rule %s not found", id);
    }
    snprintf(newid, sizeof newid, "%s", id);
  } else {
    uint64_t h = md_hash64(&body, sizeof body, (uint64_t)md_mono_ns()) ^ (uint64_t)md_now_ms();
    snprintf(newid, sizeof newid, "%016llx", (unsigned long long)h);
  }
  json_t *copy = json_deep_copy(body);
  json_object_del(copy, "id");
  json_t *ent = json_pack("{s:s, s:o}", "tenant", tenant, "rule", copy);
  json_t *old = json_incref(json_object_get(r->runtime, newid));
  json_object_set_new(r->runtime, newid, ent);
  rc = apply_runtime(r, err, errlen);
  if (!rc) rc = persist_runtime(r);
  if (rc) { /* roll back */
    if (old)
      json_object_set(r->runtime, newid, old);
    else
      json_object_del(r->runtime, newid);
    char e2[64];
    apply_runtime(r, e2, sizeof e2);
    if (rc == MD_EIO || rc == MD_ENOSPC) md_error(err, errlen, rc, "cannot persist runtime rules");
  }
  json_decref(old);
  pthread_mutex_unlock(&r->mu);
  if (!rc) snprintf(id_out, 40, "%s", newid);
  return rc;
}

int rules_runtime_delete(rules_t *r, const char *tenant, const char *id) {
  pthread_mutex_lock(&r->mu);
  json_t *ent = json_object_get(r->runtime, id);
  int rc = MD_ENOTFOUND;
  if (ent && !strcmp(json_string_value(json_object_get(ent, "tenant")), tenant)) {
    json_object_del(r->runtime, id);
    char err[128];
    rc = apply_runtime(r, err, sizeof err);
    if (!rc) rc = persist_runtime(r);
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static void runtime_entry_json(const char *id, json_t *ent, sb_t *out) {
  json_t *o = json_deep_copy(json_object_get(ent, "rule"));
  json_object_set_new(o, "id", json_string(id));
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  if (s) sb_puts(out, s);
  free(s);
  json_decref(o);
}

void rules_runtime_list(rules_t *r, const char *tenant, sb_t *out) {
  pthread_mutex_lock(&r->mu);
  sb_puts(out, "[");
  const char *id;
  json_t *ent;
  bool first = true;
  json_object_foreach(r->runtime, id, ent) {
    if (strcmp(json_string_value(json_object_get(ent, "tenant")), tenant)) continue;
    if (!first) sb_putc(out, ',');
    first = false;
    runtime_entry_json(id, ent, out);
  }
  sb_puts(out, "]");
  pthread_mutex_unlock(&r->mu);
}

int rules_runtime_get(rules_t *r, const char *tenant, const char *id, sb_t *out) {
  pthread_mutex_lock(&r->mu);
  json_t *ent = json_object_get(r->runtime, id);
  int rc = MD_ENOTFOUND;
  if (ent && !strcmp(json_string_value(json_object_get(ent, "tenant")), tenant)) {
    runtime_entry_json(id, ent, out);
    rc = 0;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int rules_new(const rules_options_t *opt, rules_t **out, char *err, size_t errlen) {
  rules_t *r = calloc(1, sizeof *r);
  if (!r) return MD_ENOMEM;
  r->opt = *opt;
  if (r->opt.default_interval_ms <= 0) r->opt.default_interval_ms = 60000;
  if (r->opt.resend_delay_ms <= 0) r->opt.resend_delay_ms = 60000;
  if (r->opt.outage_tolerance_ms <= 0) r->opt.outage_tolerance_ms = 3600000;
  if (r->opt.for_grace_period_ms < 0) r->opt.for_grace_period_ms = 600000;
  r->external = calloc(opt->n_external_labels + 1, sizeof *r->external);
  for (size_t i = 0; r->external && i < opt->n_external_labels; i++) {
    r->external[i].name = strdup(opt->external_labels[i].name);
    r->external[i].value = strdup(opt->external_labels[i].value);
  }
  r->nexternal = opt->n_external_labels;
  r->opt.external_labels = r->external;
  r->data_dir = opt->data_dir ? strdup(opt->data_dir) : NULL;
  r->external_url = opt->external_url ? strdup(opt->external_url) : NULL;
  r->opt.external_url = r->external_url; /* own copy: the caller's may not outlive r */
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->runtime = json_object();
  int rc = notifier_new(&r->opt, &r->notifier);
  if (rc) {
    rules_free(r);
    return md_error(err, errlen, rc, "cannot start notifier");
  }
  char *path = runtime_path(r);
  if (path) {
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    if (doc && json_is_object(doc)) {
      json_decref(r->runtime);
      r->runtime = doc;
      char e[512];
      pthread_mutex_lock(&r->mu);
      rc = apply_runtime(r, e, sizeof e);
      pthread_mutex_unlock(&r->mu);
      if (rc) log_error("rules: runtime rules in %s not loaded: %s", path, e);
    } else if (doc) {
      json_decref(doc);
    }
    free(path);
  }
  *out = r;
  return 0;
}

void rules_free(rules_t *r) {
  if (!r) return;
  rules_stop(r);
  for (size_t i = 0; i < r->ngroups; i++)
    group_free(r->groups[i]);
  free(r->groups);
  notifier_free(r->notifier);
  json_decref(r->runtime);
  for (size_t i = 0; r->external && i < r->nexternal; i++) {
    free((char *)r->external[i].name);
    free((char *)r->external[i].value);
  }
  free(r->external);
  free(r->data_dir);
  free(r->external_url);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}

int rules_eval_all(rules_t *r, int64_t ts_ms) {
  pthread_mutex_lock(&r->mu);
  int rc = 0;
  for (size_t i = 0; i < r->ngroups; i++) {
    int e = group_eval(r, r->groups[i], ts_ms);
    if (e && !rc) rc = e;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static void *eval_thread(void *arg) {
  rules_t *r = arg;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping) {
    int64_t now = md_now_ms(), next = now + 60000;
    for (size_t i = 0; i < r->ngroups; i++) {
      group_t *g = r->groups[i];
      if (g->next_eval_ms == 0) {
        /* Spread groups over their interval by a hash of their name, aligned like Prometheus. */
        int64_t off = (int64_t)(md_hash64(g->name, strlen(g->name), 7) % (uint64_t)g->interval_ms);
        g->next_eval_ms = now - (now % g->interval_ms) + off;
        if (g->next_eval_ms < now) g->next_eval_ms += g->interval_ms;
      }
      if (g->next_eval_ms <= now) {
        group_eval(r, g, g->next_eval_ms);
        g->next_eval_ms += g->interval_ms;
        /* Slots that passed while this one ran (or while the thread was busy) are skipped,
         * not caught up, as in Prometheus; count them. */
        uint64_t missed = 0;
        while (g->next_eval_ms <= now) {
          g->next_eval_ms += g->interval_ms;
          missed++;
        }
        g->missed += missed;
        rules_metrics_missed(r, g, missed);
      }
      if (g->next_eval_ms < next) next = g->next_eval_ms;
    }
    int64_t wait = next - md_now_ms();
    if (wait > 0) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      int64_t ns = ts.tv_nsec + (wait % 1000) * 1000000;
      ts.tv_sec += wait / 1000 + ns / 1000000000;
      ts.tv_nsec = ns % 1000000000;
      pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

int rules_start(rules_t *r) {
  pthread_mutex_lock(&r->mu);
  if (r->running) {
    pthread_mutex_unlock(&r->mu);
    return 0;
  }
  r->stopping = false;
  int rc = pthread_create(&r->thread, NULL, eval_thread, r);
  r->running = rc == 0;
  pthread_mutex_unlock(&r->mu);
  return rc ? MD_ERR : 0;
}

void rules_stop(rules_t *r) {
  pthread_mutex_lock(&r->mu);
  if (!r->running) {
    pthread_mutex_unlock(&r->mu);
    return;
  }
  r->stopping = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  r->running = false;
}

void rules_get_stats(rules_t *r, rules_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&r->mu);
  out->groups = r->ngroups;
  for (size_t i = 0; i < r->ngroups; i++) {
    out->rules += r->groups[i]->nrules;
    for (size_t j = 0; j < r->groups[i]->nrules; j++)
      for (alert_t *a = r->groups[i]->rules[j]->alerts; a; a = a->next) {
        if (a->state == ALERT_FIRING) out->alerts_firing++;
        if (a->state == ALERT_PENDING) out->alerts_pending++;
      }
  }
  out->last_duration_ns = r->last_duration_ns;
  pthread_mutex_unlock(&r->mu);
  out->evaluations = atomic_load(&r->evaluations);
  out->evaluation_failures = atomic_load(&r->failures);
  notifier_stats_t ns;
  notifier_stats(r->notifier, &ns);
  out->notifications_sent = ns.sent;
  out->notifications_failed = ns.failed;
  out->notifications_dropped = ns.dropped;
  out->notifications_queued = ns.queued;
  out->notification_batches = ns.batches;
  out->notification_queue_length = ns.queue_length;
  out->notification_queue_capacity = ns.queue_capacity;
  out->notification_latency_ns = ns.last_latency_ns;
}

void rules_foreach_group(rules_t *r, void (*cb)(void *ctx, const rules_group_stats_t *g), void *ctx) {
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->ngroups; i++) {
    const group_t *g = r->groups[i];
    rules_group_stats_t st = {g->file,        g->name,         g->tenant,     g->nrules,
                              g->evaluations, g->failures,     g->iterations, g->missed,
                              g->interval_ms, g->last_eval_ms, g->eval_ns};
    cb(ctx, &st);
  }
  pthread_mutex_unlock(&r->mu);
}

size_t rules_notify_targets(rules_t *r, rules_target_stats_t *out, size_t max) {
  return notifier_targets(r->notifier, out, max);
}

/* ---- API bodies ---------------------------------------------------------------------- */

static void json_kv_obj(sb_t *out, const tsdb_label_t *ls, size_t n) {
  sb_putc(out, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(out, ',');
    sb_json_str(out, ls[i].name, strlen(ls[i].name));
    sb_putc(out, ':');
    sb_json_str(out, ls[i].value, strlen(ls[i].value));
  }
  sb_putc(out, '}');
}

static void json_kv_raw(sb_t *out, const kv_t *kv, size_t n) {
  sb_putc(out, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) sb_putc(out, ',');
    sb_json_str(out, kv[i].name, strlen(kv[i].name));
    sb_putc(out, ':');
    sb_json_str(out, kv[i].value, strlen(kv[i].value));
  }
  sb_putc(out, '}');
}

static const char *state_name(alert_state_t s) {
  return s == ALERT_FIRING ? "firing" : s == ALERT_PENDING ? "pending" : "inactive";
}

static void alert_json(sb_t *out, const alert_t *a, bool with_id) {
  char ts[32];
  md_format_rfc3339(a->active_at, ts);
  sb_puts(out, "{\"labels\":");
  json_kv_obj(out, a->labels, a->nlabels);
  sb_puts(out, ",\"annotations\":");
  json_kv_obj(out, a->annotations, a->nannotations);
  sb_printf(out, ",\"state\":\"%s\",\"activeAt\":\"%s\",\"value\":\"", state_name(a->state), ts);
  format_value_e(out, a->value);
  sb_putc(out, '"');
  if (a->keep_firing_since) {
    md_format_rfc3339(a->keep_firing_since, ts);
    sb_printf(out, ",\"keepFiringSince\":\"%s\"", ts);
  }
  (void)with_id;
  sb_putc(out, '}');
}

static void time_field(sb_t *out, const char *key, int64_t ms) {
  char ts[32];
  if (ms)
    md_format_rfc3339(ms, ts);
  else
    snprintf(ts, sizeof ts, "0001-01-01T00:00:00Z");
  sb_printf(out, ",\"%s\":\"%s\"", key, ts);
}

void rules_json_rules(rules_t *r, const char *tenant, const char *type, sb_t *out) {
  pthread_mutex_lock(&r->mu);
  sb_puts(out, "{\"groups\":[");
  bool gfirst = true;
  for (size_t i = 0; i < r->ngroups; i++) {
    group_t *g = r->groups[i];
    if (strcmp(g->tenant, tenant)) continue;
    /* With a type filter, Prometheus leaves out groups that have no rule of that type. */
    bool any = !type;
    for (size_t j = 0; !any && j < g->nrules; j++)
      any = g->rules[j]->is_alert == !strcmp(type, "alert");
    if (!any) continue;
    if (!gfirst) sb_putc(out, ',');
    gfirst = false;
    sb_puts(out, "{\"name\":");
    sb_json_str(out, g->name, strlen(g->name));
    sb_puts(out, ",\"file\":");
    sb_json_str(out, g->file, strlen(g->file));
    sb_puts(out, ",\"rules\":[");
    bool rfirst = true;
    for (size_t j = 0; j < g->nrules; j++) {
      rule_t *ru = g->rules[j];
      if (type && ((!strcmp(type, "alert") && !ru->is_alert) || (!strcmp(type, "record") && ru->is_alert)))
        continue;
      if (!rfirst) sb_putc(out, ',');
      rfirst = false;
      sb_puts(out, "{\"name\":");
      sb_json_str(out, ru->name, strlen(ru->name));
      sb_puts(out, ",\"query\":");
      sb_json_str(out, ru->expr_text, strlen(ru->expr_text));
      sb_puts(out, ",\"labels\":");
      json_kv_raw(out, ru->labels, ru->nlabels);
      if (ru->is_alert) {
        alert_state_t st = ALERT_INACTIVE;
        for (alert_t *a = ru->alerts; a; a = a->next)
          if (a->state > st) st = a->state;
        sb_printf(out,
                  ",\"state\":\"%s\",\"duration\":%g,\"keepFiringFor\":%g,\"annotations\":", state_name(st),
                  ru->for_ms / 1000.0, ru->keep_firing_for_ms / 1000.0);
        json_kv_raw(out, ru->annotations, ru->nannotations);
        sb_puts(out, ",\"alerts\":[");
        bool afirst = true;
        for (alert_t *a = ru->alerts; a; a = a->next) {
          if (a->state == ALERT_INACTIVE) continue;
          if (!afirst) sb_putc(out, ',');
          afirst = false;
          alert_json(out, a, false);
        }
        sb_puts(out, "],\"type\":\"alerting\"");
      } else {
        sb_puts(out, ",\"type\":\"recording\"");
      }
      if (ru->id) {
        sb_puts(out, ",\"id\":");
        sb_json_str(out, ru->id, strlen(ru->id));
      }
      sb_printf(out, ",\"health\":\"%s\",\"lastError\":",
                ru->health > 0   ? "ok"
                : ru->health < 0 ? "err"
                                 : "unknown");
      sb_json_str(out, ru->last_error, strlen(ru->last_error));
      sb_printf(out, ",\"evaluationTime\":%.9f", ru->eval_ns / 1e9);
      time_field(out, "lastEvaluation", ru->last_eval_ms);
      sb_putc(out, '}');
    }
    sb_printf(out, "],\"interval\":%g,\"limit\":%zu,\"evaluationTime\":%.9f", g->interval_ms / 1000.0,
              g->limit, g->eval_ns / 1e9);
    time_field(out, "lastEvaluation", g->last_eval_ms);
    sb_putc(out, '}');
  }
  sb_puts(out, "]}");
  pthread_mutex_unlock(&r->mu);
}

static void alerts_list(rules_t *r, const char *tenant, sb_t *out) {
  bool first = true;
  for (size_t i = 0; i < r->ngroups; i++) {
    group_t *g = r->groups[i];
    if (strcmp(g->tenant, tenant)) continue;
    for (size_t j = 0; j < g->nrules; j++)
      for (alert_t *a = g->rules[j]->alerts; a; a = a->next) {
        if (a->state == ALERT_INACTIVE) continue;
        if (!first) sb_putc(out, ',');
        first = false;
        alert_json(out, a, true);
      }
  }
}

void rules_json_alerts(rules_t *r, const char *tenant, sb_t *out) {
  pthread_mutex_lock(&r->mu);
  sb_puts(out, "{\"alerts\":[");
  alerts_list(r, tenant, out);
  sb_puts(out, "]}");
  pthread_mutex_unlock(&r->mu);
}

void rules_json_active(rules_t *r, const char *tenant, sb_t *out) {
  pthread_mutex_lock(&r->mu);
  sb_puts(out, "{\"alerts\":[");
  alerts_list(r, tenant, out);
  sb_puts(out, "]}");
  pthread_mutex_unlock(&r->mu);
}
