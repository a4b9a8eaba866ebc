"""Warm starts of the image path: a distilled image encoder and a signal adapter's projector.

``model.image_encoder_init`` (a folder from ``ecgqa encoder distill-image``) gives the image
encoder's architecture and first weights; ``model.projector_init`` (a train-meta adapter)
the projector's. Both are read only when a fresh model is built: a saved LoRA adapter
carries the weights in ``vision.safetensors`` and names neither folder.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ecgqa.config import ConfigError, expand_path, read_yaml_sections
from ecgqa.errors import EcgqaError


def encoder_arch(cfg) -> tuple[str, dict]:
    """``(registry name, kwargs)`` of the image encoder: the distilled encoder's when
    ``image_encoder_init`` is set, else ``image_encoder`` / ``encoder_kwargs``."""
    if cfg.image_encoder_init:
        from ecgqa.image_qa.distill import read_image_encoder_config

        conf = read_image_encoder_config(cfg.image_encoder_init)
        return conf["name"], dict(conf["kwargs"])
    return cfg.image_encoder, dict(cfg.encoder_kwargs)


def initial_weights(cfg) -> tuple[dict | None, dict | None, Path | None] | None:
    """The first weights of a fresh model: ``(encoder state, projector state, adapter)``
    from ``image_encoder_init`` / ``projector_init``; None when neither is set."""
    if not cfg.image_encoder_init and not cfg.projector_init:
        return None
    from ecgqa.models.encoders.checkpoint import read_safetensors

    enc_state = proj_state = folder = None
    if cfg.image_encoder_init:
        from ecgqa.image_qa.distill import WEIGHTS_NAME, read_image_encoder_config

        size = read_image_encoder_config(cfg.image_encoder_init).get("image_size")
        if size is not None and list(size) != [int(v) for v in cfg.image_size]:
            raise ConfigError(f"model.image_size {cfg.image_size}: the encoder in "
                              f"{cfg.image_encoder_init} was distilled on {size} images; "
                              "use that size")
        enc_state = read_safetensors(expand_path(cfg.image_encoder_init) / WEIGHTS_NAME,
                                     ConfigError)
    if cfg.projector_init:
        from ecgqa.meta.adapter import resolve_adapter

        try:
            folder = resolve_adapter(cfg.projector_init)
        except EcgqaError as err:
            raise ConfigError(f"model.projector_init: {err}") from None
        saved = read_yaml_sections(folder / "config.yaml", ("model",),
                                   "a 'model' mapping (a train-meta adapter's config)")["model"]
        want = (saved.get("projector"), saved.get("projector_kwargs") or {},
                saved.get("n_ecg_tokens"))
        have = (cfg.projector, cfg.projector_kwargs, cfg.n_image_tokens)
        if want != have:
            raise ConfigError(f"model.projector_init {cfg.projector_init}: its projector is "
                              f"{want[0]} {want[1]} with {want[2]} tokens; set model.projector, "
                              "projector_kwargs and n_image_tokens to match")
        proj_state = read_safetensors(folder / "projector.safetensors", ConfigError)
    return enc_state, proj_state, folder


def load_initial(encoder: nn.Module, projector: nn.Module, enc_state, proj_state,
                  folder) -> None:
    from ecgqa.models.encoders.checkpoint import state_mismatch

    for module, state, what in ((encoder, enc_state, "model.image_encoder_init"),
                                (projector, proj_state, f"model.projector_init ({folder})")):
        if state is None:
            continue
        why = state_mismatch(module.state_dict(), state)
        if why:
            raise ConfigError(f"{what}: weights do not fit ({why} keys)")
        module.load_state_dict(state)
