"""A raw HTTP/1.1 client and a canned server, the baselines of `agent_scale.py`.

The raw client replays request bytes on a blocking socket and does nothing else with the
answer than find its first `data:` line and its end: the floor of moving those bytes. The
canned server reads each request whole and answers it with the same recorded bytes:

    .venv/bin/python bench/raw_http.py REPLY_FILE     # prints its port, serves until killed
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from turnbench.client.h1 import request_head

WARM_TURNS = 4
"""Requests at the start of a replay that build the context and are not measured."""


def replay(url: str, path: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay the request bytes on a blocking socket: CPU and TTFT of the measured turns (the
    first `data:` line after the response head), and the last response's bytes."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    head_headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    requests = []
    for body in bodies:
        payload = msgspec.json.encode(body)
        head = request_head("POST", "/v1" + path, f"{host}:{port}", head_headers, len(payload))
        requests.append(head + payload)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cpu, ttft = [], []
    data = b""
    for i, request in enumerate(requests):
        c0 = time.process_time()
        t0 = time.perf_counter_ns()
        sock.sendall(request)
        data = b""
        first = None
        while not data.endswith(b"0\r\n\r\n"):  # the end of the chunked SSE body
            got = sock.recv(1 << 20)
            if not got:
                raise SystemExit("the server closed the connection")
            data += got
            if first is None and b"data:" in data.partition(b"\r\n\r\n")[2]:
                first = time.perf_counter_ns()
        if i >= WARM_TURNS:
            cpu.append(time.process_time() - c0)
            ttft.append(((first or 0) - t0) / 1e6)
    sock.close()
    return {"cpu": cpu, "ttft": ttft, "response": data}


def serve_canned(response: Path) -> None:
    """(In a child process.) Read each request whole, answer it with the same recorded bytes.

    Why: the simulator spends 20-120 ms of its own CPU on a 128k-token prompt (tokenizing,
    hashing blocks), and that time moves with the machine's load by more than the client's
    whole cost; a server that does nothing but read the request leaves the client's part
    of TTFT visible."""
    reply = response.read_bytes()
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                got = conn.recv(1 << 20)
                if not got:
                    break
                buf += got
            if b"\r\n\r\n" not in buf:
                conn.close()
                break
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buf) < length:
                buf += conn.recv(1 << 20)
            buf = buf[length:]
            conn.sendall(reply)


class Canned:
    """The canned server's child process."""

    def __init__(self, response: bytes) -> None:
        self._dir = tempfile.TemporaryDirectory()
        path = Path(self._dir.name) / "reply.http"
        path.write_bytes(response)
        cmd = [sys.executable, __file__, str(path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.v1 = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._dir.cleanup()


if __name__ == "__main__":
    serve_canned(Path(sys.argv[1]))
