"""The skeletal-muscle reference: chosen by anatomy and by uptake voxel by voxel.

Connectivity is not used to choose it: in patients muscle touches kidneys, bowel, organs and
other soft tissue inside the CT muscle window, so "the lowest-uptake connected component" can
be litres of something else. Rules, in order:

1. Candidates: body voxels in ``settings.muscle_hu_range`` (default -29..150 HU), not
   enclosed by bone in their slice (brain, marrow, spinal canal), eroded by
   :data:`EROSION_MM` with a ball (away from fat, bone, air, organ borders with other CT
   numbers, and PET partial volume).
2. Anatomy: large skeletal muscles lie on bone (paraspinal beside the vertebrae, psoas and
   gluteal muscles round the pelvis, thigh and arm muscles round the long bones, shoulder
   girdle and neck muscles round the scapula and cervical spine). Candidates within
   :data:`NEAR_BONE_MM` of bone (>= 200 HU) are kept when there are at least
   :data:`MIN_ML` of them; otherwise all candidates are used and a warning says so.
3. Uptake: the SUV is smoothed inside the muscle window (normalised Gaussian,
   :data:`SMOOTH_MM` sigma, so bone, fat and air do not leak in). The low-uptake mode of the
   smoothed values is found (histogram peaks of at least :data:`MODE_MIN_HEIGHT` of the
   highest; the lowest in SUV wins: skeletal muscle is the lowest-uptake soft tissue of this
   CT window for every tracer profile here). Its spread is measured on the side below the
   mode (organs of higher uptake only add to the upper side) and floored at
   :data:`MIN_SPREAD` of the mode. Voxels whose smoothed SUV lies within
   :data:`MODE_HALF_WIDTH` spreads of the mode are the reference; figures (mean, SD) are taken
   on their unsmoothed SUV.
4. Credibility: fewer than :data:`MIN_ML` ml is refused; less than :data:`LOW_ML` ml, a
   coefficient of variation above :data:`MAX_CV`, or a mean CT number outside 10..80 HU gives
   a warning naming why.

Without a CT the reference is refused: PET alone cannot tell muscle from other tissue.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.errors import QuantificationError
from quant.results import MuscleResult
from quant.segmentation.landmarks import Landmarks, distance_mm, landmarks_from_ct
from quant.settings import QuantSettings

EROSION_MM = 5.0
NEAR_BONE_MM = 30.0
SMOOTH_MM = 4.0
MODE_MIN_HEIGHT = 0.2
MODE_HALF_WIDTH = 2.0
MIN_SPREAD = 0.01
MEAN_SHIFT_STEPS = 10
MIN_ML = 5.0
LOW_ML = 10.0
MAX_CV = 0.3
MUSCLE_HU_TYPICAL = (10.0, 80.0)


def _erode(mask: np.ndarray, spacing: tuple[float, float, float], mm: float) -> np.ndarray:
    radius = [max(1, int(round(mm / s))) for s in spacing]
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    out: np.ndarray = sitk.GetArrayFromImage(
        sitk.BinaryErode(image, radius, sitk.sitkBall, 0, 1)
    ).astype(bool)
    return out


def _smooth_inside(
    suv: np.ndarray, support: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Gaussian-smoothed SUV using only the voxels of ``support`` (normalised convolution)."""

    def blur(values: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing(spacing)
        out: np.ndarray = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, SMOOTH_MM))
        return out  # float32: a whole-body grid holds several of these at once

    weight = blur(support.astype(np.float32))
    total = blur(np.where(support, suv, 0.0).astype(np.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.where(weight > 1e-6, total / weight, suv).astype(np.float32)
    return out


def low_uptake_mode(values: np.ndarray) -> tuple[float, float]:
    """(mode, spread) of the lowest histogram peak of ``values`` (rule 3 of the module)."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi - lo <= 1e-9 * max(abs(hi), 1.0):
        mode = float(np.median(values))
        return mode, max(MIN_SPREAD * abs(mode), 1e-12)
    counts, edges = np.histogram(values, bins=100, range=(lo, hi))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    smooth = np.convolve(counts.astype(np.float64), kernel / kernel.sum(), mode="same")
    peaks = [
        i
        for i in range(smooth.size)
        if smooth[i] >= MODE_MIN_HEIGHT * smooth.max()
        and smooth[i] >= smooth[max(i - 1, 0)]
        and smooth[i] >= smooth[min(i + 1, smooth.size - 1)]
    ]
    i = peaks[0] if peaks else int(np.argmax(smooth))
    mode = float(0.5 * (edges[i] + edges[i + 1]))
    spread = max(_lower_spread(values, mode), MIN_SPREAD * abs(mode))
    for _ in range(MEAN_SHIFT_STEPS):  # mean shift: the mode to its neighbourhood's mean
        near = values[np.abs(values - mode) <= spread]
        if near.size == 0:
            break
        mode = float(near.mean())
    return mode, max(_lower_spread(values, mode), MIN_SPREAD * abs(mode))


def _lower_spread(values: np.ndarray, mode: float) -> float:
    below = values[values <= mode] - mode
    return float(np.sqrt(np.mean(below**2))) if below.size > 1 else 0.0


def _name(marks: Landmarks, mask: np.ndarray) -> str:
    """Which muscle group, from the field of view and the level of the reference."""
    centre = float(np.nonzero(mask)[0].mean())
    if marks.fov == "limb":
        return "limb muscle round the long bone"
    if marks.fov == "head_neck":
        return "neck and shoulder-girdle muscles beside the cervical spine"
    if marks.lung_slices is not None:
        first, last = marks.lung_slices
        if centre > last:
            return "neck and shoulder-girdle muscles"
        if centre >= first:
            return "paraspinal and chest-wall muscles (thorax)"
    return "paraspinal, psoas or gluteal muscles (abdomen and pelvis)"


def _side(columns: np.ndarray, centre_col: float, n_cols: int) -> str:
    margin = max(1.0, 0.05 * n_cols)
    left = bool(np.any(columns > centre_col + margin))
    right = bool(np.any(columns < centre_col - margin))
    if left and right:
        return "both sides"
    return "patient left" if left else ("patient right" if right else "midline")


def muscle_reference(
    suv: sitk.Image,
    ct_hu_on_pet: sitk.Image | None,
    settings: QuantSettings,
    *,
    marks: Landmarks | None = None,
) -> MuscleResult:
    """Automatic skeletal-muscle reference region (rules in the module docstring).

    Parameters
    ----------
    suv
        SUV image on the PET grid.
    ct_hu_on_pet
        CT in HU on the PET grid, or None when the study has no CT.
    settings
        ``muscle_hu_range`` is used.
    marks
        Landmarks of this CT when already computed.

    Raises
    ------
    QuantificationError
        No CT, or no credible muscle (named why).
    """
    if ct_hu_on_pet is None:
        raise QuantificationError(
            "no CT in the study: the automatic muscle reference needs a CT "
            "(send the CT, or a muscle contour in an RTSTRUCT)"
        )
    if ct_hu_on_pet.GetSize() != suv.GetSize() or not np.allclose(
        ct_hu_on_pet.GetSpacing(), suv.GetSpacing(), rtol=1e-4
    ):
        raise ValueError(
            "ct_hu_on_pet must be on the PET grid (resample it with"
                " quant.image.volume.resample_to)"
        )
    marks = marks or landmarks_from_ct(ct_hu_on_pet)
    values = sitk.GetArrayFromImage(suv).astype(np.float64)
    spacing = marks.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lo, hi = settings.muscle_hu_range
    window = marks.body & (marks.hu >= lo) & (marks.hu <= hi) & ~marks.enclosed
    candidates = _erode(window, spacing, EROSION_MM)
    if candidates.sum() * voxel_ml < MIN_ML:
        raise QuantificationError(
            f"no skeletal muscle found: less than {MIN_ML:g} ml of {lo:g}..{hi:g} HU "
            f"after a {EROSION_MM:g} mm erosion"
        )
    warnings = []
    near = candidates & (distance_mm(marks.bone, spacing) <= NEAR_BONE_MM)
    if near.sum() * voxel_ml >= MIN_ML:
        candidates = near
    else:
        warnings.append(
            f"muscle reference: no muscle-window tissue within {NEAR_BONE_MM:g} mm of bone; "
            "taken from all soft tissue of the muscle window (check it)"
        )
    smooth = _smooth_inside(values, window, spacing)
    mode, spread = low_uptake_mode(smooth[candidates])
    mask = candidates & (np.abs(smooth - mode) <= MODE_HALF_WIDTH * spread + 1e-12)
    volume = float(mask.sum()) * voxel_ml
    if volume < MIN_ML:
        raise QuantificationError(
            f"no credible skeletal muscle: the low-uptake soft tissue near bone is "
            f"{volume:.1f} ml (< {MIN_ML:g} ml)"
        )
    chosen = values[mask]
    mean = float(chosen.mean())
    sd = float(chosen.std(ddof=1)) if chosen.size > 1 else 0.0
    hu_mean = float(marks.hu[mask].mean())
    cv = sd / mean if mean > 0 else float("inf")
    if volume < LOW_ML:
        warnings.append(f"muscle reference small: {volume:.1f} ml (< {LOW_ML:g} ml)")
    if cv > MAX_CV:
        warnings.append(f"muscle reference not homogeneous: CV {cv:.1%} (> {MAX_CV:.0%})")
    if not MUSCLE_HU_TYPICAL[0] <= hu_mean <= MUSCLE_HU_TYPICAL[1]:
        warnings.append(f"muscle reference mean CT number {hu_mean:.0f} HU is atypical")
    slices, _, columns = np.nonzero(mask)
    side = _side(columns, marks.body_centre_col, mask.shape[2])
    location = (
        f"{_name(marks, mask)}, {side}, PET slices {int(slices.min()) + 1}-"
        f"{int(slices.max()) + 1} of {mask.shape[0]}, mean {hu_mean:.0f} HU on CT "
        f"({lo:g}..{hi:g} HU window, within {NEAR_BONE_MM:g} mm of bone, field of view "
        f"{marks.fov})"
    )
    return MuscleResult(
        suv_mean=mean,
        suv_sd=sd,
        volume_ml=volume,
        mask=mask,
        location=location,
        hu_mean=hu_mean,
        warnings=warnings,
    )
