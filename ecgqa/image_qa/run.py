"""Command line of LoRA training, shared by ``ecgqa/train_lora.py`` and ``ecgqa train-lora``.

Kept free of torch imports so that building the ``ecgqa`` parser stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

REPORT_TO = ("wandb", "tensorboard", "none")

DESCRIPTION = (
    "LoRA instruction tuning of an LLM on ECG images (LLaVA-format conversations from "
    "`ecgqa data instruct`). LoRA goes on the LLM's attention and MLP projections (never "
    "lm_head or embed_tokens); the small image encoder and projector train too with "
    "model.train_vision. Writes OUT/config.yaml, OUT/checkpoints/ and OUT/adapter/ (peft "
    "format). Launch with `accelerate launch` for data-parallel micro-batches.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="run YAML, e.g. configs/lora/tiny.yaml "
                   "(values only; see --help-config for every key)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's latest "
                   "checkpoint (same as train.resume=true)")
    p.add_argument("--report-to", choices=REPORT_TO, default=None, help="experiment tracker "
                   "(same as train.report_to; wandb runs offline unless you are logged in)")
    p.add_argument("--help-config", action="store_true", help="list every config key with "
                   "its default and help, then exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides: train.lr=1e-4 or "
                   "--train.lr 1e-4")


def parse(argv: Sequence[str], prog: str, parser_class=argparse.ArgumentParser):
    from ecgqa.meta.run import split_argv

    p = parser_class(prog=prog, description=DESCRIPTION)
    add_arguments(p)
    own, rest = split_argv(argv)
    args = p.parse_args(own)
    args.overrides = rest
    return args


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
    args = parse(sys.argv[1:] if argv is None else argv, "train_lora.py")
    try:
        return run(args)
    except KeyboardInterrupt:
        print("train_lora: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except Exception as err:                      # noqa: BLE001 - user errors are one line
        if not is_user_error(err):
            raise
        print(f"train_lora: error: {err}", file=sys.stderr)
        return 2
