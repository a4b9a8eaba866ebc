"""Key/values of the prompts' first pieces, computed once and reused.

A prompt's first piece (everything before its first ECG: the system text and, in the
``question_first`` layout, the question) does not depend on the projector, so an inner
loop computes its key/values once and reuses them at every step::

    first pieces --left-pad, explicit positions--> PrefixCache (B, P)
    rest of each prompt (ECG tokens, later pieces, answer) --LLM body on top of the
        cache--> hidden (B, S, d) --PrefixCache.restore--> the cache as it was

Positions are passed explicitly and padding is masked, so the results equal the uncached
computation. The functions take an :class:`~ecgqa.models.fusion.EcgQaModel` (its LLM
body, embeddings, tokenizer and cache keyword); its methods ``prefix_cache`` and
``_suffix_forward`` call them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ecgqa.models.kv import PrefixMemo, select_rows, stack_rows, supports_row_copies
from ecgqa.models.splice import Batch


@dataclass
class PrefixCache:
    """Key/values of the prompts' first pieces (left-padded) for reuse across steps."""

    cache: object             # a transformers Cache, batch B, length P
    mask: torch.Tensor        # (B, P) 1 on real tokens
    lengths: torch.Tensor     # (B,) real tokens per prompt

    def restore(self) -> None:
        """Drop what a forward pass appended and cut the prefix out of its autograd graph."""
        extra = self.cache.get_seq_length() - self.mask.shape[1]
        if extra > 0:
            self.cache.crop(-extra)
        layers = getattr(self.cache, "layers", None)
        if layers is not None:
            for layer in layers:
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
        else:                                                   # older transformers
            self.cache.key_cache = [k.detach() for k in self.cache.key_cache]
            self.cache.value_cache = [v.detach() for v in self.cache.value_cache]


@torch.no_grad()
def prefix_cache(model, batch: Batch, memo: PrefixMemo | None = None,
                 dedupe: bool = True) -> PrefixCache:
    """Key/value cache of every prompt's first piece (before the first ECG).

    Pieces are left-padded to one length; positions are passed explicitly, so results
    equal the uncached computation.

    Args:
        model: the EcgQaModel whose LLM runs the pieces.
        batch: the prompts.
        memo: prefixes kept across calls (the bench); used when every first piece has
            the same length (no padding), so each is computed alone once.
        dedupe: compute each distinct first piece once and copy it to the rows that
            share it (False: one row per prompt, as before; the numbers are the same).
    """
    firsts = [tuple(e.pieces[0]) for e in batch.encoded]
    width = max(len(f) for f in firsts)
    _, mask = left_padded(model, firsts, width)
    unique = list(dict.fromkeys(firsts)) if dedupe or memo is not None else firsts
    rows = torch.tensor([unique.index(f) for f in firsts]) if len(unique) < len(firsts) \
        else None
    if memo is not None and len({len(f) for f in unique}) == 1:
        caches = [memo_prefix(model, f, memo) for f in unique]
        if caches[0] is not None:
            return PrefixCache(stack_rows(caches, rows.tolist() if rows is not None
                                          else range(len(firsts))), mask, mask.sum(1))
    if dedupe and all(e.shared for e in batch.encoded):                # measured values
        heads = [f[: e.shared] for f, e in zip(firsts, batch.encoded)]
        if len(set(heads)) < len(heads):
            two = two_level_prefix(model, heads, [f[len(h):] for f, h in zip(firsts, heads)])
            if two is not None:
                return two
    cache = prefix_forward(model, unique, width)
    if rows is not None:
        cache = select_rows(cache, rows) if supports_row_copies(cache) \
            else prefix_forward(model, firsts, width)
    return PrefixCache(cache, mask, mask.sum(1))


def two_level_prefix(model, heads: list[tuple[int, ...]], tails: list[tuple[int, ...]]
                     ) -> PrefixCache | None:
    """The prefix cache of first pieces ``head + tail`` whose heads (the question) repeat
    and whose tails (each record's measured values) do not: each distinct head once,
    copied to its rows, then every row's tail on top of it in one call. Holes where a
    row's head or tail is shorter than the widest are masked out, and positions are
    explicit, so the numbers are those of each whole first piece. None when this LLM's
    cache cannot be copied by rows."""
    unique = list(dict.fromkeys(heads))
    width_h = max(len(h) for h in unique)
    cache = prefix_forward(model, unique, width_h)
    if not supports_row_copies(cache):
        return None
    cache = select_rows(cache, torch.tensor([unique.index(h) for h in heads]))
    _, head_mask = left_padded(model, heads, width_h)                     # (B, Ph)
    ids, tail_mask = left_padded(model, tails, max(len(t) for t in tails))   # (B, Pt)
    pos = head_mask.sum(1, keepdim=True) + (tail_mask.cumsum(1) - 1).clamp(min=0)
    mask = torch.cat([head_mask, tail_mask], dim=1)                       # (B, Ph + Pt)
    model._body()(inputs_embeds=model.llm.get_input_embeddings()(ids), attention_mask=mask,
                  position_ids=pos, use_cache=True, **{model._cache_arg: cache})
    return PrefixCache(cache, mask, mask.sum(1))


def left_padded(model, firsts: list[tuple[int, ...]], width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` ``(len(firsts), width)`` long: ``firsts`` left-padded, on the
    model's device."""
    ids = torch.full((len(firsts), width), model.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(firsts), width), dtype=torch.long)
    for i, f in enumerate(firsts):
        ids[i, width - len(f):] = torch.as_tensor(f, dtype=torch.long)
        mask[i, width - len(f):] = 1
    return ids.to(model.device), mask.to(model.device)


def prefix_forward(model, firsts: list[tuple[int, ...]], width: int):
    """The cache of ``firsts`` left-padded to ``width`` (one LLM call)."""
    ids, mask = left_padded(model, firsts, width)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    out = model._body()(inputs_embeds=model.llm.get_input_embeddings()(ids),
                        attention_mask=mask, position_ids=pos, use_cache=True)
    return getattr(out, model._cache_arg)


def memo_prefix(model, first: tuple[int, ...], memo: PrefixMemo):
    """One prefix from ``memo``, computed alone when missing; None if this LLM's cache
    cannot be copied by rows."""
    cache = memo.get(first)
    if cache is None:
        cache = prefix_forward(model, [first], len(first))
        if not supports_row_copies(cache):
            return None
        memo.put(first, cache)
    return cache


def suffix_forward(model, batch: Batch, ecg_tok, prefix: PrefixCache, answers=None):
    """The LLM's last hidden states ``(B, S, d)`` of each prompt's rest (ECG tokens, later
    pieces, answer) on top of ``prefix``, and their targets ``(B, S)``; ``prefix`` is
    restored afterwards."""
    emb, att, tgt = model.splice(batch, ecg_tok, answers, skip_first_piece=True)
    pos = prefix.lengths.unsqueeze(1) + torch.arange(emb.shape[1], device=emb.device)
    mask = torch.cat([prefix.mask, att], dim=1)                           # (B, P + S)
    try:
        hidden = model._body()(inputs_embeds=emb, attention_mask=mask, position_ids=pos,
                               use_cache=True, **{model._cache_arg: prefix.cache}
                               ).last_hidden_state                        # (B, S, d)
    finally:
        prefix.restore()
    return hidden, tgt
