"""An inference copy of a timm convolutional backbone (EdgeTAM's RepViT-M1), built for reduced precision on CPU.

Where the released EdgeTAM's image encoder spends its time in bf16 on CPU: about 60 % in convolutions that
oneDNN runs on channels-first inputs (reordering each one), a quarter in GELUs computed as separate passes over
bf16 maps, the rest in batch norms and the parallel branches of RepViT's re-parameterisable blocks. The copy
computes the same function with:

* every batch norm and parallel branch folded into one convolution (``timm.utils.reparameterize_model``, the
  folding done in float32 and the result cast to the compute dtype);
* channels-last memory throughout, the layout oneDNN's bf16 convolutions work in;
* each convolution followed by an exact GELU fused with it (oneDNN's GELU post-op on the float32 accumulator,
  rounded once instead of twice);
* run as one inductor graph with its weights frozen as constants (:class:`Frozen`): convolution weights packed
  for oneDNN once, each squeeze-excitation gate (sigmoid and product) one pass (about 5 % of the encoder;
  compiled on a process's first frame: about 6 s the first time on a machine, 2 s with torch's disk cache).

Same function, other rounding: results agree with the plain backbone within bf16 rounding (tested), never
bit-for-bit, so :mod:`segvlm.segmentation.fast_image_encoder` uses the copy only on reduced-precision CPU frames.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from segvlm.segmentation import onednn


class ConvGelu(nn.Module):
    """``gelu(conv(x))`` as one oneDNN convolution with a GELU post-op (CPU)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups, "gelu", [], "none"
        )


def _fusable(conv: nn.Module, act: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(conv.padding, tuple)
        and type(act) is nn.GELU
        and act.approximate == "none"
    )


def fuse_conv_gelu(module: nn.Module) -> int:
    """Replace each ``conv -> GELU`` pair held as sibling attributes (timm's ``conv1``/``act`` of RepViT's MLP,
    ``conv1``/``act1`` of its stem) with :class:`ConvGelu` and an identity, in place. Returns the pairs fused."""
    fused = 0
    for child in list(module.modules()):
        for conv_name, act_name in (("conv1", "act"), ("conv1", "act1")):
            conv, act = getattr(child, conv_name, None), getattr(child, act_name, None)
            if conv is not None and act is not None and _fusable(conv, act):
                setattr(child, conv_name, ConvGelu(conv))
                setattr(child, act_name, nn.Identity())
                fused += 1
    return fused


class Frozen:
    """A folded backbone called through ``torch.compile`` with ``freezing`` (its parameters become constants of the
    graph: a snapshot, as the folded copy already is) while gradients are off; the eager copy where gradients are
    on, where compiled code cannot run here (:func:`segvlm.segmentation.cpu_attention.compilable`) or where this
    graph failed to compile (said once; the other compiled paths are not affected).

    Compiled for one input shape (``dynamic=False``: the model's input size is fixed); the first call compiles,
    about 6 s the first time on a machine and 2 s with torch's disk cache, which pays for itself after a few
    hundred frames (about 3 ms a frame at two threads)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.compiled = None
        self.failed: str | None = None

    def __call__(self, pixels: torch.Tensor, **kwargs):
        from segvlm.segmentation.cpu_attention import compilable

        if kwargs or torch.is_grad_enabled() or self.failed or not compilable():
            return self.module(pixels, **kwargs)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.module, dynamic=False, options={"freezing": True})
            return self.compiled(pixels)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: the eager copy
            self.failed = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            warnings.warn(
                f"segvlm could not compile EdgeTAM's image encoder ({self.failed}); running its eager copy instead "
                "(slower, same results).",
                RuntimeWarning,
                stacklevel=2,
            )
        return self.module(pixels)


def fold(backbone: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The inference copy of ``backbone`` (left untouched) in ``dtype`` and channels-last memory.

    The copy's own ``forward`` is timm's: an instance-level ``forward`` (a patched method) is not copied.
    """
    from timm.utils import reparameterize_model

    plain = copy.deepcopy(backbone).float()
    vars(plain).pop("forward", None)
    folded = reparameterize_model(plain, inplace=True)
    if onednn.available():
        fuse_conv_gelu(folded)
    return folded.to(dtype).to(memory_format=torch.channels_last).eval()
