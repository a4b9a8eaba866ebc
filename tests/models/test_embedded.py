"""The embedded default LLM (Gemma 3 270M from the PyPI package), really loaded.

The first run on a machine converts the GGUF once (about a minute on 2 cores); later runs
read the cached safetensors copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecgqa.config import load_config
from ecgqa.models.fusion import EcgQaModel, ModelConfig
from ecgqa.models.llm import embedded_cache_dir
from ecgqa.qa.ecgqa import QaSample
from ecgqa.synth.ecg import sample_facts, synthesize

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "model" / "default.yaml"


class _Signals:
    def get(self, ecg_id):
        rng = np.random.default_rng(ecg_id)
        return synthesize(sample_facts(rng), rng), np.ones(12, dtype=bool)


def test_embedded_gemma_with_the_shipped_encoder_answers():
    from transformers import AutoTokenizer

    model = EcgQaModel.build(load_config(ModelConfig, DEFAULT))
    llm = model.llm
    assert type(llm).__name__ == "Gemma3ForCausalLM"
    assert llm.config.hidden_size == 640 and llm.config.vocab_size == 262144
    assert abs(model.embed_scale - 640 ** 0.5) < 0.1           # Gemma scales (bf16-rounded)
    assert not any(p.requires_grad for p in llm.parameters())
    # the fast tokenizer path gives AutoTokenizer's ids
    ref = AutoTokenizer.from_pretrained(embedded_cache_dir(model.cfg.llm))
    for text in ("Question: What kind of noises does this ECG show in lead V2?\nECG:",
                 " bigeminal pattern (unknown origin, supraventricular, or ventricular)"):
        assert (model.tokenizer(text, add_special_tokens=False)["input_ids"]
                == ref(text, add_special_tokens=False)["input_ids"])
    q = QaSample(sample_id=0, template_id=101, question_id=0, question_type="single-verify",
                 attribute_type="scp_code", question="Does this ECG show atrial fibrillation?",
                 answer=("no",), ecg_ids=(1,), attribute=("atrial fibrillation",),
                 split="test")
    batch = model.make_batch([q], _Signals(), with_answers=False)
    scores = model.score_options(batch, [[("yes",), ("no",), ("not sure",)]])
    assert torch.isfinite(scores.logp_sum).all() and abs(float(scores.probs.sum()) - 1) < 1e-4
    assert isinstance(model.generate(batch, max_new_tokens=4), str)
