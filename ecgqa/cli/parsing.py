"""What every ``ecgqa`` subcommand shares: the one-line argument parser and the record
options of ``info`` and ``plot``.

User errors (a bad record, a bad option) are :class:`~ecgqa.errors.EcgqaError`; the entry
point (:func:`ecgqa.cli.main`) prints their one line and exits with status 2.
"""

from __future__ import annotations

import argparse

from ecgqa.errors import EcgqaError

EXIT_USAGE = 2


class UserError(EcgqaError):
    """A problem with the command line the user can fix; printed as one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (usage is in ``--help``)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", help="ECG record: x.hea, x.mat, x.dat or the bare record name x "
                   "(WFDB formats and PhysioNet Challenge .hea + .mat pairs)")
    p.add_argument("--fs", type=float, default=None, metavar="HZ",
                   help="resample to this rate with a polyphase filter (default: the file's)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="crop or zero-pad to this many seconds (default: full length)")
    p.add_argument("--leads", default=None, metavar="LIST",
                   help="select/reorder leads: 'I,II,V1', '12-lead', 'limb', 'precordial' ... "
                   "missing leads are shown as not recorded (default: all)")


def read_args_record(args: argparse.Namespace):
    from ecgqa.records.read import read_record

    return read_record(args.record, fs=args.fs, duration_s=args.duration, leads=args.leads)

