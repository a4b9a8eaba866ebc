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


def test_a_4bit_llm_answers_on_the_cpu_but_refuses_to_train_there(tmp_path):
    """bitsandbytes' CPU backward through 4/8-bit layers disagrees with finite differences
    (measured), so training there must fail loudly instead of learning from wrong grads."""
    from ecgqa.models.fusion import EcgQaModel, ModelConfig
    from tests.models.test_fusion import _q, _Signals

    _, _, folder = _saved_tiny(tmp_path)
    cfg = ModelConfig(llm=LlmConfig(source="path", path=str(folder), quantization="4bit"),
                      encoder="resnet1d", encoder_kwargs={"widths": [8, 8, 8, 8],
                                                          "blocks": [1, 1, 1, 1], "out_dim": 8},
                      projector="mlp", n_ecg_tokens=2)
    model = EcgQaModel.build(cfg)
    assert model.quantized
    batch = model.make_batch([_q(0), _q(1, ecgs=(2,))], _Signals())
    probs = model.score_options(batch, [[("no",), ("yes",)]] * 2).probs
    assert torch.isfinite(probs).all()
    with torch.no_grad():
        assert torch.isfinite(model.loss(batch))           # evaluation loss is fine
    with pytest.raises(LlmError, match="wrong gradients on the CPU"):
        model.loss(batch)
