"""Shared fixtures: a per-session cache for tiny random models, and generated media with known masks."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tiny random checkpoints are built once per test session into this folder (see segvlm.resolve); set before
# any test imports segvlm so every backend sees it. A fixed folder per user lets repeated runs reuse them.
os.environ.setdefault("SEGVLM_CACHE", os.path.join(tempfile.gettempdir(), f"segvlm-test-cache-{os.getuid()}"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``slow`` (real checkpoints, minutes of compute) unless SEGVLM_RUN_SLOW=1."""
    if os.environ.get("SEGVLM_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="needs real checkpoints or long compute; set SEGVLM_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
