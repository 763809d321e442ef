"""The benchmark script runs in a tiny configuration and writes every promised key; no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segvlm.config import SegmenterConfig
from segvlm.segmentation.base import ObjectPrompt

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "benchmark.py"
SPEED_KEYS = {
    "frames": int,
    "segvlm_s_per_frame": float,
    "hf_loop_s_per_frame": float,
    "speedup_vs_best_peer": float,
    "steady_speedup_vs_best_peer": float,
    "steady_speedup_vs_hf_loop": float,
    "gflop_per_frame": float,
    "fraction_of_peak": float,
    "mask_iou_vs_reference": float,
    "confident_mask_iou_vs_reference": float,
    "logit_max_abs_err": float,
    "peak_rss_mb": float,
    "dtype": str,
    "device": str,
    "torch_threads": int,
}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A short synthetic mp4: a bright square moving over a dark background."""
    import av

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(4):
            image = np.full((64, 96, 3), 20, dtype=np.uint8)
            image[16:48, 10 + 8 * index : 42 + 8 * index] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def test_benchmark_speed_mode_writes_every_key(video, tmp_path):
    out = tmp_path / "out.json"
    command = [sys.executable, str(SCRIPT), "--video", video, "--model", "tiny-random:sam2", "--frames", "3"]
    subprocess.run(
        [*command, "--no-official", "--profile", "--json", str(out)], check=True, cwd=ROOT, capture_output=True
    )
    result = json.loads(out.read_text())
    for key, kind in SPEED_KEYS.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert "sam2_official_s_per_frame" in result and result["sam2_official_s_per_frame"] is None
    assert result["frames"] == 3
    assert result["segvlm_s_per_frame"] > 0 and result["hf_loop_s_per_frame"] > 0
    assert result["gflop_per_frame"] > 0 and 0 < result["fraction_of_peak"] < 10
    assert 0.9 <= result["mask_iou_vs_reference"] <= 1.0
    assert result["logit_max_abs_err"] >= 0
    assert result["peak_rss_mb"] > 0
    assert result["dtype"] in {"bfloat16", "float32"}
    assert len(result["per_frame_s"]["segvlm"]) == 3
    breakdown = result["segvlm_module_s"]  # where one frame's time goes, by top-level module
    assert breakdown["vision_encoder"] > 0 and breakdown["total"] > 0
    assert sum(value for name, value in breakdown.items() if name != "total") == pytest.approx(breakdown["total"])
    assert "aten::" in result["segvlm_profile"]  # --profile: the profiler's operator table of one frame


def test_benchmark_tracks_several_objects_in_every_contender(video, tmp_path):
    out = tmp_path / "out.json"
    command = [sys.executable, str(SCRIPT), "--video", video, "--model", "tiny-random:sam2", "--frames", "2"]
    subprocess.run([*command, "--objects", "3", "--no-official", "--json", str(out)], check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["objects"] == 3 and len({tuple(box) for box in result["boxes_xyxy"]}) == 3
    assert result["mask_iou_vs_reference"] >= 0.9  # both contenders tracked the same three objects


def test_benchmark_latency_mode_times_embedding_and_cached_clicks(video, tmp_path):
    out = tmp_path / "out.json"
    command = [sys.executable, str(SCRIPT), "--video", video, "--model", "tiny-random:sam2", "--frames", "3"]
    subprocess.run([*command, "--latency", "--json", str(out)], check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["frames_clicked"] == 2 and len(result["embed_frame_s"]) == len(result["click_cached_s"]) == 2
    assert result["embed_frame_median_s"] > 0 and result["click_cached_median_s"] > 0


def test_benchmark_edit_mode_reports_the_edit_against_the_whole_track(video, tmp_path):
    out = tmp_path / "edit.json"
    command = [sys.executable, str(SCRIPT), "--video", video, "--model", "tiny-random:sam2", "--frames", "16"]
    subprocess.run([*command, "--edit", "--dtype", "float32", "--json", str(out)], check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["frames"] == 16 and result["prompts_before_edit"] == 4
    assert result["full_repropagation_frames"] == 16
    assert result["edit_frames_recomputed"] == 16 // 2 - 16 // 3  # from the edit up to the next correction
    assert 0 <= result["edit_frames_changed"] <= result["edit_frames_recomputed"]
    assert result["edit_s"] > 0 and result["edit_speedup"] > 0 and result["click_in_view_latency_s"] > 0


def test_fast_memory_attention_matches_transformers_in_bfloat16():
    """The cached memory attention gives transformers' masks (bf16, a few tracked frames, two objects)."""
    import torch

    from segvlm.segmentation.sam2 import Sam2VideoSegmenter

    reference = Sam2VideoSegmenter.from_config(SegmenterConfig(model="tiny-random:sam2", dtype="bfloat16"), fast=False)
    fast = Sam2VideoSegmenter(reference.model, reference.processor, reference.config, dtype=torch.bfloat16, fast=True)
    assert fast.fast and not reference.fast
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    slow_session, fast_session = reference.start(48, 64), fast.start(48, 64)
    prompts = [ObjectPrompt(1, box=(8, 8, 40, 40)), ObjectPrompt(2, box=(30, 10, 60, 44))]
    inter = union = 0
    for index, frame in enumerate(frames):
        slow = slow_session.step(frame, prompts if index == 0 else [])
        quick = fast_session.step(frame, prompts if index == 0 else [])
        inter += (slow.masks & quick.masks).sum()
        union += (slow.masks | quick.masks).sum()
    assert union == 0 or inter / union >= 0.99
    # Entries for frames that left the memory window are dropped: at most the window per object.
    assert len(fast_session.memory_cache.frames) <= 2 * (reference.model.config.num_maskmem + 1)


def test_kernel_micro_benchmarks_run_and_compare_like_for_like(tmp_path):
    out = tmp_path / "kernels.json"
    command = [sys.executable, str(ROOT / "pipelines" / "bench_kernels.py"), "--only", "rope", "mlp"]
    subprocess.run([*command, "--json", str(out)], check=True, cwd=ROOT, capture_output=True)
    result = json.loads(out.read_text())
    assert result["threads"] == 1
    assert result["rope"]["same_bits"] is True
    assert result["rope"]["eager_ms"] > 0 and result["rope"]["compiled_ms"] > 0
    assert result["mlp"]["relu_ms"] > 0 and result["mlp"]["relu_in_place_ms"] > 0


FAKE_SAM2 = '''
import os, sys


class Predictor:
    """Scripted stand-in for SAM2VideoPredictor: records how it was built, yields one frame per call."""

    def init_state(self, video_path):
        return {"frames": sorted(os.listdir(video_path))}

    def add_new_points_or_box(self, state, frame_idx, obj_id, box):
        state.setdefault("boxes", []).append(box)

    def propagate_in_video(self, state):
        print("propagate in video: a notice on stdout")  # libraries print; the runner must pass over it
        for index, _ in enumerate(state["frames"]):
            yield index, list(range(len(state["boxes"]))), None


def build_sam2_video_predictor(config, ckpt_path=None, device="cpu", vos_optimized=False):
    print("Compiling all components for VOS setting." if vos_optimized else "building")
    with open(os.environ["FAKE_SAM2_LOG"], "a") as log:
        log.write(f"{config} {device} vos={vos_optimized}\\n")
    return Predictor()
'''


def test_official_runner_speaks_to_the_predictor_in_both_modes(tmp_path, monkeypatch):
    """The official predictor's worker (its own interpreter) is built plain or ``vos_optimized``, and lines its
    library prints on stdout do not break the timing protocol. A scripted ``sam2`` stands in for the package."""
    sys.path.insert(0, str(ROOT / "pipelines"))
    try:
        import benchmark
    finally:
        sys.path.remove(str(ROOT / "pipelines"))
    (tmp_path / "sam2").mkdir()
    (tmp_path / "sam2" / "__init__.py").write_text("")
    (tmp_path / "sam2" / "build_sam.py").write_text(FAKE_SAM2)
    log = tmp_path / "built.txt"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FAKE_SAM2_LOG", str(log))
    frames = [np.full((32, 48, 3), value, dtype=np.uint8) for value in (10, 120, 240)]
    boxes = [(4.0, 4.0, 20.0, 20.0), (24.0, 8.0, 40.0, 28.0)]
    for vos in (False, True):
        runner = benchmark.OfficialRunner(sys.executable, frames, boxes, "bfloat16", "cpu", threads=1, vos=vos)
        assert runner.name == ("sam2_official_vos" if vos else "sam2_official")
        try:
            runner.setup()
            for index in range(len(frames)):
                runner.step(index)
        finally:
            runner.close()
        assert len(runner.timings.frames) == len(frames) and runner.timings.setup >= 0
    assert log.read_text().splitlines() == [
        "configs/sam2.1/sam2.1_hiera_t.yaml cpu vos=False",
        "configs/sam2.1/sam2.1_hiera_t.yaml cpu vos=True",
    ]
