"""Command line of meta-training, shared by ``ecgqa/train_meta.py`` and ``ecgqa train-meta``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

DESCRIPTION = (
    "Meta-train the ECG projector on N-way K-shot ECG-QA episodes (MAML, first-order MAML, "
    "ANIL, Meta-SGD through learn2learn; or the supervised baseline). The LLM and the ECG "
    "encoder stay frozen. Writes OUT/config.yaml, OUT/checkpoints/, OUT/adapter/ (load it "
    "with chat or bench) and OUT/test_results.json. Launch with `accelerate launch` for "
    "data-parallel episodes on several processes.")


def add_recipe_arguments(p: argparse.ArgumentParser, config_example: str,
                         override_example: str) -> None:
    """The options every training recipe takes (train_meta.py, train_lora.py)."""
    p.add_argument("--config", default=None, help=f"run YAML, e.g. {config_example} "
                   "(values only; see --help-config for every key)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's latest "
                   "checkpoint (same as train.resume=true)")
    p.add_argument("--report-to", choices=("wandb", "tensorboard", "none"), default=None,
                   help="experiment tracker (same as train.report_to; wandb runs offline "
                   "unless you are logged in)")
    p.add_argument("--help-config", action="store_true", help="list every config key with "
                   "its default and help, then exit")
    p.add_argument("overrides", nargs="*", help=f"dotted overrides: {override_example}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p, "configs/meta/default.yaml",
                         "meta.inner_lr=0.05 or --meta.inner_lr 0.05")


def config_help(cls, prefix: str = "") -> list[str]:
    """``key (default): help`` for every field of a (nested) config dataclass."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(tp):
            lines += config_help(tp, f"{prefix}{f.name}.")
        else:
            lines.append(f"  {prefix}{f.name} ({default!r}): {f.metadata.get('help', '')}")
    return lines


def resolve_config(cls, args: argparse.Namespace):
    """The run's config from ``--config``, ``--resume``, ``--report-to`` and dotted overrides;
    None after printing every key when ``--help-config`` was given (shared by the recipes)."""
    from ecgqa.config import load_config

    if args.help_config:
        print("config keys (default): help\n" + "\n".join(config_help(cls)))
        return None
    overrides = list(args.overrides)
    if args.resume:
        overrides.append("train.resume=true")
    if args.report_to:
        overrides.append(f"train.report_to={args.report_to}")
    return load_config(cls, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    """Run meta-training as ``args`` say; user errors raise (the caller prints one line)."""
    from ecgqa.meta.trainer import (
        MetaTrainer,
        TrainMetaConfig,
        format_results,
        make_accelerator,
        validate,
    )
    from ecgqa.qa.episodes import support_majority

    cfg = resolve_config(TrainMetaConfig, args)
    if cfg is None:
        return 0
    validate(cfg)
    acc = make_accelerator(cfg)
    trainer = MetaTrainer(cfg, acc).setup()
    if acc.is_main_process:
        d = trainer.data
        print(f"meta-train types: {', '.join(d.train.types)}; meta-test types: "
              f"{', '.join(d.test.types) or 'none'}; {acc.num_processes} process(es); "
              f"{len(d.classes.meta_train)} meta-train / {len(d.classes.meta_test)} meta-test "
              f"classes", flush=True)
        acc_, chance = support_majority(d.train.episode(g) for g in range(200))
        print(f"support-majority answer (no ECG) on the first 200 meta-training episodes "
              f"(ways: {cfg.data.ways}): accuracy {acc_:.3f}, chance {chance:.3f}", flush=True)
    trainer.train()
    results = None
    if cfg.train.test_episodes and trainer.data.test.samplers:
        results = trainer.test()
        if acc.is_main_process:
            print(format_results(results, f"meta-test ({cfg.meta.algorithm}, "
                                 f"{cfg.data.n_way}-way {cfg.data.k_shot}-shot)"), flush=True)
    folder = trainer.finish(results)
    if acc.is_main_process:
        checks = [(h["step"], h["valid/option_accuracy"]) for h in trainer.history
                  if "valid/option_accuracy" in h]
        if checks:
            print("meta-validation option accuracy (held-out classes, valid split): "
                  + ", ".join(f"{v:.3f} at step {s}" for s, v in checks[-5:]), flush=True)
        last = trainer.history[-1] if trainer.history else {}
        print(f"{folder}: adapter after {trainer.step} steps"
              + (f"; last query loss {last['query_loss']:.4f}" if last else ""), flush=True)
    return 0


OWN_VALUED = ("--config", "--report-to")
OWN_FLAGS = ("--resume", "--help-config", "-h", "--help")


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate this command's own options from dotted overrides (``--a.b 1`` included)."""
    own, rest = [], []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        name = item.split("=", 1)[0]
        if name in OWN_VALUED:
            own.append(item)
            if "=" not in item and i + 1 < len(items):
                own.append(items[i + 1])
                i += 1
        elif item in OWN_FLAGS:
            own.append(item)
        else:
            rest.append(item)
        i += 1
    return own, rest


def parse_recipe(argv: Sequence[str], prog: str, description: str, add,
                 parser_class=argparse.ArgumentParser) -> argparse.Namespace:
    """A recipe's own options (added by ``add``), dotted overrides in ``args.overrides``."""
    p = parser_class(prog=prog, description=description)
    add(p)
    own, rest = split_argv(argv)
    args = p.parse_args(own)
    args.overrides = rest
    return args


def parse(argv: Sequence[str], prog: str, parser_class=argparse.ArgumentParser):
    return parse_recipe(argv, prog, DESCRIPTION, add_arguments, parser_class)


def recipe_main(name: str, argv: Sequence[str] | None, parse, run, is_user_error) -> int:
    """Entry point of a recipe script: user errors are one line (exit 2), Ctrl-C exits 130."""
    args = parse(sys.argv[1:] if argv is None else argv, f"{name}.py")
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except Exception as err:                      # noqa: BLE001 - user errors are one line
        if not is_user_error(err):
            raise
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python ecgqa/train_meta.py`` / ``accelerate launch ecgqa/train_meta.py``."""
    return recipe_main("train_meta", argv, parse, run, is_user_error)


def is_user_error(err: BaseException) -> bool:
    """Errors a user can fix: bad config, data, adapter, model folder or file."""
    from ecgqa.config import ConfigError
    from ecgqa.meta.adapter import AdapterError
    from ecgqa.meta.data import MetaDataError
    from ecgqa.models.llm import LlmError
    from ecgqa.qa.collate import PromptError
    from ecgqa.qa.ecgqa import EcgQaError
    from ecgqa.records.read import EcgRecordError

    return isinstance(err, (ConfigError, AdapterError, MetaDataError, LlmError, PromptError,
                            EcgQaError, EcgRecordError, OSError))
