"""Leak-free N-way K-shot episodes over ECG-QA samples.

A *class* is a ``(template_id, attribute, answer)`` combination, as in the few-shot
ECG-QA work, so a 5-way episode holds five different (question, answer) kinds. Unlike
that work, episodes here are honest:

1. **Disjoint meta-train / meta-test classes** (:func:`split_classes`): the individual
   attribute strings (``"atrial fibrillation"``, ``"static noise"`` ...) are partitioned by
   a seeded permutation, and so, separately, are the templates of samples without
   attributes (ECG-QA's comparison questions). A class is
   meta-test when all its attributes are held out, meta-train when none is, and dropped
   when it mixes both, so no held-out attribute is ever seen in meta-training, under any
   template. ``by="template"`` holds out whole templates instead.
2. **Official splits**: meta-training samples come from ECG-QA's ``train`` split,
   meta-testing from ``test`` (and ``valid`` for meta-validation); the splits are
   patient-level in the release.
3. **No record in both support and query**, and no sample twice in an episode; support
   records are distinct from each other, as are query records.
4. **Deterministic**: episode ``i`` depends only on ``(seed, i)``.

The sampler is built from small steps (filter, group into classes, pick N ways, pick
K shots, pick Q queries), as learn2learn's task transforms are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ecgqa.qa.ecgqa import QaSample

ClassKey = tuple[int, tuple[str, ...], tuple[str, ...]]

WAYS = ("answers", "classes")
"""What the ways of an episode are: answers to one question (``same_question``) or any
classes of a question type (the meta-training ``data.ways`` and the bench's ``ways``)."""


def class_key(sample: QaSample) -> ClassKey:
    """``(template_id, attribute, answer)`` of a sample; list order does not matter."""
    return (sample.template_id, tuple(sorted(sample.attribute or ())),
            tuple(sorted(sample.answer)))


def class_units(key: ClassKey, by: str) -> frozenset[str]:
    """The units a class is held out by: its attributes (``by='attribute'``; a class
    without one is its template) or its template."""
    template, attribute, _ = key
    attrs = frozenset(a for a in attribute if a != "none")   # "none" names no concept
    if by == "template" or not attrs:
        return frozenset({f"template:{template}"})
    return attrs


@dataclass(frozen=True)
class ClassSplit:
    """Meta-train and meta-test classes, and the held-out units they were split by."""

    meta_train: frozenset[ClassKey]
    meta_test: frozenset[ClassKey]
    test_units: frozenset[str]
    dropped: frozenset[ClassKey]
    by: str


def split_classes(samples: Iterable[QaSample], *, test_fraction: float = 0.3, seed: int = 0,
                  by: str = "attribute") -> ClassSplit:
    """Partition classes into meta-train and meta-test with no shared attribute (or template).

    Args:
        samples: samples of any splits (the partition is of classes, not samples).
        test_fraction: fraction of units (attributes or templates) held out for meta-test;
            0 holds out none (every class is meta-train: an adapter for chat).
        seed: permutation seed; the same seed and classes give the same split.
        by: ``"attribute"`` (default) or ``"template"``.

    Returns:
        ClassSplit; classes mixing held-out and training units are in ``dropped``.
    """
    if by not in ("attribute", "template"):
        raise ValueError(f"by must be 'attribute' or 'template', got {by!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    keys = {class_key(s) for s in samples}
    all_units = {u for k in keys for u in class_units(k, by)}
    test_units: set[str] = set()
    rng = np.random.default_rng(seed)
    # attributes and (attribute-less) templates are held out separately, so both kinds
    # of question keep meta-test classes
    for kind in (False, True):
        units = sorted(u for u in all_units if u.startswith("template:") == kind)
        if len(units) < 2 or test_fraction == 0:
            continue
        n_test = min(len(units) - 1, max(1, int(round(test_fraction * len(units)))))
        test_units |= {units[i] for i in rng.permutation(len(units))[:n_test]}
    train, test, dropped = set(), set(), set()
    for k in keys:
        u = class_units(k, by)
        if u <= test_units:
            test.add(k)
        elif not u & test_units:
            train.add(k)
        else:
            dropped.add(k)
    return ClassSplit(frozenset(train), frozenset(test), frozenset(test_units),
                      frozenset(dropped), by)


@dataclass(frozen=True)
class Episode:
    """One few-shot task: adapt on ``support``, answer ``query``."""

    support: tuple[QaSample, ...]
    query: tuple[QaSample, ...]
    classes: tuple[ClassKey, ...]
    index: int

    def records(self, part: str) -> set[int]:
        samples = self.support if part == "support" else self.query
        return {i for s in samples for i in s.ecg_ids}


class EpisodeSampler:
    """N-way K-shot Q-query episodes of one question type from one split.

    Args:
        samples: candidate samples (e.g. ``EcgQaData.samples``).
        n_way, k_shot, q_query: classes per episode, support and query samples per class.
        question_type: keep samples of this type only (None: all types).
        split: keep samples of this ECG-QA split only (None: all).
        classes: allowed classes (e.g. ``ClassSplit.meta_train``); None allows all.
        available: ecg ids whose records exist; samples needing others are skipped.
        same_question: the ways of an episode are answers to one question (template and
            attribute): up to ``n_way`` of them, at least 2, with ``k_shot`` support
            samples each, so neither the question's wording nor the support's answer
            counts give the answer away (a support-majority guess scores chance).
            Otherwise the ways are any ``n_way`` classes of the type.
        seed: episode ``i`` is a function of ``(seed, i)`` only.

    Example:
        >>> cs = split_classes(data.samples)
        >>> train = EpisodeSampler(data.samples, 5, 5, 5, "single-verify", "train",
        ...                        classes=cs.meta_train)
        >>> ep = train.episode(0)
    """

    def __init__(self, samples: Sequence[QaSample], n_way: int, k_shot: int, q_query: int,
                 question_type: str | None = None, split: str | None = None, *,
                 classes: Iterable[ClassKey] | None = None,
                 available: Iterable[int] | None = None, same_question: bool = False,
                 seed: int = 0):
        if n_way < 1 or k_shot < 1 or q_query < 1:
            raise ValueError("n_way, k_shot and q_query must be >= 1")
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        self.question_type, self.split = question_type, split
        self.same_question = same_question
        pool = _filter(samples, question_type, split, classes, available)
        self.by_class = _group(pool)
        self.eligible = sorted(k for k, v in self.by_class.items()
                               if len(_distinct_records(v)) >= k_shot + q_query)
        if same_question:
            self.min_way = min(2, n_way)
            questions: dict = defaultdict(list)
            for k in self.eligible:
                questions[k[:2]].append(k)                 # (template, attribute)
            self.groups = sorted(v for v in questions.values() if len(v) >= self.min_way)
            self.eligible = sorted(k for v in self.groups for k in v)
            if not self.groups:
                raise ValueError(
                    f"{question_type or 'all types'} / {split or 'all splits'}: no question "
                    f"has {self.min_way} answers with >= {k_shot + q_query} samples on "
                    f"distinct records each ({len(self.by_class)} classes, {len(pool)} "
                    "samples)")
            return
        self.min_way, self.groups = n_way, [self.eligible]
        if len(self.eligible) < n_way:
            raise ValueError(
                f"{question_type or 'all types'} / {split or 'all splits'}: only "
                f"{len(self.eligible)} classes have >= {k_shot + q_query} samples on distinct "
                f"records ({len(self.by_class)} classes, {len(pool)} samples); "
                f"need {n_way} for {n_way}-way {k_shot}-shot {q_query}-query")

    def episode(self, index: int) -> Episode:
        """Episode ``index`` (deterministic)."""
        rng = np.random.default_rng([self.seed, index])
        group = self.groups[int(rng.integers(len(self.groups)))] if self.same_question \
            else self.eligible
        order = [group[i] for i in rng.permutation(len(group))]
        chosen, support, query, used = [], [], [], set()
        for key in order:                       # pick N ways whose shots fit
            picked = _pick(self.by_class[key], self.k_shot + self.q_query, used, rng)
            if picked is None:
                continue
            chosen.append(key)
            support.extend(picked[: self.k_shot])
            query.extend(picked[self.k_shot:])
            used |= {i for s in picked for i in s.ecg_ids}
            if len(chosen) == self.n_way:
                break
        if len(chosen) >= self.min_way:
            return Episode(tuple(support), tuple(query), tuple(chosen), index)
        raise RuntimeError(f"episode {index}: could not fill {self.n_way} classes with records "
                           "unused elsewhere in the episode; lower n_way, k_shot or q_query")

    def episodes(self, n: int, start: int = 0) -> Iterator[Episode]:
        for i in range(start, start + n):
            yield self.episode(i)

    def capacity(self) -> int:
        """How many episodes could be drawn with no sample used twice (greedy count; with
        ``same_question``, the sum over questions of episodes with all their answers, up to
        ``n_way``)."""
        total = 0
        for group in self.groups:
            ways = min(self.n_way, len(group))
            per_class = sorted((len(_distinct_records(self.by_class[k]))
                                // (self.k_shot + self.q_query) for k in group), reverse=True)
            while len(per_class) >= ways and per_class[ways - 1] > 0:
                for i in range(ways):
                    per_class[i] -= 1
                total += 1
                per_class.sort(reverse=True)
        return total


def _filter(samples, question_type, split, classes, available) -> list[QaSample]:
    allowed = None if classes is None else set(classes)
    have = None if available is None else set(available)
    return [s for s in samples
            if (question_type is None or s.question_type == question_type)
            and (split is None or s.split == split)
            and (allowed is None or class_key(s) in allowed)
            and (have is None or all(i in have for i in s.ecg_ids))]


def _group(samples: Sequence[QaSample]) -> dict[ClassKey, list[QaSample]]:
    return _group_by(samples, class_key)


def _distinct_records(samples: Sequence[QaSample]) -> set[tuple[int, ...]]:
    """Samples usable together must not share an ECG; count one per record set."""
    seen: set[int] = set()
    out = set()
    for s in samples:
        if not seen & set(s.ecg_ids):
            seen |= set(s.ecg_ids)
            out.add(s.ecg_ids)
    return out


def _pick(samples: list[QaSample], n: int, used: set[int], rng) -> list[QaSample] | None:
    """``n`` samples in random order whose records are distinct and not in ``used``."""
    taken: list[QaSample] = []
    records = set(used)
    for i in rng.permutation(len(samples)):
        s = samples[i]
        if records & set(s.ecg_ids):
            continue
        taken.append(s)
        records |= set(s.ecg_ids)
        if len(taken) == n:
            return taken
    return None


def template_key(sample: QaSample) -> tuple:
    """``(template_id, answer)``: coarser classes than :func:`class_key` (no attribute)."""
    return (sample.template_id, tuple(sorted(sample.answer)))


def answer_key(sample: QaSample) -> tuple:
    """The answer alone: the coarsest classes, for data too small for any other."""
    return tuple(sorted(sample.answer))


class PooledEpisodeSampler:
    """N-way K-shot episodes whose support comes from one pool of records and whose queries
    come from another (the benchmark protocol).

    A sample belongs to a pool when all its ECGs are in it; the pools must not share a
    record. Classes are ``key(sample)`` (default :func:`class_key`); ``classes`` restricts
    samples by their :func:`class_key` first (e.g. held-out meta-test classes).

    Args:
        samples: candidate samples.
        n_way, k_shot, q_query: classes per episode, support and query samples per class.
        support_pool, query_pool: ecg ids of the two pools (disjoint).
        question_type: keep this type only (None: all).
        classes: allowed :func:`class_key` values (None: all).
        key: the class of a sample.
        same_question: draw the N classes of an episode among those of one question
            (template and attribute), so the ways are answers to that question and the
            question's wording cannot tell them apart.
        seed: episode ``i`` is a function of ``(seed, i)`` only.
    """

    def __init__(self, samples: Sequence[QaSample], n_way: int, k_shot: int, q_query: int, *,
                 support_pool: Iterable[int], query_pool: Iterable[int],
                 question_type: str | None = None,
                 classes: Iterable[ClassKey] | None = None, key=class_key,
                 same_question: bool = False, seed: int = 0):
        if n_way < 1 or k_shot < 1 or q_query < 1:
            raise ValueError("n_way, k_shot and q_query must be >= 1")
        sup, qry = set(support_pool), set(query_pool)
        if sup & qry:
            raise ValueError(f"support and query pools share {len(sup & qry)} records "
                             f"(e.g. ecg_id {min(sup & qry)}); they must be disjoint")
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        self.question_type = question_type
        pool = _filter(samples, question_type, None, classes, None)
        self.support = _group_by([s for s in pool if set(s.ecg_ids) <= sup], key)
        self.query = _group_by([s for s in pool if set(s.ecg_ids) <= qry], key)
        self.eligible = sorted(k for k in set(self.support) & set(self.query)
                               if len(_distinct_records(self.support[k])) >= k_shot
                               and len(_distinct_records(self.query[k])) >= q_query)
        questions: dict = defaultdict(list)
        for k in self.eligible:
            questions[self._question(k) if same_question else ()].append(k)
        self.groups = sorted(v for v in questions.values() if len(v) >= n_way)
        if not self.groups and len(self.eligible) >= n_way:
            raise ValueError(
                f"{question_type or 'all types'}: no question has {n_way} answers with >= "
                f"{k_shot} support and >= {q_query} query samples each; lower n_way")
        if len(self.eligible) < n_way:
            raise ValueError(
                f"{question_type or 'all types'}: only {len(self.eligible)} classes have >= "
                f"{k_shot} support samples and >= {q_query} query samples on distinct records "
                f"({len(self.support)} classes in the support pool, {len(self.query)} in the "
                f"query pool); need {n_way} for {n_way}-way {k_shot}-shot")

    def episode(self, index: int) -> Episode:
        """Episode ``index`` (deterministic)."""
        rng = np.random.default_rng([self.seed, index])
        group = self.groups[int(rng.integers(len(self.groups)))]
        order = [group[i] for i in rng.permutation(len(group))]
        chosen, support, query, used = [], [], [], set()
        for k in order:
            shots = _pick(self.support[k], self.k_shot, used, rng)
            if shots is None:
                continue
            taken = used | {i for s in shots for i in s.ecg_ids}
            queries = _pick(self.query[k], self.q_query, taken, rng)
            if queries is None:
                continue
            chosen.append(k)
            support.extend(shots)
            query.extend(queries)
            used = taken | {i for s in queries for i in s.ecg_ids}
            if len(chosen) == self.n_way:
                return Episode(tuple(support), tuple(query), tuple(chosen), index)
        raise RuntimeError(f"episode {index}: could not fill {self.n_way} classes with records "
                           "unused elsewhere in the episode; lower n_way, k_shot or q_query")


    def _question(self, key) -> tuple:
        """The (template, attribute) a class asks about (any sample of it will do)."""
        s = self.support[key][0]
        return s.template_id, tuple(sorted(s.attribute or ()))


def _group_by(samples: Sequence[QaSample], key) -> dict:
    groups: dict = defaultdict(list)
    for s in samples:
        groups[key(s)].append(s)
    for v in groups.values():
        v.sort(key=lambda s: (s.split, s.sample_id))
    return dict(groups)


def support_majority(episodes: Iterable[Episode]) -> tuple[float, float]:
    """How well the support set's answer counts alone answer the queries: per query, the
    most frequent support answer to its question (template and attribute; ties broken by
    the smallest answer), never an ECG. Returns ``(accuracy, chance)``, chance being the
    mean of 1 / (the episode's ways): a uniform guess among the episode's classes.

    With ``same_question`` episodes every answer has ``k_shot`` examples, so the accuracy
    is chance; with (template, attribute, answer) classes it is often far above it.
    """
    hits, chance, n = 0.0, 0.0, 0
    for ep in episodes:
        for q in ep.query:
            counts: dict[tuple, int] = defaultdict(int)
            for s in ep.support:
                if class_key(s)[:2] == class_key(q)[:2]:
                    counts[class_key(s)[2]] += 1
            if not counts:
                continue
            best = min(counts, key=lambda a: (-counts[a], a))
            hits += best == class_key(q)[2]
            chance += 1 / len(ep.classes)
            n += 1
    return (hits / n, chance / n) if n else (float("nan"), float("nan"))
