"""segvlm.testing: the test helpers stay out of production imports, and every name they had still works."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segvlm.errors import UnknownBackendError
from segvlm.resolve import TINY_MODELS, resolve_model

PRODUCTION = (
    "segvlm",
    "segvlm.cli",
    "segvlm.tracking",
    "segvlm.registry",
    "segvlm.loading",
    "segvlm.grounding.rerank",
    "segvlm.vlm.model",
    "segvlm.masktok.layouts",
    "segvlm.masktok.text",
    "segvlm.training.trainer",
    "segvlm.data.builder",
    "segvlm.export.coco",
)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_production_modules_do_not_import_the_test_helpers():
    imports = "; ".join(f"import {name}" for name in PRODUCTION)
    loaded = _run(f"import sys; {imports}; print(sorted(m for m in sys.modules if m.startswith('segvlm.testing')))")
    assert loaded == "[]"


def test_importing_the_package_imports_no_model_library():
    assert _run("import sys, segvlm.testing; print('torch' in sys.modules, 'transformers' in sys.modules)") == (
        "False False"
    )


def test_every_tiny_kind_names_a_builder_in_the_testing_package():
    for kind, spec in TINY_MODELS.items():
        module, _, function = spec.partition(":")
        assert module.startswith("segvlm.testing."), kind
        assert callable(getattr(importlib.import_module(module), function)), kind


def test_resolution_leaves_other_names_alone_and_names_the_known_tiny_kinds():
    assert resolve_model("facebook/sam2.1-hiera-tiny") == "facebook/sam2.1-hiera-tiny"
    with pytest.raises(UnknownBackendError, match=r"unknown tiny model 'tiny-random:nope'.*'tiny-random:sam2'"):
        resolve_model("tiny-random:nope")


def test_old_import_paths_still_work():
    import segvlm.testing
    from segvlm.data.labelers import load_labeler

    assert type(load_labeler("segvlm.data.testing:SyntheticLabeler")) is segvlm.testing.SyntheticLabeler
    assert type(load_labeler("segvlm.testing:SyntheticLabeler")) is segvlm.testing.SyntheticLabeler
    assert importlib.import_module("segvlm.tiny").resolve_model is resolve_model
    assert importlib.import_module("segvlm.tiny").build_sam2 is segvlm.testing.build_sam2
    assert importlib.import_module("segvlm.vlm.tiny").tiny_model_dir is segvlm.testing.tiny_model_dir
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        segvlm.testing.nothing  # noqa: B018


def test_tiny_model_dir_refuses_a_family_without_a_tiny_model():
    from segvlm.testing import tiny_model_dir

    with pytest.raises(ValueError, match="paligemma VLM family has no tiny random model; families with one"):
        tiny_model_dir("paligemma")
    with pytest.raises(ValueError, match="unknown VLM family 'nope'"):
        tiny_model_dir("nope")


def test_the_documented_test_helper_example_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = text.split("## Test helpers (segvlm.testing)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/extending.md", "exec"), {})  # noqa: S102 - the documentation is under test
