/*
 * bench_chunk — chunk encoding on node-exporter-like series: bytes per sample per series
 * kind (head Gorilla stream vs sealed), append / seal / decode speeds, and what zstd adds
 * over sealed chunks.
 *
 * The data follows the model of ../shared/bench/gen.py (same 18 series per host, same value
 * precisions, 15 s interval, per-host scrape phase), with its own random numbers; every
 * third host gets ±J ms of timestamp jitter (J = 3 by default).
 *
 *   bench_chunk [hosts=200] [hours=3] [jitter_ms=3]
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "core/core.h"
#include "tsdb/chunk.h"

/* ---- random numbers (splitmix64) --------------------------------------------------- */

static uint64_t rs;
static uint64_t rnext(void) {
  uint64_t z = (rs += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static double r01(void) { return (double)(rnext() >> 11) / 9007199254740992.0; }
static double uni(double a, double b) { return a + (b - a) * r01(); }
static int64_t rint_below(int64_t n) { return (int64_t)(rnext() % (uint64_t)n); }

/* ---- the node-exporter model --------------------------------------------------------- */

enum { SERIES_PER_HOST = 18 };
enum { K_CPU, K_CONST, K_MEM, K_NET, K_DISK, K_FS, K_LOAD, NKINDS };
static const char *kind_names[NKINDS] = {"cpu counter (2 dec)", "constant gauge", "memory gauge (x1024)",
                                         "net byte counter", "disk byte counter (x512)",
                                         "filesystem gauge (x4096)", "load average (2 dec)"};
static const int series_kind[SERIES_PER_HOST] = {K_CPU, K_CPU, K_CPU, K_CPU, K_CPU,  K_CPU,
                                                 K_CPU, K_CPU, K_CONST, K_MEM, K_NET, K_NET,
                                                 K_DISK, K_DISK, K_FS, K_LOAD, K_LOAD, K_LOAD};

typedef struct {
  int64_t phase_ms;
  double util, load_bias, load1, load5, load15, rx_base, tx_base, dw_base;
  int64_t ticks[8], mem_total_kb, mem_avail_kb, rx, tx, dr, dw, fs_size, fs_avail;
  bool jitter;
} host_t;

static const int MEM_GIB[] = {4, 8, 8, 16, 16, 16, 32, 32, 64, 128};
static const int FS_GIB[] = {40, 80, 100, 200, 500, 1000};

static void host_init(host_t *h, int idx) {
  h->phase_ms = rint_below(15000);
  h->jitter = idx % 3 == 0;
  double uptime = uni(3600, 200 * 86400.0);
  h->util = uni(0.03, 0.7);
  for (int c = 0; c < 2; c++) {
    int64_t user = (int64_t)(uptime * 100 * h->util * 0.72), sys = (int64_t)(uptime * 100 * h->util * 0.2);
    int64_t iow = (int64_t)(uptime * 100 * h->util * 0.08);
    h->ticks[c * 4 + 0] = (int64_t)(uptime * 100) - user - sys - iow;
    h->ticks[c * 4 + 1] = iow;
    h->ticks[c * 4 + 2] = sys;
    h->ticks[c * 4 + 3] = user;
  }
  h->mem_total_kb = (int64_t)MEM_GIB[rint_below(10)] * 1048576 - (60000 + rint_below(190000));
  h->mem_avail_kb = (int64_t)((double)h->mem_total_kb * uni(0.2, 0.85));
  h->rx_base = pow(10, uni(3.5, 6.8));
  h->tx_base = h->rx_base * uni(0.2, 1.5);
  h->rx = (int64_t)(h->rx_base * uptime * uni(0.5, 1.5));
  h->tx = (int64_t)(h->tx_base * uptime * uni(0.5, 1.5));
  h->dw_base = pow(10, uni(3.5, 6.3));
  h->dw = (int64_t)(h->dw_base * uptime * uni(0.5, 1.5)) / 512 * 512;
  h->dr = (int64_t)(h->dw_base * uptime * uni(0.1, 2.0)) / 512 * 512;
  h->fs_size = (int64_t)FS_GIB[rint_below(6)] * 1073741824;
  h->fs_avail = (int64_t)((double)h->fs_size * uni(0.15, 0.85)) / 4096 * 4096;
  h->load_bias = uni(0, 0.6);
  h->load1 = h->load5 = h->load15 = h->util * 2 + h->load_bias;
}

static double cents(double x) { return (double)llround(x * 100) / 100.0; }

static void host_step(host_t *h, double out[SERIES_PER_HOST]) {
  double u = h->util + (r01() - 0.5) * 0.04;
  if (r01() < 0.002) u += 0.3;
  if (u < 0.01) u = 0.02 - u;
  else if (u > 0.99) u = 1.98 - u;
  h->util = u;
  for (int c = 0; c < 2; c++) {
    double uc = u + (r01() - 0.5) * 0.1;
    uc = uc < 0 ? 0 : uc > 1 ? 1 : uc;
    double busy = 1500 * uc;
    int64_t user = (int64_t)(busy * 0.72 * (0.85 + 0.3 * r01())), sys = (int64_t)(busy * 0.2 * (0.7 + 0.6 * r01()));
    int64_t iow = (int64_t)(busy * 0.16 * r01());
    int64_t idle = 1500 - user - sys - iow + (int64_t)(r01() * 5) - 2;
    if (idle < 0) idle = 0;
    int64_t *t = h->ticks + c * 4;
    t[0] += idle, t[1] += iow, t[2] += sys, t[3] += user;
    for (int k = 0; k < 4; k++) out[c * 4 + k] = (double)t[k] / 100.0; /* == strtod("%d.%02d") */
  }
  int64_t tot = h->mem_total_kb;
  int64_t a = h->mem_avail_kb + (int64_t)((r01() - 0.5) * (double)tot * 0.006);
  int64_t lo = tot * 3 / 100, hi = tot * 95 / 100;
  if (a < lo) a = lo + (lo - a);
  else if (a > hi) a = hi - (a - hi);
  h->mem_avail_kb = a;
  out[8] = (double)(tot * 1024);
  out[9] = (double)(a * 1024);
  h->rx += (int64_t)(h->rx_base * 15 * (0.4 + 1.2 * r01()) * (0.5 + u));
  h->tx += (int64_t)(h->tx_base * 15 * (0.4 + 1.2 * r01()) * (0.5 + u));
  out[10] = (double)h->rx;
  out[11] = (double)h->tx;
  int64_t dr = r01() < 0.8 ? (int64_t)(r01() * 65536) / 512 * 512 : (int64_t)(h->dw_base * 15 * 3 * r01()) / 512 * 512;
  int64_t dw = (int64_t)(h->dw_base * 15 * (0.3 + 1.4 * r01())) / 512 * 512;
  h->dr += dr;
  h->dw += dw;
  out[12] = (double)h->dr;
  out[13] = (double)h->dw;
  int64_t fa = h->fs_avail - (dw / 8) / 4096 * 4096;
  if (r01() < 0.001) fa += (int64_t)((double)h->fs_size * 0.05 * r01()) / 4096 * 4096;
  if (fa < h->fs_size / 20) fa += h->fs_size / 10 / 4096 * 4096;
  else if (fa > h->fs_size) fa = h->fs_size - 4096 * 1000;
  h->fs_avail = fa;
  out[14] = (double)fa;
  double inst = u * 2 * (0.6 + 0.8 * r01()) + h->load_bias * r01();
  h->load1 = h->load1 * 0.778800783071405 + inst * (1 - 0.778800783071405);
  h->load5 = h->load5 * 0.951229424500714 + h->load1 * (1 - 0.951229424500714);
  h->load15 = h->load15 * 0.983471453821617 + h->load1 * (1 - 0.983471453821617);
  out[15] = cents(h->load1);
  out[16] = cents(h->load5);
  out[17] = cents(h->load15);
}

/* ---- harness ------------------------------------------------------------------------ */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct {
  uint8_t *p;
  size_t len;
} blob_t;

static void die(const char *what) {
  fprintf(stderr, "bench_chunk: %s\n", what);
  exit(1);
}


/* Reads a LEB128 varint for the census below (the bench trusts its own chunks). */
static uint64_t uv(const uint8_t *p, size_t *off) {
  uint64_t v = 0;
  for (unsigned sh = 0;; sh += 7) {
    uint8_t c = p[(*off)++];
    v |= (uint64_t)(c & 0x7f) << sh;
    if (!(c & 0x80)) return v;
  }
}

/* Splits a sealed chunk (format in src/tsdb/chunk.c) into its timestamp bytes and names the
 * schemes picked, e.g. "ts:iseq/grid/for val:dec/delta/rice". */
static size_t census(const uint8_t *p, size_t len, char *out, size_t outlen) {
  static const char *model[] = {"delta", "dod", "grid", "regular"}, *pack[] = {"for", "rice", "two", "?"};
  size_t off = 1;
  (void)uv(p, &off);
  size_t tslen = (size_t)uv(p, &off), ts0 = off, v0 = off + tslen;
  char tsd[32], vd[48];
  if (p[ts0] < 0x20)
    snprintf(tsd, sizeof tsd, "%s/%s%s", model[p[ts0] & 3], pack[(p[ts0] >> 2) & 3], p[ts0] & 0x10 ? "/min" : "");
  else snprintf(tsd, sizeof tsd, "gorilla");
  if (p[v0] == 0) snprintf(vd, sizeof vd, "xor");
  else if (p[v0] == 1) snprintf(vd, sizeof vd, "const");
  else {
    size_t o = v0 + 1;
    uint64_t nexc = (p[v0] & 0x40) ? uv(p, &o) : 0;
    for (uint64_t k = 0; k < nexc; k++) {
      (void)uv(p, &o);
      o += 8;
    }
    snprintf(vd, sizeof vd, "dec%u/%s/%s%s%s", p[v0] & 0x1f, model[p[o] & 3], pack[(p[o] >> 2) & 3],
             p[o] & 0x10 ? "/min" : "", nexc ? "+exc" : "");
  }
  snprintf(out, outlen, "ts:%s val:%s", tsd, vd);
  (void)len;
  return tslen + (off - 1);
}

typedef struct {
  char name[96];
  size_t count;
} tally_t;

static void tally(tally_t *t, size_t *nt, size_t max, const char *name) {
  for (size_t i = 0; i < *nt; i++)
    if (strcmp(t[i].name, name) == 0) {
      t[i].count++;
      return;
    }
  if (*nt < max) {
    snprintf(t[*nt].name, sizeof t[*nt].name, "%s", name);
    t[(*nt)++].count = 1;
  }
}

int main(int argc, char **argv) {
  int hosts = argc > 1 ? atoi(argv[1]) : 200;
  double hours = argc > 2 ? atof(argv[2]) : 3;
  int jitter = argc > 3 ? atoi(argv[3]) : 3;
  size_t steps = (size_t)(hours * 3600 / 15), nseries = (size_t)hosts * SERIES_PER_HOST;
  size_t total = steps * nseries;
  int64_t *ts = malloc(total * sizeof *ts);
  double *v = malloc(total * sizeof *v);
  int64_t *dts = malloc((steps + 1) * sizeof *dts);
  double *dv = malloc((steps + 1) * sizeof *dv);
  if (!ts || !v || !dts || !dv) die("out of memory");
  rs = 42;
  int64_t start = 1700000000000 / 15000 * 15000;
  for (int hi = 0; hi < hosts; hi++) {
    host_t h;
    host_init(&h, hi);
    double out[SERIES_PER_HOST];
    for (size_t s = 0; s < steps; s++) {
      host_step(&h, out);
      int64_t t = start + (int64_t)s * 15000 + h.phase_ms;
      if (h.jitter && jitter > 0) t += rint_below(2 * jitter + 1) - jitter;
      for (int k = 0; k < SERIES_PER_HOST; k++) {
        size_t at = ((size_t)hi * SERIES_PER_HOST + (size_t)k) * steps + s;
        ts[at] = t;
        v[at] = out[k];
      }
    }
  }
  printf("dataset: %d hosts x %d series, %zu samples each (%.1f h at 15 s), jitter +-%d ms on 1/3 of hosts, "
         "%zu samples\n\n",
         hosts, SERIES_PER_HOST, steps, hours, jitter, total);

  /* Head appender: chunks of CHUNK_MAX_SAMPLES. */
  size_t per_series = (steps + CHUNK_MAX_SAMPLES - 1) / CHUNK_MAX_SAMPLES;
  chunk_app_t *apps = calloc(nseries * per_series, sizeof *apps);
  if (!apps) die("out of memory");
  double kind_bytes[NKINDS] = {0}, kind_samples[NKINDS] = {0};
  double t0 = now_s();
  for (size_t s = 0; s < nseries; s++) {
    for (size_t i = 0; i < steps; i++) {
      chunk_app_t *a = &apps[s * per_series + i / CHUNK_MAX_SAMPLES];
      if (chunk_app_append(a, ts[s * steps + i], v[s * steps + i]) != 0) die("append failed");
    }
  }
  double t_app = now_s() - t0;
  size_t head_bytes = 0;
  for (size_t s = 0; s < nseries; s++)
    for (size_t c = 0; c < per_series; c++) {
      size_t b = chunk_app_bytes(&apps[s * per_series + c]);
      head_bytes += b;
      kind_bytes[series_kind[s % SERIES_PER_HOST]] += (double)b;
    }
  t0 = now_s();
  uint64_t check = 0;
  for (size_t s = 0; s < nseries; s++)
    for (size_t c = 0; c < per_series; c++) {
      chunk_app_t *a = &apps[s * per_series + c];
      int n = chunk_decode(a->buf, chunk_app_bytes(a), dts, dv, steps);
      if (n <= 0) die("head decode failed");
      check += (uint64_t)dts[n - 1];
    }
  double t_hdec = now_s() - t0;
  for (size_t s = 0; s < nseries; s++) kind_samples[series_kind[s % SERIES_PER_HOST]] += (double)steps;
  printf("head chunks (Gorilla: dod timestamps + XOR values, %d samples a chunk)\n", CHUNK_MAX_SAMPLES);
  printf("  append  %8.1f M samples/s   decode %8.1f M samples/s\n", total / t_app / 1e6, total / t_hdec / 1e6);
  printf("  %-28s %8s\n", "kind", "bytes/sample");
  for (int k = 0; k < NKINDS; k++)
    printf("  %-28s %8.3f\n", kind_names[k], kind_bytes[k] / kind_samples[k]);
  printf("  %-28s %8.3f\n\n", "overall", (double)head_bytes / (double)total);

  /* Sealed chunks at several chunk lengths. */
  size_t lens[] = {120, 240, 480, steps};
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
    size_t clen = lens[li];
    if (clen > steps) continue;
    size_t nch = (steps + clen - 1) / clen;
    blob_t *bl = calloc(nseries * nch, sizeof *bl);
    if (!bl) die("out of memory");
    memset(kind_bytes, 0, sizeof kind_bytes);
    double kind_ts[NKINDS] = {0};
    static tally_t tl[NKINDS][32];
    size_t ntl[NKINDS] = {0};
    t0 = now_s();
    size_t sealed = 0;
    for (size_t s = 0; s < nseries; s++)
      for (size_t c = 0; c < nch; c++) {
        size_t off = c * clen, n = steps - off < clen ? steps - off : clen;
        blob_t *b = &bl[s * nch + c];
        if (chunk_seal(ts + s * steps + off, v + s * steps + off, n, &b->p, &b->len) != 0) die("seal failed");
        sealed += b->len;
        kind_bytes[series_kind[s % SERIES_PER_HOST]] += (double)b->len;
      }
    double t_seal = now_s() - t0;
    /* Decode, three rounds to warm up and take the best. */
    double t_dec = 1e9;
    int rounds = getenv("BENCH_DECODE_ROUNDS") ? atoi(getenv("BENCH_DECODE_ROUNDS")) : 3;
    for (int round = 0; round < rounds; round++) {
      t0 = now_s();
      for (size_t i = 0; i < nseries * nch; i++) {
        int n = chunk_decode(bl[i].p, bl[i].len, dts, dv, steps);
        if (n <= 0) die("sealed decode failed");
        check += (uint64_t)dts[n - 1];
      }
      double t = now_s() - t0;
      if (t < t_dec) t_dec = t;
    }
    /* Verify every chunk bit for bit against the source. */
    for (size_t s = 0; s < nseries; s++)
      for (size_t c = 0; c < nch; c++) {
        size_t off = c * clen;
        blob_t *b = &bl[s * nch + c];
        int n = chunk_decode(b->p, b->len, dts, dv, steps);
        for (int i = 0; i < n; i++)
          if (dts[i] != ts[s * steps + off + i] || memcmp(&dv[i], &v[s * steps + off + i], 8) != 0)
            die("sealed round trip mismatch");
      }
    for (size_t i = 0; i < nseries * nch; i++) {
      char what[96];
      int kd = series_kind[(i / nch) % SERIES_PER_HOST];
      kind_ts[kd] += (double)census(bl[i].p, bl[i].len, what, sizeof what);
      tally(tl[kd], &ntl[kd], 32, what);
    }
    /* zstd: per chunk (kept only when smaller), and over all chunks of a series at once. */
    size_t zcap = ZSTD_compressBound(steps * 20);
    uint8_t *zbuf = malloc(zcap), *cat = malloc(steps * 20 + 64);
    if (!zbuf || !cat) die("out of memory");
    size_t z_chunk = 0, z_series = 0, z_block = 0;
    int level = 3;
    for (size_t s = 0; s < nseries; s++) {
      size_t catlen = 0;
      for (size_t c = 0; c < nch; c++) {
        blob_t *b = &bl[s * nch + c];
        size_t z = ZSTD_compress(zbuf, zcap, b->p, b->len, level);
        z_chunk += ZSTD_isError(z) || z + 1 >= b->len ? b->len : z + 1; /* +1: a flag byte */
        memcpy(cat + catlen, b->p, b->len);
        catlen += b->len;
      }
      size_t z = ZSTD_compress(zbuf, zcap, cat, catlen, level);
      z_series += ZSTD_isError(z) || z >= catlen ? catlen : z;
    }
    /* Whole block (all series' chunks back to back, as a block file would hold them). */
    uint8_t *all = malloc(sealed);
    size_t allcap = ZSTD_compressBound(sealed);
    uint8_t *zall = malloc(allcap);
    if (!all || !zall) die("out of memory");
    size_t at = 0;
    for (size_t i = 0; i < nseries * nch; i++) {
      memcpy(all + at, bl[i].p, bl[i].len);
      at += bl[i].len;
    }
    z_block = ZSTD_compress(zall, allcap, all, sealed, level);
    if (ZSTD_isError(z_block)) z_block = sealed;
    printf("sealed chunks of %zu samples (%zu chunks)\n", clen, nseries * nch);
    printf("  seal    %8.1f M samples/s   decode %8.1f M samples/s\n", total / t_seal / 1e6, total / t_dec / 1e6);
    printf("  %-28s %8s %8s %8s  %s\n", "kind", "B/sample", "bits", "ts bits", "schemes picked (chunks)");
    for (int k = 0; k < NKINDS; k++) {
      printf("  %-28s %8.3f %8.2f %8.2f ", kind_names[k], kind_bytes[k] / kind_samples[k],
             8 * kind_bytes[k] / kind_samples[k], 8 * kind_ts[k] / kind_samples[k]);
      for (size_t j = 0; j < ntl[k]; j++) printf(" %s (%zu);", tl[k][j].name, tl[k][j].count);
      printf("\n");
    }
    printf("  %-28s %8.3f %8.2f\n", "overall", (double)sealed / (double)total, 8.0 * (double)sealed / (double)total);
    printf("  zstd -%d per chunk (if smaller) %.3f B/sample; per series %.3f; whole block %.3f\n\n", level,
           (double)z_chunk / (double)total, (double)z_series / (double)total, (double)z_block / (double)total);
    for (size_t i = 0; i < nseries * nch; i++) free(bl[i].p);
    free(bl);
    free(zbuf);
    free(cat);
    free(all);
    free(zall);
  }
  for (size_t i = 0; i < nseries * per_series; i++) chunk_app_free(&apps[i]);
  free(apps);
  free(ts);
  free(v);
  free(dts);
  free(dv);
  printf("(checksum %llu)\n", (unsigned long long)check);
  return 0;
}
