"""oneDNN's fused and prepacked products on CPU, as ``torch.compile`` uses them, for the fast paths' linear layers.

Two things a plain ``nn.Linear`` in bf16 leaves on the table on CPU:

* the activation after a product (ReLU, the exact GELU) as a post-op on the float32 accumulator: one pass over
  the output instead of two, and one rounding instead of two;
* the weight in oneDNN's blocked layout, reordered once (:func:`pack`) instead of on every call: 3-5 % of a
  (4096, 256) x (256, 2048) product at two threads, and about 5 % of a SAM 2 frame over all its linear layers.

These are private torch operators (``torch.ops.mkldnn._linear_pointwise``, ``_reorder_linear_weight``), tried
once by :func:`available`: where they are missing or have changed, a :class:`Product` computes the same function
with ``F.linear`` and the activation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from segvlm.segmentation.fast_switch import derived, weights_key

POST_OPS = {"none": None, "relu": F.relu, "gelu": F.gelu}  # oneDNN's post-op name -> the function it applies


@functools.cache
def available() -> bool:
    """Whether oneDNN's fused convolution and linear products run here with the signatures segvlm calls: tried
    once on tiny bf16 inputs, so that a torch release that changes them turns the fusion off instead of failing
    a frame."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            x = torch.zeros(4, 2, dtype=torch.bfloat16)
            conv = nn.Conv2d(2, 2, 1).to(torch.bfloat16)
            torch.ops.mkldnn._convolution_pointwise(
                x.view(1, 2, 2, 2), conv.weight, conv.bias, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none"
            )
            layer = nn.Linear(2, 2).to(torch.bfloat16)
            torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "gelu", [], "none")
            torch.ops.mkldnn._linear_pointwise(x, pack(layer.weight, 4), layer.bias, "relu", [], "none")
    except (AttributeError, RuntimeError, TypeError):
        return False
    return True


def pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` (out, in) reordered into oneDNN's layout for products with about ``rows`` input rows (a hint:
    any row count works). An opaque tensor only ``_linear_pointwise`` reads; same values."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def fusable(x: torch.Tensor) -> bool:
    """Whether products with ``x`` go through oneDNN: a bf16 or fp16 CPU tensor with gradients off (oneDNN's
    products have no backward) where its operators are available and no dispatch mode (a flop counter, which
    cannot see them) is active. bf16 weights are also packed (:func:`pack`)."""
    return (
        x.dtype in (torch.bfloat16, torch.float16)
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and _get_current_dispatch_mode() is None
        and available()
    )


@dataclass
class Product:
    """A linear map, (out, in) ``weight`` and (out,) ``bias``, applied by oneDNN where :func:`fusable` (the weight
    packed on first use in bf16), else by ``F.linear`` and the activation (the same function)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    packed: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, post_op: str = "none") -> torch.Tensor:
        """``post_op(x W^T + b)`` for (..., in) ``x``, ``post_op`` one of :data:`POST_OPS`; (..., out) out."""
        if not (fusable(x) and self.weight.dtype == x.dtype):
            out = F.linear(x, self.weight, self.bias)
            if post_op == "relu" and not torch.is_grad_enabled():
                return out.relu_()  # the product's output is fresh: rectified in place, no second map
            activation = POST_OPS[post_op]
            return out if activation is None else activation(out)
        weight = self.weight
        if x.dtype == torch.bfloat16:
            if self.packed is None:
                self.packed = pack(self.weight, x.shape[:-1].numel())
            weight = self.packed
        flat = x.reshape(-1, x.shape[-1])  # (rows, in)
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, self.bias, post_op, [], "none")  # (rows, out)
        return out.view(*x.shape[:-1], out.shape[-1])


def linear(module: nn.Linear, x: torch.Tensor, post_op: str = "none") -> torch.Tensor:
    """``post_op(module(x))`` as a :class:`Product` of the module's weight and bias, kept for the module
    (:func:`~segvlm.segmentation.fast_switch.derived`) and rebuilt when either changes: a packed copy of the weight
    lives as long as the module."""
    key = weights_key(module.weight, module.bias)
    return derived(module, "product", key, lambda: Product(module.weight, module.bias))(x, post_op)
