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
The shipped adapters live in ``ecgqa/assets/adapter-<name>`` (``load_adapter("default")``,
``load_adapter("heldout")``; see :data:`SHIPPED_ADAPTERS`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ecgqa.assets import signal_adapter
from ecgqa.config import (
    expand_path,
    read_yaml_sections,
    save_config,
    section_config,
    short,
)
from ecgqa.errors import EcgqaError

if TYPE_CHECKING:  # imported where used: learn2learn (3 s with torchvision) only when needed
    from ecgqa.meta.loop import MetaConfig

SHIPPED_ADAPTERS = {name: signal_adapter(name) for name in ("default", "heldout")}
"""The adapters shipped with the package, by name: ``default`` answers chat's questions
(trained on every class of the real and synthetic data), ``heldout`` gives the benchmark's
honest few-shot numbers (meta-trained with a share of the classes held out)."""
DEFAULT_ADAPTER_DIR = SHIPPED_ADAPTERS["default"]


class AdapterError(EcgqaError):
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
    for an adapter saved without one.

    Raises:
        AdapterError: not an adapter folder, or a ``classes.json`` that is not the split
            ``save_class_split`` writes.
    """
    from ecgqa.models.encoders.checkpoint import read_json

    path = resolve_adapter(source) / "classes.json"
    if not path.exists() and not path.is_symlink():
        return None
    body = read_json(path, AdapterError)
    if not isinstance(body, dict) or body.get("by") not in ("attribute", "template"):
        raise AdapterError(f"{path}: expected the class split save_class_split writes "
                           "(a mapping with 'by' attribute or template)")
    units, train = body.get("test_units"), body.get("meta_train")
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
        raise AdapterError(f"{path}: test_units must be a list of strings")
    if not isinstance(train, list) or not all(_is_class(c) for c in train):
        raise AdapterError(f"{path}: meta_train must be a list of [template_id, [attribute...], "
                           "[answer...]] classes")
    body["test_units"] = frozenset(units)
    body["meta_train"] = frozenset((t, tuple(a), tuple(ans)) for t, a, ans in train)
    return body


def _is_class(c) -> bool:
    return (isinstance(c, list) and len(c) == 3 and type(c[0]) is int
            and all(isinstance(part, list) and all(isinstance(x, str) for x in part)
                    for part in c[1:]))


def resolve_adapter(source: str | os.PathLike) -> Path:
    folder = SHIPPED_ADAPTERS.get(str(source)) or expand_path(source)
    if not (folder / "meta.yaml").is_file() or not (folder / "config.yaml").is_file():
        raise AdapterError(f"{folder}: not a saved adapter (needs config.yaml and meta.yaml, "
                           "as written by ecgqa train-meta)")
    return folder


def load_meta_config(source: str | os.PathLike) -> MetaConfig:
    """The inner-loop recipe of an adapter (``meta.yaml``), checked.

    Raises:
        AdapterError: not an adapter, or a ``meta.yaml`` with an unknown algorithm, a
            value of the wrong type or out of range.
    """
    from ecgqa.meta.loop import MetaConfig
    from ecgqa.models.fusion import LOSS_VOCABS
    from ecgqa.registry import META_ALGOS

    path = resolve_adapter(source) / "meta.yaml"
    data = read_yaml_sections(path, ("meta",), "a mapping 'meta' (the MetaConfig train-meta "
                              "writes)", AdapterError)
    meta = section_config(MetaConfig, data, "meta", path, AdapterError)
    if meta.algorithm not in META_ALGOS:
        raise AdapterError(f"{path}: meta.algorithm {short(meta.algorithm)} is not one of "
                           f"{', '.join(META_ALGOS.names())}")
    if not meta.inner_lr > 0 or meta.inner_steps < 0 or (
            meta.test_inner_steps is not None and meta.test_inner_steps < 0):
        raise AdapterError(f"{path}: meta.inner_lr must be > 0 and meta.inner_steps, "
                           "meta.test_inner_steps >= 0")
    if meta.inner_vocab not in LOSS_VOCABS:
        raise AdapterError(f"{path}: meta.inner_vocab {short(meta.inner_vocab)} is not one "
                           f"of {', '.join(LOSS_VOCABS)}")
    return meta


def load_adapter(source: str | os.PathLike = "default", /, **llm_overrides):
    """Rebuild ``(model, algorithm, meta_config)`` from an adapter folder (or "default").

    ``llm_overrides`` replace fields of the saved LLM config (``source="tiny-llama"``,
    ``dtype="bfloat16"`` ...).

    Raises:
        AdapterError: not an adapter, or a bad ``meta.yaml``, ``classes.json`` or
            ``meta.safetensors``; SavedModelError / EncoderError for the model files.
    """
    from ecgqa.meta.algorithms import build_algorithm
    from ecgqa.models.fusion import EcgQaModel

    folder = resolve_adapter(source)
    meta = load_meta_config(folder)
    model = EcgQaModel.from_pretrained(folder, **llm_overrides)
    algo = build_algorithm(meta.algorithm, model.projector, meta.inner_lr, meta.first_order)
    load_algorithm_state(algo, folder)
    return model, algo, meta


_NOT_OWN = ("module.", "projector.", "head.module.")     # the projector's, saved beside


def load_algorithm_state(algo, folder: str | os.PathLike) -> None:
    """Load the algorithm's own tensors (Meta-SGD rates) saved beside the projector.

    Raises:
        AdapterError: ``meta.safetensors`` missing where the algorithm has tensors of its
            own, unreadable, or holding other tensors than the algorithm's.
    """
    from ecgqa.models.encoders.checkpoint import read_safetensors, state_mismatch

    path = Path(folder) / "meta.safetensors"
    expected = {k: v for k, v in algo.state_dict().items() if not k.startswith(_NOT_OWN)}
    if not path.exists() and not path.is_symlink():
        if expected:
            raise AdapterError(f"{path}: missing; the algorithm's own tensors "
                               f"({short(sorted(expected))}) are saved there")
        return
    own = read_safetensors(path, AdapterError)
    why = state_mismatch(expected, own)
    if why:
        raise AdapterError(f"{path}: tensors do not belong to this algorithm: {why}")
    if own:
        algo.load_state_dict(own, strict=False)
