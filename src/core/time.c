/* Clocks and the time/duration syntaxes of the Prometheus HTTP API. */
#include "core.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t md_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t md_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void md_format_rfc3339(int64_t ms, char out[32]) {
  int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
  int frac = (int)(ms - sec * 1000);
  time_t t = (time_t)sec;
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  if (frac) snprintf(out + n, 32 - n, ".%03dZ", frac);
  else snprintf(out + n, 32 - n, "Z");
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int parse_rfc3339(const char *s, size_t n, int64_t *ms) {
  /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm) */
  char buf[64];
  if (n >= sizeof buf || n < 20) return -1;
  memcpy(buf, s, n);
  buf[n] = 0;
  int Y, M, D, h, mi, sec, used = 0;
  if (sscanf(buf, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &Y, &M, &D, &h, &mi, &sec, &used) != 6 || used != 19) return -1;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || sec > 60) return -1;
  const char *p = buf + 19;
  int64_t frac_ms = 0;
  if (*p == '.') {
    p++;
    int digits = 0;
    int64_t scale = 100;
    while (isdigit((unsigned char)*p)) {
      if (digits < 3) frac_ms += (*p - '0') * scale;
      scale /= 10;
      digits++;
      p++;
    }
    if (!digits) return -1;
  }
  int64_t off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om;
    if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2) return -1;
    off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
    p += 6;
  } else {
    return -1;
  }
  if (*p) return -1;
  int64_t days = days_from_civil(Y, (unsigned)M, (unsigned)D);
  *ms = ((days * 86400 + h * 3600 + mi * 60 + sec) - off) * 1000 + frac_ms;
  return 0;
}

int md_parse_time(const char *s, size_t n, int64_t *ms) {
  if (n == 0 || n > 63) return -1;
  char buf[64];
  memcpy(buf, s, n);
  buf[n] = 0;
  char *end;
  double v = strtod(buf, &end);
  if (*end == 0 && end != buf && isfinite(v)) {
    if (v > 9.2e15 || v < -9.2e15) return -1;
    *ms = (int64_t)llround(v * 1000.0);
    return 0;
  }
  return parse_rfc3339(s, n, ms);
}

int md_parse_duration(const char *s, size_t n, int64_t *ms) {
  if (n == 0 || n > 63) return -1;
  char buf[64];
  memcpy(buf, s, n);
  buf[n] = 0;
  char *end;
  double v = strtod(buf, &end);
  if (*end == 0 && end != buf) {
    if (!isfinite(v) || v < 0 || v > 9.2e15) return -1;
    *ms = (int64_t)llround(v * 1000.0);
    return 0;
  }
  /* Units in order y w d h m s ms, each at most once. */
  static const struct { const char *u; int64_t ms; } units[] = {
      {"y", 365LL * 86400000}, {"w", 7LL * 86400000}, {"d", 86400000}, {"h", 3600000},
      {"m", 60000}, {"s", 1000}, {"ms", 1}};
  const char *p = buf;
  int64_t total = 0;
  int last = -1;
  if (!*p) return -1;
  while (*p) {
    if (!isdigit((unsigned char)*p)) return -1;
    int64_t num = 0;
    while (isdigit((unsigned char)*p)) {
      if (num > 1000000000000LL) return -1;
      num = num * 10 + (*p++ - '0');
    }
    int u = -1;
    if (p[0] == 'm' && p[1] == 's') u = 6;
    else if (*p == 'y') u = 0;
    else if (*p == 'w') u = 1;
    else if (*p == 'd') u = 2;
    else if (*p == 'h') u = 3;
    else if (*p == 'm') u = 4;
    else if (*p == 's') u = 5;
    if (u < 0 || u <= last) return -1;
    p += strlen(units[u].u);
    last = u;
    /* "9102801346544h" would overflow: refuse what does not fit in int64 milliseconds */
    if (num > (INT64_MAX - total) / units[u].ms) return -1;
    total += num * units[u].ms;
  }
  *ms = total;
  return 0;
}
