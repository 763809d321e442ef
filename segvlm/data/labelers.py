"""Labelers: what turns one input file into a :class:`segvlm.types.VideoSegmentation`.

The builder only needs a callable ``labeler(query, source, max_frames, stride) -> VideoSegmentation``.
The default, :class:`PresetLabeler`, wraps ``segvlm.Pipeline.from_preset`` and loads the models on its
first call, so an instance is cheap to pickle and each Ray actor ends up with its own model set.
Other labelers (a custom pipeline, a fake for tests) are named on the command line as ``module:attr``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from segvlm.types import VideoSegmentation


@runtime_checkable
class Labeler(Protocol):
    """Labels one input file; raises ``ValueError``/``OSError`` (e.g. ``VideoReadError``) for bad inputs."""

    def __call__(
        self, query: str | list[str], source: str, max_frames: int | None, stride: int
    ) -> VideoSegmentation: ...


class PresetLabeler:
    """The segvlm pipeline built from a preset, loaded lazily on first use.

    Args:
        preset: a preset name (``segvlm.config.list_presets()``); None picks the pipeline's default.
        device: ``"cuda"``, ``"cpu"``...; None lets the pipeline choose.
    """

    def __init__(self, preset: str | None = None, device: str | None = None):
        self.preset = preset
        self.device = device
        self._pipeline: Any = None

    @property
    def name(self) -> str:
        return f"preset:{self.preset or 'default'}"

    def __getstate__(self) -> dict[str, Any]:
        return {"preset": self.preset, "device": self.device, "_pipeline": None}  # never ship models

    def load(self) -> Any:
        """Build the models now (the builder calls this once per worker before the first item)."""
        if self._pipeline is None:
            from segvlm.tracking import Pipeline

            self._pipeline = Pipeline.from_preset(self.preset, device=self.device)
        return self._pipeline

    def __call__(self, query: str | list[str], source: str, max_frames: int | None, stride: int) -> VideoSegmentation:
        return self.load()(query, source, max_frames=max_frames, stride=stride)


def load_labeler(spec: str, **kwargs: Any) -> Labeler:
    """Import ``"package.module:attr"`` and return the labeler it names.

    ``attr`` may be a labeler (instance or function), or a class, which is instantiated with ``kwargs``;
    a factory function is called when ``kwargs`` are given.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"labeler {spec!r} must look like 'package.module:attr', e.g. 'segvlm.testing:SyntheticLabeler'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import {module_name!r} for labeler {spec!r} ({error}); check it is installed or on PYTHONPATH"
        ) from error
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (labeler {spec!r})") from None
    labeler = target(**kwargs) if isinstance(target, type) or kwargs else target
    if not callable(labeler):
        raise ValueError(f"{spec!r} gave a {type(labeler).__name__}, which is not callable as a labeler")
    return labeler


def labeler_name(labeler: Any) -> str:
    """A short, stable description of a labeler for ``build.json`` and the dataset card."""
    name = getattr(labeler, "name", None)
    if isinstance(name, str):
        return name
    kind = type(labeler)
    if kind.__name__ == "function":
        return f"{labeler.__module__}:{labeler.__qualname__}"
    return f"{kind.__module__}:{kind.__qualname__}"
