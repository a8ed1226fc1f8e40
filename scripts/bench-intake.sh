#!/usr/bin/env bash
# Intake of a mirror burst through the kernel lab (proto/mirrorlab: network
# namespaces, a kernel VXLAN device, tc mirred on the mirrored interface):
# decap's intake (decap/udpin) and the naive single-socket reader, measured
# side by side in the same run. Each burst is TAPLINE_BURST_MB (100) MB of
# TCP payload pushed at full speed over FLOWS TCP connections; the figures
# are mirror packets sent by prod vs received by the reader, and the
# target kernel's receive-buffer drops.
#
# Needs root (namespaces, VXLAN, tc). Usage:
#   scripts/bench-intake.sh            # 3 runs each with 1 and 4 flows
#   RUNS=5 FLOWS="4" TAPLINE_BURST_MB=100 scripts/bench-intake.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench-intake: needs root (network namespaces, VXLAN, tc)" >&2
  exit 1
fi
runs=${RUNS:-3}
flows_list=${FLOWS:-"1 4"}
mb=${TAPLINE_BURST_MB:-100}
echo "machine: $(nproc) cores, $(uname -r), $(go version | awk '{print $3}'); net.core.rmem_default=$(cat /proc/sys/net/core/rmem_default)"
echo "burst: ${mb} MB of TCP payload, ${runs} run(s) per reader and flow count"
echo
printf '| flows | reader | mirror packets sent | received | lost | loss |\n'
printf '| ---: | --- | ---: | ---: | ---: | ---: |\n'
for flows in $flows_list; do
  raw=$(cd decap && TAPLINE_BURST_MB="$mb" TAPLINE_BURST_FLOWS="$flows" \
    go test -run '^$' -bench '^BenchmarkLabBurst$' -benchtime 1x -count "$runs" ./udpin 2>&1) || {
    echo "$raw" >&2
    exit 1
  }
  # Lines: "<reader>: 1 burst(s) of N MB over F flows: sent S, received R (...), kernel drops D, ..."
  echo "$raw" | awk -v flows="$flows" '
    /burst\(s\) of .* flows: sent/ {
      reader = $2; sub(":", "", reader)
      for (i = 1; i <= NF; i++) {
        if ($i == "sent") { v = $(i+1); sub(",", "", v); sent[reader] += v }
        if ($i == "received") { received[reader] += $(i+1) }
      }
    }
    END {
      n = split("udpin naive", order, " ")
      for (k = 1; k <= n; k++) {
        r = order[k]
        if (!(r in sent)) continue
        lost = sent[r] - received[r]
        printf "| %s | %s | %d | %d | %d | %.2f%% |\n", flows, r, sent[r], received[r], lost, 100 * lost / sent[r]
      }
    }'
done
