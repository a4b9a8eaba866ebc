"""The fusion projectors: ``(b, n, d_enc) -> (b, m, d_llm)`` for every registered name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ecgqa.config import ConfigError
from ecgqa.models.projectors import build_projector, check_projector
from ecgqa.registry import PROJECTORS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
D_ENC, D_LLM, M = 12, 10, 3
# small sizes for each projector (heads divide dim)
SMALL = {"linear": {}, "mlp": {"hidden": 16}, "attention": {"dim": 8, "heads": 2},
         "qformer": {"dim": 8, "heads": 2, "layers": 2}}
# float64 unit roundoff; the projectors add up at most a few hundred float64 roundings per
# output (sums over <= 16 features, a handful of layers), so two orderings of one computation
# differ by far less than K64 * U64 * scale, while a mixed-up token or sample moves an
# output by about its own size.
U64, K64 = 2.0 ** -53, 1e3


def _small(name: str, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return build_projector(name, D_ENC, D_LLM, n_tokens=M, **SMALL[name]).to(dtype)


def _assert_f64_close(actual, expected):
    scale = max(float(expected.abs().max()), 1.0)
    assert float((actual - expected).abs().max()) <= K64 * U64 * scale


def test_the_registered_projectors_are_the_four_documented_ones():
    assert PROJECTORS.names() == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("b,n", [(1, 1), (2, 5), (3, 17)])
def test_shape_contract(name, b, n):
    proj = _small(name, torch.float32)
    out = proj(torch.randn(b, n, D_ENC))
    assert out.shape == (b, M, D_LLM) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_n_tokens_sets_the_number_of_ecg_tokens(name):
    for m in (1, 5):
        proj = build_projector(name, D_ENC, D_LLM, n_tokens=m, **SMALL[name])
        assert proj(torch.randn(2, 4, D_ENC)).shape == (2, m, D_LLM)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_sample_is_projected_alone_and_token_order_does_not_matter(name):
    """Rows of a batch do not mix; mean pooling and attention without positions make the
    output invariant to the order of the encoder tokens."""
    proj = _small(name)
    x = torch.randn(3, 6, D_ENC, dtype=torch.float64)
    with torch.no_grad():
        out = proj(x)
        for i in range(3):
            _assert_f64_close(proj(x[i: i + 1])[0], out[i])
        _assert_f64_close(proj(x[:, torch.randperm(6)]), out)
        other = proj(x + torch.randn_like(x))
    assert (other - out).abs().max() > 1e-3         # the output does depend on the ECG
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3      # the m tokens are not copies


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_every_parameter(name):
    proj = _small(name, torch.float32)
    weights = torch.randn(2, M, D_LLM)
    (proj(torch.randn(2, 5, D_ENC)) * weights).sum().backward()
    for pname, p in proj.named_parameters():
        assert p.requires_grad, pname
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().max() > 0, pname


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_is_finish_of_head_of_body_with_head_the_last_linear(name):
    """ANIL adapts ``head`` alone: it must be the last layer, producing all of the output."""
    proj = _small(name, torch.float32)
    x = torch.randn(2, 5, D_ENC)
    with torch.no_grad():
        assert torch.equal(proj(x), proj.finish(proj.head(proj.body(x))))
        assert proj.head(proj.body(x)).numel() == 2 * M * D_LLM     # finish only reshapes
    assert isinstance(proj.head, nn.Linear)


def test_linear_is_one_affine_map_of_the_normalised_mean_token():
    """Token ``j`` is rows ``j*d_llm:(j+1)*d_llm`` of the head applied to LN(mean over n)."""
    proj = _small("linear")
    x = torch.randn(2, 7, D_ENC, dtype=torch.float64)
    pooled = F.layer_norm(x.mean(dim=1), (D_ENC,), proj.norm.weight, proj.norm.bias)
    w, bias = proj.head.weight, proj.head.bias                  # (m * d_llm, d_enc)
    with torch.no_grad():
        out = proj(x)
        for j in range(M):
            rows = slice(j * D_LLM, (j + 1) * D_LLM)
            _assert_f64_close(out[:, j], pooled @ w[rows].T + bias[rows])


def test_mlp_hidden_layer_and_qformer_depth_follow_their_arguments():
    mlp = build_projector("mlp", D_ENC, D_LLM, n_tokens=2, hidden=24)
    assert mlp.head.in_features == 24 and mlp.head.out_features == 2 * D_LLM
    linear = build_projector("linear", D_ENC, D_LLM, n_tokens=2)
    assert linear.head.in_features == D_ENC
    attention = build_projector("attention", D_ENC, D_LLM, n_tokens=2, dim=8, heads=2)
    assert len(attention.blocks) == 1 and attention.blocks[0].self_attn is None
    qformer = build_projector("qformer", D_ENC, D_LLM, n_tokens=2, dim=8, heads=2, layers=3)
    assert len(qformer.blocks) == 3 and all(b.self_attn is not None for b in qformer.blocks)
    assert qformer.queries.shape == (2, 8)


def test_an_unknown_projector_names_the_choices():
    with pytest.raises(KeyError, match="unknown projector 'perceiver'; choose one of: "
                       "attention, linear, mlp, qformer"):
        build_projector("perceiver", D_ENC, D_LLM)


def test_bad_projector_arguments_are_refused_at_build_time():
    """The build itself fails, before any forward pass (and :func:`check_projector` turns
    these into config errors before any model loads)."""
    with pytest.raises(TypeError, match="layers"):
        build_projector("attention", D_ENC, D_LLM, layers=2)      # only qformer has layers
    with pytest.raises(AssertionError, match="divisible"):
        build_projector("qformer", D_ENC, D_LLM, dim=10, heads=4)
    with pytest.raises(ValueError, match="layers 0 must be >= 1"):
        build_projector("qformer", D_ENC, D_LLM, dim=8, heads=2, layers=0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_check_projector_accepts_every_projector_with_good_arguments(name):
    check_projector(name, SMALL[name], M)
    check_projector(name, {}, 1)                                 # the defaults


@pytest.mark.parametrize("name,kwargs,m,message", [
    ("perceiver", {}, 3, "model.projector 'perceiver': use one of attention, linear, mlp, qformer"),
    ("attention", {"dim": 16, "heads": 3}, 3,
     "model.projector_kwargs {'dim': 16, 'heads': 3}: the attention projector cannot be built "
     "(embed_dim must be divisible by num_heads); change dim or heads"),
    ("attention", {"dim": 8, "heads": 0}, 3, "change dim or heads"),
    ("attention", {"layers": 2}, 3,
     "model.projector_kwargs 'layers': the attention projector takes dim, heads; remove 'layers'"),
    ("linear", {"hidden": 8}, 3, "the linear projector takes no arguments; remove 'hidden'"),
    ("mlp", {"n_tokens": 4}, 3, "takes hidden; set model.n_ecg_tokens instead"),
    ("mlp", {"d_llm": 4}, 3, "takes hidden; remove 'd_llm'"),
    ("mlp", {"hidden": -1}, 3, "the mlp projector cannot be built ("),
    ("qformer", {"dim": 8.5}, 3, "change dim, heads or layers"),
    ("qformer", {"layers": 0}, 3, "layers 0 must be >= 1"),
    ("linear", {}, 0, "model.n_ecg_tokens 0 must be >= 1"),
    ("linear", [1], 3, "model.projector_kwargs [1]: give a mapping"),
])
def test_check_projector_names_the_key_and_the_fix_in_one_line(name, kwargs, m, message):
    with pytest.raises(ConfigError) as err:
        check_projector(name, kwargs, m)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_projector_allocates_nothing_for_a_huge_projector():
    """It builds on the meta device: an LLM-sized query-former is checked in no time."""
    check_projector("qformer", {"dim": 8192, "heads": 64, "layers": 32}, 64)
    with pytest.raises(ConfigError, match="divisible"):
        check_projector("qformer", {"dim": 8192, "heads": 3, "layers": 32}, 64)


def _model_sections(node):
    """Every mapping under a YAML document that chooses a projector."""
    if isinstance(node, dict):
        if "projector" in node:
            yield node
        for v in node.values():
            yield from _model_sections(v)


def _config_projectors():
    found = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for sec in _model_sections(yaml.safe_load(path.read_text())):
            m = sec.get("n_ecg_tokens", sec.get("n_image_tokens", 8))
            found.append(pytest.param(sec["projector"], sec.get("projector_kwargs") or {}, m,
                                      id=str(path.relative_to(CONFIGS))))
    return found


def test_the_shipped_configs_choose_projectors():
    assert len(_config_projectors()) >= 4


@pytest.mark.parametrize("name,kwargs,m", _config_projectors())
def test_every_shipped_config_builds_its_projector(name, kwargs, m):
    check_projector(name, kwargs, m)
    proj = build_projector(name, D_ENC, D_LLM, n_tokens=m, **kwargs)
    assert proj(torch.randn(2, 5, D_ENC)).shape == (2, m, D_LLM)
