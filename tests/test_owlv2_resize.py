"""OWLv2 gets large frames shrunk to a little above its input size; the boxes stay in original-frame pixels."""

from __future__ import annotations

import numpy as np
import pytest

from segvlm.config import GrounderConfig
from segvlm.grounding.owlv2 import Owlv2Grounder
from segvlm.testing.models import OWLV2_IMAGE_SIZE


@pytest.fixture(scope="module")
def grounder():
    return Owlv2Grounder.from_config(GrounderConfig(model="tiny-random:owlv2", box_threshold=0.0, top_k=3))


def _photo(height: int, width: int) -> np.ndarray:
    """A smooth picture (gradients and a bright block), so shrinking it changes little but its size."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, np.full((height, width), 90.0)], axis=-1)
    image[height // 4 : height // 2, width // 2 : 3 * width // 4] = (250, 40, 40)
    return image.astype(np.uint8)


class ProcessorSpy:
    """The grounder's processor, recording the shape of every image handed to it."""

    def __init__(self, inner) -> None:
        self.inner, self.shapes = inner, []

    def __call__(self, *args, **kwargs):
        self.shapes.append(np.asarray(kwargs["images"]).shape)
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_large_frame_reaches_the_processor_shrunk_with_its_aspect_ratio(grounder, monkeypatch):
    spy = ProcessorSpy(grounder.processor)
    monkeypatch.setattr(grounder, "processor", spy)
    grounder.detect(_photo(600, 900), ["red block"], "red block")
    target = round(Owlv2Grounder.resize_margin * OWLV2_IMAGE_SIZE)
    assert spy.shapes == [(round(600 * target / 900), target, 3)]
    small = _photo(80, 100)  # already below the target: passed through untouched
    assert grounder.shrink(small) is small


def test_boxes_stay_in_original_pixels(grounder, monkeypatch):
    image = _photo(600, 900)
    shrunk = grounder.detect(image, ["red block", "sky"], "red block and sky")
    monkeypatch.setattr(grounder, "resize_margin", None)  # the processor gets the full frame, as before
    full = grounder.detect(image, ["red block", "sky"], "red block and sky")
    assert shrunk and len(shrunk) == len(full)
    for a, b in zip(sorted(shrunk, key=lambda d: d.box_xyxy), sorted(full, key=lambda d: d.box_xyxy)):
        assert a.label == b.label
        assert np.abs(np.subtract(a.box_xyxy, b.box_xyxy)).max() <= 0.02 * 900  # within 2% of the frame
        x0, y0, x1, y1 = a.box_xyxy
        assert 0 <= x0 < x1 <= 900 and 0 <= y0 < y1 <= 600
