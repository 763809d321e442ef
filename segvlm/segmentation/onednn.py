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
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

POST_OPS = {"none": None, "relu": F.relu, "gelu": F.gelu}  # oneDNN's post-op name -> the function it applies

_products: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # nn.Linear -> (weight key, Product)


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


def packable(x: torch.Tensor) -> bool:
    """Whether products with ``x`` take the packed path: a bf16 CPU tensor where oneDNN's products are available."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu" and available()


@dataclass
class Product:
    """A linear map, (out, in) ``weight`` and (out,) ``bias``, applied by oneDNN with the weight packed on first use
    where :func:`packable`, else by ``F.linear`` (the same function)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    packed: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, post_op: str = "none") -> torch.Tensor:
        """``post_op(x W^T + b)`` for (..., in) ``x``, ``post_op`` one of :data:`POST_OPS`; (..., out) out. Under a
        dispatch mode (a flop counter) the plain product runs, which the mode can see."""
        if not (packable(x) and self.weight.dtype == x.dtype) or _get_current_dispatch_mode() is not None:
            out = F.linear(x, self.weight, self.bias)
            activation = POST_OPS[post_op]
            return out if activation is None else activation(out)
        if self.packed is None:
            self.packed = pack(self.weight, x.shape[:-1].numel())
        flat = x.reshape(-1, x.shape[-1])  # (rows, in)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, post_op, [], "none")  # (rows, out)
        return out.view(*x.shape[:-1], out.shape[-1])


def linear(module: nn.Linear, x: torch.Tensor, post_op: str = "none") -> torch.Tensor:
    """``post_op(module(x))`` as a :class:`Product` of the module's weight, packed once per module (again when the
    weight changes)."""
    weight = module.weight
    key = (weight.dtype, weight.device, weight.data_ptr(), weight._version)
    cached = _products.get(module)
    if cached is None or cached[0] != key:
        cached = _products[module] = (key, Product(weight, module.bias))
    return cached[1](x, post_op)
