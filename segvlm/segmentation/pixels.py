"""A frame as model input: the one place that turns an RGB array into pixel values on the model's device."""

from __future__ import annotations

import numpy as np


def pixel_values(processor, image: np.ndarray, device: str, dtype, memory_format=None):
    """(1, 3, S, S) pixel values of ``image`` (H, W, 3 uint8) from a transformers image processor, on ``device`` in
    ``dtype`` (and ``memory_format`` where given).

    On a GPU the frame goes there as bytes and is resized and normalised there, as transformers' own video loop
    does: on the CPU the 1024 x 1024 resize costs 20-50 ms a frame, more than a whole tracked frame of SAM 2.1
    hiera-tiny on an H200 (BENCHMARKS.md)."""
    import torch

    if not image.flags.writeable:  # frames shared with a FrameStore's cache; torch wants writable memory
        image = image.copy()
    on_device = {"device": device} if torch.device(device).type != "cpu" else {}
    inputs = processor(images=image, return_tensors="pt", **on_device)
    return inputs.pixel_values.to(device, dtype=dtype, memory_format=memory_format or torch.preserve_format)
