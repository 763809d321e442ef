"""The builder on Ray Data: two local workers, and a driver killed with kill -9 then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from build_helpers import build_command, check_exactly_once, subprocess_env

from segvlm.data.builder import BuildConfig, build_dataset
from segvlm.data.ray_job import RayOptions
from segvlm.testing import SyntheticLabeler, write_test_image, write_test_video

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module (start-up costs seconds); workers import segvlm from REPO."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), previous) if p)
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-media")
    for index in range(4):
        write_test_video(root / f"v{index}.mp4", frames=4)
    for index in range(3):
        write_test_image(root / "photos" / f"p{index}.png", index=index)
    (root / "photos" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def test_two_ray_workers_match_the_single_process_build(ray_cluster, media, tmp_path):
    config = BuildConfig(query=["red square", "green square"], images_per_unit=2)
    seen = []
    on_ray = build_dataset(
        [str(media)],
        tmp_path / "ray",
        config,
        labeler=SyntheticLabeler(),
        ray=True,
        ray_options=RayOptions(num_workers=2),
        progress=lambda r, d, t: seen.append((d, t)),
    )
    local = build_dataset([str(media)], tmp_path / "local", config, labeler=SyntheticLabeler())
    assert seen[-1] == (6, 6) and len(seen) == 6  # 4 videos + 2 image units, each reported once
    assert (on_ray.rows, on_ray.regions, on_ray.errors) == (local.rows, local.regions, local.errors) == (19, 38, 1)
    a, b = on_ray.load(), local.load()
    assert a["source"] == b["source"] and a["frame_index"] == b["frame_index"]
    assert [r["mask"]["counts"] for row in a["regions"] for r in row] == [
        r["mask"]["counts"] for row in b["regions"] for r in row
    ]
    assert ray.is_initialized()  # a cluster the builder did not start is left running


def test_kill_9_ray_driver_then_rerun_gives_every_item_once(ray_cluster, tmp_path):
    media = tmp_path / "media"
    for index in range(6):
        write_test_video(media / f"v{index}.mp4", frames=5)
    out = tmp_path / "out"
    command = build_command(media, out, "--ray-address", ray_cluster, "--workers", "2")
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list(out.glob("data/*.parquet")):  # wait until a worker has committed a unit
        assert proc.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "no shard written within 90 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "state.json").exists()
    shards_before = len(list((out / "data").glob("*.parquet")))
    assert 1 <= shards_before < 6

    rerun = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_exactly_once(out, {(f"v{i}.mp4", f) for i in range(6) for f in range(5)})
