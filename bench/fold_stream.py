"""Micro-benchmark of the client's per-read work: a typical streamed reply folded read by read.

What is timed is what `transport._Stream.on_body` does with each read once the bytes are in:
`SSEParser.feed`, then the API module's `read` (one decode of every event of the read, then the
fold into the reply). The stream is built once: `--tokens` content events in each API's own
shape (vLLM-like chat chunks, the Responses and Messages events the simulator and llama.cpp
send) with their head and tail events, cut into reads of `--per-read` events.

    .venv/bin/python bench/fold_stream.py                    # every API, 256 tokens, 8 a read
    .venv/bin/python bench/fold_stream.py --api chat --repeats 5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from turnbench.client.apis import API_NAMES, api_for
from turnbench.client.apis.base import Reply
from turnbench.client.sse import SSEParser
from turnbench.config import TargetConfig


def _data(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(content: str | None = None, text: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": None}
    if text is not None:
        choice["text"] = text
    else:
        choice["delta"] = {"content": content}
    return {
        "id": "chatcmpl-4f1c2b9e",
        "object": "chat.completion.chunk",
        "created": 1764600000,
        "model": "turnbench-sim",
        "choices": [choice],
    }


USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 256,
    "prompt_tokens_details": {"cached_tokens": 1152},
}


def chat_events(n: int, text: bool = False) -> list[bytes]:
    """A vLLM-like chat (or completions) stream: n one-token chunks, usage, [DONE]."""
    body = [_data(_chunk(text=" word") if text else _chunk(" word")) for _ in range(n)]
    last = {"id": "chatcmpl-4f1c2b9e", "choices": [], "usage": USAGE}
    return [*body, _data(last), b"data: [DONE]\n\n"]


def responses_events(n: int) -> list[bytes]:
    """Responses: created, n `response.output_text.delta`, completed with usage."""
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "usage": None}
    delta = {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": " word",
        "logprobs": [],
    }
    usage = {
        "input_tokens": 1200,
        "output_tokens": n,
        "input_tokens_details": {"cached_tokens": 1152},
    }
    done = {**response, "status": "completed", "usage": usage}
    return [
        _data({"type": "response.created", "response": response}, "response.created"),
        *(_data({**delta, "sequence_number": i}, delta["type"]) for i in range(n)),
        _data({"type": "response.completed", "response": done}, "response.completed"),
    ]


def anthropic_events(n: int) -> list[bytes]:
    """Messages: message_start with usage, n text deltas, message_delta, message_stop."""
    usage = {"input_tokens": 48, "cache_read_input_tokens": 1152, "output_tokens": 1}
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "usage": usage}}
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": " word"},
    }
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens"},
        "usage": {"output_tokens": n},
    }
    return [
        _data(start, "message_start"),
        *(_data(delta, "content_block_delta") for _ in range(n)),
        _data(end, "message_delta"),
        _data({"type": "message_stop"}, "message_stop"),
    ]


STREAMS: dict[str, Callable[[int], list[bytes]]] = {
    "chat": chat_events,
    "completions": lambda n: chat_events(n, text=True),
    "responses": responses_events,
    "anthropic": anthropic_events,
}


def measure(api_name: str, tokens: int, per_read: int, repeats: int, rounds: int) -> list[float]:
    """Microseconds per whole stream, one figure per round of `repeats` streams."""
    events = STREAMS[api_name](tokens)
    reads = [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]
    api = api_for(TargetConfig(api=api_name))  # type: ignore[arg-type]

    def once() -> int:
        parser, reply, got = SSEParser(), Reply(), 0
        for data in reads:
            got += api.read(parser.feed(data), reply)
        assert reply.ended
        return got

    assert once() == tokens
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeats):
            once()
        out.append((time.perf_counter() - t0) / repeats * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=API_NAMES, action="append")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--per-read", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for name in args.api or API_NAMES:
        runs = measure(name, args.tokens, args.per_read, args.repeats, args.rounds)
        best, median = min(runs), statistics.median(runs)
        print(
            f"{name:12s} {args.tokens} tokens, {args.per_read} events a read: "
            f"median {median:7.1f} us a stream (min {best:.1f}), "
            f"{median * 1000 / args.tokens:.0f} ns a token"
        )


if __name__ == "__main__":
    main()
