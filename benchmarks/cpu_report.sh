#!/usr/bin/env bash
# The CPU results: squeezeae bench for every op (squeezenet1_1 shapes, 224 input, float32) at batch 1 and 8,
# NCHW and channels_last, forward and forward+backward, plus the whole squeezenet1_1 before/after convert()
# (forward, and a training step's forward+backward), writing JSON + markdown per run into OUT_DIR (default
# benchmarks/results), named by CPU and SIMD level.
#
#   bash benchmarks/cpu_report.sh [OUT_DIR]
#
# Benchmarks on a shared machine are only as good as its quietest moment: before each run the script waits
# for the 1-minute load average to fall under MAX_LOAD (default 1.5), up to WAIT_S seconds in all (default
# 600; after that runs start anyway), and each JSON records the load average at its start. THREADS (default 2)
# sets torch's thread count.
#
#   SWEEP="2 3 4 5" bash benchmarks/cpu_report.sh [OUT_DIR]
#
# runs the batch sweep instead: every op at each of those batches, both layouts, forward and forward+backward,
# into OUT_DIR/batch-sweep/ (kept out of the main files' summary), for the batches the report does not cover.
#
#   LOWP=1 bash benchmarks/cpu_report.sh [OUT_DIR]
#
# runs the low-precision forward instead: float16 and bfloat16, batch 1 and 8, channels_last, into
# OUT_DIR/low-precision/ (forward only: eager's float16 convolution backward on the CPU takes seconds a call).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
THREADS=${THREADS:-2}
MAX_LOAD=${MAX_LOAD:-1.5}
WAIT_S=${WAIT_S:-600}
PY=${PYTHON:-python}
mkdir -p "$OUT"
# named by CPU model and SIMD level (one model name can come with or without AVX-512)
cpu=$($PY -c "import torch; from squeezeae_ext.bench import cpu_model, cpu_capability, short_name
print(short_name(cpu_model()) + '-' + cpu_capability(torch))")
FAILED=0

WAITED=0
quiet() {
    local waited=0
    while awk -v max="$MAX_LOAD" '{ exit !($1 >= max) }' /proc/loadavg && [ "$WAITED" -lt "$WAIT_S" ]; do
        sleep 5
        waited=$((waited + 5))
        WAITED=$((WAITED + 5))
    done
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s)"
}

run() {  # run NAME OPTIONS...
    local name=$1
    shift
    quiet
    echo "== cpu-$cpu-$name"
    $PY -m squeezeae_ext bench --device cpu --threads "$THREADS" --quiet \
        --json "$OUT/cpu-$cpu-$name.json" --markdown "$OUT/cpu-$cpu-$name.md" "$@" | tail -n 4 || FAILED=1
}

if [ -n "${LOWP:-}" ]; then
    OUT="$OUT/low-precision"
    mkdir -p "$OUT"
    for dtype in float16 bfloat16; do
        short=$([ "$dtype" = float16 ] && echo fp16 || echo bf16)
        for batch in 1 8; do
            run "$short-b$batch-channels_last" --op all --batch "$batch" --layout channels_last --dtype "$dtype"
        done
    done
    echo
    $PY -m squeezeae_ext.bench --summarize "$OUT"/cpu-"$cpu"-*.json
    exit "$FAILED"
fi

if [ -n "${SWEEP:-}" ]; then
    OUT="$OUT/batch-sweep"
    mkdir -p "$OUT"
    for batch in $SWEEP; do
        for layout in nchw channels_last; do
            run "fp32-b$batch-$layout" --op all --batch "$batch" --layout "$layout"
            run "fp32-b$batch-$layout-backward" --op all --batch "$batch" --layout "$layout" --backward
        done
    done
    echo
    $PY -m squeezeae_ext.bench --summarize "$OUT"/cpu-"$cpu"-*.json
    exit "$FAILED"
fi

run fp32-b1-nchw --op all --batch 1 --layout nchw
run fp32-b1-channels_last --op all --batch 1 --layout channels_last
run fp32-b8-nchw --op all --batch 8 --layout nchw
run fp32-b8-channels_last --op all --batch 8 --layout channels_last
run fp32-b1-nchw-backward --op all --batch 1 --layout nchw --backward
run fp32-b1-channels_last-backward --op all --batch 1 --layout channels_last --backward
run fp32-b8-nchw-backward --op all --batch 8 --layout nchw --backward
run fp32-b8-channels_last-backward --op all --batch 8 --layout channels_last --backward
run model-fp32-channels_last --model squeezenet1_1 --batch 8 --layout channels_last
run model-fp32-nchw --model squeezenet1_1 --batch 8 --layout nchw
run model-fp32-channels_last-backward --model squeezenet1_1 --batch 8 --layout channels_last --backward
run model-fp32-nchw-backward --model squeezenet1_1 --batch 8 --layout nchw --backward

echo
$PY -m squeezeae_ext.bench --summarize "$OUT"/cpu-"$cpu"-*.json
exit "$FAILED"
