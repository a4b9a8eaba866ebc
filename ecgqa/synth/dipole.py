"""A 3-D cardiac dipole (vectorcardiogram) made of Gaussian-shaped waves, and its 12 leads.

The heart is one current dipole ``d(t) = sum_k v_k g((t - c_k) / s_k)`` (Sameni et al. 2007,
the 3-D extension of McSharry's ECGSYN): every P, QRS and T wave is a few components, each
a 3-D vector ``v_k`` (mV) times a bell ``g``. The bell is a Gaussian cut at +-2.5 sigma and
lowered to touch zero there, so a wave has an exact onset and offset: a beat built from
intended P, PR, QRS and QT durations has exactly those durations.

Coordinates: ``x`` towards the patient's left, ``y`` towards the feet, ``z`` anterior. The
frontal angle of a vector is ``atan2(y, x)`` in degrees, the clinical hexaxial convention
(lead I at 0, II at 60, aVF at 90, aVL at -30).

Leads: I and II are projections on ``(1, 0, 0)`` and ``(cos 60, sin 60, 0)``; III, aVR, aVL
and aVF are then computed from I and II with the Einthoven and Goldberger relations, so
they hold to float rounding. V1..V6 are projections on horizontal-plane directions (with
the small vertical tilt of their electrode positions) times a proximity gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUT = 2.5                                   # a component spans centre +- CUT * sigma
_FLOOR = float(np.exp(-0.5 * CUT * CUT))
# Precordial electrodes: horizontal angle (deg, from +x towards anterior +z), vertical tilt
# (deg, + = inferior) and proximity gain. Gains mimic the larger chest-lead voltages.
_PRECORDIAL = (
    (115.0, -10.0, 1.00),   # V1: 4th intercostal space, right sternal border
    (92.0, -8.0, 1.45),     # V2
    (75.0, -3.0, 1.55),     # V3
    (58.0, 4.0, 1.50),      # V4: 5th intercostal space, midclavicular line
    (33.0, 6.0, 1.30),      # V5
    (5.0, 8.0, 1.05),       # V6: midaxillary line
)
WAVE_P, WAVE_QRS, WAVE_T = 0, 1, 2


def _precordial_matrix() -> np.ndarray:
    rows = []
    for azimuth, tilt, gain in _PRECORDIAL:
        a, e = np.deg2rad(azimuth), np.deg2rad(tilt)
        rows.append(gain * np.array([np.cos(a) * np.cos(e), np.sin(e), np.sin(a) * np.cos(e)]))
    return np.array(rows)


LIMB_MATRIX = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(3.0) / 2.0, 0.0]])  # (2, 3): I, II
PRECORDIAL_MATRIX = _precordial_matrix()                                   # (6, 3): V1..V6


def project(dipole: np.ndarray) -> np.ndarray:
    """Project a dipole signal onto the 12 standard leads.

    Args:
        dipole: ``(3, n)`` heart vector in mV.

    Returns:
        ``(12, n)`` float64 in the order I II III aVR aVL aVF V1..V6; the four derived
        limb leads satisfy Einthoven and Goldberger exactly (up to float rounding).
    """
    lead_i, lead_ii = LIMB_MATRIX @ dipole                   # (n,), (n,)
    out = np.empty((12, dipole.shape[1]))
    out[0], out[1] = lead_i, lead_ii
    out[2] = lead_ii - lead_i                                # III = II - I
    out[3] = -(lead_i + lead_ii) / 2.0                       # aVR
    out[4] = lead_i - lead_ii / 2.0                          # aVL
    out[5] = lead_ii - lead_i / 2.0                          # aVF
    out[6:] = PRECORDIAL_MATRIX @ dipole                     # (6, n)
    return out


def project_vectors(vectors: np.ndarray) -> np.ndarray:
    """Lead amplitudes ``(k, 12)`` of ``k`` constant dipole vectors ``(k, 3)``."""
    return project(np.asarray(vectors, dtype=float).T).T


def bumps(t_ms: np.ndarray, center_ms: np.ndarray, sigma_ms: np.ndarray) -> np.ndarray:
    """Cut Gaussians, peak 1, exactly zero outside ``center +- CUT * sigma``.

    Args:
        t_ms: ``(n,)`` times.
        center_ms, sigma_ms: ``(k,)`` component centres and widths.

    Returns:
        ``(k, n)`` bell values.
    """
    x = (t_ms[None, :] - center_ms[:, None]) / sigma_ms[:, None]      # (k, n)
    return np.maximum((np.exp(-0.5 * x * x) - _FLOOR) / (1.0 - _FLOOR), 0.0)


def rotation(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` about ``x``, ``y`` or ``z``.

    Positive ``z`` rotation turns the frontal angle clockwise on the hexaxial diagram
    (towards +90, aVF), i.e. it adds ``deg`` to every frontal angle.
    """
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass(frozen=True, eq=False)
class Waves:
    """A set of components: times in ms relative to the QRS onset of their beat.

    Attributes:
        center_ms: ``(k,)`` centres.
        sigma_ms: ``(k,)`` widths (each component spans ``center +- 2.5 sigma``).
        vectors: ``(k, 3)`` dipole amplitudes in mV.
        wave: ``(k,)`` ``WAVE_P``, ``WAVE_QRS`` or ``WAVE_T``.
        pinned: ``(k,)`` True for components that keep their direction when the QRS is
            turned to a new axis (the late right-ventricular forces of a RBBB).
    """

    center_ms: np.ndarray
    sigma_ms: np.ndarray
    vectors: np.ndarray
    wave: np.ndarray
    pinned: np.ndarray

    @staticmethod
    def build(table: list[tuple[float, float, tuple[float, float, float]]], kind: int,
              pinned: bool = False) -> Waves:
        """From rows ``(center_ms, sigma_ms, (x, y, z))`` all of one wave kind."""
        c = np.array([row[0] for row in table], dtype=float)
        s = np.array([row[1] for row in table], dtype=float)
        v = np.array([row[2] for row in table], dtype=float).reshape(-1, 3)
        return Waves(c, s, v, np.full(len(table), kind), np.full(len(table), pinned))

    def __add__(self, other: Waves) -> Waves:
        return Waves(*(np.concatenate([a, b]) for a, b in zip(self._fields(), other._fields())))

    def _fields(self) -> tuple[np.ndarray, ...]:
        return self.center_ms, self.sigma_ms, self.vectors, self.wave, self.pinned

    def _subset(self, keep: np.ndarray) -> Waves:
        return Waves(*(f[keep] for f in self._fields()))

    def select(self, kind: int) -> Waves:
        return self._subset(self.wave == kind)

    def with_vectors(self, vectors: np.ndarray) -> Waves:
        return Waves(self.center_ms, self.sigma_ms, vectors, self.wave, self.pinned)

    def transformed(self, matrix: np.ndarray, kind: int | None = None,
                    pinned_too: bool = True) -> Waves:
        """Rotate/scale the vectors (all, or only one wave kind; optionally not the pinned
        ones) by ``matrix``."""
        keep = np.ones(len(self.wave), bool) if kind is None else self.wave == kind
        if not pinned_too:
            keep &= ~self.pinned
        v = self.vectors.copy()
        v[keep] = v[keep] @ matrix.T
        return self.with_vectors(v)

    def turned_to_axis(self, target_deg: float) -> Waves:
        """Rotate the unpinned components about ``z`` so the frontal area axis of all
        components is exactly ``target_deg``.

        With pinned area ``B`` and unpinned area ``A`` (frontal plane), solve
        ``R(delta) A + B = t u`` for ``t > 0`` along ``u = (cos, sin)(target)``; if the
        pinned forces are too large for a solution, everything is rotated instead.
        """
        a = (self.sigma_ms[~self.pinned, None] * self.vectors[~self.pinned]).sum(axis=0)[:2]
        b = (self.sigma_ms[self.pinned, None] * self.vectors[self.pinned]).sum(axis=0)[:2]
        u = np.array([np.cos(np.deg2rad(target_deg)), np.sin(np.deg2rad(target_deg))])
        disc = float(u @ b) ** 2 - float(b @ b) + float(a @ a)
        if disc <= 0.0 or not self.pinned.any():
            return self.transformed(rotation("z", target_deg - self.frontal_axis_deg()))
        p = (float(u @ b) + np.sqrt(disc)) * u - b
        delta = np.degrees(np.arctan2(p[1], p[0]) - np.arctan2(a[1], a[0]))
        return self.transformed(rotation("z", delta), pinned_too=False)

    @property
    def onset_ms(self) -> float:
        return float(np.min(self.center_ms - CUT * self.sigma_ms))

    @property
    def offset_ms(self) -> float:
        return float(np.max(self.center_ms + CUT * self.sigma_ms))

    def area_vector(self) -> np.ndarray:
        """Time integral of the dipole ``(3,)`` (mV ms up to the common bell area factor)."""
        return (self.sigma_ms[:, None] * self.vectors).sum(axis=0)

    def frontal_axis_deg(self) -> float:
        """Frontal angle of the area vector: the mean axis of these waves."""
        a = self.area_vector()
        return float(np.degrees(np.arctan2(a[1], a[0])))

    def render(self, t_ms: np.ndarray) -> np.ndarray:
        """Dipole ``(3, n)`` at times ``t_ms``."""
        return self.vectors.T @ bumps(t_ms, self.center_ms, self.sigma_ms)


@dataclass(frozen=True, eq=False)
class StShift:
    """An injury current: a constant dipole from the J point until the T wave ends.

    It rises over ``rise_ms`` around the J point, holds, and fades from ``fade_ms`` to
    ``end_ms`` (the T offset), so the TP segment keeps the baseline.
    """

    vector: np.ndarray
    j_ms: float
    fade_ms: float
    end_ms: float
    rise_ms: float = 16.0

    def render(self, t_ms: np.ndarray) -> np.ndarray:
        """Dipole ``(3, n)``."""
        up = _smoothstep((t_ms - (self.j_ms - self.rise_ms / 2)) / self.rise_ms)
        down = 1.0 - _smoothstep((t_ms - self.fade_ms) / max(self.end_ms - self.fade_ms, 1.0))
        return self.vector[:, None] * (up * down)[None, :]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True, eq=False)
class Beat:
    """One beat morphology: components plus an optional ST shift (times from QRS onset)."""

    waves: Waves
    st: StShift | None = None

    def template(self, fs: float) -> tuple[int, np.ndarray]:
        """Render the beat on the sample grid.

        Returns:
            ``(first, dipole)``: the offset in samples of the first template sample from
            the QRS onset (negative: the P wave comes first) and the ``(3, L)`` dipole.
        """
        step = 1000.0 / fs
        first = int(np.floor(self.waves.onset_ms / step)) - 1
        last = int(np.ceil(self.waves.offset_ms / step)) + 1
        t = np.arange(first, last + 1) * step                        # (L,)
        dip = self.waves.render(t)                                   # (3, L)
        if self.st is not None:
            dip = dip + self.st.render(t)
        return first, dip


# --------------------------------------------------------------------------- wave library
# Vectors below are in the canonical heart orientation (QRS axis about +50 deg, precordial
# transition V3-V4); callers rotate them. Widths and centres scale with the wave duration,
# and the first/last component of each wave starts/ends exactly at its onset/offset.

CONDUCTIONS = ("normal", "rbbb", "irbbb", "lbbb", "ilbbb", "lafb", "rbbb+lafb")


def _edge_first(frac_sigma: float, dur: float) -> tuple[float, float]:
    s = frac_sigma * dur
    return CUT * s, s


def _edge_last(frac_sigma: float, dur: float) -> tuple[float, float]:
    s = frac_sigma * dur
    return dur - CUT * s, s


def _lv_waves(q: float, terminal: bool = True) -> list:
    """Normal ventricular activation: septal (right, anterior), apical, free wall, basal."""
    rows = [(*_edge_first(0.085, q), (-0.22, 0.05, 0.22)),
            (0.42 * q, 0.11 * q, (0.45, 0.85, 0.5)),
            (0.57 * q, 0.11 * q, (0.8, 0.35, -0.9))]
    if terminal:
        rows.append((*_edge_last(0.075, q), (-0.22, -0.3, -0.2)))
    else:  # the free-wall component must then end the LV part
        rows[2] = (*_edge_last(0.17, q), (0.8, 0.35, -0.9))
    return rows


def _lafb_waves(q: float, terminal: bool = True) -> list:
    """Left anterior fascicular block: initial forces inferior, main forces superior-left."""
    first = (*_edge_first(0.09, q), (-0.08, 0.4, 0.22))
    main = (0.75, -0.8, -0.65)
    if not terminal:  # the main component must then end the LV part
        return [first, (*_edge_last(0.16, q), main)]
    return [first, (0.5 * q, 0.12 * q, main), (*_edge_last(0.075, q), (0.05, -0.35, -0.25))]


def _rv_delay(q: float, strength: float) -> list:
    """Late right-ventricular forces of a right bundle branch block (rightward, anterior)."""
    return [(*_edge_last(0.1, q), tuple(strength * np.array([-0.6, -0.05, 0.65])))]


def _lbbb_waves(q: float) -> list:
    """Left bundle branch block: no septal q, slow leftward-posterior loop with a notch."""
    return [(*_edge_first(0.12, q), (0.5, 0.2, -0.3)),
            (0.5 * q, 0.11 * q, (0.3, 0.1, -0.3)),
            (*_edge_last(0.12, q), (0.65, 0.25, -0.6))]


def qrs_waves(conduction: str, q_ms: float) -> Waves:
    """QRS components for a conduction pattern, canonical orientation, unit amplitude.

    Args:
        conduction: one of ``CONDUCTIONS``.
        q_ms: QRS duration; the components span exactly ``[0, q_ms]``.
    """
    if conduction == "normal":
        rows = _lv_waves(q_ms)
    elif conduction == "lafb":
        rows = _lafb_waves(q_ms)
    elif conduction in ("lbbb", "ilbbb"):
        rows = _lbbb_waves(q_ms)
    elif conduction in ("rbbb", "irbbb", "rbbb+lafb"):
        lv_ms = min(0.72 * q_ms, 92.0) if conduction != "irbbb" else 0.85 * q_ms
        lv = _lafb_waves(lv_ms, False) if conduction == "rbbb+lafb" else _lv_waves(lv_ms, False)
        rv = _rv_delay(q_ms, 0.45 if conduction == "irbbb" else 0.85)
        return Waves.build(lv, WAVE_QRS) + Waves.build(rv, WAVE_QRS, pinned=True)
    else:
        raise ValueError(f"unknown conduction {conduction!r}; choose from {CONDUCTIONS}")
    return Waves.build(rows, WAVE_QRS)


def pvc_waves(q_ms: float, direction: np.ndarray, bend: np.ndarray) -> Waves:
    """A premature ventricular complex: two broad components along ``direction``.

    Args:
        q_ms: QRS duration of the ectopic beat.
        direction: ``(3,)`` main vector (mV).
        bend: ``(3,)`` unit vector turning the second half of the loop.
    """
    second = direction + 0.45 * np.linalg.norm(direction) * bend
    rows = [(*_edge_first(0.15, q_ms), tuple(direction)),
            (*_edge_last(0.15, q_ms), tuple(second))]
    return Waves.build(rows, WAVE_QRS)


def p_waves(pr_ms: float, p_ms: float, amp: float, ectopic: np.ndarray | None = None) -> Waves:
    """P wave ending ``pr_ms - p_ms`` before the QRS onset.

    Sinus: right atrium (inferior, anterior) then left atrium (leftward, posterior).
    Ectopic: both halves along the ``(3,)`` direction ``ectopic`` (e.g. superior for a
    low atrial focus).
    """
    s = p_ms / 6.5
    on = -pr_ms
    ra, la = np.array([0.05, 0.9, 0.45]), np.array([0.75, 0.45, -0.5])
    if ectopic is not None:
        ra = la = np.asarray(ectopic, dtype=float) / np.linalg.norm(ectopic)
    rows = [(on + CUT * s, s, tuple(amp * ra)), (on + p_ms - CUT * s, s, tuple(amp * la))]
    return Waves.build(rows, WAVE_P)


def t_waves(q_ms: float, qt_ms: float, vector: np.ndarray) -> Waves:
    """Asymmetric T wave (slow upstroke, faster downstroke) ending exactly at ``qt_ms``.

    Args:
        q_ms: QRS duration (the T wave starts after it).
        qt_ms: QT interval, QRS onset to T offset.
        vector: ``(3,)`` T-wave direction and size (mV).
    """
    tw = min(float(np.clip(0.42 * qt_ms, 120.0, 230.0)), (qt_ms - q_ms - 30.0) / 1.06)
    s2, s1 = tw / 7.0, tw / 5.0
    c2 = qt_ms - CUT * s2
    v = np.asarray(vector, dtype=float)
    rows = [(c2 - 0.2 * tw, s1, tuple(0.62 * v)), (c2, s2, tuple(0.62 * v))]
    return Waves.build(rows, WAVE_T)
