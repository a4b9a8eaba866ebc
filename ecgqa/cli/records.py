"""``ecgqa info`` and ``ecgqa plot``: one record, described or drawn on ECG paper."""

from __future__ import annotations

import argparse
import json

from ecgqa.cli.parsing import UserError, add_record_options, read_args_record


def add_parsers(sub) -> None:
    """The ``info`` and ``plot`` subcommands."""
    p = sub.add_parser("info", help="describe a record: leads, rate, metadata, measurements",
                       description="Print a record's leads, sampling rate, duration, units, "
                       "header metadata (age, sex, diagnoses, SNOMED Dx codes), per-lead "
                       "amplitude range, reader warnings, and heart rate, RR/PR/QRS/QT/QTc "
                       "intervals (global, over all leads, as the automatic 12-lead programs "
                       "measure them) and QRS axis where the record allows them.")
    add_record_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--lead", default=None, help="measure on this lead alone (default: "
                   "global intervals over every recorded lead)")
    p.add_argument("--no-measure", action="store_true",
                   help="skip the measurements (faster)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="draw a record on ECG paper (3x4 + rhythm strip)",
                       description="Draw the standard 12-lead paper layout: 3 rows x 4 columns "
                       "of 2.5 s plus a 10 s rhythm strip, 25 mm/s, 10 mm/mV, 1 mm / 5 mm grid "
                       "and 1 mV calibration pulses. Records without the 12 standard leads are "
                       "drawn as one 10 s strip per lead. The file is written atomically.")
    add_record_options(p)
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


def cmd_info(args: argparse.Namespace) -> int:
    """Print leads, rate, duration, metadata, amplitudes and measurements of a record."""
    from ecgqa.records.summary import format_summary, summarize

    rec = read_args_record(args)
    summary = summarize(rec, measure_lead=args.lead, measure=not args.no_measure)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0




def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a record in the standard 12-lead paper layout."""
    from ecgqa.records.plot import SUPPORTED_SUFFIXES, PlotStyle, plot_ecg

    if not args.out.lower().endswith(SUPPORTED_SUFFIXES):
        raise UserError(f"--out {args.out}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if args.dpi <= 0 or args.dpi > 1200:
        raise UserError(f"--dpi must be in 1..1200, got {args.dpi}")
    if args.start < 0:
        raise UserError(f"--start must be >= 0 s, got {args.start}")
    rec = read_args_record(args)
    if args.start >= rec.duration_s:
        raise UserError(f"--start {args.start:g} s is past the end of the record "
                        f"({rec.duration_s:.1f} s)")
    style = PlotStyle(dpi=args.dpi, show_grid=not args.no_grid,
                      highpass_hz=None if args.raw else 0.5)
    out = plot_ecg(rec, args.out, style=style, start_s=args.start, rhythm_lead=args.rhythm_lead)
    print(out)
    return 0
