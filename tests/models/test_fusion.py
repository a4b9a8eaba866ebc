"""The ECG-language model on tiny configs: shapes, maths of option scores, frozen parts,
persistence, both prompt layouts and both tiny LLM families."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ecgqa.models.fusion import Batch, EcgQaModel, ModelConfig
from ecgqa.models.llm import LlmConfig
from ecgqa.qa.ecgqa import QaSample
from ecgqa.synth.ecg import sample_facts, synthesize
from tests.numerics import assert_fp32_close

TINY_ENCODER = {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "out_dim": 16}


class _Signals:
    """Synthetic ECGs by id (a stand-in for SignalCache with real synthetic signals)."""

    def __init__(self):
        self.calls = 0

    def get(self, ecg_id):
        self.calls += 1
        rng = np.random.default_rng(ecg_id)
        return synthesize(sample_facts(rng), rng), np.ones(12, dtype=bool)


def _cfg(llm="tiny-llama", projector="attention", layout="question_first", **kw):
    return ModelConfig(llm=LlmConfig(source=llm), encoder="resnet1d",
                       encoder_kwargs=TINY_ENCODER, projector=projector, n_ecg_tokens=3,
                       layout=layout, projector_kwargs={"dim": 16, "heads": 2}
                       if projector in ("attention", "qformer") else {}, **kw)


def _q(i, question="does this ecg show atrial fibrillation?", answer=("no",), ecgs=(1,)):
    return QaSample(sample_id=i, template_id=101, question_id=0, question_type="single-verify",
                    attribute_type="scp_code", question=question, answer=answer, ecg_ids=ecgs,
                    attribute=("atrial fibrillation",), split="train")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EcgQaModel.build(_cfg())


def test_shapes_and_only_the_projector_trains(model):
    signals = _Signals()
    batch = model.make_batch([_q(0), _q(1, ecgs=(2,)), _q(2, answer=("yes",), ecgs=(1,))],
                             signals)
    assert batch.feats.shape[0] == 2 and signals.calls == 2           # ECG 1 encoded once
    enc_out = model.encoder.out_dim
    assert batch.feats.shape[2] == enc_out
    tokens = model.ecg_tokens(batch.feats)
    assert tokens.shape == (2, 3, model.llm.config.hidden_size)
    emb, att, tgt = model.splice(batch, tokens)
    assert emb.shape[:2] == att.shape == tgt.shape
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is None for p in model.llm.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.trainable_parameters() and all(
        any(p is q for q in model.projector.parameters()) for p in model.trainable_parameters())
    model.train()
    assert not model.llm.training and not model.encoder.training and model.projector.training
    model.zero_grad()


def test_question_comes_before_the_answer_in_both_layouts(model):
    for layout in ("question_first", "ecg_first"):
        m = EcgQaModel.build(_cfg(layout=layout))
        batch = m.make_batch([_q(0)], _Signals())
        pieces = [m.tokenizer.decode(p) for p in batch.encoded[0].pieces]
        text = " ".join(pieces)
        assert "atrial fibrillation" in text and text.rstrip().endswith("answer :")
        emb, att, tgt = m.splice(batch, m.ecg_tokens(batch.feats))
        first_target = int((tgt[0] != -100).nonzero()[0])
        question_end = sum(len(p) for p in batch.encoded[0].pieces) + 3 - 1
        assert first_target == question_end          # answers are predicted after the prompt


def test_option_scores_equal_summed_token_log_probabilities(model):
    options = [[("no",), ("yes",), ("not sure",)], [("yes",), ("no",)]]
    batch = model.make_batch([_q(0), _q(1, ecgs=(2,))], _Signals(), with_answers=False)
    scores = model.score_options(batch, options)
    assert scores.logp_sum.shape == (2, 3) and torch.isinf(scores.logp_sum[1, 2])
    np.testing.assert_allclose(scores.probs.sum(1).numpy(), 1.0, rtol=1e-5)
    for b, opts in enumerate(options):
        for k, opt in enumerate(opts):
            # full forward, full logits, no cache: the reference computation
            ans = [model.tokenizer(" " + ", ".join(opt), add_special_tokens=False)["input_ids"]
                   + [model.tokenizer.eos_token_id]]
            one = type(batch)([batch.encoded[b]], batch.feats, [batch.ecg_index[b]])
            emb, att, tgt = model.splice(one, model.ecg_tokens(batch.feats), answers=ans)
            with torch.no_grad():
                logits = model.llm(inputs_embeds=emb, attention_mask=att).logits
            logp = torch.log_softmax(logits.float(), -1)[0]
            where = (tgt[0] != -100).nonzero().squeeze(1)
            ref = logp[where, tgt[0, where]].sum()
            # the cached scorer blocks the attention and LM-head sums differently: each of
            # the <= 4 answer tokens' log-probs carries a few roundings of the largest
            # logit-scale value (|sum| <= ~40 here; measured <= 2 ulp of it under the avx512,
            # avx2 and default kernels and 1 thread); 64 u of |sum| bounds it
            assert_fp32_close(scores.logp_sum[b, k], ref, 64, max(1.0, float(ref.abs())))
            assert_fp32_close(scores.logp_mean[b, k], ref / len(ans[0]), 64,
                              max(1.0, float(ref.abs())))


def test_generation_is_greedy_decoding_that_stops(model):
    """generate() equals greedy decoding by full forward passes (no KV cache), stops at
    max_new_tokens or EOS, and decodes exactly the chosen tokens."""
    batch = model.make_batch([_q(0)], _Signals(), with_answers=False)
    one = Batch([batch.encoded[0]], batch.feats, [batch.ecg_index[0]])
    emb, att, _ = model.splice(one, model.ecg_tokens(batch.feats), answers=[[]])
    embed = model.llm.get_input_embeddings()
    ids = []
    with torch.no_grad():
        for _ in range(5):
            x = torch.cat([emb, embed(torch.tensor([ids], dtype=torch.long))], 1) if ids else emb
            mask = torch.ones(x.shape[:2], dtype=att.dtype)
            nxt = int(model.llm(inputs_embeds=x, attention_mask=mask).logits[0, -1].argmax())
            if nxt == model.tokenizer.eos_token_id:
                break
            ids.append(nxt)
    assert len(ids) >= 2, ids          # a random tiny LLM: EOS this early is improbable
    want = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert model.generate(batch, max_new_tokens=5) == want
    assert model.generate(batch, max_new_tokens=1) == \
        model.tokenizer.decode(ids[:1], skip_special_tokens=True).strip()


def test_training_the_projector_fits_a_tiny_task():
    torch.manual_seed(0)
    m = EcgQaModel.build(_cfg(projector="mlp"))
    samples = [_q(0, answer=("yes",), ecgs=(1,)), _q(1, answer=("no",), ecgs=(2,))]
    batch = m.make_batch(samples, _Signals())
    opt = torch.optim.Adam(m.trainable_parameters(), lr=3e-2)
    first = float(m.loss(batch).detach())
    for _ in range(60):
        opt.zero_grad()
        loss = m.loss(batch)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    probs = m.score_options(m.make_batch(samples, _Signals(), with_answers=False),
                            [[("no",), ("yes",)]] * 2).probs
    assert probs[0].argmax() == 1 and probs[1].argmax() == 0     # ECG-dependent answers


@pytest.mark.parametrize("llm,projector", [("tiny-gemma", "qformer"), ("tiny-llama", "linear")])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, llm, projector):
    torch.manual_seed(1)
    m = EcgQaModel.build(_cfg(llm=llm, projector=projector))
    for p in m.projector.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    samples = [_q(0), _q(1, question="what kind of noises does this ecg show in lead v1?",
                         answer=("none",), ecgs=(3,))]
    before = m.score_options(m.make_batch(samples, _Signals(), False),
                             [[("no",), ("yes",)], [("none",), ("static noise",)]]).logp_sum
    out = m.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "encoder",
                                                     "projector.safetensors"]
    again = EcgQaModel.from_pretrained(out)
    after = again.score_options(again.make_batch(samples, _Signals(), False),
                                [[("no",), ("yes",)], [("none",), ("static noise",)]]).logp_sum
    torch.testing.assert_close(before, after)
    if llm == "tiny-gemma":
        assert again.embed_scale == pytest.approx(float(again.llm.config.hidden_size) ** 0.5)


def test_comparison_questions_take_two_ecgs(model):
    q = QaSample(sample_id=0, template_id=70, question_id=0,
                 question_type="comparison_irrelevant-query", attribute_type="numeric_feature",
                 question="what numeric features of the second ecg are still abnormal?",
                 answer=("none",), ecg_ids=(1, 2), attribute=None, split="train")
    batch = model.make_batch([q], _Signals())
    assert batch.encoded[0].n_ecgs == 2 and batch.ecg_index[0] == (0, 1)
    assert torch.isfinite(model.loss(batch))


@pytest.mark.parametrize("llm", ["tiny-llama", "tiny-gemma"])
def test_answers_vocabulary_loss_is_the_softmax_over_the_answers_tokens(llm):
    """The "answers" loss equals a log-softmax over the full head's logits restricted to
    the batch's answer tokens (float32; each logit is the same 64-term dot product, only
    perhaps blocked otherwise, a few u, and the log-softmax over a few tokens adds a few
    more: 64 u of the loss), is below the
    full-vocabulary loss (a smaller normaliser), and its gradient reaches the projector."""
    torch.manual_seed(3)
    m = EcgQaModel.build(_cfg(llm=llm))
    batch = m.make_batch([_q(0), _q(1, answer=("yes",), ecgs=(2,)),
                          _q(2, question="what is the heart axis of this ecg?",
                             answer=("normal heart axis",), ecgs=(3,))], _Signals())
    emb, att, tgt = m.splice(batch, m.ecg_tokens(batch.feats))
    with torch.no_grad():
        hidden = m._body()(inputs_embeds=emb, attention_mask=att).last_hidden_state
        where = tgt != -100
        logits = m._logits(hidden[where])                                 # (N, V)
        ids = torch.unique(tgt[where])
        assert 2 < len(ids) < logits.shape[1]
        local = torch.searchsorted(ids, tgt[where])
        ref = -torch.log_softmax(logits[:, ids], -1).gather(1, local[:, None]).mean()
    got = m.loss(batch, vocab="answers")
    assert_fp32_close(got.detach(), ref, 64)
    assert float(got.detach()) < float(m.loss(batch).detach())
    got.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in m.projector.parameters())
    assert any(float(p.grad.abs().max()) > 0 for p in m.projector.parameters())
    with pytest.raises(ValueError, match="vocab 'none'"):
        m.loss(batch, vocab="none")


@pytest.mark.parametrize("llm", ["tiny-llama", "tiny-gemma"])
def test_top_vocabulary_loss_is_the_softmax_over_answers_and_likely_tokens(llm, monkeypatch):
    """The "top" loss is a log-softmax over the answer tokens and each answer position's
    TOP_TOKENS highest logits (ranked here from the float32 logits the head gives; the
    same products as the loss's, 64 u as in the "answers" test); it lies between the
    "answers" loss and the full one (its normaliser covers more tokens than the one and
    fewer than the other), and with every token kept it is the full loss."""
    import ecgqa.models.logprobs as logprobs

    torch.manual_seed(4)
    m = EcgQaModel.build(_cfg(llm=llm))
    batch = m.make_batch([_q(0), _q(1, answer=("yes",), ecgs=(2,)),
                          _q(2, question="what is the heart axis of this ecg?",
                             answer=("normal heart axis",), ecgs=(3,))], _Signals())
    monkeypatch.setattr(logprobs, "TOP_TOKENS", 3)
    emb, att, tgt = m.splice(batch, m.ecg_tokens(batch.feats))
    with torch.no_grad():
        hidden = m._body()(inputs_embeds=emb, attention_mask=att).last_hidden_state
        where = tgt != -100
        logits = m._logits(hidden[where])                                 # (N, V)
        ids = torch.unique(torch.cat([tgt[where], logits.topk(3, -1).indices.flatten()]))
        assert len(torch.unique(tgt[where])) < len(ids) < logits.shape[1]
        local = torch.searchsorted(ids, tgt[where])
        ref = -torch.log_softmax(logits[:, ids], -1).gather(1, local[:, None]).mean()
    got = m.loss(batch, vocab="top")
    assert_fp32_close(got.detach(), ref, 64)
    full = m.loss(batch).detach()
    assert float(m.loss(batch, vocab="answers").detach()) < float(got.detach()) < float(full)
    got.backward()
    assert any(float(p.grad.abs().max()) > 0 for p in m.projector.parameters())
    monkeypatch.setattr(logprobs, "TOP_TOKENS", logits.shape[1])
    assert_fp32_close(m.loss(batch, vocab="top").detach(), full, 64)


@pytest.mark.parametrize("llm, measured", [("tiny-llama", False), ("tiny-gemma", False),
                                           ("tiny-llama", True), ("tiny-gemma", True)])
def test_reused_prefix_cache_gives_the_same_loss_and_gradients(llm, measured):
    """With measured values, the rows of one question share its cached head and each adds
    its own measured line on top (holes where a head or line is shorter are masked)."""
    torch.manual_seed(2)
    m = EcgQaModel.build(_cfg(llm=llm, measurements=measured))
    batch = m.make_batch([_q(0), _q(1, question="what is the heart axis of this ecg?",
                                    answer=("normal heart axis",), ecgs=(2,)),
                          _q(2, answer=("yes",), ecgs=(3,)), _q(3, ecgs=(4,))], _Signals())
    if measured:
        enc = batch.encoded
        assert all(0 < e.shared < len(e.pieces[0]) for e in enc)
        assert enc[0].pieces[0][: enc[0].shared] == enc[2].pieces[0][: enc[2].shared]
        assert len({e.pieces[0][e.shared:] for e in enc}) == 4       # each ECG its own line
        lengths = {len(e.pieces[0]) - e.shared for e in enc} | {e.shared for e in enc}
        assert len(lengths) > 2                                      # holes to mask
    ref = m.loss(batch)
    ref.backward()
    ref_grads = [p.grad.clone() for p in m.projector.parameters()]
    prefix = m.prefix_cache(batch)
    for _ in range(2):                           # reused: the cache must stay intact
        m.zero_grad()
        cached = m.loss(batch, prefix=prefix)
        cached.backward()
        # the prefix's keys and values are the same float32 numbers; only the blocking of
        # the attention sums over the prompt differs. Loss: a mean of log-probs, 64 u of its
        # magnitude. Gradients: the backward adds over every prompt position and layer, so
        # up to 1024 roundings of the largest gradient (measured <= 65 u under the avx512,
        # avx2 and default kernels and 1 thread)
        assert_fp32_close(cached, ref, 64)
        for p, g in zip(m.projector.parameters(), ref_grads):
            assert_fp32_close(p.grad, g, 1024, max(float(gg.abs().max()) for gg in ref_grads))


def test_streamed_generation_equals_the_returned_answer(model):
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.ids = []

        def put(self, value):
            self.ids += value.flatten().tolist()

        def end(self):
            pass

    batch = model.make_batch([_q(0)], _Signals(), with_answers=False)
    streamer = Collect()
    text = model.generate(batch, max_new_tokens=6, streamer=streamer)
    assert model.tokenizer.decode(streamer.ids, skip_special_tokens=True).strip() == text
    assert 1 <= len(streamer.ids) <= 6


def test_the_chat_template_wraps_the_prompt_where_the_tokenizer_has_one(model):
    from ecgqa.qa.collate import encode_prompt

    tok = model.tokenizer
    plain = encode_prompt(model.template, tok, "what is the heart axis of this ecg?", 1)
    assert plain.pieces[0][0] == tok.bos_token_id
    tok.chat_template = ("{% for m in messages %}<bos>user : {{ m['content'] }} "
                         "{% endfor %}{% if add_generation_prompt %}model :{% endif %}")
    try:
        chat = encode_prompt(model.template, tok, "what is the heart axis of this ecg?", 1)
    finally:
        tok.chat_template = None
    first, last = tok.decode(chat.pieces[0]), tok.decode(chat.pieces[1])
    assert first.startswith("<bos> user :") and "heart axis" in first
    assert last.rstrip().endswith("answer : model :")       # the turn ends after the prompt
    assert chat.pieces[0].count(tok.bos_token_id) == 1


def test_bfloat16_llm_with_a_float32_projector():
    torch.manual_seed(3)
    cfg = _cfg()
    cfg.llm.dtype = "bfloat16"
    m = EcgQaModel.build(cfg)
    assert m.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in m.trainable_parameters())
    batch = m.make_batch([_q(0), _q(1, ecgs=(2,))], _Signals())
    loss = m.loss(batch, prefix=m.prefix_cache(batch))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all()
                                        for p in m.trainable_parameters())
    probs = m.score_options(m.make_batch([_q(0)], _Signals(), False), [[("no",), ("yes",)]]).probs
    assert probs.dtype == torch.float32 and abs(float(probs.sum()) - 1) < 1e-5


def test_real_records_of_any_rate_reach_the_model_through_the_encoder_spec(model, tmp_path):
    from ecgqa.qa.resolve import RecordsIndex
    from tests.conftest import write_real_index

    signals = model.signal_cache(RecordsIndex(write_real_index(tmp_path / "index.csv")))
    q1 = _q(0, ecgs=(1,))                       # PTB-XL 00001_lr: 100 Hz, resampled to 500 Hz
    q2 = _q(1, ecgs=(6000,))                    # Challenge 2021 copy, 500 Hz .mat
    batch = model.make_batch([q1, q2], signals)
    assert batch.feats.shape[0] == 2 and torch.isfinite(batch.feats).all()
    assert torch.isfinite(model.loss(batch))
    synthetic = model.make_batch([q1], _Signals()).feats[0]       # same id, other source
    assert not torch.allclose(batch.feats[0], synthetic)


@pytest.mark.parametrize("use_prefix", [False, True])
def test_projector_gradient_matches_finite_differences(use_prefix):
    torch.manual_seed(4)
    m = EcgQaModel.build(_cfg(projector="mlp"))
    batch = m.make_batch([_q(0), _q(1, answer=("yes",), ecgs=(2,))], _Signals())
    prefix = m.prefix_cache(batch) if use_prefix else None
    m.zero_grad()
    m.loss(batch, prefix=prefix).backward()
    bias = m.projector.head.bias
    eps = 1e-2
    for i in range(4):
        with torch.no_grad():
            bias[i] += eps
            up = float(m.loss(batch, prefix=prefix))
            bias[i] -= 2 * eps
            down = float(m.loss(batch, prefix=prefix))
            bias[i] += eps
        assert abs(bias.grad[i] - (up - down) / (2 * eps)) < 2e-3 + 0.02 * abs(bias.grad[i])


# ------------------------------------------------------------------ batched answering


def _mixed_samples():
    """Two questions (two prompt lengths), one repeated: groups of 2 and 1 prompts."""
    axis = "what is the heart axis of this ecg?"
    return [_q(0), _q(1, question=axis, answer=("normal heart axis",), ecgs=(2,)),
            _q(2, answer=("yes",), ecgs=(3,)), _q(3, ecgs=(4,))]


_OPTIONS = [[("no",), ("yes",)], [("left axis deviation",), ("normal heart axis",)],
            [("no",), ("yes",)], [("no",), ("yes",)]]


def _greedy_margins(m, batch, b, n):
    """Top-1 minus top-2 logit at each step of ``generate`` on prompt ``b`` alone."""
    one = type(batch)([batch.encoded[b]], batch.feats, [batch.ecg_index[b]])
    emb, att, _ = m.splice(one, m.ecg_tokens(batch.feats), answers=[[]])
    out = m.llm.generate(inputs_embeds=emb, attention_mask=att, do_sample=False,
                         max_new_tokens=n, eos_token_id=m.tokenizer.eos_token_id,
                         pad_token_id=m.tokenizer.pad_token_id, output_logits=True,
                         return_dict_in_generate=True)
    return [float(v[0, 0] - v[0, 1]) for v in (lg.topk(2).values for lg in out.logits)]


@pytest.mark.parametrize("llm", ["tiny-llama", "tiny-gemma"])
def test_batched_answers_equal_the_per_prompt_scores_and_generation(llm):
    from ecgqa.models.answering import answer_batch
    from ecgqa.models.kv import PrefixMemo

    torch.manual_seed(5)
    m = EcgQaModel.build(_cfg(llm=llm, max_new_tokens=6))
    batch = m.make_batch(_mixed_samples(), _Signals(), with_answers=False)
    listed = [[list(o) for o in opts] for opts in _OPTIONS]
    ref = m.score_options(batch, listed)
    texts = [m.generate(batch, b) for b in range(4)]
    for memo in (None, PrefixMemo()):
        for _ in range(2):                        # the second pass reads the memo
            got = answer_batch(m, batch, listed, memo=memo)
            # the same float32 sums as the per-prompt scorer, blocked differently where
            # prompts share a call or the prefix comes from the memo: the bound of
            # test_option_scores_equal_summed_token_log_probabilities
            scale = max(1.0, float(ref.logp_sum.abs().max()))
            assert_fp32_close(got.scores.logp_sum, ref.logp_sum, 64, scale)
            assert_fp32_close(got.scores.logp_mean, ref.logp_mean, 64, scale)
            assert got.texts == texts
    # greedy tokens equal because every step's top two logits are far apart compared
    # with that rounding (a near-tie could pick the other token; docs/bench.md)
    assert min(min(_greedy_margins(m, batch, b, 6)) for b in range(4)) > 1e-4


def test_a_prompts_answer_does_not_depend_on_the_prompts_beside_it():
    """Same ops, more rows: a row's scores, answer and hits are the same alone or batched
    with other prompts of its shape (rows of one product are computed independently)."""
    from ecgqa.models.answering import answer_batch, token_hits

    torch.manual_seed(6)
    cfg = _cfg(max_new_tokens=5)
    cfg.llm.dtype = "bfloat16"
    m = EcgQaModel.build(cfg)
    samples = [_q(i, ecgs=(i + 1,), answer=("yes",) if i % 2 else ("no",)) for i in range(4)]
    batch = m.make_batch(samples, _Signals(), with_answers=False)
    teacher = m.make_batch(samples, _Signals())
    opts = [[["no"], ["yes"]]] * 4
    ids = [e.answer for e in teacher.encoded]
    both = answer_batch(m, batch, opts, teachers=ids)
    hits = token_hits(m, teacher)
    for b in range(4):
        one = type(batch)([batch.encoded[b]], batch.feats, [batch.ecg_index[b]])
        alone = answer_batch(m, one, opts[:1], teachers=ids[b:b + 1])
        assert torch.equal(alone.scores.logp_sum[0], both.scores.logp_sum[b])
        assert alone.texts[0] == both.texts[b]
        assert torch.equal(alone.hits[0], both.hits[b]) and torch.equal(hits[b], both.hits[b])
        t1 = type(teacher)([teacher.encoded[b]], teacher.feats, [teacher.ecg_index[b]])
        assert torch.equal(token_hits(m, t1)[0], hits[b])


def test_greedy_generation_stops_when_every_answer_has_ended(model, monkeypatch):
    from ecgqa.models import answering

    batch = model.make_batch([_q(0), _q(1, ecgs=(2,)), _q(2, ecgs=(3,))], _Signals(),
                             with_answers=False)
    rows = []
    forward = type(model.llm).forward

    def counting(self, *args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(self, *args, **kwargs)

    eos = model.tokenizer.eos_token_id
    natural = answering.answer_batch(model, batch, [[["no"]]] * 3, max_new_tokens=4)
    # make the second prompt end at once: its first token becomes EOS
    real = answering.next_token_logits

    def first_is_eos(m, hidden):
        logits = real(m, hidden)
        logits[1 if hidden.shape[0] > 1 else 0, eos] = float("inf")
        return logits

    monkeypatch.setattr(answering, "next_token_logits", first_is_eos)
    monkeypatch.setattr(type(model.llm), "forward", counting)
    got = answering.answer_batch(model, batch, [[["no"]]] * 3, max_new_tokens=4)
    assert got.texts[1] == "" and got.texts[0] == natural.texts[0]
    assert got.texts[2] == natural.texts[2]
    assert rows and rows[0] == 2 and len(rows) <= 3          # the ended row left at once


def test_reused_prefixes_keep_the_loss_and_leave_their_source_intact():
    from ecgqa.models.kv import PrefixMemo

    torch.manual_seed(7)
    m = EcgQaModel.build(_cfg(llm="tiny-gemma"))
    same = [_q(i, ecgs=(i + 1,), answer=("yes",) if i % 2 else ("no",)) for i in range(4)]
    batch = m.make_batch(same, _Signals())
    memo = PrefixMemo()
    ref = m.loss(batch, m.prefix_cache(batch, dedupe=False)).detach()
    for prefix in (m.prefix_cache(batch), m.prefix_cache(batch, memo), m.prefix_cache(batch, memo)):
        # one prompt's prefix computed alone and copied to four rows: the same numbers,
        # blocked as a 1-row instead of a 4-row product (test above: 64 u)
        assert_fp32_close(m.loss(batch, prefix).detach(), ref, 64)
    assert len(memo) == 1 and memo.hits == 1 and memo.misses == 1
    cached = next(iter(memo._items.values()))
    assert cached.layers[0].keys.shape[0] == 1 and cached.get_seq_length() == len(
        batch.encoded[0].pieces[0])                         # not extended by the losses


def test_answers_in_chunks_equal_answers_in_one_call(monkeypatch):
    """Memory bounds cut a group into calls of fewer prompts and option rows: the same
    numbers (bfloat16: rows of a product are independent)."""
    from ecgqa.models import answering

    torch.manual_seed(8)
    cfg = _cfg(max_new_tokens=4)
    cfg.llm.dtype = "bfloat16"
    m = EcgQaModel.build(cfg)
    samples = [_q(i, ecgs=(i + 1,)) for i in range(5)]
    batch = m.make_batch(samples, _Signals(), with_answers=False)
    opts = [[["no"], ["yes"], ["not sure"]]] * 5
    whole = answering.answer_batch(m, batch, opts)
    monkeypatch.setattr(answering, "PROMPT_TOKENS", 1)          # one prompt per call
    monkeypatch.setattr(answering, "OPTION_ROWS", 2)            # one prompt's options...
    cut = answering.answer_batch(m, batch, opts)
    assert torch.equal(cut.scores.logp_sum, whole.scores.logp_sum)
    assert cut.texts == whole.texts


def test_records_encoded_up_front_give_the_features_of_first_use(model):
    """encode_records fills the cache make_batch reads, with the features make_batch would
    compute itself; make_batch then reads no signal, and encoding again does nothing."""
    samples = [_q(0, ecgs=(3,)), _q(1, ecgs=(5, 4)), _q(2, ecgs=(3,))]
    lazy, eager = _Signals(), _Signals()
    first = model.make_batch(samples, lazy)
    assert model.encode_records([5, 3, 4, 3], eager) == 3 and eager.calls == 3
    assert model.encode_records([3, 4, 5], eager) == 0 and eager.calls == 3
    again = model.make_batch(samples, eager)
    assert eager.calls == 3
    assert torch.equal(first.feats, again.feats) and first.ecg_index == again.ecg_index


def test_measured_values_of_a_real_record_reach_the_prompt_first_piece(tmp_path):
    """With ``measurements``, each sample's prompt carries its ECG's measured rate and
    intervals before the ECG slot (in the first piece, which the prefix cache reuses),
    measured on the model-ready signal (500 Hz here): the rate agrees with the one the
    questions' truth comes from (the record read at its own rate) within 3 bpm. The
    measurements are cached per record, they survive save/load, and a model without
    them keeps the old prompt."""
    from ecgqa.qa.cache import SignalCache
    from ecgqa.qa.resolve import RecordsIndex
    from ecgqa.records.measure import measure
    from ecgqa.records.read import read_record
    from tests.conftest import REAL, REAL_PTBXL_RECORDS, write_real_index

    resolver = RecordsIndex(write_real_index(tmp_path / "index.csv"))
    torch.manual_seed(0)
    m = EcgQaModel.build(_cfg(measurements=True))
    signals = SignalCache(resolver, fs=500.0, duration_s=10.0)
    batch = m.make_batch([_q(0, ecgs=(1,)), _q(1, ecgs=(6000,))], signals)
    truth = measure(read_record(REAL / REAL_PTBXL_RECORDS[1])).heart_rate_bpm
    first = m.tokenizer.decode(list(batch.encoded[0].pieces[0])).lower()  # tiny: lower case
    found = re.search(r"measured\s*:\s*heart rate (\d+) bpm.*\becg\s*:\s*$", first)
    assert found, first
    assert abs(int(found.group(1)) - truth) <= 3
    reads = signals.reads
    m.make_batch([_q(2, ecgs=(1,))], signals)
    assert signals.reads == reads and len(m._measure_cache[signals]) == 2

    m.save_pretrained(tmp_path / "saved")
    again = EcgQaModel.from_pretrained(tmp_path / "saved")
    assert again.cfg.measurements and again.template == m.template
    plain = EcgQaModel.build(_cfg())
    text = plain.tokenizer.decode(list(plain.make_batch([_q(0)], _Signals()).encoded[0].pieces[0]))
    assert "measured" not in text.lower()


def test_measurements_need_a_prompt_with_their_slot(tmp_path):
    from ecgqa.qa.collate import PromptError

    f = tmp_path / "qa.yaml"
    f.write_text("layouts:\n  question_first:\n    single: 'Q {question} <ecg> A:'\n"
                 "    comparison: 'Q {question} <ecg> <ecg> A:'\n")
    with pytest.raises(PromptError, match="needs a prompt with a {measured} slot"):
        EcgQaModel.build(_cfg(measurements=True, prompt_file=str(f)))
