"""ECG-QA-style questions about synthetic ECGs, answered from their ground-truth facts.

Templates whose wording ECG-QA publishes (noise 26, 28-33, extra systoles 35-38, numeric
comparisons 68-70) keep ECG-QA's id and exact text. The others follow ECG-QA's style
and carry ids from 101, so they are never mistaken for ECG-QA templates with unknown
wording. Every answer string is one of ECG-QA's (``answers.csv``). Unlike ECG-QA, comparison
*verify* questions keep the attribute they ask about (ECG-QA stores None for every
comparison question), so their few-shot classes are (template, attribute, answer) too.

A template is a function ``facts -> (question, answer[], attribute[] | None)`` or, for
comparison types, ``(facts_1, facts_2) -> ...``; it returns None when it does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ecgqa.qa.numeric import NUMERIC_CLASSES, NUMERIC_FEATURES
from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth.ground_truth import (
    AXIS_CLASSES,
    EXTRA_SYSTOLES,
    LEAD_CODES,
    NOISE_TYPES,
    RHYTHMS,
    SCP_CODES,
)

CONDUCTION = ("first degree av block", "complete right bundle branch block",
              "incomplete right bundle branch block", "complete left bundle branch block",
              "incomplete left bundle branch block", "left anterior fascicular block")
LOCALISED = LEAD_CODES
NOISES = NOISE_TYPES
AXES = AXIS_CLASSES
NUMERIC = NUMERIC_FEATURES
RANGES = NUMERIC_CLASSES
LEADS = STANDARD_LEADS
LEAD_ANSWERS = tuple(f"lead {lead}" for lead in LEADS)
YES_NO = ("no", "yes")

Answer = tuple[str, list[str], list[str] | None]


@dataclass(frozen=True)
class Template:
    """A question template: id, type, attribute type, answer options, generator."""

    template_id: int
    question_type: str
    attribute_type: str
    options: tuple[str, ...]
    make: Callable[..., Answer | None]

    @property
    def comparison(self) -> bool:
        return self.question_type.startswith("comparison")


def _yn(flag: bool) -> list[str]:
    return ["yes" if flag else "no"]


def _either(rng, pool, present) -> str:
    """Half the time an attribute the ECG has, else one it lacks (balanced yes/no)."""
    have = [p for p in pool if p in present]
    lack = [p for p in pool if p not in present]
    src = have if have and (rng.random() < 0.5 or not lack) else lack
    return str(rng.choice(src))


def _pair(rng, pool, present) -> tuple[str, str]:
    first = _either(rng, pool, present)
    second = str(rng.choice([p for p in pool if p != first]))
    return (first, second) if rng.random() < 0.5 else (second, first)


def _chosen(pair, present) -> list[str]:
    return [p for p in pair if p in present] or ["none"]


def _all_of(pool, present) -> list[str]:
    return sorted(p for p in pool if p in present) or ["none"]


def _noise_leads(f) -> set[str]:
    return {lead for leads in f.noise.values() for lead in leads}


# --------------------------------------------------------------------------- single ECG


def _t101(f, rng):
    code = _either(rng, SCP_CODES, f.scp_codes)
    return f"Does this ECG show {code}?", _yn(code in f.scp_codes), [code]


def _t102(f, rng):
    code = str(rng.choice(LOCALISED))
    leads = f.scp_leads.get(code, ())
    lead = _either(rng, LEADS, leads)
    return f"Does this ECG show {code} in lead {lead}?", _yn(lead in leads), [code]


def _t26(f, rng):
    noise = _either(rng, NOISES, f.noise)
    leads = f.noise.get(noise, ())
    lead = _either(rng, LEADS, leads)
    return f"Does this ECG show {noise} in lead {lead}?", _yn(lead in leads), [noise]


def _t28(f, rng):
    lead = _either(rng, LEADS, _noise_leads(f))
    return (f"Does this ECG show any kind of noises in lead {lead}?",
            _yn(lead in _noise_leads(f)), ["noise"])


def _t29(f, rng):
    return "Does this ECG show any kind of noises?", _yn(bool(f.noise)), ["noise"]


def _t30(f, rng):
    pair = _pair(rng, NOISES, f.noise)
    return f"Which noise does this ECG show, {pair[0]} or {pair[1]}?", _chosen(pair, f.noise), \
        list(pair)


def _t31(f, rng):
    lead = _either(rng, LEADS, _noise_leads(f))
    here = {n for n, leads in f.noise.items() if lead in leads}
    pair = _pair(rng, NOISES, here)
    return (f"Which noise does this ECG show in lead {lead}, {pair[0]} or {pair[1]}?",
            _chosen(pair, here), list(pair))


def _t32(f, rng):
    answer = _all_of(NOISES, f.noise)
    return "What kind of noises does this ECG show?", answer, answer


def _t33(f, rng):
    lead = _either(rng, LEADS, _noise_leads(f))
    answer = _all_of(NOISES, {n for n, leads in f.noise.items() if lead in leads})
    return f"What kind of noises does this ECG show in lead {lead}?", answer, answer


def _t35(f, rng):
    return ("Does this ECG show any kind of extra systoles?", _yn(f.extra_systole is not None),
            ["extrasystoles"])


def _t36(f, rng):
    es = _either(rng, EXTRA_SYSTOLES, {f.extra_systole})
    return f"Does this ECG show {es}?", _yn(es == f.extra_systole), [es]


def _t37(f, rng):
    pair = _pair(rng, EXTRA_SYSTOLES, {f.extra_systole})
    return (f"Which kind of extra systoles does this ECG show, {pair[0]} or {pair[1]}?",
            _chosen(pair, {f.extra_systole}), list(pair))


def _t38(f, rng):
    answer = [f.extra_systole or "none"]
    return "What kind of extra systole does this ECG show?", answer, answer


def _t106(f, rng):
    axis = _either(rng, AXES, {f.heart_axis})
    return f"Does this ECG show {axis}?", _yn(axis == f.heart_axis), [axis]


def _measured(f) -> list[str]:
    """Numeric features the ECG has (no P duration or PR interval without P waves)."""
    return [k for k in NUMERIC if k in f.numeric_class]


def _t107(f, rng):
    feat = str(rng.choice(_measured(f)))
    rng_name = _either(rng, RANGES, {f.numeric_class[feat]})
    return (f"Is the {feat} of this ECG {rng_name}?", _yn(f.numeric_class[feat] == rng_name),
            [feat])


def _t111(f, rng):
    pair = _pair(rng, RHYTHMS, f.scp_codes)
    return f"Which rhythm does this ECG show, {pair[0]} or {pair[1]}?", \
        _chosen(pair, f.scp_codes), list(pair)


def _t112(f, rng):
    pair = _pair(rng, CONDUCTION, f.scp_codes)
    return (f"Which conduction disturbance does this ECG show, {pair[0]} or {pair[1]}?",
            _chosen(pair, f.scp_codes), list(pair))


def _t114(f, rng):
    pair = _pair(rng, AXES, {f.heart_axis})
    return f"Which heart axis does this ECG show, {pair[0]} or {pair[1]}?", \
        _chosen(pair, {f.heart_axis}), list(pair)


def _t121(f, rng):
    answer = _all_of(RHYTHMS, f.scp_codes)
    return "What kind of rhythm does this ECG show?", answer, answer


def _t122(f, rng):
    answer = _all_of(CONDUCTION, f.scp_codes)
    return "What kind of conduction disturbance does this ECG show?", answer, answer


def _t125(f, rng):
    return "What is the heart axis of this ECG?", [f.heart_axis], [f.heart_axis]


def _t126(f, rng):
    feat = str(rng.choice(_measured(f)))
    return f"What is the range of the {feat} of this ECG?", [f.numeric_class[feat]], [feat]


def _t127(f, rng):
    answer = sorted(k for k in _measured(f) if f.numeric_class[k] != RANGES[1]) or ["none"]
    return "Which numeric features of this ECG are out of the normal range?", answer, answer


def _t128(f, rng):
    code = _either(rng, LOCALISED, f.scp_codes)
    answer = sorted((lead_answer(x) for x in f.scp_leads.get(code, ())),
                    key=LEAD_ANSWERS.index) or ["none"]
    return f"In which leads does this ECG show {code}?", answer, [code]


def _t129(f, rng):
    noise = _either(rng, NOISES, f.noise)
    answer = sorted((lead_answer(x) for x in f.noise.get(noise, ())),
                    key=LEAD_ANSWERS.index) or ["none"]
    return f"In which leads does this ECG show {noise}?", answer, [noise]


def lead_answer(lead: str) -> str:
    return f"lead {lead}"


# --------------------------------------------------------------------------- two ECGs


def _new(a, b):
    return sorted(set(b.scp_codes) - set(a.scp_codes))


def _gone(a, b):
    return sorted(set(a.scp_codes) - set(b.scp_codes))


def _t131(a, b, rng):
    code = _either(rng, SCP_CODES, _new(a, b))
    return (f"Compared to the first ECG, does the second ECG newly show {code}?",
            _yn(code in _new(a, b)), [code])


def _t132(a, b, rng):
    code = _either(rng, SCP_CODES, _gone(a, b))
    return (f"Compared to the first ECG, does the second ECG no longer show {code}?",
            _yn(code in _gone(a, b)), [code])


def _t141(a, b, rng):
    return ("Which symptoms does the second ECG newly show compared to the first ECG?",
            _new(a, b) or ["none"], None)


def _t142(a, b, rng):
    return ("Which symptoms of the first ECG are no longer shown in the second ECG?",
            _gone(a, b) or ["none"], None)


def _t151(a, b, rng):
    both = set(a.scp_codes) & set(b.scp_codes)
    code = _either(rng, SCP_CODES, both)
    return f"Do both ECGs show {code}?", _yn(code in both), [code]


def _t161(a, b, rng):
    return ("Which symptoms do both ECGs show?",
            sorted(set(a.scp_codes) & set(b.scp_codes)) or ["none"], None)


def _abnormal(f) -> set[str]:
    return {k for k in _measured(f) if f.numeric_class[k] != RANGES[1]}


def _t68(a, b, rng):
    return ("What numeric features of the second ECG now have become normal as compared to "
            "the first ECG?", sorted(_abnormal(a) - _abnormal(b)) or ["none"], None)


def _t69(a, b, rng):
    return ("What numeric features of the second ECG are now considered abnormal values as "
            "compared to the first ECG?", sorted(_abnormal(b) - _abnormal(a)) or ["none"], None)


def _t70(a, b, rng):
    return ("What numeric features of the second ECG are still abnormal as compared to the "
            "first ECG?", sorted(_abnormal(a) & _abnormal(b)) or ["none"], None)


def _opts(*groups, none=False) -> tuple[str, ...]:
    out = tuple(x for g in groups for x in g)
    return out + ("none",) if none else out


SV, SC, SQ = "single-verify", "single-choose", "single-query"
CCV, CCQ = "comparison_consecutive-verify", "comparison_consecutive-query"
CIV, CIQ = "comparison_irrelevant-verify", "comparison_irrelevant-query"

TEMPLATES: tuple[Template, ...] = (
    Template(26, SV, "noise", YES_NO, _t26),
    Template(28, SV, "noise", YES_NO, _t28),
    Template(29, SV, "noise", YES_NO, _t29),
    Template(30, SC, "noise", _opts(NOISES, none=True), _t30),
    Template(31, SC, "noise", _opts(NOISES, none=True), _t31),
    Template(32, SQ, "noise", _opts(NOISES, none=True), _t32),
    Template(33, SQ, "noise", _opts(NOISES, none=True), _t33),
    Template(35, SV, "extra_systole", YES_NO, _t35),
    Template(36, SV, "extra_systole", YES_NO, _t36),
    Template(37, SC, "extra_systole", _opts(EXTRA_SYSTOLES, none=True), _t37),
    Template(38, SQ, "extra_systole", _opts(EXTRA_SYSTOLES, none=True), _t38),
    Template(101, SV, "scp_code", YES_NO, _t101),
    Template(102, SV, "scp_code", YES_NO, _t102),
    Template(106, SV, "heart_axis", YES_NO, _t106),
    Template(107, SV, "numeric_feature", YES_NO, _t107),
    Template(111, SC, "scp_code", _opts(RHYTHMS, none=True), _t111),
    Template(112, SC, "scp_code", _opts(CONDUCTION, none=True), _t112),
    Template(114, SC, "heart_axis", _opts(AXES, none=True), _t114),
    Template(121, SQ, "scp_code", _opts(RHYTHMS), _t121),
    Template(122, SQ, "scp_code", _opts(CONDUCTION, none=True), _t122),
    Template(125, SQ, "heart_axis", _opts(AXES), _t125),
    Template(126, SQ, "numeric_feature", _opts(RANGES), _t126),
    Template(127, SQ, "numeric_feature", _opts(NUMERIC, none=True), _t127),
    Template(128, SQ, "scp_code", _opts(LEAD_ANSWERS, none=True), _t128),
    Template(129, SQ, "noise", _opts(LEAD_ANSWERS, none=True), _t129),
    Template(131, CCV, "scp_code", YES_NO, _t131),
    Template(132, CCV, "scp_code", YES_NO, _t132),
    Template(141, CCQ, "scp_code", _opts(SCP_CODES, none=True), _t141),
    Template(142, CCQ, "scp_code", _opts(SCP_CODES, none=True), _t142),
    Template(151, CIV, "scp_code", YES_NO, _t151),
    Template(161, CIQ, "scp_code", _opts(SCP_CODES, none=True), _t161),
    Template(68, CIQ, "numeric_feature", _opts(NUMERIC, none=True), _t68),
    Template(69, CIQ, "numeric_feature", _opts(NUMERIC, none=True), _t69),
    Template(70, CIQ, "numeric_feature", _opts(NUMERIC, none=True), _t70),
)
BY_ID = {t.template_id: t for t in TEMPLATES}


def single_templates() -> list[Template]:
    return [t for t in TEMPLATES if not t.comparison]


def comparison_templates(kind: str) -> list[Template]:
    """``kind``: ``"consecutive"`` (same patient) or ``"irrelevant"`` (two patients)."""
    return [t for t in TEMPLATES if t.question_type.startswith(f"comparison_{kind}")]


def all_answers() -> list[str]:
    """Every answer string a template can produce, in first-seen order."""
    seen: dict[str, None] = {}
    for t in TEMPLATES:
        for o in t.options:
            seen.setdefault(o, None)
    return list(seen)


def ask(template: Template, rng: np.random.Generator, *facts) -> Answer:
    """Instantiate ``template`` on one (or, for comparisons, two) ECG facts."""
    return template.make(*facts, rng)
