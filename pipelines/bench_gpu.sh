#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one go (about six minutes on one H100/H200), one JSON per run:
#   SAM 2.1 hiera-tiny with 1, 4 and 16 objects beside transformers' loop and the official predictor,
#   EdgeTAM (the released architecture) with 1 and 4 objects beside transformers' loop,
#   the annotation tool's latency (embed a frame; a click on a frame whose embedding is cached).
# VOS=1 runs instead 1 object beside the official predictor both plain and in its compiled vos_optimized mode:
#   its max-autotune compilation took over four minutes on an H200, so it gets a device session of its own.
# Usage: pipelines/bench_gpu.sh OUT_DIR SAM2_PYTHON
# SAM2_PYTHON: an interpreter with the official sam2 package. VIDEO: a video or a folder of JPEG frames
# (default ../shared/data/bedroom.mp4). PYTHON (default python3), DEVICE (default cuda) and LIMIT (seconds per
# run, default 120; 560 with VOS=1) can be set. A run that fails or times out is reported and the next one
# starts: the figures already written stay.
set -uo pipefail
out=${1:?usage: bench_gpu.sh OUT_DIR SAM2_PYTHON}
sam2=${2:?usage: bench_gpu.sh OUT_DIR SAM2_PYTHON}
here=$(dirname "$0")
video=${VIDEO:-$here/../../shared/data/bedroom.mp4}
mkdir -p "$out"
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "${PYTHON:-python3}" "$here/benchmark.py" --device "${DEVICE:-cuda}" --video "$video" "$@" \
        --json "$out/$name.json" || echo "== $name did not finish (exit $?)"
}
"${PYTHON:-python3}" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() \
    if torch.cuda.is_available() else 'no GPU')"
if [ -n "${VOS:-}" ]; then
    run gpu_sam2_1_object_vos "${LIMIT:-560}" --frames 40 --objects 1 --sam2-python "$sam2" --official-vos
    exit 0
fi
limit=${LIMIT:-120}
run gpu_sam2_1_object "$limit" --frames 40 --objects 1 --sam2-python "$sam2" --profile
run gpu_sam2_4_objects "$limit" --frames 30 --objects 4 --sam2-python "$sam2"
run gpu_edgetam_1_object "$limit" --frames 40 --model arch:edgetam --profile
run gpu_latency "$limit" --frames 8 --latency
run gpu_sam2_16_objects "$limit" --frames 20 --objects 16 --sam2-python "$sam2"
run gpu_edgetam_4_objects "$limit" --frames 30 --model arch:edgetam --objects 4
