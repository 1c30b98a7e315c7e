/* Host collector: exact values from the fixture root, part switches, error handling, and a
 * smoke test against the live /proc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "batch_util.h"
#include "collect/collect.h"
#include "collect/collect_internal.h"
#include "core/core.h"

static char fixture[4096];

static collect_host_t *fixture_host(collect_host_options_t *opt) {
  collect_host_options_t def;
  if (!opt) {
    collect_host_options_default(&def);
    opt = &def;
  }
  opt->root = fixture;
  opt->instance = "fixture:9100";
  collect_host_t *h = NULL;
  char err[256];
  assert_int_equal(collect_host_new(opt, &h, err, sizeof err), 0);
  return h;
}

static void assert_value(const tsdb_batch_t *b, double want, size_t count, const char *name, ...) {
  /* bu_find takes the pairs itself; this wrapper only supports up to two pairs. */
  va_list ap;
  va_start(ap, name);
  const char *p[4] = {0};
  for (int i = 0; i < 4; i++) {
    p[i] = va_arg(ap, const char *);
    if (!p[i]) break;
  }
  va_end(ap);
  double v = NAN;
  size_t n = bu_find(b, &v, name, p[0], p[1], p[2], p[3], NULL);
  if (n != count || (count && fabs(v - want) > 1e-9 * fmax(1, fabs(want)))) {
    fprintf(stderr, "%s{%s=%s,%s=%s}: %zu series, value %.17g; want %zu, %.17g\n", name, p[0] ? p[0] : "",
            p[1] ? p[1] : "", p[2] ? p[2] : "", p[3] ? p[3] : "", n, v, count, want);
    fail();
  }
}

static void test_fixture_values(void **state) {
  collect_host_t *h = fixture_host(NULL);
  tsdb_batch_t *b = tsdb_batch_new();
  int perr = -1;
  assert_int_equal(collect_host_gather(h, b, 1700000123456, &perr), 0);
  assert_int_equal(perr, 0);
  assert_false(bu_has_duplicates(b));

  /* /proc/stat: ticks / USER_HZ, guest split out, totals. */
  assert_value(b, 10.0, 1, "node_cpu_seconds_total", "cpu", "0", "mode", "user", NULL);
  assert_value(b, 250.0, 1, "node_cpu_seconds_total", "cpu", "1", "mode", "idle", NULL);
  assert_value(b, 0.04, 1, "node_cpu_seconds_total", "cpu", "1", "mode", "steal", NULL);
  assert_value(b, 0.11, 1, "node_cpu_guest_seconds_total", "cpu", "0", "mode", "user", NULL);
  assert_int_equal(bu_find(b, NULL, "node_cpu_seconds_total", NULL), 16); /* 2 cpus x 8 modes */
  assert_value(b, 123456, 1, "node_intr_total", NULL);
  assert_value(b, 987654, 1, "node_context_switches_total", NULL);
  assert_value(b, 1700000000, 1, "node_boot_time_seconds", NULL);
  assert_value(b, 4321, 1, "node_forks_total", NULL);
  assert_value(b, 3, 1, "node_procs_running", NULL);
  assert_value(b, 1, 1, "node_procs_blocked", NULL);

  /* meminfo: kB -> bytes with _bytes, parentheses -> underscore, unitless keeps its name. */
  assert_value(b, 8000000.0 * 1024, 1, "node_memory_MemTotal_bytes", NULL);
  assert_value(b, 1048572.0 * 1024, 1, "node_memory_SwapTotal_bytes", NULL);
  assert_value(b, 300000.0 * 1024, 1, "node_memory_Active_anon_bytes", NULL);
  assert_value(b, 0, 1, "node_memory_HugePages_Total", NULL);

  assert_value(b, 0.25, 1, "node_load1", NULL);
  assert_value(b, 0.5, 1, "node_load5", NULL);
  assert_value(b, 1.75, 1, "node_load15", NULL);
  assert_value(b, 345, 1, "node_processes_threads", NULL);
  assert_value(b, 2, 1, "node_processes_pids", NULL);

  /* diskstats: partitions and loop devices skipped; sectors are 512 bytes; ms -> s. */
  assert_value(b, 1000, 1, "node_disk_reads_completed_total", "device", "vda", NULL);
  assert_value(b, 20000.0 * 512, 1, "node_disk_read_bytes_total", "device", "vda", NULL);
  assert_value(b, 40000.0 * 512, 1, "node_disk_written_bytes_total", "device", "vda", NULL);
  assert_value(b, 3.0, 1, "node_disk_write_time_seconds_total", "device", "vda", NULL);
  assert_value(b, 2, 1, "node_disk_io_now", "device", "vda", NULL);
  assert_value(b, 9, 1, "node_disk_flush_requests_total", "device", "vda", NULL);
  assert_value(b, 0, 0, "node_disk_reads_completed_total", "device", "vda1", NULL);
  assert_value(b, 0, 0, "node_disk_reads_completed_total", "device", "loop0", NULL);
  /* An old kernel's 11 fields: no discard/flush series for that device. */
  assert_value(b, 10, 1, "node_disk_reads_completed_total", "device", "nvme0n1", NULL);
  assert_value(b, 0, 0, "node_disk_discards_completed_total", "device", "nvme0n1", NULL);

  /* filesystems: pseudo types and /dev,/proc,/sys mounts skipped, duplicates once. */
  assert_value(b, 0, 1, "node_filesystem_device_error", "mountpoint", "/", NULL);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "mountpoint", "/data", NULL), 1);
  assert_value(b, 1, 1, "node_filesystem_readonly", "mountpoint", "/data", NULL);
  assert_value(b, 0, 1, "node_filesystem_readonly", "mountpoint", "/", NULL);
  assert_string_equal(bu_label(b, "node_filesystem_avail_bytes", "fstype"), "ext4");
  assert_value(b, 1, 1, "node_filesystem_device_error", "mountpoint", "/missing", NULL);
  assert_value(b, 0, 0, "node_filesystem_size_bytes", "mountpoint", "/missing", NULL);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "fstype", "proc", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "fstype", "overlay", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "mountpoint", "/dev/shm", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", NULL), 2);

  /* network */
  assert_value(b, 1234567, 1, "node_network_receive_bytes_total", "device", "eth0", NULL);
  assert_value(b, 3, 1, "node_network_receive_multicast_total", "device", "eth0", NULL);
  assert_value(b, 7654321, 1, "node_network_transmit_bytes_total", "device", "eth0", NULL);
  assert_value(b, 4, 1, "node_network_transmit_errs_total", "device", "eth0", NULL);
  assert_value(b, 5, 1, "node_network_transmit_drop_total", "device", "eth0", NULL);
  assert_value(b, 5000, 1, "node_network_receive_bytes_total", "device", "lo", NULL);
  assert_value(b, 1, 1, "node_network_up", "device", "eth0", NULL);
  assert_value(b, 0, 1, "node_network_up", "device", "lo", NULL);
  assert_value(b, 1500, 1, "node_network_mtu_bytes", "device", "eth0", NULL);

  /* vmstat default field set */
  assert_value(b, 55555, 1, "node_vmstat_pgfault", NULL);
  assert_value(b, 66, 1, "node_vmstat_pgmajfault", NULL);
  assert_value(b, 1, 1, "node_vmstat_oom_kill", NULL);
  assert_value(b, 1111, 1, "node_vmstat_pgpgin", NULL);
  assert_int_equal(bu_find(b, NULL, "node_vmstat_nr_free_pages", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_vmstat_pgsteal_kswapd", NULL), 0);

  /* netstat: node_exporter's default field set, from snmp, netstat and snmp6. */
  assert_value(b, 12, 1, "node_netstat_Tcp_CurrEstab", NULL);
  assert_value(b, 100, 1, "node_netstat_Tcp_ActiveOpens", NULL);
  assert_value(b, 3, 1, "node_netstat_Tcp_InErrs", NULL);
  assert_value(b, 1, 1, "node_netstat_Ip_Forwarding", NULL);
  assert_value(b, 2, 1, "node_netstat_Udp_InErrors", NULL);
  assert_value(b, 5, 1, "node_netstat_TcpExt_ListenOverflows", NULL);
  assert_value(b, 1, 1, "node_netstat_TcpExt_SyncookiesSent", NULL);
  assert_value(b, 11, 1, "node_netstat_TcpExt_TCPTimeouts", NULL);
  assert_value(b, 123456, 1, "node_netstat_IpExt_InOctets", NULL);
  assert_value(b, 2048, 1, "node_netstat_Ip6_InOctets", NULL);
  assert_value(b, 3, 1, "node_netstat_Icmp6_InMsgs", NULL);
  assert_value(b, 7, 1, "node_netstat_Udp6_InDatagrams", NULL);
  assert_value(b, 0, 1, "node_netstat_UdpLite6_InErrors", NULL);
  assert_int_equal(bu_find(b, NULL, "node_netstat_Ip_DefaultTTL", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_netstat_TcpExt_TW", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_netstat_Ip6_InReceives", NULL), 0);
  /* sockstat */
  assert_value(b, 180, 1, "node_sockstat_sockets_used", NULL);
  assert_value(b, 20, 1, "node_sockstat_TCP_inuse", NULL);
  assert_value(b, 30, 1, "node_sockstat_TCP_tw", NULL);
  assert_value(b, 4, 1, "node_sockstat_TCP_mem", NULL);
  assert_value(b, 4.0 * (double)sysconf(_SC_PAGESIZE), 1, "node_sockstat_TCP_mem_bytes", NULL);
  assert_value(b, 0, 1, "node_sockstat_FRAG_memory", NULL);
  assert_int_equal(bu_find(b, NULL, "node_sockstat_FRAG_mem_bytes", NULL), 0);
  assert_value(b, 5, 1, "node_sockstat_TCP6_inuse", NULL);

  assert_value(b, 1600, 1, "node_filefd_allocated", NULL);
  assert_value(b, 9223372036854775807.0, 1, "node_filefd_maximum", NULL);

  assert_value(b, 1, 1, "node_uname_info", "nodename", "fixturehost", "release", "6.1.0-fixture", NULL);
  assert_string_equal(bu_label(b, "node_uname_info", "sysname"), "Linux");
  assert_value(b, 1700000123.456, 1, "node_time_seconds", NULL);

  /* Every series has job and instance. */
  assert_int_equal(bu_find(b, NULL, "node_load1", "job", "node", "instance", "fixture:9100", NULL), 1);
  size_t all = tsdb_batch_series_count(b);
  size_t with_job = 0;
  for (size_t i = 0; i < all; i++) {
    const tsdb_label_t *ls;
    const tsdb_sample_t *ss;
    size_t nl, ns;
    tsdb_batch_get(b, i, &ls, &nl, &ss, &ns);
    assert_int_equal(ns, 1);
    assert_int_equal(ss[0].ts, 1700000123456);
    for (size_t j = 0; j < nl; j++)
      if (strcmp(ls[j].name, "job") == 0 && strcmp(ls[j].value, "node") == 0) with_job++;
  }
  assert_int_equal(with_job, all);
  tsdb_batch_free(b);
  collect_host_free(h);
}

static void test_parts_switch_off(void **state) {
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  opt.cpu = opt.filesystem = opt.uname = false;
  collect_host_t *h = fixture_host(&opt);
  tsdb_batch_t *b = tsdb_batch_new();
  assert_int_equal(collect_host_gather(h, b, 1000, NULL), 0);
  assert_int_equal(bu_count_prefix(b, "node_cpu_"), 0);
  assert_int_equal(bu_find(b, NULL, "node_context_switches_total", NULL), 0);
  assert_int_equal(bu_count_prefix(b, "node_filesystem_"), 0);
  assert_int_equal(bu_find(b, NULL, "node_uname_info", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_load1", NULL), 1);
  tsdb_batch_free(b);
  collect_host_free(h);

  /* Load averages off, processes on: threads still come from /proc/loadavg. */
  collect_host_options_default(&opt);
  opt.loadavg = false;
  h = fixture_host(&opt);
  b = tsdb_batch_new();
  assert_int_equal(collect_host_gather(h, b, 1000, NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_load1", NULL), 0);
  assert_int_equal(bu_find(b, NULL, "node_processes_threads", NULL), 1);
  tsdb_batch_free(b);
  collect_host_free(h);
}

/* A statvfs that hangs on /data (a dead NFS server), counting its calls. */
static atomic_int slow_calls, slow_done, slow_ms = 800;
static int slow_statvfs(const char *path, struct statvfs *st) {
  size_t n = strlen(path);
  if (n >= 5 && strcmp(path + n - 5, "/data") == 0) {
    atomic_fetch_add(&slow_calls, 1);
    usleep((useconds_t)atomic_load(&slow_ms) * 1000);
    int rc = statvfs(path, st);
    atomic_fetch_add(&slow_done, 1);
    return rc;
  }
  return statvfs(path, st);
}

static void test_stuck_mount(void **state) {
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  opt.filesystem_timeout_ms = 100;
  collect_host_t *h = fixture_host(&opt);
  collect_host_set_statvfs(h, slow_statvfs);
  tsdb_batch_t *b = tsdb_batch_new();
  /* Round 1: /data times out (device_error 1, no sizes); the others are reported. */
  int64_t t0 = md_mono_ns();
  assert_int_equal(collect_host_gather(h, b, 1000, NULL), 0);
  assert_true(md_mono_ns() - t0 < 600 * 1000000LL);
  assert_value(b, 1, 1, "node_filesystem_device_error", "mountpoint", "/data", NULL);
  assert_value(b, 0, 0, "node_filesystem_size_bytes", "mountpoint", "/data", NULL);
  assert_value(b, 0, 1, "node_filesystem_device_error", "mountpoint", "/", NULL);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "mountpoint", "/", NULL), 1);
  assert_int_equal(atomic_load(&slow_calls), 1);
  /* Round 2 while the call hangs: /data is not asked again. */
  tsdb_batch_reset(b);
  t0 = md_mono_ns();
  assert_int_equal(collect_host_gather(h, b, 2000, NULL), 0);
  assert_true(md_mono_ns() - t0 < 300 * 1000000LL);
  assert_value(b, 1, 1, "node_filesystem_device_error", "mountpoint", "/data", NULL);
  assert_int_equal(atomic_load(&slow_calls), 1);
  /* Once the call returns, /data is asked again and answers in time. */
  for (int waited = 0; waited < 5000 && atomic_load(&slow_done) < 1; waited += 20)
    usleep(20 * 1000);
  atomic_store(&slow_ms, 0);
  /* The helper clears the mark just after its call returns: a round or two may still skip. */
  for (int tries = 0; tries < 100 && atomic_load(&slow_calls) < 2; tries++) {
    usleep(20 * 1000);
    tsdb_batch_reset(b);
    assert_int_equal(collect_host_gather(h, b, 3000, NULL), 0);
  }
  assert_int_equal(atomic_load(&slow_calls), 2);
  assert_value(b, 0, 1, "node_filesystem_device_error", "mountpoint", "/data", NULL);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_size_bytes", "mountpoint", "/data", NULL), 1);
  /* The collector may go away while a call hangs: the helper finishes on its own. */
  atomic_store(&slow_ms, 300);
  tsdb_batch_reset(b);
  assert_int_equal(collect_host_gather(h, b, 4000, NULL), 0);
  collect_host_free(h);
  tsdb_batch_free(b);
  for (int waited = 0; waited < 5000 && atomic_load(&slow_done) < 3; waited += 20)
    usleep(20 * 1000);
  usleep(50 * 1000); /* the helper frees its state after the call */
}

/* Every mount hangs: they are waited for together, one timeout for the round. */
static atomic_int hang_started, hang_done;
static int hang_statvfs(const char *path, struct statvfs *st) {
  atomic_fetch_add(&hang_started, 1);
  usleep(1000 * 1000);
  int rc = statvfs(path, st);
  atomic_fetch_add(&hang_done, 1);
  return rc;
}

static void test_stuck_mounts_wait_together(void **state) {
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  opt.filesystem_timeout_ms = 400;
  collect_host_t *h = fixture_host(&opt);
  collect_host_set_statvfs(h, hang_statvfs);
  tsdb_batch_t *b = tsdb_batch_new();
  int64_t t0 = md_mono_ns();
  assert_int_equal(collect_host_gather(h, b, 1000, NULL), 0);
  int64_t ms = (md_mono_ns() - t0) / 1000000;
  /* Three mount points (/, /data, /missing): one after the other would take 1.2 s. */
  assert_int_equal(atomic_load(&hang_started), 3);
  if (ms >= 750) fprintf(stderr, "round took %lld ms\n", (long long)ms);
  assert_true(ms < 750);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_device_error", NULL), 3);
  assert_int_equal(bu_count_prefix(b, "node_filesystem_size"), 0);
  collect_host_free(h);
  tsdb_batch_free(b);
  for (int waited = 0; waited < 5000 && atomic_load(&hang_done) < 3; waited += 20)
    usleep(20 * 1000);
  usleep(50 * 1000);
}

/* Stopping cuts a round's wait for hung mounts short: the flag set after 150 ms ends a
 * round that would otherwise wait the full 5 s. */
static atomic_bool cancel_flag;
static void *set_cancel_later(void *arg) {
  usleep(150 * 1000);
  atomic_store(&cancel_flag, true);
  return NULL;
}

static void test_stuck_mount_cancel(void **state) {
  atomic_store(&hang_started, 0);
  atomic_store(&hang_done, 0);
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  opt.filesystem_timeout_ms = 5000;
  collect_host_t *h = fixture_host(&opt);
  collect_host_set_statvfs(h, hang_statvfs);
  atomic_store(&cancel_flag, false);
  collect_host_set_cancel(h, &cancel_flag);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, set_cancel_later, NULL), 0);
  tsdb_batch_t *b = tsdb_batch_new();
  int64_t t0 = md_mono_ns();
  assert_int_equal(collect_host_gather(h, b, 1000, NULL), 0);
  int64_t ms = (md_mono_ns() - t0) / 1000000;
  pthread_join(th, NULL);
  if (ms >= 900) fprintf(stderr, "cancelled round took %lld ms\n", (long long)ms);
  assert_true(ms < 900);
  assert_int_equal(bu_find(b, NULL, "node_filesystem_device_error", NULL), 3);
  collect_host_free(h);
  tsdb_batch_free(b);
  for (int waited = 0; waited < 5000 && atomic_load(&hang_done) < 3; waited += 20)
    usleep(20 * 1000);
  usleep(50 * 1000);
}

static void test_bad_root_and_missing_files(void **state) {
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  opt.root = "/nonexistent/metricsd-root";
  collect_host_t *h = NULL;
  char err[256] = "";
  assert_int_equal(collect_host_new(&opt, &h, err, sizeof err), MD_EINVAL);
  assert_non_null(strstr(err, "not a directory"));

  /* An empty root: every part fails, nothing crashes, time and uname still come. */
  char dir[] = "/tmp/md-collect-empty-XXXXXX";
  assert_non_null(mkdtemp(dir));
  opt.root = dir;
  assert_int_equal(collect_host_new(&opt, &h, err, sizeof err), 0);
  tsdb_batch_t *b = tsdb_batch_new();
  int perr = 0;
  assert_int_equal(collect_host_gather(h, b, 1000, &perr), 0);
  assert_true(perr >= 10);
  assert_int_equal(bu_find(b, NULL, "node_time_seconds", NULL), 1);
  assert_int_equal(bu_count_prefix(b, "node_cpu"), 0);
  tsdb_batch_free(b);
  collect_host_free(h);
  rmdir(dir);
}

static void test_live_machine(void **state) {
  collect_host_options_t opt;
  collect_host_options_default(&opt);
  collect_host_t *h = NULL;
  char err[256];
  assert_int_equal(collect_host_new(&opt, &h, err, sizeof err), 0);
  tsdb_batch_t *b = tsdb_batch_new();
  int perr = -1;
  int64_t t0 = md_mono_ns();
  assert_int_equal(collect_host_gather(h, b, md_now_ms(), &perr), 0);
  double ms = (double)(md_mono_ns() - t0) / 1e6;
  assert_int_equal(perr, 0);
  assert_false(bu_has_duplicates(b));
  double v = 0;
  assert_true(bu_find(b, &v, "node_memory_MemTotal_bytes", NULL) == 1 && v > 0);
  assert_true(bu_find(b, NULL, "node_cpu_seconds_total", "cpu", "0", "mode", "idle", NULL) == 1);
  assert_true(bu_find(b, &v, "node_boot_time_seconds", NULL) == 1 && v > 1e9);
  assert_true(bu_find(b, NULL, "node_network_receive_bytes_total", "device", "lo", NULL) == 1);
  assert_true(bu_find(b, NULL, "node_load1", NULL) == 1);
  assert_true(bu_find(b, NULL, "node_uname_info", NULL) == 1);
  print_message("live host round: %zu series in %.2f ms\n", tsdb_batch_series_count(b), ms);
  tsdb_batch_free(b);
  collect_host_free(h);
}

int main(void) {
  const char *src = getenv("SOURCE_DIR");
  snprintf(fixture, sizeof fixture, "%s/tests/fixtures/proc", src ? src : ".");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_values),     cmocka_unit_test(test_parts_switch_off),
      cmocka_unit_test(test_stuck_mount),        cmocka_unit_test(test_stuck_mounts_wait_together),
      cmocka_unit_test(test_stuck_mount_cancel), cmocka_unit_test(test_bad_root_and_missing_files),
      cmocka_unit_test(test_live_machine),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
