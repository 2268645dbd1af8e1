"""Bland-Altman plots of test-retest pairs, drawn with Pillow (no matplotlib).

The plot: one point per subject at (mean of the two scans, scan 2 - scan 1), a solid line at
the mean difference (bias), dashed lines at the 95% limits of agreement (bias +/- 1.96 SD), a
thin line at zero, axes with ticks and labels in the figure's units, and a title with the
figure's name, the number of subjects and the repeatability coefficient. With
``log_ratio=True`` the vertical axis is ``ln(scan 2 / scan 1)`` and the lines come from the
log-scale statistics (labelled with the ratio they stand for).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from dicom_templates.summary_render import Font, load_font
from quant.stats.repeatability import BlandAltman, Repeatability

WIDTH = 960
HEIGHT = 640
PLOT_LEFT = 110
PLOT_RIGHT = WIDTH - 200
PLOT_TOP = 90
PLOT_BOTTOM = HEIGHT - 80
BACKGROUND = (255, 255, 255)
AXIS = (30, 30, 30)
GRID = (228, 228, 228)
ZERO_LINE = (150, 150, 150)
POINT_FILL = (70, 130, 200)
POINT_EDGE = (20, 60, 120)
BIAS_LINE = (20, 60, 160)
LOA_LINE = (200, 40, 40)
POINT_RADIUS = 5


def nice_ticks(low: float, high: float, target: int = 6) -> tuple[list[float], int]:
    """Round tick positions (steps of 1, 2, 2.5 or 5 x 10^n) covering ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Axis range, ``low < high``.
    target : int
        Largest number of intervals wanted.

    Returns
    -------
    tuple of (list of float, int)
        Tick values inside the range and the number of decimals that writes them exactly.
    """
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low}, high={high}")
    raw = (high - low) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / magnitude == 2.5 else 0)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    value = first * step
    while value <= high + 1e-9 * step:
        ticks.append(0.0 if abs(value) < 1e-12 * step else value)
        first += 1
        value = first * step
    return ticks, decimals


def _padded_range(values: list[float], fraction: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        span = abs(high) if high != 0 else 1.0
    return low - fraction * span, high + fraction * span


def _dashed_hline(draw: ImageDraw.ImageDraw, y: float, colour: tuple[int, int, int]) -> None:
    x = float(PLOT_LEFT)
    while x < PLOT_RIGHT:
        draw.line([(x, y), (min(x + 12, PLOT_RIGHT), y)], fill=colour, width=2)
        x += 20


def _spread_labels(positions: list[float], gap: float) -> list[float]:
    """Label centres moved down where needed so that they are at least ``gap`` pixels apart."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = list(positions)
    for before, after in zip(order, order[1:], strict=False):
        placed[after] = max(placed[after], placed[before] + gap)
    return placed


def _vertical_text(image: Image.Image, text: str, font: Font, centre: tuple[float, float]) -> None:
    scratch = ImageDraw.Draw(image)
    left, top, right, bottom = scratch.textbbox((0, 0), text, font=font)
    label = Image.new("RGB", (int(right - left) + 4, int(bottom - top) + 4), BACKGROUND)
    ImageDraw.Draw(label).text((2 - left, 2 - top), text, font=font, fill=AXIS)
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (int(centre[0] - rotated.width / 2), int(centre[1] - rotated.height / 2)))


def _title(result: Repeatability, label: str, units: str, log_ratio: bool) -> tuple[str, str]:
    unit = f" {units}" if units else ""
    title = f"{label}: Bland-Altman, n = {result.n_subjects}"
    ci = f"{result.confidence:.0%} CI {result.rc_ci.low:.3g} to {result.rc_ci.high:.3g}"
    parts = [f"RC = {result.rc:.3g}{unit} ({ci})"]
    if result.log is not None:
        parts.append(f"RC% = {result.log.relative_rc:.0%}, wCV = {result.log.wcv:.1%}")
    parts.append(f"ICC = {result.icc:.2f}")
    if log_ratio:
        title += " (log ratio)"
    return title, ";  ".join(parts)


def bland_altman_plot(
    first: np.ndarray,
    second: np.ndarray,
    result: Repeatability,
    *,
    label: str | None = None,
    units: str = "",
    log_ratio: bool = False,
) -> Image.Image:
    """Draw the Bland-Altman plot of one figure.

    Parameters
    ----------
    first, second : numpy.ndarray, shape (n_subjects,)
        Scan 1 and scan 2 of each subject, in the order used for ``result``.
    result : Repeatability
        Statistics of the same pairs (from :func:`quant.stats.repeatability.repeatability`); must
        have
        two replicates, and positive values when ``log_ratio``.
    label : str, optional
        Name of the figure in the title (default ``result.figure``).
    units : str
        Units of the figure for the axis labels (e.g. ``"g/ml"``), empty when unitless.
    log_ratio : bool
        Plot ``ln(second / first)`` against the mean instead of ``second - first``.

    Returns
    -------
    PIL.Image.Image
        RGB image, ``WIDTH`` x ``HEIGHT`` pixels.
    """
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size != result.n_subjects:
        raise ValueError(
            f"first and second must be 1-D with {result.n_subjects} values (result.n_subjects), "
            f"got shapes {a.shape} and {b.shape}"
        )
    stats: BlandAltman | None
    if log_ratio:
        if result.log is None:
            raise ValueError("log_ratio needs positive values (result.log is None)")
        stats, differences = result.log.bland_altman, np.log(b / a)
    else:
        stats, differences = result.bland_altman, b - a
    if stats is None:
        raise ValueError("a Bland-Altman plot needs exactly two replicates per subject")
    means = (a + b) / 2.0
    name = label or result.figure
    unit = f" ({units})" if units else ""

    x_low, x_high = _padded_range([float(v) for v in means], 0.06)
    y_values = [float(v) for v in differences] + [stats.loa_low, stats.loa_high, 0.0]
    y_low, y_high = _padded_range(y_values, 0.08)

    def to_x(value: float) -> float:
        return PLOT_LEFT + (value - x_low) / (x_high - x_low) * (PLOT_RIGHT - PLOT_LEFT)

    def to_y(value: float) -> float:
        return PLOT_BOTTOM - (value - y_low) / (y_high - y_low) * (PLOT_BOTTOM - PLOT_TOP)

    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, font, small = load_font(22), load_font(16), load_font(14)

    x_ticks, x_decimals = nice_ticks(x_low, x_high)
    y_ticks, y_decimals = nice_ticks(y_low, y_high)
    for tick in x_ticks:
        x = to_x(tick)
        draw.line([(x, PLOT_TOP), (x, PLOT_BOTTOM)], fill=GRID)
        draw.line([(x, PLOT_BOTTOM), (x, PLOT_BOTTOM + 6)], fill=AXIS, width=1)
        draw.text(
            (x, PLOT_BOTTOM + 9), f"{tick:.{x_decimals}f}", font=small, fill=AXIS, anchor="mt"
        )
    for tick in y_ticks:
        y = to_y(tick)
        draw.line([(PLOT_LEFT, y), (PLOT_RIGHT, y)], fill=GRID)
        draw.line([(PLOT_LEFT - 6, y), (PLOT_LEFT, y)], fill=AXIS, width=1)
        draw.text((PLOT_LEFT - 9, y), f"{tick:.{y_decimals}f}", font=small, fill=AXIS, anchor="rm")
    draw.line([(PLOT_LEFT, to_y(0.0)), (PLOT_RIGHT, to_y(0.0))], fill=ZERO_LINE, width=1)
    draw.rectangle([(PLOT_LEFT, PLOT_TOP), (PLOT_RIGHT, PLOT_BOTTOM)], outline=AXIS, width=1)

    draw.line(
        [(PLOT_LEFT, to_y(stats.mean_difference)), (PLOT_RIGHT, to_y(stats.mean_difference))],
        fill=BIAS_LINE,
        width=2,
    )
    _dashed_hline(draw, to_y(stats.loa_high), LOA_LINE)
    _dashed_hline(draw, to_y(stats.loa_low), LOA_LINE)
    for mean, difference in zip(means, differences, strict=True):
        x, y = to_x(float(mean)), to_y(float(difference))
        r = POINT_RADIUS
        draw.ellipse([(x - r, y - r), (x + r, y + r)], fill=POINT_FILL, outline=POINT_EDGE)

    def line_label(prefix: str, value: float) -> str:
        text = f"{prefix} {value:.3g}"
        return f"{text} (x{math.exp(value):.2f})" if log_ratio else text

    labels = [
        (line_label("+1.96 SD", stats.loa_high), stats.loa_high, LOA_LINE),
        (line_label("mean", stats.mean_difference), stats.mean_difference, BIAS_LINE),
        (line_label("-1.96 SD", stats.loa_low), stats.loa_low, LOA_LINE),
    ]
    placed = _spread_labels([to_y(value) for _, value, _ in labels], gap=20)
    for (text, _, colour), y in zip(labels, placed, strict=True):
        draw.text((PLOT_RIGHT + 8, y), text, font=small, fill=colour, anchor="lm")

    title, subtitle = _title(result, name, units, log_ratio)
    draw.text((PLOT_LEFT, 18), title, font=title_font, fill=AXIS)
    draw.text((PLOT_LEFT, 50), subtitle, font=small, fill=AXIS)
    draw.text(
        ((PLOT_LEFT + PLOT_RIGHT) / 2, HEIGHT - 30),
        f"Mean of scan 1 and scan 2{unit}",
        font=font,
        fill=AXIS,
        anchor="mm",
    )
    y_label = "ln(scan 2 / scan 1)" if log_ratio else f"Scan 2 - scan 1{unit}"
    _vertical_text(image, y_label, font, (30, (PLOT_TOP + PLOT_BOTTOM) / 2))
    return image
