"""Old import path of model-name resolution and the tiny random models, kept so code written against it keeps
working: resolution is :mod:`segvlm.resolve`, the builders are :mod:`segvlm.testing.models`."""

from __future__ import annotations

from segvlm.lazy import lazy_getattr
from segvlm.resolve import PREFIX, cache_dir, is_tiny, resolve_model
from segvlm.testing import _MODELS as _BUILDERS  # the builders' names; segvlm.testing itself imports nothing heavy

__all__ = ["PREFIX", "cache_dir", "is_tiny", "resolve_model", *_BUILDERS]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(_BUILDERS, "segvlm.testing.models"))
