"""A minimal tool-calling loop: ask the model, run the tool calls it makes, feed the results back.

Enough for examples and tests (and for simple agents) without an agent framework; any langchain-core chat
model works, including the fake ones, which emit scripted ``AIMessage(tool_calls=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool


@dataclass
class LoopResult:
    """What :func:`run_tool_loop` returns.

    Attributes:
        messages: the whole conversation, the question first.
        tool_messages: the tool results in call order (``.content`` JSON text, ``.artifact``, ``.status``).
        answer: the content of the model's last message (the one without tool calls).
    """

    messages: list[BaseMessage] = field(default_factory=list)
    tool_messages: list[ToolMessage] = field(default_factory=list)
    answer: str = ""


def run_tool_loop(
    model: BaseChatModel, tools: Sequence[BaseTool], question: str | Sequence[BaseMessage], max_steps: int = 8
) -> LoopResult:
    """Run ``model`` with ``tools`` until it answers without tool calls or ``max_steps`` model turns pass.

    The tools are bound to the model when it supports ``bind_tools``. A call to an unknown tool is answered
    with an error ToolMessage (listing the known names) so the model can correct itself.
    """
    try:
        runnable = model.bind_tools(list(tools))
    except NotImplementedError:
        runnable = model
    by_name = {tool.name: tool for tool in tools}
    messages: list[BaseMessage] = [HumanMessage(question)] if isinstance(question, str) else list(question)
    result = LoopResult(messages=messages)
    for _ in range(max_steps):
        reply = runnable.invoke(messages)
        messages.append(reply)
        calls = reply.tool_calls if isinstance(reply, AIMessage) else []
        if not calls:
            result.answer = reply.text if hasattr(reply, "text") else str(reply.content)
            return result
        for call in calls:
            tool = by_name.get(call["name"])
            if tool is None:
                message = ToolMessage(
                    f"unknown tool {call['name']!r}; the tools are {sorted(by_name)}",
                    tool_call_id=call["id"],
                    name=call["name"],
                    status="error",
                )
            else:
                message = tool.invoke(call)
            messages.append(message)
            result.tool_messages.append(message)
    return result
