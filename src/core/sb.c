/* Growable, NUL-terminated string builder. Allocation failure is sticky (sb->oom) so call
 * sites can append freely and check once at the end. */
#include "core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(sb_t *sb) { memset(sb, 0, sizeof *sb); }

void sb_free(sb_t *sb) {
  free(sb->buf);
  memset(sb, 0, sizeof *sb);
}

void sb_reset(sb_t *sb) {
  sb->len = 0;
  if (sb->buf) sb->buf[0] = 0;
}

bool sb_reserve(sb_t *sb, size_t extra) {
  if (sb->oom) return false;
  if (sb->len + extra + 1 <= sb->cap) return true;
  size_t cap = sb->cap ? sb->cap : 64;
  while (cap < sb->len + extra + 1) cap *= 2;
  char *p = realloc(sb->buf, cap);
  if (!p) {
    sb->oom = true;
    return false;
  }
  sb->buf = p;
  sb->cap = cap;
  return true;
}

void sb_append(sb_t *sb, const void *p, size_t n) {
  if (!sb_reserve(sb, n)) return;
  if (n) memcpy(sb->buf + sb->len, p, n);
  sb->len += n;
  sb->buf[sb->len] = 0;
}

void sb_puts(sb_t *sb, const char *s) { sb_append(sb, s, strlen(s)); }

void sb_putc(sb_t *sb, char c) {
  if (!sb_reserve(sb, 1)) return;
  sb->buf[sb->len++] = c;
  sb->buf[sb->len] = 0;
}

void sb_vprintf(sb_t *sb, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  if (n < 0) {
    va_end(ap2);
    return;
  }
  if ((size_t)n < sizeof tmp) {
    sb_append(sb, tmp, (size_t)n);
  } else if (sb_reserve(sb, (size_t)n)) {
    vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap2);
    sb->len += (size_t)n;
  }
  va_end(ap2);
}

void sb_printf(sb_t *sb, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sb_vprintf(sb, fmt, ap);
  va_end(ap);
}

void sb_json_str(sb_t *sb, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (!sb_reserve(sb, n + 2)) return;
  sb_putc(sb, '"');
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sb_append(sb, s + start, i - start);
    start = i + 1;
    switch (c) {
    case '"': sb_append(sb, "\\\"", 2); break;
    case '\\': sb_append(sb, "\\\\", 2); break;
    case '\n': sb_append(sb, "\\n", 2); break;
    case '\r': sb_append(sb, "\\r", 2); break;
    case '\t': sb_append(sb, "\\t", 2); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sb_append(sb, u, 6);
    }
    }
  }
  sb_append(sb, s + start, n - start);
  sb_putc(sb, '"');
}

/* The shortest digits of v without printf/strtod, for the common case of a value written
 * with few decimals: the fewest decimals k such that an integer m < 2^50 gives m / 10^k == v.
 * Division by an exact power of ten rounds correctly, so m * 10^-k reads back as v; below
 * 2^50 the product v * 10^k is within 1/4 of that m, so rounding finds it, and no decimal
 * with fewer digits reads back as v (it would need fewer decimals). Returns false (use the
 * general search) for zero, subnormals and values that need more digits. */
static bool short_decimal(double v, char *digits, int *nd, int *exp10) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  double a = fabs(v);
  if (!(a >= 1e-22) || a >= 0x1p50) return false;
  for (int k = 0; k < (int)(sizeof pow10 / sizeof pow10[0]); k++) {
    double x = a * pow10[k];
    if (x >= 0x1p50) return false;
    double m = (double)llrint(x); /* |x| < 2^50: one conversion, no libm call */
    if (m == 0 || m / pow10[k] != a) continue;
    char tmp[24];
    int n = 0;
    for (uint64_t u = (uint64_t)m; u; u /= 10) tmp[n++] = (char)('0' + u % 10);
    *exp10 = n - 1 - k;
    int lead = 0;
    while (lead < n - 1 && tmp[lead] == '0') lead++; /* trailing zeros of m */
    *nd = 0;
    for (int i = n - 1; i >= lead; i--) digits[(*nd)++] = tmp[i];
    return true;
  }
  return false;
}

void sb_double(sb_t *out, double v) {
  if (isnan(v)) {
    sb_puts(out, "NaN");
    return;
  }
  if (isinf(v)) {
    sb_puts(out, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  /* Go's strconv.FormatFloat(v, 'g', -1, 64), which Prometheus uses: the shortest digits
   * that round-trip, in %e form when the exponent is < -4 or >= the precision (6, or the
   * digit count when smaller and the number is an integer written in full).
   * Shortest round-trip digits. If the 15-digit form round-trips, it is the shortest form
   * padded with zeros (15 = DBL_DIG: a 15-digit decimal survives decimal -> double ->
   * decimal), so trimming its zeros gives the shortest; otherwise 16, else 17 digits. */
  char digits[24];
  int nd = 0, exp10;
  bool neg;
  if (short_decimal(v, digits, &nd, &exp10)) {
    neg = v < 0;
    goto layout;
  }
  char e[40];
  int prec = 14;
  if (v != 0 && fabs(v) < 2.2250738585072014e-308) {
    /* subnormals carry fewer digits, so DBL_DIG does not hold: search from 1 digit */
    for (prec = 0; prec < 16; prec++) {
      snprintf(e, sizeof e, "%.*e", prec, v);
      if (strtod(e, NULL) == v) break;
    }
    if (prec == 16) snprintf(e, sizeof e, "%.*e", prec, v);
  } else if (snprintf(e, sizeof e, "%.*e", prec, v), strtod(e, NULL) != v) {
    prec = 15;
    snprintf(e, sizeof e, "%.*e", prec, v);
    if (strtod(e, NULL) != v) {
      prec = 16;
      snprintf(e, sizeof e, "%.*e", prec, v);
    }
  }
  const char *x = strchr(e, 'e');
  if (!x) { /* cannot happen for a finite double */
    sb_puts(out, e);
    return;
  }
  exp10 = atoi(x + 1);
  for (const char *p = e; p < x; p++)
    if (*p >= '0' && *p <= '9' && nd < (int)sizeof digits) digits[nd++] = *p;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  neg = e[0] == '-';
layout:;
  int dp = exp10 + 1, eprec = 6;
  if (eprec > nd && nd >= dp) eprec = nd;
  char buf[64];
  size_t o = 0;
  if (neg) buf[o++] = '-';
  if (exp10 < -4 || exp10 >= eprec) {
    /* d[.ddd]e±XX, as printf writes it */
    buf[o++] = digits[0];
    if (nd > 1) {
      buf[o++] = '.';
      memcpy(buf + o, digits + 1, (size_t)nd - 1);
      o += (size_t)nd - 1;
    }
    snprintf(buf + o, sizeof buf - o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    sb_puts(out, buf);
    return;
  }
  /* positional: here -4 <= exp10 < 6, so at most 5 leading zeros and 17 digits */
  if (dp <= 0) {
    buf[o++] = '0';
    buf[o++] = '.';
    for (int i = 0; i < -dp; i++) buf[o++] = '0';
    memcpy(buf + o, digits, (size_t)nd);
    o += (size_t)nd;
  } else if (dp >= nd) {
    memcpy(buf + o, digits, (size_t)nd);
    o += (size_t)nd;
    for (int i = nd; i < dp; i++) buf[o++] = '0';
  } else {
    memcpy(buf + o, digits, (size_t)dp);
    o += (size_t)dp;
    buf[o++] = '.';
    memcpy(buf + o, digits + dp, (size_t)(nd - dp));
    o += (size_t)(nd - dp);
  }
  buf[o] = 0;
  sb_puts(out, buf);
}

char *sb_steal(sb_t *sb) {
  char *p = sb->buf;
  if (!p) p = calloc(1, 1);
  memset(sb, 0, sizeof *sb);
  return p;
}
