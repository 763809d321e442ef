"""The dataset card (``README.md`` in the output): provenance, conventions and counts, in hub format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from segvlm.data.schema import SCHEMA_VERSION

CONVENTIONS = """\
- One row per still image or sampled video frame; `source` is the input's path relative to the inputs'
  common folder, `frame_index` its index in the source video before stride (0 for a still image).
- `regions[].mask` is COCO RLE (pycocotools compressed `counts`, column-major) with `size = [height, width]`
  of the stored image; decode with `pycocotools.mask.decode` or `segvlm.data.with_decoded_masks(ds)`.
- `regions[].bbox_xyxy` is `[x0, y0, x1, y1]` in pixels of the stored image (float32, box corners).
- `regions[].track_id` identifies an object across the frames of one source; `score` is the labeler's
  confidence in [0, 1] (1.0 for human annotations); `caption` comes from the caption templates.
- Video frames are stored re-encoded (see `image_format`); still images keep their original bytes."""


@dataclass
class CardInfo:
    """What the card reports.

    Attributes:
        title: the heading.
        labeler: which labeler made the masks (``preset:default``, an importer name...).
        rows, regions, sources, errors: counts.
        label_counts: regions per label.
        models: provenance from the labeler's results (models, thresholds), one entry per distinct value.
        settings: the build settings (query, stride, templates...).
        arrow_copy: the folder also holds the ``load_from_disk`` copy (which ``load_dataset`` refuses to read).
    """

    title: str
    labeler: str
    rows: int
    regions: int
    sources: int
    errors: int
    label_counts: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    arrow_copy: bool = True


def _loading(arrow_copy: bool) -> str:
    """The card's loading snippet: the call that works on this folder, and the one for its hub copy."""
    local = (
        'ds = datasets.load_from_disk("path/to/this/folder")    # this folder (it holds the arrow copy)'
        if arrow_copy
        else 'ds = datasets.load_dataset("path/to/this/folder", split="train")    # this folder'
    )
    return f"""```python
import datasets
from segvlm.data import with_decoded_masks

{local}
ds = datasets.load_dataset("user/name", split="train")  # a copy pushed with segvlm.data.push_to_hub
ds = with_decoded_masks(ds)                            # adds "masks": (N, H, W) bool per row, lazily
```"""


def render_card(info: CardInfo, max_labels: int = 50) -> str:
    """The card's markdown, with the YAML header that points ``load_dataset`` at ``data/*.parquet``."""
    labels = sorted(info.label_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    label_lines = "\n".join(f"| {name} | {count} |" for name, count in labels[:max_labels])
    if len(labels) > max_labels:
        label_lines += f"\n| ... {len(labels) - max_labels} more | |"
    models = json.dumps(info.models, indent=2, sort_keys=True, default=str) if info.models else "[]"
    settings = json.dumps(info.settings, indent=2, sort_keys=True, default=str)
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*.parquet
tags:
- segvlm
- segmentation
- referring-segmentation
---

# {info.title}

Mask-augmented image/frame dataset written by `segvlm.data` (schema version {SCHEMA_VERSION}).
Labeler: `{info.labeler}`.

## Counts

| what | count |
| --- | --- |
| rows (images and frames) | {info.rows} |
| regions | {info.regions} |
| sources labelled | {info.sources} |
| inputs skipped (see `errors.jsonl`) | {info.errors} |

| label | regions |
| --- | --- |
{label_lines if label_lines else "| (none) | 0 |"}

## Models and thresholds

```json
{models}
```

## Build settings

```json
{settings}
```

## Conventions

{CONVENTIONS}

## Loading

{_loading(info.arrow_copy)}
"""
