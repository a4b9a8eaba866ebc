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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ecgqa import userfiles
from ecgqa.errors import EcgqaError
from ecgqa.userfiles import clean

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


class EcgQaError(EcgqaError):
    """ECG-QA data could not be loaded; the message names the file and the entry."""


MAX_ID = 2 ** 63 - 1        # ids must fit an int64 (tensors, numpy, Arrow)


def user_path(path: str | os.PathLike, error: type[ValueError] = EcgQaError) -> Path:
    """``Path(path).expanduser()``; an unknown ``~user`` raises ``error``, one line."""
    try:
        return Path(path).expanduser()
    except RuntimeError:                      # pathlib: "Could not determine home directory"
        raise error(f"{clean(path)}: cannot expand '~' (no such user or no home folder)") from None


def is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False instead of raising for a name too long for the
    file system, an unreadable folder and the like."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()`` that answers False instead of raising (see :func:`is_file`)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def show(value, width: int = 60) -> str:
    """A value from a file for a one-line error message: ``repr`` (no line breaks), shortened."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 20]}... ({len(text)} chars)"


_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """A non-negative ASCII decimal id (surrounding spaces allowed) up to ``MAX_ID``, else None."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


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
    root = user_path(root)
    if is_file(root / "answers.csv"):
        return root
    candidates = [source] if source else ["ptbxl", "mimic-iv-ecg"]
    found = [root / c for c in candidates if is_file(root / c / "answers.csv")]
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
        seen: dict[int, str] = {}                 # sample_id -> its source, within a split
        for shard in sorted(folder.glob("*.json")) if is_dir(folder) else []:
            shards += 1
            for s in read_shard(shard, split, vocab if check_answers else None):
                if seen.setdefault(s.sample_id, s.source) != s.source:
                    raise EcgQaError(f"{clean(shard)}: entry {s.source.rpartition('#')[2]}: "
                                     f"sample_id {s.sample_id} repeats {seen[s.sample_id]} "
                                     f"({split} split)")
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
    p = user_path(path)
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
    answers = tuple(r["class"] for r in _read_csv(path, ("class",)))
    if not answers:
        raise EcgQaError(f"{clean(path)}: no answers (expected 'index,class' rows)")
    by_template: dict[int, tuple[str, ...]] = {}
    tpath = vroot / "answers_for_each_template.csv"
    if is_file(tpath):
        for i, r in enumerate(_read_csv(tpath, ("template_id", "classes")), start=2):
            template_id = parse_id(r["template_id"])
            if template_id is None:
                raise EcgQaError(f"{clean(tpath)}: line {i}: template_id "
                                 f"{show(r['template_id'])} is not a non-negative integer")
            by_template[template_id] = _parse_classes(r["classes"], f"{clean(tpath)}: line {i}")
    return AnswerVocab(answers=answers, by_template=by_template)


def _parse_classes(text: str, where: str) -> tuple[str, ...]:
    """A Python list literal of answer strings, as ECG-QA writes them: ``"['no', 'yes']"``."""
    try:
        classes = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise EcgQaError(f"{where}: cannot parse classes ({show(str(err))})") from None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise EcgQaError(f"{where}: classes must be a list of strings like \"['no', 'yes']\", "
                         f"got {show(text)}")
    return tuple(classes)


def read_split_ecgs(vroot: Path) -> dict[str, frozenset[int]]:
    """Read the official ``*_ecgs.tsv`` split lists (``index<TAB>ecg_id`` per line)."""
    out: dict[str, frozenset[int]] = {}
    for split in SPLITS:
        path = vroot / f"{split}_ecgs.tsv"
        if not is_file(path):
            continue
        ids = set()
        for n, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            ecg_id = parse_id(line.strip().split("\t")[-1])
            if ecg_id is None:
                if n == 1:
                    continue  # a header line
                raise EcgQaError(f"{clean(path)}: line {n}: expected 'index<TAB>ecg_id', got "
                                 f"{show(line)}")
            ids.add(ecg_id)
        out[split] = frozenset(ids)
    return out


def read_text(path: Path, error: type[ValueError] = EcgQaError) -> str:
    """A regular file's UTF-8 text (:func:`ecgqa.userfiles.read_text`, no size limit: shards are
    large); problems raise ``error``, one line naming the file."""
    return userfiles.read_text(path, error)


def read_json_list(path: Path, what: str = "samples", error: type[ValueError] = EcgQaError
                   ) -> list:
    """A JSON file holding a list; a missing, undecodable or malformed file, or another JSON
    value, raises ``error`` with one line naming the file (and the line and column)."""
    text = read_text(path, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{clean(path)}: malformed JSON at line {err.lineno} column {err.colno}: "
                    f"{err.msg}") from None
    except RecursionError:
        raise error(f"{clean(path)}: JSON nested too deeply") from None
    except ValueError as err:          # a number beyond Python's int-string digit limit
        raise error(f"{clean(path)}: unreadable JSON value ({show(str(err))})") from None
    if not isinstance(data, list):
        raise error(f"{clean(path)}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def read_shard(path: Path, split: str, vocab: AnswerVocab | None) -> list[QaSample]:
    """Parse one JSON shard; every problem names the file and the entry."""
    data = read_json_list(path)
    known = set(vocab.answers) if vocab is not None else None
    samples = [_parse_sample(entry, path, i, split, known) for i, entry in enumerate(data)]
    seen: dict[int, int] = {}
    for i, s in enumerate(samples):
        if seen.setdefault(s.sample_id, i) != i:
            raise EcgQaError(f"{clean(path)}: entry {i}: sample_id {s.sample_id} repeats "
                             f"entry {seen[s.sample_id]}")
    return samples


class _BadField(Exception):
    """A field of the wrong type; the message names the field."""


def _parse_sample(entry, path: Path, i: int, split: str, known: set[str] | None) -> QaSample:
    where = f"{clean(path)}: entry {i}"
    if not isinstance(entry, dict):
        raise EcgQaError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise EcgQaError(f"{where}: missing field(s) {', '.join(missing)}")
    where = f"{where} (sample_id {show(entry['sample_id'])})"
    try:
        attr = entry.get("attribute")
        sample = QaSample(
            sample_id=_as_id(entry["sample_id"], "sample_id"),
            template_id=_as_id(entry["template_id"], "template_id"),
            question_id=_as_id(entry["question_id"], "question_id"),
            question_type=_as_text(entry["question_type"], "question_type"),
            attribute_type=_as_text(entry["attribute_type"], "attribute_type"),
            question=_as_text(entry["question"], "question"),
            answer=_as_texts(entry["answer"], "answer"),
            ecg_ids=tuple(_as_id(e, "ecg_id") for e in _as_list(entry["ecg_id"], "ecg_id")),
            attribute=None if attr is None else _as_texts(attr, "attribute"),
            split=split, source=f"{path.name}#{i}")
    except _BadField as err:
        raise EcgQaError(f"{where}: bad field value: {err}") from None
    _check_sample(sample, where, known)
    return sample


def _as_id(value, key: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:       # bool and float excluded
        raise _BadField(f"{key} must be a non-negative integer, got {show(value)}")
    return value


def _as_text(value, key: str) -> str:
    if not isinstance(value, str):
        raise _BadField(f"{key} must be a string, got {show(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadField(f"{key} holds an unpaired UTF-16 surrogate: {show(value)}") from None
    return value


def _as_texts(value, key: str) -> tuple[str, ...]:
    return tuple(_as_text(v, key) for v in _as_list(value, key))


def _as_list(value, key: str) -> list:
    if isinstance(value, list):
        return value
    raise _BadField(f"{key} must be a list, got {type(value).__name__} {show(value)}")


def _check_sample(s: QaSample, where: str, known: set[str] | None) -> None:
    if s.question_type not in QUESTION_TYPES:
        raise EcgQaError(f"{where}: unknown question_type {show(s.question_type)}")
    if s.attribute_type not in ATTRIBUTE_TYPES:
        raise EcgQaError(f"{where}: unknown attribute_type {show(s.attribute_type)}")
    if not s.answer:
        raise EcgQaError(f"{where}: empty answer list")
    n = 2 if s.is_comparison else 1
    if len(s.ecg_ids) != n:
        raise EcgQaError(f"{where}: {s.question_type} needs {n} ecg_id(s), got {len(s.ecg_ids)}")
    if known is not None:
        unknown = [a for a in s.answer if a not in known]
        if unknown:
            raise EcgQaError(f"{where}: unknown answer {show(unknown[0])} (not in answers.csv)")


def read_csv_rows(path: Path, what: str = "CSV") -> list[list[str]]:
    """The rows of a UTF-8 CSV file (a leading BOM dropped); problems raise EcgQaError."""
    if not is_file(path):
        raise EcgQaError(f"{clean(path)}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except OSError as err:
        raise EcgQaError(f"{clean(path)}: cannot read {what} ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise EcgQaError(f"{clean(path)}: not UTF-8 text (byte {err.start}: {err.reason})"
                         ) from None
    except csv.Error as err:                  # fixed texts: "field larger than field limit"
        raise EcgQaError(f"{clean(path)}: cannot read {what} ({err})") from None


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict]:
    """CSV rows as dicts; the file must have ``columns`` and every row a value for each."""
    header, *body = read_csv_rows(path) or [[]]
    if not set(columns) <= set(header):
        raise EcgQaError(f"{clean(path)}: expected columns {', '.join(columns)}, got "
                         f"{show(','.join(header))}")
    rows = []
    for n, values in enumerate(body, start=1):
        if not values:
            continue                          # a blank line, as csv.DictReader skips it
        if len(values) < len(header):
            raise EcgQaError(f"{clean(path)}: row {n}: expected a value for each of "
                             f"{', '.join(header)}")
        rows.append(dict(zip(header, values)))
    return rows
