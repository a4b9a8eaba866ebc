"""``results.json`` -> ``results.md`` (tables) and PNG plots."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

HEADLINE = ("exact_match", "option_accuracy", "macro_f1", "ece")
TEXT = ("bleu", "rouge_l", "meteor", "token_accuracy_side_metric")


def write_report(results: dict, out: str | os.PathLike) -> list[Path]:
    """Write results.json, results.md and the plots into ``out``; returns the paths."""
    out = Path(out)
    paths = [_atomic(out / "results.json", json.dumps(results, indent=1))]
    paths.append(_atomic(out / "results.md", markdown(results)))
    paths += plots(results, out)
    return paths


def _atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _fmt(m: dict | None) -> str:
    if not m or m.get("mean") is None or math.isnan(m["mean"]):
        return "–"
    ci = m.get("ci95")
    return f"{m['mean']:.3f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.3f}")


def markdown(results: dict) -> str:
    """Tables a person reads: one per cell, methods as rows, metrics with 95% CIs."""
    s = results["suite"]
    lines = [f"# Benchmark `{s['name']}`", "",
             f"Modality {results.get('modality', 'signal')}; adapter `{s['adapter']}`; data "
             f"`{s['qa']}`; {s['episodes']} episodes per cell, "
             f"{s['q_query']} query per class; episode seed {s['seed']}; classes: {s['classes']} "
             f"(by {s['class_by']}). Means with 95% confidence intervals over episodes "
             "(macro-F1 and ECE: bootstrap over episodes).", "",
             "Exact match compares the generated answer; option accuracy takes the most likely "
             + ("of every answer class of the question's template"
                if s.get("options", "template") == "template" else "of the support set's answers")
             + ", scored after the question and ECG were read. "
             "Teacher-forced token accuracy is a side metric only. METEOR "
             + ("uses WordNet synonyms." if results.get("meteor_wordnet_synonyms")
                else "uses exact and stem matches (WordNet not installed)."), ""]
    if results.get("modality", "signal") == "image":
        lines += _image_notes(results)
    v = results["versions"]
    lines += [f"Versions: ecgqa {v['ecgqa']}, torch {v['torch']}, transformers "
              f"{v['transformers']}, Python {v['python']}. Peak RSS {results['peak_rss_gb']:.2f} "
              "GB.", ""]
    for cell in results["cells"]:
        lines += [f"## {cell['question_type']}, {cell['n_way']}-way {cell['k_shot']}-shot, "
                  f"leads {cell['leads']}", ""]
        if cell["skipped"]:
            lines += [f"Skipped: {cell['skipped']}", ""]
            continue
        head = ["method", *HEADLINE, *TEXT, "s/episode", "answers/s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in cell["methods"].items():
            row = [name, *(_fmt(m.get(k)) for k in (*HEADLINE, *TEXT)),
                   f"{m['seconds_per_episode']:.2f}", f"{m['answers_per_second']:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        fit = cell.get("combined_fit")
        if fit and "llm" in fit:
            lines += [f"combined: w_llm {fit['llm']:.3f}, w_proto {fit['proto']:.3f} (prototype "
                      f"scores / {fit['scale']:.4g}), fitted on {fit['queries']} queries of "
                      f"{fit['episodes']} calibration episodes of other classes (NLL "
                      f"{fit['nll']:.3f}).", ""]
        elif fit:
            lines += [f"combined: not run ({fit['skipped']}).", ""]
    return "\n".join(lines) + "\n"


def _image_notes(results: dict) -> list[str]:
    """What an image-modality result is and is not: rendering, no support adaptation, the
    training-data check."""
    a = results["image_adapter"]
    h, w = a["render"]["size"]
    check = a["training_data_check"]
    if check["status"] == "checked":
        leak = (f"Checked: none of the {check['train_records']} records of the adapter's "
                f"training split (`{check['train_data']}`) is among the "
                f"{check['query_records']} records of the query pool.")
        n, k = check.get("query_classes", 0), check.get("query_classes_trained", 0)
        if k:
            leak += (f" **{k} of the {n} question classes asked here (template, attribute, "
                     "answer) are among its training questions**: on those it was taught "
                     "what a few-shot learner must take from the support set, so `lora` is "
                     "not a few-shot result there.")
        elif n:
            leak += f" None of the {n} question classes asked here is among its training ones."
    else:
        leak = f"**Not checked** whether the adapter trained on query records: {check['reason']}."
    per = [c.get("prepare_seconds_per_episode") for c in results["cells"] if not c["skipped"]]
    render = (f" Rendering took {sum(per) / len(per):.2f} s per episode on average, outside "
              "the methods' times." if per else "")
    return ["Image modality: each query ECG is drawn as a "
            f"{h}x{w} image in the plain printout look (no random variation), with the leads "
            "outside the cell's subset blanked out as not recorded; the episodes, pools and "
            "candidate answers are those of the signal modality with the same suite."
            + render, "",
            "The LoRA adapter is **not adapted on the support set**: `lora` (the tuned model) "
            "and `lora_disabled` (its LoRA layers switched off: the base LLM reading the same "
            "image tokens) answer each query from its image and question alone; only "
            "`majority` reads the support set. ECG sensitivity: `lora_blank` asks the same "
            "questions of a blank page, `lora_other` of another patient's ECG (a support "
            "record of the episode); a model that reads the image loses accuracy there. "
            + leak, ""]


def summary_lines(results: dict) -> list[str]:
    """A short printed summary: exact match and option accuracy of every method and cell."""
    lines = []
    for cell in results["cells"]:
        title = (f"{cell['question_type']} {cell['n_way']}-way {cell['k_shot']}-shot "
                 f"{cell['leads']}")
        if cell["skipped"]:
            lines.append(f"{title}: skipped ({cell['skipped']})")
            continue
        lines.append(f"{title}:")
        for name, m in cell["methods"].items():
            lines.append(f"  {name:15s} exact match {_fmt(m.get('exact_match')):>15s}  "
                         f"option acc. {_fmt(m.get('option_accuracy')):>15s}  "
                         f"{m['seconds_per_episode']:.2f} s/episode  "
                         f"{m['answers_per_second']:.1f} answers/s")
    lines.append(f"peak RSS {results['peak_rss_gb']:.2f} GB")
    return lines


def plots(results: dict, out: Path) -> list[Path]:
    """accuracy_vs_k.png, lead_ablation.png, reliability.png (those the grid allows)."""
    import matplotlib

    matplotlib.use("Agg")
    cells = [c for c in results["cells"] if not c["skipped"]]
    if not cells:
        return []
    paths = [_accuracy_vs_k(cells, out / "accuracy_vs_k.png"),
             _lead_ablation(cells, out / "lead_ablation.png"),
             _reliability(cells, out / "reliability.png")]
    return [p for p in paths if p is not None]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _metric(c: dict, method: str, key: str = "option_accuracy") -> tuple[float, float]:
    m = c["methods"][method].get(key) or {}
    mean, ci = m.get("mean", math.nan), m.get("ci95", math.nan)
    return mean, 0.0 if ci is None or math.isnan(ci) else ci


def _accuracy_vs_k(cells: list[dict], path: Path) -> Path:
    """Option accuracy against K per question type (first N-way and lead subset)."""
    import matplotlib.pyplot as plt

    types = sorted({c["question_type"] for c in cells})
    n0, l0 = cells[0]["n_way"], cells[0]["leads"]
    fig, axes = plt.subplots(1, len(types), figsize=(4.5 * len(types), 3.6), squeeze=False)
    for ax, qt in zip(axes[0], types):
        mine = sorted((c for c in cells if c["question_type"] == qt and c["n_way"] == n0
                       and c["leads"] == l0), key=lambda c: c["k_shot"])
        for method in mine[0]["methods"] if mine else []:
            ks = [c["k_shot"] for c in mine]
            vals = [_metric(c, method) for c in mine]
            ax.errorbar(ks, [v[0] for v in vals], yerr=[v[1] for v in vals], marker="o",
                        capsize=3, label=method)
        ax.set(title=f"{qt} ({n0}-way, {l0})", xlabel="K-shot", ylabel="option accuracy",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _lead_ablation(cells: list[dict], path: Path) -> Path | None:
    """Option accuracy per lead subset (largest K, first N-way), grouped by method."""
    import matplotlib.pyplot as plt
    import numpy as np

    leads = list(dict.fromkeys(c["leads"] for c in cells))
    if len(leads) < 2:
        return None
    n0 = cells[0]["n_way"]
    shared = [k for k in sorted({c["k_shot"] for c in cells})
              if all(any(c["leads"] == lead and c["k_shot"] == k for c in cells)
                     for lead in leads)]
    if not shared:
        return None
    kmax = shared[-1]                      # the largest K every lead subset was run at
    chosen = [c for c in cells if c["k_shot"] == kmax and c["n_way"] == n0]
    methods = list(chosen[0]["methods"])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(leads) * len(methods) / 3, 3.6))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        vals, errs = [], []
        for lead in leads:
            cs = [c for c in chosen if c["leads"] == lead]
            vals.append(np.mean([_metric(c, method)[0] for c in cs]) if cs else math.nan)
            errs.append(np.mean([_metric(c, method)[1] for c in cs]) if cs else 0.0)
        ax.bar(np.arange(len(leads)) + j * width, vals, width, yerr=errs, capsize=2,
               label=method)
    ax.set_xticks(np.arange(len(leads)) + 0.4 - width / 2, leads)
    ax.set(ylabel="option accuracy", ylim=(0, 1.02),
           title=f"lead subsets ({n0}-way {kmax}-shot, mean over question types)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _reliability(cells: list[dict], path: Path) -> Path | None:
    """Accuracy against confidence of the option probabilities, pooled over cells."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    drawn = False
    for method in cells[0]["methods"]:
        bins: dict[float, list[float]] = {}
        for c in cells:
            for b in c["methods"][method].get("reliability") or []:
                if b["count"]:
                    acc = bins.setdefault(b["low"], [0.0, 0.0, 0])
                    acc[0] += b["confidence"] * b["count"]
                    acc[1] += b["accuracy"] * b["count"]
                    acc[2] += b["count"]
        if bins:
            pts = sorted((v[0] / v[2], v[1] / v[2]) for v in bins.values())
            ax.plot(*zip(*pts), marker="o", label=method)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="confidence (top option probability)", ylabel="accuracy", xlim=(0, 1),
           ylim=(0, 1), title="reliability")
    ax.legend(fontsize=7)
    return _save(fig, path)
