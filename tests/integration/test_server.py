#!/usr/bin/env python3
"""Black-box tests of the server foundation: health/ready/stats, /metrics exposition (strict
checker + promtool), routing errors (404/405/413), request ids and gzip, the auth matrix
from a config file, SIGHUP and POST /-/reload, graceful SIGTERM, and the command line."""

import base64
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtest  # noqa: E402


def test_health_ready_stats():
    with mdtest.Server() as srv:
        r = srv.get("/health")
        assert r.status == 200, r
        h = r.json()
        assert h["service"] == "metricsd" and h["status"] == "ok", h
        assert isinstance(h["uptime_seconds"], int) and h["uptime_seconds"] >= 0
        for dep in ("storage", "wal", "collectors", "notifiers"):
            assert dep in h["dependencies"], h
        assert h["dependencies"]["storage"] == "ok"
        assert h["version"] and h["commit"]
        assert srv.get("/ready").status == 200
        assert srv.get("/-/healthy").status == 200
        assert srv.get("/-/ready").text.startswith("metricsd is Ready")
        s = srv.get("/metrics/stats")
        assert s.status == 200, s
        st = s.json()
        for section, keys in (("collector", ("total_points", "total_series", "dropped_points")),
                              ("aggregator", ("total_windows", "aggregated_series")),
                              ("exporter", ("total_exports", "last_export"))):
            for k in keys:
                assert k in st[section], (section, k, st)
        assert st["timestamp"].endswith("Z")


def test_metrics_exposition():
    with mdtest.Server() as srv:
        for _ in range(3):
            srv.get("/health")
        srv.get("/no/such/path")
        r = srv.get("/metrics")
        assert r.status == 200, r
        assert r.header("content-type").startswith("text/plain"), r.headers
        text = r.text
        samples = mdtest.check_exposition(text)
        names = {s[0] for s in samples}
        for want in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                     "process_max_fds", "process_start_time_seconds", "process_threads",
                     "metrics_collected_total", "metrics_series_total", "metrics_points_total",
                     "metrics_exported_total", "metrics_errors_total", "http_requests_total",
                     "http_request_duration_seconds_bucket"):
            assert want in names, (want, sorted(names))
        health = [v for n, l, v, _ in samples
                  if n == "http_requests_total" and l.get("handler") == "/health" and l.get("code") == "200"]
        assert health and health[0] >= 3, health
        rss = [v for n, l, v, _ in samples if n == "process_resident_memory_bytes"]
        assert rss[0] > 1e6
        res = mdtest.promtool_check(text, mdtest.STANDARD_LINT_ALLOW)
        if res is not None:
            ok, out = res
            assert ok, out
        # OpenMetrics by parameter
        r = srv.get("/metrics?format=openmetrics")
        assert "openmetrics" in r.header("content-type"), r.headers
        mdtest.check_exposition(r.text, openmetrics=True)
        # gzip when asked
        r = srv.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert r.raw_encoding == "gzip", r.headers
        mdtest.check_exposition(r.text)


def test_self_metrics_stored():
    with mdtest.Server(args=["--set", "server.self_interval=1s"]) as srv:
        deadline = time.time() + 15
        result = []
        while time.time() < deadline:
            r = srv.get("/api/v1/query", params={"query": 'up{job="metricsd"}'})
            if r.status == 404:
                raise mdtest.Skip("Prometheus API not built in")
            result = r.json()["data"]["result"]
            if result:
                break
            time.sleep(0.3)
        assert result and result[0]["value"][1] == "1", result
        assert result[0]["metric"]["instance"] == "127.0.0.1:%d" % srv.port, result
        r = srv.get("/api/v1/query", params={"query": 'process_resident_memory_bytes{job="metricsd"}'})
        assert float(r.json()["data"]["result"][0]["value"][1]) > 1e6


def test_routing_errors_and_limits():
    with mdtest.Server(args=["--set", "server.max_body_bytes=1KiB"]) as srv:
        r = srv.get("/definitely/not/here")
        assert r.status == 404 and r.json()["success"] is False, r
        r = srv.get("/api/v1/definitely-not-here")
        assert r.status == 404 and r.json()["status"] == "error", r
        r = srv.delete("/health")
        assert r.status == 405 and "GET" in r.header("allow"), r
        r = srv.post("/-/reload", b"x" * 5000)
        assert r.status == 413, r
        assert "limit" in r.json()["error"]
        r = srv.get("/health", headers={"X-Request-ID": "abc-123"})
        assert r.header("x-request-id") == "abc-123"
        assert len(srv.get("/health").header("x-request-id")) >= 8


AUTH_CONFIG = """
server:
  log_level: info
  auth_keys:
    - {name: reader, token: read-secret, tenant: acme, roles: [read]}
    - {name: writer, token: write-secret, tenant: acme, roles: [read, write]}
    - {name: admin, token: admin-secret, roles: admin, username: ops}
"""


def test_auth_matrix():
    with mdtest.Server(config=AUTH_CONFIG) as srv:
        basic = "Basic " + base64.b64encode(b"ops:admin-secret").decode()
        cases = [
            ("GET", "/health", {}, 200),
            ("GET", "/ready", {}, 200),
            ("GET", "/metrics/stats", {}, 401),
            ("GET", "/metrics/stats", {"Authorization": "Bearer wrong"}, 401),
            ("GET", "/metrics/stats", {"Authorization": "Bearer read-secret"}, 200),
            ("GET", "/metrics/stats", {"X-API-Key": "write-secret"}, 200),
            ("GET", "/metrics", {"Authorization": basic}, 200),
            ("POST", "/-/reload", {"Authorization": "Bearer read-secret"}, 403),
            ("POST", "/-/reload", {"X-API-Key": "write-secret"}, 403),
            ("POST", "/-/reload", {"Authorization": basic}, 200),
            ("POST", "/-/reload", {"Authorization": "Basic " + base64.b64encode(b"eve:admin-secret").decode()}, 401),
        ]
        for method, path, headers, want in cases:
            r = srv.request(method, path, b"" if method == "POST" else None, headers)
            assert r.status == want, (method, path, headers, r)
            if want == 401:
                assert r.header("www-authenticate"), r.headers
        # a tenant header cannot move a keyed request to another tenant
        r = srv.get("/metrics/stats", headers={"Authorization": "Bearer read-secret", "X-Scope-OrgID": "other"})
        assert r.status == 200


TENANT_CONFIG = """
server:
  auth_keys:
    - {token: acme-w, tenant: acme, roles: [read, write]}
    - {token: acme-r, tenant: acme, roles: [read]}
    - {token: other-r, tenant: other, roles: [read]}
"""


def test_tenant_override_attempt():
    with mdtest.Server(config=TENANT_CONFIG) as srv:
        r = srv.post("/api/v1/import/prometheus", b'tenant_probe{x="1"} 42\n',
                     headers={"X-API-Key": "acme-w", "X-Scope-OrgID": "other"})
        if r.status == 404:
            raise mdtest.Skip("ingest endpoints not built in")
        assert r.status in (200, 204), r

        def query(key, org=None):
            h = {"X-API-Key": key}
            if org:
                h["X-Scope-OrgID"] = org
            r = srv.get("/api/v1/query", params={"query": "tenant_probe"}, headers=h)
            assert r.status == 200, r
            return r.json()["data"]["result"]

        deadline = time.time() + 10
        while not query("acme-r") and time.time() < deadline:
            time.sleep(0.1)
        assert [s["value"][1] for s in query("acme-r")] == ["42"]  # stored under the key's tenant
        assert query("other-r") == []                              # not under the header's
        assert query("other-r", org="acme") == []                  # and a header cannot read it


def test_slow_client_is_cut_off():
    import socket
    with mdtest.Server(args=["--set", "server.read_timeout=1s"]) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        t0 = time.time()
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        took = time.time() - t0
        s.close()
        assert took < 5, "idle connection kept %.1fs" % took
        assert srv.get("/health").status == 200  # the server is fine


def test_tls():
    import shutil
    import tempfile
    if not shutil.which("openssl"):
        raise mdtest.Skip("openssl not installed")
    d = tempfile.mkdtemp(prefix="metricsd-tls-")
    try:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=127.0.0.1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        if p.returncode != 0:
            raise mdtest.Skip("openssl could not make a certificate")
        cfg = "server:\n  tls_cert_file: %s\n  tls_key_file: %s\n" % (cert, key)
        with mdtest.Server(config=cfg, https=True) as srv:
            r = srv.get("/health")
            assert r.status == 200 and r.json()["status"] == "ok", r
            import http.client
            try:  # plain HTTP on the TLS port gets no HTTP answer
                plain = mdtest.request("http://127.0.0.1:%d/health" % srv.port, timeout=5)
            except (OSError, http.client.HTTPException):
                plain = None
            assert plain is None or plain.status != 200, plain
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sighup_reload():
    cfg = "server:\n  log_level: info\n  auth_keys: [{token: old-key, roles: admin}]\n"
    with mdtest.Server(config=cfg) as srv:
        assert srv.get("/metrics/stats", headers={"X-API-Key": "old-key"}).status == 200
        assert '"path":"/health"' not in srv.logs()
        srv.write_config("server:\n  log_level: debug\n  auth_keys: [{token: new-key, roles: admin}]\n")
        srv.send_signal(signal.SIGHUP)
        assert srv.wait_log("configuration reloaded"), srv.logs()
        assert srv.get("/metrics/stats", headers={"X-API-Key": "old-key"}).status == 401
        assert srv.get("/metrics/stats", headers={"X-API-Key": "new-key"}).status == 200
        srv.get("/health")
        assert srv.wait_log(r'"path":"/health"'), "no access log line at debug level"
        # a broken file is refused and the running configuration kept
        srv.write_config("server:\n  log_level: chatty\n")
        r = srv.post("/-/reload", b"", headers={"X-API-Key": "new-key"})
        assert r.status == 400 and "server.log_level" in r.json()["error"], r
        assert srv.get("/metrics/stats", headers={"X-API-Key": "new-key"}).status == 200


def test_sigterm_graceful():
    srv = mdtest.Server()
    srv.start()
    try:
        assert srv.get("/health").status == 200
        code, took = srv.stop(timeout=10)
        assert code == 0, (code, srv.logs())
        assert took < 5, took
        assert "stopped" in srv.logs()
    finally:
        srv.close()


def test_command_line():
    b = mdtest.bin_path()
    out = subprocess.run([b, "--version"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
    assert out.startswith("metricsd ") and "commit" in out, out
    out = subprocess.run([b, "--help"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
    assert "--listen" in out and "check-config" in out
    tmp = mdtest.Server(config="server: {listen: ':9999'}\nstorage: {retention: 30d}\n")
    try:
        p = subprocess.run([b, "check-config", tmp.config_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode == 0, p
        tmp.write_config("storage: {retension: 30d}\n")
        p = subprocess.run([b, "check-config", tmp.config_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode != 0 and b"storage.retension" in p.stderr, p
        p = subprocess.run([b, "--bogus"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 2
        # rule files named by the configuration are checked too
        os.makedirs(os.path.join(tmp.tmp, "rules"))
        with open(os.path.join(tmp.tmp, "rules", "bad.yml"), "w") as f:
            f.write("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: 'up =='\n")
        tmp.write_config("rule_files: [rules/*.yml]\n")
        p = subprocess.run([b, "check-config", tmp.config_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        assert p.returncode != 0 and b"bad.yml" in p.stdout + p.stderr, p
    finally:
        tmp.close()


def test_env_and_flag_precedence():
    # the environment asks for one port, the flag (from mdtest) for another: the flag wins
    env = {"METRICSD_SERVER_LISTEN": "127.0.0.1:%d" % mdtest.free_port(), "METRICSD_SERVER_LOG_LEVEL": "debug"}
    with mdtest.Server(env=env) as srv:
        assert srv.get("/health").status == 200
        assert srv.wait_log(r'"level":"debug"'), "env log level not applied"
    # an invalid environment value stops start-up with a message naming the variable
    srv = mdtest.Server(env={"METRICSD_STORAGE_RETENTION": "forever"})
    try:
        try:
            srv.start()
            raise AssertionError("started with an invalid environment value")
        except AssertionError as e:
            assert "METRICSD_STORAGE_RETENTION" in str(e), e
    finally:
        srv.close()


if __name__ == "__main__":
    mdtest.main(globals())
