"""What a synthetic record is: its format, ECG-QA's answer strings and its ground truth.

The answer strings (rhythms, SCP codes, noise types, axis classes) and clinical limits
the generator labels by, the :class:`BeatPlan` that :func:`ecgqa.synth.ecg.synthesize`
renders, and the :class:`EcgFacts` (labels + plan) of one record. The numeric features'
names, normal ranges and classes are ECG-QA's, in :mod:`ecgqa.qa.numeric`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgqa.synth.dipole import Beat

FS = 500.0
DURATION_S = 10.0
N_SAMPLES = int(FS * DURATION_S)

RHYTHMS = ("sinus rhythm", "sinus bradycardia", "sinus tachycardia", "sinus arrhythmia",
           "atrial fibrillation", "atrial flutter")
SCP_CODES = RHYTHMS + (
    "first degree av block", "complete right bundle branch block",
    "incomplete right bundle branch block", "complete left bundle branch block",
    "incomplete left bundle branch block", "left anterior fascicular block",
    "left ventricular hypertrophy", "voltage criteria (qrs) for left ventricular hypertrophy",
    "long qt-interval", "non-specific st elevation", "non-specific st depression",
    "inverted t-waves", "ventricular premature complex", "atrial premature complex",
    "prolonged pr interval",
)
LEAD_CODES = ("non-specific st elevation", "non-specific st depression", "inverted t-waves")
NOISE_TYPES = ("baseline drift", "static noise", "burst noise", "electrodes problems")
EXTRA_SYSTOLES = ("ventricular extrasystoles", "supraventricular extrasystoles")
AXIS_CLASSES = ("normal heart axis", "left axis deviation", "right axis deviation",
                "extreme axis deviation")
LONG_QTC_MS = {"male": 450.0, "female": 460.0}
SOKOLOW_LYON_MV = 3.5          # S V1 + max(R V5, R V6)
ST_DEVIATION_MV = 0.1          # |ST shift| at J + 60 ms that counts as elevation/depression
T_INVERSION_MV = 0.1           # a T wave whose negative peak is at least this deep
LEAD_GROUPS = {
    "anterior": ("V1", "V2", "V3", "V4"),
    "inferior": ("II", "III", "aVF"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
CONDUCTION_CODES = {
    "normal": (),
    "rbbb": ("complete right bundle branch block",),
    "irbbb": ("incomplete right bundle branch block",),
    "lbbb": ("complete left bundle branch block",),
    "ilbbb": ("incomplete left bundle branch block",),
    "lafb": ("left anterior fascicular block",),
    "rbbb+lafb": ("complete right bundle branch block", "left anterior fascicular block"),
}
TIMES_S = np.arange(N_SAMPLES) / FS       # (n,) sample times of a record, s
KIND_NORMAL, KIND_PVC, KIND_PAC = 0, 1, 2  # BeatPlan.kinds: conducted, ventricular, atrial


@dataclass(frozen=True, eq=False)
class BeatPlan:
    """Everything :func:`synthesize` renders: beat times, morphologies, atrial activity.

    Attributes:
        onsets_s: ``(beats,)`` QRS onset times; some fall outside the 10 s window.
        kinds: ``(beats,)`` 0 conducted beat, 1 ventricular, 2 atrial premature beat.
        normal, pvc, pac: the beat morphologies (``pvc``/``pac`` None when unused).
        atrial: ``"sinus"``, ``"fibrillation"`` or ``"flutter"``.
        flutter: ``(first F-wave onset s, F-wave cycle s)`` for flutter, else None.
        atrial_vector: ``(3,)`` direction and size (mV) of f or F waves.
    """

    onsets_s: np.ndarray
    kinds: np.ndarray
    normal: Beat
    pvc: Beat | None = None
    pac: Beat | None = None
    atrial: str = "sinus"
    flutter: tuple[float, float] | None = None
    atrial_vector: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass(frozen=True)
class EcgFacts:
    """Ground truth of one synthetic record, in ECG-QA's answer strings.

    Attributes:
        scp_codes: exactly one rhythm from ``RHYTHMS`` first, then other ``SCP_CODES``.
        scp_leads: for ``LEAD_CODES`` present, the leads showing them.
        noise: noise type (``NOISE_TYPES``) -> affected leads; empty when clean.
        extra_systole: None or one of ``EXTRA_SYSTOLES``.
        heart_axis: one of ``AXIS_CLASSES``, from ``axis_deg``.
        axis_deg: frontal angle of the mean (area) QRS vector of the conducted beats.
        numeric: ``NUMERIC_FEATURES`` -> ms (no P duration / PR in fibrillation, flutter).
        numeric_class: the same keys -> one of ``NUMERIC_CLASSES`` per ``NORMAL_RANGES``
            (:mod:`ecgqa.qa.numeric`).
        heart_rate_bpm: 60000 / mean RR of the beats inside the 10 s.
        age, sex: demographics (``"male"`` / ``"female"``).
        plan: what :func:`synthesize` renders (not part of the labels).
    """

    scp_codes: tuple[str, ...]
    scp_leads: dict[str, tuple[str, ...]]
    noise: dict[str, tuple[str, ...]]
    extra_systole: str | None
    heart_axis: str
    axis_deg: float
    numeric: dict[str, float]
    numeric_class: dict[str, str]
    heart_rate_bpm: float
    age: int
    sex: str
    plan: BeatPlan = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-serialisable labels (everything but ``plan``)."""
        return {
            "scp_codes": list(self.scp_codes),
            "scp_leads": {k: list(v) for k, v in self.scp_leads.items()},
            "noise": {k: list(v) for k, v in self.noise.items()},
            "extra_systole": self.extra_systole,
            "heart_axis": self.heart_axis,
            "axis_deg": float(self.axis_deg),
            "numeric": {k: float(v) for k, v in self.numeric.items()},
            "numeric_class": dict(self.numeric_class),
            "heart_rate_bpm": float(self.heart_rate_bpm),
            "age": int(self.age),
            "sex": self.sex,
        }


def axis_class(deg: float) -> str:
    """Heart-axis class: normal -30..90, left -90..-30, right 90..180, extreme -180..-90."""
    deg = (deg + 180.0) % 360.0 - 180.0
    if -30.0 <= deg <= 90.0:
        return AXIS_CLASSES[0]
    if -90.0 <= deg < -30.0:
        return AXIS_CLASSES[1]
    return AXIS_CLASSES[2] if deg > 90.0 else AXIS_CLASSES[3]

