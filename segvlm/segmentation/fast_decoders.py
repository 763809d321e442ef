"""The fast paths after the memory attention: the memory encoder, the mask decoder and the tracked frame.

The tracked frame is ``_single_frame_forward`` for a memory-conditioned frame with no prompt: it calls the mask
decoder and upsamples the mask that the memory encoder then reads.

Patched onto a model (SAM 2 or EdgeTAM) by :func:`segvlm.segmentation.fast_sam2.install`, each inert unless the
model's :class:`~segvlm.segmentation.fast_switch.Switch` is on (a frame inside ``MemoryCache.active``).

Reduced precision only (bf16/fp16 on CPU; float32 keeps transformers' code path and its bits), the same
computation with fewer passes over memory:

* the memory encoder: each mask-downsampler layer's channels-first norm and GELU as one compiled pass; the fuser
  blocks' norm writing its channels-last map directly, their first product carrying the GELU (oneDNN post-op)
  and the layer scale, permute back and residual add as one compiled pass; the whole encoder in channels-last
  memory, so the frame's features (a token map) are read in place;
* the mask decoder: its maps kept in the layouts each step reads (contiguous token maps for the two-way
  transformer, channels-last maps for the upscaling convolutions, each skip connection one compiled pass with
  its norm and GELU), and the image tokens' attention to the few prompt tokens as two block-diagonal products.

Exact (any dtype): the tracked frame's ``_single_frame_forward`` computes the image-wide positional embeddings
once and upsamples only the kept mask of the multimask output.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from segvlm.segmentation import cpu_attention, onednn
from segvlm.segmentation.fast_image_encoder import GLOBAL_TOKENS
from segvlm.segmentation.fast_switch import SWITCH_ATTRIBUTE, Switch, derived, weights_key


# -- memory encoder (reduced precision) ---------------------------------------------------------------------
def _channel_norm_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``gelu(layer_norm over the channels of (B, C, H, W) x)`` in float32, rounded once to ``x``'s dtype, in
    ``x``'s layout."""
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
    reads the conv's output once (about 1 ms per layer).

    The result is channels-last, the layout the next convolution reads in place (channels-first, the
    downsampler's later convolutions reorder their inputs and its output meets the channels-last features in a
    mixed-layout add: 7 % of the memory encoder on one thread). The first layer's convolution (of the one-channel
    mask) writes channels-first: its pass keeps that layout and torch's copy transposes the result, 0.7 ms at
    512 x 512 x 4 where the compiled pass's own channels-last writes took 1.8 ms."""
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(x)):
        return type(self).forward(self, x)
    norm = self.layer_norm
    out = cpu_attention.fused(_channel_norm_gelu, self.conv(x), norm.weight, norm.bias, norm.eps)  # (B, C, H, W)
    return out.contiguous(memory_format=torch.channels_last)


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
    switch: Switch = self._segvlm_switch
    if not (switch.on and switch.reduced and cpu_attention.usable(hidden_states)):
        return type(self).forward(self, hidden_states)
    norm, up = self.layer_norm, self.pointwise_conv1
    batch, channels, height, width = hidden_states.shape
    mixed = self.depthwise_conv(hidden_states)  # (B, C, H, W)
    normed = cpu_attention.fused(_norm_channels_last, mixed, norm.weight, norm.bias, norm.eps)  # (B, H, W, C)
    flat = normed.view(-1, channels)  # (BHW, C)
    expanded = onednn.linear(up, flat, "gelu")  # (BHW, 4C)
    hidden = onednn.linear(self.pointwise_conv2, expanded).view(batch, height, width, channels)  # (B, H, W, C)
    return cpu_attention.fused(_scaled_residual, hidden_states, hidden, self.scale)  # (B, C, H, W)


def _is_fuser_block(module) -> bool:
    """A ConvNeXt memory fuser block with a channels-first norm and the exact GELU, where oneDNN fuses it."""
    return (
        getattr(module.layer_norm, "data_format", None) == "channels_first"
        and getattr(module.activation, "act", None) is F.gelu
        and onednn.available()
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
    switch: Switch = self._segvlm_switch
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
    switch: Switch = self._segvlm_switch
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
    switch: Switch = self._segvlm_switch
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
    key = weights_key(self.shared_image_embedding.positional_embedding)
    return derived(self, "wide positions", key, lambda: type(self).get_image_wide_positional_embeddings(self))


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
        not getattr(self, SWITCH_ATTRIBUTE).on
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
