"""Set-of-Mark's ``"tag"`` style (marks that leave every region's pixels as they were) and the encoder
design's ``channels="region"`` option (one mask channel per region, so two regions can be told apart)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segvlm.masktok import MaskEncoderPrompt, SetOfMarkTokenizer, load_mask_tokenizer
from segvlm.masktok.visual_prompt import TAG_COLOURS, dilate, draw_tags, label_point
from segvlm.testing.vlm import tiny_model_dir
from segvlm.vlm import MaskAwareVLM

SIZE = 64


def _scene() -> tuple[Image.Image, list[np.ndarray]]:
    """A black 64 px image with a red and a green square; their masks."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)  # (H, W, 3)
    a = np.zeros((SIZE, SIZE), dtype=bool)
    b = np.zeros((SIZE, SIZE), dtype=bool)
    a[10:22, 8:20] = True
    b[36:52, 38:54] = True
    pixels[a] = (255, 0, 0)
    pixels[b] = (0, 255, 0)
    return Image.fromarray(pixels), [a, b]


def test_dilate_grows_by_the_radius_in_every_direction():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    assert dilate(mask, 2).sum() == 25 and dilate(mask, 2)[2:7, 2:7].all()
    assert np.array_equal(dilate(mask, 0), mask)


def test_tag_style_leaves_regions_untouched_and_draws_a_ring_and_a_number():
    image, masks = _scene()
    tokens = SetOfMarkTokenizer(style="tag").encode([image], [masks])
    marked = np.asarray(tokens.images[0])  # (H, W, 3)
    original = np.asarray(image)
    changed = (marked != original).any(-1)  # (H, W)
    assert not (changed & (masks[0] | masks[1])).any()  # no region pixel changes
    for k, mask in enumerate(masks):
        ring = dilate(mask, 2) & ~mask  # the 2 px band just outside the region
        assert (marked[ring] == TAG_COLOURS[k]).all(-1).mean() > 0.8  # drawn in the mark's own colour
    assert changed.sum() > (dilate(masks[0], 2) ^ masks[0]).sum() + (dilate(masks[1], 2) ^ masks[1]).sum()  # + tags
    assert tokens.region_texts == [["mark 1", "mark 2"]]
    assert tokens.prompts("Is {region1} left of {region2}?") == ["Is mark 1 left of mark 2?"]

    stock = np.asarray(SetOfMarkTokenizer(style="alpha").encode([image], [masks]).images[0])
    assert (stock[masks[0]] != original[masks[0]]).any(-1).mean() > 0.5  # the stock fill paints the object


def test_tags_move_away_from_objects_and_take_given_colours():
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    target = np.zeros((SIZE, SIZE), dtype=bool)
    target[24:40, 24:40] = True
    pixels[target] = (255, 255, 255)
    pixels[24:40, 44:60] = (0, 0, 255)  # an object right of the region, where a tag goes first
    colours = [(10, 200, 30)]
    marked = np.asarray(draw_tags(Image.fromarray(pixels), [target], colours=colours))
    assert (marked[24:40, 44:60] == (0, 0, 255)).all()  # the neighbour is not covered
    assert (marked == colours[0]).all(-1).sum() > 60  # ring and tag in the given colour
    numbered = np.asarray(draw_tags(Image.fromarray(pixels), [target], colours=colours, numbers=[7]))
    assert not np.array_equal(numbered, marked)  # a different digit


def test_centre_tags_sit_on_the_region_and_cover_little_of_it():
    image, masks = _scene()
    original = np.asarray(image)
    marked = np.asarray(draw_tags(image, masks, font_size=6, place="centre"))  # (H, W, 3)
    changed = (marked != original).any(-1)  # (H, W)
    for k, mask in enumerate(masks):
        tag = changed & mask  # (H, W) the region pixels the tag covers
        assert (marked[tag] == TAG_COLOURS[k]).all(-1).mean() > 0.5  # a box in the mark's colour (and a digit)
        assert 0.05 < tag.sum() / mask.sum() < 0.3  # the tag covers part of the interior, most of it stays visible
        x, y = label_point(mask)
        ys, xs = np.nonzero(tag)
        assert abs(xs.mean() - x) <= 2 and abs(ys.mean() - y) <= 2  # centred on the region
        ring = dilate(mask, 2) & ~mask
        assert (marked[ring] == TAG_COLOURS[k]).all(-1).mean() > 0.8  # the ring is drawn as in the default place
    beside = np.asarray(draw_tags(image, masks))
    assert not ((beside != original).any(-1) & (masks[0] | masks[1])).any()  # the default place spares the regions
    with pytest.raises(ValueError, match="tag place"):
        draw_tags(image, masks, place="corner")


def test_checker_rings_paint_every_other_ring_pixel_and_spare_the_regions():
    image, masks = _scene()
    original = np.asarray(image)
    marked = np.asarray(draw_tags(image, masks, ring=4, pattern="checker"))  # (H, W, 3)
    rows, cols = np.indices(masks[0].shape)
    even = (rows + cols) % 2 == 0  # (H, W) the checkerboard's painted squares
    assert not ((marked != original).any(-1) & (masks[0] | masks[1])).any()  # no region pixel changes
    for k, mask in enumerate(masks):
        ring = dilate(mask, 4) & ~mask
        painted = (marked == TAG_COLOURS[k]).all(-1)  # (H, W)
        assert painted[ring & even].mean() > 0.8  # every other ring pixel in the mark's colour...
        assert (marked[ring & ~even] == original[ring & ~even]).all(-1).mean() > 0.8  # ...the others as they were
    with pytest.raises(ValueError, match="ring pattern"):
        draw_tags(image, masks, pattern="dots")


def test_tag_style_is_saved_and_loaded_and_stock_configs_are_unchanged(tmp_path):
    tag = SetOfMarkTokenizer(style="tag", ring=3, font_size=8, tag_colours=[(1, 2, 3), (4, 5, 6)], max_regions=4)
    again = load_mask_tokenizer(tag.save_pretrained(tmp_path / "tag"))
    assert (again.style, again.ring, again.font_size, again.tag_colours) == ("tag", 3, 8, ((1, 2, 3), (4, 5, 6)))
    image, masks = _scene()
    assert np.array_equal(np.asarray(again.draw(image, masks)), np.asarray(tag.draw(image, masks)))
    assert set(SetOfMarkTokenizer().config_dict()) == {"style", "alpha", "max_regions", "region_format"}
    assert "tag_place" not in tag.config_dict()  # configs saved before the option stay as they were
    centre = SetOfMarkTokenizer(style="tag", tag_place="centre", font_size=6)
    again = load_mask_tokenizer(centre.save_pretrained(tmp_path / "centre"))
    assert again.tag_place == "centre" and again.ring_pattern == "solid"
    checker = load_mask_tokenizer(
        SetOfMarkTokenizer(style="tag", ring_pattern="checker").save_pretrained(tmp_path / "c")
    )
    assert checker.ring_pattern == "checker" and "ring_pattern" not in tag.config_dict()
    assert np.array_equal(
        np.asarray(again.draw(image, masks)), np.asarray(draw_tags(image, masks, 2, 6, place="centre"))
    )
    with pytest.raises(ValueError, match="unknown mark style"):
        SetOfMarkTokenizer(style="ring")
    with pytest.raises(ValueError, match="tag place"):
        SetOfMarkTokenizer(style="tag", tag_place="corner")
    with pytest.raises(ValueError, match="RGB"):
        SetOfMarkTokenizer(style="tag", tag_colours=[(1, 2)])


@pytest.fixture(scope="module", params=["smolvlm", "qwen2_vl", "llava"])
def family(request) -> str:
    return request.param


def test_region_channels_tell_two_regions_apart_where_the_union_cannot(family):
    image, (a, b) = _scene()
    union = MaskAwareVLM.from_pretrained(tiny_model_dir(family), mask_tokenizer=MaskEncoderPrompt(max_regions=2))
    assert union.mask_tokenizer.conv.in_channels == 1
    forward, backward = (union.mask_tokenizer.encode([image], [regions]) for regions in ([a, b], [b, a]))
    assert torch.equal(forward.encoder_masks, backward.encoder_masks)
    assert forward.region_texts == [["the highlighted region"] * 2]

    per_region = MaskEncoderPrompt(max_regions=2, channels="region")
    vlm = MaskAwareVLM.from_pretrained(tiny_model_dir(family), mask_tokenizer=per_region)
    assert per_region.conv.in_channels == 2 and not per_region.conv.weight.any()
    forward, backward = (per_region.encode([image], [regions]) for regions in ([a, b], [b, a]))
    assert forward.encoder_masks.shape[1] == 2  # (..., regions, ...)
    assert torch.equal(forward.encoder_masks[:, 0], backward.encoder_masks[:, 1])
    assert torch.equal(forward.encoder_masks[:, 1], backward.encoder_masks[:, 0])
    assert not torch.equal(forward.encoder_masks, backward.encoder_masks)
    assert torch.equal(
        forward.encoder_masks.amax(1, keepdim=True), union.mask_tokenizer.encode([image], [[a, b]]).encoder_masks
    )
    assert forward.region_texts == [["region 1", "region 2"]]
    one = per_region.encode([image], [[a]])
    assert torch.equal(one.encoder_masks[:, 0], forward.encoder_masks[:, 0]) and not one.encoder_masks[:, 1].any()

    prompt = "Is {region1} left of {region2}?"
    with torch.no_grad():
        base = vlm.logits(image, [a, b], prompt, use_regions=False)
        assert torch.equal(vlm.logits(image, [a, b], prompt), base)  # zero init: exactly the base model
        torch.manual_seed(0)
        per_region.conv.weight.normal_()
        ab, ba = vlm.logits(image, [a, b], prompt), vlm.logits(image, [b, a], prompt)
    assert not torch.allclose(ab, base, atol=1e-4) and not torch.allclose(ab, ba, atol=1e-4)


def test_region_channels_are_saved_and_loaded(tmp_path):
    image, (a, b) = _scene()
    vlm = MaskAwareVLM.from_pretrained(
        tiny_model_dir("smolvlm"), mask_tokenizer=MaskEncoderPrompt(max_regions=2, channels="region")
    )
    with torch.no_grad():
        torch.manual_seed(0)
        vlm.mask_tokenizer.conv.weight.normal_()
        before = vlm.logits(image, [a, b], "Is {region1} left of {region2}?")
    again = MaskAwareVLM.from_pretrained(vlm.save_pretrained(tmp_path / "adapter"))
    assert again.mask_tokenizer.channels == "region" and again.mask_tokenizer.conv.in_channels == 2
    with torch.no_grad():
        after = again.logits(image, [a, b], "Is {region1} left of {region2}?")
    assert torch.allclose(before, after, atol=1e-6)
    assert set(MaskEncoderPrompt().config_dict()) == {"max_regions", "region_text"}  # the default saves as before
    with pytest.raises(ValueError, match="unknown channels"):
        MaskEncoderPrompt(channels="each")
