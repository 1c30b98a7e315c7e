#!/usr/bin/env python3
"""promql_bench.py - PromQL query latency: metricsd beside VictoriaMetrics and Prometheus, one run.

    bench/promql_bench.py --bin build-rel/metricsd [--hosts 600] [--hours 3] [--reps 7] [--out DIR]

Dataset: the model of ../shared/bench/gen.py (per host: node_cpu_seconds_total{cpu,mode} x 8,
node_memory_MemTotal/MemAvailable_bytes, node_network_{receive,transmit}_bytes_total,
node_disk_{read,written}_bytes_total, node_filesystem_avail_bytes, node_load1/5/15: 18 series,
labels hostname, region, datacenter, rack, os, service, job, instance; 15 s interval) plus, as
gen.py has no histogram, a classic histogram http_request_duration_seconds_bucket{le} (8 buckets)
on every third host. Default 600 hosts x 3 h: 12,400 series, 8.9 M samples. Deterministic
(seeded), generated here in time order.

Loading: metricsd and VictoriaMetrics (Debian `victoria-metrics`) run side by side and receive the
same Prometheus text with millisecond timestamps on /api/v1/import/prometheus (one sender, ~8 MiB
requests, time order); Prometheus (Debian `prometheus`) is backfilled from the same samples as
OpenMetrics with `promtool tsdb create-blocks-from openmetrics` and started on the blocks. Both
servers are flushed/merged (/internal/force_flush, /internal/force_merge) and left to settle.

Timing: every query gets 1 warm-up and --reps timed runs per server, round-robin across the
servers (so a noisy neighbour hits all three alike); the report gives the median and min wall
time, the server's CPU (user+sys from /proc/PID/stat) per query, a checksum of the result
(series, points, sum of values) to show the servers answered the same question, and the ratios
metricsd / peer of the medians. Every server binds 127.0.0.1 on a free port, uses a fresh
temporary data directory and is stopped by its PID.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")
REGIONS = [("us-east-1", ["us-east-1a", "us-east-1b", "us-east-1c"]), ("us-west-2", ["us-west-2a", "us-west-2b"]),
           ("eu-west-1", ["eu-west-1a", "eu-west-1b", "eu-west-1c"]), ("ap-southeast-1", ["ap-southeast-1a"])]
OSES = ["Ubuntu22.04LTS", "Debian12", "RHEL9"]
SERVICES = ["api", "auth", "billing", "cache", "db", "frontend", "gateway", "queue", "search", "web"]
MODES = ("idle", "iowait", "system", "user")
LE = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"]
STARTED = []


def log(*a):
    print("[%s]" % time.strftime("%H:%M:%S"), *a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ dataset

class Host:
    def __init__(self, i, rng):
        region, dcs = REGIONS[i % len(REGIONS)]
        self.lbl = 'hostname="host_%d",region="%s",datacenter="%s",rack="%d",os="%s",service="%s",' \
                   'job="node",instance="host_%d:9100"' % (i, region, dcs[i % len(dcs)], i % 50, OSES[i % 3],
                                                           SERVICES[i % len(SERVICES)], i)
        self.phase = rng.randrange(0, 15000)
        self.cpu = [rng.randrange(10 ** 6, 10 ** 8) for _ in range(8)]
        self.util = rng.uniform(0.05, 0.9)
        self.mem_total = 1024 ** 3 * rng.choice([8, 16, 32, 64])
        self.mem_avail = self.mem_total // 2
        self.net = [rng.randrange(10 ** 9), rng.randrange(10 ** 9)]
        self.disk = [rng.randrange(10 ** 6) * 512, rng.randrange(10 ** 6) * 512]
        self.fs = 4096 * rng.randrange(10 ** 6, 10 ** 7)
        self.load = [rng.uniform(0.1, 4)] * 3
        # counters start high, as an exporter's do when collection starts (a rate at the data's
        # start is then extrapolated alike by Prometheus 2.x and 3.x semantics)
        self.hist = None
        if i % 3 == 0:
            self.hist = [rng.randrange(10 ** 4, 10 ** 5)] * len(LE)

    def step(self, rng, ts):
        """Lines (without timestamps) of one scrape."""
        out = []
        ticks = 1500 * 2
        for k in range(8):
            mode = MODES[k % 4]
            share = (1 - self.util) if mode == "idle" else self.util / 3
            self.cpu[k] += int(ticks / 2 * share * rng.uniform(0.8, 1.2))
            out.append('node_cpu_seconds_total{%s,cpu="%d",mode="%s"} %d.%02d' % (
                self.lbl, k // 4, mode, *divmod(self.cpu[k], 100)))
        self.util = min(0.99, max(0.01, self.util + rng.uniform(-0.02, 0.02)))
        self.mem_avail = min(self.mem_total, max(0, self.mem_avail + rng.randrange(-50000, 50000) * 1024))
        out.append("node_memory_MemTotal_bytes{%s} %d" % (self.lbl, self.mem_total))
        out.append("node_memory_MemAvailable_bytes{%s} %d" % (self.lbl, self.mem_avail))
        for k, name in enumerate(("receive", "transmit")):
            self.net[k] += rng.randrange(10 ** 5, 10 ** 7)
            out.append('node_network_%s_bytes_total{%s,device="eth0"} %d' % (name, self.lbl, self.net[k]))
        for k, name in enumerate(("read", "written")):
            self.disk[k] += rng.randrange(0, 20000) * 512
            out.append('node_disk_%s_bytes_total{%s,device="sda"} %d' % (name, self.lbl, self.disk[k]))
        self.fs = max(0, self.fs + rng.randrange(-1000, 1000) * 4096)
        out.append('node_filesystem_avail_bytes{%s,device="/dev/sda1",fstype="ext4",mountpoint="/"} %d' % (self.lbl, self.fs))
        l1 = abs(self.load[0] + rng.uniform(-0.3, 0.3))
        self.load = [l1, self.load[1] * 0.95 + l1 * 0.05, self.load[2] * 0.983 + l1 * 0.017]
        for k, name in enumerate(("node_load1", "node_load5", "node_load15")):
            out.append("%s{%s} %.2f" % (name, self.lbl, self.load[k]))
        if self.hist is not None:
            for _ in range(rng.randrange(0, 40)):
                d = rng.expovariate(8.0)
                for k, le in enumerate(LE):
                    if le == "+Inf" or d <= float(le):
                        self.hist[k] += 1
            for k, le in enumerate(LE):
                out.append('http_request_duration_seconds_bucket{%s,le="%s"} %d' % (self.lbl, le, self.hist[k]))
        return out


def generate(hosts, hours, start_ms, om_path, sink, seed=42):
    """Calls sink(prom_text_chunk) with ~8 MiB of 0.0.4 text (ms timestamps) at a time, in time
    order, and writes the same samples as OpenMetrics (s timestamps) to om_path."""
    rng = random.Random(seed)
    hs = [Host(i, rng) for i in range(hosts)]
    steps = int(hours * 3600 // 15)
    chunk, size, samples = [], 0, 0
    with open(om_path, "w") as om:
        for s in range(steps):
            # hosts in order of their phase within this 15 s step: the whole stream is in time order
            for h in sorted(hs, key=lambda h: h.phase):
                ts = start_ms + s * 15000 + h.phase
                lines = h.step(rng, ts)
                samples += len(lines)
                tail_ms, tail_s = " %d\n" % ts, " %d.%03d\n" % divmod(ts, 1000)
                text = tail_ms.join(lines) + tail_ms
                om.write(tail_s.join(lines) + tail_s)
                chunk.append(text)
                size += len(text)
            if size >= 8 << 20:
                sink("".join(chunk))
                chunk, size = [], 0
        if chunk:
            sink("".join(chunk))
        om.write("# EOF\n")
    series = hosts * 18 + len([h for h in hs if h.hist is not None]) * len(LE)
    return series, samples, start_ms + (steps - 1) * 15000 + 14999


# ------------------------------------------------------------------------------ servers

class Server:
    def __init__(self, name, cmd, port, ready, cwd):
        self.name, self.port = name, port
        self.logf = open(os.path.join(cwd, name + ".log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=cwd)
        STARTED.append(self)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: see %s" % (name, self.logf.name))
            try:
                st, _ = self.req("GET", ready, timeout=2)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("%s not ready" % name)

    def req(self, method, path, body=None, headers=None, timeout=600):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def cpu(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def stop_all():
    for s in STARTED:
        try:
            s.stop()
        except Exception:  # noqa: BLE001
            pass


# ------------------------------------------------------------------------------ queries

def queries(start_s, end_s):
    rng = {"start": start_s, "end": end_s, "step": 60}
    return [
        ("Q1", "sum by (mode) (rate(node_cpu_seconds_total[5m])), range 3h step 60s", "/api/v1/query_range",
         dict(rng, query="sum by (mode) (rate(node_cpu_seconds_total[5m]))")),
        ("Q2", "max_over_time(node_load1[1h]) instant", "/api/v1/query",
         {"query": "max_over_time(node_load1[1h])", "time": end_s}),
        ("Q3", "one series, range 3h step 60s", "/api/v1/query_range",
         dict(rng, query='node_memory_MemAvailable_bytes{hostname="host_7"}')),
        ("Q4", 'count({__name__=~".+"}) instant', "/api/v1/query",
         {"query": 'count({__name__=~".+"})', "time": end_s}),
        ("Q5", "topk(10, rate(node_cpu_seconds_total[5m])) instant", "/api/v1/query",
         {"query": "topk(10, rate(node_cpu_seconds_total[5m]))", "time": end_s}),
        ("Q6", "histogram_quantile(0.9, sum by (le) (rate(bucket[5m]))), range 3h step 60s", "/api/v1/query_range",
         dict(rng, query="histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))")),
        ("Q7", "topk(10, rate(...[5m])), range 3h step 60s", "/api/v1/query_range",
         dict(rng, query="topk(10, rate(node_cpu_seconds_total[5m]))")),
    ]


def checksum(body):
    d = json.loads(body)
    if d.get("status") != "success":
        return {"error": str(d.get("error"))[:200]}
    res = d["data"]["result"]
    pts, total = 0, 0.0
    for s in res:
        for _, v in s.get("values") or [s["value"]]:
            pts += 1
            total += float(v)
    return {"series": len(res), "points": pts, "sum": float("%.6g" % total)}


def time_queries(servers, qs, reps):
    out = []
    for qid, desc, path, params in qs:
        url = path + "?" + urllib.parse.urlencode(params)
        rec = {"id": qid, "desc": desc, "query": params["query"], "servers": {}}
        times = {s.name: [] for s in servers}
        cpu = {s.name: 0.0 for s in servers}
        for s in servers:   # warm-up, and the result checksum
            st, body = s.req("GET", url)
            rec["servers"][s.name] = {"check": checksum(body) if st == 200 else {"error": "HTTP %d %s" % (st, body[:200])}}
        for _ in range(reps):
            for s in servers:
                c0 = s.cpu()
                t0 = time.perf_counter()
                st, _ = s.req("GET", url)
                times[s.name].append(time.perf_counter() - t0)
                cpu[s.name] += s.cpu() - c0
        for s in servers:
            r = rec["servers"][s.name]
            r.update({"median_ms": round(statistics.median(times[s.name]) * 1000, 2),
                      "min_ms": round(min(times[s.name]) * 1000, 2),
                      "cpu_ms": round(cpu[s.name] * 1000 / reps, 1)})
        m = rec["servers"]["metricsd"]["median_ms"]
        rec["ratio"] = {s.name: round(m / rec["servers"][s.name]["median_ms"], 3)
                        for s in servers if s.name != "metricsd"}
        log("%s %-60s %s" % (qid, desc[:60], "  ".join("%s %.1f ms" % (n, r["median_ms"])
                                                       for n, r in rec["servers"].items())))
        out.append(rec)
    return out


def report(res):
    names = [n for n in ("metricsd", "victoriametrics", "prometheus")]
    lines = ["# PromQL query latency, one run (%s)" % res["started"], "",
             "%d series, %d samples (%d hosts x %s h, 15 s), %s; %d timed runs per query after 1 warm-up, "
             "round-robin; machine: %s CPUs, load average at start %s." % (
                 res["series"], res["samples"], res["hosts"], res["hours"], res["versions"], res["reps"],
                 res["nproc"], res["loadavg"]), "",
             "| query | " + " | ".join("%s median (min) ms | CPU ms" % n for n in names) +
             " | metricsd/VM | metricsd/Prom |",
             "|---|" + "---|---|" * len(names) + "---|---|"]
    for q in res["queries"]:
        row = ["%s %s" % (q["id"], q["desc"])]
        for n in names:
            r = q["servers"].get(n, {})
            row.append("%s (%s)" % (r.get("median_ms"), r.get("min_ms")))
            row.append(str(r.get("cpu_ms")))
        row += [str(q["ratio"].get("victoriametrics")), str(q["ratio"].get("prometheus"))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Result checksums (series, points, sum of values):", ""]
    for q in res["queries"]:
        lines.append("- %s: " % q["id"] + "; ".join("%s %s" % (n, q["servers"][n]["check"]) for n in names
                                                   if n in q["servers"]))
    lines += ["", "Load: " + "; ".join("%s %s" % kv for kv in res["load"].items())]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="metricsd binary (a Release build)")
    ap.add_argument("--hosts", type=int, default=600)
    ap.add_argument("--hours", type=float, default=3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=None, help="directory for results.json and report.md")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    for tool in ("victoria-metrics", "prometheus", "promtool"):
        if not shutil.which(tool):
            sys.exit("%s not installed (Debian packages victoria-metrics, prometheus)" % tool)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = tempfile.mkdtemp(prefix="promql-bench-")
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "hosts": args.hosts, "hours": args.hours,
           "reps": args.reps, "nproc": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3],
           "load": {}}
    try:
        vers = []
        for pkg in ("victoria-metrics", "prometheus"):
            p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            vers.append("%s %s" % (pkg, p.stdout.strip() or "?"))
        res["versions"] = "; ".join(vers)
        # Recent data (inside every server's retention), ending a few minutes ago.
        now = int(time.time() * 1000)
        start_ms = (now - int(args.hours * 3600000) - 600000) // 60000 * 60000
        md_dir, vm_dir, pr_dir = (os.path.join(tmp, d) for d in ("md", "vm", "prom"))
        os.makedirs(pr_dir)
        cfg = os.path.join(tmp, "metricsd.yml")
        with open(cfg, "w") as f:
            # only the benchmark's data: no host collector, no self-metrics
            f.write("server:\n  self_interval: 0\ncollectors:\n  host: {enabled: false}\n  gpu: {enabled: false}\n")
        port = free_port()
        md = Server("metricsd", [os.path.abspath(args.bin), "serve", "--listen", "127.0.0.1:%d" % port,
                                 "--data-dir", md_dir, "--config", cfg], port, "/ready", tmp)
        port = free_port()
        vm = Server("victoriametrics", ["victoria-metrics", "-httpListenAddr=127.0.0.1:%d" % port,
                                        "-storageDataPath=" + vm_dir, "-retentionPeriod=100y",
                                        "-search.disableCache"], port, "/health", tmp)
        load_s = {"metricsd": 0.0, "victoriametrics": 0.0}
        cpu0 = {s.name: s.cpu() for s in (md, vm)}

        def sink(text):
            body = text.encode()
            for s in (md, vm):
                t0 = time.perf_counter()
                st, b = s.req("POST", "/api/v1/import/prometheus", body, {"Content-Type": "text/plain"})
                load_s[s.name] += time.perf_counter() - t0
                if st not in (200, 204):
                    raise RuntimeError("%s import: HTTP %d %s" % (s.name, st, b[:300]))
        om = os.path.join(tmp, "data.om")
        log("generating and loading %d hosts x %s h into metricsd and VictoriaMetrics" % (args.hosts, args.hours))
        t0 = time.time()
        series, samples, end_ms = generate(args.hosts, args.hours, start_ms, om, sink)
        res.update({"series": series, "samples": samples, "start_ms": start_ms, "end_ms": end_ms})
        for s in (md, vm):
            res["load"][s.name] = "import %.1f s wall, %.1f CPU-s" % (load_s[s.name], s.cpu() - cpu0[s.name])
        log("loaded %d series, %d samples in %.0f s (%s)" % (series, samples, time.time() - t0, res["load"]))
        for s in (md, vm):
            for p in ("/internal/force_flush", "/internal/force_merge"):
                s.req("GET", p)
        log("backfilling Prometheus with promtool")
        t0 = time.perf_counter()
        p = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", om, pr_dir],
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError("promtool: " + (p.stdout + p.stderr)[-2000:])
        res["load"]["prometheus"] = "promtool backfill %.1f s wall" % (time.perf_counter() - t0)
        os.unlink(om)
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        port = free_port()
        pr = Server("prometheus", ["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                                   "--web.listen-address=127.0.0.1:%d" % port, "--storage.tsdb.path=" + pr_dir,
                                   "--storage.tsdb.retention.time=36500d"], port, "/-/ready", tmp)
        log("settling 10 s")
        time.sleep(10)
        for s in (md, vm, pr):
            res["load"][s.name] += ", RSS %.0f MiB" % (s.rss() / 1048576)
        qs = queries(start_ms / 1000.0, end_ms // 1000 * 1.0)
        res["queries"] = time_queries([md, vm, pr], qs, args.reps)
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(res)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "promql.json"), "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(args.out, "promql.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
