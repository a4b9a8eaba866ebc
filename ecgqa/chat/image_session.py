"""The image session: the same questions about a picture of one ECG (a photo, scan or
rendered PNG/JPG, or a record drawn as the adapter's training images), answered by a LoRA
image adapter."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TextIO

import numpy as np

from ecgqa.chat.adapters import image_adapter_folder, load_image_model, render_settings
from ecgqa.chat.answers import (
    DEFAULT_MAX_SHOTS,
    DEFAULT_THRESHOLD,
    Answer,
    check_options,
    decide,
    describe_record,
    record_name,
    token_streamer,
)
from ecgqa.chat.questions import ChatError, answer_vocabulary, classify_question
from ecgqa.config import expand_path
from ecgqa.records.read import read_record

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

MIN_IMAGE_PX = 16


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
        check_options([image if image is not None else record], threshold, DEFAULT_MAX_SHOTS)
        self.threshold = float(threshold)
        self.generate_open = bool(generate)
        self.adapter = str(adapter)
        folder = image_adapter_folder(adapter)
        self.paths = [str(image if image is not None else record)]
        self.record = read_record(record) if record is not None else None
        self.render = render_settings(folder) if record is not None else None
        self.image = read_image(image) if image is not None else self.render.render(self.record)
        status(f"loading the image model ({self.adapter}; a first run converts the LLM: ~1 min)")
        self.model = load_image_model(folder)
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
            streamer = token_streamer(self.model.tokenizer, stream) if stream is not None else None
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
        target = Path(out) if out is not None else Path(f"{record_name(self.record)}.png")
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise ChatError(f"{target}: use one of {', '.join(IMAGE_SUFFIXES)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(target)
        return [target]
