/*
 * GPU collector: NVIDIA GPUs through NVML, loaded with dlopen at run time so metricsd has no
 * build or run dependency on the driver. Metric names and labels follow NVIDIA's DCGM
 * exporter (docs/collectors.md lists them with the NVML function behind each).
 *
 * NVML's ABI, as far as we use it: every function returns an int status (0 = success), a
 * device handle is an opaque pointer, and the structs below are the documented layouts.
 * Every entry point but init/count/handle is optional: an older driver that lacks one simply
 * yields fewer metrics. NOT_SUPPORTED / NO_PERMISSION from a call skips that metric quietly
 * (fans on passively cooled boards, ECC off); GPU_IS_LOST or any other failure is counted as
 * an error and the GPU is skipped for the round — the collector keeps running.
 *
 * Threading: a collect_gpu_t belongs to one thread at a time. NVML itself is thread-safe.
 */
#include "collect_internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- NVML ABI (declared here: no nvml.h needed) ---------------------------------------- */

typedef int nvml_ret_t;
typedef void *nvml_device_t;
enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_GPU_IS_LOST = 15,
};
enum { NVML_TEMPERATURE_GPU = 0 };
enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_CLOCK_VIDEO = 3 };
enum { NVML_PCIE_UTIL_TX_BYTES = 0, NVML_PCIE_UTIL_RX_BYTES = 1 };
enum { NVML_MEMORY_ERROR_TYPE_CORRECTED = 0, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1 };
enum { NVML_VOLATILE_ECC = 0, NVML_AGGREGATE_ECC = 1 };

typedef struct {
  unsigned int gpu, memory;
} nvml_utilization_t;
typedef struct {
  unsigned long long total, free, used;
} nvml_memory_t;
typedef struct {
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_sub_system_id;
  char bus_id[32];
} nvml_pci_info_t;
/* nvmlProcessInfo_v1_t (legacy entry point) and nvmlProcessInfo_t (_v2/_v3 entry points). */
typedef struct {
  unsigned int pid;
  unsigned long long used_gpu_memory;
} nvml_process_v1_t;
typedef struct {
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id, compute_instance_id;
} nvml_process_v2_t;

typedef struct nvml_api {
  nvml_ret_t (*init)(void);
  nvml_ret_t (*shutdown)(void);
  const char *(*error_string)(nvml_ret_t);
  nvml_ret_t (*driver_version)(char *, unsigned int);
  nvml_ret_t (*count)(unsigned int *);
  nvml_ret_t (*handle_by_index)(unsigned int, nvml_device_t *);
  nvml_ret_t (*uuid)(nvml_device_t, char *, unsigned int);
  nvml_ret_t (*name)(nvml_device_t, char *, unsigned int);
  nvml_ret_t (*minor_number)(nvml_device_t, unsigned int *);
  nvml_ret_t (*pci_info)(nvml_device_t, nvml_pci_info_t *);
  nvml_ret_t (*utilization)(nvml_device_t, nvml_utilization_t *);
  nvml_ret_t (*memory)(nvml_device_t, nvml_memory_t *);
  nvml_ret_t (*temperature)(nvml_device_t, int, unsigned int *);
  nvml_ret_t (*power_usage)(nvml_device_t, unsigned int *);
  nvml_ret_t (*power_limit)(nvml_device_t, unsigned int *);
  nvml_ret_t (*energy)(nvml_device_t, unsigned long long *);
  nvml_ret_t (*clock)(nvml_device_t, int, unsigned int *);
  nvml_ret_t (*fan)(nvml_device_t, unsigned int *);
  nvml_ret_t (*pcie)(nvml_device_t, int, unsigned int *);
  nvml_ret_t (*ecc)(nvml_device_t, int, int, unsigned long long *);
  nvml_ret_t (*throttle)(nvml_device_t, unsigned long long *);
  nvml_ret_t (*pstate)(nvml_device_t, int *);
  nvml_ret_t (*procs_v1)(nvml_device_t, unsigned int *, nvml_process_v1_t *);
  nvml_ret_t (*procs_v2)(nvml_device_t, unsigned int *, nvml_process_v2_t *);
} nvml_api_t;

struct collect_gpu {
  void *lib;
  nvml_api_t f;
  collect_gpu_options_t opt;
  char *job, *instance, *library;
  char driver[96];
  unsigned devices;
  uint64_t errors;
};

void collect_gpu_options_default(collect_gpu_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->library = "libnvidia-ml.so.1";
  opt->interval_ms = 5000;
  opt->job = "gpu";
  opt->processes = true;
}

/* dlsym into a function pointer without the object/function pointer cast warning. */
static void load_sym(void *lib, void *slot, const char *a, const char *b) {
  void *p = dlsym(lib, a);
  if (!p && b) p = dlsym(lib, b);
  memcpy(slot, &p, sizeof p);
}

static const char *nvml_err(const collect_gpu_t *g, nvml_ret_t r) {
  const char *s = g->f.error_string ? g->f.error_string(r) : NULL;
  return s ? s : "NVML error";
}

int collect_gpu_new(const collect_gpu_options_t *opt, collect_gpu_t **out, char *err, size_t errlen) {
  collect_gpu_options_t def;
  if (!opt) {
    collect_gpu_options_default(&def);
    opt = &def;
  }
  collect_gpu_t *g = calloc(1, sizeof *g);
  if (!g) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  g->opt = *opt;
  const char *libname = opt->library && *opt->library ? opt->library : "libnvidia-ml.so.1";
  char host[256];
  if (!opt->instance) {
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
  }
  g->job = strdup(opt->job ? opt->job : "gpu");
  g->instance = strdup(opt->instance ? opt->instance : host);
  g->library = strdup(libname);
  if (!g->job || !g->instance || !g->library) {
    collect_gpu_free(g);
    return md_error(err, errlen, MD_ENOMEM, "out of memory");
  }
  int rc;
  g->lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
  if (!g->lib) {
    const char *why = dlerror();
    rc = md_error(err, errlen, MD_ENOTFOUND, "%s", why ? why : libname);
    goto fail;
  }
  nvml_api_t *f = &g->f;
  load_sym(g->lib, &f->init, "nvmlInit_v2", "nvmlInit");
  load_sym(g->lib, &f->shutdown, "nvmlShutdown", NULL);
  load_sym(g->lib, &f->error_string, "nvmlErrorString", NULL);
  load_sym(g->lib, &f->driver_version, "nvmlSystemGetDriverVersion", NULL);
  load_sym(g->lib, &f->count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
  load_sym(g->lib, &f->handle_by_index, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
  load_sym(g->lib, &f->uuid, "nvmlDeviceGetUUID", NULL);
  load_sym(g->lib, &f->name, "nvmlDeviceGetName", NULL);
  load_sym(g->lib, &f->minor_number, "nvmlDeviceGetMinorNumber", NULL);
  load_sym(g->lib, &f->pci_info, "nvmlDeviceGetPciInfo_v3", NULL);
  load_sym(g->lib, &f->utilization, "nvmlDeviceGetUtilizationRates", NULL);
  load_sym(g->lib, &f->memory, "nvmlDeviceGetMemoryInfo", NULL);
  load_sym(g->lib, &f->temperature, "nvmlDeviceGetTemperature", NULL);
  load_sym(g->lib, &f->power_usage, "nvmlDeviceGetPowerUsage", NULL);
  load_sym(g->lib, &f->power_limit, "nvmlDeviceGetEnforcedPowerLimit", NULL);
  load_sym(g->lib, &f->energy, "nvmlDeviceGetTotalEnergyConsumption", NULL);
  load_sym(g->lib, &f->clock, "nvmlDeviceGetClockInfo", NULL);
  load_sym(g->lib, &f->fan, "nvmlDeviceGetFanSpeed", NULL);
  load_sym(g->lib, &f->pcie, "nvmlDeviceGetPcieThroughput", NULL);
  load_sym(g->lib, &f->ecc, "nvmlDeviceGetTotalEccErrors", NULL);
  /* Renamed "clocks event reasons" in R535; the old name remains as an alias. */
  load_sym(g->lib, &f->throttle, "nvmlDeviceGetCurrentClocksEventReasons",
           "nvmlDeviceGetCurrentClocksThrottleReasons");
  load_sym(g->lib, &f->pstate, "nvmlDeviceGetPerformanceState", NULL);
  load_sym(g->lib, &f->procs_v2, "nvmlDeviceGetComputeRunningProcesses_v3",
           "nvmlDeviceGetComputeRunningProcesses_v2");
  if (!f->procs_v2) load_sym(g->lib, &f->procs_v1, "nvmlDeviceGetComputeRunningProcesses", NULL);
  if (!f->init || !f->count || !f->handle_by_index) {
    rc = md_error(err, errlen, MD_ENOTFOUND,
                  "%s lacks nvmlInit/nvmlDeviceGetCount/nvmlDeviceGetHandleByIndex", libname);
    goto fail;
  }
  nvml_ret_t r = f->init();
  if (r != NVML_SUCCESS) {
    rc = md_error(err, errlen, MD_ENOTFOUND, "nvmlInit failed: %s (%d)", nvml_err(g, r), r);
    f->shutdown = NULL; /* nothing to shut down */
    goto fail;
  }
  if (f->driver_version && f->driver_version(g->driver, sizeof g->driver) != NVML_SUCCESS) g->driver[0] = 0;
  g->driver[sizeof g->driver - 1] = 0;
  unsigned n = 0;
  r = f->count(&n);
  if (r != NVML_SUCCESS) {
    rc = md_error(err, errlen, MD_ENOTFOUND, "nvmlDeviceGetCount failed: %s (%d)", nvml_err(g, r), r);
    goto fail;
  }
  if (n == 0) {
    /* A driver without GPUs (a CPU node with the driver installed): off, like no driver. */
    rc = md_error(err, errlen, MD_ENOTFOUND, "no NVIDIA GPU found (driver %s)",
                  *g->driver ? g->driver : "unknown");
    goto fail;
  }
  g->devices = n;
  *out = g;
  return 0;
fail:
  collect_gpu_free(g);
  return rc;
}

void collect_gpu_free(collect_gpu_t *g) {
  if (!g) return;
  if (g->lib) {
    if (g->f.shutdown) g->f.shutdown();
    dlclose(g->lib);
  }
  free(g->job);
  free(g->instance);
  free(g->library);
  free(g);
}

unsigned collect_gpu_device_count(const collect_gpu_t *g) {
  return g ? g->devices : 0;
}
uint64_t collect_gpu_errors(const collect_gpu_t *g) {
  return g ? g->errors : 0;
}
const char *collect_gpu_driver_version(const collect_gpu_t *g) {
  return g ? g->driver : "";
}

/* ---- one GPU ---------------------------------------------------------------------- */

typedef struct {
  collect_gpu_t *g;
  tsdb_batch_t *b;
  int64_t ts;
  tsdb_label_t labels[8];
  size_t nlabels;
  /* Storage the labels point into, alive for the whole round. */
  char idx[16], uuid[96], name[96], dev[32], bus[32];
  int failures; /* calls that failed for a reason other than "not supported" */
  bool lost;
} gpu_round_t;

/* Records r; returns true when the value is usable. */
static bool ok(gpu_round_t *gr, nvml_ret_t r) {
  if (r == NVML_SUCCESS) return true;
  if (r == NVML_ERROR_NOT_SUPPORTED || r == NVML_ERROR_NO_PERMISSION) return false;
  if (r == NVML_ERROR_GPU_IS_LOST) gr->lost = true;
  gr->failures++;
  return false;
}

static int put(gpu_round_t *gr, const char *name, double v) {
  return collect_emit(gr->b, gr->g->job, gr->g->instance, name, gr->labels, gr->nlabels, gr->ts, v);
}

#define PUT(name, v)                                                                                         \
  do {                                                                                                       \
    int rc_ = put(gr, (name), (v));                                                                          \
    if (rc_) return rc_;                                                                                     \
  } while (0)

static int gather_processes(gpu_round_t *gr, nvml_device_t d) {
  const nvml_api_t *f = &gr->g->f;
  enum { MAXP = 64 };
  unsigned int n = MAXP;
  nvml_process_v2_t p2[MAXP];
  nvml_process_v1_t p1[MAXP];
  nvml_ret_t r;
  if (f->procs_v2) {
    r = f->procs_v2(d, &n, p2);
  } else if (f->procs_v1) {
    r = f->procs_v1(d, &n, p1);
  } else {
    return 0;
  }
  /* More than MAXP processes: report the first MAXP rather than chase a growing list. */
  if (r == NVML_ERROR_INSUFFICIENT_SIZE) n = MAXP, r = NVML_SUCCESS;
  if (!ok(gr, r)) return 0;
  if (n > MAXP) n = MAXP;
  PUT("DCGM_FI_DEV_COMPUTE_PIDS", (double)n);
  for (unsigned i = 0; i < n; i++) {
    unsigned pid = f->procs_v2 ? p2[i].pid : p1[i].pid;
    unsigned long long mem = f->procs_v2 ? p2[i].used_gpu_memory : p1[i].used_gpu_memory;
    char pidbuf[16], comm[64] = "";
    snprintf(pidbuf, sizeof pidbuf, "%u", pid);
    char path[48];
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    FILE *fp = fopen(path, "re");
    if (fp) {
      if (!fgets(comm, sizeof comm, fp)) comm[0] = 0;
      comm[strcspn(comm, "\n")] = 0;
      fclose(fp);
    }
    size_t base = gr->nlabels;
    gr->labels[gr->nlabels++] = (tsdb_label_t){"pid", pidbuf};
    gr->labels[gr->nlabels++] = (tsdb_label_t){"process_name", comm};
    /* NVML_VALUE_NOT_AVAILABLE (all ones) under some drivers: report no memory figure. */
    int rc = mem == ~0ULL ? 0 : put(gr, "gpu_process_memory_used_bytes", (double)mem);
    gr->nlabels = base;
    if (rc) return rc;
  }
  return 0;
}

static int gather_device(gpu_round_t *gr, unsigned idx, nvml_device_t d) {
  const nvml_api_t *f = &gr->g->f;
  collect_gpu_t *g = gr->g;
  char *idxbuf = gr->idx, *uuid = gr->uuid, *name = gr->name, *dev = gr->dev, *bus = gr->bus;
  snprintf(idxbuf, sizeof gr->idx, "%u", idx);
  if (f->uuid && ok(gr, f->uuid(d, uuid, sizeof gr->uuid)))
    uuid[sizeof gr->uuid - 1] = 0;
  else
    uuid[0] = 0;
  if (f->name && ok(gr, f->name(d, name, sizeof gr->name)))
    name[sizeof gr->name - 1] = 0;
  else
    name[0] = 0;
  unsigned minor;
  if (f->minor_number && ok(gr, f->minor_number(d, &minor))) snprintf(dev, sizeof gr->dev, "nvidia%u", minor);
  nvml_pci_info_t pci;
  if (f->pci_info && ok(gr, f->pci_info(d, &pci))) {
    memcpy(bus, pci.bus_id, sizeof gr->bus);
    bus[sizeof gr->bus - 1] = 0;
  }
  if (gr->lost) return 0;
  gr->nlabels = 0;
  gr->labels[gr->nlabels++] = (tsdb_label_t){"gpu", idxbuf};
  gr->labels[gr->nlabels++] = (tsdb_label_t){"UUID", uuid};
  gr->labels[gr->nlabels++] = (tsdb_label_t){"device", dev};
  gr->labels[gr->nlabels++] = (tsdb_label_t){"modelName", name};
  gr->labels[gr->nlabels++] = (tsdb_label_t){"Hostname", g->instance};
  gr->labels[gr->nlabels++] = (tsdb_label_t){"pci_bus_id", bus};

  nvml_utilization_t u;
  if (f->utilization && ok(gr, f->utilization(d, &u))) {
    PUT("DCGM_FI_DEV_GPU_UTIL", u.gpu);
    PUT("DCGM_FI_DEV_MEM_COPY_UTIL", u.memory);
  }
  nvml_memory_t m;
  if (f->memory && ok(gr, f->memory(d, &m))) {
    PUT("DCGM_FI_DEV_FB_TOTAL", (double)(m.total / (1024 * 1024)));
    PUT("DCGM_FI_DEV_FB_FREE", (double)(m.free / (1024 * 1024)));
    PUT("DCGM_FI_DEV_FB_USED", (double)(m.used / (1024 * 1024)));
    if (m.total > 0) PUT("DCGM_FI_DEV_FB_USED_PERCENT", (double)m.used / (double)m.total * 100.0);
  }
  unsigned v;
  unsigned long long v64;
  int iv;
  if (f->temperature && ok(gr, f->temperature(d, NVML_TEMPERATURE_GPU, &v))) PUT("DCGM_FI_DEV_GPU_TEMP", v);
  if (f->power_usage && ok(gr, f->power_usage(d, &v))) PUT("DCGM_FI_DEV_POWER_USAGE", v / 1000.0);
  if (f->power_limit && ok(gr, f->power_limit(d, &v))) PUT("DCGM_FI_DEV_POWER_MGMT_LIMIT", v / 1000.0);
  if (f->energy && ok(gr, f->energy(d, &v64))) PUT("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", (double)v64);
  if (f->clock) {
    if (ok(gr, f->clock(d, NVML_CLOCK_SM, &v))) PUT("DCGM_FI_DEV_SM_CLOCK", v);
    if (ok(gr, f->clock(d, NVML_CLOCK_MEM, &v))) PUT("DCGM_FI_DEV_MEM_CLOCK", v);
    if (ok(gr, f->clock(d, NVML_CLOCK_VIDEO, &v))) PUT("DCGM_FI_DEV_VIDEO_CLOCK", v);
    /* DCGM has no graphics-clock field (its SM clock is what dashboards use); the issue
     * asks for it, so it gets a metricsd name. */
    if (ok(gr, f->clock(d, NVML_CLOCK_GRAPHICS, &v))) PUT("gpu_graphics_clock_mhz", v);
  }
  if (f->fan && ok(gr, f->fan(d, &v))) PUT("DCGM_FI_DEV_FAN_SPEED", v);
  if (f->pcie) {
    if (ok(gr, f->pcie(d, NVML_PCIE_UTIL_TX_BYTES, &v))) PUT("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", v);
    if (ok(gr, f->pcie(d, NVML_PCIE_UTIL_RX_BYTES, &v))) PUT("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", v);
  }
  if (f->ecc) {
    if (ok(gr, f->ecc(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, &v64)))
      PUT("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", (double)v64);
    if (ok(gr, f->ecc(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &v64)))
      PUT("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", (double)v64);
    if (ok(gr, f->ecc(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_AGGREGATE_ECC, &v64)))
      PUT("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", (double)v64);
    if (ok(gr, f->ecc(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC, &v64)))
      PUT("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", (double)v64);
  }
  if (f->throttle && ok(gr, f->throttle(d, &v64))) PUT("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", (double)v64);
  if (f->pstate && ok(gr, f->pstate(d, &iv)) && iv >= 0 && iv < 32) PUT("DCGM_FI_DEV_PSTATE", iv);
  if (g->opt.processes && !gr->lost) {
    int rc = gather_processes(gr, d);
    if (rc) return rc;
  }
  return 0;
}

int collect_gpu_gather(collect_gpu_t *g, tsdb_batch_t *b, int64_t ts) {
  unsigned n = 0;
  nvml_ret_t r = g->f.count(&n);
  if (r != NVML_SUCCESS) {
    g->errors++;
    return 0;
  }
  if (n != g->devices) log_info("GPU count changed from %u to %u", g->devices, n);
  g->devices = n;
  for (unsigned i = 0; i < n; i++) {
    gpu_round_t gr = {.g = g, .b = b, .ts = ts};
    nvml_device_t d;
    r = g->f.handle_by_index(i, &d);
    if (r != NVML_SUCCESS) {
      g->errors++;
      continue;
    }
    /* A failure mid-way leaves the series already added for this GPU in the batch: they are
     * true readings taken this round, so they are kept. */
    int rc = gather_device(&gr, i, d);
    if (rc) return rc;
    if (gr.failures) g->errors++;
  }
  return 0;
}
