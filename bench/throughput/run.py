"""Client throughput benchmark: how fast turnbench itself is, against a server that is not.

Why nginx: a static server that copies one canned SSE body (64 `chat.completion.chunk`
events, a usage chunk, `[DONE]`) from memory is far faster than any Python client, so what
this measures is turnbench: its closed-loop request rate, how well it holds an open-loop
schedule, the TTFT it adds, its memory with 10,000 sessions in think time, and its start-up.
wrk against the same server gives the machine's own limit for comparison.

    .venv/bin/python bench/throughput/run.py            # everything, ~6 minutes
    .venv/bin/python bench/throughput/run.py --only closed,ttft --scale 0.5
    .venv/bin/python bench/throughput/run.py --write-readme   # refresh bench/README.md's table

Results (configs, run folders, results.json, results.md, the py-spy profile) go to
bench/results/throughput-<stamp>/ (not committed).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from make_sse import MODEL, MODELS_BODY, sse_body
from procs import TreeSampler, cpu_seconds

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
README = REPO / "bench" / "README.md"
BEGIN, END = "<!-- throughput-results:begin -->", "<!-- throughput-results:end -->"
PHASES = ("jitter", "wrk", "closed", "open", "repeat", "ttft", "rss", "flat", "profile", "startup")
TOKENS = 64


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*cmd: str) -> str:
    """A command's stdout (stderr folded in), or '' when it is missing or fails."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout + out.stderr).strip()


def ensure_tools() -> None:
    """Install nginx and wrk (and hyperfine, optional) from Debian when missing and root."""
    wanted = [p for p in ("nginx", "wrk", "hyperfine") if not shutil.which(p)]
    if not wanted:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        if {"nginx", "wrk"} & set(wanted):
            raise SystemExit(f"missing {', '.join(wanted)}: install them (apt-get install ...)")
        return
    log(f"installing {' '.join(wanted)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *wanted], check=False, env=env)
    if not (shutil.which("nginx") and shutil.which("wrk")):
        raise SystemExit("apt-get could not install nginx and wrk")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in sh("lscpu").splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "turnbench": sh(str(turnbench_cmd()[0]), *turnbench_cmd()[1:], "--version"),
        "nginx": sh("nginx", "-v").replace("nginx version: ", ""),
        "wrk": sh("wrk", "--version").splitlines()[0].split(" [")[0] if shutil.which("wrk") else "",
        "kernel": platform.release(),
        "load_before": os.getloadavg()[0],
    }


def turnbench_cmd() -> list[str]:
    """The console script next to this Python (how users start it), else `python -m`."""
    script = Path(sys.executable).parent / "turnbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "turnbench"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StaticServer:
    """nginx in the foreground with its own prefix, serving the canned stream."""

    workers: int = 1
    port: int = 0
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tb-nginx-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> StaticServer:
        self.port = self.port or free_port()
        self.prefix.chmod(0o755)  # nginx workers drop root and must read the files
        www = self.prefix / "www" / "v1"
        (www / "chat").mkdir(parents=True)
        (www / "chat" / "completions").write_text(sse_body(TOKENS))
        (www / "models").write_text(MODELS_BODY)
        for path in (self.prefix / "www").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        conf = (HERE / "nginx.conf").read_text()
        for key, value in (("PREFIX", self.prefix), ("PORT", self.port), ("WORKERS", self.workers)):
            conf = conf.replace(f"@{key}@", str(value))
        (self.prefix / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [
                "nginx",
                "-p",
                str(self.prefix),
                "-c",
                str(self.prefix / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        self.__exit__()
        raise SystemExit(f"nginx did not start: {(self.prefix / 'error.log').read_text()}")

    def pids(self) -> list[int]:
        """The master and its workers (where the CPU goes)."""
        assert self.proc is not None
        return list(
            {self.proc.pid}
            | {int(p) for p in sh("pgrep", "-P", str(self.proc.pid)).split() if p.isdigit()}
        )

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful stop of nginx
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


# ---------------------------------------------------------------- wrk


_SPINNER = """
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic_ns() + int(float(sys.argv[2]) * 1e9)
gaps = []
t = time.monotonic_ns()
while t < end:
    now = time.monotonic_ns()
    if now - t > 500_000:
        gaps.append(now - t)
    t = now
print(json.dumps(gaps))
"""


def host_jitter(duration_s: float) -> dict[str, Any]:
    """How often the machine itself stops a process that never sleeps: one spinner pinned to
    each core reads the monotonic clock in a loop and keeps every gap over 0.5 ms.

    Why: on a VM the hypervisor pauses virtual CPUs, and no client can start a request on
    time through such a pause; these gaps are the floor under the open-loop schedule lag.
    """
    cores = sorted(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SPINNER, str(core), str(duration_s)], stdout=subprocess.PIPE
        )
        for core in cores
    ]
    gaps_ms = sorted(g / 1e6 for p in procs for g in json.loads(p.communicate()[0]))
    return {
        "duration_s": duration_s,
        "cores": len(cores),
        "over_1ms": sum(g > 1 for g in gaps_ms),
        "over_2ms": sum(g > 2 for g in gaps_ms),
        "over_5ms": sum(g > 5 for g in gaps_ms),
        "max_ms": round(gaps_ms[-1], 2) if gaps_ms else 0.0,
        "paused_ms": round(sum(gaps_ms), 1),
    }


def run_wrk(server: StaticServer, out: Path, duration_s: float) -> dict[str, Any]:
    """The machine's limit: wrk POSTing to the same endpoint, 2 threads, 64 connections."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hello " * 16}],
            "stream": True,
            "max_tokens": TOKENS,
        }
    )
    script = out / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    cpu0, t0 = server.cpu(), time.monotonic()
    text = sh(
        "wrk",
        "-t2",
        "-c64",
        f"-d{round(duration_s)}s",
        "--latency",
        "-s",
        str(script),
        server.url + "/chat/completions",
    )
    nginx_cpu = 100 * (server.cpu() - cpu0) / (time.monotonic() - t0)
    (out / "wrk.txt").write_text(text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests_per_s": float(rps.group(1)) if rps else None,
        "latency_p50_ms": _to_ms(p50.group(1), p50.group(2)) if p50 else None,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "nginx_cpu_pct": nginx_cpu,
        "connections": 64,
        "duration_s": duration_s,
    }


def _to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


# ---------------------------------------------------------------- turnbench runs


def config(name: str, url: str, workers: int, load: dict[str, Any], **workload: Any) -> dict:
    """A turnbench config against the static server: small synthetic multi-turn inputs."""
    return {
        "name": name,
        "seed": 1,
        "engine": {"workers": workers},
        "target": {"url": url, "model": MODEL, "api": "chat"},
        "workload": {
            "type": "synthetic",
            "conversations": 100,
            "cycle": True,
            "turns": 4,
            "input_tokens": 16,
            "output_tokens": TOKENS,
            **workload,
        },
        "session": {"think_time": 0, "max_tokens": TOKENS},
        "load": {"end": "drain", "drain_timeout_s": 5, **load},
    }


@dataclass
class RunResult:
    """What one `turnbench run` gave: its summary, checks from events.db, its CPU and memory."""

    name: str
    folder: Path
    summary: dict[str, Any]
    sampler: TreeSampler
    launch_wall: float
    first_send_wall: float
    started_wall: float
    exit_wall: float
    ok_chunks: tuple[int, int, int]
    """(ok rows, min content chunks, max content chunks)."""
    nginx_cpu_pct: float | None
    problems: list[str]
    """The run's `problem:` lines (a worker that died, ...)."""

    @property
    def requests(self) -> dict[str, Any]:
        return dict(self.summary["requests"])

    def load_window(self, duration_s: float, skip_s: float = 1.0) -> tuple[float, float]:
        """Wall-clock window of steady load: after `skip_s` of the run, to its duration."""
        return self.first_send_wall + skip_s, self.first_send_wall + duration_s - 0.25

    def cpu_pct(self, duration_s: float) -> float | None:
        return self.sampler.cpu_percent(*self.load_window(duration_s))


class RunFailed(Exception):
    """A turnbench run left no summary (it crashed, or hung and had to be killed)."""


def _wait_or_interrupt(proc: subprocess.Popen[bytes], limit_s: float) -> str | None:
    """Wait for the run; past `limit_s`, Ctrl-C it (twice), then kill its process group."""
    try:
        proc.wait(timeout=limit_s)
        return None
    except subprocess.TimeoutExpired:
        pass
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGINT, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    return f"hung: still running {limit_s:.0f} s after start, interrupted"


def turnbench_run(
    name: str,
    cfg: dict[str, Any],
    out: Path,
    server: StaticServer,
    *,
    interval_s: float = 0.5,
    wrap: list[str] | None = None,
    loop: str = "uvloop",
) -> RunResult:
    """Run turnbench on `cfg` as a child process, sampling its process tree."""
    cfg_path = out / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    before = set(runs.iterdir())
    cmd = [*(wrap or []), *turnbench_cmd(), "run", str(cfg_path), "--no-live", "--out", str(runs)]
    env = dict(os.environ)
    if loop == "asyncio":
        env["PYTHONPATH"] = str(hide_uvloop(out))
    with open(out / f"{name}.log", "w") as logf:
        launch = time.time()
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=out, env=env, start_new_session=True
        )
        sampler = TreeSampler(proc.pid, interval_s).start()
        nginx0, t0 = server.cpu(), time.monotonic()
        duration = cfg["load"].get("duration_s") or 0
        limit = duration + cfg["load"].get("drain_timeout_s", 30) + 25
        hung = _wait_or_interrupt(proc, limit)
        exit_wall = time.time()
        sampler.stop()
    # a run leaves ~100 MB of events.db in the page cache, which the kernel writes back over
    # the next ~30 s: flushed here, so the next run does not share its cores with that
    os.sync()
    new = sorted(set(runs.iterdir()) - before)
    if not new or not (new[-1] / "summary.json").exists():
        raise RunFailed(f"{name}: turnbench failed ({hung or proc.returncode}), see {name}.log")
    folder = new[-1]
    summary = json.loads((folder / "summary.json").read_text())
    conn = sqlite3.connect(folder / "events.db")
    try:
        anchor = conn.execute("SELECT min(wall_anchor_ns) FROM workers").fetchone()[0]
        first = conn.execute("SELECT min(t_sent_ns) FROM requests").fetchone()[0]
        started = conn.execute("SELECT started_wall_ns FROM runs").fetchone()[0]
        chunks = conn.execute(
            "SELECT count(*), min(content_chunks), max(content_chunks) FROM requests "
            "WHERE status = 'ok'"
        ).fetchone()
    finally:
        conn.close()
    first_send = (anchor + first) / 1e9
    problems = [hung] if hung else []
    problems += [
        line.strip()
        for line in (out / f"{name}.log").read_text().splitlines()
        if line.startswith("problem:")
    ]
    nginx_cpu = None
    if duration:
        # nginx CPU over the whole child's life is diluted by start-up and report time;
        # scale by the share of that life spent sending
        life = time.monotonic() - t0
        nginx_cpu = 100 * (server.cpu() - nginx0) / max(min(duration, life), 1e-9)
    return RunResult(
        name=name,
        folder=folder,
        summary=summary,
        sampler=sampler,
        launch_wall=launch,
        first_send_wall=first_send,
        started_wall=started / 1e9,
        exit_wall=exit_wall,
        ok_chunks=(chunks[0], chunks[1] or 0, chunks[2] or 0),
        nginx_cpu_pct=nginx_cpu,
        problems=problems,
    )


def hide_uvloop(out: Path) -> Path:
    """A folder whose `uvloop` fails to import, so turnbench falls back to asyncio's loop:
    the closed loop is measured on both, as a platform without uvloop would run it."""
    folder = out / "no-uvloop"
    folder.mkdir(exist_ok=True)
    (folder / "uvloop.py").write_text('raise ImportError("hidden by bench/throughput/run.py")\n')
    return folder


def _pct(d: dict[str, Any], key: str) -> float | None:
    value = d.get(key)
    return float(value) if value is not None else None


def closed_loop(server: StaticServer, out: Path, scale: float) -> list[dict[str, Any]]:
    duration = max(5.0, 15 * scale)
    rows: list[dict[str, Any]] = []
    for workers, loop in ((1, "uvloop"), (2, "uvloop"), (2, "asyncio")):
        for users in (32, 128):
            name = f"closed-{users}u-{workers}w-{loop}"
            log(f"{name}: {duration:.0f} s")
            load = {"mode": "users", "users": users, "duration_s": duration, "warmup_s": 2}
            cfg = config(name, server.url, workers, load)
            try:
                r = turnbench_run(name, cfg, out, server, loop=loop)
            except RunFailed as e:
                log(f"  {e}")
                rows.append({"users": users, "workers": workers, "loop": loop, "error": str(e)})
                continue
            req = r.requests
            rows.append(
                {
                    "users": users,
                    "workers": workers,
                    "loop": loop,
                    "problems": r.problems,
                    "requests_per_s": req["throughput"]["requests_per_s"],
                    "chunks_per_s": (req["throughput"]["requests_per_s"] or 0) * TOKENS,
                    "ok": req["ok"],
                    "failed": req["failed"],
                    "ok_rows_chunks_min_max": r.ok_chunks[1:],
                    "turnbench_cpu_pct": r.cpu_pct(duration),
                    "nginx_cpu_pct": r.nginx_cpu_pct,
                    "ttft_p50_ms": _pct(req["ttft_ms"], "p50"),
                    "ttft_p99_ms": _pct(req["ttft_ms"], "p99"),
                    "launch_to_first_send_s": r.first_send_wall - r.launch_wall,
                    "report_s": r.exit_wall - (r.first_send_wall + duration),
                    "folder": str(r.folder),
                }
            )
            log(
                f"  {_f(rows[-1]['requests_per_s'])} req/s, "
                f"CPU {_f(rows[-1]['turnbench_cpu_pct'])} %"
            )
    return rows


def open_loop(server: StaticServer, out: Path, scale: float) -> list[dict[str, Any]]:
    duration = max(4.0, 8 * scale)
    rows: list[dict[str, Any]] = []
    # (workers, rate, loop, max_in_flight): one worker up to its limit and past it (5,000/s:
    # without a cap it takes on more sessions than it can finish); two workers at the target
    runs: list[tuple[int, int, str, int | None]] = [
        (1, rate, "uvloop", None) for rate in (500, 1000, 2000, 5000)
    ]
    runs += [(2, 2000, "uvloop", None), (2, 5000, "uvloop", None), (2, 5000, "uvloop", 256)]
    for workers, rate, loop, cap in runs:
        name = f"open-{rate}-{workers}w-{loop}" + (f"-cap{cap}" if cap else "")
        log(f"{name}: {duration:.0f} s")
        load = {
            "mode": "session-rate",
            "rate": rate,
            "arrival": "poisson",
            "duration_s": duration,
            "warmup_s": 1,
            "max_in_flight": cap,
        }
        cfg = config(name, server.url, workers, load, turns=1, conversations=1000)
        try:
            r = turnbench_run(name, cfg, out, server, loop=loop)
        except RunFailed as e:
            log(f"  {e}")
            rows.append(
                {"rate": rate, "workers": workers, "loop": loop, "cap": cap, "error": str(e)}
            )
            continue
        req = r.requests
        lag = req["schedule_lag_ms"]
        sent_window = duration - 1  # warm-up excluded from the counts below
        rows.append(
            {
                "rate": rate,
                "workers": workers,
                "loop": loop,
                "cap": cap,
                "problems": r.problems,
                "cancelled": req["cancelled"],
                "gate_p99_ms": _pct(req["gate_wait_ms"], "p99"),
                "ttft_p50_ms": _pct(req["ttft_ms"], "p50"),
                "ttft_p99_ms": _pct(req["ttft_ms"], "p99"),
                "achieved_per_s": req["ok"] / sent_window,
                "ok": req["ok"],
                "failed": req["failed"],
                "lag_p50_ms": _pct(lag, "p50"),
                "lag_p99_ms": _pct(lag, "p99"),
                "lag_max_ms": _pct(lag, "max"),
                "turnbench_cpu_pct": r.cpu_pct(duration),
                "launch_to_first_send_s": r.first_send_wall - r.launch_wall,
                "folder": str(r.folder),
            }
        )
        log(f"  {rows[-1]['achieved_per_s']:.0f}/s, lag p99 {_f(rows[-1]['lag_p99_ms'], '.2f')} ms")
    return rows


def repeat(server: StaticServer, out: Path, scale: float, times: int = 3) -> list[dict[str, Any]]:
    """The target configurations again, `times` each, interleaved: the spread between runs
    on a shared VM is as large as many a change, so the targets are judged on the median."""
    closed_s, open_s = max(5.0, 12 * scale), max(4.0, 8 * scale)
    runs: dict[str, list[dict[str, Any]]] = {}
    for i in range(times):
        for users in (32, 128):
            name = f"repeat{i}-closed-{users}u-2w"
            log(f"{name}: {closed_s:.0f} s")
            load = {"mode": "users", "users": users, "duration_s": closed_s, "warmup_s": 2}
            try:
                r = turnbench_run(name, config(name, server.url, 2, load), out, server)
            except RunFailed as e:
                log(f"  {e}")
                continue
            runs.setdefault(f"closed loop, {users} users, 2 workers: req/s", []).append(
                {"value": r.requests["throughput"]["requests_per_s"], "folder": str(r.folder)}
            )
        name = f"repeat{i}-open-5000-2w"
        host = host_jitter(3.0)
        log(f"{name}: {open_s:.0f} s (host just before: {host['over_2ms']} pauses > 2 ms in 3 s)")
        load = {
            "mode": "session-rate",
            "rate": 5000,
            "arrival": "poisson",
            "duration_s": open_s,
            "warmup_s": 1,
        }
        try:
            r = turnbench_run(
                name, config(name, server.url, 2, load, turns=1, conversations=1000), out, server
            )
        except RunFailed as e:
            log(f"  {e}")
            continue
        lag = r.requests["schedule_lag_ms"]
        runs.setdefault("open loop, 5,000/s poisson, 2 workers: schedule lag p99 ms", []).append(
            {
                "value": _pct(lag, "p99"),
                "achieved": r.requests["ok"] / (open_s - 1),
                "note": f"host: {host['over_2ms']} pauses > 2 ms in 3 s before",
            }
        )
    rows = []
    for what, got in runs.items():
        kept = sorted((g for g in got if g["value"] is not None), key=lambda g: g["value"])
        values = [g["value"] for g in kept]
        rows.append(
            {
                "what": what,
                "runs": len(values),
                "median": statistics.median(values) if values else None,
                "values": values,
                "notes": [g.get("note") for g in kept],
            }
        )
        log(f"  {what}: {', '.join(f'{v:,.1f}' for v in values)}")
    return rows


def ttft(server: StaticServer, out: Path, scale: float) -> dict[str, Any]:
    duration = max(5.0, 8 * scale)
    log(f"ttft-4u: {duration:.0f} s")
    load = {"mode": "users", "users": 4, "duration_s": duration, "warmup_s": 1}
    r = turnbench_run("ttft-4u", config("ttft-4u", server.url, 1, load), out, server)
    req = r.requests
    return {
        "users": 4,
        "requests_per_s": req["throughput"]["requests_per_s"],
        "ttft_p50_ms": _pct(req["ttft_ms"], "p50"),
        "ttft_p99_ms": _pct(req["ttft_ms"], "p99"),
        "e2e_p50_ms": _pct(req["e2e_ms"], "p50"),
        "itl_p50_ms": _pct(req["itl_ms"], "p50"),
        "turnbench_cpu_pct": r.cpu_pct(duration),
        "folder": str(r.folder),
    }


def think_time_rss(server: StaticServer, out: Path, scale: float) -> dict[str, Any]:
    """10,000 sessions that sent one turn and now think for 60 s (arriving at 500/s)."""
    sessions = 10_000
    duration = max(10.0, 20 * scale)
    rate = sessions / duration
    log(f"rss-10k: {sessions} sessions at {rate:.0f}/s over {duration:.0f} s, think 60 s")
    load = {
        "mode": "session-rate",
        "rate": rate,
        "arrival": "constant",
        "duration_s": duration,
        "end": "cut",
    }
    cfg = config("rss-10k", server.url, 1, load, turns=20, conversations=1000)
    cfg["session"]["think_time"] = 60
    r = turnbench_run("rss-10k", cfg, out, server, interval_s=0.25)
    t0, t1 = r.first_send_wall, r.first_send_wall + duration
    per_s = [s for s in r.sampler.between(t0, t1)]
    return {
        "sessions": r.summary["per_conversation"]["sessions"],
        "requests_ok": r.requests["ok"],
        "peak_rss_mb": r.sampler.peak_rss_mb(t0, t1),
        "rss_at_start_mb": per_s[0].rss_kb / 1024 if per_s else None,
        "processes": max((s.processes for s in per_s), default=0),
        "vmhwm_mb": sum(r.sampler.hwm_kb.values()) / 1024,
        "turnbench_cpu_pct": r.sampler.cpu_percent(t0 + 1, t1),
        "folder": str(r.folder),
    }


def flat_memory(server: StaticServer, out: Path, scale: float) -> dict[str, Any]:
    """RSS every second over a steady closed loop: does memory grow with requests?

    Two workers, so the path that hands a user's next conversation to its worker (and keeps
    session ends for it) runs too; each process's growth is reported, as a worker that grows
    could hide behind one that gives memory back.
    """
    duration = max(20.0, 60 * scale)
    log(f"flat-32u: {duration:.0f} s closed loop, 2 workers, RSS every second")
    load = {"mode": "users", "users": 32, "duration_s": duration}
    cfg = config("flat-32u", server.url, 2, load)
    r = turnbench_run("flat-32u", cfg, out, server, interval_s=1.0)
    t0 = r.first_send_wall
    inside = r.sampler.between(t0, t0 + duration)
    series = [(round(s.t - t0, 1), round(s.rss_kb / 1024, 1)) for s in inside]
    after5 = [s for s in inside if s.t - t0 >= 5]
    growth_mb: list[float] = []
    if after5:
        first, last = after5[0].rss_by_pid, after5[-1].rss_by_pid
        growth_mb = sorted(
            round((last[pid] - first[pid]) / 1024, 1) for pid in first.keys() & last.keys()
        )
    return {
        "duration_s": duration,
        "workers": 2,
        "requests_ok": r.requests["ok"],
        "requests_per_s": r.requests["throughput"]["requests_per_s"],
        "rss_at_5s_mb": round(after5[0].rss_kb / 1024, 1) if after5 else None,
        "rss_end_mb": series[-1][1] if series else None,
        "rss_max_mb": max((mb for _, mb in series), default=None),
        "growth_per_process_mb": growth_mb,
        "series": series,
        "folder": str(r.folder),
    }


def profile(server: StaticServer, out: Path, scale: float) -> dict[str, Any]:
    """py-spy over the 1-worker closed loop: where a request's CPU goes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() and not shutil.which(spy):
        return {"error": "py-spy not installed (pip install py-spy)"}
    duration = max(5.0, 12 * scale)
    log(f"profile: py-spy over closed-32u-1w, {duration:.0f} s")
    raw = out / "profile.txt"
    load = {"mode": "users", "users": 32, "duration_s": duration, "warmup_s": 1}
    cfg = config("profile-32u-1w", server.url, 1, load)
    wrap = [spy, "record", "--format", "raw", "-r", "250", "-o", str(raw), "--"]
    try:
        r = turnbench_run("profile-32u-1w", cfg, out, server, wrap=wrap)
    except RunFailed as e:
        return {"error": str(e)}
    if not raw.exists():
        return {"error": "py-spy wrote no profile (ptrace not permitted?)"}
    return {
        "requests_per_s_under_profiler": r.requests["throughput"]["requests_per_s"],
        **summarize_profile(raw),
        "file": str(raw),
    }


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('fn')} ({path})"


LOAD_FRAMES = ("Runner.run (", "EventRecorder._writer (")
"""Frames of the load phase (the event loop's run, the events.db writer thread); the probe of
the server before the run also runs in an event loop and is left out by name."""


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Own and inclusive share of samples per function in the load phase (start-up and the
    post-run report are left out and counted apart), from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = everything = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ") and "(idle)" not in f]
        if not frames:
            continue
        everything += n
        if not any(mark in f for f in frames for mark in LOAD_FRAMES) or any(
            f.startswith("probe (") for f in frames
        ):
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    total = max(total, 1)
    return {
        "samples": total,
        "samples_all": everything,
        "load_share": round(100 * total / max(everything, 1), 1),
        "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "inclusive": [
            (f, round(100 * n / total, 1))
            for f, n in incl.most_common(top * 4)
            if "turnbench" in f or "aiohttp" in f or "asyncio" in f
        ][:top],
    }


def startup(server: StaticServer, out: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`turnbench --version` wall time, and launch-to-first-request of every run above."""
    log("startup: turnbench --version")
    cmd = [*turnbench_cmd(), "--version"]
    result: dict[str, Any] = {}
    if shutil.which("hyperfine"):
        export = out / "hyperfine.json"
        sh(
            "hyperfine",
            "-N",
            "--warmup",
            "2",
            "--runs",
            "10",
            "--export-json",
            str(export),
            " ".join(cmd),
        )
        if export.exists():
            res = json.loads(export.read_text())["results"][0]
            result = {"tool": "hyperfine", "mean_s": res["mean"], "max_s": res["max"]}
    if not result:
        times = []
        for _ in range(10):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        result = {"tool": "perf_counter x10", "mean_s": statistics.mean(times), "max_s": max(times)}
    for workers in (1, 2):
        lags = [
            r["launch_to_first_send_s"]
            for r in runs
            if r.get("workers") == workers and "launch_to_first_send_s" in r
        ]
        if lags:
            result[f"first_send_{workers}w_median_s"] = statistics.median(lags)
            result[f"first_send_{workers}w_max_s"] = max(lags)
            result[f"first_send_{workers}w_runs"] = len(lags)
    return result


# ---------------------------------------------------------------- report


def _f(value: Any, fmt: str = ",.0f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{unit}"


def _problems(row: dict[str, Any]) -> str:
    died = sum("died" in p for p in row.get("problems", []))
    hung = [p for p in row.get("problems", []) if p.startswith("hung")]
    out = [f"{died} worker(s) reported dead"] if died else []
    return "; ".join(out + hung) or "none"


def table(res: dict[str, Any]) -> str:
    """The markdown results of one benchmark run."""
    m = res["machine"]
    lines = [
        f"Measured {m['date']}: `nproc` = {m['nproc']}, {m['cpu']}, Python {m['python']}, "
        f"{m['turnbench']}, nginx {m['nginx']}, {m['wrk']}, Linux {m['kernel']}; "
        f"load average before the run {m['load_before']:.2f}. "
        f"Benchmark wall time {res.get('wall_s', 0):.0f} s.",
        "",
    ]
    if "wrk" in res:
        w = res["wrk"]
        lines += [
            "| machine limit (wrk) | req/s | p50 latency | nginx CPU |",
            "|---|---|---|---|",
            f"| wrk -t2 -c64, {w['duration_s']:.0f} s, same POST | **{_f(w['requests_per_s'])}** "
            f"| {_f(w['latency_p50_ms'], '.2f', ' ms')} | {_f(w['nginx_cpu_pct'], '.0f', ' %')} |",
            "",
        ]
    if "closed" in res:
        lines += [
            "| closed loop (users) | workers, loop | streamed req/s (64 chunks) | chunks/s "
            "| turnbench CPU | nginx CPU | TTFT p50 / p99 | failed | problems |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["closed"]:
            if "error" in r:
                lines.append(f"| {r['users']} users | {r['workers']}, {r['loop']} | {r['error']} |")
                continue
            lines.append(
                f"| {r['users']} users | {r['workers']}, {r['loop']} "
                f"| **{_f(r['requests_per_s'])}** "
                f"| {_f(r['chunks_per_s'])} | {_f(r['turnbench_cpu_pct'], '.0f', ' %')} "
                f"| {_f(r['nginx_cpu_pct'], '.0f', ' %')} "
                f"| {_f(r['ttft_p50_ms'], '.2f')} / {_f(r['ttft_p99_ms'], '.2f')} ms "
                f"| {r['failed']} | {_problems(r)} |"
            )
        lines.append("")
    if "open" in res:
        lines += [
            "| open loop (session-rate, poisson, 1 turn) | workers, loop | max_in_flight "
            "| achieved req/s | schedule lag p50 / p99 / max | cap wait p99 | turnbench CPU "
            "| failed / cancelled | problems |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["open"]:
            if "error" in r:
                lines.append(f"| {r['rate']:,}/s | {r['workers']}, {r['loop']} | {r['error']} |")
                continue
            lines.append(
                f"| {r['rate']:,}/s | {r['workers']}, {r['loop']} | {r['cap'] or 'none'} "
                f"| **{_f(r['achieved_per_s'])}** "
                f"| {_f(r['lag_p50_ms'], '.2f')} / {_f(r['lag_p99_ms'], '.2f')} "
                f"/ {_f(r['lag_max_ms'], '.1f')} ms "
                f"| {_f(r['gate_p99_ms'], '.1f', ' ms')} "
                f"| {_f(r['turnbench_cpu_pct'], '.0f', ' %')} | {r['failed']} / {r['cancelled']} "
                f"| {_problems(r)} |"
            )
        lines.append("")
    if "repeat" in res and isinstance(res["repeat"], list):
        lines += [
            "| target configuration, repeated (interleaved) | runs | median | every run |",
            "|---|---|---|---|",
        ]
        for r in res["repeat"]:
            notes = r.get("notes") or [None] * len(r["values"])
            every = ", ".join(
                (f"{v:,.1f}" if v < 100 else f"{v:,.0f}") + (f" ({note})" if note else "")
                for v, note in zip(r["values"], notes, strict=True)
            )
            med = r["median"]
            shown = f"{med:,.1f}" if med is not None and med < 100 else _f(med)
            lines.append(f"| {r['what']} | {r['runs']} | **{shown}** | {every} |")
        lines.append("")
    lines += ["| other | result |", "|---|---|"]
    if "jitter" in res:
        j = res["jitter"]
        lines.append(
            f"| host pauses: a spinning process pinned to each of the {j['cores']} cores, "
            f"{j['duration_s']:.0f} s, nothing else running "
            f"| {j['over_1ms']} gaps > 1 ms (all cores), "
            f"{j['over_2ms']} > 2 ms, {j['over_5ms']} > 5 ms; longest **{j['max_ms']:.1f} ms**; "
            f"{j['paused_ms']:.0f} ms lost in gaps > 0.5 ms |"
        )
    if "ttft" in res and "error" not in res["ttft"]:
        t = res["ttft"]
        lines.append(
            f"| client-added TTFT, 4 users ({_f(t['requests_per_s'])} req/s) "
            f"| p50 **{_f(t['ttft_p50_ms'], '.2f')} ms**, p99 {_f(t['ttft_p99_ms'], '.2f')} ms "
            f"(e2e p50 {_f(t['e2e_p50_ms'], '.2f')} ms) |"
        )
    if "rss" in res and "error" not in res["rss"]:
        r = res["rss"]
        lines.append(
            f"| peak RSS, {r['sessions']:,} sessions in 60 s think time (1 worker) "
            f"| **{_f(r['peak_rss_mb'], ',.0f', ' MB')}** (RSS {_f(r['rss_at_start_mb'])} MB "
            f"at the first request) |"
        )
    if "flat" in res and "error" not in res["flat"]:
        f = res["flat"]
        lines.append(
            f"| RSS over {f['duration_s']:.0f} s closed loop, 32 users, "
            f"{f.get('workers', 1)} worker(s) ({f['requests_ok']:,} requests) "
            f"| {_f(f['rss_at_5s_mb'], '.0f')} MB at 5 s → "
            f"{_f(f['rss_end_mb'], '.0f')} MB at the end (max {_f(f['rss_max_mb'], '.0f')} MB)"
            + (
                "; per process, 5 s → end: "
                + ", ".join(f"{mb:+.1f}" for mb in f["growth_per_process_mb"])
                + " MB"
                if f.get("growth_per_process_mb")
                else ""
            )
            + " |"
        )
    if "startup" in res:
        s = res["startup"]
        lines.append(
            f"| `turnbench --version` ({s['tool']}) | mean **{_f(s['mean_s'], '.3f', ' s')}**, "
            f"max {_f(s['max_s'], '.3f', ' s')} |"
        )
        for workers in (1, 2):
            if f"first_send_{workers}w_median_s" in s:
                lines.append(
                    f"| launch → first request sent, {workers} worker(s) "
                    f"({s[f'first_send_{workers}w_runs']} runs) "
                    f"| median **{s[f'first_send_{workers}w_median_s']:.2f} s**, "
                    f"max {s[f'first_send_{workers}w_max_s']:.2f} s |"
                )
    if "profile" in res and "own" in res["profile"]:
        p = res["profile"]
        lines += [
            "",
            f"py-spy, closed loop 32 users, 1 worker, 250 Hz: {p['samples']:,} samples of the "
            f"load phase ({p['load_share']} % of the process's {p['samples_all']:,}; the rest "
            f"is start-up and the report), {_f(p['requests_per_s_under_profiler'])} req/s under "
            "the profiler. Top functions by own time (C functions such as msgspec's decoder "
            "count as their Python caller's own time):",
            "",
            "| function | own % |",
            "|---|---|",
            *[f"| `{fn}` | {pct} |" for fn, pct in p["own"]],
        ]
    return "\n".join(lines) + "\n"


def write_readme(md: str) -> None:
    """Replace the generated part of bench/README.md's "Client throughput" section."""
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{md}{END}{tail}")


@contextlib.contextmanager
def phase(res: dict[str, Any], name: str) -> Iterator[None]:
    t = time.monotonic()
    yield
    res.setdefault("phase_s", {})[name] = round(time.monotonic() - t, 1)


def main() -> None:
    """Run the chosen phases and write results.json and results.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(PHASES), help="comma list of " + ",".join(PHASES)
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(PHASES):
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}")
    ensure_tools()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = (args.out or REPO / "bench" / "results" / f"throughput-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"machine": machine()}
    log(f"results in {out}; load average {res['machine']['load_before']:.2f}")
    t_all = time.monotonic()
    with StaticServer(workers=args.nginx_workers) as server:
        log(f"nginx on {server.url} ({args.nginx_workers} worker)")
        steps = {
            "jitter": lambda: host_jitter(max(5.0, 10 * args.scale)),
            "wrk": lambda: run_wrk(server, out, max(5.0, 10 * args.scale)),
            "closed": lambda: closed_loop(server, out, args.scale),
            "open": lambda: open_loop(server, out, args.scale),
            "repeat": lambda: repeat(server, out, args.scale),
            "ttft": lambda: ttft(server, out, args.scale),
            "rss": lambda: think_time_rss(server, out, args.scale),
            "flat": lambda: flat_memory(server, out, args.scale),
            "profile": lambda: profile(server, out, args.scale),
        }
        for name, step in steps.items():
            if name in only:
                with phase(res, name):
                    try:
                        res[name] = step()
                    except RunFailed as e:
                        log(str(e))
                        res[name] = {"error": str(e)}
                res.setdefault("load_after", {})[name] = os.getloadavg()[0]
                (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
        if "startup" in only:
            with phase(res, "startup"):
                res["startup"] = startup(
                    server, out, [*res.get("closed", []), *res.get("open", [])]
                )
    res["wall_s"] = time.monotonic() - t_all
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    md = table(res)
    (out / "results.md").write_text(md)
    print(md)
    if args.write_readme:
        write_readme(md)
        log(f"updated {README}")
    log(f"done in {res['wall_s']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
