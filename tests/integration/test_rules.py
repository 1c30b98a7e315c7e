#!/usr/bin/env python3
"""Black-box tests of rules and alerting: the shipped rule packs (test-rules/check-rules),
rule files evaluated by the server (recording then alerting, ALERTS series, the Prometheus
rules/alerts API), seed 003's runtime rules API with persistence across restarts, delivery
to a real Alertmanager (Debian's prometheus-alertmanager) and to a flaky signed webhook."""
import glob
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtest  # noqa: E402


def wait_for(fn, timeout=30, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def push(srv, text):
    r = srv.post("/api/v1/import/prometheus", text.encode())
    assert r.status == 204, (r.status, r.text)


def firing(srv, name):
    alerts = srv.get("/api/v1/alerts").json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


def test_rule_packs():
    src = mdtest.source_dir()
    packs = sorted(glob.glob(os.path.join(src, "rules", "*.yml")))
    assert len(packs) >= 2, packs
    r = subprocess.run([mdtest.bin_path(), "check-rules"] + packs, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(packs), r.stdout
    tests = sorted(glob.glob(os.path.join(src, "rules", "tests", "*_test.yml")))
    assert len(tests) >= 2, tests
    r = subprocess.run([mdtest.bin_path(), "test-rules"] + tests, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED" not in r.stdout, r.stdout


def test_packs_live_on_the_host_collector():
    """The packs load as they are into a server and work on what metricsd's own host
    collector writes: the utilisation records appear with node_exporter's labels, and
    every rule evaluates without error."""
    src = mdtest.source_dir()
    cfg = ("global:\n  evaluation_interval: 1s\n"
           "collectors:\n  host:\n    enabled: true\n    interval: 1s\n"
           "rule_files:\n  - %s\n  - %s\n" % (os.path.join(src, "rules", "host.yml"),
                                               os.path.join(src, "rules", "gpu.yml")))
    with mdtest.Server(config=cfg) as srv:
        def records():
            q = srv.get("/api/v1/query", params={"query": '{__name__=~"instance:node_.*:ratio"}'})
            return {r["metric"]["__name__"]: r for r in q.json()["data"]["result"]}
        # cpu and memory always; a filesystem record only where the root is not an
        # overlay/tmpfs (containers), which the pack ignores on purpose
        want = ("instance:node_cpu_utilisation:ratio", "instance:node_memory_utilisation:ratio")
        got = wait_for(lambda: all(w in records() for w in want) and records(), timeout=60,
                       what="host pack records")
        mem = got["instance:node_memory_utilisation:ratio"]
        assert mem["metric"]["job"] == "node" and mem["metric"]["instance"], mem
        assert 0 < float(mem["value"][1]) < 1, mem
        fs = got.get("instance:node_filesystem_utilisation:ratio")
        if fs:
            assert fs["metric"]["mountpoint"] and fs["metric"]["fstype"] not in ("tmpfs", "overlay"), fs
        cpu = float(got["instance:node_cpu_utilisation:ratio"]["value"][1])
        assert 0 <= cpu <= 1, cpu

        def health():
            groups = srv.get("/api/v1/rules").json()["data"]["groups"]
            return {(g["name"], r["name"]): (r["health"], r["lastError"]) for g in groups for r in g["rules"]}
        h = wait_for(lambda: all(v[0] != "unknown" for v in health().values()) and health(), timeout=60,
                     what="every rule evaluated")
        assert len(h) == 23, sorted(h)
        assert all(v == ("ok", "") for v in h.values()), {k: v for k, v in h.items() if v[0] != "ok"}


def test_check_rules_rejects_bad_files():
    d = tempfile.mkdtemp()
    try:
        cases = {
            "syntax.yml": "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: sum(up\n",
            "both.yml": "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
            "template.yml": "groups:\n  - name: g\n    rules:\n      - alert: T\n        expr: up\n"
                            "        annotations:\n          x: '{{ range $labels }}{{ end }}'\n",
            "unknown.yml": "groups:\n  - name: g\n    rules:\n      - alert: U\n        expr: up\n        forr: 5m\n",
        }
        for name, text in cases.items():
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(text)
            r = subprocess.run([mdtest.bin_path(), "check-rules", p], capture_output=True, text=True, timeout=60)
            assert r.returncode != 0, (name, r.stdout)
            assert "FAILED" in r.stdout, (name, r.stdout)
        # the message names the rule
        r = subprocess.run([mdtest.bin_path(), "check-rules", os.path.join(d, "unknown.yml")],
                           capture_output=True, text=True, timeout=60)
        assert "forr" in r.stdout and "U" in r.stdout, r.stdout
    finally:
        shutil.rmtree(d)


RULES = """groups:
  - name: demo
    rules:
      - record: job:demo_value:max
        expr: max by (job) (demo_value)
      - alert: DemoHigh
        expr: job:demo_value:max > 5
        for: 2s
        labels: {severity: page}
        annotations:
          summary: "demo of {{ $labels.job }} is {{ $value }}"
"""


def test_test_rules_fails_on_wrong_expectations_and_malformed_files():
    d = tempfile.mkdtemp()
    try:
        with open(os.path.join(d, "r.yml"), "w") as f:
            f.write("groups:\n  - name: g\n    rules:\n      - alert: Up\n        expr: up == 1\n")
        wrong = os.path.join(d, "wrong_test.yml")
        with open(wrong, "w") as f:
            f.write("rule_files: [r.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n"
                    "    input_series:\n      - series: 'up{job=\"a\"}'\n        values: '1x5'\n"
                    "    alert_rule_test:\n      - eval_time: 2m\n        alertname: Up\n        exp_alerts: []\n")
        r = subprocess.run([mdtest.bin_path(), "test-rules", wrong], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "exp:" in r.stdout and 'got: {alertname="Up",job="a"}' in r.stdout, r.stdout
        bad = os.path.join(d, "bad_test.yml")
        with open(bad, "w") as f:
            f.write("rule_files: [r.yml]\ntests:\n  - input_series:\n      - series: 'up{'\n        values: '1 x'\n"
                    "    promql_expr_test:\n      - expr: 'sum('\n")
        r = subprocess.run([mdtest.bin_path(), "test-rules", bad], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "bad input series" in r.stdout and "bad expr" in r.stdout, r.stdout
    finally:
        shutil.rmtree(d)


def config_with(rules_path, extra=""):
    return "global:\n  evaluation_interval: 1s\nrule_files:\n  - %s\n%s" % (rules_path, extra)


def test_file_rules_record_then_alert():
    d = tempfile.mkdtemp()
    try:
        rp = os.path.join(d, "demo.yml")
        with open(rp, "w") as f:
            f.write(RULES)
        with mdtest.Server(config=config_with(rp)) as srv:
            push(srv, 'demo_value{job="a",instance="1"} 3\ndemo_value{job="a",instance="2"} 9\n')
            # pending first (for: 2s), then firing
            wait_for(lambda: [a for a in srv.get("/api/v1/alerts").json()["data"]["alerts"]
                              if a["state"] in ("pending", "firing")], what="pending alert")
            alerts = wait_for(lambda: firing(srv, "DemoHigh"), what="firing alert")
            a = alerts[0]
            assert a["labels"] == {"alertname": "DemoHigh", "job": "a", "severity": "page"}, a
            assert a["annotations"]["summary"] == "demo of a is 9", a
            # the recording rule's output is queryable
            q = srv.get("/api/v1/query", params={"query": "job:demo_value:max"}).json()["data"]["result"]
            assert q and q[0]["value"][1] == "9" and q[0]["metric"]["job"] == "a", q
            # ALERTS series
            q = srv.get("/api/v1/query", params={"query": 'ALERTS{alertstate="firing"}'}).json()["data"]["result"]
            assert q and q[0]["metric"]["alertname"] == "DemoHigh", q
            rules = srv.get("/api/v1/rules").json()["data"]["groups"]
            assert rules[0]["name"] == "demo" and len(rules[0]["rules"]) == 2, rules
            assert rules[0]["rules"][1]["state"] == "firing" and rules[0]["rules"][1]["health"] == "ok", rules
            only_rec = srv.get("/api/v1/rules", params={"type": "record"}).json()["data"]["groups"][0]["rules"]
            assert [r["type"] for r in only_rec] == ["recording"], only_rec
            active = srv.get("/alerts/active").json()["alerts"]
            assert active and active[0]["labels"]["alertname"] == "DemoHigh", active
            # resolves when the value drops
            push(srv, 'demo_value{job="a",instance="2"} 1\n')
            wait_for(lambda: not firing(srv, "DemoHigh"), what="resolution")
    finally:
        shutil.rmtree(d)


def test_runtime_rules_api_and_persistence():
    srv = mdtest.Server(config="global:\n  evaluation_interval: 1s\n").start()
    try:
        bad = srv.post("/alerts/rules", json.dumps({"alert": "X", "expr": "rate(up[5m]"}).encode())
        assert bad.status == 400 and "parse" in bad.text, (bad.status, bad.text)
        bad = srv.post("/alerts/rules", b"{not json")
        assert bad.status == 400, bad.status
        r = srv.post("/alerts/rules", json.dumps({
            "alert": "RtHigh", "expr": "rt_value > 1", "labels": {"team": "x"},
            "annotations": {"summary": "{{ $value }}"}}).encode())
        assert r.status == 201, (r.status, r.text)
        rid = r.json()["id"]
        assert srv.get("/alerts/rules/" + rid).json()["alert"] == "RtHigh"
        push(srv, "rt_value 5\n")
        wait_for(lambda: firing(srv, "RtHigh"), what="runtime rule firing")
        r = srv.put("/alerts/rules/" + rid, json.dumps({"alert": "RtHigh", "expr": "rt_value > 100"}).encode())
        assert r.status == 200, (r.status, r.text)
        assert srv.put("/alerts/rules/nope", json.dumps({"alert": "A", "expr": "up"}).encode()).status == 404
        # another tenant sees nothing
        other = srv.get("/alerts/rules", headers={"X-Scope-OrgID": "other"}).json()["rules"]
        assert other == [], other
        srv.stop()
        srv.start()
        lst = srv.get("/alerts/rules").json()["rules"]
        assert [x["id"] for x in lst] == [rid] and lst[0]["expr"] == "rt_value > 100", lst
        assert srv.delete("/alerts/rules/" + rid).status == 204
        assert srv.delete("/alerts/rules/" + rid).status == 404
        srv.stop()
        srv.start()
        assert srv.get("/alerts/rules").json()["rules"] == []
    finally:
        srv.close()


def test_alertmanager_round_trip():
    am_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not am_bin:
        raise mdtest.Skip("prometheus-alertmanager is not installed")
    d = tempfile.mkdtemp()
    port = mdtest.free_port()
    with open(os.path.join(d, "am.yml"), "w") as f:
        f.write("route:\n  receiver: 'null'\n  group_wait: 0s\nreceivers:\n  - name: 'null'\n")
    am = subprocess.Popen([am_bin, "--config.file=" + os.path.join(d, "am.yml"), "--storage.path=" + d,
                           "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _ok("http://127.0.0.1:%d/-/ready" % port), what="alertmanager ready")
        rp = os.path.join(d, "demo.yml")
        with open(rp, "w") as f:
            f.write(RULES)
        extra = "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:%d']\n" % port
        with mdtest.Server(config=config_with(rp, extra)) as srv:
            push(srv, 'demo_value{job="am"} 42\n')

            def in_am():
                r = mdtest.request("http://127.0.0.1:%d/api/v2/alerts" % port)
                return [a for a in r.json() if a["labels"].get("alertname") == "DemoHigh"]
            got = wait_for(in_am, what="alert in Alertmanager")
            assert got[0]["labels"]["job"] == "am" and got[0]["annotations"]["summary"] == "demo of am is 42", got
            push(srv, 'demo_value{job="am"} 0\n')
            wait_for(lambda: not in_am(), what="resolved alert leaving Alertmanager's active list")
    finally:
        am.terminate()
        try:
            am.wait(10)
        except subprocess.TimeoutExpired:
            am.kill()
        shutil.rmtree(d)


class FakeAlertmanager:
    """Records every POST /api/v2/alerts: (arrival time, list of alerts)."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = self.path == "/api/v2/alerts"
                if ok:
                    with outer.lock:
                        outer.posts.append((time.time(), json.loads(body)))
                self.send_response(200 if ok else 404)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.posts)

    def deliveries(self, instance):
        """Arrival times of the firing alert Many{instance=...}."""
        return [t for t, alerts in self.snapshot() for a in alerts
                if a["labels"].get("alertname") == "Many" and a["labels"].get("instance") == instance]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


NOTIFY_RULES = """groups:
  - name: notify
    rules:
      - record: broken
        expr: '{__name__=~"nt_value|nt_other"}'
      - alert: Many
        expr: nt_value > 0
        annotations:
          summary: "{{ $labels.instance }} is {{ $value }}"
"""


def metric_value(text, name, **labels):
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(('%s="%s"' % kv) in line for kv in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def test_several_alertmanagers_batches_resend_and_self_metrics():
    ams = [FakeAlertmanager(), FakeAlertmanager()]
    d = tempfile.mkdtemp()
    try:
        rp = os.path.join(d, "notify.yml")
        with open(rp, "w") as f:
            f.write(NOTIFY_RULES)
        extra = ("alerting:\n  resend_delay: 3s\n  notification_batch_size: 2\n  alertmanagers:\n"
                 "    - static_configs:\n        - targets: ['127.0.0.1:%d', '127.0.0.1:%d']\n"
                 % (ams[0].port, ams[1].port))
        with mdtest.Server(config=config_with(rp, extra)) as srv:
            push(srv, 'nt_value{instance="a"} 1\nnt_value{instance="b"} 2\nnt_value{instance="c"} 3\n'
                      'nt_other{instance="a"} 1\n')
            for am in ams:
                wait_for(lambda: all(len(am.deliveries(i)) >= 3 for i in "abc"), timeout=60,
                         what="three deliveries of each alert to each Alertmanager")
            # keep the samples fresh is unnecessary: the lookback is 5 m
            for am in ams:
                posts = am.snapshot()
                # batched: never more than notification_batch_size alerts in one POST, and the
                # three alerts of one evaluation need two POSTs
                assert all(len(alerts) <= 2 for _, alerts in posts), [len(a) for _, a in posts]
                assert any(len(alerts) == 2 for _, alerts in posts), [len(a) for _, a in posts]
                # resend interval 3 s with 1 s evaluations: deliveries of a firing alert are
                # 3 s apart on average, not 1 s (the average, because delivery times jitter
                # on a loaded machine while evaluation times do not)
                times = am.deliveries("a")
                avg_gap = (times[-1] - times[0]) / (len(times) - 1)
                assert avg_gap > 2.0, times
                first = posts[0][1][0]
                assert first["labels"]["alertname"] == "Many" and "summary" in first["annotations"], first
                assert first["startsAt"] and first["endsAt"] and "generatorURL" in first, first
            m = srv.get("/metrics").text
            group = "%s;notify" % rp
            evals = metric_value(m, "prometheus_rule_evaluations_total", rule_group=group)
            fails = metric_value(m, "prometheus_rule_evaluation_failures_total", rule_group=group)
            assert evals and evals >= 6, m
            # the broken recording rule fails every time, and the loop goes on
            assert fails and fails >= 3 and fails * 2 <= evals + 2, (evals, fails)
            assert metric_value(m, "prometheus_rule_group_last_duration_seconds", rule_group=group) is not None, m
            last = metric_value(m, "prometheus_rule_group_last_evaluation_timestamp_seconds", rule_group=group)
            assert last and abs(last - time.time()) < 30, last
            assert metric_value(m, "prometheus_rule_group_interval_seconds", rule_group=group) == 1.0, m
            assert metric_value(m, "prometheus_rule_group_rules", rule_group=group) == 2.0, m
            assert metric_value(m, "prometheus_rule_group_iterations_total", rule_group=group) >= 3, m
            for am in ams:
                url = "http://127.0.0.1:%d/api/v2/alerts" % am.port
                sent = metric_value(m, "prometheus_notifications_sent_total", alertmanager=url)
                assert sent and sent >= 9, (url, sent)
                assert metric_value(m, "prometheus_notifications_errors_total", alertmanager=url) == 0.0, m
            assert metric_value(m, "prometheus_notifications_dropped_total") == 0.0, m
            assert metric_value(m, "prometheus_notifications_queue_length") is not None, m
            assert metric_value(m, "prometheus_notifications_queue_capacity") == 10000.0, m
            assert metric_value(m, "prometheus_notifications_alertmanagers_discovered") == 2.0, m
            assert metric_value(m, "metricsd_rules_alerts", state="firing") == 3.0, m
            # resolution reaches both Alertmanagers with endsAt in the past
            push(srv, 'nt_value{instance="a"} 0\n')

            def resolved(am):
                now = time.time()
                for t, alerts in am.snapshot():
                    for a in alerts:
                        if a["labels"].get("instance") == "a" and a["endsAt"] < time.strftime(
                                "%Y-%m-%dT%H:%M:%S", time.gmtime(now + 1)):
                            return True
                return False
            for am in ams:
                wait_for(lambda: resolved(am), what="resolved alert delivered")
    finally:
        for am in ams:
            am.close()
        shutil.rmtree(d)


def test_reload_keeps_state_of_unchanged_alerts():
    """SIGHUP and POST /-/reload re-read the rule files; an unchanged alert keeps its activeAt,
    a changed one starts afresh, a broken file changes nothing."""
    import signal
    d = tempfile.mkdtemp()
    try:
        rp = os.path.join(d, "reload.yml")
        base = ("groups:\n  - name: r\n    rules:\n"
                "      - alert: Kept\n        expr: rl_value > 0\n        for: 1h\n"
                "      - alert: Changed\n        expr: rl_value > 0\n        for: 1h\n")
        with open(rp, "w") as f:
            f.write(base)
        with mdtest.Server(config=config_with(rp)) as srv:
            push(srv, 'rl_value{job="x"} 1\n')

            def active_at():
                alerts = srv.get("/api/v1/alerts").json()["data"]["alerts"]
                return {a["labels"]["alertname"]: a["activeAt"] for a in alerts if a["state"] == "pending"}
            before = wait_for(lambda: len(active_at()) == 2 and active_at(), what="two pending alerts")
            time.sleep(1.2)  # activeAt has a resolution of milliseconds: a restart would show
            with open(rp, "w") as f:
                f.write(base.replace("alert: Changed\n        expr: rl_value > 0", "alert: Changed\n        expr: rl_value > 0.5")
                        + "      - alert: Added\n        expr: rl_value > 0\n        for: 1h\n")
            srv.send_signal(signal.SIGHUP)
            after = wait_for(lambda: len(active_at()) == 3 and active_at(), what="three pending alerts after SIGHUP")
            assert after["Kept"] == before["Kept"], (before, after)
            assert after["Changed"] > before["Changed"], (before, after)
            # a broken file: /-/reload answers an error or logs it, and the rules stay as they were
            with open(rp, "w") as f:
                f.write("groups:\n  - name: r\n    rules:\n      - alert: Broken\n        expr: sum(\n")
            srv.post("/-/reload", b"")
            time.sleep(1.5)
            names = {r["name"] for g in srv.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]}
            assert names == {"Kept", "Changed", "Added"}, names
            assert active_at()["Kept"] == before["Kept"]
    finally:
        shutil.rmtree(d)


def _ok(url):
    try:
        return mdtest.request(url, timeout=2).status == 200
    except Exception:
        return False


def test_webhook_retries_and_signature():
    received, attempts = [], [0]

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            attempts[0] += 1
            if attempts[0] <= 2:  # the first two deliveries fail: the notifier must retry
                self.send_response(503)
                self.end_headers()
                return
            received.append((body, self.headers.get("X-Metricsd-Signature")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Flaky)
    t = threading.Thread(target=hook.serve_forever, daemon=True)
    t.start()
    d = tempfile.mkdtemp()
    try:
        rp = os.path.join(d, "demo.yml")
        with open(rp, "w") as f:
            f.write(RULES)
        extra = ("alerting:\n  webhooks:\n    - url: http://127.0.0.1:%d/hook\n      secret: s3cret\n"
                 % hook.server_address[1])
        with mdtest.Server(config=config_with(rp, extra)) as srv:
            push(srv, 'demo_value{job="wh"} 7\n')
            wait_for(lambda: received, what="webhook delivery after retries")
        body, sig = received[0]
        assert attempts[0] >= 3, attempts
        want = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert sig == "sha256=" + want, (sig, want)
        doc = json.loads(body)
        assert doc["status"] == "firing" and doc["alerts"][0]["labels"]["alertname"] == "DemoHigh", doc
    finally:
        hook.shutdown()
        shutil.rmtree(d)


if __name__ == "__main__":
    mdtest.main(globals())
