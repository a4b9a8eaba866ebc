"""Supervised pretraining of an ECG encoder on a synthetic dataset (``ecgqa encoder pretrain``).

The encoder's tokens are mean-pooled and a linear head predicts the 49 attribute labels
of :data:`ecgqa.models.encoders.targets.LABELS` with a masked multi-label BCE loss
(optionally plus an NT-Xent term between two lead-dropout views). ECGs of the ``train``
split are trained on; the validation split picks the best epoch (early stopping) and
is reported. Only the encoder is saved (:func:`save_encoder`); the head is discarded.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgqa.config import ConfigError, expand_path, field, save_config, to_dict
from ecgqa.models.encoders.base import NORMALISATIONS, InputSpec
from ecgqa.models.encoders.checkpoint import build_encoder, save_encoder
from ecgqa.models.encoders.probe import macro_auroc
from ecgqa.models.encoders.targets import LABELS, LabelledSignals, load_split
from ecgqa.registry import ENCODERS


@dataclass
class EncoderPretrainConfig:
    """Settings of one encoder pretraining run (YAML in ``configs/encoder/``)."""

    data: str = field("", help="folder written by `ecgqa data synth` (facts.jsonl, "
                      "records_index.csv)")
    out: str = field("runs/encoder", help="folder the encoder is saved to (config.json, "
                     "model.safetensors, pretrain_config.yaml, metrics.json)")
    encoder: str = field("resnet1d", help="registry name of the encoder architecture")
    encoder_kwargs: dict = field({}, help="constructor arguments of the encoder "
                                 "(e.g. widths, blocks, out_dim)")
    normalisation: str = field("zscore", help="input normalisation inside the encoder: "
                               "zscore (per lead) or none")
    epochs: int = field(15, help="maximum number of passes over the training ECGs")
    batch_size: int = field(64, help="ECGs per optimisation step")
    lr: float = field(2e-3, help="peak learning rate (one-cycle schedule, AdamW)")
    weight_decay: float = field(1e-2, help="AdamW weight decay")
    seed: int = field(0, help="seed of initialisation, shuffling and augmentation")
    val_split: str = field("valid", help="split used for early stopping and reporting")
    val_fraction: float = field(0.0, help="if > 0, hold out this fraction of the training "
                                "patients for validation instead of val_split")
    patience: int = field(4, help="stop after this many epochs without a lower validation loss")
    lead_dropout: float = field(0.1, help="probability of masking each lead of a training ECG")
    contrastive_weight: float = field(0.0, help="weight of an NT-Xent loss between two "
                                      "lead-dropout views (0 = off)")
    contrastive_temperature: float = field(0.1, help="temperature of the NT-Xent loss")
    max_records: int = field(0, help="use at most this many ECGs per split (0 = all)")
    num_threads: int = field(0, help="torch CPU threads (0 = torch's default)")


def validate(cfg: EncoderPretrainConfig) -> None:
    """Raise :class:`ConfigError` with the fix before any data or model is loaded."""
    data = expand_path(cfg.data) if cfg.data else None
    if data is None:
        raise ConfigError("data: set it to a folder written by `ecgqa data synth` "
                          "(--data DIR or data=DIR)")
    for name in ("facts.jsonl", "records_index.csv"):
        if not (data / name).is_file():
            raise ConfigError(f"data: {data / name} not found; make a dataset with "
                              "`ecgqa data synth --out DIR`")
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"encoder: unknown {cfg.encoder!r}; choose one of: "
                          f"{', '.join(ENCODERS.names())}")
    if cfg.normalisation not in NORMALISATIONS:
        raise ConfigError(f"normalisation: must be one of {', '.join(NORMALISATIONS)}")
    checks = [("epochs", cfg.epochs >= 1), ("batch_size", cfg.batch_size >= 2),
              ("lr", cfg.lr > 0), ("weight_decay", cfg.weight_decay >= 0),
              ("patience", cfg.patience >= 1), ("lead_dropout", 0 <= cfg.lead_dropout < 1),
              ("val_fraction", 0 <= cfg.val_fraction < 1), ("max_records", cfg.max_records >= 0),
              ("contrastive_weight", cfg.contrastive_weight >= 0),
              ("contrastive_temperature", cfg.contrastive_temperature > 0),
              ("num_threads", cfg.num_threads >= 0)]
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{name}: value {getattr(cfg, name)!r} is out of range")
    if not cfg.out:
        raise ConfigError("out: set the folder the encoder is written to")


def pretrain(cfg: EncoderPretrainConfig, progress: bool = True) -> Path:
    """Train an encoder on synthetic attribute labels and save it.

    Args:
        cfg: the run's settings.
        progress: show tqdm progress bars.

    Returns:
        The output folder (loadable with :func:`ecgqa.models.encoders.load_encoder`).

    Example:
        >>> cfg = load_config(EncoderPretrainConfig, "configs/encoder/tiny.yaml",
        ...                   ["data=/tmp/synth", "out=/tmp/enc"])
        >>> load_encoder(pretrain(cfg))
    """
    validate(cfg)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: EncoderPretrainConfig, progress: bool) -> Path:
    start = time.time()
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.encoder, input_spec=InputSpec(normalisation=cfg.normalisation),
                            **cfg.encoder_kwargs)
    head = nn.Linear(encoder.out_dim, len(LABELS))
    train, val = _load_data(cfg, encoder.input_spec, progress)
    history = _fit(cfg, encoder, head, train, val, progress)
    best = min(history, key=lambda h: h["val_loss"])
    metrics = {"best_epoch": best["epoch"], "val_loss": best["val_loss"],
               "val_macro_auroc": best["val_macro_auroc"], "history": history,
               "train_seconds": round(time.time() - start, 1)}
    out = Path(cfg.out).expanduser()
    provenance = {
        "recipe": "ecgqa.models.encoders.pretrain", "data": str(Path(cfg.data).resolve()),
        "n_records": {"train": len(train), "val": len(val)}, "labels": list(LABELS),
        "config": to_dict(cfg), "torch": torch.__version__,
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
    }
    save_encoder(encoder.eval(), out, provenance)
    save_config(cfg, out / "pretrain_config.yaml")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return out


def _load_data(cfg: EncoderPretrainConfig, spec: InputSpec,
               progress: bool) -> tuple[LabelledSignals, LabelledSignals]:
    train = load_split(cfg.data, "train", spec, cfg.max_records, progress)
    if cfg.val_fraction > 0:
        rng = np.random.default_rng(cfg.seed)
        patients = np.unique(train.patient_ids)
        held = rng.choice(patients, max(1, int(round(cfg.val_fraction * len(patients)))),
                          replace=False)
        is_val = np.isin(train.patient_ids, held)
        return train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))
    try:
        val = load_split(cfg.data, cfg.val_split, spec, cfg.max_records, progress)
    except ValueError as err:
        raise ConfigError(f"val_split: {err}; set val_fraction > 0 to hold out training "
                          "patients instead") from None
    return train, val


def _fit(cfg, encoder: nn.Module, head: nn.Module, train: LabelledSignals,
         val: LabelledSignals, progress: bool) -> list[dict]:
    """Epoch loop with early stopping; leaves the best epoch's weights in ``encoder``."""
    from tqdm import tqdm

    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, best_state, stale = [], float("inf"), None, 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="pretraining", unit="epoch", disable=not progress)
    for epoch in bar:
        train_loss = _train_epoch(cfg, encoder, head, train, opt, sched, gen, steps, progress)
        val_loss, val_auc = evaluate(encoder, head, val, cfg.batch_size)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_macro_auroc": val_auc})
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", auroc=f"{val_auc:.3f}")
        if val_loss < best:
            best, stale = val_loss, 0
            best_state = copy.deepcopy(encoder.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    encoder.load_state_dict(best_state)
    return history


def _train_epoch(cfg, encoder, head, data: LabelledSignals, opt, sched, gen, steps: int,
                 progress: bool) -> float:
    from tqdm import tqdm

    encoder.train()
    head.train()
    x_all, m_all = torch.from_numpy(data.x), torch.from_numpy(data.mask)
    y_all, k_all = torch.from_numpy(data.y), torch.from_numpy(data.known)
    order = torch.randperm(len(data), generator=gen)
    losses = []
    for s in tqdm(range(steps), desc="batches", leave=False, disable=not progress):
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        x, y, k = x_all[idx], y_all[idx], k_all[idx]                  # (b, leads, t), (b, L)
        mask = _drop_leads(m_all[idx], cfg.lead_dropout, gen)          # (b, leads)
        feats = encoder(x, mask).mean(dim=1)                           # (b, d)
        loss = masked_bce(head(feats), y, k)
        if cfg.contrastive_weight > 0:
            other = encoder(x, _drop_leads(m_all[idx], cfg.lead_dropout, gen)).mean(dim=1)
            loss = loss + cfg.contrastive_weight * nt_xent(feats, other,
                                                           cfg.contrastive_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _drop_leads(mask: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mask each present lead with probability ``p``, keeping at least one per ECG."""
    if p <= 0:
        return mask
    keep = torch.rand(mask.shape, generator=gen) >= p                  # (b, leads)
    out = mask & keep
    empty = ~out.any(dim=1)
    out[empty] = mask[empty]
    return out


def masked_bce(logits: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the known entries of ``(b, L)`` targets."""
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")   # (b, L)
    known = known.float()
    return (loss * known).sum() / known.sum().clamp_min(1.0)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss between two views ``(n, d)``: row i of ``a`` matches row i of ``b``."""
    z = F.normalize(torch.cat([a, b]), dim=1)                          # (2n, d)
    sim = z @ z.T / temperature                                        # (2n, 2n)
    sim.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


@torch.no_grad()
def evaluate(encoder: nn.Module, head: nn.Module, data: LabelledSignals,
             batch_size: int = 64) -> tuple[float, float]:
    """``(masked BCE, macro AUROC)`` of encoder + head on ``data`` in eval mode."""
    encoder.eval()
    head.eval()
    logits = []
    for s in range(0, len(data), batch_size):
        x = torch.from_numpy(data.x[s:s + batch_size])
        m = torch.from_numpy(data.mask[s:s + batch_size])
        logits.append(head(encoder(x, m).mean(dim=1)))                 # (b, L)
    logits = torch.cat(logits)
    loss = masked_bce(logits, torch.from_numpy(data.y), torch.from_numpy(data.known))
    auc, _ = macro_auroc(data.y, logits.numpy(), data.known)
    return float(loss), auc
