"""Texts of a target token length for the server's tokenizer (`TextSizer`).

Why a sizer: a synthetic prompt of "1,024 tokens" must be 1,024 tokens for the tokenizer the
server runs, or every length in the report is off by that tokenizer's words-per-token. Texts
are vocabulary words (`tokens.template.VOCAB`) joined by spaces; what changes is how many words:

- `simulator-exact`: one word per token, exact for the simulator's tokenizer (and the default).
- `tokenizer.json`: a local Hugging Face tokenizer file; each text is measured and its word
  count adjusted until it encodes (without special tokens) to exactly n tokens, or the closest
  count below n when no word fits the remainder.
- `server`: the server's `/tokenize` endpoint measured tokens per word once, on a calibration
  text, at start (`tokens.calibrate`); a text of n tokens then has `round(n / ratio)` words.
  Exact on average over many texts, not for each text.
- `approximate`: no tokenizer.json and no `/tokenize`: one word per token, marked as
  approximate in the report.

The sizer is a small frozen dataclass so worker processes and Ray actors get the same one (a
loaded tokenizer is cached per process, by path). It is deterministic in the random stream it
is given, so equal seeds (e.g. a trace's hash ids) give byte-identical text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from turnbench.errors import InputError
from turnbench.tokens.template import VOCAB

LengthSource = Literal["simulator-exact", "tokenizer.json", "server", "approximate"]


@lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> Any:
    """The `tokenizers.Tokenizer` of a tokenizer.json, loaded once per process."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError(
            "reading a tokenizer.json needs the `tokenizers` package (pip install tokenizers)",
            field="target.tokenizer_json",
        ) from None
    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # the Rust side raises plain Exception for any bad file
        raise InputError(
            f"cannot load the tokenizer: {err}", file=path, field="target.tokenizer_json"
        ) from None


@dataclass(frozen=True)
class TextSizer:
    """Writes texts of a given token length; `source` says how exact the length is."""

    source: LengthSource = "simulator-exact"
    tokens_per_word: float = 1.0
    """`server` sizing: the calibrated ratio (1.0 for the other sources)."""
    tokenizer_json: str | None = None
    """`tokenizer.json` sizing: the file's path."""

    def make_text(self, n_tokens: int, rng: random.Random, lead: str | None = None) -> str:
        """A text of `n_tokens` tokens: `lead` (if given, counted in) then vocabulary words."""
        if n_tokens <= 0:
            return ""
        if self.tokenizer_json is not None:
            return self._measured(n_tokens, rng, lead)
        n_words = n_tokens
        if self.source == "server":
            n_words = max(1, round(n_tokens / self.tokens_per_word))
        head = [lead] if lead else []
        return " ".join(head + rng.choices(VOCAB, k=n_words - len(head)))

    def count_tokens(self, text: str) -> int | None:
        """The token count of a text by the configured tokenizer.json; None without one."""
        if self.tokenizer_json is None:
            return None
        tok = _load_tokenizer(self.tokenizer_json)
        return len(tok.encode(text, add_special_tokens=False).ids)

    def _count(self, words: list[str]) -> int:
        tok = _load_tokenizer(self.tokenizer_json or "")
        return len(tok.encode(" ".join(words), add_special_tokens=False).ids)

    def _measured(self, n_tokens: int, rng: random.Random, lead: str | None) -> str:
        """Draw words until they hold at least n tokens, keep the longest prefix that holds at
        most n (binary search), then top up with words that add exactly what is missing."""
        head = [lead] if lead else []
        words = head + rng.choices(VOCAB, k=n_tokens)
        while self._count(words) < n_tokens:
            words += rng.choices(VOCAB, k=n_tokens)
        lo, hi = len(head), len(words)  # count(words[:lo]) <= n (or lo is the lead alone)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._count(words[:mid]) <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        kept = words[:lo]
        count = self._count(kept)
        for word in sorted(VOCAB, key=len):
            if count >= n_tokens:
                break
            grown = self._count([*kept, word])
            if grown <= n_tokens:
                kept.append(word)
                count = grown
        return " ".join(kept)
