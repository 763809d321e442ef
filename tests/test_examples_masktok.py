"""Each mask-tokenizer example runs offline as a script and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED = {
    "masktok_text.py": ["design: text", "region text: [", "decoded box:"],
    "masktok_set_of_mark.py": ["design: set_of_mark", "pixels changed by the mark:"],
    "masktok_pooled.py": ["design: pooled", "region embedding shape: (2, 64)", "norm at step 0: 0.0"],
    "masktok_encoder.py": ["design: encoder", "mask map shape: (1, 1, 64, 64)"],
    "vlm_rerank.py": ["chosen index:"],
}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    """All examples at once, each in its own process (they are import-bound, so this halves the wall time)."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            cwd=EXAMPLES,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in EXPECTED
    }
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, runs):
    out = runs[name]
    assert out.returncode == 0, out.stderr[-2000:]
    for line in EXPECTED[name]:
        assert line in out.stdout, out.stdout
    assert "answer:" in out.stdout or name == "vlm_rerank.py"
