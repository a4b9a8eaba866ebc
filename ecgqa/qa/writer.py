"""Write questions in ECG-QA's published layout (what :func:`ecgqa.qa.ecgqa.load_ecgqa` reads).

Shared by the synthetic generator (``ecgqa data synth``) and the label-table builder
(``ecgqa data labels``)::

    answers.csv                       index,class
    answers_for_each_template.csv     template_id,classes
    {train,valid,test}_ecgs.tsv       k<TAB>ecg_id per line
    template/{train,valid,test}/NNNNN.json
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

SHARD_SIZE = 10_000


def write_split_ecgs(folder: Path, ecgs: Mapping[str, Sequence[int]]) -> None:
    """``{split}_ecgs.tsv`` for every split of ``ecgs`` (split -> ecg_ids in order)."""
    for split, ids in ecgs.items():
        (folder / f"{split}_ecgs.tsv").write_text("".join(f"{k}\t{e}\n" for k, e in enumerate(ids)))


def write_shards(folder: Path, samples: Mapping[str, list[dict]]) -> dict[str, int]:
    """``template/<split>/NNNNN.json`` shards; numbers ``sample_id`` per split from 0.

    Returns:
        split -> number of samples written.
    """
    counts = {}
    for split, rows in samples.items():
        for k, s in enumerate(rows):
            s["sample_id"] = k
        out = folder / "template" / split
        out.mkdir(parents=True, exist_ok=True)
        for start in range(0, max(len(rows), 1), SHARD_SIZE):
            chunk = rows[start:start + SHARD_SIZE]
            (out / f"{start:05d}.json").write_text(json.dumps(chunk, indent=1))
        counts[split] = len(rows)
    return counts


def write_vocab(folder: Path, answers: Iterable[str],
                options: Mapping[int, Iterable[str]]) -> None:
    """``answers.csv`` (``answers`` in order, duplicates dropped) and the options per template."""
    with open(folder / "answers.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "class"])
        for i, a in enumerate(dict.fromkeys(answers)):
            w.writerow([i, a])
    with open(folder / "answers_for_each_template.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["template_id", "classes"])
        for tid in sorted(options):
            w.writerow([tid, repr(sorted(options[tid]))])
