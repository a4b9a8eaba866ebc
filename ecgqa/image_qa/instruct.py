"""Instruction data in the LLaVA conversation format (ECGInstruct style): read and build.

One entry per question::

    {"id": "ecgqa-train-17", "image": "images/00017.png",
     "conversations": [{"from": "human", "value": "<image>\\nDoes this ECG show ...?"},
                       {"from": "gpt", "value": "yes"}],
     "split": "train", "question_type": "single-verify", "answer": ["yes"], ...}

LLaVA readers ignore the extra top-level keys; :func:`read_instruct` keeps them as
``InstructSample.meta``. Image paths are relative to the dataset root and never leave it
(absolute paths, ``..`` and symlinks pointing outside are refused).

:func:`build_instruct` (``ecgqa data instruct``) makes such data from labelled records:
ECG-QA-schema questions (real ECG-QA with a records index, or ``ecgqa data synth``
output) or PhysioNet Challenge ``# Dx:`` SNOMED-CT codes, each record rendered once by
:func:`ecgqa.image_qa.render.render_image`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgqa.errors import EcgqaError
from ecgqa.image_qa import dx as dx_questions
from ecgqa.image_qa.render import DEFAULT_SIZE, Variation
from ecgqa.outputs import atomic_folder
from ecgqa.qa.ecgqa import read_json_list

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
SPLITS = ("train", "valid", "test")


class InstructError(EcgqaError):
    """Instruction data could not be read or built; the message names the file and entry."""


@dataclass(frozen=True)
class InstructSample:
    """One instruction entry: an image and a conversation about it.

    Attributes:
        id: the entry's ``id``.
        image: absolute, resolved path of the image (inside the dataset root).
        turns: ``(human text, gpt text)`` pairs in order; the ``<image>`` token is removed.
        image_first: the image comes before the first human text (``<image>\\n...``, or no
            token at all, where LLaVA puts the image first); False for ``...\\n<image>``.
        meta: the entry's other top-level keys (``split``, ``question_type``, ``answer``
            list, ``options`` ...).
    """

    id: str
    image: Path
    turns: tuple[tuple[str, str], ...]
    image_first: bool = True
    meta: dict = field(default_factory=dict, compare=False, hash=False)


# --------------------------------------------------------------------------- read


def read_instruct(path: str | os.PathLike, root: str | os.PathLike | None = None, *,
                  split: str | None = None) -> list[InstructSample]:
    """Read LLaVA-format instruction data, refusing images outside the dataset root.

    Args:
        path: a JSON file holding a list of entries, or a folder holding ``train.json``,
            ``valid.json`` and ``test.json`` (then ``split`` picks one).
        root: folder the ``image`` paths are relative to (default: the JSON's folder).
        split: ``"train"``, ``"valid"`` or ``"test"`` when ``path`` is a folder.

    Returns:
        The entries in file order.

    Raises:
        InstructError: unreadable or malformed JSON, a bad entry, a missing image, or an
            image path escaping ``root``; the message names the file and the entry index.

    Example:
        >>> samples = read_instruct("out/instruct", split="train")
        >>> samples[0].turns[0]
        ('Does this ECG show atrial fibrillation?', 'no')
    """
    file = _json_file(Path(path).expanduser(), split)
    base = Path(root).expanduser() if root is not None else file.parent
    if not base.is_dir():
        raise InstructError(f"{base}: dataset root is not a folder")
    base = base.resolve()
    entries = read_json_list(file, "entries", InstructError)
    return [_parse_entry(entry, f"{file}: entry {i}", base) for i, entry in enumerate(entries)]


def _json_file(path: Path, split: str | None) -> Path:
    if path.is_dir():
        if split not in SPLITS:
            raise InstructError(f"{path}: is a folder; pass split= one of {', '.join(SPLITS)}")
        path = path / f"{split}.json"
    if not path.is_file():
        raise InstructError(f"{path}: instruction file not found")
    return path


def _parse_entry(entry, where: str, root: Path) -> InstructSample:
    if not isinstance(entry, dict):
        raise InstructError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in ("id", "image", "conversations") if k not in entry]
    if missing:
        raise InstructError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(entry["id"], (str, int)) or isinstance(entry["id"], bool):
        raise InstructError(f"{where}: id must be a string or integer")
    where = f"{where} (id {entry['id']!r})"
    image = resolve_image(entry["image"], root, where)
    turns, image_first = _parse_turns(entry["conversations"], where)
    meta = {k: v for k, v in entry.items() if k not in ("id", "image", "conversations")}
    return InstructSample(id=str(entry["id"]), image=image, turns=turns,
                          image_first=image_first, meta=meta)


def resolve_image(value, root: Path, where: str = "image") -> Path:
    """The absolute path of an entry's image, which must be a file inside ``root``.

    Args:
        value: the entry's ``image`` string, relative to ``root``.
        root: the resolved dataset root.
        where: prefix of error messages (file and entry).

    Raises:
        InstructError: not a non-empty string, absolute, escaping ``root`` (``..`` or a
            symlink pointing outside), or not an existing file.
    """
    if not isinstance(value, str) or not value.strip():
        raise InstructError(f"{where}: image must be a non-empty relative path string")
    rel = Path(value)
    if rel.is_absolute() or value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise InstructError(f"{where}: image {value!r} is an absolute path; give it relative "
                            f"to the dataset root {root}")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise InstructError(f"{where}: image {value!r} escapes the dataset root {root}")
    if not path.is_file():
        raise InstructError(f"{where}: image {value!r} not found under {root}")
    return path


def _parse_turns(conv, where: str) -> tuple[tuple[tuple[str, str], ...], bool]:
    """(human, gpt) pairs from a LLaVA ``conversations`` list; image position."""
    if not isinstance(conv, list) or not conv:
        raise InstructError(f"{where}: conversations must be a non-empty list")
    texts = []
    for k, msg in enumerate(conv):
        if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
            raise InstructError(f"{where}: conversations[{k}] must be an object with a "
                                "string 'value'")
        role = msg.get("from")
        if role != ROLES[k % 2]:
            raise InstructError(f"{where}: conversations[{k}] is from {role!r}; turns must "
                                "alternate 'human', 'gpt', starting with 'human'")
        texts.append(msg["value"])
    if len(texts) % 2:
        raise InstructError(f"{where}: the last human turn has no 'gpt' answer")
    n_tokens = [t.count(IMAGE_TOKEN) for t in texts]
    if sum(n_tokens) > 1 or sum(n_tokens[1:]):
        raise InstructError(f"{where}: {IMAGE_TOKEN} may appear once, in the first human turn")
    first = texts[0].strip()
    image_first = not (n_tokens[0] and first.endswith(IMAGE_TOKEN)
                       and not first.startswith(IMAGE_TOKEN))
    texts[0] = first.replace(IMAGE_TOKEN, "").strip()
    turns = tuple((texts[i].strip(), texts[i + 1].strip()) for i in range(0, len(texts), 2))
    return turns, image_first


# --------------------------------------------------------------------------- build


@dataclass
class Entry:
    """One planned question about one record, before its image exists."""

    id: str
    record: str                 # key of the record (its image is images/<record>.png)
    split: str
    question: str
    answer: list[str]
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The LLaVA entry; ``meta`` keys at the top level."""
        return {"id": self.id, "image": f"images/{self.record}.png",
                "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{self.question}"},
                                  {"from": "gpt", "value": ", ".join(self.answer)}],
                "split": self.split, "record": self.record, "answer": list(self.answer),
                **self.meta}


@dataclass
class Plan:
    """Entries to write, the record file behind each record key, what was left out."""

    source: str
    entries: list[Entry]
    records: dict[str, str]
    skipped: dict[str, int] = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InstructSummary:
    """What :func:`build_instruct` wrote."""

    out: Path
    source: str
    n_images: int
    n_entries: dict[str, int]
    skipped: dict[str, int]


def build_instruct(out: str | os.PathLike, *, qa: str | os.PathLike | None = None,
                   records: str | os.PathLike | None = None,
                   dx: Sequence[str | os.PathLike] | None = None, version: str = "template",
                   question_types: Sequence[str] | None = None, max_samples: int | None = None,
                   size: tuple[int, int] = DEFAULT_SIZE, variation: Variation | None = None,
                   seed: int = 0, workers: int = 1, classes: str | None = None,
                   progress: Callable[[int, int], None] | None = None) -> InstructSummary:
    """Render labelled records and write LLaVA-format instruction data into ``out``.

    Args:
        out: output folder; must not exist or be empty. Gets ``images/<record>.png``,
            ``train.json``, ``valid.json``, ``test.json`` and ``meta.json``.
        qa: ECG-QA-schema folder (real ECG-QA version folder or ``ecgqa data synth`` output).
        records: where the ``qa`` ECGs are (records index CSV, PTB-XL or MIMIC-IV-ECG
            folder); default ``records_index.csv`` in ``qa``.
        dx: folders of records with ``# Dx:`` SNOMED-CT codes (instead of ``qa``).
        version: ECG-QA question wording, ``"template"`` or ``"paraphrased"``.
        question_types: keep only these (single-ECG) question types.
        max_samples: keep at most this many questions (a seeded random subset).
        size: image ``(height, width)``.
        variation: random look of the images; None draws plain printouts.
        seed: seed of subsets, Dx splits and negatives, and image variation.
        workers: processes rendering images.
        classes: with ``qa``, keep only meta-training classes, so a benchmark of held-out
            classes compares like with like: ``"meta-train"`` (the meta-training default
            split: 30 % of the attributes held out, seed 0, over every question type) or a
            signal adapter folder (the split in its ``classes.json``). None keeps all.
        progress: called as ``progress(done, total)`` as images are written.

    Raises:
        InstructError: bad inputs, nothing to write, or ``out`` not empty.
        EcgQaError: malformed ECG-QA data or records index.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InstructError(f"{out} exists and is not an empty folder")
    if (qa is None) == (not dx):
        raise InstructError("give exactly one source: an ECG-QA folder (qa) or Dx folders (dx)")
    if qa is not None:
        plan = plan_ecgqa(qa, records, version, question_types, classes)
    elif classes is not None:
        raise InstructError("classes (meta-train classes only) goes with ECG-QA data (qa)")
    else:
        plan = plan_dx(dx, question_types, seed)
    _subset(plan, max_samples, seed)
    if not plan.entries:
        raise InstructError(f"no questions to write from {plan.inputs} "
                            f"(left out: {_skipped_text(plan.skipped)})")
    return _write(out, plan, size, variation, seed, workers, progress)


def plan_ecgqa(qa, records, version: str, question_types: Sequence[str] | None,
               classes: str | None = None) -> Plan:
    """One entry per single-ECG question whose record the resolver finds.

    Comparison questions (two ECGs) are left out: one entry has one image. With
    ``classes`` (see :func:`build_instruct`) questions of held-out classes are left out too.
    """
    from ecgqa.qa.ecgqa import load_ecgqa
    from ecgqa.qa.episodes import class_key
    from ecgqa.qa.resolve import make_resolver

    if question_types and any(t.startswith("comparison") for t in question_types):
        raise InstructError("comparison question types need two ECGs in one image; choose "
                            "single-verify, single-choose or single-query")
    data = load_ecgqa(qa, version=version, question_types=question_types)
    if records is None and not (data.root / "records_index.csv").is_file():
        raise InstructError(f"{qa}: no records_index.csv; say where the ECGs are with records "
                            "(--records: index CSV, PTB-XL or MIMIC-IV-ECG folder)")
    resolver = make_resolver(records if records is not None else data.root)
    plan = Plan(source="ecgqa", entries=[], records={},
                inputs={"qa": str(qa), "records": str(records) if records else None,
                        "version": version})
    keep = None if classes is None else meta_train_classes(qa, records, version, classes)
    if keep is not None:
        plan.inputs["classes"] = str(classes)
    found: dict[int, str | None] = {}
    for s in data.samples:
        if s.is_comparison:
            plan.skipped["comparison question"] = plan.skipped.get("comparison question", 0) + 1
            continue
        if keep is not None and class_key(s) not in keep:
            plan.skipped["held-out class"] = plan.skipped.get("held-out class", 0) + 1
            continue
        ecg_id = s.ecg_ids[0]
        if ecg_id not in found:
            path = resolver.path(ecg_id)
            found[ecg_id] = None if path is None else str(path)
        if found[ecg_id] is None:
            plan.skipped["record not found"] = plan.skipped.get("record not found", 0) + 1
            continue
        key = f"{ecg_id:05d}"
        plan.records[key] = found[ecg_id]
        plan.entries.append(Entry(
            id=f"ecgqa-{s.split}-{s.sample_id}", record=key, split=s.split,
            question=s.question, answer=list(s.answer),
            meta={"source": "ecgqa", "ecg_id": list(s.ecg_ids), "question_type": s.question_type,
                  "attribute_type": s.attribute_type, "template_id": s.template_id,
                  "sample_id": s.sample_id, "attribute": s.attribute and list(s.attribute),
                  "options": list(data.vocab.options(s.template_id))}))
    return plan


def meta_train_classes(qa, records, version: str, classes: str) -> frozenset:
    """The meta-train classes of ``qa``: of the default split (over the questions of every
    type whose ECG is found, as ``train-meta`` makes it), or of an adapter's."""
    from ecgqa.meta.adapter import AdapterError, load_class_split
    from ecgqa.meta.data import MetaDataError, load_available
    from ecgqa.qa.episodes import split_classes

    if classes == "meta-train":
        try:
            _, _, every = load_available(qa, records, version, [])
        except MetaDataError as err:
            raise InstructError(str(err)) from None
        return split_classes(every, test_fraction=0.3, seed=0, by="attribute").meta_train
    try:
        saved = load_class_split(classes)
    except AdapterError as err:
        raise InstructError(f"classes: {err}") from None
    if saved is None:
        raise InstructError(f"classes: {classes} has no classes.json (adapters written by "
                            "train-meta have one); use classes=meta-train")
    return saved["meta_train"]


def plan_dx(folders: Sequence[str | os.PathLike], question_types: Sequence[str] | None,
            seed: int) -> Plan:
    """Questions from the ``# Dx:`` codes of the records under ``folders`` (recursively).

    Records are split 70/15/15 by record with ``seed``; unreadable records and records
    without a named diagnosis are left out (counted in ``Plan.skipped``).
    """
    types = tuple(question_types or dx_questions.QUESTION_TYPES)
    bad = [t for t in types if t not in dx_questions.QUESTION_TYPES]
    if bad:
        raise InstructError(f"Dx records give question types "
                            f"{', '.join(dx_questions.QUESTION_TYPES)}; not {', '.join(bad)}")
    plan = Plan(source="dx", entries=[], records={}, inputs={"dx": [str(f) for f in folders]})
    codes = _read_dx_codes(folders, plan)
    pool = sorted({c for cs in codes.values() for c in dx_questions.named(cs)})
    split = dx_questions.split_records(sorted(codes), seed)
    rng = np.random.default_rng([seed, 0xD7])
    for key in sorted(codes):
        asked = dx_questions.questions(codes[key], pool, rng, types)
        if not asked:
            plan.skipped["no named diagnosis"] = plan.skipped.get("no named diagnosis", 0) + 1
            del plan.records[key]
        for k, (qtype, question, answer, options) in enumerate(asked):
            plan.entries.append(Entry(
                id=f"dx-{key}-{k}", record=key, split=split[key], question=question,
                answer=answer, meta={"source": "dx", "question_type": qtype,
                                     "attribute_type": "dx", "dx_codes": list(codes[key]),
                                     "options": options}))
    return plan


def _read_dx_codes(folders: Sequence[str | os.PathLike], plan: Plan) -> dict[str, list[str]]:
    """Dx codes of every readable record under ``folders``; fills ``plan.records``."""
    from ecgqa.records.read import EcgRecordError, read_record

    codes: dict[str, list[str]] = {}
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise InstructError(f"{root}: not a folder")
        headers = sorted(root.rglob("*.hea"))
        if not headers:
            raise InstructError(f"{root}: no records (*.hea) found")
        for header in headers:
            try:
                meta = read_record(header).meta
            except EcgRecordError:
                plan.skipped["unreadable record"] = plan.skipped.get("unreadable record", 0) + 1
                continue
            key = _unique_key(f"{root.name}-{header.relative_to(root).with_suffix('')}",
                              plan.records)
            plan.records[key] = str(header.with_suffix(""))
            codes[key] = list(meta.dx_codes)
    return codes


def _unique_key(text: str, taken) -> str:
    """A file-name-safe record key not in ``taken``."""
    key = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip(".-") or "record"
    n, out = 1, key
    while out in taken:
        n += 1
        out = f"{key}-{n}"
    return out


def _subset(plan: Plan, max_samples: int | None, seed: int) -> None:
    """Keep a seeded random ``max_samples`` of the entries, in their original order."""
    if max_samples is None or len(plan.entries) <= max_samples:
        return
    if max_samples < 1:
        raise InstructError(f"max_samples must be >= 1, got {max_samples}")
    rng = np.random.default_rng([seed, 0x5B])
    keep = np.sort(rng.permutation(len(plan.entries))[:max_samples])
    plan.skipped["over max_samples"] = len(plan.entries) - max_samples
    plan.entries = [plan.entries[i] for i in keep]
    used = {e.record for e in plan.entries}
    plan.records = {k: v for k, v in plan.records.items() if k in used}


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in skipped.items()) or "nothing"


# --------------------------------------------------------------------------- write


def _write(out: Path, plan: Plan, size, variation, seed: int, workers: int,
           progress) -> InstructSummary:
    """Render every record once, write the split files and meta.json; atomically."""
    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        failed = _render_all(tmp / "images", plan.records, size, variation, seed, workers,
                             progress)
        if failed:
            plan.skipped["question on an unreadable record"] = sum(e.record in failed
                                                                  for e in plan.entries)
            plan.entries = [e for e in plan.entries if e.record not in failed]
        if not plan.entries:
            raise InstructError(f"no record could be read ({next(iter(failed.values()))})")
        counts = {s: 0 for s in SPLITS}
        for split in SPLITS:
            rows = [e.to_json() for e in plan.entries if e.split == split]
            counts[split] = len(rows)
            (tmp / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
        n_images = len(plan.records) - len(failed)
        _write_meta(tmp, plan, counts, n_images, size, variation, seed, failed)
    return InstructSummary(out=out, source=plan.source, n_images=n_images, n_entries=counts,
                           skipped=dict(plan.skipped))


def _render_one(job) -> tuple[str, str | None]:
    """Read one record and write its PNG (runs in a worker); (key, error or None)."""
    from ecgqa.image_qa.render import render_image
    from ecgqa.records.read import EcgRecordError, read_record

    key, path, folder, size, variation, seed, index = job
    try:
        record = read_record(path)
    except EcgRecordError as err:
        return key, str(err)
    image = render_image(record, size, variation, np.random.default_rng([seed, index]))
    image.save(Path(folder) / f"{key}.png", optimize=False)
    return key, None


def _render_all(folder: Path, records: dict[str, str], size, variation, seed: int,
                workers: int, progress) -> dict[str, str]:
    """Render the records; the keys that could not be read, with the reason."""
    jobs = [(key, records[key], str(folder), size, variation, seed, i)
            for i, key in enumerate(sorted(records))]
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(jobs) > 8 else None
    results = pool.map(_render_one, jobs, chunksize=4) if pool else map(_render_one, jobs)
    failed: dict[str, str] = {}
    try:
        for done, (key, error) in enumerate(results, start=1):
            if error is not None:
                failed[key] = error
            if progress:
                progress(done, len(jobs))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return failed


def _write_meta(tmp: Path, plan: Plan, counts: dict, n_images: int, size, variation,
                seed: int, failed: dict[str, str]) -> None:
    from ecgqa.assets import package_version

    qtypes = sorted({e.meta.get("question_type", "") for e in plan.entries})
    meta = {"format": "llava", "ecgqa_version": package_version(), "source": plan.source,
            "inputs": plan.inputs, "counts": dict(counts, images=n_images),
            "question_types": qtypes, "skipped": plan.skipped,
            "unreadable_records": failed, "size": list(size),
            "variation": variation.to_json() if variation and variation.enabled else None,
            "seed": seed}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
