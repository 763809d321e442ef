"""The scripted annotator of pipelines/annotation_effort.py: the protocol on exact fakes, the CLI on tiny models.

The protocol tests run the colour fake of fakes.py, which is exact on generated scenes, so every click count
follows from the scene: with propagation one click per object, frame by frame one click per visible frame.
A wrapper that loses half of each mask on one propagated frame checks that the annotator corrects there,
with a positive click inside the missed half. The CLI test runs the tiny random models (meaningless masks)
and checks the JSON; the slow test compares the real checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import ColourSegmenter

from segvlm.segmentation.base import TrackedMask
from segvlm.testing.media import Sprite, render

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "annotation_effort.py"
H, W, N = 48, 64, 12
RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 200, 60)
# Visible frames (at least 16 pixels, the session's minimum mask area) per object of scene():
#   red: on screen in all 12 frames;
#   blue: enters with one column (10 px, too few to count) at frame 3 and 5 columns at frame 4: frames 4..11;
#   green: static, hidden by blue (drawn later) but for 2 of its 8 columns (16 px) at frame 10 and wholly at
#   frame 11: frames 0..10.
VISIBLE = {"red": 12, "blue": 8, "green": 11}
FIRST_VISIBLE = {"red": 0, "blue": 4, "green": 0}


@pytest.fixture(scope="module")
def effort():
    """The pipeline script as a module (registered in sys.modules while in use: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location("annotation_effort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def scene():
    green = Sprite("green", GREEN, (8, 8), [(22, 33)] * N)
    red = Sprite("red", RED, (10, 12), [(5, 2 + 2 * t) for t in range(N)])
    blue = Sprite("blue", BLUE, (10, 10), [None] * 3 + [(20, 63 - 4 * t) for t in range(N - 3)])
    return render([green, red, blue], H, W, N)


def by_name(report):
    return {obj.name: obj for obj in report.objects}


def test_propagation_needs_one_click_per_object_and_frame_by_frame_one_per_visible_frame(effort):
    frames, truth = scene()
    assert {name: sum(int(m.sum()) >= 16 for m in masks) for name, masks in truth.items()} == VISIBLE

    sam2 = effort.annotate(ColourSegmenter(), frames, truth, "forward")
    for name, obj in by_name(sam2).items():
        assert (obj.visible_frames, obj.clicks, obj.frames_edited) == (VISIBLE[name], 1, 1), name
        assert [(e.frame, e.positive) for e in obj.events] == [(FIRST_VISIBLE[name], True)]
        assert truth[name][FIRST_VISIBLE[name]][obj.events[0].y, obj.events[0].x]
        assert obj.frames_judged == obj.frames_at_target == VISIBLE[name]
        assert obj.mean_iou == 1.0
    assert (sam2.totals.clicks, sam2.totals.frames_edited, sam2.totals.objects) == (3, 3, 3)
    assert sam2.totals.clicks_per_object == 1.0 and sam2.totals.edited_fraction == pytest.approx(3 / 31)

    sam = effort.annotate(ColourSegmenter(), frames, truth, "none")
    for name, obj in by_name(sam).items():
        assert (obj.clicks, obj.frames_edited, obj.frames_at_target) == (VISIBLE[name],) * 3, name
        assert len(obj.events) == obj.clicks and all(e.positive and e.iou_after == 1.0 for e in obj.events)
        assert [e.frame for e in obj.events] == [t for t, m in enumerate(truth[name]) if m.sum() >= 16]
    assert sam.totals.clicks == 31 and sam.totals.clicks_per_visible_frame == 1.0

    comparison = effort.compare(
        effort.arm_result("SAM 2", "fake", [sam2]), effort.arm_result("SAM", "fake", [sam]), effort.SceneSpec()
    )
    assert comparison.click_ratio == pytest.approx(31 / 3)
    assert comparison.frames_edited_ratio == pytest.approx(31 / 3)
    with pytest.raises(ValueError, match="forward"):
        effort.annotate(ColourSegmenter(), frames, truth, "both")


def test_generated_flat_videos_are_exact_for_the_colour_fake(effort):
    spec = effort.SceneSpec(videos=1, frames=16, objects=3, textured=False, seed=3)
    video = effort.make_video(spec, 0)
    again = effort.make_video(spec, 0)
    assert all(np.array_equal(a, b) for a, b in zip(video.frames, again.frames))
    stack = np.stack([np.stack(masks) for masks in video.truth.values()])  # (objects, frames, H, W)
    assert stack.shape == (3, 16, spec.height, spec.width)
    assert stack.sum(axis=0).max() == 1, "visible masks of different objects overlap"
    crosser = list(video.truth)[1]
    assert not video.truth[crosser][0].any() and video.truth[crosser][-1].any(), "object 1 does not enter mid-video"
    visible = sum(int(m.sum()) >= 16 for masks in video.truth.values() for m in masks)

    sam2 = effort.annotate(ColourSegmenter(), video.frames, video.truth, "forward")
    sam = effort.annotate(ColourSegmenter(), video.frames, video.truth, "none")
    assert sam2.totals.clicks == 3 and sam2.totals.frames_at_target == sam2.totals.frames_judged
    assert sam.totals.clicks == visible and sam.totals.mean_iou == 1.0


class DropsLeftHalf(ColourSegmenter):
    """The exact fake, except that on one frame, when propagated to rather than prompted, every mask loses
    its left half (the columns left of its bounding box's middle)."""

    def __init__(self, position: int):
        super().__init__()
        self.position = position
        self.prompted = {}  # track id -> the prompt the session gave for that frame (once it has one)

    def propagate_object(self, frames, obj_id, prompts, sweeps, memory=None):
        if self.position in prompts:
            self.prompted[obj_id] = prompts[self.position]
        for tracked in super().propagate_object(frames, obj_id, prompts, sweeps, memory):
            if tracked.position == self.position and self.position not in prompts and tracked.mask.any():
                columns = np.nonzero(tracked.mask.any(axis=0))[0]
                mask = tracked.mask.copy()  # (H, W)
                mask[:, : (columns.min() + columns.max() + 1) // 2] = False
                tracked = TrackedMask(tracked.position, mask, tracked.score)
            yield tracked


def test_a_mask_lost_on_a_later_frame_gets_a_positive_click_in_the_missed_region(effort):
    frames, truth = scene()
    segmenter = DropsLeftHalf(6)
    report = effort.annotate(segmenter, frames, truth, "forward")
    for name, obj in by_name(report).items():
        assert obj.clicks == 2 and obj.frames_edited == 2, name
        start, fix = obj.events
        assert start.frame == FIRST_VISIBLE[name] and fix.frame == 6
        columns = np.nonzero(truth[name][6].any(axis=0))[0]
        middle = (columns.min() + columns.max() + 1) // 2
        assert fix.positive and truth[name][6][fix.y, fix.x] and fix.x < middle, (name, fix)
        sent = segmenter.prompted[obj.track_id]  # what the session passed on: the click, as a positive one
        assert sent.points == [(float(fix.x), float(fix.y))] and sent.labels == [1]
        assert fix.iou_before < 0.9 and fix.iou_after == 1.0
        assert obj.frames_at_target == obj.frames_judged == VISIBLE[name] and obj.mean_iou == 1.0


class Imperfect(ColourSegmenter):
    """The exact fake, except that masks propagated to (not prompted) lose their rightmost column, and one
    frame always comes out empty, prompted or not."""

    def __init__(self, blind: int):
        super().__init__()
        self.blind = blind

    def propagate_object(self, frames, obj_id, prompts, sweeps, memory=None):
        for tracked in super().propagate_object(frames, obj_id, prompts, sweeps, memory):
            mask = tracked.mask.copy()  # (H, W)
            if tracked.position == self.blind:
                mask[:] = False
            elif tracked.position not in prompts and mask.any():
                mask[:, np.nonzero(mask.any(axis=0))[0].max()] = False
            yield TrackedMask(tracked.position, mask, tracked.score)


def test_frames_at_the_target_are_left_alone_and_hopeless_ones_cost_the_click_limit(effort):
    frames, truth = scene()
    red = [m.copy() for m in truth["red"]]
    red[10][:] = False  # the truth says the object is gone on frame 10, but the fake still shows it
    report = effort.annotate(Imperfect(blind=5), frames, {"red": red}, "forward", max_clicks_per_frame=3)
    (obj,) = report.objects
    # frame 0: the start click; frames 1-4, 6-9, 11: 11 of 12 columns shown (IoU 110/120 >= 0.9), left alone;
    # frame 5: blind, 3 positive clicks in vain; frame 10: the shown mask is wrong, 3 negative clicks in vain.
    assert [(e.frame, e.positive) for e in obj.events] == [(0, True)] + [(5, True)] * 3 + [(10, False)] * 3
    assert all(truth["red"][10][e.y, e.x] for e in obj.events if e.frame == 10)  # inside the mask shown there
    assert all(e.iou_after == 0.0 for e in obj.events[1:])
    assert (obj.visible_frames, obj.clicks, obj.frames_edited) == (11, 7, 3)
    assert (obj.frames_judged, obj.frames_at_target) == (12, 10)
    assert obj.mean_iou == pytest.approx((1 + 9 * 110 / 120) / 12)

    exact = effort.annotate(ColourSegmenter(), frames, {"red": red}, "forward", max_clicks_per_frame=3)
    comparison = effort.compare(
        effort.arm_result("SAM 2", "exact", [exact]),
        effort.arm_result("SAM", "imperfect", [report]),
        effort.SceneSpec(),
    )
    assert exact.totals.clicks == 4  # the exact fake also shows the object on frame 10: 3 negative clicks there
    assert comparison.click_ratio == pytest.approx(7 / 4) and comparison.frames_edited_ratio == pytest.approx(3 / 2)


def test_the_next_click_is_at_the_centre_of_the_largest_error_region_with_its_sign(effort):
    truth = np.zeros((40, 50), dtype=bool)
    truth[5:20, 5:20] = True  # (H, W): a 15 x 15 object
    shown = truth.copy()
    shown[5:8, 5:20] = False  # 45 missed pixels along the top
    shown[25:34, 30:39] = True  # 81 wrongly included pixels: the larger error, centred at (34, 29)
    assert effort.next_click(shown, truth) == effort.ClickChoice(34, 29, False, 81)
    shown[30:34, 30:39] = False  # 45 wrongly included pixels left: a tie, which the missed region wins
    assert effort.next_click(shown, truth) == effort.ClickChoice(12, 6, True, 45)
    shown[25:34, 30:39] = False
    assert effort.next_click(shown, truth) == effort.ClickChoice(12, 6, True, 45)  # the middle of the strip
    assert effort.next_click(truth, truth) is None
    nothing = np.zeros_like(truth)
    assert effort.next_click(truth, nothing) == effort.ClickChoice(12, 12, False, 225)  # object gone, mask shown
    assert effort.mask_iou(nothing, nothing) == 1.0 and effort.mask_iou(shown, truth) == pytest.approx(180 / 225)


def test_numpy_components_and_distances_match_scipy(effort):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = ndimage.binary_opening(rng.random((30, 41)) < 0.55)  # (H, W) blobs of several shapes
        labels, count = ndimage.label(mask)
        mine, mine_count = effort._components_numpy(mask)
        assert mine_count == count > 1 and np.array_equal(mine, labels)
        padded = np.pad(mask, 1)
        assert np.allclose(effort._distance_numpy(padded), ndimage.distance_transform_edt(padded))
    assert effort.interior_point(np.pad(np.ones((5, 7), dtype=bool), ((2, 3), (4, 1)))) == (7, 4)


ARM_KEYS = {"arm", "model", "propagate", "videos", "totals"}
REPORT_KEYS = {"propagate", "target_iou", "max_clicks_per_frame", "objects", "totals", "video"}
OBJECT_KEYS = {
    "name",
    "track_id",
    "visible_frames",
    "clicks",
    "frames_edited",
    "frames_judged",
    "frames_at_target",
    "mean_iou",
    "seconds",
    "events",
}
EVENT_KEYS = {"frame", "x", "y", "positive", "iou_before", "iou_after"}
TOTALS_KEYS = {
    "objects",
    "visible_frames",
    "clicks",
    "frames_edited",
    "frames_judged",
    "frames_at_target",
    "seconds",
    "clicks_per_object",
    "clicks_per_edited_frame",
    "clicks_per_visible_frame",
    "edited_fraction",
    "at_target_fraction",
    "mean_iou",
}


def test_cli_runs_the_tiny_models_and_writes_every_key(tmp_path):
    out = tmp_path / "effort.json"
    command = [sys.executable, str(SCRIPT), "--videos", "1", "--frames", "6", "--objects", "2", "--max-clicks", "2"]
    run = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "meaningless" in run.stdout and "SAM (v1) / SAM 2 clicks" in run.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"sam2", "sam", "click_ratio", "frames_edited_ratio", "scenes", "tiny_random", "note"}
    assert report["tiny_random"] is True and "meaningless" in report["note"]
    assert report["scenes"] == {
        "videos": 1,
        "frames": 6,
        "height": 96,
        "width": 128,
        "objects": 2,
        "textured": True,
        "seed": 0,
    }
    for key, model, propagate in (("sam2", "tiny-random:sam2", "forward"), ("sam", "tiny-random:sam", "none")):
        arm = report[key]
        assert set(arm) == ARM_KEYS and (arm["model"], arm["propagate"]) == (model, propagate)
        assert set(arm["totals"]) == TOTALS_KEYS and len(arm["videos"]) == 1
        (video,) = arm["videos"]
        assert set(video) == REPORT_KEYS and video["max_clicks_per_frame"] == 2 and len(video["objects"]) == 2
        for obj in video["objects"]:
            assert set(obj) == OBJECT_KEYS and obj["events"] and all(set(e) == EVENT_KEYS for e in obj["events"])
            assert obj["clicks"] == len(obj["events"]) <= 2 * 6
        assert arm["totals"]["clicks"] == sum(obj["clicks"] for obj in video["objects"])
    sam_totals, sam2_totals = report["sam"]["totals"], report["sam2"]["totals"]
    # frame by frame nothing is shown before a click, so every visible frame gets at least one
    assert sam_totals["frames_edited"] == sam_totals["visible_frames"] > 0
    assert report["click_ratio"] == pytest.approx(sam_totals["clicks"] / sam2_totals["clicks"])


@pytest.mark.slow
def test_real_sam2_needs_fewer_clicks_per_object_than_sam_frame_by_frame(effort):
    spec = effort.SceneSpec(videos=1, frames=16, objects=2)
    comparison = effort.run(spec, "facebook/sam2.1-hiera-tiny", "facebook/sam-vit-base", device="auto")
    assert not comparison.tiny_random
    sam2, sam = comparison.sam2.totals, comparison.sam.totals
    assert sam2.clicks_per_object < sam.clicks_per_object, (sam2, sam)
    assert comparison.click_ratio is not None and comparison.click_ratio > 1.0
