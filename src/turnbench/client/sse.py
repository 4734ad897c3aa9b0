"""Server-sent events, fed raw bytes as they arrive, read a whole read at a time.

Why our own: it must cost little per chunk on the hot path, and it must never raise on odd
input (a malformed payload is the JSON decoder's finding, not the parser's). It follows the
SSE rules that matter here: lines end in LF, CRLF or CR, an event ends at a blank line,
`data:` lines of one event join with LF, comments and other fields are skipped.

Why a read at a time: a read of a fast server holds dozens of events. `SSEParser.feed` hands
back every event the read completes as one block of SSE text, and `json_array` turns the
usual shape of that block (each event one `data: {...}` line) into a single JSON array with
a few C-level byte operations, so the decoder builds every chunk of the read in one call and
no Python code runs per event before the adapter reads them. Anything else (comments, `event:`
fields, several data lines) goes through `payloads`, the line-by-line reader.
"""

from __future__ import annotations


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


def json_array(events: bytes) -> tuple[bytes, int, bool] | None:
    """The payloads of a block of events as one JSON array text, their number, and whether
    the block ended with a `[DONE]` event (left out of the array).

    Applies when every event is exactly one `data:` line; None otherwise (use `payloads`).
    The space after `data:` may be there or not: to JSON it is whitespace either way. The
    array is only as well-formed as the payloads: a decoder that rejects it, or finds another
    number of items than events, must look at the payloads one by one.
    """
    n = events.count(b"\n\n")
    if (
        not n
        or events[:5] != b"data:"
        or events.count(b"\n") != 2 * n
        or events.count(b"\n\ndata:") != n - 1
    ):
        return None
    # every newline is in a blank-line pair and each event starts "data:": n one-line events
    last = events.rfind(b"data:")
    done = events[last + 5 : -2].strip(b" ") == b"[DONE]"
    end = len(events) - 2
    if done:
        n -= 1
        if not n:
            return b"[]", 0, True
        end = last - 2
    return b"[" + events[5:end].replace(b"\n\ndata:", b",") + b"]", n, done
