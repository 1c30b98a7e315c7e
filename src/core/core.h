/*
 * core — the libc-level toolbox every other module stands on: structured JSON logging,
 * a growable string builder, arenas for request/query-scoped memory, 64-bit hashing,
 * CRC32C, clocks, and anchored regular expressions (PCRE2 with JIT, Prometheus semantics).
 *
 * Threading: everything here is thread-safe to call; objects (sb_t, arena_t, core_regex_t)
 * belong to one thread at a time unless noted. The log level is a process-wide setting
 * (an atomic), the one global besides signal flags.
 */
#ifndef METRICSD_CORE_H
#define METRICSD_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------------------ */

/* Status codes shared by all modules: 0 ok, negative error. Details go in an err buffer. */
enum {
  MD_OK = 0,
  MD_ERR = -1,       /* generic failure; see message */
  MD_ENOMEM = -2,    /* allocation failed */
  MD_EINVAL = -3,    /* bad input from the caller or the user */
  MD_EIO = -4,       /* I/O error */
  MD_ENOSPC = -5,    /* disk full */
  MD_ELIMIT = -6,    /* a configured limit was hit (HTTP 429) */
  MD_ENOTFOUND = -7, /* no such thing */
  MD_ECANCELED = -8, /* timed out or cancelled */
  MD_ECORRUPT = -9,  /* on-disk data failed a check */
};

/* Writes a formatted message into err (size n, may be NULL) and returns code. */
int md_error(char *err, size_t n, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- logging ----------------------------------------------------------------------- */

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

/* Sets the minimum level written; returns -1 for an unknown name ("debug", "info", ...). */
int log_set_level_name(const char *name);
void log_set_level(log_level_t level);
bool log_enabled(log_level_t level);
/* One JSON object per line on stderr: timestamp, level, service, request_id, message,
 * fields. `fields` is a pre-rendered JSON object body ("\"k\":1,\"x\":\"y\"") or NULL.
 * request_id may be NULL. */
void log_write(log_level_t level, const char *request_id, const char *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, NULL, NULL, __VA_ARGS__); } while (0)
#define log_info(...) log_write(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, NULL, NULL, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, NULL, NULL, __VA_ARGS__)

/* ---- string builder ---------------------------------------------------------------- */

/* A growable byte buffer, always NUL-terminated. Zero-initialise ({0}) or sb_init. On
 * allocation failure the builder sets `oom` and further appends are no-ops. */
typedef struct sb {
  char *buf;
  size_t len, cap;
  bool oom;
} sb_t;

void sb_init(sb_t *sb);
void sb_free(sb_t *sb);
void sb_reset(sb_t *sb);                 /* len = 0, keeps memory */
bool sb_reserve(sb_t *sb, size_t extra); /* room for extra more bytes + NUL */
void sb_append(sb_t *sb, const void *p, size_t n);
void sb_puts(sb_t *sb, const char *s);
void sb_putc(sb_t *sb, char c);
void sb_printf(sb_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vprintf(sb_t *sb, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
void sb_json_str(sb_t *sb, const char *s, size_t n);
/* Appends a double the way Prometheus prints it: shortest round-trip, "NaN", "+Inf", "-Inf". */
void sb_double(sb_t *sb, double v);
/* Hands the buffer to the caller (free() it); the builder is reset to empty. */
char *sb_steal(sb_t *sb);

/* ---- arena ------------------------------------------------------------------------- */

/* Bump allocator for request- and query-scoped memory: allocate many, free once. */
typedef struct arena arena_t;
arena_t *arena_new(size_t block_size); /* 0 = default (64 KiB) */
void arena_free(arena_t *a);
void arena_reset(arena_t *a);          /* frees all but the first block */
void *arena_alloc(arena_t *a, size_t n);  /* 16-byte aligned; NULL on OOM */
void *arena_calloc(arena_t *a, size_t n);
char *arena_strndup(arena_t *a, const char *s, size_t n);
char *arena_strdup(arena_t *a, const char *s);
size_t arena_bytes(const arena_t *a); /* bytes held from malloc */

/* ---- hashing and checksums ------------------------------------------------------------ */

/* A fast, well-mixed 64-bit hash (not cryptographic). */
uint64_t md_hash64(const void *p, size_t n, uint64_t seed);
static inline uint64_t md_hash_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33;
  return h;
}
/* CRC32C (Castagnoli), hardware-accelerated when the CPU has SSE4.2. Chain with crc = prev. */
uint32_t md_crc32c(uint32_t crc, const void *p, size_t n);

/* Constant-time comparison of two byte strings (for credentials). */
bool md_secure_equal(const void *a, size_t an, const void *b, size_t bn);

/* ---- time -------------------------------------------------------------------------- */

int64_t md_now_ms(void);     /* wall clock, Unix milliseconds */
int64_t md_mono_ns(void);    /* monotonic clock, nanoseconds */
/* Formats Unix ms as RFC 3339 UTC ("2024-01-15T10:30:00Z", with .mmm when not whole). */
void md_format_rfc3339(int64_t ms, char out[32]);
/* Parses RFC 3339 or Unix seconds with a fraction into ms; -1 on error. */
int md_parse_time(const char *s, size_t n, int64_t *ms);
/* Parses a Prometheus duration ("1h30m", "15s", "100ms", or seconds as a float "1.5") into
 * ms; -1 on error. */
int md_parse_duration(const char *s, size_t n, int64_t *ms);

/* ---- regular expressions ----------------------------------------------------------- */

/* A regex with Prometheus semantics: RE2-style syntax, fully anchored (^(?:re)$), UTF-8,
 * compiled with PCRE2 JIT when available. One core_regex_t may be used from many threads
 * (each match uses its own match data). */
typedef struct core_regex core_regex_t;
int core_regex_compile(const char *pattern, size_t n, core_regex_t **out, char *err, size_t errlen);
bool core_regex_match(const core_regex_t *re, const char *s, size_t n);
/* Matches and fills up to 10 capture groups ($0..$9) as offsets; returns groups found or -1. */
int core_regex_captures(const core_regex_t *re, const char *s, size_t n, size_t off[][2], int max);
/* If the pattern is a plain literal or an alternation of literals ("a|b|c"), returns how many
 * and fills up to max pointers into the regex's own storage; else 0. Lets indexes turn =~
 * into set lookups. */
size_t core_regex_literals(const core_regex_t *re, const char *const **lits, const size_t **lens);
void core_regex_free(core_regex_t *re);

/* ---- files ------------------------------------------------------------------------- */

/* Reads a whole file (NUL-terminated); caller frees *out. */
int md_read_file(const char *path, char **out, size_t *len);
/* Writes a whole file atomically: path.tmp, fsync, rename, fsync dir. */
int md_write_file_atomic(const char *path, const void *p, size_t n);
int md_mkdir_p(const char *path);
int md_fsync_dir(const char *path);
int md_rm_rf(const char *path);

#endif
