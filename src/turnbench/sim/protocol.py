"""The OpenAI request bodies the simulator accepts, validated into one `SimRequest`.

Why as strict as vLLM and no stricter: a load generator that works against the simulator must
work against vLLM, so wrong types and context overflows are refused with vLLM's words, while
unknown fields (`top_p`, `logprobs`, vendor extensions...) are ignored as vLLM does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from turnbench.sim.prompt_blocks import MEMO, PromptBlocks
from turnbench.tokens.template import render_chat, render_message


class RequestError(Exception):
    """A request the simulator refuses, with the HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        kind: str = "",
        code: str | None = None,
    ) -> None:
        """`code`: OpenAI's machine-readable reason (`previous_response_not_found`); vLLM puts
        the HTTP status there, which is the default."""
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.kind = kind or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "Error")
        self.code = code

    def body(self) -> bytes:
        """The error as OpenAI/vLLM JSON: `{"error": {message, type, param, code}}`."""
        return msgspec.json.encode(
            {
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "param": self.param,
                    "code": self.status if self.code is None else self.code,
                }
            }
        )


@dataclass(slots=True)
class SimRequest:
    """A validated completion request: the rendered prompt and the generation settings."""

    chat: bool
    prompt: str
    blocks: PromptBlocks
    """The prompt's token count and KV blocks (`prompt_blocks`)."""
    max_tokens: int | None
    min_tokens: int
    ignore_eos: bool
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    continuous_usage: bool
    """`stream_options.continuous_usage_stats`: every chunk carries the usage so far."""


def opt(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    """Read an optional field of the given JSON types; null means absent.

    Why `bool` is refused unless listed: Python's `True` is an `int`, and `max_tokens: true`
    must be a 400, not a one-token reply.
    """
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise RequestError(f"'{key}' must be {what}, got {value!r}", param=key)
    if not isinstance(value, kinds):
        raise RequestError(f"'{key}' must be {what}, got {type(value).__name__}", param=key)
    return value


def opt_limit(body: Mapping[str, Any], key: str) -> int | None:
    """Read an optional output-token limit, which must be at least 1 (null means absent)."""
    limit = opt(body, key, (int,), "an integer")
    if limit is not None and limit < 1:
        raise RequestError(f"{key} must be at least 1, got {limit}", param=key)
    return limit


def decode_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body or raise a 400."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise RequestError(f"Invalid JSON body: {err}") from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object")
    return body


def check_model(body: Mapping[str, Any], served: str) -> None:
    """Refuse a model other than the served one (404); a missing model means the served one."""
    model = body.get("model")
    if model is None or model == served:
        return
    if not isinstance(model, str):
        raise RequestError("'model' must be a string", param="model")
    raise RequestError(f"The model `{model}` does not exist.", status=404, param="model")


def render_messages(messages: object, add_generation_prompt: bool = True) -> str:
    """Validate chat messages and render them with the simulator's chat template."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of messages", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", param="messages")
        if not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}].role must be a string", param="messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(
                f"messages[{i}].content must be a string, a list of parts or null",
                param="messages",
            )
    if add_generation_prompt:
        return render_chat(messages)
    return "".join(render_message(m) for m in messages)


def render_prompt(prompt: object) -> str:
    """Validate a completions prompt: a string, or a list holding exactly one string."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("'prompt' must be a string (or a list of one string)", param="prompt")
    return prompt


def parse_request(
    raw: bytes, *, chat: bool, served_model: str, max_model_len: int, block_size: int
) -> SimRequest:
    """Validate a `/v1/chat/completions` or `/v1/completions` body (raises `RequestError`)."""
    body = decode_body(raw)
    check_model(body, served_model)
    if chat:
        if "messages" not in body:
            raise RequestError("'messages' is required", param="messages")
        prompt = render_messages(body["messages"])
    else:
        if "prompt" not in body:
            raise RequestError("'prompt' is required", param="prompt")
        prompt = render_prompt(body["prompt"])
    max_tokens = opt(body, "max_tokens", (int,), "an integer")
    if chat and max_tokens is None:
        max_tokens = opt(body, "max_completion_tokens", (int,), "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    min_tokens = opt(body, "min_tokens", (int,), "an integer") or 0
    if min_tokens < 0 or (max_tokens is not None and min_tokens > max_tokens):
        raise RequestError(
            f"min_tokens must be in [0, max_tokens], got {min_tokens}", param="min_tokens"
        )
    stop = opt(body, "stop", (str, list), "a string or a list of strings")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not all(isinstance(s, str) for s in stop):
        raise RequestError("'stop' must be a string or a list of strings", param="stop")
    include_usage, continuous_usage = _usage_options(
        opt(body, "stream_options", (dict,), "an object")
    )
    opt(body, "temperature", (int, float), "a number")
    opt(body, "user", (str,), "a string")
    opt(body, "metadata", (dict,), "an object")
    opt(body, "tools", (list,), "a list")
    blocks = MEMO.blocks(prompt, block_size)
    check_context(blocks.count, max_tokens, max_model_len, "messages" if chat else "prompt")
    return SimRequest(
        chat=chat,
        prompt=prompt,
        blocks=blocks,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=bool(opt(body, "ignore_eos", (bool,), "a boolean")),
        stop=tuple(s for s in (stop or ()) if s),
        seed=opt(body, "seed", (int,), "an integer"),
        stream=bool(opt(body, "stream", (bool,), "a boolean")),
        include_usage=include_usage,
        continuous_usage=continuous_usage,
    )


def _usage_options(options: dict[str, Any] | None) -> tuple[bool, bool]:
    """(include_usage, continuous_usage_stats) of `stream_options`, with vLLM's defaults.

    Why these defaults: vLLM reads a `stream_options` object as `include_usage: true` unless
    it says otherwise, and sends per-chunk usage only when both flags hold.
    """
    if options is None:
        return False, False
    include = bool(options.get("include_usage", True))
    return include, include and bool(options.get("continuous_usage_stats"))


def check_context(n_prompt: int, max_tokens: int | None, max_model_len: int, where: str) -> None:
    """Refuse a prompt plus completion that does not fit the context, in vLLM's words;
    `where` names the field that holds the prompt (`messages`, `prompt`, `input`)."""
    if max_tokens is None:
        if n_prompt >= max_model_len:
            raise RequestError(
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {n_prompt} tokens in the {where}. Please reduce the length of the "
                f"{where}.",
                param=where,
            )
        return
    if n_prompt + max_tokens > max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the {where}, {max_tokens} "
            f"in the completion). Please reduce the length of the {where} or completion.",
            param=where,
        )


def rendered_request(
    prompt: str,
    *,
    max_tokens: int | None,
    ignore_eos: bool,
    stream: bool,
    max_model_len: int,
    block_size: int,
    where: str,
    stop: tuple[str, ...] = (),
) -> SimRequest:
    """The `SimRequest` of a prompt already rendered with the chat template (Responses and
    Messages): why one builder, so those APIs get the context check, prefix cache, timing and
    faults of chat completions unchanged; they have no seeds or stream options, and only
    Messages has stop strings (`stop_sequences`).
    """
    blocks = MEMO.blocks(prompt, block_size)
    check_context(blocks.count, max_tokens, max_model_len, where)
    return SimRequest(
        chat=True,
        prompt=prompt,
        blocks=blocks,
        max_tokens=max_tokens,
        min_tokens=0,
        ignore_eos=ignore_eos,
        stop=stop,
        seed=None,
        stream=stream,
        include_usage=False,
        continuous_usage=False,
    )


def tokenize_body(raw: bytes, served_model: str) -> str:
    """Validate a vLLM `/tokenize` body and return the text whose tokens are counted."""
    body = decode_body(raw)
    check_model(body, served_model)
    if "messages" in body:
        add = body.get("add_generation_prompt", True)
        if not isinstance(add, bool):
            raise RequestError("'add_generation_prompt' must be a boolean")
        return render_messages(body["messages"], add_generation_prompt=add)
    if "prompt" in body:
        return render_prompt(body["prompt"])
    raise RequestError("'prompt' or 'messages' is required")
