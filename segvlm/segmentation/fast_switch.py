"""The per-model switch of the fast paths, and the names of the attributes that hold it.

:func:`segvlm.segmentation.fast_sam2.install` gives a model one :class:`Switch` and hands the same object to every
submodule it patches; each patched ``forward`` reads it to choose between its fast path and transformers' own
code. :class:`~segvlm.segmentation.fast_sam2.MemoryCache` turns it on for one frame (``with
MemoryCache().active(model):``), so outside such a block the model computes exactly as before. It lives in a
module of its own so that :mod:`~segvlm.segmentation.fast_sam2`, which imports the patched paths of
:mod:`~segvlm.segmentation.fast_image_encoder` and :mod:`~segvlm.segmentation.fast_decoders`, and those modules
share it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CACHE_ATTRIBUTE = "_segvlm_memory_cache"  # the active MemoryCache of a model, or None
SWITCH_ATTRIBUTE = "_segvlm_fast_switch"  # the model's Switch, shared with its patched submodules


@dataclass
class Switch:
    """Whether a model's fast paths are on (a frame runs inside ``MemoryCache.active``) and in what precision."""

    on: bool = False
    reduced: bool = False  # bf16/fp16 session: the memory attention's approximate paths apply
    # Results the frame's objects share, kept for the frame: module id -> (input, output) of the memory
    # attention's self-attention, whose input is the same for every object in the first layer.
    shared: dict = field(default_factory=dict)
