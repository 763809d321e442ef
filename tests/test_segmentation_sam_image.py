"""SAM (v1), the single-image baseline, against transformers' documented SamModel usage."""

from __future__ import annotations

import numpy as np
import torch
from transformers import SamModel, SamProcessor

from segvlm.config import GrounderConfig, PipelineConfig, SegmenterConfig
from segvlm.resolve import resolve_model
from segvlm.segmentation.base import ObjectPrompt
from segvlm.segmentation.sam_image import SamImageSegmenter
from segvlm.tracking import Pipeline

IMAGE = np.random.default_rng(3).integers(0, 255, (90, 160, 3), dtype=np.uint8)
BOX = [12.0, 8.0, 70.0, 60.0]


def test_masks_equal_the_documented_sam_usage():
    segmenter = SamImageSegmenter.from_config(SegmenterConfig(name="sam", model="tiny-random:sam", dtype="float32"))
    output = segmenter.start(90, 160).step(IMAGE, [ObjectPrompt(4, box=tuple(BOX))])

    path = resolve_model("tiny-random:sam")
    model, processor = SamModel.from_pretrained(path).eval(), SamProcessor.from_pretrained(path)
    inputs = processor(images=IMAGE, input_boxes=[[BOX]], return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(
        reference.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert output.obj_ids == [4]
    assert np.array_equal(output.masks[0], expected[0][0, 0].numpy())


def test_sam_baseline_through_the_pipeline_on_one_image():
    config = PipelineConfig(
        grounder=GrounderConfig(model="tiny-random:owlv2", box_threshold=0.0, top_k=2),
        segmenter=SegmenterConfig(name="sam", model="tiny-random:sam", dtype="float32"),
        device="cpu",
    )
    result = Pipeline(config)("a cup", IMAGE)
    assert len(result) == 1 and result.track_ids
    assert all(obj.mask.shape == (90, 160) for obj in result[0])


def test_click_prompts_equal_the_documented_sam_usage():
    segmenter = SamImageSegmenter.from_config(SegmenterConfig(name="sam", model="tiny-random:sam", dtype="float32"))
    clicks, labels = [(40.0, 30.0), (120.0, 70.0)], [1, 0]
    output = segmenter.start(90, 160).step(IMAGE, [ObjectPrompt(1, points=clicks, labels=labels)])

    path = resolve_model("tiny-random:sam")
    model, processor = SamModel.from_pretrained(path).eval(), SamProcessor.from_pretrained(path)
    inputs = processor(
        images=IMAGE, input_points=[[[list(p) for p in clicks]]], input_labels=[[labels]], return_tensors="pt"
    )
    with torch.no_grad():
        reference = model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(
        reference.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert np.array_equal(output.masks[0], expected[0][0, 0].numpy())
