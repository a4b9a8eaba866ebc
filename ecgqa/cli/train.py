"""``ecgqa train-meta`` and ``ecgqa train-lora``: the training recipes, as
``accelerate launch ecgqa/train_meta.py`` / ``train_lora.py`` run them.

A recipe's command line takes dotted config overrides as options (``--train.lr 1e-4``)
as well as ``key=value`` words, which argparse cannot declare ahead; so the subcommand
hands every word after its name to the recipe's own parser (:class:`ecgqa.recipe.Recipe`),
the same one the scripts use.
"""

from __future__ import annotations

import argparse

from ecgqa.cli.parsing import Parser

RECIPES = {
    "train-meta": ("meta-train the projector on few-shot ECG-QA episodes", "ecgqa.meta.run"),
    "train-lora": ("LoRA-tune an LLM on ECG-image instruction data", "ecgqa.image_qa.run"),
}


def add_parsers(sub) -> None:
    """The ``train-meta`` and ``train-lora`` subcommands."""
    for name, (summary, _) in RECIPES.items():
        p = sub.add_parser(name, help=summary, add_help=False, prefix_chars="\0",
                           description=f"{summary}; see `ecgqa {name} --help`")
        p.add_argument("argv", nargs=argparse.REMAINDER, help="the recipe's options")
        p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Parse the recipe's own options and run it; user errors raise (one line in main)."""
    import importlib

    recipe = importlib.import_module(RECIPES[args.command][1]).RECIPE
    return recipe.run(recipe.parse(args.argv, f"ecgqa {args.command}", parser_class=Parser))
