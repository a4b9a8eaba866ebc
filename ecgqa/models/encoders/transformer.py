"""Patch transformer: non-overlapping time patches over all leads become the tokens.

A ``patch``-sample window of every lead is one token (a strided convolution, i.e. a
linear map of the ``leads x patch`` values), plus a learned position embedding, then
pre-norm ``nn.TransformerEncoder`` layers. 5000 samples in 50-sample patches: 100 tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ecgqa.models.encoders.base import EncoderError, InputSpec, check_size, preprocess
from ecgqa.registry import ENCODERS


class PatchTransformer(nn.Module):
    """Transformer ECG encoder: ``(b, leads, t) -> (b, t // patch, d_model)``.

    Args:
        input_spec: leads, rate, duration, normalisation (default 12 leads, 500 Hz, 10 s).
        patch: samples per token (a trailing remainder shorter than a patch is dropped).
        d_model: token size (``out_dim``).
        layers: transformer encoder layers.
        heads: attention heads (must divide ``d_model``).
        ff_mult: feed-forward width as a multiple of ``d_model``.
        dropout: dropout in training (none in ``eval()``).

    Example:
        >>> enc = PatchTransformer(d_model=64, layers=1, heads=4)
        >>> enc(torch.randn(2, 12, 5000)).shape      # (b, n_tokens, out_dim)
        torch.Size([2, 100, 64])
    """

    def __init__(self, input_spec: InputSpec | dict | None = None, patch: int = 50,
                 d_model: int = 256, layers: int = 4, heads: int = 8, ff_mult: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.input_spec = InputSpec.from_dict(input_spec)
        n_tokens = self.input_spec.n_samples // patch if patch >= 1 else 0
        if n_tokens < 1:
            raise EncoderError(f"transformer: patch must be in 1..{self.input_spec.n_samples} "
                               f"samples, got {patch}")
        if d_model < 1 or heads < 1 or d_model % heads or layers < 1 or ff_mult < 1:
            raise EncoderError(f"transformer: need layers >= 1 and heads dividing d_model, got "
                               f"d_model={d_model}, heads={heads}, layers={layers}")
        check_size("transformer", layers * (4 + 2 * ff_mult) * d_model * d_model
                   + (n_tokens + patch * self.input_spec.n_leads) * d_model)
        if not 0.0 <= dropout < 1.0:
            raise EncoderError(f"transformer: dropout must be in [0, 1), got {dropout}")
        self.config = dict(patch=patch, d_model=d_model, layers=layers, heads=heads,
                           ff_mult=ff_mult, dropout=dropout)
        self.embed = nn.Conv1d(self.input_spec.n_leads, d_model, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out_dim, self.n_tokens = int(d_model), int(n_tokens)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(b, leads, t)`` mV, ``lead_mask`` ``(b, leads)`` -> ``(b, n, out_dim)``."""
        x = preprocess(x, lead_mask, self.input_spec)       # (b, leads, t)
        n = x.shape[-1] // self.config["patch"]
        if n != self.n_tokens:
            raise EncoderError(f"transformer: expected {self.input_spec.n_samples} samples "
                               f"(its position embedding has {self.n_tokens} tokens), got "
                               f"{x.shape[-1]}")
        h = self.embed(x).transpose(1, 2) + self.pos        # (b, n, d)
        return self.norm(self.blocks(h))                    # (b, n, d)


@ENCODERS.register("transformer")
def build_transformer(**kwargs) -> PatchTransformer:
    """Registry builder: ``ENCODERS.build("transformer", d_model=256, ...)``."""
    return PatchTransformer(**kwargs)
