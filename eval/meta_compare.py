"""Benchmark: does meta-training help? Few-shot accuracy on held-out classes, with baselines.

    .venv/bin/python eval/meta_compare.py --runs fomaml=out/meta-default \\
        supervised=out/meta-supervised --episodes 200 --out docs/meta-results

Every method is tested on the same meta-test episodes (held-out classes, ``test`` split,
fixed episode seed): each adapter is adapted on the support set with its own inner loop
(the supervised baseline: plain SGD at its inner rate, the same number of steps), then

- option accuracy: the highest-probability answer among those the support set shows,
  scored after the whole prompt (question and ECG) has been read;
- exact match: the greedy generated answer, parsed into answer terms, equals the truth.

Baselines on the same episodes (option accuracy only; they cannot generate text):

- prototypical network on the same frozen encoder features: one prototype per answer
  among the support samples of the query's template (mean-pooled encoder tokens, the two
  ECGs concatenated for comparison questions), the nearest one answers;
- support majority: the most frequent support answer to the query's question (template
  and attribute), which never looks at an ECG. Episodes are N-way over (template,
  attribute, answer) classes, so the support set often shows one answer per question;
  this baseline measures how much of a score that structure alone gives.

95% confidence intervals are over episodes; the paired difference of each method from the
first is over the same episodes. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path

from ecgqa.bench import methods
from ecgqa.bench.methods import Context
from ecgqa.config import from_dict
from ecgqa.intervals import mean_ci
from ecgqa.meta.adapter import load_adapter
from ecgqa.meta.data import DataConfig, load_meta_data
from ecgqa.meta.loop import evaluate_episode
from ecgqa.meta.trainer import episode_record


def _run_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def _jobs(phase, episodes: int) -> list[tuple[str, int]]:
    per = math.ceil(episodes / len(phase.types))
    return [(qt, i) for qt in phase.types for i in range(per)]


def evaluate_adapter(run: Path, data, jobs, generate: bool) -> list[dict]:
    from tqdm.auto import tqdm

    model, algo, meta = load_adapter(run / "adapter")
    signals = model.signal_cache(data.resolver)
    out = []
    for qt, i in tqdm(jobs, desc=run.name, unit="episode"):
        ep = data.test.per_type(qt, i)
        t = time.perf_counter()
        res = evaluate_episode(model, algo, ep, signals, meta.eval_steps, meta.prefix_cache,
                               generate=generate, vocab=data.data.vocab,
                               inner_vocab=meta.inner_vocab)
        out.append(episode_record(ep, res, time.perf_counter() - t))
    del model, algo
    return out


def _evaluate_baseline(data, jobs, method, model=None) -> list[dict]:
    """Option accuracy of a feature baseline of ``ecgqa.bench.methods`` on every episode,
    choosing among the support set's answers (as option scoring above does)."""
    ctx = Context(model, None, model.signal_cache(data.resolver) if model else None, 0, False,
                  False, data.data.vocab, 0, options="support")
    out = []
    for qt, i in jobs:
        ep = data.test.per_type(qt, i)
        t = time.perf_counter()
        queries, _ = method(ctx, ep)
        out.append({"question_type": qt, "index": ep.index,
                    "option_accuracy": sum(q["correct"] for q in queries) / len(queries),
                    "exact_match": None, "seconds": time.perf_counter() - t,
                    "queries": len(queries)})
    return out


def evaluate_protonet(run: Path, data, jobs) -> list[dict]:
    """Nearest answer prototype on frozen, mean-pooled encoder features, among the support
    samples of the query's template (answers pooled over attributes, so the class layout of
    the episode cannot give the answer away); the candidates of the LLM's option scoring."""
    from ecgqa.models.fusion import EcgQaModel

    return _evaluate_baseline(data, jobs, methods.protonet,
                              EcgQaModel.from_pretrained(run / "adapter"))


def evaluate_majority(data, jobs) -> list[dict]:
    """The most frequent answer among the support samples asking the query's question
    (template and attribute; else template; else the episode); it never sees an ECG."""
    return _evaluate_baseline(data, jobs, methods.majority)


def table(results: dict[str, list[dict]]) -> str:
    names = list(results)
    types = sorted({r["question_type"] for r in results[names[0]]})
    lines = ["| method | question type | episodes | option accuracy | exact match | "
             f"option acc. − {names[0]} (paired) | exact match − {names[0]} (paired) "
             "| s/episode |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        for qt in [*types, "all"]:
            rs = [r for r in results[name] if qt == "all" or r["question_type"] == qt]
            base = [r for r in results[names[0]] if qt == "all" or r["question_type"] == qt]
            acc = mean_ci([r["option_accuracy"] for r in rs])
            em = [r["exact_match"] for r in rs if r["exact_match"] is not None]
            diff = mean_ci([a["option_accuracy"] - b["option_accuracy"]
                            for a, b in zip(rs, base)]) if name != names[0] else None
            em_pairs = [(a["exact_match"], b["exact_match"]) for a, b in zip(rs, base)
                        if a["exact_match"] is not None and b["exact_match"] is not None]
            em_diff = mean_ci([a - b for a, b in em_pairs]) \
                if name != names[0] and em_pairs else None
            lines.append(
                f"| {name} | {qt} | {len(rs)} | {_fmt(acc)} | {_fmt(mean_ci(em)) if em else '-'} "
                f"| {_fmt(diff, signed=True) if diff else '-'} "
                f"| {_fmt(em_diff, signed=True) if em_diff else '-'} | "
                f"{sum(r['seconds'] for r in rs) / len(rs):.2f} |")
    return "\n".join(lines)


def _fmt(mc, signed: bool = False) -> str:
    mean, ci = mc
    return f"{mean:+.3f} ± {ci:.3f}" if signed else f"{mean:.3f} ± {ci:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", help="NAME=RUN_DIR of train-meta runs "
                    "(each with config.yaml and adapter/); the first is the reference")
    ap.add_argument("--table-from", default=None, help="print the table of an OUT.json written "
                    "earlier, without evaluating")
    ap.add_argument("--episodes", type=int, default=200, help="meta-test episodes (split evenly "
                    "over the question types with meta-test classes)")
    ap.add_argument("--no-generate", action="store_true", help="skip exact match (faster)")
    ap.add_argument("--no-protonet", action="store_true", help="skip the prototypical network")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())["results"]))
        return 0
    if not args.runs:
        ap.error("give --runs NAME=RUN_DIR ... (or --table-from OUT.json)")
    runs = dict(item.split("=", 1) for item in args.runs)
    configs = {n: _run_config(Path(r)) for n, r in runs.items()}
    first = next(iter(configs.values()))
    for n, c in configs.items():
        if c["data"] != first["data"]:
            raise SystemExit(f"meta_compare: {n} was trained on other data or another class "
                             "split; compare runs with the same data section")
    data_cfg = from_dict(DataConfig, first["data"], "data.")
    data = load_meta_data(data_cfg, seed=0)
    jobs = _jobs(data.test, args.episodes)
    print(f"{len(jobs)} meta-test episodes over {', '.join(data.test.types)}; "
          f"{data_cfg.n_way}-way {data_cfg.k_shot}-shot, {data_cfg.test_q_query} query per class")
    results = {}
    for name, run in runs.items():
        results[name] = evaluate_adapter(Path(run), data, jobs, not args.no_generate)
        print(f"{name}: done; peak RSS {_rss_gb():.2f} GB", flush=True)
    if not args.no_protonet:
        results["protonet"] = evaluate_protonet(Path(next(iter(runs.values()))), data, jobs)
    results["support majority (no ECG)"] = evaluate_majority(data, jobs)
    text = table(results)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(
            {"runs": runs, "data": dataclasses.asdict(data_cfg), "episodes": len(jobs),
             "results": results}, indent=1))
        out.with_suffix(".md").write_text(text + "\n")
    return 0


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


if __name__ == "__main__":
    sys.exit(main())
