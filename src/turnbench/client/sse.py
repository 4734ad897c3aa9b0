"""Server-sent events, fed raw bytes as they arrive, read a whole read at a time.

Why our own: it must cost little per chunk on the hot path, and it must never raise on odd
input (a malformed payload is the JSON decoder's finding, not the parser's). It follows the
SSE rules that matter here: lines end in LF, CRLF or CR, an event ends at a blank line,
`data:` lines of one event join with LF, comments and other fields are skipped.

Why a read at a time: a read of a fast server holds dozens of events. `SSEParser.feed` hands
back every event the read completes as one block of SSE text, and `decode_events` turns the
usual shape of that block (each event one `data: {...}` line) into a single JSON array with
a split and a join, so the decoder builds every chunk of the read in one call and no Python
code runs per event before the API module reads them. Anything else (comments, `event:`
fields, several data lines) goes through `payloads`, the line-by-line reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SSEParser:
    """Cuts a byte stream into blocks of complete events (LF line endings), in order."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        """Add bytes; return the complete events they finish, as SSE text (b"" if none)."""
        buf = self._buf + chunk if self._buf else chunk
        cr = False
        if b"\r" in buf:
            # CR and CRLF become LF; a CR at the very end may be half of a CRLF, so it waits
            cr = buf[-1:] == b"\r"
            buf = (buf[:-1] if cr else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n\n") + 2
        if end == 1:  # no blank line yet
            end = 0
        self._buf = buf[end:] + b"\r" if cr else buf[end:]
        return buf[:end]

    def close(self) -> bytes:
        """End of stream: an event left without its closing blank line, completed."""
        rest = self._buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._buf = b""
        return rest + b"\n\n" if rest.strip(b"\n") else b""


def payloads(events: bytes) -> list[bytes]:
    """The `data` payloads of a block of complete events (as `SSEParser.feed` returns)."""
    out: list[bytes] = []
    data: list[bytes] = []
    for line in events.split(b"\n"):
        if not line:
            if data:
                out.append(data[0] if len(data) == 1 else b"\n".join(data))
                data = []
        elif line[:5] == b"data:":
            value = line[5:]
            data.append(value[1:] if value[:1] == b" " else value)
    if data:
        out.append(data[0] if len(data) == 1 else b"\n".join(data))
    return out


def decode_events(
    events: bytes, decode_array: Callable[[bytes], list[T]]
) -> tuple[list[T], bool] | None:
    """Every event of a block decoded by one call of `decode_array` on a JSON array of their
    payloads, and whether the block ended with `[DONE]` (which is not decoded).

    The usual shape is every event one `data:` line (the space after the colon is JSON
    whitespace either way): splitting at each blank line + `data:` and joining with commas
    makes the array. Anything else (a comment, another field, an event of several lines, a
    payload that is not one JSON value) leaves the array unparsable or holding another
    number of values than events, and then None says: read `payloads` one by one.
    `decode_array` raises ValueError (msgspec's errors are ValueErrors) on bad input.
    """
    if events[:5] != b"data:":
        return None
    parts = events[5:-2].split(b"\n\ndata:")
    done = parts[-1].strip(b" ") == b"[DONE]"
    if done:
        parts.pop()
        if not parts:
            return [], True
    try:
        values = decode_array(b"[" + b",".join(parts) + b"]")
    except ValueError:
        return None
    return (values, done) if len(values) == len(parts) else None


def decode_named_events(
    events: bytes, decode_array: Callable[[bytes], list[T]]
) -> tuple[list[T], bool] | None:
    """`decode_events` for streams that name each event (Responses, Anthropic): every event
    an `event:` line, then one `data: ` line, in one decoder call.

    Why not drop the `event:` lines with a regex: that costs more than the decode. After
    `data: ` is cut from each data line, a block of n such events splits at LF into 3n + 1
    lines, the payloads at every third from the second; any other shape leaves the wrong
    count or a line that is not JSON in the array, and None says: read `payloads`. The block
    never holds `[DONE]` in this shape (it would not decode), so the flag is always False.
    """
    if events[:6] != b"event:":
        return decode_events(events, decode_array)
    lines = events.replace(b"\ndata: ", b"\n").split(b"\n")
    n, rest = divmod(len(lines) - 1, 3)
    if rest:
        return None
    try:
        values = decode_array(b"[" + b",".join(lines[1::3]) + b"]")
    except ValueError:
        return None
    return (values, False) if len(values) == n else None
