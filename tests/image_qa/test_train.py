"""LoRA training on configs/lora/tiny.yaml: trains, saves peft files, reloads, resumes to the
same result; the script and the CLI entry points; one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ecgqa.config import ConfigError, load_config
from ecgqa.image_qa.train import LoraTrainer, TrainLoraConfig, make_accelerator, micro_batch
from tests.conftest import ROOT
from tests.image_qa.tiny_models import tiny_instruct

TINY = ROOT / "configs" / "lora" / "tiny.yaml"
SCRIPT = ROOT / "ecgqa" / "train_lora.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_instruct(tmp_path_factory.mktemp("instruct"))


def run(data, out, *overrides):
    cfg = load_config(TrainLoraConfig, TINY, [f"data.path={data}", f"train.out={out}",
                                              "train.progress=false", *overrides])
    trainer = LoraTrainer(cfg, make_accelerator(cfg)).setup()
    trainer.train()
    trainer.finish()
    return trainer


def test_tiny_recipe_trains_saves_and_reloads(data, tmp_path):
    from ecgqa.image_qa.loading import load_image_qa

    tr = run(data, tmp_path / "run", "train.steps=12", "train.eval_every=6")
    losses = [h["loss"] for h in tr.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert "valid/loss" in tr.history[5]
    adapter = tmp_path / "run" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "vision.safetensors",
                 "config.yaml"):
        assert (adapter / name).is_file(), name
    assert (tmp_path / "run" / "config.yaml").is_file()
    loaded = load_image_qa(adapter)
    tr.model.eval().requires_grad_(False)       # as loaded (MultiheadAttention's fast path)
    images = [tr.train_data[0].image, tr.train_data[1].image]
    q = [s.turns[0][0] for s in tr.train_data[:2]]
    opts = [["yes", "no"]] * 2
    assert torch.equal(tr.model.score_options(images, q, opts),
                       loaded.score_options(images, q, opts))


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    whole = run(data, tmp_path / "a", "train.steps=6", "train.save_every=3")
    cfg = load_config(TrainLoraConfig, TINY, [f"data.path={data}", f"train.out={tmp_path / 'b'}",
                                              "train.progress=false", "train.steps=6",
                                              "train.save_every=3"])
    killed = LoraTrainer(cfg, make_accelerator(cfg)).setup()
    step = killed.train_step

    def crash(i):                           # killed after the step-3 checkpoint
        if i == 4:
            raise KeyboardInterrupt
        return step(i)

    killed.train_step = crash
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = run(data, tmp_path / "b", "train.steps=6", "train.save_every=3",
                  "train.resume=true")
    assert resumed.history[2]["step"] == 3 and len(resumed.history) == 6
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    a, b = whole.model.trainable_state(), resumed.model.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_existing_checkpoints_need_resume(data, tmp_path):
    run(data, tmp_path / "c", "train.steps=1")
    with pytest.raises(ConfigError, match="train.resume=true"):
        run(data, tmp_path / "c", "train.steps=2")


def test_micro_batches_depend_only_on_seed_and_index():
    seen = [i for g in range(4) for i in micro_batch(8, 4, 0, g)]
    assert sorted(seen[:8]) == list(range(8)) and sorted(seen[8:]) == list(range(8))
    assert micro_batch(8, 4, 0, 3) == micro_batch(8, 4, 0, 3) != micro_batch(8, 4, 1, 3)


def test_script_runs_as_a_subprocess(data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(TINY),
                        f"data.path={data}", "--train.out", str(tmp_path / "s"),
                        "train.steps=2", "train.progress=false"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "s" / "adapter" / "adapter_model.safetensors").is_file()
    assert "adapter after 2 steps" in r.stdout


@pytest.mark.parametrize("entry", ["script", "cli"])
def test_bad_config_is_one_line_and_exit_2(entry, data, tmp_path, capsys):
    args = ["--config", str(TINY), f"data.path={data}", f"train.out={tmp_path}",
            "model.lora.target_modules=[q_proj, lm_head]"]
    if entry == "script":
        from ecgqa.image_qa.run import main
        code = main(args)
    else:
        from ecgqa.cli import main
        code = main(["train-lora", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "lm_head" in err


def test_missing_data_is_one_line(tmp_path, capsys):
    from ecgqa.image_qa.run import main

    assert main(["--config", str(TINY), f"data.path={tmp_path / 'none'}",
                 f"train.out={tmp_path}"]) == 2
    assert "ecgqa data instruct" in capsys.readouterr().err


def test_help_config_lists_lora_keys(capsys):
    from ecgqa.image_qa.run import main

    assert main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert "model.lora.rank" in out and "train.grad_accum" in out


def test_accelerate_launch_two_cpu_processes_match_one(data, tmp_path):
    import json

    from tests.meta.test_train import _free_port

    # one thread per process and micro-batch gradients added in micro-batch order in both
    # runs (trainrun.ordered_sum): the same operations in the same order, so the tolerance
    # derived from the arithmetic is zero. grad_accum 4 puts two micro-batches on each
    # process, where an all-reduce of partial sums would add in another order.
    common = ["--config", str(TINY), f"data.path={data}", "train.steps=3",
              "train.grad_accum=4", "train.progress=false", "train.eval_every=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    one = subprocess.run([sys.executable, str(SCRIPT), *common, f"train.out={tmp_path / '1'}"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
                "--main_process_port", str(_free_port())]
    two = subprocess.run([*launcher, str(SCRIPT), *common, f"train.out={tmp_path / '2'}"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    h1, h2 = (json.loads((tmp_path / k / "history.json").read_text()) for k in "12")
    assert [h["loss"] for h in h2] == [h["loss"] for h in h1]
    assert [h["grad_norm"] for h in h2] == [h["grad_norm"] for h in h1]


def test_balanced_answers_leave_the_question_text_without_a_prior():
    from collections import Counter
    from pathlib import Path

    from ecgqa.image_qa.instruct import InstructSample
    from ecgqa.image_qa.train import balance_answers

    def conv(i, question, answer):
        return InstructSample(f"s{i}", Path(f"{i}.png"), ((question, answer),), True, {})

    spec = [("Does this ECG show AF?", "yes")] * 3 + [("Does this ECG show AF?", "no")] * 7 \
        + [("does this ECG  show af?", "no")] * 2 + [("Is the axis normal?", "no")] * 4 \
        + [("Which rhythm?", "sinus")] * 2 + [("Which rhythm?", "af")] * 5 \
        + [("Which rhythm?", "flutter")] * 3
    samples = [conv(i, q, a) for i, (q, a) in enumerate(spec)]
    kept = balance_answers(samples, seed=1)
    counts = Counter((" ".join(s.turns[0][0].lower().split()), s.turns[0][1]) for s in kept)
    # AF: 3 yes against 9 no (two wordings that differ only in case and spaces): 3 + 3;
    # the axis question has one answer only: dropped; rhythm: 2 of each of its 3 answers
    assert counts == {("does this ecg show af?", "yes"): 3, ("does this ecg show af?", "no"): 3,
                      ("which rhythm?", "sinus"): 2, ("which rhythm?", "af"): 2,
                      ("which rhythm?", "flutter"): 2}
    ids = [int(s.id[1:]) for s in kept]
    assert ids == sorted(ids)                                   # original order kept
    assert [s.id for s in balance_answers(samples, seed=1)] == [s.id for s in kept]
