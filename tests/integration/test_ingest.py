#!/usr/bin/env python3
"""Black-box test of every push endpoint (SPEC §1): each protocol is written, then read back
through GET /api/v1/export; partial batches keep their good part and name the bad line/item;
limits answer 413 (samples per request, body size) and 429 (tracked series); the cardinality
limit rejects new series while existing ones keep ingesting; the track registry reaches
storage on its flush interval. Standard library only: snappy (literal-only block format)
and protobuf are encoded by hand. Exit 77 when metricsd cannot serve yet."""
import gzip
import json
import os
import re
import threading
import zlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
ZSTD = shutil.which("zstd")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def req(base, method, path, body=None, headers=None, tenant=None):
    h = dict(headers or {})
    if tenant:
        h["X-Scope-OrgID"] = tenant
    data = body.encode() if isinstance(body, str) else body
    r = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=20) as resp:
            return resp.status, resp.read().decode(errors="replace"), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)


def export(base, selector, tenant):
    code, body, _ = req(base, "GET", "/api/v1/export?match[]=" + urllib.parse.quote(selector), tenant=tenant)
    if not check(code == 200, "export %s: %s %s" % (selector, code, body[:200])):
        return []
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# ---- hand encoders ------------------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def snappy_literal(data):
    """Snappy block format with literals only: valid, just not compressed."""
    out = bytearray(varint(len(data)))
    i = 0
    while i < len(data):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
        i += len(chunk)
    return bytes(out)


def write_request(series):
    """series: [(labels dict, [(ts_ms, value)])] → WriteRequest bytes."""
    out = b""
    for labels, samples in series:
        ts = b""
        for k, v in labels.items():
            ts += ld(1, ld(1, k.encode()) + ld(2, v.encode()))
        for t, v in samples:
            ts += ld(2, b"\x09" + struct.pack("<d", v) + b"\x10" + varint(t & 0xFFFFFFFFFFFFFFFF))
        out += ld(1, ts)
    return out


def otlp_gauge_pb(name, value, t_ns, service):
    kv = ld(1, b"service.name") + ld(2, ld(1, service.encode()))
    dp = b"\x19" + struct.pack("<Q", t_ns) + b"\x21" + struct.pack("<d", value)
    metric = ld(1, name.encode()) + ld(5, ld(1, dp))
    return ld(1, ld(1, ld(1, kv)) + ld(2, ld(2, metric)))


def zstd_compress(data):
    return subprocess.run([ZSTD, "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


def encoders():
    """Content-Encoding name → compressor (zstd through the zstd tool when it is installed)."""
    enc = {"gzip": gzip.compress, "deflate": zlib.compress, "snappy": snappy_literal}
    if ZSTD:
        enc["zstd"] = zstd_compress
    return enc


def self_metrics(base):
    """GET /metrics → {(name, frozenset(labels)): value} for the ingest and HTTP counters."""
    code, body, _ = req(base, "GET", "/metrics")
    out = {}
    for line in body.splitlines():
        m = re.match(r'^(metricsd_ingest_\w+|http_requests_total|metrics_errors_total)(\{[^}]*\})? (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def counter(metrics, name, **labels):
    """Sum of the series of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def encodings(base, now):
    """Every protocol with every Content-Encoding it allows, read back through export."""
    hdr_rw = {"Content-Type": "application/x-protobuf", "X-Prometheus-Remote-Write-Version": "0.1.0"}
    for enc, comp in encoders().items():
        m = "enc_%s" % enc
        cases = [
            ("/api/v1/import/prometheus", "%s_prom 1 %d\n" % (m, now), {}, m + "_prom"),
            ("/write?precision=ms", "%s_influx value=2 %d\n" % (m, now), {}, m + "_influx"),
            ("/api/v1/import", json.dumps({"metric": {"__name__": m + "_jsonl"}, "values": [3], "timestamps": [now]}),
             {}, m + "_jsonl"),
            ("/v1/metrics", otlp_gauge_pb(m + "_otlp", 4, now * 1000000, "e"),
             {"Content-Type": "application/x-protobuf"}, m + "_otlp"),
            ("/metrics/track", json.dumps({"name": m + "_track", "value": 5, "tenant_id": "t-enc"}), {}, None),
        ]
        for path, body, hdr, name in cases:
            raw = body.encode() if isinstance(body, str) else body
            h = dict(hdr)
            h["Content-Encoding"] = enc
            code, resp, _ = req(base, "POST", path, comp(raw), h, tenant=None if name is None else "t-enc")
            ok = check(code in (200, 204), "%s with Content-Encoding %s: %s %s" % (path, enc, code, resp[:200]))
            if ok and name:
                got = export(base, name, "t-enc")
                check(len(got) == 1, "%s with %s: stored %r" % (path, enc, got))
    # remote_write: snappy is the protocol; anything else is refused (415), nothing stored.
    wr = write_request([({"__name__": "enc_rw"}, [(now, 1)])])
    code, body, _ = req(base, "POST", "/api/v1/write", snappy_literal(wr),
                        dict(hdr_rw, **{"Content-Encoding": "snappy"}), tenant="t-enc")
    check(code == 204 and export(base, "enc_rw", "t-enc"), "remote_write snappy: %s %s" % (code, body[:200]))
    for enc, comp in encoders().items():
        if enc == "snappy":
            continue
        wr = write_request([({"__name__": "enc_rw_" + enc}, [(now, 1)])])
        code, body, _ = req(base, "POST", "/api/v1/write", comp(snappy_literal(wr)),
                            dict(hdr_rw, **{"Content-Encoding": enc}), tenant="t-enc")
        check(code == 415 and not export(base, "enc_rw_" + enc, "t-enc"),
              "remote_write with Content-Encoding %s: %s %s" % (enc, code, body[:200]))
    # Unknown and corrupt encodings.
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", b"enc_br 1\n", {"Content-Encoding": "br"},
                        tenant="t-enc")
    check(code == 415, "Content-Encoding br: %s %s" % (code, body[:200]))
    for enc in encoders():
        code, body, _ = req(base, "POST", "/write", b"\x1f\x8b\x08garbage-not-compressed",
                            {"Content-Encoding": enc}, tenant="t-enc")
        check(code == 400, "corrupt %s body: %s %s" % (enc, code, body[:200]))


def concurrency(base, now):
    """limits.max_concurrent_inserts is 2: eight senders at once must see some 429 with
    Retry-After, and a refused request stores nothing (every accepted one stores exactly its
    own samples). Bounded: at most 30 rounds."""
    results = []
    lock = threading.Lock()

    def send(k):
        # 45 series (under the tenant limit of 50) x 20 samples, timestamps unique per request.
        body = "".join("conc_m{s=\"%d\"} %d %d\n" % (s, k, now - 3600000 + k * 20 + j)
                       for j in range(20) for s in range(45))
        try:
            code, _, hdr = req(base, "POST", "/api/v1/import/prometheus", body, tenant="t-conc")
        except OSError as e:
            code, hdr = str(e), {}
        with lock:
            results.append((k, code, hdr.get("Retry-After")))

    before = self_metrics(base)
    k = 0
    for _ in range(30):
        threads = [threading.Thread(target=send, args=(k + i,)) for i in range(8)]
        k += 8
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(r[1] == 429 for r in results):
            break
    limited = [r for r in results if r[1] == 429]
    ok = [r for r in results if r[1] == 204]
    check(limited, "no 429 from %d concurrent inserts over a limit of 2" % len(results))
    check(len(ok) + len(limited) == len(results), "concurrent inserts: unexpected answers %r" %
          [r for r in results if r[1] not in (204, 429)][:5])
    check(all(r[2] and int(r[2]) >= 1 for r in limited), "429 without Retry-After: %r" % limited[:3])
    got = export(base, "conc_m", "t-conc")
    stored = sorted(set((t - (now - 3600000)) // 20 for s in got for t in s["timestamps"]))
    check(stored == sorted(r[0] for r in ok) and sum(len(s["values"]) for s in got) == 900 * len(ok),
          "concurrent inserts: stored requests %r, accepted %r" % (stored[:20], sorted(r[0] for r in ok)[:20]))
    after = self_metrics(base)
    n429 = counter(after, "http_requests_total", code="429") - counter(before, "http_requests_total", code="429")
    check(n429 >= len(limited), "http_requests_total{code=\"429\"} rose by %s for %d refusals" % (n429, len(limited)))


def rejections_counted(base):
    """Every refusal of the run is in self-metrics by protocol and reason."""
    m = self_metrics(base)
    want = [("prometheus", "parse"), ("prometheus", "samples_per_request"), ("prometheus", "series_limit"),
            ("influx", "parse"), ("influx", "string_field"), ("remote_write", "parse"), ("track", "series_limit"),
            ("track_batch", "invalid")]
    for proto, reason in want:
        check(counter(m, "metricsd_ingest_rejected_total", protocol=proto, reason=reason) > 0,
              "no metricsd_ingest_rejected_total{protocol=%r,reason=%r}" % (proto, reason))
    # The cardinality burst tried 60 new series over a limit of 50: 10 counted, not 1 per error.
    check(counter(m, "metricsd_ingest_rejected_total", protocol="prometheus", reason="series_limit") == 10,
          "series_limit rejections counted %s, want 10" %
          counter(m, "metricsd_ingest_rejected_total", protocol="prometheus", reason="series_limit"))
    for outcome in ("ok", "partial", "too_large"):
        check(counter(m, "metricsd_ingest_requests_total", protocol="prometheus", outcome=outcome) > 0,
              "no metricsd_ingest_requests_total{protocol=\"prometheus\",outcome=%r}" % outcome)
    check(counter(m, "metrics_errors_total") > 0, "metrics_errors_total did not count the refusals")


def round_trip(base):
    """Everything of several tenants exported, imported into fresh tenants, exported again:
    identical (series, values including non-finite ones, timestamps)."""
    for tenant in ("t-influx", "t-rw", "t-prom", "t-otlp", "tenant-1"):
        code, first, _ = req(base, "GET", "/api/v1/export?match[]=" + urllib.parse.quote('{__name__=~".+"}'),
                             tenant=tenant)
        if not check(code == 200 and first.strip(), "export of %s: %s" % (tenant, code)):
            continue
        code, body, _ = req(base, "POST", "/api/v1/import", first, tenant=tenant + "-copy")
        check(code == 204, "import of %s's export: %s %s" % (tenant, code, body[:200]))
        code, second, _ = req(base, "GET", "/api/v1/export?match[]=" + urllib.parse.quote('{__name__=~".+"}'),
                              tenant=tenant + "-copy")
        a = sorted(first.splitlines())
        b = sorted(second.splitlines())
        check(a == b, "export → import → export of %s differs: %d vs %d lines, e.g. %r / %r"
              % (tenant, len(a), len(b), a[:1], b[:1]))


def series_cache(base, now):
    """Pushes that repeat their series go through the series cache (self-metrics count the
    hits); the data read back is exactly what was sent, extra_label makes other series, and a
    reload empties the cache."""
    t = "t-cache"
    hdr_rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}

    def send(method, path, body, headers=None):
        # limits.max_concurrent_inserts is 2 here: a slot may still be held a moment after the
        # previous answer; retry 429 as senders do (bounded)
        for _ in range(50):
            code, text, _ = req(base, method, path, body, headers=headers, tenant=t)
            if code != 429:
                break
            time.sleep(0.05)
        return code, text, None

    def push_all(ts, v, extra=""):
        lp = "".join("sc_cpu,host=h%d,dc=eu\\ 1 user=%d.5,sys=%di %d\n" % (h, v + h, v, ts) for h in range(3))
        code, body, _ = send("POST", "/write?precision=ms" + extra, lp)
        check(code == 204, "cache: /write %s %s" % (code, body[:200]))
        text = "".join('sc_up{host="h%d",path="C:\\\\x"} %d %d\n' % (h, v, ts) for h in range(2))
        code, body, _ = send("POST", "/api/v1/import/prometheus", text)
        check(code == 204, "cache: import/prometheus %s %s" % (code, body[:200]))
        rw = write_request([({"__name__": "sc_rw", "host": "h%d" % h}, [(ts, v * 0.5)]) for h in range(2)])
        code, body, _ = send("POST", "/api/v1/write", snappy_literal(rw), hdr_rw)
        check(code == 204, "cache: remote_write %s %s" % (code, body[:200]))

    def hits():
        return counter(self_metrics(base), "metricsd_ingest_series_cache_hits_total")

    push_all(now - 30000, 1)
    h0 = hits()
    push_all(now - 20000, 2)
    h1 = hits()
    check(h1 - h0 >= 10, "cache: a repeated push hit %s series, want >= 10 (3x2 line protocol, 2 text, 2 rw)"
          % (h1 - h0))
    push_all(now - 20000, 2, "&extra_label=src=x")  # line protocol under another partition
    code, body, _ = req(base, "POST", "/-/reload")
    check(code == 200, "cache: reload %s %s" % (code, body[:200]))
    h2 = hits()
    push_all(now - 10000, 3)
    check(hits() == h2, "cache: pushes right after a reload hit the cache (%s → %s)" % (h2, hits()))
    got = {}
    for s in export(base, '{__name__=~"sc_.*"}', t):
        key = tuple(sorted(s["metric"].items()))
        got[key] = list(zip(s["timestamps"], s["values"]))
    want = {}
    for h in range(3):
        for f, val in (("user", lambda v: v + h + 0.5), ("sys", lambda v: v)):
            base_l = {"__name__": "sc_cpu_" + f, "host": "h%d" % h, "dc": "eu 1"}
            want[tuple(sorted(base_l.items()))] = [(now - 30000 + 10000 * k, val(k + 1)) for k in range(3)]
            x = dict(base_l, src="x")
            want[tuple(sorted(x.items()))] = [(now - 20000, val(2))]
    for h in range(2):
        want[tuple(sorted({"__name__": "sc_up", "host": "h%d" % h, "path": "C:\\x"}.items()))] = \
            [(now - 30000 + 10000 * k, k + 1) for k in range(3)]
        want[tuple(sorted({"__name__": "sc_rw", "host": "h%d" % h}.items()))] = \
            [(now - 30000 + 10000 * k, (k + 1) * 0.5) for k in range(3)]
    check(got == want, "cache: stored %r, want %r" % (sorted(got.items())[:3], sorted(want.items())[:3]))


# ---- the test -------------------------------------------------------------------------------

def run(base, statsd_port):
    now = int(time.time() * 1000)

    # StatsD (UDP) into the track registry, flushed to storage under tenant t-statsd.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"sd.hits:2|c\nsd.hits:1|c|@0.5\nsd.temp:21.5|g|#room:lab\nsd.lat:250|ms\nbad line\n",
             ("127.0.0.1", statsd_port))
    u.close()

    # Prometheus text import, with extra_label and a bad line in the middle.
    text = ("# TYPE imp_a gauge\nimp_a{x=\"1\"} 1.5 %d\nimp_a{x=\"2\"} 2 %d\nthis is bad\nimp_b 7 %d\n"
            % (now - 3000, now - 3000, now - 2000))
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus?extra_label=src=text", text, tenant="t-prom")
    check(code == 400 and "line 4" in body, "import/prometheus partial: %s %s" % (code, body[:300]))
    got = export(base, '{__name__=~"imp_.*"}', "t-prom")
    names = sorted((s["metric"]["__name__"], s["metric"].get("x", ""), s["metric"].get("src")) for s in got)
    check(names == [("imp_a", "1", "text"), ("imp_a", "2", "text"), ("imp_b", "", "text")],
          "import/prometheus stored %r" % names)
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", "ok_line 1 %d\n" % now, tenant="t-prom")
    check(code == 204, "import/prometheus valid: %s %s" % (code, body[:200]))
    # OpenMetrics by content type, seconds timestamps.
    om = "# TYPE om_c counter\nom_c_total 3 %.3f\n# EOF\n" % ((now - 1000) / 1000.0)
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", om,
                        {"Content-Type": "application/openmetrics-text"}, tenant="t-prom")
    check(code == 204, "openmetrics: %s %s" % (code, body[:200]))
    got = export(base, 'om_c_total', "t-prom")
    check(len(got) == 1 and got[0]["timestamps"] == [now - 1000], "openmetrics stored %r" % got)
    # gzip body
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", gzip.compress(b"gz_m 4 %d\n" % now),
                        {"Content-Encoding": "gzip"}, tenant="t-prom")
    check(code == 204 and export(base, "gz_m", "t-prom"), "gzip import: %s %s" % (code, body[:200]))

    # InfluxDB line protocol, v1 and v2 parameters.
    lp = ("cpu,host=a usage_idle=90.5,usage_user=2i %d\ncpu,host=b value=1 %d\nweather,city=x temp=\"warm\" %d\n"
          % (now - 5000, now - 5000, now - 5000))
    code, body, _ = req(base, "POST", "/write?db=telegraf&precision=ms", lp, tenant="t-influx")
    check(code == 204, "/write: %s %s" % (code, body[:300]))
    got = export(base, '{db="telegraf"}', "t-influx")
    names = sorted((s["metric"]["__name__"], s["metric"]["host"], s["values"][0]) for s in got)
    check(names == [("cpu", "b", 1), ("cpu_usage_idle", "a", 90.5), ("cpu_usage_user", "a", 2)],
          "/write stored %r" % names)
    code, body, _ = req(base, "POST", "/api/v2/write?bucket=b2&precision=s", "m2 value=3 %d\nbad line\n" % (now // 1000),
                        tenant="t-influx")
    check(code == 400, "/api/v2/write partial: %s" % code)
    try:
        err = json.loads(body)
        check(err.get("code") == "invalid" and "line 2" in err.get("message", ""), "influx error shape %r" % err)
    except ValueError:
        check(False, "influx error is not JSON: %r" % body[:200])
    got = export(base, 'm2{db="b2"}', "t-influx")
    check(len(got) == 1 and got[0]["timestamps"] == [now // 1000 * 1000], "/api/v2/write stored %r" % got)

    # remote_write 1.0.
    wr = write_request([({"__name__": "rw_up", "job": "prom", "instance": "a"}, [(now - 2000, 1), (now - 1000, 0)]),
                        ({"__name__": "rw_load", "job": "prom"}, [(now - 1000, 0.25)])])
    hdr = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}
    code, body, _ = req(base, "POST", "/api/v1/write", snappy_literal(wr), hdr, tenant="t-rw")
    check(code == 204, "remote_write: %s %s" % (code, body[:300]))
    got = export(base, '{job="prom"}', "t-rw")
    got = sorted((s["metric"]["__name__"], s["values"], s["timestamps"]) for s in got)
    check(got == [("rw_load", [0.25], [now - 1000]), ("rw_up", [1, 0], [now - 2000, now - 1000])],
          "remote_write stored %r" % got)
    code, body, _ = req(base, "POST", "/api/v1/write", b"not snappy at all", hdr, tenant="t-rw")
    check(code == 400, "remote_write garbage: %s" % code)
    bad = write_request([({"__name__": "rw_ok2"}, [(now, 1)]), ({"__name__": "bad-name"}, [(now, 1)])])
    code, body, _ = req(base, "POST", "/api/v1/write", snappy_literal(bad), hdr, tenant="t-rw")
    check(code == 400 and "timeseries 1" in body and export(base, "rw_ok2", "t-rw"),
          "remote_write partial: %s %s" % (code, body[:200]))

    # JSON lines import → export round trip.
    line = {"metric": {"__name__": "jl_m", "k": "v \"q\""}, "values": [1, 2.5, "+Inf"],
            "timestamps": [now - 3000, now - 2000, now - 1000]}
    code, body, _ = req(base, "POST", "/api/v1/import", json.dumps(line) + "\n", tenant="t-jl")
    check(code == 204, "/api/v1/import: %s %s" % (code, body[:200]))
    got = export(base, "jl_m", "t-jl")
    check(got == [line], "jsonl round trip %r" % got)
    if got:
        code, body, _ = req(base, "POST", "/api/v1/import", json.dumps(got[0]), tenant="t-jl2")
        check(code == 204 and export(base, "jl_m", "t-jl2") == [line], "re-import of export")

    # OTLP JSON and protobuf.
    oj = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                               "scopeMetrics": [{"metrics": [{"name": "http.requests", "sum": {
                                   "isMonotonic": True, "aggregationTemporality": 2,
                                   "dataPoints": [{"asInt": "5", "timeUnixNano": str((now - 1000) * 1000000)}]}}]}]}]}
    code, body, _ = req(base, "POST", "/v1/metrics", json.dumps(oj), {"Content-Type": "application/json"}, tenant="t-otlp")
    check(code == 200, "otlp json: %s %s" % (code, body[:200]))
    got = export(base, 'http_requests_total{job="shop"}', "t-otlp")
    check(len(got) == 1 and got[0]["values"] == [5], "otlp json stored %r" % got)
    code, body, _ = req(base, "POST", "/v1/metrics", otlp_gauge_pb("temp.c", 21.5, (now - 500) * 1000000, "sensor"),
                        {"Content-Type": "application/x-protobuf"}, tenant="t-otlp")
    check(code == 200, "otlp protobuf: %s %s" % (code, body[:200]))
    got = export(base, 'temp_c{job="sensor"}', "t-otlp")
    check(len(got) == 1 and got[0]["values"] == [21.5], "otlp protobuf stored %r" % got)

    # Track API: seed 004 shapes, partial batch, flush into storage.
    ev = {"name": "api_requests_total", "value": 1, "type": "counter",
          "labels": {"service": "gateway", "endpoint": "/api/v1/instruments", "method": "GET", "status_code": "200"},
          "service": "gateway-service", "tenant_id": "tenant-1"}
    code, body, _ = req(base, "POST", "/metrics/track", json.dumps(ev), {"Content-Type": "application/json"})
    check(code == 200 and json.loads(body) == {"success": True, "message": "Metric tracked successfully"},
          "track: %s %s" % (code, body))
    batch = [{"name": "api_requests_total", "value": 2, "type": "counter", "labels": {"endpoint": "/x"},
              "service": "gw", "tenant_id": "tenant-1"},
             {"name": "api_requests_total", "value": -1, "type": "counter", "tenant_id": "tenant-1"},
             {"name": "response_time_seconds", "value": 0.042, "type": "histogram", "tenant_id": "tenant-1"}]
    code, body, _ = req(base, "POST", "/metrics/track/batch", json.dumps(batch), {"Content-Type": "application/json"})
    try:
        b = json.loads(body)
    except ValueError:
        b = {}
    check(code == 200 and b.get("total") == 3 and b.get("successful") == 2 and b.get("failed") == 1 and
          b.get("errors", [{}])[0].get("index") == 1, "track batch partial: %s %s" % (code, body))
    time.sleep(2.5)  # flush_interval 1s
    got = export(base, 'api_requests_total', "tenant-1")
    byep = {s["metric"].get("endpoint"): s["values"][-1] for s in got}
    check(byep.get("/api/v1/instruments") == 1 and byep.get("/x") == 2 and
          all(s["metric"].get("service") in ("gateway", "gw") for s in got), "track flushed %r" % got)
    got = export(base, 'response_time_seconds_bucket{le="0.05"}', "tenant-1")
    check(len(got) == 1 and got[0]["values"][-1] == 1, "track histogram flushed %r" % got)
    # A cumulative series starts from a stored 0 at its creation, so increases before the
    # first flush are visible from storage (rate/increase, aggregated export); gauges do not.
    starts = [(s["metric"].get("endpoint"), s["values"][0], s["timestamps"][0] <= s["timestamps"][-1])
              for s in export(base, 'api_requests_total', "tenant-1")]
    check(sorted(starts) == [("/api/v1/instruments", 0, True), ("/x", 0, True)],
          "tracked counters start from a stored 0: %r" % starts)

    # Limits: samples per request (413), body size (413), tracked series (429).
    many = "".join("lim_m{i=\"%d\"} 1 %d\n" % (i, now) for i in range(1001))
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", many, tenant="t-lim")
    check(code == 413 and not export(base, "lim_m", "t-lim"), "samples per request: %s %s" % (code, body[:200]))
    # The server may answer 413 before reading the whole body and close the connection; the
    # client then sees the reset instead of the answer. Either way it must stay up.
    try:
        code, body, _ = req(base, "POST", "/api/v1/import/prometheus", "x" * (2 * 1024 * 1024), tenant="t-lim")
    except OSError:
        code = 413
    check(code == 413 and req(base, "GET", "/ready")[0] == 200, "body too large: %s" % code)
    codes = []
    for i in range(12):
        e = {"name": "lim_track", "value": 1, "type": "gauge", "labels": {"i": str(i)}, "tenant_id": "t-track"}
        codes.append(req(base, "POST", "/metrics/track", json.dumps(e))[0])
    r = req(base, "POST", "/metrics/track", json.dumps({"name": "lim_track", "value": 1, "labels": {"i": "99"},
                                                          "tenant_id": "t-track"}))
    check(codes[:10] == [200] * 10 and codes[10:] == [429, 429] and r[0] == 429 and "Retry-After" in r[2],
          "track series limit: %r %r" % (codes, r[:2]))
    check(req(base, "POST", "/metrics/track", json.dumps({"name": "lim_track", "value": 5, "labels": {"i": "3"},
                                                            "tenant_id": "t-track"}))[0] == 200,
          "existing tracked series keeps updating at the limit")

    # Cardinality: max_series_per_tenant 50 → new series over it rejected, old ones keep going.
    card = "".join("card_m{i=\"%d\"} 1 %d\n" % (i, now - 5000) for i in range(60))
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", card, tenant="t-card")
    check(code == 400 and "series" in body, "cardinality: %s %s" % (code, body[:200]))
    stored = export(base, "card_m", "t-card")
    check(len(stored) == 50, "cardinality stored %d series" % len(stored))
    code, body, _ = req(base, "POST", "/api/v1/import/prometheus", "card_m{i=\"0\"} 2 %d\n" % now, tenant="t-card")
    check(code == 204, "existing series past the cardinality limit: %s %s" % (code, body[:200]))

    # StatsD events reached storage through the registry flush (the track section slept).
    got = {s["metric"]["__name__"]: s for s in export(base, '{__name__=~"sd_.*"}', "t-statsd")}
    check(got.get("sd_hits", {}).get("values", [None])[-1] == 4, "statsd counter %r" % got.get("sd_hits"))
    check(got.get("sd_temp", {}).get("metric", {}).get("room") == "lab" and got["sd_temp"]["values"][-1] == 21.5,
          "statsd gauge %r" % got.get("sd_temp"))
    check(got.get("sd_lat_sum", {}).get("values", [None])[-1] == 0.25, "statsd timer %r" % got.get("sd_lat_sum"))

    encodings(base, now)
    series_cache(base, now)
    concurrency(base, now)
    round_trip(base)
    rejections_counted(base)

    # Export needs match[].
    code, body, _ = req(base, "GET", "/api/v1/export")
    check(code == 400, "export without match[]: %s" % code)

    # Self-metrics count rejections by reason.
    code, body, _ = req(base, "GET", "/metrics")
    check("metricsd_ingest_rejected_total" in body, "self-metrics lack metricsd_ingest_rejected_total")


def main():
    binary = os.environ.get("METRICSD_BIN")
    if not binary or not os.path.exists(binary):
        print("skip: METRICSD_BIN not built")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="md-ingest-")
    cfg = os.path.join(tmp, "metricsd.yml")
    with open(cfg, "w") as f:
        f.write("server:\n  max_body_bytes: 1048576\n"
                "limits:\n  max_samples_per_request: 1000\n  max_series_per_tenant: 50\n  max_concurrent_inserts: 2\n"
                "track:\n  flush_interval: 1s\n  max_series: 10\n"
                "collectors:\n  host:\n    enabled: false\n  gpu:\n    enabled: false\n")
    port = free_port()
    statsd_port = free_port()
    with open(cfg, "a") as f:
        f.write("statsd:\n  enabled: true\n  listen: \"127.0.0.1:%d\"\n  tenant: t-statsd\n" % statsd_port)
    log = open(os.path.join(tmp, "metricsd.log"), "wb")
    md = subprocess.Popen([binary, "--config", cfg, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                           os.path.join(tmp, "data")], stdout=log, stderr=log)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 30
        ready = False
        while time.time() < deadline and md.poll() is None:
            try:
                if req(base, "GET", "/ready")[0] == 200:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not ready:
            print("skip: metricsd did not become ready (see %s/metricsd.log)" % tmp)
            return SKIP
        run(base, statsd_port)
    finally:
        md.send_signal(signal.SIGTERM)
        try:
            md.wait(timeout=20)
        except subprocess.TimeoutExpired:
            md.kill()
        log.close()
    if failures:
        print("FAILED (%d):\n  %s\n(log: %s/metricsd.log)" % (len(failures), "\n  ".join(failures), tmp))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok: every ingest endpoint round-trips through /api/v1/export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
