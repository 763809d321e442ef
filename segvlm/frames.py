"""Random access to the frames of any source: frame N, in any order, without decoding or holding the whole video.

:func:`segvlm.video.read_frames` streams a source from its first frame to its last. An interactive correction
session (propagating forwards, then backwards from a corrected frame) and a browser annotation tool (a person
scrubbing a timeline) need frame N now, in whatever order they ask. :class:`FrameStore` gives that:

* a video file is indexed once at open by demuxing its packets **without decoding** them: frame ``i`` is the
  packet with the ``i``-th smallest presentation timestamp (pts), so frame numbers are exactly those of
  :func:`~segvlm.video.read_frames`. Reading a frame seeks to the last keyframe at or before it and decodes
  forwards, recognising frames by their pts;
* sequential forward reads continue the open decoder (no seek per frame); a read that has to go back decodes the
  whole chunk from the keyframe to the wanted frame and keeps its last ``cache_frames`` frames, so reading
  backwards frame by frame costs one chunk per ``cache_frames`` frames instead of one chunk per frame;
* a folder of images, a glob pattern, a list of image paths, a single image and a list of arrays or PIL images
  are read item by item (the same files, in the same order, as :func:`~segvlm.video.read_frames` reads; images
  upright as their EXIF orientation says).

Every frame comes out byte-identical to what :func:`~segvlm.video.read_frames` yields for the same ``stride``
and ``max_frames``: the same decoder, the same conversion to ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

import bisect
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segvlm.errors import VideoReadError
from segvlm.video import FrameSource, _open_image, to_rgb_uint8

# A seek flushes the decoder (and its frame threads) and restarts at a keyframe; continuing the open decoder
# over up to this many extra frames is cheaper than that.
_SEEK_COST_FRAMES = 16
# How many earlier keyframes a seek tries when the demuxer lands after the wanted frame, before decoding from
# the start of the file instead.
_SEEK_ATTEMPTS = 3


def _is_one_shot(source: Any) -> bool:
    """True for iterators and other iterables that cannot be indexed (generators, cameras, FrameSource)."""
    if isinstance(source, (str, Path, list, tuple, np.ndarray)):
        return False
    if type(source).__module__.startswith("PIL"):
        return False
    return isinstance(source, Iterable)


class _ImageReader:
    """Frames that can be read one by one in any order: the files of a folder, or the items of a list."""

    def __init__(self, items: list[Any] | tuple[Any, ...], load: Callable[[Any], np.ndarray]):
        self._items = items
        self._load = load
        self.count = len(items)

    def read(self, index: int) -> np.ndarray:
        """Source frame ``index`` as (H, W, 3) uint8 RGB."""
        return self._load(self._items[index])

    def timestamp(self, index: int) -> float | None:
        return None

    def close(self) -> None:
        pass


class _Sink(NamedTuple):
    """Where a video read hands the frames it decodes on the way (the store's cache), by source index."""

    keep: Callable[[int], bool]  # should this frame be kept?
    put: Callable[[int, Any], None]  # keep it (an av.VideoFrame)
    drop: Callable[[int, int], None]  # forget the frames of source indices [start, stop)
    ahead: int  # how many frames after the wanted one can be kept with it (decoded ahead must not be lost)


class _DamagedGroup(Exception):
    """The wanted frame lies in a damaged group of pictures, decoded by a pass that did not start at the file start."""


class _VideoReader:
    """One open container and decoder over a video file, with a packet index for seeking.

    Frames are numbered by their source index (``rank``): 0 for the first frame shown. Two modes:

    * ``pts``: every shown packet has a distinct pts; frame ``rank`` is the packet with the ``rank``-th smallest
      pts. Reads seek to a keyframe and decode forwards, recognising frames by pts.
    * ``sequential``: packets without pts (raw H.264 streams) or with repeated ones. The frame count comes from
      one decode pass at open; reads decode forwards from the open decoder, or from the start of the file when
      the wanted frame is behind it. Exact, but reading backwards costs a decode from the start per
      ``cache_frames`` frames.

    Damaged data: the decoder conceals a damaged frame (and the frames that reference it) from whatever it
    decoded before, and with frame threads that depends on where the pass started. So a group of pictures (a
    keyframe up to the next) in which the decoder flags a damaged frame is read only by a pass from the start of
    the file, as read_frames reads it; every other frame is still read by seeking.
    """

    def __init__(self, path: Path):
        self.path = path
        self._container: Any = None
        self._stream: Any = None
        self._demux: Any = None  # the packet generator while the decoder is positioned, else None
        self._first: Any = None  # a packet read to check a seek's landing, decoded before the generator's
        self._last = -1  # rank of the last frame the decoder gave out since it was positioned
        self._landing_pts: int | None = None  # pts of the keyframe a seek landed on, to drop frames shown before it
        self._from_start = True  # the decoder has decoded every packet since the start of the file
        self._fed_max = -1  # highest rank among the packets fed since a seek
        self._fed_before: dict[int, int] = {}  # rank -> highest rank fed before its packet, until it comes out
        self._damaged: set[int] = set()  # groups (indices into _key_ranks) holding a frame the decoder flagged
        self._clean: set[int] = set()  # groups decoded to their last frame with no frame flagged
        self._pass_start = 0  # rank of the first frame of the current pass (a seek's landing, 0 from the start)
        self._failed: dict[int, str] = {}  # ranks known to be undecodable -> why
        self.stats = {"seeks": 0, "restarts": 0, "decoded": 0}
        self._open_container()
        self._build_index()

    # -- container ----------------------------------------------------------------------------------------
    def _open_container(self) -> None:
        import av

        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as error:
            raise VideoReadError(
                f"{self.path} cannot be opened as a video any more ({error}); check the file was not moved or "
                "overwritten while it was in use"
            ) from error
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # as read_frames: frame threads, bit-exact with a single thread
        self._demux = self._first = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._demux = self._first = None

    # -- index --------------------------------------------------------------------------------------------
    def _build_index(self) -> None:
        """Demux every packet once (no decoding) and order the shown frames by pts."""
        import av

        shown: list[int | None] = []  # pts of the packets that give a shown frame, in decode order
        key_pts: list[int] = []  # restart points, keyframes the container marks as not shown included
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the flush packets PyAV appends at the end
                    continue
                if packet.is_keyframe and packet.pts is not None:
                    key_pts.append(packet.pts)
                # Discarded packets (cut by an edit list) are references, never shown (older PyAV lacks the flag).
                if not getattr(packet, "is_discard", False):
                    shown.append(packet.pts)
        except av.error.FFmpegError:
            pass  # damaged after these packets: the frames before stay readable, later ones are not indexed
        self._key_pts: list[int] = []
        self._key_ranks: list[int] = []
        if shown and None not in shown and len(set(shown)) == len(shown):
            self.mode = "pts"
            self._pts: list[int] = sorted(shown)  # rank -> pts (presentation order)
            self._rank_of = {pts: rank for rank, pts in enumerate(self._pts)}
            self._key_pts = sorted(set(key_pts))
            self._key_set = set(self._key_pts)
            self._key_ranks = [bisect.bisect_left(self._pts, pts) for pts in self._key_pts]  # group starts
            time_base = self._stream.time_base
            self._time_num, self._time_den = time_base.numerator, time_base.denominator
            self.count = len(self._pts)
        else:
            self.mode = "sequential"
            self._scan()
        if self.count == 0:
            raise VideoReadError(f"{self.path} holds zero decodable frames; the file is empty, truncated or corrupt")

    def _scan(self) -> None:
        """Count the frames (and note their times) by decoding the whole video once, as read_frames does."""
        import av

        self._times: list[float | None] = []
        self._restart()
        self.stats["restarts"] = 0
        try:
            while (packet := self._next_packet()) is not None:
                self._times.extend(frame.time for frame in packet.decode())
        except av.error.FFmpegError:
            pass  # the frames decoded before the damage are the ones this store holds
        self.count = len(self._times)
        self._demux = None  # the decoder is at the end of the file: the next read starts again

    # -- frame numbers ------------------------------------------------------------------------------------
    def timestamp(self, rank: int) -> float | None:
        if self.mode == "pts":  # the arithmetic of PyAV's Frame.time, so the floats are identical
            return float(self._pts[rank]) * self._time_num / self._time_den
        return self._times[rank]

    def _group(self, rank: int) -> int:
        """Group of pictures of a frame: index of the last keyframe at or before it (-1: before the first)."""
        return bisect.bisect_right(self._key_ranks, rank) - 1

    def _group_span(self, group: int) -> tuple[int, int]:
        start = self._key_ranks[group] if group >= 0 else 0
        stop = self._key_ranks[group + 1] if group + 1 < len(self._key_ranks) else self.count
        return start, stop

    def _rank(self, frame: Any) -> int | None:
        """Rank of a frame the decoder gave out, or None to drop it (unknown, repeated, or before the landing)."""
        if self.mode != "pts":
            return self._last + 1
        pts = frame.pts
        if pts is None or (self._landing_pts is not None and pts < self._landing_pts):
            return None
        rank = self._rank_of.get(pts)
        return rank if rank is not None and rank > self._last else None

    # -- positioning --------------------------------------------------------------------------------------
    def _restart(self) -> None:
        """Reopen the file and decode from its first packet: what read_frames does, always correct."""
        self._open_container()
        self.stats["restarts"] += 1
        self._demux = self._container.demux(self._stream)
        self._landing_pts = None
        self._from_start = True
        self._pass_start = 0
        self._last = -1

    def _seek(self, rank: int) -> None:
        """Position the decoder on the last keyframe at or before frame ``rank``, checking where it landed."""
        import av

        group = self._group(rank)
        for key in reversed(self._key_pts[max(0, group + 1 - _SEEK_ATTEMPTS) : group + 1]):
            self._demux = self._first = None
            try:
                self._container.seek(key, stream=self._stream, backward=True, any_frame=False)
                self.stats["seeks"] += 1
                self._demux = self._container.demux(self._stream)
                first = self._next_packet()
            except av.error.FFmpegError:
                break
            # A demuxer may land on a later keyframe (its index may be in decode time) or on no keyframe at all.
            if first is not None and first.is_keyframe and first.pts in self._key_set and first.pts <= key:
                self._first = first
                self._landing_pts = first.pts
                self._from_start = False
                self._pass_start = bisect.bisect_left(self._pts, first.pts)
                self._last = self._pass_start - 1
                self._fed_max, self._fed_before = -1, {}
                return
        self._restart()

    def _next_packet(self) -> Any:
        """The next packet of the video stream (the flush packet included), or None at the end."""
        if self._first is not None:
            packet, self._first = self._first, None
            return packet
        if self._demux is None:
            return None
        packet = next(self._demux, None)
        if packet is None:
            self._demux = None
        return packet

    def _position_for(self, rank: int) -> None:
        """Continue the open decoder when that is cheaper than a seek, else seek (or start over)."""
        ahead = self._demux is not None and self._last < rank
        if self.mode != "pts":
            if not ahead:
                self._restart()
            return
        group = self._group(rank)
        # A damaged group (or frames before the first keyframe) decode as read_frames decodes them only in a pass
        # from the file start. Reopening costs about one decoded frame plus a probe, so other reads seek.
        from_start = group < 0 or group in self._damaged
        if ahead and self._from_start and from_start:
            return
        if ahead and not from_start and self._key_ranks[group] - self._last <= _SEEK_COST_FRAMES:
            return
        if from_start:
            self._restart()
        else:
            self._seek(rank)

    # -- decoding -----------------------------------------------------------------------------------------
    def read(self, rank: int, sink: _Sink, what: str) -> Any:
        """Decode frame ``rank`` and return it as an ``av.VideoFrame``; ``what`` names it in errors.

        Frames decoded on the way that ``sink.keep`` wants go to ``sink.put`` (the store's cache).
        """
        if rank in self._failed:
            raise VideoReadError(f"{self.path}: {what} cannot be decoded: {self._failed[rank]}")
        try:
            self._position_for(rank)
            frame = self._decode_until(rank, sink, what)
        except _DamagedGroup:  # found damaged on the way: its group is now read from the start
            self._position_for(rank)
            frame = self._decode_until(rank, sink, what)
        if frame is None and self._demux is not None and not self._from_start:
            # The decoder went past it after a seek without giving it: decode from the start instead.
            self._restart()
            frame = self._decode_until(rank, sink, what)
        if frame is not None:
            return frame
        if self._demux is None:  # every packet up to the end was decoded: no later frame can come out
            why = (
                "the video ends before its picture is complete, so the file is truncated (frames from "
                f"{self._last + 1} on do not decode; the ones before do). Re-export or re-download it"
            )
            self._failed.update(dict.fromkeys(range(self._last + 1, self.count), why))
        else:
            why = (
                "the decoder skips it, so the file is corrupt there. Other frames can still be read; re-export "
                "or re-download the video to get this one"
            )
            self._failed[rank] = why
        raise VideoReadError(f"{self.path}: {what} cannot be decoded: {why}")

    def _decode_until(self, rank: int, sink: _Sink, what: str) -> Any:
        """Feed packets until frame ``rank`` comes out; None when the decoder passes it or the file ends.

        After a seek, decoding goes on until every frame whose packet was fed before ``rank``'s came out too, so
        a damaged one among them (which ``rank`` may reference) is seen before ``rank`` is returned; unless the
        cache cannot keep that many frames after ``rank``: the next forward read would then have to seek.
        """
        import av

        found, settled = None, -1
        while True:
            if found is not None and (
                self._last >= settled or settled - rank > sink.ahead or self._group(rank) in self._clean
            ):
                return found
            if found is None and self._last > rank:
                return None
            try:
                packet = self._next_packet()
                if packet is None:
                    return found
                if not self._from_start:
                    fed = self._rank_of.get(packet.pts)
                    if fed is not None:
                        self._fed_before[fed] = self._fed_max
                        self._fed_max = max(self._fed_max, fed)
                frames = packet.decode()
            except av.error.FFmpegError as error:
                self._demux = self._first = None  # the decoder state is unknown: the next read seeks again
                if found is not None:  # the damaged packet comes after the wanted frame's in decode order
                    return found
                why = (
                    f"the video is truncated or corrupt there ({error}). Frames before the damage can still be "
                    "read; re-export or re-download the video to get this one"
                )
                self._failed[rank] = why
                raise VideoReadError(f"{self.path}: {what} cannot be decoded: {why}") from error
            for frame in frames:
                got = self._rank(frame)
                if got is None:
                    continue
                self.stats["decoded"] += 1
                self._last = got
                fed_before = self._fed_before.pop(got, -1)
                trusted = True
                if self.mode == "pts":
                    group = self._group(got)
                    if getattr(frame, "is_corrupt", False) and group not in self._damaged:
                        self._damaged.add(group)
                        if not self._from_start:
                            sink.drop(*self._group_span(group))  # decoded here without the history read_frames had
                    start, stop = self._group_span(group)
                    if got == stop - 1 and self._pass_start <= start and group not in self._damaged:
                        self._clean.add(group)  # every frame of it came out in this pass: no need to settle there
                    trusted = self._from_start or group not in self._damaged
                    if not self._from_start and found is not None and self._group(rank) in self._damaged:
                        raise _DamagedGroup
                if got == rank:
                    if not trusted:
                        raise _DamagedGroup
                    found, settled = frame, fed_before
                if trusted and sink.keep(got):
                    sink.put(got, frame)


class FrameStore:
    """Random access to the processed frames of a source, by position (after ``stride`` and ``max_frames``).

    Position ``p`` is the ``p``-th frame :func:`segvlm.video.read_frames` yields for the same arguments, and
    ``store[p]`` is byte-identical to its image. Open with :meth:`open`; use as a context manager or call
    :meth:`close`. Safe to share between threads: one lock guards the decoder and the cache.

    Attributes:
        height, width: frame size (of the first frame).
        fps: frames per second after stride, when the source has timing.
        source: the path, or ``"<frames>"`` for a list.
        stride, max_frames: as given to :meth:`open`.
        cache_frames: how many decoded frames are kept (least recently used dropped first); reading backwards
            decodes one chunk (keyframe to frame) per ``cache_frames`` frames, so more is faster there.

    Arrays returned are read-only, because they are shared with the cache: copy one before drawing on it.
    """

    def __init__(self, source: Any, stride: int = 1, max_frames: int | None = None, cache_frames: int = 32):
        if cache_frames < 0:
            raise ValueError(f"cache_frames must be >= 0 (a count of decoded frames kept), got {cache_frames}")
        if _is_one_shot(source):
            raise VideoReadError(
                f"cannot read a {type(source).__name__} in random order: iterators and streams are read once, "
                "front to back; pass a video path, a folder of frames, or a list of images"
            )
        probe = FrameSource(source, stride=stride, max_frames=max_frames)  # validates, and the errors of read_frames
        self.stride = stride
        self.max_frames = max_frames
        self.cache_frames = cache_frames
        self.source = probe.meta.source
        self.height, self.width = probe.meta.height, probe.meta.width
        self.fps = probe.fps
        kind, payload = probe._kind, probe._payload
        if kind == "video":
            self._reader: _VideoReader | _ImageReader = _VideoReader(Path(payload))
        elif kind == "files":
            self._reader = _ImageReader(payload, _open_image)
        else:
            self._reader = _ImageReader(payload, to_rgb_uint8)
        count = -(-self._reader.count // stride)
        self._len = min(count, max_frames) if max_frames is not None else count
        self._cache: OrderedDict[int, Any] = OrderedDict()  # position -> (H, W, 3) uint8 array or av.VideoFrame
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(cls, source: Any, stride: int = 1, max_frames: int | None = None, cache_frames: int = 32) -> FrameStore:
        """Open ``source`` (a video path, an image, a folder of frames, a glob pattern such as ``"frames/*.jpg"``,
        or a list of images or of image paths) for random access.

        A video is indexed at once (its packets are read, not decoded); nothing is decoded until a frame is
        asked for. Raises :class:`~segvlm.errors.VideoReadError` for unreadable sources and for one-shot
        iterators, which cannot be read in any order.
        """
        return cls(source, stride=stride, max_frames=max_frames, cache_frames=cache_frames)

    # -- positions ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    def _position(self, position: int) -> int:
        position = operator.index(position)
        if -self._len <= position < self._len:
            return position % self._len
        raise IndexError(
            f"frame position {position} is out of range: {self.source} has {self._len} frames"
            f"{self._after_stride()}, so valid positions are 0..{self._len - 1} (or -{self._len}..-1 from the end)"
        )

    def _after_stride(self) -> str:
        options = [f"stride {self.stride}"] if self.stride > 1 else []
        options += [f"max_frames {self.max_frames}"] if self.max_frames is not None else []
        return f" with {' and '.join(options)}" if options else ""

    def frame_index(self, position: int) -> int:
        """Index in the source of the frame at ``position`` (``position * stride``)."""
        return self._position(position) * self.stride

    def timestamp(self, position: int) -> float | None:
        """Seconds from the start of the frame at ``position``, when the source has timing."""
        return self._reader.timestamp(self.frame_index(position))

    def position_of(self, frame_index: int) -> int:
        """Position of source frame ``frame_index``; KeyError when stride or max_frames left that frame out."""
        frame_index = operator.index(frame_index)
        position, remainder = divmod(frame_index, self.stride)
        if frame_index < 0 or remainder or position >= self._len:
            last = (self._len - 1) * self.stride
            held = f"0, {self.stride}, {2 * self.stride}, ... up to {last}" if self.stride > 1 else f"0 to {last}"
            raise KeyError(
                f"source frame {frame_index} is not in this store: it holds frames {held}{self._after_stride()}; "
                "pass one of those, or open the store with the stride that keeps this frame"
            )
        return position

    # -- frames -------------------------------------------------------------------------------------------
    def __getitem__(self, position: int) -> np.ndarray:
        """The frame at ``position`` as a read-only (H, W, 3) uint8 RGB array; negative positions count from the end."""
        position = self._position(position)
        with self._lock:
            if self._closed:
                raise VideoReadError(f"this FrameStore of {self.source} is closed; open it again with FrameStore.open")
            entry = self._cache.get(position)
            if entry is None:
                entry = self._load(position)
            if not isinstance(entry, np.ndarray):  # a decoded av.VideoFrame kept in YUV until it is asked for
                entry = entry.to_ndarray(format="rgb24")  # (H, W, 3) uint8, the conversion read_frames does
                entry.flags.writeable = False
            if self.cache_frames:
                self._cache[position] = entry
                self._cache.move_to_end(position)
                while len(self._cache) > self.cache_frames:
                    self._cache.popitem(last=False)
            return entry

    def _load(self, position: int) -> Any:
        """Read the frame at ``position`` (not cached): an array, or an ``av.VideoFrame`` for a video."""
        rank = position * self.stride
        if isinstance(self._reader, _ImageReader):
            image = self._reader.read(rank).view()  # a view, so a caller's own array keeps its flags
            image.flags.writeable = False
            return image
        lowest = position - self.cache_frames + 1  # the chunk that ends at `position` is kept for reads backwards

        def keep(got: int) -> bool:
            kept, remainder = divmod(got, self.stride)
            return not remainder and kept < self._len and (kept >= lowest or kept > position)

        what = f"frame {rank}" + (f" (position {position})" if self.stride > 1 else "")
        return self._reader.read(rank, _Sink(keep, self._put, self._drop, self.cache_frames - 1), what)

    def _put(self, rank: int, frame: Any) -> None:
        """Keep a frame decoded on the way to another, dropping the least recently used beyond ``cache_frames``."""
        if not self.cache_frames:
            return
        position = rank // self.stride
        if position in self._cache:
            return
        self._cache[position] = frame
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def _drop(self, start: int, stop: int) -> None:
        """Forget the cached frames of source indices ``[start, stop)`` (they may be wrong)."""
        for position in [p for p in self._cache if start <= p * self.stride < stop]:
            del self._cache[position]

    @property
    def stats(self) -> dict[str, int]:
        """Decoder work so far: ``seeks``, ``restarts`` (decodes from the file start) and ``decoded`` frames."""
        with self._lock:
            return dict(self._reader.stats) if isinstance(self._reader, _VideoReader) else {}

    # -- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the video file and drop the cached frames."""
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._reader.close()

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameStore({self.source!r}, {self._len} frames{self._after_stride()}, {self.width}x{self.height})"
