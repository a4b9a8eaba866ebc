"""Log-probabilities from the frozen LLM's head, computed only where they are used.

    hidden (N, d) at answer positions --lm_head (all tokens, or a few columns)-->
        logits (N, V or v) --log_softmax, gather--> log p(target) (N,)

The embedded Gemma has a 262k-token head, which would otherwise dominate the cost: a
teacher-forced loss may normalise over a smaller vocabulary (:data:`LOSS_VOCABS`), and
candidate answers are scored after a prompt that runs once (its KV cache reused by every
option).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ecgqa.models.splice import Batch
from ecgqa.qa.collate import encode_answer

#: Vocabularies a teacher-forced loss can normalise over: "full" (the LLM's whole head;
#: the honest likelihood), "answers" (only the token ids the batch's answers use, so the
#: head's cost vanishes: a 262k-wide product becomes a few dozen columns) or "top" (the
#: answers' tokens and every answer position's :data:`TOP_TOKENS` most likely tokens: the
#: head runs forward once without a graph to rank them, and the softmax and its backward
#: cover a few thousand columns; the tokens that compete with the answer are still pushed
#: down, which "answers" never does).
LOSS_VOCABS = ("full", "answers", "top")

#: Most likely tokens per answer position that the "top" vocabulary keeps.
TOP_TOKENS = 64


@dataclass
class OptionScores:
    """Per sample and option: summed and mean token log-probabilities, and probabilities."""

    logp_sum: torch.Tensor    # (B, K)
    logp_mean: torch.Tensor   # (B, K)
    probs: torch.Tensor       # (B, K), softmax over options of the chosen normalisation


def head_logits(llm, hidden: torch.Tensor, ids: torch.Tensor | None = None,
                softcap: float | None = None) -> torch.Tensor:
    """float32 logits of ``hidden`` rows: every token's, or only the token ``ids``'.

    Args:
        llm: the LLM whose output embeddings (lm_head) give the logits.
        hidden: ``(N, d)`` last hidden states.
        ids: ``(v,)`` token ids to compute (default all).
        softcap: the LLM's final logit soft-capping (Gemma), or None.
    """
    head = llm.get_output_embeddings()
    if ids is None:
        logits = head(hidden).float()
    else:
        bias = None if getattr(head, "bias", None) is None else head.bias[ids]
        logits = nn.functional.linear(hidden, head.weight[ids], bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def target_logprobs(llm, hidden: torch.Tensor, targets: torch.Tensor, vocab: str = "full",
                    softcap: float | None = None) -> torch.Tensor:
    """log p(target) of ``hidden`` ``(N, d)`` rows; ``vocab`` "answers" normalises over
    the tokens of ``targets`` alone, "top" over those and each row's :data:`TOP_TOKENS`
    most likely tokens (see :data:`LOSS_VOCABS`). ``(N,)``"""
    if vocab == "full":
        logp = torch.log_softmax(head_logits(llm, hidden, softcap=softcap), dim=-1)  # (N, V)
        return logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    if vocab not in LOSS_VOCABS:
        raise ValueError(f"vocab {vocab!r} is not one of {LOSS_VOCABS}")
    keep = targets
    if vocab == "top":
        with torch.no_grad():       # ranked in the head's dtype; softcap keeps the order
            logits = llm.get_output_embeddings()(hidden.detach())          # (N, V)
            top = logits.topk(min(TOP_TOKENS, logits.shape[-1]), dim=-1).indices
        keep = torch.cat([targets, top.flatten()])                          # (N + N k,)
    ids, inverse = torch.unique(keep, return_inverse=True)               # (v,), (N [+ N k],)
    local = inverse[: targets.numel()]
    logp = torch.log_softmax(head_logits(llm, hidden, ids, softcap), dim=-1)   # (N, v)
    return logp.gather(1, local.unsqueeze(1)).squeeze(1)


def group_losses(llm, hidden: torch.Tensor, tgt: torch.Tensor, sizes: Sequence[int],
                 vocab: str = "full", softcap: float | None = None) -> list[torch.Tensor]:
    """Mean negative log-likelihood of the answer tokens of each group of ``sizes``
    consecutive rows; with ``vocab`` "answers" or "top", each group's softmax runs over
    its own tokens.

    Args:
        llm: the LLM whose head gives the logits.
        hidden: ``(B, T, d)`` last hidden states of the whole batch.
        tgt: ``(B, T)`` targets (-100 where there is none).
        sizes: rows per group.
        vocab: see :data:`LOSS_VOCABS`.
        softcap: the LLM's final logit soft-capping, or None.
    """
    where = tgt != -100
    states, targets = hidden[where], tgt[where]                           # (N, d), (N,)
    if vocab == "full":
        logp = target_logprobs(llm, states, targets, softcap=softcap)
    counts = where.sum(1).tolist()
    out, token, row = [], 0, 0
    for n_rows in sizes:
        n = sum(counts[row: row + n_rows])
        if vocab == "full":
            out.append(-logp[token: token + n].clone().mean())   # a fresh tensor, as alone
        else:
            out.append(-target_logprobs(llm, states[token: token + n],
                                        targets[token: token + n], vocab, softcap).mean())
        token, row = token + n, row + n_rows
    return out


def score_prompt(model, batch: Batch, b: int, ecg_tok: torch.Tensor,
                 opts: Sequence[Sequence[str]]) -> tuple[torch.Tensor, ...]:
    """Summed and mean token log-probabilities ``(K,)``, ``(K,)`` of the K options ``opts``
    after prompt ``b`` of ``batch``: the prompt runs once, options reuse its KV cache.

    Args:
        model: the EcgQaModel (its splice, LLM body, head, template and tokenizer).
        batch: the prompts (answers in it are ignored).
        b: which prompt.
        ecg_tok: ``(E, m, d)`` ECG tokens of ``batch.feats``.
        opts: the candidate answers, each a list of answer terms.
    """
    one = Batch([batch.encoded[b]], ecg_tok.new_zeros(0), [batch.ecg_index[b]])
    emb, att, _ = model.splice(one, ecg_tok, answers=[[]])
    out = model._body()(inputs_embeds=emb, attention_mask=att, use_cache=True)
    last = out.last_hidden_state[:, -1]                                  # (1, d)
    ans = [encode_answer(model.template, model.tokenizer, o) for o in opts]
    k, width = len(ans), max(len(a) for a in ans)
    ids = torch.full((k, width), model.tokenizer.pad_token_id, dtype=torch.long)
    valid = torch.zeros((k, width), dtype=torch.bool)
    for i, a in enumerate(ans):
        ids[i, : len(a)] = torch.tensor(a)
        valid[i, : len(a)] = True
    ids, valid = ids.to(model.device), valid.to(model.device)
    cache = getattr(out, model._cache_arg)
    cache.batch_repeat_interleave(k)
    mask = torch.cat([att.expand(k, -1), valid.long()], dim=1)          # (K, T + L)
    hid = model._body()(inputs_embeds=model.llm.get_input_embeddings()(ids),
                        attention_mask=mask, use_cache=True,
                        **{model._cache_arg: cache}).last_hidden_state   # (K, L, d)
    # position 0 of each option is predicted by the prompt's last state
    states = torch.cat([last.expand(k, -1).unsqueeze(1), hid[:, :-1]], dim=1)
    logp = torch.log_softmax(model._logits(states[valid]), dim=-1)
    tok = logp.gather(1, ids[valid].unsqueeze(1)).squeeze(1)
    per = torch.zeros((k, width), device=tok.device).masked_scatter(valid, tok)
    lengths = valid.sum(1)
    return per.sum(1), per.sum(1) / lengths


def pad_scores(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-sample option scores of different lengths, -inf where there is no option."""
    k = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), k), float("-inf"), device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out
