"""Grounding DINO through transformers (``IDEA-Research/grounding-dino-tiny``, MM-Grounding-DINO checkpoints).

The phrases are joined into one prompt, ``"red car. child."``, as the model was trained. Instead of
decoding label strings back from token ids (fragile when phrases share words), every token is mapped to
the phrase whose characters it covers; a box's score for a phrase is the highest token probability inside
that phrase, and the box goes to its best phrase.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.config import GrounderConfig
from segvlm.grounding.base import Grounder, postprocess_detections
from segvlm.loading import load_pretrained
from segvlm.types import Detection


def build_prompt(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"a. b."`` and the (start, end) character span of each phrase in it."""
    text, spans = "", []
    for phrase in phrases:
        start = len(text)
        text += phrase.lower()
        spans.append((start, len(text)))
        text += ". "
    return text.strip(), spans


class GroundingDinoGrounder(Grounder):
    """Open-vocabulary boxes from Grounding DINO."""

    def __init__(self, model, processor, config: GrounderConfig, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device

    @classmethod
    def from_config(cls, config: GrounderConfig, device: str = "cpu") -> GroundingDinoGrounder:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        model = load_pretrained(AutoModelForZeroShotObjectDetection, config.model).to(device).eval()
        return cls(model, load_pretrained(AutoProcessor, config.model), config, device)

    def detect(self, image: np.ndarray, phrases: Sequence[str], query: str = "") -> list[Detection]:
        import torch

        height, width = image.shape[:2]
        text, spans = build_prompt(phrases)
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        token_phrase = np.full(len(offsets), -1)  # (T,) phrase index of each token, -1 for specials/dots
        for token, (start, end) in enumerate(offsets):
            for index, (span_start, span_end) in enumerate(spans):
                if end > start and start >= span_start and end <= span_end:
                    token_phrase[token] = index
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = outputs.logits[0].sigmoid().float().cpu().numpy()[:, : len(offsets)]  # (Q, T)
        boxes = outputs.pred_boxes[0].float().cpu().numpy()  # (Q, 4) normalised cx, cy, w, h
        per_phrase = np.stack(
            [
                probs[:, token_phrase == i].max(axis=1) if (token_phrase == i).any() else np.zeros(len(probs))
                for i in range(len(phrases))
            ],
            axis=1,
        )  # (Q, P)
        best = per_phrase.argmax(axis=1)  # (Q,)
        scores = per_phrase[np.arange(len(best)), best]  # (Q,)
        cx, cy, w, h = boxes.T
        xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
        detections = [
            Detection(tuple(float(v) for v in xyxy[q]), float(scores[q]), phrases[int(best[q])], query)
            for q in np.nonzero(scores >= self.config.box_threshold)[0]
        ]
        return postprocess_detections(detections, self.config.nms_iou, self.config.top_k, height, width)
