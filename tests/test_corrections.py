"""The correction session: SAM 2's interactive semantics, undo/redo, persistence, and parity with transformers.

Most tests run on the exact colour backends of fakes.py over a generated scene, so every expected mask is
known; the parity and kill tests run the tiny random SAM 2 for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fakes import ColourGrounder, ColourSegmenter

import segvlm
from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.corrections import CorrectionError, CorrectionSession, SessionFolderError
from segvlm.testing.media import Sprite, render, write_video
from segvlm.tracking import Pipeline

H, W, N = 48, 96, 60
RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 200, 60)


def scene():
    red = Sprite("red", RED, (10, 12), [(5, 2 + t) for t in range(N)])
    blue = Sprite("blue", BLUE, (10, 10), [(30, 40)] * N)
    green = Sprite("green", GREEN, (8, 8), [None] * 30 + [(20, 80 - t) for t in range(30)])
    return render([red, blue, green], H, W, N)


@pytest.fixture
def pipe():
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1))
    return Pipeline(config, grounder=ColourGrounder({"red box": RED}), segmenter=ColourSegmenter())


@pytest.fixture
def frames_truth():
    return scene()


def masks_of(result, track_id):
    return [None if frame.get(track_id) is None else frame.get(track_id).rle for frame in result]


def centre(mask):
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def test_result_is_a_plain_value_with_its_detector_prompt(pipe, frames_truth, tmp_path):
    frames, _ = frames_truth
    result = pipe("red box", frames)
    assert not hasattr(result, "corrector") and not hasattr(result, "add_points")
    (prompt,) = result.prompts[1].values()
    assert prompt.source == "detector" and prompt.box == (2.0, 5.0, 14.0, 15.0)
    result.save(tmp_path)
    loaded = segvlm.VideoSegmentation.load(tmp_path)
    assert loaded.prompts == result.prompts and loaded.frames == result.frames
    assert len(repr(result)) < 300 and "frames=60" in repr(result)


def test_an_edit_stops_at_the_next_prompt_so_earlier_corrections_hold(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    # Frame 50: the person says track 1 is the blue box from here on.
    edit = session.add_points(1, 50, [centre(truth["blue"][50])], [1])
    assert edit.frame_indices == list(range(50, 60))
    before_second = masks_of(session.result, 1)
    # Frame 20: a correction earlier in the video re-propagates only up to frame 49.
    edit = session.add_points(1, 20, [centre(truth["blue"][20])], [1])
    assert edit.frame_indices == list(range(20, 50))
    after = masks_of(session.result, 1)
    assert after[50:] == before_second[50:], "the correction on frame 50 was overwritten"
    assert after[:20] == before_second[:20], "frames before the edit must be byte-identical"
    for position in range(20, 60):
        assert np.array_equal(session.result[position].get(1).mask, truth["blue"][position])
    assert sorted(session.prompts(1)) == [0, 20, 50]


def test_other_tracks_never_change_and_undo_redo_are_exact(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    new = session.add_object(10, box=(40, 30, 50, 40), label="blue box")
    assert new.track_id == 2 and new.frame_indices == list(range(60))  # both ways from frame 10
    track1 = masks_of(session.result, 1)
    track2 = masks_of(session.result, 2)
    session.paint(2, 25, erase=np.ones((H, W), bool))  # erased everywhere: "not here" from frame 25 on
    assert session.result[25].get(2) is None and session.result[59].get(2) is None
    assert masks_of(session.result, 1) == track1
    assert session.undo().action == "undo paint"
    assert masks_of(session.result, 2) == track2 and masks_of(session.result, 1) == track1
    session.redo()
    assert session.result[40].get(2) is None
    session.undo()
    session.undo()  # the new object goes away entirely
    assert session.result.track_ids == [1] and 2 not in session.result.prompts
    assert session.undo() is None and session.can_redo


def test_paint_shows_exactly_the_painted_pixels_and_becomes_a_mask_prompt(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    brush = np.zeros((H, W), bool)
    brush[0:3, 0:5] = True
    session.paint(1, 5, add=brush, propagate="none")
    expected = truth["red"][5] | brush
    assert np.array_equal(session.result[5].get(1).mask, expected)
    assert session.prompts(1)[5].mask is not None and session.result[6].get(1).mask.sum() == 120
    session.add_points(1, 5, [centre(truth["red"][5])], [1], propagate="none")  # a click restarts the prompt
    assert session.prompts(1)[5].mask is None and len(session.prompts(1)[5].clicks) == 1
    with pytest.raises(CorrectionError, match="shape"):
        session.paint(1, 5, add=np.ones((3, 3), bool))


def test_a_new_object_mid_video_is_tracked_both_ways_and_stops_at_locks(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    first = session.add_object(40, points=[centre(truth["green"][40])], labels=[1], label="green", propagate="none")
    track = first.track_id
    assert first.frame_indices == [40]
    session.lock(track, 40)
    session.lock(track, 50, 52)
    with pytest.raises(CorrectionError, match="unlock it first"):
        session.add_points(track, 51, [(1, 1)], [1])
    shown_50 = masks_of(session.result, track)[50]
    assert shown_50 is None  # locked before anything was propagated there
    ys, xs = np.nonzero(truth["green"][45])
    edit = session.add_box(track, 45, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), propagate="both")
    assert edit.frame_indices == list(range(41, 50))  # back to the lock on 40, forward to the lock on 50
    assert masks_of(session.result, track)[50] is None
    assert session.locked(track) == [40, 50, 51, 52]
    edit = session.propagate(track, 40, "backward")
    assert edit.frame_indices == list(range(30, 40))  # green is visible from frame 30: earlier frames stay empty
    for position in range(30, 50):
        assert np.array_equal(session.result[position].get(track).mask, truth["green"][position])


def test_relabel_merge_and_delete(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    split = session.add_object(30, points=[centre(truth["red"][30])], labels=[1], propagate="forward")
    session.delete(1, 30)  # the tracker "switched ids" at 30: track 1 stops, track 2 continues the red box
    assert session.result.track(1).last_frame == 29 and session.result.track(2).first_frame == 30
    session.lock(split.track_id, 35)
    session.merge(split.track_id, 1)
    assert session.result.track_ids == [1] and session.result.track(1).frame_indices == tuple(range(60))
    assert session.locked(1) == [35] and sorted(session.prompts(1)) == [0, 30]
    session.relabel(1, "car")
    assert {obj.label for frame in session.result for obj in frame} == {"car"}
    for _ in range(4):
        session.undo()
    assert session.result.track(1).last_frame == 59 and session.result.track_ids == [1, 2]  # as after the split
    assert {obj.label for frame in session.result for obj in frame} == {"red box", "object"}
    with pytest.raises(KeyError, match="known track ids"):
        session.relabel(9, "x")


def test_a_loaded_result_corrects_exactly_like_a_fresh_one(pipe, frames_truth, tmp_path):
    frames, truth = frames_truth
    fresh = pipe("red box", frames)
    fresh.save(tmp_path / "saved")
    loaded = segvlm.VideoSegmentation.load(tmp_path / "saved")
    sessions = [pipe.correct(fresh, frames), pipe.correct(loaded, frames)]
    for session in sessions:
        session.add_points(1, 50, [centre(truth["blue"][50])], [1])
        session.add_object(10, box=(40, 30, 50, 40))
        session.paint(2, 12, erase=truth["blue"][12])
    assert sessions[0].result.frames == sessions[1].result.frames
    assert sessions[0].result.prompts == sessions[1].result.prompts


def test_the_folder_keeps_every_edit_and_the_undo_history(pipe, frames_truth, tmp_path):
    frames, truth = frames_truth
    folder = tmp_path / "session"
    session = pipe.correct(pipe("red box", frames), frames, folder=folder)
    session.add_points(1, 50, [centre(truth["blue"][50])], [1], seconds=2.5)
    session.add_object(10, box=(40, 30, 50, 40), seconds=1.0)
    session.lock(2, 12)
    session.undo()
    expected_frames = [list(frame.objects) for frame in session.result]
    with pytest.raises(SessionFolderError, match="open in process"):
        CorrectionSession.open(folder, pipe, video=frames)
    session.history.close()  # as a kill would: no snapshot, only the journal

    again = CorrectionSession.open(folder, pipe, video=frames)
    assert [list(frame.objects) for frame in again.result] == expected_frames
    assert again.can_redo and again.redo().action == "redo lock" and again.locked(2) == [12]
    assert [e.clicks for e in again.effort()] == [1, 0] and again.effort()[0].seconds == 2.5
    again.close()
    assert json.loads((folder / "session.json").read_text())["applied"] == 5
    third = CorrectionSession.open(folder, pipe, video=frames)
    assert third.locked(2) == [12] and len(third.history.undo_stack) == 3
    third.close()
    with pytest.raises(SessionFolderError, match="already holds a correction session"):
        pipe.correct(third.result, frames, folder=folder)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "masks.json").write_text("a person's file")
    with pytest.raises(SessionFolderError, match="already holds other files"):
        pipe.correct(third.result, frames, folder=tmp_path / "notes")
    assert (tmp_path / "notes" / "masks.json").read_text() == "a person's file"


def test_the_session_exports_through_the_registry(pipe, frames_truth, tmp_path):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    session.add_object(10, box=(40, 30, 50, 40), label="blue box")
    written = session.export("yolo", tmp_path / "yolo")
    assert len([p for p in written if p.suffix == ".jpg"]) == N
    labels = (tmp_path / "yolo" / "labels" / "train").glob("*.txt")
    assert all(len(path.read_text().splitlines()) == 2 for path in labels)  # both objects on every frame


def test_a_torn_journal_line_is_dropped(pipe, frames_truth, tmp_path):
    frames, truth = frames_truth
    folder = tmp_path / "session"
    session = pipe.correct(pipe("red box", frames), frames, folder=folder)
    session.add_points(1, 50, [centre(truth["blue"][50])], [1])
    expected = masks_of(session.result, 1)
    session.history.close()
    with open(folder / "history.jsonl", "ab") as handle:
        handle.write(b'{"type": "edit", "seq": 2, "diffs": [')  # a write cut by a kill
    again = CorrectionSession.open(folder, pipe, video=frames)
    assert masks_of(again.result, 1) == expected and len(again.history.undo_stack) == 1
    again.add_points(1, 20, [centre(truth["blue"][20])], [1])  # the journal continues cleanly
    again.close()
    assert len(CorrectionSession.open(folder, pipe, video=frames).history.undo_stack) == 2


def test_bad_requests_name_the_fix(pipe, frames_truth):
    frames, _ = frames_truth
    result = pipe("red box", frames)
    with pytest.raises(CorrectionError, match="pass them"):
        pipe.correct(result)  # frames from memory: the source cannot be re-read
    with pytest.raises(CorrectionError, match="made from"):
        pipe.correct(result, frames[:30])
    session = pipe.correct(result, frames)
    with pytest.raises(CorrectionError, match="one of none, forward"):
        session.add_points(1, 3, [(1, 1)], [1], propagate="sideways")
    with pytest.raises(CorrectionError, match="one label"):
        session.add_points(1, 3, [(1, 1)], [])
    with pytest.raises(CorrectionError, match="empty"):
        session.add_box(1, 3, (10, 10, 5, 20))
    with pytest.raises(KeyError, match="was not processed"):
        session.add_box(1, 999, (0, 0, 5, 5))
    assert not session.can_undo  # nothing was recorded by the refused edits


def test_text_native_segmenters_are_refused_with_the_fix(frames_truth):
    from segvlm.segmentation.sam3 import Sam3VideoSegmenter

    frames, _ = frames_truth
    pipe = Pipeline(PipelineConfig(), grounder=None, segmenter=object.__new__(Sam3VideoSegmenter))
    result = segvlm.VideoSegmentation(segvlm.VideoInfo("<frames>", H, W), "x", ["x"])
    with pytest.raises(CorrectionError, match="promptable segmenter"):
        pipe.correct(result, frames)


# -- tiny SAM 2: parity with transformers' loop, and a real kill -9 -------------------------------------------------


@pytest.fixture(scope="module")
def sam2():
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import Sam2VideoSegmenter

    return Sam2VideoSegmenter.from_config(SegmenterConfig(model="tiny-random:sam2", dtype="float32"))


def transformers_loop(frames, prompts_by_frame):
    """transformers' documented offline loop: the video up front, every prompt added to one inference
    session (each prompted frame run), then propagation forwards and ``reverse=True`` from the first prompt."""
    import torch
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    from segvlm.resolve import resolve_model

    path = resolve_model("tiny-random:sam2")
    model, processor = Sam2VideoModel.from_pretrained(path).eval(), Sam2VideoProcessor.from_pretrained(path)
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    masks = {}
    with torch.inference_mode():
        for frame_index, (box, clicks) in sorted(prompts_by_frame.items()):
            inputs = {"input_boxes": [[list(box)]]} if box else {}
            if clicks:
                inputs["input_points"] = [[[[x, y] for x, y, _ in clicks]]]
                inputs["input_labels"] = [[[label for _, _, label in clicks]]]
            processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=frame_index, obj_ids=[1], **inputs
            )
            model(inference_session=session, frame_idx=frame_index)
        for reverse in (False, True):
            for output in model.propagate_in_video_iterator(session, reverse=reverse):
                processed = processor.post_process_masks([output.pred_masks], original_sizes=[[H, W]], binarize=True)
                masks[output.frame_idx] = processed[0][0, 0].numpy()
    return masks


def test_propagate_all_equals_transformers_loop_with_the_same_prompts(sam2, frames_truth):
    frames, truth = frames_truth
    frames = frames[:40]  # longer than SAM 2's memory window (17 frames), so pruning is exercised
    result = segvlm.VideoSegmentation(
        segvlm.VideoInfo("<frames>", H, W),
        "thing",
        ["thing"],
        [segvlm.FrameResult(index, H, W) for index in range(40)],
    )
    session = CorrectionSession.create(result, sam2, video=frames)
    session.add_object(12, box=(2.0, 5.0, 30.0, 20.0), propagate="none")
    session.add_points(1, 30, [(60.0, 10.0), (45.0, 35.0)], [1, 0], propagate="none")
    session.add_points(1, 30, [(50.0, 12.0)], [1], propagate="none")  # clicks accumulate on the frame
    prompt_30 = session.prompts(1)[30]
    session.propagate_all()
    reference = transformers_loop(
        frames,
        {
            12: ((2.0, 5.0, 30.0, 20.0), []),
            30: (prompt_30.box, [(c.x, c.y, int(c.positive)) for c in prompt_30.clicks]),
        },
    )
    assert sorted(reference) == list(range(40))
    for position in range(40):
        shown = session.result[position].get(1)
        ours = shown.mask if shown is not None else np.zeros((H, W), bool)
        assert np.array_equal(ours, reference[position]), f"frame {position}"


def test_sam2_edits_recompute_only_between_neighbouring_prompts(sam2, frames_truth):
    frames, _ = frames_truth
    frames = frames[:30]
    result = segvlm.VideoSegmentation(
        segvlm.VideoInfo("<frames>", H, W), "thing", ["thing"], [segvlm.FrameResult(i, H, W) for i in range(30)]
    )
    session = CorrectionSession.create(result, sam2, video=frames)
    session.add_object(0, box=(2.0, 5.0, 30.0, 20.0))
    session.add_box(1, 20, (30.0, 25.0, 55.0, 45.0))
    before = masks_of(session.result, 1)
    edit = session.add_points(1, 8, [(10.0, 10.0)], [1])
    assert edit.frame_indices and set(edit.frame_indices) <= set(range(8, 20))
    after = masks_of(session.result, 1)
    assert after[:8] == before[:8] and after[20:] == before[20:]
    session.undo()
    assert masks_of(session.result, 1) == before
    # Image features computed ahead (the frame in view) give the same mask as computing them on the click.
    session._memory.vision.clear_all()
    session.warm(25)
    assert 25 in session._memory.vision
    session.add_points(1, 25, [(40.0, 30.0)], [1], propagate="none")
    warmed = session.result[25].get(1)
    session.undo()
    session._memory.vision.clear_all()
    session._memory.conditioning.clear()
    session.add_points(1, 25, [(40.0, 30.0)], [1], propagate="none")
    assert session.result[25].get(1) == warmed


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore")
    import numpy
    import segvlm
    from segvlm.corrections import CorrectionSession
    video, folder, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pipe = segvlm.Pipeline.from_preset("tiny-random")
    if step == 0:
        session = pipe.correct(pipe("red box", video, max_frames=12), video, folder=folder)
        session.add_object(3, box=(10, 10, 40, 30), label="added", propagate="both")
    else:
        session = CorrectionSession.open(folder, pipe)
        session.add_points(1, 6, [(20, 20), (50, 40)], [1, 0])
        print(session.result.frames[8].get(1) is not None, flush=True)
        session.paint(1, 8, erase=numpy.ones((48, 96), bool))
    print("EDITED", flush=True)
    import time; time.sleep(60)
    """
)


def test_kill_9_right_after_an_edit_then_reopen(tmp_path, frames_truth):
    frames, _ = frames_truth
    video = write_video(tmp_path / "clip.mp4", frames[:12])
    folder = tmp_path / "session"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for step in range(2):
        process = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, video, str(folder), str(step)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines = [process.stdout.readline().strip() for _ in range(1 + step)]
        assert lines[-1] == "EDITED", process.stderr.read()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
    with pytest.warns(UserWarning, match="meaningless"):
        pipe = segvlm.Pipeline.from_preset("tiny-random")
    reopened = CorrectionSession.open(folder, pipe)
    assert len(reopened.history.undo_stack) == 3
    assert len(reopened.prompts(1)[6].clicks) == 2 and reopened.result[8].get(1) is None  # both edits kept
    assert "added" in {obj.label for frame in reopened.result for obj in frame}
    reopened.undo()  # the undo history survived the kill
    assert (reopened.result[8].get(1) is not None) == (lines[0] == "True")
    reopened.close()


def test_edgetam_takes_every_edit_through_the_same_engine(frames_truth):
    from segvlm.config import SegmenterConfig
    from segvlm.registry import segmenter_class

    frames, _ = frames_truth
    config = SegmenterConfig(name="edgetam", model="tiny-random:edgetam", dtype="float32")
    edgetam = segmenter_class("edgetam").from_config(config)
    result = segvlm.VideoSegmentation(
        segvlm.VideoInfo("<frames>", H, W), "thing", ["thing"], [segvlm.FrameResult(i, H, W) for i in range(6)]
    )
    session = CorrectionSession.create(result, edgetam, video=frames[:6])
    new = session.add_object(2, box=(2.0, 5.0, 30.0, 20.0))
    assert new.frame_indices and min(new.frame_indices) < 2 < max(new.frame_indices)
    session.add_points(1, 4, [(10.0, 10.0)], [0], propagate="none")
    session.undo()
    assert session.can_redo and 4 not in session.prompts(1)


class FailingSegmenter(ColourSegmenter):
    """The exact fake, failing after ``after`` frames of a propagation (a damaged frame, a crashed model)."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after
        self.armed = False

    def propagate_object(self, frames, obj_id, prompts, sweeps, memory=None):
        for count, tracked in enumerate(super().propagate_object(frames, obj_id, prompts, sweeps, memory)):
            if self.armed and count == self.after:
                raise RuntimeError("decoder failed")
            yield tracked


def test_a_failed_edit_changes_nothing_and_records_nothing(frames_truth, tmp_path):
    frames, truth = frames_truth
    segmenter = FailingSegmenter(after=5)
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1))
    pipe = Pipeline(config, grounder=ColourGrounder({"red box": RED}), segmenter=segmenter)
    session = pipe.correct(pipe("red box", frames), frames, folder=tmp_path / "s")
    before = masks_of(session.result, 1)
    segmenter.armed = True
    with pytest.raises(RuntimeError, match="decoder failed"):
        session.add_points(1, 20, [centre(truth["blue"][20])], [1])
    assert masks_of(session.result, 1) == before and 20 not in session.prompts(1) and not session.can_undo
    segmenter.armed = False
    session.add_points(1, 30, [centre(truth["blue"][30])], [1])
    session.close()
    reopened = CorrectionSession.open(tmp_path / "s", pipe, video=frames)
    assert sorted(reopened.prompts(1)) == [0, 30] and len(reopened.history.undo_stack) == 1


def test_propagating_back_or_both_ways_from_a_frame_without_a_prompt(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)  # the only prompt: the detector's box on frame 0
    for direction in ("backward", "both"):  # backwards, nothing is behind frame 40: it starts from the mask shown
        edit = session.propagate(1, 40, direction)
        assert edit.completed and set(edit.frame_indices) <= set(range(60))
    assert all(np.array_equal(session.result[p].get(1).mask, truth["red"][p]) for p in range(60))
    session.delete(1, 50)
    with pytest.raises(CorrectionError, match="no mask on frame 55"):
        session.propagate(1, 55, "backward")
    assert session.propagate(1, 49, "forward").frame_indices == list(range(50, 60))  # the prompt on 0 leads


def test_labels_are_kept_for_tracks_without_masks_and_undo_reverts_them(pipe, frames_truth, tmp_path):
    frames, _ = frames_truth
    session = pipe.correct(pipe("red box", frames), frames, folder=tmp_path / "s")
    new = session.add_object(5, box=(80, 1, 90, 4), label="kite", propagate="none")  # background only
    assert session.result[5].get(new.track_id) is not None
    session.paint(new.track_id, 5, erase=np.ones((H, W), bool), propagate="none")  # no mask anywhere now
    session.relabel(new.track_id, "truck")
    session.undo()
    assert session._track_info(new.track_id)[0] == "kite"
    session.redo()
    session.close()
    reopened = CorrectionSession.open(tmp_path / "s", pipe, video=frames)
    assert reopened._track_info(new.track_id)[0] == "truck" and reopened.result.labels[new.track_id] == "truck"


def test_merge_never_overwrites_an_approved_mask(pipe, frames_truth):
    frames, truth = frames_truth
    session = pipe.correct(pipe("red box", frames), frames)
    other = session.add_object(0, points=[centre(truth["blue"][0])], labels=[1], propagate="forward").track_id
    session.lock(1, 10)
    approved = session.result[10].get(1)
    session.merge(other, 1)
    assert session.result[10].get(1) == approved and session.result[10].get(other) is None
    assert np.array_equal(session.result[11].get(1).mask, truth["red"][11] | truth["blue"][11])
