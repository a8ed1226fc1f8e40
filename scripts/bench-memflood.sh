#!/usr/bin/env bash
# Heap and peak RSS of reassemble under the two memory floods (200,000
# SYN-only flows; 6,000 unfinished 60 KB HTTP headers), with the
# --max-memory budget (new, 32 MiB share) and without (old). Each case runs
# in its own process so its peak RSS is its own.
set -euo pipefail
cd "$(dirname "$0")/.."
for c in syn/new syn/old headers/new headers/old; do
	go test -count=1 -run '^$' -bench "BenchmarkMemoryFlood/$c\$" -benchtime 1x ./reassemble/ | grep Benchmark
done
