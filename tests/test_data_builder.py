"""The dataset builder: schema round trip, errors file, resume rules, CLI, and a real kill -9 resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from build_helpers import build_command, check_exactly_once, subprocess_env

from segvlm.data.builder import BuildConfig, BuildMismatchError, build_dataset
from segvlm.testing import SyntheticLabeler, write_test_image, write_test_video
from segvlm.types import VideoSegmentation

REPO = Path(__file__).resolve().parents[1]
QUERY = ("red square", "green square")


class RecordingLabeler(SyntheticLabeler):
    """SyntheticLabeler that remembers what it returned, keyed by file name."""

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, VideoSegmentation] = {}

    def __call__(self, query, source, max_frames, stride):
        result = super().__call__(query, source, max_frames, stride)
        self.results[Path(source).name] = result
        return result


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clips" / "a.mp4", frames=6)
    write_test_video(root / "clips" / "b.mp4", frames=5)
    write_test_image(root / "photos" / "x.png", index=1)
    write_test_image(root / "photos" / "y.png", index=2)
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    return root


def test_round_trip_masks_match_labeler(media, tmp_path):
    import datasets

    from segvlm.data import with_decoded_masks

    labeler = RecordingLabeler()
    config = BuildConfig(query=QUERY, stride=2, caption_templates=("a {label}", "the {phrase} here"))
    summary = build_dataset([str(media)], tmp_path / "out", config, labeler=labeler)

    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert isinstance(ds.features["regions"], datasets.List)
    assert ds.features["regions"].feature["bbox_xyxy"].length == 4
    # a.mp4 frames 0,2,4; b.mp4 frames 0,2,4; two images
    assert [(s, f) for s, f in zip(ds["source"], ds["frame_index"], strict=True)] == [
        ("clips/a.mp4", 0), ("clips/a.mp4", 2), ("clips/a.mp4", 4),
        ("clips/b.mp4", 0), ("clips/b.mp4", 2), ("clips/b.mp4", 4),
        ("photos/x.png", 0), ("photos/y.png", 0),
    ]  # fmt: skip
    assert summary.rows == 8 and summary.errors == 1

    decoded = with_decoded_masks(ds)
    for row in decoded:
        expected = labeler.results[Path(row["source"]).name].frame(row["frame_index"])
        assert row["masks"].shape == (len(expected.objects), row["height"], row["width"])
        np.testing.assert_array_equal(row["masks"], expected.masks())
        for region, obj in zip(row["regions"], expected.objects, strict=True):
            assert region["track_id"] == obj.track_id and region["label"] == obj.label
            np.testing.assert_allclose(region["bbox_xyxy"], obj.box_xyxy)
            assert region["caption"] in (f"a {obj.label}", f"the {obj.phrase} here")
        assert row["image"].size == (row["width"], row["height"])
    png = decoded[6]
    assert png["image"].format == "PNG"  # still images keep their own bytes

    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["source"] for e in errors] == ["clips/broken.mp4"]
    assert "VideoReadError" in errors[0]["reason"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| rows (images and frames) | 8 |" in card and "| red square | 8 |" in card
    assert "x0, y0, x1, y1" in card and "synthetic" in card and "channel_on" in card


def test_parquet_shards_load_with_datasets(media, tmp_path):
    import datasets

    build_dataset(
        [str(media / "photos")],
        tmp_path / "out",
        BuildConfig(query="red square"),
        labeler=SyntheticLabeler(),
        save_arrow=False,
    )
    assert not (tmp_path / "out" / "state.json").exists()
    ds = datasets.load_dataset(str(tmp_path / "out"), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds[0]["regions"][0]["mask"]["size"] == [48, 64]


def test_resume_with_other_settings_is_refused(media, tmp_path):
    build_dataset(
        [str(media / "photos")], tmp_path / "out", BuildConfig(query="red square"), labeler=SyntheticLabeler()
    )
    with pytest.raises(BuildMismatchError, match=r"stride=1 \(this run: 2\).*new --out"):
        build_dataset(
            [str(media / "photos")],
            tmp_path / "out",
            BuildConfig(query="red square", stride=2),
            labeler=SyntheticLabeler(),
        )
    with pytest.raises(BuildMismatchError, match="inputs"):
        build_dataset([str(media)], tmp_path / "out", BuildConfig(query="red square"), labeler=SyntheticLabeler())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BuildMismatchError, match="not a segvlm build"):
        build_dataset([str(media / "photos")], tmp_path / "other", BuildConfig(query="x"), labeler=SyntheticLabeler())


def test_resume_repairs_torn_ledger_and_adopts_orphan_shards(media, tmp_path):
    """The two crash windows: a shard renamed in but not in the ledger, and a half-written ledger line."""
    out = tmp_path / "out"
    config = BuildConfig(query=QUERY, stride=2, images_per_unit=1)
    first = build_dataset([str(media)], out, config, labeler=SyntheticLabeler())
    ledger = (out / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    assert len(ledger) == 5
    # keep 2 full lines, tear the 3rd; leave a stale temporary like a kill during a shard write would
    (out / "ledger.jsonl").write_bytes(b"".join(ledger[:2]) + ledger[2][:17])
    (out / "data" / ".tmp-deadbeef-u000001-x.parquet").write_bytes(b"PAR1 half")
    shards = sorted((out / "data").iterdir())
    shards[-1].unlink()  # one unit really lost: it must be redone

    labeler = RecordingLabeler()
    second = build_dataset([str(media)], out, config, labeler=labeler)
    assert second.rows == first.rows == 8 and second.errors == 1
    assert second.resumed_units == 4 and len(labeler.results) == 1  # only the lost unit was labelled again
    assert not any(p.name.startswith(".tmp-") for p in (out / "data").iterdir())
    keys = [json.loads(line)["key"] for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 5


def test_query_errors_stop_the_build_instead_of_skipping_inputs(media, tmp_path):
    from segvlm.errors import QueryError

    def bad_query(query, source, max_frames, stride):
        raise QueryError("the query is empty; pass what to segment")

    with pytest.raises(QueryError):
        build_dataset([str(media / "photos")], tmp_path / "out", BuildConfig(query="x"), labeler=bad_query)


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="exactly one of query"):
        BuildConfig()
    with pytest.raises(ValueError, match=r"\{label\}"):
        BuildConfig(query="cat", caption_templates=("a {colour} cat",))


def _cli_app():
    import typer

    from segvlm.data.cli import build_dataset_command

    app = typer.Typer()
    app.command("build-dataset")(build_dataset_command)

    @app.callback()
    def main() -> None:
        """segvlm test app"""

    return app


def test_cli_builds_and_refuses_mismatch(media, tmp_path):
    import datasets
    from typer.testing import CliRunner

    app, runner = _cli_app(), CliRunner()
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("red square\n# comment\ngreen square\n")
    args = [
        "build-dataset",
        str(media / "clips"),
        "--out",
        str(tmp_path / "out"),
        "--vocabulary",
        str(vocab),
        "--max-frames",
        "2",
        "--labeler",
        "segvlm.testing:SyntheticLabeler",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 4 rows with 8 regions" in result.output
    assert "1 inputs could not be read" in result.output
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert sorted(set(ds[0]["regions"][i]["label"] for i in range(2))) == ["green square", "red square"]

    result = runner.invoke(app, [*args[:-4], "--max-frames", "3", *args[-2:]])
    assert result.exit_code == 2
    assert "max_frames=2 (this run: 3)" in " ".join(result.output.split())


def _wait_for_ledger_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the build ended (rc={proc.returncode}) before it could be killed")
        time.sleep(0.05)
    pytest.fail(f"no {count} ledger lines after {timeout}s")


def test_kill_9_mid_build_then_rerun_gives_every_item_once(tmp_path):
    media = tmp_path / "media"
    for index in range(6):
        write_test_video(media / f"v{index}.mp4", frames=5)
    out = tmp_path / "out"
    command = build_command(media, out, queries=("red square", "green square"))
    proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_ledger_lines(out / "ledger.jsonl", 2, proc)
    time.sleep(0.1)  # land somewhere inside the next unit
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "state.json").exists()
    done_before = (out / "ledger.jsonl").read_text().count("\n")
    assert 2 <= done_before < 6

    rerun = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_before}/6 units already done" in " ".join(rerun.stderr.split())
    check_exactly_once(out, {(f"v{i}.mp4", f) for i in range(6) for f in range(5)})


def test_readme_quick_start_runs_with_tiny_random_preset(tmp_path, monkeypatch):
    """The quick start of datasets/README.md, run as written: the real pipeline with random weights."""
    import datasets

    pytest.importorskip("segvlm.tracking")
    text = (REPO / "datasets" / "README.md").read_text()
    snippet = text.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "datasets/README.md", "exec"), {})
    ds = datasets.load_from_disk("out/squares")
    assert ds.num_rows == 2 and list(ds["frame_index"]) == [0, 1]
    for row in ds:
        for region in row["regions"]:
            assert region["mask"]["size"] == [row["height"], row["width"]]
            x0, y0, x1, y1 = region["bbox_xyxy"]
            assert 0 <= x0 <= x1 <= row["width"] and 0 <= y0 <= y1 <= row["height"]
    card = (tmp_path / "out" / "squares" / "README.md").read_text()
    assert "preset:tiny-random" in card and "tiny-random:sam2" in card and '"random_weights": true' in card
