"""The image encoder's fast paths: SAM 2's Hiera (with its neck) and EdgeTAM's RepViT.

Patched onto a model's submodules by :func:`segvlm.segmentation.fast_sam2.install`, each inert unless the model's
:class:`~segvlm.segmentation.fast_switch.Switch` is on (a frame inside ``MemoryCache.active``).

Exact (bit-identical in any dtype):

* the image encoder's multi-scale attention computes, and throws away, a full attention-weight matrix before
  calling the attention kernel (4 x 4096 x 4096 scores in float32 for each global block); it is not computed;
* the image encoder's position embedding (a bicubic resize of a learnt table) and the neck's sine position
  encodings (an LRU cache of size 1 queried with three shapes per frame) are computed once per shape.

Reduced precision only (bf16/fp16; float32 keeps transformers' code path and its bits):

* the image encoder's global-attention blocks (4096 tokens) run through
  :func:`segvlm.segmentation.cpu_attention.attention` (bf16 GEMMs over query chunks with a float32 softmax,
  compiled);
* the Hiera blocks' MLPs with the first projection and its GELU as one oneDNN product; EdgeTAM's RepViT image
  encoder through a folded, channels-last copy with fused GELUs (:mod:`segvlm.segmentation.folded_backbone`).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from segvlm.segmentation import cpu_attention, onednn
from segvlm.segmentation.fast_switch import Switch, derived, weights_key

GLOBAL_TOKENS = 1024  # image-encoder attentions over this many keys (the global blocks) use the chunked kernel


def _multiscale_attention(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    """``Sam2MultiScaleAttention.forward`` without the attention weights it computes and never uses."""
    if not self._segvlm_switch.on:
        return type(self).forward(self, hidden_states, **kwargs)
    from transformers.models.sam2.modeling_sam2 import do_pool

    batch_size, height, width, _ = hidden_states.shape
    qkv = onednn.linear(self.qkv, hidden_states) if self._segvlm_switch.reduced else self.qkv(hidden_states)
    qkv = qkv.reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
    query, key, value = torch.unbind(qkv, 2)  # each (B, HW, heads, d)
    if self.query_stride:
        query = do_pool(query.reshape(batch_size, height, width, -1), self.query_stride)
        height, width = query.shape[1:3]
        query = query.reshape(batch_size, height * width, self.num_attention_heads, -1)
    query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # each (B, heads, L, d)
    if self._segvlm_switch.reduced and batch_size == 1 and key.shape[-2] >= GLOBAL_TOKENS:  # a global block
        output = cpu_attention.attention(query, key, value, self.scale)  # (B, heads, L, d)
    else:
        output = F.scaled_dot_product_attention(query, key, value, scale=self.scale)  # (B, heads, L, d)
    output = output.transpose(1, 2).contiguous().reshape(batch_size, height, width, -1)  # (B, H, W, C)
    return onednn.linear(self.proj, output) if self._segvlm_switch.reduced else self.proj(output)


def _cached_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
    """``Sam2HieraDetModel._get_pos_embed``, computed once per size while the fast paths are on."""
    original = type(self)._get_pos_embed
    if not self._segvlm_switch.on:
        return original(self, hw)
    key = (tuple(hw), self.pos_embed._version, self.pos_embed_window._version)
    cached = self._segvlm_pos_embeds.get(key)
    if cached is None:
        self._segvlm_pos_embeds.clear()
        cached = self._segvlm_pos_embeds[key] = original(self, hw)
    return cached


def _cached_sine(self, shape, device, dtype, mask=None) -> torch.Tensor:
    """``Sam2SinePositionEmbedding.forward``, computed once per (shape, device, dtype) while fast paths are on."""
    original = type(self).forward
    if mask is not None or not self._segvlm_switch.on:
        return original(self, shape, device, dtype, mask)
    key = (tuple(shape), str(device), dtype)
    cached = self._segvlm_encodings.get(key)
    if cached is None:
        cached = self._segvlm_encodings[key] = original(self, shape, device, dtype)
    return cached


def _folded_convolutions(self, pixel_values: torch.Tensor, **kwargs):
    """A timm convolutional backbone's ``forward`` (EdgeTAM's RepViT) through its inference copy
    (:func:`segvlm.segmentation.folded_backbone.fold`: folded batch norms, channels-last, fused GELUs; compiled
    with its weights frozen) while reduced-precision paths are on; built once per dtype. Same function, other
    rounding; CPU only."""
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or pixel_values.device.type != "cpu":
        return type(self).forward(self, pixel_values, **kwargs)
    folded = self._segvlm_folded.get(pixel_values.dtype)
    if folded is None:
        from segvlm.segmentation.folded_backbone import Frozen, fold

        folded = self._segvlm_folded[pixel_values.dtype] = Frozen(fold(self, pixel_values.dtype))
    return folded(pixel_values.contiguous(memory_format=torch.channels_last), **kwargs)


def _gelu_mlp(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """The Hiera blocks' two-layer GELU MLP (``Sam2FeedForward``) with its first projection and the GELU as one
    oneDNN product (the exact GELU as a post-op on the float32 accumulator: one rounding instead of two, and no
    second pass over the 4x-wide hidden map) while reduced-precision CPU paths are on."""
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or hidden_states.device.type != "cpu":
        return type(self).forward(self, hidden_states)
    hidden = onednn.linear(self.proj_in, hidden_states, "gelu")  # (..., 4C)
    return onednn.linear(self.proj_out, hidden)  # (..., C)


def _is_gelu_mlp(module) -> bool:
    """A two-layer ``Sam2FeedForward`` with the exact (erf) GELU, where oneDNN's fused product is available."""
    activation = getattr(module, "activation", None)
    return (
        module.num_layers == 2
        and not module.sigmoid_output
        and getattr(activation, "act", None) is F.gelu
        and onednn.available()
    )


# -- the neck's high-resolution levels (reduced precision) ------------------------------------------------------
def _pointwise(conv) -> bool:
    """A plain 1x1 convolution (stride 1, no padding, no groups, with a bias)."""
    return (
        type(conv) is torch.nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is not None
    )


def _composed(lateral: torch.nn.Conv2d, projection: torch.nn.Conv2d, dtype: torch.dtype):
    """``projection(lateral(x))`` of two 1x1 convolutions as one: its (C_out, C_in, 1, 1) weight and (C_out,) bias
    in ``dtype``, the product taken in float32 and rounded once; kept for ``lateral`` and rebuilt when a weight
    changes."""

    def compose() -> tuple[torch.Tensor, torch.Tensor]:
        outer = projection.weight.float()[:, :, 0, 0]  # (C_out, C)
        weight = outer @ lateral.weight.float()[:, :, 0, 0]  # (C_out, C_in)
        bias = outer @ lateral.bias.float() + projection.bias.float()  # (C_out,)
        return weight[:, :, None, None].to(dtype), bias.to(dtype)

    key = weights_key(lateral.weight, lateral.bias, projection.weight, projection.bias)
    return derived(lateral, ("composed", dtype), key, compose)


def _projected_lateral(self, x: torch.Tensor) -> torch.Tensor:
    """The neck's 1x1 lateral convolution of a high-resolution level followed by the mask decoder's projection of
    that level (``conv_s0``/``conv_s1``, which transformers applies right after the neck, in
    ``get_image_features``), as one 1x1 convolution while reduced-precision CPU paths are on.

    Both are linear, so ``P(L x + b_L) + b_P = (P L) x + (P b_L + b_P)``; the product is taken in float32 and
    rounded once. For level 0 of EdgeTAM this replaces a 48 -> 256 convolution at 256 x 256 (whose 33 MB output
    costs more to write than to compute) and a 256 -> 32 one by a 48 -> 32 one: about 10 ms of a frame at two
    threads. Same function, one rounding fewer; float32 keeps transformers' two convolutions and their bits."""
    switch: Switch = self._segvlm_switch
    if switch.on and switch.reduced and x.device.type == "cpu":
        (projection,) = self._segvlm_projection
        weight, bias = _composed(self, projection, x.dtype)
        return F.conv2d(x, weight, bias)  # (B, C_out, H, W): the level already projected
    return type(self).forward(self, x)


def _skip_if_projected(self, x: torch.Tensor) -> torch.Tensor:
    """The mask decoder's projection of a high-resolution level, passing a map through when the neck's
    :func:`_projected_lateral` has already projected it (it then has the projection's output channels)."""
    if x.shape[1] == self.out_channels != self.in_channels:
        return x
    return type(self).forward(self, x)


def compose_high_resolution_projections(model, switch: Switch) -> int:
    """Give a SAM 2 / EdgeTAM video model's neck the composed lateral-and-projection convolutions for its two
    high-resolution levels (those outside the top-down pathway, whose neck output only the projection reads).
    Returns the levels composed."""
    neck = getattr(getattr(model, "vision_encoder", None), "neck", None)
    decoder = getattr(model, "mask_decoder", None)
    if neck is None or decoder is None or not hasattr(neck, "convs"):
        return 0
    last, composed = len(neck.convs) - 1, 0
    for level, name in ((0, "conv_s0"), (1, "conv_s1")):
        lateral, projection = neck.convs[last - level], getattr(decoder, name, None)
        if (
            level in getattr(neck, "fpn_top_down_levels", [level])
            or not (_pointwise(lateral) and _pointwise(projection))
            or projection.in_channels != lateral.out_channels
        ):
            continue
        # Patched in place, as the other fast paths are: the model's modules and state-dict keys stay as loaded
        # (the projection is held in a tuple so that it is not registered as a submodule of the lateral).
        lateral._segvlm_switch, lateral._segvlm_projection = switch, (projection,)
        lateral.forward = types.MethodType(_projected_lateral, lateral)
        projection.forward = types.MethodType(_skip_if_projected, projection)
        composed += 1
    return composed
