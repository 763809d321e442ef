"""segvlm's agent tools in a tool-calling loop, offline.

A scripted chat model (langchain-core's ``GenericFakeChatModel``) stands in for an LLM: it asks to track a
red square through a small generated video, to count objects in a generated image and to segment that
image, then answers. The tools run for real on the ``tiny-random`` preset (random-weight models built
locally, so the masks are meaningless but every step of the code runs). Swap in any langchain chat model
that supports tool calling (``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``...) and a real preset to use
it for real.

    python examples/agent_tools.py [--workdir DIR] [--preset tiny-random]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def write_media(folder: Path) -> None:
    """A 6-frame 96x64 video of a red square moving right, and its first frame as a PNG."""
    from PIL import Image

    from segvlm.video import VideoWriter

    frames = []
    for t in range(6):
        image = np.full((64, 96, 3), 40, dtype=np.uint8)  # (H, W, 3) dark background
        image[20:40, 8 + 8 * t : 28 + 8 * t] = (220, 30, 30)  # the red square
        frames.append(image)
    with VideoWriter(folder / "square.mp4", width=96, height=64, fps=10) as writer:
        for image in frames:
            writer.write(image)
    Image.fromarray(frames[0]).save(folder / "square.png")


def scripted_model():
    """A chat model that replies with these messages in turn, whatever it is asked."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    turns = [
        AIMessage(
            "",
            tool_calls=[
                {"name": "track_video", "args": {"video_path": "square.mp4", "query": "the red square"}, "id": "c1"},
                {"name": "count_objects", "args": {"path": "square.png", "query": "red square"}, "id": "c2"},
            ],
        ),
        AIMessage(
            "",
            tool_calls=[{"name": "segment_image", "args": {"image_path": "square.png", "query": "square"}, "id": "c3"}],
        ),
        AIMessage("I tracked the red square through the video and segmented it in the picture."),
    ]
    return GenericFakeChatModel(messages=iter(turns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="folder for the media and outputs (default: a new temporary folder)")
    parser.add_argument("--preset", default="tiny-random", help="pipeline preset (default: tiny-random)")
    args = parser.parse_args()

    from segvlm.agents import AgentToolsConfig, get_openai_tools, get_tools, run_tool_loop

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segvlm-agent-"))
    workdir.mkdir(parents=True, exist_ok=True)
    write_media(workdir)

    # The tools may only read and write inside workdir; at most 30 frames and 120 s per call.
    tools = get_tools(AgentToolsConfig(preset=args.preset, roots=[workdir], max_frames=30, time_limit_s=120))
    print("tools:", [schema["function"]["name"] for schema in get_openai_tools(tools)])

    run = run_tool_loop(scripted_model(), tools, "Where does the red square go, and how many are there?")
    for message in run.tool_messages:
        print(f"\n[{message.name}] {message.status}")
        print(json.dumps(json.loads(message.content), indent=1) if message.status == "success" else message.content)
        if message.artifact is not None:
            for path in message.artifact.paths():
                print("  wrote", path)
    print("\nanswer:", run.answer)


if __name__ == "__main__":
    main()
