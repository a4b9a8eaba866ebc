"""Batched answering: option scores, greedy answers and teacher-forced hits of many prompts.

Data flow of :func:`answer_batch`::

    prompts --group by shape--> groups of prompts of one length (and option lengths)
    group --prompt pass (first piece from a PrefixMemo)--> last state (G, 1, d), KV cache
      --a copy of the cache, K option continuations per row--> option log-probs (G, K)
      --the cache, one token per step--> greedy answers; a row leaves the batch at EOS,
                                         the loop ends when every row has ended

One prompt pass serves both scoring and generation (the per-prompt path,
:meth:`EcgQaModel.score_options` + :meth:`EcgQaModel.generate`, runs every prompt twice).
Only prompts of one shape share a call, so no row is ever padded, and a row of a matrix
product of two or more rows is computed the same whatever the other rows are (CPU
kernels, measured on the embedded Gemma in bf16): scores and teacher-forced hits equal the
per-prompt path's bit for bit. Greedy decoding multiplies at least two rows per step where
``generate`` on one prompt multiplies one, which a matrix-vector kernel rounds otherwise
in the last bit: an answer can take another token where two are near-tied (see
:func:`greedy`). In float32, matrix kernels may also block products of different row
counts differently (tests bound that by float32 rounding).

FSDP-sharded LLMs must make the same calls on every process: callers use the per-prompt
path for them (:func:`ecgqa.meta.loop.answer_queries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ecgqa.models.kv import PrefixMemo, select_rows
from ecgqa.models.logprobs import OptionScores, pad_scores
from ecgqa.qa.collate import Encoded, encode_answer


@dataclass
class Answers:
    """Per prompt: its option scores, its greedy answer (None when not generated) and its
    teacher-forced answer tokens predicted right (None when not asked or not readable from
    the option pass, see :func:`answer_batch`)."""

    scores: object                  # OptionScores, (B, K)
    texts: list[str | None]
    hits: list[torch.Tensor | None]


def shape_groups(keys: Sequence) -> list[list[int]]:
    """Indices grouped by equal key, groups in order of first appearance."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


def stack_batches(batches: Sequence) -> object:
    """One Batch of several: their prompts in order, their ECG features stacked (rows
    renumbered)."""
    encoded, feats, index, offset = [], [], [], 0
    for b in batches:
        encoded += b.encoded
        feats.append(b.feats)
        index += [tuple(r + offset for r in ix) for ix in b.ecg_index]
        offset += b.feats.shape[0]
    return type(batches[0])(encoded, torch.cat(feats), index)


PROMPT_TOKENS = 1024
"""Most prompt tokens per group of one shape run together (their key/values stay in
memory while they are answered): 20 query prompts of ``default.yaml`` (49 tokens), 2
in-context prompts of 2-way 5-shot (about 430). Peak memory grows with it (2048: +0.15
GB on ``default.yaml``)."""


def _chunks(groups: list[list[int]], lengths: Sequence[int]) -> list[list[int]]:
    """Groups cut into runs of at most :data:`PROMPT_TOKENS` prompt tokens (one prompt at
    least)."""
    out = []
    for g in groups:
        n = max(1, PROMPT_TOKENS // max(1, lengths[g[0]]))
        out += [g[i: i + n] for i in range(0, len(g), n)]
    return out


def _prompt_length(batch, b: int, n_tokens: int) -> int:
    return sum(len(p) for p in batch.encoded[b].pieces) + len(batch.ecg_index[b]) * n_tokens


def _sub(batch, rows: Sequence[int]):
    return type(batch)([batch.encoded[r] for r in rows], batch.feats,
                       [batch.ecg_index[r] for r in rows])


@torch.no_grad()
def answer_batch(model, batch, options: Sequence[Sequence[Sequence[str]]], projector=None,
                 generate: bool = True, max_new_tokens: int | None = None,
                 memo: PrefixMemo | None = None,
                 teachers: Sequence[Sequence[int]] | None = None,
                 ecg_tok: torch.Tensor | None = None) -> Answers:
    """Score every prompt's options and generate its answer, prompts of one shape together.

    With ``teachers`` (per prompt, the true answer's ids, :func:`encode_answer`), the
    teacher-forced hits of a prompt whose true answer is one of its options, as long as the
    longest option, are read from the option pass: the same positions and attention width
    as a teacher-forced pass of that prompt alone (:func:`token_hits`), so the same numbers.

    Args:
        model: an EcgQaModel.
        batch: prompts (built without answers) and ECG features.
        options: per prompt, the candidate answers (each a list of answer terms).
        projector: an adapted stand-in for the projector.
        generate: also generate greedy answers.
        max_new_tokens: generation limit (default the model's).
        memo: first-piece key/values kept across calls (else the prompt runs whole).
        teachers: per prompt, the true answer's ids, for teacher-forced hits.
        ecg_tok: ``(E, m, d)`` ECG tokens of ``batch.feats`` (instead of ``projector``),
            e.g. several episodes' prompts, each episode's from its own adapted projector.

    Returns:
        Answers with the same scores and texts as the per-prompt path.
    """
    if ecg_tok is None:
        ecg_tok = model.ecg_tokens(batch.feats, projector)
    m = ecg_tok.shape[1]
    ans = [[encode_answer(model.template, model.tokenizer, o) for o in opts] for opts in options]
    keys = [(len(batch.encoded[b].pieces[0]), _prompt_length(batch, b, m),
             tuple(len(a) for a in ans[b])) for b in range(len(ans))]
    sums: list = [None] * len(ans)
    means: list = [None] * len(ans)
    texts: list = [None] * len(ans)
    hits: list = [None] * len(ans)
    limit = max_new_tokens or model.cfg.max_new_tokens
    for rows in _chunks(shape_groups(keys), [k[1] for k in keys]):
        last, cache, mask = _prompt_pass(model, _sub(batch, rows), ecg_tok, memo)
        s, mu, hit = _option_logps(model, last, cache, mask, [ans[r] for r in rows])
        k, width = len(ans[rows[0]]), hit.shape[-1]
        for j, r in enumerate(rows):
            sums[r], means[r] = s[j], mu[j]
            truth = tuple(teachers[r]) if teachers is not None else None
            if truth in ans[r] and len(truth) == width:
                hits[r] = hit[j * k + ans[r].index(truth)]
        if generate:
            for r, ids in zip(rows, greedy(model, last, cache, mask, limit)):
                texts[r] = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    logp_sum, logp_mean = pad_scores(sums), pad_scores(means)
    chosen = logp_mean if model.cfg.score_normalise == "mean" else logp_sum
    return Answers(OptionScores(logp_sum, logp_mean, torch.softmax(chosen, dim=-1)), texts,
                   hits)


def _prompt_pass(model, sub, ecg_tok, memo):
    """Run prompts of one shape: last hidden state (G, 1, d), KV cache, mask (G, T).

    With a memo, in up to three parts that give the whole prompt's numbers: the first piece
    from the memo; the ECG slots and text before the last ECG once per distinct head (the
    in-context examples two queries of one episode share), copied to the rows that share
    it; then each row's own rest.
    """
    body = model._body()
    if memo is None or len(sub.encoded[0].pieces) < 2:      # no ECG: the prompt is piece 0
        emb, att, _ = model.splice(sub, ecg_tok, answers=[[]] * len(sub.encoded))
        out = body(inputs_embeds=emb, attention_mask=att, use_cache=True)
        return out.last_hidden_state[:, -1:], getattr(out, model._cache_arg), att
    cache = model.prefix_cache(sub, memo).cache
    done = len(sub.encoded[0].pieces[0])
    shared, rows = _shared_heads(sub)
    if shared:
        firsts = [rows.index(u) for u in range(max(rows) + 1)]
        head = type(sub)([Encoded(pieces=sub.encoded[r].pieces[: shared + 1]) for r in firsts],
                         sub.feats, [sub.ecg_index[r][:shared] for r in firsts])
        cache = select_rows(cache, torch.tensor(firsts))
        done = _extend(model, head, ecg_tok, cache, done)
        cache = select_rows(cache, torch.tensor(rows))
    rest = type(sub)([Encoded(pieces=((),) + e.pieces[shared + 1:]) for e in sub.encoded],
                     sub.feats, [ix[shared:] for ix in sub.ecg_index])
    hidden = _extend(model, rest, ecg_tok, cache, done, keep=True)
    mask = torch.ones((len(sub.encoded), cache.get_seq_length()), dtype=torch.long,
                      device=hidden.device)
    return hidden[:, -1:], cache, mask


def _extend(model, part, ecg_tok, cache, done: int, keep: bool = False):
    """Run ``part`` (its first piece left out) on ``cache``, which holds ``done`` positions
    of every row: the new length, or the hidden states (B, S, d) when ``keep``."""
    emb, att, _ = model.splice(part, ecg_tok, answers=[[]] * len(part.encoded),
                               skip_first_piece=True)
    pos = done + torch.arange(emb.shape[1], device=emb.device).expand(emb.shape[0], -1)
    mask = torch.ones((emb.shape[0], done + emb.shape[1]), dtype=torch.long,
                      device=emb.device)
    out = model._body()(inputs_embeds=emb, attention_mask=mask, position_ids=pos,
                        use_cache=True, **{model._cache_arg: cache})
    return out.last_hidden_state if keep else done + emb.shape[1]


def _shared_heads(sub) -> tuple[int, list[int] | None]:
    """Prompts with several ECGs whose text and ECGs up to the last ECG repeat in the
    group (the in-context examples): the number of ECG slots before the last, and each
    row's distinct head; (0, None) when no head repeats."""
    n = sub.encoded[0].n_ecgs - 1
    if n < 1:
        return 0, None
    keys = [(e.pieces[: n + 1], ix[:n]) for e, ix in zip(sub.encoded, sub.ecg_index)]
    distinct = list(dict.fromkeys(keys))
    if len(distinct) == len(keys):
        return 0, None
    return n, [distinct.index(k) for k in keys]


OPTION_ROWS = 16
"""Most option continuations per LLM call (each holds a copy of its prompt's cache)."""


def _option_logps(model, last, cache, mask, ans) -> tuple[torch.Tensor, ...]:
    """Summed and mean log-probabilities of each row's K options (same K and lengths per
    row), read from copies of the prompts' cache: (G, K) each; and whether each option
    token is the most likely one there (G K, L) (False on padding). Rows go in chunks of
    at most :data:`OPTION_ROWS` continuations (the same numbers: rows are independent)."""
    step = max(1, OPTION_ROWS // len(ans[0]))
    if len(ans) > step:
        parts = [_option_logps(model, last[i: i + step],
                               select_rows(cache, torch.arange(i, min(i + step, len(ans)))),
                               mask[i: i + step], ans[i: i + step])
                 for i in range(0, len(ans), step)]
        return tuple(torch.cat(p) for p in zip(*parts))
    g, k = len(ans), len(ans[0])
    width = max(len(a) for a in ans[0])
    ids = torch.full((g * k, width), model.tokenizer.pad_token_id, dtype=torch.long)
    valid = torch.zeros((g * k, width), dtype=torch.bool)
    for i, a in enumerate(x for row in ans for x in row):
        ids[i, : len(a)] = torch.tensor(a)
        valid[i, : len(a)] = True
    ids, valid = ids.to(model.device), valid.to(model.device)
    rows = torch.arange(g).repeat_interleave(k)
    copy = select_rows(cache, rows)
    full = torch.cat([mask[rows.to(mask.device)], valid.long()], dim=1)   # (G K, T + L)
    hid = model._body()(inputs_embeds=model.llm.get_input_embeddings()(ids),
                        attention_mask=full, use_cache=True,
                        **{model._cache_arg: copy}).last_hidden_state     # (G K, L, d)
    # position 0 of each option is predicted by the prompt's last state
    states = torch.cat([last[rows.to(last.device)], hid[:, :-1]], dim=1)
    logits = model._logits(states[valid])                                 # (N, V)
    hit = torch.zeros_like(valid).masked_scatter(valid, logits.argmax(-1) == ids[valid])
    logp = torch.log_softmax(logits, dim=-1)
    tok = logp.gather(1, ids[valid].unsqueeze(1)).squeeze(1)
    per = torch.zeros((g * k, width), device=tok.device).masked_scatter(valid, tok)
    total = per.sum(1)
    return total.view(g, k), (total / valid.sum(1)).view(g, k), hit


def next_token_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LLM's own logits of ``hidden`` (G, 1, d) as its forward computes them (head and
    softcap in the LLM's dtype), in float32 as ``generate`` reads them: (G, V)."""
    logits = model.llm.get_output_embeddings()(hidden)
    cap = getattr(model.llm.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits[:, -1].float()


def greedy(model, last, cache, mask, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each row from its prompt's last state and cache (consumed):
    token ids up to and including EOS; finished rows leave the batch, and the loop ends
    when every row has ended or after ``max_new_tokens``.

    Every step multiplies at least two rows (a lone row runs twice): CPU matrix kernels
    compute a row of a product of two or more rows the same whatever the other rows are,
    but a product of one row (a matrix-vector kernel) rounds differently in the last bit.
    So a row's answer does not depend on which rows share its batch; it may differ from
    ``generate`` on one prompt (one row per step) where two tokens are near-tied.
    """
    eos = model.tokenizer.eos_token_id
    out: list[list[int]] = [[] for _ in range(last.shape[0])]
    alive = list(range(last.shape[0]))
    if len(alive) == 1:
        last, cache = last.repeat(2, 1, 1), select_rows(cache, torch.zeros(2, dtype=torch.long))
    nxt = next_token_logits(model, last).argmax(-1)                         # (G,)
    length = mask.shape[1]
    for step in range(max_new_tokens):
        for row, t in zip(alive, nxt.tolist()):
            out[row].append(t)
        if step == max_new_tokens - 1:
            break
        keep = [i for i, t in enumerate(nxt.tolist()[: len(alive)]) if t != eos]
        if not keep:
            break
        if len(keep) < nxt.shape[0]:
            alive = [alive[i] for i in keep]
            idx = torch.tensor(keep if len(keep) > 1 else keep * 2)        # at least 2 rows
            cache, nxt = select_rows(cache, idx), nxt[idx.to(nxt.device)]
        length += 1
        att = torch.ones((nxt.shape[0], length), dtype=torch.long, device=nxt.device)
        res = model.llm(input_ids=nxt[:, None], attention_mask=att, use_cache=True,
                        logits_to_keep=1, **{model._cache_arg: cache})
        cache = getattr(res, model._cache_arg)
        nxt = res.logits[:, -1].float().argmax(-1)
    return out


@torch.no_grad()
def token_hits(model, batch, projector=None, memo: PrefixMemo | None = None,
               ecg_tok: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Teacher-forced answer tokens predicted right, per prompt (a bool vector each).

    Prompts of one length (answer included) share a call, as in :func:`answer_batch`; the
    mean over a batch's concatenated vectors is :meth:`EcgQaModel.token_accuracy`.
    """
    if ecg_tok is None:
        ecg_tok = model.ecg_tokens(batch.feats, projector)
    m = ecg_tok.shape[1]
    keys = [(len(e.pieces[0]), _prompt_length(batch, b, m) + len(e.answer))
            for b, e in enumerate(batch.encoded)]
    out: list = [None] * len(keys)
    for rows in shape_groups(keys):
        sub = _sub(batch, rows)
        if memo is None or len(sub.encoded[0].pieces) < 2:
            emb, att, tgt = model.splice(sub, ecg_tok)
            hidden = model._body()(inputs_embeds=emb, attention_mask=att).last_hidden_state
        else:
            hidden, tgt = model._suffix_forward(sub, ecg_tok, model.prefix_cache(sub, memo))
        for j, r in enumerate(rows):
            where = tgt[j] != -100
            out[r] = model._logits(hidden[j][where]).argmax(-1) == tgt[j][where]
    return out
