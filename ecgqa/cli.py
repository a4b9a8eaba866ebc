"""The ``ecgqa`` command line: one function per subcommand.

Errors a user can fix (a bad record, a bad option) print one line to stderr and exit
with status 2; no traceback, no half-written output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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


# --------------------------------------------------------------------------- data


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Generate a synthetic ECG-QA dataset."""
    from tqdm import tqdm

    from ecgqa.synth.dataset import write_synthetic

    if args.n_ecgs < 10:
        raise UserError(f"--n-ecgs must be >= 10, got {args.n_ecgs}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    bar = tqdm(total=args.n_ecgs, unit="ecg", desc="synthesising", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        summary = write_synthetic(args.out, args.n_ecgs, args.seed, workers=args.workers,
                                  progress=progress)
    except (FileExistsError, ValueError) as err:
        raise UserError(str(err)) from None
    finally:
        bar.close()
    q = summary.n_questions
    print(f"{summary.out}: {summary.n_ecgs} ECGs of {summary.n_patients} patients; questions "
          f"train {q['train']}, valid {q['valid']}, test {q['test']}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    """Classes and episodes each question type supports."""
    from ecgqa.qa.ecgqa import EcgQaError
    from ecgqa.qa.stats import episode_table, format_table

    try:
        rows, note = episode_table(args.qa, records=args.records, version=args.version,
                                   n_way=args.n_way, k_shot=args.k_shot, q_query=args.q_query,
                                   seed=args.seed, by=args.by, test_split=args.test_split)
    except EcgQaError as err:
        raise UserError(str(err)) from None
    print(json.dumps({"note": note, "rows": rows}, indent=2) if args.json
          else format_table(rows, note))
    return 0


def _folds(text: str, option: str) -> tuple[int, ...]:
    try:
        folds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{option} takes comma-separated fold numbers, got {text!r}") from None
    return folds


def cmd_data_labels(args: argparse.Namespace) -> int:
    """ECG-QA-schema questions from a table of per-record codes."""
    from tqdm import tqdm

    from ecgqa.qa.labelqa import build_label_qa, measure_records
    from ecgqa.qa.labels import SplitRule, read_label_table

    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    valid, test = _folds(args.valid_folds, "--valid-folds"), _folds(args.test_folds, "--test-folds")
    if set(valid) & set(test):
        raise UserError("--valid-folds and --test-folds share a fold")
    if not (0 <= args.valid_fraction < 1 and 0 <= args.test_fraction < 1
            and args.valid_fraction + args.test_fraction < 1):
        raise UserError("--valid-fraction and --test-fraction must be in [0, 1) and sum "
                        "below 1")
    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{args.out}: exists and is not an empty folder")
    table = read_label_table(args.labels)
    measured = None
    if not args.no_measure:
        bar = tqdm(total=len(table.records), unit="ecg", desc="measuring", disable=args.quiet)
        try:
            measured = measure_records(table.records, workers=args.workers,
                                       progress=lambda done, total: bar.update(done - bar.n))
        finally:
            bar.close()
    rule = SplitRule(valid_folds=valid, test_folds=test,
                     fractions=(args.valid_fraction, args.test_fraction))
    summary = build_label_qa(table, out, seed=args.seed, rule=rule, measurements=measured)
    q, n = summary.questions, summary.records_per_split
    print(f"{summary.out}: {summary.n_records} records of {summary.n_patients} patients "
          f"(train {n['train']}, valid {n['valid']}, test {n['test']}); questions train "
          f"{q['train']}, valid {q['valid']}, test {q['test']}")
    if table.unknown:
        print(f"codes without a mapping (asked about nowhere): "
              f"{', '.join(f'{k} ({v})' for k, v in sorted(table.unknown.items()))}")
    return 0


def cmd_data_merge(args: argparse.Namespace) -> int:
    """Several QA folders as one (real and synthetic questions together)."""
    from ecgqa.qa.merge import merge_qa

    summary = merge_qa(args.folders, args.out)
    q = summary.questions
    print(f"{summary.out}: {summary.records} records; questions "
          f"{', '.join(f'{s} {n}' for s, n in q.items())}; ECG-id offsets "
          f"{', '.join(f'{src} +{off}' for src, off in summary.offsets)}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    """Records index of the PTB-XL records under some folders."""
    from ecgqa.qa.ecgqa import EcgQaError
    from ecgqa.qa.resolve import find_ptbxl_records, write_index

    try:
        found = find_ptbxl_records(args.folders)
    except EcgQaError as err:
        raise UserError(str(err)) from None
    if not found:
        raise UserError(f"no PTB-XL records (00001_lr, 00001_hr, HR00001) under "
                        f"{', '.join(args.folders)}")
    path = write_index(args.out, found)
    print(f"{path}: {len(found)} PTB-XL records (ecg_id {min(found)}..{max(found)})")
    return 0


def _add_data_instruct_parser(dsub) -> None:
    p = dsub.add_parser("instruct", help="render labelled records into LLaVA-format "
                        "instruction data (image + question/answer turns)",
                        description="Render each record once in the 12-lead paper layout "
                        "(with random grid colour, line width, resolution, tint, rotation, "
                        "blur and noise unless --no-variation) and write ECGInstruct-style "
                        "LLaVA conversations: OUT/images/<record>.png, OUT/train.json, "
                        "OUT/valid.json, OUT/test.json, OUT/meta.json. Questions come from "
                        "ECG-QA-schema data (its single-ECG questions and splits; comparison "
                        "questions are left out) or from '# Dx:' SNOMED-CT codes (yes/no and "
                        "which-of questions, split by record). The output is written "
                        "atomically.")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (must not exist or be empty)")
    p.add_argument("--qa", default=None, metavar="DIR", help="ECG-QA-schema folder: a real "
                   "ECG-QA version folder or `ecgqa data synth` output")
    p.add_argument("--records", default=None, metavar="INDEX", help="with --qa: records index "
                   "CSV, PTB-XL or MIMIC-IV-ECG folder (default: records_index.csv in --qa)")
    p.add_argument("--dx", action="append", default=None, metavar="FOLDER",
                   help="folder of records with '# Dx:' SNOMED-CT codes, e.g. "
                   "../shared/data/real/cinc2021 (repeatable; instead of --qa)")
    p.add_argument("--version", default="template", choices=["template", "paraphrased"],
                   help="with --qa: question wording (default template)")
    p.add_argument("--question-types", nargs="+", default=None, metavar="TYPE",
                   help="keep only these question types, e.g. single-verify single-query "
                   "(default: all single-ECG types)")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="keep a seeded random N of the questions (default: all)")
    p.add_argument("--size", default="256x512", metavar="HxW",
                   help="image height x width in pixels (default 256x512)")
    p.add_argument("--no-variation", action="store_true",
                   help="draw every image as the plain standard printout")
    p.add_argument("--seed", type=int, default=0, help="seed of subsets, Dx splits and "
                   "negatives, and image variation (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering images "
                   "(default 1)")
    p.add_argument("--classes", default=None, metavar="meta-train|ADAPTER",
                   help="with --qa: keep only meta-training classes, so `ecgqa bench "
                   "--modality image` on held-out classes compares like with like: "
                   "'meta-train' (the default meta-training split: 30%% of the attributes "
                   "held out, seed 0) or a train-meta adapter folder (its classes.json) "
                   "(default: every class)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_instruct)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"--size must be HxW such as 256x512, got {text!r}")
    h, w = int(parts[0]), int(parts[1])
    if not (16 <= h <= 8192 and 16 <= w <= 8192):
        raise UserError(f"--size must be 16..8192 pixels each way, got {text}")
    return h, w


def cmd_data_instruct(args: argparse.Namespace) -> int:
    """Instruction data (LLaVA format) from labelled records (ecgqa.image_qa.instruct)."""
    from tqdm import tqdm

    from ecgqa.image_qa.instruct import build_instruct
    from ecgqa.image_qa.render import Variation

    if (args.qa is None) == (args.dx is None):
        raise UserError("give exactly one of --qa DIR or --dx FOLDER")
    if args.records is not None and args.qa is None:
        raise UserError("--records goes with --qa")
    for name in ("max_samples", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    size = _parse_size(args.size)
    bars: list = []                            # made at the first image, after validation

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="rendering", disable=args.quiet))
        bars[0].update(done - bars[0].n)

    try:
        s = build_instruct(args.out, qa=args.qa, records=args.records, dx=args.dx,
                           version=args.version, question_types=args.question_types,
                           max_samples=args.max_samples, size=size,
                           variation=None if args.no_variation else Variation(),
                           seed=args.seed, workers=args.workers, classes=args.classes,
                           progress=progress)
    except ValueError as err:                  # InstructError, EcgQaError: one line
        raise UserError(str(err)) from None
    finally:
        for bar in bars:
            bar.close()
    n = s.n_entries
    left = ", ".join(f"{k} {v}" for k, v in s.skipped.items())
    print(f"{s.out}: {s.n_images} images; questions train {n['train']}, valid {n['valid']}, "
          f"test {n['test']}" + (f" (left out: {left})" if left else ""))
    return 0


# --------------------------------------------------------------------------- encoder


def cmd_encoder_distill_image(args: argparse.Namespace) -> int:
    """Distil a signal encoder into an image encoder (``ecgqa.image_qa.distill``)."""
    from ecgqa.config import load_config
    from ecgqa.image_qa.distill import DistillConfig, distill, summary

    overrides = list(args.overrides or [])
    overrides += [f"{k}={v}" for k, v in (("labels", args.labels), ("out", args.out)) if v]
    cfg = load_config(DistillConfig, args.config, overrides)
    print(summary(distill(cfg, progress=not args.quiet)))
    return 0


def cmd_encoder(args: argparse.Namespace) -> int:
    """Pretrain or probe an ECG encoder (ecgqa.models.encoders.commands)."""
    from ecgqa.models.encoders import commands

    func = {"pretrain": commands.cmd_encoder_pretrain, "probe": commands.cmd_encoder_probe,
            "distill-image": cmd_encoder_distill_image}[args.encoder_command]
    try:
        return func(args)
    except ValueError as err:          # ConfigError, EncoderError: one-line user errors
        raise UserError(str(err)) from None


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
                       "intervals (global, over all leads, as the automatic 12-lead programs "
                       "measure them) and QRS axis where the record allows them.")
    _add_record_options(p)
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

    data = sub.add_parser("data", help="ECG-QA data: synthesise, inspect",
                          description="Work with ECG-QA-schema data (the real release, "
                          "synthetic data, or any QA file with a records index).")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser,
                               required=True, help="synth: generate a dataset; labels: questions "
                               "from per-record codes; stats: classes and episodes per question "
                               "type; index: records index of PTB-XL "
                               "records; instruct: image instruction data")
    p = dsub.add_parser("synth", help="generate a synthetic labelled ECG-QA dataset",
                        description="Generate synthetic 12-lead ECGs (500 Hz, 10 s, WFDB) from a "
                        "cardiac dipole model with known labels (rhythm, conduction, "
                        "hypertrophy, ST/T, QT, axis, extra systoles, noise, intervals), "
                        "ECG-QA-schema questions about them, patient-level train/valid/test "
                        "splits and a records index. The output is written atomically.")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--n-ecgs", type=int, default=2000, help="number of ECGs (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0); the same "
                   "seed gives the same dataset")
    p.add_argument("--workers", type=int, default=None, help="processes used for synthesis "
                   "(default: number of CPUs, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("stats", help="classes and episodes per question type",
                        description="Load ECG-QA-schema data, split classes into meta-train "
                        "and meta-test (no shared attribute) and count, per question type, the "
                        "samples, the classes and how many N-way K-shot episodes the official "
                        "splits support without reusing a sample.")
    p.add_argument("--qa", required=True, help="ECG-QA folder (holding answers.csv, or the "
                   "release root with ptbxl/ and mimic-iv-ecg/)")
    p.add_argument("--records", default=None, help="records index CSV, PTB-XL folder or "
                   "MIMIC-IV-ECG folder: count only samples whose ECGs are available")
    p.add_argument("--version", default="template", choices=["template", "paraphrased"],
                   help="question wording (default template)")
    p.add_argument("--n-way", type=int, default=5, help="classes per episode (default 5)")
    p.add_argument("--k-shot", type=int, default=5, help="support samples per class (default 5)")
    p.add_argument("--q-query", type=int, default=5, help="query samples per class (default 5)")
    p.add_argument("--by", default="attribute", choices=["attribute", "template"],
                   help="hold out attributes (default) or whole templates for meta-test")
    p.add_argument("--seed", type=int, default=0, help="class split seed (default 0)")
    p.add_argument("--test-split", default="test", choices=["test", "valid"],
                   help="split of the meta-test episodes (default test; valid for data "
                   "without a test split)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_data_stats)

    p = dsub.add_parser("labels", help="ECG-QA-schema questions from a table of per-record "
                        "codes (PTB-XL SCP labels, Challenge # Dx: headers)",
                        description="Turn per-record codes into an ECG-QA-schema dataset that "
                        "train-meta, bench and data stats read: single-verify / -choose / "
                        "-query questions in ECG-QA's wording with ECG-QA's answer strings "
                        "(negatives only from codes of the same group the record lacks), "
                        "numeric-feature range questions from the record's own measured RR, "
                        "PR, QRS, QT and QTc (a value within the measurement error of a range "
                        "bound asks nothing), patient-level splits, a records index and "
                        "labels.jsonl (codes, split and measurements per record). Written "
                        "atomically. docs/data.md lists how every code maps.")
    p.add_argument("--labels", required=True, metavar="CSV|FOLDER",
                   help="a CSV with columns ecg_id, path and any of patient_id, strat_fold, "
                   "super_class, sub_class, diagnostic, form, rhythm (';'-separated SCP codes; "
                   "path relative to the CSV), or a folder of Challenge records whose headers "
                   "carry '# Dx:' SNOMED-CT codes")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="question seed (default 0); a record's "
                   "questions depend only on the seed and its ecg_id")
    p.add_argument("--valid-folds", default="9", metavar="LIST", help="strat_fold values of "
                   "the valid split, comma-separated (default 9)")
    p.add_argument("--test-folds", default="10", metavar="LIST", help="strat_fold values of "
                   "the test split (default 10); the other folds are train")
    p.add_argument("--valid-fraction", type=float, default=0.1, metavar="F", help="without "
                   "strat_fold: share of patients in valid, by a hash of the patient id "
                   "(default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, metavar="F", help="without "
                   "strat_fold: share of patients in test (default 0.1)")
    p.add_argument("--no-measure", action="store_true", help="no numeric-feature questions "
                   "(skips reading and measuring every record)")
    p.add_argument("--workers", type=int, default=1, help="processes measuring records "
                   "(default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_labels)

    p = dsub.add_parser("merge", help="merge QA folders into one (e.g. PTB-XL label questions "
                        "and synthetic ones)",
                        description="Write one ECG-QA-schema folder holding the questions, "
                        "split lists and records of two or more QA folders (from `ecgqa data "
                        "synth`, `ecgqa data labels` or an ECG-QA release's template version), "
                        "so train-meta, bench and data stats read them together. ECG ids of "
                        "each later folder are shifted past the earlier ones (sources.json "
                        "lists the offsets); sample ids are renumbered; a template id two "
                        "folders share must be the same kind of question. Every source is "
                        "checked before anything is written; the output appears atomically.")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="QA folders to merge (two or "
                   "more), each with answers.csv and records_index.csv; the first keeps its "
                   "ECG ids")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.set_defaults(func=cmd_data_merge)

    p = dsub.add_parser("index", help="write a records index of PTB-XL records found in folders",
                        description="Scan folders for records whose names carry a PTB-XL "
                        "ecg_id (PTB-XL's 00001_lr / 00001_hr, the PhysioNet Challenge copies "
                        "HR00001) and write the ecg_id,path CSV that --records takes, so the "
                        "real ECG-QA (PTB-XL) questions can be asked of them.")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="folders to scan (recursively)")
    p.add_argument("--out", required=True, metavar="CSV", help="index file to write "
                   "(paths under its folder are written relative to it)")
    p.set_defaults(func=cmd_data_index)
    _add_data_instruct_parser(dsub)

    enc = sub.add_parser("encoder", help="pretrain or probe an ECG encoder",
                         description="ECG encoders: pretrain one on synthetic ECG-QA data "
                         "(multi-label attributes) or report its linear-probe quality.")
    esub = enc.add_subparsers(dest="encoder_command", metavar="ENCODER_COMMAND",
                              parser_class=_Parser, required=True,
                              help="pretrain: train an encoder; probe: linear-probe report; "
                              "distill-image: an image encoder from a signal encoder")
    p = esub.add_parser("pretrain", help="pretrain an encoder on labelled real and/or "
                        "synthetic ECGs",
                        description="Train an encoder with a multi-label head over the SCP "
                        "codes of a label table (--labels) and/or a synthetic dataset's "
                        "attributes (--data: rhythm, conduction, ST/T, axis, noise, extra "
                        "systoles, interval ranges); the head is dropped and the encoder saved "
                        "as config.json + model.safetensors.")
    p.add_argument("--config", required=True, help="encoder YAML, e.g. "
                   "configs/encoder/default.yaml")
    p.add_argument("--data", default=None, help="synthetic dataset folder (ecgqa data synth); "
                   "overrides the config's data")
    p.add_argument("--labels", default=None, help="label table of real ECGs (CSV, e.g. "
                   "../shared/data/ptbxl-zscore-250hz/labels.csv); overrides the config's labels")
    p.add_argument("--out", default=None, help="output folder; overrides the config's out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as epochs=3 lr=0.001")
    p.set_defaults(func=cmd_encoder)

    p = esub.add_parser("probe", help="linear-probe quality of an encoder vs random init",
                        description="Fit logistic regressions on frozen, mean-pooled encoder "
                        "features and print macro AUROC on held-out synthetic records and/or "
                        "cross-validated on real labelled records (SNOMED Dx codes).")
    p.add_argument("--encoder", default="default", help="encoder folder or 'default' "
                   "(the shipped weights)")
    p.add_argument("--data", default=None, help="synthetic dataset not used in pretraining")
    p.add_argument("--real", default=None, help="folder of real .hea records with Dx codes, "
                   "e.g. ../shared/data/real/cinc2021")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline")
    p.set_defaults(func=cmd_encoder)

    p = esub.add_parser("distill-image", help="train an image encoder to reproduce a signal "
                        "encoder's tokens from rendered records",
                        description="Cross-modal distillation: render every record of a label "
                        "table's train split on ECG paper (varied looks), and train a cnn_tokens "
                        "image encoder to give the frozen signal encoder's tokens of the same "
                        "record. Reports token agreement and a linear probe of the table's codes "
                        "on image features beside signal features (valid split). Written as "
                        "config.json + model.safetensors + metrics.json; use it with the LoRA "
                        "config's model.image_encoder_init.")
    p.add_argument("--config", required=True, help="distillation YAML, e.g. "
                   "configs/image/distill.yaml")
    p.add_argument("--labels", default=None, help="label table (CSV); overrides the config's")
    p.add_argument("--out", default=None, help="output folder (must not exist or be empty); "
                   "overrides the config's out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as epochs=3 variants=1")
    p.set_defaults(func=cmd_encoder)

    from ecgqa.meta.run import DESCRIPTION, add_arguments

    p = sub.add_parser("train-meta", help="meta-train the projector on few-shot ECG-QA episodes",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=cmd_train_meta)
    from ecgqa.image_qa.run import DESCRIPTION as LORA_DESCRIPTION
    from ecgqa.image_qa.run import add_arguments as add_lora_arguments

    p = sub.add_parser("train-lora", help="LoRA-tune an LLM on ECG-image instruction data",
                       description=LORA_DESCRIPTION)
    add_lora_arguments(p)
    p.set_defaults(func=cmd_train_lora)
    _add_chat_parser(sub)
    _add_bench_parser(sub)
    return parser


def _add_chat_parser(sub) -> None:
    from ecgqa.chat import DEFAULT_MAX_SHOTS, DEFAULT_THRESHOLD

    p = sub.add_parser("chat", help="ask questions about a real ECG (REPL or one question)",
                       description="Load one ECG record (two to compare), print its leads, "
                       "rate, duration, heart rate and intervals, then answer questions typed "
                       "at the prompt with a meta-trained adapter. Yes/no, 'which ..., A or "
                       "B?' and ECG-QA template questions show the probability of each option "
                       "(\"not sure\" below --threshold); other questions are mapped to the "
                       "closest known question (rhythm, conduction, axis, interval ranges, "
                       "rate, noise, extra systoles) and scored the same way, or answered with "
                       "what can be asked; free generated text only with --generate. "
                       "Commands: /plot, /leads I,II, /summary, /help, /quit. With a LoRA "
                       "image adapter (ecgqa train-lora) the same questions are answered "
                       "about a picture of one ECG: --image FILE (a photo, scan or rendered "
                       "PNG/JPG), or --ecg RECORD --modality image (the record drawn as the "
                       "adapter's training images). Research software, not a medical device.")
    p.add_argument("--ecg", action="append", default=None, metavar="RECORD",
                   help="ECG record (x.hea, x.mat, x.dat or bare name x); give it twice, "
                   "--ecg FIRST --ecg SECOND, for comparison questions (signal modality)")
    p.add_argument("--image", action="append", default=None, metavar="FILE",
                   help="a picture of one 12-lead ECG (photo, scan or rendered PNG/JPG) instead "
                   "of --ecg; implies --modality image; read by the shipped image adapter, or by "
                   "--adapter DIR, a LoRA image "
                   "adapter")
    p.add_argument("--modality", choices=("signal", "image"), default=None,
                   help="what the model reads: 'signal' (the record's samples, a train-meta "
                   "adapter; the default) or 'image' (a picture of the ECG, a train-lora "
                   "adapter; an --ecg record is drawn as the adapter's training images were)")
    p.add_argument("--adapter", default="default", metavar="DIR",
                   help="adapter folder: written by ecgqa train-meta (signal), or by ecgqa "
                   "train-lora (image: RUN/adapter or RUN); or a shipped one: 'default' (the "
                   "default: trained on every class of real and synthetic questions), "
                   "'heldout' (the benchmark's, some classes held out) or 'image' (the "
                   "shipped LoRA image adapter, which --image / --modality image use when "
                   "the adapter is left at 'default')")
    p.add_argument("--question", default=None, metavar="TEXT",
                   help="answer this one question and exit instead of starting the REPL")
    p.add_argument("--json", action="store_true", help="with --question: print one JSON "
                   "object {answer, options [{text, prob}], confidence, record, adapter, ...}")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="P",
                   help="answer 'not sure' when the best option's probability is below P "
                   f"(default {DEFAULT_THRESHOLD})")
    p.add_argument("--generate", action="store_true",
                   help="answer questions that match no known question in free generated "
                   "text, streamed (unscored; off by default: such questions are answered "
                   "with what can be asked)")
    p.add_argument("--leads", default=None, metavar="LIST",
                   help="let the model see only these leads, e.g. 'I,II' or 'limb' "
                   "(default: all; /leads in the REPL; signal modality only)")
    p.add_argument("--shots", default=None, metavar="FILE",
                   help="ECG-QA-schema examples (a JSON shard or a dataset folder) to adapt "
                   "the projector on before answering (few-shot personalisation; signal "
                   "modality only)")
    p.add_argument("--records", default=None, metavar="INDEX",
                   help="where the --shots ECGs are: records index CSV, PTB-XL or MIMIC-IV-ECG "
                   "folder (default: records_index.csv beside the --shots file or above)")
    p.add_argument("--max-shots", type=int, default=DEFAULT_MAX_SHOTS, metavar="N",
                   help=f"adapt on at most the first N --shots examples (default "
                   f"{DEFAULT_MAX_SHOTS})")
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    """Questions about one or two ECG records (ecgqa.chat)."""
    from ecgqa.chat import ChatError, run

    try:
        return run(args)
    except ChatError as err:
        raise UserError(str(err)) from None


# --------------------------------------------------------------------------- bench


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="few-shot benchmark: a grid of question types x N-way x "
                       "K-shot x lead subsets, with baselines, on the same episodes",
                       description="Evaluate an adapter with test-time adaptation against "
                       "baselines (no adaptation, text-only LLM, in-context examples, "
                       "prototypical network, linear probe, support majority) on every cell of "
                       "a suite. With --modality image, a LoRA adapter (train-lora) answers "
                       "the same episodes' queries from ECG images, against the same model "
                       "with LoRA switched off and the support majority. Writes "
                       "OUT/results.json, OUT/results.md and plots; an interrupted run "
                       "resumes from its finished cells.",
                       epilog=_suite_keys(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, metavar="YAML",
                   help="suite file, e.g. eval/suites/default.yaml (its keys are listed below)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="adapter folder written by train-meta, or a shipped one ('heldout': "
                   "meta-trained with classes held out, for honest few-shot numbers; "
                   "'default': chat's, trained on every class); with --modality image a LoRA "
                   "adapter folder (train-lora's OUT/adapter) (overrides the suite's)")
    p.add_argument("--modality", default=None, choices=("signal", "image"),
                   help="what the model reads: the ECG signal (meta-trained adapter) or the "
                   "ECG drawn as an image (LoRA adapter); the same episodes either way "
                   "(overrides the suite's; default there signal)")
    p.add_argument("--qa", default=None, metavar="PATH",
                   help="ECG-QA-schema data: a real ECG-QA version folder, `ecgqa data synth` "
                   "output, or one JSON file of samples (then give --splits) (overrides the "
                   "suite's)")
    p.add_argument("--records", default=None, metavar="INDEX",
                   help="records index CSV (ecg_id,path) or PTB-XL / MIMIC-IV-ECG folder "
                   "(default: the suite's, else records_index.csv in the QA folder)")
    p.add_argument("--splits", default=None, metavar="FILE",
                   help='JSON {"support_pool": [ecg_id...], "query_pool": [ecg_id...]}: '
                   "support examples from the first pool, queries from the second (default: "
                   "the suite's split pools, valid -> test)")
    p.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="episodes per cell (overrides the suite's; default there 200)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default out/bench/<suite name>); finished cells in it "
                   "are reused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any suite key, e.g. --set k_shot=[1,5] (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)


def _suite_keys() -> str:
    import dataclasses
    import textwrap

    from ecgqa.bench.suite import SuiteConfig

    lines = ["suite keys (YAML, or --set KEY=VALUE):"]
    for f in dataclasses.fields(SuiteConfig):
        lines += textwrap.wrap(f"{f.name}: {f.metadata['help']}", 88, initial_indent="  ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark suite (ecgqa.bench)."""
    from ecgqa.bench.runner import run_suite
    from ecgqa.bench.suite import SuiteConfig
    from ecgqa.config import load_config

    overrides = list(args.set)
    for key, value in (("adapter", args.adapter), ("modality", args.modality), ("qa", args.qa),
                       ("records", args.records), ("splits_file", args.splits),
                       ("episodes", args.episodes)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        cfg = load_config(SuiteConfig, args.suite, overrides)
        if cfg.splits_file and args.splits is None:          # a suite's own: beside it
            cfg.splits_file = str(Path(args.suite).parent / cfg.splits_file)
        out = args.out or f"out/bench/{cfg.name}"
        results = run_suite(cfg, out, progress=not args.quiet)
    except Exception as err:                       # noqa: BLE001 - user errors are one line
        if _is_bench_user_error(err):
            raise UserError(str(err)) from None
        raise
    from ecgqa.bench.report import summary_lines

    print("\n".join(summary_lines(results)))
    print(f"wrote {out}/results.json, {out}/results.md and plots")
    return 0


def _is_bench_user_error(err: Exception) -> bool:
    from ecgqa.bench.runner import BenchError
    from ecgqa.config import ConfigError
    from ecgqa.meta.adapter import AdapterError
    from ecgqa.models.llm import LlmError
    from ecgqa.qa.ecgqa import EcgQaError

    return isinstance(err, (BenchError, ConfigError, AdapterError, EcgQaError, LlmError))


# --------------------------------------------------------------------------- meta-learning


def cmd_train_meta(args: argparse.Namespace) -> int:
    """Meta-train (ecgqa.meta.run); the same as ``accelerate launch ecgqa/train_meta.py``."""
    from ecgqa.meta.run import is_user_error, run

    try:
        return run(args)
    except Exception as err:                       # noqa: BLE001 - user errors are one line
        if is_user_error(err):
            raise UserError(str(err)) from None
        raise


def cmd_train_lora(args: argparse.Namespace) -> int:
    """LoRA-tune on ECG images (ecgqa.image_qa.train); the same as ``accelerate launch
    ecgqa/train_lora.py``."""
    from ecgqa.image_qa.run import is_user_error, run

    try:
        return run(args)
    except Exception as err:                       # noqa: BLE001 - user errors are one line
        if is_user_error(err):
            raise UserError(str(err)) from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecgqa`` console script."""
    from ecgqa.errors import EcgqaError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train-lora"]:             # dotted overrides such as --train.lr 1e-4
            from ecgqa.image_qa.run import parse as parse_lora

            return cmd_train_lora(parse_lora(argv[1:], "ecgqa train-lora", parser_class=_Parser))
        if argv[:1] == ["train-meta"]:             # dotted overrides such as --meta.inner_lr 0.1
            from ecgqa.meta.run import parse

            args = parse(argv[1:], "ecgqa train-meta", parser_class=_Parser)
            return cmd_train_meta(args)
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USAGE
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (UserError, EcgqaError) as err:    # every user error of the library
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
