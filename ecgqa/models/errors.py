"""Errors of the model layer that more than one of its modules raises."""

from __future__ import annotations

from ecgqa.errors import EcgqaError


class LlmError(EcgqaError):
    """The language model could not be loaded; the message says why and what to do."""
