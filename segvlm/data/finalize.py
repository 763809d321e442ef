"""The last step of a build: errors file, dataset card, and the ``load_from_disk`` copy.

Finalizing reads only ledger records and shards, so it can be redone any number of times: a build killed
while finalizing finishes on the next run. Files are swapped in so that ``state.json`` (what
``load_from_disk`` opens first) appears last.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segvlm.data.card import CardInfo, render_card
from segvlm.data.inputs import WorkUnit
from segvlm.data.schema import features
from segvlm.data.shards import ItemError, Ledger, atomic_write_text, shard_path


@dataclass
class Totals:
    """Counts over all finished units."""

    rows: int = 0
    regions: int = 0
    sources: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    errors: list[ItemError] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)


def totals_of(units: Sequence[WorkUnit], ledger: Ledger) -> Totals:
    missing = [unit.key for unit in units if unit.key not in ledger]
    if missing:
        raise RuntimeError(
            f"{len(missing)} work units are not finished (first: {missing[0]}); "
            "run the same build command again to finish them"
        )
    totals = Totals()
    for unit in units:
        record = ledger.records[unit.key]
        totals.rows += record.rows
        totals.regions += record.regions
        totals.sources += len(unit.items) - len(record.errors)
        totals.errors.extend(record.errors)
        for label, count in record.label_counts.items():
            totals.label_counts[label] = totals.label_counts.get(label, 0) + count
        if record.meta and record.meta not in totals.models:
            totals.models.append(record.meta)
    return totals


def remove_arrow_copy(out: Path) -> None:
    """Delete the ``load_from_disk`` files of ``out`` (an earlier run's), so that ``load_dataset(out)`` works."""
    (out / "state.json").unlink(missing_ok=True)
    (out / "dataset_info.json").unlink(missing_ok=True)
    for old in out.glob("data-*.arrow"):
        old.unlink()


def write_arrow_copy(out: Path, shards: Sequence[Path]) -> None:
    """Write the ``load_from_disk`` files of ``out`` from the parquet shards, in shard order."""
    import datasets

    cache, staging = out / ".finalize-cache", out / ".finalize-staging"
    for folder in (cache, staging):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        feats = features()
        if shards:
            ds = datasets.Dataset.from_parquet([str(p) for p in shards], features=feats, cache_dir=str(cache))
        else:
            ds = datasets.Dataset.from_list([], features=feats)
        ds.save_to_disk(str(staging))
        del ds
        (out / "state.json").unlink(missing_ok=True)
        for old in out.glob("data-*.arrow"):
            old.unlink()
        for new in sorted(staging.iterdir(), key=lambda p: p.name == "state.json"):
            new.replace(out / new.name)
    finally:
        for folder in (cache, staging):
            shutil.rmtree(folder, ignore_errors=True)


def finalize(
    out: Path,
    units: Sequence[WorkUnit],
    ledger: Ledger,
    settings: Any,
    labeler: str,
    *,
    save_arrow: bool = True,
    title: str | None = None,
) -> Totals:
    """Write ``errors.jsonl``, ``README.md`` and (optionally) the arrow copy; mark ``build.json`` finished."""
    totals = totals_of(units, ledger)
    lines = "".join(json.dumps({"source": e.source, "path": e.path, "reason": e.reason}) + "\n" for e in totals.errors)
    atomic_write_text(out / "errors.jsonl", lines)
    settings_json = settings.to_json() if hasattr(settings, "to_json") else dict(settings)
    card = CardInfo(
        title=title or f"segvlm dataset: {out.name}",
        labeler=labeler,
        rows=totals.rows,
        regions=totals.regions,
        sources=totals.sources,
        errors=len(totals.errors),
        label_counts=totals.label_counts,
        models=totals.models,
        settings=settings_json,
        arrow_copy=save_arrow,
    )
    atomic_write_text(out / "README.md", render_card(card))
    if save_arrow:
        shards = [shard_path(out / "data", unit.key, ledger.records[unit.key].rows) for unit in units]
        write_arrow_copy(out, [path for path in shards if path.suffix == ".parquet"])
    else:
        remove_arrow_copy(out)
    build_file = out / "build.json"
    if build_file.exists():
        header = json.loads(build_file.read_text())
        header["finished"] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "rows": totals.rows,
            "regions": totals.regions,
            "errors": len(totals.errors),
        }
        atomic_write_text(build_file, json.dumps(header, indent=2))
    return totals
