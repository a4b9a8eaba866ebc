"""A small synthetic ECG-QA set shared by the meta-learning tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgqa.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "meta" / "tiny.yaml"


@pytest.fixture(scope="session")
def synth_qa(tmp_path_factory) -> Path:
    from ecgqa.synth.dataset import write_synthetic

    out = tmp_path_factory.mktemp("meta") / "synth"
    write_synthetic(out, 300, seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def signal_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("signals")


def tiny_overrides(qa: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [f"data.qa={qa}", f"train.out={out}", f"data.cache_dir={cache}", *extra]


def tiny_config(qa: Path, out: Path, cache: Path, *extra: str):
    from ecgqa.meta.trainer import TrainMetaConfig

    return load_config(TrainMetaConfig, TINY, tiny_overrides(qa, out, cache, *extra))
