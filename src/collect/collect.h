/*
 * collect — metricsd's own collectors: the host (procfs/sysfs, node_exporter names) and
 * NVIDIA GPUs (NVML loaded with dlopen at run time, DCGM-exporter names).
 *
 * Each collector has two faces:
 *   - gather: fill a tsdb_batch_t with one round of samples at a given timestamp (pure,
 *     synchronous; what unit tests, benchmarks and tests/fakenvml/gpu_probe use);
 *   - run: collect_start() owns one thread per enabled collector that gathers on its
 *     interval and hands every batch to a sink callback (api binds the sink to tsdb_append
 *     for the default tenant). The collect module never calls the storage engine itself.
 *
 * Every series carries `job` and `instance` labels (Prometheus conventions) unless the
 * options set them to "" (tsdb drops empty labels).
 *
 * Threading: a collect_host_t / collect_gpu_t belongs to one thread at a time. A collect_t
 * runs its own threads; collect_stats / collect_gpu_status may be called from any thread.
 */
#ifndef METRICSD_COLLECT_H
#define METRICSD_COLLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsdb/tsdb.h"

/* ---- host collector ------------------------------------------------------------------ */

typedef struct collect_host_options {
  const char *root;     /* reads <root>/proc and <root>/sys; NULL or "" = "/" (fixtures in tests) */
  int64_t interval_ms;  /* default 15000 */
  const char *job;      /* default "node" */
  const char *instance; /* default: the host name */
  /* Parts, all on by default. */
  bool cpu;        /* /proc/stat: node_cpu_seconds_total, node_intr_total, node_forks_total, ... */
  bool memory;     /* /proc/meminfo: node_memory_*_bytes (swap included) */
  bool loadavg;    /* /proc/loadavg: node_load1/5/15 */
  bool disk;       /* /proc/diskstats: node_disk_* */
  bool filesystem; /* /proc/mounts + statvfs: node_filesystem_* */
  bool network;    /* /proc/net/dev + /sys/class/net: node_network_* */
  bool netstat;    /* /proc/net/{snmp,netstat,snmp6,sockstat,sockstat6}: node_netstat_*, node_sockstat_* */
  bool vmstat;     /* /proc/vmstat: node_vmstat_* */
  bool filefd;     /* /proc/sys/fs/file-nr: node_filefd_* */
  bool processes;  /* node_processes_pids/threads */
  bool uname;      /* node_uname_info */
  bool time;       /* node_time_seconds */
  /* Longest wait for the mount points' statvfs calls, made in parallel (default 5000,
   * node_exporter's mount-timeout). One that does not answer is reported as
   * node_filesystem_device_error 1 and not asked again until its call returns. 0: call
   * statvfs directly, one after the other (a hung mount then blocks the round). */
  int64_t filesystem_timeout_ms;
} collect_host_options_t;

void collect_host_options_default(collect_host_options_t *opt);

typedef struct collect_host collect_host_t;
/* Copies the options. Returns MD_EINVAL for a root that is not a directory. */
int collect_host_new(const collect_host_options_t *opt, collect_host_t **out, char *err, size_t errlen);
void collect_host_free(collect_host_t *h);
/* Appends one round of host samples at timestamp ts (ms) to b. A part whose file is
 * missing or unreadable is skipped (and counted in *part_errors when non-NULL); the call
 * fails only on allocation failure. */
int collect_host_gather(collect_host_t *h, tsdb_batch_t *b, int64_t ts, int *part_errors);

/* ---- GPU collector (NVML) ---------------------------------------------------------- */

typedef struct collect_gpu_options {
  const char *library;  /* default "libnvidia-ml.so.1" (a path in tests: the fake NVML) */
  int64_t interval_ms;  /* default 5000 */
  const char *job;      /* default "gpu" */
  const char *instance; /* default: the host name (also the DCGM `Hostname` label) */
  bool processes;       /* per-process memory series (default true) */
} collect_gpu_options_t;

void collect_gpu_options_default(collect_gpu_options_t *opt);

typedef struct collect_gpu collect_gpu_t;
/* Loads the library and initialises NVML. Without a library, a driver or any GPU it returns
 * MD_ENOTFOUND with err saying why; callers log that once and leave the collector off. */
int collect_gpu_new(const collect_gpu_options_t *opt, collect_gpu_t **out, char *err, size_t errlen);
void collect_gpu_free(collect_gpu_t *g); /* shuts NVML down and unloads it */
/* Appends one round of per-GPU samples at ts to b. A GPU that fails (lost, NVML error) is
 * skipped for this round and counted in the error counter; metrics whose NVML function the
 * driver lacks are skipped silently. Fails only on allocation failure. */
int collect_gpu_gather(collect_gpu_t *g, tsdb_batch_t *b, int64_t ts);
unsigned collect_gpu_device_count(const collect_gpu_t *g);      /* as of the last gather / init */
uint64_t collect_gpu_errors(const collect_gpu_t *g);            /* per-GPU failures since start */
const char *collect_gpu_driver_version(const collect_gpu_t *g); /* "" when unknown */

/* ---- running collectors ------------------------------------------------------------ */

/* Receives each gathered batch; returns 0 or a negative MD_* code (counted as an error).
 * Called from the collector threads; must be thread-safe. */
typedef int (*collect_sink_fn)(void *ctx, const tsdb_batch_t *b);

typedef struct collect_options {
  bool host_enabled; /* default true */
  collect_host_options_t host;
  bool gpu_enabled; /* default true: tried, off with one log line when absent */
  collect_gpu_options_t gpu;
} collect_options_t;

void collect_options_default(collect_options_t *opt);

typedef struct collect collect_t;
/* Starts the enabled collectors' threads. A missing GPU library is not an error (see
 * collect_gpu_status). Returns MD_EINVAL for bad options (err says which). */
int collect_start(const collect_options_t *opt, collect_sink_fn sink, void *ctx, collect_t **out, char *err,
                  size_t errlen);
/* Stops the threads (waits for a gather in progress) and frees. NULL is a no-op. */
void collect_stop(collect_t *c);

typedef struct collect_stats {
  uint64_t host_rounds, host_errors, host_samples;
  double host_last_duration_s;
  uint64_t gpu_rounds, gpu_errors, gpu_samples;
  double gpu_last_duration_s;
  unsigned gpus;
} collect_stats_t;
void collect_stats(collect_t *c, collect_stats_t *out);

/* For /health: "ok (2 GPUs, driver 550.54)", "disabled", or why it is off
 * ("off: libnvidia-ml.so.1: cannot open shared object file"). Copies into out. */
void collect_gpu_status(collect_t *c, char *out, size_t n);
/* true when the GPU collector is running. */
bool collect_gpu_active(collect_t *c);

#endif
