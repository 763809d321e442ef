"""Typed configuration: one dataclass per stage, YAML presets that map onto them.

A preset is a YAML file in the repository's ``configs/`` folder (``segvlm/presets`` in the package,
shipped in the wheel); ``load_config("cpu-fast")`` reads one, ``load_config("my.yaml")`` reads a file, and
keyword overrides such as ``load_config("cpu-fast", device="cuda")`` win over both. Unknown keys are
refused with the list of valid ones, so a typo never silently falls back to a default.

A layer that switches a backend (``grounder.name``, ``segmenter.name``) without naming its model gets that
backend's own default checkpoint in the size class of the layer below (``tiny-random:grounding-dino`` over
the tiny-random preset, ``IDEA-Research/grounding-dino-tiny`` over a real one), so a backend never inherits
another backend's weights; a model that does not fit its backend is refused before anything loads.

Settings every backend of a stage reads are fields of its config (``GrounderConfig.box_threshold``); the
settings of one backend only are its ``options`` (``segmenter.options.fast`` for SAM 2), declared by the
backend's ``Options`` dataclass (:class:`segvlm.backend.Backend`) and checked against it when the config
loads. A layer that switches the backend drops the options of the one it replaces.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from dataclasses import InitVar, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from segvlm.backend import options_dict
from segvlm.errors import ConfigError, UnknownBackendError


def warn_ignored(key: str, why: str) -> None:
    """Warn that a setting earlier versions accepted is ignored, and why (configs that set it still load)."""
    warnings.warn(f"{key} is ignored: {why}; remove it from the config", FutureWarning, stacklevel=3)


@dataclass
class GrounderConfig:
    """Open-vocabulary detector that turns phrases into boxes.

    Attributes:
        name: backend (``owlv2``, ``grounding-dino``); see ``segvlm.registry.GROUNDERS``.
        model: hub id or local folder of the checkpoint (``tiny-random:<name>`` builds a tiny random one).
        box_threshold: minimum detection score kept.
        nms_iou: boxes of the same phrase overlapping more than this are suppressed.
        top_k: at most this many boxes per phrase and frame.
        options: the chosen backend's own settings, a mapping or an instance of its ``Options`` dataclass
            (``{"resize_margin": None}`` for OWLv2), checked against it; an unknown one is refused with the
            valid ones.

    ``text_threshold``, which earlier versions accepted and no code read, is still accepted and ignored with a
    warning.
    """

    name: str = "owlv2"
    model: str = "google/owlv2-base-patch16-ensemble"
    box_threshold: float = 0.2
    nms_iou: float = 0.5
    top_k: int = 10
    options: dict[str, Any] = field(default_factory=dict)
    text_threshold: InitVar[float | None] = None

    def __post_init__(self, text_threshold: float | None) -> None:
        if text_threshold is not None:
            warn_ignored("grounder.text_threshold", "no grounder reads it (a box's score is its best phrase's)")


@dataclass
class RerankerConfig:
    """open_clip re-ranking of candidate boxes against the full query phrase.

    Attributes:
        enabled: run the re-ranker after grounding.
        model: open_clip model name (``ViT-B-32``), ``hf-hub:<id>``, or a local folder holding
            ``open_clip_config.json`` and weights (``tiny-random:clip`` builds a tiny random one).
        pretrained: open_clip pretrained tag for a named model (ignored for hub ids and folders).
        weight: final score = (1 - weight) * detector score + weight * CLIP probability.
        min_score: candidates whose combined score falls below this are dropped.
    """

    enabled: bool = False
    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    weight: float = 0.5
    min_score: float = 0.0


@dataclass
class SegmenterConfig:
    """Memory-equipped video segmenter.

    Attributes:
        name: backend (``sam2``, ``edgetam``, ``sam``, ``sam3``); see ``segvlm.registry.SEGMENTERS``.
        model: hub id or local folder (``tiny-random:sam2`` builds a tiny random one).
        dtype: ``auto`` (bfloat16 on GPUs and on CPUs with native bf16, else float32), ``float32``,
            ``bfloat16`` or ``float16``.
        mask_threshold: logit threshold for binarising masks.
        options: the chosen backend's own settings, a mapping or an instance of its ``Options`` dataclass
            (``{"fast": True}`` for SAM 2), checked against it; an unknown one is refused with the valid ones.
    """

    name: str = "sam2"
    model: str = "facebook/sam2.1-hiera-tiny"
    dtype: str = "auto"
    mask_threshold: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    """How grounding and propagation are combined over a video.

    Attributes:
        reground_every: run the detector every this many processed frames (and retry at this interval while
            nothing has been found yet) to pick up objects that enter later.
        match_iou: a new detection whose mask overlaps a running track by at least this IoU is the same object.
        max_lost_frames: a track whose mask stays empty this many processed frames ends (until then the
            segmenter's memory may re-acquire it under the same id).
        backfill_frames: how far back (processed frames) a newly found object is propagated; None means
            ``reground_every``; 0 disables back-filling.
        max_objects: at most this many objects are tracked at once.
        min_mask_area: masks with fewer pixels count as "not visible".
        reid_similarity: with the CLIP re-ranker loaded, an ended track is revived under its old id for a new
            detection of the same label whose crop has at least this cosine similarity with the track's last
            appearance (above 1 disables it).
    """

    reground_every: int = 15
    match_iou: float = 0.5
    max_lost_frames: int = 30
    backfill_frames: int | None = None
    max_objects: int = 20
    min_mask_area: int = 16
    reid_similarity: float = 0.9

    @property
    def backfill(self) -> int:
        return self.reground_every if self.backfill_frames is None else self.backfill_frames


@dataclass
class PipelineConfig:
    """Everything that decides what ``segvlm.pipeline()`` computes.

    Attributes:
        grounder, reranker, segmenter, tracking: per-stage settings.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        preset: name of the preset this came from, recorded in results.
        warning: a message shown when this configuration is used (the tiny-random preset says its masks are
            meaningless).
    """

    grounder: GrounderConfig = field(default_factory=GrounderConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: str = "auto"
    preset: str | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _preset_dir() -> Path:
    """The folder holding the preset YAML files (``segvlm/presets``, linked as ``configs/`` in the repository)."""
    return Path(str(resources.files("segvlm.presets")))


def list_presets() -> list[str]:
    """Names of the presets that ship with segvlm."""
    return sorted(path.stem for path in _preset_dir().glob("*.yaml") if not path.stem.startswith("_"))


def from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a (possibly nested) config dataclass from a dict, refusing unknown keys (naming the valid ones)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    init_only = set(inspect.signature(cls).parameters) - set(fields)  # settings kept for old configs
    unknown = sorted(set(values) - set(fields) - init_only)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        if name in init_only:
            kwargs[name] = value
            continue
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value or {}, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def merge_nested(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, recursing into nested mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file; :class:`ConfigError` when it is not valid YAML or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    """A pipeline config file, with ``extends: <preset>`` resolved."""
    data = read_yaml_mapping(path)
    parent = data.pop("extends", None)
    if parent:
        data = merge_layer(_preset_dict(parent), data)
    return data


STAGE_DEFAULTS = {"grounder": GrounderConfig, "segmenter": SegmenterConfig}


def with_backend_models(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override``, where it switches a stage's backend without naming a model, with that backend's default
    model added: the tiny random one when ``base``'s model for the stage is tiny, else the hub default.

    Keeping ``base``'s model would hand the new backend another backend's checkpoint (Grounding DINO built on
    OWLv2's weights), which fails deep inside the model with a traceback.
    """
    from segvlm.registry import TINY_PREFIX, default_model

    result = dict(override)
    for stage, defaults in STAGE_DEFAULTS.items():
        layer = override.get(stage)
        if not isinstance(layer, dict) or "name" not in layer or "model" in layer:
            continue
        below = base.get(stage) if isinstance(base.get(stage), dict) else {}
        if layer["name"] == below.get("name", defaults.name):
            continue
        tiny = str(below.get("model", defaults.model)).startswith(TINY_PREFIX)
        result[stage] = {**layer, "model": default_model(stage, str(layer["name"]), tiny=tiny)}
    return result


def merge_layer(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base`` as :func:`merge_nested` does, except where ``override`` switches a stage's
    backend: the new backend gets its own default model (:func:`with_backend_models`) and only the options
    ``override`` gives it, since the options of the backend below belong to that backend."""
    merged = merge_nested(base, with_backend_models(base, override))
    for stage, defaults in STAGE_DEFAULTS.items():
        layer, below = override.get(stage), base.get(stage)
        if not isinstance(layer, dict) or "name" not in layer or not isinstance(below, dict):
            continue
        if layer["name"] != below.get("name", defaults.name):
            merged[stage] = {**merged[stage], "options": options_dict(layer.get("options"))}
    return merged


def check_options(config: PipelineConfig) -> None:
    """Refuse options that the chosen grounder or segmenter does not declare, before anything loads.

    Options of a backend registered by its class name only (a custom backend without ``Options``) are
    checked when it is built.
    """
    from segvlm.registry import grounder_class, segmenter_class, text_native

    segmenter_class(config.segmenter.name).options_from(config.segmenter)
    if not text_native(config.segmenter.name):
        grounder_class(config.grounder.name).options_from(config.grounder)


def check_models(config: PipelineConfig) -> None:
    """Refuse a grounder or segmenter model that its backend cannot load (see :func:`segvlm.registry.check_model`).

    The grounder is not checked when the segmenter finds objects from text itself (SAM 3): it never runs.
    """
    from segvlm.registry import check_model, text_native

    check_model("segmenter", config.segmenter.name, config.segmenter.model)
    if not text_native(config.segmenter.name):
        check_model("grounder", config.grounder.name, config.grounder.model)


def _preset_dict(name: str) -> dict[str, Any]:
    path = _preset_dir() / f"{name}.yaml"
    if not path.exists():
        raise UnknownBackendError(f"unknown preset {name!r}; known presets: {list_presets()}")
    data = _read_yaml(path)
    data.setdefault("preset", name)
    return data


def load_config(
    preset_or_path: str | Path | None = None, overrides: dict[str, Any] | None = None, **top_level: Any
) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from a preset name or YAML path plus overrides.

    Args:
        preset_or_path: a preset name (see :func:`list_presets`), a YAML file, or None for the defaults.
        overrides: nested dict merged over the file, e.g. ``{"tracking": {"reground_every": 5}}``; a backend
            switched without a model (``{"grounder": {"name": "grounding-dino"}}``) gets its own default model,
            and none of the options of the backend it replaces. A backend's own options go under ``options``:
            ``{"segmenter": {"options": {"fast": True}}}``.
        **top_level: top-level fields, e.g. ``device="cuda"``.

    Raises:
        ConfigError: unknown keys or backend options, a missing file, or a model its backend cannot load.
        UnknownBackendError: an unknown preset or backend name.
    """
    data: dict[str, Any] = {}
    if preset_or_path is not None:
        path = Path(preset_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.exists():
                raise ConfigError(f"config file not found: {path}")
            data = _read_yaml(path)
        else:
            data = _preset_dict(str(preset_or_path))
    data = merge_layer(data, overrides or {})
    data = merge_nested(data, {key: value for key, value in top_level.items() if value is not None})
    config = from_dict(PipelineConfig, data, "config")
    check_models(config)
    check_options(config)
    return config
