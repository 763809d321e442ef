"""The tracking policy on generated scenes with exact fake backends: ids, entering, leaving, crossing."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import ColourGrounder, ColourSegmenter

from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.testing.media import Sprite, render
from segvlm.tracking import Pipeline

H, W = 60, 96
RED, BLUE = (220, 30, 30), (30, 60, 220)


def make_pipeline(**tracking) -> tuple[Pipeline, ColourGrounder, ColourSegmenter]:
    grounder = ColourGrounder({"red box": RED, "blue box": BLUE})
    segmenter = ColourSegmenter()
    config = PipelineConfig(
        tracking=TrackingConfig(**{"reground_every": 5, "min_mask_area": 1, **tracking}), device="cpu"
    )
    return Pipeline(config, grounder=grounder, segmenter=segmenter), grounder, segmenter


def masks_of(result, track_id):
    return {index: obj.mask for index, obj in result.masklet(track_id).items()}


def test_entering_object_gets_new_id_and_is_backfilled():
    red = Sprite("red", RED, (10, 12), [(5, 5 + t) for t in range(20)])
    blue = Sprite("blue", BLUE, (12, 10), [None] * 7 + [(40, 80 - 2 * t) for t in range(13)])
    frames, truth = render([red, blue], H, W, 20)
    pipe, grounder, segmenter = make_pipeline()
    result = pipe("the red box and the blue box", frames)

    assert len(result) == 20
    assert result.track_ids == [1, 2]
    assert result.track(1).label == "red box" and result.track(2).label == "blue box"
    blue_track = result.track(2)
    # Found at the re-grounding on frame 10, back-filled to frame 7 where it entered.
    assert blue_track.first_frame == 7 and blue_track.last_frame == 19
    for index, mask in masks_of(result, 2).items():
        assert np.array_equal(mask, truth["blue"][index])
    for index, mask in masks_of(result, 1).items():
        assert np.array_equal(mask, truth["red"][index])
    assert len(grounder.calls) == 4  # frames 0, 5, 10, 15
    # The back-fill session stops at frame 6 where the box is gone: 10, 9, 8, 7, 6 and not frame 5.
    assert [session.steps for session in segmenter.sessions[1:]] == [5]


def test_leaving_object_ends_its_track():
    red = Sprite("red", RED, (10, 12), [(5, 5 + t) for t in range(8)] + [None] * 12)
    blue = Sprite("blue", BLUE, (10, 10), [(40, 50)] * 20)
    frames, _ = render([red, blue], H, W, 20)
    pipe, _, segmenter = make_pipeline(max_lost_frames=3)
    result = pipe(["red box", "blue box"], frames)

    assert result.track(1).last_frame == 7
    assert result.track(2).frame_indices == tuple(range(20))
    assert segmenter.removed == [1]  # the ended track left the session (no more compute for it)
    assert 1 not in segmenter.sessions[0].obj_ids


def test_object_that_returns_within_memory_keeps_its_id():
    path = [(5, 5 + t) for t in range(6)] + [None, None] + [(5, 20 + t) for t in range(8)]
    frames, _ = render([Sprite("red", RED, (10, 12), path)], H, W, 16)
    pipe, _, _ = make_pipeline(max_lost_frames=5, reground_every=4)
    result = pipe("red box", frames)

    assert result.track_ids == [1]
    assert result.track(1).frame_indices == tuple(i for i in range(16) if i not in (6, 7))


def test_crossing_objects_keep_their_ids():
    red = Sprite("red", RED, (12, 12), [(20, 4 + 4 * t) for t in range(20)])
    blue = Sprite("blue", BLUE, (12, 12), [(24, 84 - 4 * t) for t in range(20)])
    frames, truth = render([red, blue], H, W, 20)
    pipe, _, _ = make_pipeline(reground_every=3)
    result = pipe("red box, blue box", frames)

    assert result.track_ids == [1, 2]
    for position in range(20):
        frame = result[position]
        red_obj, blue_obj = frame.get(1), frame.get(2)
        if red_obj is not None:
            assert red_obj.label == "red box"
            assert np.array_equal(red_obj.mask, truth["red"][position])
        if blue_obj is not None:
            assert blue_obj.label == "blue box"
            assert np.array_equal(blue_obj.mask, truth["blue"][position])


def test_query_matching_nothing_returns_an_empty_result():
    frames, _ = render([Sprite("red", RED, (10, 12), [(5, 5)] * 6)], H, W, 6)
    pipe, grounder, segmenter = make_pipeline(reground_every=2)
    result = pipe("a purple elephant", frames)

    assert len(result) == 6 and result.is_empty and result.track_ids == []
    assert len(grounder.calls) == 3  # kept trying at frames 0, 2, 4
    assert segmenter.sessions == []  # nothing to track, the segmenter never ran
    assert result.to_coco()["annotations"] == []


def test_late_object_is_found_by_retrying_and_backfilled():
    frames, truth = render([Sprite("red", RED, (10, 12), [None] * 3 + [(5, 5 + t) for t in range(9)])], H, W, 12)
    pipe, _, _ = make_pipeline(reground_every=5)
    result = pipe("red box", frames)

    assert result.track(1).first_frame == 3
    assert np.array_equal(result[3].get(1).mask, truth["red"][3])


def test_redetections_of_running_tracks_do_not_create_duplicates():
    frames, _ = render([Sprite("red", RED, (10, 12), [(5, 5 + 3 * t) for t in range(15)])], H, W, 15)
    pipe, grounder, _ = make_pipeline(reground_every=1)
    result = pipe("red box", frames)

    assert len(grounder.calls) == 15 and result.track_ids == [1]


def test_max_objects_caps_the_number_of_tracks():
    frames, _ = render(
        [Sprite("red", RED, (10, 12), [(5, 5)] * 4), Sprite("blue", BLUE, (10, 12), [(40, 60)] * 4)], H, W, 4
    )
    pipe, _, _ = make_pipeline(max_objects=1)
    assert pipe(["red box", "blue box"], frames).track_ids == [1]


def test_stride_and_max_frames_map_to_source_indices():
    frames, _ = render([Sprite("red", RED, (10, 12), [(5, 5 + t) for t in range(20)])], H, W, 20)
    pipe, _, _ = make_pipeline()
    result = pipe("red box", frames, stride=3, max_frames=4)
    assert [frame.frame_index for frame in result] == [0, 3, 6, 9]
    assert result.info.stride == 3
    with pytest.raises(KeyError, match="was not processed"):
        result.frame(4)


@pytest.mark.parametrize("with_reranker", [True, False])
def test_an_ended_track_is_revived_by_the_clip_reranker(with_reranker):
    """The red box leaves long enough for its track to end, then returns: with CLIP it keeps id 1."""
    from segvlm.config import RerankerConfig
    from segvlm.grounding.rerank import ClipReranker

    path = [(5, 5)] * 5 + [None] * 6 + [(5, 40)] * 5
    blue = Sprite("blue", BLUE, (10, 10), [(40, 70)] * 16)
    frames, _ = render([Sprite("red", RED, (10, 12), path), blue], H, W, 16)
    grounder, segmenter = ColourGrounder({"red box": RED, "blue box": BLUE}), ColourSegmenter()
    reranker = ClipReranker.from_config(RerankerConfig(model="tiny-random:clip")) if with_reranker else None
    config = PipelineConfig(tracking=TrackingConfig(reground_every=4, max_lost_frames=2, min_mask_area=1))
    result = Pipeline(config, grounder=grounder, segmenter=segmenter, reranker=reranker)(
        ["red box", "blue box"], frames
    )

    red_ids = sorted({obj.track_id for frame in result for obj in frame if obj.label == "red box"})
    if with_reranker:
        assert red_ids == [1]
        assert result.track(1).frame_indices == (0, 1, 2, 3, 4, 11, 12, 13, 14, 15)  # 11 by back-filling
    else:
        assert red_ids == [1, 3]  # without appearance memory the returning object is a new track
    assert result.track(2).label == "blue box" and len(result.track(2)) == 16


def test_max_objects_counts_running_tracks_only():
    red = Sprite("red", RED, (10, 12), [(5, 5)] * 3 + [None] * 9)
    blue = Sprite("blue", BLUE, (10, 12), [None] * 8 + [(40, 60)] * 4)
    frames, _ = render([red, blue], H, W, 12)
    pipe, _, _ = make_pipeline(max_objects=1, max_lost_frames=1, reground_every=4)
    assert pipe(["red box", "blue box"], frames).track_ids == [1, 2]  # red ended before blue arrived
