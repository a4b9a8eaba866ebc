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

Columns: the encoder, the encoders of ``--compare`` (default: the shipped default) and a
randomly initialised twin of the first (same architecture and input spec, seed 0). Run:

    .venv/bin/python eval/probe_encoder.py --encoder runs/encoder-ptbxl --pipeline
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ecgqa.models.encoders import load_encoder
from ecgqa.models.encoders.report import probe_columns, random_twin, with_spec

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
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
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
        spec = encoder.input_spec
        variants = {f"as trained (band-pass {spec.bandpass}, {spec.normalisation})": encoder,
                    "no band-pass": with_spec(encoder, bandpass=None),
                    "no band-pass, normalisation record": with_spec(
                        encoder, bandpass=None, normalisation="record")}
        variants.update({f"`{c}`": load_encoder(c) for c in args.control})
        print(f"\nPipeline of `{args.encoder}` switched off at inference (same weights):\n")
        print(probe_columns(variants, **{**data, "synth_dir": None}, per_code=False), end="")
    print(f"\n(labels: {args.labels}; real: {args.real}; {time.time() - start:.0f} s on "
          f"{args.threads} threads)")


if __name__ == "__main__":
    main()
