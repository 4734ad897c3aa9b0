"""Worker processes on this machine: one pipe each, started before the run's clock starts.

Why spawned processes with pipes: each worker has its own interpreter, event loop and
connection pool (no GIL shared with the coordinator), and the only traffic between processes
is a small message per session start and a batch of rows every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import pickle
import signal
from multiprocessing.connection import Connection
from typing import Any

from turnbench.engine.remote import RemoteLauncher
from turnbench.engine.worker import WorkerCore, WorkerSpec
from turnbench.workload.conversation import Conversation

BATCH_PERIOD_S = 0.05
READY = b"ready"
"""A worker's first message: its connection pool is open."""
START_TIMEOUT_S = 60.0


class ProcessChannel:
    """Messages to one worker process over its pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _send(self, *message: Any) -> None:
        with contextlib.suppress(OSError):  # a dead worker is noticed on its reading side
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def begin(self, wall_anchor_ns: int) -> None:
        self._send("begin", wall_anchor_ns)

    def start(
        self, index: int, conversation: Conversation, t_intended_ns: int, gate_wait_ns: int
    ) -> None:
        self._send("start", index, conversation, t_intended_ns, gate_wait_ns)

    def stop(self) -> None:
        self._send("stop")

    def cancel(self) -> None:
        self._send("cancel")

    def exit(self) -> None:
        self._send("exit")


def _process_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process.

    Ctrl-C in a terminal reaches the whole process group: workers ignore it, and the
    coordinator tells them to stop or cut, so their last rows still reach events.db.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.run(_serve(conn, spec))
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(_serve(conn, spec))


async def _serve(conn: Connection, spec: WorkerSpec) -> None:
    core = WorkerCore(spec)
    await core.open()
    loop = asyncio.get_running_loop()
    leaving = asyncio.Event()

    def on_message() -> None:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the coordinator is gone: cut and leave
            loop.remove_reader(conn.fileno())
            core.cancel()
            leaving.set()
            return
        kind = message[0]
        if kind == "begin":
            core.begin(message[1])
        elif kind == "start":
            core.start(*message[1:])
        elif kind == "stop":
            core.stop()
        elif kind == "cancel":
            core.cancel()
        elif kind == "exit":
            leaving.set()

    loop.add_reader(conn.fileno(), on_message)
    conn.send_bytes(READY)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leaving.wait(), BATCH_PERIOD_S)
        batch = core.take_batch()
        if batch is not None:
            with contextlib.suppress(OSError):
                conn.send_bytes(batch)
        if leaving.is_set() and core.active == 0:
            break
    await core.close()
    conn.close()


class ProcessPool:
    """Starts worker processes, feeds their batches to the launcher, and joins them."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for spec in specs:
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_process_main,
                args=(child, spec),
                daemon=True,
                name=f"turnbench-worker-{spec.worker}",
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.channels = [ProcessChannel(c) for c in self.conns]
        self._ready: list[asyncio.Event] = []
        self._closed: list[asyncio.Event] = []
        self._leaving = False

    async def attach(self, launcher: RemoteLauncher) -> None:
        """Route every worker's batches to the launcher; wait until all workers are up."""
        loop = asyncio.get_running_loop()
        self._ready = [asyncio.Event() for _ in self.conns]
        self._closed = [asyncio.Event() for _ in self.conns]
        for i, conn in enumerate(self.conns):
            loop.add_reader(conn.fileno(), self._on_batch, i, conn, launcher)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self._ready)), START_TIMEOUT_S
            )
        except TimeoutError:
            raise RuntimeError("worker processes did not start in time") from None

    def _on_batch(self, i: int, conn: Connection, launcher: RemoteLauncher) -> None:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            self._closed[i].set()
            self._ready[i].set()
            proc = self.procs[i]
            proc.join(timeout=1)
            if not self._leaving:
                launcher.worker_died(i, f"exit code {proc.exitcode}")
            return
        self._ready[i].set()
        if payload != READY:
            launcher.receive(payload)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Ask every worker to leave once its sessions are over, and wait for the last rows."""
        self._leaving = True
        for channel in self.channels:
            channel.exit()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._closed)), timeout_s)
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
