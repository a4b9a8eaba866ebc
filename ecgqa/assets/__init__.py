"""What the installed package ships: the real-trained signal encoder, the signal adapters
and the image adapter (each a folder of safetensors plus its config), the prompt files,
and its version.

Lower layers take asset paths and the version from here rather than from the package root
(which re-exports the top layers), so reading them imports nothing above this module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from pathlib import Path

from ecgqa.errors import EcgqaError

ASSETS_DIR = Path(__file__).resolve().parent

PROMPTS_PACKAGE = "ecgqa.prompts"
"""The prompt YAML files as package data: setup.py maps this package onto the source tree's
top-level ``prompts/`` (the one copy that is edited), and a wheel ships it as
``ecgqa/prompts/``."""

SOURCE_PROMPTS = ASSETS_DIR.parents[1] / "prompts"
"""``prompts/`` of a source tree that runs without being installed (``PYTHONPATH=.``)."""

ENCODER_DEFAULT = ASSETS_DIR / "encoder-default"
"""The shipped signal encoder (pretrained on real PTB-XL records of folds 1-8)."""

IMAGE_ADAPTER = ASSETS_DIR / "adapter-image"
"""The shipped LoRA image adapter (``ecgqa chat --image``, ``bench --modality image``)."""


def signal_adapter(name: str) -> Path:
    """The folder of the shipped signal adapter ``name`` (``default``, ``heldout``)."""
    return ASSETS_DIR / f"adapter-{name}"


class AssetError(EcgqaError):
    """A file the package ships is missing (a broken install)."""


def prompt_file(name: str) -> Path:
    """The shipped prompt file ``name``, through ``importlib.resources`` (a wheel or an
    editable install), else from the source tree's ``prompts/``.

    Args:
        name: a file of ``prompts/``: ``qa.yaml`` (signal path), ``image_qa.yaml`` and
            ``image_qa_signal.yaml`` (image path).

    Returns:
        The file's path.

    Raises:
        AssetError: no such file in either place.

    Example:
        >>> prompt_file("qa.yaml").name
        'qa.yaml'
    """
    places = [SOURCE_PROMPTS / name]
    try:
        places.insert(0, importlib.resources.files(PROMPTS_PACKAGE) / name)
    except ModuleNotFoundError:                 # a source tree on PYTHONPATH, not installed
        pass
    for path in places:
        if isinstance(path, Path) and path.is_file():
            return path
    raise AssetError(f"prompt file {name!r} not found in {PROMPTS_PACKAGE} or "
                     f"{SOURCE_PROMPTS}: reinstall ecgqa (`pip install -e .` in a checkout)")


def package_version() -> str:
    """The installed distribution's version (``importlib.metadata``); ``"0+unknown"`` when
    the package runs from a source tree that was never installed."""
    try:
        return importlib.metadata.version("ecgqa")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
