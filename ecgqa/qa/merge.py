"""Merge ECG-QA-schema folders into one: real and synthetic questions in one dataset.

Meta-training, ``ecgqa bench`` and ``ecgqa data stats`` read one QA folder; to train on
PTB-XL's label questions and the synthetic set together, ``ecgqa data merge`` writes a
folder that holds both (:func:`merge_qa`):

- every source is loaded and checked first (:func:`ecgqa.qa.ecgqa.load_ecgqa`), so a bad
  source writes nothing;
- ECG ids of the second and later sources are shifted past the ids before them (to the
  next power of ten, so they stay readable: after PTB-XL's 21837 comes 100000), in the
  questions, the split lists and the records index; sample ids are renumbered per split,
  as every writer does;
- a template id may come from several sources only as the same kind of question (question
  type and attribute type; else the merged classes would mix two questions); its answer
  options are united;
- the records index holds absolute paths, so the merged folder can live anywhere;
- ``sources.json`` lists each source folder with its ECG-id offset.

The class split of meta-training (held-out attributes) is drawn over the merged classes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgqa.errors import EcgqaError
from ecgqa.outputs import atomic_folder
from ecgqa.qa.ecgqa import SPLITS, load_ecgqa, read_json_list
from ecgqa.qa.resolve import RecordsIndex, write_index
from ecgqa.qa.writer import write_shards, write_split_ecgs, write_vocab


class MergeError(EcgqaError):
    """Sources that cannot be merged; the message names the source and the problem."""


@dataclass(frozen=True)
class MergeSummary:
    out: Path
    offsets: list[tuple[str, int]]      # (source folder, its ECG-id offset), in order
    questions: dict[str, int]           # split -> samples
    records: int


def id_offset(max_id: int) -> int:
    """The smallest power of ten above ``max_id`` (ids of the next source start there):
    9 -> 10, 300 -> 1000, 21837 -> 100000."""
    return 10 ** len(str(max(int(max_id), 0)))


def merge_qa(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> MergeSummary:
    """Write the questions, split lists and records of ``sources`` into ``out``.

    Args:
        sources: two or more QA folders (each with ``answers.csv`` and
            ``records_index.csv``, e.g. from ``ecgqa data synth`` and ``ecgqa data labels``).
        out: a folder that does not exist or is empty; written atomically.

    The ``template`` questions are merged (what synthesis and label tables write; a real
    ECG-QA release's ``paraphrased`` version is left out).

    Raises:
        MergeError: fewer than two sources, a source without a records index, one template
            id of two kinds of question, or ``out`` not empty; EcgQaError for a malformed source.
    """
    if len(sources) < 2:
        raise MergeError("give two or more QA folders to merge")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"{out}: exists and is not an empty folder")
    loaded = []
    for src in sources:
        data = load_ecgqa(src)                                  # checks every shard
        index = data.root / "records_index.csv"
        if not index.is_file():
            raise MergeError(f"{data.root}: no records_index.csv (the ecg_id,path list of "
                             "its records)")
        loaded.append((data, RecordsIndex(index)))
    _check_templates(loaded)

    offset, offsets = 0, []
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    split_ecgs: dict[str, list[int]] = {s: [] for s in SPLITS}
    records: dict[int, Path] = {}
    answers: list[str] = []
    options: dict[int, set[str]] = {}
    for data, index in loaded:
        offsets.append((str(data.root.resolve()), offset))
        for split in SPLITS:
            for shard in sorted((data.root / "template" / split).glob("*.json")):
                for entry in read_json_list(shard):
                    entry = dict(entry, ecg_id=[e + offset for e in entry["ecg_id"]])
                    rows[split].append(entry)
            split_ecgs[split] += [e + offset for e in sorted(data.split_ecgs.get(split, ()))]
        for ecg_id in index.ids():
            records[ecg_id + offset] = index.raw_path(ecg_id)
        answers += data.vocab.answers
        for tid, opts in data.vocab.by_template.items():
            options.setdefault(tid, set()).update(opts)
        top = max([*records, *(e for ids in split_ecgs.values() for e in ids), 0])
        offset = id_offset(top)

    with atomic_folder(out) as tmp:
        write_vocab(tmp, answers, options)
        write_split_ecgs(tmp, {s: ids for s, ids in split_ecgs.items() if ids})
        counts = write_shards(tmp, {s: r for s, r in rows.items() if r})
        write_index(tmp / "records_index.csv", records)     # none is under tmp: absolute
        (tmp / "sources.json").write_text(json.dumps(
            [{"source": src, "ecg_id_offset": off} for src, off in offsets], indent=1))
        (tmp / "README.md").write_text(_readme(offsets, counts, len(records)))
    return MergeSummary(out, offsets, counts, len(records))


def _check_templates(loaded) -> None:
    """One kind of question (question type, attribute type) per template id across sources."""
    kinds: dict[int, tuple[str, tuple[str, str]]] = {}
    for data, _ in loaded:
        for s in data.samples:
            kind = (s.question_type, s.attribute_type)
            root, first = kinds.setdefault(s.template_id, (str(data.root), kind))
            if root != str(data.root) and first != kind:
                raise MergeError(f"template {s.template_id} is a {' '.join(first)} question in "
                                 f"{root} but a {' '.join(kind)} question in {data.root}; "
                                 "merged classes would mix two questions")


def _readme(offsets: list[tuple[str, int]], counts: dict[str, int], n_records: int) -> str:
    lines = ["# Merged ECG-QA-schema questions (`ecgqa data merge`)", "",
             "| source | ECG-id offset |", "|---|---|"]
    lines += [f"| {src} | {off} |" for src, off in offsets]
    lines += ["", f"Questions: {', '.join(f'{s} {n}' for s, n in counts.items())}; "
              f"{n_records} records (records_index.csv, absolute paths).", ""]
    return "\n".join(lines)


__all__ = ["MergeError", "MergeSummary", "id_offset", "merge_qa"]
