"""segvlm.agents: the langchain-core tools driven by fake chat models on the tiny-random preset.

The tools run for real (tiny random-weight models, so masks are meaningless): these tests check the
contract with the agent (JSON fields, artifacts on disk, readable errors, path confinement, limits), not
segmentation quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from PIL import Image

from segvlm.agents import AgentToolsConfig, get_openai_tools, get_tools, run_tool_loop
from segvlm.types import VideoSegmentation
from segvlm.video import VideoWriter, read_frames

REPO = Path(__file__).resolve().parent.parent
TOOL_NAMES = ["segment_image", "track_video", "count_objects", "describe_region"]
FRAMES, HEIGHT, WIDTH = 4, 48, 64


@pytest.fixture(scope="module", autouse=True)
def tiny_model_cache():
    """One folder for the tiny random checkpoints, shared by the whole test session (built once, ~7 s)."""
    default = os.path.join(tempfile.gettempdir(), f"segvlm-test-cache-{os.getuid()}")
    os.environ.setdefault("SEGVLM_CACHE", default)
    return Path(os.environ["SEGVLM_CACHE"])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The tools' only root: a 4-frame video of a red square moving right and a still image; next to it, an
    outside folder with a secret image and a symlink in the root that points at it."""
    base = tmp_path_factory.mktemp("agents")
    folder = base / "root"
    folder.mkdir()
    frames = []
    for t in range(FRAMES):
        image = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)  # (H, W, 3)
        image[12:32, 4 + 8 * t : 24 + 8 * t] = (220, 30, 30)
        frames.append(image)
    with VideoWriter(folder / "clip.mp4", WIDTH, HEIGHT, fps=10) as writer:
        for image in frames:
            writer.write(image)
    Image.fromarray(frames[0]).save(folder / "still.png")
    outside = base / "outside"
    outside.mkdir()
    Image.fromarray(frames[0]).save(outside / "secret.png")
    (folder / "link.png").symlink_to(outside / "secret.png")
    return folder


@pytest.fixture(scope="module")
def pipeline(tiny_model_cache):
    """One tiny-random Pipeline for the module, so models load once."""
    from segvlm.tracking import Pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Pipeline.from_preset("tiny-random")


@pytest.fixture(scope="module")
def tools(pipeline, root) -> dict[str, BaseTool]:
    return {tool.name: tool for tool in get_tools(AgentToolsConfig(pipeline=pipeline, roots=[root], max_frames=8))}


def call(tool: BaseTool, **args) -> ToolMessage:
    """Invoke a tool the way an agent does (a tool call), which yields a ToolMessage with the artifact."""
    return tool.invoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})


def fake_model(*turns: AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(turns))


# -- building ---------------------------------------------------------------------------------------------------
def test_get_tools_builds_langchain_tools_without_loading_models(monkeypatch):
    import segvlm.tracking

    built = []
    monkeypatch.setattr(segvlm.tracking.Pipeline, "__init__", lambda self, *a, **k: built.append(1))
    tools = get_tools()
    assert [tool.name for tool in tools] == TOOL_NAMES
    for tool in tools:
        assert isinstance(tool, BaseTool)
        assert tool.response_format == "content_and_artifact"
        assert tool.handle_tool_error is True
        assert len(tool.description) > 80
    assert built == [], "get_tools must not build the pipeline; models load on the first call"


def test_openai_schemas_describe_the_arguments(root):
    schemas = get_openai_tools(AgentToolsConfig(preset="tiny-random", roots=[root]))
    by_name = {schema["function"]["name"]: schema["function"] for schema in schemas}
    assert sorted(by_name) == sorted(TOOL_NAMES)
    assert all(schema["type"] == "function" for schema in schemas)
    track = by_name["track_video"]["parameters"]
    assert track["required"] == ["video_path", "query"]
    assert track["properties"]["stride"]["minimum"] == 1
    describe = by_name["describe_region"]["parameters"]
    assert set(describe["properties"]) == {"path", "question", "track_id", "box", "frame"}
    assert describe["properties"]["frame"]["anyOf"][0]["minimum"] == 0
    json.dumps(schemas)  # plain JSON, ready for any function-calling API


def test_bad_configuration_fails_when_the_tools_are_built(root, tmp_path):
    with pytest.raises(ValueError, match="outside the tool roots"):
        get_tools(AgentToolsConfig(roots=[root], output_dir=tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="not an existing folder"):
        get_tools(AgentToolsConfig(roots=[tmp_path / "missing"]))
    with pytest.raises(ValueError, match="unknown preset"):
        get_tools(AgentToolsConfig(preset="no-such-preset", roots=[root]))
    with pytest.raises(ValueError, match="max_frames"):
        AgentToolsConfig(max_frames=0)


# -- the agent loop ---------------------------------------------------------------------------------------------
def test_fake_model_tool_calling_loop(tools, root):
    model = fake_model(
        AIMessage(
            "",
            tool_calls=[
                {"name": "track_video", "args": {"video_path": "clip.mp4", "query": "the red square"}, "id": "a"},
                {"name": "count_objects", "args": {"path": "clip.mp4", "query": "red square and dog"}, "id": "b"},
            ],
        ),
        AIMessage(
            "",
            tool_calls=[{"name": "segment_image", "args": {"image_path": "still.png", "query": "square"}, "id": "c"}],
        ),
        AIMessage("The red square moves to the right."),
    )
    run = run_tool_loop(model, list(tools.values()), "Where does the red square go?")
    assert run.answer == "The red square moves to the right."
    assert [m.name for m in run.tool_messages] == ["track_video", "count_objects", "segment_image"]
    assert [m.status for m in run.tool_messages] == ["success"] * 3, [m.content for m in run.tool_messages]
    track_msg, count_msg, segment_msg = run.tool_messages

    # track_video: tracks with first/last frame, frames present, mean box; overlay video and COCO file on disk.
    track = json.loads(track_msg.content)
    assert track["frames_processed"] == FRAMES and track["frame_range"] == [0, FRAMES - 1]
    assert track["phrases"] == ["red square"]
    result = track_msg.artifact.result
    assert isinstance(result, VideoSegmentation)
    assert [t["id"] for t in track["tracks"]] == result.track_ids
    for entry in track["tracks"]:
        assert {"label", "score", "first_frame", "last_frame", "frames_present", "present_ranges", "mean_box"} <= set(
            entry
        )
        assert 0 <= entry["first_frame"] <= entry["last_frame"] < FRAMES
        assert entry["frames_present"] == len(result.track(entry["id"]))
        assert len(entry["mean_box"]) == 4
    overlay = root / track["overlay_video"]
    coco = root / track["coco_file"]
    assert overlay == track_msg.artifact.overlay_path and coco == track_msg.artifact.coco_path
    assert overlay.is_file() and sum(1 for _ in read_frames(str(overlay))) == FRAMES
    reloaded = VideoSegmentation.load(str(coco))
    assert reloaded.track_ids == result.track_ids and len(reloaded) == FRAMES
    assert overlay.parent.parent == root / "segvlm_outputs"

    # count_objects: counts per phrase (the unmatched phrase counts 0), per-frame summary for a video.
    count = json.loads(count_msg.content)
    assert count["kind"] == "video" and count["frames_processed"] == FRAMES
    assert set(count["counts"]) == {"red square", "dog"} and count["counts"]["dog"] == 0
    assert count["total"] == sum(count["counts"].values()) == len(count_msg.artifact.result.track_ids)
    assert count["per_frame"][0]["frame"] == 0
    assert count["max_in_frame"]["red square"] == max(len(frame) for frame in count_msg.artifact.result)
    assert (root / count["coco_file"]).is_file()

    # segment_image: objects with label, score, box, area share; one mask PNG per object.
    segment = json.loads(segment_msg.content)
    assert (segment["width"], segment["height"]) == (WIDTH, HEIGHT)
    frame = segment_msg.artifact.result[0]
    assert len(segment["objects"]) == len(frame) == len(segment_msg.artifact.mask_files)
    for obj, mask_file in zip(segment["objects"], segment_msg.artifact.mask_files):
        assert {"id", "label", "score", "box", "area_share"} <= set(obj)
        assert obj["label"] == "square" and len(obj["box"]) == 4
        assert obj["area_share"] == pytest.approx(frame.get(obj["id"]).area / (WIDTH * HEIGHT), abs=1e-4)
        saved = np.asarray(Image.open(mask_file)) > 0
        assert np.array_equal(saved, frame.get(obj["id"]).mask)
    assert all(path.is_file() for path in segment_msg.artifact.paths())


def test_loop_answers_an_unknown_tool_with_an_error(tools):
    model = fake_model(AIMessage("", tool_calls=[{"name": "segment_video", "args": {}, "id": "x"}]), AIMessage("ok"))
    run = run_tool_loop(model, list(tools.values()), "hi")
    assert run.tool_messages[0].status == "error"
    assert (
        "unknown tool 'segment_video'" in run.tool_messages[0].content and "track_video" in run.tool_messages[0].content
    )
    assert run.answer == "ok"


# -- bad arguments: readable tool errors, never exceptions -------------------------------------------------------
@pytest.mark.parametrize(
    ("tool_name", "args", "expected"),
    [
        ("segment_image", {"image_path": "missing.png", "query": "cat"}, ["no such file", "still.png"]),
        ("segment_image", {"image_path": "/etc/hostname", "query": "cat"}, ["access denied", "outside the allowed"]),
        ("segment_image", {"image_path": "../outside/secret.png", "query": "cat"}, ["access denied"]),
        ("segment_image", {"image_path": "link.png", "query": "cat"}, ["access denied", "secret.png"]),
        (
            "segment_image",
            {"image_path": "still.png", "query": "   "},
            ["invalid arguments for segment_image", "query"],
        ),
        ("segment_image", {"image_path": "still.png"}, ["invalid arguments", "query: Field required"]),
        ("segment_image", {"image_path": "clip.mp4", "query": "cat"}, ["use track_video"]),
        ("track_video", {"video_path": "still.png", "query": "cat"}, ["use segment_image"]),
        ("track_video", {"video_path": "clip.mp4", "query": "the"}, ["names nothing to segment"]),
        (
            "track_video",
            {"video_path": "clip.mp4", "query": "cat", "stride": 0},
            ["stride", "greater than or equal to 1"],
        ),
        ("count_objects", {"path": "clip.mp4", "query": "cat", "max_frames": -3}, ["max_frames", "(got -3)"]),
        (
            "describe_region",
            {"path": "clip.mp4", "question": "what?", "track_id": 1, "frame": -1},
            ["frame", "(got -1)"],
        ),
        ("describe_region", {"path": "clip.mp4", "question": "what?"}, ["exactly one of track_id"]),
        ("describe_region", {"path": "clip.mp4", "question": "what?", "box": [5, 5, 1, 1]}, ["0 <= x0 < x1"]),
    ],
)
def test_bad_arguments_give_readable_tool_errors(tools, tool_name, args, expected):
    message = call(tools[tool_name], **args)
    assert message.status == "error"
    for text in expected:
        assert text in message.content, message.content
    assert "Traceback" not in message.content


def test_plain_invoke_returns_the_error_text_instead_of_raising(tools):
    text = tools["track_video"].invoke({"video_path": "../../etc/passwd", "query": "cat"})
    assert text.startswith("access denied")


def test_absolute_paths_inside_the_root_are_allowed(tools, root):
    message = call(tools["count_objects"], path=str(root / "still.png"), query="square")
    assert message.status == "success", message.content
    assert json.loads(message.content)["path"] == "still.png"  # shown relative to the root, ready to pass back


# -- limits -----------------------------------------------------------------------------------------------------
def test_frame_limit_caps_the_request_and_says_so(pipeline, root):
    tools = {t.name: t for t in get_tools(AgentToolsConfig(pipeline=pipeline, roots=[root], max_frames=2))}
    message = call(tools["track_video"], video_path="clip.mp4", query="square", max_frames=50)
    data = json.loads(message.content)
    assert data["frames_processed"] == 2
    assert any("limit of 2" in note for note in data["notes"])
    assert any("not looked at" in note for note in data["notes"])


def test_time_limit_stops_the_call_with_a_tool_error(pipeline, root):
    tools = {t.name: t for t in get_tools(AgentToolsConfig(pipeline=pipeline, roots=[root], time_limit_s=1e-6))}
    message = call(tools["track_video"], video_path="clip.mp4", query="square")
    assert message.status == "error"
    assert "time limit" in message.content and "smaller max_frames" in message.content


# -- describe_region --------------------------------------------------------------------------------------------
class RecordingVLM:
    """Stands in for segvlm.vlm.MaskAwareVLM: records what it is shown and answers with a fixed text."""

    def __init__(self):
        self.calls = []

    def generate(self, images, regions, prompt, max_new_tokens=32):
        self.calls.append((images, regions, prompt, max_new_tokens))
        return ["a red square"]


def test_describe_region_without_a_vlm_says_how_to_enable_it(tools):
    message = call(tools["describe_region"], path="still.png", question="what is it?", box=[0, 0, 10, 10])
    assert message.status == "error"
    assert "no VLM is configured" in message.content and "AgentToolsConfig(vlm=" in message.content


def test_describe_region_by_track_id_and_by_box(pipeline, root):
    vlm = RecordingVLM()
    tools = {t.name: t for t in get_tools(AgentToolsConfig(pipeline=pipeline, roots=[root], vlm=vlm))}

    early = call(tools["describe_region"], path="clip.mp4", question="what is it?", track_id=1)
    assert early.status == "error" and "call segment_image, track_video or count_objects on it first" in early.content

    tracked = call(tools["track_video"], video_path="clip.mp4", query="red square")
    result = tracked.artifact.result
    track_id = result.track_ids[0]
    frame = result.track(track_id).last_frame
    message = call(tools["describe_region"], path="clip.mp4", question="what is it?", track_id=track_id, frame=frame)
    assert message.status == "success", message.content
    data = json.loads(message.content)
    assert data["answer"] == "a red square"
    assert data["region"]["track_id"] == track_id and data["region"]["frame"] == frame
    images, regions, prompt, _ = vlm.calls[-1]
    assert len(images) == 1 and images[0].size == (WIDTH, HEIGHT)
    assert prompt == f"Object {track_id} is {{region1}}. what is it?"
    expected = result.frame(frame).get(track_id).mask
    assert len(regions) == 1 and len(regions[0]) == 1 and np.array_equal(regions[0][0], expected)
    assert np.array_equal(np.asarray(Image.open(message.artifact.mask_files[0])) > 0, expected)

    unknown = call(tools["describe_region"], path="clip.mp4", question="what?", track_id=99)
    assert unknown.status == "error" and f"known ids: {result.track_ids}" in unknown.content
    late = call(tools["describe_region"], path="clip.mp4", question="what?", box=[0, 0, 8, 8], frame=50)
    assert late.status == "error" and f"has {FRAMES} frames" in late.content

    boxed = call(tools["describe_region"], path="still.png", question="colour?", box=[4, 12, 24, 32])
    assert boxed.status == "success", boxed.content
    assert json.loads(boxed.content)["region"]["box"] == [4.0, 12.0, 24.0, 32.0]
    box_mask = vlm.calls[-1][1][0][0]
    assert box_mask.sum() == 20 * 20 and box_mask[12:32, 4:24].all()


def test_describe_region_through_a_tiny_mask_aware_vlm(pipeline, root, tmp_path):
    """A real segvlm.vlm.MaskAwareVLM (tiny random SmolVLM, set-of-mark tokenizer), given as a folder and
    loaded on the first describe_region call."""
    from segvlm.testing.vlm import build_smolvlm

    folder = build_smolvlm(tmp_path / "smolvlm")
    config = AgentToolsConfig(pipeline=pipeline, roots=[root], vlm=str(folder), max_new_tokens=4)
    tools = {t.name: t for t in get_tools(config)}
    message = call(
        tools["describe_region"], path="clip.mp4", question="What colour is it?", box=[4, 12, 24, 32], frame=1
    )
    assert message.status == "success", message.content
    data = json.loads(message.content)
    assert isinstance(data["answer"], str) and data["region"] == {"frame": 1, "box": [4.0, 12.0, 24.0, 32.0]}
    assert message.artifact.mask_files[0].is_file()


# -- example and README snippet ---------------------------------------------------------------------------------
README_SNIPPET = """\
from segvlm.agents import AgentToolsConfig, get_tools

# Tools may read and write only inside `roots`; models load on the first call and are shared by all tools.
tools = get_tools(AgentToolsConfig(preset="tiny-random", roots=["."]))
segment = next(tool for tool in tools if tool.name == "segment_image")
message = segment.invoke(
    {"type": "tool_call", "id": "1", "name": "segment_image", "args": {"image_path": "photo.jpg", "query": "the cat"}}
)
print(message.content)  # JSON for the model: objects with id, label, score, box, area_share; output files
print(message.artifact.overlay_path)  # files for your program: overlay, mask PNGs, COCO masks.json
"""


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_snippet_runs_and_models_load_once(tmp_path, monkeypatch, capsys):
    import segvlm.tracking

    built = []
    original = segvlm.tracking.Pipeline.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(segvlm.tracking.Pipeline, "__init__", counting_init)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 40)).save(tmp_path / "photo.jpg")
    namespace: dict = {}
    exec(compile(README_SNIPPET, "README snippet", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    data = json.loads(printed[0])
    assert data["image"] == "photo.jpg" and data["query"] == "the cat"
    assert Path(printed[1]).is_file() and Path(printed[1]).is_relative_to(tmp_path)

    count = next(tool for tool in namespace["tools"] if tool.name == "count_objects")
    second = call(count, path="photo.jpg", query="cat")
    assert second.status == "success"
    assert len(built) == 1, "all tools must share one Pipeline"


def test_example_script_runs(tmp_path, tiny_model_cache):
    env = {**os.environ, "SEGVLM_CACHE": str(tiny_model_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "agent_tools.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for name in ("track_video", "count_objects", "segment_image"):
        assert f"[{name}] success" in out, out
    written = [Path(line.split("wrote ", 1)[1]) for line in out.splitlines() if line.strip().startswith("wrote ")]
    assert written and all(path.is_file() and path.is_relative_to(tmp_path) for path in written)
    assert any(path.name == "overlay.mp4" for path in written)
    assert "answer:" in out


def test_docs_show_the_tested_snippet():
    assert README_SNIPPET in (REPO / "docs" / "agents.md").read_text()
