/*
 * bench_block — disk footprint and read speed of on-disk blocks on node-exporter-like data.
 *
 * The data model is the one of ../shared/bench/gen.py (same hosts × 18 series, labels,
 * value precision and dynamics: CPU counters in hundredths, memory in KiB multiples, byte
 * counters, 2-decimal load averages, per-host scrape phase, 15 s interval), re-implemented
 * in C with its own deterministic RNG, so the figures are for the same kind of data, not
 * byte-identical values.
 *
 *   bench_block [--hosts N] [--hours H] [--dir DIR]
 *
 * Reports: bytes/sample of one block over the whole span (what compaction produces), split
 * into index and chunks; the same after writing 2 h + rest blocks and compacting them;
 * write and compaction throughput; select + decode throughput for one series and for all
 * series of one metric; 5-minute rollup size.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "tsdb/block.h"
#include "tsdb/chunk.h"

#define SERIES_PER_HOST 18
#define INTERVAL_MS 15000

typedef struct {
  uint64_t s;
} rng_t;

static double rnd(rng_t *r) { /* splitmix64 → [0,1) */
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0;
}
static double uniform(rng_t *r, double a, double b) { return a + (b - a) * rnd(r); }
static int randrange(rng_t *r, int n) { return (int)(rnd(r) * n); }

static const char *regions[][5] = {
    {"us-east-1", "us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"},
    {"us-west-1", "us-west-1a", "us-west-1b", NULL},
    {"us-west-2", "us-west-2a", "us-west-2b", "us-west-2c", NULL},
    {"eu-west-1", "eu-west-1a", "eu-west-1b", "eu-west-1c", NULL},
    {"eu-central-1", "eu-central-1a", "eu-central-1b", NULL},
    {"ap-southeast-1", "ap-southeast-1a", "ap-southeast-1b", NULL},
    {"ap-southeast-2", "ap-southeast-2a", "ap-southeast-2b", NULL},
    {"ap-northeast-1", "ap-northeast-1a", "ap-northeast-1c", NULL},
    {"sa-east-1", "sa-east-1a", "sa-east-1b", "sa-east-1c", NULL},
};
static const char *oses[] = {"Ubuntu22.04LTS", "Ubuntu20.04LTS", "Debian12", "Debian11", "RHEL9"};
static const char *services[] = {"api", "auth", "billing", "cache", "checkout", "cron", "db", "frontend", "gateway",
                                 "ingest", "kafka", "mail", "metrics", "queue", "search", "storage", "stream",
                                 "upload", "web", "worker"};
static const int mem_gib[] = {4, 8, 8, 16, 16, 16, 32, 32, 64, 128};
static const int fs_gib[] = {40, 80, 100, 200, 500, 1000};
static const char *cpu_modes[] = {"idle", "iowait", "system", "user"};

typedef struct {
  rng_t rng;
  char hostname[16], rack[8], instance[24];
  const char *region, *dc, *os, *service;
  int64_t phase;
  double util, rx_base, tx_base, dw_base, load_bias, load1, load5, load15;
  int64_t ticks[8], mem_total_kb, mem_avail_kb, rx, tx, dr, dw, fs_size, fs_avail;
} host_t;

static void host_init(host_t *h, int idx) {
  h->rng.s = 0x1234567ULL * (uint64_t)(idx + 1);
  rng_t *r = &h->rng;
  snprintf(h->hostname, sizeof h->hostname, "host_%04d", idx);
  int reg = randrange(r, 9);
  int ndc = 0;
  while (ndc < 4 && regions[reg][1 + ndc]) ndc++;
  h->region = regions[reg][0];
  h->dc = regions[reg][1 + randrange(r, ndc)];
  snprintf(h->rack, sizeof h->rack, "%d", randrange(r, 100));
  h->os = oses[randrange(r, 5)];
  h->service = services[randrange(r, 20)];
  snprintf(h->instance, sizeof h->instance, "%s:9100", h->hostname);
  h->phase = randrange(r, INTERVAL_MS);
  double uptime = uniform(r, 3600, 200 * 86400);
  h->util = uniform(r, 0.03, 0.7);
  for (int c = 0; c < 2; c++) {
    int64_t user = (int64_t)(uptime * 100 * h->util * 0.72), sys = (int64_t)(uptime * 100 * h->util * 0.2);
    int64_t iow = (int64_t)(uptime * 100 * h->util * 0.08), idle = (int64_t)(uptime * 100) - user - sys - iow;
    h->ticks[4 * c] = idle;
    h->ticks[4 * c + 1] = iow;
    h->ticks[4 * c + 2] = sys;
    h->ticks[4 * c + 3] = user;
  }
  h->mem_total_kb = (int64_t)mem_gib[randrange(r, 10)] * 1048576 - (60000 + randrange(r, 190000));
  h->mem_avail_kb = (int64_t)(h->mem_total_kb * uniform(r, 0.2, 0.85));
  h->rx_base = pow(10, uniform(r, 3.5, 6.8));
  h->tx_base = h->rx_base * uniform(r, 0.2, 1.5);
  h->rx = (int64_t)(h->rx_base * uptime * uniform(r, 0.5, 1.5));
  h->tx = (int64_t)(h->tx_base * uptime * uniform(r, 0.5, 1.5));
  h->dw_base = pow(10, uniform(r, 3.5, 6.3));
  h->dw = (int64_t)(h->dw_base * uptime * uniform(r, 0.5, 1.5)) / 512 * 512;
  h->dr = (int64_t)(h->dw_base * uptime * uniform(r, 0.1, 2.0)) / 512 * 512;
  h->fs_size = (int64_t)fs_gib[randrange(r, 6)] * 1073741824LL;
  h->fs_avail = (int64_t)(h->fs_size * uniform(r, 0.15, 0.85)) / 4096 * 4096;
  h->load_bias = uniform(r, 0, 0.6);
  h->load1 = h->load5 = h->load15 = h->util * 2 + h->load_bias;
}

static double two_dec(double x) { /* what "%.2f" then parsing gives */
  char b[64];
  snprintf(b, sizeof b, "%.2f", x);
  return strtod(b, NULL);
}

/* One scrape: the 18 values in the series order of gen.py. */
static void host_step(host_t *h, double out[SERIES_PER_HOST]) {
  rng_t *r = &h->rng;
  double u = h->util + (rnd(r) - 0.5) * 0.04;
  if (rnd(r) < 0.002) u += 0.3;
  if (u < 0.01) u = 0.02 - u;
  else if (u > 0.99) u = 1.98 - u;
  h->util = u;
  for (int c = 0; c < 2; c++) {
    double uc = u + (rnd(r) - 0.5) * 0.1;
    uc = uc < 0 ? 0 : uc > 1 ? 1 : uc;
    double busy = 1500 * uc;
    int64_t user = (int64_t)(busy * 0.72 * (0.85 + 0.3 * rnd(r)));
    int64_t sys = (int64_t)(busy * 0.2 * (0.7 + 0.6 * rnd(r)));
    int64_t iow = (int64_t)(busy * 0.16 * rnd(r));
    int64_t idle = 1500 - user - sys - iow + (int64_t)(rnd(r) * 5) - 2;
    if (idle < 0) idle = 0;
    h->ticks[4 * c] += idle;
    h->ticks[4 * c + 1] += iow;
    h->ticks[4 * c + 2] += sys;
    h->ticks[4 * c + 3] += user;
    for (int k = 0; k < 4; k++) out[4 * c + k] = (double)h->ticks[4 * c + k] / 100.0;
  }
  int64_t tot = h->mem_total_kb;
  int64_t a = h->mem_avail_kb + (int64_t)((rnd(r) - 0.5) * (double)tot * 0.006);
  int64_t lo = tot * 3 / 100, hi = tot * 95 / 100;
  if (a < lo) a = lo + (lo - a);
  else if (a > hi) a = hi - (a - hi);
  h->mem_avail_kb = a;
  out[8] = (double)(tot * 1024);
  out[9] = (double)(a * 1024);
  h->rx += (int64_t)(h->rx_base * 15 * (0.4 + 1.2 * rnd(r)) * (0.5 + u));
  h->tx += (int64_t)(h->tx_base * 15 * (0.4 + 1.2 * rnd(r)) * (0.5 + u));
  out[10] = (double)h->rx;
  out[11] = (double)h->tx;
  int64_t dr = rnd(r) < 0.8 ? (int64_t)(rnd(r) * 65536) / 512 * 512 : (int64_t)(h->dw_base * 15 * 3 * rnd(r)) / 512 * 512;
  int64_t dw = (int64_t)(h->dw_base * 15 * (0.3 + 1.4 * rnd(r))) / 512 * 512;
  h->dr += dr;
  h->dw += dw;
  out[12] = (double)h->dr;
  out[13] = (double)h->dw;
  int64_t fa = h->fs_avail - (dw / 8) / 4096 * 4096;
  if (rnd(r) < 0.001) fa += (int64_t)(h->fs_size * 0.05 * rnd(r)) / 4096 * 4096;
  if (fa < h->fs_size / 20) fa += h->fs_size / 10 / 4096 * 4096;
  else if (fa > h->fs_size) fa = h->fs_size - 4096 * 1000;
  h->fs_avail = fa;
  out[14] = (double)fa;
  double inst = u * 2 * (0.6 + 0.8 * rnd(r)) + h->load_bias * rnd(r);
  h->load1 = h->load1 * 0.778800783071405 + inst * (1 - 0.778800783071405);
  h->load5 = h->load5 * 0.951229424500714 + h->load1 * (1 - 0.951229424500714);
  h->load15 = h->load15 * 0.983471453821617 + h->load1 * (1 - 0.983471453821617);
  out[15] = two_dec(h->load1);
  out[16] = two_dec(h->load5);
  out[17] = two_dec(h->load15);
}

/* ---- dataset ----------------------------------------------------------------------------- */

typedef struct {
  tsdb_label_t lab[14];
  size_t nlab;
  int host;
  double *v; /* steps values */
} bseries_t;

static int nsteps;
static int64_t start_ms;
static host_t *hosts;

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const tsdb_label_t *)a)->name, ((const tsdb_label_t *)b)->name);
}

static int cmp_series(const void *a, const void *b) {
  const bseries_t *x = a, *y = b;
  size_t n = x->nlab < y->nlab ? x->nlab : y->nlab;
  for (size_t i = 0; i < n; i++) {
    int c = strcmp(x->lab[i].name, y->lab[i].name);
    if (c) return c;
    c = strcmp(x->lab[i].value, y->lab[i].value);
    if (c) return c;
  }
  return x->nlab < y->nlab ? -1 : x->nlab > y->nlab;
}

static void series_labels(bseries_t *s, const host_t *h, int k) {
  static const char *names[] = {"node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
                                "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
                                "node_disk_read_bytes_total", "node_disk_written_bytes_total",
                                "node_filesystem_avail_bytes", "node_load1", "node_load5", "node_load15"};
  static const char *cpus[] = {"0", "1"};
  size_t n = 0;
  s->lab[n++] = (tsdb_label_t){"hostname", h->hostname};
  s->lab[n++] = (tsdb_label_t){"region", h->region};
  s->lab[n++] = (tsdb_label_t){"datacenter", h->dc};
  s->lab[n++] = (tsdb_label_t){"rack", h->rack};
  s->lab[n++] = (tsdb_label_t){"os", h->os};
  s->lab[n++] = (tsdb_label_t){"service", h->service};
  s->lab[n++] = (tsdb_label_t){"job", "node"};
  s->lab[n++] = (tsdb_label_t){"instance", h->instance};
  if (k < 8) {
    s->lab[n++] = (tsdb_label_t){"__name__", "node_cpu_seconds_total"};
    s->lab[n++] = (tsdb_label_t){"cpu", cpus[k / 4]};
    s->lab[n++] = (tsdb_label_t){"mode", cpu_modes[k % 4]};
  } else {
    s->lab[n++] = (tsdb_label_t){"__name__", names[k - 8]};
    if (k >= 10 && k <= 11) s->lab[n++] = (tsdb_label_t){"device", "eth0"};
    if (k >= 12 && k <= 13) s->lab[n++] = (tsdb_label_t){"device", "sda"};
    if (k == 14) {
      s->lab[n++] = (tsdb_label_t){"device", "/dev/sda1"};
      s->lab[n++] = (tsdb_label_t){"fstype", "ext4"};
      s->lab[n++] = (tsdb_label_t){"mountpoint", "/"};
    }
  }
  qsort(s->lab, n, sizeof s->lab[0], cmp_label);
  s->nlab = n;
}

typedef struct {
  bseries_t *s;
  size_t n, i;
  int64_t mint, maxt;
  int64_t *ts;
  double *v;
} bsrc_t;

static int bsrc_next(void *ctx, const char **tenant, const tsdb_label_t **labels, size_t *nlabels,
                     const int64_t **ts, const double **v, size_t *n) {
  bsrc_t *c = ctx;
  for (; c->i < c->n; c->i++) {
    const bseries_t *s = &c->s[c->i];
    size_t k = 0;
    for (int st = 0; st < nsteps; st++) {
      int64_t t = start_ms + (int64_t)st * INTERVAL_MS + hosts[s->host].phase;
      if (t < c->mint || t > c->maxt) continue;
      c->ts[k] = t;
      c->v[k++] = s->v[st];
    }
    if (!k) continue;
    *tenant = "";
    *labels = s->lab;
    *nlabels = s->nlab;
    *ts = c->ts;
    *v = c->v;
    *n = k;
    c->i++;
    return 1;
  }
  return 0;
}

static void die(const char *what, const char *err) {
  fprintf(stderr, "bench_block: %s: %s\n", what, err);
  exit(1);
}

/* Sealed size per metric name when each series is one chunk: where the bytes go. */
static void per_metric(const bseries_t *ser, size_t nseries) {
  int64_t *ts = malloc((size_t)nsteps * sizeof *ts);
  const char *names[32];
  double bytes[32] = {0};
  size_t count[32] = {0};
  int nn = 0;
  for (size_t i = 0; i < nseries; i++) {
    const char *name = "";
    for (size_t k = 0; k < ser[i].nlab; k++)
      if (!strcmp(ser[i].lab[k].name, "__name__")) name = ser[i].lab[k].value;
    int j = 0;
    while (j < nn && strcmp(names[j], name)) j++;
    if (j == nn && nn < 32) names[nn++] = name;
    for (int st = 0; st < nsteps; st++) ts[st] = start_ms + (int64_t)st * INTERVAL_MS + hosts[ser[i].host].phase;
    uint8_t *out;
    size_t len;
    if (chunk_seal(ts, ser[i].v, (size_t)nsteps, &out, &len)) die("seal", "failed");
    free(out);
    bytes[j] += (double)len;
    count[j]++;
  }
  for (int j = 0; j < nn; j++)
    printf("  %-36s %6zu series  %.3f bytes/sample\n", names[j], count[j], bytes[j] / (double)count[j] / nsteps);
  free(ts);
}

static double now_s(void) { return (double)md_mono_ns() / 1e9; }

static block_t *open_block(const char *dir, const char *name) {
  char path[1024], err[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  block_t *b;
  if (block_open(path, &b, err, sizeof err)) die("open", err);
  return b;
}

/* Every sample read back must be the one written (bit for bit): a size figure is only
 * worth quoting for a lossless block. Returns the number of mismatching series. */
static size_t verify(block_t *b, const bseries_t *ser, size_t nseries) {
  block_iter_t *it;
  char err[256];
  if (block_select(b, "", NULL, 0, INT64_MIN, INT64_MAX, &it, err, sizeof err)) die("select", err);
  size_t bad = 0, i = 0;
  for (; block_iter_next(it) == 1 && i < nseries; i++) {
    const int64_t *ts;
    const double *v;
    size_t n;
    if (block_iter_samples(it, BLOCK_AGG_RAW, &ts, &v, &n)) die("samples", "corrupt");
    if (n != (size_t)nsteps || memcmp(v, ser[i].v, n * sizeof *v) != 0) bad++;
  }
  block_iter_free(it);
  return bad + (nseries - i);
}

static uint64_t file_size(const char *dir, const char *name, const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/%s", dir, name, file);
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Selects with the matchers and decodes every sample; returns samples decoded. */
static uint64_t decode_all(block_t *b, const tsdb_matcher_t *m, size_t nm, int64_t mint, int64_t maxt) {
  block_iter_t *it;
  char err[256];
  if (block_select(b, "", m, nm, mint, maxt, &it, err, sizeof err)) die("select", err);
  uint64_t total = 0;
  while (block_iter_next(it) == 1) {
    const int64_t *ts;
    const double *v;
    size_t n;
    if (block_iter_samples(it, BLOCK_AGG_RAW, &ts, &v, &n)) die("samples", "corrupt");
    total += n;
  }
  block_iter_free(it);
  return total;
}

int main(int argc, char **argv) {
  int nhosts = 1000;
  double hours = 3;
  char dir[512] = "";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--hosts") && i + 1 < argc) nhosts = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--hours") && i + 1 < argc) hours = atof(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) snprintf(dir, sizeof dir, "%s", argv[++i]);
    else {
      fprintf(stderr, "usage: bench_block [--hosts N] [--hours H] [--dir DIR]\n");
      return 2;
    }
  }
  bool own_dir = !dir[0];
  if (own_dir) {
    snprintf(dir, sizeof dir, "/tmp/bench_block.XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp", dir);
  }
  nsteps = (int)(hours * 3600 * 1000 / INTERVAL_MS + 0.5);
  start_ms = 1700006400000LL; /* a 2 h boundary */
  hosts = calloc((size_t)nhosts, sizeof *hosts);
  size_t nseries = (size_t)nhosts * SERIES_PER_HOST;
  bseries_t *ser = calloc(nseries, sizeof *ser);
  double *vals = malloc(nseries * (size_t)nsteps * sizeof *vals);
  if (!hosts || !ser || !vals) die("alloc", "out of memory");
  double t0 = now_s();
  for (int h = 0; h < nhosts; h++) {
    host_init(&hosts[h], h);
    for (int k = 0; k < SERIES_PER_HOST; k++) {
      bseries_t *s = &ser[(size_t)h * SERIES_PER_HOST + k];
      series_labels(s, &hosts[h], k);
      s->host = h;
      s->v = vals + ((size_t)h * SERIES_PER_HOST + k) * (size_t)nsteps;
    }
    double out[SERIES_PER_HOST];
    for (int st = 0; st < nsteps; st++) {
      host_step(&hosts[h], out);
      for (int k = 0; k < SERIES_PER_HOST; k++) ser[(size_t)h * SERIES_PER_HOST + k].v[st] = out[k];
    }
  }
  qsort(ser, nseries, sizeof *ser, cmp_series);
  uint64_t samples = (uint64_t)nseries * (uint64_t)nsteps;
  int64_t maxt = start_ms + (int64_t)nsteps * INTERVAL_MS - 1;
  printf("dataset: %d hosts x %d series, %d steps of 15 s: %zu series, %llu samples (generated in %.1f s)\n", nhosts,
         SERIES_PER_HOST, nsteps, nseries, (unsigned long long)samples, now_s() - t0);

  if (getenv("BENCH_PER_METRIC")) per_metric(ser, nseries);
  int64_t *tsbuf = malloc((size_t)nsteps * sizeof *tsbuf);
  double *vbuf = malloc((size_t)nsteps * sizeof *vbuf);
  char err[256], name[64];
  /* 1. one block over the whole span */
  bsrc_t ctx = {ser, nseries, 0, start_ms, maxt, tsbuf, vbuf};
  block_source_t src = {bsrc_next, &ctx};
  t0 = now_s();
  if (block_write(dir, start_ms, maxt, 0, 0, &src, name, sizeof name, err, sizeof err)) die("write", err);
  double wt = now_s() - t0;
  block_t *whole = open_block(dir, name);
  uint64_t idx = file_size(dir, name, "index"), chk = file_size(dir, name, "chunks"),
           meta = file_size(dir, name, "meta.json");
  printf("one block: %llu bytes = %.3f bytes/sample (index %llu = %.3f B/sample, %.1f B/series; chunks %llu = %.3f "
         "B/sample; meta %llu)\n",
         (unsigned long long)block_bytes(whole), (double)block_bytes(whole) / (double)samples,
         (unsigned long long)idx, (double)idx / (double)samples, (double)idx / (double)nseries,
         (unsigned long long)chk, (double)chk / (double)samples, (unsigned long long)meta);
  size_t bad = verify(whole, ser, nseries);
  if (bad) printf("WARNING: %zu series did not read back exactly: the size above is not valid\n", bad);
  else printf("verified: every sample reads back bit for bit\n");
  printf("write: %.2f s, %.2f M samples/s\n", wt, (double)samples / wt / 1e6);

  /* 2. head-sized blocks (2 h) compacted */
  block_t *parts[8];
  int nparts = 0;
  t0 = now_s();
  for (int64_t a = start_ms; a <= maxt && nparts < 8; a += 2 * 3600 * 1000) {
    int64_t z = a + 2 * 3600 * 1000 - 1;
    bsrc_t c2 = {ser, nseries, 0, a, z, tsbuf, vbuf};
    block_source_t s2 = {bsrc_next, &c2};
    if (block_write(dir, a, z, 0, 0, &s2, name, sizeof name, err, sizeof err)) die("write", err);
    parts[nparts++] = open_block(dir, name);
  }
  uint64_t pbytes = 0;
  for (int i = 0; i < nparts; i++) pbytes += block_bytes(parts[i]);
  t0 = now_s();
  if (block_compact(parts, (size_t)nparts, dir, NULL, name, sizeof name, err, sizeof err)) die("compact", err);
  double ct = now_s() - t0;
  block_t *comp = open_block(dir, name);
  printf("%d 2h blocks: %.3f bytes/sample; compacted: %.3f bytes/sample (%.2f s, %.2f M samples/s)\n", nparts,
         (double)pbytes / (double)samples, (double)block_bytes(comp) / (double)samples, ct,
         (double)samples / ct / 1e6);

  /* 3. reads */
  t0 = now_s();
  uint64_t n = decode_all(whole, NULL, 0, INT64_MIN, INT64_MAX);
  double rt = now_s() - t0;
  printf("decode all: %llu samples in %.2f s = %.1f M samples/s\n", (unsigned long long)n, rt, (double)n / rt / 1e6);
  tsdb_matcher_t one[2] = {{TSDB_MATCH_EQ, "__name__", "node_load1"}, {TSDB_MATCH_EQ, "hostname", "host_0042"}};
  t0 = now_s();
  int reps = 2000;
  n = 0;
  for (int i = 0; i < reps; i++) n += decode_all(whole, one, 2, INT64_MIN, INT64_MAX);
  rt = now_s() - t0;
  printf("one series (select + decode %llu samples): %.1f us per query\n", (unsigned long long)(n / (uint64_t)reps),
         rt / reps * 1e6);
  tsdb_matcher_t metric = {TSDB_MATCH_EQ, "__name__", "node_cpu_seconds_total"};
  t0 = now_s();
  n = decode_all(whole, &metric, 1, start_ms, start_ms + 3600 * 1000);
  rt = now_s() - t0;
  printf("node_cpu_seconds_total over 1 h: %llu samples in %.3f s = %.1f M samples/s\n", (unsigned long long)n, rt,
         (double)n / rt / 1e6);

  /* 4. rollups */
  t0 = now_s();
  if (block_downsample(whole, 5 * 60 * 1000, dir, name, sizeof name, err, sizeof err)) die("downsample", err);
  double dt = now_s() - t0;
  block_t *r5 = open_block(dir, name);
  printf("5 min rollup: %llu bytes (%.1f%% of raw) in %.2f s\n", (unsigned long long)block_bytes(r5),
         100.0 * (double)block_bytes(r5) / (double)block_bytes(whole), dt);

  block_unref(r5);
  block_unref(comp);
  for (int i = 0; i < nparts; i++) block_unref(parts[i]);
  block_unref(whole);
  if (own_dir) md_rm_rf(dir);
  free(tsbuf);
  free(vbuf);
  free(vals);
  free(ser);
  free(hosts);
  return 0;
}
