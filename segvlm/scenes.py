"""Synthetic scenes with known masks and captions: coloured circles, squares and triangles.

A scene is ``n_objects`` solid shapes of random colour, shape, size and position on a plain background;
a video scene moves them in straight lines (bouncing off the borders) for ``frames`` frames. Every object
has its true visible mask per frame (later objects occlude earlier ones) and a caption built from its
attributes (``"small red circle"``). Everything is a pure function of ``(seed, scene index)``, so the same
call always gives the same images, masks and captions, and scene ``i`` does not depend on how many scenes
were asked for.

:func:`scene_rows` returns the dataset builder's :class:`segvlm.data.schema.Row` records and
:func:`scene_dataset` a ``datasets.Dataset`` with :func:`segvlm.data.schema.features`, so the scenes are
training data for :mod:`segvlm.training` and test data for anything that reads the builder's schema.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets

    from segvlm.data.schema import Row

# distinct hues with distinct first letters, so a colour is named by its first character as well
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 70, 235),
    "yellow": (240, 225, 30),
    "cyan": (30, 220, 230),
    "magenta": (225, 30, 220),
    "white": (245, 245, 245),
    "orange": (245, 140, 20),
    "purple": (120, 40, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, tuple[float, float]] = {"small": (0.16, 0.22), "large": (0.28, 0.36)}  # side, fraction of image


@dataclass(frozen=True)
class SceneConfig:
    """What scenes look like.

    Attributes:
        image_size: side of the square frames in pixels.
        n_objects: objects per scene.
        frames: frames per scene (1 = a still image).
        colours: colour names to draw from (keys of :data:`COLOURS`).
        shapes: shape names to draw from (of :data:`SHAPES`).
        sizes: size words to draw from (keys of :data:`SIZES`).
        distinct_colours: no two objects of a scene share a colour (then "the red one" is unambiguous).
        distinct_shapes: no two objects of a scene share a shape (needs ``n_objects <= len(shapes)``).
        min_gap: least distance in pixels between the boxes of two objects in the first frame.
        background: RGB of the background.
        max_speed: largest per-frame displacement in pixels (videos only).
        caption_template: region caption; ``{size}``, ``{colour}`` and ``{shape}`` are filled in.
        label_template: region label, same fields.
    """

    image_size: int = 64
    n_objects: int = 3
    frames: int = 1
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    sizes: tuple[str, ...] = tuple(SIZES)
    distinct_colours: bool = True
    distinct_shapes: bool = False
    min_gap: float = 1.0
    background: tuple[int, int, int] = (0, 0, 0)
    max_speed: float = 3.0
    caption_template: str = "{size} {colour} {shape}"
    label_template: str = "{colour} {shape}"

    def __post_init__(self) -> None:
        unknown = [c for c in self.colours if c not in COLOURS] + [s for s in self.shapes if s not in SHAPES]
        unknown += [s for s in self.sizes if s not in SIZES]
        if unknown:
            raise ValueError(
                f"unknown scene attribute(s) {unknown}; colours: {list(COLOURS)}, shapes: "
                f"{list(SHAPES)}, sizes: {list(SIZES)}"
            )
        if self.distinct_colours and self.n_objects > len(self.colours):
            raise ValueError(
                f"{self.n_objects} objects with distinct colours need at least as many colours, "
                f"got {len(self.colours)}; add colours or set distinct_colours=False"
            )
        if self.distinct_shapes and self.n_objects > len(self.shapes):
            raise ValueError(
                f"{self.n_objects} objects with distinct shapes need at least as many shapes, "
                f"got {len(self.shapes)}; set distinct_shapes=False or use fewer objects"
            )


@dataclass(frozen=True)
class SceneObject:
    """One object: its attributes, its side in pixels, and its centre per frame ``(x, y)``."""

    track_id: int
    colour: str
    shape: str
    size: str
    side: int
    centres: tuple[tuple[float, float], ...]

    def fill(self, config: SceneConfig) -> dict[str, str]:
        return {"size": self.size, "colour": self.colour, "shape": self.shape}

    def caption(self, config: SceneConfig) -> str:
        return config.caption_template.format(**self.fill(config))

    def label(self, config: SceneConfig) -> str:
        return config.label_template.format(**self.fill(config))


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        frames: (H, W, 3) uint8 images, one per frame.
        masks: per frame, per object, the (H, W) bool visible mask (may be empty when fully occluded).
        objects: the objects, in drawing order (later ones on top).
    """

    frames: list[np.ndarray]
    masks: list[list[np.ndarray]]
    objects: list[SceneObject] = field(default_factory=list)


def shape_mask(shape: str, side: int, centre: tuple[float, float], size: int) -> np.ndarray:
    """(size, size) bool mask of one shape of ``side`` pixels centred at ``centre`` = (x, y)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # (H, W) pixel centres
    cx, cy = centre
    half = side / 2
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    if shape == "triangle":  # apex up, base at the bottom of the box
        top, bottom = cy - half, cy + half
        inside_y = (ys >= top) & (ys <= bottom)
        half_width = half * (ys - top) / max(side, 1)  # (H, W) grows from 0 at the apex to half at the base
        return inside_y & (np.abs(xs - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _place(
    rng: np.random.Generator, sides: list[int], size: int, tries: int = 100, min_gap: float = 1.0
) -> list[tuple[float, float]] | None:
    """Centres whose boxes are at least ``min_gap`` pixels apart, by rejection; None when ``tries`` draws fail."""
    centres: list[tuple[float, float]] = []
    for side in sides:
        for _ in range(tries):
            cx, cy = rng.uniform(side / 2, size - side / 2, size=2)
            gap = [(side + other) / 2 + min_gap for other in sides[: len(centres)]]
            if all(abs(cx - ox) >= g or abs(cy - oy) >= g for (ox, oy), g in zip(centres, gap, strict=True)):
                centres.append((float(cx), float(cy)))
                break
        else:
            return None
    return centres


def _paths(rng: np.random.Generator, starts: list[tuple[float, float]], sides: list[int], config: SceneConfig):
    """Per object, its centre in every frame: straight lines that bounce off the borders."""
    paths = []
    for (x, y), side in zip(starts, sides, strict=True):
        vx, vy = rng.uniform(-config.max_speed, config.max_speed, size=2) if config.frames > 1 else (0.0, 0.0)
        lo, hi = side / 2, config.image_size - side / 2
        path = []
        for _ in range(config.frames):
            path.append((float(x), float(y)))
            x, y = x + vx, y + vy
            if not lo <= x <= hi:
                vx, x = -vx, float(np.clip(x, lo, hi))
            if not lo <= y <= hi:
                vy, y = -vy, float(np.clip(y, lo, hi))
        paths.append(tuple(path))
    return paths


def make_scene(seed: int, index: int, config: SceneConfig = SceneConfig()) -> Scene:
    """Scene ``index`` of the stream ``seed``: the same arguments always give the same scene."""
    rng = np.random.default_rng([seed, index])
    n = config.n_objects
    colour_ids = rng.choice(len(config.colours), size=n, replace=not config.distinct_colours)
    shapes = rng.choice(len(config.shapes), size=n, replace=not config.distinct_shapes)
    size_words = rng.choice(len(config.sizes), size=n)
    return layout_scene(
        rng,
        [config.colours[k] for k in colour_ids],
        [config.shapes[k] for k in shapes],
        [config.sizes[k] for k in size_words],
        config,
    )


def layout_scene(
    rng: np.random.Generator, colours: list[str], shapes: list[str], sizes: list[str], config: SceneConfig
) -> Scene:
    """Objects of the given attributes (one entry per object), given random sides and non-overlapping
    positions (``config.min_gap`` apart in the first frame) and, in videos, random straight paths; rendered.

    This is :func:`make_scene` after it has drawn the attributes, so a caller that needs scenes with chosen
    attributes (say, one object of a given colour) draws them itself and gets the same kind of scene.
    """
    size = config.image_size
    starts = None
    while starts is None:  # redraw the sides until the objects fit without overlapping in the first frame
        sides = [int(round(rng.uniform(*SIZES[word]) * size)) for word in sizes]
        starts = _place(rng, sides, size, min_gap=config.min_gap)
    paths = _paths(rng, starts, sides, config)
    objects = [
        SceneObject(track_id=j + 1, colour=colours[j], shape=shapes[j], size=sizes[j], side=sides[j], centres=paths[j])
        for j in range(len(sides))
    ]
    return render(objects, config)


def render(objects: list[SceneObject], config: SceneConfig) -> Scene:
    """Draw ``objects`` (each with one centre per frame) on ``config.frames`` frames of ``config.image_size``
    pixels; later objects cover earlier ones, and each object's mask is what stays visible of it."""
    size = config.image_size
    frames, masks = [], []
    for t in range(config.frames):
        image = np.empty((size, size, 3), dtype=np.uint8)  # (H, W, 3)
        image[:] = config.background
        visible: list[np.ndarray] = []
        for obj in objects:
            mask = shape_mask(obj.shape, obj.side, obj.centres[t], size)  # (H, W)
            image[mask] = COLOURS[obj.colour]
            visible = [m & ~mask for m in visible]  # what a later object covers is no longer visible below
            visible.append(mask)
        frames.append(image)
        masks.append(visible)
    return Scene(frames=frames, masks=masks, objects=list(objects))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # lossless: colours under masks stay exact
    return buffer.getvalue()


def scene_rows(n_scenes: int, seed: int = 0, config: SceneConfig = SceneConfig(), start: int = 0) -> list[Row]:
    """The builder's rows for scenes ``start .. start + n_scenes - 1`` of stream ``seed``: one row per frame,
    one region per visible object (track ids 1..N, stable across frames)."""
    from segvlm.data.schema import Region, Row
    from segvlm.masks import RLE

    rows = []
    for index in range(start, start + n_scenes):
        scene = make_scene(seed, index, config)
        for t, (frame, masks) in enumerate(zip(scene.frames, scene.masks, strict=True)):
            regions = []
            for obj, mask in zip(scene.objects, masks, strict=True):
                if not mask.any():
                    continue
                rle = RLE.encode(mask)
                regions.append(
                    Region(
                        rle=rle,
                        bbox_xyxy=rle.bbox_xyxy(),
                        label=obj.label(config),
                        phrase=obj.label(config),
                        score=1.0,
                        track_id=obj.track_id,
                        caption=obj.caption(config),
                    )
                )
            rows.append(
                Row(
                    image=_png(frame),
                    source=f"scene-{seed}-{index:06d}",
                    frame_index=t,
                    width=config.image_size,
                    height=config.image_size,
                    timestamp=t / 10.0 if config.frames > 1 else None,
                    regions=regions,
                )
            )
    return rows


def scene_dataset(
    n_scenes: int, seed: int = 0, config: SceneConfig = SceneConfig(), start: int = 0
) -> datasets.Dataset:
    """:func:`scene_rows` as a ``datasets.Dataset`` with the builder's features (RLE masks, PNG images)."""
    import datasets as hf_datasets

    from segvlm.data.schema import features

    rows = [row.to_dict() for row in scene_rows(n_scenes, seed, config, start)]
    return hf_datasets.Dataset.from_list(rows, features=features())
