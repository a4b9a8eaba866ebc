"""Prompt rendering (the measured-values slot of prompts/qa.yaml), prompt files, tokenising
prompts and answers around the ECG slots, and reading generated answers."""

from __future__ import annotations

import dataclasses

import pytest

from ecgqa.qa.collate import (
    LAYOUTS,
    MARKER,
    PromptError,
    PromptTemplate,
    encode_answer,
    encode_in_context,
    encode_prompt,
    encode_sample,
    encode_without_ecg,
    parse_answer,
)

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


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("text,match", [
    ("layouts:\n  question_first:\n    single: 'Q {question} <ecg> A:'\n",       # no comparison
     "no layout 'question_first' with 'single' and 'comparison'"),
    ("layouts:\n  ecg_first:\n    single: 'a'\n    comparison: 'b'\n",          # other layout
     "no layout 'question_first'"),
    ("layouts: [question_first]\n", "no layout 'question_first'"),
    ("- a list\n", "no layout 'question_first'"),
    ("", "no layout 'question_first'"),
    ("layouts: {question_first: {single: 'x'\n", "no layout 'question_first'"),   # bad YAML
])
def test_a_malformed_prompt_file_is_a_prompt_error_naming_it(tmp_path, text, match):
    f = tmp_path / "qa.yaml"
    f.write_text(text)
    with pytest.raises(PromptError, match=match) as err:
        PromptTemplate.load("question_first", f)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_a_prompt_file_that_cannot_be_read_is_a_prompt_error(tmp_path):
    with pytest.raises(PromptError, match="cannot read prompt file"):
        PromptTemplate.load("question_first", tmp_path / "missing.yaml")
    with pytest.raises(PromptError, match="cannot read prompt file"):
        PromptTemplate.load("question_first", tmp_path)                  # a folder


def test_an_unknown_layout_of_the_shipped_file_names_the_layouts():
    with pytest.raises(PromptError, match="layouts: question_first, ecg_first"):
        PromptTemplate.load("answer_first")


def test_a_prompt_file_that_is_not_utf8_is_a_prompt_error(tmp_path):
    f = tmp_path / "qa.yaml"
    f.write_bytes(b"layouts:\n  question_first:\n    single: '\xff {question} <ecg>'\n"
                  b"    comparison: '{question} <ecg> <ecg>'\n")
    with pytest.raises(PromptError, match="not UTF-8") as err:
        PromptTemplate.load("question_first", f)
    assert str(err.value).startswith(str(f)) and "\n" not in str(err.value)


def test_a_layout_prompt_that_is_not_text_is_refused(tmp_path):
    f = tmp_path / "qa.yaml"
    f.write_text("layouts:\n  question_first:\n    single: 5\n    comparison: [1]\n")
    with pytest.raises(PromptError, match="not a string"):
        PromptTemplate.load("question_first", f)


@pytest.mark.parametrize("single,comparison,match", [
    ("Q <ecg> A:", "Q {question} <ecg> <ecg> A:", r"question_first.single has no \{question\}"),
    ("Q {question} <ecg> A:", "<ecg> <ecg> A:", r"question_first.comparison has no \{question\}"),
    ("Q {question} A:", "Q {question} <ecg> <ecg> A:", "single must hold <ecg> once"),
    ("Q {question} <ecg> A:", "Q {question} <ecg> A:", "comparison must hold <ecg> twice"),
])
def test_a_layout_without_its_question_or_ecg_slots_is_refused(tmp_path, single, comparison,
                                                                 match):
    f = tmp_path / "qa.yaml"
    f.write_text(f"layouts:\n  question_first:\n    single: '{single}'\n"
                 f"    comparison: '{comparison}'\n")
    with pytest.raises(PromptError, match=match) as err:
        PromptTemplate.load("question_first", f)
    assert str(err.value).startswith(str(f)) and "\n" not in str(err.value)


def test_the_shipped_layouts_have_their_slots():
    for layout in LAYOUTS:
        t = PromptTemplate.load(layout)
        assert "{question}" in t.single and "{question}" in t.comparison


# --------------------------------------------------------------------------- tokenising


@pytest.fixture(scope="module")
def tok():
    from ecgqa.models.llm import build_tiny_tokenizer

    return build_tiny_tokenizer()


QUESTION = "Does this ECG show atrial fibrillation?"


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _find(seq, sub) -> int:
    """Index of the first occurrence of ``sub`` in ``seq`` as a contiguous run, else -1."""
    seq, sub = list(seq), list(sub)
    return next((i for i in range(len(seq) - len(sub) + 1) if seq[i: i + len(sub)] == sub), -1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2])
def test_pieces_are_the_prompts_tokens_split_at_the_ecg_slots(tok, layout, n):
    """The tiny tokenizer splits at white space, so the pieces joined are the prompt's
    tokens with the slots left out; BOS starts the first piece and nowhere else."""
    t = PromptTemplate.load(layout)
    enc = encode_prompt(t, tok, QUESTION, n)
    assert enc.n_ecgs == n and len(enc.pieces) == n + 1 and enc.answer == () and enc.shared == 0
    joined = [i for p in enc.pieces for i in p]
    assert joined[0] == tok.bos_token_id and joined.count(tok.bos_token_id) == 1
    assert joined[1:] == _ids(tok, t.text(QUESTION, n).replace(MARKER, " "))
    assert tok.eos_token_id not in joined and tok.unk_token_id not in joined
    # the question is read before the ECG (question_first) or after it (ecg_first)
    where = 0 if layout == "question_first" else n
    assert _find(enc.pieces[where], _ids(tok, QUESTION)) >= 0
    assert all(_find(p, _ids(tok, QUESTION)) < 0 for i, p in enumerate(enc.pieces) if i != where)
    assert tok.decode(enc.pieces[-1]).endswith("answer :")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_counts_the_tokens_before_the_records_own_measured_values(tok, layout):
    """Two records asked one question share ``pieces[0][:shared]``: the prompt up to the
    measured values, the same tokens as the prompt without measurements."""
    t = PromptTemplate.load(layout)
    a = encode_prompt(t, tok, QUESTION, 1, [MEASURED])
    b = encode_prompt(t, tok, QUESTION, 1, [{"heart_rate_bpm": 130.0}])
    plain = encode_prompt(t, tok, QUESTION, 1)
    assert 0 < a.shared == b.shared < len(a.pieces[0])
    assert a.pieces[0][: a.shared] == b.pieces[0][: b.shared] == plain.pieces[0][: a.shared]
    assert a.pieces[0][a.shared:] != b.pieces[0][b.shared:]
    assert tok.decode(a.pieces[0][a.shared:]).startswith("measured : heart rate 72 bpm")
    joined = [i for p in a.pieces for i in p]         # the mark itself is no token
    assert joined[1:] == _ids(tok, t.text(QUESTION, 1, [MEASURED]).replace(MARKER, " "))
    has_question = _find(a.pieces[0][: a.shared], _ids(tok, QUESTION)) >= 0
    assert has_question == (layout == "question_first")


def test_a_comparison_shares_the_text_before_the_first_records_values(tok):
    t = PromptTemplate.load()
    a = encode_prompt(t, tok, QUESTION, 2, [MEASURED, MEASURED])
    b = encode_prompt(t, tok, QUESTION, 2, [{}, {}])
    assert a.shared == b.shared > 0 and a.pieces[0][: a.shared] == b.pieces[0][: b.shared]
    assert len(a.pieces) == 3


@pytest.mark.parametrize("n", [0, 3])
def test_a_question_is_about_one_or_two_ecgs(tok, n):
    with pytest.raises(PromptError, match=f"one or two ECGs, got {n}"):
        encode_prompt(PromptTemplate.load(), tok, QUESTION, n)


def test_a_marker_count_that_does_not_match_the_ecgs_is_refused(tok):
    t = PromptTemplate.load()
    with pytest.raises(PromptError, match="prompt has 2 <ecg> slots, question needs 1"):
        encode_prompt(t, tok, "What is <ecg>?", 1)            # a user typed the marker
    broken = dataclasses.replace(t, comparison=t.comparison.replace(MARKER, "", 1))
    with pytest.raises(PromptError, match="prompt has 1 <ecg> slots, question needs 2"):
        encode_prompt(broken, tok, QUESTION, 2)


def test_the_answer_is_its_tokens_then_eos(tok):
    t = PromptTemplate.load()
    assert encode_answer(t, tok, ["no"]) == (*_ids(tok, " no"), tok.eos_token_id)
    two = encode_answer(t, tok, ["static noise", "baseline drift"])    # in the order given
    assert two == (*_ids(tok, " static noise, baseline drift"), tok.eos_token_id)
    assert two.count(tok.eos_token_id) == 1


def test_no_answer_of_the_ecgqa_vocabulary_is_a_prefix_of_another(tok):
    """EOS ends every answer, so scoring "no" never counts the start of "not sure"."""
    import csv

    from tests.conftest import ECGQA

    with open(ECGQA / "ptbxl" / "answers.csv", newline="") as f:
        answers = [row["class"] for row in csv.DictReader(f)]
    t = PromptTemplate.load()
    encoded = {a: encode_answer(t, tok, [a]) for a in answers}
    assert len(set(encoded.values())) == len(answers)
    for a, ids in encoded.items():
        for b, other in encoded.items():
            assert a == b or other[: len(ids)] != ids, (a, b)


def test_encode_sample_adds_the_answer_for_training_only(tok):
    t = PromptTemplate.load()
    train = encode_sample(t, tok, QUESTION, 1, ["yes"], [MEASURED])
    ask = encode_sample(t, tok, QUESTION, 1, measured=[MEASURED])
    assert train.answer == encode_answer(t, tok, ["yes"]) and ask.answer == ()
    assert train.pieces == ask.pieces == encode_prompt(t, tok, QUESTION, 1, [MEASURED]).pieces
    assert train.shared == ask.shared > 0


@pytest.mark.parametrize("n", [1, 2])
def test_the_prompt_without_ecg_says_each_ecg_is_not_shown(tok, n):
    t = PromptTemplate.load()
    enc = encode_without_ecg(t, tok, QUESTION, n)
    assert enc.n_ecgs == 0 and enc.pieces[0][0] == tok.bos_token_id
    text = tok.decode(enc.pieces[0])
    assert text.count("( not shown )") == n and "fibrillation" in text


def test_in_context_examples_come_before_the_question_with_their_answers(tok):
    t = PromptTemplate.load()
    examples = [("Is the rhythm regular?", 1, ["yes"]),
                ("Does the second ECG newly show atrial flutter?", 2, ["no"])]
    enc = encode_in_context(t, tok, examples, QUESTION, 1)
    assert enc.n_ecgs == 1 + 2 + 1
    joined = [i for p in enc.pieces for i in p]
    assert joined[0] == tok.bos_token_id and joined.count(tok.bos_token_id) == 1
    text = tok.decode(joined[1:])
    assert text.count("cardiologist") == 1                       # the system text once
    order = [text.index(s) for s in ("regular? ecg : answer : yes",
                                     "atrial flutter? first ecg : second ecg : answer : no",
                                     "atrial fibrillation? ecg : answer :")]
    assert order == sorted(order) and text.endswith("fibrillation? ecg : answer :")


def test_in_context_measurements_go_to_their_own_example(tok):
    t = PromptTemplate.load()
    enc = encode_in_context(t, tok, [("Is the rhythm regular?", 1, ["yes"])], QUESTION, 1,
                            measured=[[{"heart_rate_bpm": 55.0}], [{"heart_rate_bpm": 130.0}]])
    text = tok.decode([i for p in enc.pieces for i in p][1:])
    assert text.index("heart rate 55 bpm") < text.index("answer : yes") \
        < text.index("heart rate 130 bpm")


def test_with_a_chat_template_the_template_wraps_the_prompt(tok):
    from ecgqa.models.llm import build_tiny_tokenizer

    chat = build_tiny_tokenizer()
    chat.chat_template = ("{% for m in messages %}<bos>user : {{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}model :{% endif %}")
    t = PromptTemplate.load()
    enc = encode_prompt(t, chat, QUESTION, 2)
    joined = [i for p in enc.pieces for i in p]
    assert joined.count(chat.bos_token_id) == 1 and joined[0] == chat.bos_token_id  # its own
    assert tok.decode(enc.pieces[0]).startswith("<bos> user :")
    assert tok.decode(enc.pieces[-1]).endswith("answer : model :") and len(enc.pieces) == 3


# --------------------------------------------------------------------------- parsing answers


OPTIONS = ["no", "not sure", "yes", "static noise", "baseline drift",
           "bigeminal pattern (unknown origin, supraventricular, or ventricular)"]


@pytest.mark.parametrize("text,expected", [
    ("no", {"no"}),
    ("Not sure.", {"not sure"}),                                  # case and a final period
    ("  static   noise ,baseline drift ", {"static noise", "baseline drift"}),
    ("baseline drift, static noise", {"static noise", "baseline drift"}),
    ("bigeminal pattern (unknown origin, supraventricular, or ventricular), no",
     {"bigeminal pattern (unknown origin, supraventricular, or ventricular)", "no"}),
    ("yes, yes", {"yes"}),
])
def test_parse_answer_reads_a_list_of_options(text, expected):
    assert parse_answer(text, OPTIONS) == frozenset(expected)


@pytest.mark.parametrize("text", ["", " . ", "maybe", "yes no", "yes, maybe", "nope",
                                  "static noise and baseline drift", "not"])
def test_parse_answer_refuses_anything_else(text):
    assert parse_answer(text, OPTIONS) is None


def test_parse_answer_keeps_the_options_own_spelling():
    assert parse_answer("static noise", ["Static Noise"]) == frozenset({"Static Noise"})
    assert parse_answer("a; b", ["a", "b"], separator=";") == frozenset({"a", "b"})


def test_any_pair_of_real_answers_joined_reads_back():
    import csv
    import itertools

    from tests.conftest import ECGQA

    with open(ECGQA / "ptbxl" / "answers.csv", newline="") as f:
        answers = [row["class"] for row in csv.DictReader(f)]
    for a, b in itertools.permutations(answers, 2):
        assert parse_answer(f"{a}, {b}", answers) == frozenset({a, b}), (a, b)
