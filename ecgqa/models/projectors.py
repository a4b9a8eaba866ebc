"""Fusion projectors: encoder tokens ``(b, n, d_enc)`` -> ECG tokens ``(b, m, d_llm)``.

The only trainable part of the ECG-language model (meta-learning adapts it per task).
Registered by name in :data:`ecgqa.registry.PROJECTORS`:

- ``linear``: mean-pool the encoder tokens, one linear map to ``m`` tokens.
- ``mlp``: the same through a GELU MLP.
- ``attention``: the FSL paper's attention mapper, ``m`` learned prefix queries attending
  over the encoder tokens (one cross-attention block).
- ``qformer``: a small query-former/perceiver, ``layers`` blocks of cross-attention to the
  encoder tokens then self-attention among the queries, each with an MLP.

Every projector starts with a LayerNorm over the encoder features (so any encoder's
feature scale works) and ends in a linear map, so its output scale is learned; the fusion
model multiplies by the LLM's embedding scale where the LLM has one (Gemma).

Each projector is ``finish(head(body(feats)))`` with ``head`` its last linear layer, so
ANIL can adapt the head alone (:mod:`ecgqa.meta.algorithms`).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ecgqa.config import ConfigError, short
from ecgqa.registry import PROJECTORS

#: The arguments the model gives every projector (``n_tokens`` is ``model.n_ecg_tokens``).
_GIVEN = ("d_enc", "d_llm", "n_tokens")


class _Pooled(nn.Module):
    """Mean-pool then map to ``m`` tokens (linear or MLP)."""

    def __init__(self, d_enc: int, d_llm: int, n_tokens: int, hidden: int | None):
        super().__init__()
        self.n_tokens, self.d_llm = n_tokens, d_llm
        self.norm = nn.LayerNorm(d_enc)
        self.hidden = (nn.Identity() if hidden is None else
                       nn.Sequential(nn.Linear(d_enc, hidden), nn.GELU()))
        self.head = nn.Linear(d_enc if hidden is None else hidden, n_tokens * d_llm)

    def body(self, feats: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.norm(feats.mean(dim=1)))           # (b, d_enc or hidden)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, self.n_tokens, self.d_llm)               # (b, m, d_llm)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.finish(self.head(self.body(feats)))


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, heads: int, self_attention: bool):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True) \
            if self_attention else None
        self.norm_s = nn.LayerNorm(dim) if self_attention else None
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kvn = self.norm_kv(kv)
        q = q + self.cross(self.norm_q(q), kvn, kvn, need_weights=False)[0]   # (b, m, dim)
        if self.self_attn is not None:
            s = self.norm_s(q)
            q = q + self.self_attn(s, s, s, need_weights=False)[0]
        return q + self.mlp(self.norm_m(q))


class QueryProjector(nn.Module):
    """Learned queries attending over encoder tokens (attention mapper / query-former)."""

    def __init__(self, d_enc: int, d_llm: int, n_tokens: int, dim: int, heads: int,
                 layers: int, self_attention: bool):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(d_enc)
        self.inp = nn.Linear(d_enc, dim)
        self.blocks = nn.ModuleList(_CrossBlock(dim, heads, self_attention)
                                    for _ in range(layers))
        self.head = nn.Linear(dim, d_llm)

    def body(self, feats: torch.Tensor) -> torch.Tensor:
        kv = self.inp(self.norm(feats))                               # (b, n, dim)
        q = self.queries.unsqueeze(0).expand(feats.shape[0], -1, -1)  # (b, m, dim)
        for block in self.blocks:
            q = block(q, kv)
        return q                                                      # (b, m, dim)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x                                                      # (b, m, d_llm)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.finish(self.head(self.body(feats)))               # (b, m, d_llm)


@PROJECTORS.register("linear")
def linear(d_enc: int, d_llm: int, n_tokens: int = 4) -> nn.Module:
    return _Pooled(d_enc, d_llm, n_tokens, hidden=None)


@PROJECTORS.register("mlp")
def mlp(d_enc: int, d_llm: int, n_tokens: int = 4, hidden: int = 512) -> nn.Module:
    return _Pooled(d_enc, d_llm, n_tokens, hidden=hidden)


@PROJECTORS.register("attention")
def attention(d_enc: int, d_llm: int, n_tokens: int = 8, dim: int = 256,
              heads: int = 4) -> nn.Module:
    return QueryProjector(d_enc, d_llm, n_tokens, dim, heads, layers=1, self_attention=False)


@PROJECTORS.register("qformer")
def qformer(d_enc: int, d_llm: int, n_tokens: int = 8, dim: int = 256, heads: int = 4,
            layers: int = 2) -> nn.Module:
    if layers < 1:
        raise ValueError(f"layers {layers} must be >= 1 (without a block the queries never "
                         "see the ECG)")
    return QueryProjector(d_enc, d_llm, n_tokens, dim, heads, layers=layers,
                          self_attention=True)


def build_projector(name: str, d_enc: int, d_llm: int, **kwargs) -> nn.Module:
    """Build a registered projector; raises KeyError naming the choices."""
    return PROJECTORS.build(name, d_enc=d_enc, d_llm=d_llm, **kwargs)


def check_projector(name: str, kwargs: dict, n_tokens: int, section: str = "model",
                    tokens_key: str = "n_ecg_tokens") -> None:
    """Check a config's projector choice before any model loads.

    The projector is built once, on the ``meta`` device (no memory, no numbers), with small
    stand-ins for the encoder's and the LLM's widths, so whatever its constructor refuses
    (an unknown argument, ``dim`` not divisible by ``heads``, ...) is found here.

    Args:
        name: ``{section}.projector``, a registered name.
        kwargs: ``{section}.projector_kwargs``.
        n_tokens: ECG tokens per ECG (``{section}.n_ecg_tokens``).
        section: the config section, for the messages.
        tokens_key: the config key of ``n_tokens`` (``n_image_tokens`` on the image path).

    Raises:
        ConfigError: a one-line message naming the key and the fix.
    """
    if name not in PROJECTORS:
        raise ConfigError(f"{section}.projector {short(name)}: use one of "
                          f"{', '.join(PROJECTORS.names())}")
    if n_tokens < 1:
        raise ConfigError(f"{section}.{tokens_key} {n_tokens} must be >= 1")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{section}.projector_kwargs {short(kwargs)}: give a mapping of "
                          "argument names to values")
    accepted = [k for k in inspect.signature(PROJECTORS.get(name)).parameters
                if k not in _GIVEN]
    for key in kwargs:
        if key not in accepted:
            fix = (f"set {section}.{tokens_key} instead" if key == "n_tokens" else
                   f"remove {short(key)}")
            raise ConfigError(f"{section}.projector_kwargs {short(key)}: the {name} projector "
                              f"takes {', '.join(accepted) or 'no arguments'}; {fix}")
    try:
        with torch.device("meta"):
            build_projector(name, d_enc=8, d_llm=8, n_tokens=n_tokens, **kwargs)
    except (TypeError, ValueError, ArithmeticError, AssertionError, RuntimeError) as err:
        why = " ".join(str(err).split())[:200] or type(err).__name__
        names = accepted or [f"{section}.{tokens_key}"]
        change = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise ConfigError(f"{section}.projector_kwargs {short(kwargs)}: the {name} projector "
                          f"cannot be built ({why}); change {change}") from None
