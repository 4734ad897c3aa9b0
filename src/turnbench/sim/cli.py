"""`turnbench sim`: flags → `SimConfig` → a running server until SIGINT or SIGTERM.

Why the exact ready line on stdout: tests and scripts start the simulator on port 0 and read
the real address from that one line; everything else goes to stderr.

Why the server (aiohttp, the simulator's modules, asyncio, ssl) is imported only where it is
used: `turnbench --help` declares this command to list it, and would otherwise load a whole
server to do so.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from turnbench.cli_format import fail
from turnbench.errors import InputError
from turnbench.sim.config import FAULT_KINDS, ROUTERS, SESSION_HEADERS, SimConfig, load_config

if TYPE_CHECKING:
    import asyncio
    import ssl

READY_PREFIX = "turnbench sim ready: "


async def _watch_parent(stop: asyncio.Event) -> None:
    """Set `stop` once the process that started us is gone (re-parented)."""
    import asyncio

    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


async def serve(
    cfg: SimConfig,
    host: str,
    port: int,
    exit_with_parent: bool = False,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or the parent's death), printing the ready line; HTTPS
    when given a server TLS context."""
    import asyncio

    from aiohttp import web

    from turnbench.sim.app import SimServer

    sim = SimServer(cfg)
    runner = web.ServerRunner(sim.make_server(), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=tls)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound_port = address[1]
            break
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown_host = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    print(f"{READY_PREFIX}{scheme}://{shown_host}:{bound_port}/v1", flush=True)
    watcher = asyncio.create_task(_watch_parent(stop)) if exit_with_parent else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (about twice the throughput), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on the fastest available event loop."""
    import asyncio

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main)


def _check_port(port: int) -> None:
    """Refuse a port outside 0-65535: the OS would silently bind another (70000 as 4464)."""
    if not 0 <= port <= 65535:
        raise InputError(f"expected 0-65535 (0 picks a free port), got {port}", field="--port")


def _no_password(key: Path) -> str:
    """The password callback of an encrypted key: refuse, rather than let OpenSSL prompt for
    one on the terminal of a simulator started in the background."""
    message = "the key is encrypted; give an unencrypted PEM key"
    raise InputError(message, file=str(key), field="--tls-key")


def _ssl_reason(err: ssl.SSLError) -> str:
    """OpenSSL's reason in words (`KEY_VALUES_MISMATCH` → `key values mismatch`)."""
    return err.reason.lower().replace("_", " ") if err.reason else "unreadable PEM"


def tls_server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The HTTPS context of a PEM certificate (chain) and its private key; None for HTTP.

    Why checked before listening: a missing or bad file must be one line naming it at start,
    not a handshake failure that every client sees later.
    """
    import ssl

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise InputError(f"{given} needs {missing}: give both or neither")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            path.read_bytes()
        except OSError as err:
            message = f"cannot read it: {err.strerror or err}"
            raise InputError(message, file=str(path), field=flag) from None
    try:  # loading it as a CA finds a file with no certificate, before the key is blamed
        ssl.create_default_context(cafile=str(cert))
    except ssl.SSLError as err:
        message = f"not a PEM certificate ({_ssl_reason(err)})"
        raise InputError(message, file=str(cert), field="--tls-cert") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: _no_password(key))
    except ssl.SSLError as err:
        message = f"not the PEM private key of {cert.name} ({_ssl_reason(err)})"
        raise InputError(message, file=str(key), field="--tls-key") from None
    return context


def sim_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", help="Port to bind; 0 picks a free port."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of SimConfig fields."),
    model: str | None = typer.Option(None, "--model", help="Served model name."),
    fault: list[str] = typer.Option(
        [], "--fault", help=f"KIND=RATE, repeatable; kinds: {', '.join(FAULT_KINDS)}."
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="key=value (dotted keys, YAML values), repeatable; e.g. output_len.mean=50.",
    ),
    zero_delay: bool | None = typer.Option(
        None, "--zero-delay/--no-zero-delay", help="Never sleep: stream as fast as possible."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of replies and faults."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="Context length."),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Running sequences."),
    max_waiting: int | None = typer.Option(None, "--max-waiting", help="Waiting queue capacity."),
    kv_cache_tokens: int | None = typer.Option(
        None, "--kv-cache-tokens", help="Prefix cache capacity in tokens."
    ),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per KV block."),
    ttft_base_ms: float | None = typer.Option(None, "--ttft-base-ms", help="Fixed TTFT, ms."),
    prefill_ms_per_token: float | None = typer.Option(
        None, "--prefill-ms-per-token", help="Prefill ms per uncached prompt token."
    ),
    decode_ms_base: float | None = typer.Option(
        None, "--decode-ms-base", help="Decode ms per token at one running sequence."
    ),
    decode_ms_per_seq: float | None = typer.Option(
        None, "--decode-ms-per-seq", help="Added decode ms per token per running sequence."
    ),
    stall_s: float | None = typer.Option(None, "--stall-s", help="Length of a stall fault, s."),
    stored_responses: int | None = typer.Option(
        None,
        "--stored-responses",
        help="Responses API: responses kept for previous_response_id (LRU; 0 keeps none).",
    ),
    session_header: list[str] = typer.Option(
        [],
        "--session-header",
        help="Header naming a session, repeatable, the first present wins; replaces the "
        f"default list: {', '.join(SESSION_HEADERS)}.",
    ),
    replicas: int | None = typer.Option(
        None,
        "--replicas",
        help="Engine replicas behind a router, each with its own batch and prefix cache.",
    ),
    router: str | None = typer.Option(
        None,
        "--router",
        metavar="KIND",
        help=f"How the router picks a replica: {', '.join(ROUTERS)} (default sticky).",
    ),
    exit_with_parent: bool = typer.Option(
        False, "--exit-with-parent", help="Stop when the process that started it is gone."
    ),
    tls_cert: Path | None = typer.Option(
        None,
        "--tls-cert",
        metavar="PEM",
        help="Serve HTTPS with this certificate (chain); needs --tls-key.",
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", metavar="PEM", help="The private key of --tls-cert (unencrypted)."
    ),
) -> None:
    """Run the simulator (chat, completions, responses, messages, models, tokenize, metrics)."""
    overrides = {
        "model": model,
        "zero_delay": zero_delay,
        "seed": seed,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "max_waiting": max_waiting,
        "kv_cache_tokens": kv_cache_tokens,
        "block_size": block_size,
        "ttft_base_ms": ttft_base_ms,
        "prefill_ms_per_token": prefill_ms_per_token,
        "decode_ms_base": decode_ms_base,
        "decode_ms_per_seq": decode_ms_per_seq,
        "stall_s": stall_s,
        "stored_responses": stored_responses,
        "session_header": session_header or None,
        "replicas": replicas,
        "router": router,
    }
    try:
        _check_port(port)
        cfg = load_config(config, sets=set_, faults=fault, overrides=overrides)
        tls = tls_server_context(tls_cert, tls_key)
        run(serve(cfg, host, port, exit_with_parent, tls))
    except InputError as err:
        raise fail(str(err)) from None
