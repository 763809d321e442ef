"""The scene generator: masks and captions agree, scenes are deterministic by seed, rows fit the schema."""

from __future__ import annotations

import numpy as np
import pytest

from segvlm.scenes import COLOURS, SceneConfig, make_scene, scene_dataset, scene_rows


def test_caption_colour_is_the_colour_under_the_mask():
    ds = scene_dataset(6, seed=3, config=SceneConfig(n_objects=4, frames=2))
    from segvlm.data.transforms import with_decoded_masks

    checked = 0
    for row in with_decoded_masks(ds):
        image = np.asarray(row["image"].convert("RGB"))  # (H, W, 3)
        for region, mask in zip(row["regions"], row["masks"], strict=True):
            size, colour, shape = region["caption"].split()
            assert size in ("small", "large") and shape in ("circle", "square", "triangle")
            pixels = np.unique(image[mask].reshape(-1, 3), axis=0)  # every visible pixel has one colour
            assert pixels.tolist() == [list(COLOURS[colour])]
            x0, y0, x1, y1 = region["bbox_xyxy"]
            ys, xs = np.nonzero(mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            checked += 1
    assert checked >= 6 * 2 * 3  # every frame of every scene has (nearly) all its objects


def test_scenes_are_deterministic_by_seed_and_index():
    a, b = make_scene(7, 2), make_scene(7, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert a.objects == b.objects
    other = make_scene(8, 2)
    assert not np.array_equal(a.frames[0], other.frames[0])
    # scene i does not depend on how many scenes are generated around it
    assert scene_rows(1, seed=7, start=2)[0].image == scene_rows(3, seed=7)[2].image


def test_still_scenes_have_distinct_colours_and_separate_objects():
    config = SceneConfig(n_objects=3)
    for index in range(20):
        scene = make_scene(0, index, config)
        assert len({o.colour for o in scene.objects}) == 3
        masks = scene.masks[0]
        assert all(m.any() for m in masks)
        assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()


def test_video_objects_move_and_keep_their_track_ids():
    rows = scene_rows(1, seed=1, config=SceneConfig(frames=4, max_speed=3.0))
    assert [r.frame_index for r in rows] == [0, 1, 2, 3]
    assert all(r.source == rows[0].source for r in rows)
    first, last = rows[0].regions, rows[-1].regions
    assert [r.track_id for r in first] == [1, 2, 3]
    moved = [a.bbox_xyxy != b.bbox_xyxy for a, b in zip(first, last, strict=False) if a.track_id == b.track_id]
    assert any(moved)


def test_dataset_has_the_builder_schema():
    from segvlm.data.schema import features

    ds = scene_dataset(2, seed=0)
    assert ds.features == features()
    assert len(ds) == 2 and len(ds[0]["regions"]) == 3


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="distinct colours"):
        SceneConfig(n_objects=4, colours=("red", "blue"))
    with pytest.raises(ValueError, match="unknown scene attribute"):
        SceneConfig(shapes=("hexagon",))
