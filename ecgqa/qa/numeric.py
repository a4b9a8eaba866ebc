"""ECG-QA's numeric features: their names, adult normal ranges and answer classes.

A numeric-feature question asks whether a record's value (RR, P, PR, QRS, QT, QTc) is
below, within or above the normal range; :func:`classify` gives the answer. The
synthetic ECGs (:mod:`ecgqa.synth`) and the questions written from measurements
(:mod:`ecgqa.qa.labelqa`) both classify against these ranges.

Example:
    >>> classify("qrs duration", 124.0)
    'above the normal range'
"""

from __future__ import annotations

NUMERIC_FEATURES = ("rr interval", "p duration", "pr interval", "qrs duration", "qt interval",
                    "qt corrected")
NUMERIC_CLASSES = ("below the normal range", "within the normal range", "above the normal range")
# Adult normal limits (ms). RR 600-1000 = heart rate 60-100 bpm; P < 120; PR 120-200;
# QRS 70-110 (AHA/ACCF/HRS 2009: 110-119 ms is incomplete bundle branch block);
# QT 350-450 (uncorrected); QTc (Bazett) 350-450, the male limit; see docs/synth.md.
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "rr interval": (600.0, 1000.0),
    "p duration": (80.0, 120.0),
    "pr interval": (120.0, 200.0),
    "qrs duration": (70.0, 110.0),
    "qt interval": (350.0, 450.0),
    "qt corrected": (350.0, 450.0),
}


def classify(feature: str, value_ms: float) -> str:
    """``NUMERIC_CLASSES`` entry of ``value_ms`` against ``NORMAL_RANGES[feature]``."""
    low, high = NORMAL_RANGES[feature]
    if value_ms < low:
        return NUMERIC_CLASSES[0]
    return NUMERIC_CLASSES[2] if value_ms > high else NUMERIC_CLASSES[1]
