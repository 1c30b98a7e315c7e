"""Shared helpers for metricsd's black-box tests (standard library only).

    import mdtest
    with mdtest.Server(config="server: {log_level: debug}\n") as srv:
        r = srv.get("/health")
        assert r.status == 200 and r.json()["status"] == "ok"
        srv.post("/metrics/track", b'{"name":"x","value":1,"type":"counter"}',
                 headers={"Content-Type": "application/json"})

    mdtest.check_exposition(text)      # strict Prometheus text-format checker
    mdtest.promtool_check(text)        # `promtool check metrics` when installed
    mdtest.main(globals())             # runs every test_* function; exit 77 if all skipped

Environment (set by ctest): METRICSD_BIN, SOURCE_DIR, BUILD_DIR. A missing binary makes the
test exit 77 (skipped). Servers bind 127.0.0.1 on a free port with a temporary data
directory and are stopped by PID (SIGTERM, then SIGKILL after a timeout).
"""

import gzip as _gzip
import json as _json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77


class Skip(Exception):
    """Raise to skip the current test (with a reason)."""


def bin_path():
    b = os.environ.get("METRICSD_BIN")
    if not b:
        build = os.environ.get("BUILD_DIR", "build")
        b = os.path.join(build, "metricsd")
    if not os.path.exists(b):
        raise Skip("metricsd binary not found (METRICSD_BIN=%r)" % b)
    return b


def source_dir():
    return os.environ.get("SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict with lower-case names (last value wins)
        self.body = body        # bytes, already gunzipped if the server compressed it
        self.raw_encoding = headers.get("content-encoding", "")

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.body)

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


def request(url, method="GET", body=None, headers=None, timeout=30, gzip_body=False):
    """One HTTP request; never raises on HTTP errors (returns their Response)."""
    headers = dict(headers or {})
    if isinstance(body, str):
        body = body.encode()
    if gzip_body and body is not None:
        body = _gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    # test servers use self-signed certificates
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            status, hdrs, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    h = {k.lower(): v for k, v in hdrs.items()}
    if h.get("content-encoding", "").lower() == "gzip" and data:
        data = _gzip.decompress(data)
    return Response(status, h, data)


class Server:
    """A metricsd process on 127.0.0.1:<free port> with a temporary data dir.

    config: YAML text written to <tmp>/metricsd.yml and passed with --config.
    args: extra command-line arguments. env: extra environment variables.
    auth: default headers for every request (e.g. {"Authorization": "Bearer x"}).
    https: talk HTTPS (pass the TLS settings in config/args; certificates are not verified).
    preexec: a function run in the child before exec (resource limits, signal dispositions).
    """

    def __init__(self, config=None, args=(), env=None, auth=None, data_dir=None, ready_timeout=60,
                 port=None, check_exit=True, https=False, preexec=None):
        self.bin = bin_path()
        self.tmp = tempfile.mkdtemp(prefix="metricsd-test-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.port = port or free_port()
        self.url = "%s://127.0.0.1:%d" % ("https" if https else "http", self.port)
        self.config_path = None
        self.auth = dict(auth or {})
        self.log_path = os.path.join(self.tmp, "metricsd.log")
        if config is not None:
            self.config_path = os.path.join(self.tmp, "metricsd.yml")
            self.write_config(config)
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self.ready_timeout = ready_timeout
        self.returncode = None
        # With a context manager, a non-zero exit after SIGTERM (a crash at shutdown, or
        # AddressSanitizer reporting leaks) fails the test.
        self.check_exit = check_exit
        self.preexec = preexec

    def write_config(self, text):
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self):
        cmd = [self.bin, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data_dir]
        if self.config_path:
            cmd += ["--config", self.config_path]
        cmd += self.args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=self.preexec)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("metricsd exited with %s during start-up:\n%s" % (self.proc.returncode, self.logs()))
            try:
                r = request(self.url + "/ready", timeout=2)
                if r.status == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError("metricsd not ready within %ss:\n%s" % (self.ready_timeout, self.logs()))

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self):
        """The JSON log lines as dicts (non-JSON lines skipped)."""
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(_json.loads(line))
            except ValueError:
                pass
        return out

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.logs()):
                return True
            time.sleep(0.05)
        return False

    def request(self, method, path, body=None, headers=None, **kw):
        h = dict(self.auth)
        h.update(headers or {})
        return request(self.url + path, method, body, h, **kw)

    def get(self, path, params=None, headers=None, **kw):
        if params:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params, doseq=True)
        return self.request("GET", path, None, headers, **kw)

    def post(self, path, body=b"", headers=None, **kw):
        return self.request("POST", path, body, headers, **kw)

    def put(self, path, body=b"", headers=None, **kw):
        return self.request("PUT", path, body, headers, **kw)

    def delete(self, path, headers=None, **kw):
        return self.request("DELETE", path, None, headers, **kw)

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=10, sig=signal.SIGTERM):
        """Sends sig and waits; returns (exit code, seconds taken). SIGKILL after timeout."""
        if not self.proc or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None), 0.0
        t0 = time.time()
        os.kill(self.proc.pid, sig)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("metricsd did not stop within %ss after signal %d" % (timeout, sig))
        return self.returncode, time.time() - t0

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self, keep_data=False):
        try:
            self.stop()
        finally:
            self.kill()
            if getattr(self, "_log", None):
                self._log.close()
            if not keep_data:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        if et is not None:
            sys.stderr.write("---- metricsd log ----\n%s\n" % self.logs()[-8000:])
            self.close()
            return False
        try:
            code, _ = self.stop()
            if self.check_exit and code != 0:
                raise AssertionError("metricsd exited with %s after SIGTERM:\n%s" % (code, self.logs()[-8000:]))
        finally:
            self.close()
        return False


# ---- strict Prometheus text exposition (0.0.4) / OpenMetrics checker ----------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"}


def _parse_value(s, where):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)$", s):
        raise AssertionError("%s: bad value %r" % (where, s))
    return float(s)


def _parse_labels(s, i, where):
    """Parses {a="b",...} starting at s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*").match(s, i)
        if not m:
            raise AssertionError("%s: bad label name at column %d" % (where, i + 1))
        name = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise AssertionError("%s: expected =\" after label %s" % (where, name))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise AssertionError("%s: unterminated label value" % where)
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                    raise AssertionError("%s: bad escape in label value" % where)
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise AssertionError("%s: raw newline in label value" % where)
            else:
                val.append(c)
                i += 1
        if name in labels:
            raise AssertionError("%s: duplicate label %s" % (where, name))
        labels[name] = "".join(val)
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        raise AssertionError("%s: expected , or } in labels" % where)


def _family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info", ""):
        if suffix and name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in types:
                return base
    return name


def check_exposition(text, openmetrics=False):
    """Parses text strictly; returns a list of (name, labels, value, timestamp_ms or None).
    Raises AssertionError naming the line on any violation: syntax, escapes, duplicate
    TYPE/HELP, TYPE after samples, interleaved families, duplicate series, histogram
    buckets that are not cumulative or lack +Inf/count agreement, missing final newline,
    and for OpenMetrics a missing '# EOF'."""
    if text and not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    lines = text.split("\n")[:-1] if text else []
    if openmetrics:
        if not lines or lines[-1] != "# EOF":
            raise AssertionError("OpenMetrics exposition must end with '# EOF'")
        lines = lines[:-1]
    types, helps, seen_families, samples, series = {}, set(), [], [], set()
    current = None
    for no, line in enumerate(lines, 1):
        where = "line %d (%r)" % (no, line[:120])
        if line == "":
            if openmetrics:
                raise AssertionError("%s: empty line in OpenMetrics" % where)
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE", "UNIT"):
                name = parts[2]
                if not _NAME.match(name):
                    raise AssertionError("%s: bad metric name" % where)
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in _TYPES:
                        raise AssertionError("%s: bad TYPE" % where)
                    if name in types:
                        raise AssertionError("%s: second TYPE for %s" % (where, name))
                    if name in seen_families:
                        raise AssertionError("%s: TYPE after samples of %s" % (where, name))
                    types[name] = parts[3]
                elif parts[1] == "HELP":
                    if name in helps:
                        raise AssertionError("%s: second HELP for %s" % (where, name))
                    helps.add(name)
                    h = parts[3] if len(parts) == 4 else ""
                    if re.search(r"\\[^\\n\"]", h.replace("\\\\", "")):
                        raise AssertionError("%s: bad escape in HELP" % where)
            elif openmetrics:
                raise AssertionError("%s: comment lines are not allowed in OpenMetrics" % where)
            continue
        m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(line)
        if not m:
            raise AssertionError("%s: bad metric name" % where)
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, where)
        if i >= len(line) or line[i] != " ":
            raise AssertionError("%s: expected a space before the value" % where)
        rest = line[i + 1:].split(" ")
        if len(rest) not in (1, 2) or rest[0] == "":
            raise AssertionError("%s: expected 'value [timestamp]'" % where)
        value = _parse_value(rest[0], where)
        ts = None
        if len(rest) == 2:
            if not re.match(r"^-?\d+(\.\d+)?$", rest[1]):
                raise AssertionError("%s: bad timestamp" % where)
            ts = float(rest[1]) if openmetrics else int(rest[1])
        fam = _family_of(name, types)
        if fam != current:
            if fam in seen_families:
                raise AssertionError("%s: samples of %s are not contiguous" % (where, fam))
            seen_families.append(fam)
            current = fam
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise AssertionError("%s: duplicate series %s%s" % (where, name, labels))
        series.add(key)
        t = types.get(fam)
        if t == "counter" and (value < 0 or math.isnan(value)) and not name.endswith("_created"):
            raise AssertionError("%s: counter with negative or NaN value" % where)
        if t == "histogram" and name == fam + "_bucket" and "le" not in labels:
            raise AssertionError("%s: histogram bucket without le" % where)
        if openmetrics and t == "counter" and not (name.endswith("_total") or name.endswith("_created")):
            raise AssertionError("%s: OpenMetrics counter samples need _total" % where)
        samples.append((name, labels, value, ts))
    _check_histograms(samples, types)
    return samples


def _check_histograms(samples, types):
    groups = {}
    counts = {}
    for name, labels, value, _ in samples:
        fam = _family_of(name, types)
        if types.get(fam) != "histogram":
            continue
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if name == fam + "_bucket":
            groups.setdefault((fam, base), []).append((_parse_value(labels["le"], "le of " + fam), value))
        elif name == fam + "_count":
            counts[(fam, base)] = value
    for key, buckets in groups.items():
        buckets.sort()
        prev = -1
        for le, v in buckets:
            if v < prev:
                raise AssertionError("histogram %s%s: buckets are not cumulative" % key)
            prev = v
        if not buckets or buckets[-1][0] != float("inf"):
            raise AssertionError("histogram %s%s: no +Inf bucket" % key)
        if key in counts and counts[key] != buckets[-1][1]:
            raise AssertionError("histogram %s%s: _count %s != +Inf bucket %s" % (key[0], key[1], counts[key], buckets[-1][1]))


def promtool_check(text, allow_lint=()):
    """Runs `promtool check metrics` on text. Returns (ok, output), or None when promtool is
    not installed. Parse errors are never ok; lint findings are ok only when every finding
    line contains one of the allow_lint substrings (e.g. "snake_case" for node_exporter's
    historical names)."""
    exe = shutil.which("promtool")
    if not exe:
        return None
    p = subprocess.run([exe, "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode == 0:
        return True, out
    if p.returncode == 3:  # lint findings only
        findings = [l for l in out.splitlines() if l.strip()]
        bad = [l for l in findings if not any(a in l for a in allow_lint)]
        return not bad, "\n".join(bad) if bad else out
    return False, out


# Lint findings that come from names we must keep: node_exporter's CamelCase names, and seed
# 004's metrics_series_total (a gauge by meaning, named with _total by the seed).
STANDARD_LINT_ALLOW = ("snake_case", "metrics_series_total non-counter")


def samples_by_name(samples, name):
    return [(l, v) for n, l, v, _ in samples if n == name]


# ---- a tiny runner ---------------------------------------------------------------------------

def main(namespace, only=None):
    """Runs every test_* function in namespace (in definition order). Exit code 0 when all
    pass, 1 on any failure, 77 when every test skipped."""
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    if only:
        tests = [t for t in tests if t[0] in only]
    failed, skipped = [], 0
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
            print("PASS %s (%.1fs)" % (name, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s" % (name, e), flush=True)
        except Exception:
            failed.append(name)
            print("FAIL %s (%.1fs)" % (name, time.time() - t0), flush=True)
            traceback.print_exc()
    print("%d passed, %d failed, %d skipped" % (len(tests) - len(failed) - skipped, len(failed), skipped))
    if failed:
        sys.exit(1)
    if tests and skipped == len(tests):
        sys.exit(SKIP)
    sys.exit(0)
