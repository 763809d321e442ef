"""Conversion between :class:`segvlm.FrameResult` and ``supervision.Detections`` (extra: ``segvlm[supervision]``).

Detections carry ``xyxy``, ``mask`` (N, H, W), ``confidence``, ``tracker_id``, ``class_id`` (index of the
label among the frame's labels, in order of appearance) and ``data`` with ``class_name`` and ``phrase``
arrays, the keys supervision's annotators read for labels.
"""

from __future__ import annotations

import numpy as np

from segvlm.masks import RLE
from segvlm.types import FrameResult, ObjectMask


def _require_supervision():
    try:
        import supervision
    except ImportError as error:
        raise ImportError("supervision is not installed; pip install 'segvlm[supervision]'") from error
    return supervision


def to_detections(frame: FrameResult):
    """One frame as ``supervision.Detections``."""
    sv = _require_supervision()
    labels = [obj.label for obj in frame]
    classes = list(dict.fromkeys(labels))
    return sv.Detections(
        xyxy=frame.boxes().reshape(-1, 4),
        mask=frame.masks(),
        confidence=np.asarray([obj.score for obj in frame], dtype=np.float64),
        class_id=np.asarray([classes.index(label) for label in labels], dtype=int),
        tracker_id=np.asarray(frame.track_ids, dtype=int),
        data={
            "class_name": np.asarray(labels, dtype=object),
            "phrase": np.asarray([obj.phrase for obj in frame], dtype=object),
        },
    )


def from_detections(detections, frame_index: int, height: int, width: int) -> FrameResult:
    """A frame from ``supervision.Detections``; masks are required, ids default to 1..N."""
    if detections.mask is None:
        raise ValueError("these Detections have no masks; segvlm results need masks (run a segmenter first)")
    count = len(detections)
    track_ids = detections.tracker_id if detections.tracker_id is not None else np.arange(1, count + 1)
    confidence = detections.confidence if detections.confidence is not None else np.ones(count)
    names = detections.data.get("class_name") if detections.data else None
    phrases = detections.data.get("phrase") if detections.data else None
    objects = []
    for i in range(count):
        mask = np.asarray(detections.mask[i], dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"mask {i} has shape {mask.shape}, expected {(height, width)} (the frame size)")
        label = (
            str(names[i])
            if names is not None
            else str(int(detections.class_id[i]) if detections.class_id is not None else "object")
        )
        rle = RLE.encode(mask)
        objects.append(
            ObjectMask(
                track_id=int(track_ids[i]),
                label=label,
                phrase=str(phrases[i]) if phrases is not None else label,
                score=float(confidence[i]),
                box_xyxy=tuple(float(v) for v in detections.xyxy[i]),
                rle=rle,
            )
        )
    return FrameResult(frame_index, height, width, None, sorted(objects, key=lambda obj: obj.track_id))
