/*
 * A fake libnvidia-ml.so.1 for tests: implements the NVML entry points metricsd's GPU
 * collector calls, with values derived from the GPU index and scripted through the
 * environment (read on every call, so a test can change behaviour between rounds):
 *
 *   FAKENVML_COUNT=n          number of GPUs (default 2)
 *   FAKENVML_INIT_ERROR=code  nvmlInit fails with this NVML status
 *   FAKENVML_FAIL=fn:code,... the named function fails with this status (e.g.
 *                             nvmlDeviceGetTemperature:999, nvmlDeviceGetFanSpeed:3)
 *   FAKENVML_LOST=i,...       these GPU indexes answer GPU_IS_LOST (15) to everything
 *   FAKENVML_TEMP=t           base temperature (GPU i reports t + i; default 60)
 *   FAKENVML_UTIL=u           base GPU utilisation (default 50)
 *   FAKENVML_PROCS=n          compute processes per GPU (default 1)
 *
 * Built twice: the full library, and with FAKENVML_OLD defined, one that lacks the newer
 * entry points (energy, PCIe throughput, throttle reasons, _v2/_v3 names, PCI info v3) like
 * an old driver would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
typedef struct fake_dev {
  unsigned index;
} * nvmlDevice_t;

static struct fake_dev devs[64];
static int initialised;

static long env_long(const char *name, long def) {
  const char *s = getenv(name);
  return s && *s ? strtol(s, NULL, 0) : def;
}

/* The status FAKENVML_FAIL scripts for fn, or 0. */
static int scripted_fail(const char *fn) {
  const char *s = getenv("FAKENVML_FAIL");
  size_t fl = strlen(fn);
  while (s && *s) {
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    const char *colon = memchr(s, ':', len);
    if (colon && (size_t)(colon - s) == fl && memcmp(s, fn, fl) == 0) return atoi(colon + 1);
    s = comma ? comma + 1 : NULL;
  }
  return 0;
}

static int is_lost(unsigned i) {
  const char *s = getenv("FAKENVML_LOST");
  while (s && *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s) break;
    if (v == (long)i) return 1;
    s = *end == ',' ? end + 1 : end;
  }
  return 0;
}

/* Common prologue: scripted failure, initialisation, lost GPU. */
#define CHECK(fn, dev)                                                                                       \
  do {                                                                                                       \
    int f_ = scripted_fail(fn);                                                                              \
    if (f_) return f_;                                                                                       \
    if (!initialised) return 1;                                                                              \
    if (!(dev)) return 2;                                                                                    \
    if (is_lost((dev)->index)) return 15;                                                                    \
  } while (0)

EXPORT nvmlReturn_t nvmlInit_v2(void) {
  long e = env_long("FAKENVML_INIT_ERROR", 0);
  if (e) return (nvmlReturn_t)e;
  initialised = 1;
  return 0;
}
EXPORT nvmlReturn_t nvmlInit(void) {
  return nvmlInit_v2();
}
EXPORT nvmlReturn_t nvmlShutdown(void) {
  initialised = 0;
  return 0;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
  case 0:
    return "Success";
  case 1:
    return "Uninitialized";
  case 2:
    return "Invalid Argument";
  case 3:
    return "Not Supported";
  case 4:
    return "Insufficient Permissions";
  case 7:
    return "Insufficient Size";
  case 9:
    return "Driver Not Loaded";
  case 15:
    return "GPU is lost";
  default:
    return "Unknown Error";
  }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *out, unsigned len) {
  if (!initialised) return 1;
  snprintf(out, len, "550.54.15-fake");
  return 0;
}

static nvmlReturn_t get_count(unsigned *n) {
  int f = scripted_fail("nvmlDeviceGetCount");
  if (f) return f;
  if (!initialised) return 1;
  long c = env_long("FAKENVML_COUNT", 2);
  if (c < 0) c = 0;
  if (c > 64) c = 64;
  *n = (unsigned)c;
  return 0;
}

static nvmlReturn_t get_handle(unsigned i, nvmlDevice_t *d) {
  int f = scripted_fail("nvmlDeviceGetHandleByIndex");
  if (f) return f;
  if (!initialised) return 1;
  unsigned n = 0;
  if (get_count(&n) != 0 || i >= n) return 2;
  devs[i].index = i;
  *d = &devs[i];
  return 0;
}

#ifndef FAKENVML_OLD
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *n) {
  return get_count(n);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned i, nvmlDevice_t *d) {
  return get_handle(i, d);
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned *n) {
  return get_count(n);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned i, nvmlDevice_t *d) {
  return get_handle(i, d);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *out, unsigned len) {
  CHECK("nvmlDeviceGetUUID", d);
  snprintf(out, len, "GPU-fake0000-0000-0000-0000-%012u", d->index);
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *out, unsigned len) {
  CHECK("nvmlDeviceGetName", d);
  snprintf(out, len, "NVIDIA Fake H100 80GB HBM3");
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned *m) {
  CHECK("nvmlDeviceGetMinorNumber", d);
  *m = d->index;
  return 0;
}

#ifndef FAKENVML_OLD
typedef struct {
  char busIdLegacy[16];
  unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
  char busId[32];
} pci_t;
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, pci_t *p) {
  CHECK("nvmlDeviceGetPciInfo_v3", d);
  memset(p, 0, sizeof *p);
  p->bus = 0x10 + d->index;
  snprintf(p->busId, sizeof p->busId, "00000000:%02X:00.0", p->bus);
  return 0;
}
#endif

typedef struct {
  unsigned gpu, memory;
} util_t;
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, util_t *u) {
  CHECK("nvmlDeviceGetUtilizationRates", d);
  u->gpu = (unsigned)env_long("FAKENVML_UTIL", 50) + d->index;
  u->memory = 20 + d->index;
  return 0;
}

typedef struct {
  unsigned long long total, free, used;
} mem_t;
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, mem_t *m) {
  CHECK("nvmlDeviceGetMemoryInfo", d);
  m->total = 80ULL << 30;
  m->used = (unsigned long long)(d->index + 1) << 30;
  m->free = m->total - m->used;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned *t) {
  CHECK("nvmlDeviceGetTemperature", d);
  if (sensor != 0) return 2;
  *t = (unsigned)env_long("FAKENVML_TEMP", 60) + d->index;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned *mw) {
  CHECK("nvmlDeviceGetPowerUsage", d);
  *mw = 250000 + 1000 * d->index;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned *mw) {
  CHECK("nvmlDeviceGetEnforcedPowerLimit", d);
  *mw = 700000;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned *mhz) {
  CHECK("nvmlDeviceGetClockInfo", d);
  static const unsigned clocks[] = {1980, 1980, 2619, 1755};
  if (type < 0 || type > 3) return 2;
  *mhz = clocks[type];
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t d, unsigned *pct) {
  CHECK("nvmlDeviceGetFanSpeed", d);
  *pct = 30 + d->index;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter,
                                                unsigned long long *n) {
  CHECK("nvmlDeviceGetTotalEccErrors", d);
  *n = (unsigned long long)(type == 0 ? 3 + d->index : d->index) + (counter == 1 ? 100 : 0);
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t d, int *p) {
  CHECK("nvmlDeviceGetPerformanceState", d);
  *p = (int)d->index;
  return 0;
}

typedef struct {
  unsigned pid;
  unsigned long long mem;
} proc_v1_t;
typedef struct {
  unsigned pid;
  unsigned long long mem;
  unsigned gi, ci;
} proc_v2_t;

static nvmlReturn_t fill_procs(nvmlDevice_t d, unsigned *n, void *out, int v2) {
  unsigned want = (unsigned)env_long("FAKENVML_PROCS", 1);
  if (*n < want) {
    *n = want;
    return 7;
  }
  for (unsigned i = 0; i < want; i++) {
    unsigned pid = 4000 + 10 * d->index + i;
    unsigned long long mem = (512ULL + i) << 20;
    if (v2)
      ((proc_v2_t *)out)[i] = (proc_v2_t){pid, mem, 0, 0};
    else
      ((proc_v1_t *)out)[i] = (proc_v1_t){pid, mem};
  }
  *n = want;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned *n, proc_v1_t *p) {
  CHECK("nvmlDeviceGetComputeRunningProcesses", d);
  return fill_procs(d, n, p, 0);
}

#ifndef FAKENVML_OLD
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *n, proc_v2_t *p) {
  CHECK("nvmlDeviceGetComputeRunningProcesses_v3", d);
  return fill_procs(d, n, p, 1);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
  CHECK("nvmlDeviceGetTotalEnergyConsumption", d);
  *mj = 123456789ULL + d->index;
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned *kbs) {
  CHECK("nvmlDeviceGetPcieThroughput", d);
  *kbs = (counter == 0 ? 1000u : 2000u) * (d->index + 1);
  return 0;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
  CHECK("nvmlDeviceGetCurrentClocksThrottleReasons", d);
  *r = 0x4; /* SW power cap */
  return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
  CHECK("nvmlDeviceGetCurrentClocksEventReasons", d);
  *r = 0x4;
  return 0;
}
#endif
