"""Workers as Ray actors, for runs spread over many machines (`engine.kind: ray`).

Why Ray: it already places actors across a cluster (and on Kubernetes through KubeRay), ships
Python objects, and reports dead actors; turnbench only adds the worker core. Each actor is an
async actor running the same `WorkerCore` as a worker process: it owns the sessions it is
given, and the coordinator (the driver) collects its batches every 50 ms into one events.db.
Clocks line up through the run's wall-clock anchor (see `WorkerCore.open`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from turnbench.engine.remote import RemoteLauncher
from turnbench.engine.worker import WorkerCore, WorkerSpec
from turnbench.errors import InputError
from turnbench.workload.conversation import Conversation

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

    async def start(
        self, index: int, conversation: Conversation, t_intended_ns: int, gate_wait_ns: int
    ) -> None:
        self.core.start(index, conversation, t_intended_ns, gate_wait_ns)

    async def stop(self) -> None:
        self.core.stop()

    async def cancel(self) -> None:
        self.core.cancel()

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

    def start(
        self, index: int, conversation: Conversation, t_intended_ns: int, gate_wait_ns: int
    ) -> None:
        self.actor.start.remote(index, conversation, t_intended_ns, gate_wait_ns)

    def stop(self) -> None:
        self.actor.stop.remote()

    def cancel(self) -> None:
        self.actor.cancel.remote()


class RayPool:
    """Starts one actor per worker on a Ray cluster (or a local Ray instance)."""

    def __init__(self, specs: list[WorkerSpec], address: str | None) -> None:
        if ray is None:
            raise InputError(
                "engine.kind ray needs Ray: pip install 'turnbench[ray]'", field="engine.kind"
            )
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            if address is None:  # a private local instance on the loopback address only
                ray.init(
                    include_dashboard=False,
                    log_to_driver=False,
                    num_cpus=max(len(specs), 1),
                    _node_ip_address="127.0.0.1",
                )
            else:
                ray.init(address=address, log_to_driver=False)
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_WorkerActor)
        self.actors: list[Any] = [
            actor_cls.options(scheduling_strategy="SPREAD").remote(spec) for spec in specs
        ]
        self.channels = [RayChannel(a) for a in self.actors]
        self._alive = [True] * len(self.actors)
        self._poller: asyncio.Task[None] | None = None
        self._launcher: RemoteLauncher | None = None

    async def attach(self, launcher: RemoteLauncher) -> None:
        """Open every actor's connection pool, then poll their batches."""
        self._launcher = launcher
        await asyncio.gather(*(a.open.remote() for a in self.actors))
        self._poller = asyncio.create_task(self._poll_forever())

    async def _poll_once(self) -> None:
        assert self._launcher is not None
        for i, actor in enumerate(self.actors):
            if not self._alive[i]:
                continue
            try:
                payload = await actor.take_batch.remote()
            except ray.exceptions.RayError as e:
                self._alive[i] = False
                self._launcher.worker_died(i, type(e).__name__)
                continue
            if payload is not None:
                self._launcher.receive(payload)

    async def _poll_forever(self) -> None:
        while True:
            await self._poll_once()
            await asyncio.sleep(POLL_PERIOD_S)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Collect the last batches, close the actors, and leave Ray as it was found."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poll_once(), timeout_s)
        for i, actor in enumerate(self.actors):
            if self._alive[i]:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(actor.close.remote(), 10)
            ray.kill(actor)
        if self._started_ray:
            ray.shutdown()
