"""Questions about a record from its diagnosis codes (PhysioNet Challenge ``# Dx:`` SNOMED-CT).

Only codes with a readable name (``ecgqa.records.meta.SNOMED_NAMES``, the Challenge's
scored classes) are asked about; other codes stay in the entry's ``dx_codes``. Per record:

- ``single-verify``: "Does this ECG show <diagnosis>?" for each named diagnosis (yes) and
  as many diagnoses of other records (no), so yes and no are balanced;
- ``single-query``: "Which of these does this ECG show: a, b, c or d?", the record's named
  diagnoses among as many others, answered with the list of those it has.

A "no" diagnosis is never one that overlaps a diagnosis of the record (sinus rhythm and
sinus bradycardia, RBBB and complete RBBB, PVC and ventricular premature beats ...):
labels are not exhaustive, and an overlapping "no" would teach a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ecgqa.records.meta import SNOMED_NAMES

QUESTION_TYPES = ("single-verify", "single-query")
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
# Groups of codes that describe overlapping findings (the Challenge scores some as equal).
_RELATED: tuple[frozenset[str], ...] = tuple(frozenset(g) for g in (
    {"426783006", "426177001", "427084000", "427393009", "426627000"},   # sinus rhythms, brady
    {"713427006", "59118001", "713426002", "6374002"},                   # right BBB, BBB
    {"733534002", "164909002", "6374002"},                               # left BBB, BBB
    {"427172004", "17338001"},                                           # PVC = VPB
    {"284470004", "63593006"},                                           # PAC = SVPB
    {"270492004", "164947007"},                                          # 1st degree AVB, long PR
    {"164934002", "59931005"},                                           # T abnormal, T inversion
    {"39732003", "445118002"},                                           # LAD, LAnFB
    {"164889003", "164890007"},                                          # AF, flutter
    {"698252002", "6374002"},                                            # NSIVCB, BBB
))


def named(codes: Iterable[str]) -> list[str]:
    """The codes that have a readable name, in order, without repeats."""
    out: list[str] = []
    for c in codes:
        if c in SNOMED_NAMES and c not in out:
            out.append(c)
    return out


def name(code: str) -> str:
    """Readable name of a code in ``SNOMED_NAMES``."""
    return SNOMED_NAMES[code][1]


def overlaps(code: str, others: Iterable[str]) -> bool:
    """Whether ``code`` is one of ``others`` or describes an overlapping finding."""
    for other in others:
        if code == other or any(code in g and other in g for g in _RELATED):
            return True
    return False


def questions(codes: Sequence[str], pool: Sequence[str], rng: np.random.Generator,
              types: Sequence[str] = QUESTION_TYPES) -> list[tuple[str, str, list[str], list[str]]]:
    """Questions about one record.

    Args:
        codes: the record's Dx codes (all of them; unnamed ones only exclude nothing).
        pool: named codes seen in the data set, the source of "no" diagnoses.
        rng: draws the negatives and the option order.
        types: which of ``QUESTION_TYPES`` to ask.

    Returns:
        ``(question_type, question, answer list, options)`` tuples; empty when the record
        has no named code.
    """
    have = named(codes)
    if not have:
        return []
    lacks = [c for c in pool if not overlaps(c, codes)]
    out = []
    if "single-verify" in types:
        neg = [lacks[i] for i in rng.permutation(len(lacks))[:len(have)]]
        for code, ans in [(c, "yes") for c in have] + [(c, "no") for c in neg]:
            out.append(("single-verify", f"Does this ECG show {name(code)}?", [ans],
                        ["no", "yes"]))
    if "single-query" in types:
        n_neg = max(2, len(have))
        neg = [lacks[i] for i in rng.permutation(len(lacks))[:n_neg]]
        options = [name(c) for c in have + neg]
        options = [options[i] for i in rng.permutation(len(options))]
        listed = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 \
            else options[0]
        answer = [o for o in options if o in {name(c) for c in have}]
        out.append(("single-query", f"Which of these does this ECG show: {listed}?", answer,
                    options))
    return out


def split_records(keys: Sequence[str], seed: int) -> dict[str, str]:
    """Seeded train/valid/test split by record (70/15/15)."""
    order = [keys[i] for i in np.random.default_rng([seed, 0xD5]).permutation(len(keys))]
    n_train = int(round(SPLIT_FRACTIONS["train"] * len(keys)))
    n_valid = int(round(SPLIT_FRACTIONS["valid"] * len(keys)))
    return {k: "train" if r < n_train else "valid" if r < n_train + n_valid else "test"
            for r, k in enumerate(order)}
