"""Agent-shaped requests from the official `anthropic` and `openai` SDKs, served by `turnbench
sim` over real HTTP: tool catalogues, parallel tool calls and their results, extended-thinking
blocks sent back, contexts of 30k tokens, and the prefix cache read back on a repeat and on the
next step of the loop. Expected prompt sizes come from the simulator's documented template
(`count_chat_tokens`), so a rendering change that costs an agent's turn tokens fails here."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from conftest import SimProcess, start_sim
from turnbench.tokens.template import count_chat_tokens, make_text

MODEL = "turnbench-sim"
BLOCK = 16
"""The simulator's default `block_size`."""
SYSTEM = "You are a coding agent. " + make_text(60, random.Random(1))


@pytest.fixture(scope="module")
def long_sim() -> Iterator[SimProcess]:
    """A zero-delay simulator with room for agent contexts (64k tokens), whose replies end by
    themselves within 40 tokens (a stream helper that wants `response.completed` gets it)."""
    sim = start_sim("--zero-delay", "--max-model-len", "65536", "--set", "output_len.max=40")
    yield sim
    sim.stop()


def repeat_hit(prompt: int) -> int:
    """Cached tokens of a prompt sent a second time: its whole blocks, the last token always
    computed (see `sim.prefix_cache.PrefixCache.match`)."""
    return (prompt - 1) // BLOCK * BLOCK


def blob(seed: int, n: int) -> str:
    """A tool output of exactly `n` simulator tokens."""
    return make_text(n, random.Random(seed))


# --- Anthropic Messages -------------------------------------------------------------------

TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file of the repository.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "grep",
        "description": "Search the repository.",
        "input_schema": {"type": "object", "properties": {"pattern": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    },
]


def anthropic_client(sim: SimProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="x", max_retries=0)


def prompt_total(usage: Any) -> int:
    return int(
        usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    )


def tool_step(n: int, outputs: tuple[str, str]) -> list[dict[str, Any]]:
    """Step `n` of an agent loop in Messages blocks: an assistant turn that calls two tools at
    once (after its thinking and a sentence), and the user turn carrying both results."""
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": f"step {n}: look twice", "signature": "sig"},
                {"type": "text", "text": f"Reading both, step {n}."},
                {"type": "tool_use", "id": f"toolu_{n}a", "name": "read_file",
                 "input": {"path": f"src/m{n}.py"}},
                {"type": "tool_use", "id": f"toolu_{n}b", "name": "grep",
                 "input": {"pattern": f"def f{n}"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{n}a",
                 "content": [{"type": "text", "text": outputs[0]}]},
                {"type": "tool_result", "tool_use_id": f"toolu_{n}b", "content": outputs[1],
                 "is_error": n % 2 == 1},
            ],
        },
    ]  # fmt: skip


def as_chat(messages: list[dict[str, Any]], system: str = SYSTEM) -> list[dict[str, Any]]:
    """What the simulator renders of `tool_step` turns (docs/simulator.md, Messages API):
    thinking dropped, text blocks and tool results joined, tool_use blocks as tool calls."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if isinstance(m["content"], str):
            out.append(m)
            continue
        text, calls = "", []
        for block in m["content"]:
            if block["type"] == "text":
                text += block["text"]
            elif block["type"] == "tool_result":
                content = block["content"]
                text += content if isinstance(content, str) else content[0]["text"]
            elif block["type"] == "tool_use":
                calls.append({k: block[k] for k in ("id", "name", "input")})
        out.append({"role": m["role"], "content": text, **({"tool_calls": calls} if calls else {})})
    return out


def test_messages_parallel_tool_use_created_and_streamed(fast_sim: SimProcess) -> None:
    """Two tool_use blocks in one assistant turn, two tool_result blocks in the next user turn:
    the prompt is what the template says, streamed and created replies agree, and the repeat
    reads every whole block back from the cache."""
    c = anthropic_client(fast_sim)
    messages = [
        {"role": "user", "content": "Fix the failing test in " + blob(2, 30)},
        *tool_step(1, (blob(3, 200), "no match")),
    ]
    unique = "Messages. " + SYSTEM  # a prefix no other test cached: the first read is 0
    system = [{"type": "text", "text": unique, "cache_control": {"type": "ephemeral"}}]
    expected = count_chat_tokens(as_chat(messages, unique))
    created = c.messages.create(
        model=MODEL,
        max_tokens=20,
        system=system,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "auto", "disable_parallel_tool_use": False},
        messages=messages,  # type: ignore[arg-type]
    )
    assert prompt_total(created.usage) == expected
    assert created.usage.cache_read_input_tokens == 0
    with c.messages.stream(
        model=MODEL,
        max_tokens=20,
        system=system,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        messages=messages,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == created.content[0].text  # type: ignore[union-attr]
    assert prompt_total(streamed.usage) == expected
    assert streamed.usage.cache_read_input_tokens == repeat_hit(expected)


def test_messages_thinking_blocks_cost_no_prompt_tokens(fast_sim: SimProcess) -> None:
    c = anthropic_client(fast_sim)
    user = {"role": "user", "content": "Plan the change " + blob(4, 20)}
    call = {"type": "tool_use", "id": "toolu_t", "name": "grep", "input": {"pattern": "x"}}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_t"}]}
    sizes = []
    for thoughts in (
        [],
        [{"type": "thinking", "thinking": blob(5, 300), "signature": "s"}],
        [{"type": "redacted_thinking", "data": "opaque"}],
    ):
        assistant = {"role": "assistant", "content": [*thoughts, call]}
        m = c.messages.create(model=MODEL, max_tokens=5, messages=[user, assistant, result])  # type: ignore[arg-type]
        sizes.append(prompt_total(m.usage))
    assert sizes[0] == sizes[1] == sizes[2]
    bad = {"role": "assistant", "content": [{"type": "thinking", "signature": "s"}, call]}
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.content\.0\.thinking"):
        c.messages.create(model=MODEL, max_tokens=5, messages=[user, bad, result])  # type: ignore[arg-type, list-item]


def test_messages_long_agent_loop_reads_its_cache(long_sim: SimProcess) -> None:
    """An agent loop to a 30k-token context, streamed: each step's prompt is the template's
    count, and each step reads from the cache at least the whole blocks of the step before."""
    c = anthropic_client(long_sim)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Refactor " + blob(6, 40)}]
    previous = 0
    for step in range(1, 4):
        messages += tool_step(step, (blob(10 + step, 6000), blob(20 + step, 4000)))
        expected = count_chat_tokens(as_chat(messages))
        with c.messages.stream(
            model=MODEL,
            max_tokens=30,
            system=SYSTEM,
            tools=TOOLS,  # type: ignore[arg-type]
            messages=messages,  # type: ignore[arg-type]
        ) as stream:
            final = stream.get_final_message()
        usage = final.usage
        assert prompt_total(usage) == expected
        assert usage.cache_read_input_tokens >= previous // BLOCK * BLOCK
        assert usage.cache_read_input_tokens % BLOCK == 0 and usage.input_tokens < BLOCK
        previous = expected
        text = final.content[0].text  # type: ignore[union-attr]
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": "Go on."})
    assert previous > 30_000


# --- OpenAI chat completions --------------------------------------------------------------

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} in the repository",
            "parameters": {"type": "object", "properties": {"arg": {"type": "string"}}},
        },
    }
    for name in ("read_file", "grep")
]


def openai_client(sim: SimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.v1, api_key="x", max_retries=0)


def chat_step(n: int, outputs: tuple[str, str]) -> list[dict[str, Any]]:
    """An assistant message with two parallel tool calls, then a `tool` message for each."""
    calls = [
        {
            "id": f"call_{n}{x}",
            "type": "function",
            "function": {"name": name, "arguments": f'{{"arg":"{name} {n}"}}'},
        }
        for x, name in (("a", "read_file"), ("b", "grep"))
    ]
    return [
        {"role": "assistant", "content": f"Looking, step {n}.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": f"call_{n}a", "content": outputs[0]},
        {"role": "tool", "tool_call_id": f"call_{n}b",
         "content": [{"type": "text", "text": outputs[1]}]},
    ]  # fmt: skip


def test_chat_parallel_tool_calls_created_and_streamed(long_sim: SimProcess) -> None:
    c = openai_client(long_sim)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Chat. " + SYSTEM},  # a prefix no other test cached
        {"role": "user", "content": "Fix it " + blob(7, 30)},
        *chat_step(1, (blob(8, 12000), blob(9, 8000))),
    ]
    expected = count_chat_tokens(messages)
    created = c.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        tools=CHAT_TOOLS,  # type: ignore[arg-type]
        tool_choice="auto",
        parallel_tool_calls=True,
        max_tokens=20,
    )
    assert created.usage is not None and created.usage.prompt_tokens == expected > 20_000
    details = created.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 0
    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            tools=CHAT_TOOLS,  # type: ignore[arg-type]
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == created.choices[0].message.content
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == expected
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == repeat_hit(expected)


# --- OpenAI Responses ---------------------------------------------------------------------

RESPONSES_TOOLS = [{"type": "function", **t["function"]} for t in CHAT_TOOLS]


def as_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items: a call per `function_call` item, after the
    assistant's text; a `function_call_output` per tool result."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            output = m["content"]
            if isinstance(output, list):
                output = [{"type": "input_text", "text": p["text"]} for p in output]
            items.append(
                {"type": "function_call_output", "call_id": m["tool_call_id"], "output": output}
            )
            continue
        items.append({"role": m["role"], "content": m["content"]})
        for call in m.get("tool_calls", ()):
            function = call["function"]
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
    return items


def test_responses_parallel_function_calls_cost_what_chat_does(fast_sim: SimProcess) -> None:
    """Stateless Responses with two `function_call` items after the assistant's text and two
    outputs: the prompt is the chat prompt of the same conversation, token for token; streamed
    and created agree, and the repeat reads the cache."""
    c = openai_client(fast_sim)
    chat = [
        {"role": "user", "content": "Fix it " + blob(11, 30)},
        *chat_step(1, (blob(12, 300), blob(13, 200))),
    ]
    expected = count_chat_tokens([{"role": "system", "content": SYSTEM}, *chat])
    items = as_items(chat)
    created = c.responses.create(
        model=MODEL,
        instructions=SYSTEM,
        input=items,  # type: ignore[arg-type]
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
        parallel_tool_calls=True,
        max_output_tokens=4000,
        store=False,
    )
    assert created.usage is not None and created.usage.input_tokens == expected
    with c.responses.stream(
        model=MODEL,
        instructions=SYSTEM,
        input=items,  # type: ignore[arg-type]
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
        max_output_tokens=4000,  # ends by itself: `get_final_response` wants `completed`
        store=False,
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == created.output_text
    assert final.usage is not None and final.usage.input_tokens == expected
    assert final.usage.input_tokens_details.cached_tokens == repeat_hit(expected)
    over_chat = openai_client(fast_sim).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, *chat],  # type: ignore[list-item]
        max_tokens=1,
    )
    assert over_chat.usage is not None and over_chat.usage.prompt_tokens == expected


def test_responses_chained_function_call_outputs(long_sim: SimProcess) -> None:
    """`previous_response_id` chains an agent loop: each step sends only its calls and their
    outputs (one 10k-token file each step); the server adds the stored history, and the step
    reads at least the whole blocks of the step before from the cache."""
    c = openai_client(long_sim)
    first = "Chained agent " + blob(14, 40)
    r = c.responses.create(model=MODEL, instructions=SYSTEM, input=first, max_output_tokens=100)
    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": first},
        {"role": "assistant", "content": r.output_text},
    ]
    assert r.usage is not None
    previous = r.usage.input_tokens
    for step in range(1, 3):
        new = chat_step(step, (blob(30 + step, 10000), blob(40 + step, 300)))
        new[0]["content"] = ""  # the calls alone: they follow the stored reply
        items = as_items(new)[1:]
        with c.responses.stream(
            model=MODEL,
            instructions=SYSTEM,
            previous_response_id=r.id,
            input=items,  # type: ignore[arg-type]
            tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
            max_output_tokens=100,
        ) as stream:
            r = stream.get_final_response()
        conversation += new
        assert r.usage is not None
        assert r.usage.input_tokens == count_chat_tokens(conversation)
        assert r.usage.input_tokens_details.cached_tokens >= previous // BLOCK * BLOCK
        assert r.previous_response_id is not None
        previous = r.usage.input_tokens
        conversation.append({"role": "assistant", "content": r.output_text})
    assert previous > 20_000
