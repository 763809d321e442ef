#!/usr/bin/env bash
# Every tracking-speed figure of BENCHMARKS.md in one go, one JSON per run:
#   SAM 2.1 hiera-tiny with 1, 4 and 16 objects beside transformers' loop and the official predictor, and 1 object
#   once more beside the official predictor both plain and in its compiled vos_optimized mode,
#   EdgeTAM (the released architecture: RepViT-M1 encoder) with 1 and 4 objects beside transformers' loop,
#   EdgeTAM without segvlm's fast paths (where each part's time goes in transformers' code),
#   the annotation tool's latency (embed a frame; a click on a frame whose embedding is cached),
#   the one-thread micro-benchmarks of the fast paths' pieces (pipelines/bench_kernels.py).
# Usage: pipelines/bench_tracking.sh OUT_DIR [SAM2_PYTHON] [-- extra benchmark.py arguments, e.g. --device cuda]
# SAM2_PYTHON: an interpreter with the official sam2 package (../shared/tools/official-sam2-venv.sh builds one).
# ONLY_EDGETAM=1 runs the EdgeTAM and latency figures only.
set -euo pipefail
out=${1:?usage: bench_tracking.sh OUT_DIR [SAM2_PYTHON] [-- extra arguments]}
shift
sam2=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then sam2=$1; shift; fi
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
video=${VIDEO:-$(dirname "$0")/../../shared/data/bedroom.mp4}
run() { python "$(dirname "$0")/benchmark.py" --video "$video" "$@"; }
official=()
[ -n "$sam2" ] && official=(--sam2-python "$sam2")
[ -z "${ONLY_EDGETAM:-}" ] && run --frames 12 --objects 1 "${official[@]}" --json "$out/sam2_1_object.json" "$@"
if [ -z "${ONLY_EDGETAM:-}" ] && [ -n "$sam2" ]; then  # + the official compiled mode (compiles for about 2 minutes)
    run --frames 12 --objects 1 "${official[@]}" --official-vos --json "$out/sam2_1_object_with_vos.json" "$@"
fi
[ -z "${ONLY_EDGETAM:-}" ] && run --frames 10 --objects 4 "${official[@]}" --json "$out/sam2_4_objects.json" "$@"
[ -z "${ONLY_EDGETAM:-}" ] && run --frames 8 --objects 16 "${official[@]}" --json "$out/sam2_16_objects.json" "$@"
run --frames 12 --model arch:edgetam --json "$out/edgetam_1_object.json" "$@"
run --frames 12 --model arch:edgetam --json "$out/edgetam_1_object_repeat.json" "$@"
run --frames 12 --model arch:edgetam --json "$out/edgetam_1_object_repeat2.json" "$@"
for name in edgetam_4_objects edgetam_4_objects_repeat edgetam_4_objects_repeat2; do
    run --frames 10 --model arch:edgetam --objects 4 --json "$out/$name.json" "$@"
done
run --frames 10 --model arch:edgetam --no-fast --json "$out/edgetam_1_object_no_fast.json" "$@"
run --frames 6 --latency --json "$out/latency.json" "$@"
if [ -z "${ONLY_EDGETAM:-}" ]; then python "$(dirname "$0")/bench_kernels.py" --json "$out/kernels_1_thread.json"; fi
