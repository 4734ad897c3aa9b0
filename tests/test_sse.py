"""The SSE parser: any split of the byte stream gives the same events (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from turnbench.client.sse import SSEParser

payload = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)


def _encode(events: list[str], crlf: bool, comments: bool) -> bytes:
    nl = "\r\n" if crlf else "\n"
    out = []
    for e in events:
        if comments:
            out.append(": keep-alive" + nl)
        out.append(f"data: {e}{nl}{nl}")
    return "".join(out).encode()


@given(
    st.lists(payload, max_size=20),
    st.lists(st.integers(1, 50), max_size=30),
    st.booleans(),
    st.booleans(),
)
def test_any_split_gives_the_same_events(events, cuts, crlf, comments) -> None:
    data = _encode(events, crlf, comments)
    parser = SSEParser()
    got: list[bytes] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(data[pos : pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    got += parser.close()
    assert got == [e.encode() for e in events]


def test_multi_line_data_and_unterminated_last_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\ndata: a\ndata: b\n\nid: 3\ndata:c") == [b"a\nb"]
    assert parser.close() == [b"c"]


@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_never_raises_on_arbitrary_bytes(data, cuts) -> None:
    parser = SSEParser()
    pos = 0
    for cut in cuts:
        parser.feed(data[pos : pos + cut])
        pos += cut
    parser.feed(data[pos:])
    parser.close()
