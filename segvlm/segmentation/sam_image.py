"""SAM (v1, ``facebook/sam-vit-base``): the single-image baseline that SAM 2 is compared against.

SAM has no memory. On video this backend re-prompts every frame with each object's box from the previous
frame (box propagation), which is exactly what a memory-equipped model improves on; on a single image it is
plain promptable segmentation. It implements the same :class:`VideoSegmenter` interface, so the pipeline,
exports and corrections work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segvlm.backend import ModelFamily
from segvlm.config import SegmenterConfig
from segvlm.devices import resolve_dtype
from segvlm.loading import load_model
from segvlm.masks import RLE
from segvlm.segmentation.base import FrameMasks, ObjectPrompt, SegmenterSession, VideoSegmenter


class SamImageSession(SegmenterSession):
    """Per-frame SAM with each object's last box as its next prompt."""

    def __init__(self, segmenter: SamImageSegmenter, height: int, width: int):
        self.segmenter = segmenter
        self.height, self.width = height, width
        self.prompts: dict[int, ObjectPrompt] = {}

    @property
    def obj_ids(self) -> list[int]:
        return list(self.prompts)

    def step(self, image: np.ndarray, prompts: Sequence[ObjectPrompt] = (), pixel_values=None) -> FrameMasks:
        for prompt in prompts:
            if prompt.mask is not None:  # SAM takes boxes and points; a mask becomes its box
                prompt = ObjectPrompt(prompt.obj_id, box=RLE.encode(prompt.mask).bbox_xyxy())
            self.prompts[prompt.obj_id] = prompt
        if not self.prompts:
            return FrameMasks.empty(self.height, self.width)
        ids = list(self.prompts)
        masks, scores = self.segmenter.segment(image, [self.prompts[i] for i in ids])
        for obj_id, mask in zip(ids, masks):
            if mask.any():  # the next frame is prompted with this frame's box; a lost object keeps its last box
                self.prompts[obj_id] = ObjectPrompt(obj_id, box=RLE.encode(mask).bbox_xyxy())
        return FrameMasks(ids, masks, scores)

    def remove_objects(self, obj_ids: Sequence[int]) -> None:
        for obj_id in obj_ids:
            self.prompts.pop(obj_id, None)

    def state_size(self) -> int:
        return len(self.prompts)


class SamImageSegmenter(VideoSegmenter):
    """SAM v1 through transformers (``SamModel``); hub ids or local folders."""

    models = ModelFamily("facebook/sam-vit-base", "tiny-random:sam", frozenset({"sam"}), frozenset({"sam"}))

    def __init__(self, model, processor, config: SegmenterConfig, device: str = "cpu", dtype=None):
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_config(cls, config: SegmenterConfig, device: str = "cpu") -> SamImageSegmenter:
        from transformers import SamModel, SamProcessor

        cls.options_from(config)  # an unknown option is refused before the weights load
        dtype = resolve_dtype(config.dtype, device)
        loaded = load_model(SamModel, SamProcessor, config.model, device, dtype)
        segmenter = cls(loaded.model, loaded.processor, config, device, dtype)
        segmenter.weights = loaded.weights
        return segmenter

    def start(self, height: int, width: int) -> SamImageSession:
        return SamImageSession(self, height, width)

    def segment(self, image: np.ndarray, prompts: Sequence[ObjectPrompt]) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) masks and (N,) predicted IoU scores for one prompt per object, one at a time.

        The image is preprocessed and embedded once; each object's prompt is scaled to the resized image as
        SAM's processor does (x by new_w / W, y by new_h / H) and decoded separately, because prompts may mix
        boxes and clicks.
        """
        import torch

        from segvlm.segmentation.pixels import writable

        height, width = image.shape[:2]
        inputs = self.processor(images=writable(image), return_tensors="pt")
        new_h, new_w = (int(v) for v in inputs["reshaped_input_sizes"][0])
        scale = torch.tensor([new_w / width, new_h / height], dtype=torch.float64)  # (2,) x, y
        masks, scores = [], []
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs.pixel_values.to(self.device, self.dtype))
            for prompt in prompts:
                kwargs = {}
                if prompt.box is not None:
                    box = torch.tensor(prompt.box, dtype=torch.float64).reshape(2, 2) * scale  # (2, 2) corners
                    kwargs["input_boxes"] = box.reshape(1, 1, 4).float().to(self.device)  # (image, box, 4)
                if prompt.points:
                    points = torch.tensor(prompt.points, dtype=torch.float64) * scale  # (P, 2)
                    kwargs["input_points"] = points[None, None].float().to(self.device)  # (image, 1, P, 2)
                    kwargs["input_labels"] = torch.tensor([[prompt.labels]], device=self.device)  # (image, 1, P)
                output = self.model(image_embeddings=embeddings, multimask_output=False, **kwargs)
                mask = self.processor.post_process_masks(
                    output.pred_masks.float().cpu(),
                    inputs["original_sizes"],
                    inputs["reshaped_input_sizes"],
                    mask_threshold=self.config.mask_threshold,
                )[0]  # (1, 1, H, W) bool
                masks.append(mask[0, 0].numpy().astype(bool))
                scores.append(float(output.iou_scores.float().reshape(-1)[0]))
        return np.stack(masks).reshape(-1, height, width), np.asarray(scores, dtype=np.float32)
