"""One loader for transformers models: tiny names, folders, cached hub ids, and one clear line when offline."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from segvlm.cli import app
from segvlm.loading import ModelLoadError, load_pretrained


def test_tiny_names_and_folders_load():
    from transformers import Sam2VideoModel

    from segvlm.resolve import resolve_model

    assert type(load_pretrained(Sam2VideoModel, "tiny-random:sam2")).__name__ == "Sam2VideoModel"
    assert type(load_pretrained(Sam2VideoModel, resolve_model("tiny-random:sam2"))).__name__ == "Sam2VideoModel"


def test_an_unreachable_hub_id_fails_at_once_with_the_fix(tmp_path):
    from transformers import Sam2VideoModel

    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"cannot be reached; download it .* --local-dir") as error:
        load_pretrained(Sam2VideoModel, "facebook/sam2.1-hiera-tiny")
    assert time.perf_counter() - started < 10
    assert "\n" not in str(error.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not be loaded from the folder"):
        load_pretrained(Sam2VideoModel, str(tmp_path))


def test_the_cli_says_in_one_line_that_a_real_preset_cannot_be_fetched(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "photo.png")
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "photo.png"), "a car", "--out", str(tmp_path / "o")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "cannot be reached" in text and "Traceback" not in text
