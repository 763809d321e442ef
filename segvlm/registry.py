"""Backends by name, imported when first asked for (``"module:Class"`` strings; backend modules import no
torch or transformers until a model is built).

Each backend class declares which checkpoints it can load (``models``, a :class:`ModelFamily`): the one it
uses when none is named, its tiny random stand-in, and the ``model_type`` values of the checkpoints that
fit. Switching a backend therefore brings a model that fits it, and :func:`check_model` refuses a checkpoint
of another family (Grounding DINO on OWLv2's weights) with a message before anything is loaded.

Adding a backend is one line in :data:`GROUNDERS` or :data:`SEGMENTERS` (see docs/extending.md).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from segvlm.backend import ModelFamily
from segvlm.errors import ConfigError, UnknownBackendError
from segvlm.resolve import PREFIX as TINY_PREFIX
from segvlm.resolve import TINY_MODELS as TINY_BUILDERS

__all__ = [
    "GROUNDERS",
    "SEGMENTERS",
    "ModelFamily",
    "backend_class",
    "check_model",
    "default_model",
    "grounder_class",
    "list_grounders",
    "list_segmenters",
    "model_family",
    "segmenter_class",
    "text_native",
]

# One line per backend: its name and "module:Class". The class declares the rest (see segvlm.backend.Backend).
GROUNDERS: dict[str, str] = {
    "owlv2": "segvlm.grounding.owlv2:Owlv2Grounder",
    "grounding-dino": "segvlm.grounding.grounding_dino:GroundingDinoGrounder",
}

SEGMENTERS: dict[str, str] = {
    "sam2": "segvlm.segmentation.sam2:Sam2VideoSegmenter",
    "edgetam": "segvlm.segmentation.sam2:EdgeTamVideoSegmenter",
    "sam": "segvlm.segmentation.sam_image:SamImageSegmenter",
    "sam3": "segvlm.segmentation.sam3:Sam3VideoSegmenter",
}

_STAGES = {"grounder": GROUNDERS, "segmenter": SEGMENTERS}


def _check_name(table: dict[str, Any], kind: str, name: str) -> None:
    if name not in table:
        raise UnknownBackendError(f"unknown {kind} {name!r}; known {kind}s: {sorted(table)}")


def _resolve(table: dict[str, str], kind: str, name: str) -> Any:
    _check_name(table, kind, name)
    module_name, _, class_name = table[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def grounder_class(name: str) -> Any:
    """The grounder class registered under ``name``."""
    return _resolve(GROUNDERS, "grounder", name)


def segmenter_class(name: str) -> Any:
    """The segmenter class registered under ``name``."""
    return _resolve(SEGMENTERS, "segmenter", name)


def backend_class(stage: str, name: str) -> Any:
    """The ``stage`` (``grounder`` or ``segmenter``) class registered under ``name``."""
    return _resolve(_STAGES[stage], stage, name)


def text_native(name: str) -> bool:
    """Whether the segmenter ``name`` finds objects from text itself (SAM 3), so that no grounder runs."""
    return bool(getattr(segmenter_class(name), "supports_text", False))


def list_grounders() -> list[str]:
    return sorted(GROUNDERS)


def list_segmenters() -> list[str]:
    return sorted(SEGMENTERS)


def model_family(stage: str, name: str) -> ModelFamily | None:
    """The checkpoints the ``stage`` (``grounder`` or ``segmenter``) backend ``name`` loads; None for a backend
    registered without a family (a custom one). Unknown names raise :class:`UnknownBackendError`."""
    return getattr(backend_class(stage, name), "models", None)


def default_model(stage: str, name: str, tiny: bool = False) -> str:
    """The checkpoint the ``stage`` backend ``name`` uses when none is named: its tiny random stand-in when
    ``tiny``, else its hub default."""
    family = model_family(stage, name)
    if family is None:
        raise ConfigError(f"the {stage} {name!r} has no default checkpoint; name one ({stage}.model)")
    return family.tiny if tiny else family.default


def checkpoint_kind(model: str) -> str | None:
    """What kind of checkpoint ``model`` is, without loading it: the kind of a ``tiny-random:<kind>`` name, the
    ``model_type`` in the ``config.json`` of a local folder or of a hub id already in the local cache; None
    when that cannot be told (a hub id not downloaded yet: the load decides)."""
    if not isinstance(model, str):
        return None
    if model.startswith(TINY_PREFIX):
        return model[len(TINY_PREFIX) :]
    config_file: Path | None = Path(model) / "config.json"
    if not config_file.is_file():
        config_file = _cached_hub_file(model, "config.json")
    if config_file is None:
        return None
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub repository ``repo_id`` when it is in the local cache (no network), else None."""
    if Path(repo_id).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # not a valid repo id, or no hub client: the load will say what is wrong
        return None
    return Path(found) if isinstance(found, str) else None


def backend_for(stage: str, kind: str, tiny: bool) -> str | None:
    """The ``stage`` backend that loads checkpoints of ``kind`` (a tiny kind when ``tiny``), if any."""
    for name in _STAGES[stage]:
        family = model_family(stage, name)
        if family is not None and kind in (family.tiny_kinds if tiny else family.model_types):
            return name
    return None


def check_model(stage: str, name: str, model: str) -> None:
    """Refuse a checkpoint that the ``stage`` backend ``name`` cannot load, before loading anything.

    Raises:
        ConfigError: ``model`` is known to be of another family; the message names the backend that fits it
            and the checkpoint that fits ``name``.
    """
    family = model_family(stage, name)
    kind = checkpoint_kind(model)
    if family is None or kind is None:
        return
    tiny = model.startswith(TINY_PREFIX)
    if kind in (family.tiny_kinds if tiny else family.model_types):
        return
    if tiny and kind not in TINY_BUILDERS:
        known = [TINY_PREFIX + k for k in sorted(TINY_BUILDERS)]
        raise UnknownBackendError(f"unknown tiny model {model!r}; known: {known}")
    owner = backend_for(stage, kind, tiny)
    what = f"a checkpoint for {owner}" if owner else f"a {kind!r} checkpoint"
    fits = family.tiny if tiny else family.default
    other = f", or use --{stage} {owner} ({stage}.name: {owner}) for this checkpoint" if owner else ""
    raise ConfigError(
        f"the {stage} {name!r} cannot load {model!r}, which is {what}. Give a {name} checkpoint "
        f"(--{stage}-model {fits}, or {stage}.model: {fits} in a config; leaving the model out picks it){other}"
    )
