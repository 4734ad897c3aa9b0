"""The one validated `RunConfig`: YAML file, then `--set` overrides, then flags.

Why strict: a benchmark that silently ignores a misspelt key measures something else than the
user asked for. Every model forbids unknown keys and describes every field; errors name the
file, the key, the value and what was expected, on one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from turnbench.cache.config import CacheConfig
from turnbench.distributions import Distribution
from turnbench.errors import InputError
from turnbench.slo import SloConfig
from turnbench.workload.config import SyntheticWorkload, WorkloadConfig

SESSION_HEADER_PRESETS = {
    "session-id": "X-Session-ID",
    "affinity": "X-Session-Affinity",
    "smg": "X-SMG-Routing-Key",
    "aibrix": "x-aibrix-session-key",
    "dynamo": "X-Dynamo-Session-ID",
}
"""Named presets for the sticky-routing header; any other value is used as the header name."""

SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Per-request time limits, each reported as its own error kind."""

    connect_s: float = Field(10.0, gt=0, description="Time to open a connection.")
    first_token_s: float = Field(
        120.0, gt=0, description="Time from send to the first streamed token."
    )
    idle_s: float = Field(60.0, gt=0, description="Longest gap between two streamed chunks.")
    total_s: float = Field(600.0, gt=0, description="Time for the whole request.")


class TargetConfig(_Strict):
    """The server under test."""

    url: str | None = Field(
        None,
        description="The server: a bare host (http://127.0.0.1:8000, localhost:8000) or its API "
        "root (http://127.0.0.1:8000/v1); the root is found by probing /v1/models, then "
        "/models. Unset: start the built-in simulator on a free 127.0.0.1 port.",
    )
    api: Literal["chat", "completions"] = Field(
        "chat", description="chat: /chat/completions with messages; completions: rendered prompt."
    )
    model: str = Field("auto", description="Model name; `auto` takes the first of /v1/models.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key (sent as a Bearer token; "
        "never written anywhere).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers on every request."
    )
    verify_tls: bool = Field(True, description="Verify TLS certificates (https targets).")
    ca_bundle: str | None = Field(
        None,
        description="PEM file of the CAs to trust instead of the system's store when verifying "
        "an https server (a private CA); a relative path resolves against the config file's "
        "folder. Unset: the system's store. Ignored when verify_tls is false.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Per-request limits.")
    replica_header: str | None = Field(
        "x-served-by",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Response header naming the replica that served a request (the "
        "simulator's x-served-by, or what a router adds): its value is recorded per attempt, "
        "and the report's session affinity comes from it. Null: not read.",
    )
    tokenizer_json: str | None = Field(
        None,
        description="Path to the server's Hugging Face tokenizer.json (needs the `tokenizers` "
        "package; nothing is downloaded): texts of a token length are measured with it. Unset: "
        "the server's /tokenize calibrates lengths, else they are approximate.",
    )
    sim_args: list[str] = Field(
        default_factory=list,
        description="Extra arguments for the built-in simulator when no url is set, "
        "e.g. ['--set', 'max_num_seqs=8', '--fault', 'http500=0.05'].",
    )
    metrics_url: str | None = Field(
        None,
        pattern=r"^(https?://)?[^\s/?#:]+(:\d+)?(/\S*)?$",
        description="The server's Prometheus metrics, scraped during the run into events.db "
        "(http://host:8000/metrics; http:// is added to a bare host:port/path). Unset: the "
        "API root without /v1, plus /metrics.",
    )
    metrics_interval_s: float = Field(
        1.0,
        ge=0,
        description="Seconds between two scrapes of metrics_url (each times out after 0.8 of "
        "it, at most 5 s); 0 turns scraping off.",
    )


class RetryConfig(_Strict):
    """How the `retry` failure policy retries a failed turn."""

    max_attempts: int = Field(3, ge=1, description="Attempts per turn, the first included.")
    backoff_s: float = Field(0.5, ge=0, description="First backoff; doubles every attempt.")
    max_backoff_s: float = Field(8.0, ge=0, description="Upper bound of one backoff.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random +- fraction of each backoff.")
    then: Literal["continue", "abort"] = Field(
        "continue", description="What to do once every attempt of a turn failed."
    )


class OutageConfig(_Strict):
    """What sessions do while the target is unreachable (connection refused, DNS failure, a
    reset before any byte): wait for it, without a hot loop, then resume spread out."""

    backoff_s: float = Field(
        0.1, gt=0, description="A session's first wait after an unreachable attempt; doubles."
    )
    max_backoff_s: float = Field(2.0, gt=0, description="Upper bound of one such wait.")
    breaker_after: int = Field(
        3,
        ge=1,
        description="Unreachable attempts in a row (of a worker, no success between) that open "
        "the circuit breaker: every session then waits behind one probe of the target.",
    )
    probe_max_interval_s: float = Field(
        0.5, gt=0, description="Longest pause between two probes while the breaker is open."
    )
    resume_spread_s: float = Field(
        1.0,
        ge=0,
        description="When the target is back, waiting sessions resume at random times over "
        "this many seconds (no thundering herd).",
    )
    max_wait_s: float = Field(
        60.0,
        gt=0,
        description="How long conversations wait for an unreachable target; past it the run "
        "ends, saying so.",
    )


class SessionConfig(_Strict):
    """How one conversation is played."""

    history: Literal["live", "dataset"] = Field(
        "live",
        description="live: append the server's replies; dataset: replay the recorded replies "
        "(the server's reply only gates timing).",
    )
    think_time: Distribution = Field(
        default_factory=Distribution,
        description="Pause between a reply and the next turn, seconds (a number or a "
        "distribution: fixed, exponential, lognormal, uniform, normal).",
    )
    dataset_think_time: bool = Field(
        True, description="Use the dataset's recorded think time where a turn has one."
    )
    max_tokens: int = Field(128, ge=1, description="Output tokens when a turn does not say.")
    ignore_eos: bool = Field(
        False, description="Send ignore_eos so the server writes exactly max_tokens."
    )
    max_context_tokens: int | None = Field(
        None,
        ge=1,
        description="Context limit (prompt + max_tokens). Unset: the server's max_model_len "
        "when /v1/models reports it.",
    )
    context_policy: Literal["truncate", "stop", "send"] = Field(
        "truncate",
        description="When the next request would pass max_context_tokens: truncate (drop "
        "oldest turns, keep the system prompt), stop (end the session as context_full), "
        "send (send it anyway).",
    )
    on_failure: Literal["continue", "retry", "abort"] = Field(
        "continue",
        description="continue: record the failure, build the next turn from the last good "
        "context; retry: see `retry`; abort: skip the rest of the conversation.",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry settings.")
    outage: OutageConfig = Field(
        default_factory=OutageConfig,
        description="Waiting out an unreachable target (its attempts do not use up `retry`).",
    )
    session_header: str = Field(
        "X-Session-ID",
        description="Sticky-routing header carrying the session id; presets: "
        + ", ".join(f"{k} ({v})" for k, v in SESSION_HEADER_PRESETS.items()),
    )
    session_token_header: str | None = Field(
        None,
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Response header carrying a router-issued session token (llm-d's "
        "x-session-token): the value the latest response of a session carried is sent back, "
        "under the same name, on the session's later requests. Unset: nothing is echoed.",
    )
    turn_header: str = Field("X-Turn-Index", description="Header carrying the turn number.")
    conversation_header: str = Field(
        "X-Conversation-ID", description="Header carrying the dataset's conversation id."
    )
    id_in_body: Literal["none", "user", "metadata"] = Field(
        "none", description="Also put the session id in the body's `user` or `metadata`."
    )

    @property
    def session_header_name(self) -> str:
        """The header name, with presets resolved."""
        return SESSION_HEADER_PRESETS.get(self.session_header, self.session_header)


class LoadConfig(_Strict):
    """When sessions start and how many run at once (see docs/load-modes.md)."""

    mode: Literal["parallel", "sequential", "session-rate", "users"] = Field(
        "users",
        description="parallel: all sessions start at t=0; sequential: one conversation after "
        "another; session-rate: sessions arrive open-loop at `rate`; users: `users` "
        "concurrent users, each playing one conversation after another (closed loop).",
    )
    sessions: int | None = Field(
        None, ge=1, description="Sessions to play in all (parallel: how many start at t=0)."
    )
    rate: float | None = Field(None, gt=0, description="session-rate: sessions per second.")
    arrival: Literal["poisson", "constant", "gamma", "trace"] = Field(
        "poisson",
        description="session-rate arrival process; trace: the dataset's recorded start times.",
    )
    burstiness: float = Field(
        1.0, gt=0, description="gamma: shape (1 = poisson, < 1 burstier, > 1 more regular)."
    )
    time_scale: float = Field(
        1.0, gt=0, description="trace arrivals: multiply recorded times by this."
    )
    users: int = Field(4, ge=1, description="users: concurrent users.")
    max_sessions: int | None = Field(None, ge=1, description="Cap on concurrent sessions.")
    max_in_flight: int | None = Field(None, ge=1, description="Cap on concurrent requests.")
    duration_s: float | None = Field(None, gt=0, description="Stop starting work after this.")
    max_requests: int | None = Field(None, ge=1, description="Stop after this many requests.")
    warmup_s: float = Field(
        0.0,
        ge=0,
        description="Requests intended before this are recorded as warm-up and "
        "left out of the metrics.",
    )
    end: Literal["drain", "cut"] = Field(
        "drain",
        description="At the limit: drain (let sessions in flight finish, up to drain_timeout_s) "
        "or cut (cancel them at once).",
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="Longest drain at the end.")

    @model_validator(mode="after")
    def _check(self) -> LoadConfig:
        if self.mode == "session-rate" and self.rate is None and self.arrival != "trace":
            raise ValueError("mode session-rate needs `rate` (sessions per second)")
        if self.mode != "session-rate" and self.rate is not None:
            raise ValueError(f"`rate` is for mode session-rate, not {self.mode}")
        return self

    @property
    def waits_for_session_ends(self) -> bool:
        """Whether starting sessions depends on others ending: a closed-loop user starts its
        next conversation, or a `max_sessions` place is freed. Then workers report every
        session's end at once, else with their regular batches."""
        return self.mode in ("users", "sequential") or self.max_sessions is not None

    @property
    def chains_sessions(self) -> bool:
        """Whether a closed-loop user's next conversation goes, while the current one still
        plays, to the worker playing it, to start there the moment it ends: the news of the
        end need not reach the coordinator and come back first. Not with `max_sessions`: a
        place would be held by a conversation that has not started."""
        return self.mode in ("users", "sequential") and self.max_sessions is None


class EngineConfig(_Strict):
    """Where sessions run: this process, worker processes, or Ray actors."""

    kind: Literal["local", "ray"] = Field(
        "local", description="local: this machine; ray: actors of a Ray cluster."
    )
    workers: int | Literal["auto"] = Field(
        1,
        description="Worker processes (or Ray actors); each owns the sessions it starts. "
        "1 runs everything in this process; auto: one per CPU core.",
    )
    ray_address: str | None = Field(
        None,
        description="ray: cluster address (`auto`, `ray://host:10001`); unset starts a local "
        "Ray instance.",
    )

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if isinstance(self.workers, int) and self.workers < 1:
            raise ValueError("workers must be at least 1 (or auto)")
        return self

    def worker_count(self) -> int:
        """The number of workers, `auto` resolved to the number of CPU cores."""
        if self.workers == "auto":
            return max(1, os.cpu_count() or 1)
        return self.workers


class RunConfig(_Strict):
    """Everything one run needs; written back, resolved and without secrets, to the run folder."""

    name: str = Field("run", description="Run name, part of the run folder's name.")
    seed: int = Field(0, description="Seed of every random choice of the run.")
    out_dir: str = Field("runs", description="Folder that receives the run folders.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Workers.")
    target: TargetConfig = Field(default_factory=TargetConfig, description="The server.")
    workload: WorkloadConfig = Field(
        default_factory=lambda: SyntheticWorkload(type="synthetic"),
        description="Where conversations come from.",
    )
    session: SessionConfig = Field(default_factory=SessionConfig, description="Sessions.")
    load: LoadConfig = Field(default_factory=LoadConfig, description="Load mode and limits.")
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="The prefix cache: ideal prefix and salt."
    )
    slo: SloConfig | None = Field(
        None, description="Service-level objectives in named tiers, judged as goodput."
    )

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret-looking header value removed."""
        data = self.model_dump(mode="json")
        headers = data["target"]["headers"]
        for key in headers:
            if key.lower() in SECRET_HEADERS or "key" in key.lower() or "token" in key.lower():
                headers[key] = "<redacted>"
        return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"cannot set {dotted}: {key} is not a section", field=dotted)
        node = child
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one `--set dotted.key=value`; the value is read as YAML (numbers, lists...)."""
    if "=" not in item:
        raise InputError(f"--set expects dotted.key=value, got {item!r}", field="--set")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _line_of(text: str | None, parts: list[str]) -> int | None:
    """The 1-based line of a dotted key in the YAML text (the deepest part found)."""
    if not text:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_validation(
    err: ValidationError, source: str, data: dict[str, Any], text: str | None = None
) -> InputError:
    """One line from pydantic's first error: the dotted key, what was wrong, the value."""
    first = err.errors()[0]
    parts: list[str] = []
    value: Any = data
    for part in first["loc"]:
        if (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        ):
            container: Any = value
            value = container[part]
            parts.append(str(part))
        elif isinstance(value, dict) and part in _UNION_TAGS:
            continue  # the discriminator pydantic adds for a tagged union
        else:
            parts.append(str(part))
            value = None
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "union_tag_invalid":
        parts.append("type")
        value = first["ctx"]["tag"]
        msg = "unknown workload type; expected " + ", ".join(sorted(_UNION_TAGS))
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    more = f" (+{len(err.errors()) - 1} more errors)" if len(err.errors()) > 1 else ""
    return InputError(
        f"{msg}{shown}{more}",
        file=source,
        line=_line_of(text, parts),
        field=".".join(parts) or None,
    )


_UNION_TAGS = frozenset({"synthetic", "dataset", "shared_prefix"})


def _infer_workload_type(data: dict[str, Any]) -> None:
    """Fill in a `workload:` section's missing `type`: the default source (synthetic), or a
    dataset when the section names a `path`, the one key only a dataset has.

    Why here and not as a pydantic default: a tagged union needs its tag before it can pick
    the model, and pydantic's own wording ("Unable to extract tag using discriminator") names
    nothing a user wrote.
    """
    workload = data.get("workload")
    if isinstance(workload, dict) and "type" not in workload:
        workload["type"] = "dataset" if "path" in workload else "synthetic"


def load_config(
    path: Path | None, overrides: dict[str, Any] | None = None, sets: list[str] | None = None
) -> RunConfig:
    """Read a YAML config (optional), apply `--set` items and flag overrides, and validate."""
    data: dict[str, Any] = {}
    text: str | None = None
    source = str(path) if path else "<flags>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("file not found", file=source) from None
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text (byte {e.start})", file=source) from None
        except OSError as e:
            raise InputError(e.strerror or str(e), file=source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(e, "problem", None) or "malformed YAML"
            raise InputError(f"malformed YAML: {problem}", file=source, line=line) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError("the top level must be a mapping of keys", file=source)
        data = loaded
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # Whole sections from flags (`--dataset` replaces `workload`) come first, so that
    # `--set workload.x=...` still refines them; single-key flags win over everything.
    sections = {k: v for k, v in overrides.items() if isinstance(v, dict)}
    for key, value in sections.items():
        _set_dotted(data, key, value)
    for item in sets or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    for key, value in overrides.items():
        if key not in sections:
            _set_dotted(data, key, value)
    _infer_workload_type(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise _format_validation(err, source, data, text) from None
