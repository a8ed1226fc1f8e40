#!/usr/bin/env bash
# Whole-pipeline figures, each next to a baseline measured in the same run
# (docs/bench/e2e.md):
#   1. end-to-end latency, capture -> test system (p50/p99) at a fixed
#      message rate, vs production's own latency (ext -> prod) for the same
#      messages (kernel lab, allinone/e2e BenchmarkE2ELatency);
#   2. peak RSS (VmHWM) of every stage process while relaying one 100 MB
#      message, as a ratio to the message (BenchmarkE2EPeakRSS);
#   3. intake packets/s vs the naive reader: scripts/bench-intake.sh;
#   4. reassembly MB/s vs tshark and tcpflow: reassemble BenchmarkVsTools;
#   5. archive MB/s vs plain zstd: archive BenchmarkArchiveVsZstd.
# 3-5 are the stage engineers' own benchmarks, called here so one script
# gives every whole-pipeline figure; set TAPLINE_BENCH_E2E_ONLY=1 to run 1-2
# only (scripts/bench.sh already runs bench-intake.sh on its own).
#
# Needs root for the kernel lab (1-3). Knobs: TAPLINE_E2E_RATE (100 msg/s),
# TAPLINE_E2E_SECONDS (10), TAPLINE_E2E_MB (100), RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-e2e: needs root (network namespaces, VXLAN, tc)" >&2
  exit 1
fi
runs=${RUNS:-3}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r), $(go version | awk '{print $3}'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "note: the machine is shared with other engineers' builds and tests; compare ratios, not absolute figures"
echo

echo "== 1. end-to-end latency (kernel lab, inbound-only mirror, replay listen mode), ${runs} run(s)"
(cd allinone && go test -run '^$' -bench '^BenchmarkE2ELatency$' -benchtime 1x -count "$runs" -timeout 30m ./e2e/ 2>&1) |
  grep -oE '(e2e latency:.*|^ok.*|^FAIL.*)' || { echo "latency benchmark failed" >&2; exit 1; }
echo

echo "== 2. peak RSS per stage relaying one ${TAPLINE_E2E_MB:-100} MB message, ${runs} run(s)"
(cd allinone && go test -run '^$' -bench '^BenchmarkE2EPeakRSS$' -benchtime 1x -count "$runs" -timeout 30m ./e2e/ 2>&1) |
  grep -oE '(peak RSS.*|^ok.*|^FAIL.*)' || { echo "RSS benchmark failed" >&2; exit 1; }
echo

if [ "${TAPLINE_BENCH_E2E_ONLY:-}" = 1 ]; then
  exit 0
fi

echo "== 3. intake packets/s vs the naive reader (scripts/bench-intake.sh)"
RUNS="$runs" scripts/bench-intake.sh
echo

echo "== 4. reassembly MB/s vs tshark and tcpflow (reassemble BenchmarkVsTools)"
(cd reassemble && go test -run '^$' -bench '^BenchmarkVsTools$' -benchtime 3x -count "$runs" . 2>&1) |
  grep -E '^(Benchmark|ok|FAIL)'
echo

echo "== 5. archive MB/s vs plain zstd (archive BenchmarkArchiveVsZstd)"
(cd archive && go test -run '^$' -bench '^BenchmarkArchiveVsZstd$' -count "$runs" . 2>&1) |
  grep -E '^(Benchmark|ok|FAIL)'
