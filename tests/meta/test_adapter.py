"""The shipped adapters, on the embedded Gemma 3 270M (really loaded): ``heldout`` (meta-
trained, some classes held out: the benchmark's) and ``default`` (chat's, every class)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from ecgqa.meta.adapter import SHIPPED_ADAPTERS, AdapterError, load_adapter
from ecgqa.meta.data import DataConfig, load_meta_data
from ecgqa.meta.loop import adapt, answer_terms, evaluate_episode, learner_for_test_time
from ecgqa.qa.collate import parse_answer


def test_the_shipped_adapter_adapts_on_a_support_set_and_answers(synth_qa, signal_cache_dir):
    model, algo, meta = load_adapter("heldout")
    saved = load_file(str(SHIPPED_ADAPTERS["heldout"] / "projector.safetensors"))
    for k, v in model.projector.state_dict().items():
        assert torch.equal(v, saved[k])
    assert type(model.llm).__name__ == "Gemma3ForCausalLM" and meta.inner_steps >= 1
    data = load_meta_data(DataConfig(qa=str(synth_qa), question_types=["single-verify"],
                                     n_way=2, k_shot=3, q_query=1, cache_dir=str(
                                         signal_cache_dir)), seed=0)
    signals = model.signal_cache(data.resolver, signal_cache_dir)
    episode = data.test.per_type("single-verify", 0)
    support = model.make_batch(episode.support, signals)
    learner = learner_for_test_time(algo)
    losses = adapt(model, learner, support, meta.eval_steps, model.prefix_cache(support),
                   first_order=True)
    with torch.no_grad():
        after = float(model.loss(support, projector=learner))
    assert after < 0.5 * losses[0], (losses, after)    # the meta-learned init adapts fast
    results = evaluate_episode(model, algo, episode, signals, meta.eval_steps,
                               vocab=data.data.vocab)
    terms = answer_terms([[tuple(o) for o in r.options] for r in results], data.data.vocab)
    for r in results:
        assert abs(sum(r.probs) - 1) < 1e-4
        # the adapted adapter answers in answer terms (no free text), and exact match is
        # whether those terms are the truth
        said = parse_answer(r.generated, terms)
        assert said is not None, r.generated
        assert r.exact_match == (said == frozenset(r.truth)), (r.generated, r.truth)


def test_a_folder_that_is_not_an_adapter_is_refused(tmp_path):
    import pytest

    with pytest.raises(AdapterError, match="not a saved adapter"):
        load_adapter(tmp_path)


def test_the_chat_default_holds_no_class_out_and_answers_without_shots(real):
    """chat's default was trained on every class of the real and synthetic questions
    (nothing held out, no inner loop), unlike ``heldout``; without shots it answers a real
    record from outside its training data (a Challenge 2021 ECG) with a probability per
    option, and its answer depends on the ECG (two records, two different P(yes))."""
    from ecgqa.chat import Session
    from ecgqa.meta.adapter import load_class_split, load_meta_config

    split = load_class_split("default")
    assert split["test_fraction"] == 0 and not split["test_units"]
    assert any(t == 1 for t, _, _ in split["meta_train"])          # PTB-XL label questions
    assert any(t == 26 for t, _, _ in split["meta_train"])         # synthetic ones
    assert load_class_split("heldout")["test_units"]
    assert load_meta_config("default").algorithm == "supervised"
    session = Session([real / "cinc2021" / "E07501.hea"])
    first = session.ask("Does this ECG show sinus tachycardia?")
    second = Session([real / "cinc2021" / "E07500.hea"]).ask(
        "Does this ECG show sinus tachycardia?")
    probs = []
    for answer in (first, second):
        assert answer.kind == "yes/no" and {o.text for o in answer.options} == {"yes", "no"}
        assert abs(sum(o.prob for o in answer.options) - 1) < 1e-4
        probs.append({o.text: o.prob for o in answer.options}["yes"])
    assert probs[0] != probs[1]
