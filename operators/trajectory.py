"""Tool-use trajectories in the OpenAI chat shape (the contract is in `schemas/trajectory.py`)."""

from __future__ import annotations

from typing import Sequence

BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"


def openai_messages(question: str, steps: Sequence[tuple[str, str, str]], answer: str) -> list[dict]:
    """(tool, JSON arguments, result) steps as OpenAI chat messages: the question, one assistant tool call and
    its tool result per step, then the boxed answer (what an SFT trainer consumes; the images go with the user
    turn, in the row's image order)."""
    messages: list[dict] = [{"role": "user", "content": question}]
    for i, (name, arguments, result) in enumerate(steps):
        call_id = f"call_{i}"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
    messages.append({"role": "assistant", "content": f"{BOX_OPEN}{answer}{BOX_CLOSE}"})
    return messages
