"""Linear-probe quality of an ECG encoder vs a randomly initialised twin (Markdown table).

(a) Synthetic: a fresh synthetic dataset with a seed the encoder was not pretrained on
(default: ``--n-synth 2000 --seed 1``, generated into a temporary folder unless
``--synth DIR`` is given); logistic regression per label on the frozen mean-pooled
features of the train split, AUROC on the test split.
(b) Real: the 50 labelled PhysioNet/CinC 2021 records in ``../shared/data/real/cinc2021``;
SNOMED ``Dx`` codes present in >= 5 records, stratified 5-fold CV. With 50 records and
5-23 positives per code the AUROCs have wide confidence intervals (roughly +-0.1) and
codes correlate with the source database, so read them as a sanity check only. Run:

    .venv/bin/python eval/probe_encoder.py                      # the shipped default
    .venv/bin/python eval/probe_encoder.py --encoder runs/encoder --synth /tmp/enc_synth_s1
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ecgqa.models.encoders.report import probe_table
from ecgqa.synth.dataset import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "real" / "cinc2021"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="default", help="'default' or a saved encoder folder")
    ap.add_argument("--synth", default=None, help="synthetic dataset (default: make one)")
    ap.add_argument("--n-synth", type=int, default=2000, help="ECGs of the generated dataset")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated dataset")
    ap.add_argument("--real", default=str(REAL_DIR), help="folder of labelled .hea records")
    ap.add_argument("--no-baseline", action="store_true", help="skip the random-init column")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    tmp = None
    synth = args.synth
    if synth is None:
        tmp = Path(tempfile.mkdtemp(prefix="ecgqa-probe-"))
        synth = tmp / "synth"
        write_synthetic(synth, args.n_synth, seed=args.seed, workers=2)
    try:
        table = probe_table(args.encoder, synth, args.real or None, baseline=not args.no_baseline)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table, end="")
    print(f"\n(synthetic: {synth}, train split -> test split; real: {args.real}; "
          f"{time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
