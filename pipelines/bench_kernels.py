"""Micro-benchmarks behind the fast paths of BENCHMARKS.md: each piece against what it replaces, same process.

CPU seconds (``time.process_time``, best of a few calls) on one thread by default, which a busy machine disturbs
less than wall time. Pieces:

* ``rope``: RoPE of a (4096, 256) bf16 map in float32, eager ops against one compiled pass (same bits);
* ``mlp``: the memory attention's 256 -> 2048 -> 256 ReLU MLP on 4096 tokens, ``F.relu`` against in place and
  against the ReLU fused into the first product (oneDNN);
* ``gelu_mlp``: a Hiera block's GELU MLP, the GELU as a pass of its own against fused into the first product;
* ``kernel``: one 256-query chunk of the chunked attention, scale before against inside the exponential, on the
  SAM 2 memory cross-attention shape and the image encoder's global-block shape;
* ``repvit``: EdgeTAM's RepViT-M1 at 1024 x 1024 in bf16, as built against the folded channels-last copy with
  and without fused GELUs, and compiled with frozen weights;
* ``memory_encoder``: EdgeTAM's mask downsampler, a memory fuser block and the whole encoder (channels-last),
  transformers' code against the fast paths (norm+GELU compiled, GELU fused into the product);
* ``mask_decoder``: EdgeTAM's mask decoder on tracking's call, transformers' layouts against the fast path's;
* ``high_res_mask``: a tracked frame's 1024 x 1024 mask, three candidates upsampled against the kept one;
* ``perceiver``: EdgeTAM's perceiver attention of 256 latents over 4096 tokens, SDPA against the chunked kernel;
* ``few_keys``: the mask decoder's attention of 4096 image tokens to 8 prompt tokens, SDPA against block-diagonal
  products;
* ``memory_attention``: EdgeTAM's whole memory attention on a full memory bank, transformers' code against the fast
  paths;
* ``packed_linear``: a oneDNN product with its ReLU, the weight as stored against packed once.

    python pipelines/bench_kernels.py --json kernels.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def cpu_ms(fn, repeats: int = 5) -> float:
    """Best CPU milliseconds of ``fn()`` over ``repeats`` calls, after two warm-up calls."""
    with torch.inference_mode():
        fn()
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
    return best * 1000


def bench_rope() -> dict:
    from segvlm.segmentation import cpu_attention

    x = torch.randn(1, 1, 4096, 256).to(torch.bfloat16)
    cos, sin = torch.randn(4096, 256), torch.randn(4096, 256)

    def eager():
        return cpu_attention.apply_rope(x.float(), cos, sin).to(x.dtype)

    with torch.inference_mode():
        same = torch.equal(eager(), cpu_attention.rope(x, cos, sin))
    compiled = cpu_ms(lambda: cpu_attention.rope(x, cos, sin))
    return {"eager_ms": cpu_ms(eager), "compiled_ms": compiled, "same_bits": same}


def bench_mlp() -> dict:
    x = torch.randn(1, 1, 4096, 256).to(torch.bfloat16)
    up, down = torch.nn.Linear(256, 2048).to(torch.bfloat16), torch.nn.Linear(2048, 256).to(torch.bfloat16)
    flat, weights = x.view(-1, 256), (up.weight, up.bias)
    return {
        "relu_ms": cpu_ms(lambda: down(F.relu(up(x)))),
        "relu_in_place_ms": cpu_ms(lambda: down(up(x).relu_())),
        "relu_fused_ms": cpu_ms(lambda: down(torch.ops.mkldnn._linear_pointwise(flat, *weights, "relu", [], "none"))),
    }


def bench_gelu_mlp() -> dict:
    """Hiera's first-stage MLP (96 -> 384 -> 96 on 256 x 256 tokens): GELU as its own pass against fused."""
    x = torch.randn(1, 256, 256, 96).to(torch.bfloat16)
    proj_in, proj_out = torch.nn.Linear(96, 384).to(torch.bfloat16), torch.nn.Linear(384, 96).to(torch.bfloat16)

    def fused():
        hidden = torch.ops.mkldnn._linear_pointwise(x.view(-1, 96), proj_in.weight, proj_in.bias, "gelu", [], "none")
        return proj_out(hidden.view(1, 256, 256, -1))

    return {"gelu_pass_ms": cpu_ms(lambda: proj_out(F.gelu(proj_in(x)))), "fused_ms": cpu_ms(fused)}


def _scale_first(query, key, value, scale):
    scores = torch.mm(query, key.t()).float() * scale
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    mixed = torch.mm(weights.to(value.dtype), value).float()
    return (mixed / weights.sum(dim=-1, keepdim=True)).to(value.dtype)


def _time_chunk(before, after, keys: int, width: int, value_width: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(256, width, generator=generator).to(torch.bfloat16)
    k = torch.randn(keys, width, generator=generator).to(torch.bfloat16)
    v = torch.randn(keys, value_width, generator=generator).to(torch.bfloat16)
    scale = width**-0.5
    return {
        "scale_first_ms": cpu_ms(lambda: before(q, k, v, scale)),
        "scale_in_exp_ms": cpu_ms(lambda: after(q, k, v, scale)),
        "matmuls_only_ms": cpu_ms(lambda: torch.mm(torch.mm(q, k.t()), v)),
    }


def bench_kernel() -> dict:
    from segvlm.segmentation import cpu_attention

    before = torch.compile(_scale_first, dynamic=True, fullgraph=True)
    after = torch.compile(cpu_attention._chunk, dynamic=True, fullgraph=True)
    return {
        "memory_cross_attention": _time_chunk(before, after, 28700, 256, 64),  # keys, width, value width
        "global_block": _time_chunk(before, after, 4096, 96, 96),
    }


def bench_repvit() -> dict:
    import timm

    from segvlm.segmentation import folded_backbone, onednn

    backbone = timm.create_model("repvit_m1", features_only=True, out_indices=[0, 1, 2, 3]).eval()
    pixels = torch.randn(1, 3, 1024, 1024).to(torch.bfloat16)
    last = pixels.contiguous(memory_format=torch.channels_last)
    fused = folded_backbone.fold(backbone, torch.bfloat16)
    available = onednn.available
    onednn.available = lambda: False
    try:
        folded = folded_backbone.fold(backbone, torch.bfloat16)
    finally:
        onednn.available = available
    plain = backbone.to(torch.bfloat16)
    compiled = folded_backbone.Frozen(fused)  # the graph with frozen weights the fast path runs
    return {
        "as_built_ms": cpu_ms(lambda: plain(pixels), repeats=3),
        "folded_channels_last_ms": cpu_ms(lambda: folded(last), repeats=3),
        "folded_fused_gelu_ms": cpu_ms(lambda: fused(last), repeats=3),
        "folded_compiled_ms": cpu_ms(lambda: compiled(last), repeats=3),
    }


def _edgetam_module(name: str, args):
    """A real-size EdgeTAM module (random weights) in bf16, its fast paths installed (switched by ``active``)."""
    import transformers.models.edgetam_video.modeling_edgetam_video as edgetam
    from transformers import EdgeTamVideoConfig

    from segvlm.segmentation import fast_sam2

    config = EdgeTamVideoConfig()
    config._attn_implementation = config.mask_decoder_config._attn_implementation = "sdpa"  # as loaded on CPU
    module = getattr(edgetam, name)(*args(config)).to(torch.bfloat16).eval()
    holder = torch.nn.Module()
    holder.inner = module
    fast_sam2.install(holder)
    return holder, module


def _fast_and_plain(holder, fn) -> dict:
    """CPU ms of ``fn()`` with the fast paths off (transformers' code) and on."""
    from segvlm.segmentation import fast_sam2

    def fast():
        with fast_sam2.MemoryCache().active(holder, torch.bfloat16):
            return fn()

    return {"transformers_ms": cpu_ms(fn), "fast_ms": cpu_ms(fast)}


def bench_memory_encoder() -> dict:
    """EdgeTAM's memory encoder pieces at 1024 x 1024: the mask downsampler (norm+GELU one compiled pass per layer)
    and a memory fuser block (norm to channels-last, GELU fused into the product, one residual pass)."""
    holder, downsampler = _edgetam_module("EdgeTamVideoMaskDownSampler", lambda config: (config,))
    mask = torch.randn(1, 1, 1024, 1024).to(torch.bfloat16)
    results = {"mask_downsampler": _fast_and_plain(holder, lambda: downsampler(mask))}
    holder, block = _edgetam_module("EdgeTamVideoMemoryFuserCXBlock", lambda config: (config,))
    features = torch.randn(1, 256, 64, 64).to(torch.bfloat16)
    results["fuser_block"] = _fast_and_plain(holder, lambda: block(features))
    holder, encoder = _edgetam_module("EdgeTamVideoMemoryEncoder", lambda config: (config,))
    tokens = torch.randn(4096, 1, 256).to(torch.bfloat16)  # (HW, B, C): the frame's features as tracking has them
    grid = tokens.permute(1, 2, 0).view(1, 256, 64, 64)
    results["encoder"] = _fast_and_plain(holder, lambda: encoder(grid, mask))
    return results


def bench_mask_decoder() -> dict:
    """EdgeTAM's mask decoder on a 64 x 64 embedding with one box (tracking's call), as transformers lays its maps
    out against contiguous token maps, channels-last convolutions and fused skip connections."""
    holder, decoder = _edgetam_module("EdgeTamVideoMaskDecoder", lambda config: (config.mask_decoder_config,))
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    image = randn(1, 64, 64, 256).permute(0, 3, 1, 2)  # channels-last, as the memory attention returns it
    inputs = {
        "image_embeddings": image,
        "image_positional_embeddings": randn(1, 256, 64, 64),
        "sparse_prompt_embeddings": randn(1, 1, 2, 256),
        "dense_prompt_embeddings": randn(1, 256, 1, 1).expand(1, 256, 64, 64),
        "multimask_output": True,
        "high_resolution_features": [randn(1, 32, 256, 256), randn(1, 64, 128, 128)],
    }
    return _fast_and_plain(holder, lambda: decoder(**inputs))


def bench_perceiver() -> dict:
    """EdgeTAM's perceiver attention of its 256 1-D latents over a frame's 4096 memory tokens (the positional
    encoding added to keys and values): transformers' SDPA against the chunked kernel."""
    holder, attention = _edgetam_module("EdgeTamVideoPerceiverAttention", lambda config: (config,))
    generator = torch.Generator().manual_seed(0)
    latents, tokens, position = (
        torch.randn(1, length, 64, generator=generator).to(torch.bfloat16) for length in (256, 4096, 4096)
    )
    return _fast_and_plain(holder, lambda: attention(latents, tokens, tokens, position))


def bench_few_keys() -> dict:
    """EdgeTAM's mask-decoder attention of 4096 image tokens to 8 prompt tokens (8 heads of 16): transformers' SDPA
    against block-diagonal products with a compiled softmax."""
    holder, attention = _edgetam_module("EdgeTamVideoAttention", lambda config: (config.mask_decoder_config,))
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 1, 4096, 256, generator=generator).to(torch.bfloat16)
    prompts = torch.randn(1, 1, 8, 256, generator=generator).to(torch.bfloat16)
    return _fast_and_plain(holder, lambda: attention(tokens, prompts, prompts))


def bench_high_res_mask() -> dict:
    """A tracked frame's 1024 x 1024 mask for the memory encoder: transformers upsamples the three candidate masks
    in float32, rounds them and keeps one; the fast path upsamples the kept one (the same bits)."""
    masks = torch.randn(1, 1, 3, 256, 256).to(torch.bfloat16)  # (B, objects, masks, h, w)

    def all_three():
        high = F.interpolate(masks.squeeze(1).float(), size=(1024, 1024), mode="bilinear", align_corners=False)
        return high.unsqueeze(1).to(masks.dtype)[:, :, 1]

    def kept_one():
        high = F.interpolate(masks[:, :, 1].float(), size=(1024, 1024), mode="bilinear", align_corners=False)
        return high.to(masks.dtype)

    with torch.inference_mode():
        same = torch.equal(all_three(), kept_one())
    return {"three_masks_ms": cpu_ms(all_three), "kept_mask_ms": cpu_ms(kept_one), "same_bits": same}


def bench_memory_attention() -> dict:
    """EdgeTAM's whole memory attention (2 layers) on a full memory bank (7 frames of 512 perceiver latents and 40
    object-pointer tokens): transformers' code against the fast paths (both attentions through the kernel, the
    cross-attention's keys without RoPE scored at 64 wide, the values projected after it with o_proj composed,
    the stacked q/k/v product, the MLP's ReLU fused)."""
    holder, attention = _edgetam_module("EdgeTamVideoMemoryAttention", lambda config: (config,))
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    frames, pointers = 7, 40
    keys = frames * 512 + pointers
    inputs = {
        "current_vision_features": randn(4096, 1, 256),
        "memory": randn(keys, 1, 64),
        "current_vision_position_embeddings": randn(4096, 1, 256),
        "memory_posision_embeddings": randn(keys, 1, 64),
        "num_object_pointer_tokens": pointers,
        "num_spatial_memory_tokens": frames,
    }
    return _fast_and_plain(holder, lambda: attention(**inputs))


def bench_packed_linear() -> dict:
    """The memory-attention MLP's first product (4096 x 256 -> 2048, ReLU) through oneDNN with the weight as stored
    against packed once into oneDNN's layout (:mod:`segvlm.segmentation.onednn`)."""
    from segvlm.segmentation import onednn

    layer = torch.nn.Linear(256, 2048).to(torch.bfloat16)
    x = torch.randn(4096, 256).to(torch.bfloat16)
    product = onednn.Product(layer.weight, layer.bias)
    with torch.inference_mode():
        same = torch.equal(
            product(x, "relu"), torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "relu", [], "none")
        )
    return {
        "as_stored_ms": cpu_ms(
            lambda: torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "relu", [], "none")
        ),
        "packed_ms": cpu_ms(lambda: product(x, "relu")),
        "same_bits": same,
    }


BENCHES = {
    "rope": bench_rope,
    "mlp": bench_mlp,
    "gelu_mlp": bench_gelu_mlp,
    "kernel": bench_kernel,
    "repvit": bench_repvit,
    "memory_encoder": bench_memory_encoder,
    "mask_decoder": bench_mask_decoder,
    "high_res_mask": bench_high_res_mask,
    "perceiver": bench_perceiver,
    "few_keys": bench_few_keys,
    "memory_attention": bench_memory_attention,
    "packed_linear": bench_packed_linear,
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run these pieces only")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__}
    for name in args.only or BENCHES:
        results[name] = BENCHES[name]()
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
