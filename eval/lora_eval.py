"""Benchmark: does LoRA instruction tuning help? Accuracy on held-out records' questions.

    .venv/bin/python eval/lora_eval.py --data out/instruct --config configs/lora/default.yaml \\
        --runs untuned tuned=out/lora-default/adapter --n 189

Every model answers the same questions of the ``test`` split of an instruction dataset
(``ecgqa data instruct``; its records are not in ``train``):

- option accuracy: the most likely of the entry's ``options`` (its template's answer
  classes), scored after the image and question were read;
- exact match: the greedy generated answer, lower-cased and stripped, equals the answer;
- validation loss: mean answer-token loss (teacher forced) on the same questions.

``untuned`` is the model the training starts from (``--config``, seed 0): the frozen LLM
with fresh LoRA (B = 0, so the LLM is unchanged) and the untrained image encoder. The
``majority`` line answers every question with the training split's most frequent answer.
95% confidence intervals over questions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import torch

from ecgqa.config import load_config
from ecgqa.image_qa.instruct import read_instruct
from ecgqa.image_qa.model import ImageQaModel
from ecgqa.image_qa.train import TrainLoraConfig
from ecgqa.meta.loop import mean_ci


def _model(spec: str, config: str) -> ImageQaModel:
    if spec == "untuned":
        torch.manual_seed(0)
        return ImageQaModel.build(load_config(TrainLoraConfig, config).model,
                                  trainable=False).eval()
    return ImageQaModel.from_pretrained(spec)


@torch.no_grad()
def evaluate(model: ImageQaModel, samples) -> dict:
    acc, exact, loss, seconds = [], [], [], 0.0
    for s in samples:
        question, answer = s.turns[0]
        options = s.meta["options"]
        t = time.perf_counter()
        probs = model.score_options([s.image], [question], [options])[0]
        text = model.generate(s.image, question)
        seconds += time.perf_counter() - t
        acc.append(float(options[int(probs[: len(options)].argmax())] == answer))
        exact.append(float(text.strip().strip(".").lower() == answer.lower()))
        loss.append(float(model.loss(model.make_batch([s.image], [[(question, answer)]]))))
    return {"option_accuracy": mean_ci(acc), "exact_match": mean_ci(exact),
            "valid_loss": mean_ci(loss), "seconds_per_answer": seconds / len(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="instruction dataset folder")
    ap.add_argument("--config", default="configs/lora/default.yaml",
                    help="train_lora config the untuned model is built from")
    ap.add_argument("--runs", nargs="+", required=True,
                    help="'untuned' and/or NAME=ADAPTER_DIR (train_lora's out/adapter)")
    ap.add_argument("--split", default="test", help="split to answer (default test)")
    ap.add_argument("--n", type=int, default=0, help="first N questions (0: all)")
    args = ap.parse_args()
    samples = read_instruct(args.data, split=args.split)
    samples = [s for s in samples if s.meta.get("options")][: args.n or None]
    train = read_instruct(args.data, split="train")
    prior = Counter(s.turns[0][1] for s in train).most_common(1)[0][0]
    print(f"{len(samples)} {args.split} questions; majority answer of train: {prior!r}")
    rows = {"majority": {"option_accuracy": mean_ci(
        [float(s.turns[0][1] == prior) for s in samples])}}
    for run in args.runs:
        name, _, path = run.partition("=")
        rows[name] = evaluate(_model(path or name, args.config), samples)
        print(f"{name}: done", flush=True)
    print("| model | option accuracy | exact match | valid loss | s/answer |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" if k in r else "–"
                 for k in ("option_accuracy", "exact_match", "valid_loss")]
        sec = f"{r['seconds_per_answer']:.2f}" if "seconds_per_answer" in r else "–"
        print(f"| {name} | {' | '.join(cells)} | {sec} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
