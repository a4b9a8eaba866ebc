"""Splice ECG tokens into the prompt: text pieces + ECG tokens + answers -> LLM inputs.

A prompt is text pieces with one ECG between each two (:class:`ecgqa.qa.collate.Encoded`)::

    piece 0, ECG 1, piece 1, [ECG 2, piece 2,] answer
    --embed pieces, interleave the projector's ECG tokens--> (T_b, d_llm) per sample
    --right-pad--> inputs_embeds (B, T, d_llm), attention (B, T), targets (B, T)

The targets hold, at each position, the answer token it must predict (-100 elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ecgqa.qa.collate import Encoded


@dataclass
class Batch:
    """Model-ready inputs: prompt tokens, ECG features and which ECGs each sample uses."""

    encoded: list[Encoded]
    feats: torch.Tensor                 # (E, n, d_enc), frozen encoder output
    ecg_index: list[tuple[int, ...]]    # per sample, rows of ``feats``


def splice_prompts(embed: Callable[[Sequence[int]], torch.Tensor], batch: Batch,
                   ecg_tok: torch.Tensor, answers: Sequence[Sequence[int]] | None = None,
                   skip_first_piece: bool = False):
    """Interleave prompt pieces and ECG tokens, append answers, right-pad.

    Args:
        embed: token ids -> their ``(len, d)`` input embeddings (called once per batch).
        batch: prompts and which ECG rows each uses.
        ecg_tok: ``(E, m, d)`` ECG tokens.
        answers: answer ids per sample (default: the batch's own; ``[[]]`` for none).
        skip_first_piece: leave out piece 0 (it sits in a prefix cache).

    Returns:
        inputs_embeds (B, T, d), attention_mask (B, T), targets (B, T) with the token
        each position must predict (-100 where there is no loss).
    """
    texts, answer_ids = [], []                  # per sample: its text pieces' ids
    for b, enc in enumerate(batch.encoded):
        ans = list(answers[b]) if answers is not None else list(enc.answer)
        texts.append(list(enc.pieces[int(skip_first_piece):]) + ([ans] if ans else []))
        answer_ids.append(ans)
    # one embedding call for the whole batch, however many pieces: an FSDP-sharded
    # embedding all-gathers per call, and every process must make the same calls
    lengths = [len(p) for pieces in texts for p in pieces]
    embedded = iter(embed([i for pieces in texts for p in pieces for i in p])
                    .split(lengths))                                      # (len, d) each
    rows, targets = [], []
    for b, ans in enumerate(answer_ids):
        parts = [] if skip_first_piece else [next(embedded)]
        for ecg_row in batch.ecg_index[b]:
            parts += [ecg_tok[ecg_row], next(embedded)]
        prompt_len = sum(p.shape[0] for p in parts)
        if ans:
            parts.append(next(embedded))
        seq = torch.cat(parts)                                            # (T_b, d)
        tgt = torch.full((seq.shape[0],), -100, dtype=torch.long, device=seq.device)
        if ans:
            tgt[prompt_len - 1: prompt_len - 1 + len(ans)] = torch.tensor(ans)
        rows.append(seq)
        targets.append(tgt)
    return pad_embeddings(rows, targets)


def pad_embeddings(rows: list[torch.Tensor], targets: list[torch.Tensor]):
    """Right-pad ``(T_i, d)`` rows and their targets: ``(B, T, d)`` embeddings, ``(B, T)``
    attention mask and ``(B, T)`` targets (-100 on padding)."""
    t = max(r.shape[0] for r in rows)
    d = rows[0].shape[1]
    emb = rows[0].new_zeros((len(rows), t, d))
    att = torch.zeros((len(rows), t), dtype=torch.long, device=rows[0].device)
    tgt = torch.full((len(rows), t), -100, dtype=torch.long, device=rows[0].device)
    for i, (r, g) in enumerate(zip(rows, targets)):
        emb[i, : r.shape[0]] = r
        att[i, : r.shape[0]] = 1
        tgt[i, : g.shape[0]] = g
    return emb, att, tgt
