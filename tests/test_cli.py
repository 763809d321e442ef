"""The segvlm command line: segment (progress, outputs, errors), presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from segvlm.cli import app
from segvlm.testing.media import Sprite, render, write_video

runner = CliRunner()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    images, _ = render([Sprite("red", (220, 30, 30), (24, 30), [(20, 4 * t) for t in range(10)])], 72, 128, 10)
    return write_video(tmp_path_factory.mktemp("cli") / "scene.mp4", images)


def test_segment_writes_masks_and_overlay(video, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["segment", video, "the red box", "--out", str(out), "--preset", "tiny-random", "--max-frames", "6"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "masks.json").read_text())
    assert len(data["images"]) == 6 and data["segvlm"]["query"] == "the red box"
    assert (out / "overlay.mp4").stat().st_size > 0
    assert "meaningless" in result.output and "tracks over 6 frames" in result.output


def test_segment_exports_every_requested_format(video, tmp_path):
    out = tmp_path / "out"
    args = ["segment", video, "the red box", "--out", str(out), "--preset", "tiny-random", "--max-frames", "3"]
    result = runner.invoke(app, [*args, "--format", "coco,png", "-f", "yolo", "--format", "ytvis"])
    assert result.exit_code == 0, result.output
    assert (out / "masks.json").exists() and not (out / "overlay.mp4").exists()
    assert len(list((out / "png").glob("*.png"))) == 3
    assert (out / "yolo" / "data.yaml").exists() and len(list((out / "yolo" / "labels" / "train").glob("*.txt"))) == 3
    assert json.loads((out / "ytvis" / "instances.json").read_text())["videos"][0]["length"] == 3
    refused = runner.invoke(app, [*args, "--format", "parquet"])
    assert refused.exit_code == 2 and "unknown export format 'parquet'" in refused.output
    assert "coco" in refused.output and "Traceback" not in refused.output


def test_segment_stride_and_no_overlay(video, tmp_path):
    result = runner.invoke(
        app,
        ["segment", video, "box", "--out", str(tmp_path), "--preset", "tiny-random", "--stride", "3", "--no-overlay"],
    )
    assert result.exit_code == 0, result.output
    assert [image["frame_index"] for image in json.loads((tmp_path / "masks.json").read_text())["images"]] == [
        0,
        3,
        6,
        9,
    ]
    assert not (tmp_path / "overlay.mp4").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mp4", "car"], "no such file"),
        (["VIDEO", "  "], "names nothing to segment"),
        (["VIDEO", "car", "--grounder", "yolo"], "known grounders"),
        (["VIDEO", "car", "--preset", "nope"], "known presets"),
    ],
)
def test_segment_bad_input_exits_with_a_clear_message(video, tmp_path, args, message):
    args = [video if a == "VIDEO" else a for a in args]
    if "--preset" not in args:
        args += ["--preset", "tiny-random"]
    result = runner.invoke(app, ["segment", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_truncated_video_keeps_the_frames_read_before_the_damage(tmp_path):
    rng = np.random.default_rng(2)
    path = write_video(tmp_path / "noise.mp4", [rng.integers(0, 255, (72, 128, 3), dtype=np.uint8) for _ in range(20)])
    data = open(path, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["segment", str(tmp_path / "cut.mp4"), "car", "--out", str(out), "--preset", "tiny-random"]
    )
    assert result.exit_code == 1
    assert "frame" in result.output and "kept the" in " ".join(result.output.split())
    saved = json.loads((out / "masks.json").read_text())
    assert 0 < len(saved["images"]) < 20


def test_presets_command_lists_the_presets():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("default", "cpu-fast", "gpu-quality", "tiny-random"):
        assert name in result.output


def test_output_location_is_checked_before_any_model_loads(video, tmp_path):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("a person's notes")
    result = runner.invoke(app, ["segment", video, "box", "--out", str(a_file), "--preset", "tiny-random"])
    assert result.exit_code == 2 and "is a file; give a folder" in " ".join(result.output.split())
    assert a_file.read_text() == "a person's notes"
    inside = runner.invoke(app, ["segment", video, "box", "--out", str(a_file / "sub"), "--preset", "tiny-random"])
    assert inside.exit_code == 2 and "which is a file" in " ".join(inside.output.split())
    assert "meaningless" not in result.output + inside.output  # refused before the preset was even read


def test_a_still_image_gets_a_picture_overlay_and_python_m_segvlm_works(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segvlm",
            "segment",
            str(tmp_path / "photo.png"),
            "thing",
            "--out",
            str(out),
            "--preset",
            "tiny-random",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "overlay.png").exists() and not (out / "overlay.mp4").exists()
    assert "over 1 frames" in done.stdout or "nothing matched" in done.stdout  # the summary is on stdout
    saved = json.loads((out / "masks.json").read_text())["segvlm"]["video"]["source"]
    assert saved == str((tmp_path / "photo.png").resolve())
