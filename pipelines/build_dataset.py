"""Build a mask-augmented dataset from videos/images, or benchmark the builder's throughput.

    python pipelines/build_dataset.py build clips/ --query "red car" --out out/cars [--ray --workers 2]
    python pipelines/build_dataset.py --bench [--preset tiny-random] [--videos 6] [--frames 6]

``build`` is the same command as ``segvlm build-dataset``. ``--bench`` generates small videos, then builds
them on Ray Data with 1 and with 2 local workers and prints rows (frames) per second for each.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import typer

from segvlm.data.cli import build_dataset_command

app = typer.Typer(add_completion=False, help=__doc__)
app.command("build")(build_dataset_command)


@app.command("bench")
def bench(
    preset: str = typer.Option("tiny-random", "--preset", help="pipeline preset to label with"),
    labeler: str | None = typer.Option(None, "--labeler", help="'module:attr' labeler instead of the preset"),
    videos: int = typer.Option(6, "--videos", min=1),
    frames: int = typer.Option(6, "--frames", min=1),
    workers: list[int] = typer.Option([1, 2], "--workers", help="worker counts to compare"),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs of the local Ray instance"),
) -> None:
    """Rows/s of the Ray Data build with each worker count (model load and actor start included)."""
    import ray

    from segvlm.data.builder import BuildConfig, build_dataset
    from segvlm.data.labelers import PresetLabeler, load_labeler
    from segvlm.data.ray_job import RayOptions
    from segvlm.testing import write_test_video

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory(prefix="segvlm-bench-") as folder:
        media = Path(folder) / "media"
        for index in range(videos):
            write_test_video(media / f"clip{index:02d}.mp4", frames=frames, height=96, width=128)
        chosen = load_labeler(labeler) if labeler else PresetLabeler(preset)
        if not labeler:
            PresetLabeler(preset).load()  # build (and cache) the models once before anything is timed
        for count in workers:
            commits: list[tuple[float, int]] = []  # (finish time on the worker, rows) of each unit
            start = time.perf_counter()
            summary = build_dataset(
                [str(media)],
                Path(folder) / f"out-{count}",
                BuildConfig(query="red square"),
                labeler=chosen,
                ray=True,
                ray_options=RayOptions(num_workers=count),
                save_arrow=False,
                progress=lambda record, done, total, log=commits: log.append((record.finished_at, record.rows)),
            )
            wall = time.perf_counter() - start
            # steady state: once every worker has finished one unit (models loaded), rows over time
            commits.sort()
            warm = min(count, len(commits) - 1)
            steady_rows = sum(rows for _, rows in commits[warm:]) if warm else 0
            steady_time = commits[-1][0] - commits[warm - 1][0] if warm else 0.0
            results.append(
                {
                    "workers": count,
                    "rows": summary.rows,
                    "label_seconds": round(summary.seconds, 2),
                    "rows_per_second": round(summary.rows_per_second, 3),
                    "steady_rows_per_second": round(steady_rows / steady_time, 3) if steady_time else None,
                    "wall_seconds": round(wall, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    ray.shutdown()
    base = results[0]["rows_per_second"] or 1.0
    for result in results:
        print(
            f"{result['workers']} worker(s): {result['rows_per_second']:.2f} rows/s overall "
            f"({result['rows_per_second'] / base:.2f}x), {result['steady_rows_per_second']} rows/s steady"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bench":
        sys.argv[1] = "bench"
    app()
