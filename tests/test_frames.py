"""FrameStore: random access to any source, byte-identical to read_frames, in any order, from any thread."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from PIL import Image

from segvlm.errors import VideoReadError
from segvlm.frames import FrameStore
from segvlm.testing.media import write_video
from segvlm.video import FrameSource, VideoWriter, read_frames

CUT = 12  # a new scene every CUT frames: x264 starts a group of pictures (a keyframe) there


def scene_images(frames: int = 48, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Noise panning sideways, with a hard cut every CUT frames; (H, W, 3) uint8 each."""
    rng = np.random.default_rng(seed)
    images = []
    for t in range(frames):
        if t % CUT == 0:
            base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        images.append(np.roll(base, 2 * (t % CUT), axis=1))
    return images


def encode(path, images, codec: str, gop: int, fmt: str | None = None) -> str:
    """Encode with PyAV directly, for streams segvlm's writer does not make (a keyframe every ``gop``, raw H.264)."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt, stream.gop_size = "yuv420p", gop
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Small videos of every kind the store reads, keyed by name."""
    folder = tmp_path_factory.mktemp("frames")
    images = scene_images()
    with VideoWriter(folder / "clip.webm", 64, 48, fps=10) as writer:  # VP9, a single keyframe
        for image in images:
            writer.write(image)
    frames = [Image.fromarray(image) for image in images[:20]]
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=100)
    return {
        "h264-mp4": write_video(folder / "clip.mp4", images, fps=10),  # libx264 with B-frames, keyframes at cuts
        "vp9-webm": str(folder / "clip.webm"),
        "vp9-webm-gop8": encode(folder / "gop.webm", images, "libvpx-vp9", gop=8),
        "h264-raw-no-pts": encode(folder / "clip.h264", images, "libx264", gop=10, fmt="h264"),
        "gif": str(folder / "clip.gif"),
    }


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    for index, image in enumerate(scene_images(frames=20)):
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return str(folder)


def orders(count: int) -> dict[str, list[int]]:
    shuffled = list(range(count))
    random.Random(0).shuffle(shuffled)
    return {"forward": list(range(count)), "backward": list(range(count))[::-1], "random": shuffled}


def assert_matches_read_frames(source, stride: int, max_frames: int | None, cache_frames: int = 32) -> FrameStore:
    reference = list(read_frames(source, stride=stride, max_frames=max_frames))
    store = FrameStore.open(source, stride=stride, max_frames=max_frames, cache_frames=cache_frames)
    assert len(store) == len(reference)
    for name, order in orders(len(store)).items():
        for position in order:
            image = store[position]
            assert image.dtype == np.uint8 and image.shape == (store.height, store.width, 3)
            assert np.array_equal(image, reference[position].image), f"{name} read of position {position} differs"
            assert len(store._cache) <= cache_frames
    for position, frame in enumerate(reference):
        assert store.frame_index(position) == frame.index
        assert store.position_of(frame.index) == position
        assert store.timestamp(position) == frame.timestamp
    return store


@pytest.mark.parametrize("kind", ["h264-mp4", "vp9-webm", "vp9-webm-gop8", "h264-raw-no-pts", "gif"])
@pytest.mark.parametrize(("stride", "max_frames"), [(1, None), (3, None), (3, 7)])
def test_video_frames_are_those_of_read_frames_in_any_order(videos, kind, stride, max_frames):
    store = assert_matches_read_frames(videos[kind], stride, max_frames)
    # The index counts exactly the frames a sequential decode yields (pts order = presentation order).
    assert store._reader.mode == ("sequential" if kind == "h264-raw-no-pts" else "pts")
    store.close()
    assert_matches_read_frames(videos[kind], stride, max_frames, cache_frames=4).close()


@pytest.mark.parametrize(("stride", "max_frames"), [(1, None), (3, None), (3, 4)])
def test_image_sources_are_those_of_read_frames(png_folder, stride, max_frames):
    assert_matches_read_frames(png_folder, stride, max_frames, cache_frames=3)
    arrays = scene_images(frames=10)
    assert_matches_read_frames(arrays, stride, max_frames)
    assert_matches_read_frames([Image.fromarray(a) for a in arrays], stride, max_frames)
    assert_matches_read_frames(np.stack(arrays), stride, max_frames)  # (T, H, W, 3)


@pytest.mark.parametrize(("stride", "max_frames"), [(1, None), (3, 4)])
def test_lists_of_paths_and_globs_are_those_of_read_frames(png_folder, stride, max_frames):
    from pathlib import Path

    files = sorted(Path(png_folder).glob("*.png"))
    shuffled = files[::-1][:7] + [str(path) for path in files[:3]]  # any order, str and Path alike
    store = assert_matches_read_frames(shuffled, stride, max_frames, cache_frames=3)
    assert np.array_equal(store[0], np.asarray(Image.open(files[-1]))) and store.source == "<frames>"
    pattern = str(Path(png_folder) / "*.png")
    store = assert_matches_read_frames(pattern, stride, max_frames)
    folder = FrameStore.open(png_folder, stride=stride, max_frames=max_frames)
    assert len(store) == len(folder) and all(np.array_equal(store[i], folder[i]) for i in range(len(store)))
    assert store.source == pattern
    with pytest.raises(VideoReadError, match="matches no files"):
        FrameStore.open(str(Path(png_folder) / "*.jpg"))


def test_single_image_and_read_only_frames(png_folder, tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(scene_images(frames=1)[0]).save(path)
    with FrameStore.open(path) as store:
        assert len(store) == 1 and store.fps is None and store.timestamp(0) is None
        assert np.array_equal(store[0], store[-1])
    own = [np.zeros((4, 6, 3), np.uint8), np.ones((4, 6, 3), np.uint8)]
    store = FrameStore.open(own)
    with pytest.raises(ValueError, match="read-only"):
        store[1][0, 0] = 7  # shared with the cache
    assert own[1].flags.writeable  # the caller's own arrays keep their flags
    assert store.source == "<frames>" and (store.height, store.width) == (4, 6)


def test_one_shot_iterators_are_refused(videos):
    frames = scene_images(frames=3)
    for source in ((f for f in frames), iter(frames), read_frames(videos["h264-mp4"])):
        with pytest.raises(VideoReadError, match="pass a video path, a folder of frames, or a list"):
            FrameStore.open(source)
    assert isinstance(read_frames(videos["h264-mp4"]), FrameSource)


def test_positions_lengths_and_their_errors(videos):
    with FrameStore.open(videos["h264-mp4"], stride=3, max_frames=10) as store:
        assert len(store) == 10 and store.fps == pytest.approx(10 / 3)
        assert np.array_equal(store[-1], store[9]) and np.array_equal(store[-10], store[0])
        assert store.frame_index(-1) == 27 and store.position_of(27) == 9
        with pytest.raises(IndexError, match=r"valid positions are 0\.\.9 \(or -10\.\.-1"):
            store[10]
        with pytest.raises(IndexError, match="position -11"):
            store.timestamp(-11)
        with pytest.raises(KeyError, match=r"not in this store: it holds frames 0, 3, 6, \.\.\. up to 27"):
            store.position_of(4)
        with pytest.raises(KeyError, match="source frame 30"):
            store.position_of(30)
        with pytest.raises(TypeError):
            store[1.5]
    with pytest.raises(ValueError, match="cache_frames"):
        FrameStore.open(videos["h264-mp4"], cache_frames=-1)
    with pytest.raises(ValueError, match="stride"):
        FrameStore.open(videos["h264-mp4"], stride=0)
    with pytest.raises(VideoReadError, match="no such file"):
        FrameStore.open("/no/such/video.mp4")
    store = FrameStore.open(videos["h264-mp4"])
    store.close()
    with pytest.raises(VideoReadError, match="closed"):
        store[0]


def test_forward_reads_continue_the_decoder_without_seeking(videos):
    for stride in (1, 3):
        with FrameStore.open(videos["h264-mp4"], stride=stride) as store:
            for position in range(len(store)):
                store[position]
            stats = store.stats
            assert stats["seeks"] + stats["restarts"] == 1, stats  # positioned once, then only decoding forwards
            assert stats["decoded"] <= 48  # no frame decoded twice
    with FrameStore.open(videos["h264-mp4"]) as store:  # from the middle too
        for position in range(20, len(store)):
            store[position]
        assert store.stats["seeks"] == 1
    reference = [frame.image for frame in read_frames(videos["h264-mp4"])]
    with FrameStore.open(videos["h264-mp4"], cache_frames=0) as store:  # nothing kept: still no seek per frame
        for position in range(len(store)):
            assert np.array_equal(store[position], reference[position])
        assert not store._cache and store.stats["decoded"] < 2 * len(store)


def test_backward_reads_decode_a_chunk_per_cache_not_a_chunk_per_frame(videos):
    # A single keyframe: reading backwards one chunk per frame would decode n * (n + 1) / 2 frames.
    with FrameStore.open(videos["vp9-webm"], cache_frames=16) as store:
        count = len(store)
        for position in reversed(range(count)):
            store[position]
            assert len(store._cache) <= 16
        decoded = store.stats["decoded"]
    assert decoded <= count + (count - 16) + (count - 32) + 8, decoded  # one chunk per 16 frames
    assert decoded < count * (count + 1) // 8


def test_two_threads_reading_different_positions_get_their_own_frames(videos):
    reference = [frame.image for frame in read_frames(videos["h264-mp4"])]
    store = FrameStore.open(videos["h264-mp4"], cache_frames=6)
    errors: list[str] = []
    start = threading.Barrier(2)

    def reader(order: list[int]) -> None:
        start.wait()
        for position in order:
            if not np.array_equal(store[position], reference[position]):
                errors.append(f"position {position}")

    count = len(reference)
    shuffled = list(range(count))
    random.Random(1).shuffle(shuffled)
    threads = [
        threading.Thread(target=reader, args=(list(range(count)) * 2,)),  # a propagation pass
        threading.Thread(target=reader, args=(shuffled[::-1] + shuffled,)),  # a person scrubbing
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_truncated_video_keeps_the_frames_before_the_cut_and_names_the_others(tmp_path):
    rng = np.random.default_rng(0)  # noise spreads the bytes evenly over frames, so the cut lands mid-stream
    path = write_video(tmp_path / "noise.mp4", [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(20)])
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the moov atom is first, so the cut file opens
    readable = []
    with pytest.raises(VideoReadError):
        for frame in read_frames(cut):
            readable.append(frame.image)
    with FrameStore.open(cut) as store:
        assert len(readable) < len(store) < 20  # the packets left in the file
        for position in reversed(range(len(store))):
            if position < len(readable):
                assert np.array_equal(store[position], readable[position])
            else:
                with pytest.raises(VideoReadError, match=rf"frame {position} cannot be decoded.*truncated"):
                    store[position]
        assert np.array_equal(store[0], readable[0])  # still readable after the errors


def test_damaged_frames_mid_file_read_as_read_frames_reads_them(videos, tmp_path):
    import av

    with av.open(videos["h264-mp4"]) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(open(videos["h264-mp4"], "rb").read())
    rng = np.random.default_rng(1)
    for which in (CUT + 1, 2 * CUT):  # a P-frame, then a keyframe
        pos, size = packets[which]
        data[pos + 8 : pos + size - 4] = rng.integers(0, 255, size - 12, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    reference = []
    try:
        for frame in read_frames(damaged):
            reference.append(frame.image)
    except VideoReadError:
        pass
    assert reference
    for cache_frames in (32, 4):
        with FrameStore.open(damaged, cache_frames=cache_frames) as store:
            for order in orders(len(store)).values():
                for position in order:
                    if position < len(reference):
                        assert np.array_equal(store[position], reference[position]), position


def test_container_without_frames(tmp_path):
    import av

    with av.open(str(tmp_path / "none.mkv"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()
    with pytest.raises(VideoReadError, match="zero decodable frames|truncated or corrupt"):
        FrameStore.open(tmp_path / "none.mkv")
