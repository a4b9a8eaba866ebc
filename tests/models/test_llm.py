"""LLM loading: tiny random models, local folders, bitsandbytes 4/8-bit on the CPU, errors."""

from __future__ import annotations

import pytest
import torch

from ecgqa.models.llm import LlmConfig, LlmError, build_tiny_tokenizer, load_llm


def test_tiny_models_are_frozen_and_deterministic():
    a, tok = load_llm(LlmConfig(source="tiny-llama"))
    b, _ = load_llm(LlmConfig(source="tiny-llama"))
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    g, _ = load_llm(LlmConfig(source="tiny-gemma"))
    assert type(g).__name__ == "Gemma3ForCausalLM"
    assert float(g.get_input_embeddings().embed_scale) == pytest.approx(8.0)   # sqrt(64)
    assert build_tiny_tokenizer().get_vocab() == tok.get_vocab()


def _saved_tiny(tmp_path):
    model, tok = load_llm(LlmConfig(source="tiny-llama", tiny_hidden=64))
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    return model, tok, tmp_path / "tiny"


def test_local_folder_round_trip(tmp_path):
    model, tok, folder = _saved_tiny(tmp_path)
    again, tok2 = load_llm(LlmConfig(source="path", path=str(folder)))
    ids = tok("does this ecg show atrial fibrillation?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, again(ids).logits)
    assert tok2.get_vocab() == tok.get_vocab()


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_bitsandbytes_quantised_frozen_llm_on_the_cpu(tmp_path, bits):
    import bitsandbytes as bnb

    model, tok, folder = _saved_tiny(tmp_path)
    q, _ = load_llm(LlmConfig(source="path", path=str(folder), quantization=bits))
    kind = bnb.nn.Linear4bit if bits == "4bit" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, kind) for m in q.modules())
    ids = tok("does this ecg show atrial fibrillation?", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits.float()
        out = q(ids).logits.float()
    assert torch.isfinite(out).all()
    # quantisation noise, not a different model
    assert torch.corrcoef(torch.stack([ref.flatten(), out.flatten()]))[0, 1] > 0.9


@pytest.mark.parametrize("cfg,match", [
    (LlmConfig(source="hub"), "unknown llm.source"),
    (LlmConfig(source="path", path="/nonexistent"), "not a local model folder"),
    (LlmConfig(source="tiny-llama", dtype="float8"), "not supported"),
    (LlmConfig(source="path", path=".", quantization="3bit"), "use 4bit, 8bit or none"),
])
def test_bad_llm_configs_are_one_line_errors(cfg, match):
    with pytest.raises(LlmError, match=match):
        load_llm(cfg)


def test_a_local_qwen_family_model_drives_the_fusion_model(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ecgqa.models.fusion import EcgQaModel, ModelConfig

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32,
                                        intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1,
                                        pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id))
    qwen.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    cfg = ModelConfig(llm=LlmConfig(source="path", path=str(tmp_path / "qwen")),
                      encoder="resnet1d", encoder_kwargs={"widths": [8, 8, 8, 8],
                                                          "blocks": [1, 1, 1, 1], "out_dim": 8},
                      projector="linear", n_ecg_tokens=2)
    model = EcgQaModel.build(cfg)
    assert type(model.llm).__name__ == "Qwen2ForCausalLM"
    assert model.embed_scale == 1.0                    # no scaled embedding in Qwen


# ------------------------------------------------- training through a quantized LLM (CPU)

_OPTIONS = [[("no",), ("yes",)]] * 2


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return _saved_tiny(tmp_path_factory.mktemp("llm"))[2]


def _quantized_model(folder, bits):
    from ecgqa.models.fusion import EcgQaModel, ModelConfig

    cfg = ModelConfig(llm=LlmConfig(source="path", path=str(folder), quantization=bits),
                      encoder="resnet1d", encoder_kwargs={"widths": [8, 8, 8, 8],
                                                          "blocks": [1, 1, 1, 1], "out_dim": 8},
                      projector="mlp", n_ecg_tokens=2)
    torch.manual_seed(4)
    model = EcgQaModel.build(cfg)
    assert model.quantized
    return model


def _batch(model):
    from tests.models.test_fusion import _q, _Signals

    return model.make_batch([_q(0), _q(1, answer=("yes",), ecgs=(2,))], _Signals())


def _unpatched(monkeypatch):
    """load_llm as it would be without make_cpu_trainable: bitsandbytes' own forwards."""
    monkeypatch.setattr("ecgqa.models.quantized.make_cpu_trainable", lambda model: 0)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_cpu_layers_compute_bitsandbytes_float32_forward(tiny_folder, bits,
                                                                   monkeypatch):
    """The de-quantising forward is bitsandbytes' own training forward (float32, to the bit),
    and close to its inference kernels (bf16 repacking for 4-bit, int8 activations for
    8-bit); the weights stay quantized."""
    from ecgqa.models.quantized import is_cpu_trainable, make_cpu_trainable

    tok = build_tiny_tokenizer()
    ids = tok("does this ecg show atrial fibrillation?", return_tensors="pt").input_ids
    cfg = LlmConfig(source="path", path=str(tiny_folder), quantization=bits)
    q, _ = load_llm(cfg)
    assert is_cpu_trainable(q)
    with monkeypatch.context() as mp:
        _unpatched(mp)
        bnb_train, _ = load_llm(cfg)
        bnb_infer, _ = load_llm(cfg)
    assert not is_cpu_trainable(bnb_train)
    emb = q.get_input_embeddings()(ids)
    out = q(inputs_embeds=emb.requires_grad_()).logits
    bnb_train.train()                   # bnb's float32 path; dropout is 0 in the tiny LLaMA
    # the same de-quantised float32 weights through the same float32 operations: the
    # tolerance from the arithmetic is zero
    assert torch.equal(out, bnb_train(inputs_embeds=emb).logits)
    with torch.no_grad():
        assert torch.equal(q(ids).logits, out.detach())
        fast = bnb_infer(ids).logits
    corr = torch.corrcoef(torch.stack([out.detach().flatten(), fast.flatten()]))[0, 1]
    assert corr > 0.99
    out.sum().backward()                        # weights stay quantized after a backward
    dtypes = {m.weight.dtype for m in q.modules() if type(m).__module__.startswith("bitsandb")}
    assert dtypes == ({torch.uint8} if bits == "4bit" else {torch.int8})
    assert make_cpu_trainable(q) == 14                  # idempotent: 2 layers x 7 linears


def _directional_derivatives(model, batch, prefix, eps=1e-2, n=3):
    """(backprop, central difference) derivatives of the loss along ``n`` random unit
    directions in the space of all projector parameters."""
    params = list(model.projector.parameters())
    model.zero_grad()
    model.loss(batch, prefix=prefix).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(n):
        d = [torch.randn(p.shape, generator=gen) for p in params]
        norm = torch.cat([v.flatten() for v in d]).norm()
        d = [v / norm for v in d]
        fd = (_loss_moved(model, batch, prefix, d, eps)
              - _loss_moved(model, batch, prefix, d, -eps)) / (2 * eps)
        pairs.append((sum(float((g * v).sum()) for g, v in zip(grads, d)), fd))
    return pairs


@torch.no_grad()
def _loss_moved(model, batch, prefix, direction, step):
    params = list(model.projector.parameters())
    for p, v in zip(params, direction):
        p += step * v
    value = float(model.loss(batch, prefix=prefix))
    for p, v in zip(params, direction):
        p -= step * v
    return value


@pytest.mark.parametrize("use_prefix", [False, True])
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_projector_gradient_through_a_quantized_llm_matches_finite_differences(
        tiny_folder, bits, use_prefix):
    """Measured: without make_cpu_trainable the two disagree by 0.03-0.4 (and backprop is
    exactly zero with the prefix cache on 4-bit); with it they agree to about 1e-4."""
    model = _quantized_model(tiny_folder, bits)
    batch = _batch(model)
    probs = model.score_options(batch, _OPTIONS).probs   # answering first, as bnb would repack
    assert torch.isfinite(probs).all()
    prefix = model.prefix_cache(batch) if use_prefix else None
    for grad, fd in _directional_derivatives(model, batch, prefix):
        assert abs(grad - fd) < 2e-3 + 0.02 * abs(grad), (grad, fd)


def test_training_through_an_unpatched_quantized_llm_on_the_cpu_is_refused(tiny_folder,
                                                                           monkeypatch):
    from ecgqa.models.quantized import make_cpu_trainable

    with monkeypatch.context() as mp:
        _unpatched(mp)
        model = _quantized_model(tiny_folder, "4bit")
    batch = _batch(model)
    with torch.no_grad():
        assert torch.isfinite(model.loss(batch))           # evaluation loss is fine
    with pytest.raises(LlmError, match="wrong gradients on the CPU"):
        model.loss(batch)
    import bitsandbytes.functional as bnbf

    if bnbf.has_avx512bf16():          # the no-grad forward above repacked the weights
        with pytest.raises(LlmError, match="right after loading"):
            make_cpu_trainable(model.llm)
