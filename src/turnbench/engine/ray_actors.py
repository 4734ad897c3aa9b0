"""Workers as Ray actors, for runs spread over many machines (`engine.kind: ray`).

Why Ray: it already places actors across a cluster (and on Kubernetes through KubeRay), ships
Python objects, and reports dead actors; turnbench only adds the worker core. Each actor is an
async actor running the same `WorkerCore` as a worker process: it owns the sessions it is
given, and the coordinator (the driver) keeps one `next_batch` call open on each actor, which
returns the moment a session ends or after 50 ms, into one events.db. Clocks line up through
the run's wall-clock anchor (see `WorkerCore.begin`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from turnbench.engine.remote import RemoteLauncher
from turnbench.engine.worker import SessionStart, WorkerCore, WorkerSpec
from turnbench.errors import EngineError, InputError

POLL_PERIOD_S = 0.05

ray: Any
try:
    import ray
except ImportError:  # the extra is optional
    ray = None


class _WorkerActor:
    """The Ray actor class (decorated lazily, so importing this module needs no Ray)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.core = WorkerCore(spec)

    async def open(self) -> None:
        await self.core.open()

    async def begin(self, wall_anchor_ns: int) -> None:
        self.core.begin(wall_anchor_ns)

    async def start(self, order: SessionStart) -> None:
        self.core.start(order)

    async def stop(self, at_ns: int) -> None:
        self.core.stop(at_ns)

    async def cancel(self) -> None:
        self.core.cancel()

    async def next_batch(self, period_s: float) -> bytes | None:
        return await self.core.next_batch(period_s)

    async def take_batch(self) -> bytes | None:
        return self.core.take_batch()

    async def active(self) -> int:
        return self.core.active

    async def close(self) -> None:
        await self.core.close()


class RayChannel:
    """Messages to one actor: fire-and-forget actor calls, run in order on the actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def begin(self, wall_anchor_ns: int) -> None:
        self.actor.begin.remote(wall_anchor_ns)

    def start(self, order: SessionStart) -> None:
        self.actor.start.remote(order)

    def stop(self, at_ns: int) -> None:
        self.actor.stop.remote(at_ns)

    def cancel(self) -> None:
        self.actor.cancel.remote()


def _connect(address: str | None, workers: int) -> None:
    """Start a private local Ray instance (no address) or join a cluster.

    Why every exception is caught: Ray raises ConnectionError, RuntimeError or its own types
    for an address with no cluster behind it, each with a long traceback; the user needs one
    line naming the address and what Ray said.
    """
    try:
        if address is None:  # a private local instance on the loopback address only
            ray.init(
                include_dashboard=False,
                log_to_driver=False,
                num_cpus=max(workers, 1),
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as e:
        said = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise EngineError(f"cannot start {where} (--ray-address): {said}") from None


class RayPool:
    """Starts one actor per worker on a Ray cluster (or a local Ray instance)."""

    lead_s = 0.2
    """Open-loop sessions reach an actor this long before they are due: an actor call
    across a cluster's network, with room for Ray's own scheduling."""

    def __init__(self, specs: list[WorkerSpec], address: str | None) -> None:
        if ray is None:
            raise InputError(
                "engine.kind ray needs Ray: pip install 'turnbench[ray]'", field="engine.kind"
            )
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            _connect(address, len(specs))
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_WorkerActor)
        self.actors: list[Any] = [
            actor_cls.options(scheduling_strategy="SPREAD").remote(spec) for spec in specs
        ]
        self.channels = [RayChannel(a) for a in self.actors]
        self._alive = [True] * len(self.actors)
        self._pollers: list[asyncio.Task[None]] = []
        self._closing = False
        self._launcher: RemoteLauncher | None = None

    async def attach(self, launcher: RemoteLauncher) -> None:
        """Open every actor's connection pool, then keep a batch call open on each."""
        self._launcher = launcher
        await asyncio.gather(*(a.open.remote() for a in self.actors))
        self._pollers = [asyncio.create_task(self._poll(i)) for i in range(len(self.actors))]

    async def _poll(self, i: int, final: bool = False) -> None:
        """Feed actor `i`'s batches to the launcher until the pool closes (`final`: one
        last batch, without waiting)."""
        assert self._launcher is not None
        actor = self.actors[i]
        while self._alive[i]:
            try:
                if final:
                    payload = await actor.take_batch.remote()
                else:
                    payload = await actor.next_batch.remote(POLL_PERIOD_S)
            except ray.exceptions.RayError as e:
                self._alive[i] = False
                self._launcher.worker_died(i, type(e).__name__)
                return
            if payload is not None:
                self._launcher.receive(payload)
            if final or self._closing:
                return

    async def close(self, timeout_s: float = 30.0) -> None:
        """Collect the last batches, close the actors, and leave Ray as it was found.

        Why the pollers are let finish rather than cancelled: a batch an actor hands to a
        cancelled call would be lost; each open call returns within POLL_PERIOD_S.
        """
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pollers), timeout_s)
        last = (self._poll(i, final=True) for i in range(len(self.actors)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*last), timeout_s)
        for i, actor in enumerate(self.actors):
            if self._alive[i]:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(actor.close.remote(), 10)
            ray.kill(actor)
        if self._started_ray:
            ray.shutdown()
