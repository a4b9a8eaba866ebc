"""Labelled noise of a synthetic record: which types hit which leads, and the noise itself.

    rng --sample_noise--> {noise type: leads} (EcgFacts.noise; empty for most records)
    leads (12, n) --add_noise--> the same leads with baseline drift, static (broadband +
        mains hum), burst noise or electrode problems added where labelled
"""

from __future__ import annotations

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth.findings import pick
from ecgqa.synth.ground_truth import FS, N_SAMPLES, NOISE_TYPES, TIMES_S


def _noise_leads(kind: str, rng: np.random.Generator) -> tuple[str, ...]:
    if kind == "electrodes problems":
        picked = set(rng.choice(STANDARD_LEADS, size=int(rng.integers(1, 3)), replace=False))
    else:
        scope = pick(rng, {"all": 0.4, "limb": 0.2, "precordial": 0.2, "few": 0.2})
        picked = {"all": set(STANDARD_LEADS), "limb": set(STANDARD_LEADS[:6]),
                  "precordial": set(STANDARD_LEADS[6:]),
                  "few": set(rng.choice(STANDARD_LEADS, size=int(rng.integers(1, 4)),
                                        replace=False))}[scope]
    return tuple(n for n in STANDARD_LEADS if n in picked)


def sample_noise(rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """About a quarter of the records carry one or two labelled noise types."""
    if rng.random() >= 0.25:
        return {}
    n = 1 if rng.random() < 0.7 else 2
    kinds = sorted(rng.choice(len(NOISE_TYPES), size=n, replace=False))
    return {NOISE_TYPES[k]: _noise_leads(NOISE_TYPES[k], rng) for k in kinds}


def _baseline_drift(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """0.05-0.5 Hz wander, 0.2-0.7 mV."""
    k = (len(rows), 2, 1)
    waves = rng.uniform(0.1, 0.35, k) * np.sin(
        2 * np.pi * rng.uniform(0.05, 0.5, k) * TIMES_S + rng.uniform(0, 2 * np.pi, k))
    x[rows] += waves.sum(axis=1)                                         # (rows, n)


def _static_noise(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Continuous broadband noise (0.02-0.05 mV rms) with 50/60 Hz mains hum."""
    mains = rng.choice([50.0, 60.0])
    hum = rng.uniform(0.01, 0.06, (len(rows), 1)) * np.sin(
        2 * np.pi * mains * TIMES_S + rng.uniform(0, 2 * np.pi, (len(rows), 1)))
    x[rows] += rng.normal(0.0, 1.0, (len(rows), N_SAMPLES)) * \
        rng.uniform(0.02, 0.05, (len(rows), 1)) + hum


def _burst_noise(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """1-3 bursts of 0.3-1.2 s of large (0.15-0.5 mV rms) noise, the same times in every
    affected lead."""
    env = np.zeros(N_SAMPLES)
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.3, 1.2) * FS)
        a = int(rng.integers(0, N_SAMPLES - n))
        env[a:a + n] = np.maximum(env[a:a + n], np.hanning(n))
    sd = rng.uniform(0.15, 0.5, (len(rows), 1))
    x[rows] += rng.normal(0.0, 1.0, (len(rows), N_SAMPLES)) * sd * env


def _electrode_problem(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """A disconnected electrode: the lead is flat for the whole record or for 1.5-4 s,
    with a step artefact where contact is lost and regained."""
    for r in rows:
        if rng.random() < 0.5:
            x[r] = rng.uniform(-0.3, 0.3) + rng.normal(0.0, 0.003, N_SAMPLES)
            continue
        n = int(rng.uniform(1.5, 4.0) * FS)
        a = int(rng.integers(0, N_SAMPLES - n))
        x[r, a:a + n] = rng.uniform(-0.5, 0.5) + rng.normal(0.0, 0.003, n)
        for edge in (a, a + n):
            tail = np.arange(N_SAMPLES - edge) / FS
            x[r, edge:] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) * np.exp(-tail / 0.08)


_NOISE = {"baseline drift": _baseline_drift, "static noise": _static_noise,
          "burst noise": _burst_noise, "electrodes problems": _electrode_problem}


def add_noise(leads: np.ndarray, noise: dict[str, tuple[str, ...]],
              rng: np.random.Generator) -> None:
    """Add each labelled noise type of ``noise`` (:func:`sample_noise`) to its leads of
    ``leads`` ``(12, n)`` mV (in the order of ``STANDARD_LEADS``), in place."""
    for kind, names in noise.items():
        rows = np.array([STANDARD_LEADS.index(n) for n in names])
        _NOISE[kind](leads, rows, rng)
