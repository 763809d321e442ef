"""One loader for every transformers model and processor segvlm builds: hub ids, local folders, tiny models.

``load_pretrained(cls, "facebook/sam2.1-hiera-tiny")`` is ``cls.from_pretrained`` with three things added:

* ``tiny-random:<kind>`` names resolve to locally built random-weight folders (:func:`segvlm.resolve.resolve_model`);
* a hub id already in the local cache loads without touching the network;
* a hub id that cannot be fetched (no network, a typo, a gated model) fails at once with one line that says
  so and how to point at a local folder, instead of a minute of retries and a long traceback.

Backends build their model and processor with :func:`load_model`, which also moves the model to its device in
evaluation mode and returns a :class:`ModelWeights` record of where the weights came from (random ones
included), which results carry in their provenance.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from segvlm.errors import SegvlmError


class ModelLoadError(SegvlmError):
    """A model or processor could not be loaded from the hub id or folder given."""


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) answers a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ModelWeights:
    """Where a backend's weights came from.

    Attributes:
        model: the checkpoint as configured (hub id, folder or ``tiny-random:<kind>``).
        random: the weights are random (a ``tiny-random:`` model built locally): outputs are meaningless.
    """

    model: str
    random: bool = False

    @classmethod
    def of(cls, model: str) -> ModelWeights:
        """The record for loading ``model``."""
        from segvlm.resolve import is_tiny

        return cls(str(model), is_tiny(str(model)))


@dataclass
class LoadedModel:
    """A model in evaluation mode on its device, its processor, and where its weights came from."""

    model: Any
    processor: Any
    weights: ModelWeights


def load_model(
    model_class: Any, processor_class: Any, model: str, device: str = "cpu", dtype: Any = None
) -> LoadedModel:
    """``model_class`` and ``processor_class`` loaded from ``model`` with :func:`load_pretrained`; the model on
    ``device`` in evaluation mode, in ``dtype`` when given (a torch dtype)."""
    kwargs = {} if dtype is None else {"dtype": dtype}
    loaded = load_pretrained(model_class, model, **kwargs).to(device).eval()
    return LoadedModel(loaded, load_pretrained(processor_class, model), ModelWeights.of(model))


def _fix(model: str) -> str:
    return (
        f"download it where the Hub is reachable (huggingface-cli download {model} --local-dir DIR), copy DIR here "
        "and give the folder instead of the hub id (in a config: segmenter.model: DIR or grounder.model: DIR)"
    )


def load_pretrained(cls: Any, model: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model, **kwargs)`` for a hub id, a local folder or a ``tiny-random:`` name."""
    from segvlm.resolve import resolve_model

    path = resolve_model(model)
    what = getattr(cls, "__name__", "model")
    if Path(path).is_dir():
        try:
            return cls.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{what} could not be loaded from the folder {path}: {_first_line(error)}") from None
    try:  # already downloaded: no network needed
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"{what} {model!r} is not in the local cache and the Hugging Face Hub cannot be reached; {_fix(model)}"
        )
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"{what} {model!r} could not be fetched: {_first_line(error)}; {_fix(model)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
