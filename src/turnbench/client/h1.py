"""HTTP/1.1 connections for streamed requests: asyncio protocols parsed by httptools.

Why not a general HTTP client: a benchmark client's hot path is one request and its chunks. Here
each read is parsed inside `data_received` and handed straight to the request's `Exchange`
(timestamped there), so a streamed reply costs no coroutine switch per read, and a request
costs one future. What this layer does not do (redirects, proxies, compression, HTTP/2) the
servers under test do not need.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools


class Exchange(Protocol):
    """The receiving side of one request, fed by its connection."""

    header_lengths: frozenset[int]
    """Lengths of the response header names this exchange reads: only headers of these
    lengths reach `on_header` (a reply brings ten others, and the check runs once per header
    of every reply)."""

    def on_status(self, status: int) -> None:
        """The response's status code (its headers follow)."""
        ...

    def on_header(self, name: bytes, value: bytes) -> None:
        """A response header whose name has one of `header_lengths` (names as sent; compare
        lower-cased). Others are not passed on."""
        ...

    def on_body(self, data: bytes) -> None:
        """A piece of the body, de-chunked, as it arrived."""
        ...

    def on_complete(self) -> None:
        """The whole response arrived."""
        ...

    def on_lost(self, exc: Exception | None, started: bool) -> None:
        """The connection closed before the response was complete; `started` tells whether
        any byte of the response had arrived."""
        ...


class Connection(asyncio.Protocol):
    """One keep-alive connection; serves one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._started = False
        self._wanted: frozenset[int] = frozenset()

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            exchange = self.exchange
            self.close()
            if exchange is not None:
                exchange.on_lost(ValueError(f"bad HTTP response: {e}"), True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.on_lost(exc, self._started)

    # httptools callbacks
    def on_status(self, _status: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_status(self._parser.get_status_code())

    def on_header(self, name: bytes, value: bytes) -> None:
        # only the headers an exchange reads go on: a reply brings ten others, and this runs
        # once per header of every reply
        if len(name) in self._wanted and self.exchange is not None:
            self.exchange.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_body(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.on_complete()

    # ours
    def begin(self, exchange: Exchange, request: bytes, body: bytes = b"") -> None:
        """Send a request (`request`, then `body` if given); its response goes to `exchange`.

        Why the body apart: an agent's body is a megabyte, and joining it to its head copied
        it once more on every request; uvloop's `writelines` sends both in one system call.
        """
        assert self.transport is not None
        self.exchange = exchange
        self._wanted = exchange.header_lengths
        self._started = False
        if body:
            self.transport.writelines((request, body))
        else:
            self.transport.write(request)

    def close(self) -> None:
        """Close at once (a cut or broken exchange leaves the connection unusable)."""
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one origin, newest first."""

    def __init__(
        self, base_url: str, *, verify_tls: bool, connect_s: float, ca_pem: str | None = None
    ) -> None:
        """`ca_pem`: the PEM text of the only CAs an https origin's certificate may chain to
        (`target.ca_bundle`); None trusts the system's store."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.host_header = parts.hostname if default_port else f"{parts.hostname}:{self.port}"
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = tls_context(verify_tls, ca_pem)
        self._connect_s = connect_s
        self._idle: list[Connection] = []

    async def acquire(self, fresh: bool = False) -> Connection:
        """An idle keep-alive connection, or a new one (`fresh`: always a new one).

        Raises OSError (refused, unreachable) or TimeoutError (no connection in time).
        """
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_s):
            _, conn = await loop.create_connection(
                Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
            )
        return conn

    def release(self, conn: Connection) -> None:
        """Keep a connection whose response completed, if both sides want to."""
        if conn.closed or not conn.keep_alive:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def tls_context(verify: bool, ca_pem: str | None = None) -> ssl.SSLContext:
    """The client side of TLS: certificates checked against the system's CAs, or against only
    those of `ca_pem` (PEM text) when given; with `verify` off, not checked at all.

    Why `ca_pem` replaces the system store rather than adding to it: that is what `curl
    --cacert`, requests and httpx do with a bundle, so a bundle that works there works here,
    and a server is trusted only through the CAs the user named. Raises ssl.SSLError when
    `ca_pem` is not PEM.
    """
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cadata=ca_pem)


def request_head(method: str, path: str, host: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers of a request with a body of `length` bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
