"""The annotation server's HTTP API (FastAPI's test client) on exact fake backends and generated videos."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from fakes import ColourGrounder, ColourSegmenter
from PIL import Image

from segvlm.annotate.drift import track_warnings
from segvlm.annotate.project import Project, ProjectError, discover
from segvlm.annotate.server import AnnotationServer
from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.masks import RLE
from segvlm.testing.media import Sprite, render, write_video
from segvlm.tracking import Pipeline

H, W, N = 48, 96, 24
RED, BLUE = (220, 30, 30), (30, 60, 220)


def fake_pipeline():
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1))
    return Pipeline(config, grounder=ColourGrounder({"red box": RED, "blue box": BLUE}), segmenter=ColourSegmenter())


@pytest.fixture
def media(tmp_path):
    red = Sprite("red", RED, (10, 12), [(5, 2 + 2 * t) for t in range(N)])
    blue = Sprite("blue", BLUE, (10, 10), [(30, 40)] * 12 + [None] * 12)
    frames, truth = render([red, blue], H, W, N)
    folder = tmp_path / "media"
    folder.mkdir()
    # PNG frames: lossless, so the fake segmenter's colours are exact.
    clip = folder / "clip"
    clip.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(clip / f"{index:04d}.png")
    return clip, frames, truth


@pytest.fixture
def server(tmp_path, media):
    clip, _, _ = media
    project = Project.open(tmp_path / "project", [clip], fake_pipeline())
    yield AnnotationServer(project)
    project.close()


@pytest.fixture
def client(server):
    from fastapi.testclient import TestClient

    return TestClient(server.app, raise_server_exceptions=False)


def centre(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.mean()), float(ys.mean())]


def decode(obj):
    return RLE.from_coco(obj["rle"]).decode()


def test_discovery_of_videos_image_folders_and_folders_of_videos(tmp_path, media):
    clip, frames, _ = media
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", frames[:4])
    write_video(videos / "b.webm", frames[:4])
    (videos / "notes.txt").write_text("not media")
    outside = tmp_path / "outside.mp4"
    write_video(outside, frames[:4])
    os.symlink(outside, videos / "link.mp4")  # leaves the folder: not followed
    items = discover([clip, videos])
    assert [(item.id, item.kind) for item in items] == [("clip", "images"), ("a", "video"), ("b", "video")]
    with pytest.raises(ProjectError, match="no such file"):
        discover([tmp_path / "missing"])
    with pytest.raises(ProjectError, match="not a video or an image"):
        discover([videos / "notes.txt"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(ProjectError, match="other files"):
        Project.open(tmp_path / "busy", [clip], fake_pipeline())


def test_open_a_video_read_frames_at_display_size(client, media):
    _, frames, _ = media
    project = client.get("/api/project").json()
    assert [v["id"] for v in project["videos"]] == ["clip"]
    assert {"coco", "png", "yolo", "ytvis", "overlay"} <= {f["name"] for f in project["formats"]}
    video = client.get("/api/videos/clip").json()
    assert (video["frames"], video["width"], video["height"], video["tracks"]) == (N, W, H, [])
    response = client.get("/api/videos/clip/frames/5.jpg?size=64")
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (64, 32)
    full = np.asarray(Image.open(io.BytesIO(client.get("/api/videos/clip/frames/5.jpg?size=4096").content)))
    assert np.abs(full.astype(int) - frames[5].astype(int)).mean() < 6


def test_label_an_object_by_hand_then_propagate_and_correct(server, client, media):
    _, _, truth = media
    added = client.post(
        "/api/videos/clip/edit",
        json={
            "action": "add_object",
            "frame": 3,
            "points": [centre(truth["red"][3])],
            "labels": [1],
            "label": "car",
            "seconds": 2,
        },
    ).json()
    track = added["edit"]["track_id"]
    assert added["edit"]["frames"] == [3] and np.array_equal(decode(added["objects"][0]), truth["red"][3])
    events = server.hub.subscribe("clip")
    job = client.post("/api/videos/clip/propagate", json={"frame": 3, "track_id": track, "direction": "both"}).json()
    assert job["job"]["kind"] == "propagate"
    server.jobs.wait("clip")
    frames = []
    while not events.empty():
        event = events.get()
        if event["type"] == "frame":
            frames.append(event["position"])
            assert np.array_equal(decode(event["object"]), truth["red"][event["position"]])
    assert sorted(frames) == list(range(N))
    masks = client.get("/api/videos/clip/masks/20").json()["objects"]
    assert masks[0]["label"] == "car" and np.array_equal(decode(masks[0]), truth["red"][20])

    # The brush adds pixels on one frame; the frame shows exactly the painted mask.
    stroke = {"points": [[80, 40], [90, 40]], "radius": 2}
    painted = client.post(
        "/api/videos/clip/edit", json={"action": "paint", "frame": 20, "track_id": track, "strokes": [stroke]}
    ).json()
    mask = decode(painted["objects"][0])
    assert mask[40, 85] and mask.sum() > truth["red"][20].sum()
    client.post("/api/videos/clip/edit", json={"action": "lock", "frame": 10, "last_frame": 12, "track_id": track})
    timeline = client.get("/api/videos/clip/timeline").json()
    (lane,) = timeline["tracks"]
    assert lane["runs"] == [[0, N - 1]] and lane["locks"] == [10, 11, 12]
    assert {p["position"] for p in lane["prompts"]} == {3, 20}
    undone = client.post("/api/videos/clip/edit", json={"action": "undo"}).json()
    assert undone["edit"]["action"] == "undo lock" and undone["can_redo"]
    again = client.post("/api/videos/clip/edit", json={"action": "undo", "frame": 20}).json()
    assert np.array_equal(decode(again["objects"][0]), truth["red"][20])
    effort = client.get("/api/videos/clip/effort").json()["tracks"][0]
    assert effort["clicks"] == 1 and effort["strokes"] == 1 and effort["seconds"] == 2


def test_auto_label_then_export_with_the_effort_log(server, client, tmp_path):
    job = client.post("/api/videos/clip/autolabel", json={"query": "red box. blue box."}).json()
    assert job["job"]["total"] == N
    server.jobs.wait("clip")
    video = client.get("/api/videos/clip").json()
    assert [t["label"] for t in video["tracks"]] == ["red box", "blue box"]
    refused = client.post("/api/videos/clip/autolabel", json={"query": "red box"})
    assert refused.status_code == 400 and "already has objects" in refused.json()["error"]
    undone = client.post("/api/videos/clip/edit", json={"action": "undo"}).json()  # the auto-label is one edit
    assert undone["edit"]["action"] == "undo autolabel" and client.get("/api/videos/clip").json()["tracks"] == []
    client.post("/api/videos/clip/edit", json={"action": "redo"})
    exported = client.post("/api/videos/clip/export", json={"format": "png"}).json()
    assert "png/00000.png" in exported["files"] and "png/effort.json" in exported["files"]
    download = client.get("/api/videos/clip/exports/png/00003.png")
    index = np.asarray(Image.open(io.BytesIO(download.content)))
    assert set(np.unique(index)) == {0, 1, 2}
    assert client.get("/api/videos/clip/exports/../../project.json").status_code == 404
    assert client.get("/api/videos/clip/exports/%2e%2e/%2e%2e/project.json").status_code == 404


def test_malformed_requests_get_4xx_with_a_message(client):
    cases = [
        ("get", "/api/videos/nope", None, 404, "no video 'nope'"),
        ("get", "/api/videos/clip/frames/999.jpg", None, 404, "out of range"),
        ("get", "/api/videos/clip/masks/-1", None, 404, "out of range"),
        ("post", "/api/videos/clip/edit", {"action": "explode"}, 422, "action"),
        (
            "post",
            "/api/videos/clip/edit",
            {"action": "add_points", "frame": 1, "points": [[1, 1]], "labels": [1]},
            400,
            "select an object",
        ),
        (
            "post",
            "/api/videos/clip/edit",
            {"action": "add_points", "track_id": 7, "points": [[1, 1]], "labels": [1]},
            404,
            "no track",
        ),
        (
            "post",
            "/api/videos/clip/edit",
            {"action": "add_object", "frame": 99, "box": [1, 1, 5, 5]},
            404,
            "out of range",
        ),
        ("post", "/api/videos/clip/edit", {"action": "add_object", "box": [5, 5, 1, 1]}, 409, "empty"),
        ("post", "/api/videos/clip/propagate", {"frame": 0}, 400, "no object to propagate"),
        ("post", "/api/videos/clip/export", {"format": "parquet"}, 400, "unknown export format"),
        ("post", "/api/videos/clip/export", {"format": "supervision"}, 400, "Python value"),
    ]
    for method, path, body, status, message in cases:
        response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
        assert response.status_code == status, (path, body, response.text)
        assert message in response.json()["error"], (path, response.json())
    broken = client.post("/api/videos/clip/edit", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "malformed" in broken.json()["error"]
    huge = client.post(
        "/api/videos/clip/edit", content=b"x" * (5 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413


def test_a_token_guards_every_request_off_loopback(tmp_path, media):
    from fastapi.testclient import TestClient

    clip, _, _ = media
    project = Project.open(tmp_path / "p", [clip], fake_pipeline())
    client = TestClient(AnnotationServer(project, token="s3cret").app)
    assert client.get("/api/project").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/?token=s3cret").status_code == 200  # sets the cookie the page then sends
    assert client.get("/api/project").status_code == 200
    assert (
        client.get("/api/project", headers={"x-segvlm-token": "wrong"}, cookies={"segvlm_token": "wrong"}).status_code
        == 401
    )
    assert client.get("/api/project?token=%C3%A9").status_code == 401  # not a 500 on a non-ASCII token
    project.close()


def test_twenty_objects_and_a_restart_keep_everything(tmp_path, media):
    from fastapi.testclient import TestClient

    clip, _, truth = media
    project = Project.open(tmp_path / "p", [clip], fake_pipeline())
    client = TestClient(AnnotationServer(project).app)
    for k in range(20):
        response = client.post(
            "/api/videos/clip/edit",
            json={"action": "add_object", "frame": k, "box": [0, 0, 4 + k, 4], "label": f"o{k}"},
        )
        assert response.status_code == 200, response.text
    client.post("/api/videos/clip/edit", json={"action": "relabel", "track_id": 3, "label": "renamed"})
    lanes = client.get("/api/videos/clip/timeline").json()["tracks"]
    assert len(lanes) == 20 and lanes[2]["label"] == "renamed"
    # No close: the process dies; a new server on the same project finds the work and its undo history.
    project._sessions["clip"].history.close()
    project._sessions.clear()
    second = Project.open(tmp_path / "p", [], fake_pipeline())
    client = TestClient(AnnotationServer(second).app)
    video = client.get("/api/videos/clip").json()
    assert len(video["tracks"]) == 20 and video["tracks"][2]["label"] == "renamed" and video["can_undo"]
    assert client.post("/api/videos/clip/edit", json={"action": "undo"}).json()["edit"]["action"] == "undo relabel"
    second.close()


def test_drift_warnings():
    areas = [100, 110, None, 100, 900, 5000, 120]
    scores = [0.9, 0.95, None, 0.9, 0.3, 0.9, 0.9]
    warnings = track_warnings(areas, scores, frame_area=6000)
    assert [(w.position, w.kind) for w in warnings] == [
        (2, "lost"),
        (4, "area_jump"),
        (4, "score_drop"),
        (5, "covers_frame"),
        (6, "area_jump"),
    ]
    assert json.dumps([w.detail for w in warnings])


def test_the_cli_serves_a_project_and_exports_it(tmp_path, media):
    import signal
    import subprocess
    import sys
    import urllib.request

    from typer.testing import CliRunner

    from segvlm.cli import app

    clip, _, _ = media
    port = _free_port()
    project = tmp_path / "cli-project"
    command = [sys.executable, "-m", "segvlm.cli", "annotate", str(clip), "--preset", "tiny-random"]
    process = subprocess.Popen(
        [*command, "--project", str(project), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == f"open http://localhost:{port}/", process.stderr.read()[-2000:]
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                data = json.loads(urllib.request.urlopen(f"{url}/api/project", timeout=5).read())
                break
            except OSError:
                import time

                time.sleep(0.1)
        assert data["videos"][0]["id"] == "clip"
        body = json.dumps({"action": "add_object", "frame": 2, "box": [2, 5, 14, 15], "label": "car"}).encode()
        request = urllib.request.Request(f"{url}/api/videos/clip/edit", body, {"Content-Type": "application/json"})
        assert json.loads(urllib.request.urlopen(request, timeout=30).read())["edit"]["track_id"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert (project / "sessions" / "clip" / "masks.json").exists()

    runner = CliRunner()
    done = runner.invoke(app, ["export", str(project), "--format", "png,coco"])
    assert done.exit_code == 0, done.output
    exported = project / "exports" / "clip"
    assert (exported / "coco" / "masks.json").exists() and len(list((exported / "png").glob("*.png"))) == N
    effort = json.loads((exported / "png" / "effort.json").read_text())
    assert effort["tracks"][0]["boxes"] == 1
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a project folder" in missing.output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowColourSegmenter(ColourSegmenter):
    """The exact fake, a tenth of a second per frame: long enough to cancel a propagation part-way."""

    def start(self, height, width):
        import time

        session = super().start(height, width)
        step = session.step

        def slow_step(*args, **kwargs):
            time.sleep(0.1)
            return step(*args, **kwargs)

        session.step = slow_step
        return session


def test_cancel_a_propagation_keeps_the_frames_done_and_edits_wait_for_it(tmp_path, media):
    from fastapi.testclient import TestClient

    clip, _, truth = media
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1))
    pipe = Pipeline(config, grounder=ColourGrounder({}), segmenter=SlowColourSegmenter())
    project = Project.open(tmp_path / "p", [clip], pipe)
    server = AnnotationServer(project)
    client = TestClient(server.app)
    client.post(
        "/api/videos/clip/edit",
        json={"action": "add_object", "frame": 0, "points": [centre(truth["red"][0])], "labels": [1]},
    )
    events = server.hub.subscribe("clip")
    client.post("/api/videos/clip/propagate", json={"frame": 0, "direction": "forward"})
    assert events.get(timeout=10)["type"] == "job"
    assert events.get(timeout=10)["type"] == "frame"
    busy = client.post("/api/videos/clip/edit", json={"action": "undo"})
    assert busy.status_code == 409 and "cancel it" in busy.json()["error"]
    assert client.post("/api/videos/clip/cancel", json={}).json()["job"]["state"] == "running"
    job = server.jobs.wait("clip")
    assert job.state == "cancelled" and 0 < job.done < N
    result = project.session("clip").result
    done = [p for p in range(N) if result[p].get(1) is not None]
    assert done == list(range(len(done))) and len(done) < N  # the frames computed before the cancel stay
    undone = client.post("/api/videos/clip/edit", json={"action": "undo"}).json()
    assert undone["edit"]["action"] == "undo propagate"
    assert [p for p in range(N) if result[p].get(1) is not None] == [0]
    project.close()


def test_requests_from_other_sites_are_refused(tmp_path, media):
    from fastapi.testclient import TestClient

    clip, _, _ = media
    project = Project.open(tmp_path / "p", [clip], fake_pipeline())
    server = AnnotationServer(project, allowed_hosts=["localhost", "127.0.0.1", "::1"])
    local = TestClient(server.app, base_url="http://127.0.0.1:8765")
    assert local.get("/api/project").status_code == 200
    rebound = TestClient(server.app, base_url="http://evil.example:8765")  # DNS rebinding: another site's name
    assert rebound.get("/api/project").status_code == 421
    form = local.post("/api/videos/clip/cancel", content=b"x=1", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and "JSON" in form.json()["error"]

    def chunks():
        for _ in range(80):
            yield b"x" * 65536

    chunked = local.post("/api/videos/clip/edit", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    project.close()


def test_a_frame_folder_never_exposes_hidden_files_or_links_out(tmp_path, media):
    from fastapi.testclient import TestClient

    clip, frames, _ = media
    private = tmp_path / "private"
    private.mkdir()
    Image.fromarray(np.full((H, W, 3), 255, np.uint8)).save(private / "secret.png")
    os.symlink(private / "secret.png", clip / "0000a.png")  # sorts among the frames
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(clip / ".0000b.png")
    project = Project.open(tmp_path / "p", [clip], fake_pipeline())
    client = TestClient(AnnotationServer(project).app)
    assert client.get("/api/videos/clip").json()["frames"] == N
    shown = np.asarray(Image.open(io.BytesIO(client.get("/api/videos/clip/frames/1.jpg?size=4096").content)))
    assert np.abs(shown.astype(int) - frames[1].astype(int)).mean() < 6  # frame 1 is the real frame 1
    project.close()
