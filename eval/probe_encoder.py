"""Linear-probe quality of ECG encoders on real ECGs (Markdown tables).

Frozen encoders, mean-pooled tokens, one logistic regression per label
(``ecgqa.models.encoders.report``):

(a) PTB-XL (``../shared/data/ptbxl-zscore-250hz``: 1,625 real records, units NU): fit on
    folds 1-8 (1,442 records), AUROC on fold 9 (183 records). Macro AUROC per code group
    (5 superclasses, rhythm, form, subclasses) over the codes with >= ``--min-train``
    positives in folds 1-8 and >= ``--min-valid`` in fold 9; a record without any code of
    a group is left out of that group (PTB-XL annotates form for ~40% of its records).
    Fold 9 is small: 6-8 positives per rhythm code, so single-code AUROCs move by
    several hundredths with one record.
(b) CinC 2021 (``../shared/data/real/cinc2021``: 50 records in mV, 500 Hz, three
    databases): SNOMED ``Dx`` codes in >= 5 records, stratified 5-fold CV. A sanity
    check of mV input only: intervals are roughly +-0.1.
(c) ``--pipeline``: the first encoder with its input pipeline (band-pass, z-score)
    switched off at inference, and the encoders of ``--control`` (e.g. the same recipe
    trained without the pipeline), on (a)'s group macros and (b): what the pipeline buys
    on records in mV.
(d) ``--transfer``: does the input pipeline make records in mV look like records in NU?
    One logistic regression per rhythm code fit on (a)'s folds 1-8 (NU, 250 Hz) is scored,
    without refit, on fold 9 and on (b)'s CinC records (mV, 500 Hz), over the codes with a
    SNOMED equivalent (``ecgqa.qa.codes.SNOMED_TO_SCP``) in >= ``--min-real`` CinC records;
    a record without any rhythm code is left out. Columns: the first encoder as trained,
    without its band-pass, without it and with normalisation ``record``, and its random
    twin (always). CinC ``HR06005`` is PTB-XL record 6005, in folds 1-8.

Columns: the encoder, the encoders of ``--compare`` (default: the shipped default) and a
randomly initialised twin of the first (same architecture and input spec, seed 0). Run:

    .venv/bin/python eval/probe_encoder.py --encoder runs/encoder-ptbxl --pipeline
    .venv/bin/python eval/probe_encoder.py --encoder runs/encoder-ptbxl --compare \
        --no-baseline --transfer
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ecgqa.models.encoders import load_encoder
from ecgqa.models.encoders.report import (
    pipeline_variants,
    probe_columns,
    random_twin,
    transfer_columns,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LABELS = SHARED / "ptbxl-zscore-250hz" / "labels.csv"
REAL_DIR = SHARED / "real" / "cinc2021"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="default", help="'default' or a saved encoder folder")
    ap.add_argument("--compare", nargs="*", default=["default"],
                    help="more encoders as columns (default: the shipped default)")
    ap.add_argument("--labels", default=str(LABELS), help="PTB-XL label table ('' = skip)")
    ap.add_argument("--real", default=str(REAL_DIR), help="folder of labelled .hea records "
                    "('' = skip)")
    ap.add_argument("--synth", default=None, help="also probe this synthetic dataset "
                    "(ecgqa data synth, a seed the encoders were not trained on)")
    ap.add_argument("--min-train", type=int, default=10, help="positives a code needs in "
                    "folds 1-8")
    ap.add_argument("--min-valid", type=int, default=5, help="positives a code needs in fold 9")
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init column")
    ap.add_argument("--pipeline", action="store_true", help="add table (c): the encoder "
                    "without its band-pass / z-score at inference")
    ap.add_argument("--control", nargs="*", default=[], help="encoders trained without the "
                    "pipeline, added as columns of table (c)")
    ap.add_argument("--transfer", action="store_true", help="add table (d): the rhythm probe "
                    "fit on --labels folds 1-8 scored on the --real records (no refit)")
    ap.add_argument("--min-real", type=int, default=3, help="positives a rhythm code needs "
                    "among the --real records for table (d)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    if args.transfer and not (args.labels and args.real):
        ap.error("--transfer needs both --labels and --real")
    torch.set_num_threads(args.threads)
    start = time.time()
    encoder = load_encoder(args.encoder)
    columns = {f"`{args.encoder}`": encoder}
    columns.update({f"`{c}`": load_encoder(c) for c in args.compare if c != args.encoder})
    if not args.no_baseline:
        columns["random init (same arch)"] = random_twin(encoder)
    data = dict(labels=args.labels or None, real_dir=args.real or None, synth_dir=args.synth,
                min_train=args.min_train, min_valid=args.min_valid)
    print(probe_columns(columns, **data), end="")
    if args.pipeline:
        variants = pipeline_variants(encoder)
        variants.update({f"`{c}`": load_encoder(c) for c in args.control})
        print(f"\nPipeline of `{args.encoder}` switched off at inference (same weights):\n")
        print(probe_columns(variants, **{**data, "synth_dir": None}, per_code=False), end="")
    if args.transfer:
        variants = {**pipeline_variants(encoder), "random init (same arch)": random_twin(encoder)}
        print(f"\nRhythm probe of `{args.encoder}` fit on PTB-XL folds 1-8 (NU), scored "
              "without refit on fold 9 (NU) and on CinC 2021 (mV):\n")
        print(transfer_columns(variants, labels=args.labels, other=args.real,
                               min_train=args.min_train, min_other=args.min_real), end="")
    print(f"\n(labels: {args.labels}; real: {args.real}; {time.time() - start:.0f} s on "
          f"{args.threads} threads)")


if __name__ == "__main__":
    main()
