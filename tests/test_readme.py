"""Every README snippet runs: the quick start's commands and each Python block, offline."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segvlm.testing.media import Sprite, render, write_video

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
QUICK_START = re.search(r"## Quick start\s+```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, test = QUICK_START
    assert install in ci and test in ci


def test_quick_start_segment_command(tmp_path):
    """The quick start's main job, on the shared sample video when present, else on a generated one."""
    command = shlex.split(QUICK_START[1])
    # `segvlm` is the console script of this environment, whether or not its bin/ folder is on PATH.
    command = [sys.executable, "-m", "segvlm", *command[1:]] if command[0] == "segvlm" else command
    video = ROOT / command[4]
    if not video.exists():
        images, _ = render(
            [Sprite("kid", (200, 120, 90), (200, 120), [(100, 10 * t) for t in range(30)])], 540, 960, 30
        )
        video = Path(write_video(tmp_path / "bedroom.mp4", images, fps=30))
    out = tmp_path / "out"
    command[4], command[command.index("--out") + 1] = str(video), str(out)
    completed = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    assert completed.returncode == 0, completed.stderr
    from pycocotools.coco import COCO

    from segvlm.video import read_frames

    coco = COCO(str(out / "masks.json"))
    assert len(coco.imgs) == 30
    assert {(image["height"], image["width"]) for image in coco.imgs.values()} == {(540, 960)}
    overlay = list(read_frames(out / "overlay.mp4"))
    assert len(overlay) == 30 and overlay[0].image.shape == (540, 960, 3)
    assert "meaningless" in completed.stderr


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with the files the snippets name: clip.mp4 and photo.jpg."""
    images, _ = render([Sprite("car", (220, 30, 30), (24, 40), [(20, 4 * t) for t in range(12)])], 72, 128, 12)
    write_video(tmp_path / "clip.mp4", images)
    Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_python_snippets_run_in_order(workdir):
    blocks = python_blocks()
    assert len(blocks) >= 6
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README is the code under test
        if index == 0:  # the first block saved and reloaded its result
            assert namespace["same"].frames == namespace["result"].frames
            assert len(namespace["result"]) == 12
    assert (workdir / "out" / "clip" / "masks.json").exists()
    assert (workdir / "out" / "clip_overlay.mp4").exists()
    assert isinstance(namespace["answer"], str)
    assert namespace["summary"].rows > 0


def test_cli_help_lists_the_commands():
    completed = subprocess.run([sys.executable, "-m", "segvlm.cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    for command in ("segment", "build-dataset", "train", "presets"):
        assert command in completed.stdout
