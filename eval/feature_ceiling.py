"""What the frozen encoder's features can answer with all the training data, not 5 shots.

    .venv/bin/python eval/feature_ceiling.py [--qa out/ptbxl-qa] [--encoder default]

For every single-verify question (template, attribute) that has both answers among the
``train`` records and at least 3 of each among the ``valid`` records (PTB-XL: folds 1-8 and
fold 9), a logistic regression on the mean-pooled encoder features of every train record
(balanced class weights, C = 0.1) predicts the valid records; the balanced accuracy
(mean of the two answers' recalls, chance 0.5) is printed per question and averaged. It
bounds what a model reading only these features can reach zero-shot on trained classes
(the chat default's setting), and shows which questions the features do not carry.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from ecgqa.meta.data import load_available
from ecgqa.models.encoders import load_encoder
from ecgqa.models.encoders.probe import features
from ecgqa.qa.cache import SignalCache


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qa", default="out/ptbxl-qa", help="QA folder (default out/ptbxl-qa, "
                    "built by configs/meta/ptbxl.yaml or `ecgqa data labels`)")
    ap.add_argument("--encoder", default="default", help="encoder: 'default' or a folder")
    ap.add_argument("--min-valid", type=int, default=3, help="valid records per answer at "
                    "least (default 3)")
    args = ap.parse_args()
    _, resolver, samples = load_available(args.qa, None, "template", ["single-verify"])
    enc = load_encoder(args.encoder)
    spec = enc.input_spec
    signals = SignalCache(resolver, fs=spec.fs, duration_s=spec.duration_s,
                          leads=tuple(spec.leads))
    by_question = defaultdict(list)
    for s in samples:
        by_question[(s.template_id, s.attribute)].append(s)
    ids = sorted({s.ecg_ids[0] for s in samples if s.split in ("train", "valid")})
    read = [signals.get(i) for i in tqdm(ids, desc="reading ECGs", unit="ecg")]
    pooled = features(enc, np.stack([sig for sig, _ in read]), np.stack([m for _, m in read]))
    feats = dict(zip(ids, pooled))
    print("| question | train | valid | balanced accuracy |\n|---|---|---|---|")
    scores = []
    for (template, attr), qs in sorted(by_question.items(), key=lambda kv: str(kv[0])):
        train = [s for s in qs if s.split == "train"]
        valid = [s for s in qs if s.split == "valid"]
        y = np.array([s.answer[0] == "yes" for s in train])
        v = np.array([s.answer[0] == "yes" for s in valid])
        if len(set(y)) < 2 or v.sum() < args.min_valid or (~v).sum() < args.min_valid:
            continue
        clf = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.1)
        clf.fit(np.stack([feats[s.ecg_ids[0]] for s in train]), y)
        pred = clf.predict(np.stack([feats[s.ecg_ids[0]] for s in valid])).astype(bool)
        score = 0.5 * (pred[v].mean() + (~pred[~v]).mean())
        scores.append(score)
        print(f"| {template} {', '.join(attr or ())} | {len(train)} | {len(valid)} | "
              f"{score:.3f} |")
    print(f"\nmean balanced accuracy over {len(scores)} questions: {np.mean(scores):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
