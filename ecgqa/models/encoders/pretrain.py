"""Supervised pretraining of an ECG encoder (``ecgqa encoder pretrain``).

Two sources of labelled ECGs, alone or mixed:

- ``labels``: a label table (real ECGs, e.g. PTB-XL's ``labels.csv``): one target per SCP
  code of the chosen groups with enough training positives (``"group:code"``);
- ``data``: a synthetic dataset (``ecgqa data synth``): the 49 attribute labels of
  :data:`ecgqa.models.encoders.targets.LABELS`.

The encoder's tokens are mean-pooled and a linear head predicts the targets with a masked
multi-label BCE loss (optionally plus an NT-Xent term between two lead-dropout views).
ECGs of the ``train`` split are trained on; the validation split (of the label table when
there is one) picks the best epoch (early stopping) and is reported. Only the encoder is
saved (:func:`save_encoder`); the head is discarded.
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

from ecgqa.config import ConfigError, check_ranges, expand_path, field, save_config, to_dict
from ecgqa.models.encoders.base import NORMALISATIONS, EncoderError, InputSpec
from ecgqa.models.encoders.checkpoint import build_encoder, save_encoder
from ecgqa.models.encoders.probe import macro_auroc
from ecgqa.models.encoders.targets import (
    BEAT_LABELS,
    LABELS,
    LabelledSignals,
    load_split,
    load_table_records,
    side_by_side,
    table_label_names,
    with_beat_targets,
)
from ecgqa.registry import ENCODERS


@dataclass
class EncoderPretrainConfig:
    """Settings of one encoder pretraining run (YAML in ``configs/encoder/``)."""

    data: str = field("", help="folder written by `ecgqa data synth` (facts.jsonl, "
                      "records_index.csv); with labels too, its ECGs are mixed in")
    labels: str = field("", help="label table of real ECGs: a CSV (ecg_id, path, patient_id, "
                        "strat_fold, code groups) or a folder of Challenge # Dx: headers")
    label_groups: list[str] = field(["super_class", "sub_class", "form", "rhythm"],
                                    help="code groups of the label table used as targets")
    min_positives: int = field(10, help="a label-table code is a target when it has at least "
                               "this many positives among the training records")
    out: str = field("runs/encoder", help="folder the encoder is saved to (config.json, "
                     "model.safetensors, pretrain_config.yaml, metrics.json)")
    encoder: str = field("resnet1d", help="registry name of the encoder architecture")
    encoder_kwargs: dict = field({}, help="constructor arguments of the encoder "
                                 "(e.g. widths, blocks, out_dim)")
    normalisation: str = field("zscore", help="input normalisation inside the encoder: "
                               "zscore (per lead), record or none")
    fs: float = field(500.0, help="input sampling rate of the encoder (Hz)")
    bandpass: list[float] = field([], help="[low, high] Hz: zero-phase Butterworth band-pass "
                                  "inside the encoder before the normalisation ([] = none)")
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
    time_shift: bool = field(False, help="roll each training ECG in time by a random number of "
                             "samples (circular shift)")
    noise_std: float = field(0.0, help="add Gaussian noise of this SD, relative to each lead's "
                             "SD, to training ECGs")
    beat_targets: bool = field(False, help="add self-supervised targets from the R peaks each "
                               "ECG shows: rate and RR irregularity thresholds (label tables)")
    contrastive_weight: float = field(0.0, help="weight of an NT-Xent loss between two "
                                      "lead-dropout views (0 = off)")
    contrastive_temperature: float = field(0.1, help="temperature of the NT-Xent loss")
    max_records: int = field(0, help="use at most this many ECGs per split (0 = all)")
    num_threads: int = field(0, help="torch CPU threads (0 = torch's default)")


def validate(cfg: EncoderPretrainConfig) -> None:
    """Raise :class:`ConfigError` with the fix before any data or model is loaded."""
    data = expand_path(cfg.data) if cfg.data else None
    if data is None and not cfg.labels:
        raise ConfigError("data / labels: set data to a folder written by `ecgqa data synth` "
                          "(--data DIR) and/or labels to a label table (--labels FILE)")
    for name in ("facts.jsonl", "records_index.csv") if data is not None else ():
        if not (data / name).is_file():
            raise ConfigError(f"data: {data / name} not found; make a dataset with "
                              "`ecgqa data synth --out DIR`")
    if cfg.labels and not expand_path(cfg.labels).exists():
        raise ConfigError(f"labels: {cfg.labels} not found; give a label CSV or a folder "
                          "of Challenge records")
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"encoder: unknown {cfg.encoder!r}; choose one of: "
                          f"{', '.join(ENCODERS.names())}")
    if cfg.normalisation not in NORMALISATIONS:
        raise ConfigError(f"normalisation: must be one of {', '.join(NORMALISATIONS)}")
    try:
        _input_spec(cfg)
    except EncoderError as err:
        raise ConfigError(f"fs / bandpass: {err}") from None
    checks = [("epochs", cfg.epochs >= 1), ("batch_size", cfg.batch_size >= 2),
              ("lr", cfg.lr > 0), ("weight_decay", cfg.weight_decay >= 0),
              ("patience", cfg.patience >= 1), ("lead_dropout", 0 <= cfg.lead_dropout < 1),
              ("val_fraction", 0 <= cfg.val_fraction < 1), ("max_records", cfg.max_records >= 0),
              ("min_positives", cfg.min_positives >= 1), ("noise_std", cfg.noise_std >= 0),
              ("contrastive_weight", cfg.contrastive_weight >= 0),
              ("contrastive_temperature", cfg.contrastive_temperature > 0),
              ("num_threads", cfg.num_threads >= 0)]
    check_ranges(cfg, checks)
    if not cfg.out:
        raise ConfigError("out: set the folder the encoder is written to")


def pretrain(cfg: EncoderPretrainConfig, progress: bool = True) -> Path:
    """Train an encoder on the labels of a label table and/or a synthetic set and save it.

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


def _input_spec(cfg: EncoderPretrainConfig) -> InputSpec:
    return InputSpec(fs=cfg.fs, normalisation=cfg.normalisation,
                     bandpass=tuple(cfg.bandpass) if cfg.bandpass else None)


def _run(cfg: EncoderPretrainConfig, progress: bool) -> Path:
    start = time.time()
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.encoder, input_spec=_input_spec(cfg), **cfg.encoder_kwargs)
    train, val, names = _load_data(cfg, encoder.input_spec, progress)
    head = nn.Linear(encoder.out_dim, len(names))
    history = _fit(cfg, encoder, head, train, val, progress)
    best = min(history, key=lambda h: h["val_loss"])
    metrics = {"best_epoch": best["epoch"], "val_loss": best["val_loss"],
               "val_macro_auroc": best["val_macro_auroc"], "history": history,
               "train_seconds": round(time.time() - start, 1)}
    out = Path(cfg.out).expanduser()
    provenance = {
        "recipe": "ecgqa.models.encoders.pretrain",
        "data": str(Path(cfg.data).resolve()) if cfg.data else None,
        "label_table": str(Path(cfg.labels).resolve()) if cfg.labels else None,
        "n_records": {"train": len(train), "val": len(val)}, "labels": list(names),
        "config": to_dict(cfg), "torch": torch.__version__,
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
    }
    save_encoder(encoder.eval(), out, provenance)
    save_config(cfg, out / "pretrain_config.yaml")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return out


def _load_data(cfg: EncoderPretrainConfig, spec: InputSpec, progress: bool
               ) -> tuple[LabelledSignals, LabelledSignals, tuple[str, ...]]:
    """``(train, val, label names)``: the label table's, the synthetic set's, or both side by
    side (validation on the label table's)."""
    if not cfg.labels:
        return *_load_synthetic(cfg, spec, progress), LABELS
    train, val, names = _load_table(cfg, spec, progress)
    if cfg.beat_targets:
        train, val = (with_beat_targets(d, spec.fs, progress) for d in (train, val))
        names = names + BEAT_LABELS
    if cfg.data:
        synth = load_split(cfg.data, "train", spec, cfg.max_records, progress)
        train = side_by_side(train, synth)
        val = side_by_side(val, synth.subset(np.arange(0)))
        names = names + tuple(f"synthetic:{n}" for n in LABELS)
    return train, val, names


def _load_table(cfg: EncoderPretrainConfig, spec: InputSpec, progress: bool
                ) -> tuple[LabelledSignals, LabelledSignals, tuple[str, ...]]:
    from ecgqa.qa.labels import read_label_table, split_records

    parts = split_records(read_label_table(cfg.labels).records)
    if cfg.max_records > 0:
        parts = {s: recs[:cfg.max_records] for s, recs in parts.items()}
    train_recs = parts["train"]
    if cfg.val_fraction > 0:
        held = set(_held_out_patients([r.patient_id for r in train_recs], cfg))
        val_recs = [r for r in train_recs if r.patient_id in held]
        train_recs = [r for r in train_recs if r.patient_id not in held]
    else:
        val_recs = parts.get(cfg.val_split, [])
    if not train_recs or not val_recs:
        raise ConfigError(f"labels: {cfg.labels} gives {len(train_recs)} training and "
                          f"{len(val_recs)} validation records (split {cfg.val_split!r}); "
                          "set val_fraction > 0 or use a larger table")
    names = table_label_names(train_recs, cfg.label_groups, cfg.min_positives)
    if not names:
        raise ConfigError(f"labels: no code of groups {', '.join(cfg.label_groups)} has "
                          f"{cfg.min_positives} positives among the training records; lower "
                          "min_positives")
    return (load_table_records(train_recs, names, spec, progress, "reading train"),
            load_table_records(val_recs, names, spec, progress, "reading valid"), names)


def _load_synthetic(cfg: EncoderPretrainConfig, spec: InputSpec,
                    progress: bool) -> tuple[LabelledSignals, LabelledSignals]:
    train = load_split(cfg.data, "train", spec, cfg.max_records, progress)
    if cfg.val_fraction > 0:
        is_val = np.isin(train.patient_ids, _held_out_patients(train.patient_ids, cfg))
        return train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))
    try:
        val = load_split(cfg.data, cfg.val_split, spec, cfg.max_records, progress)
    except ValueError as err:
        raise ConfigError(f"val_split: {err}; set val_fraction > 0 to hold out training "
                          "patients instead") from None
    return train, val


def _held_out_patients(patients, cfg: EncoderPretrainConfig) -> np.ndarray:
    """``val_fraction`` of the distinct ``patients`` (at least one), drawn with ``seed``."""
    distinct = np.unique(np.asarray(patients))                          # sorted
    n = max(1, int(round(cfg.val_fraction * len(distinct))))
    return np.random.default_rng(cfg.seed).choice(distinct, n, replace=False)


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
        x = augment(x, cfg.time_shift, cfg.noise_std, gen)             # (b, leads, t)
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


def augment(x: torch.Tensor, time_shift: bool, noise_std: float,
            gen: torch.Generator) -> torch.Tensor:
    """Random circular time shift per ECG and Gaussian noise relative to each lead's SD.

    Args:
        x: ``(b, leads, t)`` training signals; all-zero (masked) leads stay zero.
        time_shift: roll each ECG by a uniform random number of samples.
        noise_std: noise SD as a fraction of each lead's SD (0 = none).
        gen: the run's random generator.
    """
    b, leads, t = x.shape
    if time_shift:
        k = torch.randint(0, t, (b, 1), generator=gen)                  # (b, 1)
        idx = (torch.arange(t)[None, :] - k) % t                        # (b, t)
        x = x.gather(-1, idx[:, None, :].expand(b, leads, t))
    if noise_std > 0:
        sd = x.std(dim=-1, keepdim=True)                                # (b, leads, 1)
        x = x + noise_std * sd * torch.randn(x.shape, generator=gen)
    return x


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
