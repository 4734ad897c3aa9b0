"""Writes the canned reply the static server sends: one streamed chat completion.

Why canned: a server that only copies bytes from memory cannot be the bottleneck, so a run
against it measures the client. The stream is what vLLM sends for a 64-token reply: a role
chunk, one `chat.completion.chunk` per content token, `finish_reason` on the last, a usage
chunk with `prompt_tokens_details.cached_tokens`, then `data: [DONE]`.

    .venv/bin/python bench/throughput/make_sse.py [--tokens 64] > reply.sse
"""

from __future__ import annotations

import argparse
import json
import sys

MODEL = "static"
MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model"}]}, separators=(",", ":")
)


def _event(obj: dict[str, object]) -> str:
    return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"


def sse_body(tokens: int = 64, prompt_tokens: int = 32, cached_tokens: int = 16) -> str:
    """The whole SSE body of one streamed chat completion of `tokens` content chunks."""
    head = {
        "id": "chatcmpl-static",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
    }

    def chunk(delta: dict[str, str], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [choice]})

    parts = [chunk({"role": "assistant", "content": ""}, None)]
    for i in range(tokens):
        parts.append(chunk({"content": f" tok{i}"}, "length" if i == tokens - 1 else None))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
    parts.append(_event({**head, "choices": [], "usage": usage}))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def main() -> None:
    """Print the canned body to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="content chunks in the reply")
    args = parser.parse_args()
    sys.stdout.write(sse_body(args.tokens))


if __name__ == "__main__":
    main()
