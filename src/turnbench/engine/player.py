"""Plays one session turn by turn: one request in flight, think time, failure policy.

Why here and not in `session.py`: the session holds state and builds requests; the player owns
time (sleeping until a turn is due), the in-flight cap, the transport and the recorder.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from turnbench.cache.registry import BlockRegistry
from turnbench.client import attempt as ak
from turnbench.client.apis import Api, RequestView
from turnbench.client.attempt import Attempt
from turnbench.client.transport import Transport
from turnbench.config import RunConfig
from turnbench.engine.live_latency import LiveLatency
from turnbench.engine.outage import OutageGuard, unreachable
from turnbench.engine.tree import Children
from turnbench.pacing.clock import RunClock
from turnbench.pacing.gates import Gate
from turnbench.pacing.stages import Timeline
from turnbench.record.schema import SessionRecord
from turnbench.session import PlannedRequest, Session
from turnbench.tokens.sizer import TextSizer
from turnbench.workload.conversation import Child

NS = 1_000_000_000


class Recorder(Protocol):
    """What the player needs of a recorder: `record(row)`."""

    def record(self, row: Any) -> None:
        """Queue one row for events.db."""
        ...


@dataclass
class LiveStats:
    """Counters for the live progress display; updated on the hot path, read at 4 Hz."""

    sessions_active: int = 0
    sessions_done: int = 0
    requests_started: int = 0
    requests_ok: int = 0
    requests_failed: int = 0
    output_tokens: int = 0
    target_gone: int = 0
    """1 once a worker gave up waiting for an unreachable target (summed: how many did)."""
    errors: dict[str, int] = field(default_factory=dict)
    ttft: LiveLatency = field(default_factory=LiveLatency)
    """TTFTs of the successes since the progress line (or the batch) last took them."""


@dataclass
class RunContext:
    """Everything the sessions of one worker share."""

    cfg: RunConfig
    model: str
    transport: Transport
    api: Api
    recorder: Recorder
    clock: RunClock
    in_flight: Gate
    worker: int = 0
    auth_headers: dict[str, str] = field(default_factory=dict)
    sizer: TextSizer = field(default_factory=TextSizer)
    """Writes synthetic user turns to length for the server's tokenizer."""
    salt: str | None = None
    """The run's salt word, put at the start of every conversation (None: none)."""
    registry: BlockRegistry | None = None
    """The blocks this worker's requests sent or generated (None: no ideal is counted)."""
    stats: LiveStats = field(default_factory=LiveStats)
    stopping: bool = False
    """Set at the end (duration, request limit, interrupt): no session starts a new turn
    unless the end policy is `drain`."""
    stopped_at_ns: int | None = None
    """When the run ended (run ns): a session handed over early but due later never starts."""
    drained: bool = False
    """Set when even draining sessions must stop starting turns (request limit reached, or
    the target given up for unreachable)."""
    outage: OutageGuard | None = None
    """Waits out an unreachable target (None: every failed attempt is a failed turn)."""

    @cached_property
    def _timeline(self) -> Timeline:
        return Timeline(self.cfg)

    def stage(self, t_ns: int) -> str:
        """`warmup` for work intended before the warm-up ends, else the stage in force
        (`main` in a run with no stages)."""
        return self._timeline.at(t_ns)

    def cut_at(self, t_ns: int) -> int | None:
        """When a session started at `t_ns` is cut with its stage (None: never)."""
        return self._timeline.cut_at(t_ns)

    def may_send(self) -> bool:
        """Whether a session may go on to another turn (the end policy allows it)."""
        return not self.drained and (not self.stopping or self.cfg.load.end == "drain")

    def claim_request(self) -> bool:
        """Take one request from the `max_requests` budget, right before it is sent.

        Why at send time: a session checked earlier may have slept through its think time
        while others used the budget up; claiming and counting in one step (no await in
        between) keeps the total exact.
        """
        if not self.may_send():
            return False
        limit = self.cfg.load.max_requests
        if limit is not None and self.stats.requests_started >= limit:
            self.drained = True
            self.stopping = True
            return False
        self.stats.requests_started += 1
        return True


def _headers(
    ctx: RunContext, session: Session, turn_number: int, token: str | None
) -> dict[str, str]:
    """The routing headers of one request; `token`: the router's session token, if any."""
    scfg = ctx.cfg.session
    headers = {
        **ctx.auth_headers,
        scfg.session_header_name: session.session_id,
        scfg.conversation_header: session.conversation.id,
        scfg.turn_header: str(turn_number),
    }
    name = scfg.session_token_header
    if token is not None and name is not None:
        # the token replaces a header of the same name: AIBrix issues `x-session-id`, which
        # may well be the session header too
        lowered = name.lower()
        headers = {k: v for k, v in headers.items() if k.lower() != lowered}
        headers[name] = token
    return headers


def _body(ctx: RunContext, session: Session, planned: PlannedRequest) -> dict[str, Any]:
    """The turn's body in the run's API; the run's options as OpenAI fields (the API maps)."""
    scfg = ctx.cfg.session
    extra: dict[str, Any] = {}
    if scfg.ignore_eos:
        extra["ignore_eos"] = True
    if scfg.id_in_body == "user":
        extra["user"] = session.session_id
    elif scfg.id_in_body == "metadata":
        extra["metadata"] = {
            "session_id": session.session_id,
            "turn": str(planned.turn_index + 1),
        }
    tools = session.conversation.tools
    view = RequestView(
        model=ctx.model,
        messages=planned.messages,
        new_messages=planned.new_messages,
        max_tokens=planned.max_tokens,
        tools=list(tools) if tools else None,
        extra=extra,
        previous_id=session.previous_id,
    )
    return ctx.api.request(view)


def _backoff_s(
    ctx: RunContext, attempt: int, retry_after: float | None, rng: random.Random
) -> float:
    r = ctx.cfg.session.retry
    base = r.backoff_s * 2 ** (attempt - 1) * (1 + rng.uniform(-r.jitter, r.jitter))
    return max(min(r.max_backoff_s, base), retry_after or 0.0)


async def _play_turn(
    ctx: RunContext,
    session: Session,
    planned: PlannedRequest,
    t_intended: int,
    rec: SessionRecord,
    held_ns: int,
    token: str | None,
    tool_wait_ns: int = 0,
) -> tuple[bool | None, int, str | None]:
    """Send a turn (with retries under the `retry` policy); return (ok, end time in ns, the
    router's session token as it now stands).

    An attempt that never reached the target (`outage.unreachable`) is not a try of the
    policy: the turn waits for the target (`ctx.outage`) and is sent again, and fails only
    when the wait passes `session.outage.max_wait_s`.

    ok is None when the run's end or its request limit stopped the turn before it was sent.
    `held_ns` is time a cap already held this turn back (the session cap, for a first turn).
    `token`: the latest session token a response of this session carried
    (`session.session_token_header`); a newer one replaces it, for a retry too.
    `tool_wait_ns`: the tool latency the turn waited for, recorded on its first attempt.
    """
    scfg = ctx.cfg.session
    attempts = scfg.retry.max_attempts if scfg.on_failure == "retry" else 1
    turn_number = planned.turn_index + 1
    headers = _headers(ctx, session, turn_number, token)
    body = _body(ctx, session, planned)
    stats = ctx.stats
    guard = ctx.outage
    end = t_intended
    number = 0  # attempts sent for this turn (the rows' `attempt`)
    tries = 0  # of them, those the retry policy counts: the ones that reached the target
    unreached = 0  # of them, those that did not reach it (in a row)
    since = 0  # when this turn first failed to reach the target
    while True:
        await ctx.clock.sleep_until(t_intended)
        if guard is not None and guard.open:  # wait behind the breaker's probe, not in a loop
            waited_from = ctx.clock()
            if not await guard.wait(0, waited_from, session.rng):
                return False, ctx.clock(), token
            t_intended = max(t_intended, ctx.clock())
        if not ctx.claim_request():
            return None, end, token
        number += 1
        att = Attempt(
            stage=ctx.stage(t_intended),
            worker=ctx.worker,
            session_id=session.session_id,
            conversation_id=session.conversation.id,
            turn_index=turn_number,
            attempt=number,
            t_intended_ns=t_intended,
            context_messages=len(planned.messages),
            dropped_messages=planned.dropped_messages,
            task_id=session.task_id,
            parent_session_id=session.parent_id,
            depth=session.depth,
            branch=session.branch,
            tool_wait_ns=tool_wait_ns if number == 1 else 0,
        )
        att.gate_wait_ns = held_ns + await ctx.in_flight.acquire()
        held_ns = 0
        rec.attempts += 1
        att.ideal_cached_tokens = session.sent(planned)
        try:
            reply = await ctx.transport.send(ctx.api, body, headers, att, session.computed)
            if att.token_source == "chunks":  # no usage from the server: count locally if we can
                counted = ctx.sizer.count_tokens(reply.text)
                if counted is not None:
                    att.completion_tokens = counted
                    att.token_source = "tokenizer"
        finally:
            ctx.in_flight.release()
            ctx.recorder.record(att)
            if att.status == ak.STATUS_OK:
                stats.requests_ok += 1
                stats.output_tokens += att.completion_tokens or 0
                if att.t_first_token_ns is not None:
                    stats.ttft.record(att.t_first_token_ns - att.t_sent_ns)
            else:
                stats.requests_failed += 1
                kind = att.error_kind or "unknown"
                stats.errors[kind] = stats.errors.get(kind, 0) + 1
        end = att.t_end_ns
        if reply.captured and reply.captured != token:
            token = reply.captured
            headers = _headers(ctx, session, turn_number, token)
        if guard is not None and unreachable(att):
            # the target was not reached: not a failed turn but a wait for the target
            guard.failed(att)
            unreached += 1
            since = since or att.t_sent_ns
            if await guard.wait(unreached, since, session.rng):
                t_intended = ctx.clock()
                continue
            return False, end, token
        unreached = 0
        if guard is not None and att.http_status is not None:
            guard.succeeded()
        if att.status == ak.STATUS_OK:
            session.accept(planned, reply, att.prompt_tokens, att.completion_tokens)
            session.previous_id = reply.response_id
            return True, end, token
        tries += 1
        if tries >= attempts:
            return False, end, token
        t_intended = end + int(_backoff_s(ctx, tries, reply.retry_after_s, session.rng) * NS)


async def play_session(
    ctx: RunContext,
    session: Session,
    t_intended_ns: int,
    gate_wait_ns: int = 0,
    *,
    child: Child | None = None,
    cut_ns: int | None = None,
) -> SessionRecord | None:
    """Play every turn of `session` from its due time, and its children (sub-agents, forks)
    as its plan places them; a session that started leaves a `sessions` row, even when
    cancelled, written once its children have ended too.

    A turn is due its wait (think or tool time) after the last thing it depends on ended: the
    previous reply, and the children it joins; never before its recorded offset (`at_s`).
    `child`: the plan's placement of this session under its parent (None for a root, whose
    stage cut, `cut_ns`, is its own and passes to its children).

    None: the session was handed over ahead of time and the run ended (or was cut) before
    it was due, so it never started.
    """
    await ctx.clock.sleep_until(t_intended_ns)
    if ctx.stopped_at_ns is not None and t_intended_ns >= ctx.stopped_at_ns:
        return None
    root = child is None
    rec = SessionRecord(
        session_id=session.session_id,
        conversation_id=session.conversation.id,
        worker=ctx.worker,
        stage=ctx.stage(t_intended_ns),
        t_intended_ns=t_intended_ns,
        t_start_ns=ctx.clock(),
        t_end_ns=0,
        gate_wait_ns=gate_wait_ns,
        turns_planned=len(session.turns),
        turns_ok=0,
        turns_failed=0,
        attempts=0,
        dropped_messages=0,
        outcome="unfinished",
        task_id=session.task_id,
        parent_session_id=session.parent_id,
        depth=session.depth,
        branch=session.branch,
        kind=session.kind,
        after_turn=None if child is None else child.after_turn + 1,
        join_turn=None if child is None or child.join_turn is None else child.join_turn + 1,
        children=0,
    )
    if root:
        ctx.stats.sessions_active += 1
        cut_ns = ctx.cut_at(t_intended_ns)
    scfg = ctx.cfg.session
    t_ready = t_intended_ns  # when the last thing the next turn depends on ended
    token: str | None = None
    children = Children(ctx, session, t_intended_ns, cut_ns, play_session)
    try:
        outcome = "completed"
        children.start_after(-1, t_ready)
        for index in range(len(session.turns)):
            t_next, tool_ns = t_ready, 0
            if index:
                if children.joins(index):
                    t_next = max(t_ready, await children.join(index))
                wait_s, tool = session.wait_s(index)
                wait_ns = int(wait_s * NS)
                t_next += wait_ns
                tool_ns = wait_ns if tool else 0
            at_s = session.turns[index].at_s
            if at_s is not None:
                t_next = max(t_next, t_intended_ns + int(at_s * NS))
            if cut_ns is not None and t_next >= cut_ns:  # due after its stage's cut
                await ctx.clock.sleep_until(cut_ns)
                outcome = "unfinished"
                break
            if not ctx.may_send():
                outcome = "unfinished"
                break
            await ctx.clock.sleep_until(t_next)
            planned = session.build(index)
            if planned is None:
                outcome = "context_full"
                break
            held = gate_wait_ns if index == 0 else 0
            ok, t_ready, token = await _play_turn(
                ctx, session, planned, t_next, rec, held, token, tool_ns
            )
            if ok is None:
                outcome = "unfinished"
                break
            rec.tool_wait_ns += tool_ns
            children.start_after(index, t_ready)
            if ok:
                rec.turns_ok += 1
                continue
            rec.turns_failed += 1
            aborting = scfg.on_failure == "abort" or (
                scfg.on_failure == "retry" and scfg.retry.then == "abort"
            )
            if aborting:
                outcome = "aborted"
                break
            if ctx.drained:
                outcome = "unfinished"
                break
        rec.outcome = outcome
        await children.finish()
        return rec
    except asyncio.CancelledError:
        rec.outcome = "unfinished"
        await children.cancel()
        raise
    finally:
        rec.t_end_ns = ctx.clock()
        rec.dropped_messages = session.dropped_messages
        rec.children = len(children.tasks)
        ctx.recorder.record(rec)
        if root:
            ctx.stats.sessions_active -= 1
            ctx.stats.sessions_done += 1
