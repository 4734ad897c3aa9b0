"""turnbench: a load generator and benchmark for LLM inference servers, built for multi-turn
conversations and agentic sessions."""

__version__ = "0.1.0"
