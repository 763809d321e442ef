"""The pipeline example runs as a script, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pycocotools.coco import COCO

from segvlm.testing.media import Sprite, render, write_video

ROOT = Path(__file__).resolve().parents[1]


def test_segment_video_example(tmp_path):
    images, _ = render([Sprite("red", (220, 30, 30), (24, 30), [(20, 4 * t) for t in range(8)])], 72, 128, 8)
    video = write_video(tmp_path / "clip.mp4", images)
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "segment_video.py"), video, "the red box", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert "8 frames" in completed.stdout and "added track" in completed.stdout
    assert len(COCO(str(out / "masks.json")).imgs) == 8
    assert (out / "overlay.mp4").exists()
