"""The simulator's memory of prompt pieces gives exactly what tokenizing and hashing the whole
prompt gives: the count, every block's key, the tokens after the last full block, whatever
the text holds (end markers inside a message, markers cut in half, no marker at all), and
whether its pieces were remembered, forgotten or never seen."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from turnbench.sim.prefix_cache import block_hashes
from turnbench.sim.prompt_blocks import BlockMemo, PromptBlocks
from turnbench.tokens.template import render_chat, tokens

BITS = ["the", "cache", "42", "<|im_end|>", "<|im_end|>\n", "<|im_start|>", "<", "|", ">"]
BITS += ["<|im_", "\n", " ", ",", "é", "_a", "x"]
TEXT = st.lists(st.sampled_from(BITS), max_size=40).map("".join)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": TEXT}
)


def _whole(prompt: str, block_size: int) -> PromptBlocks:
    toks = tokens(prompt)
    keys = block_hashes(toks, block_size)
    return PromptBlocks(len(toks), keys, toks[len(keys) * block_size :])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(MESSAGE, max_size=6), min_size=1, max_size=4),
    st.sampled_from([1, 2, 3, 16]),
    st.sampled_from([3, 40, 1_000_000]),
)
def test_a_prompt_in_remembered_pieces_is_the_whole_prompt_tokenized(
    histories: list[list[dict[str, str]]], block_size: int, capacity: int
) -> None:
    memo = BlockMemo(capacity)
    for messages in histories:
        for end in range(len(messages) + 1):  # a conversation's turns: each prompt a prefix
            prompt = render_chat(messages[:end])
            assert memo.blocks(prompt, block_size) == _whole(prompt, block_size)
    assert memo._held <= capacity  # the least recently used pieces went


@settings(max_examples=200, deadline=None)
@given(TEXT, st.sampled_from([1, 4, 16]))
def test_any_completions_prompt_is_the_whole_prompt_tokenized(text: str, block_size: int) -> None:
    memo = BlockMemo()
    assert memo.blocks(text, block_size) == _whole(text, block_size)
    assert memo.blocks(text, block_size) == _whole(text, block_size)  # remembered this time


def test_the_same_message_after_another_history_makes_other_blocks() -> None:
    memo = BlockMemo()
    x = {"role": "user", "content": "x"}
    a = render_chat([{"role": "user", "content": "one two three"}, x])
    b = render_chat([{"role": "user", "content": "one two"}, x])
    assert memo.blocks(a, 4) == _whole(a, 4)
    assert memo.blocks(b, 4) == _whole(b, 4)
    assert memo.blocks(a, 4).keys != memo.blocks(b, 4).keys
