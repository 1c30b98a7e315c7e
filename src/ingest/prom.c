/*
 * Prometheus text exposition 0.0.4 and OpenMetrics 1.0 → batch.
 *
 * Two passes. Pass 1 goes over the buffer one line at a time and groups sample lines by their
 * series text (the "name{labels}" bytes, hashed): a series text is lexed and validated the
 * first time it is seen, and every later line with the same bytes only parses its value and
 * timestamp. Pass 2 puts each valid group into the batch as one series holding its samples in
 * line order. An import of several scrapes (the usual VictoriaMetrics-style backfill, and
 * what the bench dataset sends: ~5 samples per series per request) so builds, sorts, hashes
 * and appends each series once instead of once per line — that was most of the CPU, not the
 * lexing. Errors keep their line order: a bad series text is reported on every line that
 * repeats it. Label values without a backslash point straight into the input; escaped ones
 * are unescaped into a scratch buffer reserved to the line's length up front, so pointers
 * into it stay valid while the series is built.
 *
 * Differences between the two formats handled here (OpenMetrics spec, "Text format"):
 *   - timestamps: 0.0.4 integer milliseconds; OpenMetrics float seconds;
 *   - OpenMetrics ends with "# EOF" (nothing may follow), has "# UNIT", "\"" escapes in HELP,
 *     and exemplars after " # " on a sample line (skipped and counted).
 * Bad lines are reported with their 1-based number and skipped; parsing goes on.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_int.h"

#define IS_WS(c) ((c) == ' ' || (c) == '\t')

/* A distinct series text ("name{labels}" bytes) of the body, and its samples' count. */
typedef struct {
  const char *key;
  size_t klen;
  uint64_t hash;
  size_t bad; /* offset of its error message in prom_t.bad, SIZE_MAX when valid */
  size_t count, off;
  size_t lab_off, nl; /* its lexed labels in prom_t.glab; nl 0 = lex again (escapes) */
  ikey_t ikey;           /* series-ref cache key ({0,0}: no cache) */
  tsdb_series_ref_t ref; /* != 0: the cache knew the series (not lexed) */
  bool skip;             /* resend pass: not one of the series being resent */
} pgroup_t;

typedef struct {
  uint32_t group;
  int64_t ts;
  double v;
} psample_t;

typedef struct {
  ictx_t c;
  sb_t scratch;
  ilabel_t lbl[INGEST_HARD_MAX_LABELS + 1];
  bool seen_eof;
  /* pass 1: groups by key (open addressing, slot = group index + 1), samples in line order */
  pgroup_t *groups;
  size_t ngroups, cap_groups;
  uint32_t *slots;
  size_t slot_cap;
  psample_t *samples;
  size_t nsamples, cap_samples;
  sb_t bad;
  ilabel_t *glab; /* labels of groups whose bytes all point into the body */
  size_t nglab, cap_glab;
} prom_t;

static size_t skip_ws(const char *s, size_t i, size_t n) {
  while (i < n && IS_WS(s[i]))
    i++;
  return i;
}

/* Bytes that may appear in a metric or label name (the syntax is checked later, once, by
 * the series builder); a table lookup beats the range tests on long label sets. */
static unsigned char name_chars[256];
static pthread_once_t name_chars_once = PTHREAD_ONCE_INIT;
static void init_name_chars(void) {
  for (int c = 0; c < 256; c++)
    name_chars[c] =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
}
#define is_name_char(ch) (name_chars[(unsigned char)(ch)])

static const char *const om_types[] = {"counter", "gauge",          "histogram", "summary", "untyped",
                                       "unknown", "gaugehistogram", "stateset",  "info",    NULL};

/* "# HELP", "# TYPE", "# UNIT", "# EOF" or a comment. Returns 0 or MD_EINVAL with err. */
static int parse_comment(prom_t *P, const char *s, size_t n, char *err, size_t errlen) {
  bool om = P->c.o && P->c.o->openmetrics;
  size_t i = skip_ws(s, 1, n);
  size_t ks = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  size_t klen = i - ks;
  const char *kw = s + ks;
  if (klen == 3 && memcmp(kw, "EOF", 3) == 0 && skip_ws(s, i, n) == n) {
    P->seen_eof = true;
    return 0;
  }
  bool help = klen == 4 && memcmp(kw, "HELP", 4) == 0;
  bool type = klen == 4 && memcmp(kw, "TYPE", 4) == 0;
  bool unit = klen == 4 && memcmp(kw, "UNIT", 4) == 0 && om;
  if (!help && !type && !unit) return 0; /* a plain comment */
  i = skip_ws(s, i, n);
  size_t ns = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  if (!ingest_valid_metric_name(s + ns, i - ns))
    return md_error(err, errlen, MD_EINVAL, "%.*s: invalid metric name \"%.*s\"", (int)klen, kw,
                    (int)(i - ns > 64 ? 64 : i - ns), s + ns);
  size_t rs = skip_ws(s, i, n);
  if (rs < n && rs == i) return md_error(err, errlen, MD_EINVAL, "%.*s: expected a space", (int)klen, kw);
  const char *rest = s + rs;
  size_t rlen = n - rs;
  while (rlen && IS_WS(rest[rlen - 1]))
    rlen--;
  if (type) {
    if (rlen == 0)
      return md_error(err, errlen, MD_EINVAL, "TYPE: missing type for %.*s", (int)(i - ns), s + ns);
    for (int k = 0; om_types[k]; k++) {
      if (!om && k >= 5) break; /* 0.0.4 knows the first five */
      if (strlen(om_types[k]) == rlen && memcmp(om_types[k], rest, rlen) == 0) {
        P->c.res->metadata++;
        return 0;
      }
    }
    return md_error(err, errlen, MD_EINVAL, "TYPE: unknown type \"%.*s\"", (int)(rlen > 32 ? 32 : rlen),
                    rest);
  }
  if (unit && rlen == 0)
    return md_error(err, errlen, MD_EINVAL, "UNIT: missing unit for %.*s", (int)(i - ns), s + ns);
  if (help) {
    for (size_t k = 0; k < rlen; k++) {
      if (rest[k] != '\\') continue;
      if (k + 1 == rlen) return md_error(err, errlen, MD_EINVAL, "HELP: backslash at end of line");
      char e = rest[k + 1];
      if (e != '\\' && e != 'n' && !(om && e == '"'))
        return md_error(err, errlen, MD_EINVAL, "HELP: invalid escape \"\\%c\"", e);
      k++;
    }
    if (!ingest_valid_utf8(rest, rlen))
      return md_error(err, errlen, MD_EINVAL, "HELP: text is not valid UTF-8");
  }
  P->c.res->metadata++;
  return 0;
}

/* Parses a quoted label value starting after the opening quote at s[*pi]. */
static int parse_label_value(prom_t *P, const char *s, size_t n, size_t *pi, const char **val, size_t *vlen,
                             char *err, size_t errlen) {
  size_t i = *pi, start = i;
  while (i < n && s[i] != '"' && s[i] != '\\')
    i++;
  if (i < n && s[i] == '"') {
    *val = s + start;
    *vlen = i - start;
    *pi = i + 1;
    return 0;
  }
  /* Escapes: unescape into scratch (reserved to the line length, so no realloc). */
  char *out = P->scratch.buf + P->scratch.len;
  size_t o = i - start;
  memcpy(out, s + start, o);
  while (i < n && s[i] != '"') {
    if (s[i] == '\\') {
      if (i + 1 >= n) break;
      char e = s[i + 1];
      if (e == 'n')
        out[o++] = '\n';
      else if (e == '\\' || e == '"')
        out[o++] = e;
      else
        return md_error(err, errlen, MD_EINVAL, "invalid escape \"\\%c\" in label value", e);
      i += 2;
    } else {
      out[o++] = s[i++];
    }
  }
  if (i >= n || s[i] != '"') return md_error(err, errlen, MD_EINVAL, "unterminated label value");
  P->scratch.len += o;
  *val = out;
  *vlen = o;
  *pi = i + 1;
  return 0;
}

/* Checks an OpenMetrics exemplar, s[0..n) being what follows the " # " of a sample line:
 * "{labels} value [timestamp]". Exemplars are not stored, but a malformed one means the line
 * is not OpenMetrics, so the line is refused rather than half-understood. The spec caps the
 * label set at 128 UTF-8 characters (names and values together). */
static int check_exemplar(const char *s, size_t n, char *err, size_t errlen) {
  size_t i = skip_ws(s, 0, n), chars = 0;
  if (i >= n || s[i] != '{') return md_error(err, errlen, MD_EINVAL, "exemplar: expected '{' after \" # \"");
  i++;
  for (bool first = true;; first = false) {
    i = skip_ws(s, i, n);
    if (i >= n) return md_error(err, errlen, MD_EINVAL, "exemplar: unterminated label set");
    if (s[i] == '}' && first) break;
    size_t ls = i;
    while (i < n && is_name_char((unsigned char)s[i]))
      i++;
    if (!ingest_valid_label_name(s + ls, i - ls))
      return md_error(err, errlen, MD_EINVAL, "exemplar: invalid label name \"%.*s\"",
                      (int)(i - ls > 64 ? 64 : i - ls), s + ls);
    chars += i - ls;
    if (i + 1 >= n || s[i] != '=' || s[i + 1] != '"')
      return md_error(err, errlen, MD_EINVAL, "exemplar: expected =\"value\" after label \"%.*s\"",
                      (int)(i - ls > 64 ? 64 : i - ls), s + ls);
    i += 2;
    size_t vs = i;
    while (i < n && s[i] != '"') {
      if (s[i] == '\\') {
        if (i + 1 >= n || (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n'))
          return md_error(err, errlen, MD_EINVAL, "exemplar: invalid escape in label value");
        i++;
      }
      i++;
    }
    if (i >= n) return md_error(err, errlen, MD_EINVAL, "exemplar: unterminated label value");
    if (!ingest_valid_utf8(s + vs, i - vs))
      return md_error(err, errlen, MD_EINVAL, "exemplar: label value is not valid UTF-8");
    for (size_t k = vs; k < i; k++)
      chars += ((unsigned char)s[k] & 0xC0) != 0x80;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == ',') {
      i++;
      continue;
    }
    if (i < n && s[i] == '}') break;
    return md_error(err, errlen, MD_EINVAL, "exemplar: expected ',' or '}'");
  }
  if (chars > 128)
    return md_error(err, errlen, MD_EINVAL, "exemplar: label set longer than 128 characters");
  i++;
  size_t vs = i = skip_ws(s, i, n);
  while (i < n && !IS_WS(s[i]))
    i++;
  double v;
  if (i == vs || ingest_parse_double(s + vs, i - vs, &v))
    return md_error(err, errlen, MD_EINVAL, "exemplar: invalid value \"%.*s\"", (int)(i - vs > 32 ? 32 : i - vs),
                    s + vs);
  size_t ts = i = skip_ws(s, i, n);
  while (i < n && !IS_WS(s[i]))
    i++;
  if (i > ts && (ingest_parse_double(s + ts, i - ts, &v) || !isfinite(v)))
    return md_error(err, errlen, MD_EINVAL, "exemplar: invalid timestamp \"%.*s\"",
                    (int)(i - ts > 32 ? 32 : i - ts), s + ts);
  if (skip_ws(s, i, n) < n) return md_error(err, errlen, MD_EINVAL, "exemplar: unexpected text after it");
  return 0;
}

/* Lexes "name{labels}" at s[0..n) into P->lbl. *pi: where the series ends on success. */
static int lex_series(prom_t *P, const char *s, size_t n, size_t *pi, size_t *pnl, char *err, size_t errlen) {
  size_t i = 0;
  while (i < n && is_name_char((unsigned char)s[i]))
    i++;
  if (i == 0) {
    if (s[0] == '{') return md_error(err, errlen, MD_EINVAL, "missing metric name before '{'");
    return md_error(err, errlen, MD_EINVAL, "expected a metric name, found '%c'",
                    (unsigned char)s[0] >= 0x20 && (unsigned char)s[0] < 0x7f ? s[0] : '?');
  }
  ilabel_t *L = P->lbl;
  size_t nl = 0;
  L[nl++] = (ilabel_t){"__name__", 8, s, i};
  if (i < n && s[i] == '{') {
    i++;
    for (;;) {
      i = skip_ws(s, i, n);
      if (i >= n) return md_error(err, errlen, MD_EINVAL, "unterminated label set");
      if (s[i] == '}') {
        i++;
        break;
      }
      size_t ls = i;
      while (i < n && is_name_char((unsigned char)s[i]))
        i++;
      if (i == ls) return md_error(err, errlen, MD_EINVAL, "expected a label name at column %zu", i + 1);
      size_t le = i;
      i = skip_ws(s, i, n);
      if (i >= n || s[i] != '=')
        return md_error(err, errlen, MD_EINVAL, "expected '=' after label name \"%.*s\"",
                        (int)(le - ls > 64 ? 64 : le - ls), s + ls);
      i = skip_ws(s, i + 1, n);
      if (i >= n || s[i] != '"')
        return md_error(err, errlen, MD_EINVAL, "expected '\"' to open the value of label \"%.*s\"",
                        (int)(le - ls > 64 ? 64 : le - ls), s + ls);
      i++;
      const char *v = NULL;
      size_t vl = 0;
      int rc = parse_label_value(P, s, n, &i, &v, &vl, err, errlen);
      if (rc) return rc;
      if (nl > INGEST_HARD_MAX_LABELS)
        return md_error(err, errlen, MD_EINVAL, "more than %d labels", INGEST_HARD_MAX_LABELS);
      L[nl++] = (ilabel_t){s + ls, le - ls, v, vl};
      i = skip_ws(s, i, n);
      if (i < n && s[i] == ',') {
        i++;
        continue;
      }
      if (i < n && s[i] == '}') {
        i++;
        break;
      }
      return md_error(err, errlen, MD_EINVAL, "expected ',' or '}' after the value of label \"%.*s\"",
                      (int)(le - ls > 64 ? 64 : le - ls), s + ls);
    }
  }
  *pi = i;
  *pnl = nl;
  return 0;
}

/* What follows the series on a sample line, from s[i]: value, timestamp, exemplar. */
static int parse_rest(prom_t *P, const char *s, size_t n, size_t i, int64_t *pts, double *pv, char *err,
                      size_t errlen) {
  bool om = P->c.o && P->c.o->openmetrics;
  if (i < n && !IS_WS(s[i]))
    return md_error(err, errlen, MD_EINVAL, "unexpected '%c' after metric name",
                    (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?');
  i = skip_ws(s, i, n);
  size_t vs = i;
  while (i < n && !IS_WS(s[i]))
    i++;
  if (i == vs) return md_error(err, errlen, MD_EINVAL, "missing value");
  double v;
  if (ingest_parse_double(s + vs, i - vs, &v))
    return md_error(err, errlen, MD_EINVAL, "invalid value \"%.*s\"", (int)(i - vs > 64 ? 64 : i - vs),
                    s + vs);
  int64_t ts = P->c.o ? P->c.o->default_ts : 0;
  i = skip_ws(s, i, n);
  if (i < n && s[i] != '#') {
    size_t ts0 = i;
    while (i < n && !IS_WS(s[i]))
      i++;
    if (om) {
      double sec;
      if (ingest_parse_double(s + ts0, i - ts0, &sec) || !isfinite(sec) || fabs(sec) > 9.2e15)
        return md_error(err, errlen, MD_EINVAL, "invalid timestamp \"%.*s\"",
                        (int)(i - ts0 > 64 ? 64 : i - ts0), s + ts0);
      ts = (int64_t)llround(sec * 1000.0);
    } else if (ingest_parse_int64(s + ts0, i - ts0, &ts)) {
      return md_error(err, errlen, MD_EINVAL, "invalid timestamp \"%.*s\" (integer milliseconds expected)",
                      (int)(i - ts0 > 64 ? 64 : i - ts0), s + ts0);
    }
    i = skip_ws(s, i, n);
  }
  if (i < n) {
    if (om && s[i] == '#') {
      int rc = check_exemplar(s + i + 1, n - i - 1, err, errlen);
      if (rc) return rc;
      P->c.res->skipped++; /* an exemplar */
    } else {
      return md_error(err, errlen, MD_EINVAL, "unexpected text after the sample: \"%.*s\"",
                      (int)(n - i > 32 ? 32 : n - i), s + i);
    }
  }
  *pts = ts;
  *pv = v;
  return 0;
}

/* Where the series text of a sample line ends: after the name, or after the '}' that closes
 * its label set (quotes and escapes respected). A line whose set never closes is all key;
 * lex_series then says what is wrong with it. Identical key bytes always lex the same. */
static size_t series_key_end(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && is_name_char((unsigned char)s[i]))
    i++;
  if (i >= n || s[i] != '{') return i;
  /* Fast path, the common case: the first '}' closes the set when no backslash comes before
   * it and the quotes before it pair up. Checked a word at a time (exact per-byte masks). */
  const char *close = memchr(s + i, '}', n - i);
  if (close) {
    const unsigned char *u = (const unsigned char *)s + i;
    size_t len = (size_t)(close - s) - i, k = 0, quotes = 0;
    uint64_t slashes = 0;
    const uint64_t lo7 = 0x7f7f7f7f7f7f7f7fULL, ones = 0x0101010101010101ULL;
    for (; k + 8 <= len; k += 8) {
      uint64_t w;
      memcpy(&w, u + k, 8);
      uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
      q = ~(((q & lo7) + lo7) | q | lo7);
      b = ~(((b & lo7) + lo7) | b | lo7);
      /* q has at most the top bit of each byte set: summing the bytes of q >> 7 with one
       * multiply counts them (a popcount builtin is a libgcc call without -mpopcnt). */
      quotes += (size_t)(((q >> 7) * ones) >> 56);
      slashes |= b;
    }
    for (; k < len; k++) {
      quotes += u[k] == '"';
      slashes |= u[k] == '\\';
    }
    if (!slashes && quotes % 2 == 0) return (size_t)(close - s) + 1;
  }
  for (i++; i < n; i++) {
    if (s[i] == '}') return i + 1;
    if (s[i] == '"') {
      for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\') i++;
      if (i >= n) return n;
    }
  }
  return n;
}

/* Finds or adds the group of key s[0..n), hashed h. Returns its index, or -1 when out of memory. */
static long group_of(prom_t *P, const char *s, size_t n, uint64_t h, bool *fresh) {
  if ((P->ngroups + 1) * 2 > P->slot_cap) {
    size_t nc = P->slot_cap ? P->slot_cap * 2 : 1024;
    uint32_t *ns = calloc(nc, sizeof *ns);
    if (!ns) return -1;
    for (size_t g = 0; g < P->ngroups; g++) {
      size_t k = P->groups[g].hash & (nc - 1);
      while (ns[k])
        k = (k + 1) & (nc - 1);
      ns[k] = (uint32_t)g + 1;
    }
    free(P->slots);
    P->slots = ns;
    P->slot_cap = nc;
  }
  size_t k = h & (P->slot_cap - 1);
  for (; P->slots[k]; k = (k + 1) & (P->slot_cap - 1)) {
    pgroup_t *g = &P->groups[P->slots[k] - 1];
    if (g->hash == h && g->klen == n && memcmp(g->key, s, n) == 0) {
      *fresh = false;
      return (long)(P->slots[k] - 1);
    }
  }
  if (P->ngroups == P->cap_groups) {
    size_t nc = P->cap_groups ? P->cap_groups * 2 : 256;
    pgroup_t *ng = realloc(P->groups, nc * sizeof *ng);
    if (!ng) return -1;
    P->groups = ng;
    P->cap_groups = nc;
  }
  P->groups[P->ngroups] = (pgroup_t){.key = s, .klen = n, .hash = h, .bad = SIZE_MAX};
  P->slots[k] = (uint32_t)P->ngroups + 1;
  *fresh = true;
  return (long)P->ngroups++;
}

/* Pass 1 for one sample line: its series' group (lexed and validated the first time the key
 * is seen), its value and timestamp. */
static int parse_sample(prom_t *P, const char *s, size_t n, char *err, size_t errlen) {
  size_t kend = series_key_end(s, n);
  bool fresh;
  /* with the cache on, the key's first half is the grouping hash too */
  uint64_t h = P->c.refs ? ikey_a(&P->c, s, kend) : md_hash64(s, kend, 0x9e3779b97f4a7c15ULL);
  long g = group_of(P, s, kend, h, &fresh);
  if (g < 0) {
    P->c.oom = true;
    return MD_ENOMEM;
  }
  int probe = IREF_LABELS;
  if (fresh && P->c.refs) {
    pgroup_t *G = &P->groups[g];
    G->ikey = ikey_from_a(&P->c, h, s, kend);
    probe = ictx_probe(&P->c, G->ikey, &G->ref);
    G->skip = probe == IREF_SKIP;
  }
  if (P->groups[g].skip) return 0;
  if (fresh && probe == IREF_LABELS) {
    size_t i, nl;
    int rc = lex_series(P, s, kend, &i, &nl, err, errlen);
    if (rc == 0) rc = ictx_check(&P->c, P->lbl, nl, err, errlen);
    if (rc == 0 && P->scratch.len == 0) {
      /* No escapes: the labels point into the body and stay valid; keep them for pass 2
       * instead of lexing the series again. */
      if (P->nglab + nl > P->cap_glab) {
        size_t nc = P->cap_glab ? P->cap_glab * 2 : 4096;
        while (nc < P->nglab + nl)
          nc *= 2;
        ilabel_t *ng = realloc(P->glab, nc * sizeof *ng);
        if (!ng) {
          P->c.oom = true;
          return MD_ENOMEM;
        }
        P->glab = ng;
        P->cap_glab = nc;
      }
      memcpy(P->glab + P->nglab, P->lbl, nl * sizeof *P->lbl);
      P->groups[g].lab_off = P->nglab;
      P->groups[g].nl = nl;
      P->nglab += nl;
    }
    if (rc) {
      P->groups[g].bad = P->bad.len;
      sb_append(&P->bad, err, strlen(err) + 1);
      if (P->bad.oom) {
        P->c.oom = true;
        return MD_ENOMEM;
      }
      return rc;
    }
  } else if (P->groups[g].bad != SIZE_MAX) {
    snprintf(err, errlen, "%s", P->bad.buf + P->groups[g].bad);
    return MD_EINVAL;
  }
  int64_t ts = 0;
  double v = 0;
  int rc = parse_rest(P, s, n, kend, &ts, &v, err, errlen);
  if (rc) return rc;
  if (P->nsamples >= P->c.lim.max_samples_per_request) {
    P->c.limit_hit = true;
    return MD_ELIMIT;
  }
  if (P->nsamples == P->cap_samples) {
    size_t nc = P->cap_samples ? P->cap_samples * 2 : 1024;
    psample_t *ns = realloc(P->samples, nc * sizeof *ns);
    if (!ns) {
      P->c.oom = true;
      return MD_ENOMEM;
    }
    P->samples = ns;
    P->cap_samples = nc;
  }
  P->samples[P->nsamples++] = (psample_t){(uint32_t)g, ts, v};
  P->groups[g].count++;
  return 0;
}

/* Pass 2: every good group becomes one series of the batch with its samples in line order. */
static int emit_groups(prom_t *P) {
  size_t *order = malloc((P->nsamples ? P->nsamples : 1) * sizeof *order);
  if (!order) return MD_ENOMEM;
  size_t off = 0;
  for (size_t g = 0; g < P->ngroups; g++) {
    P->groups[g].off = off;
    off += P->groups[g].count;
  }
  for (size_t k = 0; k < P->nsamples; k++)
    order[P->groups[P->samples[k].group].off++] = k;
  int rc = 0;
  char err[200];
  off = 0;
  for (size_t g = 0; g < P->ngroups && rc == 0; g++) {
    pgroup_t *G = &P->groups[g];
    size_t first = off;
    off += G->count;
    if (G->count == 0) continue;
    size_t i, nl = G->nl;
    const ilabel_t *L = P->glab + G->lab_off;
    if (nl == 0 && !G->ref) {
      P->scratch.len = 0;
      if (!sb_reserve(&P->scratch, G->klen)) {
        rc = MD_ENOMEM;
        break;
      }
      /* Cannot fail: the same bytes lexed and validated in pass 1. */
      if (lex_series(P, G->key, G->klen, &i, &nl, err, sizeof err)) continue;
      L = P->lbl;
    }
    if (ictx_series_keyed(&P->c, L, nl, G->ref, G->ikey, err, sizeof err)) {
      if (P->c.oom) rc = MD_ENOMEM;
      continue;
    }
    for (size_t k = first; k < off && rc == 0; k++) {
      const psample_t *sm = &P->samples[order[k]];
      rc = ictx_sample(&P->c, sm->ts, sm->v);
    }
  }
  free(order);
  return rc == MD_ENOMEM ? rc : 0;
}

/* ---- per-thread parser state ----------------------------------------------------------------
 * The state's arrays reach a few MB on a 10,000-line body. Allocated afresh per request, glibc
 * (default thresholds) hands them back to the kernel on free and the next request faults them
 * in again, page by page; each thread keeps its state instead (emptied, memory kept), and a
 * state that grew past KEEP_SAMPLES staged samples is freed rather than kept. */
#define KEEP_SAMPLES 262144

static pthread_key_t parser_key;
static bool parser_key_ok;
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;

static void parser_free(void *p) {
  prom_t *P = p;
  if (!P) return;
  sb_free(&P->scratch);
  sb_free(&P->bad);
  free(P->groups);
  free(P->slots);
  free(P->samples);
  free(P->glab);
  free(P);
}

static void parser_key_init(void) {
  parser_key_ok = pthread_key_create(&parser_key, parser_free) == 0;
}

static prom_t *parser_get(void) {
  pthread_once(&parser_once, parser_key_init);
  prom_t *P = parser_key_ok ? pthread_getspecific(parser_key) : NULL;
  if (P && pthread_setspecific(parser_key, NULL) == 0) return P;
  P = calloc(1, sizeof *P);
  if (P) {
    sb_init(&P->scratch);
    sb_init(&P->bad);
  }
  return P;
}

static void parser_put(prom_t *P) {
  if (!parser_key_ok || P->cap_samples > KEEP_SAMPLES || P->cap_glab > 16 * KEEP_SAMPLES || P->scratch.cap > (size_t)1 << 20 ||
      P->bad.oom || P->scratch.oom || pthread_getspecific(parser_key)) {
    parser_free(P);
    return;
  }
  if (P->ngroups) memset(P->slots, 0, P->slot_cap * sizeof *P->slots);
  P->ngroups = P->nsamples = P->nglab = 0;
  P->scratch.len = 0;
  sb_reset(&P->bad);
  if (pthread_setspecific(parser_key, P) != 0) parser_free(P);
}

bool ingest_text_is_openmetrics(const char *p, size_t n) {
  while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || IS_WS(p[n - 1])))
    n--;
  return n >= 5 && memcmp(p + n - 5, "# EOF", 5) == 0 && (n == 5 || p[n - 6] == '\n');
}

int ingest_parse_prometheus(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b,
                            ingest_result_t *res) {
  pthread_once(&name_chars_once, init_name_chars);
  prom_t *P = parser_get();
  if (!P) return MD_ENOMEM;
  ictx_init(&P->c, o, b, res);
  P->seen_eof = false;
  size_t pos = 0, lineno = 0;
  char err[200];
  while (pos < n && !P->c.limit_hit && !P->c.oom) {
    const char *nl = memchr(p + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - p) : n;
    const char *s = p + pos;
    size_t len = end - pos;
    pos = end + 1;
    lineno++;
    if (len && s[len - 1] == '\r') len--;
    size_t i = skip_ws(s, 0, len);
    s += i;
    len -= i;
    if (len == 0) continue;
    if (P->seen_eof) {
      ictx_error(&P->c, lineno, "content after \"# EOF\"");
      break;
    }
    int rc;
    if (s[0] == '#') {
      rc = parse_comment(P, s, len, err, sizeof err);
    } else {
      P->c.res->lines++;
      P->scratch.len = 0;
      if (!sb_reserve(&P->scratch, len)) {
        P->c.oom = true;
        break;
      }
      rc = parse_sample(P, s, len, err, sizeof err);
    }
    if (rc == MD_EINVAL) ictx_error(&P->c, lineno, "%s", err);
  }
  /* Past the sample limit the caller drops the batch (413); it still gets what was read. */
  if (!P->c.oom && emit_groups(P)) P->c.oom = true;
  int status = ictx_status(&P->c);
  parser_put(P);
  return status;
}
