"""The SSE parser: any split of the byte stream gives the same events (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from turnbench.client.sse import SSEParser

payload = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)


def _feed_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed `data` to a new parser in pieces of the given sizes, then the rest, then close."""
    parser = SSEParser()
    got: list[bytes] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(data[pos : pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    return got + parser.close()


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
    assert _feed_in_pieces(data, cuts) == [e.encode() for e in events]


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


def _reference(data: bytes) -> list[bytes]:
    """The SSE rules, line by line, on the whole stream at once."""
    out: list[bytes] = []
    lines: list[bytes] = []
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            if lines:
                out.append(b"\n".join(lines))
                lines = []
        elif line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    if lines:
        out.append(b"\n".join(lines))
    return out


line_kinds = st.sampled_from(
    [
        'data: {"a": 1}',
        "data:x",
        "data: ",
        ": keep-alive",
        "event: chunk",
        "id: 7",
        "",
        "data: [DONE]",
        "retry: 10",
    ]
)


@given(st.lists(line_kinds, max_size=40), st.lists(st.integers(1, 30), max_size=20), st.booleans())
def test_mixed_streams_match_the_reference(lines, cuts, crlf) -> None:
    data = ("\r\n" if crlf else "\n").join(lines).encode() + b"\n"
    assert _feed_in_pieces(data, cuts) == _reference(data)
