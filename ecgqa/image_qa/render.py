"""ECG images for the image path: the 12-lead paper layout rasterised to a fixed size.

:func:`render_image` draws a record with :func:`ecgqa.records.plot.render` (3 x 4 panels
of 2.5 s + a 10 s rhythm strip, 25 mm/s, 10 mm/mV), rasterises the matplotlib Figure in
memory, fits it into ``size`` keeping the millimetre grid square (white margins) and,
with a :class:`Variation`, varies the look the way scans and printouts differ: grid
colour, trace width, render resolution, paper tint, a small rotation, blur and noise. A
model trained on varied images cannot lean on one exact look. The same ``rng`` seed
gives the same pixels.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np

from ecgqa.records.plot import PlotStyle, paper_size_mm, render
from ecgqa.records.read import EcgRecord

DEFAULT_SIZE: tuple[int, int] = (256, 512)      # (height, width) in pixels
PLAIN_SCALE = 2.0      # plain images are drawn at twice the output resolution, then reduced
MIN_DPI = 24           # smallest raster resolution (tiny images are drawn larger, then reduced)
PLAIN_TRACE_PX = 1.2   # plain trace width in output pixels (at least PlotStyle's 0.6 pt)
# Grid hues of real ECG paper (degrees): red/pink (the default), orange, green, blue; and grey.
GRID_HUES: dict[str, float | None] = {"red": 0.0, "orange": 25.0, "green": 130.0,
                                      "blue": 210.0, "grey": None}


@dataclass(frozen=True)
class Variation:
    """Ranges of the random look of a rendered ECG; :meth:`none` draws the plain printout.

    Every image draws its own values uniformly from these ranges with the ``rng`` given
    to :func:`render_image`.
    """

    enabled: bool = True
    p_standard_grid: float = 0.5            # probability of the standard red grid colours
    grid_jitter: float = 0.08               # +- lightness / saturation change of the grid
    p_no_grid: float = 0.05                 # probability of traces on blank paper
    trace_px: tuple[float, float] = (0.8, 1.8)       # trace width range, output pixels
    dpi_scale: tuple[float, float] = (1.0, 2.5)      # render resolution / output resolution
    paper_tint: float = 0.06                # largest darkening of the white paper per channel
    rotation_deg: float = 2.0               # largest rotation either way, degrees
    perspective: float = 0.03               # largest corner shift, fraction of the side:
    #                                         a photo taken slightly off-axis
    blur_radius: float = 0.7                # largest Gaussian blur radius, output pixels
    noise_std: float = 0.03                 # largest additive Gaussian noise, fraction of 255

    @classmethod
    def none(cls) -> Variation:
        """No variation: the standard printout look."""
        return cls(enabled=False)

    def to_json(self) -> dict:
        """The ranges as a JSON-ready dict (for ``meta.json``)."""
        from dataclasses import asdict

        return asdict(self)


def render_image(record: EcgRecord, size: tuple[int, int] = DEFAULT_SIZE,
                 variation: Variation | None = None,
                 rng: np.random.Generator | None = None):
    """Draw ``record`` on ECG paper as an RGB image of exactly ``size``.

    The plain look is :class:`PlotStyle`'s standard printout, with the trace at least
    ``PLAIN_TRACE_PX`` output pixels wide so it survives the reduction to ``size``.

    Args:
        record: the ECG; its first 10 s are drawn (12-lead layout when all 12 standard
            leads are present, else one strip per lead).
        size: ``(height, width)`` in pixels.
        variation: random look; ``None`` or ``Variation.none()`` draws the plain printout.
        rng: source of the random look (default: a generator seeded with 0), so a
            given seed gives identical pixels.

    Returns:
        A ``PIL.Image.Image`` in mode ``RGB`` with ``(image.height, image.width) == size``.

    Example:
        >>> img = render_image(read_record("00001_lr"), (256, 512), Variation(),
        ...                    np.random.default_rng(0))
        >>> img.size
        (512, 256)
    """
    height, width = _check_size(size)
    varied = variation is not None and variation.enabled
    rng = rng if rng is not None else np.random.default_rng(0)
    paper_w, paper_h = (mm / 25.4 for mm in paper_size_mm(record))     # inches
    fit_dpi = min(width / paper_w, height / paper_h)       # dpi that just fits ``size``
    pt_per_px = 72.0 / fit_dpi                             # line widths in output pixels
    if varied:
        style, scale = _draw_style(variation, rng, pt_per_px)
    else:
        style = PlotStyle(trace_width=max(PlotStyle().trace_width, PLAIN_TRACE_PX * pt_per_px))
        scale = PLAIN_SCALE
    # at least MIN_DPI: a smaller raster leaves the text under one pixel, which FreeType
    # refuses; the raster is reduced to ``size`` anyway
    style = replace(style, dpi=max(MIN_DPI, int(round(fit_dpi * scale))))
    pixels = _rasterise(render(record, style=style))        # (h, w, 3) uint8
    image = _fit(pixels, height, width)
    if varied:
        image = _degrade(image, variation, rng)
    return image


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if not (16 <= height <= 8192 and 16 <= width <= 8192):
        raise ValueError(f"size must be 16..8192 pixels each way, got {height}x{width}")
    return height, width


def _draw_style(v: Variation, rng: np.random.Generator,
                pt_per_px: float) -> tuple[PlotStyle, float]:
    """A PlotStyle with a random grid and trace, and a random render resolution."""
    style = PlotStyle(trace_width=float(rng.uniform(*v.trace_px)) * pt_per_px)
    if rng.random() >= v.p_standard_grid:
        name = list(GRID_HUES)[int(rng.integers(len(GRID_HUES)))]
        style = replace(style, **_grid_colors(GRID_HUES[name], rng, v.grid_jitter))
    elif v.grid_jitter > 0:
        style = replace(style, **_grid_colors(0.0, rng, v.grid_jitter))
    if rng.random() < v.p_no_grid:
        style = replace(style, show_grid=False)
    return style, float(rng.uniform(*v.dpi_scale))


def _grid_colors(hue_deg: float | None, rng: np.random.Generator, jitter: float) -> dict:
    """Minor and major grid colours of one hue (None: grey), lightness/saturation jittered."""
    d_light, d_sat = rng.uniform(-jitter, jitter, 2)
    sat = 0.0 if hue_deg is None else 1.0
    hue = 0.0 if hue_deg is None else (hue_deg + rng.uniform(-8, 8)) % 360 / 360
    colors = {}
    for key, light, s in (("minor_color", 0.87, 0.75), ("major_color", 0.72, 0.65)):
        rgb = colorsys.hls_to_rgb(hue, float(np.clip(light + d_light, 0.5, 0.97)),
                                  float(np.clip(sat * s + d_sat, 0.0, 1.0)))
        colors[key] = "#" + "".join(f"{round(c * 255):02x}" for c in rgb)
    return colors


def _rasterise(fig) -> np.ndarray:
    """Draw a matplotlib Figure in memory; (h, w, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _fit(pixels: np.ndarray, height: int, width: int):
    """Scale to fit (height, width) keeping the aspect ratio; centre on white."""
    from PIL import Image

    src = Image.fromarray(pixels, "RGB")
    s = min(width / src.width, height / src.height)
    w, h = max(1, min(width, round(src.width * s))), max(1, min(height, round(src.height * s)))
    out = Image.new("RGB", (width, height), (255, 255, 255))
    out.paste(src.resize((w, h), Image.Resampling.LANCZOS), ((width - w) // 2, (height - h) // 2))
    return out


def _degrade(image, v: Variation, rng: np.random.Generator):
    """Paper tint, small rotation, perspective, blur and noise, each drawn from ``v``'s
    ranges."""
    from PIL import Image, ImageFilter

    tint = 1.0 - rng.uniform(0.0, v.paper_tint, 3)
    angle = float(rng.uniform(-v.rotation_deg, v.rotation_deg))
    radius = float(rng.uniform(0.0, v.blur_radius))
    sigma = float(rng.uniform(0.0, v.noise_std)) * 255.0
    shift = rng.uniform(-v.perspective, v.perspective, (4, 2))    # corners, fraction of side
    paper = tuple(int(round(255 * t)) for t in tint)
    arr = np.asarray(image, dtype=np.float32) * tint          # (h, w, 3) tinted paper
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=paper)
    if v.perspective > 0:
        image = _perspective(image, shift, paper)
    if radius > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    if sigma > 0:
        arr = np.asarray(image, dtype=np.float32) + rng.normal(0.0, sigma, (image.height,
                                                                             image.width, 1))
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return image


def _perspective(image, shift: np.ndarray, fill: tuple[int, int, int]):
    """Warp so the image's corners land ``shift`` (fractions of width / height) away from
    where they were: the look of a page photographed slightly off-axis."""
    from PIL import Image

    w, h = image.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    moved = corners + shift * np.array([w, h])
    # PIL maps each output pixel (x, y) to the input point
    # ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1)):
    # solve for the 8 coefficients that send the moved corners back to the corners
    rows, rhs = [], []
    for (x, y), (u, v) in zip(moved, corners):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs.tolist()),
                           resample=Image.Resampling.BILINEAR, fillcolor=fill)
