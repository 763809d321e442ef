"""Grounding DINO through transformers (``IDEA-Research/grounding-dino-tiny``, MM-Grounding-DINO checkpoints).

The phrases are joined into one prompt, ``"red car. child."``, as the model was trained. Instead of
decoding label strings back from token ids (fragile when phrases share words), every token is mapped to
the phrase whose characters it covers; a box's score for a phrase is the highest token probability inside
that phrase, and the box goes to its best phrase.

The model reads at most ``config.max_text_len`` tokens (256 for the released checkpoints) for the whole
prompt. Phrases that do not fit in one prompt are split over several prompts, each run on the same image
(so 300 short phrases cost a few forward passes instead of an error); a single phrase longer than the limit
is cut to fit, with a warning (:class:`segvlm.query.TextLimit`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.backend import ModelFamily
from segvlm.config import GrounderConfig
from segvlm.grounding.base import Grounder, postprocess_detections
from segvlm.loading import load_model
from segvlm.query import TextLimit, source_phrases
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

    models = ModelFamily(
        "IDEA-Research/grounding-dino-tiny",
        "tiny-random:grounding-dino",
        frozenset({"grounding-dino"}),
        frozenset({"grounding-dino", "mm-grounding-dino"}),
    )

    def __init__(self, model, processor, config: GrounderConfig, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.max_tokens = int(model.config.max_text_len)
        self.text_limit = TextLimit(
            "Grounding DINO",
            self.max_tokens,
            lambda phrase: self.prompt_tokens(build_prompt([phrase])[0]),
            "per prompt",
        )

    @classmethod
    def from_config(cls, config: GrounderConfig, device: str = "cpu") -> GroundingDinoGrounder:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        cls.options_from(config)  # an unknown option is refused before the weights load
        loaded = load_model(AutoModelForZeroShotObjectDetection, AutoProcessor, config.model, device)
        grounder = cls(loaded.model, loaded.processor, config, device)
        grounder.weights = loaded.weights
        return grounder

    def prompt_tokens(self, text: str) -> int:
        """Tokens the model reads for a prompt, special tokens included."""
        return len(self.processor.tokenizer(text)["input_ids"])

    def prompt_groups(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices of ``texts`` grouped so that each group's joined prompt fits ``max_text_len`` tokens.

        Groups are filled greedily in order; every group's prompt is checked with the tokenizer itself, and
        one that does not fit after all (tokens that merge across phrases) is split in two.
        """
        groups: list[list[int]] = []
        current: list[int] = []
        used = 2  # [CLS] and [SEP]
        for index, text in enumerate(texts):
            cost = self.prompt_tokens(build_prompt([text])[0]) - 2  # the phrase and its "."
            if current and used + cost > self.max_tokens:
                groups.append(current)
                current, used = [], 2
            current.append(index)
            used += cost
        if current:
            groups.append(current)
        checked: list[list[int]] = []
        while groups:
            group = groups.pop(0)
            if len(group) > 1 and self.prompt_tokens(build_prompt([texts[i] for i in group])[0]) > self.max_tokens:
                half = len(group) // 2
                groups[:0] = [group[:half], group[half:]]
            else:
                checked.append(group)
        return checked

    def detect(self, image: np.ndarray, phrases: Sequence[str], query: str = "") -> list[Detection]:
        height, width = image.shape[:2]
        texts = [fitted.text for fitted in self.text_limit.fit(phrases)]
        sources = source_phrases(query, phrases)
        detections: list[Detection] = []
        for group in self.prompt_groups(texts):
            for q_box, score, member in self._detect_group(image, [texts[i] for i in group]):
                index = group[member]
                detections.append(Detection(q_box, score, phrases[index], sources[index]))
        return postprocess_detections(detections, self.config.nms_iou, self.config.top_k, height, width)

    def _detect_group(self, image: np.ndarray, texts: list[str]) -> list[tuple[tuple[float, ...], float, int]]:
        """(box, score, index into ``texts``) of every query box above the threshold, for one prompt."""
        import torch

        from segvlm.segmentation.pixels import writable

        height, width = image.shape[:2]
        text, spans = build_prompt(texts)
        inputs = self.processor(images=writable(image), text=text, return_tensors="pt").to(self.device)
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
                for i in range(len(texts))
            ],
            axis=1,
        )  # (Q, P)
        best = per_phrase.argmax(axis=1)  # (Q,)
        scores = per_phrase[np.arange(len(best)), best]  # (Q,)
        cx, cy, w, h = boxes.T
        xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
        return [
            (tuple(float(v) for v in xyxy[q]), float(scores[q]), int(best[q]))
            for q in np.nonzero(scores >= self.config.box_threshold)[0]
        ]
