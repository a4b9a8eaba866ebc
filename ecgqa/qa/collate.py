"""Prompt rendering and tokenising: a question becomes text pieces around ECG slots.

A rendered prompt is a list of ``n_ecgs + 1`` token-id lists; the fusion model splices
the ECG tokens of ECG ``i`` between piece ``i`` and piece ``i + 1``. The answer is
tokenised separately and ends with EOS, so "no" and "not sure" are told apart when
options are scored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ecgqa.errors import EcgqaError

MARKER = "<ecg>"
LAYOUTS = ("question_first", "ecg_first")
DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "prompts" / "qa.yaml"


class PromptError(EcgqaError):
    """The prompt file is missing or malformed."""


@dataclass(frozen=True)
class PromptTemplate:
    """One layout of ``prompts/qa.yaml`` (kept in saved model configs as plain text)."""

    layout: str
    single: str
    comparison: str
    system: str = ""
    answer: str = " {answer}"
    answer_separator: str = ", "

    @classmethod
    def load(cls, layout: str = "question_first",
             path: str | os.PathLike | None = None) -> PromptTemplate:
        """Read ``layout`` from a prompt YAML file (default ``prompts/qa.yaml``)."""
        p = Path(path) if path else DEFAULT_PROMPTS
        try:
            data = yaml.safe_load(p.read_text())
            spec = data["layouts"][layout]
            return cls(layout=layout, single=spec["single"], comparison=spec["comparison"],
                       system=data.get("system", ""), answer=data.get("answer", " {answer}"),
                       answer_separator=data.get("answer_separator", ", "))
        except OSError as err:
            raise PromptError(f"{p}: cannot read prompt file ({err.strerror})") from None
        except (KeyError, TypeError, yaml.YAMLError):
            raise PromptError(f"{p}: no layout {layout!r} with 'single' and 'comparison' "
                              f"prompts (layouts: {', '.join(LAYOUTS)})") from None

    def text(self, question: str, n_ecgs: int) -> str:
        body = (self.single if n_ecgs == 1 else self.comparison)
        return body.replace("{system}", self.system).replace("{question}", question.strip())

    def answer_text(self, answers: Sequence[str]) -> str:
        return self.answer.replace("{answer}", self.answer_separator.join(answers))


@dataclass(frozen=True)
class Encoded:
    """Token ids of one prompt (pieces around ECG slots) and, for training, its answer."""

    pieces: tuple[tuple[int, ...], ...]
    answer: tuple[int, ...] = ()

    @property
    def n_ecgs(self) -> int:
        return len(self.pieces) - 1


def encode_prompt(template: PromptTemplate, tokenizer, question: str, n_ecgs: int) -> Encoded:
    """Render and tokenise the prompt; the chat template is used when the tokenizer has one."""
    if n_ecgs not in (1, 2):
        raise PromptError(f"a question is about one or two ECGs, got {n_ecgs}")
    return _tokenise(tokenizer, template.text(question, n_ecgs), n_ecgs)


def encode_without_ecg(template: PromptTemplate, tokenizer, question: str,
                       n_ecgs: int) -> Encoded:
    """The same prompt with every ECG left out (its slot says so): the text prior."""
    return _tokenise(tokenizer, template.text(question, n_ecgs).replace(MARKER, "(not shown)"),
                     0)


def encode_in_context(template: PromptTemplate, tokenizer,
                      examples: Sequence[tuple[str, int, Sequence[str]]], question: str,
                      n_ecgs: int) -> Encoded:
    """A prompt with solved examples before the question (in-context learning).

    Args:
        examples: ``(question, n_ecgs, answers)`` of each example, in order; their ECG slots
            come first, then the question's own.
    """
    bare = dataclasses.replace(template, system="")
    shown = [bare.text(q, n).strip() + bare.answer_text(a) for q, n, a in examples]
    text = "\n\n".join([template.system, *shown, bare.text(question, n_ecgs).strip()])
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
    pieces = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in parts]
    pieces[0] = prefix + pieces[0]
    return Encoded(pieces=tuple(tuple(p) for p in pieces))


def encode_answer(template: PromptTemplate, tokenizer, answers: Sequence[str]) -> tuple[int, ...]:
    """Answer tokens followed by EOS."""
    ids = tokenizer(template.answer_text(answers), add_special_tokens=False)["input_ids"]
    return tuple(ids) + (tokenizer.eos_token_id,)


def encode_sample(template: PromptTemplate, tokenizer, question: str, n_ecgs: int,
                  answers: Sequence[str] | None = None) -> Encoded:
    enc = encode_prompt(template, tokenizer, question, n_ecgs)
    if answers is None:
        return enc
    return Encoded(pieces=enc.pieces, answer=encode_answer(template, tokenizer, answers))


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
