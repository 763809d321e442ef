"""Typed settings of a region-caption training run, read from YAML.

A YAML file maps key for key onto :class:`TrainConfig` (nested sections onto the nested dataclasses);
unknown keys are refused with the list of valid ones, so a typo fails before any model is loaded::

    model: {model: "tiny-random:smolvlm", mask_tokenizer: pooled}
    trainable: {mask_tokenizer: true, lm: false, lora: {enabled: true, r: 8}}
    data: {train: "scenes:2000:0", eval: "scenes:200:1", answer_field: caption}
    optim: {lr: 1.0e-3, max_steps: 500, batch_size: 16, grad_accum: 2}

Configs ship with segvlm (``segvlm/presets/train/``, linked as ``configs/train/`` in the repository) and are
named without a path: ``load_train_config("tiny-pooled")``. Relative paths inside a config (``output_dir``,
``data.train``, ``data.eval``) are relative to the folder the command runs in, like every path given on the
command line; a dataset path that does not exist there but does next to the config file is taken from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Which VLM and which mask tokenizer design.

    Attributes:
        model: hub id, local folder, or ``tiny-random:<family>`` (built offline).
        mask_tokenizer: design name (``pooled``, ``encoder``, ``set_of_mark``, ``text``).
        mask_tokenizer_args: constructor arguments of that design (e.g. ``feature_layers: [0, -1]``).
    """

    model: str = "tiny-random:smolvlm"
    mask_tokenizer: str = "pooled"
    mask_tokenizer_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraSettings:
    """LoRA adapters on the language model's attention projections (peft).

    Attributes:
        enabled: add adapters and train them.
        r, alpha, dropout: the usual LoRA settings.
        target_modules: a regex on module names (peft's ``target_modules`` as a string).
    """

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = r".*(text_model|language_model)\..*\.(q_proj|k_proj|v_proj|o_proj)$"


@dataclass
class TrainableConfig:
    """Which parameters learn; everything else stays frozen.

    Attributes:
        mask_tokenizer: the design's own weights (pooled projectors, encoder mask conv).
        connector: the vision-to-language projector (SmolVLM connector, Qwen2-VL merger, LLaVA projector).
        lm: the whole language model (embeddings, decoder layers, LM head).
        vision: the vision tower.
        lora: LoRA adapters on the language model.
    """

    mask_tokenizer: bool = True
    connector: bool = False
    lm: bool = False
    vision: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class DataConfig:
    """Where examples come from and how they become prompts and answers.

    One example is one region of one row: the prompt names it as ``{region1}`` and the answer is the
    region's ``answer_field`` (``caption``, ``label`` or ``phrase``).

    Attributes:
        train: a dataset folder (``save_to_disk`` / the builder's output) or ``scenes:<n>[:<seed>]``.
        eval: the held-out dataset, same forms; None to hold out ``eval_fraction`` of the sources of ``train``.
        eval_fraction: share of sources held out when ``eval`` is None (split by source, never by frame).
        max_eval_examples: cap on held-out examples per evaluation (None = all).
        prompt: the user prompt; ``{region1}`` is the designated region.
        use_regions: give the region to the model; False runs the no-region baseline with ``prompt_without_regions``.
        prompt_without_regions: the prompt when ``use_regions`` is False.
        answer_field: which region field is the target text.
        answer_prefix: text put before every answer (``" "`` for BPE tokenizers whose words start with a space).
        choices: optional closed set of answers; evaluation then also reports choice accuracy
            (argmax over the first token of each choice; the first tokens must differ).
        scene_config: settings of :class:`segvlm.scenes.SceneConfig` for ``scenes:`` sources.
    """

    train: str = "scenes:1000:0"
    eval: str | None = None
    eval_fraction: float = 0.1
    max_eval_examples: int | None = None
    prompt: str = "Describe {region1}."
    use_regions: bool = True
    prompt_without_regions: str = "Describe the object."
    answer_field: str = "caption"
    answer_prefix: str = ""
    choices: list[str] | None = None
    scene_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW with linear warmup and then a constant or cosine rate.

    Attributes:
        lr, weight_decay, betas: AdamW settings.
        warmup_steps: linear warmup from 0.
        schedule: ``constant`` or ``cosine`` (to 0 at ``max_steps``) after warmup.
        max_steps: optimizer steps in the run.
        batch_size: examples per process per micro-batch.
        grad_accum: micro-batches per optimizer step.
        max_grad_norm: clip the global gradient norm (0 = off).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 20
    schedule: str = "constant"
    max_steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    """A whole run.

    Attributes:
        output_dir: checkpoints (``checkpoint-<step>/``), ``metrics.jsonl`` and ``final/`` go here.
        seed: seeds the model init RNG, the data order and dropout.
        mixed_precision: ``auto`` (bf16 on a GPU that supports it, else full precision), ``no``, ``bf16``, ``fp16``.
        eval_every: evaluate every N optimizer steps (0 = only at the end).
        save_every: write a checkpoint every N optimizer steps (0 = only at the end).
        keep_checkpoints: how many recent checkpoints to keep (0 = all).
        log_every: write a training-loss record every N steps.
        resume: continue from the newest checkpoint in ``output_dir`` when there is one.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/region-captioner"
    seed: int = 0
    mixed_precision: str = "auto"
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.optim.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {self.optim.schedule!r}")
        if isinstance(self.optim.betas, list):
            self.optim.betas = tuple(self.optim.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a nested dict, refusing unknown keys (with the valid ones listed)."""
    from segvlm.config import from_dict

    return from_dict(TrainConfig, values, "train config")


def _shipped_dir() -> Path:
    """The folder of the training configs that ship with segvlm (``segvlm/presets/train``)."""
    from importlib import resources

    return Path(str(resources.files("segvlm.presets"))) / "train"


def list_train_configs() -> list[str]:
    """Names of the training configs that ship with segvlm (``segvlm train --config <name>``)."""
    return sorted(path.stem for path in _shipped_dir().glob("*.yaml"))


@dataclass(frozen=True)
class ConfigSource:
    """Where a training config was read from.

    Attributes:
        path: the YAML file.
        shipped: True for a config that ships with segvlm (its relative paths never refer to its own folder).
    """

    path: Path
    shipped: bool


def find_train_config(name_or_path: str | Path) -> ConfigSource:
    """The YAML file that ``name_or_path`` names: an existing file, or a shipped config by name
    (``tiny-pooled``, ``tiny-pooled.yaml``, or the repository path ``configs/train/tiny-pooled.yaml`` from any
    folder).

    Raises:
        segvlm.errors.ConfigError: neither a file nor a shipped config; the message lists the shipped ones.
    """
    from segvlm.errors import ConfigError

    path = Path(name_or_path).expanduser()
    if path.is_file():
        shipped = path.resolve().parent == _shipped_dir().resolve()
        return ConfigSource(path, shipped)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; give a YAML file or a shipped config name")
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    if stem in list_train_configs() and (path.parent == Path(".") or path.parent.as_posix().endswith("configs/train")):
        return ConfigSource(_shipped_dir() / f"{stem}.yaml", True)
    raise ConfigError(
        f"train config not found: {name_or_path}; give a YAML file, or the name of a config that ships with "
        f"segvlm: {', '.join(list_train_configs())} (e.g. --config tiny-pooled)"
    )


def _resolve_paths(data: dict[str, Any], config_dir: Path | None) -> dict[str, Any]:
    """``data`` with its relative dataset paths made absolute: against the current folder, or against
    ``config_dir`` when they exist only there (a config kept next to its data, run from elsewhere)."""
    section = data.get("data")
    if not isinstance(section, dict):
        return data
    section = dict(section)
    for key in ("train", "eval"):
        value = section.get(key)
        if not isinstance(value, str) or value.startswith("scenes:") or Path(value).expanduser().is_absolute():
            continue
        here = Path(value).expanduser()
        beside = config_dir / here if config_dir is not None else None
        chosen = beside if not here.exists() and beside is not None and beside.exists() else here
        section[key] = str(chosen.resolve())
    return {**data, "data": section}


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file (or a shipped config by name, see :func:`find_train_config`) onto :class:`TrainConfig`,
    then apply nested ``overrides``. Relative dataset paths come out absolute (see the module docstring).

    Raises:
        segvlm.errors.ConfigError: the file is missing, not YAML, not a mapping, or has unknown keys.
    """
    from segvlm.config import merge_nested, read_yaml_mapping

    data: dict[str, Any] = {}
    config_dir: Path | None = None
    if path is not None:
        source = find_train_config(path)
        data = read_yaml_mapping(source.path)
        config_dir = None if source.shipped else source.path.resolve().parent
    return train_config_from_dict(_resolve_paths(merge_nested(data, overrides or {}), config_dir))
