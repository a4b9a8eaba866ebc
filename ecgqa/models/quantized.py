"""Correct input gradients through a frozen bitsandbytes 4-bit/8-bit LLM on the CPU.

bitsandbytes 0.50 on the CPU computes two different functions for one layer:

- 4-bit: the first forward without grad (scoring, the prefix cache, a finite-difference
  probe) repacks the weight for a bfloat16 kernel (on AVX-512 BF16 CPUs); later forwards
  run in bfloat16 through an op with no autograd, so input gradients come back missing.
- 8-bit: in eval mode the forward rounds the activations to int8 (piecewise constant in
  the input) while the backward uses the de-quantised weight.

``make_cpu_trainable(model)`` gives every such layer one smooth function,
``x -> F.linear(x, dequantize(W), bias)``, with plain torch autograd: the weight stays
quantized in memory and is de-quantised on each call (autograd keeps that float copy only
until the backward has used it). With the weights fixed, gradients with respect to the
layer inputs, hence the projector, are exact.
"""

from __future__ import annotations

import types

import torch
from torch.nn import functional as F

from ecgqa.models.errors import LlmError

_PATCHED = "_ecgqa_dequant_forward"


def make_cpu_trainable(model: torch.nn.Module) -> int:
    """Make each bitsandbytes Linear4bit / Linear8bitLt on the CPU de-quantise per call.

    Args:
        model: a model loaded with a bitsandbytes ``quantization_config``; changed in place.

    Returns:
        How many layers now use the de-quantising forward.

    Raises:
        LlmError: a 4-bit layer was already repacked by an earlier bitsandbytes forward
            (call this right after loading; ``load_llm`` does).

    Example:
        >>> make_cpu_trainable(llm)       # before the first forward
        14
    """
    import bitsandbytes as bnb

    count = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            continue
        if mod.weight.device.type != "cpu":
            continue
        if isinstance(mod, bnb.nn.Linear4bit):
            if getattr(mod.weight.quant_state, "packing_format_for_cpu", False):
                raise LlmError(f"{name}: bitsandbytes already repacked this 4-bit weight for "
                               "CPU inference; call make_cpu_trainable right after loading, "
                               "before the first forward")
            mod.support_avx512bf16_for_cpu = False     # bnb's own forward must not repack
        forward = _forward_4bit if isinstance(mod, bnb.nn.Linear4bit) else _forward_8bit
        mod.forward = types.MethodType(forward, mod)
        setattr(mod, _PATCHED, True)
        count += 1
    return count


def is_cpu_trainable(model: torch.nn.Module) -> bool:
    """True when every bitsandbytes linear layer of ``model`` uses the de-quantising
    forward of ``make_cpu_trainable`` (trivially true for a model without them)."""
    return all(getattr(mod, _PATCHED, False) for mod in model.modules()
               if type(mod).__module__.startswith("bitsandbytes")
               and isinstance(mod, torch.nn.Linear))


def dequantized_weight(mod: torch.nn.Module) -> torch.Tensor:
    """The float weight ``(out, in)`` a bitsandbytes linear layer stands for, freshly made."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    w = mod.weight
    if isinstance(mod, bnb.nn.Linear4bit):
        return bnbf.dequantize_4bit(w.data, w.quant_state)
    scb = w.SCB if getattr(w, "SCB", None) is not None else mod.state.SCB
    if scb is None:                                  # has_fp16_weights: not quantized
        return w.data
    # int8 rows times their absmax / 127, the formula of bnb's own CPU training matmul
    return w.data.to(torch.float32).mul_(scb.unsqueeze(1).mul(1.0 / 127.0))


def _forward_4bit(self, x: torch.Tensor) -> torch.Tensor:
    dtype = self.compute_dtype or x.dtype          # bnb computes in bnb_4bit_compute_dtype
    return _linear(x.to(dtype), dequantized_weight(self), self.bias).to(x.dtype)


def _forward_8bit(self, x: torch.Tensor) -> torch.Tensor:
    return _linear(x, dequantized_weight(self), self.bias)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    bias = None if bias is None else bias.to(x.dtype)
    return F.linear(x, weight.to(x.dtype), bias)  # (..., in) -> (..., out)
