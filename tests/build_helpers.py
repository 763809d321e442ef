"""Helpers shared by the dataset-builder tests: the build command, its environment, the exactly-once check."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_command(inputs: Path, out: Path, *extra: str, queries: tuple[str, ...] = ("red square",)) -> list[str]:
    """``pipelines/build_dataset.py build`` with the slow synthetic labeler (a build slow enough to kill)."""
    query_args = [arg for query in queries for arg in ("-q", query)]
    return [
        sys.executable,
        str(REPO / "pipelines" / "build_dataset.py"),
        "build",
        str(inputs),
        "--out",
        str(out),
        *query_args,
        "--labeler",
        "segvlm.testing:SlowSyntheticLabeler",
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}


def check_exactly_once(out: Path, expected: set[tuple[str, int]]) -> None:
    """Every (source, frame) of ``expected`` is in the dataset at ``out``, each exactly once."""
    import datasets

    ds = datasets.load_from_disk(str(out))
    pairs = list(zip(ds["source"], ds["frame_index"], strict=True))
    assert len(pairs) == len(set(pairs)), "duplicated rows after resume"
    assert set(pairs) == expected, "lost rows after resume"
