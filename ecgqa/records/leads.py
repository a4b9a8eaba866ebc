"""Canonical 12-lead names, name normalisation, lead subsets and lead masks.

Every reader path goes through :func:`canonical_lead_name`, so the rest of ecgqa only
ever sees ``I II III aVR aVL aVF V1 .. V6`` for the standard leads, whatever spelling
the source used (``i``, ``AVR``, ``avr``, ``DII``, ``MLII``, ``Lead V1`` ...).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS: tuple[str, ...] = STANDARD_LEADS[:6]
PRECORDIAL_LEADS: tuple[str, ...] = STANDARD_LEADS[6:]

# Named subsets used by the benchmark's lead ablations and by `--leads` options.
LEAD_SUBSETS: dict[str, tuple[str, ...]] = {
    "12-lead": STANDARD_LEADS,
    "limb": LIMB_LEADS,
    "precordial": PRECORDIAL_LEADS,
    "I": ("I",),
    "II": ("II",),
    "I+II": ("I", "II"),
    "I+II+V1": ("I", "II", "V1"),
    "I+II+V2": ("I", "II", "V2"),
}

_UPPER_TO_CANONICAL = {name.upper(): name for name in STANDARD_LEADS}
# Spellings seen in public ECG sources that mean a standard lead.
_ALIASES = {
    "DI": "I", "DII": "II", "DIII": "III",          # Brazilian / CODE naming
    "MLI": "I", "MLII": "II", "MLIII": "III",        # Mason-Likar modified limb leads (MIT-BIH)
    "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
}
_PREFIX = re.compile(r"^(LEAD|ECG)[\s_-]*", re.IGNORECASE)


def canonical_lead_name(name: str) -> str:
    """Return the canonical spelling of a lead name.

    Standard leads are matched case-insensitively and with common prefixes and aliases
    (``lead ii``, ``ECG_V1``, ``DII``, ``MLII``); any other channel keeps its stripped
    original name, so a Frank lead ``vx`` stays ``vx``.

    Args:
        name: lead name as written in the source file.

    Returns:
        ``"I"``, ``"aVR"``, ``"V1"`` ... or the stripped input when it is not a standard lead.

    Example:
        >>> canonical_lead_name("avr"), canonical_lead_name("MLII"), canonical_lead_name("vx")
        ('aVR', 'II', 'vx')
    """
    stripped = name.strip()
    key = _PREFIX.sub("", stripped).replace(" ", "").replace("_", "").upper()
    if key in _UPPER_TO_CANONICAL:
        return _UPPER_TO_CANONICAL[key]
    if key in _ALIASES:
        return _ALIASES[key]
    return stripped


def is_standard_lead(name: str) -> bool:
    """True when ``name`` is one of the 12 standard leads in canonical spelling."""
    return name in _UPPER_TO_CANONICAL.values()


def parse_leads(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Turn a lead selection into a tuple of canonical names.

    Args:
        spec: ``None`` (keep the record's leads), a subset name from ``LEAD_SUBSETS``
            (``"limb"``, ``"12-lead"``), a comma-separated string (``"I,II,V1"``) or a sequence.

    Returns:
        Canonical lead names in the requested order, or ``None``.

    Raises:
        ValueError: on an empty selection or a lead named twice.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in LEAD_SUBSETS:
            return LEAD_SUBSETS[spec]
        items: Iterable[str] = [s for s in spec.split(",")]
    else:
        items = spec
    leads = tuple(canonical_lead_name(s) for s in items if s.strip())
    if not leads:
        raise ValueError(f"empty lead selection {_short(repr(spec))}; give names like "
                         "'I,II,V1' or 'limb'")
    dupes = sorted(lead for lead, n in Counter(leads).items() if n > 1)
    if dupes:
        shown = ", ".join(dupes[:5]) + (f" and {len(dupes) - 5} more" if len(dupes) > 5 else "")
        raise ValueError(f"lead(s) {shown} named twice in {_short(repr(spec))}")
    return leads


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def lead_mask(present: Sequence[str], wanted: Sequence[str] = STANDARD_LEADS) -> np.ndarray:
    """Boolean mask over ``wanted``: True where that lead is among ``present``.

    Example:
        >>> lead_mask(["I", "II"], ["I", "II", "V1"]).tolist()
        [True, True, False]
    """
    have = set(present)
    return np.array([lead in have for lead in wanted], dtype=bool)
