"""The live state of one conversation: its history, and the next request built at send time.

Why lazily: a request is built from the history as it stands when the turn is due (the server's
live reply included), so nothing is precomputed and ten thousand waiting sessions hold only
their histories. The context-length policy is applied here, where the history lives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from turnbench.cache.ideal import PrefixChain, new_chain
from turnbench.cache.registry import BlockRegistry
from turnbench.client.apis.base import Reply
from turnbench.config import SessionConfig
from turnbench.tokens.sizer import TextSizer
from turnbench.tokens.template import (
    GENERATION_OVERHEAD,
    MESSAGE_OVERHEAD,
    count_tokens,
    render_message,
)
from turnbench.workload.conversation import Conversation, Message, Turn
from turnbench.workload.cycling import salt_message


@dataclass(slots=True)
class PlannedRequest:
    """The messages of one turn's request and what the context policy did to the history."""

    turn_index: int
    messages: list[Message]
    new_messages: tuple[Message, ...]
    new_sizes: tuple[int, ...]
    """Local token estimates of `new_messages` (template overhead included)."""
    max_tokens: int
    dropped_messages: int
    context_tokens: int
    """Estimated prompt tokens (local count, scaled by what the server reported so far)."""


@lru_cache(maxsize=256)
def _system_size(text: str) -> int:
    """The tokens of a system prompt: most sessions share one, so it is counted once."""
    return count_tokens(render_message({"role": "system", "content": text}))


def _estimate(message: Message) -> int:
    return count_tokens(render_message(message))


class Session:
    """One played conversation: history, next turn, think time and context policy."""

    def __init__(
        self,
        session_id: str,
        conversation: Conversation,
        cfg: SessionConfig,
        *,
        max_context_tokens: int | None,
        rng: random.Random,
        sizer: TextSizer | None = None,
        salt: str | None = None,
        registry: BlockRegistry | None = None,
    ) -> None:
        """`salt`: the run's word put at the very start of the conversation (its system
        prompt, else its first message). `registry`: the worker's ideal cache; None: no
        ideal cached prefix is counted."""
        self.session_id = session_id
        self.conversation = conversation
        self.cfg = cfg
        self.max_context_tokens = max_context_tokens
        self.rng = rng
        self.sizer = sizer or TextSizer()
        """Writes unwritten user turns to length for the server's tokenizer."""
        self.history: list[Message] = []
        self._sizes: list[int] = []
        self._size = 0
        """`sum(self._sizes)`, kept as they change: every turn reads it."""
        self.dropped_messages = 0
        self.previous_id: str | None = None
        """The server's id of the last accepted reply, for an API that holds the history
        (`target.responses_state: chained`); None for the others."""
        self._scale = 1.0
        self.registry = registry
        self._salt = salt
        system = conversation.system
        if system:
            if salt is not None:
                system = f"{salt} {system}"
                self._salt = None
            self._append({"role": "system", "content": system}, _system_size(system))
        self._chain: PrefixChain | None = None if registry is None else new_chain(registry, system)
        self.task_id = session_id
        """The agent task it belongs to (the root session's id); a root is its own."""
        self.parent_id: str | None = None
        self.depth = 0
        self.branch = 0
        self.kind = "session"
        """session (a root), subagent or fork."""

    def fork(self, session_id: str, conversation: Conversation, rng: random.Random) -> Session:
        """A child session that starts from this one's history as it stands now (a parallel
        fork of the context): its own turns, one request in flight of its own."""
        child = Session(
            session_id,
            conversation,
            self.cfg,
            max_context_tokens=self.max_context_tokens,
            rng=rng,
            sizer=self.sizer,
            registry=self.registry,
        )
        child.history = list(self.history)
        child._sizes = list(self._sizes)
        child._size = self._size
        child._scale = self._scale
        if child._chain is not None:
            child._chain.restart(child.history, 0, 0)
        return child

    @property
    def turns(self) -> tuple[Turn, ...]:
        return self.conversation.turns

    def _append(self, message: Message, size: int | None = None) -> None:
        self.history.append(message)
        size = _estimate(message) if size is None else size
        self._sizes.append(size)
        self._size += size

    def _local(self, server_tokens: int) -> int:
        """A count in server tokens as local tokens (the unit of the history's sizes)."""
        return round(server_tokens / self._scale) + MESSAGE_OVERHEAD

    def _prompt_tokens(self, extra: int) -> int:
        return round((self._size + extra + GENERATION_OVERHEAD) * self._scale)

    def wait_s(self, turn_index: int) -> tuple[float, bool]:
        """Pause before `turn_index`, counted from when the last thing it waits for ended (the
        previous reply, or sub-agents it joins), and whether it is a tool's latency (the turn
        carries the tool's results) rather than think time.

        A tool's latency is part of the workload, so it applies even where the dataset's
        think times are replaced (`dataset_think_time: false`).
        """
        if turn_index == 0:
            return 0.0, False
        turn = self.turns[turn_index]
        if turn.tool_time_s is not None:
            return max(0.0, turn.tool_time_s), True
        recorded = turn.think_time_s
        if recorded is not None and self.cfg.dataset_think_time:
            return max(0.0, recorded), False
        return self.cfg.think_time.sample(self.rng), False

    def build(self, turn_index: int) -> PlannedRequest | None:
        """The request of `turn_index` from the history as it is now; None if the context is
        full and the policy (`stop`, or `truncate` with nothing left to drop) ends the session.
        """
        turn = self.turns[turn_index]
        salt, self._salt = self._salt, None  # the first turn's, when there is no system prompt
        if turn.messages:
            new = turn.messages
            if salt is not None:
                new = (salt_message(new[0], salt), *new[1:])
            new_sizes = tuple(_estimate(m) for m in new)
        else:  # written to length here: its size is known without counting it again
            n = turn.input_tokens or 1
            text = self.sizer.make_text(n, self.rng)
            if salt is None:
                new, new_sizes = ({"role": "user", "content": text},), (self._local(n),)
            else:  # the salt is one more word: one more token for the simulator
                new = ({"role": "user", "content": f"{salt} {text}"},)
                new_sizes = (self._local(n) + count_tokens(salt),)
        if turn.compact:
            self._compact()
        max_tokens = turn.max_tokens or self.cfg.max_tokens
        new_size = sum(new_sizes)
        limit = self.max_context_tokens
        if limit is not None and self._prompt_tokens(new_size) + max_tokens > limit:
            if self.cfg.context_policy == "stop":
                return None
            if self.cfg.context_policy == "truncate":
                while self._prompt_tokens(new_size) + max_tokens > limit:
                    if not self._drop_oldest_turn():
                        return None
                if self._chain is not None:
                    system = bool(self.history) and self.history[0].get("role") == "system"
                    kept_tokens = round(self._sizes[0] * self._scale) if system else 0
                    self._chain.restart(self.history, int(system), kept_tokens)
        return PlannedRequest(
            turn_index=turn_index,
            messages=[*self.history, *new],
            new_messages=new,
            new_sizes=new_sizes,
            max_tokens=max_tokens,
            dropped_messages=self.dropped_messages,
            context_tokens=self._prompt_tokens(new_size),
        )

    def sent(self, planned: PlannedRequest) -> int | None:
        """The planned request is about to go out: its ideal cached tokens, in whole blocks of the
        server's tokens (None when not counted). Called for every attempt: a retry finds its
        own first attempt's prompt held.

        The session's own held history counts in the tokens the server reported for it; a
        longer prefix another session sent, in the estimated tokens of its messages (exact
        for the simulator and turnbench's texts where it ends at a message's edge). Capped
        below the prompt's last token.
        """
        chain = self._chain
        if chain is None:
            return None
        local = chain.match(planned.new_messages, self._sizes, self._size, planned.new_sizes)
        matched = chain.held_tokens  # (as the match left it)
        if local is not None:  # beyond its own history: a prefix another session sent
            local = round(local * self._scale)
            if local > matched:
                matched = local
        if matched >= planned.context_tokens:  # (comparisons, not min and max: every request)
            matched = planned.context_tokens - 1
        return matched - matched % chain.registry.block_size if matched > 0 else 0

    def computed(self) -> None:
        """The request last `sent` got its first token: the server computed its prompt, so
        later requests may find it cached."""
        chain = self._chain
        if chain is not None:
            chain.computed(self._size * self._scale)

    def _compact(self) -> None:
        """Context compaction: everything but the system prompt leaves the history."""
        first = 1 if self.history and self.history[0].get("role") == "system" else 0
        self.dropped_messages += len(self.history) - first
        del self.history[first:]
        del self._sizes[first:]
        self._size = sum(self._sizes)
        if self._chain is not None:
            kept_tokens = round(self._sizes[0] * self._scale) if first else 0
            self._chain.restart(self.history, first, kept_tokens)

    def _drop_oldest_turn(self) -> bool:
        """Drop the oldest user message and everything up to the next user message; the
        system prompt always stays. False when there is nothing left to drop."""
        first = 1 if self.history and self.history[0].get("role") == "system" else 0
        if len(self.history) <= first:
            return False
        end = first + 1
        while end < len(self.history) and self.history[end].get("role") != "user":
            end += 1
        self.dropped_messages += end - first
        del self.history[first:end]
        self._size -= sum(self._sizes[first:end])
        del self._sizes[first:end]
        return True

    def accept(
        self,
        planned: PlannedRequest,
        reply: Reply,
        prompt_tokens: int | None,
        completion_tokens: int | None = None,
    ) -> None:
        """A successful turn: its messages and the reply join the history.

        The reply is the server's with `history: live`, the recorded one with `history:
        dataset`. A recorded reply that calls tools is replayed in both modes, because the
        dataset's next turn carries results for exactly those calls.
        """
        for message, size in zip(planned.new_messages, planned.new_sizes, strict=True):
            self._append(message, size)
        recorded = self.turns[planned.turn_index].reply
        generated = False
        if recorded is not None and (
            self.cfg.history == "dataset" or bool(recorded.get("tool_calls"))
        ):
            self._append(recorded)
        elif completion_tokens is not None and not reply.tool_calls:
            self._append(reply.message(), self._local(completion_tokens))
            generated = True
        else:
            self._append(reply.message())
            generated = not reply.tool_calls
        chain = self._chain
        if chain is not None:
            held = prompt_tokens or planned.context_tokens
            if generated:  # an assistant message of the reply's text
                held += completion_tokens or round(self._sizes[-1] * self._scale)
                chain.answered(self.history[-1]["content"], held)
            else:
                chain.answered_unheld(self.history[-1], held)
        if prompt_tokens and planned.context_tokens:
            local = planned.context_tokens / self._scale
            if local > 0:
                self._scale = prompt_tokens / local
