"""Command line of LoRA training, shared by ``ecgqa/train_lora.py`` and ``ecgqa train-lora``.

Kept free of torch imports so that building the ``ecgqa`` parser stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DESCRIPTION = (
    "LoRA instruction tuning of an LLM on ECG images (LLaVA-format conversations from "
    "`ecgqa data instruct`). LoRA goes on the LLM's attention and MLP projections (never "
    "lm_head or embed_tokens); the small image encoder and projector train too with "
    "model.train_vision. Writes OUT/config.yaml, OUT/checkpoints/ and OUT/adapter/ (peft "
    "format). Launch with `accelerate launch` for data-parallel micro-batches.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ecgqa.meta.run import add_recipe_arguments

    add_recipe_arguments(p, "configs/lora/tiny.yaml", "train.lr=1e-4 or --train.lr 1e-4")


def parse(argv: Sequence[str], prog: str, parser_class=argparse.ArgumentParser):
    from ecgqa.meta.run import parse_recipe

    return parse_recipe(argv, prog, DESCRIPTION, add_arguments, parser_class)


def run(args: argparse.Namespace) -> int:
    """Run LoRA training as ``args`` say; user errors raise (the caller prints one line)."""
    from ecgqa.image_qa.train import LoraTrainer, TrainLoraConfig, make_accelerator, validate
    from ecgqa.meta.run import resolve_config

    cfg = resolve_config(TrainLoraConfig, args)
    if cfg is None:
        return 0
    validate(cfg)
    acc = make_accelerator(cfg)
    trainer = LoraTrainer(cfg, acc).setup()
    if acc.is_main_process:
        print(f"lora-train: {len(trainer.train_data)} train / {len(trainer.valid_data)} valid "
              f"conversations; {sum(p.numel() for p in trainer.model.trainable_parameters())} "
              f"trainable parameters; {acc.num_processes} process(es)", flush=True)
    trainer.train()
    folder = trainer.finish()
    if acc.is_main_process:
        last = trainer.history[-1] if trainer.history else {}
        print(f"{folder}: adapter after {trainer.step} steps"
              + (f"; last loss {last['loss']:.4f}" if last else ""), flush=True)
    return 0


def is_user_error(err: BaseException) -> bool:
    """Errors a user can fix: bad config, data, model folder or file."""
    from ecgqa.config import ConfigError
    from ecgqa.image_qa.instruct import InstructError
    from ecgqa.models.llm import LlmError

    return isinstance(err, (ConfigError, InstructError, LlmError, OSError))


def main(argv: Sequence[str] | None = None) -> int:
    """``python ecgqa/train_lora.py`` / ``accelerate launch ecgqa/train_lora.py``."""
    from ecgqa.meta.run import recipe_main

    return recipe_main("train_lora", argv, parse, run, is_user_error)
