"""Video segmenters: promptable ones (SAM 2, EdgeTAM, SAM) and text-native ones (SAM 3); see ``base``."""

from segvlm.segmentation.base import (
    FrameMasks,
    ObjectPrompt,
    Segmenter,
    SegmenterSession,
    TextFrameMasks,
    TextSegmenterSession,
    TextVideoSegmenter,
    VideoSegmenter,
)

__all__ = [
    "FrameMasks",
    "ObjectPrompt",
    "Segmenter",
    "SegmenterSession",
    "TextFrameMasks",
    "TextSegmenterSession",
    "TextVideoSegmenter",
    "VideoSegmenter",
]
