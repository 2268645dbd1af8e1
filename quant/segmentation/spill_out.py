"""The uptake a hot organ spills onto its neighbours through the PET's blur.

A tumour touching the bladder or the liver sits in the organ's halo: the scanner's point
spread paints the organ's activity a few millimetres beyond its CT boundary, onto the tumour's
near side and onto the tissue around it. Left in place, the halo is read as part of the tumour
(a rim of false lesion along the organ wall) and the tumour's near side looks like the organ.

:func:`organ_spill_out` estimates that halo from the organ's own voxels (its CT window, see
:func:`quant.segmentation.physiology.organ_part`): the organ mask blurred with a Gaussian whose
width and amplitude are fitted, by least squares, to the uptake in a shell around the organ
(with a constant background), on the side away from the tumour. Subtracting it leaves each
voxel's own uptake; the fitted width is the PET's effective resolution around that organ, so no
scanner constant is assumed. This is the "spill-over" model of partial-volume correction
(Soret, Bacharach and Buvat, J Nucl Med 2007;48:932, section on spill-over between regions),
used here only to draw the boundary between organ and tumour, never to change a figure.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.segmentation.landmarks import distance_mm

#: Effective PET resolutions tried (FWHM, mm): clinical reconstructions lie in 4..10 mm.
FWHM_CANDIDATES_MM = (3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0)
#: The shell the fit reads: voxels outside the organ, at most this far from it (mm).
SHELL_MM = 12.0


def organ_spill_out(
    suv: np.ndarray,
    organ: np.ndarray,
    spacing: tuple[float, float, float],
    ignore: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """The SUV the blur of ``organ``'s uptake adds to every voxel, and the fitted FWHM.

    Parameters
    ----------
    suv
        SUV ``[slice, row, col]`` (a box around the organ and its neighbours).
    organ
        The organ's own voxels on the same grid (bool).
    spacing
        Voxel spacing (x, y, z) in mm.
    ignore
        Voxels left out of the fit (the tumour's side of the halo), or None.

    Returns
    -------
    tuple[numpy.ndarray, float | None]
        The spill-out (SUV, 0 where no halo could be fitted) and the FWHM in mm of the fit
        (None when nothing was fitted: no organ, no shell, or a halo that does not fall off
        away from the organ).
    """
    none = np.zeros(suv.shape, dtype=np.float64)
    if not organ.any() or organ.all():
        return none, None
    distance = distance_mm(organ, spacing)
    shell = (distance > 0) & (distance <= SHELL_MM)
    if ignore is not None:
        shell &= ~ignore
    if int(shell.sum()) < 10:
        return none, None
    observed = suv[shell].astype(np.float64)
    image = sitk.GetImageFromArray(organ.astype(np.float32))
    image.SetSpacing(spacing)
    best: tuple[float, float, float, np.ndarray] | None = None
    for fwhm in FWHM_CANDIDATES_MM:
        sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma))
        basis = np.column_stack([blurred[shell].astype(np.float64), np.ones(observed.size)])
        coef, *_ = np.linalg.lstsq(basis, observed, rcond=None)
        error = float(np.sum((basis @ coef - observed) ** 2))
        if coef[0] > 0 and (best is None or error < best[0]):
            best = (error, fwhm, float(coef[0]), blurred)
    if best is None:
        return none, None
    _, fwhm, amplitude, blurred = best
    spill: np.ndarray = amplitude * blurred.astype(np.float64)
    spill[organ] = 0.0
    return spill, fwhm
