/*
 * OpenTelemetry OTLP/HTTP metrics → batch, from protobuf (proto/otlp.proto, protobuf-c with
 * an arena allocator) or from the OTLP JSON encoding (jansson). Both decoders fill the same
 * neutral point description (opoint_t) and share one mapping, emit_point(), which follows
 * the Prometheus OTLP translation where it matters to users (docs/api-ingest.md):
 *
 *   - metric and attribute names are sanitised ('.', '-', '/' ... → '_');
 *   - gauge → name; monotonic cumulative sum → name_total (unless it already ends so);
 *     other sums → name; delta sums are stored as they come (not accumulated);
 *   - histogram → name_bucket{le} (cumulative counts, le="+Inf" = count), name_sum,
 *     name_count; summary → name{quantile}, name_sum, name_count;
 *   - exponential histograms are skipped and counted;
 *   - resource attributes: service.name → job ("namespace/name" with service.namespace),
 *     service.instance.id → instance; the other resource attributes are not labels (they
 *     would multiply series; Prometheus keeps them in target_info);
 *   - a point flagged "no recorded value" becomes a staleness marker;
 *   - time 0 → the request's default timestamp.
 * A bad metric (bad name, bad attributes) is reported by its index and skipped.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/otlp.pb-c.h"
#include "ingest_int.h"

enum { OT_GAUGE, OT_SUM, OT_SUM_TOTAL, OT_HIST, OT_SUMMARY };

typedef struct {
  ilabel_t *attrs;
  size_t nattrs;
  int64_t ts;
  bool no_value;
  double value;
  uint64_t count;
  double sum;
  bool has_sum;
  const uint64_t *buckets;
  size_t nbuckets;
  const double *bounds;
  size_t nbounds;
  const double *qs, *qv;
  size_t nq;
} opoint_t;

typedef struct {
  ictx_t c;
  arena_t *a;
  ilabel_t *L; /* INGEST_HARD_MAX_LABELS + 2 */
  ilabel_t res[2];
  size_t nres;
  size_t metric_index;
} otlp_t;

static const char *sanitize(otlp_t *X, const char *s, size_t n, bool metric, size_t *out) {
  if (metric ? ingest_valid_metric_name(s, n) : ingest_valid_label_name(s, n)) {
    *out = n;
    return s;
  }
  char *o = arena_alloc(X->a, n + 2);
  if (!o) return NULL;
  *out = ingest_sanitize_name(s, n, metric, o);
  return o;
}

static int64_t nanos_to_ms(otlp_t *X, uint64_t ns) {
  if (ns == 0) return X->c.o ? X->c.o->default_ts : 0;
  return (int64_t)(ns / 1000000u);
}

/* Adds one series with one sample: name+suffix, resource labels, attributes, extra label. */
static int emit_one(otlp_t *X, const char *name, size_t nlen, const char *suffix, const opoint_t *pt,
                    const char *xname, const char *xval, double v, char *err, size_t errlen) {
  size_t sl = suffix ? strlen(suffix) : 0;
  char *full = arena_alloc(X->a, nlen + sl + 1);
  if (!full) return MD_ENOMEM;
  memcpy(full, name, nlen);
  if (sl) memcpy(full + nlen, suffix, sl);
  ilabel_t *L = X->L;
  size_t nl = 0;
  L[nl++] = (ilabel_t){"__name__", 8, full, nlen + sl};
  for (size_t r = 0; r < X->nres; r++) {
    bool overridden = false;
    for (size_t i = 0; i < pt->nattrs && !overridden; i++)
      overridden = pt->attrs[i].nlen == X->res[r].nlen &&
                   memcmp(pt->attrs[i].name, X->res[r].name, X->res[r].nlen) == 0;
    if (!overridden) L[nl++] = X->res[r];
  }
  for (size_t i = 0; i < pt->nattrs; i++)
    L[nl++] = pt->attrs[i];
  if (xname) L[nl++] = (ilabel_t){xname, strlen(xname), xval, strlen(xval)};
  int rc = ictx_series(&X->c, L, nl, err, errlen);
  if (rc) return rc;
  return ictx_sample(&X->c, pt->ts, pt->no_value ? tsdb_stale_nan() : v);
}

static int emit_point(otlp_t *X, const char *name, size_t nlen, int kind, const opoint_t *pt, char *err,
                      size_t errlen) {
  if (pt->nattrs > INGEST_HARD_MAX_LABELS - 4)
    return md_error(err, errlen, MD_EINVAL, "data point has %zu attributes, too many", pt->nattrs);
  switch (kind) {
  case OT_GAUGE:
  case OT_SUM:
    return emit_one(X, name, nlen, NULL, pt, NULL, NULL, pt->value, err, errlen);
  case OT_SUM_TOTAL: {
    bool has = nlen >= 6 && memcmp(name + nlen - 6, "_total", 6) == 0;
    return emit_one(X, name, nlen, has ? NULL : "_total", pt, NULL, NULL, pt->value, err, errlen);
  }
  case OT_HIST: {
    if (pt->nbuckets && pt->nbuckets != pt->nbounds + 1)
      return md_error(err, errlen, MD_EINVAL,
                      "histogram has %zu bucket counts for %zu bounds (want bounds+1)", pt->nbuckets,
                      pt->nbounds);
    int rc;
    if (pt->nbuckets) {
      uint64_t cum = 0;
      for (size_t i = 0; i < pt->nbuckets; i++) {
        cum += pt->buckets[i];
        char le[48];
        if (i < pt->nbounds) {
          sb_t s = {0};
          ingest_format_double(&s, pt->bounds[i]);
          snprintf(le, sizeof le, "%s", s.buf ? s.buf : "0");
          sb_free(&s);
        } else {
          snprintf(le, sizeof le, "+Inf");
        }
        if ((rc = emit_one(X, name, nlen, "_bucket", pt, "le", le, (double)cum, err, errlen))) return rc;
      }
    }
    if (pt->has_sum && (rc = emit_one(X, name, nlen, "_sum", pt, NULL, NULL, pt->sum, err, errlen)))
      return rc;
    return emit_one(X, name, nlen, "_count", pt, NULL, NULL, (double)pt->count, err, errlen);
  }
  case OT_SUMMARY: {
    int rc;
    for (size_t i = 0; i < pt->nq; i++) {
      sb_t s = {0};
      ingest_format_double(&s, pt->qs[i]);
      char q[48];
      snprintf(q, sizeof q, "%s", s.buf ? s.buf : "0");
      sb_free(&s);
      if ((rc = emit_one(X, name, nlen, NULL, pt, "quantile", q, pt->qv[i], err, errlen))) return rc;
    }
    if ((rc = emit_one(X, name, nlen, "_sum", pt, NULL, NULL, pt->sum, err, errlen))) return rc;
    return emit_one(X, name, nlen, "_count", pt, NULL, NULL, (double)pt->count, err, errlen);
  }
  }
  return MD_EINVAL;
}

static int otlp_init(otlp_t *X, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *res) {
  ictx_init(&X->c, o, b, res);
  X->a = arena_new(0);
  X->L = malloc(sizeof(ilabel_t) * (INGEST_HARD_MAX_LABELS + 4));
  X->nres = 0;
  X->metric_index = 0;
  if (!X->a || !X->L) {
    arena_free(X->a);
    free(X->L);
    return MD_ENOMEM;
  }
  return 0;
}

static void otlp_done(otlp_t *X) {
  arena_free(X->a);
  free(X->L);
}

/* service.name / service.namespace / service.instance.id → job, instance. */
static int set_resource(otlp_t *X, const char *svc, size_t svcl, const char *ns, size_t nsl, const char *inst,
                        size_t instl) {
  X->nres = 0;
  if (svc && svcl) {
    if (ns && nsl) {
      char *j = arena_alloc(X->a, nsl + 1 + svcl);
      if (!j) return MD_ENOMEM;
      memcpy(j, ns, nsl);
      j[nsl] = '/';
      memcpy(j + nsl + 1, svc, svcl);
      X->res[X->nres++] = (ilabel_t){"job", 3, j, nsl + 1 + svcl};
    } else {
      X->res[X->nres++] = (ilabel_t){"job", 3, svc, svcl};
    }
  }
  if (inst && instl) X->res[X->nres++] = (ilabel_t){"instance", 8, inst, instl};
  return 0;
}

/* ---- protobuf ------------------------------------------------------------------------- */

static void *pb_alloc(void *d, size_t n) {
  return arena_alloc((arena_t *)d, n ? n : 1);
}
static void pb_free(void *d, void *p) {
  (void)d;
  (void)p;
}

/* Renders an attribute value as a label value (in the arena). NULL value = skip. */
static const char *pb_any_string(otlp_t *X, const Mdotlp__AnyValue *v, size_t *len) {
  if (!v) return NULL;
  char buf[64];
  switch (v->value_case) {
  case MDOTLP__ANY_VALUE__VALUE_STRING_VALUE:
    *len = strlen(v->string_value);
    return v->string_value;
  case MDOTLP__ANY_VALUE__VALUE_BOOL_VALUE:
    *len = v->bool_value ? 4 : 5;
    return v->bool_value ? "true" : "false";
  case MDOTLP__ANY_VALUE__VALUE_INT_VALUE:
    *len = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v->int_value);
    return arena_strndup(X->a, buf, *len);
  case MDOTLP__ANY_VALUE__VALUE_DOUBLE_VALUE: {
    sb_t s = {0};
    ingest_format_double(&s, v->double_value);
    char *r = s.buf ? arena_strndup(X->a, s.buf, s.len) : NULL;
    *len = s.len;
    sb_free(&s);
    return r;
  }
  default:
    return NULL;
  }
}

static int pb_attrs(otlp_t *X, Mdotlp__KeyValue **kv, size_t n, opoint_t *pt) {
  pt->attrs = arena_alloc(X->a, sizeof(ilabel_t) * (n ? n : 1));
  if (!pt->attrs) return MD_ENOMEM;
  pt->nattrs = 0;
  for (size_t i = 0; i < n; i++) {
    size_t vl = 0, kl;
    const char *v = pb_any_string(X, kv[i]->value, &vl);
    if (!v) continue;
    const char *k = sanitize(X, kv[i]->key, strlen(kv[i]->key), false, &kl);
    if (!k) return MD_ENOMEM;
    pt->attrs[pt->nattrs++] = (ilabel_t){k, kl, v, vl};
  }
  return 0;
}

static int pb_metric(otlp_t *X, const Mdotlp__Metric *m, char *err, size_t errlen) {
  size_t nl;
  const char *name = sanitize(X, m->name, strlen(m->name), true, &nl);
  if (!name) return MD_ENOMEM;
  if (nl == 0) return md_error(err, errlen, MD_EINVAL, "metric has an empty name");
  opoint_t pt;
  int rc;
  switch (m->data_case) {
  case MDOTLP__METRIC__DATA_GAUGE:
  case MDOTLP__METRIC__DATA_SUM: {
    Mdotlp__NumberDataPoint **dp;
    size_t n;
    int kind = OT_GAUGE;
    if (m->data_case == MDOTLP__METRIC__DATA_GAUGE) {
      dp = m->gauge->data_points;
      n = m->gauge->n_data_points;
    } else {
      dp = m->sum->data_points;
      n = m->sum->n_data_points;
      kind = m->sum->is_monotonic && m->sum->aggregation_temporality == 2 ? OT_SUM_TOTAL : OT_SUM;
    }
    for (size_t i = 0; i < n; i++) {
      memset(&pt, 0, sizeof pt);
      if ((rc = pb_attrs(X, dp[i]->attributes, dp[i]->n_attributes, &pt))) return rc;
      pt.ts = nanos_to_ms(X, dp[i]->time_unix_nano);
      pt.no_value = dp[i]->flags & 1;
      pt.value = dp[i]->value_case == MDOTLP__NUMBER_DATA_POINT__VALUE_AS_INT ? (double)dp[i]->as_int
                                                                              : dp[i]->as_double;
      if ((rc = emit_point(X, name, nl, kind, &pt, err, errlen))) return rc;
    }
    return 0;
  }
  case MDOTLP__METRIC__DATA_HISTOGRAM:
    for (size_t i = 0; i < m->histogram->n_data_points; i++) {
      const Mdotlp__HistogramDataPoint *d = m->histogram->data_points[i];
      memset(&pt, 0, sizeof pt);
      if ((rc = pb_attrs(X, d->attributes, d->n_attributes, &pt))) return rc;
      pt.ts = nanos_to_ms(X, d->time_unix_nano);
      pt.no_value = d->flags & 1;
      pt.count = d->count;
      pt.sum = d->sum;
      pt.has_sum = true;
      pt.buckets = d->bucket_counts;
      pt.nbuckets = d->n_bucket_counts;
      pt.bounds = d->explicit_bounds;
      pt.nbounds = d->n_explicit_bounds;
      if ((rc = emit_point(X, name, nl, OT_HIST, &pt, err, errlen))) return rc;
    }
    return 0;
  case MDOTLP__METRIC__DATA_SUMMARY:
    for (size_t i = 0; i < m->summary->n_data_points; i++) {
      const Mdotlp__SummaryDataPoint *d = m->summary->data_points[i];
      memset(&pt, 0, sizeof pt);
      if ((rc = pb_attrs(X, d->attributes, d->n_attributes, &pt))) return rc;
      pt.ts = nanos_to_ms(X, d->time_unix_nano);
      pt.no_value = d->flags & 1;
      pt.count = d->count;
      pt.sum = d->sum;
      double *qs = arena_alloc(X->a, sizeof(double) * (d->n_quantile_values + 1));
      double *qv = arena_alloc(X->a, sizeof(double) * (d->n_quantile_values + 1));
      if (!qs || !qv) return MD_ENOMEM;
      for (size_t k = 0; k < d->n_quantile_values; k++) {
        qs[k] = d->quantile_values[k]->quantile;
        qv[k] = d->quantile_values[k]->value;
      }
      pt.qs = qs;
      pt.qv = qv;
      pt.nq = d->n_quantile_values;
      if ((rc = emit_point(X, name, nl, OT_SUMMARY, &pt, err, errlen))) return rc;
    }
    return 0;
  case MDOTLP__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    X->c.res->skipped++;
    return 0;
  default:
    return md_error(err, errlen, MD_EINVAL, "metric %.64s has no data", m->name);
  }
}

int ingest_parse_otlp_pb(const uint8_t *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                         ingest_result_t *res) {
  otlp_t X;
  if (otlp_init(&X, o, b, res)) return MD_ENOMEM;
  ProtobufCAllocator alloc = {pb_alloc, pb_free, X.a};
  Mdotlp__ExportMetricsServiceRequest *req = mdotlp__export_metrics_service_request__unpack(&alloc, n, p);
  char err[200];
  if (!req) {
    ictx_error(&X.c, SIZE_MAX, "body is not a valid protobuf ExportMetricsServiceRequest");
    goto out;
  }
  for (size_t r = 0; r < req->n_resource_metrics && !X.c.limit_hit && !X.c.oom; r++) {
    const Mdotlp__ResourceMetrics *rm = req->resource_metrics[r];
    const char *svc = NULL, *ns = NULL, *inst = NULL;
    if (rm->resource) {
      for (size_t i = 0; i < rm->resource->n_attributes; i++) {
        const Mdotlp__KeyValue *kv = rm->resource->attributes[i];
        if (!kv->value || kv->value->value_case != MDOTLP__ANY_VALUE__VALUE_STRING_VALUE) continue;
        if (strcmp(kv->key, "service.name") == 0) svc = kv->value->string_value;
        if (strcmp(kv->key, "service.namespace") == 0) ns = kv->value->string_value;
        if (strcmp(kv->key, "service.instance.id") == 0) inst = kv->value->string_value;
      }
    }
    if (set_resource(&X, svc, svc ? strlen(svc) : 0, ns, ns ? strlen(ns) : 0, inst,
                     inst ? strlen(inst) : 0)) {
      X.c.oom = true;
      break;
    }
    for (size_t s = 0; s < rm->n_scope_metrics; s++) {
      const Mdotlp__ScopeMetrics *sm = rm->scope_metrics[s];
      for (size_t m = 0; m < sm->n_metrics && !X.c.limit_hit && !X.c.oom; m++) {
        X.c.res->lines++;
        int rc = pb_metric(&X, sm->metrics[m], err, sizeof err);
        if (rc == MD_ENOMEM) X.c.oom = true;
        if (rc == MD_EINVAL) ictx_error(&X.c, X.metric_index, "%s", err);
        X.metric_index++;
      }
    }
  }
out:;
  int status = ictx_status(&X.c);
  otlp_done(&X);
  return status;
}

/* ---- JSON ------------------------------------------------------------------------------ */

/* OTLP JSON writes 64-bit integers as strings; accept numbers too. */
static bool j_u64(json_t *v, uint64_t *out) {
  if (!v) {
    *out = 0;
    return true;
  }
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = (uint64_t)json_integer_value(v);
    return true;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > 20) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
      if (s[i] < '0' || s[i] > '9') return false;
      unsigned d = (unsigned)(s[i] - '0');
      if (x > (UINT64_MAX - d) / 10) return false;
      x = x * 10 + d;
    }
    *out = x;
    return true;
  }
  return false;
}

static bool j_double(json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return true;
  }
  if (json_is_string(v)) return ingest_parse_double(json_string_value(v), json_string_length(v), out) == 0;
  return false;
}

static const char *j_any_string(otlp_t *X, json_t *v, size_t *len) {
  json_t *x;
  if ((x = json_object_get(v, "stringValue")) && json_is_string(x)) {
    *len = json_string_length(x);
    return json_string_value(x);
  }
  if ((x = json_object_get(v, "boolValue")) && json_is_boolean(x)) {
    *len = json_is_true(x) ? 4 : 5;
    return json_is_true(x) ? "true" : "false";
  }
  if ((x = json_object_get(v, "intValue"))) {
    if (json_is_string(x)) {
      *len = json_string_length(x);
      return json_string_value(x);
    }
    if (json_is_integer(x)) {
      char buf[32];
      *len = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(x));
      return arena_strndup(X->a, buf, *len);
    }
  }
  double d;
  if ((x = json_object_get(v, "doubleValue")) && j_double(x, &d)) {
    sb_t s = {0};
    ingest_format_double(&s, d);
    char *r = s.buf ? arena_strndup(X->a, s.buf, s.len) : NULL;
    *len = s.len;
    sb_free(&s);
    return r;
  }
  return NULL;
}

static int j_attrs(otlp_t *X, json_t *arr, opoint_t *pt, char *err, size_t errlen) {
  size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
  if (arr && !json_is_array(arr)) return md_error(err, errlen, MD_EINVAL, "\"attributes\" must be an array");
  pt->attrs = arena_alloc(X->a, sizeof(ilabel_t) * (n ? n : 1));
  if (!pt->attrs) return MD_ENOMEM;
  pt->nattrs = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *kv = json_array_get(arr, i);
    json_t *k = json_object_get(kv, "key");
    if (!json_is_string(k)) return md_error(err, errlen, MD_EINVAL, "attribute %zu has no string \"key\"", i);
    size_t vl = 0, kl;
    const char *v = j_any_string(X, json_object_get(kv, "value"), &vl);
    if (!v) continue;
    const char *ck = sanitize(X, json_string_value(k), json_string_length(k), false, &kl);
    if (!ck) return MD_ENOMEM;
    pt->attrs[pt->nattrs++] = (ilabel_t){ck, kl, v, vl};
  }
  return 0;
}

static int j_point_common(otlp_t *X, json_t *d, opoint_t *pt, char *err, size_t errlen) {
  memset(pt, 0, sizeof *pt);
  if (!json_is_object(d)) return md_error(err, errlen, MD_EINVAL, "a data point must be an object");
  int rc = j_attrs(X, json_object_get(d, "attributes"), pt, err, errlen);
  if (rc) return rc;
  uint64_t t, flags;
  if (!j_u64(json_object_get(d, "timeUnixNano"), &t))
    return md_error(err, errlen, MD_EINVAL, "\"timeUnixNano\" is not an unsigned integer");
  if (!j_u64(json_object_get(d, "flags"), &flags))
    return md_error(err, errlen, MD_EINVAL, "\"flags\" is not an unsigned integer");
  pt->ts = nanos_to_ms(X, t);
  pt->no_value = flags & 1;
  return 0;
}

static int temporality(json_t *v) {
  if (json_is_integer(v)) return (int)json_integer_value(v);
  if (json_is_string(v)) {
    if (strcmp(json_string_value(v), "AGGREGATION_TEMPORALITY_CUMULATIVE") == 0) return 2;
    if (strcmp(json_string_value(v), "AGGREGATION_TEMPORALITY_DELTA") == 0) return 1;
  }
  return 0;
}

static int j_metric(otlp_t *X, json_t *m, char *err, size_t errlen) {
  json_t *jn = json_object_get(m, "name");
  if (!json_is_string(jn) || json_string_length(jn) == 0)
    return md_error(err, errlen, MD_EINVAL, "metric has no \"name\"");
  size_t nl;
  const char *name = sanitize(X, json_string_value(jn), json_string_length(jn), true, &nl);
  if (!name) return MD_ENOMEM;
  json_t *body;
  int kind;
  if ((body = json_object_get(m, "gauge"))) {
    kind = OT_GAUGE;
  } else if ((body = json_object_get(m, "sum"))) {
    kind = json_is_true(json_object_get(body, "isMonotonic")) &&
                   temporality(json_object_get(body, "aggregationTemporality")) == 2
               ? OT_SUM_TOTAL
               : OT_SUM;
  } else if ((body = json_object_get(m, "histogram"))) {
    kind = OT_HIST;
  } else if ((body = json_object_get(m, "summary"))) {
    kind = OT_SUMMARY;
  } else if (json_object_get(m, "exponentialHistogram")) {
    X->c.res->skipped++;
    return 0;
  } else {
    return md_error(err, errlen, MD_EINVAL, "metric %.64s has no gauge, sum, histogram or summary",
                    json_string_value(jn));
  }
  json_t *dps = json_object_get(body, "dataPoints");
  if (dps && !json_is_array(dps)) return md_error(err, errlen, MD_EINVAL, "\"dataPoints\" must be an array");
  for (size_t i = 0; i < json_array_size(dps); i++) {
    json_t *d = json_array_get(dps, i);
    opoint_t pt;
    int rc = j_point_common(X, d, &pt, err, errlen);
    if (rc) return rc;
    if (kind == OT_GAUGE || kind == OT_SUM || kind == OT_SUM_TOTAL) {
      json_t *ad = json_object_get(d, "asDouble"), *ai = json_object_get(d, "asInt");
      if (ad) {
        if (!j_double(ad, &pt.value)) return md_error(err, errlen, MD_EINVAL, "\"asDouble\" is not a number");
      } else if (ai) {
        if (json_is_integer(ai)) {
          pt.value = (double)json_integer_value(ai);
        } else {
          int64_t iv;
          if (!json_is_string(ai) || ingest_parse_int64(json_string_value(ai), json_string_length(ai), &iv))
            return md_error(err, errlen, MD_EINVAL, "\"asInt\" is not an integer");
          pt.value = (double)iv;
        }
      } else if (!pt.no_value) {
        return md_error(err, errlen, MD_EINVAL, "data point %zu has neither asDouble nor asInt", i);
      }
    } else {
      if (!j_u64(json_object_get(d, "count"), &pt.count))
        return md_error(err, errlen, MD_EINVAL, "\"count\" is not an unsigned integer");
      json_t *js = json_object_get(d, "sum");
      if (js) {
        if (!j_double(js, &pt.sum)) return md_error(err, errlen, MD_EINVAL, "\"sum\" is not a number");
        pt.has_sum = true;
      }
      if (kind == OT_SUMMARY) pt.has_sum = true;
      json_t *bc = json_object_get(d, "bucketCounts"), *eb = json_object_get(d, "explicitBounds");
      json_t *qv = json_object_get(d, "quantileValues");
      size_t nb = json_array_size(bc), ne = json_array_size(eb), nq = json_array_size(qv);
      uint64_t *b = arena_alloc(X->a, sizeof(uint64_t) * (nb + 1));
      double *e = arena_alloc(X->a, sizeof(double) * (ne + 1));
      double *qs = arena_alloc(X->a, sizeof(double) * (nq + 1));
      double *qvv = arena_alloc(X->a, sizeof(double) * (nq + 1));
      if (!b || !e || !qs || !qvv) return MD_ENOMEM;
      for (size_t k = 0; k < nb; k++)
        if (!j_u64(json_array_get(bc, k), &b[k]))
          return md_error(err, errlen, MD_EINVAL, "bucketCounts[%zu] is not an unsigned integer", k);
      for (size_t k = 0; k < ne; k++)
        if (!j_double(json_array_get(eb, k), &e[k]))
          return md_error(err, errlen, MD_EINVAL, "explicitBounds[%zu] is not a number", k);
      for (size_t k = 0; k < nq; k++) {
        json_t *q = json_array_get(qv, k);
        json_t *jq = json_object_get(q, "quantile"), *jv = json_object_get(q, "value");
        qs[k] = qvv[k] = 0;
        if ((jq && !j_double(jq, &qs[k])) || (jv && !j_double(jv, &qvv[k])))
          return md_error(err, errlen, MD_EINVAL, "quantileValues[%zu] is not {quantile, value}", k);
      }
      pt.buckets = b;
      pt.nbuckets = nb;
      pt.bounds = e;
      pt.nbounds = ne;
      pt.qs = qs;
      pt.qv = qvv;
      pt.nq = nq;
    }
    if ((rc = emit_point(X, name, nl, kind, &pt, err, errlen))) return rc;
  }
  return 0;
}

int ingest_parse_otlp_json(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                           ingest_result_t *res) {
  otlp_t X;
  if (otlp_init(&X, o, b, res)) return MD_ENOMEM;
  json_error_t je;
  json_t *root = json_loadb(p, n, 0, &je);
  char err[200];
  json_t *rms = root ? json_object_get(root, "resourceMetrics") : NULL;
  if (!root || !json_is_object(root)) {
    ictx_error(&X.c, SIZE_MAX, "body is not a JSON object (line %d: %s)", je.line,
               root ? "not an object" : je.text);
    goto out;
  }
  if (rms && !json_is_array(rms)) {
    ictx_error(&X.c, SIZE_MAX, "\"resourceMetrics\" must be an array");
    goto out;
  }
  for (size_t r = 0; r < json_array_size(rms) && !X.c.limit_hit && !X.c.oom; r++) {
    json_t *rm = json_array_get(rms, r);
    const char *svc = NULL, *ns = NULL, *inst = NULL;
    size_t svcl = 0, nsl = 0, instl = 0;
    json_t *attrs = json_object_get(json_object_get(rm, "resource"), "attributes");
    for (size_t i = 0; i < json_array_size(attrs); i++) {
      json_t *kv = json_array_get(attrs, i);
      json_t *k = json_object_get(kv, "key");
      json_t *sv = json_object_get(json_object_get(kv, "value"), "stringValue");
      if (!json_is_string(k) || !json_is_string(sv)) continue;
      const char *ks = json_string_value(k);
      if (strcmp(ks, "service.name") == 0) svc = json_string_value(sv), svcl = json_string_length(sv);
      if (strcmp(ks, "service.namespace") == 0) ns = json_string_value(sv), nsl = json_string_length(sv);
      if (strcmp(ks, "service.instance.id") == 0)
        inst = json_string_value(sv), instl = json_string_length(sv);
    }
    if (set_resource(&X, svc, svcl, ns, nsl, inst, instl)) {
      X.c.oom = true;
      break;
    }
    json_t *sms = json_object_get(rm, "scopeMetrics");
    for (size_t s = 0; s < json_array_size(sms); s++) {
      json_t *ms = json_object_get(json_array_get(sms, s), "metrics");
      for (size_t m = 0; m < json_array_size(ms) && !X.c.limit_hit && !X.c.oom; m++) {
        X.c.res->lines++;
        json_t *jm = json_array_get(ms, m);
        int rc = json_is_object(jm) ? j_metric(&X, jm, err, sizeof err)
                                    : md_error(err, sizeof err, MD_EINVAL, "a metric must be an object");
        if (rc == MD_ENOMEM) X.c.oom = true;
        if (rc == MD_EINVAL) ictx_error(&X.c, X.metric_index, "%s", err);
        X.metric_index++;
      }
    }
  }
out:;
  int status = ictx_status(&X.c);
  json_decref(root);
  otlp_done(&X);
  return status;
}
