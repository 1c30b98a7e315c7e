/*
 * Request-body decoding by Content-Encoding (gzip, deflate, zstd, snappy block format) and
 * gzip for responses. Every decoder is bounded by max_out so a small "zip bomb" body cannot
 * expand past the configured body limit: the limit is enforced while inflating, not after.
 *
 * Threading: stateless; any thread.
 */
#include "http.h"

#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
#include <zstd.h>

/* Grows the output buffer towards `want` bytes but never past max_out + 2 (one byte over
 * the limit to detect overflow, one for the NUL). MD_ELIMIT when it cannot grow further. */
static int grow(char **buf, size_t *cap, size_t want, size_t max_out) {
  size_t limit = max_out + 2;
  size_t ncap = want < limit ? want : limit;
  if (ncap <= *cap) return MD_ELIMIT;
  char *n = realloc(*buf, ncap);
  if (!n) return MD_ENOMEM;
  *buf = n;
  *cap = ncap;
  return 0;
}

/* zlib-family inflate. windowBits: 16+15 gzip, 15 zlib, -15 raw deflate. Concatenated gzip
 * members are decoded in sequence, as gzip(1) does. */
static int inflate_body(const void *in, size_t n, int window_bits, size_t max_out, char **out, size_t *outlen,
                        const char *name, char *err, size_t errlen) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, window_bits) != Z_OK) return md_error(err, errlen, MD_ENOMEM, "%s: out of memory", name);
  char *buf = NULL;
  size_t cap = 0, len = 0;
  int rc = 0;
  zs.next_in = (Bytef *)in;
  size_t remaining = n;
  for (;;) {
    if (len + 1 >= cap) {
      int g = grow(&buf, &cap, cap ? cap * 2 : (n * 4 < 65536 ? 65536 : n * 4), max_out);
      if (g == MD_ELIMIT) {
        rc = md_error(err, errlen, MD_ELIMIT, "%s body decodes to more than %zu bytes", name, max_out);
        goto out;
      }
      if (g) {
        rc = md_error(err, errlen, MD_ENOMEM, "%s: out of memory", name);
        goto out;
      }
    }
    /* zlib counts in uInt; feed at most 1 GiB per call */
    uInt chunk_in = remaining > (1u << 30) ? (1u << 30) : (uInt)remaining;
    zs.avail_in = chunk_in;
    size_t room = cap - 1 - len;
    zs.next_out = (Bytef *)buf + len;
    zs.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
    uInt before_out = zs.avail_out;
    int z = inflate(&zs, Z_NO_FLUSH);
    remaining -= chunk_in - zs.avail_in;
    len += before_out - zs.avail_out;
    if (len > max_out) {
      rc = md_error(err, errlen, MD_ELIMIT, "%s body decodes to more than %zu bytes", name, max_out);
      goto out;
    }
    if (z == Z_STREAM_END) {
      if (remaining == 0) break;
      if (window_bits == 16 + 15) { /* another gzip member follows */
        if (inflateReset(&zs) != Z_OK) {
          rc = md_error(err, errlen, MD_EINVAL, "corrupt %s body", name);
          goto out;
        }
        continue;
      }
      rc = md_error(err, errlen, MD_EINVAL, "corrupt %s body: trailing data after the stream", name);
      goto out;
    }
    if (z == Z_BUF_ERROR && remaining == 0 && zs.avail_out > 0) {
      rc = md_error(err, errlen, MD_EINVAL, "corrupt %s body: truncated", name);
      goto out;
    }
    if (z != Z_OK && z != Z_BUF_ERROR) {
      rc = md_error(err, errlen, MD_EINVAL, "corrupt %s body: %s", name, zs.msg ? zs.msg : "invalid data");
      goto out;
    }
  }
out:
  inflateEnd(&zs);
  if (rc) {
    free(buf);
    return rc;
  }
  if (!buf) {
    buf = malloc(1);
    if (!buf) return md_error(err, errlen, MD_ENOMEM, "%s: out of memory", name);
  }
  buf[len] = 0;
  *out = buf;
  *outlen = len;
  return 0;
}

static int zstd_body(const void *in, size_t n, size_t max_out, char **out, size_t *outlen, char *err, size_t errlen) {
  ZSTD_DStream *ds = ZSTD_createDStream();
  if (!ds) return md_error(err, errlen, MD_ENOMEM, "zstd: out of memory");
  /* bound the decoder's window so a header cannot ask for gigabytes of memory */
  ZSTD_DCtx_setParameter(ds, ZSTD_d_windowLogMax, 27);
  char *buf = NULL;
  size_t cap = 0, len = 0;
  int rc = 0;
  ZSTD_inBuffer ib = {in, n, 0};
  size_t last = 1;
  while (ib.pos < ib.size || last != 0) {
    if (len + 1 >= cap) {
      int g = grow(&buf, &cap, cap ? cap * 2 : 65536, max_out);
      if (g == MD_ELIMIT) {
        rc = md_error(err, errlen, MD_ELIMIT, "zstd body decodes to more than %zu bytes", max_out);
        goto out;
      }
      if (g) {
        rc = md_error(err, errlen, MD_ENOMEM, "zstd: out of memory");
        goto out;
      }
    }
    ZSTD_outBuffer ob = {buf + len, cap - 1 - len, 0};
    size_t in_before = ib.pos;
    last = ZSTD_decompressStream(ds, &ob, &ib);
    if (ZSTD_isError(last)) {
      rc = md_error(err, errlen, MD_EINVAL, "corrupt zstd body: %s", ZSTD_getErrorName(last));
      goto out;
    }
    len += ob.pos;
    if (len > max_out) {
      rc = md_error(err, errlen, MD_ELIMIT, "zstd body decodes to more than %zu bytes", max_out);
      goto out;
    }
    if (ib.pos == ib.size && ob.pos == 0 && in_before == ib.pos && last != 0) {
      rc = md_error(err, errlen, MD_EINVAL, "corrupt zstd body: truncated");
      goto out;
    }
  }
out:
  ZSTD_freeDStream(ds);
  if (rc) {
    free(buf);
    return rc;
  }
  if (!buf && !(buf = malloc(1))) return md_error(err, errlen, MD_ENOMEM, "zstd: out of memory");
  buf[len] = 0;
  *out = buf;
  *outlen = len;
  return 0;
}

static int snappy_body(const void *in, size_t n, size_t max_out, char **out, size_t *outlen, char *err, size_t errlen) {
  size_t ulen = 0;
  if (snappy_uncompressed_length(in, n, &ulen) != SNAPPY_OK)
    return md_error(err, errlen, MD_EINVAL, "corrupt snappy body: bad length header");
  if (ulen > max_out) return md_error(err, errlen, MD_ELIMIT, "snappy body decodes to more than %zu bytes", max_out);
  /* a valid block can expand at most ~64x per byte of input: cheap sanity check before
   * allocating what the header claims */
  if (ulen > 64 * (n + 16)) return md_error(err, errlen, MD_EINVAL, "corrupt snappy body: impossible length");
  if (snappy_validate_compressed_buffer(in, n) != SNAPPY_OK)
    return md_error(err, errlen, MD_EINVAL, "corrupt snappy body (block format expected)");
  char *buf = malloc(ulen + 1);
  if (!buf) return md_error(err, errlen, MD_ENOMEM, "snappy: out of memory");
  size_t got = ulen;
  if (snappy_uncompress(in, n, buf, &got) != SNAPPY_OK) {
    free(buf);
    return md_error(err, errlen, MD_EINVAL, "corrupt snappy body");
  }
  buf[got] = 0;
  *out = buf;
  *outlen = got;
  return 0;
}

int http_decode(const char *encoding, const void *in, size_t n, size_t max_out, char **out, size_t *outlen,
                char *err, size_t errlen) {
  *out = NULL;
  *outlen = 0;
  if (!encoding) encoding = "";
  while (*encoding == ' ') encoding++;
  size_t elen = strlen(encoding);
  while (elen && encoding[elen - 1] == ' ') elen--;
#define IS(s) (elen == strlen(s) && strncasecmp(encoding, s, elen) == 0)
  if (elen == 0 || IS("identity")) {
    if (n > max_out) return md_error(err, errlen, MD_ELIMIT, "body larger than %zu bytes", max_out);
    char *buf = malloc(n + 1);
    if (!buf) return md_error(err, errlen, MD_ENOMEM, "out of memory");
    if (n) memcpy(buf, in, n);
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    return 0;
  }
  if (IS("gzip") || IS("x-gzip")) return inflate_body(in, n, 16 + 15, max_out, out, outlen, "gzip", err, errlen);
  if (IS("deflate")) {
    /* "deflate" is zlib-wrapped by the RFC, but some clients send raw deflate: try both */
    int rc = inflate_body(in, n, 15, max_out, out, outlen, "deflate", err, errlen);
    if (rc == MD_EINVAL) rc = inflate_body(in, n, -15, max_out, out, outlen, "deflate", err, errlen);
    return rc;
  }
  if (IS("zstd")) return zstd_body(in, n, max_out, out, outlen, err, errlen);
  if (IS("snappy")) return snappy_body(in, n, max_out, out, outlen, err, errlen);
#undef IS
  return md_error(err, errlen, MD_EINVAL, "unsupported Content-Encoding '%.*s' (gzip, deflate, zstd, snappy)",
                  (int)(elen > 40 ? 40 : elen), encoding);
}

int http_gzip(const void *in, size_t n, char **out, size_t *outlen) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  /* level 1: responses are latency-bound; the bulk of the ratio comes at the lowest level */
  if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return MD_ENOMEM;
  uLong bound = deflateBound(&zs, (uLong)n);
  char *buf = malloc(bound + 1);
  if (!buf) {
    deflateEnd(&zs);
    return MD_ENOMEM;
  }
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)n;
  zs.next_out = (Bytef *)buf;
  zs.avail_out = (uInt)bound;
  int z = deflate(&zs, Z_FINISH);
  size_t len = bound - zs.avail_out;
  deflateEnd(&zs);
  if (z != Z_STREAM_END || n > (1u << 30)) {
    free(buf);
    return MD_ERR;
  }
  *out = buf;
  *outlen = len;
  return 0;
}
