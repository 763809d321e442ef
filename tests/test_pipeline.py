"""End to end on tiny random checkpoints (real transformers models, real video files), and corrections."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import segvlm
from segvlm.config import GrounderConfig, PipelineConfig
from segvlm.errors import QueryError, UnknownBackendError, VideoReadError
from segvlm.testing.media import Sprite, render, write_video
from segvlm.tracking import Pipeline

H, W = 72, 128
RED, BLUE = (220, 30, 30), (30, 60, 220)


@pytest.fixture(scope="module")
def tiny():
    with pytest.warns(UserWarning, match="meaningless"):
        return Pipeline.from_preset("tiny-random")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    images, _ = render([Sprite("red", RED, (24, 30), [(20, 4 * t) for t in range(16)])], H, W, 16)
    return write_video(tmp_path_factory.mktemp("video") / "scene.mp4", images)


def test_tiny_random_end_to_end_from_a_video_file(tiny, video, tmp_path):
    progress = []
    result = tiny("segment the red box", video, max_frames=12, on_frame=lambda f, p: progress.append(p))
    assert len(result) == 12 and result.phrases == ["red box"]
    assert [p.frames_done for p in progress] == list(range(1, 13))
    assert progress[-1].frames_total == 12
    assert result.track_ids, "the tiny detector proposes boxes and the tiny segmenter keeps them present"
    for frame in result:
        for obj in frame:
            assert obj.mask.shape == (H, W) and obj.label == "red box" and obj.phrase == "the red box"
    assert result.meta["preset"] == "tiny-random" and result.meta["random_weights"] is True
    result.save(str(tmp_path), overlay=True)
    assert len(COCO(str(tmp_path / "masks.json")).imgs) == 12
    assert len(list(segvlm.read_frames(tmp_path / "overlay.mp4"))) == 12


def test_function_api_with_preset(video):
    with pytest.warns(UserWarning, match="meaningless"):
        result = segvlm.pipeline(["red box"], video, preset="tiny-random", max_frames=3, stride=2)
    assert [f.frame_index for f in result] == [0, 2, 4]


def test_single_image_gives_one_frame_and_large_images_keep_their_size(tiny, tmp_path):
    big = np.zeros((1200, 2000, 3), np.uint8)
    big[300:700, 400:1000] = RED
    Image.fromarray(big).save(tmp_path / "big.png")
    result = tiny("red box", str(tmp_path / "big.png"))
    assert len(result) == 1 and (result.info.height, result.info.width) == (1200, 2000)
    assert all(obj.mask.shape == (1200, 2000) for obj in result[0])


def test_grounding_dino_backend_through_the_pipeline(video):
    config = segvlm.load_config(
        "tiny-random", overrides={"grounder": {"name": "grounding-dino", "model": "tiny-random:grounding-dino"}}
    )
    with pytest.warns(UserWarning):
        result = Pipeline(config)("red box", video, max_frames=4)
    assert len(result) == 4 and result.meta["grounder"]["name"] == "grounding-dino"


def test_bad_input_errors(tiny, tmp_path):
    with pytest.raises(QueryError, match="names nothing"):
        tiny("", [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(VideoReadError, match="no such file"):
        tiny("car", str(tmp_path / "missing.mp4"))
    with pytest.raises(UnknownBackendError, match="known grounders"):
        _ = Pipeline(PipelineConfig(grounder=GrounderConfig(name="yolo"))).grounder
    with pytest.raises(VideoReadError, match="same size"):
        tiny("car", [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_a_video_cut_mid_stream_keeps_the_frames_before_the_cut(tiny, tmp_path):
    rng = np.random.default_rng(1)
    path = write_video(tmp_path / "noise.mp4", [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(20)])
    data = open(path, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoReadError, match=r"frame (\d+)") as error:
        tiny("car", str(tmp_path / "cut.mp4"))
    partial = error.value.partial_result
    assert 0 < len(partial) == error.value.frames_read < 20
