"""The LoRA training recipe, shared by ``ecgqa/train_lora.py`` and ``ecgqa train-lora``
(its command line is :class:`ecgqa.recipe.Recipe`).

Kept free of torch imports so that building the ``ecgqa`` parser stays fast.
"""

from __future__ import annotations

import argparse

from ecgqa.recipe import Recipe, resolve_config

DESCRIPTION = (
    "LoRA instruction tuning of an LLM on ECG images (LLaVA-format conversations from "
    "`ecgqa data instruct`). LoRA goes on the LLM's attention and MLP projections (never "
    "lm_head or embed_tokens); the small image encoder and projector train too with "
    "model.train_vision. Writes OUT/config.yaml, OUT/checkpoints/ and OUT/adapter/ (peft "
    "format). Launch with `accelerate launch` for data-parallel micro-batches.")


def run(args: argparse.Namespace) -> int:
    """Run LoRA training as ``args`` say; user errors raise (the caller prints one line)."""
    from ecgqa.image_qa.train import LoraTrainer, TrainLoraConfig, make_accelerator, validate

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


RECIPE = Recipe(name="train_lora", description=DESCRIPTION,
                config_example="configs/lora/tiny.yaml",
                override_example="train.lr=1e-4 or --train.lr 1e-4", run=run)
main = RECIPE.main
