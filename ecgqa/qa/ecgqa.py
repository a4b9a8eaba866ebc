"""ECG-QA (Oh et al., NeurIPS 2023, v1.0.2) in its published layout, and any data in its schema.

Layout of one version (``ptbxl/`` or ``mimic-iv-ecg/``)::

    answers.csv                    index,class          (the answer vocabulary)
    answers_for_each_template.csv  template_id,classes  (answer options per template)
    train_ecgs.tsv valid_ecgs.tsv test_ecgs.tsv         (official patient-level ECG splits)
    template/{train,valid,test}/*.json                  (question shards)
    paraphrased/{train,valid,test}/*.json

Each shard is a JSON list of samples with ``template_id, question_id, sample_id,
question_type, attribute_type, question, answer[], ecg_id[], attribute[]|null``.
The synthetic generator (``ecgqa data synth``) writes the same layout, so everything
downstream reads real and synthetic data through :func:`load_ecgqa`.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

QUESTION_TYPES: tuple[str, ...] = (
    "single-verify", "single-choose", "single-query",
    "comparison_consecutive-verify", "comparison_consecutive-query",
    "comparison_irrelevant-verify", "comparison_irrelevant-query",
)
ATTRIBUTE_TYPES: tuple[str, ...] = (
    "scp_code", "noise", "stage_of_infarction", "extra_systole", "heart_axis", "numeric_feature",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
VERSIONS: tuple[str, ...] = ("template", "paraphrased")
_REQUIRED = ("template_id", "question_id", "sample_id", "question_type", "attribute_type",
             "question", "answer", "ecg_id")


class EcgQaError(ValueError):
    """ECG-QA data could not be loaded; the message names the file and the entry."""


@dataclass(frozen=True)
class QaSample:
    """One question about one ECG (two for comparison questions).

    Attributes:
        sample_id, template_id, question_id: ECG-QA identifiers.
        question_type: one of ``QUESTION_TYPES``.
        attribute_type: one of ``ATTRIBUTE_TYPES``.
        question: the question text.
        answer: answer strings (several for multi-answer query questions).
        ecg_ids: one ECG id, or two for comparison questions (first, second).
        attribute: the attributes the question asks about; None for comparison questions.
        split: ``train``, ``valid`` or ``test`` (the shard folder).
        source: ``file.json#index`` for error messages.
    """

    sample_id: int
    template_id: int
    question_id: int
    question_type: str
    attribute_type: str
    question: str
    answer: tuple[str, ...]
    ecg_ids: tuple[int, ...]
    attribute: tuple[str, ...] | None
    split: str
    source: str = ""

    @property
    def is_comparison(self) -> bool:
        return self.question_type.startswith("comparison")

    def to_json(self) -> dict:
        """The sample in ECG-QA's JSON schema."""
        return {
            "template_id": self.template_id, "question_id": self.question_id,
            "sample_id": self.sample_id, "question_type": self.question_type,
            "attribute_type": self.attribute_type, "question": self.question,
            "answer": list(self.answer), "ecg_id": list(self.ecg_ids),
            "attribute": None if self.attribute is None else list(self.attribute),
        }


@dataclass(frozen=True)
class AnswerVocab:
    """The answer vocabulary and the answer options of each template."""

    answers: tuple[str, ...]
    by_template: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def options(self, template_id: int) -> tuple[str, ...]:
        """Answer options of a template (the whole vocabulary if the template is unlisted)."""
        return self.by_template.get(template_id, self.answers)


@dataclass
class EcgQaData:
    """Loaded ECG-QA samples with their vocabulary and official ECG splits."""

    root: Path
    samples: list[QaSample]
    vocab: AnswerVocab
    split_ecgs: dict[str, frozenset[int]]
    version: str = "template"

    def __len__(self) -> int:
        return len(self.samples)

    def ecg_ids(self) -> set[int]:
        return {i for s in self.samples for i in s.ecg_ids}

    def select(self, *, question_type: str | None = None, split: str | None = None,
               available: Iterable[int] | None = None) -> list[QaSample]:
        """Samples of one question type / split, optionally only those whose ECGs exist."""
        have = None if available is None else set(available)
        return [s for s in self.samples
                if (question_type is None or s.question_type == question_type)
                and (split is None or s.split == split)
                and (have is None or all(i in have for i in s.ecg_ids))]

    def require_records(self, resolver) -> None:
        """Raise EcgQaError for the first sample whose ECG the resolver cannot find.

        Args:
            resolver: an ``ecgqa.qa.resolve.RecordResolver``.
        """
        for s in self.samples:
            for ecg_id in s.ecg_ids:
                resolver.require(ecg_id, f"{self.root / self.version / s.split / s.source} "
                                 f"(sample_id {s.sample_id})")

    def to_hf_dataset(self):
        """The samples as a Hugging Face ``datasets.Dataset`` (one row per sample)."""
        import datasets

        rows = [dict(s.to_json(), split=s.split) for s in self.samples]
        for r in rows:
            r["attribute"] = r["attribute"] or []
        return datasets.Dataset.from_list(rows)


def find_version_root(root: str | os.PathLike, source: str | None = None) -> Path:
    """Return the folder holding ``answers.csv`` (``root`` itself or ``root/<source>``)."""
    root = Path(root).expanduser()
    if (root / "answers.csv").is_file():
        return root
    candidates = [source] if source else ["ptbxl", "mimic-iv-ecg"]
    found = [root / c for c in candidates if (root / c / "answers.csv").is_file()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise EcgQaError(f"{root}: holds both {found[0].name}/ and {found[1].name}/; choose one "
                         "with source='ptbxl' or source='mimic-iv-ecg'")
    raise EcgQaError(f"{root}: not an ECG-QA folder (no answers.csv here or in "
                     f"{', '.join(c + '/' for c in candidates)})")


def load_ecgqa(
    root: str | os.PathLike,
    *,
    version: str = "template",
    splits: Sequence[str] = SPLITS,
    source: str | None = None,
    question_types: Sequence[str] | None = None,
    check_answers: bool = True,
) -> EcgQaData:
    """Load ECG-QA shards (real, synthetic, or any data in the schema).

    Args:
        root: a version folder (holding ``answers.csv``) or the release root holding
            ``ptbxl/`` and/or ``mimic-iv-ecg/``.
        version: ``"template"`` or ``"paraphrased"`` questions.
        splits: which of ``train``, ``valid``, ``test`` to load (missing folders are skipped).
        source: ``"ptbxl"`` or ``"mimic-iv-ecg"`` when ``root`` holds both.
        question_types: keep only these question types.
        check_answers: refuse answers outside ``answers.csv``.

    Returns:
        EcgQaData with samples in file order.

    Raises:
        EcgQaError: malformed JSON or CSV, missing fields, unknown answers, no shards.
    """
    if version not in VERSIONS:
        raise EcgQaError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise EcgQaError(f"unknown split(s) {', '.join(bad)}; use {', '.join(SPLITS)}")
    qtypes = set(question_types) if question_types else None
    if qtypes and not qtypes <= set(QUESTION_TYPES):
        unknown = ", ".join(sorted(qtypes - set(QUESTION_TYPES)))
        raise EcgQaError(f"unknown question type(s) {unknown}; use {', '.join(QUESTION_TYPES)}")
    vroot = find_version_root(root, source)
    vocab = read_vocab(vroot)
    samples: list[QaSample] = []
    shards = 0
    for split in splits:
        folder = vroot / version / split
        for shard in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            shards += 1
            for s in read_shard(shard, split, vocab if check_answers else None):
                if qtypes is None or s.question_type in qtypes:
                    samples.append(s)
    if shards == 0:
        raise EcgQaError(f"{vroot / version}: no question shards (*.json) under "
                         f"{'/, '.join(splits)}/")
    return EcgQaData(root=vroot, samples=samples, vocab=vocab,
                     split_ecgs=read_split_ecgs(vroot), version=version)


def load_qa_file(path: str | os.PathLike, question_types: Sequence[str] | None = None
                 ) -> EcgQaData:
    """One JSON file of samples in the ECG-QA schema (a shard), without its release folder.

    The answer vocabulary is the file's own answers (per template, the single answers it
    shows); every sample gets the split ``"test"``, so the caller says how records are
    divided (e.g. the benchmark's ``--splits`` pools).
    """
    p = Path(path).expanduser()
    samples = [s for s in read_shard(p, "test", None)
               if not question_types or s.question_type in question_types]
    by_template: dict[int, set[str]] = {}
    for s in samples:
        by_template.setdefault(s.template_id, set()).update(s.answer)
    vocab = AnswerVocab(tuple(sorted({a for v in by_template.values() for a in v})),
                        {t: tuple(sorted(v)) for t, v in by_template.items()})
    return EcgQaData(root=p.parent, samples=samples, vocab=vocab, split_ecgs={})


def read_vocab(vroot: Path) -> AnswerVocab:
    """Read ``answers.csv`` and ``answers_for_each_template.csv``."""
    path = vroot / "answers.csv"
    rows = _read_csv(path, ("class",))
    answers = tuple(r["class"] for r in rows)
    by_template: dict[int, tuple[str, ...]] = {}
    tpath = vroot / "answers_for_each_template.csv"
    if tpath.is_file():
        for i, r in enumerate(_read_csv(tpath, ("template_id", "classes")), start=2):
            try:
                classes = ast.literal_eval(r["classes"])
                by_template[int(r["template_id"])] = tuple(str(c) for c in classes)
            except (ValueError, SyntaxError) as err:
                raise EcgQaError(f"{tpath}: line {i}: cannot parse classes ({err})") from None
    return AnswerVocab(answers=answers, by_template=by_template)


def read_split_ecgs(vroot: Path) -> dict[str, frozenset[int]]:
    """Read the official ``*_ecgs.tsv`` split lists (``index<TAB>ecg_id`` per line)."""
    out: dict[str, frozenset[int]] = {}
    for split in SPLITS:
        path = vroot / f"{split}_ecgs.tsv"
        if not path.is_file():
            continue
        ids = set()
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.strip().split("\t")
            if not line.strip():
                continue
            try:
                ids.add(int(parts[-1]))
            except ValueError:
                if n == 1:
                    continue  # a header line
                raise EcgQaError(f"{path}: line {n}: expected 'index<TAB>ecg_id'") from None
        out[split] = frozenset(ids)
    return out


def read_json_list(path: Path, what: str = "samples", error: type[ValueError] = EcgQaError
                   ) -> list:
    """A JSON file holding a list; a missing, undecodable or malformed file, or another JSON
    value, raises ``error`` with one line naming the file (and the line and column)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: "
                    f"{err.msg}") from None
    if not isinstance(data, list):
        raise error(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def read_shard(path: Path, split: str, vocab: AnswerVocab | None) -> list[QaSample]:
    """Parse one JSON shard; every problem names the file and the entry."""
    data = read_json_list(path)
    known = set(vocab.answers) if vocab is not None else None
    return [_parse_sample(entry, path, i, split, known) for i, entry in enumerate(data)]


def _parse_sample(entry, path: Path, i: int, split: str, known: set[str] | None) -> QaSample:
    where = f"{path}: entry {i}"
    if not isinstance(entry, dict):
        raise EcgQaError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise EcgQaError(f"{where}: missing field(s) {', '.join(missing)}")
    where = f"{path}: entry {i} (sample_id {entry['sample_id']})"
    try:
        answer = tuple(str(a) for a in _as_list(entry["answer"]))
        ecg_ids = tuple(int(e) for e in _as_list(entry["ecg_id"]))
        attr = entry.get("attribute")
        attribute = None if attr is None else tuple(str(a) for a in _as_list(attr))
        sample = QaSample(
            sample_id=int(entry["sample_id"]), template_id=int(entry["template_id"]),
            question_id=int(entry["question_id"]), question_type=str(entry["question_type"]),
            attribute_type=str(entry["attribute_type"]), question=str(entry["question"]),
            answer=answer, ecg_ids=ecg_ids, attribute=attribute, split=split,
            source=f"{path.name}#{i}")
    except (TypeError, ValueError) as err:
        raise EcgQaError(f"{where}: bad field value ({err})") from None
    _check_sample(sample, where, known)
    return sample


def _as_list(value) -> list:
    if isinstance(value, list):
        return value
    raise TypeError(f"expected a list, got {type(value).__name__}")


def _check_sample(s: QaSample, where: str, known: set[str] | None) -> None:
    if s.question_type not in QUESTION_TYPES:
        raise EcgQaError(f"{where}: unknown question_type {s.question_type!r}")
    if s.attribute_type not in ATTRIBUTE_TYPES:
        raise EcgQaError(f"{where}: unknown attribute_type {s.attribute_type!r}")
    if not s.answer:
        raise EcgQaError(f"{where}: empty answer list")
    n = 2 if s.is_comparison else 1
    if len(s.ecg_ids) != n:
        raise EcgQaError(f"{where}: {s.question_type} needs {n} ecg_id(s), got {len(s.ecg_ids)}")
    if known is not None:
        unknown = [a for a in s.answer if a not in known]
        if unknown:
            raise EcgQaError(f"{where}: unknown answer {unknown[0]!r} (not in answers.csv)")


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict]:
    if not path.is_file():
        raise EcgQaError(f"{path}: missing")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise EcgQaError(f"{path}: cannot read CSV ({err})") from None
    if rows and not set(columns) <= set(rows[0]):
        raise EcgQaError(f"{path}: expected columns {', '.join(columns)}")
    return rows
