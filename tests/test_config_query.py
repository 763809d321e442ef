"""Presets, YAML configs, the backend registry and query parsing."""

from __future__ import annotations

import sys

import pytest

from segvlm.config import PipelineConfig, list_presets, load_config
from segvlm.errors import ConfigError, QueryError, UnknownBackendError
from segvlm.query import parse_query
from segvlm.registry import grounder_class, segmenter_class


def test_presets_ship_and_load():
    assert {"default", "cpu-fast", "gpu-quality", "tiny-random"} <= set(list_presets())
    tiny = load_config("tiny-random")
    assert tiny.preset == "tiny-random" and tiny.segmenter.model == "tiny-random:sam2"
    assert "meaningless" in tiny.warning
    fast = load_config("cpu-fast", device="cpu", overrides={"tracking": {"reground_every": 7}})
    assert fast.grounder.name == "grounding-dino" and fast.tracking.reground_every == 7 and fast.device == "cpu"
    assert load_config(None) == PipelineConfig()


def test_yaml_file_extends_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny-random\ntracking:\n  reground_every: 3\n")
    config = load_config(path)
    assert config.tracking.reground_every == 3 and config.segmenter.model == "tiny-random:sam2"


def test_unknown_keys_and_names_are_refused_with_the_valid_ones(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("tracking:\n  regound_every: 3\n")
    with pytest.raises(ConfigError, match=r"regound_every.*valid keys.*reground_every"):
        load_config(path)
    with pytest.raises(UnknownBackendError, match="known presets"):
        load_config("no-such-preset")
    with pytest.raises(UnknownBackendError, match=r"known grounders: \['grounding-dino', 'owlv2'\]"):
        grounder_class("yolo")
    with pytest.raises(UnknownBackendError, match="known segmenters"):
        segmenter_class("sam9")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_import_segvlm_is_light():
    code = "import segvlm, sys; segvlm.VideoSegmentation; print('torch' in sys.modules, 'transformers' in sys.modules)"
    import subprocess

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("query", "phrases"),
    [
        ("segment the red car", ("red car",)),
        ("find the dog and the two children", ("dog", "children")),
        ("red car", ("red car",)),
        ("Track all people, the ball, and a referee.", ("people", "ball", "referee")),
        (["a cat", "the dog", "a cat"], ("cat", "dog")),
        ("please segment the person on the left", ("person on the left",)),
    ],
)
def test_queries_become_noun_phrases(query, phrases):
    parsed = parse_query(query)
    assert parsed.phrases == phrases
    assert parsed.text  # the full query is kept for re-ranking


@pytest.mark.parametrize("query", ["", "   ", "segment the", [], ["", "the"]])
def test_empty_queries_are_refused(query):
    with pytest.raises(QueryError, match="names nothing to segment"):
        parse_query(query)
