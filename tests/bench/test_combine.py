"""The combined method: its two weights fitted on calibration queries, and its answers."""

from __future__ import annotations

import numpy as np
import pytest

from ecgqa.bench import combine as C

OPTIONS = [["no"], ["yes"]]


def _records(n: int, rng, llm_knows: bool, proto_knows: bool):
    """Queries where one method's scores point at the truth and the other's are noise."""
    llm, proto = [], []
    for _ in range(n):
        t = int(rng.integers(2))
        signal = np.eye(2)[t] * 3.0
        lz = (signal if llm_knows else 0) + rng.normal(0, 1, 2)
        pz = (signal if proto_knows else 0) * 50 + rng.normal(0, 50, 2)
        p = np.exp(lz - lz.max())
        p /= p.sum()
        llm.append({"truth": OPTIONS[t], "options": OPTIONS, "probs": list(p)})
        proto.append({"truth": OPTIONS[t], "options": OPTIONS, "scores": list(pz - pz.max())})
    return llm, proto


@pytest.mark.parametrize("llm_knows, proto_knows", [(True, False), (False, True)])
def test_the_fit_weighs_the_method_that_knows_the_answer(llm_knows, proto_knows):
    rng = np.random.default_rng(0)
    w = C.fit(*_records(400, rng, llm_knows, proto_knows), episodes=200)
    assert w.queries == 400 and w.episodes == 200 and w.scale > 0
    strong, weak = (w.llm, w.proto) if llm_knows else (w.proto, w.llm)
    assert strong > 0.5 and weak < 0.2 * strong, w
    # the fitted NLL is below both single-method fits' (the fit found a better point)
    assert w.nll < np.log(2)


def test_answers_follow_the_weights_and_are_probabilities():
    rng = np.random.default_rng(1)
    llm, proto = _records(50, rng, True, True)
    only_llm = C.Weights(1.0, 0.0, 1.0, 0.0, 1, 1)
    only_proto = C.Weights(0.0, 1.0, 1.0, 0.0, 1, 1)
    for a, b in zip(llm, proto):
        got = C.answer(a, b, only_llm)
        np.testing.assert_allclose(got["probs"], a["probs"], rtol=1e-9, atol=1e-12)
        assert got["pred"] == OPTIONS[int(np.argmax(a["probs"]))]
        assert got["correct"] == (got["pred"] == a["truth"])
        assert got["confidence"] == max(got["probs"])
        assert C.answer(a, b, only_proto)["pred"] == OPTIONS[int(np.argmax(b["scores"]))]
        assert abs(sum(C.answer(a, b, C.Weights(0.7, 2.0, 30.0, 0, 1, 1))["probs"]) - 1) < 1e-12


def test_an_llm_probability_of_zero_stays_finite():
    a = {"truth": ["yes"], "options": OPTIONS, "probs": [0.0, 1.0]}
    b = {"truth": ["yes"], "options": OPTIONS, "scores": [0.0, -5.0]}
    got = C.answer(a, b, C.Weights(1.0, 1.0, 1.0, 0, 1, 1))
    assert np.isfinite(got["probs"]).all() and got["pred"] == ["yes"]


def test_different_options_or_no_usable_query_are_errors():
    a = {"truth": ["yes"], "options": OPTIONS, "probs": [0.5, 0.5]}
    b = {"truth": ["yes"], "options": [["yes"], ["no"]], "scores": [0.0, -1.0]}
    with pytest.raises(ValueError, match="different options"):
        C.answer(a, b, C.Weights(1, 1, 1, 0, 1, 1))
    lost = {"truth": ["maybe"], "options": OPTIONS, "probs": [0.5, 0.5]}
    with pytest.raises(ValueError, match="no calibration query"):
        C.fit([lost], [{**lost, "scores": [0.0, 0.0]}], episodes=1)


def test_an_option_without_a_prototype_is_ruled_out_and_does_not_set_the_scale():
    """The prototype classifier gives an option no support sample shows probability 0
    (score None in the record); the combination does too, whatever the LLM says, and the
    scale comes from the finite scores alone."""
    opts = [["a"], ["b"], ["c"]]
    llm = [{"truth": ["a"], "options": opts, "probs": [0.2, 0.1, 0.7]},
           {"truth": ["b"], "options": opts, "probs": [0.3, 0.3, 0.4]}]
    proto = [{"truth": ["a"], "options": opts, "scores": [-1.0, -3.0, None]},
             {"truth": ["b"], "options": opts, "scores": [-4.0, -2.0, None]}]
    w = C.fit(llm, proto, episodes=1)
    assert w.scale == pytest.approx(2.0) and np.isfinite(w.nll)
    for a, b in zip(llm, proto):
        got = C.answer(a, b, C.Weights(5.0, 0.1, w.scale, 0, 1, 1))
        assert got["probs"][2] == 0.0 and got["pred"] != ["c"]
    lost = [{"truth": ["c"], "options": opts, "probs": [0.2, 0.1, 0.7]}]
    with pytest.raises(ValueError, match="no calibration query"):
        C.fit(lost, [proto[0]], episodes=1)
