"""What a run reads and checks before it starts: the CA bundle, the sizer of texts for the
server's tokenizer, the workload's first conversation, whether the API can send it, the API
key's headers.

Why apart from `run.py`: each of these can refuse the run with a one-line error, before the
run folder is made; `run.execute` only calls them in order.
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

from turnbench.client.apis import api_for
from turnbench.client.h1 import tls_context
from turnbench.config import RunConfig
from turnbench.errors import InputError
from turnbench.pacing.stages import replays_trace
from turnbench.target import Target, calibrate
from turnbench.tokens import TextSizer
from turnbench.workload.config import DatasetWorkload, SyntheticAgentWorkload
from turnbench.workload.conversation import Conversation
from turnbench.workload.dataset import load_dataset
from turnbench.workload.sources import conversations


def open_workload(
    cfg: RunConfig, base_dir: Path, sizer: TextSizer
) -> tuple[Iterator[Conversation], list[float] | None]:
    """The conversation stream, checked up front; recorded start times for trace arrivals."""
    stream = conversations(cfg.workload, seed=cfg.seed, base_dir=base_dir, sizer=sizer)
    first = next(stream, None)
    if first is None:
        raise InputError("the workload has no conversation to play", field="workload")
    stream = itertools.chain([first], stream)
    if not replays_trace(cfg):
        return stream, None
    plans = sorted(stream, key=lambda c: c.start_s or 0.0)
    return iter(plans), [c.start_s or 0.0 for c in plans]


def read_ca_pem(cfg: RunConfig, base_dir: Path) -> str | None:
    """The text of `target.ca_bundle` (None when unset), read and checked before the run.

    Why the text and not the path: the probe, the calibration and every worker (a Ray actor
    on another machine too) build their TLS contexts from it, so the file is read once, here,
    and a missing or bad one stops the run before it starts, naming the file.
    """
    path = cfg.target.ca_bundle
    if path is None:
        return None
    file = Path(path) if Path(path).is_absolute() else base_dir / path

    def bad(message: str) -> InputError:
        return InputError(message, file=str(file), field="target.ca_bundle")

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise bad(f"cannot read the CA bundle: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise bad("the CA bundle is not PEM text") from None
    try:
        certificates = tls_context(True, text).cert_store_stats()["x509"]
    except ssl.SSLError:
        certificates = 0
    if not certificates:
        raise bad("the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return text


async def text_sizer(
    cfg: RunConfig, target: Target, headers: dict[str, str], base_dir: Path, ca_pem: str | None
) -> TextSizer:
    """Size texts for the server's tokenizer: tokenizer.json, else /tokenize, else approximate.

    Why after the probe: /tokenize is the probed server's; the workload is opened after this,
    since a source's texts (system prompts, trace blocks) are written to length with it.
    """
    path = cfg.target.tokenizer_json
    if path is not None and not Path(path).is_absolute():
        path = str(base_dir / path)
    return await calibrate(
        target.url,
        target.model,
        headers,
        tokenizer_json=path,
        verify_tls=cfg.target.verify_tls,
        ca_pem=ca_pem,
    )


def _uses_tools(conversation: Conversation) -> bool:
    if conversation.tools:
        return True
    return any(
        m.get("role") == "tool" or m.get("tool_calls")
        for turn in conversation.turns
        for m in (*turn.messages, *((turn.reply,) if turn.reply else ()))
    )


def check_api_fits_workload(cfg: RunConfig, base_dir: Path) -> None:
    """The completions API has no tool calls: refuse a dataset with tool turns, or synthetic
    agents, up front."""
    workload = cfg.workload
    if cfg.target.api == "completions" and isinstance(workload, SyntheticAgentWorkload):
        raise InputError(
            "synthetic agents call tools, which the completions API cannot send; use "
            "`target.api: chat` (or responses, anthropic)",
            field="target.api",
        )
    if cfg.target.api != "completions" or not isinstance(workload, DatasetWorkload):
        return
    path = workload.path if workload.path.is_absolute() else base_dir / workload.path
    for conversation in load_dataset(path, workload.format, workload).conversations:
        if _uses_tools(conversation):
            raise InputError(
                f"conversation {conversation.id!r} has tool calls, which the completions API "
                "cannot send; use `target.api: chat` (or responses, anthropic)",
                file=str(path),
                field="target.api",
            )


def auth_headers(cfg: RunConfig) -> dict[str, str]:
    """The API key's headers in the API's way (a Bearer token, Anthropic's `x-api-key`)."""
    key = os.environ.get(cfg.target.api_key_env)
    return api_for(cfg.target).auth(key) if key else {}
