/* 64-bit hashing (multiply-fold over 8-byte words), CRC32C and constant-time comparison. */
#include "core.h"

#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

static inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  __uint128_t r = (__uint128_t)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t load64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

uint64_t md_hash64(const void *data, size_t n, uint64_t seed) {
  const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL, k2 = 0x8ebc6af09c88c6e3ULL;
  const unsigned char *p = data;
  uint64_t h = seed ^ fold_mul(seed ^ k0, k1) ^ (uint64_t)n;
  size_t i = n;
  while (i >= 16) {
    h = fold_mul(load64(p) ^ k1, load64(p + 8) ^ h);
    p += 16;
    i -= 16;
  }
  uint64_t a = 0, b = 0;
  if (i >= 8) {
    a = load64(p);
    b = load64(p + i - 8);
  } else if (i >= 4) {
    uint32_t x, y;
    memcpy(&x, p, 4);
    memcpy(&y, p + i - 4, 4);
    a = x;
    b = y;
  } else if (i > 0) {
    a = ((uint64_t)p[0] << 16) | ((uint64_t)p[i >> 1] << 8) | p[i - 1];
  }
  h = fold_mul(a ^ k2 ^ h, b ^ k1);
  return fold_mul(h ^ k0, (uint64_t)n ^ k2);
}

/* ---- CRC32C ---- */

static uint32_t crc_table[8][256];
static int crc_hw = -1;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  crc_hw = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_SSE4_2) ? 1 : 0;
#else
  crc_hw = 0;
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const unsigned char *p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    c = _mm_crc32_u64(c, load64(p));
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

static uint32_t crc_soft(uint32_t c, const unsigned char *p, size_t n) {
  while (n >= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
        crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
        crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
  return c;
}

uint32_t md_crc32c(uint32_t crc, const void *data, size_t n) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, crc_init);
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (crc_hw) return ~crc_sse42(c, data, n);
#endif
  return ~crc_soft(c, data, n);
}

bool md_secure_equal(const void *a, size_t an, const void *b, size_t bn) {
  const unsigned char *x = a, *y = b;
  unsigned char diff = (unsigned char)(an != bn);
  size_t n = an > bn ? an : bn;
  for (size_t i = 0; i < n; i++) {
    unsigned char cx = i < an ? x[i] : 0, cy = i < bn ? y[i] : 0;
    diff |= cx ^ cy;
  }
  return diff == 0;
}
