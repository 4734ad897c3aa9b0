"""Whether the client keeps up with agentic contexts: CPU and added TTFT per request at long
contexts, memory per live session, and the lag of a trace replay (issue #18, "Scale").

    .venv/bin/python bench/agent_scale.py                        # every part
    .venv/bin/python bench/agent_scale.py --only cpu --contexts 1000,128000 --api chat
    .venv/bin/python bench/agent_scale.py --only rss --sessions 1000
    .venv/bin/python bench/agent_scale.py --only weka --time-scale 0.01

cpu: per API and context size, one session whose history already holds the context (four
huge user turns) plays `--turns` more turns of 200 tokens against `turnbench sim --zero-delay`
(its own process) through the client's real per-turn path (`Session.build`, then the player's
`_play_turn`: body, encode, send, stream fold, accept, ideal prefix). For each measured turn:
this process's CPU time (user + system) over the turn, the time from the turn being due to
its bytes going out (`t_sent - t_intended`: build, body, encode), and its TTFT. The baseline
is a raw blocking socket replaying the very same request bytes to a fresh simulator: its CPU
is the floor of moving those bytes (`raw_http.py`). The simulator's own work on a long prompt
moves TTFT by more than the client's whole cost, so the client-added TTFT is measured again
against a server that only reads each request and answers with a recorded simulator reply
(`raw_http.Canned`): the time to the send plus the client's TTFT minus the raw socket's.

rss: N sessions, each played (no network) to a 100k-token history the way a run holds it,
in a child process; resident memory after minus before, over N.

turns: every request of the four WEKA traces played through the session and the API module
with no network (their real shapes: tool results and sub-agent contexts of up to 58k new
tokens): the client's time per request, and per new token at the worst.

weka: `turnbench run` of the four traces of `../shared/data/weka/` on their recorded schedule
(`weka.timing: recorded`), time-scaled, against the simulator; each request's lag between its
due start (`t_intended_ns`: its recorded offset, or the end of what it waits for plus its
recorded wait) and its send (`t_sent_ns`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from raw_http import WARM_TURNS, Canned, replay

from conftest import SimProcess, start_sim
from turnbench.cache.registry import BlockRegistry
from turnbench.client.apis import RequestView, api_for
from turnbench.client.apis.base import Reply
from turnbench.client.transport import Transport
from turnbench.config import RunConfig
from turnbench.engine.player import RunContext, _play_turn
from turnbench.pacing.clock import RunClock
from turnbench.pacing.gates import Gate
from turnbench.record.schema import SessionRecord
from turnbench.session import Session
from turnbench.tokens.template import VOCAB
from turnbench.workload.conversation import Conversation, Turn

MODEL = "turnbench-sim"
STEP_TOKENS = 200
"""User tokens of each measured turn (a tool result's size in a busy loop)."""
REPLY_TOKENS = 32
ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sim_cpu(sim: SimProcess) -> float:
    with open(f"/proc/{sim.proc.pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _start(context: int) -> SimProcess:
    return start_sim(
        "--zero-delay", "--max-model-len", str(context + 40_000),
        "--kv-cache-tokens", str(4 * (context + 40_000)),
    )  # fmt: skip


def _plan(context: int) -> Conversation:
    """The turns that build the context: a system prompt and a few huge tool results."""
    warm = [Turn(input_tokens=context // WARM_TURNS - 50)] * WARM_TURNS
    return Conversation(id="agent", turns=tuple(warm), system="You are a coding agent.")


class _Capture:
    """The run's API, keeping every body it builds (for the raw-socket replay)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.bodies: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def request(self, view: RequestView) -> dict[str, Any]:
        body: dict[str, Any] = self._api.request(view)
        self.bodies.append(body)
        return body


class _Rows(list[Any]):
    def record(self, row: Any) -> None:
        self.append(row)


async def _play(url: str, api_name: str, context: int, turns: int) -> dict[str, Any]:
    """Play the measured session through the client; per-turn CPU, pre-send time and TTFT."""
    cfg = RunConfig.model_validate(
        {
            "target": {"url": url, "model": MODEL, "api": api_name},
            "session": {"think_time": 0, "ignore_eos": True, "max_tokens": REPLY_TOKENS},
        }
    )
    clock = RunClock()
    api = _Capture(api_for(cfg.target))
    rows = _Rows()
    transport = Transport(url, headers={}, timeouts=cfg.target.timeouts, clock=clock)
    ctx = RunContext(
        cfg=cfg, model=MODEL, transport=transport, api=api, recorder=rows, clock=clock,
        in_flight=Gate(None, clock),
        registry=BlockRegistry(cfg.cache.block_size, cfg.cache.ideal_capacity_mb),
    )  # fmt: skip
    plan = _plan(context)
    session = Session(
        "s0", plan, cfg.session, max_context_tokens=None, rng=random.Random(1),
        registry=ctx.registry,
    )  # fmt: skip
    rec = SessionRecord(
        session_id="s0", conversation_id="agent", worker=0, stage="main", t_intended_ns=0,
        t_start_ns=0, t_end_ns=0, gate_wait_ns=0, turns_planned=len(plan.turns), turns_ok=0,
        turns_failed=0, attempts=0, dropped_messages=0, outcome="unfinished",
    )  # fmt: skip
    gc.collect()
    gc.freeze()  # as a worker does at the run's start
    cpu: list[float] = []
    step = Conversation(id="step", turns=(Turn(input_tokens=STEP_TOKENS),))
    for index in range(WARM_TURNS + turns):
        played = session
        if index >= WARM_TURNS:  # one more step on the built context, which stays its size
            played = session.fork(f"s0.{index}", step, random.Random(index))
        t_intended = clock()
        c0 = time.process_time()
        planned = played.build(min(index, len(played.turns) - 1))
        assert planned is not None
        ok, _, _ = await _play_turn(ctx, played, planned, t_intended, rec, 0, None)
        spent = time.process_time() - c0
        if not ok:
            att = rows[-1]
            raise SystemExit(f"turn {index} failed: {att.error_kind}: {att.error_message}")
        if index >= WARM_TURNS:
            cpu.append(spent)
    await transport.__aexit__()
    measured = [a for a in rows if a.session_id != "s0"]
    view = RequestView(
        model=MODEL, messages=session.history, new_messages=session.history[-1:],
        max_tokens=REPLY_TOKENS,
    )  # fmt: skip
    return {
        "cpu": cpu,
        "pre_send": [(a.t_sent_ns - a.t_intended_ns) / 1e6 for a in measured],
        "ttft": [(a.t_first_token_ns - a.t_sent_ns) / 1e6 for a in measured],
        "prompt": [a.prompt_tokens for a in measured],
        "bodies": api.bodies,
        "parts": _parts(session, api._api, view, turns),
    }


def _parts(session: Session, api: Any, view: RequestView, turns: int) -> dict[str, float]:
    """Best-of timings (ms) of the per-request pieces on the final history, no network."""

    def best(fn: Any) -> float:
        times = []
        for _ in range(max(5, turns)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    body = api.request(view)
    step = Conversation(id="step", turns=(Turn(input_tokens=STEP_TOKENS),))
    return {
        "build": best(lambda: session.fork("s", step, random.Random(0)).build(0)),
        "body": best(lambda: api.request(view)),
        "encode": best(lambda: msgspec.json.encode(body)),
        "bytes": len(msgspec.json.encode(body)),
    }


def _case(api_name: str, context: int, turns: int, loop: str) -> dict[str, Any]:
    """One API and context: the client against the simulator (CPU, TTFT), the raw replay of
    its bytes, then both against the canned server (the client's added TTFT)."""
    runner = uvloop.run if loop == "uvloop" else asyncio.run
    path = api_for(RunConfig.model_validate({"target": {"api": api_name}}).target).path
    sim = _start(context)
    try:
        sim_c0 = _sim_cpu(sim)
        played = runner(_play(sim.v1, api_name, context, turns))
        sim_cpu = (_sim_cpu(sim) - sim_c0) / (turns + WARM_TURNS)
    finally:
        sim.stop()
    sim = _start(context)
    try:
        raw = replay(sim.v1, path, played["bodies"])
    finally:
        sim.stop()
    canned = Canned(raw["response"])
    try:
        played_c = runner(_play(canned.v1, api_name, context, turns))
        raw_c = replay(canned.v1, path, played_c["bodies"])
    finally:
        canned.stop()
    med = statistics.median
    row = {
        "api": api_name, "loop": loop, "context": context,
        "prompt": med(played["prompt"]), "turns": turns,
        "cpu_ms": med(played["cpu"]) * 1e3, "cpu_p90_ms": _pct(played["cpu"], 0.9) * 1e3,
        "raw_cpu_ms": med(raw["cpu"]) * 1e3, "sim_cpu_ms": sim_cpu * 1e3,
        "ttft_ms": med(played["ttft"]), "raw_ttft_ms": med(raw["ttft"]),
        "canned_cpu_ms": med(played_c["cpu"]) * 1e3, "canned_raw_cpu_ms": med(raw_c["cpu"]) * 1e3,
        "pre_send_ms": med(played_c["pre_send"]),
        "pre_send_p90_ms": _pct(played_c["pre_send"], 0.9),
        "canned_ttft_ms": med(played_c["ttft"]), "canned_raw_ttft_ms": med(raw_c["ttft"]),
        **{f"{k}_ms" if k != "bytes" else k: v for k, v in played["parts"].items()},
    }  # fmt: skip
    row["added_ttft_ms"] = row["pre_send_ms"] + row["canned_ttft_ms"] - row["canned_raw_ttft_ms"]
    return row


def run_cpu(
    apis: list[str], contexts: list[int], turns: int, loop: str, repeat: int
) -> list[dict[str, Any]]:
    """Every case `repeat` times, the rounds interleaved (the machine's load falls on all
    cases alike); each figure is the median of its rounds' medians, with their range."""
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for api_name in apis:
            for context in contexts:
                row = _case(api_name, context, turns, loop)
                print(json.dumps(row), flush=True)
                rounds.setdefault((api_name, context), []).append(row)
    out = []
    for runs in rounds.values():
        row = dict(runs[0])
        for key, value in runs[0].items():
            if isinstance(value, float):
                values = [r[key] for r in runs]
                row[key] = statistics.median(values)
                row[f"{key}_range"] = (min(values), max(values))
        out.append(row)
    return out


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_child(n: int, context: int) -> None:
    """(In a child process.) N sessions played to `context`-token histories; print the RSS."""
    cfg = RunConfig.model_validate({"session": {"think_time": 0}})
    registry = BlockRegistry(cfg.cache.block_size, cfg.cache.ideal_capacity_mb)
    rng = random.Random(3)
    replies = [
        Reply(text_parts=[" ".join(rng.choices(VOCAB, k=500))]) for _ in range(8)
    ]  # the server's replies: each session keeps its own copy below
    plan = Conversation(
        id="agent",
        turns=tuple(Turn(input_tokens=context // 8 - 500, max_tokens=500) for _ in range(8)),
        system="You are a coding agent. " + " ".join(rng.choices(VOCAB, k=3000)),
    )
    gc.collect()
    before = _rss_kb()
    sessions = []
    tokens = 0
    for i in range(n):
        s = Session(
            f"s{i}", plan, cfg.session, max_context_tokens=None, rng=random.Random(i),
            registry=registry,
        )  # fmt: skip
        for turn in range(len(plan.turns)):
            planned = s.build(turn)
            assert planned is not None
            s.sent(planned)
            s.computed()
            text = replies[(i + turn) % len(replies)].text
            reply = Reply(text_parts=[text[:1] + text[1:]])  # a fresh string, as a server's
            s.accept(planned, reply, planned.context_tokens, 500)
        tokens += planned.context_tokens + 500
        sessions.append(s)
    gc.collect()
    after = _rss_kb()
    print(
        json.dumps({"sessions": n, "tokens": tokens // n, "before_kb": before, "after_kb": after})
    )


def run_rss(counts: list[int], context: int) -> list[dict[str, Any]]:
    out = []
    for n in counts:
        cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-context", str(context)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["per_session_kb"] = (row["after_kb"] - row["before_kb"]) / n
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def run_turns(dataset: Path, apis: list[str], repeat: int) -> list[dict[str, Any]]:
    """The client's work per request on the traces' own shapes, with no network: build (its
    new messages counted), ideal prefix, body, encode, accept, for every request of the four
    traces (`repeat` times; each request's best)."""
    from turnbench.workload.config import DatasetOptions
    from turnbench.workload.conversation import walk
    from turnbench.workload.dataset import load_dataset

    plans = list(load_dataset(dataset, "auto", DatasetOptions()).conversations)
    out = []
    for api_name in apis:
        cfg = RunConfig.model_validate({"target": {"api": api_name}})
        api = api_for(cfg.target)
        best: dict[tuple[str, int], float] = {}
        new: dict[tuple[str, int], int] = {}
        for _ in range(repeat):
            registry = BlockRegistry(cfg.cache.block_size, cfg.cache.ideal_capacity_mb)
            for plan in plans:
                for sub, _depth in walk(plan):
                    s = Session(
                        "s", sub, cfg.session, max_context_tokens=None, rng=random.Random(1),
                        registry=registry,
                    )  # fmt: skip
                    for i in range(len(sub.turns)):
                        t0 = time.perf_counter()
                        planned = s.build(i)
                        assert planned is not None
                        s.sent(planned)
                        view = RequestView(
                            model=MODEL, messages=planned.messages,
                            new_messages=planned.new_messages, max_tokens=planned.max_tokens,
                        )  # fmt: skip
                        msgspec.json.encode(api.request(view))
                        s.computed()
                        s.accept(planned, Reply(text_parts=["Done."]), planned.context_tokens, 2)
                        key = (sub.id, i)
                        best[key] = min(best.get(key, 1e9), time.perf_counter() - t0)
                        new[key] = sum(planned.new_sizes)
        ms = [v * 1e3 for v in best.values()]
        worst = max(best, key=lambda k: best[k])
        row = {
            "api": api_name, "requests": len(ms), "median_ms": statistics.median(ms),
            "p99_ms": _pct(ms, 0.99), "max_ms": max(ms), "max_new_tokens": new[worst],
            "us_per_new_token": max(ms) * 1e3 / max(1, new[worst]),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def run_weka(
    dataset: Path, apis: list[str], time_scale: float, keep: Path | None
) -> list[dict[str, Any]]:
    """Replay the traces time-scaled against the simulator; lag of each request's send.
    `keep`: leave the run folders there (None: in a temporary folder, removed)."""
    out = []
    for api_name in apis:
        sim = start_sim("--zero-delay", "--max-model-len", "200000", "--kv-cache-tokens", "4000000")
        try:
            with tempfile.TemporaryDirectory() as scratch:
                tmp = str(keep) if keep is not None else scratch
                cfg = Path(tmp) / "weka.yaml"
                cfg.write_text(
                    json.dumps(
                        {
                            "name": f"weka-{api_name}",
                            "target": {"url": sim.v1, "model": MODEL, "api": api_name},
                            "workload": {
                                "type": "dataset",
                                "path": str(dataset.resolve()),
                                "weka": {"timing": "recorded", "time_scale": time_scale},
                            },
                        }
                    )
                )
                cmd = [sys.executable, "-m", "turnbench", "run", str(cfg), "--out", tmp,
                       "--no-live"]  # fmt: skip
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"weka run failed: {proc.stderr.strip()[-2000:]}")
                db = max(Path(tmp).glob(f"*-weka-{api_name}/events.db"))
                conn = sqlite3.connect(db)
                rows = conn.execute(
                    "SELECT t_sent_ns - t_intended_ns, depth = 0 AND turn_index = 1 "
                    "FROM requests WHERE attempt = 1"
                ).fetchall()
                lags = [lag / 1e6 for lag, _ in rows]
                later = [lag / 1e6 for lag, first in rows if not first]
                failed = conn.execute("SELECT count(*) FROM requests WHERE status != 'ok'")
                n_failed = failed.fetchone()[0]
                sessions = conn.execute("SELECT count(*), max(depth) FROM sessions").fetchone()
                conn.close()
        finally:
            sim.stop()
        row = {
            "api": api_name, "time_scale": time_scale, "requests": len(lags),
            "failed": n_failed, "sessions": sessions[0], "max_depth": sessions[1],
            "lag_p50_ms": _pct(lags, 0.5), "lag_p99_ms": _pct(lags, 0.99),
            "lag_max_ms": max(lags), "later_p99_ms": _pct(later, 0.99),
            "later_max_ms": max(later), "wall_s": wall,
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="cpu,rss,turns,weka", help="Parts to run, comma-separated."
    )
    parser.add_argument("--api", default="chat,responses,anthropic", help="APIs (cpu, weka).")
    parser.add_argument("--contexts", default="1000,32000,128000", help="cpu: context sizes.")
    parser.add_argument("--turns", type=int, default=30, help="cpu: measured turns per case.")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="cpu: the event loop."
    )
    parser.add_argument("--repeat", type=int, default=3, help="cpu: rounds of every case.")
    parser.add_argument("--sessions", default="100,1000", help="rss: live session counts.")
    parser.add_argument("--rss-context", type=int, default=100_000, help="rss: tokens each.")
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/weka")
    parser.add_argument(
        "--time-scale", type=float, default=0.02, help="weka: multiplies recorded times."
    )
    parser.add_argument("--keep", type=Path, help="weka: keep the run folders in this folder.")
    parser.add_argument("--json", type=Path, help="Write every row to this file.")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_context)
        return
    parts = set(args.only.split(","))
    apis = args.api.split(",")
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    if "cpu" in parts:
        contexts = [int(c) for c in args.contexts.split(",")]
        results["cpu"] = run_cpu(apis, contexts, args.turns, args.loop, args.repeat)
    if "rss" in parts:
        results["rss"] = run_rss([int(n) for n in args.sessions.split(",")], args.rss_context)
    if "turns" in parts:
        results["turns"] = run_turns(args.dataset, apis, 3)
    if "weka" in parts:
        results["weka"] = run_weka(args.dataset, apis, args.time_scale, args.keep)
    results["load_after"] = os.getloadavg()
    print(f"load average after: {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
