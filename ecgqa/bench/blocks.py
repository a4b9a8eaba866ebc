"""The benchmark's fast path: the LLM methods on blocks of episodes of one shape.

A cell's episodes are grouped by shape (:func:`episode_blocks`: the token lengths of their
support and query prompts, which in answer-balanced episodes come with the question) into
blocks of up to ``BLOCK`` episodes, and each method answers a whole block::

    adapted         every episode's support set adapts its own projector copy in one LLM
                    pass per inner step (ecgqa.meta.loop.adapt_to_supports); then the
                    block's queries are answered together, each with its episode's tokens
    in_context      the block's prompts together; the examples two queries of an episode
                    share run once (ecgqa.models.answering)
    no_adaptation,  each distinct query once per run (Context.memo, shared by the cells;
    zero_shot_text  zero_shot_text by question text alone, as it never sees the ECG)
    the others      episode by episode (ecgqa.bench.methods)

Prompt prefixes (system text and question) come from a PrefixMemo shared by the cells.
Every method gives the numbers of :mod:`ecgqa.bench.methods`, which answers one query at a
time: LLM calls take more rows but never pad one (only prompts of one shape share a
call), and a row of a product is computed the same whatever the other rows are. The one
exception is greedy decoding, which multiplies at least two rows per step where the
per-query path multiplies one (see :func:`ecgqa.models.answering.greedy` and
docs/bench.md). A method's seconds per episode are its block's time over the block's
episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ecgqa.bench import methods as M
from ecgqa.meta.loop import adapt_to_supports, answer_terms, query_result
from ecgqa.models.answering import answer_batch, stack_batches, token_hits
from ecgqa.qa.collate import encode_answer
from ecgqa.qa.episodes import Episode

BLOCK = 8
"""Most episodes per block."""

ADAPT_PROMPTS = 8
"""Most support prompts adapted together (every inner step runs them all, forward and
backward, and peak memory grows with them): 4 episodes of 2-way 1-shot, 1 of 2-way
5-shot. Measured peak RSS on ``default.yaml``: 1.89 GB as on the per-query path; 8
episodes of 2-way 1-shot together: 1.99 GB; of 2-way 5-shot: 3.3 GB."""


def episode_blocks(ctx: M.Context, episodes: Sequence[Episode], size: int = BLOCK
                   ) -> list[list[int]]:
    """Indices of ``episodes`` in blocks of up to ``size`` episodes of one shape, in order of
    each shape's first episode."""
    groups: dict = {}
    for i, ep in enumerate(episodes):
        groups.setdefault(shape_key(ctx, ep), []).append(i)
    return [g[j: j + size] for g in groups.values() for j in range(0, len(g), size)]


def shape_key(ctx: M.Context, ep: Episode) -> tuple:
    """What fixes the shapes of an episode's LLM calls: per support and query sample (as
    multisets) the lengths of its prompt's first piece, of its whole prompt text and of its
    answer, and its number of ECGs; and the queries' candidate answers."""
    m = ctx.model

    def lengths(s) -> tuple:
        enc = m.encode_sample(s, ctx.signals)
        return (len(enc.pieces[0]), sum(len(p) for p in enc.pieces), len(enc.answer),
                len(s.ecg_ids))

    return (tuple(sorted(lengths(s) for s in ep.support)),
            tuple(sorted(lengths(q) for q in ep.query)),
            tuple(tuple(ctx.candidates(ep, q)) for q in ep.query))


def run_block(ctx: M.Context, name: str, episodes: Sequence[Episode]) -> list[tuple]:
    """``(queries, extra)`` of each episode, by method ``name``."""
    if name in RUN:
        return RUN[name](ctx, episodes)
    return [M.RUN[name](ctx, ep) for ep in episodes]


def adapted(ctx: M.Context, episodes: Sequence[Episode]) -> list[tuple]:
    """The adapter after test-time adaptation on each episode's support set."""
    m = ctx.model
    n = max(1, ADAPT_PROMPTS // max(1, len(episodes[0].support)))
    learners = [lr for j in range(0, len(episodes), n)
                for lr in adapt_to_supports(m, ctx.algo, episodes[j: j + n], ctx.signals,
                                            ctx.steps, ctx.prefix_cache, memo=ctx.prefixes,
                                            vocab=ctx.inner_vocab)]
    queries = [m.make_batch(ep.query, ctx.signals, with_answers=False) for ep in episodes]
    with torch.no_grad():
        tokens = torch.cat([m.ecg_tokens(q.feats, lr) for q, lr in zip(queries, learners)])
    samples = [q for ep in episodes for q in ep.query]
    options = [ctx.candidates(ep, q) for ep in episodes for q in ep.query]
    got = _answers(ctx, samples, stack_batches(queries), options, tokens, hits=True)
    return _per_episode(ctx, episodes, options, got)


def in_context(ctx: M.Context, episodes: Sequence[Episode]) -> list[tuple]:
    """Support ECG tokens and answers in the prompt, then the query; no weights change."""
    built = [M.in_context_prompts(ctx, ep) for ep in episodes]
    samples = [q for ep in episodes for q in ep.query]
    options = [ctx.candidates(ep, q) for ep in episodes for q in ep.query]
    got = _answers(ctx, samples, stack_batches([b for b, _ in built]), options)
    out = _per_episode(ctx, episodes, options, got)
    return [(queries, {"examples_in_prompt": float(np.mean(shown))})
            for (queries, _), (_, shown) in zip(out, built)]


def no_adaptation(ctx: M.Context, episodes: Sequence[Episode]) -> list[tuple]:
    """The adapter as trained, without looking at the support set: each distinct query
    (its question, ECGs, lead subset, truth and candidates) answered once per run."""
    return _memoised(ctx, episodes, "no_adaptation",
                     lambda q: (ctx.leads, q.question, tuple(q.ecg_ids), q.answer))


def zero_shot_text(ctx: M.Context, episodes: Sequence[Episode]) -> list[tuple]:
    """The frozen LLM without the ECG: each distinct question text answered once per run."""
    return _memoised(ctx, episodes, "zero_shot_text", lambda q: (q.question, len(q.ecg_ids)))


def _memoised(ctx: M.Context, episodes: Sequence[Episode], name: str, identity) -> list[tuple]:
    """A support-free method's answers: queries not in ``ctx.memo`` (keyed by the method,
    ``identity(query)``, the candidates and the generation switch) are answered together
    and kept."""
    m = ctx.model
    options = [ctx.candidates(ep, q) for ep in episodes for q in ep.query]
    samples = [q for ep in episodes for q in ep.query]
    keys = [(name, identity(q), tuple(o), ctx.generate) for q, o in zip(samples, options)]
    todo = [keys.index(k) for k in dict.fromkeys(keys) if k not in ctx.memo]
    if todo:
        new = [samples[i] for i in todo]
        batch = m.make_batch(new, ctx.signals, with_answers=False)
        if name == "zero_shot_text":
            batch = M.text_only(m, new, batch.feats)
        got = _answers(ctx, new, batch, [options[i] for i in todo],
                       hits=name == "no_adaptation")
        ctx.memo.update((keys[i], g) for i, g in zip(todo, got))
    return _per_episode(ctx, episodes, options, [ctx.memo[k] for k in keys])


def _answers(ctx: M.Context, samples, batch, options, ecg_tok=None, hits: bool = False
             ) -> list[tuple]:
    """(probs, text, teacher-forced hits or None) of each sample: hits read from the option
    pass where it can (:func:`~ecgqa.models.answering.answer_batch`), else from a
    teacher-forced pass of those samples."""
    m = ctx.model
    teachers = [encode_answer(m.template, m.tokenizer, s.answer) for s in samples] \
        if hits else None
    got = answer_batch(m, batch, [[list(o) for o in opts] for opts in options],
                       generate=ctx.generate, memo=ctx.prefixes, teachers=teachers,
                       ecg_tok=ecg_tok)
    found = list(got.hits)
    todo = [i for i, h in enumerate(found) if h is None] if hits else []
    if todo:
        teacher = m.make_batch([samples[i] for i in todo], ctx.signals)
        tok = None
        if ecg_tok is not None:          # each sample's own tokens (its episode's projector)
            tok = torch.cat([ecg_tok[list(batch.ecg_index[i])] for i in todo])
            teacher.ecg_index = _consecutive([len(batch.ecg_index[i]) for i in todo])
        for i, h in zip(todo, token_hits(m, teacher, memo=ctx.prefixes, ecg_tok=tok)):
            found[i] = h
    probs = [got.scores.probs[b, : len(o)].tolist() for b, o in enumerate(options)]
    return list(zip(probs, got.texts, found))


def _consecutive(counts: Sequence[int]) -> list[tuple[int, ...]]:
    out, start = [], 0
    for n in counts:
        out.append(tuple(range(start, start + n)))
        start += n
    return out


def _per_episode(ctx: M.Context, episodes: Sequence[Episode], options, answers) -> list[tuple]:
    """``(queries, extra)`` per episode from (probs, text, hits) per query, in order; the
    token accuracy over an episode's queries where they have hits."""
    out, start = [], 0
    for ep in episodes:
        opts = options[start: start + len(ep.query)]
        got = answers[start: start + len(ep.query)]
        start += len(ep.query)
        terms = answer_terms(opts, ctx.vocab)
        queries = M.records([query_result(q, o, probs, text, terms)
                             for q, o, (probs, text, _) in zip(ep.query, opts, got)])
        hits = [h for *_, h in got]
        extra = {} if any(h is None for h in hits) else {
            "token_accuracy": float(torch.cat(hits).float().mean())}
        out.append((queries, extra))
    return out


RUN = {"adapted": adapted, "no_adaptation": no_adaptation, "zero_shot_text": zero_shot_text,
       "in_context": in_context}
"""Methods with a block implementation; the others run episode by episode."""
