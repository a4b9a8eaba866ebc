"""EcgQaModel: frozen ECG encoder -> trainable projector -> ECG tokens in a frozen LLM's prompt.

Data flow of one batch (shapes at each step)::

    signals (E, leads, t) --encode_ecg--> feats (E, n, d_enc)        [frozen, no grad]
    feats --ecg_tokens--> (E, m, d_llm)                               [projector, trainable]
    prompt pieces + ECG tokens --splice--> inputs_embeds (B, T, d_llm), attention (B, T)
    --LLM body--> hidden (B, T, d_llm) --lm_head at answer positions only--> log p(answer)

Logits are computed only where they are used (answer positions, option tokens): the
embedded Gemma has a 262k-token head, which would otherwise dominate the cost. Which
parts train is decided here alone: the encoder and the LLM are frozen in the constructor.

The steps live beside this module, one job each: :mod:`ecgqa.models.splice` (prompt
pieces + ECG tokens -> LLM inputs), :mod:`ecgqa.models.prefix` (the first pieces'
key/values, reused), :mod:`ecgqa.models.logprobs` (the head: losses and option scores),
:mod:`ecgqa.models.saved` (the saved folder) and :mod:`ecgqa.models.model_config`.
"""

from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgqa.models.kv import PrefixMemo
from ecgqa.models.llm import load_llm
from ecgqa.models.logprobs import (
    LOSS_VOCABS,
    TOP_TOKENS,
    OptionScores,
    group_losses,
    head_logits,
    pad_scores,
    score_prompt,
    target_logprobs,
)
from ecgqa.models.model_config import ModelConfig
from ecgqa.models.prefix import PrefixCache, prefix_cache, suffix_forward
from ecgqa.models.projectors import build_projector
from ecgqa.models.saved import (
    FORMAT_VERSION,
    TINY_LIMITS,
    SavedModelError,
    check_saved_llm,
    load_parts,
    read_saved_config,
    save_model,
)
from ecgqa.models.splice import Batch, pad_embeddings, splice_prompts
from ecgqa.qa.collate import Encoded, PromptError, PromptTemplate, encode_sample

__all__ = [
    "EcgQaModel", "ModelConfig", "Batch", "PrefixCache", "OptionScores", "SavedModelError",
    "LOSS_VOCABS", "TOP_TOKENS", "FORMAT_VERSION", "TINY_LIMITS", "check_saved_llm",
    "read_saved_config", "pad_embeddings", "pad_scores",
]


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
        """Interleave prompt pieces and ECG tokens, append answers, right-pad
        (:func:`ecgqa.models.splice.splice_prompts` with this LLM's embeddings).

        Args:
            batch: prompts and which ECG rows each uses.
            ecg_tok: ``(E, m, d)`` ECG tokens.
            answers: answer ids per sample (default: the batch's own; ``[[]]`` for none).
            skip_first_piece: leave out piece 0 (it sits in a :class:`PrefixCache`).

        Returns:
            inputs_embeds (B, T, d), attention_mask (B, T), targets (B, T) with the token
            each position must predict (-100 where there is no loss).
        """
        return splice_prompts(self._embed, batch, ecg_tok, answers, skip_first_piece)

    def prefix_cache(self, batch: Batch, memo: PrefixMemo | None = None,
                     dedupe: bool = True) -> PrefixCache:
        """Key/value cache of every prompt's first piece (before the first ECG).

        That piece does not depend on the projector, so an inner loop computes it once and
        reuses it at every step (question_first puts the whole question there). Pieces are
        left-padded to one length; positions are passed explicitly, so results equal the
        uncached computation (:func:`ecgqa.models.prefix.prefix_cache`).

        Args:
            batch: the prompts.
            memo: prefixes kept across calls (the bench); used when every first piece has
                the same length (no padding), so each is computed alone once.
            dedupe: compute each distinct first piece once and copy it to the rows that
                share it (False: one row per prompt, as before; the numbers are the same).
        """
        return prefix_cache(self, batch, memo, dedupe)

    def _suffix_forward(self, batch: Batch, ecg_tok, prefix: PrefixCache, answers=None):
        return suffix_forward(self, batch, ecg_tok, prefix, answers)

    # ------------------------------------------------------------------ LLM side

    def _body(self):
        return getattr(self.llm, self.llm.base_model_prefix)

    def _logits(self, hidden: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits of ``hidden`` rows: every token's, or only the token ``ids``'."""
        return head_logits(self.llm, hidden, ids, self.softcap)

    def token_logprobs(self, inputs_embeds, attention_mask, targets) -> torch.Tensor:
        """log p(target) at every position with a target; lm_head only there. (N,)"""
        hidden = self._body()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state          # (B, T, d)
        where = targets != -100
        return self._target_logprobs(hidden[where], targets[where])

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor,
                         vocab: str = "full") -> torch.Tensor:
        """log p(target) of ``hidden`` ``(N, d)`` rows over ``vocab`` (see
        :data:`LOSS_VOCABS`). ``(N,)``"""
        return target_logprobs(self.llm, hidden, targets, vocab, self.softcap)

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
        hidden, tgt = self._answer_states(batch, self.ecg_tokens(batch.feats, projector), prefix)
        where = tgt != -100
        return -self._target_logprobs(hidden[where], tgt[where], vocab).mean()

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
        return group_losses(self.llm, hidden, tgt, sizes, vocab, self.softcap)

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
        for b in range(len(batch.encoded)):     # one prompt, K options reusing its KV cache
            s, m = score_prompt(self, batch, b, ecg_tok, options[b])
            sums.append(s)
            means.append(m)
        logp_sum, logp_mean = pad_scores(sums), pad_scores(means)
        chosen = logp_mean if self.cfg.score_normalise == "mean" else logp_sum
        return OptionScores(logp_sum, logp_mean, torch.softmax(chosen, dim=-1))

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
        return save_model(self, out)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **llm_overrides) -> EcgQaModel:
        """Rebuild from a folder written by :meth:`save_pretrained` alone.

        Everything read from the folder is checked before the LLM is loaded; the projector
        is built only once its saved weights are known to fit it.

        Raises:
            SavedModelError: a missing or malformed ``config.yaml`` or
                ``projector.safetensors`` (EncoderError for the ``encoder/`` folder).
        """
        return cls(*load_parts(folder, **llm_overrides))


def _load_encoder(cfg: ModelConfig) -> nn.Module:
    from ecgqa.models.encoders import build_encoder, load_encoder

    if cfg.encoder == "default" or Path(cfg.encoder).is_dir():
        return load_encoder(cfg.encoder)
    return build_encoder(cfg.encoder, **cfg.encoder_kwargs)
