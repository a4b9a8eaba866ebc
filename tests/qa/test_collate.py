"""Prompt rendering: the measured-values slot of prompts/qa.yaml."""

from __future__ import annotations

import dataclasses

import pytest

from ecgqa.qa.collate import LAYOUTS, MARKER, PromptError, PromptTemplate

MEASURED = {"heart_rate_bpm": 72.4, "rr_ms": 828.7, "pr_ms": 160.2, "qrs_ms": 95.5,
            "qt_ms": None, "qtc_ms": None, "qrs_axis_deg": None, "note": "no T end"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_measurements_the_slot_is_empty(layout):
    t = PromptTemplate.load(layout)
    assert t.has_measured
    for n in (1, 2):
        text = t.text("Is the rhythm regular?", n)
        assert "{" not in text and "Measured" not in text and text.count(MARKER) == n
        assert "\n\n" not in text.removeprefix(t.system)       # no empty line left behind


@pytest.mark.parametrize("layout", LAYOUTS)
def test_measured_values_come_before_the_first_ecg(layout):
    """Before the first ECG slot, so they stay in the prompt's reusable first piece; the
    values rounded to integers, the ones not measured left out."""
    t = PromptTemplate.load(layout)
    text = t.text("Is the rhythm regular?", 1, [MEASURED])
    line = "Measured: heart rate 72 bpm, RR 829 ms, PR 160 ms, QRS 96 ms\n"
    assert line in text and text.index(line) < text.index(MARKER)
    two = t.text("Is the rhythm regular?", 2, [MEASURED, {"heart_rate_bpm": 130.0}])
    first = two.index("Measured, first ECG: heart rate 72 bpm, RR 829 ms, PR 160 ms, QRS 96 ms\n")
    second = two.index("Measured, second ECG: heart rate 130 bpm\n")
    assert first < second < two.index(MARKER)


def test_nothing_measurable_is_said():
    t = PromptTemplate.load()
    empty = {k: None for k in MEASURED}
    assert "Measured: nothing measurable\n" in t.text("q?", 1, [empty])
    assert "Measured: nothing measurable\n" in t.text("q?", 1, [{"heart_rate_bpm": float("nan")}])


def test_measurements_need_a_slot_and_one_per_ecg():
    t = PromptTemplate.load()
    bare = dataclasses.replace(t, single=t.single.replace("{measured}", ""))
    assert not bare.has_measured
    with pytest.raises(PromptError, match="no {measured} slot"):
        bare.text("q?", 1, [MEASURED])
    with pytest.raises(PromptError, match="1 measurements for 2 ECGs"):
        t.text("q?", 2, [MEASURED])


def test_a_prompt_file_with_a_non_text_measured_line_is_refused(tmp_path):
    f = tmp_path / "qa.yaml"
    f.write_text("layouts:\n  question_first:\n    single: 'Q {question} <ecg> A:'\n"
                 "    comparison: 'Q {question} <ecg> <ecg> A:'\nmeasured: [1, 2]\n")
    with pytest.raises(PromptError, match="not a string"):
        PromptTemplate.load("question_first", f)
