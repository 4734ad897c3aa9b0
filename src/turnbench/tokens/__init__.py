"""Token counts in one place: the simulator's tokenizer and chat template (`template`), texts of
a token length for the server's tokenizer (`sizer`), and their calibration by the server's own
counts (`calibrate`). Read by the workload, the session and each API module; imports no
transport."""

from turnbench.tokens.sizer import LengthSource, TextSizer

__all__ = ["LengthSource", "TextSizer"]
