"""What kind of question was asked: yes/no, a listed choice, a known ECG-QA query template
(matched, or the closest kind to a free-form question), or open; and its answer options.

The query templates and their answer options come from the synthetic data's template
table (:data:`ecgqa.synth.questions.TEMPLATES`); a test checks that every wording here
is one the templates produce."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ecgqa.errors import EcgqaError

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
    (38, "what kind of extra systole does this ecg show",
     r"extra ?systol|ectopic|premature (beat|complex|contraction)"),
    (32, "what kind of noises does this ecg show", r"\bnois|artefact|artifact"),
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
