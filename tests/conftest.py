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


@pytest.fixture(scope="session")
def real() -> Path:
    real_headers()
    return REAL
