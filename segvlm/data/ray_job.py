"""The builder as a Ray Data job: pending units flow through an actor pool, one model set per actor.

Each actor builds its labeler once (``labeler.load()``), labels whole units and writes their shards itself
(atomically, straight into the output folder), then returns a small ledger record. Only the driver writes
the ledger, so there is a single writer however many workers run. The same code runs on a laptop
(``ray.init()`` starts a local instance) and on a cluster (``address="ray://head:10001"`` or ``"auto"``); on a
cluster the output folder must be on storage that every node mounts.

Inside a quiet command (:mod:`segvlm.quiet`) Ray's and Ray Data's console logs are kept to errors. A local
instance runs its actors without restarts: Ray logs an error-level line on every start of an actor pool
whose actors may restart, and a unit whose actor died is redone by running the build again anyway.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segvlm.data.inputs import WorkItem, WorkUnit
from segvlm.data.shards import UnitRecord


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Attributes:
        num_workers: actors in the pool (each holds one model set).
        address: cluster to join (``"auto"``, ``"ray://host:10001"``); None starts or reuses a local one.
        num_cpus_per_worker: CPUs reserved per actor; None: 1 with GPUs, else a share of the cluster that
            leaves room for Ray Data's own tasks (a full CPU per actor can deadlock a 2-core machine).
        num_gpus_per_worker: GPUs per actor; None: 1 when the cluster has GPUs, else 0.
        local_num_cpus: CPUs of a locally started instance (None: all cores).
    """

    num_workers: int = 1
    address: str | None = None
    num_cpus_per_worker: float | None = None
    num_gpus_per_worker: float | None = None
    local_num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")


def unit_to_json(unit: WorkUnit) -> str:
    return json.dumps(asdict(unit))


def unit_from_json(text: str) -> WorkUnit:
    value = json.loads(text)
    return WorkUnit(index=value["index"], key=value["key"], items=tuple(WorkItem(**item) for item in value["items"]))


class UnitWorker:
    """A Ray Data actor: loads the labeler once, then labels and commits one unit per batch row."""

    def __init__(self, config: Any, labeler: Any, data_dir: str):
        self.config = config
        self.labeler = labeler
        self.data_dir = Path(data_dir)
        load = getattr(labeler, "load", None)
        if callable(load):
            load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from segvlm.data.builder import run_unit

        records = [
            run_unit(unit_from_json(str(text)), self.config, self.labeler, self.data_dir).to_json()
            for text in batch["unit"]
        ]
        return {"record": records}


def connect(options: RayOptions) -> bool:
    """Start or join Ray as ``options`` say; True when this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    from segvlm.quiet import is_quiet

    level = logging.ERROR if is_quiet() else logging.INFO
    if options.address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=options.local_num_cpus, include_dashboard=False, log_to_driver=False, logging_level=level)
    else:
        ray.init(address=options.address, log_to_driver=False, logging_level=level)
    return True


def worker_resources(options: RayOptions) -> tuple[float, float]:
    """(CPUs, GPUs) to reserve per actor, from the options or from what the cluster has."""
    import ray

    available = ray.cluster_resources()
    gpus = options.num_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if available.get("GPU", 0) >= 1 else 0.0
    cpus = options.num_cpus_per_worker
    if cpus is None:
        cpus = 1.0 if gpus else round(max(0.25, min(1.0, available.get("CPU", 1) / (options.num_workers + 1))), 2)
    return cpus, gpus


def run_units_on_ray(
    units: Sequence[WorkUnit],
    config: Any,
    labeler: Any,
    data_dir: Path,
    options: RayOptions,
    commit: Callable[[UnitRecord], None],
) -> None:
    """Label ``units`` on an actor pool; ``commit`` is called in the driver as each unit finishes."""
    import ray
    import ray.data

    from segvlm.quiet import is_quiet

    started = connect(options)
    data_logger = logging.getLogger("ray.data")
    data_level = data_logger.level
    if is_quiet():
        data_logger.setLevel(logging.ERROR)  # "Starting execution of Dataset...", "Progress bars disabled"
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cpus, gpus = worker_resources(options)
        restarts = {"max_restarts": 0} if options.address is None else {}
        ds = ray.data.from_items([{"unit": unit_to_json(unit)} for unit in units], override_num_blocks=len(units))
        ds = ds.map_batches(
            UnitWorker,
            fn_constructor_kwargs={"config": config, "labeler": labeler, "data_dir": str(data_dir)},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(options.num_workers, len(units))),
            num_cpus=cpus,
            num_gpus=gpus,
            **restarts,
        )
        for row in ds.iter_rows():
            commit(UnitRecord.from_json(row["record"]))
    finally:
        data_logger.setLevel(data_level)
        if started:
            ray.shutdown()
