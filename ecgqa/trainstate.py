"""Training checkpoints: safetensors + JSON, written atomically, never pickled.

A checkpoint is a folder ``checkpoints/step-00000040/`` holding

- ``algo.safetensors``: the meta-parameters (projector init, Meta-SGD rates);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors and the rest;
- ``rng.safetensors``: torch's RNG state(s);
- ``state.json``: the step and the running metrics;
- ``config.yaml``: the run's resolved config.

It is written to a temporary folder and renamed into place, then ``checkpoints/latest``
(a one-line text file) is replaced atomically, so a kill at any moment leaves either the
previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, state = {}, {}
    for idx, st in sd["state"].items():
        state[str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                state[str(idx)][k] = v
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _optimizer_join(tensors: dict, rest: dict) -> dict:
    state: dict = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(root: str | os.PathLike, step: int, algo: torch.nn.Module,
                    opt: torch.optim.Optimizer, state: dict, keep: int = 2,
                    texts: dict[str, str] | None = None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep``.

    Args:
        texts: extra text files for the checkpoint folder (name -> content).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in algo.state_dict().items()},
              str(tmp / "algo.safetensors"))
    tensors, rest = _optimizer_split(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(rest))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
    for name, text in (texts or {}).items():
        (tmp / name).write_text(text)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest = root / f".latest.tmp{os.getpid()}"
    latest.write_text(final.name + "\n")
    os.replace(latest, root / "latest")
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    p = Path(root) / "latest"
    if not p.is_file():
        return None
    folder = Path(root) / p.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def load_checkpoint(folder: str | os.PathLike, algo: torch.nn.Module,
                    opt: torch.optim.Optimizer) -> dict:
    """Restore meta-parameters, optimizer and RNG; returns ``state.json``'s contents."""
    folder = Path(folder)
    algo.load_state_dict(load_file(str(folder / "algo.safetensors")))
    opt.load_state_dict(_optimizer_join(load_file(str(folder / "optimizer.safetensors")),
                                        json.loads((folder / "optimizer.json").read_text())))
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return json.loads((folder / "state.json").read_text())
