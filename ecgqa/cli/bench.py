"""``ecgqa bench``: the few-shot benchmark suite."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
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
    cfg = load_config(SuiteConfig, args.suite, overrides)
    if cfg.splits_file and args.splits is None:          # a suite's own: beside it
        cfg.splits_file = str(Path(args.suite).parent / cfg.splits_file)
    out = args.out or f"out/bench/{cfg.name}"
    results = run_suite(cfg, out, progress=not args.quiet)
    from ecgqa.bench.report import summary_lines

    print("\n".join(summary_lines(results)))
    print(f"wrote {out}/results.json, {out}/results.md and plots")
    return 0
