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

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ecgqa.assets import ENCODER_DEFAULT
from ecgqa.config import expand_path, read_text, short
from ecgqa.errors import EcgqaError
from ecgqa.models.encoders.base import EncoderError, InputSpec, check_contract
from ecgqa.registry import ENCODERS

FORMAT = "ecgqa-encoder"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_ENCODER_DIR = ENCODER_DEFAULT
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
    if not isinstance(name, str) or name not in ENCODERS:
        raise EncoderError(f"unknown encoder {short(name)}; choose one of: "
                           f"{', '.join(ENCODERS.names())}")
    try:
        encoder = ENCODERS.build(name, input_spec=input_spec, **kwargs)
    except EcgqaError:
        raise
    except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError,
            AttributeError, AssertionError) as err:  # constructors (and torch's asserts)
        # on arguments of odd values
        raise EncoderError(f"encoder {name!r}: bad arguments ({_first_line(err)})") from None
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
    path = DEFAULT_ENCODER_DIR if str(source) == "default" else expand_path(source)
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
        state = _read_state_file(path)
        encoder = build_fitting(lambda: build_encoder(name, input_spec=input_spec, **kwargs),
                                state, path, EncoderError)
        _load_state(encoder, state, path)
        encoder.provenance = {"source": str(path)}
    else:
        what = "not a file or folder" if path.exists() else "no such encoder folder or file"
        raise EncoderError(f"{path}: {what}; {_SUPPORTED}")
    return encoder.to(map_location).eval()


def _load_folder(path: Path) -> nn.Module:
    cfg = _read_config(path / CONFIG_NAME)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise EncoderError(f"{path}: {WEIGHTS_NAME} is missing beside {CONFIG_NAME}")
    state = _read_state_file(weights)

    def build() -> nn.Module:
        try:
            return build_encoder(cfg["name"], input_spec=_input_spec(cfg, path), **cfg["kwargs"])
        except EncoderError as err:
            if str(err).startswith(str(path)):
                raise
            raise EncoderError(f"{path / CONFIG_NAME}: {err}") from None

    encoder = build_fitting(build, state, weights, EncoderError)
    _load_state(encoder, state, weights)
    encoder.provenance = cfg.get("provenance") or {}
    return encoder


def _input_spec(cfg: dict, path: Path) -> InputSpec:
    spec = cfg.get("input_spec")
    if spec is not None and not isinstance(spec, dict):
        raise EncoderError(f"{path / CONFIG_NAME}: input_spec must be a mapping, got "
                           f"{short(spec)}")
    leads = (spec or {}).get("leads", [])
    numbers = [(spec or {}).get(k, 1.0) for k in ("fs", "duration_s")]
    if not isinstance(leads, list) or not all(isinstance(x, str) for x in leads) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
        raise EncoderError(f"{path / CONFIG_NAME}: input_spec needs leads (a list of names) "
                           "and fs, duration_s (numbers)")
    try:
        return InputSpec.from_dict(spec)
    except EncoderError as err:
        raise EncoderError(f"{path / CONFIG_NAME}: {err}") from None
    except (TypeError, ValueError, ArithmeticError) as err:
        raise EncoderError(f"{path / CONFIG_NAME}: bad input_spec "
                           f"({_first_line(err)})") from None


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise EncoderError(f"{path.parent}: not a saved encoder ({CONFIG_NAME} is missing); "
                           f"{_SUPPORTED}")
    cfg = read_json(path, EncoderError)
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise EncoderError(f"{path}: not an ecgqa encoder config (format must be {FORMAT!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise EncoderError(f"{path}: encoder format version {short(cfg.get('format_version'))}; "
                           f"this ecgqa reads version {FORMAT_VERSION}")
    if not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("kwargs"), dict) or \
            not all(isinstance(k, str) for k in cfg["kwargs"]):
        raise EncoderError(f"{path}: config needs 'name' (string) and 'kwargs' (mapping)")
    return cfg


def read_json(path: Path, error: type[EcgqaError]):
    """A small JSON file; unreadable, not UTF-8, invalid, too deep or with integers too long
    to convert is ``error`` naming the file (``NaN``/``Infinity`` are read as floats)."""
    text = read_text(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: "
                    f"{err.msg}") from None
    except RecursionError:
        raise error(f"{path}: invalid JSON: nested too deeply") from None
    except ValueError as err:                     # an integer of more than 4300 digits
        raise error(f"{path}: invalid JSON: {_first_line(err)}") from None


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path, EncoderError)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError ... from a refused pickle
        raise EncoderError(f"{path}: refused; only plain state dicts of tensors are loaded "
                           f"(torch.load weights_only=True: {_first_line(err)})") from None
    state = _unwrap_state(obj, path)
    _check_finite(state, path, EncoderError)
    return state


PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")       # a zip (torch.save, .npz), a plain pickle


def read_safetensors(path: str | os.PathLike, error: type[EcgqaError] = EncoderError
                     ) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each finite; nothing else is ever read.

    A pickle (``torch.save``) under a ``.safetensors`` name is refused unread; safetensors
    checks the header against the file's size before anything is allocated.

    Raises:
        ``error`` naming the file: missing, not a file, a pickle, not safetensors, or a
        tensor with NaN or infinite values.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {'not a file' if path.exists() else 'missing'}; expected a "
                    "safetensors file")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    # safetensors: an 8-byte length, then the JSON header's "{"; a pickle starts otherwise
    if head[8:9] != b"{" and head.startswith(PICKLE_MAGIC):
        what = "a zip archive (torch.save, numpy)" if head.startswith(b"PK") else "a pickle"
        raise error(f"{path}: {what}, not safetensors; pickles are never loaded (convert the "
                    "weights with safetensors.torch.save_file)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ... of a bad file
        raise error(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
    _check_finite(state, path, error)
    return state


def _check_finite(state: dict[str, torch.Tensor], path: Path, error) -> None:
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise error(f"{path}: tensor {short(k)} holds NaN or infinite values (a corrupt "
                        "or diverged checkpoint)")


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                   ) -> str | None:
    """What keeps ``state`` from loading strictly into a module whose state is ``expected``
    (names, shapes, and floating vs integer dtypes); None when it fits."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(
        expected[k].shape)]
    kind = [k for k in expected if k in state and k not in bad and
            state[k].is_floating_point() != expected[k].is_floating_point()]
    parts = [f"{len(missing)} missing (e.g. {short(missing[0])})" if missing else "",
             f"{len(unexpected)} unexpected (e.g. {short(unexpected[0])})" if unexpected else "",
             f"{len(bad)} of another shape (e.g. {short(bad[0])}: {tuple(state[bad[0]].shape)} "
             f"vs {tuple(expected[bad[0]].shape)})" if bad else "",
             f"{len(kind)} of another dtype (e.g. {short(kind[0])}: {state[kind[0]].dtype} vs "
             f"{expected[kind[0]].dtype})" if kind else ""]
    return "; ".join(p for p in parts if p) or None


@contextlib.contextmanager
def _construction_budget(modules: int, numel: int, where: Path, error) -> Iterator[None]:
    """Abort building a module that grows past ``modules`` submodules or ``numel`` tensor
    elements: its weights could never fit the file, and building it could take hours."""
    from torch.nn.modules import module as mod

    count = {"modules": 0, "numel": 0}

    def grow(key: str, n: int) -> None:
        count[key] += n
        if count[key] > (modules if key == "modules" else numel):
            raise error(f"{where}: the configured architecture is far larger than the "
                        f"weights in the file (more than {modules if key == 'modules' else numel}"
                        f" {key}); its config does not match its weights")

    handles = [
        mod.register_module_module_registration_hook(lambda m, n, sub: grow("modules", 1)),
        mod.register_module_parameter_registration_hook(
            lambda m, n, p: grow("numel", p.numel()) if p is not None else None),
        mod.register_module_buffer_registration_hook(
            lambda m, n, b: grow("numel", b.numel()) if b is not None else None)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build_fitting(build: Callable[[], nn.Module], state: dict[str, torch.Tensor],
                  where: Path, error: type[EcgqaError] = EncoderError,
                  prefixes: bool = True, what: str | None = None) -> nn.Module:
    """``build()`` twice: first on the ``meta`` device (nothing allocated) under a budget
    set by the tensors of ``state``, to check that ``state`` fits the architecture; then
    for real. So a config that asks for a huge network with small weights is refused
    instead of allocating it. ``prefixes``: names in ``state`` may carry a common prefix
    (``module.``, ``encoder.`` ...), as :func:`load_encoder` strips it."""
    numel = sum(v.numel() for v in state.values())
    with torch.device("meta"), _construction_budget(8 * len(state) + 64,
                                                    2 * numel + (1 << 20), where, error):
        probe = build()
    expected = probe.state_dict()
    why = state_mismatch(expected, _strip_prefixes(state, set(expected)) if prefixes
                         else state)
    if why:
        what = what or getattr(probe, "encoder_name", "the model")
        raise error(f"{where}: weights do not fit {what} with these kwargs: {why} keys")
    return build()


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
    why = state_mismatch(expected, state)
    if why:
        raise EncoderError(f"{path}: weights do not fit {encoder.encoder_name} with these "
                           f"kwargs: {why} keys")
    encoder.load_state_dict(state, strict=True)


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict:
    while state and set(state) != expected:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
