"""Mask-pooled and mask-in-encoder designs on tiny random VLMs of every supported family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segvlm.masktok.pooled import masked_mean
from segvlm.testing.vlm import tiny_model_dir
from segvlm.vlm import MaskAwareVLM

FAMILIES = ["smolvlm", "qwen2_vl", "qwen2_5_vl", "llava"]
SIZE = 64  # every tiny processor keeps a 64x64 image at 64x64, so pixel and patch grids line up


def _image(seed: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _box_mask(y0: int, y1: int, x0: int, x1: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _patch_index(family: str, row: int, col: int) -> int:
    """Where patch (row, col) of a 64x64 image sits in the tower's token order."""
    if family in ("qwen2_vl", "qwen2_5_vl"):  # 8 px patches in 2x2 merge blocks, blocks row-major
        blocks_per_row = SIZE // 16
        return ((row // 2) * blocks_per_row + col // 2) * 4 + (row % 2) * 2 + col % 2
    return row * (SIZE // 16) + col  # 16 px patches, row-major


def _patch_px(family: str) -> int:
    return 8 if family.startswith("qwen") else 16


def _perturb(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


def _vlm(family: str, design: str, **kwargs) -> MaskAwareVLM:
    from segvlm.masktok import make_mask_tokenizer

    return MaskAwareVLM.from_pretrained(tiny_model_dir(family), mask_tokenizer=make_mask_tokenizer(design, **kwargs))


def test_placeholder_count_equals_region_count(family):
    vlm = _vlm(family, "pooled")
    masks = [_box_mask(0, 20, 0, 20), _box_mask(30, 60, 30, 60), _box_mask(10, 40, 5, 50)]
    prepared = vlm.prepare([_image(0), _image(1)], [masks[:2], masks[2:]], "Compare {region1} with the rest.")
    counts = (prepared.inputs["input_ids"] == prepared.tokens.placeholder_id).sum(-1).tolist()
    assert counts == [2 * 2, 1 * 2]  # two placeholders (feature + shape) per region
    assert [e.shape for e in prepared.tokens.region_embeds] == [(4, 64), (2, 64)]


def test_region_embeddings_land_at_placeholders(family):
    vlm = _vlm(family, "pooled")
    _perturb(vlm.mask_tokenizer)
    prepared = vlm.prepare([_image(0), _image(1)], [[_box_mask(0, 20, 0, 20)], [_box_mask(30, 60, 30, 60)] * 2], "Hi")
    ids = prepared.inputs["input_ids"]
    with torch.no_grad():
        injected = vlm.input_embeddings(prepared)  # (B, S, D)
        plain = vlm.model.get_input_embeddings()(ids)  # (B, S, D)
    where = ids == prepared.tokens.placeholder_id
    expected = torch.cat(prepared.tokens.region_embeds)
    assert torch.allclose(injected[where] - plain[where], expected, atol=1e-5)
    assert torch.equal(injected[~where], plain[~where])
    assert expected.abs().sum() > 0


def test_one_patch_mask_pools_exactly_that_patch(family):
    vlm = _vlm(family, "pooled")
    layout, ps = vlm.layout, _patch_px(family)
    row, col = 1, 2
    image = _image(3)
    mask = _box_mask(row * ps, (row + 1) * ps, col * ps, (col + 1) * ps)
    inputs = layout.image_inputs([image])
    grid = layout.grids([[mask]], inputs, [image])[0]
    index = _patch_index(family, row, col)
    expected_cov = torch.zeros_like(grid.coverage)
    expected_cov[0, index] = 1.0
    assert torch.equal(grid.coverage, expected_cov)
    with torch.no_grad():
        feats = layout.features(inputs, (-1,))
    pooled = masked_mean(feats.patches[0], grid.coverage)
    assert torch.allclose(pooled[0], feats.patches[0][index])
    # the neighbouring patch has a different feature, so a one-off index would fail above
    assert not torch.allclose(feats.patches[0][index], feats.patches[0][_patch_index(family, row, col + 1)])


def test_one_merged_token_mask_pools_exactly_that_image_token(family):
    """A mask over the pixels of one LM image token (2x2 patches merged, or one LLaVA patch)."""
    vlm = _vlm(family, "pooled", feature_source="merged")
    layout = vlm.layout
    token_px = 16 if family == "llava" else 2 * _patch_px(family)
    row, col = 1, 0
    image = _image(4)
    mask = _box_mask(row * token_px, (row + 1) * token_px, col * token_px, (col + 1) * token_px)
    inputs = layout.image_inputs([image])
    grid = layout.grids([[mask]], inputs, [image])[0]
    per_row = SIZE // token_px
    assert grid.merged[0].argmax().item() == row * per_row + col
    assert torch.isclose(grid.merged[0].max(), torch.tensor(1.0)) and grid.merged[0].sum() == 1.0
    with torch.no_grad():
        feats = layout.features(inputs, (-1,))
    assert feats.merged[0].shape[0] == grid.merged.shape[1]  # one coverage value per LM image token
    assert torch.allclose(masked_mean(feats.merged[0], grid.merged)[0], feats.merged[0][row * per_row + col])


def test_patch_features_are_in_the_order_the_model_merges(family):
    """Merging our patch-order last-layer features the model's own way gives the model's image tokens."""
    vlm = _vlm(family, "pooled")
    layout, model = vlm.layout, vlm.model
    inputs = layout.image_inputs([_image(5)])
    layer = -2 if family == "llava" else -1  # LLaVA's image tokens come from layer -2
    with torch.no_grad():
        patches = layout.features(inputs, (layer,)).patches[0]  # (P, Dv)
        merged = layout.features(inputs, (layer,)).merged[0]  # (M, D)
        if family == "smolvlm":
            ours = model.model.connector(model.model.vision_model.post_layernorm(patches)[None])[0]
        elif family == "llava":
            ours = model.model.multi_modal_projector(patches)
        else:
            ours = model.model.visual.merger(patches)
    assert torch.allclose(ours, merged, atol=1e-5)


@pytest.mark.parametrize("design", ["pooled", "encoder"])
def test_untrained_adapter_leaves_logits_unchanged(family, design):
    vlm = _vlm(family, design)
    image, mask = _image(6), _box_mask(8, 40, 16, 56)
    with torch.no_grad():
        with_regions = vlm.logits(image, [mask], "What is {region1}?")
        base = vlm.logits(image, [mask], "What is {region1}?", use_regions=False)
        assert torch.equal(with_regions, base)
        _perturb(vlm.mask_tokenizer)  # once trained, the regions do change the output
        trained = vlm.logits(image, [mask], "What is {region1}?")
    assert not torch.allclose(trained, base, atol=1e-4)


def test_batch_with_different_region_counts_generates(family):
    vlm = _vlm(family, "pooled")
    _perturb(vlm.mask_tokenizer)
    images = [_image(0), _image(1, size=(80, 48))]
    small = np.pad(np.ones((10, 10), bool), ((5, 33), (7, 63)))  # (48, 80)
    regions = [[_box_mask(0, 20, 0, 20), _box_mask(30, 60, 30, 60)], [small]]
    answers = vlm.generate(images, regions, "Describe {region1}.", max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_encoder_design_handles_an_image_without_regions(family):
    vlm = _vlm(family, "encoder")
    _perturb(vlm.mask_tokenizer)
    images, regions = [_image(0), _image(1)], [[_box_mask(0, 20, 0, 20)], []]
    with torch.no_grad():
        mixed = vlm.logits(images, regions, "Look.")
        base = vlm.logits(images, regions, "Look.", use_regions=False)
    assert torch.equal(mixed[1], base[1])  # the region-free sample is exactly the base model
    assert not torch.allclose(mixed[0], base[0], atol=1e-4)


@pytest.mark.parametrize("design", ["pooled", "encoder"])
def test_save_and_load_trained_parts(family, design, tmp_path):
    vlm = _vlm(family, design)
    _perturb(vlm.mask_tokenizer)
    image, mask = _image(7), _box_mask(8, 40, 16, 56)
    with torch.no_grad():
        before = vlm.logits(image, [mask], "What is {region1}?")
    folder = vlm.save_pretrained(tmp_path / "adapter")
    assert (folder / "masktok.safetensors").is_file()
    again = MaskAwareVLM.from_pretrained(folder)
    assert again.mask_tokenizer.design == design
    with torch.no_grad():
        after = again.logits(image, [mask], "What is {region1}?")
    assert torch.allclose(before, after, atol=1e-6)


def test_mask_size_mismatch_is_a_clear_error():
    vlm = _vlm("smolvlm", "pooled")
    with pytest.raises(ValueError, match="does not match the image size"):
        vlm.prepare(_image(0), [np.ones((32, 32), bool)], "Hi")


def test_missing_placeholder_token_is_added_to_a_real_vocabulary():
    from transformers import AutoModelForImageTextToText

    vlm = _vlm("llava", "pooled", placeholder="<mask_token_x>")
    assert vlm.added_tokens == ["<mask_token_x>"]
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir("llava"))
    assert vlm.model.get_input_embeddings().weight.shape[0] == base.get_input_embeddings().weight.shape[0] + 1
    prepared = vlm.prepare(_image(0), [_box_mask(0, 20, 0, 20)], "Hi {region1}")
    assert (prepared.inputs["input_ids"] == vlm.mask_tokenizer.placeholder_id).sum() == 2
