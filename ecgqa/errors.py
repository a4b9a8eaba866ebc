"""The one base class of errors a user can fix: a bad file, option or config.

Every library module raises a subclass of :class:`EcgqaError` (``EcgRecordError``,
``ConfigError``, ``EcgQaError`` ...) for input it cannot use, with a one-line message
that names the input and the problem; the command line turns any of them into that line
on stderr and exit status 2. Anything else escaping is a programming error (a traceback).
This module imports nothing, so every layer can use it.
"""

from __future__ import annotations


class EcgqaError(ValueError):
    """A problem with the user's input (file, option, config); the message is one line."""
