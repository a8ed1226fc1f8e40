#!/usr/bin/env bash
# Reproduces every figure of docs/BENCHMARKS.md on this machine: the Go
# benchmarks of every module (each with its in-run baseline) and the
# whole-binary scripts. Output: bench-results/<date>/ (raw) and a summary on
# stdout. Run as root for the kernel-lab intake comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(go version)" | tee "$out/machine.txt"

benchtime=${BENCHTIME:-1s}
for m in proto decap reassemble replay archive allinone; do
  echo "== go benchmarks: $m"
  (cd "$m" && go test -run '^$' -bench . -benchmem -benchtime "$benchtime" ./... 2>&1) | tee "$out/go-$m.txt" | grep -E '^(Benchmark|ok|FAIL)' || true
done

for s in scripts/bench-*.sh; do
  [ -x "$s" ] || continue
  echo "== $s"
  # bench-e2e.sh would run bench-intake.sh and the Go benchmarks again.
  TAPLINE_BENCH_E2E_ONLY=1 "$s" 2>&1 | tee "$out/$(basename "$s" .sh).txt" || echo "$s failed"
done
echo "raw results in $out"
