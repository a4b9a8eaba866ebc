"""Header metadata: age, sex, diagnoses and SNOMED-CT codes from WFDB comment lines.

Comment conventions differ by source; all of these are understood:

- PhysioNet/CinC Challenge: ``# Age: 74``, ``# Sex: Male``, ``# Dx: 426783006,59118001``
- PTB Diagnostic: ``# age: 81``, ``# Reason for admission: Myocardial infarction``
- MIT-BIH: ``# 69 M 1085 1629 x1`` (age, sex, then recording details)
- CODE-15% (Challenge 2025): ``# Age: 43``, ``# Chagas label: False``
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# PhysioNet/CinC Challenge 2020-2021 scored SNOMED-CT classes (code -> abbreviation, name).
SNOMED_NAMES: dict[str, tuple[str, str]] = {
    "164889003": ("AF", "atrial fibrillation"),
    "164890007": ("AFL", "atrial flutter"),
    "6374002": ("BBB", "bundle branch block"),
    "426627000": ("Brady", "bradycardia"),
    "733534002": ("CLBBB", "complete left bundle branch block"),
    "713427006": ("CRBBB", "complete right bundle branch block"),
    "270492004": ("IAVB", "1st degree AV block"),
    "713426002": ("IRBBB", "incomplete right bundle branch block"),
    "39732003": ("LAD", "left axis deviation"),
    "445118002": ("LAnFB", "left anterior fascicular block"),
    "164909002": ("LBBB", "left bundle branch block"),
    "251146004": ("LQRSV", "low QRS voltages"),
    "698252002": ("NSIVCB", "nonspecific intraventricular conduction disorder"),
    "426783006": ("NSR", "sinus rhythm"),
    "284470004": ("PAC", "premature atrial contraction"),
    "10370003": ("PR", "pacing rhythm"),
    "365413008": ("PRWP", "poor R wave progression"),
    "427172004": ("PVC", "premature ventricular contractions"),
    "164947007": ("LPR", "prolonged PR interval"),
    "111975006": ("LQT", "prolonged QT interval"),
    "164917005": ("QAb", "Q wave abnormal"),
    "47665007": ("RAD", "right axis deviation"),
    "59118001": ("RBBB", "right bundle branch block"),
    "427393009": ("SA", "sinus arrhythmia"),
    "426177001": ("SB", "sinus bradycardia"),
    "427084000": ("STach", "sinus tachycardia"),
    "63593006": ("SVPB", "supraventricular premature beats"),
    "164934002": ("TAb", "T wave abnormal"),
    "59931005": ("TInv", "T wave inversion"),
    "17338001": ("VPB", "ventricular premature beats"),
}

_KEYED = re.compile(r"^\s*([A-Za-z][\w ()/.\-]*?)\s*:\s*(.*)$")
_MITBIH_PATIENT = re.compile(r"^\s*(\d{1,3})\s+([MF])\b")
_DIAGNOSTIC_KEY = re.compile(r"diagnos|reason for admission|infarction \(localization\)", re.I)


@dataclass(frozen=True)
class EcgMeta:
    """Metadata of one record.

    Attributes:
        age: years, or None when absent/unknown.
        sex: ``"male"``, ``"female"`` or None.
        dx_codes: SNOMED-CT codes from a ``Dx:`` comment, in file order.
        diagnoses: diagnostic statements from keyed comments (``Reason for admission: ...``).
        fields: every ``key: value`` comment, keys as written.
        comments: every comment line, stripped of ``#``.
        record_name: record name from the header.
        source_format: e.g. ``"wfdb (format 212)"``, or ``"wfdb-mat (format 16)"`` for
            Challenge and wfdb2mat ``.mat`` files.
        original_fs: sampling rate in the file, Hz.
        original_leads: channel names as written in the file.
        base_datetime: recording date/time from the header, if any.
        warnings: what the reader repaired or found implausible (gain, flat leads ...).
    """

    age: float | None = None
    sex: str | None = None
    dx_codes: tuple[str, ...] = ()
    diagnoses: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)
    comments: tuple[str, ...] = ()
    record_name: str = ""
    source_format: str = ""
    original_fs: float | None = None
    original_leads: tuple[str, ...] = ()
    base_datetime: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def dx_names(self) -> tuple[str, ...]:
        """Readable names of ``dx_codes`` (the code itself where it is not in the table)."""
        return tuple(SNOMED_NAMES.get(c, (c, c))[1] for c in self.dx_codes)


def parse_comments(comments: list[str]) -> EcgMeta:
    """Parse WFDB header comment lines (``#`` already stripped or not).

    Example:
        >>> m = parse_comments(["Age: 74", "Sex: Male", "Dx: 426783006"])
        >>> m.age, m.sex, m.dx_codes, m.dx_names
        (74.0, 'male', ('426783006',), ('sinus rhythm',))
    """
    lines = tuple(c.strip().lstrip("#").strip() for c in comments if c.strip().lstrip("#").strip())
    fields: dict[str, str] = {}
    age = sex = None
    for line in lines:
        m = _KEYED.match(line)
        if m:
            fields.setdefault(m.group(1).strip(), m.group(2).strip())
            continue
        m = _MITBIH_PATIENT.match(line)
        if m and age is None:
            age, sex = _age(m.group(1)), _sex(m.group(2))
    lower = {k.lower(): v for k, v in fields.items()}
    age = _age(lower["age"]) if "age" in lower else age
    sex = _sex(lower["sex"]) if "sex" in lower else sex
    dx = tuple(c for c in re.split(r"[,;\s]+", lower.get("dx", "")) if c)
    diagnoses = tuple(f"{k}: {v}" for k, v in fields.items()
                      if _DIAGNOSTIC_KEY.search(k) and v and v.lower() not in ("n/a", "unknown"))
    return EcgMeta(age=age, sex=sex, dx_codes=dx, diagnoses=diagnoses, fields=fields,
                   comments=lines)


def _age(text: str) -> float | None:
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text)
    if not m:
        return None
    value = float(m.group(1))
    return value if math.isfinite(value) and 0 <= value <= 130 else None


def _sex(text: str) -> str | None:
    t = text.strip().lower()
    if t in ("m", "male", "man"):
        return "male"
    if t in ("f", "female", "woman"):
        return "female"
    return None
