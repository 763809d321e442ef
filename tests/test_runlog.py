"""Long runs survive a kill: frames are logged as they finish, and ``--resume`` continues from the last one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fakes import ColourGrounder, ColourSegmenter
from pycocotools.coco import COCO

from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.runlog import RunLogError
from segvlm.testing.media import Sprite, render, write_video
from segvlm.tracking import Pipeline

H, W, N = 48, 96, 40
RED, BLUE = (220, 30, 30), (30, 60, 220)


def scene():
    red = Sprite("red", RED, (10, 12), [(5, 2 + t) for t in range(N)])
    blue = Sprite("blue", BLUE, (10, 10), [None] * 17 + [(30, 80 - t) for t in range(N - 17)])  # enters at 17
    return render([red, blue], H, W, N)[0]


def colour_pipeline():
    config = PipelineConfig(tracking=TrackingConfig(reground_every=5, min_mask_area=1, backfill_frames=4))
    return Pipeline(config, grounder=ColourGrounder({"red box": RED, "blue box": BLUE}), segmenter=ColourSegmenter())


@pytest.mark.parametrize("kept", [1, 9, 20, 21, 39])
def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path, kept):
    frames = scene()
    reference = colour_pipeline()("red box. blue box.", frames, checkpoint=tmp_path / "full.jsonl")
    assert reference.track_ids == [1, 2] and reference.track(2).first_frame == 17  # back-filled from frame 20
    lines = (tmp_path / "full.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == N + 1
    # A kill after `kept` frames, in the middle of writing the next line.
    (tmp_path / "run.jsonl").write_bytes(b"".join(lines[: kept + 1]) + lines[kept + 1][:25])
    resumed = colour_pipeline()("red box. blue box.", frames, checkpoint=tmp_path / "run.jsonl", resume=True)
    assert [f.frame_index for f in resumed] == list(range(N))
    assert resumed.frames == reference.frames and resumed.prompts == reference.prompts
    assert len((tmp_path / "run.jsonl").read_bytes().splitlines()) == N + 1  # no frame written twice


def test_a_log_of_another_run_is_refused(tmp_path):
    frames = scene()
    colour_pipeline()("red box", frames, checkpoint=tmp_path / "run.jsonl", max_frames=5)
    with pytest.raises(RunLogError, match="log of another run .*query"):
        colour_pipeline()("blue box", frames, checkpoint=tmp_path / "run.jsonl", resume=True, max_frames=5)
    with pytest.raises(RunLogError, match="no run to resume"):
        colour_pipeline()("red box", frames, checkpoint=tmp_path / "none.jsonl", resume=True)


def test_kill_9_at_several_points_then_resume_through_the_cli(tmp_path):
    images, _ = render([Sprite("red", RED, (20, 24), [(10, 2 + t) for t in range(60)])], 64, 112, 60)
    video = write_video(tmp_path / "clip.mp4", images)
    out = tmp_path / "out"
    log = out / "run.jsonl"
    base = [sys.executable, "-m", "segvlm", "segment", video, "red box", "--out", str(out), "--preset", "tiny-random"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    seen_ids: set[int] = set()
    for kill_at, extra in ((12, []), (35, ["--resume"])):
        process = subprocess.Popen([*base, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if log.exists() and log.read_bytes().count(b"\n") > kill_at:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        logged = [json.loads(line) for line in log.read_bytes().splitlines(keepends=True)[1:] if line.endswith(b"\n")]
        assert [entry["frame_index"] for entry in logged] == list(range(len(logged)))  # in order, none twice
        assert len(logged) >= kill_at
        seen_ids |= {obj[0] for entry in logged for obj in entry["objects"]}
    refused = subprocess.run(base, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "add --resume" in " ".join(refused.stderr.split())
    done = subprocess.run([*base, "--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    coco = COCO(str(out / "masks.json"))
    assert sorted(image["frame_index"] for image in coco.imgs.values()) == list(range(60))
    final_ids = {ann["track_id"] for ann in coco.anns.values()}
    assert seen_ids <= final_ids or not seen_ids
    assert not log.exists()  # the run finished: its log is gone


def test_a_track_lost_at_the_kill_still_ends_after_a_resume(tmp_path):
    """Blue is hidden when the run is killed; it cannot re-enter the segmenter, but it must still end and free
    its place so that green, appearing later, is tracked as it is in the uninterrupted run."""
    green = (30, 200, 60)
    red = Sprite("red", RED, (10, 12), [(5, 2 + t) for t in range(N)])
    blue = Sprite("blue", BLUE, (10, 10), [(30, 40)] * 8 + [None] * (N - 8))
    late = Sprite("green", green, (8, 8), [None] * 30 + [(20, 70)] * (N - 30))
    frames = render([red, blue, late], H, W, N)[0]

    def pipe():
        tracking = TrackingConfig(reground_every=5, min_mask_area=1, max_lost_frames=6, max_objects=2)
        grounder = ColourGrounder({"red box": RED, "blue box": BLUE, "green box": green})
        return Pipeline(PipelineConfig(tracking=tracking), grounder=grounder, segmenter=ColourSegmenter())

    query = "red box. blue box. green box."
    reference = pipe()(query, frames, checkpoint=tmp_path / "full.jsonl")
    assert reference.track_ids == [1, 2, 3]  # green gets a place once blue has ended
    lines = (tmp_path / "full.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "run.jsonl").write_bytes(b"".join(lines[: 10 + 1]))  # killed while blue was hidden
    resumed = pipe()(query, frames, checkpoint=tmp_path / "run.jsonl", resume=True)
    assert resumed.track_ids == [1, 2, 3] and resumed.frames == reference.frames
