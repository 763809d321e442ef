"""Old import path of the dataset builder's test helpers, kept so ``--labeler segvlm.data.testing:SyntheticLabeler``
and imports written against it keep working; they live in :mod:`segvlm.testing` now."""

from __future__ import annotations

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "SyntheticLabeler": "segvlm.testing.labelers",
    "SlowSyntheticLabeler": "segvlm.testing.labelers",
    "BusySyntheticLabeler": "segvlm.testing.labelers",
    "draw_frame": "segvlm.testing.media",
    "write_test_video": "segvlm.testing.media",
    "write_test_image": "segvlm.testing.media",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
