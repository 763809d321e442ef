"""Fake backends for testing segvlm's own logic on generated scenes (see scenes.py).

``ColourGrounder`` "detects" a phrase by finding its colour in the frame; ``ColourSegmenter`` tracks an
object by the colour under its prompt (the last positive click, else the commonest colour in its mask or
box). Both are exact on the generated scenes, so any error in a test's
ids, back-filling or track ends comes from the pipeline's logic, not from a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.segmentation.base import FrameMasks, ObjectPrompt, SegmenterSession, VideoSegmenter
from segvlm.types import Detection


def _colour_mask(image: np.ndarray, colour) -> np.ndarray:
    return np.all(image == np.asarray(colour, dtype=np.uint8), axis=-1)


class ColourGrounder:
    """Boxes for known phrases: the bounding box of all pixels of the phrase's colour."""

    def __init__(self, colours: dict[str, tuple[int, int, int]], score: float = 0.9):
        self.colours = colours
        self.score = score
        self.calls: list[int] = []  # frame sizes are equal; we record call order only

    def detect(self, image, phrases, query=""):
        self.calls.append(len(self.calls))
        detections = []
        for phrase in phrases:
            if phrase not in self.colours:
                continue
            ys, xs = np.nonzero(_colour_mask(image, self.colours[phrase]))
            if len(xs):
                box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                detections.append(Detection(box, self.score, phrase, query))
        return detections


class _ColourSession(SegmenterSession):
    def __init__(self, segmenter, height, width):
        self.segmenter = segmenter
        self.height, self.width = height, width
        self.colours: dict[int, np.ndarray] = {}
        self.steps = 0

    @property
    def obj_ids(self):
        return list(self.colours)

    def step(self, image, prompts: Sequence[ObjectPrompt] = (), pixel_values=None):
        self.steps += 1
        for prompt in prompts:
            positive = [point for point, label in zip(prompt.points, prompt.labels) if label == 1]
            if positive:  # a click picks the colour under it
                x, y = (int(v) for v in positive[-1])
                self.colours[prompt.obj_id] = image[y, x]
                continue
            if prompt.mask is not None:
                region = prompt.mask
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
                region = np.zeros(image.shape[:2], dtype=bool)
                region[y0:y1, x0:x1] = True
            if not region.any():  # an empty mask: the object is not there
                self.colours[prompt.obj_id] = None
                continue
            pixels = image[region].reshape(-1, 3)
            values, counts = np.unique(pixels, axis=0, return_counts=True)
            self.colours[prompt.obj_id] = values[counts.argmax()]
        ids = list(self.colours)
        if not ids:
            return FrameMasks.empty(self.height, self.width)
        empty = np.zeros(image.shape[:2], dtype=bool)
        masks = np.stack([empty if self.colours[i] is None else _colour_mask(image, self.colours[i]) for i in ids])
        return FrameMasks(ids, masks, np.ones(len(ids), dtype=np.float32))

    def remove_objects(self, obj_ids):
        for obj_id in obj_ids:
            self.colours.pop(obj_id, None)
        self.segmenter.removed.extend(obj_ids)

    def state_size(self):
        return len(self.colours)


class ColourSegmenter(VideoSegmenter):
    """Tracks each prompted object as the set of pixels with the colour found under its prompt."""

    def __init__(self):
        self.sessions: list[_ColourSession] = []
        self.removed: list[int] = []

    def start(self, height, width):
        session = _ColourSession(self, height, width)
        self.sessions.append(session)
        return session


class FixedGrounder:
    """Returns the same boxes on every call (for parity tests against transformers' own loop)."""

    def __init__(self, detections: list[Detection]):
        self.detections = detections

    def detect(self, image, phrases, query=""):
        return list(self.detections)
