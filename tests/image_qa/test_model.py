"""ImageQaModel on the tiny config: LoRA placement, what trains, answer-only loss, option
scores, save/load; the same for tiny random LLaVA and Mllama folders (HF multimodal path)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from ecgqa.config import ConfigError, load_config
from ecgqa.image_qa.loading import build_image_qa, load_image_qa
from ecgqa.image_qa.lora import lora_module_names
from ecgqa.image_qa.model import ImageQaModel
from ecgqa.image_qa.settings import NEVER_ADAPTED, validate_model
from ecgqa.image_qa.train import TrainLoraConfig
from tests.conftest import ROOT
from tests.image_qa.tiny_models import tiny_llava, tiny_mllama
from tests.numerics import assert_fp32_close

TINY = ROOT / "configs" / "lora" / "tiny.yaml"
QUESTION = "<image>\nDoes this ECG show sinus rhythm?"


def tiny_model_config(**changes):
    cfg = load_config(TrainLoraConfig, TINY).model
    return dataclasses.replace(cfg, **changes)


def images(n=2):
    return [Image.new("RGB", (96, 48), (30 + 100 * i, 20, 20)) for i in range(n)]


def one_step(model, lr=0.05):
    """One AdamW step on a fixed batch; returns the parameters before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr, weight_decay=0.0)
    batch = model.make_batch(images(), [[(QUESTION, "yes")], [(QUESTION, "no")]])
    model.loss(batch).backward()
    opt.step()
    return before


def changed(model, before) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ImageQaModel.build(tiny_model_config())


def test_lora_sits_on_attention_and_mlp_projections_only(tiny):
    names = lora_module_names(tiny.llm)
    layers = tiny.cfg.llm.tiny_layers
    assert len(names) == 7 * layers
    assert {n.rsplit(".", 1)[1] for n in names} == set(tiny.cfg.lora.target_modules)
    assert not [n for n, _ in tiny.llm.named_modules()
                if any(k in n for k in NEVER_ADAPTED) and "lora" in n]
    emb = tiny.causal_lm.get_input_embeddings()
    head = tiny.causal_lm.get_output_embeddings()
    assert type(emb) is torch.nn.Embedding and type(head) is torch.nn.Linear
    assert not any(p.requires_grad for p in [*emb.parameters(), *head.parameters()])


def test_lm_head_or_embed_tokens_as_a_target_is_refused():
    with pytest.raises(ConfigError, match="lm_head and embed_tokens"):
        validate_model(tiny_model_config(lora=dataclasses.replace(
            tiny_model_config().lora, target_modules=["q_proj", "lm_head"])))


@pytest.mark.parametrize("change,match", [
    ({"image_encoder": "vit"}, "image_encoder 'vit'"), ({"projector": "x"}, "projector 'x'"),
    ({"image_size": [256]}, "height, width"), ({"hf_multimodal": "/nowhere"}, "no config.json"),
    ({"score_normalise": "max"}, "mean or sum"), ({"n_image_tokens": 0}, ">= 1")])
def test_bad_model_values_are_named_before_loading(change, match):
    with pytest.raises(ConfigError, match=match):
        validate_model(tiny_model_config(**change))


@pytest.mark.parametrize("train_vision", [False, True])
def test_a_step_changes_only_lora_weights_and_vision_when_asked(train_vision):
    torch.manual_seed(1)
    model = ImageQaModel.build(tiny_model_config(train_vision=train_vision))
    model.train()
    before = one_step(model)
    diff = changed(model, before)
    lora = {n for n in diff if "lora_" in n}
    vision = {n for n in diff if n.startswith(("encoder.", "projector."))}
    assert lora and all(".lora_B." in n for n in lora)   # B starts at 0: A's gradient is 0
    assert diff == lora | vision
    assert bool(vision) == train_vision
    if train_vision:
        assert any(n.startswith("encoder.") for n in vision)


def test_loss_is_on_answer_tokens_only(tiny):
    batch = tiny.make_batch(images(), [[(QUESTION, "yes")],
                                       [(QUESTION, "sinus rhythm"), ("And now?", "no")]])
    emb, att, tgt = tiny.splice(batch, tiny.image_tokens(batch.pixels))
    for b, conv in enumerate(batch.conversations):
        answers = [i for p, t in zip(conv.pieces, conv.targets) if t for i in p]
        assert tgt[b][tgt[b] != -100].tolist() == answers      # answers + EOS, in order
    eos = tiny.tokenizer.eos_token_id
    assert answers.count(eos) == 2
    assert att.sum(1).tolist() == [sum(map(len, c.pieces)) + tiny.cfg.n_image_tokens
                                   for c in batch.conversations]


def test_option_scores_are_summed_answer_log_probabilities(tiny):
    tiny.eval()
    logp_sum, logp_mean = tiny.option_logprobs(images(1), [QUESTION], [["yes", "no", "none"]])
    for k, option in enumerate(["yes", "no", "none"]):
        batch = tiny.make_batch(images(1), [[(QUESTION, option)]])
        n = sum(len(p) for p, t in zip(batch.conversations[0].pieces,
                                       batch.conversations[0].targets) if t)
        with torch.no_grad():
            total = -tiny.loss(batch) * n
        # -loss * n undoes the loss's mean: a few roundings of |total| beyond the two
        # paths' differently blocked sums (each a few ulp of |total|); 64 u of |total|
        assert_fp32_close(logp_sum[0, k], total, 64, max(1.0, float(total.abs())))
        assert_fp32_close(logp_mean[0, k], total / n, 64, max(1.0, float(total.abs())))
    probs = tiny.score_options(images(2), [QUESTION] * 2, [["yes", "no"], ["yes", "no", "x"]])
    assert probs.shape == (2, 3) and probs[0, 2] == 0
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_save_and_load_give_identical_outputs(tmp_path):
    torch.manual_seed(2)
    model = ImageQaModel.build(tiny_model_config())
    model.train()
    one_step(model)
    folder = model.save_pretrained(tmp_path / "adapter")
    # compare like with like: torch's MultiheadAttention takes its fused inference kernel
    # only when no parameter requires grad (last-bit differences otherwise)
    model.eval().requires_grad_(False)
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "vision.safetensors",
            "config.yaml"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    conf = json.loads((folder / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == model.cfg.lora.rank

    loaded = load_image_qa(folder)
    assert not loaded.trainable_parameters()                # loaded for inference
    batch = model.make_batch(images(), [[(QUESTION, "yes")], [(QUESTION, "no")]])
    with torch.no_grad():
        a = model.splice(batch, model.image_tokens(batch.pixels))
        b = loaded.splice(batch, loaded.image_tokens(batch.pixels))
        assert torch.equal(a[0], b[0])
        assert torch.equal(model.token_logprobs(*a), loaded.token_logprobs(*b))
    opts = [["yes", "no"], ["no", "not sure"]]
    assert torch.equal(model.score_options(images(), [QUESTION] * 2, opts),
                       loaded.score_options(images(), [QUESTION] * 2, opts))
    assert model.generate(images(1)[0], QUESTION) == loaded.generate(images(1)[0], QUESTION)


def test_generate_streams_text(tiny):
    from transformers import TextStreamer

    class Collect(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            self.seen = getattr(self, "seen", "") + text

    streamer = Collect(tiny.tokenizer, skip_prompt=False, skip_special_tokens=True)
    out = tiny.generate(images(1)[0], QUESTION, streamer=streamer, max_new_tokens=3)
    assert isinstance(out, str) and streamer.seen.strip() == out


@pytest.fixture(scope="module")
def qlora(tmp_path_factory):
    """The tiny model with its LLM loaded 4-bit (bitsandbytes NF4) from a local folder."""
    from ecgqa.models.llm import load_llm

    folder = tmp_path_factory.mktemp("qlora")
    cfg = tiny_model_config()
    llm, tok = load_llm(cfg.llm)
    llm.save_pretrained(folder / "llm")
    tok.save_pretrained(folder / "llm")
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(
        cfg.llm, source="path", path=str(folder / "llm"), quantization="4bit"))
    torch.manual_seed(0)
    model = ImageQaModel.build(cfg)
    assert any("bitsandbytes" in type(m).__module__ for m in model.llm.modules())
    return model


def test_qlora_gradients_match_finite_differences(qlora):
    """The LoRA weights' gradient through the frozen 4-bit base (on the CPU: de-quantised
    per call) equals the loss's finite-difference slope along a random direction."""
    model = qlora
    model.eval()                                     # no dropout: one deterministic function
    batch = model.make_batch(images(), [[(QUESTION, "yes")], [(QUESTION, "no")]])
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora
    model.zero_grad(set_to_none=True)
    model.loss(batch).backward()
    g = torch.cat([p.grad.reshape(-1) for p in lora]).double()
    assert g.abs().sum() > 0
    torch.manual_seed(1)
    d = torch.randn_like(g)
    d /= d.norm()
    eps = 1e-2

    def loss_at(t: float) -> float:
        with torch.no_grad():
            i = 0
            for p in lora:
                p += t * d[i: i + p.numel()].view_as(p).to(p.dtype)
                i += p.numel()
            value = float(model.loss(batch))
            i = 0
            for p in lora:
                p -= t * d[i: i + p.numel()].view_as(p).to(p.dtype)
                i += p.numel()
        return value

    slope = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(float(g @ d) - slope) <= 2e-2 * abs(slope) + 1e-4, (float(g @ d), slope)
    model.zero_grad(set_to_none=True)


def test_a_qlora_step_changes_only_lora_and_reloads(qlora, tmp_path):
    model = qlora
    model.train()
    before = one_step(model, lr=0.01)
    diff = changed(model, before)
    assert any("lora_" in n for n in diff)
    assert all("lora_" in n or n.startswith(("encoder.", "projector.")) for n in diff)
    folder = model.save_pretrained(tmp_path / "q")
    loaded = load_image_qa(folder)
    assert loaded.cfg.llm.quantization == "4bit"
    opts = [["yes", "no"]]
    model.eval()
    # probabilities (<= 1) through the same ops; the reloaded 4-bit base differs from the
    # trained one by float32 rounding at most (measured 1 ulp of 1.0): 64 u of 1
    assert_fp32_close(loaded.score_options(images(1), [QUESTION], opts),
                      model.score_options(images(1), [QUESTION], opts), 64, 1.0)


# --------------------------------------------------------------------------- HF multimodal


@pytest.fixture(scope="module", params=["llava", "mllama"])
def hf_folder(request, tmp_path_factory):
    build = {"llava": tiny_llava, "mllama": tiny_mllama}[request.param]
    return build(tmp_path_factory.mktemp(request.param) / "model")


def test_hf_multimodal_lora_on_the_language_model_only(hf_folder, tmp_path):
    torch.manual_seed(3)
    cfg = tiny_model_config(hf_multimodal=str(hf_folder), train_vision=False)
    model = build_image_qa(cfg)
    names = lora_module_names(model.llm)
    assert names and all(".language_model." in n for n in names)
    assert not [n for n in names if "vision" in n or any(k in n for k in NEVER_ADAPTED)]
    model.train()
    before = one_step(model)
    diff = changed(model, before)
    assert diff and all(".lora_B." in n for n in diff)
    model.eval()
    folder = model.save_pretrained(tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").is_file()
    loaded = load_image_qa(folder)
    opts = [["yes", "no"], ["no", "not sure"]]
    assert torch.allclose(model.score_options(images(), [QUESTION] * 2, opts),
                          loaded.score_options(images(), [QUESTION] * 2, opts))
    assert model.generate(images(1)[0], QUESTION, max_new_tokens=3) == \
        loaded.generate(images(1)[0], QUESTION, max_new_tokens=3)


def test_hf_multimodal_train_vision_trains_the_projector_in_the_adapter(hf_folder):
    torch.manual_seed(4)
    model = build_image_qa(tiny_model_config(hf_multimodal=str(hf_folder)))
    model.train()
    diff = changed(model, one_step(model))
    assert {n for n in diff if "lora_" not in n} and all(
        "lora_" in n or "multi_modal_projector.modules_to_save" in n for n in diff)


def test_a_local_llava_folder_loads_4bit_and_trains_lora_on_the_cpu(tmp_path):
    from ecgqa.models.quantized import is_cpu_trainable

    cfg = tiny_model_config(hf_multimodal=str(tiny_llava(tmp_path / "llava")),
                            train_vision=False)
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, quantization="4bit"))
    model = build_image_qa(cfg)
    assert any("bitsandbytes" in type(m).__module__ for m in model.llm.modules())
    assert is_cpu_trainable(model.llm)
    model.train()
    before = one_step(model, lr=0.01)
    diff = changed(model, before)
    assert diff and all(".lora_" in n for n in diff)
