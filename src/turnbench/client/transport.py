"""The transport: streams a request over a pooled HTTP/1.1 connection and keeps its time.

Why this shape: a read is parsed where it arrives (`h1.Connection.data_received` hands it to
this request's `_Stream`): one timestamp, one SSE split and one msgspec decode per read (the
API module's `read`), and no coroutine switch until the reply is complete. The transport
knows no API: the body, the events, the end of stream, the usage and the error bodies are the
API module's (`client/apis/`). One watchdog timer per request enforces the
first-token, idle and total timeouts, each its own error kind, and never fires early. Every
outcome ends as fields of an `Attempt`, never as an exception: a server fault is data.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable
from typing import Any

import msgspec

from turnbench.client import attempt as ak
from turnbench.client.apis.base import Api, Malformed, Reply, StreamError
from turnbench.client.attempt import Attempt
from turnbench.client.h1 import Connection, Pool, request_head
from turnbench.client.sse import SSEParser, payloads
from turnbench.config import Timeouts

_ERROR_BODY_LIMIT = 2000
_RECONNECTS = 2
_ERROR_BODY_CAP = 65536
_CONTEXT_WORDS = ("maximum context length", "context length", "exceed_context_size", "too long")
_JOIN_BELOW = 65536
"""A body under this many bytes goes out joined to its head (one buffer, one write); a longer
one (an agent's long context) is written beside it, not copied (`h1.Connection.begin`)."""
_READ_LENGTHS = frozenset((len(b"transfer-encoding"), len(b"retry-after")))
"""Lengths of the response headers every exchange reads (see `h1.Exchange.header_lengths`)."""


def _http_error_kind(status: int, message: str) -> str:
    if status == 429:
        return ak.RATE_LIMITED
    if status >= 500:
        return ak.HTTP_5XX
    lowered = message.lower()
    if status in (400, 413) and any(w in lowered for w in _CONTEXT_WORDS):
        return ak.CONTEXT_OVERFLOW
    return ak.HTTP_4XX


def _fail(att: Attempt, kind: str, message: str) -> None:
    att.status = ak.STATUS_ERROR
    att.error_kind = kind
    att.error_message = message[:_ERROR_BODY_LIMIT]


# What a finished exchange leaves its connection fit for.
_KEEP = "keep"  # the response completed: the connection may serve the next request
_CLOSE = "close"  # cut or broken: close it
_STALE = "stale"  # closed by the server before any byte of a response: send again, fresh


class _Stream:
    """One request's receiving side: SSE events into the reply, times into the attempt."""

    __slots__ = (
        "api",
        "att",
        "capture",
        "chunked",
        "chunks",
        "clock",
        "done",
        "error_body",
        "first_deadline",
        "gaps",
        "header_lengths",
        "idle_ns",
        "last",
        "loop",
        "on_first",
        "parser",
        "replica",
        "reply",
        "status",
        "timeouts",
        "total_deadline",
        "watchdog",
    )

    def __init__(
        self,
        api: Api,
        att: Attempt,
        clock: Callable[[], int],
        timeouts: Timeouts,
        limits_ns: tuple[int, int, int],
        capture: bytes | None,
        replica: bytes | None,
        lengths: frozenset[int],
    ) -> None:
        """`limits_ns`: the timeouts' (total, first token, idle) in ns, worked out once;
        `capture`: a lower-cased response header name whose value goes to `reply.captured`;
        `replica`: the lower-cased header naming the serving replica, for `att.replica`;
        `lengths`: the name lengths of every header read (see `h1.Exchange.header_lengths`)."""
        self.api = api
        self.att = att
        self.clock = clock
        self.timeouts = timeouts
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[str] = self.loop.create_future()
        self.reply = Reply()
        self.parser = SSEParser()
        self.gaps = array("q")
        self.chunks = 0
        self.last = 0
        self.status = 0
        self.chunked = False
        self.error_body = bytearray()
        self.capture = capture
        self.replica = replica
        self.header_lengths = lengths
        self.on_first: Callable[[], None] | None = None
        """Called when the first content chunk arrives (the server computed the prompt)."""
        # Deadlines on the run's clock (ns), the clock `t_sent` and the chunk times use:
        # the loop's own time is whole milliseconds under uvloop, and a deadline kept in it
        # could pass up to 1 ms before its limit.
        t0 = clock()
        total_ns, first_ns, self.idle_ns = limits_ns
        self.total_deadline = t0 + total_ns
        self.first_deadline = min(self.total_deadline, t0 + first_ns)
        # One timer for every deadline: the first check comes when the earliest of them
        # could pass (an idle gap cannot end before `idle_s` after the send), and `_check`
        # re-arms for the next. The first token then needs no new timer.
        self.watchdog = self._arm(t0, min(self.first_deadline, t0 + self.idle_ns))

    def _arm(self, now: int, at: int) -> asyncio.TimerHandle:
        """Run `_check` at `at` (run ns) or up to 1 ms after it, never before: the delay is
        rounded up to whole milliseconds, which is what the loop's timers count."""
        return self.loop.call_later(-(-(at - now) // 1_000_000) / 1000, self._check)

    def _finish(self, outcome: str) -> None:
        self.watchdog.cancel()
        if not self.done.done():
            self.done.set_result(outcome)

    def fail(self, kind: str, message: str) -> None:
        """End the exchange as an error; the connection is closed."""
        if not self.done.done():
            _fail(self.att, kind, message)
            self._finish(_CLOSE)

    def _check(self) -> None:
        """The watchdog: fail on a passed deadline, else re-arm for the next one (a timer
        that fired a little early only re-arms)."""
        if self.done.done():
            return
        now = self.clock()
        to = self.timeouts
        idle_ns = self.idle_ns
        if now >= self.total_deadline:
            self.fail(ak.TIMEOUT, f"no complete reply within {to.total_s} s")
        elif self.chunks == 0:
            if now >= self.first_deadline:
                self.fail(ak.FIRST_TOKEN_TIMEOUT, f"no first token within {to.first_token_s} s")
            else:
                self.watchdog = self._arm(now, min(self.first_deadline, now + idle_ns))
        elif now - self.last >= idle_ns:  # idle: measured from the last content chunk
            self.fail(ak.IDLE_TIMEOUT, f"no chunk for {to.idle_s} s")
        else:
            self.watchdog = self._arm(now, min(self.total_deadline, self.last + idle_ns))

    # h1.Exchange
    def on_status(self, status: int) -> None:
        self.status = status
        self.att.http_status = status

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif lowered == b"retry-after":
            self.reply.retry_after_s = _retry_after(value)
        else:  # not `elif`: the replica header and the session token may be one header
            if lowered == self.replica:
                self.att.replica = value.decode("latin-1")
            if lowered == self.capture:
                self.reply.captured = value.decode("latin-1")

    def on_body(self, data: bytes) -> None:
        if self.done.done():
            return
        if self.status >= 400:
            if len(self.error_body) < _ERROR_BODY_CAP:
                self.error_body += data
            return
        events = self.parser.feed(data)
        if events:
            self._events(events, self.clock())

    def _events(self, events: bytes, now: int) -> None:
        """Fold the events one read completed into the reply; they all arrived at `now`."""
        try:
            got = self.api.read(events, self.reply)
        except StreamError as e:
            self.fail(ak.HTTP_5XX, f"error event: {e.message}")
            return
        except Malformed as e:
            self.fail(ak.MALFORMED, str(e))
            return
        if not got:
            return
        if self.chunks:
            self.gaps.append(now - self.last)
        else:
            self.att.t_first_token_ns = now
            if self.on_first is not None:
                self.on_first()
        if got > 1:  # the rest of this read's chunks came with it: gaps of zero
            self.gaps.frombytes(bytes(8 * (got - 1)))
        self.last = now
        self.chunks += got

    def on_complete(self) -> None:
        if self.done.done():
            return
        if self.status >= 400:
            text = self.api.error(self.error_body.decode(errors="replace"))
            _fail(self.att, _http_error_kind(self.status, text), text)
            self._finish(_KEEP)
            return
        # an event cut off by the end of the body is not dispatched (the SSE rule), but a
        # `[DONE]` without its blank line still says the reply was whole
        if b"[DONE]" in payloads(self.parser.close()):
            self.reply.ended = True
        if not self.reply.ended:
            _fail(self.att, ak.TRUNCATED, f"stream ended without {self.api.end_event}")
        self._finish(_KEEP)

    def on_lost(self, exc: Exception | None, started: bool) -> None:
        if self.done.done():
            return
        if not started:
            self._finish(_STALE)
        elif exc is None and not self.chunked and self.status and self.status < 400:
            self.on_complete()  # a body delimited by the end of the connection
        else:
            why = f"{type(exc).__name__}: {exc}" if exc else "connection closed mid-response"
            self.fail(ak.RESET, why)


class Transport:
    """Sends streamed requests to one base URL over a shared connection pool, for any API."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeouts: Timeouts,
        clock: Callable[[], int],
        verify_tls: bool = True,
        ca_pem: str | None = None,
        replica_header: str | None = None,
        token_header: str | None = None,
    ) -> None:
        """`replica_header`: the response header naming the replica that served a request
        (`target.replica_header`), recorded in each attempt's `replica`; `token_header`: the
        one carrying a router's session token (`session.session_token_header`), kept in
        `reply.captured`. None reads neither."""
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            **headers,
        }
        self._timeouts = timeouts
        self._limits_ns = (
            int(timeouts.total_s * 1e9),
            int(timeouts.first_token_s * 1e9),
            int(timeouts.idle_s * 1e9),
        )
        self._clock = clock
        self._replica = replica_header.lower().encode("latin-1") if replica_header else None
        self._token = token_header.lower().encode("latin-1") if token_header else None
        # worked out once: the extra headers are run-wide, read on every request of the run
        self._lengths = _READ_LENGTHS | {len(h) for h in (self._replica, self._token) if h}
        self._pool = Pool(
            self.base_url, verify_tls=verify_tls, connect_s=timeouts.connect_s, ca_pem=ca_pem
        )

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._pool.close()

    async def send(
        self,
        api: Api,
        body: dict[str, Any],
        headers: dict[str, str],
        att: Attempt,
        first_token: Callable[[], None] | None = None,
    ) -> Reply:
        """Stream one request; fill `att` with its times, tokens and outcome; return the reply
        (with the router's session token in `captured`, when the run reads one).
        `first_token` is called when the first content chunk arrives.

        Timeouts are distinct: `first_token_s` until the first output chunk, then `idle_s`
        between chunks, all under `total_s`. A pooled connection that the server closed
        before answering anything is replaced by a fresh one (at most twice, counted in
        `reconnects`): such a request never reached the server. A cancelled task marks the
        attempt `cancelled` and re-raises.
        """
        pool = self._pool
        payload = msgspec.json.encode(body)
        request = request_head(
            "POST", pool.prefix + api.path, pool.host_header, {**self._headers, **headers},
            len(payload),
        )  # fmt: skip
        if len(payload) < _JOIN_BELOW:  # one buffer: the cheapest write
            request, payload = request + payload, b""
        att.t_sent_ns = self._clock()
        stream: _Stream | None = None
        try:
            for tries in range(_RECONNECTS + 1):
                try:
                    conn = await pool.acquire(fresh=tries > 0)
                except TimeoutError:
                    limit = self._timeouts.connect_s
                    _fail(att, ak.CONNECT_ERROR, f"no connection within {limit} s")
                    break
                except OSError as e:
                    _fail(att, ak.CONNECT_ERROR, f"{type(e).__name__}: {e}")
                    break
                stream = _Stream(
                    api,
                    att,
                    self._clock,
                    self._timeouts,
                    self._limits_ns,
                    self._token,
                    self._replica,
                    self._lengths,
                )
                stream.on_first = first_token
                outcome = await self._exchange(conn, stream, request, payload)
                if outcome == _KEEP:
                    pool.release(conn)
                    break
                conn.close()
                if outcome == _STALE:
                    if conn.reused and tries < _RECONNECTS:
                        att.reconnects += 1
                        continue
                    _fail(att, ak.CONNECT_ERROR, "the server closed the connection unanswered")
                break
        except asyncio.CancelledError:
            att.status = ak.STATUS_CANCELLED
            att.error_kind = ak.CANCELLED
            att.error_message = "cancelled by the run's end or an interrupt"
            raise
        finally:
            att.t_end_ns = self._clock()
            if stream is not None and stream.chunks:
                att.t_last_token_ns = stream.last
                att.chunk_gaps = stream.gaps.tobytes()
            att.content_chunks = stream.chunks if stream is not None else 0
        reply = Reply() if stream is None else stream.reply
        att.finish_reason = reply.finish_reason
        if api.usage(reply, att):
            att.token_source = "usage"
        elif att.content_chunks:
            att.completion_tokens = att.content_chunks
            att.token_source = "chunks"
        return reply

    async def _exchange(
        self, conn: Connection, stream: _Stream, request: bytes, body: bytes
    ) -> str:
        """Run one exchange on a connection; a cancelled task cuts the connection."""
        conn.begin(stream, request, body)
        try:
            return await stream.done
        except asyncio.CancelledError:
            stream.watchdog.cancel()
            conn.close()
            raise


def _retry_after(value: bytes | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
