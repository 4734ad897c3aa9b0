"""The server under test: start the built-in simulator if no URL is given, and probe it.

Why probe first: an unreachable server or a wrong model must be one clear error before the
run starts, not ten thousand failed rows; an API the server does not serve is one clear line
at the end of the run (`unserved_api`). The server's
`/tokenize`, which calibrates text lengths (`tokens.calibrate`), is asked here too: this is the
module that talks to the server before the run.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from turnbench.client.fetch import fetch_json
from turnbench.errors import TargetError
from turnbench.tokens import TextSizer
from turnbench.tokens.calibrate import calibrate as calibrate_by

SIM_READY = "turnbench sim ready: "


@dataclass
class Target:
    """A resolved target: base URL (ending in /v1), model, and its context length if known."""

    url: str
    model: str
    max_model_len: int | None
    builtin: subprocess.Popen[str] | None = None

    def close(self) -> None:
        """Stop the built-in simulator, if this run started one."""
        proc = self.builtin
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_builtin_sim(
    args: list[str], timeout_s: float = 30.0
) -> tuple[subprocess.Popen[str], str]:
    """Start `turnbench sim` on a free 127.0.0.1 port; return the process and its /v1 URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turnbench",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--exit-with-parent",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # Ctrl-C in the terminal reaches turnbench, which stops it
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(SIM_READY):
            proc.stdout.close()
            return proc, line[len(SIM_READY) :].strip()
    proc.kill()
    err = proc.stderr.read().strip() if proc.stderr else ""
    said = err.splitlines()[-1].removeprefix("error: ") if err else "no output"
    raise TargetError(f"the built-in simulator did not start (target.sim_args): {said}")


_ENDPOINT_SUFFIXES = ("/chat/completions", "/completions", "/responses", "/messages", "/models")


def api_roots(url: str) -> list[str]:
    """The API roots to try for a target URL, in order, as users of other tools type it.

    Why several: peers take the bare host (AIPerf `--url localhost:8000`, GuideLLM, vllm bench
    `--base-url`), the openai SDK takes `.../v1`, and some paste a whole endpoint. A scheme is
    added when missing, a trailing slash and a pasted endpoint path are dropped; a URL not
    ending in /v1 is tried with /v1 first, then as given (servers that serve the API at root).
    """
    root = url.strip()
    if "://" not in root:
        root = "http://" + root
    root = root.rstrip("/")
    for suffix in _ENDPOINT_SUFFIXES:
        if root.endswith(suffix) and root.removesuffix(suffix).endswith("/v1"):
            root = root.removesuffix(suffix)
            break
    return [root] if root.endswith("/v1") else [root + "/v1", root]


async def probe(
    url: str,
    model: str,
    headers: dict[str, str],
    *,
    verify_tls: bool = True,
    ca_pem: str | None = None,
    timeout_s: float = 10,
) -> Target:
    """Find the API root of `url` (GET {root}/models on each of `api_roots`), check the server
    answers, resolve `model: auto`, and read max_model_len. `ca_pem`: the CAs to trust
    instead of the system's (`target.ca_bundle`)."""
    tried: list[str] = []
    for root in api_roots(url):
        endpoint = root + "/models"
        try:
            status, data = await fetch_json(
                endpoint,
                headers=headers,
                timeout_s=timeout_s,
                verify_tls=verify_tls,
                ca_pem=ca_pem,
            )
        except (OSError, TimeoutError, ValueError) as e:
            raise TargetError(f"cannot reach the server at {endpoint}: {_why(e)}") from None
        if status in (401, 403):
            raise TargetError(f"{endpoint}: HTTP {status}: check the API key variable")
        if status == 200 and isinstance(data, dict):
            return await _resolve_model(root, model, data, headers, verify_tls, ca_pem)
        tried.append(f"{endpoint} answered HTTP {status}")
    raise TargetError(f"no OpenAI-compatible API at {url}: " + "; ".join(tried))


TLS_HINT = "set target.ca_bundle / --ca-bundle, or --insecure"
"""How to get past a certificate the client does not trust."""
NAME_HINT = "use a host name the certificate holds, or --insecure"
"""How to get past a certificate issued for another name."""
_NAME_MISMATCH = frozenset({62, 64})
"""OpenSSL's verify codes of a certificate for another host name or IP address."""


def _why(err: BaseException) -> str:
    """Why a connection failed, on one line; for TLS, OpenSSL's reason and how to fix it.

    Why not `str(err)`: an ssl error reads `[SSL: CERTIFICATE_VERIFY_FAILED] certificate
    verify failed: self-signed certificate (_ssl.c:1000)`, library tag and C source line
    included; the user needs the reason and what to set.
    """
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = err.verify_message or err.reason or "unknown reason"
        hint = NAME_HINT if err.verify_code in _NAME_MISMATCH else TLS_HINT
        why = f"certificate verify failed: {reason} ({hint})"
    elif isinstance(err, ssl.SSLError) and err.reason:
        why = f"TLS handshake failed: {err.reason.lower().replace('_', ' ')}"
    else:
        why = str(err) or type(err).__name__
    return " ".join(why.split())


async def _resolve_model(
    root: str,
    model: str,
    data: dict[str, object],
    headers: dict[str, str],
    verify_tls: bool,
    ca_pem: str | None,
) -> Target:
    """Pick the model from a /models answer and find its context length."""
    listed = data.get("data")
    models = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    ids = [str(m.get("id")) for m in models]
    if model == "auto":
        if not ids:
            raise TargetError(f"{root}/models lists no model; set target.model (--model)")
        model = ids[0]
    elif ids and model not in ids:
        raise TargetError(f"model {model!r} is not served at {root}; it serves {', '.join(ids)}")
    info = next((m for m in models if m.get("id") == model), {})
    max_len = _int_or_none(info.get("max_model_len"))
    if max_len is None:
        max_len = await _llama_cpp_context(root, headers, verify_tls, ca_pem)
    return Target(url=root, model=model, max_model_len=max_len)


async def _llama_cpp_context(
    url: str, headers: dict[str, str], verify_tls: bool, ca_pem: str | None
) -> int | None:
    """llama.cpp reports its per-slot context (not the model's trained one) at /props."""
    root = url.rstrip("/").removesuffix("/v1")
    try:
        status, data = await fetch_json(
            root + "/props", headers=headers, timeout_s=5, verify_tls=verify_tls, ca_pem=ca_pem
        )
    except (OSError, TimeoutError, ValueError):
        return None
    if status != 200:
        return None
    settings = data.get("default_generation_settings") if isinstance(data, dict) else None
    return _int_or_none(settings.get("n_ctx")) if isinstance(settings, dict) else None


def _int_or_none(value: object) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(value)  # type: ignore[call-overload]
    return None


_NOT_SERVED = (404, 405)
"""Statuses of a path the server does not route."""


def unserved_api(db: Path, api: str, endpoint: str) -> str | None:
    """The one-line error of a run in which the server served not one request and answered
    every attempt 404 or 405: it does not serve this API at `endpoint`. None otherwise.

    Why after the run and not probed before it: a probe is a request of its own, which a
    server under test counts (the simulator's outcome counters, a server's access log and
    metrics); the run's own attempts already say it, and this turns them into one line.
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        total, unrouted, status, said = conn.execute(
            "SELECT COUNT(*), SUM(http_status IN (?, ?)), MAX(http_status), MAX(error_message) "
            "FROM requests",
            _NOT_SERVED,
        ).fetchone()
    finally:
        conn.close()
    if not total or unrouted != total:
        return None
    answer = " ".join(str(said or "no message").split())[:200]
    return (
        f"the server does not serve the {api} API (target.api): all {total} attempts to POST "
        f"{endpoint} were answered HTTP {status}: {answer}"
    )


async def _tokenize_count(
    root: str,
    model: str,
    text: str,
    headers: dict[str, str],
    verify_tls: bool,
    ca_pem: str | None,
    timeout_s: float,
) -> int | None:
    """Tokens of `text` from `{root}/tokenize`: vLLM/SGLang/simulator body, then llama.cpp's."""
    for body in ({"model": model, "prompt": text}, {"content": text}):
        try:
            status, data = await fetch_json(
                root + "/tokenize",
                headers=headers,
                body=body,
                timeout_s=timeout_s,
                verify_tls=verify_tls,
                ca_pem=ca_pem,
            )
        except (OSError, TimeoutError, ValueError):
            continue
        if status != 200 or not isinstance(data, dict):
            continue
        if isinstance(data.get("count"), int):
            return int(data["count"])
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
    return None


async def calibrate(
    url: str,
    model: str,
    headers: dict[str, str],
    *,
    tokenizer_json: str | None = None,
    verify_tls: bool = True,
    ca_pem: str | None = None,
    timeout_s: float = 10,
) -> TextSizer:
    """The sizer for this server: its tokenizer.json, else its `/tokenize` (the server's root,
    `url` without `/v1`), else approximate (see `tokens.calibrate`). `verify_tls` and
    `ca_pem` as for the probe."""
    root = url.rstrip("/").removesuffix("/v1")

    async def count(text: str) -> int | None:
        return await _tokenize_count(root, model, text, headers, verify_tls, ca_pem, timeout_s)

    return await calibrate_by(count, tokenizer_json=tokenizer_json)
