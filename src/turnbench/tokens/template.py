"""The word tokenizer and chat template that the built-in simulator uses (`tokens.template`).

Why a toy tokenizer: tests (and users reading a report) must be able to predict token counts
exactly, with no model files and no downloads. The rules, documented in `docs/simulator.md`:

- A token is a special marker `<|name|>`, a run of word characters (`\\w+`: letters, digits,
  underscore, any script), or one single character that is neither a word character nor
  white space (punctuation, symbols). White space is never a token.
- A chat prompt renders each message as `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`: three tokens
  of overhead a message (start marker, role word, end marker) plus the content's tokens. An
  assistant message's `tool_calls` are rendered as their compact JSON after the content. The
  generation prompt `<|im_start|>assistant\\n` adds two tokens at the end.

The workload side writes prompts of an exact token length for this tokenizer (`tokens.sizer`),
and the client uses `count_tokens` as its approximate counter when no better tokenizer is
configured.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

TOKEN_RE = re.compile(r"<\|[a-z_]+\|>|\w+|[^\w\s]")
_OTHER_RE = re.compile(r"[^\w\s]")
"""One character that is neither a word character nor white space: a token of its own."""
_MARKER_RE = re.compile(r"<\|[a-z_]+\|>")

MESSAGE_OVERHEAD = 3
"""Tokens a chat message costs beyond its content: `<|im_start|>`, the role, `<|im_end|>`."""

GENERATION_PROMPT = "<|im_start|>assistant\n"
GENERATION_OVERHEAD = 2
"""Tokens of the generation prompt that ends every rendered chat prompt."""

VOCAB: tuple[str, ...] = tuple(
    """
    the of and to in is for on that with as it by at from this be are was or an have not but
    can all will one more time model server token cache turn user reply system prompt context
    latency batch queue request stream answer question session agent tool result value data
    first next last long short fast slow warm cold block prefix decode prefill memory kernel
    graph layer head vector matrix tensor compute throughput rate load user world river stone
    light night green blue red yellow music paper window garden letter number table chair
    """.split()
)


def tokens(text: str) -> list[str]:
    """Split text into the simulator's tokens (see the module docstring for the rules)."""
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Count the simulator's tokens in a text: `len(tokens(text))`, without making them.

    Why not count `TOKEN_RE`'s matches: the client counts every new message at send time
    (`session.Session.build`), and an agent's tool result or a sub-agent's first context is
    tens of thousands of tokens; a match object per token cost 0.3-0.4 µs a token, 15-20 ms for
    50k. Here C-level passes do it: each other character is a token and becomes a space, the
    word runs left are what `str.split` splits (re's `\\s` is `str.isspace`), and a special
    marker, counted as its four characters `<`, `|`, `|`, `>` and its name, is one token.
    """
    spaced, others = _OTHER_RE.subn(" ", text)
    if not others:
        return len(text.split())
    return len(spaced.split()) + others - 4 * len(_MARKER_RE.findall(text))


def message_text(message: Mapping[str, Any]) -> str:
    """What the template puts between a message's role and its end marker: the content's
    text parts, then any tool calls as compact JSON."""
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    text = "" if content is None else str(content)
    tool_calls = message.get("tool_calls")
    if tool_calls:
        text += json.dumps(tool_calls, separators=(",", ":"), sort_keys=True)
    return text


def render_message(message: Mapping[str, Any]) -> str:
    """Render one chat message with the template; tool calls follow the content as JSON."""
    return f"<|im_start|>{message.get('role', 'user')}\n{message_text(message)}<|im_end|>\n"


def render_chat(messages: Iterable[Mapping[str, Any]]) -> str:
    """Render a chat prompt: every message, then the generation prompt."""
    return "".join(render_message(m) for m in messages) + GENERATION_PROMPT


def count_chat_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Count the tokens of a rendered chat prompt."""
    return count_tokens(render_chat(messages))


def make_text(n_tokens: int, rng: random.Random) -> str:
    """Build a text of exactly `n_tokens` tokens: vocabulary words separated by spaces.

    Why words only: a word never merges with its neighbours, so the count is exact for this
    tokenizer and close (about 1.0-1.3 tokens a word) for real subword tokenizers.
    """
    if n_tokens <= 0:
        return ""
    return " ".join(rng.choices(VOCAB, k=n_tokens))
