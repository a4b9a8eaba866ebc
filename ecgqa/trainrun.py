"""What the two training recipes (meta-training and LoRA tuning) share about a run with
``accelerate``: the accelerator, experiment tracking, and gradients added across processes
in task order (so any number of processes computes the same bits as one).

Light on purpose (no learn2learn, no peft): both trainers import it.
"""

from __future__ import annotations

import dataclasses
import json
import netrc
import os
from urllib.parse import urlparse

import torch

from ecgqa.config import ConfigError

REPORT_TO = ("wandb", "tensorboard", "none")


def validate_report_to(value: str) -> None:
    """``train.report_to`` is known and, for tensorboard, installed (fail before loading)."""
    if value not in REPORT_TO:
        raise ConfigError(f"train.report_to {value!r}: use one of {', '.join(REPORT_TO)}")
    if value == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                raise ConfigError("train.report_to tensorboard needs `pip install tensorboard`; "
                                  "or use wandb / none") from None


def make_accelerator(cfg):
    """The run's ``Accelerator``: trackers per ``cfg.train.report_to``, under ``train.out``."""
    from accelerate import Accelerator

    report = None if cfg.train.report_to == "none" else cfg.train.report_to
    return Accelerator(log_with=report, project_dir=cfg.train.out)


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; online when the user has logged in (``WANDB_API_KEY``, or an
    API key as the password of the wandb host's own ``~/.netrc`` entry); else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        entry = netrc.netrc().hosts.get(host or "api.wandb.ai")   # not the `default` entry
    except (OSError, netrc.NetrcParseError):
        entry = None
    return "online" if entry and entry[2] else "offline"         # (login, account, password)


def flatten_config(d: dict, prefix: str = "") -> dict:
    """A nested config as ``{"section.key": scalar or JSON}`` for the trackers."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out |= flatten_config(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool, type(None))) \
                else json.dumps(v)
    return out


def init_trackers(acc, project: str, cfg) -> None:
    """Start the trackers of ``cfg.train.report_to`` (wandb offline unless logged in)."""
    if cfg.train.report_to == "none":
        return
    kwargs = {}
    if cfg.train.report_to == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = {"wandb": {"dir": str(cfg.train.out), "mode": wandb_mode()}}
    acc.init_trackers(project, config=flatten_config(dataclasses.asdict(cfg)),
                      init_kwargs=kwargs)


def sum_across(acc, x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over all processes (itself with one process)."""
    if acc.num_processes == 1:
        return x
    return acc.reduce(x.to(acc.device), reduction="sum").to(x.device)


def flat_gradients(params) -> torch.Tensor:
    """The parameters' gradients as one flat vector (zeros where a gradient is missing)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])


def gather_tasks(acc, rows: torch.Tensor, count: int) -> torch.Tensor:
    """Per-task rows of every process, in task order.

    Process ``r`` of ``P`` holds the rows of tasks ``r, r + P, r + 2P, ...`` (fewer than the
    others when ``count`` is not a multiple of ``P``).

    Args:
        rows: ``(tasks of this process, n)``.
        count: tasks over all processes.

    Returns:
        ``(count, n)``: row ``j`` is task ``j``'s, whichever process ran it.
    """
    world = acc.num_processes
    if world == 1:
        return rows
    slots = -(-count // world)
    padded = torch.zeros(slots, rows.shape[1], dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    every = acc.gather(padded.to(acc.device)).to(rows.device)   # (world * slots, n), rank-major
    order = [(j % world) * slots + j // world for j in range(count)]
    return every[order]


def ordered_sum(rows: torch.Tensor) -> torch.Tensor:
    """``rows[0] + rows[1] + ...`` one row at a time, in float64, in the rows' dtype.

    The additions happen in task order whatever the number of processes, so one process and
    several compute the same bits (an all-reduce adds each process's partial sum, an order
    that depends on the number of processes).
    """
    total = torch.zeros(rows.shape[1:], dtype=torch.float64, device=rows.device)
    for row in rows:
        total += row.to(torch.float64)
    return total.to(rows.dtype)


def set_gradients(params, flat: torch.Tensor) -> None:
    """Give each parameter its slice of the flat vector ``flat`` as its gradient.

    Raises:
        ValueError: ``flat`` is not one vector of the parameters' total size.
    """
    params = list(params)
    total = sum(p.numel() for p in params)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(f"a flat gradient of shape {tuple(flat.shape)} for parameters of "
                         f"{total} values")
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i: i + n].view_as(p).to(p.dtype).clone()
        i += n
