"""A faster SAM 2 memory attention that reuses each memory frame's key/value projections across frames.

Every tracked frame, SAM 2's memory attention cross-attends the current frame's 4096 tokens to up to
``num_maskmem`` (7) memory frames of 4096 tokens each, in each of its 4 layers. transformers recomputes,
for every frame and layer, the key and value projections of all memory tokens and the rotary encoding of
the keys (in float32), although a memory frame's features never change once written. The maths allows
caching them:

* value: ``v_proj(m)`` depends on the memory features ``m`` only: computed once per memory frame and layer;
* key: ``RoPE(k_proj(m + p_spatial + p_time[t]))`` where the temporal encoding ``p_time[t]`` depends on the
  frame's distance ``t`` to the current frame, which changes every frame. Both ``k_proj`` and RoPE are
  linear, so the key is ``RoPE(k_proj(m + p_spatial)) + RoPE(W_k p_time[t])``: the first term is cached per
  memory frame and layer, the second is one (4096, 256) tensor per layer and offset.

Object-pointer tokens (a few dozen, no RoPE) are projected every frame as before. The result equals
transformers' up to floating-point rounding (summation order), so it is used only in reduced precision,
where that rounding is already far larger; float32 keeps transformers' exact code path.

Use :func:`install` once on a ``Sam2VideoModel`` and run frames inside ``with MemoryCache().active(model):``;
outside such a block the model behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

_ATTRIBUTE = "_segvlm_memory_cache"


@dataclass
class _FrameEntry:
    """Cached per-layer projections of one memory frame (kept while its features tensor is alive)."""

    features: weakref.ref
    last_used: int
    keys: list[torch.Tensor]  # per layer: (B, heads, HW, head_dim), RoPE applied, temporal term excluded
    values: list[torch.Tensor]  # per layer: (B, heads, HW, head_dim)


@dataclass
class MemoryCache:
    """Projections of memory frames, keyed by the identity of the frame's ``maskmem_features`` tensor.

    An entry lives as long as the session holds that tensor: when the session prunes a frame (or replaces
    its memory after new prompts) the weak reference dies and the entry is dropped on the next frame, so
    the cache is bounded by the memory window.
    """

    frames: dict[int, _FrameEntry] = field(default_factory=dict)
    step: int = 0  # incremented per activation (one per session frame)

    @contextlib.contextmanager
    def active(self, model) -> Iterator[None]:
        """Route ``model``'s memory attention through this cache for the duration of the block."""
        install(model)
        self.step += 1
        self.prune()
        setattr(model, _ATTRIBUTE, self)
        try:
            yield
        finally:
            setattr(model, _ATTRIBUTE, None)

    def prune(self) -> None:
        """Drop entries whose frame is gone or was not read on the previous frame (it has left the window)."""
        for key in [
            key for key, entry in self.frames.items() if entry.features() is None or entry.last_used < self.step - 1
        ]:
            del self.frames[key]

    def entry(self, model, features: torch.Tensor, spatial_pos: torch.Tensor) -> _FrameEntry:
        """The cached projections of one memory frame, computing them on first use.

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
        keys, values = [], []
        for layer in attention.layers:
            cross = layer.cross_attn_image
            shape = (memory.shape[0], -1, cross.num_attention_heads, cross.head_dim)
            projected = cross.k_proj(keyed).view(*shape).transpose(1, 2)  # (B, heads, HW, head_dim)
            keys.append(_apply_rope(projected.float(), cos, sin).to(memory.dtype))
            values.append(cross.v_proj(memory).view(*shape).transpose(1, 2))  # (B, heads, HW, head_dim)
        entry = _FrameEntry(weakref.ref(features), self.step, keys, values)
        self.frames[key] = entry
        return entry


def _rope(model, tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory attention's rotary cos/sin for its feature grid, each (HW, head_dim) in float32."""
    attention = model.memory_attention
    dummy = torch.empty(1, tokens, 1, device=device, dtype=torch.float32)
    return attention.rotary_emb(dummy, attention.position_ids)


def _rotate_pairwise(x: torch.Tensor) -> torch.Tensor:
    x = x.view(*x.shape[:-1], -1, 2)  # (..., D/2, 2)
    first, second = x.unbind(dim=-1)
    return torch.stack((-second, first), dim=-1).flatten(start_dim=-2)  # (..., D)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_pairwise(x) * sin


def _cross_attention(
    cross,
    query: torch.Tensor,
    frame_keys: list[torch.Tensor],
    frame_values: list[torch.Tensor],
    temporal_keys: list[torch.Tensor],
    pointers: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """Cross-attention of ``query`` (B, 1, HW, C) to cached memory frames plus fresh pointer tokens."""
    batch = query.shape[0]
    shape = (batch, -1, cross.num_attention_heads, cross.head_dim)
    q = cross.q_proj(query).view(*shape).transpose(1, 2)  # (B, heads, HW, head_dim)
    q = _apply_rope(q.float(), cos, sin).to(q.dtype)
    keys = [(k.float() + t).to(q.dtype) for k, t in zip(frame_keys, temporal_keys)]  # each (B, heads, HW, d)
    values = list(frame_values)
    if pointers is not None:
        pointer_inputs, pointer_pos = pointers  # each (B, 1, P, C_mem)
        keys.append(cross.k_proj(pointer_inputs + pointer_pos).view(*shape).transpose(1, 2))  # (B, heads, P, d)
        values.append(cross.v_proj(pointer_inputs).view(*shape).transpose(1, 2))  # (B, heads, P, d)
    k = torch.cat(keys, dim=2)  # (B, heads, N, head_dim)
    v = torch.cat(values, dim=2)  # (B, heads, N, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, scale=cross.scaling)  # (B, heads, HW, head_dim)
    out = out.transpose(1, 2).reshape(batch, 1, -1, cross.num_attention_heads * cross.head_dim)  # (B, 1, HW, C)
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

    if cache is None or self.num_maskmem == 0 or is_initial_conditioning_frame:
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
                pointer_pos.transpose(0, 1).unsqueeze(1),  # (B, 1, P, C_mem)
            )

    attention = self.memory_attention
    output = current_vision_features
    if current_vision_positional_embeddings is not None:
        output = output + 0.1 * current_vision_positional_embeddings  # (HW, B, C)
    queries = output.transpose(0, 1).unsqueeze(1)  # (B, 1, HW, C)
    cos, sin = attention.rotary_emb(queries[:, 0], attention.position_ids)  # each (HW, head_dim)
    for index, layer in enumerate(attention.layers):
        cross = layer.cross_attn_image
        # Temporal term of each memory frame's key: RoPE(W_k p_time[offset]) broadcast over positions.
        temporal_keys = []
        for offset in offsets:
            encoding = self.memory_temporal_positional_encoding[offset - 1].reshape(-1)  # (C_mem,)
            projected = (cross.k_proj.weight @ encoding.to(cross.k_proj.weight.dtype)).float()  # (C,)
            projected = projected.view(cross.num_attention_heads, 1, cross.head_dim)  # (heads, 1, head_dim)
            temporal_keys.append(_apply_rope(projected.expand(-1, cos.shape[-2], -1), cos, sin))  # (heads, HW, d)

        query = layer.layer_norm1(queries)
        query, _ = layer.self_attn(query=query, key=query, value=query, position_embeddings=(cos, sin))
        queries = queries + query
        query = layer.layer_norm2(queries)
        query = _cross_attention(
            cross,
            query,
            [e.keys[index] for e in entries],
            [e.values[index] for e in entries],
            temporal_keys,
            pointers,
            cos,
            sin,
        )
        queries = queries + query
        query = layer.layer_norm3(queries)
        queries = queries + layer.linear2(layer.activation(layer.linear1(query)))
    normed = attention.layer_norm(queries).transpose(0, 1)  # (1, B, HW, C)
    return normed.squeeze(1).transpose(1, 2).view(batch_size, num_channels, height, width)  # (B, C, H, W)


def install(model) -> None:
    """Give ``model`` (a ``Sam2VideoModel``) the cached memory attention; inert until a cache is active."""
    if getattr(model, "_segvlm_fast_installed", False):
        return
    model._prepare_memory_conditioned_features = types.MethodType(_fast_prepare, model)
    setattr(model, _ATTRIBUTE, None)
    model._segvlm_fast_installed = True
