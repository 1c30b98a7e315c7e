/* Structured JSON logging on stderr (seed 004's shape). One write(2) per line so lines from
 * concurrent threads never interleave. */
#include "core.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level_t level) { atomic_store(&g_level, (int)level); }

int log_set_level_name(const char *name) {
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      log_set_level((log_level_t)i);
      return 0;
    }
  }
  if (strcasecmp(name, "warning") == 0) {
    log_set_level(LOG_WARN);
    return 0;
  }
  return -1;
}

bool log_enabled(log_level_t level) { return (int)level >= atomic_load(&g_level); }

void log_write(log_level_t level, const char *request_id, const char *fields, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  size_t mlen = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
  char ts[32];
  md_format_rfc3339(md_now_ms(), ts);
  sb_t sb = {0};
  sb_puts(&sb, "{\"timestamp\":\"");
  sb_puts(&sb, ts);
  sb_puts(&sb, "\",\"level\":\"");
  sb_puts(&sb, level_names[level]);
  sb_puts(&sb, "\",\"service\":\"metricsd\"");
  if (request_id) {
    sb_puts(&sb, ",\"request_id\":");
    sb_json_str(&sb, request_id, strlen(request_id));
  }
  sb_puts(&sb, ",\"message\":");
  sb_json_str(&sb, msg, mlen);
  if (fields && *fields) {
    sb_puts(&sb, ",\"fields\":{");
    sb_puts(&sb, fields);
    sb_putc(&sb, '}');
  }
  sb_puts(&sb, "}\n");
  if (!sb.oom) {
    ssize_t w = write(STDERR_FILENO, sb.buf, sb.len);
    (void)w;
  }
  sb_free(&sb);
}

int md_error(char *err, size_t n, int code, const char *fmt, ...) {
  if (err && n) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
  }
  return code;
}
