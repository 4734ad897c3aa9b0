"""Replaying a list of conversations once or without end, with optional salted copies.

Why salt: a copy that repeats a conversation byte for byte hits the server's prefix cache and
makes the second pass look faster than real traffic; one distinct word at the very start of
each copy breaks that sharing while changing the length by exactly one token.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import count

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.conversation import Child, Conversation, Message


def salt_word(conv_id: str, copy: int) -> str:
    """One simulator token, distinct per (conversation, copy): `s<copy>x<8 hex digits>`."""
    digest = hashlib.blake2b(f"{conv_id}#{copy}".encode(), digest_size=4).hexdigest()
    return f"s{copy}x{digest}"


def run_salt() -> str:
    """A word unique to one run (`cache.salt`): `r` and 8 random hex digits, one simulator
    token. Every conversation of the run starts with it, so an earlier run's prefixes never
    match while the run's own shared prefixes still do."""
    return f"r{secrets.token_hex(4)}"


def salt_message(msg: Message, word: str) -> Message:
    """The message with `word` (and a space) at the very start of its text."""
    content = msg.get("content")
    if isinstance(content, list):
        return {**msg, "content": [{"type": "text", "text": word + " "}, *content]}
    return {**msg, "content": f"{word} {content or ''}"}


def salted(conv: Conversation, copy: int, sizer: TextSizer = TextSizer()) -> Conversation:
    """Copy `copy` of a conversation, salted at the start of its system prompt or first turn;
    each of its sub-agents (their own contexts) gets its own salt word too, else the copies'
    sub-agents would share the server's cache."""
    word = salt_word(conv.id, copy)
    new_id = f"{conv.id}#{copy}"
    if conv.children:
        conv = replace(conv, children=tuple(_salted_child(c, copy, sizer) for c in conv.children))
    if conv.system is not None:
        return replace(conv, id=new_id, system=f"{word} {conv.system}")
    first, rest = conv.turns[0], conv.turns[1:]
    if first.messages:
        msgs = (salt_message(first.messages[0], word), *first.messages[1:])
        first = replace(first, messages=msgs)
    elif first.input_tokens is not None:
        rng = random.Random(new_id)
        text = sizer.make_text(first.input_tokens, rng, lead=word)
        first = replace(first, messages=({"role": "user", "content": text},), input_tokens=None)
    return replace(conv, id=new_id, turns=(first, *rest))


def _salted_child(child: Child, copy: int, sizer: TextSizer) -> Child:
    """A sub-agent salted like a root; a fork starts from its parent's (salted) history, so
    only its own sub-agents are salted."""
    if not child.fork:
        return replace(child, plan=salted(child.plan, copy, sizer))
    kids = tuple(_salted_child(c, copy, sizer) for c in child.plan.children)
    plan = replace(child.plan, id=f"{child.plan.id}#{copy}", children=kids)
    return replace(child, plan=plan)


def cycled(
    plans: Sequence[Conversation], *, cycle: bool, salt: bool, sizer: TextSizer = TextSizer()
) -> Iterator[Conversation]:
    """Yield the plans once, or forever when `cycle` (copy k >= 1 renamed `ID#k`)."""
    yield from plans
    if not cycle or not plans:
        return
    for copy in count(1):
        for conv in plans:
            yield salted(conv, copy, sizer) if salt else _renamed(conv, copy)


def _renamed(conv: Conversation, copy: int) -> Conversation:
    """Copy `copy` of a plan, renamed `ID#copy`, its sub-agents too."""
    kids = tuple(replace(c, plan=_renamed(c.plan, copy)) for c in conv.children)
    return replace(conv, id=f"{conv.id}#{copy}", children=kids)
