"""A saved EcgQaModel folder: ``config.yaml`` + ``projector.safetensors`` (+ ``encoder/``).

    EcgQaModel --save_model--> folder (nothing pickled)
    folder --read_saved_config, check_saved_llm, read the weights--> checked parts
        --load_parts--> (encoder, projector, llm, tokenizer, cfg, template)

Everything read from a folder is checked before the LLM loads, and a folder that cannot
be read raises :class:`SavedModelError` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ecgqa.config import read_yaml_sections, save_config, section_config, short
from ecgqa.errors import EcgqaError
from ecgqa.models.llm import LlmConfig, load_llm
from ecgqa.models.model_config import ModelConfig
from ecgqa.models.projectors import build_projector
from ecgqa.qa.collate import LAYOUTS, MARKER, PromptTemplate

FORMAT_VERSION = 1


class SavedModelError(EcgqaError):
    """A saved model folder (``config.yaml`` + ``projector.safetensors``) is missing,
    incomplete or corrupt; the message names the file."""


def save_model(model, out: str | os.PathLike) -> Path:
    """Write ``config.yaml`` + ``projector.safetensors`` of an EcgQaModel (+ the encoder
    unless it is a reference to the shipped default or a folder). Nothing is pickled."""
    from safetensors.torch import save_file

    from ecgqa.models.encoders import save_encoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(model.cfg)
    if cfg.encoder != "default" and not Path(cfg.encoder).is_dir():
        save_encoder(model.encoder, out / "encoder")
        cfg = dataclasses.replace(cfg, encoder="encoder", encoder_kwargs={})
    state = {k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()}
    tmp = out / f".projector.{os.getpid()}.tmp"
    save_file(state, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
    os.replace(tmp, out / "projector.safetensors")
    save_config(_SavedModel(model=cfg, template=dataclasses.asdict(model.template)),
                out / "config.yaml")
    return out


def load_parts(folder: str | os.PathLike, **llm_overrides) -> tuple:
    """The parts of an EcgQaModel saved by :func:`save_model`, from the folder alone.

    Everything read from the folder is checked before the LLM is loaded; the projector
    is built only once its saved weights are known to fit it.

    Args:
        folder: the saved model folder.
        **llm_overrides: fields of its ``model.llm`` to replace (device, dtype ...).

    Returns:
        ``(encoder, projector, llm, tokenizer, cfg, template)``, the projector holding
        its saved weights.

    Raises:
        SavedModelError: a missing or malformed ``config.yaml`` or
            ``projector.safetensors`` (EncoderError for the ``encoder/`` folder).
    """
    from ecgqa.models.encoders.checkpoint import build_fitting, load_encoder, read_safetensors

    folder = Path(folder)
    cfg, template = read_saved_config(folder)
    if llm_overrides:
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, **llm_overrides))
    check_saved_llm(cfg.llm, folder / "config.yaml")
    weights = folder / "projector.safetensors"
    state = read_safetensors(weights, SavedModelError)
    encoder = load_encoder(cfg.encoder)      # "default" or a folder (read_saved_config)
    try:
        llm, tok = load_llm(cfg.llm)
    except EcgqaError:
        raise
    except (ValueError, TypeError) as err:   # transformers' checks of the LLM's config
        raise SavedModelError(f"{folder / 'config.yaml'}: model.llm cannot be built "
                              f"({' '.join(str(err).split())[:200]})") from None

    def build():
        try:
            return build_projector(cfg.projector, d_enc=encoder.out_dim,
                                   d_llm=llm.config.hidden_size, n_tokens=cfg.n_ecg_tokens,
                                   **cfg.projector_kwargs)
        except EcgqaError:
            raise
        except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError,
                AssertionError) as err:        # torch asserts on head counts
            why = " ".join(str(err).split())[:200]
            raise SavedModelError(f"{folder / 'config.yaml'}: projector "
                                  f"{short(cfg.projector)} cannot be built with "
                                  f"{short(cfg.projector_kwargs)} ({why})") from None

    projector = build_fitting(build, state, weights, SavedModelError, prefixes=False,
                              what=f"projector {cfg.projector}")
    projector.load_state_dict(state)
    return encoder, projector, llm, tok, cfg, template


def read_saved_config(folder: Path) -> tuple[ModelConfig, PromptTemplate]:
    """The model config and prompt template of a saved folder's ``config.yaml``, checked;
    ``model.encoder: encoder`` is resolved to the folder's own ``encoder/``."""
    path = folder / "config.yaml"
    if not path.is_file():
        raise SavedModelError(f"{folder}: no config.yaml (not a saved ecgqa model)")
    data = read_yaml_sections(path, ("model", "template"), "the mappings 'model' and "
                              "'template' written by save_pretrained", SavedModelError)
    cfg = section_config(ModelConfig, data, "model", path, SavedModelError)
    if cfg.encoder == "encoder":
        cfg = dataclasses.replace(cfg, encoder=str(folder / "encoder"))
    elif cfg.encoder != "default" and not Path(cfg.encoder).is_dir():
        raise SavedModelError(f"{path}: model.encoder {short(cfg.encoder)} is not a saved "
                              "encoder ('encoder' for the folder's own, 'default' or a folder)")
    checks = (("n_ecg_tokens", cfg.n_ecg_tokens >= 1, ">= 1"),
              ("max_new_tokens", cfg.max_new_tokens >= 1, ">= 1"),
              ("layout", cfg.layout in LAYOUTS, f"one of {', '.join(LAYOUTS)}"),
              ("score_normalise", cfg.score_normalise in ("mean", "sum"), "mean or sum"))
    for name, ok, want in checks:
        if not ok:
            raise SavedModelError(f"{path}: model.{name} {short(getattr(cfg, name))} must be "
                                  f"{want}")
    return cfg, _saved_template(data["template"], path)


TINY_LIMITS = {"tiny_hidden": (2, 4096), "tiny_layers": (1, 64), "seed": (-2**63, 2**63 - 1)}
"""The sizes a tiny random LLM may have (and its seed's range): a saved config asking for
more would allocate gigabytes or build for hours."""


def check_saved_llm(llm: LlmConfig, path: Path,
                    error: type[EcgqaError] = SavedModelError) -> None:
    """Refuse a saved config whose tiny random LLM would be huge, or could not be built."""
    if llm.source not in ("tiny-llama", "tiny-gemma"):
        return
    for name, (lo, hi) in TINY_LIMITS.items():
        value = getattr(llm, name)
        if not lo <= value <= hi:
            raise error(f"{path}: model.llm.{name} {value} is out of range ({lo}..{hi})")
    if llm.tiny_hidden % 2:
        raise error(f"{path}: model.llm.tiny_hidden {llm.tiny_hidden} must be even (two "
                    "attention heads)")


def _saved_template(data: dict, path: Path) -> PromptTemplate:
    names = {f.name for f in dataclasses.fields(PromptTemplate)}
    odd = [k for k, v in data.items() if k not in names or not isinstance(v, str)]
    if odd or not {"layout", "single", "comparison"} <= set(data):
        raise SavedModelError(f"{path}: template needs the texts layout, single and "
                              f"comparison{f' (bad: {short(odd[0])})' if odd else ''}")
    if data["single"].count(MARKER) != 1 or data["comparison"].count(MARKER) != 2:
        raise SavedModelError(f"{path}: template.single must hold {MARKER} once and "
                              "template.comparison twice")
    return PromptTemplate(**data)


@dataclass
class _SavedModel:
    model: ModelConfig
    template: dict
