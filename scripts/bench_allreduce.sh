#!/usr/bin/env bash
# Side-by-side all-reduce benchmark on loopback: one raw TCP stream, ringtrain's
# ring over gRPC and over plain TCP (one process per rank), and
# torch.distributed gloo, 64 MiB, world 2 and 4, in one run (this machine is
# noisy: compare ratios within a run).
#   scripts/bench_allreduce.sh [SIZE_MIB] [ITERS]
# Needs Go; gloo rows need /usr/bin/python3 with torch (skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-64}
ITERS=${2:-5}
ARBENCH=${ARBENCH:-bin/arbench}
if [[ -z "${ARBENCH_PREBUILT:-}" ]]; then
  mkdir -p bin && go build -o "$ARBENCH" ./allreduce/cmd/arbench
fi
GLOO=shared/anchors/gloo_allreduce.py
[[ -f $GLOO ]] || GLOO=/work/shared/anchors/gloo_allreduce.py
have_torch() { /usr/bin/python3 -c 'import torch' 2>/dev/null; }

echo "== $(date -u +%FT%TZ) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for W in 2 4; do
  "$ARBENCH" -world "$W" -size "${MB}MiB" -iters "$ITERS" -warmup 2 2>/dev/null
  "$ARBENCH" -world "$W" -size "${MB}MiB" -iters "$ITERS" -warmup 2 -transport tcp -raw-tcp=false 2>/dev/null
  "$ARBENCH" -world "$W" -size "${MB}MiB" -iters "$ITERS" -warmup 2 -transport tcp -fp16 -raw-tcp=false 2>/dev/null
  if have_torch && [[ -f $GLOO ]]; then
    /usr/bin/python3 "$GLOO" "$W" "$MB" 2>/dev/null | grep gloo || echo "gloo world=$W failed"
  else
    echo "gloo: skipped (no torch or no $GLOO)"
  fi
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
