/*
 * Host collector: reads procfs and sysfs under a configurable root and emits node_exporter's
 * metric names and labels, so existing dashboards and rules work unchanged.
 *
 * Units follow node_exporter: CPU ticks are divided by USER_HZ (100 on every Linux ABI that
 * exposes /proc/stat), sectors are 512 bytes whatever the device's block size, meminfo kB are
 * KiB. Device filters are node_exporter's defaults (partitions, loop and ram devices are not
 * disks; pseudo file systems and /dev, /proc, /sys mount points are not file systems).
 *
 * A statvfs on a dead NFS server or a failing disk can block for ever, so (like
 * node_exporter's --collector.filesystem.mount-timeout) each one runs on a short-lived helper
 * thread, all started at once, and the round waits for them at most filesystem_timeout_ms
 * in all: a mount point that does not answer is reported with node_filesystem_device_error 1
 * and is not asked again until its pending call returns. The helper may outlive the round and the collector,
 * so the set of stuck mount points and each call's state are reference counted.
 *
 * Threading: a collect_host_t belongs to one thread at a time (it reuses one read buffer);
 * helper threads touch only their call and the stuck set (each with its own mutex; lock
 * order: call, then set).
 */
#include "collect_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#define USER_HZ 100.0
#define SECTOR_BYTES 512.0

/* Mount points whose statvfs has not returned yet. */
typedef struct stuck_set {
  pthread_mutex_t mu;
  int refs; /* the collector + one per pending helper */
  char **mounts;
  size_t n, cap;
} stuck_set_t;

struct collect_host {
  char *root; /* "" for "/", else without trailing slash */
  char *job, *instance;
  collect_host_options_t opt;
  sb_t buf;  /* reused file buffer */
  sb_t path; /* reused path buffer */
  stuck_set_t *stuck;
  collect_statvfs_fn statvfs_fn;
  const atomic_bool *cancel; /* collect_stop's flag, or NULL */
};

void collect_host_options_default(collect_host_options_t *opt) {
  memset(opt, 0, sizeof *opt);
  opt->interval_ms = 15000;
  opt->job = "node";
  opt->cpu = opt->memory = opt->loadavg = opt->disk = opt->filesystem = opt->network = opt->netstat = true;
  opt->vmstat = opt->filefd = opt->processes = opt->uname = opt->time = true;
  opt->filesystem_timeout_ms = 5000;
}

/* node_exporter's default exclusions (collector/diskstats_linux.go, filesystem_linux.go),
 * hand-matched rather than through core_regex: this runs on the collector thread every
 * round and the patterns are fixed. Disks: ^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$ */
static bool all_digits(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return false;
  return true;
}

static bool disk_excluded(const char *d) {
  if (d[0] == 'z' && strncmp(d + 1, "ram", 3) == 0) return all_digits(d + 4);
  if (strncmp(d, "ram", 3) == 0) return all_digits(d + 3);
  if (strncmp(d, "loop", 4) == 0) return all_digits(d + 4);
  if (strncmp(d, "fd", 2) == 0) return all_digits(d + 2);
  const char *p = d;
  if (strncmp(p, "xv", 2) == 0)
    p += 2;
  else if (*p == 'h' || *p == 's' || *p == 'v')
    p += 1;
  else
    p = NULL;
  if (p && p[0] == 'd' && p[1] >= 'a' && p[1] <= 'z') return all_digits(p + 2);
  if (strncmp(d, "nvme", 4) == 0) {
    p = d + 4;
    if (!(*p >= '0' && *p <= '9')) return false;
    while (*p >= '0' && *p <= '9')
      p++;
    if (*p++ != 'n' || !(*p >= '0' && *p <= '9')) return false;
    while (*p >= '0' && *p <= '9')
      p++;
    return *p == 'p' && all_digits(p + 1);
  }
  return false;
}

static bool fs_type_excluded(const char *t) {
  static const char *types[] = {"autofs",     "binfmt_misc", "bpf",       "cgroup",   "cgroup2",   "configfs",
                                "debugfs",    "devpts",      "devtmpfs",  "fusectl",  "hugetlbfs", "iso9660",
                                "mqueue",     "nsfs",        "overlay",   "proc",     "procfs",    "pstore",
                                "rpc_pipefs", "securityfs",  "selinuxfs", "squashfs", "sysfs",     "tracefs"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcmp(t, types[i]) == 0) return true;
  return false;
}

/* ^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/) */
static bool mount_excluded(const char *m) {
  static const char *exact[] = {"/dev", "/proc", "/sys"};
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(exact[i]);
    if (strncmp(m, exact[i], l) == 0 && (m[l] == 0 || m[l] == '/')) return true;
  }
  static const char *below[] = {"/run/credentials/", "/var/lib/docker/", "/var/lib/containers/storage/"};
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(below[i]);
    if (strncmp(m, below[i], l) == 0 && m[l] != 0) return true;
  }
  return false;
}

int collect_host_new(const collect_host_options_t *opt, collect_host_t **out, char *err, size_t errlen) {
  collect_host_options_t def;
  if (!opt) {
    collect_host_options_default(&def);
    opt = &def;
  }
  collect_host_t *h = calloc(1, sizeof *h);
  if (!h) return md_error(err, errlen, MD_ENOMEM, "out of memory");
  h->opt = *opt;
  const char *root = opt->root && *opt->root ? opt->root : "/";
  struct stat st;
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
    free(h);
    return md_error(err, errlen, MD_EINVAL, "host collector root %s is not a directory", root);
  }
  size_t rl = strlen(root);
  while (rl > 0 && root[rl - 1] == '/')
    rl--;
  h->root = strndup(root, rl);
  h->job = strdup(opt->job ? opt->job : "node");
  char host[256];
  if (opt->instance) {
    h->instance = strdup(opt->instance);
  } else {
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    h->instance = strdup(host);
  }
  h->statvfs_fn = statvfs;
  if ((h->stuck = calloc(1, sizeof *h->stuck))) {
    pthread_mutex_init(&h->stuck->mu, NULL);
    h->stuck->refs = 1;
  }
  if (!h->root || !h->job || !h->instance || !h->stuck) goto oom;
  *out = h;
  return 0;
oom:
  collect_host_free(h);
  return md_error(err, errlen, MD_ENOMEM, "out of memory");
}

static void stuck_unref(stuck_set_t *s) {
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  int left = --s->refs;
  pthread_mutex_unlock(&s->mu);
  if (left) return;
  for (size_t i = 0; i < s->n; i++)
    free(s->mounts[i]);
  free(s->mounts);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void collect_host_free(collect_host_t *h) {
  if (!h) return;
  stuck_unref(h->stuck); /* pending helpers hold their own references */
  free(h->root);
  free(h->job);
  free(h->instance);
  sb_free(&h->buf);
  sb_free(&h->path);
  free(h);
}

/* ---- helpers ------------------------------------------------------------------------- */

static const char *host_path(collect_host_t *h, const char *rel) {
  sb_reset(&h->path);
  sb_puts(&h->path, h->root);
  sb_puts(&h->path, rel);
  return h->path.oom ? NULL : h->path.buf;
}

/* Reads root+rel into h->buf. Returns 0, MD_ENOTFOUND/MD_EIO, or MD_ENOMEM. */
static int host_read(collect_host_t *h, const char *rel) {
  const char *p = host_path(h, rel);
  if (!p) return MD_ENOMEM;
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? MD_ENOTFOUND : MD_EIO;
  sb_reset(&h->buf);
  for (;;) {
    if (!sb_reserve(&h->buf, 8192)) {
      close(fd);
      return MD_ENOMEM;
    }
    ssize_t r = read(fd, h->buf.buf + h->buf.len, h->buf.cap - h->buf.len - 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      close(fd);
      return MD_EIO;
    }
    if (r == 0) break;
    h->buf.len += (size_t)r;
  }
  close(fd);
  h->buf.buf[h->buf.len] = 0;
  return 0;
}

int collect_emit(tsdb_batch_t *b, const char *job, const char *instance, const char *name,
                 const tsdb_label_t *extra, size_t nextra, int64_t ts, double v) {
  tsdb_label_t ls[16];
  size_t n = 0;
  ls[n++] = (tsdb_label_t){"__name__", name};
  ls[n++] = (tsdb_label_t){"job", job};
  ls[n++] = (tsdb_label_t){"instance", instance};
  for (size_t i = 0; i < nextra && n < 16; i++)
    ls[n++] = extra[i];
  int rc = tsdb_batch_series(b, ls, n);
  if (rc == MD_ENOMEM) return rc;
  if (rc != 0) return 0; /* a malformed label from the system (never expected): skip it */
  return tsdb_batch_sample(b, ts, v);
}

#define EMIT(name, extra, nextra, v)                                                                         \
  do {                                                                                                       \
    int rc_ = collect_emit(b, h->job, h->instance, (name), (extra), (nextra), ts, (v));                      \
    if (rc_) return rc_;                                                                                     \
  } while (0)

/* Next line of s (NUL-terminated buffer): returns its start and sets *len; NULL at end. */
static char *next_line(char **cur, size_t *len) {
  char *s = *cur;
  if (!s || !*s) return NULL;
  char *nl = strchr(s, '\n');
  if (nl) {
    *nl = 0;
    *len = (size_t)(nl - s);
    *cur = nl + 1;
  } else {
    *len = strlen(s);
    *cur = s + *len;
  }
  return s;
}

/* ---- /proc/stat --------------------------------------------------------------------- */

static int gather_stat(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  static const char *modes[] = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"};
  char *cur = h->buf.buf, *line;
  size_t len;
  while ((line = next_line(&cur, &len))) {
    if (strncmp(line, "cpu", 3) == 0 && isdigit((unsigned char)line[3])) {
      char *p = line + 3, *end;
      unsigned long cpu = strtoul(p, &end, 10);
      char cpubuf[24];
      snprintf(cpubuf, sizeof cpubuf, "%lu", cpu);
      double v[10] = {0};
      int nv = 0;
      p = end;
      while (nv < 10) {
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p) break;
        v[nv++] = (double)x / USER_HZ;
        p = end;
      }
      for (int i = 0; i < nv && i < 8; i++) {
        tsdb_label_t l[2] = {{"cpu", cpubuf}, {"mode", modes[i]}};
        EMIT("node_cpu_seconds_total", l, 2, v[i]);
      }
      if (nv >= 10) {
        tsdb_label_t g1[2] = {{"cpu", cpubuf}, {"mode", "user"}};
        tsdb_label_t g2[2] = {{"cpu", cpubuf}, {"mode", "nice"}};
        EMIT("node_cpu_guest_seconds_total", g1, 2, v[8]);
        EMIT("node_cpu_guest_seconds_total", g2, 2, v[9]);
      }
    } else if (strncmp(line, "intr ", 5) == 0) {
      EMIT("node_intr_total", NULL, 0, strtod(line + 5, NULL));
    } else if (strncmp(line, "ctxt ", 5) == 0) {
      EMIT("node_context_switches_total", NULL, 0, strtod(line + 5, NULL));
    } else if (strncmp(line, "btime ", 6) == 0) {
      EMIT("node_boot_time_seconds", NULL, 0, strtod(line + 6, NULL));
    } else if (strncmp(line, "processes ", 10) == 0) {
      EMIT("node_forks_total", NULL, 0, strtod(line + 10, NULL));
    } else if (strncmp(line, "procs_running ", 14) == 0) {
      EMIT("node_procs_running", NULL, 0, strtod(line + 14, NULL));
    } else if (strncmp(line, "procs_blocked ", 14) == 0) {
      EMIT("node_procs_blocked", NULL, 0, strtod(line + 14, NULL));
    }
  }
  return 0;
}

/* ---- /proc/meminfo ------------------------------------------------------------------ */

static int gather_meminfo(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *line;
  size_t len;
  char name[128];
  while ((line = next_line(&cur, &len))) {
    char *colon = memchr(line, ':', len);
    if (!colon) continue;
    /* "Active(anon)" becomes "Active_anon" as in node_exporter. */
    size_t n = 0;
    n += (size_t)snprintf(name, sizeof name, "node_memory_");
    for (char *p = line; p < colon && n + 8 < sizeof name; p++) {
      char c = *p;
      if (c == '(' || c == ')') {
        if (c == '(') name[n++] = '_';
        continue;
      }
      name[n++] = isalnum((unsigned char)c) ? c : '_';
    }
    name[n] = 0;
    char *end;
    double v = strtod(colon + 1, &end);
    if (end == colon + 1) continue;
    while (*end == ' ')
      end++;
    if (strncmp(end, "kB", 2) == 0) {
      v *= 1024.0;
      if (n + 7 < sizeof name) memcpy(name + n, "_bytes", 7);
    }
    EMIT(name, NULL, 0, v);
  }
  return 0;
}

/* ---- /proc/loadavg ------------------------------------------------------------------ */

static int gather_loadavg(collect_host_t *h, tsdb_batch_t *b, int64_t ts, bool threads) {
  double l1, l5, l15;
  unsigned long running, total;
  int n = sscanf(h->buf.buf, "%lf %lf %lf %lu/%lu", &l1, &l5, &l15, &running, &total);
  if (n < 3) return MD_EIO;
  if (h->opt.loadavg) {
    EMIT("node_load1", NULL, 0, l1);
    EMIT("node_load5", NULL, 0, l5);
    EMIT("node_load15", NULL, 0, l15);
  }
  /* The kernel's count of scheduling entities: every thread on the system, cheaply. */
  if (threads && n == 5) EMIT("node_processes_threads", NULL, 0, (double)total);
  return 0;
}

/* ---- /proc/diskstats ---------------------------------------------------------------- */

static int gather_diskstats(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  /* Fields after major minor name (Documentation/admin-guide/iostats.rst), with the
   * factor that turns them into node_exporter's units. */
  static const struct {
    const char *name;
    double factor;
  } f[] = {
      {"node_disk_reads_completed_total", 1},
      {"node_disk_reads_merged_total", 1},
      {"node_disk_read_bytes_total", SECTOR_BYTES},
      {"node_disk_read_time_seconds_total", 0.001},
      {"node_disk_writes_completed_total", 1},
      {"node_disk_writes_merged_total", 1},
      {"node_disk_written_bytes_total", SECTOR_BYTES},
      {"node_disk_write_time_seconds_total", 0.001},
      {"node_disk_io_now", 1},
      {"node_disk_io_time_seconds_total", 0.001},
      {"node_disk_io_time_weighted_seconds_total", 0.001},
      {"node_disk_discards_completed_total", 1},
      {"node_disk_discards_merged_total", 1},
      {"node_disk_discarded_sectors_total", 1},
      {"node_disk_discard_time_seconds_total", 0.001},
      {"node_disk_flush_requests_total", 1},
      {"node_disk_flush_requests_time_seconds_total", 0.001},
  };
  char *cur = h->buf.buf, *line;
  size_t len;
  while ((line = next_line(&cur, &len))) {
    unsigned maj, min;
    char dev[64];
    int off = 0;
    if (sscanf(line, "%u %u %63s%n", &maj, &min, dev, &off) != 3) continue;
    if (disk_excluded(dev)) continue;
    char *p = line + off, *end;
    tsdb_label_t l[1] = {{"device", dev}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
      unsigned long long x = strtoull(p, &end, 10);
      if (end == p) break;
      p = end;
      EMIT(f[i].name, l, 1, (double)x * f[i].factor);
    }
  }
  return 0;
}

/* ---- /proc/net/dev and /sys/class/net ------------------------------------------------ */

static int gather_netdev(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  static const char *rx[] = {"bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast"};
  static const char *tx[] = {"bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed"};
  char *cur = h->buf.buf, *line;
  size_t len;
  char name[96];
  while ((line = next_line(&cur, &len))) {
    char *colon = memchr(line, ':', len);
    if (!colon) continue; /* the two header lines */
    char *d = line;
    while (*d == ' ')
      d++;
    *colon = 0;
    tsdb_label_t l[1] = {{"device", d}};
    char *p = colon + 1, *end;
    for (int i = 0; i < 16; i++) {
      unsigned long long x = strtoull(p, &end, 10);
      if (end == p) break;
      p = end;
      snprintf(name, sizeof name, "node_network_%s_%s_total", i < 8 ? "receive" : "transmit",
               i < 8 ? rx[i] : tx[i - 8]);
      EMIT(name, l, 1, (double)x);
    }
  }
  return 0;
}

/* /sys/class/net/<dev>/{operstate,mtu}: node_network_up and node_network_mtu_bytes. */
static int gather_netclass(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  const char *dir = host_path(h, "/sys/class/net");
  if (!dir) return MD_ENOMEM;
  DIR *dp = opendir(dir);
  if (!dp) return MD_ENOTFOUND;
  char **names = NULL;
  size_t nn = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  while ((de = readdir(dp))) {
    if (de->d_name[0] == '.') continue;
    if (nn == cap) {
      size_t nc = cap ? cap * 2 : 16;
      char **np = realloc(names, nc * sizeof *np);
      if (!np) {
        rc = MD_ENOMEM;
        break;
      }
      names = np;
      cap = nc;
    }
    if (!(names[nn] = strdup(de->d_name))) {
      rc = MD_ENOMEM;
      break;
    }
    nn++;
  }
  closedir(dp);
  char rel[320];
  for (size_t i = 0; i < nn && rc == 0; i++) {
    tsdb_label_t l[1] = {{"device", names[i]}};
    snprintf(rel, sizeof rel, "/sys/class/net/%s/operstate", names[i]);
    int r = host_read(h, rel);
    if (r == MD_ENOMEM) rc = r;
    if (r == 0) {
      rc = collect_emit(b, h->job, h->instance, "node_network_up", l, 1, ts,
                        strncmp(h->buf.buf, "up", 2) == 0 ? 1 : 0);
    }
    snprintf(rel, sizeof rel, "/sys/class/net/%s/mtu", names[i]);
    r = host_read(h, rel);
    if (r == MD_ENOMEM) rc = r;
    if (r == 0 && rc == 0)
      rc = collect_emit(b, h->job, h->instance, "node_network_mtu_bytes", l, 1, ts, strtod(h->buf.buf, NULL));
  }
  for (size_t i = 0; i < nn; i++)
    free(names[i]);
  free(names);
  return rc;
}

/* ---- /proc/net/{snmp,netstat,snmp6,sockstat} -------------------------------------------- */

static bool field_in(const char *f, const char *const *set, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(f, set[i]) == 0) return true;
  return false;
}

/* node_exporter 1.5's default --collector.netstat.fields (later versions add TCPOFOQueue):
 * ^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|
 *   TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|
 *   Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|
 *   Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$ */
static bool netstat_wanted(const char *proto, const char *f) {
  static const char *const octets[] = {"InOctets", "OutOctets"};
  static const char *const msgs[] = {"InMsgs", "OutMsgs"};
  static const char *const tcpext[] = {"TCPSynRetrans", "TCPTimeouts"};
  static const char *const tcp[] = {"ActiveOpens",  "InSegs",      "OutSegs",  "OutRsts",
                                    "PassiveOpens", "RetransSegs", "CurrEstab"};
  static const char *const udp[] = {"InDatagrams", "OutDatagrams", "NoPorts", "RcvbufErrors", "SndbufErrors"};
  if (strcmp(f, "InErrors") == 0 || strcmp(f, "InErrs") == 0) return true;
  if (strcmp(proto, "Ip") == 0) return strcmp(f, "Forwarding") == 0;
  if (strcmp(proto, "Ip6") == 0 || strcmp(proto, "IpExt") == 0) return field_in(f, octets, 2);
  if (strcmp(proto, "Icmp") == 0 || strcmp(proto, "Icmp6") == 0) return field_in(f, msgs, 2);
  if (strcmp(proto, "TcpExt") == 0)
    return strncmp(f, "Listen", 6) == 0 || strncmp(f, "Syncookies", 10) == 0 || field_in(f, tcpext, 2);
  if (strcmp(proto, "Tcp") == 0) return field_in(f, tcp, 7);
  if (strcmp(proto, "Udp") == 0 || strcmp(proto, "Udp6") == 0) return field_in(f, udp, 5);
  return false;
}

static int emit_netstat(collect_host_t *h, tsdb_batch_t *b, int64_t ts, const char *proto, const char *field,
                        double v) {
  if (!netstat_wanted(proto, field)) return 0;
  char name[160];
  snprintf(name, sizeof name, "node_netstat_%s_%s", proto, field);
  return collect_emit(b, h->job, h->instance, name, NULL, 0, ts, v);
}

/* /proc/net/snmp and /proc/net/netstat: pairs of lines "Proto: names..." / "Proto: values...". */
static int gather_snmp_pairs(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *head, *vals;
  size_t hl, vl;
  while ((head = next_line(&cur, &hl)) && (vals = next_line(&cur, &vl))) {
    char *hc = memchr(head, ':', hl), *vc = memchr(vals, ':', vl);
    if (!hc || !vc || hc - head != vc - vals || memcmp(head, vals, (size_t)(hc - head)) != 0) continue;
    *hc = 0;
    char *hs = NULL, *vs = NULL;
    char *k = strtok_r(hc + 1, " ", &hs), *v = strtok_r(vc + 1, " ", &vs);
    for (; k && v; k = strtok_r(NULL, " ", &hs), v = strtok_r(NULL, " ", &vs)) {
      int rc = emit_netstat(h, b, ts, head, k, strtod(v, NULL));
      if (rc) return rc;
    }
  }
  return 0;
}

/* /proc/net/snmp6: "Ip6InOctets   123" — the protocol ends at its '6'. */
static int gather_snmp6(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *line;
  size_t len;
  char proto[32];
  while ((line = next_line(&cur, &len))) {
    char *save = NULL;
    char *key = strtok_r(line, " \t", &save), *val = strtok_r(NULL, " \t", &save);
    if (!key || !val) continue;
    char *six = strchr(key, '6');
    if (!six || (size_t)(six - key) + 2 > sizeof proto) continue;
    size_t pl = (size_t)(six - key) + 1;
    memcpy(proto, key, pl);
    proto[pl] = 0;
    int rc = emit_netstat(h, b, ts, proto, six + 1, strtod(val, NULL));
    if (rc) return rc;
  }
  return 0;
}

/* /proc/net/sockstat{,6}: "TCP: inuse 2 orphan 0 tw 5 alloc 3 mem 1"; mem is in pages and
 * also reported as _mem_bytes, as node_exporter does. */
static int gather_sockstat(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *line;
  size_t len;
  char name[160];
  double page = (double)sysconf(_SC_PAGESIZE);
  while ((line = next_line(&cur, &len))) {
    char *colon = memchr(line, ':', len);
    if (!colon) continue;
    *colon = 0;
    char *save = NULL;
    for (char *k = strtok_r(colon + 1, " ", &save); k; k = strtok_r(NULL, " ", &save)) {
      char *v = strtok_r(NULL, " ", &save);
      if (!v) break;
      double x = strtod(v, NULL);
      snprintf(name, sizeof name, "node_sockstat_%s_%s", line, k);
      int rc = collect_emit(b, h->job, h->instance, name, NULL, 0, ts, x);
      if (!rc && strcmp(k, "mem") == 0 && strcmp(line, "FRAG") && strcmp(line, "FRAG6")) {
        snprintf(name, sizeof name, "node_sockstat_%s_mem_bytes", line);
        rc = collect_emit(b, h->job, h->instance, name, NULL, 0, ts, x * page);
      }
      if (rc) return rc;
    }
  }
  return 0;
}

/* ---- /proc/mounts + statvfs ------------------------------------------------------------ */

/* /proc/mounts escapes space, tab, newline and backslash as \ooo octal. */
static void unescape_octal(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
        r[3] <= '7') {
      *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
      r += 3;
    } else {
      *w++ = *r;
    }
  }
  *w = 0;
}

void collect_host_set_statvfs(collect_host_t *h, collect_statvfs_fn fn) {
  h->statvfs_fn = fn ? fn : statvfs;
}

void collect_host_set_cancel(collect_host_t *h, const atomic_bool *cancel) {
  h->cancel = cancel;
}

static bool cancelled(const collect_host_t *h) {
  return h->cancel && atomic_load(h->cancel);
}

static bool stuck_has(stuck_set_t *s, const char *mnt) {
  pthread_mutex_lock(&s->mu);
  bool found = false;
  for (size_t i = 0; i < s->n && !found; i++)
    found = strcmp(s->mounts[i], mnt) == 0;
  pthread_mutex_unlock(&s->mu);
  return found;
}

/* One statvfs on a helper thread. */
typedef struct stat_call {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs; /* the waiting round + the helper */
  bool done, gave_up;
  int rc;
  struct statvfs st;
  collect_statvfs_fn fn;
  stuck_set_t *stuck; /* counted reference */
  char *path, *mount;
} stat_call_t;

static void stat_call_unref(stat_call_t *c) {
  pthread_mutex_lock(&c->mu);
  int left = --c->refs;
  pthread_mutex_unlock(&c->mu);
  if (left) return;
  stuck_unref(c->stuck);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c->path);
  free(c->mount);
  free(c);
}

static void *stat_helper(void *arg) {
  stat_call_t *c = arg;
  struct statvfs st;
  memset(&st, 0, sizeof st);
  int rc = c->fn(c->path, &st);
  pthread_mutex_lock(&c->mu);
  c->rc = rc;
  c->st = st;
  c->done = true;
  if (c->gave_up) { /* the round went on without us: the mount point may be asked again */
    stuck_set_t *s = c->stuck;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
      if (strcmp(s->mounts[i], c->mount) == 0) {
        free(s->mounts[i]);
        s->mounts[i] = s->mounts[--s->n];
        break;
      }
    pthread_mutex_unlock(&s->mu);
  }
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  stat_call_unref(c);
  return NULL;
}

/* Starts statvfs(path) on a helper thread. NULL with *direct set to the outcome (0 or -1)
 * when no thread could be started and the call was made here instead; NULL with *direct =
 * MD_ENOMEM on allocation failure. */
static stat_call_t *stat_start(collect_host_t *h, const char *path, const char *mnt, struct statvfs *st,
                               int *direct) {
  stat_call_t *c = calloc(1, sizeof *c);
  if (c && (!(c->path = strdup(path)) || !(c->mount = strdup(mnt)))) {
    free(c->path);
    free(c);
    c = NULL;
  }
  if (!c) {
    *direct = MD_ENOMEM;
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  c->fn = h->statvfs_fn;
  c->stuck = h->stuck;
  pthread_mutex_lock(&h->stuck->mu);
  h->stuck->refs++;
  pthread_mutex_unlock(&h->stuck->mu);
  c->refs = 2;
  pthread_attr_t ta;
  pthread_t th;
  pthread_attr_init(&ta);
  pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&ta, 64 * 1024);
  int trc = pthread_create(&th, &ta, stat_helper, c);
  pthread_attr_destroy(&ta);
  if (trc != 0) { /* no thread to spare: ask directly rather than not at all */
    c->refs = 1;
    stat_call_unref(c);
    *direct = h->statvfs_fn(path, st) == 0 ? 0 : -1;
    return NULL;
  }
  return c;
}

/* Waits for c until the monotonic deadline dl and drops the round's reference. Returns 0
 * (filled *st), -1 (the call failed) or MD_ECANCELED (timed out: its mount is now stuck). */
static int stat_finish(collect_host_t *h, stat_call_t *c, const struct timespec *dl, struct statvfs *st) {
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  /* In slices of 100 ms, so that stopping the collector does not wait for the deadline. */
  while (!c->done && !cancelled(h)) {
    struct timespec now, slice;
    clock_gettime(CLOCK_MONOTONIC, &now);
    slice = now;
    slice.tv_nsec += 100 * 1000000L;
    if (slice.tv_nsec >= 1000000000L) {
      slice.tv_sec++;
      slice.tv_nsec -= 1000000000L;
    }
    bool last = slice.tv_sec > dl->tv_sec || (slice.tv_sec == dl->tv_sec && slice.tv_nsec >= dl->tv_nsec);
    if (pthread_cond_timedwait(&c->cv, &c->mu, last ? dl : &slice) == ETIMEDOUT && last) break;
  }
  if (c->done) {
    rc = c->rc == 0 ? 0 : -1;
    *st = c->st;
  } else {
    /* Marked stuck under both locks, so the helper either sees gave_up and clears the mark,
     * or has not finished: the mark cannot outlive the call. */
    c->gave_up = true;
    rc = MD_ECANCELED;
    stuck_set_t *s = h->stuck;
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
      size_t nc = s->cap ? s->cap * 2 : 4;
      char **nm = realloc(s->mounts, nc * sizeof *nm);
      if (nm) {
        s->mounts = nm;
        s->cap = nc;
      }
    }
    char *m = s->n < s->cap ? strdup(c->mount) : NULL;
    if (m) s->mounts[s->n++] = m;
    pthread_mutex_unlock(&s->mu);
    if (!cancelled(h))
      log_warn(
          "host collector: statvfs(%s) did not answer in %lld ms; reported as device_error until it does",
          c->mount, (long long)h->opt.filesystem_timeout_ms);
  }
  pthread_mutex_unlock(&c->mu);
  stat_call_unref(c);
  return rc;
}

/* One mount point of a round. */
typedef struct fs_entry {
  char *dev, *mnt, *fstype; /* into h->buf */
  bool ro;
  stat_call_t *call; /* pending, or NULL when rc is known */
  int rc;            /* 0 ok, else device error */
  struct statvfs st;
} fs_entry_t;

/* Two passes: every mount point's statvfs is started (in parallel, on helpers), then all are
 * awaited against one deadline, so hung mounts cost one timeout per round, not one each. */
static int gather_filesystems(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *line;
  size_t len;
  fs_entry_t *e = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  bool bounded = h->opt.filesystem_timeout_ms > 0;
  while (rc == 0 && (line = next_line(&cur, &len))) {
    char *save = NULL;
    char *dev = strtok_r(line, " ", &save);
    char *mnt = strtok_r(NULL, " ", &save);
    char *fstype = strtok_r(NULL, " ", &save);
    char *opts = strtok_r(NULL, " ", &save);
    if (!dev || !mnt || !fstype) continue;
    unescape_octal(dev);
    unescape_octal(mnt);
    if (fs_type_excluded(fstype)) continue;
    if (mount_excluded(mnt)) continue;
    /* A mount point can be listed twice (bind mounts, containers): report it once. */
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++)
      dup = strcmp(e[i].mnt, mnt) == 0;
    if (dup) continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      fs_entry_t *ne = realloc(e, nc * sizeof *ne);
      if (!ne) {
        rc = MD_ENOMEM;
        break;
      }
      e = ne;
      cap = nc;
    }
    fs_entry_t *f = &e[n++];
    memset(f, 0, sizeof *f);
    f->dev = dev;
    f->mnt = mnt;
    f->fstype = fstype;
    f->ro = opts && (strncmp(opts, "ro,", 3) == 0 || strcmp(opts, "ro") == 0);
    f->rc = -1;
    if (stuck_has(h->stuck, mnt)) continue; /* not asked again until its call returns */
    sb_t p = {0};
    sb_puts(&p, h->root);
    sb_puts(&p, mnt);
    if (p.oom)
      rc = MD_ENOMEM;
    else if (bounded)
      f->call = stat_start(h, p.buf, mnt, &f->st, &f->rc);
    else
      f->rc = h->statvfs_fn(p.buf, &f->st) == 0 ? 0 : -1;
    sb_free(&p);
    if (!f->call && f->rc == MD_ENOMEM) rc = MD_ENOMEM;
  }
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  int64_t tmo = h->opt.filesystem_timeout_ms;
  dl.tv_sec += tmo / 1000;
  dl.tv_nsec += (tmo % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  /* Every started call is awaited (or given up on), also when the round fails. */
  for (size_t i = 0; i < n; i++)
    if (e[i].call) e[i].rc = stat_finish(h, e[i].call, &dl, &e[i].st);
  for (size_t i = 0; i < n && rc == 0; i++) {
    const fs_entry_t *f = &e[i];
    tsdb_label_t l[3] = {{"device", f->dev}, {"fstype", f->fstype}, {"mountpoint", f->mnt}};
    if (f->rc != 0) {
      rc = collect_emit(b, h->job, h->instance, "node_filesystem_device_error", l, 3, ts, 1);
      continue;
    }
    double bs = (double)f->st.f_frsize;
#define FS(name, v)                                                                                          \
  if (rc == 0) rc = collect_emit(b, h->job, h->instance, name, l, 3, ts, (v))
    FS("node_filesystem_device_error", 0);
    FS("node_filesystem_size_bytes", (double)f->st.f_blocks * bs);
    FS("node_filesystem_free_bytes", (double)f->st.f_bfree * bs);
    FS("node_filesystem_avail_bytes", (double)f->st.f_bavail * bs);
    FS("node_filesystem_files", (double)f->st.f_files);
    FS("node_filesystem_files_free", (double)f->st.f_ffree);
    FS("node_filesystem_readonly", (f->ro || (f->st.f_flag & ST_RDONLY)) ? 1 : 0);
#undef FS
  }
  free(e);
  return rc;
}

/* ---- /proc/vmstat ------------------------------------------------------------------- */

static int gather_vmstat(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  char *cur = h->buf.buf, *line;
  size_t len;
  char name[128];
  while ((line = next_line(&cur, &len))) {
    /* node_exporter's default field set: ^(oom_kill|pgpg|pswp|pg.*fault).* */
    bool want =
        strncmp(line, "oom_kill", 8) == 0 || strncmp(line, "pgpg", 4) == 0 || strncmp(line, "pswp", 4) == 0;
    char *sp = memchr(line, ' ', len);
    if (!sp) continue;
    if (!want && strncmp(line, "pg", 2) == 0) {
      for (char *q = line; q + 5 <= sp && !want; q++)
        want = strncmp(q, "fault", 5) == 0;
    }
    if (!want) continue;
    *sp = 0;
    snprintf(name, sizeof name, "node_vmstat_%s", line);
    EMIT(name, NULL, 0, strtod(sp + 1, NULL));
  }
  return 0;
}

/* ---- small ones ----------------------------------------------------------------------- */

static int gather_filefd(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  unsigned long long alloc, unused, max;
  if (sscanf(h->buf.buf, "%llu %llu %llu", &alloc, &unused, &max) != 3) return MD_EIO;
  EMIT("node_filefd_allocated", NULL, 0, (double)alloc);
  EMIT("node_filefd_maximum", NULL, 0, (double)max);
  return 0;
}

static int count_pids(collect_host_t *h, double *out) {
  const char *dir = host_path(h, "/proc");
  if (!dir) return MD_ENOMEM;
  DIR *dp = opendir(dir);
  if (!dp) return MD_ENOTFOUND;
  double n = 0;
  struct dirent *de;
  while ((de = readdir(dp)))
    if (isdigit((unsigned char)de->d_name[0])) n++;
  closedir(dp);
  *out = n;
  return 0;
}

/* Reads one line of a /proc/sys/kernel file into out (trimmed); fallback when absent. */
static int read_kernel(collect_host_t *h, const char *file, char *out, size_t n, const char *fallback) {
  char rel[96];
  snprintf(rel, sizeof rel, "/proc/sys/kernel/%s", file);
  int r = host_read(h, rel);
  if (r == MD_ENOMEM) return r;
  const char *src = r == 0 ? h->buf.buf : fallback;
  size_t l = strcspn(src, "\n");
  if (l >= n) l = n - 1;
  memcpy(out, src, l);
  out[l] = 0;
  return 0;
}

static int gather_uname(collect_host_t *h, tsdb_batch_t *b, int64_t ts) {
  struct utsname u;
  if (uname(&u) != 0) memset(&u, 0, sizeof u);
  char sys[65], rel[65], ver[257], node[65], dom[65];
  int rc;
  if ((rc = read_kernel(h, "ostype", sys, sizeof sys, u.sysname)) ||
      (rc = read_kernel(h, "osrelease", rel, sizeof rel, u.release)) ||
      (rc = read_kernel(h, "version", ver, sizeof ver, u.version)) ||
      (rc = read_kernel(h, "hostname", node, sizeof node, u.nodename)) ||
      (rc = read_kernel(h, "domainname", dom, sizeof dom, "(none)")))
    return rc;
  tsdb_label_t l[6] = {{"domainname", dom}, {"machine", u.machine}, {"nodename", node},
                       {"release", rel},    {"sysname", sys},       {"version", ver}};
  EMIT("node_uname_info", l, 6, 1);
  return 0;
}

/* ---- the round ---------------------------------------------------------------------- */

int collect_host_gather(collect_host_t *h, tsdb_batch_t *b, int64_t ts, int *part_errors) {
  int errors = 0, rc = 0;
  /* Each part: read its file, parse it; a missing file is a part error, never fatal. */
#define PART(enabled, file, call)                                                                            \
  if (enabled) {                                                                                             \
    int r_ = host_read(h, file);                                                                             \
    if (r_ == 0) r_ = (call);                                                                                \
    if (r_ == MD_ENOMEM) {                                                                                   \
      rc = r_;                                                                                               \
      goto out;                                                                                              \
    }                                                                                                        \
    if (r_) errors++;                                                                                        \
  }
  PART(h->opt.cpu, "/proc/stat", gather_stat(h, b, ts));
  PART(h->opt.memory, "/proc/meminfo", gather_meminfo(h, b, ts));
  PART(h->opt.loadavg || h->opt.processes, "/proc/loadavg", gather_loadavg(h, b, ts, h->opt.processes));
  PART(h->opt.disk, "/proc/diskstats", gather_diskstats(h, b, ts));
  PART(h->opt.filesystem, "/proc/mounts", gather_filesystems(h, b, ts));
  PART(h->opt.network, "/proc/net/dev", gather_netdev(h, b, ts));
  PART(h->opt.vmstat, "/proc/vmstat", gather_vmstat(h, b, ts));
  PART(h->opt.netstat, "/proc/net/snmp", gather_snmp_pairs(h, b, ts));
  PART(h->opt.netstat, "/proc/net/netstat", gather_snmp_pairs(h, b, ts));
  PART(h->opt.netstat, "/proc/net/sockstat", gather_sockstat(h, b, ts));
  /* IPv6 may be disabled: its files are optional. */
  if (h->opt.netstat && host_read(h, "/proc/net/snmp6") == 0 && gather_snmp6(h, b, ts) == MD_ENOMEM) {
    rc = MD_ENOMEM;
    goto out;
  }
  if (h->opt.netstat && host_read(h, "/proc/net/sockstat6") == 0 && gather_sockstat(h, b, ts) == MD_ENOMEM) {
    rc = MD_ENOMEM;
    goto out;
  }
  PART(h->opt.filefd, "/proc/sys/fs/file-nr", gather_filefd(h, b, ts));
#undef PART
  if (h->opt.network) {
    int r = gather_netclass(h, b, ts);
    if (r == MD_ENOMEM) {
      rc = r;
      goto out;
    }
    if (r) errors++;
  }
  if (h->opt.processes) {
    double pids;
    int r = count_pids(h, &pids);
    if (r == 0) r = collect_emit(b, h->job, h->instance, "node_processes_pids", NULL, 0, ts, pids);
    if (r == MD_ENOMEM) {
      rc = r;
      goto out;
    }
    if (r) errors++;
  }
  if (h->opt.uname) {
    rc = gather_uname(h, b, ts);
    if (rc) goto out;
  }
  if (h->opt.time) {
    rc = collect_emit(b, h->job, h->instance, "node_time_seconds", NULL, 0, ts, (double)ts / 1000.0);
    if (rc) goto out;
  }
out:
  if (part_errors) *part_errors = errors;
  return rc;
}
