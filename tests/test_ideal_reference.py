"""The ideal cached prefix of hundreds of interleaved requests against a plain reference.

Why a reference: `turnbench.cache.ideal` is written for speed (chained hash keys, a text kept
beside its first piece's key, the match written out), so each request's figure is checked
here against the same rules spelled out on the messages themselves: the registry as sets of
whole message prefixes, headers and texts, with no hashing and no shortcut. The play mixes
what changes the figure: shared system prompts and texts (matches that stop inside a
message, in and past its first piece), recorded and tool-calling replies, `history:
dataset`, retries and requests that fail before their first token, truncation, compaction,
forks and the run's salt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from turnbench.cache.registry import PIECE_CHARS, BlockRegistry
from turnbench.client.apis.base import Reply
from turnbench.config import SessionConfig
from turnbench.session import PlannedRequest, Session
from turnbench.tokens.template import GENERATION_OVERHEAD, MESSAGE_OVERHEAD, message_text
from turnbench.workload.conversation import Conversation, Message, Turn

BLOCK = 16
HEADER = MESSAGE_OVERHEAD - 1
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta,", "eta."]
TAIL = ["one", "two", "three", "four", "five"]
Seq = tuple[tuple[str, str], ...]


def _pair(message: Message) -> tuple[str, str]:
    return message.get("role", "user"), message_text(message)


def _common(a: str, b: str) -> int:
    """Leading pieces `a` and `b` share, their first being the same."""
    k, last = 1, -(-min(len(a), len(b)) // PIECE_CHARS)
    while k < last and a[: (k + 1) * PIECE_CHARS] == b[: (k + 1) * PIECE_CHARS]:
        k += 1
    return k


@dataclass
class _State:
    """What the reference knows of one session."""

    hist: list[tuple[str, str]]
    held: int = 0
    held_reply: bool = False
    held_tokens: int = 0
    sent: bool = False
    new: list[tuple[str, str]] = field(default_factory=list)


class Reference:
    """The ideal's rules on whole message sequences (docs/prefix-cache.md)."""

    def __init__(self) -> None:
        self.full: set[Seq] = set()
        """Prefixes computed whole (every message ended)."""
        self.heads: set[tuple[Seq, str]] = set()
        """A message header (or the generation prompt, an assistant's) after a prefix."""
        self.texts: dict[tuple[Seq, str], set[str]] = {}
        """Texts that followed a header."""
        self.states: dict[int, _State] = {}

    def start(self, session: Session) -> None:
        self.states[id(session)] = _State([_pair(m) for m in session.history])

    def _local(self, st: _State, new: list[tuple[str, str]], sizes: list[int]) -> float | None:
        seq = st.hist + new
        i = st.held
        while i < len(seq) and tuple(seq[: i + 1]) in self.full:
            i += 1
        if i == len(seq):
            gen = (tuple(seq), "assistant") in self.heads
            return float(sum(sizes)) + (GENERATION_OVERHEAD if gen else 0)
        if i == st.held and st.held_reply:
            return None
        before = float(sum(sizes[:i]))
        role, text = seq[i]
        if (tuple(seq[:i]), role) not in self.heads:
            return None if i == st.held else before
        texts = self.texts.get((tuple(seq[:i]), role), set())
        same = [t for t in texts if t[:PIECE_CHARS] == text[:PIECE_CHARS]]
        if not text or not same:
            return before + HEADER
        if len(text) <= PIECE_CHARS:
            return before + HEADER + sizes[i] - MESSAGE_OVERHEAD
        share = min(1.0, max(_common(text, t) for t in same) * PIECE_CHARS / len(text))
        return before + HEADER + share * (sizes[i] - MESSAGE_OVERHEAD)

    def sent(self, session: Session, planned: PlannedRequest) -> int:
        st = self.states[id(session)]
        now = [_pair(m) for m in session.history]
        if now != st.hist:  # truncated or compacted: only a system prompt stays held
            kept = int(bool(now) and now[0][0] == "system")
            kept_tokens = round(session._sizes[0] * session._scale) if kept else 0
            st.hist = now
            if kept < st.held or (kept == st.held and st.held_reply):
                st.held, st.held_reply, st.held_tokens = kept, False, kept_tokens
        st.new, st.sent = [_pair(m) for m in planned.new_messages], False
        sizes = [*session._sizes, *planned.new_sizes]
        matched = st.held_tokens
        local = self._local(st, st.new, sizes)
        if local is not None and round(local * session._scale) > matched:
            matched = round(local * session._scale)
        matched = min(matched, planned.context_tokens - 1)
        return matched // BLOCK * BLOCK if matched > 0 else 0

    def _register(self, prefix: Seq, role: str, text: str) -> None:
        self.heads.add((prefix, role))
        if text:
            self.texts.setdefault((prefix, role), set()).add(text)

    def computed(self, session: Session) -> None:
        st = self.states[id(session)]
        seq = st.hist + st.new
        for j, (role, text) in enumerate(seq):
            self.full.add(tuple(seq[: j + 1]))
            self._register(tuple(seq[:j]), role, text)
        self.heads.add((tuple(seq), "assistant"))
        st.sent = True
        if len(st.hist) > st.held or st.held_reply:
            st.held, st.held_reply = len(st.hist), False
            st.held_tokens = max(st.held_tokens, round(session._size * session._scale))

    def answered(self, session: Session, held_tokens: int, generated: bool) -> None:
        st = self.states[id(session)]
        role, text = _pair(session.history[-1])
        st.hist += [*st.new, (role, text)]
        if not st.sent:
            return
        st.sent = False
        prompt = len(st.hist) - 1
        if prompt > st.held or (generated and not st.held_reply):
            st.held, st.held_reply, st.held_tokens = prompt, generated, held_tokens
        if generated and text:  # held but for its end marker
            self._register(tuple(st.hist[:-1]), role, text)


class _Play:
    """Sessions of one worker played in a random order, each request checked."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bases = [
            " ".join(self.rng.choices(WORDS, k=self.rng.choice((5, 20, 21, 40, 90, 130))))
            for _ in range(6)
        ]
        self.replies = [self.rng.choice(self.bases) for _ in range(3)]
        self.replies += [" ".join(self.rng.choices(TAIL, k=30)) for _ in range(3)]
        self.systems = [None, self.rng.choice(self.bases), " ".join(["sys"] * 100), "brief"]
        self.registry = BlockRegistry(BLOCK, 64)
        self.reference = Reference()
        self.live: list[list[Session | int]] = []
        self.made = 0
        self.checked = 0
        self.crossed = 0
        """Requests whose ideal passed their session's own held tokens."""

    def _text(self) -> str:
        r = self.rng.random()
        if r < 0.2:
            return self.rng.choice(self.bases)
        tail = " ".join(self.rng.choices(TAIL, k=self.rng.randint(0, 60)))
        return f"{self.rng.choice(self.bases)} {tail}" if r < 0.7 else tail or "x"

    def _turns(self) -> list[Turn]:
        rng, turns = self.rng, []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.35:
                turns.append(Turn(input_tokens=rng.randint(5, 200), max_tokens=20))
            elif r < 0.5:
                call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
                asked = {"role": "assistant", "content": "", "tool_calls": [call]}
                asking = ({"role": "user", "content": self._text()},)
                turns.append(Turn(messages=asking, reply=asked))
                tool = {"role": "tool", "tool_call_id": "t1", "content": self._text()}
                turns.append(Turn(messages=(tool,)))
            else:
                roles = ("user", "user", "system")
                msgs = tuple(
                    {"role": rng.choice(roles), "content": self._text()}
                    for _ in range(rng.randint(1, 3))
                )
                rec = {"role": "assistant", "content": rng.choice(self.replies)}
                if rng.random() >= 0.3:
                    rec = None
                turns.append(Turn(messages=msgs, reply=rec, compact=rng.random() < 0.05))
        return turns

    def _add(self, session: Session) -> None:
        self.reference.start(session)
        self.live.append([session, 0])
        self.made += 1

    def _new(self) -> None:
        rng = self.rng
        conv = Conversation(f"c{self.made}", tuple(self._turns()), system=rng.choice(self.systems))
        history = rng.choice(("live", "live", "dataset"))
        session = Session(
            f"s{self.made}", conv, SessionConfig(history=history, context_policy="truncate"),
            max_context_tokens=rng.choice((None, None, 600, 1500)),
            rng=random.Random(self.made), salt=rng.choice((None, "r0badcafe")),
            registry=self.registry,
        )  # fmt: skip
        self._add(session)

    def step(self) -> None:
        rng = self.rng
        if not self.live or rng.random() < 0.08:
            self._new()
            return
        k = rng.randrange(len(self.live))
        session, turn = self.live[k]
        assert isinstance(session, Session) and isinstance(turn, int)
        if turn and rng.random() < 0.05:  # a fork of the history as it stands
            fork = Conversation(f"f{self.made}", (Turn(input_tokens=30),))
            self._add(session.fork(f"f{self.made}", fork, random.Random(self.made)))
        planned = session.build(turn) if turn < len(session.turns) else None
        if planned is None:
            self.live.pop(k)
            return
        for _ in range(3):  # a retry sends the same prompt again
            held = self.reference.states[id(session)].held_tokens
            want = self.reference.sent(session, planned)
            assert session.sent(planned) == want, (session.session_id, turn, self.checked)
            self.checked += 1
            self.crossed += want > held
            if rng.random() < 0.1:
                continue  # failed before its first token
            session.computed()
            self.reference.computed(session)
            if rng.random() < 0.9:
                break
        else:
            return
        self._answer(session, planned)
        self.live[k][1] = turn + 1

    def _answer(self, session: Session, planned: PlannedRequest) -> None:
        rng = self.rng
        n = rng.randint(1, 40)
        text = rng.choice(self.replies) if rng.random() < 0.5 else " ".join(rng.choices(TAIL, k=n))
        prompt_tokens = rng.choice((planned.context_tokens, planned.context_tokens + 3, None))
        completion = rng.choice((n, None))
        recorded = session.turns[planned.turn_index].reply
        generated = not (
            recorded is not None
            and (session.cfg.history == "dataset" or bool(recorded.get("tool_calls")))
        )
        scale = session._scale
        session.accept(planned, Reply(text_parts=[text]), prompt_tokens, completion)
        held = prompt_tokens or planned.context_tokens
        if generated:
            held += completion or round(session._sizes[-1] * scale)
        self.reference.answered(session, held, generated)


def test_every_ideal_is_the_reference_s() -> None:
    """Hundreds of requests of interleaved sessions, each figure the reference's exactly; and
    the play reaches what matters (prefixes from other sessions, matches inside a message)."""
    checked = crossed = 0
    for seed in range(6):
        play = _Play(seed)
        while play.checked < 300:
            play.step()
        checked += play.checked
        crossed += play.crossed
    assert checked >= 1800
    assert crossed >= checked // 10
