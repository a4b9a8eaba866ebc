"""``ecgqa encoder pretrain`` and ``ecgqa encoder probe``, wired into ``ecgqa.cli``.

User errors raise ``ConfigError`` / ``EncoderError`` / ``ValueError`` with a one-line
message; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecgqa.config import load_config


def cmd_encoder_pretrain(args: argparse.Namespace) -> int:
    """Pretrain an encoder: ``--config FILE [--labels CSV] [--data DIR] [--out DIR] [k=v ...]``."""
    from ecgqa.models.encoders.pretrain import EncoderPretrainConfig, pretrain

    overrides = list(getattr(args, "overrides", None) or [])
    if getattr(args, "data", None):
        overrides.append(f"data={args.data}")
    if getattr(args, "labels", None):
        overrides.append(f"labels={args.labels}")
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    cfg = load_config(EncoderPretrainConfig, args.config, overrides)
    out = pretrain(cfg, progress=not getattr(args, "quiet", False))
    metrics = json.loads((out / "metrics.json").read_text())
    size = (out / "model.safetensors").stat().st_size / 1e6
    print(f"{out}: {cfg.encoder} encoder ({size:.1f} MB), best epoch {metrics['best_epoch']}, "
          f"val loss {metrics['val_loss']:.4f}, val macro AUROC {metrics['val_macro_auroc']:.3f}, "
          f"{metrics['train_seconds']:.0f} s")
    return 0


def cmd_encoder_probe(args: argparse.Namespace) -> int:
    """Print the linear-probe table of an encoder (``--encoder DIR|default``) vs random init."""
    from ecgqa.models.encoders.report import probe_table

    data = getattr(args, "data", None)
    real = getattr(args, "real", None)
    if not data and not real:
        raise ValueError("give --data DIR (a synthetic dataset from `ecgqa data synth` with a "
                         "seed the encoder was not trained on) and/or --real DIR (.hea records)")
    for label, folder in (("--data", data), ("--real", real)):
        if folder and not Path(folder).is_dir():
            raise ValueError(f"{label} {folder}: no such folder")
    print(probe_table(getattr(args, "encoder", None) or "default", data, real,
                      baseline=not getattr(args, "no_baseline", False)), end="")
    return 0
