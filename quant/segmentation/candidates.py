"""Lesion candidates: every region above the detection threshold is reported or excluded.

Nothing hot is dropped silently. Each 26-connected region of voxels above
``lesion_tm_threshold x muscle SUVmean`` of at least ``lesion_min_volume_ml`` ends as one of:

- an excluded candidate "below the noise floor": its SUVpeak (mean of the hottest 1.2 cm
  sphere, :func:`quant.figures.suv_peak`) is not above
  ``muscle SUVmean + lesion_noise_sds x muscle SD`` (voxel SD; the per-tracer ``k`` of
  :data:`quant.suv.tracers.PROFILES`). SUVpeak, not SUVmax: a single noisy voxel, or a speck of
  a few voxels, is averaged out over 1 cm3 while a lesion of that size keeps its uptake; a
  homogeneous muscle with noise yields no lesion;
- an excluded organ (:mod:`quant.segmentation.physiology`, rules placed by anatomy). Before it is
  excluded, the organ's own voxels (its CT window, :func:`quant.segmentation.physiology.organ_part`)
  are
  removed with the halo the PET blur spreads around them (:mod:`quant.segmentation.spill_out`);
  each focus beyond them still above the threshold with a maximum of its own
  (:func:`separate`; a tumour has its own maximum) is judged again as a
  candidate of its own, without that organ's rule: a tumour touching the bladder or the
  liver is separated, not thrown away with it;
- an excluded candidate "outside the search region" (``search_z_range_mm``/``search_region``);
- a lesion, delineated by :func:`quant.segmentation.regions.delineate`.

Regions smaller than the minimum volume are counted, not listed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.figures import component_at, suv_peak
from quant.image.masks import bounding_box, labels_of
from quant.segmentation.landmarks import distance_mm
from quant.segmentation.physiology import (
    Anatomy,
    organ_part,
    organ_placed,
    physiological_reason,
)
from quant.segmentation.spill_out import SHELL_MM, organ_spill_out

ORGAN_OF_REASON = {"liver": "liver", "urine": "urine", "brain": "brain", "bowel": "bowel",
                   "heart": "heart", "spleen": "spleen"}


@dataclass
class Detection:
    """What the detector found: lesion regions, excluded regions with reasons, the rules."""

    regions: list[np.ndarray] = field(default_factory=list)
    """Candidate regions to delineate as lesions."""
    own_max: list[float | None] = field(default_factory=list)
    """Per region: the SUVmax of its own focus when it was separated from an organ (the
    spill-out of the organ inside it may be hotter), else None."""
    excluded: list[tuple[str, np.ndarray]] = field(default_factory=list)
    """(reason, region) of each excluded candidate."""
    organ_rules: tuple[str, ...] = ()
    """Organ rules that could fire in this field of view."""
    noise_floor: float | None = None
    small_ignored: int = 0


def _dilate(mask: np.ndarray) -> np.ndarray:
    image = sitk.BinaryDilate(sitk.GetImageFromArray(mask.astype(np.uint8)), [1, 1, 1])
    out: np.ndarray = sitk.GetArrayFromImage(image).astype(bool)
    return out


def _organ_name(reason: str) -> str:
    return ORGAN_OF_REASON.get(reason.split(" ")[0], reason)


def separate(
    region: np.ndarray,
    part: np.ndarray,
    suv: np.ndarray,
    min_voxels: float,
    spacing: tuple[float, float, float] | None = None,
    *,
    level: float | None = None,
) -> list[tuple[np.ndarray, float]]:
    """Foci of ``region`` beyond ``part`` that hold a maximum of their own.

    Spill-out of ``part`` (PET blur) falls off away from it, so its voxels always have a
    hotter neighbour closer to ``part``; a focus of its own has a local maximum. Each
    connected piece of ``region`` beyond ``part`` is searched for local maxima of the SUV
    smoothed with a 1-voxel Gaussian (noise is not a maximum), not next to ``part``; the
    hottest one seeds a focus: the voxels of the piece connected to it whose smoothed SUV is
    not above its own (its basin); kept when it holds at least ``min_voxels``. Returned with
    the SUVmax of the basin proper (the focus's own maximum).

    With ``level`` (the detection threshold; ``part`` is then an organ and ``spacing`` is
    needed) the organ's spill-out is first subtracted (:func:`organ_spill_out`): the pieces
    are the voxels beyond the organ still above ``level`` without it, so the organ's halo
    around the tumour stays with the organ while the tumour's near side, lifted by the same
    halo, stays with the tumour; the own maximum is then read without the halo too.
    Without ``level`` (``part`` is a lesion already delineated), with ``spacing``, the voxels
    of the piece nearer the seed than ``part`` join the basin (the side touching ``part``).
    """
    corrected = level is not None and spacing is not None
    margin = int(np.ceil(SHELL_MM / min(spacing))) if corrected and spacing else 2
    box = bounding_box(region, margin=max(margin, 2))
    sub_region, sub_suv, sub_part = region[box], suv[box], part[box] & region[box]
    near = _dilate(sub_part)
    own_suv = sub_suv
    if corrected:
        assert spacing is not None and level is not None
        tumour_side = _drains_elsewhere(sub_suv, sub_part, sub_region, near)
        # the organ's partial-volume rim (CT numbers between the organ's and its
        # neighbours', outside the window) is the organ, except on a focus's side
        sub_part = sub_part | (near & sub_region & ~tumour_side)
        near = _dilate(sub_part)
        spill, _ = organ_spill_out(sub_suv, sub_part, spacing, ignore=tumour_side)
        own_suv = sub_suv - spill
        beyond = sub_region & ~sub_part & (own_suv > level)
    else:
        beyond = sub_region & ~sub_part
    smooth = _smooth(own_suv)
    peaks = smooth >= _local_max(smooth)
    labels, n = labels_of(beyond)
    organ_distance = (
        distance_mm(sub_part, spacing) if spacing and not corrected else None
    )
    out = []
    for lab in range(1, n + 1):
        piece = labels == lab
        seeds = np.flatnonzero(piece & peaks & ~near)
        if piece.sum() < min_voxels or seeds.size == 0:
            continue
        seed = seeds[int(np.argmax(own_suv.ravel()[seeds]))]
        k, j, i = (int(v) for v in np.unravel_index(seed, piece.shape))
        at = (k, j, i)
        basin = piece & (smooth <= smooth[at])
        own = float(own_suv[component_at(basin, at)].max())
        if organ_distance is not None and spacing is not None:
            basin |= piece & (_distance_to(at, piece.shape, spacing) <= organ_distance)
        basin = component_at(basin, at)
        if basin.sum() >= min_voxels:
            full = np.zeros(region.shape, dtype=bool)
            full[box] = basin
            out.append((full, own))
    return out


def _smooth(values: np.ndarray) -> np.ndarray:
    """The SUV smoothed with a 1-voxel Gaussian (noise is not a maximum)."""
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(values.astype(np.float32)), 1.0)
    out: np.ndarray = sitk.GetArrayFromImage(image)
    return out


def _local_max(smooth: np.ndarray) -> np.ndarray:
    """The largest value in each voxel's 3x3x3 neighbourhood."""
    out: np.ndarray = sitk.GetArrayFromImage(
        sitk.GrayscaleDilate(sitk.GetImageFromArray(smooth), [1, 1, 1])
    )
    return out


def _drains_elsewhere(
    suv: np.ndarray, part: np.ndarray, region: np.ndarray, near: np.ndarray
) -> np.ndarray:
    """Voxels whose uptake climbs to a maximum of their own rather than to ``part``.

    A marker watershed of the smoothed SUV, flooded downhill at once from ``part`` and from
    every local maximum of ``region`` not next to it: what joins a maximum is a focus's side
    of the halo, left out of the spill-out fit.
    """
    smooth = _smooth(suv)
    markers = np.zeros(part.shape, dtype=np.uint8)
    markers[region & ~part & ~near & (smooth >= _local_max(smooth))] = 2
    markers[part] = 1
    flooded = sitk.MorphologicalWatershedFromMarkers(
        sitk.InvertIntensity(sitk.GetImageFromArray(smooth), 0.0),
        sitk.GetImageFromArray(markers),
        markWatershedLine=False,
        fullyConnected=True,
    )
    out: np.ndarray = sitk.GetArrayFromImage(flooded) == 2
    return out


def _distance_to(
    index: tuple[int, ...], shape: tuple[int, ...], spacing: tuple[float, float, float]
) -> np.ndarray:
    """Distance (mm) of every voxel of an array of ``shape`` to voxel ``index``."""
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    out: np.ndarray = np.sqrt(
        ((k - index[0]) * spacing[2]) ** 2
        + ((j - index[1]) * spacing[1]) ** 2
        + ((i - index[2]) * spacing[0]) ** 2
    )
    return out


def find_candidates(
    suv: np.ndarray,
    level: float,
    min_voxels: float,
    organs: tuple[str, ...],
    *,
    anatomy: Anatomy | None,
    allowed: np.ndarray | None,
    noise_floor: float | None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Detection:
    """Sort the regions above ``level`` into lesion regions and excluded candidates.

    Parameters
    ----------
    suv
        SUV ``[slice, row, col]``.
    level
        Detection threshold (SUV): T/M threshold x muscle SUVmean.
    min_voxels
        Minimum region size in voxels.
    organs
        Organ rules of the tracer profile (:data:`quant.segmentation.physiology.ORGANS`).
    anatomy
        CT context of the organ rules; None: no organ rule (no CT).
    allowed
        Voxels the search may report (None: all).
    noise_floor
        SUV a region's SUVpeak must exceed (None: no noise test).
    spacing
        Voxel spacing (x, y, z) mm, for SUVpeak.
    """
    out = Detection(noise_floor=noise_floor)
    if anatomy is not None:
        whole = np.ones(suv.shape, dtype=bool)
        out.organ_rules = tuple(o for o in organs if _placed_anywhere(o, whole, anatomy))
    labels, n = labels_of(suv > level)
    if n == 0:
        return out
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    out.small_ignored = int(np.sum(counts[1:] < min_voxels))
    queue: deque[tuple[np.ndarray, tuple[str, ...], float | None]] = deque(
        (labels == lab, organs, None) for lab in range(1, n + 1) if counts[lab] >= min_voxels
    )
    del labels
    while queue:
        region, rules, own_max = queue.popleft()
        if noise_floor is not None and suv_peak(suv, region, spacing) <= noise_floor:
            out.excluded.append((f"below the noise floor (SUVpeak <= {noise_floor:.2f})", region))
            continue
        reason = physiological_reason(region, suv, anatomy, rules) if anatomy else None
        if reason is not None:
            assert anatomy is not None
            part = organ_part(reason, region, anatomy)
            pieces = (
                separate(region, part, suv, min_voxels, spacing, level=level)
                if part is not None
                else []
            )
            remaining = tuple(r for r in rules if r != _organ_name(reason))
            organ = region.copy()
            for piece, piece_max in pieces:
                organ &= ~piece
                queue.append((piece, remaining, piece_max))
            out.excluded.append((reason, organ))
            continue
        if allowed is not None:
            inside = region & allowed
            if inside.sum() < min_voxels:
                out.excluded.append(("outside the search region", region))
                continue
            region = inside
        out.regions.append(region)
        out.own_max.append(own_max)
    return out


def _placed_anywhere(organ: str, whole: np.ndarray, anatomy: Anatomy) -> bool:
    """Whether the field of view allows ``organ``'s rule at all (for the method text)."""
    if organ == "brain":
        return organ_placed(organ, whole, anatomy)
    if organ == "heart":
        return anatomy.fov in ("thorax", "trunk")
    return anatomy.fov in ("thorax", "trunk", "abdomen_pelvis")
