"""Re-rank grounded boxes with open_clip against the phrases they were found for.

Detectors blur attributes: asked for "red car" they also box the blue one. CLIP reads attributes well, so
each candidate crop is scored against its own phrase and the scores are compared *across the candidates of
that phrase*: the softmax over candidates (``logit_scale * cosine``) divided by its maximum gives each
candidate's CLIP preference in (0, 1], 1 for the best match. The final score mixes it with the detector's:
``(1 - weight) * detector + weight * preference``; candidates below ``min_score`` are dropped.

Each candidate is scored against its label (the grounded phrase, ``"a photo of a <label>"``); its ``phrase``
(the query's own words) is passed through unchanged. open_clip truncates text beyond the model's context
length silently; here a label that does not fit is cut by :class:`segvlm.query.TextLimit`, which says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segvlm.config import RerankerConfig
from segvlm.loading import ModelWeights
from segvlm.query import TextLimit
from segvlm.resolve import resolve_model
from segvlm.types import Detection


def _prompt(label: str) -> str:
    return f"a photo of a {label}"


def clip_text_limit(tokenizer, model) -> TextLimit | None:
    """A :class:`TextLimit` for an open_clip tokenizer (its own count of the prompt's tokens), or None when the
    tokenizer is of a kind whose length cannot be counted (it then truncates silently, as open_clip does)."""
    limit = getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None)
    clean = getattr(tokenizer, "clean_fn", None) or (lambda text: text)
    if not limit:
        return None
    if callable(getattr(tokenizer, "encode", None)) and hasattr(tokenizer, "sot_token_id"):  # SimpleTokenizer
        return TextLimit("CLIP", limit, lambda label: len(tokenizer.encode(clean(_prompt(label)))) + 2)
    inner = getattr(tokenizer, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
    if callable(inner):
        return TextLimit("CLIP", limit, lambda label: len(inner(clean(_prompt(label)))["input_ids"]))
    return None


def crop(image: np.ndarray, box, context: float = 0.1) -> np.ndarray:
    """The box's region with ``context`` of its size added on each side, clipped to the image."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    pad_x, pad_y = (x1 - x0) * context, (y1 - y0) * context
    left, top = int(max(0, x0 - pad_x)), int(max(0, y0 - pad_y))
    right, bottom = int(min(width, np.ceil(x1 + pad_x))), int(min(height, np.ceil(y1 + pad_y)))
    return image[top : max(bottom, top + 1), left : max(right, left + 1)]


class ClipReranker:
    """Scores detections with an open_clip model: a named model + pretrained tag, ``hf-hub:`` id, or folder."""

    def __init__(self, model, preprocess, tokenizer, config: RerankerConfig, device: str = "cpu"):
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.text_limit = clip_text_limit(tokenizer, model)
        self.weights: ModelWeights | None = None  # set by from_config

    @property
    def random_weights(self) -> bool:
        """True when the CLIP weights are random (a ``tiny-random:`` model)."""
        return bool(self.weights is not None and self.weights.random)

    @classmethod
    def from_config(cls, config: RerankerConfig, device: str = "cpu") -> ClipReranker:
        import open_clip

        name = resolve_model(config.model)
        pretrained = config.pretrained
        if Path(name).is_dir():
            name, pretrained = f"local-dir:{name}", None
        elif name.startswith("hf-hub:"):
            pretrained = None
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        reranker = cls(model.eval(), preprocess, open_clip.get_tokenizer(name), config, device)
        reranker.weights = ModelWeights.of(config.model)
        return reranker

    def image_embeddings(self, crops: list[np.ndarray]) -> np.ndarray:
        """Unit-norm CLIP embeddings of RGB crops: an (N, D) float32 array (used for re-identification too)."""
        import torch
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(c)) for c in crops]).to(self.device)  # (N, 3, S, S)
        with torch.inference_mode():
            features = self.model.encode_image(pixels)  # (N, D)
            features = features / features.norm(dim=-1, keepdim=True)
        return features.float().cpu().numpy()

    def similarities(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """``logit_scale * cosine(crop_i, label_i)`` for every detection: an (N,) array."""
        import torch

        image_features = self.image_embeddings([crop(image, d.box_xyxy) for d in detections])  # (N, D)
        labels = [d.label for d in detections]
        phrases = list(dict.fromkeys(labels))
        with torch.inference_mode():
            texts = [fitted.text for fitted in self.text_limit.fit(phrases)] if self.text_limit else phrases
            tokens = self.tokenizer([_prompt(text) for text in texts]).to(self.device)
            text_features = self.model.encode_text(tokens)  # (P, D)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            scale = float(self.model.logit_scale.exp())
        cosine = image_features @ text_features.float().cpu().numpy().T  # (N, P)
        own = cosine[np.arange(len(detections)), [phrases.index(label) for label in labels]]  # (N,)
        return (scale * own).astype(np.float32)

    def rerank(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """Detections with re-ranked scores, best first; those under ``min_score`` are dropped."""
        if not detections:
            return []
        logits = self.similarities(image, detections)
        scores = np.empty(len(detections), dtype=np.float64)
        for label in {d.label for d in detections}:
            members = np.array([d.label == label for d in detections])
            group = logits[members] - logits[members].max()
            preference = np.exp(group) / np.exp(group).sum()  # softmax over this phrase's candidates
            scores[members] = preference / preference.max()
        weight = self.config.weight
        reranked = [
            Detection(d.box_xyxy, float((1 - weight) * d.score + weight * s), d.label, d.phrase)
            for d, s in zip(detections, scores)
        ]
        return sorted((d for d in reranked if d.score >= self.config.min_score), key=lambda d: -d.score)
