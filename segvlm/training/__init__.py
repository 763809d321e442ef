"""Training mask-aware VLMs on region captions (accelerate, optional LoRA via peft).

    from segvlm.training import load_train_config, train
    result = train(load_train_config("tiny-pooled"))  # a shipped config by name, or a YAML path

Heavy libraries (torch, accelerate, transformers) load only when a name below is used.
"""

from __future__ import annotations

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "TrainConfig": "segvlm.training.config",
    "ModelConfig": "segvlm.training.config",
    "TrainableConfig": "segvlm.training.config",
    "LoraSettings": "segvlm.training.config",
    "DataConfig": "segvlm.training.config",
    "OptimConfig": "segvlm.training.config",
    "load_train_config": "segvlm.training.config",
    "list_train_configs": "segvlm.training.config",
    "train_config_from_dict": "segvlm.training.config",
    "RegionExample": "segvlm.training.data",
    "RegionBatch": "segvlm.training.data",
    "RegionExamples": "segvlm.training.data",
    "load_region_dataset": "segvlm.training.data",
    "Trainer": "segvlm.training.trainer",
    "TrainResult": "segvlm.training.trainer",
    "EvalResult": "segvlm.training.trainer",
    "train": "segvlm.training.trainer",
    "latest_checkpoint": "segvlm.training.trainer",
    "train_command": "segvlm.training.cli",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
