"""A Ctrl-C while the run spawns a process (a worker, the events.db writer) cannot break the
child's start: the parent takes it once the child has all it needs, and the child prints no
traceback (`turnbench.entry.start_uninterrupted`).

The case is a real Python program in its own process, which sends itself SIGINT in the middle
of `Process.start()`, before the child's start-up data is written.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    from turnbench.entry import start_uninterrupted

    def child(path):
        open(path, "w").write("started")

    class Process(mp.get_context("spawn").Process):
        def start(self):
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C before the child exists
            time.sleep(0.05)
            super().start()

    if __name__ == "__main__":
        proc = Process(target=child, args=(sys.argv[1],))
        try:
            start_uninterrupted(proc)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted once the child had started:", proc.pid is not None)
        proc.join()
        print("child exit code", proc.exitcode)
    """
)


def test_a_ctrl_c_while_a_child_spawns_waits_for_the_child(tmp_path: Path) -> None:
    program = tmp_path / "spawn.py"
    program.write_text(PROGRAM)
    flag = tmp_path / "started"
    proc = subprocess.run(
        [sys.executable, str(program), str(flag)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "interrupted once the child had started: True",
        "child exit code 0",
    ]
    assert proc.stderr == ""
    assert flag.read_text() == "started"
