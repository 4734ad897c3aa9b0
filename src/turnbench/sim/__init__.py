"""The built-in OpenAI-compatible server simulator: `turnbench sim` (see docs/simulator.md)."""
