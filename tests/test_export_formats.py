"""The export registry and its file formats, each read back with the tool its users read it with.

Two results: one built by hand from known masks (odd 37x53 frames, stride 2, overlapping objects, an
object in two pieces, a ring with a hole, a frame without objects, a track id that is not consecutive)
and one made by the real pipeline on exact fake backends from a folder of PNG frames.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from fakes import ColourGrounder, ColourSegmenter
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.errors import SegvlmError
from segvlm.export import registry
from segvlm.export.png_masks import voc_colormap
from segvlm.export.registry import ExportError, ExportFormat, UnknownFormatError, export, get_format, list_formats
from segvlm.export.yolo import mask_to_yolo_polygon
from segvlm.export.ytvis import to_ytvis
from segvlm.masks import RLE
from segvlm.testing.media import Sprite, render
from segvlm.tracking import Pipeline
from segvlm.types import FrameResult, ObjectMask, VideoInfo, VideoSegmentation
from segvlm.video import read_frames

H, W = 37, 53
SOURCE_FRAMES, STRIDE = 10, 2
FILE_FORMATS = {"coco", "hf-dataset", "overlay", "png", "yolo", "ytvis"}
IOU_BOUND = 0.9  # YOLO polygons, simplified at 0.7 px, against blob-like masks of ~100 px or more
LABELS = {1: "red box", 2: "blue ball", 3: "red box", 7: "green ring"}


# -- scenes ----------------------------------------------------------------------------------------------------
def _grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:H, 0:W] + 0.5  # (H, W) pixel centres
    return ys, xs


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = _grid()
    return (xs - cx) ** 2 + (ys - cy) ** 2 < r * r  # (H, W)


def _truth(t: int) -> dict[int, np.ndarray]:
    """Masks by track id in source frame ``t``; 1 and 2 overlap, 3 is in two pieces, 7 has a hole."""
    if t == 4:
        return {}
    ys, xs = _grid()
    masks = {
        1: ((xs - 12 - t) / 9) ** 2 + ((ys - 15) / 7) ** 2 < 1,
        2: _disc(22 + t / 2, 20, 7),
    }
    if t in (0, 2, 8):
        masks[3] = _disc(44, 8, 4.2) | _disc(47, 20, 4.2)
    if t in (6, 8):
        ring = np.zeros((H, W), dtype=bool)
        ring[27:36, 34:52] = True
        ring[30:33, 38:47] = False
        masks[7] = ring
    return masks


def _images() -> list[np.ndarray]:
    ys, xs = np.mgrid[0:H, 0:W]
    images = []
    for t in range(SOURCE_FRAMES):
        image = np.stack([xs * 4, ys * 6, np.full_like(xs, 20 * t)], axis=-1).astype(np.uint8)  # (H, W, 3)
        image[_disc(12 + t, 15, 6)] = (220, 30, 30)
        images.append(image)
    return images


def _write_folder(folder, images) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{t:05d}.png")
    return str(folder)


def _built_result(source: str) -> VideoSegmentation:
    frames = []
    for t in range(0, SOURCE_FRAMES, STRIDE):
        objects = []
        for track_id, mask in _truth(t).items():
            rle = RLE.encode(mask)
            objects.append(ObjectMask(track_id, LABELS[track_id], "query", 0.9, rle.bbox_xyxy(), rle))
        frames.append(FrameResult(t, H, W, t / 10, objects))
    info = VideoInfo(source, H, W, 5.0, STRIDE)
    return VideoSegmentation(info, "red box, blue ball, green ring", ["red box", "blue ball"], frames)


@pytest.fixture
def scene(tmp_path):
    """(result, source frames) with ``result.info.source`` a readable folder of PNG frames named ``clip``."""
    images = _images()
    return _built_result(_write_folder(tmp_path / "clip", images)), images


@pytest.fixture
def formats_snapshot():
    """Restore the registry after a test that registers formats."""
    registry.list_formats()
    saved = dict(registry._FORMATS)
    yield
    registry._FORMATS.clear()
    registry._FORMATS.update(saved)


# -- helpers for reading back ----------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _fill_pil(points: np.ndarray, height: int, width: int, scale: int = 8) -> np.ndarray:
    """Rasterise a pixel-corner (N, 2) polygon with PIL at ``scale``x and sample the pixel centres: (H, W) bool.

    PIL rounds vertices and paints boundary pixels; at 8x and sampling at centres that adds nothing.
    """
    canvas = Image.new("1", (width * scale, height * scale))
    ImageDraw.Draw(canvas).polygon([(x * scale, y * scale) for x, y in points], fill=1)
    return np.asarray(canvas)[scale // 2 :: scale, scale // 2 :: scale]  # (H, W)


def _fill_even_odd(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact even-odd fill of an (N, 2) polygon at pixel centres: (H, W) bool."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    inside = np.zeros((height, width), dtype=bool)
    for (x0, y0), (x1, y1) in zip(points, np.roll(points, -1, axis=0)):
        if y0 != y1:
            crosses = ((y0 > ys) != (y1 > ys)) & (x0 + (ys - y0) * (x1 - x0) / (y1 - y0) > xs)
            inside ^= crosses
    return inside


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus every background pixel not 8-connected to the border (slow; for small masks)."""
    background = ~np.pad(mask, 1)
    outside = np.zeros_like(background)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = True, True, True, True
    while True:
        grown = np.pad(outside, 1)
        grown = np.any([grown[1 + dy : grown.shape[0] - 1 + dy, 1 + dx : grown.shape[1] - 1 + dx]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0) & background  # fmt: skip
        if np.array_equal(grown, outside):
            return ~outside[1:-1, 1:-1]
        outside = grown


LINE = re.compile(r"^(\d+)((?: (?:0|1)\.\d{6})+)$")


def _parse_label_file(path, class_count: int) -> list[tuple[int, np.ndarray]]:
    """Grammar check of a YOLO segmentation label file: ``class x y x y ...``; returns (class, (N, 2) points)."""
    rows = []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"{path.name}: bad line {line[:60]!r}"
        values = np.array(match.group(2).split(), dtype=np.float64)
        assert len(values) % 2 == 0 and len(values) >= 6, f"{path.name}: {len(values)} coordinates"
        assert values.min() >= 0 and values.max() <= 1
        class_id = int(match.group(1))
        assert class_id < class_count
        rows.append((class_id, values.reshape(-1, 2)))
    return rows


# -- the registry ----------------------------------------------------------------------------------------------
def test_registry_lists_the_builtins_and_loads_nothing_heavy():
    formats = {fmt.name: fmt for fmt in list_formats()}
    assert set(formats) == FILE_FORMATS | {"supervision"}
    assert {name for name, fmt in formats.items() if fmt.needs_frames} == {"hf-dataset", "overlay", "yolo"}
    assert {name for name, fmt in formats.items() if fmt.write is None} == {"supervision"}
    assert all(fmt.description and "\n" not in fmt.description for fmt in formats.values())
    assert get_format("YOLO") is formats["yolo"]
    code = (
        "import sys, segvlm, segvlm.export.registry as r; r.list_formats(); r.get_format('png'); "
        "print(sorted(m for m in ('numpy', 'PIL', 'av', 'segvlm.types', 'segvlm.export.yolo') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_unknown_format_names_the_known_ones(scene):
    result, _ = scene
    with pytest.raises(
        UnknownFormatError, match=r"unknown export format 'mp4'; use one of: coco, hf-dataset, overlay, png"
    ) as info:
        export(result, "mp4", "anywhere")
    assert isinstance(info.value, SegvlmError)


def test_missing_out_or_frames_say_what_to_pass(scene, tmp_path):
    result, images = scene
    for name in FILE_FORMATS:
        with pytest.raises(ExportError, match=r"writes files; pass out=<folder>"):
            export(result, name)
    in_memory = _built_result("<frames>")
    for name in ("overlay", "yolo"):
        with pytest.raises(ExportError, match=r"'<frames>' was in-memory frames; pass video="):
            export(in_memory, name, tmp_path / name)
    moved = _built_result(str(tmp_path / "gone.mp4"))
    with pytest.raises(ExportError, match=r"no longer exists; pass video="):
        export(moved, "yolo", tmp_path / "yolo")
    assert export(in_memory, "png", tmp_path / "png")  # formats that do not read pixels need no video


def test_register_a_format(scene, tmp_path, formats_snapshot):
    result, _ = scene

    def write_ids(result, out_dir, video=None):
        path = out_dir / "ids.txt"
        path.write_text(" ".join(map(str, result.track_ids)))
        return [path]

    register_format = ExportFormat("ids", "track ids, one line", write_ids)
    registry.register(register_format)
    assert get_format("ids") is register_format and "ids" in {fmt.name for fmt in list_formats()}
    (path,) = export(result, "ids", tmp_path / "new" / "folder")
    assert path.read_text() == "1 2 3 7"
    with pytest.raises(ExportError, match="already registered; pick another name or pass replace=True"):
        registry.register(ExportFormat("coco", "mine", write_ids))
    registry.register(ExportFormat("coco", "mine", write_ids), replace=True)
    assert get_format("coco").description == "mine"
    with pytest.raises(ValueError, match="needs a write or a convert"):
        ExportFormat("nothing", "no functions", None)


def test_supervision_converts_in_memory(scene, tmp_path):
    pytest.importorskip("supervision")
    result, _ = scene
    detections = export(result, "supervision", out=tmp_path / "ignored")
    assert not (tmp_path / "ignored").exists()
    assert len(detections) == len(result)
    assert [d.tracker_id.tolist() for d in detections] == [[1, 2, 3], [1, 2, 3], [], [1, 2, 7], [1, 2, 3, 7]]
    assert np.array_equal(detections[3].mask[2], _truth(6)[7])
    assert detections[0].data["class_name"].tolist() == ["red box", "blue ball", "red box"]


# -- file formats read back --------------------------------------------------------------------------------------
def test_coco_through_the_registry_loads_in_pycocotools(scene, tmp_path):
    result, _ = scene
    (path,) = export(result, "coco", tmp_path / "coco")
    assert path == tmp_path / "coco" / "masks.json"
    coco = COCO(str(path))
    assert len(coco.imgs) == 5 and len(coco.anns) == 3 + 3 + 0 + 3 + 4
    for ann in coco.anns.values():
        frame_index = coco.imgs[ann["image_id"]]["frame_index"]
        assert np.array_equal(coco.annToMask(ann).astype(bool), _truth(frame_index)[ann["track_id"]])


def test_png_masks_are_lossless_index_maps_with_the_voc_palette(scene, tmp_path):
    result, _ = scene
    paths = export(result, "png", tmp_path / "png")
    assert [p.name for p in paths] == ["00000.png", "00002.png", "00004.png", "00006.png", "00008.png", "objects.json"]
    # The VOC colour map, written out the classic way: bits of the index dealt to R, G, B from the top bit.
    expected_palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        expected_palette.append((r, g, b))
    assert expected_palette[1:5] == [(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert voc_colormap().tolist() == [list(c) for c in expected_palette]
    for path in paths[:-1]:
        frame_index = int(path.stem)
        with Image.open(path) as picture:
            assert picture.mode == "P" and picture.size == (W, H)
            palette = np.array(picture.getpalette()[: 256 * 3]).reshape(-1, 3)
            indices = np.array(picture)
        assert palette.tolist() == [list(c) for c in expected_palette]
        expected = np.zeros((H, W), dtype=np.uint8)
        for track_id in sorted(_truth(frame_index)):
            expected[_truth(frame_index)[track_id]] = track_id
        assert np.array_equal(indices, expected)
        if frame_index != 4:
            overlap = _truth(frame_index)[1] & _truth(frame_index)[2]
            assert overlap.any() and (indices[overlap] == 2).all()  # the higher track id wins
        else:
            assert not indices.any()
    objects = json.loads(paths[-1].read_text())
    assert objects["objects"] == {str(i): {"track_id": i, "label": LABELS[i]} for i in (1, 2, 3, 7)}
    assert objects["frames"] == [0, 2, 4, 6, 8] and (objects["height"], objects["width"]) == (H, W)


def test_png_masks_refuse_track_ids_past_255(scene, tmp_path):
    result, _ = scene
    obj = result[0].objects[0]
    result[0].objects.append(ObjectMask(300, "late", "", 0.5, obj.box_xyxy, obj.rle))
    with pytest.raises(
        ExportError, match=r"track id 300 does not fit .*\(result.remove_track\(300\)\), or export 'ytvis'"
    ):
        export(result, "png", tmp_path / "png")


def test_ytvis_decodes_to_the_same_masks(scene, tmp_path):
    result, _ = scene
    (path,) = export(result, "ytvis", tmp_path / "ytvis")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(to_ytvis(result)))
    (video,) = data["videos"]
    assert (video["id"], video["height"], video["width"], video["length"]) == (1, H, W, 5)
    assert video["file_names"] == [f"clip/{t:05d}.jpg" for t in (0, 2, 4, 6, 8)]
    categories = {c["id"]: c["name"] for c in data["categories"]}
    assert sorted(categories.values()) == ["blue ball", "green ring", "red box"]
    assert [a["track_id"] for a in data["annotations"]] == [1, 2, 3, 7]
    for ann in data["annotations"]:
        track_id = ann["track_id"]
        assert categories[ann["category_id"]] == LABELS[track_id]
        assert (ann["video_id"], ann["iscrowd"], ann["height"], ann["width"]) == (1, 0, H, W)
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == 5
        for t, segmentation, bbox, area in zip(range(0, 10, 2), ann["segmentations"], ann["bboxes"], ann["areas"]):
            truth = _truth(t).get(track_id)
            if truth is None:
                assert segmentation is None and bbox is None and area is None
                continue
            decoded = coco_mask.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), truth)
            ys, xs = np.nonzero(truth)
            assert bbox == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert area == truth.sum()


def test_overlay_through_the_registry_has_one_frame_per_processed_frame(scene, tmp_path):
    result, images = scene
    (path,) = export(result, "overlay", tmp_path / "overlay", video=images)
    assert path.name == "overlay.mp4"
    frames = list(read_frames(str(path)))
    assert len(frames) == len(result) == 5


def test_yolo_dataset_parses_rasterises_back_and_holds_the_frames(scene, tmp_path):
    result, images = scene
    out = tmp_path / "yolo"
    paths = export(result, "yolo", out)  # frames read from result.info.source, the PNG folder
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/train",
        "names": {0: "red box", 1: "blue ball", 2: "green ring"},
    }
    names = {name: class_id for class_id, name in data["names"].items()}
    stems = [f"clip_{t:06d}" for t in (0, 2, 4, 6, 8)]
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [s + ".jpg" for s in stems]
    assert sorted(p.name for p in (out / "labels" / "train").iterdir()) == [s + ".txt" for s in stems]
    assert len(paths) == 2 * 5 + 1 and all(p.exists() for p in paths)
    for stem, frame in zip(stems, result):
        with Image.open(out / "images" / "train" / f"{stem}.jpg") as picture:
            written = np.asarray(picture.convert("RGB")).astype(np.int16)
        assert written.shape == (H, W, 3)
        assert np.abs(written - images[frame.frame_index]).mean() < 3  # JPEG quality 95
        rows = _parse_label_file(out / "labels" / "train" / f"{stem}.txt", len(names))
        assert [class_id for class_id, _ in rows] == [names[obj.label] for obj in frame]
        if frame.frame_index == 4:
            assert (out / "labels" / "train" / f"{stem}.txt").read_text() == ""  # background image
        for (_, points), obj in zip(rows, frame):
            filled = _fill_pil(points * [W, H], H, W)
            source = _fill_holes(obj.mask)  # holes are lost by design (the ring)
            assert _iou(filled, source) >= IOU_BOUND, (frame.frame_index, obj.track_id)
    with Image.open(out / "images" / "train" / "clip_000002.jpg") as picture:
        assert np.abs(np.asarray(picture).astype(np.int16) - images[3]).mean() > 5  # not the neighbour frame


def test_yolo_refuses_a_video_that_does_not_match(scene, tmp_path):
    result, images = scene
    with pytest.raises(ExportError, match=r"the video's frames are 20x53 but the result's are 37x53; pass video="):
        export(result, "yolo", tmp_path / "a", video=[image[:20] for image in images])
    with pytest.raises(ExportError, match=r"the video ended before frames \[6, 8\] of the result; pass video="):
        export(result, "yolo", tmp_path / "b", video=images[:5])


# -- the polygon tracer ------------------------------------------------------------------------------------------
def test_tracer_is_exact_on_random_masks_up_to_holes():
    rng = np.random.default_rng(0)
    for _ in range(60):
        height, width = rng.integers(2, 24, size=2)
        mask = rng.random((height, width)) < rng.uniform(0.2, 0.85)  # speckle: pinches, holes, islands in holes
        polygon = mask_to_yolo_polygon(mask, tolerance=0)
        assert np.array_equal(_fill_even_odd(polygon, height, width), _fill_holes(mask))
    assert mask_to_yolo_polygon(np.zeros((4, 4), dtype=bool)) is None
    square = np.zeros((6, 7), dtype=bool)
    square[1:4, 2:6] = True
    assert mask_to_yolo_polygon(square).tolist() == [[2, 1], [6, 1], [6, 4], [2, 4]]  # corners, clockwise


def test_simplified_polygons_keep_blobs_above_the_iou_bound():
    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[0:48, 0:48] + 0.5
    checked = 0
    for _ in range(40):
        a, b = rng.uniform(5, 16, size=2)
        angle, cx, cy = rng.uniform(0, np.pi), *rng.uniform(18, 30, size=2)
        u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        v = (ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle)
        mask = (u / a) ** 2 + (v / b) ** 2 < 1  # (48, 48) ellipse
        if mask.sum() < 100:
            continue
        polygon = mask_to_yolo_polygon(mask)
        assert len(polygon) < len(mask_to_yolo_polygon(mask, tolerance=0))  # simplification removed vertices
        assert _iou(_fill_pil(polygon, 48, 48), mask) >= IOU_BOUND
        checked += 1
    assert checked >= 20


# -- a result from the real pipeline ---------------------------------------------------------------------------
def test_every_file_format_from_a_pipeline_result(tmp_path):
    red, blue = (220, 30, 30), (30, 60, 220)
    sprites = [
        Sprite("red", red, (10, 14), [(4, 2 + 3 * t) for t in range(SOURCE_FRAMES)]),
        Sprite("blue", blue, (9, 9), [(20, 40 - 2 * t) for t in range(6)] + [None] * 4),
    ]
    images, truth = render(sprites, H, W, SOURCE_FRAMES)
    folder = _write_folder(tmp_path / "scene", images)
    config = PipelineConfig(tracking=TrackingConfig(reground_every=100, min_mask_area=1))
    pipe = Pipeline(config, grounder=ColourGrounder({"red box": red, "blue box": blue}), segmenter=ColourSegmenter())
    result = pipe(["red box", "blue box"], folder, stride=STRIDE)
    assert [f.frame_index for f in result] == [0, 2, 4, 6, 8] and result.info.source == folder
    name_of = {track.track_id: track.label.split()[0] for track in result.tracks()}
    assert sorted(name_of.values()) == ["blue", "red"]

    written = {fmt.name: export(result, fmt.name, tmp_path / fmt.name) for fmt in list_formats() if fmt.write}
    assert set(written) == FILE_FORMATS
    for name, paths in written.items():
        assert paths and all(p.is_file() and p.stat().st_size > 0 and tmp_path / name in p.parents for p in paths)

    coco = COCO(str(written["coco"][0]))
    for ann in coco.anns.values():
        frame_index = coco.imgs[ann["image_id"]]["frame_index"]
        assert np.array_equal(coco.annToMask(ann).astype(bool), truth[name_of[ann["track_id"]]][frame_index])
    for path in written["png"][:-1]:
        indices = np.array(Image.open(path))
        for track_id, name in name_of.items():
            assert np.array_equal(indices == track_id, truth[name][int(path.stem)])
    ytvis = json.loads(written["ytvis"][0].read_text())
    for ann in ytvis["annotations"]:
        for t, segmentation in zip(range(0, 10, 2), ann["segmentations"]):
            expected = truth[name_of[ann["track_id"]]][t]
            if segmentation is None:
                assert not expected.any()
            else:
                decoded = coco_mask.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
                assert np.array_equal(decoded.astype(bool), expected)
    label_files = sorted((tmp_path / "yolo" / "labels" / "train").iterdir())
    assert [len(_parse_label_file(p, 2)) for p in label_files] == [len(frame) for frame in result] == [2, 2, 2, 1, 1]
    assert len(list(read_frames(str(written["overlay"][0])))) == 5


def test_hf_dataset_export_loads_with_datasets(tmp_path):
    import datasets

    from segvlm.data import with_decoded_masks

    red = Sprite("red", (220, 30, 30), (10, 12), [(5, 2 + t) for t in range(6)])
    frames, truth = render([red], 48, 64, 6)
    config = PipelineConfig(tracking=TrackingConfig(reground_every=100, min_mask_area=1))
    pipe = Pipeline(config, grounder=ColourGrounder({"red box": (220, 30, 30)}), segmenter=ColourSegmenter())
    result = pipe("red box", frames)
    written = export(result, "hf-dataset", tmp_path / "ds", video=frames)
    assert any(path.name == "dataset_info.json" for path in written)
    loaded = with_decoded_masks(datasets.load_from_disk(str(tmp_path / "ds")))
    assert len(loaded) == 6 and loaded[3]["regions"][0]["label"] == "red box"
    assert np.array_equal(loaded[3]["masks"][0], truth["red"][3])
