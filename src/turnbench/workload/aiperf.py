"""AIPerf `multi_turn` sessions: `{"session_id", "turns": [{"text", "delay"?, ...}]}`.

Why user turns only: AIPerf's format holds no replies; the live server answers each turn, and
`delay` (ms) is the user's think time before the turn. A leading `role: system` turn becomes
the system prompt; `output_length` becomes the turn's max_tokens; a first turn's `timestamp`
(ms) becomes the session's arrival offset. Media fields are not sent and are counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from turnbench.workload.conversation import Conversation, Turn
from turnbench.workload.records import Record, field, non_negative
from turnbench.workload.report import LoadReport

MEDIA = ("image", "images", "audio", "audios", "video", "videos")


def _text(rec: Record, turn: object, where: str) -> str:
    text = field(rec, turn, "text", str, where, required=False)
    if text is not None:
        return text
    texts = field(rec, turn, "texts", list, where, required=False)
    if texts is None:
        raise rec.error("a turn needs 'text' (or 'texts')", f"{where}.text")
    if not all(isinstance(t, str) for t in texts):
        raise rec.error("expected a list of strings", f"{where}.texts")
    return "\n".join(texts)


def load_aiperf(records: Sequence[Record], report: LoadReport) -> list[Conversation]:
    """Plan every AIPerf session; every turn is one request with no recorded reply."""
    out: list[Conversation] = []
    for rec in records:
        sid = field(rec, rec.value, "session_id", (str, int), "")
        raw_turns = field(rec, rec.value, "turns", list, "")
        system: str | None = None
        start_s: float | None = None
        turns: list[Turn] = []
        for i, raw in enumerate(raw_turns):
            where = f"turns[{i}]"
            role = field(rec, raw, "role", str, where, required=False) or "user"
            text = _text(rec, raw, where)
            if role == "system" and i == 0:
                system = text
                continue
            if role != "user":
                raise rec.error(
                    f"expected role 'user' (or 'system' first), got {role!r}", f"{where}.role"
                )
            delay = non_negative(
                rec, field(rec, raw, "delay", float, where, required=False), f"{where}.delay"
            )
            ts = non_negative(
                rec,
                field(rec, raw, "timestamp", float, where, required=False),
                f"{where}.timestamp",
            )
            if ts is not None and not turns:
                start_s = ts / 1000
            out_len = field(rec, raw, "output_length", int, where, required=False)
            if out_len is not None and out_len < 1:
                raise rec.error("must be >= 1", f"{where}.output_length")
            report.drop("media fields not sent", sum(1 for k in MEDIA if raw.get(k)))
            turns.append(
                Turn(
                    messages=({"role": "user", "content": text},),
                    max_tokens=out_len,
                    think_time_s=None if delay is None else delay / 1000,
                )
            )
        if not turns:
            raise rec.error("a session needs at least one user turn", "turns")
        out.append(Conversation(id=str(sid), turns=tuple(turns), system=system, start_s=start_s))
    return out
