"""Episode sampling: property tests (hypothesis) and the real ECG-QA shards."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgqa.qa.ecgqa import QaSample, load_ecgqa
from ecgqa.qa.episodes import EpisodeSampler, class_key, split_classes
from tests.conftest import ECGQA

ATTRS = ["atrial fibrillation", "static noise", "left axis deviation", "qrs duration",
         "sinus rhythm", "burst noise", "inverted t-waves", "none"]


@st.composite
def datasets(draw):
    """Random ECG-QA-like samples: templates x attributes x answers over shared records."""
    n_records = draw(st.integers(20, 120))
    n = draw(st.integers(30, 300))
    samples = []
    for i in range(n):
        comparison = draw(st.booleans()) and draw(st.booleans())
        rec = draw(st.integers(1, n_records))
        other = draw(st.integers(1, n_records - 1))
        ids = (rec, other if other < rec else other + 1) if comparison else (rec,)
        attr = None if comparison else tuple(draw(st.lists(st.sampled_from(ATTRS), min_size=1,
                                                           max_size=2, unique=True)))
        samples.append(QaSample(
            sample_id=i, template_id=draw(st.integers(1, 6)) + (60 if comparison else 0),
            question_id=0, question_type="comparison_irrelevant-query" if comparison
            else "single-verify", attribute_type="scp_code", question="q",
            answer=(draw(st.sampled_from(["yes", "no"])),), ecg_ids=ids, attribute=attr,
            split="train"))
    return samples


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), seed=st.integers(0, 2**31), by=st.sampled_from(["attribute",
                                                                        "template"]))
def test_no_hold_out_puts_every_class_in_meta_training(data, seed, by):
    """test_fraction 0 (an adapter for chat): every class trains, none is held out."""
    split = split_classes(data, test_fraction=0.0, seed=seed, by=by)
    assert split.meta_train == {class_key(s) for s in data}
    assert not split.meta_test and not split.dropped and not split.test_units


def test_a_hold_out_fraction_outside_0_1_is_refused():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
            split_classes([], test_fraction=bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), seed=st.integers(0, 2**31), way=st.integers(1, 3),
       shot=st.integers(1, 3), query=st.integers(1, 2), by=st.sampled_from(["attribute",
                                                                            "template"]))
def test_episode_properties(data, seed, way, shot, query, by):
    split = split_classes(data, seed=seed, by=by)
    # meta-train and meta-test classes are disjoint and share no held-out unit
    assert not split.meta_train & split.meta_test
    for key in split.meta_train:
        template, attrs, _ = key
        units = {a for a in attrs if a != "none"} or {f"template:{template}"}
        if by == "template":
            units = {f"template:{template}"}
        assert not units & split.test_units
    for classes in (split.meta_train, split.meta_test):
        try:
            sampler = EpisodeSampler(data, way, shot, query, classes=classes, seed=seed)
        except ValueError:
            continue                      # too few classes for this draw: nothing to check
        for i in range(3):
            try:
                ep = sampler.episode(i)
            except RuntimeError:
                continue
            again = EpisodeSampler(data, way, shot, query, classes=classes, seed=seed).episode(i)
            assert ep == again                                   # deterministic
            assert len(ep.classes) == way == len(set(ep.classes))
            assert set(ep.classes) <= set(classes)
            assert not ep.records("support") & ep.records("query")
            ids = [s.sample_id for s in ep.support + ep.query]
            assert len(ids) == len(set(ids))                     # without replacement
            for key in ep.classes:
                assert sum(class_key(s) == key for s in ep.support) == shot
                assert sum(class_key(s) == key for s in ep.query) == query
            support_records = [r for s in ep.support for r in s.ecg_ids]
            assert len(support_records) == len(set(support_records))


def test_seeds_change_episodes_and_indices_are_independent():
    qa = load_ecgqa(ECGQA, splits=["train"])
    cs = split_classes(qa.samples, seed=1)
    a = EpisodeSampler(qa.samples, 2, 2, 2, "single-verify", "train", classes=cs.meta_train,
                       seed=1)
    b = EpisodeSampler(qa.samples, 2, 2, 2, "single-verify", "train", classes=cs.meta_train,
                       seed=2)
    assert [a.episode(i) for i in range(5)] != [b.episode(i) for i in range(5)]
    assert a.episode(3) == list(a.episodes(2, start=2))[1]


def test_real_shards_give_leak_free_episodes():
    qa = load_ecgqa(ECGQA)
    cs = split_classes(qa.samples, seed=0)
    assert cs.meta_train and cs.meta_test and not cs.dropped
    held = {a for k in cs.meta_test for a in k[1]}
    seen = {a for k in cs.meta_train for a in k[1]}
    assert not held & seen                              # no held-out attribute in meta-train
    train = EpisodeSampler(qa.samples, 2, 5, 5, "single-verify", "train",
                           classes=cs.meta_train, seed=0)
    ep = train.episode(0)
    assert all(s.split == "train" for s in ep.support + ep.query)
    assert all(class_key(s) in cs.meta_train for s in ep.support + ep.query)
    assert all(i in qa.split_ecgs["train"] for s in ep.support + ep.query for i in s.ecg_ids)
    test = EpisodeSampler(qa.samples, 5, 5, 5, "comparison_irrelevant-query", "test",
                          classes=cs.meta_test, seed=0)
    ep = test.episode(7)
    assert not ep.records("support") & ep.records("query")
    assert train.capacity() > 0 and test.capacity() > 0


def test_too_few_classes_is_a_clear_error():
    qa = load_ecgqa(ECGQA, splits=["train"])
    with pytest.raises(ValueError, match="single-verify / train: only .* classes"):
        EpisodeSampler(qa.samples, 50, 5, 5, "single-verify", "train")


@pytest.mark.parametrize("n_way", [2, 5])
def test_same_question_episodes_ask_one_question_with_balanced_answers(n_way):
    """The ways are answers to one (template, attribute): every support and query sample
    asks the same question, each answer has k_shot support samples, so the support's
    majority answer is a tie (chance), and at least 2 answers are always present."""
    qa = load_ecgqa(ECGQA)
    cs = split_classes(qa.samples, seed=0)
    for qtype, split, classes in (("single-verify", "train", cs.meta_train),
                                  ("comparison_irrelevant-query", "test", cs.meta_test)):
        s = EpisodeSampler(qa.samples, n_way, 2, 1, qtype, split, classes=classes,
                           same_question=True, seed=0)
        assert all(len(g) >= 2 and len({k[:2] for k in g}) == 1 for g in s.groups)
        for i in range(10):
            ep = s.episode(i)
            assert 2 <= len(ep.classes) <= n_way
            questions = {(x.template_id, tuple(sorted(x.attribute or ())))
                         for x in ep.support + ep.query}
            assert len(questions) == 1
            counts = {}
            for x in ep.support:
                counts[class_key(x)] = counts.get(class_key(x), 0) + 1
            assert set(counts) == set(ep.classes) and set(counts.values()) == {2}
            assert {class_key(x) for x in ep.query} == set(ep.classes)
            assert not ep.records("support") & ep.records("query")
        assert s.capacity() > 0


def test_same_question_without_two_answers_is_a_clear_error():
    qa = load_ecgqa(ECGQA, splits=["train"])
    with pytest.raises(ValueError, match="no question has 2 answers"):
        EpisodeSampler(qa.samples, 2, 5000, 5, "single-verify", "train", same_question=True)


def test_the_support_majority_is_chance_only_when_the_ways_are_answers():
    """(template, attribute, answer) ways: the support's answer counts give most answers
    away; answers to one question: the majority guess is exactly chance."""
    from ecgqa.qa.episodes import support_majority

    qa = load_ecgqa(ECGQA)
    cs = split_classes(qa.samples, seed=0)
    kw = dict(classes=cs.meta_train, seed=0)
    classes = EpisodeSampler(qa.samples, 5, 2, 1, "single-verify", "train", **kw)
    answers = EpisodeSampler(qa.samples, 5, 2, 1, "single-verify", "train", same_question=True,
                             **kw)
    acc, chance = support_majority(classes.episode(i) for i in range(40))
    assert chance == pytest.approx(0.2) and acc > chance + 0.3
    acc, chance = support_majority(answers.episode(i) for i in range(40))
    assert acc == pytest.approx(chance) and 0 < chance <= 0.5
