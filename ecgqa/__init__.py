"""ecgqa: few-shot question answering on electrocardiograms with frozen language models.

Data flows one way: ECG file -> ``read_record`` (canonical 12-lead, mV, resampled) ->
pretrained ECG encoder -> fusion projector -> ECG tokens in the prompt -> frozen LLM.
"""

__version__ = "0.1.0"

from ecgqa.chat import Answer, ImageSession, Session  # noqa: E402
from ecgqa.meta.adapter import load_adapter  # noqa: E402
from ecgqa.records.leads import LEAD_SUBSETS, STANDARD_LEADS, canonical_lead_name  # noqa: E402
from ecgqa.records.measure import Measurements, measure  # noqa: E402
from ecgqa.records.plot import PlotStyle, plot_ecg  # noqa: E402
from ecgqa.records.read import EcgRecord, EcgRecordError, read_record  # noqa: E402

__all__ = [
    "__version__",
    "Answer",
    "Session",
    "ImageSession",
    "load_adapter",
    "EcgRecord",
    "EcgRecordError",
    "LEAD_SUBSETS",
    "Measurements",
    "PlotStyle",
    "STANDARD_LEADS",
    "canonical_lead_name",
    "measure",
    "plot_ecg",
    "read_record",
]
