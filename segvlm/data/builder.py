"""Build a mask-augmented ``datasets`` dataset from videos and images: plan, label, commit, finalize.

Output folder layout::

    OUT/
      build.json          the settings this folder was started with (checked on every resume)
      ledger.jsonl        one line per finished work unit (rows, label counts, skipped inputs)
      data/<unit>.parquet one shard per work unit, in hub layout
      errors.jsonl        inputs that could not be read, with the reason
      README.md           the dataset card: models, thresholds, conventions, counts
      state.json, dataset_info.json, data-*.arrow   ``datasets.load_from_disk(OUT)`` (unless save_arrow=False)

``datasets`` refuses ``load_dataset(OUT)`` on a folder holding ``state.json``, so a build with the arrow copy
loads with ``load_from_disk(OUT)`` and one without it with ``load_dataset(OUT)`` (the card's header points
it at ``data/*.parquet``, as on the hub); :meth:`BuildSummary.load` and :func:`load_built` read either.

Resuming is running the same call again: finished units (ledger lines, or shards whose ledger line was lost
to a kill) are skipped, half-written temporaries are deleted, and everything else is redone. A shard is
named by its unit, so redoing a unit can never add its rows twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvlm.data.inputs import WorkUnit, discover, plan_digest, plan_units
from segvlm.data.labelers import Labeler, PresetLabeler, labeler_name
from segvlm.data.rows import rows_from_segmentation
from segvlm.data.schema import DEFAULT_CAPTION_TEMPLATES, SCHEMA_VERSION, check_templates, rows_to_table
from segvlm.data.shards import (
    ItemError,
    Ledger,
    UnitRecord,
    atomic_write_text,
    find_unit_output,
    read_unit_record,
    remove_temporaries,
    write_unit_output,
)
from segvlm.provenance import Provenance

if TYPE_CHECKING:
    import datasets

    from segvlm.data.ray_job import RayOptions

BUILD_FILE = "build.json"
LEDGER_FILE = "ledger.jsonl"
ERRORS_FILE = "errors.jsonl"
DATA_DIR = "data"

ProgressCallback = Callable[[UnitRecord, int, int], None]


class BuildMismatchError(ValueError):
    """The output folder was started with other settings, inputs or schema than this run."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the dataset's content; recorded in ``build.json`` and checked on resume.

    Attributes:
        query: the text query (one string, or one phrase per entry). Exclusive with ``vocabulary``.
        vocabulary: class names to label everything with (each becomes a phrase of the query).
        stride: keep every ``stride``-th video frame.
        max_frames: at most this many frames per video (None: all).
        caption_templates: templates over ``{label}`` / ``{phrase}``; one is picked per region by hash.
        image_format: how video frames are stored, ``"jpeg"`` or ``"png"`` (still images keep their bytes).
        jpeg_quality: JPEG quality for video frames.
        images_per_unit: still images committed together in one shard.
    """

    query: str | tuple[str, ...] | None = None
    vocabulary: tuple[str, ...] | None = None
    stride: int = 1
    max_frames: int | None = None
    caption_templates: tuple[str, ...] = DEFAULT_CAPTION_TEMPLATES
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    images_per_unit: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.query, list):
            object.__setattr__(self, "query", tuple(self.query))
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        object.__setattr__(self, "caption_templates", tuple(self.caption_templates))
        has_query = bool(self.query) if isinstance(self.query, str) else bool(self.query and any(self.query))
        if has_query == bool(self.vocabulary):
            raise ValueError(
                "give exactly one of query (what to segment, e.g. 'red car') or vocabulary "
                "(class names to label everything with)"
            )
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        check_templates(self.caption_templates)

    @property
    def labeler_query(self) -> str | list[str]:
        """The query passed to the labeler: the string, or the list of phrases / class names."""
        if self.vocabulary:
            return list(self.vocabulary)
        return self.query if isinstance(self.query, str) else list(self.query or ())

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        for name in ("query", "vocabulary", "caption_templates"):
            if isinstance(value[name], tuple):
                value[name] = list(value[name])
        return value


@dataclass
class BuildSummary:
    """What a build produced.

    Attributes:
        out: the output folder.
        rows, regions: totals over the whole dataset.
        units: work units in the plan; ``resumed_units`` of them were already done when this run started
            (their rows were kept, not written again).
        errors: inputs skipped as unreadable (see ``errors.jsonl``).
        seconds: wall time of the labelling phase of this run.
        rows_per_second: rows labelled by this run per second of that phase.
        rows_written, regions_written: what this run labelled and wrote (0 when every unit was already done).
    """

    out: Path
    rows: int
    regions: int
    units: int
    resumed_units: int
    errors: int
    seconds: float
    rows_per_second: float
    label_counts: dict[str, int] = field(default_factory=dict)
    rows_written: int = 0
    regions_written: int = 0

    @property
    def units_written(self) -> int:
        return self.units - self.resumed_units

    def describe(self) -> str:
        """One line for a person: what this run wrote, what it skipped as already done, what the dataset holds."""
        wrote = (
            f"wrote {self.rows_written} rows with {self.regions_written} regions "
            f"({self.units_written} {_plural(self.units_written, 'unit')}) to {self.out}"
        )
        if self.units_written:
            wrote += f", {self.rows_per_second:.2f} rows/s"
        if not self.resumed_units:
            return wrote
        kept = self.rows - self.rows_written
        return (
            f"{wrote}; skipped {self.resumed_units}/{self.units} units already done ({kept} rows kept); "
            f"the dataset has {self.rows} rows with {self.regions} regions"
        )

    def load(self) -> datasets.Dataset:
        """The built dataset, from its arrow copy or, without one, from its parquet shards (:func:`load_built`)."""
        return load_built(self.out)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def load_built(out: str | Path) -> datasets.Dataset:
    """The dataset in a build's output folder: ``datasets.load_from_disk(out)`` when it has the arrow copy,
    else ``datasets.load_dataset(out, split="train")`` (the parquet shards, as a ``--no-arrow`` build leaves)."""
    import datasets

    out = Path(out)
    if (out / "state.json").is_file():
        return datasets.load_from_disk(str(out))
    if not (out / BUILD_FILE).is_file() and not (out / DATA_DIR).is_dir():
        raise FileNotFoundError(f"{out} holds no segvlm dataset; build one with `segvlm build-dataset ... --out {out}`")
    return datasets.load_dataset(str(out), split="train")


# -- one unit ---------------------------------------------------------------------------------------------


def run_unit(unit: WorkUnit, config: BuildConfig, labeler: Labeler, data_dir: Path) -> UnitRecord:
    """Label every item of a unit, write its shard atomically, and describe it as a ledger record.

    Inputs that fail with ``ValueError``/``OSError`` (unreadable, corrupt, wrong size) are recorded and
    skipped; any other exception is a bug and propagates.
    """
    start = time.perf_counter()
    rows = []
    errors: list[ItemError] = []
    meta: dict[str, Any] = {}
    for item in unit.items:
        is_image = item.kind == "image"
        try:
            result = labeler(
                config.labeler_query,
                item.path,
                1 if is_image else config.max_frames,
                1 if is_image else config.stride,
            )
            item_rows = rows_from_segmentation(
                result,
                item.path,
                item.source,
                is_image=is_image,
                stride=config.stride,
                max_frames=config.max_frames,
                caption_templates=config.caption_templates,
                image_format=config.image_format,
                jpeg_quality=config.jpeg_quality,
            )
        except (ValueError, OSError) as error:
            if not is_input_error(error):
                raise
            errors.append(ItemError(source=item.source, path=item.path, reason=f"{type(error).__name__}: {error}"))
            continue
        rows.extend(item_rows)
        if not meta and result.meta:
            meta = provenance(result.provenance)
    label_counts: dict[str, int] = {}
    for row in rows:
        for region in row.regions:
            label_counts[region.label] = label_counts.get(region.label, 0) + 1
    record = UnitRecord(
        key=unit.key,
        rows=len(rows),
        regions=sum(label_counts.values()),
        label_counts=label_counts,
        errors=errors,
        meta=meta,
        seconds=round(time.perf_counter() - start, 4),
        finished_at=time.time(),
    )
    write_unit_output(rows_to_table(rows), data_dir, record)
    return record


VOLATILE_META_KEYS = frozenset({"seconds", "max_frames"})


def provenance(record: Provenance) -> dict[str, Any]:
    """The labeler's provenance as JSON, without per-item values (timings), so equal setups compare equal."""
    data = record.to_json()
    return json.loads(json.dumps({k: v for k, v in data.items() if k not in VOLATILE_META_KEYS}, default=str))


def is_input_error(error: BaseException) -> bool:
    """True for problems with one input (unreadable, corrupt, odd size), which are recorded and skipped.

    segvlm's own configuration errors (a bad query, an unknown preset) would fail every input the same
    way, so they stop the build instead.
    """
    from segvlm.errors import SegvlmError, VideoReadError

    if isinstance(error, SegvlmError):
        return isinstance(error, VideoReadError)
    return isinstance(error, (ValueError, OSError))


# -- the output folder ------------------------------------------------------------------------------------


def _build_header(config: BuildConfig, labeler: Labeler, units: Sequence[WorkUnit]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_json(),
        "labeler": labeler_name(labeler),
        "plan": {
            "units": len(units),
            "items": sum(len(u.items) for u in units),
            "digest": plan_digest(units),
        },
    }


def _describe_mismatch(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    problems = []
    if recorded.get("schema_version") != wanted["schema_version"]:
        problems.append(
            f"schema version {recorded.get('schema_version')} (this segvlm writes {wanted['schema_version']})"
        )
    old_config, new_config = recorded.get("config", {}), wanted["config"]
    for name in sorted(set(old_config) | set(new_config)):
        if old_config.get(name) != new_config.get(name):
            problems.append(f"{name}={old_config.get(name)!r} (this run: {new_config.get(name)!r})")
    if recorded.get("labeler") != wanted["labeler"]:
        problems.append(f"labeler {recorded.get('labeler')!r} (this run: {wanted['labeler']!r})")
    old_plan, new_plan = recorded.get("plan", {}), wanted["plan"]
    if old_plan.get("digest") != new_plan["digest"]:
        problems.append(
            f"inputs: {old_plan.get('items')} items in {old_plan.get('units')} units "
            f"(this run: {new_plan['items']} items in {new_plan['units']} units, or other files)"
        )
    return problems


def prepare_out(out: Path, header: dict[str, Any]) -> bool:
    """Create ``out`` with ``build.json``, or check that an existing build matches; True when resuming."""
    build_file = out / BUILD_FILE
    if build_file.exists():
        recorded = json.loads(build_file.read_text())
        problems = _describe_mismatch(recorded, header)
        if problems:
            raise BuildMismatchError(
                f"{out} holds a build started with different settings: it has "
                + "; ".join(problems)
                + ". Run again with the original settings to resume it, or pass a new --out folder "
                "(or delete this one) to start over."
            )
        return True
    if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise BuildMismatchError(
            f"{out} is not empty and holds no {BUILD_FILE}, so it is not a segvlm build to resume; "
            "pass an empty or new --out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(build_file, json.dumps({**header, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    return False


def _recover(units: Sequence[WorkUnit], ledger: Ledger, data_dir: Path) -> set[str]:
    """The keys of finished units; adopts outputs renamed into place whose ledger line a kill prevented.

    A ledger line whose output is gone (deleted by hand) does not count: that unit is redone.
    """
    done = set()
    for unit in units:
        output = find_unit_output(data_dir, unit.key)
        if output is None:
            continue
        if unit.key not in ledger:
            ledger.append(read_unit_record(output))
        done.add(unit.key)
    return done


# -- the build --------------------------------------------------------------------------------------------


def build_dataset(
    inputs: Sequence[str],
    out: str | Path,
    config: BuildConfig,
    *,
    labeler: Labeler | None = None,
    preset: str | None = None,
    device: str | None = None,
    ray: bool = False,
    ray_options: RayOptions | None = None,
    save_arrow: bool = True,
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """Label ``inputs`` (videos, images, folders) and write a dataset into ``out``; resumable.

    Args:
        inputs: files and folders (folders are searched recursively for videos and images).
        out: the output folder; an existing build there is resumed if its settings match.
        config: what to label and how to store it (see :class:`BuildConfig`).
        labeler: the labeler; default ``PresetLabeler(preset, device)`` (the segvlm pipeline).
        ray: run on Ray Data (an actor pool, one model set per actor) instead of in this process.
        ray_options: workers, resources and cluster address for the Ray path.
        save_arrow: also write the ``load_from_disk`` copy (the parquet shards are always written).
        progress: called with each finished unit's record, units done and units in total.
    """
    out = Path(out)
    labeler = labeler if labeler is not None else PresetLabeler(preset, device)
    units = plan_units(discover(inputs), config.images_per_unit)
    prepare_out(out, _build_header(config, labeler, units))
    data_dir = out / DATA_DIR
    data_dir.mkdir(exist_ok=True)
    remove_temporaries(data_dir)
    remove_temporaries(out)
    ledger = Ledger(out / LEDGER_FILE)
    done = _recover(units, ledger, data_dir)
    pending = [unit for unit in units if unit.key not in done]
    resumed = len(units) - len(pending)

    start = time.perf_counter()
    new_rows = new_regions = 0
    done_count = resumed

    def commit(record: UnitRecord) -> None:
        nonlocal new_rows, new_regions, done_count
        ledger.append(record)
        new_rows += record.rows
        new_regions += record.regions
        done_count += 1
        if progress is not None:
            progress(record, done_count, len(units))

    if pending:
        if ray:
            from segvlm.data.ray_job import RayOptions, run_units_on_ray

            run_units_on_ray(pending, config, labeler, data_dir, ray_options or RayOptions(), commit)
        else:
            load = getattr(labeler, "load", None)
            if callable(load):
                load()
            for unit in pending:
                commit(run_unit(unit, config, labeler, data_dir))
    seconds = time.perf_counter() - start

    from segvlm.data.finalize import finalize

    totals = finalize(out, units, ledger, config, labeler_name(labeler), save_arrow=save_arrow)
    return BuildSummary(
        out=out,
        rows=totals.rows,
        regions=totals.regions,
        units=len(units),
        resumed_units=resumed,
        errors=len(totals.errors),
        seconds=seconds,
        rows_per_second=new_rows / seconds if seconds > 0 else 0.0,
        label_counts=totals.label_counts,
        rows_written=new_rows,
        regions_written=new_regions,
    )
