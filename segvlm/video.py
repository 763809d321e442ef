"""Frames in, frames out: every input kind as one stream of RGB uint8 frames, and a video writer.

Readers never hold the whole video: a video file is decoded frame by frame with PyAV, a folder of images
is read one file at a time, an iterator (a camera) is consumed lazily. Every frame comes out as an
``(H, W, 3)`` uint8 RGB array whatever the input was (grayscale, RGBA, 16-bit, float).

Images are read as every viewer shows them: a photo whose EXIF orientation tag says "rotated" (phones write
6 or 8 for portrait shots) is turned upright, so its masks, boxes and sizes are those of the displayed image.
A list of image paths is a sequence of frames in the list's order; a path with glob characters
(``"frames/*.jpg"``) that names no existing file is expanded, sorted, like a folder.
"""

from __future__ import annotations

import glob
import itertools
import queue
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from segvlm.errors import FrameIndexError, VideoReadError

# The suffixes segvlm reads as videos and as images, everywhere (readers, dataset inputs, agents, annotation).
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".gif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: index in the source (before stride).
        image: (H, W, 3) uint8 RGB.
        timestamp: seconds from the start, when the source has timing.
    """

    index: int
    image: np.ndarray
    timestamp: float | None = None


@dataclass(frozen=True)
class VideoMeta:
    """What is known about a source before decoding it.

    Attributes:
        source: path, or a description such as ``"<frames>"``.
        height, width: frame size (of the first frame).
        fps: frames per second of the source, when known.
        num_frames: frame count when the container states it (may be None or approximate).
    """

    source: str
    height: int
    width: int
    fps: float | None
    num_frames: int | None


def exif_upright(image: Any) -> Any:
    """A PIL image turned as its EXIF orientation tag says (``ImageOps.exif_transpose``); unchanged without one.

    Unreadable EXIF data leaves the image as stored, with a warning: the pixels are still good.
    """
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
        if orientation in (None, 1):
            return image
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, OSError, struct.error) as error:
        name = getattr(image, "filename", "") or "an image"
        warnings.warn(f"{name} has unreadable EXIF data ({error}); it is read as stored", UserWarning, stacklevel=2)
        return image


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Normalise a PIL image or array (grayscale, RGBA, 16-bit, float in [0, 1]) to (H, W, 3) uint8 RGB.

    A PIL image with an EXIF orientation tag is turned upright first (see :func:`exif_upright`).
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        raise VideoReadError(
            f"got the path {str(image)!r} where an image was expected; pass paths as the source itself "
            "(a path, a list of paths or a glob pattern), not inside a list of images"
        )
    if isinstance(image, Image.Image):
        image = exif_upright(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image)
        else:
            return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise VideoReadError(
            f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}; "
            "pass RGB frames as numpy arrays or PIL images"
        )
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    raise VideoReadError(f"unsupported image dtype {array.dtype}; pass uint8, uint16 or float arrays")


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in name order: hidden files and links that leave the folder are not
    frames (a folder given to the annotation server must not expose what lies outside it)."""
    root = folder.resolve()
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
        and path.resolve().is_relative_to(root)
        and path.is_file()
    )


def _open_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright as its EXIF orientation says."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_uint8(image)
    except (UnidentifiedImageError, OSError) as error:
        raise VideoReadError(f"{path} is not a readable image ({error}); check the file is a JPEG/PNG") from error


def _frame_from_item(item: Any) -> np.ndarray:
    """One item of an iterator source: an image path is opened, anything else normalised as an image."""
    if isinstance(item, (str, Path)):
        return _open_image(Path(item))
    return to_rgb_uint8(item)


def has_glob(text: str) -> bool:
    """True when ``text`` holds glob characters (``*``, ``?``, ``[``)."""
    return glob.has_magic(text)


def expand_glob(pattern: str) -> list[Path]:
    """The image files a glob pattern matches, sorted; a clear error naming the pattern when there are none.

    ``**`` matches folders recursively. Files that are not JPEG/PNG frames are left out, as in a folder; a
    pattern that matches exactly one non-image file (a video) gives that file.
    """
    matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True) if Path(match).is_file())
    if not matches:
        raise VideoReadError(
            f"the pattern {pattern!r} matches no files (and no file has that name); check the folder and the "
            f"pattern (it is relative to {Path.cwd()}), e.g. 'frames/*.jpg'"
        )
    images = [match for match in matches if match.suffix.lower() in IMAGE_SUFFIXES]
    if images:
        return images
    if len(matches) == 1:
        return matches
    shown = ", ".join(str(match) for match in matches[:3]) + (", ..." if len(matches) > 3 else "")
    raise VideoReadError(
        f"the pattern {pattern!r} matches {len(matches)} files but no JPEG/PNG frames ({shown}); a pattern must "
        "name image frames (e.g. 'frames/*.jpg'), or pass one video path at a time"
    )


def image_paths(items: list[Any] | tuple[Any, ...]) -> list[Path]:
    """A list of paths as frame files, checked up front: each must exist and be an image, not a video."""
    paths = []
    for position, item in enumerate(items):
        if not isinstance(item, (str, Path)):
            raise VideoReadError(
                f"item {position} of the list is a {type(item).__name__} but item 0 is a path; pass a list of "
                "image paths or a list of images (arrays or PIL images), not both"
            )
        path = Path(item)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise VideoReadError(
                f"item {position} of the list, {str(path)!r}, {what}; a list of paths must name image files "
                f"(paths are relative to {Path.cwd()})"
            )
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise VideoReadError(
                f"item {position} of the list, {str(path)!r}, is a video; a list of paths is read as image frames, "
                "one per path: pass a video on its own"
            )
        paths.append(path)
    return paths


class FrameSource:
    """An iterable of :class:`Frame` from any supported input, with ``meta`` known up front.

    Args:
        source: a video path (mp4/webm/mov/avi...), an image path, a folder of JPEG/PNG frames, a glob
            pattern (``"frames/*.jpg"``, expanded and sorted), a list of image paths (read in the list's
            order), a list of PIL images or arrays, or any iterator of frames or image paths (e.g. a camera
            generator).
        stride: keep every ``stride``-th source frame.
        max_frames: stop after this many kept frames.

    Iterating a path-based source more than once decodes it again; an iterator source can be consumed once.
    """

    def __init__(self, source: Any, stride: int = 1, max_frames: int | None = None):
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or None for all frames), got {max_frames}")
        self.stride = stride
        self.max_frames = max_frames
        self._kind, self._payload, self.meta = self._probe(source)
        self._consumed = False

    # -- probing ------------------------------------------------------------------------------------------
    def _probe(self, source: Any) -> tuple[str, Any, VideoMeta]:
        if isinstance(source, (str, Path)):
            if "\x00" in str(source):
                raise VideoReadError(f"the path {str(source)!r} holds a NUL character, which no file name can; fix it")
            if not Path(source).exists() and has_glob(str(source)):
                files = expand_glob(str(source))
                if len(files) == 1 and files[0].suffix.lower() not in IMAGE_SUFFIXES:
                    return self._probe_path(files[0])
                first = _open_image(files[0])
                return "files", files, VideoMeta(str(source), first.shape[0], first.shape[1], None, len(files))
            return self._probe_path(Path(source))
        if isinstance(source, (list, tuple)):
            if not source:
                raise VideoReadError("the frame list is empty; pass at least one image")
            if isinstance(source[0], (str, Path)):
                files = image_paths(source)
                first = _open_image(files[0])
                return "files", files, VideoMeta("<frames>", first.shape[0], first.shape[1], None, len(files))
            first = to_rgb_uint8(source[0])
            return "list", source, VideoMeta("<frames>", first.shape[0], first.shape[1], None, len(source))
        if isinstance(source, np.ndarray) and source.ndim == 4:  # (T, H, W, C) array
            return self._probe(list(source))
        if isinstance(source, np.ndarray) or type(source).__module__.startswith("PIL"):
            return self._probe([source])
        if isinstance(source, Iterable):
            iterator = iter(source)
            try:
                first = next(iterator)
            except StopIteration:
                raise VideoReadError("the frame iterator yielded no frames") from None
            first_rgb = _frame_from_item(first)
            chained = itertools.chain([first_rgb], iterator)
            return "iter", chained, VideoMeta("<stream>", first_rgb.shape[0], first_rgb.shape[1], None, None)
        raise VideoReadError(
            f"cannot read frames from a {type(source).__name__}; pass a path, a list of images, or an iterator"
        )

    def _probe_path(self, path: Path) -> tuple[str, Any, VideoMeta]:
        if not path.exists():
            raise VideoReadError(f"no such file or folder: {path}; check the path (it is relative to {Path.cwd()})")
        if path.is_dir():
            files = frame_files(path)
            if not files:
                raise VideoReadError(f"the folder {path} holds no JPEG/PNG frames; put frames named in order there")
            first = _open_image(files[0])
            return "files", files, VideoMeta(str(path), first.shape[0], first.shape[1], None, len(files))
        if path.stat().st_size == 0:
            raise VideoReadError(f"{path} is empty (0 bytes); the file was not written completely")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = _open_image(path)
            return "files", [path], VideoMeta(str(path), image.shape[0], image.shape[1], None, 1)
        return self._probe_video(path)

    def _probe_video(self, path: Path) -> tuple[str, Any, VideoMeta]:
        import av

        try:
            with av.open(str(path)) as container:
                # FFmpeg's "tty" demuxer renders any text file as a video; that is never what a user means.
                if not container.streams.video or container.format.name == "tty":
                    raise av.error.InvalidDataError(1094995529, "no video stream")
                still = container.format.name.endswith("_pipe") or container.format.name == "image2"
                stream = container.streams.video[0]
                fps = float(stream.average_rate) if stream.average_rate else None
                num_frames = stream.frames or None
                height, width = stream.codec_context.height, stream.codec_context.width
        except VideoReadError:
            raise
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
            # Not a video: maybe an image with an unusual suffix.
            try:
                image = _open_image(path)
            except VideoReadError:
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    raise VideoReadError(
                        f"{path} cannot be opened as a video; it is truncated or corrupt ({error}). "
                        "Re-export or re-download the file"
                    ) from error
                raise VideoReadError(
                    f"{path} is neither a video nor an image that can be decoded ({error}); "
                    "pass an mp4/webm/mov/avi video, an image, or a folder of frames"
                ) from error
            return "files", [path], VideoMeta(str(path), image.shape[0], image.shape[1], None, 1)
        if still and path.suffix.lower() not in VIDEO_SUFFIXES:
            # A still image under an unusual suffix (.jfif): read it with PIL when PIL can, so EXIF orientation
            # applies as for any other image; FFmpeg reads the formats PIL does not.
            try:
                image = _open_image(path)
            except VideoReadError:
                pass
            else:
                return "files", [path], VideoMeta(str(path), image.shape[0], image.shape[1], None, 1)
        if not height or not width:
            raise VideoReadError(f"{path} has a video stream without a frame size; the file may be corrupt")
        return "video", path, VideoMeta(str(path), height, width, fps, num_frames)

    # -- iteration ----------------------------------------------------------------------------------------
    def _raw(self) -> Iterator[tuple[int, np.ndarray, float | None]]:
        if self._kind == "video":
            yield from self._decode_video(self._payload)
        elif self._kind == "files":
            for index, path in enumerate(self._payload):
                if index % self.stride == 0:
                    yield index, _open_image(path), None
                else:
                    yield index, None, None  # skipped by stride without reading the file
        elif self._kind == "iter":
            for index, image in enumerate(self._payload):
                yield index, (_frame_from_item(image) if index % self.stride == 0 else None), None
        else:
            for index, image in enumerate(self._payload):
                yield index, (to_rgb_uint8(image) if index % self.stride == 0 else None), None

    def _decode_video(self, path: Path) -> Iterator[tuple[int, np.ndarray, float | None]]:
        import av

        decoded = 0
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    timestamp = float(frame.time) if frame.time is not None else None
                    image = frame.to_ndarray(format="rgb24") if decoded % self.stride == 0 else None
                    yield decoded, image, timestamp
                    decoded += 1
        except av.error.FFmpegError as error:
            raise VideoReadError(
                f"{path} is truncated or corrupt: decoding failed at frame {decoded} ({error}); "
                f"the {decoded} frames before it were read",
                frames_read=decoded,
            ) from error
        if decoded == 0:
            raise VideoReadError(f"{path} holds zero decodable frames; the file is empty, truncated or corrupt")
        declared = self.meta.num_frames
        if declared and decoded < declared * 0.9:
            raise VideoReadError(
                f"{path} is truncated: the stream ended at frame {decoded} of the {declared} its header declares; "
                f"the {decoded} frames before it were read",
                frames_read=decoded,
            )

    def __iter__(self) -> Iterator[Frame]:
        if self._kind == "iter":
            if self._consumed:
                raise VideoReadError("this frame iterator was already consumed; pass a new iterator")
            self._consumed = True
        kept = 0
        for index, image, timestamp in self._raw():
            if index % self.stride:
                continue
            if self.max_frames is not None and kept >= self.max_frames:
                return
            yield Frame(index=index, image=image, timestamp=timestamp)
            kept += 1

    @property
    def fps(self) -> float | None:
        """Frames per second after stride, when the source has timing."""
        return self.meta.fps / self.stride if self.meta.fps else None

    def expected_frames(self) -> int | None:
        """How many frames iteration will yield, when the source says how long it is."""
        if self.meta.num_frames is None:
            return self.max_frames
        count = -(-self.meta.num_frames // self.stride)
        return min(count, self.max_frames) if self.max_frames is not None else count


def read_frames(source: Any, stride: int = 1, max_frames: int | None = None) -> FrameSource:
    """Open any supported input as a stream of :class:`Frame` (see :class:`FrameSource`)."""
    if isinstance(source, FrameSource):
        return source
    return FrameSource(source, stride=stride, max_frames=max_frames)


def read_frame(source: Any, index: int) -> Frame:
    """Frame ``index`` (0-based, in the source) of any input :func:`read_frames` reads, exactly as it yields it.

    A video is indexed and only the frames from the keyframe before ``index`` are decoded
    (:class:`segvlm.frames.FrameStore`), so asking for a late frame does not decode the whole video; the
    image is a fresh, writable array. Raises :class:`~segvlm.errors.FrameIndexError` (which says how many
    frames there are) for an index outside the source, and :class:`~segvlm.errors.VideoReadError` for a source
    that cannot be read, or that can only be read once (an iterator).
    """
    from segvlm.frames import FrameStore  # it builds on this module

    with FrameStore.open(source, cache_frames=0) as frames:
        if not 0 <= index < len(frames):
            raise FrameIndexError(
                f"{frames.source} has {len(frames)} frames, so frame {index} does not exist; "
                f"pass a frame index from 0 to {len(frames) - 1}",
                index=index,
                frames=len(frames),
            )
        return Frame(index=index, image=np.array(frames[index]), timestamp=frames.timestamp(index))


def prefetch(iterable: Iterable[Any], depth: int = 4) -> Iterator[Any]:
    """Iterate ``iterable`` on a background thread, ``depth`` items ahead (decode overlaps compute).

    Exceptions raised by the producer are re-raised in the consumer at the point they happened.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put((item, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            items.put((None, error))
        items.put((done, None))

    thread = threading.Thread(target=produce, daemon=True, name="segvlm-prefetch")
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class VideoWriter:
    """Write RGB uint8 frames to a video file with PyAV (mp4 -> H.264, webm -> VP9).

    Use as a context manager; odd frame sizes are padded by one pixel (H.264 needs even sizes).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 25.0):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix.lower()
        codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(suffix, "libx264")
        options = {"movflags": "faststart"} if suffix in (".mp4", ".mov", ".m4v") else {}
        self._container = av.open(str(self.path), mode="w", options=options)
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._width, self._height = width + width % 2, height + height % 2
        self._stream.width, self._stream.height = self._width, self._height
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        import av

        if image.shape[0] != self._height or image.shape[1] != self._width:
            padded = np.zeros((self._height, self._width, 3), dtype=np.uint8)
            padded[: image.shape[0], : image.shape[1]] = image[: self._height, : self._width]
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
