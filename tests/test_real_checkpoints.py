"""Real hub checkpoints (downloaded on first use): skipped offline; run with SEGVLM_RUN_SLOW=1."""

from __future__ import annotations

from pathlib import Path

import pytest

import segvlm

BEDROOM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bedroom.mp4"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset", ["default", "cpu-fast"])
def test_children_are_found_and_tracked_in_the_bedroom_video(preset):
    if not BEDROOM.exists():
        pytest.skip("sample video not present")
    result = segvlm.pipeline("the child", str(BEDROOM), preset=preset, max_frames=20)
    assert len(result) == 20
    assert 1 <= len(result.track_ids) <= 4  # two children in the scene
    assert all(len(track) >= 10 for track in result.tracks()[:2])


def test_red_versus_blue_is_decided_by_the_clip_reranker():
    cars = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cars.jpg"
    if not cars.exists():
        pytest.skip("sample image not present")
    result = segvlm.pipeline("the car", str(cars), preset="gpu-quality", device="auto")
    assert result.track_ids
