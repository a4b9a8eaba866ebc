"""The methods a benchmark cell compares, one episode at a time (the per-query path).

Each method maps an episode to one answer record per query::

    {"truth", "options", "probs", "pred", "correct", "confidence", "text", "exact_match"}

Every method chooses among the same candidates (:meth:`Context.candidates`): by default every
answer class of the query's question template; the truth is never looked at.
LLM methods score the options after the whole prompt has been read and also generate an
answer (exact match); the feature baselines only classify.

Here every query is scored and generated alone and every method starts from scratch, as
before the benchmark was made fast; :mod:`ecgqa.bench.blocks` runs the LLM methods on
blocks of episodes of one shape, reusing what does not depend on the support set, with
the same numbers (``fast: false`` in a suite runs this path, for timing it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ecgqa.meta.loop import (
    adapt_to_support,
    answer_queries,
    answer_terms,
    query_options,
    template_pool,
)
from ecgqa.models.fusion import Batch
from ecgqa.qa.collate import encode_in_context, encode_without_ecg
from ecgqa.qa.episodes import Episode, class_key


@dataclass
class Context:
    """What every method of a cell shares."""

    model: object          # EcgQaModel
    algo: object           # the adapter's meta-learning algorithm
    signals: object        # get(ecg_id) -> (signal, mask), the cell's lead subset
    steps: int             # test-time adaptation steps
    prefix_cache: bool
    generate: bool
    vocab: object          # AnswerVocab, for parsing generated answers
    max_context: int       # the LLM's context length, in tokens
    options: str = "template"   # candidate answers: template or support (see candidates)
    fast: bool = False     # run blocks of episodes (ecgqa.bench.blocks), not this module
    leads: tuple = ()      # the cell's lead subset (part of the fast path's memo keys)
    memo: dict = field(default_factory=dict)   # fast path: answers of support-free methods
    prefixes: object = None                    # fast path: a PrefixMemo of prompt prefixes
    inner_vocab: str = "full"  # the adapter's test-time adaptation loss (MetaConfig.inner_vocab)

    def prepare(self, ep: Episode) -> None:
        """Nothing to do before the methods: signals are read by the first method that
        needs them (through the signal cache)."""

    def candidates(self, ep: Episode, query) -> list[tuple[str, ...]]:
        """The answers a method chooses among (:func:`candidates`)."""
        return candidates(ep, query, self.vocab, self.options)


def candidates(ep: Episode, query, vocab, options: str = "template") -> list[tuple[str, ...]]:
    """The answers a method chooses among: every answer class of the query's template plus
    any combination the support set shows for it (``options: template``), or only what the
    support set shows (``options: support``, as meta-training evaluates). Both modalities
    use it, so signal and image methods choose among the same answers."""
    shown = query_options(ep, query)
    if options == "support":
        return shown
    return sorted({(a,) for a in vocab.options(query.template_id)} | set(shown))


def records(results) -> list[dict]:
    """Answer records of QueryResults."""
    return [{"truth": list(r.truth), "options": [list(o) for o in r.options], "probs": r.probs,
             "pred": list(r.options[int(np.argmax(r.probs))]), "correct": bool(r.option_correct),
             "confidence": float(max(r.probs)), "text": r.generated,
             "exact_match": r.exact_match} for r in results]


def _answer(ctx: Context, ep: Episode, batch: Batch, projector=None) -> list[dict]:
    options = [ctx.candidates(ep, q) for q in ep.query]
    return records(answer_queries(ctx.model, batch, ep.query, options,
                                   answer_terms(options, ctx.vocab), projector, ctx.generate,
                                   per_prompt=True))


def adapted(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """The adapter after test-time adaptation on the support set."""
    learner = adapt_to_support(ctx.model, ctx.algo, ep, ctx.signals, ctx.steps,
                               ctx.prefix_cache, dedupe=False, vocab=ctx.inner_vocab)
    query = ctx.model.make_batch(ep.query, ctx.signals, with_answers=False)
    out = _answer(ctx, ep, query, learner)
    teacher = ctx.model.make_batch(ep.query, ctx.signals)
    return out, {"token_accuracy": ctx.model.token_accuracy(teacher, projector=learner)}


def no_adaptation(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """The adapter as trained, without looking at the support set."""
    query = ctx.model.make_batch(ep.query, ctx.signals, with_answers=False)
    out = _answer(ctx, ep, query)
    teacher = ctx.model.make_batch(ep.query, ctx.signals)
    return out, {"token_accuracy": ctx.model.token_accuracy(teacher)}


def zero_shot_text(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """The frozen LLM without the ECG: what the question's text alone predicts."""
    query = ctx.model.make_batch(ep.query, ctx.signals, with_answers=False)
    return _answer(ctx, ep, text_only(ctx.model, ep.query, query.feats)), {}


def text_only(m, samples, feats) -> Batch:
    """The samples' prompts with every ECG left out (``feats`` unused by them)."""
    encoded = [encode_without_ecg(m.template, m.tokenizer, q.question, len(q.ecg_ids))
               for q in samples]
    return Batch(encoded, feats, [() for _ in samples])


def in_context(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """Support ECG tokens and answers in the prompt, then the query; no weights change.

    The examples are the support samples of the query's question form (all of the support
    set if none); the earliest are dropped until the prompt fits the LLM's context.
    """
    batch, shown = in_context_prompts(ctx, ep)
    return _answer(ctx, ep, batch), {"examples_in_prompt": float(np.mean(shown))}


def in_context_prompts(ctx: Context, ep: Episode) -> tuple[Batch, list[int]]:
    """The in-context prompt of each query, and how many examples each shows."""
    m = ctx.model
    encoded, index, shown = [], [], []
    both = m.make_batch(list(ep.support) + list(ep.query), ctx.signals, with_answers=False)
    rows = dict(zip(list(ep.support) + list(ep.query), both.ecg_index))
    budget = ctx.max_context - m.cfg.max_new_tokens - 8
    for q in ep.query:
        examples = template_pool(ep, q)
        while True:
            measured = ([m.measured(s.ecg_ids, ctx.signals) for s in [*examples, q]]
                        if m.cfg.measurements else None)
            enc = encode_in_context(m.template, m.tokenizer,
                                    [(s.question, len(s.ecg_ids), s.answer) for s in examples],
                                    q.question, len(q.ecg_ids), measured)
            ecgs = [r for s in examples for r in rows[s]] + list(rows[q])
            if _length(enc, ecgs, m.cfg.n_ecg_tokens) <= budget or not examples:
                break
            examples = examples[1:]
        encoded.append(enc)
        index.append(tuple(ecgs))
        shown.append(len(examples))
    return Batch(encoded, both.feats, index), shown


def _length(enc, ecgs, tokens_per_ecg: int) -> int:
    return sum(len(p) for p in enc.pieces) + len(ecgs) * tokens_per_ecg


# ------------------------------------------------------------------ feature baselines


def _pooled(ctx: Context, sample) -> np.ndarray:
    """Mean-pooled frozen encoder tokens of a sample's ECGs, concatenated."""
    batch = ctx.model.make_batch([sample], ctx.signals, with_answers=False)
    return batch.feats.mean(dim=1).reshape(-1).float().cpu().numpy()


def _classify(ctx: Context, ep: Episode, fit, features=None) -> tuple[list[dict], dict]:
    """Answer each query with ``fit(x_support, y_support) -> predict_proba(x) -> probs``
    over the query's options (``ctx.candidates``). ``features(sample) -> (d,)`` gives a
    sample's features (default: the signal encoder's, :func:`_pooled`); the image
    modality passes its image encoder's."""
    features = features or (lambda sample: _pooled(ctx, sample))
    out = []
    for q in ep.query:
        pool = template_pool(ep, q)
        options = ctx.candidates(ep, q)
        x = np.stack([features(s) for s in pool])
        y = np.array([options.index(tuple(sorted(s.answer))) for s in pool])
        predict = fit(x, y, len(options))
        z = features(q)[None]
        probs = predict(z)[0]
        truth = tuple(sorted(q.answer))
        pred = options[int(np.argmax(probs))]
        out.append({"truth": list(truth), "options": [list(o) for o in options],
                    "probs": [float(p) for p in probs], "pred": list(pred),
                    "correct": pred == truth, "confidence": float(np.max(probs)),
                    "text": None, "exact_match": None})
        if hasattr(predict, "scores"):           # the logits (the combined method uses them)
            out[-1]["scores"] = [float(v) if np.isfinite(v) else None
                                 for v in predict.scores(z)[0]]
    return out, {}


class _Prototypes:
    """Prototypical network: softmax over negative squared distances to class means; an
    option no support sample shows has no prototype (score -inf, probability 0)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, k: int):
        self.present = np.array([(y == c).any() for c in range(k)])
        self.centres = np.stack([x[y == c].mean(0) if self.present[c] else np.zeros(x.shape[1])
                                 for c in range(k)])

    def scores(self, z: np.ndarray) -> np.ndarray:
        """Minus the squared distance to each prototype ``(n, k)`` (-inf: no prototype)."""
        d = ((z[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return np.where(self.present[None], -d, -np.inf)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(self.scores(z)), dim=-1).numpy()


def _linear_probe(x: np.ndarray, y: np.ndarray, k: int):
    """L2-regularised logistic regression on standardised features (one class: certain)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(y)
    if len(present) == 1:
        return lambda z: np.eye(k)[np.full(len(z), present[0])]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=200))
    clf.fit(x, y)

    def predict(z: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(z), k))
        probs[:, clf.classes_] = clf.predict_proba(z)
        return probs

    return predict


def protonet(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """Nearest answer prototype on the frozen encoder features."""
    return _classify(ctx, ep, _Prototypes)


def linear_probe(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """Logistic regression on the frozen encoder features of the support set."""
    return _classify(ctx, ep, _linear_probe)


def majority(ctx: Context, ep: Episode) -> tuple[list[dict], dict]:
    """The most frequent support answer to the query's question; it never sees an ECG."""
    out = []
    for q in ep.query:
        pool = _question_pool(ep, q)
        counts = Counter(tuple(sorted(s.answer)) for s in pool)
        pred = min(counts, key=lambda a: (-counts[a], a))
        truth = tuple(sorted(q.answer))
        out.append({"truth": list(truth), "options": None, "probs": None, "pred": list(pred),
                    "correct": pred == truth, "confidence": None, "text": None,
                    "exact_match": None})
    return out, {}


def _question_pool(ep: Episode, query) -> list:
    """Support samples asking the query's question: the same template and attribute, else
    the same template, else all of them."""
    for level in (2, 1):
        pool = [s for s in ep.support if class_key(s)[:level] == class_key(query)[:level]]
        if pool:
            return pool
    return list(ep.support)


RUN = {"adapted": adapted, "no_adaptation": no_adaptation, "zero_shot_text": zero_shot_text,
       "in_context": in_context, "protonet": protonet, "linear_probe": linear_probe,
       "majority": majority}
