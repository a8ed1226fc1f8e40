#!/usr/bin/env bash
# Whole binaries as users run them (issue 16): nats-server (the real one,
# configured as deploy/nats/nats.conf), `decap --read FILE` and
# `reassemble` as separate processes on generated captures, beside tshark,
# tcpflow, the JetStream ceiling and reassemble's engine in-process, in
# interleaved rounds; then the peak RSS of every process relaying one
# 100 MB message. See allinone/cmd/wholebench and docs/BENCHMARKS.md.
# Knobs: MB (capture size, 128), ROUNDS (3), BIG_MB (100), REASSEMBLE_ARGS,
# DECAP_ARGS (extra flags of those stages).
set -euo pipefail
cd "$(dirname "$0")/.."
for t in tshark tcpflow; do
  command -v "$t" >/dev/null || { echo "bench-binaries: $t not installed" >&2; exit 1; }
done
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "machine: $(nproc) cores, $(uname -r), $(go version | awk '{print $3}'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "note: the machine is shared with other engineers' builds and tests; compare ratios from one run, not absolute figures"
CGO_ENABLED=0 go build -trimpath -o "$bin/" ./decap/cmd/decap ./reassemble/cmd/reassemble ./archive/cmd/archive ./allinone/cmd/wholebench
(cd proto && CGO_ENABLED=0 go build -trimpath -o "$bin/nats-server" github.com/nats-io/nats-server/v2)
"$bin/wholebench" --bin "$bin" --mb "${MB:-128}" --rounds "${ROUNDS:-3}" --big-mb "${BIG_MB:-100}" \
  --reassemble-args "${REASSEMBLE_ARGS:-}" --decap-args "${DECAP_ARGS:-}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
