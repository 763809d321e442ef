"""SAM 2 through transformers: parity with the documented loops, bounded state, object removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import FixedGrounder
from transformers import Sam2VideoModel, Sam2VideoProcessor

from segvlm.config import PipelineConfig, SegmenterConfig, TrackingConfig
from segvlm.masks import mask_iou
from segvlm.resolve import resolve_model
from segvlm.segmentation.base import ObjectPrompt
from segvlm.segmentation.sam2 import Sam2VideoSegmenter
from segvlm.testing.media import Sprite, render
from segvlm.tracking import Pipeline
from segvlm.types import Detection

H, W = 72, 128
BOXES = [(10.0, 20.0, 50.0, 60.0), (80.0, 30.0, 120.0, 70.0)]


@pytest.fixture(scope="module")
def frames():
    red = Sprite("red", (200, 40, 40), (30, 30), [(20, 8 + 2 * t) for t in range(24)])
    green = Sprite("green", (40, 200, 40), (30, 30), [(34, 86)] * 24)
    images, _ = render([red, green], H, W, 24)
    return images


@pytest.fixture(scope="module")
def segmenter():
    return Sam2VideoSegmenter.from_config(SegmenterConfig(model="tiny-random:sam2", dtype="float32"))


def documented_offline_loop(frames, boxes):
    """transformers' documented SAM 2 video loop: whole video up front, prompt frame 0, propagate."""
    path = resolve_model("tiny-random:sam2")
    model, processor = Sam2VideoModel.from_pretrained(path).eval(), Sam2VideoProcessor.from_pretrained(path)
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    processor.add_inputs_to_inference_session(
        inference_session=session,
        frame_idx=0,
        obj_ids=list(range(1, len(boxes) + 1)),
        input_boxes=[[list(box) for box in boxes]],
    )
    masks = []
    with torch.inference_mode():
        model(inference_session=session, frame_idx=0)
        for output in model.propagate_in_video_iterator(session):
            processed = processor.post_process_masks([output.pred_masks], original_sizes=[[H, W]], binarize=True)
            masks.append(processed[0][:, 0].numpy())  # (N, H, W)
    return masks


def documented_streaming_loop(frames, boxes):
    path = resolve_model("tiny-random:sam2")
    model, processor = Sam2VideoModel.from_pretrained(path).eval(), Sam2VideoProcessor.from_pretrained(path)
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    masks = []
    with torch.inference_mode():
        for index, frame in enumerate(frames):
            inputs = processor(images=frame, device="cpu", return_tensors="pt")
            if index == 0:
                processor.add_inputs_to_inference_session(
                    inference_session=session,
                    frame_idx=0,
                    obj_ids=list(range(1, len(boxes) + 1)),
                    input_boxes=[[list(box) for box in boxes]],
                    original_size=inputs.original_sizes[0],
                )
            output = model(inference_session=session, frame=inputs.pixel_values[0])
            processed = processor.post_process_masks([output.pred_masks], original_sizes=[[H, W]], binarize=True)
            masks.append(processed[0][:, 0].numpy())
    return masks


def run_session(segmenter, frames, boxes):
    session = segmenter.start(H, W)
    prompts = [ObjectPrompt(i + 1, box=box) for i, box in enumerate(boxes)]
    outputs = [session.step(frames[0], prompts)]
    outputs += [session.step(frame) for frame in frames[1:]]
    return session, outputs


def test_session_matches_both_documented_loops(segmenter, frames):
    _, outputs = run_session(segmenter, frames, BOXES)
    offline = documented_offline_loop(frames, BOXES)
    streaming = documented_streaming_loop(frames, BOXES)
    assert len(outputs) == len(offline) == len(streaming) == 24
    for ours, reference_a, reference_b in zip(outputs, offline, streaming):
        assert ours.obj_ids == [1, 2]
        assert np.array_equal(ours.masks, reference_a)
        assert np.array_equal(ours.masks, reference_b)


def test_pipeline_masks_equal_the_documented_loop(segmenter, frames):
    """Same tiny weights, same box prompts: the pipeline's RLE masks decode to the reference masks."""
    detections = [Detection(box, 0.9, "thing", "thing") for box in BOXES]
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1), device="cpu")
    result = Pipeline(config, grounder=FixedGrounder(detections), segmenter=segmenter)("thing", frames)
    reference = documented_offline_loop(frames, BOXES)
    for position, frame in enumerate(result):
        for obj in frame:
            assert np.array_equal(obj.mask, reference[position][obj.track_id - 1])
        expected_visible = {i + 1 for i in range(2) if reference[position][i].any()}
        assert set(frame.track_ids) == expected_visible


def test_state_stops_growing_after_the_memory_window(segmenter):
    images, _ = render([Sprite("red", (200, 40, 40), (30, 30), [(20, 10)] * 30)], H, W, 30)
    session = segmenter.start(H, W)
    sizes = []
    session.step(images[0], [ObjectPrompt(1, box=BOXES[0])])
    for image in images[1:]:
        session.step(image)
        sizes.append(session.state_size())
    window = session.window
    assert max(sizes[window + 2 :]) == sizes[window + 2] == sizes[-1]  # flat once the window is full
    assert len(session.session.processed_frames) == 1  # only the current frame's pixels are kept
    assert all(
        index >= session.position - window
        for per_obj in session.session.output_dict_per_obj.values()
        for index in per_obj["non_cond_frame_outputs"]
    )


def test_removing_an_object_leaves_the_others_unchanged(segmenter, frames):
    _, alone = run_session(segmenter, frames, BOXES[:1])
    session = segmenter.start(H, W)
    together = [session.step(frames[0], [ObjectPrompt(1, box=BOXES[0]), ObjectPrompt(2, box=BOXES[1])])]
    for index, frame in enumerate(frames[1:], start=1):
        if index == 10:
            session.remove_objects([2])
        together.append(session.step(frame))
    assert session.obj_ids == [1]
    # Memory encoding is batched over objects, so float summation order differs with the object count;
    # random weights leave many logits near zero, hence agreement rather than bit equality.
    for index in range(24):
        assert mask_iou(together[index].masks[0], alone[index].masks[0]) >= 0.99
    assert together[12].obj_ids == [1]


def test_objects_added_mid_video_join_the_running_session(segmenter, frames):
    session = segmenter.start(H, W)
    session.step(frames[0], [ObjectPrompt(1, box=BOXES[0])])
    for frame in frames[1:5]:
        session.step(frame)
    output = session.step(frames[5], [ObjectPrompt(7, box=BOXES[1])])
    assert output.obj_ids == [1, 7] and output.masks.shape == (2, H, W)
    assert session.step(frames[6]).obj_ids == [1, 7]


def test_point_prompts_and_mask_prompts(segmenter, frames):
    session = segmenter.start(H, W)
    output = session.step(
        frames[0],
        [
            ObjectPrompt(1, box=BOXES[0], points=[(30.0, 40.0), (5.0, 5.0)], labels=[1, 0]),
            ObjectPrompt(2, mask=np.pad(np.ones((20, 20), bool), ((30, H - 50), (90, W - 110)))),
        ],
    )
    assert output.obj_ids == [1, 2] and output.masks.dtype == bool


def test_prompt_validation_names_the_fix():
    with pytest.raises(ValueError, match="one label"):
        ObjectPrompt(1, points=[(1.0, 2.0)], labels=[])
    with pytest.raises(ValueError, match="no box, points or mask"):
        ObjectPrompt(1)


def test_frames_of_another_size_are_refused(segmenter, frames):
    session = segmenter.start(H, W)
    session.step(frames[0], [ObjectPrompt(1, box=BOXES[0])])
    with pytest.raises(ValueError, match="same size"):
        session.step(np.zeros((H + 2, W, 3), np.uint8))


def test_edgetam_backend_tracks_through_the_same_session(frames):
    from segvlm.registry import segmenter_class
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter

    config = SegmenterConfig(name="edgetam", model="tiny-random:edgetam", dtype="float32")
    segmenter = segmenter_class("edgetam").from_config(config)
    assert isinstance(segmenter, EdgeTamVideoSegmenter)
    assert type(segmenter.model).__name__ == "EdgeTamVideoModel"
    session, outputs = run_session(segmenter, frames[:20], BOXES)
    assert [o.obj_ids for o in outputs] == [[1, 2]] * 20
    assert outputs[-1].masks.shape == (2, H, W)
    assert len(session.session.processed_frames) == 1


def test_frames_are_resized_on_the_model_device(segmenter, frames):
    """On a GPU the frame is handed to the processor with the device, so the resize runs there (as transformers'
    video loop does); on the CPU the processor is called as before. The meta device stands in for a GPU."""
    from segvlm.segmentation.pixels import pixel_values

    calls = []

    def processor(**kwargs):
        calls.append(kwargs.get("device"))
        return segmenter.processor(**kwargs)

    on_meta = pixel_values(processor, frames[0], "meta", torch.bfloat16)
    on_cpu = pixel_values(processor, frames[0], "cpu", torch.float32)
    assert calls == ["meta", None]
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.bfloat16 and on_meta.shape == on_cpu.shape
    assert torch.equal(on_cpu, segmenter.preprocess(frames[0]))


@pytest.mark.parametrize("layout", [torch.channels_last, torch.preserve_format])
def test_reduced_precision_cpu_frames_skip_the_processor_with_the_same_bits(segmenter, frames, layout):
    """On a bf16 CPU session the resize and normalisation run as two passes instead of the processor's five, and
    give exactly the processor's pixel values; a processor with other settings (bicubic) is simply called."""
    import copy

    from segvlm.segmentation import pixels

    processor = copy.deepcopy(segmenter.processor)
    for image in frames[:3]:
        fast = pixels.pixel_values(processor, image, "cpu", torch.bfloat16, layout)
        slow = pixels._processed(processor, image, "cpu", torch.bfloat16, layout)
        assert torch.equal(fast, slow) and fast.dtype == torch.bfloat16
        assert fast.is_contiguous(memory_format=torch.channels_last) == (layout is torch.channels_last)
    assert getattr(processor, pixels._PLAN)  # the first frame's check passed: the fast path is in use

    bicubic = copy.deepcopy(segmenter.processor)
    bicubic.image_processor.resample = 3
    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return bicubic(**kwargs)

    spy.image_processor = bicubic.image_processor
    out = pixels.pixel_values(spy, frames[0], "cpu", torch.bfloat16)
    assert len(calls) == 1 and torch.equal(out, pixels._processed(bicubic, frames[0], "cpu", torch.bfloat16, layout))
    assert getattr(spy, pixels._PLAN) is False  # bicubic is not the resize this path computes: never tried
