"""Benchmark: speed and memory of the ECG-language model on the embedded Gemma 3 270M.

    .venv/bin/python eval/speed.py [--layouts question_first ecg_first] [--support 25]

One row per measure, with peak RSS:

- cold start: a fresh Python process imports ecgqa and builds the model from the cached
  safetensors copy (the first run converts the GGUF once; that time is printed too);
- score 5 options for one ECG (encoder + projector + LLM, prompt KV cache shared by options);
- generate an answer (greedy, up to 8 tokens);
- forward + backward of the answer loss over a support set of 25 questions (gradients
  reach the projector only), per prompt layout; and the same with the KV cache of the
  prompt up to the first ECG computed once and reused, as an inner loop does from its
  second step on (question_first: that prefix holds the whole question).

- one meta-training episode (5-way 5-shot, 1 query per class, 5 inner steps on the 25
  support questions with the prefix cache, then the query loss and the outer backward)
  for first-order MAML and for second-order MAML, with the peak RSS after each; per
  algorithm one row per inner-loop loss vocabulary (``meta.inner_vocab``) and, with
  ``--measurements off on``, without and with the measured values in the prompt, timed in
  turns in the same run (``--repeat`` rounds, the median).

Targets (2 cores): cold start <= 10 s, <= 1 s per answer, support fwd+bwd <= 2 s,
<= 3 s per FOMAML episode, <= 2.5 GB peak RSS for FOMAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ecgqa.config import load_config
from ecgqa.models.fusion import LOSS_VOCABS, EcgQaModel, ModelConfig
from ecgqa.models.llm import embedded_cache_dir
from ecgqa.qa.ecgqa import QaSample
from ecgqa.synth.ecg import sample_facts, synthesize

QUESTIONS = [
    ("Does this ECG show atrial fibrillation?", ("no",)),
    ("What kind of noises does this ECG show in lead V2?", ("none",)),
    ("Which rhythm does this ECG show, sinus rhythm or sinus bradycardia?", ("sinus rhythm",)),
    ("What is the heart axis of this ECG?", ("normal heart axis",)),
    ("Is the qrs duration of this ECG within the normal range?", ("yes",)),
]


class _Signals:
    def get(self, ecg_id):
        rng = np.random.default_rng(ecg_id)
        return synthesize(sample_facts(rng), rng), np.ones(12, dtype=bool)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(n: int) -> list[QaSample]:
    out = []
    for i in range(n):
        q, a = QUESTIONS[i % len(QUESTIONS)]
        out.append(QaSample(sample_id=i, template_id=0, question_id=0,
                            question_type="single-verify", attribute_type="scp_code",
                            question=q, answer=a, ecg_ids=(i + 1,), attribute=None,
                            split="train"))
    return out


def _row(name: str, seconds: float, target: str = "") -> None:
    print(f"| {name} | {seconds:.2f} s | {target} | {_rss_mb():.0f} MB |", flush=True)


def _timed(fn, repeat: int = 3) -> float:
    fn()                                             # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def cold_start(config: str) -> float:
    code = ("from ecgqa.config import load_config; from ecgqa.models.fusion import EcgQaModel, "
            f"ModelConfig; EcgQaModel.build(load_config(ModelConfig, {config!r}))")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", nargs="+", default=["question_first", "ecg_first"],
                    help="prompt layouts to time")
    ap.add_argument("--support", type=int, default=25, help="support-set size (default 25)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs"
                                             / "model" / "default.yaml"),
                    help="model config (default configs/model/default.yaml)")
    ap.add_argument("--dtype", default=None, help="override llm.dtype (float32, bfloat16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--meta", nargs="*", default=["fomaml", "maml"],
                    help="meta-learning algorithms to time per episode (none: skip)")
    ap.add_argument("--meta-only", action="store_true", help="time meta-training episodes only")
    ap.add_argument("--inner-lr", type=float, default=0.01, help="inner-loop rate (default 0.01)")
    ap.add_argument("--inner-vocab", nargs="+", default=list(LOSS_VOCABS),
                    choices=LOSS_VOCABS,
                    help="inner-loop loss vocabularies to time (meta.inner_vocab; default all)")
    ap.add_argument("--measurements", nargs="+", default=["off"], choices=("off", "on"),
                    help="meta-training rows without and/or with the measured values in the "
                         "prompt (model.measurements; default off)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed meta-training episodes per row, taken in turns with the other "
                         "rows after one warm-up each; the median is printed (default 5)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cfg = load_config(ModelConfig, args.config)
    if args.dtype:
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, dtype=args.dtype))
    print(f"config {args.config}: llm {cfg.llm.source} {cfg.llm.dtype}, projector "
          f"{cfg.projector}, {cfg.n_ecg_tokens} ECG tokens")
    print("| measure | time | target | peak RSS |\n|---|---|---|---|")
    if args.meta_only:
        _bench_meta(cfg, args)
        return 0
    if cfg.llm.source == "embedded" and not (embedded_cache_dir(cfg.llm) / "config.json").is_file():
        t = time.perf_counter()
        EcgQaModel.build(cfg)
        _row("first run: GGUF -> safetensors conversion + load", time.perf_counter() - t)
    _row("cold start (new process: import + build model)", cold_start(args.config), "<= 10 s")
    for layout in args.layouts:
        _bench_layout(dataclasses.replace(cfg, layout=layout), args)
    _bench_meta(cfg, args)
    return 0


def _episode(n_way: int = 5, k_shot: int = 5, q_query: int = 1):
    """A 5-way 5-shot episode of ECG-QA-style questions on distinct synthetic ECGs."""
    from ecgqa.qa.episodes import Episode

    support, query = [], []
    for c in range(n_way):
        q, a = QUESTIONS[c]
        for k in range(k_shot + q_query):
            s = QaSample(sample_id=len(support) + len(query), template_id=c, question_id=0,
                         question_type="single-verify", attribute_type="scp_code", question=q,
                         answer=a, ecg_ids=(100 + c * 20 + k,), attribute=None, split="train")
            (support if k < k_shot else query).append(s)
    return Episode(tuple(support), tuple(query), (), 0)


def _bench_meta(cfg: ModelConfig, args) -> None:
    """Per algorithm, its inner vocabularies timed in turns: a warm-up of each, then
    ``args.repeat`` rounds of one episode per vocabulary, so a slow spell of the machine
    falls on all of them alike; the median per row. Algorithms run one after the other, so
    the peak RSS printed after each is its own (first-order MAML first)."""
    from ecgqa.meta.algorithms import build_algorithm
    from ecgqa.meta.loop import MetaConfig, task_loss

    torch.manual_seed(0)
    model = EcgQaModel.build(cfg)
    signals = _Signals()
    episode = _episode()
    model.make_batch(list(episode.support) + list(episode.query), signals)   # features cached
    for name in args.meta:
        algo = build_algorithm(name, model.projector, args.inner_lr)
        steps = {}
        for vocab in args.inner_vocab:
            for measured in args.measurements:
                meta = MetaConfig(algorithm=name, inner_lr=args.inner_lr, inner_steps=5,
                                  inner_vocab=vocab)
                cfg_now = dataclasses.replace(model.cfg, measurements=measured == "on")

                def step(algo=algo, meta=meta, cfg_now=cfg_now):
                    model.cfg = cfg_now          # the prompt with or without measured values
                    model.zero_grad()
                    loss, _ = task_loss(model, algo, episode, signals, meta)
                    loss.backward()

                steps[vocab, measured] = step
        for step in steps.values():
            step()                                                        # warm-up
        times = {key: [] for key in steps}
        for _ in range(args.repeat):
            for key, step in steps.items():
                t = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t)
        for (vocab, measured), ts in times.items():
            with_values = ", measured values in the prompt" if measured == "on" else ""
            _row(f"meta-training episode, {name}, inner loss over {vocab} vocabulary"
                 f"{with_values} (5-way 5-shot, 5 inner steps)", float(np.median(ts)),
                 "<= 3 s" if name == "fomaml" else "")


def _bench_layout(cfg: ModelConfig, args) -> None:
    layout = cfg.layout
    torch.manual_seed(0)
    model = EcgQaModel.build(cfg)
    signals = _Signals()
    one = _samples(1)
    options = [[("yes",), ("no",), ("not sure",), ("none",), ("sinus rhythm",)]]

    def score():
        model._feature_cache.clear()             # time the encoder too
        model.score_options(model.make_batch(one, signals, with_answers=False), options)

    _row(f"{layout}: score 5 options for one ECG", _timed(score), "<= 1 s")

    def gen():
        model.generate(model.make_batch(one, signals, with_answers=False), max_new_tokens=8)

    _row(f"{layout}: generate (<= 8 tokens)", _timed(gen))
    support = model.make_batch(_samples(args.support), signals)

    def fwd_bwd():
        model.zero_grad()
        model.loss(support).backward()

    _row(f"{layout}: fwd+bwd, {args.support}-sample support set", _timed(fwd_bwd), "<= 2 s")
    _row(f"{layout}: prompt prefix KV cache, computed once per support set",
         _timed(lambda: model.prefix_cache(support)))
    prefix = model.prefix_cache(support)

    def fwd_bwd_cached():
        model.zero_grad()
        model.loss(support, prefix=prefix).backward()

    _row(f"{layout}: fwd+bwd, prompt prefix KV cache reused", _timed(fwd_bwd_cached), "<= 2 s")


if __name__ == "__main__":
    sys.exit(main())
