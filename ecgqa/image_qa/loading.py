"""Build or reload an image-path model, whichever kind its config names.

``model.hf_multimodal`` set: a local LLaVA / Mllama folder with its own vision tower
(:class:`~ecgqa.image_qa.hf_multimodal.HfImageQaModel`); unset: the small image encoder and
projector in front of any causal LM (:class:`~ecgqa.image_qa.model.ImageQaModel`). Both
kinds save with ``save_pretrained`` and come back through :func:`load_image_qa` alone.
"""

from __future__ import annotations

import dataclasses
import os

from ecgqa.config import ConfigError
from ecgqa.errors import EcgqaError
from ecgqa.image_qa.hf_multimodal import HfImageQaModel
from ecgqa.image_qa.lora import check_adapter_files
from ecgqa.image_qa.model import (
    ImageQaModel,
    load_saved_config,
    read_vision,
    resolve_image_adapter,
)
from ecgqa.image_qa.settings import ImageQaConfig
from ecgqa.models.fusion import check_saved_llm


def build_image_qa(cfg: ImageQaConfig, adapter: str | os.PathLike | None = None,
                   trainable: bool = True) -> ImageQaModel:
    """Load the LLM, add LoRA (fresh, or from ``adapter``) and the vision side of ``cfg``."""
    if cfg.hf_multimodal:
        return HfImageQaModel.build(cfg, adapter, trainable)
    return ImageQaModel.build(cfg, adapter, trainable)


def load_image_qa(folder: str | os.PathLike, trainable: bool = False,
                  **llm_overrides) -> ImageQaModel:
    """Rebuild a model from a folder written by ``save_pretrained`` alone (``"image"`` or
    ``"default"``: the shipped adapter): the base LLM from the saved config, then the peft
    adapter (``PeftModel.from_pretrained``) and the vision weights; in eval mode and frozen
    unless ``trainable``.

    Args:
        llm_overrides: :class:`~ecgqa.models.llm.LlmConfig` fields to replace (``dtype``,
            ``quantization``, ``device``).

    Raises:
        ConfigError: the folder is not a saved adapter, or peft/transformers cannot use it.
    """
    folder = resolve_image_adapter(folder)
    cfg, prompt = load_saved_config(folder)
    if llm_overrides:
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, **llm_overrides))
    check_saved_llm(cfg.llm, folder / "config.yaml", ConfigError)
    check_adapter_files(folder, cfg)
    vision = None
    if cfg.hf_multimodal is None:
        vision = read_vision(folder / "vision.safetensors")
    try:
        if cfg.hf_multimodal:
            model = HfImageQaModel.build(cfg, adapter=folder, trainable=trainable)
        else:
            model = ImageQaModel.build(cfg, adapter=folder, trainable=trainable,
                                       vision=(vision, folder / "vision.safetensors"))
    except EcgqaError:
        raise
    except (ValueError, TypeError, LookupError, AttributeError, RuntimeError) as err:
        # peft and transformers on an adapter_config.json or weights they cannot use
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"{folder}: cannot build the saved model or its LoRA adapter "
                          f"({why})") from None
    model.prompt = prompt
    if cfg.hf_multimodal is None:
        model._load_vision(folder, vision)
    elif (folder / "vision.safetensors").exists():
        model._load_vision(folder)
    return model.train(trainable)
