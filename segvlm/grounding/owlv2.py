"""OWLv2 grounding through transformers (``google/owlv2-base-patch16-ensemble`` and friends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.config import GrounderConfig
from segvlm.grounding.base import Grounder, postprocess_detections
from segvlm.loading import load_pretrained
from segvlm.types import Detection


class Owlv2Grounder(Grounder):
    """Open-vocabulary boxes from OWLv2.

    OWLv2 pads every image to a square before resizing, so its normalised boxes are relative to the padded
    square; post-processing therefore rescales to ``max(H, W)`` on both sides, then clips to the frame.
    """

    def __init__(self, model, processor, config: GrounderConfig, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device

    @classmethod
    def from_config(cls, config: GrounderConfig, device: str = "cpu") -> Owlv2Grounder:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        model = load_pretrained(Owlv2ForObjectDetection, config.model).to(device).eval()
        processor = load_pretrained(Owlv2Processor, config.model)
        return cls(model, processor, config, device)

    def detect(self, image: np.ndarray, phrases: Sequence[str], query: str = "") -> list[Detection]:
        import torch

        height, width = image.shape[:2]
        texts = [f"a photo of a {phrase}" for phrase in phrases]
        inputs = self.processor(text=[texts], images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        side = max(height, width)
        results = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.config.box_threshold, target_sizes=[(side, side)]
        )[0]
        detections = [
            Detection(box_xyxy=tuple(box.tolist()), score=float(score), label=phrases[int(label)], phrase=query)
            for box, score, label in zip(results["boxes"], results["scores"], results["labels"])
        ]
        return postprocess_detections(detections, self.config.nms_iou, self.config.top_k, height, width)
