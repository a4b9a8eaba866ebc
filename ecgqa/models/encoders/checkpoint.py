"""Save and load encoders as ``config.json`` + ``model.safetensors`` (no pickle anywhere).

A saved encoder is a folder::

    config.json          {"format": "ecgqa-encoder", "format_version": 1, "name": "resnet1d",
                          "kwargs": {...}, "input_spec": {...}, "out_dim", "n_tokens",
                          "provenance": {...}}
    model.safetensors    the state dict (weights and batch-norm statistics)

:func:`load_encoder` rebuilds the module from ``config.json`` through the registry and
loads the weights with ``safetensors``. It also takes an external plain state-dict file
(``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with ``torch.load(weights_only=True)``)
together with the architecture's registry name and kwargs. Nothing is downloaded.

(The module is not called ``io`` so that it can never shadow the standard library.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

import ecgqa
from ecgqa.models.encoders.base import EncoderError, InputSpec, check_contract
from ecgqa.registry import ENCODERS

FORMAT = "ecgqa-encoder"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_ENCODER_DIR = Path(ecgqa.__file__).resolve().parent / "assets" / "encoder-default"
STATE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
# Prefixes other code bases put before an encoder's own keys.
_PREFIXES = ("module.", "encoder.", "ecg_encoder.", "backbone.", "model.")
_SUPPORTED = ("give 'default', a folder written by save_encoder (config.json + "
              "model.safetensors), or a plain state-dict file (.safetensors, .pt, .pth, .bin) "
              "with name= and the architecture's kwargs")


def build_encoder(name: str, input_spec: InputSpec | dict | None = None, **kwargs) -> nn.Module:
    """Build a registered encoder (``resnet1d``, ``transformer``) and check its contract.

    Args:
        name: registry name (``ecgqa.registry.ENCODERS.names()``).
        input_spec: InputSpec or its dict; None = 12 leads, 500 Hz, 10 s, z-score.
        **kwargs: the architecture's constructor arguments.

    Returns:
        The encoder, with ``encoder_name`` set to ``name``.

    Raises:
        EncoderError: unknown name or bad arguments.
    """
    if name not in ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}; choose one of: "
                           f"{', '.join(ENCODERS.names())}")
    try:
        encoder = ENCODERS.build(name, input_spec=input_spec, **kwargs)
    except TypeError as err:
        raise EncoderError(f"encoder {name!r}: bad arguments ({err})") from None
    encoder.encoder_name = name
    return check_contract(encoder, name)


def save_encoder(encoder: nn.Module, directory: str | os.PathLike,
                 provenance: dict | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically).

    Args:
        encoder: built by :func:`build_encoder` (or :func:`load_encoder`).
        directory: created if needed; existing files of the same names are replaced.
        provenance: JSON-serialisable facts about how the weights were made.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    name = getattr(encoder, "encoder_name", None)
    check_contract(encoder, name or "encoder")
    if name not in ENCODERS:
        raise EncoderError("save_encoder needs an encoder made by build_encoder or load_encoder "
                           "(its registry name is unknown)")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
              "kwargs": encoder.config, "input_spec": encoder.input_spec.to_dict(),
              "out_dim": encoder.out_dim, "n_tokens": encoder.n_tokens,
              "provenance": dict(provenance or getattr(encoder, "provenance", {}) or {})}
    try:
        text = json.dumps(config, indent=1, sort_keys=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise EncoderError(f"save_encoder: config/provenance is not plain JSON ({err})") from None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    _atomic(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    _atomic(out / CONFIG_NAME, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return out


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)        # safetensors writes 0600; a shipped file must be readable
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_encoder(source: str | os.PathLike = "default", map_location: str | torch.device = "cpu",
                 *, name: str | None = None, input_spec: InputSpec | dict | None = None,
                 **kwargs) -> nn.Module:
    """Load an encoder in ``eval()`` mode.

    Args:
        source: ``"default"`` (the shipped weights in ``DEFAULT_ENCODER_DIR``), a folder
            written by :func:`save_encoder`, or a plain state-dict file (``.safetensors``;
            ``.pt``/``.pth``/``.bin`` are read with ``torch.load(weights_only=True)`` only).
        map_location: device the weights are put on.
        name: registry name of the architecture; required for a state-dict file.
        input_spec, **kwargs: constructor arguments for a state-dict file.

    Returns:
        The encoder (``eval()``; ``provenance`` holds config.json's provenance).

    Raises:
        EncoderError: anything else, or a state dict that does not fit the architecture.

    Example:
        >>> enc = load_encoder()                      # the shipped default
        >>> enc.out_dim, enc.n_tokens
    """
    path = DEFAULT_ENCODER_DIR if str(source) == "default" else Path(source).expanduser()
    if path.is_dir():
        if name is not None or kwargs or input_spec is not None:
            raise EncoderError(f"{path}: a saved encoder folder carries its own config; do not "
                               "pass name= or kwargs")
        encoder = _load_folder(path)
    elif path.is_file():
        if path.suffix.lower() not in STATE_SUFFIXES:
            raise EncoderError(f"{path}: unsupported encoder file; {_SUPPORTED}")
        if name is None:
            raise EncoderError(f"{path}: a plain state-dict file needs name= (one of "
                               f"{', '.join(ENCODERS.names())}) and the architecture's kwargs")
        encoder = build_encoder(name, input_spec=input_spec, **kwargs)
        _load_state(encoder, _read_state_file(path), path)
        encoder.provenance = {"source": str(path)}
    else:
        raise EncoderError(f"{path}: no such encoder folder or file; {_SUPPORTED}")
    return encoder.to(map_location).eval()


def _load_folder(path: Path) -> nn.Module:
    cfg = _read_config(path / CONFIG_NAME)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise EncoderError(f"{path}: {WEIGHTS_NAME} is missing beside {CONFIG_NAME}")
    encoder = build_encoder(cfg["name"], input_spec=cfg.get("input_spec"), **cfg["kwargs"])
    _load_state(encoder, _read_state_file(weights), weights)
    encoder.provenance = cfg.get("provenance") or {}
    return encoder


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise EncoderError(f"{path.parent}: not a saved encoder ({CONFIG_NAME} is missing); "
                           f"{_SUPPORTED}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EncoderError(f"{path}: unreadable encoder config ({err})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise EncoderError(f"{path}: not an ecgqa encoder config (format must be {FORMAT!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise EncoderError(f"{path}: encoder format version {cfg.get('format_version')!r}; this "
                           f"ecgqa reads version {FORMAT_VERSION}")
    if not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("kwargs"), dict):
        raise EncoderError(f"{path}: config needs 'name' (string) and 'kwargs' (mapping)")
    return cfg


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises SafetensorError, OSError ...
            raise EncoderError(f"{path}: not a readable safetensors file ({_first_line(err)})"
                               ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError ... from a refused pickle
        raise EncoderError(f"{path}: refused; only plain state dicts of tensors are loaded "
                           f"(torch.load weights_only=True: {_first_line(err)})") from None
    return _unwrap_state(obj, path)


def _unwrap_state(obj, path: Path) -> dict[str, torch.Tensor]:
    """A state dict, possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``."""
    for key in ("state_dict", "model", "encoder"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (not isinstance(obj, dict) or not obj
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise EncoderError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _load_state(encoder: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict load after stripping a common prefix (``module.``, ``encoder.`` ...)."""
    expected = encoder.state_dict()
    state = _strip_prefixes(state, set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(bad)} of another shape (e.g. {bad[0]}: {tuple(state[bad[0]].shape)} vs "
                 f"{tuple(expected[bad[0]].shape)})" if bad else ""]
        raise EncoderError(f"{path}: weights do not fit {encoder.encoder_name} with these "
                           f"kwargs: {'; '.join(p for p in parts if p)} keys")
    encoder.load_state_dict(state, strict=True)


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict:
    while set(state) != expected:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
