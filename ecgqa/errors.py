"""The one base class of errors a user can fix: a bad file, option or config.

Every library module raises a subclass of :class:`EcgqaError` (``EcgRecordError``,
``ConfigError``, ``EcgQaError`` ...) for input it cannot use, with a one-line message
that names the input and the problem; the command line turns any of them into that line
on stderr and exit status 2. Anything else escaping is a programming error (a traceback).
This module imports nothing of ecgqa, so every layer can use it; :func:`user_message` is the one
place that decides what becomes that line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class EcgqaError(ValueError):
    """A problem with the user's input (file, option, config); the message is one line."""


def user_message(err: BaseException) -> str | None:
    """The one line to print for an error the user can fix, None for a programming error.

    User errors are :class:`EcgqaError` (bad file, option, config) and ``OSError`` (an
    unreadable input, an unwritable output, a full disk). The command line and the
    training recipes print this line with exit status 2; anything else is a traceback.
    """
    if isinstance(err, EcgqaError):
        return str(err) or type(err).__name__
    if isinstance(err, OSError):
        why = err.strerror or str(err) or type(err).__name__
        return f"{err.filename}: {why}" if err.filename else why
    return None


def report_user_errors(prog: str, call: Callable[[], int],
                       interrupted: str = "interrupted") -> int:
    """``call()``; a user error prints ``"{prog}: error: <one line>"`` and returns 2, Ctrl-C
    prints ``"{prog}: {interrupted}"`` and returns 130, anything else propagates."""
    try:
        return call()
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as err:                       # noqa: BLE001 - user errors are one line
        message = user_message(err)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
