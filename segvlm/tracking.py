"""Text to masklets: ground phrases to boxes, track them with a memory-equipped segmenter, keep ids stable.

The tracking policy (see :class:`segvlm.config.TrackingConfig`):

1. Ground on the first frame; while nothing is found, retry every ``reground_every`` frames.
2. Re-ground every ``reground_every`` frames. A detection whose box overlaps a running track's box on the
   previous frame (IoU >= ``match_iou``) is that track. Other detections join the *running* session as
   candidate objects on this frame; after the frame is segmented, a candidate whose mask overlaps a running
   track's mask (IoU >= ``match_iou``) is a duplicate and is removed again; the rest become new tracks.
3. A new track is propagated backwards over the last ``backfill_frames`` frames (kept in a small ring
   buffer), so its masklet starts where the object entered, not where the detector first saw it.
4. A track whose mask stays empty for ``max_lost_frames`` frames ends and leaves the session; until then the
   segmenter's memory can re-acquire it under the same id. After that, when the CLIP re-ranker is loaded, a
   new detection with the same label whose crop embeds close to the track's last appearance (cosine >=
   ``reid_similarity``) revives the ended track under its old id.

Frames stream through: decoding and the segmenter's preprocessing run on a background thread, the
segmenter keeps only its memory window, results are stored as RLE.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvlm.backend import options_dict
from segvlm.config import PipelineConfig, load_config
from segvlm.errors import VideoReadError
from segvlm.grounding.base import Grounder
from segvlm.grounding.rerank import crop
from segvlm.masks import RLE, box_iou_matrix, mask_iou
from segvlm.provenance import Provenance, StageRecord, TrackingRecord
from segvlm.query import parse_query, source_phrases
from segvlm.segmentation.base import (
    FrameMasks,
    ObjectPrompt,
    Segmenter,
    SegmenterSession,
    TextVideoSegmenter,
)
from segvlm.types import Detection, FramePrompt, FrameResult, ObjectMask, VideoInfo, VideoSegmentation
from segvlm.video import Frame, FrameSource, prefetch, read_frames


class StopPipeline(Exception):
    """Raise it from ``on_frame`` to stop a run early: the pipeline returns the frames processed so far."""


@dataclass
class Progress:
    """Passed to ``on_frame`` after each frame.

    Attributes:
        frames_done: frames processed so far.
        frames_total: expected total, when the source says.
        active_tracks: objects currently tracked.
        tracks_total: tracks created so far.
        seconds: wall time since the start.
    """

    frames_done: int
    frames_total: int | None
    active_tracks: int
    tracks_total: int
    seconds: float


@dataclass
class _TrackState:
    """What the tracker keeps per track.

    Attributes:
        last_crop: the object's pixels at its last visible frame (kept only when re-identification is on).
        appearance: unit CLIP embedding of ``last_crop``, computed when the track ends.
    """

    label: str
    phrase: str
    score: float
    lost_frames: int = 0
    ended: bool = False
    last_crop: np.ndarray | None = None
    appearance: np.ndarray | None = None


@dataclass
class _Candidate:
    obj_id: int
    detection: Detection


@dataclass
class _Tracker:
    """The per-video tracking loop state (one instance per call)."""

    pipeline: Pipeline
    phrases: tuple[str, ...]
    query: str
    height: int
    width: int
    session: SegmenterSession | None = None
    tracks: dict[int, _TrackState] = field(default_factory=dict)
    frames: list[FrameResult] = field(default_factory=list)
    history: deque = field(default_factory=deque)
    next_id: int = 1
    prompts: dict[int, dict[int, FramePrompt]] = field(default_factory=dict)  # the grounder's box per track
    backfilled: list[tuple[int, ObjectMask]] = field(default_factory=list)  # (position, mask) since last drained
    new_prompts: list[tuple[int, int, FramePrompt]] = field(default_factory=list)  # since last drained

    def __post_init__(self) -> None:
        self.history = deque(maxlen=max(self.pipeline.config.tracking.backfill, 0))

    # -- one frame ----------------------------------------------------------------------------------------
    def process(self, position: int, frame: Frame, pixel_values: Any) -> FrameResult:
        tracking = self.pipeline.config.tracking
        candidates: list[_Candidate] = []
        if position % tracking.reground_every == 0:
            candidates = self._new_candidates(frame.image)
        if candidates and self.session is None:
            self.session = self.pipeline.segmenter.start(self.height, self.width)
        if self.session is None:
            output = FrameMasks.empty(self.height, self.width)
        else:
            prompts = [ObjectPrompt(c.obj_id, box=c.detection.box_xyxy) for c in candidates]
            output = self.session.step(frame.image, prompts, pixel_values=pixel_values)
        accepted = self._accept_candidates(candidates, output)
        for candidate in accepted:
            prompt = FramePrompt(box=tuple(map(float, candidate.detection.box_xyxy)), source="detector")
            self.prompts.setdefault(candidate.obj_id, {})[frame.index] = prompt
            self.new_prompts.append((candidate.obj_id, frame.index, prompt))
        result = self._frame_result(frame, output)
        self.frames.append(result)
        for candidate in accepted:
            self._backfill(candidate, result.get(candidate.obj_id), frame.image)
        self.remember(position, frame.image)
        return result

    def _new_candidates(self, image: np.ndarray) -> list[_Candidate]:
        """Detections that do not match a running track's last box become candidate objects."""
        tracking = self.pipeline.config.tracking
        detections = self.pipeline.ground(image, self.phrases, self.query)
        last = self.frames[-1] if self.frames else None
        running = [obj for obj in (last.objects if last else []) if obj.track_id in self.tracks]
        ious = box_iou_matrix(np.asarray([d.box_xyxy for d in detections]), np.asarray([o.box_xyxy for o in running]))
        active = sum(not state.ended for state in self.tracks.values())
        candidates: list[_Candidate] = []
        for row, detection in enumerate(detections):
            if running and ious[row].max() >= tracking.match_iou:
                matched = running[int(ious[row].argmax())]
                self.tracks[matched.track_id].score = detection.score
                continue
            if active + len(candidates) >= tracking.max_objects:
                break
            revived = self._reidentify(image, detection, taken={c.obj_id for c in candidates})
            if revived is None:
                revived, self.next_id = self.next_id, self.next_id + 1
            candidates.append(_Candidate(revived, detection))
        return candidates

    def _reidentify(self, image: np.ndarray, detection: Detection, taken: set[int]) -> int | None:
        """The id of an ended track with the same label that this detection looks like, if the re-ranker is on."""
        reranker = self.pipeline.reranker
        ended = {
            track_id: state
            for track_id, state in self.tracks.items()
            if state.ended and state.appearance is not None and state.label == detection.label and track_id not in taken
        }
        if reranker is None or not ended:
            return None
        query = reranker.image_embeddings([crop(image, detection.box_xyxy)])[0]  # (D,)
        similarity = {track_id: float(state.appearance @ query) for track_id, state in ended.items()}
        best = max(similarity, key=similarity.get)
        return best if similarity[best] >= self.pipeline.config.tracking.reid_similarity else None

    def _accept_candidates(self, candidates: list[_Candidate], output: FrameMasks) -> list[_Candidate]:
        """Keep candidates whose mask is new; remove duplicates of running tracks (and of each other)."""
        if not candidates:
            return []
        tracking = self.pipeline.config.tracking
        masks = dict(zip(output.obj_ids, output.masks))
        candidate_ids = {c.obj_id for c in candidates}  # a revived candidate reuses an ended track's id
        known = [
            masks[track_id]
            for track_id, state in self.tracks.items()
            if not state.ended and track_id not in candidate_ids and track_id in masks and masks[track_id].any()
        ]
        accepted, rejected = [], []
        for candidate in candidates:
            mask = masks.get(candidate.obj_id)
            empty = mask is None or mask.sum() < tracking.min_mask_area
            if empty or any(mask_iou(mask, other) >= tracking.match_iou for other in known):
                rejected.append(candidate.obj_id)
                continue
            accepted.append(candidate)
            known.append(mask)
            detection = candidate.detection
            self.tracks[candidate.obj_id] = _TrackState(detection.label, detection.phrase, detection.score)
        if rejected and self.session is not None:
            self.session.remove_objects(rejected)
        return accepted

    def _object_mask(self, track_id: int, mask: np.ndarray) -> ObjectMask | None:
        if mask.sum() < self.pipeline.config.tracking.min_mask_area:
            return None
        state = self.tracks[track_id]
        rle = RLE.encode(mask)
        return ObjectMask(track_id, state.label, state.phrase, state.score, rle.bbox_xyxy(), rle)

    def _frame_result(self, frame: Frame, output: FrameMasks) -> FrameResult:
        tracking = self.pipeline.config.tracking
        objects, ended = [], []
        for obj_id, mask in zip(output.obj_ids, output.masks):
            if obj_id not in self.tracks or self.tracks[obj_id].ended:  # rejected candidates, ended tracks
                continue
            obj = self._object_mask(obj_id, mask)
            state = self.tracks[obj_id]
            if obj is None:
                state.lost_frames += 1
                if state.lost_frames > tracking.max_lost_frames:
                    ended.append(obj_id)
            else:
                state.lost_frames = 0
                objects.append(obj)
                if self.pipeline.reranker is not None:  # remember the last appearance for re-identification
                    state.last_crop = crop(frame.image, obj.box_xyxy).copy()
        # A running track outside the session (lost when a run was resumed: it had no mask to re-enter with)
        # counts its lost frames like any other, so that it ends and frees its place.
        for track_id, state in self.tracks.items():
            if not state.ended and track_id not in output.obj_ids:
                state.lost_frames += 1
                if state.lost_frames > tracking.max_lost_frames:
                    ended.append(track_id)
        for track_id in ended:
            self._end(track_id)
        if ended and self.session is not None:
            self.session.remove_objects(ended)
        return FrameResult(
            frame.index, self.height, self.width, frame.timestamp, sorted(objects, key=lambda o: o.track_id)
        )

    def _end(self, track_id: int) -> None:
        state = self.tracks[track_id]
        state.ended = True
        if state.last_crop is not None and self.pipeline.reranker is not None:
            state.appearance = self.pipeline.reranker.image_embeddings([state.last_crop])[0]  # (D,)
        state.last_crop = None

    def _backfill(self, candidate: _Candidate, found: ObjectMask | None, image: np.ndarray) -> None:
        """Propagate a new object backwards over the buffered frames until it disappears."""
        if found is None or not self.history:
            return
        past = list(reversed(self.history))  # most recent first
        clip = [image] + [past_image for _, past_image in past]
        outputs = self.pipeline.segmenter.track_clip(clip, [ObjectPrompt(candidate.obj_id, mask=found.mask)])
        next(outputs)  # the frame where it was found, already in the result
        for (position, _), output in zip(past, outputs):
            obj = self._object_mask(candidate.obj_id, output.masks[0]) if len(output.obj_ids) else None
            if obj is None:
                return
            target = self.frames[position]
            target.objects = sorted([*target.objects, obj], key=lambda o: o.track_id)
            self.backfilled.append((position, obj))

    # -- run logs: write as it goes, resume after a kill ---------------------------------------------------
    def log_frame(self, log: Any) -> None:
        """Append the last processed frame, what it back-filled and started, and the tracker's state."""
        from segvlm.runlog import TrackSnapshot

        tracks = {
            track_id: TrackSnapshot(state.label, state.phrase, state.score, state.lost_frames, state.ended)
            for track_id, state in self.tracks.items()
        }
        log.append(self.frames[-1], self.backfilled, self.new_prompts, tracks, self.next_id)
        self.backfilled, self.new_prompts = [], []

    def restore(self, state: Any) -> None:
        """Continue from a run log's state (see :mod:`segvlm.runlog`)."""
        self.frames = list(state.frames)
        self.tracks = {
            track_id: _TrackState(t.label, t.phrase, t.score, t.lost_frames, t.ended)
            for track_id, t in state.tracks.items()
        }
        self.next_id = state.next_id
        self.prompts = {track_id: dict(per_frame) for track_id, per_frame in state.prompts.items()}

    def reenter(self, frame: Frame, pixel_values: Any) -> None:
        """Start a session on the last logged frame with every running track's mask there as its prompt."""
        last = self.frames[-1]
        prompts = [
            ObjectPrompt(obj.track_id, mask=obj.mask)
            for obj in last.objects
            if obj.track_id in self.tracks and not self.tracks[obj.track_id].ended
        ]
        if prompts:
            self.session = self.pipeline.segmenter.start(self.height, self.width)
            self.session.step(frame.image, prompts, pixel_values=pixel_values)

    def remember(self, position: int, image: np.ndarray) -> None:
        """Keep a logged frame in the back-fill buffer (a track found after a resume back-fills into it)."""
        if self.history.maxlen:
            self.history.append((position, image))


@dataclass
class _TextNativeTracker:
    """The per-video loop for a segmenter that finds objects from text itself (SAM 3): no grounder, no policy.

    The segmenter detects, tracks and numbers objects; each frame's output becomes a :class:`FrameResult`
    with ``track_id`` = the segmenter's object id + 1 (segvlm's track ids start at 1, SAM 3's at 0), ``label``
    = the phrase that found the object, ``phrase`` = the query's own words for it, and the box taken from the
    mask. Masks smaller than ``tracking.min_mask_area`` count as not visible, as in :class:`_Tracker`.
    """

    pipeline: Pipeline
    phrases: tuple[str, ...]
    query: str
    height: int
    width: int
    session: Any = None
    tracks: dict[int, str] = field(default_factory=dict)  # track id -> label, every object seen so far
    sources: dict[str, str] = field(default_factory=dict)  # label -> the query's own words for it
    frames: list[FrameResult] = field(default_factory=list)

    def process(self, position: int, frame: Frame, pixel_values: Any) -> FrameResult:
        if self.session is None:
            self.session = self.pipeline.segmenter.start_text(self.height, self.width, list(self.phrases))
        output = self.session.step(frame.image, pixel_values=pixel_values)
        min_area = self.pipeline.config.tracking.min_mask_area
        objects = []
        for obj_id, label, mask, score in zip(output.obj_ids, output.labels, output.masks, output.scores):
            if mask.sum() < min_area:
                continue
            track_id = obj_id + 1
            self.tracks.setdefault(track_id, label)
            rle = RLE.encode(mask)
            phrase = self.sources.setdefault(label, source_phrases(self.query, [label])[0])
            objects.append(ObjectMask(track_id, label, phrase, float(score), rle.bbox_xyxy(), rle))
        result = FrameResult(
            frame.index, self.height, self.width, frame.timestamp, sorted(objects, key=lambda o: o.track_id)
        )
        self.frames.append(result)
        return result


class Pipeline:
    """Grounder + segmenter + tracking policy, with models loaded once and reused across calls.

    Build it from a preset (``Pipeline.from_preset("cpu-fast")``) or a :class:`PipelineConfig`; pass your
    own grounder/segmenter objects to use custom backends. Models load on first use.

    The loop depends on the segmenter's kind: a :class:`VideoSegmenter` tracks the grounder's boxes; a
    :class:`TextVideoSegmenter` (SAM 3) finds objects from the phrases itself and no grounder runs.
    """

    def __init__(
        self,
        config: PipelineConfig | None = None,
        grounder: Grounder | None = None,
        segmenter: Segmenter | None = None,
        reranker: Any = None,
    ):
        from segvlm.devices import resolve_device

        self.config = config or PipelineConfig()
        self.device = resolve_device(self.config.device)
        self._grounder = grounder
        self._segmenter = segmenter
        self._reranker = reranker
        if self.config.warning:
            warnings.warn(self.config.warning, UserWarning, stacklevel=2)

    @classmethod
    def from_preset(cls, preset: str | None = None, device: str | None = None, **overrides: Any) -> Pipeline:
        """A pipeline from a preset name or YAML path; ``overrides`` are nested dicts per stage."""
        return cls(load_config(preset, overrides=overrides, device=device))

    # -- lazily built stages ------------------------------------------------------------------------------
    @property
    def grounder(self) -> Grounder:
        if self._grounder is None:
            from segvlm.registry import grounder_class

            self._grounder = grounder_class(self.config.grounder.name).from_config(self.config.grounder, self.device)
        return self._grounder

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            from segvlm.registry import segmenter_class

            self._segmenter = segmenter_class(self.config.segmenter.name).from_config(
                self.config.segmenter, self.device
            )
        return self._segmenter

    @property
    def reranker(self) -> Any:
        if self._reranker is None and self.config.reranker.enabled:
            from segvlm.grounding.rerank import ClipReranker

            self._reranker = ClipReranker.from_config(self.config.reranker, self.device)
        return self._reranker

    def ground(self, image: np.ndarray, phrases: tuple[str, ...], query: str) -> list[Detection]:
        """Detections for ``phrases`` in one frame, re-ranked against the full query when enabled."""
        detections = self.grounder.detect(image, phrases, query)
        if detections and self.reranker is not None:
            detections = self.reranker.rerank(image, detections)
        return detections

    # -- running ------------------------------------------------------------------------------------------
    def __call__(
        self,
        query: str | list[str],
        video: Any,
        *,
        max_frames: int | None = None,
        stride: int = 1,
        on_frame: Callable[[FrameResult, Progress], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> VideoSegmentation:
        """Segment and track what ``query`` names through ``video``.

        Args:
            query: "segment the red car", "the dog and the two children", or a list of phrases.
            video: a video/image path, a folder of frames, a list of images/arrays, or an iterator of frames.
            max_frames: process at most this many frames (after stride).
            stride: process every ``stride``-th frame.
            on_frame: called after each frame with its result and a :class:`Progress`.
            checkpoint: a run log path: each finished frame is appended to it as it is computed, so a killed run
                loses nothing (see :mod:`segvlm.runlog`).
            resume: continue the run logged at ``checkpoint`` from its last complete frame.

        Returns:
            A :class:`VideoSegmentation` (empty of objects when nothing matched the query).

        Raises:
            VideoReadError: the input cannot be read. When decoding fails part-way, the error's
                ``partial_result`` holds the result for the frames decoded before the failure.
        """
        parsed = parse_query(query)
        source = read_frames(video, stride=stride, max_frames=max_frames)
        meta = source.meta
        # A path is stored absolute, so that a saved result still finds its video from another folder.
        where = str(Path(meta.source).resolve()) if isinstance(video, (str, Path)) else meta.source
        tracker_class = _TextNativeTracker if isinstance(self.segmenter, TextVideoSegmenter) else _Tracker
        provenance = self._provenance(max_frames)
        result = VideoSegmentation(
            info=VideoInfo(where, meta.height, meta.width, source.fps, stride),
            query=parsed.text,
            phrases=list(parsed.phrases),
        )
        result.provenance = provenance
        tracker = tracker_class(self, parsed.phrases, parsed.text, meta.height, meta.width)
        log, skip = self._open_log(checkpoint, resume, tracker, provenance, result, max_frames)
        stopped_after = None
        started = time.perf_counter()
        try:
            for position, (frame, pixel_values) in enumerate(self._frames(source, skip=skip)):
                if frame.image.shape[:2] != (meta.height, meta.width):
                    raise VideoReadError(
                        f"frame {frame.index} has size {frame.image.shape[:2]} but the first frame was "
                        f"{(meta.height, meta.width)}; all frames of one video must have the same size"
                    )
                if position < skip:  # logged before a kill: refill the back-fill buffer, re-enter on the last
                    tracker.remember(position, frame.image)
                    if position == skip - 1:
                        tracker.reenter(frame, pixel_values)
                    continue
                frame_result = tracker.process(position, frame, pixel_values)
                if log is not None:
                    tracker.log_frame(log)
                if on_frame is not None:
                    progress = Progress(
                        position + 1,
                        source.expected_frames(),
                        len(tracker.session.obj_ids) if tracker.session else 0,
                        len(tracker.tracks),
                        time.perf_counter() - started,
                    )
                    try:
                        on_frame(frame_result, progress)
                    except StopPipeline:
                        stopped_after = position + 1
                        break
        except VideoReadError as error:
            result.frames = tracker.frames
            result.prompts = getattr(tracker, "prompts", {})
            result.provenance = dataclasses.replace(provenance, random_weights=self._random_weights())
            error.partial_result = result
            raise
        finally:
            if log is not None:
                log.close()
        result.frames = tracker.frames
        result.prompts = getattr(tracker, "prompts", {})
        result.provenance = dataclasses.replace(
            provenance,
            random_weights=self._random_weights(),
            stopped_after_frames=stopped_after,
            seconds=round(time.perf_counter() - started, 3),
        )
        return result

    def correct(self, result: VideoSegmentation, video: Any = None, folder: Any = None) -> Any:
        """A :class:`segvlm.corrections.CorrectionSession` that edits ``result`` with this pipeline's segmenter.

        ``video`` defaults to ``result.info.source``; ``folder``, when given, persists every edit there (see
        :meth:`CorrectionSession.open`). Refused with a clear message for a segmenter that takes no prompts.
        """
        from segvlm.corrections import CorrectionSession

        return CorrectionSession.create(result, self, video=video, folder=folder)

    def _open_log(
        self,
        checkpoint: Any,
        resume: bool,
        tracker: Any,
        provenance: Provenance,
        result: VideoSegmentation,
        max_frames: int | None,
    ) -> tuple[Any, int]:
        """The run log to append to (None without ``checkpoint``) and how many logged frames to skip."""
        from segvlm.runlog import RunLog, RunLogError

        if checkpoint is None:
            if resume:
                raise RunLogError("resume=True needs checkpoint=<the run log to continue>")
            return None, 0
        header = {
            "video": result.info.source,
            "query": result.query,
            "stride": result.info.stride,
            "max_frames": max_frames,
            "grounder": provenance.grounder.to_json() if provenance.grounder else None,
            "segmenter": provenance.segmenter.to_json() if provenance.segmenter else None,
            "tracking": provenance.tracking.to_json() if provenance.tracking else None,
        }
        if not isinstance(tracker, _Tracker):  # SAM 3 keeps its own tracker state: no run log, no resume
            if resume:
                raise RunLogError(
                    "resuming is not available for a text-native segmenter (SAM 3); run again without --resume"
                )
            return None, 0
        if not resume:
            return RunLog.start(checkpoint, header), 0
        log, state = RunLog.resume(checkpoint, header)
        tracker.restore(state)
        return log, len(state.frames)

    def _frames(self, source: FrameSource, skip: int = 0) -> Iterator[tuple[Frame, Any]]:
        """Decoded frames with the segmenter's preprocessing done ahead on a background thread.

        The first ``skip - 1`` frames (already in a resumed run's log) are decoded but not preprocessed.
        """
        segmenter = self.segmenter

        def prepared() -> Iterator[tuple[Frame, Any]]:
            for position, frame in enumerate(source):
                yield frame, (segmenter.preprocess(frame.image) if position >= skip - 1 else None)

        return prefetch(prepared(), depth=4)

    def _provenance(self, max_frames: int | None) -> Provenance:
        """The record of this run's setup; ``random_weights`` is completed from the loaded models at the end."""
        config = self.config
        return Provenance(
            segvlm_version=_version(),
            preset=config.preset,
            grounder=StageRecord(
                config.grounder.name,
                config.grounder.model,
                config.grounder.box_threshold,
                options_dict(config.grounder.options),
            ),
            segmenter=StageRecord(
                config.segmenter.name, config.segmenter.model, options=options_dict(config.segmenter.options)
            ),
            reranker=config.reranker.model if config.reranker.enabled else None,
            tracking=TrackingRecord(config.tracking.reground_every, config.tracking.match_iou),
            max_frames=max_frames,
            random_weights=self._random_weights(),
        )

    def _random_weights(self) -> bool:
        """Whether any model loaded so far has random weights (each records it where it is loaded)."""
        loaded = (self._grounder, self._segmenter, self._reranker)
        return any(bool(getattr(backend, "random_weights", False)) for backend in loaded if backend is not None)


def _version() -> str:
    from segvlm import __version__

    return __version__


def pipeline(
    query: str | list[str],
    video: Any,
    *,
    preset: str | None = None,
    config: PipelineConfig | str | None = None,
    device: str | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    on_frame: Callable[[FrameResult, Progress], None] | None = None,
) -> VideoSegmentation:
    """Segment and track what ``query`` names in ``video``; see :meth:`Pipeline.__call__`.

    ``preset`` names a preset (``"tiny-random"``, ``"cpu-fast"``...), ``config`` is a
    :class:`PipelineConfig` or YAML path; with neither, the default hub checkpoints are used. Models are
    loaded for this call only: build a :class:`Pipeline` once to reuse them across videos.
    """
    if isinstance(config, PipelineConfig):
        if device is not None:
            config.device = device
        resolved = config
    else:
        resolved = load_config(config or preset, device=device)
    return Pipeline(resolved)(query, video, max_frames=max_frames, stride=stride, on_frame=on_frame)
