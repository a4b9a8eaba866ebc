"""The terminal side of ``ecgqa chat``: the REPL, its commands, printed answers and the
waiting spinner."""

from __future__ import annotations

import itertools
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from ecgqa.chat.answers import DISCLAIMER, Answer
from ecgqa.chat.questions import ChatError, classify_question

if TYPE_CHECKING:                           # annotations only: the sessions sit above
    from ecgqa.chat.image_session import ImageSession
    from ecgqa.chat.session import Session


class Spinner:
    """A spinner on ``stream`` (only where it is a terminal) while a block runs; calling it
    changes the message (``Session(status=spinner)`` reports its progress so).

    Example:
        >>> with Spinner() as status:
        ...     session = Session(["x.hea"], status=status)
    """

    def __init__(self, stream: TextIO = sys.stderr, message: str = "loading"):
        self.stream, self.message = stream, message
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._spin, daemon=True)

    def __call__(self, message: str) -> None:
        self.message = message

    def _spin(self) -> None:
        for ch in itertools.cycle("|/-\\"):
            self.stream.write(f"\r\x1b[K{ch} {self.message} ")
            self.stream.flush()
            if self.stop.wait(0.1):
                break

    def __enter__(self) -> Spinner:
        if self.stream.isatty():
            self.worker.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.worker.is_alive():
            self.stop.set()
            self.worker.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()


HELP = """\
Type a question about the ECG, e.g. "Does this ECG show sinus rhythm?"
  yes/no, "which ..., A or B?" and ECG-QA template questions are scored over their
  options (probabilities shown); other questions are mapped to the closest known one
  (rhythm, conduction, axis, intervals, rate, noise, extra systoles) and scored too, or
  answered with what can be asked (free text only with --generate).
commands:
  /plot [FILE]   write the 12-lead paper plot (default: RECORD.png here)
  /leads I,II    answer from these leads only (/leads all: every lead again)
  /summary       the records' summary again
  /help          this text
  /quit          leave (Ctrl-D too)"""


def repl(session: Session | ImageSession, out: TextIO = sys.stdout, prompt: str = "ecg> ") -> int:
    """Read questions and commands until /quit or end of input; returns the exit status.

    A bad command or question prints one line and the loop goes on.
    """
    try:
        import readline  # noqa: F401 - arrow-key history for input(), where available
    except ImportError:  # pragma: no cover - Windows
        pass
    print("Type a question, or /help. " + DISCLAIMER, file=out)
    while True:
        try:
            line = input(prompt).strip()
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(session, line, out):
                    return 0
            else:
                print_answer(session, line, out)
        except (ChatError, OSError) as err:
            print(f"error: {err}", file=out)
        except KeyboardInterrupt:
            print("\n(interrupted)", file=out)
        out.flush()


def _command(session: Session | ImageSession, line: str, out: TextIO) -> bool:
    """Run one /command; False means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit", "/q"):
        return False
    if name == "/help":
        print(getattr(session, "help", HELP), file=out)
    elif name == "/plot":
        for p in session.plot(arg or None):
            print(f"wrote {p}", file=out)
    elif name == "/leads":
        if not arg:
            raise ChatError("/leads needs a lead list: /leads I,II (or /leads all)")
        leads = session.set_leads(arg)
        print(f"leads: {','.join(leads) if leads else 'all'}", file=out)
    elif name == "/summary":
        print(session.summary(), file=out)
    else:
        raise ChatError(f"unknown command {name}; commands: /plot /leads /summary /help /quit")
    return True


def print_answer(session: Session | ImageSession, question: str, out: TextIO) -> Answer:
    """Ask, streaming an open answer after "answer:", then print options and disclaimer."""
    kind = classify_question(question, session.vocabulary)
    if kind.kind == "open" and session.generate_open:
        out.write("answer:")
        out.flush()
        ans = session.ask(question, stream=out)
        print(file=out)
        print(ans.format(show_answer=False), file=out)
    else:
        ans = session.ask(question)
        print(ans.format(), file=out)
    return ans
