"""Every documented way to load a build works on the output it is documented for; resumes say what they did."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from segvlm.data.builder import BuildConfig, build_dataset, load_built
from segvlm.testing import SyntheticLabeler, write_test_image, write_test_video

REPO = Path(__file__).resolve().parents[1]
LOADING = re.search(r"## Loading\s+```python\n(.*?)```", (REPO / "datasets" / "README.md").read_text(), re.S).group(1)
CONFIG = BuildConfig(query="red square", max_frames=2)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """``load_dataset`` caches what it reads; keep that cache inside the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clips" / "a.mp4", frames=3)
    write_test_image(root / "photos" / "x.png", index=1)
    return root


def _pairs(ds) -> list[tuple[str, int]]:
    return sorted(zip(ds["source"], ds["frame_index"], strict=True))


def test_the_documented_loading_calls_work_on_the_builds_they_name(media, tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    arrow = build_dataset([str(media)], "out/cars", CONFIG, labeler=SyntheticLabeler())
    shards = build_dataset([str(media)], "out/cars-shards", CONFIG, labeler=SyntheticLabeler(), save_arrow=False)
    namespace: dict = {}
    exec(compile(LOADING, "datasets/README.md", "exec"), namespace)  # noqa: S102 - the README is under test
    expected = _pairs(arrow.load())
    assert len(expected) == arrow.rows == 3
    assert _pairs(namespace["ds"]) == expected  # the last line: load_dataset on the --no-arrow build
    assert _pairs(load_built("out/cars")) == _pairs(datasets.load_from_disk("out/cars")) == expected
    assert _pairs(shards.load()) == _pairs(load_built("out/cars-shards")) == expected
    with pytest.raises(ValueError, match="load_from_disk"):  # why the arrow build needs load_from_disk
        datasets.load_dataset("out/cars")
    assert 'load_from_disk("path/to/this/folder")' in (tmp_path / "out" / "cars" / "README.md").read_text()
    assert 'load_dataset("path/to/this/folder", split="train")' in (tmp_path / "out/cars-shards/README.md").read_text()


def test_the_pushed_files_load_with_load_dataset(media, tmp_path):
    """What push_to_hub uploads (card and shards), in a folder: what ``load_dataset("user/name")`` reads."""
    import datasets

    build = build_dataset([str(media)], tmp_path / "out", CONFIG, labeler=SyntheticLabeler())
    hub = tmp_path / "hub-copy"
    shutil.copytree(tmp_path / "out" / "data", hub / "data")
    shutil.copy(tmp_path / "out" / "README.md", hub / "README.md")
    assert _pairs(datasets.load_dataset(str(hub), split="train")) == _pairs(build.load())


def test_a_no_arrow_run_over_an_arrow_build_removes_the_stale_arrow_copy(media, tmp_path):
    import datasets

    build_dataset([str(media)], tmp_path / "out", CONFIG, labeler=SyntheticLabeler())
    assert (tmp_path / "out" / "state.json").exists()
    build_dataset([str(media)], tmp_path / "out", CONFIG, labeler=SyntheticLabeler(), save_arrow=False)
    assert not (tmp_path / "out" / "state.json").exists() and not list((tmp_path / "out").glob("data-*.arrow"))
    assert datasets.load_dataset(str(tmp_path / "out"), split="train").num_rows == 3
    with pytest.raises(FileNotFoundError, match="build-dataset"):
        load_built(tmp_path / "nothing")


def test_a_resume_says_what_it_wrote_and_what_it_skipped(media, tmp_path):
    first = build_dataset([str(media)], tmp_path / "out", CONFIG, labeler=SyntheticLabeler())
    assert (first.rows_written, first.resumed_units, first.units) == (3, 0, 2)
    assert first.describe().startswith(f"wrote 3 rows with {first.regions} regions (2 units) to ")
    assert "skipped" not in first.describe()
    again = build_dataset([str(media)], tmp_path / "out", CONFIG, labeler=SyntheticLabeler())
    assert (again.rows_written, again.regions_written, again.resumed_units, again.rows) == (0, 0, 2, 3)
    line = again.describe()
    assert line.startswith("wrote 0 rows with 0 regions (0 units) to ")
    assert f"skipped 2/2 units already done (3 rows kept); the dataset has 3 rows with {first.regions} regions" in line
