"""Faster SAM 2 frames: exact savings in the image encoder, and a memory attention built for reduced precision.

Where a tracked SAM 2 frame spends its time on CPU (hiera-tiny, bf16, BENCHMARKS.md): about half in the four
memory cross-attentions (4096 queries x ~29 k memory keys, one head of width 256), a third in the image
encoder, the rest in the memory self-attentions, projections and the decoders. The fast paths change how that
work is done, never what is computed. They live in four modules, with three helpers:

* this one: the memory attention, the memory-attention MLP, :class:`MemoryCache` and :func:`install`;
* :mod:`segvlm.segmentation.fast_image_encoder`: the image encoder (Hiera and its neck, EdgeTAM's RepViT);
* :mod:`segvlm.segmentation.fast_decoders`: the memory encoder, the mask decoder and the tracked frame's
  ``_single_frame_forward``;
* :mod:`segvlm.segmentation.fast_switch`: the per-model :class:`~segvlm.segmentation.fast_switch.Switch` they
  all read;
* helpers: :mod:`segvlm.segmentation.cpu_attention` (the chunked attention kernel, compiled elementwise passes),
  :mod:`segvlm.segmentation.onednn` (linear layers with packed weights and fused activations),
  :mod:`segvlm.segmentation.folded_backbone` (EdgeTAM's RepViT as a folded, compiled inference copy).

This module's paths, reduced precision only (bf16/fp16; float32 keeps transformers' code path and its bits):

* memory keys: a memory frame's features never change once written, so each frame's key projection and
  rotary encoding are computed once and cached (:class:`MemoryCache`); the temporal encoding, which depends
  on the frame's distance to the current frame, enters as a separate linear term (``k_proj`` and RoPE are
  linear: ``RoPE(k_proj(m + p + t)) = RoPE(k_proj(m + p)) + RoPE(W_k t)``);
* memory values after the attention: the values are ``v_proj`` of 64-wide memory features, and softmax rows
  sum to one, so ``softmax(QK^T)(M W_v^T + b) = (softmax(QK^T) M) W_v^T + b``: the second attention product
  is 64 wide instead of 256 (4x fewer FLOPs); ``v_proj`` and ``o_proj`` then compose into one (C, C_mem)
  product;
* EdgeTAM's memory keys without RoPE (each memory frame's 1-D perceiver latents and the object pointers, half of
  them): ``q . (W_k m + b) = (q W_k) . m + q . b``, so their scores are computed at the memory's width of 64
  (:class:`~segvlm.segmentation.cpu_attention.NarrowKeys`);
* both memory attentions (self and cross) run through :func:`segvlm.segmentation.cpu_attention.attention`
  (EdgeTAM's cross-attention through its two-key-set form, ``attention_with_narrow_keys``):
  bf16 GEMMs over query chunks with a float32 softmax, compiled, 1.5-3x the rate of the CPU flash kernel on
  these shapes; their RoPE (float32, rounded back) in one compiled pass, and the temporal term of the memory
  keys computed once per session;
* the self-attention's q, k and v projections as one stacked product; the projections and MLPs through oneDNN
  with packed weights (:mod:`segvlm.segmentation.onednn`), the MLP's ReLU fused into its first product.

Exact in every dtype: the memory-attention MLP's ReLU runs in place on its fresh hidden map.

All of it is switched on per frame: :func:`install` adds the paths to a model, inert until a frame runs inside
``with MemoryCache().active(model):``. Outside such a block (transformers' own loop on the same model, for
instance) the model computes exactly as before.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segvlm.segmentation import cpu_attention, onednn
from segvlm.segmentation.fast_decoders import (
    _few_keys_attention,
    _fuser_block,
    _is_fuser_block,
    _is_norm_gelu_layer,
    _mask_decoder,
    _mask_downsampler_layer,
    _memory_encoder,
    _tracking_frame,
)
from segvlm.segmentation.fast_image_encoder import (
    _cached_pos_embed,
    _cached_sine,
    _folded_convolutions,
    _gelu_mlp,
    _is_gelu_mlp,
    _multiscale_attention,
    compose_high_resolution_projections,
)
from segvlm.segmentation.fast_switch import CACHE_ATTRIBUTE, SWITCH_ATTRIBUTE, Switch, derived, weights_key


@dataclass
class _FrameEntry:
    """Cached per-layer keys of one memory frame (kept while its features tensor is alive)."""

    features: weakref.ref
    last_used: int
    keys: list[torch.Tensor]  # per layer: (B, heads, HW, head_dim), RoPE applied, temporal term excluded
    values: torch.Tensor  # (B, 1, HW, C_mem): the memory features the values are projected from


@dataclass
class MemoryCache:
    """Key projections of memory frames, keyed by the identity of the frame's ``maskmem_features`` tensor.

    An entry lives as long as the session holds that tensor: when the session prunes a frame (or replaces
    its memory after new prompts) the weak reference dies and the entry is dropped on the next frame, so
    the cache is bounded by the memory window.
    """

    frames: dict[int, _FrameEntry] = field(default_factory=dict)
    step: int = 0  # incremented per activation (one per session frame)
    temporal: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)  # (layer, offset, HW) -> key

    @contextlib.contextmanager
    def active(self, model, dtype: torch.dtype | None = None) -> Iterator[None]:
        """Route ``model``'s frame through the fast paths for the duration of the block.

        ``dtype``: the session's compute dtype (default: the model's); the approximate memory-attention paths
        run only in bf16/fp16.
        """
        install(model)
        switch: Switch = getattr(model, SWITCH_ATTRIBUTE)
        dtype = dtype or next(model.parameters()).dtype
        self.step += 1
        self.prune()
        setattr(model, CACHE_ATTRIBUTE, self)
        switch.on, switch.reduced = True, cpu_attention.reduced(dtype)
        switch.shared.clear()
        try:
            yield
        finally:
            setattr(model, CACHE_ATTRIBUTE, None)
            switch.on = False
            switch.shared.clear()

    def prune(self) -> None:
        """Drop entries whose frame is gone or was not read on the previous frame (it has left the window)."""
        for key in [
            key for key, entry in self.frames.items() if entry.features() is None or entry.last_used < self.step - 1
        ]:
            del self.frames[key]

    def temporal_key(self, model, layer: int, offset: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The temporal term of a memory frame ``offset`` frames away in ``layer``'s cross-attention keys:
        ``RoPE(W_k p_time[offset])`` broadcast over the (HW, head_dim) positions, (heads, HW, head_dim) float32.
        It depends on the weights and the offset only, so it is computed once per session."""
        key = (layer, offset, cos.shape[-2])
        cached = self.temporal.get(key)
        if cached is None:
            cross = model.memory_attention.layers[layer].cross_attn_image
            encoding = model.memory_temporal_positional_encoding[offset - 1].reshape(-1)  # (C_mem,)
            projected = (cross.k_proj.weight @ encoding.to(cross.k_proj.weight.dtype)).float()  # (C,)
            projected = projected.view(cross.num_attention_heads, 1, cross.head_dim)  # (heads, 1, head_dim)
            cached = cpu_attention.apply_rope(projected.expand(-1, cos.shape[-2], -1), cos, sin)  # (heads, HW, d)
            self.temporal[key] = cached
        return cached

    def entry(self, model, features: torch.Tensor, spatial_pos: torch.Tensor) -> _FrameEntry:
        """The cached keys of one memory frame, computing them on first use.

        ``features`` and ``spatial_pos`` are (HW, B, C_mem) as stored by the session.
        """
        key = id(features)
        entry = self.frames.get(key)
        if entry is not None and entry.features() is features:
            entry.last_used = self.step
            return entry
        memory = features.transpose(0, 1).unsqueeze(1)  # (B, 1, HW, C_mem)
        keyed = memory + spatial_pos.transpose(0, 1).unsqueeze(1).to(memory.dtype)  # (B, 1, HW, C_mem)
        attention = model.memory_attention
        cos, sin = _rope(model, memory.shape[2], memory.device)
        keys = []
        for layer in attention.layers:
            cross = layer.cross_attn_image
            shape = (memory.shape[0], -1, cross.num_attention_heads, cross.head_dim)
            projected = cross.k_proj(keyed).view(*shape).transpose(1, 2)  # (B, heads, HW, head_dim)
            keys.append(cpu_attention.rope(projected, cos, sin))
        entry = _FrameEntry(weakref.ref(features), self.step, keys, memory)
        self.frames[key] = entry
        return entry


def _rope(model, tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory attention's rotary cos/sin for its feature grid, each (HW, head_dim) in float32."""
    attention = model.memory_attention
    dummy = torch.empty(1, tokens, 1, device=device, dtype=torch.float32)
    return attention.rotary_emb(dummy, attention.position_ids)


# -- memory attention (reduced precision) -------------------------------------------------------------------
def _self_attention(attn, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, switch: Switch) -> torch.Tensor:
    """A memory attention's RoPE self-attention of (B, P, HW, C) ``hidden``, through the chunked kernel.

    Tracked objects go through the memory attention one after another, and its first layer's self-attention
    reads the same input for every object of a frame (the frame's features): its result is kept for the frame
    (``switch.shared``) and reused when the same module sees an equal input, so N objects pay for it once
    (a quarter of EdgeTAM's memory attention: 26 ms per object at two threads; comparing the inputs, a
    (4096, 256) bf16 map, 0.4 ms). The caller must not write to the result in place (transformers' layers and
    :func:`_fast_prepare` add it to the residual)."""
    kept = switch.shared.get(id(attn))
    if kept is not None and kept[0].shape == hidden.shape and torch.equal(kept[0], hidden):
        return kept[1]
    out = _uncached_self_attention(attn, hidden, cos, sin)
    switch.shared[id(attn)] = (hidden, out)
    return out


def _uncached_self_attention(attn, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    batch, points = hidden.shape[:2]
    shape = (batch * points, -1, attn.num_attention_heads, attn.head_dim)
    width = attn.num_attention_heads * attn.head_dim
    qkv = _stacked_projections(attn, hidden.dtype)(hidden)  # (B, P, HW, 3C)
    q, k, v = (x.reshape(*shape).transpose(1, 2) for x in qkv.split(width, dim=-1))  # each (BP, heads, HW, d)
    q = cpu_attention.rope(q, cos, sin)  # RoPE in float32, as transformers does
    k = cpu_attention.rope(k, cos, sin)
    out = cpu_attention.attention(q, k, v, attn.scaling)  # (BP, heads, HW, head_dim)
    out = out.transpose(1, 2).reshape(batch, points, -1, attn.num_attention_heads * attn.head_dim)  # (B, P, HW, C)
    return onednn.linear(attn.o_proj, out)


def _stacked_projections(attn, dtype: torch.dtype) -> onednn.Product:
    """The self-attention's ``q_proj``, ``k_proj`` and ``v_proj`` stacked into one (3C, C) weight and (3C,) bias in
    ``dtype`` (the same values): one product over the (4096, C) map instead of three (0.5 ms less per layer at
    two threads). Kept for the module (``derived``) until a weight changes."""
    params = [p for proj in (attn.q_proj, attn.k_proj, attn.v_proj) for p in (proj.weight, proj.bias)]

    def stack() -> onednn.Product:
        return onednn.Product(torch.cat(params[0::2]).to(dtype), torch.cat(params[1::2]).to(dtype))  # (3C, C), (3C,)

    return derived(attn, "stacked q/k/v", (dtype, weights_key(*params)), stack)


def _rope_self_attention(self, query, key, value, position_embeddings, **kwargs):
    """EdgeTAM's ``RoPESelfAttention.forward`` through :func:`_self_attention` while reduced-precision paths are on."""
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or key is not query or value is not query:
        return type(self).forward(self, query, key, value, position_embeddings, **kwargs)
    cos, sin = position_embeddings
    return _self_attention(self, query, cos, sin, switch), None


@dataclass(frozen=True)
class _MemoryLayout:
    """Where EdgeTAM's memory cross-attention keys take RoPE: each memory frame's tokens are its 1-D perceiver
    latents (no RoPE) then its 2-D latents (RoPE over a small grid), and the object pointers (no RoPE) follow
    the frames (transformers' ``apply_rotary_pos_emb_2d_cross_attn``)."""

    frames: int
    plain: int  # per frame: the 1-D latents
    rotated: int  # per frame: the 2-D latents, one per grid position
    pointers: int

    @classmethod
    def of(cls, keys: int, grid: int, pointers: int, frames: int) -> _MemoryLayout | None:
        """The layout of ``keys`` tokens, or None where they do not split as above."""
        if frames <= 0 or keys <= pointers:
            return None
        per_frame, rest = divmod(keys - pointers, frames)
        if rest or per_frame < grid:
            return None
        return cls(frames, per_frame - grid, grid, pointers)

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., N, C) -> the RoPE tokens (..., frames * rotated, C) and the others (..., frames * plain +
        pointers, C), each in the order of ``tokens``."""
        lead, width = tokens.shape[:-2], tokens.shape[-1]
        framed = self.frames * (self.plain + self.rotated)
        grouped = tokens[..., :framed, :].reshape(*lead, self.frames, self.plain + self.rotated, width)
        rotated = grouped[..., self.plain :, :].reshape(*lead, -1, width)
        plain = torch.cat([grouped[..., : self.plain, :].reshape(*lead, -1, width), tokens[..., framed:, :]], dim=-2)
        return rotated, plain


def _rope_cross_attention(
    self, query, key, value, position_embeddings, position_embeddings_k, num_k_exclude_rope=0, rope_k_repeat=0, **kwargs
):
    """EdgeTAM's ``RoPECrossAttention.forward`` with the value projection after the attention, through the chunked
    kernel, while reduced-precision paths are on.

    EdgeTAM's memory is a few hundred perceiver latents per frame, so projecting and rotating its keys each frame
    is cheap (unlike SAM 2's, which :class:`MemoryCache` caches); the attention over them is not: 4096 queries x
    ~3.6 k keys per layer, whose second product shrinks from 256 to 64 wide with the values projected after. Half
    of the keys take no RoPE (:class:`_MemoryLayout`): their scores are computed at the memory's width of 64
    (:class:`~segvlm.segmentation.cpu_attention.NarrowKeys`), a quarter of their cost at 256.
    """
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(query)):
        return type(self).forward(
            self, query, key, value, position_embeddings, position_embeddings_k, num_k_exclude_rope, rope_k_repeat
        )
    batch, points = query.shape[:2]
    heads, head_dim = self.num_attention_heads, self.head_dim
    shape = (batch * points, -1, heads, head_dim)
    cos, sin = position_embeddings
    cos_k, sin_k = position_embeddings_k
    q = onednn.linear(self.q_proj, query).view(*shape).transpose(1, 2)  # (BP, heads, HW, head_dim)
    q = cpu_attention.rope(q, cos, sin)
    width = value.shape[-1]
    layout = _MemoryLayout.of(key.shape[-2], cos_k.shape[-2], num_k_exclude_rope, rope_k_repeat)
    if layout is not None and layout.plain + layout.pointers > 0:
        rotated, plain = layout.split(key.reshape(batch * points, 1, -1, width))  # (BP, 1, N_r / N_p, C_mem)
        k = self.k_proj(rotated).view(*shape).transpose(1, 2)  # (BP, heads, N_r, head_dim)
        cos_r, sin_r = (t.reshape(-1, head_dim).repeat(layout.frames, 1) for t in (cos_k, sin_k))  # (N_r, head_dim)
        k = cpu_attention.rope(k, cos_r, sin_r)
        narrow = cpu_attention.NarrowKeys.project(q, plain, self.k_proj.weight, self.k_proj.bias)
        memory = torch.cat(layout.split(value.reshape(batch * points, 1, -1, width)), dim=-2)  # (BP, 1, N, C_mem)
        mixed = cpu_attention.attention_with_narrow_keys(q, k, narrow, memory, self.scaling)  # (BP, heads, HW, C_mem)
    else:
        from transformers.models.edgetam_video.modeling_edgetam_video import apply_rotary_pos_emb_2d_cross_attn

        k = self.k_proj(key).view(*shape).transpose(1, 2)  # (BP, heads, N, head_dim)
        _, k = apply_rotary_pos_emb_2d_cross_attn(  # the keys (a one-row query: q has its RoPE already)
            q[..., :1, :],
            k,
            cos=cos[..., :1, :],
            sin=sin[..., :1, :],
            cos_k=cos_k,
            sin_k=sin_k,
            repeat_freqs_k=rope_k_repeat,
            num_k_exclude_rope=num_k_exclude_rope,
        )
        memory = value.reshape(batch * points, 1, value.shape[-2], width)  # (BP, 1, N, C_mem)
        mixed = cpu_attention.attention(q, k, memory.expand(-1, heads, -1, -1), self.scaling)  # (BP, heads, HW, C_mem)
    return _values_out(self, mixed).view(batch, points, -1, self.o_proj.out_features), None  # (B, P, HW, C)


def _values_out(cross, mixed: torch.Tensor) -> torch.Tensor:
    """``o_proj`` of the heads' ``v_proj`` of (B, heads, HW, C_mem) memory features mixed by the attention (the
    values projected after it), as one product: (B * HW, C) out.

    Both projections are linear, so ``O(V_h x_h + b_V) + b_O = sum_h (O_h V_h) x_h + (O b_V + b_O)``: a
    (C, heads * C_mem) matrix instead of a 64 -> 256 and a 256 -> 256 product (one 4096 x 256 x 256 GEMM
    and a pass over the map fewer per layer). The composed weight is taken in float32, rounded once, and kept for
    the module (``derived``) until a weight changes."""
    batch, heads, tokens, width = mixed.shape
    v_proj, o_proj = cross.v_proj, cross.o_proj

    def compose() -> onednn.Product:
        head_dim = v_proj.out_features // heads
        inner = v_proj.weight.float().view(heads, head_dim, width)  # (heads, head_dim, C_mem)
        outer = o_proj.weight.float().view(-1, heads, head_dim)  # (C, heads, head_dim)
        weight = torch.einsum("chd,hdm->chm", outer, inner).reshape(outer.shape[0], heads * width)  # (C, heads*C_mem)
        bias = o_proj.weight.float() @ v_proj.bias.float() + o_proj.bias.float()  # (C,)
        return onednn.Product(weight.to(mixed.dtype), bias.to(mixed.dtype))

    key = (mixed.dtype, weights_key(v_proj.weight, v_proj.bias, o_proj.weight, o_proj.bias))
    flat = mixed.transpose(1, 2).reshape(batch * tokens, heads * width)  # (B * HW, heads * C_mem)
    return derived(cross, "values out", key, compose)(flat)  # (B * HW, C)


PERCEIVER_SCORES = 1 << 18  # perceiver attentions with this many query-key pairs (the 1-D latents') use the kernel


def _perceiver_attention(self, query, key, value, positional_encoding=None, **kwargs):
    """EdgeTAM's ``PerceiverAttention.forward`` through the chunked kernel while reduced-precision CPU paths are on,
    for its one large attention: the 256 1-D latents over a frame's 4096 memory tokens (one head of 64), where
    the CPU flash kernel is slow on the key/value maps the positional encoding was added to."""
    switch: Switch = self._segvlm_switch
    batch, queries = query.shape[:2]
    keys = key.shape[1]
    if (
        not (switch.on and switch.reduced and cpu_attention.usable(query))
        or queries * keys < PERCEIVER_SCORES
        or kwargs
    ):
        return type(self).forward(self, query, key, value, positional_encoding, **kwargs)
    heads, head_dim = self.num_attention_heads, self.head_dim
    q = self.q_proj(query).view(batch, queries, heads, head_dim).transpose(1, 2)  # (B, heads, Lq, d)
    k = self.k_proj(key).view(batch, keys, heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    v = self.v_proj(value).view(batch, keys, heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    if positional_encoding is not None:
        position = positional_encoding.view(batch, keys, heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
        k, v = k + position, v + position
    out = cpu_attention.attention(q, k, v, self.scaling, min_scores=PERCEIVER_SCORES)  # (B, heads, Lq, d)
    return self.o_proj(out.transpose(1, 2).reshape(batch, queries, self.inner_dim))


def _cross_attention(
    cross,
    query: torch.Tensor,
    frame_keys: list[torch.Tensor],
    temporal_keys: list[torch.Tensor],
    memory: torch.Tensor,
    pointers: tuple[torch.Tensor, torch.Tensor] | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """Cross-attention of ``query`` (B, 1, HW, C) to cached memory frames plus fresh pointer tokens.

    ``memory`` is the (B, 1, N_mem, C_mem) memory features of all frames in order; the value projection is
    applied after the attention (exact: softmax rows sum to one).
    """
    batch, heads, head_dim = query.shape[0], cross.num_attention_heads, cross.head_dim
    shape = (batch, -1, heads, head_dim)
    q = onednn.linear(cross.q_proj, query).view(*shape).transpose(1, 2)  # (B, heads, HW, head_dim)
    q = cpu_attention.rope(q, cos, sin)
    values = memory  # (B, 1, N_mem, C_mem)
    pointer_keys = None
    if pointers is not None:
        pointer_inputs, pointer_pos = pointers  # each (B, 1, P, C_mem)
        pointer_keys = cross.k_proj(pointer_inputs + pointer_pos).view(*shape).transpose(1, 2)  # (B, heads, P, d)
        values = torch.cat([values, pointer_inputs], dim=2)  # (B, 1, N, C_mem)
    # Each frame's cached key plus its temporal term, summed in float32 and rounded once, written in place.
    k = q.new_empty(batch, heads, values.shape[2], head_dim)  # (B, heads, N, head_dim)
    start = 0
    for frame_key, temporal in zip(frame_keys, temporal_keys):
        end = start + frame_key.shape[2]
        torch.add(frame_key, temporal, out=k[:, :, start:end])
        start = end
    if pointer_keys is not None:
        k[:, :, start:] = pointer_keys
    if cpu_attention.usable(q):
        mixed = cpu_attention.attention(q, k, values.expand(-1, heads, -1, -1), cross.scaling)  # (B, heads, HW, C_mem)
        return _values_out(cross, mixed).view(batch, 1, -1, cross.o_proj.out_features)  # (B, 1, HW, C)
    # GPU: the fused attention kernel wants equal widths; project the values first
    v = cross.v_proj(values).view(*shape).transpose(1, 2)  # (B, heads, N, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, scale=cross.scaling)  # (B, heads, HW, head_dim)
    out = out.transpose(1, 2).reshape(batch, 1, -1, heads * head_dim)  # (B, 1, HW, C)
    return cross.o_proj(out)


def _fast_prepare(
    self,
    inference_session,
    frame_idx: int,
    obj_idx: int,
    is_initial_conditioning_frame: bool,
    current_vision_features: torch.Tensor,
    current_vision_positional_embeddings: torch.Tensor,
    num_total_frames: int,
    track_in_reverse_time: bool = False,
    streaming: bool = False,
) -> torch.Tensor:
    """Drop-in for ``Sam2VideoModel._prepare_memory_conditioned_features`` using a :class:`MemoryCache`."""
    cache: MemoryCache | None = getattr(self, CACHE_ATTRIBUTE, None)
    switch: Switch = getattr(self, SWITCH_ATTRIBUTE)
    original = type(self)._prepare_memory_conditioned_features

    def uncached() -> torch.Tensor:
        return original(
            self,
            inference_session,
            frame_idx,
            obj_idx,
            is_initial_conditioning_frame,
            current_vision_features,
            current_vision_positional_embeddings,
            num_total_frames,
            track_in_reverse_time,
            streaming,
        )

    if cache is None or not switch.reduced or self.num_maskmem == 0 or is_initial_conditioning_frame:
        return uncached()
    batch_size = current_vision_features.size(1)
    num_channels = self.hidden_dim
    height, width = self.backbone_feature_sizes[-1]
    device, dtype = current_vision_features.device, inference_session.dtype

    outputs = self._gather_memory_frame_outputs(inference_session, obj_idx, frame_idx, track_in_reverse_time)
    entries, offsets = [], []
    for offset, output in outputs:
        if output is None:
            continue
        features = output["maskmem_features"]
        if features.device != device or features.dtype != dtype:  # offloaded state: no stable identity to cache
            return uncached()
        entries.append(cache.entry(self, features, output["maskmem_pos_enc"]))
        offsets.append(offset)
    if not entries:
        return uncached()

    pointers = None
    temporal_offsets, pointer_tokens, max_pointers = self._get_object_pointers(
        inference_session, obj_idx, frame_idx, num_total_frames, device, track_in_reverse_time, streaming
    )
    if pointer_tokens:
        object_pointers, pointer_pos = self._process_object_pointers(
            temporal_offsets, pointer_tokens, max_pointers, batch_size, num_channels, device
        )  # each (P, B, C_mem)
        if object_pointers is not None:
            pointers = (
                object_pointers.to(dtype).transpose(0, 1).unsqueeze(1),  # (B, 1, P, C_mem)
                pointer_pos.transpose(0, 1).unsqueeze(1).to(dtype),  # (B, 1, P, C_mem)
            )

    attention = self.memory_attention
    memory = torch.cat([entry.values for entry in entries], dim=2)  # (B, 1, N_mem, C_mem)
    output = current_vision_features
    if current_vision_positional_embeddings is not None:
        output = output + 0.1 * current_vision_positional_embeddings  # (HW, B, C)
    queries = output.transpose(0, 1).unsqueeze(1)  # (B, 1, HW, C)
    cos, sin = attention.rotary_emb(queries[:, 0], attention.position_ids)  # each (HW, head_dim)
    for index, layer in enumerate(attention.layers):
        cross = layer.cross_attn_image
        temporal_keys = [cache.temporal_key(self, index, offset, cos, sin) for offset in offsets]

        queries = queries + _self_attention(layer.self_attn, layer.layer_norm1(queries), cos, sin, switch)
        keys = [entry.keys[index] for entry in entries]
        query = layer.layer_norm2(queries)
        queries = queries + _cross_attention(cross, query, keys, temporal_keys, memory, pointers, cos, sin)
        query = layer.layer_norm3(queries)
        if type(layer.activation) in (nn.ReLU, _InPlaceReLU):  # the ReLU fused into the first product
            hidden = onednn.linear(layer.linear1, query, "relu")  # (B, 1, HW, 8C)
        else:
            hidden = layer.activation(onednn.linear(layer.linear1, query))
        queries = queries + onednn.linear(layer.linear2, hidden)
    normed = attention.layer_norm(queries).transpose(0, 1)  # (1, B, HW, C)
    return normed.squeeze(1).transpose(1, 2).view(batch_size, num_channels, height, width)  # (B, C, H, W)


def _relu_mlp(self, x: torch.Tensor) -> torch.Tensor:
    """EdgeTAM's memory-attention MLP (``256 -> 2048 -> 256``, ReLU) with the first product, its bias and the ReLU
    as one oneDNN product while reduced-precision CPU paths are on: the product writes the rectified map once,
    where the plain linear first copies its bias into the 4096 x 2048 output, multiplies, then the ReLU makes a
    third pass over it."""
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or x.device.type != "cpu" or self.training:
        return type(self).forward(self, x)
    up = self.up_proj
    hidden = onednn.linear(up, x, "relu")  # (..., 8C)
    return onednn.linear(self.down_proj, hidden)  # (..., C)


def _is_relu_mlp(module) -> bool:
    """EdgeTAM's memory-attention MLP with a ReLU (possibly already the in-place one), where oneDNN fuses it."""
    return type(module.act_fn) in (nn.ReLU, _InPlaceReLU) and onednn.available()


class _InPlaceReLU(nn.ReLU):
    """The memory attention MLP's ReLU, applied in place on the fresh 4096 x 2048 hidden map while fast paths
    are on: the same values, without allocating and writing a second map (about a third of the MLP's time in
    bf16 on CPU). Exact in every dtype."""

    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self._segvlm_switch = switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._segvlm_switch.on and not torch.is_grad_enabled():
            return x.relu_()
        return F.relu(x)


def install(model) -> None:
    """Give ``model`` (a ``Sam2VideoModel`` or ``EdgeTamVideoModel``) the fast paths; inert until a
    :class:`MemoryCache` is active. SAM 2 gets all of them; EdgeTAM, whose memory is a few hundred perceiver
    latents per frame (cheap to project anew), gets its own: the folded RepViT encoder, both memory attentions
    through the kernel with the values projected after the cross-attention, and the in-place ReLU."""
    if getattr(model, SWITCH_ATTRIBUTE, None) is not None:
        return
    switch = Switch()
    setattr(model, SWITCH_ATTRIBUTE, switch)
    setattr(model, CACHE_ATTRIBUTE, None)
    if type(model).__name__ == "Sam2VideoModel":
        model._prepare_memory_conditioned_features = types.MethodType(_fast_prepare, model)
    if type(model).__name__ in ("Sam2VideoModel", "EdgeTamVideoModel"):
        model._single_frame_forward = types.MethodType(_tracking_frame, model)
        compose_high_resolution_projections(model, switch)
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("MultiScaleAttention") and hasattr(module, "qkv"):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_multiscale_attention, module)
        elif name.endswith("HieraDetModel") and hasattr(module, "_get_pos_embed"):
            module._segvlm_switch, module._segvlm_pos_embeds = switch, {}
            module._get_pos_embed = types.MethodType(_cached_pos_embed, module)
        elif name.endswith("SinePositionEmbedding"):
            module._segvlm_switch, module._segvlm_encodings = switch, {}
            module.forward = types.MethodType(_cached_sine, module)
        elif name == "EdgeTamVideoRoPESelfAttention":
            module._segvlm_switch = switch
            module.forward = types.MethodType(_rope_self_attention, module)
        elif name == "TimmWrapperModel" and hasattr(module.timm_model, "feature_info"):
            backbone = module.timm_model
            backbone._segvlm_switch, backbone._segvlm_folded = switch, {}
            backbone.forward = types.MethodType(_folded_convolutions, backbone)
        elif name == "Sam2FeedForward" and _is_gelu_mlp(module):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_gelu_mlp, module)
        elif name == "Sam2VideoMemoryAttentionLayer" and type(module.activation) is nn.ReLU:
            module.activation = _InPlaceReLU(switch)
        elif name == "EdgeTamVideoMemoryAttentionMLP" and type(module.act_fn) is nn.ReLU:
            module.act_fn = _InPlaceReLU(switch)
            if _is_relu_mlp(module):
                module._segvlm_switch = switch
                module.forward = types.MethodType(_relu_mlp, module)
        elif name.endswith("MaskDownSamplerLayer") and _is_norm_gelu_layer(module):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_mask_downsampler_layer, module)
        elif name.endswith("MemoryFuserCXBlock") and _is_fuser_block(module):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_fuser_block, module)
        elif name in ("Sam2VideoMaskDecoder", "EdgeTamVideoMaskDecoder"):
            module._segvlm_switch, module._segvlm_positions = switch, None
            module.forward = types.MethodType(_mask_decoder, module)
        elif name in ("Sam2VideoAttention", "EdgeTamVideoAttention"):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_few_keys_attention, module)
        elif name in ("Sam2VideoMemoryEncoder", "EdgeTamVideoMemoryEncoder"):
            module._segvlm_switch = switch
            module.forward = types.MethodType(_memory_encoder, module)
        elif name == "EdgeTamVideoPerceiverAttention":
            module._segvlm_switch = switch
            module.forward = types.MethodType(_perceiver_attention, module)
        elif name == "EdgeTamVideoRoPECrossAttention":
            module._segvlm_switch = switch
            module.forward = types.MethodType(_rope_cross_attention, module)
