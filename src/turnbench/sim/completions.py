"""`POST /v1/chat/completions` and `POST /v1/completions`: the `Api` of OpenAI's two older APIs.

Why so thin: their validation (`protocol.py`) and their bytes (`sse.py`) came first and are
shared with nothing else; this module only joins them behind the `wire.Api` seam.
"""

from __future__ import annotations

from turnbench.sim.config import SimConfig
from turnbench.sim.protocol import RequestError, SimRequest, parse_request
from turnbench.sim.sse import ReplyFormat
from turnbench.sim.wire import Wire


class CompletionsApi:
    """Chat Completions (`chat=True`) or Completions, as vLLM serves them."""

    def __init__(self, cfg: SimConfig, *, chat: bool) -> None:
        self._cfg = cfg
        self._chat = chat

    def parse(self, raw: bytes) -> tuple[SimRequest, Wire]:
        """Validate the body; the reply's format follows its `stream_options`."""
        cfg = self._cfg
        req = parse_request(
            raw,
            chat=self._chat,
            served_model=cfg.model,
            max_model_len=cfg.max_model_len,
            block_size=cfg.block_size,
        )
        wire = ReplyFormat(
            chat=self._chat,
            model=cfg.model,
            include_usage=req.include_usage,
            continuous_usage=req.continuous_usage,
        )
        return req, wire

    def error_body(self, err: RequestError) -> bytes:
        """OpenAI/vLLM JSON: `{"error": {message, type, param, code}}`."""
        return err.body()
