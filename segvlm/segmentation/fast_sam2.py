"""Faster SAM 2 frames: exact savings in the image encoder, and a memory attention built for reduced precision.

Where a tracked SAM 2 frame spends its time on CPU (hiera-tiny, bf16, BENCHMARKS.md): about half in the four
memory cross-attentions (4096 queries x ~29 k memory keys, one head of width 256), a third in the image
encoder, the rest in the memory self-attentions, projections and the decoders. This module changes how that
work is done, never what is computed:

Exact (bit-identical in any dtype):

* the image encoder's multi-scale attention computes, and throws away, a full attention-weight matrix before
  calling the attention kernel (4 x 4096 x 4096 scores in float32 for each global block); it is not computed;
* the image encoder's position embedding (a bicubic resize of a learnt table) and the neck's sine position
  encodings (an LRU cache of size 1 queried with three shapes per frame) are computed once per shape.

Reduced precision only (bf16/fp16; float32 keeps transformers' code path and its bits):

* memory keys: a memory frame's features never change once written, so each frame's key projection and
  rotary encoding are computed once and cached (:class:`MemoryCache`); the temporal encoding, which depends
  on the frame's distance to the current frame, enters as a separate linear term (``k_proj`` and RoPE are
  linear: ``RoPE(k_proj(m + p + t)) = RoPE(k_proj(m + p)) + RoPE(W_k t)``);
* memory values after the attention: the values are ``v_proj`` of 64-wide memory features, and softmax rows
  sum to one, so ``softmax(QK^T)(M W_v^T + b) = (softmax(QK^T) M) W_v^T + b``: the second attention product
  is 64 wide instead of 256 (4x fewer FLOPs);
* both memory attentions (self and cross) and the image encoder's global-attention blocks (4096 tokens) run
  through :func:`segvlm.segmentation.cpu_attention.attention`: bf16 GEMMs over query chunks with a float32
  softmax, compiled, 1.5-3x the rate of the CPU flash kernel on these shapes; their RoPE (float32, rounded
  back) in one compiled pass, and the temporal term of the memory keys computed once per session;
* the Hiera blocks' MLPs with the first projection and its GELU as one oneDNN product; EdgeTAM's RepViT image
  encoder through a folded, channels-last copy with fused GELUs (:mod:`segvlm.segmentation.folded_backbone`).

Exact in every dtype as well: the memory-attention MLP's ReLU runs in place on its fresh hidden map.

All of it is switched on per frame: :func:`install` adds the paths to a model, inert until a frame runs inside
``with MemoryCache().active(model):``. Outside such a block (transformers' own loop on the same model, for
instance) the model computes exactly as before.
"""

from __future__ import annotations

import contextlib
import sys
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segvlm.segmentation import cpu_attention

_ATTRIBUTE = "_segvlm_memory_cache"  # the active MemoryCache of a model, or None
_SWITCH = "_segvlm_fast_switch"  # the model's _Switch, shared with its patched submodules
GLOBAL_TOKENS = 1024  # image-encoder attentions over this many keys (the global blocks) use the chunked kernel


@dataclass
class _Switch:
    """Whether a model's fast paths are on (a frame runs inside ``MemoryCache.active``) and in what precision."""

    on: bool = False
    reduced: bool = False  # bf16/fp16 session: the memory attention's approximate paths apply


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
        switch: _Switch = getattr(model, _SWITCH)
        dtype = dtype or next(model.parameters()).dtype
        self.step += 1
        self.prune()
        setattr(model, _ATTRIBUTE, self)
        switch.on, switch.reduced = True, cpu_attention.reduced(dtype)
        try:
            yield
        finally:
            setattr(model, _ATTRIBUTE, None)
            switch.on = False

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
def _self_attention(attn, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """A memory attention's RoPE self-attention of (B, P, HW, C) ``hidden``, through the chunked kernel."""
    batch, points = hidden.shape[:2]
    shape = (batch * points, -1, attn.num_attention_heads, attn.head_dim)
    q = attn.q_proj(hidden).view(*shape).transpose(1, 2)  # (BP, heads, HW, head_dim)
    k = attn.k_proj(hidden).view(*shape).transpose(1, 2)  # (BP, heads, HW, head_dim)
    v = attn.v_proj(hidden).view(*shape).transpose(1, 2)  # (BP, heads, HW, head_dim)
    q = cpu_attention.rope(q, cos, sin)  # RoPE in float32, as transformers does
    k = cpu_attention.rope(k, cos, sin)
    out = cpu_attention.attention(q, k, v, attn.scaling)  # (BP, heads, HW, head_dim)
    out = out.transpose(1, 2).reshape(batch, points, -1, attn.num_attention_heads * attn.head_dim)  # (B, P, HW, C)
    return attn.o_proj(out)


def _rope_self_attention(self, query, key, value, position_embeddings, **kwargs):
    """EdgeTAM's ``RoPESelfAttention.forward`` through :func:`_self_attention` while reduced-precision paths are on."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or key is not query or value is not query:
        return type(self).forward(self, query, key, value, position_embeddings, **kwargs)
    cos, sin = position_embeddings
    return _self_attention(self, query, cos, sin), None


def _rope_cross_attention(
    self, query, key, value, position_embeddings, position_embeddings_k, num_k_exclude_rope=0, rope_k_repeat=0, **kwargs
):
    """EdgeTAM's ``RoPECrossAttention.forward`` with the value projection after the attention, through the chunked
    kernel, while reduced-precision paths are on.

    EdgeTAM's memory is a few hundred perceiver latents per frame, so projecting and rotating its keys each frame
    is cheap (unlike SAM 2's, which :class:`MemoryCache` caches); the attention over them is not: 4096 queries x
    ~3.6 k keys per layer, whose second product shrinks from 256 to 64 wide with the values projected after.
    """
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(query)):
        return type(self).forward(
            self, query, key, value, position_embeddings, position_embeddings_k, num_k_exclude_rope, rope_k_repeat
        )
    from transformers.models.edgetam_video.modeling_edgetam_video import apply_rotary_pos_emb_2d_cross_attn

    batch, points = query.shape[:2]
    heads, head_dim = self.num_attention_heads, self.head_dim
    shape = (batch * points, -1, heads, head_dim)
    q = self.q_proj(query).view(*shape).transpose(1, 2)  # (BP, heads, HW, head_dim)
    k = self.k_proj(key).view(*shape).transpose(1, 2)  # (BP, heads, N, head_dim)
    cos, sin = position_embeddings
    cos_k, sin_k = position_embeddings_k
    q = cpu_attention.rope(q, cos, sin)
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
    memory = value.reshape(batch * points, 1, value.shape[-2], value.shape[-1])  # (BP, 1, N, C_mem)
    mixed = cpu_attention.attention(q, k, memory.expand(-1, heads, -1, -1), self.scaling)  # (BP, heads, HW, C_mem)
    weight = self.v_proj.weight.view(heads, head_dim, -1)  # (heads, head_dim, C_mem)
    out = torch.matmul(mixed, weight.transpose(-1, -2)) + self.v_proj.bias.view(heads, 1, head_dim)
    out = out.transpose(1, 2).reshape(batch, points, -1, heads * head_dim)  # (B, P, HW, C)
    return self.o_proj(out), None


PERCEIVER_SCORES = 1 << 18  # perceiver attentions with this many query-key pairs (the 1-D latents') use the kernel


def _perceiver_attention(self, query, key, value, positional_encoding=None, **kwargs):
    """EdgeTAM's ``PerceiverAttention.forward`` through the chunked kernel while reduced-precision CPU paths are on,
    for its one large attention: the 256 1-D latents over a frame's 4096 memory tokens (one head of 64), where
    the CPU flash kernel is slow on the key/value maps the positional encoding was added to."""
    switch: _Switch = self._segvlm_switch
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
    q = cross.q_proj(query).view(*shape).transpose(1, 2)  # (B, heads, HW, head_dim)
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
        weight = cross.v_proj.weight.view(heads, head_dim, -1)  # (heads, head_dim, C_mem)
        out = torch.matmul(mixed, weight.transpose(-1, -2))  # (B, heads, HW, head_dim)
        out = out + cross.v_proj.bias.view(heads, 1, head_dim)
    else:  # GPU: the fused attention kernel wants equal widths; project the values first
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
    cache: MemoryCache | None = getattr(self, _ATTRIBUTE, None)
    switch: _Switch = getattr(self, _SWITCH)
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

        queries = queries + _self_attention(layer.self_attn, layer.layer_norm1(queries), cos, sin)
        keys = [entry.keys[index] for entry in entries]
        query = layer.layer_norm2(queries)
        queries = queries + _cross_attention(cross, query, keys, temporal_keys, memory, pointers, cos, sin)
        query = layer.layer_norm3(queries)
        queries = queries + layer.linear2(layer.activation(layer.linear1(query)))
    normed = attention.layer_norm(queries).transpose(0, 1)  # (1, B, HW, C)
    return normed.squeeze(1).transpose(1, 2).view(batch_size, num_channels, height, width)  # (B, C, H, W)


# -- memory encoder (reduced precision) ---------------------------------------------------------------------
def _channel_norm_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``gelu(layer_norm over the channels of (B, C, H, W) x)`` in float32, rounded once to ``x``'s dtype."""
    values = x.float()
    centred = values - values.mean(dim=1, keepdim=True)  # (B, C, H, W)
    variance = (centred * centred).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    normed = centred * torch.rsqrt(variance + eps) * weight.float()[:, None, None] + bias.float()[:, None, None]
    return F.gelu(normed).to(x.dtype)


def _mask_downsampler_layer(self, x: torch.Tensor) -> torch.Tensor:
    """A mask downsampler layer (``conv -> channels-first layer norm -> GELU``) with the norm and the GELU as one
    compiled pass while reduced-precision CPU paths are on. Its maps have 4 to 64 channels at 512 x 512 to
    128 x 128: transformers' norm permutes them to channels-last and normalises millions of 4- or 16-wide
    rows (8 ms at 1024 x 1024 input on one thread), then the GELU makes a second pass; the compiled pass
    reads the conv's output once (about 1 ms per layer)."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(x)):
        return type(self).forward(self, x)
    norm = self.layer_norm
    return cpu_attention.fused(_channel_norm_gelu, self.conv(x), norm.weight, norm.bias, norm.eps)  # (B, C, H, W)


def _is_norm_gelu_layer(module) -> bool:
    """A mask downsampler layer whose norm is over the channels of (B, C, H, W) maps and whose GELU is exact."""
    norm = getattr(module, "layer_norm", None)
    return (
        getattr(norm, "data_format", None) == "channels_first"
        and getattr(module.activation, "act", None) is F.gelu
        and isinstance(getattr(module, "conv", None), nn.Conv2d)
    )


def _norm_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm over the channels of (B, C, H, W) ``x`` in float32, out as a contiguous (B, H, W, C) map in
    ``x``'s dtype."""
    values = x.float().permute(0, 2, 3, 1)  # (B, H, W, C)
    normed = F.layer_norm(values, values.shape[-1:], weight.float(), bias.float(), eps)
    return normed.to(x.dtype).contiguous()  # (B, H, W, C)


def _scaled_residual(residual: torch.Tensor, hidden: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``residual + scale * hidden`` for (B, C, H, W) ``residual`` and (B, H, W, C) ``hidden``, in (B, C, H, W)."""
    update = (hidden.float() * scale.float()).permute(0, 3, 1, 2)  # (B, C, H, W)
    return (residual.float() + update).to(residual.dtype)


def _fuser_block(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """A memory fuser block (ConvNeXt: depthwise conv, channels-first norm, ``C -> 4C -> C`` GELU MLP, layer scale,
    residual) while reduced-precision CPU paths are on: the norm writes its channels-last map directly (one
    compiled pass instead of two permuted copies), the first product carries the GELU (oneDNN post-op), and the
    layer scale, the permute back and the residual add are one compiled pass instead of three."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(hidden_states)):
        return type(self).forward(self, hidden_states)
    norm, up = self.layer_norm, self.pointwise_conv1
    batch, channels, height, width = hidden_states.shape
    mixed = self.depthwise_conv(hidden_states)  # (B, C, H, W)
    normed = cpu_attention.fused(_norm_channels_last, mixed, norm.weight, norm.bias, norm.eps)  # (B, H, W, C)
    flat = normed.view(-1, channels)  # (BHW, C)
    expanded = torch.ops.mkldnn._linear_pointwise(flat, up.weight, up.bias, "gelu", [], "none")  # (BHW, 4C)
    hidden = self.pointwise_conv2(expanded).view(batch, height, width, channels)  # (B, H, W, C)
    return cpu_attention.fused(_scaled_residual, hidden_states, hidden, self.scale)  # (B, C, H, W)


def _is_fuser_block(module) -> bool:
    """A ConvNeXt memory fuser block with a channels-first norm and the exact GELU, where oneDNN fuses it."""
    from segvlm.segmentation.folded_backbone import mkldnn_available

    return (
        getattr(module.layer_norm, "data_format", None) == "channels_first"
        and getattr(module.activation, "act", None) is F.gelu
        and mkldnn_available()
    )


def _dense_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) ``x`` as a channels-last map with the strides of a dense one. A token map viewed as
    (B, C, H, W), as SAM 2 passes its features, is channels-last with a batch stride of C: oneDNN reorders such
    an input before a convolution; the same memory viewed with dense strides it reads in place."""
    batch, channels, height, width = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(-1)  # (BHWC,): a view where x is channels-last, else a copy
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last


def _memory_encoder(self, vision_features: torch.Tensor, masks: torch.Tensor):
    """The memory encoder in channels-last memory while reduced-precision CPU paths are on: the frame's features
    arrive as a token map (channels-last), so the feature projection reads them in place instead of reordered,
    and the mask path, the fuser blocks and the output projection stay in that layout (the perceiver reads the
    output as tokens without a copy)."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(vision_features)):
        return type(self).forward(self, vision_features, masks)
    masks = self.mask_downsampler(masks.contiguous(memory_format=torch.channels_last))  # (B, C, H, W)
    features = self.feature_projection(_dense_channels_last(vision_features)) + masks  # (B, C, H, W)
    features = self.projection(self.memory_fuser(features))  # (B, C_mem, H, W) channels-last
    position = self.position_encoding(features.shape, features.device, features.dtype)
    return features, position


# -- mask decoder (reduced precision) -----------------------------------------------------------------------
def _skip_norm_gelu(x: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """``gelu(layer_norm over channels(x + skip))`` for (B, C, H, W) maps in any layouts, in float32, out as a
    contiguous (B, H, W, C) map in ``x``'s dtype."""
    values = (x.float() + skip.float()).permute(0, 2, 3, 1)  # (B, H, W, C)
    normed = F.layer_norm(values, values.shape[-1:], weight.float(), bias.float(), eps)
    return F.gelu(normed).to(x.dtype).contiguous()  # (B, H, W, C)


def _skip_gelu(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``gelu(x + skip)`` for (B, C, H, W) maps in any layouts, in float32, out contiguous (B, C, H, W)."""
    return F.gelu(x.float() + skip.float()).to(x.dtype).contiguous()  # (B, C, H, W)


FEW_KEYS = 16  # mask-decoder attentions over at most this many keys (the prompt tokens) use block-diagonal products


def _softmax_rounded(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scores * scale)`` over the last dimension in float32, rounded to ``scores``' dtype."""
    return torch.softmax(scores.float() * scale, dim=-1).to(scores.dtype)


def _few_keys_attention(self, query, key, value, attention_similarity=None, **kwargs):
    """The mask decoder's attention of the 4096 image tokens to the few prompt tokens while reduced-precision CPU
    paths are on: all heads at once as two products with block-diagonal key and value matrices, ``(L, heads*d)
    @ (heads*d, heads*N)`` and ``(L, heads*N) @ (heads*N, heads*d)``, and the softmax over each head's N keys
    as one compiled pass. The CPU flash kernel runs each head's 4096 x 8 scores in tiles built for long key
    sequences, and the heads' output must then be transposed back to tokens for the output projection."""
    switch: _Switch = self._segvlm_switch
    batch, points, queries = query.shape[:3]
    keys = key.shape[2]
    if (
        not (switch.on and switch.reduced and cpu_attention.usable(query))
        or batch * points != 1
        or keys > FEW_KEYS
        or queries < GLOBAL_TOKENS
        or attention_similarity is not None
        or kwargs
    ):
        return type(self).forward(self, query, key, value, attention_similarity, **kwargs)
    heads, head_dim = self.num_attention_heads, self.head_dim
    q = self.q_proj(query).reshape(queries, heads * head_dim)  # (L, heads*d)
    k = self.k_proj(key).reshape(keys, heads, head_dim)  # (N, heads, d)
    v = self.v_proj(value).reshape(keys, heads, head_dim)  # (N, heads, d)
    key_blocks = torch.block_diag(*k.permute(1, 2, 0))  # (heads*d, heads*N): head h's keys^T at block (h, h)
    value_blocks = torch.block_diag(*v.transpose(0, 1))  # (heads*N, heads*d): head h's values at block (h, h)
    scores = (q @ key_blocks).view(queries, heads, keys)  # (L, heads, N)
    weights = cpu_attention.fused(_softmax_rounded, scores, self.scaling)  # (L, heads, N)
    out = weights.view(queries, heads * keys) @ value_blocks  # (L, heads*d)
    return self.o_proj(out.view(batch, points, queries, heads * head_dim)), None


def _token_positions(self, positions: torch.Tensor) -> torch.Tensor:
    """The image-wide positional embeddings (1, C, H, W) as a channels-last map, whose token view (HW, C) is
    contiguous; a copy, when one is needed, is kept while the embeddings it was made from are the same (they
    are constant)."""
    if positions.is_contiguous(memory_format=torch.channels_last):  # as the fast tracking frame passes them
        return positions
    cached = self._segvlm_positions
    if cached is None or cached[0].shape != positions.shape or not torch.equal(cached[0], positions):
        cached = self._segvlm_positions = (positions.clone(), positions.contiguous(memory_format=torch.channels_last))
    return cached[1]


def _mask_decoder(
    self,
    image_embeddings: torch.Tensor,
    image_positional_embeddings: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
    high_resolution_features: list[torch.Tensor],
    attention_similarity: torch.Tensor | None = None,
    target_embedding: torch.Tensor | None = None,
    **kwargs,
):
    """The SAM 2 / EdgeTAM mask decoder for one image and one prompt set while reduced-precision CPU paths are on:
    the same computation with its maps kept in the layouts each step reads. transformers' decoder copies the
    (channels-last) image embeddings to channels-first (``repeat_interleave`` by 1), so every token-side step
    of its two-way transformer (adds of the positional embeddings, norms, projections) reads a transposed
    (4096, 256) map; the upscaling convolutions get an input whose strides oneDNN reorders, and the skip
    connections add channels-last to channels-first maps. Here the transformer's token maps are contiguous,
    the convolutions read channels-last maps, and each skip connection is one compiled pass with its norm and
    GELU."""
    switch: _Switch = self._segvlm_switch
    batch_size, channels, height, width = image_embeddings.shape
    if (
        not (switch.on and switch.reduced and cpu_attention.usable(image_embeddings))
        or batch_size != 1
        or sparse_prompt_embeddings.shape[1] != 1
        or attention_similarity is not None
        or target_embedding is not None
        or kwargs
    ):
        return type(self).forward(
            self,
            image_embeddings,
            image_positional_embeddings,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            multimask_output,
            high_resolution_features,
            attention_similarity,
            target_embedding,
            **kwargs,
        )
    output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])  # (T, C)
    tokens = output_tokens[None, None]  # (1, 1, T, C)
    if sparse_prompt_embeddings.shape[0] != 0:
        tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=2)  # (1, 1, T + P, C)
    point_embeddings = tokens.to(self.iou_token.weight.dtype)
    image = (image_embeddings + dense_prompt_embeddings).contiguous(memory_format=torch.channels_last)  # (1, C, H, W)
    positions = _token_positions(self, image_positional_embeddings)  # (1, C, H, W) channels-last
    point_embeddings, keys = self.transformer(
        point_embeddings=point_embeddings,
        image_embeddings=image,
        image_positional_embeddings=positions,
        attention_similarity=None,
        target_embedding=None,
    )  # (1, 1, T + P, C), (1, 1, HW, C)
    iou_token_out = point_embeddings[:, :, 1, :]
    mask_tokens_out = point_embeddings[:, :, 2 : (2 + self.num_mask_tokens), :]

    grid = keys.view(1, height, width, channels).permute(0, 3, 1, 2)  # (1, C, H, W) channels-last
    feat_s0, feat_s1 = high_resolution_features
    norm = self.upscale_layer_norm
    upscaled = cpu_attention.fused(
        _skip_norm_gelu, self.upscale_conv1(grid), feat_s1, norm.weight, norm.bias, norm.eps
    )  # (1, 2H, 2W, C/4)
    upscaled = self.upscale_conv2(upscaled.permute(0, 3, 1, 2))  # (1, C/8, 4H, 4W) channels-last
    upscaled = cpu_attention.fused(_skip_gelu, upscaled, feat_s0)  # (1, C/8, 4H, 4W) contiguous

    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, :, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2
    )  # (1, 1, masks, C/8)
    _, upscaled_channels, upscaled_height, upscaled_width = upscaled.shape
    flat = upscaled.view(1, 1, upscaled_channels, upscaled_height * upscaled_width)  # (1, 1, C/8, 16HW)
    masks = (hyper_in @ flat).view(1, 1, -1, upscaled_height, upscaled_width)  # (1, 1, masks, 4H, 4W)

    iou_pred = self.iou_prediction_head(iou_token_out)
    object_score_logits = self.pred_obj_score_head(point_embeddings[:, :, 0, :])
    if multimask_output:
        mask_slice = slice(1, None)
        masks, iou_pred = masks[:, :, mask_slice, :, :], iou_pred[:, :, mask_slice]
    elif self.dynamic_multimask_via_stability and not self.training:
        mask_slice = slice(0, 1)
        masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
    else:
        mask_slice = slice(0, 1)
        masks, iou_pred = masks[:, :, mask_slice, :, :], iou_pred[:, :, mask_slice]
    return masks, iou_pred, mask_tokens_out[:, :, mask_slice], object_score_logits


# -- tracking frame (exact) ---------------------------------------------------------------------------------
def _wide_positions(self) -> torch.Tensor:
    """``get_image_wide_positional_embeddings()`` (1, C, H, W), a channels-last view of its (H, W, C) map: a
    function of the prompt encoder's weights only, computed once per weights version."""
    table = self.shared_image_embedding.positional_embedding
    key = (table._version, table.dtype, table.device)
    cached = self._segvlm_wide_positions
    if cached is None or cached[0] != key:
        cached = self._segvlm_wide_positions = (key, type(self).get_image_wide_positional_embeddings(self))
    return cached[1]


def _tracking_frame(
    self,
    pixel_values=None,
    input_points=None,
    input_labels=None,
    input_boxes=None,
    input_masks=None,
    image_embeddings=None,
    multimask_output: bool = True,
    attention_similarity=None,
    target_embedding=None,
    **kwargs,
):
    """``_single_frame_forward`` for a tracked frame (memory-conditioned features, no prompt) while the fast paths
    are on, computing what transformers' does with less work, exactly:

    * the image-wide positional embeddings are computed once (:func:`_wide_positions`), and passed as they are
      made, a channels-last map, instead of copied channels-first by a ``repeat`` over a batch of one;
    * of the multimask output, only the chosen mask is upsampled to the 1024 x 1024 map the memory encoder
      reads (transformers upsamples all three in float32 and rounds them, then keeps one; bilinear upsampling
      treats each mask on its own, so the kept mask has the same bits).
    """
    original = type(self)._single_frame_forward
    if (
        not getattr(self, _SWITCH).on
        or pixel_values is not None
        or image_embeddings is None
        or image_embeddings[-1].shape[0] != 1
        or any(x is not None for x in (input_points, input_labels, input_boxes, input_masks))
        or attention_similarity is not None
        or target_embedding is not None
        or kwargs
    ):
        return original(
            self,
            pixel_values,
            input_points,
            input_labels,
            input_boxes,
            input_masks,
            image_embeddings,
            multimask_output,
            attention_similarity,
            target_embedding,
            **kwargs,
        )
    from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE

    embeddings = image_embeddings[-1]  # (1, C, H, W)
    points = torch.zeros(1, 1, 1, 2, dtype=embeddings.dtype, device=embeddings.device)  # an empty point ...
    labels = -torch.ones(1, 1, 1, dtype=torch.int32, device=embeddings.device)  # ... labelled padding
    sparse, dense = self.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
    low_res_multimasks, iou_scores, sam_output_tokens, object_score_logits = self.mask_decoder(
        image_embeddings=embeddings,
        image_positional_embeddings=_wide_positions(self),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        high_resolution_features=image_embeddings[:-1],
        attention_similarity=None,
        target_embedding=None,
    )  # (1, 1, masks, h, w), (1, 1, masks), (1, 1, masks, C), (1, 1, 1)
    is_obj_appearing = object_score_logits > 0
    low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
    best = torch.argmax(iou_scores, dim=-1).reshape(()) if multimask_output else 0  # the mask kept
    low_res_masks = low_res_multimasks[:, :, best].contiguous()  # (1, 1, h, w), stored by the session
    high_res_masks = F.interpolate(
        low_res_masks.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
    ).to(low_res_masks.dtype)  # (1, 1, S, S)
    sam_output_token = sam_output_tokens[:, :, best if sam_output_tokens.size(2) > 1 else 0]  # (1, 1, C)
    object_pointer = self.object_pointer_proj(sam_output_token)  # (1, C)
    appearing = is_obj_appearing.to(object_pointer.dtype)
    object_pointer = appearing * object_pointer + (1 - appearing) * self.no_object_pointer
    return _segmentation_output(self)(
        iou_scores=iou_scores,
        pred_masks=low_res_masks,
        high_res_masks=high_res_masks,
        object_pointer=object_pointer,
        object_score_logits=object_score_logits,
        image_embeddings=image_embeddings,
    )


def _segmentation_output(model) -> type:
    """The model's output class of ``_single_frame_forward`` (``EdgeTamVideoImageSegmentationOutput`` for
    ``EdgeTamVideoModel``)."""
    module = sys.modules[type(model).__module__]
    return getattr(module, type(model).__name__.removesuffix("Model") + "ImageSegmentationOutput")


# -- image encoder (exact) ----------------------------------------------------------------------------------
def _multiscale_attention(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    """``Sam2MultiScaleAttention.forward`` without the attention weights it computes and never uses."""
    if not self._segvlm_switch.on:
        return type(self).forward(self, hidden_states, **kwargs)
    from transformers.models.sam2.modeling_sam2 import do_pool

    batch_size, height, width, _ = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
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
    return self.proj(output)


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
    (:func:`segvlm.segmentation.folded_backbone.fold`: folded batch norms, channels-last, fused GELUs) while
    reduced-precision paths are on; built once per dtype. Same function, other rounding; CPU only."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or pixel_values.device.type != "cpu":
        return type(self).forward(self, pixel_values, **kwargs)
    folded = self._segvlm_folded.get(pixel_values.dtype)
    if folded is None:
        from segvlm.segmentation.folded_backbone import fold

        folded = self._segvlm_folded[pixel_values.dtype] = fold(self, pixel_values.dtype)
    return folded(pixel_values.contiguous(memory_format=torch.channels_last), **kwargs)


def _gelu_mlp(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """The Hiera blocks' two-layer GELU MLP (``Sam2FeedForward``) with its first projection and the GELU as one
    oneDNN product (the exact GELU as a post-op on the float32 accumulator: one rounding instead of two, and no
    second pass over the 4x-wide hidden map) while reduced-precision CPU paths are on."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or hidden_states.device.type != "cpu":
        return type(self).forward(self, hidden_states)
    lead = hidden_states.shape[:-1]
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])  # (tokens, C)
    proj_in = self.proj_in
    hidden = torch.ops.mkldnn._linear_pointwise(flat, proj_in.weight, proj_in.bias, "gelu", [], "none")  # (tokens, 4C)
    return self.proj_out(hidden.view(*lead, -1))


def _is_gelu_mlp(module) -> bool:
    """A two-layer ``Sam2FeedForward`` with the exact (erf) GELU, where oneDNN's fused product is available."""
    from segvlm.segmentation.folded_backbone import mkldnn_available

    activation = getattr(module, "activation", None)
    return (
        module.num_layers == 2
        and not module.sigmoid_output
        and getattr(activation, "act", None) is F.gelu
        and mkldnn_available()
    )


def _relu_mlp(self, x: torch.Tensor) -> torch.Tensor:
    """EdgeTAM's memory-attention MLP (``256 -> 2048 -> 256``, ReLU) with the first product, its bias and the ReLU
    as one oneDNN product while reduced-precision CPU paths are on: the product writes the rectified map once,
    where the plain linear first copies its bias into the 4096 x 2048 output, multiplies, then the ReLU makes a
    third pass over it."""
    switch: _Switch = self._segvlm_switch
    if not (switch.on and switch.reduced) or x.device.type != "cpu" or self.training:
        return type(self).forward(self, x)
    up = self.up_proj
    flat = x.reshape(-1, x.shape[-1])  # (tokens, C)
    hidden = torch.ops.mkldnn._linear_pointwise(flat, up.weight, up.bias, "relu", [], "none")  # (tokens, 8C)
    return self.down_proj(hidden.view(*x.shape[:-1], -1))  # (..., C)


def _is_relu_mlp(module) -> bool:
    """EdgeTAM's memory-attention MLP with a ReLU (possibly already the in-place one), where oneDNN fuses it."""
    from segvlm.segmentation.folded_backbone import mkldnn_available

    return type(module.act_fn) in (nn.ReLU, _InPlaceReLU) and mkldnn_available()


class _InPlaceReLU(nn.ReLU):
    """The memory attention MLP's ReLU, applied in place on the fresh 4096 x 2048 hidden map while fast paths
    are on: the same values, without allocating and writing a second map (about a third of the MLP's time in
    bf16 on CPU). Exact in every dtype."""

    def __init__(self, switch: _Switch) -> None:
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
    if getattr(model, _SWITCH, None) is not None:
        return
    switch = _Switch()
    setattr(model, _SWITCH, switch)
    setattr(model, _ATTRIBUTE, None)
    if type(model).__name__ == "Sam2VideoModel":
        model._prepare_memory_conditioned_features = types.MethodType(_fast_prepare, model)
    if type(model).__name__ in ("Sam2VideoModel", "EdgeTamVideoModel"):
        model._segvlm_wide_positions = None
        model._single_frame_forward = types.MethodType(_tracking_frame, model)
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
