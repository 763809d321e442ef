"""The grounder kind of backend and the shared post-processing (threshold, per-phrase NMS, top-k)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from segvlm.backend import Backend
from segvlm.masks import box_iou_matrix
from segvlm.types import Detection

if TYPE_CHECKING:
    from segvlm.config import GrounderConfig


class Grounder(Backend):
    """Finds boxes for noun phrases in one RGB frame.

    Implementations run a detector and return every box above their threshold; :func:`postprocess_detections`
    applies NMS and top-k the same way for all of them. A grounder reads text and takes no prompts; its
    contract (``from_config``, ``Options``, ``models``) is :class:`segvlm.backend.Backend`'s.
    """

    kind: ClassVar[str] = "grounder"
    supports_text: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def from_config(cls, config: GrounderConfig, device: str = "cpu") -> Grounder:
        """Build the grounder from ``config`` (its ``model``, thresholds and ``options``) on ``device``."""

    @abstractmethod
    def detect(self, image: np.ndarray, phrases: Sequence[str], query: str = "") -> list[Detection]:
        """Boxes for ``phrases`` in an (H, W, 3) uint8 RGB ``image``, in original pixels, best first.

        Each detection's ``label`` is one of ``phrases`` and its ``phrase`` the words ``query`` used for it
        (:func:`segvlm.query.source_phrases`). A phrase longer than the model's text limit is cut to fit with a
        warning (:class:`segvlm.query.TextLimit`), never passed on to fail inside the model.
        """


def postprocess_detections(
    detections: list[Detection], nms_iou: float, top_k: int, height: int, width: int
) -> list[Detection]:
    """Clip boxes to the frame, drop degenerate ones, run NMS per label and keep ``top_k`` per label."""
    kept: list[Detection] = []
    for label in dict.fromkeys(d.label for d in detections):
        group = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
        boxes = np.asarray([d.box_xyxy for d in group], dtype=np.float64).reshape(-1, 4)  # (N, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        valid = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        ious = box_iou_matrix(boxes, boxes)  # (N, N)
        chosen: list[int] = []
        for index in range(len(group)):
            if not valid[index] or any(ious[index, other] > nms_iou for other in chosen):
                continue
            chosen.append(index)
            if len(chosen) == top_k:
                break
        kept.extend(
            Detection(
                box_xyxy=tuple(float(v) for v in boxes[i]), score=group[i].score, label=label, phrase=group[i].phrase
            )
            for i in chosen
        )
    return sorted(kept, key=lambda d: -d.score)
