"""Command-line plumbing shared by the training recipes (``train_meta.py``,
``train_lora.py``, ``ecgqa train-meta`` / ``train-lora``): their common options, dotted
overrides, ``--help-config``, and the entry point that turns user errors into one line.

A recipe module supplies its description, its config dataclass and its ``run(args)``;
everything else is here, below both the meta-learning and the image layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence

from ecgqa.errors import report_user_errors


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
    None after printing every key when ``--help-config`` was given."""
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


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a training recipe brings: its name, ``--help`` text and config example, and the
    function that runs it (user errors raise; the caller prints one line)."""

    name: str
    description: str
    config_example: str
    override_example: str
    run: Callable[[argparse.Namespace], int]

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_recipe_arguments(p, self.config_example, self.override_example)

    def parse(self, argv: Sequence[str], prog: str,
              parser_class=argparse.ArgumentParser) -> argparse.Namespace:
        """The recipe's own options, dotted overrides in ``args.overrides``."""
        p = parser_class(prog=prog, description=self.description)
        self.add_arguments(p)
        own, rest = split_argv(argv)
        args = p.parse_args(own)
        args.overrides = rest
        return args

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python ecgqa/NAME.py`` / ``accelerate launch ecgqa/NAME.py``: user errors are
        one line (exit 2), Ctrl-C exits 130."""
        args = self.parse(sys.argv[1:] if argv is None else argv, f"{self.name}.py")
        return report_user_errors(self.name, lambda: self.run(args),
                                  "interrupted (resume with --resume)")
