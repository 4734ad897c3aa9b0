"""An incremental parser of server-sent events, fed raw bytes as they arrive.

Why our own: it is a few lines, it must cost little per chunk on the hot path, and it must
never raise on odd input (a malformed payload is the JSON decoder's finding, not the
parser's). It follows the SSE rules that matter here: lines end in LF or CRLF, an event ends
at a blank line, `data:` lines of one event join with LF, comments and other fields are skipped.
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
        rest = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return rest
