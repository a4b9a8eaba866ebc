"""Zero-shot yes/no answers of an adapter on labelled records it never saw.

    .venv/bin/python eval/zero_shot.py --labels ../shared/data/real/cinc2021 [--adapter default]
    .venv/bin/python eval/zero_shot.py --labels ../shared/data/ptbxl-zscore-250hz/labels.csv \
        --splits valid

The label table (a folder of Challenge records with '# Dx:' SNOMED-CT codes, or a CSV of
SCP codes, as `ecgqa data labels` reads) becomes ECG-QA single-verify questions ("Does this
ECG show sinus tachycardia?", both answers from the record's own codes, negatives only from
codes of the same group it lacks). The adapter answers each with no shots: P(yes) over the
options yes / no. Printed per question and overall: accuracy at the top option, balanced
accuracy (mean recall of yes and no), AUROC of P(yes), ECE (10 bins) and the mean P(yes) --
what a user of `ecgqa chat` without `--shots` gets.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def main() -> int:
    from ecgqa.bench.metrics import expected_calibration_error
    from ecgqa.meta.adapter import load_adapter
    from ecgqa.meta.data import load_available
    from ecgqa.models.encoders.probe import macro_auroc
    from ecgqa.qa.labelqa import build_label_qa
    from ecgqa.qa.labels import read_label_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, help="label table: a folder of Challenge "
                    "records or a CSV of SCP codes (as `ecgqa data labels --labels`)")
    ap.add_argument("--adapter", default="default", help="adapter folder or a shipped name "
                    "(default: default)")
    ap.add_argument("--splits", nargs="+", default=["train", "valid", "test"],
                    help="record splits to ask about (PTB-XL: valid = fold 9)")
    ap.add_argument("--min-per-answer", type=int, default=2,
                    help="questions with fewer yes or no records are pooled only (default 2)")
    args = ap.parse_args()
    model, _, _ = load_adapter(args.adapter)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        build_label_qa(read_label_table(args.labels), Path(tmp) / "qa")
        _, resolver, samples = load_available(str(Path(tmp) / "qa"), None, "template",
                                              ["single-verify"])
        samples = [s for s in samples if s.split in args.splits]
        signals = model.signal_cache(resolver)
        rows = []
        with torch.no_grad():
            for s in tqdm(samples, desc="answering", unit="question"):
                batch = model.make_batch([s], signals, with_answers=False)
                probs = model.score_options(batch, [[("yes",), ("no",)]]).probs[0]
                rows.append((s.attribute, s.answer[0] == "yes", float(probs[0])))
    by = defaultdict(list)
    for attr, yes, p in rows:
        by[", ".join(attr or ())].append((yes, p))
    by["all questions"] = [(yes, p) for _, yes, p in rows]
    print(f"adapter {args.adapter}; {len(rows)} questions on records of {args.labels} "
          f"({', '.join(args.splits)})\n")
    print("| question (does this ECG show ...) | yes | no | accuracy | balanced accuracy | "
          "AUROC P(yes) | ECE | mean P(yes) |\n|---|---|---|---|---|---|---|---|")
    for name, items in sorted(by.items(), key=lambda kv: (kv[0] == "all questions", kv[0])):
        yes = np.array([y for y, _ in items])
        p = np.array([q for _, q in items])
        if name != "all questions" and min(yes.sum(), (~yes).sum()) < args.min_per_answer:
            continue
        pred = p >= 0.5
        conf = np.where(pred, p, 1 - p)
        bal = 0.5 * (pred[yes].mean() + (~pred[~yes]).mean())
        ece = expected_calibration_error(conf, pred == yes)
        print(f"| {name} | {yes.sum()} | {(~yes).sum()} | {(pred == yes).mean():.3f} | "
              f"{bal:.3f} | {macro_auroc(yes[:, None], p[:, None])[0]:.3f} | {ece:.3f} | "
              f"{p.mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
