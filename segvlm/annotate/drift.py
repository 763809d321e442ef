"""Where a masklet probably drifted: the frames a reviewer should look at first.

Propagation fails quietly: a lost object becomes an empty mask, or a full-frame one (sam2 #242), or jumps to a
neighbour. These rules flag the frames where that likely happened, from each track's per-frame mask area and
segmenter score alone (no pixels are read), so the timeline can show them and a key can jump between them:

* ``lost``: the track had a mask on the previous frame and has none on this one;
* ``score_drop``: the segmenter's visibility score fell below ``low_score`` from at least ``high_score``;
* ``area_jump``: the mask's area changed by more than ``area_ratio`` times from the previous frame;
* ``covers_frame``: the mask covers more than ``cover_fraction`` of the frame (Label Studio's SAM 2 backend
  stops tracking at 70 %).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DriftRules:
    """Thresholds of the drift warnings (see the module docstring)."""

    high_score: float = 0.8
    low_score: float = 0.5
    area_ratio: float = 2.5
    min_area: int = 64  # area jumps of masks smaller than this are noise, not drift
    cover_fraction: float = 0.7


@dataclass(frozen=True)
class DriftWarning:
    """One frame of one track that probably needs a look.

    Attributes:
        position: processed-frame position.
        kind: ``"lost"``, ``"score_drop"``, ``"area_jump"`` or ``"covers_frame"``.
        detail: a short human-readable reason (``"area x3.1"``).
    """

    position: int
    kind: str
    detail: str


def track_warnings(
    areas: Sequence[int | None],
    scores: Sequence[float | None],
    frame_area: int,
    rules: DriftRules = DriftRules(),
) -> list[DriftWarning]:
    """Warnings for one track from its per-frame ``areas`` (None: no mask) and ``scores``, in frame order."""
    warnings: list[DriftWarning] = []
    previous_area: int | None = None
    previous_score: float | None = None
    for position, (area, score) in enumerate(zip(areas, scores)):
        if area is None:
            if previous_area is not None:
                warnings.append(DriftWarning(position, "lost", "mask gone"))
        else:
            if area > rules.cover_fraction * frame_area:
                warnings.append(DriftWarning(position, "covers_frame", f"{area / frame_area:.0%} of the frame"))
            elif previous_area is not None and max(area, previous_area) >= rules.min_area:
                ratio = max(area, 1) / max(previous_area, 1)
                if ratio > rules.area_ratio or ratio < 1 / rules.area_ratio:
                    warnings.append(DriftWarning(position, "area_jump", f"area x{ratio:.2g}"))
            if (
                score is not None
                and previous_score is not None
                and previous_score >= rules.high_score
                and score < rules.low_score
            ):
                warnings.append(DriftWarning(position, "score_drop", f"score {previous_score:.2f} -> {score:.2f}"))
        previous_area = area
        previous_score = score if area is not None else None
    return warnings
