"""segvlm as tools for LLM agents (langchain-core): segment_image, track_video, count_objects, describe_region.

``get_tools()`` builds the four tools (``get_tools(AgentToolsConfig(...))`` to choose the preset, the folders
they may touch and the per-call limits); ``get_openai_tools()`` gives the same tools as OpenAI function
schemas. Each tool answers with compact JSON for the model and a :class:`ToolArtifact` (files, full result)
for the program. Imports are lazy: ``import segvlm.agents`` loads neither langchain nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "AgentToolsConfig": "segvlm.agents.config",
    "get_tools": "segvlm.agents.tools",
    "get_openai_tools": "segvlm.agents.tools",
    "ToolArtifact": "segvlm.agents.summaries",
    "RegionVLM": "segvlm.agents.describe",
    "PathGuard": "segvlm.agents.paths",
    "run_tool_loop": "segvlm.agents.loop",
    "LoopResult": "segvlm.agents.loop",
}

__all__ = [
    "AgentToolsConfig",
    "LoopResult",
    "PathGuard",
    "RegionVLM",
    "ToolArtifact",
    "get_openai_tools",
    "get_tools",
    "run_tool_loop",
]

if TYPE_CHECKING:
    from segvlm.agents.config import AgentToolsConfig
    from segvlm.agents.describe import RegionVLM
    from segvlm.agents.loop import LoopResult, run_tool_loop
    from segvlm.agents.paths import PathGuard
    from segvlm.agents.summaries import ToolArtifact
    from segvlm.agents.tools import get_openai_tools, get_tools


__getattr__ = lazy_getattr(__name__, _EXPORTS)
