/*
 * scrape_configs parsing: the Prometheus-compatible subset (docs/collectors.md lists the keys)
 * read from the jansson tree the config module produced from YAML. Unknown keys are errors,
 * as in Prometheus, so a typo never silently disables a setting.
 *
 * Also here: target groups (static_configs and file SD content) and the conversion of a
 * runtime source (seed 003's /metrics/sources objects) into an equivalent job.
 */
#include "scrape_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

void scrape_options_default(scrape_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->default_interval_ms = 15000;
  opt->default_timeout_ms = 10000;
  opt->tenant = "default";
  opt->workers = 16;
  opt->sd_check_ms = 5000;
}

/* config_parse_duration, refusing numbers of more than 8 digits first: the core parser
 * multiplies without an overflow check (9102801346544h is undefined behaviour there, found
 * by fuzz_scrape_config), and runtime sources bring these strings in over HTTP. 8 digits of
 * every unit together stay far below INT64_MAX milliseconds. */
static bool short_numbers(const char *p, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    run = p[i] >= '0' && p[i] <= '9' ? run + 1 : 0;
    if (run > 8) return false;
  }
  return true;
}

static int parse_duration(const json_t *v, int64_t *ms) {
  if (json_is_string(v) && !short_numbers(json_string_value(v), json_string_length(v))) return MD_EINVAL;
  return config_parse_duration(v, ms);
}

int scrape_parse_duration_label(const char *s, int64_t *ms) {
  size_t n = strlen(s);
  if (!short_numbers(s, n) || md_parse_duration(s, n, ms) != 0 || *ms <= 0) return MD_EINVAL;
  return 0;
}

void scrape_format_duration(int64_t ms, char *out, size_t n) {
  if (ms <= 0) {
    snprintf(out, n, "0s");
    return;
  }
  size_t len = 0;
  out[0] = 0;
  static const struct {
    int64_t unit;
    const char *suffix;
  } u[] = {{86400000LL * 7, "w"}, {86400000LL, "d"}, {3600000LL, "h"},
           {60000LL, "m"},        {1000LL, "s"},     {1LL, "ms"}};
  for (size_t i = 0; i < 6 && len + 1 < n; i++) {
    if (ms >= u[i].unit) {
      len += (size_t)snprintf(out + len, n - len, "%lld%s", (long long)(ms / u[i].unit), u[i].suffix);
      ms %= u[i].unit;
    }
  }
}

void scrape_groups_free(scrape_group_t *g, size_t n) {
  if (!g) return;
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < g[i].ntargets; k++)
      free(g[i].targets[k]);
    free(g[i].targets);
    for (size_t k = 0; k < g[i].nlabels; k++) {
      free((char *)g[i].labels[k].name);
      free((char *)g[i].labels[k].value);
    }
    free(g[i].labels);
  }
  free(g);
}

int scrape_groups_parse(const json_t *arr, const char *extra_name, const char *extra_value,
                        scrape_group_t **out, size_t *nout, char *err, size_t errlen) {
  *out = NULL;
  *nout = 0;
  if (!arr || json_is_null(arr)) return 0;
  if (!json_is_array(arr)) return md_error(err, errlen, MD_EINVAL, "must be a list of {targets, labels}");
  size_t n = json_array_size(arr);
  scrape_group_t *g = calloc(n ? n : 1, sizeof *g);
  if (!g) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  int rc = 0;
  char nb[64];
  for (size_t i = 0; i < n && rc == 0; i++) {
    const json_t *o = json_array_get(arr, i);
    if (!json_is_object(o)) {
      rc = md_error(err, errlen, MD_EINVAL, "[%zu]: must be a mapping", i);
      break;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
      if (strcmp(key, "targets") != 0 && strcmp(key, "labels") != 0) {
        rc = md_error(err, errlen, MD_EINVAL, "[%zu]: unknown key \"%s\"", i, key);
        break;
      }
    }
    if (rc) break;
    const json_t *t = json_object_get(o, "targets");
    if (t && !json_is_null(t)) {
      if (!json_is_array(t)) {
        rc = md_error(err, errlen, MD_EINVAL, "[%zu].targets: must be a list", i);
        break;
      }
      g[i].targets = calloc(json_array_size(t) + 1, sizeof(char *));
      if (!g[i].targets) {
        rc = MD_ENOMEM;
        break;
      }
      for (size_t k = 0; k < json_array_size(t); k++) {
        const char *s = scrape_json_text(json_array_get(t, k), nb, sizeof nb);
        if (!s || !*s || strchr(s, '/') || strchr(s, ' ')) {
          rc = md_error(err, errlen, MD_EINVAL, "[%zu].targets[%zu]: \"%s\" is not a host:port address", i, k,
                        s ? s : "?");
          break;
        }
        if (!(g[i].targets[g[i].ntargets++] = strdup(s))) {
          rc = MD_ENOMEM;
          break;
        }
      }
    }
    const json_t *l = json_object_get(o, "labels");
    if (rc == 0 && l && !json_is_null(l) && !json_is_object(l)) {
      rc = md_error(err, errlen, MD_EINVAL, "[%zu].labels: must be a mapping", i);
      break;
    }
    size_t nl = (l && json_is_object(l) ? json_object_size(l) : 0) + (extra_name ? 1 : 0);
    g[i].labels = calloc(nl + 1, sizeof *g[i].labels);
    if (rc == 0 && !g[i].labels) rc = MD_ENOMEM;
    if (rc == 0 && l && json_is_object(l)) {
      json_object_foreach((json_t *)l, key, v) {
        const char *s = scrape_json_text(v, nb, sizeof nb);
        if (!scrape_valid_label_name(key) || !s) {
          rc = md_error(err, errlen, MD_EINVAL, "[%zu].labels: invalid label %s", i, key);
          break;
        }
        tsdb_label_t *x = &g[i].labels[g[i].nlabels++];
        x->name = strdup(key);
        x->value = strdup(s);
        if (!x->name || !x->value) {
          rc = MD_ENOMEM;
          break;
        }
      }
    }
    if (rc == 0 && extra_name) {
      tsdb_label_t *x = &g[i].labels[g[i].nlabels++];
      x->name = strdup(extra_name);
      x->value = strdup(extra_value);
      if (!x->name || !x->value) rc = MD_ENOMEM;
    }
  }
  if (rc) {
    scrape_groups_free(g, n);
    return rc == MD_ENOMEM ? md_error(err, errlen, rc, "out of memory") : rc;
  }
  *out = g;
  *nout = n;
  return 0;
}

void scrape_job_ref(scrape_job_t *j) {
  atomic_fetch_add(&j->refs, 1);
}

void scrape_job_unref(scrape_job_t *j) {
  if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
  free(j->name);
  free(j->source_id);
  free(j->metrics_path);
  free(j->scheme);
  for (size_t i = 0; i < j->nparams; i++) {
    free((char *)j->params[i].name);
    free((char *)j->params[i].value);
  }
  free(j->params);
  free(j->basic_user);
  free(j->basic_pass);
  free(j->auth_type);
  free(j->auth_credentials);
  free(j->ca_file);
  free(j->cert_file);
  free(j->key_file);
  free(j->server_name);
  scrape_relabel_free(j->relabel);
  scrape_relabel_free(j->metric_relabel);
  scrape_groups_free(j->groups, j->ngroups);
  for (size_t i = 0; i < j->nfile_sd; i++) {
    for (size_t k = 0; k < j->file_sd[i].nfiles; k++)
      free(j->file_sd[i].files[k]);
    free(j->file_sd[i].files);
    for (size_t k = 0; k < j->file_sd[i].nfound; k++) {
      free(j->file_sd[i].found[k].path);
      scrape_groups_free(j->file_sd[i].found[k].groups, j->file_sd[i].found[k].ngroups);
    }
    free(j->file_sd[i].found);
  }
  free(j->file_sd);
  free(j);
}

/* ---- one job ---------------------------------------------------------------------------- */

static int read_secret_file(const char *path, char **out, char *m, size_t ml) {
  char *buf = NULL;
  size_t len = 0;
  if (md_read_file(path, &buf, &len) != 0 || !buf) {
    free(buf);
    snprintf(m, ml, "cannot read %s", path);
    return MD_EINVAL;
  }
  while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    buf[--len] = 0;
  *out = buf;
  return 0;
}

static int dup_str(const json_t *v, char **out, const char *key, char *m, size_t ml) {
  const char *s = json_string_value(v);
  if (!s) {
    snprintf(m, ml, "%s: must be a string", key);
    return MD_EINVAL;
  }
  free(*out);
  *out = strdup(s);
  return *out ? 0 : MD_ENOMEM;
}

static int parse_limit(const json_t *v, uint64_t *out, const char *key, char *m, size_t ml) {
  if (!json_is_integer(v) || json_integer_value(v) < 0) {
    snprintf(m, ml, "%s: must be a non-negative integer", key);
    return MD_EINVAL;
  }
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int parse_basic_auth(const json_t *o, scrape_job_t *j, char *m, size_t ml) {
  if (!json_is_object(o)) return snprintf(m, ml, "basic_auth: must be a mapping"), MD_EINVAL;
  const char *key;
  json_t *v;
  int rc = 0;
  json_object_foreach((json_t *)o, key, v) {
    if (strcmp(key, "username") == 0)
      rc = dup_str(v, &j->basic_user, "basic_auth.username", m, ml);
    else if (strcmp(key, "password") == 0)
      rc = dup_str(v, &j->basic_pass, "basic_auth.password", m, ml);
    else if (strcmp(key, "password_file") == 0) {
      const char *p = json_string_value(v);
      if (!p) return snprintf(m, ml, "basic_auth.password_file: must be a string"), MD_EINVAL;
      free(j->basic_pass);
      j->basic_pass = NULL;
      rc = read_secret_file(p, &j->basic_pass, m, ml);
    } else {
      snprintf(m, ml, "basic_auth: unknown key \"%s\"", key);
      return MD_EINVAL;
    }
    if (rc) return rc;
  }
  if (!j->basic_user) return snprintf(m, ml, "basic_auth: username is required"), MD_EINVAL;
  return 0;
}

static int parse_authorization(const json_t *o, scrape_job_t *j, char *m, size_t ml) {
  if (!json_is_object(o)) return snprintf(m, ml, "authorization: must be a mapping"), MD_EINVAL;
  const char *key;
  json_t *v;
  int rc = 0;
  json_object_foreach((json_t *)o, key, v) {
    if (strcmp(key, "type") == 0)
      rc = dup_str(v, &j->auth_type, "authorization.type", m, ml);
    else if (strcmp(key, "credentials") == 0)
      rc = dup_str(v, &j->auth_credentials, "authorization.credentials", m, ml);
    else if (strcmp(key, "credentials_file") == 0) {
      const char *p = json_string_value(v);
      if (!p) return snprintf(m, ml, "authorization.credentials_file: must be a string"), MD_EINVAL;
      free(j->auth_credentials);
      j->auth_credentials = NULL;
      rc = read_secret_file(p, &j->auth_credentials, m, ml);
    } else {
      snprintf(m, ml, "authorization: unknown key \"%s\"", key);
      return MD_EINVAL;
    }
    if (rc) return rc;
  }
  if (!j->auth_type && !(j->auth_type = strdup("Bearer"))) return MD_ENOMEM;
  return 0;
}

static int parse_tls(const json_t *o, scrape_job_t *j, char *m, size_t ml) {
  if (!json_is_object(o)) return snprintf(m, ml, "tls_config: must be a mapping"), MD_EINVAL;
  const char *key;
  json_t *v;
  int rc = 0;
  json_object_foreach((json_t *)o, key, v) {
    if (strcmp(key, "ca_file") == 0)
      rc = dup_str(v, &j->ca_file, "tls_config.ca_file", m, ml);
    else if (strcmp(key, "cert_file") == 0)
      rc = dup_str(v, &j->cert_file, "tls_config.cert_file", m, ml);
    else if (strcmp(key, "key_file") == 0)
      rc = dup_str(v, &j->key_file, "tls_config.key_file", m, ml);
    else if (strcmp(key, "server_name") == 0)
      rc = dup_str(v, &j->server_name, "tls_config.server_name", m, ml);
    else if (strcmp(key, "insecure_skip_verify") == 0) {
      if (!json_is_boolean(v))
        return snprintf(m, ml, "tls_config.insecure_skip_verify: must be true or false"), MD_EINVAL;
      j->insecure_skip_verify = json_is_true(v);
    } else {
      snprintf(m, ml, "tls_config: unknown key \"%s\"", key);
      return MD_EINVAL;
    }
    if (rc) return rc;
  }
  if ((j->cert_file == NULL) != (j->key_file == NULL))
    return snprintf(m, ml, "tls_config: cert_file and key_file go together"), MD_EINVAL;
  return 0;
}

static int parse_params(const json_t *o, scrape_job_t *j, char *m, size_t ml) {
  if (!json_is_object(o)) return snprintf(m, ml, "params: must be a mapping of lists"), MD_EINVAL;
  size_t total = 0;
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)o, key, v) total += json_is_array(v) ? json_array_size(v) : 1;
  j->params = calloc(total + 1, sizeof *j->params);
  if (!j->params) return MD_ENOMEM;
  char nb[64];
  json_object_foreach((json_t *)o, key, v) {
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < n; i++) {
      const char *s = scrape_json_text(json_is_array(v) ? json_array_get(v, i) : v, nb, sizeof nb);
      if (!s) return snprintf(m, ml, "params.%s: values must be strings", key), MD_EINVAL;
      tsdb_label_t *p = &j->params[j->nparams++];
      p->name = strdup(key);
      p->value = strdup(s);
      if (!p->name || !p->value) return MD_ENOMEM;
    }
  }
  return 0;
}

static int parse_file_sd(const json_t *arr, scrape_job_t *j, char *m, size_t ml) {
  if (!json_is_array(arr)) return snprintf(m, ml, "file_sd_configs: must be a list"), MD_EINVAL;
  size_t n = json_array_size(arr);
  j->file_sd = calloc(n ? n : 1, sizeof *j->file_sd);
  if (!j->file_sd) return MD_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const json_t *o = json_array_get(arr, i);
    scrape_file_sd_t *f = &j->file_sd[j->nfile_sd++];
    f->refresh_ms = 300000;
    if (!json_is_object(o)) return snprintf(m, ml, "file_sd_configs[%zu]: must be a mapping", i), MD_EINVAL;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
      if (strcmp(key, "files") == 0) {
        if (!json_is_array(v) || json_array_size(v) == 0)
          return snprintf(m, ml, "file_sd_configs[%zu].files: must be a non-empty list", i), MD_EINVAL;
        f->files = calloc(json_array_size(v), sizeof(char *));
        if (!f->files) return MD_ENOMEM;
        for (size_t k = 0; k < json_array_size(v); k++) {
          const char *s = json_string_value(json_array_get(v, k));
          if (!s || !*s)
            return snprintf(m, ml, "file_sd_configs[%zu].files[%zu]: must be a path", i, k), MD_EINVAL;
          if (!(f->files[f->nfiles++] = strdup(s))) return MD_ENOMEM;
        }
      } else if (strcmp(key, "refresh_interval") == 0) {
        if (parse_duration(v, &f->refresh_ms) != 0 || f->refresh_ms <= 0)
          return snprintf(m, ml, "file_sd_configs[%zu].refresh_interval: invalid duration", i), MD_EINVAL;
      } else {
        return snprintf(m, ml, "file_sd_configs[%zu]: unknown key \"%s\"", i, key), MD_EINVAL;
      }
    }
    if (!f->nfiles) return snprintf(m, ml, "file_sd_configs[%zu]: files is required", i), MD_EINVAL;
  }
  return 0;
}

static int parse_job_body(const json_t *o, const scrape_options_t *opt, scrape_job_t *j, char *m, size_t ml) {
  const char *key;
  json_t *v;
  int rc = 0;
  char sub[256];
  bool has_timeout = false;
  json_object_foreach((json_t *)o, key, v) {
    if (strcmp(key, "job_name") == 0) {
      /* read by the caller */
    } else if (strcmp(key, "scrape_interval") == 0) {
      if (parse_duration(v, &j->interval_ms) || j->interval_ms <= 0)
        return snprintf(m, ml, "scrape_interval: invalid duration"), MD_EINVAL;
    } else if (strcmp(key, "scrape_timeout") == 0) {
      if (parse_duration(v, &j->timeout_ms) || j->timeout_ms <= 0)
        return snprintf(m, ml, "scrape_timeout: invalid duration"), MD_EINVAL;
      has_timeout = true;
    } else if (strcmp(key, "metrics_path") == 0) {
      rc = dup_str(v, &j->metrics_path, key, m, ml);
      if (rc == 0 && j->metrics_path[0] != '/')
        return snprintf(m, ml, "metrics_path: must start with /"), MD_EINVAL;
    } else if (strcmp(key, "scheme") == 0) {
      rc = dup_str(v, &j->scheme, key, m, ml);
      if (rc == 0 && strcmp(j->scheme, "http") && strcmp(j->scheme, "https"))
        return snprintf(m, ml, "scheme: must be http or https"), MD_EINVAL;
    } else if (strcmp(key, "params") == 0) {
      rc = parse_params(v, j, m, ml);
    } else if (strcmp(key, "honor_labels") == 0 || strcmp(key, "honor_timestamps") == 0) {
      if (!json_is_boolean(v)) return snprintf(m, ml, "%s: must be true or false", key), MD_EINVAL;
      if (key[6] == 'l')
        j->honor_labels = json_is_true(v);
      else
        j->honor_timestamps = json_is_true(v);
    } else if (strcmp(key, "basic_auth") == 0) {
      rc = parse_basic_auth(v, j, m, ml);
    } else if (strcmp(key, "authorization") == 0) {
      rc = parse_authorization(v, j, m, ml);
    } else if (strcmp(key, "bearer_token") == 0) { /* the pre-2.26 spelling */
      rc = dup_str(v, &j->auth_credentials, key, m, ml);
      if (rc == 0 && !(j->auth_type = strdup("Bearer"))) rc = MD_ENOMEM;
    } else if (strcmp(key, "tls_config") == 0) {
      rc = parse_tls(v, j, m, ml);
    } else if (strcmp(key, "static_configs") == 0) {
      rc = scrape_groups_parse(v, NULL, NULL, &j->groups, &j->ngroups, sub, sizeof sub);
      if (rc == MD_EINVAL) snprintf(m, ml, "static_configs%s", sub);
    } else if (strcmp(key, "file_sd_configs") == 0) {
      rc = parse_file_sd(v, j, m, ml);
    } else if (strcmp(key, "relabel_configs") == 0) {
      rc = scrape_relabel_parse(v, "relabel_configs", &j->relabel, m, ml);
    } else if (strcmp(key, "metric_relabel_configs") == 0) {
      rc = scrape_relabel_parse(v, "metric_relabel_configs", &j->metric_relabel, m, ml);
    } else if (strcmp(key, "sample_limit") == 0) {
      rc = parse_limit(v, &j->sample_limit, key, m, ml);
    } else if (strcmp(key, "label_limit") == 0) {
      rc = parse_limit(v, &j->label_limit, key, m, ml);
    } else if (strcmp(key, "label_name_length_limit") == 0) {
      rc = parse_limit(v, &j->label_name_length_limit, key, m, ml);
    } else if (strcmp(key, "label_value_length_limit") == 0) {
      rc = parse_limit(v, &j->label_value_length_limit, key, m, ml);
    } else if (strcmp(key, "body_size_limit") == 0) {
      char nb[64];
      const char *s = scrape_json_text(v, nb, sizeof nb);
      if (!s || config_parse_size(s, strlen(s), &j->body_size_limit))
        return snprintf(m, ml, "body_size_limit: invalid size"), MD_EINVAL;
    } else {
      return snprintf(m, ml, "unknown key \"%s\"", key), MD_EINVAL;
    }
    if (rc) return rc;
  }
  if (!has_timeout) j->timeout_ms = opt->default_timeout_ms;
  /* Prometheus rejects a timeout above the interval; a defaulted one is clamped instead. */
  if (j->timeout_ms > j->interval_ms) {
    if (has_timeout) return snprintf(m, ml, "scrape_timeout greater than scrape_interval"), MD_EINVAL;
    j->timeout_ms = j->interval_ms;
  }
  if (j->basic_user && j->auth_credentials)
    return snprintf(m, ml, "at most one of basic_auth and authorization may be set"), MD_EINVAL;
  if (!j->metrics_path && !(j->metrics_path = strdup("/metrics"))) return MD_ENOMEM;
  if (!j->scheme && !(j->scheme = strdup("http"))) return MD_ENOMEM;
  if (!j->relabel && (rc = scrape_relabel_parse(NULL, NULL, &j->relabel, m, ml))) return rc;
  if (!j->metric_relabel && (rc = scrape_relabel_parse(NULL, NULL, &j->metric_relabel, m, ml))) return rc;
  return 0;
}

int scrape_job_parse(const json_t *o, const scrape_options_t *opt, scrape_job_t **out, char *err,
                     size_t errlen) {
  scrape_options_t def;
  if (!opt) {
    scrape_options_default(&def);
    opt = &def;
  }
  if (!json_is_object(o)) return md_error(err, errlen, MD_EINVAL, "scrape_configs entries must be mappings");
  const char *name = json_string_value(json_object_get(o, "job_name"));
  if (!name || !*name) return md_error(err, errlen, MD_EINVAL, "scrape_configs: job_name is required");
  scrape_job_t *j = calloc(1, sizeof *j);
  if (!j) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  atomic_init(&j->refs, 1);
  j->interval_ms = opt->default_interval_ms > 0 ? opt->default_interval_ms : 15000;
  j->honor_timestamps = true;
  /* Prometheus reads bodies of any size; a bound keeps one broken or hostile target from
   * exhausting memory. body_size_limit: 0 lifts it. */
  j->body_size_limit = SCRAPE_DEFAULT_BODY_LIMIT;
  j->name = strdup(name);
  char m[384] = "";
  int rc = j->name ? parse_job_body(o, opt, j, m, sizeof m) : MD_ENOMEM;
  if (rc) {
    scrape_job_unref(j);
    if (rc == MD_ENOMEM) return md_error(err, errlen, rc, "out of memory");
    return md_error(err, errlen, rc, "scrape_configs: job \"%s\": %s", name, m);
  }
  *out = j;
  return 0;
}

int scrape_config_check(const json_t *scrape_configs, const scrape_options_t *opt, char *err, size_t errlen) {
  if (!scrape_configs || json_is_null(scrape_configs)) return 0;
  if (!json_is_array(scrape_configs))
    return md_error(err, errlen, MD_EINVAL, "scrape_configs must be a list");
  for (size_t i = 0; i < json_array_size(scrape_configs); i++) {
    scrape_job_t *j;
    int rc = scrape_job_parse(json_array_get(scrape_configs, i), opt, &j, err, errlen);
    if (rc) return rc;
    for (size_t k = 0; k < i; k++) {
      const char *other = json_string_value(json_object_get(json_array_get(scrape_configs, k), "job_name"));
      if (other && strcmp(other, j->name) == 0) {
        rc = md_error(err, errlen, MD_EINVAL,
                      "scrape_configs: found multiple scrape configs with job name \"%s\"", j->name);
        break;
      }
    }
    scrape_job_unref(j);
    if (rc) return rc;
  }
  return 0;
}

/* ---- runtime sources ------------------------------------------------------------------ */

/* Keys a source may carry besides the scrape_configs keys it passes through. */
static bool source_key(const char *k) {
  static const char *own[] = {"id", "name", "url", "targets", "labels", "enabled", "description", "health"};
  for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
    if (strcmp(k, own[i]) == 0) return true;
  return false;
}

int scrape_source_to_config(const json_t *src, const char *id, json_t **out, char *err, size_t errlen) {
  if (!json_is_object(src)) return md_error(err, errlen, MD_EINVAL, "a source must be a JSON object");
  json_t *c = json_object();
  json_t *group = json_object();
  json_t *targets = json_array();
  if (!c || !group || !targets) {
    json_decref(c);
    json_decref(group);
    json_decref(targets);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  int rc = 0;
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)src, key, v) {
    if (!source_key(key) && strcmp(key, "static_configs") && strcmp(key, "file_sd_configs"))
      json_object_set(c, key, v);
    else if (strcmp(key, "static_configs") == 0 || strcmp(key, "file_sd_configs") == 0) {
      rc = md_error(err, errlen, MD_EINVAL, "%s: use \"targets\" or \"url\" in a source", key);
      goto fail;
    }
  }
  const char *url = json_string_value(json_object_get(src, "url"));
  const json_t *tl = json_object_get(src, "targets");
  if (json_object_get(src, "url") && !url) {
    rc = md_error(err, errlen, MD_EINVAL, "url: must be a string");
    goto fail;
  }
  if (url) {
    /* scheme://host[:port][/path][?query] */
    const char *p = strstr(url, "://");
    if (!p || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
      rc = md_error(err, errlen, MD_EINVAL, "url: \"%s\" is not an http(s) URL", url);
      goto fail;
    }
    json_object_set_new(c, "scheme", json_stringn(url, (size_t)(p - url)));
    const char *host = p + 3;
    size_t hl = strcspn(host, "/?#");
    if (hl == 0) {
      rc = md_error(err, errlen, MD_EINVAL, "url: no host in \"%s\"", url);
      goto fail;
    }
    json_array_append_new(targets, json_stringn(host, hl));
    const char *path = host + hl;
    size_t pl = strcspn(path, "?#");
    if (pl > 0 && path[0] == '/') json_object_set_new(c, "metrics_path", json_stringn(path, pl));
    if (path[pl] == '?') {
      json_t *params = json_object();
      const char *q = path + pl + 1;
      while (*q && *q != '#') {
        size_t kl = strcspn(q, "=&#");
        const char *val = q[kl] == '=' ? q + kl + 1 : q + kl;
        size_t vl = q[kl] == '=' ? strcspn(val, "&#") : 0;
        if (kl) {
          char *k = strndup(q, kl);
          json_t *arr = k ? json_object_get(params, k) : NULL;
          if (k && !arr) {
            arr = json_array();
            json_object_set_new(params, k, arr);
          }
          if (arr) json_array_append_new(arr, json_stringn(val, vl));
          free(k);
        }
        q = val + vl;
        if (*q == '&') q++;
      }
      json_object_set_new(c, "params", params);
    }
  } else if (json_is_array(tl) && json_array_size(tl) > 0) {
    json_array_extend(targets, (json_t *)tl);
  } else {
    rc = md_error(err, errlen, MD_EINVAL, "a source needs \"url\" or a non-empty \"targets\" list");
    goto fail;
  }
  json_object_set_new(group, "targets", targets);
  targets = NULL;
  const json_t *labels = json_object_get(src, "labels");
  if (labels) json_object_set(group, "labels", (json_t *)labels);
  json_t *sc = json_array();
  json_array_append_new(sc, group);
  group = NULL;
  json_object_set_new(c, "static_configs", sc);
  if (!json_object_get(c, "job_name")) {
    const char *name = json_string_value(json_object_get(src, "name"));
    json_object_set_new(c, "job_name", json_string(name && *name ? name : id));
  }
  *out = c;
  return 0;
fail:
  json_decref(c);
  json_decref(group);
  json_decref(targets);
  return rc;
}
