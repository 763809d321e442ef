"""SAM 3 through transformers: tiny model, parity with the documented streaming loop, bounded state, pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Sam3VideoModel, Sam3VideoProcessor

from segvlm.config import PipelineConfig, SegmenterConfig
from segvlm.resolve import resolve_model
from segvlm.segmentation.sam3 import Sam3VideoSegmenter, TextFrameMasks
from segvlm.testing.media import Sprite, render
from segvlm.testing.models import SAM3_ANCHOR_PHRASES
from segvlm.tracking import Pipeline

H, W = 72, 96
FOUND, NOTHING = SAM3_ANCHOR_PHRASES  # the tiny model finds the first phrase everywhere, the second nowhere
PHRASES = [FOUND, "cat"]
FRAMES = 10


@pytest.fixture(scope="module")
def frames():
    red = Sprite("red", (200, 40, 40), (24, 24), [(20, 8 + 4 * t) for t in range(FRAMES)])
    green = Sprite("green", (40, 200, 40), (20, 30), [(40, 60)] * FRAMES)
    images, _ = render([red, green], H, W, FRAMES)
    return images


@pytest.fixture(scope="module")
def segmenter():
    return Sam3VideoSegmenter.from_config(SegmenterConfig(name="sam3", model="tiny-random:sam3", dtype="float32"))


def documented_streaming_loop(frames, phrases):
    """transformers' documented SAM 3 streaming loop, on a fresh model: one frame at a time, nothing pruned."""
    path = resolve_model("tiny-random:sam3")
    model, processor = Sam3VideoModel.from_pretrained(path).eval(), Sam3VideoProcessor.from_pretrained(path)
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    session = processor.add_text_prompt(inference_session=session, text=phrases)
    outputs = []
    with torch.inference_mode():
        for frame in frames:
            inputs = processor(images=frame, device="cpu", return_tensors="pt")
            output = model(inference_session=session, frame=inputs.pixel_values[0])
            outputs.append(processor.postprocess_outputs(session, output, original_sizes=inputs.original_sizes))
    return outputs, session


@pytest.fixture(scope="module")
def runs(segmenter, frames):
    """Our session and the documented loop over the same frames; our state size after every frame."""
    session = segmenter.start_text(H, W, PHRASES)
    ours, sizes = [], []
    for frame in frames:
        ours.append(session.step(frame))
        sizes.append((len(session.obj_ids), session.state_size()))
    reference, reference_session = documented_streaming_loop(frames, PHRASES)
    return ours, sizes, session, reference, reference_session


def test_tiny_sam3_loads_like_a_hub_checkpoint():
    path = resolve_model("tiny-random:sam3")
    model = Sam3VideoModel.from_pretrained(path)
    processor = Sam3VideoProcessor.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert model.config.detector_config.image_size == processor.target_size == 112
    encoded = processor.tokenizer("red car", padding="max_length", max_length=32)
    assert len(encoded.input_ids) == 32 and sum(encoded.attention_mask) == 4  # start, "red", "car", end


def test_session_matches_the_documented_streaming_loop(runs):
    ours, _, _, reference, _ = runs
    assert any(len(frame.obj_ids) for frame in ours), "the tiny model should find the anchor phrase"
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.obj_ids == theirs["object_ids"].tolist()
        np.testing.assert_array_equal(mine.masks, theirs["masks"].numpy())
        np.testing.assert_allclose(mine.scores, theirs["scores"].numpy(), rtol=1e-6)
        assert mine.masks.shape == (len(mine.obj_ids), H, W) and mine.masks.dtype == bool


def test_labels_name_the_phrase_that_found_each_object(runs):
    ours, _, session, _, reference_session = runs
    last = ours[-1]
    assert set(last.labels) <= set(PHRASES) and FOUND in last.labels
    for obj_id, label in zip(last.obj_ids, last.labels):
        assert reference_session.prompts[reference_session.obj_id_to_prompt_id[obj_id]] == label


def test_state_is_bounded_per_object_while_transformers_grows(runs):
    _, sizes, session, _, reference_session = runs
    state = session.session
    assert state.processed_frames.stored() == 1 and len(state.processed_frames) == FRAMES
    assert len(reference_session.processed_frames) == FRAMES  # transformers keeps every frame's pixels
    for outputs in state.output_dict_per_obj.values():
        assert len(outputs["non_cond_frame_outputs"]) <= session.window + 1  # frames position - window .. position
        assert len(outputs["cond_frame_outputs"]) <= session.max_cond_frames + session.window + 1
    assert len(state.obj_id_to_tracker_score_frame_wise) <= 1
    assert len(reference_session.obj_id_to_tracker_score_frame_wise) >= FRAMES - 1
    objects, size = sizes[-1]
    assert size <= objects * (session.window + session.max_cond_frames + 4) + 3
    reference_outputs = sum(len(o["non_cond_frame_outputs"]) for o in reference_session.output_dict_per_obj.values())
    ours_outputs = sum(len(o["non_cond_frame_outputs"]) for o in state.output_dict_per_obj.values())
    assert ours_outputs < reference_outputs


def test_state_stops_growing_once_the_memory_window_is_full(segmenter):
    """On a still noise frame the tiny model keeps the same objects, so the state must plateau."""
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    session = segmenter.start_text(H, W, [FOUND])
    sizes = []
    for _ in range(session.window + 6):
        session.step(image)
        sizes.append((len(session.obj_ids), session.state_size()))
    assert sizes[0][0] > 0 and len({objects for objects, _ in sizes}) == 1
    assert sizes[1][1] < sizes[session.window][1]  # it grows while the window fills...
    assert len({size for _, size in sizes[session.window + 1 :]}) == 1  # ...then stays put


class _NoGrounder:
    def detect(self, image, phrases, query=""):
        raise AssertionError("a text-native segmenter must not call the grounder")


def _pipeline(segmenter) -> Pipeline:
    return Pipeline(PipelineConfig(device="cpu"), grounder=_NoGrounder(), segmenter=segmenter)


def test_pipeline_with_sam3_takes_objects_and_labels_from_the_query(segmenter, frames):
    result = _pipeline(segmenter)(f"the {FOUND} and the cat", frames[:5])
    assert len(result.frames) == 5 and result.phrases == PHRASES
    objects = [obj for frame in result.frames for obj in frame.objects]
    assert objects and {obj.label for obj in objects} <= set(PHRASES)
    for obj in objects:
        assert obj.track_id >= 1 and obj.phrase in (f"the {obj.label}", obj.label) and 0.0 <= obj.score <= 1.0
        x0, y0, x1, y1 = obj.box_xyxy
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H and obj.mask.shape == (H, W)


def test_a_query_the_model_does_not_find_gives_an_empty_result(segmenter, frames):
    result = _pipeline(segmenter)(NOTHING, frames[:3])
    assert len(result.frames) == 3 and all(len(frame) == 0 for frame in result.frames)
    assert result.phrases == [NOTHING]
    session = segmenter.start_text(H, W, [NOTHING])
    output = session.step(frames[0])
    assert isinstance(output, TextFrameMasks) and output.obj_ids == [] and output.masks.shape == (0, H, W)


def test_frames_of_another_size_are_refused(segmenter, frames):
    session = segmenter.start_text(H, W, [FOUND])
    with pytest.raises(ValueError, match="same size"):
        session.step(frames[0][:, :40])


@pytest.mark.slow
def test_real_sam3_finds_a_drawn_square():
    """The real checkpoint (gated ``facebook/sam3``) finds a large red square and tracks it as it moves."""
    square = Sprite("square", (220, 30, 30), (120, 120), [(60, 40 + 10 * t) for t in range(4)])
    images, truth = render([square], 360, 480, 4)
    segmenter = Sam3VideoSegmenter.from_config(SegmenterConfig(name="sam3", model="facebook/sam3"))
    session = segmenter.start_text(360, 480, ["red square"])
    outputs = [session.step(image) for image in images]
    assert all(len(output.obj_ids) >= 1 for output in outputs)
    ids = {output.obj_ids[int(np.argmax(output.scores))] for output in outputs}
    assert len(ids) == 1
