"""The one validated `RunConfig` and its sections (`config_load.py` reads it from a YAML
file, `--set` overrides and flags).

Why strict: a benchmark that silently ignores a misspelt key measures something else than the
user asked for. Every model forbids unknown keys and describes every field; errors name the
file, the key, the value and what was expected, on one line.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnbench.cache.config import CacheConfig
from turnbench.distributions import Distribution
from turnbench.pacing.load import LoadConfig, StageConfig, UsersLoad
from turnbench.pacing.modes import DEFAULT_MODE, keys_of
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


CachePoint = Literal["system", "tools", "last"]
"""Where `target.cache_control` may put an Anthropic prompt-cache breakpoint."""


class TargetConfig(_Strict):
    """The server under test."""

    url: str | None = Field(
        None,
        description="The server: a bare host (http://127.0.0.1:8000, localhost:8000) or its API "
        "root (http://127.0.0.1:8000/v1); the root is found by probing /v1/models, then "
        "/models. Unset: start the built-in simulator on a free 127.0.0.1 port.",
    )
    api: Literal["chat", "completions", "responses", "anthropic"] = Field(
        "chat",
        description="chat: /chat/completions with messages; completions: the rendered prompt; "
        "responses: OpenAI's /responses; anthropic: Anthropic's /messages (docs/apis.md).",
    )
    responses_state: Literal["stateless", "chained"] = Field(
        "stateless",
        description="api responses: stateless sends the whole conversation every turn; chained "
        "sends only the new input and the previous reply's previous_response_id (the server "
        "holds the history).",
    )
    cache_control: list[CachePoint] = Field(
        default_factory=lambda: list(get_args(CachePoint)),
        description="api anthropic: where prompt-cache breakpoints (cache_control ephemeral) "
        "go: the system prompt, the tool list, the latest message; [] sends none.",
    )
    anthropic_version: str = Field(
        "2023-06-01", description="api anthropic: the anthropic-version header."
    )
    model: str = Field("auto", description="Model name; `auto` takes the first of /v1/models.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key (sent as a Bearer token, as "
        "x-api-key for api anthropic; never written anywhere).",
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
    load: LoadConfig = Field(default_factory=UsersLoad, description="Load mode and limits.")
    stages: list[StageConfig] | None = Field(
        None,
        min_length=1,
        description="A run in stages, one after another, each with its own mode, parameters "
        "and duration (warm-up, steps, ramps; docs/load-modes.md). Unset: one stage, `load:`.",
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig, description="The prefix cache: ideal prefix and salt."
    )
    slo: SloConfig | None = Field(
        None, description="Service-level objectives in named tiers, judged as goodput."
    )

    @model_validator(mode="after")
    def _check_stages(self) -> RunConfig:
        if self.stages is None:
            return self
        # what a stage sets must stay at its default under load: (a dumped config, as the
        # workers get, holds every key, so the keys set are not the test)
        fields = type(self.load).model_fields
        staged = ["mode", "duration_s", "sessions", *keys_of(self.load.mode_name)]
        given = [
            k for k in staged if getattr(self.load, k) != fields[k].get_default() and k != "mode"
        ]
        if self.load.mode_name != DEFAULT_MODE:
            given.insert(0, "mode")
        if given:
            raise ValueError(
                f"with stages, each stage has its own mode and duration: remove load.{given[0]}"
                " (load keeps max_in_flight, max_sessions, max_requests, warmup_s, end and "
                "drain_timeout_s)"
            )
        names = self.stage_names()
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"two stages are named {twice!r}")
        return self

    def stage_names(self) -> list[str]:
        """Each stage's name (`stage-N` where unset); `main` for a run with no stages."""
        if self.stages is None:
            return ["main"]
        return [s.name or f"stage-{i}" for i, s in enumerate(self.stages, start=1)]

    @property
    def duration_s(self) -> float | None:
        """When the run stops starting work: the sum of its stages, else `load.duration_s`."""
        if self.stages is None:
            return self.load.duration_s
        return sum(s.duration_s or 0.0 for s in self.stages)

    @property
    def waits_for_session_ends(self) -> bool:
        """Whether starting sessions depends on others ending: a closed-loop user starts its
        next conversation, or a `max_sessions` place is freed. Then workers report every
        session's end at once, else with their regular batches."""
        modes = self.stages if self.stages is not None else [self.load]
        return any(m.closed_loop for m in modes) or self.load.max_sessions is not None

    @property
    def chains_sessions(self) -> bool:
        """Whether a closed-loop user's next conversation goes, while the current one still
        plays, to the worker playing it, to start there the moment it ends: the news of the
        end need not reach the coordinator and come back first. Not with `max_sessions` (a
        place would be held by a conversation that has not started), nor in stages (a
        stage's end must stop its users before their next conversation is handed over)."""
        return self.stages is None and self.load.closed_loop and self.load.max_sessions is None

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret-looking header value removed."""
        data = self.model_dump(mode="json")
        headers = data["target"]["headers"]
        for key in headers:
            if key.lower() in SECRET_HEADERS or "key" in key.lower() or "token" in key.lower():
                headers[key] = "<redacted>"
        return data
