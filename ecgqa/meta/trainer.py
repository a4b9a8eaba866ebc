"""Episodic meta-training of the projector: setup -> train -> test, data-parallel over tasks.

Each outer step draws ``meta.meta_batch`` episodes; with P processes, process ``r`` runs
tasks ``r, r + P, ...``; every task's projector gradient (its loss divided by the whole
meta-batch) is gathered and the gradients are added in task order on every process, so P
processes compute the same update as one process with the same meta-batch, bit for bit.
Episodes depend only on ``(seed, index)``.

This module, :mod:`ecgqa.trainrun` (shared with the LoRA trainer) and :mod:`ecgqa.train_meta`
are the only places that touch ``accelerate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgqa.config import ConfigError, field, save_config
from ecgqa.intervals import mean_ci
from ecgqa.meta.algorithms import build_algorithm, meta_parameters
from ecgqa.meta.data import DataConfig, MetaData, ensure_data, load_meta_data
from ecgqa.meta.loop import MetaConfig, evaluate_episode, task_loss
from ecgqa.models.fusion import LOSS_VOCABS, ModelConfig
from ecgqa.models.projectors import check_projector
from ecgqa.qa.episodes import WAYS
from ecgqa.registry import META_ALGOS
from ecgqa.trainrun import (
    flat_gradients,
    gather_tasks,
    init_trackers,
    make_accelerator,  # noqa: F401  (re-exported: the recipe and tests build runs with it)
    ordered_sum,
    set_gradients,
    validate_report_to,
)
from ecgqa.trainstate import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    steps: int = field(100, help="outer (meta) steps")
    seed: int = field(0, help="seed of the projector init and of the meta-training episodes")
    out: str = field("out/meta", help="output folder: config, checkpoints, adapter, results")
    init: str | None = field(None, help="start from this adapter folder, or a shipped one "
                             "('default', 'heldout'), instead of a random projector")
    resume: bool = field(False, help="continue from the latest checkpoint in out/")
    save_every: int = field(25, help="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = field(2, help="checkpoints kept on disk")
    eval_every: int = field(0, help="meta-validate on held-out classes every N steps (0: off)")
    eval_episodes: int = field(10, help="episodes per meta-validation")
    test_episodes: int = field(20, help="meta-test episodes per question type after training "
                               "(0: skip)")
    test_generate: bool = field(True, help="generate answers in meta-testing (exact match)")
    report_to: str = field("wandb", help="wandb (offline unless logged in), tensorboard or none")
    progress: bool = field(True, help="show a progress bar")


@dataclass
class TrainMetaConfig:
    model: ModelConfig = field(ModelConfig(), help="the ECG-language model")
    data: DataConfig = field(DataConfig(), help="questions, records and episodes")
    meta: MetaConfig = field(MetaConfig(), help="the meta-learning algorithm")
    train: TrainConfig = field(TrainConfig(), help="the run")


def validate(cfg: TrainMetaConfig) -> None:
    """Check values that would otherwise fail late (before any model is loaded)."""
    m, t, d = cfg.meta, cfg.train, cfg.data
    if m.algorithm not in META_ALGOS:
        raise ConfigError(f"meta.algorithm {m.algorithm!r}: use one of "
                          f"{', '.join(META_ALGOS.names())}")
    validate_report_to(t.report_to)
    check_projector(cfg.model.projector, cfg.model.projector_kwargs, cfg.model.n_ecg_tokens)
    for name, value in (("train.steps", t.steps), ("meta.inner_steps", m.inner_steps + 1),
                        ("meta.meta_batch", m.meta_batch), ("data.n_way", d.n_way),
                        ("data.k_shot", d.k_shot), ("data.q_query", d.q_query)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1")
    if m.inner_lr <= 0 or m.outer_lr <= 0:
        raise ConfigError("meta.inner_lr and meta.outer_lr must be > 0")
    if m.inner_vocab not in LOSS_VOCABS:
        raise ConfigError(f"meta.inner_vocab {m.inner_vocab!r} is not one of "
                          f"{', '.join(LOSS_VOCABS)}")
    if m.algorithm == "fomaml" and m.first_order is False:
        raise ConfigError("meta.first_order false contradicts fomaml; use meta.algorithm maml")
    if d.holdout_by not in ("attribute", "template"):
        raise ConfigError("data.holdout_by must be attribute or template")
    if d.ways not in WAYS:
        raise ConfigError(f"data.ways {d.ways!r} is not one of {', '.join(WAYS)}")



def uses_fsdp(accelerator) -> bool:
    """Whether the launch asked for FSDP (``configs/accelerate/fsdp.yaml``, ``--use_fsdp``).

    On CPUs accelerate 1.15 reports ``MULTI_CPU`` even then, so its flag is read too.
    """
    from accelerate.utils import DistributedType, parse_flag_from_env

    return accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.MULTI_CPU
        and parse_flag_from_env("ACCELERATE_USE_FSDP"))


def validate_fsdp(cfg: TrainMetaConfig, processes: int) -> None:
    """What FSDP sharding of the frozen LLM needs (checked before any model is loaded)."""
    m = cfg.meta
    if not (m.algorithm in ("fomaml", "supervised") or m.first_order):
        raise ConfigError(f"meta.algorithm {m.algorithm} is second order, which FSDP cannot "
                          "run (the double backward reads LLM weights FSDP has freed); use "
                          "meta.first_order=true, fomaml, or a launch without FSDP")
    if m.meta_batch % processes:
        raise ConfigError(f"FSDP runs every process in step: meta.meta_batch {m.meta_batch} "
                          f"must be a multiple of the {processes} processes")
    if cfg.model.llm.quantization not in (None, "none"):
        raise ConfigError("FSDP cannot shard a 4/8-bit LLM; set model.llm.quantization=none "
                          "or launch without FSDP")
    if os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false").lower() in ("1", "true"):
        raise ConfigError("fsdp_cpu_ram_efficient_loading must be false: every process "
                          "loads the LLM and shards it itself")


class MetaTrainer:
    """Holds the run's state; ``setup()``, ``train()``, ``test()``, ``finish()``."""

    def __init__(self, cfg: TrainMetaConfig, accelerator):
        validate(cfg)
        self.cfg, self.acc = cfg, accelerator
        self.out = Path(cfg.train.out)
        self.step = 0
        self.history: list[dict] = []

    # ---------------------------------------------------------------- setup

    def setup(self) -> MetaTrainer:
        from ecgqa.models.fusion import EcgQaModel

        cfg = self.cfg
        self.sharded = uses_fsdp(self.acc)
        if self.sharded:
            validate_fsdp(cfg, self.acc.num_processes)
        if self.acc.is_main_process:
            ensure_data(cfg.data)
            self._check_resume()
        self.acc.wait_for_everyone()
        self.data: MetaData = load_meta_data(cfg.data, cfg.train.seed)
        torch.manual_seed(cfg.train.seed)                  # same projector init on every rank
        self.model = EcgQaModel.build(cfg.model)
        if self.sharded:
            self._shard_llm()
        if self.model.quantized:               # bitsandbytes placed the LLM; follow it
            self.model.encoder.to(self.model.device)
            self.model.projector.to(self.model.device)
        else:
            self.model.to(self.acc.device)
        self.algo = build_algorithm(cfg.meta.algorithm, self.model.projector, cfg.meta.inner_lr,
                                    cfg.meta.first_order).to(self.model.device)
        if cfg.train.init:
            self._load_init(cfg.train.init)
        self.params = meta_parameters(self.algo)
        self.opt = torch.optim.Adam(self.params, lr=cfg.meta.outer_lr)
        self.signals = self.model.signal_cache(self.data.resolver, cfg.data.cache_dir)
        # every ECG read and encoded once before the first step (not as episodes first
        # touch them), so the logged seconds per episode are the steps' own
        self.model.encode_records(self.data.ecg_ids(), self.signals,
                                  progress=cfg.train.progress and self.acc.is_main_process)
        ckpt = latest_checkpoint(self.out / "checkpoints") if cfg.train.resume else None
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.algo, self.opt)
            self.step, self.history = state["step"], state.get("history", [])
        if self.acc.is_main_process:
            save_config(cfg, self.out / "config.yaml")
        init_trackers(self.acc, "ecgqa-meta", self.cfg)
        return self

    def _shard_llm(self) -> None:
        from ecgqa.meta.sharding import shard_frozen_llm

        s = shard_frozen_llm(self.model.llm, self.acc.device)
        print(f"process {self.acc.process_index}: FSDP holds {s.local_bytes} of the LLM's "
              f"{s.total_bytes} bytes", flush=True)

    def _check_resume(self) -> None:
        """Refuse to mix runs: resuming needs the same config, a fresh run an empty out."""
        import yaml

        saved = self.out / "config.yaml"
        ckpt = latest_checkpoint(self.out / "checkpoints")
        if self.cfg.train.resume:
            if ckpt is None:
                return                                     # nothing to resume: start fresh
            old = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
            new = json.loads(json.dumps(dataclasses.asdict(self.cfg)))
            for section in ("model", "data", "meta"):
                if old.get(section) != new[section]:
                    raise ConfigError(f"{saved}: the {section} section differs from this run's; "
                                      "resume with the same config, or use another train.out")
        elif ckpt is not None:
            raise ConfigError(f"{self.out} already holds checkpoints; add train.resume=true to "
                              "continue, or use another train.out")

    def _load_init(self, source: str) -> None:
        from ecgqa.meta.adapter import load_algorithm_state, load_meta_config, resolve_adapter
        from ecgqa.models.encoders.checkpoint import read_safetensors

        folder = resolve_adapter(source)
        state = read_safetensors(folder / "projector.safetensors", ConfigError)
        try:
            self.model.projector.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(f"train.init {source}: its projector does not fit this model "
                              f"config ({str(err).splitlines()[0][:120]})") from None
        if load_meta_config(folder).algorithm == self.cfg.meta.algorithm:
            load_algorithm_state(self.algo, folder)

    # ---------------------------------------------------------------- training

    def train(self) -> list[dict]:
        from tqdm.auto import tqdm

        t, m = self.cfg.train, self.cfg.meta
        bar = tqdm(total=t.steps, initial=self.step, desc=f"meta-train ({m.algorithm})",
                   unit="step", disable=not (t.progress and self.acc.is_main_process))
        self.model.train()
        while self.step < t.steps:
            t0 = time.perf_counter()
            metrics = self.outer_step(self.step)
            self.step += 1
            metrics["sec_per_episode"] = ((time.perf_counter() - t0) * self.acc.num_processes
                                          / m.meta_batch)
            if t.eval_every and self.step % t.eval_every == 0:
                metrics |= {f"valid/{k}": v for k, v in self.validate().items()}
            self.history.append({"step": self.step, **metrics})
            self.acc.log(metrics, step=self.step)
            bar.set_postfix(query_loss=f"{metrics['query_loss']:.3f}")
            bar.update(1)
            if (t.save_every and self.step % t.save_every == 0) or self.step == t.steps:
                self.save()
        bar.close()
        return self.history

    def outer_step(self, step: int) -> dict:
        """One meta-update over ``meta_batch`` episodes shared out across processes.

        Each episode's gradient is kept apart and all of them are added in episode order
        (:func:`~ecgqa.trainrun.ordered_sum`), so P processes compute the same bits as one.
        """
        m = self.cfg.meta
        rank, world = self.acc.process_index, self.acc.num_processes
        grads, values = [], []
        for j in range(rank, m.meta_batch, world):
            episode = self.data.train.episode(step * m.meta_batch + j)
            loss, info = task_loss(self.model, self.algo, episode, self.signals, m)
            (loss / m.meta_batch).backward()
            grads.append(flat_gradients(self.params))            # (n,)
            self.opt.zero_grad(set_to_none=True)
            values.append([info["support_loss"], info["last_support_loss"], info["query_loss"]])
        width = sum(p.numel() for p in self.params)
        grads = torch.stack(grads) if grads else torch.zeros(0, width)   # (my tasks, n)
        set_gradients(self.params, ordered_sum(gather_tasks(self.acc, grads, m.meta_batch)))
        if m.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, m.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        values = torch.tensor(values, dtype=torch.float64).reshape(-1, 3)   # (my tasks, 3)
        totals = ordered_sum(gather_tasks(self.acc, values, m.meta_batch)) / m.meta_batch
        return {"support_loss": float(totals[0]), "last_support_loss": float(totals[1]),
                "query_loss": float(totals[2])}

    # ---------------------------------------------------------------- evaluation

    def validate(self) -> dict:
        """Option accuracy and query loss on held-out classes (valid split), after adapting."""
        phase = self.data.valid
        if not phase.samplers:
            return {}
        results = self._evaluate(phase, [(phase.types[g % len(phase.types)], g)
                                         for g in range(self.cfg.train.eval_episodes)],
                                 generate=False, by_index=True)
        acc = [r["option_accuracy"] for r in results]
        return {"option_accuracy": sum(acc) / len(acc)} if acc else {}

    def test(self, episodes: int | None = None, generate: bool | None = None) -> dict:
        """Meta-test: per question type, ``episodes`` episodes of held-out classes."""
        t = self.cfg.train
        n = t.test_episodes if episodes is None else episodes
        gen = t.test_generate if generate is None else generate
        phase = self.data.test
        jobs = [(qt, i) for qt in phase.types for i in range(n)]
        results = self._evaluate(phase, jobs, generate=gen, by_index=False)
        return summarise(results, skipped=phase.skipped)

    def _evaluate(self, phase, jobs, generate: bool, by_index: bool) -> list[dict]:
        from accelerate.utils import gather_object
        from tqdm.auto import tqdm

        rank, world = self.acc.process_index, self.acc.num_processes
        mine = jobs[rank::world]
        real = len(mine)
        if self.sharded:        # FSDP: the same number of episodes on every process
            mine += jobs[:1] * (-(-len(jobs) // world) - real)       # results dropped
        out = []
        self.model.eval()
        for qt, i in tqdm(mine, desc=f"meta-{phase.name}", unit="episode", leave=False,
                          disable=not (self.cfg.train.progress and self.acc.is_main_process)):
            ep = phase.episode(i) if by_index else phase.per_type(qt, i)
            t0 = time.perf_counter()
            res = evaluate_episode(self.model, self.algo, ep, self.signals,
                                   self.cfg.meta.eval_steps, self.cfg.meta.prefix_cache,
                                   generate=generate, vocab=self.data.data.vocab,
                                   inner_vocab=self.cfg.meta.inner_vocab)
            out.append(episode_record(ep, res, time.perf_counter() - t0))
        self.model.train()
        out = out[:real]
        return gather_object(out) if world > 1 else out

    # ---------------------------------------------------------------- output

    def save(self) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.out / "checkpoints", self.step, self.algo, self.opt,
                            {"history": self.history}, keep=self.cfg.train.keep_checkpoints,
                            texts={"config.yaml": (self.out / "config.yaml").read_text()})
        self.acc.wait_for_everyone()

    def finish(self, results: dict | None = None) -> Path:
        """Write the adapter (and test results); close the trackers."""
        from ecgqa.meta.adapter import save_adapter, save_class_split

        folder = self.out / "adapter"
        if self.acc.is_main_process:
            save_adapter(self.model, self.algo, self.cfg.meta, folder)
            d = self.cfg.data
            save_class_split(self.data.classes, {
                "qa": d.qa, "question_types": list(d.question_types),
                "test_fraction": d.test_fraction, "split_seed": d.split_seed}, folder)
            if results is not None:
                tmp = self.out / f".test_results.json.tmp{os.getpid()}"
                tmp.write_text(json.dumps(results, indent=2))
                os.replace(tmp, self.out / "test_results.json")
        self.acc.wait_for_everyone()
        self.acc.end_training()
        return folder


def episode_record(episode, results, seconds: float) -> dict:
    """One episode's scores (means over its queries)."""
    n = len(results)
    exact = [r.exact_match for r in results if r.exact_match is not None]
    return {"question_type": episode.query[0].question_type, "index": episode.index,
            "option_accuracy": sum(r.option_correct for r in results) / n,
            "exact_match": sum(exact) / len(exact) if exact else None,
            "seconds": seconds, "queries": n}


def summarise(records: list[dict], skipped: dict | None = None) -> dict:
    """Per question type and overall: mean and 95% CI over episodes of each metric."""
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["question_type"], []).append(r)
    rows = {}
    for qt, rs in sorted(by_type.items()) + [("all", records)]:
        row = {"episodes": len(rs), "seconds_per_episode": sum(r["seconds"] for r in rs)
               / max(1, len(rs))}
        for metric in ("option_accuracy", "exact_match"):
            vals = [r[metric] for r in rs if r[metric] is not None]
            mean, ci = mean_ci(vals)
            row[metric], row[f"{metric}_ci95"] = mean, ci
        rows[qt] = row
    return {"per_type": rows, "skipped_types": skipped or {}, "episodes": records}


def format_results(results: dict, title: str = "meta-test") -> str:
    """A Markdown table of :func:`summarise`'s output."""
    def cell(row, k):
        v, ci = row[k], row[f"{k}_ci95"]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3f} ± {ci:.3f}" if not math.isnan(ci) else f"{v:.3f}"

    lines = [f"{title}: accuracy per question type (mean ± 95% CI over episodes)", "",
             "| question type | episodes | option accuracy | exact match | s/episode |",
             "|---|---|---|---|---|"]
    for qt, row in results["per_type"].items():
        lines.append(f"| {qt} | {row['episodes']} | {cell(row, 'option_accuracy')} | "
                     f"{cell(row, 'exact_match')} | {row['seconds_per_episode']:.2f} |")
    for qt, why in results.get("skipped_types", {}).items():
        lines.append(f"| {qt} | 0 | skipped: {why[:80]} | | |")
    return "\n".join(lines)
