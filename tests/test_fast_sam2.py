"""The fast SAM 2 paths: the chunked CPU attention kernel, the cached keys with values after the attention,
the exact image-encoder savings, and the fallback when the kernel cannot be compiled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segvlm.segmentation import cpu_attention, fast_image_encoder, fast_sam2


def _qkv(lead, length, keys, width, value_width=None, dtype=torch.bfloat16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, length, width, generator=generator)
    k = torch.randn(*lead, keys, width, generator=generator)
    v = torch.randn(*lead, keys, value_width or width, generator=generator)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("lead", [(1, 1), (1, 4), (2, 3)])
def test_chunked_kernel_matches_float32_attention(lead):
    q, k, v = _qkv(lead, 300, 700, 32)  # 300 queries: one full chunk of 256 and a partial one
    out = cpu_attention.attention(q, k, v, scale=32**-0.5, min_scores=0)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=32**-0.5)
    assert out.shape == reference.shape and out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.02  # bf16 rounding of scores, probabilities and output
    sdpa = F.scaled_dot_product_attention(q, k, v, scale=32**-0.5)  # what transformers runs in bf16
    assert (out.float() - reference).abs().mean() <= 1.5 * (sdpa.float() - reference).abs().mean() + 1e-4


def test_kernel_takes_narrower_values():
    q, k, v = _qkv((1, 1), 256, 512, 64, value_width=16)
    out = cpu_attention.attention(q, k, v, scale=0.125, min_scores=0)
    weights = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 0.125, dim=-1)
    assert out.shape == (1, 1, 256, 16)
    assert (out.float() - weights @ v.float()).abs().max() < 0.02


@pytest.mark.parametrize("heads", [1, 2])
def test_narrow_keys_score_like_their_projections(heads):
    """Keys given as the 64-wide features they are projected from (EdgeTAM's memory keys without RoPE) attend as
    the projected keys would: softmax over both sets of keys at once, within bf16 rounding."""
    generator = torch.Generator().manual_seed(5)
    width, narrow_width = 32, 8
    q, k, v = _qkv((1, heads), 300, 200, width, value_width=narrow_width)
    features = torch.randn(1, 1, 150, narrow_width, generator=generator).to(torch.bfloat16)  # (B, 1, N2, d2)
    weight = (torch.randn(heads * width, narrow_width, generator=generator) / 3).to(torch.bfloat16)
    bias = torch.randn(heads * width, generator=generator).to(torch.bfloat16)
    values = torch.cat([v, torch.randn(1, heads, 150, narrow_width, generator=generator).to(torch.bfloat16)], dim=2)
    narrow = cpu_attention.NarrowKeys.project(q, features, weight, bias)
    out = cpu_attention.attention_with_narrow_keys(q, k, narrow, values, scale=width**-0.5)
    projected = (features.float() @ weight.float().T + bias.float()).view(1, 150, heads, width).transpose(1, 2)
    keys = torch.cat([k.float(), projected], dim=2)  # (1, heads, N1 + N2, d)
    reference = F.scaled_dot_product_attention(q.float(), keys, values.float(), scale=width**-0.5)
    assert out.shape == reference.shape == (1, heads, 300, narrow_width) and out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.03


def test_stacked_and_composed_products_follow_weight_changes():
    """The stacked q/k/v product and the composed value-output product are cached per module and rebuilt when one
    of their weights changes."""
    from transformers import EdgeTamVideoConfig
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoMemoryAttentionLayer

    layer = EdgeTamVideoMemoryAttentionLayer(EdgeTamVideoConfig()).to(torch.bfloat16).eval()
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(1, 1, 64, 256, generator=generator).to(torch.bfloat16)
    mixed = torch.randn(1, 1, 64, 64, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        for _ in range(2):
            attn, cross = layer.self_attn, layer.cross_attn_image
            stacked = fast_sam2._stacked_projections(attn, torch.bfloat16)(hidden)
            expected = torch.cat([attn.q_proj(hidden), attn.k_proj(hidden), attn.v_proj(hidden)], dim=-1)
            assert (stacked.float() - expected.float()).abs().max() <= 0.02 * expected.float().abs().max()
            values = fast_sam2._values_out(cross, mixed)
            expected = cross.o_proj(cross.v_proj(mixed[0, 0]))
            assert (values.float() - expected.float()).abs().max() <= 0.03 * expected.float().abs().max()
            with torch.no_grad():  # the second round reads changed weights
                attn.k_proj.weight.mul_(-3)
                cross.v_proj.bias.add_(1)


def test_a_tracked_model_can_still_be_copied_and_saved(tmp_path):
    """What the fast paths derive from the weights (oneDNN's packed weights among them, which cannot be copied) is
    kept beside the model, not on it: after a bf16 frame the model deep-copies and saves as before."""
    import copy

    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter

    segmenter = EdgeTamVideoSegmenter.from_config(SegmenterConfig(model="tiny-random:edgetam", dtype="bfloat16"))
    session = segmenter.start(48, 64)
    frame = np.random.default_rng(8).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for index in range(3):
        session.step(frame, [ObjectPrompt(1, box=(8, 8, 40, 40))] if index == 0 else [])
    copied = copy.deepcopy(segmenter.model)
    assert torch.equal(
        copied.memory_attention.layers[0].self_attn.q_proj.weight,
        segmenter.model.memory_attention.layers[0].self_attn.q_proj.weight,
    )
    torch.save(segmenter.model, tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size > 0


def test_edgetam_memory_layout_splits_keys_as_transformers_rotates_them():
    """The keys EdgeTAM's cross-attention rotates (each frame's 2-D latents) and those it leaves (1-D latents,
    object pointers), found by rotating an index map with transformers' own function."""
    from transformers.models.edgetam_video.modeling_edgetam_video import apply_rotary_pos_emb_2d_cross_attn

    frames, plain, grid, pointers = 3, 5, 4, 2
    keys = frames * (plain + grid) + pointers
    layout = fast_sam2._MemoryLayout.of(keys, grid, pointers, frames)
    assert layout == fast_sam2._MemoryLayout(frames, plain, grid, pointers)
    tokens = torch.arange(1, keys + 1, dtype=torch.float32).view(1, 1, keys, 1).expand(1, 1, keys, 2)  # no zero
    zeros = torch.zeros(grid, 2)
    _, rotated = apply_rotary_pos_emb_2d_cross_attn(  # a zero rotation (cos 0, sin 0) marks the rotated keys
        tokens[..., :1, :], tokens, zeros[:1] + 1, zeros[:1], zeros, zeros, pointers, frames
    )
    marked = rotated[0, 0, :, 0] == 0
    first, second = layout.split(tokens[0, 0])
    assert first[:, 0].tolist() == tokens[0, 0, marked, 0].tolist()
    assert second[:, 0].tolist() == tokens[0, 0, ~marked, 0].tolist()
    assert fast_sam2._MemoryLayout.of(keys + 1, grid, pointers, frames) is None  # not frames of equal size


def test_under_a_dispatch_mode_the_kernel_runs_uncompiled(monkeypatch):
    """A flop counter (as the benchmark uses) cannot trace compiled code: the same maths runs eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(cpu_attention, "_kernel", lambda: pytest.fail("compiled under a dispatch mode"))
    q, k, v = _qkv((1, 1), 256, 256, 32)
    with FlopCounterMode(display=False) as counter:
        out = cpu_attention.attention(q, k, v, 0.2, min_scores=0)
    assert counter.get_total_flops() == 2 * (2 * 256 * 256 * 32)  # q @ k^T and p @ v
    assert cpu_attention.usable(q) and out.shape == (1, 1, 256, 32)


def test_small_attentions_skip_the_compiled_kernel(monkeypatch):
    monkeypatch.setattr(cpu_attention, "_kernel", lambda: pytest.fail("compiled for a small attention"))
    q, k, v = _qkv((1, 1), 64, 64, 16)
    assert torch.equal(cpu_attention.attention(q, k, v, 0.25), F.scaled_dot_product_attention(q, k, v, scale=0.25))


def test_float32_is_scaled_dot_product_attention_exactly():
    q, k, v = _qkv((1, 2), 100, 200, 16, dtype=torch.float32)
    assert not cpu_attention.usable(q)
    assert torch.equal(cpu_attention.attention(q, k, v, 0.25), F.scaled_dot_product_attention(q, k, v, scale=0.25))


def test_a_compiler_failure_warns_once_and_falls_back(monkeypatch):
    def broken():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpu_attention, "_kernel", broken)
    monkeypatch.setattr(cpu_attention, "_unavailable", None)
    q, k, v = _qkv((1, 1), 64, 64, 16)
    with pytest.warns(RuntimeWarning, match="could not be compiled.*C\\+\\+ compiler"):
        out = cpu_attention.attention(q, k, v, 0.25, min_scores=0)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, scale=0.25))
    assert not cpu_attention.usable(q)  # later calls go straight to the portable kernel, without warning


def test_values_after_the_attention_equal_projected_values():
    """softmax(QK^T)(M W^T + b) == (softmax(QK^T) M) W^T + b: the identity the cross-attention relies on."""
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 40, generator=generator, dtype=torch.float64)
    memory = torch.randn(40, 8, generator=generator, dtype=torch.float64)
    projection = torch.nn.Linear(8, 32, dtype=torch.float64)
    probabilities = torch.softmax(scores, dim=-1)
    before = probabilities @ projection(memory)
    after = projection(probabilities @ memory)
    assert torch.allclose(before, after, atol=1e-12)


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_install_is_inert_outside_a_frame_and_exact_inside(model):
    """Installed paths change nothing outside ``MemoryCache.active``; inside, the image encoder's exact savings
    give the same bits in float32 (its reduced-precision kernels and EdgeTAM's folded convolutions do not run
    in float32)."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="float32"), fast=False)
    model = segmenter.model
    pixels = segmenter.preprocess(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    with torch.inference_mode():
        before = model.vision_encoder(pixels)
        fast_sam2.install(model)
        outside = model.vision_encoder(pixels)
        with fast_sam2.MemoryCache().active(model, torch.float32):
            inside = model.vision_encoder(pixels)
            again = model.vision_encoder(pixels)  # served from the position-encoding caches
    for name in ("fpn_hidden_states", "fpn_position_encoding"):
        runs = [getattr(output, name) for output in (before, outside, inside, again)]
        for first, *others in zip(*runs):
            assert all(torch.equal(first, other) for other in others)
    assert not model._segvlm_fast_switch.on  # switched off again when the block ends


@pytest.mark.parametrize(
    ("model", "kernel"), [("tiny-random:sam2", True), ("tiny-random:edgetam", True), ("tiny-random:sam2", False)]
)
def test_fast_paths_track_like_transformers_in_bfloat16(model, kernel, monkeypatch):
    """The whole fast frame, compiled kernel included (forced on at this tiny size), against transformers' code;
    and without the CPU kernel, as on a GPU (cached keys, values projected before a fused attention)."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    monkeypatch.setattr(cpu_attention, "MIN_SCORES", 0)
    if not kernel:
        monkeypatch.setattr(cpu_attention, "usable", lambda query: False)
    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    plain = kind.from_config(SegmenterConfig(model=model, dtype="bfloat16"), fast=False)
    fast = kind(plain.model, plain.processor, plain.config, dtype=torch.bfloat16)
    assert fast.fast  # on by default
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    sessions = plain.start(48, 64), fast.start(48, 64)
    prompts = [ObjectPrompt(1, box=(8, 8, 40, 40)), ObjectPrompt(2, box=(30, 10, 60, 44))]
    errors, inter, union = [], 0, 0
    for index, frame in enumerate(frames):
        masks = [session.step(frame, prompts if index == 0 else []).masks for session in sessions]
        errors.append((sessions[0].last_logits - sessions[1].last_logits).abs().max().item())
        inter, union = inter + (masks[0] & masks[1]).sum(), union + (masks[0] | masks[1]).sum()
    assert union == 0 or inter / union >= 0.97
    assert max(errors) < 0.05  # logits within bf16 rounding of transformers'


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_install_finds_every_module_it_speeds_up(model):
    """The paths attach to transformers' modules by class name: a release that renames one fails here, instead
    of turning its savings off silently."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="float32"), fast=False)
    fast_sam2.install(segmenter.model)
    patched = {type(m).__name__ for m in segmenter.model.modules() if hasattr(m, "_segvlm_switch")}
    if "edgetam" in model:  # the released EdgeTAM: timm RepViT encoder, perceiver memory
        expected = {"FeatureListNet", "EdgeTamSinePositionEmbedding"}
        expected |= {"EdgeTamVideoRoPESelfAttention", "EdgeTamVideoRoPECrossAttention"}
    else:
        expected = {"Sam2MultiScaleAttention", "Sam2HieraDetModel", "Sam2SinePositionEmbedding", "Sam2FeedForward"}
        assert "_prepare_memory_conditioned_features" in vars(segmenter.model)
    prefix = "EdgeTamVideo" if "edgetam" in model else "Sam2Video"
    expected |= {
        prefix + suffix
        for suffix in ("MaskDownSamplerLayer", "MemoryFuserCXBlock", "MaskDecoder", "Attention", "MemoryEncoder")
    }
    assert "_single_frame_forward" in vars(segmenter.model)
    if "edgetam" in model:
        expected |= {"EdgeTamVideoMemoryAttentionMLP", "EdgeTamVideoPerceiverAttention"}
    assert expected <= patched, expected - patched


def test_folded_convolutions_match_the_backbone_in_bfloat16():
    """EdgeTAM's RepViT through its folded, channels-last copy: the same features within bf16 rounding, and the
    copy is built once per dtype."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter

    segmenter = EdgeTamVideoSegmenter.from_config(SegmenterConfig(model="tiny-random:edgetam", dtype="bfloat16"))
    backbone = segmenter.model.vision_encoder.backbone.timm_model
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with torch.inference_mode():
        plain = backbone(pixels)
        with fast_sam2.MemoryCache().active(segmenter.model, torch.bfloat16):
            folded = backbone(pixels)
            backbone(pixels)
    assert len(backbone._segvlm_folded) == 1
    assert len(folded) == len(plain) == 4
    for a, b in zip(plain, folded):
        scale = a.float().abs().max()
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().max() <= 0.05 * scale


def test_folded_backbone_runs_compiled_and_falls_back_to_its_eager_copy(monkeypatch):
    """The folded copy runs as a compiled graph with frozen weights; with gradients on, where compiled code cannot
    run, and where this graph fails to compile (said once, without turning off the other compiled paths) the
    eager copy runs instead: the same features within bf16 rounding."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.folded_backbone import Frozen, fold
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter

    segmenter = EdgeTamVideoSegmenter.from_config(SegmenterConfig(model="tiny-random:edgetam", dtype="bfloat16"))
    folded = fold(segmenter.model.vision_encoder.backbone.timm_model, torch.bfloat16)
    frozen = Frozen(folded)
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager, fast = folded(pixels), frozen(pixels)
    assert frozen.compiled is not None and frozen.failed is None
    for a, b in zip(eager, fast):
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().max() <= 0.02 * a.float().abs().max()

    calls = []
    compiled = frozen.compiled
    frozen.compiled = lambda x: calls.append(1) or compiled(x)
    with torch.enable_grad():
        frozen(pixels)
    monkeypatch.setattr(cpu_attention, "_unavailable", "no compiler")
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(eager, frozen(pixels)))
    assert calls == []  # gradients on, then no compiler: the eager copy both times
    monkeypatch.setattr(cpu_attention, "_unavailable", None)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    failing = Frozen(folded)
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match="could not compile EdgeTAM's image encoder"):
            fallback = failing(pixels)
        again = failing(pixels)  # no second warning, no second try
    assert failing.failed and all(torch.equal(a, b) for a, b in zip(eager, fallback))
    assert all(torch.equal(a, b) for a, b in zip(eager, again))
    assert cpu_attention._unavailable is None  # the attention kernel and fused passes stay compiled


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_float32_tracking_is_bit_identical_with_fast_paths(model):
    """The fast paths are on by default; in float32 only the exact savings run (no weights computed to be thrown
    away, cached encodings, in-place ReLU): every frame's logits equal transformers' bit for bit."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    plain = kind.from_config(SegmenterConfig(model=model, dtype="float32"), fast=False)
    fast = kind(plain.model, plain.processor, plain.config, dtype=torch.float32)
    assert fast.fast and not plain.fast
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    sessions = plain.start(48, 64), fast.start(48, 64)
    prompts = [ObjectPrompt(1, box=(8, 8, 40, 40)), ObjectPrompt(2, box=(30, 10, 60, 44))]
    for index, frame in enumerate(frames):
        for session in sessions:
            session.step(frame, prompts if index == 0 else [])
        assert torch.equal(sessions[0].last_logits, sessions[1].last_logits)
    assert any(isinstance(m, fast_sam2._InPlaceReLU) for m in fast.model.modules())


def test_compiled_rope_gives_the_eager_bits_and_falls_back(monkeypatch):
    """RoPE in float32 rounded to bf16: the compiled pass equals transformers-style eager ops bit for bit; where
    compilation fails the eager ops run."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 64, 32, generator=generator).to(torch.bfloat16)
    cos, sin = torch.randn(64, 32, generator=generator), torch.randn(64, 32, generator=generator)
    eager = cpu_attention.apply_rope(x.float(), cos, sin).to(torch.bfloat16)
    assert torch.equal(cpu_attention.rope(x, cos, sin), eager)
    monkeypatch.setattr(cpu_attention, "_unavailable", "no compiler")
    assert torch.equal(cpu_attention.rope(x, cos, sin), eager)


def test_temporal_keys_are_computed_once_per_session(monkeypatch):
    """The temporal term of the memory keys depends on the layer and the frame distance only: a session caches
    one per (layer, distance) however many frames it tracks."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import Sam2VideoSegmenter

    monkeypatch.setattr(cpu_attention, "MIN_SCORES", 0)
    segmenter = Sam2VideoSegmenter.from_config(SegmenterConfig(model="tiny-random:sam2", dtype="bfloat16"))
    session = segmenter.start(48, 64)
    rng = np.random.default_rng(6)
    for index in range(9):
        frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        session.step(frame, [ObjectPrompt(1, box=(8, 8, 40, 40))] if index == 0 else [])
    model = segmenter.model
    temporal = session.memory_cache.temporal
    layers = len(model.memory_attention.layers)
    assert 0 < len(temporal) <= layers * model.config.num_maskmem
    assert {layer for layer, _, _ in temporal} == set(range(layers))


@pytest.mark.parametrize(("dtype", "layout"), [("bfloat16", torch.channels_last), ("float32", torch.preserve_format)])
def test_edgetam_pixels_arrive_channels_last_for_the_folded_encoder(dtype, layout):
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter

    segmenter = EdgeTamVideoSegmenter.from_config(SegmenterConfig(model="tiny-random:edgetam", dtype=dtype))
    assert segmenter.pixel_layout() == layout
    pixels = segmenter.preprocess(np.zeros((40, 56, 3), dtype=np.uint8))
    assert pixels.is_contiguous(memory_format=torch.channels_last) == (layout == torch.channels_last)


@pytest.mark.parametrize("fusion", [True, False])
def test_fold_fuses_gelus_only_where_onednn_can(fusion, monkeypatch):
    """The folded RepViT fuses each convolution+GELU pair when oneDNN's fused product runs here, and keeps them
    apart otherwise; both compute the backbone's function."""
    import timm

    from segvlm.segmentation import folded_backbone, onednn

    monkeypatch.setattr(onednn, "available", lambda: fusion)
    backbone = timm.create_model("repvit_m1", features_only=True, out_indices=[0, 1, 2, 3]).eval()
    folded = folded_backbone.fold(backbone, torch.bfloat16)
    fused = [m for m in folded.modules() if isinstance(m, folded_backbone.ConvGelu)]
    assert (len(fused) > 0) == fusion
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # every norm folded
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = backbone(pixels)
        out = folded(pixels.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    for a, b in zip(reference, out):
        assert (a - b.float()).abs().max() <= 0.05 * a.abs().max()


def _captured_calls(segmenter, names: set[str]) -> dict:
    """The first call's inputs of each module named in ``names`` (class names) during a short bf16 track."""
    from segvlm.segmentation.base import ObjectPrompt

    calls, handles = {}, []
    for module in segmenter.model.modules():
        if type(module).__name__ in names:

            def keep(module, args, kwargs):
                calls.setdefault(type(module).__name__, (module, args, kwargs))

            handles.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    session = segmenter.start(48, 64)
    rng = np.random.default_rng(7)
    for index in range(3):
        frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        session.step(frame, [ObjectPrompt(1, box=(8, 8, 40, 40))] if index == 0 else [])
    for handle in handles:
        handle.remove()
    return calls


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output if item is not None for tensor in _tensors(item)]  # no attention weights


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_reduced_precision_heads_match_transformers_modules(model, monkeypatch):
    """The memory encoder's and mask decoder's reduced-precision paths (channels-last memory encoder, mask
    downsampler norm+GELU, fuser block, mask decoder in its layouts, EdgeTAM's memory-attention MLP with its
    ReLU fused and its perceiver's attention through the kernel) against the same module's transformers code,
    on the inputs a bf16 track gives them: equal within bf16 rounding. The fuser's layer scale is set to one
    so that its block counts."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    monkeypatch.setattr(cpu_attention, "MIN_SCORES", 0)
    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="bfloat16"))
    prefix = "EdgeTamVideo" if "edgetam" in model else "Sam2Video"
    names = {prefix + suffix for suffix in ("MaskDownSamplerLayer", "MemoryFuserCXBlock", "MaskDecoder")}
    names.add(prefix + "MemoryEncoder")  # channels-last throughout
    if "edgetam" in model:
        names.add("EdgeTamVideoMemoryAttentionMLP")  # the product and its ReLU as one oneDNN call
        names.add("EdgeTamVideoPerceiverAttention")  # the 1-D latents' attention through the kernel
        names.add("EdgeTamVideoRoPECrossAttention")  # the keys without RoPE scored at the memory's width
        monkeypatch.setattr(fast_sam2, "PERCEIVER_SCORES", 0)
    for module in segmenter.model.modules():
        if type(module).__name__.endswith("MemoryFuserCXBlock"):
            module.scale.data.fill_(1.0)
    calls = _captured_calls(segmenter, names)
    assert set(calls) == names
    narrow_calls = []
    narrow = cpu_attention.attention_with_narrow_keys
    monkeypatch.setattr(
        cpu_attention, "attention_with_narrow_keys", lambda *a, **k: narrow_calls.append(1) or narrow(*a, **k)
    )
    for name, (module, args, kwargs) in calls.items():
        assert "forward" in vars(module), name
        with torch.inference_mode():
            plain = _tensors(type(module).forward(module, *args, **kwargs))
            with fast_sam2.MemoryCache().active(segmenter.model, torch.bfloat16):
                fast = _tensors(module(*args, **kwargs))
        assert len(plain) == len(fast)
        for a, b in zip(plain, fast):
            assert a.shape == b.shape and a.dtype == b.dtype, name
            scale = a.float().abs().max().clamp_min(1e-3)
            assert (a.float() - b.float()).abs().max() <= 0.03 * scale, name
    assert len(narrow_calls) == ("edgetam" in model)  # the cross-attention's keys without RoPE, scored narrow


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_few_keys_attention_matches_transformers_in_bfloat16(model):
    """The mask decoder's attention of the image tokens to a few prompt tokens, as block-diagonal products, against
    transformers' attention on the same module: equal within bf16 rounding."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="bfloat16"))
    fast_sam2.install(segmenter.model)
    attention = segmenter.model.mask_decoder.transformer.layers[0].cross_attn_image_to_token
    assert "forward" in vars(attention)
    generator = torch.Generator().manual_seed(8)
    width = attention.hidden_size
    tokens = torch.randn(1, 1, fast_image_encoder.GLOBAL_TOKENS, width, generator=generator).to(torch.bfloat16)
    prompts = torch.randn(1, 1, 7, width, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        plain, _ = type(attention).forward(attention, tokens, prompts, prompts)
        with fast_sam2.MemoryCache().active(segmenter.model, torch.bfloat16):
            fast, _ = attention(tokens, prompts, prompts)
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    assert (fast.float() - plain.float()).abs().max() <= 0.03 * plain.float().abs().max()


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_high_resolution_levels_are_projected_by_one_convolution(model):
    """The neck's lateral convolution of levels 0 and 1 and the mask decoder's projection of them run as one
    composed convolution in bf16: the same features within bf16 rounding (the encoder's other bf16 paths
    included); float32 keeps transformers' two convolutions (the float32 bit-identity test above)."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="bfloat16"))
    keys = list(segmenter.model.state_dict())
    fast_sam2.install(segmenter.model)
    assert list(segmenter.model.state_dict()) == keys  # patched in place: the checkpoint's layout is kept
    neck, decoder = segmenter.model.vision_encoder.neck, segmenter.model.mask_decoder
    assert all("forward" in vars(conv) for conv in (*neck.convs[-2:], decoder.conv_s0, decoder.conv_s1))
    size = segmenter.model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    with torch.inference_mode():
        plain = segmenter.model.get_image_features(pixels).fpn_hidden_states
        with fast_sam2.MemoryCache().active(segmenter.model, torch.bfloat16):
            fast = segmenter.model.get_image_features(pixels).fpn_hidden_states
            level0 = torch.zeros(1, neck.convs[-1].in_channels, 8, 8, dtype=torch.bfloat16)
            assert neck.convs[-1](level0).shape[1] == decoder.conv_s0.out_channels  # the composed convolution ran
        composed = fast_image_encoder._composed(neck.convs[-1], decoder.conv_s0, torch.bfloat16)[0]
    assert composed.shape[:2] == (decoder.conv_s0.out_channels, neck.convs[-1].in_channels)
    for level in (0, 1):
        assert fast[level].shape == plain[level].shape  # (HW, B, C / 8) and (HW, B, C / 4): already projected
        scale = plain[level].float().abs().max()
        assert (fast[level].float() - plain[level].float()).abs().max() <= 0.02 * scale


@pytest.mark.parametrize("model", ["tiny-random:sam2", "tiny-random:edgetam"])
def test_objects_share_the_first_self_attention_of_a_frame(model, monkeypatch):
    """The memory attention's first self-attention reads the same frame features for every object: with three
    objects it is computed once per frame and layer where the input repeats, and the masks keep their bits."""
    from segvlm.config import SegmenterConfig
    from segvlm.segmentation.base import ObjectPrompt
    from segvlm.segmentation.sam2 import EdgeTamVideoSegmenter, Sam2VideoSegmenter

    kind = EdgeTamVideoSegmenter if "edgetam" in model else Sam2VideoSegmenter
    segmenter = kind.from_config(SegmenterConfig(model=model, dtype="bfloat16"))
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    prompts = [ObjectPrompt(i + 1, box=(4 + 14 * i, 6, 20 + 14 * i, 40)) for i in range(3)]
    computed = []
    uncached = fast_sam2._uncached_self_attention

    def counting(*args):
        computed.append(1)
        return uncached(*args)

    def track(shared: bool) -> list[torch.Tensor]:
        computed.clear()
        if not shared:  # every call computes: what the fast paths did before objects shared the result
            monkeypatch.setattr(
                fast_sam2, "_self_attention", lambda attn, hidden, cos, sin, switch: counting(attn, hidden, cos, sin)
            )
        session, logits = segmenter.start(48, 64), []
        for index, frame in enumerate(frames):
            session.step(frame, prompts if index == 0 else [])
            logits.append(session.last_logits.clone())
        return logits

    monkeypatch.setattr(fast_sam2, "_uncached_self_attention", counting)
    shared, shared_calls = track(True), len(computed)
    separate, separate_calls = track(False), len(computed)
    layers = len(segmenter.model.memory_attention.layers)
    assert separate_calls - shared_calls == 2 * (len(frames) - 1)  # objects 2 and 3, first layer, tracked frames
    assert separate_calls == 3 * layers * (len(frames) - 1)
    for a, b in zip(shared, separate):
        assert torch.equal(a, b)
