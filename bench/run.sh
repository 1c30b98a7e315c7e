#!/usr/bin/env bash
# make bench: the engine's own microbenchmarks, then the peer harness from ../shared/bench
# (metricsd beside VictoriaMetrics and Prometheus on one dataset, one run, ratios in the report).
#
#   bench/run.sh [BUILD_DIR]
#   BENCH_HOSTS=200 BENCH_HOURS=1 bench/run.sh     smaller dataset
#   BENCH_PEERS=0 bench/run.sh                      microbenchmarks only
#   BENCH_QUERY_HOSTS=200 bench/run.sh              smaller PromQL query benchmark (default 600 hosts)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
HOSTS=${BENCH_HOSTS:-1000}
HOURS=${BENCH_HOURS:-3}
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

echo "== microbenchmarks ($BUILD/bench)"
for b in bench_chunk bench_block bench_tsdb bench_ingest bench_promql bench_export bench_scrape; do
  if [ -x "$BUILD/bench/$b" ]; then
    echo "-- $b"
    "$BUILD/bench/$b" 2>&1 | tee "$OUT/$b.txt"
  fi
done

if [ "${BENCH_PEERS:-1}" = 0 ]; then exit 0; fi

# PromQL query latency (issue 5): metricsd, VictoriaMetrics and Prometheus on one dataset
# (gen.py's model + a classic histogram), one run, ratios in promql.md.
if command -v victoria-metrics >/dev/null && command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  echo "== PromQL queries: metricsd, VictoriaMetrics, Prometheus (${BENCH_QUERY_HOSTS:-600} hosts, ${HOURS} h)"
  python3 bench/promql_bench.py --bin "$BUILD/metricsd" --hosts "${BENCH_QUERY_HOSTS:-600}" --hours "$HOURS" \
    --reps "${BENCH_QUERY_REPS:-7}" --out "$OUT" || echo "promql_bench.py failed"
else
  echo "== PromQL queries skipped: victoria-metrics, prometheus and promtool are needed"
fi

SHARED=../shared/bench
if [ ! -d "$SHARED" ]; then
  echo "== peer harness skipped: $SHARED is absent"
  exit 0
fi
echo "== peers: metricsd, VictoriaMetrics, Prometheus ($HOSTS hosts x 18 series, ${HOURS} h)"
spec="$OUT/metricsd.json"
sed "s#@BIN@#$PWD/$BUILD/metricsd#g" bench/peers/metricsd.json > "$spec"
"$SHARED/run_peers.sh" --quick --hosts "$HOSTS" --hours "$HOURS" --peer-json "$spec" --out "$OUT" \
  --runs "metricsd:prom:full,metricsd:influx:check,metricsd:remotewrite:check,victoriametrics:prom:full,victoriametrics:influx:check,victoriametrics:remotewrite:check,prometheus:remotewrite:full"
for r in "$OUT"/*.json; do
  case "$r" in *metricsd.json) continue ;; esac
  /usr/bin/python3 "$SHARED/report.py" "$r" | tee "$OUT/report.md"
done
