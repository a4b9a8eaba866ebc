"""LoRA instruction tuning on ECG images: setup -> train -> finish, data-parallel over batches.

Each optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` conversations;
with P processes, process ``r`` runs micro-batches ``r, r + P, ...`` and the gradients of
the trainable parameters (LoRA, plus image encoder and projector with ``train_vision``)
are summed across processes, so P processes make the same update as one. The samples of
micro-batch ``g`` depend only on ``(seed, g)``, so a resumed run sees the same data as an
uninterrupted one.

Output folder ``train.out``: ``config.yaml`` (resolved), ``checkpoints/step-*/`` (trainable
weights, optimizer, RNG; atomic), ``adapter/`` (peft ``adapter_config.json`` +
``adapter_model.safetensors``, ``vision.safetensors``, ``config.yaml``; load it with
:func:`ecgqa.image_qa.loading.load_image_qa`). This module and
``ecgqa/train_lora.py`` (with :mod:`ecgqa.trainrun`) are the only places of the LoRA path that
touch ``accelerate``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgqa.config import ConfigError, field, save_config
from ecgqa.image_qa.settings import ImageQaConfig, validate_model
from ecgqa.trainrun import (
    flat_gradients,
    gather_tasks,
    init_trackers,
    make_accelerator,  # noqa: F401  (re-exported: the recipe and tests build runs with it)
    ordered_sum,
    set_gradients,
    sum_across,
    validate_report_to,
)


@dataclass
class LoraDataConfig:
    path: str = field("out/instruct", help="instruction data: a folder with train.json, "
                      "valid.json, test.json and images/ (ecgqa data instruct), or a JSON file")
    image_root: str | None = field(None, help="folder image paths are relative to (default: "
                                   "the JSON's folder)")
    balance_answers: bool = field(False, help="for every question (its first turn's text) "
                                  "keep as many conversations of each answer as its rarest "
                                  "answer has (a seeded draw), and drop questions with one "
                                  "answer: the text then tells nothing, only the image does")
    max_train: int | None = field(None, help="use at most this many training conversations")
    max_valid: int = field(64, help="validation conversations per evaluation (0: none)")


@dataclass
class LoraTrainConfig:
    steps: int = field(200, help="optimizer steps")
    batch_size: int = field(4, help="conversations per micro-batch")
    grad_accum: int = field(1, help="micro-batches per optimizer step (shared out across "
                            "processes)")
    lr: float = field(2e-4, help="peak learning rate (AdamW)")
    vision_lr: float | None = field(None, help="learning rate of the image encoder and "
                                    "projector (default: lr)")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    warmup: int = field(10, help="linear warm-up steps, then cosine decay to 10% of lr")
    grad_clip: float = field(1.0, help="clip the gradient norm (0: off)")
    eval_every: int = field(50, help="validation loss every N steps (0: off)")
    save_every: int = field(50, help="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = field(2, help="checkpoints kept on disk")
    out: str = field("out/lora", help="output folder: config, checkpoints, adapter")
    seed: int = field(0, help="seed of the LoRA/vision init and of the data order")
    resume: bool = field(False, help="continue from the latest checkpoint in out/")
    report_to: str = field("wandb", help="wandb (offline unless logged in), tensorboard or none")
    progress: bool = field(True, help="show a progress bar")


@dataclass
class TrainLoraConfig:
    model: ImageQaConfig = field(ImageQaConfig(), help="the image-language model and its LoRA")
    data: LoraDataConfig = field(LoraDataConfig(), help="instruction data")
    train: LoraTrainConfig = field(LoraTrainConfig(), help="the run")


def validate(cfg: TrainLoraConfig) -> None:
    """Check values that would otherwise fail late (before any model is loaded)."""
    t = cfg.train
    validate_model(cfg.model)
    validate_report_to(t.report_to)
    for name, value in (("train.steps", t.steps), ("train.batch_size", t.batch_size),
                        ("train.grad_accum", t.grad_accum)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1")
    if t.lr <= 0 or (t.vision_lr is not None and t.vision_lr <= 0):
        raise ConfigError("train.lr and train.vision_lr must be > 0")
    if t.warmup < 0 or t.eval_every < 0 or t.save_every < 0:
        raise ConfigError("train.warmup, eval_every and save_every must be >= 0")


def lr_at(step: int, cfg: LoraTrainConfig) -> float:
    """Learning-rate factor at ``step``: linear warm-up, then cosine to 0.1."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / span)))


def micro_batch(n: int, batch_size: int, seed: int, g: int) -> list[int]:
    """Sample indices of micro-batch ``g``: a seeded permutation per epoch, read in order."""
    out = []
    for pos in range(g * batch_size, (g + 1) * batch_size):
        epoch, i = divmod(pos, n)
        out.append(_permutation(n, seed, epoch)[i])
    return out


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


class TrainableState:
    """The trainable parameters as a state dict (what a checkpoint holds)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.trainable_state()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.model.trainable_state()
        if set(own) != set(state):
            raise ConfigError("checkpoint does not match this model's trainable parameters")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])


class LoraTrainer:
    """Holds the run's state; ``setup()``, ``train()``, ``validate()``, ``finish()``."""

    def __init__(self, cfg: TrainLoraConfig, accelerator):
        validate(cfg)
        self.cfg, self.acc = cfg, accelerator
        self.out = Path(cfg.train.out)
        self.step = 0
        self.history: list[dict] = []

    def setup(self) -> LoraTrainer:
        from ecgqa.image_qa.loading import build_image_qa
        from ecgqa.trainstate import latest_checkpoint, load_checkpoint

        cfg = self.cfg
        self.train_data, self.valid_data = load_data(cfg.data)
        if self.acc.is_main_process:
            check_resume(cfg, self.out)
        self.acc.wait_for_everyone()
        torch.manual_seed(cfg.train.seed)               # same LoRA/vision init on every rank
        self.model = build_image_qa(cfg.model)
        if cfg.model.llm.quantization in (None, "none"):
            self.model.to(self.acc.device)
        self.opt = self._optimizer()
        ckpt = latest_checkpoint(self.out / "checkpoints") if cfg.train.resume else None
        if ckpt is not None:
            state = load_checkpoint(ckpt, TrainableState(self.model), self.opt)
            self.step, self.history = state["step"], state.get("history", [])
        if self.acc.is_main_process:
            save_config(cfg, self.out / "config.yaml")
        init_trackers(self.acc, "ecgqa-lora", self.cfg)
        return self

    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        vision = {id(p) for m in (getattr(self.model, "encoder", None),
                                  getattr(self.model, "projector", None)) if m is not None
                  for p in m.parameters()}
        params = self.model.trainable_parameters()
        groups = [{"params": [p for p in params if id(p) not in vision], "base_lr": t.lr},
                  {"params": [p for p in params if id(p) in vision],
                   "base_lr": t.vision_lr or t.lr}]
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g["lr"] = g["base_lr"]
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)

    # ---------------------------------------------------------------- training

    def train(self) -> list[dict]:
        from tqdm.auto import tqdm

        t = self.cfg.train
        bar = tqdm(total=t.steps, initial=self.step, desc="lora-train", unit="step",
                   disable=not (t.progress and self.acc.is_main_process))
        self.model.train()
        while self.step < t.steps:
            t0 = time.perf_counter()
            metrics = self.train_step(self.step)
            self.step += 1
            metrics["sec_per_step"] = time.perf_counter() - t0
            if t.eval_every and self.step % t.eval_every == 0:
                metrics |= {f"valid/{k}": v for k, v in self.validate().items()}
            self.history.append({"step": self.step, **metrics})
            self.acc.log(metrics, step=self.step)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            bar.update(1)
            if (t.save_every and self.step % t.save_every == 0) or self.step == t.steps:
                self.save()
        bar.close()
        return self.history

    def train_step(self, step: int) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches shared out across processes.

        Each micro-batch's gradient is kept apart and all of them are added in micro-batch
        order (:func:`~ecgqa.trainrun.ordered_sum`), so P processes compute the same bits
        as one.
        """
        t = self.cfg.train
        rank, world = self.acc.process_index, self.acc.num_processes
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_at(step, t)
        params = self.model.trainable_parameters()
        grads, losses = [], []
        for j in range(rank, t.grad_accum, world):
            idx = micro_batch(len(self.train_data), t.batch_size, t.seed, step * t.grad_accum + j)
            loss = self.model.loss(self.batch([self.train_data[i] for i in idx]))
            (loss / t.grad_accum).backward()
            grads.append(flat_gradients(params))                   # (n,)
            self.opt.zero_grad(set_to_none=True)
            losses.append([float(loss.detach())])
        width = sum(p.numel() for p in params)
        grads = torch.stack(grads) if grads else torch.zeros(0, width)   # (my batches, n)
        set_gradients(params, ordered_sum(gather_tasks(self.acc, grads, t.grad_accum)))
        norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else
                                              float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        losses = torch.tensor(losses, dtype=torch.float64).reshape(-1, 1)
        total = ordered_sum(gather_tasks(self.acc, losses, t.grad_accum))
        return {"loss": float(total[0]) / t.grad_accum, "grad_norm": float(norm),
                "lr": self.opt.param_groups[0]["lr"]}

    def batch(self, samples: Sequence):
        return self.model.make_batch([s.image for s in samples], [s.turns for s in samples])

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean answer-token loss over the validation conversations (split across processes)."""
        data = self.valid_data[: self.cfg.data.max_valid]
        if not data:
            return {}
        self.model.eval()
        bs, rank, world = self.cfg.train.batch_size, self.acc.process_index, self.acc.num_processes
        total = torch.zeros(2, dtype=torch.float64)
        for start in range(rank * bs, len(data), bs * world):
            chunk = data[start: start + bs]
            total += torch.tensor([float(self.model.loss(self.batch(chunk))) * len(chunk),
                                   len(chunk)], dtype=torch.float64)
        self.model.train()
        total = sum_across(self.acc, total)
        return {"loss": float(total[0] / total[1])}

    # ---------------------------------------------------------------- output

    def save(self) -> None:
        from ecgqa.trainstate import save_checkpoint

        if self.acc.is_main_process:
            save_checkpoint(self.out / "checkpoints", self.step, TrainableState(self.model),
                            self.opt, {"history": self.history},
                            keep=self.cfg.train.keep_checkpoints,
                            texts={"config.yaml": (self.out / "config.yaml").read_text()})
        self.acc.wait_for_everyone()

    def finish(self) -> Path:
        """Write the adapter (peft format + vision weights + config); close the trackers."""
        folder = self.out / "adapter"
        if self.acc.is_main_process:
            self.model.save_pretrained(folder)
            tmp = self.out / f".history.json.tmp{os.getpid()}"
            tmp.write_text(json.dumps(self.history, indent=1))
            os.replace(tmp, self.out / "history.json")
        self.acc.wait_for_everyone()
        self.acc.end_training()
        return folder


def load_data(cfg: LoraDataConfig):
    """Training and validation conversations (``read_instruct``)."""
    from ecgqa.image_qa.instruct import read_instruct

    path = Path(cfg.path).expanduser()
    if path.is_file():
        train, valid = read_instruct(path, cfg.image_root), []
    elif path.is_dir():
        train = read_instruct(path, cfg.image_root, split="train")
        valid = (read_instruct(path, cfg.image_root, split="valid")
                 if (path / "valid.json").is_file() and cfg.max_valid else [])
    else:
        raise ConfigError(f"data.path {path}: no such folder or file; build one with `ecgqa "
                          "data instruct --out DIR --qa SYNTH_DIR`")
    if cfg.balance_answers:
        train, valid = balance_answers(train), balance_answers(valid)
    train = train[: cfg.max_train] if cfg.max_train else train
    if not train:
        raise ConfigError(f"data.path {path}: no training conversations")
    return train, valid


def balance_answers(samples: Sequence, seed: int = 0) -> list:
    """The conversations with every question's answers equally frequent (see
    ``LoraDataConfig.balance_answers``), in their original order."""
    import numpy as np

    groups: dict[str, dict[str, list[int]]] = {}
    for i, s in enumerate(samples):
        question, answer = s.turns[0]
        key = " ".join(question.lower().split())
        groups.setdefault(key, {}).setdefault(" ".join(answer.lower().split()), []).append(i)
    rng = np.random.default_rng(seed)
    keep = []
    for key in sorted(groups):
        by_answer = groups[key]
        if len(by_answer) < 2:
            continue
        m = min(len(v) for v in by_answer.values())
        for answer in sorted(by_answer):
            keep += rng.choice(by_answer[answer], m, replace=False).tolist()
    return [samples[i] for i in sorted(keep)]


def check_resume(cfg: TrainLoraConfig, out: Path) -> None:
    """Refuse to mix runs: resuming needs the same config, a fresh run an empty out."""
    import yaml

    from ecgqa.trainstate import latest_checkpoint

    ckpt = latest_checkpoint(out / "checkpoints")
    if not cfg.train.resume:
        if ckpt is not None:
            raise ConfigError(f"{out} already holds checkpoints; add train.resume=true to "
                              "continue, or use another train.out")
        return
    saved = out / "config.yaml"
    if ckpt is None or not saved.is_file():
        return                                          # nothing to resume: start fresh
    old = yaml.safe_load(saved.read_text())
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))
    for section in ("model", "data"):
        if old.get(section) != new[section]:
            raise ConfigError(f"{saved}: the {section} section differs from this run's; "
                              "resume with the same config, or use another train.out")
