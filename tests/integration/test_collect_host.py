#!/usr/bin/env python3
"""Black-box host and GPU collector test: metricsd's host collector, run against the live
machine, must use prometheus-node-exporter's metric names and label names (a real
node_exporter is started on 127.0.0.1 and compared with); the GPU collector runs against the
fake NVML library the build produces (tests/fakenvml) and stores DCGM-named series; /health
reports the collectors. Exit 77 when metricsd cannot serve yet or node_exporter is absent."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77

# Names every Linux host has, that both must produce.
CORE = ["node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
        "node_memory_SwapTotal_bytes", "node_load1", "node_load5", "node_load15", "node_context_switches_total",
        "node_forks_total", "node_intr_total", "node_boot_time_seconds", "node_time_seconds", "node_procs_running",
        "node_procs_blocked", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
        "node_filefd_allocated", "node_filefd_maximum", "node_uname_info", "node_vmstat_pgfault",
        "node_netstat_Tcp_CurrEstab", "node_sockstat_sockets_used", "node_processes_threads", "node_processes_pids",
        "node_network_receive_packets_total", "node_network_receive_errs_total", "node_network_receive_drop_total",
        "node_network_transmit_packets_total", "node_network_transmit_errs_total", "node_network_transmit_drop_total",
        "node_network_up", "node_network_mtu_bytes", "node_cpu_guest_seconds_total"]
# Names that depend on the machine having a disk or a real file system: metricsd must have them
# whenever node_exporter has them.
IF_PRESENT = ["node_disk_reads_completed_total", "node_disk_read_bytes_total", "node_disk_written_bytes_total",
              "node_disk_io_time_seconds_total", "node_filesystem_size_bytes", "node_filesystem_avail_bytes",
              "node_filesystem_free_bytes", "node_filesystem_files", "node_filesystem_readonly"]


# metricsd's device and mount filters are upstream node_exporter's defaults (diskstats: those of
# 1.6+, which also skip zram). Debian's 1.5.0 package patches its defaults (it drops lo and
# mounts under /run, /mnt, /media, and keeps zram), so the reference is started with upstream's.
UPSTREAM = ["--collector.netdev.device-exclude=",
            "--collector.filesystem.mount-points-exclude="
            "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
            "--collector.diskstats.device-exclude=^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$"]

# Values compared series by series: name -> (absolute, relative) tolerance. Sizes cannot move
# between two reads; counters may, by about the time between them (a second or two, more on a
# loaded machine): CPU seconds per cpu and mode, I/O operations.
VALUES = {"node_memory_MemTotal_bytes": (0, 0), "node_memory_SwapTotal_bytes": (0, 0),
          "node_filefd_maximum": (0, 0), "node_boot_time_seconds": (1, 0), "node_filesystem_size_bytes": (0, 0),
          "node_network_mtu_bytes": (0, 0), "node_uname_info": (0, 0), "node_cpu_seconds_total": (6, 0.01),
          "node_disk_reads_completed_total": (1000, 0.01), "node_network_receive_packets_total": (5000, 0.01)}


def documented_gpu_names(source_dir):
    """The GPU metric names of docs/collectors.md's table ("`DCGM_FI_DEV_SM_CLOCK`, `_MEM_CLOCK`"
    abbreviates DCGM_FI_DEV_MEM_CLOCK), or None when the docs are not at hand."""
    path = os.path.join(source_dir, "docs", "collectors.md")
    if not source_dir or not os.path.exists(path):
        return None
    names = set()
    for line in open(path, encoding="utf-8"):
        if not (line.startswith("| `DCGM_FI_DEV_") or line.startswith("| `gpu_")):
            continue
        for tok in re.findall(r"`([A-Za-z_]+)`", line.split("|")[1]):
            names.add("DCGM_FI_DEV" + tok if tok.startswith("_") else tok)
    return names


def documented_host_names(source_dir):
    """(literal names, regexes) of docs/collectors.md's host table: `<Field>` is a pattern,
    `{a,b}` alternatives, "`node_disk_reads_completed_total`, `_reads_merged_total`" an
    abbreviation of node_disk_reads_merged_total; names quoted in the notes column count too
    (node_memory_HugePages_Total). None when the docs are not at hand."""
    path = os.path.join(source_dir, "docs", "collectors.md")
    if not source_dir or not os.path.exists(path):
        return None
    literal, patterns = set(), []
    for line in open(path, encoding="utf-8"):
        if not line.startswith("| `node_"):
            continue
        cells = line.split("|")
        prefix = None
        for tok in re.findall(r"`([^`]+)`", cells[1]):
            if tok.startswith("_") and prefix:
                tok = prefix + tok
            elif tok.startswith("node_"):
                prefix = "_".join(tok.split("_")[:2])
            if "<" in tok or "{" in tok:
                rx = re.sub(r"<[^>]+>", "[A-Za-z0-9_]+", tok)
                rx = re.sub(r"\{([^}]+)\}", lambda m: "(" + m.group(1).replace(",", "|") + ")", rx)
                patterns.append(re.compile("^" + rx + "$"))
            else:
                literal.add(tok)
        for tok in re.findall(r"`(node_[A-Za-z0-9_]+)`", "|".join(cells[2:])):
            literal.add(tok)
    return literal, patterns


GPU_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id", "job", "instance"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


LINE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def exposition_series(text):
    """({metric name: set of label sets}, {(metric name, label set): value}) from a text
    exposition; a label set is a frozenset of (name, value)."""
    series, values = {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            continue
        labels = frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in PAIR.findall(m.group(2) or ""))
        series.setdefault(m.group(1), set()).add(labels)
        values[(m.group(1), labels)] = float(m.group(3))
    return series, values


def show(labelsets):
    return sorted(dict(ls) for ls in labelsets)[:3]


def main():
    binary = os.environ.get("METRICSD_BIN")
    build = os.environ.get("BUILD_DIR", "")
    node_bin = shutil.which("prometheus-node-exporter")
    if not binary or not os.path.exists(binary):
        print("skip: METRICSD_BIN not built")
        return SKIP
    if not node_bin:
        print("skip: prometheus-node-exporter not installed")
        return SKIP
    fake = os.path.join(build, "tests", "fakenvml", "libnvidia-ml.so.1")
    tmp = tempfile.mkdtemp(prefix="md-collect-host-")
    cfg = os.path.join(tmp, "metricsd.yml")
    with open(cfg, "w") as f:
        f.write("collectors:\n  host:\n    interval: 1s\n  gpu:\n    interval: 1s\n")
        if os.path.exists(fake):
            f.write("    nvml_library: %s\n" % json.dumps(fake))
    nport, mport = free_port(), free_port()
    node = subprocess.Popen([node_bin, "--web.listen-address=127.0.0.1:%d" % nport, "--collector.processes"] + UPSTREAM,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(os.path.join(tmp, "metricsd.log"), "wb")
    md = subprocess.Popen([binary, "--config", cfg, "--listen", "127.0.0.1:%d" % mport, "--data-dir",
                           os.path.join(tmp, "data")], stdout=log, stderr=log)
    base = "http://127.0.0.1:%d" % mport
    failures = []
    try:
        deadline = time.time() + 30
        ready = False
        while time.time() < deadline and md.poll() is None:
            try:
                if get(base + "/ready", 2)[0] == 200:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not ready:
            print("skip: metricsd did not become ready (see %s/metricsd.log)" % tmp)
            return SKIP
        time.sleep(2.5)  # two host rounds
        code, text = get("http://127.0.0.1:%d/metrics" % nport)
        if code != 200:
            print("skip: node_exporter did not answer")
            return SKIP
        theirs, their_values = exposition_series(text)

        q = urllib.parse.quote('{job="node",__name__=~"node_.*"}')
        code, body = get(base + "/api/v1/series?match[]=" + q)
        if code != 200:
            failures.append("series API: %s %s" % (code, body[:300]))
            ours = {}
        else:
            ours = {}
            for s in json.loads(body)["data"]:
                ours.setdefault(s["__name__"], set()).add(
                    frozenset((k, v) for k, v in s.items() if k not in ("__name__", "job", "instance")))
        for name in CORE:
            if name not in ours:
                failures.append("metricsd lacks %s" % name)
            if name not in theirs:
                failures.append("node_exporter lacks %s (test assumption)" % name)
        for name in IF_PRESENT:
            if name in theirs and name not in ours:
                failures.append("metricsd lacks %s (node_exporter has it)" % name)
        for name, labels in sorted(ours.items()):
            if name not in theirs:
                failures.append("%s: not a node_exporter name" % name)
            elif labels != theirs[name]:
                # The same series: label names and values (cpu, mode, device, mountpoint, ...).
                failures.append("%s: only metricsd has %s; only node_exporter has %s" %
                                (name, show(labels - theirs[name]), show(theirs[name] - labels)))
        docs = documented_host_names(os.environ.get("SOURCE_DIR", ""))
        if docs is not None:
            literal, patterns = docs
            undocumented = sorted(n for n in ours if n not in literal and not any(p.match(n) for p in patterns))
            if undocumented:
                failures.append("stored but not in docs/collectors.md: %s" % undocumented)
            # Listed names this machine has (node_exporter sees them too) must be stored.
            missing = sorted(n for n in literal if n not in ours and n in theirs)
            if missing:
                failures.append("in docs/collectors.md but not stored: %s" % missing)
        compared = 0
        for name, (tol_abs, tol_rel) in VALUES.items():
            if name not in theirs:
                continue
            code, body = get(base + "/api/v1/query?query=" + urllib.parse.quote(name + '{job="node"}'))
            res = json.loads(body)["data"]["result"] if code == 200 else []
            if len(res) != len(theirs[name]):
                failures.append("%s: query answered %s %s" % (name, code, body[:200]))
                continue
            for r in res:
                ls = frozenset((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))
                ours_v, theirs_v = float(r["value"][1]), their_values.get((name, ls))
                compared += 1
                if theirs_v is None or abs(ours_v - theirs_v) > tol_abs + tol_rel * abs(theirs_v):
                    failures.append("%s%s: metricsd %s, node_exporter %s" % (name, dict(ls), ours_v, theirs_v))
        if compared < 20:
            failures.append("only %d values compared" % compared)

        if os.path.exists(fake):
            q = urllib.parse.quote('{__name__=~"DCGM_FI_DEV_.*"}')
            code, body = get(base + "/api/v1/series?match[]=" + q)
            gpus = json.loads(body)["data"] if code == 200 else []
            temps = [s for s in gpus if s["__name__"] == "DCGM_FI_DEV_GPU_TEMP"]
            if sorted(s.get("gpu") for s in temps) != ["0", "1"]:
                failures.append("fake GPUs: DCGM_FI_DEV_GPU_TEMP series %r" % temps)
            elif not all(s.get("UUID") and s.get("modelName") for s in temps):
                failures.append("fake GPUs: labels %r" % temps)
            # The binary stores exactly the documented GPU names (the fake implements every
            # entry point), each with DCGM exporter's labels.
            documented = documented_gpu_names(os.environ.get("SOURCE_DIR", ""))
            stored = {s["__name__"] for s in gpus}
            q = urllib.parse.quote('{job="gpu",__name__=~"gpu_.*"}')
            code, body = get(base + "/api/v1/series?match[]=" + q)
            extra = json.loads(body)["data"] if code == 200 else []
            stored |= {s["__name__"] for s in extra}
            if documented is not None:
                if len(documented) < 20 or documented != stored:
                    failures.append("GPU names: documented only %s; stored only %s" %
                                    (sorted(documented - stored), sorted(stored - documented)))
            for s in gpus + extra:
                have = set(s) - {"__name__"}
                if s["__name__"] == "gpu_process_memory_used_bytes":
                    # process_name is absent when the pid is not in our /proc (the fake's pids).
                    have.discard("process_name")
                    if not s.get("pid"):
                        failures.append("gpu_process_memory_used_bytes without pid: %r" % s)
                    have.discard("pid")
                if have != GPU_LABELS:
                    failures.append("%s: labels %s" % (s["__name__"], sorted(set(s) - {"__name__"})))
                    break
        code, health = get(base + "/health")
        if "gpu" not in health or "collectors" not in health:
            failures.append("/health does not report the collectors: %s" % health[:400])
    finally:
        md.send_signal(signal.SIGTERM)
        try:
            md.wait(timeout=20)
        except subprocess.TimeoutExpired:
            md.kill()
        log.close()
        node.terminate()
        node.wait(timeout=10)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok: %d node_* names, %d series match node_exporter's (names, label names and values); %d values agree" %
          (len(ours), sum(len(v) for v in ours.values()), compared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
