"""`ecgqa chat`: question kinds, answers on a tiny adapter, few-shot adaptation, the REPL."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from ecgqa.chat import (
    DISCLAIMER,
    NOT_SURE,
    ChatError,
    Session,
    classify_question,
    listed_options,
    match_template,
)
from ecgqa.cli import main
from tests.conftest import ECGQA, REAL, ROOT, write_real_index

TINY = ROOT / "configs" / "meta" / "tiny.yaml"
ECG = REAL / "ptbxl" / "00001_lr.hea"             # PTB-XL ecg_id 1, 100 Hz
ECG2 = REAL / "cinc2021" / "E07509.hea"          # Challenge .hea + .mat, 500 Hz
YES_NO_Q = "Does this ECG show sinus rhythm?"


@pytest.fixture(scope="module")
def session(tiny_adapter) -> Session:
    return Session([ECG], tiny_adapter)


# --------------------------------------------------------------------------- question kinds


@pytest.mark.parametrize("question", [
    YES_NO_Q, "is the heart axis normal", "Are there any extra systoles?",
    "Has the QT interval been prolonged?", "Can you see atrial fibrillation?",
    "Compared to the first ECG, does the second ECG newly show inverted t-waves?",
])
def test_yes_no_questions_are_scored_over_yes_and_no(question):
    kind = classify_question(question)
    assert kind.kind == "yes/no" and set(kind.options) == {"yes", "no"}


def test_ecgqa_questions_of_the_real_release_get_their_kind():
    shard = json.loads((ECGQA / "ptbxl" / "template" / "test" / "80000.json").read_text())
    for s in shard[:200]:
        kind = classify_question(s["question"])
        if s["question_type"].endswith("verify"):
            assert kind.kind == "yes/no", s["question"]
        elif s["template_id"] in (68, 69, 70):
            assert kind.kind == "template" and kind.template_id == s["template_id"]
            assert set(s["answer"]) <= set(kind.options) and kind.comparison


def test_which_of_questions_list_their_options():
    assert listed_options("Which noise does this ECG show, baseline drift or static noise?") \
        == ("baseline drift", "static noise")
    assert listed_options("Which rhythm is it, sinus rhythm, atrial fibrillation, or "
                          "atrial flutter?") == ("sinus rhythm", "atrial fibrillation",
                                                 "atrial flutter")
    assert listed_options("Compared to the first ECG, which noise does the second ECG show, "
                          "burst noise or static noise?") == ("burst noise", "static noise")
    vocab = ["sinus rhythm", "atrial fibrillation", "rhythm"]
    assert listed_options("Is the rhythm Sinus Rhythm or atrial fibrillation?", vocab) == \
        ("sinus rhythm", "atrial fibrillation")      # longest known term, vocabulary spelling
    assert listed_options("Is the rhythm regular or not?") == ()   # no known first option
    kind = classify_question("Which heart axis does this ECG show, left axis deviation or "
                             "normal heart axis?")
    assert kind.kind == "choice" and kind.options == ("left axis deviation", "normal heart axis")


def test_template_questions_take_the_templates_answer_classes():
    from ecgqa.synth.ecg import RHYTHMS

    kind = classify_question("What kind of rhythm does this ECG show?")
    assert (kind.kind, kind.template_id, kind.options) == ("template", 121, RHYTHMS)
    assert match_template("In which leads does this ECG show inverted t-waves?") == 128
    assert match_template("what is the range of the qt interval of this ecg") == 126
    assert classify_question("Describe the T waves.").kind == "open"
    with pytest.raises(ChatError, match="empty question"):
        classify_question("  ? ")


@pytest.mark.parametrize("question, tid, asked", [
    ("What rhythm does this ECG show?", 121, "what kind of rhythm does this ecg show?"),
    ("What is the rhythm?", 121, "what kind of rhythm does this ecg show?"),
    ("Which conduction problem is there?", 122,
     "what kind of conduction disturbance does this ecg show?"),
    ("What about the axis", 125, "what is the heart axis of this ecg?"),
    ("How long is the QRS?", 126, "what is the range of the qrs duration of this ecg?"),
    ("What's the QTc like?", 126, "what is the range of the qt corrected of this ecg?"),
    ("What is the heart rate?", 126, "what is the range of the rr interval of this ecg?"),
    ("Which values are abnormal?", 127,
     "which numeric features of this ecg are out of the normal range?"),
    ("Any premature beats here?", 38, "what kind of extra systole does this ecg show?"),
])
def test_free_questions_map_to_the_closest_known_question(question, tid, asked):
    """The model is asked the known question's own wording and scores its options, so
    a free-form question gets probabilities, never babble."""
    from ecgqa.chat import match_template
    from ecgqa.synth.questions import BY_ID

    kind = classify_question(question)
    assert (kind.kind, kind.template_id, kind.asked_as) == ("template", tid, asked)
    assert kind.options == BY_ID[tid].options
    assert match_template(asked) == tid or tid == 126 and "range of the" in asked


def test_question_kinds_agree_with_the_data_layers_template_table():
    """chat's query patterns and closest-kind wordings are checked against the synthetic
    template table (ecgqa.synth.questions.TEMPLATES), not restated unchecked: every query
    question a template writes is recognised as a template with the same answer options,
    and every wording chat asks the model is one its template writes."""
    from ecgqa.chat.questions import _CLOSEST_KINDS, _TEMPLATE_PATTERNS, match_template
    from ecgqa.synth.ecg import sample_facts
    from ecgqa.synth.questions import BY_ID, TEMPLATES, ask

    rng = np.random.default_rng(0)
    facts = [sample_facts(rng) for _ in range(80)]
    written: dict[int, set[str]] = {t.template_id: set() for t in TEMPLATES}
    for t in TEMPLATES:
        for i, f in enumerate(facts):
            made = ask(t, rng, *((f, facts[-1 - i]) if t.comparison else (f,)))
            if made is not None:
                written[t.template_id].add(made[0])
    for tid, _ in _TEMPLATE_PATTERNS:
        assert written[tid], f"template {tid} wrote no question"
    for t in TEMPLATES:
        for question in written[t.template_id]:
            found = match_template(question)
            if t.question_type.endswith("query"):
                assert found is not None, (t.template_id, question)
            assert found is None or BY_ID[found].options == t.options, (question, found)
    for tid, wording, _ in _CLOSEST_KINDS:
        assert wording + "?" in {q.lower() for q in written[tid]}, (tid, wording)


# --------------------------------------------------------------------------- answers


def test_signals_match_the_training_preprocessing(session, tmp_path):
    """The chat input equals what SignalCache feeds the model in training and evaluation."""
    from ecgqa.qa.resolve import RecordsIndex

    cache = session.model.signal_cache(RecordsIndex(write_real_index(tmp_path / "i.csv")))
    want_sig, want_mask = cache.get(1)
    sig, mask = session.signals.get(0)
    np.testing.assert_array_equal(sig, want_sig)
    np.testing.assert_array_equal(mask, want_mask)


def test_closed_answer_has_option_probabilities_and_the_disclaimer(session):
    a = session.ask(YES_NO_Q)
    assert a.kind == "yes/no" and {o.text for o in a.options} == {"yes", "no"}
    assert abs(sum(o.prob for o in a.options) - 1) < 1e-5
    assert a.options[0].prob >= a.options[1].prob and a.confidence == a.options[0].prob
    assert a.answer == (a.options[0].text if a.confidence >= session.threshold else NOT_SURE)
    text = a.format()
    assert text.splitlines()[-1] == DISCLAIMER and "yes" in text and "no" in text


def test_not_sure_below_the_threshold(tiny_adapter):
    s = Session([ECG], tiny_adapter, threshold=0.0)
    a = s.ask(YES_NO_Q)
    assert a.answer == a.options[0].text
    s.threshold = min(1.0, a.confidence + 1e-3)
    b = s.ask(YES_NO_Q)
    assert b.answer == NOT_SURE and b.options == a.options
    assert "threshold" in b.format()


def test_open_questions_say_what_can_be_asked_unless_generation_is_asked_for(tiny_adapter,
                                                                          session):
    out = io.StringIO()
    a = session.ask("Describe the T waves.", stream=out)
    assert a.kind == "open" and a.options == [] and a.confidence is None
    assert out.getvalue() == "" and "what kind of rhythm does this ecg show?" in a.answer
    gen = Session([ECG], tiny_adapter, generate=True)
    b = gen.ask("Describe the T waves.", stream=out)
    assert b.kind == "open" and out.getvalue().strip() == b.answer
    assert "what kind of rhythm" not in b.answer


def test_a_free_question_is_scored_as_its_closest_known_question(session):
    a = session.ask("What rhythm does this ECG show?")
    b = session.ask("What kind of rhythm does this ECG show?")
    assert a.kind == "template" and a.asked_as == "what kind of rhythm does this ecg show?"
    assert a.question == "What rhythm does this ECG show?" and b.asked_as is None
    assert [(o.text, o.prob) for o in a.options] == [(o.text, o.prob) for o in b.options]
    assert "asked as the known question" in a.format()


def test_leads_mask_the_other_leads_and_change_the_answer(tiny_adapter):
    s = Session([ECG], tiny_adapter)
    before = s.ask(YES_NO_Q).options
    assert s.set_leads("I,II") == ("I", "II")
    sig, mask = s.signals.get(0)
    assert mask.tolist() == [True, True] + [False] * 10 and not sig[2:].any() and sig[:2].any()
    after = s.ask(YES_NO_Q)
    assert after.leads == ["I", "II"] and after.options != before
    assert s.set_leads("all") is None
    assert s.ask(YES_NO_Q).options == before
    with pytest.raises(ChatError):
        s.set_leads("I,I")


def test_two_ecgs_answer_comparison_questions(tiny_adapter, session):
    s = Session([ECG, ECG2], tiny_adapter)
    a = s.ask("Do both ECGs show sinus rhythm?")
    assert a.kind == "yes/no" and abs(sum(o.prob for o in a.options) - 1) < 1e-5
    assert a.to_json()["record"] == [str(ECG), str(ECG2)]
    t = s.ask("Which symptoms do both ECGs show?")
    assert t.kind == "template" and len(t.options) > 10
    with pytest.raises(ChatError, match="two records"):
        session.ask("Do both ECGs show sinus rhythm?")


def test_shots_adapt_the_projector_on_the_examples(tiny_adapter, session, tmp_path):
    index = write_real_index(tmp_path / "records_index.csv")
    shots = tmp_path / "shots.json"
    labels = {1: "yes", 2: "no", 3: "yes", 6000: "no", 6001: "yes", 6002: "no"}
    shots.write_text(json.dumps([
        {"template_id": 101, "question_id": i, "sample_id": i, "question_type": "single-verify",
         "attribute_type": "scp_code", "question": YES_NO_Q, "answer": [ans],
         "ecg_id": [ecg_id], "attribute": ["sinus rhythm"]}
        for i, (ecg_id, ans) in enumerate(labels.items())]))
    s = Session([ECG], tiny_adapter, shots=shots, shots_records=index)
    r = s.shots
    assert r.n_examples == 6 and r.steps >= 1 and r.loss_after < r.loss_before
    assert s.ask(YES_NO_Q).options != session.ask(YES_NO_Q).options
    assert s.ask(YES_NO_Q).shots["n_examples"] == 6
    limited = Session([ECG], tiny_adapter, shots=shots, max_shots=2)   # index found beside it
    assert limited.shots.n_examples == 2
    with pytest.raises(ChatError, match="ecg_id 99"):
        bad = json.loads(shots.read_text())
        bad[0]["ecg_id"] = [99]
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        Session([ECG], tiny_adapter, shots=tmp_path / "bad.json")


# --------------------------------------------------------------------------- command line


def test_one_shot_json(tiny_adapter, capsys):
    assert main(["chat", "--ecg", str(ECG), "--adapter", str(tiny_adapter),
                 "--question", YES_NO_Q, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"answer", "options", "confidence", "record", "adapter"} <= set(out)
    assert abs(sum(o["prob"] for o in out["options"]) - 1) < 1e-5
    assert {o["text"] for o in out["options"]} == {"yes", "no"}
    assert out["record"] == str(ECG) and out["adapter"] == str(tiny_adapter)
    assert out["disclaimer"] == DISCLAIMER


def test_one_shot_text_ends_with_the_disclaimer(tiny_adapter, capsys):
    assert main(["chat", "--ecg", str(ECG), "--adapter", str(tiny_adapter),
                 "--question", "Describe the T waves.", "--generate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer:") and out.strip().splitlines()[-1] == DISCLAIMER


@pytest.mark.parametrize("argv, message", [
    (["--ecg", str(REAL / "code15" / "9190_all_data_is_zero.hea")], "9190_all_data_is_zero"),
    (["--ecg", "no/such/record.hea"], "record"),
    (["--adapter", "{tmp}"], "not a saved adapter"),
    (["--question", "Do both ECGs show sinus rhythm?"], "two records"),
    (["--json"], "--json needs --question"),
    (["--threshold", "1.5"], "--threshold"),
    (["--shots", "{tmp}/missing.json"], "--shots"),
    (["--ecg", str(ECG), "--ecg", str(ECG), "--ecg", str(ECG)], "one record, or two"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tiny_adapter, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["chat"] + ([] if "--ecg" in argv else ["--ecg", str(ECG)])
    base += [] if "--adapter" in argv else ["--adapter", str(tiny_adapter)]
    if "--question" not in argv and "--json" not in argv:
        argv += ["--question", YES_NO_Q]
    assert main(base + argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and message in err, err


def test_the_repl_answers_plots_restricts_leads_and_survives_bad_commands(tiny_adapter, tmp_path):
    import pexpect  # the dev extra installs it

    child = pexpect.spawn(sys.executable, ["-m", "ecgqa", "chat", "--ecg", str(ECG),
                                           "--adapter", str(tiny_adapter)],
                          cwd=str(tmp_path), env={"PYTHONPATH": str(ROOT), "TERM": "dumb",
                                                  "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
                          encoding="utf-8", timeout=180)
    try:
        child.expect("heart rate")                         # the record summary
        child.expect("ecg> ")
        child.sendline(YES_NO_Q)
        child.expect(r"answer: (yes|no|not sure)")
        child.expect(DISCLAIMER)
        child.expect("ecg> ")
        child.sendline("Describe the T waves.")           # open: what can be asked
        child.expect("answer: I can only answer questions with known answer options")
        child.expect(DISCLAIMER)
        child.sendline("/plot")
        child.expect(r"wrote (\S+\.png)")
        assert (tmp_path / child.match.group(1)).stat().st_size > 10_000
        child.sendline("/leads I,II")
        child.expect("leads: I,II")
        child.sendline("/frobnicate")
        child.expect("error: unknown command /frobnicate")
        child.sendline("/leads X9")
        child.expect("error: ")
        child.sendline("Do both ECGs show sinus rhythm?")
        child.expect("error: this question compares two ECGs")
        child.sendline(YES_NO_Q)                            # still running
        child.expect(DISCLAIMER)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
