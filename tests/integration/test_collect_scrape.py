#!/usr/bin/env python3
"""Black-box scraping tests: metricsd scrapes test targets served by a Python http.server on
127.0.0.1 (ok, slow, timeout, huge, malformed, gzip, OpenMetrics, basic and bearer auth, 500,
a series that disappears, file SD in YAML and JSON) and a real prometheus-node-exporter when
installed; the request headers (Accept negotiation, gzip, timeout), report series, staleness
markers (a series disappears, a source is deleted) and /api/v1/targets's shape (active and
dropped targets) are checked; runtime sources (/metrics/sources) are added, changed, listed with
health, deleted, and survive a restart. Exit 77 (skipped) when the metricsd binary cannot serve
yet."""
import gzip
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SKIP = 77


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


BODY = "# TYPE t_metric gauge\nt_metric{k=\"v\"} 42\nt_other_total 7\n"
OM_BODY = "# TYPE om_events counter\nom_events_total 3\nom_events_created 1700000000\n# EOF\n"
# Request headers of the last scrape of /metrics, and whether /vary still serves vary_metric.
SEEN = {}
VARY = {"on": True}


class Target(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send_text(self, body, status=200, ctype="text/plain; version=0.0.4", extra=None):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/metrics":
            SEEN.update({k: self.headers.get(k, "") for k in
                         ("Accept", "Accept-Encoding", "X-Prometheus-Scrape-Timeout-Seconds", "User-Agent")})
            self.send_text(BODY)
        elif p == "/om":
            self.send_text(OM_BODY, ctype="application/openmetrics-text; version=1.0.0; charset=utf-8")
        elif p == "/bearer":
            if self.headers.get("Authorization") == "Bearer tok3n":
                self.send_text(BODY)
            else:
                self.send_text("no\n", status=401)
        elif p == "/vary":
            self.send_text(BODY + ("vary_metric 1\n" if VARY["on"] else ""))
        elif p == "/slow":
            time.sleep(1.0)
            self.send_text(BODY)
        elif p == "/timeout":
            time.sleep(4.0)
            self.send_text(BODY)
        elif p == "/huge":
            self.send_text("".join("huge_metric{i=\"%d\"} %d\n" % (i, i) for i in range(20000)))
        elif p == "/malformed":
            self.send_text("t_metric{k=\"v\" 42\n")
        elif p == "/gzip":
            self.send_text(gzip.compress(BODY.encode()), extra={"Content-Encoding": "gzip"})
        elif p == "/auth":
            if self.headers.get("Authorization") == "Basic dXNlcjpwYXNz":  # user:pass
                self.send_text(BODY)
            else:
                self.send_text("no\n", status=401)
        elif p == "/fail":
            self.send_text("boom\n", status=500)
        else:
            self.send_text("not found\n", status=404)


def call(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


class Metricsd:
    def __init__(self, binary, data_dir, config_text):
        self.binary, self.data_dir, self.config_text = binary, data_dir, config_text
        self.proc = None

    def start(self):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        cfg = os.path.join(self.data_dir, "..", "metricsd-test.yml")
        with open(cfg, "w") as f:
            f.write(self.config_text)
        self.log = open(os.path.join(self.data_dir, "..", "metricsd.log"), "ab")
        self.proc = subprocess.Popen([self.binary, "--config", cfg, "--listen", "127.0.0.1:%d" % self.port,
                                      "--data-dir", self.data_dir], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if call("GET", self.base + "/ready", timeout=2)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        self.proc = None


def wait_for(fn, timeout=20, step=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def targets(md):
    code, body = call("GET", md.base + "/api/v1/targets")
    assert code == 200, (code, body)
    assert body["status"] == "success"
    return body["data"]


def by_pool(data):
    return {t["scrapePool"]: t for t in data["activeTargets"]}


def main():
    binary = os.environ.get("METRICSD_BIN")
    if not binary or not os.path.exists(binary):
        print("skip: METRICSD_BIN not built")
        return SKIP
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tport = srv.server_address[1]
    taddr = "127.0.0.1:%d" % tport

    node_proc = None
    node_addr = None
    node_bin = shutil.which("prometheus-node-exporter")
    if node_bin:
        nport = free_port()
        node_addr = "127.0.0.1:%d" % nport
        node_proc = subprocess.Popen([node_bin, "--web.listen-address=" + node_addr],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    tmp = tempfile.mkdtemp(prefix="md-collect-it-")
    sd_yaml, sd_json = os.path.join(tmp, "sd.yml"), os.path.join(tmp, "sd.json")
    with open(sd_yaml, "w") as f:
        f.write("- targets: ['%s']\n  labels:\n    sd: yaml\n" % taddr)

    def job(name, path, **extra):
        j = {"job_name": name, "scrape_interval": "1s", "scrape_timeout": "900ms", "metrics_path": path,
             "static_configs": [{"targets": [taddr], "labels": {"suite": "collect"}}]}
        j.update(extra)
        return j

    jobs = [job("ok", "/metrics"), job("slow", "/slow", scrape_interval="3s", scrape_timeout="2s"),
            job("timeout", "/timeout", scrape_interval="2s", scrape_timeout="500ms"),
            job("huge", "/huge", scrape_interval="2s", scrape_timeout="2s"),
            job("huge_limited", "/huge", sample_limit=1000, scrape_interval="2s", scrape_timeout="2s"),
            job("malformed", "/malformed"), job("gzip", "/gzip"),
            job("auth", "/auth", basic_auth={"username": "user", "password": "pass"}),
            job("noauth", "/auth"), job("fail", "/fail"),
            job("relabeled", "/metrics", metric_relabel_configs=[
                {"source_labels": ["__name__"], "regex": "t_other_total", "action": "drop"}]),
            job("om", "/om"), job("bearer", "/bearer", authorization={"credentials": "tok3n"}),
            job("vary", "/vary"),
            job("dropped", "/metrics", relabel_configs=[
                {"source_labels": ["suite"], "regex": "elsewhere", "action": "keep"}]),
            {"job_name": "filesd", "scrape_interval": "1s", "scrape_timeout": "900ms",
             "file_sd_configs": [{"files": [sd_yaml, sd_json]}]}]
    if node_addr:
        jobs.append({"job_name": "node", "scrape_interval": "2s", "scrape_timeout": "2s",
                     "static_configs": [{"targets": [node_addr]}]})
    config = "collectors:\n  gpu:\n    enabled: false\nscrape_configs: " + json.dumps(jobs) + "\n"

    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir)
    md = Metricsd(binary, data_dir, config)
    failures = []
    try:
        if not md.start():
            print("skip: metricsd did not become ready (see %s/metricsd.log)" % tmp)
            return SKIP
        code, _ = call("GET", md.base + "/api/v1/targets")
        if code == 404:
            print("skip: /api/v1/targets not served by this build")
            return SKIP

        want = {"ok": ("up", ""), "slow": ("up", ""), "timeout": ("down", "deadline"), "huge": ("up", ""),
                "huge_limited": ("down", "sample_limit"), "malformed": ("down", ""), "gzip": ("up", ""),
                "auth": ("up", ""), "noauth": ("down", "401"), "fail": ("down", "500"), "relabeled": ("up", ""),
                "om": ("up", ""), "bearer": ("up", ""), "vary": ("up", ""), "filesd": ("up", "")}
        if node_addr:
            want["node"] = ("up", "")

        def settled():
            pools = by_pool(targets(md))
            return pools if all(p in pools and pools[p]["health"] != "unknown" for p in want) else None

        pools = wait_for(settled, timeout=30)
        if not pools:
            failures.append("targets never all scraped: %s" % json.dumps(by_pool(targets(md)), indent=1)[:2000])
        else:
            for name, (health, err) in want.items():
                t = pools[name]
                if t["health"] != health:
                    failures.append("%s: health %s, want %s (lastError %r)" % (name, t["health"], health, t["lastError"]))
                if err and err not in t["lastError"]:
                    failures.append("%s: lastError %r lacks %r" % (name, t["lastError"], err))
                if health == "up" and t["lastError"]:
                    failures.append("%s: up with an error %r" % (name, t["lastError"]))
                if t["labels"].get("job") != name and name not in ("node", "filesd"):
                    failures.append("%s: labels %r" % (name, t["labels"]))
            if pools["ok"]["labels"].get("instance") != taddr or pools["ok"]["labels"].get("suite") != "collect":
                failures.append("ok: target labels %r" % pools["ok"]["labels"])
            if pools["ok"]["scrapeUrl"] != "http://%s/metrics" % taddr:
                failures.append("ok: scrapeUrl %r" % pools["ok"]["scrapeUrl"])
            # Prometheus's shape, key by key.
            keys = {"discoveredLabels", "labels", "scrapePool", "scrapeUrl", "globalUrl", "lastError", "lastScrape",
                    "lastScrapeDuration", "health", "scrapeInterval", "scrapeTimeout"}
            t = pools["ok"]
            if not keys <= set(t):
                failures.append("activeTargets entry lacks %s" % sorted(keys - set(t)))
            elif (t["discoveredLabels"].get("__address__") != taddr or t["scrapeInterval"] != "1s" or
                  t["scrapeTimeout"] != "900ms" or not isinstance(t["lastScrapeDuration"], (int, float)) or
                  not t["lastScrape"].startswith("20")):
                failures.append("ok: targets entry %r" % t)
            if pools["filesd"]["labels"].get("sd") != "yaml" or \
                    pools["filesd"]["discoveredLabels"].get("__meta_filepath") != sd_yaml:
                failures.append("file SD target labels %r" % pools["filesd"])
        data = targets(md)
        dropped = [d for d in data.get("droppedTargets", []) if d["discoveredLabels"].get("job") == "dropped"]
        if len(dropped) != 1 or data.get("droppedTargetCounts", {}).get("dropped") != 1:
            failures.append("dropped target: %r %r" % (dropped, data.get("droppedTargetCounts")))
        if "dropped" in by_pool(data):
            failures.append("a dropped target is active")

        # Request headers: Accept negotiates OpenMetrics first, then text 0.0.4; gzip accepted.
        accept = SEEN.get("Accept", "")
        if not accept.startswith("application/openmetrics-text") or "text/plain;version=0.0.4" not in accept:
            failures.append("Accept header %r" % accept)
        if "gzip" not in SEEN.get("Accept-Encoding", ""):
            failures.append("Accept-Encoding %r" % SEEN.get("Accept-Encoding"))
        if SEEN.get("X-Prometheus-Scrape-Timeout-Seconds") != "0.9":
            failures.append("X-Prometheus-Scrape-Timeout-Seconds %r" % SEEN.get("X-Prometheus-Scrape-Timeout-Seconds"))
        if not SEEN.get("User-Agent", "").startswith("metricsd/"):
            failures.append("User-Agent %r" % SEEN.get("User-Agent"))

        # The scraped series reached the storage, with target labels.
        def series(match):
            code, body = call("GET", md.base + "/api/v1/series?match[]=" + urllib.request.quote(match))
            return body["data"] if code == 200 and isinstance(body, dict) else []

        got = wait_for(lambda: series('t_metric{job="gzip"}'), timeout=10)
        if not got or got[0].get("k") != "v" or got[0].get("instance") != taddr:
            failures.append("t_metric from the gzip job not stored: %r" % got)
        if not wait_for(lambda: series('up{job="noauth"}'), timeout=10):
            failures.append("up{job=noauth} not stored")
        if series('t_other_total{job="relabeled"}'):
            failures.append("metric_relabel_configs drop ignored")
        if not series('scrape_samples_post_metric_relabeling{job="relabeled"}'):
            failures.append("scrape_samples_post_metric_relabeling missing")
        if node_addr and not wait_for(lambda: series('node_cpu_seconds_total{job="node"}'), timeout=10):
            failures.append("node_exporter's node_cpu_seconds_total not stored")
        if series('huge_metric{job="huge_limited"}'):
            failures.append("a scrape over sample_limit stored samples")

        def query(q):
            code, body = call("GET", md.base + "/api/v1/query?query=" + urllib.request.quote(q))
            return body["data"]["result"] if code == 200 and isinstance(body, dict) else None

        def value(q):
            r = query(q)
            return float(r[0]["value"][1]) if r and len(r) == 1 else None

        # Report series of one target (2 samples exposed, 1 left after metric relabeling).
        rep = {"up": 1, "scrape_samples_scraped": 2, "scrape_samples_post_metric_relabeling": 1}
        for name, want_v in rep.items():
            got_v = value('%s{job="relabeled",instance="%s"}' % (name, taddr))
            if got_v != want_v:
                failures.append("%s{job=relabeled} = %r, want %r" % (name, got_v, want_v))
        d = value('scrape_duration_seconds{job="relabeled"}')
        if d is None or not 0 < d < 1:
            failures.append("scrape_duration_seconds{job=relabeled} = %r" % d)
        if value('scrape_series_added{job="relabeled"}') is None:
            failures.append("scrape_series_added{job=relabeled} missing")
        if value('om_events_total{job="om"}') != 3:
            failures.append("OpenMetrics target: om_events_total = %r" % query('om_events_total'))
        if not wait_for(lambda: value('t_metric{job="bearer"}') == 42, timeout=10):
            failures.append("bearer target's t_metric not stored")

        # A series that disappears from its target gets a staleness marker: gone from instant
        # queries at once, not after the 5 minute lookback.
        if value('vary_metric{job="vary"}') != 1:
            failures.append("vary_metric not stored: %r" % query('vary_metric'))
        VARY["on"] = False
        if not wait_for(lambda: query('vary_metric{job="vary"}') == [], timeout=10):
            failures.append("vary_metric not marked stale: %r" % query('vary_metric{job="vary"}'))
        if value('t_metric{job="vary"}') != 42:
            failures.append("t_metric{job=vary} went away with vary_metric")

        # File SD: a JSON file appears beside the YAML one, then the YAML one goes away.
        with open(sd_json + ".tmp", "w") as f:
            json.dump([{"targets": [taddr], "labels": {"sd": "json"}}], f)
        os.rename(sd_json + ".tmp", sd_json)
        if not wait_for(lambda: value('t_metric{job="filesd",sd="json"}') == 42, timeout=20):
            failures.append("file SD JSON target not scraped: %r" % query('t_metric{job="filesd"}'))
        os.unlink(sd_yaml)
        if not wait_for(lambda: query('up{job="filesd",sd="yaml"}') == [], timeout=20):
            failures.append("file SD YAML target removed but not stale: %r" % query('up{job="filesd"}'))

        # Runtime sources: add, list, get, update, delete, persist.
        code, created = call("POST", md.base + "/metrics/sources",
                             {"name": "rt", "url": "http://%s/metrics" % taddr, "scrape_interval": "1s",
                              "labels": {"origin": "api"}})
        if code != 201:
            failures.append("POST /metrics/sources: %s %r" % (code, created))
        else:
            sid = created["id"]
            code, bad = call("POST", md.base + "/metrics/sources", {"url": "gopher://x"})
            if code != 400:
                failures.append("invalid source accepted: %s %r" % (code, bad))
            code, dup = call("POST", md.base + "/metrics/sources", {"id": sid, "targets": [taddr]})
            if code != 409:
                failures.append("duplicate id: %s" % code)

            def healthy():
                c, b = call("GET", md.base + "/metrics/sources/" + sid)
                return b if c == 200 and b["health"]["status"] == "up" else None

            src = wait_for(healthy, timeout=15)
            if not src:
                failures.append("source never healthy: %r" % (call("GET", md.base + "/metrics/sources/" + sid),))
            elif not src["health"]["last_scrape"] or src["health"]["last_error"]:
                failures.append("source health incomplete: %r" % src["health"])
            code, lst = call("GET", md.base + "/metrics/sources")
            if code != 200 or sid not in [s["id"] for s in lst["sources"]]:
                failures.append("GET /metrics/sources: %s %r" % (code, lst))
            code, upd = call("PUT", md.base + "/metrics/sources/" + sid,
                             {"name": "rt", "url": "http://%s/metrics" % taddr, "scrape_interval": "1s",
                              "labels": {"origin": "api2"}})
            if code != 200 or upd["labels"]["origin"] != "api2":
                failures.append("PUT: %s %r" % (code, upd))
            if call("PUT", md.base + "/metrics/sources/nope", {"targets": [taddr]})[0] != 404:
                failures.append("PUT of a missing source not 404")
            if not wait_for(lambda: series('t_metric{job="rt",origin="api2"}'), timeout=10):
                failures.append("updated source's series not stored")
            # Credentials are hidden from readers; the stored ones keep working.
            code, sec = call("POST", md.base + "/metrics/sources",
                             {"id": "secret", "url": "http://%s/auth" % taddr, "scrape_interval": "1s",
                              "basic_auth": {"username": "user", "password": "pass"}})
            if code != 201 or sec["basic_auth"]["password"] != "<secret>":
                failures.append("POST secret source: %s %r" % (code, sec))
            c, b = call("GET", md.base + "/metrics/sources")
            if c != 200 or '"pass"' in json.dumps(b):
                failures.append("GET /metrics/sources shows the password: %r" % b)
            if not wait_for(lambda: value('up{job="secret"}') == 1, timeout=10):
                failures.append("source with basic_auth not up: %r" % query('up{job="secret"}'))
            if call("DELETE", md.base + "/metrics/sources/secret")[0] != 204:
                failures.append("DELETE secret failed")
            code, keep = call("POST", md.base + "/metrics/sources",
                              {"id": "keeper", "targets": [taddr], "scrape_interval": "1s"})
            if code != 201:
                failures.append("POST keeper: %s %r" % (code, keep))
            if not query('t_metric{job="rt"}'):
                failures.append("rt source's series not there before DELETE")
            if call("DELETE", md.base + "/metrics/sources/" + sid)[0] != 204:
                failures.append("DELETE failed")
            # Its series (and report series) are marked stale at once.
            if not wait_for(lambda: query('{job="rt"}') == [], timeout=10):
                failures.append("deleted source's series not stale: %r" % query('{job="rt"}'))
            if call("DELETE", md.base + "/metrics/sources/" + sid)[0] != 404:
                failures.append("second DELETE not 404")

            # Restart on the same data directory: "keeper" is back, "rt" is not.
            md.stop()
            if not md.start():
                failures.append("metricsd did not restart")
            else:
                code, lst = call("GET", md.base + "/metrics/sources")
                ids = [s["id"] for s in lst["sources"]] if code == 200 else []
                if ids != ["keeper"]:
                    failures.append("sources after restart: %r" % ids)
                c, b = call("GET", md.base + "/metrics/sources/keeper")
                if c != 200 or b.get("targets") != [taddr]:
                    failures.append("keeper after restart: %s %r" % (c, b))
    finally:
        md.stop()
        if node_proc:
            node_proc.terminate()
            node_proc.wait(timeout=10)
        srv.shutdown()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        print("metricsd log: %s/metricsd.log" % tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok: %d scrape jobs, sources CRUD and persistence" % len(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
