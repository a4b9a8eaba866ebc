"""How many classes and episodes each question type supports (``ecgqa data stats``)."""

from __future__ import annotations

import os

from ecgqa.qa.ecgqa import QUESTION_TYPES, load_ecgqa
from ecgqa.qa.episodes import EpisodeSampler, class_key, split_classes
from ecgqa.qa.resolve import make_resolver


def episode_table(qa: str | os.PathLike, *, records: str | os.PathLike | None = None,
                  version: str = "template", n_way: int = 5, k_shot: int = 5,
                  q_query: int = 5, seed: int = 0, by: str = "attribute",
                  test_split: str = "test") -> tuple[list[dict], str]:
    """Per question type: samples per split, meta-train/test classes, episode capacity.

    Meta-training episodes come from the ``train`` split with meta-train classes,
    meta-test episodes from ``test_split`` (``test``, or ``valid`` for data without a test
    split, such as the shared PTB-XL folds 1-9) with meta-test classes. ``capacity`` is
    the number of episodes drawable without reusing a sample.

    Returns:
        (rows, note) where note describes the data and the availability filter.
    """
    data = load_ecgqa(qa, version=version)
    samples = data.samples
    note = f"{data.root} ({version}): {len(samples)} samples"
    if records is not None:
        have = make_resolver(records).available(data.ecg_ids())
        samples = data.select(available=have)
        note += f", {len(samples)} with all ECGs available in {records}"
    cs = split_classes(samples, seed=seed, by=by)
    note += (f"; {n_way}-way {k_shot}-shot {q_query}-query; held out by {by} "
             f"(seed {seed}): {len(cs.test_units)} units; meta-test episodes from {test_split}")
    rows = []
    for qt in QUESTION_TYPES:
        mine = [s for s in samples if s.question_type == qt]
        if not mine:
            continue
        keys = {class_key(s) for s in mine}
        row = {"question_type": qt,
               **{f"samples_{sp}": sum(s.split == sp for s in mine)
                  for sp in ("train", "valid", "test")},
               "classes_meta_train": len(keys & cs.meta_train),
               "classes_meta_test": len(keys & cs.meta_test)}
        for part, split, classes in (("meta_train", "train", cs.meta_train),
                                     ("meta_test", test_split, cs.meta_test)):
            try:
                sampler = EpisodeSampler(mine, n_way, k_shot, q_query, qt, split,
                                         classes=classes, seed=seed)
                row[f"eligible_{part}"] = len(sampler.eligible)
                row[f"episodes_{part}"] = sampler.capacity()
            except ValueError:
                row[f"eligible_{part}"] = 0
                row[f"episodes_{part}"] = 0
        rows.append(row)
    return rows, note


def format_table(rows: list[dict], note: str) -> str:
    """A Markdown table of :func:`episode_table`'s rows."""
    head = ("| question type | train | valid | test | classes meta-train | classes meta-test "
            "| eligible meta-train | episodes meta-train | eligible meta-test "
            "| episodes meta-test |")
    lines = [note, "", head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['question_type']} | {r['samples_train']} | {r['samples_valid']} | "
            f"{r['samples_test']} | {r['classes_meta_train']} | {r['classes_meta_test']} | "
            f"{r['eligible_meta_train']} | {r['episodes_meta_train']} | "
            f"{r['eligible_meta_test']} | {r['episodes_meta_test']} |")
    return "\n".join(lines)
