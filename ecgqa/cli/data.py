"""``ecgqa data ...``: synthesise, label, merge, index and inspect ECG-QA-schema data, and
render image instruction data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecgqa.cli.parsing import Parser, UserError


def add_parsers(sub) -> None:
    """The ``data`` subcommand and its own subcommands."""
    data = sub.add_parser("data", help="ECG-QA data: synthesise, inspect",
                          description="Work with ECG-QA-schema data (the real release, "
                          "synthetic data, or any QA file with a records index).")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=Parser,
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
    from ecgqa.qa.stats import episode_table, format_table

    rows, note = episode_table(args.qa, records=args.records, version=args.version,
                               n_way=args.n_way, k_shot=args.k_shot, q_query=args.q_query,
                               seed=args.seed, by=args.by, test_split=args.test_split)
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
    from ecgqa.qa.resolve import find_ptbxl_records, write_index

    found = find_ptbxl_records(args.folders)
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
