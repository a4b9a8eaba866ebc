"""Label codes -> ECG-QA answer strings: PTB-XL SCP statements and Challenge SNOMED-CT codes.

ECG-QA (PTB-XL version) names each SCP statement by a lower-case description, mostly
PTB-XL's own (``scp_statements.csv``), with the myocardial-infarction statements reworded
by location ("inferior myocardial infarction" is "myocardial infarction in inferior leads")
and a few spellings changed ("digitalis-effect" is "digitalis effect"). ECG-QA leaves out
statements it had too few examples of; those have no answer string here either, so no
question is ever asked about them (the tables below say which, and ``docs/data.md`` lists
every code with its mapping).

Groups follow PTB-XL: ``super_class`` (the 5 diagnostic superclasses), ``sub_class`` (the
23 diagnostic subclasses), ``diagnostic`` (the 44 diagnostic statements), ``form`` (19)
and ``rhythm`` (12). A subclass maps to an answer only when it holds exactly one
statement that ECG-QA names (``CRBBB``, ``LVH``, ``ISC_``, ...); a subclass that groups
several statements (``IMI``: inferior, inferolateral, inferoposterior ... infarction) has
no single answer and asks nothing at statement level.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- PTB-XL SCP

# Diagnostic statements (group "diagnostic") -> ECG-QA answer; None: ECG-QA has no answer.
DIAGNOSTIC: dict[str, str | None] = {
    "NDT": "non-diagnostic t abnormalities",
    "NST_": "non-specific st changes",
    "DIG": "digitalis effect",
    "LNGQT": "long qt-interval",
    "NORM": None,                                   # "normal ecg": asked as superclass "none"
    "IMI": "myocardial infarction in inferior leads",
    "ASMI": "myocardial infarction in anteroseptal leads",
    "LVH": "left ventricular hypertrophy",
    "LAFB": "left anterior fascicular block",
    "ISC_": "non-specific ischemic",
    "IRBBB": "incomplete right bundle branch block",
    "1AVB": "first degree av block",
    "IVCD": "non-specific intraventricular conduction disturbance (block)",
    "ISCAL": "ischemic in anterolateral leads",
    "CRBBB": "complete right bundle branch block",
    "CLBBB": "complete left bundle branch block",
    "ILMI": "myocardial infarction in inferolateral leads",
    "LAO/LAE": "left atrial overload/enlargement",
    "AMI": "myocardial infarction in anterior leads",
    "ALMI": "myocardial infarction in anterolateral leads",
    "ISCIN": "ischemic in inferior leads",
    "INJAS": "subendocardial injury in anteroseptal leads",
    "LMI": "myocardial infarction in lateral leads",
    "ISCIL": "ischemic in inferolateral leads",
    "LPFB": "left posterior fascicular block",
    "ISCAS": "ischemic in anteroseptal leads",
    "INJAL": "subendocardial injury in anterolateral leads",
    "ISCLA": "ischemic in lateral leads",
    "RVH": None,
    "ANEUR": None,
    "RAO/RAE": "right atrial overload/enlargement",
    "EL": None,
    "WPW": None,
    "ILBBB": "incomplete left bundle branch block",
    "IPLMI": "myocardial infarction in inferoposterolateral leads",
    "ISCAN": "ischemic in anterior leads",
    "IPMI": "myocardial infarction in inferoposterior leads",
    "SEHYP": None,
    "INJIN": "subendocardial injury in inferior leads",
    "INJLA": "subendocardial injury in lateral leads",
    "PMI": "myocardial infarction in posterior leads",
    "3AVB": None,
    "INJIL": "subendocardial injury in inferolateral leads",
    "2AVB": None,
}

FORM: dict[str, str | None] = {
    "NDT": "non-diagnostic t abnormalities",
    "NST_": "non-specific st changes",
    "DIG": "digitalis effect",
    "LNGQT": "long qt-interval",
    "ABQRS": "abnormal qrs",
    "PVC": "ventricular premature complex",
    "STD_": "non-specific st depression",
    "VCLVH": "voltage criteria (qrs) for left ventricular hypertrophy",
    "QWAVE": "q waves present",
    "LOWT": "low amplitude t-wave",
    "NT_": "non-specific t-wave changes",
    "PAC": "atrial premature complex",
    "LPR": "prolonged pr interval",
    "INVT": "inverted t-waves",
    "LVOLT": "low qrs voltages in the frontal and horizontal leads",
    "HVOLT": "high qrs voltage",
    "TAB_": "t-wave abnormality",
    "STE_": "non-specific st elevation",
    "PRC(S)": None,
}

RHYTHM: dict[str, str | None] = {
    "SR": "sinus rhythm",
    "AFIB": "atrial fibrillation",
    "STACH": "sinus tachycardia",
    "SARRH": "sinus arrhythmia",
    "SBRAD": "sinus bradycardia",
    "PACE": "normal functioning artificial pacemaker",
    "SVARR": None,
    "BIGU": "bigeminal pattern (unknown origin, supraventricular, or ventricular)",
    "AFLT": "atrial flutter",
    "SVTAC": "supraventricular tachycardia",
    "PSVT": None,
    "TRIGU": None,
}

SUPERCLASS: dict[str, str | None] = {
    "NORM": None,                                   # no abnormality: the answer is "none"
    "MI": "myocardial infarction",
    "STTC": "st/t change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}

# Diagnostic subclass -> its statements (PTB-XL's diagnostic_subclass column).
SUBCLASS_STATEMENTS: dict[str, tuple[str, ...]] = {
    "NORM": ("NORM",), "STTC": ("NDT", "DIG", "LNGQT", "ANEUR", "EL"), "NST_": ("NST_",),
    "ISC_": ("ISC_",), "ISCA": ("ISCAL", "ISCAS", "ISCLA", "ISCAN"), "ISCI": ("ISCIN", "ISCIL"),
    "AMI": ("ASMI", "AMI", "ALMI", "INJAS", "INJAL", "INJLA"),
    "IMI": ("IMI", "ILMI", "IPLMI", "IPMI", "INJIN", "INJIL"), "LMI": ("LMI",), "PMI": ("PMI",),
    "LVH": ("LVH",), "RVH": ("RVH",), "LAO/LAE": ("LAO/LAE",), "RAO/RAE": ("RAO/RAE",),
    "SEHYP": ("SEHYP",), "LAFB/LPFB": ("LAFB", "LPFB"), "IRBBB": ("IRBBB",),
    "CRBBB": ("CRBBB",), "CLBBB": ("CLBBB",), "ILBBB": ("ILBBB",), "IVCD": ("IVCD",),
    "_AVB": ("1AVB", "2AVB", "3AVB"), "WPW": ("WPW",),
}


def _subclass_answer(sub: str) -> str | None:
    statements = SUBCLASS_STATEMENTS[sub]
    return DIAGNOSTIC.get(statements[0]) if len(statements) == 1 else None


SUBCLASS: dict[str, str | None] = {k: _subclass_answer(k) for k in SUBCLASS_STATEMENTS}

GROUPS: dict[str, dict[str, str | None]] = {
    "super_class": SUPERCLASS, "sub_class": SUBCLASS, "diagnostic": DIAGNOSTIC,
    "form": FORM, "rhythm": RHYTHM,
}


def canonical_code(group: str, code: str) -> str | None:
    """PTB-XL's spelling of ``code`` in ``group`` or None when unknown.

    Sources drop PTB-XL's trailing underscore (``NST`` for ``NST_``) and the subclass
    ``_AVB``'s leading one (``AVB``); case is ignored.

    Example:
        >>> canonical_code("form", "nst"), canonical_code("sub_class", "AVB")
        ('NST_', '_AVB')
    """
    table = GROUPS[group]
    key = code.strip().upper()
    for candidate in (key, key + "_", "_" + key):
        if candidate in table:
            return candidate
    return None


def answer_of(group: str, code: str) -> str | None:
    """ECG-QA's answer string for a canonical ``code`` of ``group`` (None: ECG-QA has none)."""
    return GROUPS[group].get(code)


# --------------------------------------------------------------------------- SNOMED-CT

# PhysioNet/CinC Challenge 2020-2021 SNOMED-CT Dx codes -> (group, PTB-XL statement). Only
# codes with the same meaning as an SCP statement; the others (bundle branch block without
# "complete"/"incomplete", RVH, ST interval abnormal, atrial tachycardia, poor R-wave
# progression ...) ask nothing.
SNOMED_TO_SCP: dict[str, tuple[str, str]] = {
    "426783006": ("rhythm", "SR"),
    "164889003": ("rhythm", "AFIB"),
    "164890007": ("rhythm", "AFLT"),
    "427084000": ("rhythm", "STACH"),
    "426177001": ("rhythm", "SBRAD"),
    "427393009": ("rhythm", "SARRH"),
    "10370003": ("rhythm", "PACE"),
    "426761007": ("rhythm", "SVTAC"),
    "284470004": ("form", "PAC"),
    "63593006": ("form", "PAC"),                   # supraventricular premature beats
    "427172004": ("form", "PVC"),
    "17338001": ("form", "PVC"),                   # ventricular premature beats
    "164934002": ("form", "TAB_"),
    "59931005": ("form", "INVT"),
    "251146004": ("form", "LVOLT"),
    "164947007": ("form", "LPR"),
    "164917005": ("form", "QWAVE"),
    "429622005": ("form", "STD_"),
    "164931005": ("form", "STE_"),
    "55930002": ("form", "NST_"),                  # ST changes
    "111975006": ("diagnostic", "LNGQT"),
    "713427006": ("diagnostic", "CRBBB"),
    "713426002": ("diagnostic", "IRBBB"),
    "733534002": ("diagnostic", "CLBBB"),
    "251120003": ("diagnostic", "ILBBB"),
    "270492004": ("diagnostic", "1AVB"),
    "445118002": ("diagnostic", "LAFB"),
    "445211001": ("diagnostic", "LPFB"),
    "698252002": ("diagnostic", "IVCD"),
    "164873001": ("diagnostic", "LVH"),
    "55827005": ("diagnostic", "LVH"),
    "67741000119109": ("diagnostic", "LAO/LAE"),   # left atrial enlargement
    "253352002": ("diagnostic", "LAO/LAE"),        # left atrial abnormality
    "446358003": ("diagnostic", "RAO/RAE"),        # right atrial hypertrophy
    "164861001": ("diagnostic", "ISC_"),           # myocardial ischemia
    "426434006": ("diagnostic", "ISCAN"),          # anterior ischemia
}

# Challenge codes without an SCP equivalent that may still imply ECG-QA answers (a "bundle
# branch block" may be a complete or an incomplete one): those answers are never asked as
# negatives for the record, and its queries are not asked. A code in neither table is of
# unknown meaning: the record then asks no negative and no query question at all.
SNOMED_OVERLAPS: dict[str, tuple[str, ...]] = {
    "59118001": ("CRBBB", "IRBBB"),                        # right bundle branch block
    "164909002": ("CLBBB", "ILBBB"),                       # left bundle branch block
    "6374002": ("CRBBB", "IRBBB", "CLBBB", "ILBBB"),       # bundle branch block
    "713422000": ("SVTAC",),                               # atrial tachycardia
    "426995002": ("SVTAC",),                               # junctional escape
    "426648003": ("SVTAC",),                               # junctional tachycardia
    "428750005": ("NST_", "STD_", "STE_", "NT_", "TAB_", "NDT"),   # nonspecific ST-T abn.
    "164930006": ("NST_", "STD_", "STE_"),                 # ST interval abnormal
    "365413008": ("ABQRS",),                               # poor R wave progression
    "251170000": ("PAC",),                                 # blocked premature atrial contr.
    "164884008": ("PVC",),                                 # ventricular ectopics
    "11157007": ("PVC", "BIGU"),                           # ventricular bigeminy
    "164865005": ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "LMI", "IPLMI", "IPMI", "PMI",
                  "INJAS", "INJAL", "INJIN", "INJLA", "INJIL"),   # myocardial infarction
    "164867002": ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "LMI", "IPLMI", "IPMI", "PMI"),
    "89792004": (),                                        # right ventricular hypertrophy
    "195042002": (), "27885002": (), "74390002": (),       # 2nd/3rd degree AV block, WPW
    "39732003": (), "47665007": (),                        # left / right axis deviation
}


def scp_answer(code: str) -> str | None:
    """ECG-QA's answer for an SCP statement of any group (None: it has none)."""
    for table in (DIAGNOSTIC, FORM, RHYTHM):
        if table.get(code):
            return table[code]
    return None
