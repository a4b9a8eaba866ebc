"""The embedded default LLM (Gemma 3 270M from the PyPI package), really loaded.

The first run on a machine converts the GGUF once (about a minute on 2 cores); later runs
read the cached safetensors copy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ecgqa.config import load_config
from ecgqa.models.fusion import Batch, EcgQaModel, ModelConfig
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
    _assert_greedy(model, batch, max_new_tokens=4)


class _Collect:
    """A streamer that keeps the generated token ids."""

    def __init__(self):
        self.ids: list[int] = []

    def put(self, value):
        self.ids += value.flatten().tolist()

    def end(self):
        pass


def _assert_greedy(model, batch, max_new_tokens: int):
    """generate() returns the decoded tokens it chose, at most ``max_new_tokens`` of them, the
    first being the most likely next token after the prompt; one token more or less does not
    change the ones before (greedy, not sampled)."""
    streamer = _Collect()
    text = model.generate(batch, max_new_tokens=max_new_tokens, streamer=streamer)
    ids, tok = streamer.ids, model.tokenizer
    assert 1 <= len(ids) <= max_new_tokens
    assert text == tok.decode(ids, skip_special_tokens=True).strip()
    assert len(ids) == max_new_tokens or ids[-1] == tok.eos_token_id      # why it stopped
    short = _Collect()
    model.generate(batch, max_new_tokens=1, streamer=short)
    assert short.ids == ids[:1]
    one = Batch([batch.encoded[0]], batch.feats, [batch.ecg_index[0]])
    with torch.no_grad():
        emb, att, _ = model.splice(one, model.ecg_tokens(batch.feats), answers=[[]])
        logits = model.llm(inputs_embeds=emb, attention_mask=att,
                           logits_to_keep=1).logits[0, -1].float()            # (vocab,)
    # generate()'s first step runs the same layers on the same inputs; the two can differ
    # only in the rounding of the logits to the LLM's dtype (bfloat16 here: 8 significant
    # bits), i.e. by at most one unit in the last place of the largest logit.
    top = float(logits.max())
    ulp = torch.finfo(model.llm.dtype).eps * 2.0 ** math.floor(math.log2(abs(top)))
    assert float(logits[ids[0]]) >= top - ulp, (float(logits[ids[0]]), top)
