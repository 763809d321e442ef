"""One of each: one frame reader, one COCO writer and file naming, one palette, one media-suffix table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segvlm.errors import FrameIndexError, VideoReadError
from segvlm.export.coco import coco_file_name
from segvlm.testing import SyntheticLabeler, write_test_image, write_test_video
from segvlm.video import read_frame, read_frames


@pytest.fixture
def media(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", frames=6)
    folder = tmp_path / "frames"
    for index in range(4):
        write_test_image(folder / f"{index:03d}.png", index=index)
    photo = write_test_image(tmp_path / "photo.png", index=2)
    return {"video": video, "folder": folder, "photo": photo}


@pytest.mark.parametrize("kind", ["video", "folder", "photo"])
def test_read_frame_is_the_frame_read_frames_yields(media, kind):
    source = str(media[kind])
    frames = list(read_frames(source))
    for index in {0, len(frames) - 1, len(frames) // 2}:
        frame = read_frame(source, index)
        assert frame.index == index and frame.timestamp == frames[index].timestamp
        assert np.array_equal(frame.image, frames[index].image)
        frame.image[0, 0] = 7  # a fresh array: drawing on it is allowed
    with pytest.raises(FrameIndexError, match=f"has {len(frames)} frames, so frame {len(frames)} does not exist") as e:
        read_frame(source, len(frames))
    assert e.value.frames == len(frames) and isinstance(e.value, IndexError)


def test_read_frame_refuses_a_one_shot_iterator():
    with pytest.raises(VideoReadError, match="cannot read a generator in random order"):
        read_frame((np.zeros((4, 4, 3), np.uint8) for _ in range(2)), 0)


def test_both_describe_paths_read_folders_through_the_one_reader(media):
    from segvlm.agents.describe import read_frame as agent_frame
    from segvlm.vlm.describe import read_frame as vlm_frame

    expected = read_frame(str(media["folder"]), 3).image
    assert np.array_equal(np.asarray(vlm_frame(media["folder"], 3)), expected)
    assert np.array_equal(agent_frame(media["folder"], 3, "frames"), expected)


@pytest.mark.parametrize(
    ("source", "frame_index", "name"),
    [
        ("clip.mp4", 3, "clip/000003.jpg"),
        ("videos/clip.mp4", 3, "videos/clip/000003.jpg"),
        ("/data/videos/clip.mp4", 3, "clip/000003.jpg"),
        ("photos/a.jpg", 0, "photos/a.jpg"),
        ("/data/photos/a.PNG", 0, "a.PNG"),
        ("../elsewhere/a.png", 0, "a.png"),
        ("frames", 2, "frames/000002.jpg"),
        ("frames/*.jpg", 0, "frames/000000.jpg"),
        ("<frames>", 1, "frames/000001.jpg"),
        ("/", 0, "frames/000000.jpg"),
    ],
)
def test_one_file_naming_stays_inside_the_folder_it_is_written_to(source, frame_index, name):
    assert coco_file_name(source, frame_index) == name


def _rows(result):
    """The dataset rows of a result, as the builder writes them (no image bytes)."""
    for frame in result:
        regions = [
            {
                "label": obj.label,
                "phrase": obj.phrase,
                "caption": "",
                "score": obj.score,
                "track_id": obj.track_id,
                "bbox_xyxy": list(obj.box_xyxy),
                "mask": obj.rle.to_coco(),
            }
            for obj in frame
        ]
        yield {
            "source": result.info.source,
            "frame_index": frame.frame_index,
            "height": frame.height,
            "width": frame.width,
            "timestamp": frame.timestamp,
            "regions": regions,
        }


def test_results_and_datasets_are_written_by_one_coco_writer(media, monkeypatch):
    from segvlm.data.export import to_coco as dataset_coco
    from segvlm.export.coco import to_coco as result_coco

    monkeypatch.chdir(media["video"].parent)
    result = SyntheticLabeler()(["red", "green"], "clip.mp4", max_frames=4, stride=1)
    from_result, from_rows = result_coco(result), dataset_coco(_rows(result))
    assert [i["file_name"] for i in from_result["images"]] == [f"clip/{t:06d}.jpg" for t in range(4)]
    assert [i["file_name"] for i in from_rows["images"]] == [i["file_name"] for i in from_result["images"]]
    assert from_rows["categories"] == from_result["categories"]
    keys = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "track_id", "phrase")
    assert len(from_result["annotations"]) == 8
    for ours, theirs in zip(from_result["annotations"], from_rows["annotations"], strict=True):
        assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}
    assert all(a["caption"] == "" for a in from_rows["annotations"])  # a dataset's extras stay


def test_saved_frames_of_a_photo_never_overwrite_it(media):
    from segvlm.cli import write_frames

    photo, before = media["photo"], media["photo"].read_bytes()
    result = SyntheticLabeler()("red", str(photo), max_frames=None, stride=1)
    assert write_frames(result, str(photo), photo.parent) == []
    assert photo.read_bytes() == before
    video = media["video"]
    result = SyntheticLabeler()("red", str(video), max_frames=3, stride=2)
    written = write_frames(result, str(video), video.parent / "out")
    assert written == [str(video.parent / "out" / "clip" / f"{t:06d}.jpg") for t in (0, 2, 4)]
    assert all(Path(path).is_file() for path in written)


def test_one_palette():
    from segvlm.export.overlay import color_for
    from segvlm.masktok import visual_prompt
    from segvlm.palette import MARK_PALETTE, PALETTE

    assert [color_for(track_id) for track_id in (1, 2, 19)] == [PALETTE[0], PALETTE[1], PALETTE[0]]
    assert visual_prompt.PALETTE is MARK_PALETTE and set(MARK_PALETTE) < set(PALETTE)
    assert MARK_PALETTE[:3] == ((230, 25, 75), (60, 180, 75), (0, 130, 200)) and len(MARK_PALETTE) == 12


def test_one_media_suffix_table():
    from segvlm.agents import paths, runtime, tools
    from segvlm.annotate import project
    from segvlm.data import export, importers, inputs
    from segvlm.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    assert inputs.IMAGE_SUFFIXES is IMAGE_SUFFIXES and inputs.VIDEO_SUFFIXES is VIDEO_SUFFIXES
    assert importers.IMAGE_SUFFIXES is IMAGE_SUFFIXES and tools.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    assert runtime.VIDEO_SUFFIXES is VIDEO_SUFFIXES and project.VIDEO_SUFFIXES is VIDEO_SUFFIXES
    assert paths._MEDIA_SUFFIXES == IMAGE_SUFFIXES | VIDEO_SUFFIXES
    assert not hasattr(export, "IMAGE_SUFFIXES")  # the naming lives with the writer
    assert isinstance(IMAGE_SUFFIXES, frozenset) and ".png" in IMAGE_SUFFIXES and ".mp4" in VIDEO_SUFFIXES
