"""The maths of the inner and outer loops on a tiny model: hand-computed SGD, Meta-SGD
rates, ANIL's head-only adaptation, and second-order MAML against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgqa.intervals import mean_ci
from ecgqa.meta.algorithms import build_algorithm, meta_parameters
from ecgqa.meta.loop import MetaConfig, adapt, evaluate_episode, task_loss
from ecgqa.models.fusion import EcgQaModel, ModelConfig
from ecgqa.models.llm import LlmConfig
from ecgqa.qa.collate import parse_answer
from ecgqa.qa.ecgqa import QaSample
from ecgqa.qa.episodes import Episode
from ecgqa.synth.ecg import sample_facts, synthesize
from tests.numerics import assert_fp32_close


class _Signals:
    def get(self, ecg_id):
        rng = np.random.default_rng(ecg_id)
        return synthesize(sample_facts(rng), rng), np.ones(12, dtype=bool)


def _model(projector="attention", seed=0) -> EcgQaModel:
    torch.manual_seed(seed)
    kw = {"dim": 16, "heads": 2} if projector in ("attention", "qformer") else {}
    return EcgQaModel.build(ModelConfig(
        llm=LlmConfig(source="tiny-llama"), encoder="resnet1d",
        encoder_kwargs={"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "out_dim": 16},
        projector=projector, projector_kwargs=kw, n_ecg_tokens=3))


def _q(i, attr, answer, ecg):
    return QaSample(sample_id=i, template_id=101, question_id=0, question_type="single-verify",
                    attribute_type="scp_code", question=f"does this ecg show {attr}?",
                    answer=(answer,), ecg_ids=(ecg,), attribute=(attr,), split="train")


def _episode() -> Episode:
    support = (_q(0, "atrial fibrillation", "yes", 1), _q(1, "atrial fibrillation", "no", 2),
               _q(2, "sinus rhythm", "yes", 3), _q(3, "sinus rhythm", "no", 4))
    query = (_q(4, "atrial fibrillation", "no", 5), _q(5, "sinus rhythm", "yes", 6))
    return Episode(support, query, (), 0)


@pytest.fixture(scope="module")
def signals():
    return _Signals()


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("use_prefix", [False, True])
def test_one_inner_step_equals_hand_computed_sgd(signals, use_prefix):
    model = _model()
    batch = model.make_batch(_episode().support, signals)
    lr = 0.05
    grads = torch.autograd.grad(model.loss(batch), list(model.projector.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(model.projector.parameters(), grads)]
    algo = build_algorithm("fomaml", model.projector, lr)
    learner = algo.clone()
    prefix = model.prefix_cache(batch) if use_prefix else None
    adapt(model, learner, batch, 1, prefix)
    got = list(learner.module.parameters())
    assert len(got) == len(expected)
    # both sides compute p - lr * g in float32 (one rounding of p's magnitude); with the
    # prefix cache g differs by up to 1024 u of max |g| (tests/models/test_fusion.py), times
    # lr. A wrong update (another lr, a missing step) moves p by lr * |g|, far more
    g_max = max(float(g.abs().max()) for g in grads)
    for e, g in zip(expected, got):
        assert_fp32_close(g.detach(), e, 4 + 1024 * lr * g_max / max(1e-30, float(e.abs().max())))
    # the meta-parameters themselves are untouched by the inner loop
    assert any(not torch.equal(g.detach(), p) for g, p in zip(got, model.projector.parameters()))


def test_metasgd_uses_its_learned_per_parameter_rates(signals):
    model = _model()
    batch = model.make_batch(_episode().support, signals)
    algo = build_algorithm("metasgd", model.projector, 0.05)
    with torch.no_grad():
        for i, lr in enumerate(algo.lrs):
            lr.fill_(0.01 * (i + 1))
    grads = torch.autograd.grad(model.loss(batch), list(model.projector.parameters()))
    learner = algo.clone()
    adapt(model, learner, batch, 1)
    for p, lr, g, new in zip(model.projector.parameters(), algo.lrs, grads,
                             learner.module.parameters()):
        torch.testing.assert_close(new.detach(), p.detach() - lr.detach() * g,
                                   rtol=1e-5, atol=1e-6)
    # the rates are meta-parameters: the outer loss reaches them
    loss, _ = task_loss(model, algo, _episode(), signals, MetaConfig(inner_steps=1))
    loss.backward()
    assert all(lr.grad is not None and lr.grad.abs().sum() > 0 for lr in algo.lrs)


def test_anil_adapts_the_projector_head_only(signals):
    model = _model()
    batch = model.make_batch(_episode().support, signals)
    algo = build_algorithm("anil", model.projector, 0.1)
    learner = algo.clone()
    before_body = _params(model.projector)
    adapt(model, learner, batch, 2)
    head = dict(learner.head.module.named_parameters())
    assert set(head) == {"weight", "bias"}
    assert not torch.equal(head["weight"].detach(), model.projector.head.weight.detach())
    for p, b in zip(model.projector.parameters(), before_body):
        assert torch.equal(p.detach(), b)           # body and head init unchanged in the inner loop
    loss, _ = task_loss(model, algo, _episode(), signals, MetaConfig(inner_steps=1))
    loss.backward()
    body = [p for n, p in model.projector.named_parameters() if not n.startswith("head.")]
    assert all(p.grad is not None for p in body)    # the outer loop trains the body
    assert model.projector.head.weight.grad is not None


def _meta_grad(model, algorithm, signals, steps=1):
    algo = build_algorithm(algorithm, model.projector, 0.5)
    model.projector.zero_grad()
    loss, _ = task_loss(model, algo, _episode(), signals,
                        MetaConfig(algorithm=algorithm, inner_steps=steps, prefix_cache=False))
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in meta_parameters(algo)]), algo


def _query_loss_after_adapting(model, signals, steps=1):
    algo = build_algorithm("fomaml", model.projector, 0.5)
    ep = _episode()
    support, query = model.make_batch(ep.support, signals), model.make_batch(ep.query, signals)
    learner = algo.clone()
    adapt(model, learner, support, steps)
    return float(model.loss(query, projector=learner).detach())


def test_second_order_maml_gradient_matches_finite_differences_and_differs_from_first_order(
        signals):
    model = _model(projector="mlp")
    model.llm.float()
    g_maml, _ = _meta_grad(model, "maml", signals)
    g_fo, _ = _meta_grad(model, "fomaml", signals)
    assert torch.isfinite(g_maml).all() and torch.isfinite(g_fo).all()
    rel = (g_maml - g_fo).norm() / g_maml.norm()
    assert rel > 1e-3                                  # the second-order term is there
    # directional derivative of the meta-objective vs central finite differences
    torch.manual_seed(1)
    params = list(model.projector.parameters())
    direction = [torch.randn_like(p) for p in params]
    norm = torch.sqrt(sum((d ** 2).sum() for d in direction))
    direction = [d / norm for d in direction]
    eps = 1e-3
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(_query_loss_after_adapting(model, signals))
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    flat_dir = torch.cat([d.reshape(-1) for d in direction])
    maml_dd = float(g_maml @ flat_dir)
    fo_dd = float(g_fo @ flat_dir)
    assert abs(maml_dd - numeric) < 0.05 * abs(numeric) + 1e-3, (maml_dd, numeric)
    assert abs(maml_dd - numeric) < abs(fo_dd - numeric)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "metasgd", "supervised"])
def test_every_algorithm_takes_a_finite_outer_step(signals, algorithm):
    model = _model()
    algo = build_algorithm(algorithm, model.projector, 0.05)
    params = meta_parameters(algo)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    loss, info = task_loss(model, algo, _episode(), signals,
                           MetaConfig(algorithm=algorithm, inner_steps=2, multi_step_loss=True))
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in info.values())
    loss.backward()
    opt.step()
    assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before))
    # the LLM and the encoder never change
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_evaluation_adapts_a_copy_and_scores_after_reading_the_question(signals):
    model = _model()
    algo = build_algorithm("fomaml", model.projector, 0.05)
    before = _params(model.projector)
    results = evaluate_episode(model, algo, _episode(), signals, steps=2, generate=True)
    assert len(results) == 2
    for r in results:
        assert r.options == [("no",), ("yes",)]
        assert abs(sum(r.probs) - 1) < 1e-5
        # exact match: the generated text read as answer terms is the truth
        said = parse_answer(r.generated, ["no", "yes"])
        assert r.exact_match == (said == frozenset(r.truth)), (r.generated, r.truth)
        assert r.option_correct == (r.options[int(np.argmax(r.probs))] == r.truth)
    for p, b in zip(model.projector.parameters(), before):
        assert torch.equal(p.detach(), b)           # test-time adaptation never leaks back


def test_mean_ci():
    mean, half = mean_ci([0.0, 1.0] * 50)
    assert mean == 0.5 and abs(half - 1.96 * np.std([0.0, 1.0] * 50, ddof=1) / 10) < 1e-12
    assert np.isnan(mean_ci([1.0])[1])
