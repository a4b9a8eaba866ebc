"""EcgQaModel: frozen ECG encoder -> trainable projector -> ECG tokens in a frozen LLM's prompt.

Data flow of one batch (shapes at each step)::

    signals (E, leads, t) --encode_ecg--> feats (E, n, d_enc)        [frozen, no grad]
    feats --ecg_tokens--> (E, m, d_llm)                               [projector, trainable]
    prompt pieces + ECG tokens --splice--> inputs_embeds (B, T, d_llm), attention (B, T)
    --LLM body--> hidden (B, T, d_llm) --lm_head at answer positions only--> log p(answer)

Logits are computed only where they are used (answer positions, option tokens): the
embedded Gemma has a 262k-token head, which would otherwise dominate the cost. Which
parts train is decided here alone: the encoder and the LLM are frozen in the constructor.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgqa.config import (
    field,
    read_yaml_sections,
    save_config,
    section_config,
    short,
)
from ecgqa.errors import EcgqaError
from ecgqa.models.kv import PrefixMemo, select_rows, stack_rows, supports_row_copies
from ecgqa.models.llm import LlmConfig, load_llm
from ecgqa.models.projectors import build_projector
from ecgqa.qa.collate import (
    LAYOUTS,
    MARKER,
    Encoded,
    PromptError,
    PromptTemplate,
    encode_answer,
    encode_sample,
)

FORMAT_VERSION = 1

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


class SavedModelError(EcgqaError):
    """A saved model folder (``config.yaml`` + ``projector.safetensors``) is missing,
    incomplete or corrupt; the message names the file."""


@dataclass
class ModelConfig:
    llm: LlmConfig = field(LlmConfig(), help="the frozen language model")
    encoder: str = field("default", help="'default' (the shipped pretrained encoder), a saved "
                         "encoder folder, or a registered encoder name (random weights)")
    encoder_kwargs: dict = field({}, help="constructor arguments for a registered encoder name")
    projector: str = field("attention", help="linear, mlp, attention or qformer")
    projector_kwargs: dict = field({}, help="extra projector arguments (dim, heads, layers ...)")
    n_ecg_tokens: int = field(8, help="ECG tokens per ECG spliced into the prompt")
    layout: str = field("question_first", help="question_first or ecg_first")
    prompt_file: str | None = field(None, help="prompt YAML (default prompts/qa.yaml)")
    score_normalise: str = field("mean", help="option scores: mean (length-normalised) or sum "
                                 "of token log-probabilities")
    max_new_tokens: int = field(24, help="generation length limit")
    measurements: bool = field(False, help="write each ECG's measured heart rate, RR, PR, QRS, "
                               "QT and QTc (ecgqa.records.measure, on the model-ready signal, "
                               "once per record) into the prompt's {measured} slot")


@dataclass
class Batch:
    """Model-ready inputs: prompt tokens, ECG features and which ECGs each sample uses."""

    encoded: list[Encoded]
    feats: torch.Tensor                 # (E, n, d_enc), frozen encoder output
    ecg_index: list[tuple[int, ...]]    # per sample, rows of ``feats``


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


@dataclass
class OptionScores:
    """Per sample and option: summed and mean token log-probabilities, and probabilities."""

    logp_sum: torch.Tensor    # (B, K)
    logp_mean: torch.Tensor   # (B, K)
    probs: torch.Tensor       # (B, K), softmax over options of the chosen normalisation


class EcgQaModel(nn.Module):
    """The ECG-language model. Only ``projector`` has trainable parameters."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, llm: nn.Module, tokenizer,
                 cfg: ModelConfig, template: PromptTemplate):
        super().__init__()
        self.encoder, self.projector, self.llm = encoder, projector, llm
        self.tokenizer, self.cfg, self.template = tokenizer, cfg, template
        for frozen in (self.encoder, self.llm):
            frozen.eval()
            for p in frozen.parameters():
                p.requires_grad_(False)
        scale = getattr(llm.get_input_embeddings(), "embed_scale", None)
        self.embed_scale = float(scale) if scale is not None else 1.0
        self.softcap = getattr(llm.config, "final_logit_softcapping", None)
        self.quantized = any(type(mod).__module__.startswith("bitsandbytes")
                             for mod in llm.modules())
        # the cache keyword: ``cache`` in newer transformers, ``past_key_values`` before
        params = inspect.signature(self._body().forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        if cfg.measurements and not template.has_measured:
            raise PromptError("measurements: true needs a prompt with a {measured} slot in "
                              "both layouts (prompts/qa.yaml has one)")
        # encoder features and measurements per signal source and ecg id (both fixed)
        self._feature_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._measure_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, cfg: ModelConfig) -> EcgQaModel:
        """Load the LLM and encoder named in ``cfg`` and a fresh projector."""
        llm, tok = load_llm(cfg.llm)
        encoder = _load_encoder(cfg)
        template = PromptTemplate.load(cfg.layout, cfg.prompt_file)
        projector = build_projector(cfg.projector, d_enc=encoder.out_dim,
                                    d_llm=llm.config.hidden_size, n_tokens=cfg.n_ecg_tokens,
                                    **cfg.projector_kwargs)
        return cls(encoder, projector, llm, tok, cfg, template)

    def train(self, mode: bool = True) -> EcgQaModel:
        super().train(mode)
        self.encoder.eval()          # frozen parts never switch to training behaviour
        self.llm.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.projector.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ ECG side

    @torch.no_grad()
    def encode_ecg(self, signals: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen encoder: ``(E, leads, t)`` mV -> ``(E, n, d_enc)``."""
        return self.encoder(signals.float(), masks)

    def ecg_tokens(self, feats: torch.Tensor, projector=None) -> torch.Tensor:
        """Projector: ``(E, n, d_enc)`` -> ``(E, m, d_llm)`` at the LLM's embedding scale.

        Args:
            feats: frozen encoder features.
            projector: a stand-in for ``self.projector`` (an inner-loop learner, whose
                parameters are adapted copies); default the model's own.
        """
        proj = self.projector if projector is None else projector
        tokens = proj(feats)                                      # (E, m, d_llm)
        return (tokens * self.embed_scale).to(self._dtype)

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def sharded(self) -> bool:
        """Whether the LLM is FSDP-sharded (every process must then make the same calls)."""
        return bool(getattr(self.llm, "_is_fsdp_managed_module", False))

    @property
    def _dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def signal_cache(self, resolver, cache_dir=None):
        """A SignalCache that brings every record to this encoder's input spec
        (leads, rate, duration), so any record format and rate can be fed."""
        from ecgqa.qa.cache import SignalCache

        spec = self.encoder.input_spec
        return SignalCache(resolver, fs=spec.fs, duration_s=spec.duration_s,
                           leads=tuple(spec.leads), cache_dir=cache_dir)

    def make_batch(self, samples: Sequence, signals, with_answers: bool = True) -> Batch:
        """Tokenise ``samples`` (QaSample-like) and encode their ECGs (cached per ecg id).

        Args:
            samples: objects with ``question``, ``answer`` and ``ecg_ids``.
            signals: ``get(ecg_id) -> (signal (leads, t), mask (leads,))``, e.g. SignalCache.
            with_answers: tokenise answers too (training, teacher forcing).
        """
        ids = sorted({i for s in samples for i in s.ecg_ids})
        cache = self._features_of(signals)
        for i in (i for i in ids if i not in cache):
            cache[i] = self._encode_record(i, signals)
        row = {i: k for k, i in enumerate(ids)}
        feats = torch.stack([cache[i] for i in ids])                    # (E, n, d_enc)
        encoded = [self.encode_sample(s, signals, with_answers) for s in samples]
        return Batch(encoded, feats, [tuple(row[i] for i in s.ecg_ids) for s in samples])

    def encode_sample(self, sample, signals, with_answers: bool = True) -> Encoded:
        """The prompt (and answer) tokens of one QaSample-like ``sample``; with
        ``measurements``, its ECGs' measured values are in the prompt."""
        return encode_sample(self.template, self.tokenizer, sample.question,
                             len(sample.ecg_ids), sample.answer if with_answers else None,
                             self.measured(sample.ecg_ids, signals))

    def measured(self, ecg_ids: Sequence[int], signals) -> list[dict] | None:
        """Each ECG's ``Measurements.as_dict()`` (cached per signal source and ecg id), or
        None when the model does not put measurements in its prompts."""
        if not self.cfg.measurements:
            return None
        cache = self._cache_of(self._measure_cache, signals)
        for i in (i for i in ecg_ids if i not in cache):
            cache[i] = self._measure_record(i, signals)
        return [cache[i] for i in ecg_ids]

    def encode_records(self, ecg_ids: Iterable[int], signals, progress: bool = False,
                       desc: str = "encoding ECGs") -> int:
        """Read and encode, up front, the ECGs of ``ecg_ids`` that :meth:`make_batch` has not
        encoded yet for ``signals`` (the same features it would compute on first use; with
        ``measurements``, also their measurements).

        A training or benchmark run calls it before its first step, so that no step pays
        for first reads and encodings. Returns how many ECGs were encoded.
        """
        from tqdm.auto import tqdm

        cache = self._features_of(signals)
        todo = sorted({int(i) for i in ecg_ids} - set(cache))
        for i in tqdm(todo, desc=desc, unit="ecg", disable=not progress, leave=False):
            cache[i] = self._encode_record(i, signals)
            self.measured((i,), signals)
        return len(todo)

    def _measure_record(self, ecg_id: int, signals) -> dict:
        """Measurements of one ECG's model-ready signal (the encoder's leads, rate and
        duration). Its units are not known here (a source may be z-scored), so it is
        measured as normalised units: no QRS axis."""
        from ecgqa.records.measure import measure
        from ecgqa.records.read import EcgRecord

        sig, mask = signals.get(ecg_id)
        spec = self.encoder.input_spec
        rec = EcgRecord(signal=np.asarray(sig, dtype=np.float32), fs=float(spec.fs),
                        leads=tuple(spec.leads), lead_mask=np.asarray(mask, dtype=bool),
                        units="NU")
        return measure(rec).as_dict()

    @torch.no_grad()
    def _encode_record(self, ecg_id: int, signals) -> torch.Tensor:
        """``(n, d_enc)`` encoder features of one ECG.

        One ECG per encoder call: a record's features must not depend on which other
        records shared its batch (kernels differ in rounding by batch size), or a resumed
        or multi-process run would drift from an uninterrupted one.
        """
        dev = next(self.encoder.parameters()).device
        sig, mask = signals.get(ecg_id)
        x = torch.as_tensor(sig[None], device=dev)                       # (1, leads, t)
        m = torch.as_tensor(mask[None], device=dev)                      # (1, leads)
        return self.encode_ecg(x, m)[0]                                  # (n, d_enc)

    def _features_of(self, signals) -> dict:
        return self._cache_of(self._feature_cache, signals)

    @staticmethod
    def _cache_of(store: weakref.WeakKeyDictionary, signals) -> dict:
        try:
            return store.setdefault(signals, {})
        except TypeError:                        # not weak-referenceable: no caching
            return {}

    # ------------------------------------------------------------------ splicing

    def _embed(self, ids: Sequence[int]) -> torch.Tensor:
        t = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(t)                        # (len, d)

    def splice(self, batch: Batch, ecg_tok: torch.Tensor, answers: Sequence[Sequence[int]]
               | None = None, skip_first_piece: bool = False):
        """Interleave prompt pieces and ECG tokens, append answers, right-pad.

        Args:
            batch: prompts and which ECG rows each uses.
            ecg_tok: ``(E, m, d)`` ECG tokens.
            answers: answer ids per sample (default: the batch's own; ``[[]]`` for none).
            skip_first_piece: leave out piece 0 (it sits in a :class:`PrefixCache`).

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
        embedded = iter(self._embed([i for pieces in texts for p in pieces for i in p])
                        .split(lengths))                                  # (len, d) each
        rows, targets = [], []
        for b, ans in enumerate(answer_ids):
            parts = [] if skip_first_piece else [next(embedded)]
            for ecg_row in batch.ecg_index[b]:
                parts += [ecg_tok[ecg_row], next(embedded)]
            prompt_len = sum(p.shape[0] for p in parts)
            if ans:
                parts.append(next(embedded))
            seq = torch.cat(parts)                                        # (T_b, d)
            tgt = torch.full((seq.shape[0],), -100, dtype=torch.long, device=seq.device)
            if ans:
                tgt[prompt_len - 1: prompt_len - 1 + len(ans)] = torch.tensor(ans)
            rows.append(seq)
            targets.append(tgt)
        return pad_embeddings(rows, targets)

    @torch.no_grad()
    def prefix_cache(self, batch: Batch, memo: PrefixMemo | None = None,
                     dedupe: bool = True) -> PrefixCache:
        """Key/value cache of every prompt's first piece (before the first ECG).

        That piece does not depend on the projector, so an inner loop computes it once and
        reuses it at every step (question_first puts the whole question there). Pieces are
        left-padded to one length; positions are passed explicitly, so results equal the
        uncached computation.

        Args:
            batch: the prompts.
            memo: prefixes kept across calls (the bench); used when every first piece has
                the same length (no padding), so each is computed alone once.
            dedupe: compute each distinct first piece once and copy it to the rows that
                share it (False: one row per prompt, as before; the numbers are the same).
        """
        firsts = [tuple(e.pieces[0]) for e in batch.encoded]
        width = max(len(f) for f in firsts)
        _, mask = self._left_padded(firsts, width)
        unique = list(dict.fromkeys(firsts)) if dedupe or memo is not None else firsts
        rows = torch.tensor([unique.index(f) for f in firsts]) if len(unique) < len(firsts) \
            else None
        if memo is not None and len({len(f) for f in unique}) == 1:
            caches = [self._memo_prefix(f, memo) for f in unique]
            if caches[0] is not None:
                return PrefixCache(stack_rows(caches, rows.tolist() if rows is not None
                                              else range(len(firsts))), mask, mask.sum(1))
        if dedupe and all(e.shared for e in batch.encoded):            # measured values
            heads = [f[: e.shared] for f, e in zip(firsts, batch.encoded)]
            if len(set(heads)) < len(heads):
                two = self._two_level_prefix(heads, [f[len(h):] for f, h in zip(firsts, heads)])
                if two is not None:
                    return two
        cache = self._prefix_forward(unique, width)
        if rows is not None:
            cache = select_rows(cache, rows) if supports_row_copies(cache) \
                else self._prefix_forward(firsts, width)
        return PrefixCache(cache, mask, mask.sum(1))

    def _two_level_prefix(self, heads: list[tuple[int, ...]], tails: list[tuple[int, ...]]
                          ) -> PrefixCache | None:
        """The prefix cache of first pieces ``head + tail`` whose heads (the question) repeat
        and whose tails (each record's measured values) do not: each distinct head once,
        copied to its rows, then every row's tail on top of it in one call. Holes where a
        row's head or tail is shorter than the widest are masked out, and positions are
        explicit, so the numbers are those of each whole first piece. None when this LLM's
        cache cannot be copied by rows."""
        unique = list(dict.fromkeys(heads))
        width_h = max(len(h) for h in unique)
        cache = self._prefix_forward(unique, width_h)
        if not supports_row_copies(cache):
            return None
        cache = select_rows(cache, torch.tensor([unique.index(h) for h in heads]))
        _, head_mask = self._left_padded(heads, width_h)                 # (B, Ph)
        ids, tail_mask = self._left_padded(tails, max(len(t) for t in tails))   # (B, Pt)
        pos = head_mask.sum(1, keepdim=True) + (tail_mask.cumsum(1) - 1).clamp(min=0)
        mask = torch.cat([head_mask, tail_mask], dim=1)                   # (B, Ph + Pt)
        self._body()(inputs_embeds=self.llm.get_input_embeddings()(ids), attention_mask=mask,
                     position_ids=pos, use_cache=True, **{self._cache_arg: cache})
        return PrefixCache(cache, mask, mask.sum(1))

    def _left_padded(self, firsts: list[tuple[int, ...]], width: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` ``(len(firsts), width)`` long: ``firsts`` left-padded, on the
        model's device."""
        ids = torch.full((len(firsts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(firsts), width), dtype=torch.long)
        for i, f in enumerate(firsts):
            ids[i, width - len(f):] = torch.as_tensor(f, dtype=torch.long)
            mask[i, width - len(f):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prefix_forward(self, firsts: list[tuple[int, ...]], width: int):
        """The cache of ``firsts`` left-padded to ``width`` (one LLM call)."""
        ids, mask = self._left_padded(firsts, width)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self._body()(inputs_embeds=self.llm.get_input_embeddings()(ids),
                           attention_mask=mask, position_ids=pos, use_cache=True)
        return getattr(out, self._cache_arg)

    def _memo_prefix(self, first: tuple[int, ...], memo: PrefixMemo):
        """One prefix from ``memo``, computed alone when missing; None if this LLM's cache
        cannot be copied by rows."""
        cache = memo.get(first)
        if cache is None:
            cache = self._prefix_forward([first], len(first))
            if not supports_row_copies(cache):
                return None
            memo.put(first, cache)
        return cache

    def _suffix_forward(self, batch: Batch, ecg_tok, prefix: PrefixCache, answers=None):
        emb, att, tgt = self.splice(batch, ecg_tok, answers, skip_first_piece=True)
        pos = prefix.lengths.unsqueeze(1) + torch.arange(emb.shape[1], device=emb.device)
        mask = torch.cat([prefix.mask, att], dim=1)                       # (B, P + S)
        try:
            hidden = self._body()(inputs_embeds=emb, attention_mask=mask, position_ids=pos,
                                  use_cache=True, **{self._cache_arg: prefix.cache}
                                  ).last_hidden_state                     # (B, S, d)
        finally:
            prefix.restore()
        return hidden, tgt

    # ------------------------------------------------------------------ LLM side

    def _body(self):
        return getattr(self.llm, self.llm.base_model_prefix)

    def _logits(self, hidden: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits of ``hidden`` rows: every token's, or only the token ``ids``'."""
        head = self.llm.get_output_embeddings()
        if ids is None:
            logits = head(hidden).float()
        else:
            bias = None if getattr(head, "bias", None) is None else head.bias[ids]
            logits = nn.functional.linear(hidden, head.weight[ids], bias).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def token_logprobs(self, inputs_embeds, attention_mask, targets) -> torch.Tensor:
        """log p(target) at every position with a target; lm_head only there. (N,)"""
        hidden = self._body()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state          # (B, T, d)
        where = targets != -100
        return self._target_logprobs(hidden[where], targets[where])

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor,
                         vocab: str = "full") -> torch.Tensor:
        """log p(target) of ``hidden`` ``(N, d)`` rows; ``vocab`` "answers" normalises over
        the tokens of ``targets`` alone, "top" over those and each row's :data:`TOP_TOKENS`
        most likely tokens (see :data:`LOSS_VOCABS`). ``(N,)``"""
        if vocab == "full":
            logp = torch.log_softmax(self._logits(hidden), dim=-1)        # (N, V)
            return logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        if vocab not in LOSS_VOCABS:
            raise ValueError(f"vocab {vocab!r} is not one of {LOSS_VOCABS}")
        keep = targets
        if vocab == "top":
            with torch.no_grad():       # ranked in the head's dtype; softcap keeps the order
                logits = self.llm.get_output_embeddings()(hidden.detach())  # (N, V)
                top = logits.topk(min(TOP_TOKENS, logits.shape[-1]), dim=-1).indices
            keep = torch.cat([targets, top.flatten()])                      # (N + N k,)
        ids, inverse = torch.unique(keep, return_inverse=True)           # (v,), (N [+ N k],)
        local = inverse[: targets.numel()]
        logp = torch.log_softmax(self._logits(hidden, ids), dim=-1)       # (N, v)
        return logp.gather(1, local.unsqueeze(1)).squeeze(1)

    def loss(self, batch: Batch, prefix: PrefixCache | None = None,
             projector=None, vocab: str = "full") -> torch.Tensor:
        """Mean negative log-likelihood of the answer tokens (teacher forcing).

        Args:
            batch: prompts, answers and ECG features.
            prefix: the batch's :meth:`prefix_cache`, to skip recomputing the first pieces.
            projector: an adapted stand-in for the projector (see :meth:`ecg_tokens`).
            vocab: "full": softmax over the LLM's whole vocabulary; "answers": over the
                tokens of the batch's answers only (the inner loop's cheap loss: no
                262k-wide head); "top": over those and each answer position's most likely
                tokens (see :data:`LOSS_VOCABS`).
        """
        self._check_trainable()
        logp, _ = self._answer_logprobs(batch, self.ecg_tokens(batch.feats, projector), prefix,
                                        vocab)
        return -logp.mean()

    def _answer_logprobs(self, batch: Batch, ecg_tok: torch.Tensor,
                         prefix: PrefixCache | None = None, vocab: str = "full"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p of every answer token, sample after sample ``(N,)``, and the targets
        ``(B, T)`` (-100 where there is none); with ``prefix``, from the prompts' rest."""
        hidden, tgt = self._answer_states(batch, ecg_tok, prefix)
        where = tgt != -100
        return self._target_logprobs(hidden[where], tgt[where], vocab), tgt    # (N,)

    def _answer_states(self, batch: Batch, ecg_tok: torch.Tensor,
                       prefix: PrefixCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM's last hidden states ``(B, T', d)`` and targets ``(B, T')`` of a batch
        (with ``prefix``: of the prompts' rest only)."""
        if prefix is None:
            emb, att, tgt = self.splice(batch, ecg_tok)
            hidden = self._body()(inputs_embeds=emb, attention_mask=att,
                                  use_cache=False).last_hidden_state
            return hidden, tgt
        return self._suffix_forward(batch, ecg_tok, prefix)

    def group_losses(self, batch: Batch, ecg_tok: torch.Tensor, sizes: Sequence[int],
                     prefix: PrefixCache | None = None, vocab: str = "full"
                     ) -> list[torch.Tensor]:
        """The :meth:`loss` of each group of ``sizes`` consecutive samples (one episode
        each), from one LLM pass over the whole batch.

        Each group's loss is computed as :meth:`loss` computes it for the group alone, on
        more rows: the same numbers where every group's prompts have the same shapes as
        the others' (no padding is added; the bench batches only such episodes). With
        ``vocab`` "answers" or "top", each group's softmax runs over its own tokens.

        Args:
            batch: the groups' samples, group after group.
            ecg_tok: ``(E, m, d)`` ECG tokens of the batch (each group's from its own
                projector).
            sizes: samples per group.
            prefix: the batch's :meth:`prefix_cache`.
            vocab: as in :meth:`loss`.
        """
        self._check_trainable()
        hidden, tgt = self._answer_states(batch, ecg_tok, prefix)
        where = tgt != -100
        states, targets = hidden[where], tgt[where]                       # (N, d), (N,)
        if vocab == "full":
            logp = self._target_logprobs(states, targets)
        counts = where.sum(1).tolist()
        out, token, row = [], 0, 0
        for n_rows in sizes:
            n = sum(counts[row: row + n_rows])
            if vocab == "full":
                out.append(-logp[token: token + n].clone().mean())   # a fresh tensor, as alone
            else:
                out.append(-self._target_logprobs(states[token: token + n],
                                                  targets[token: token + n], vocab).mean())
            token, row = token + n, row + n_rows
        return out

    def _check_trainable(self) -> None:
        if not (self.quantized and torch.is_grad_enabled() and self.device.type == "cpu"):
            return
        from ecgqa.models.quantized import is_cpu_trainable

        if not is_cpu_trainable(self.llm):   # load_llm makes them so; a hand-built LLM may not
            from ecgqa.models.llm import LlmError

            raise LlmError("bitsandbytes 4/8-bit layers give wrong gradients on the CPU; "
                           "call ecgqa.models.quantized.make_cpu_trainable(llm) right after "
                           "loading (load_llm does)")

    def token_accuracy(self, batch: Batch, projector=None) -> float:
        """Teacher-forced answer-token accuracy: a side metric, never the headline score."""
        with torch.no_grad():
            emb, att, tgt = self.splice(batch, self.ecg_tokens(batch.feats, projector))
            hidden = self._body()(inputs_embeds=emb, attention_mask=att).last_hidden_state
            where = tgt != -100
            pred = self._logits(hidden[where]).argmax(-1)
            return float((pred == tgt[where]).float().mean())

    # ------------------------------------------------------------------ answering

    @torch.no_grad()
    def score_options(self, batch: Batch, options: Sequence[Sequence[Sequence[str]]],
                      projector=None) -> OptionScores:
        """Score candidate answers after each prompt (the question has been read).

        Args:
            batch: prompts and ECG features (answers in it are ignored).
            options: per sample, the candidate answers (each a list of answer terms).
            projector: an adapted stand-in for the projector (see :meth:`ecg_tokens`).
        """
        ecg_tok = self.ecg_tokens(batch.feats, projector)
        sums, means = [], []
        for b in range(len(batch.encoded)):
            s, m = self._score_one(batch, b, ecg_tok, options[b])
            sums.append(s)
            means.append(m)
        logp_sum, logp_mean = pad_scores(sums), pad_scores(means)
        chosen = logp_mean if self.cfg.score_normalise == "mean" else logp_sum
        return OptionScores(logp_sum, logp_mean, torch.softmax(chosen, dim=-1))

    def _score_one(self, batch: Batch, b: int, ecg_tok, opts) -> tuple[torch.Tensor, ...]:
        """One prompt, K options: the prompt runs once, options reuse its KV cache."""
        one = Batch([batch.encoded[b]], ecg_tok.new_zeros(0), [batch.ecg_index[b]])
        emb, att, _ = self.splice(one, ecg_tok, answers=[[]])
        out = self._body()(inputs_embeds=emb, attention_mask=att, use_cache=True)
        last = out.last_hidden_state[:, -1]                                  # (1, d)
        ans = [encode_answer(self.template, self.tokenizer, o) for o in opts]
        k, width = len(ans), max(len(a) for a in ans)
        ids = torch.full((k, width), self.tokenizer.pad_token_id, dtype=torch.long)
        valid = torch.zeros((k, width), dtype=torch.bool)
        for i, a in enumerate(ans):
            ids[i, : len(a)] = torch.tensor(a)
            valid[i, : len(a)] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        cache = getattr(out, self._cache_arg)
        cache.batch_repeat_interleave(k)
        mask = torch.cat([att.expand(k, -1), valid.long()], dim=1)          # (K, T + L)
        hid = self._body()(inputs_embeds=self.llm.get_input_embeddings()(ids),
                           attention_mask=mask, use_cache=True,
                           **{self._cache_arg: cache}).last_hidden_state     # (K, L, d)
        # position 0 of each option is predicted by the prompt's last state
        states = torch.cat([last.expand(k, -1).unsqueeze(1), hid[:, :-1]], dim=1)
        logp = torch.log_softmax(self._logits(states[valid]), dim=-1)
        tok = logp.gather(1, ids[valid].unsqueeze(1)).squeeze(1)
        per = torch.zeros((k, width), device=tok.device).masked_scatter(valid, tok)
        lengths = valid.sum(1)
        return per.sum(1), per.sum(1) / lengths

    @torch.no_grad()
    def generate(self, batch: Batch, b: int = 0, max_new_tokens: int | None = None,
                 streamer=None, projector=None) -> str:
        """Greedy answer to prompt ``b`` (KV cache on; ``streamer`` gets text as it comes)."""
        one = Batch([batch.encoded[b]], batch.feats, [batch.ecg_index[b]])
        emb, att, _ = self.splice(one, self.ecg_tokens(batch.feats, projector), answers=[[]])
        out = self.llm.generate(inputs_embeds=emb, attention_mask=att, do_sample=False,
                                max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                                eos_token_id=self.tokenizer.eos_token_id,
                                pad_token_id=self.tokenizer.pad_token_id, streamer=streamer)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, out: str | os.PathLike) -> Path:
        """Write ``config.yaml`` + ``projector.safetensors`` (+ the encoder unless it is a
        reference to the shipped default or a folder). Nothing is pickled."""
        from safetensors.torch import save_file

        from ecgqa.models.encoders import save_encoder

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(self.cfg)
        if cfg.encoder != "default" and not Path(cfg.encoder).is_dir():
            save_encoder(self.encoder, out / "encoder")
            cfg = dataclasses.replace(cfg, encoder="encoder", encoder_kwargs={})
        state = {k: v.detach().contiguous().cpu() for k, v in self.projector.state_dict().items()}
        tmp = out / f".projector.{os.getpid()}.tmp"
        save_file(state, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
        os.replace(tmp, out / "projector.safetensors")
        save_config(_SavedModel(model=cfg, template=dataclasses.asdict(self.template)),
                    out / "config.yaml")
        return out

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **llm_overrides) -> EcgQaModel:
        """Rebuild from a folder written by :meth:`save_pretrained` alone.

        Everything read from the folder is checked before the LLM is loaded; the projector
        is built only once its saved weights are known to fit it.

        Raises:
            SavedModelError: a missing or malformed ``config.yaml`` or
                ``projector.safetensors`` (EncoderError for the ``encoder/`` folder).
        """
        from ecgqa.models.encoders.checkpoint import build_fitting, load_encoder, read_safetensors

        folder = Path(folder)
        cfg, template = read_saved_config(folder)
        if llm_overrides:
            cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, **llm_overrides))
        check_saved_llm(cfg.llm, folder / "config.yaml")
        weights = folder / "projector.safetensors"
        state = read_safetensors(weights, SavedModelError)
        encoder = load_encoder(cfg.encoder)      # "default" or a folder (read_saved_config)
        try:
            llm, tok = load_llm(cfg.llm)
        except EcgqaError:
            raise
        except (ValueError, TypeError) as err:   # transformers' checks of the LLM's config
            raise SavedModelError(f"{folder / 'config.yaml'}: model.llm cannot be built "
                                  f"({' '.join(str(err).split())[:200]})") from None

        def build():
            try:
                return build_projector(cfg.projector, d_enc=encoder.out_dim,
                                       d_llm=llm.config.hidden_size, n_tokens=cfg.n_ecg_tokens,
                                       **cfg.projector_kwargs)
            except EcgqaError:
                raise
            except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError,
                    AssertionError) as err:        # torch asserts on head counts
                why = " ".join(str(err).split())[:200]
                raise SavedModelError(f"{folder / 'config.yaml'}: projector "
                                      f"{short(cfg.projector)} cannot be built with "
                                      f"{short(cfg.projector_kwargs)} ({why})") from None

        projector = build_fitting(build, state, weights, SavedModelError, prefixes=False,
                                  what=f"projector {cfg.projector}")
        projector.load_state_dict(state)
        return cls(encoder, projector, llm, tok, cfg, template)


def read_saved_config(folder: Path) -> tuple[ModelConfig, PromptTemplate]:
    """The model config and prompt template of a saved folder's ``config.yaml``, checked;
    ``model.encoder: encoder`` is resolved to the folder's own ``encoder/``."""
    path = folder / "config.yaml"
    if not path.is_file():
        raise SavedModelError(f"{folder}: no config.yaml (not a saved ecgqa model)")
    data = read_yaml_sections(path, ("model", "template"), "the mappings 'model' and "
                              "'template' written by save_pretrained", SavedModelError)
    cfg = section_config(ModelConfig, data, "model", path, SavedModelError)
    if cfg.encoder == "encoder":
        cfg = dataclasses.replace(cfg, encoder=str(folder / "encoder"))
    elif cfg.encoder != "default" and not Path(cfg.encoder).is_dir():
        raise SavedModelError(f"{path}: model.encoder {short(cfg.encoder)} is not a saved "
                              "encoder ('encoder' for the folder's own, 'default' or a folder)")
    checks = (("n_ecg_tokens", cfg.n_ecg_tokens >= 1, ">= 1"),
              ("max_new_tokens", cfg.max_new_tokens >= 1, ">= 1"),
              ("layout", cfg.layout in LAYOUTS, f"one of {', '.join(LAYOUTS)}"),
              ("score_normalise", cfg.score_normalise in ("mean", "sum"), "mean or sum"))
    for name, ok, want in checks:
        if not ok:
            raise SavedModelError(f"{path}: model.{name} {short(getattr(cfg, name))} must be "
                                  f"{want}")
    return cfg, _saved_template(data["template"], path)


TINY_LIMITS = {"tiny_hidden": (2, 4096), "tiny_layers": (1, 64), "seed": (-2**63, 2**63 - 1)}
"""The sizes a tiny random LLM may have (and its seed's range): a saved config asking for
more would allocate gigabytes or build for hours."""


def check_saved_llm(llm: LlmConfig, path: Path,
                    error: type[EcgqaError] = SavedModelError) -> None:
    """Refuse a saved config whose tiny random LLM would be huge, or could not be built."""
    if llm.source not in ("tiny-llama", "tiny-gemma"):
        return
    for name, (lo, hi) in TINY_LIMITS.items():
        value = getattr(llm, name)
        if not lo <= value <= hi:
            raise error(f"{path}: model.llm.{name} {value} is out of range ({lo}..{hi})")
    if llm.tiny_hidden % 2:
        raise error(f"{path}: model.llm.tiny_hidden {llm.tiny_hidden} must be even (two "
                    "attention heads)")


def _saved_template(data: dict, path: Path) -> PromptTemplate:
    names = {f.name for f in dataclasses.fields(PromptTemplate)}
    odd = [k for k, v in data.items() if k not in names or not isinstance(v, str)]
    if odd or not {"layout", "single", "comparison"} <= set(data):
        raise SavedModelError(f"{path}: template needs the texts layout, single and "
                              f"comparison{f' (bad: {short(odd[0])})' if odd else ''}")
    if data["single"].count(MARKER) != 1 or data["comparison"].count(MARKER) != 2:
        raise SavedModelError(f"{path}: template.single must hold {MARKER} once and "
                              "template.comparison twice")
    return PromptTemplate(**data)


@dataclass
class _SavedModel:
    model: ModelConfig
    template: dict


def _load_encoder(cfg: ModelConfig) -> nn.Module:
    from ecgqa.models.encoders import build_encoder, load_encoder

    if cfg.encoder == "default" or Path(cfg.encoder).is_dir():
        return load_encoder(cfg.encoder)
    return build_encoder(cfg.encoder, **cfg.encoder_kwargs)


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


def pad_scores(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-sample option scores of different lengths, -inf where there is no option."""
    k = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), k), float("-inf"), device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out
