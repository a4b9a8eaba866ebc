"""Tiny random LLaVA / Mllama folders (model + processor) and a tiny instruction set,
all built offline in-process."""

from __future__ import annotations

import torch

from ecgqa.models.llm import build_tiny_tokenizer


def tiny_tokenizer(image_token):
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [image_token, "<|python_tag|>"]})
    return tok


def tiny_llava(folder):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    tok = tiny_tokenizer("<image>")
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8)
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, projector_hidden_act="gelu")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                   vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(folder)
    return folder


def tiny_mllama(folder):
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )
    tok = tiny_tokenizer("<|image|>")
    text = MllamaTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                            cross_attention_layers=[1], pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = MllamaVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                num_global_layers=1, num_attention_heads=2, image_size=32,
                                patch_size=8, max_num_tiles=1, intermediate_layers_indices=[0],
                                vision_output_dim=32, supported_aspect_ratios=[[1, 1]])
    cfg = MllamaConfig(vision_config=vision, text_config=text,
                       image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(cfg)
    with torch.no_grad():                  # open the zero-initialised cross-attention gates
        for name, p in model.named_parameters():
            if "cross_attn_attn_gate" in name or "cross_attn_mlp_gate" in name:
                p.fill_(1.0)
    model.save_pretrained(folder)
    ip = MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=1)
    MllamaProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_instruct(root, n: int = 16, size=(48, 96)):
    """A LLaVA-format dataset: dark images answer 'yes', light ones 'no' (learnable)."""
    import json

    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        dark = i % 2 == 0
        im = Image.new("RGB", size[::-1], (20, 20, 20) if dark else (235, 235, 235))
        ImageDraw.Draw(im).line([(0, i % size[0]), (size[1], (3 * i) % size[0])],
                                fill=(200, 30, 30), width=2)
        im.save(root / "images" / f"{i:03d}.png")
        entries.append({"id": f"s{i}", "image": f"images/{i:03d}.png", "conversations": [
            {"from": "human", "value": "<image>\nDoes this ECG show sinus rhythm?"},
            {"from": "gpt", "value": "yes" if dark else "no"}]})
    for split, part in (("train", entries[: n - 4]), ("valid", entries[n - 4:]),
                        ("test", entries[n - 4:])):
        (root / f"{split}.json").write_text(json.dumps(part))
    return root
