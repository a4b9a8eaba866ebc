"""The ``ecgqa`` command line: one module per group of subcommands, one function each.

Errors a user can fix (a bad record, a bad option: :class:`~ecgqa.errors.EcgqaError`, or
an ``OSError`` of a file) print one line to stderr and exit with status 2; no traceback,
no half-written output. :func:`main` is the one place that does it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecgqa.assets import package_version
from ecgqa.cli import bench, chat, data, encoder, records, train
from ecgqa.cli.parsing import EXIT_USAGE, Parser, UserError
from ecgqa.errors import report_user_errors

__all__ = ["EXIT_USAGE", "UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ecgqa`` parser: every subcommand, each bound to its function (``args.func``)."""
    parser = Parser(
        prog="ecgqa",
        description="Few-shot question answering on electrocardiograms with frozen language "
        "models. Run `ecgqa COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"ecgqa {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in (records, data, encoder, train, chat, bench):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecgqa`` console script."""
    parser = build_parser()

    def run() -> int:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)

    return report_user_errors("ecgqa", run)
