"""Tiny random-weight VLMs, built offline, one per VLM family that has one.

Each builder makes a character-level ``tokenizers`` WordLevel tokenizer with the family's special tokens
(plus ``<region>``), a tiny config, a processor with small images, saves both with ``save_pretrained``
into ``folder`` and returns the folder, so tests and examples load them back with ``from_pretrained``
exactly like a hub checkpoint. Nothing is downloaded. A family's record
(:class:`segvlm.vlm.families.VLMFamily`) names its builder; ``tiny-random:<kind>`` resolves to it, and
:func:`tiny_model_dir` gives the cached folder.
"""

from __future__ import annotations

import string
from pathlib import Path

REGION_TOKEN = "<region>"
_CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")


def _tokenizer(specials: list[str], eos: str, pad: str, **named: str):
    """A char-level PreTrainedTokenizerFast: every printable character is a token, specials are atomic."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([pad, eos, "<unk>", *specials, REGION_TOKEN]))
    vocab = {tok: i for i, tok in enumerate(specials + _CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token="<unk>", padding_side="left", **named
    )
    fast.add_special_tokens({"additional_special_tokens": specials[3:]})
    return fast


def _llama_text(vocab_size: int, **extra) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        **extra,
    }


def build_smolvlm(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """SmolVLM (Idefics3 family): SigLIP patches of 16 px, pixel shuffle with scale_factor 2."""
    import torch
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    folder = Path(folder)
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|im_start|>", *rows]
    tok = _tokenizer(specials, eos="<end_of_utterance>", pad="<pad>")
    torch.manual_seed(seed)
    config = SmolVLMConfig(
        text_config=_llama_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 16,
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    model = SmolVLMForConditionalGeneration(config).eval()
    image_seq_len = (image_size // 16) ** 2 // 4
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            do_image_splitting=False,
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
        ),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=image_seq_len,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_idefics3(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """Idefics3: as :func:`build_smolvlm` (SigLIP patches of 16 px, pixel shuffle with scale_factor 2), with
    Idefics3's own classes and its ``<|begin_of_text|>`` turn."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    folder = Path(folder)
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|begin_of_text|>"]
    specials += rows
    tok = _tokenizer(specials, eos="<end_of_utterance>", pad="<pad>")
    torch.manual_seed(seed)
    config = Idefics3Config(
        text_config=_llama_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 16,
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            do_image_splitting=False,
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
        ),
        tokenizer=tok,
        image_seq_len=(image_size // 16) ** 2 // 4,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _qwen_tokenizer():
    specials = [
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
    ]
    return _tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>")


def _qwen_text(tok) -> dict:
    return {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": None,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def _qwen_ids(tok) -> dict:
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def _qwen_processor(processor_cls, tok, patch: int = 8):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    factor = patch * 2
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 4 * factor**2, "longest_edge": 64 * factor**2},
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2)
    return processor_cls(image_processor=image_processor, tokenizer=tok, video_processor=video_processor)


def build_qwen2_vl(folder: str | Path, seed: int = 0) -> Path:
    """Qwen2-VL: 8 px patches (temporal 2), 2x2 patch merging, M-RoPE; sizes snap to multiples of 16 px."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    folder = Path(folder)
    tok = _qwen_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=_qwen_text(tok),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        **_qwen_ids(tok),
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    _qwen_processor(Qwen2VLProcessor, tok).save_pretrained(folder)
    return folder


def build_qwen2_5_vl(folder: str | Path, seed: int = 0) -> Path:
    """Qwen2.5-VL: like Qwen2-VL plus windowed attention (window 32 px) in all but the last vision block."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    folder = Path(folder)
    tok = _qwen_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text(tok),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "out_hidden_size": 64,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 32,
            "fullatt_block_indexes": [1],
            "in_channels": 3,
        },
        **_qwen_ids(tok),
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    _qwen_processor(Qwen2_5_VLProcessor, tok).save_pretrained(folder)
    return folder


def build_llava(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """LLaVA: CLIP tower with 16 px patches on a fixed square grid (resize + centre crop), CLS dropped."""
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    folder = Path(folder)
    tok = _tokenizer(["<image>"], eos="</s>", pad="<pad>")
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 16,
            "projection_dim": 32,
        },
        text_config=_llama_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tok,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build(family: str, folder: str | Path) -> Path:
    """Build the tiny model of ``family`` (a family name such as ``"qwen2_vl"``) into ``folder``."""
    from segvlm.vlm.families import family as family_record

    return family_record(family).build_tiny(folder)


def tiny_model_dir(family: str) -> Path:
    """The folder of the tiny ``family`` model (``"qwen2_vl"`` or ``"qwen2-vl"``), built once into segvlm's
    cache, the same folder ``tiny-random:<kind>`` resolves to."""
    from segvlm.resolve import resolve_model
    from segvlm.vlm.families import family as family_record

    name = family_record(family).tiny_model
    if name is None:
        raise ValueError(f"the {family} VLM family has no tiny random model; families with one: {_with_tiny()}")
    return Path(resolve_model(name))


def _with_tiny() -> list[str]:
    from segvlm.vlm.families import FAMILIES

    return [f.name for f in FAMILIES if f.tiny_kind is not None]
