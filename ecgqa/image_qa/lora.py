"""The peft LoRA adapter on the image path's LLM: placed on the attention and MLP
projections only (never ``lm_head`` or ``embed_tokens``), and a saved adapter's files
checked before peft reads them.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ecgqa.config import ConfigError, short
from ecgqa.image_qa.settings import NEVER_ADAPTED, ImageQaConfig, LoraSettings


def add_lora(llm: nn.Module, settings: LoraSettings, target_modules=None,
             modules_to_save=None):
    """Wrap ``llm`` with a fresh peft LoRA adapter; nothing on lm_head / embed_tokens.

    Args:
        target_modules: module names or a regex (default ``settings.target_modules``).
        modules_to_save: whole modules trained and saved with the adapter.
    """
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, task_type="CAUSAL_LM", bias="none",
                      target_modules=target_modules or list(settings.target_modules),
                      modules_to_save=modules_to_save)
    model = get_peft_model(llm, conf)
    check_lora_placement(model)
    return model


def lora_module_names(model: nn.Module) -> list[str]:
    """Names of modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def check_lora_placement(model: nn.Module) -> None:
    names = lora_module_names(model)
    if not names:
        raise ConfigError("model.lora.target_modules matched no module of the LLM; use names "
                          "such as q_proj, v_proj, gate_proj")
    bad = [n for n in names if any(part in NEVER_ADAPTED for part in n.split("."))]
    if bad:
        raise ConfigError(f"LoRA on {bad[0]}: lm_head and embed_tokens must stay without "
                          "adapters")


MAX_LORA_RANK = 4096


def check_adapter_files(folder: Path, cfg: ImageQaConfig) -> None:
    """What peft will read, checked first: ``adapter_config.json`` is a LoRA config whose
    rank its weights have, and the weights are ``adapter_model.safetensors`` (a pickled
    ``adapter_model.bin`` is never loaded)."""
    from ecgqa.models.encoders.checkpoint import read_json, read_safetensors

    path = folder / "adapter_config.json"
    conf = read_json(path, ConfigError)
    if not isinstance(conf, dict) or conf.get("peft_type") != "LORA":
        raise ConfigError(f"{path}: not a peft LoRA config (peft_type must be LORA)")
    rank = conf.get("r")
    if type(rank) is not int or not 1 <= rank <= MAX_LORA_RANK:
        raise ConfigError(f"{path}: r must be a rank in 1..{MAX_LORA_RANK}, got {short(rank)}")
    for key in ("rank_pattern", "alpha_pattern", "layer_replication"):
        if conf.get(key):
            raise ConfigError(f"{path}: {key} is not supported by ecgqa's LoRA adapters")
    weights = folder / "adapter_model.safetensors"
    if not weights.exists() and not weights.is_symlink():
        raise ConfigError(f"{weights}: missing (peft's pickled adapter_model.bin is never "
                          "loaded; save the adapter with safe_serialization)")
    state = read_safetensors(weights, ConfigError)
    bad = [k for k, v in state.items() if k.endswith("lora_A.weight")
           and (v.dim() != 2 or v.shape[0] != rank)]
    if bad or not state:
        raise ConfigError(f"{weights}: its LoRA weights do not have rank r={rank} of "
                          f"adapter_config.json{f' (e.g. {short(bad[0])})' if bad else ''}")


def wrap_lora(llm, cfg: ImageQaConfig, adapter, trainable: bool, target_modules=None,
               modules_to_save=None):
    if cfg.llm.quantization not in (None, "none") and trainable:
        # on the CPU, load_llm has made the bitsandbytes layers de-quantise per call
        # (ecgqa.models.quantized), so gradients reach the LoRA weights exactly
        from peft import prepare_model_for_kbit_training

        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=False)
    if adapter is None:
        return add_lora(llm, cfg.lora, target_modules, modules_to_save)
    from peft import PeftModel

    model = PeftModel.from_pretrained(llm, str(adapter), is_trainable=trainable)
    check_lora_placement(model)
    return model


def inference_mode(llm) -> bool:
    """Whether the peft adapter was loaded for inference only (``is_trainable=False``)."""
    conf = getattr(llm, "peft_config", {}).get("default")
    return bool(getattr(conf, "inference_mode", False))
