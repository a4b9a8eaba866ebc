"""``ecgqa encoder ...``: pretrain a signal encoder, probe one, or distil it into an image
encoder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecgqa.cli.parsing import Parser, UserError


def add_parsers(sub) -> None:
    """The ``encoder`` subcommand and its own subcommands."""
    enc = sub.add_parser("encoder", help="pretrain or probe an ECG encoder",
                         description="ECG encoders: pretrain one on synthetic ECG-QA data "
                         "(multi-label attributes) or report its linear-probe quality.")
    esub = enc.add_subparsers(dest="encoder_command", metavar="ENCODER_COMMAND",
                              parser_class=Parser, required=True,
                              help="pretrain: train an encoder; probe: linear-probe report; "
                              "distill-image: an image encoder from a signal encoder")
    p = esub.add_parser("pretrain", help="pretrain an encoder on labelled real and/or "
                        "synthetic ECGs",
                        description="Train an encoder with a multi-label head over the SCP "
                        "codes of a label table (--labels) and/or a synthetic dataset's "
                        "attributes (--data: rhythm, conduction, ST/T, axis, noise, extra "
                        "systoles, interval ranges); the head is dropped and the encoder saved "
                        "as config.json + model.safetensors.")
    p.add_argument("--config", required=True, help="encoder YAML, e.g. "
                   "configs/encoder/default.yaml")
    p.add_argument("--data", default=None, help="synthetic dataset folder (ecgqa data synth); "
                   "overrides the config's data")
    p.add_argument("--labels", default=None, help="label table of real ECGs (CSV, e.g. "
                   "../shared/data/ptbxl-zscore-250hz/labels.csv); overrides the config's labels")
    p.add_argument("--out", default=None, help="output folder; overrides the config's out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as epochs=3 lr=0.001")
    p.set_defaults(func=cmd_encoder)

    p = esub.add_parser("probe", help="linear-probe quality of an encoder vs random init",
                        description="Fit logistic regressions on frozen, mean-pooled encoder "
                        "features and print macro AUROC on held-out synthetic records and/or "
                        "cross-validated on real labelled records (SNOMED Dx codes).")
    p.add_argument("--encoder", default="default", help="encoder folder or 'default' "
                   "(the shipped weights)")
    p.add_argument("--data", default=None, help="synthetic dataset not used in pretraining")
    p.add_argument("--real", default=None, help="folder of real .hea records with Dx codes, "
                   "e.g. ../shared/data/real/cinc2021")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline")
    p.set_defaults(func=cmd_encoder)

    p = esub.add_parser("distill-image", help="train an image encoder to reproduce a signal "
                        "encoder's tokens from rendered records",
                        description="Cross-modal distillation: render every record of a label "
                        "table's train split on ECG paper (varied looks), and train a cnn_tokens "
                        "image encoder to give the frozen signal encoder's tokens of the same "
                        "record. Reports token agreement and a linear probe of the table's codes "
                        "on image features beside signal features (valid split). Written as "
                        "config.json + model.safetensors + metrics.json; use it with the LoRA "
                        "config's model.image_encoder_init.")
    p.add_argument("--config", required=True, help="distillation YAML, e.g. "
                   "configs/image/distill.yaml")
    p.add_argument("--labels", default=None, help="label table (CSV); overrides the config's")
    p.add_argument("--out", default=None, help="output folder (must not exist or be empty); "
                   "overrides the config's out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as epochs=3 variants=1")
    p.set_defaults(func=cmd_encoder)


def cmd_encoder(args: argparse.Namespace) -> int:
    """Run the ``encoder`` subcommand ``args`` name."""
    return {"pretrain": cmd_encoder_pretrain, "probe": cmd_encoder_probe,
            "distill-image": cmd_encoder_distill_image}[args.encoder_command](args)


def cmd_encoder_pretrain(args: argparse.Namespace) -> int:
    """Pretrain an encoder: ``--config FILE [--labels CSV] [--data DIR] [--out DIR] [k=v ...]``."""
    from ecgqa.config import load_config
    from ecgqa.models.encoders.pretrain import EncoderPretrainConfig, pretrain

    overrides = list(args.overrides)
    overrides += [f"{key}={value}" for key, value in
                  (("data", args.data), ("labels", args.labels), ("out", args.out)) if value]
    cfg = load_config(EncoderPretrainConfig, args.config, overrides)
    out = pretrain(cfg, progress=not args.quiet)
    metrics = json.loads((out / "metrics.json").read_text())
    size = (out / "model.safetensors").stat().st_size / 1e6
    print(f"{out}: {cfg.encoder} encoder ({size:.1f} MB), best epoch {metrics['best_epoch']}, "
          f"val loss {metrics['val_loss']:.4f}, val macro AUROC {metrics['val_macro_auroc']:.3f}, "
          f"{metrics['train_seconds']:.0f} s")
    return 0


def cmd_encoder_probe(args: argparse.Namespace) -> int:
    """Print the linear-probe table of an encoder (``--encoder DIR|default``) vs random init."""
    from ecgqa.models.encoders.report import probe_table

    if not args.data and not args.real:
        raise UserError("give --data DIR (a synthetic dataset from `ecgqa data synth` with a "
                        "seed the encoder was not trained on) and/or --real DIR (.hea records)")
    for label, folder in (("--data", args.data), ("--real", args.real)):
        if folder and not Path(folder).is_dir():
            raise UserError(f"{label} {folder}: no such folder")
    print(probe_table(args.encoder or "default", args.data, args.real,
                      baseline=not args.no_baseline), end="")
    return 0


def cmd_encoder_distill_image(args: argparse.Namespace) -> int:
    """Distil a signal encoder into an image encoder (``ecgqa.image_qa.distill``)."""
    from ecgqa.config import load_config
    from ecgqa.image_qa.distill import DistillConfig, distill, summary

    overrides = list(args.overrides)
    overrides += [f"{k}={v}" for k, v in (("labels", args.labels), ("out", args.out)) if v]
    cfg = load_config(DistillConfig, args.config, overrides)
    print(summary(distill(cfg, progress=not args.quiet)))
    return 0
