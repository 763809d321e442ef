"""Benchmark segvlm's SAM 2 session against transformers' documented loop and the official ``sam2`` package.

Default mode: the same frames and box prompt go through

(a) segvlm's streaming session (:class:`segvlm.segmentation.sam2.Sam2Session`),
(b) transformers' documented loop (``init_video_session(video=frames)``, ``add_inputs_to_inference_session``,
    ``model(inference_session, frame_idx=0)``, ``propagate_in_video_iterator``), same weights, same dtype,
(c) the official ``sam2`` package's ``SAM2VideoPredictor`` (same SAM 2.1 hiera-tiny architecture, its own
    seeded random weights) when it can be imported, by this interpreter or by ``--sam2-python``.

The contenders advance one frame each in turn (the order rotates every frame), so load from other users of
a shared machine hits all of them alike. The official predictor's worker waits for its turn with its OpenMP
threads asleep (``OMP_WAIT_POLICY=PASSIVE``): spinning idle threads of that process slowed the in-process
contenders running next on the two cores (segvlm 1.83 s/frame against 1.64 s), while the official predictor's
own time is the same either way (4.19 / 4.16 s); with every process passive (``OMP_WAIT_POLICY=PASSIVE`` for
the benchmark too) segvlm's many short parallel regions pay the wake-ups (1.92 s). The script prints
a table and writes JSON (``--json``).

Other modes:

* ``--memory-frames N``: peak RSS of a segvlm session over an N-frame looped video against a 200-frame
  run, each in its own subprocess so the runs do not share a high-water mark (``rss_ratio``).
* ``--end-to-end``: the full pipeline (decode, prefetch/preprocess, a fixed grounder, tracking, RLE, saving
  the result) against the time spent inside the segmenter's ``step``; reports the overhead in percent.
* ``--latency``: the annotation tool's waits: embedding a frame, and a click on a frame whose embedding is
  cached (prompt encoder and mask decoder only).
* ``--edit``: a correction session on an N-frame video whose track already holds a box and 3 corrections;
  the time of one more click (re-propagated up to the next prompt) against re-propagating the track over
  the whole video (``propagate_all``), and the latency of a click re-segmenting only the frame in view.

Examples::

    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --frames 12 --json out.json
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --memory-frames 2000 --json mem.json
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --end-to-end --frames 12
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --edit --frames 300 --model tiny-random:sam2
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --frames 12 --objects 4
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --frames 12 --model arch:edgetam
    python pipelines/benchmark.py --video ../shared/data/bedroom.mp4 --latency --frames 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "tiny-random:sam2.1-hiera-tiny-arch"  # ``arch:edgetam``: the released EdgeTAM architecture
CONFIDENT_LOGIT = 1.0  # pixels whose reference logit is at least this far from 0 count as "clearly decided"


# -- helpers ---------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def torch_dtype(name: str, device: str):
    from segvlm.devices import resolve_dtype

    return resolve_dtype(name, device)


def load_frames(video: str, count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """``count`` RGB frames from ``video``, looping it when it is shorter; optionally resized to (W, H)."""
    from PIL import Image

    from segvlm.video import read_frames

    decoded = []
    for frame in read_frames(video, max_frames=min(count, 200)):
        image = frame.image
        if size is not None:
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        decoded.append(image)
    return [decoded[i % len(decoded)] for i in range(count)]


def default_box(height: int, width: int) -> tuple[float, float, float, float]:
    """A central box (xyxy) covering about 40 % x 60 % of the frame."""
    return (0.3 * width, 0.25 * height, 0.7 * width, 0.85 * height)


def object_boxes(count: int, height: int, width: int, first=None) -> list[tuple[float, float, float, float]]:
    """``count`` prompt boxes: ``first`` (default: the central box), then the cells of a square grid."""
    boxes = [tuple(first) if first else default_box(height, width)]
    side = int(np.ceil(np.sqrt(count - 1))) if count > 1 else 1
    for index in range(count - 1):
        row, col = divmod(index, side)
        cell_w, cell_h = width / side, height / side
        x0, y0 = cell_w * col, cell_h * row
        boxes.append((x0 + 0.1 * cell_w, y0 + 0.1 * cell_h, x0 + 0.9 * cell_w, y0 + 0.9 * cell_h))
    return boxes


EDGETAM_ARCH = "arch:edgetam"  # the released EdgeTAM architecture (RepViT-M1 encoder), seeded random weights


def resolve_benchmark_model(model: str) -> str:
    """``arch:edgetam`` -> a local folder with that model (built once); any other name passes through.

    The architecture is the released checkpoint's (``yonigozlan/EdgeTAM-hf``: a timm RepViT-M1 image encoder,
    the perceiver memory). ``EdgeTamVideoConfig()`` alone is not: its default vision config is SAM 2's
    Hiera-tiny, which makes the image encoder five times the released one's cost."""
    if model != EDGETAM_ARCH:
        return model
    folder = Path(tempfile.gettempdir()) / "segvlm-benchmark-edgetam-repvit"
    if not (folder / "config.json").exists():
        import torch
        from transformers import EdgeTamVideoConfig, EdgeTamVideoModel, Sam2VideoProcessor

        from segvlm.testing.models import edgetam_vision_config

        torch.manual_seed(0)
        config = EdgeTamVideoConfig(vision_config=edgetam_vision_config())
        EdgeTamVideoModel(config).eval().save_pretrained(folder)
        Sam2VideoProcessor.from_pretrained(resolve_model_path("tiny-random:sam2.1-hiera-tiny-arch")).save_pretrained(
            folder
        )
    return str(folder)


def resolve_model_path(model: str) -> str:
    from segvlm.resolve import resolve_model

    return resolve_model(model)


def segmenter_class(model: str):
    """The segvlm segmenter that loads ``model`` (by its kind, as the registry tells it), SAM 2's by default."""
    from segvlm import registry

    kind = registry.checkpoint_kind(model)
    name = kind and registry.backend_for("segmenter", kind, tiny=model.startswith(registry.TINY_PREFIX))
    return registry.segmenter_class(name or "sam2")


def matmul_peak_gflops(dtype, device: str, size: int | None = None, repeats: int = 5) -> float:
    """Best-of-``repeats`` dense ``size``^3 matmul throughput in GFLOP/s for ``dtype`` on ``device``; ``size``
    defaults to 2048 on CPUs and 8192 on GPUs (a 2048^3 product is too small to fill a data-centre GPU)."""
    import torch

    size = size or (8192 if device.startswith("cuda") else 2048)

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of scaled-dot-product attention: Q K^T plus A V (the CPU flash kernel is not counted by torch)."""
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


def count_gflop(fn) -> float | None:
    """GFLOP of ``fn()`` counted by FlopCounterMode, with the CPU flash-attention kernel added; None where the
    counter cannot follow the model (its module hooks fail inside EdgeTAM's memory perceiver)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        if hasattr(torch.ops.aten, name):
            mapping[getattr(torch.ops.aten, name)] = _sdpa_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    try:
        with counter:
            fn()
    except AttributeError as error:
        print(f"flop count unavailable for this model: {error}", flush=True)
        return None
    return counter.get_total_flops() / 1e9


def module_seconds(model, fn, device: str) -> dict[str, float]:
    """Wall seconds each top-level submodule of ``model`` spends in one call of ``fn`` (forward hooks), the rest
    under ``other``: where a segvlm frame's time goes. SAM 2's fast memory attention runs its layers from the
    model's own method, so for SAM 2 it counts under ``other``."""
    seconds: dict[str, float] = {}
    handles = []
    for name, module in model.named_children():

        def before(_module, _args, name=name):
            sync(device)
            seconds[name] = seconds.get(name, 0.0) - time.perf_counter()

        def after(_module, _args, _output, name=name):
            sync(device)
            seconds[name] += time.perf_counter()

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        total = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    seconds = {name: value for name, value in sorted(seconds.items(), key=lambda item: -item[1]) if value > 0}
    return {**seconds, "other": total - sum(seconds.values()), "total": total}


def profile_table(fn, device: str, rows: int = 30) -> str:
    """torch.profiler's table of one call of ``fn`` (the operators taking the most time, with the GPU's kernel
    times on a GPU): where a frame's time goes below the module level."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    sync(device)
    with profile(activities=activities) as profiler:
        fn()
        sync(device)
    sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60)


# -- contenders ------------------------------------------------------------------------------------------------
@dataclass
class Timings:
    """Wall seconds of one contender: set-up (session creation, up-front preprocessing) and each frame."""

    setup: float = 0.0
    frames: list[float] = field(default_factory=list)

    def per_frame(self) -> float:
        return (self.setup + sum(self.frames)) / max(len(self.frames), 1)

    def steady(self, skip: int) -> float:
        """Mean seconds per frame once the memory bank is full (frames after ``skip``)."""
        tail = self.frames[skip:] or self.frames
        return sum(tail) / max(len(tail), 1)


class SegvlmRunner:
    """(a) segvlm's streaming session; keeps each frame's mask logits for the comparison."""

    name = "segvlm"

    def __init__(self, model: str, dtype: str, device: str, frames: list[np.ndarray], boxes, fast: bool = True):
        from segvlm.config import SegmenterConfig

        config = SegmenterConfig(model=model, dtype=dtype)
        self.segmenter = segmenter_class(model).from_config(config, device=device, fast=fast)
        self.frames, self.boxes, self.device = frames, boxes, device
        self.timings, self.logits = Timings(), []

    def setup(self) -> None:
        start = time.perf_counter()
        height, width = self.frames[0].shape[:2]
        self.session = self.segmenter.start(height, width)
        self.timings.setup = time.perf_counter() - start

    def step(self, index: int) -> None:
        from segvlm.segmentation.base import ObjectPrompt

        prompts = [ObjectPrompt(i + 1, box=box) for i, box in enumerate(self.boxes)] if index == 0 else []
        sync(self.device)
        start = time.perf_counter()
        self.session.step(self.frames[index], prompts)
        sync(self.device)
        self.timings.frames.append(time.perf_counter() - start)
        self.logits.append(self.session.last_logits[:, 0].float().cpu().numpy())  # (N, H, W)


class HfLoopRunner:
    """(b) transformers' documented loop over the whole video, same weights and dtype as segvlm."""

    name = "hf_loop"

    def __init__(self, segmenter, frames: list[np.ndarray], boxes, device: str):
        self.model, self.processor, self.dtype = segmenter.model, segmenter.processor, segmenter.dtype
        self.frames, self.boxes, self.device = frames, boxes, device
        self.timings, self.logits = Timings(), []

    def setup(self) -> None:
        import torch

        start = time.perf_counter()
        self.session = self.processor.init_video_session(
            video=self.frames, inference_device=self.device, dtype=self.dtype
        )
        self.processor.add_inputs_to_inference_session(
            inference_session=self.session,
            frame_idx=0,
            obj_ids=list(range(1, len(self.boxes) + 1)),
            input_boxes=[[list(map(float, box)) for box in self.boxes]],  # (image, object, 4)
        )
        self.iterator = None
        self._mode = torch.inference_mode()
        self.timings.setup = time.perf_counter() - start

    def step(self, index: int) -> None:
        import torch

        height, width = self.frames[0].shape[:2]
        sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            if self.iterator is None:
                self.model(inference_session=self.session, frame_idx=0)
                self.iterator = self.model.propagate_in_video_iterator(self.session)
            output = next(self.iterator)
            logits = self.processor.post_process_masks(
                [output.pred_masks.float()], original_sizes=[[height, width]], binarize=False
            )[0]  # (N, 1, H, W)
        sync(self.device)
        self.timings.frames.append(time.perf_counter() - start)
        self.logits.append(logits[:, 0].cpu().numpy())


OFFICIAL_WORKER = r"""
import contextlib, json, sys, time, torch
frames_dir, dtype, device, vos = sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5] == "vos"
boxes = [[float(v) for v in box.split(",")] for box in sys.argv[2].split(";")]
from sam2.build_sam import build_sam2_video_predictor
torch.manual_seed(0)
with contextlib.redirect_stdout(sys.stderr):  # stdout carries the timings; the builder prints notices
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device=device, vos_optimized=vos
    )
autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16")
with torch.inference_mode(), autocast:
    start = time.perf_counter()
    state = predictor.init_state(video_path=frames_dir)
    for obj_id, box in enumerate(boxes, start=1):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, box=box)
    print(json.dumps({"setup": time.perf_counter() - start}), flush=True)
    iterator = predictor.propagate_in_video(state)
    for line in sys.stdin:
        start = time.perf_counter()
        next(iterator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        print(json.dumps({"s": time.perf_counter() - start}), flush=True)
"""


class OfficialRunner:
    """(c) the official ``sam2`` SAM2VideoPredictor in a subprocess (its own interpreter/venv), frame by frame.

    It reads a folder of JPEG frames (its documented input) and runs under ``torch.autocast`` bf16 when the
    benchmark dtype is bfloat16, as its README does on GPUs. Its weights are its own seeded random ones: the
    compute per frame does not depend on the weights, and its masks are not compared.

    ``vos``: the predictor's ``vos_optimized`` mode (``SAM2VideoPredictorVOS``: image encoder, memory encoder,
    memory attention, prompt encoder and mask decoder through ``torch.compile(mode="max-autotune")``), which
    compiles during set-up and the first frames.
    """

    def __init__(
        self, python: str, frames: list[np.ndarray], boxes, dtype: str, device: str, threads: int, vos: bool = False
    ):
        self.python, self.frames, self.boxes, self.dtype, self.device = python, frames, boxes, dtype, device
        self.threads, self.vos = threads, vos
        self.name = "sam2_official_vos" if vos else "sam2_official"
        self.timings = Timings()

    def setup(self) -> None:
        from PIL import Image

        self.folder = tempfile.TemporaryDirectory(prefix="sam2-frames-")
        for index, frame in enumerate(self.frames):
            Image.fromarray(frame).save(Path(self.folder.name) / f"{index:05d}.jpg", quality=95)
        # Asleep while waiting for its next turn (see the module docstring); its own speed is unchanged.
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "OMP_WAIT_POLICY": "PASSIVE"}
        box = ";".join(",".join(str(float(v)) for v in box) for box in self.boxes)
        mode = "vos" if self.vos else "plain"
        self.process = subprocess.Popen(
            [self.python, "-c", OFFICIAL_WORKER, self.folder.name, box, self.dtype, self.device, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        self.timings.setup = json.loads(self._read())["setup"]

    def _read(self) -> str:
        """The worker's next JSON line (lines printed by its library on the way are passed over)."""
        while line := self.process.stdout.readline():
            if line.startswith("{"):
                return line
        raise RuntimeError(f"the official sam2 worker exited (code {self.process.wait()})")

    def step(self, index: int) -> None:
        self.process.stdin.write("next\n")
        self.process.stdin.flush()
        self.timings.frames.append(json.loads(self._read())["s"])

    def close(self) -> None:
        if getattr(self, "process", None) is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        if getattr(self, "folder", None) is not None:
            self.folder.cleanup()


def find_sam2_python(explicit: str | None) -> str | None:
    """An interpreter that can ``import sam2``: ``explicit``, ``$SEGVLM_SAM2_PYTHON``, or this one; else None."""
    for candidate in (explicit, os.environ.get("SEGVLM_SAM2_PYTHON"), sys.executable):
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sam2.build_sam"], capture_output=True, cwd=tempfile.gettempdir()
        )
        if probe.returncode == 0:
            return candidate
    return None


# -- comparison ------------------------------------------------------------------------------------------------
@dataclass
class Agreement:
    """segvlm's masks against the transformers loop's, pooled over all frames and objects."""

    mask_iou: float
    confident_mask_iou: float
    logit_max_abs_err: float
    confident_fraction: float


def compare(logits: list[np.ndarray], reference: list[np.ndarray]) -> Agreement:
    inter = union = conf_inter = conf_union = confident = total = 0
    max_err = 0.0
    for ours, ref in zip(logits, reference):
        mine, theirs = ours > 0, ref > 0
        inter += np.logical_and(mine, theirs).sum()
        union += np.logical_or(mine, theirs).sum()
        clear = np.abs(ref) >= CONFIDENT_LOGIT
        conf_inter += np.logical_and(mine, theirs)[clear].sum()
        conf_union += np.logical_or(mine, theirs)[clear].sum()
        confident += clear.sum()
        total += clear.size
        max_err = max(max_err, float(np.abs(ours - ref).max()))
    return Agreement(
        mask_iou=float(inter / union) if union else 1.0,
        confident_mask_iou=float(conf_inter / conf_union) if conf_union else 1.0,
        logit_max_abs_err=max_err,
        confident_fraction=float(confident / total) if total else 0.0,
    )


# -- modes -----------------------------------------------------------------------------------------------------
def run_speed(args) -> dict:
    import torch

    frames = load_frames(args.video, args.frames)
    height, width = frames[0].shape[:2]
    boxes = object_boxes(args.objects, height, width, args.box)
    model = resolve_benchmark_model(args.model)
    ours = SegvlmRunner(model, args.dtype, args.device, frames, boxes, fast=not args.no_fast)
    dtype_name = str(ours.segmenter.dtype).removeprefix("torch.")
    runners = [ours, HfLoopRunner(ours.segmenter, frames, boxes, args.device)]
    # The official predictor is built as SAM 2.1 hiera-tiny; compare it only against that architecture.
    same_arch = "hiera-tiny" in args.model or "hiera_t" in args.model
    sam2_python = None if args.no_official or not same_arch else find_sam2_python(args.sam2_python)
    if sam2_python is not None:
        threads = torch.get_num_threads()
        runners.append(OfficialRunner(sam2_python, frames, boxes, dtype_name, args.device, threads))
        if args.official_vos:
            runners.append(OfficialRunner(sam2_python, frames, boxes, dtype_name, args.device, threads, vos=True))
    try:
        for runner in runners:
            runner.setup()
        for index in range(len(frames)):
            shift = index % len(runners)
            for runner in runners[shift:] + runners[:shift]:  # rotate the order every frame
                runner.step(index)
                print(f"frame {index:3d} {runner.name:14s} {runner.timings.frames[-1]:7.3f} s", flush=True)
    finally:
        for runner in runners:
            if isinstance(runner, OfficialRunner):
                runner.close()

    agreement = compare(ours.logits, runners[1].logits)
    skip = ours.segmenter.model.config.num_maskmem
    gflop = count_gflop(lambda: ours.session.step(frames[-1]))  # one more tracked frame, full memory bank
    breakdown = module_seconds(ours.segmenter.model, lambda: ours.session.step(frames[-1]), args.device)
    profile = profile_table(lambda: ours.session.step(frames[-1]), args.device) if args.profile else None
    peak = matmul_peak_gflops(ours.segmenter.dtype, args.device)
    segvlm_s = ours.timings.per_frame()
    peers = {runner.name: runner.timings.per_frame() for runner in runners[1:]}
    official = peers.get("sam2_official")
    steady = ours.timings.steady(skip)
    official_steady = next((r.timings.steady(skip) for r in runners if r.name == "sam2_official"), None)
    vos_steady = next((r.timings.steady(skip) for r in runners if r.name == "sam2_official_vos"), None)
    return {
        "mode": "speed",
        "model": args.model,
        "video": str(args.video),
        "frames": len(frames),
        "frame_size": [height, width],
        "objects": len(boxes),
        "boxes_xyxy": [list(box) for box in boxes],
        "segvlm_s_per_frame": segvlm_s,
        "hf_loop_s_per_frame": peers["hf_loop"],
        "sam2_official_s_per_frame": official,
        "sam2_official_python": sam2_python,
        **({"sam2_official_vos_s_per_frame": peers["sam2_official_vos"]} if vos_steady else {}),
        "speedup_vs_best_peer": min(peers.values()) / segvlm_s,
        "speedup_vs_hf_loop": peers["hf_loop"] / segvlm_s,
        # Once the memory bank is full (the target of BENCHMARKS.md): the peers' steady s/frame over segvlm's.
        "steady_speedup_vs_best_peer": min(r.timings.steady(skip) for r in runners[1:]) / steady,
        "steady_speedup_vs_hf_loop": runners[1].timings.steady(skip) / steady,
        "steady_speedup_vs_official": official_steady / steady if official_steady else None,
        **({"steady_speedup_vs_official_vos": vos_steady / steady} if vos_steady else {}),
        "steady_s_per_frame": {r.name: r.timings.steady(skip) for r in runners},
        "setup_s": {r.name: r.timings.setup for r in runners},
        "per_frame_s": {r.name: r.timings.frames for r in runners},
        "segvlm_module_s": breakdown,
        **({"segvlm_profile": profile} if profile else {}),
        "gflop_per_frame": gflop,
        "matmul_peak_gflops": peak,
        "achieved_gflops": gflop / steady if gflop else None,
        "fraction_of_peak": gflop / steady / peak if gflop else None,
        "mask_iou_vs_reference": agreement.mask_iou,
        "confident_mask_iou_vs_reference": agreement.confident_mask_iou,
        "confident_logit_margin": CONFIDENT_LOGIT,
        "confident_pixel_fraction": agreement.confident_fraction,
        "logit_max_abs_err": agreement.logit_max_abs_err,
        "peak_rss_mb": peak_rss_mb(),
        "dtype": dtype_name,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "fast_path": bool(getattr(ours.segmenter, "fast", False)),
        "notes": (
            "random weights: logits sit near the 0 threshold, so mask_iou is sensitive to rounding; "
            f"confident_mask_iou counts only pixels whose reference logit is >= {CONFIDENT_LOGIT} from 0. "
            "s_per_frame includes set-up (session creation, up-front preprocessing) divided by frames."
        ),
    }


def rss_worker(args) -> dict:
    """One memory run in this (fresh) process: track ``args.frames`` looped frames, report peak RSS."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import Sam2VideoSegmenter

    frames = load_frames(args.video, min(args.frames, 200), size=tuple(args.memory_size))
    height, width = frames[0].shape[:2]
    segmenter = Sam2VideoSegmenter.from_config(SegmenterConfig(model=args.model, dtype=args.dtype), args.device)
    session = segmenter.start(height, width)
    box = default_box(height, width)
    start = time.perf_counter()
    state_sizes = []
    for index in range(args.frames):
        prompts = [ObjectPrompt(1, box=box), ObjectPrompt(2, box=(0, 0, width / 3, height / 3))] if index == 0 else []
        session.step(frames[index % len(frames)], prompts)
        if index % 100 == 0 or index == args.frames - 1:
            state_sizes.append(session.state_size())
    return {
        "frames": args.frames,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - start,
        "state_size": state_sizes,
    }


def run_memory(args) -> dict:
    """Peak RSS of an N-frame run over a 200-frame run, each in its own subprocess."""
    results = {}
    for count in (200, args.memory_frames):
        command = [sys.executable, __file__, "--rss-worker", "--frames", str(count), "--video", str(args.video)]
        command += ["--model", args.memory_model, "--dtype", args.dtype, "--device", args.device]
        command += ["--memory-size", *map(str, args.memory_size)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        results[count] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(
            f"{count:6d} frames: peak RSS {results[count]['peak_rss_mb']:.0f} MiB in {results[count]['seconds']:.0f} s",
            flush=True,
        )
    long, short = results[args.memory_frames], results[200]
    return {
        "mode": "memory",
        "model": args.memory_model,
        "frame_size": [args.memory_size[1], args.memory_size[0]],
        "objects": 2,
        "frames": args.memory_frames,
        "baseline_frames": 200,
        "peak_rss_mb": long["peak_rss_mb"],
        "baseline_peak_rss_mb": short["peak_rss_mb"],
        "rss_ratio": long["peak_rss_mb"] / short["peak_rss_mb"],
        "seconds": long["seconds"],
        "state_size": long["state_size"],
        "dtype": args.dtype,
        "device": args.device,
        "notes": "frames looped from the video, resized; session state_size sampled every 100 frames",
    }


def run_end_to_end(args) -> dict:
    """The pipeline with a fixed grounder: total wall time against time inside the segmenter's step."""
    import torch

    from segvlm.config import PipelineConfig, SegmenterConfig
    from segvlm.segmentation.sam2 import Sam2Session, Sam2VideoSegmenter
    from segvlm.tracking import Pipeline
    from segvlm.types import Detection
    from segvlm.video import read_frames

    first = next(iter(read_frames(args.video, max_frames=1))).image
    box = tuple(args.box) if args.box else default_box(*first.shape[:2])

    class FixedGrounder:
        """Returns the same box for every frame (grounding cost amortised to ~0)."""

        def detect(self, image, phrases, query=""):
            return [Detection(box, 0.9, phrases[0], phrases[0])]

    step_seconds = []
    original_step = Sam2Session.step

    def timed_step(self, *step_args, **step_kwargs):
        start = time.perf_counter()
        try:
            return original_step(self, *step_args, **step_kwargs)
        finally:
            step_seconds.append(time.perf_counter() - start)

    segmenter = Sam2VideoSegmenter.from_config(SegmenterConfig(model=args.model, dtype=args.dtype), args.device)
    config = PipelineConfig()
    config.device = args.device
    pipeline = Pipeline(config, grounder=FixedGrounder(), segmenter=segmenter)
    Sam2Session.step = timed_step
    try:
        start = time.perf_counter()
        result = pipeline("the object", args.video, max_frames=args.frames)
        tracked = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:
            write_start = time.perf_counter()
            result.save(folder)
            written = time.perf_counter() - write_start
    finally:
        Sam2Session.step = original_step
    total = tracked + written
    model = sum(step_seconds)
    return {
        "mode": "end_to_end",
        "model": args.model,
        "frames": len(result.frames),
        "total_s": total,
        "segmenter_step_s": model,
        "write_s": written,
        "overhead_s": total - model,
        "overhead_percent": 100 * (total - model) / total,
        "s_per_frame": total / max(len(result.frames), 1),
        "dtype": str(segmenter.dtype).removeprefix("torch."),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "notes": "fixed grounder; preprocessing runs on the prefetch thread, overlapping the model",
    }


def run_edit(args) -> dict:
    """One more edit on a track with 3 corrections, against re-propagating the track over the whole video."""
    from segvlm.config import SegmenterConfig
    from segvlm.corrections import CorrectionSession
    from segvlm.segmentation.sam2 import Sam2VideoSegmenter
    from segvlm.types import FrameResult, VideoInfo, VideoSegmentation

    frames = load_frames(args.video, args.frames)
    height, width = frames[0].shape[:2]
    config = SegmenterConfig(model=args.model, dtype=args.dtype)
    segmenter = Sam2VideoSegmenter.from_config(config, device=args.device)
    count = len(frames)
    empty = VideoSegmentation(
        VideoInfo("<frames>", height, width),
        "object",
        ["object"],
        [FrameResult(i, height, width) for i in range(count)],
    )
    session = CorrectionSession.create(empty, segmenter, video=frames)
    box = tuple(args.box) if args.box else default_box(height, width)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    track = session.add_object(0, box=box, propagate="none").track_id
    for position in (count // 4, count // 2, 3 * count // 4):
        session.add_points(track, position, [centre], [1], propagate="none")

    start = time.perf_counter()
    whole = session.propagate_all()
    full_seconds = time.perf_counter() - start

    edited = count // 3  # between the corrections on count/4 and count/2
    start = time.perf_counter()
    edit = session.add_points(track, edited, [(centre[0] + 5, centre[1])], [1])
    edit_seconds = time.perf_counter() - start

    latencies = []  # a click on the frame in view, its image features computed while the person looked at it
    for position in (count // 8, 5 * count // 8, 7 * count // 8):
        session.add_points(track, position, [centre], [1], propagate="none")  # warms the frame's features
        session.undo()
        start = time.perf_counter()
        session.add_points(track, position, [(centre[0] - 5, centre[1])], [1], propagate="none")
        latencies.append(time.perf_counter() - start)
    return {
        "mode": "edit",
        "frames": count,
        "model": args.model,
        "dtype": str(segmenter.dtype).replace("torch.", ""),
        "prompts_before_edit": 4,
        "full_repropagation_frames": count,
        "full_repropagation_frames_changed": len(whole.frame_indices),
        "full_repropagation_s": round(full_seconds, 3),
        "edit_frames_recomputed": count // 2 - edited,  # the edited frame up to the next correction
        "edit_frames_changed": len(edit.frame_indices),
        "edit_s": round(edit_seconds, 3),
        "edit_speedup": round(full_seconds / edit_seconds, 2),
        "click_in_view_latency_s": round(float(np.median(latencies)), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_latency(args) -> dict:
    """What the annotation tool waits for: embedding a frame, and a click on a frame whose embedding is cached.

    A correction session holds one track; on three frames the image features are computed first (what the
    annotation page asks for while a person looks at a frame), then a click is timed: only the prompt encoder
    and the mask decoder run (the features of the frame in view do not change while a person clicks on it).
    """
    from segvlm.config import SegmenterConfig
    from segvlm.corrections import CorrectionSession
    from segvlm.types import FrameResult, VideoInfo, VideoSegmentation

    frames = load_frames(args.video, args.frames)
    height, width = frames[0].shape[:2]
    model = resolve_benchmark_model(args.model)
    config = SegmenterConfig(model=model, dtype=args.dtype)
    segmenter = segmenter_class(model).from_config(config, device=args.device, fast=not args.no_fast)
    count = len(frames)
    results = [FrameResult(i, height, width) for i in range(count)]
    empty = VideoSegmentation(VideoInfo("<frames>", height, width), "object", ["object"], results)
    session = CorrectionSession.create(empty, segmenter, video=frames)
    box = tuple(args.box) if args.box else default_box(height, width)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    track = session.add_object(0, box=box, propagate="none").track_id
    embed, click = [], []
    for position in range(1, count):
        start = time.perf_counter()
        session.warm(position)
        embed.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.add_points(track, position, [centre], [1], propagate="none")
        click.append(time.perf_counter() - start)
    return {
        "mode": "latency",
        "model": args.model,
        "dtype": str(segmenter.dtype).replace("torch.", ""),
        "fast_path": bool(getattr(segmenter, "fast", False)),
        "frames_clicked": len(click),
        "embed_frame_s": [round(v, 4) for v in embed],
        "click_cached_s": [round(v, 4) for v in click],
        "embed_frame_median_s": round(float(np.median(embed[1:] or embed)), 4),  # the first call warms up
        "click_cached_median_s": round(float(np.median(click[1:] or click)), 4),
    }


def print_table(result: dict) -> None:
    if result["mode"] == "speed":
        print(f"\n{'contender':16s}{'s/frame':>10s}{'steady s/frame':>16s}{'setup s':>10s}")
        for name, steady in result["steady_s_per_frame"].items():
            total = result[f"{name}_s_per_frame"]
            print(f"{name:16s}{total:10.3f}{steady:16.3f}{result['setup_s'][name]:10.3f}")
        if result["sam2_official_s_per_frame"] is None:
            print(f"{'sam2_official':16s}{'n/a (not installed)':>26s}")
        parts = ", ".join(f"{name} {value:.3f}" for name, value in result["segvlm_module_s"].items())
        print(f"segvlm frame, s by module: {parts}")
        keys = [
            "speedup_vs_best_peer",
            "steady_speedup_vs_best_peer",
            "steady_speedup_vs_hf_loop",
            "gflop_per_frame",
            "fraction_of_peak",
            "mask_iou_vs_reference",
            "confident_mask_iou_vs_reference",
            "logit_max_abs_err",
            "peak_rss_mb",
            "dtype",
            "torch_threads",
        ]
    elif result["mode"] == "memory":
        keys = ["frames", "peak_rss_mb", "baseline_peak_rss_mb", "rss_ratio", "seconds", "state_size"]
    elif result["mode"] in ("edit", "latency"):
        keys = [key for key in result if key not in ("mode", "machine")]
    else:
        keys = ["frames", "total_s", "segmenter_step_s", "write_s", "overhead_percent", "s_per_frame"]
    for key in keys:
        value = result[key]
        print(f"{key:34s}{value:.4g}" if isinstance(value, float) else f"{key:34s}{value}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared/data/bedroom.mp4"))
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id, folder or tiny-random:<kind>")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CPUs with native bf16), float32, bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--box", type=float, nargs=4, help="xyxy prompt box (default: a central box)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--sam2-python", help="interpreter with the official sam2 package (else $SEGVLM_SAM2_PYTHON)")
    parser.add_argument("--no-official", action="store_true", help="skip the official sam2 package")
    parser.add_argument(
        "--official-vos", action="store_true", help="also the official predictor's compiled vos_optimized mode"
    )
    parser.add_argument("--memory-frames", type=int, help="memory mode: frames of the long run (vs 200)")
    parser.add_argument("--memory-model", default="tiny-random:sam2")
    parser.add_argument("--memory-size", type=int, nargs=2, default=[320, 180], help="frame W H in memory mode")
    parser.add_argument("--objects", type=int, default=1, help="objects tracked (boxes: --box, then a grid)")
    parser.add_argument("--no-fast", action="store_true", help="segvlm without its fast paths (fast_sam2)")
    parser.add_argument("--profile", action="store_true", help="speed mode: add a profiler table of one segvlm frame")
    parser.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old commands
    parser.add_argument("--end-to-end", action="store_true", help="pipeline overhead mode")
    parser.add_argument("--edit", action="store_true", help="correction-session mode: one edit vs the whole track")
    parser.add_argument("--latency", action="store_true", help="annotation latency: embed a frame, click on it")
    parser.add_argument("--rss-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_worker:
        print(json.dumps(rss_worker(args)))
        return {}
    if args.memory_frames:
        result = run_memory(args)
    elif args.end_to_end:
        result = run_end_to_end(args)
    elif args.edit:
        result = run_edit(args)
    elif args.latency:
        result = run_latency(args)
    else:
        result = run_speed(args)
    result["machine"] = machine_description(args.device)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def machine_description(device: str) -> dict:
    import platform

    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    description = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.startswith("cuda"):
        description["gpu"] = torch.cuda.get_device_name()
    return description


if __name__ == "__main__":
    main()
