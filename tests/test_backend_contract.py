"""Every registered grounder and segmenter keeps the backend contract (segvlm.backend), on its tiny random model.

Each backend is built from its config by name, as the pipeline builds it, and checked for what it declares
(its kind, options, checkpoints, capabilities), for one run on a small frame or clip returning the declared
types, and for a clear refusal of what it does not support. A backend added to the registry is checked here
without a new test: its tiny model (``models.tiny``) is all it needs.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest

import segvlm
from segvlm.backend import Backend, ModelFamily, UnsupportedOperationError
from segvlm.config import GrounderConfig, PipelineConfig, SegmenterConfig, load_config
from segvlm.errors import ConfigError
from segvlm.grounding.base import Grounder
from segvlm.provenance import Provenance, StageRecord
from segvlm.registry import GROUNDERS, SEGMENTERS, grounder_class, segmenter_class, text_native
from segvlm.segmentation.base import (
    FrameMasks,
    ObjectPrompt,
    Segmenter,
    SegmenterSession,
    Sweep,
    TextFrameMasks,
    TextSegmenterSession,
    TextVideoSegmenter,
    VideoSegmenter,
)
from segvlm.types import Detection

H, W = 48, 64
BOX = (16.0, 12.0, 40.0, 36.0)


def frame(seed: int = 0) -> np.ndarray:
    """A grey frame with a red square inside ``BOX``, a little noise so that frames differ."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W, 3), 110, np.uint8) + rng.integers(0, 5, (H, W, 3), dtype=np.uint8)
    x0, y0, x1, y1 = (int(v) for v in BOX)
    image[y0:y1, x0:x1] = (220, 30, 30)
    return image


def tiny_config(stage: str, name: str):
    """The stage config that builds backend ``name`` on its tiny random model."""
    family = (grounder_class if stage == "grounder" else segmenter_class)(name).models
    assert isinstance(family, ModelFamily), f"{name} declares no checkpoints (models = ModelFamily(...))"
    if stage == "grounder":
        return GrounderConfig(name=name, model=family.tiny, box_threshold=0.0, top_k=2)
    return SegmenterConfig(name=name, model=family.tiny, dtype="float32")


@pytest.fixture(scope="module", params=sorted(GROUNDERS))
def grounder(request) -> Grounder:
    return grounder_class(request.param).from_config(tiny_config("grounder", request.param))


@pytest.fixture(scope="module", params=sorted(SEGMENTERS))
def segmenter(request) -> Segmenter:
    return segmenter_class(request.param).from_config(tiny_config("segmenter", request.param))


def check_declarations(backend: Backend) -> None:
    """What every backend class declares, read without building it, agrees with the built backend."""
    cls = type(backend)
    assert not getattr(cls.from_config, "__isabstractmethod__", False)
    assert cls.from_config.__func__ is not VideoSegmenter.from_config.__func__  # its own, not the refusing default
    assert dataclasses.is_dataclass(cls.Options)
    cls.Options()  # every option has a default: a config without options builds the backend
    assert set(cls.capabilities()) == {"prompts", "corrections", "text"}
    assert all(isinstance(value, bool) for value in cls.capabilities().values())
    assert not cls.supports_corrections or cls.supports_prompts  # a correction is made of prompts
    kind = backend.config.model.removeprefix("tiny-random:")
    assert kind in cls.models.tiny_kinds
    assert backend.weights is not None and backend.weights.model == backend.config.model
    assert backend.random_weights is True  # recorded where the tiny model was loaded


def test_a_grounder_keeps_the_contract(grounder):
    check_declarations(grounder)
    assert isinstance(grounder, Grounder) and grounder.kind == "grounder"
    assert grounder.capabilities() == {"prompts": False, "corrections": False, "text": True}
    detections = grounder.detect(frame(), ["red square", "cat"], "the red square and a cat")
    assert detections and all(isinstance(d, Detection) for d in detections)
    assert {d.label for d in detections} <= {"red square", "cat"}
    for d in detections:
        x0, y0, x1, y1 = d.box_xyxy
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert d.phrase in ("the red square", "a cat")
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert sum(d.label == "cat" for d in detections) <= 2  # top_k from the config


def test_a_segmenter_runs_one_clip_of_its_kind(segmenter):
    check_declarations(segmenter)
    assert isinstance(segmenter, Segmenter) and segmenter.kind == "segmenter"
    assert type(segmenter).text_native is type(segmenter).supports_text  # the earlier name still answers
    clip = [frame(seed) for seed in range(3)]
    if isinstance(segmenter, TextVideoSegmenter):
        assert segmenter.capabilities() == {"prompts": False, "corrections": False, "text": True}
        assert segmenter.text_native and text_native(segmenter.config.name)
        session = segmenter.start_text(H, W, ["red square"])
        assert isinstance(session, TextSegmenterSession)
        for image in clip:
            output = session.step(image, pixel_values=segmenter.preprocess(image))
            assert isinstance(output, TextFrameMasks)
            assert output.masks.shape == (len(output.obj_ids), H, W) and output.masks.dtype == bool
            assert output.scores.shape == (len(output.obj_ids),) and set(output.labels) <= {"red square"}
        return
    assert isinstance(segmenter, VideoSegmenter)
    assert segmenter.supports_prompts and not segmenter.text_native and not text_native(segmenter.config.name)
    session = segmenter.start(H, W)
    assert isinstance(session, SegmenterSession)
    outputs = [session.step(image, [ObjectPrompt(1, box=BOX)] if i == 0 else []) for i, image in enumerate(clip)]
    for output in outputs:
        assert isinstance(output, FrameMasks) and output.obj_ids == [1]
        assert output.masks.shape == (1, H, W) and output.masks.dtype == bool and output.scores.shape == (1,)
    assert session.state_size() > 0
    tracked = list(segmenter.propagate_object(clip, 1, {0: ObjectPrompt(1, box=BOX)}, [Sweep(0, 2)]))
    assert [t.position for t in tracked] == [0, 1, 2] and all(t.mask.shape == (H, W) for t in tracked)


def test_a_segmenter_refuses_the_other_kinds_operations_with_the_fix(segmenter):
    if isinstance(segmenter, TextVideoSegmenter):
        with pytest.raises(UnsupportedOperationError, match=r"box, click or mask prompts.*start_text"):
            segmenter.start(H, W)
        with pytest.raises(UnsupportedOperationError, match=r"corrections.*promptable segmenter"):
            list(segmenter.propagate_object([frame()], 1, {0: ObjectPrompt(1, box=BOX)}, [Sweep(0, 0)]))
        pipe = segvlm.Pipeline(PipelineConfig(device="cpu"), grounder=object(), segmenter=segmenter)
        result = segvlm.VideoSegmentation(segvlm.VideoInfo("<frames>", H, W), "x", ["x"])
        with pytest.raises(segvlm.SegvlmError, match="promptable segmenter"):
            pipe.correct(result, [frame()])
    else:
        with pytest.raises(UnsupportedOperationError, match=r"text phrases.*grounder.*sam3"):
            segmenter.start_text(H, W, ["red square"])


@pytest.mark.parametrize(
    ("stage", "name"), [("grounder", n) for n in GROUNDERS] + [("segmenter", n) for n in SEGMENTERS]
)
def test_an_unknown_option_is_refused_naming_the_valid_ones_before_loading(stage, name):
    cls = (grounder_class if stage == "grounder" else segmenter_class)(name)
    config = dataclasses.replace(tiny_config(stage, name), options={"no_such_option": 1})
    valid = sorted(field.name for field in dataclasses.fields(cls.Options))
    expected = rf"\['no_such_option'\] in {stage}.options of '{name}'; " + (
        "valid options are " + re.escape(str(valid)) if valid else "it has no options"
    )
    with pytest.raises(ConfigError, match=expected):
        cls.from_config(config)
    with pytest.raises(ConfigError, match=expected):
        load_config("tiny-random", overrides={stage: {"name": name, "options": {"no_such_option": 1}}})


def test_backend_options_come_from_configs_yaml_and_reach_the_backend(tmp_path):
    path = tmp_path / "fast.yaml"
    path.write_text(
        "extends: tiny-random\nsegmenter:\n  options:\n    fast: true\ngrounder:\n  options:\n    resize_margin: 2.0\n"
    )
    config = load_config(path)
    assert config.segmenter.options == {"fast": True} and config.grounder.options == {"resize_margin": 2.0}
    sam2 = segmenter_class("sam2").from_config(config.segmenter)
    assert sam2.fast is True
    assert segmenter_class("sam2")(sam2.model, sam2.processor, config.segmenter, fast=False).fast is False
    owl = grounder_class("owlv2").from_config(config.grounder)
    assert owl.resize_margin == 2.0 and grounder_class("owlv2").resize_margin == 1.25
    typed = SegmenterConfig(model="tiny-random:sam2", dtype="float32", options=segmenter_class("sam2").Options(True))
    assert segmenter_class("sam2")(sam2.model, sam2.processor, typed).fast is True
    assert PipelineConfig(segmenter=typed).to_dict()["segmenter"]["options"] == {"fast": True}


def test_switching_a_backend_drops_the_options_of_the_one_it_replaces(tmp_path):
    config = load_config("tiny-random", overrides={"segmenter": {"options": {"fast": True}}})
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny-random\nsegmenter:\n  options:\n    fast: true\n")
    switched = load_config(path, overrides={"segmenter": {"name": "edgetam"}})
    assert config.segmenter.options == {"fast": True} and switched.segmenter.options == {}
    kept = load_config(path, overrides={"segmenter": {"name": "sam2"}})  # the same backend keeps its options
    assert kept.segmenter.options == {"fast": True}


def test_the_old_text_threshold_setting_still_loads_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("extends: cpu-fast\ngrounder:\n  text_threshold: 0.25\n")
    with pytest.warns(FutureWarning, match="text_threshold is ignored"):
        config = load_config(path)
    assert config.grounder.name == "grounding-dino" and "text_threshold" not in config.to_dict()["grounder"]
    with pytest.warns(FutureWarning, match="text_threshold is ignored"):
        GrounderConfig(text_threshold=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config("cpu-fast")  # the shipped presets do not set it


def test_random_weights_are_recorded_where_the_models_load_not_read_from_a_warning():
    config = PipelineConfig(
        grounder=GrounderConfig(model="tiny-random:owlv2", box_threshold=0.0, top_k=1),
        segmenter=SegmenterConfig(model="tiny-random:sam2", dtype="float32"),
        device="cpu",
    )
    assert config.warning is None
    result = segvlm.Pipeline(config)("red square", [frame(0), frame(1)])
    assert isinstance(result.provenance, Provenance) and result.provenance.random_weights is True
    assert result.provenance.segmenter == StageRecord("sam2", "tiny-random:sam2")
    assert result.meta["random_weights"] is True and result.meta["seconds"] >= 0


def test_provenance_round_trips_through_its_json_form_keeping_unknown_keys():
    record = Provenance(
        segvlm_version="1",
        preset="p",
        grounder=StageRecord("owlv2", "m", 0.2),
        segmenter=StageRecord("sam2", "s", options={"fast": True}),
        random_weights=True,
        seconds=1.5,
        extra={"labeler": "someone"},
    )
    data = record.to_json()
    assert data["grounder"] == {"name": "owlv2", "model": "m", "box_threshold": 0.2}
    assert data["segmenter"] == {"name": "sam2", "model": "s", "options": {"fast": True}}
    assert data["reranker"] is None and data["labeler"] == "someone"
    assert Provenance.from_json(data) == record
    assert Provenance.from_json({"preset": "x"}).to_json() == {"preset": "x"}
    assert Provenance.from_json({"annotated_by_hand": True}).annotated_by_hand is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segmenter-option", "fsat=true"], "unknown option(s) ['fsat'] in segmenter.options of 'sam2'; valid"),
        (["--segmenter", "sam3", "--segmenter-option", "fast=true"], "of 'sam3'; it has no options"),
        (["--segmenter-option", "fast"], "--segmenter-option 'fast' is not KEY=VALUE"),
        (["--grounder-option", "margin=1"], "valid options are ['resize_margin']"),
    ],
)
def test_segment_refuses_bad_backend_options_before_loading_anything(tmp_path, args, message):
    from PIL import Image
    from typer.testing import CliRunner

    from segvlm.cli import app

    photo = tmp_path / "photo.png"
    Image.fromarray(frame()).save(photo)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["segment", str(photo), "box", "--out", str(out), "--preset", "tiny-random", *args]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and not (out / "masks.json").exists()
