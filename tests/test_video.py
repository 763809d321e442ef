"""Every input kind as a stream of RGB uint8 frames, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segvlm.errors import VideoReadError
from segvlm.testing.media import Sprite, render, write_video
from segvlm.video import VideoWriter, prefetch, read_frames, to_rgb_uint8


@pytest.fixture(scope="module")
def noisy_clip(tmp_path_factory):
    """Noise compresses badly, so bytes spread evenly over frames and a cut lands mid-stream."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(20)]
    return write_video(tmp_path_factory.mktemp("n") / "noise.mp4", images, fps=10)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    images, _ = render([Sprite("r", (200, 30, 30), (10, 10), [(5, 2 * t) for t in range(12)])], 48, 64, 12)
    return images, write_video(tmp_path_factory.mktemp("v") / "clip.mp4", images, fps=12)


def test_mp4_decodes_as_a_stream_with_stride_and_max_frames(clip):
    _, path = clip
    source = read_frames(path, stride=2, max_frames=4)
    assert (source.meta.height, source.meta.width, source.meta.num_frames) == (48, 64, 12)
    assert source.fps == pytest.approx(6.0)
    frames = list(source)
    assert [f.index for f in frames] == [0, 2, 4, 6]
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[1].timestamp == pytest.approx(2 / 12, abs=1e-3)


def test_webm_roundtrip(tmp_path):
    images = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(5)]
    with VideoWriter(tmp_path / "a.webm", 48, 32, fps=5) as writer:
        for image in images:
            writer.write(image)
    assert len(list(read_frames(tmp_path / "a.webm"))) == 5


def test_folder_of_frames_single_image_and_lists(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 50 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [f.image[0, 0, 0] for f in read_frames(tmp_path)] == [0, 50, 100]
    assert len(list(read_frames(tmp_path / "001.png"))) == 1
    pil = [Image.new("RGB", (30, 20), (1, 2, 3))] * 4
    assert len(list(read_frames(pil, stride=2))) == 2
    array_video = np.zeros((3, 20, 30, 3), np.uint8)
    assert len(list(read_frames(array_video))) == 3


def _numbered_pngs(folder, count=4) -> list:
    """PNG frames whose first pixel is 10 * their number, named so that sorting matters (00, 01, ...)."""
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray(np.full((20, 30, 3), 10 * i, np.uint8)).save(paths[-1])
    return paths


def test_a_list_of_image_paths_is_read_in_the_list_order(tmp_path):
    paths = _numbered_pngs(tmp_path)
    order = [paths[2], str(paths[0]), paths[3], paths[1]]  # Path and str alike
    source = read_frames(order)
    assert (source.meta.source, source.meta.num_frames, source.meta.height, source.meta.width) == (
        "<frames>",
        4,
        20,
        30,
    )
    assert [f.image[0, 0, 0] for f in source] == [20, 0, 30, 10]
    assert [(f.index, f.image[0, 0, 0]) for f in read_frames(order, stride=2, max_frames=1)] == [(0, 20)]


def test_a_glob_expands_sorted_and_a_glob_matching_nothing_names_the_pattern(tmp_path):
    paths = _numbered_pngs(tmp_path)
    (tmp_path / "notes.txt").write_text("not a frame")
    source = read_frames(str(tmp_path / "*"))  # notes.txt is left out, as in a folder
    assert source.meta.source == str(tmp_path / "*") and source.meta.num_frames == 4
    assert [f.image[0, 0, 0] for f in source] == [0, 10, 20, 30]
    assert [f.image[0, 0, 0] for f in read_frames(tmp_path / "0[13].png")] == [10, 30]
    with pytest.raises(
        VideoReadError, match=r"the pattern '.*\*\.jpg' matches no files \(and no file has that name\); check"
    ):
        read_frames(str(tmp_path / "*.jpg"))
    (tmp_path / "more.txt").write_text("not a frame either")
    with pytest.raises(VideoReadError, match=r"matches 2 files but no JPEG/PNG frames"):
        read_frames(str(tmp_path / "*.txt"))
    literal = tmp_path / "frame[1].png"  # an existing file with glob characters is read as it is
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(literal)
    assert [f.image[0, 0, 0] for f in read_frames(literal)] == [99]
    assert paths[0].exists()


def test_a_glob_matching_one_video_reads_that_video(tmp_path):
    images = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(3)]
    write_video(tmp_path / "clip.mp4", images, fps=5)
    source = read_frames(str(tmp_path / "*.mp4"))
    assert source.meta.source == str(tmp_path / "clip.mp4") and len(list(source)) == 3


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (["missing.png"], r"item 0 of the list, 'missing.png', does not exist"),
        ([".", "a.png"], r"item 0 of the list, '\.', is a folder"),
        (["a.png", "clip.mp4"], r"item 1 of the list, 'clip.mp4', is a video; .* pass a video on its own"),
        (["a.png", np.zeros((20, 30, 3), np.uint8)], r"item 1 of the list is a ndarray but item 0 is a path"),
        ([np.zeros((20, 30, 3), np.uint8), "a.png"], r"got the path 'a.png' where an image was expected"),
    ],
)
def test_bad_lists_of_paths_name_the_item(tmp_path, monkeypatch, items, match):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save("a.png")
    write_video("clip.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2, fps=5)
    with pytest.raises(VideoReadError, match=match):
        list(read_frames(items))


def test_a_path_with_a_nul_character_is_refused(tmp_path):
    with pytest.raises(VideoReadError, match="holds a NUL character"):
        read_frames(str(tmp_path / "a\x00.png"))


def test_an_iterator_of_paths_is_read_as_frames(tmp_path):
    paths = _numbered_pngs(tmp_path)
    assert [f.image[0, 0, 0] for f in read_frames(iter(paths[::-1]))] == [30, 20, 10, 0]


def test_iterator_source_is_lazy_and_one_shot():
    pulled = []

    def camera():
        for i in range(100):
            pulled.append(i)
            yield np.zeros((8, 8, 3), np.uint8)

    source = read_frames(camera(), max_frames=3)
    assert len(list(source)) == 3 and len(pulled) <= 5
    with pytest.raises(VideoReadError, match="already consumed"):
        list(source)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((4, 5), 7, np.uint8), 7),  # grayscale
        (np.full((4, 5, 4), 9, np.uint8), 9),  # RGBA
        (np.full((4, 5, 3), 65535, np.uint16), 255),  # 16-bit
        (np.full((4, 5, 3), 0.5, np.float32), 127),  # float in [0, 1]
        (Image.new("L", (5, 4), 3), 3),
        (Image.new("RGBA", (5, 4), (4, 4, 4, 0)), 4),
        (Image.fromarray(np.full((4, 5), 512, np.uint16)), 2),
    ],
)
def test_images_are_normalised_to_rgb_uint8(image, expected):
    rgb = to_rgb_uint8(image)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8 and rgb[0, 0, 0] == expected


def test_missing_file(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video " * 100)
    with pytest.raises(VideoReadError, match="truncated or corrupt"):
        read_frames(path)
    other = tmp_path / "notes.txt"
    other.write_text("plain text " * 100)
    with pytest.raises(VideoReadError, match="neither a video nor an image"):
        read_frames(other)


def test_zero_byte_and_empty_inputs(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_frames(tmp_path / "empty.mp4")
    (tmp_path / "frames").mkdir()
    with pytest.raises(VideoReadError, match="no JPEG/PNG"):
        read_frames(tmp_path / "frames")
    with pytest.raises(VideoReadError, match="empty"):
        read_frames([])
    with pytest.raises(VideoReadError, match="no frames"):
        read_frames(iter([]))


def test_truncated_video_is_refused_with_the_reason(noisy_clip, tmp_path):
    path = noisy_clip
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[:2000])
    with pytest.raises(VideoReadError, match="truncated or corrupt"):
        list(read_frames(truncated))


def test_bad_options():
    with pytest.raises(ValueError, match="stride"):
        read_frames([np.zeros((2, 2, 3), np.uint8)], stride=0)
    with pytest.raises(ValueError, match="max_frames"):
        read_frames([np.zeros((2, 2, 3), np.uint8)], max_frames=0)


def test_prefetch_preserves_order_and_reraises():
    assert list(prefetch(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise VideoReadError("broken at frame 1")

    with pytest.raises(VideoReadError, match="frame 1"):
        list(prefetch(failing()))


def test_video_cut_mid_stream_yields_the_frames_before_the_cut_then_names_the_frame(noisy_clip, tmp_path):
    path = noisy_clip  # written with the moov atom first, so a cut file still opens
    data = open(path, "rb").read()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    frames = []
    with pytest.raises(VideoReadError, match=r"frame \d+") as error:
        for frame in read_frames(truncated):
            frames.append(frame)
    assert 0 < len(frames) < 20
    assert error.value.frames_read == len(frames)


def test_container_with_zero_frames(tmp_path):
    import av

    with av.open(str(tmp_path / "none.mkv"), "w") as container:  # a header and a video stream, no frames
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()
    with pytest.raises(VideoReadError, match="zero decodable frames|truncated or corrupt"):
        list(read_frames(tmp_path / "none.mkv"))
