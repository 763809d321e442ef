"""Argument schemas of the tools: what the model may pass, with descriptions it reads.

Constraints live here (non-empty query, frame >= 0, exactly one of track_id and box) so that they show up in
the JSON schema the model sees and bad calls are refused before any work starts.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

_PATH_HELP = "relative to the allowed folder (or absolute inside it)"
_QUERY_HELP = (
    "what to find, as noun phrases: 'the red car', 'person and dog', 'cups'. Several objects can be joined "
    "with 'and' or commas; every instance of each phrase is found"
)


def _non_empty(value: str, what: str, example: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"the {what} is empty; give one, e.g. {example!r}")
    return value


class SegmentImageArgs(BaseModel):
    """Arguments of segment_image."""

    image_path: str = Field(description=f"path of a JPEG/PNG image, {_PATH_HELP}")
    query: str = Field(description=_QUERY_HELP)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_empty(value, "query", "the red car")


class TrackVideoArgs(BaseModel):
    """Arguments of track_video."""

    video_path: str = Field(description=f"path of a video (mp4, webm, mov...) or a folder of frames, {_PATH_HELP}")
    query: str = Field(description=_QUERY_HELP)
    max_frames: int | None = Field(
        default=None, ge=1, description="process at most this many frames (after stride); default: the tool's limit"
    )
    stride: int = Field(default=1, ge=1, description="process every stride-th frame; 2 halves the work")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_empty(value, "query", "the red car")


class CountObjectsArgs(BaseModel):
    """Arguments of count_objects."""

    path: str = Field(description=f"path of an image or a video, {_PATH_HELP}")
    query: str = Field(description=_QUERY_HELP)
    max_frames: int | None = Field(default=None, ge=1, description="for a video: process at most this many frames")
    stride: int = Field(default=1, ge=1, description="for a video: process every stride-th frame")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_empty(value, "query", "the red car")


class DescribeRegionArgs(BaseModel):
    """Arguments of describe_region."""

    path: str = Field(description=f"path of the image or video the region is in, {_PATH_HELP}")
    question: str = Field(description="what to ask about the region, e.g. 'What is this object doing?'")
    track_id: int | None = Field(
        default=None,
        ge=1,
        description="id of an object returned by an earlier segment_image/track_video/count_objects call on the "
        "same path; give this or box",
    )
    box: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] in pixels, when the region is not a tracked object; give this or track_id",
    )
    frame: int | None = Field(
        default=None,
        ge=0,
        description="source frame index for a video; default: the frame where the object looks largest (track_id) "
        "or frame 0 (box). Leave out for images",
    )

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return _non_empty(value, "question", "What is this object doing?")

    @model_validator(mode="after")
    def _one_region(self) -> DescribeRegionArgs:
        if (self.track_id is None) == (self.box is None):
            raise ValueError("give exactly one of track_id (an object id from an earlier call) or box [x0, y0, x1, y1]")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x1 > x0 >= 0 and y1 > y0 >= 0):
                raise ValueError(f"box {self.box} is not [x0, y0, x1, y1] with 0 <= x0 < x1 and 0 <= y0 < y1")
        return self
