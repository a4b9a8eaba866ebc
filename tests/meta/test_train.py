"""The meta-training recipe on the tiny config: a complete run, 2 processes = 1 process,
kill-and-resume = uninterrupted, no meta-test class in meta-training, trackers, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ecgqa.meta.adapter import load_adapter
from ecgqa.meta.trainer import MetaTrainer, make_accelerator
from ecgqa.models.fusion import EcgQaModel
from ecgqa.qa.episodes import class_key
from tests.meta.conftest import ROOT, TINY, tiny_config, tiny_overrides

SCRIPT = ROOT / "ecgqa" / "train_meta.py"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    return env


def _script(qa, out, cache, *extra, launcher=None, **popen):
    cmd = [*(launcher or [sys.executable]), str(SCRIPT), "--config", str(TINY),
           *tiny_overrides(qa, out, cache, *extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, **popen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tiny_config_runs_a_complete_meta_training(synth_qa, signal_cache_dir, tmp_path):
    out = tmp_path / "run"
    t = time.perf_counter()
    res = _script(synth_qa, out, signal_cache_dir, "train.test_episodes=3")
    seconds = time.perf_counter() - t
    assert res.returncode == 0, res.stderr[-2000:]
    assert "meta-test" in res.stdout and "single-verify" in res.stdout
    assert "support-majority answer (no ECG) on the first 200 meta-training episodes " \
        "(ways: classes)" in res.stdout
    history = json.loads((out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
                          .strip() / "state.json").read_text())["history"]
    checked = [f"{h['valid/option_accuracy']:.3f} at step {h['step']}" for h in history
               if "valid/option_accuracy" in h]
    assert checked and "meta-validation option accuracy (held-out classes, valid split): " \
        + ", ".join(checked) in res.stdout
    for name in ("config.yaml", "adapter/config.yaml", "adapter/projector.safetensors",
                 "adapter/meta.yaml", "test_results.json", "checkpoints/latest"):
        assert (out / name).is_file(), name
    results = json.loads((out / "test_results.json").read_text())
    row = results["per_type"]["single-verify"]
    assert row["episodes"] == 3
    assert 0.0 <= row["option_accuracy"] <= 1.0 and 0.0 <= row["exact_match"] <= 1.0
    # the adapter rebuilds the model from its folder alone, with the trained projector
    model, algo, meta = load_adapter(out / "adapter")
    saved = load_file(str(out / "adapter" / "projector.safetensors"))
    for k, v in model.projector.state_dict().items():
        assert torch.equal(v, saved[k])
    assert meta.algorithm == "fomaml" and meta.inner_steps == 2
    print(f"tiny meta-training, complete run: {seconds:.1f} s")


# Two processes against one, bit for bit. Each process runs with one thread (the same
# kernels, the same blocking), each task's gradient is computed by the same operations on
# the same inputs in both runs, and the trainer adds the per-task gradients and losses in
# task order whatever the number of processes (trainrun.ordered_sum). So the arithmetic is
# identical, and the tolerance derived from it is zero: any difference is a bug. A tolerance
# above zero could not catch a mean-instead-of-sum reduction: Adam divides the gradient by
# its own scale and clipping rescales it, so that fault changes the update only through
# Adam's eps and the clip coefficient's rounding (test_a_wrong_reduction_is_caught).
LAUNCH_2 = ("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--num_cpu_threads_per_process", "1")
TWO_PROCESS_COMMON = ("train.steps=3", "train.test_episodes=0", "train.eval_every=0",
                      "train.save_every=0", "meta.meta_batch=4")
# Faults injected into the 2-process run through sitecustomize (imported at start-up)
FAULTS = {
    # an all-reduce with reduction="mean": the gradient sum divided by the processes
    "mean": "_set = t.set_gradients\n"
            "t.set_gradients = lambda params, flat: _set(params, flat / 2)\n",
    # one rank's gradients never arrive: each process steps on its own tasks only
    "drop": "_gather = t.gather_tasks\n"
            "t.gather_tasks = lambda acc, rows, count: (rows if rows.dtype == torch.float32 "
            "else _gather(acc, rows, count))\n",
}


@pytest.fixture(scope="module")
def one_process_run(synth_qa, signal_cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process")
    res = _script(synth_qa, out, signal_cache_dir, *TWO_PROCESS_COMMON)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _two_processes(qa, out: Path, cache, fault: str | None = None):
    env = _env(ACCELERATE_USE_CPU="1")
    if fault:
        site = out.parent / f"site-{fault}"
        site.mkdir()
        (site / "sitecustomize.py").write_text("import torch\nimport ecgqa.trainrun as t\n"
                                               + FAULTS[fault])
        env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    cmd = [sys.executable, *LAUNCH_2, "--main_process_port", str(_free_port()), str(SCRIPT),
           "--config", str(TINY), *tiny_overrides(qa, out, cache, *TWO_PROCESS_COMMON)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 process(es)" in res.stdout
    return out


def _differences(one: Path, two: Path) -> list[str]:
    """Where two runs differ: adapter tensors and logged losses (empty: the same bits)."""
    a = load_file(str(one / "adapter" / "projector.safetensors"))
    b = load_file(str(two / "adapter" / "projector.safetensors"))
    diff = [f"projector {k}: max |diff| {(a[k] - b[k]).abs().max().item():.3g}"
            for k in sorted(a) if not torch.equal(a[k], b[k])]
    for x, y in zip(_history(one), _history(two), strict=True):
        for k in ("support_loss", "last_support_loss", "query_loss"):
            if x[k] != y[k]:
                diff.append(f"step {x['step']} {k}: {x[k]!r} != {y[k]!r}")
    return diff


def test_two_cpu_processes_give_the_same_result_as_one(one_process_run, synth_qa,
                                                        signal_cache_dir, tmp_path):
    two = _two_processes(synth_qa, tmp_path / "two", signal_cache_dir)
    assert _differences(one_process_run, two) == []
    assert len(_history(two)) == 3
    init = _initial_projector(synth_qa, signal_cache_dir, tmp_path)
    trained = EcgQaModel.from_pretrained(two / "adapter").projector
    feats = torch.randn(8, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (trained(feats) - init(feats)).abs().max() > 1e-2   # training did change it


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_wrong_reduction_is_caught(fault, one_process_run, synth_qa, signal_cache_dir,
                                     tmp_path):
    two = _two_processes(synth_qa, tmp_path / "two", signal_cache_dir, fault)
    diff = _differences(one_process_run, two)
    print(f"fault {fault}: {len(diff)} differences, e.g. {diff[:2]}")
    assert any(d.startswith("projector") for d in diff), diff


def _initial_projector(qa, cache, tmp_path):
    cfg = tiny_config(qa, tmp_path / "init", cache, "train.steps=1")
    return MetaTrainer(cfg, make_accelerator(cfg)).setup().model.projector


def _history(out: Path) -> list[dict]:
    latest = (out / "checkpoints" / "latest").read_text().strip()
    return json.loads((out / "checkpoints" / latest / "state.json").read_text())["history"]


def test_kill_and_resume_reaches_the_same_final_loss(synth_qa, signal_cache_dir, tmp_path):
    steps = ("train.steps=24", "train.save_every=2", "train.test_episodes=0",
             "train.eval_every=0")
    full = _script(synth_qa, tmp_path / "full", signal_cache_dir, *steps)
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, str(SCRIPT), "--config", str(TINY),
           *tiny_overrides(synth_qa, out, signal_cache_dir, *steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env())
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and int(latest.read_text().strip().split("-")[1]) >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 24
    resumed = _script(synth_qa, out, signal_cache_dir, *steps, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _history(tmp_path / "full"), _history(out)
    assert len(a) == len(b) == 24
    # the checkpoint restores the projector, Adam's moments and step exactly (safetensors
    # holds the float32 bits), episodes depend only on (seed, index), one thread: the
    # resumed steps repeat the same operations on the same bits, so zero tolerance
    assert _differences(tmp_path / "full", out) == []


@pytest.mark.parametrize("ways", ["classes", "answers"])
def test_meta_test_classes_never_appear_in_meta_training(synth_qa, signal_cache_dir, tmp_path,
                                                         monkeypatch, ways):
    import ecgqa.meta.trainer as trainer_mod

    seen = []
    real_task_loss = trainer_mod.task_loss

    def spy(model, algo, episode, signals, cfg):
        seen.append(episode)
        return real_task_loss(model, algo, episode, signals, cfg)

    monkeypatch.setattr(trainer_mod, "task_loss", spy)
    cfg = tiny_config(synth_qa, tmp_path / "run", signal_cache_dir, "train.steps=5",
                      "meta.meta_batch=3", "train.eval_every=0", f"data.ways={ways}")
    trainer = MetaTrainer(cfg, make_accelerator(cfg)).setup()
    # every ECG the episodes can draw was read and encoded in setup, before any step
    encoded = set(trainer.model._features_of(trainer.signals))
    assert encoded and encoded == set(trainer.data.ecg_ids())
    trainer.train()
    assert len(seen) == 15
    if ways == "answers":          # one question per episode, every answer k_shot times
        for ep in seen:
            assert len({class_key(s)[:2] for s in ep.support + ep.query}) == 1
            assert len(ep.classes) >= 2 and len(ep.support) == 2 * len(ep.classes)
    assert {i for ep in seen for s in ep.support + ep.query for i in s.ecg_ids} <= encoded
    split = trainer.data.classes
    held_out = set(split.test_units)
    test_samples = [s for qt in trainer.data.test.types for i in range(5)
                    for ep in [trainer.data.test.per_type(qt, i)]
                    for s in ep.support + ep.query]
    train_records = set()
    for ep in seen:
        for s in ep.support + ep.query:
            assert class_key(s) in split.meta_train and class_key(s) not in split.meta_test
            assert not set(s.attribute or ()) & held_out
            assert s.split == "train"
            train_records |= set(s.ecg_ids)
        assert not ep.records("support") & ep.records("query")
    assert test_samples
    for s in test_samples:
        assert class_key(s) in split.meta_test and s.split == "test"
        assert not set(s.ecg_ids) & train_records      # patient-level splits
    # the adapter carries its class split, so a benchmark asks only held-out classes
    from ecgqa.meta.adapter import load_class_split

    saved = load_class_split(trainer.finish())
    assert saved["test_units"] == split.test_units and saved["by"] == split.by
    assert {class_key(s) for ep in seen for s in ep.support + ep.query} <= saved["meta_train"]
    assert not saved["meta_train"] & split.meta_test


def test_wandb_logs_offline_by_default(synth_qa, signal_cache_dir, tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("WANDB_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path))         # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = tiny_config(synth_qa, tmp_path / "run", signal_cache_dir, "train.steps=2",
                      "train.report_to=wandb", "train.eval_every=0")
    trainer = MetaTrainer(cfg, make_accelerator(cfg)).setup()
    trainer.train()
    trainer.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs, list((tmp_path / "run").rglob("*"))[:20]


def test_a_run_starts_from_a_saved_adapter(synth_qa, signal_cache_dir, tmp_path):
    cfg = tiny_config(synth_qa, tmp_path / "a", signal_cache_dir, "train.steps=2",
                      "train.eval_every=0")
    first = MetaTrainer(cfg, make_accelerator(cfg)).setup()
    first.train()
    folder = first.finish()
    cfg2 = tiny_config(synth_qa, tmp_path / "b", signal_cache_dir, f"train.init={folder}",
                       "train.seed=7")
    second = MetaTrainer(cfg2, make_accelerator(cfg2)).setup()
    for k, v in first.model.projector.state_dict().items():
        assert torch.equal(second.model.projector.state_dict()[k], v)


@pytest.mark.parametrize("extra, message", [
    (["meta.algorithm=reptile"], "meta.algorithm 'reptile'"),
    (["meta.inner_lr=-1"], "must be > 0"),
    (["meta.inner_vocab=support"], "meta.inner_vocab 'support' is not one of full, answers, top"),
    (["data.qa=/nonexistent/qa", "data.synth_n_ecgs=0"], "/nonexistent/qa"),
    (["train.report_to=mlflow"], "train.report_to 'mlflow'"),
    (["data.n_way=50", "data.ways=classes"], "no question type has 50 meta-train classes"),
    (["data.k_shot=5000", "data.ways=answers"],
     "no question type has a question with 2 answers"),
    (["data.ways=questions"], "data.ways 'questions' is not one of answers, classes"),
])
def test_bad_runs_fail_with_one_line(synth_qa, signal_cache_dir, tmp_path, extra, message):
    res = _script(synth_qa, tmp_path / "bad", signal_cache_dir, *extra)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr[-1500:]
    assert not (tmp_path / "bad" / "adapter").exists()


def test_an_existing_run_is_not_overwritten_without_resume(synth_qa, signal_cache_dir, tmp_path):
    first = _script(synth_qa, tmp_path / "run", signal_cache_dir, "train.steps=2",
                    "train.test_episodes=0", "train.eval_every=0")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _script(synth_qa, tmp_path / "run", signal_cache_dir, "train.steps=2")
    assert again.returncode == 2 and "train.resume=true" in again.stderr
    changed = _script(synth_qa, tmp_path / "run", signal_cache_dir, "train.steps=2",
                      "meta.inner_lr=0.5", "--resume")
    assert changed.returncode == 2 and "meta section differs" in changed.stderr


def test_the_ecgqa_command_runs_the_same_recipe(capsys):
    from ecgqa.cli import main

    assert main(["train-meta", "--help-config"]) == 0
    keys = capsys.readouterr().out
    for key in ("meta.algorithm", "meta.inner_lr", "data.k_shot", "train.resume",
                "model.llm.quantization"):
        assert f"  {key} (" in keys
    assert main(["train-meta", "--config", str(TINY), "--meta.algorithm", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecgqa: error: meta.algorithm 'bogus'")


@pytest.mark.parametrize("extra, message", [
    (["model.projector=nope"], "model.projector 'nope': use one of attention, linear, mlp"),
    (["model.projector_kwargs={dim: 16, heads: 3}"],
     "embed_dim must be divisible by num_heads); change dim or heads"),
    (["model.projector_kwargs={width: 16}"],
     "'width': the attention projector takes dim, heads; remove 'width'"),
    (["model.projector=linear"], "'dim': the linear projector takes no arguments; remove 'dim'"),
    (["model.projector_kwargs={n_tokens: 2}"], "set model.n_ecg_tokens instead"),
    (["model.n_ecg_tokens=0"], "model.n_ecg_tokens 0 must be >= 1"),
])
def test_bad_projector_settings_fail_with_one_line_before_any_model_loads(monkeypatch, capsys,
                                                                          extra, message):
    from ecgqa.cli import main

    def no_loading(*args, **kwargs):
        pytest.fail("validation let a bad projector setting through to setup")

    monkeypatch.setattr(MetaTrainer, "setup", no_loading)
    monkeypatch.setattr(EcgQaModel, "build", no_loading)
    assert main(["train-meta", "--config", str(TINY), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecgqa: error: model.") and message in err[0]
