"""ecgqa: few-shot question answering on electrocardiograms with frozen language models.

Data flows one way: ECG file -> ``read_record`` (canonical 12-lead, mV, resampled) ->
pretrained ECG encoder -> fusion projector -> ECG tokens in the prompt -> frozen LLM.

The public names below are imported on first use (PEP 562), so ``import ecgqa.records``
or ``import ecgqa.bench.metrics`` does not load the chat and meta-learning layers (and
learn2learn with them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ecgqa.assets import package_version

__version__ = package_version()

_PUBLIC = {
    "Answer": "ecgqa.chat",
    "Session": "ecgqa.chat",
    "ImageSession": "ecgqa.chat",
    "load_adapter": "ecgqa.meta.adapter",
    "EcgRecord": "ecgqa.records.read",
    "EcgRecordError": "ecgqa.records.read",
    "read_record": "ecgqa.records.read",
    "LEAD_SUBSETS": "ecgqa.records.leads",
    "STANDARD_LEADS": "ecgqa.records.leads",
    "canonical_lead_name": "ecgqa.records.leads",
    "Measurements": "ecgqa.records.measure",
    "measure": "ecgqa.records.measure",
    "PlotStyle": "ecgqa.records.plot",
    "plot_ecg": "ecgqa.records.plot",
}

__all__ = [
    "__version__",
    "Answer",
    "Session",
    "ImageSession",
    "load_adapter",
    "EcgRecord",
    "EcgRecordError",
    "read_record",
    "LEAD_SUBSETS",
    "STANDARD_LEADS",
    "canonical_lead_name",
    "Measurements",
    "measure",
    "PlotStyle",
    "plot_ecg",
]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecgqa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from ecgqa.chat import Answer, ImageSession, Session
    from ecgqa.meta.adapter import load_adapter
    from ecgqa.records.leads import LEAD_SUBSETS, STANDARD_LEADS, canonical_lead_name
    from ecgqa.records.measure import Measurements, measure
    from ecgqa.records.plot import PlotStyle, plot_ecg
    from ecgqa.records.read import EcgRecord, EcgRecordError, read_record
