"""Training on region captions: configs, label alignment, loss falls, exact resume, the experiment script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from segvlm.errors import ConfigError
from segvlm.training.config import load_train_config, train_config_from_dict
from segvlm.training.data import example_order

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **overrides):
    values = {
        "model": {
            "model": "tiny-random:smolvlm",
            "mask_tokenizer": "pooled",
            "mask_tokenizer_args": {"feature_layers": [0]},
        },
        "trainable": {"mask_tokenizer": True, "connector": True, "lm": True},
        "data": {
            "train": "scenes:24:0",
            "eval": "scenes:4:1000",
            "prompt": "What colour is {region1}?",
            "answer_field": "caption",
            "scene_config": {"caption_template": "{colour}"},
        },
        "optim": {"lr": 3e-3, "warmup_steps": 1, "max_steps": 3, "batch_size": 6},
        "output_dir": str(tmp_path / "run"),
        "mixed_precision": "no",
        "eval_every": 0,
        "save_every": 0,
        "log_every": 1,
        "resume": False,
    }
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return train_config_from_dict(values)


def test_yaml_presets_map_onto_the_dataclass():
    for path in sorted((ROOT / "segvlm" / "presets" / "train").glob("*.yaml")):
        config = load_train_config(path)
        assert config.optim.max_steps > 0 and config.data.prompt
    config = load_train_config(ROOT / "configs" / "train" / "tiny-pooled.yaml", {"optim": {"max_steps": 7}})
    assert config.optim.max_steps == 7 and config.model.mask_tokenizer_args == {"feature_layers": [0]}


def test_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(path)
    with pytest.raises(ValueError, match="mixed_precision"):
        train_config_from_dict({"mixed_precision": "fp8"})


def test_example_order_is_a_pure_function_of_seed_and_position():
    stream = example_order(10, seed=3, start=0, count=35)
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert example_order(10, seed=3, start=17, count=9) == stream[17:26]
    assert example_order(10, seed=4, start=0, count=10) != stream[:10]


def test_labels_are_exactly_the_answer_tokens(tmp_path):
    from segvlm.training.trainer import Trainer, encode_batch

    trainer = Trainer(_config(tmp_path))
    batch = trainer.train_examples.batch([0, 1, 2])
    encoded = encode_batch(trainer.vlm, batch, with_answers=True)
    tok = trainer.vlm.tokenizer
    for row, answer in enumerate(batch.answers):
        labelled = encoded.labels[row][encoded.labels[row] != -100].tolist()
        assert tok.decode(labelled) == answer + tok.eos_token
    placeholders = (encoded.inputs["input_ids"] == trainer.vlm.mask_tokenizer.placeholder_id).sum(-1)
    assert placeholders.tolist() == [2, 2, 2]  # one region: feature + shape token


def test_loss_falls_in_a_few_steps(tmp_path):
    from segvlm.training.trainer import Trainer

    trainer = Trainer(_config(tmp_path, optim={"max_steps": 12, "lr": 5e-3}))
    fixed = trainer.micro_batch(0, 0)
    with torch.no_grad():
        before = trainer.module(fixed).item()
    for _ in range(12):
        trainer.train_step()
    with torch.no_grad():
        after = trainer.module(fixed).item()
    assert after < 0.6 * before, (before, after)


def test_resume_continues_from_the_same_step_with_the_same_loss(tmp_path):
    from safetensors.torch import load_file

    from segvlm.training.trainer import Trainer, latest_checkpoint

    # LoRA with dropout: the next loss also depends on the restored RNG state
    overrides = {
        "trainable": {"lora": {"enabled": True, "r": 2, "alpha": 4, "dropout": 0.2}},
        "save_every": 2,
        "keep_checkpoints": 0,
    }
    first = Trainer(_config(tmp_path, **overrides))
    result = first.train()
    losses = dict(result.train_losses)
    assert result.steps == 3 and latest_checkpoint(tmp_path / "run").name == "checkpoint-3"
    assert any("lora_" in name for name in first.trainable_state())

    second = Trainer(_config(tmp_path, **overrides))
    second.load_checkpoint(tmp_path / "run" / "checkpoint-2")
    assert second.step == 2
    loss = second.train_step()
    assert second.step == 3
    assert loss == pytest.approx(losses[3], rel=0, abs=1e-6)
    reference = load_file(str(tmp_path / "run" / "checkpoint-3" / "trainable.safetensors"))
    for name, value in second.trainable_state().items():
        assert torch.allclose(value, reference[name], atol=1e-6), name


def test_resume_flag_picks_up_the_newest_checkpoint(tmp_path):
    from segvlm.training.trainer import Trainer

    Trainer(_config(tmp_path, optim={"max_steps": 2}, save_every=1)).train()
    resumed = Trainer(_config(tmp_path, optim={"max_steps": 3}, resume=True))
    result = resumed.train()
    assert result.steps == 3
    assert [step for step, _ in result.train_losses] == [3]  # only the one missing step ran
    assert (tmp_path / "run" / "final" / "masktok_config.json").is_file()


def test_experiment_smoke_writes_all_keys(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "region_caption_experiment", ROOT / "pipelines" / "region_caption_experiment.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    out, png = tmp_path / "out.json", tmp_path / "curve.png"
    module.main(
        quick=False, smoke=True, json_path=out, plot_path=png, seed=0, n_objects=3, steps=None, work_dir=None, threads=0
    )
    report = json.loads(out.read_text())
    for key in ("acc_mask_tokens", "acc_overlay", "acc_no_region", "n_objects", "train_steps", "seconds", "seed"):
        assert key in report, key
    assert report["n_objects"] == 3 and report["train_steps"] == module.MODES["smoke"].steps
    assert all(0.0 <= report[k] <= 1.0 for k in ("acc_mask_tokens", "acc_overlay", "acc_no_region"))
    assert png.stat().st_size > 1000
