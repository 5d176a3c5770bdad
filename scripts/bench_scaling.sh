#!/usr/bin/env bash
# Data-parallel scaling and overlap measurements (BENCHMARKS.scaling.md).
#
#   scripts/bench_scaling.sh                 # all sets, 3 rounds
#   SETS="overlap" ROUNDS=2 scripts/bench_scaling.sh
#   PIN="taskset -c 0,1" scripts/bench_scaling.sh   # a 2-core slice of a bigger machine
#
# Sets: overlap (ResNet-18 32x32, global batch 64, world 2, overlapped
# buckets vs reduce-after-backward), overlap-alexnet (the same with
# AlexNet 64x64: communication-heavy), scaling (LeNet 28x28 and ResNet-18
# 32x32 at world 1, 2, 3, global batch 64), r50 (ResNet-50 224 compute
# time, world 1), wide (ResNet-18 32x32, 32 images per rank, world 1, 2, 4,
# 8; needs 8 free cores). Configurations are interleaved round by round
# because the machine is noisy; the summary gives medians over rounds.
# World 1 uses every pinned core (--threads $CORES); world >= 2 gives each
# rank one thread. Raw lines: $OUT/ddp_lines.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-}
if [[ -z $BIN ]]; then
	BIN=$(mktemp -d)/ddpbench
	go build -o "$BIN" ./internal/ddpbench/cmd/ddpbench
fi
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-2}
CORES=${CORES:-2}
PIN=${PIN:-}
SETS=${SETS:-overlap scaling r50}
OUT=${OUT:-bench_scaling_out}
mkdir -p "$OUT"
LINES=$OUT/ddp_lines.txt
: >"$LINES"

run() {
	local tag=$1
	shift
	local line
	if ! line=$($PIN "$BIN" "$@" 2>>"$OUT/progress.log" | grep '^ddp '); then
		echo "FAILED $tag: $*" | tee -a "$LINES" >&2
		return 0
	fi
	echo "$tag $line" | tee -a "$LINES"
}

threads() { if (($1 == 1)); then echo "$CORES"; else echo 1; fi; }

for ((round = 1; round <= ROUNDS; round++)); do
	echo "# round $round/$ROUNDS ($(date -u +%T))" >&2
	for set in $SETS; do
		case $set in
		overlap)
			for ov in true false; do
				run "overlap/resnet18-32/b64/w2/overlap=$ov" --net resnet18 --input 32 --batch 64 --world 2 \
					--threads 1 --overlap=$ov --steps "$STEPS" --warmup "$WARMUP"
			done
			;;
		overlap-alexnet)
			# 57 M parameters, little compute at 64x64: communication-heavy,
			# and the big FC gradients are ready first in backward.
			for ov in true false; do
				run "overlap/alexnet-64/b64/w2/overlap=$ov" --net alexnet --input 64 --batch 64 --world 2 \
					--threads 1 --overlap=$ov --steps "$STEPS" --warmup "$WARMUP"
			done
			;;
		scaling)
			for w in 1 2 3; do
				run "scaling/lenet-28/b64/w$w" --net lenet --input 28 --channels 1 --batch 64 --world "$w" \
					--threads "$(threads "$w")" --steps $((STEPS * 4)) --warmup "$WARMUP"
				run "scaling/resnet18-32/b64/w$w" --net resnet18 --input 32 --batch 64 --world "$w" \
					--threads "$(threads "$w")" --steps "$STEPS" --warmup "$WARMUP"
			done
			;;
		r50)
			run "r50/resnet50-224/b4/w1" --net resnet50 --input 224 --classes 1000 --batch 4 --world 1 \
				--threads "$CORES" --steps 3 --warmup 1
			;;
		wide)
			for w in 1 2 4 8; do
				run "wide/resnet18-32/b32perrank/w$w" --net resnet18 --input 32 --batch $((32 * w)) --world "$w" \
					--threads 1 --steps "$STEPS" --warmup "$WARMUP"
			done
			;;
		*) echo "unknown set $set" >&2; exit 2 ;;
		esac
	done
done

# Medians per configuration.
awk '
function median(s,   n, a, i, j, t) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
$1 != "FAILED" && $2 == "ddp" {
	tag = $1
	if (!(tag in seen)) { seen[tag] = 1; order[++k] = tag }
	runs[tag]++
	for (i = 3; i <= NF; i++) {
		split($i, kv, "=")
		if (kv[1] ~ /^(step_ms|compute_ms|comm_ms|img_per_s)$/) v[tag, kv[1]] = v[tag, kv[1]] " " kv[2]
		if (kv[1] == "rank_compute_ms" || kv[1] == "rank_comm_ms") last[tag, kv[1]] = kv[2]
	}
}
END {
	print "| configuration | runs | step ms | compute ms | comm ms (exposed) | img/s | per-rank compute / comm ms (last run) |"
	print "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
	for (i = 1; i <= k; i++) {
		t = order[i]
		printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %s / %s |\n", t, runs[t], median(v[t, "step_ms"]), median(v[t, "compute_ms"]),
			median(v[t, "comm_ms"]), median(v[t, "img_per_s"]), last[t, "rank_compute_ms"], last[t, "rank_comm_ms"]
	}
}' "$LINES" | tee "$OUT/summary.md"
