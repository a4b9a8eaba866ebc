"""``ecgqa chat``: ask questions about one ECG record (or compare two) with a saved adapter.

Data flow of one question::

    --ecg file(s) --read_record--> EcgRecord --encoder input spec, lead mask--> RecordSignals
    question --classify_question--> yes/no | choice | template (options) | open
    EcgQaModel.make_batch --score_options (closed: option probabilities)--> Answer
                          --generate (open: text, streamed)-------------->

:class:`Session` is the library API the REPL, ``--question`` and the tests share::

    >>> s = Session(["../shared/data/real/ptbxl/00001_lr.hea"])
    >>> a = s.ask("Does this ECG show sinus rhythm?")
    >>> a.answer, [(o.text, round(o.prob, 2)) for o in a.options]

With ``shots`` the projector is first adapted on a few ECG-QA-schema examples (the
adapter's own inner loop), so answers follow the user's labelled examples.

The image modality (a LoRA image adapter written by ``ecgqa train-lora``) answers the same
questions the same way about a picture of an ECG::

    --image photo/scan/PNG --read_image--> RGB image ----------------------+
    --ecg file --read_record--> EcgRecord --render_image (the adapter's     +--> ImageQaModel
                   training size, plain printout)--> RGB image ------------+
        --score_options (closed) / generate (open)--> Answer

:class:`ImageSession` has the surface :func:`repl` and :func:`run` use (``ask``,
``summary``, ``plot``, ``set_leads``); both sessions answer through :func:`decide`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ecgqa.config import expand_path
from ecgqa.errors import EcgqaError
from ecgqa.records.leads import parse_leads
from ecgqa.records.read import EcgRecord, read_record

DISCLAIMER = "Research software, not a medical device: do not use for diagnosis."
DEFAULT_THRESHOLD = 0.6
DEFAULT_MAX_SHOTS = 32
NOT_SURE = "not sure"
YES_NO = ("yes", "no")
# auxiliary verbs that open a yes/no question ("Does ...", "Is ...", "Compared to ..., does")
_AUXILIARIES = frozenset(
    "does do did is are was were has have had can could should would will shall may might "
    "must".split())
# a piece of a comma list that is part of the question, not an answer option
_CLAUSE = re.compile(r"\b(which|what|does|do|did|is|are|show|shows|this ecg|first ecg|"
                     r"second ecg|both ecgs)\b", re.IGNORECASE)
_COMPARISON = re.compile(r"\b(first|second|both|two) ecgs?\b|\bcompared (to|with)\b",
                         re.IGNORECASE)
# ECG-QA query templates of the synthetic training data (ecgqa.synth.questions), whose
# answer options are known: id -> the question, lower case, without the question mark
_TEMPLATE_PATTERNS: tuple[tuple[int, str], ...] = (
    (121, r"what kind of rhythm does this ecg show"),
    (122, r"what kind of conduction disturbance does this ecg show"),
    (125, r"what is the heart axis of this ecg"),
    (126, r"what is the range of the .+ of this ecg"),
    (127, r"which numeric features of this ecg are out of the normal range"),
    (128, r"in which leads does this ecg show .+"),
    (32, r"what kind of noises? does this ecg show( in lead .+)?"),
    (38, r"what kind of extra systoles? does this ecg show"),
    (141, r"which symptoms does the second ecg newly show compared to the first ecg"),
    (142, r"which symptoms of the first ecg are no longer shown in the second ecg"),
    (161, r"which symptoms do both ecgs show"),
    (68, r"what numeric features of the second ecg now have become normal as compared to "
         r"the first ecg"),
    (69, r"what numeric features of the second ecg are now considered abnormal values as "
         r"compared to the first ecg"),
    (70, r"what numeric features of the second ecg are still abnormal as compared to the "
         r"first ecg"),
)


# Free-form questions mapped to the closest known question kind ("What rhythm is this?" ->
# template 121): the wording the model is asked (the template's own, as it was trained on),
# and words that identify the kind; the first kind whose words occur wins. Numeric features
# named in a question map to template 126 ("what is the range of the <feature> ...").
_CLOSEST_KINDS: tuple[tuple[int, str, str], ...] = (
    (38, "what kind of extra systoles does this ecg show",
     r"extra ?systol|ectopic|premature (beat|complex|contraction)"),
    (32, "what kind of noise does this ecg show", r"\bnois|artefact|artifact"),
    (122, "what kind of conduction disturbance does this ecg show",
     r"conduction|\bblocks?\b|bundle branch|\bav\b"),
    (125, "what is the heart axis of this ecg", r"\baxis\b"),
    (127, "which numeric features of this ecg are out of the normal range",
     r"\b(abnormal|out of (the )?normal range)\b"),
    (121, "what kind of rhythm does this ecg show", r"\brhythm"),
)
_FEATURE_WORDS = {"rr interval": r"\brr\b|heart rate|\brate\b",
                  "p duration": r"\bp(-| )wave duration|\bp duration",
                  "pr interval": r"\bpr\b", "qrs duration": r"\bqrs\b",
                  "qt corrected": r"\bqtc\b|corrected qt|qt corrected",
                  "qt interval": r"\bqt\b"}


def closest_kind(question: str) -> tuple[int, str] | None:
    """The known question kind a free-form question is closest to: ``(template id, the
    template's wording)``, or None when no kind's words occur in it."""
    q = " ".join(question.lower().split()).rstrip("?.! ")
    for feature, words in _FEATURE_WORDS.items():
        if re.search(words, q):
            return 126, f"what is the range of the {feature} of this ecg"
    for tid, wording, words in _CLOSEST_KINDS:
        if re.search(words, q):
            return tid, wording
    return None


def what_can_be_asked() -> str:
    """The answer to a question no known kind fits: what can be asked instead."""
    kinds = "; ".join(f"{w}?" for _, w, _ in _CLOSEST_KINDS)
    return ("I can only answer questions with known answer options: yes/no questions "
            "(\"Does this ECG show atrial fibrillation?\"), choices (\"..., A or B?\"), the "
            f"range of an interval (\"What is the range of the QRS duration of this ECG?\"), "
            f"and: {kinds} (--generate answers other questions in free, unscored text)")


class ChatError(EcgqaError):
    """A problem the user can fix (bad question, option or file); one line."""


# --------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class QuestionKind:
    """How a question is answered.

    Attributes:
        kind: ``yes/no``, ``choice`` (options listed in the question), ``template`` (an
            ECG-QA query template with known answer classes, matched or the closest to a
            free-form question) or ``open`` (no known kind: generated with ``--generate``,
            else answered with what can be asked).
        options: the candidate answers of closed questions; empty for ``open``.
        template_id: the matched template of ``template`` questions.
        comparison: the question is about two ECGs.
        asked_as: the template's wording the model is asked, when a free-form question was
            mapped to its closest kind (None: the question as typed).
    """

    kind: str
    options: tuple[str, ...] = ()
    template_id: int | None = None
    comparison: bool = False
    asked_as: str | None = None


def classify_question(question: str, vocabulary: Sequence[str] = ()) -> QuestionKind:
    """Decide whether a question is closed-set (and its options) or open.

    Args:
        question: the question as typed.
        vocabulary: known answer terms; they delimit an unlisted first option
            ("Is the rhythm sinus rhythm or atrial fibrillation?") and fix spelling.

    Returns:
        The kind and options, tried in this order: options listed in the question
        ("..., A, B or C?"), a known query template, a yes/no question, the closest known
        kind (:func:`closest_kind`, single-ECG questions), else open.

    Example:
        >>> classify_question("Which noise does this ECG show, baseline drift or static noise?")
        QuestionKind(kind='choice', options=('baseline drift', 'static noise'), ...)
    """
    text = " ".join(question.split()).strip()
    if not text.rstrip("?.! "):
        raise ChatError("empty question; type a question about the ECG, or /help")
    comparison = bool(_COMPARISON.search(text))
    listed = listed_options(text, vocabulary)
    if listed:
        return QuestionKind("choice", listed, comparison=comparison)
    tid = match_template(text)
    if tid is not None:
        from ecgqa.synth.questions import BY_ID

        tpl = BY_ID[tid]
        return QuestionKind("template", tpl.options, tid, comparison or tpl.comparison)
    if is_yes_no(text):
        return QuestionKind("yes/no", YES_NO, comparison=comparison)
    near = None if comparison else closest_kind(text)
    if near is not None:
        from ecgqa.synth.questions import BY_ID

        tid, wording = near
        return QuestionKind("template", BY_ID[tid].options, tid, asked_as=wording + "?")
    return QuestionKind("open", comparison=comparison)


def is_yes_no(question: str) -> bool:
    """Whether the question, or a clause after a comma, opens with an auxiliary verb."""
    for clause in question.lower().split(","):
        words = clause.split()
        if words and words[0] in _AUXILIARIES:
            return True
    return False


def match_template(question: str) -> int | None:
    """The id of the ECG-QA query template the question is an instance of, or None."""
    q = " ".join(question.lower().split()).rstrip("?.! ")
    for tid, pattern in _TEMPLATE_PATTERNS:
        if re.fullmatch(pattern, q):
            return tid
    return None


def listed_options(question: str, vocabulary: Sequence[str] = ()) -> tuple[str, ...]:
    """Options a question lists: "..., A, B or C?" or "... A or B?".

    Without a comma the first option is the longest vocabulary term just before "or".
    Options spelled like a vocabulary term (any case) take its spelling.

    Returns:
        The options in question order; empty when the question lists none.
    """
    text = question.strip().rstrip("?.! ").strip()
    head, sep, last = text.rpartition(" or ")
    if not sep or not last.strip():
        return ()
    known = {v.lower(): v for v in vocabulary}
    if "," in head:
        items = [x.strip() for x in head.split(",")][1:]   # piece 0 is the question
        while items and _CLAUSE.search(items[0]):
            items.pop(0)
        options = items + [last]
    else:
        low = head.lower()
        first = max((k for k in known if low.endswith(" " + k)), key=len, default=None)
        if first is None:
            return ()
        options = [first, last]
    options = [known.get(o.strip().lower(), o.strip()) for o in options if o.strip()]
    options = [o.removeprefix("either ") for o in options]
    if len(options) < 2 or len({o.lower() for o in options}) < len(options):
        return ()
    if any(_CLAUSE.search(o) for o in options):
        return ()
    return tuple(options)


def answer_vocabulary() -> list[str]:
    """Answer terms of the synthetic ECG-QA templates the shipped adapter learned."""
    from ecgqa.synth.questions import all_answers

    return all_answers()


# --------------------------------------------------------------------------- answers


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


# --------------------------------------------------------------------------- signals


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


# --------------------------------------------------------------------------- session


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
        _check_options(records, threshold, max_shots)
        self.threshold = float(threshold)
        self.generate_open = bool(generate)
        self.records = [read_record(p) for p in records]      # bad records fail first
        self.paths = [str(p) for p in records]
        self.adapter = str(adapter)
        folder = _adapter_folder(adapter)
        examples = load_shots(shots, shots_records, max_shots) if shots is not None else None
        status(f"loading the model ({self.adapter}; a first run converts the LLM: ~1 min)")
        self.model, algo, meta = _load_model(folder, with_algorithm=examples is not None)
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
            streamer = _streamer(self.model.tokenizer, stream) if stream is not None else None
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
            target = Path(out) if out is not None else Path(f"{_record_name(rec)}.png")
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


def _check_options(records, threshold: float, max_shots: int) -> None:
    if not 1 <= len(records) <= 2:
        raise ChatError(f"give one record, or two to compare (--ecg A --ecg B); got "
                        f"{len(records)}")
    if not 0.0 <= threshold <= 1.0:
        raise ChatError(f"--threshold must be in 0..1, got {threshold}")
    if max_shots < 1:
        raise ChatError(f"--max-shots must be >= 1, got {max_shots}")


def _adapter_folder(adapter) -> Path:
    """The folder of a signal adapter (a train-meta output folder, or "default")."""
    kind, folder = adapter_kind(adapter)
    if kind == "image":
        raise ChatError(f"--adapter {adapter} is a LoRA image adapter (ecgqa train-lora); ask "
                        "about a picture of the ECG with --modality image (or --image FILE), "
                        "or give a train-meta adapter")
    return folder


def adapter_kind(adapter: str | os.PathLike) -> tuple[str, Path]:
    """The modality an adapter answers in, and the folder to load it from.

    A shipped adapter's name (``"default"``, ``"heldout"``) and a ``train-meta`` folder
    (``config.yaml`` + ``meta.yaml``) are ``"signal"``. A ``train-lora`` adapter (peft's
    ``adapter_config.json`` + ``config.yaml``; ``vision.safetensors`` holds its image
    encoder), or a ``train-lora`` output folder with one in ``adapter/``, is ``"image"``.

    Raises:
        ChatError: the folder is neither.

    Example:
        >>> adapter_kind("out/lora-300")
        ('image', PosixPath('out/lora-300/adapter'))
    """
    from ecgqa.image_qa.model import SHIPPED_IMAGE_ADAPTER
    from ecgqa.meta.adapter import SHIPPED_ADAPTERS, AdapterError, resolve_adapter

    if str(adapter) == "image":                   # the shipped image adapter's own name
        return "image", SHIPPED_IMAGE_ADAPTER
    folder = expand_path(adapter)
    if str(adapter) not in SHIPPED_ADAPTERS:
        for candidate in (folder, folder / "adapter"):
            if (candidate / "adapter_config.json").is_file() and \
                    (candidate / "config.yaml").is_file():
                return "image", candidate
    try:
        return "signal", resolve_adapter(adapter)
    except AdapterError:
        raise ChatError(f"adapter {folder}: not a saved adapter; give --adapter DIR, a "
                        "train-meta output folder (config.yaml + meta.yaml) or a train-lora "
                        "adapter (adapter_config.json + vision.safetensors), or leave it out "
                        "for the shipped signal adapter") from None


def _load_model(folder: Path, with_algorithm: bool):
    """``(model, algorithm, meta config)``; without few-shot adaptation only the model
    (learn2learn, and torchvision under it, is then never imported)."""
    _quiet_transformers()
    if with_algorithm:
        from ecgqa.meta.adapter import load_adapter

        return load_adapter(folder)
    from ecgqa.models.fusion import EcgQaModel

    return EcgQaModel.from_pretrained(folder), None, None


def _quiet_transformers() -> None:
    """No weight-loading progress bars or notices between the user and the answer."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


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


# --------------------------------------------------------------------------- images


MIN_IMAGE_PX = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class RenderSettings:
    """How a record is drawn for an image adapter: as its training images were.

    Attributes:
        size: ``(height, width)`` in pixels.
        source: where ``size`` was read: the training data's ``meta.json``, or the
            adapter's ``model.image_size`` when that is not found.
    """

    size: tuple[int, int]
    source: str

    def render(self, record: EcgRecord):
        """The plain 12-lead printout of ``record`` as an RGB ``PIL.Image`` of ``size``."""
        from ecgqa.image_qa.render import Variation, render_image

        return render_image(record, self.size, Variation.none())


def render_settings(adapter: str | os.PathLike) -> RenderSettings:
    """The rendering the adapter's training images had, to draw a record the same way.

    ``ecgqa train-lora`` writes ``RUN/config.yaml`` (``data.path``) beside ``RUN/adapter``,
    and ``ecgqa data instruct`` writes ``meta.json`` (``size``, ``variation``) beside its
    images. Where that chain is found (``data.path`` absolute, or relative to the current
    folder or to a folder above the adapter) its ``size`` is used; else the adapter's
    ``model.image_size`` (every image is resized to it anyway). The random look of
    training (``variation``) is augmentation: records are drawn as the plain printout, so
    the same record always gives the same pixels.

    Args:
        adapter: a ``train-lora`` adapter folder (with ``config.yaml``).
    """
    from ecgqa.image_qa.model import load_saved_config
    from ecgqa.models.encoders.checkpoint import read_json

    folder = Path(adapter)
    try:
        model, _ = load_saved_config(folder)
    except EcgqaError as err:
        raise ChatError(f"--adapter {folder}: {err}") from None
    meta = _training_meta(folder)
    if meta is not None:
        try:
            size = _render_size(read_json(meta, ChatError)["size"])
            return RenderSettings(size, str(meta))
        except (EcgqaError, KeyError, TypeError):
            pass                                      # unreadable: fall back to the model's
    try:
        size = _render_size(model.image_size)
    except ChatError as err:
        raise ChatError(f"{folder / 'config.yaml'}: model.image_size: {err}") from None
    return RenderSettings(size, f"{folder / 'config.yaml'} model.image_size")


def _render_size(value) -> tuple[int, int]:
    """``[height, width]`` of a picture a record can be drawn as (16..8192 px each way)."""
    if not isinstance(value, list) or len(value) != 2 or not all(
            type(v) is int and 16 <= v <= 8192 for v in value):
        raise ChatError(f"size {value!r:.60} is not [height, width] of 16..8192 px")
    return value[0], value[1]


def _training_meta(adapter: Path) -> Path | None:
    """``meta.json`` of the instruction data the adapter was trained on, if it is found."""
    from ecgqa.config import expand_path, parse_yaml, read_text

    run = adapter.parent / "config.yaml"
    try:
        value = parse_yaml(read_text(run, ChatError), str(run), ChatError)["data"]["path"]
    except (EcgqaError, KeyError, TypeError):
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        return None                         # not a path train-lora could have written
    data = expand_path(value)
    bases = [Path()] if data.is_absolute() else [Path.cwd(), *adapter.resolve().parents]
    for base in bases:
        path = base / data
        try:
            meta = (path if path.is_dir() else path.parent) / "meta.json"
            if path.exists() and meta.is_file():
                return meta
        except OSError:                     # a name too long to look up: not found
            continue
    return None


MAX_IMAGE_PIXELS = 64_000_000     # a 600-dpi A4 scan is 35 Mpx, most phone photos 12-50 Mpx
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
"""Formats ``read_image`` opens (Pillow plugin names; JPEG includes a camera's MPO)."""


def read_image(path: str | os.PathLike):
    """Read a photo, scan or rendered picture of an ECG as RGB.

    PNG, JPEG, GIF, BMP, TIFF and WebP are read (the first frame of an animation or a
    multi-page file); the EXIF orientation of a photo is applied, transparency is laid on
    white paper, and 16-bit or float greys are scaled to 8 bits. The size is checked from
    the header before any pixel is decoded.

    Returns:
        A fully loaded ``PIL.Image.Image`` in mode ``RGB``.

    Raises:
        ChatError: a missing file, not such an image, a truncated or corrupt one, one larger
            than ``MAX_IMAGE_PIXELS`` or smaller than 16 pixels a side; one line.
    """
    from PIL import Image

    from ecgqa.config import expand_path

    p = expand_path(path)
    if not p.is_file():
        raise ChatError(f"--image {p}: {'not a file' if p.exists() else 'no such file'}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # Pillow's bomb and metadata warnings
            with Image.open(p, formats=IMAGE_FORMATS) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise ChatError(f"--image {p}: {im.width}x{im.height} px is too large "
                                    f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels); "
                                    "scale it down")
                im.load()
                rgb = _as_rgb(_upright(im))
    except ChatError:
        raise
    except Image.DecompressionBombError:
        raise ChatError(f"--image {p}: its header declares more than "
                        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down") from None
    except Image.UnidentifiedImageError:
        raise ChatError(f"--image {p}: not a readable image (not a PNG, JPEG, GIF, BMP, TIFF "
                        "or WebP file)") from None
    except Exception as err:    # noqa: BLE001 - Pillow's decoders raise OSError, ValueError,
        # SyntaxError, struct.error, ... on a corrupt file
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ChatError(f"--image {p}: not a readable image ({why})") from None
    if min(rgb.size) < MIN_IMAGE_PX:
        raise ChatError(f"--image {p}: {rgb.width}x{rgb.height} px is too small to read an ECG "
                        f"from (at least {MIN_IMAGE_PX} px a side)")
    return rgb


def _upright(im):
    """The picture turned as its EXIF orientation says (unchanged if that is unreadable)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:                          # noqa: BLE001 - a corrupt EXIF block
        return im


def _as_rgb(im):
    """RGB: transparency laid on white, 16-bit / 32-bit / float greys scaled to 8 bits."""
    from PIL import Image

    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        x = np.nan_to_num(np.asarray(im, dtype=np.float64), posinf=0.0, neginf=0.0)
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
        return Image.fromarray(x.astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return im.convert("RGB")


class ImageSession:
    """One ECG as a picture, a LoRA image adapter, and answers to questions about it.

    The same surface as :class:`Session` (``ask``, ``summary``, ``plot``, ``set_leads``),
    so :func:`repl` and ``--question`` serve both; what needs the signal (leads, few-shot
    adaptation, two ECGs) raises a one-line :class:`ChatError`.

    Args:
        adapter: a ``train-lora`` adapter folder (``RUN/adapter``, or the ``RUN`` folder).
        image: a photo, scan or rendered PNG/JPG of the ECG; or
        record: a record (any format ``read_record`` reads), drawn as the adapter's
            training images were (:func:`render_settings`).
        threshold: answer "not sure" when the best option's probability is below this.
        status: called with progress messages (loading).

    Raises:
        ChatError: not exactly one of ``image`` / ``record``, a bad image or option, or
            not an image adapter.
        EcgRecordError: the record cannot be read.

    Example:
        >>> s = ImageSession("out/lora-300/adapter", record="00001_lr.hea")
        >>> a = s.ask("Does this ECG show sinus rhythm?")
        >>> a.answer, [(o.text, round(o.prob, 2)) for o in a.options]
    """

    modality = "image"
    shots = None
    leads = None

    def __init__(self, adapter: str | os.PathLike, *, image: str | os.PathLike | None = None,
                 record: str | os.PathLike | None = None,
                 threshold: float = DEFAULT_THRESHOLD, generate: bool = False, status=None):
        status = status or (lambda message: None)
        if (image is None) == (record is None):
            raise ChatError("give one ECG: an image file or a record")
        _check_options([image if image is not None else record], threshold, DEFAULT_MAX_SHOTS)
        self.threshold = float(threshold)
        self.generate_open = bool(generate)
        self.adapter = str(adapter)
        folder = _image_adapter_folder(adapter)
        self.paths = [str(image if image is not None else record)]
        self.record = read_record(record) if record is not None else None
        self.render = render_settings(folder) if record is not None else None
        self.image = read_image(image) if image is not None else self.render.render(self.record)
        status(f"loading the image model ({self.adapter}; a first run converts the LLM: ~1 min)")
        self.model = _load_image_model(folder)
        self.vocabulary = answer_vocabulary()

    @property
    def help(self) -> str:
        return IMAGE_HELP

    def ask(self, question: str, stream: TextIO | None = None) -> Answer:
        """Answer one question about the image (see :meth:`Session.ask`).

        Raises:
            ChatError: an empty question, or one comparing two ECGs.
        """
        kind = classify_question(question, self.vocabulary)
        if kind.comparison:
            raise ChatError("this question compares two ECGs; the image modality reads one "
                            "ECG (compare two with --modality signal: --ecg FIRST --ecg SECOND)")
        typed = " ".join(question.split())
        text = kind.asked_as or typed

        def score(options):
            probs = self.model.score_options([self.image], [text], [list(options)])  # (1, K)
            return probs[0, : len(options)].tolist()

        def generate():
            streamer = _streamer(self.model.tokenizer, stream) if stream is not None else None
            return self.model.generate(self.image, text, streamer=streamer)

        answer, options, confidence = decide(kind, self.threshold, score,
                                             generate if self.generate_open else None)
        return Answer(question=typed, answer=answer, kind=kind.kind, options=options,
                      confidence=confidence, threshold=self.threshold, records=self.paths,
                      adapter=self.adapter, modality=self.modality, asked_as=kind.asked_as)

    def set_leads(self, leads: str | None):
        raise ChatError("leads can be chosen on the signal only; the image model reads the "
                        "whole page (use --modality signal with a train-meta adapter)")

    def summary(self) -> str:
        """The image's size, or the record's summary and how it was drawn."""
        if self.record is None:
            return f"{self.paths[0]}: image {self.image.width}x{self.image.height} px"
        height, width = self.render.size
        return (f"{describe_record(self.record)}\n  drawn as the adapter's training images: "
                f"{width}x{height} px plain printout (size from {self.render.source})")

    def plot(self, out: str | os.PathLike | None = None) -> list[Path]:
        """Write the image the model reads, drawn from the record (default ``NAME.png``)."""
        if self.record is None:
            raise ChatError(f"the ECG is an image already ({self.paths[0]}); /plot draws a "
                            "record")
        target = Path(out) if out is not None else Path(f"{_record_name(self.record)}.png")
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise ChatError(f"{target}: use one of {', '.join(IMAGE_SUFFIXES)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(target)
        return [target]


def _image_adapter_folder(adapter, flag: str = "the image modality") -> Path:
    """The folder of a LoRA image adapter; a signal adapter or none is a ChatError."""
    need = (f"{flag} needs --adapter DIR, a LoRA image adapter (ecgqa train-lora output: "
            "adapter_config.json + vision.safetensors)")
    from ecgqa.image_qa.model import IMAGE_ADAPTER_NAMES, shipped_image_adapter

    if str(adapter) in IMAGE_ADAPTER_NAMES:          # the shipped image adapter
        return shipped_image_adapter(ChatError)
    from ecgqa.meta.adapter import SHIPPED_ADAPTERS

    if str(adapter) in SHIPPED_ADAPTERS:
        raise ChatError(f"{need}; the shipped adapter {adapter!r} reads signals")
    from ecgqa.config import expand_path

    kind, folder = adapter_kind(expand_path(adapter))     # "~nosuchuser/x" is no RuntimeError
    if kind != "image":
        raise ChatError(f"{need}; --adapter {adapter} is a signal adapter (train-meta)")
    return folder


def _load_image_model(folder: Path):
    """``ImageQaModel.from_pretrained(folder)``; a bad adapter is a :class:`ChatError`."""
    from ecgqa.image_qa.model import ImageQaModel

    _quiet_transformers()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)   # peft imports it: CPU notices
    try:
        with warnings.catch_warnings():       # peft's use of a deprecated transformers name
            warnings.simplefilter("ignore", FutureWarning)
            return ImageQaModel.from_pretrained(folder)
    except EcgqaError as err:         # ConfigError, LlmError, EncoderError ... of the folder
        raise ChatError(f"--adapter {folder}: {err}") from None


# --------------------------------------------------------------------------- records


def _record_name(rec: EcgRecord) -> str:
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


# --------------------------------------------------------------------------- terminal


def _streamer(tokenizer, out: TextIO):
    """A transformers TextStreamer that writes the new text to ``out`` as it comes."""
    from transformers import TextStreamer

    class _Echo(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text)
            out.flush()

    return _Echo(tokenizer, skip_prompt=True, skip_special_tokens=True)


class Spinner:
    """A spinner on ``stream`` (only where it is a terminal) while a block runs; calling it
    changes the message (``Session(status=spinner)`` reports its progress so).

    Example:
        >>> with Spinner() as status:
        ...     session = Session(["x.hea"], status=status)
    """

    def __init__(self, stream: TextIO = sys.stderr, message: str = "loading"):
        self.stream, self.message = stream, message
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._spin, daemon=True)

    def __call__(self, message: str) -> None:
        self.message = message

    def _spin(self) -> None:
        for ch in itertools.cycle("|/-\\"):
            self.stream.write(f"\r\x1b[K{ch} {self.message} ")
            self.stream.flush()
            if self.stop.wait(0.1):
                break

    def __enter__(self) -> Spinner:
        if self.stream.isatty():
            self.worker.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.worker.is_alive():
            self.stop.set()
            self.worker.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()


HELP = """\
Type a question about the ECG, e.g. "Does this ECG show sinus rhythm?"
  yes/no, "which ..., A or B?" and ECG-QA template questions are scored over their
  options (probabilities shown); other questions are mapped to the closest known one
  (rhythm, conduction, axis, intervals, rate, noise, extra systoles) and scored too, or
  answered with what can be asked (free text only with --generate).
commands:
  /plot [FILE]   write the 12-lead paper plot (default: RECORD.png here)
  /leads I,II    answer from these leads only (/leads all: every lead again)
  /summary       the records' summary again
  /help          this text
  /quit          leave (Ctrl-D too)"""

IMAGE_HELP = """\
Type a question about the ECG image, e.g. "Does this ECG show sinus rhythm?"
  yes/no, "which ..., A or B?" and ECG-QA template questions are scored over their
  options (probabilities shown); other questions are mapped to the closest known one
  and scored too, or answered with what can be asked (free text only with --generate).
commands:
  /plot [FILE]   write the image the model reads (an --ecg record drawn on ECG paper)
  /summary       the ECG's summary again
  /help          this text
  /quit          leave (Ctrl-D too)
/leads, --shots and two-ECG questions need the signal: --modality signal"""


def repl(session: Session | ImageSession, out: TextIO = sys.stdout, prompt: str = "ecg> ") -> int:
    """Read questions and commands until /quit or end of input; returns the exit status.

    A bad command or question prints one line and the loop goes on.
    """
    try:
        import readline  # noqa: F401 - arrow-key history for input(), where available
    except ImportError:  # pragma: no cover - Windows
        pass
    print("Type a question, or /help. " + DISCLAIMER, file=out)
    while True:
        try:
            line = input(prompt).strip()
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(session, line, out):
                    return 0
            else:
                _print_answer(session, line, out)
        except (ChatError, OSError) as err:
            print(f"error: {err}", file=out)
        except KeyboardInterrupt:
            print("\n(interrupted)", file=out)
        out.flush()


def _command(session: Session | ImageSession, line: str, out: TextIO) -> bool:
    """Run one /command; False means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit", "/q"):
        return False
    if name == "/help":
        print(getattr(session, "help", HELP), file=out)
    elif name == "/plot":
        for p in session.plot(arg or None):
            print(f"wrote {p}", file=out)
    elif name == "/leads":
        if not arg:
            raise ChatError("/leads needs a lead list: /leads I,II (or /leads all)")
        leads = session.set_leads(arg)
        print(f"leads: {','.join(leads) if leads else 'all'}", file=out)
    elif name == "/summary":
        print(session.summary(), file=out)
    else:
        raise ChatError(f"unknown command {name}; commands: /plot /leads /summary /help /quit")
    return True


def _print_answer(session: Session | ImageSession, question: str, out: TextIO) -> Answer:
    """Ask, streaming an open answer after "answer:", then print options and disclaimer."""
    kind = classify_question(question, session.vocabulary)
    if kind.kind == "open" and session.generate_open:
        out.write("answer:")
        out.flush()
        ans = session.ask(question, stream=out)
        print(file=out)
        print(ans.format(show_answer=False), file=out)
    else:
        ans = session.ask(question)
        print(ans.format(), file=out)
    return ans


# --------------------------------------------------------------------------- command


def run(args) -> int:
    """``ecgqa chat``: a REPL, or one ``--question`` (text or ``--json``)."""
    if args.json and not args.question:
        raise ChatError("--json needs --question (the REPL prints text)")
    if args.records and not args.shots:
        raise ChatError("--records locates the --shots examples' ECGs; give --shots too")
    modality = chat_modality(args)
    with Spinner() as status:
        if modality == "image":
            image = getattr(args, "image", None)
            session = ImageSession(args.adapter, image=image[0] if image else None,
                                   record=None if image else args.ecg[0],
                                   threshold=args.threshold, generate=args.generate,
                                   status=status)
        else:
            session = Session(args.ecg, args.adapter, shots=args.shots,
                              shots_records=args.records, max_shots=args.max_shots,
                              threshold=args.threshold, leads=args.leads,
                              generate=args.generate, status=status)
    if session.shots is not None:
        print(session.shots.format(), file=sys.stderr if args.json else sys.stdout)
    if args.question:
        if args.json:
            print(json.dumps(session.ask(args.question).to_json(), indent=2))
        else:
            _print_answer(session, args.question, sys.stdout)
        return 0
    with Spinner() as status:
        status("measuring the records")
        summary = session.summary()
    print(summary)
    return repl(session)


def chat_modality(args) -> str:
    """``signal`` or ``image`` from ``--modality``, ``--image`` and the adapter's kind,
    checked before any model loads.

    Raises:
        ChatError: no ECG or both kinds, a modality the adapter does not answer in, or an
            option the image modality does not have (two ECGs, ``--shots``, ``--leads``).
    """
    ecgs, images = args.ecg or [], getattr(args, "image", None) or []
    wanted = getattr(args, "modality", None)
    if not ecgs and not images:
        raise ChatError("give an ECG: --ecg RECORD, or --image FILE with a LoRA image adapter")
    if ecgs and images:
        raise ChatError("give --ecg RECORD or --image FILE, not both")
    if images and wanted == "signal":
        raise ChatError("--image is a picture of the ECG: use --modality image (or leave "
                        "--modality out)")
    modality = "image" if images else wanted or "signal"
    flag = "--image" if images else "--modality image"
    if modality == "image":
        _image_adapter_folder(args.adapter, flag)
    elif adapter_kind(args.adapter)[0] != "signal":
        raise ChatError(f"--adapter {args.adapter} is a LoRA image adapter (train-lora); add "
                        "--modality image to read the record as a picture, or give a "
                        "train-meta adapter")
    if modality == "image":
        if len(ecgs or images) > 1:
            raise ChatError(f"{flag} reads one ECG; compare two with --modality signal and a "
                            "train-meta adapter")
        for option, value in (("--shots", args.shots), ("--leads", args.leads)):
            if value is not None:
                raise ChatError(f"{option} works on the signal; not available with {flag}")
    return modality


__all__ = ["Answer", "ChatError", "DISCLAIMER", "ImageSession", "Option", "QuestionKind",
           "RecordSignals", "RenderSettings", "Session", "Spinner", "adapter_kind",
           "chat_modality", "classify_question", "decide", "load_shots", "read_image",
           "render_settings", "repl", "run", "to_input_spec"]
