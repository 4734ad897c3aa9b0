"""The APIs turnbench speaks, one module each, registered by name in one place.

Why a registry: `target.api`, the CLI's help and the error for a bad name all read
`API_NAMES`; a new API is one module here (see docs/apis.md) and one line below.
"""

from __future__ import annotations

from collections.abc import Callable

from turnbench.client.apis.anthropic import AnthropicApi
from turnbench.client.apis.base import Api, Reply, RequestView
from turnbench.client.apis.chat import ChatApi
from turnbench.client.apis.completions import CompletionsApi
from turnbench.client.apis.responses import ResponsesApi
from turnbench.config import TargetConfig

_BUILDERS: dict[str, Callable[[TargetConfig], Api]] = {
    "chat": lambda _: ChatApi(),
    "completions": lambda _: CompletionsApi(),
    "responses": lambda t: ResponsesApi(chained=t.responses_state == "chained"),
    "anthropic": lambda t: AnthropicApi(t.cache_control, t.anthropic_version),
}
API_NAMES = tuple(_BUILDERS)


def api_for(target: TargetConfig) -> Api:
    """The API module of the target's `api`, set up by its options."""
    return _BUILDERS[target.api](target)


__all__ = ["API_NAMES", "Api", "Reply", "RequestView", "api_for"]
