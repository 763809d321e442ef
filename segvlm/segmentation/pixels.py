"""A frame as model input: the one place that turns an RGB array into pixel values on the model's device.

The SAM-family processors resize the uint8 frame (bilinear, antialiased) to a fixed square, then compute
``(x - mean) / std`` in float32 and stack the result into a batch; the session then casts it to its dtype and
memory layout. On a reduced-precision CPU session the same arithmetic runs here as the resize and one compiled
pass that writes the cast map (no float32 batch copy, no separate cast): the same bits, checked on the first
frame against the processor (which is used from then on where they differ); about 3.5 ms instead of 8.7 ms
for a 540 x 960 frame to a 1024 x 1024 channels-last bf16 map on one thread. On a GPU the frame goes there as
bytes and the processor resizes and normalises it there, as transformers' own video loop does: on the CPU that
costs more than a whole tracked frame of SAM 2.1 hiera-tiny on an H200 (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_PLAN = "_segvlm_pixel_plan"  # on a processor: its checked _Resize, or False where the processor must run
BILINEAR = 2  # PIL's and transformers' code for bilinear resampling


def pixel_values(processor, image: np.ndarray, device: str, dtype, memory_format=None):
    """(1, 3, S, S) pixel values of ``image`` (H, W, 3 uint8) from a transformers image processor, on ``device`` in
    ``dtype`` (and ``memory_format`` where given)."""
    import torch

    from segvlm.segmentation.cpu_attention import reduced

    image = writable(image)
    memory_format = memory_format or torch.preserve_format
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu and reduced(dtype) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        plan = _checked_plan(processor, image, dtype, memory_format)
        if plan:
            return plan.apply(image, dtype, memory_format)
    return _processed(processor, image, device, dtype, memory_format)


def writable(image: np.ndarray) -> np.ndarray:
    """``image``, or a copy where it is read-only (frames shared with a FrameStore's cache, arrays viewed from PIL
    images): processors turn it into a tensor, and torch warns about, and must not write to, read-only memory."""
    return image if image.flags.writeable else image.copy()


def _processed(processor, image: np.ndarray, device: str, dtype, memory_format):
    """The processor's pixel values, moved and cast; on a GPU the processor works there."""
    import torch

    on_device = {"device": device} if torch.device(device).type != "cpu" else {}
    inputs = processor(images=image, return_tensors="pt", **on_device)
    return inputs.pixel_values.to(device, dtype=dtype, memory_format=memory_format)


@dataclass(frozen=True)
class _Resize:
    """What the processor does to a frame: an antialiased bilinear resize to (height, width), then ``(x - mean) /
    std`` per channel in float32, ``mean`` and ``std`` (3, 1, 1) scaled to the 0-255 range as the processor
    scales them."""

    height: int
    width: int
    mean: object  # torch.Tensor (3, 1, 1) float32
    std: object  # torch.Tensor (3, 1, 1) float32

    def apply(self, image: np.ndarray, dtype, memory_format):
        import torch
        import torch.nn.functional as F

        from segvlm.segmentation.cpu_attention import one_pass

        frame = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W) uint8
        size = (self.height, self.width)
        resized = F.interpolate(frame, size=size, mode="bilinear", antialias=True, align_corners=False)  # uint8
        pixels = one_pass(_normalised, resized, self.mean, self.std, dtype)  # (1, 3, S, S)
        # Channels-first through the pass, then one copy to another layout: twice as fast as the pass writing
        # channels-last from a channels-last resize (3.4 against 7.5 ms on one thread).
        return pixels if memory_format is torch.preserve_format else pixels.contiguous(memory_format=memory_format)


def _normalised(resized, mean, std, dtype):
    """``(resized - mean) / std`` in float32, rounded once to ``dtype``."""
    return ((resized.float() - mean) / std).to(dtype)


def _plan(processor) -> _Resize | None:
    """The processor's steps as a :class:`_Resize`, where its settings are exactly those; else None."""
    import torch

    settings = getattr(processor, "image_processor", processor)
    try:
        size = settings.size
        steps_match = (
            settings.do_resize
            and settings.do_rescale
            and settings.do_normalize
            and int(settings.resample) == BILINEAR
            and not getattr(settings, "do_pad", False)
            and size.height
            and size.width
        )
        if not steps_match:
            return None
        scale = 1 / settings.rescale_factor
        mean = (torch.tensor(settings.image_mean, dtype=torch.float32) * scale).view(3, 1, 1)
        std = (torch.tensor(settings.image_std, dtype=torch.float32) * scale).view(3, 1, 1)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    return _Resize(int(size.height), int(size.width), mean, std)


def _checked_plan(processor, image: np.ndarray, dtype, memory_format) -> _Resize | None:
    """The processor's :class:`_Resize`, once its output on ``image`` was found equal to the processor's (checked
    on the first frame a processor sees; the verdict is kept on the processor)."""
    import torch

    plan = getattr(processor, _PLAN, None)
    if plan is None:
        plan = _plan(processor)
        if plan is not None:
            expected = _processed(processor, image, "cpu", dtype, memory_format)
            plan = plan if torch.equal(plan.apply(image, dtype, memory_format), expected) else None
        try:
            setattr(processor, _PLAN, plan or False)
        except AttributeError:  # a processor that takes no attributes: check again next time
            pass
    return plan or None
