"""Soak tests of the command line: memory over a long run, and dataset builds killed at random moments.

``memory`` mode runs ``segvlm segment`` (tiny-random preset) on a generated video of ``--frames`` frames and on
one of ``--baseline`` frames, each in its own process, sampling the process's resident memory every second;
it reports both peaks and their ratio, and checks that the output holds every frame exactly once.

``kills`` mode runs ``segvlm build-dataset`` over a folder of generated videos and images and kills it with
SIGKILL at ``--kills`` random moments (after a random delay once it has started writing), resuming it each
time, with and without ``--ray``; at the end every input item must be in the dataset exactly once.

Examples::

    python pipelines/soak.py memory --frames 2000 --baseline 200 --json soak.json
    python pipelines/soak.py kills --kills 20 --json kills.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}


def make_video(path: Path, frames: int, width: int = 160, height: int = 96) -> str:
    """A red box sliding back and forth over a dark background, ``frames`` frames long."""
    from segvlm.video import VideoWriter

    with VideoWriter(path, width, height, fps=25) as writer:
        for t in range(frames):
            image = np.full((height, width, 3), 30, np.uint8)
            x = 10 + (t * 3) % (width - 50)
            image[30:60, x : x + 30] = (220, 30, 30)
            writer.write(image)
    return str(path)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def segment_peak(video: str, out: Path) -> tuple[float, float, int]:
    """(peak RSS MiB sampled every second, seconds, frames in the output) of one ``segvlm segment`` run."""
    command = [sys.executable, "-m", "segvlm", "segment", video, "red box", "--out", str(out)]
    command += ["--preset", "tiny-random", "--no-overlay"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, rss_mb(process.pid))
        time.sleep(1.0)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(process.stderr.read().decode()[-3000:])
    images = json.loads((out / "masks.json").read_text())["images"]
    indices = sorted(image["frame_index"] for image in images)
    if indices != list(range(len(indices))):
        raise SystemExit(f"{out}/masks.json is missing or repeating frames")
    return peak, seconds, len(indices)


def run_memory(args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        long = make_video(folder / "long.mp4", args.frames)
        short = make_video(folder / "short.mp4", args.baseline)
        base_peak, base_seconds, base_frames = segment_peak(short, folder / "short")
        peak, seconds, frames = segment_peak(long, folder / "long")
    return {
        "mode": "memory",
        "frames": frames,
        "peak_rss_mb": round(peak, 1),
        "seconds": round(seconds, 1),
        "baseline_frames": base_frames,
        "baseline_peak_rss_mb": round(base_peak, 1),
        "baseline_seconds": round(base_seconds, 1),
        "rss_ratio": round(peak / base_peak, 3),
        "complete": frames == args.frames and base_frames == args.baseline,
    }


def make_inputs(folder: Path, videos: int, images: int) -> int:
    """Generated videos and photos for a dataset build; returns the number of rows the build must give."""
    from PIL import Image

    folder.mkdir(parents=True)
    for k in range(videos):
        make_video(folder / f"clip{k:02d}.mp4", 6 + k % 3)
    for k in range(images):
        image = np.full((48, 64, 3), 40, np.uint8)
        image[10:30, 5 + k % 20 : 25 + k % 20] = (220, 30, 30)
        Image.fromarray(image).save(folder / f"photo{k:02d}.png")
    return sum(6 + k % 3 for k in range(videos)) + images


def build(inputs: Path, out: Path, ray: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "segvlm", "build-dataset", str(inputs), "--query", "red box", "--out", str(out)]
    command += ["--preset", "tiny-random"] + (["--ray"] if ray else [])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def written(out: Path) -> int:
    """How many files a build has written so far (its progress, as seen from outside)."""
    return sum(1 for path in out.rglob("*") if path.is_file()) if out.exists() else 0


def run_kills(args) -> dict:
    """Kill builds at random moments after they start writing, resume each time, check every item once.

    Each round starts a fresh output folder and kills its build (once it has written something new, after a
    further random delay) until the build finishes on a resume; rounds repeat until ``--kills`` kills.
    """
    import datasets

    rng = random.Random(args.seed)
    report: dict = {"mode": "kills", "kills_per_mode": args.kills, "rounds": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        expected = make_inputs(folder / "inputs", args.videos, args.images)
        for ray in (False, True):
            kills, round_number = 0, 0
            while kills < args.kills:
                out = folder / f"out-{'ray' if ray else 'local'}-{round_number}"
                round_kills, started = 0, time.perf_counter()
                while True:
                    process = build(folder / "inputs", out, ray)
                    before = written(out)
                    deadline = time.monotonic() + 300
                    while process.poll() is None and written(out) <= before and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(rng.uniform(0.0, args.max_delay))
                    if process.poll() is not None or kills >= args.kills:
                        process.wait()
                        break
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills, round_kills = kills + 1, round_kills + 1
                if process.returncode != 0:
                    raise SystemExit(process.stderr.read().decode()[-3000:])
                dataset = datasets.load_from_disk(str(out)).select_columns(["source", "frame_index"])
                keys = [f"{row['source']}/{row['frame_index']}" for row in dataset]
                report["rounds"].append(
                    {
                        "ray": ray,
                        "kills": round_kills,
                        "rows": len(keys),
                        "expected_rows": expected,
                        "exactly_once": len(keys) == len(set(keys)) == expected,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
                round_number += 1
    report["kills"] = {"local": sum(r["kills"] for r in report["rounds"] if not r["ray"])}
    report["kills"]["ray"] = sum(r["kills"] for r in report["rounds"] if r["ray"])
    report["exactly_once"] = all(r["exactly_once"] for r in report["rounds"])
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    memory = sub.add_parser("memory", help="peak RSS of a long segment run against a short one")
    memory.add_argument("--frames", type=int, default=2000)
    memory.add_argument("--baseline", type=int, default=200)
    kills = sub.add_parser("kills", help="build-dataset killed at random moments and resumed")
    kills.add_argument("--kills", type=int, default=20)
    kills.add_argument("--videos", type=int, default=6)
    kills.add_argument("--images", type=int, default=12)
    kills.add_argument("--max-delay", type=float, default=2.0, help="random delay after a write, before a kill")
    kills.add_argument("--seed", type=int, default=0)
    for each in (memory, kills):
        each.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    report = run_memory(args) if args.mode == "memory" else run_kills(args)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
