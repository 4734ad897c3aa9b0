"""Workload sources: each yields `Conversation` plans (see `conversation.py`)."""
