/*
 * StatsD datagrams → events (the caller feeds them to the track registry):
 *
 *   name:value|type[|@sample_rate][|#tag:value,tag2:value]   one per line
 *
 * Types: c (counter; value divided by the sample rate, as StatsD does), g (gauge; a leading
 * sign on the value means a relative change), ms / h / d (timers and histograms), s (sets).
 * Multiple values per line ("name:1|c:2|c", an Etsy extension) are not supported: the second
 * value is reported as a bad type. A bad line is reported by number and skipped.
 */
#include <math.h>
#include <string.h>

#include "ingest_int.h"

static int parse_line(const char *s, size_t n, ingest_statsd_event_t *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  e->sample_rate = 1;
  const char *colon = memchr(s, ':', n);
  if (!colon) return md_error(err, errlen, MD_EINVAL, "missing ':' between name and value");
  e->name = s;
  e->nlen = (size_t)(colon - s);
  if (e->nlen == 0) return md_error(err, errlen, MD_EINVAL, "empty metric name");
  const char *p = colon + 1, *end = s + n;
  const char *bar = memchr(p, '|', (size_t)(end - p));
  if (!bar) return md_error(err, errlen, MD_EINVAL, "missing '|' before the type");
  const char *val = p;
  size_t vlen = (size_t)(bar - p);
  if (vlen == 0) return md_error(err, errlen, MD_EINVAL, "empty value");
  const char *t = bar + 1;
  const char *tend = memchr(t, '|', (size_t)(end - t));
  if (!tend) tend = end;
  size_t tl = (size_t)(tend - t);
  if (tl == 1 && t[0] == 'c')
    e->type = INGEST_STATSD_COUNTER;
  else if (tl == 1 && t[0] == 'g')
    e->type = INGEST_STATSD_GAUGE;
  else if ((tl == 2 && memcmp(t, "ms", 2) == 0) || (tl == 1 && (t[0] == 'h' || t[0] == 'd')))
    e->type = INGEST_STATSD_TIMER;
  else if (tl == 1 && t[0] == 's')
    e->type = INGEST_STATSD_SET;
  else
    return md_error(err, errlen, MD_EINVAL, "unknown type \"%.*s\"", (int)(tl > 16 ? 16 : tl), t);
  if (e->type == INGEST_STATSD_SET) {
    e->set_member = val;
    e->set_len = vlen;
    e->value = 1;
  } else {
    if (e->type == INGEST_STATSD_GAUGE && (val[0] == '+' || val[0] == '-')) e->relative = true;
    size_t j = (val[0] == '+' || val[0] == '-') ? 1 : 0;
    if (j >= vlen || !((val[j] >= '0' && val[j] <= '9') || val[j] == '.') ||
        ingest_parse_double(val, vlen, &e->value) || !isfinite(e->value))
      return md_error(err, errlen, MD_EINVAL, "invalid value \"%.*s\"", (int)(vlen > 32 ? 32 : vlen), val);
  }
  const char *q = tend;
  while (q < end) {
    q++; /* past '|' */
    const char *qe = memchr(q, '|', (size_t)(end - q));
    if (!qe) qe = end;
    size_t ql = (size_t)(qe - q);
    if (ql > 0 && q[0] == '@') {
      double r;
      if (ingest_parse_double(q + 1, ql - 1, &r) || !(r > 0 && r <= 1))
        return md_error(err, errlen, MD_EINVAL, "invalid sample rate \"%.*s\"", (int)(ql > 32 ? 32 : ql), q);
      e->sample_rate = r;
    } else if (ql > 0 && q[0] == '#') {
      e->tags = q + 1;
      e->tags_len = ql - 1;
    } else if (ql > 0 && q[0] == 'c' && ql > 1 && q[1] == ':') {
      /* DogStatsD container id: ignored. */
    } else if (ql > 0 && q[0] == 'T') {
      /* DogStatsD timestamp: ignored (the receive time is used). */
    } else {
      return md_error(err, errlen, MD_EINVAL, "unknown section \"%.*s\"", (int)(ql > 32 ? 32 : ql), q);
    }
    q = qe;
  }
  if (!ingest_valid_utf8(e->name, e->nlen))
    return md_error(err, errlen, MD_EINVAL, "name is not valid UTF-8");
  return 0;
}

int ingest_parse_statsd(const char *p, size_t n, int (*cb)(void *ctx, const ingest_statsd_event_t *e),
                        void *ctx, ingest_result_t *res) {
  ingest_result_t local;
  ictx_t c;
  ictx_init(&c, NULL, NULL, res ? res : &local);
  size_t pos = 0, lineno = 0;
  char err[200];
  while (pos < n) {
    const char *nl = memchr(p + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - p) : n;
    const char *s = p + pos;
    size_t len = end - pos;
    pos = end + 1;
    lineno++;
    while (len && (s[len - 1] == '\r' || s[len - 1] == ' '))
      len--;
    if (len == 0) continue;
    c.res->lines++;
    ingest_statsd_event_t e;
    if (parse_line(s, len, &e, err, sizeof err)) {
      ictx_error(&c, lineno, "%s", err);
      continue;
    }
    int rc = cb(ctx, &e);
    if (rc == 0) {
      c.res->samples++;
    } else {
      ictx_error(&c, lineno, "%s", rc == MD_ELIMIT ? "series limit reached" : "rejected");
    }
  }
  return c.res->rejected ? MD_EINVAL : 0;
}
