"""Tiny meta-training configs for the tests (the synthetic set is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from ecgqa.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "meta" / "tiny.yaml"


def tiny_overrides(qa: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [f"data.qa={qa}", f"train.out={out}", f"data.cache_dir={cache}", *extra]


def tiny_config(qa: Path, out: Path, cache: Path, *extra: str):
    from ecgqa.meta.trainer import TrainMetaConfig

    return load_config(TrainMetaConfig, TINY, tiny_overrides(qa, out, cache, *extra))
