"""Shared fixtures: the team's real ECG records beside the project (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REAL = SHARED_DATA / "real"


def real_headers() -> list[Path]:
    """Every real record header under ../shared/data/real (the deliberately broken included)."""
    if not REAL.is_dir():
        raise FileNotFoundError(
            f"{REAL} is missing: the tests read the team's real ECG records from ../shared/data "
            "beside the project root")
    return sorted(REAL.glob("*/*.hea"))


BROKEN = {"9190_all_data_is_zero", "9190_low_sample_rate"}
ECGQA = SHARED_DATA / "ecgqa"

# PTB-XL ecg_ids whose signals are in ../shared/data/real (see its README): 1 is the
# PTB-XL record itself, 2-3 the Challenge 2020 copies, 6000-6009 the Challenge 2021 copies.
REAL_PTBXL_RECORDS = {1: "ptbxl/00001_lr", 2: "cinc2020/HR00002", 3: "cinc2020/HR00003",
                      **{6000 + i: f"cinc2021/HR0600{i}" for i in range(10)}}


def write_real_index(path: Path) -> Path:
    """A records index (ecg_id,path) over the real PTB-XL records in ../shared."""
    from ecgqa.qa.resolve import write_index

    return write_index(path, {k: REAL / v for k, v in REAL_PTBXL_RECORDS.items()})


@pytest.fixture(scope="session")
def real() -> Path:
    real_headers()
    return REAL


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory) -> Path:
    """A random tiny adapter (configs/meta/tiny.yaml's model and meta) saved to disk."""
    from ecgqa.config import load_config
    from ecgqa.meta.adapter import save_adapter
    from ecgqa.meta.algorithms import build_algorithm
    from ecgqa.meta.trainer import TrainMetaConfig
    from ecgqa.models.fusion import EcgQaModel

    cfg = load_config(TrainMetaConfig, ROOT / "configs" / "meta" / "tiny.yaml", [])
    model = EcgQaModel.build(cfg.model)
    m = cfg.meta
    algo = build_algorithm(m.algorithm, model.projector, m.inner_lr, m.first_order)
    return save_adapter(model, algo, m, tmp_path_factory.mktemp("adapter") / "tiny-adapter")


@pytest.fixture(scope="session")
def synth_qa(tmp_path_factory) -> Path:
    """A small synthetic ECG-QA set (300 ECGs), built once per session."""
    from ecgqa.synth.dataset import write_synthetic

    out = tmp_path_factory.mktemp("synth") / "synth"
    write_synthetic(out, 300, seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def signal_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("signals")
