"""FSDP2 sharding of the frozen LLM on CPU processes (gloo): the sharded LLM computes what
the whole one does, each process holds only its shard, and FSDP meta-training on 2
processes gives the same projector as 1 process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ecgqa.config import ConfigError
from ecgqa.meta.trainer import uses_fsdp, validate_fsdp
from tests.meta.conftest import ROOT, TINY, tiny_config, tiny_overrides
from tests.meta.test_train import (
    SCRIPT,
    _differences,
    _env,
    _free_port,
    _history,
    _script,
)

FSDP_YAML = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def _questions(rank: int):
    from ecgqa.qa.ecgqa import QaSample
    from tests.models.test_fusion import _q

    two_ecgs = QaSample(sample_id=9, template_id=70, question_id=0,
                        question_type="comparison_irrelevant-query",
                        attribute_type="numeric_feature",
                        question="what numeric features of the second ecg are still abnormal?",
                        answer=("none",), ecg_ids=(1, 2), attribute=None, split="train")
    second = two_ecgs if rank == 1 else _q(1, question="what is the heart axis of this ecg?",
                                           answer=("normal heart axis",), ecgs=(2,))
    return [_q(0), second]        # the processes see differently shaped prompts


def _run_model(model, rank: int) -> list:
    """Loss and projector gradients (with and without the prefix cache), option scores and
    a generated answer (of a different length on each process)."""
    from tests.models.test_fusion import _Signals

    batch = model.make_batch(_questions(rank), _Signals())
    out = []
    prefix = model.prefix_cache(batch)
    for pre in (None, prefix, prefix):
        model.zero_grad()
        loss = model.loss(batch, prefix=pre)
        loss.backward()
        out.append([loss.detach()] + [p.grad.clone() for p in model.projector.parameters()])
    scores = model.score_options(batch, [[("no",), ("yes",)], [("none",), ("normal",)]])
    out.append([scores.logp_sum])
    out.append(model.generate(batch, rank, max_new_tokens=3 + 3 * rank))
    return out


def _worker(rank: int, world: int, port: int, llm: str, out: str) -> None:
    import datetime
    import os

    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard

    from ecgqa.meta.sharding import shard_frozen_llm
    from ecgqa.models.fusion import EcgQaModel
    from tests.models.test_fusion import _cfg

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        torch.manual_seed(0)
        whole = EcgQaModel.build(_cfg(llm=llm))
        torch.manual_seed(0)
        sharded = EcgQaModel.build(_cfg(llm=llm))
        summary = shard_frozen_llm(sharded.llm, "cpu")
        sharded.to("cpu")                                  # as the trainer does: harmless
        for name, p in sharded.llm.named_parameters():
            assert isinstance(p, DTensor) and p.placements == (Shard(0),), name
        embed, head = sharded.llm.get_input_embeddings(), sharded.llm.get_output_embeddings()
        tied = bool(sharded.llm.config.tie_word_embeddings)
        assert (head.weight is embed.weight) == tied
        expected, got = _run_model(whole, rank), _run_model(sharded, rank)
        # each unit gathers its whole weights before it runs: the same float32 numbers
        # through the same operations in one thread, so zero tolerance
        for a, b in zip(expected[:-1], got[:-1]):
            for x, y in zip(a, b):
                assert torch.equal(y, x), (y - x).abs().max()
        assert got[-1] == expected[-1]
        Path(out, f"{rank}.json").write_text(json.dumps(
            {"local": summary.local_bytes, "total": summary.total_bytes, "tied": tied}))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("llm", ["tiny-llama", "tiny-gemma"])
def test_the_sharded_llm_computes_what_the_whole_llm_does(llm, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), llm, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    total = ranks[0]["total"]
    assert all(r["local"] < total for r in ranks)
    assert sum(r["local"] for r in ranks) == total     # each weight is held exactly once
    assert ranks[0]["tied"] == (llm == "tiny-gemma")   # gemma ties lm_head to the embedding


def test_fsdp_meta_training_on_two_cpu_processes_equals_one_process(synth_qa, signal_cache_dir,
                                                                     tmp_path):
    # Sharding changes where the frozen LLM's weights live, not what is computed: each
    # process gathers the whole weights before using them, runs one thread, and the trainer
    # adds the per-task gradients in task order (trainrun.ordered_sum). So the runs must
    # agree bit for bit (the tolerance derived from the arithmetic is zero), with two tasks
    # per process here.
    common = ("train.steps=3", "train.save_every=0", "meta.meta_batch=4",
              "train.test_episodes=3", "train.eval_every=3", "train.eval_episodes=3",
              "train.progress=false")
    one = _script(synth_qa, tmp_path / "one", signal_cache_dir, *common)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(FSDP_YAML), "--num_processes", "2", "--num_cpu_threads_per_process", "1",
                "--main_process_port",
                str(_free_port())]
    cmd = [*launcher, str(SCRIPT), "--config", str(TINY),
           *tiny_overrides(synth_qa, tmp_path / "two", signal_cache_dir, *common)]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env=_env(ACCELERATE_USE_CPU="1"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    held = re.findall(r"process (\d): FSDP holds (\d+) of the LLM's (\d+) bytes", two.stdout)
    assert sorted(h[0] for h in held) == ["0", "1"], two.stdout[-2000:]
    total = int(held[0][2])
    assert all(int(h[1]) < total for h in held) and sum(int(h[1]) for h in held) == total
    print("FSDP bytes per process:", {h[0]: f"{h[1]} of {h[2]}" for h in held})
    assert _differences(tmp_path / "one", tmp_path / "two") == []
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert h1[-1]["valid/option_accuracy"] == h2[-1]["valid/option_accuracy"]
    # meta-test: 3 episodes on 2 processes (one process pads with a dropped episode)
    r1, r2 = (json.loads((tmp_path / d / "test_results.json").read_text())
              for d in ("one", "two"))
    key = lambda e: (e["index"], e["option_accuracy"], e["exact_match"])  # noqa: E731
    assert len(r2["episodes"]) == 3
    assert sorted(map(key, r1["episodes"])) == sorted(map(key, r2["episodes"]))


def test_the_fsdp_launch_is_recognised_on_cpus(monkeypatch):
    from accelerate.utils import DistributedType

    cpu = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not uses_fsdp(cpu)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")     # what `--use_fsdp` sets
    assert uses_fsdp(cpu)
    assert uses_fsdp(SimpleNamespace(distributed_type=DistributedType.FSDP))


@pytest.mark.parametrize("extra, processes, message", [
    (["meta.algorithm=maml"], 2, "second order"),
    (["meta.algorithm=metasgd"], 2, "second order"),
    (["meta.meta_batch=3"], 2, "multiple of the 2 processes"),
    (["model.llm.quantization=4bit"], 2, "4/8-bit"),
])
def test_fsdp_refuses_what_it_cannot_run(tmp_path, extra, processes, message):
    cfg = tiny_config(tmp_path / "qa", tmp_path / "out", tmp_path / "cache", *extra)
    with pytest.raises(ConfigError, match=message):
        validate_fsdp(cfg, processes)


@pytest.mark.parametrize("extra", [[], ["meta.algorithm=maml", "meta.first_order=true"],
                                   ["meta.algorithm=supervised", "meta.meta_batch=4"]])
def test_fsdp_accepts_first_order_runs(tmp_path, extra):
    validate_fsdp(tiny_config(tmp_path / "qa", tmp_path / "out", tmp_path / "cache", *extra), 2)
