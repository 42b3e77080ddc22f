#!/usr/bin/env bash
# The GPU report: ONE command that, on a CUDA machine, builds the extension, prints `squeezeae info`, runs the
# whole test suite, runs compute-sanitizer (memcheck, racecheck) on tests/cuda_sanitize_case.py, and times
# fire / max_unpool2d / unpool_fire (batch 64, 224 input) in fp16/bf16/fp32, NCHW and channels_last, writing
# logs, JSON and markdown into one folder and printing a short summary last.
#
#   bash benchmarks/gpu_report.sh [OUT_DIR]      # default benchmarks/results/gpu-<device name>
#
# Needs no network (builds with --no-build-isolation --no-deps). Every step runs under a time cap taken from
# one overall budget (SQUEEZEAE_REPORT_BUDGET seconds, default 480): steps that no longer fit are skipped and
# said so. A failing step is recorded and the script goes on; the exit status is 1 if any step failed.
# Environment: PYTHON (default python), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# SQUEEZEAE_REPORT_BUDGET, SQUEEZEAE_REPORT_SKIP_BUILD=1 (use the extension already built in place),
# SQUEEZEAE_REPORT_SKIP_TESTS=1 (benchmarks only), BENCH_REPS / BENCH_WARMUP (default 30 / 5).
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${SQUEEZEAE_REPORT_BUDGET:-480}
PY=${PYTHON:-python}
REPS=${BENCH_REPS:-30}
WARMUP=${BENCH_WARMUP:-5}

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "$gpu_name" ] || gpu_name=$($PY -c "import torch; print(torch.cuda.get_device_name())" 2>/dev/null)
[ -n "$gpu_name" ] || gpu_name="unknown-gpu"
short=$(printf '%s' "$gpu_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/nvidia//g' -e 's/[^a-z0-9]\+/-/g' \
        -e 's/^-*//' -e 's/-*$//')
OUT=${1:-benchmarks/results/gpu-$short}
mkdir -p "$OUT"
echo "GPU report: $gpu_name -> $OUT (budget ${BUDGET}s)"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

STEPS=()
FAILED=0

# step NAME CAP_SECONDS MIN_SECONDS COMMAND...: runs COMMAND with its output in $OUT/NAME.log, under
# min(CAP, what is left of the budget); skipped when less than MIN seconds are left.
step() {
    local name=$1 cap=$2 need=$3
    shift 3
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt "$need" ]; then
        STEPS+=("$(printf '%-38s %-22s %5s' "$name" "skipped (time budget)" "-")")
        echo "== $name: skipped, ${left}s of the budget left"
        return 0
    fi
    local limit=$((cap < left ? cap : left))
    echo "== $name (cap ${limit}s)"
    local t0
    t0=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local took=$(($(date +%s) - t0))
    local state="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        state="TIMED OUT after ${limit}s"
        FAILED=1
    elif [ "$rc" -ne 0 ]; then
        state="FAILED (exit $rc)"
        FAILED=1
    fi
    STEPS+=("$(printf '%-38s %-22s %4ss' "$name" "$state" "$took")")
    echo "   $state in ${took}s; last lines of $OUT/$name.log:"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

# 1. build (CUDA sources are compiled when torch has CUDA and nvcc is found)
if [ "${SQUEEZEAE_REPORT_SKIP_BUILD:-0}" = "1" ]; then
    STEPS+=("$(printf '%-38s %-22s %5s' build "skipped (asked)" "-")")
else
    step build 330 60 env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
        "$PY" -m pip install --no-build-isolation --no-deps -e .
fi

# 2. what was built
step info 60 5 "$PY" -m squeezeae_ext info
cat "$OUT/info.log"

# 3. the whole test suite, every failure shown (no -x)
if [ "${SQUEEZEAE_REPORT_SKIP_TESTS:-0}" = "1" ]; then
    STEPS+=("$(printf '%-38s %-22s %5s' tests "skipped (asked)" "-")")
else
    step tests 200 30 "$PY" -m pytest tests -q -ra -p no:cacheprovider --junitxml="$OUT/tests.xml"
fi

# 4. compute-sanitizer on a small case (the script is written with the CUDA kernels)
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$SANITIZER" ] && [ -f tests/cuda_sanitize_case.py ]; then
    step sanitize-memcheck 90 20 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PY" tests/cuda_sanitize_case.py
    step sanitize-racecheck 90 20 "$SANITIZER" --tool racecheck --error-exitcode 1 "$PY" tests/cuda_sanitize_case.py
else
    why="no compute-sanitizer"
    [ -f tests/cuda_sanitize_case.py ] || why="no tests/cuda_sanitize_case.py"
    STEPS+=("$(printf '%-38s %-22s %5s' sanitize "skipped ($why)" "-")")
fi

# 5. benchmarks, most important first; one JSON + markdown per run
bench() {  # bench NAME CAP OPTIONS...
    local name=$1 cap=$2
    shift 2
    step "bench-$name" "$cap" 25 "$PY" -m squeezeae_ext bench --device cuda --batch 64 --size 224 \
        --reps "$REPS" --warmup "$WARMUP" --row-budget 5 --quiet \
        --json "$OUT/$short-$name.json" --markdown "$OUT/$short-$name.md" "$@"
}
bench fp16-channels_last-fwd 90 --op all --dtype float16 --layout channels_last --plot "$OUT/$short-fp16-channels_last-fwd.png"
bench bf16-channels_last-fwd 90 --op all --dtype bfloat16 --layout channels_last
bench fp32-nchw-fwd 90 --op all --dtype float32 --layout nchw
bench fp16-channels_last-bwd 120 --op all --dtype float16 --layout channels_last --backward
bench fp32-channels_last-fwd 90 --op all --dtype float32 --layout channels_last
bench fp16-nchw-fwd 90 --op all --dtype float16 --layout nchw
bench bf16-nchw-fwd 90 --op all --dtype bfloat16 --layout nchw
bench model-fp16-channels_last 60 --model squeezenet1_1 --dtype float16 --layout channels_last
bench fp16-channels_last-fwd-compile 240 --op fire --dtype float16 --layout channels_last --compile

# 6. summary, printed last
{
    echo
    echo "================ GPU report: $gpu_name ($(($(date +%s) - START))s) -> $OUT"
    printf '%-38s %-22s %5s\n' step status time
    printf '%s\n' "${STEPS[@]}"
    if [ -f "$OUT/tests.log" ]; then
        echo "tests: $(grep -E '(passed|failed|error|skipped)' "$OUT/tests.log" | tail -n 1)"
    fi
    echo
    shopt -s nullglob
    results=("$OUT"/*.json)
    if [ "${#results[@]}" -gt 0 ]; then
        "$PY" -m squeezeae_ext.bench --summarize "${results[@]}"
    fi
    [ "$FAILED" -eq 0 ] && echo "ALL STEPS OK" || echo "SOME STEPS FAILED (see the logs in $OUT)"
} 2>&1 | tee "$OUT/summary.txt"
exit "$FAILED"
