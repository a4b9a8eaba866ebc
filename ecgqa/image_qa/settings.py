"""The image path's model config: which LLM, image encoder, projector and LoRA adapter.

:class:`ImageQaConfig` is the ``model:`` section of a ``train-lora`` config and of a saved
adapter's ``config.yaml``; :func:`validate_model` checks it before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgqa.config import ConfigError, expand_path, field
from ecgqa.image_qa.encoders import ConvImageEncoder  # noqa: F401 - registers the encoders
from ecgqa.models.llm import LlmConfig
from ecgqa.models.projectors import check_projector
from ecgqa.registry import IMAGE_ENCODERS

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEVER_ADAPTED = ("lm_head", "embed_tokens")


@dataclass
class LoraSettings:
    rank: int = field(8, help="LoRA rank r")
    alpha: float = field(16.0, help="LoRA alpha (scale alpha / r)")
    dropout: float = field(0.05, help="dropout on the LoRA input")
    target_modules: list[str] = field(LORA_TARGETS, help="module names that get an adapter "
                                      "(attention and MLP projections; never lm_head or "
                                      "embed_tokens)")


@dataclass
class ImageQaConfig:
    llm: LlmConfig = field(LlmConfig(), help="the language model (frozen base, LoRA on top)")
    image_size: list[int] = field([256, 512], help="[height, width] images are resized to")
    image_encoder: str = field("cnn", help="registered image encoder (cnn)")
    encoder_kwargs: dict = field({}, help="image encoder arguments (widths, out_dim)")
    projector: str = field("attention", help="linear, mlp, attention or qformer")
    projector_kwargs: dict = field({}, help="extra projector arguments (dim, heads, ...)")
    n_image_tokens: int = field(16, help="image tokens spliced into the prompt")
    lora: LoraSettings = field(LoraSettings(), help="the LoRA adapter on the LLM")
    image_encoder_init: str | None = field(None, help="folder written by `ecgqa encoder "
                                           "distill-image`: the image encoder's architecture "
                                           "(image_encoder, encoder_kwargs) and first weights "
                                           "come from it (the saved adapter keeps the weights)")
    freeze_encoder: bool = field(False, help="keep the image encoder's weights as they start "
                                 "(a distilled encoder); the projector still trains with "
                                 "train_vision")
    projector_init: str | None = field(None, help="a train-meta adapter ('default', "
                                       "'heldout' or a folder) whose projector starts this "
                                       "one: with a distilled encoder, the signal path's "
                                       "projector reads image tokens as it reads signal "
                                       "tokens; projector, projector_kwargs and "
                                       "n_image_tokens must match the adapter's")
    train_vision: bool = field(True, help="train the image encoder and projector too (needed "
                               "when they start random); false: LoRA weights only")
    hf_multimodal: str | None = field(None, help="local folder of a LLaVA or Mllama model: its "
                                      "own vision tower and processor replace the small "
                                      "encoder (llm.dtype/quantization still apply)")
    prompt_file: str | None = field(None, help="prompt YAML (default prompts/image_qa.yaml)")
    score_normalise: str = field("mean", help="option scores: mean (length-normalised) or sum "
                                 "of token log-probabilities")
    max_new_tokens: int = field(24, help="generation length limit")


def validate_model(cfg: ImageQaConfig) -> None:
    """Check values that would fail late, before any model is loaded."""
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 8:
        raise ConfigError(f"model.image_size {cfg.image_size}: give [height, width], each >= 8")
    if cfg.hf_multimodal is None and cfg.image_encoder not in IMAGE_ENCODERS:
        raise ConfigError(f"model.image_encoder {cfg.image_encoder!r}: use one of "
                          f"{', '.join(IMAGE_ENCODERS.names())}")
    if cfg.hf_multimodal is None:
        check_projector(cfg.projector, cfg.projector_kwargs, cfg.n_image_tokens,
                        tokens_key="n_image_tokens")
    if cfg.hf_multimodal is not None and not (expand_path(cfg.hf_multimodal)
                                              / "config.json").is_file():
        raise ConfigError(f"model.hf_multimodal {cfg.hf_multimodal}: no config.json there; "
                          "give a local LLaVA / Mllama folder saved with save_pretrained")
    bad = [t for t in cfg.lora.target_modules if t.split(".")[-1] in NEVER_ADAPTED]
    if bad:
        raise ConfigError(f"model.lora.target_modules {bad}: lm_head and embed_tokens stay "
                          "frozen without adapters; remove them")
    if not cfg.lora.target_modules or cfg.lora.rank < 1 or not 0 <= cfg.lora.dropout < 1:
        raise ConfigError("model.lora needs target_modules, rank >= 1 and 0 <= dropout < 1")
    if cfg.score_normalise not in ("mean", "sum"):
        raise ConfigError("model.score_normalise must be mean or sum")
    if cfg.n_image_tokens < 1:
        raise ConfigError("model.n_image_tokens must be >= 1")
    if cfg.hf_multimodal is not None and (cfg.image_encoder_init or cfg.projector_init):
        raise ConfigError("model.image_encoder_init / projector_init are for the small "
                          "encoder; a model.hf_multimodal folder brings its own vision tower")
