"""The documented commands, run as a newcomer would: installed, from a folder outside the repository, quietly.

Each runs in a subprocess whose working folder is a fresh temporary one (so ``configs/`` and every other
repository path are out of reach), with the tiny-random preset; stderr must hold segvlm's own progress and
messages and none of the libraries' bars, warnings or tracebacks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from segvlm.testing import write_test_image, write_test_video

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DATASETS_README = (REPO / "datasets" / "README.md").read_text()
NOISE = (
    "Loading weights",
    "Writing model shards",
    "Generating train split",
    "Saving the dataset",
    "it/s]",
    "Warning:",
    "warnings.warn",
    "Traceback",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("newcomer")
    assert REPO not in folder.resolve().parents, "the commands must run outside the repository"
    return folder


def run(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` as written in the docs (``segvlm`` is this environment's entry point), from ``cwd``."""
    args = shlex.split(command)
    if args[0] == "segvlm":
        args = [sys.executable, "-m", "segvlm", *args[1:]]
    elif args[0] == "python":
        args = [sys.executable, *args[1:]]
    env = {key: value for key, value in os.environ.items() if key != "TRANSFORMERS_VERBOSITY"}  # no help from tests
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    noise = [word for word in NOISE if word in done.stderr]
    assert not noise, f"{command} printed {noise}:\n{done.stderr[-3000:]}"
    return done


def test_readme_quick_start_segment(workdir):
    command = re.search(r"## Quick start\s+```bash\n.*?\n(segvlm segment .*?)\n", README, re.S).group(1)
    video = shlex.split(command)[2]
    write_test_video(workdir / "bedroom.mp4", frames=10)
    done = run(command.replace(video, "bedroom.mp4"), workdir)
    out = workdir / shlex.split(command)[shlex.split(command).index("--out") + 1]
    assert len(json.loads((out / "masks.json").read_text())["images"]) == 10
    assert (out / "overlay.mp4").stat().st_size > 0
    assert "segmenting" in done.stderr and "meaningless" in done.stderr
    assert "frames" in done.stdout


def test_datasets_readme_build_dataset_and_its_resume(workdir):
    command = re.search(r"^(segvlm build-dataset clips/ photos/ .*)$", DATASETS_README, re.M).group(1)
    command = command.replace("--preset cpu-fast", "--preset tiny-random") + " --max-frames 2"
    write_test_video(workdir / "clips" / "a.mp4", frames=6)
    write_test_image(workdir / "photos" / "x.png")
    first = run(command, workdir)
    assert re.search(r"wrote 3 rows with \d+ regions \(2 units\) to out/cars", " ".join(first.stderr.split()))
    second = run(command, workdir)
    assert "wrote 0 rows with 0 regions (0 units)" in " ".join(second.stderr.split())
    assert "skipped 2/2 units already done (3 rows kept)" in " ".join(second.stderr.split())

    import datasets

    assert datasets.load_from_disk(str(workdir / "out" / "cars")).num_rows == 3  # frames 0 and 5, and the photo


def test_train_with_a_shipped_config_by_name(workdir):
    assert "segvlm train --config tiny-pooled" in README
    done = run("segvlm train --config tiny-pooled --max-steps 1", workdir)
    report = json.loads(done.stdout)
    assert report["steps"] == 1 and report["output_dir"] == str((workdir / "runs" / "tiny-pooled").resolve())
    assert "training tiny-random:smolvlm" in done.stderr and re.search(r"1/1 loss \d", done.stderr)


def test_python_m_segvlm_presets(workdir):
    done = run("python -m segvlm presets", workdir)
    assert done.stdout.startswith("cpu-fast") and "tiny-random" in done.stdout
