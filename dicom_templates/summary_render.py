"""Render the summary picture: fused PET/CT MIPs with contours, and a table of the figures.

Pure numpy + Pillow (no matplotlib). The arrays are ``[slice, row, column]`` on the PET grid,
slices ascending along the slice normal; ``spacing_mm`` is (slice, row, column) spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dicom_templates import palette
from dicom_templates.seg import ordered_lesions
from quant.results import StudyResult

WIDTH = 1024
PANEL_HEIGHT = 620
TABLE_WIDTH = 400
MARGIN = 12
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
WARNING_TEXT = (255, 190, 60)
LESION_LINE = palette.LESION.rgb  # the SEG's segment colours too
MUSCLE_LINE = palette.MUSCLE.rgb
EXCLUDED_LINE = (170, 170, 170)
"""Excluded candidates: grey dashed outline, labelled X1, X2, ... with the reason listed."""
MAX_EXCLUDED_LISTED = 4
CT_WINDOW_HU = (-800.0, 400.0)
"""Window of the mean-intensity CT projection (a radiograph-like background)."""
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "DejaVuSans.ttf",
)
MAX_LESIONS_LISTED = 6

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def load_font(size: int) -> Font:
    """DejaVu Sans at ``size`` px if installed, else Pillow's built-in font at that size."""
    for candidate in FONT_FILES:
        if Path(candidate).is_file() or "/" not in candidate:
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def hot_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to the classic black-red-yellow-white "hot" RGB (float, 0..1)."""
    t = np.clip(values, 0.0, 1.0)[..., None]
    return np.concatenate(
        [np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1
    )


def _view(volume: np.ndarray, axis: int, reduce: str, flip_rows: bool) -> np.ndarray:
    """Project along ``axis`` (1: coronal, 2: sagittal) to ``[slice, other]``, head at top."""
    projected = volume.max(axis=axis) if reduce == "max" else volume.mean(axis=axis)
    return projected[::-1] if flip_rows else projected


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize a 2-D float array or bool mask to (width, height)."""
    if image.dtype == bool:
        pil = Image.fromarray(image.astype(np.uint8) * 255)
        return np.asarray(pil.resize(size, Image.Resampling.NEAREST)) > 127
    pil = Image.fromarray(image.astype(np.float32), mode="F")
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(pil.resize(size, method), dtype=np.float32)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2-D mask (mask minus its 4-neighbour erosion), 2 px thick."""
    padded = np.pad(mask, 1)
    eroded = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    edge = mask & ~eroded
    thick = edge.copy()
    thick[1:, :] |= edge[:-1, :]
    thick[:, 1:] |= edge[:, :-1]
    return thick


def fused_panel(
    suv: np.ndarray,
    ct: np.ndarray | None,
    axis: int,
    size: tuple[int, int],
    suv_max: float,
    contours: Sequence[tuple[np.ndarray, tuple[int, int, int]]],
    flip_rows: bool,
) -> np.ndarray:
    """One fused MIP panel as RGB uint8 of ``size`` (width, height).

    Parameters
    ----------
    suv, ct
        Volumes on the PET grid; ``ct`` may be None (black background).
    axis
        Projection axis of the ``[slice, row, column]`` arrays (1 coronal, 2 sagittal).
    size
        Output (width, height) in pixels, chosen by the caller for square pixels.
    suv_max
        SUV mapped to the top of the colour scale.
    contours
        (3-D mask, RGB colour) pairs drawn as outlines of the mask projections.
    flip_rows
        Whether slice index 0 is at the bottom (feet) of the picture.
    """
    pet = _resize(_view(suv, axis, "max", flip_rows), size, nearest=False) / max(suv_max, 1e-6)
    if ct is not None:
        low, high = CT_WINDOW_HU
        grey = (_resize(_view(ct, axis, "mean", flip_rows), size, False) - low) / (high - low)
        base = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1) * 0.85
    else:
        base = np.zeros((size[1], size[0], 3), dtype=np.float32)
    alpha = np.clip(pet * 1.4, 0.0, 0.9)[..., None]
    rgb = base * (1 - alpha) + hot_colormap(pet) * alpha
    out = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    for mask, colour in contours:
        if not mask.any():
            continue
        edge = outline(_resize(_view(mask, axis, "max", flip_rows), size, nearest=True))
        out[edge] = colour
    return out


def _label_position(
    mask: np.ndarray, axis: int, size: tuple[int, int], flip_rows: bool
) -> tuple[int, int] | None:
    """Pixel (x, y) just right of the top of a mask's projection, for its label."""
    projected = _resize(_view(mask, axis, "max", flip_rows), size, nearest=True)
    rows, cols = np.nonzero(projected)
    if rows.size == 0:
        return None
    return int(cols.max()) + 4, max(int(rows.min()) - 4, 0)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_lines(result: StudyResult) -> list[tuple[str, tuple[int, int, int], bool]]:
    """The figures as (text, colour, bold) lines, in reading order."""
    lines: list[tuple[str, tuple[int, int, int], bool]] = []
    facts = result.suv
    nuclide = f" ({facts.radionuclide})" if facts.radionuclide else ""
    lines.append((f"Tracer: {result.tracer}{nuclide}", TEXT, False))
    uptake = "n/a" if facts.uptake_time_s is None else f"{facts.uptake_time_s / 60.0:.0f} min"
    lines.append((f"Uptake time: {uptake}    SUV: {result.suv_type}", TEXT, False))
    muscle = result.muscle
    lines.append((f"Muscle reference ({palette.MUSCLE.name})", MUSCLE_LINE, True))
    lines.append(
        (
            f"  SUVmean {_fmt(muscle.suv_mean)} \u00b1 {_fmt(muscle.suv_sd)}, "
            f"{_fmt(muscle.volume_ml, 1)} ml",
            TEXT,
            False,
        )
    )
    lines.append((f"  {muscle.location}", TEXT, False))
    lesions = ordered_lesions(result)
    if not lesions:
        lines.append(("No lesion found", WARNING_TEXT, True))
    for i, lesion in enumerate(lesions[:MAX_LESIONS_LISTED], start=1):
        source = f"contour {lesion.label}" if lesion.source == "contour" else "detected"
        lines.append((f"Lesion {i} (L{i}, {palette.LESION.name}; {source})", LESION_LINE, True))
        lines.append(
            (
                f"  SUVmax {_fmt(lesion.suv_max)}  SUVmean {_fmt(lesion.suv_mean)}  "
                f"SUVpeak {_fmt(lesion.suv_peak)}",
                TEXT,
                False,
            )
        )
        lines.append(
            (
                f"  Volume {_fmt(lesion.volume_ml, 1)} ml   T/M max {_fmt(lesion.tm_max)}  "
                f"mean {_fmt(lesion.tm_mean)}",
                TEXT,
                False,
            )
        )
        for sub in lesion.hypoxic:
            lines.append(
                (
                    f"  Hypoxic T/M\u2265{sub.threshold:g}: {_fmt(sub.volume_ml, 1)} ml "
                    f"({sub.fraction * 100:.0f}%)",
                    TEXT,
                    False,
                )
            )
    if len(lesions) > MAX_LESIONS_LISTED:
        lines.append(
            (f"... {len(lesions) - MAX_LESIONS_LISTED} more lesions in the SR", TEXT, False)
        )
    for i, cand in enumerate(result.excluded[:MAX_EXCLUDED_LISTED], start=1):
        lines.append(
            (
                f"X{i} excluded: {cand.reason}; SUVmax {_fmt(cand.suv_max)}, "
                f"{_fmt(cand.volume_ml, 1)} ml",
                EXCLUDED_LINE,
                False,
            )
        )
    if len(result.excluded) > MAX_EXCLUDED_LISTED:
        more = len(result.excluded) - MAX_EXCLUDED_LISTED
        lines.append((f"... {more} more excluded candidates in the SR", EXCLUDED_LINE, False))
    for warning in result.warnings:
        lines.append((f"Warning: {warning}", WARNING_TEXT, False))
    return lines


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> list[str]:
    """Split ``text`` into lines of at most ``width`` px, keeping its indentation."""
    indent = text[: len(text) - len(text.lstrip(" "))]
    out: list[str] = []
    current = indent
    for word in text.lstrip(" ").split(" "):
        trial = f"{current} {word}" if current.strip() else current + word
        if draw.textlength(trial, font=font) <= width or not current.strip():
            current = trial
        else:
            out.append(current)
            current = indent + "    " + word
    out.append(current)
    return out


def render_summary(
    result: StudyResult,
    suv_array: np.ndarray,
    ct_array_on_pet: np.ndarray | None,
    spacing_mm: tuple[float, float, float],
    *,
    title: str = "hypoxnode summary",
    flip_rows: bool = True,
) -> np.ndarray:
    """Render the summary as an RGB uint8 array ``[row, column, 3]``, 1024 px wide.

    Parameters
    ----------
    result
        The quantification (figures and masks).
    suv_array, ct_array_on_pet
        SUV and CT (HU) on the PET grid; the CT may be None.
    spacing_mm
        (slice, row, column) spacing in mm; the MIPs are resampled to square pixels.
    title
        First line of the picture.
    flip_rows
        True when slices ascend towards the head (the usual axial PET), so the head is drawn
        at the top.
    """
    if suv_array.ndim != 3:
        raise ValueError(f"suv_array: expected 3 dimensions, got shape {suv_array.shape}")
    if ct_array_on_pet is not None and ct_array_on_pet.shape != suv_array.shape:
        raise ValueError(
            f"ct_array_on_pet: shape {ct_array_on_pet.shape} differs from suv_array "
            f"{suv_array.shape}"
        )
    dz, dy, dx = (float(s) for s in spacing_mm)
    nz, ny, nx = suv_array.shape
    height_mm = nz * dz
    widths_mm = (nx * dx, ny * dy)  # coronal, sagittal
    panel_width = WIDTH - TABLE_WIDTH - 3 * MARGIN
    scale = min(PANEL_HEIGHT / height_mm, panel_width / sum(widths_mm))
    sizes = [
        (max(int(round(w * scale)), 1), max(int(round(height_mm * scale)), 1)) for w in widths_mm
    ]
    lesions = ordered_lesions(result)
    contours = [(les.mask, LESION_LINE) for les in lesions] + [(result.muscle.mask, MUSCLE_LINE)]
    # colour window from the whole study, not from the reported lesions alone: a robust
    # maximum (99.9th percentile of the study), raised to half the hottest reported or
    # excluded region when that is higher (a hot tumour beside a hotter bladder stays
    # visible; nothing hot shows as a saturated mass beside contours on noise)
    hottest = [les.suv_max for les in lesions] + [cand.suv_max for cand in result.excluded]
    robust = float(np.percentile(suv_array, 99.9))
    suv_top = max(robust, 0.5 * max(hottest, default=0.0), 1e-3)

    title_font, font, small = load_font(22), load_font(15), load_font(13)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[tuple[str, tuple[int, int, int], bool]] = []
    for text, colour, bold in table_lines(result):
        wrapped.extend((part, colour, bold) for part in _wrap(scratch, text, font, TABLE_WIDTH))
    line_height = 20
    header = 40
    table_height = len(wrapped) * line_height
    panels_height = sizes[0][1] + 50
    canvas = Image.new(
        "RGB", (WIDTH, header + max(panels_height, table_height) + MARGIN), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 8), title, font=title_font, fill=TEXT)

    x = MARGIN
    for axis, size, name in ((1, sizes[0], "Coronal MIP"), (2, sizes[1], "Sagittal MIP")):
        panel = fused_panel(suv_array, ct_array_on_pet, axis, size, suv_top, contours, flip_rows)
        for cand in result.excluded:
            edge = outline(_resize(_view(cand.mask, axis, "max", flip_rows), size, nearest=True))
            rows, cols = np.nonzero(edge)
            dash = ((rows + cols) // 3) % 2 == 0
            panel[rows[dash], cols[dash]] = EXCLUDED_LINE
        canvas.paste(Image.fromarray(panel), (x, header))
        draw.text((x + 4, header + 4), name, font=small, fill=TEXT)
        labels = [(les.mask, f"L{i}", LESION_LINE) for i, les in enumerate(lesions, start=1)]
        labels.append((result.muscle.mask, "M", MUSCLE_LINE))
        labels += [
            (cand.mask, f"X{i}", EXCLUDED_LINE) for i, cand in enumerate(result.excluded, 1)
        ][:MAX_EXCLUDED_LISTED]
        for mask, label, colour in labels:
            position = _label_position(mask, axis, size, flip_rows)
            if position is not None:
                draw.text(
                    (x + position[0], header + position[1]),
                    label,
                    font=font,
                    fill=colour,
                    stroke_width=2,
                    stroke_fill=(0, 0, 0),
                )
        x += size[0] + MARGIN

    # SUV colour bar under the panels.
    bar_top = header + sizes[0][1] + 10
    bar_width = min(x - 2 * MARGIN, 300)
    ramp = hot_colormap(np.linspace(0.0, 1.0, bar_width))
    bar = (np.repeat(ramp[None, :, :], 12, axis=0) * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(bar), (MARGIN, bar_top))
    draw.text((MARGIN, bar_top + 14), "SUV 0", font=small, fill=TEXT)
    draw.text((MARGIN + bar_width - 60, bar_top + 14), f"{suv_top:.1f}", font=small, fill=TEXT)

    table_x = WIDTH - TABLE_WIDTH - MARGIN
    y = header
    for text, colour, bold in wrapped:
        draw.text(
            (table_x, y),
            text,
            font=font,
            fill=colour,
            stroke_width=1 if bold else 0,
            stroke_fill=colour,
        )
        y += line_height
    return np.asarray(canvas, dtype=np.uint8)
