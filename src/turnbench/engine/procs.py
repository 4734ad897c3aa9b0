"""Worker processes on this machine: one socket pair each, started before the run's clock.

Why spawned processes: each worker has its own interpreter, event loop and connection pool
(no GIL shared with the coordinator); the only traffic between processes is a small message
per session start and a batch of rows every 50 ms.

Why spawned first and told what to do later: a new interpreter takes about 0.3 s to import
what a worker needs. The run spawns its workers as soon as the config is read, so they import
while the coordinator probes the server and loads the workload, then sends each its
`WorkerSpec` as the first message.

Why length-prefixed frames over asyncio streams (not `Connection.send_bytes`): the event loop
may make the socket non-blocking (uvloop does), and then a blocking-style read can find half a
frame; stream writes are buffered, so neither side ever blocks its event loop on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import pickle
import signal
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

from turnbench.engine.remote import RemoteLauncher
from turnbench.engine.worker import SessionStart, WorkerCore, WorkerSpec
from turnbench.entry import start_uninterrupted
from turnbench.errors import EngineError

BATCH_PERIOD_S = 0.05
READY = b"ready"
"""A worker's first frame: its connection pool is open."""
START_TIMEOUT_S = 60.0
_HEAD = struct.Struct("!I")


def frame(payload: bytes) -> bytes:
    """A length-prefixed frame."""
    return _HEAD.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload; None at the end of the stream."""
    try:
        head = await reader.readexactly(_HEAD.size)
        return await reader.readexactly(_HEAD.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def _streams(conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Asyncio streams over a duplex pipe's socket (the pipe object itself is closed)."""
    sock = socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
    conn.close()
    return await asyncio.open_connection(sock=sock)


class ProcessChannel:
    """Messages to one worker process; buffered, so sending never blocks.

    Why the messages of one loop step go out in one write: an open loop at thousands of
    sessions a second hands over a window of sessions at once, and one system call for the
    window costs less than one per session.
    """

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self._frames: list[bytes] = []

    def _send(self, *message: Any) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        writer = self.writer
        if writer is not None and not writer.is_closing():  # a dead worker: its reader says so
            writer.write(b"".join(frames))

    def begin(self, wall_anchor_ns: int) -> None:
        self._send("begin", wall_anchor_ns)

    def start(self, order: SessionStart) -> None:
        # its fields, not the named tuple: pickling the class too cost 2.3 us a session
        self._send("start", *order)

    def stop(self, at_ns: int) -> None:
        self._send("stop", at_ns)

    def cancel(self) -> None:
        self._send("cancel")

    def exit(self) -> None:
        self._send("exit")


def _process_main(conn: Connection) -> None:
    """Entry point of a worker process.

    Ctrl-C in a terminal reaches the whole process group: workers ignore it, and the
    coordinator tells them to stop or cut, so their last rows still reach events.db.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.run(_serve(conn))
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    reader, writer = await _streams(conn)
    payload = await read_frame(reader)  # the WorkerSpec
    if payload is None:  # the run ended before it began (a bad target, Ctrl-C)
        return
    core = WorkerCore(pickle.loads(payload))
    await core.open()
    leaving = False

    async def listen() -> None:
        nonlocal leaving
        while (payload := await read_frame(reader)) is not None:
            message = pickle.loads(payload)
            kind = message[0]
            if kind == "begin":
                core.begin(message[1])
            elif kind == "start":
                core.start(SessionStart(*message[1:]))
            elif kind == "stop":
                core.stop(message[1])
            elif kind == "cancel":
                core.cancel()
            elif kind == "exit":
                leaving = True
                core.wake()
        core.cancel()  # the coordinator is gone: cut and leave
        leaving = True
        core.wake()

    listener = asyncio.create_task(listen())
    writer.write(frame(READY))
    while True:
        # a batch every BATCH_PERIOD_S, and at once when a session ends or the run does
        batch = await core.next_batch(BATCH_PERIOD_S)
        if batch is not None:
            writer.write(frame(batch))
        if leaving and core.active == 0:
            break
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    listener.cancel()
    await core.close()


class ProcessPool:
    """Starts worker processes, feeds their batches to the launcher, and joins them."""

    lead_s = 0.02
    """Open-loop sessions reach a worker this long before they are due: a few busy loop
    iterations on each side of the socket."""

    def __init__(self, count: int) -> None:
        """Spawn `count` worker processes now; they wait for their specs (`attach`)."""
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(count):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_process_main, args=(child,), daemon=True, name=f"turnbench-worker-{i}"
            )
            try:
                start_uninterrupted(proc)
            except BaseException:  # a Ctrl-C (taken once the worker had started), an OS error
                child.close()
                parent.close()
                if proc.pid is not None:
                    self.procs.append(proc)
                self.discard()
                raise
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.channels = [ProcessChannel() for _ in range(count)]
        self._ready = [asyncio.Event() for _ in range(count)]
        self._closed = [asyncio.Event() for _ in range(count)]
        self._pumps: list[asyncio.Task[None]] = []
        self._leaving = False

    def discard(self) -> None:
        """The run ended before the workers were given anything: close and reap them."""
        for conn in self.conns:
            conn.close()
        self._reap()

    async def attach(self, launcher: RemoteLauncher, specs: list[WorkerSpec]) -> None:
        """Give each worker its spec, route its batches to the launcher, and wait until all
        workers are up."""
        for i, conn in enumerate(self.conns):
            reader, writer = await _streams(conn)
            writer.write(frame(pickle.dumps(specs[i], protocol=pickle.HIGHEST_PROTOCOL)))
            self.channels[i].writer = writer
            self._pumps.append(asyncio.create_task(self._pump(i, reader, launcher)))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self._ready)), START_TIMEOUT_S
            )
        except TimeoutError:
            raise EngineError("worker processes did not start in time") from None
        failed = [i for i, closed in enumerate(self._closed) if closed.is_set()]
        if failed:
            codes = ", ".join(f"{i} (exit code {self.procs[i].exitcode})" for i in failed)
            raise EngineError(f"worker processes failed to start: {codes}; see their stderr")

    async def _pump(self, i: int, reader: asyncio.StreamReader, launcher: RemoteLauncher) -> None:
        while (payload := await read_frame(reader)) is not None:
            if payload == READY:
                self._ready[i].set()
            else:
                launcher.receive(payload)
        self._closed[i].set()
        if not self._ready[i].is_set():  # died before it was up: attach() reports it
            self._ready[i].set()
            return
        if not self._leaving:
            proc = self.procs[i]
            await asyncio.to_thread(proc.join, 1)
            launcher.worker_died(i, f"exit code {proc.exitcode}")

    async def close(self, timeout_s: float = 30.0) -> None:
        """Ask every worker to leave once its sessions are over, and wait for the last rows."""
        self._leaving = True
        for channel in self.channels:
            channel.exit()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._closed)), timeout_s)
        for channel in self.channels:
            if channel.writer is not None:
                channel.writer.close()
        self._reap()

    def _reap(self) -> None:
        """Wait a moment for every worker process to exit, then kill what is left."""
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
