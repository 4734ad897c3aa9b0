"""The simulator's HTTP server: routes, the request pipeline and the timing model.

Why aiohttp's low-level `web.Server` with a dict of routes: the router, middlewares and
signals of `web.Application` cost more than the simulated work at a thousand streams a second
on one core, and the simulator has eight fixed routes.

Four of them generate: chat completions, completions, responses and messages. Each is an `Api`
(`wire.py`: `completions.py`, `responses.py`, `messages.py`) that turns its body into one
`SimRequest` and words its reply, stream and errors; everything between is the same pipeline.
A generation request goes: parse → the router picks a replica (`router.py`; one unless
`replicas` says more) → fault draw → admission to that replica (429 when its queue is full) →
FIFO wait for one of its `max_num_seqs` slots → its prefix-cache lookup → prefill delay
(`ttft_base_ms + prefill_ms_per_token × uncached tokens`) → first token → one token every
`decode_ms_base + decode_ms_per_seq × running` ms → finish; the slot is freed at the end.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from turnbench.sim.completions import CompletionsApi
from turnbench.sim.config import SimConfig
from turnbench.sim.faults import FaultInjector, FaultPlan
from turnbench.sim.messages import MessagesApi
from turnbench.sim.prefix_cache import PrefixCache, block_hashes
from turnbench.sim.prom import SimMetrics
from turnbench.sim.protocol import RequestError, SimRequest, tokenize_body
from turnbench.sim.responses import ResponsesApi
from turnbench.sim.router import Replica, Router
from turnbench.sim.scheduler import QueueFull, Scheduler
from turnbench.sim.textgen import Reply, plan_reply, reply_rng
from turnbench.sim.wire import Api, Usage, Wire
from turnbench.tokens.template import tokens

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted (aiohttp's default of 1 MiB is below a long context)."""

FAULT_CUT = 3
"""Token events a stream fault lets through before it breaks the stream."""

DELIVERING = frozenset({None, "malformed"})
"""Fatal faults with which a reply still reaches the client whole."""

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_JSON = "application/json"

Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def error_response(
    err: RequestError, headers: dict[str, str] | None = None, api: Api | None = None
) -> web.Response:
    """A JSON error reply in the words of `api` (OpenAI's without one: unknown paths)."""
    body = err.body() if api is None else api.error_body(err)
    return web.Response(status=err.status, body=body, content_type=_JSON, headers=headers)


class _Pacer:
    """Sleeps token by token against absolute deadlines, so sleep overshoot does not add up."""

    def __init__(self, cfg: SimConfig, scheduler: Scheduler) -> None:
        """`scheduler`: the batch of the replica serving the request, whose size sets the pace."""
        self._cfg = cfg
        self._scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.time()

    async def tokens(self, n: int) -> None:
        """Wait for `n` decode steps at the current batch size."""
        cfg = self._cfg
        if cfg.zero_delay or n <= 0:
            return
        step_ms = cfg.decode_ms_base + cfg.decode_ms_per_seq * self._scheduler.running
        self._next += n * step_ms / 1000.0
        delay = self._next - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class SimServer:
    """The simulated inference server: config, replicas and their router, faults and metrics."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.replicas = [Replica(i, cfg) for i in range(cfg.replicas)]
        self.router = Router(cfg.router, self.replicas, cfg.seed)
        self._served_by = cfg.replica_header if cfg.replicas > 1 else None
        """The response header naming the replica; none from a single server."""
        self.faults = FaultInjector(cfg.faults, cfg.seed)
        self.metrics = SimMetrics(cfg.model)
        self.started = int(time.time())
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._generation(CompletionsApi(cfg, chat=True)),
            ("POST", "/v1/completions"): self._generation(CompletionsApi(cfg, chat=False)),
            ("POST", "/v1/responses"): self._generation(ResponsesApi(cfg)),
            ("POST", "/v1/messages"): self._generation(MessagesApi(cfg)),
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("POST", "/tokenize"): self._tokenize,
        }
        self._paths = {path for _, path in self._routes}

    def make_server(self) -> web.Server:
        """The aiohttp low-level server; handlers are cancelled when their client goes away."""

        loop = asyncio.get_running_loop()

        def request_factory(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> BaseRequest:
            return BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY_BYTES
            )

        return web.Server(
            self.handle,
            request_factory=request_factory,
            handler_cancellation=True,
            access_log=None,
        )

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """Dispatch on method and path; unknown paths get 404, wrong methods 405."""
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return await route(request)
        if request.path in self._paths:
            err = RequestError(f"Method {request.method} not allowed", status=405)
            return error_response(err)
        return error_response(RequestError(f"Not found: {request.path}", status=404))

    async def _health(self, request: BaseRequest) -> web.StreamResponse:
        return web.Response(status=200)

    async def _models(self, request: BaseRequest) -> web.StreamResponse:
        cfg = self.cfg
        model = {
            "id": cfg.model,
            "object": "model",
            "created": self.started,
            "owned_by": "turnbench",
            "root": cfg.model,
            "parent": None,
            "max_model_len": cfg.max_model_len,
        }
        body = msgspec.json.encode({"object": "list", "data": [model]})
        return web.Response(body=body, content_type=_JSON)

    async def _metrics(self, request: BaseRequest) -> web.StreamResponse:
        text = self.metrics.render(self.replicas)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _tokenize(self, request: BaseRequest) -> web.StreamResponse:
        try:
            text = tokenize_body(await request.read(), self.cfg.model)
        except RequestError as err:
            return error_response(err)
        ids = [zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in tokens(text)]
        body = {"count": len(ids), "max_model_len": self.cfg.max_model_len, "tokens": ids}
        return web.Response(body=msgspec.json.encode(body), content_type=_JSON)

    def _generation(self, api: Api) -> Handler:
        """The handler of one generation endpoint: the shared pipeline, speaking `api`."""

        async def handle(request: BaseRequest) -> web.StreamResponse:
            return await self._complete(request, api)

        return handle

    async def _complete(self, request: BaseRequest, api: Api) -> web.StreamResponse:
        """Validate, inject faults, queue, then serve; every request bumps one outcome."""
        cfg, outcomes = self.cfg, self.metrics.outcomes
        arrival = asyncio.get_running_loop().time()
        session = self._count_session(request)
        try:
            req, wire = api.parse(await request.read())
        except RequestError as err:
            outcomes["error"] += 1
            return error_response(err, api=api)
        # routed once the body is read: least-loaded then sees the load of this moment
        if self._served_by is None:
            replica, served = self.replicas[0], None
        else:
            replica = self.router.choose(session)
            served = {self._served_by: replica.name}
        plan = self.faults.draw(req.stream)
        if plan.fatal == "http500":
            outcomes["http500"] += 1
            return error_response(
                RequestError(
                    "Injected fault: internal error", status=500, kind="InternalServerError"
                ),
                headers=served,
                api=api,
            )
        scheduler = replica.scheduler
        try:
            if plan.fatal == "http429":
                raise QueueFull
            ticket = scheduler.admit()
        except QueueFull:
            outcomes["http429"] += 1
            busy = RequestError(
                "The server is busy, retry later", status=429, kind="RateLimitError"
            )
            return error_response(
                busy, headers={"Retry-After": str(cfg.retry_after_s), **(served or {})}, api=api
            )
        # A client that hangs up is booked as `cancelled`, unless a fault was injected: then
        # the fault is what the server did (a client gives up on a stalled or broken stream).
        outcome = "cancelled" if plan.outcome == "ok" else plan.outcome
        try:
            await scheduler.wait(ticket)
            try:
                resp, outcome = await self._serve(
                    request, req, wire, plan, arrival, replica, served
                )
            finally:
                scheduler.release()
        finally:
            outcomes[outcome] += 1
        return resp

    def _count_session(self, request: BaseRequest) -> str | None:
        """Count the request under the first configured session header it carries; return
        that header's value (the session sticky routing hashes), None without one.

        Why a list: turnbench, AIPerf, routers' own clients... each name the session in
        their own header; the simulator serves all of them without a flag.
        """
        headers = request.headers
        for name in self.cfg.session_header:
            session = headers.get(name)
            if session is not None:
                self.metrics.sessions[name, session] += 1
                return session
        return None

    async def _serve(
        self,
        request: BaseRequest,
        req: SimRequest,
        wire: Wire,
        plan: FaultPlan,
        arrival: float,
        replica: Replica,
        served: dict[str, str] | None,
    ) -> tuple[web.StreamResponse, str]:
        """Run one request admitted to `replica`: cache lookup, prefill, decode, reply in
        `wire`'s format; returns the outcome. `served`: the header naming the replica, on every
        reply (None: none)."""
        cfg, metrics, cache = self.cfg, self.metrics, replica.cache
        n_prompt = req.blocks.count
        keys = req.blocks.keys if cache.capacity_blocks else []
        cached = cache.match(keys, n_prompt)
        replica.prefix_queries += n_prompt
        replica.prefix_hits += cached
        metrics.prompt_tokens += n_prompt
        limit = req.max_tokens if req.max_tokens is not None else cfg.max_model_len - n_prompt
        reply = plan_reply(
            reply_rng(cfg.seed, req.seed, req.prompt),
            limit=limit,
            min_tokens=req.min_tokens,
            ignore_eos=req.ignore_eos,
            stop=req.stop,
            length_cfg=cfg.output_len,
        )
        # the full blocks not read are computed now and stored at the end of prefill
        usage = Usage(n_prompt, len(reply.pieces), cached, len(keys) * cfg.block_size - cached)
        if plan.fatal in DELIVERING:
            wire.keep(reply)
        resp: web.StreamResponse | None = None
        if req.stream:
            resp = web.StreamResponse(
                headers=SSE_HEADERS if served is None else {**SSE_HEADERS, **served}
            )
            await resp.prepare(request)
        if not cfg.zero_delay:
            prefill_ms = cfg.ttft_base_ms + cfg.prefill_ms_per_token * (n_prompt - cached)
            await asyncio.sleep(prefill_ms / 1000.0)
        cache.insert(keys)
        if plan.stall:
            await asyncio.sleep(cfg.stall_s)
        loop = asyncio.get_running_loop()
        metrics.ttft.observe(loop.time() - arrival)
        pacer = _Pacer(cfg, replica.scheduler)
        if resp is None:
            await pacer.tokens(len(reply.pieces) - 1)
            resp = web.Response(body=wire.body(reply, usage), content_type=_JSON, headers=served)
            emitted, outcome = len(reply.pieces), plan.outcome
        else:
            emitted, outcome = await self._stream(request, resp, wire, reply, plan, usage, pacer)
        metrics.generation_tokens += emitted
        if outcome in ("ok", "stall", "stall_mid", "malformed"):
            metrics.success[reply.finish_reason] += 1
            self._cache_reply(cache, req.blocks.tail, keys, reply)
        return resp, outcome

    async def _stream(
        self,
        request: BaseRequest,
        resp: web.StreamResponse,
        wire: Wire,
        reply: Reply,
        plan: FaultPlan,
        usage: Usage,
        pacer: _Pacer,
    ) -> tuple[int, str]:
        """Write the SSE stream, breaking it as the fault plan says; returns tokens emitted.

        In zero-delay mode the whole stream goes out in one write (still one SSE event per
        token); otherwise each token event is written when its decode step ends.
        """
        events = wire.tokens(reply.pieces, reply.finish_reason, usage)
        n_tokens = len(reply.pieces)
        head = wire.head(replace(usage, completion_tokens=0))
        tail = wire.tail(reply, usage)
        fatal = plan.fatal
        malformed = wire.malformed
        if fatal in ("reset", "truncate", "malformed"):
            cut = max(0, min(FAULT_CUT, len(events) - 1))
            if fatal == "malformed":
                events.insert(cut, malformed)
            else:
                events, tail = events[:cut], []
                n_tokens = min(n_tokens, cut)
        stall_at = min(FAULT_CUT, len(events)) if plan.stall_mid else -1
        if self.cfg.zero_delay:
            if stall_at >= 0:
                await resp.write(b"".join(head + events[:stall_at]))
                await asyncio.sleep(self.cfg.stall_s)
                await resp.write(b"".join(events[stall_at:] + tail))
            else:
                await resp.write(b"".join(head + events + tail))
        else:
            await resp.write(b"".join(head + events[:1]))
            for i, event in enumerate(events[1:], start=1):
                if i == stall_at:
                    await asyncio.sleep(self.cfg.stall_s)
                if event is not malformed:
                    await pacer.tokens(1)
                await resp.write(event)
            await resp.write(b"".join(tail))
        if fatal == "reset":
            if request.transport is not None:
                request.transport.abort()
            return n_tokens, "reset"
        await resp.write_eof()
        return n_tokens, plan.outcome

    def _cache_reply(
        self, cache: PrefixCache, tail: list[str], keys: list[int], reply: Reply
    ) -> None:
        """Cache the reply's full blocks too, chained after the prompt's, as vLLM keeps them,
        in the serving replica's `cache`; `tail`: the prompt's tokens after its full blocks.

        Why it matters: the next turn renders this prompt, then the reply, then more; its
        prefix therefore runs through the reply's blocks as well.
        """
        if not cache.capacity_blocks or not reply.pieces:
            return
        bs = self.cfg.block_size
        rest = tail + [p.strip() for p in reply.pieces]
        cache.insert(block_hashes(rest, bs, keys[-1] if keys else 0))
