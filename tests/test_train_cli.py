"""``segvlm train``: shipped configs by name from any folder, dataset paths, progress, and a resume that says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from segvlm.cli import app
from segvlm.errors import ConfigError
from segvlm.training.config import find_train_config, list_train_configs, load_train_config

runner = CliRunner()
SMALL_RUN = {
    "model": {
        "model": "tiny-random:smolvlm",
        "mask_tokenizer": "pooled",
        "mask_tokenizer_args": {"feature_layers": [0]},
    },
    "trainable": {"mask_tokenizer": True, "connector": True},
    "data": {"train": "scenes:12:0", "eval": "scenes:4:1000", "prompt": "What is {region1}?"},
    "optim": {"lr": 1e-3, "warmup_steps": 1, "max_steps": 2, "batch_size": 4},
    "output_dir": "runs/small",
    "mixed_precision": "no",
    "eval_every": 0,
    "save_every": 1,
}


@pytest.mark.parametrize("name", ["tiny-pooled", "tiny-pooled.yaml", "configs/train/tiny-pooled.yaml"])
def test_shipped_configs_are_found_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: configs/train/ does not exist here
    source = find_train_config(name)
    assert source.shipped and source.path.name == "tiny-pooled.yaml" and source.path.is_file()
    config = load_train_config(name, {"optim": {"max_steps": 7}})
    assert config.optim.max_steps == 7 and config.output_dir == "runs/tiny-pooled"
    assert {"tiny-pooled", "tiny-encoder", "smolvlm-lora-pooled"} <= set(list_train_configs())


def test_an_unknown_config_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"not found: tiny-poled.*tiny-pooled.*--config tiny-pooled"):
        find_train_config("tiny-poled")
    result = runner.invoke(app, ["train", "--config", "elsewhere/mine.yaml"])
    assert result.exit_code == 2 and "tiny-pooled" in result.output and "Traceback" not in result.output


def test_dataset_paths_resolve_against_the_current_folder_then_the_configs_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "out" / "cars").mkdir(parents=True)
    (tmp_path / "here" / "out" / "local").mkdir(parents=True)
    path = project / "train.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "out/cars", "eval": "out/local"}, "output_dir": "runs/x"}))
    monkeypatch.chdir(tmp_path / "here")
    config = load_train_config(path)
    assert config.data.train == str((project / "out" / "cars").resolve())  # found only next to the config
    assert config.data.eval == str((tmp_path / "here" / "out" / "local").resolve())  # found here first
    assert config.output_dir == "runs/x"  # outputs go where the command runs


def test_a_missing_dataset_is_refused_with_the_command_that_builds_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**SMALL_RUN, "data": {**SMALL_RUN["data"], "train": "out/nothing-here"}}))
    result = runner.invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "not found" in result.output and "segvlm build-dataset" in " ".join(result.output.split())


def test_training_shows_progress_and_says_when_it_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(SMALL_RUN))
    first = runner.invoke(app, ["train", "--config", str(path)])
    assert first.exit_code == 0, first.output
    assert "training tiny-random:smolvlm" in first.output
    assert re.search(r"2/2 loss \d+\.\d{4}", first.output), first.output  # the progress bar's last state
    assert "resumed from" not in first.output
    report = json.loads(first.stdout[first.stdout.index("{") :])
    assert report["resumed_from"] is None and report["output_dir"] == str((tmp_path / "runs" / "small").resolve())

    second = runner.invoke(app, ["train", "--config", str(path), "--max-steps", "3"])
    assert second.exit_code == 0, second.output
    assert "resumed from step 2 of 3" in " ".join(second.output.split())
    report = json.loads(second.stdout[second.stdout.index("{") :])
    assert report["resumed_from"] == 2 and report["steps"] == 3
    assert (Path(report["output_dir"]) / "checkpoint-3").is_dir()
