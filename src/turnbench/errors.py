"""Errors a user can fix, shown as one line and exit code 2 (never a traceback)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: names the file, the line and the field, and says what was expected.

    Why one type: the CLI catches exactly this, prints `str(err)` on one line and exits 2;
    everything else is a bug and keeps its traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
        if self.field is not None:
            where += f" [{self.field}]" if where else f"[{self.field}]"
        return f"{where}: {self.message}" if where else self.message


class TargetError(Exception):
    """The target server cannot be used (unreachable at start, no model): one clear line, exit 2."""


class EngineError(Exception):
    """Workers could not be started (a process or a Ray actor): one clear line, exit 2."""
