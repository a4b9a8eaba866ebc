"""An answer as chat shows it: option probabilities, the best option or "not sure", and
the pieces both sessions share (option checks, record descriptions, streamed text)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from ecgqa.chat.questions import ChatError, QuestionKind, what_can_be_asked
from ecgqa.records.read import EcgRecord

DISCLAIMER = "Research software, not a medical device: do not use for diagnosis."


DEFAULT_THRESHOLD = 0.6


DEFAULT_MAX_SHOTS = 32


NOT_SURE = "not sure"


@dataclass(frozen=True)
class Option:
    """One candidate answer and its probability among the question's options."""

    text: str
    prob: float


@dataclass
class Answer:
    """The answer to one question.

    Attributes:
        question: the question asked.
        answer: the top option, ``"not sure"`` when its probability is below the
            threshold, or the generated text of an open question.
        kind: see :class:`QuestionKind`.
        options: closed questions: every option with its probability, most likely first.
        confidence: the top option's probability (None for open questions).
        threshold: the confidence below which the answer is "not sure".
        records: the record paths.
        adapter: the adapter folder (or "default").
        leads: the leads the model saw (None: all).
        shots: the few-shot adaptation report, when there was one.
        modality: ``signal`` (the ECG's samples) or ``image`` (a picture of the ECG).
    """

    question: str
    answer: str
    kind: str
    options: list[Option]
    confidence: float | None
    threshold: float
    records: list[str]
    adapter: str
    leads: list[str] | None = None
    shots: dict | None = None
    modality: str = "signal"
    asked_as: str | None = None
    disclaimer: str = DISCLAIMER

    def to_json(self) -> dict:
        """The JSON object of ``--json`` (``record`` is a list for two ECGs)."""
        d = asdict(self)
        del d["records"]
        d["record"] = self.records[0] if len(self.records) == 1 else list(self.records)
        return d

    def format(self, show_answer: bool = True) -> str:
        """Text for a terminal: answer, option probabilities, the disclaimer line."""
        lines = []
        if show_answer:
            lines.append(f"answer: {self.answer}")
        if self.asked_as:
            lines.append(f"  (asked as the known question: {self.asked_as})")
        if self.options:
            if self.answer == NOT_SURE:
                lines.append(f"  (best option {self.options[0].text!r} has probability "
                             f"{self.confidence:.2f} < threshold {self.threshold:.2f})")
            width = max(len(o.text) for o in self.options)
            lines += [f"  {o.text:<{width}}  {o.prob:5.3f}  {'#' * round(o.prob * 20)}"
                      for o in self.options]
        lines.append(self.disclaimer)
        return "\n".join(lines)


@dataclass(frozen=True)
class ChatSample:
    """What ``EcgQaModel.make_batch`` reads from a sample."""

    question: str
    ecg_ids: tuple[int, ...]
    answer: tuple[str, ...] = ()


def decide(kind: QuestionKind, threshold: float, score, generate
           ) -> tuple[str, list[Option], float | None]:
    """Answer a classified question with a model's two answering functions.

    Args:
        kind: from :func:`classify_question`.
        threshold: below this top-option probability the answer is ``"not sure"``.
        score: ``options -> probabilities`` (one per option, summing to 1); closed questions.
        generate: ``() -> text`` for open questions, or None: they are answered with
            :func:`what_can_be_asked` (nothing is generated).

    Returns:
        ``(answer, options most likely first, confidence)``; ``([], None)`` when open.
    """
    if not kind.options:
        return (what_can_be_asked() if generate is None else generate()), [], None
    probs = score(kind.options)
    options = sorted((Option(o, float(p)) for o, p in zip(kind.options, probs)),
                     key=lambda o: -o.prob)
    confidence = options[0].prob
    return (options[0].text if confidence >= threshold else NOT_SURE), options, confidence


def check_options(records, threshold: float, max_shots: int) -> None:
    if not 1 <= len(records) <= 2:
        raise ChatError(f"give one record, or two to compare (--ecg A --ecg B); got "
                        f"{len(records)}")
    if not 0.0 <= threshold <= 1.0:
        raise ChatError(f"--threshold must be in 0..1, got {threshold}")
    if max_shots < 1:
        raise ChatError(f"--max-shots must be >= 1, got {max_shots}")


def record_name(rec: EcgRecord) -> str:
    return rec.meta.record_name or Path(rec.path).stem or "ecg"


def describe_record(rec: EcgRecord) -> str:
    """One line of shape and one of measurements (heart rate, intervals, axis)."""
    from ecgqa.records.measure import measure

    recorded = [lead for lead, ok in zip(rec.leads, rec.lead_mask) if ok]
    head = (f"{rec.path}: {len(recorded)} leads ({' '.join(recorded)}), {rec.fs:g} Hz, "
            f"{rec.duration_s:.1f} s")
    m = measure(rec)
    if m.heart_rate_bpm is None:
        return f"{head}\n  not measured: {m.note or 'no beats found'}"
    parts = [f"heart rate {m.heart_rate_bpm:.0f} bpm"]
    for name, value in (("PR", m.pr_ms), ("QRS", m.qrs_ms), ("QT", m.qt_ms), ("QTc", m.qtc_ms)):
        if value is not None:
            parts.append(f"{name} {value:.0f} ms")
    if m.qrs_axis_deg is not None:
        parts.append(f"QRS axis {m.qrs_axis_deg:.0f} deg")
    return f"{head}\n  {', '.join(parts)} ({m.lead}, {m.n_beats} beats)"


def token_streamer(tokenizer, out: TextIO):
    """A transformers TextStreamer that writes the new text to ``out`` as it comes."""
    from transformers import TextStreamer

    class _Echo(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text)
            out.flush()

    return _Echo(tokenizer, skip_prompt=True, skip_special_tokens=True)
