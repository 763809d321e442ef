"""Exceptions with messages that name the problem and the fix.

All of them subclass :class:`SegvlmError` (itself a ``ValueError``), so callers can catch one type.
"""

from __future__ import annotations


class SegvlmError(ValueError):
    """Base class of segvlm's user-facing errors."""


class VideoReadError(SegvlmError):
    """A video, image or frame folder could not be read.

    Attributes:
        frames_read: how many frames were decoded before the failure (0 when nothing could be opened).
    """

    def __init__(self, message: str, frames_read: int = 0):
        super().__init__(message)
        self.frames_read = frames_read


class FrameIndexError(SegvlmError, IndexError):
    """A frame index past the end of its source.

    Attributes:
        index: the index asked for.
        frames: how many frames the source has.
    """

    def __init__(self, message: str, index: int, frames: int):
        super().__init__(message)
        self.index, self.frames = index, frames


class QueryError(SegvlmError):
    """The text query is empty or cannot be parsed into phrases."""


class UnknownBackendError(SegvlmError):
    """A grounder/segmenter/preset name that segvlm does not know."""


class ConfigError(SegvlmError):
    """A configuration file or value is invalid."""


class FormatError(SegvlmError):
    """A saved result, a COCO file or an RLE mask is malformed (the message names the entry and the problem)."""
