"""The pinned install path gives a working stack (the failures it guards against were real:
PyPI's torchvision beside a CPU torch breaks `torchvision::nms` and then transformers)."""

from __future__ import annotations

import torch


def test_torchvision_ops_and_learn2learn_import():
    import learn2learn
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.01], [2.0, 2.0, 3.0, 3.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert learn2learn.__version__ == "0.2.0"
    assert hasattr(learn2learn.algorithms, "MAML") and hasattr(learn2learn.algorithms, "MetaSGD")


def test_a_tiny_llama_from_a_config_runs_forward_and_backward():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 128, (2, 9))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert out.logits.shape == (2, 9, 128) and torch.isfinite(out.loss)
    assert model.model.embed_tokens.weight.grad is not None


def test_design_card_packages_import():
    import accelerate  # noqa: F401
    import bitsandbytes  # noqa: F401
    import datasets  # noqa: F401
    import gguf  # noqa: F401
    import peft  # noqa: F401
    import sentencepiece  # noqa: F401
    import wandb  # noqa: F401
