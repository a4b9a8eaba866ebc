"""The ``ecgqa`` command line: one function per subcommand.

Errors a user can fix (a bad record, a bad option) print one line to stderr and exit
with status 2; no traceback, no half-written output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from ecgqa import __version__

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (usage is in ``--help``)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _add_record_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", help="ECG record: x.hea, x.mat, x.dat or the bare record name x "
                   "(WFDB formats and PhysioNet Challenge .hea + .mat pairs)")
    p.add_argument("--fs", type=float, default=None, metavar="HZ",
                   help="resample to this rate with a polyphase filter (default: the file's)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="crop or zero-pad to this many seconds (default: full length)")
    p.add_argument("--leads", default=None, metavar="LIST",
                   help="select/reorder leads: 'I,II,V1', '12-lead', 'limb', 'precordial' ... "
                   "missing leads are shown as not recorded (default: all)")


def _read(args: argparse.Namespace):
    from ecgqa.records.read import read_record

    return read_record(args.record, fs=args.fs, duration_s=args.duration, leads=args.leads)


# --------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    """Print leads, rate, duration, metadata, amplitudes and measurements of a record."""
    from ecgqa.records.summary import format_summary, summarize

    rec = _read(args)
    summary = summarize(rec, measure_lead=args.lead, measure=not args.no_measure)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


# --------------------------------------------------------------------------- plot


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a record in the standard 12-lead paper layout."""
    from ecgqa.records.plot import SUPPORTED_SUFFIXES, PlotStyle, plot_ecg

    if not args.out.lower().endswith(SUPPORTED_SUFFIXES):
        raise UserError(f"--out {args.out}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if args.dpi <= 0 or args.dpi > 1200:
        raise UserError(f"--dpi must be in 1..1200, got {args.dpi}")
    if args.start < 0:
        raise UserError(f"--start must be >= 0 s, got {args.start}")
    rec = _read(args)
    if args.start >= rec.duration_s:
        raise UserError(f"--start {args.start:g} s is past the end of the record "
                        f"({rec.duration_s:.1f} s)")
    style = PlotStyle(dpi=args.dpi, show_grid=not args.no_grid,
                      highpass_hz=None if args.raw else 0.5)
    out = plot_ecg(rec, args.out, style=style, start_s=args.start, rhythm_lead=args.rhythm_lead)
    print(out)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ecgqa",
        description="Few-shot question answering on electrocardiograms with frozen language "
        "models. Run `ecgqa COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"ecgqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("info", help="describe a record: leads, rate, metadata, measurements",
                       description="Print a record's leads, sampling rate, duration, units, "
                       "header metadata (age, sex, diagnoses, SNOMED Dx codes), per-lead "
                       "amplitude range, reader warnings, and heart rate, RR/PR/QRS/QT/QTc "
                       "intervals and QRS axis measured with neurokit2 where delineation "
                       "succeeds.")
    _add_record_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--lead", default=None, help="lead to measure intervals on "
                   "(default: II, else I, V5, V2 ...)")
    p.add_argument("--no-measure", action="store_true",
                   help="skip the neurokit2 measurements (faster)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="draw a record on ECG paper (3x4 + rhythm strip)",
                       description="Draw the standard 12-lead paper layout: 3 rows x 4 columns "
                       "of 2.5 s plus a 10 s rhythm strip, 25 mm/s, 10 mm/mV, 1 mm / 5 mm grid "
                       "and 1 mV calibration pulses. Records without the 12 standard leads are "
                       "drawn as one 10 s strip per lead. The file is written atomically.")
    _add_record_options(p)
    p.add_argument("--out", required=True, help="output image (.png, .pdf, .svg, .jpg); "
                   "parent folders are created")
    p.add_argument("--start", type=float, default=0.0, metavar="S",
                   help="first second to draw (default 0)")
    p.add_argument("--rhythm-lead", default="II", help="lead of the bottom rhythm strip "
                   "(default II)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of raster output "
                   "(default 150)")
    p.add_argument("--no-grid", action="store_true", help="draw the traces without ECG paper")
    p.add_argument("--raw", action="store_true", help="draw the signal as recorded, without "
                   "the 0.5 Hz baseline-wander filter")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecgqa`` console script."""
    from ecgqa.records.read import EcgRecordError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USAGE
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (UserError, EcgRecordError) as err:
        print(f"ecgqa: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # unwritable output, full disk ...
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(f"ecgqa: error:{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ecgqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
