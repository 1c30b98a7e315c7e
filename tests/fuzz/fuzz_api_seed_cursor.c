/*
 * Fuzz target: /metrics/series cursors (seed_cursor_decode / seed_cursor_encode in
 * src/api/seed.c), the one piece of that endpoint's input that is decoded rather than
 * matched. Properties: decoding never reads past the input; whatever decodes re-encodes to
 * a cursor that decodes to the same bytes; any byte string survives encode → decode.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/seed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  sb_t dec = {0}, enc = {0}, again = {0};
  if (seed_cursor_decode(p, size, &dec) == 0) {
    if (dec.len > size) __builtin_trap();
    seed_cursor_encode(&enc, dec.buf ? dec.buf : "", dec.len);
    if (enc.oom) goto out;
    if (seed_cursor_decode(enc.buf ? enc.buf : "", enc.len, &again) != 0) __builtin_trap();
    if (again.len != dec.len || (dec.len && memcmp(again.buf, dec.buf, dec.len) != 0)) __builtin_trap();
  }
  sb_reset(&enc);
  sb_reset(&again);
  seed_cursor_encode(&enc, p, size);
  if (enc.oom) goto out;
  if (seed_cursor_decode(enc.buf ? enc.buf : "", enc.len, &again) != 0) __builtin_trap();
  if (again.len != size || (size && memcmp(again.buf, p, size) != 0)) __builtin_trap();
out:
  sb_free(&dec);
  sb_free(&enc);
  sb_free(&again);
  return 0;
}
