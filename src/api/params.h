/*
 * params — request-parameter helpers shared by the API handlers (private to src/api):
 * Prometheus time and duration parameters, and series selectors (`match[]`) parsed into
 * tsdb matchers. Everything a parse returns lives in the request's arena.
 */
#ifndef METRICSD_API_PARAMS_H
#define METRICSD_API_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "http/http.h"
#include "tsdb/tsdb.h"

/* A parsed selector: matchers for tsdb_select. */
typedef struct api_selector {
  tsdb_matcher_t *m;
  size_t n;
} api_selector_t;

/* Parses `metric{a="b",c=~"d"}`, `{__name__="x"}` or `metric`. Returns 0 or MD_EINVAL with a
 * message in err (Prometheus wording where it has one). A selector with no matcher that
 * could narrow the set (all match "") is rejected as Prometheus does. */
int api_parse_selector(arena_t *a, const char *s, api_selector_t *out, char *err, size_t errlen);

/* Parses every `match[]` value (at most max); returns how many, or -1 with err filled. */
int api_parse_match_params(http_req_t *req, api_selector_t *out, size_t max, char *err, size_t errlen);

/* Time parameter `name` (RFC 3339 or Unix seconds) into ms; dflt when absent. Returns 0, or
 * MD_EINVAL with err ("invalid parameter \"start\": ..."). */
int api_time_param(http_req_t *req, const char *name, int64_t dflt, int64_t *out, char *err, size_t errlen);
/* Duration parameter (Prometheus duration or float seconds) into ms; dflt when absent. */
int api_duration_param(http_req_t *req, const char *name, int64_t dflt, int64_t *out, char *err, size_t errlen);

/* The Prometheus API's minimum and maximum times (what start/end mean when absent). */
#define API_MIN_TIME_MS (-62135596800000LL)
#define API_MAX_TIME_MS (253402300799000LL)

/* Writes {"status":"success","data":<data>} (+ warnings/infos when n > 0). */
void api_prom_success(http_resp_t *resp, const char *data, size_t len, const char *const *warnings, size_t nw,
                      const char *const *infos, size_t ni);

#endif
