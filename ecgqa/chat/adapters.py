"""Which adapter a chat loads: a signal adapter (``train-meta``) or a LoRA image adapter
(``train-lora``), shipped or from a folder, and the renders an image adapter was trained on."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ecgqa.chat.questions import ChatError
from ecgqa.config import expand_path
from ecgqa.errors import EcgqaError
from ecgqa.records.read import EcgRecord


def signal_adapter_folder(adapter) -> Path:
    """The folder of a signal adapter (a train-meta output folder, or "default")."""
    kind, folder = classify_adapter(adapter)
    if kind == "image":
        raise ChatError(f"--adapter {adapter} is a LoRA image adapter (ecgqa train-lora); ask "
                        "about a picture of the ECG with --modality image (or --image FILE), "
                        "or give a train-meta adapter")
    return folder


def classify_adapter(adapter: str | os.PathLike) -> tuple[str, Path]:
    """The modality an adapter answers in, and the folder to load it from.

    A shipped adapter's name (``"default"``, ``"heldout"``) and a ``train-meta`` folder
    (``config.yaml`` + ``meta.yaml``) are ``"signal"``. A ``train-lora`` adapter (peft's
    ``adapter_config.json`` + ``config.yaml``; ``vision.safetensors`` holds its image
    encoder), or a ``train-lora`` output folder with one in ``adapter/``, is ``"image"``.

    Raises:
        ChatError: the folder is neither.

    Example:
        >>> classify_adapter("out/lora-300")
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


def load_signal_model(folder: Path, with_algorithm: bool):
    """``(model, algorithm, meta config)``; without few-shot adaptation only the model
    (learn2learn, and torchvision under it, is then never imported)."""
    quiet_transformers()
    if with_algorithm:
        from ecgqa.meta.adapter import load_adapter

        return load_adapter(folder)
    from ecgqa.models.fusion import EcgQaModel

    return EcgQaModel.from_pretrained(folder), None, None


def quiet_transformers() -> None:
    """No weight-loading progress bars or notices between the user and the answer."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


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


def image_adapter_folder(adapter, flag: str = "the image modality") -> Path:
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

    kind, folder = classify_adapter(expand_path(adapter))     # "~nosuchuser/x" is no RuntimeError
    if kind != "image":
        raise ChatError(f"{need}; --adapter {adapter} is a signal adapter (train-meta)")
    return folder


def load_image_model(folder: Path):
    """``load_image_qa(folder)``; a bad adapter is a :class:`ChatError`."""
    from ecgqa.image_qa.loading import load_image_qa

    quiet_transformers()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)   # peft imports it: CPU notices
    try:
        with warnings.catch_warnings():       # peft's use of a deprecated transformers name
            warnings.simplefilter("ignore", FutureWarning)
            return load_image_qa(folder)
    except EcgqaError as err:         # ConfigError, LlmError, EncoderError ... of the folder
        raise ChatError(f"--adapter {folder}: {err}") from None
