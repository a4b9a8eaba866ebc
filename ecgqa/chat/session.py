"""The signal session: questions about one ECG record (or two to compare), answered by a
meta-trained adapter, optionally adapted first on a few labelled examples (``--shots``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ecgqa.chat.adapters import load_signal_model, signal_adapter_folder
from ecgqa.chat.answers import (
    DEFAULT_MAX_SHOTS,
    DEFAULT_THRESHOLD,
    Answer,
    ChatSample,
    check_options,
    decide,
    describe_record,
    record_name,
    token_streamer,
)
from ecgqa.chat.questions import ChatError, answer_vocabulary, classify_question
from ecgqa.records.leads import parse_leads
from ecgqa.records.read import EcgRecord, read_record


def to_input_spec(record: EcgRecord, spec) -> EcgRecord:
    """Bring a record to an encoder's input spec, as ``read_record(fs=, duration_s=, leads=)``
    does for training data: select leads, resample, crop or zero-pad."""
    return record.select_leads(tuple(spec.leads)).resample(spec.fs).fit_duration(spec.duration_s)


class RecordSignals:
    """``get(i) -> (signal (leads, t) float32 mV, mask (leads,) bool)`` of the ``i``-th record.

    Args:
        records: records already at the encoder's input spec (:func:`to_input_spec`).
        keep: leads the model may see; the others get zero signal and mask False.
    """

    def __init__(self, records: Sequence[EcgRecord], keep: Sequence[str] | None = None):
        self.records = list(records)
        self.keep = None if keep is None else tuple(keep)

    def get(self, ecg_id: int) -> tuple[np.ndarray, np.ndarray]:
        rec = self.records[int(ecg_id)]
        if self.keep is None:
            return rec.signal, rec.lead_mask
        allowed = np.array([lead in self.keep for lead in rec.leads], dtype=bool)
        mask = rec.lead_mask & allowed                                   # (leads,)
        return np.where(mask[:, None], rec.signal, 0.0).astype(np.float32), mask


@dataclass
class ShotsReport:
    """Few-shot adaptation on the user's examples."""

    file: str
    n_examples: int
    steps: int
    loss_before: float
    loss_after: float
    seconds: float

    def format(self) -> str:
        return (f"adapted on {self.n_examples} examples from {self.file}: support loss "
                f"{self.loss_before:.3f} -> {self.loss_after:.3f} ({self.steps} steps, "
                f"{self.seconds:.1f} s)")


class Session:
    """One or two ECG records, a loaded adapter, and answers to questions about them.

    Args:
        records: one record path, or two for comparison questions (any format
            ``read_record`` supports).
        adapter: an adapter folder written by ``ecgqa train-meta``, or ``"default"``.
        shots: ECG-QA-schema examples to adapt the projector on first: a JSON shard or a
            dataset folder (see :func:`load_shots`).
        shots_records: where the examples' ECGs are (records index CSV, PTB-XL or
            MIMIC-IV-ECG folder); default a ``records_index.csv`` beside ``shots``.
        max_shots: adapt on at most this many examples (the first ones).
        threshold: answer "not sure" when the best option's probability is below this.
        leads: let the model see only these leads (``"I,II"``); default all.
        status: called with progress messages (loading, adapting).

    Raises:
        EcgRecordError: a record cannot be read.
        ChatError: a bad option, adapter or examples file.
    """

    modality = "signal"

    def __init__(self, records: Sequence[str | os.PathLike], adapter: str | os.PathLike =
                 "default", *, shots: str | os.PathLike | None = None,
                 shots_records: str | os.PathLike | None = None,
                 max_shots: int = DEFAULT_MAX_SHOTS, threshold: float = DEFAULT_THRESHOLD,
                 leads: str | None = None, generate: bool = False, status=None):
        status = status or (lambda message: None)
        check_options(records, threshold, max_shots)
        self.threshold = float(threshold)
        self.generate_open = bool(generate)
        self.records = [read_record(p) for p in records]      # bad records fail first
        self.paths = [str(p) for p in records]
        self.adapter = str(adapter)
        folder = signal_adapter_folder(adapter)
        examples = load_shots(shots, shots_records, max_shots) if shots is not None else None
        status(f"loading the model ({self.adapter}; a first run converts the LLM: ~1 min)")
        self.model, algo, meta = load_signal_model(folder, with_algorithm=examples is not None)
        self.projector = None          # the adapted projector, after shots
        self.shots: ShotsReport | None = None
        spec = self.model.encoder.input_spec
        self._inputs = [to_input_spec(r, spec) for r in self.records]
        self.leads: tuple[str, ...] | None = None
        self.signals = RecordSignals(self._inputs)
        if leads is not None:
            self.set_leads(leads)
        self.vocabulary = answer_vocabulary()
        if examples is not None:
            status(f"adapting on {len(examples[0])} examples")
            self.shots = self._adapt(examples, algo, meta, str(shots))

    # ------------------------------------------------------------------ asking

    def ask(self, question: str, stream: TextIO | None = None) -> Answer:
        """Answer one question: option probabilities if closed, generated text if open.

        Args:
            question: about the session's ECG, or comparing its two ECGs.
            stream: open questions write their answer here token by token.

        Raises:
            ChatError: an empty question, or one about two ECGs with only one loaded.
        """
        kind = classify_question(question, self.vocabulary)
        if kind.comparison and len(self.records) < 2:
            raise ChatError("this question compares two ECGs; give two records: "
                            "ecgqa chat --ecg FIRST --ecg SECOND")
        text = " ".join(question.split())
        sample = ChatSample(kind.asked_as or text, tuple(range(len(self.records))))
        batch = self.model.make_batch([sample], self.signals, with_answers=False)

        def score(options):
            scores = self.model.score_options(batch, [[[o] for o in options]],
                                              projector=self.projector)
            return scores.probs[0, : len(options)].tolist()

        def generate():
            streamer = token_streamer(self.model.tokenizer, stream) if stream is not None else None
            return self.model.generate(batch, 0, streamer=streamer, projector=self.projector)

        answer, options, confidence = decide(kind, self.threshold, score,
                                             generate if self.generate_open else None)
        return Answer(question=text, answer=answer, kind=kind.kind, options=options,
                      confidence=confidence, threshold=self.threshold, records=self.paths,
                      adapter=self.adapter, leads=list(self.leads) if self.leads else None,
                      shots=asdict(self.shots) if self.shots else None,
                      asked_as=kind.asked_as)

    def set_leads(self, leads: str | None) -> tuple[str, ...] | None:
        """Let the model see only ``leads`` ("I,II", "limb"; None or "all": every lead).

        The ECGs are re-encoded with the other leads masked out (zero signal, mask off).
        """
        if leads is None or leads.strip().lower() == "all":
            self.leads = None
        else:
            try:
                wanted = parse_leads(leads)
            except ValueError as err:
                raise ChatError(str(err)) from None
            spec_leads = self._inputs[0].leads
            unknown = [lead for lead in wanted if lead not in spec_leads]
            if unknown:
                raise ChatError(f"lead(s) {', '.join(unknown)} not among the model's input "
                                f"leads {','.join(spec_leads)}")
            self.leads = wanted
        self.signals = RecordSignals(self._inputs, self.leads)   # new object: new features
        return self.leads

    # ------------------------------------------------------------------ records

    def summary(self) -> str:
        """Leads, rate, duration, heart rate and intervals of each record (``measure()``)."""
        return "\n".join(describe_record(rec) for rec in self.records)

    def plot(self, out: str | os.PathLike | None = None) -> list[Path]:
        """Write the 12-lead paper plot of each record (default ``NAME.png`` here)."""
        from ecgqa.records.plot import SUPPORTED_SUFFIXES, plot_ecg

        if out is not None and not str(out).lower().endswith(SUPPORTED_SUFFIXES):
            raise ChatError(f"{out}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
        paths = []
        for i, rec in enumerate(self.records):
            target = Path(out) if out is not None else Path(f"{record_name(rec)}.png")
            if out is not None and len(self.records) > 1:
                target = target.with_name(f"{target.stem}-{i + 1}{target.suffix}")
            paths.append(plot_ecg(rec, target))
        return paths

    # ------------------------------------------------------------------ few-shot

    def _adapt(self, examples, algo, meta, file: str) -> ShotsReport:
        import torch

        from ecgqa.meta.loop import adapt, learner_for_test_time

        samples, resolver = examples
        start = time.perf_counter()
        signals = self.model.signal_cache(resolver)
        try:
            support = self.model.make_batch(samples, signals)
        except ValueError as err:                                   # EcgQaError, records
            raise ChatError(f"{file}: {err}") from None
        learner = learner_for_test_time(algo)
        steps = meta.eval_steps
        with torch.enable_grad():
            prefix = self.model.prefix_cache(support) if meta.prefix_cache and steps else None
            losses = adapt(self.model, learner, support, steps, prefix, first_order=True,
                           vocab=meta.inner_vocab)
        with torch.no_grad():
            after = float(self.model.loss(support, projector=learner, vocab=meta.inner_vocab))
        self.projector = learner
        return ShotsReport(file, len(samples), steps, losses[0] if losses else after, after,
                           time.perf_counter() - start)


def load_shots(path: str | os.PathLike, records: str | os.PathLike | None = None,
               limit: int = DEFAULT_MAX_SHOTS):
    """Load few-shot examples in the ECG-QA schema and find their records.

    Args:
        path: a JSON shard (a list of ECG-QA samples) or an ECG-QA-schema folder
            (``answers.csv`` + ``template/*/*.json``, e.g. ``ecgqa data synth`` output).
        records: records index CSV, PTB-XL or MIMIC-IV-ECG folder; default the
            ``records_index.csv`` in the shard's folder or one of its parents.
        limit: keep the first ``limit`` examples (an int >= 1).

    Returns:
        ``(samples, resolver)``; every sample's ECGs exist.

    Raises:
        ChatError: a missing or malformed file, an ECG the records do not hold, or a
            ``limit`` below 1.
    """
    from ecgqa.qa.ecgqa import (
        EcgQaError,
        clean,
        is_dir,
        is_file,
        load_ecgqa,
        read_shard,
        user_path,
    )
    from ecgqa.qa.resolve import make_resolver

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ChatError(f"--max-shots must be an integer >= 1, got {limit!r}")
    try:
        p = user_path(path)
        if is_dir(p):
            samples = load_ecgqa(p).samples
        elif is_file(p):
            samples = read_shard(p, "train", None)
        else:
            raise EcgQaError(f"{clean(p)}: no such file or folder")
        if not samples:
            raise EcgQaError(f"{clean(p)}: no examples")
        samples = samples[:limit]
        resolver = make_resolver(records if records is not None else _find_index(p))
        for s in samples:
            for ecg_id in s.ecg_ids:
                resolver.require(ecg_id, f"{clean(p)} (sample_id {s.sample_id})")
    except EcgQaError as err:
        raise ChatError(f"--shots: {err}") from None
    return samples, resolver


def _find_index(shots: Path) -> Path:
    from ecgqa.qa.ecgqa import EcgQaError, clean, is_dir, is_file

    start = shots if is_dir(shots) else shots.parent
    for folder in [start, *start.parents][:5]:
        if is_file(folder / "records_index.csv"):
            return folder / "records_index.csv"
    raise EcgQaError(f"{clean(shots)}: no records_index.csv beside it or above; give --records "
                     "(records index CSV, PTB-XL or MIMIC-IV-ECG folder)")
