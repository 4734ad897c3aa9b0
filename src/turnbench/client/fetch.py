"""Small requests beside the streamed ones: before a run, JSON to probe the server and
calibrate text lengths; during it, the text of the server's /metrics (`fetch_text`).

Why not aiohttp: importing it took ~120 ms of every run's start, and these few requests need
nothing the streaming client's own HTTP/1.1 connection (`h1`) does not already have.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from turnbench.client.h1 import Connection, Pool, request_head


class _Collect:
    """An `h1.Exchange` that keeps the status and the whole body."""

    header_lengths: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_status(self, status: int) -> None:
        self.status = status

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_lost(self, exc: Exception | None, started: bool) -> None:
        if exc is None and started:  # a body delimited by the end of the connection
            self.on_complete()
        elif not self.done.done():
            why = f"{type(exc).__name__}: {exc}" if exc else "closed before answering"
            self.done.set_exception(ConnectionError(why))


async def fetch_json(
    url: str,
    *,
    headers: dict[str, str],
    body: Any = None,
    timeout_s: float = 10,
    verify_tls: bool = True,
    ca_pem: str | None = None,
) -> tuple[int, Any]:
    """GET `url` (POST when there is a JSON `body`): the status and the decoded JSON body
    (None when the body is not JSON). `ca_pem`: the CAs to trust instead of the system's
    (see `h1.tls_context`).

    Raises OSError (refused, reset, TLS) or TimeoutError (no whole answer within `timeout_s`).
    """
    pool = Pool(url, verify_tls=verify_tls, connect_s=timeout_s, ca_pem=ca_pem)
    payload = msgspec.json.encode(body) if body is not None else b""
    sent = {"Accept": "application/json", **headers}
    if body is not None:
        sent["Content-Type"] = "application/json"
    method = "POST" if body is not None else "GET"
    head = request_head(method, pool.prefix or "/", pool.host_header, sent, len(payload))
    async with asyncio.timeout(timeout_s):
        conn = await pool.acquire()
        try:
            answer = _Collect()
            conn.begin(answer, head + payload)
            await answer.done
        finally:
            conn.close()
    try:
        return answer.status, msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        return answer.status, None


async def _answer(pool: Pool, conn: Connection, request: bytes) -> _Collect:
    """Send `request` on `conn` and wait for the whole answer; the connection goes back to
    `pool` when it can carry another request, and is closed when anything went wrong."""
    answer = _Collect()
    try:
        conn.begin(answer, request)
        await answer.done
    except BaseException:
        conn.close()
        raise
    pool.release(conn)
    return answer


async def fetch_text(pool: Pool, *, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """GET the pool's URL: the status and the body as text (UTF-8, bad bytes replaced).

    Why a pool: a scrape every second would otherwise open a connection every second; the
    keep-alive connection is kept for the next call. A reused connection the server had
    closed meanwhile is replaced once (a GET can be sent again).

    Raises OSError (refused, reset, TLS) or TimeoutError (no whole answer within `timeout_s`).
    """
    sent = {"Accept": "text/plain", **headers}
    request = request_head("GET", pool.prefix or "/", pool.host_header, sent, 0)
    async with asyncio.timeout(timeout_s):
        conn = await pool.acquire()
        try:
            answer = await _answer(pool, conn, request)
        except ConnectionError:
            if not conn.reused:
                raise
            answer = await _answer(pool, await pool.acquire(fresh=True), request)
    return answer.status, answer.body.decode("utf-8", "replace")
