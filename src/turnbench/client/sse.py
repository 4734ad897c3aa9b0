"""An incremental parser of server-sent events, fed raw bytes as they arrive.

Why our own: it is a few lines, it must cost little per chunk on the hot path, and it must
never raise on odd input (a malformed payload is the JSON decoder's finding, not the
parser's). It follows the SSE rules that matter here: lines end in LF or CRLF, an event ends
at a blank line, `data:` lines of one event join with LF, comments and other fields are skipped.

The fast path: LLM servers send each event as one `data: {...}` line and a blank line, so a
read is split on blank lines and each such event sliced out directly; anything else (CR, a
comment, an `event:` field, several data lines) goes through the line-by-line parser.
"""

from __future__ import annotations


class SSEParser:
    """Turns a byte stream into the `data` payloads of its events, in order."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the payloads of the events they complete."""
        buf = self._buf + chunk if self._buf else chunk
        if self._data or b"\r" in buf:
            return self._lines(buf)
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        out: list[bytes] = []
        for block in blocks:
            if block[:5] == b"data:" and b"\n" not in block:
                value = block[5:]
                out.append(value[1:] if value[:1] == b" " else value)
            elif block:
                rest = self._buf
                out += self._lines(block + b"\n\n")
                self._buf = rest
        return out

    def _lines(self, buf: bytes) -> list[bytes]:
        """The general parser: line by line, keeping an unfinished line and event."""
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line[:5] == b"data:":
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
        return out

    def close(self) -> list[bytes]:
        """End of stream: return an event left without its closing blank line, if any."""
        rest = self._lines(self._buf + b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return rest
