"""How many streamed requests a second the simulator serves on one core in zero-delay mode.

Why it matters: the simulator is the default target and the test fixture; if it were the
bottleneck, a load-generator benchmark against it would measure the simulator, not turnbench.

The simulator runs as a subprocess pinned to core 0 (`taskset` when available, else
`os.sched_setaffinity`); this process is the client, pinned to core 1 when there is one: N
concurrent aiohttp streaming clients asking `--tokens` output tokens with `ignore_eos`. It
prints streamed requests/s, token events/s and the simulator's CPU use (near 100 % means the
simulator is the bottleneck; well below means the client is).

    .venv/bin/python bench/sim_capacity.py [--duration 10] [--concurrency 32] [--tokens 64]
    .venv/bin/python bench/sim_capacity.py --profile sim.prof   # cProfile the simulator
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

READY_PREFIX = "turnbench sim ready: "
PROMPT = [
    {"role": "system", "content": "You are a helpful assistant for the capacity benchmark."},
    {"role": "user", "content": "Tell me about prefix caching and batching in LLM servers."},
]


@dataclass
class Tally:
    """Counts of one measurement window."""

    ok: int = 0
    failed: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def start_sim(profile: str | None, pin: bool) -> tuple[subprocess.Popen[str], str]:
    """Start the zero-delay simulator on core 0 and return it with its base URL."""
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += ["-m", "turnbench", "sim", "--port", "0", "--zero-delay", "--max-num-seqs", "256"]
    preexec = None
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    elif pin and hasattr(os, "sched_setaffinity"):

        def preexec() -> None:
            os.sched_setaffinity(0, {0})

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=preexec)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line[len(READY_PREFIX) :].strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux `/proc`), to tell who the bottleneck is."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def client(
    session: aiohttp.ClientSession, url: str, tokens: int, stop_at: float, tally: Tally
) -> None:
    """One closed-loop client: stream a chat completion, check it, repeat until `stop_at`."""
    body = {
        "model": "turnbench-sim",
        "messages": PROMPT,
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    while time.perf_counter() < stop_at:
        try:
            async with session.post(url + "/chat/completions", json=body) as resp:
                data = await resp.read()
            events = data.count(b"data: ")
            if resp.status == 200 and data.endswith(b"data: [DONE]\n\n") and events >= tokens:
                tally.ok += 1
                tally.events += events
            else:
                tally.failed += 1
        except aiohttp.ClientError as err:
            tally.failed += 1
            tally.errors[type(err).__name__] = tally.errors.get(type(err).__name__, 0) + 1


async def drive(url: str, concurrency: int, tokens: int, seconds: float) -> Tally:
    """Run `concurrency` clients for `seconds` and return their tally."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(client(session, url, tokens, stop_at, tally) for _ in range(concurrency))
        )
    return tally


def main() -> None:
    """Parse flags, start the simulator, warm up, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent streams")
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--profile", help="write the simulator's cProfile stats to this file")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()

    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    pin = not args.no_pin
    proc, url = start_sim(args.profile, pin)
    if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(drive(url, args.concurrency, args.tokens, args.warmup))
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            tally = runner.run(drive(url, args.concurrency, args.tokens, args.duration))
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(
        f"streamed requests/s: {tally.ok / elapsed:,.0f}  "
        f"(token events/s: {tally.events / elapsed:,.0f}; ok {tally.ok}, failed {tally.failed} "
        f"{tally.errors or ''}; {args.concurrency} clients x {args.tokens} tokens, "
        f"{elapsed:.1f} s; simulator CPU {100 * cpu / elapsed:.0f}% of one core)"
    )


if __name__ == "__main__":
    main()
