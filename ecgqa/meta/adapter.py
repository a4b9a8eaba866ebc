"""A meta-trained adapter on disk: the ECG-language model folder plus the inner-loop recipe.

::

    adapter/
      config.yaml              model config + prompt template   (EcgQaModel.save_pretrained)
      projector.safetensors    the meta-learned projector initialisation
      meta.yaml                MetaConfig: algorithm, inner rate and steps used to adapt
      meta.safetensors         the algorithm's own state (Meta-SGD's learned rates)
      classes.json             the meta-training class split: its parameters, the held-out
                               units, the meta-train classes (absent in adapters from before)

``load_adapter`` rebuilds model and algorithm from the folder alone; nothing is pickled.
The shipped default lives in ``ecgqa/assets/adapter-default`` (``load_adapter("default")``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import ecgqa
from ecgqa.config import from_dict, save_config

if TYPE_CHECKING:  # imported where used: learn2learn (3 s with torchvision) only when needed
    from ecgqa.meta.loop import MetaConfig

DEFAULT_ADAPTER_DIR = Path(ecgqa.__file__).resolve().parent / "assets" / "adapter-default"


class AdapterError(ValueError):
    """The folder is not a saved adapter."""


@dataclasses.dataclass
class _SavedMeta:
    meta: MetaConfig


def save_adapter(model, algo, meta: MetaConfig, out: str | os.PathLike) -> Path:
    """Write ``model`` (its projector = the meta-learned init) and the algorithm state."""
    from safetensors.torch import save_file

    out = Path(out)
    model.save_pretrained(out)
    own = {k: v.detach().contiguous().cpu() for k, v in algo.state_dict().items()
           if not k.startswith(("module.", "projector.", "head.module."))}
    tmp = out / f".meta.{os.getpid()}.tmp"
    save_file(own, str(tmp))
    os.replace(tmp, out / "meta.safetensors")
    save_config(_SavedMeta(meta), out / "meta.yaml")
    return out


def save_class_split(split, params: dict, out: str | os.PathLike) -> Path:
    """Write the meta-training class split beside the adapter (``classes.json``), so a
    benchmark asks only classes this adapter never trained on.

    Args:
        split: the :class:`ecgqa.qa.episodes.ClassSplit` of meta-training.
        params: how it was made (question types, test fraction, seed, ``by``).
    """
    import json

    path = Path(out) / "classes.json"
    body = {**params, "by": split.by, "test_units": sorted(split.test_units),
            "meta_train": sorted([t, list(a), list(ans)] for t, a, ans in split.meta_train)}
    tmp = path.with_name(f".classes.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)
    return path


def load_class_split(source: str | os.PathLike) -> dict | None:
    """The adapter's ``classes.json`` (``test_units``, ``meta_train`` as tuples), or None
    for an adapter saved without one."""
    import json

    path = resolve_adapter(source) / "classes.json"
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    body["test_units"] = frozenset(body["test_units"])
    body["meta_train"] = frozenset((t, tuple(a), tuple(ans)) for t, a, ans in body["meta_train"])
    return body


def resolve_adapter(source: str | os.PathLike) -> Path:
    folder = DEFAULT_ADAPTER_DIR if str(source) == "default" else Path(source).expanduser()
    if not (folder / "meta.yaml").is_file() or not (folder / "config.yaml").is_file():
        raise AdapterError(f"{folder}: not a saved adapter (needs config.yaml and meta.yaml, "
                           "as written by ecgqa train-meta)")
    return folder


def load_meta_config(source: str | os.PathLike) -> MetaConfig:
    import yaml

    from ecgqa.meta.loop import MetaConfig

    folder = resolve_adapter(source)
    return from_dict(MetaConfig, yaml.safe_load((folder / "meta.yaml").read_text())["meta"],
                     "meta.")


def load_adapter(source: str | os.PathLike = "default", **llm_overrides):
    """Rebuild ``(model, algorithm, meta_config)`` from an adapter folder (or "default")."""
    from ecgqa.meta.algorithms import build_algorithm
    from ecgqa.models.fusion import EcgQaModel

    folder = resolve_adapter(source)
    meta = load_meta_config(folder)
    model = EcgQaModel.from_pretrained(folder, **llm_overrides)
    algo = build_algorithm(meta.algorithm, model.projector, meta.inner_lr, meta.first_order)
    load_algorithm_state(algo, folder)
    return model, algo, meta


def load_algorithm_state(algo, folder: str | os.PathLike) -> None:
    """Load the algorithm's own tensors (Meta-SGD rates) saved beside the projector."""
    from safetensors.torch import load_file

    path = Path(folder) / "meta.safetensors"
    own = load_file(str(path)) if path.is_file() else {}
    if own:
        missing, unexpected = algo.load_state_dict(own, strict=False)
        if unexpected:
            raise AdapterError(f"{path}: tensors {', '.join(unexpected)} do not belong to "
                               f"this algorithm")
