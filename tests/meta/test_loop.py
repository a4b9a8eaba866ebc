"""Several episodes adapted in one pass per step equal each adapted alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgqa.meta.algorithms import build_algorithm
from ecgqa.meta.loop import adapt_to_support, adapt_to_supports, learner_for_test_time
from ecgqa.models.fusion import EcgQaModel, ModelConfig
from ecgqa.models.kv import PrefixMemo
from ecgqa.models.llm import LlmConfig
from ecgqa.qa.ecgqa import QaSample
from ecgqa.qa.episodes import Episode
from ecgqa.synth.ecg import sample_facts, synthesize
from tests.numerics import assert_fp32_close


class _Signals:
    def get(self, ecg_id):
        rng = np.random.default_rng(ecg_id)
        return synthesize(sample_facts(rng), rng), np.ones(12, dtype=bool)


def _model(dtype: str) -> EcgQaModel:
    torch.manual_seed(0)
    return EcgQaModel.build(ModelConfig(
        llm=LlmConfig(source="tiny-gemma", dtype=dtype), encoder="resnet1d",
        encoder_kwargs={"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "out_dim": 16},
        projector="attention", projector_kwargs={"dim": 16, "heads": 2}, n_ecg_tokens=3))


def _episode(first: int, attr: str) -> Episode:
    """2-way 2-shot, answers to one question: every prompt of one shape."""
    def q(i, answer):
        return QaSample(sample_id=first + i, template_id=101, question_id=0,
                        question_type="single-verify", attribute_type="scp_code",
                        question=f"does this ecg show {attr}?", answer=(answer,),
                        ecg_ids=(first + i,), attribute=(attr,), split="train")

    return Episode((q(0, "yes"), q(1, "no"), q(2, "yes"), q(3, "no")), (q(4, "no"),), (), 0)


@pytest.mark.parametrize("algorithm, vocab", [("fomaml", "full"), ("metasgd", "full"),
                                              ("anil", "full"), ("fomaml", "answers"),
                                              ("fomaml", "top")])
@pytest.mark.parametrize("prefix", [False, True])
def test_episodes_adapted_together_equal_each_adapted_alone(algorithm, vocab, prefix):
    """bfloat16 (the embedded Gemma's dtype): each episode's loss and its gradient are
    computed on more rows of the same products, which compute a row the same whatever the
    other rows are, so the adapted projectors are equal bit for bit (with the "answers"
    loss too: each episode's head columns are its own answers' tokens; with "top", also
    its own rows' most likely tokens)."""
    m = _model("bfloat16")
    algo = build_algorithm(algorithm, m.projector, 0.5)
    eps = [_episode(10 * e, "atrial fibrillation") for e in range(3)]
    signals = _Signals()
    memo = PrefixMemo() if prefix else None
    alone = [adapt_to_support(m, algo, ep, signals, 3, prefix, dedupe=False, vocab=vocab)
             for ep in eps]
    together = adapt_to_supports(m, algo, eps, signals, 3, prefix, memo=memo, vocab=vocab)
    fresh = learner_for_test_time(algo)
    for a, b in zip(alone, together):
        moved = [not torch.equal(p, q) for p, q in zip(a.parameters(), fresh.parameters())]
        assert any(moved)                                  # the steps did change them
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


def test_float32_episodes_adapted_together_agree_to_rounding():
    """float32 matrix kernels may block a product of more rows differently: each learner
    then differs by roundings of its gradient, bounded as the prefix-cache gradient test
    of tests/models/test_fusion.py (1024 u of the largest parameter change)."""
    m = _model("float32")
    algo = build_algorithm("fomaml", m.projector, 0.5)
    eps = [_episode(10 * e, "sinus rhythm") for e in range(2)]
    alone = [adapt_to_support(m, algo, ep, _Signals(), 2) for ep in eps]
    together = adapt_to_supports(m, algo, eps, _Signals(), 2)
    fresh = learner_for_test_time(algo)
    for a, b in zip(alone, together):
        for p, q, p0 in zip(a.parameters(), b.parameters(), fresh.parameters()):
            step = float((p - p0).detach().abs().max()) or 1.0
            assert_fp32_close(q.detach(), p.detach(), 1024, step)


def test_no_steps_gives_unadapted_copies():
    m = _model("float32")
    algo = build_algorithm("fomaml", m.projector, 0.5)
    got = adapt_to_supports(m, algo, [_episode(0, "sinus rhythm")], _Signals(), 0)
    fresh = learner_for_test_time(algo)
    assert all(torch.equal(p, q) for p, q in zip(got[0].parameters(), fresh.parameters()))
