"""Importers (COCO polygons/RLE, RefCOCO rows, segvlm results) and the COCO exporter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from segvlm.data.export import to_coco
from segvlm.data.importers import (
    RefCocoFields,
    rows_from_coco,
    rows_from_refcoco,
    rows_from_saved_result,
    rows_from_segmentation_result,
    rows_to_dataset,
    write_rows,
)
from segvlm.data.transforms import decode_regions
from segvlm.testing import SyntheticLabeler, write_test_video

H, W = 40, 60


def _square(y0: int, x0: int, side: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


@pytest.fixture()
def coco_files(tmp_path) -> tuple[Path, Path, dict[int, np.ndarray]]:
    """A COCO file with a polygon, a compressed RLE and an uncompressed RLE annotation; one image missing."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(np.full((H, W, 3), 30, dtype=np.uint8)).save(images / "b.png")
    rle = coco_mask.encode(np.asfortranarray(_square(20, 30, 8).astype(np.uint8)))
    uncompressed_mask = _square(2, 40, 5)
    flat = uncompressed_mask.flatten(order="F").astype(np.uint8)
    runs, current, count = [], 0, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W},
                   {"id": 3, "file_name": "missing.jpg", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0,
             "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [30, 20, 8, 8], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [40, 2, 5, 5], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": runs}, "caption": "a small dog"},
        ],
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    expected = {10: None, 11: _square(20, 30, 8), 12: uncompressed_mask}
    return path, images, expected


def test_coco_import_reads_polygons_and_both_rle_kinds(coco_files):
    path, images, expected = coco_files
    errors = []
    rows = list(rows_from_coco(path, images, errors=errors))
    assert [row.source for row in rows] == ["a.jpg", "b.png"]
    assert [e.source for e in errors] == ["missing.jpg"] and "No such file" in errors[0].reason
    polygon, rle = rows[0].regions
    assert (polygon.label, polygon.track_id, polygon.caption, polygon.score) == ("cat", 10, "a cat", 1.0)
    polygon_mask = polygon.rle.decode()
    assert polygon_mask[5:13, 5:13].all() and not polygon_mask[20:, :].any()
    np.testing.assert_array_equal(rle.rle.decode(), expected[11])
    assert rle.bbox_xyxy == (30.0, 20.0, 38.0, 28.0)
    np.testing.assert_array_equal(rows[1].regions[0].rle.decode(), expected[12])
    assert rows[1].regions[0].caption == "a small dog"
    assert rows[0].image == (images / "a.jpg").read_bytes()

    with pytest.raises(FileNotFoundError):
        list(rows_from_coco(path, images))  # strict without an errors list


def test_coco_round_trip_through_dataset_and_export(coco_files, tmp_path):
    import datasets

    path, images, _ = coco_files
    errors = []
    out = write_rows(
        rows_from_coco(path, images, errors=errors),
        tmp_path / "ds",
        source_name="import:coco",
        errors=errors,
        rows_per_shard=1,
    )
    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == 2 and len(list((out / "data").glob("*.parquet"))) == 2
    assert "| inputs skipped (see `errors.jsonl`) | 1 |" in (out / "README.md").read_text()

    exported = to_coco(ds, images_dir=tmp_path / "exported")
    assert [c["name"] for c in exported["categories"]] == ["cat", "dog"]
    assert (tmp_path / "exported" / "a.jpg").read_bytes() == (images / "a.jpg").read_bytes()
    original = {row.source: row for row in rows_from_coco(path, images, errors=[])}
    again = {row.source: row for row in rows_from_coco(exported, tmp_path / "exported")}
    for source, row in original.items():
        back = again[source]
        assert [r.track_id for r in back.regions] == [r.track_id for r in row.regions]
        for a, b in zip(row.regions, back.regions, strict=True):
            np.testing.assert_array_equal(a.rle.decode(), b.rle.decode())
            np.testing.assert_allclose(a.bbox_xyxy, b.bbox_xyxy)
            assert (a.label, a.caption) == (b.label, b.caption)


def test_refcoco_rows_group_by_image_with_one_region_per_sentence(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    pil = Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8))
    records = [
        {"image": "img.png", "image_id": 5, "bbox": [10, 10, 10, 10], "ref_id": 1, "category": "person",
         "sentences": [{"sent": "man on the left"}, {"sent": "guy in red"}],
         "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]},
        {"image": pil, "image_id": 6, "bbox": [0, 0, 5, 5], "ref_id": 3, "sentences": "tiny box"},
        {"image": "img.png", "image_id": 5, "bbox": [30, 5, 4, 4], "ref_id": 2, "category": "cup",
         "sentences": ["the cup"]},
    ]  # fmt: skip
    rows = list(rows_from_refcoco(records, image_root=tmp_path))
    assert [len(row.regions) for row in rows] == [3, 1]
    first = rows[0]
    assert [(r.track_id, r.caption, r.label) for r in first.regions] == [
        (1, "man on the left", "person"),
        (1, "guy in red", "person"),
        (2, "the cup", "cup"),
    ]
    assert first.regions[0].rle.decode()[11:19, 11:19].all()
    assert rows[1].regions[0].rle.area == 25  # no polygon: the box is the mask
    assert rows[1].regions[0].label == "object"

    renamed = [{"img": "img.png", "box": [1, 1, 2, 2], "expr": "a dot"}]
    fields = RefCocoFields(image="img", bbox="box", sentences="expr")
    (row,) = rows_from_refcoco(renamed, image_root=tmp_path, fields=fields)
    assert row.regions[0].phrase == "a dot" and row.source == "img.png"


def test_segvlm_result_import_matches_result(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", frames=4)
    result = SyntheticLabeler()(["red square", "green square"], str(video), None, 2)
    rows = rows_from_segmentation_result(result)
    assert [row.frame_index for row in rows] == [0, 2]
    ds = rows_to_dataset(rows)
    for row, frame in zip(ds, result.frames, strict=True):
        np.testing.assert_array_equal(decode_regions(row["regions"], frame.height, frame.width), frame.masks())

    result.save(str(tmp_path / "saved"))
    saved = rows_from_saved_result(tmp_path / "saved", video=video)
    assert [len(r.regions) for r in saved] == [len(r.regions) for r in rows]
    np.testing.assert_array_equal(saved[1].regions[0].rle.decode(), rows[1].regions[0].rle.decode())


def test_push_to_hub_uploads_only_a_finished_build(coco_files, tmp_path, monkeypatch):
    import huggingface_hub

    from segvlm.data import push_to_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs["repo_id"], kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    path, images, _ = coco_files
    out = write_rows(rows_from_coco(path, images, errors=[]), tmp_path / "ds")
    assert push_to_hub(out, "me/squares") == "https://huggingface.co/datasets/me/squares"
    upload = calls[1][2]
    assert upload["repo_type"] == "dataset" and "data/*.parquet" in upload["allow_patterns"]
    assert "build.json" not in upload["allow_patterns"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "build.json").write_text("{}")
    with pytest.raises(ValueError, match="not a finished"):
        push_to_hub(tmp_path / "half", "me/half")
