"""Zero-training designs without a model: coordinate formats, polygons, Set-of-Mark, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segvlm.masks import RLE, mask_iou
from segvlm.masktok import SetOfMarkTokenizer, TextMaskTokenizer, splice_regions
from segvlm.masktok.coords import FORMATS, Qwen25VLBoxFormat, polygon_to_mask

W, H = 90, 60


def _mask(y0=10, y1=40, x0=20, x1=70) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_box_round_trips_within_quantisation(name):
    tok = TextMaskTokenizer(name)
    image = Image.new("RGB", (W, H))
    text = tok.encode([image], [[_mask()]]).region_texts[0][0]
    (region,) = tok.decode(f"The answer is {text} here.", (W, H))
    # one quantisation step of each format, in pixels (Kosmos-2 cells are 1/32 of the side)
    tol = {"kosmos2": W / 32, "qwen2_5_vl": 1.5}.get(name, 1.0)
    assert np.allclose(region.box_xyxy, (20, 10, 70, 40), atol=tol)


def test_formats_use_each_family_syntax():
    box = (9.0, 6.0, 45.0, 30.0)
    assert FORMATS["qwen2_vl"]().format_box(box, W, H) == "<|box_start|>(100,100),(500,500)<|box_end|>"
    assert FORMATS["generic"]().format_box(box, W, H) == "[100,100,500,500]"
    assert FORMATS["paligemma"]().format_box(box, W, H) == "<loc0102><loc0102><loc0511><loc0511>"  # y first
    assert FORMATS["paligemma"]().format_box((0, 0, W, H / 2), W, H).startswith("<loc0000><loc0000><loc0511>")
    kosmos = FORMATS["kosmos2"]().format_box((0, 0, W, H), W, H)
    assert kosmos == "<object><patch_index_0000><patch_index_1023></object>"


def test_qwen25_uses_absolute_pixels_of_the_resized_image():
    fmt = Qwen25VLBoxFormat(factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    width, height = 1000, 500
    rw, rh = fmt.resized(width, height)
    assert (rw % 28, rh % 28) == (0, 0) and (rw, rh) != (width, height)
    text = fmt.format_box((0, 0, width, height), width, height)
    assert text == f'{{"bbox_2d": [0, 0, {rw}, {rh}]}}'
    assert np.allclose(fmt.parse(text, width, height)[0].box_xyxy, (0, 0, width, height))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_polygon_round_trips(name):
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 45) ** 2 + (yy - 30) ** 2 < 20**2
    tok = TextMaskTokenizer(name, polygon_points=16)
    text = tok.encode([Image.new("RGB", (W, H))], [[disc]]).region_texts[0][0]
    (region,) = tok.decode(text, (W, H))
    assert region.polygon is not None and len(region.polygon) == 16
    assert mask_iou(polygon_to_mask(region.polygon, H, W), disc) > {"kosmos2": 0.8, "qwen2_5_vl": 0.9}.get(name, 0.93)


def test_decode_reads_several_boxes_in_order():
    tok = TextMaskTokenizer("qwen2_vl")
    image = Image.new("RGB", (W, H))
    texts = tok.encode([image], [[_mask(), _mask(0, 20, 0, 30)]]).region_texts[0]
    boxes = [r.box_xyxy for r in tok.decode(" and ".join(texts), (W, H))]
    assert len(boxes) == 2 and np.allclose(boxes[1], (0, 0, 30, 20), atol=1)


def test_regions_accept_rle_boxes_and_masks_alike():
    tok = TextMaskTokenizer("generic")
    image = Image.new("RGB", (W, H))
    texts = tok.encode([image], [[_mask(), RLE.encode(_mask()), (20, 10, 70, 40)]]).region_texts[0]
    assert texts[0] == texts[1] == texts[2]


def test_splice_regions_places_named_and_lists_the_rest():
    assert splice_regions("What is {region2}?", ["A", "B"]) == "Region 1: A.\nWhat is B?"
    assert splice_regions("Describe.", []) == "Describe."
    with pytest.raises(ValueError, match="only 1 regions"):
        splice_regions("{region3}", ["A"])


def test_set_of_mark_draws_inside_masks_only():
    image = Image.new("RGB", (W, H), (128, 128, 128))
    a, b = _mask(0, 20, 0, 30), _mask(30, 60, 50, 90)
    tokens = SetOfMarkTokenizer(style="alpha").encode([image], [[a, b]])
    drawn = np.asarray(tokens.images[0])
    changed = (drawn != 128).any(-1)
    assert tokens.region_texts == [["mark 1", "mark 2"]]
    assert changed[a].mean() > 0.5 and changed[b].mean() > 0.5
    assert not changed[~(a | b)].any()
    assert np.asarray(image).max() == 128  # the caller's image is untouched


@pytest.mark.parametrize(
    ("regions", "match"),
    [
        ([np.ones((30, 30), bool)], "does not match the image size 60x90"),
        ([np.zeros((H, W), bool)], "mask is empty"),
        ([_mask()] * 10, "budget is 9"),
    ],
)
def test_bad_regions_raise_clear_errors(regions, match):
    with pytest.raises(ValueError, match=match):
        SetOfMarkTokenizer().encode([Image.new("RGB", (W, H))], [regions])


def test_mismatched_lists_raise():
    with pytest.raises(ValueError, match="one list of regions per image"):
        TextMaskTokenizer().encode([Image.new("RGB", (W, H))] * 2, [[_mask()]])


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, segvlm.masktok, segvlm.vlm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
