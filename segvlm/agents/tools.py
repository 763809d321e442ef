"""The four tools (segment_image, track_video, count_objects, describe_region) and their factories.

Each tool returns ``(content, artifact)`` (``response_format="content_and_artifact"``): compact JSON text for
the model and a :class:`ToolArtifact` with the files and the full result for the program. Every failure
becomes a ``ToolException`` whose message names the problem and the fix, returned to the model as an error
``ToolMessage`` (``handle_tool_error=True``) instead of breaking the agent loop; bad arguments are reported
the same way by the schema validation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ValidationError

from segvlm.agents import describe as regions
from segvlm.agents.config import AgentToolsConfig
from segvlm.agents.runtime import ToolRuntime
from segvlm.agents.schemas import CountObjectsArgs, DescribeRegionArgs, SegmentImageArgs, TrackVideoArgs
from segvlm.agents.summaries import (
    DescribeSummary,
    ImageSegmentSummary,
    RegionSummary,
    ToolArtifact,
    VideoTrackSummary,
    count_summary,
    object_summaries,
    random_weights_warning,
    round_box,
    to_json,
    track_summaries,
)
from segvlm.errors import SegvlmError
from segvlm.video import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

ToolOutput = tuple[str, ToolArtifact]

SEGMENT_IMAGE = (
    "Find and segment objects in one image from a text description. Returns JSON with one entry per object "
    "found: id, label (the phrase it matched), score (0-1 confidence), box [x0, y0, x1, y1] in pixels and "
    "area_share (fraction of the image the object covers), plus the paths of an overlay picture and a COCO "
    "masks file. An empty objects list means nothing matched. Use the ids with describe_region."
)
TRACK_VIDEO = (
    "Find objects described in text in a video and follow each one through the frames. Returns JSON with one "
    "entry per tracked object: id, label, score, first_frame and last_frame (source frame indices), "
    "frames_present, present_ranges ([first, last] runs where it is visible) and mean_box [x0, y0, x1, y1], "
    "plus the paths of an overlay video and a COCO masks file. Long videos cost time: use max_frames or "
    "stride to look at fewer frames; notes say when the video was cut short."
)
COUNT_OBJECTS = (
    "Count the objects of each phrase in an image or a video. Returns JSON with counts (distinct objects per "
    "phrase; for a video, distinct tracked objects) and total; for a video also max_in_frame (most seen at "
    "once) and per_frame (counts at the first frame and wherever they change). Use it for 'how many' questions."
)
DESCRIBE_REGION = (
    "Ask a vision-language model a question about one region of an image or video frame, for example 'what "
    "is this person holding?'. Name the region by track_id (an object id from an earlier segment_image, "
    "track_video or count_objects call on the same path) or by box [x0, y0, x1, y1] in pixels. Returns JSON "
    "with the answer, the frame used and the region's box."
)


# -- error handling -------------------------------------------------------------------------------------------
def _validation_message(tool_name: str) -> Callable[[ValidationError], str]:
    """Turn pydantic's report on bad arguments into one line the model can act on."""

    def message(error: ValidationError) -> str:
        parts = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ())) or "arguments"
            text = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            given = item.get("input")
            if item.get("type") != "missing" and where != "arguments" and not isinstance(given, dict):
                text += f" (got {given!r})"
            parts.append(f"{where}: {text}")
        return f"invalid arguments for {tool_name}: " + "; ".join(parts) + ". Fix them and call the tool again."

    return message


def _as_tool_errors(tool_name: str, func: Callable[..., ToolOutput]) -> Callable[..., ToolOutput]:
    """Run ``func``; any failure becomes a ToolException with a readable message (never a crash)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> ToolOutput:
        try:
            return func(*args, **kwargs)
        except ToolException:
            raise
        except (SegvlmError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
            raise ToolException(f"{tool_name} failed: {error}") from error
        except KeyError as error:
            raise ToolException(f"{tool_name} failed: {error.args[0] if error.args else error}") from error
        except Exception as error:
            logger.exception("%s failed", tool_name)
            raise ToolException(
                f"{tool_name} failed with an internal error ({type(error).__name__}: {error}); the call cannot be "
                "completed as given, try other arguments or another tool"
            ) from error

    return wrapper


# -- helpers --------------------------------------------------------------------------------------------------
def _write_mask(path: Path, mask: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def _write_image_overlay(path: Path, image_path: Path, frame: Any) -> Path:
    from PIL import Image

    from segvlm.export.overlay import MaskAnnotator
    from segvlm.video import read_frames

    image = next(iter(read_frames(str(image_path)))).image
    Image.fromarray(MaskAnnotator().annotate(image, frame)).save(path)
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:30]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


# -- the tools ------------------------------------------------------------------------------------------------
class _Tools:
    """The tool functions, bound to one runtime."""

    def __init__(self, runtime: ToolRuntime):
        self.runtime = runtime
        self.guard = runtime.guard

    def segment_image(self, image_path: str, query: str) -> ToolOutput:
        path = self.guard.existing(image_path, "image (jpg, png...)")
        if not _is_image(path):
            raise ToolException(
                f"segment_image takes one image file (jpg, png, webp...), but {image_path!r} is not one; "
                "for a video or a folder of frames use track_video"
            )
        result = self.runtime.run_pipeline(query, path, max_frames=1).result
        frame = result[0]
        out = self.guard.new_output_folder("segment_image", path)
        masks = [_write_mask(out / f"mask_{obj.track_id}_{_slug(obj.label)}.png", obj.mask) for obj in frame]
        overlay = _write_image_overlay(out / "overlay.png", path, frame)
        coco = _save_coco(result, out)
        show = self.guard.display
        summary = ImageSegmentSummary(
            image=show(path),
            width=frame.width,
            height=frame.height,
            query=result.query,
            phrases=result.phrases,
            objects=object_summaries(frame),
            overlay=show(overlay),
            coco_file=show(coco),
            mask_files=[show(m) for m in masks],
            warning=random_weights_warning(result),
        )
        return to_json(summary), ToolArtifact(out, masks, overlay, coco, result)

    def track_video(self, video_path: str, query: str, max_frames: int | None = None, stride: int = 1) -> ToolOutput:
        path = self.guard.existing(video_path, "video or folder of frames")
        if _is_image(path):
            raise ToolException(f"{video_path!r} is a single image; use segment_image for images")
        run = self.runtime.run_pipeline(query, path, max_frames=max_frames, stride=stride)
        result = run.result
        if not len(result):
            raise ToolException(f"no frames could be read from {video_path!r}; check that it is a video")
        out = self.guard.new_output_folder("track_video", path)
        coco = _save_coco(result, out)
        overlay = Path(result.save_overlay(str(out / "overlay.mp4")))
        show = self.guard.display
        summary = VideoTrackSummary(
            video=show(path),
            width=result.info.width,
            height=result.info.height,
            fps=round(result.info.fps, 3) if result.info.fps else None,
            stride=result.info.stride,
            frames_processed=len(result),
            frame_range=[result[0].frame_index, result[-1].frame_index],
            query=result.query,
            phrases=result.phrases,
            tracks=track_summaries(result),
            overlay_video=show(overlay),
            coco_file=show(coco),
            notes=run.notes,
            warning=random_weights_warning(result),
        )
        return to_json(summary), ToolArtifact(out, [], overlay, coco, result)

    def count_objects(self, path: str, query: str, max_frames: int | None = None, stride: int = 1) -> ToolOutput:
        resolved = self.guard.existing(path)
        kind = "image" if _is_image(resolved) else "video"
        if kind == "image":
            run = self.runtime.run_pipeline(query, resolved, max_frames=1)
        else:
            run = self.runtime.run_pipeline(query, resolved, max_frames=max_frames, stride=stride)
        out = self.guard.new_output_folder("count_objects", resolved)
        coco = _save_coco(run.result, out)
        summary = count_summary(run.result, self.guard.display(resolved), kind)
        summary.coco_file = self.guard.display(coco)
        summary.notes = run.notes
        summary.warning = random_weights_warning(run.result)
        return to_json(summary), ToolArtifact(out, [], None, coco, run.result)

    def describe_region(
        self,
        path: str,
        question: str,
        track_id: int | None = None,
        box: list[float] | None = None,
        frame: int | None = None,
    ) -> ToolOutput:
        resolved = self.guard.existing(path)
        shown = self.guard.display(resolved)
        vlm = self.runtime.vlm  # fails first, with its own message, when no VLM is configured
        if _is_image(resolved) and frame not in (None, 0):
            raise ToolException(f"{path!r} is a single image; leave frame out (or pass 0), got frame={frame}")
        if track_id is not None:
            region = regions.track_region(self.runtime.recall(resolved), resolved, shown, track_id, frame)
        elif box is not None:
            region = regions.box_region(resolved, shown, box, frame)
        else:
            raise ToolException("give track_id (an object id from an earlier call) or box [x0, y0, x1, y1]")
        with self.runtime.lock:
            answer = regions.ask(vlm, region, question, self.runtime.config.max_new_tokens)
        out = self.guard.new_output_folder("describe_region", resolved)
        mask = _write_mask(out / f"region_frame{region.frame}.png", region.mask)
        summary = DescribeSummary(
            path=shown,
            question=question,
            region=RegionSummary(region.frame, round_box(region.box), region.track_id, region.label),
            answer=answer,
            mask_file=self.guard.display(mask),
        )
        return to_json(summary), ToolArtifact(out, [mask], None, None, None)


def _save_coco(result: Any, folder: Path) -> Path:
    from segvlm.export.coco import save

    return save(result, folder)


_SPECS: list[tuple[str, str, type[BaseModel]]] = [
    ("segment_image", SEGMENT_IMAGE, SegmentImageArgs),
    ("track_video", TRACK_VIDEO, TrackVideoArgs),
    ("count_objects", COUNT_OBJECTS, CountObjectsArgs),
    ("describe_region", DESCRIBE_REGION, DescribeRegionArgs),
]


def get_tools(config: AgentToolsConfig | None = None) -> list[BaseTool]:
    """The segvlm tools for a langchain-core agent: segment_image, track_video, count_objects, describe_region.

    All of them share one runtime: one Pipeline (built and loaded on the first call, then reused), the
    folders they may use, and the per-call limits of ``config`` (default: the default preset, the working
    directory as the only root). Nothing heavy is loaded here.
    """
    runtime = ToolRuntime(config or AgentToolsConfig())
    bound = _Tools(runtime)
    return [
        StructuredTool.from_function(
            func=_as_tool_errors(name, getattr(bound, name)),
            name=name,
            description=description,
            args_schema=schema,
            response_format="content_and_artifact",
            handle_tool_error=True,
            handle_validation_error=_validation_message(name),
        )
        for name, description, schema in _SPECS
    ]


def get_openai_tools(tools: AgentToolsConfig | Sequence[BaseTool] | None = None) -> list[dict[str, Any]]:
    """The tools as OpenAI-style function schemas (``{"type": "function", "function": {...}}``).

    Pass the tools you will execute the calls with (``get_tools(config)``), or a config (tools are built from
    it). Run a call with ``{t.name: t for t in tools}[name].invoke(json.loads(arguments))``; it returns the
    JSON text (or the error text) to send back.
    """
    from langchain_core.utils.function_calling import convert_to_openai_tool

    if tools is None or isinstance(tools, AgentToolsConfig):
        tools = get_tools(tools)
    return [convert_to_openai_tool(tool) for tool in tools]
