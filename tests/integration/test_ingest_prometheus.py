#!/usr/bin/env python3
"""Real-client test: a real Prometheus (Debian package) scrapes a real
prometheus-node-exporter every 2 s for ~30 s and remote-writes everything to metricsd on
127.0.0.1. Then, over a window that both have fully received, metricsd must hold the same
series with the same samples as Prometheus's own TSDB (compared through Prometheus's query
API and metricsd's /api/v1/export). Everything runs on free loopback ports in temporary
directories and is stopped by PID. Exit 77 when a binary is missing or metricsd cannot
serve yet."""
import json
import os
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
RUN_SECONDS = 30


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=30):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_ready(url, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            if get(url, 2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def key(labels):
    return tuple(sorted(labels.items()))


def main():
    binary = os.environ.get("METRICSD_BIN")
    prom_bin = shutil.which("prometheus")
    node_bin = shutil.which("prometheus-node-exporter")
    if not binary or not os.path.exists(binary):
        print("skip: METRICSD_BIN not built")
        return SKIP
    if not prom_bin or not node_bin:
        print("skip: prometheus or prometheus-node-exporter not installed")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="md-ingest-prom-")
    nport, pport, mport = free_port(), free_port(), free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 2s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                "remote_write:\n  - url: http://127.0.0.1:%d/api/v1/write\n"
                "    queue_config:\n      batch_send_deadline: 500ms\n      max_shards: 2\n" % (nport, mport))
    with open(os.path.join(tmp, "metricsd.yml"), "w") as f:
        f.write("collectors:\n  host:\n    enabled: false\n  gpu:\n    enabled: false\n")
    logs = [open(os.path.join(tmp, n + ".log"), "wb") for n in ("node", "prometheus", "metricsd")]
    procs = []
    failures = []
    try:
        md = subprocess.Popen([binary, "--config", os.path.join(tmp, "metricsd.yml"), "--listen",
                               "127.0.0.1:%d" % mport, "--data-dir", os.path.join(tmp, "md-data")],
                              stdout=logs[2], stderr=logs[2])
        procs.append(md)
        if not wait_ready("http://127.0.0.1:%d/ready" % mport, md):
            print("skip: metricsd did not become ready (see %s/metricsd.log)" % tmp)
            return SKIP
        node = subprocess.Popen([node_bin, "--web.listen-address=127.0.0.1:%d" % nport], stdout=logs[0],
                                stderr=logs[0])
        procs.append(node)
        prom = subprocess.Popen([prom_bin, "--config.file", os.path.join(tmp, "prometheus.yml"),
                                 "--storage.tsdb.path", os.path.join(tmp, "prom-data"),
                                 "--web.listen-address", "127.0.0.1:%d" % pport], stdout=logs[1], stderr=logs[1])
        procs.append(prom)
        if not wait_ready("http://127.0.0.1:%d/-/ready" % pport, prom, 60):
            print("skip: prometheus did not start (see %s/prometheus.log)" % tmp)
            return SKIP
        time.sleep(RUN_SECONDS)
        # Window: everything scraped until 6 s ago has been remote-written by now
        # (batch_send_deadline 0.5 s); start after the first scrapes.
        end_ms = int(time.time() * 1000) - 6000
        start_ms = end_ms - (RUN_SECONDS - 10) * 1000
        rng = (end_ms - start_ms) // 1000
        q = urllib.parse.urlencode({"query": '{job="node"}[%ds]' % rng, "time": "%.3f" % (end_ms / 1000.0)})
        code, body = get("http://127.0.0.1:%d/api/v1/query?%s" % (pport, q))
        if code != 200:
            failures.append("prometheus query: %s %s" % (code, body[:300]))
            theirs = {}
        else:
            theirs = {}
            for s in json.loads(body)["data"]["result"]:
                pts = [(int(round(float(t) * 1000)), float(v)) for t, v in s["values"]]
                theirs[key(s["metric"])] = [p for p in pts if start_ms < p[0] <= end_ms]
        sel = urllib.parse.quote('{job="node"}')
        code, body = get("http://127.0.0.1:%d/api/v1/export?match[]=%s&start=%.3f&end=%.3f"
                         % (mport, sel, (start_ms + 1) / 1000.0, end_ms / 1000.0))
        ours = {}
        if code != 200:
            failures.append("metricsd export: %s %s" % (code, body[:300]))
        else:
            for line in body.splitlines():
                if not line.strip():
                    continue
                s = json.loads(line)
                vals = [float(v) for v in s["values"]]
                ours[key(s["metric"])] = [p for p in zip(s["timestamps"], vals) if start_ms < p[0] <= end_ms]
        theirs = {k: v for k, v in theirs.items() if v}
        ours = {k: v for k, v in ours.items() if v}
        if len(theirs) < 50:
            failures.append("prometheus holds only %d node series (test assumption)" % len(theirs))
        missing = [k for k in theirs if k not in ours]
        extra = [k for k in ours if k not in theirs]
        if missing:
            failures.append("%d series missing in metricsd, e.g. %s" % (len(missing), dict(missing[0])))
        if extra:
            failures.append("%d series only in metricsd, e.g. %s" % (len(extra), dict(extra[0])))
        diff = 0
        example = None
        for k, pts in theirs.items():
            mine = ours.get(k)
            if mine is None:
                continue
            same = len(mine) == len(pts) and all(
                a[0] == b[0] and (a[1] == b[1] or (a[1] != a[1] and b[1] != b[1])) for a, b in zip(mine, pts))
            if not same:
                diff += 1
                example = example or (dict(k), pts[:3], mine[:3])
        if diff:
            failures.append("%d series differ in samples, e.g. %r" % (diff, example))
        nsamples = sum(len(v) for v in theirs.values())
    finally:
        for p in reversed(procs):
            stop(p)
        for l in logs:
            l.close()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures) + "\n(logs in %s)" % tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok: %d series, %d samples identical in Prometheus and metricsd" % (len(theirs), nsamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
