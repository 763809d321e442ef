"""OWLv2 grounding through transformers (``google/owlv2-base-patch16-ensemble`` and friends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segvlm.backend import ModelFamily
from segvlm.config import GrounderConfig
from segvlm.grounding.base import Grounder, postprocess_detections
from segvlm.loading import load_model
from segvlm.query import TextLimit, source_phrases
from segvlm.types import Detection


def _prompt(phrase: str) -> str:
    """The text query OWLv2 reads for a phrase (the prompt its ensemble checkpoints were evaluated with)."""
    return f"a photo of a {phrase}"


RESIZE_MARGIN = 1.25


@dataclass(frozen=True)
class Owlv2Options:
    """OWLv2's own settings (``grounder.options``).

    Attributes:
        resize_margin: a frame whose longer side exceeds this many times the model's input side is shrunk to
            it before the processor runs (None: never shrink).
    """

    resize_margin: float | None = RESIZE_MARGIN


class Owlv2Grounder(Grounder):
    """Open-vocabulary boxes from OWLv2.

    OWLv2 pads every image to a square before resizing, so its normalised boxes are relative to the padded
    square; post-processing therefore rescales to ``max(H, W)`` on both sides, then clips to the frame.

    A frame much larger than the model's input is first shrunk (antialiased, aspect ratio kept) to
    ``resize_margin`` times the input side: the processor blurs the padded image at full resolution before
    resizing it, which takes seconds on a 2250x1500 photo. The boxes are still relative to the padded square,
    so they come out in the original frame's pixels as before.

    Each phrase is its own text query, ``"a photo of a <phrase>"``, read with at most
    ``text_config.max_position_embeddings`` tokens (16 for the released checkpoints): a longer phrase is cut
    to fit, with a warning (:class:`segvlm.query.TextLimit`). Any number of phrases is accepted.
    """

    Options = Owlv2Options
    models = ModelFamily(
        "google/owlv2-base-patch16-ensemble", "tiny-random:owlv2", frozenset({"owlv2"}), frozenset({"owlv2"})
    )
    resize_margin: float | None = RESIZE_MARGIN  # longer side given to the processor / model input side

    def __init__(self, model, processor, config: GrounderConfig, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.resize_margin = self.options_from(config).resize_margin
        tokenizer = processor.tokenizer
        self.text_limit = TextLimit(
            "OWLv2",
            model.config.text_config.max_position_embeddings,
            lambda phrase: len(tokenizer(_prompt(phrase))["input_ids"]),
        )

    @classmethod
    def from_config(cls, config: GrounderConfig, device: str = "cpu") -> Owlv2Grounder:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        cls.options_from(config)  # an unknown option is refused before the weights load
        loaded = load_model(Owlv2ForObjectDetection, Owlv2Processor, config.model, device)
        grounder = cls(loaded.model, loaded.processor, config, device)
        grounder.weights = loaded.weights
        return grounder

    def shrink(self, image: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) uint8 with its longer side cut to ``resize_margin`` x the model's input side, or
        unchanged when it is not larger than that (or ``resize_margin`` is None)."""
        if self.resize_margin is None:
            return image
        size = self.processor.image_processor.size
        target = round(self.resize_margin * max(size["height"], size["width"]))
        height, width = image.shape[:2]
        if max(height, width) <= target:
            return image
        from PIL import Image

        scale = target / max(height, width)
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.BILINEAR))

    def detect(self, image: np.ndarray, phrases: Sequence[str], query: str = "") -> list[Detection]:
        import torch

        from segvlm.segmentation.pixels import writable

        height, width = image.shape[:2]
        texts = [_prompt(fitted.text) for fitted in self.text_limit.fit(phrases)]
        sources = source_phrases(query, phrases)
        inputs = self.processor(text=[texts], images=writable(self.shrink(image)), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        side = max(height, width)
        results = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.config.box_threshold, target_sizes=[(side, side)]
        )[0]
        detections = [
            Detection(
                box_xyxy=tuple(box.tolist()), score=float(score), label=phrases[int(label)], phrase=sources[int(label)]
            )
            for box, score, label in zip(results["boxes"], results["scores"], results["labels"])
        ]
        return postprocess_detections(detections, self.config.nms_iou, self.config.top_k, height, width)
