"""Start-up time of turnbench's processes: the CLI's import, `--help`, the simulator's start and
a run's start, each the best of N wall-clock times (the machine's other load only ever adds
time, so the minimum is the figure closest to the code's own cost).

Why a script: every test starts `turnbench` and `turnbench sim` processes, and a user feels
the start on every command; this measures what they wait for, from outside the process.

Why `--against`: on a shared machine the load changes from minute to minute, so a before and
after taken at different times compare the load as much as the code. With `--against SRC` (a
`src` folder of another version, e.g. `git archive HEAD~1 src | tar -x -C /tmp/old`) every
measurement alternates between this tree and that one.

    .venv/bin/python bench/startup.py                          # best of 10
    .venv/bin/python bench/startup.py -n 20 --only help --against /tmp/old/src
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PYTHON = sys.executable
TURNBENCH = str(Path(PYTHON).with_name("turnbench"))
READY = "turnbench sim ready: "

Env = dict[str, str]
Measure = Callable[[Env], float]


def timed(argv: list[str], env: Env) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `argv`, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return took, usage.ru_utime + usage.ru_stime


def command(argv: list[str], which: int) -> Measure:
    """A measure of `argv`'s wall (`which` 0) or CPU (1) seconds."""
    return lambda env: timed(argv, env)[which]


def import_cli(env: Env) -> float:
    """Seconds `import turnbench.cli` takes inside a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter(); import turnbench.cli; print(time.perf_counter() - t)"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, check=True, env=env).stdout
    return float(out)


def start_sim(env: Env, *args: str) -> tuple[subprocess.Popen[str], str, float]:
    """Start `turnbench sim` as tests/conftest.py does; the process, its URL and the seconds to
    its ready line."""
    start = time.perf_counter()
    argv = [PYTHON, "-m", "turnbench", "sim", "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(READY):
            return proc, line[len(READY) :].strip().removesuffix("/v1"), time.perf_counter() - start
    raise RuntimeError("the simulator did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait()


def sim_ready_line(env: Env) -> float:
    """Seconds from starting the simulator to its ready line."""
    proc, _, took = start_sim(env, "--zero-delay")
    stop(proc)
    return took


def sim_first_answer(env: Env) -> float:
    """Seconds from starting the simulator to the answer of its first request (GET /v1/models)."""
    start = time.perf_counter()
    proc, url, _ = start_sim(env, "--zero-delay")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert conn.recv(12).startswith(b"HTTP/1.1 200")
    took = time.perf_counter() - start
    stop(proc)
    return took


def run_phases(env: Env, url: str, flags: tuple[str, ...]) -> tuple[float, float, float]:
    """Seconds of a `turnbench run` against `url` to its "run folder:" line (checked, probed,
    loaded, workers started), to the end of its run (events.db's `ended_wall_ns`: every session
    played, before the report) and to its exit."""
    out = tempfile.mkdtemp(prefix="startup-")
    argv = [TURNBENCH, "run", "--target", url, "--no-live", "--out", out, *flags]
    start, start_wall = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    folder_at, folder = 0.0, ""
    for line in proc.stdout:
        if line.startswith("run folder:"):
            folder_at, folder = time.perf_counter() - start, line.split(":", 1)[1].strip()
    if proc.wait() != 0 or not folder:
        raise RuntimeError(f"turnbench run failed: {argv}")
    exited = time.perf_counter() - start
    with contextlib.closing(sqlite3.connect(Path(folder) / "events.db")) as db:
        (ended_ns,) = db.execute("SELECT ended_wall_ns FROM runs").fetchone()
    shutil.rmtree(out, ignore_errors=True)
    return folder_at, ended_ns / 1e9 - start_wall, exited


def report(label: str, trees: dict[str, Env], n: int, measure: Measure) -> None:
    """Print the best and the median of `n` measurements on each tree, taken in turns, in ms."""
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(n):
        for name, env in trees.items():
            times[name].append(measure(env))
    for name, got in times.items():
        got.sort()
        shown = f"{label} [{name}]" if len(trees) > 1 else label
        print(f"{shown:<58} best {got[0] * 1e3:6.0f}  median {got[len(got) // 2] * 1e3:6.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="repetitions of each measurement")
    parser.add_argument("--only", choices=["import", "help", "sim", "run"], action="append")
    parser.add_argument("--against", type=Path, help="another version's src folder")
    args = parser.parse_args()
    only = set(args.only or ["import", "help", "sim", "run"])
    n = args.n
    trees = {"this tree": dict(os.environ)}
    if args.against is not None:
        trees["against"] = {**os.environ, "PYTHONPATH": str(args.against.resolve())}
    print(
        f"python {sys.version.split()[0]}; PYTHONDONTWRITEBYTECODE="
        f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; load {os.getloadavg()}"
    )
    if "import" in only:
        report("python -c pass", trees, n, command([PYTHON, "-c", "pass"], 0))
        report("import turnbench.cli (in-process)", trees, n, import_cli)
    if "help" in only:
        for argv in (["--version"], ["--help"], ["run", "--help"], ["sim", "--help"]):
            report(f"turnbench {' '.join(argv)}", trees, n, command([TURNBENCH, *argv], 0))
            report("  its CPU time", trees, n, command([TURNBENCH, *argv], 1))
    if "sim" in only:
        report("sim: start to its ready line", trees, n, sim_ready_line)
        report("sim: start to its first answered request", trees, n, sim_first_answer)
    if "run" in only:
        proc, url, _ = start_sim(dict(os.environ), "--zero-delay")
        try:
            for flags in (("--sessions", "1", "--turns", "1"), ()):
                phases: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
                for _ in range(max(3, n // 2)):
                    for name, env in trees.items():
                        phases[name].append(run_phases(env, url, flags))
                label = " ".join(flags) or "(bare: 100 sessions x 5 turns)"
                for name, got in phases.items():
                    for i, what in enumerate(("to 'run folder:'", "to the run's end", "to exit")):
                        ordered = sorted(p[i] for p in got)
                        shown = f"run {label} {what}" + (f" [{name}]" if len(trees) > 1 else "")
                        print(
                            f"{shown:<58} best {ordered[0] * 1e3:6.0f}  median "
                            f"{ordered[len(ordered) // 2] * 1e3:6.0f} ms"
                        )
        finally:
            stop(proc)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
