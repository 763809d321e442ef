"""What every model backend declares: how it is built from its config, its options, and what it supports.

Grounders (:class:`segvlm.grounding.base.Grounder`) and segmenters (:class:`segvlm.segmentation.base.Segmenter`)
both derive from :class:`Backend`. A backend class declares, as class attributes that can be read without
building it:

* ``Options``: a small dataclass of the settings only this backend has (``fast`` for SAM 2). A config
  carries them as ``grounder.options`` / ``segmenter.options``; :meth:`Backend.options_from` checks them and
  refuses an unknown one, naming the valid ones;
* ``models``: the checkpoints it loads (:class:`ModelFamily`): its default, its tiny random stand-in and the
  ``model_type`` values that fit, so that a mismatched checkpoint is refused before anything loads;
* ``supports_prompts``, ``supports_corrections``, ``supports_text``: what it can be asked to do. The pipeline
  and the correction session choose their path from the backend's kind (its base class), and an operation a
  backend does not support is refused by :meth:`Backend.refuse` with a message that names the alternative.

:meth:`Backend.from_config` is the one constructor the pipeline calls; implementations load their weights
through :func:`segvlm.loading.load_model`, which records where the weights came from (:attr:`Backend.weights`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from segvlm.errors import ConfigError, SegvlmError


class UnsupportedOperationError(SegvlmError):
    """A backend was asked for something it does not do (clicks on a text-only segmenter, text on SAM 2)."""


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none of its own."""


@dataclass(frozen=True)
class ModelFamily:
    """The checkpoints one backend can load.

    Attributes:
        default: the hub checkpoint used when a backend is chosen without a model.
        tiny: the tiny random-weight stand-in (``tiny-random:<kind>``) used instead when the configuration
            around it is tiny (the ``tiny-random`` preset), and by the backend conformance test.
        tiny_kinds: the ``tiny-random:<kind>`` kinds it loads.
        model_types: the ``model_type`` values (a checkpoint's ``config.json``) it loads.
    """

    default: str
    tiny: str
    tiny_kinds: frozenset[str]
    model_types: frozenset[str]


def options_dict(options: Any) -> dict[str, Any]:
    """A config's ``options`` as a plain mapping: a dict as given, a backend's ``Options`` instance by field."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return dataclasses.asdict(options)
    if isinstance(options, dict):
        return dict(options)
    raise ConfigError(f"backend options must be a mapping of option names to values, got {type(options).__name__}")


def parse_options(options_class: type, values: Any, where: str) -> Any:
    """``options_class(**values)``, refusing a non-mapping or an unknown option with the list of valid ones."""
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        if isinstance(values, options_class):
            return values
        values = dataclasses.asdict(values)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of option names to values, got {type(values).__name__}")
    valid = sorted(field.name for field in dataclasses.fields(options_class))
    unknown = sorted(set(values) - set(valid))
    if unknown:
        offered = f"valid options are {valid}" if valid else "it has no options"
        raise ConfigError(f"unknown option(s) {unknown} in {where}; {offered}")
    return options_class(**values)


class Backend(ABC):
    """The contract shared by grounders and segmenters (see the module docstring).

    Attributes:
        Options: the dataclass of this backend's own options (:class:`NoOptions` when it has none).
        models: the checkpoints it loads; None for a backend that names its checkpoints itself.
        kind: ``"grounder"`` or ``"segmenter"``, used in messages and config paths.
        supports_prompts: takes boxes, clicks and masks for objects.
        supports_corrections: can re-propagate one object from a person's edits (a correction session).
        supports_text: finds objects from text phrases itself.
        weights: where the loaded weights came from; None for a backend built around given objects.
    """

    Options: ClassVar[type] = NoOptions
    models: ClassVar[ModelFamily | None] = None
    kind: ClassVar[str] = "backend"
    supports_prompts: ClassVar[bool] = False
    supports_corrections: ClassVar[bool] = False
    supports_text: ClassVar[bool] = False
    weights: Any = None

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, device: str = "cpu") -> Backend:
        """Build the backend from its stage config (:class:`segvlm.config.GrounderConfig` or
        :class:`segvlm.config.SegmenterConfig`) on ``device``, loading its checkpoint."""

    @classmethod
    def options_from(cls, config: Any) -> Any:
        """The backend's :attr:`Options` read from ``config.options``; :class:`ConfigError` for an unknown one."""
        where = f"{cls.kind}.options of {getattr(config, 'name', cls.__name__)!r}"
        return parse_options(cls.Options, getattr(config, "options", None), where)

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """What the backend supports, by name (``prompts``, ``corrections``, ``text``)."""
        return {
            "prompts": cls.supports_prompts,
            "corrections": cls.supports_corrections,
            "text": cls.supports_text,
        }

    @property
    def random_weights(self) -> bool:
        """True when the loaded weights are random (a ``tiny-random:`` model): its outputs mean nothing."""
        return bool(self.weights is not None and self.weights.random)

    def refuse(self, operation: str, fix: str) -> UnsupportedOperationError:
        """The error for an ``operation`` this backend does not support, with the ``fix`` to use instead."""
        return UnsupportedOperationError(f"{type(self).__name__} does not support {operation}; {fix}")
