"""SAM 3 (``facebook/sam3``): text-prompted video segmentation that replaces the grounder + segmenter pair.

SAM 3's video model detects every instance of each text phrase on every frame and tracks them with a
SAM 2-style memory, assigning its own object ids. It is a
:class:`segvlm.segmentation.base.TextVideoSegmenter`, so the pipeline runs no grounder for it:
:meth:`Sam3VideoSegmenter.start_text` opens a session for the query's phrases and ``session.step(image)``
returns every object SAM 3 sees in that frame (:class:`TextFrameMasks`).

The session follows transformers' documented streaming loop (``init_video_session`` without a video,
``add_text_prompt``, then ``model(inference_session=..., frame=pixel_values)`` and
``processor.postprocess_outputs`` per frame) and bounds its state, which transformers lets grow per frame:

* pixels: only the current frame's tensor is kept. The frame table still reports the number of frames
  added, because SAM 3's tracker reads that count (it caps the object pointers it attends to with it);
* tracker outputs: non-conditioning outputs older than ``max(num_maskmem, max_object_pointers_in_encoder)``
  frames are dropped (the memory never reads them). Conditioning outputs (frames where an object was added or
  re-conditioned by a high-confidence detection) are kept for the newest ``max_cond_frame_num`` of them and
  for any inside that window. transformers reads object pointers from *every* conditioning frame, so after
  an object has been re-conditioned more than ``max_cond_frame_num`` times (every
  ``recondition_every_nth_frame`` = 16 frames at most, so not before ~64 frames) its masks can differ slightly
  from transformers' unbounded loop; before that they are identical;
* per-frame bookkeeping (frame-wise tracker scores, suppressed ids, per-frame "tracked"/mask-input tables,
  hot-start match histories that streaming mode never reads) is dropped once the frame is done.

Objects that leave the scene stay in SAM 3's session (transformers' streaming mode never removes them), so
compute grows with the number of distinct objects seen, not with video length.

Masks are binarised by the processor (logit > 0); ``SegmenterConfig.mask_threshold`` does not apply.

SAM 3 reads at most 32 text tokens per phrase (its text encoder's positions; transformers pads every prompt
to 32). A longer phrase is cut to its longest prefix that fits, with a warning
(:class:`segvlm.query.TextLimit`); objects it finds are still labelled with the phrase as given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.backend import ModelFamily
from segvlm.config import SegmenterConfig
from segvlm.devices import resolve_dtype
from segvlm.loading import load_model
from segvlm.query import TextLimit
from segvlm.segmentation.base import TextFrameMasks, TextSegmenterSession, TextVideoSegmenter

__all__ = ["SAM3_TEXT_TOKENS", "Sam3TextSession", "Sam3VideoSegmenter", "TextFrameMasks"]

# transformers' Sam3VideoProcessor.add_text_prompt pads (and never truncates) every prompt to this many tokens.
SAM3_TEXT_TOKENS = 32


class _FrameTable(dict):
    """The session's frame table: holds the pixels of recent frames but reports how many frames were added.

    SAM 3's tracker reads ``len(processed_frames)`` as the video length (it bounds the object pointers it
    uses), so dropping old pixels must not change that number.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frames_added = 0

    def __setitem__(self, frame_idx: int, pixel_values) -> None:
        super().__setitem__(frame_idx, pixel_values)
        self.frames_added = max(self.frames_added, frame_idx + 1)

    def __len__(self) -> int:
        return self.frames_added

    def stored(self) -> int:
        """Number of frames whose pixels are actually held."""
        return dict.__len__(self)


class Sam3TextSession(TextSegmenterSession):
    """A streaming SAM 3 session for a fixed set of phrases. Create it with :meth:`Sam3VideoSegmenter.start_text`."""

    def __init__(self, segmenter: Sam3VideoSegmenter, height: int, width: int, phrases: Sequence[str]):
        if not phrases:
            raise ValueError("SAM 3 needs at least one phrase to look for")
        self.segmenter = segmenter
        self.height, self.width = height, width
        self.phrases = list(dict.fromkeys(phrases))
        fitted = segmenter.text_limit.fit(self.phrases)
        # The text SAM 3 reads -> the phrase it stands for (two long phrases may share a truncated prefix).
        self._phrase_of: dict[str, str] = {}
        for item in fitted:
            self._phrase_of.setdefault(item.text, item.phrase)
        self.position = -1  # index of the last processed frame in the session
        processor = segmenter.processor
        self.session = processor.init_video_session(inference_device=segmenter.device, dtype=segmenter.dtype)
        self.session.processed_frames = _FrameTable()
        processor.add_text_prompt(inference_session=self.session, text=list(self._phrase_of))
        tracker = segmenter.model.config.tracker_config
        self.window = max(tracker.num_maskmem, tracker.max_object_pointers_in_encoder) + 1
        self.max_cond_frames = tracker.max_cond_frame_num

    @property
    def obj_ids(self) -> list[int]:
        """Ids SAM 3 currently tracks (including ones not visible in the last frame)."""
        return list(self.session.obj_ids)

    def step(self, image: np.ndarray, pixel_values=None) -> TextFrameMasks:
        """Add the next frame ((H, W, 3) uint8 RGB) and return every object SAM 3 sees in it.

        ``pixel_values`` may carry :meth:`Sam3VideoSegmenter.preprocess` output computed ahead of time.
        """
        import torch

        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame of size {image.shape[:2]} in a session for {(self.height, self.width)}; all frames of a "
                "video must have the same size"
            )
        self.position += 1
        if pixel_values is None:
            pixel_values = self.segmenter.preprocess(image)  # (1, 3, S, S)
        session = self.session
        with torch.inference_mode():
            output = self.segmenter.model(inference_session=session, frame=pixel_values[0], frame_idx=self.position)
            post = self.segmenter.processor.postprocess_outputs(
                session, output, original_sizes=[[self.height, self.width]]
            )
        obj_ids = [int(obj_id) for obj_id in post["object_ids"].tolist()]
        texts = [session.prompts[session.obj_id_to_prompt_id[obj_id]] for obj_id in obj_ids]
        labels = [self._phrase_of.get(text, text) for text in texts]
        masks = post["masks"].cpu().numpy().astype(bool)  # (N, H, W)
        scores = post["scores"].float().cpu().numpy().reshape(-1)  # (N,)
        self._prune()
        return TextFrameMasks(obj_ids, labels, masks, scores)

    def _prune(self) -> None:
        """Drop per-frame state that later frames never read (see the module docstring)."""
        session, position = self.session, self.position
        oldest = position - self.window
        frames = session.processed_frames
        for index in [index for index in dict.keys(frames) if index < position]:
            dict.__delitem__(frames, index)
        for outputs in session.output_dict_per_obj.values():
            for index in [index for index in outputs["non_cond_frame_outputs"] if index < oldest]:
                del outputs["non_cond_frame_outputs"][index]
            conditioning = outputs["cond_frame_outputs"]
            newest = sorted(conditioning, reverse=True)[: self.max_cond_frames]
            for index in [index for index in conditioning if index < oldest and index not in newest]:
                del conditioning[index]
        for table in (session.frames_tracked_per_obj, session.mask_inputs_per_obj, session.point_inputs_per_obj):
            for per_obj in table.values():
                for index in [index for index in per_obj if index < position]:
                    del per_obj[index]
        for table in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for index in [index for index in table if index < position]:
                del table[index]
        # Streaming mode only appends to these hot-start histories and never reads them.
        session.unmatched_frame_inds.clear()
        session.overlap_pair_to_frame_inds.clear()

    def state_size(self) -> int:
        """Number of per-frame entries held in the session (bounded per object by the memory window)."""
        session = self.session
        outputs = sum(
            len(per_obj["cond_frame_outputs"]) + len(per_obj["non_cond_frame_outputs"])
            for per_obj in session.output_dict_per_obj.values()
        )
        tables = (session.frames_tracked_per_obj, session.mask_inputs_per_obj, session.point_inputs_per_obj)
        per_obj_frames = sum(len(per_obj) for table in tables for per_obj in table.values())
        per_frame = len(session.obj_id_to_tracker_score_frame_wise) + len(session.suppressed_obj_ids)
        histories = sum(map(len, session.unmatched_frame_inds.values()))
        histories += sum(map(len, session.overlap_pair_to_frame_inds.values()))
        return session.processed_frames.stored() + outputs + per_obj_frames + per_frame + histories


class Sam3VideoSegmenter(TextVideoSegmenter):
    """SAM 3 video (``facebook/sam3``) via transformers' ``Sam3VideoModel``: text in, tracked masks out.

    Being a text-native segmenter, it makes :class:`segvlm.tracking.Pipeline` skip its grounder and take
    objects, ids and labels from SAM 3 itself; it takes no prompts, so corrections are refused.
    """

    models = ModelFamily("facebook/sam3", "tiny-random:sam3", frozenset({"sam3"}), frozenset({"sam3", "sam3_video"}))

    def __init__(self, model, processor, config: SegmenterConfig, device: str = "cpu", dtype=None):
        import torch

        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.dtype = dtype or torch.float32
        text_config = getattr(getattr(model.config, "detector_config", None), "text_config", None)
        limit = min(SAM3_TEXT_TOKENS, getattr(text_config, "max_position_embeddings", SAM3_TEXT_TOKENS))
        tokenizer = processor.tokenizer
        self.text_limit = TextLimit("SAM 3", limit, lambda phrase: len(tokenizer(phrase)["input_ids"]))

    @classmethod
    def from_config(cls, config: SegmenterConfig, device: str = "cpu") -> Sam3VideoSegmenter:
        from transformers import Sam3VideoModel, Sam3VideoProcessor

        cls.options_from(config)  # an unknown option is refused before the weights load
        dtype = resolve_dtype(config.dtype, device)
        loaded = load_model(Sam3VideoModel, Sam3VideoProcessor, config.model, device, dtype)
        segmenter = cls(loaded.model, loaded.processor, config, device, dtype)
        segmenter.weights = loaded.weights
        return segmenter

    def preprocess(self, image: np.ndarray):
        """(1, 3, S, S) pixel values in the session dtype, on the model's device; runs on the prefetch thread."""
        from segvlm.segmentation.pixels import pixel_values

        return pixel_values(self.processor, image, self.device, self.dtype)

    def start_text(self, height: int, width: int, phrases: Sequence[str]) -> Sam3TextSession:
        """A new streaming session that finds and tracks every instance of ``phrases`` in frames of this size."""
        return Sam3TextSession(self, height, width, phrases)
