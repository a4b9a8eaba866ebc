"""The meta-training recipe, shared by ``ecgqa/train_meta.py`` and ``ecgqa train-meta``
(its command line is :class:`ecgqa.recipe.Recipe`)."""

from __future__ import annotations

import argparse

from ecgqa.recipe import Recipe, resolve_config

DESCRIPTION = (
    "Meta-train the ECG projector on N-way K-shot ECG-QA episodes (MAML, first-order MAML, "
    "ANIL, Meta-SGD through learn2learn; or the supervised baseline). The LLM and the ECG "
    "encoder stay frozen. Writes OUT/config.yaml, OUT/checkpoints/, OUT/adapter/ (load it "
    "with chat or bench) and OUT/test_results.json. Launch with `accelerate launch` for "
    "data-parallel episodes on several processes.")


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


RECIPE = Recipe(name="train_meta", description=DESCRIPTION,
                config_example="configs/meta/default.yaml",
                override_example="meta.inner_lr=0.05 or --meta.inner_lr 0.05", run=run)
main = RECIPE.main
