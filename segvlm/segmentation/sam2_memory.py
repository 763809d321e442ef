"""SAM 2's interactive semantics for one object: every conditioning frame in memory, any frame, any direction.

A correction session asks "track object 3 from frame 120 forwards to frame 199, given its prompts on frames
10, 120 and 200". SAM 2 answers that with one inference session in which every prompted frame is a
conditioning frame (computed from its prompt alone, then kept in the object's memory: SAM 2 attends to all of
them, ``max_cond_frame_num = -1``) and the other frames are tracked with the conditioning frames plus the
last ``num_maskmem - 1`` tracked frames. This module runs exactly transformers' offline loop for that, with
three changes that do not alter a single number:

* frames are decoded and preprocessed on demand (a lazy ``processed_frames`` mapping of the video's length)
  instead of all up front, so a 10,000-frame video costs one frame of pixels at a time;
* tracked-frame outputs the memory can no longer reach are dropped as the sweep advances (bounded state),
  except those next to a sweep's first frame, which a later sweep in the other direction reads, as the
  documented forward-then-reverse loop does;
* the outputs of conditioning frames and the image features of recent frames are kept in a
  :class:`PromptMemory` between calls, so an edit recomputes one conditioning frame, not all of them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segvlm.segmentation.base import FrameSequence, ObjectPrompt, Sweep, TrackedMask
from segvlm.segmentation.sam2 import add_prompts


class VisionFeatureCache:
    """Image features of the most recently used frames (LRU), shared by every propagation of a session.

    Same interface as transformers' ``Sam2VideoInferenceCache`` (which evicts the lowest frame index, not the
    least recently used one). A tiny SAM 2 frame costs a few MB of features, hiera-tiny about 17 MB.
    """

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._features: OrderedDict[int, dict] = OrderedDict()

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self._features[frame_idx] = features
        self._features.move_to_end(frame_idx)
        while len(self._features) > self.capacity:
            self._features.popitem(last=False)

    def get_vision_features(self, frame_idx: int) -> dict | None:
        features = self._features.get(frame_idx)
        if features is not None:
            self._features.move_to_end(frame_idx)
        return features

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._features

    def clear_all(self) -> None:
        self._features.clear()


@dataclass
class PromptMemory:
    """What a correction session keeps between edits for SAM 2.

    Attributes:
        vision: image features of recent frames (a click on the frame being viewed reuses them).
        conditioning: per (object id, position), the fingerprint of the prompt and the model's output for
            that conditioning frame (mask logits, object pointer, memory features: about 2 MB each at
            hiera-tiny size). Entries whose prompt changed or disappeared are dropped on the next call.
    """

    vision: VisionFeatureCache = field(default_factory=VisionFeatureCache)
    conditioning: dict[tuple[int, int], tuple[str, dict]] = field(default_factory=dict)

    def retain(self, keys: set[tuple[int, int]]) -> None:
        """Keep only the conditioning outputs of these (object id, position) prompts."""
        for key in [key for key in self.conditioning if key not in keys]:
            del self.conditioning[key]


def fingerprint(prompt: ObjectPrompt) -> str:
    """A digest of everything the model reads from a prompt (the object id is not part of it)."""
    digest = hashlib.sha1()
    digest.update(repr((prompt.box, [tuple(p) for p in prompt.points], list(prompt.labels))).encode())
    if prompt.mask is not None:
        mask = np.asarray(prompt.mask, dtype=bool)
        digest.update(repr(mask.shape).encode())
        digest.update(np.packbits(mask).tobytes())
    return digest.hexdigest()


class _LazyPixels(Mapping):
    """``processed_frames`` for a transformers session: the video's length, frames preprocessed on access."""

    def __init__(self, frames: FrameSequence, segmenter: Any):
        self.frames = frames
        self.segmenter = segmenter

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(range(len(self.frames)))

    def __getitem__(self, position: int):
        if not 0 <= position < len(self.frames):
            raise KeyError(position)
        return self.segmenter.preprocess(self.frames[position])[0]  # (3, S, S)


def propagate_object(
    segmenter: Any,
    frames: FrameSequence,
    obj_id: int,
    prompts: Mapping[int, ObjectPrompt],
    sweeps: Sequence[Sweep],
    memory: PromptMemory | None = None,
) -> Iterator[TrackedMask]:
    """Track ``obj_id`` through ``sweeps`` with every prompt in ``prompts`` as a conditioning frame.

    A sweep's frames that hold a prompt yield their conditioning output; the others are tracked. Sweeps run
    in order in one memory state (a backward sweep after a forward one reads the forward frames next to its
    start, as transformers' forward-then-``reverse=True`` loop does).
    """
    import torch

    if not prompts:
        raise ValueError(f"object {obj_id} has no prompt; SAM 2 needs at least one conditioning frame")
    memory = memory if memory is not None else PromptMemory()
    model, processor = segmenter.model, segmenter.processor
    height, width = frames[0].shape[:2]
    session = processor.init_video_session(
        inference_device=segmenter.device, dtype=segmenter.dtype, max_vision_features_cache_size=1
    )
    session.video_height, session.video_width = height, width
    session.processed_frames = _LazyPixels(frames, segmenter)
    session.cache = memory.vision
    obj_idx = session.obj_id_to_idx(obj_id)
    per_obj = session.output_dict_per_obj[obj_idx]
    window = max(model.config.num_maskmem, model.config.max_object_pointers_in_encoder) + 1
    anchors = [sweep.first for sweep in sweeps]

    @torch.inference_mode()
    def emit(position: int, output: Any) -> TrackedMask:
        logits = processor.post_process_masks(
            [output.pred_masks.float()], original_sizes=[[height, width]], binarize=False
        )[0]  # (1, 1, H, W)
        mask = (logits[0, 0] > segmenter.config.mask_threshold).cpu().numpy()  # (H, W)
        score = float(torch.sigmoid(output.object_score_logits.float().reshape(-1)[0]))
        return TrackedMask(position, mask, score)

    def prune(current: int, reverse: bool) -> None:
        """Drop tracked outputs farther than the memory window behind ``current`` (and not next to an anchor)."""
        outputs = per_obj["non_cond_frame_outputs"]
        for index in list(outputs):
            behind = index - current if reverse else current - index
            if behind > window and not any(abs(index - anchor) <= window for anchor in anchors):
                del outputs[index]
                session.frames_tracked_per_obj[obj_idx].pop(index, None)

    cache = segmenter.new_memory_cache()

    def run(**inputs: Any) -> Any:
        """One model call in inference mode (per call, not across the generator's yields), fast paths on."""
        with torch.inference_mode(), segmenter.fast_paths(cache):
            return model(**inputs)

    # Conditioning frames, in ascending order: each computed from its own prompt (an initial conditioning
    # frame: no memory is read), or taken from the memory when the same prompt was computed before.
    # A sweep over prompted frames only (a click on the frame in view) needs only their own outputs: a
    # conditioning frame is computed from its prompt alone. Anything else reads every one of them.
    wanted = {position for sweep in sweeps for position in sweep.positions()}
    needed = sorted(wanted) if wanted <= set(prompts) else sorted(prompts)
    current_keys = {(obj_id, position) for position in prompts}
    for position in needed:
        prompt = prompts[position]
        key, digest = (obj_id, position), fingerprint(prompt)
        cached = memory.conditioning.get(key)
        if cached is not None and cached[0] == digest:
            per_obj["cond_frame_outputs"][position] = cached[1]
            continue
        add_prompt = ObjectPrompt(obj_id, box=prompt.box, points=prompt.points, labels=prompt.labels, mask=prompt.mask)
        add_prompts(processor, session, position, [add_prompt], (height, width))
        run(inference_session=session, frame_idx=position)
        output = per_obj["cond_frame_outputs"][position]
        output.pop("high_res_masks", None)  # only the memory encoder read it, and it has run: 4 MB at 1024 px
        memory.conditioning[key] = (digest, output)
    for key in [k for k in memory.conditioning if k[0] == obj_id and k not in current_keys]:
        del memory.conditioning[key]

    for sweep in sweeps:
        for position in sweep.positions():
            output = run(inference_session=session, frame_idx=position, reverse=sweep.reverse)
            yield emit(position, output)
            prune(position, sweep.reverse)


def warm(segmenter: Any, frames: FrameSequence, position: int, memory: PromptMemory) -> None:
    """Compute frame ``position``'s image features into ``memory.vision`` unless they are there already."""
    import torch

    if position in memory.vision:
        return
    pixels = segmenter.preprocess(frames[position])  # (1, 3, S, S)
    with torch.inference_mode(), segmenter.fast_paths(segmenter.new_memory_cache()):
        output = segmenter.model.get_image_features(pixels, return_dict=True)
    memory.vision.cache_vision_features(
        position, {"vision_feats": output.fpn_hidden_states, "vision_pos_embeds": output.fpn_position_encoding}
    )
