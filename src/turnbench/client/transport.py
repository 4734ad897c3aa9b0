"""The transport: one pooled aiohttp session that streams a reply and keeps its time.

Why this shape: the hot path per chunk is one timestamp, one SSE split and one msgspec decode;
everything else (JSON of the body, error text) happens once per request. Every outcome ends as
fields of an `Attempt`, never as an exception: a server fault is data, not a crash.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from turnbench.client import attempt as ak
from turnbench.client.adapters import Adapter, Reply, decode_chunk
from turnbench.client.attempt import Attempt
from turnbench.client.sse import SSEParser
from turnbench.config import Timeouts

_ERROR_BODY_LIMIT = 2000
_RECONNECTS = 2
_IDLE_SLACK_S = 0.1
"""An idle timeout fires between idle_s and idle_s + this after the last chunk."""
_CONTEXT_WORDS = ("maximum context length", "context length", "exceed_context_size", "too long")


def _error_text(body: str) -> str:
    """The `message` of an OpenAI-style error body, else the start of the body."""
    try:
        data = msgspec.json.decode(body)
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])[:_ERROR_BODY_LIMIT]
            if isinstance(data.get("message"), str):
                return str(data["message"])[:_ERROR_BODY_LIMIT]
    except msgspec.DecodeError:
        pass
    return body[:_ERROR_BODY_LIMIT]


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


class Transport:
    """Sends streamed requests to one base URL over a shared connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeouts: Timeouts,
        clock: Callable[[], int],
        verify_tls: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **headers}
        self._timeouts = timeouts
        self._clock = clock
        self._verify = verify_tls
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(limit=0, ssl=self._verify)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeouts.connect_s, connect=self._timeouts.connect_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            read_bufsize=1 << 18,
            headers=self._headers,
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        adapter: Adapter,
        body: dict[str, Any],
        headers: dict[str, str],
        att: Attempt,
    ) -> Reply:
        """Stream one request; fill `att` with its times, tokens and outcome; return the reply.

        Timeouts are distinct: `first_token_s` until the first output chunk, then `idle_s`
        between chunks, all under `total_s`. A cancelled task marks the attempt `cancelled`
        and re-raises.
        """
        assert self._session is not None, "use Transport as an async context manager"
        reply = Reply()
        payload = msgspec.json.encode(body)
        clock = self._clock
        loop = asyncio.get_running_loop()
        to = self._timeouts
        t_start = loop.time()
        total_deadline = t_start + to.total_s
        gaps = array("q")
        last = 0
        chunks = 0
        done = False
        got_response = False
        att.t_sent_ns = clock()
        try:
            deadline = min(total_deadline, t_start + to.first_token_s)
            slack = min(_IDLE_SLACK_S, to.idle_s / 10)
            idle_armed = False  # the first output chunk always moves the deadline to idle_s
            async with asyncio.timeout_at(deadline) as cm:
                resp = await self._open(self.base_url + adapter.path, payload, headers, att)
                async with resp:
                    got_response = True
                    att.http_status = resp.status
                    if resp.status >= 400:
                        text = _error_text(await resp.text(errors="replace"))
                        if resp.status == 429:
                            reply.retry_after_s = _retry_after(resp.headers.get("Retry-After"))
                        _fail(att, _http_error_kind(resp.status, text), text)
                        att.t_end_ns = clock()
                        return reply
                    parser = SSEParser()
                    on_chunk = adapter.on_chunk
                    async for data in resp.content.iter_any():
                        now = clock()
                        for event in parser.feed(data):
                            if event == b"[DONE]":
                                done = True
                                continue
                            try:
                                chunk = decode_chunk(event)
                            except msgspec.DecodeError as e:
                                _fail(att, ak.MALFORMED, f"bad SSE data ({e}): {event[:200]!r}")
                                break
                            if chunk.error:
                                _fail(
                                    att, ak.HTTP_5XX, f"error event: {_error_text(event.decode())}"
                                )
                                break
                            if on_chunk(chunk, reply):
                                if chunks:
                                    gaps.append(now - last)
                                else:
                                    att.t_first_token_ns = now
                                last = now
                                chunks += 1
                        if att.status != ak.STATUS_OK:
                            break
                        if chunks:
                            # Move the deadline only when it would come before `idle_s` after
                            # this chunk, and then a `slack` further: a timer change every
                            # `slack` seconds at most, and never a timeout before `idle_s`.
                            t = loop.time()
                            if not idle_armed or t + to.idle_s > deadline:
                                deadline = min(total_deadline, t + to.idle_s + slack)
                                cm.reschedule(deadline)
                                idle_armed = True
                    if att.status == ak.STATUS_OK:
                        for event in parser.close():
                            done = done or event == b"[DONE]"
                        if not done:
                            _fail(att, ak.TRUNCATED, "stream ended without [DONE]")
        except aiohttp.ConnectionTimeoutError as e:  # a TimeoutError too: it must come first
            _fail(att, ak.CONNECT_ERROR, f"no connection within {to.connect_s} s: {e}")
        except TimeoutError:
            if loop.time() >= total_deadline - 0.001:
                _fail(att, ak.TIMEOUT, f"no complete reply within {to.total_s} s")
            elif chunks == 0:
                _fail(att, ak.FIRST_TOKEN_TIMEOUT, f"no first token within {to.first_token_s} s")
            else:
                _fail(att, ak.IDLE_TIMEOUT, f"no chunk for {to.idle_s} s")
        except asyncio.CancelledError:
            att.status = ak.STATUS_CANCELLED
            att.error_kind = ak.CANCELLED
            att.error_message = "cancelled by the run's end or an interrupt"
            raise
        except aiohttp.ClientConnectorError as e:
            _fail(att, ak.CONNECT_ERROR, str(e) or type(e).__name__)
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            ConnectionError,
        ) as e:
            kind = ak.RESET if got_response else ak.CONNECT_ERROR
            _fail(att, kind, f"{type(e).__name__}: {e}")
        except aiohttp.ClientError as e:
            _fail(att, ak.CLIENT_ERROR, f"{type(e).__name__}: {e}")
        finally:
            att.t_end_ns = att.t_end_ns or clock()
            if chunks:
                att.t_last_token_ns = last
                att.chunk_gaps = gaps.tobytes()
            att.content_chunks = chunks
            att.finish_reason = reply.finish_reason
            _read_usage(att, reply)
        return reply

    async def _open(
        self, url: str, payload: bytes, headers: dict[str, str], att: Attempt
    ) -> aiohttp.ClientResponse:
        """POST and wait for the response head, reconnecting when a pooled keep-alive
        connection turns out closed by the server before it answered anything.

        Why: servers close idle or surplus keep-alive connections (llama.cpp does under
        concurrency); a request written to such a socket never reached the server, so
        sending it again on a fresh connection is not a retry of a server fault. Each
        reconnect is counted on the attempt. A refused connection is never retried here.
        """
        assert self._session is not None
        for tries in range(_RECONNECTS + 1):
            try:
                return await self._session.post(url, data=payload, headers=headers)
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if tries == _RECONNECTS:
                    raise
                att.reconnects += 1
        raise AssertionError("unreachable")


def _read_usage(att: Attempt, reply: Reply) -> None:
    usage = reply.usage
    if usage:
        att.prompt_tokens = usage.get("prompt_tokens")
        att.completion_tokens = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details") or {}
        att.cached_tokens = details.get("cached_tokens") if isinstance(details, dict) else None
        att.token_source = "usage"
    elif att.content_chunks:
        att.completion_tokens = att.content_chunks
        att.token_source = "chunks"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
