"""Old import path of the tiny random VLMs, kept so code written against it keeps working; they live in
:mod:`segvlm.testing.vlm` now."""

from __future__ import annotations

from segvlm.lazy import lazy_getattr
from segvlm.testing import _VLM  # the builders' names; segvlm.testing itself imports nothing heavy

_EXPORTS = ("build", *_VLM)  # ``build(family, folder)`` is exported here but not from segvlm.testing
__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, dict.fromkeys(_EXPORTS, "segvlm.testing.vlm"))
