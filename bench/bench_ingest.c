/*
 * bench_ingest — parser throughput (and parse + tsdb_append throughput) per protocol on a
 * generated node_exporter-like dataset, the model of ../shared/bench/gen.py: N hosts with
 * the TSBS devops host labels (hostname, region, datacenter, rack, os, service, job,
 * instance), 18 series each (node_cpu_seconds_total x8, memory x2, network x2, disk x2,
 * filesystem x1, load x3), values with the exporter's precision, one sample per series per
 * 15 s scrape, millisecond timestamps.
 *
 *   bench_ingest [hosts=1000] [scrapes=20] [--no-append]
 *   BENCH_INGEST_ONLY=0..4 one protocol; BENCH_INGEST_PUSH_SCRAPES=k scrapes per push (1);
 *   BENCH_INGEST_CACHE=0|1 appends without / with the series cache only (default: both)
 *
 * Payloads are built in memory first (prom text, line protocol, remote_write snappy+protobuf,
 * JSON lines), in batches of one scrape of 100 hosts (1,800 samples, what one push carries),
 * then each protocol is parsed batch by batch and timed with the process CPU clock on one
 * thread. Figures: samples per CPU-second and MB (input bytes) per CPU-second. With append,
 * every batch also goes through ingest_push (parse + tsdb_append, as the push endpoints do)
 * into a fresh database in a temporary directory, without and with the series cache.
 */
#include <math.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest/ingest.h"
#include "ingest/remote.pb-c.h"

#define SERIES_PER_HOST 18
#define HOSTS_PER_BATCH 100

static const char *const regions[] = {"us-east-1",      "us-west-1",      "us-west-2",
                                      "eu-west-1",      "eu-central-1",   "ap-southeast-1",
                                      "ap-southeast-2", "ap-northeast-1", "sa-east-1"};
static const char *const oses[] = {"Ubuntu22.04LTS", "Ubuntu20.04LTS", "Debian12", "Debian11", "RHEL9"};
static const char *const services[] = {
    "api",   "auth", "billing", "cache", "checkout", "cron",    "db",     "frontend", "gateway", "ingest",
    "kafka", "mail", "metrics", "queue", "search",   "storage", "stream", "upload",   "web",     "worker"};
static const char *const modes[] = {"idle", "iowait", "system", "user"};

typedef struct {
  char name[48];
  char extra[96]; /* extra labels rendered as ,k="v" (prom form) */
  const char *ek[3], *ev[3];
  int nextra;
} series_def_t;

static series_def_t defs[SERIES_PER_HOST];

static void init_defs(void) {
  int k = 0;
  for (int cpu = 0; cpu < 2; cpu++)
    for (int m = 0; m < 4; m++) {
      series_def_t *d = &defs[k++];
      snprintf(d->name, sizeof d->name, "node_cpu_seconds_total");
      d->ek[0] = "cpu";
      d->ev[0] = cpu ? "1" : "0";
      d->ek[1] = "mode";
      d->ev[1] = modes[m];
      d->nextra = 2;
    }
  const char *simple[] = {"node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes"};
  for (int i = 0; i < 2; i++)
    snprintf(defs[k++].name, 48, "%s", simple[i]);
  const char *net[] = {"node_network_receive_bytes_total", "node_network_transmit_bytes_total"};
  for (int i = 0; i < 2; i++) {
    snprintf(defs[k].name, 48, "%s", net[i]);
    defs[k].ek[0] = "device";
    defs[k].ev[0] = "eth0";
    defs[k++].nextra = 1;
  }
  const char *disk[] = {"node_disk_read_bytes_total", "node_disk_written_bytes_total"};
  for (int i = 0; i < 2; i++) {
    snprintf(defs[k].name, 48, "%s", disk[i]);
    defs[k].ek[0] = "device";
    defs[k].ev[0] = "sda";
    defs[k++].nextra = 1;
  }
  snprintf(defs[k].name, 48, "node_filesystem_avail_bytes");
  defs[k].ek[0] = "device", defs[k].ev[0] = "/dev/sda1";
  defs[k].ek[1] = "fstype", defs[k].ev[1] = "ext4";
  defs[k].ek[2] = "mountpoint", defs[k].ev[2] = "/";
  defs[k++].nextra = 3;
  const char *load[] = {"node_load1", "node_load5", "node_load15"};
  for (int i = 0; i < 3; i++)
    snprintf(defs[k++].name, 48, "%s", load[i]);
}

typedef struct {
  char hostname[16], region[20], dc[24], rack[8], os[20], service[12], instance[24];
  double v[SERIES_PER_HOST];
  int64_t phase;
} host_t;

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void host_init(host_t *h, int i) {
  snprintf(h->hostname, sizeof h->hostname, "host_%04d", i);
  int r = (int)(rnd() % 9);
  snprintf(h->region, sizeof h->region, "%s", regions[r]);
  snprintf(h->dc, sizeof h->dc, "%s%c", regions[r], 'a' + (int)(rnd() % 3));
  snprintf(h->rack, sizeof h->rack, "%d", (int)(rnd() % 100));
  snprintf(h->os, sizeof h->os, "%s", oses[rnd() % 5]);
  snprintf(h->service, sizeof h->service, "%s", services[rnd() % 20]);
  snprintf(h->instance, sizeof h->instance, "%s:9100", h->hostname);
  for (int s = 0; s < SERIES_PER_HOST; s++)
    h->v[s] = (double)(rnd() % 100000000) / 100.0;
  h->phase = (int64_t)(rnd() % 15000);
}

static void host_step(host_t *h) {
  for (int s = 0; s < SERIES_PER_HOST; s++) {
    bool counter = strstr(defs[s].name, "_total") != NULL;
    double d = (double)(rnd() % 1500) / 100.0;
    if (counter)
      h->v[s] += d;
    else
      h->v[s] = fabs(h->v[s] + (rnd() & 1 ? d : -d));
    h->v[s] = round(h->v[s] * 100) / 100;
  }
}

typedef struct {
  sb_t data;
  size_t *off, *len, n, cap;
} payloads_t;

static void pl_push(payloads_t *p, size_t off, size_t len) {
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 256;
    p->off = realloc(p->off, p->cap * sizeof *p->off);
    p->len = realloc(p->len, p->cap * sizeof *p->len);
    if (!p->off || !p->len) abort();
  }
  p->off[p->n] = off;
  p->len[p->n++] = len;
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef int (*parse_fn)(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *r);

/* Parses every payload; with db, parses and appends through ingest_push (with the series
 * cache when cache is not NULL, as the server's push endpoints do). */
static int run(const char *label, payloads_t *p, parse_fn fn, size_t expect_samples, tsdb_t *db,
               ingest_refcache_t *cache, const char *protocol) {
  tsdb_batch_t *b = tsdb_batch_new();
  ingest_opts_t o = {.default_ts = 0, .precision = INGEST_PREC_MS};
  size_t samples = 0, bytes = 0;
  double t0 = cpu_seconds();
  for (size_t i = 0; i < p->n; i++) {
    tsdb_batch_reset(b);
    ingest_result_t res;
    tsdb_append_result_t ar;
    int arc = 0, rc;
    if (db) {
      ingest_push_t in = {db, "bench", cache, protocol, fn, p->data.buf + p->off[i], p->len[i], &o, b};
      rc = ingest_push(&in, &res, &ar, &arc);
    } else {
      rc = fn(p->data.buf + p->off[i], p->len[i], &o, b, &res);
    }
    if (rc) {
      fprintf(stderr, "%s: batch %zu failed (%d): %s\n", label, i, rc,
              res.nerrors ? res.errors[0].message : "");
      tsdb_batch_free(b);
      return 1;
    }
    if (arc || (db && ar.samples_added != res.samples)) {
      fprintf(stderr, "%s: append failed\n", label);
      tsdb_batch_free(b);
      return 1;
    }
    samples += res.samples;
    bytes += p->len[i];
  }
  double dt = cpu_seconds() - t0;
  tsdb_batch_free(b);
  if (samples != expect_samples) {
    fprintf(stderr, "%s: parsed %zu samples, expected %zu\n", label, samples, expect_samples);
    return 1;
  }
  printf("%-40s %10zu samples %8.1f MB  %6.3f cpu-s  %7.2f M samples/cpu-s  %7.1f MB/cpu-s\n", label, samples,
         bytes / 1e6, dt, samples / dt / 1e6, bytes / dt / 1e6);
  return 0;
}

static int rw_parse(const char *p, size_t n, const ingest_opts_t *o, tsdb_batch_t *b, ingest_result_t *r) {
  return ingest_parse_remote_write(p, n, o, b, r);
}

int main(int argc, char **argv) {
  int hosts = argc > 1 ? atoi(argv[1]) : 1000;
  int scrapes = argc > 2 ? atoi(argv[2]) : 20;
  bool append = !(argc > 3 && strcmp(argv[3], "--no-append") == 0);
  if (hosts <= 0 || scrapes <= 0) {
    fprintf(stderr, "usage: bench_ingest [hosts] [scrapes] [--no-append]\n");
    return 2;
  }
  init_defs();
  host_t *h = calloc((size_t)hosts, sizeof *h);
  if (!h) return 1;
  for (int i = 0; i < hosts; i++)
    host_init(&h[i], i);
  payloads_t prom = {0}, influx = {0}, rw = {0}, jsonl = {0};
  int64_t t0 = 1700000000000LL;
  sb_t raw = {0};
  /* BENCH_INGEST_PUSH_SCRAPES=k: each push holds k consecutive scrapes of its 100 hosts (the
   * HTTP bench dataset's ~10,000-sample requests repeat each series ~3 times). */
  const char *ps = getenv("BENCH_INGEST_PUSH_SCRAPES");
  int per_push = ps && atoi(ps) > 0 ? atoi(ps) : 1;
  for (int s0 = 0; s0 < scrapes; s0 += per_push) {
    int s1 = s0 + per_push < scrapes ? s0 + per_push : scrapes;
    for (int hb = 0; hb < hosts; hb += HOSTS_PER_BATCH) {
      size_t po = prom.data.len, io = influx.data.len, jo = jsonl.data.len;
      int he = hb + HOSTS_PER_BATCH < hosts ? hb + HOSTS_PER_BATCH : hosts;
      Mdrw__WriteRequest wr = MDRW__WRITE_REQUEST__INIT;
      size_t nts = (size_t)(he - hb) * SERIES_PER_HOST * (size_t)(s1 - s0);
      Mdrw__TimeSeries *tss = calloc(nts, sizeof *tss);
      Mdrw__TimeSeries **tsp = calloc(nts, sizeof *tsp);
      Mdrw__Label *lbls = calloc(nts * 12, sizeof *lbls);
      Mdrw__Label **lblp = calloc(nts * 12, sizeof *lblp);
      Mdrw__Sample *smp = calloc(nts, sizeof *smp);
      Mdrw__Sample **smpp = calloc(nts, sizeof *smpp);
      if (!tss || !tsp || !lbls || !lblp || !smp || !smpp) return 1;
      size_t ti = 0;
      for (int s = s0; s < s1; s++)
        for (int i = hb; i < he; i++) {
          host_t *x = &h[i];
          host_step(x);
          int64_t ts = t0 + (int64_t)s * 15000 + x->phase;
          for (int k = 0; k < SERIES_PER_HOST; k++) {
            series_def_t *d = &defs[k];
            /* Prometheus text */
            sb_printf(
                &prom.data,
                "%s{hostname=\"%s\",region=\"%s\",datacenter=\"%s\",rack=\"%s\",os=\"%s\",service=\"%s\","
                "job=\"node\",instance=\"%s\"",
                d->name, x->hostname, x->region, x->dc, x->rack, x->os, x->service, x->instance);
            for (int e = 0; e < d->nextra; e++)
              sb_printf(&prom.data, ",%s=\"%s\"", d->ek[e], d->ev[e]);
            sb_printf(&prom.data, "} %.2f %lld\n", x->v[k], (long long)ts);
            /* line protocol: tags sorted by key, field "value" */
            const char *tk[12], *tv[12];
            int nt = 0;
            tk[nt] = "datacenter", tv[nt++] = x->dc;
            for (int e = 0; e < d->nextra; e++)
              tk[nt] = d->ek[e], tv[nt++] = d->ev[e];
            tk[nt] = "hostname", tv[nt++] = x->hostname;
            tk[nt] = "instance", tv[nt++] = x->instance;
            tk[nt] = "job", tv[nt++] = "node";
            tk[nt] = "os", tv[nt++] = x->os;
            tk[nt] = "rack", tv[nt++] = x->rack;
            tk[nt] = "region", tv[nt++] = x->region;
            tk[nt] = "service", tv[nt++] = x->service;
            for (int a = 1; a < nt; a++)
              for (int c = a; c > 0 && strcmp(tk[c - 1], tk[c]) > 0; c--) {
                const char *t = tk[c];
                tk[c] = tk[c - 1], tk[c - 1] = t;
                t = tv[c];
                tv[c] = tv[c - 1], tv[c - 1] = t;
              }
            sb_puts(&influx.data, d->name);
            for (int e = 0; e < nt; e++)
              sb_printf(&influx.data, ",%s=%s", tk[e], tv[e]);
            sb_printf(&influx.data, " value=%.2f %lld\n", x->v[k], (long long)ts);
            /* JSON lines */
            sb_printf(&jsonl.data, "{\"metric\":{\"__name__\":\"%s\"", d->name);
            for (int e = 0; e < nt; e++)
              sb_printf(&jsonl.data, ",\"%s\":\"%s\"", tk[e], tv[e]);
            sb_printf(&jsonl.data, "},\"values\":[%.2f],\"timestamps\":[%lld]}\n", x->v[k], (long long)ts);
            /* remote_write */
            Mdrw__TimeSeries *T = &tss[ti];
            mdrw__time_series__init(T);
            T->labels = &lblp[ti * 12];
            mdrw__label__init(&lbls[ti * 12]);
            lbls[ti * 12].name = "__name__";
            lbls[ti * 12].value = d->name;
            lblp[ti * 12] = &lbls[ti * 12];
            T->n_labels = 1;
            for (int e = 0; e < nt; e++) {
              Mdrw__Label *L = &lbls[ti * 12 + 1 + e];
              mdrw__label__init(L);
              L->name = (char *)tk[e];
              L->value = (char *)tv[e];
              lblp[ti * 12 + 1 + e] = L;
              T->n_labels++;
            }
            mdrw__sample__init(&smp[ti]);
            smp[ti].value = x->v[k];
            smp[ti].timestamp = ts;
            smpp[ti] = &smp[ti];
            T->samples = &smpp[ti];
            T->n_samples = 1;
            tsp[ti] = T;
            ti++;
          }
        }
      wr.n_timeseries = ti;
      wr.timeseries = tsp;
      size_t plen = mdrw__write_request__get_packed_size(&wr);
      sb_reset(&raw);
      sb_reserve(&raw, plen);
      mdrw__write_request__pack(&wr, (uint8_t *)raw.buf);
      size_t clen = snappy_max_compressed_length(plen);
      size_t ro = rw.data.len;
      sb_reserve(&rw.data, clen);
      if (rw.data.oom || raw.oom || snappy_compress(raw.buf, plen, rw.data.buf + ro, &clen) != SNAPPY_OK)
        return 1;
      rw.data.len += clen;
      pl_push(&rw, ro, clen);
      pl_push(&prom, po, prom.data.len - po);
      pl_push(&influx, io, influx.data.len - io);
      pl_push(&jsonl, jo, jsonl.data.len - jo);
      free(tss), free(tsp), free(lbls), free(lblp), free(smp), free(smpp);
    }
  }
  sb_free(&raw);
  size_t expect = (size_t)hosts * SERIES_PER_HOST * (size_t)scrapes;
  printf("dataset: %d hosts x %d series x %d scrapes = %zu samples, batches of %d hosts x %d scrapes\n",
         hosts, SERIES_PER_HOST, scrapes, expect, HOSTS_PER_BATCH, per_push);
  int rc = 0;
  const char *names[] = {"prometheus text", "influx line protocol", "remote_write (snappy+pb)", "json lines"};
  payloads_t *pls[] = {&prom, &influx, &rw, &jsonl};
  parse_fn fns[] = {ingest_parse_prometheus, ingest_parse_influx, rw_parse, ingest_parse_jsonl};
  const char *only = getenv("BENCH_INGEST_ONLY"); /* 0..3: one protocol (profiling) */
  printf("-- parse only (one thread)\n");
  for (int i = 0; i < 4; i++)
    if (!only || atoi(only) == i) rc |= run(names[i], pls[i], fns[i], expect, NULL, NULL, NULL);
  if (!only || atoi(only) == 4) {
    /* The track API: batches of 1,000 seed-004 events (counters and histograms over the
     * host label sets) into one registry. */
    ingest_track_t *reg;
    char err[128];
    if (ingest_track_new(NULL, &reg, err, sizeof err)) return 1;
    sb_t body = {0}, out = {0};
    size_t events = 0;
    double t = 0;
    for (int round = 0; round < scrapes; round++) {
      for (int hb = 0; hb < hosts; hb += 1000 / SERIES_PER_HOST) {
        sb_reset(&body);
        sb_putc(&body, '[');
        int he = hb + 1000 / SERIES_PER_HOST < hosts ? hb + 1000 / SERIES_PER_HOST : hosts;
        for (int i = hb; i < he; i++)
          for (int k = 0; k < SERIES_PER_HOST; k++) {
            if (body.len > 1) sb_putc(&body, ',');
            bool hist = k >= 15;
            sb_printf(&body,
                      "{\"name\":\"%s%s\",\"value\":%.2f,\"type\":\"%s\",\"labels\":{\"hostname\":\"%s\","
                      "\"region\":\"%s\",\"k\":\"%d\"},\"service\":\"%s\"}",
                      defs[k].name, hist ? "_seconds" : "", hist ? h[i].v[k] / 1e6 : h[i].v[k],
                      hist ? "histogram" : "counter", h[i].hostname, h[i].region, k, h[i].service);
            events++;
          }
        sb_putc(&body, ']');
        sb_reset(&out);
        double t0 = cpu_seconds();
        size_t ok = 0, failed = 0;
        ingest_track_json(reg, body.buf, body.len, true, "default", true, 0, &out, &ok, &failed);
        t += cpu_seconds() - t0;
        if (failed) {
          fprintf(stderr, "track: %zu failed: %.300s\n", failed, out.buf);
          return 1;
        }
      }
    }
    printf("%-40s %10zu events   %6.3f cpu-s  %7.2f M events/cpu-s (%zu series)\n", "track batch (JSON)",
           events, t, events / t / 1e6, ingest_track_series_count(reg));
    sb_free(&body);
    sb_free(&out);
    ingest_track_free(reg);
  }
  /* BENCH_INGEST_CACHE=0: without the series cache only; =1: with it only; unset: both. */
  const char *cenv = getenv("BENCH_INGEST_CACHE");
  const char *protos[] = {"prometheus", "influx", "remote_write", "jsonl"};
  if (append) {
    printf("-- parse + tsdb_append (ingest_push) into a fresh database each (one thread)\n");
    for (int k = 0; k < 8; k++) {
      int i = k % 4;
      bool cached = k >= 4;
      if (only && atoi(only) != i) continue;
      if (cenv && atoi(cenv) != (int)cached) continue;
      if (cached && i == 3) continue; /* JSON lines does not use the cache */
      char dir[] = "/tmp/bench_ingest_XXXXXX";
      if (!mkdtemp(dir)) return 1;
      tsdb_options_t opt;
      tsdb_options_default(&opt);
      opt.background = false;
      opt.retention_ms = 0;
      tsdb_t *db;
      char err[256];
      if (tsdb_open(dir, &opt, &db, err, sizeof err)) {
        fprintf(stderr, "tsdb_open: %s\n", err);
        return 1;
      }
      char label[64];
      snprintf(label, sizeof label, "%s +append%s", names[i], cached ? "+cache" : "");
      ingest_refcache_t *cache = cached ? ingest_refcache_new(0) : NULL;
      rc |= run(label, pls[i], fns[i], expect, db, cache, protos[i]);
      ingest_refcache_free(cache);
      tsdb_close(db);
      md_rm_rf(dir);
    }
  }
  sb_free(&prom.data), sb_free(&influx.data), sb_free(&rw.data), sb_free(&jsonl.data);
  free(prom.off), free(prom.len), free(influx.off), free(influx.len), free(rw.off), free(rw.len);
  free(jsonl.off), free(jsonl.len);
  free(h);
  return rc;
}
