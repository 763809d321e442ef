"""The one place that knows segvlm's export formats: names, descriptions, writers and converters.

A format is an :class:`ExportFormat`: a ``write(result, out_dir, video=None) -> [paths]`` for formats that
produce files, or a ``convert(result) -> value`` for in-memory ones (``supervision``). Either may be given as
a ``"module:function"`` string, imported when the format first runs. The CLI, the result type and plugins
all go through :func:`export`, :func:`get_format` and :func:`list_formats`, so adding a format is one
:func:`register` call, or for a built-in one, one line in :func:`_builtin_formats` naming its module's writer
(see docs/extending.md).

The built-in formats register themselves on the first call of :func:`get_format`, :func:`list_formats`,
:func:`export` or :func:`register`; their writers import their modules (numpy, PIL, PyAV...) only when they
run, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvlm.errors import SegvlmError

if TYPE_CHECKING:
    from segvlm.types import VideoSegmentation


class UnknownFormatError(SegvlmError):
    """An export format name that is not registered."""


class ExportError(SegvlmError):
    """An export cannot run with what it was given (no output folder, no frames, ids that do not fit...)."""


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the name users pass (``"coco"``, ``"png"``...), lower case.
        description: one line, shown in CLI help.
        write: ``write(result, out_dir: Path, video=None) -> list[Path]`` writes the files into an existing
            folder and returns their paths; None for formats that only convert. A ``"module:function"``
            string names it without importing the module until the format runs.
        convert: ``convert(result) -> value`` for in-memory formats (``supervision``: ``list[sv.Detections]``),
            or its ``"module:function"`` string.
        needs_frames: True when ``write`` reads the video's pixels (it then always gets a ``video``).
    """

    name: str
    description: str
    write: Callable[..., list[Path]] | str | None
    convert: Callable[..., Any] | str | None = None
    needs_frames: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower():
            raise ValueError(f"format names are non-empty lower case without spaces around them, got {self.name!r}")
        if self.write is None and self.convert is None:
            raise ValueError(f"format {self.name!r} needs a write or a convert function (both are None)")

    @property
    def writes_files(self) -> bool:
        return self.write is not None

    def writer(self) -> Callable[..., list[Path]]:
        """The ``write`` function, imported when it was given as ``"module:function"``."""
        return _function(self.write, self.name)

    def converter(self) -> Callable[..., Any]:
        """The ``convert`` function, imported when it was given as ``"module:function"``."""
        return _function(self.convert, self.name)


def _function(target: Callable[..., Any] | str | None, name: str) -> Callable[..., Any]:
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ExportError(f"the {name!r} export format names {target!r}, which cannot be imported: {error}") from None


_FORMATS: dict[str, ExportFormat] = {}
_builtins_loaded = False


def source_stem(source: str) -> str:
    """The file-name stem exporters use for a result's frames: the source's stem, ``"frames"`` for in-memory input."""
    if not source or source.startswith("<"):
        return "frames"
    return Path(source).stem or "frames"


def readable_source(result: VideoSegmentation) -> str | None:
    """``result.info.source`` when it is a path that exists now; None for ``"<frames>"``, ``"<stream>"``..."""
    source = result.info.source
    if not source or source.startswith("<") or not Path(source).exists():
        return None
    return source


# -- built-in writers (imports inside: nothing heavy loads until a format runs) --------------------------------
def _write_coco(result: VideoSegmentation, out_dir: Path, video: Any = None) -> list[Path]:
    from segvlm.export.coco import save

    return [save(result, out_dir)]


def _write_overlay(result: VideoSegmentation, out_dir: Path, video: Any = None) -> list[Path]:
    from segvlm.export.overlay import save_overlay

    still = len(result) == 1 and result.info.fps is None  # a photo: its overlay is a picture, not a video
    name = "overlay.png" if still else "overlay.mp4"
    return [Path(save_overlay(result, str(out_dir / name), video=video))]


def _write_hf_dataset(result: VideoSegmentation, out_dir: Path, video: Any = None) -> list[Path]:
    """One row per processed frame in segvlm.data's schema (image, source, frame_index, regions with COCO RLE),
    saved with ``Dataset.save_to_disk``: ``datasets.load_from_disk(out_dir)`` reads it back."""
    import datasets

    from segvlm.data.rows import rows_from_segmentation
    from segvlm.data.schema import features, rows_to_table

    source = source_stem(result.info.source)
    is_image = len(result) == 1 and result.info.fps is None
    rows = rows_from_segmentation(
        result, video, source, is_image=is_image, stride=result.info.stride, caption_templates=("a {label}",)
    )
    dataset = datasets.Dataset(rows_to_table(rows))
    assert dataset.features == features()
    dataset.save_to_disk(str(out_dir))
    return sorted(path for path in out_dir.iterdir() if path.is_file())


def _convert_supervision(result: VideoSegmentation) -> list[Any]:
    return [frame.to_supervision() for frame in result]


def _builtin_formats() -> list[ExportFormat]:
    return [
        ExportFormat("coco", "COCO instances JSON with RLE masks and track ids (masks.json)", _write_coco),
        ExportFormat(
            "overlay",
            "video of the frames with coloured masks, ids and labels (overlay.mp4)",
            _write_overlay,
            needs_frames=True,
        ),
        ExportFormat(
            "png",
            "one indexed PNG mask per frame, DAVIS layout (00000.png..., objects.json)",
            "segvlm.export.png_masks:write_png_masks",
        ),
        ExportFormat(
            "yolo",
            "Ultralytics YOLO segmentation dataset (images/, labels/, data.yaml)",
            "segvlm.export.yolo:write_yolo",
            needs_frames=True,
        ),
        ExportFormat(
            "ytvis", "YouTube-VIS 2019/2021 instances JSON, one annotation per track", "segvlm.export.ytvis:write_ytvis"
        ),
        ExportFormat(
            "hf-dataset",
            "Hugging Face dataset (save_to_disk) in segvlm.data's schema: images and COCO RLE regions",
            _write_hf_dataset,
            needs_frames=True,
        ),
        ExportFormat("supervision", "in memory: one supervision.Detections per frame", None, _convert_supervision),
    ]


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for fmt in _builtin_formats():
        _FORMATS.setdefault(fmt.name, fmt)


# -- public API -------------------------------------------------------------------------------------------------
def register(fmt: ExportFormat, *, replace: bool = False) -> None:
    """Add a format; registering a name that exists is an error unless ``replace=True``."""
    _ensure_builtins()
    if fmt.name in _FORMATS and not replace:
        raise ExportError(
            f"an export format named {fmt.name!r} is already registered; "
            "pick another name or pass replace=True to override it"
        )
    _FORMATS[fmt.name] = fmt


def get_format(name: str) -> ExportFormat:
    """The format registered under ``name`` (case-insensitive); :class:`UnknownFormatError` names the known ones."""
    _ensure_builtins()
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _FORMATS:
        raise UnknownFormatError(f"unknown export format {name!r}; use one of: {', '.join(sorted(_FORMATS))}")
    return _FORMATS[key]


def list_formats() -> list[ExportFormat]:
    """Every registered format, by name."""
    _ensure_builtins()
    return [_FORMATS[name] for name in sorted(_FORMATS)]


def export(
    result: VideoSegmentation, format: str, out: str | Path | None = None, video: Any = None
) -> list[Path] | Any:
    """Export ``result`` in ``format``.

    A file format writes into the folder ``out`` (created when missing) and returns the written paths; an
    in-memory format (``supervision``) returns its value and ignores ``out``. ``video`` (a path, a list of
    frames...) defaults to ``result.info.source`` and is needed by formats that read pixels (``overlay``,
    ``yolo``).

    Raises:
        UnknownFormatError: ``format`` is not registered.
        ExportError: a file format without ``out``, or a pixel format without readable frames.
    """
    fmt = get_format(format)
    if fmt.write is None:
        return fmt.converter()(result)
    if out is None:
        raise ExportError(f"the {fmt.name!r} export writes files; pass out=<folder> (it is created if missing)")
    if video is None:
        video = readable_source(result)
        if video is None and fmt.needs_frames:
            source = result.info.source
            why = "was in-memory frames" if source.startswith("<") else "no longer exists"
            raise ExportError(
                f"the {fmt.name!r} export reads the video's frames, but the result's source {source!r} {why}; "
                "pass video=<the video path or the list of frames the result was made from>"
            )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return fmt.writer()(result, out_dir, video=video)
