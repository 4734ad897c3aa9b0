"""The SSE parser: any split of the byte stream gives the same events (hypothesis), and the
one-array fast path reads exactly what the event-by-event reader reads."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from turnbench.client.sse import SSEParser, decode_events, payloads

payload = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)


def _feed_in_pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed `data` to a new parser in pieces of the given sizes, then the rest, then close."""
    parser = SSEParser()
    got: list[bytes] = []
    pos = 0
    for cut in cuts:
        got += payloads(parser.feed(data[pos : pos + cut]))
        pos += cut
    got += payloads(parser.feed(data[pos:]))
    return got + payloads(parser.close())


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
    assert payloads(parser.feed(b"event: x\ndata: a\ndata: b\n\nid: 3\ndata:c")) == [b"a\nb"]
    assert payloads(parser.close()) == [b"c"]


@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_never_raises_on_arbitrary_bytes(data, cuts) -> None:
    parser = SSEParser()
    pos = 0
    for cut in cuts:
        payloads(parser.feed(data[pos : pos + cut]))
        pos += cut
    payloads(parser.feed(data[pos:]))
    payloads(parser.close())
    decode_events(data, _loads_array)


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


def _loads_array(text: bytes) -> list[object]:
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError("not an array")
    return value


def _slow(block: bytes) -> tuple[list[object], bool] | None:
    """What the event-by-event reader makes of a block: values and [DONE], or None when a
    payload is not JSON."""
    values: list[object] = []
    done = False
    for p in payloads(block):
        if p == b"[DONE]":
            done = True
            continue
        try:
            values.append(json.loads(p))
        except ValueError:
            return None
    return values, done


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.lists(json_values, max_size=12),
    st.booleans(),
    st.lists(st.booleans(), max_size=12),
    st.lists(st.integers(1, 60), max_size=10),
)
def test_one_array_reads_what_the_event_reader_reads(values, done, spaces, cuts) -> None:
    """Every block a stream of one-line JSON events is cut into (any split, with or without
    the space after `data:`, with or without [DONE]) decodes in one call to the same values."""
    events = [json.dumps(v) for v in values] + (["[DONE]"] if done else [])
    data = "".join(
        f"data:{' ' if i < len(spaces) and spaces[i] else ''}{e}\n\n" for i, e in enumerate(events)
    ).encode()
    parser = SSEParser()
    got: list[object] = []
    saw_done = False
    pos = 0
    for cut in [*cuts, len(data)]:
        block = parser.feed(data[pos : pos + cut])
        pos += cut
        if block:
            fast = decode_events(block, _loads_array)
            assert fast is not None, block
            assert fast == _slow(block)
            got += fast[0]
            saw_done = saw_done or fast[1]
    assert got == values
    assert saw_done == done


odd_lines = st.sampled_from(
    [
        'data: {"a": 1}',
        "data:[2]",
        'data: {"b": [1, 2]}, {"c": 3}',
        "data: 1,",
        "data: ,2",
        "data: ",
        "data: [DONE]",
        ": data: 5",
        "event: chunk",
        ",{}",
        "id: 7",
        "",
        "",
    ]
)


@given(st.lists(odd_lines, max_size=30))
def test_one_array_never_disagrees_with_the_event_reader(lines) -> None:
    """On any mix of lines, the one-call path either declines or gives what the event
    reader gives (values and [DONE] alike)."""
    block = SSEParser().feed("\n".join(lines).encode() + b"\n\n")
    fast = decode_events(block, _loads_array)
    if fast is not None:
        assert fast == _slow(block)


def test_one_array_declines_other_shapes() -> None:
    assert decode_events(b"data: 1\n\n: ping\n\n", _loads_array) is None  # a comment
    assert decode_events(b"event: x\ndata: 1\n\n", _loads_array) is None  # another field
    assert decode_events(b"data: 1\ndata: 2\n\n", _loads_array) is None  # two data lines
    assert decode_events(b"data: 1, 2\n\n", _loads_array) is None  # not one JSON value
    assert decode_events(b"data: [DONE]\n\n", _loads_array) == ([], True)
    assert decode_events(b"data: 1\n\ndata:2\n\n", _loads_array) == ([1, 2], False)
