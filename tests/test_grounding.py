"""Grounders and the CLIP re-ranker on tiny random checkpoints loaded with from_pretrained(folder)."""

from __future__ import annotations

import numpy as np
import pytest

from segvlm.config import GrounderConfig, RerankerConfig
from segvlm.grounding.base import postprocess_detections
from segvlm.grounding.grounding_dino import GroundingDinoGrounder, build_prompt
from segvlm.grounding.owlv2 import Owlv2Grounder
from segvlm.grounding.rerank import ClipReranker, crop
from segvlm.registry import grounder_class
from segvlm.resolve import resolve_model
from segvlm.types import Detection

IMAGE = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "cls", "model"),
    [
        ("owlv2", Owlv2Grounder, "tiny-random:owlv2"),
        ("grounding-dino", GroundingDinoGrounder, "tiny-random:grounding-dino"),
    ],
)
def test_grounders_load_from_a_local_folder_and_return_boxes_in_frame(name, cls, model):
    folder = resolve_model(model)  # a real folder written by save_pretrained
    config = GrounderConfig(name=name, model=folder, box_threshold=0.0, top_k=3)
    grounder = grounder_class(name).from_config(config)
    assert isinstance(grounder, cls)
    detections = grounder.detect(IMAGE, ["red car", "child"], "the red car and the child")
    assert detections, "with threshold 0 the detector must propose boxes"
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    for label in ("red car", "child"):
        assert sum(d.label == label for d in detections) <= 3
    for d in detections:
        x0, y0, x1, y1 = d.box_xyxy
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 90
        assert d.label in ("red car", "child")
        assert d.phrase == {"red car": "the red car", "child": "the child"}[d.label]  # the query's own words


def test_a_high_threshold_gives_no_boxes():
    config = GrounderConfig(model="tiny-random:owlv2", box_threshold=1.01)
    assert Owlv2Grounder.from_config(config).detect(IMAGE, ["car"]) == []


def test_postprocess_applies_nms_per_label_and_top_k():
    detections = [
        Detection((0, 0, 10, 10), 0.9, "car"),
        Detection((1, 1, 10, 10), 0.8, "car"),  # overlaps the first: suppressed
        Detection((50, 50, 60, 60), 0.7, "car"),
        Detection((70, 0, 80, 10), 0.6, "car"),  # beyond top_k=2
        Detection((1, 1, 10, 10), 0.5, "dog"),  # same place, other label: kept
        Detection((200, 200, 300, 300), 0.95, "dog"),  # outside the frame: dropped
    ]
    kept = postprocess_detections(detections, nms_iou=0.5, top_k=2, height=100, width=100)
    assert [(d.label, d.score) for d in kept] == [("car", 0.9), ("car", 0.7), ("dog", 0.5)]


def test_grounding_dino_prompt_spans():
    text, spans = build_prompt(["Red car", "child"])
    assert text == "red car. child."
    assert [text[a:b] for a, b in spans] == ["red car", "child"]


def test_clip_reranker_scores_follow_the_formula():
    reranker = ClipReranker.from_config(RerankerConfig(enabled=True, model="tiny-random:clip", weight=0.5))
    detections = [
        Detection((0, 0, 50, 50), 0.5, "red car", "q"),
        Detection((60, 10, 150, 90), 0.6, "red car", "q"),
        Detection((10, 10, 40, 40), 0.3, "dog", "q"),
    ]
    logits = reranker.similarities(IMAGE, detections)
    car = np.exp(logits[:2] - logits[:2].max())
    preference = car / car.max()
    expected = {
        (0, 0, 50, 50): 0.25 + 0.5 * preference[0],
        (60, 10, 150, 90): 0.3 + 0.5 * preference[1],
        (10, 10, 40, 40): 0.15 + 0.5,
    }
    reranked = reranker.rerank(IMAGE, detections)
    assert len(reranked) == 3
    for d in reranked:
        assert d.score == pytest.approx(expected[d.box_xyxy], abs=1e-5)
    assert reranker.rerank(IMAGE, []) == []


def test_crop_adds_context_and_stays_inside():
    assert crop(IMAGE, (10, 10, 30, 20)).shape == (12, 24, 3)
    assert crop(IMAGE, (150, 80, 160, 90)).shape[:2] == (11, 11)  # context on the inner sides only
