"""How the annotation tool feels on a long video: open, scrub, click, on this machine.

Builds a long 1080p H.264 video quickly (a short clip is encoded once, then its packets are copied end to end
with shifted timestamps, so a 30-minute file takes seconds to make), starts the annotation server on it in
process (FastAPI's test client: the same code path as uvicorn minus the socket), and measures:

* open: ``Project.open`` plus the first ``GET /api/videos/{id}`` (the frame index, an empty session of every
  frame written to disk) plus the first frame as JPEG;
* scrubbing: ``GET /frames/{i}.jpg`` at display size for random positions (a person dragging the timeline) and
  for consecutive positions (playback, arrow keys), median and 95th percentile;
* the timeline and a frame's masks with ``--objects`` objects boxed on the first frame;
* a click on the frame in view with the segmenter ``--model`` (default the SAM 2.1 hiera-tiny architecture
  with random weights), after the page's ``/warm`` call computed its image features, against the same click
  without the warm-up.

Examples::

    python pipelines/bench_annotate.py --minutes 30 --json bench_annotate.json
    python pipelines/bench_annotate.py --minutes 1 --model tiny-random:sam2       # a quick check
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def long_video(path: Path, minutes: float, width: int = 1920, height: int = 1080, fps: int = 30) -> int:
    """Write a ``minutes``-long video by repeating an encoded 10-second clip; returns its frame count."""
    import av

    from segvlm.video import VideoWriter

    clip = path.with_name("clip.mp4")
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(coarse, 40, axis=0), 40, axis=1)[:height, :width] // 2  # (H, W, 3)
    clip_frames = 10 * fps
    with VideoWriter(clip, width, height, fps=fps) as writer:
        for t in range(clip_frames):
            image = np.roll(base, 5 * t, axis=1)
            y, x = (t * 3) % (height - 220), (t * 7) % (width - 320)
            image[y : y + 220, x : x + 320] = (230, 40, 40)
            writer.write(image)
    repeats = max(1, round(minutes * 60 * fps / clip_frames))
    with av.open(str(clip)) as source, av.open(str(path), "w") as target:
        stream = source.streams.video[0]
        out = target.add_stream_from_template(stream)
        packets = [packet for packet in source.demux(stream) if packet.dts is not None]
        step = int(Fraction(1, fps) / stream.time_base)
        span = clip_frames * step
        for repeat in range(repeats):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts = packet.pts + repeat * span, packet.dts + repeat * span
                copy.is_keyframe = packet.is_keyframe
                copy.time_base = packet.time_base
                copy.stream = out
                target.mux(copy)
    clip.unlink()
    return repeats * clip_frames


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", default="tiny-random:sam2.1-hiera-tiny-arch", help="segmenter for the click")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--random", type=int, default=40, help="random frames fetched")
    parser.add_argument("--size", type=int, default=1280, help="display size of the fetched frames")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from segvlm.annotate.project import Project
    from segvlm.annotate.server import AnnotationServer
    from segvlm.config import PipelineConfig, SegmenterConfig
    from segvlm.tracking import Pipeline

    report: dict = {"minutes": args.minutes, "model": args.model}
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "long.mp4"
        started = time.perf_counter()
        frames = long_video(video, args.minutes)
        report.update(frames=frames, make_video_s=round(time.perf_counter() - started, 2))
        report["video_mb"] = round(video.stat().st_size / 2**20, 1)
        pipe = Pipeline(PipelineConfig(segmenter=SegmenterConfig(model=args.model, dtype=args.dtype)))
        _ = pipe.segmenter  # load the model before timing

        started = time.perf_counter()
        project = Project.open(Path(folder) / "project", [video], pipe)
        client = TestClient(AnnotationServer(project).app)
        info = client.get("/api/videos/long").json()
        first = client.get(f"/api/videos/long/frames/0.jpg?size={args.size}")
        report["open_s"] = round(time.perf_counter() - started, 2)
        assert info["frames"] == frames and first.status_code == 200, (info, first.status_code)

        rng = random.Random(0)
        seconds = []
        for position in [rng.randrange(frames) for _ in range(args.random)]:
            start = time.perf_counter()
            assert client.get(f"/api/videos/long/frames/{position}.jpg?size={args.size}").status_code == 200
            seconds.append(time.perf_counter() - start)
        report["random_frame_s_median"] = round(statistics.median(seconds), 4)
        report["random_frame_s_p95"] = round(percentile(seconds, 0.95), 4)
        seconds = []
        start_at = rng.randrange(frames - 60)
        for position in range(start_at, start_at + 60):
            start = time.perf_counter()
            client.get(f"/api/videos/long/frames/{position}.jpg?size={args.size}")
            seconds.append(time.perf_counter() - start)
        report["next_frame_s_median"] = round(statistics.median(seconds), 4)
        report["next_frame_s_p95"] = round(percentile(seconds, 0.95), 4)

        width, height = info["width"], info["height"]
        for k in range(args.objects):
            x0 = (k % 5) * width / 5 + 10
            y0 = (k // 5) * height / 4 + 10
            box = [x0, y0, x0 + width / 6, y0 + height / 5]
            client.post("/api/videos/long/edit", json={"action": "add_object", "frame": 0, "box": box})
        start = time.perf_counter()
        lanes = client.get("/api/videos/long/timeline").json()["tracks"]
        report["timeline_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        client.get("/api/videos/long/masks/0")
        report["masks_s"] = round(time.perf_counter() - start, 4)
        report["objects"] = len(lanes)

        target = frames // 2
        point = [width * 0.5, height * 0.5]
        cold_body = {"action": "add_points", "frame": target, "track_id": 1, "points": [point], "labels": [1]}
        start = time.perf_counter()
        client.post("/api/videos/long/edit", json=cold_body)
        report["click_without_warm_s"] = round(time.perf_counter() - start, 3)
        client.post("/api/videos/long/edit", json={"action": "undo"})
        warm_target = target + 100
        client.post("/api/videos/long/warm", json={"frame": warm_target})  # the page does this while you look
        start = time.perf_counter()
        client.post("/api/videos/long/edit", json={**cold_body, "frame": warm_target})
        report["click_after_warm_s"] = round(time.perf_counter() - start, 3)
        project.close()
    for key, value in report.items():
        print(f"{key:24s}{value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
