"""Cross-modal distillation: an image encoder that reads a printed ECG as the signal encoder
reads the signal.

No pretrained vision weights can be downloaded here, so the knowledge is made from what the
project has: a signal encoder trained on real ECGs (the teacher) and the renderer. For each
labelled record::

    record --read_signals--> (leads, t) --frozen signal encoder--> tokens (n, d)   teacher
    record --render_image (varied look)--> pixels --cnn_tokens--> tokens (n, d)    student

The student (:class:`ecgqa.image_qa.encoders.TokenImageEncoder`) minimises the mean squared
error of the standardised tokens plus ``pooled_weight`` x (1 - cosine) of the mean-pooled
tokens, on ``variants`` varied renders of every training record. Its outputs are then in
the teacher's feature space, so a projector trained on signal tokens can start from it.

Reported (``metrics.json``): validation token MSE and pooled cosine on plain and varied
renders of the validation records, and the linear probe of the label table's codes (fit on
training records, AUROC on validation ones) on the student's image features beside the
teacher's signal features of the same records.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgqa.config import ConfigError, check_ranges, expand_path, field, save_config
from ecgqa.image_qa.encoders import TokenImageEncoder
from ecgqa.image_qa.render import Variation, render_image

FORMAT = "ecgqa-image-encoder"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class DistillConfig:
    """Settings of one distillation run (YAML in ``configs/image/``)."""

    labels: str = field("", help="label table of the records (CSV with ecg_id, path, "
                        "patient_id, strat_fold and code groups, or a Challenge folder); its "
                        "train split is fitted, its valid split reported")
    teacher: str = field("default", help="signal encoder whose tokens are reproduced: "
                         "'default' (the shipped one) or a folder from `ecgqa encoder pretrain`")
    out: str = field("runs/image-encoder", help="folder the image encoder is written to")
    image_size: list[int] = field([256, 512], help="[height, width] of the rendered images "
                                  "(use the LoRA config's model.image_size)")
    widths: list[int] = field([32, 64, 128, 128, 256], help="channels of the conv blocks "
                              "(each halves the resolution)")
    depth: int = field(1, help="convolutions per block (the first has stride 2)")
    heads: int = field(4, help="attention heads of the token pooling")
    variants: int = field(2, help="varied renders of each training record (look drawn per "
                          "render: grid, line, rotation, blur, noise, resolution)")
    epochs: int = field(6, help="passes over the training renders")
    batch_size: int = field(16, help="images per optimisation step")
    lr: float = field(1e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    weight_decay: float = field(1e-2, help="AdamW weight decay")
    pooled_weight: float = field(1.0, help="weight of (1 - cosine) of the mean-pooled tokens")
    min_positives: int = field(10, help="probe a code with this many training positives (and "
                               "half as many validation ones)")
    seed: int = field(0, help="seed of renders, initialisation and shuffling")
    workers: int = field(1, help="processes rendering images")
    max_records: int = field(0, help="use at most this many records per split (0 = all)")
    num_threads: int = field(0, help="torch CPU threads (0 = torch's default)")


def validate(cfg: DistillConfig) -> None:
    """Raise :class:`ConfigError` with the fix before any data or model is loaded."""
    if not cfg.labels or not expand_path(cfg.labels).exists():
        raise ConfigError(f"labels: {cfg.labels or '(unset)'} not found; give a label CSV "
                          "(e.g. ../shared/data/ptbxl-zscore-250hz/labels.csv)")
    if len(cfg.image_size) != 2 or not all(16 <= int(v) <= 2048 for v in cfg.image_size):
        raise ConfigError(f"image_size {cfg.image_size}: give [height, width], 16..2048 each")
    checks = [("widths", bool(cfg.widths) and all(w >= 1 for w in cfg.widths)),
              ("depth", cfg.depth >= 1), ("heads", cfg.heads >= 1),
              ("variants", cfg.variants >= 1), ("epochs", cfg.epochs >= 1),
              ("batch_size", cfg.batch_size >= 2), ("lr", cfg.lr > 0),
              ("weight_decay", cfg.weight_decay >= 0), ("pooled_weight", cfg.pooled_weight >= 0),
              ("min_positives", cfg.min_positives >= 2), ("workers", cfg.workers >= 1),
              ("max_records", cfg.max_records >= 0), ("num_threads", cfg.num_threads >= 0)]
    check_ranges(cfg, checks)
    if not cfg.out:
        raise ConfigError("out: set the folder the image encoder is written to")
    out = expand_path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out: {out} exists and is not an empty folder")


# --------------------------------------------------------------------------- data


def _render_job(job) -> np.ndarray:
    """One image ``(H, W, 3)`` uint8: ``(path, size, seed, index, variant, varied)``."""
    from ecgqa.records.read import read_record

    path, size, seed, i, v, varied = job
    rng = np.random.default_rng([seed, i, v])
    image = render_image(read_record(path), tuple(size), Variation() if varied else None, rng)
    return np.asarray(image, dtype=np.uint8)


def render_records(paths, size, seed: int, variants: int, varied: bool, workers: int = 1,
                   progress: bool = False, desc: str = "rendering") -> np.ndarray:
    """``variants`` renders of each record, ``(len(paths) * variants, H, W, 3)`` uint8,
    record-major. Render ``v`` of record ``i`` depends only on ``(seed, i, v)``."""
    from tqdm import tqdm

    from ecgqa.workpool import ordered_map

    jobs = [(str(p), list(size), seed, i, v, varied) for i, p in enumerate(paths)
            for v in range(variants)]
    out = np.zeros((len(jobs), int(size[0]), int(size[1]), 3), dtype=np.uint8)
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False)
    for k, image in enumerate(ordered_map(_render_job, jobs, workers)):
        out[k] = image
        bar.update()
    bar.close()
    return out


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(b, H, W, 3)`` -> float ``(b, 3, H, W)`` in [-1, 1] (as ``preprocess``)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def teacher_tokens(teacher: nn.Module, paths, batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """The frozen signal encoder's tokens of each record, float32 ``(n, n_tokens, d)``."""
    from ecgqa.models.encoders.targets import read_signals

    x, mask = read_signals(list(paths), teacher.input_spec, progress, "reading signals")
    teacher.eval()
    out = [teacher(torch.from_numpy(x[s:s + batch_size]), torch.from_numpy(mask[s:s + batch_size]))
           for s in range(0, len(x), batch_size)]
    return torch.cat(out).float().numpy()


@torch.no_grad()
def image_tokens(student: nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The student's tokens (teacher units) of uint8 images, float32 ``(n, n_tokens, d)``."""
    was = student.training
    student.eval()
    out = [student(to_pixels(images[s:s + batch_size])) for s in range(0, len(images), batch_size)]
    student.train(was)
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- training


def distill_loss(pred: torch.Tensor, target: torch.Tensor, pooled_weight: float) -> torch.Tensor:
    """MSE of standardised tokens + ``pooled_weight`` x (1 - cosine of mean-pooled tokens).

    Args:
        pred, target: ``(b, n, d)`` standardised tokens.
    """
    mse = (pred - target).pow(2).mean()
    cos = nn.functional.cosine_similarity(pred.mean(1), target.mean(1), dim=-1).mean()
    return mse + pooled_weight * (1.0 - cos)


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5 % of the steps, then cosine to 5 % of ``peak``."""
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t)))


def fit(cfg: DistillConfig, student: TokenImageEncoder, images: np.ndarray,
        owner: np.ndarray, targets: torch.Tensor, progress: bool = False) -> list[float]:
    """Train ``student`` on ``images`` (render k shows record ``owner[k]``) against the
    standardised ``targets`` ``(records, n, d)``. Returns the loss of each epoch."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = len(images) // cfg.batch_size
    total, step, losses = cfg.epochs * per_epoch, 0, []
    bar = tqdm(total=total, desc="distilling", unit="step", disable=not progress)
    student.train()
    for _ in range(cfg.epochs):
        order, epoch_loss = torch.randperm(len(images), generator=gen).numpy(), 0.0
        for b in range(per_epoch):
            idx = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg.lr)
            loss = distill_loss(student.standardised(to_pixels(images[idx])),
                                targets[owner[idx]], cfg.pooled_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            epoch_loss += float(loss.detach()) / per_epoch
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        losses.append(epoch_loss)
    bar.close()
    return losses


def token_agreement(pred: np.ndarray, target: np.ndarray, mean: np.ndarray,
                    std: np.ndarray) -> dict:
    """Standardised token MSE and the mean cosine of mean-pooled tokens."""
    p, t = (pred - mean) / std, (target - mean) / std
    pp, tp = p.mean(1), t.mean(1)
    cos = (pp * tp).sum(-1) / (np.linalg.norm(pp, axis=-1) * np.linalg.norm(tp, axis=-1) + 1e-12)
    return {"token_mse": float(((p - t) ** 2).mean()), "pooled_cosine": float(cos.mean())}


# --------------------------------------------------------------------------- the run


def distill(cfg: DistillConfig, progress: bool = True) -> Path:
    """Distil the teacher's tokens into a ``cnn_tokens`` image encoder and save it.

    Returns:
        The output folder: ``config.json``, ``model.safetensors``, ``distill_config.yaml``,
        ``metrics.json``; written through a temporary folder renamed at the end.
    """
    from ecgqa.models.encoders.checkpoint import load_encoder
    from ecgqa.outputs import atomic_folder

    validate(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    train, valid, names = _records(cfg)
    teacher = load_encoder(cfg.teacher)
    t_train, t_valid = (teacher_tokens(teacher, [r.path for r in recs], progress=progress)
                        for recs in (train, valid))
    mean, std = t_train.mean((0, 1)), t_train.std((0, 1)) + 1e-6            # (d,)
    size = [int(v) for v in cfg.image_size]
    paths = [r.path for r in train]
    images = render_records(paths, size, cfg.seed, cfg.variants, True, cfg.workers, progress,
                            "rendering train")
    owner = np.repeat(np.arange(len(train)), cfg.variants)
    student = TokenImageEncoder(cfg.widths, teacher.out_dim, cfg.depth, teacher.n_tokens,
                                cfg.heads)
    student.mean.copy_(torch.from_numpy(mean))
    student.std.copy_(torch.from_numpy(std))
    targets = torch.from_numpy((t_train - mean) / std)
    vpaths = [r.path for r in valid]
    plain = render_records(vpaths, size, cfg.seed + 1, 1, False, cfg.workers, progress,
                           "rendering valid")
    untrained = (image_tokens(student, images[::cfg.variants]), image_tokens(student, plain))
    losses = fit(cfg, student, images, owner, targets, progress)
    fit_seconds = time.perf_counter() - start
    varied = render_records(vpaths, size, cfg.seed + 1, 1, True, cfg.workers, progress,
                            "rendering valid (varied)")
    s_plain, s_varied = image_tokens(student, plain), image_tokens(student, varied)
    s_train = image_tokens(student, images[::cfg.variants])     # one render per record
    metrics = {
        "train_records": len(train), "valid_records": len(valid), "train_images": len(images),
        "epoch_loss": losses, "seconds": round(time.perf_counter() - start, 1),
        "fit_seconds": round(fit_seconds, 1),
        "valid_plain": token_agreement(s_plain, t_valid, mean, std),
        "valid_varied": token_agreement(s_varied, t_valid, mean, std),
        "probe": _probe(names, train, valid, {
            "signal": (t_train, t_valid), "image_plain": (s_train, s_plain),
            "image_varied": (s_train, s_varied), "image_untrained": untrained}),
    }
    config = {"format": FORMAT, "format_version": 1, "name": "cnn_tokens",
              "kwargs": {"widths": list(cfg.widths), "out_dim": teacher.out_dim,
                         "depth": cfg.depth, "n_tokens": teacher.n_tokens, "heads": cfg.heads},
              "image_size": size,
              "teacher": {"source": str(cfg.teacher),
                          "provenance": getattr(teacher, "provenance", {}) or {}}}
    out = expand_path(cfg.out)
    with atomic_folder(out) as tmp:
        save_image_encoder(student, config, tmp)
        save_config(cfg, tmp / "distill_config.yaml")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return out


def _records(cfg: DistillConfig):
    from ecgqa.models.encoders.report import TABLE_GROUPS
    from ecgqa.models.encoders.targets import table_label_names
    from ecgqa.qa.labels import read_label_table, split_records

    try:
        parts = split_records(read_label_table(cfg.labels).records)
    except ValueError as err:
        raise ConfigError(f"labels: {err}") from None
    if cfg.max_records:
        parts = {s: recs[:cfg.max_records] for s, recs in parts.items()}
    train, valid = parts["train"], parts["valid"] or parts["test"]
    if len(train) < cfg.batch_size or not valid:
        raise ConfigError(f"labels: {cfg.labels} gives {len(train)} training and {len(valid)} "
                          f"validation records; distillation needs >= batch_size "
                          f"({cfg.batch_size}) and >= 1")
    in_valid = set(table_label_names(valid, TABLE_GROUPS, max(1, cfg.min_positives // 2)))
    names = [n for n in table_label_names(train, TABLE_GROUPS, cfg.min_positives)
             if n in in_valid]
    return train, valid, names


def _probe(names, train, valid, columns: dict) -> dict:
    """Linear probe of the codes on each column's ``(train tokens, valid tokens)``: the
    teacher's signal features, the student's image features (plain and varied valid
    renders) and the untrained student's."""
    from ecgqa.models.encoders.probe import probe_split
    from ecgqa.models.encoders.report import TABLE_GROUPS, group_macro
    from ecgqa.models.encoders.targets import table_targets

    if not names:
        return {"codes": 0}
    y_tr, k_tr = (np.stack(v) for v in zip(*(table_targets(r, names) for r in train)))
    y_va, k_va = (np.stack(v) for v in zip(*(table_targets(r, names) for r in valid)))
    out = {"codes": len(names)}
    for label, (f_tr, f_va) in columns.items():
        res = probe_split(f_tr.mean(1).astype(np.float64), y_tr, f_va.mean(1).astype(np.float64),
                          y_va, k_tr, k_va)
        groups = {g: round(group_macro(res, names, g)[0], 4) for g in TABLE_GROUPS}
        out[label] = {"macro_auroc": round(res.macro_auroc, 4), "groups": groups,
                      "per_code": {names[j]: round(a, 4) for j, a in res.per_label.items()}}
    return out


def save_image_encoder(encoder: nn.Module, config: dict, folder: Path) -> None:
    """``config.json`` + ``model.safetensors`` (nothing pickled)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    os.chmod(folder / WEIGHTS_NAME, 0o644)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")


def read_image_encoder_config(folder: str | os.PathLike) -> dict:
    """The ``config.json`` of a distilled image encoder, checked (:class:`ConfigError`)."""
    from ecgqa.models.encoders.checkpoint import read_json
    from ecgqa.registry import IMAGE_ENCODERS

    path = expand_path(folder) / CONFIG_NAME
    conf = read_json(path, ConfigError)
    if (not isinstance(conf, dict) or conf.get("format") != FORMAT
            or conf.get("name") not in IMAGE_ENCODERS or not isinstance(conf.get("kwargs"), dict)):
        raise ConfigError(f"{path}: not an image encoder written by `ecgqa encoder "
                          "distill-image` (format, name and kwargs)")
    return conf


def load_image_encoder(folder: str | os.PathLike) -> tuple[nn.Module, dict]:
    """A distilled image encoder (``eval()``) and its config."""
    from ecgqa.models.encoders.checkpoint import build_fitting, read_safetensors
    from ecgqa.registry import IMAGE_ENCODERS

    conf = read_image_encoder_config(folder)
    path = expand_path(folder) / WEIGHTS_NAME
    state = read_safetensors(path, ConfigError)
    try:
        encoder = build_fitting(lambda: IMAGE_ENCODERS.build(conf["name"], **conf["kwargs"]),
                                state, path, ConfigError, prefixes=False,
                                what=f"image encoder {conf['name']}")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path.parent}: bad image encoder kwargs ({err})") from None
    encoder.load_state_dict(state)
    return encoder.eval(), conf


def summary(out: Path) -> str:
    """One line about a finished run (for the CLI)."""
    m = json.loads((out / "metrics.json").read_text())
    p = m["probe"]
    probe = (f"probe macro AUROC image {p['image_plain']['macro_auroc']:.3f} (varied "
             f"{p['image_varied']['macro_auroc']:.3f}, untrained "
             f"{p['image_untrained']['macro_auroc']:.3f}) vs signal "
             f"{p['signal']['macro_auroc']:.3f}"
             if p.get("codes") else "no code to probe")
    return (f"{out}: cnn_tokens image encoder, valid pooled cosine "
            f"{m['valid_plain']['pooled_cosine']:.3f}, {probe}, {m['seconds']:.0f} s")

