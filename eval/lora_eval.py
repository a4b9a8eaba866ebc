"""Benchmark: does LoRA instruction tuning help, and does the model read the image?

    .venv/bin/python eval/lora_eval.py --data out/instruct --config configs/lora/default.yaml \\
        --runs untuned tuned=out/lora-default/adapter --n 189
    .venv/bin/python eval/lora_eval.py --data out/instruct-ptbxl --split valid \\
        --question-types single-verify --runs shipped=default --sensitivity --renders plain varied

Every model answers the same questions of one split of an instruction dataset (``ecgqa
data instruct``; its ``test`` / ``valid`` records are not in ``train``):

- option accuracy: the most likely of the entry's ``options`` (its template's answer
  classes), scored after the image and question were read;
- exact match: the greedy generated answer, lower-cased and stripped, equals the answer;
- validation loss: mean answer-token loss (teacher forced) on the same questions.

``untuned`` is the model the training starts from (``--config``, seed 0): the frozen LLM
with fresh LoRA (B = 0, so the LLM is unchanged) and the untrained image encoder. The
``majority`` line answers every question with the training split's most frequent answer.
``NAME=default`` is the shipped image adapter.

``--balanced`` keeps, for every question, as many entries of each answer as its rarest
answer has (questions with one answer are left out), so the text alone is at chance.
``--sensitivity`` (ECG sensitivity): each model answers the same questions again about a
blank white page and about another patient's ECG (each question gets the image of a
different record of the same split, a seeded derangement); a model that reads the image
falls towards chance there. ``--renders plain varied`` re-renders each question's record
from its source in the plain printout look and in a random print/photo look (grid, line,
rotation, perspective, blur, noise; seeded) instead of the dataset's own image: the
robustness check. 95% confidence intervals over questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ecgqa.config import load_config
from ecgqa.image_qa.instruct import read_instruct
from ecgqa.image_qa.loading import build_image_qa, load_image_qa
from ecgqa.image_qa.model import ImageQaModel
from ecgqa.image_qa.train import TrainLoraConfig
from ecgqa.intervals import mean_ci


def _model(spec: str, config: str) -> ImageQaModel:
    if spec == "untuned":
        torch.manual_seed(0)
        return build_image_qa(load_config(TrainLoraConfig, config).model,
                                  trainable=False).eval()
    return load_image_qa(spec).eval()


@torch.no_grad()
def evaluate(model: ImageQaModel, samples, images, generate: bool = True) -> dict:
    """Option accuracy (and exact match, loss with ``generate``) of ``samples`` answered
    about ``images`` (one PIL image or path per sample)."""
    acc, exact, loss, seconds = [], [], [], 0.0
    for s, image in zip(samples, images):
        question, answer = s.turns[0]
        options = s.meta["options"]
        t = time.perf_counter()
        probs = model.score_options([image], [question], [options])[0]
        acc.append(float(options[int(probs[: len(options)].argmax())] == answer))
        if generate:
            text = model.generate(image, question)
            exact.append(float(text.strip().strip(".").lower() == answer.lower()))
            loss.append(float(model.loss(model.make_batch([image], [[(question, answer)]]))))
        seconds += time.perf_counter() - t
    out = {"option_accuracy": mean_ci(acc), "seconds_per_answer": seconds / len(samples),
           "correct": acc}
    if generate:
        out |= {"exact_match": mean_ci(exact), "valid_loss": mean_ci(loss)}
    return out


def other_records(samples, seed: int = 0) -> list[int]:
    """For each sample the index of a sample of another record (seeded)."""
    rng = np.random.default_rng(seed)
    records = [s.meta.get("record") or str(s.image) for s in samples]
    out = []
    for rec in records:
        pool = [j for j, r in enumerate(records) if r != rec]
        if not pool:
            raise SystemExit("--sensitivity needs questions about at least two records")
        out.append(pool[int(rng.integers(len(pool)))])
    return out


def rerender(data: Path, samples, how: str, size, seed: int = 0) -> list:
    """Each sample's record drawn again from its source: ``plain`` or ``varied`` look."""
    from ecgqa.bench.image import instruct_resolver
    from ecgqa.image_qa.render import Variation, render_image
    from ecgqa.records.read import read_record

    resolver = instruct_resolver(json.loads((data / "meta.json").read_text()))
    cache: dict[tuple, object] = {}
    out = []
    for s in samples:
        ecg = int(s.meta["ecg_id"][0])
        if (ecg, how) not in cache:
            rng = np.random.default_rng([seed, ecg])
            cache[ecg, how] = render_image(read_record(resolver.require(ecg)), tuple(size),
                                           Variation() if how == "varied" else None, rng)
        out.append(cache[ecg, how])
    return out


def _label(name: str, how: str) -> str:
    return name if how == "dataset" else f"{name} ({how} renders)"


def _row(r: dict) -> str:
    cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" if k in r else "–"
             for k in ("option_accuracy", "exact_match", "valid_loss")]
    sec = f"{r['seconds_per_answer']:.2f}" if "seconds_per_answer" in r else "–"
    return f"{' | '.join(cells)} | {sec}"


def _paired(a: list[float], b: list[float]) -> str:
    d = np.asarray(a) - np.asarray(b)
    m, ci = mean_ci(d.tolist())
    return f"{m:+.3f} ± {ci:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="instruction dataset folder")
    ap.add_argument("--config", default="configs/lora/default.yaml",
                    help="train_lora config the untuned model is built from")
    ap.add_argument("--runs", nargs="+", required=True,
                    help="'untuned' and/or NAME=ADAPTER_DIR (train_lora's out/adapter)")
    ap.add_argument("--split", default="test", help="split to answer (default test)")
    ap.add_argument("--question-types", nargs="+", default=None,
                    help="only these question types (default: all)")
    ap.add_argument("--balanced", action="store_true",
                    help="only questions with several answers, each equally often (a seeded "
                    "draw): the question text then tells nothing, only the image does")
    ap.add_argument("--n", type=int, default=0, help="a seeded random N questions (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --n, derangement, renders")
    ap.add_argument("--sensitivity", action="store_true",
                    help="also answer about a blank page and another patient's ECG")
    ap.add_argument("--renders", nargs="+", choices=("dataset", "plain", "varied"),
                    default=["dataset"], help="which images: the dataset's own, or the "
                    "records re-rendered plain / varied (default: dataset)")
    ap.add_argument("--no-generate", action="store_true",
                    help="option accuracy only (no generation, exact match or loss)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    samples = read_instruct(args.data, split=args.split)
    samples = [s for s in samples if s.meta.get("options") and (
        not args.question_types or s.meta.get("question_type") in args.question_types)]
    if args.balanced:
        from ecgqa.image_qa.train import balance_answers

        samples = balance_answers(samples, args.seed)
    if args.n and args.n < len(samples):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(samples), args.n, False))
        samples = [samples[i] for i in keep]
    train = read_instruct(args.data, split="train")
    prior = Counter(s.turns[0][1] for s in train).most_common(1)[0][0]
    print(f"{len(samples)} {args.split} questions; majority answer of train: {prior!r}")
    rows = {"majority": {"option_accuracy": mean_ci(
        [float(s.turns[0][1] == prior) for s in samples])}}
    paired = {}
    for run in args.runs:
        name, _, path = run.partition("=")
        model = _model(path or name, args.config)
        size = model.cfg.image_size
        first_images = None                  # the first --renders' images (sensitivity base)
        for how in args.renders:
            images = ([s.image for s in samples] if how == "dataset"
                      else rerender(Path(args.data), samples, how, size, args.seed))
            first_images = images if first_images is None else first_images
            label = _label(name, how)
            rows[label] = evaluate(model, samples, images, not args.no_generate)
            print(f"{label}: done", flush=True)
            if how != args.renders[0]:
                base = _label(name, args.renders[0])
                paired[f"{label} - {base}"] = _paired(rows[label]["correct"],
                                                      rows[base]["correct"])
        if args.sensitivity:
            from PIL import Image

            h, w = size
            blank = [Image.new("RGB", (w, h), (255, 255, 255))] * len(samples)
            other = [first_images[j] for j in other_records(samples, args.seed)]
            first = _label(name, args.renders[0])
            for label, images in ((f"{name} (blank page)", blank),
                                  (f"{name} (another patient's ECG)", other)):
                rows[label] = evaluate(model, samples, images, generate=False)
                paired[f"{label} - {first}"] = _paired(rows[label]["correct"],
                                                       rows[first]["correct"])
                print(f"{label}: done", flush=True)
    print("| model | option accuracy | exact match | valid loss | s/answer |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {_row(r)} |")
    if paired:
        print("\n| paired difference in option accuracy | mean ± 95% CI |\n|---|---|")
        for k, v in paired.items():
            print(f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"questions": len(samples), "split": args.split, "paired": paired,
             "rows": {k: {m: v for m, v in r.items() if m != "correct"}
                      for k, r in rows.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
