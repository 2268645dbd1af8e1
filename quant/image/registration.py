"""Putting a prior scan on the current scan's grid: mask resampling and rigid CT registration.

SimpleITK convention: a transform maps points of the *fixed* image (the current scan) to the
*moving* image (the prior). Resampling the prior with it gives the prior on the current grid,
and it maps a current lesion centroid into the prior's frame for matching.

The registration is rigid (:class:`SimpleITK.Euler3DTransform`), Mattes mutual information,
three resolution levels, on the CTs resampled to their PET grids (a few hundred thousand
voxels: about a second), initialised by the centres of mass of the CT intensities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

Point = tuple[float, float, float]


def mask_image(mask: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """A ``[slice, row, col]`` boolean mask as a uint8 image with the geometry of ``grid``."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    if image.GetSize() != grid.GetSize():
        raise ValueError(f"mask: shape {mask.shape} does not fit the grid {grid.GetSize()}")
    image.CopyInformation(grid)
    return image


def resample_mask(
    mask: np.ndarray,
    mask_grid: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
) -> np.ndarray:
    """Nearest-neighbour resampling of a mask onto the grid of ``reference``.

    Parameters
    ----------
    mask
        Boolean ``[slice, row, col]`` mask on ``mask_grid``.
    mask_grid
        The image the mask belongs to (origin, spacing, direction).
    reference
        The grid wanted (the current PET).
    transform
        Maps reference points to mask points; identity (shared frame of reference) when None.

    Returns
    -------
    numpy.ndarray
        Boolean mask on ``reference``; outside ``mask_grid`` is False.
    """
    resampled = sitk.Resample(
        mask_image(mask, mask_grid),
        reference,
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
    return sitk.GetArrayFromImage(resampled).astype(bool)


def register_rigid(
    fixed: sitk.Image, moving: sitk.Image, *, seed: int = 1, iterations: int = 200
) -> tuple[sitk.Euler3DTransform, float]:
    """Rigid registration of two CT images (HU).

    Parameters
    ----------
    fixed
        The current scan's CT (ideally on its PET grid).
    moving
        The prior scan's CT.
    seed
        Seed of the metric's random sampling (the same inputs give the same transform).
    iterations
        Gradient-descent iterations per resolution level.

    Returns
    -------
    tuple of (SimpleITK.Euler3DTransform, float)
        The transform (fixed points to moving points) and the final metric value (Mattes MI,
        lower is better).
    """
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed_f, moving_f, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed_f, moving_f)
    composite = sitk.CompositeTransform(result)
    euler = sitk.Euler3DTransform(composite.GetNthTransform(0))
    return euler, float(method.GetMetricValue())


def point_mapper(transform: sitk.Transform | None) -> Callable[[Point], Point] | None:
    """A function mapping current points into the prior's frame (None for identity)."""
    if transform is None:
        return None

    def to_prior(point: Point) -> Point:
        x, y, z = transform.TransformPoint(point)
        return (float(x), float(y), float(z))

    return to_prior
