"""A prompt's tokens as the simulator uses them: their count, the chained keys of its full KV
blocks, and the tokens after the last full block, remembered a message at a time.

Why remembered: a conversation's next request carries its whole history again, so without a
memory the simulator split and hashed every earlier message on every turn: about 40 ms of CPU
per request at a 100k-token agentic context (the tokenizer's regex alone 30 ms), which made
the simulator, not the server it stands in for, the bottleneck of long-context runs. A
message already seen at the same place of a chain costs one dict lookup (its text hashed
once) instead.

Why a prompt splits at `<|im_end|>\\n`: the template ends every message with it, and no token
crosses it (the marker is one token and white space is none), so the tokens of the whole
prompt are the tokens of its pieces, in order. A piece is remembered with where its chain
stood before it (the parent block's key and the tokens left over from an unfinished block),
because the same text after a different history makes different blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from turnbench.sim.prefix_cache import block_hashes
from turnbench.tokens.template import tokens

END = "<|im_end|>\n"
"""What ends every rendered message: the prompt is split after it."""
END_TOKEN = "<|im_end|>"
MEMO_KEYS = 1_000_000
"""Block keys the memory holds at most (about 100 MB with their pieces' texts, at the
simulator's ~4 characters a token); the least recently used pieces go first."""


@dataclass(slots=True)
class PromptBlocks:
    """A prompt's token count, the chained keys of its full blocks, and the tokens after them
    (fewer than a block: they are computed, never cached, and the reply's blocks continue
    them)."""

    count: int
    keys: list[int]
    tail: list[str]


_Piece = tuple[int, int, tuple[str, ...], str]
"""A remembered piece's key: block size, parent key, tokens left over before it, its text."""
_Done = tuple[int, list[int], tuple[str, ...]]
"""What a piece gave: its tokens' count, the keys of the blocks it finished, what it left."""


class BlockMemo:
    """The pieces of recent prompts with the blocks they made, least recently used first."""

    def __init__(self, capacity_keys: int = MEMO_KEYS) -> None:
        self.capacity_keys = capacity_keys
        self._pieces: OrderedDict[_Piece, _Done] = OrderedDict()
        self._held = 0
        """Block keys held by `_pieces` (each piece counts at least one)."""

    def blocks(self, prompt: str, block_size: int) -> PromptBlocks:
        """The tokens of `prompt` in blocks of `block_size`: what `tokens` and
        `block_hashes` give for the whole prompt."""
        pieces = prompt.split(END)
        last = pieces.pop()
        memo = self._pieces
        count = 0
        keys: list[int] = []
        parent = 0
        left: tuple[str, ...] = ()
        for text in pieces:
            piece = (block_size, parent, left, text)
            done = memo.get(piece)
            if done is None:
                done = self._piece(piece, [*left, *tokens(text), END_TOKEN])
            else:
                memo.move_to_end(piece)
            n, made, left = done
            count += n
            if made:
                keys += made
                parent = made[-1]
        rest = [*left, *tokens(last)]  # the generation prompt, or a completion's open text
        count += len(rest) - len(left)
        made = block_hashes(rest, block_size, parent)
        keys += made
        return PromptBlocks(count, keys, rest[len(made) * block_size :])

    def _piece(self, piece: _Piece, toks: list[str]) -> _Done:
        """Split one new piece (its tokens after those left over before it) into blocks and
        remember what it gave."""
        block_size, parent, left = piece[0], piece[1], piece[2]
        made = block_hashes(toks, block_size, parent)
        done = (len(toks) - len(left), made, tuple(toks[len(made) * block_size :]))
        memo = self._pieces
        memo[piece] = done
        self._held += len(made) or 1
        while self._held > self.capacity_keys and memo:
            _, (_, gone, _) = memo.popitem(last=False)
            self._held -= len(gone) or 1
        return done


MEMO = BlockMemo()
"""The simulator process's memory of prompt pieces, shared by its APIs and replicas (a
block's key depends only on the tokens, not on who serves them)."""
