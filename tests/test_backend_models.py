"""Switching a backend brings a model that fits it; a checkpoint of another family is refused before loading."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from segvlm.cli import app
from segvlm.config import list_presets, load_config
from segvlm.errors import ConfigError, UnknownBackendError
from segvlm.registry import check_model, checkpoint_kind
from segvlm.testing.media import Sprite, render, write_video

runner = CliRunner()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    images, _ = render([Sprite("red", (220, 30, 30), (24, 30), [(20, 4 * t) for t in range(4)])], 72, 128, 4)
    return write_video(tmp_path_factory.mktemp("backends") / "scene.mp4", images)


@pytest.mark.parametrize(
    ("preset", "overrides", "grounder", "segmenter"),
    [
        ("tiny-random", {"grounder": {"name": "grounding-dino"}}, "tiny-random:grounding-dino", "tiny-random:sam2"),
        ("tiny-random", {"segmenter": {"name": "edgetam"}}, "tiny-random:owlv2", "tiny-random:edgetam"),
        ("tiny-random", {"segmenter": {"name": "sam3"}}, "tiny-random:owlv2", "tiny-random:sam3"),
        ("default", {"grounder": {"name": "grounding-dino"}}, "IDEA-Research/grounding-dino-tiny", None),
        ("default", {"segmenter": {"name": "edgetam"}}, None, "yonigozlan/EdgeTAM-hf"),
        ("default", {"segmenter": {"name": "sam3"}}, None, "facebook/sam3"),
        ("cpu-fast", {"grounder": {"name": "owlv2"}}, "google/owlv2-base-patch16-ensemble", "yonigozlan/EdgeTAM-hf"),
        # the same backend keeps the preset's own (larger) checkpoint; an explicit model always wins
        ("gpu-quality", {"grounder": {"name": "owlv2"}}, "google/owlv2-large-patch14-ensemble", None),
        ("tiny-random", {"segmenter": {"name": "sam2", "model": "tiny-random:sam2.1-hiera-tiny-arch"}}, None, None),
    ],
)
def test_a_switched_backend_gets_its_own_default_model_in_the_presets_size_class(
    preset, overrides, grounder, segmenter
):
    config = load_config(preset, overrides=overrides)
    if grounder is not None:
        assert config.grounder.model == grounder
    if segmenter is not None:
        assert config.segmenter.model == segmenter
    for stage, layer in overrides.items():
        assert getattr(config, stage).name == layer["name"]
        if "model" in layer:
            assert getattr(config, stage).model == layer["model"]
    if preset == "tiny-random":  # the stage settings that are not about the model stay the preset's
        assert config.segmenter.dtype == "float32" and config.grounder.top_k == 2


def test_a_yaml_that_extends_a_preset_and_switches_a_backend_gets_a_fitting_model(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny-random\nsegmenter:\n  name: edgetam\n")
    assert load_config(path).segmenter.model == "tiny-random:edgetam"


def test_tiny_checkpoints_of_another_family_are_refused_with_the_fix():
    with pytest.raises(ConfigError) as refused:
        load_config("tiny-random", overrides={"grounder": {"name": "grounding-dino", "model": "tiny-random:owlv2"}})
    message = str(refused.value)
    assert "'grounding-dino' cannot load 'tiny-random:owlv2'" in message and "checkpoint for owlv2" in message
    assert "--grounder-model tiny-random:grounding-dino" in message and "--grounder owlv2" in message
    with pytest.raises(ConfigError, match="--segmenter-model tiny-random:sam"):
        load_config("tiny-random", overrides={"segmenter": {"name": "sam", "model": "tiny-random:sam2"}})
    with pytest.raises(UnknownBackendError, match=r"unknown tiny model 'tiny-random:owl'.*tiny-random:owlv2"):
        load_config("tiny-random", overrides={"grounder": {"model": "tiny-random:owl"}})
    with pytest.raises(UnknownBackendError, match="known grounders"):
        load_config("tiny-random", overrides={"grounder": {"name": "yolo"}})


def test_sam3_does_not_check_the_grounder_it_never_runs():
    config = load_config(
        "tiny-random", overrides={"segmenter": {"name": "sam3"}, "grounder": {"model": "tiny-random:sam"}}
    )
    assert config.segmenter.model == "tiny-random:sam3"


def _checkpoint_folder(folder, model_type):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "text_config": {"model_type": "x"}}))
    return str(folder)


def test_local_folders_are_checked_by_the_model_type_in_their_config(tmp_path):
    owl = _checkpoint_folder(tmp_path / "my-owl", "owlv2")
    sam2 = _checkpoint_folder(tmp_path / "my-sam2", "sam2_video")
    assert checkpoint_kind(owl) == "owlv2"
    check_model("grounder", "owlv2", owl)
    check_model("segmenter", "sam2", sam2)
    with pytest.raises(ConfigError, match=r"'grounding-dino' cannot load .*my-owl.*checkpoint for owlv2"):
        check_model("grounder", "grounding-dino", owl)
    with pytest.raises(ConfigError, match=r"--segmenter-model yonigozlan/EdgeTAM-hf.*--segmenter sam2"):
        load_config("default", overrides={"segmenter": {"name": "edgetam", "model": sam2}})
    odd = _checkpoint_folder(tmp_path / "bert", "bert")
    with pytest.raises(ConfigError, match="a 'bert' checkpoint"):
        check_model("grounder", "owlv2", odd)
    no_config = tmp_path / "weights-only"
    no_config.mkdir()
    check_model("grounder", "grounding-dino", str(no_config))  # nothing to tell from: the load decides


def test_hub_ids_are_checked_from_the_local_cache_and_otherwise_left_to_the_load(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--owl-copy" / "snapshots" / "abc123"
    _checkpoint_folder(snapshot, "owlv2")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert checkpoint_kind("someone/owl-copy") == "owlv2"
    with pytest.raises(ConfigError, match="checkpoint for owlv2"):
        check_model("grounder", "grounding-dino", "someone/owl-copy")
    assert checkpoint_kind("someone/not-downloaded") is None
    check_model("grounder", "grounding-dino", "someone/not-downloaded")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grounder", "grounding-dino", "--grounder-model", "tiny-random:owlv2"], "checkpoint for owlv2"),
        (["--segmenter", "sam", "--segmenter-model", "tiny-random:edgetam"], "--segmenter edgetam"),
        (["--segmenter", "sam3", "--grounder", "owlv2"], "finds objects from the text itself"),
    ],
)
def test_segment_refuses_a_mismatch_before_loading_anything(video, tmp_path, args, message):
    result = runner.invoke(app, ["segment", video, "box", "--out", str(tmp_path), "--preset", "tiny-random", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "masks.json").exists()


@pytest.mark.parametrize("args", [["--grounder", "grounding-dino"], ["--segmenter", "edgetam"]])
def test_segment_runs_with_a_switched_backend(video, tmp_path, args):
    result = runner.invoke(
        app,
        ["segment", video, "the red box", "--out", str(tmp_path), "--preset", "tiny-random", "--max-frames", "2"]
        + args,
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "masks.json").read_text())["segvlm"]
    stage, name = args[0].lstrip("-"), args[1]
    assert saved["meta"][stage] == {**saved["meta"][stage], "name": name, "model": f"tiny-random:{name}"}


def test_sam3_switched_in_by_override_runs_on_its_tiny_model(video):
    from segvlm.tracking import Pipeline

    pipe = Pipeline(load_config("tiny-random", overrides={"segmenter": {"name": "sam3"}}))
    result = pipe("object", video, max_frames=2)
    assert len(result) == 2 and pipe.segmenter.text_native


def test_help_and_presets_agree_with_the_shipped_presets():
    help_text = " ".join(runner.invoke(app, ["segment", "--help"]).output.split())
    listed = runner.invoke(app, ["presets"]).output
    for name in list_presets():
        assert name in help_text and name in listed
    sam3 = next(line for line in listed.splitlines() if line.startswith("sam3"))
    assert "grounder=none" in sam3 and "owlv2" not in sam3
    assert "tiny-pooled" in listed
