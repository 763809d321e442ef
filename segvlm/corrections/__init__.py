"""Corrections: a session that keeps every prompt, approval and undo step while a person edits a result.

``pipe.correct(result, video)`` gives a :class:`CorrectionSession`; see :mod:`segvlm.corrections.session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "CorrectionSession": "segvlm.corrections.session",
    "CorrectionError": "segvlm.corrections.session",
    "Edit": "segvlm.corrections.session",
    "TrackEffort": "segvlm.corrections.session",
    "SessionFolderError": "segvlm.corrections.store",
}

__all__ = ["CorrectionSession", "CorrectionError", "Edit", "TrackEffort", "SessionFolderError"]

__getattr__ = lazy_getattr(__name__, _EXPORTS)

if TYPE_CHECKING:
    from segvlm.corrections.session import CorrectionError, CorrectionSession, Edit, TrackEffort
    from segvlm.corrections.store import SessionFolderError
