"""ECG-QA-style questions about synthetic ECGs, answered from their ground truth; the
templates that keep ECG-QA's ids are checked against the real ECG-QA files."""

from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from ecgqa.qa.ecgqa import QUESTION_TYPES
from ecgqa.synth import questions as Q
from ecgqa.synth.ecg import EcgFacts, sample_facts
from tests.conftest import ECGQA

NORMAL = "within the normal range"
N_FACTS = 200


def _facts(**changes) -> EcgFacts:
    """A clean normal ECG; ``changes`` replace fields (no beat plan: questions never read it)."""
    base = EcgFacts(scp_codes=("sinus rhythm",), scp_leads={}, noise={}, extra_systole=None,
                    heart_axis="normal heart axis", axis_deg=45.0,
                    numeric={k: 0.0 for k in Q.NUMERIC},
                    numeric_class={k: NORMAL for k in Q.NUMERIC}, heart_rate_bpm=70.0,
                    age=50, sex="male", plan=None)
    return replace(base, **changes)


def _ask(template_id: int, *facts, seed: int = 0):
    return Q.ask(Q.BY_ID[template_id], np.random.default_rng(seed), *facts)


@pytest.fixture(scope="module")
def sampled() -> list[EcgFacts]:
    return [sample_facts(np.random.default_rng(i)) for i in range(N_FACTS)]


@pytest.fixture(scope="module")
def real_ecgqa():
    with open(ECGQA / "ptbxl" / "answers.csv", newline="") as f:
        answers = {row["class"] for row in csv.DictReader(f)}
    with open(ECGQA / "ptbxl" / "answers_for_each_template.csv", newline="") as f:
        classes = {int(r["template_id"]): set(ast.literal_eval(r["classes"]))
                   for r in csv.DictReader(f)}
    samples = [s for shard in sorted((ECGQA / "ptbxl" / "template").glob("*/*.json"))
               for s in json.loads(shard.read_text())]
    return answers, classes, samples


# --------------------------------------------------------------------------- the table


def test_template_ids_are_unique_and_types_are_ecgqas():
    assert len(Q.BY_ID) == len(Q.TEMPLATES)
    assert {t.question_type for t in Q.TEMPLATES} == set(QUESTION_TYPES)
    for t in Q.TEMPLATES:
        assert t.comparison == t.question_type.startswith("comparison")
        assert len(set(t.options)) == len(t.options) and t.options, t.template_id


def test_single_and_comparison_templates_partition_the_table():
    single = Q.single_templates()
    consecutive, irrelevant = Q.comparison_templates("consecutive"), Q.comparison_templates(
        "irrelevant")
    assert sorted(t.template_id for t in single + consecutive + irrelevant) == \
        sorted(Q.BY_ID)
    assert all(t.question_type.startswith("single") for t in single)
    assert all("consecutive" in t.question_type for t in consecutive)
    assert all("irrelevant" in t.question_type for t in irrelevant)


def test_all_answers_lists_every_option_once_in_first_seen_order():
    answers = Q.all_answers()
    assert len(answers) == len(set(answers))
    assert set(answers) == {o for t in Q.TEMPLATES for o in t.options}
    first_seen = list(dict.fromkeys(o for t in Q.TEMPLATES for o in t.options))
    assert answers == first_seen


def test_every_answer_is_ecgqas_and_ecgqa_ids_keep_ecgqas_answer_classes(real_ecgqa):
    answers, classes, _ = real_ecgqa
    assert set(Q.all_answers()) <= answers
    for t in Q.TEMPLATES:
        if t.template_id in classes:                  # an ECG-QA template: its answers
            assert set(t.options) <= classes[t.template_id], t.template_id
        else:                                         # a new one: never an ECG-QA id
            assert t.template_id >= 101, t.template_id


def test_ecgqa_templates_keep_ecgqas_wording(real_ecgqa, sampled):
    """The shards here hold templates 26, 28 (train) and 68-70 (valid, test)."""
    _, _, samples = real_ecgqa
    real = {}
    for s in samples:
        real.setdefault(s["template_id"], set()).add(s["question"])
    for tid in (68, 69, 70):
        question, _, attribute = _ask(tid, sampled[0], sampled[1])
        assert real[tid] == {question} and attribute is None

    def skeleton(question):
        return re.sub(r" in lead (I|II|III|aVR|aVL|aVF|V[1-6])\?$", " in lead L?",
                      re.sub("|".join(Q.NOISES), "N", question))

    for tid in (26, 28):
        ours = {skeleton(_ask(tid, f, seed=i)[0]) for i, f in enumerate(sampled[:50])}
        assert ours == {skeleton(q) for q in real[tid]}, tid
        leads = {re.search(r"lead (\S+)\?$", q).group(1) for q in real[tid]}
        assert leads <= set(Q.LEADS)


@pytest.mark.xfail(strict=True, reason="synthetic template 28 (and 29) stores the attribute "
                   "'noise'; ECG-QA's template 28 stores 'any kind of noises', so merged real "
                   "and synthetic questions give two classes for one question")
def test_ecgqa_templates_keep_ecgqas_attributes(real_ecgqa, sampled):
    _, _, samples = real_ecgqa
    for tid in (26, 28):
        real = {tuple(s["attribute"]) for s in samples if s["template_id"] == tid}
        ours = {tuple(_ask(tid, f, seed=i)[2]) for i, f in enumerate(sampled[:50])}
        assert ours <= real, (tid, ours - real)


# --------------------------------------------------------------------------- any ECG


def _check(template, result, facts):
    assert result is not None, template.template_id
    question, answer, attribute = result
    tid = template.template_id
    assert isinstance(question, str) and question.endswith("?") and "{" not in question
    assert answer and len(set(answer)) == len(answer), (tid, answer)
    assert set(answer) <= set(template.options), (tid, answer)
    assert "none" not in answer or answer == ["none"], (tid, answer)
    verify, choose = template.question_type.endswith("verify"), template.question_type.endswith(
        "choose")
    if verify:
        assert answer in (["yes"], ["no"]), (tid, answer)
    if choose:                            # "A or B?": A, B, both, or none of them
        a, b = attribute
        assert a != b and f"{a} or {b}?" in question and set(answer) <= {a, b, "none"}
    if template.question_type.endswith("query") and template.comparison:
        assert attribute is None          # as ECG-QA's comparison queries
    else:
        assert attribute and all(isinstance(x, str) for x in attribute), tid


def test_every_single_template_answers_every_sampled_ecg(sampled):
    for i, facts in enumerate(sampled):
        rng = np.random.default_rng(i)
        for t in Q.single_templates():
            _check(t, Q.ask(t, rng, facts), facts)


def test_every_comparison_template_answers_sampled_pairs(sampled):
    rng = np.random.default_rng(0)
    for a, b in zip(sampled[::2], sampled[1::2]):
        for kind in ("consecutive", "irrelevant"):
            for t in Q.comparison_templates(kind):
                _check(t, Q.ask(t, rng, a, b), (a, b))


def test_the_same_random_state_asks_the_same_question(sampled):
    for t in Q.TEMPLATES:
        facts = sampled[:2] if t.comparison else sampled[:1]
        assert _ask(t.template_id, *facts, seed=5) == _ask(t.template_id, *facts, seed=5)


# --------------------------------------------------------------------------- true answers


def _lead(question):
    return re.search(r"in lead (\S+?)[,?]", question).group(1)


def _named(question, pool):
    """The longest item of ``pool`` that the question names."""
    return max((p for p in pool if p in question), key=len)


def _yes(tid, facts, question, attribute):
    """The true yes/no of a verify question, read from the question and the facts alone."""
    f = facts[0]
    noise_leads = {lead for leads in f.noise.values() for lead in leads}
    if tid == 101:
        return attribute[0] in f.scp_codes
    if tid == 102:
        return _lead(question) in f.scp_leads.get(attribute[0], ())
    if tid == 26:
        return _lead(question) in f.noise.get(_named(question, Q.NOISES), ())
    if tid == 28:
        return _lead(question) in noise_leads
    if tid == 29:
        return bool(f.noise)
    if tid == 35:
        return f.extra_systole is not None
    if tid == 36:
        return _named(question, Q.EXTRA_SYSTOLES) == f.extra_systole
    if tid == 106:
        return _named(question, Q.AXES) == f.heart_axis
    if tid == 107:
        feat = _named(question, Q.NUMERIC)
        return f.numeric_class[feat] == _named(question, Q.RANGES)
    a, b = facts
    code = attribute[0]
    if tid == 131:
        return code in b.scp_codes and code not in a.scp_codes
    if tid == 132:
        return code in a.scp_codes and code not in b.scp_codes
    if tid == 151:
        return code in a.scp_codes and code in b.scp_codes
    raise AssertionError(f"no rule for template {tid}")


def test_verify_answers_are_true_of_the_facts(sampled):
    pairs = list(zip(sampled[::2], sampled[1::2]))
    for t in Q.TEMPLATES:
        if not t.question_type.endswith("verify"):
            continue
        seen = set()
        for i in range(len(pairs)):
            facts = pairs[i] if t.comparison else (sampled[i],)
            question, answer, attribute = _ask(t.template_id, *facts, seed=i)
            want = _yes(t.template_id, facts, question, attribute)
            assert answer == ["yes" if want else "no"], (t.template_id, question, facts)
            seen.add(answer[0])
        assert seen == {"yes", "no"}, t.template_id       # both answers occur


def test_verify_questions_are_balanced_when_the_ecg_has_the_attribute():
    """Half the time an attribute the ECG has, half one it lacks: no answer prior."""
    facts = _facts(scp_codes=("sinus rhythm", "first degree av block"))
    yes = sum(_ask(101, facts, seed=i)[1] == ["yes"] for i in range(400))
    # Binomial(400, 1/2): sd 10; 200 +- 60 is 6 sd (a fixed seed anyway)
    assert 140 <= yes <= 260
    assert all(_ask(29, _facts(), seed=i)[1] == ["no"] for i in range(20))   # a clean ECG


def test_query_answers_list_what_the_ecg_shows():
    noisy = _facts(noise={"static noise": ("V1", "I"), "baseline drift": ("I",)},
                   extra_systole="ventricular extrasystoles",
                   scp_codes=("atrial fibrillation", "complete left bundle branch block",
                              "inverted t-waves"),
                   scp_leads={"inverted t-waves": ("V5", "aVL", "I")},
                   heart_axis="left axis deviation",
                   numeric_class={**{k: NORMAL for k in Q.NUMERIC},
                                  "qrs duration": "above the normal range",
                                  "rr interval": "below the normal range"})
    assert _ask(32, noisy)[1] == ["baseline drift", "static noise"]
    assert _ask(32, _facts())[1] == ["none"]
    assert _ask(38, noisy)[1] == ["ventricular extrasystoles"] and _ask(38, _facts())[1] == [
        "none"]
    assert _ask(121, noisy)[1] == ["atrial fibrillation"]
    assert _ask(122, noisy)[1] == ["complete left bundle branch block"]
    assert _ask(122, _facts())[1] == ["none"]
    assert _ask(125, noisy)[1] == ["left axis deviation"]
    assert _ask(127, noisy)[1] == ["qrs duration", "rr interval"]
    assert _ask(127, _facts())[1] == ["none"]
    for seed in range(20):
        q, answer, attribute = _ask(126, noisy, seed=seed)
        assert answer == [noisy.numeric_class[attribute[0]]] and attribute[0] in q
        q, answer, attribute = _ask(128, noisy, seed=seed)      # in standard lead order
        assert answer == (["lead I", "lead aVL", "lead V5"] if attribute == ["inverted t-waves"]
                          else ["none"]), q
        q, answer, attribute = _ask(129, noisy, seed=seed)
        want = {"static noise": ["lead I", "lead V1"], "baseline drift": ["lead I"]}
        assert answer == want.get(attribute[0], ["none"]), q
        q, answer, _ = _ask(33, noisy, seed=seed)
        want = {"I": ["baseline drift", "static noise"], "V1": ["static noise"]}
        assert answer == want.get(_lead(q), ["none"]), q


def test_choose_answers_name_the_offered_options_the_ecg_shows():
    noisy = _facts(noise={"burst noise": ("II",)}, extra_systole="supraventricular extrasystoles")
    for seed in range(30):
        for tid, present in ((30, {"burst noise"}), (37, {"supraventricular extrasystoles"}),
                             (111, {"sinus rhythm"}), (114, {"normal heart axis"})):
            q, answer, pair = _ask(tid, noisy, seed=seed)
            assert answer == ([p for p in pair if p in present] or ["none"]), q
        q, answer, pair = _ask(31, noisy, seed=seed)
        here = {"burst noise"} if _lead(q) == "II" else set()
        assert answer == ([p for p in pair if p in here] or ["none"]), q


def test_comparison_queries_compare_the_first_ecg_with_the_second():
    def numeric(**classes):
        return {**{k: NORMAL for k in Q.NUMERIC}, **classes}

    first = _facts(scp_codes=("sinus rhythm", "first degree av block", "inverted t-waves"),
                   numeric_class=numeric(**{"qrs duration": "above the normal range",
                                            "rr interval": "below the normal range"}))
    second = _facts(scp_codes=("sinus tachycardia", "inverted t-waves", "long qt-interval"),
                    numeric_class=numeric(**{"rr interval": "below the normal range",
                                             "qt interval": "above the normal range"}))
    assert _ask(141, first, second)[1] == ["long qt-interval", "sinus tachycardia"]   # new
    assert _ask(142, first, second)[1] == ["first degree av block", "sinus rhythm"]   # gone
    assert _ask(161, first, second)[1] == ["inverted t-waves"]                        # both
    assert _ask(68, first, second)[1] == ["qrs duration"]          # became normal
    assert _ask(69, first, second)[1] == ["qt interval"]           # became abnormal
    assert _ask(70, first, second)[1] == ["rr interval"]           # still abnormal
    same = _facts()
    for tid in (141, 142, 68, 69, 70):
        assert _ask(tid, same, same)[1] == ["none"], tid


def test_features_without_p_waves_are_never_asked_about():
    """In fibrillation there is no P duration or PR interval to ask about."""
    no_p = [k for k in Q.NUMERIC if k not in ("p duration", "pr interval")]
    af = _facts(scp_codes=("atrial fibrillation",), numeric={k: 0.0 for k in no_p},
                numeric_class={k: "above the normal range" for k in no_p})
    for seed in range(30):
        for tid in (107, 126):
            q = _ask(tid, af, seed=seed)[0]
            assert "p duration" not in q and "pr interval" not in q
    assert _ask(127, af)[1] == sorted(no_p)
