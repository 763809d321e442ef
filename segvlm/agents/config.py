"""Settings of the agent tools: which pipeline, which folders they may touch, and per-call limits.

Kept free of heavy imports (no torch, no langchain) so that building a configuration is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segvlm.config import PipelineConfig
    from segvlm.tracking import Pipeline


@dataclass
class AgentToolsConfig:
    """What :func:`segvlm.agents.get_tools` builds its tools from.

    Attributes:
        preset: pipeline preset name or YAML path (``"tiny-random"``, ``"cpu-fast"``...); None is the default
            preset. Ignored when ``pipeline_config`` or ``pipeline`` is given.
        pipeline_config: a full :class:`segvlm.PipelineConfig`; wins over ``preset``.
        pipeline: an already built :class:`segvlm.Pipeline` (custom backends, or models shared with other
            code); wins over both. Otherwise one Pipeline is built on the first tool call and shared by all
            tools of one :func:`get_tools` call.
        device: device override for the pipeline (``"cpu"``, ``"cuda"``); None keeps the preset's.
        roots: the only folders the tools may read from and write to. Relative paths given by the agent are
            resolved against the first root. Default: the current working directory.
        output_dir: where results (overlays, COCO files, masks) are written, one sub-folder per call; must
            lie inside a root. Default: ``<first root>/segvlm_outputs``.
        max_frames: most frames one call may process (after stride); a larger request is capped and the
            result says so.
        time_limit_s: a call that takes longer than this (model loading excluded) stops with a tool error
            telling the agent to ask for fewer frames; None for no limit.
        vlm: what ``describe_region`` asks; an object with ``generate(image, regions, prompt,
            max_new_tokens=...) -> list[str]`` (a :class:`segvlm.vlm.MaskAwareVLM` or anything shaped like
            it, see :class:`segvlm.agents.describe.RegionVLM`), or a model id / folder that is loaded with
            ``MaskAwareVLM.from_pretrained`` on first use. None: ``describe_region`` answers with a tool error.
        vlm_mask_tokenizer: the mask tokenizer design used when ``vlm`` is a model id (``"set_of_mark"``,
            ``"text"``, ``"pooled"``, ``"encoder"``).
        max_new_tokens: length limit of a ``describe_region`` answer.
    """

    preset: str | None = None
    pipeline_config: PipelineConfig | None = None
    pipeline: Pipeline | None = None
    device: str | None = None
    roots: list[str | Path] = field(default_factory=lambda: [Path.cwd()])
    output_dir: str | Path | None = None
    max_frames: int = 100
    time_limit_s: float | None = 300.0
    vlm: Any = None
    vlm_mask_tokenizer: str = "set_of_mark"
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.roots, (str, Path)):
            self.roots = [self.roots]
        if not self.roots:
            raise ValueError("AgentToolsConfig.roots is empty; give at least one folder the tools may use")
        if self.max_frames < 1:
            raise ValueError(f"AgentToolsConfig.max_frames must be >= 1, got {self.max_frames}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ValueError(f"AgentToolsConfig.time_limit_s must be > 0 or None, got {self.time_limit_s}")
