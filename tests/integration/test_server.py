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
import urllib.parse

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


def test_stats_counters_are_live():
    with mdtest.Server(args=["--set", "server.self_interval=0"]) as srv:
        before = srv.get("/metrics/stats").json()
        r = srv.post("/api/v1/import/prometheus",
                     "".join('stats_probe{n="%d"} %d\n' % (i, i) for i in range(50)).encode())
        if r.status == 404:
            raise mdtest.Skip("ingest endpoints not built in")
        assert r.status < 300, r
        text = srv.get("/metrics").text  # one export
        after = srv.get("/metrics/stats").json()
        # the accepted push was one collection of seed 004's duration histogram
        counts = [v for n, l, v, _ in mdtest.check_exposition(text)
                  if n == "metrics_collection_duration_seconds_count"]
        assert counts and counts[0] >= 1, counts
        c0, c1 = before["collector"], after["collector"]
        assert c1["total_points"] - c0["total_points"] >= 50, (c0, c1)
        assert c1["total_series"] - c0["total_series"] >= 50, (c0, c1)
        assert after["storage"]["head_series"] >= 50, after
        e0, e1 = before["exporter"], after["exporter"]
        assert e1["total_exports"] > e0["total_exports"], (e0, e1)
        assert e1["last_export"] and e1["last_export"].endswith("Z"), e1
        # a sample storage refuses (far too old) is counted as dropped and as an error
        r = srv.post("/api/v1/import/prometheus", b'stats_probe{n="1"} 5 1000\n')
        assert r.status == 400 and "too old" in r.text, r
        later = srv.get("/metrics/stats").json()["collector"]
        assert later["dropped_points"] == c1["dropped_points"] + 1, (c1, later)
        assert later["errors_total"] > c1["errors_total"], (c1, later)


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
        assert r.status == 405, r
        assert [m.strip() for m in r.header("allow").split(",")] == ["GET", "HEAD", "OPTIONS"], r.headers
        r = srv.post("/-/reload", b"x" * 5000)
        assert r.status == 413, r
        assert "limit" in r.json()["error"]
        # oversized headers are refused (the connection memory limit), the server stays up
        import socket
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
        except OSError:
            pass  # the server may close before reading it all
        try:
            head = s.recv(4096)
            assert head == b"" or head.startswith(b"HTTP/1.1 431"), head
        except OSError:
            pass
        s.close()
        assert srv.get("/health").status == 200
        # announced as 1 GiB, none of it sent: the 413 comes from the headers alone
        import socket
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            s.sendall(b"POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 413"), head
            assert b"exceeds the limit" in head or b"exceeds the limit" in s.recv(4096), head
        finally:
            s.close()
        # queries: a URL near the 32 KiB header pool works; a longer one is refused (414),
        # the same query as a form body works; a 16,000-operator chain (a deep tree) is a
        # 400 naming the limit, not a stack overflow
        chain = lambda n: "vector(1)" + " + vector(0)" * n
        r = srv.get("/api/v1/query", params={"query": chain(1500)})
        assert r.status == 200 and r.json()["data"]["result"][0]["value"][1] == "1", r
        r = srv.get("/api/v1/query", params={"query": chain(1999)})
        assert r.status == 414, r
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        big = urllib.parse.urlencode({"query": chain(1999)}).encode()
        with mdtest.Server() as roomy:  # this server's body limit is 1 KiB
            r = roomy.post("/api/v1/query", big, headers=form)
            assert r.status == 200 and r.json()["data"]["result"][0]["value"][1] == "1", r
            r = roomy.post("/api/v1/query", urllib.parse.urlencode({"query": chain(16000)}).encode(), headers=form)
            assert r.status == 400 and "more than 2000 binary operators" in r.json()["error"], r
            assert roomy.get("/health").status == 200
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
        # the configuration view never shows a secret
        r = srv.get("/api/v1/status/config", headers={"Authorization": basic})
        assert r.status == 200 and "<secret>" in r.text, r
        assert not any(t in r.text for t in ("read-secret", "write-secret", "admin-secret")), r.text


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
        assert "only after a restart" not in srv.logs()  # log level and keys apply at once
        assert srv.get("/metrics/stats", headers={"X-API-Key": "old-key"}).status == 401
        assert srv.get("/metrics/stats", headers={"X-API-Key": "new-key"}).status == 200
        srv.get("/health")
        assert srv.wait_log(r'"path":"/health"'), "no access log line at debug level"
        # settings read once at start are named when a reload changes them
        srv.write_config("server:\n  log_level: debug\n  max_connections: 77\n"
                         "  auth_keys: [{token: new-key, roles: admin}]\nstorage: {retention: 9d}\n")
        r = srv.post("/-/reload", b"", headers={"X-API-Key": "new-key"})
        assert r.status == 200, r
        assert srv.wait_log(r"reload: server.max_connections, storage\.\* changed but take effect only after a restart"), \
            srv.logs()[-2000:]
        # a broken file is refused and the running configuration kept
        srv.write_config("server:\n  log_level: chatty\n")
        r = srv.post("/-/reload", b"", headers={"X-API-Key": "new-key"})
        assert r.status == 400 and "server.log_level" in r.json()["error"], r
        assert srv.get("/metrics/stats", headers={"X-API-Key": "new-key"}).status == 200


def test_sigterm_graceful():
    import socket
    srv = mdtest.Server()
    srv.start()
    conns = []
    try:
        assert srv.get("/health").status == 200
        # an idle keep-alive connection and a client trickling a body must not hold the stop up
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        slow.sendall(b"POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx 1\n")
        conns += [idle, slow]
        time.sleep(0.3)
        code, took = srv.stop(timeout=15)
        assert code == 0, (code, srv.logs())
        assert took < 5, "stop took %.1fs" % took
        assert "stopped" in srv.logs()
        assert "storage closed" in srv.logs()  # flushed and closed, not abandoned
    finally:
        for c in conns:
            c.close()
        srv.close()


def test_sigterm_finishes_in_flight_write():
    """A write in flight when SIGTERM arrives (headers read, body still arriving) is still
    handled and answered, and what was acknowledged is there after a restart."""
    import json
    import socket
    import tempfile
    data_dir = tempfile.mkdtemp(prefix="metricsd-inflight-")
    try:
        srv = mdtest.Server(data_dir=data_dir)
        srv.start()
        try:
            n = 20000
            body = "".join('inflight_probe{i="%d"} %d\n' % (i, i) for i in range(n)).encode()
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            s.sendall(b"POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000])
            time.sleep(1.0)  # the server has the headers: the request is in flight
            srv.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            s.sendall(body[1000:])
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            s.close()
            code = srv.proc.wait(timeout=15)
            assert code == 0, (code, srv.logs())
        finally:
            srv.close(keep_data=True)
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b"(no answer)"
        if status == b"404":
            raise mdtest.Skip("ingest endpoints not built in")
        assert status == b"204", reply[:300]
        with mdtest.Server(data_dir=data_dir) as again:
            r = again.get("/api/v1/query", params={"query": "count(inflight_probe)"})
            if r.status == 404:
                return
            res = r.json()["data"]["result"]
            assert res and res[0]["value"][1] == str(n), json.dumps(res)[:300]
    finally:
        import shutil
        shutil.rmtree(data_dir, ignore_errors=True)


def _fill_disk_limit():
    """In the child: files may grow to 4 MiB (the soft limit, which the test raises later)
    and writes past it fail with EFBIG instead of killing the process: a full disk."""
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, resource.RLIM_INFINITY))


def test_health_down_when_storage_fails():
    import resource
    with mdtest.Server(args=["--set", "server.self_interval=0"], preexec=_fill_disk_limit) as srv:
        h = srv.get("/health")
        assert h.status == 200 and h.json()["dependencies"]["storage"] == "ok", h
        failed = None
        for i in range(200):
            body = "".join('fill_%d{n="%d"} %d\n' % (i, j, j) for j in range(2000)).encode()
            r = srv.post("/api/v1/import/prometheus", body)
            if r.status >= 300:
                failed = r
                break
        assert failed is not None, "4 MiB file limit never reached"
        assert failed.status == 503 and failed.header("retry-after"), failed
        h = srv.get("/health")
        assert h.status == 503, h
        body = h.json()
        assert body["status"] == "down" and body["dependencies"]["storage"] == "down", body
        assert body["dependencies"]["wal"] == "down" and "error" in body, body
        assert h.header("retry-after"), h.headers
        assert srv.get("/ready").status == 200  # still serving
        r = srv.get("/api/v1/query", params={"query": "fill_0"})
        assert r.status in (200, 404), r  # reads keep working (404: PromQL not built in)
        # space returns: writes succeed again and /health recovers
        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        deadline = time.time() + 15
        while time.time() < deadline:
            r = srv.post("/api/v1/import/prometheus", b'after_full{a="1"} 1\n')
            if r.status < 300:
                break
            time.sleep(0.3)
        assert r.status < 300, r
        h = srv.get("/health")
        assert h.status == 200 and h.json()["status"] == "ok", h


def test_max_connections():
    for setting in ("server.max_connections=3", "server.max_connections_per_ip=3"):
        _check_connection_limit(setting)


def _check_connection_limit(setting):
    import socket
    with mdtest.Server(args=["--set", setting]) as srv:
        held = []
        try:
            for _ in range(3):  # three keep-alive connections, each known to be accepted
                c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                held.append(c)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert c.recv(4096).startswith(b"HTTP/1.1 200")
            # the fourth connection is closed at once (libmicrohttpd accepts and drops it)
            refused = False
            try:
                r = srv.get("/health", timeout=10)
                refused = False
            except (ConnectionError, OSError):
                refused = True
            assert refused, "a connection past %s was served: %r" % (setting, r)
        finally:
            for c in held:
                c.close()
        deadline = time.time() + 10
        ok = False
        while time.time() < deadline and not ok:
            try:
                ok = srv.get("/health", timeout=5).status == 200
            except (ConnectionError, OSError):
                time.sleep(0.2)
        assert ok, "connections are served again once the held ones close"


def test_json_logs():
    with mdtest.Server(args=["--log-level", "debug"]) as srv:
        srv.get("/health", headers={"X-Request-ID": "log-test-1"})
        srv.get("/no/such/route")
        assert srv.wait_log("log-test-1")
        time.sleep(0.2)
        text = srv.logs()
    lines = [l for l in text.splitlines() if l.strip()]
    assert lines
    parsed = []
    for l in lines:
        if l.startswith("==") or l.startswith("    #"):  # sanitizer reports are not log lines
            continue
        rec = __import__("json").loads(l)  # every line is one JSON object
        for k in ("timestamp", "level", "service", "message"):
            assert k in rec, (k, rec)
        assert rec["service"] == "metricsd" and rec["level"] in ("debug", "info", "warn", "error"), rec
        assert rec["timestamp"].endswith("Z") and "T" in rec["timestamp"], rec
        parsed.append(rec)
    access = [r for r in parsed if r.get("request_id") == "log-test-1"]
    assert access, "no access-log line carries the request id"
    f = access[0]["fields"]
    assert f["method"] == "GET" and f["path"] == "/health" and f["status"] == 200, f
    assert "duration_ms" in f and f["remote"] == "127.0.0.1", f
    assert any(r.get("fields", {}).get("status") == 404 for r in parsed), "404 not access-logged"
    # at info level there is no access log; on 127.0.0.1 without keys, no auth warning
    with mdtest.Server() as srv:
        srv.get("/health", headers={"X-Request-ID": "log-test-2"})
        time.sleep(0.3)
        assert "log-test-2" not in srv.logs()
        assert "auth is off" not in srv.logs()
    # listening on every interface without keys is warned about
    port = mdtest.free_port()
    with mdtest.Server(port=port, args=["--listen", ":%d" % port]) as srv:
        warn = [r for r in srv.log_lines() if "auth is off" in r.get("message", "")]
        assert warn and warn[0]["level"] == "warn", "no warning for an open, unauthenticated listener"


def test_cors():
    with mdtest.Server() as srv:  # off by default
        r = srv.get("/health", headers={"Origin": "https://grafana.example"})
        assert r.header("access-control-allow-origin") is None, r.headers
    with mdtest.Server(args=["--set", "server.cors_origin=https://grafana.example"]) as srv:
        r = srv.get("/health", headers={"Origin": "https://grafana.example"})
        assert r.header("access-control-allow-origin") == "https://grafana.example", r.headers
        r = srv.get("/health", headers={"Origin": "https://evil.example"})
        assert r.header("access-control-allow-origin") is None, r.headers
        r = srv.request("OPTIONS", "/api/v1/query", None,
                        {"Origin": "https://grafana.example", "Access-Control-Request-Method": "POST"})
        assert r.status == 204, r
        assert "GET" in r.header("access-control-allow-methods", ""), r.headers
        assert r.header("access-control-allow-origin") == "https://grafana.example", r.headers


def test_request_encodings():
    import gzip
    import zlib
    with mdtest.Server() as srv:
        text = b'enc_probe{via="gzip"} 1\n'
        r = srv.post("/api/v1/import/prometheus", gzip.compress(text), headers={"Content-Encoding": "gzip"})
        if r.status == 404:
            raise mdtest.Skip("ingest endpoints not built in")
        assert r.status < 300, r
        r = srv.post("/api/v1/import/prometheus", zlib.compress(b'enc_probe{via="deflate"} 1\n'),
                     headers={"Content-Encoding": "deflate"})
        assert r.status < 300, r
        for enc in ("gzip", "zstd", "snappy", "deflate"):
            r = srv.post("/api/v1/import/prometheus", b"\x00\x01definitely not " + enc.encode(),
                         headers={"Content-Encoding": enc})
            assert r.status == 400 and enc in r.json()["error"], (enc, r)
        r = srv.post("/api/v1/import/prometheus", b"x", headers={"Content-Encoding": "br"})
        assert r.status == 415, r
        # a small bomb: 8 MiB of zeros in a few KiB of gzip, past a 1 MiB limit
        with mdtest.Server(args=["--set", "server.max_body_bytes=1MiB"]) as small:
            r = small.post("/api/v1/import/prometheus", gzip.compress(b"0" * (8 << 20)),
                           headers={"Content-Encoding": "gzip"})
            assert r.status == 413, r


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


def test_documented_configs_are_valid():
    """Every YAML example in docs/configuration.md, the shipped deploy/metricsd.yml and the
    Kubernetes ConfigMap pass `metricsd check-config` (a user copying them gets a working
    file)."""
    import re
    import tempfile
    src = mdtest.source_dir()
    with open(os.path.join(src, "docs", "configuration.md")) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 2, "no YAML examples found in docs/configuration.md"
    files = [os.path.join(src, "deploy", "metricsd.yml")]
    # and the ConfigMap of deploy/kubernetes.yaml (a literal block under "metricsd.yml: |")
    with open(os.path.join(src, "deploy", "kubernetes.yaml")) as f:
        lines = f.read().splitlines()
    start = [i for i, l in enumerate(lines) if l.strip() == "metricsd.yml: |"]
    assert start, "no metricsd.yml ConfigMap in deploy/kubernetes.yaml"
    indent = len(lines[start[0]]) - len(lines[start[0]].lstrip()) + 1
    k8s = []
    for l in lines[start[0] + 1:]:
        if l.strip() and len(l) - len(l.lstrip()) < indent:
            break
        k8s.append(l[indent + 1:] if l.strip() else "")
    assert "server:" in k8s, k8s[:5]  # the block was found and dedented, not empty
    blocks.append("\n".join(k8s) + "\n")
    d = tempfile.mkdtemp(prefix="metricsd-doc-config-")
    try:
        for i, b in enumerate(blocks):
            files.append(os.path.join(d, "example%d.yml" % i))
            with open(files[-1], "w") as f:
                f.write(b)
        for path in files:
            p = subprocess.run([mdtest.bin_path(), "check-config", path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            assert p.returncode == 0, (path, p.stdout, p.stderr, open(path).read())
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def test_env_and_flag_precedence():
    # the environment asks for one port, the flag (from mdtest) for another: the flag wins
    # and both beat the file (which names a third port and another log level)
    env = {"METRICSD_SERVER_LISTEN": "127.0.0.1:%d" % mdtest.free_port(), "METRICSD_SERVER_LOG_LEVEL": "debug"}
    cfg = "server: {listen: '127.0.0.1:%d', log_level: error}\nstorage: {retention: 3d}\n" % mdtest.free_port()
    with mdtest.Server(env=env, config=cfg) as srv:
        assert srv.get("/health").status == 200  # on the flag's port
        assert srv.wait_log(r'"level":"debug"'), "env log level not applied over the file's"
        if srv.get("/api/v1/status/runtimeinfo").status == 200:  # the file's own setting applies
            assert srv.get("/api/v1/status/runtimeinfo").json()["data"]["storageRetention"] == "3d"
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


def test_route_table_matches_docs():
    """docs/api.md's route table is THE API reference: it must list exactly the routes the
    server registers (GET /-/routes), each with the role the server enforces."""
    import re
    doc_path = os.path.join(mdtest.source_dir(), "docs", "api.md")
    with open(doc_path) as f:
        text = f.read()
    section = text.split("## Every route", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([A-Z]+)` \| `([^`]+)` \| (\w+) \|", line)
        if m:
            key = (m.group(1), m.group(2))
            assert key not in documented, "docs/api.md lists %s %s twice" % key
            documented[key] = m.group(3)
    assert len(documented) > 20, "route table not found in docs/api.md"
    with mdtest.Server() as srv:
        r = srv.get("/-/routes")
        assert r.status == 200, r
        body = r.json()
        served = {(x["method"], x["path"]): x["role"] for x in body["routes"]}
        assert body["total"] == len(body["routes"]) == len(served), body["total"]
    missing = sorted(set(served) - set(documented))
    stale = sorted(set(documented) - set(served))
    wrong_role = sorted((k, documented[k], served[k]) for k in set(served) & set(documented)
                        if served[k] != documented[k])
    assert not missing, "routes served but not in docs/api.md: %s" % missing
    assert not stale, "routes in docs/api.md the server does not register: %s" % stale
    assert not wrong_role, "role in docs/api.md differs from the server's (route, doc, server): %s" % wrong_role
    # and the role is what auth enforces: a read key may GET /-/routes, no key may not
    with mdtest.Server(config="server:\n  auth_keys: [{token: r, roles: [read]}]\n") as srv:
        assert srv.get("/-/routes").status == 401
        assert srv.get("/-/routes", headers={"X-API-Key": "r"}).status == 200


def test_auth_on_every_route():
    """With keys configured, every route the server registers enforces its role: no
    credential → 401 (public routes excepted), a read-only key on a write or admin route →
    403, a write key on an admin route → 403. Rejections happen before any handler runs, so
    nothing is changed by this sweep."""
    cfg = ("server:\n  auth_keys:\n    - {token: sweep-read, roles: [read]}\n"
           "    - {token: sweep-write, roles: [write]}\n    - {token: sweep-admin, roles: admin}\n")
    with mdtest.Server(config=cfg) as srv:
        routes = srv.get("/-/routes", headers={"X-API-Key": "sweep-admin"}).json()["routes"]
        assert len(routes) > 20
        checked = 0
        for rt in routes:
            path = rt["path"].replace("{name}", "x").replace("{id}", "x")
            method, role = rt["method"], rt["role"]
            body = b"" if method in ("POST", "PUT", "PATCH") else None
            r = srv.request(method, path, body)
            if role == "public":
                assert r.status != 401 and r.status != 403, (method, path, r)
                continue
            assert r.status == 401, (method, path, "no credential", r)
            if role in ("write", "admin"):
                r = srv.request(method, path, body, {"X-API-Key": "sweep-read"})
                assert r.status == 403, (method, path, "read key", r)
            if role == "admin":
                r = srv.request(method, path, body, {"X-API-Key": "sweep-write"})
                assert r.status == 403, (method, path, "write key", r)
            if role == "read":
                r = srv.request(method, path, body, {"X-API-Key": "sweep-write"})
                assert r.status == 403, (method, path, "write key on a read route", r)
            checked += 1
        assert checked > 20, checked


def _slug(heading):
    """GitHub's anchor for a heading: lower-cased, punctuation dropped, spaces to hyphens."""
    import re
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def test_doc_links():
    """Relative links in README.md and the foundation's docs (api, configuration,
    architecture) point at files that exist and, with #anchor, at headings that exist."""
    import re
    src = mdtest.source_dir()
    pages = ["README.md", "docs/api.md", "docs/configuration.md", "docs/architecture.md"]
    anchors = {}

    def anchors_of(path):
        if path not in anchors:
            with open(path) as f:
                text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
            anchors[path] = {_slug(m) for m in re.findall(r"^#+ (.*)$", text, re.M)}
        return anchors[path]

    bad = []
    for page in pages:
        path = os.path.join(src, page)
        with open(path) as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                bad.append("%s: %s (no such file)" % (page, target))
            elif anchor and dest.endswith(".md") and anchor not in anchors_of(dest):
                bad.append("%s: %s (no such heading)" % (page, target))
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_readme_tour():
    """README's 5-minute tour works verbatim: every command of its sh block runs with bash
    against a fresh server (localhost:8012 pointed at the test's port), every "# → ..." line
    matches the output of the command above it ("…" matches anything), and the last steps
    show what they promise."""
    import re
    import shutil
    if not shutil.which("curl"):
        raise mdtest.Skip("curl not installed (Debian package curl; scripts/install-deps.sh installs it)")
    with open(os.path.join(mdtest.source_dir(), "README.md")) as f:
        readme = f.read()
    block = readme.split("## A 5-minute tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    steps, cmd = [], ""  # [command, expected output pattern or None]
    for line in block.splitlines():
        if line.startswith("# → "):
            assert steps, "an expected output before any command"
            steps[-1][1] = line[len("# → "):]
        elif line.startswith("#") or not line.strip():
            continue
        else:
            cmd += line[:-1] + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                steps.append([cmd, None])
                cmd = ""
    assert len(steps) >= 5, steps
    with mdtest.Server() as srv:
        outs = []
        for command, expected in steps:
            command = command.replace("localhost:8012", "127.0.0.1:%d" % srv.port)
            assert "8012" not in command, command
            p = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            out = p.stdout.decode()
            assert p.returncode == 0, (command, p.returncode, out, p.stderr)
            if expected:
                pattern = ".*".join(re.escape(part) for part in expected.split("…"))
                assert re.fullmatch(pattern, out.strip()), (command, expected, out)
            outs.append((command, out))
        joined = {c: o for c, o in outs}
        metrics = [o for c, o in outs if "/metrics |" in c]
        assert metrics and "api_requests_total" in metrics[0] and "room_temperature_celsius" in metrics[0] \
            and "http_requests_total" in metrics[0], metrics
        health = [o for c, o in outs if c.rstrip().endswith("/health")]
        assert health and __import__("json").loads(health[0])["status"] == "ok", joined
        stats = [o for c, o in outs if c.rstrip().endswith("/metrics/stats")]
        assert stats and __import__("json").loads(stats[0])["collector"]["total_points"] > 0, joined


if __name__ == "__main__":
    mdtest.main(globals())
