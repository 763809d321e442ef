"""The per-model switch of the fast paths, the names of the attributes that hold it, and the cache of values
the fast paths derive from a module's weights.

:func:`segvlm.segmentation.fast_sam2.install` gives a model one :class:`Switch` and hands the same object to every
submodule it patches; each patched ``forward`` reads it to choose between its fast path and transformers' own
code. :class:`~segvlm.segmentation.fast_sam2.MemoryCache` turns it on for one frame (``with
MemoryCache().active(model):``), so outside such a block the model computes exactly as before. It lives in a
module of its own so that :mod:`~segvlm.segmentation.fast_sam2`, which imports the patched paths of
:mod:`~segvlm.segmentation.fast_image_encoder` and :mod:`~segvlm.segmentation.fast_decoders`, and those modules
share it without an import cycle.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

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


_derived: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {name: (key, value)}


def derived(owner: torch.nn.Module, name: Hashable, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()``, kept for ``owner`` under ``name`` and reused while ``key`` (see :func:`weights_key`) is unchanged:
    a composed, stacked or packed weight, a positional table. Held beside the module, not on it, for as long as
    the module lives: copying or saving the module never meets these values (oneDNN's packed weights cannot be
    copied)."""
    held = _derived.setdefault(owner, {})
    entry = held.get(name)
    if entry is None or entry[0] != key:
        entry = held[name] = (key, build())
    return entry[1]


def weights_key(*tensors: torch.Tensor | None) -> tuple:
    """What identifies the values of ``tensors`` for :func:`derived`: each one's storage, dtype, device, shape and
    version (bumped by in-place changes; not by writes through ``.data``). Inference tensors have no version;
    their values cannot change outside inference mode."""

    def version(tensor: torch.Tensor) -> int:
        try:
            return tensor._version
        except RuntimeError:  # an inference tensor
            return -1

    return tuple(None if t is None else (t.data_ptr(), t.dtype, t.device, tuple(t.shape), version(t)) for t in tensors)
