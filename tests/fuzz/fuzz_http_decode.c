/* Fuzz target: request-body decoding (every Content-Encoding, bounded output) and the
 * x-www-form-urlencoded parser. The first byte picks the encoding. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "http/http.h"
#include "http/http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const enc[] = {"gzip", "deflate", "zstd", "snappy", "identity", "br"};
  if (size < 1) return 0;
  const char *e = enc[data[0] % 6];
  char *out = NULL;
  size_t outlen = 0;
  char err[256];
  if (http_decode(e, data + 1, size - 1, 1 << 20, &out, &outlen, err, sizeof err) == 0) {
    if (out[outlen] != 0) abort(); /* the NUL guarantee handlers rely on */
    free(out);
  }
  http_req_t req = {0};
  req.arena = arena_new(0);
  if (!req.arena) return 0;
  http_req_parse_form(&req, (const char *)data + 1, size - 1);
  const char *const *vals;
  http_req_query_all(&req, "match[]", &vals);
  arena_free(req.arena);
  return 0;
}
