#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing and benchmarking metricsd need,
# and only those that are missing. Idempotent; runs apt-get update only when something is
# missing; uses sudo when not root.
set -euo pipefail

# Build: compiler (gcc; its ASan/UBSan runtimes come with it), CMake, the libraries
# DESIGN.md names, protoc-c for the generated protobuf code, git for the commit baked into
# the binary, and curl for the README's tour.
build_pkgs=(build-essential cmake pkg-config git curl ca-certificates
  libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libyaml-dev libsnappy-dev
  libprotobuf-c-dev protobuf-c-compiler libzstd-dev libpcre2-dev zlib1g-dev libcmocka-dev)
# Tests: Python for the black-box tests (standard library only), openssl for throwaway TLS
# certificates, clang and its sanitizer/libFuzzer runtime for `make fuzz`, and the real
# components the tests talk to: Prometheus (promtool check metrics, remote_write, PromQL
# comparison), node_exporter, Alertmanager.
test_pkgs=(python3 openssl clang libclang-rt-14-dev
  prometheus prometheus-node-exporter prometheus-alertmanager)
# Benchmarks: the peer harness's Python modules and the peers themselves.
bench_pkgs=(python3-snappy python3-protobuf victoria-metrics influxdb)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: not root and no sudo: install them as root (apt-get install ...)" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's service packages start their daemons on install; we never want them running.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
