"""What do masks as an input modality buy a VLM? Four designs and a no-region baseline, five region tasks.

    python pipelines/mask_modality_experiment.py --quick --json out.json --plot docs/experiment_mask_modality.png
    python pipelines/mask_modality_experiment.py --full --json out-full.json
    python pipelines/mask_modality_experiment.py --quick --model HuggingFaceTB/SmolVLM-256M-Instruct --device cuda

One VLM is trained in five arms that differ only in how the designated region(s) reach it:

* ``no_region``: nothing; the prompt says "the object" (the floor: what the image alone gives);
* ``text``: each region's box in the family's own coordinate syntax (``TextMaskTokenizer``, generic
  ``[x1,y1,x2,y2]`` on 0..1000 for SmolVLM);
* ``set_of_mark``: a ring drawn just outside each region and a numbered tag beside it (``SetOfMarkTokenizer``,
  style ``"tag"``); no pixel of any region is changed, so the object stays readable;
* ``mask_tokens``: vision features pooled under each mask plus a mask-shape token (``MaskPooledTokenizer``);
* ``mask_encoder``: the mask added to the patch embedding by a zero-initialised convolution
  (``MaskEncoderPrompt``), one input channel per region slot (``channels="region"``).

All arms start from one base model and train the same parameters: the whole VLM (language model,
connector and vision tower) on the same examples in the same order; the trained designs also train their own
parameters (the pooled projectors, the mask convolution). The model learns all five tasks at once (one run
per arm and seed); each task is scored on held-out examples by the argmax over its answers' first tokens.
The tasks (:data:`TASKS`) are generated with :mod:`segvlm.scenes`, every answer known, the labels balanced.

The base model is a tiny random SmolVLM built offline for 128 px images (16 px patches, 16 LM image tokens),
first taught to see (:func:`pretrain`: name the objects of whole scenes, and give the box of an object named
by its colour in the family's coordinate format), with no region input and no marks, so that no design is
favoured and every design starts from a model that can read its image, as it would in practice. ``--model``
takes a hub id, a folder or ``tiny-random:<family>`` instead (used as it is, not pretrained).

The tiny model barely tells where a patch is (:class:`PositionReading`); ``--position-init`` (position
embeddings at the patch embeddings' scale), ``--lm-layers`` (a deeper language model) and
``--position-pretraining`` (a region-free position question in the base model's tasks) change that setup
for every arm alike; all are off by default (in EXPERIMENTS.md none of them moves a position cell: the budget
per task, not the setup, is what the encoder's relation and motion lack). ``--base-only --position-probes``
measures a base model alone.

``--mark-ring``, ``--mark-place``, ``--mark-font`` and ``--mark-pattern`` change how the Set-of-Mark arm draws
its marks (:class:`MarkStyle`), ``--mark-pretraining`` teaches the base model "Where is mark <n>?"
(:func:`mark_example`), and ``--train-per-task`` changes the number of training examples; all are off by
default (EXPERIMENTS.md, round 2, "Set-of-Mark on positions: a fair test").
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from PIL import Image
from torch import nn

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.encoder_prompt import MaskEncoderPrompt
from segvlm.masktok.pooled import MaskPooledTokenizer, masked_mean, shape_descriptor
from segvlm.masktok.regions import region_masks
from segvlm.masktok.text import TextMaskTokenizer
from segvlm.masktok.visual_prompt import SetOfMarkTokenizer, draw_marks
from segvlm.scenes import SHAPES, SIZES, SceneConfig, SceneObject, layout_scene, make_scene, render
from segvlm.training.data import RegionBatch, example_order
from segvlm.training.trainer import answer_loss, encode_batch, param_group

app = typer.Typer(add_completion=False, help=__doc__)

IMAGE_SIZE = 128  # still scenes and the two-frame composite are this many pixels square
FRAME_SIZE = 64  # each frame of a motion clip; two side by side fill the composite's middle band
# well-separated hues only (see EXPERIMENTS.md: orange and purple blur into their neighbours in a patch)
EXPERIMENT_COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MARK_COLOURS = ((150, 150, 150), (255, 140, 0))  # grey, orange: neither is an object colour
OBJECT_GAP = 6  # px between object boxes, so a 2 px ring around one object never touches another
TINY_LM_LAYERS = 2  # language-model layers of segvlm.testing.vlm.build_smolvlm's model


# -- tasks --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskExample:
    """One question about one image.

    Attributes:
        image: the RGB image (a still scene, or two frames of a clip side by side).
        regions: the (H, W) bool masks the question names, in order ({region1}, {region2}).
        answer: the answer word, one of the task's choices.
        question: this example's own prompt, when the task's prompt varies (the base model's grounding).
    """

    image: Image.Image
    regions: tuple[np.ndarray, ...]
    answer: str
    question: str | None = None


@dataclass(frozen=True)
class Task:
    """A question family with known answers.

    Attributes:
        name: short name (a JSON key).
        question: the prompt; ``{region1}``/``{region2}`` become each arm's region text.
        question_without_regions: the prompt of the no-region arm.
        choices: the closed answer set; the label of example ``i`` is ``choices[i % len(choices)]``, so any
            multiple of ``len(choices)`` examples is exactly balanced.
        n_regions: how many regions the question names.
        no_region_ceiling: the best accuracy an arm can reach without knowing the region (by construction
            of the scenes; see :data:`TASKS`).
        make: ``(seed, index) -> TaskExample``, a pure function.
    """

    name: str
    question: str
    question_without_regions: str
    choices: tuple[str, ...]
    n_regions: int
    no_region_ceiling: float
    make: Callable[[int, int], TaskExample]

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess (= of the majority class: the labels are balanced)."""
        return 1 / len(self.choices)

    def label(self, index: int) -> str:
        return self.choices[index % len(self.choices)]


def _rng(task: str, seed: int, index: int) -> np.random.Generator:
    """The random stream of one example: a pure function of (task, seed, index)."""
    return np.random.default_rng([zlib.crc32(task.encode()), seed, index])


def _pick(rng: np.random.Generator, values: Sequence[str], k: int) -> list[str]:
    return [values[j] for j in rng.choice(len(values), size=k, replace=False)]


STILL = SceneConfig(image_size=IMAGE_SIZE, n_objects=3, colours=EXPERIMENT_COLOURS, min_gap=OBJECT_GAP)


def colour_example(seed: int, index: int) -> TaskExample:
    """Three objects of distinct colours; the designated one has the label's colour."""
    rng, target = _rng("colour", seed, index), COLOUR_TASK.label(index)
    colours = [target, *_pick(rng, [c for c in EXPERIMENT_COLOURS if c != target], 2)]
    colours = [colours[j] for j in rng.permutation(3)]
    shapes = [SHAPES[j] for j in rng.choice(len(SHAPES), size=3)]
    sizes = [("small", "large")[j] for j in rng.choice(2, size=3)]
    scene = layout_scene(rng, colours, shapes, sizes, STILL)
    return TaskExample(Image.fromarray(scene.frames[0]), (scene.masks[0][colours.index(target)],), target)


def shape_example(seed: int, index: int) -> TaskExample:
    """Three large objects of distinct shapes (every shape present) and colours; the designated one has the
    label's shape. Large only: a small one is 20-28 px, under 2x2 patches of 16 px."""
    rng, target = _rng("shape", seed, index), SHAPE_TASK.label(index)
    shapes = [SHAPES[j] for j in rng.permutation(len(SHAPES))]
    colours = _pick(rng, EXPERIMENT_COLOURS, 3)
    sizes = ["large"] * 3
    scene = layout_scene(rng, colours, shapes, sizes, STILL)
    return TaskExample(Image.fromarray(scene.frames[0]), (scene.masks[0][shapes.index(target)],), target)


RELATION_MARGIN = 8  # px: the two centres differ at least this much horizontally, so "left of" is never a tie


def relation_example(seed: int, index: int) -> TaskExample:
    """Three objects; two are designated; the answer says whether the first one's centre is left of the second's."""
    rng, target = _rng("relation", seed, index), RELATION_TASK.label(index)
    while True:
        colours = _pick(rng, EXPERIMENT_COLOURS, 3)
        shapes = [SHAPES[j] for j in rng.choice(len(SHAPES), size=3)]
        sizes = [("small", "large")[j] for j in rng.choice(2, size=3)]
        scene = layout_scene(rng, colours, shapes, sizes, STILL)
        xs = [obj.centres[0][0] for obj in scene.objects]
        pairs = [(a, b) for a in range(3) for b in range(3) if xs[b] - xs[a] >= RELATION_MARGIN]  # a left of b
        if pairs:
            break
    a, b = pairs[int(rng.integers(len(pairs)))]
    first, second = (a, b) if target == "yes" else (b, a)
    masks = scene.masks[0]
    return TaskExample(Image.fromarray(scene.frames[0]), (masks[first], masks[second]), target)


COUNT_OBJECTS = 4  # objects per counting scene; 0..3 of them inside the region
COUNT_INSIDE_MARGIN, COUNT_OUTSIDE_MARGIN = 2, 5  # px between objects and the region's edge, inside / outside


def _count_layout(rng: np.random.Generator, count: int) -> tuple[tuple[int, int, int, int], list[int], list] | None:
    """A box region and object centres with ``count`` objects wholly inside it and the rest wholly outside
    (clear of its edge), no two objects closer than ``OBJECT_GAP``; None when the draw does not fit."""
    size = IMAGE_SIZE
    w, h = (int(v) for v in rng.integers(44, 85, size=2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    box = (x0, y0, x0 + w, y0 + h)
    sides = [int(round(rng.uniform(*SIZES["small"]) * size)) for _ in range(COUNT_OBJECTS)]
    centres: list[tuple[float, float]] = []
    for j, side in enumerate(sides):
        inside, half = j < count, side / 2
        for _ in range(200):
            if inside:
                lo_x, hi_x = x0 + half + COUNT_INSIDE_MARGIN, x0 + w - half - COUNT_INSIDE_MARGIN
                lo_y, hi_y = y0 + half + COUNT_INSIDE_MARGIN, y0 + h - half - COUNT_INSIDE_MARGIN
                if lo_x > hi_x or lo_y > hi_y:
                    return None
                cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            else:
                cx, cy = rng.uniform(half, size - half, size=2)
                m = half + COUNT_OUTSIDE_MARGIN
                if cx + m > x0 and cx - m < x0 + w and cy + m > y0 and cy - m < y0 + h:
                    continue  # touches the region
            clear = all(
                abs(cx - ox) >= (side + sides[k]) / 2 + OBJECT_GAP or abs(cy - oy) >= (side + sides[k]) / 2 + OBJECT_GAP
                for k, (ox, oy) in enumerate(centres)
            )
            if clear:
                centres.append((float(cx), float(cy)))
                break
        else:
            return None
    return box, sides, centres


def count_example(seed: int, index: int) -> TaskExample:
    """Four small objects and a box region; the answer is how many objects lie wholly inside the box (0..3)."""
    rng, target = _rng("count", seed, index), COUNT_TASK.label(index)
    layout = None
    while layout is None:
        layout = _count_layout(rng, int(target))
    box, sides, centres = layout
    colours = _pick(rng, EXPERIMENT_COLOURS, COUNT_OBJECTS)
    objects = [
        SceneObject(
            track_id=j + 1,
            colour=colours[j],
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            size="small",
            side=sides[j],
            centres=(centres[j],),
        )
        for j in rng.permutation(COUNT_OBJECTS)
    ]
    scene = render(objects, replace(STILL, n_objects=COUNT_OBJECTS))
    region = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)  # (H, W)
    x0, y0, x1, y1 = box
    region[y0:y1, x0:x1] = True
    return TaskExample(Image.fromarray(scene.frames[0]), (region,), target)


MOTION_STEP = (10.0, 18.0)  # px an object moves between the two frames (of a 64 px frame)
MOTION_TOP = (IMAGE_SIZE - FRAME_SIZE) // 2  # frames sit in the middle band of the composite: rows 32..95


def _boxes_clear(centres: list[tuple[float, float]], sides: list[int]) -> bool:
    return all(
        abs(centres[a][0] - centres[b][0]) >= (sides[a] + sides[b]) / 2 + OBJECT_GAP / 2
        or abs(centres[a][1] - centres[b][1]) >= (sides[a] + sides[b]) / 2 + OBJECT_GAP / 2
        for a in range(len(centres))
        for b in range(a)
    )


def motion_example(seed: int, index: int) -> TaskExample:
    """A two-frame clip of three objects moving in three different directions; the regions are the designated
    object's masks on the first and the second frame (its masklet); the answer is its direction.

    The frames are put side by side in one image (first left, second right), which every family reads as
    a single image; the regions are given on that composite.
    """
    rng, target = _rng("motion", seed, index), MOTION_TASK.label(index)
    config = SceneConfig(image_size=FRAME_SIZE, n_objects=3, frames=2, colours=EXPERIMENT_COLOURS)
    while True:
        directions = [target, *_pick(rng, [d for d in DIRECTIONS if d != target], 2)]
        colours = _pick(rng, EXPERIMENT_COLOURS, 3)
        sizes = [("small", "large")[j] for j in rng.choice(2, size=3)]
        sides = [int(round(rng.uniform(*SIZES[word]) * FRAME_SIZE)) for word in sizes]
        starts, ends = [], []
        for direction, side in zip(directions, sides, strict=True):
            dx, dy = (float(rng.uniform(*MOTION_STEP)) * u for u in DIRECTIONS[direction])
            lo_x, hi_x = side / 2 + max(0.0, -dx), FRAME_SIZE - side / 2 - max(0.0, dx)
            lo_y, hi_y = side / 2 + max(0.0, -dy), FRAME_SIZE - side / 2 - max(0.0, dy)
            x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            starts.append((float(x), float(y)))
            ends.append((float(x + dx), float(y + dy)))
        if _boxes_clear(starts, sides) and _boxes_clear(ends, sides):
            break
    objects = [
        SceneObject(
            track_id=j + 1,
            colour=colours[j],
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            size=sizes[j],
            side=sides[j],
            centres=(starts[j], ends[j]),
        )
        for j in range(3)
    ]
    scene = render(objects, config)
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # (H, W, 3)
    regions = []
    for t in range(2):
        rows, cols = slice(MOTION_TOP, MOTION_TOP + FRAME_SIZE), slice(t * FRAME_SIZE, (t + 1) * FRAME_SIZE)
        image[rows, cols] = scene.frames[t]
        region = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)  # (H, W)
        region[rows, cols] = scene.masks[t][0]  # object 0 is the designated one
        regions.append(region)
    return TaskExample(Image.fromarray(image), tuple(regions), target)


COLOUR_TASK = Task(
    "colour", "What colour is {region1}?", "What colour is the object?", EXPERIMENT_COLOURS, 1, 1 / 3, colour_example
)
SHAPE_TASK = Task("shape", "What shape is {region1}?", "What shape is the object?", SHAPES, 1, 1 / 3, shape_example)
RELATION_TASK = Task(
    "relation", "Is {region1} left of {region2}?", "Is one object left of the other?", ("yes", "no"), 2, 0.5,
    relation_example,
)  # fmt: skip
COUNT_TASK = Task(
    "count", "How many objects in {region1}?", "How many objects in the region?", ("0", "1", "2", "3"), 1, 0.25,
    count_example,
)  # fmt: skip
MOTION_TASK = Task(
    "motion", "Which way did {region1} move to {region2}?", "Which way did the object move?",
    tuple(DIRECTIONS), 2, 1 / 3, motion_example,
)  # fmt: skip
#: colour: 3 distinct colours, so without the region the best is 1/3; shape: all 3 shapes in every scene, 1/3;
#: relation: balanced yes/no, 1/2; count: 4 objects in every scene, balanced 0..3, 1/4 (unless the layout
#: betrays the count); motion: 3 objects moving 3 different ways, 1/3.
TASKS: tuple[Task, ...] = (COLOUR_TASK, SHAPE_TASK, RELATION_TASK, COUNT_TASK, MOTION_TASK)


# -- designs as the experiment uses them ---------------------------------------------------------------------
@dataclass(frozen=True)
class MarkStyle:
    """How the Set-of-Mark arm draws its marks; the defaults are the marks of the committed runs.

    Attributes:
        ring: ring width in pixels, drawn just outside the region.
        place: where the numbered tag goes: ``"beside"`` the ring (no region pixel changes) or on the region's
            ``"centre"`` (``SetOfMarkTokenizer``'s ``tag_place``).
        font_size: the tag's digit height in pixels (the tag is that and a pixel on every side).
        pattern: the ring's pattern, ``"solid"`` or ``"checker"`` (``SetOfMarkTokenizer``'s ``ring_pattern``).
    """

    ring: int = 2
    place: str = "beside"
    font_size: int = 10
    pattern: str = "solid"

    @property
    def is_default(self) -> bool:
        return self == MarkStyle()

    def name(self) -> str:
        """A short name for folders and tables, e.g. ``ring4-centre-font6`` (``-checker`` for a checker ring)."""
        pattern = "" if self.pattern == "solid" else f"-{self.pattern}"
        return f"ring{self.ring}-{self.place}-font{self.font_size}{pattern}"


def tag_marks(max_regions: int = 4, style: MarkStyle = MarkStyle()) -> SetOfMarkTokenizer:
    """The Set-of-Mark arm's tokenizer: segvlm's ``"tag"`` style (by default a 2 px ring outside each mask and a
    numbered tag beside it, no region pixel changed), mark 1 grey and mark 2 orange (:data:`MARK_COLOURS`)."""
    return SetOfMarkTokenizer(
        style="tag",
        max_regions=max_regions,
        ring=style.ring,
        font_size=style.font_size,
        tag_colours=MARK_COLOURS,
        tag_place=style.place,
        ring_pattern=style.pattern,
    )


def draw_tags(image: Image.Image, masks: Sequence[np.ndarray], style: MarkStyle = MarkStyle()) -> Image.Image:
    """``image`` with ``masks`` marked as the Set-of-Mark arm marks them (:func:`tag_marks`)."""
    return tag_marks(style=style).draw(image, list(masks))


@dataclass(frozen=True)
class Arm:
    """One way of handing the designated regions to the model.

    Attributes:
        name: short name (a JSON key).
        design: the segvlm design it tests (``mask_tokenizer`` name), or ``"none"``.
        how: one line on how the regions reach the model.
        own_parameters: what the design trains on top of the VLM (empty for the zero-parameter designs).
        make: builds a fresh tokenizer.
        uses_regions: False for the baseline (the prompt then names no region).
    """

    name: str
    design: str
    how: str
    own_parameters: str
    make: Callable[[], MaskTokenizer]
    uses_regions: bool = True


ARMS: tuple[Arm, ...] = (
    Arm("no_region", "none", "the prompt says 'the object'", "", lambda: TextMaskTokenizer(), uses_regions=False),
    Arm("text", "text", "box as [x1,y1,x2,y2] on 0..1000 (the family's own format)", "", lambda: TextMaskTokenizer()),
    Arm("set_of_mark", "set_of_mark", "ring outside the mask + numbered tag beside it", "", tag_marks),
    Arm(
        "mask_tokens",
        "pooled",
        "patch-embedding and last-layer features pooled under the mask + a mask-shape token",
        "feature and shape projectors",
        lambda: MaskPooledTokenizer(feature_layers=(0, -1)),
    ),
    Arm(
        "mask_encoder",
        "encoder",
        "mask added to the patch embedding by a zero conv, one channel per region",
        "mask convolution",
        lambda: MaskEncoderPrompt(max_regions=2, channels="region"),
    ),
)


# -- the budget ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """Sizes of one mode. The quick and full per-task counts are multiples of 84, which every task's number of
    answers divides, so their labels are exactly balanced."""

    train_per_task: int
    eval_per_task: int
    steps: int
    batch_size: int
    eval_every: int
    lr: float = 3e-3
    warmup: int = 30
    pretrain_steps: int = 0
    pretrain_examples: int = 0


MODES: dict[str, Budget] = {
    "quick": Budget(672, 84, steps=300, batch_size=32, eval_every=100, pretrain_steps=1000, pretrain_examples=3200),
    "full": Budget(2688, 168, steps=2000, batch_size=32, eval_every=250, pretrain_steps=4000, pretrain_examples=12800),
    "smoke": Budget(4, 4, steps=2, batch_size=10, eval_every=1, warmup=1, pretrain_steps=2, pretrain_examples=8),
}


@dataclass
class Settings:
    """One experiment: which arms, tasks, seeds, model and budget.

    Attributes:
        mode: a key of :data:`MODES`.
        budget: its sizes (``--steps`` may override the steps).
        seeds: each seed gives the training scenes (stream ``seed``), the held-out scenes (stream
            ``seed + 1000``), the batch order and the designs' initialisation; the base model is shared.
        arms, tasks: names from :data:`ARMS` and :data:`TASKS`.
        model: None for the tiny SmolVLM at :data:`IMAGE_SIZE`, built and pretrained here (:func:`base_model`);
            else a hub id, a folder or ``tiny-random:<family>``, used as it is.
        work_dir: where the base model is built and pretrained, and found again by a later run with the same
            settings (a temporary folder when None).
        device: ``cpu``, ``cuda``... (``auto`` picks cuda when there is one).
        answer_prefix: text before every answer; ``auto`` tries "" and falls back to " " for BPE tokenizers.
        train_vision: train the vision tower in every arm (False freezes it, as the first experiment did).
        base_seed: seeds the tiny model's initialisation and its pretraining (one base model for all seeds,
            as one checkpoint is fine-tuned with several seeds in practice).
        pretrain_steps: image-description steps before the arms (None: the mode's for the tiny model, 0 for
            ``model``).
        cache: encode every batch once and keep it (see :class:`Batches`); False for large checkpoints.
        position_pretraining: the base model also learns to compare two objects' positions (:data:`POSITION`,
            region-free); off by default, which reproduces the committed full run.
        position_init: the tiny tower's position embeddings start as a 2D sine/cosine table at the scale of
            its patch embeddings (:func:`init_tower_positions`); off by default.
        lm_layers: language-model layers of the tiny model (2 by default, as ``build_smolvlm`` builds it).
        position_probes: also train the :data:`SIDE_PROBES` from the base model (:func:`measure_position_learning`).
        marks: how the Set-of-Mark arm draws its marks (the default reproduces the committed runs).
        mark_pretraining: the base model also learns "Where is mark <n>?" (:func:`mark_example`, marks drawn in
            ``marks``' style), as a real Set-of-Mark model has learnt to read marks; off by default.
        mark_probes: also measure whether the base model's image tokens show the marks (:class:`MarkVisibility`)
            and how fast it learns "Is mark 1 on the left?" (:func:`mark_side_probes`).
    """

    mode: str = "quick"
    budget: Budget = field(default_factory=lambda: MODES["quick"])
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = tuple(a.name for a in ARMS)
    tasks: tuple[str, ...] = tuple(t.name for t in TASKS)
    model: str | None = None
    work_dir: Path | None = None
    device: str = "auto"
    answer_prefix: str = "auto"
    train_vision: bool = True
    base_seed: int = 0
    pretrain_steps: int | None = None
    cache: bool = True
    position_pretraining: bool = False
    position_init: bool = False
    lm_layers: int = TINY_LM_LAYERS
    position_probes: bool = False
    marks: MarkStyle = field(default_factory=MarkStyle)
    mark_pretraining: bool = False
    mark_probes: bool = False


def experiment_arms(settings: Settings) -> list[Arm]:
    """The arms ``settings`` names, in :data:`ARMS` order, the Set-of-Mark arm drawing ``settings.marks``."""
    arms = [a for a in ARMS if a.name in settings.arms]
    if settings.marks.is_default:
        return arms
    som = partial(tag_marks, style=settings.marks)
    how = f"ring outside the mask + numbered tag ({settings.marks.name()})"
    return [replace(a, make=som, how=how) if a.name == "set_of_mark" else a for a in arms]


# -- data and the encoding cache ---------------------------------------------------------------------------------
@dataclass
class Example:
    """A task example with the task it belongs to."""

    task: Task
    example: TaskExample


def make_examples(tasks: Sequence[Task], per_task: int, seed: int) -> list[Example]:
    """``per_task`` examples of every task from scene stream ``seed`` (labels exactly balanced)."""
    return [Example(task, task.make(seed, i)) for task in tasks for i in range(per_task)]


@dataclass
class Packed:
    """A tensor stored small between uses: 0/1 maps as bool, pixel tensors as float16."""

    data: torch.Tensor
    dtype: torch.dtype

    @classmethod
    def of(cls, tensor: torch.Tensor) -> Packed:
        if tensor.dim() >= 3 and bool(((tensor == 0) | (tensor == 1)).all()):
            return cls(tensor.bool(), tensor.dtype)
        if tensor.is_floating_point() and tensor.dim() >= 4:
            return cls(tensor.half(), tensor.dtype)
        return cls(tensor, tensor.dtype)

    def unpack(self, device: torch.device) -> torch.Tensor:
        return self.data.to(device=device, dtype=self.dtype)


@dataclass
class CachedBatch:
    """A batch encoded once (mask tokenizer, prompts, processor) and reused at every visit.

    Attributes:
        inputs: the processor's tensors, packed.
        labels: (B, S) answer token ids, -100 elsewhere.
        tokens: the mask tokenizer's output without its images; its ``encoder_masks`` packed separately.
        encoder_masks: the mask maps of the encoder design, packed; or None.
        pooled: the parameter-free part of the pooled design (its embeddings are recomputed every visit,
            since its projectors train); or None.
        tasks: the task of every row.
        answers: the answer of every row (with the answer prefix).
    """

    inputs: dict[str, Packed | Any]
    labels: torch.Tensor
    tokens: MaskTokens
    encoder_masks: Packed | None
    pooled: PooledParts | None
    tasks: list[str]
    answers: list[str]


@dataclass
class PooledParts:
    """What ``MaskPooledTokenizer.encode`` computes without its projectors, for one batch.

    Attributes:
        coverage: per image, (R, P) fraction of every vision patch (or merged token) inside every region.
        shapes: per image, (R, shape_size**2 + 4) mask-shape descriptors.
    """

    coverage: list[torch.Tensor]
    shapes: list[torch.Tensor]


def pooled_parts(tokenizer: MaskPooledTokenizer, images, masks, inputs: dict[str, torch.Tensor]) -> PooledParts:
    """The parameter-free half of ``MaskPooledTokenizer.encode``: mask coverage and shape descriptors."""
    layout = tokenizer.vlm.layout
    grids = layout.grids(masks, inputs, list(images))
    coverage = [(g.coverage if tokenizer.feature_source == "vision" else g.merged).float() for g in grids]
    shapes = [
        torch.from_numpy(np.stack([shape_descriptor(m, tokenizer.shape_size) for m in image_masks]))
        for image_masks in masks
    ]  # per image (R, s*s+4)
    return PooledParts(coverage=coverage, shapes=shapes)


def pooled_embeds(tokenizer: MaskPooledTokenizer, parts: PooledParts, inputs: dict[str, torch.Tensor]):
    """The trainable half of ``MaskPooledTokenizer.encode`` (same computation; a test checks they agree):
    tower features pooled under each mask, projected, interleaved with the shape tokens.

    Returns:
        per image, (R * tokens_per_region, D_lm).
    """
    layout = tokenizer.vlm.layout
    with torch.no_grad():  # as in the design: gradients reach the projectors, not the tower, through this path
        features = layout.features(inputs, tokenizer.feature_layers)
    embeds = []
    for k, (coverage, shapes) in enumerate(zip(parts.coverage, parts.shapes, strict=True)):
        feats = features.patches[k] if tokenizer.feature_source == "vision" else features.merged[k]  # (P, Din)
        pooled = masked_mean(feats.float(), coverage.to(feats.device))  # (R, Din)
        tokens = tokenizer.feature_proj(pooled)  # (R, D)
        if tokenizer.shape_proj is not None:
            shape_tokens = tokenizer.shape_proj(shapes.to(tokens.device))  # (R, D)
            tokens = torch.stack([tokens, shape_tokens], dim=1).flatten(0, 1)  # (R*2, D)
        embeds.append(tokens)
    return embeds


def encode(vlm, arm: Arm, examples: Sequence[Example], answer_prefix: str) -> CachedBatch:
    """Encode a batch the way ``segvlm.training.trainer.encode_batch`` does, and keep what does not train."""
    batch = RegionBatch(
        images=[e.example.image for e in examples],
        regions=[list(e.example.regions) if arm.uses_regions else [] for e in examples],
        prompts=[
            e.example.question or (e.task.question if arm.uses_regions else e.task.question_without_regions)
            for e in examples
        ],
        answers=[answer_prefix + e.example.answer for e in examples],
    )
    encoded = encode_batch(vlm, batch, with_answers=True)
    tokens = encoded.tokens
    pooled = None
    if tokens.region_embeds is not None:
        masks = region_masks(batch.images, batch.regions, vlm.mask_tokenizer.max_regions)
        pooled = pooled_parts(vlm.mask_tokenizer, batch.images, masks, encoded.inputs)
    encoder_masks = Packed.of(tokens.encoder_masks) if tokens.encoder_masks is not None else None
    slim = replace(tokens, images=[], region_embeds=None, encoder_masks=None)
    return CachedBatch(
        inputs={k: Packed.of(v) if torch.is_tensor(v) else v for k, v in encoded.inputs.items()},
        labels=encoded.labels,
        tokens=slim,
        encoder_masks=encoder_masks,
        pooled=pooled,
        tasks=[e.task.name for e in examples],
        answers=batch.answers,
    )


@dataclass
class Forward:
    """One forward pass of a batch.

    Attributes:
        loss: mean answer-token cross-entropy, ().
        logits: (B, S, V) next-token logits.
        labels: (B, S) answer token ids, -100 elsewhere.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def first_logits(self) -> torch.Tensor:
        """(B, V): the logits that predict each answer's first token."""
        first = (self.labels != -100).float().argmax(-1)  # (B,) position of each answer's first token
        rows = torch.arange(self.logits.shape[0], device=self.logits.device)  # (B,)
        return self.logits[rows, first - 1]

    def answer_hits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row, teacher-forced: (first answer token right, answer tokens right, answer tokens), each (B,)."""
        targets = self.labels[:, 1:]  # (B, S-1) position t predicts token t+1
        picked = self.logits[:, :-1].argmax(-1)  # (B, S-1)
        scored = targets != -100  # (B, S-1)
        first = scored.float().argmax(-1)  # (B,)
        rows = torch.arange(targets.shape[0], device=targets.device)  # (B,)
        return picked[rows, first] == targets[rows, first], ((picked == targets) & scored).sum(-1), scored.sum(-1)


def forward(vlm, batch: CachedBatch) -> Forward:
    """Run the model on a cached batch with the regions injected (embeddings at placeholders, masks in the tower)."""
    device = vlm.device
    inputs = {k: v.unpack(device) if isinstance(v, Packed) else v for k, v in batch.inputs.items()}
    tokens = batch.tokens
    if batch.encoder_masks is not None:
        tokens = replace(tokens, encoder_masks=batch.encoder_masks.unpack(device))
    if batch.pooled is not None:
        tokens = replace(tokens, region_embeds=pooled_embeds(vlm.mask_tokenizer, batch.pooled, inputs))
    labels = batch.labels.to(device)
    with vlm.adapters(tokens):
        logits = vlm.model(**inputs).logits  # (B, S, V)
    return Forward(loss=answer_loss(logits, labels), logits=logits, labels=labels)


# -- runs ------------------------------------------------------------------------------------------------------
@dataclass
class TaskScore:
    """Held-out accuracy and answer loss of one task."""

    accuracy: float
    loss: float
    examples: int


@dataclass
class RunResult:
    """One arm trained with one seed.

    Attributes:
        scores: final held-out score per task.
        curve: (step, {task: accuracy}) at every evaluation, step 0 included.
        train_loss: (step, mean training loss over the steps since the last record).
        trainable_parameters: trained parameter count per group (``lm``, ``connector``, ``vision``, ``design``).
        seconds: wall time of the run (setup, encoding, training, evaluation).
        train_seconds: wall time of the optimizer steps alone.
    """

    arm: str
    seed: int
    steps: int
    answer_prefix: str
    scores: dict[str, TaskScore]
    curve: list[tuple[int, dict[str, float]]]
    train_loss: list[tuple[int, float]]
    trainable_parameters: dict[str, int]
    seconds: float
    train_seconds: float


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup, then cosine to 0 at the last step (as ``segvlm.training``'s cosine schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _first_token_ids(vlm, task: Task, answer_prefix: str) -> list[int]:
    ids = [vlm.tokenizer(answer_prefix + c, add_special_tokens=False)["input_ids"][0] for c in task.choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the {task.name} answers {task.choices} do not start with different tokens")
    return ids


@torch.no_grad()
def evaluate(vlm, batches: Sequence[CachedBatch], tasks: Sequence[Task], answer_prefix: str) -> dict[str, TaskScore]:
    """Per task: the share of held-out rows whose answer wins the argmax over the task's choices' first tokens."""
    vlm.model.eval()
    by_name = {t.name: t for t in tasks}
    ids = {t.name: torch.tensor(_first_token_ids(vlm, t, answer_prefix)) for t in tasks}
    totals = {t.name: [0, 0.0, 0] for t in tasks}  # correct, loss * rows, rows
    for batch in batches:
        out = forward(vlm, batch)
        first, loss = out.first_logits(), out.loss  # (B, V), ()
        for row, (name, answer) in enumerate(zip(batch.tasks, batch.answers, strict=True)):
            task = by_name[name]
            picked = int(first[row, ids[name].to(first.device)].argmax())
            totals[name][0] += int(task.choices[picked] == answer[len(answer_prefix) :])
        name = batch.tasks[0]  # evaluation batches hold one task each
        totals[name][1] += float(loss) * len(batch.tasks)
        totals[name][2] += len(batch.tasks)
    vlm.model.train()
    return {
        name: TaskScore(accuracy=correct / max(n, 1), loss=loss_sum / max(n, 1), examples=n)
        for name, (correct, loss_sum, n) in totals.items()
    }


def _resolve_prefix(vlm, arm: Arm, example: Example, setting: str) -> str:
    """The answer prefix: as given, or for ``auto`` "" when the answer tokenizes alone as inside the prompt."""
    if setting != "auto":
        return setting
    try:
        encode(vlm, arm, [example], "")
        return ""
    except ValueError:
        return " "


def load_vlm(model_dir: str, arm: Arm, device: str, train_vision: bool = True):
    """The VLM with the arm's tokenizer; the language model, the connector and (unless ``train_vision`` is
    False) the vision tower train, and so do the design's own parameters."""
    from segvlm.vlm import MaskAwareVLM

    vlm = MaskAwareVLM.from_pretrained(model_dir, mask_tokenizer=arm.make(), device=device)
    for name, param in vlm.model.named_parameters():
        param.requires_grad = train_vision or param_group(name) != "vision"
    vlm.model.train()
    return vlm


def chunks(examples: Sequence[Example], size: int) -> list[list[Example]]:
    """Consecutive groups of ``size`` examples (the last may be shorter)."""
    return [list(examples[s : s + size]) for s in range(0, len(examples), size)]


class Batches(Sequence[CachedBatch]):
    """Fixed batches of examples: with ``cache``, each is encoded once and kept (the tiny model: a 128 px image
    is 100 kB in float16); without, each is encoded again at every visit (real checkpoints, whose tiled
    high-resolution pixels would not fit in memory). Both give the same batches in the same order.
    """

    def __init__(self, vlm, arm: Arm, groups: Sequence[Sequence[Example]], prefix: str, cache: bool = True):
        self.vlm, self.arm, self.prefix, self.groups = vlm, arm, prefix, [list(g) for g in groups]
        self.cached = [encode(vlm, arm, group, prefix) for group in self.groups] if cache else None

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if self.cached is not None:
            return self.cached[index]
        return encode(self.vlm, self.arm, self.groups[index], self.prefix)


@dataclass
class LoopResult:
    """What :func:`train_loop` did: the loss record and the time spent in optimizer steps."""

    train_loss: list[tuple[int, float]]
    train_seconds: float


def train_loop(
    vlm,
    params: list[nn.Parameter],
    batches: Sequence[CachedBatch],
    steps: int,
    lr: float,
    warmup: int,
    seed: int,
    every: int = 0,
    on_every: Callable[[int], None] = lambda _: None,
) -> LoopResult:
    """AdamW (betas 0.9/0.98, no weight decay), warmup then cosine to 0, gradient clip 1.0, over fixed batches
    visited in a new seeded order every epoch; ``on_every(step)`` runs every ``every`` steps and at the end."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps, warmup))
    losses: list[float] = []
    record: list[tuple[int, float]] = []
    seconds = 0.0
    epoch_order: list[int] = []
    for step in range(steps):
        epoch, position = divmod(step, len(batches))
        if position == 0:
            generator = torch.Generator().manual_seed(seed * 7919 + epoch)
            epoch_order = torch.randperm(len(batches), generator=generator).tolist()
        tick = time.perf_counter()
        loss = forward(vlm, batches[epoch_order[position]]).loss
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - tick
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 10 == 0 or done == steps:
            record.append((done, float(np.mean(losses))))
            losses = []
        if (every and done % every == 0) or done == steps:
            on_every(done)
    return LoopResult(train_loss=record, train_seconds=seconds)


def run_arm(
    arm: Arm,
    seed: int,
    model_dir: str,
    train: Sequence[Example],
    held_out: Sequence[Example],
    tasks: Sequence[Task],
    settings: Settings,
    log: Callable[[str], None] = lambda _: None,
) -> RunResult:
    """Train one arm from the base model on ``train`` (all tasks at once); score every task on ``held_out``."""
    started = time.perf_counter()
    budget, device = settings.budget, _device(settings.device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    vlm = load_vlm(model_dir, arm, device, settings.train_vision)
    prefix = _resolve_prefix(vlm, arm, train[0], settings.answer_prefix)
    order = example_order(len(train), seed, 0, len(train))  # fixed batch membership, shuffled every epoch
    train_batches = Batches(vlm, arm, chunks([train[i] for i in order], budget.batch_size), prefix, settings.cache)
    groups = [group for task in tasks for group in chunks([e for e in held_out if e.task is task], 64)]
    eval_batches = Batches(vlm, arm, groups, prefix, settings.cache)  # one task per batch
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    counts = Counter({"lm": 0, "connector": 0, "vision": 0, "design": 0})
    for name, p in vlm.model.named_parameters():
        counts[param_group(name)] += p.numel() if p.requires_grad else 0
    if isinstance(vlm.mask_tokenizer, nn.Module):
        for p in vlm.mask_tokenizer.parameters():
            p.requires_grad = True
            counts["design"] += p.numel()
            params.append(p)
    scores = evaluate(vlm, eval_batches, tasks, prefix)
    curve = [(0, {k: v.accuracy for k, v in scores.items()})]

    def score(step: int) -> None:
        nonlocal scores
        scores = evaluate(vlm, eval_batches, tasks, prefix)
        curve.append((step, {k: v.accuracy for k, v in scores.items()}))
        log(f"  {arm.name} seed {seed} step {step}: " + " ".join(f"{k} {v.accuracy:.2f}" for k, v in scores.items()))

    loop = train_loop(
        vlm, params, train_batches, budget.steps, budget.lr, budget.warmup, seed, budget.eval_every, score
    )
    return RunResult(
        arm=arm.name,
        seed=seed,
        steps=budget.steps,
        answer_prefix=prefix,
        scores=scores,
        curve=curve,
        train_loss=loop.train_loss,
        trainable_parameters=dict(counts),
        seconds=time.perf_counter() - started,
        train_seconds=loop.train_seconds,
    )


# -- the shared base model: a VLM that can see ----------------------------------------------------------------
def _base_scene(rng: np.random.Generator):
    """A still scene of 2-4 objects of distinct colours (all small when there are 4)."""
    k = int(rng.integers(2, 5))
    colours = _pick(rng, EXPERIMENT_COLOURS, k)
    shapes = [SHAPES[j] for j in rng.choice(len(SHAPES), size=k)]
    sizes = ["small"] * k if k == 4 else [("small", "large")[j] for j in rng.choice(2, size=k)]
    return layout_scene(rng, colours, shapes, sizes, STILL)


def describe_example(seed: int, index: int) -> TaskExample:
    """A scene and its description: every object's colour and shape, in the alphabetical order of the colours.

    Alphabetical, not left to right: naming what is present is learnt several times faster (first colour
    right 0.65 against 0.29 after 200 steps in a trial), and where things are comes from :func:`ground_example`.
    """
    scene = _base_scene(_rng("describe", seed, index))
    ordered = sorted(scene.objects, key=lambda o: o.colour)
    return TaskExample(Image.fromarray(scene.frames[0]), (), ", ".join(f"{o.colour} {o.shape}" for o in ordered))


def ground_example(seed: int, index: int) -> TaskExample:
    """A scene, "Where is the <colour> object?", and that object's mask; the answer (its box in the family's
    own coordinate format) is written by :func:`with_box_answers` once the model's family is known."""
    rng = _rng("ground", seed, index)
    scene = _base_scene(rng)
    k = int(rng.integers(len(scene.objects)))
    question = f"Where is the {scene.objects[k].colour} object?"
    return TaskExample(Image.fromarray(scene.frames[0]), (scene.masks[0][k],), "", question=question)


POSITION_MARGIN = 8  # px: the two centres differ at least this much along the asked axis (as RELATION_MARGIN)
POSITION_RELATIONS = ("left of", "above")


def position_example(seed: int, index: int) -> TaskExample:
    """A scene and "Is the <colour> object left of / above the <colour> object?", answered yes or no.

    Region-free (objects are named by colour; no region is input, no mark drawn), it asks the base model to
    read where two objects are from its image tokens and compare them, the skill every design that leaves
    positions in the image needs (see :func:`base_tasks`). Example ``index`` asks "left of" for
    even ``index // 2`` and "above" otherwise; its answer is "yes" for even ``index``, so any multiple of 4
    examples is balanced in both.
    """
    rng = _rng("position", seed, index)
    relation, answer = POSITION_RELATIONS[(index // 2) % 2], ("yes", "no")[index % 2]
    axis = 0 if relation == "left of" else 1
    while True:
        scene = _base_scene(rng)
        coords = [obj.centres[0][axis] for obj in scene.objects]
        n = len(coords)
        pairs = [(a, b) for a in range(n) for b in range(n) if coords[b] - coords[a] >= POSITION_MARGIN]  # a before b
        if pairs:
            break
    a, b = pairs[int(rng.integers(len(pairs)))]
    first, second = (a, b) if answer == "yes" else (b, a)
    colours = scene.objects[first].colour, scene.objects[second].colour
    question = f"Is the {colours[0]} object {relation} the {colours[1]} object?"
    return TaskExample(Image.fromarray(scene.frames[0]), (), answer, question=question)


MARK_CELLS = 4  # "Where is mark <n>?" is answered on a 4 x 4 grid, the LM's image tokens (32 px each)


def mark_example(seed: int, index: int, style: MarkStyle = MarkStyle()) -> TaskExample:
    """A base scene with two of its objects marked as the Set-of-Mark arm marks them (mark 1 grey, mark 2
    orange), "Where is mark <n>?", answered with the cell of that object's centre on a :data:`MARK_CELLS` grid:
    column then row, from 1 at the top left ("2 3": second column, third row). ``n`` is 1 for even ``index``.

    The skill a Set-of-Mark model brings from its own training: find a mark and say where it is. No region is
    input; the marks are in the image."""
    rng = _rng("mark", seed, index)
    scene = _base_scene(rng)
    pair = [int(j) for j in rng.choice(len(scene.objects), size=2, replace=False)]
    n = 1 + index % 2
    image = draw_tags(Image.fromarray(scene.frames[0]), [scene.masks[0][j] for j in pair], style)
    x, y = scene.objects[pair[n - 1]].centres[0]
    cell = IMAGE_SIZE / MARK_CELLS
    return TaskExample(image, (), f"{int(x // cell) + 1} {int(y // cell) + 1}", question=f"Where is mark {n}?")


def with_box_answers(vlm, examples: Sequence[Example]) -> list[Example]:
    """Grounding examples with their answer: the region's box as ``TextMaskTokenizer`` writes it for this family."""
    writer = TextMaskTokenizer()
    writer.bind(vlm)
    out = []
    for e in examples:
        if e.task.name == GROUND.name:
            width, height = e.example.image.size
            e = Example(e.task, replace(e.example, answer=writer.region_text(e.example.regions[0], width, height)))
        out.append(e)
    return out


DESCRIBE = Task("describe", "", "Describe the image.", (), 0, 0.0, describe_example)
GROUND = Task("ground", "", "", (), 0, 0.0, ground_example)
POSITION = Task("position", "", "", ("yes", "no"), 0, 0.5, position_example)


def base_tasks(settings: Settings) -> list[Task]:
    """The base model's tasks: description and grounding, plus :data:`POSITION` with ``--position-pretraining``
    (in the quick budget it stays at chance: EXPERIMENTS.md, round 2, the section on positions) and "Where is
    mark <n>?" (:func:`mark_example`) with ``--mark-pretraining``. Each extra task brings as many examples as
    each of the first two and adds half the steps, so description and grounding keep theirs."""
    tasks = [DESCRIBE, GROUND]
    if settings.position_pretraining:
        tasks.append(POSITION)
    if settings.mark_pretraining:
        tasks.append(Task("mark", "", "", (), 0, 0.0, partial(mark_example, style=settings.marks)))
    return tasks


BASE_ARM = Arm("base", "none", "no regions", "", lambda: TextMaskTokenizer(), uses_regions=False)


@dataclass
class PretrainResult:
    """The shared base model of one seed.

    Attributes:
        seed: the seed (model init, scenes ``seed + 2000``, batch order).
        steps: optimizer steps of image description.
        curve: (step, per task (``describe``, ``ground``) held-out teacher-forced answer scores).
        grounding: the boxes the final base model writes for held-out objects, scored by IoU.
        train_loss: (step, mean training loss).
        seconds: wall time of the pretraining.
        folder: where the base model was saved.
        reused: True when an earlier run's base model (same settings, ``--work-dir``) was loaded instead.
    """

    seed: int
    steps: int
    curve: list[tuple[int, dict[str, AnswerScore]]]
    grounding: GroundingScore
    train_loss: list[tuple[int, float]]
    seconds: float
    folder: str
    reused: bool = False


@dataclass
class AnswerScore:
    """Free-form answers scored teacher-forced: the share of answers whose first token is right (for a
    description, the first colour: whether the model sees what is there), of answer tokens right, and of
    answers right in full."""

    first: float
    tokens: float
    exact: float


@torch.no_grad()
def answer_scores(vlm, batches: Sequence[CachedBatch]) -> dict[str, AnswerScore]:
    """Per task, how well the model writes the held-out answers (each token predicted from the true prefix)."""
    vlm.model.eval()
    sums: dict[str, list[int]] = {}  # task -> [first right, right tokens, tokens, exact rows, rows]
    for batch in batches:
        first, right, count = forward(vlm, batch).answer_hits()  # (B,) each
        for name, f, r, n in zip(batch.tasks, first.tolist(), right.tolist(), count.tolist(), strict=True):
            row = sums.setdefault(name, [0, 0, 0, 0, 0])
            for k, value in enumerate((int(f), r, n, int(r == n), 1)):
                row[k] += value
    vlm.model.train()
    return {
        name: AnswerScore(first=f / max(m, 1), tokens=r / max(n, 1), exact=e / max(m, 1))
        for name, (f, r, n, e, m) in sums.items()
    }


def sincos_positions(side: int, width: int) -> torch.Tensor:
    """(side * side, width) 2D sine/cosine position table for a ``side`` x ``side`` patch grid, row-major.

    The first half of the channels depends on the patch's column only, the second half on its row; each half
    holds sines and cosines at ``width // 4`` frequencies, from a quarter period across the grid (monotonic:
    left-to-right order is one linear read-out) to a period of 4 patches. Channels left over are zero.
    """
    quarter = width // 4
    omega = math.pi * torch.arange(1, quarter + 1, dtype=torch.float32) / (2 * side)  # (Q,) radians per patch
    angles = torch.arange(side, dtype=torch.float32)[:, None] * omega  # (side, Q)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (side, 2Q)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")  # (side, side) each
    table = torch.cat([axis[cols.flatten()], axis[rows.flatten()]], dim=1)  # (side*side, 4Q)
    return torch.nn.functional.pad(table, (0, width - table.shape[1]))


def init_tower_positions(vlm, images: Sequence[Image.Image]) -> float:
    """Give the tiny tower position embeddings it can be read by: :func:`sincos_positions`, scaled to the RMS
    of its patch embeddings on ``images`` (they stay trainable).

    Built with ``transformers``' default init, the position table has standard deviation 0.02 while the patch
    convolution's outputs (768 inputs of std-0.02 weights) have an RMS near 0.6, 30x more, and after
    pretraining 100x more (``position_reading`` in the JSON): where a patch is barely changes what the tower
    sees. A pretrained SigLIP checkpoint has learnt position embeddings that matter; this gives the tiny one
    that property from the start, for every arm alike.

    Returns:
        the scale applied (the patch embeddings' RMS).
    """
    embeddings = vlm.layout.embedding_module()
    table = embeddings.position_embedding.weight  # (side*side, D)
    side = math.isqrt(table.shape[0])
    with torch.no_grad():
        pixels = vlm.layout.image_inputs(list(images))["pixel_values"][:, 0]  # (B, 3, H, W), one tile each
        scale = float(embeddings.patch_embedding(pixels.to(table.device, table.dtype)).pow(2).mean().sqrt())
        fresh = sincos_positions(side, table.shape[1])
        table.copy_(fresh * scale / fresh.pow(2).mean().sqrt())
    return scale


def pretrain(model_dir: str, seed: int, settings: Settings, folder: Path, log: Callable[[str], None]) -> PretrainResult:
    """Teach the randomly initialised VLM to see: describe whole scenes, and give the box of an object named by
    its colour in the family's coordinate format (the grounding that text coordinates presuppose). No region
    is ever given as input, no mark is drawn. Every parameter trains; the result is saved to ``folder``, and
    every arm starts from it, as every design starts from a pretrained base model in practice."""
    started = time.perf_counter()
    budget, device = settings.budget, _device(settings.device)
    torch.manual_seed(seed)
    vlm = load_vlm(model_dir, BASE_ARM, device, train_vision=True)
    if settings.position_init:
        scale = init_tower_positions(
            vlm, [Image.fromarray(_base_scene(_rng("scale", seed, i)).frames[0]) for i in range(32)]
        )
        log(f"  tower position embeddings: 2D sine/cosine at the patch embeddings' RMS {scale:.2f}")
    tasks = base_tasks(settings)
    train = with_box_answers(vlm, make_examples(tasks, budget.pretrain_examples // 2, seed + 2000))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    train = [train[i] for i in order]  # describe and ground mixed in every batch
    held_out = with_box_answers(vlm, make_examples(tasks, max(budget.eval_per_task // 2, 2), seed + 3000))
    batches = Batches(vlm, BASE_ARM, chunks(train, budget.batch_size), "", settings.cache)
    eval_batches = Batches(vlm, BASE_ARM, chunks(held_out, 64), "", settings.cache)
    curve = [(0, answer_scores(vlm, eval_batches))]

    def score(step: int) -> None:
        curve.append((step, answer_scores(vlm, eval_batches)))
        text = " ".join(
            f"{k}: first {v.first:.2f} tokens {v.tokens:.2f} exact {v.exact:.2f}" for k, v in curve[-1][1].items()
        )
        log(f"  base seed {seed} step {step}: {text}")

    params = [p for p in vlm.model.parameters()]
    loop = train_loop(
        vlm, params, batches, budget.pretrain_steps, budget.lr, budget.warmup, seed, budget.eval_every, score
    )
    grounding = grounding_score(vlm, held_out)
    log(f"  base seed {seed}: greedy boxes mean IoU {grounding.mean_iou:.2f}, IoU >= 0.5 for {grounding.hit_rate:.2f}")
    vlm.model.save_pretrained(folder)
    vlm.processor.save_pretrained(folder)
    return PretrainResult(
        seed=seed,
        steps=budget.pretrain_steps,
        curve=curve,
        grounding=grounding,
        train_loss=loop.train_loss,
        seconds=time.perf_counter() - started,
        folder=str(folder),
    )


@dataclass
class GroundingScore:
    """How well the base model writes the box of a named object (greedy decoding, parsed by the family's format).

    Attributes:
        mean_iou: mean IoU of the written box with the true one (0 when no box can be parsed).
        hit_rate: share of boxes with IoU >= 0.5.
        examples: how many held-out questions.
    """

    mean_iou: float
    hit_rate: float
    examples: int


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@torch.no_grad()
def grounding_score(vlm, examples: Sequence[Example]) -> GroundingScore:
    """Greedy answers to the held-out "Where is the <colour> object?" questions, scored by box IoU: whether the
    base model has learnt to tie its coordinate format to image positions, which text coordinates rely on."""
    ground = [e for e in examples if e.task.name == GROUND.name]
    if not ground:
        return GroundingScore(0.0, 0.0, 0)
    vlm.model.eval()
    images = [e.example.image for e in ground]
    texts = vlm.generate(images, [[] for _ in ground], [e.example.question for e in ground], max_new_tokens=24)
    vlm.model.train()
    writer = TextMaskTokenizer()
    writer.bind(vlm)
    ious = []
    for e, text in zip(ground, texts, strict=True):
        truth = writer.decode(e.example.answer, e.example.image.size)[0].box_xyxy
        parsed = writer.decode(text, e.example.image.size)
        ious.append(_box_iou(parsed[0].box_xyxy, truth) if parsed else 0.0)
    return GroundingScore(float(np.mean(ious)), float(np.mean([iou >= 0.5 for iou in ious])), len(ious))


def _device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _tiny_name(settings: Settings) -> str:
    """The folder name of the tiny model as built (before any pretraining)."""
    layers = "" if settings.lm_layers == TINY_LM_LAYERS else f"-lm{settings.lm_layers}"
    return f"tiny-smolvlm-{IMAGE_SIZE}px-seed{settings.base_seed}{layers}"


def build_tiny(folder: Path, settings: Settings) -> None:
    """The tiny SmolVLM of ``segvlm.testing.vlm.build_smolvlm`` at :data:`IMAGE_SIZE`, with ``settings.lm_layers``
    language-model layers (re-initialised from the same seed when that is not the builder's 2)."""
    from segvlm.testing.vlm import build_smolvlm

    build_smolvlm(folder, image_size=IMAGE_SIZE, seed=settings.base_seed)
    if settings.lm_layers != TINY_LM_LAYERS:
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

        config = SmolVLMConfig.from_pretrained(folder)
        config.text_config.num_hidden_layers = settings.lm_layers
        torch.manual_seed(settings.base_seed)
        SmolVLMForConditionalGeneration(config).save_pretrained(folder)


def base_model(settings: Settings, root: Path, log: Callable[[str], None]) -> tuple[str, PretrainResult | None]:
    """The folder every arm starts from, and its pretraining record.

    The default is the tiny SmolVLM at :data:`IMAGE_SIZE` built with ``settings.base_seed`` and pretrained by
    :func:`pretrain`; with ``--work-dir`` a base already pretrained there with the same settings is reused.
    A ``settings.model`` (hub id, folder or ``tiny-random:<family>``) is used as it is, unless
    ``pretrain_steps`` asks for pretraining.
    """
    steps = settings.pretrain_steps
    if settings.model is not None:
        from segvlm.resolve import resolve_model

        if settings.position_init:
            raise ValueError("--position-init re-initialises the tiny model's tower; a checkpoint keeps its own")

        source, name = resolve_model(settings.model), settings.model.replace("/", "--").replace(":", "-")
        steps = steps or 0
    else:
        name = _tiny_name(settings)
        source = str(root / name)
        if not (Path(source) / "config.json").is_file():
            build_tiny(Path(source), settings)
        if steps is None:
            steps = settings.budget.pretrain_steps
            steps = round(steps * len(base_tasks(settings)) / 2)
    if steps == 0:
        return source, None
    folder = root / f"{name}-base-{steps}steps-{settings.budget.pretrain_examples}ex-{settings.budget.batch_size}b"
    if settings.position_pretraining:
        folder = folder.with_name(folder.name + "-position")
    if settings.position_init:
        folder = folder.with_name(folder.name + "-sincos")
    if settings.mark_pretraining:
        marks = "" if settings.marks.is_default else f"-{settings.marks.name()}"
        folder = folder.with_name(folder.name + f"-marks{marks}")
    record = folder / "pretrain.json"
    if record.is_file():
        log(f"reusing the base model in {folder}")
        saved = json.loads(record.read_text())
        saved["curve"] = [(step, {k: AnswerScore(**v) for k, v in scores.items()}) for step, scores in saved["curve"]]
        saved["grounding"] = GroundingScore(**saved["grounding"])
        return str(folder), PretrainResult(**{**saved, "reused": True})
    budget = replace(settings.budget, pretrain_steps=steps)
    result = pretrain(source, settings.base_seed, replace(settings, budget=budget), folder, log)
    record.write_text(json.dumps(asdict(result)))
    return str(folder), result


# -- measurements and the report ------------------------------------------------------------------------------------
@dataclass
class OverlayMeasurement:
    """How much of the designated objects' own pixels a mark style overwrites, on generated colour scenes.

    Attributes:
        style: the mark style.
        image_size: image side in pixels.
        changed_fraction: mean over scenes of (designated pixels whose colour changed) / (designated pixels).
        scenes: how many scenes were measured.
    """

    style: str
    image_size: int
    changed_fraction: float
    scenes: int


def measure_overlays(scenes: int = 30) -> list[OverlayMeasurement]:
    """The share of the designated object's pixels each mark style changes: the stock styles at 64 px (the
    first experiment) and at 128 px, and the tags of this experiment at 128 px."""
    out = []
    for size in (64, IMAGE_SIZE):
        config = SceneConfig(image_size=size, n_objects=3, colours=EXPERIMENT_COLOURS)
        styles: list[tuple[str, Callable]] = [
            ("alpha", lambda img, m: draw_marks(img, m, style="alpha")),
            ("contour", lambda img, m: draw_marks(img, m, style="contour")),
        ]
        if size == IMAGE_SIZE:
            styles.append(("ring_and_tag", lambda img, m: draw_tags(img, m)))
        for name, draw in styles:
            fractions = []
            for index in range(scenes):
                scene = make_scene(7, index, config)
                mask = scene.masks[0][0]
                image = Image.fromarray(scene.frames[0])
                marked = np.asarray(draw(image, [mask]))  # (H, W, 3)
                changed = (marked != scene.frames[0]).any(-1) & mask  # (H, W)
                fractions.append(changed.sum() / mask.sum())
            out.append(OverlayMeasurement(name, size, float(np.mean(fractions)), scenes))
    return out


@dataclass
class MarkCoverage:
    """How much of its designated regions a mark style covers, on one task's scenes.

    Attributes:
        task: the task name.
        style: :meth:`MarkStyle.name`.
        mean: mean over regions of (region pixels whose colour changed) / (region pixels).
        high: the largest such share.
        regions: how many regions were measured.
    """

    task: str
    style: str
    mean: float
    high: float
    regions: int


def measure_mark_coverage(style: MarkStyle, examples: int = 30) -> list[MarkCoverage]:
    """:class:`MarkCoverage` of ``style`` on every task (scene stream 7, not used for training)."""
    out = []
    for task in TASKS:
        shares = []
        for index in range(examples):
            example = task.make(7, index)
            marked = np.asarray(draw_tags(example.image, list(example.regions), style))  # (H, W, 3)
            changed = (marked != np.asarray(example.image)).any(-1)  # (H, W)
            shares += [(changed & region).sum() / region.sum() for region in example.regions]
        out.append(MarkCoverage(task.name, style.name(), float(np.mean(shares)), float(np.max(shares)), len(shares)))
    return out


@dataclass
class PositionReading:
    """Whether where things are reaches the language model, for one model (the random init or the base).

    Attributes:
        model: ``"init"`` (as built, before pretraining) or ``"base"`` (what every arm starts from).
        position_rms: RMS of the vision tower's position embeddings.
        patch_rms: RMS of its patch embeddings (the convolution's outputs) on held-out scenes.
        token_column_probe: held-out accuracy of a linear read-out (ridge regression on one-hot targets) of
            each LM image token's grid column (4 columns: chance 0.25) from that token's features alone.
        token_row_probe: the same for its grid row.
        ground_first_digits: teacher-forced accuracy of the first digit of x1 and of y1 in the held-out
            "Where is the <colour> object?" answers (the coarse position of the object; base only, else 0).
        ground_first_digits_majority: the same for always writing the most frequent digit.
        images: held-out scenes the probes use (two thirds fit, one third scored).
    """

    model: str
    position_rms: float
    patch_rms: float
    token_column_probe: float
    token_row_probe: float
    ground_first_digits: float
    ground_first_digits_majority: float
    images: int


def _ridge_predictions(x: torch.Tensor, y: torch.Tensor, classes: int, fit: int, lam: float = 1e-2) -> torch.Tensor:
    """(N - fit,): the classes a ridge regression onto one-hot ``y`` fitted on rows ``:fit`` predicts for the rest."""
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # (N, D+1)
    target = nn.functional.one_hot(y, classes).double()  # (N, C)
    gram = x[:fit].T @ x[:fit] + lam * torch.eye(x.shape[1], dtype=torch.float64)
    weights = torch.linalg.solve(gram, x[:fit].T @ target[:fit])  # (D+1, C)
    return (x[fit:] @ weights).argmax(1)


def _ridge_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, fit: int, lam: float = 1e-2) -> float:
    """Accuracy on rows ``fit:`` of a ridge regression onto one-hot ``y`` fitted on rows ``:fit``."""
    return float((_ridge_predictions(x, y, classes, fit, lam) == y[fit:]).double().mean())


@dataclass
class MarkVisibility:
    """Whether a mark reaches the language model: a linear read-out (ridge regression, as in
    :class:`PositionReading`) of whether an LM image token's cell holds pixels of mark 1 (its ring or tag), from
    that token's features alone, on relation scenes marked in ``style``.

    Attributes:
        model: ``"base"`` (what every arm starts from).
        style: :meth:`MarkStyle.name`.
        balanced_accuracy: the held-out read-out's mean accuracy over tokens with and without mark-1 pixels
            (chance 0.5).
        marked_tokens: the share of tokens that hold mark-1 pixels.
        images: scenes (two thirds fit, one third scored).
    """

    model: str
    style: str
    balanced_accuracy: float
    marked_tokens: float
    images: int


def _image_tokens(vlm, images: Sequence[Image.Image]) -> torch.Tensor:
    """(N, M, D_lm): the last-layer features of every LM image token of every image."""
    tokens = []
    for start in range(0, len(images), 64):
        inputs = vlm.layout.image_inputs(list(images[start : start + 64]))
        tokens += [m.float() for m in vlm.layout.features(inputs, (-1,)).merged]  # (M, D_lm) each
    return torch.stack(tokens)


@torch.no_grad()
def measure_mark_visibility(vlm, label: str, style: MarkStyle, images: int = 600) -> MarkVisibility:
    """:class:`MarkVisibility` of ``vlm`` on relation scenes of stream 7 (never trained on)."""
    vlm.model.eval()
    marks = tag_marks(style=style)
    examples = [RELATION_TASK.make(7, i) for i in range(images)]
    pictures = [marks.draw(e.image, list(e.regions)) for e in examples]
    features = _image_tokens(vlm, pictures)  # (N, M, D_lm)
    n, m = features.shape[:2]
    side = math.isqrt(m)
    cell = IMAGE_SIZE // side
    marked = [(np.asarray(p) == MARK_COLOURS[0]).all(-1) for p in pictures]  # (H, W) mark-1 pixels each
    held = np.stack([k.reshape(side, cell, side, cell).any((1, 3)).reshape(-1) for k in marked])  # (N, M) row-major
    y = torch.from_numpy(held.reshape(-1)).long()  # (N*M,)
    fit = (2 * n // 3) * m
    predicted, truth = _ridge_predictions(features.reshape(n * m, -1), y, 2, fit), y[fit:]
    recalls = [float((predicted[truth == c] == c).double().mean()) for c in (0, 1)]
    vlm.model.train()
    return MarkVisibility(label, style.name(), float(np.mean(recalls)), float(y.double().mean()), images)


@torch.no_grad()
def measure_position_reading(vlm, label: str, images: int = 600) -> PositionReading:
    """:class:`PositionReading` of ``vlm`` on scenes of stream 7 (never trained on)."""
    vlm.model.eval()
    scenes = [ground_example(7, i) for i in range(images)]
    embeddings = vlm.layout.embedding_module()
    tokens, patch_sq = [], []
    for start in range(0, images, 64):
        inputs = vlm.layout.image_inputs([e.image for e in scenes[start : start + 64]])
        pixels = inputs["pixel_values"][:, 0]  # (B, 3, H, W): one tile per image
        patch_sq.append(embeddings.patch_embedding(pixels).pow(2).mean())
        tokens += [m.float() for m in vlm.layout.features(inputs, (-1,)).merged]  # (M, D_lm) each
    features = torch.stack(tokens)  # (N, M, D_lm)
    n, m = features.shape[:2]
    side = math.isqrt(m)
    column = (torch.arange(m) % side).repeat(n)  # (N*M,)
    row = (torch.arange(m) // side).repeat(n)
    flat, fit = features.reshape(n * m, -1), (2 * n // 3) * m
    digits, majority = 0.0, 0.0
    if label == "base":
        held = with_box_answers(vlm, make_examples([GROUND], 128, 3000))
        out = forward(vlm, encode(vlm, BASE_ARM, held, ""))
        targets, picked = out.labels[:, 1:], out.logits[:, :-1].argmax(-1)  # (B, S-1) each
        start = (targets != -100).float().argmax(-1)  # (B,) the answer's "["
        rows = torch.arange(len(held))
        answers = [e.example.answer for e in held]
        right, counts = [], []
        for offset_of in (lambda a: 1, lambda a: a.index(",") + 1):  # first digit of x1, of y1
            offsets = torch.tensor([offset_of(a) for a in answers])
            right.append((picked[rows, start + offsets] == targets[rows, start + offsets]).double().mean())
            firsts = Counter(a[offset_of(a)] for a in answers)
            counts.append(firsts.most_common(1)[0][1] / len(answers))
        digits, majority = float(np.mean(right)), float(np.mean(counts))
    vlm.model.train()
    return PositionReading(
        model=label,
        position_rms=float(embeddings.position_embedding.weight.pow(2).mean().sqrt()),
        patch_rms=float(torch.stack(patch_sq).mean().sqrt()),
        token_column_probe=_ridge_accuracy(flat, column, side, fit),
        token_row_probe=_ridge_accuracy(flat, row, side, fit),
        ground_first_digits=digits,
        ground_first_digits_majority=majority,
        images=images,
    )


def position_readings(settings: Settings, root: Path, model_dir: str) -> list[PositionReading]:
    """:func:`measure_position_reading` of the tiny model as built (with ``--position-init`` applied) and of the
    base model; empty for a ``--model`` checkpoint."""
    if settings.model is not None:
        return []
    images = 60 if settings.mode == "smoke" else 600
    init = load_vlm(str(root / _tiny_name(settings)), BASE_ARM, _device(settings.device))
    if settings.position_init:
        init_tower_positions(
            init, [Image.fromarray(_base_scene(_rng("scale", settings.base_seed, i)).frames[0]) for i in range(32)]
        )
    base = load_vlm(model_dir, BASE_ARM, _device(settings.device))
    return [measure_position_reading(init, "init", images), measure_position_reading(base, "base", images)]


def mark_visibilities(settings: Settings, model_dir: str) -> list[MarkVisibility]:
    """:func:`measure_mark_visibility` of the base model with the default marks and with ``settings.marks``."""
    images = 60 if settings.mode == "smoke" else 600
    base = load_vlm(model_dir, BASE_ARM, _device(settings.device))
    styles = [MarkStyle()] + ([] if settings.marks.is_default else [settings.marks])
    return [measure_mark_visibility(base, "base", style, images) for style in styles]


def side_example(n_objects: int, seed: int, index: int) -> TaskExample:
    """``n_objects`` objects; "Is the object on the left?" (one object) or "Is the <colour> object on the left?"
    about the first one, whose centre is at least 8 px from the middle column; "yes" for even ``index``.

    The two probes of :func:`measure_position_learning`: with one object the model need only read where the
    object is; with three it must also find the object the question names, as every region task must."""
    answer = ("yes", "no")[index % 2]
    scene, colours = _side_scene(_rng(f"side{n_objects}", seed, index), n_objects, answer)
    question = "Is the object on the left?" if n_objects == 1 else f"Is the {colours[0]} object on the left?"
    return TaskExample(Image.fromarray(scene.frames[0]), (), answer, question=question)


def _side_scene(rng: np.random.Generator, n_objects: int, answer: str):
    """A scene of ``n_objects`` whose first object's centre is at least 8 px left of the middle column ("yes")
    or right of it ("no"); and the objects' colours."""
    config = replace(STILL, n_objects=n_objects)
    while True:
        colours = _pick(rng, EXPERIMENT_COLOURS, n_objects)
        shapes = [SHAPES[j] for j in rng.choice(len(SHAPES), size=n_objects)]
        sizes = [("small", "large")[j] for j in rng.choice(2, size=n_objects)]
        scene = layout_scene(rng, colours, shapes, sizes, config)
        x = scene.objects[0].centres[0][0]
        if abs(x - IMAGE_SIZE / 2) >= POSITION_MARGIN and (x < IMAGE_SIZE / 2) == (answer == "yes"):
            return scene, colours


def mark_side_example(style: MarkStyle, seed: int, index: int) -> TaskExample:
    """Three objects, the first marked as the Set-of-Mark arm marks mark 1, and "Is mark 1 on the left?"; its
    centre is at least 8 px from the middle column, "yes" for even ``index``. The side probe of
    :data:`SIDE_PROBES` with the object named by a mark instead of its colour (:func:`mark_side_probes`)."""
    answer = ("yes", "no")[index % 2]
    scene, _ = _side_scene(_rng("markside", seed, index), 3, answer)
    image = draw_tags(Image.fromarray(scene.frames[0]), [scene.masks[0][0]], style)
    return TaskExample(image, (), answer, question="Is mark 1 on the left?")


def mark_side_probes(settings: Settings) -> list[Task]:
    """:func:`mark_side_example` with the default marks and with ``settings.marks``, as probes."""
    styles = [MarkStyle()] + ([] if settings.marks.is_default else [settings.marks])
    return [
        Task(f"side_of_mark_1 ({s.name()})", "", "", ("yes", "no"), 0, 0.5, partial(mark_side_example, s))
        for s in styles
    ]


SIDE_PROBES = (
    Task("side_of_the_only_object", "", "", ("yes", "no"), 0, 0.5, lambda seed, i: side_example(1, seed, i)),
    Task("side_of_a_named_object", "", "", ("yes", "no"), 0, 0.5, lambda seed, i: side_example(3, seed, i)),
)


@dataclass
class PositionProbe:
    """A region-free question trained briefly from the base model: how fast it learns to read a position.

    Attributes:
        task: a :data:`SIDE_PROBES` name.
        steps: optimizer steps (batch 32, every parameter, the arms' optimiser).
        curve: (step, held-out accuracy) every 50 steps; chance 0.5.
    """

    task: str
    steps: int
    curve: list[tuple[int, float]]


def measure_position_learning(
    model_dir: str, settings: Settings, log: Callable[[str], None], probes: Sequence[Task] = SIDE_PROBES
) -> list[PositionProbe]:
    """Train each ``probes`` question alone from the base model (640 examples of stream 0, scored on 128 of
    stream 1000, 300 steps; the smoke mode's sizes in smoke runs)."""
    smoke = settings.mode == "smoke"
    steps, examples, held = (settings.budget.steps, 8, 4) if smoke else (300, 640, 128)
    out = []
    for task in probes:
        torch.manual_seed(0)
        vlm = load_vlm(model_dir, BASE_ARM, _device(settings.device))
        batches = Batches(vlm, BASE_ARM, chunks(make_examples([task], examples, 0), 32), "", settings.cache)
        scored = Batches(vlm, BASE_ARM, chunks(make_examples([task], held, 1000), 64), "", settings.cache)
        curve = [(0, evaluate(vlm, scored, [task], "")[task.name].accuracy)]

        def score(step: int, vlm=vlm, scored=scored, task=task, curve=curve) -> None:
            curve.append((step, evaluate(vlm, scored, [task], "")[task.name].accuracy))

        params = list(vlm.model.parameters())
        train_loop(vlm, params, batches, steps, settings.budget.lr, settings.budget.warmup, 0, 50, score)
        log(f"  probe {task.name}: " + " ".join(f"{step} {acc:.2f}" for step, acc in curve))
        out.append(PositionProbe(task=task.name, steps=steps, curve=curve))
    return out


@dataclass
class MarkLocality:
    """Counting through marks: how many objects inside a count region share no vision patch with a mark pixel
    (ring or tag), so that whether they are inside must come from marks elsewhere; the encoder design instead
    adds the region to every patch it covers.

    Attributes:
        patch_size: the vision patch side in pixels.
        objects_inside: objects inside the count regions measured.
        without_mark_in_their_patches: share of them with no mark pixel in any patch they touch.
    """

    patch_size: int
    objects_inside: int
    without_mark_in_their_patches: float


def measure_mark_locality(examples: int = 200, patch: int = 16) -> MarkLocality:
    """:class:`MarkLocality` over held-out-like count examples (stream 9, not used for training)."""
    from scipy import ndimage

    cells = IMAGE_SIZE // patch
    inside = unmarked = 0
    for index in range(examples):
        example = COUNT_TASK.make(9, index)
        image = np.asarray(example.image)  # (H, W, 3)
        marked = (np.asarray(draw_tags(example.image, list(example.regions))) != image).any(-1)  # (H, W)
        marked_patches = marked.reshape(cells, patch, cells, patch).any((1, 3))  # (cells, cells)
        objects, n = ndimage.label(image.any(-1))  # (H, W) one label per object
        for k in range(1, n + 1):
            pixels = objects == k
            if not example.regions[0][pixels].all():
                continue
            touched = pixels.reshape(cells, patch, cells, patch).any((1, 3))  # (cells, cells)
            inside += 1
            unmarked += int(not (touched & marked_patches).any())
    return MarkLocality(patch, inside, unmarked / max(inside, 1))


@dataclass
class Cell:
    """One arm on one task over the seeds: mean, sample standard deviation, range and every value."""

    arm: str
    task: str
    mean: float
    std: float
    low: float
    high: float
    values: list[float]
    seeds: list[int]


def summarise(runs: Sequence[RunResult], arms: Sequence[str], tasks: Sequence[str]) -> list[Cell]:
    cells = []
    for arm in arms:
        for task in tasks:
            mine = [r for r in runs if r.arm == arm]
            values = [r.scores[task].accuracy for r in mine]
            cells.append(
                Cell(
                    arm=arm,
                    task=task,
                    mean=float(np.mean(values)),
                    std=float(statistics.stdev(values)) if len(values) > 1 else 0.0,
                    low=float(min(values)),
                    high=float(max(values)),
                    values=values,
                    seeds=[r.seed for r in mine],
                )
            )
    return cells


def markdown_table(cells: Sequence[Cell], tasks: Sequence[Task], arms: Sequence[str]) -> str:
    """Arms as rows, tasks as columns, ``mean ± std`` per cell, the best mean of each column in bold."""
    if not arms:
        return ""
    by = {(c.arm, c.task): c for c in cells}
    head = "| arm | " + " | ".join(f"{t.name} (chance {t.chance:.2f})" for t in tasks) + " |"
    lines = [head, "| --- |" + " --- |" * len(tasks)]
    best = {t.name: max(by[(a, t.name)].mean for a in arms) for t in tasks}
    for arm in arms:
        row = []
        for t in tasks:
            c = by[(arm, t.name)]
            text = f"{c.mean:.2f} ± {c.std:.2f}"
            row.append(f"**{text}**" if c.mean == best[t.name] else text)
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(cells: Sequence[Cell], tasks: Sequence[Task], arms: Sequence[str], path: Path, title: str) -> None:
    """Grouped bars (mean over seeds), each seed as a dot, chance and the no-region ceiling as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(c.arm, c.task): c for c in cells}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(arms)
    colours = plt.get_cmap("tab10").colors
    for a, arm in enumerate(arms):
        xs = [t + (a - (len(arms) - 1) / 2) * width for t in range(len(tasks))]
        means = [by[(arm, task.name)].mean for task in tasks]
        stds = [by[(arm, task.name)].std for task in tasks]
        ax.bar(xs, means, width * 0.92, yerr=stds, capsize=2, color=colours[a], label=arm, alpha=0.85)
        for x, task in zip(xs, tasks, strict=True):
            values = by[(arm, task.name)].values
            ax.scatter([x] * len(values), values, s=6, color="black", zorder=3)
    for t, task in enumerate(tasks):
        ax.hlines(task.chance, t - 0.45, t + 0.45, colors="grey", linestyles=":", linewidth=1)
        if task.no_region_ceiling > task.chance + 1e-9:
            ax.hlines(task.no_region_ceiling, t - 0.45, t + 0.45, colors="grey", linestyles="--", linewidth=1)
    ax.set_xticks(range(len(tasks)), [f"{t.name}\n({len(t.choices)} answers)" for t in tasks])
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(arms), fontsize=8, frameon=False)
    note = "bars: mean ± sd over seeds; dots: seeds; dotted: chance; dashed: best without the region"
    fig.text(0.99, 0.01, note, ha="right", fontsize=7, color="grey")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_report(data: dict[str, Any], path: Path) -> None:
    """:func:`plot` of a report's JSON (``Report.to_json``), so a saved run can be drawn again without training."""
    by_name = {t.name: t for t in TASKS}
    cells = [Cell(**cell) for cell in data["table"]]
    tasks = [by_name[t["name"]] for t in data["tasks"]]
    arms = [a["name"] for a in data["arms"]]
    model = data["model"].split(" (")[0]
    title = f"{model}, {len(data['seeds'])} seeds, {data['budget']['steps']} steps ({data['mode']})"
    plot(cells, tasks, arms, path, title)


@dataclass
class Report:
    """Everything the experiment measured (the JSON keeps all of it)."""

    mode: str
    budget: Budget
    seeds: list[int]
    model: str
    base: PretrainResult | None
    image_size: int
    device: str
    torch_threads: int
    cache: bool
    metric: str
    arms: list[dict[str, str]]
    tasks: list[dict[str, Any]]
    table: list[Cell]
    table_markdown: str
    runs: list[RunResult]
    overlay_measurement: list[OverlayMeasurement]
    mark_locality: MarkLocality
    position_reading: list[PositionReading]
    position_probes: list[PositionProbe]
    mark_coverage: list[MarkCoverage]
    mark_visibility: list[MarkVisibility]
    seconds: float
    seconds_per_step: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _task_record(task: Task, train_labels: Counter, eval_labels: Counter) -> dict[str, Any]:
    return {
        "name": task.name,
        "question": task.question,
        "question_without_regions": task.question_without_regions,
        "choices": list(task.choices),
        "n_regions": task.n_regions,
        "chance": task.chance,
        "no_region_ceiling": task.no_region_ceiling,
        "train_labels": dict(train_labels),
        "eval_labels": dict(eval_labels),
    }


def run_experiment(settings: Settings, log: Callable[[str], None] = print) -> Report:
    """Pretrain the base model, train every arm with every seed, score every task; see the module docstring."""
    started = time.perf_counter()
    known_arms, known_tasks = [a.name for a in ARMS], [t.name for t in TASKS]
    unknown = (set(settings.arms) - set(known_arms)) | (set(settings.tasks) - set(known_tasks))
    if unknown:
        raise ValueError(f"unknown arm or task {sorted(unknown)}; arms: {known_arms}, tasks: {known_tasks}")
    arms = experiment_arms(settings)
    tasks = [t for t in TASKS if t.name in settings.tasks]
    runs: list[RunResult] = []
    train_labels: dict[str, Counter] = {t.name: Counter() for t in tasks}
    eval_labels: dict[str, Counter] = {t.name: Counter() for t in tasks}
    with tempfile.TemporaryDirectory(prefix="mask-modality-") as tmp:
        root = settings.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model_dir, base = base_model(settings, root, log)
        readings = position_readings(settings, root, model_dir)
        for reading in readings:
            log(
                f"  positions, {reading.model}: position/patch embedding RMS {reading.position_rms:.3f}/"
                f"{reading.patch_rms:.2f}, token column/row probe {reading.token_column_probe:.2f}/"
                f"{reading.token_row_probe:.2f}, grounding first digits {reading.ground_first_digits:.2f} "
                f"(majority {reading.ground_first_digits_majority:.2f})"
            )
        probes = measure_position_learning(model_dir, settings, log) if settings.position_probes else []
        visibility = mark_visibilities(settings, model_dir) if settings.mark_probes else []
        if settings.mark_probes:
            probes += measure_position_learning(model_dir, settings, log, mark_side_probes(settings))
        for v in visibility:
            log(
                f"  marks, {v.model}, {v.style}: mark-1 token read-out {v.balanced_accuracy:.2f} (balanced, chance 0.5)"
            )
        for seed in settings.seeds:
            train = make_examples(tasks, settings.budget.train_per_task, seed)
            held_out = make_examples(tasks, settings.budget.eval_per_task, seed + 1000)
            for e in train:
                train_labels[e.task.name][e.example.answer] += 1
            for e in held_out:
                eval_labels[e.task.name][e.example.answer] += 1
            for arm in arms:
                result = run_arm(arm, seed, model_dir, train, held_out, tasks, settings, log)
                runs.append(result)
                log(
                    f"{arm.name:13s} seed {seed}: "
                    + " ".join(f"{k} {v.accuracy:.2f}" for k, v in result.scores.items())
                    + f"  ({result.seconds:.0f} s)"
                )
    cells = summarise(runs, [a.name for a in arms], [t.name for t in tasks])
    steps = sum(r.steps for r in runs)
    builder = "segvlm.testing.vlm.build_smolvlm"
    default_model = f"tiny random SmolVLM at {IMAGE_SIZE} px ({builder}, seed {settings.base_seed})"
    return Report(
        mode=settings.mode,
        budget=settings.budget,
        seeds=list(settings.seeds),
        model=settings.model or default_model,
        base=base,
        image_size=IMAGE_SIZE,
        device=_device(settings.device),
        torch_threads=torch.get_num_threads(),
        cache=settings.cache,
        metric="held-out accuracy: argmax over the task's answers' first tokens at the answer position",
        arms=[{"name": a.name, "design": a.design, "how": a.how, "own_parameters": a.own_parameters} for a in arms],
        tasks=[_task_record(t, train_labels[t.name], eval_labels[t.name]) for t in tasks],
        table=cells,
        table_markdown=markdown_table(cells, tasks, [a.name for a in arms]),
        runs=runs,
        overlay_measurement=measure_overlays(),
        mark_locality=measure_mark_locality(),
        position_reading=readings,
        position_probes=probes,
        mark_coverage=measure_mark_coverage(settings.marks),
        mark_visibility=visibility,
        seconds=time.perf_counter() - started,
        seconds_per_step=sum(r.train_seconds for r in runs) / max(steps, 1),
    )


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="300 steps per arm and seed: 7-10 min on 2 CPU cores"),
    full: bool = typer.Option(False, "--full", help="2000 steps, 4x the data, 2x the held-out set: 41 min"),
    smoke: bool = typer.Option(False, "--smoke", help="a few steps on a few examples, to check the script"),
    json_path: Path | None = typer.Option(None, "--json", help="write every number here"),
    plot_path: Path | None = typer.Option(None, "--plot", help="the bar chart (PNG)"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds (at least three for the table)"),
    arms: str = typer.Option(",".join(a.name for a in ARMS), "--arms", help="comma-separated arms"),
    tasks: str = typer.Option(",".join(t.name for t in TASKS), "--tasks", help="comma-separated tasks"),
    model: str | None = typer.Option(None, "--model", help="hub id, folder or tiny-random:<family> (default: tiny)"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="override the mode's training steps"),
    train_per_task: int | None = typer.Option(
        None, "--train-per-task", min=1, help="override the mode's training examples per task (a multiple of 84)"
    ),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="tiny models are built here (default: temp dir)"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, ... (auto: cuda when available)"),
    answer_prefix: str = typer.Option("auto", "--answer-prefix", help="text before answers ('auto' tries '' then ' ')"),
    threads: int = typer.Option(1, "--threads", min=0, help="torch CPU threads (0 = torch's default)"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="encode batches once (off for large checkpoints)"),
    pretrain_steps: int | None = typer.Option(None, "--pretrain-steps", min=0, help="override the base model's steps"),
    replot: Path | None = typer.Option(None, "--replot", help="only draw --plot from this saved --json, no training"),
    position_pretraining: bool = typer.Option(
        False, "--position-pretraining", help="the base model also compares objects' positions (region-free)"
    ),
    position_init: bool = typer.Option(
        False, "--position-init", help="tiny tower: 2D sine/cosine position embeddings at the patch embeddings' scale"
    ),
    lm_layers: int = typer.Option(TINY_LM_LAYERS, "--lm-layers", min=1, help="language-model layers of the tiny model"),
    position_probes: bool = typer.Option(
        False, "--position-probes", help="also time how fast the base model learns to read positions (2 x 300 steps)"
    ),
    base_only: bool = typer.Option(False, "--base-only", help="only the base model and its measurements, no arms"),
    mark_ring: int = typer.Option(2, "--mark-ring", min=1, help="Set-of-Mark arm: ring width in pixels"),
    mark_place: str = typer.Option("beside", "--mark-place", help="Set-of-Mark arm: tag 'beside' the ring or 'centre'"),
    mark_font: int = typer.Option(10, "--mark-font", min=1, help="Set-of-Mark arm: digit height of the tag in pixels"),
    mark_pattern: str = typer.Option("solid", "--mark-pattern", help="Set-of-Mark arm: ring 'solid' or 'checker'"),
    mark_pretraining: bool = typer.Option(
        False, "--mark-pretraining", help="the base model also learns 'Where is mark <n>?' (marks as the arm draws)"
    ),
    mark_probes: bool = typer.Option(
        False, "--mark-probes", help="also probe the base model on mark 1 (default marks and --mark-*): tokens, side"
    ),
) -> None:
    """Train every arm with every seed on all tasks; print the table, write the JSON and the plot."""
    if replot is not None:
        if plot_path is None:
            raise typer.BadParameter("--replot needs --plot")
        plot_report(json.loads(replot.read_text()), plot_path)
        return
    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if model is None else os.environ.get("HF_HUB_OFFLINE", "0"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if quick + full + smoke != 1:
        raise typer.BadParameter("pass exactly one of --quick, --full or --smoke")
    mode = "quick" if quick else "full" if full else "smoke"
    budget = MODES[mode] if steps is None else replace(MODES[mode], steps=steps)
    if train_per_task is not None:
        budget = replace(budget, train_per_task=train_per_task)
    settings = Settings(
        mode=mode,
        budget=budget,
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        model=model,
        work_dir=work_dir,
        device=device,
        answer_prefix=answer_prefix,
        pretrain_steps=pretrain_steps,
        cache=cache,
        position_pretraining=position_pretraining,
        position_init=position_init,
        lm_layers=lm_layers,
        position_probes=position_probes,
        marks=MarkStyle(ring=mark_ring, place=mark_place, font_size=mark_font, pattern=mark_pattern),
        mark_pretraining=mark_pretraining,
        mark_probes=mark_probes,
    )
    if base_only:
        settings.arms = ()
    report = run_experiment(settings, log=typer.echo)
    typer.echo(report.table_markdown)
    per_step = f", {1000 * report.seconds_per_step:.0f} ms per training step" if report.runs else ""
    typer.echo(f"{report.seconds:.0f} s in all{per_step}")
    data = json.loads(json.dumps(report.to_json(), default=str))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=2))
    if plot_path is not None and data["table"]:
        plot_report(data, plot_path)


if __name__ == "__main__":
    app()
