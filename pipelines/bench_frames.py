"""Measure :class:`segvlm.frames.FrameStore` against a plain :func:`segvlm.video.read_frames` pass.

By default a 1920x1080 H.264 video of ``--frames`` frames is generated with segvlm's own writer (libx264,
B-frames, its default keyframe interval of 250) in a temporary folder, deleted afterwards. The script reports:

* opening time (the packet index is built by demuxing, without decoding);
* random access: mean / median / worst time per frame over ``--random`` random positions on a fresh store;
* full scans forward and backward through a fresh store, against a ``read_frames`` pass (decode and
  conversion to RGB in both), the best of ``--repeat`` interleaved runs, with the decoder work done (seeks,
  decodes from the file start, frames decoded);
* with ``--check``: that every frame read (random, forward, backward) is byte-identical to ``read_frames``.

Examples::

    python pipelines/bench_frames.py --frames 600 --check
    python pipelines/bench_frames.py --frames 600 --scene-cut 60          # a keyframe every 60 frames
    python pipelines/bench_frames.py --video ../shared/data/cups.mp4 --check --stride 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from segvlm.frames import FrameStore  # noqa: E402
from segvlm.video import VideoWriter, read_frames  # noqa: E402


def generate(path: Path, frames: int, width: int, height: int, fps: float, scene_cut: int, seed: int = 0) -> None:
    """Write a textured scene panning sideways with a moving box; a new texture every ``scene_cut`` frames."""
    rng = np.random.default_rng(seed)

    def texture() -> np.ndarray:  # smooth colour blobs plus fine grain: compresses like camera footage
        coarse = rng.integers(0, 255, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
        smooth = np.repeat(np.repeat(coarse, 40, axis=0), 40, axis=1)[:height, :width]  # (H, W, 3)
        grain = rng.integers(0, 24, (height, width, 1), dtype=np.uint8)
        return (smooth // 2 + grain).astype(np.uint8)

    base = texture()
    with VideoWriter(path, width, height, fps=fps) as writer:
        for t in range(frames):
            if scene_cut and t and t % scene_cut == 0:
                base = texture()
            image = np.roll(base, 6 * t, axis=1)
            y, x = (t * 3) % (height - 200), (t * 7) % (width - 300)
            image[y : y + 200, x : x + 300] = (230, 40, 40)
            writer.write(image)


def digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def keyframes(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(packet.is_keyframe for packet in container.demux(video=0) if packet.size)


def timed_scan(store: FrameStore, positions: list[int], reference: list[bytes] | None) -> float:
    """Seconds to read ``positions`` in order (checking them against ``reference`` outside the timing)."""
    elapsed = 0.0
    for position in positions:
        start = time.perf_counter()
        image = store[position]
        elapsed += time.perf_counter() - start
        if reference is not None and digest(image) != reference[position]:
            raise SystemExit(f"MISMATCH at position {position}: FrameStore differs from read_frames")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="frames of the generated video")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--scene-cut", type=int, default=0, help="new scene (so a keyframe) every N frames; 0: none")
    parser.add_argument("--video", help="measure this video instead of generating one")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--random", type=int, default=40, help="random positions to time")
    parser.add_argument("--cache-frames", type=int, default=32)
    parser.add_argument("--check", action="store_true", help="check every frame read against read_frames")
    parser.add_argument("--repeat", type=int, default=3, help="full passes of each kind (the best is reported)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-frames-") as folder:
        results: dict[str, object] = {}
        if args.video:
            path = Path(args.video)
        else:
            path = Path(folder) / "bench.mp4"
            start = time.perf_counter()
            generate(path, args.frames, args.width, args.height, args.fps, args.scene_cut)
            results["encode_s"] = round(time.perf_counter() - start, 2)
        results.update(video=str(path), size_mb=round(path.stat().st_size / 1e6, 1), keyframes=keyframes(path))

        options = {"stride": args.stride, "max_frames": args.max_frames}
        reference = [digest(frame.image) for frame in read_frames(path, **options)] if args.check else None

        def fresh() -> FrameStore:
            return FrameStore.open(path, cache_frames=args.cache_frames, **options)

        opens = []
        for _ in range(3):
            start = time.perf_counter()
            fresh().close()
            opens.append(time.perf_counter() - start)
        results["open_ms"] = [round(t * 1000, 1) for t in opens]

        with fresh() as store:
            count = len(store)
            results.update(frames=count, height=store.height, width=store.width)
            positions = random.Random(0).sample(range(count), min(args.random, count))
            times = [timed_scan(store, [position], reference) for position in positions]
            results["random_ms_per_frame"] = {
                "mean": round(1000 * statistics.mean(times), 1),
                "median": round(1000 * statistics.median(times), 1),
                "max": round(1000 * max(times), 1),
                "reads": len(times),
            }
            results["random_stats"] = store.stats

        # Full passes, interleaved and repeated (the best of each is reported): a shared machine's load hits
        # all of them alike.
        passes: dict[str, list[float]] = {"read_frames": [], "forward": [], "backward": []}
        for repeat in range(args.repeat):
            check = reference if repeat == 0 else None
            start = time.perf_counter()
            for _ in read_frames(path, **options):
                pass
            passes["read_frames"].append(time.perf_counter() - start)
            with fresh() as store:
                passes["forward"].append(timed_scan(store, list(range(count)), check))
                results["forward_stats"] = store.stats
            with fresh() as store:
                passes["backward"].append(timed_scan(store, list(range(count - 1, -1, -1)), check))
                results["backward_stats"] = store.stats
        for name, seconds in passes.items():
            results[f"{name}_pass_s"] = f"best {min(seconds):.3f} of {[round(t, 3) for t in seconds]}"
            results[f"{name}_ms_per_frame"] = round(1000 * min(seconds) / count, 2)
        results["checked_against_read_frames"] = bool(args.check)

    width = max(len(key) for key in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
