"""Tiny random-weight checkpoints of the detection and segmentation backends, built locally with no download.

Each ``build_<kind>(folder)`` creates a model from a small config, seeds it, and writes it with
``save_pretrained`` (plus its processor) into ``folder``. ``tiny-random:<kind>`` names resolve to these
builders' folders (:func:`segvlm.resolve.resolve_model`, which caches them); call a builder directly to
write a model into a folder of your own. The weights are random: masks and boxes are meaningless. The tiny
VLMs are in :mod:`segvlm.testing.vlm`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

SAM2_IMAGE_SIZE = 128  # the tiny SAM 2 works at 128x128 instead of 1024x1024
OWLV2_IMAGE_SIZE = 96
SAM3_IMAGE_SIZE = 112  # the tiny SAM 3 works at 112x112 (8x8 patches of 14 px) instead of 1008x1008
SAM3_ANCHOR_PHRASES = ("object", "nothing")  # the tiny SAM 3 detects the first phrase everywhere, the second nowhere


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level BPE vocabulary and merges, rebuilt from the merges file that open_clip ships.

    This is the 49,408-token vocabulary of the CLIP family (and OWLv2), so tokenisation matches the real
    checkpoints even though the tiny models' weights are random.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    tokens = list(bytes_to_unicode().values())
    tokens += [token + "</w>" for token in tokens]
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def _keep_objects_present(mask_decoder) -> None:
    """With random weights the object-presence logit hovers around zero and masks flicker off; a small head
    with a positive bias keeps tracked objects present, so a smoke test yields whole (meaningless) masklets."""
    import torch

    head = mask_decoder.pred_obj_score_head.proj_out
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.fill_(4.0)


def _sam2_processor(size: int):
    """A SAM 2 video processor working at ``size`` x ``size`` (masks at a quarter of it)."""
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(
            size={"height": size, "width": size}, mask_size={"height": size // 4, "width": size // 4}
        ),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}),
        target_size=size,
    )


def build_sam2(folder: Path) -> None:
    """SAM 2.1-shaped video model (Hiera backbone, memory attention, memory encoder), ~1 M parameters."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    size = SAM2_IMAGE_SIZE
    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        num_attention_heads=1,
        blocks_per_stage=[1, 1, 1, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        image_size=[size, size],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8], [size // 16, size // 16]],
        fpn_hidden_size=128,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 128, "image_size": size, "patch_size": 16},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        image_size=size,
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,  # the memory cross-attention expects 64 channels
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
    )
    torch.manual_seed(0)
    model = Sam2VideoModel(config).eval()
    _keep_objects_present(model.mask_decoder)
    model.save_pretrained(folder)
    _sam2_processor(size).save_pretrained(folder)


def build_sam2_hiera_tiny_arch(folder: Path) -> None:
    """SAM 2.1 hiera-tiny architecture (38.9 M parameters) with seeded random weights, for benchmarks.

    ``Sam2VideoConfig()`` defaults are the hiera-tiny shapes (backbone embed dim 96, blocks [1, 2, 7, 2],
    heads [1, 2, 4, 8], global attention blocks [5, 7, 9], windows [8, 4, 14, 7], 1024x1024 input), so the
    compute per frame is that of ``facebook/sam2.1-hiera-tiny``; only the weights are random.
    """
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(0)
    model = Sam2VideoModel(Sam2VideoConfig()).eval()
    _keep_objects_present(model.mask_decoder)
    model.save_pretrained(folder)
    _sam2_processor(1024).save_pretrained(folder)


def edgetam_vision_config(**overrides):
    """The released EdgeTAM's image encoder: a timm RepViT-M1 feature extractor (four stages, strides 4-32)
    under the SAM 2 neck. ``EdgeTamVideoConfig()`` without a vision config gets SAM 2's Hiera-tiny instead."""
    from transformers import EdgeTamVisionConfig, TimmWrapperConfig

    backbone = TimmWrapperConfig(
        architecture="repvit_m1", model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    )
    return EdgeTamVisionConfig(backbone_config=backbone, **overrides)


def build_edgetam(folder: Path) -> None:
    """EdgeTAM-shaped video model (timm RepViT-M1 backbone, perceiver memory) at 128 px, ~13 M parameters."""
    import torch
    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel

    size = SAM2_IMAGE_SIZE
    config = EdgeTamVideoConfig(
        vision_config=edgetam_vision_config(
            backbone_feature_sizes=[[size // 4, size // 4], [size // 8, size // 8], [size // 16, size // 16]],
            fpn_hidden_size=128,
        ),
        image_size=size,
        prompt_encoder_config={"image_size": size, "hidden_size": 128},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 256, "iou_head_hidden_dim": 64},
        memory_attention_hidden_size=128,
        memory_attention_mlp_hidden_size=256,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_attention_rope_k_sizes=[size // 32, size // 32],
        perceiver_resampler_num_layers=1,
        perceiver_resampler_num_latents=64,
        perceiver_resampler_num_latents_2d=16,
        memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=256,
    )
    torch.manual_seed(0)
    EdgeTamVideoModel(config).eval().save_pretrained(folder)
    _sam2_processor(size).save_pretrained(folder)


def build_sam(folder: Path) -> None:
    """SAM (v1)-shaped image model at 128 px, ~0.1 M parameters."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    size = SAM2_IMAGE_SIZE
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 16,
            "output_channels": 32,
            "global_attn_indexes": [1],
            "mlp_dim": 64,
            "window_size": 4,
            "num_pos_feats": 16,
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": size,
            "patch_size": 16,
            "image_embedding_size": size // 16,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    torch.manual_seed(0)
    SamModel(config).eval().save_pretrained(folder)
    image_processor = SamImageProcessor(
        size={"longest_edge": size},
        pad_size={"height": size, "width": size},
        mask_size={"longest_edge": size // 4},
        mask_pad_size={"height": size // 4, "width": size // 4},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(folder)


def build_owlv2(folder: Path) -> None:
    """OWLv2-shaped open-vocabulary detector with CLIP's real tokenizer, ~1.7 M parameters (mostly embeddings)."""
    import torch
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    size = OWLV2_IMAGE_SIZE
    config = Owlv2Config(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # Random box regressions collapse to slivers; a zero last layer leaves OWLv2's per-patch box prior,
        # widened a little, so the tiny detector proposes real (if meaningless) boxes on a grid.
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
    model.save_pretrained(folder)
    vocab, merges = clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)


def build_clip(folder: Path) -> None:
    """A tiny open_clip model (ViT + text transformer) saved as ``open_clip_config.json`` + weights."""
    import open_clip
    import torch

    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    preprocess = {
        "image_size": 64,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")


def build_grounding_dino(folder: Path) -> None:
    """Grounding DINO-shaped detector (Swin + BERT, deformable transformer), ~0.2 M parameters."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "the", "of", "and"]
    words += ["child", "children", "person", "red", "blue", "green", "car", "dog", "cat", "cup", "box", "ball"]
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(words)})
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(words),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # the box heads of decoder layers are tied, which needs at least two
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
        use_timm_backbone=False,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def build_sam3(folder: Path) -> None:
    """SAM 3-shaped text-prompted video model (detector + tracker + CLIP text encoder) at 112 px, ~4.4 M parameters.

    With random weights SAM 3's detector scores every phrase about the same, so its scoring head is rewired to
    make the tiny model's output depend on the text in a known way: every query's logit is one fixed linear
    function of the pooled text features, placed so that ``SAM3_ANCHOR_PHRASES[0]`` ("object") scores +8 and
    ``SAM3_ANCHOR_PHRASES[1]`` ("nothing") scores -8. So "object" is found in every frame and "nothing" never;
    other phrases fall on either side. The presence head is fixed at "present" and the tracker's object-score
    head biased positive (as in :func:`build_sam2`) so tracked objects stay visible. Masks are meaningless.
    """
    import torch
    from transformers import CLIPTokenizer, Sam3ImageProcessor, Sam3VideoConfig, Sam3VideoModel, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size, patch = SAM3_IMAGE_SIZE, 14
    # FPN, DETR and tracker width: the tracker's memory cross-attention is fixed at 64 channels, and its object
    # pointers are split into 64-channel tokens, which transformers only supports for widths above 64.
    width = 128
    grid = size // patch  # 8x8 vision tokens
    feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    vision = {
        "model_type": "sam3_vision_model",
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": patch,
            "pretrain_image_size": size,
            "window_size": 4,
            "global_attn_indexes": [1],
        },
        "fpn_hidden_size": width,
        "backbone_feature_sizes": feature_sizes,
    }
    small = {"hidden_size": width, "num_attention_heads": 2, "intermediate_size": 64}
    config = Sam3VideoConfig(
        detector_config={
            "vision_config": vision,
            "text_config": {
                "model_type": "clip_text_model",
                "vocab_size": 49408,  # CLIP's BPE vocabulary (the embedding table is most of the text encoder)
                "hidden_size": 16,
                "intermediate_size": 32,
                "projection_dim": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "max_position_embeddings": 32,  # Sam3VideoProcessor pads prompts to 32 tokens
            },
            "geometry_encoder_config": {**small, "num_layers": 1, "roi_size": 1},  # box prompts are unused here
            "detr_encoder_config": {**small, "num_layers": 1},
            "detr_decoder_config": {**small, "num_layers": 1, "num_queries": 4},
            "mask_decoder_config": {"hidden_size": width, "num_attention_heads": 2},
        },
        tracker_config={
            "vision_config": vision,
            "prompt_encoder_config": {"hidden_size": width, "image_size": size, "patch_size": patch},
            "mask_decoder_config": {
                "hidden_size": width,
                "mlp_dim": 64,
                "num_attention_heads": 2,
                "iou_head_hidden_dim": 16,
            },
            "memory_attention_hidden_size": width,
            "memory_attention_num_layers": 1,
            "memory_attention_feed_forward_hidden_size": 64,
            "memory_attention_rope_feat_sizes": [grid, grid],
            "memory_encoder_hidden_size": width,
            "memory_encoder_output_channels": 64,
            "mask_downsampler_embed_dim": width,
            "memory_fuser_embed_dim": width,
            "memory_fuser_intermediate_dim": 64,
            "num_maskmem": 3,  # a short memory (facebook/sam3: 7 frames, 16 object pointers) keeps state tests quick
            "max_object_pointers_in_encoder": 4,
            "image_size": size,
        },
        low_res_mask_size=4 * grid,
    )
    torch.manual_seed(0)
    model = Sam3VideoModel(config).eval()
    vocab, merges = clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(
            size={"height": size, "width": size}, mask_size={"height": 4 * grid, "width": 4 * grid}
        ),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        target_size=size,
    )
    _wire_tiny_sam3_scoring(model, processor)
    _keep_objects_present(model.tracker_model.mask_decoder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _wire_tiny_sam3_scoring(model, processor, margin: float = 8.0) -> None:
    """Make the detector's logit ``margin * s(text)``, with s(found anchor) = 1 and s(empty anchor) = -1.

    Queries project to a constant unit vector ``v`` and the pooled text ``p`` to ``v * gain * (u . p + b)`` with
    ``u`` the difference of the two anchors' pooled features, so the dot-product score is the same for every
    query and linear in ``p``. The presence logit is pinned high, so the detector's probability is sigmoid(score).
    """
    import numpy as np
    import torch

    detector = model.detector_model
    scoring = detector.dot_product_scoring
    pooled: list = []
    hook = scoring.text_proj.register_forward_hook(lambda module, args, output: pooled.append(args[0][0].clone()))
    image = np.full((SAM3_IMAGE_SIZE, SAM3_IMAGE_SIZE, 3), 128, dtype=np.uint8)
    with torch.no_grad():
        pixel_values = processor(images=image, return_tensors="pt").pixel_values  # (1, 3, S, S)
        vision_embeds = detector.get_vision_features(pixel_values=pixel_values)
        for phrase in SAM3_ANCHOR_PHRASES:
            encoded = processor.tokenizer(phrase, return_tensors="pt", padding="max_length", max_length=32)
            text_embeds = detector.get_text_features(
                input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, return_dict=True
            )
            detector(vision_embeds=vision_embeds, text_embeds=text_embeds, attention_mask=encoded.attention_mask)
    hook.remove()
    found, empty = pooled  # (D,) pooled text features of each anchor
    direction = found - empty  # (D,)
    offset = -float(direction @ (found + empty)) / 2
    half_gap = float(direction @ (found - empty)) / 2  # s(found) - s(empty) = 2 * half_gap before scaling
    width = direction.shape[0]
    unit = torch.full((width,), width**-0.5)  # (D,) |unit| = 1
    gain = margin / (half_gap * scoring.scale)
    with torch.no_grad():
        scoring.query_proj.weight.zero_()
        scoring.query_proj.bias.copy_(unit)
        scoring.text_proj.weight.copy_(gain * torch.outer(unit, direction))  # (D, D)
        scoring.text_proj.bias.copy_(gain * offset * unit)
        presence = detector.detr_decoder.presence_head.layer3
        presence.weight.zero_()
        presence.bias.fill_(10.0)
