"""Prompt rendering and tokenising: a question becomes text pieces around ECG slots.

A rendered prompt is a list of ``n_ecgs + 1`` token-id lists; the fusion model splices
the ECG tokens of ECG ``i`` between piece ``i`` and piece ``i + 1``. The answer is
tokenised separately and ends with EOS, so "no" and "not sure" are told apart when
options are scored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ecgqa.assets import prompt_file
from ecgqa.errors import EcgqaError

MARKER = "<ecg>"
LAYOUTS = ("question_first", "ecg_first")
DEFAULT_PROMPTS = "qa.yaml"                 # a shipped prompt file (ecgqa.assets.prompt_file)
#: The measured values a prompt's ``{measured}`` slot lists (``Measurements`` field names).
MEASURED_VALUES = ("heart rate {heart_rate_bpm} bpm, RR {rr_ms} ms, PR {pr_ms} ms, "
                   "QRS {qrs_ms} ms, QT {qt_ms} ms, QTc {qtc_ms} ms")
_OPTIONAL_TEXTS = ("system", "answer", "answer_separator", "measured", "measured_comparison",
                   "measured_values", "measured_none")
_FIELD = re.compile(r"\{(\w+)\}")
# Where the record's own text (the measured values) starts in a prompt being tokenised:
# the pieces before and after it are tokenised apart, so the shared part is a token prefix.
_OWN = "\x1e"


class PromptError(EcgqaError):
    """The prompt file is missing or malformed."""


@dataclass(frozen=True)
class PromptTemplate:
    """One layout of ``prompts/qa.yaml`` (kept in saved model configs as plain text).

    ``{measured}`` in a layout is where the ECGs' measured values go when the model is
    built with ``measurements: true`` (one ``measured`` line for a single ECG, one
    ``measured_comparison`` line per ECG otherwise; ``measured_values`` lists the values,
    an item whose value was not measurable left out); without measurements it is empty.
    """

    layout: str
    single: str
    comparison: str
    system: str = ""
    answer: str = " {answer}"
    answer_separator: str = ", "
    measured: str = "Measured: {values}\n"
    measured_comparison: str = "Measured, {which} ECG: {values}\n"
    measured_values: str = MEASURED_VALUES
    measured_none: str = "nothing measurable"

    @classmethod
    def load(cls, layout: str = "question_first",
             path: str | os.PathLike | None = None) -> PromptTemplate:
        """Read ``layout`` from a prompt YAML file (default ``prompts/qa.yaml``).

        Raises:
            PromptError: the file cannot be read, is not UTF-8 YAML, has no such layout, has
                a text that is not a string, or a layout without ``{question}`` and one
                ``<ecg>`` per ECG (once in ``single``, twice in ``comparison``).
        """
        p = Path(path) if path else prompt_file(DEFAULT_PROMPTS)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as err:
            raise PromptError(f"{p}: cannot read prompt file ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise PromptError(f"{p}: not UTF-8 text (byte {err.start})") from None
        except yaml.YAMLError:
            data = None                          # reported as a file without the layout
        try:
            spec = data["layouts"][layout]
            texts = {k: data[k] for k in _OPTIONAL_TEXTS if k in data}
            texts |= {"single": spec["single"], "comparison": spec["comparison"]}
        except (KeyError, TypeError):
            raise PromptError(f"{p}: no layout {layout!r} with 'single' and 'comparison' "
                              f"prompts (layouts: {', '.join(LAYOUTS)})") from None
        for key, text in texts.items():
            if not isinstance(text, str):
                where = f"layouts.{layout}.{key}" if key in ("single", "comparison") else key
                raise PromptError(f"{p}: {where} is not a string")
        _check_layout(p, layout, texts["single"], texts["comparison"])
        return cls(layout=layout, **texts)

    @property
    def has_measured(self) -> bool:
        """Whether both layouts have a ``{measured}`` slot."""
        return "{measured}" in self.single and "{measured}" in self.comparison

    def text(self, question: str, n_ecgs: int,
             measured: Sequence[Mapping] | None = None) -> str:
        """The prompt of ``question`` about ``n_ecgs`` ECGs; ``measured``: each ECG's
        measurements (``Measurements.as_dict()``), for the ``{measured}`` slot."""
        return self._render(question, n_ecgs, measured)

    def _render(self, question: str, n_ecgs: int, measured: Sequence[Mapping] | None,
                mark: bool = False) -> str:
        """:meth:`text`; with ``mark``, the measured lines start with :data:`_OWN`."""
        body = (self.single if n_ecgs == 1 else self.comparison)
        lines = ""
        if measured is not None:
            if "{measured}" not in body:
                raise PromptError("measurements were given but the prompt has no "
                                  "{measured} slot")
            if len(measured) != n_ecgs:
                raise PromptError(f"{len(measured)} measurements for {n_ecgs} ECGs")
            if n_ecgs == 1:
                lines = self.measured.replace("{values}", self.values_text(measured[0]))
            else:
                lines = "".join(self.measured_comparison.replace("{which}", which)
                                .replace("{values}", self.values_text(m))
                                for which, m in zip(("first", "second"), measured))
            lines = (_OWN if mark else "") + lines
        return (body.replace("{system}", self.system).replace("{measured}", lines)
                .replace("{question}", question.strip()))

    def values_text(self, measured: Mapping) -> str:
        """``measured_values`` with ``measured``'s numbers, rounded to integers; an item whose
        value is missing or None is left out."""
        items = []
        for item in self.measured_values.split(", "):
            names = _FIELD.findall(item)
            values = [measured.get(n) for n in names]
            if names and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                for n, v in zip(names, values):
                    item = item.replace("{" + n + "}", str(int(round(v))))
                items.append(item)
        return ", ".join(items) if items else self.measured_none

    def answer_text(self, answers: Sequence[str]) -> str:
        return self.answer.replace("{answer}", self.answer_separator.join(answers))


def _check_layout(path: Path, layout: str, single: str, comparison: str) -> None:
    """Each prompt of a layout has the question's slot and one ECG slot per ECG."""
    for key, text, n in (("single", single, 1), ("comparison", comparison, 2)):
        if "{question}" not in text:
            raise PromptError(f"{path}: layouts.{layout}.{key} has no {{question}} slot; "
                              "add one where the question goes")
        if text.count(MARKER) != n:
            raise PromptError(f"{path}: layouts.{layout}.{key} must hold {MARKER} "
                              f"{'once' if n == 1 else 'twice'} (one per ECG), not "
                              f"{text.count(MARKER)} times")


@dataclass(frozen=True)
class Encoded:
    """Token ids of one prompt (pieces around ECG slots) and, for training, its answer."""

    pieces: tuple[tuple[int, ...], ...]
    answer: tuple[int, ...] = ()
    shared: int = 0       # leading tokens of pieces[0] before the ECGs' own text (their
                          # measured values): the same for every record asked the question;
                          # 0 where the first piece has no such text

    @property
    def n_ecgs(self) -> int:
        return len(self.pieces) - 1


def encode_prompt(template: PromptTemplate, tokenizer, question: str, n_ecgs: int,
                  measured: Sequence[Mapping] | None = None) -> Encoded:
    """Render and tokenise the prompt (``measured``: see :meth:`PromptTemplate.text`); the
    chat template is used when the tokenizer has one."""
    if n_ecgs not in (1, 2):
        raise PromptError(f"a question is about one or two ECGs, got {n_ecgs}")
    return _tokenise(tokenizer, template._render(question, n_ecgs, measured, mark=True), n_ecgs)


def encode_without_ecg(template: PromptTemplate, tokenizer, question: str,
                       n_ecgs: int) -> Encoded:
    """The same prompt with every ECG left out (its slot says so): the text prior."""
    return _tokenise(tokenizer, template.text(question, n_ecgs).replace(MARKER, "(not shown)"),
                     0)


def encode_in_context(template: PromptTemplate, tokenizer,
                      examples: Sequence[tuple[str, int, Sequence[str]]], question: str,
                      n_ecgs: int, measured: Sequence[Sequence[Mapping]] | None = None
                      ) -> Encoded:
    """A prompt with solved examples before the question (in-context learning).

    Args:
        examples: ``(question, n_ecgs, answers)`` of each example, in order; their ECG slots
            come first, then the question's own.
        measured: the measurements of each example's ECGs, then of the question's (see
            :meth:`PromptTemplate.text`); None: no measurements.
    """
    bare = dataclasses.replace(template, system="")
    each = list(measured) if measured is not None else [None] * (len(examples) + 1)
    shown = [bare.text(q, n, m).strip() + bare.answer_text(a)
             for (q, n, a), m in zip(examples, each)]
    text = "\n\n".join([template.system, *shown, bare.text(question, n_ecgs, each[-1]).strip()])
    return _tokenise(tokenizer, text, sum(n for _, n, _ in examples) + n_ecgs)


def _tokenise(tokenizer, text: str, n_ecgs: int) -> Encoded:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        prefix: list[int] = []
    else:
        prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    parts = text.split(MARKER)
    if len(parts) != n_ecgs + 1:
        raise PromptError(f"prompt has {len(parts) - 1} {MARKER} slots, question needs {n_ecgs}")
    head, own, tail = parts[0].partition(_OWN)
    pieces = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in [head, *parts[1:]]]
    pieces[0] = prefix + pieces[0]
    shared = len(pieces[0]) if own else 0
    if own:
        pieces[0] = pieces[0] + tokenizer(tail, add_special_tokens=False)["input_ids"]
    return Encoded(pieces=tuple(tuple(p) for p in pieces), shared=shared)


def encode_answer(template: PromptTemplate, tokenizer, answers: Sequence[str]) -> tuple[int, ...]:
    """Answer tokens followed by EOS."""
    ids = tokenizer(template.answer_text(answers), add_special_tokens=False)["input_ids"]
    return tuple(ids) + (tokenizer.eos_token_id,)


def encode_sample(template: PromptTemplate, tokenizer, question: str, n_ecgs: int,
                  answers: Sequence[str] | None = None,
                  measured: Sequence[Mapping] | None = None) -> Encoded:
    enc = encode_prompt(template, tokenizer, question, n_ecgs, measured)
    if answers is None:
        return enc
    return dataclasses.replace(enc, answer=encode_answer(template, tokenizer, answers))


def parse_answer(text: str, options: Sequence[str], separator: str = ",") -> frozenset[str] | None:
    """Read a generated answer as a set of known options (options may contain commas).

    Returns:
        The options named, in any order; None when the text is not a list of options.

    Example:
        >>> sorted(parse_answer("Static noise, baseline drift", ["baseline drift", "static noise"]))
        ['baseline drift', 'static noise']
    """
    rest = " ".join(text.lower().split()).strip(" .")
    by_length = sorted({o.lower(): o for o in options}.items(), key=lambda kv: -len(kv[0]))
    found = set()
    while rest:
        for low, orig in by_length:
            if rest.startswith(low) and (len(rest) == len(low) or rest[len(low):].lstrip()
                                         .startswith(separator)):
                found.add(orig)
                rest = rest[len(low):].lstrip().removeprefix(separator).lstrip()
                break
        else:
            return None
    return frozenset(found) if found else None
