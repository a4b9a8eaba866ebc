"""Inner loop, outer-loop task loss and few-shot evaluation of one episode.

One meta-training task::

    support, query = batches of the episode         (encoder features cached per ECG)
    prefix = KV cache of each prompt's first piece  (computed once, reused every step)
    learner = algo.clone()
    for step in range(inner_steps):                 # inner loop: adapt the projector copy
        learner.adapt(model.loss(support, prefix, projector=learner))
    query_loss = model.loss(query, projector=learner)   # outer loss, backpropagated

The LLM and encoder stay frozen and exist once in memory; only projector copies are made.
Evaluation adapts the same way (first order: no outer gradient is needed), then scores
the episode's answer options after the question has been read, and generates an answer
for exact match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ecgqa.config import field
from ecgqa.meta.algorithms import l2l
from ecgqa.qa.collate import parse_answer
from ecgqa.qa.episodes import Episode


@dataclass
class MetaConfig:
    algorithm: str = field("fomaml", help="maml, fomaml, anil, metasgd, or supervised (the "
                           "baseline: no inner loop in training)")
    first_order: bool | None = field(None, help="first-order gradients for anil/metasgd "
                                     "(None: the algorithm's own default)")
    inner_lr: float = field(0.1, help="inner-loop SGD learning rate (Meta-SGD: initial rate)")
    inner_steps: int = field(5, help="inner-loop steps on the support set")
    test_inner_steps: int | None = field(None, help="adaptation steps at test time "
                                         "(None: inner_steps)")
    outer_lr: float = field(1e-3, help="outer-loop Adam learning rate")
    meta_batch: int = field(2, help="tasks (episodes) per outer step, across all processes")
    multi_step_loss: bool = field(False, help="outer loss = mean query loss after every inner "
                                  "step (MAML++), not only the last")
    prefix_cache: bool = field(True, help="reuse the KV cache of each prompt's first piece "
                               "across inner steps")
    grad_clip: float = field(1.0, help="clip the outer gradient norm (0: off)")
    inner_vocab: str = field("full", help="vocabulary of the inner-loop (support) loss: "
                             "full (the LLM's whole softmax), answers (softmax over the "
                             "support answers' tokens only: no full LM head in the inner "
                             "loop) or top (over those and each answer position's 64 most "
                             "likely tokens: the head runs forward once, without a graph); "
                             "the outer query loss always uses full; also used when the "
                             "adapter adapts at test time")

    @property
    def eval_steps(self) -> int:
        return self.inner_steps if self.test_inner_steps is None else self.test_inner_steps


def adapt(model, learner, batch, steps: int, prefix=None,
          first_order: bool | None = None, vocab: str = "full") -> list[float]:
    """``steps`` inner SGD steps of ``learner`` on ``batch``; returns the losses before each
    (``vocab``: the loss's, see :attr:`MetaConfig.inner_vocab`)."""
    losses = []
    for _ in range(steps):
        loss = model.loss(batch, prefix, projector=learner, vocab=vocab)
        learner.adapt(loss, first_order=first_order)
        losses.append(float(loss.detach()))
    return losses


def _prefix(model, batch, cfg: MetaConfig):
    return model.prefix_cache(batch) if cfg.prefix_cache else None


def is_second_order(algo: nn.Module) -> bool:
    """Whether the outer gradient flows through the inner updates (``create_graph``)."""
    return not algo.first_order


def task_loss(model, algo: nn.Module, episode: Episode, signals, cfg: MetaConfig
              ) -> tuple[torch.Tensor, dict]:
    """Outer loss of one episode (differentiable w.r.t. the meta-parameters).

    Second-order algorithms run the LLM with PyTorch's math attention kernel: the fused
    CPU/flash kernels have no double backward, whatever ``attn_implementation`` says.

    Returns:
        (query loss, {"support_loss": before adaptation, "last_support_loss": before the
        last inner step, "query_loss": after adaptation}).
    """
    if is_second_order(algo):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return _task_loss(model, algo, episode, signals, cfg)
    return _task_loss(model, algo, episode, signals, cfg)


def _task_loss(model, algo, episode, signals, cfg):
    if not getattr(algo, "adapts_in_training", True):          # supervised baseline
        both = model.make_batch(list(episode.support) + list(episode.query), signals)
        loss = model.loss(both, _prefix(model, both, cfg))
        value = float(loss.detach())
        return loss, {"support_loss": value, "last_support_loss": value, "query_loss": value}
    support = model.make_batch(episode.support, signals)
    query = model.make_batch(episode.query, signals)
    sp, qp = _prefix(model, support, cfg), _prefix(model, query, cfg)
    learner = algo.clone()
    support_losses, query_losses = [], []
    for step in range(cfg.inner_steps):
        loss = model.loss(support, sp, projector=learner, vocab=cfg.inner_vocab)
        learner.adapt(loss)
        support_losses.append(float(loss.detach()))
        if cfg.multi_step_loss and step < cfg.inner_steps - 1:
            query_losses.append(model.loss(query, qp, projector=learner))
    query_losses.append(model.loss(query, qp, projector=learner))
    outer = torch.stack(query_losses).mean()
    last = float(query_losses[-1].detach())
    return outer, {"support_loss": support_losses[0] if support_losses else last,
                   "last_support_loss": support_losses[-1] if support_losses else last,
                   "query_loss": last}


def learner_for_test_time(algo: nn.Module) -> nn.Module:
    """A fresh copy to adapt at test time: the algorithm's own clone, or, for the
    supervised baseline, plain SGD on a copy of its projector at its inner rate."""
    if getattr(algo, "adapts_in_training", True):
        return algo.clone()
    return l2l.algorithms.MAML(algo.projector, lr=algo.lr, first_order=True).clone()


def query_options(episode: Episode, query) -> list[tuple[str, ...]]:
    """The candidate answers of one query (sorted): the answers the support set shows for
    the query's template (its question form), or for the whole episode if none is there.

    This is the N-way choice of the episode, the same for every method compared (the
    prototypical network of ``eval/meta_compare.py`` picks among the same answers); the
    truth is never looked at.
    """
    return sorted({tuple(sorted(s.answer)) for s in template_pool(episode, query)})


def template_pool(episode: Episode, query) -> list:
    """The support samples of the query's template, or the whole support set if none."""
    return [s for s in episode.support if s.template_id == query.template_id] \
        or list(episode.support)


@dataclass
class QueryResult:
    question_type: str
    truth: tuple[str, ...]
    options: list[tuple[str, ...]]
    probs: list[float]
    option_correct: bool
    generated: str | None
    exact_match: bool | None


def adapt_to_support(model, algo: nn.Module, episode: Episode, signals, steps: int,
                     prefix_cache: bool = True, dedupe: bool = True,
                     vocab: str = "full") -> nn.Module:
    """A test-time learner adapted (first order) for ``steps`` steps on the support set
    (``dedupe``: see :meth:`EcgQaModel.prefix_cache`; it changes no number; ``vocab``: the
    adapter's :attr:`MetaConfig.inner_vocab`)."""
    support = model.make_batch(episode.support, signals)
    learner = learner_for_test_time(algo)
    with torch.enable_grad():
        prefix = model.prefix_cache(support, dedupe=dedupe) if prefix_cache and steps \
            else None
        adapt(model, learner, support, steps, prefix, first_order=True, vocab=vocab)
    return learner


def adapt_to_supports(model, algo: nn.Module, episodes: Sequence[Episode], signals, steps: int,
                      prefix_cache: bool = True, memo=None,
                      vocab: str = "full") -> list[nn.Module]:
    """:func:`adapt_to_support` for several episodes at once: one LLM pass per step for
    every episode's support set, each episode adapting its own learner.

    Each step runs every support prompt in one batch; the sum of the episodes' losses is
    differentiated once with respect to each episode's ECG tokens, and each learner then
    takes its step through its own projector from those gradients. An episode's loss only
    depends on its own tokens, so each learner gets the gradient of its own loss: the same
    numbers as adapting it alone where the episodes' prompts have the same shapes (a
    product's rows are computed independently; ``tests/meta/test_loop.py``).
    """
    from ecgqa.models.answering import stack_batches

    supports = [model.make_batch(ep.support, signals) for ep in episodes]
    learners = [learner_for_test_time(algo) for _ in episodes]
    if not steps:
        return learners
    both = stack_batches(supports)
    sizes = [len(b.encoded) for b in supports]
    with torch.enable_grad():
        prefix = model.prefix_cache(both, memo) if prefix_cache else None
        for _ in range(steps):
            toks = [model.ecg_tokens(b.feats, lr) for b, lr in zip(supports, learners)]
            losses = model.group_losses(both, torch.cat(toks), sizes, prefix, vocab)
            grads = torch.autograd.grad(torch.stack(losses).sum(), toks)
            for learner, tok, grad in zip(learners, toks, grads):
                # d(tok . grad)/d(params) = the learner's own loss gradient, through its
                # projector alone (tok's gradient is exactly grad: 1 * grad)
                learner.adapt((tok * grad).sum(), first_order=True)
    return learners


def evaluate_episode(model, algo: nn.Module, episode: Episode, signals, steps: int,
                     prefix_cache: bool = True, generate: bool = True,
                     vocab=None, inner_vocab: str = "full") -> list[QueryResult]:
    """Adapt on the support set (first order), then answer every query.

    Scores are honest: options (:func:`query_options`) are scored after the whole prompt
    (question and ECG) has been read, and the exact match compares the generated answer,
    parsed into the answer terms of ``vocab`` (an AnswerVocab) and the options, with the
    truth.
    """
    learner = adapt_to_support(model, algo, episode, signals, steps, prefix_cache,
                               vocab=inner_vocab)
    query = model.make_batch(episode.query, signals, with_answers=False)
    options = [query_options(episode, q) for q in episode.query]
    return answer_queries(model, query, episode.query, options, answer_terms(options, vocab),
                          learner, generate)


def answer_terms(options: Sequence[Sequence[tuple[str, ...]]], vocab=None) -> list[str]:
    """The answer terms a generated answer is parsed into: the options' and ``vocab``'s."""
    return sorted({t for opts in options for o in opts for t in o}
                  | set(vocab.answers if vocab is not None else ()))


@torch.no_grad()
def answer_queries(model, batch, samples: Sequence, options: Sequence[Sequence[tuple[str, ...]]],
                   terms: Sequence[str], projector=None, generate: bool = True,
                   per_prompt: bool = False, memo=None) -> list[QueryResult]:
    """Score each prompt's options (after the whole prompt has been read) and generate.

    Args:
        model: the EcgQaModel.
        batch: the prompts (built without answers), one per sample.
        samples: QaSample-like objects with ``question_type`` and ``answer`` (the truth).
        options: per sample, the candidate answers (tuples of answer terms).
        terms: answer terms a generated answer is parsed into (:func:`answer_terms`).
        projector: an adapted stand-in for the projector.
        generate: also generate an answer for exact match.
        per_prompt: the per-prompt path (one scoring pass and one ``generate`` call per
            prompt), as before batched answering; always taken for an FSDP-sharded LLM.
        memo: a :class:`~ecgqa.models.kv.PrefixMemo` of prompt prefixes (batched path).
    """
    probs, texts = option_probs_and_texts(model, batch, options, projector, generate,
                                          per_prompt, memo)
    return [query_result(s, options[b], probs[b], texts[b], terms)
            for b, s in enumerate(samples)]


def option_probs_and_texts(model, batch, options, projector=None, generate: bool = True,
                           per_prompt: bool = False, memo=None
                           ) -> tuple[list[list[float]], list[str | None]]:
    """Per prompt: the options' probabilities and the greedy answer (None when not
    generated). The batched path (:func:`ecgqa.models.answering.answer_batch`) gives the
    per-prompt path's scores; its greedy answers may differ where two tokens are near-tied
    (:func:`ecgqa.models.answering.greedy`)."""
    listed = [[list(o) for o in opts] for opts in options]
    if per_prompt or model.sharded:
        scores = model.score_options(batch, listed, projector=projector)
        texts = [model.generate(batch, b, projector=projector) if generate else None
                 for b in range(len(listed))]
    else:
        from ecgqa.models.answering import answer_batch

        got = answer_batch(model, batch, listed, projector, generate, memo=memo)
        scores, texts = got.scores, got.texts
    return [scores.probs[b, : len(options[b])].tolist() for b in range(len(listed))], texts


def query_result(sample, options: Sequence[tuple[str, ...]], probs: Sequence[float],
                 text: str | None, terms: Sequence[str]) -> QueryResult:
    """A query's result from its options' probabilities and generated answer."""
    truth = tuple(sorted(sample.answer))
    exact = None if text is None else answer_matches(text, truth, terms)
    return QueryResult(sample.question_type, truth, list(options), list(probs),
                       options[int(np.argmax(probs))] == truth, text, exact)


def answer_matches(text: str, truth: Sequence[str], vocabulary: Sequence[str]) -> bool:
    """Exact match: the generated text names exactly the true answer terms."""
    terms = sorted(set(vocabulary) | set(truth))
    got = parse_answer(text, terms)
    return got is not None and got == frozenset(truth)

