"""Result type and exports: COCO via pycocotools, save/load, overlay video, supervision."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools.coco import COCO

from segvlm.masks import RLE, box_iou_matrix, mask_iou_matrix
from segvlm.testing.media import Sprite, render
from segvlm.types import FrameResult, ObjectMask, VideoInfo, VideoSegmentation
from segvlm.video import read_frames

H, W = 40, 64


def make_result(frames=6) -> tuple[VideoSegmentation, list[np.ndarray], dict]:
    red = Sprite("red", (220, 30, 30), (10, 12), [(5, 2 + 3 * t) for t in range(frames)])
    blue = Sprite("blue", (30, 30, 220), (8, 8), [None, None] + [(25, 40)] * (frames - 2))
    images, truth = render([red, blue], H, W, frames)
    result_frames = []
    for t in range(frames):
        objects = []
        for track_id, name, label in ((1, "red", "red box"), (2, "blue", "blue box")):
            if truth[name][t].any():
                rle = RLE.encode(truth[name][t])
                objects.append(ObjectMask(track_id, label, "red box, blue box", 0.8, rle.bbox_xyxy(), rle))
        result_frames.append(FrameResult(t, H, W, t / 10, objects))
    info = VideoInfo("<frames>", H, W, 10.0, 1)
    return VideoSegmentation(info, "red box, blue box", ["red box", "blue box"], result_frames), images, truth


def test_rle_roundtrip_area_and_box():
    mask = np.zeros((H, W), bool)
    mask[3:9, 10:20] = True
    rle = RLE.encode(mask)
    assert np.array_equal(rle.decode(), mask) and rle.area == 60
    assert rle.bbox_xyxy() == (10.0, 3.0, 20.0, 9.0)
    assert RLE.from_coco(rle.to_coco()) == rle
    uncompressed = {"size": [H, W], "counts": [H * W]}  # all background, in COCO's list form
    assert RLE.from_coco(uncompressed).area == 0
    column = {"size": [H, W], "counts": [H * 2, H, H * (W - 3)]}  # third column set, as COCO's list form writes it
    assert np.array_equal(np.nonzero(RLE.from_coco(column).decode().any(0))[0], [2])
    with pytest.raises(ValueError, match="2-D"):
        RLE.encode(np.zeros((2, 2, 2)))


def test_iou_helpers():
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True
    assert mask_iou_matrix([RLE.encode(a)], [RLE.encode(b)])[0, 0] == pytest.approx(1 / 3)
    assert box_iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 6, 6]])).tolist() == [[1 / 7, 0.0]]


def test_result_access_and_tracks():
    result, _, _ = make_result()
    assert len(result) == 6 and [f.frame_index for f in result] == list(range(6))
    assert result.track_ids == [1, 2]
    blue = result.track(2)
    assert (blue.first_frame, blue.last_frame, len(blue), blue.label) == (2, 5, 4, "blue box")
    assert set(result.masklet(2)) == {2, 3, 4, 5}
    assert result[0].masks().shape == (1, H, W) and result[3].boxes().shape == (2, 4)
    with pytest.raises(KeyError, match=r"known track ids: \[1, 2\]"):
        result.track(9)
    result.remove_track(1)
    assert result.track_ids == [2] and len(result[0]) == 0


def test_coco_loads_in_pycocotools_and_decodes_to_the_same_masks(tmp_path):
    result, _, truth = make_result()
    result.save(str(tmp_path))
    coco = COCO(str(tmp_path / "masks.json"))
    assert len(coco.imgs) == 6 and len(coco.anns) == 6 + 4
    assert {c["name"] for c in coco.cats.values()} == {"red box", "blue box"}
    for ann in coco.anns.values():
        name = "red" if coco.cats[ann["category_id"]]["name"] == "red box" else "blue"
        position = ann["image_id"] - 1
        assert np.array_equal(coco.annToMask(ann).astype(bool), truth[name][position])
        assert ann["track_id"] == (1 if name == "red" else 2)


def test_save_load_roundtrip(tmp_path):
    result, _, _ = make_result()
    result.meta = {"preset": "x"}
    result.save(str(tmp_path / "out"))
    loaded = VideoSegmentation.load(str(tmp_path / "out"))
    assert loaded.query == result.query and loaded.phrases == result.phrases and loaded.meta == {"preset": "x"}
    assert loaded.info == result.info
    assert loaded.frames == result.frames
    with pytest.raises(FileNotFoundError, match="result.save"):
        VideoSegmentation.load(str(tmp_path / "nowhere"))


def test_overlay_video_has_every_frame_at_full_size(tmp_path):
    result, images, _ = make_result()
    path = result.save_overlay(str(tmp_path / "overlay.mp4"), video=images)
    frames = list(read_frames(path))
    assert len(frames) == 6 and frames[0].image.shape == (H, W, 3)
    # The red box is tinted: its pixels differ from the raw frame, the background far from it does not.
    assert np.abs(frames[0].image[10, 8].astype(int) - images[0][10, 8]).sum() > 30
    with pytest.raises(ValueError, match="pass them again"):
        result.save_overlay(str(tmp_path / "x.mp4"))


def test_supervision_roundtrip():
    sv = pytest.importorskip("supervision")
    result, _, _ = make_result()
    detections = result[3].to_supervision()
    assert isinstance(detections, sv.Detections)
    assert detections.tracker_id.tolist() == [1, 2] and detections.mask.shape == (2, H, W)
    assert detections.data["class_name"].tolist() == ["red box", "blue box"]
    back = FrameResult.from_supervision(detections, frame_index=3, height=H, width=W)
    assert back.objects == result[3].objects
    filtered = detections[detections.confidence > 0.5]
    assert len(filtered) == 2
    with pytest.raises(ValueError, match="no masks"):
        FrameResult.from_supervision(sv.Detections(xyxy=np.zeros((1, 4))), 0, H, W)
