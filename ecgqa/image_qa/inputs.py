"""Model inputs of the image path: the prompt YAML, tokenised conversations, and images
as pixels.

    ``(human, gpt)`` turns --encode_conversation--> Conversation (token pieces; the image
    goes between the first two)
    PIL images or paths --preprocess--> pixels (B, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgqa.assets import prompt_file
from ecgqa.config import ConfigError, parse_yaml, read_text

MARKER = "<image>"
DEFAULT_PROMPTS = "image_qa.yaml"           # a shipped prompt file (ecgqa.assets.prompt_file)


@dataclass(frozen=True)
class ImagePrompt:
    """The prompt YAML: first turn (with the image slot), later turns, answer format."""

    first: str
    next: str
    system: str = ""
    answer: str = " {answer}"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> ImagePrompt:
        p = Path(path) if path else prompt_file(DEFAULT_PROMPTS)
        return cls.from_dict(parse_yaml(read_text(p), str(p)), str(p))

    @classmethod
    def from_dict(cls, data, where: str) -> ImagePrompt:
        """The prompt from a mapping of texts (``first``, ``next``, ``system``, ``answer``);
        anything else is a :class:`ConfigError` naming ``where``."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"first", "next"} <= set(data) or any(
                k not in names or not isinstance(v, str) for k, v in data.items()):
            raise ConfigError(f"{where}: a prompt needs the texts 'first' and 'next' (and "
                              "optionally 'system', 'answer')")
        out = cls(**data)
        if out.first.count(MARKER) != 1:
            raise ConfigError(f"{where}: 'first' must hold {MARKER} exactly once")
        return out

    def turn_text(self, question: str, index: int) -> str:
        body = self.first if index == 0 else self.next
        question = " ".join(question.replace(MARKER, " ").split())
        return body.replace("{system}", self.system).replace("{question}", question)

    def answer_text(self, answer: str | Sequence[str]) -> str:
        return self.answer.replace("{answer}", answer if isinstance(answer, str)
                                   else ", ".join(answer))


@dataclass(frozen=True)
class Conversation:
    """Token ids of one conversation: the image goes between ``pieces[0]`` and ``pieces[1]``;
    ``targets[i]`` says whether piece ``i`` is an answer (trained on)."""

    pieces: tuple[tuple[int, ...], ...]
    targets: tuple[bool, ...]


def encode_conversation(prompt: ImagePrompt, tokenizer, turns: Sequence[tuple[str, str | None]]
                        ) -> Conversation:
    """Tokenise ``(human, gpt)`` turns; a last answer of None leaves the prompt open."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pieces, targets = [], []
    for i, (human, answer) in enumerate(turns):
        text = prompt.turn_text(human, i)
        parts = text.split(MARKER) if i == 0 else [text]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in parts]
        if i == 0:
            ids[0] = bos + ids[0]
        pieces += ids
        targets += [False] * len(ids)
        if answer is not None:
            pieces.append(encode_answer(prompt, tokenizer, answer))
            targets.append(True)
    return Conversation(tuple(tuple(p) for p in pieces), tuple(targets))


def encode_answer(prompt: ImagePrompt, tokenizer, answer: str | Sequence[str]) -> list[int]:
    """Answer tokens followed by EOS."""
    ids = tokenizer(prompt.answer_text(answer), add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


# --------------------------------------------------------------------------- image side


def load_image(image):
    """A PIL image, or a path to one, as RGB."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except Exception as err:   # noqa: BLE001 - Pillow's decoders raise OSError,
            # ValueError, SyntaxError, DecompressionBombError ... on a bad file
            why = " ".join(str(err).split())[:200] or type(err).__name__
            raise ConfigError(f"{image}: cannot read image ({why})") from None
    return image.convert("RGB")


def preprocess(images: Sequence, size: Sequence[int]) -> torch.Tensor:
    """PIL images (or paths) -> ``(B, 3, H, W)`` float in [-1, 1], resized to ``size``."""
    import numpy as np
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    out = []
    for im in images:
        arr = np.asarray(load_image(im).resize((w, h), Image.BILINEAR), dtype=np.float32)
        out.append(torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0)   # (3, H, W)
    return torch.stack(out)
