"""SAM 2 / SAM 2.1 and EdgeTAM video segmentation through transformers' streaming video API.

The session follows transformers' documented streaming loop (``init_video_session`` without a video, then
``model(inference_session=..., frame=pixel_values)`` per frame) and adds what a long video needs:

* bounded state: after each frame, outputs that the memory can no longer reach (older than
  ``max(num_maskmem, max_object_pointers_in_encoder)`` frames) and stored pixel tensors are dropped, so
  memory does not grow with video length; the masks are unchanged because the model never reads them;
* objects can be added on any frame and removed at any time (ended tracks stop costing compute).

Session frame indices are positions in the processed stream (0, 1, 2, ...), whatever the stride.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segvlm.backend import ModelFamily
from segvlm.config import SegmenterConfig
from segvlm.devices import resolve_dtype
from segvlm.loading import load_model
from segvlm.segmentation.base import FrameMasks, ObjectPrompt, SegmenterSession, VideoSegmenter


def add_prompts(processor, session, position: int, prompts: Sequence[ObjectPrompt], size: tuple[int, int]) -> None:
    """Add box/click/mask prompts on frame ``position`` to a transformers SAM 2 inference session."""
    for prompt in prompts:
        if prompt.mask is not None:
            processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=position, obj_ids=[prompt.obj_id], input_masks=[prompt.mask]
            )
            continue
        kwargs = {}
        if prompt.box is not None:
            kwargs["input_boxes"] = [[list(map(float, prompt.box))]]  # (image, object, 4)
        if prompt.points:
            kwargs["input_points"] = [[[list(map(float, p)) for p in prompt.points]]]  # (image, object, point, 2)
            kwargs["input_labels"] = [[list(map(int, prompt.labels))]]  # (image, object, point)
        processor.add_inputs_to_inference_session(
            inference_session=session, frame_idx=position, obj_ids=[prompt.obj_id], original_size=size, **kwargs
        )
    # Each call above replaces the session's "objects with new inputs"; all of this frame's prompts count.
    session.obj_with_new_inputs = list(dict.fromkeys(p.obj_id for p in prompts))


class Sam2Session(SegmenterSession):
    """A streaming SAM 2 session with pruned state. Create it with :meth:`Sam2VideoSegmenter.start`."""

    def __init__(self, segmenter: Sam2VideoSegmenter, height: int, width: int):
        self.segmenter = segmenter
        self.height, self.width = height, width
        self.position = -1  # index of the last processed frame in the session
        self.last_logits = None  # (N, 1, H, W) float mask logits of the last step, kept for diagnostics
        self.session = segmenter.processor.init_video_session(
            inference_device=segmenter.device, dtype=segmenter.dtype, max_vision_features_cache_size=1
        )
        self.session.video_height, self.session.video_width = height, width
        self.memory_cache = segmenter.new_memory_cache()  # cached memory keys (fast_sam2), or None
        config = segmenter.model.config
        self.window = max(config.num_maskmem, config.max_object_pointers_in_encoder) + 1

    @property
    def obj_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def _add_prompts(self, position: int, prompts: Sequence[ObjectPrompt]) -> None:
        add_prompts(self.segmenter.processor, self.session, position, prompts, (self.height, self.width))

    def step(self, image: np.ndarray, prompts: Sequence[ObjectPrompt] = (), pixel_values=None) -> FrameMasks:
        import torch

        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame of size {image.shape[:2]} in a session for {(self.height, self.width)}; all frames of a "
                "video must have the same size"
            )
        self.position += 1
        if prompts:
            self._add_prompts(self.position, prompts)
        if not self.session.obj_ids:
            return FrameMasks.empty(self.height, self.width)
        if pixel_values is None:
            pixel_values = self.segmenter.preprocess(image)
        with torch.inference_mode(), self.segmenter.fast_paths(self.memory_cache):
            output = self.segmenter.model(inference_session=self.session, frame=pixel_values, frame_idx=self.position)
            logits = self.segmenter.processor.post_process_masks(
                [output.pred_masks.float()], original_sizes=[[self.height, self.width]], binarize=False
            )[0]  # (N, 1, H, W)
            self.last_logits = logits
            masks = (logits[:, 0] > self.segmenter.config.mask_threshold).cpu().numpy()  # (N, H, W)
            scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).cpu().numpy()  # (N,)
        self._prune()
        return FrameMasks(list(output.object_ids), masks, scores)

    def _prune(self) -> None:
        """Drop state the memory can no longer reach: old non-conditioning outputs and stored pixels."""
        oldest = self.position - self.window
        session = self.session
        for outputs in session.output_dict_per_obj.values():
            stale = [index for index in outputs["non_cond_frame_outputs"] if index < oldest]
            for index in stale:
                del outputs["non_cond_frame_outputs"][index]
        for tracked in session.frames_tracked_per_obj.values():
            for index in [index for index in tracked if index < oldest]:
                del tracked[index]
        if session.processed_frames:
            for index in [index for index in session.processed_frames if index < self.position]:
                del session.processed_frames[index]

    def state_size(self) -> int:
        session = self.session
        outputs = sum(
            len(per_obj["cond_frame_outputs"]) + len(per_obj["non_cond_frame_outputs"])
            for per_obj in session.output_dict_per_obj.values()
        )
        tracked = sum(len(t) for t in session.frames_tracked_per_obj.values())
        return outputs + tracked + len(session.processed_frames or {})

    def remove_objects(self, obj_ids: Sequence[int]) -> None:
        """Remove objects by re-indexing the session's per-object tables (transformers has no removal call)."""
        session = self.session
        drop = set(obj_ids) & set(session.obj_ids)
        if not drop:
            return
        keep = [obj_id for obj_id in session.obj_ids if obj_id not in drop]
        old_index = {obj_id: session._obj_id_to_idx[obj_id] for obj_id in keep}
        for table_name in (
            "point_inputs_per_obj",
            "mask_inputs_per_obj",
            "output_dict_per_obj",
            "frames_tracked_per_obj",
        ):
            table = getattr(session, table_name)
            setattr(session, table_name, {new: table[old_index[obj_id]] for new, obj_id in enumerate(keep)})
        session._obj_id_to_idx = OrderedDict((obj_id, new) for new, obj_id in enumerate(keep))
        session._obj_idx_to_id = OrderedDict((new, obj_id) for new, obj_id in enumerate(keep))
        session.obj_ids = keep
        session.obj_with_new_inputs = [obj_id for obj_id in session.obj_with_new_inputs if obj_id not in drop]


@dataclass(frozen=True)
class Sam2Options:
    """SAM 2's own settings (``segmenter.options``).

    Attributes:
        fast: the fast paths of :mod:`segvlm.segmentation.fast_sam2` (on by default): exact savings in the image
            encoder in every dtype, and in bf16/fp16 a memory attention with cached keys, values projected after
            the attention and a compiled chunked CPU kernel (float32 keeps transformers' bits). ``fast: false``
            runs transformers' code unchanged, for comparison.
    """

    fast: bool = True


class Sam2VideoSegmenter(VideoSegmenter):
    """SAM 2 / 2.1 (``facebook/sam2.1-hiera-tiny``, ``-small``, ``-base-plus``, ``-large``) via transformers."""

    Options = Sam2Options
    models = ModelFamily(
        "facebook/sam2.1-hiera-tiny",
        "tiny-random:sam2",
        frozenset({"sam2", "sam2.1-hiera-tiny-arch"}),
        frozenset({"sam2", "sam2_video"}),
    )
    model_class_name = "Sam2VideoModel"

    def __init__(
        self, model, processor, config: SegmenterConfig, device: str = "cpu", dtype=None, fast: bool | None = None
    ):
        """``fast``: the fast paths (:class:`Sam2Options`, on by default); None takes it from ``config.options``."""
        import torch

        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.dtype = dtype or torch.float32
        if fast is None:
            fast = getattr(self.options_from(config), "fast", True)
        self.fast = bool(fast)

    @classmethod
    def from_config(cls, config: SegmenterConfig, device: str = "cpu", fast: bool | None = None) -> Sam2VideoSegmenter:
        """The segmenter for ``config``; ``fast``, when given, overrides ``config.options``' ``fast``."""
        import transformers
        from transformers import Sam2VideoProcessor

        cls.options_from(config)  # an unknown option is refused before the weights load
        dtype = resolve_dtype(config.dtype, device)
        model_class = getattr(transformers, cls.model_class_name)
        loaded = load_model(model_class, Sam2VideoProcessor, config.model, device, dtype)
        segmenter = cls(loaded.model, loaded.processor, config, device, dtype, fast=fast)
        segmenter.weights = loaded.weights
        return segmenter

    def new_memory_cache(self):
        """A :class:`~segvlm.segmentation.fast_sam2.MemoryCache` for one stream of frames, or None when not fast."""
        if not self.fast:
            return None
        from segvlm.segmentation.fast_sam2 import MemoryCache

        return MemoryCache()

    def fast_paths(self, cache=None):
        """The context one model call runs in: the fast paths through ``cache`` when given, else nothing."""
        return cache.active(self.model, self.dtype) if cache is not None else contextlib.nullcontext()

    def preprocess(self, image: np.ndarray):
        """(1, 3, S, S) pixel values in the session dtype, on the model's device; runs on the prefetch thread."""
        from segvlm.segmentation.pixels import pixel_values

        return pixel_values(self.processor, image, self.device, self.dtype, self.pixel_layout())

    def pixel_layout(self):
        """The memory format the image encoder reads fastest: as given (SAM 2's Hiera starts with a patch
        embedding and works on token grids)."""
        import torch

        return torch.preserve_format

    def start(self, height: int, width: int) -> Sam2Session:
        return Sam2Session(self, height, width)

    def new_memory(self):
        from segvlm.segmentation.sam2_memory import PromptMemory

        return PromptMemory()

    def warm(self, frames, position, memory=None):
        """Image features of frame ``position`` into ``memory`` (a click there then skips the image encoder)."""
        from segvlm.segmentation.sam2_memory import warm

        if memory is not None:
            warm(self, frames, position, memory)

    def propagate_object(self, frames, obj_id, prompts, sweeps, memory=None):
        """Every conditioning frame of the object in memory at once, as SAM 2's interactive predictor does."""
        from segvlm.segmentation.sam2_memory import propagate_object

        return propagate_object(self, frames, obj_id, prompts, sweeps, memory)


class EdgeTamVideoSegmenter(Sam2VideoSegmenter):
    """EdgeTAM (``yonigozlan/EdgeTAM-hf``): SAM 2's design with a mobile backbone and a compact memory."""

    Options = Sam2Options  # fast paths: the image encoder's (folded convolutions) and the memory attention's
    models = ModelFamily(
        "yonigozlan/EdgeTAM-hf", "tiny-random:edgetam", frozenset({"edgetam"}), frozenset({"edgetam", "edgetam_video"})
    )
    model_class_name = "EdgeTamVideoModel"

    def pixel_layout(self):
        """Channels-last on reduced-precision CPU frames with the fast paths, where the RepViT encoder runs as a
        folded channels-last copy: the layout change then rides on the cast to the session dtype instead of
        costing a pass of its own over the 1024 x 1024 input."""
        import torch

        from segvlm.segmentation.cpu_attention import reduced

        if self.fast and reduced(self.dtype) and torch.device(self.device).type == "cpu":
            return torch.channels_last
        return torch.preserve_format
